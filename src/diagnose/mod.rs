//! Why is the job stuck: a report of the job's processes, what each is blocked on, who
//! talks to whom over TCP and pipes, and — only where the facts say so — a one-sentence
//! verdict per blocked process. Kills nothing.
//!
//! - [`collect`]: the facts, read through [`crate::platform`] under a time bound, for the
//!   processes the job's own attribution ([`crate::classify`], as the sweep uses it) names.
//! - [`verdict`]: pure logic from those facts to sentences; when the facts do not settle
//!   it, no sentence.
//!
//! The [`Hang`] type is the report's `hang` section (`docs/report-schema.md`) and what
//! `ci-janitor diagnose --json` prints.

pub mod collect;
pub mod verdict;

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::text::{sanitize, truncate};

pub use collect::{capture, CaptureInput};

/// A hang report: the facts about the job's processes at one moment, and the verdicts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Hang {
    /// Why it was taken: `diagnose`, `signal SIGTERM`, `timeout`, `job-status cancelled`,
    /// `dead man's switch`.
    pub reason: String,
    pub at_unix_ms: u64,
    /// How long the capture took, and its bound.
    pub elapsed_ms: u64,
    pub bound_ms: u64,
    /// The CPU sample's length: a process that used no CPU over it is idle.
    pub sample_ms: u64,
    /// False when the bound cut the capture short (some processes not read, or no stacks).
    pub complete: bool,
    /// The job's processes (zombies left out), pid order.
    pub processes: Vec<HangProcess>,
    /// TCP connections of the job's processes (listeners are in `listening`).
    pub connections: Vec<Connection>,
    /// Pipes held by two or more of the job's processes, or that one of them waits on.
    pub pipes: Vec<Pipe>,
    /// Listening TCP sockets of the job's processes.
    pub listening: Vec<Listening>,
    /// The job's processes the guard saw exit (from its journal), most recent first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gone: Vec<Gone>,
    /// One sentence per blocked process (or group), built only from the facts above.
    pub verdicts: Vec<Verdict>,
    /// What could not be read, and what that leaves out (py-spy missing, kernel stacks
    /// unreadable, no journal).
    pub missing: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HangProcess {
    pub pid: i32,
    pub start_ticks: u64,
    pub ppid: i32,
    pub comm: String,
    /// The command line, redacted.
    pub command: String,
    /// R, S, D, Z, T, ... at the end of the sample.
    pub state: char,
    /// The kernel function it sleeps in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wchan: Option<String>,
    /// The system call its main thread (or the first thread blocked on a descriptor) is
    /// in, with the descriptor: `recvfrom(fd 3)`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syscall: Option<String>,
    /// The descriptors it is blocked on, and how (a read, a write, an epoll wait).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub blocked_on: Option<BlockedOn>,
    /// CPU time (user + system, all threads) at the first reading, and its growth over
    /// the sample (`None`: not read twice).
    pub cpu_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_delta_ms: Option<u64>,
    pub age_s: u64,
    pub threads: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub xdist_worker: Option<String>,
    /// Its pipes and sockets.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fds: Vec<HangFd>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<Stack>,
    /// Why there is no stack (py-spy missing or refused, kernel stack unreadable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub no_stack: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub python: bool,
}

impl HangProcess {
    /// Idle: used no CPU over the sample, and sleeps (S or D).
    pub fn idle(&self) -> bool {
        self.cpu_delta_ms == Some(0) && matches!(self.state, 'S' | 'D')
    }

    /// How a sentence names it: `pytest pid 42 (gw0, test_x)`.
    pub fn label(&self) -> String {
        let mut extra: Vec<&str> = Vec::new();
        if let Some(w) = &self.xdist_worker {
            extra.push(w);
        }
        if let Some(t) = &self.test {
            extra.push(t);
        }
        if extra.is_empty() {
            format!("{} pid {}", self.name(), self.pid)
        } else {
            format!("{} pid {} ({})", self.name(), self.pid, extra.join(", "))
        }
    }

    /// A short name: the module of `python -m MOD`, the script a Python runs, else comm.
    pub fn name(&self) -> String {
        if self.python {
            let args: Vec<&str> = self.command.split(' ').skip(1).collect();
            if let Some(i) = args.iter().position(|a| *a == "-m") {
                if let Some(m) = args.get(i + 1) {
                    return (*m).to_owned();
                }
            }
            if let Some(script) = args.iter().find(|a| !a.starts_with('-')) {
                return script.rsplit('/').next().unwrap_or(script).to_owned();
            }
        }
        self.comm.clone()
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BlockedOn {
    pub op: crate::platform::inspect::FdOp,
    pub fds: Vec<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HangFd {
    pub fd: i32,
    pub kind: crate::platform::inspect::FdKind,
    pub inode: u64,
    pub read: bool,
    pub write: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stack {
    /// `py-spy` or `kernel`.
    pub source: String,
    pub text: String,
}

/// A TCP connection of a job process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Connection {
    pub pid: i32,
    pub fd: i32,
    pub inode: u64,
    pub local: String,
    pub remote: String,
    /// `ESTAB`, `CLOSE-WAIT`, `SYN-SENT`, ...
    pub state: String,
    /// The remote end is on this machine (loopback, or an address one of its sockets has).
    pub remote_is_local: bool,
    /// No data either way for this long (sock_diag's `tcp_info`; absent from `/proc/net`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_ms: Option<u64>,
    /// Bytes received and not read yet.
    pub unread: u32,
    /// The job process holding the other end.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub peer: Option<i32>,
    /// Who listens on the remote address now (any process on the machine), by pid.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub listeners: Vec<PidName>,
    /// The remote is local and nothing listens on that port any more.
    pub nobody_listens: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidName {
    pub pid: i32,
    pub comm: String,
}

/// A pipe, by inode, and which job processes hold which end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipe {
    pub inode: u64,
    /// (pid, fd) holding the read end / the write end.
    pub readers: Vec<(i32, i32)>,
    pub writers: Vec<(i32, i32)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listening {
    pub pid: i32,
    pub address: String,
    /// Connections waiting to be accepted.
    pub backlog: u32,
}

/// A job process the guard saw exit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Gone {
    pub pid: i32,
    pub command: String,
    pub exited_at_unix_ms: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    /// The processes it is about, the waiting one first.
    pub pids: Vec<i32>,
    /// `waits-on-peer`, `waits-on-closed-port`, `pipe-cycle`, `waits-on-pipe`,
    /// `own-pipe`, `uninterruptible`, `stopped`, `holds-dead-connection`.
    pub kind: String,
    pub sentence: String,
}

impl Hang {
    /// The report for people: verdicts first, then each process with its facts.
    pub fn render_text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Why the job is stuck ({}; {} job process{}, captured in {:.1} s of at most {:.1} s{}):",
            sanitize(&self.reason),
            self.processes.len(),
            if self.processes.len() == 1 { "" } else { "es" },
            self.elapsed_ms as f64 / 1000.0,
            self.bound_ms as f64 / 1000.0,
            if self.complete { "" } else { ", cut short" }
        );
        if self.verdicts.is_empty() {
            let _ = writeln!(
                s,
                "  No verdict: the facts below do not show what anything waits on."
            );
        }
        for v in &self.verdicts {
            let _ = writeln!(s, "  * {}", sanitize(&v.sentence));
        }
        for p in &self.processes {
            let _ = write!(
                s,
                "  {} {}  state {}",
                p.pid,
                line(&p.command, 120),
                p.state
            );
            if let Some(w) = &p.wchan {
                let _ = write!(s, " in {}", sanitize(w));
            }
            if let Some(c) = &p.syscall {
                let _ = write!(s, ", {}", sanitize(c));
            }
            let _ = write!(
                s,
                ", cpu {} ms{}, age {} s, {} thread{}",
                p.cpu_ms,
                match p.cpu_delta_ms {
                    Some(0) => " (idle)".to_owned(),
                    Some(d) => format!(" (+{d} ms: busy)"),
                    None => String::new(),
                },
                p.age_s,
                p.threads,
                if p.threads == 1 { "" } else { "s" }
            );
            if let Some(cwd) = &p.cwd {
                let _ = write!(s, ", cwd {}", sanitize(cwd));
            }
            let _ = writeln!(s);
            for c in self.connections.iter().filter(|c| c.pid == p.pid) {
                let _ = write!(s, "      tcp {} -> {} {}", c.local, c.remote, c.state);
                if let Some(i) = c.idle_ms {
                    let _ = write!(s, ", idle {:.1} s", i as f64 / 1000.0);
                }
                if let Some(peer) = c.peer {
                    let _ = write!(s, ", peer pid {peer}");
                } else if !c.listeners.is_empty() {
                    let l: Vec<String> = c
                        .listeners
                        .iter()
                        .map(|l| format!("{} pid {}", sanitize(&l.comm), l.pid))
                        .collect();
                    let _ = write!(s, ", listened on by {}", l.join(", "));
                }
                if c.nobody_listens {
                    let _ = write!(s, ", NOTHING LISTENS THERE");
                }
                let _ = writeln!(s);
            }
            for l in self.listening.iter().filter(|l| l.pid == p.pid) {
                let _ = writeln!(s, "      listening {} (backlog {})", l.address, l.backlog);
            }
            for pipe in &self.pipes {
                let mine = |v: &[(i32, i32)]| v.iter().filter(|(pid, _)| *pid == p.pid).count();
                if mine(&pipe.readers) + mine(&pipe.writers) == 0 {
                    continue;
                }
                let ends = |v: &[(i32, i32)]| {
                    v.iter()
                        .map(|(pid, fd)| format!("{pid}:{fd}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                };
                let _ = writeln!(
                    s,
                    "      pipe:[{}] readers {} writers {}",
                    pipe.inode,
                    ends(&pipe.readers),
                    ends(&pipe.writers)
                );
            }
            match (&p.stack, &p.no_stack) {
                (Some(st), _) => {
                    let _ = writeln!(s, "      stack ({}):", sanitize(&st.source));
                    for line in st.text.lines().take(40) {
                        let _ = writeln!(s, "        {}", sanitize(line));
                    }
                }
                (None, Some(why)) => {
                    let _ = writeln!(s, "      no stack: {}", sanitize(why));
                }
                (None, None) => {}
            }
        }
        for g in self.gone.iter().take(10) {
            let ago = self.at_unix_ms.saturating_sub(g.exited_at_unix_ms) / 1000;
            let _ = writeln!(
                s,
                "  gone: {} `{}` exited {ago} s ago (journal)",
                g.pid,
                line(&g.command, 100)
            );
        }
        for m in &self.missing {
            let _ = writeln!(s, "  missing: {}", sanitize(m));
        }
        s
    }
}

/// One escaped line of what a process chose, at most `max` characters.
fn line(text: &str, max: usize) -> String {
    truncate(sanitize(text), max)
}

/// Where `py-spy` is, by the environment: `$CI_JANITOR_PY_SPY` (a path, or `off`), else
/// `PATH`.
pub fn py_spy(env: crate::settings::Env<'_>) -> crate::platform::inspect::PySpy {
    crate::platform::inspect::find_py_spy(
        env("CI_JANITOR_PY_SPY").as_deref(),
        env("PATH").as_deref(),
    )
}
