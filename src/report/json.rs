//! The sweep report as JSON: a versioned wire type of its own, built from a
//! [`SweepOutcome`], written by `--report-json` and read back by `ci-janitor report`.
//! Every other renderer (terminal, annotations, summary, JUnit) reads this type, so a saved
//! report renders exactly as the live one did. The schema is documented in
//! `docs/report-schema.md`; a change that removes or re-means a field bumps
//! [`REPORT_SCHEMA_VERSION`], added fields do not.
//!
//! [`build`] is the one place where a sweep's data becomes report data, and so the one place
//! where command lines are redacted: nothing downstream sees a raw argv.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::classify::{Class, Flags, Hint, Rule};
use crate::kill::Fate;
use crate::model::{Argv, Bytes, Machine, MarkerSet};
use crate::redact::{self, Secrets};
pub use crate::settings::RanAs;
use crate::sweep::{PortOutcome, SweepOutcome};

pub const REPORT_SCHEMA_VERSION: u32 = 2;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub tool_version: String,
    pub baseline_taken_at_unix_ms: u64,
    pub swept_at_unix_ms: u64,
    pub machine: Machine,
    pub dry_run: bool,
    /// Leaks that fail the run (class `job`) and whether the policy failed it.
    pub leaked: usize,
    pub killed: usize,
    pub failed: bool,
    pub rounds: u32,
    pub elapsed_ms: u64,
    pub deadline_hit: bool,
    /// Appeared processes that had already exited (zombies awaiting their parent).
    pub zombies: usize,
    pub processes: Vec<ReportProcess>,
    pub ports: Vec<ReportPort>,
    /// The reported processes (job, unattributed, allowed) grouped by masked command line,
    /// ranked: failing first, then most processes first. Recomputed on load when absent.
    #[serde(default)]
    pub signatures: Vec<Signature>,
    /// How many distinct secret values were redacted from command lines.
    #[serde(default)]
    pub redacted_values: usize,
    /// Step names by `GITHUB_ACTION` id, when the caller found them ([`name_steps`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub step_names: BTreeMap<String, String>,
    /// The number of job processes over time, recorded by the guard. Absent when no guard
    /// ran: the summary's chart is drawn only from real samples.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub samples: Option<Vec<Sample>>,
    /// What a person should know about how the job was told apart (nothing named it; a
    /// caller not taken as a root), in sentences.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notes: Vec<String>,
    /// What ran the sweep, so advice names the knobs the reader has: the Action's inputs
    /// or the command line's flags.
    #[serde(default, skip_serializing_if = "RanAs::is_cli")]
    pub ran_as: RanAs,
    /// Why the job was stuck, captured before the kill when it was cancelled or timed out
    /// (see `docs/report-schema.md`, "hang").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hang: Option<crate::diagnose::Hang>,
    /// Processes that held an exited job process's stdout or stderr pipe while something
    /// still read it (the guard's live alarm, and `run`'s wait for its command's pipes).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub pipe_holders: Vec<PipeHolder>,
    /// The known-leaks gate (`--known-leaks FILE`, or the base commit's check run): which
    /// entries were used, how many leaks were known and how many new. Absent without one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub known_leaks: Option<KnownLeaks>,
}

/// The known-leaks gate's result (see `crate::gate`): every entry with how many leaked
/// processes it matched, and the totals.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KnownLeaks {
    /// Where the tolerated leaks come from: `file` (a known-leaks file) or `base` (the
    /// digest in the base commit's check run).
    pub source: KnownSource,
    /// The file's path, or `OWNER/REPO@SHA` of the base commit.
    pub origin: String,
    /// Failing leaked processes an entry tolerates (within its max, not expired).
    pub known: usize,
    /// Failing leaked processes no entry tolerates: unmatched, above a max, or matched by
    /// an expired entry. `--fail-on new` fails on these only.
    pub new: usize,
    /// Entries that matched no leaked process: the file can lose them.
    pub removable: usize,
    /// `--strict-known-leaks`: a removable entry fails the run too.
    pub strict: bool,
    pub entries: Vec<KnownEntryUse>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KnownSource {
    File,
    Base,
}

/// One entry of a known-leaks file, and what it matched in this run.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KnownEntryUse {
    /// The masked command line (a signature's `command`) the entry tolerates; for an
    /// entry from a base digest that did not carry it, the signature id.
    pub signature: String,
    /// The signature's id (`signature_id` of the command).
    pub id: String,
    /// The most processes it tolerates.
    pub max: usize,
    /// Leaked processes it matched (all of them, above `max` too).
    pub seen: usize,
    /// Of those, the ones it tolerated.
    pub known: usize,
    /// `used`, `over` (more than `max`), `expired` or `unused` (removable).
    pub status: EntryStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The last day it is tolerated (`YYYY-MM-DD`, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum EntryStatus {
    Used,
    Over,
    Expired,
    Unused,
}

impl EntryStatus {
    pub fn describe(self) -> &'static str {
        match self {
            EntryStatus::Used => "used",
            EntryStatus::Over => "over its max: the excess is new",
            EntryStatus::Expired => "expired: its leaks are new",
            EntryStatus::Unused => "matched nothing: remove it",
        }
    }
}

/// How a failing signature's processes fared against the known-leaks gate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignatureGate {
    /// Processes an entry tolerated.
    pub known: usize,
    /// Processes none did.
    pub new: usize,
}

/// A process left holding the stdout or stderr pipe of a job process that exited, while
/// the pipe still had a reader: that reader waits for end-of-file until the holder exits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PipeHolder {
    /// `guard` (its live alarm) or `run` (its bounded wait for the command's pipes).
    pub seen_by: String,
    /// The step (`GITHUB_ACTION`) of the process that exited, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// The process that exited, and its command line (redacted).
    pub pid: i32,
    pub command: String,
    /// `stdout`, `stderr`, or `stdout and stderr`.
    pub stream: String,
    pub holder_pid: i32,
    pub holder_command: String,
    /// Who started the holder (its parent at birth), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by_pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_by_command: Option<String>,
    /// When the holder started (ms since the epoch), when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since_unix_ms: Option<u64>,
    /// The same, in one sentence.
    pub sentence: String,
}

/// The classes a signature groups: the reported ones, in their rank order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureClass {
    /// The job's leaks: they fail the run.
    Job,
    /// Appeared with no evidence: reported, left alone.
    Unattributed,
    /// The job's, accepted by `--allow`: killed, not failing.
    Allowed,
}

impl SignatureClass {
    /// Its name in the report (`job`, `unattributed`, `allowed`).
    pub fn as_str(self) -> &'static str {
        match self {
            SignatureClass::Job => "job",
            SignatureClass::Unattributed => "unattributed",
            SignatureClass::Allowed => "allowed",
        }
    }

    /// The class of a process, when it is one a signature groups.
    pub fn of(class: &Class) -> Option<SignatureClass> {
        match class {
            Class::Job => Some(SignatureClass::Job),
            Class::Unattributed => Some(SignatureClass::Unattributed),
            Class::Allowed { .. } => Some(SignatureClass::Allowed),
            _ => None,
        }
    }
}

/// What the check after the kill found of a socket a leak listened on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PortState {
    Freed,
    /// The same socket is still open.
    StillHeld,
    /// Gone, but something else listens on the same address now.
    Reused,
    /// Not checked (a dry run).
    NotChecked,
}

/// Leaked processes that share a masked command line.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Signature {
    /// First 12 hex digits of the SHA-256 of `command`: stable across runs.
    pub id: String,
    /// `job` (fails the run), `unattributed` or `allowed`.
    pub class: SignatureClass,
    /// The command line, redacted, with numbers, temp paths, hashes and UUIDs masked
    /// (`<N>`, `<tmp>`, `<hash>`, `<uuid>`); control characters shown as `\xNN`.
    pub command: String,
    pub count: usize,
    pub pids: Vec<i32>,
    /// TCP/UDP ports its processes listened on.
    pub ports: Vec<u16>,
    /// Every listening socket label (`tcp 127.0.0.1:8000`, `unix /tmp/s.sock`).
    pub listening: Vec<String>,
    /// `GITHUB_ACTION` of the steps that started them, most frequent first.
    pub steps: Vec<Tally>,
    /// `PYTEST_CURRENT_TEST` of the tests that started them, most frequent first.
    pub tests: Vec<Tally>,
    /// `PYTEST_XDIST_WORKER` values (`gw0`, ...).
    pub xdist_workers: Vec<String>,
    /// Every attribution rule that matched one of them.
    pub evidence: Vec<Rule>,
    /// How they ended, most frequent first.
    pub fates: Vec<FateTally>,
    /// A `--allow` pattern that accepts every one of them (and the same leak next run).
    pub allow_pattern: String,
    /// (`job`, with a known-leaks gate) how many are known and how many new.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<SignatureGate>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tally {
    pub value: String,
    pub count: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FateTally {
    /// The fate's name (`terminated`, `killed`, `unkillable`, ..., or `not-signalled`).
    pub fate: String,
    pub count: usize,
    /// The longest time from SIGTERM to exit (terminated) or to SIGKILL (killed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_after_ms: Option<u64>,
}

/// One guard sample: how many of the job's processes were alive at an instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sample {
    pub at_unix_ms: u64,
    pub processes: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReportProcess {
    pub pid: i32,
    pub start_ticks: u64,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub uid: Option<u32>,
    pub comm: Bytes,
    pub argv: Argv,
    pub exe: Option<Bytes>,
    pub cwd: Option<Bytes>,
    pub markers: MarkerSet,
    #[serde(flatten)]
    pub class: Class,
    pub evidence: Flags<Rule>,
    /// The marker variable behind `run-marker` or `ci-marker` evidence. (Not `marker`:
    /// that name is the other-job class's, flattened into the same object.)
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub marked_by: Option<String>,
    /// For an unattributed process: what it shares with the sweep (never evidence).
    #[serde(default, skip_serializing_if = "Flags::is_empty")]
    pub hints: Flags<Hint>,
    pub fate: Option<Fate>,
    pub round: u32,
    pub listening: Vec<String>,
}

impl ReportProcess {
    /// The command line for people: argv joined by spaces, or `[comm]` when argv is empty
    /// (a zombie, a kernel thread, a process we may not read).
    pub fn command_line(&self) -> String {
        if self.argv.is_empty() {
            format!("[{}]", self.comm.lossy())
        } else {
            self.argv.join_lossy()
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReportPort {
    pub socket: String,
    pub held_by: Vec<i32>,
    /// `freed`, `still-held`, `reused` or `not-checked`.
    pub outcome: PortState,
    /// Pids holding it afterwards (still-held, reused).
    pub now_held_by: Vec<i32>,
}

/// A report and the secret values that were redacted out of it. The secrets are for
/// `::add-mask::` only and are never written anywhere else.
#[derive(Debug, Clone)]
pub struct Built {
    pub report: Report,
    pub secrets: Secrets,
}

/// Builds the report of a sweep, with command lines redacted and signatures computed.
///
/// It takes the sweep's outcome: each entry's strings move into its report entry, and the
/// rest of the process is dropped, so the process table is never held twice (at 5,000
/// leaked processes a copy was 3.6 MiB).
pub fn build(outcome: SweepOutcome, failed: bool) -> Built {
    let mut secrets = Secrets::default();
    let leaked = outcome.failing_leaks().count();
    let killed = outcome.killed();
    let SweepOutcome {
        baseline_taken_at_unix_ms,
        first,
        entries,
        ports,
        zombies,
        rounds,
        elapsed,
        deadline_hit,
        dry_run,
        distrusted: _,
    } = outcome;
    let crate::model::Snapshot {
        taken_at_unix_ms: swept_at_unix_ms,
        machine,
        ..
    } = first;
    let mut report = Report {
        schema_version: REPORT_SCHEMA_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        baseline_taken_at_unix_ms,
        swept_at_unix_ms,
        machine,
        dry_run,
        leaked,
        killed,
        failed,
        rounds,
        elapsed_ms: elapsed.as_millis() as u64,
        deadline_hit,
        zombies,
        processes: entries
            .into_iter()
            .map(|e| {
                let p = e.process;
                ReportProcess {
                    pid: p.id.pid,
                    start_ticks: p.id.start_ticks,
                    ppid: p.ppid,
                    pgid: p.pgid,
                    sid: p.sid,
                    uid: p.uid,
                    comm: p.comm,
                    argv: p.argv,
                    exe: p.exe,
                    cwd: p.cwd,
                    markers: p.markers,
                    class: e.class,
                    evidence: e.evidence,
                    marked_by: e.marker.map(str::to_owned),
                    hints: e.hints,
                    fate: e.fate,
                    round: e.round,
                    listening: e.listening,
                }
            })
            .collect(),
        ports: ports
            .iter()
            .map(|p| {
                let (state, now): (PortState, &[crate::model::ProcessId]) = match &p.outcome {
                    PortOutcome::Freed => (PortState::Freed, &[]),
                    PortOutcome::StillHeld(v) => (PortState::StillHeld, v),
                    PortOutcome::Reused(v) => (PortState::Reused, v),
                    PortOutcome::NotChecked => (PortState::NotChecked, &[]),
                };
                ReportPort {
                    socket: p.listener.label(),
                    held_by: p.held_by.iter().map(|i| i.pid).collect(),
                    outcome: state,
                    now_held_by: now.iter().map(|i| i.pid).collect(),
                }
            })
            .collect(),
        signatures: Vec::new(),
        redacted_values: 0,
        step_names: BTreeMap::new(),
        samples: None,
        notes: Vec::new(),
        ran_as: RanAs::Cli,
        hang: None,
        pipe_holders: Vec::new(),
        known_leaks: None,
    };
    redact_report(&mut report, &mut secrets);
    report.signatures = super::signature::compute(&report.processes);
    Built { report, secrets }
}

/// Redacts every command line (and test marker, and process name) in `report`, in place.
fn redact_report(report: &mut Report, secrets: &mut Secrets) {
    for p in &mut report.processes {
        p.argv = redact::redact_argv(&p.argv, secrets);
        let comm: Argv = std::iter::once(p.comm.as_bytes()).collect();
        if let Some(comm) = redact::redact_argv(&comm, secrets).first() {
            p.comm = Bytes::from(comm);
        }
        p.markers
            .change("PYTEST_CURRENT_TEST", |t| redact::redact_text(t, secrets));
    }
    report.redacted_values = report.redacted_values.max(secrets.len());
}

/// Records step names (by `GITHUB_ACTION` id) for the renderers, e.g. from the workflow
/// file or the jobs API. Names are shown next to ids; ids stay the key.
pub fn name_steps(report: &mut Report, names: &BTreeMap<String, String>) {
    report
        .step_names
        .extend(names.iter().map(|(k, v)| (k.clone(), v.clone())));
}

/// Why a saved report could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("read the report {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("parse the report {path}: {source} (is it a file written by --report-json?)")]
    Parse {
        path: String,
        source: serde_json::Error,
    },
    #[error(
        "read the report {path}: schema version {found} is not {REPORT_SCHEMA_VERSION} \
         (render it with the ci-janitor version that wrote it)"
    )]
    Version { path: String, found: u32 },
}

/// The largest report read back (100,000 leaked processes take about 100 MB).
pub const MAX_REPORT_BYTES: u64 = 256 << 20;

/// Reads a saved report. Command lines are redacted again (a no-op on reports this version
/// wrote) and signatures computed when the file has none.
pub fn load(path: &Path) -> Result<Report, LoadError> {
    let shown = path.display().to_string();
    // A regular file only (a FIFO must not hang us), and no bigger than a report can be.
    let bytes = crate::files::read_input(path, MAX_REPORT_BYTES).map_err(|e| LoadError::Read {
        path: shown.clone(),
        source: e.into(),
    })?;
    #[derive(Deserialize)]
    struct Version {
        schema_version: u32,
    }
    let v: Version = serde_json::from_slice(&bytes).map_err(|source| LoadError::Parse {
        path: shown.clone(),
        source,
    })?;
    if v.schema_version != REPORT_SCHEMA_VERSION {
        return Err(LoadError::Version {
            path: shown,
            found: v.schema_version,
        });
    }
    let mut report: Report = serde_json::from_slice(&bytes).map_err(|source| LoadError::Parse {
        path: shown,
        source,
    })?;
    let mut secrets = Secrets::default();
    redact_report(&mut report, &mut secrets);
    if report.signatures.is_empty() {
        report.signatures = super::signature::compute(&report.processes);
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;

    #[test]
    fn json_round_trips() {
        for b in [
            fixtures::prefect(),
            fixtures::mcp(),
            fixtures::clean(),
            fixtures::hostile(),
        ] {
            let json = serde_json::to_string_pretty(&b.report).unwrap();
            let back: Report = serde_json::from_str(&json).unwrap();
            assert_eq!(back, b.report);
            // And through a file, the way `ci-janitor report` reads it.
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("report.json");
            std::fs::write(&path, &json).unwrap();
            assert_eq!(load(&path).unwrap(), b.report);
        }
    }

    #[test]
    fn mcp_json() {
        insta::assert_json_snapshot!(fixtures::mcp().report);
    }

    #[test]
    fn hostile_json_holds_no_secret() {
        let b = fixtures::hostile();
        let json = serde_json::to_string_pretty(&b.report).unwrap();
        for secret in ["hunter2", "ghp_aBc", "pa55w0rd", "t0k3n", "abc.def.ghi"] {
            assert!(!json.contains(secret), "{secret} in the JSON report");
        }
        insta::assert_json_snapshot!(b.report);
    }

    #[test]
    fn prefect_signatures_json() {
        let r = fixtures::prefect().report;
        assert_eq!(r.signatures.len(), 1);
        let mut s = r.signatures[0].clone();
        // 82 of each: the first three say enough.
        s.pids.truncate(3);
        s.ports.truncate(3);
        s.listening.truncate(3);
        insta::assert_json_snapshot!(s);
    }

    #[test]
    fn older_reports_get_signatures_on_load() {
        let b = fixtures::mcp();
        let mut v = serde_json::to_value(&b.report).unwrap();
        let obj = v.as_object_mut().unwrap();
        obj.remove("signatures");
        obj.remove("redacted_values");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("old.json");
        std::fs::write(&path, v.to_string()).unwrap();
        assert_eq!(load(&path).unwrap().signatures, b.report.signatures);
    }

    #[test]
    fn saved_reports_are_redacted_again_on_load() {
        let mut r = fixtures::clean().report;
        r.processes = fixtures::mcp().report.processes;
        r.processes[0].argv = ["srv", "--token", "s3cr3t-value"].into();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("raw.json");
        std::fs::write(&path, serde_json::to_vec(&r).unwrap()).unwrap();
        let loaded = load(&path).unwrap();
        assert_eq!(loaded.processes[0].argv.get(2), Some(&b"***"[..]));
    }

    #[test]
    fn bad_files_are_input_errors() {
        let dir = tempfile::tempdir().unwrap();
        let missing = load(&dir.path().join("nope.json")).unwrap_err();
        assert!(matches!(missing, LoadError::Read { .. }), "{missing}");
        let garbage = dir.path().join("garbage.json");
        std::fs::write(&garbage, "{not json").unwrap();
        assert!(matches!(
            load(&garbage).unwrap_err(),
            LoadError::Parse { .. }
        ));
        let future = dir.path().join("future.json");
        std::fs::write(&future, r#"{"schema_version": 99}"#).unwrap();
        let e = load(&future).unwrap_err();
        assert!(matches!(e, LoadError::Version { found: 99, .. }), "{e}");
        assert!(e.to_string().contains("schema version 99"), "{e}");
    }
}
