"""The hang scenario of the real-world suite (issue 15): a pytest test talks to a uvicorn
(FastAPI) server over a pooled httpx connection; the server dies, and the test waits for an
answer that will never come, as Prefect's client did once its harness server was gone. The
job is then cancelled by a signal, and the hang report must name the waiting test process,
the port, and that nothing listens there any more (and, with the guard's journal, the
server that did and when it exited).

    python hang.py --janitor PATH --scratch DIR      (driver.py runs it as scenario `hang`)

Modes: `run` (SIGTERM to `ci-janitor run -- pytest`) and `guard` (snapshot + guard start
--watch in a job shell; the shell gets SIGTERM, the guard's dead man's switch captures).
With py-spy on PATH, the report must also hold the test's Python stack.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

PY = sys.executable

APP = '''
from fastapi import FastAPI

app = FastAPI()


@app.get("/api/health")
async def health():
    return {"ok": True}
'''

TEST = '''
import asyncio
import os
import signal
import socket
import subprocess
import sys
import time

import httpx


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_flow_reports_its_final_state():
    port = free_port()
    with open("port.txt", "w") as f:
        f.write(str(port))
    server = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "app:app", "--port", str(port), "--log-level", "warning"]
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=1)
            break
        except httpx.HTTPError:
            assert time.monotonic() < deadline, "the server never came up"
            time.sleep(0.1)

    async def run_flow():
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=None) as client:
            await client.get("/api/health")  # a pooled keep-alive connection
            # The harness's server dies (a timeout killed it, as in the Prefect seed) ...
            os.kill(server.pid, signal.SIGKILL)
            server.wait()
            print("waiting for the flow's final state", flush=True)
            # ... and the flow waits for a state only that server would have sent.
            await asyncio.Event().wait()

    asyncio.run(run_flow())
'''


def wait_for(path: Path, text: str, timeout: float) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if path.exists() and text in path.read_text(errors="replace"):
            return True
        time.sleep(0.1)
    return False


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] not in ("Z", "X")
    except OSError:
        return False


def check(report: dict, port: str, journal: bool, problems: list[str], lines: list[str]) -> None:
    hang = report.get("hang")
    if not hang:
        problems.append("no hang section in the report")
        return
    for v in hang["verdicts"]:
        lines.append(f"  verdict: {v['sentence']}")
    for m in hang["missing"]:
        lines.append(f"  missing: {m}")
    lines.append(
        f"  capture: {len(hang['processes'])} processes in {hang['elapsed_ms']} ms (bound {hang['bound_ms']} ms)"
    )
    mine = [
        v for v in hang["verdicts"]
        if v["sentence"].startswith("pytest pid ") and f"127.0.0.1:{port}" in v["sentence"]
    ]
    if not mine:
        problems.append("no verdict names the waiting pytest and the port")
        return
    s = mine[0]["sentence"]
    if "nothing listens there" not in s:
        problems.append(f"the verdict does not say nothing listens there: {s}")
    if journal and not ("uvicorn" in s and "(journal)" in s):
        problems.append(f"the verdict does not name the exited server from the journal: {s}")
    py_spy = shutil.which("py-spy")
    pytest_procs = [p for p in hang["processes"] if p["pid"] == mine[0]["pids"][0]]
    if py_spy and os.environ.get("CI_JANITOR_PY_SPY") != "off":
        stack = (pytest_procs[0].get("stack") or {}) if pytest_procs else {}
        if stack.get("source") != "py-spy" or "test_flow_reports_its_final_state" not in stack.get("text", ""):
            problems.append(f"no py-spy stack with the test function: {pytest_procs}")
    elif not any("py-spy" in m for m in hang["missing"]):
        problems.append("py-spy is missing and the report does not say so")


def run_mode(janitor: str, case: Path, mode: str) -> tuple[list[str], list[str]]:
    problems: list[str] = []
    lines: list[str] = []
    case.mkdir(parents=True)
    (case / "app.py").write_text(APP)
    (case / "test_flow.py").write_text(TEST)
    env = {k: v for k, v in os.environ.items() if k not in ("CI_JANITOR_RUN", "CI_JANITOR_STATE", "GITHUB_ACTION")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    pytest = [PY, "-m", "pytest", "-q", "-s", "-p", "no:cacheprovider", "test_flow.py"]
    log = case / "step.log"
    if mode == "run":
        argv = [janitor, "run", "--grace", "2s", "--color", "never", "--report-json", "report.json", "--", *pytest]
        report_path = case / "report.json"
    else:
        script = (
            f'"{janitor}" snapshot --state state.json && '
            f'"{janitor}" guard start --state state.json --watch $$ && '
            + " ".join(f'"{a}"' for a in pytest)
        )
        argv = ["setsid", "sh", "-c", script]
        report_path = case / "state.guard-report.json"
    with open(log, "w") as out:
        proc = subprocess.Popen(argv, cwd=case, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL)
    try:
        if not wait_for(log, "waiting for the flow's final state", 180):
            problems.append("the test never reached its wait")
            return problems, lines
        port = (case / "port.txt").read_text().strip()
        proc.send_signal(signal.SIGTERM)  # the job is cancelled
        try:
            proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            problems.append("the cancelled job did not end within 120 s")
        end = time.monotonic() + 120
        while not report_path.exists() and time.monotonic() < end:
            time.sleep(0.2)
        if not report_path.exists():
            problems.append(f"no report at {report_path.name}")
            return problems, lines
        report = json.loads(report_path.read_text())
        check(report, port, journal=(mode == "guard"), problems=problems, lines=lines)
        left = [p for p in report.get("processes", []) if p.get("class") == "job" and alive(p["pid"])]
        if left:
            problems.append(f"job processes still alive after the sweep: {[p['pid'] for p in left]}")
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        if mode == "guard":
            subprocess.run([janitor, "guard", "stop", "--state", str(case / "state.json")],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            subprocess.run([janitor, "sweep", "--state", str(case / "state.json"), "--fail-on", "never",
                            "--color", "never"], cwd=case, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return problems, lines


def run_all(janitor: str, root: Path) -> tuple[int, int]:
    passed = failed = 0
    for mode in ("run", "guard"):
        name = f"hang-{mode}"
        print(f"== {name}: expect a verdict naming pytest, the port, nothing listening"
              + (", the exited uvicorn (journal)" if mode == "guard" else ""), flush=True)
        t0 = time.monotonic()
        problems, lines = run_mode(janitor, root / name, mode)
        for line in lines:
            print(line)
        took = time.monotonic() - t0
        if problems:
            failed += 1
            print(f"FAIL {name} ({took:.1f} s)")
            for p in problems:
                print(f"  - {p}")
            log = root / name / "step.log"
            if log.exists():
                for line in log.read_text(errors="replace").splitlines()[-40:]:
                    print(f"  | {line}")
        else:
            passed += 1
            print(f"ok   {name} ({took:.1f} s)")
        sys.stdout.flush()
    return passed, failed


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser()
    ap.add_argument("--janitor", required=True)
    ap.add_argument("--scratch", required=True, type=Path)
    a = ap.parse_args()
    shutil.rmtree(a.scratch, ignore_errors=True)
    p, f = run_all(a.janitor, a.scratch.resolve())
    print(f"{p} passed, {f} failed")
    sys.exit(1 if f else 0)
