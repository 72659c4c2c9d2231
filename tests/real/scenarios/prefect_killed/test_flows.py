"""Scenario 1: a Prefect test session whose pytest is killed mid-run (SIGKILL to pytest
only, as a runner's step timeout or the OOM killer does it). The harness's API server,
started by the session fixture in conftest.py, is left running."""

import os
import time
from pathlib import Path

from prefect import flow


@flow
def add(a: int, b: int) -> int:
    return a + b


def test_flow_runs():
    assert add(1, 2) == 3


def test_hangs():
    # Stands for the seed's hang (a client waiting on the server forever). Tell the suite
    # we are here, so it can "time out" the job now instead of after minutes.
    Path(os.environ["REAL_TRUTH_DIR"], "hanging").write_text(os.environ["PYTEST_CURRENT_TEST"])
    time.sleep(3600)
