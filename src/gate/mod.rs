//! Leak-regression gating: which of a run's leaks are *known* (tolerated by an entry of a
//! known-leaks file, or by the base commit's run) and which are *new*.
//!
//! - [`file`]: the known-leaks file (TOML), parsed and written.
//! - [`apply`]: matches the report's failing leaks against the entries, process by process,
//!   and records the result in the report (`known_leaks`, and each signature's `gate`).
//! - [`digest`]: the compact signatures-and-counts digest a check run's summary carries,
//!   so that a pull request can be gated against its base commit without a file.
//! - [`diff`]: new, fixed and unchanged signatures between two reports (`diff-reports`).
//! - [`update`]: what `known-leaks write|update` does to a file, given a report.
//!
//! Pure: reports and entries in, results out. The key is the masked command line the
//! report already computes (`report::signature`), never a second masker.

pub mod diff;
pub mod digest;
pub mod file;
pub mod update;

use std::collections::HashMap;

use crate::classify::glob_match;
use crate::cli::FailOn;
use crate::report::json::{
    EntryStatus, KnownEntryUse, KnownLeaks, KnownSource, Report, ReportProcess, SignatureClass,
    SignatureGate,
};
use crate::report::signature::signature_id;

/// A tolerated leak: an entry of a known-leaks file, or a signature of the base run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The masked command line; `None` for a base signature known only by its id.
    pub signature: Option<String>,
    pub id: String,
    pub max: usize,
    pub step: Option<String>,
    pub test: Option<String>,
    pub owner: Option<String>,
    pub reason: Option<String>,
    /// The last day it is tolerated.
    pub expires: Option<(u16, u8, u8)>,
}

impl Rule {
    fn matches_signature(&self, command: &str, id: &str) -> bool {
        match &self.signature {
            Some(s) => s == command,
            None => self.id == id,
        }
    }

    fn matches_process(&self, p: &ReportProcess, report: &Report) -> bool {
        let step_ok = self.step.as_deref().is_none_or(|glob| {
            p.markers.github_action().is_some_and(|id| {
                glob_match(glob, id)
                    || report
                        .step_names
                        .get(id)
                        .is_some_and(|name| glob_match(glob, name))
            })
        });
        let test_ok = self.test.as_deref().is_none_or(|glob| {
            p.markers
                .pytest_current_test()
                .is_some_and(|t| glob_match(glob, t))
        });
        step_ok && test_ok
    }

    /// Whether the rule has expired on the day `today` (days since the epoch).
    pub fn expired(&self, today: i64) -> bool {
        self.expires.is_some_and(|(y, m, d)| {
            today > file::days_from_civil(i64::from(y), u32::from(m), u32::from(d))
        })
    }

    fn expires_text(&self) -> Option<String> {
        self.expires
            .map(|(y, m, d)| format!("{y:04}-{m:02}-{d:02}"))
    }
}

/// The tolerated leaks and where they come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub source: KnownSource,
    pub origin: String,
    pub rules: Vec<Rule>,
}

impl Known {
    /// The entries of a known-leaks file, in file order.
    pub fn from_file(f: &file::KnownLeaksFile, origin: &str) -> Known {
        Known {
            source: KnownSource::File,
            origin: origin.to_owned(),
            rules: f
                .leaks
                .iter()
                .map(|e| Rule {
                    id: signature_id(&e.signature),
                    signature: Some(e.signature.clone()),
                    max: e.max,
                    step: e.step.clone(),
                    test: e.test.clone(),
                    owner: Some(e.owner.clone()),
                    reason: Some(e.reason.clone()),
                    expires: e.expiry(),
                })
                .collect(),
        }
    }

    /// The base run's failing signatures, each tolerated up to its count there.
    pub fn from_digest(d: &digest::Digest, origin: &str) -> Known {
        Known {
            source: KnownSource::Base,
            origin: origin.to_owned(),
            rules: d
                .leaks
                .iter()
                .map(|l| Rule {
                    signature: None,
                    id: l.id.clone(),
                    max: l.count,
                    step: None,
                    test: None,
                    owner: None,
                    reason: Some("leaked on the base commit too".into()),
                    expires: None,
                })
                .collect(),
        }
    }
}

/// Days since the epoch of a time in ms since the epoch (UTC).
pub fn day_of(unix_ms: u64) -> i64 {
    (unix_ms / 86_400_000) as i64
}

/// Matches the report's failing leaks against `known`, process by process: each process
/// of a failing signature is known when the first entry that matches it (signature, step
/// and test globs) and is not expired still has room under its max; else it is new. An
/// expired or full entry still counts what it matched (`seen`), so the report says why.
/// The day of the sweep decides expiry. Records the result in the report.
pub fn apply(report: &mut Report, known: &Known, strict: bool) {
    let today = day_of(report.swept_at_unix_ms);
    let by_pid: HashMap<i32, &ReportProcess> =
        report.processes.iter().map(|p| (p.pid, p)).collect();
    let mut seen = vec![0usize; known.rules.len()];
    let mut used = vec![0usize; known.rules.len()];
    let mut gates = Vec::with_capacity(report.signatures.len());
    for s in &report.signatures {
        if s.class != SignatureClass::Job {
            gates.push(None);
            continue;
        }
        let candidates: Vec<usize> = (0..known.rules.len())
            .filter(|&i| known.rules[i].matches_signature(&s.command, &s.id))
            .collect();
        let mut gate = SignatureGate { known: 0, new: 0 };
        for pid in &s.pids {
            let matching: Vec<usize> = match by_pid.get(pid) {
                Some(p) => candidates
                    .iter()
                    .copied()
                    .filter(|&i| known.rules[i].matches_process(p, report))
                    .collect(),
                None => Vec::new(),
            };
            let room = matching
                .iter()
                .copied()
                .find(|&i| !known.rules[i].expired(today) && used[i] < known.rules[i].max);
            match (room, matching.first()) {
                (Some(i), _) => {
                    seen[i] += 1;
                    used[i] += 1;
                    gate.known += 1;
                }
                (None, Some(&i)) => {
                    seen[i] += 1;
                    gate.new += 1;
                }
                (None, None) => gate.new += 1,
            }
        }
        gates.push(Some(gate));
    }
    for (s, g) in report.signatures.iter_mut().zip(gates) {
        s.gate = g;
    }
    let entries: Vec<KnownEntryUse> = known
        .rules
        .iter()
        .enumerate()
        .map(|(i, r)| KnownEntryUse {
            signature: r.signature.clone().unwrap_or_else(|| r.id.clone()),
            id: r.id.clone(),
            max: r.max,
            seen: seen[i],
            known: used[i],
            status: if r.expired(today) {
                EntryStatus::Expired
            } else if seen[i] == 0 {
                EntryStatus::Unused
            } else if seen[i] > r.max {
                EntryStatus::Over
            } else {
                EntryStatus::Used
            },
            step: r.step.clone(),
            test: r.test.clone(),
            owner: r.owner.clone(),
            reason: r.reason.clone(),
            expires: r.expires_text(),
        })
        .collect();
    let gated = report.signatures.iter().filter_map(|s| s.gate);
    let (k, n) = gated.fold((0, 0), |(k, n), g| (k + g.known, n + g.new));
    report.known_leaks = Some(KnownLeaks {
        source: known.source,
        origin: known.origin.clone(),
        known: k,
        new: n,
        removable: entries.iter().filter(|e| e.seen == 0).count(),
        strict,
        entries,
    });
}

/// Whether the run fails: `leak` on any failing leak, `new` on new ones only (every
/// failing leak is new without a gate), `never` never; and, with the strict switch, on
/// an entry that matched nothing.
pub fn fails(report: &Report, fail_on: FailOn) -> bool {
    let strict = report
        .known_leaks
        .as_ref()
        .is_some_and(|k| k.strict && k.removable > 0);
    match fail_on {
        FailOn::Never => false,
        FailOn::Leak => report.leaked > 0 || strict,
        FailOn::New => match &report.known_leaks {
            Some(k) => k.new > 0 || strict,
            None => report.leaked > 0,
        },
    }
}

/// Checks the known-leaks file the settings name, before anything is swept: a bad file is
/// the user's input to fix.
pub fn check(settings: &crate::settings::SweepSettings) -> Result<(), file::FileError> {
    match &settings.known_leaks {
        Some(path) => file::load(path).map(|_| ()),
        None => Ok(()),
    }
}

/// The gate of a finished sweep: the known-leaks file the settings name, else (no file)
/// what `base` finds (the base commit's run, on a pull request). Records the result in
/// the report and returns the verdict (see [`fails`]). A file that cannot be read now
/// (it was checked before the sweep) is a note, and every leak is new.
pub fn run(
    report: &mut Report,
    settings: &crate::settings::SweepSettings,
    base: impl FnOnce(&mut Vec<String>) -> Option<Known>,
) -> bool {
    let known = match &settings.known_leaks {
        Some(path) => match file::load(path) {
            Ok(f) => Some(Known::from_file(&f, &path.display().to_string())),
            Err(e) => {
                report
                    .notes
                    .push(format!("failed to {e}; every leak counts as new"));
                None
            }
        },
        None => base(&mut report.notes),
    };
    if let Some(k) = &known {
        apply(report, k, settings.strict_known_leaks);
    }
    let failed = fails(report, settings.fail_on);
    report.failed = failed;
    failed
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::report::json::Report;

    /// A report whose failing leaks are `(command argv, count, test)`.
    pub fn report_of(leaks: &[(&[&str], usize, Option<&str>)]) -> Report {
        let mut b = crate::report::fixtures::clean();
        let mut pid = 1000;
        for (argv, count, test) in leaks {
            for _ in 0..*count {
                pid += 1;
                let mut p = crate::report::fixtures::prefect().report.processes[0].clone();
                p.pid = pid;
                p.ppid = 1;
                p.argv = argv.iter().map(|a| crate::model::Bytes::from(*a)).collect();
                p.listening.clear();
                match test {
                    Some(t) => p.markers.set("PYTEST_CURRENT_TEST", (*t).to_owned()),
                    None => drop(p.markers.remove("PYTEST_CURRENT_TEST")),
                }
                p.markers.set("GITHUB_ACTION", "__run_2".into());
                b.report.processes.push(p);
            }
        }
        b.report.leaked = b.report.processes.len();
        b.report.signatures = crate::report::signature::compute(&b.report.processes);
        b.report
    }

    fn file_of(text: &str) -> Known {
        Known::from_file(&file::parse(text, "k.toml").unwrap(), "k.toml")
    }

    const ENTRY: &str = "reason = \"r\"\nowner = \"o\"\n";

    #[test]
    fn three_signatures_against_two_entries_is_one_new() {
        let mut r = report_of(&[
            (&["sleep", "100"], 1, None),
            (&["redis-server", "--port", "7000"], 1, None),
            (&["node", "server.js"], 1, None),
        ]);
        let known = file_of(&format!(
            "version = 1\n[[leak]]\nsignature = \"sleep <N>\"\nmax = 1\n{ENTRY}\
             [[leak]]\nsignature = \"redis-server --port <N>\"\nmax = 1\n{ENTRY}"
        ));
        apply(&mut r, &known, false);
        let k = r.known_leaks.as_ref().unwrap();
        assert_eq!((k.known, k.new, k.removable), (2, 1, 0));
        let new: Vec<&str> = r
            .signatures
            .iter()
            .filter(|s| s.gate.is_some_and(|g| g.new > 0))
            .map(|s| s.command.as_str())
            .collect();
        assert_eq!(new, ["node server.js"]);
        assert!(fails(&r, FailOn::New));
        assert!(fails(&r, FailOn::Leak));
        assert!(!fails(&r, FailOn::Never));
        assert!(k.entries.iter().all(|e| e.status == EntryStatus::Used));
    }

    #[test]
    fn within_max_passes_fail_on_new() {
        let mut r = report_of(&[(&["sleep", "100"], 2, None)]);
        apply(
            &mut r,
            &file_of(&format!(
                "version = 1\n[[leak]]\nsignature = \"sleep <N>\"\nmax = 2\n{ENTRY}"
            )),
            false,
        );
        assert_eq!(r.known_leaks.as_ref().unwrap().new, 0);
        assert!(!fails(&r, FailOn::New));
        assert!(fails(&r, FailOn::Leak), "leak still fails on known leaks");
    }

    #[test]
    fn a_count_above_max_is_new() {
        let mut r = report_of(&[(&["sleep", "100"], 3, None)]);
        apply(
            &mut r,
            &file_of(&format!(
                "version = 1\n[[leak]]\nsignature = \"sleep <N>\"\nmax = 2\n{ENTRY}"
            )),
            false,
        );
        let k = r.known_leaks.as_ref().unwrap();
        assert_eq!((k.known, k.new), (2, 1));
        assert_eq!(k.entries[0].status, EntryStatus::Over);
        assert_eq!((k.entries[0].seen, k.entries[0].known), (3, 2));
        assert!(fails(&r, FailOn::New));
    }

    #[test]
    fn an_expired_entry_counts_as_new() {
        // The fixture's sweep is in October 2025.
        let mut r = report_of(&[(&["sleep", "100"], 1, None)]);
        apply(
            &mut r,
            &file_of(&format!(
                "version = 1\n[[leak]]\nsignature = \"sleep <N>\"\nmax = 2\n{ENTRY}expires = 2025-01-31\n"
            )),
            false,
        );
        let k = r.known_leaks.as_ref().unwrap();
        assert_eq!((k.known, k.new), (0, 1));
        assert_eq!(k.entries[0].status, EntryStatus::Expired);
        assert_eq!(k.entries[0].expires.as_deref(), Some("2025-01-31"));
        // Not yet expired: known.
        let mut r = report_of(&[(&["sleep", "100"], 1, None)]);
        apply(
            &mut r,
            &file_of(&format!(
                "version = 1\n[[leak]]\nsignature = \"sleep <N>\"\nmax = 2\n{ENTRY}expires = 2099-01-31\n"
            )),
            false,
        );
        assert_eq!(r.known_leaks.as_ref().unwrap().new, 0);
    }

    #[test]
    fn an_unused_entry_is_removable_and_fails_only_when_strict() {
        let text = format!(
            "version = 1\n[[leak]]\nsignature = \"sleep <N>\"\nmax = 1\n{ENTRY}\
             [[leak]]\nsignature = \"gone <N>\"\nmax = 1\n{ENTRY}"
        );
        for strict in [false, true] {
            let mut r = report_of(&[(&["sleep", "100"], 1, None)]);
            apply(&mut r, &file_of(&text), strict);
            let k = r.known_leaks.as_ref().unwrap();
            assert_eq!((k.new, k.removable), (0, 1));
            assert_eq!(k.entries[1].status, EntryStatus::Unused);
            assert_eq!(fails(&r, FailOn::New), strict);
        }
    }

    #[test]
    fn step_and_test_globs_narrow_an_entry() {
        let mut r = report_of(&[
            (&["sleep", "100"], 1, Some("tests/test_a.py::test_x (call)")),
            (&["sleep", "100"], 1, Some("tests/test_b.py::test_y (call)")),
        ]);
        apply(
            &mut r,
            &file_of(&format!(
                "version = 1\n[[leak]]\nsignature = \"sleep <N>\"\nmax = 5\ntest = \"tests/test_a.py::*\"\nstep = \"__run_*\"\n{ENTRY}"
            )),
            false,
        );
        let k = r.known_leaks.as_ref().unwrap();
        assert_eq!((k.known, k.new), (1, 1));
        // A step glob that matches no step: nothing known.
        let mut r = report_of(&[(&["sleep", "100"], 1, None)]);
        apply(
            &mut r,
            &file_of(&format!(
                "version = 1\n[[leak]]\nsignature = \"sleep <N>\"\nmax = 5\nstep = \"lint\"\n{ENTRY}"
            )),
            false,
        );
        assert_eq!(r.known_leaks.as_ref().unwrap().new, 1);
    }

    #[test]
    fn without_a_gate_every_leak_is_new() {
        let r = report_of(&[(&["sleep", "100"], 1, None)]);
        assert!(fails(&r, FailOn::New));
        let clean = crate::report::fixtures::clean().report;
        assert!(!fails(&clean, FailOn::New));
    }
}
