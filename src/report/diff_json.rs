//! The JSON that `ci-janitor diff --json` prints: its own versioned wire type, apart from
//! the internal model, so the model can change without breaking scripts that read this.

use serde::{Deserialize, Serialize};

use crate::model::{Argv, Bytes, MarkerSet, Process, ProcessId, Snapshot};

pub const DIFF_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
pub struct DiffReport {
    pub schema_version: u32,
    pub baseline_taken_at_unix_ms: u64,
    pub now_taken_at_unix_ms: u64,
    /// Processes that appeared and are alive, in pid order.
    pub appeared: Vec<AppearedProcess>,
    /// Appeared processes that already exited but were not reaped yet.
    pub zombies: Vec<ProcessId>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AppearedProcess {
    pub pid: i32,
    pub start_ticks: u64,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub uid: Option<u32>,
    pub state: char,
    pub comm: Bytes,
    pub argv: Argv,
    pub exe: Option<Bytes>,
    pub cwd: Option<Bytes>,
    pub markers: MarkerSet,
    /// Labels of the sockets it listens on (`tcp 127.0.0.1:8000`).
    pub listening: Vec<String>,
}

pub fn build(
    baseline: &Snapshot,
    now: &Snapshot,
    appeared: &[&Process],
    zombies: &[&Process],
) -> DiffReport {
    DiffReport {
        schema_version: DIFF_SCHEMA_VERSION,
        baseline_taken_at_unix_ms: baseline.taken_at_unix_ms,
        now_taken_at_unix_ms: now.taken_at_unix_ms,
        appeared: appeared
            .iter()
            .map(|p| AppearedProcess {
                pid: p.id.pid,
                start_ticks: p.id.start_ticks,
                ppid: p.ppid,
                pgid: p.pgid,
                sid: p.sid,
                uid: p.uid,
                state: p.state,
                comm: p.comm.clone(),
                argv: p.argv.clone(),
                exe: p.exe.clone(),
                cwd: p.cwd.clone(),
                markers: p.markers.clone(),
                listening: now.listeners_of(p.id).map(|l| l.label()).collect(),
            })
            .collect(),
        zombies: zombies.iter().map(|p| p.id).collect(),
    }
}
