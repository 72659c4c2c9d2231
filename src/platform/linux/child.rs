//! Running a command as a child subreaper, for `ci-janitor run`: orphans of the command are
//! reparented to us instead of init, signals arrive as events on a signalfd, and exits of
//! the command and of adopted orphans are reaped in one place.

use std::os::fd::{AsFd, OwnedFd};
use std::process::{Child, Command};
use std::time::Duration;

use rustix::event::{PollFd, PollFlags};

use super::sigqueue::{Caught, SignalQueue};

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
    Signals(std::io::Error),
    #[error("start `{command}`: {source}")]
    Spawn {
        command: String,
        source: std::io::Error,
    },
    #[error("watch the command: {0}")]
    Watch(std::io::Error),
}

/// What `run` handles: the first four are passed on to the command.
const HANDLED: [Caught; 5] = [
    Caught::Interrupt,
    Caught::Terminate,
    Caught::HangUp,
    Caught::Quit,
    Caught::Child,
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
    signals: SignalQueue,
    pub received: Vec<Received>,
    /// When the first SIGINT/SIGTERM arrived: the deadline runs from then.
    pub cancelled_at: Option<std::time::Instant>,
    exit: Option<ChildExit>,
    /// Hold the first SIGINT/SIGTERM back instead of passing it on at once, so the caller
    /// can look at the command's processes before they are told to stop.
    pub hold_stop: bool,
    held: Option<Caught>,
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
        cmd.pre_exec(super::sigqueue::unblock_all);
    }
    let signals = SignalQueue::block(&HANDLED).map_err(ChildError::Signals)?;
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
            if let Some(sig) = self.held.filter(|_| self.grace_from.is_none()) {
                return Ok(Waited::Cancelled {
                    signal: sig.number(),
                });
            }
            if until.is_some_and(|u| std::time::Instant::now() >= u) && self.grace_from.is_none() {
                return Ok(Waited::TimedOut);
            }
            let stops = self
                .received
                .iter()
                .filter(|r| {
                    r.signal == Caught::Interrupt.number() || r.signal == Caught::Terminate.number()
                })
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
        while let Some(d) = self.signals.next() {
            let sig = d.signal;
            if sig == Caught::Child {
                continue;
            }
            // The terminal's Ctrl-C or Ctrl-\ reached the command (in our foreground
            // process group) too.
            let from_terminal = d.from_kernel && matches!(sig, Caught::Interrupt | Caught::Quit);
            let stop = matches!(sig, Caught::Interrupt | Caught::Terminate);
            if stop && self.hold_stop && self.held.is_none() && self.exit.is_none() {
                // Held back: the caller looks first, then releases it.
                self.held = Some(sig);
                self.held_from_terminal = from_terminal;
                self.cancelled_at
                    .get_or_insert_with(std::time::Instant::now);
                self.received.push(Received {
                    signal: sig.number(),
                    forwarded: false,
                });
                continue;
            }
            let forwarded = !from_terminal && self.exit.is_none() && self.forward(sig);
            if stop {
                self.cancelled_at
                    .get_or_insert_with(std::time::Instant::now);
                self.grace_from.get_or_insert_with(std::time::Instant::now);
            }
            self.received.push(Received {
                signal: sig.number(),
                forwarded,
            });
        }
    }

    /// Passes the held stop signal on to the command; the grace period runs from now.
    pub fn release(&mut self) {
        if let Some(sig) = self.held.filter(|_| !self.held_from_terminal) {
            self.forward(sig);
        }
        self.grace_from = Some(std::time::Instant::now());
        self.cancelled_at
            .get_or_insert_with(std::time::Instant::now);
    }

    /// Sends the command SIGTERM (its own `--timeout` ran out); the grace period runs from
    /// now.
    pub fn terminate(&mut self) {
        self.forward(Caught::Terminate);
        self.grace_from = Some(std::time::Instant::now());
        self.cancelled_at
            .get_or_insert_with(std::time::Instant::now);
    }

    fn forward(&self, sig: Caught) -> bool {
        let Some(sig) = rustix::process::Signal::from_named_raw(sig.number()) else {
            return false;
        };
        rustix::process::pidfd_send_signal(&self.pidfd, sig).is_ok()
    }

    /// Reaps every exited child: the command (recording its status) and adopted orphans.
    pub fn reap(&mut self) {
        let me = self.pid();
        use rustix::process::{waitpid, WaitOptions};
        while let Ok(Some((pid, status))) = waitpid(None, WaitOptions::NOHANG) {
            if pid.as_raw_nonzero().get() != me {
                continue;
            }
            if let Some(code) = status.exit_status() {
                self.exit = Some(ChildExit::Code(code));
            } else if let Some(sig) = status.terminating_signal() {
                self.exit = Some(ChildExit::Signal(sig));
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
