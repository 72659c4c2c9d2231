//! Signals as events: the signals a process handles are blocked and arrive on a signalfd,
//! which is polled beside everything else it waits on (`run`'s child, the guard's events).
//! No handler runs at an arbitrary point; nothing outside this file sees a `nix` type.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};

/// The signals ci-janitor handles itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caught {
    Interrupt,
    Terminate,
    HangUp,
    Quit,
    /// A child exited (or stopped): reap.
    Child,
}

impl Caught {
    fn raw(self) -> Signal {
        match self {
            Caught::Interrupt => Signal::SIGINT,
            Caught::Terminate => Signal::SIGTERM,
            Caught::HangUp => Signal::SIGHUP,
            Caught::Quit => Signal::SIGQUIT,
            Caught::Child => Signal::SIGCHLD,
        }
    }

    fn from_raw(signo: i32) -> Option<Caught> {
        [
            Caught::Interrupt,
            Caught::Terminate,
            Caught::HangUp,
            Caught::Quit,
            Caught::Child,
        ]
        .into_iter()
        .find(|c| c.raw() as i32 == signo)
    }

    /// The signal's number (for reports and for passing it on).
    pub fn number(self) -> i32 {
        self.raw() as i32
    }
}

/// One signal taken off the queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivery {
    pub signal: Caught,
    /// Sent by the kernel (`SI_KERNEL`): for SIGINT and SIGQUIT, the terminal's Ctrl-C or
    /// Ctrl-\, which the whole foreground process group received too.
    pub from_kernel: bool,
}

/// `si_code` of a signal the kernel sent.
const SI_KERNEL: i32 = 0x80;

/// The blocked signals, readable as [`Delivery`]s; poll it for readability.
#[derive(Debug)]
pub struct SignalQueue {
    fd: SignalFd,
}

impl SignalQueue {
    /// Blocks `signals` in this thread (threads started later inherit the mask) and
    /// returns the queue they arrive on instead. Non-blocking and close-on-exec.
    pub fn block(signals: &[Caught]) -> io::Result<SignalQueue> {
        let mut mask = SigSet::empty();
        for s in signals {
            mask.add(s.raw());
        }
        nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)?;
        let fd = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)?;
        Ok(SignalQueue { fd })
    }

    /// The next pending signal, if any (never blocks).
    pub fn next(&self) -> Option<Delivery> {
        loop {
            let info = self.fd.read_signal().ok().flatten()?;
            if let Some(signal) = Caught::from_raw(info.ssi_signo as i32) {
                return Some(Delivery {
                    signal,
                    from_kernel: info.ssi_code == SI_KERNEL,
                });
            }
        }
    }
}

impl AsFd for SignalQueue {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// Empties this thread's signal mask. For a child between fork and exec: a mask is
/// inherited across exec, and a command started with SIGTERM blocked could never be
/// terminated gracefully. Async-signal-safe (one system call, no allocation).
pub fn unblock_all() -> io::Result<()> {
    let empty = SigSet::empty();
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_SETMASK, Some(&empty), None)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_handled_signal_maps_back_to_itself() {
        for c in [
            Caught::Interrupt,
            Caught::Terminate,
            Caught::HangUp,
            Caught::Quit,
            Caught::Child,
        ] {
            assert_eq!(Caught::from_raw(c.number()), Some(c));
        }
        assert_eq!(Caught::from_raw(Signal::SIGUSR1 as i32), None);
    }
}
