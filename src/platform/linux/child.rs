//! Running a command as a child subreaper, for `ci-janitor run`: orphans of the command are
//! reparented to us instead of init, signals arrive as events on a signalfd, and exits of
//! the command and of adopted orphans are reaped in one place.

use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command};
use std::time::Duration;

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use rustix::event::{PollFd, PollFlags};

/// What happened while the command ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildExit {
    Code(i32),
    Signal(i32),
}

impl ChildExit {
    /// The exit status a shell would report: the code, or 128 + the signal.
    pub fn as_status(self) -> i32 {
        match self {
            ChildExit::Code(c) => c,
            ChildExit::Signal(s) => 128 + s,
        }
    }
}

/// How waiting for the command ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Waited {
    Exited(ChildExit),
    /// Cancelled: a second SIGINT/SIGTERM came, or the command outlived the grace period
    /// after the first. It still runs; its tree is for the sweep to kill.
    Outlived {
        second_signal: bool,
    },
    /// The first SIGINT/SIGTERM came and was held back (see [`Supervised::hold_stop`]): the
    /// command has not been told yet. [`Supervised::release`] passes it on.
    Cancelled {
        signal: i32,
    },
    /// The time given to [`Supervised::wait_until`] passed; the command still runs and
    /// was not signalled ([`Supervised::terminate`] does that).
    TimedOut,
}

/// A signal we received while the command ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub signal: i32,
    /// Whether we passed it on to the command.
    pub forwarded: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ChildError {
    #[error("become a child subreaper: {0}")]
    Subreaper(std::io::Error),
    #[error("set up signal handling: {0}")]
    Signals(nix::Error),
    #[error("start `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("watch the command: {0}")]
    Watch(std::io::Error),
}

const FORWARDED: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// Marks this process a child subreaper: descendants orphaned later are reparented to us.
pub fn become_subreaper() -> Result<(), ChildError> {
    rustix::process::set_child_subreaper(Some(rustix::process::getpid()))
        .map_err(|e| ChildError::Subreaper(e.into()))
}

/// A running command with our signals redirected to a signalfd.
#[derive(Debug)]
pub struct Supervised {
    child: Child,
    pidfd: OwnedFd,
    signals: SignalFd,
    pub received: Vec<Received>,
    /// When the first SIGINT/SIGTERM arrived: the deadline runs from then.
    pub cancelled_at: Option<std::time::Instant>,
    exit: Option<ChildExit>,
    /// Hold the first SIGINT/SIGTERM back instead of passing it on at once, so the caller
    /// can look at the command's processes before they are told to stop.
    pub hold_stop: bool,
    held: Option<i32>,
    /// The held signal came from the terminal (the command has it already).
    held_from_terminal: bool,
    /// When the grace period runs from: the first stop signal passed on.
    grace_from: Option<std::time::Instant>,
}

/// Blocks the signals we handle (they arrive on a signalfd instead) and starts `cmd` with
/// an empty signal mask: a mask is inherited across exec, and a command started with
/// SIGTERM blocked could never be terminated gracefully.
pub fn spawn(mut cmd: Command, display: &str) -> Result<Supervised, ChildError> {
    use std::os::unix::process::CommandExt;
    // SAFETY: the closure runs in the child between fork and exec and only calls
    // pthread_sigmask, which is async-signal-safe; it allocates nothing and takes no locks.
    unsafe {
        cmd.pre_exec(|| {
            let empty = SigSet::empty();
            nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&empty), None)
                .map_err(std::io::Error::from)
        });
    }
    let mut mask = SigSet::empty();
    for s in FORWARDED {
        mask.add(s);
    }
    mask.add(Signal::SIGCHLD);
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(ChildError::Signals)?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(ChildError::Signals)?;
    let child = cmd.spawn().map_err(|source| ChildError::Spawn {
        command: display.to_owned(),
        source,
    })?;
    // Our own unreaped child: its pid cannot be reused until we wait for it.
    let pid = rustix::process::Pid::from_raw(child.id() as i32)
        .ok_or_else(|| ChildError::Watch(std::io::Error::other("child pid 0")))?;
    let pidfd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
        .map_err(|e| ChildError::Watch(e.into()))?;
    Ok(Supervised {
        child,
        pidfd,
        signals,
        received: Vec::new(),
        cancelled_at: None,
        exit: None,
        hold_stop: false,
        held: None,
        held_from_terminal: false,
        grace_from: None,
    })
}

/// `si_code` of a signal sent by the kernel: for SIGINT/SIGQUIT, the terminal's Ctrl-C or
/// Ctrl-\, which the command (in our foreground process group) received too.
const SI_KERNEL: i32 = 0x80;

impl Supervised {
    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    /// Waits for the command to exit, forwarding SIGINT/SIGTERM/SIGHUP/SIGQUIT to it and
    /// reaping adopted orphans as they die. A cancelled run does not wait for ever: after a
    /// second SIGINT/SIGTERM, or `grace` after the first, it returns
    /// [`Waited::Outlived`] with the command still running.
    pub fn wait(&mut self, grace: Duration) -> Result<Waited, ChildError> {
        self.wait_until(grace, None)
    }

    /// [`Supervised::wait`], also returning [`Waited::Cancelled`] for a held stop signal
    /// and [`Waited::TimedOut`] at `until`.
    pub fn wait_until(
        &mut self,
        grace: Duration,
        until: Option<std::time::Instant>,
    ) -> Result<Waited, ChildError> {
        loop {
            if let Some(exit) = self.exit {
                return Ok(Waited::Exited(exit));
            }
            if let Some(signal) = self.held.filter(|_| self.grace_from.is_none()) {
                return Ok(Waited::Cancelled { signal });
            }
            if until.is_some_and(|u| std::time::Instant::now() >= u) && self.grace_from.is_none() {
                return Ok(Waited::TimedOut);
            }
            let stops = self
                .received
                .iter()
                .filter(|r| r.signal == Signal::SIGINT as i32 || r.signal == Signal::SIGTERM as i32)
                .count();
            if stops >= 2 {
                return Ok(Waited::Outlived {
                    second_signal: true,
                });
            }
            let timeout = match self
                .grace_from
                .or(self.cancelled_at.filter(|_| !self.hold_stop))
            {
                Some(at) => {
                    let left = (at + grace).saturating_duration_since(std::time::Instant::now());
                    if left.is_zero() {
                        return Ok(Waited::Outlived {
                            second_signal: false,
                        });
                    }
                    Some(super::proc_events::timespec(left))
                }
                None => until.map(|u| {
                    super::proc_events::timespec(
                        u.saturating_duration_since(std::time::Instant::now()),
                    )
                }),
            };
            let mut fds = [
                PollFd::from_borrowed_fd(self.signals.as_fd(), PollFlags::IN),
                PollFd::new(&self.pidfd, PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, timeout.as_ref()) {
                Ok(_) | Err(rustix::io::Errno::INTR) => {}
                Err(e) => return Err(ChildError::Watch(e.into())),
            }
            self.drain_signals();
            self.reap();
        }
    }

    /// The command's exit, once reaped.
    pub fn exit(&self) -> Option<ChildExit> {
        self.exit
    }

    fn drain_signals(&mut self) {
        while let Ok(Some(info)) = self.signals.read_signal() {
            let signo = info.ssi_signo as i32;
            if signo == Signal::SIGCHLD as i32 {
                continue;
            }
            let from_terminal = info.ssi_code == SI_KERNEL
                && (signo == Signal::SIGINT as i32 || signo == Signal::SIGQUIT as i32);
            let stop = signo == Signal::SIGINT as i32 || signo == Signal::SIGTERM as i32;
            if stop && self.hold_stop && self.held.is_none() && self.exit.is_none() {
                // Held back: the caller looks first, then releases it.
                self.held = Some(signo);
                self.held_from_terminal = from_terminal;
                self.cancelled_at
                    .get_or_insert_with(std::time::Instant::now);
                self.received.push(Received {
                    signal: signo,
                    forwarded: false,
                });
                continue;
            }
            let forwarded = !from_terminal && self.exit.is_none() && self.forward(signo);
            if stop {
                self.cancelled_at
                    .get_or_insert_with(std::time::Instant::now);
                self.grace_from.get_or_insert_with(std::time::Instant::now);
            }
            self.received.push(Received {
                signal: signo,
                forwarded,
            });
        }
    }

    /// Passes the held stop signal on to the command; the grace period runs from now.
    pub fn release(&mut self) {
        if let Some(signo) = self.held.filter(|_| !self.held_from_terminal) {
            self.forward(signo);
        }
        self.grace_from = Some(std::time::Instant::now());
        self.cancelled_at
            .get_or_insert_with(std::time::Instant::now);
    }

    /// Sends the command SIGTERM (its own `--timeout` ran out); the grace period runs from
    /// now.
    pub fn terminate(&mut self) {
        self.forward(Signal::SIGTERM as i32);
        self.grace_from = Some(std::time::Instant::now());
        self.cancelled_at
            .get_or_insert_with(std::time::Instant::now);
    }

    fn forward(&self, signo: i32) -> bool {
        let Ok(sig) = Signal::try_from(signo) else {
            return false;
        };
        let Some(sig) = rustix::process::Signal::from_named_raw(sig as i32) else {
            return false;
        };
        rustix::process::pidfd_send_signal(&self.pidfd, sig).is_ok()
    }

    /// Reaps every exited child: the command (recording its status) and adopted orphans.
    pub fn reap(&mut self) {
        let me = self.pid();
        loop {
            match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => {
                    if pid.as_raw() == me {
                        self.exit = Some(ChildExit::Code(code));
                    }
                }
                Ok(WaitStatus::Signaled(pid, sig, _)) => {
                    if pid.as_raw() == me {
                        self.exit = Some(ChildExit::Signal(sig as i32));
                    }
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => {}
            }
        }
    }

    /// Reaps orphans for up to `budget`, until none are left to reap right now.
    pub fn reap_for(&mut self, budget: Duration) {
        let end = std::time::Instant::now() + budget;
        while std::time::Instant::now() < end {
            self.reap();
            let mut fds = [PollFd::from_borrowed_fd(
                self.signals.as_fd(),
                PollFlags::IN,
            )];
            let left = end.saturating_duration_since(std::time::Instant::now());
            let ts = super::proc_events::timespec(left);
            match rustix::event::poll(&mut fds, Some(&ts)) {
                Ok(0) => break,
                _ => self.drain_signals(),
            }
        }
        self.reap();
    }
}
