//! Signals by identity. A [`Handle`] is a pidfd opened on a pid and then checked against the
//! expected start time: from then on it refers to that one process, so a signal through it
//! can never reach a process that reused the pid (the kernel answers ESRCH instead).
//!
//! Every errno has a meaning: ESRCH is "already gone", EPERM is "not ours to kill" (reported,
//! never retried as someone else), anything else is an error the caller reports.

use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::process::{Pid, PidfdFlags, Signal};

use crate::model::ProcessId;

/// The signals a sweep sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    Stop,
    Cont,
    Term,
    Kill,
}

impl Sig {
    fn raw(self) -> Signal {
        match self {
            Sig::Stop => Signal::STOP,
            Sig::Cont => Signal::CONT,
            Sig::Term => Signal::TERM,
            Sig::Kill => Signal::KILL,
        }
    }
}

/// The result of opening or signalling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignalResult {
    Sent,
    /// The process has exited (or its pid now names another process).
    Gone,
    /// EPERM: another user's process; not ours to kill.
    NotPermitted,
    /// Any other errno.
    Failed(i32),
}

/// A pidfd known to refer to the process `id`.
#[derive(Debug)]
pub struct Handle {
    pub id: ProcessId,
    fd: OwnedFd,
}

/// Opens a pidfd for `id` and checks, after opening, that the pid still has `id`'s start
/// time. Checking after opening closes the race: if the process had been replaced before
/// the open, the start time differs; if it is replaced after, the pidfd still refers to the
/// old (now dead) process.
pub fn open(proc_root: &Path, id: ProcessId) -> Result<Handle, SignalResult> {
    let pid = Pid::from_raw(id.pid).ok_or(SignalResult::Gone)?;
    let fd = match rustix::process::pidfd_open(pid, PidfdFlags::empty()) {
        Ok(fd) => fd,
        Err(e) => {
            tracing::debug!(pid = id.pid, errno = %e, "pidfd_open failed");
            return Err(match e {
                Errno::SRCH => SignalResult::Gone,
                Errno::PERM | Errno::ACCESS => SignalResult::NotPermitted,
                e => SignalResult::Failed(e.raw_os_error()),
            });
        }
    };
    // Gone on proof only: no such process, or another one under its pid. A `stat` that
    // cannot be read for another reason (too many open files) proves nothing: the target is
    // not signalled, and its fate says why.
    let now = match super::procfs::Reader::by_path(proc_root).stat_or_why(id.pid) {
        Ok(stat) => stat.map(|s| s.start_ticks),
        Err(e) => {
            tracing::debug!(pid = id.pid, errno = %e, "not signalled: its identity could not be read");
            return Err(SignalResult::Failed(e.raw_os_error()));
        }
    };
    match now {
        Some(t) if t == id.start_ticks => Ok(Handle { id, fd }),
        now => {
            tracing::debug!(
                pid = id.pid,
                start_ticks = id.start_ticks,
                now = ?now,
                "not signalled: the pid names another process now (or none)"
            );
            Err(SignalResult::Gone)
        }
    }
}

/// `PIDFD_SIGNAL_PROCESS_GROUP` (`<linux/pidfd.h>`, Linux 6.9): the signal goes to the
/// process group whose id is the pid of the pidfd's process.
const PIDFD_SIGNAL_PROCESS_GROUP: libc::c_uint = 4;

/// The result of [`Handle::signal_group`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupSignal {
    /// The kernel took it: every process in the group at that moment, in every pid
    /// namespace, was sent the signal; at least one accepted it (a refusal by another
    /// member is not reported here: the caller checks each member's exit).
    Sent,
    /// The kernel cannot address a group through a pidfd (before Linux 6.9).
    Unsupported,
    /// The kernel's answer otherwise (`Gone`: no process is left in the group).
    Other(SignalResult),
}

impl Handle {
    /// A pidfd the reader opened while it read `id` and proved to be `id`'s (see
    /// [`super::read_snapshot_pinned`]).
    pub(super) fn pinned(id: ProcessId, fd: OwnedFd) -> Handle {
        Handle { id, fd }
    }

    /// Sends `sig` to the process group this process leads, in one system call, through
    /// its pidfd (`PIDFD_SIGNAL_PROCESS_GROUP`): the group is the one whose id is this
    /// process's pid, addressed by the kernel's own reference, so a group id reused by
    /// another group after this one ended can never be reached (`kill(-pgid)` could). The
    /// caller has verified that every member of the group is its target.
    pub fn signal_group(&self, sig: Sig) -> GroupSignal {
        use std::os::fd::AsRawFd;
        // SAFETY: pidfd_send_signal takes a pidfd we own and keep open for the call, a
        // signal number, a null siginfo (the kernel fills in a SI_USER one) and flags; it
        // reads and writes no memory of ours.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_pidfd_send_signal,
                self.fd.as_raw_fd(),
                sig.raw().as_raw(),
                std::ptr::null::<libc::siginfo_t>(),
                PIDFD_SIGNAL_PROCESS_GROUP,
            )
        };
        let result = if rc == 0 {
            GroupSignal::Sent
        } else {
            match Errno::from_raw_os_error(
                std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
            ) {
                Errno::INVAL | Errno::NOSYS => GroupSignal::Unsupported,
                Errno::SRCH => GroupSignal::Other(SignalResult::Gone),
                Errno::PERM => GroupSignal::Other(SignalResult::NotPermitted),
                e => GroupSignal::Other(SignalResult::Failed(e.raw_os_error())),
            }
        };
        tracing::debug!(
            pgid = self.id.pid,
            leader_start_ticks = self.id.start_ticks,
            signal = ?sig,
            result = ?result,
            "pidfd_send_signal to the process group"
        );
        result
    }

    pub fn signal(&self, sig: Sig) -> SignalResult {
        let result = match rustix::process::pidfd_send_signal(&self.fd, sig.raw()) {
            Ok(()) => SignalResult::Sent,
            Err(Errno::SRCH) => SignalResult::Gone,
            Err(Errno::PERM) => SignalResult::NotPermitted,
            Err(e) => SignalResult::Failed(e.raw_os_error()),
        };
        // The syscall edge: with CI_JANITOR_LOG=debug every signal is in the log, with
        // its identity and what the kernel said.
        tracing::debug!(
            pid = self.id.pid,
            start_ticks = self.id.start_ticks,
            signal = ?sig,
            result = ?result,
            "pidfd_send_signal"
        );
        result
    }

    /// Whether the process has exited (it may still be a zombie: dead all the same).
    pub fn has_exited(&self) -> bool {
        let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
        matches!(rustix::event::poll(&mut fds, Some(&super::proc_events::timespec(std::time::Duration::ZERO))), Ok(n) if n > 0)
    }
}

/// Waits until every handle in `live` has exited or `until` passes. Returns, for each
/// handle that exited, its index in `live` and when we saw it exit.
///
/// One epoll set holds every pidfd, so a wake-up costs one system call and work in
/// proportion to the exits it reports. `poll(2)` over the pending pidfds cost O(pending)
/// per wake-up, and thousands of processes dying one after another wake the waiter
/// thousands of times: O(n²) at 5,000 processes.
pub fn wait_exits(live: &[&Handle], until: Instant) -> Vec<(usize, Instant)> {
    if live.is_empty() {
        return Vec::new();
    }
    match wait_exits_epoll(live, until) {
        Ok(exited) => exited,
        // No epoll (a seccomp filter, say): one pidfd at a time, still correct.
        Err(_) => wait_exits_polling(live, until),
    }
}

fn wait_exits_epoll(live: &[&Handle], until: Instant) -> Result<Vec<(usize, Instant)>, Errno> {
    use rustix::event::epoll;
    let ep = epoll::create(epoll::CreateFlags::CLOEXEC)?;
    for (i, h) in live.iter().enumerate() {
        // ONESHOT: an exited pidfd stays readable; report it once, with no EPOLL_CTL_DEL.
        epoll::add(
            &ep,
            h.fd.as_fd(),
            epoll::EventData::new_u64(i as u64),
            epoll::EventFlags::IN | epoll::EventFlags::ONESHOT,
        )?;
    }
    let mut exited: Vec<(usize, Instant)> = Vec::new();
    let mut events: Vec<epoll::Event> = Vec::with_capacity(live.len().min(1024));
    while exited.len() < live.len() {
        let now = Instant::now();
        if now >= until {
            break;
        }
        let left = until - now;
        let timeout = super::proc_events::timespec(left);
        events.clear();
        match epoll::wait(
            &ep,
            rustix::buffer::spare_capacity(&mut events),
            Some(&timeout),
        ) {
            Ok(_) => {
                let seen = Instant::now();
                exited.extend(events.iter().map(|e| (e.data.u64() as usize, seen)));
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(exited)
}

/// The fallback: checks each pending pidfd every 5 ms.
fn wait_exits_polling(live: &[&Handle], until: Instant) -> Vec<(usize, Instant)> {
    let mut exited: Vec<Option<Instant>> = vec![None; live.len()];
    let mut pending: Vec<usize> = (0..live.len()).collect();
    while !pending.is_empty() {
        pending.retain(|&i| {
            if live[i].has_exited() {
                exited[i] = Some(Instant::now());
                false
            } else {
                true
            }
        });
        let now = Instant::now();
        if pending.is_empty() || now >= until {
            break;
        }
        std::thread::sleep(Duration::from_millis(5).min(until - now));
    }
    exited
        .into_iter()
        .enumerate()
        .filter_map(|(i, t)| Some((i, t?)))
        .collect()
}

/// Raises the soft limit on open files to the hard limit: a sweep holds one pidfd per
/// process it kills, and 1,000 leaked processes are a real case.
pub fn raise_fd_limit() {
    use rustix::process::{getrlimit, setrlimit, Resource};
    let limit = getrlimit(Resource::Nofile);
    if limit.current < limit.maximum {
        let _ = setrlimit(
            Resource::Nofile,
            rustix::process::Rlimit {
                current: limit.maximum,
                maximum: limit.maximum,
            },
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kill's own identity check: gone only on proof. Our own process, under a fake
    /// `/proc` whose `stat` is missing (gone), names another start time (gone), or cannot be
    /// read (a directory here; too many open files in life: not signalled, and not gone).
    #[test]
    fn an_unreadable_identity_is_a_failure_not_death() {
        let tmp = tempfile::tempdir().unwrap();
        let me = std::process::id() as i32;
        let id = ProcessId {
            pid: me,
            start_ticks: 7,
        };
        assert!(matches!(open(tmp.path(), id), Err(SignalResult::Gone)));
        let dir = tmp.path().join(me.to_string());
        std::fs::create_dir(&dir).unwrap();
        std::fs::create_dir(dir.join("stat")).unwrap();
        assert!(matches!(open(tmp.path(), id), Err(SignalResult::Failed(_))));
        std::fs::remove_dir(dir.join("stat")).unwrap();
        let stat = format!("{me} (t) S 1 {me} {me} 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 8 1 1\n");
        std::fs::write(dir.join("stat"), stat).unwrap();
        assert!(matches!(open(tmp.path(), id), Err(SignalResult::Gone)));
    }
}
