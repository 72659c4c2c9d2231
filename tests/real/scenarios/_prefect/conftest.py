"""The session fixture the seed projects use: one Prefect API server for the whole session.

The only addition is a ground-truth record for the suite (tests/real): which process is
the harness's server, and the PYTEST_CURRENT_TEST / PYTEST_XDIST_WORKER it was started
under. The server is found through /proc (our child running `create_app`), not through
Prefect's private attributes, so the record does not depend on Prefect's internals.
"""

import json
import os
from pathlib import Path

import pytest
from prefect.testing.utilities import prefect_test_harness


def _server_children():
    me = os.getpid()
    found = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
            cmdline = Path(f"/proc/{d}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()
        if int(fields[1]) == me and b"prefect.server.api.server:create_app" in cmdline:
            found.append({"pid": int(d), "start_ticks": int(fields[19])})
    return found


@pytest.fixture(autouse=True, scope="session")
def prefect_harness():
    with prefect_test_harness(server_startup_timeout=120):
        record = {
            "role": "prefect-api-server",
            "servers": _server_children(),
            "pytest_current_test": os.environ.get("PYTEST_CURRENT_TEST"),
            "pytest_xdist_worker": os.environ.get("PYTEST_XDIST_WORKER"),
            "api_url": os.environ.get("PREFECT_API_URL"),
        }
        out = Path(os.environ["REAL_TRUTH_DIR"], f"harness-{os.getpid()}.json")
        out.write_text(json.dumps(record))
        yield
