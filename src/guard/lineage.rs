//! What a sweep learns from the guard's journal: which processes were born into the job
//! (the strongest evidence there is, [`crate::classify::Rule::GuardLineage`]), the step and
//! test markers each one inherited, and what the guard warned about. Pure data, built from
//! the records; tied to processes by identity (pid and start time), never by pid alone.
//!
//! The journal is a file, and a file can be edited by anyone who can write it. So a sweep
//! takes only the records written after the `start` record of the guard its verified pid
//! file names ([`Lineage::of_guard`]), and then keeps only what agrees with the live
//! process tree ([`Lineage::verified`]): a record that contradicts it is distrusted, said
//! so, and only ever narrows what is killed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use crate::model::{Markers, Process, ProcessId, Snapshot};

use super::journal::{Journal, Mode, Record, Start, Via, Warning};

/// The guard whose records a sweep may use: the one its verified pid file names (its
/// identity and the boot it ran in), or the sweeping guard itself (the dead man's switch).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Vouched {
    pub guard: ProcessId,
    pub boot_id: String,
    /// The job's root as the pid file records it: a `start` record naming another root
    /// (whose descendants it would make the job's) is not this guard's.
    pub root: Option<ProcessId>,
}

/// How many distrusted records are described one by one; the rest are counted.
const DESCRIBED: usize = 10;

/// The markers a sweep fills in from the lineage when a process's own environment lacks
/// them: the step and the test. The evidence markers (`RUNNER_TRACKING_ID`,
/// `CI_JANITOR_RUN`) are never filled: inherited, they would be evidence twice.
pub const FILLED: [&str; 4] = [
    "GITHUB_ACTION",
    "GITHUB_JOB",
    "PYTEST_CURRENT_TEST",
    "PYTEST_XDIST_WORKER",
];

#[derive(Debug, Clone, Default)]
struct Known {
    in_job: bool,
    markers: Markers,
}

/// The journal, digested for a sweep.
#[derive(Debug, Clone, Default)]
pub struct Lineage {
    /// Every guard that wrote to the journal (to be protected, whatever their state).
    pub guards: Vec<ProcessId>,
    pub roots: Vec<ProcessId>,
    pub modes: Vec<Mode>,
    pub degraded: Vec<String>,
    pub warnings: Vec<Warning>,
    /// `ENOBUFS` errors: events the kernel dropped.
    pub overruns: u64,
    /// Births whose identity could not be read (the process was already gone).
    pub gaps: usize,
    pub births: usize,
    /// Whether the last guard wrote its `stop` record (and why it stopped).
    pub last_stop: Option<String>,
    /// Problems reading the journal (torn or garbled lines, other versions).
    pub journal_problems: Vec<String>,
    /// The number of live job processes after each birth or exit the guard saw, as
    /// (milliseconds since the epoch, count): the report's chart of the job over time.
    pub samples: Vec<(u64, u32)>,
    /// Records that contradict the live process tree (see [`Lineage::verified`]): one
    /// description each, at most [`DESCRIBED`], and their number.
    pub distrusted: Vec<String>,
    pub distrusted_count: usize,
    /// The `start` record of the guard the records were taken from ([`Lineage::of_guard`]).
    start: Option<Start>,
    /// The records that say who is the job's, in journal order, kept for
    /// [`Lineage::verified`].
    membership: Arc<Vec<Record>>,
    known: HashMap<ProcessId, Known>,
}

impl Lineage {
    /// Every record of the journal, whoever wrote it: for `guard status`, which only shows.
    pub fn from_journal(j: &Journal) -> Lineage {
        Lineage::digest(j, &j.records)
    }

    /// What a sweep may use: the records after the `start` record of the guard `vouched`
    /// names (the first such record; the next `start` ends them), none without one. The
    /// records of other guards, and any before it, are counted as not used. Every guard
    /// named by a `start` record is still protected: that only narrows.
    pub fn of_guard(j: &Journal, vouched: Option<&Vouched>) -> Lineage {
        let begin = vouched.and_then(|v| {
            j.records.iter().position(
                |r| matches!(r, Record::Start(s) if s.guard == v.guard && s.boot_id == v.boot_id && s.root == v.root),
            )
        });
        let Some(begin) = begin else {
            let mut l = Lineage::digest(j, &[]);
            l.guards = guards_of(&j.records);
            l.journal_problems.push(match vouched {
                Some(v) => format!(
                    "no `start` record of the guard its pid file names (pid {}) in this boot: \
                     its {} record(s) were not used",
                    v.guard.pid,
                    j.records.len()
                ),
                None => format!(
                    "no verified pid file names the guard that wrote it: its {} record(s) \
                     were not used",
                    j.records.len()
                ),
            });
            return l;
        };
        let end = j.records[begin + 1..]
            .iter()
            .position(|r| matches!(r, Record::Start(_)))
            .map_or(j.records.len(), |k| begin + 1 + k);
        let mut l = Lineage::digest(j, &j.records[begin..end]);
        l.guards = guards_of(&j.records);
        let unused = j.records.len() - (end - begin);
        if unused > 0 {
            l.journal_problems.push(format!(
                "{unused} record(s) not written by the guard its pid file names (pid {}) were \
                 not used",
                l.start.as_ref().map_or(0, |s| s.guard.pid)
            ));
        }
        l
    }

    fn digest(j: &Journal, records: &[Record]) -> Lineage {
        let mut l = Lineage::default();
        if j.torn_tail {
            l.journal_problems
                .push("its last line is torn (the guard died while writing it)".into());
        }
        // A last line without its newline may still decode (the guard died right before
        // the newline): then it is not a bad line, and nothing is to be subtracted.
        let garbled = j.bad_lines.saturating_sub(usize::from(j.torn_tail));
        if garbled > 0 {
            l.journal_problems
                .push(format!("{garbled} line(s) did not decode and were skipped"));
        }
        if j.skipped_other_version > 0 {
            l.journal_problems.push(format!(
                "{} record(s) of another journal version were skipped",
                j.skipped_other_version
            ));
        }
        // For the samples: the guard's start (event times are microseconds after it) and
        // the job processes alive, by pid.
        let mut base_ms = 0;
        let mut alive: HashSet<i32> = HashSet::new();
        let mut membership = Vec::new();
        for r in records {
            if matches!(r, Record::Seed(_) | Record::Birth(_) | Record::Exec(_)) {
                membership.push(r.clone());
            }
            match r {
                Record::Start(s) => {
                    l.guards.push(s.guard);
                    l.roots.extend(s.root);
                    l.modes.push(s.mode);
                    l.last_stop = None;
                    l.start = Some(s.clone());
                    base_ms = s.at_unix_ms;
                }
                Record::Seed(s) => {
                    if s.in_job {
                        alive.insert(s.id.pid);
                    }
                    l.learn(s.id, s.in_job, &s.markers)
                }
                Record::Birth(b) => {
                    l.births += 1;
                    if b.in_job && alive.insert(b.pid) {
                        l.samples
                            .push((base_ms + b.t_us / 1000, alive.len() as u32));
                    }
                    match b.id() {
                        Some(id) => l.learn(id, b.in_job, &b.markers),
                        None => l.gaps += 1,
                    }
                }
                Record::Exec(e) => {
                    // An exec with another job's marker takes the process out of the job.
                    if !e.in_job {
                        if let Some(k) = l.known.get_mut(&e.id) {
                            k.in_job = false;
                        }
                    }
                    l.learn(e.id, e.in_job, &e.markers)
                }
                Record::Exit(e) => {
                    if alive.remove(&e.pid) {
                        l.samples
                            .push((base_ms + e.t_us / 1000, alive.len() as u32));
                    }
                }
                Record::Warning(w) => l.warnings.push(w.clone()),
                Record::Lost(lost) => l.overruns += u64::from(lost.overruns),
                Record::Degraded(d) => {
                    if !l.degraded.contains(&d.reason) {
                        l.degraded.push(d.reason.clone());
                    }
                }
                Record::Stop(s) => l.last_stop = Some(s.reason.clone()),
            }
        }
        l.membership = Arc::new(membership);
        l
    }

    /// This lineage, with only the membership records that agree with the live process
    /// tree `now` (read by the sweep) kept, in journal order. `job_markers` are the job's
    /// identity markers. A record is distrusted when:
    ///
    /// - it claims a birth of a live process that started before the guard did, or a seed
    ///   (a job process at the guard's start) that started after it;
    /// - its process's live parent is the parent it claims but is not the job's (the job's
    ///   root, or a process already accepted as born into the job);
    /// - the parent it claims is alive but is not its live parent, or has the claimed pid
    ///   but another start time, or is younger than the process;
    /// - the parent it claims is gone, and the process was not reparented where orphans
    ///   go (init, the root, a job process, a live ancestor of the root: subreapers), or it
    ///   is in none of the cgroups of the root and the job processes accepted so far;
    /// - a birth "by marker" whose process does not carry one of the job's markers;
    /// - an exec that claims job membership for a process no accepted record put in the job.
    ///
    /// Records of processes that are not alive (by identity) decide nothing and are left
    /// out. Without the guard's `start` record nothing is the job's.
    pub fn verified(&self, now: &Snapshot, job_markers: &Markers) -> Lineage {
        let mut l = self.clone();
        l.known = HashMap::new();
        let Some(start) = self.start.clone() else {
            return l;
        };
        let by_pid: HashMap<i32, &Process> = now.processes.iter().map(|p| (p.id.pid, p)).collect();
        // A zombie has exited (its children were reparented already): not alive.
        let live = |id: ProcessId| {
            by_pid
                .get(&id.pid)
                .copied()
                .filter(|p| p.id == id && !p.is_zombie())
        };
        let root = start.root.and_then(|r| live(r).map(|p| p.id));
        // Where an orphan of the job can be reparented: the root's live ancestors
        // (subreapers such as `systemd --user`, init).
        let mut above_root: HashSet<ProcessId> = HashSet::new();
        let mut at = root.and_then(&live).map(|p| p.ppid);
        while let Some(pid) = at.filter(|&p| p > 0) {
            let Some(p) = by_pid.get(&pid) else { break };
            if !above_root.insert(p.id) {
                break;
            }
            at = Some(p.ppid);
        }
        // The cgroups of the root and of the live processes accepted so far: an orphan
        // that was adopted (its claimed parent is gone, nothing alive can vouch for it) must
        // be in one of them. A cgroup is never evidence that a process is the job's, but a
        // process in another one (a system service's) is not an orphan of the job.
        let mut cgroups: HashSet<String> = root
            .and_then(&live)
            .and_then(|p| p.cgroup.clone())
            .into_iter()
            .collect();
        let guard_ticks = start.guard.start_ticks;
        let distrust = |l: &mut Lineage, what: &str, p: &Process, why: String| {
            l.distrusted_count += 1;
            if l.distrusted.len() < DESCRIBED {
                l.distrusted.push(format!(
                    "distrusted the {what} record of pid {} (`{}`): {why}; it was not taken as \
                     the job's",
                    p.id.pid,
                    p.comm.lossy()
                ));
            }
        };
        let membership = Arc::clone(&self.membership);
        for r in membership.iter() {
            let is_job = |l: &Lineage, id: ProcessId| Some(id) == root || l.in_job(id);
            match r {
                Record::Seed(s) if s.in_job => {
                    let Some(p) = live(s.id) else { continue };
                    let parent_is_job = by_pid.get(&p.ppid).is_some_and(|q| is_job(&l, q.id));
                    if p.id.start_ticks > guard_ticks {
                        let why = format!(
                            "it started at tick {}, after the guard (tick {guard_ticks}), so it \
                             was not alive at the guard's start",
                            p.id.start_ticks
                        );
                        distrust(&mut l, "seed", p, why);
                    } else if Some(p.id) == root || parent_is_job || marked(p, job_markers) {
                        cgroups.extend(p.cgroup.clone());
                        l.learn(s.id, true, &s.markers);
                    } else {
                        let why = format!(
                            "its live parent (pid {}) is not the job's and it carries none of \
                             the job's markers",
                            p.ppid
                        );
                        distrust(&mut l, "seed", p, why);
                    }
                }
                Record::Birth(b) if b.in_job => {
                    let Some(p) = b.id().and_then(live) else {
                        continue;
                    };
                    let cgroup_ok = cgroups.is_empty()
                        || p.cgroup.as_ref().is_some_and(|c| cgroups.contains(c));
                    match check_birth(
                        b,
                        p,
                        &by_pid,
                        &live,
                        guard_ticks,
                        job_markers,
                        |id| {
                            cgroup_ok && (id.pid == 1 || is_job(&l, id) || above_root.contains(&id))
                        },
                        |id| is_job(&l, id),
                    ) {
                        Ok(()) => {
                            cgroups.extend(p.cgroup.clone());
                            l.learn(p.id, true, &b.markers)
                        }
                        Err(why) => distrust(&mut l, "birth", p, why),
                    }
                }
                Record::Exec(e) => {
                    if !e.in_job {
                        if let Some(k) = l.known.get_mut(&e.id) {
                            k.in_job = false;
                        }
                    } else if l.in_job(e.id) {
                        l.learn(e.id, true, &e.markers);
                    } else if let Some(p) = live(e.id) {
                        let why = "no accepted birth or seed put it in the job".to_owned();
                        distrust(&mut l, "exec", p, why);
                    }
                }
                _ => {}
            }
        }
        l
    }

    /// A later record about the same identity has the newer markers (an exec after the
    /// birth); a process is the job's if any record says so.
    fn learn(&mut self, id: ProcessId, in_job: bool, markers: &Markers) {
        let k = self.known.entry(id).or_default();
        k.in_job |= in_job;
        k.markers = markers.clone();
    }

    /// Every process the journal says was born into the job (or was in it when the guard
    /// started): what classification takes as the guard's lineage.
    pub fn born_into_job(&self) -> std::collections::HashSet<ProcessId> {
        self.known
            .iter()
            .filter(|(_, k)| k.in_job)
            .map(|(id, _)| *id)
            .collect()
    }

    /// What [`Lineage::verified`] distrusted, for the report: the descriptions, and how
    /// many more there were.
    pub fn distrust_notes(&self) -> Vec<String> {
        let mut notes = self.distrusted.clone();
        if self.distrusted_count > self.distrusted.len() {
            notes.push(format!(
                "and {} more record(s) that contradict the live process tree were distrusted",
                self.distrusted_count - self.distrusted.len()
            ));
        }
        notes
    }

    /// Whether `id` was born into the job (or was in it when the guard started).
    pub fn in_job(&self, id: ProcessId) -> bool {
        self.known.get(&id).is_some_and(|k| k.in_job)
    }

    /// Fills the step and test markers of every job process in `snap` whose own
    /// environment lacks them, from the lineage, and lists them in `markers.inherited`.
    pub fn fill_markers(&self, snap: &mut Snapshot) {
        for p in &mut snap.processes {
            let Some(known) = self.known.get(&p.id).filter(|k| k.in_job) else {
                continue;
            };
            for name in FILLED {
                if p.markers.get(name).is_none() {
                    if let Some(v) = known.markers.get(name) {
                        p.markers.set(name, v.clone());
                        p.markers.inherited.push(name.to_owned());
                    }
                }
            }
        }
    }

    /// The weakest mode any guard ran in.
    pub fn polling(&self) -> bool {
        self.modes.contains(&Mode::Polling)
    }
}

fn guards_of(records: &[Record]) -> Vec<ProcessId> {
    records
        .iter()
        .filter_map(|r| match r {
            Record::Start(s) => Some(s.guard),
            _ => None,
        })
        .collect()
}

/// Whether `p`'s own environment carries one of the job's identity markers.
fn marked(p: &Process, job_markers: &Markers) -> bool {
    job_markers.identity_pairs().any(|(var, value)| {
        p.markers.get(var) == Some(value) && !p.markers.inherited.iter().any(|i| i == var)
    })
}

/// The checks of one birth record of the live process `p` (see [`Lineage::verified`]).
/// `may_adopt`: whether a process may have been reparented to this one; `is_job`: whether
/// it is the job's (its root, or accepted so far).
#[expect(
    clippy::too_many_arguments,
    reason = "the facts one check needs, no more"
)]
fn check_birth<'a>(
    b: &super::journal::Birth,
    p: &Process,
    by_pid: &HashMap<i32, &'a Process>,
    live: &dyn Fn(ProcessId) -> Option<&'a Process>,
    guard_ticks: u64,
    job_markers: &Markers,
    may_adopt: impl Fn(ProcessId) -> bool,
    is_job: impl Fn(ProcessId) -> bool,
) -> Result<(), String> {
    if p.id.start_ticks < guard_ticks {
        return Err(format!(
            "it started at tick {}, before the guard (tick {guard_ticks}), so the guard cannot \
             have seen it born",
            p.id.start_ticks
        ));
    }
    if b.parent.start_ticks.is_some_and(|t| t > p.id.start_ticks) {
        return Err("the parent it claims is younger than it".into());
    }
    if b.via == Via::Marker {
        return if marked(p, job_markers) {
            Ok(())
        } else {
            Err("it was recorded as carrying the job's marker, and it carries none".into())
        };
    }
    let parent = by_pid.get(&p.ppid).copied();
    let claimed_live = match b.parent.start_ticks {
        Some(t) => live(ProcessId {
            pid: b.parent.pid,
            start_ticks: t,
        }),
        None => by_pid
            .get(&b.parent.pid)
            .copied()
            .filter(|q| q.id.start_ticks <= p.id.start_ticks),
    };
    match (parent, claimed_live) {
        (Some(q), Some(c)) if q.id == c.id => {
            if is_job(q.id) {
                Ok(())
            } else {
                Err(format!(
                    "its parent, pid {} (`{}`), is not the job's (neither its root nor born \
                     into it)",
                    q.id.pid,
                    q.comm.lossy()
                ))
            }
        }
        (_, Some(c)) => Err(format!(
            "the parent it claims, pid {} (`{}`), is alive but is not its parent (pid {} is)",
            c.id.pid,
            c.comm.lossy(),
            p.ppid
        )),
        (Some(q), None) if b.parent.pid == q.id.pid => Err(format!(
            "the parent it claims, pid {}, started at tick {}; the live pid {} at tick {}",
            b.parent.pid,
            b.parent.start_ticks.unwrap_or_default(),
            q.id.pid,
            q.id.start_ticks
        )),
        (Some(q), None) if may_adopt(q.id) => Ok(()),
        (Some(q), None) => Err(format!(
            "the parent it claims (pid {}) is gone, yet it lives under pid {} (`{}`), which \
             is neither init nor the job's nor above the job's root, or it is in another \
             cgroup than the job's",
            b.parent.pid,
            q.id.pid,
            q.comm.lossy()
        )),
        (None, None) => Err(format!(
            "the parent it claims (pid {}) is gone, and its live parent (pid {}) could not be \
             read",
            b.parent.pid, p.ppid
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::journal::{parse, Birth, Exec, Parent, Seed, Start, Via};
    use crate::test_support::id;
    use crate::test_support::{proc_at, snapshot_of};

    fn marked(step: &str, test: &str) -> Markers {
        Markers {
            github_action: Some(step.into()),
            pytest_current_test: Some(test.into()),
            runner_tracking_id: Some("github_1".into()),
            ..Default::default()
        }
    }

    fn journal() -> Journal {
        let records = vec![
            Record::Start(Start {
                schema_version: crate::guard::journal::JOURNAL_SCHEMA_VERSION,
                tool_version: "t".into(),
                boot_id: "b".into(),
                at_unix_ms: 0,
                guard: id(50, 1),
                root: Some(id(2, 1)),
                mode: Mode::Connector,
                detail: String::new(),
                warn_over: 20,
            }),
            Record::Seed(Seed {
                id: id(3, 2),
                ppid: 2,
                in_job: true,
                argv: [].into(),
                markers: Markers::default(),
            }),
            Record::Birth(Birth {
                pid: 10,
                start_ticks: Some(5),
                parent: Parent {
                    pid: 3,
                    start_ticks: Some(2),
                },
                chain: vec![3, 2],
                in_job: true,
                markers: marked("step-a", "t.py::x (call)"),
                via: Via::Fork,
                gap: None,
                t_us: 1,
            }),
            // Exec'd with a scrubbed environment: all inherited.
            Record::Exec(Exec {
                id: id(10, 5),
                argv: ["server"].into(),
                in_job: true,
                markers: Markers {
                    inherited: vec!["GITHUB_ACTION".into(), "PYTEST_CURRENT_TEST".into()],
                    ..marked("step-a", "t.py::x (call)")
                },
                unreadable: vec![],
                t_us: 2,
            }),
            Record::Birth(Birth {
                pid: 11,
                start_ticks: None,
                parent: Parent {
                    pid: 10,
                    start_ticks: Some(5),
                },
                chain: vec![10, 3, 2],
                in_job: true,
                markers: Markers::default(),
                via: Via::Fork,
                gap: Some("it exited before it could be read".into()),
                t_us: 3,
            }),
            Record::Birth(Birth {
                pid: 12,
                start_ticks: Some(6),
                parent: Parent {
                    pid: 1,
                    start_ticks: Some(0),
                },
                chain: vec![],
                in_job: false,
                markers: Markers::default(),
                via: Via::Fork,
                gap: None,
                t_us: 4,
            }),
        ];
        let mut text = String::new();
        for r in &records {
            text.push_str(&serde_json::to_string(r).unwrap());
            text.push('\n');
        }
        text.push_str("{\"kind\":\"birth\",\"pid\":13");
        parse(text.as_bytes())
    }

    #[test]
    fn job_membership_by_identity() {
        let l = Lineage::from_journal(&journal());
        assert!(l.in_job(id(10, 5)));
        assert!(l.in_job(id(3, 2)));
        // The same pid with another start time is another process.
        assert!(!l.in_job(id(10, 6)));
        assert!(!l.in_job(id(12, 6)));
        assert_eq!(l.gaps, 1);
        assert_eq!(l.births, 3);
        assert_eq!(l.guards, vec![id(50, 1)]);
        assert_eq!(l.journal_problems.len(), 1, "{:?}", l.journal_problems);
        assert!(l.last_stop.is_none());
    }

    #[test]
    fn fills_step_and_test_but_never_evidence_markers() {
        let l = Lineage::from_journal(&journal());
        let mut scrubbed = proc_at(10, 1, 5);
        scrubbed.markers = Default::default();
        let mut own = proc_at(3, 2, 2);
        own.markers.set("GITHUB_ACTION", "own-step".into());
        let stranger = proc_at(12, 1, 6);
        let mut snap = snapshot_of(vec![scrubbed, own, stranger], 0);
        l.fill_markers(&mut snap);
        let m = &snap.processes[0].markers;
        assert_eq!(m.github_action(), Some("step-a"));
        assert_eq!(m.pytest_current_test(), Some("t.py::x (call)"));
        assert_eq!(
            m.runner_tracking_id(),
            None,
            "evidence markers are never filled"
        );
        assert_eq!(m.inherited, vec!["GITHUB_ACTION", "PYTEST_CURRENT_TEST"]);
        // Its own marker stays its own.
        assert_eq!(snap.processes[1].markers.github_action(), Some("own-step"));
        assert!(snap.processes[1].markers.inherited.is_empty());
        assert!(snap.processes[2].markers.is_empty());
    }

    fn start_of(guard: ProcessId) -> Record {
        Record::Start(Start {
            schema_version: crate::guard::journal::JOURNAL_SCHEMA_VERSION,
            tool_version: "t".into(),
            boot_id: "b".into(),
            at_unix_ms: 0,
            guard,
            root: Some(id(2, 1)),
            mode: Mode::Connector,
            detail: String::new(),
            warn_over: 20,
        })
    }

    fn born(pid: i32, t: u64, parent: i32, parent_t: Option<u64>) -> Record {
        Record::Birth(Birth {
            pid,
            start_ticks: Some(t),
            parent: Parent {
                pid: parent,
                start_ticks: parent_t,
            },
            chain: vec![parent, 2],
            in_job: true,
            markers: Markers::default(),
            via: Via::Fork,
            gap: None,
            t_us: 1,
        })
    }

    fn journal_of(records: Vec<Record>) -> Journal {
        Journal {
            records,
            ..Journal::default()
        }
    }

    #[test]
    fn only_the_records_of_the_vouched_guard_are_taken() {
        let a = id(50, 10);
        let b = id(51, 20);
        let j = journal_of(vec![
            start_of(a),
            born(30, 15, 2, Some(1)),
            start_of(b),
            born(31, 25, 2, Some(1)),
        ]);
        let vouched = |guard| Vouched {
            guard,
            boot_id: "b".into(),
            root: Some(id(2, 1)),
        };
        let l = Lineage::of_guard(&j, Some(&vouched(b)));
        assert!(l.in_job(id(31, 25)));
        assert!(!l.in_job(id(30, 15)), "an earlier guard's record was taken");
        assert_eq!(l.guards, vec![a, b], "every guard stays protected");
        assert!(l.journal_problems[0].contains("2 record(s) not written by"));
        // Another boot's guard with the same identity, or no pid file: nothing is taken.
        let other_boot = Vouched {
            guard: b,
            boot_id: "other".into(),
            root: Some(id(2, 1)),
        };
        for l in [
            Lineage::of_guard(&j, Some(&other_boot)),
            Lineage::of_guard(&j, None),
        ] {
            assert!(!l.in_job(id(31, 25)) && !l.in_job(id(30, 15)));
            assert!(l.journal_problems[0].contains("were not used"), "{l:?}");
        }
    }

    #[test]
    fn records_that_contradict_the_live_tree_are_distrusted() {
        let guard = id(50, 10);
        let j = journal_of(vec![
            start_of(guard),
            // Born to the root, alive under it.
            born(20, 20, 2, Some(1)),
            // Born to a job process that died: reparented to init.
            born(22, 21, 20, Some(20)),
            born(21, 22, 22, Some(21)),
            // Claims the root; lives under a daemon.
            born(30, 30, 2, Some(1)),
            // Names the daemon as its parent: not the job's.
            born(31, 31, 60, Some(0)),
            // Older than the guard.
            born(32, 5, 2, Some(1)),
            // Claims a gone parent; lives under the daemon, which adopts no job orphan.
            born(33, 33, 99, Some(32)),
            // Claims the root with the root's pid but another start time.
            born(34, 34, 2, Some(7)),
            // An exec that puts a process in the job with no birth.
            Record::Exec(Exec {
                id: id(35, 35),
                argv: ["x"].into(),
                in_job: true,
                markers: Markers::default(),
                unreadable: vec![],
                t_us: 2,
            }),
            // A child of a distrusted process is not the job's either.
            born(36, 36, 31, Some(31)),
        ]);
        let l = Lineage::of_guard(
            &j,
            Some(&Vouched {
                guard,
                boot_id: "b".into(),
                root: Some(id(2, 1)),
            }),
        );
        let now = snapshot_of(
            vec![
                proc_at(1, 0, 0),
                proc_at(2, 1, 1),
                proc_at(50, 1, 10),
                proc_at(60, 1, 0),
                proc_at(20, 2, 20),
                proc_at(21, 1, 22),
                proc_at(30, 60, 30),
                proc_at(31, 60, 31),
                proc_at(32, 2, 5),
                proc_at(33, 60, 33),
                proc_at(34, 2, 34),
                proc_at(35, 60, 35),
                proc_at(36, 31, 36),
            ],
            3,
        );
        // Unverified, the journal makes them all the job's.
        assert!(l.in_job(id(31, 31)));
        let v = l.verified(&now, &Markers::default());
        assert!(v.in_job(id(20, 20)));
        assert!(
            v.in_job(id(21, 22)),
            "an orphan reparented to init stays the job's"
        );
        for pid in [30, 31, 32, 33, 34, 35, 36] {
            let p = now.processes.iter().find(|p| p.id.pid == pid).unwrap();
            assert!(!v.in_job(p.id), "pid {pid} was taken as the job's");
        }
        assert_eq!(v.distrusted_count, 7, "{:#?}", v.distrusted);
        assert!(v.distrusted[0].contains("pid 30") && v.distrusted[0].contains("is alive but"));
        assert!(v.distrusted[1].contains("is not the job's"));
        assert!(v.distrusted[2].contains("before the guard"));
    }

    /// Property tests: whatever is done to the journal's bytes (truncation, bit flips,
    /// forged records inserted anywhere), the sweep's targets are a subset of those the
    /// genuine journal gives, and nothing panics.
    mod props {
        use super::*;
        use crate::classify::{classify, Context, Policy};
        use crate::guard::journal::Exit;
        use proptest::prelude::*;

        fn at(pid: i32, ppid: i32, start: u64, cgroup: &str) -> Process {
            let mut p = proc_at(pid, ppid, start);
            p.cgroup = Some(cgroup.into());
            p.uid = Some(1000);
            p
        }

        const GUARD: ProcessId = ProcessId {
            pid: 50,
            start_ticks: 200,
        };
        const ROOT: ProcessId = ProcessId {
            pid: 2,
            start_ticks: 100,
        };

        /// The live tree: the job's root, its guard, a child and grandchild of the job, an
        /// orphan of the job (its parent 299 died) adopted by init; a daemon older than the
        /// snapshot with a new worker, and a new orphan of a system service. The snapshot
        /// began at tick 150. Not covered (see the README's threat model): a new orphan
        /// of another origin in the job's own cgroup.
        fn tree() -> (Snapshot, Snapshot) {
            let now = snapshot_of(
                vec![
                    at(1, 0, 0, "/init.scope"),
                    at(2, 1, 100, "/job"),
                    at(50, 1, 200, "/job"),
                    at(60, 1, 10, "/svc"),
                    at(300, 2, 300, "/job"),
                    at(301, 300, 301, "/job"),
                    at(302, 1, 302, "/job"),
                    at(400, 60, 400, "/svc"),
                    at(401, 1, 401, "/svc"),
                    at(402, 400, 402, "/svc"),
                ],
                400,
            );
            let baseline = snapshot_of(vec![at(1, 0, 0, "/init.scope")], 150);
            (baseline, now)
        }

        fn genuine() -> Vec<Record> {
            let birth = |pid, t, parent, pt| match born(pid, t, parent, Some(pt)) {
                Record::Birth(mut b) => {
                    b.chain = vec![parent, 2];
                    Record::Birth(b)
                }
                r => r,
            };
            let mut start = start_of(GUARD);
            if let Record::Start(s) = &mut start {
                s.root = Some(ROOT);
            }
            vec![
                start,
                birth(300, 300, 2, 100),
                birth(299, 299, 2, 100),
                birth(301, 301, 300, 300),
                birth(302, 302, 299, 299),
                Record::Exit(Exit {
                    pid: 299,
                    start_ticks: Some(299),
                    t_us: 9,
                }),
            ]
        }

        fn to_bytes(records: &[Record]) -> Vec<u8> {
            let mut out = Vec::new();
            for r in records {
                out.extend(serde_json::to_vec(r).unwrap());
                out.push(b'\n');
            }
            out
        }

        /// The processes a sweep would signal, with the journal `bytes` as the guard's.
        fn targets(bytes: &[u8]) -> Vec<ProcessId> {
            let (baseline, now) = tree();
            let vouched = Vouched {
                guard: GUARD,
                boot_id: "b".into(),
                root: Some(ROOT),
            };
            let l = Lineage::of_guard(&parse(bytes), Some(&vouched))
                .verified(&now, &Markers::default());
            let ctx = Context {
                also_protected: l.guards.clone(),
                born_into_job: Some(std::sync::Arc::new(l.born_into_job())),
                ..Context::default()
            };
            let policy = Policy::default();
            let appeared = crate::diff::appeared(&baseline, &now);
            let mut t: Vec<ProcessId> = classify(&now, &appeared, &ctx, &policy)
                .decisions
                .iter()
                .filter(|d| d.class.is_target(&policy))
                .map(|d| d.id)
                .collect();
            t.sort();
            t
        }

        fn pids() -> impl Strategy<Value = i32> {
            prop_oneof![
                Just(1),
                Just(2),
                Just(50),
                Just(60),
                Just(299),
                Just(300),
                Just(301),
                Just(302),
                Just(400),
                Just(401),
                Just(402),
                0..500i32,
            ]
        }

        /// A start time: the live one of some pid above, or any.
        fn ticks() -> impl Strategy<Value = u64> {
            prop_oneof![
                Just(0u64),
                Just(10),
                Just(100),
                Just(200),
                Just(299),
                Just(300),
                Just(301),
                Just(302),
                Just(400),
                Just(401),
                Just(402),
                0..1000u64,
            ]
        }

        fn via() -> impl Strategy<Value = Via> {
            prop_oneof![
                Just(Via::Fork),
                Just(Via::Early),
                Just(Via::Scan),
                Just(Via::Marker)
            ]
        }

        fn forged() -> impl Strategy<Value = Record> {
            let pid_id = || (pids(), ticks()).prop_map(|(pid, t)| id(pid, t));
            prop_oneof![
                (
                    pids(),
                    ticks(),
                    pids(),
                    proptest::option::of(ticks()),
                    proptest::collection::vec(pids(), 0..4),
                    via()
                )
                    .prop_map(|(pid, t, parent, pt, chain, via)| Record::Birth(
                        Birth {
                            pid,
                            start_ticks: Some(t),
                            parent: Parent {
                                pid: parent,
                                start_ticks: pt
                            },
                            chain,
                            in_job: true,
                            markers: Markers::default(),
                            via,
                            gap: None,
                            t_us: 5,
                        }
                    )),
                pid_id().prop_map(|i| Record::Exec(Exec {
                    id: i,
                    argv: ["forged"].into(),
                    in_job: true,
                    markers: Markers::default(),
                    unreadable: vec![],
                    t_us: 6,
                })),
                (pid_id(), pids()).prop_map(|(i, ppid)| Record::Seed(Seed {
                    id: i,
                    ppid,
                    in_job: true,
                    argv: [].into(),
                    markers: Markers::default(),
                })),
                (pid_id(), proptest::option::of(pid_id())).prop_map(|(g, r)| {
                    let mut s = start_of(g);
                    if let Record::Start(st) = &mut s {
                        st.root = r;
                    }
                    s
                }),
            ]
        }

        #[test]
        fn the_genuine_journal_attributes_the_job_and_nothing_else() {
            let t = targets(&to_bytes(&genuine()));
            assert_eq!(t, vec![id(300, 300), id(301, 301), id(302, 302)]);
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn truncation_never_widens(cut in 0usize..2000) {
                let bytes = to_bytes(&genuine());
                let base = targets(&bytes);
                let t = targets(&bytes[..cut.min(bytes.len())]);
                prop_assert!(t.iter().all(|x| base.contains(x)), "{t:?} vs {base:?}");
            }

            #[test]
            fn bit_flips_never_widen(flips in proptest::collection::vec((0usize..2000, 0u8..8), 1..8)) {
                let mut bytes = to_bytes(&genuine());
                let base = targets(&bytes);
                let n = bytes.len();
                for (at, bit) in flips {
                    bytes[at % n] ^= 1 << bit;
                }
                let t = targets(&bytes);
                prop_assert!(t.iter().all(|x| base.contains(x)), "{t:?} vs {base:?}");
            }

            #[test]
            fn forged_records_never_widen(
                inserts in proptest::collection::vec((0usize..8, forged()), 1..6)
            ) {
                let mut records = genuine();
                let base = targets(&to_bytes(&records));
                for (at, r) in inserts {
                    let at = at.min(records.len());
                    records.insert(at, r);
                }
                let t = targets(&to_bytes(&records));
                prop_assert!(t.iter().all(|x| base.contains(x)), "{t:?} vs {base:?}\n{records:#?}");
            }
        }
    }
}
