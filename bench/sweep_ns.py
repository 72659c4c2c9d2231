#!/usr/bin/env python3
"""Sweep-vs-floor benchmark driver (issue 14): find + kill + all clear, grace 0, each round of
each cleaner in fresh PID and network namespaces.

Normally started by bench/sweep_ns.sh, which builds everything and passes the paths.

Outside (`outer`): for every size N, one warm-up round and then R rounds; each round runs
every cleaner once, in a freshly shuffled order, each in its own

    unshare --pid --net --fork --mount-proc  subreaper  python3 sweep_ns.py inner ...

so that a cleaner sees only the round's processes, pid 1 of the namespace (bench/subreaper.c)
reaps orphans at once, and nothing can outlive the round: when the namespace's pid 1 exits
the kernel kills everything left in it.

Inside (`inner`), one round of one cleaner:
  1. brings the loopback interface up (a new network namespace has it down);
  2. starts the bystanders: 10 groups of 10 processes (10 listen on TCP) with another
     RUNNER_TRACKING_ID and command line; they must survive;
  3. takes the cleaner's baseline, if it has one (`ci-janitor snapshot`, `sweep_floor
     baseline`); untimed;
  4. spawns the leak: 100 groups, N processes, 10% ignoring SIGTERM, 10% listening on TCP,
     with RUNNER_TRACKING_ID=<marker> and the marker in their command line
     (bench/spawn_groups.c, readiness over a pipe); opens a pidfd on each (checked by start
     time) and adds it to an epoll set;
  5. starts the clock, runs the cleaner under bench/run_rusage (its own wall time and peak
     RSS), then waits until every leaked process has exited (its pidfd is readable) and no
     listening TCP socket but the bystanders' is left; stops the clock;
  6. checks that every bystander is alive, and prints one JSON line.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import resource
import secrets
import select
import shutil
import statistics
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
CLEANERS = ["floor", "ci-janitor", "environ", "pkill", "psutil"]
GROUPS = 100


def log(msg: str) -> None:
    print(f"[sweep-ns] {msg}", file=sys.stderr, flush=True)


# ------------------------------------------------------------------------------- inside


def read_stat(pid: int):
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    rest = s[s.rfind(")") + 2 :].split()
    return rest[0], int(rest[19])


def spawn(a, groups: int, per_group: int, marker: str, tag: str):
    """Runs spawn_groups; returns [(pid, start, listens, port)]."""
    env = dict(os.environ, RUNNER_TRACKING_ID=marker)
    out = subprocess.run(
        [a.spawner, str(groups), str(per_group), "10", "10", tag],
        env=env, stdout=subprocess.PIPE, check=True, cwd=a.workdir,
    ).stdout.decode()
    lines = out.splitlines()
    if not lines or not lines[0].startswith("ready"):
        raise SystemExit(f"spawn_groups failed: {lines[:1]}")
    procs = []
    for line in lines[1:]:
        pid, start, _pgid, _ppid, _ign, lis, port = line.split()
        procs.append((int(pid), int(start), lis == "1", int(port)))
    return procs


def listening_ports() -> set[int]:
    """Local ports of every listening TCP socket in this network namespace."""
    ports = set()
    for f in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(f) as fh:
                next(fh)
                for line in fh:
                    parts = line.split()
                    if parts[3] == "0A":
                        ports.add(int(parts[1].rsplit(":", 1)[1], 16))
        except FileNotFoundError:
            pass
    return ports


def inner(a) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
    os.makedirs(a.workdir, exist_ok=True)
    marker = "cijleak-" + secrets.token_hex(6)
    bystanders = spawn(a, 10, 10, "cijbystander-" + secrets.token_hex(6),
                       "cijbystander-" + secrets.token_hex(6))
    by_ports = {p[3] for p in bystanders if p[2]}
    state = os.path.join(a.workdir, "state.json")
    job_env = dict(os.environ, RUNNER_TRACKING_ID=marker)
    cij = a.cij_before if a.cleaner == "ci-janitor@before" else a.cij
    if a.cleaner.startswith("ci-janitor"):
        subprocess.run([cij, "snapshot", "--state", state], env=job_env, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    elif a.cleaner == "floor":
        subprocess.run([a.floor, "baseline", state], check=True)

    leaked = spawn(a, GROUPS, a.n // GROUPS, marker, marker)
    ep = select.epoll(len(leaked) + 1)
    fds = []
    for pid, start, _, _ in leaked:
        fd = os.pidfd_open(pid)
        st = read_stat(pid)
        if st is None or st[1] != start or st[0] in ("Z", "X"):
            raise SystemExit(f"leaked process {pid} is not alive before the cleaner ran")
        ep.register(fd, select.EPOLLIN | select.EPOLLONESHOT)
        fds.append(fd)

    trace = []
    if a.strace:
        # "timeline:FILE": timestamps of the calls that mark the phases, not a count.
        trace = (["strace", "-f", "--seccomp-bpf", "-ttt", "-o", a.strace[9:], "-e",
                  "trace=execve,pidfd_open,pidfd_send_signal,kill,epoll_wait,poll,sendto,"
                  "write,exit_group"]
                 if a.strace.startswith("timeline:")
                 else ["strace", "-f", "-c", "-o", a.strace])
    if a.cleaner.startswith("ci-janitor"):
        cmd = ["setsid", "-w", "env", f"RUNNER_TRACKING_ID={marker}", *trace, cij, "sweep",
               "--state", state, "--grace", "0s", "--fail-on", "never"]
    elif a.cleaner == "floor":
        cmd = [*trace, a.floor, "sweep", state]
    elif a.cleaner == "environ":
        cmd = [*trace, a.environ_kill, marker]
    elif a.cleaner == "pkill":
        pat = f"[{marker[0]}]{marker[1:]}"
        cmd = ["sh", "-c", f"pkill -TERM -f '{pat}'; pkill -KILL -f '{pat}'"]
    elif a.cleaner == "psutil":
        cmd = [a.python, os.path.join(BENCH_DIR, "psutil_sweep.py"), marker, "0"]
    else:
        raise SystemExit(f"unknown cleaner {a.cleaner}")
    if a.perf:
        if a.perf.startswith("stat:"):
            cmd = ["perf", "stat", "-o", a.perf[5:], "--", *cmd]
        elif a.perf.startswith("trace:"):
            cmd = ["perf", "trace", "-s", "-o", a.perf[6:], "--", *cmd]
        else:
            cmd = ["perf", "record", "-g", "-o", a.perf, "--", *cmd]

    t0 = time.monotonic()
    out = subprocess.run([a.run_rusage, *cmd], stdout=subprocess.PIPE, check=True).stdout
    t_exit = time.monotonic()
    wall_ns, maxrss_kib, status = (int(x) for x in out.split())
    gone = 0
    deadline = t0 + 10
    while gone < len(fds) and time.monotonic() < deadline:
        gone += len(ep.poll(max(0.0, deadline - time.monotonic()), len(fds)))
    while listening_ports() - by_ports and time.monotonic() < deadline:
        time.sleep(0.0005)
    t_clear = time.monotonic()
    ports_left = len(listening_ports() - by_ports)

    by_alive = sum(1 for pid, start, _, _ in bystanders
                   if (st := read_stat(pid)) and st[1] == start and st[0] not in ("Z", "X"))
    print(json.dumps({
        "cleaner": a.cleaner, "n": a.n,
        "clear_ms": (t_clear - t0) * 1e3,
        "tool_ms": wall_ns / 1e6,
        "after_exit_ms": (t_clear - t_exit) * 1e3,
        "maxrss_kib": maxrss_kib, "status": status,
        "survivors": len(fds) - gone, "ports_left": ports_left,
        "bystanders_alive": by_alive, "bystanders": len(bystanders),
    }), flush=True)


# ------------------------------------------------------------------------------- outside


def run_round(a, cleaner: str, n: int, extra=()) -> dict:
    workdir = os.path.join(a.workdir, "rounds", f"{cleaner}-{n}-{secrets.token_hex(3)}")
    cmd = ["unshare", "--pid", "--net", "--fork", "--mount-proc", a.subreaper,
           a.python, os.path.abspath(__file__), "inner", "--cleaner", cleaner, "--n", str(n),
           "--workdir", workdir, *paths(a), *extra]
    try:
        out = subprocess.run(cmd, stdout=subprocess.PIPE, check=True, timeout=120).stdout
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return json.loads(out.decode().strip().splitlines()[-1])


def paths(a):
    return ["--cij", a.cij, "--cij-before", a.cij_before or a.cij, "--floor", a.floor, "--spawner", a.spawner,
            "--environ-kill", a.environ_kill, "--run-rusage", a.run_rusage,
            "--subreaper", a.subreaper, "--python", a.python]


def median(xs):
    return statistics.median(xs) if xs else float("nan")


def outer(a) -> None:
    cleaners = a.cleaners.split(",")
    sizes = [int(x) for x in a.sizes.split(",")]
    samples: list[dict] = []
    loads = []
    for n in sizes:
        for r in range(a.rounds + 1):
            order = cleaners[:]
            random.shuffle(order)
            for c in order:
                s = run_round(a, c, n)
                s["round"] = r
                ok = (s["survivors"] == 0 and s["ports_left"] == 0
                      and s["bystanders_alive"] == s["bystanders"])
                s["ok"] = ok
                log(f"N={n} round {r}{' (warm-up)' if r == 0 else ''} {c}: "
                    f"{s['clear_ms']:.1f} ms to all clear (tool {s['tool_ms']:.1f} ms), "
                    f"{s['maxrss_kib'] / 1024:.1f} MiB, survivors {s['survivors']}, "
                    f"ports left {s['ports_left']}, bystanders {s['bystanders_alive']}/"
                    f"{s['bystanders']}")
                if r > 0:
                    samples.append(s)
            loads.append(os.getloadavg()[0])
    with open(a.out_json, "w") as f:
        json.dump({"samples": samples, "loads": loads}, f, indent=1)
    write_md(a, samples, sizes, cleaners, loads)


def sh(cmd: str) -> str:
    try:
        return subprocess.run(cmd, shell=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              timeout=10).stdout.decode().strip().splitlines()[0]
    except Exception:  # noqa: BLE001 - environment facts are best effort
        return "?"


WHAT = {
    "floor": "`sweep_floor sweep $B` (bench/sweep_floor.c: diff /proc/*/stat, pidfd per "
             "process, SIGKILL per group, epoll on the pidfds, one sock_diag dump)",
    "ci-janitor": "`setsid -w env RUNNER_TRACKING_ID=$M ci-janitor sweep --state $S "
                  "--grace 0s --fail-on never`",
    "ci-janitor@before": "the same, built from the commit named by --cij-before",
    "environ": "`environ_kill $M` (bench/environ_kill.c: the runner's /proc/*/environ scan)",
    "pkill": "`pkill -TERM -f $P; pkill -KILL -f $P`",
    "psutil": "`python3 bench/psutil_sweep.py $M 0` (environ match, terminate, "
              "wait_procs(0), kill)",
}


def write_md(a, samples, sizes, cleaners, loads) -> None:
    psutil_version = sh(a.python + " -c 'import psutil; print(psutil.__version__)'")
    lines = [
        f"Command: `{a.command_line}`", "",
        f"- date: {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC",
        f"- nproc: {os.cpu_count()}, kernel: {platform.release()}; 1-minute load average "
        f"during the rounds: median {median(loads):.1f} ({min(loads):.1f} – {max(loads):.1f})",
        f"- ci-janitor: {sh(a.cij + ' --version')}; {sh('pkill -V')}; "
        f"Python {platform.python_version()}, psutil {psutil_version}",
        "",
    ]
    for n in sizes:
        rows = {c: [s for s in samples if s["n"] == n and s["cleaner"] == c] for c in cleaners}
        floor = median([s["clear_ms"] for s in rows.get("floor", [])])
        lines += [
            f"### N = {n:,} leaked processes in {GROUPS} groups (10% ignore SIGTERM, 10% listen "
            f"on TCP) + 100 bystanders, grace 0, {a.rounds} rounds", "",
            "| cleaner | what runs | to all clear, median ms (min – max) | × floor | "
            "its own wall ms, median | peak RSS MiB (max) | survivors (max) | bystanders "
            "killed (max) |",
            "|---|---|---:|---:|---:|---:|---:|---:|",
        ]
        for c in cleaners:
            ss = rows[c]
            if not ss:
                continue
            clear = [s["clear_ms"] for s in ss]
            lines.append(
                f"| {c} | {WHAT[c]} | {median(clear):.1f} ({min(clear):.1f} – {max(clear):.1f}) "
                f"| {median(clear) / floor:.2f}× | {median([s['tool_ms'] for s in ss]):.1f} | "
                f"{max(s['maxrss_kib'] for s in ss) / 1024:.1f} | "
                f"{max(s['survivors'] for s in ss)} | "
                f"{max(s['bystanders'] - s['bystanders_alive'] for s in ss)} |")
        lines.append("")
    with open(a.out_md, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["outer", "inner"])
    ap.add_argument("--cij", required=True)
    ap.add_argument("--cij-before", help="another ci-janitor build (an earlier commit): "
                    "the cleaner `ci-janitor@before`")
    ap.add_argument("--floor", required=True)
    ap.add_argument("--spawner", required=True)
    ap.add_argument("--environ-kill", required=True)
    ap.add_argument("--run-rusage", required=True)
    ap.add_argument("--subreaper", required=True)
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--cleaner")
    ap.add_argument("--n", type=int)
    ap.add_argument("--strace", help="inner: run the cleaner under strace -c -f into this file")
    ap.add_argument("--perf", help="inner: run the cleaner under perf record -g into this file")
    ap.add_argument("--cleaners", default=",".join(CLEANERS))
    ap.add_argument("--sizes", default="1000,5000")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--out-md")
    ap.add_argument("--out-json")
    ap.add_argument("--command-line", default="bash bench/sweep_ns.sh")
    a = ap.parse_args()
    if a.cij_before is None and a.mode == "outer" and "ci-janitor@before" in a.cleaners:
        raise SystemExit("--cij-before is needed for the cleaner ci-janitor@before")
    for k in ("cij", "cij_before", "floor", "spawner", "environ_kill", "run_rusage", "subreaper", "workdir"):
        if getattr(a, k):
            setattr(a, k, os.path.abspath(getattr(a, k)))
    if a.mode == "inner":
        inner(a)
    else:
        outer(a)


if __name__ == "__main__":
    main()
