"""The real-world leak suite: each scenario deployed the ways users deploy ci-janitor.

    python driver.py --janitor PATH [--modes M,M,...] [SCENARIO...]

Modes:
  run      `ci-janitor run -- STEP`
  sweep    one script: `eval "$(ci-janitor snapshot --export)"`, STEP, `ci-janitor sweep`
           (the deployment the README gives for a laptop or a CI without a marker)
  bare     the same script without `--export` (negative control, npm-dev only by default):
           what escaped the script's tree carries no marker and is only *unattributed*
  guard    the `sweep` script with `ci-janitor guard start` after the snapshot
  steps    separate steps under a long-lived agent (agent.py), as GitLab's shell executor
           runs them with `CI_JOB_ID`: snapshot + guard start, STEP, a later step, sweep;
           a concurrent second job on the same agent runs a server throughout
  worker   the same steps under an agent named `Runner.Worker`, marker RUNNER_TRACKING_ID

For every case: start bystanders of our own, run the leaking step (leak.py), which records
the ground truth from /proc, start one more bystander while the leak is alive, let
ci-janitor sweep, then check against the ground truth: every leaked process dead, every
leaked port free, the report's attribution (test, step, evidence), nothing else killed,
every bystander alive. Whatever a case started is killed by identity when it ends, passed
or failed. Closes with `N passed, M failed` and exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import shlex
import signal
import subprocess
import sys
import threading
import time
import traceback
import uuid
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import procs  # noqa: E402
from leak import SCENARIOS_RUN  # noqa: E402

HERE = Path(__file__).resolve().parent
PY = sys.executable
MODES = ("run", "sweep", "bare", "guard", "steps", "worker")
# The negative control runs where it is cheap and telling (the npm dev server escapes the
# script's tree in a second); `--modes bare` runs it for any scenario named.
BARE_DEFAULT = {"npm-dev"}
SCRIPT_MODES = ("sweep", "bare", "guard")
AGENT_MODES = ("steps", "worker")
# Every identity marker ci-janitor reads (src/model.rs JOB_MARKERS), and the step marker:
# none may leak from the environment the suite itself runs in (a CI job) into a case.
MARKERS = (
    "CI_JANITOR_RUN", "CI_JANITOR_STATE", "RUNNER_TRACKING_ID", "VSTS_PROCESS_LOOKUP_ID",
    "JENKINS_NODE_COOKIE", "CI_JOB_ID", "BUILDKITE_JOB_ID", "GITHUB_ACTION",
)

# Extra ci-janitor options for every sweep of this job, to test the suite itself: with
# REAL_JANITOR_ARGS=--dry-run every case that expects a kill must fail (`bare` and the MCP
# `sweep` case expect none and pass), and still leave nothing behind, guards included.
EXTRA = os.environ.get("REAL_JANITOR_ARGS", "").split()

# What each scenario is expected to leak, checked against the ground truth: a scenario whose
# software stops leaking (a fix upstream) fails loudly instead of passing on nothing.
EXPECTED_ROLES = {
    "prefect-killed": "1 Prefect API server (uvicorn create_app), listening",
    "xdist-pileup": "2 Prefect API servers, one per hung worker, listening",
    "uvicorn-reload": "the reload worker (listening) and multiprocessing's resource tracker",
    "mcp-stdio": "the blocked FastMCP server and its `sleep`; not the async one",
    "npm-dev": "`sh -c node server.js` and the node server (listening)",
}


# ---------------------------------------------------------------------------------------
# Checks
# ---------------------------------------------------------------------------------------


@dataclass
class Case:
    scenario: str
    mode: str
    dir: Path
    problems: list[str] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)
    # Checks to run once this job's report has been checked (the other job's sweep).
    after: list = field(default_factory=list)
    # The state files of every ci-janitor job the case ran (their guards are stopped at
    # the end, by identity).
    states: list[Path] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.scenario} [{self.mode}]"

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.problems.append(what)
        return ok

    def say(self, line: str) -> None:
        self.lines.append(line)

    @property
    def unattributed(self) -> bool:
        """Whether the honest expectation is: the leak has no evidence, so it is reported as
        unattributed and left alive (the verdict says so; exit 0)."""
        return self.mode == "bare" or (self.mode == "sweep" and self.scenario == "mcp-stdio")

    @property
    def guarded(self) -> bool:
        return self.mode in ("guard", *AGENT_MODES)


def is_server(p: dict) -> bool:
    return any("prefect.server.api.server:create_app" in a for a in p["argv"])


def short_argv(argv: list[str], width: int = 90) -> str:
    argv = [os.path.basename(argv[0]), *argv[1:]] if argv else argv
    s = " ".join(argv)
    return s if len(s) <= width else s[: width - 1] + "…"


def check_truth(case: Case, truth: dict) -> None:
    """The leak is what the scenario is supposed to produce (verified, not assumed)."""
    leaked = truth["leaked"]
    rec = truth["records"]
    sc = case.scenario
    listening = [p for p in leaked if p["listening"]]
    if sc in ("prefect-killed", "xdist-pileup"):
        servers = [p for p in leaked if is_server(p)]
        want = 1 if sc == "prefect-killed" else 2
        case.check(len(servers) == want, f"expected {want} leaked Prefect server(s), found {len(servers)}")
        case.check(all(p["listening"] for p in servers), "a leaked Prefect server listens on nothing")
        harness = [r for k, r in rec.items() if k.startswith("harness-")]
        recorded = {(s["pid"], s["start_ticks"]) for r in harness for s in r["servers"]}
        for p in servers:
            case.check((p["pid"], p["start_ticks"]) in recorded, f"leaked server {p['pid']} is not one the fixture recorded")
        if sc == "xdist-pileup":
            workers = {r["pytest_xdist_worker"] for r in harness for s in r["servers"] if (s["pid"], s["start_ticks"]) in {(p["pid"], p["start_ticks"]) for p in servers}}
            case.check(len(workers) == 2, f"leaked servers should come from 2 different workers, got {sorted(map(str, workers))}")
            case.say(f"  truth: {len(harness)} harness servers started, {len(servers)} left (workers {', '.join(sorted(map(str, workers)))})")
    elif sc == "uvicorn-reload":
        reloader = truth["notes"]["reloader"]
        port = truth["notes"]["port"]
        case.check(reloader is not None and not procs.alive(reloader["pid"], reloader["start_ticks"]), "the reloader is still alive")
        workers = [p for p in leaked if any(l.endswith(f":{port}") for l in p["listening"])]
        case.check(len(workers) == 1 and "spawn_main" in " ".join(workers[0]["argv"]), "expected the spawned reload worker holding the port")
        case.check(any("resource_tracker" in " ".join(p["argv"]) for p in leaked), "expected multiprocessing's resource tracker to survive too")
    elif sc == "mcp-stdio":
        blocking = rec.get("mcp-busy-blocking.json")
        asyncs = rec.get("mcp-busy-async.json")
        idents = {(p["pid"], p["start_ticks"]) for p in leaked}
        case.check(blocking is not None and (blocking["pid"], blocking["start_ticks"]) in idents, "the blocked MCP server did not outlive its client")
        case.check(asyncs is not None and (asyncs["pid"], asyncs["start_ticks"]) not in idents, "the async MCP server outlived its client (it used to exit on stdin EOF)")
        case.check(any(p["argv"][:1] == ["sleep"] for p in leaked), "expected the blocked tool's `sleep` to survive")
        if blocking:
            case.say(f"  truth: the MCP server's environment has only {', '.join(blocking['env_keys'])}")
    elif sc == "npm-dev":
        port = truth["notes"]["port"]
        npm = truth["notes"]["npm"]
        case.check(npm is not None and not procs.alive(npm["pid"], npm["start_ticks"]), "npm is still alive")
        node = [p for p in leaked if any(l.endswith(f":{port}") for l in p["listening"])]
        case.check(len(node) == 1 and node[0]["argv"][:2] == ["node", "server.js"], "expected `node server.js` holding the port")
    case.check(bool(listening) or sc == "mcp-stdio", "nothing leaked holds a port")


def check_report(case: Case, truth: dict, report: dict, bystanders: list[dict], started: list[dict]) -> None:
    leaked = {(p["pid"], p["start_ticks"]): p for p in truth["leaked"]}
    by_ident = {(p["pid"], p["start_ticks"]): p for p in report["processes"]}
    gap = case.unattributed

    # 1. Every leaked process is dead (zombies count as dead) and every leaked port is free.
    survivors = [i for i in leaked if procs.alive(*i)]
    if gap:
        case.check(len(survivors) == len(leaked), f"expected no evidence, so nothing killed, but {len(leaked) - len(survivors)} of the leak died: update the expectation")
    else:
        case.check(not survivors, f"still alive after the sweep: {survivors}")
    ports = sorted({int(l.rsplit(':', 1)[1]) for p in leaked.values() for l in p["listening"]})
    still = [port for port in ports if not procs.port_free(port)]
    if not gap:
        case.check(not still, f"ports still listening after the sweep: {still}")

    # 2. The report names each leaked process as the job's and says how it died.
    for ident, p in leaked.items():
        r = by_ident.get(ident)
        label = f"{p['pid']} {short_argv(p['argv'], 60)}"
        if r is None:
            case.check(False, f"not in the report: {label}")
            continue
        fate = (r.get("fate") or {}).get("fate")
        if gap:
            case.check(r["class"] == "unattributed" and fate is None, f"{label}: expected unattributed and untouched, got {r['class']}/{fate}")
        else:
            case.check(r["class"] == "job", f"{label}: class {r['class']}, expected job")
            if case.guarded:
                case.check("guard-lineage" in r["evidence"], f"{label}: no guard-lineage evidence: {r['evidence']}")
            elif case.mode == "sweep":
                # `snapshot --export` marked the script: every leak carries CI_JANITOR_RUN.
                case.check("run-marker" in r["evidence"], f"{label}: no run-marker evidence: {r['evidence']}")
            case.check(fate in ("terminated", "killed"), f"{label}: fate {fate}")
        m = r.get("markers", {})
        after = (r.get("fate") or {}).get("after_ms")
        case.say(
            f"  {r['pid']:>7} {short_argv(p['argv'], 70)}\n"
            f"          class {r['class']}, evidence [{', '.join(r['evidence'])}], fate {fate}"
            + (f" after {after} ms" if after is not None else "")
            + (f", listening {', '.join(r['listening'])}" if r["listening"] else "")
            + (f"\n          test: {m['pytest_current_test']}" if m.get("pytest_current_test") else "")
            + (f" on {m['pytest_xdist_worker']}" if m.get("pytest_xdist_worker") else "")
            + (f"\n          step: {m['github_action']}" if m.get("github_action") else "")
            + (f", hints [{', '.join(r['hints'])}]" if r.get("hints") else "")
        )
        # 3. Attribution: the test that started it, and the step.
        if case.scenario == "mcp-stdio":
            # The MCP SDK passes the server only HOME/LOGNAME/PATH/SHELL/TERM/USER.
            if case.guarded:
                # The guard's lineage names the step that started it, marked as inherited
                # (its own environment has no such variable).
                case.check(
                    m.get("github_action") == truth.get("step_env_github_action") and "GITHUB_ACTION" in m.get("inherited", []),
                    f"{label}: expected the step inherited from the guard's lineage, got {m}",
                )
            else:
                case.check(not m.get("pytest_current_test") and not m.get("github_action"), f"{label}: markers {m} in a scrubbed environment?")
        else:
            case.check(m.get("github_action") == truth["step_env_github_action"], f"{label}: step marker {m.get('github_action')!r}")
        if is_server(p):
            rec = next(
                (r2 for k, r2 in truth["records"].items() if k.startswith("harness-") and [p["pid"], p["start_ticks"]] in [[s["pid"], s["start_ticks"]] for s in r2["servers"]]),
                None,
            )
            if case.check(rec is not None, f"{label}: no harness record"):
                case.check(m.get("pytest_current_test") == rec["pytest_current_test"], f"{label}: test {m.get('pytest_current_test')!r}, the fixture ran under {rec['pytest_current_test']!r}")
                case.check(m.get("pytest_xdist_worker") == rec["pytest_xdist_worker"], f"{label}: worker {m.get('pytest_xdist_worker')!r}, expected {rec['pytest_xdist_worker']!r}")

    # 4. Nothing else was killed, nothing else is called the job's.
    extra = [r for i, r in by_ident.items() if i not in leaked and (r["class"] == "job" or (r.get("fate") or {}).get("fate") not in (None,))]
    case.check(not extra, f"the report has job processes or signals outside the ground truth: {[(r['pid'], r['class'], r['argv'][:3]) for r in extra]}")

    # 5. Ports in the report.
    rports = {p["socket"]: p for p in report["ports"]}
    for p in leaked.values():
        for label in p["listening"]:
            rp = rports.get(label)
            if gap:
                continue
            if case.check(rp is not None, f"port {label} missing from the report"):
                case.check(rp["outcome"] == "freed", f"port {label}: {rp['outcome']}")
                case.check(p["pid"] in rp["held_by"], f"port {label}: held_by {rp['held_by']} lacks {p['pid']}")

    # 6. Our bystanders, started before and during the scenario, are alive and untouched.
    for b in bystanders:
        okb = procs.alive(b["pid"], b["start_ticks"])
        case.check(okb, f"bystander ({b['what']}) {b['pid']} was killed")
        r = by_ident.get((b["pid"], b["start_ticks"]))
        if r is not None:
            case.check(r["class"] != "job" and r.get("fate") is None, f"bystander {b['pid']} reported as {r['class']}/{r.get('fate')}")
        if b.get("class"):
            got = r and r["class"]
            case.check(got == b["class"], f"bystander ({b['what']}) {b['pid']} reported as {got}, expected {b['class']}")
        if b.get("port"):
            case.check(not procs.port_free(b["port"]), f"bystander's port {b['port']} is no longer listening")
    for b in bystanders:
        st = procs.read_stat(b["pid"])
        same = [p["pid"] for p in leaked.values() if st and p["pgid"] == st.pgid]
        if same:
            case.say(f"  bystander {b['pid']} ({b['what']}) was in process group {st.pgid} with leaked {same}, and survived")
    n_ok = sum(procs.alive(b["pid"], b["start_ticks"]) for b in bystanders)
    classes = [f"{b['what']}: {(by_ident.get((b['pid'], b['start_ticks'])) or {}).get('class', 'not new')}" for b in bystanders]
    case.say(f"  bystanders: {n_ok}/{len(bystanders)} alive ({'; '.join(classes)})")


# ---------------------------------------------------------------------------------------
# Bystanders
# ---------------------------------------------------------------------------------------


def bystander_child(dirpath: Path, what: str) -> dict:
    """A plain child of the driver (in the driver's process group and session)."""
    p = subprocess.Popen(["sleep", "3600"], cwd=dirpath, env=bystander_env(), stdin=subprocess.DEVNULL)
    st = procs.read_stat(p.pid)
    return {"what": what, "pid": p.pid, "start_ticks": st.start_ticks, "popen": p}


def bystander_detached(dirpath: Path, what: str, marked: bool = True) -> dict:
    """A detached HTTP server (its own session, parent init): with `marked`, another job's
    (another RUNNER_TRACKING_ID), the kind of process a self-hosted runner has around;
    without, a process of nobody's job that appeared during this one (a person's shell, a
    cron job): unattributed, never killed."""
    port = procs.free_port()
    pidfile = dirpath / ("".join(c if c.isalnum() else "-" for c in what) + ".pid")
    subprocess.run(
        ["setsid", "-f", "sh", "-c", 'echo $$ > "$1"; exec "$2" -m http.server --bind 127.0.0.1 "$3"', "sh", str(pidfile), PY, str(port)],
        cwd=dirpath,
        env=bystander_env() if marked else clean_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    if not procs.wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() and not procs.port_free(port), 20):
        raise RuntimeError(f"bystander ({what}) did not come up")
    pid = int(pidfile.read_text())
    return {"what": what, "pid": pid, "start_ticks": procs.read_stat(pid).start_ticks, "port": port}


def clean_env() -> dict:
    """The suite's environment without any job's marker (the suite may itself run in CI)."""
    return {k: v for k, v in os.environ.items() if k not in MARKERS}


def bystander_env() -> dict:
    env = clean_env()
    env["RUNNER_TRACKING_ID"] = f"another_job_{uuid.uuid4().hex[:8]}"
    return env


# ---------------------------------------------------------------------------------------
# The agent (modes steps and worker)
# ---------------------------------------------------------------------------------------


class Agent:
    """agent.py, a long-lived CI agent: the driver asks it to start steps and hears when
    they exit."""

    def __init__(self, case: Case, name: str | None):
        d = case.dir / "agent"
        d.mkdir()
        self.err = open(d / "agent.err", "w")
        self.p = subprocess.Popen(
            [PY, str(HERE / "agent.py"), *(["--name", name] if name else [])],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.err, cwd=d, env=clean_env(),
            text=True, start_new_session=True,
        )
        self.events: dict[tuple[str, str], dict] = {}
        self.cond = threading.Condition()
        threading.Thread(target=self._read, daemon=True).start()
        self.me = self._expect("ready", "", 30)
        if self.me is None:
            raise RuntimeError(f"the agent did not start (see {d / 'agent.err'})")
        self.steps: dict[str, dict] = {}

    def _read(self) -> None:
        for line in self.p.stdout:
            ev = json.loads(line)
            with self.cond:
                self.events[(ev["event"], ev.get("id", ""))] = ev
                self.cond.notify_all()
        with self.cond:
            self.events[("eof", "")] = {}
            self.cond.notify_all()

    def _expect(self, event: str, sid: str, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        with self.cond:
            while (event, sid) not in self.events and ("eof", "") not in self.events:
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                self.cond.wait(left)
            return self.events.get((event, sid))

    def start(self, sid: str, argv: list[str], env: dict, cwd: Path, log: Path) -> dict:
        self.p.stdin.write(json.dumps({"op": "start", "id": sid, "argv": argv, "env": env, "cwd": str(cwd), "log": str(log)}) + "\n")
        self.p.stdin.flush()
        ev = self._expect("started", sid, 30)
        if ev is None:
            raise RuntimeError(f"the agent did not start step {sid}")
        self.steps[sid] = ev
        return ev

    def status(self, sid: str, timeout: float) -> int | None:
        """The step's exit status (negative: killed by that signal), or None if it runs on."""
        ev = self._expect("exited", sid, timeout)
        return None if ev is None else ev["status"]

    def alive(self) -> bool:
        return procs.alive(self.me["pid"], self.me["start_ticks"])

    def idents(self) -> list[tuple[int, int]]:
        return [(self.me["pid"], self.me["start_ticks"])] + [(s["pid"], s["start_ticks"]) for s in self.steps.values()]

    def close(self) -> None:
        try:
            self.p.stdin.write(json.dumps({"op": "quit"}) + "\n")
            self.p.stdin.close()
        except OSError:
            pass
        try:
            self.p.wait(10)
        except subprocess.TimeoutExpired:
            procs.signal_ident(self.me["pid"], self.me["start_ticks"])
            self.p.wait(10)
        self.err.close()


def journal(state: Path) -> list[dict]:
    """The guard's journal beside the state (src/guard/journal.rs), torn lines skipped."""
    path = state.with_name(state.stem + ".journal.jsonl")
    records = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            try:
                records.append(json.loads(line))
            except ValueError:
                pass
    return records


def guards(state: Path) -> list[tuple[int, int]]:
    """Every guard that journaled beside this state, by identity."""
    return [(r["guard"]["pid"], r["guard"]["start_ticks"]) for r in journal(state) if r["kind"] == "start"]


def journaled_in_job(records: list[dict], pid: int, ticks: int) -> dict | None:
    """The first record that took this identity into the job (a birth or an exec)."""
    for r in records:
        ident = (r.get("pid"), r.get("start_ticks")) if r["kind"] == "birth" else ((r.get("id") or {}).get("pid"), (r.get("id") or {}).get("start_ticks"))
        if r["kind"] in ("birth", "exec", "seed") and ident == (pid, ticks) and r.get("in_job"):
            return r
    return None


# ---------------------------------------------------------------------------------------
# One case
# ---------------------------------------------------------------------------------------

# The `sweep`, `bare` and `guard` modes: one script, as the README tells a user outside a
# CI with a marker (a laptop, a Makefile) to deploy ci-janitor. `bare` leaves out
# `--export` and shows what is lost without it. The last command is not the script's last
# (bash would exec it, and the sweep's caller would be the suite).
SCRIPT = r"""
set -u
if [ "$MODE" = bare ]; then
  "$J" snapshot --state "$S"
else
  eval "$("$J" snapshot --state "$S" --export)"
fi
if [ "$MODE" = guard ]; then "$J" guard start; fi
"$@" >&2
"$J" sweep --state "$S" --color never --report-json "$R" $EXTRA
status=$?
exit $status
"""


def run_case(case: Case, janitor: str, timeout: float) -> None:
    work, truth_dir, byst = case.dir / "work", case.dir / "truth", case.dir / "bystanders"
    for d in (work, truth_dir, byst):
        d.mkdir(parents=True)
    report_path, state = case.dir / "report.json", case.dir / "state.json"
    go = case.dir / "go"
    leak_cmd = [PY, str(HERE / "leak.py"), case.scenario, "--work", str(work), "--truth-dir", str(truth_dir), "--go", str(go)]
    env = clean_env()
    bystanders: list[dict] = []
    started: list[subprocess.Popen] = []
    agent: Agent | None = None
    truth: dict | None = None
    out = open(case.dir / "janitor.out", "w")
    err = open(case.dir / "janitor.err", "w")
    try:
        bystanders.append(bystander_child(byst, "before (our child)"))
        bystanders.append(bystander_detached(byst, "before (detached)"))
        t0 = time.monotonic()
        if case.mode in AGENT_MODES:
            agent = Agent(case, "Runner.Worker" if case.mode == "worker" else None)
            status, t_sweep = run_steps(case, agent, janitor, state, report_path, leak_cmd, bystanders, timeout)
            if status is None:
                return
            truth = json.loads((truth_dir / "truth.json").read_text())
        else:
            if case.mode == "run":
                main = subprocess.Popen(
                    [janitor, "run", "--color", "never", "--report-json", str(report_path), *EXTRA, "--", *leak_cmd],
                    env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=case.dir,
                )
            else:
                script_env = dict(env, J=janitor, S=str(state), R=str(report_path), MODE=case.mode, EXTRA=" ".join(EXTRA))
                main = subprocess.Popen(
                    ["bash", "-c", SCRIPT, "bash", *leak_cmd],
                    env=script_env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=case.dir,
                )
            started.append(main)
            tf = truth_dir / "truth.json"
            if not procs.wait_until(lambda: tf.exists() or main.poll() is not None, timeout, 0.1) or not tf.exists():
                case.check(False, f"the step wrote no ground truth (status {main.poll()}); see {truth_dir / 'step.log'}")
                return
            truth = json.loads(tf.read_text())
            if not step_ok(case, truth):
                return
            during(case, byst, bystanders)
            go.touch()
            t_sweep = time.monotonic()
            status = main.wait(180)
        sweep_s = time.monotonic() - t_sweep
        want = 0 if case.unattributed else 1
        case.check(status == want, f"ci-janitor {case.mode} exited {status}, expected {want}")
        case.say(f"  ci-janitor {case.mode}: exit {status}, sweep {sweep_s:.1f} s, case {time.monotonic() - t0:.1f} s")
        check_verdict(case)
        if case.check(report_path.exists(), "no JSON report"):
            report = json.loads(report_path.read_text())
            check_report(case, truth, report, bystanders, started)
        for f in case.after:
            f()
        if agent is not None:
            case.check(agent.alive(), "the agent was killed")
        if case.guarded and not EXTRA:
            left = [g for g in guards(state) if not procs.wait_until(lambda: not procs.alive(*g), 10)]
            case.check(not left, f"the sweep left the guard running: {left}")
        if case.unattributed and case.mode == "sweep":
            known_gap(case, janitor, state, env, truth, bystanders)
    finally:
        out.close()
        err.close()
        # The guard first (a dry run leaves it running): were the agent named Runner.Worker
        # to quit under a live guard, its dead man's switch would sweep behind our back.
        extra = [g for st in (state, *case.states) for g in guards(st)]
        procs.kill_all(extra)
        if agent is not None:
            agent.close()
            extra = agent.idents()
        cleanup(case, truth, bystanders, started, extra)


def step_ok(case: Case, truth: dict) -> bool:
    notes = {k: v for k, v in (truth.get("notes") or {}).items() if not isinstance(v, dict)}
    case.say(f"  step: {truth['setup_s']} s to set up the leak {notes}; {len(truth['leaked'])} processes left")
    if "error" in truth:
        case.check(False, f"the step failed: {truth['error']}; see {case.dir / 'truth' / 'step.log'}")
        return False
    check_truth(case, truth)
    return True


def during(case: Case, byst: Path, bystanders: list[dict]) -> None:
    """Bystanders that appear while the leak is alive: another job's, and nobody's."""
    bystanders.append(bystander_detached(byst, "during (detached)"))
    bystanders.append(bystander_detached(byst, "during (no marker)", marked=False))


def check_verdict(case: Case) -> None:
    """The verdict line: never a bare "clean" while processes nothing attributes are alive."""
    text = (case.dir / "janitor.out").read_text(errors="replace")
    if case.unattributed:
        ok = "no leak attributed to the job, but" in text and "nothing attributes" in text and "clean:" not in text
        case.check(ok, "the verdict does not say that processes appeared that nothing attributes")
        case.check("snapshot --export" in text and "guard" in text, "the report does not name the deployment that would have attributed them")
        line = next((l for l in text.splitlines() if "no leak attributed" in l), "")
        case.say(f"  verdict: {line.strip()}")
    else:
        case.check("found and killed" in text, "the verdict does not say leaks were found and killed")


def run_steps(case: Case, agent: Agent, janitor: str, state: Path, report: Path, leak_cmd: list[str], bystanders: list[dict], timeout: float) -> tuple[int | None, float]:
    """The job as separate steps under the agent. Returns the sweep step's exit status (None
    when the case could not get that far) and when the sweep step started."""
    worker = case.mode == "worker"
    marker = "RUNNER_TRACKING_ID" if worker else "CI_JOB_ID"
    job = {marker: f"github_{uuid.uuid4()}" if worker else str(int(time.time() * 1000) % 10**9)}
    steps_dir = case.dir / "steps"
    steps_dir.mkdir()
    truth_dir = case.dir / "truth"
    go, go2 = case.dir / "go", case.dir / "go2"
    j = shlex.quote(janitor)
    st = shlex.quote(str(state))
    if worker:
        case.check(agent.me["comm"] == "Runner.Worker", f"the agent's comm is {agent.me['comm']!r}, not Runner.Worker")
    case.say(f"  agent {agent.me['pid']} ({agent.me['comm']}), job {marker}={job[marker]}")

    # Step 1: snapshot and guard, then the step's process exits.
    agent.start("1-snapshot", ["sh", "-c", f"{j} snapshot --state {st} && {j} guard start --state {st}"], job, case.dir, steps_dir / "1-snapshot.log")
    s1 = agent.status("1-snapshot", 60)
    if not case.check(s1 == 0, f"step 1 (snapshot + guard start) exited {s1}; see {steps_dir / '1-snapshot.log'}"):
        return None, 0.0
    rec = journal(state)
    start = next((r for r in rec if r["kind"] == "start"), None)
    if not case.check(start is not None, "no guard journal after step 1"):
        return None, 0.0
    guard = (start["guard"]["pid"], start["guard"]["start_ticks"])
    root = start.get("root")
    agent_id = {"pid": agent.me["pid"], "start_ticks": agent.me["start_ticks"]}
    if worker:
        case.check(root == agent_id, f"the guard's root is {root}, expected the Runner.Worker agent {agent_id}")
    else:
        case.check(root != agent_id, "the long-lived agent was taken as the job's root")
    case.say(f"  guard {guard[0]} ({start['mode']}), root {root and root['pid']}")

    # A concurrent job on the same agent (same session, same cgroup, same process group),
    # deployed the same way: its own snapshot and guard, then a server that runs through
    # this job's sweep; its own sweep comes after ours (see other_job_sweep). And a
    # process the agent starts for itself, with no job's marker.
    if not worker:
        other = {"CI_JOB_ID": str(int(job["CI_JOB_ID"]) + 1)}
        odir = case.dir / "other-job"
        odir.mkdir()
        ostate = odir / "state.json"
        case.states.append(ostate)
        agent.start("b1-snapshot", ["sh", "-c", f"{j} snapshot --state {shlex.quote(str(ostate))} && {j} guard start --state {shlex.quote(str(ostate))}"], other, odir, steps_dir / "b1-snapshot.log")
        sb1 = agent.status("b1-snapshot", 60)
        if not case.check(sb1 == 0, f"the other job's step 1 exited {sb1}; see {steps_dir / 'b1-snapshot.log'}"):
            return None, 0.0
        port = procs.free_port()
        ev = agent.start("b2-server", [PY, "-m", "http.server", "--bind", "127.0.0.1", str(port)], other, odir, steps_dir / "b2-server.log")
        own_port = procs.free_port()
        (case.dir / "agent-own").mkdir()
        own = agent.start("agent-own", [PY, "-m", "http.server", "--bind", "127.0.0.1", str(own_port)], {}, case.dir / "agent-own", steps_dir / "agent-own.log")
        if not case.check(procs.wait_until(lambda: not procs.port_free(port) and not procs.port_free(own_port), 20), "the other job's server or the agent's own did not come up"):
            return None, 0.0
        other_server = {"what": "other job on the agent", "pid": ev["pid"], "start_ticks": ev["start_ticks"], "port": port, "class": "other-job"}
        bystanders.append(other_server)
        bystanders.append({"what": "the agent's own (no marker)", "pid": own["pid"], "start_ticks": own["start_ticks"], "port": own_port, "class": "unattributed"})
        other_job = ev
        case.after.append(lambda: other_job_sweep(case, agent, janitor, ostate, other, other_server, bystanders))

    # Step 2: the scenario's step; it leaks, writes the ground truth, waits for `go`.
    ev2 = agent.start("2-leak", leak_cmd, job, case.dir, case.dir / "janitor.err")
    tf = truth_dir / "truth.json"
    procs.wait_until(lambda: tf.exists() or agent.status("2-leak", 0) is not None, timeout, 0.1)
    if not tf.exists():
        case.check(False, f"the step wrote no ground truth (status {agent.status('2-leak', 0)}); see {truth_dir / 'step.log'}")
        return None, 0.0
    truth = json.loads(tf.read_text())
    if not step_ok(case, truth):
        return None, 0.0
    check_step_recorded(case, state, agent, "2-leak", ev2, guard)
    during(case, case.dir / "bystanders", bystanders)
    go.touch()
    s2 = agent.status("2-leak", 60)
    case.check(s2 == 0, f"step 2 exited {s2} (negative: killed by that signal)")

    # Step 3, started after step 2 ended: the guard is still there and takes it in.
    ev3 = agent.start("3-later", ["sh", "-c", f'{j} guard status --state {st}; while [ ! -e "$0" ]; do sleep 0.05; done', str(go2)], job, case.dir, steps_dir / "3-later.log")
    check_step_recorded(case, state, agent, "3-later", ev3, guard)
    go2.touch()
    s3 = agent.status("3-later", 30)
    case.check(s3 == 0, f"step 3 exited {s3}")
    status_text = (steps_dir / "3-later.log").read_text(errors="replace")
    dm = next((l.strip() for l in status_text.splitlines() if "dead man's switch" in l), "")
    if worker:
        case.check(f"watching pid {agent.me['pid']}" in dm, f"guard status: {dm!r}, expected the dead man's switch on the agent")
    else:
        case.check("off" in dm, f"guard status: {dm!r}, expected no dead man's switch under a long-lived agent")
    case.say(f"  steps 1-3 exited {s1}, {s2}, {s3}; guard status: {dm}")

    # Step 4: the sweep (GitLab's after_script).
    t_sweep = time.monotonic()
    agent.start("4-sweep", ["sh", "-c", shlex.join([janitor, "sweep", "--state", str(state), "--color", "never", "--report-json", str(report), *EXTRA])], job, case.dir, case.dir / "janitor.out")
    s4 = agent.status("4-sweep", 180)
    records = journal(state)
    if not worker:
        case.check(journaled_in_job(records, other_job["pid"], other_job["start_ticks"]) is None, "the guard took the other job's step for this job's")
    stops = [r for r in records if r["kind"] == "stop"]
    case.check([r["reason"] for r in stops] == ["stopped"], f"the guard stopped {[r['reason'] for r in stops]}, expected once, by the sweep")
    case.check(not state.with_name(state.stem + ".guard-report.json").exists(), "a dead man's sweep wrote its report")
    return s4, t_sweep


def other_job_sweep(case: Case, agent: Agent, janitor: str, ostate: Path, other: dict, server: dict, bystanders: list[dict]) -> None:
    """The other job's own sweep, after ours: our sweep left its guard running and its
    guard never took our leak for its own; its sweep kills its server (the job's) and
    nothing else."""
    truth = json.loads((case.dir / "truth" / "truth.json").read_text())
    records = journal(ostate)
    oguard = guards(ostate)
    case.check(len(oguard) == 1 and procs.alive(*oguard[0]), "our sweep stopped or killed the other job's guard")
    ours = [p["pid"] for p in truth["leaked"] if journaled_in_job(records, p["pid"], p["start_ticks"])]
    case.check(not ours, f"the other job's guard took our leaked processes for its own: {ours}")
    oreport = ostate.with_name("report.json")
    agent.start("b3-sweep", ["sh", "-c", shlex.join([janitor, "sweep", "--state", str(ostate), "--color", "never", "--report-json", str(oreport)])], other, ostate.parent, ostate.with_name("sweep.out"))
    sb3 = agent.status("b3-sweep", 120)
    case.check(sb3 == 1, f"the other job's sweep exited {sb3}, expected 1 (its server leaked)")
    if not case.check(oreport.exists(), "the other job's sweep wrote no report"):
        return
    rep = json.loads(oreport.read_text())
    by = {(p["pid"], p["start_ticks"]): p for p in rep["processes"]}
    r = by.get((server["pid"], server["start_ticks"]))
    case.check(r is not None and r["class"] == "job" and (r.get("fate") or {}).get("fate") in ("terminated", "killed"), f"the other job's sweep: its server is {r and (r['class'], r.get('fate'))}")
    case.check(procs.wait_until(lambda: not procs.alive(server["pid"], server["start_ticks"]), 10), "the other job's server survived its own sweep")
    extra = [(p["pid"], p["class"], p["argv"][:3]) for i, p in by.items() if i != (server["pid"], server["start_ticks"]) and (p["class"] == "job" or p.get("fate"))]
    case.check(not extra, f"the other job's sweep called or signalled more than its server: {extra}")
    others = [b for b in bystanders if b is not server]
    dead = [b["what"] for b in others if not procs.alive(b["pid"], b["start_ticks"])]
    case.check(not dead, f"the other job's sweep killed {dead}")
    case.say(f"  other job: its guard ran through our sweep; its own sweep exited {sb3}, killed its server (class {r and r['class']}), touched nothing else")


def check_step_recorded(case: Case, state: Path, agent: Agent, sid: str, ev: dict, guard: tuple[int, int]) -> None:
    """A step the agent started after step 1 exited: the guard journals it as the job's
    while it runs (polling the journal against a deadline), and it is alive then, from
    /proc: no dead man's sweep fired."""
    ident = (ev["pid"], ev["start_ticks"])
    found = procs.wait_until(lambda: journaled_in_job(journal(state), *ident) is not None, 15)
    rec = journaled_in_job(journal(state), *ident)
    alive = procs.alive(*ident)
    case.check(found, f"step {sid} ({ident[0]}) is not in the guard's journal as the job's")
    case.check(alive, f"step {sid} ({ident[0]}) was dead when the guard had recorded it")
    case.check(procs.alive(*guard), f"the guard was gone while step {sid} ran")
    if rec:
        case.say(f"  step {sid} {ident[0]}: journaled as the job's ({rec['kind']} via {rec.get('via', '-')}), alive then: {alive}")


def known_gap(case: Case, janitor: str, state: Path, env: dict, truth: dict, bystanders: list[dict]) -> None:
    """MCP under snapshot/sweep, even with `--export`: the server has no evidence left (the
    SDK scrubbed its environment, CI_JANITOR_RUN included; it runs in a session of its own;
    its parent is now init), so the sweep reports it as unattributed and exits 0. Asserted
    as it is, so that the suite fails when this changes; the guard closes the gap (modes
    guard, steps, worker). `--kill-unattributed` (only ever with --dry-run here) is shown
    not to be the answer: it would also kill the process of nobody's job that appeared
    meanwhile; the other job's server it spares (other-job)."""
    case.say(
        "  KNOWN GAP: without the guard the env-scrubbed MCP server (own session, parent init)"
        " has no evidence, even with --export: reported as unattributed, not killed, exit 0"
    )
    dry = case.dir / "report-kill-unattributed.json"
    subprocess.run(
        ["setsid", janitor, "sweep", "--state", str(state), "--dry-run", "--kill-unattributed", "--color", "never", "--report-json", str(dry)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL, timeout=120,
    )
    if not case.check(dry.exists(), "no report from the --dry-run --kill-unattributed sweep"):
        return
    would = {(p["pid"], p["start_ticks"]) for p in json.loads(dry.read_text())["processes"] if (p.get("fate") or {}).get("fate") == "would-kill"}
    leaks = {(p["pid"], p["start_ticks"]) for p in truth["leaked"]}
    during = [b for b in bystanders if b["what"].startswith("during")]
    case.check(leaks <= would, "--kill-unattributed would not even kill the MCP leak")
    # The other job's server carries that job's RUNNER_TRACKING_ID: class other-job, never
    # signalled, even with --kill-unattributed.
    hit = [b["pid"] for b in during if b["what"] == "during (detached)" and (b["pid"], b["start_ticks"]) in would]
    case.check(not hit, f"--kill-unattributed would kill the other job's server {hit}")
    nobody = [b["pid"] for b in during if b["what"] == "during (no marker)" and (b["pid"], b["start_ticks"]) in would]
    case.check(bool(nobody), "--kill-unattributed would spare the unmarked process of nobody's job? (expected it to be hit)")
    case.say(
        f"  --dry-run --kill-unattributed would kill the leak and {len(would) - len(leaks)} other processes,"
        " among them the unmarked server of nobody's job; the other job's server is spared (other-job)"
    )


def cleanup(case: Case, truth: dict | None, bystanders: list[dict], started: list[subprocess.Popen], extra: list[tuple[int, int]]) -> None:
    """Kills, by identity, everything the case started, whatever happened."""
    for p in started:
        if p.poll() is None:
            st = procs.read_stat(p.pid)
            if st:
                procs.signal_ident(p.pid, st.start_ticks)
            p.wait(10)
    idents = [(p["pid"], p["start_ticks"]) for p in (truth or {}).get("leaked", [])]
    idents += [(b["pid"], b["start_ticks"]) for b in bystanders]
    idents += [i for i in extra if i[1] is not None]
    left = procs.kill_all(idents)
    for b in bystanders:
        if "popen" in b:
            b["popen"].wait(10)
    swept = procs.sweep_dir(str(case.dir))
    left += [p.ident() for p in procs.procs_in(str(case.dir))]
    if left:
        case.problems.append(f"cleanup could not kill {left}")
    if swept:
        case.say(f"  cleanup: also killed {[(p.pid, short_argv(p.argv, 40)) for p in swept]}")


def per_job_roots_above_us() -> list[str]:
    found, pid = [], os.getppid()
    while pid > 1:
        st = procs.read_stat(pid)
        if st is None:
            break
        if st.comm in ("Runner.Worker", "Agent.Worker"):
            found.append(f"{st.comm} {pid}")
        pid = st.ppid
    return found


def leftovers(root: Path) -> list[procs.Proc]:
    return procs.procs_in(str(root), exclude={os.getpid()}) if root.exists() else []


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--janitor", required=True)
    ap.add_argument("--scratch", required=True, type=Path)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--timeout", type=float, default=400.0, help="bound on setting up one leak")
    ap.add_argument("scenarios", nargs="*")
    args = ap.parse_args()
    # A cancelled run (SIGTERM) still runs every case's cleanup on its way out.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    scenarios = args.scenarios or [*SCENARIOS_RUN, "hang"]
    # `hang` (hang.py): a test waiting on a dead uvicorn server, the job cancelled.
    with_hang = "hang" in scenarios
    scenarios = [s for s in scenarios if s != "hang"]
    for s in scenarios:
        if s not in SCENARIOS_RUN:
            ap.error(f"unknown scenario {s}; known: {', '.join(SCENARIOS_RUN)}")
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            ap.error(f"unknown mode {m}; known: {', '.join(MODES)}")
    passed = failed = 0
    scratch = args.scratch.resolve()

    # The expectations assume no per-job root above the suite: under a CI runner's worker,
    # every live descendant of it is that job's, our bystanders included.
    roots = per_job_roots_above_us()
    if roots:
        print(f"== the suite runs under a per-job root ({', '.join(roots)}): its expectations do not hold there;"
              " run it outside the runner's worker (e.g. from a self-hosted runner's hook or a plain shell)")
        print(f"{passed} passed, 1 failed")
        return 1

    # Nothing may be left from an earlier run.
    old = leftovers(scratch)
    print(f"== leftovers from an earlier run: {len(old)}")
    if old:
        for p in old:
            print(f"  {p.pid} {short_argv(p.argv)} (cwd {p.cwd})")
        procs.sweep_dir(str(scratch))
        failed += 1
    else:
        passed += 1
    shutil.rmtree(scratch, ignore_errors=True)
    run_root = scratch / time.strftime("%Y%m%d-%H%M%S")
    run_root.mkdir(parents=True)

    suite_t0 = time.monotonic()
    explicit = args.modes != ",".join(MODES)
    for scenario in scenarios:
        for mode in modes:
            if mode == "bare" and not explicit and scenario not in BARE_DEFAULT:
                continue
            case = Case(scenario, mode, run_root / f"{scenario}-{mode}")
            print(f"== {case.name}: expect {EXPECTED_ROLES[scenario]}", flush=True)
            t0 = time.monotonic()
            try:
                run_case(case, args.janitor, args.timeout)
            except Exception:
                case.problems.append("exception:\n" + traceback.format_exc())
            for line in case.lines:
                print(line)
            took = time.monotonic() - t0
            if case.problems:
                failed += 1
                print(f"FAIL {case.name} ({took:.1f} s)")
                for pr in case.problems:
                    print(f"  - {pr}")
                for f in ("janitor.out", "janitor.err", "truth/step.log"):
                    path = case.dir / f
                    if path.exists():
                        print(f"  --- {f} (last 40 lines)")
                        for line in path.read_text(errors="replace").splitlines()[-40:]:
                            print(f"  | {line}")
            else:
                passed += 1
                print(f"ok   {case.name} ({took:.1f} s)")
            sys.stdout.flush()

    if with_hang:
        import hang
        p, f = hang.run_all(args.janitor, run_root)
        passed, failed = passed + p, failed + f

    left = leftovers(scratch)
    print(f"== leftovers after the suite: {len(left)}")
    if left:
        for p in left:
            print(f"  {p.pid} {short_argv(p.argv)} (cwd {p.cwd})")
        procs.sweep_dir(str(scratch))
        failed += 1
    else:
        passed += 1
    print(f"== suite took {time.monotonic() - suite_t0:.0f} s")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
