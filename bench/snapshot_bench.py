#!/usr/bin/env python3
"""Snapshot benchmark driver: ci-janitor snapshot vs ps, ss, lsof and psutil.

Normally started by bench/snapshot.sh, which builds/installs everything and passes the
paths. For each size N it:

  1. starts bench/spawn_idle (a C program) with N idle children, 10% of them listening
     on TCP 127.0.0.1:0 and 10% on a unix socket, and waits for its "ready" line
     (the children report readiness through a pipe, no sleeps);
  2. runs every tool once with its output captured, to check each one really saw the
     spawned tree (fails loudly otherwise);
  3. runs one untimed warm-up round, then REPS rounds; in every round each tool runs
     once, in a freshly shuffled order (interleaved, same conditions for all);
     each run goes through bench/run_rusage (a tiny static C program) which reports
     wall time and the child's ru_maxrss from wait4();
  4. stops the spawner (closes its stdin: it SIGKILLs and reaps its children) and
     checks that nothing of its process group is left (zombies count as dead),
     falling back to `kill -KILL -- -PGID`.

It prints Markdown tables (also written to --out-md) and raw samples as JSON.
"""
from __future__ import annotations

import argparse
import ctypes
import datetime
import json
import math
import os
import platform
import random
import re
import resource
import select
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

TCP_PCT = 10
UNIX_PCT = 10
BENCH_DIR = os.path.dirname(os.path.abspath(__file__))


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- process-group helpers


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes whose process group is pgid."""
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", "rb") as f:
                s = f.read().decode("utf-8", "replace")
        except OSError:
            continue
        rest = s[s.rfind(")") + 2 :].split()
        # rest[0]=state, rest[1]=ppid, rest[2]=pgrp
        if len(rest) > 2 and int(rest[2]) == pgid and rest[0] not in ("Z", "X"):
            out.append(int(d))
    return out


def reap_orphans() -> None:
    """We are a child subreaper: reap whatever got reparented to us."""
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def wait_group_gone(pgid: int, timeout: float) -> list[int]:
    deadline = time.monotonic() + timeout
    while True:
        reap_orphans()
        left = group_members(pgid)
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


class Spawner:
    def __init__(self, exe: str, n: int, pgid_file: str | None):
        self.n = n
        self.pgid_file = pgid_file
        self.sockdir = tempfile.mkdtemp(prefix="cij-bench-sock-")
        self.proc = subprocess.Popen(
            [exe, str(n), str(TCP_PCT), str(UNIX_PCT), self.sockdir],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        # spawn_idle calls setpgid(0,0) first thing, so its pgid is its pid.
        self.pgid = self.proc.pid
        if pgid_file:
            with open(pgid_file, "w") as f:
                f.write(f"{self.pgid}\n")
        self.info = self._wait_ready(timeout=300)

    def _wait_ready(self, timeout: float) -> dict:
        assert self.proc.stdout is not None
        r, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline().decode() if r else ""
        m = re.match(r"ready n=(\d+) tcp=(\d+) unix=(\d+) pgid=(\d+)", line)
        if not m:
            self.stop()
            raise RuntimeError(f"spawn_idle did not get ready (got {line!r}, rc={self.proc.poll()})")
        n, tcp, unix, pgid = map(int, m.groups())
        if pgid != self.pgid:
            self.stop()
            raise RuntimeError(f"spawn_idle pgid {pgid} != pid {self.pgid}")
        return {"n": n, "tcp": tcp, "unix": unix, "pgid": pgid}

    def stop(self) -> None:
        """Graceful: close stdin (spawner kills + reaps its children). Fallback: kill the group."""
        if self.proc.stdin and not self.proc.stdin.closed:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            log(f"spawner {self.pgid} did not exit on stdin EOF; killing its group")
        left = wait_group_gone(self.pgid, timeout=5)
        if left:
            log(f"{len(left)} processes left in group {self.pgid}; kill -KILL -- -{self.pgid}")
            try:
                os.killpg(self.pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
            left = wait_group_gone(self.pgid, timeout=30)
        if left:
            raise RuntimeError(f"process group {self.pgid} still has {len(left)} live processes")
        if self.pgid_file and os.path.exists(self.pgid_file):
            os.unlink(self.pgid_file)
        shutil.rmtree(self.sockdir, ignore_errors=True)


# ---------------------------------------------------------------- measuring


def run_measured(runner: str, argv: list[str]) -> tuple[float, int, int]:
    """(wall ms, max RSS KiB, wait status) of one run, measured by run_rusage."""
    out = subprocess.run([runner, *argv], stdout=subprocess.PIPE, check=True).stdout.decode()
    ns, rss, status = map(int, out.split())
    return ns / 1e6, rss, status


def check_tools(tools: dict, info: dict, state_file: str) -> dict:
    """Run each tool once with output captured and check it saw the spawned tree."""
    n, tcp, unix = info["n"], info["tcp"], info["unix"]
    problems = []
    seen = {}

    def cap(argv):
        return subprocess.run(argv, capture_output=True, text=True, errors="replace")

    r = cap(tools["ci-janitor"])
    m = re.search(r"snapshot of (\d+) processes and (\d+) listening sockets in ([\d.]+) ms", r.stderr)
    if r.returncode != 0 or not m:
        problems.append(f"ci-janitor rc={r.returncode} stderr={r.stderr.strip()!r}")
    else:
        procs, socks = int(m.group(1)), int(m.group(2))
        seen["ci-janitor"] = f"{procs} processes, {socks} listening sockets"
        if procs < n or socks < tcp + unix:
            problems.append(f"ci-janitor saw only {procs} processes / {socks} listeners")
        with open(state_file) as f:
            st = json.load(f)["snapshot"]
        ours = {p["id"]["pid"] for p in st["processes"] if p.get("pgid") == info["pgid"]}
        owned = sum(1 for s in st["listeners"] if any(o["pid"] in ours for o in s.get("owners", [])))
        seen["ci-janitor"] += f" ({len(ours)} in the spawned group, owning {owned} listeners)"
        if len(ours) < n + 1 or owned < tcp + unix:
            problems.append(f"ci-janitor saw {len(ours)} group members owning {owned} listeners")

    r = cap(tools["ps"])
    lines = r.stdout.count("\n") - 1
    ours = r.stdout.count("spawn_idle")
    seen["ps"] = f"{lines} processes ({ours} spawn_idle)"
    if r.returncode != 0 or ours < n + 1:
        problems.append(f"ps rc={r.returncode} saw {ours} spawn_idle lines, want {n + 1}")

    r = cap(tools["ss"])
    ours = sum(1 for ln in r.stdout.splitlines() if "127.0.0.1:" in ln and "spawn_idle" in ln)
    seen["ss"] = f"{ours} spawn_idle TCP listeners (with -p owner)"
    if r.returncode != 0 or ours < tcp:
        problems.append(f"ss rc={r.returncode} saw {ours} spawn_idle TCP listeners, want {tcp}")

    r = cap(tools["lsof"])
    ours = sum(1 for ln in r.stdout.splitlines() if ln.startswith("spawn_idl") and "LISTEN" in ln)
    seen["lsof"] = f"{ours} spawn_idle TCP listeners"
    if r.returncode != 0 or ours < tcp:
        problems.append(f"lsof rc={r.returncode} saw {ours} spawn_idle listeners, want {tcp}")

    r = cap(tools["psutil"] + ["-v"])
    try:
        procs, listen = map(int, r.stdout.split())
    except ValueError:
        procs = listen = -1
    seen["psutil"] = f"{procs} processes, {listen} inet listeners"
    if r.returncode != 0 or procs < n or listen < tcp:
        problems.append(f"psutil rc={r.returncode} out={r.stdout.strip()!r} err={r.stderr.strip()[-300:]!r}")

    if problems:
        raise RuntimeError("sanity check failed:\n  " + "\n  ".join(problems))
    return seen


def stats(xs: list[float]) -> dict:
    s = sorted(xs)
    return {
        "median": statistics.median(s),
        "p90": s[max(0, math.ceil(0.9 * len(s)) - 1)],
        "min": s[0],
        "max": s[-1],
    }


def bench_size(args, tools: dict, n: int, reps: int) -> dict:
    log(f"N={n}: starting {n} idle processes")
    t0 = time.monotonic()
    sp = Spawner(args.spawner, n, args.pgid_file)
    try:
        info = sp.info
        members = group_members(info["pgid"])
        if len(members) != n + 1:
            raise RuntimeError(f"group {info['pgid']} has {len(members)} live processes, want {n + 1}")
        total = sum(1 for d in os.listdir("/proc") if d.isdigit())
        log(f"N={n}: ready in {time.monotonic() - t0:.2f}s: {info['tcp']} TCP + {info['unix']} unix "
            f"listeners, {total} processes on the machine")
        seen = check_tools(tools, info, args.state_file)
        for k, v in seen.items():
            log(f"N={n}: sanity {k}: {v}")

        rng = random.Random(args.seed * 100003 + n)
        samples = {k: {"ms": [], "rss_kib": []} for k in tools}
        cij_internal_ms = []
        names = list(tools)
        t0 = time.monotonic()
        for rep in range(args.warmup + reps):
            rng.shuffle(names)
            for name in names:
                ms, rss, status = run_measured(args.runner, tools[name])
                if status != 0:
                    raise RuntimeError(f"{name} exited with wait status {status} (rep {rep})")
                if rep < args.warmup:
                    continue
                samples[name]["ms"].append(ms)
                samples[name]["rss_kib"].append(rss)
                if name == "ci-janitor":
                    with open(args.state_file) as f:
                        cij_internal_ms.append(json.load(f)["snapshot"]["duration_us"] / 1000)
            if rep >= args.warmup:
                done = rep - args.warmup + 1
                cij = statistics.median(samples["ci-janitor"]["ms"])
                log(f"N={n}: rep {done}/{reps} ({time.monotonic() - t0:.0f}s), "
                    f"ci-janitor median so far {cij:.1f} ms")
        # The tree must still be whole after the runs (nothing killed it meanwhile).
        left = len(group_members(info["pgid"]))
        if left != n + 1:
            raise RuntimeError(f"group shrank to {left} during the runs")
        proc_cost = None
        if args.proc_cost:
            rounds = "3" if n >= 5000 else "5"
            proc_cost = subprocess.run([args.proc_cost, rounds], stdout=subprocess.PIPE,
                                       text=True, check=True).stdout
    finally:
        sp.stop()
    log(f"N={n}: spawned group gone")
    return {"n": n, "reps": reps, "info": info, "machine_processes": total, "sanity": seen,
            "samples": samples, "cij_internal_ms": cij_internal_ms, "proc_cost": proc_cost}


# ---------------------------------------------------------------- report

ROWS = [
    # key, label, command shown
    ("ci-janitor", "ci-janitor", "`ci-janitor snapshot --state $TMP/x.json`"),
    ("ps+ss", "ps + ss", "both rows below, sum of medians"),
    ("ps", "  ps", "`ps -eo pid,ppid,pgid,sid,lstart,args`"),
    ("ss", "  ss", "`ss -ltnup`"),
    ("lsof", "lsof", "`lsof -iTCP -sTCP:LISTEN`"),
    ("psutil", "psutil", "`python3 bench/psutil_oneshot.py` (fresh interpreter)"),
    ("python", "python3 startup", "`python3 -c pass` (included in psutil)"),
    ("true", "exec floor", "`/bin/true`"),
]


def summarize(res: dict) -> dict:
    s = res["samples"]
    out = {}
    for k, v in s.items():
        out[k] = stats(v["ms"]) | {"rss_mib": max(v["rss_kib"]) / 1024}
    per_rep = [a + b for a, b in zip(s["ps"]["ms"], s["ss"]["ms"])]
    pr = stats(per_rep)
    out["ps+ss"] = {
        "median": out["ps"]["median"] + out["ss"]["median"],  # sum of medians
        "p90": pr["p90"], "min": pr["min"], "max": pr["max"],  # of per-round sums
        "rss_mib": max(out["ps"]["rss_mib"], out["ss"]["rss_mib"]),
    }
    return out


def table(res: dict) -> str:
    sm = summarize(res)
    base = sm["ci-janitor"]["median"]
    info = res["info"]
    lines = [
        f"### N = {info['n']:,} idle processes ({info['tcp']} TCP + {info['unix']} unix listeners; "
        f"{res['machine_processes']:,} processes on the machine incl. kernel threads), {res['reps']} rounds",
        "",
        "| tool | command | median ms | p90 ms | min – max ms | × ci-janitor | max RSS MiB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for key, label, cmd in ROWS:
        r = sm[key]
        ratio = r["median"] / base
        lines.append(
            f"| {label} | {cmd} | {r['median']:.1f} | {r['p90']:.1f} | {r['min']:.1f} – {r['max']:.1f} "
            f"| {ratio:.2f}× | {r['rss_mib']:.1f} |"
        )
    internal = statistics.median(res["cij_internal_ms"])
    lines += [
        "",
        f"ci-janitor's own `duration_us` (scan only, from the state file): median {internal:.1f} ms "
        f"of the {base:.1f} ms wall time.",
        "",
    ]
    return "\n".join(lines)


def verdicts(res: dict) -> str:
    sm = summarize(res)
    cij, psu, psss = sm["ci-janitor"], sm["psutil"], sm["ps+ss"]
    ratio = psu["median"] / cij["median"]
    r1 = "met" if ratio >= 5 else "NOT met"
    r2 = "met" if cij["median"] < psss["median"] else "NOT met"
    r3 = "met" if cij["rss_mib"] < 20 else "NOT met"
    n = res["info"]["n"]
    return "\n".join([
        f"Targets at N = {n:,}:",
        "",
        f"- ci-janitor ≥ 5× faster than psutil: **{r1}** — psutil {psu['median']:.1f} ms / "
        f"ci-janitor {cij['median']:.1f} ms = {ratio:.2f}×.",
        f"- ci-janitor faster than ps + ss together: **{r2}** — {cij['median']:.1f} ms vs "
        f"{psss['median']:.1f} ms ({psss['median'] / cij['median']:.2f}×).",
        f"- ci-janitor peak memory < 20 MiB: **{r3}** — max RSS {cij['rss_mib']:.1f} MiB.",
        "",
    ])


def machine_facts(args) -> str:
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
        except OSError:
            return "?"

    psutil_v = sh(args.python + " -c 'import psutil; print(psutil.__version__)'")
    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-").strip()
    mem = sh("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo")
    facts = [
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- nproc: {os.cpu_count()}, CPU: {cpu or '?'}, memory: {mem}",
        f"- kernel: {platform.release()} ({platform.machine()}); "
        f"pid_max {sh('cat /proc/sys/kernel/pid_max')}, RLIMIT_NPROC {resource.getrlimit(resource.RLIMIT_NPROC)[0]}",
        f"- ci-janitor: {sh(f'{args.cij} --version')} (static release build, "
        f"commit {sh('git -C ' + BENCH_DIR + ' rev-parse --short HEAD')})",
        f"- ps: {sh('ps -V')}; ss: {sh('ss -V')}; lsof: {sh('lsof -v 2>&1 | grep -m1 revision').strip()}",
        f"- python: {sh(args.python + ' -V')} ({args.python}); psutil "
        f"{psutil_v}",
    ]
    return "\n".join(facts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cij", required=True, help="ci-janitor binary")
    ap.add_argument("--spawner", required=True, help="compiled bench/spawn_idle.c")
    ap.add_argument("--runner", required=True, help="compiled bench/run_rusage.c")
    ap.add_argument("--python", default=sys.executable, help="interpreter for the psutil and startup rows")
    ap.add_argument("--sizes", default="100,1000,5000")
    ap.add_argument("--reps", default="100=15,1000=15,5000=15", help="rounds per size, N=REPS,...")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--workdir", default=None, help="where the state file goes (default: a temp dir)")
    ap.add_argument("--proc-cost", default=None, help="compiled bench/proc_cost.c: run it at each size")
    ap.add_argument("--pgid-file", default=None, help="write the spawner's pgid here (for an outside trap)")
    ap.add_argument("--out-md", default=None)
    ap.add_argument("--out-json", default=None)
    ap.add_argument("--command-line", default=None, help="shown in the report as the command that ran")
    args = ap.parse_args()

    # Orphans of a killed spawner get reparented to us, so we can reap them.
    try:
        ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
    except (OSError, AttributeError):
        pass
    # A SIGTERM/SIGHUP should still run the finally blocks (cleanup).
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, f: sys.exit(128 + s))

    workdir = args.workdir or tempfile.mkdtemp(prefix="cij-bench-")
    args.state_file = os.path.join(workdir, "x.json")
    py_script = os.path.join(BENCH_DIR, "psutil_oneshot.py")
    tools = {
        "ci-janitor": [args.cij, "snapshot", "--state", args.state_file],
        "ps": ["ps", "-eo", "pid,ppid,pgid,sid,lstart,args"],
        "ss": ["ss", "-ltnup"],
        "lsof": ["lsof", "-iTCP", "-sTCP:LISTEN"],
        "psutil": [args.python, py_script],
        "python": [args.python, "-c", "pass"],
        "true": ["/bin/true"],
    }
    reps_by_n = {int(k): int(v) for k, v in (kv.split("=") for kv in args.reps.split(","))}
    sizes = [int(x) for x in args.sizes.split(",")]

    results = []
    for n in sizes:
        results.append(bench_size(args, tools, n, reps_by_n.get(n, 15)))

    md = [
        "## Results",
        "",
        f"Command: `{args.command_line or ' '.join(sys.argv)}`",
        "",
        machine_facts(args),
        "",
        "Wall time is measured around fork+exec+wait of each command by `bench/run_rusage`; max RSS is "
        "`ru_maxrss` from `wait4()` (max over all rounds). The ps + ss row's median is the sum of the two "
        "medians, its p90/min/max are of the per-round sums, its RSS the larger of the two.",
        "",
    ]
    for res in results:
        md.append(table(res))
        if res["n"] == 1000:
            md.append(verdicts(res))
    if any(r["proc_cost"] for r in results):
        md += ["### Where the time goes: cost of each /proc read (`bench/proc_cost.c`, lean C, one thread)", ""]
        for res in results:
            if res["proc_cost"]:
                md += [f"N = {res['n']:,}:", "", "```", res["proc_cost"].rstrip(), "```", ""]
    text = "\n".join(md)
    print(text)
    if args.out_md:
        with open(args.out_md, "w") as f:
            f.write(text + "\n")
    if args.out_json:
        with open(args.out_json, "w") as f:
            json.dump({"argv": sys.argv, "results": results}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
