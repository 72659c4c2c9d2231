"""One CI step that leaks: sets up a scenario's leak for real, then records the ground truth.

    python leak.py SCENARIO --work DIR --truth-dir DIR [--go FILE]

This is what runs as the job's step: under `ci-janitor run -- python leak.py ...`, or
between `ci-janitor snapshot` and `ci-janitor sweep`. It copies the scenario's files into
DIR, starts the real software there (cwd DIR, which every descendant inherits), kills what
a runner would kill, waits for the process table to settle, and writes
TRUTH_DIR/truth.json: every live process whose cwd is under DIR, with its identity
(pid, start time from /proc/PID/stat field 22) and its listening sockets, plus the records
the scenario's own code wrote. Then it waits for FILE (the driver starts its "during"
bystander meanwhile) and exits 0. It never calls ci-janitor.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import procs  # noqa: E402

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "scenarios"
PY = sys.executable

# A step's outer bound; the suite "times the step out" early by sending the `timeout`
# process SIGALRM, which is exactly what its own timer does when it expires: coreutils'
# timeout then sends its -s signal (KILL) to the command, and, with --foreground, to the
# command only, not to the process group (plain `timeout` would kill the whole group,
# servers included).
STEP_LIMIT = "300"


def timeout_cmd(*cmd: str) -> list[str]:
    return ["timeout", "--foreground", "-s", "KILL", STEP_LIMIT, *cmd]


def expire(step: subprocess.Popen) -> int:
    """Makes the step's `timeout` expire now; returns its exit status."""
    os.kill(step.pid, signal.SIGALRM)  # our unreaped child: the pid cannot be reused
    return step.wait(60)


class Failed(Exception):
    pass


def http_ok(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            s.sendall(b"GET / HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            return s.recv(64).startswith(b"HTTP/1.")
    except OSError:
        return False


def wait_for(what: str, pred, step: subprocess.Popen | None, timeout: float) -> None:
    def done():
        return pred() or (step is not None and step.poll() is not None)

    if not procs.wait_until(done, timeout, 0.1) or not pred():
        status = None if step is None else step.poll()
        raise Failed(f"{what} did not happen within {timeout:.0f} s (step status {status})")


# ---------------------------------------------------------------------------------------
# The scenarios. Each starts the step, makes it leak, and returns notes for the truth file.
# ---------------------------------------------------------------------------------------


def prefect_killed(work: Path, truth: Path, env: dict, log) -> dict:
    step = subprocess.Popen(
        timeout_cmd(PY, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_flows.py"),
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    t0 = time.monotonic()
    wait_for("the hanging test", lambda: (truth / "hanging").exists(), step, 280)
    hung_after = time.monotonic() - t0
    status = expire(step)
    return {"pytest_hung_after_s": round(hung_after, 1), "timeout_status": status}


def xdist_pileup(work: Path, truth: Path, env: dict, log) -> dict:
    step = subprocess.Popen(
        timeout_cmd(
            PY, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "2", "test_pileup.py",
        ),
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    t0 = time.monotonic()
    status = step.wait(int(STEP_LIMIT) + 30)
    if status not in (0, 1):  # 1: tests failed (the hung ones); anything else is not the shape
        raise Failed(f"pytest -n 2 ended with status {status}, expected 1 (failed tests)")
    return {"pytest_status": status, "pytest_took_s": round(time.monotonic() - t0, 1)}


def uvicorn_reload(work: Path, truth: Path, env: dict, log) -> dict:
    port = procs.free_port()
    step = subprocess.Popen(
        timeout_cmd(
            PY, "-m", "uvicorn", "app:app", "--reload", "--host", "127.0.0.1", "--port", str(port),
        ),
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    wait_for(f"uvicorn answering on {port}", lambda: http_ok(port), step, 60)
    reloader = step.pid and _child_of(step.pid)
    status = expire(step)
    return {"port": port, "reloader": reloader, "timeout_status": status}


def mcp_stdio(work: Path, truth: Path, env: dict, log) -> dict:
    step = subprocess.Popen(
        timeout_cmd(PY, "-m", "pytest", "-p", "no:cacheprovider", "-q", "test_client.py"),
        cwd=work,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    busy = [truth / "mcp-busy-async.json", truth / "mcp-busy-blocking.json"]
    wait_for("both MCP servers busy", lambda: all(b.exists() for b in busy), step, 120)
    status = expire(step)
    # The client is gone: its end of each server's stdin is closed. Give the servers the
    # time to notice (an asyncio server sees EOF at once) before recording what outlives it.
    servers = [json.loads(b.read_text()) for b in busy]
    procs.wait_until(lambda: not all(procs.alive(s["pid"], s["start_ticks"]) for s in servers), 15)
    return {"timeout_status": status}


def npm_dev(work: Path, truth: Path, env: dict, log) -> dict:
    port = procs.free_port()
    env = dict(env, PORT=str(port), NPM_CONFIG_UPDATE_NOTIFIER="false", NPM_CONFIG_FUND="false")
    step = subprocess.Popen(timeout_cmd("npm", "run", "dev"), cwd=work, env=env, stdout=log, stderr=subprocess.STDOUT)
    wait_for(f"the dev server answering on {port}", lambda: http_ok(port), step, 60)
    parent = _child_of(step.pid)
    status = expire(step)
    return {"port": port, "npm": parent, "timeout_status": status}


def _child_of(pid: int) -> dict | None:
    """The (first) child of `pid`: the command under `timeout`, for the notes."""
    for p in procs.all_pids():
        st = procs.read_stat(p)
        if st and st.ppid == pid:
            return {"pid": p, "start_ticks": st.start_ticks, "argv": procs.argv(p)}
    return None


SCENARIOS_RUN = {
    "prefect-killed": ("prefect_killed", prefect_killed),
    "xdist-pileup": ("xdist_pileup", xdist_pileup),
    "uvicorn-reload": ("uvicorn_reload", uvicorn_reload),
    "mcp-stdio": ("mcp_stdio", mcp_stdio),
    "npm-dev": ("npm_dev", npm_dev),
}
PREFECT_SCENARIOS = {"prefect-killed", "xdist-pileup"}


def settle(work: Path, timeout: float = 15.0, quiet: float = 1.0) -> list[procs.Proc]:
    """Polls the scenario's processes until the set has not changed for `quiet` seconds."""
    deadline = time.monotonic() + timeout
    last = None
    since = time.monotonic()
    while True:
        now = procs.procs_in(str(work), exclude={os.getpid()})
        key = sorted((p.ident(), tuple(p.listening)) for p in now)
        if key != last:
            last, since = key, time.monotonic()
        elif time.monotonic() - since >= quiet or time.monotonic() > deadline:
            return now
        time.sleep(0.1)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("scenario", choices=sorted(SCENARIOS_RUN))
    ap.add_argument("--work", required=True, type=Path)
    ap.add_argument("--truth-dir", required=True, type=Path)
    ap.add_argument("--go", type=Path)
    args = ap.parse_args()

    folder, fn = SCENARIOS_RUN[args.scenario]
    work, truth = args.work.resolve(), args.truth_dir.resolve()
    shutil.copytree(SCENARIOS / folder, work, dirs_exist_ok=True)
    if args.scenario in PREFECT_SCENARIOS:
        shutil.copy(SCENARIOS / "_prefect" / "conftest.py", work / "conftest.py")
    tmp = work / "tmp"
    tmp.mkdir(exist_ok=True)

    env = dict(os.environ)
    env.update(
        {
            # The step marker GitHub's runner sets for each step.
            "GITHUB_ACTION": f"__real_{args.scenario.replace('-', '_')}",
            "REAL_TRUTH_DIR": str(truth),
            "TMPDIR": str(tmp),
            "PYTHONDONTWRITEBYTECODE": "1",
            "PREFECT_HOME": str(work / "prefect-home"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_LOGGING_LEVEL": "WARNING",
        }
    )
    result: dict = {"scenario": args.scenario, "work": str(work), "step_env_github_action": env["GITHUB_ACTION"]}
    t0 = time.monotonic()
    with open(truth / "step.log", "wb") as log:
        try:
            result["notes"] = fn(work, truth, env, log)
        except Failed as e:
            result["error"] = str(e)
        except subprocess.TimeoutExpired as e:
            result["error"] = f"step did not end: {e}"
    result["setup_s"] = round(time.monotonic() - t0, 1)
    left = settle(work)
    result["leaked"] = [p.as_dict() for p in left]
    result["records"] = {
        f.name: json.loads(f.read_text()) for f in sorted(truth.glob("*.json")) if f.name != "truth.json"
    }
    tmp_out = truth / "truth.json.tmp"
    tmp_out.write_text(json.dumps(result, indent=2))
    tmp_out.rename(truth / "truth.json")

    if args.go is not None:
        procs.wait_until(args.go.exists, 120, 0.05)
    return 0


if __name__ == "__main__":
    sys.exit(main())
