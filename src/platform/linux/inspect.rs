//! What a process is doing right now, for `diagnose` and the guard's pipe-holder alarm:
//! its state, wait channel, CPU time, the system call it is blocked in (and on which
//! descriptor), its pipes and sockets by inode, its kernel stack where readable, and a
//! Python stack through `py-spy` when that is installed and permitted.
//!
//! Everything is read, nothing is changed: `py-spy dump` stops the process for the moment
//! it reads the stack, and that is all. Parsers are pure and tested on fixtures.

use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::model::Bytes;

/// The most read of a kernel stack, a syscall line, an fdinfo file.
const MAX_SMALL_FILE: u64 = 16 * 1024;
/// The most descriptors looked at per process: a process with more is not read further
/// (and says so).
pub const MAX_FDS: usize = 4096;

/// CPU time and state, from `/proc/PID/stat`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuStat {
    pub state: char,
    /// utime + stime of the whole process (all threads), in clock ticks.
    pub cpu_ticks: u64,
    pub threads: u32,
    pub start_ticks: u64,
}

/// Parses the fields of `/proc/PID/stat` that [`CpuStat`] holds. The command name may hold
/// spaces and `)`: the fields start after the last `)`.
pub fn parse_cpu_stat(buf: &[u8]) -> Option<CpuStat> {
    let close = buf.iter().rposition(|&b| b == b')')?;
    let rest: Vec<&[u8]> = buf[close + 1..]
        .split(|&b| b == b' ' || b == b'\n')
        .filter(|f| !f.is_empty())
        .collect();
    // Field n of proc(5) is rest[n - 3]; field 22 (starttime) and one after it.
    if rest.len() < 21 {
        return None;
    }
    let num = |n: usize| -> Option<u64> { std::str::from_utf8(rest[n - 3]).ok()?.parse().ok() };
    let state = match rest[0] {
        [c] if c.is_ascii_alphabetic() => *c as char,
        _ => return None,
    };
    Some(CpuStat {
        state,
        cpu_ticks: num(14)?.checked_add(num(15)?)?,
        threads: u32::try_from(num(20)?).ok()?,
        start_ticks: num(22)?,
    })
}

/// The process's CPU time and state now, or `None` when it is gone or is another process
/// than `start_ticks` says.
pub fn cpu_stat(proc_root: &Path, pid: i32, start_ticks: u64) -> Option<CpuStat> {
    let buf = read_small(&proc_root.join(pid.to_string()).join("stat"))?;
    parse_cpu_stat(&buf).filter(|s| s.start_ticks == start_ticks)
}

/// A system call, as `/proc/PID/syscall` shows the one a thread is blocked in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Syscall {
    /// The thread runs (on a CPU, in user space).
    Running,
    /// Blocked, but not in a system call (a page fault, a stop).
    Elsewhere,
    /// Blocked in system call `nr`, with its six arguments.
    In { nr: i64, args: [u64; 6] },
}

/// Parses `/proc/PID/syscall`: `running`, `-1 SP PC`, or `NR ARG1 .. ARG6 SP PC` (hex).
pub fn parse_syscall(buf: &[u8]) -> Option<Syscall> {
    let text = std::str::from_utf8(buf).ok()?.trim();
    if text == "running" {
        return Some(Syscall::Running);
    }
    let mut fields = text.split_ascii_whitespace();
    let nr: i64 = fields.next()?.parse().ok()?;
    if nr < 0 {
        return Some(Syscall::Elsewhere);
    }
    let mut args = [0u64; 6];
    for a in &mut args {
        let f = fields.next()?;
        *a = u64::from_str_radix(f.trim_start_matches("0x"), 16).ok()?;
    }
    Some(Syscall::In { nr, args })
}

/// What a blocked system call does with its first argument, a descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FdOp {
    Read,
    Write,
    Connect,
    Accept,
    /// `epoll_wait` on an epoll descriptor: the descriptors it watches are in its fdinfo.
    Epoll,
    Lock,
}

/// A system call's name, and what it does with a descriptor in its first argument.
pub fn syscall_name(nr: i64) -> (Option<&'static str>, Option<FdOp>) {
    let table: &[(i64, &str, Option<FdOp>)] = SYSCALLS;
    match table.iter().find(|(n, _, _)| *n == nr) {
        Some((_, name, op)) => (Some(name), *op),
        None => (None, None),
    }
}

#[cfg(target_arch = "x86_64")]
const SYSCALLS: &[(i64, &str, Option<FdOp>)] = &[
    (0, "read", Some(FdOp::Read)),
    (1, "write", Some(FdOp::Write)),
    (7, "poll", None),
    (17, "pread64", Some(FdOp::Read)),
    (18, "pwrite64", Some(FdOp::Write)),
    (19, "readv", Some(FdOp::Read)),
    (20, "writev", Some(FdOp::Write)),
    (23, "select", None),
    (34, "pause", None),
    (35, "nanosleep", None),
    (42, "connect", Some(FdOp::Connect)),
    (43, "accept", Some(FdOp::Accept)),
    (44, "sendto", Some(FdOp::Write)),
    (45, "recvfrom", Some(FdOp::Read)),
    (46, "sendmsg", Some(FdOp::Write)),
    (47, "recvmsg", Some(FdOp::Read)),
    (61, "wait4", None),
    (73, "flock", Some(FdOp::Lock)),
    (130, "rt_sigsuspend", None),
    (202, "futex", None),
    (230, "clock_nanosleep", None),
    (232, "epoll_wait", Some(FdOp::Epoll)),
    (247, "waitid", None),
    (270, "pselect6", None),
    (271, "ppoll", None),
    (281, "epoll_pwait", Some(FdOp::Epoll)),
    (288, "accept4", Some(FdOp::Accept)),
    (441, "epoll_pwait2", Some(FdOp::Epoll)),
];

#[cfg(target_arch = "aarch64")]
const SYSCALLS: &[(i64, &str, Option<FdOp>)] = &[
    (22, "epoll_pwait", Some(FdOp::Epoll)),
    (32, "flock", Some(FdOp::Lock)),
    (63, "read", Some(FdOp::Read)),
    (64, "write", Some(FdOp::Write)),
    (65, "readv", Some(FdOp::Read)),
    (66, "writev", Some(FdOp::Write)),
    (67, "pread64", Some(FdOp::Read)),
    (68, "pwrite64", Some(FdOp::Write)),
    (72, "pselect6", None),
    (73, "ppoll", None),
    (95, "waitid", None),
    (98, "futex", None),
    (101, "nanosleep", None),
    (115, "clock_nanosleep", None),
    (133, "rt_sigsuspend", None),
    (202, "accept", Some(FdOp::Accept)),
    (203, "connect", Some(FdOp::Connect)),
    (206, "sendto", Some(FdOp::Write)),
    (207, "recvfrom", Some(FdOp::Read)),
    (211, "sendmsg", Some(FdOp::Write)),
    (212, "recvmsg", Some(FdOp::Read)),
    (242, "accept4", Some(FdOp::Accept)),
    (260, "wait4", None),
    (441, "epoll_pwait2", Some(FdOp::Epoll)),
];

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
const SYSCALLS: &[(i64, &str, Option<FdOp>)] = &[];

/// What a descriptor refers to, when it is one `diagnose` follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FdKind {
    Pipe,
    Socket,
    Epoll,
    /// A terminal, a file, anything else.
    Other,
}

/// One descriptor of a process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fd {
    pub fd: i32,
    pub kind: FdKind,
    /// The pipe's or socket's inode (0 for others).
    pub inode: u64,
    /// Open for reading / writing (the mode of the `/proc/PID/fd/N` link).
    pub read: bool,
    pub write: bool,
}

/// `pipe:[123]`, `socket:[456]`, `anon_inode:[eventpoll]` as a kind and an inode.
pub fn parse_fd_link(link: &[u8]) -> (FdKind, u64) {
    let inode = |prefix: &[u8]| -> Option<u64> {
        std::str::from_utf8(link.strip_prefix(prefix)?.strip_suffix(b"]")?)
            .ok()?
            .parse()
            .ok()
    };
    if let Some(i) = inode(b"pipe:[") {
        (FdKind::Pipe, i)
    } else if let Some(i) = inode(b"socket:[") {
        (FdKind::Socket, i)
    } else if link == b"anon_inode:[eventpoll]" {
        (FdKind::Epoll, 0)
    } else {
        (FdKind::Other, 0)
    }
}

/// The descriptors of a process (at most [`MAX_FDS`]; the bool says whether there were
/// more). Pipes get their end (read or write) from the link's mode.
pub fn fds(proc_root: &Path, pid: i32) -> std::io::Result<(Vec<Fd>, bool)> {
    let dir = proc_root.join(pid.to_string()).join("fd");
    let mut out = Vec::new();
    let mut more = false;
    for entry in std::fs::read_dir(&dir)? {
        let Ok(entry) = entry else { continue };
        let Some(fd) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<i32>().ok())
        else {
            continue;
        };
        if out.len() >= MAX_FDS {
            more = true;
            break;
        }
        let path = entry.path();
        let Ok(target) = std::fs::read_link(&path) else {
            continue;
        };
        let (kind, inode) = parse_fd_link(target.as_os_str().as_encoded_bytes());
        let (read, write) = if kind == FdKind::Pipe || kind == FdKind::Socket {
            // The link's own mode says how the descriptor is open (S_IRUSR, S_IWUSR).
            match std::fs::symlink_metadata(&path) {
                Ok(m) => (m.mode() & 0o400 != 0, m.mode() & 0o200 != 0),
                Err(_) => (true, true),
            }
        } else {
            (false, false)
        };
        out.push(Fd {
            fd,
            kind,
            inode,
            read,
            write,
        });
    }
    out.sort_by_key(|f| f.fd);
    Ok((out, more))
}

/// The descriptors an epoll instance watches (`tfd:` lines of its fdinfo).
pub fn parse_epoll_targets(fdinfo: &[u8]) -> Vec<i32> {
    fdinfo
        .split(|&b| b == b'\n')
        .filter_map(|line| {
            let rest = std::str::from_utf8(line)
                .ok()?
                .trim()
                .strip_prefix("tfd:")?;
            rest.split_ascii_whitespace().next()?.parse().ok()
        })
        .collect()
}

/// The descriptors epoll descriptor `epfd` of `pid` watches.
pub fn epoll_targets(proc_root: &Path, pid: i32, tid: i32, epfd: i32) -> Vec<i32> {
    let path = proc_root
        .join(pid.to_string())
        .join("task")
        .join(tid.to_string())
        .join("fdinfo")
        .join(epfd.to_string());
    read_small(&path)
        .map(|b| parse_epoll_targets(&b))
        .unwrap_or_default()
}

/// A thread of a process and the system call it is in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ThreadCall {
    pub tid: i32,
    pub call: Syscall,
}

/// What each thread (the main one first; at most `max`) is blocked in. Empty when
/// `/proc/PID/syscall` is not readable (another user's process, no ptrace access).
pub fn thread_calls(proc_root: &Path, pid: i32, max: usize) -> Vec<ThreadCall> {
    let task = proc_root.join(pid.to_string()).join("task");
    let mut tids: Vec<i32> = match std::fs::read_dir(&task) {
        Ok(d) => d
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => vec![pid],
    };
    tids.sort_unstable_by_key(|&t| (t != pid, t));
    tids.truncate(max);
    tids.into_iter()
        .filter_map(|tid| {
            let buf = read_small(&task.join(tid.to_string()).join("syscall"))?;
            Some(ThreadCall {
                tid,
                call: parse_syscall(&buf)?,
            })
        })
        .collect()
}

/// The kernel function the process sleeps in (`/proc/PID/wchan`); `None` when it runs or
/// it cannot be read.
pub fn wchan(proc_root: &Path, pid: i32) -> Option<String> {
    let buf = read_small(&proc_root.join(pid.to_string()).join("wchan"))?;
    let text = String::from_utf8_lossy(&buf).trim().to_owned();
    // `poll_schedule_timeout.constprop.0`: the compiler's clone suffix says nothing.
    let text = text.split('.').next().unwrap_or_default().to_owned();
    (!text.is_empty() && text != "0").then_some(text)
}

/// The current working directory.
pub fn cwd(proc_root: &Path, pid: i32) -> Option<Bytes> {
    std::fs::read_link(proc_root.join(pid.to_string()).join("cwd"))
        .ok()
        .map(|p| Bytes::from(p.into_os_string().into_encoded_bytes()))
}

/// The kernel stack of the main thread (`/proc/PID/stack`: root only), function names only.
pub fn kernel_stack(proc_root: &Path, pid: i32) -> Result<Vec<String>, String> {
    let path = proc_root.join(pid.to_string()).join("stack");
    let mut f = std::fs::File::open(&path).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    f.by_ref()
        .take(MAX_SMALL_FILE)
        .read_to_end(&mut buf)
        .map_err(|e| e.to_string())?;
    Ok(parse_kernel_stack(&buf))
}

/// `[<0>] do_sys_poll+0x1c2/0x4d0` lines as `do_sys_poll`.
pub fn parse_kernel_stack(buf: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(buf)
        .lines()
        .filter_map(|l| {
            let f = l.split_ascii_whitespace().nth(1)?;
            Some(f.split('+').next().unwrap_or(f).to_owned())
        })
        .filter(|f| !f.is_empty())
        .collect()
}

/// Whether the pipe held as `pid`'s descriptor `fd` has a reader: the pipe is opened
/// again for writing, without blocking, and polled: the kernel reports POLLERR on a
/// pipe's write end when no process holds its read end. The descriptor we open is closed
/// at once; nothing is written to it.
pub fn pipe_has_reader(proc_root: &Path, pid: i32, fd: i32) -> Option<bool> {
    use rustix::event::{PollFd, PollFlags};
    use std::os::unix::fs::OpenOptionsExt;
    let path = proc_root
        .join(pid.to_string())
        .join("fd")
        .join(fd.to_string());
    let f = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .ok()?;
    let mut fds = [PollFd::new(&f, PollFlags::OUT)];
    let zero = rustix::event::Timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    rustix::event::poll(&mut fds, Some(&zero)).ok()?;
    Some(!fds[0].revents().contains(PollFlags::ERR))
}

pub fn pipe_inode(proc_root: &Path, pid: i32, fd: i32) -> Option<u64> {
    let link = std::fs::read_link(
        proc_root
            .join(pid.to_string())
            .join("fd")
            .join(fd.to_string()),
    )
    .ok()?;
    match parse_fd_link(link.as_os_str().as_encoded_bytes()) {
        (FdKind::Pipe, inode) => Some(inode),
        _ => None,
    }
}

fn read_small(path: &Path) -> Option<Vec<u8>> {
    let f = std::fs::File::open(path).ok()?;
    let mut buf = Vec::with_capacity(512);
    f.take(MAX_SMALL_FILE).read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// Whether a process runs a Python interpreter (its executable's name, else its comm).
pub fn is_python(exe: Option<&[u8]>, comm: &[u8]) -> bool {
    let name = exe
        .map(|e| e.rsplit(|&b| b == b'/').next().unwrap_or(e))
        .unwrap_or(comm);
    name.starts_with(b"python") || name.starts_with(b"pypy")
}

/// `py-spy`: where it is, or why it cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PySpy {
    At(PathBuf),
    Missing(String),
}

/// Finds `py-spy`: `$CI_JANITOR_PY_SPY` (a path, or `off`), else on `PATH`.
pub fn find_py_spy(env_value: Option<&str>, path_var: Option<&str>) -> PySpy {
    match env_value {
        Some("off" | "0" | "false") => {
            return PySpy::Missing("py-spy is turned off (CI_JANITOR_PY_SPY=off)".into())
        }
        Some(p) if !p.is_empty() => {
            return match trusted_executable(Path::new(p)) {
                Ok(()) => PySpy::At(PathBuf::from(p)),
                Err(why) => PySpy::Missing(format!("CI_JANITOR_PY_SPY names {p}, {why}")),
            };
        }
        _ => {}
    }
    for dir in path_var.unwrap_or("").split(':').filter(|d| !d.is_empty()) {
        let candidate = Path::new(dir).join("py-spy");
        if !candidate.is_file() {
            continue;
        }
        return match trusted_executable(&candidate) {
            Ok(()) => PySpy::At(candidate),
            Err(why) => PySpy::Missing(format!(
                "py-spy at {} is not used: {why}",
                candidate.display()
            )),
        };
    }
    PySpy::Missing(
        "py-spy is not installed (`pip install py-spy` gives Python stacks of hung tests)".into(),
    )
}

/// Whether we may run `path`: an executable file owned by root or by us, that no other user
/// can change (ci-janitor may run as root; a file another user can write must not run as
/// such).
fn trusted_executable(path: &Path) -> Result<(), String> {
    let m = path
        .metadata()
        .map_err(|e| format!("which cannot be read ({e})"))?;
    let me = rustix::process::geteuid().as_raw();
    if !m.is_file() || m.mode() & 0o111 == 0 {
        Err("which is not an executable file".into())
    } else if m.uid() != 0 && m.uid() != me {
        Err(format!("which belongs to another user (uid {})", m.uid()))
    } else if m.mode() & 0o022 != 0 {
        Err("which others can write".into())
    } else {
        Ok(())
    }
}

/// Runs `py-spy dump --pid PID`, killed after `timeout`. The stack text, or why there is
/// none (py-spy's own first error line: no permission to trace, not a Python process).
pub fn py_spy_dump(py_spy: &Path, pid: i32, timeout: Duration) -> Result<String, String> {
    use std::process::{Command, Stdio};
    let mut child = Command::new(py_spy)
        .args(["dump", "--pid", &pid.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("start {}: {e}", py_spy.display()))?;
    let (Some(mut out), Some(mut err)) = (child.stdout.take(), child.stderr.take()) else {
        let _ = child.kill();
        let _ = child.wait();
        return Err("py-spy: no output pipes".into());
    };
    let reader = std::thread::spawn(move || {
        let mut o = Vec::new();
        let mut e = Vec::new();
        let _ = out.by_ref().take(1 << 20).read_to_end(&mut o);
        let _ = err.by_ref().take(64 << 10).read_to_end(&mut e);
        (o, e)
    });
    let until = Instant::now() + timeout;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() < until => {
                std::thread::sleep(Duration::from_millis(10));
            }
            _ => {
                // Our own child, by its handle: nothing else is signalled.
                let _ = child.kill();
                let _ = child.wait();
                break None;
            }
        }
    };
    let (o, e) = reader.join().unwrap_or_default();
    match status {
        Some(s) if s.success() => Ok(String::from_utf8_lossy(&o).into_owned()),
        Some(_) => Err(String::from_utf8_lossy(&e)
            .lines()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("py-spy failed")
            .trim()
            .to_owned()),
        None => Err(format!("py-spy did not answer within {timeout:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_stat_after_the_last_paren() {
        let line =
            b"42 (a) b) c) S 1 42 42 0 -1 4194560 100 0 0 0 250 30 0 0 20 0 3 0 12345 1000 10 0\n";
        let s = parse_cpu_stat(line).unwrap();
        assert_eq!(s.state, 'S');
        assert_eq!(s.cpu_ticks, 280);
        assert_eq!(s.threads, 3);
        assert_eq!(s.start_ticks, 12345);
        assert_eq!(parse_cpu_stat(b"42 (x) S 1 2"), None);
    }

    #[test]
    fn syscall_lines() {
        assert_eq!(parse_syscall(b"running\n"), Some(Syscall::Running));
        assert_eq!(
            parse_syscall(b"-1 0x7ffc 0x7f00\n"),
            Some(Syscall::Elsewhere)
        );
        let s = parse_syscall(b"45 0x3 0x7ffc7cb6e4d0 0x10000 0x0 0x0 0x0 0x7ffc 0x7f00\n");
        assert_eq!(
            s,
            Some(Syscall::In {
                nr: 45,
                args: [3, 0x7ffc7cb6e4d0, 0x10000, 0, 0, 0]
            })
        );
        assert_eq!(parse_syscall(b"45 0x3"), None);
        #[cfg(target_arch = "x86_64")]
        assert_eq!(syscall_name(45), (Some("recvfrom"), Some(FdOp::Read)));
    }

    #[test]
    fn fd_links() {
        assert_eq!(parse_fd_link(b"pipe:[1234]"), (FdKind::Pipe, 1234));
        assert_eq!(parse_fd_link(b"socket:[99]"), (FdKind::Socket, 99));
        assert_eq!(parse_fd_link(b"anon_inode:[eventpoll]"), (FdKind::Epoll, 0));
        assert_eq!(parse_fd_link(b"/dev/pts/0"), (FdKind::Other, 0));
        assert_eq!(parse_fd_link(b"pipe:[x]"), (FdKind::Other, 0));
    }

    #[test]
    fn epoll_fdinfo_and_kernel_stack() {
        let info = b"pos:\t0\nflags:\t02\nmnt_id:\t15\nino:\t1057\ntfd:        5 events:       19 data:                5  pos:0 ino:2b43 sdev:8\ntfd:        7 events:       19 data: 7 pos:0 ino:1 sdev:9\n";
        assert_eq!(parse_epoll_targets(info), vec![5, 7]);
        let stack = b"[<0>] pipe_read+0x2f0/0x470\n[<0>] vfs_read+0x300/0x330\n";
        assert_eq!(parse_kernel_stack(stack), vec!["pipe_read", "vfs_read"]);
    }

    #[test]
    fn this_process_is_read() {
        let me = std::process::id() as i32;
        let root = Path::new("/proc");
        let st = cpu_stat(root, me, crate::platform::start_ticks(root, me).unwrap()).unwrap();
        assert!(st.threads >= 1);
        let (p_read, p_write) = std::io::pipe().unwrap();
        let (fds, _) = fds(root, me).unwrap();
        let ino = rustix::fs::fstat(&p_read).unwrap().st_ino;
        let ends: Vec<(bool, bool)> = fds
            .iter()
            .filter(|f| f.kind == FdKind::Pipe && f.inode == ino)
            .map(|f| (f.read, f.write))
            .collect();
        assert!(ends.contains(&(true, false)), "{ends:?}");
        assert!(ends.contains(&(false, true)), "{ends:?}");
        use std::os::fd::AsRawFd;
        assert_eq!(pipe_has_reader(root, me, p_write.as_raw_fd()), Some(true));
        drop(p_read);
        assert_eq!(pipe_has_reader(root, me, p_write.as_raw_fd()), Some(false));
        assert!(is_python(Some(b"/usr/bin/python3.12"), b"pytest"));
        assert!(!is_python(None, b"sleep"));
    }

    #[test]
    fn py_spy_lookup() {
        assert!(matches!(find_py_spy(Some("off"), None), PySpy::Missing(_)));
        assert!(
            matches!(find_py_spy(None, Some("")), PySpy::Missing(m) if m.contains("pip install py-spy"))
        );
        assert!(matches!(
            find_py_spy(Some("/nonexistent/py-spy"), None),
            PySpy::Missing(_)
        ));
    }
}
