//! What a sweep learns from the guard's journal: which processes were born into the job
//! (the strongest evidence there is, [`crate::classify::Rule::GuardLineage`]), the step and
//! test markers each one inherited, and what the guard warned about. Pure data, built from
//! the records; tied to processes by identity (pid and start time), never by pid alone.

use std::collections::HashMap;

use crate::model::{Markers, ProcessId, Snapshot};

use super::journal::{Journal, Mode, Record, Warning};

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
    known: HashMap<ProcessId, Known>,
}

impl Lineage {
    pub fn from_journal(j: &Journal) -> Lineage {
        let mut l = Lineage::default();
        if j.torn_tail {
            l.journal_problems
                .push("its last line is torn (the guard died while writing it)".into());
        }
        let garbled = j.bad_lines - usize::from(j.torn_tail);
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
        let mut alive: std::collections::HashSet<i32> = std::collections::HashSet::new();
        for r in &j.records {
            match r {
                Record::Start(s) => {
                    l.guards.push(s.guard);
                    l.roots.extend(s.root);
                    l.modes.push(s.mode);
                    l.last_stop = None;
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

    #[cfg(test)]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::journal::{parse, Birth, Exec, Parent, Seed, Start, Via};
    use crate::test_support::{proc_at, snapshot_of};

    fn id(pid: i32, t: u64) -> ProcessId {
        ProcessId {
            pid,
            start_ticks: t,
        }
    }

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
                argv: vec![],
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
                argv: vec!["server".into()],
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
        scrubbed.markers = Markers::default();
        let mut own = proc_at(3, 2, 2);
        own.markers.github_action = Some("own-step".into());
        let stranger = proc_at(12, 1, 6);
        let mut snap = snapshot_of(vec![scrubbed, own, stranger], 0);
        l.fill_markers(&mut snap);
        let m = &snap.processes[0].markers;
        assert_eq!(m.github_action.as_deref(), Some("step-a"));
        assert_eq!(m.pytest_current_test.as_deref(), Some("t.py::x (call)"));
        assert_eq!(
            m.runner_tracking_id, None,
            "evidence markers are never filled"
        );
        assert_eq!(m.inherited, vec!["GITHUB_ACTION", "PYTEST_CURRENT_TEST"]);
        // Its own marker stays its own.
        assert_eq!(
            snap.processes[1].markers.github_action.as_deref(),
            Some("own-step")
        );
        assert!(snap.processes[1].markers.inherited.is_empty());
        assert!(snap.processes[2].markers.is_empty());
    }
}
