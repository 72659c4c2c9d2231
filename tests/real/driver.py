"""The real-world leak suite: each scenario under `ci-janitor run` and under snapshot/sweep.

    python driver.py --janitor PATH [SCENARIO...]

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
import signal
import subprocess
import sys
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
MODES = ("run", "sweep", "guard")
# Extra ci-janitor options, to test the suite itself: with REAL_JANITOR_ARGS=--dry-run
# every case must fail, and still leave nothing behind.
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

    @property
    def name(self) -> str:
        return f"{self.scenario} [{self.mode}]"

    def check(self, ok: bool, what: str) -> bool:
        if not ok:
            self.problems.append(what)
        return ok

    def say(self, line: str) -> None:
        self.lines.append(line)


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
    gap = case.scenario == "mcp-stdio" and case.mode == "sweep"

    # 1. Every leaked process is dead (zombies count as dead) and every leaked port is free.
    survivors = [i for i in leaked if procs.alive(*i)]
    if gap:
        case.check(len(survivors) == len(leaked), "known gap closed? the env-scrubbed MCP leak was killed: update the expectation")
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
            if case.mode == "guard":
                case.check("guard-lineage" in r["evidence"], f"{label}: no guard-lineage evidence: {r['evidence']}")
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
        )
        # 3. Attribution: the test that started it, and the step.
        if case.scenario == "mcp-stdio":
            # The MCP SDK passes the server only HOME/LOGNAME/PATH/SHELL/TERM/USER.
            if case.mode == "guard":
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
        if b.get("port"):
            case.check(not procs.port_free(b["port"]), f"bystander's port {b['port']} is no longer listening")
    for b in bystanders:
        st = procs.read_stat(b["pid"])
        same = [p["pid"] for p in leaked.values() if st and p["pgid"] == st.pgid]
        if same:
            case.say(f"  bystander {b['pid']} ({b['what']}) was in process group {st.pgid} with leaked {same}, and survived")
    n_ok = sum(procs.alive(b["pid"], b["start_ticks"]) for b in bystanders)
    case.say(f"  bystanders: {n_ok}/{len(bystanders)} alive ({', '.join(b['what'] for b in bystanders)})")


# ---------------------------------------------------------------------------------------
# Bystanders
# ---------------------------------------------------------------------------------------


def bystander_child(dirpath: Path, what: str) -> dict:
    """A plain child of the driver (in the driver's process group and session)."""
    p = subprocess.Popen(["sleep", "3600"], cwd=dirpath, env=bystander_env(), stdin=subprocess.DEVNULL)
    st = procs.read_stat(p.pid)
    return {"what": what, "pid": p.pid, "start_ticks": st.start_ticks, "popen": p}


def bystander_detached(dirpath: Path, what: str) -> dict:
    """A detached HTTP server of another job (its own session, parent init, another
    RUNNER_TRACKING_ID): the kind of process a self-hosted runner has around."""
    port = procs.free_port()
    pidfile = dirpath / ("".join(c if c.isalnum() else "-" for c in what) + ".pid")
    subprocess.run(
        ["setsid", "-f", "sh", "-c", 'echo $$ > "$1"; exec "$2" -m http.server --bind 127.0.0.1 "$3"', "sh", str(pidfile), PY, str(port)],
        cwd=dirpath,
        env=bystander_env(),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        check=True,
    )
    if not procs.wait_until(lambda: pidfile.exists() and pidfile.read_text().strip() and not procs.port_free(port), 20):
        raise RuntimeError(f"bystander ({what}) did not come up")
    pid = int(pidfile.read_text())
    return {"what": what, "pid": pid, "start_ticks": procs.read_stat(pid).start_ticks, "port": port}


def bystander_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("CI_JANITOR_RUN", "GITHUB_ACTION")}
    env["RUNNER_TRACKING_ID"] = f"another_job_{uuid.uuid4().hex[:8]}"
    return env


# ---------------------------------------------------------------------------------------
# One case
# ---------------------------------------------------------------------------------------


def run_case(case: Case, janitor: str, timeout: float) -> None:
    work, truth_dir, byst = case.dir / "work", case.dir / "truth", case.dir / "bystanders"
    for d in (work, truth_dir, byst):
        d.mkdir(parents=True)
    report_path, state = case.dir / "report.json", case.dir / "state.json"
    go = case.dir / "go"
    leak_cmd = [PY, str(HERE / "leak.py"), case.scenario, "--work", str(work), "--truth-dir", str(truth_dir), "--go", str(go)]
    env = {k: v for k, v in os.environ.items() if k not in ("RUNNER_TRACKING_ID", "CI_JANITOR_RUN", "GITHUB_ACTION")}
    bystanders: list[dict] = []
    started: list[subprocess.Popen] = []
    truth: dict | None = None
    out = open(case.dir / "janitor.out", "w")
    err = open(case.dir / "janitor.err", "w")
    try:
        bystanders.append(bystander_child(byst, "before (our child)"))
        bystanders.append(bystander_detached(byst, "before (detached)"))
        t0 = time.monotonic()
        if case.mode == "run":
            main = subprocess.Popen(
                [janitor, "run", "--color", "never", "--report-json", str(report_path), *EXTRA, "--", *leak_cmd],
                env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, cwd=case.dir,
            )
        else:
            env["RUNNER_TRACKING_ID"] = f"real_{case.scenario.replace('-', '_')}_{uuid.uuid4().hex[:12]}"
            subprocess.run([janitor, "snapshot", "--state", str(state)], env=env, check=True, stdout=out, stderr=err)
            if case.mode == "guard":
                # The guard watches this driver, the job's root: what it starts from now on
                # is born into the job, whatever its environment or session becomes.
                subprocess.run(
                    [janitor, "guard", "start", "--state", str(state), "--watch", str(os.getpid())],
                    env=env, check=True, stdout=out, stderr=err,
                )
            main = subprocess.Popen(leak_cmd, env=env, stdin=subprocess.DEVNULL, stdout=err, stderr=err, cwd=case.dir)
        started.append(main)
        tf = truth_dir / "truth.json"
        if not procs.wait_until(lambda: tf.exists() or main.poll() is not None, timeout, 0.1) or not tf.exists():
            case.check(False, f"the step wrote no ground truth (status {main.poll()}); see {truth_dir / 'step.log'}")
            return
        truth = json.loads(tf.read_text())
        notes = {k: v for k, v in (truth.get("notes") or {}).items() if not isinstance(v, dict)}
        case.say(f"  step: {truth['setup_s']} s to set up the leak {notes}; {len(truth['leaked'])} processes left")
        if "error" in truth:
            case.check(False, f"the step failed: {truth['error']}; see {truth_dir / 'step.log'}")
            return
        check_truth(case, truth)
        bystanders.append(bystander_detached(byst, "during (detached)"))
        go.touch()
        t_sweep = time.monotonic()
        if case.mode == "run":
            status = main.wait(120)
        else:
            main.wait(60)
            t_sweep = time.monotonic()
            # `sweep` stops the guard first (guard mode) and reads its journal.
            sw = subprocess.run(
                ["setsid", janitor, "sweep", "--state", str(state), "--color", "never", "--report-json", str(report_path), *EXTRA],
                env=env, stdout=out, stderr=err, stdin=subprocess.DEVNULL, timeout=120,
            )
            status = sw.returncode
        sweep_s = time.monotonic() - t_sweep
        gap = case.scenario == "mcp-stdio" and case.mode == "sweep"
        case.check(status == (0 if gap else 1), f"ci-janitor {case.mode} exited {status}, expected {0 if gap else 1}")
        case.say(f"  ci-janitor {case.mode}: exit {status}, sweep {sweep_s:.1f} s, case {time.monotonic() - t0:.1f} s")
        if case.check(report_path.exists(), "no JSON report"):
            report = json.loads(report_path.read_text())
            check_report(case, truth, report, bystanders, started)
        if gap:
            known_gap(case, janitor, state, env, truth, bystanders)
    finally:
        out.close()
        err.close()
        cleanup(case, truth, bystanders, started)


def known_gap(case: Case, janitor: str, state: Path, env: dict, truth: dict, bystanders: list[dict]) -> None:
    """MCP under snapshot/sweep: the server has no evidence left (the SDK scrubbed its
    environment, it runs in a session of its own, its parent is now init), so the sweep
    reports it as unattributed and exits 0. Asserted as it is, so that the suite fails when
    the guard closes the gap; and `--kill-unattributed` is shown not to be the answer: it
    would also kill the other job's server that started during the scenario."""
    case.say(
        "  KNOWN GAP: without the guard the env-scrubbed MCP server (own session, parent init)"
        " has no evidence: reported as unattributed, not killed, sweep exits 0"
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
    hit = [b["pid"] for b in during if (b["pid"], b["start_ticks"]) in would]
    case.check(not hit, f"--kill-unattributed would kill the other job's server {hit}")
    case.say(
        f"  --dry-run --kill-unattributed would kill the leak and {len(would) - len(leaks)} other processes;"
        " the other job's server is spared (other-job); the guard closes the gap (mode guard)"
    )


def cleanup(case: Case, truth: dict | None, bystanders: list[dict], started: list[subprocess.Popen]) -> None:
    """Kills, by identity, everything the case started, whatever happened."""
    for p in started:
        if p.poll() is None:
            st = procs.read_stat(p.pid)
            if st:
                procs.signal_ident(p.pid, st.start_ticks)
            p.wait(10)
    idents = [(p["pid"], p["start_ticks"]) for p in (truth or {}).get("leaked", [])]
    idents += [(b["pid"], b["start_ticks"]) for b in bystanders]
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
    scenarios = args.scenarios or list(SCENARIOS_RUN)
    for s in scenarios:
        if s not in SCENARIOS_RUN:
            ap.error(f"unknown scenario {s}; known: {', '.join(SCENARIOS_RUN)}")
    modes = [m for m in args.modes.split(",") if m]
    passed = failed = 0
    scratch = args.scratch.resolve()

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
    for scenario in scenarios:
        for mode in modes:
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
