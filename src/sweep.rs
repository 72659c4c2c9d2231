//! The sweep: read, classify, kill, and repeat until nothing new appears or the deadline
//! passes; then check that the ports the leaked processes held are free again.
//!
//! This is the one place that loops over the OS: `classify` decides on data, `kill` acts on
//! one round, and this module ties rounds together.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::classify::{self, Class, Context, Decision, Flags, Hint, Plan, Policy, Rule};
use crate::diff;
use crate::kill::{self, Fate, RoundOptions};
use crate::model::{Listener, Process, ProcessId, Snapshot};
use crate::platform::{self, Pins, ReadError, ReadOptions};

#[derive(Debug, Clone)]
pub struct SweepOptions {
    pub grace: Duration,
    pub deadline: Duration,
    pub dry_run: bool,
    pub proc_root: PathBuf,
    /// Progress of the grace-period waits (see [`kill::OnWait`]).
    pub on_wait: Option<kill::OnWait>,
    /// The guard's journal, digested: the step and test markers a process's own
    /// environment lacks.
    pub lineage: Option<std::sync::Arc<crate::guard::lineage::Lineage>>,
}

/// One appeared process, what we decided and what happened to it.
#[derive(Debug, Clone)]
pub struct Entry {
    pub process: Process,
    pub class: Class,
    pub evidence: Flags<Rule>,
    /// The marker variable behind marker evidence.
    pub marker: Option<&'static str>,
    /// Hints for an unattributed process.
    pub hints: Flags<Hint>,
    /// `None` when we did not signal it (protected, ignored, unattributed).
    pub fate: Option<Fate>,
    /// The round (1-based) in which it was found.
    pub round: u32,
    /// Labels of the sockets it listened on when found.
    pub listening: Vec<String>,
}

/// A listening socket held by a process we killed, checked afterwards.
#[derive(Debug, Clone)]
pub struct PortCheck {
    pub listener: Listener,
    /// The processes (of ours) that held it.
    pub held_by: Vec<ProcessId>,
    pub outcome: PortOutcome,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortOutcome {
    Freed,
    /// The same socket is still open, held by these processes (not killed: not ours, or
    /// they survived).
    StillHeld(Vec<ProcessId>),
    /// The socket is gone but something else listens on the same address now.
    Reused(Vec<ProcessId>),
    /// Not checked (dry run).
    NotChecked,
}

#[derive(Debug, Clone)]
pub struct SweepOutcome {
    pub baseline_taken_at_unix_ms: u64,
    /// The snapshot of the first round (with host facts): the report's picture of the leak.
    /// Its processes that became entries are in `entries` (moved, not copied: one copy of
    /// the process table); `processes` holds the rest of that reading.
    pub first: Snapshot,
    pub entries: Vec<Entry>,
    pub ports: Vec<PortCheck>,
    pub zombies: usize,
    pub rounds: u32,
    pub elapsed: Duration,
    pub deadline_hit: bool,
    pub dry_run: bool,
    /// Records of the guard's journal that contradict the live process tree, described:
    /// not used (see [`crate::guard::lineage::Lineage::verified`]).
    pub distrusted: Vec<String>,
}

impl SweepOutcome {
    pub fn failing_leaks(&self) -> impl Iterator<Item = &Entry> {
        self.entries.iter().filter(|e| e.class.is_failing_leak())
    }
    pub fn killed(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e.fate, Some(Fate::Terminated { .. } | Fate::Killed { .. })))
            .count()
    }
}

/// Sweeps everything that appeared since `baseline`.
pub fn sweep(
    baseline: &Snapshot,
    ctx: &Context,
    policy: &Policy,
    opts: &SweepOptions,
) -> Result<SweepOutcome, ReadError> {
    let started = Instant::now();
    let deadline = started + opts.deadline;
    if !opts.dry_run {
        platform::check_proc_is_ours(&opts.proc_root)?;
    }
    let detail = platform::Detail::new_since(baseline);
    // Pidfds pinned by the reader to the processes it read in detail, so that the kill
    // needs no second identity check (none in a dry run: nothing is signalled).
    let pin = !opts.dry_run;
    let read_raw = |host_facts: bool, pin: bool, forget_dead| {
        let read = ReadOptions {
            proc_root: opts.proc_root.clone(),
            sockets: true,
            host_facts,
            detail: detail.clone(),
            forget_dead,
        };
        if pin {
            platform::read_snapshot_pinned(&read)
        } else {
            platform::read_snapshot(&read).map(|s| (s, Pins::new()))
        }
    };
    let (mut now, mut pins) = read_raw(true, pin, None)?;
    // The guard's journal is a file: only what agrees with the live process tree is used
    // (see [`crate::guard::lineage::Lineage::verified`]); what is not is reported.
    let mut distrusted = Vec::new();
    let mut verified_ctx;
    let mut lineage = opts.lineage.clone();
    let ctx = match &opts.lineage {
        Some(journal) => {
            let l = journal.verified(&now, &ctx.markers);
            distrusted = l.distrust_notes();
            verified_ctx = ctx.clone();
            verified_ctx.born_into_job = Some(std::sync::Arc::new(l.born_into_job()));
            lineage = Some(std::sync::Arc::new(l));
            &verified_ctx
        }
        None => ctx,
    };
    let read = |host_facts: bool, pin: bool, forget_dead| {
        let (mut snap, pins) = read_raw(host_facts, pin, forget_dead)?;
        // Step and test markers a process's own environment lacks, from the guard.
        if let Some(lineage) = &lineage {
            lineage.fill_markers(&mut snap);
        }
        Ok::<_, ReadError>((snap, pins))
    };
    if let Some(lineage) = &lineage {
        lineage.fill_markers(&mut now);
    }
    // One copy of the process table: the processes of a reading move into the entries
    // they become; `first` keeps the first reading's header and the processes of it that
    // did not become entries.
    let mut first = Snapshot {
        schema_version: now.schema_version,
        tool_version: now.tool_version.clone(),
        taken_at_unix_ms: now.taken_at_unix_ms,
        taken_at_boot_ticks: now.taken_at_boot_ticks,
        duration_us: now.duration_us,
        machine: now.machine.clone(),
        processes: Vec::new(),
        listeners: now.listeners.clone(),
        unreadable: now.unreadable.clone(),
        taken_by: now.taken_by,
        job: now.job.clone(),
        trust_notes: now.trust_notes.clone(),
    };
    let mut entries: Vec<Entry> = Vec::new();
    let mut seen: HashSet<ProcessId> = HashSet::new();
    // Shared with each re-read, which holds it only while it reads: extended in place.
    let mut signalled: std::sync::Arc<HashSet<ProcessId>> = Default::default();
    let mut held: HashMap<u64, (Listener, Vec<ProcessId>)> = HashMap::new();
    let mut rounds = 0;
    let mut zombies = 0;
    loop {
        rounds += 1;
        let appeared = diff::appeared(baseline, &now);
        let plan: Plan = classify::classify(&now, &appeared, ctx, policy);
        drop(appeared);
        if rounds == 1 {
            // Only the job's zombies: exited children of the job's processes, of its root
            // or of ours (under `run` we adopt its orphans). Other sessions' unreaped
            // children are none of our business.
            let parents: HashSet<i32> = plan
                .decisions
                .iter()
                .filter(|d| d.class.is_failing_leak() || matches!(d.class, Class::Allowed { .. }))
                .map(|d| d.id.pid)
                .chain(ctx.me.map(|m| m.pid))
                .chain(ctx.roots.iter().map(|r| r.pid))
                .collect();
            zombies = diff::appeared_zombies(baseline, &now)
                .iter()
                .filter(|z| parents.contains(&z.ppid))
                .count();
        }
        // The listeners of each process, from one pass over the list.
        let mut listening_of: HashMap<ProcessId, Vec<usize>> = HashMap::new();
        for (at, l) in now.listeners.iter().enumerate() {
            for owner in &l.owners {
                listening_of.entry(*owner).or_default().push(at);
            }
        }
        let mut fresh: Vec<Decision> = plan.decisions;
        fresh.retain(|d| !seen.contains(&d.id));
        seen.extend(fresh.iter().map(|d| d.id));
        let target_ids: HashSet<ProcessId> = fresh
            .iter()
            .filter(|d| d.class.is_target(policy))
            .map(|d| d.id)
            .collect();
        let whole = whole_groups(&now, &target_ids, &pins);
        drop(target_ids);
        // Each process of the reading moves into its entry (see `pair_up`).
        let new_from = entries.len();
        let mut rest = Vec::new();
        entries.reserve_exact(fresh.len());
        pair_up(std::mem::take(&mut now.processes), fresh, |p, d| {
            let Some(d) = d else {
                if rounds == 1 {
                    rest.push(p);
                }
                return;
            };
            let mine = listening_of.get(&d.id).map_or(&[][..], Vec::as_slice);
            let listening: Vec<String> = mine.iter().map(|&l| now.listeners[l].label()).collect();
            entries.push(Entry {
                process: p,
                class: d.class,
                evidence: d.evidence,
                marker: d.marker,
                hints: d.hints,
                fate: None,
                round: rounds,
                listening,
            });
        });
        entries[new_from..].reverse();
        for e in &entries[new_from..] {
            tracing::debug!(
                pid = e.process.id.pid,
                start_ticks = e.process.id.start_ticks,
                class = e.class.name(),
                evidence = ?e.evidence,
                marker = e.marker,
                target = e.class.is_target(policy),
                command = %redacted_command(&e.process),
                "classified"
            );
        }
        let targets: Vec<usize> = (new_from..entries.len())
            .filter(|&e| entries[e].class.is_target(policy))
            .collect();
        for &e in &targets {
            let id = entries[e].process.id;
            for &l in listening_of.get(&id).map_or(&[][..], Vec::as_slice) {
                let l = &now.listeners[l];
                held.entry(l.inode)
                    .or_insert_with(|| (l.clone(), Vec::new()))
                    .1
                    .push(id);
            }
        }
        if rounds == 1 {
            rest.reverse();
            rest.shrink_to_fit();
            first.processes = rest;
        }
        if targets.is_empty() {
            break;
        }
        let mut ordered: Vec<&Process> = targets.iter().map(|&e| &entries[e].process).collect();
        kill::group_order(&mut ordered);
        let round: Vec<kill::Target> = ordered
            .iter()
            .map(|p| kill::Target {
                id: p.id,
                pgid: p.pgid,
                handle: pins.remove(&p.id),
                whole_group: whole.contains(&(p.sid, p.pgid)),
            })
            .collect();
        // Pidfds of processes that are not targets are not needed.
        pins.clear();
        let fates: HashMap<ProcessId, Fate> = if opts.dry_run {
            round.iter().map(|t| (t.id, Fate::WouldKill)).collect()
        } else {
            kill::terminate(
                &opts.proc_root,
                round,
                &RoundOptions {
                    grace: opts.grace,
                    deadline,
                    on_wait: opts.on_wait.clone(),
                },
            )
            .into_iter()
            .collect()
        };
        for &e in &targets {
            let e = &mut entries[e];
            if let Some(f) = fates.get(&e.process.id) {
                e.fate = Some(*f);
            }
        }
        if opts.dry_run || Instant::now() >= deadline {
            break;
        }
        // Children born while we worked, respawned replacements: look again. The targets
        // signalled so far are ours: once dead, the reading need not list them.
        std::sync::Arc::make_mut(&mut signalled)
            .extend(targets.iter().map(|&e| entries[e].process.id));
        (now, pins) = read(false, pin, Some(std::sync::Arc::clone(&signalled)))?;
    }
    let deadline_hit = Instant::now() >= deadline;
    let ports = if opts.dry_run {
        held.into_values()
            .map(|(listener, held_by)| PortCheck {
                listener,
                held_by,
                outcome: PortOutcome::NotChecked,
            })
            .collect()
    } else {
        // Most ports are simply free after the kill: the socket list alone shows it. Only
        // when one is still listed are the owners (a walk over every process) worth reading.
        let (after, _) = platform::read_listeners_only(&opts.proc_root);
        let still_listed = held.values().any(|(l, _)| {
            after
                .iter()
                .any(|a| a.inode == l.inode || same_address(a, l))
        });
        if still_listed {
            check_ports(held, &read(false, false, None)?.0.listeners)
        } else {
            check_ports(held, &after)
        }
    };
    Ok(SweepOutcome {
        baseline_taken_at_unix_ms: baseline.taken_at_unix_ms,
        first,
        entries,
        ports,
        zombies,
        rounds,
        elapsed: started.elapsed(),
        deadline_hit,
        dry_run: opts.dry_run,
        distrusted,
    })
}

/// Hands each process of a reading to `each` with its decision, if it has one, from the
/// highest pid down. Both lists are ordered by identity (pid, then start time): a reading
/// lists pids in order and the plan follows it; a list that is not is sorted first, so a
/// decision is never paired with another process. Walking from the end lets the table
/// shrink as the caller's entries grow, so the two never take their full size at once
/// (5,000 processes: 1.0 MB beside 1.5). The decisions are consumed the same way.
fn pair_up(
    mut table: Vec<Process>,
    mut fresh: Vec<Decision>,
    mut each: impl FnMut(Process, Option<Decision>),
) {
    // `ProcessId` orders by pid, then start time.
    if !table.is_sorted_by_key(|p| p.id) {
        table.sort_by_key(|p| p.id);
    }
    if !fresh.is_sorted_by_key(|d| d.id) {
        fresh.sort_by_key(|d| d.id);
    }
    while let Some(p) = table.pop() {
        if table.len() % 512 == 0 {
            table.shrink_to_fit();
            fresh.shrink_to_fit();
        }
        // Decisions for processes gone from the reading have nothing to pair with.
        while fresh.last().is_some_and(|d| d.id > p.id) {
            fresh.pop();
        }
        let d = if fresh.last().is_some_and(|d| d.id == p.id) {
            fresh.pop()
        } else {
            None
        };
        each(p, d);
    }
}

/// The process groups, as (session, group), of this round's targets that may take one
/// signal for all their members (see [`kill::Target::whole_group`]). The kernel signals whoever is in the group
/// when the signal is sent, so the proof covers the group's whole *session*: a process can
/// join a group only from inside its session, and enter a session only by being forked in
/// it. So in `now`, every process of the session is a live target of the round (an
/// unreaped zombie in it is none, and blocks the group signal, except the sweep's own
/// targets of earlier rounds, which a re-read leaves out once dead: a zombie cannot fork or
/// join a group; a process whose main thread exited while others run is alive, see
/// [`crate::model::is_dead`], and must be a target),
/// holds a pidfd the reader pinned to it, and is one we may signal (we are root, or it runs
/// as our uid); the session's id is a pid of our namespace (0 means its leader, and so
/// maybe members, are outside what `/proc` shows); and the reading is complete (a process
/// that could not be read may be the one outsider). Anything less: one signal per process.
fn whole_groups(now: &Snapshot, targets: &HashSet<ProcessId>, pins: &Pins) -> HashSet<(i32, i32)> {
    if !platform::reading_complete(now) {
        return HashSet::new();
    }
    let may_signal = |p: &Process| now.machine.is_root || p.uid == Some(now.machine.uid);
    let mut sessions: HashMap<i32, bool> = HashMap::new();
    for p in &now.processes {
        if targets.contains(&p.id) {
            sessions.entry(p.sid).or_insert(p.sid > 0);
        }
    }
    for p in &now.processes {
        if let Some(whole) = sessions.get_mut(&p.sid) {
            *whole &= !p.is_zombie()
                && !p.kernel_thread
                && targets.contains(&p.id)
                && pins.contains_key(&p.id)
                && may_signal(p);
        }
    }
    now.processes
        .iter()
        .filter(|p| targets.contains(&p.id) && sessions.get(&p.sid) == Some(&true))
        .map(|p| (p.sid, p.pgid))
        .collect()
}

fn same_address(a: &Listener, b: &Listener) -> bool {
    a.protocol == b.protocol && a.address == b.address && a.port == b.port && a.path == b.path
}

fn check_ports(
    held: HashMap<u64, (Listener, Vec<ProcessId>)>,
    after: &[Listener],
) -> Vec<PortCheck> {
    let mut out: Vec<PortCheck> = held
        .into_values()
        .map(|(listener, held_by)| {
            let same_socket = after.iter().find(|l| l.inode == listener.inode);
            let outcome = if let Some(l) = same_socket {
                PortOutcome::StillHeld(l.owners.clone())
            } else if let Some(l) = after.iter().find(|l| same_address(l, &listener)) {
                PortOutcome::Reused(l.owners.clone())
            } else {
                PortOutcome::Freed
            };
            PortCheck {
                listener,
                held_by,
                outcome,
            }
        })
        .collect();
    out.sort_by_key(|p| p.listener.label());
    out
}

/// A process's command line for the log, its secrets redacted (the log is a file too).
fn redacted_command(p: &Process) -> String {
    crate::redact::redact_argv(&p.argv, &mut crate::redact::Secrets::default()).join_lossy()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{id, proc_at};

    fn decision(pid: i32, start: u64) -> Decision {
        Decision {
            id: id(pid, start),
            class: Class::Job,
            evidence: Default::default(),
            marker: None,
            hints: Default::default(),
        }
    }

    /// Every process comes out once, from the highest identity down, with the decision of
    /// the same identity or none: also when two processes share a pid (a pid reused within
    /// one reading's span), when the lists come unsorted, and when a decision has no
    /// process.
    #[test]
    fn each_process_is_paired_with_its_own_decision_only() {
        let table = vec![
            proc_at(9, 1, 90),
            proc_at(3, 1, 30),
            proc_at(5, 1, 52),
            proc_at(5, 1, 51),
            proc_at(7, 1, 70),
        ];
        let ds = [
            decision(5, 52),
            decision(5, 51),
            decision(4, 40), // its process is gone
            decision(9, 90),
            decision(3, 31), // another process under pid 3
        ];
        let mut seen = Vec::new();
        pair_up(table, ds.to_vec(), |p, d| {
            seen.push((p.id, d.map(|d| d.id)))
        });
        assert_eq!(
            seen,
            vec![
                (id(9, 90), Some(id(9, 90))),
                (id(7, 70), None),
                (id(5, 52), Some(id(5, 52))),
                (id(5, 51), Some(id(5, 51))),
                (id(3, 30), None),
            ]
        );
    }
}
