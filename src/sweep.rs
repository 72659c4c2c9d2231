//! The sweep: read, classify, kill, and repeat until nothing new appears or the deadline
//! passes; then check that the ports the leaked processes held are free again.
//!
//! This is the one place that loops over the OS: `classify` decides on data, `kill` acts on
//! one round, and this module ties rounds together.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::classify::{self, Class, Context, Decision, Hint, Plan, Policy, Rule};
use crate::diff;
use crate::kill::{self, Fate, RoundOptions};
use crate::model::{Listener, Process, ProcessId, Snapshot};
use crate::platform::{self, Handle, Pins, ProcDir, ReadError, ReadOptions, RestFacts};

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
    pub evidence: Vec<Rule>,
    /// The marker variable behind marker evidence.
    pub marker: Option<&'static str>,
    /// Hints for an unattributed process.
    pub hints: Vec<Hint>,
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
    // Each reading is light (what classification needs: see [`platform::Light`]); the rest
    // of a process's details is read after it was classified, just before its group is
    // signalled. The real uid is read at once when the whole-group proof needs it (we are
    // not root), the cgroup when the guard's journal is checked against it.
    let root = platform::running_as_root();
    let light = platform::Light {
        status: !root,
        cgroup: opts.lineage.is_some(),
    };
    let read_raw = |host_facts: bool| {
        let read = ReadOptions {
            proc_root: opts.proc_root.clone(),
            sockets: true,
            host_facts,
            detail: detail.clone(),
        };
        platform::read_snapshot_light(&read, light, pin)
    };
    let mut reading = read_raw(true)?;
    // The guard's journal is a file: only what agrees with the live process tree is used
    // (see [`crate::guard::lineage::Lineage::verified`]); what is not is reported.
    let mut distrusted = Vec::new();
    let mut verified_ctx;
    let mut lineage = opts.lineage.clone();
    let ctx = match &opts.lineage {
        Some(journal) => {
            let l = journal.verified(&reading.snapshot, &ctx.markers);
            distrusted = l.distrust_notes();
            verified_ctx = ctx.clone();
            verified_ctx.born_into_job = Some(std::sync::Arc::new(l.born_into_job()));
            lineage = Some(std::sync::Arc::new(l));
            &verified_ctx
        }
        None => ctx,
    };
    let read = || {
        let mut reading = read_raw(false)?;
        // Step and test markers a process's own environment lacks, from the guard.
        if let Some(lineage) = &lineage {
            lineage.fill_markers(&mut reading.snapshot);
        }
        Ok::<_, ReadError>(reading)
    };
    if let Some(lineage) = &lineage {
        lineage.fill_markers(&mut reading.snapshot);
    }
    let now = &reading.snapshot;
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
    let mut held: HashMap<u64, (Listener, Vec<ProcessId>)> = HashMap::new();
    let mut rounds = 0;
    let mut zombies = 0;
    // The sweep's cgroup, when it can make a hint (see [`classify::classify`]).
    let hint_cgroup = ctx
        .cgroup
        .as_deref()
        .is_some_and(|c| c != "/" && !c.is_empty());
    loop {
        rounds += 1;
        let platform::LightReading {
            snapshot: mut now,
            mut pins,
            mut dirs,
        } = reading;
        let mut rest = platform::RestReader::new(&opts.proc_root, &now.listeners);
        let mut plan: Plan = {
            let appeared = diff::appeared(baseline, &now);
            classify::classify(&now, &appeared, ctx, policy)
        };
        if hint_cgroup && !light.cgroup {
            // The cgroup only makes a hint for a process without evidence (classification
            // uses it for nothing else): read it for those alone, and classify again.
            let want: HashSet<ProcessId> = plan
                .decisions
                .iter()
                .filter(|d| d.evidence.is_empty() && !seen.contains(&d.id))
                .map(|d| d.id)
                .collect();
            if !want.is_empty() {
                for p in now.processes.iter_mut().filter(|p| want.contains(&p.id)) {
                    rest.read_cgroup(p, dirs.get(&p.id), pins.get(&p.id));
                }
                let appeared = diff::appeared(baseline, &now);
                plan = classify::classify(&now, &appeared, ctx, policy);
            }
        }
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
        let fresh: Vec<&Decision> = plan
            .decisions
            .iter()
            .filter(|d| !seen.contains(&d.id))
            .collect();
        let target_ids: HashSet<ProcessId> = fresh
            .iter()
            .filter(|d| d.class.is_target(policy))
            .map(|d| d.id)
            .collect();
        let whole = whole_groups(&now, &target_ids, &pins);
        // Each process of the reading, by identity, to be moved into its entry.
        let mut slots: Vec<Option<Process>> = std::mem::take(&mut now.processes)
            .into_iter()
            .map(Some)
            .collect();
        let at: HashMap<ProcessId, usize> = slots
            .iter()
            .enumerate()
            .filter_map(|(i, p)| Some((p.as_ref()?.id, i)))
            .collect();
        let mut targets: Vec<usize> = Vec::new();
        let mut others: Vec<usize> = Vec::new();
        entries.reserve_exact(fresh.len());
        for d in &fresh {
            seen.insert(d.id);
            let Some(p) = at.get(&d.id).and_then(|&i| slots[i].take()) else {
                continue;
            };
            let target = d.class.is_target(policy);
            tracing::debug!(
                pid = d.id.pid,
                start_ticks = d.id.start_ticks,
                class = d.class.name(),
                evidence = ?d.evidence,
                marker = d.marker,
                target,
                command = %redacted_command(&p),
                "classified"
            );
            if target {
                targets.push(entries.len());
            } else {
                others.push(entries.len());
            }
            entries.push(Entry {
                process: p,
                class: d.class.clone(),
                evidence: d.evidence.clone(),
                marker: d.marker,
                hints: d.hints.clone(),
                fate: None,
                round: rounds,
                listening: Vec::new(),
            });
        }
        drop(plan);
        if rounds == 1 {
            // A new vector: collected in place, the rest would keep the whole reading's
            // allocation.
            let mut rest = Vec::with_capacity(slots.iter().flatten().count());
            rest.extend(slots.into_iter().flatten());
            first.processes = rest;
        }
        targets.sort_by_key(|&e| kill::group_key(&entries[e].process));
        let status = !light.status;
        let round_opts = RoundOptions {
            grace: opts.grace,
            deadline,
            on_wait: opts.on_wait.clone(),
        };
        // Each target with what its kill needs, in group order.
        let jobs: Vec<RestJob> = targets
            .iter()
            .map(|&e| {
                let p = &entries[e].process;
                RestJob {
                    entry: e,
                    id: p.id,
                    group: (p.sid, p.pgid),
                    dir: dirs.remove(&p.id),
                    pin: pins.remove(&p.id),
                    whole_group: whole.contains(&p.pgid),
                }
            })
            .collect();
        let mut fates: HashMap<ProcessId, Fate> = HashMap::new();
        let mut found: Vec<(usize, RestFacts)> = Vec::with_capacity(jobs.len());
        if opts.grace.is_zero() && !opts.dry_run {
            // Pipelined: each group's details are read and its SIGKILL sent before the next
            // group is read, so the kernel tears one group down while the next is read.
            for (facts, round) in
                pipelined(&opts.proc_root, &now.listeners, jobs, status, &round_opts)
            {
                found.extend(facts);
                fates.extend(round.finish());
            }
        } else {
            // With a grace period (or in a dry run) every detail is read first, then the
            // round runs over all targets at once.
            let mut rest = platform::RestReader::new(&opts.proc_root, &now.listeners);
            let mut round = Vec::with_capacity(jobs.len());
            for mut j in jobs {
                let facts = j.read(&mut rest, status);
                if facts.gone {
                    fates.insert(j.id, Fate::AlreadyGone);
                } else {
                    round.push(j.target());
                }
                found.push((j.entry, facts));
            }
            if opts.dry_run {
                fates.extend(round.iter().map(|t| (t.id, Fate::WouldKill)));
            } else if !round.is_empty() {
                fates.extend(kill::terminate(&opts.proc_root, round, &round_opts));
            }
        }
        // The processes that are not signalled: their details, for the report.
        let mut rest = platform::RestReader::new(&opts.proc_root, &now.listeners);
        for &e in &others {
            let id = entries[e].process.id;
            found.push((e, rest.read(id, dirs.remove(&id), pins.get(&id), status)));
        }
        pins.clear();
        drop(dirs);
        for (e, mut facts) in found {
            let e = &mut entries[e];
            let id = e.process.id;
            facts.apply(&mut e.process);
            let is_target = e.class.is_target(policy);
            for &l in &facts.sockets {
                let l = &mut now.listeners[l];
                l.owners.push(id);
                e.listening.push(l.label());
                if is_target {
                    held.entry(l.inode)
                        .or_insert_with(|| (l.clone(), Vec::new()))
                        .1
                        .push(id);
                }
            }
        }
        for &e in &targets {
            let e = &mut entries[e];
            if let Some(f) = fates.get(&e.process.id) {
                e.fate = Some(*f);
            }
        }
        if rounds == 1 {
            first.listeners = now.listeners;
        }
        if targets.is_empty() || opts.dry_run || Instant::now() >= deadline {
            break;
        }
        // Children born while we worked, respawned replacements: look again.
        reading = read()?;
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
            let full = ReadOptions {
                proc_root: opts.proc_root.clone(),
                sockets: true,
                host_facts: false,
                detail: platform::Detail::None,
            };
            check_ports(held, &platform::read_snapshot(&full)?.listeners)
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

/// A target of a round, with what reading the rest of its details and killing it need.
struct RestJob {
    /// Its index in the entries.
    entry: usize,
    id: ProcessId,
    /// Its session and process group.
    group: (i32, i32),
    dir: Option<ProcDir>,
    pin: Option<Handle>,
    whole_group: bool,
}

impl RestJob {
    /// Reads the rest of its details.
    fn read(&mut self, rest: &mut platform::RestReader, status: bool) -> RestFacts {
        rest.read(self.id, self.dir.take(), self.pin.as_ref(), status)
    }

    fn target(&mut self) -> kill::Target {
        kill::Target {
            id: self.id,
            pgid: self.group.1,
            handle: self.pin.take(),
            whole_group: self.whole_group,
        }
    }
}

/// Fewer targets than this are read and killed by one thread.
const PARALLEL_FROM: usize = 256;
/// At most this many threads read and kill.
const MAX_WORKERS: usize = 4;

/// The grace-0 round, pipelined: group by group (`jobs` are in group order), the rest of
/// each member's details is read and the group's SIGKILL sent at once (see
/// [`kill::AtOnce`]), before the next group is read. With many targets and more than one
/// core, the groups are dealt to a few threads in turn, each with its own reader and its
/// own round (nearly all of the reading is the kernel formatting `/proc` files, which runs
/// in parallel for different processes). Returns, per thread, what was read of each target
/// (by its entry) and its round, to be finished by the caller. A target gone before its
/// rest was read is not signalled (its round calls it `AlreadyGone`).
fn pipelined<'a>(
    proc_root: &'a std::path::Path,
    listeners: &[Listener],
    jobs: Vec<RestJob>,
    status: bool,
    opts: &RoundOptions,
) -> Vec<(Vec<(usize, RestFacts)>, kill::AtOnce<'a>)> {
    // Whole groups, in order.
    let mut groups: Vec<Vec<RestJob>> = Vec::new();
    for j in jobs {
        match groups.last_mut() {
            Some(g) if g[0].group == j.group => g.push(j),
            _ => groups.push(vec![j]),
        }
    }
    let n: usize = groups.iter().map(Vec::len).sum();
    let workers = if n >= PARALLEL_FROM {
        std::thread::available_parallelism().map_or(1, |c| c.get().min(MAX_WORKERS))
    } else {
        1
    };
    // Groups are taken in order from one queue: a thread that cannot be started leaves
    // its share to the others.
    let queue = std::sync::Mutex::new(groups.into_iter());
    let work = || {
        let mut rest = platform::RestReader::new(proc_root, listeners);
        let mut round = kill::AtOnce::new(proc_root, opts);
        let mut read = Vec::new();
        loop {
            let next = queue.lock().map_or(None, |mut q| q.next());
            let Some(group) = next else { break };
            let mut batch = Vec::with_capacity(group.len());
            for mut j in group {
                let facts = j.read(&mut rest, status);
                if facts.gone {
                    round.gone(j.id);
                } else {
                    batch.push(j.target());
                }
                read.push((j.entry, facts));
            }
            round.kill(batch);
        }
        (read, round)
    };
    if workers == 1 {
        return vec![work()];
    }
    std::thread::scope(|scope| {
        let handles: Vec<_> = (1..workers)
            .filter_map(|_| {
                std::thread::Builder::new()
                    .name("sweep-kill".into())
                    .spawn_scoped(scope, work)
                    .ok()
            })
            .collect();
        let mut out = vec![work()];
        for h in handles {
            match h.join() {
                Ok(r) => out.push(r),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        out
    })
}

/// The process groups of this round's targets that may take one signal for all their
/// members (see [`kill::Target::whole_group`]). The kernel signals whoever is in the group
/// when the signal is sent, so the proof covers the group's whole *session*: a process can
/// join a group only from inside its session, and enter a session only by being forked in
/// it. So in `now`, every process of the session (zombies included: a process whose main
/// thread exited shows as one while its other threads run) is a live target of the round,
/// holds a pidfd the reader pinned to it, and is one we may signal (we are root, or it runs
/// as our uid); the session's id is a pid of our namespace (0 means its leader, and so
/// maybe members, are outside what `/proc` shows); and the reading is complete (a process
/// that could not be read may be the one outsider). Anything less: one signal per process.
fn whole_groups(now: &Snapshot, targets: &HashSet<ProcessId>, pins: &Pins) -> HashSet<i32> {
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
        .map(|p| p.pgid)
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
    crate::redact::redact_argv(&p.argv, &mut crate::redact::Secrets::default())
        .iter()
        .map(|a| a.lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ")
}
