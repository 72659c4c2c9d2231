//! Running the `ci-janitor` binary from tests, and reading its JSON report back with types
//! declared here, independently of the crate's own (a renamed field must fail a test).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde::Deserialize;

use crate::support::{Ident, Spawned};

pub fn janitor_exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_ci-janitor"))
}

/// Removes from `c` the markers ci-janitor reads, so the caller's own (a CI run of these
/// tests has RUNNER_TRACKING_ID and GITHUB_ACTIONS) cannot leak into a test.
fn scrubbed(mut c: Command) -> Command {
    for var in [
        "RUNNER_TRACKING_ID",
        "GITHUB_ACTIONS",
        "CI_JANITOR_RUN",
        "RUNNER_TEMP",
        "NO_COLOR",
    ] {
        c.env_remove(var);
    }
    c.env("CI_JANITOR_LOG", "warn").stdin(Stdio::null());
    c
}

/// A `ci-janitor` command with a clean environment.
pub fn janitor() -> Command {
    scrubbed(Command::new(janitor_exe()))
}

/// The same command run in a new session (`setsid`), so that the sweep's "own session" rule
/// covers nothing but itself: a test's sweep must never reach processes of the session the
/// tests run in (a developer's shell, other tools).
pub fn janitor_in_new_session() -> Command {
    let mut c = Command::new("setsid");
    c.arg("--wait").arg(janitor_exe());
    scrubbed(c)
}

pub fn output_of(mut c: Command) -> Output {
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("cannot run {c:?}: {e}"));
    eprintln!(
        "--- {c:?} exited {:?}\n--- stdout:\n{}\n--- stderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Takes a snapshot into `dir/state.json` and returns its path.
pub fn snapshot(dir: &Path) -> PathBuf {
    let state = dir.join("state.json");
    let mut c = janitor();
    c.arg("snapshot").arg("--state").arg(&state);
    let out = output_of(c);
    assert!(out.status.success(), "snapshot failed");
    state
}

/// The fixture's JSON line, the first line of `stdout` that is a JSON object.
pub fn spawned_from(stdout: &[u8]) -> Spawned {
    let text = String::from_utf8_lossy(stdout);
    let line = text
        .lines()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no fixture JSON in output:\n{text}"));
    serde_json::from_str(line).unwrap_or_else(|e| panic!("bad fixture JSON {line:?}: {e}"))
}

#[derive(Debug, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    pub dry_run: bool,
    pub leaked: usize,
    pub killed: usize,
    pub failed: bool,
    pub rounds: u32,
    pub processes: Vec<ReportProcess>,
    pub ports: Vec<ReportPort>,
}

#[derive(Debug, Deserialize)]
pub struct ReportProcess {
    pub pid: i32,
    pub start_ticks: u64,
    #[serde(default)]
    pub comm: serde_json::Value,
    pub class: String,
    pub evidence: Vec<String>,
    pub fate: Option<FateJson>,
    #[serde(default)]
    pub protection: Option<serde_json::Value>,
    pub listening: Vec<String>,
}

#[derive(Debug, Deserialize)]
pub struct FateJson {
    pub fate: String,
}

#[derive(Debug, Deserialize)]
pub struct ReportPort {
    pub socket: String,
    pub held_by: Vec<i32>,
    pub outcome: String,
}

impl Report {
    pub fn read(path: &Path) -> Report {
        let bytes =
            std::fs::read(path).unwrap_or_else(|e| panic!("no report at {}: {e}", path.display()));
        let r: Report = serde_json::from_slice(&bytes)
            .unwrap_or_else(|e| panic!("report {} does not decode: {e}", path.display()));
        assert_eq!(r.schema_version, 2);
        r
    }

    pub fn by_ident(&self) -> HashMap<Ident, &ReportProcess> {
        self.processes
            .iter()
            .map(|p| {
                (
                    Ident {
                        pid: p.pid,
                        start_ticks: p.start_ticks,
                    },
                    p,
                )
            })
            .collect()
    }

    pub fn entry(&self, id: Ident) -> &ReportProcess {
        self.by_ident()
            .get(&id)
            .copied()
            .unwrap_or_else(|| panic!("{id:?} is not in the report: {self:#?}"))
    }

    pub fn fate(&self, id: Ident) -> String {
        self.entry(id)
            .fate
            .as_ref()
            .map_or_else(|| "none".to_owned(), |f| f.fate.clone())
    }
}
