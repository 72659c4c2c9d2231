//! The kill: one round of stop, terminate, wait, kill over a set of processes, all of them at
//! once so the whole round costs one grace period however many groups there are.
//!
//! Every process is signalled through its own pidfd, opened and checked against its start
//! time first (see [`crate::platform::open`]). Processes are handled group by group (process
//! group, then session, in that order) but never through `kill(-pgid)`: a group may also
//! hold processes that are not ours (the shell that ran `sleep &` is in the sleep's group),
//! and a group signal would reach them.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::model::{Process, ProcessId};
use crate::platform::{self, Handle, Sig, SignalResult};

/// How a process ended, as the report tells it.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "fate")]
pub enum Fate {
    /// Exited after SIGTERM, within the grace period.
    Terminated { after_ms: u64 },
    /// Still alive when the grace period ended; SIGKILL ended it.
    Killed { after_ms: u64 },
    /// Gone before we signalled it.
    AlreadyGone,
    /// EPERM: another user's process.
    NotPermitted,
    /// Still alive after SIGKILL, in uninterruptible sleep (D): it dies when its I/O ends.
    Unkillable { state: char },
    /// Still alive after SIGKILL for another reason.
    Survived { state: char },
    /// A signal failed with this errno.
    Failed { errno: i32 },
    /// `--dry-run`: would have been killed.
    WouldKill,
    /// The deadline passed before we got to it.
    DeadlinePassed,
}

impl Fate {
    #[cfg(test)]
    /// Whether the process is (or is presumed) dead afterwards.
    pub fn is_dead(&self) -> bool {
        matches!(
            self,
            Fate::Terminated { .. } | Fate::Killed { .. } | Fate::AlreadyGone
        )
    }

    pub fn describe(&self) -> String {
        match self {
            Fate::Terminated { after_ms } => format!("TERM, exited in {}", ms(*after_ms)),
            Fate::Killed { after_ms } => format!("KILL after {} grace", ms(*after_ms)),
            Fate::AlreadyGone => "already gone".into(),
            Fate::NotPermitted => "not ours to kill (EPERM)".into(),
            Fate::Unkillable { state } => format!("unkillable (state {state})"),
            Fate::Survived { state } => format!("survived SIGKILL (state {state})"),
            Fate::Failed { errno } => format!(
                "signal failed: {}",
                std::io::Error::from_raw_os_error(*errno)
            ),
            Fate::WouldKill => "would kill (dry run)".into(),
            Fate::DeadlinePassed => "not signalled: deadline passed".into(),
        }
    }
}

fn ms(v: u64) -> String {
    if v < 1000 {
        format!("{v} ms")
    } else {
        format!("{:.1} s", v as f64 / 1000.0)
    }
}

/// What one round needs to know.
#[derive(Debug, Clone)]
pub struct RoundOptions {
    pub grace: Duration,
    /// After this instant nothing new is started, and waits end.
    pub deadline: Instant,
    /// Told how the grace-period wait is going (a progress line on a terminal).
    pub on_wait: Option<OnWait>,
}

/// Called during the grace-period wait, at most every [`PROGRESS_STEP`], with the number of
/// processes still alive and the time since SIGTERM; and once more with 0 when the wait ends.
#[derive(Clone)]
pub struct OnWait(pub Arc<dyn Fn(usize, Duration) + Send + Sync>);

impl std::fmt::Debug for OnWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnWait(..)")
    }
}

/// How often [`OnWait`] hears from a wait.
pub const PROGRESS_STEP: Duration = Duration::from_millis(100);

/// [`platform::wait_exits`] in steps of [`PROGRESS_STEP`], telling `on_wait` after each;
/// the plain wait when nobody listens.
fn wait_exits(
    handles: &[&Handle],
    until: Instant,
    since: Instant,
    on_wait: Option<&OnWait>,
) -> Vec<(usize, Instant)> {
    let Some(on_wait) = on_wait else {
        return platform::wait_exits(handles, until);
    };
    let mut exited: Vec<(usize, Instant)> = Vec::new();
    let mut pending: Vec<usize> = (0..handles.len()).collect();
    loop {
        (on_wait.0)(pending.len(), since.elapsed());
        let step_end = (Instant::now() + PROGRESS_STEP).min(until);
        let batch: Vec<&Handle> = pending.iter().map(|&i| handles[i]).collect();
        let done: Vec<(usize, Instant)> = platform::wait_exits(&batch, step_end)
            .into_iter()
            .map(|(k, when)| (pending[k], when))
            .collect();
        pending.retain(|i| !done.iter().any(|(d, _)| d == i));
        exited.extend(done);
        if pending.is_empty() || Instant::now() >= until {
            break;
        }
    }
    (on_wait.0)(0, since.elapsed());
    exited
}

/// How long to wait for a SIGKILLed process to disappear before calling it a survivor.
const AFTER_KILL: Duration = Duration::from_secs(2);
/// The wait after SIGKILL ends at the deadline, but lasts at least this long: the kernel
/// needs a moment to run the exits of what was just killed, and without it every process
/// killed at the deadline would be reported as a survivor. A process in D state or one
/// stopped under a tracer is waited for no longer than this past the deadline.
const AFTER_KILL_PAST_DEADLINE: Duration = Duration::from_millis(200);

/// Orders targets group by group: by session, then process group, group leaders first, so
/// a group's leader is stopped before its members and cannot fork replacements.
pub fn group_order(targets: &mut [&Process]) {
    targets.sort_by_key(|p| (p.sid, p.pgid, p.id.pid != p.pgid, p.id.pid));
}

/// Runs one round over `targets` (already in [`group_order`]): SIGSTOP each (no more forks),
/// SIGTERM, SIGCONT; wait up to the grace period for all of them at once; SIGKILL the
/// survivors. Returns each target's fate, in the order given.
pub fn terminate(
    proc_root: &Path,
    targets: &[ProcessId],
    opts: &RoundOptions,
) -> Vec<(ProcessId, Fate)> {
    platform::raise_fd_limit();
    let start = Instant::now();
    let mut fates: Vec<Option<Fate>> = vec![None; targets.len()];
    let mut handles: Vec<(usize, Handle)> = Vec::with_capacity(targets.len());
    for (i, &id) in targets.iter().enumerate() {
        if Instant::now() >= opts.deadline {
            fates[i] = Some(Fate::DeadlinePassed);
            continue;
        }
        match platform::open(proc_root, id) {
            Ok(h) => handles.push((i, h)),
            Err(r) => fates[i] = Some(result_fate(r)),
        }
    }
    // Stop everything first, then terminate, then continue: a stopped group cannot fork
    // or respawn while we work through it, and TERM is delivered on CONT.
    for sig in [Sig::Stop, Sig::Term, Sig::Cont] {
        for (i, h) in &handles {
            if fates[*i].is_some() {
                continue;
            }
            match h.signal(sig) {
                SignalResult::Sent => {}
                // A SIGTERM with its default action ends even a stopped process, so a
                // process can be gone by the time SIGCONT comes: our TERM ended it, and
                // the wait below sees its exit at once.
                SignalResult::Gone if sig == Sig::Cont => {}
                other => fates[*i] = Some(result_fate(other)),
            }
        }
    }
    let live: Vec<&(usize, Handle)> = handles
        .iter()
        .filter(|(i, _)| fates[*i].is_none())
        .collect();
    let grace_end = (start + opts.grace).min(opts.deadline);
    let term_sent = Instant::now();
    let exited: Vec<usize> = wait_exits(
        &live.iter().map(|(_, h)| h).collect::<Vec<_>>(),
        grace_end,
        term_sent,
        opts.on_wait.as_ref(),
    )
    .into_iter()
    .map(|(k, when)| {
        fates[live[k].0] = Some(Fate::Terminated {
            after_ms: when.saturating_duration_since(term_sent).as_millis() as u64,
        });
        k
    })
    .collect();
    // Anything still alive gets SIGKILL; nothing ignores or blocks it.
    let survivors: Vec<&(usize, Handle)> = live
        .iter()
        .enumerate()
        .filter(|(k, _)| !exited.contains(k))
        .map(|(_, h)| *h)
        .collect();
    let kill_time = term_sent.elapsed().as_millis() as u64;
    for (i, h) in &survivors {
        match h.signal(Sig::Kill) {
            SignalResult::Sent => {}
            SignalResult::Gone => {
                fates[*i] = Some(Fate::Terminated {
                    after_ms: kill_time,
                })
            }
            other => fates[*i] = Some(result_fate(other)),
        }
    }
    let pending: Vec<&(usize, Handle)> = survivors
        .into_iter()
        .filter(|(i, _)| fates[*i].is_none())
        .collect();
    let until = (Instant::now() + AFTER_KILL)
        .min(opts.deadline.max(Instant::now() + AFTER_KILL_PAST_DEADLINE));
    let died: Vec<usize> =
        platform::wait_exits(&pending.iter().map(|(_, h)| h).collect::<Vec<_>>(), until)
            .into_iter()
            .map(|(k, _)| k)
            .collect();
    for (k, (i, h)) in pending.iter().enumerate() {
        fates[*i] = Some(if died.contains(&k) {
            Fate::Killed {
                after_ms: kill_time,
            }
        } else {
            let state = platform::read_one(proc_root, h.id.pid)
                .filter(|p| p.id == h.id)
                .map_or('?', |p| p.state);
            if state == 'D' {
                Fate::Unkillable { state }
            } else {
                Fate::Survived { state }
            }
        });
    }
    targets
        .iter()
        .zip(fates)
        .map(|(&id, f)| (id, f.unwrap_or(Fate::AlreadyGone)))
        .collect()
}

fn result_fate(r: SignalResult) -> Fate {
    match r {
        SignalResult::Sent | SignalResult::Gone => Fate::AlreadyGone,
        SignalResult::NotPermitted => Fate::NotPermitted,
        SignalResult::Failed(errno) => Fate::Failed { errno },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::proc_at;

    #[test]
    fn group_order_puts_leaders_first() {
        let mut a = proc_at(30, 1, 0);
        a.pgid = 20;
        a.sid = 5;
        let mut b = proc_at(20, 1, 0);
        b.pgid = 20;
        b.sid = 5;
        let mut c = proc_at(10, 1, 0);
        c.pgid = 40;
        c.sid = 5;
        let mut d = proc_at(50, 1, 0);
        d.pgid = 50;
        d.sid = 1;
        let mut v = vec![&a, &b, &c, &d];
        group_order(&mut v);
        let pids: Vec<i32> = v.iter().map(|p| p.id.pid).collect();
        assert_eq!(pids, vec![50, 20, 30, 10]);
    }

    #[test]
    fn fates_read_well() {
        assert_eq!(
            Fate::Terminated { after_ms: 12 }.describe(),
            "TERM, exited in 12 ms"
        );
        assert_eq!(
            Fate::Killed { after_ms: 5000 }.describe(),
            "KILL after 5.0 s grace"
        );
        assert!(Fate::AlreadyGone.is_dead());
        assert!(!Fate::NotPermitted.is_dead());
    }
}
