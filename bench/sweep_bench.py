#!/usr/bin/env python3
"""Sweep benchmark driver: `ci-janitor sweep` vs the cleaners CI jobs use instead.

Normally started by bench/sweep.sh, which installs/builds everything and passes the paths.
Every round of every cleaner:

  1. makes a fresh directory (the leaked processes' cwd) and a fresh marker
     `cijsweep-<random>`, used as RUNNER_TRACKING_ID and in their command line;
  2. (ci-janitor only) takes `ci-janitor snapshot --state DIR/state.json` BEFORE spawning;
  3. starts bench/spawn_groups: G groups x K processes, IGNORE% ignoring SIGTERM, LISTEN%
     listening on TCP 127.0.0.1:0, all orphaned once ready (readiness over a pipe, no
     sleeps); it prints every process's pid + start time: the ground truth;
  4. checks the ground truth (all alive, `pgrep -f` sees exactly them);
  5. runs ONE cleaner and takes its wall time (fork to exit, from this driver);
  6. counts survivors from the ground truth: a process is dead once it is a zombie or gone
     (pid 1 here reaps orphans only every 1-2 s); the stragglers get 0.5 s to die first,
     since SIGKILL is asynchronous;
  7. kills the survivors by identity (pidfd opened, then the start time re-checked, then
     pidfd_send_signal), checks that no live process has its cwd in the round's directory,
     and waits until the round's processes are reaped so every round starts alike.

Rounds are interleaved: each round runs every cleaner once, in a freshly shuffled order.
Nothing is ever killed by name, except by the pkill cleaner under test, whose pattern
matches only this round's processes (checked with pgrep before every round).
"""
from __future__ import annotations

import argparse
import datetime
import errno
import json
import os
import platform
import random
import re
import resource
import secrets
import select
import shutil
import signal
import statistics
import subprocess
import sys
import time

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
CLEANERS = ["ci-janitor", "psutil", "pkill", "lsof", "environ"]


def log(msg: str) -> None:
    print(f"[sweep-bench] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- identity helpers


def read_stat(pid: int):
    """(state, ppid, pgid, starttime) of pid, or None if it has no /proc entry."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            s = f.read().decode("utf-8", "replace")
    except OSError:
        return None
    rest = s[s.rfind(")") + 2 :].split()
    # rest[0] = field 3 (state), rest[1] = ppid, rest[2] = pgrp, rest[19] = field 22
    return rest[0], int(rest[1]), int(rest[2]), int(rest[19])


def is_live(ident) -> bool:
    """The process with this (pid, starttime) exists and is not a zombie."""
    st = read_stat(ident[0])
    return st is not None and st[3] == ident[1] and st[0] not in ("Z", "X")


def exists(ident) -> bool:
    """It still has a /proc entry (a zombie counts): not yet reaped."""
    st = read_stat(ident[0])
    return st is not None and st[3] == ident[1]


def open_identity(ident):
    """A pidfd for exactly this (pid, starttime), or None if that process is gone/a zombie.

    The pidfd is opened first and the start time checked afterwards: if it still matches,
    the pidfd refers to our process (a pid cannot be reused while the process exists)."""
    try:
        fd = os.pidfd_open(ident[0])
    except OSError as e:
        if e.errno == errno.ESRCH:
            return None
        raise
    if not is_live(ident):
        os.close(fd)
        return None
    return fd


def wait_pidfds(fds: list[int], timeout: float) -> set[int]:
    """Waits until every pidfd is readable (its process exited) or the timeout; returns the
    set of readable ones."""
    done: set[int] = set()
    deadline = time.monotonic() + timeout
    while len(done) < len(fds):
        left = deadline - time.monotonic()
        if left <= 0:
            break
        p = select.poll()
        for fd in fds:
            if fd not in done:
                p.register(fd, select.POLLIN)
        for fd, _ in p.poll(left * 1000):
            done.add(fd)
    return done


def kill_identities(idents, wait: float = 10.0) -> list:
    """SIGKILLs each live (pid, starttime) through a checked pidfd; returns those still
    alive after `wait` seconds (should be none)."""
    fds = {}
    for ident in idents:
        fd = open_identity(ident)
        if fd is None:
            continue
        try:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
        except ProcessLookupError:
            pass
        fds[fd] = ident
    done = wait_pidfds(list(fds), wait)
    left = [fds[fd] for fd in fds if fd not in done]
    for fd in fds:
        os.close(fd)
    return left


def live_with_cwd_under(root: str) -> list:
    """(pid, starttime) of live processes whose cwd is under root (a round's directory)."""
    root = os.path.realpath(root)
    out = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            cwd = os.readlink(f"/proc/{d}/cwd")
        except OSError:
            continue
        if cwd == root or cwd.startswith(root + "/"):
            st = read_stat(int(d))
            if st and st[0] not in ("Z", "X"):
                out.append((int(d), st[3]))
    return out


def cleanup_everything(rounds_dir: str, truth_file: str | None) -> int:
    """Last-resort cleanup (also run by bench/sweep.sh's EXIT trap): the identities in the
    current ground-truth file, then any live process whose cwd is in a round directory.
    Returns how many are still alive afterwards."""
    idents = []
    if truth_file and os.path.exists(truth_file):
        with open(truth_file) as f:
            for line in f:
                parts = line.split()
                if len(parts) >= 2 and parts[0].isdigit():
                    idents.append((int(parts[0]), int(parts[1])))
    left = kill_identities(idents, wait=10)
    if os.path.isdir(rounds_dir):
        for _ in range(3):
            stray = live_with_cwd_under(rounds_dir)
            if not stray:
                break
            log(f"cleanup: {len(stray)} live processes with their cwd in {rounds_dir}; killing them")
            left += kill_identities(stray, wait=10)
    left = [i for i in set(left) if is_live(i)] + live_with_cwd_under(rounds_dir)
    return len(set(left))


# ---------------------------------------------------------------- one round


class Round:
    def __init__(self, args, cleaner: str, rep: int, respawn_pct: int = 0, tag: str = ""):
        self.args = args
        self.cleaner = cleaner
        self.respawn_pct = respawn_pct
        self.marker = "cijsweep-" + secrets.token_hex(6)
        self.dir = os.path.join(args.rounds_dir, f"{tag}r{rep:02d}-{cleaner}")
        shutil.rmtree(self.dir, ignore_errors=True)
        os.makedirs(self.dir)
        self.state = os.path.join(self.dir, "state.json")
        self.trace: str | None = None
        self.truth: list[tuple[int, int]] = []
        self.ports: list[int] = []
        self.info: dict = {}

    def env(self, marker: bool) -> dict:
        e = {k: v for k, v in os.environ.items() if k != "RUNNER_TRACKING_ID"}
        if marker:
            e["RUNNER_TRACKING_ID"] = self.marker
        return e

    def spawn(self) -> None:
        a = self.args
        with open(os.path.join(self.dir, "spawner.err"), "wb") as err:
            p = subprocess.Popen(
                [a.spawner, str(a.groups), str(a.per_group), str(a.ignore_pct),
                 str(a.listen_pct), self.marker, str(self.respawn_pct), str(a.max_respawns)],
                cwd=self.dir, env=self.env(marker=True), stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE, stderr=err,
            )
            out, _ = p.communicate(timeout=180)
        lines = out.decode().splitlines()
        recs = []
        for ln in lines[1:]:
            f = ln.split()
            if len(f) == 7 and f[0].isdigit():
                recs.append([int(x) for x in f])
        self.truth = [(r[0], r[1]) for r in recs]
        # Hand the identities to the shell's EXIT trap before anything else can fail.
        with open(self.args.truth_file, "w") as f:
            f.writelines(f"{pid} {st}\n" for pid, st in self.truth)
        m = re.match(r"ready n=(\d+) groups=(\d+) ignore=(\d+) listen=(\d+) supervisors=(\d+)",
                     lines[0] if lines else "")
        n = a.groups * a.per_group
        if p.returncode != 0 or not m or len(recs) != n:
            raise RuntimeError(f"spawn_groups failed (rc={p.returncode}, {lines[:1]}, {len(recs)} records)")
        self.ports = [r[6] for r in recs if r[5]]
        leaders = [r for r in recs if r[0] == r[2]]
        self.info = {
            "n": n, "groups": len({r[2] for r in recs}), "ignore": sum(r[4] for r in recs),
            "listen": len(self.ports), "supervisors": int(m.group(5)), "leaders_ppid": sorted({read_stat(r[0])[1] for r in leaders if read_stat(r[0])}),
        }
        if self.info["groups"] != a.groups or len(leaders) != a.groups:
            raise RuntimeError(f"expected {a.groups} groups, got {self.info}")

    def check_truth(self) -> None:
        live = sum(1 for i in self.truth if is_live(i))
        if live != len(self.truth):
            raise RuntimeError(f"only {live}/{len(self.truth)} spawned processes alive before the cleaner")
        # The pkill pattern must match exactly this round's processes, nothing else.
        r = subprocess.run(["pgrep", "-f", self.pkill_pattern()], capture_output=True, text=True)
        got = {int(x) for x in r.stdout.split()}
        want = {pid for pid, _ in self.truth}
        if got != want:
            raise RuntimeError(f"pgrep -f {self.pkill_pattern()} matched {len(got)} pids, "
                               f"{len(got - want)} not ours, {len(want - got)} of ours missing")

    def pkill_pattern(self) -> str:
        # '[c]ijsweep-...' matches the processes' command line but not the `sh -c` that
        # runs pkill (whose own command line holds the bracketed form): pkill -f's
        # self-match trap.
        return "[" + self.marker[0] + "]" + self.marker[1:]

    def command(self) -> list[str]:
        a = self.args
        g = a.grace
        if self.cleaner == "ci-janitor":
            # Phase rounds: under strace, tracing only a few marker syscalls (seccomp-bpf
            # filter: the untraced ones run at full speed). strace is the sweep's parent, so
            # an ancestor: protected.
            trace = ["strace", "-f", "--seccomp-bpf", "-ttt", "-T", "-e",
                     "trace=execve,socket,pidfd_open,ppoll,poll,write,exit_group",
                     "-o", self.trace] if self.trace else []
            return ["setsid", "-w", "env", f"RUNNER_TRACKING_ID={self.marker}", *trace, a.cij, "sweep",
                    "--state", self.state, "--grace", f"{int(g * 1000)}ms", "--fail-on", "never",
                    "--color", "never"]
        if self.cleaner == "psutil":
            return [a.python, os.path.join(BENCH_DIR, "psutil_sweep.py"), self.marker, str(g)]
        if self.cleaner == "pkill":
            return ["sh", "-c", 'pkill -TERM -f "$1"; sleep "$2"; pkill -KILL -f "$1"; exit 0',
                    "sh", self.pkill_pattern(), str(g)]
        if self.cleaner == "lsof":
            return ["sh", "-c",
                    'for p in "$@"; do lsof -ti "tcp:$p" -sTCP:LISTEN | xargs -r kill -9; done',
                    "sh", *map(str, self.ports)]
        if self.cleaner == "environ":
            return [a.environ_kill, self.marker]
        raise ValueError(self.cleaner)

    def run(self, trace: bool = False) -> dict:
        a = self.args
        if trace:
            self.trace = os.path.join(self.dir, "sweep.strace")
        if self.cleaner == "ci-janitor":
            subprocess.run([a.cij, "snapshot", "--state", self.state], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env(False))
        t_spawn = time.monotonic()
        self.spawn()
        t_spawn = time.monotonic() - t_spawn
        self.check_truth()
        cmd = self.command()
        out_path = os.path.join(self.dir, "cleaner.out")
        err_path = os.path.join(self.dir, "cleaner.err")
        with open(out_path, "wb") as out, open(err_path, "wb") as err:
            t0 = time.perf_counter()
            rc = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                cwd=a.workdir, env=self.env(False)).returncode
            wall_ms = (time.perf_counter() - t0) * 1000
        with open(out_path, errors="replace") as f:
            out_text = f.read()
        with open(err_path, errors="replace") as f:
            err_text = f.read()
        # Survivors: live `settle` seconds after the cleaner returned (SIGKILL is
        # asynchronous). Found by cwd, which also catches processes born after the ground
        # truth (respawned workers); the ground truth's own survivors are counted apart.
        live = set(i for i in self.truth if is_live(i)) | set(live_with_cwd_under(self.dir))
        fds = {}
        for ident in live:
            fd = open_identity(ident)
            if fd is not None:
                fds[fd] = ident
        done = wait_pidfds(list(fds), a.settle)
        survivors = [fds[fd] for fd in fds if fd not in done]
        for fd in fds:
            os.close(fd)
        truth = set(self.truth)
        res = {
            "cleaner": self.cleaner, "marker": self.marker, "wall_ms": wall_ms, "rc": rc,
            "survivors": len(survivors),
            "survivors_truth": sum(1 for i in survivors if i in truth),
            "spawn_s": t_spawn, "info": self.info, "ports": len(self.ports),
            "respawn_pct": self.respawn_pct,
        }
        self.parse_output(res, out_text, err_text)
        if self.trace:
            res["phases"] = parse_trace(self.trace, a.grace * 1000, wall_ms)
        # Kill the survivors by identity; nothing of this round may stay alive.
        left = kill_identities(survivors, wait=10)
        stray = live_with_cwd_under(self.dir)
        if stray:
            log(f"{self.cleaner}: {len(stray)} live processes outside the ground truth in {self.dir}; killing")
            left += kill_identities(stray, wait=10)
        if left or live_with_cwd_under(self.dir):
            raise RuntimeError(f"{self.cleaner}: processes of round {self.dir} survive SIGKILL: {left[:5]}")
        # Start the next round from the same table: wait until this round is reaped.
        t0 = time.monotonic()
        while any(exists(i) for i in self.truth) and time.monotonic() - t0 < a.reap_wait:
            time.sleep(0.05)
        res["unreaped_after_wait"] = sum(1 for i in self.truth if exists(i))
        res["reap_wait_s"] = time.monotonic() - t0
        return res

    def parse_output(self, res: dict, out: str, err: str) -> None:
        n = self.info["n"]
        if self.cleaner == "ci-janitor":
            m = re.search(r"ci-janitor: (\d+) leaked process(?:es)? found and killed \((\d+) rounds?, ([\d.]+) s\)", out + err)
            if not m or res["rc"] != 0:
                raise RuntimeError(f"ci-janitor sweep rc={res['rc']}: {err.strip()[-400:]!r} {out[:300]!r}")
            res["reported_killed"] = int(m.group(1))
            res["sweep_rounds"] = int(m.group(2))
            res["inner_ms"] = float(m.group(3)) * 1000
            if res["reported_killed"] < n or (self.respawn_pct == 0 and res["reported_killed"] != n):
                raise RuntimeError(f"ci-janitor killed {res['reported_killed']} processes, spawned {n}")
            res["unattributed"] = "Unattributed" in out
        elif self.cleaner == "psutil":
            m = re.search(r"matched=(\d+) terminated=(\d+) killed=(\d+) inner_ms=([\d.]+)", out)
            if not m:
                raise RuntimeError(f"psutil cleaner failed rc={res['rc']}: {err.strip()[-400:]!r}")
            res["matched"], res["terminated"], res["killed"] = map(int, m.groups()[:3])
            res["inner_ms"] = float(m.group(4))
            if res["matched"] != n:
                raise RuntimeError(f"psutil matched {res['matched']} processes, spawned {n}")
        elif self.cleaner == "environ":
            m = re.search(r"matched=(\d+) killed=(\d+)", out)
            if not m or int(m.group(1)) != n:
                raise RuntimeError(f"environ_kill: {out.strip()!r} {err.strip()!r}, spawned {n}")
            res["matched"] = int(m.group(1))


# ---------------------------------------------------------------- where ci-janitor's time goes

PHASES = [
    ("startup", "exec, state file load + check, job context (exec → first netlink socket)"),
    ("scan", "first read of /proc + sockets, classify (→ first pidfd_open)"),
    ("overshoot", "grace timer overshoot (poll timeout return − first pidfd_open − grace)"),
    ("kill", "SIGKILL the survivors + wait for their exit"),
    ("rescan", "second read of /proc for newborns + classify (→ third socket)"),
    ("ports", "third read: are the ports free again (→ report write)"),
    ("report", "write the report, exit"),
    ("outside", "wall time not between ci-janitor's exec and exit (setsid, env, fork/exec, wait)"),
]


def parse_trace(path: str, grace_ms: float, wall_ms: float) -> dict:
    """Phase durations (ms) from `strace -ttt` of one sweep (see PHASES)."""
    ev = []
    with open(path) as f:
        for line in f:
            m = re.match(r"(\d+)\s+([\d.]+) (\w+)\((.*)", line)
            if m:
                ev.append((float(m.group(2)) * 1000, m.group(3), line))
            else:
                m = re.match(r"(\d+)\s+([\d.]+) \+\+\+ exited", line)
                if m:
                    ev.append((float(m.group(2)) * 1000, "exited", line))
    execs = [t for t, n, l in ev if n == "execve" and "ci-janitor" in l.split("(", 1)[1][:200]]
    t_exec = execs[-1]
    sockets = [t for t, n, l in ev if n == "socket" and "NETLINK_SOCK_DIAG" in l and t >= t_exec]
    t_open = min(t for t, n, _ in ev if n == "pidfd_open" and t >= t_exec)
    polls = [(t, l) for t, n, l in ev if n in ("ppoll", "poll") and t > t_open]
    # The grace wait ends when the first poll that times out returns (-ttt stamps the
    # call's entry, -T gives its duration).
    t_to, l_to = next((t, l) for t, l in polls if "Timeout" in l)
    t_grace_end = t_to + float(re.search(r"<([\d.]+)>\s*$", l_to).group(1)) * 1000
    t_kill_done = min(t for t in sockets if t > t_grace_end)  # next read starts right after
    later = [t for t in sockets if t > t_grace_end]
    t_rescan, t_ports = later[0], later[-1]
    t_write = min(t for t, n, l in ev if n == "write" and l.split("(", 1)[1].startswith("1,") and t > t_ports)
    t_exit = max(t for t, n, _ in ev if n in ("exit_group", "exited"))
    return {
        "startup": sockets[0] - t_exec,
        "scan": t_open - sockets[0],
        "overshoot": t_grace_end - t_open - grace_ms,
        "kill": t_kill_done - t_grace_end,
        "rescan": t_ports - t_rescan,
        "ports": t_write - t_ports,
        "report": t_exit - t_write,
        "outside": wall_ms - (t_exit - t_exec),
        "rounds_reads": len(later),
    }


# ---------------------------------------------------------------- report


def stats(xs):
    s = sorted(xs)
    return {"median": statistics.median(s), "min": s[0], "max": s[-1]}


LABELS = {
    "ci-janitor": ("ci-janitor", "`setsid -w env RUNNER_TRACKING_ID=$M ci-janitor sweep --state $S --grace 1s --fail-on never`", True),
    "psutil": ("psutil", "`python3 bench/psutil_sweep.py $M 1`: environ() match, terminate, `wait_procs(timeout=1)`, kill", True),
    "pkill": ("pgrep/pkill", "`pkill -TERM -f '[c]ijsweep-…'; sleep 1; pkill -KILL -f '[c]ijsweep-…'`", True),
    "lsof": ("lsof per port", "`lsof -ti tcp:$PORT -sTCP:LISTEN \\| xargs -r kill -9` for each of the 100 ports", False),
    "environ": ("environ scan (runner)", "`bench/environ_kill $M`: read /proc/*/environ, SIGKILL matches", False),
}


def table(results: list[dict], args, cleaners) -> str:
    by = {c: [r for r in results if r["cleaner"] == c] for c in cleaners}
    g_ms = args.grace * 1000
    lines = [
        "| cleaner | what runs | wall ms, median (min – max) | beyond the 1 s grace, median ms | survivors, median (max) |",
        "|---|---|---:|---:|---:|",
    ]
    for c in cleaners:
        rs = by[c]
        if not rs:
            continue
        label, cmd, graced = LABELS[c]
        w = stats([r["wall_ms"] for r in rs])
        sv = stats([r["survivors"] for r in rs])
        beyond = f"{w['median'] - g_ms:.0f}" if graced else "— (no grace)"
        lines.append(f"| {label} | {cmd} | {w['median']:.0f} ({w['min']:.0f} – {w['max']:.0f}) | {beyond} "
                     f"| {sv['median']:.0f} ({sv['max']}) |")
    return "\n".join(lines)


def phase_table(phases: list[dict], args) -> str:
    wall = stats([r["wall_ms"] for r in phases])
    lines = [
        f"Where ci-janitor's time beyond the grace goes: in each of the {len(phases)} main rounds, one more "
        f"ci-janitor round (shuffled in with the others), the sweep under `strace -f --seccomp-bpf -ttt -T -e trace=execve,socket,pidfd_open,ppoll,poll,write,exit_group` "
        f"(only those syscalls stop; each /proc read starts with a netlink socket). Wall time under strace: "
        f"median {wall['median']:.0f} ms ({wall['min']:.0f} – {wall['max']:.0f}). Each row's median is taken "
        f"on its own, so the medians need not add up to the sum's.",
        "",
        "| phase | what | median ms | min – max ms |",
        "|---|---|---:|---:|",
    ]
    tot = []
    for key, what in PHASES:
        st = stats([r["phases"][key] for r in phases])
        lines.append(f"| {key} | {what} | {st['median']:.1f} | {st['min']:.1f} – {st['max']:.1f} |")
    tot = stats([sum(r["phases"][k] for k, _ in PHASES) for r in phases])
    lines.append(f"| **sum** | = wall − grace | **{tot['median']:.1f}** | {tot['min']:.1f} – {tot['max']:.1f} |")
    return "\n".join(lines)


def extra_notes(results: list[dict], args) -> str:
    out = []
    cij = [r for r in results if r["cleaner"] == "ci-janitor"]
    if cij:
        inner = stats([r["inner_ms"] for r in cij])
        out.append(f"- ci-janitor's own elapsed time (its report line, 10 ms resolution): median "
                   f"{inner['median']:.0f} ms ({inner['min']:.0f} – {inner['max']:.0f}); sweep rounds: "
                   f"{sorted({r['sweep_rounds'] for r in cij})}; processes it reported killed: "
                   f"{sorted({r['reported_killed'] for r in cij})}.")
    ps = [r for r in results if r["cleaner"] == "psutil"]
    if ps:
        inner = stats([r["inner_ms"] for r in ps])
        out.append(f"- psutil without interpreter start-up and `import psutil` (timed inside the script): median "
                   f"{inner['median']:.0f} ms ({inner['min']:.0f} – {inner['max']:.0f}), i.e. "
                   f"{inner['median'] - args.grace * 1000:.0f} ms beyond the grace. `wait_procs` counted "
                   f"{statistics.median([r['terminated'] for r in ps]):.0f} of the {ps[0]['info']['n'] - ps[0]['info']['ignore']} "
                   f"TERM-able processes as gone (median): psutil waits on a process that is not its child "
                   f"until its pid disappears, and a zombie keeps its pid until it is reaped; it then kill()s "
                   f"the rest, zombies included (harmless).")
    sp = stats([r["spawn_s"] * 1000 for r in results])
    out.append(f"- spawning the {results[0]['info']['n']:,} processes took {sp['median']:.0f} ms (median, "
               f"untimed); group leaders' parent after the spawner exited: "
               f"{sorted({p for r in results for p in r['info']['leaders_ppid']})}.")
    loads = sorted(float(r["load"]) for r in results)
    out.append(f"- 1-minute load average after each round: median {statistics.median(loads):.1f} "
               f"(min {loads[0]:.1f}, max {loads[-1]:.1f}) on 2 CPUs: other jobs shared the machine.")
    unreaped = max(r["unreaped_after_wait"] for r in results)
    rw = stats([r["reap_wait_s"] for r in results])
    out.append(f"- after each round the driver waited until the round's zombies were reaped: median "
               f"{rw['median']:.1f} s (max {rw['max']:.1f} s); still unreaped when the next round started: max {unreaped}.")
    return "\n".join(out)


def machine_facts(args) -> str:
    def sh(cmd):
        try:
            return subprocess.run(cmd, shell=True, capture_output=True, text=True).stdout.strip()
        except OSError:
            return "?"

    cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-").strip()
    mem = sh("awk '/MemTotal/ {printf \"%.1f GiB\", $2/1048576}' /proc/meminfo")
    nofile = resource.getrlimit(resource.RLIMIT_NOFILE)
    psutil_v = sh(args.python + " -c 'import psutil; print(psutil.__version__)'")
    return "\n".join([
        f"- date: {datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}",
        f"- nproc: {os.cpu_count()}, CPU: {cpu or '?'}, memory: {mem}; a shared VM: other jobs ran "
        f"meanwhile (load average at the start: {args.load_at_start})",
        f"- kernel: {platform.release()} ({platform.machine()}); pid_max {sh('cat /proc/sys/kernel/pid_max')}, "
        f"RLIMIT_NPROC {resource.getrlimit(resource.RLIMIT_NPROC)[0]}, RLIMIT_NOFILE {nofile[0]}/{nofile[1]}",
        (f"- pid 1: `{sh('cat /proc/1/comm')}` (reaps orphaned zombies only every 1–2 s); the orphans go to it"
         if args.reaper == "pid1" else
         f"- orphans are adopted by `bench/subreaper` (PR_SET_CHILD_SUBREAPER, reaps at once, like systemd or "
         f"tini), not by pid 1 `{sh('cat /proc/1/comm')}` (which reaps only every 1–2 s)"),
        f"- ci-janitor: {sh(f'{args.cij} --version')} (static release build, commit "
        f"{sh('git -C ' + BENCH_DIR + ' rev-parse --short HEAD')})",
        f"- procps: {sh('pkill -V')}; lsof: {sh('lsof -v 2>&1 | grep -m1 revision').strip()}; "
        f"util-linux: {sh('setsid -V')}",
        f"- python: {sh(args.python + ' -V')}; psutil {psutil_v}",
    ])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cij", required=True)
    ap.add_argument("--spawner", required=True, help="compiled bench/spawn_groups.c")
    ap.add_argument("--environ-kill", required=True, help="compiled bench/environ_kill.c")
    ap.add_argument("--python", default=sys.executable)
    ap.add_argument("--workdir", required=True)
    ap.add_argument("--truth-file", required=True, help="current round's identities (for an outside trap)")
    ap.add_argument("--cleanup-only", action="store_true", help="only kill what a previous run left, and exit")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--groups", type=int, default=100)
    ap.add_argument("--per-group", type=int, default=10)
    ap.add_argument("--ignore-pct", type=int, default=10)
    ap.add_argument("--listen-pct", type=int, default=10)
    ap.add_argument("--grace", type=float, default=1.0)
    ap.add_argument("--settle", type=float, default=0.5, help="seconds a killed process gets to die before it counts as a survivor")
    ap.add_argument("--reap-wait", type=float, default=10.0)
    ap.add_argument("--cleaners", default=",".join(CLEANERS))
    ap.add_argument("--respawn-pct", type=int, default=10, help="respawn variant: %% of groups led by a supervisor (0: skip the variant)")
    ap.add_argument("--respawn-rounds", type=int, default=5)
    ap.add_argument("--respawn-cleaners", default="ci-janitor,psutil,pkill,environ")
    ap.add_argument("--max-respawns", type=int, default=50)
    ap.add_argument("--phases", type=int, default=1, choices=[0, 1],
                    help="1: each main round also runs ci-janitor under strace, to see where its time goes")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--reaper", default="pid1", choices=["pid1", "subreaper"],
                    help="who adopts the orphans (set by bench/sweep.sh --subreaper)")
    ap.add_argument("--out-md", default=None)
    ap.add_argument("--out-json", default=None)
    ap.add_argument("--command-line", default=None)
    args = ap.parse_args()
    args.rounds_dir = os.path.join(args.workdir, "rounds")
    args.cleaners = args.cleaners.split(",")
    args.respawn_cleaners = args.respawn_cleaners.split(",")

    if args.cleanup_only:
        left = cleanup_everything(args.rounds_dir, args.truth_file)
        if left:
            log(f"cleanup: WARNING: {left} processes still alive")
        return 1 if left else 0

    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda s, f: sys.exit(128 + s))
    args.load_at_start = open("/proc/loadavg").read().split()[0]
    # One pidfd per spawned process while counting survivors.
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.makedirs(args.rounds_dir, exist_ok=True)
    rng = random.Random(args.seed)
    variants = [("main", 0, args.cleaners)]
    if args.respawn_pct > 0 and args.respawn_rounds > 0:
        variants.append(("respawn", args.respawn_pct, args.respawn_cleaners))
    results: dict[str, list] = {v[0]: [] for v in variants}
    phases: list[dict] = []
    t_start = time.monotonic()

    def one(tag, c, rep, respawn, warm, trace=False):
        res = Round(args, c, rep, respawn, tag).run(trace=trace)
        res.update(rep=rep, warmup=warm, load=open("/proc/loadavg").read().split()[0])
        log(f"{tag}round {rep}{' (warm-up)' if warm else ''} {c}: {res['wall_ms']:.0f} ms, "
            f"{res['survivors']} survivors"
            + (f", inner {res['inner_ms']:.0f} ms" if "inner_ms" in res else "")
            + (f", killed {res['reported_killed']}" if "reported_killed" in res else ""))
        shutil.rmtree(os.path.join(args.rounds_dir, f"{tag}r{rep:02d}-{c}"), ignore_errors=True)
        return res

    try:
        for name, respawn, cleaners in variants:
            rounds = args.rounds if name == "main" else args.respawn_rounds
            tag = "" if name == "main" else "respawn-"
            for rep in range(args.warmup + rounds):
                order = list(cleaners)
                # The traced ci-janitor runs as one more cleaner of the main rounds, so its
                # phases are measured under the same conditions as the table.
                if name == "main" and args.phases and "ci-janitor" in cleaners:
                    order.append("ci-janitor+strace")
                rng.shuffle(order)
                for c in order:
                    if c == "ci-janitor+strace":
                        res = one("phases-", "ci-janitor", rep, 0, rep < args.warmup, trace=True)
                        if not res["warmup"]:
                            phases.append(res)
                        continue
                    res = one(tag, c, rep, respawn, rep < args.warmup)
                    if not res["warmup"]:
                        results[name].append(res)
    finally:
        left = cleanup_everything(args.rounds_dir, args.truth_file)
        if left:
            log(f"cleanup: WARNING: {left} processes still alive")
    log(f"done in {time.monotonic() - t_start:.0f} s")

    n = args.groups * args.per_group
    info = results["main"][0]["info"]
    md = [
        f"Command: `{args.command_line or ' '.join(sys.argv)}`",
        "",
        machine_facts(args),
        "",
        f"{n:,} processes in {info['groups']} groups of {args.per_group} ({info['ignore']} ignore SIGTERM, "
        f"{info['listen']} listen on TCP 127.0.0.1), one cleaner per round, {args.rounds} interleaved rounds "
        f"after {args.warmup} warm-up round, grace {args.grace:g} s. Wall time from fork to exit of the "
        f"cleaner's command, taken by the driver; survivors: processes of the round (by cwd, so also any "
        f"born after the spawn) still alive {args.settle:g} s after the cleaner returned (zombies count as dead).",
        "",
        table(results["main"], args, args.cleaners),
        "",
        extra_notes(results["main"], args),
        "",
    ]
    if "respawn" in results and results["respawn"]:
        rinfo = results["respawn"][0]["info"]
        cij = [r for r in results["respawn"] if r["cleaner"] == "ci-janitor"]
        md += [
            f"Respawn variant: the same, but the leaders of {rinfo['supervisors']} groups are supervisors: they "
            f"ignore SIGTERM ({rinfo['ignore']} TERM-ignoring processes in all) and fork a replacement whenever "
            f"a child exits (at most {args.max_respawns} each). {args.respawn_rounds} interleaved rounds after "
            f"{args.warmup} warm-up round.",
            "",
            table(results["respawn"], args, args.respawn_cleaners),
            "",
        ]
        if cij:
            md += [f"- ci-janitor killed {sorted({r['reported_killed'] for r in cij})} processes in "
                   f"{sorted({r['sweep_rounds'] for r in cij})} sweep rounds (its report).", ""]
    if phases:
        md += [phase_table(phases, args), ""]
    text = "\n".join(md)
    print(text)
    if args.out_md:
        with open(args.out_md, "w") as f:
            f.write(text + "\n")
    if args.out_json:
        with open(args.out_json, "w") as f:
            json.dump({"argv": sys.argv, "results": results, "phases": phases}, f, indent=1)
    return 0

if __name__ == "__main__":
    sys.exit(main())
