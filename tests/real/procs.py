"""Ground truth from /proc, independent of ci-janitor (stdlib only).

A process is named by its identity: pid plus start time in clock ticks (field 22 of
/proc/PID/stat). Everything here that signals a process first opens a pidfd on the pid and
then re-checks the start time, so a pid reused in the meantime is never hit.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class Stat:
    pid: int
    comm: str
    state: str
    ppid: int
    pgid: int
    sid: int
    start_ticks: int

    @property
    def dead(self) -> bool:
        # A zombie has exited; only its parent (or init, every 1-2 s here) still has to reap it.
        return self.state in ("Z", "X")


def read_stat(pid: int) -> Stat | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_bytes().decode("utf-8", "replace")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return None
    # comm is in parentheses and may itself contain spaces and parentheses.
    open_, close = raw.index("("), raw.rindex(")")
    rest = raw[close + 2 :].split()
    # rest[0] is field 3 (state); field N is rest[N - 3].
    return Stat(
        pid=int(raw[:open_]),
        comm=raw[open_ + 1 : close],
        state=rest[0],
        ppid=int(rest[1]),
        pgid=int(rest[2]),
        sid=int(rest[3]),
        start_ticks=int(rest[19]),
    )


def alive(pid: int, start_ticks: int) -> bool:
    """Whether the process with this identity still runs (a zombie is dead)."""
    st = read_stat(pid)
    return st is not None and st.start_ticks == start_ticks and not st.dead


def argv(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [a.decode("utf-8", "replace") for a in raw.split(b"\0") if a]


def cwd(pid: int) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return None


def all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


# ---------------------------------------------------------------------------------------
# Listening sockets
# ---------------------------------------------------------------------------------------


def _hex_addr(hexaddr: str) -> tuple[str, int]:
    ip_hex, port_hex = hexaddr.split(":")
    raw = bytes.fromhex(ip_hex)
    if len(raw) == 4:
        ip = socket.inet_ntop(socket.AF_INET, raw[::-1])
    else:
        # /proc/net/tcp6 prints the address as four host-order 32-bit words.
        words = b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4))
        ip = socket.inet_ntop(socket.AF_INET6, words)
    return ip, int(port_hex, 16)


def tcp_listeners() -> dict[int, str]:
    """socket inode -> label (`tcp 127.0.0.1:8000`, `tcp6 [::1]:3000`) of every LISTEN socket."""
    out: dict[int, str] = {}
    for name in ("tcp", "tcp6"):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            f = line.split()
            if len(f) < 10 or f[3] != "0A":  # 0A = TCP_LISTEN
                continue
            ip, port = _hex_addr(f[1])
            label = f"tcp {ip}:{port}" if name == "tcp" else f"tcp [{ip}]:{port}"
            out[int(f[9])] = label
    return out


def listening_ports() -> set[int]:
    return {int(label.rsplit(":", 1)[1]) for label in tcp_listeners().values()}


def sockets_of(pid: int, listeners: dict[int, str]) -> list[str]:
    labels = set()
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    for fd in fds:
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:
            continue
        if target.startswith("socket:["):
            inode = int(target[8:-1])
            if inode in listeners:
                labels.add(listeners[inode])
    return sorted(labels)


def port_free(port: int) -> bool:
    """Nothing listens on `port` (v4 or v6) any more."""
    return port not in listening_ports()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


# ---------------------------------------------------------------------------------------
# Scanning a scratch directory
# ---------------------------------------------------------------------------------------


@dataclass
class Proc:
    pid: int
    start_ticks: int
    ppid: int
    pgid: int
    sid: int
    comm: str
    argv: list[str]
    cwd: str
    listening: list[str] = field(default_factory=list)

    def ident(self) -> tuple[int, int]:
        return (self.pid, self.start_ticks)

    def as_dict(self) -> dict:
        return asdict(self)


def under(path: str, root: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def procs_in(root: str, exclude: set[int] = frozenset()) -> list[Proc]:
    """Every live process whose cwd is `root` or below it. Every descendant inherits its
    parent's cwd, so this finds what a scenario started, whoever its parent is now and
    whatever it did to its environment or its name."""
    root = os.path.realpath(root)
    listeners = tcp_listeners()
    found = []
    for pid in all_pids():
        if pid in exclude:
            continue
        c = cwd(pid)
        if c is None or not under(c, root):
            continue
        st = read_stat(pid)
        if st is None or st.dead:
            continue
        found.append(
            Proc(
                pid=pid,
                start_ticks=st.start_ticks,
                ppid=st.ppid,
                pgid=st.pgid,
                sid=st.sid,
                comm=st.comm,
                argv=argv(pid),
                cwd=c,
                listening=sockets_of(pid, listeners),
            )
        )
    return sorted(found, key=lambda p: p.pid)


# ---------------------------------------------------------------------------------------
# Killing by identity
# ---------------------------------------------------------------------------------------


def signal_ident(pid: int, start_ticks: int, sig: int = signal.SIGKILL) -> bool:
    """Sends `sig` to the process with this identity, through a pidfd; False when it is gone
    or the pid now names another process."""
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return False
    try:
        st = read_stat(pid)  # read after opening: the pidfd pins the process we check
        if st is None or st.start_ticks != start_ticks or st.dead:
            return False
        signal.pidfd_send_signal(fd, sig)
        return True
    except ProcessLookupError:
        return False
    finally:
        os.close(fd)


def kill_all(idents: list[tuple[int, int]], timeout: float = 10.0) -> list[tuple[int, int]]:
    """SIGKILLs every identity and waits until all are dead; returns the survivors."""
    for pid, ticks in idents:
        signal_ident(pid, ticks)
    deadline = time.monotonic() + timeout
    while True:
        left = [i for i in idents if alive(*i)]
        if not left or time.monotonic() > deadline:
            return left
        time.sleep(0.05)


def sweep_dir(root: str, timeout: float = 10.0) -> list[Proc]:
    """Kills everything whose cwd is under `root` (respawns included) until nothing is
    left; returns what it killed."""
    killed: list[Proc] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = procs_in(root, exclude={os.getpid()})
        if not found:
            return killed
        killed.extend(found)
        kill_all([p.ident() for p in found], timeout=max(0.1, deadline - time.monotonic()))
    return killed


def wait_until(pred, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while True:
        if pred():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(step)
