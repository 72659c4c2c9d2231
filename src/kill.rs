//! The kill: one round of stop, terminate, wait, kill over a set of processes, all of them at
//! once so the whole round costs one grace period however many groups there are.
//!
//! Every process is signalled through its own pidfd, pinned to its identity: opened by the
//! reader while it read the process (see [`crate::platform::read_snapshot_pinned`]), or
//! opened here and checked against its start time (see [`crate::platform::open`]).
//! Processes are handled group by group (process group, then session, in that order). A
//! group gets one signal for all its members only when its whole *session* is verified:
//! every process of the session in the reading this round comes from (which leaves out the
//! dead among the sweep's earlier targets) is a live target of the round holding a pinned
//! pidfd, the session's id is visible in our pid namespace, and
//! the reading is complete (see the sweep's `whole_groups`). The group is addressed through
//! its leader's pidfd (`PIDFD_SIGNAL_PROCESS_GROUP`), never by number (see
//! [`Target::whole_group`]). Any other group may also hold processes that are not ours (the
//! shell that ran `sleep &` is in the sleep's group), so its members are signalled one by
//! one.
//!
//! What the group signal can reach beyond the verified members: a process that entered the
//! group between the reading and the signal. A process can join a group only from inside
//! the group's session, and enter a session only by being forked in it, so that is a child
//! a member forked meanwhile: the job's by descent (it dies unlisted, where a signal per
//! process would have left it to the next round's reading and its own entry). A member
//! that left the group meanwhile (`setsid`) gets its own SIGKILL after a moment.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::model::{Process, ProcessId};
use crate::platform::{self, GroupSignal, Handle, Sig, SignalResult};

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
    let mut done = vec![false; handles.len()];
    loop {
        (on_wait.0)(pending.len(), since.elapsed());
        let step_end = (Instant::now() + PROGRESS_STEP).min(until);
        let batch: Vec<&Handle> = pending.iter().map(|&i| handles[i]).collect();
        for (k, when) in platform::wait_exits(&batch, step_end) {
            done[pending[k]] = true;
            exited.push((pending[k], when));
        }
        pending.retain(|&i| !done[i]);
        if pending.is_empty() || Instant::now() >= until {
            break;
        }
    }
    (on_wait.0)(0, since.elapsed());
    exited
}

/// How long to wait for a SIGKILLed process to disappear before calling it a survivor.
const AFTER_KILL: Duration = Duration::from_secs(2);
/// How long a group's SIGKILL is given before a member still alive gets its own (it left
/// the group, or its leader moved, after the reading).
const GROUP_SETTLE: Duration = Duration::from_millis(100);
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

/// One process to signal in a round.
#[derive(Debug)]
pub struct Target {
    pub id: ProcessId,
    /// Its process group.
    pub pgid: i32,
    /// A pidfd the reader pinned to `id` (see [`platform::read_snapshot_pinned`]); `None`:
    /// the round opens one and checks it against the start time.
    pub handle: Option<Handle>,
    /// Whether its group may take one signal for all its members: in the reading this
    /// round's targets come from, every live member of the group is a target of this round,
    /// with a pinned pidfd and an owner we may signal. The round adds its own conditions
    /// (see [`whole_groups`]).
    pub whole_group: bool,
}

/// Runs one round over `targets` (already in [`group_order`]): SIGSTOP each (no more forks),
/// SIGTERM, SIGCONT; wait up to the grace period for all of them at once; SIGKILL the
/// survivors. With no grace period, SIGKILL at once: one signal per whole group (see
/// [`Target::whole_group`]), one per process otherwise. Returns each target's fate, in the
/// order given.
pub fn terminate(
    proc_root: &Path,
    targets: Vec<Target>,
    opts: &RoundOptions,
) -> Vec<(ProcessId, Fate)> {
    platform::raise_fd_limit();
    let start = Instant::now();
    let ids: Vec<ProcessId> = targets.iter().map(|t| t.id).collect();
    let pgids: Vec<i32> = targets.iter().map(|t| t.pgid).collect();
    let mut fates: Vec<Option<Fate>> = vec![None; targets.len()];
    let mut handles: Vec<(usize, Handle)> = Vec::with_capacity(targets.len());
    // Per target: whether it may be signalled with its whole group (marked so by the sweep,
    // and its pidfd pinned by the reader).
    let mut whole: Vec<bool> = vec![false; targets.len()];
    for (i, t) in targets.into_iter().enumerate() {
        if Instant::now() >= opts.deadline {
            fates[i] = Some(Fate::DeadlinePassed);
            continue;
        }
        let pinned = t.handle.is_some();
        let handle = match t.handle {
            Some(h) => Ok(h),
            None => platform::open(proc_root, t.id),
        };
        match handle {
            Ok(h) => {
                handles.push((i, h));
                whole[i] = t.whole_group && pinned;
            }
            Err(r) => fates[i] = Some(result_fate(r)),
        }
    }
    if opts.grace.is_zero() {
        // No grace: nothing to stop or terminate first, SIGKILL is the one signal.
        let kill_sent = Instant::now();
        let groups = whole_groups(&ids, &pgids, &whole, &handles);
        let by_group = kill_all(&handles, &groups, &mut fates);
        let kill_time = kill_sent.elapsed().as_millis() as u64;
        let mut pending: Vec<&(usize, Handle)> = handles
            .iter()
            .filter(|(i, _)| fates[*i].is_none())
            .collect();
        if by_group.iter().any(|&g| g) {
            // A member that left its group (setsid) or a leader that moved to another one
            // between the reading and the signal got nothing from the group's signal: what
            // has not exited after a moment gets its own SIGKILL through its pidfd.
            let settle = (Instant::now() + GROUP_SETTLE).min(opts.deadline);
            let refs: Vec<&Handle> = pending.iter().map(|(_, h)| h).collect();
            let mut exited = vec![false; pending.len()];
            for (k, _) in platform::wait_exits(&refs, settle) {
                exited[k] = true;
            }
            for ((i, h), gone) in pending.iter().map(|p| (p.0, &p.1)).zip(&exited) {
                if *gone {
                    fates[i] = Some(Fate::Killed {
                        after_ms: kill_time,
                    });
                } else if by_group[i] {
                    match h.signal(Sig::Kill) {
                        SignalResult::Sent | SignalResult::Gone => {}
                        other => fates[i] = Some(result_fate(other)),
                    }
                }
            }
            pending.retain(|(i, _)| fates[*i].is_none());
        }
        reap_after_kill(proc_root, &pending, kill_time, opts, &mut fates);
        return collect(&ids, fates);
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
    let mut exited = vec![false; live.len()];
    for (k, when) in wait_exits(
        &live.iter().map(|(_, h)| h).collect::<Vec<_>>(),
        grace_end,
        term_sent,
        opts.on_wait.as_ref(),
    ) {
        exited[k] = true;
        fates[live[k].0] = Some(Fate::Terminated {
            after_ms: when.saturating_duration_since(term_sent).as_millis() as u64,
        });
    }
    // Anything still alive gets SIGKILL; nothing ignores or blocks it.
    let survivors: Vec<&(usize, Handle)> = live
        .iter()
        .zip(&exited)
        .filter(|(_, &gone)| !gone)
        .map(|(h, _)| *h)
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
    reap_after_kill(proc_root, &pending, kill_time, opts, &mut fates);
    collect(&ids, fates)
}

/// The groups that take one SIGKILL for all their members, each as the indices (into
/// `handles`) of its members, its leader's first: those whose every target (by `pgids`,
/// in [`group_order`], so a group is one run) may be signalled whole (`whole`: marked by
/// the sweep, its pidfd pinned, so none failed to open or was cut by the deadline) and
/// whose leader (pid = pgid) is among them, since the group is addressed through the
/// leader's pidfd.
fn whole_groups(
    ids: &[ProcessId],
    pgids: &[i32],
    whole: &[bool],
    handles: &[(usize, Handle)],
) -> Vec<Vec<usize>> {
    let mut handle_of: Vec<Option<usize>> = vec![None; ids.len()];
    for (k, (i, _)) in handles.iter().enumerate() {
        handle_of[*i] = Some(k);
    }
    let mut out = Vec::new();
    let mut at = 0;
    while at < ids.len() {
        let pgid = pgids[at];
        let mut end = at;
        while end + 1 < ids.len() && pgids[end + 1] == pgid {
            end += 1;
        }
        let run = at..=end;
        at = end + 1;
        if pgid <= 1 || !whole[run.clone()].iter().all(|&w| w) {
            continue;
        }
        let Some(leader) = run.clone().find(|&i| ids[i].pid == pgid) else {
            continue;
        };
        let members: Option<Vec<usize>> = std::iter::once(leader)
            .chain(run.filter(|&i| i != leader))
            .map(|i| handle_of[i])
            .collect();
        if let Some(members) = members {
            out.push(members);
        }
    }
    out
}

/// SIGKILL to every target that has a handle: one signal through the leader's pidfd for
/// each whole group (see [`whole_groups`]), one per process for the rest, and for a whole
/// group whose signal the kernel could not send (before Linux 6.9, or the leader gone).
/// Returns, per target (by its index in the round), whether only its group's signal was
/// sent for it.
fn kill_all(
    handles: &[(usize, Handle)],
    groups: &[Vec<usize>],
    fates: &mut [Option<Fate>],
) -> Vec<bool> {
    let mut by_group = vec![false; fates.len()];
    let mut done = vec![false; handles.len()];
    let mut group_signals = true;
    for members in groups {
        if !group_signals {
            break;
        }
        match handles[members[0]].1.signal_group(Sig::Kill) {
            GroupSignal::Sent => {
                for &k in members {
                    done[k] = true;
                    by_group[handles[k].0] = true;
                }
            }
            // An older kernel: every group is signalled member by member.
            GroupSignal::Unsupported => group_signals = false,
            // No one left in the group, or a refusal: each member's own signal tells.
            GroupSignal::Other(_) => {}
        }
    }
    for ((i, h), done) in handles.iter().zip(done) {
        if done || fates[*i].is_some() {
            continue;
        }
        match h.signal(Sig::Kill) {
            SignalResult::Sent => {}
            // Gone before its SIGKILL: it exited on its own (`AlreadyGone`).
            other => fates[*i] = Some(result_fate(other)),
        }
    }
    by_group
}

/// Waits for the SIGKILLed `pending` to exit (at most [`AFTER_KILL`], and not past the
/// deadline by more than [`AFTER_KILL_PAST_DEADLINE`]) and gives each its fate: `Killed`,
/// or what its state says when it is still there.
fn reap_after_kill(
    proc_root: &Path,
    pending: &[&(usize, Handle)],
    kill_time: u64,
    opts: &RoundOptions,
    fates: &mut [Option<Fate>],
) {
    let until = (Instant::now() + AFTER_KILL)
        .min(opts.deadline.max(Instant::now() + AFTER_KILL_PAST_DEADLINE));
    let mut died = vec![false; pending.len()];
    for (k, _) in platform::wait_exits(&pending.iter().map(|(_, h)| h).collect::<Vec<_>>(), until) {
        died[k] = true;
    }
    for ((i, h), died) in pending.iter().map(|p| (p.0, &p.1)).zip(died) {
        fates[i] = Some(if died {
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
}

/// Each target's fate, in the order given; no fate means it was never signalled because it
/// was gone.
fn collect(ids: &[ProcessId], fates: Vec<Option<Fate>>) -> Vec<(ProcessId, Fate)> {
    ids.iter()
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
