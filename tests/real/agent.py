"""A long-lived CI agent that runs each step of a job as its own short-lived process.

    python agent.py [--name COMM]

It stands for GitLab's runner with the shell executor (or a Jenkins agent, a Buildkite
agent): it outlives every step, runs other jobs too, and starts each step as a child with
the job's marker in the step's environment only (`CI_JOB_ID=...`), never in its own. With
`--name Runner.Worker` it names itself like GitHub's per-job worker (prctl PR_SET_NAME, so
/proc/PID/comm reads `Runner.Worker`).

Protocol, one JSON object per line:
  stdin   {"op": "start", "id": ID, "argv": [...], "env": {...}, "cwd": DIR, "log": FILE}
          {"op": "quit"}
  stdout  {"event": "ready", "pid": P, "start_ticks": T, "comm": C}
          {"event": "started", "id": ID, "pid": P, "start_ticks": T}
          {"event": "exited", "id": ID, "status": S}   (S < 0: killed by signal -S)
The agent itself never calls ci-janitor. Stdlib only.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import procs  # noqa: E402

PR_SET_NAME = 15
out_lock = threading.Lock()


def say(obj: dict) -> None:
    with out_lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def set_comm(name: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_NAME, name.encode(), 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NAME)")


def reap(step_id: str, p: subprocess.Popen) -> None:
    say({"event": "exited", "id": step_id, "status": p.wait()})


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--name")
    args = ap.parse_args()
    if args.name:
        set_comm(args.name)
    me = procs.read_stat(os.getpid())
    say({"event": "ready", "pid": me.pid, "start_ticks": me.start_ticks, "comm": me.comm})
    base = dict(os.environ)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        # The agent's own environment plus the step's (the job's marker): the child is
        # forked without the marker and execs with it, as a CI agent starts a step.
        env = dict(base, **cmd.get("env", {}))
        with open(cmd["log"], "ab") as log:
            p = subprocess.Popen(cmd["argv"], env=env, cwd=cmd["cwd"], stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        st = procs.read_stat(p.pid)  # our unreaped child: the pid cannot be reused yet
        say({"event": "started", "id": cmd["id"], "pid": p.pid, "start_ticks": st.start_ticks if st else None})
        threading.Thread(target=reap, args=(cmd["id"], p), daemon=True).start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
