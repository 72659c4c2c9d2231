//! The sweep report as JSON: a versioned wire type of its own, built from a
//! [`SweepOutcome`], written by `--report-json` and read back by `ci-janitor report`.

use serde::{Deserialize, Serialize};

use crate::classify::{Class, Rule};
use crate::kill::Fate;
use crate::model::{Bytes, Machine, Markers};
use crate::sweep::{PortOutcome, SweepOutcome};

pub const REPORT_SCHEMA_VERSION: u32 = 1;

#[derive(Debug, Clone, Serialize, Deserialize)]
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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportProcess {
    pub pid: i32,
    pub start_ticks: u64,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub uid: Option<u32>,
    pub comm: Bytes,
    pub argv: Vec<Bytes>,
    pub exe: Option<Bytes>,
    pub cwd: Option<Bytes>,
    pub markers: Markers,
    #[serde(flatten)]
    pub class: Class,
    pub evidence: Vec<Rule>,
    pub fate: Option<Fate>,
    pub round: u32,
    pub listening: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReportPort {
    pub socket: String,
    pub held_by: Vec<i32>,
    /// `freed`, `still-held`, `reused` or `not-checked`.
    pub outcome: String,
    /// Pids holding it afterwards (still-held, reused).
    pub now_held_by: Vec<i32>,
}

pub fn build(outcome: &SweepOutcome, failed: bool) -> Report {
    Report {
        schema_version: REPORT_SCHEMA_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        baseline_taken_at_unix_ms: outcome.baseline_taken_at_unix_ms,
        swept_at_unix_ms: outcome.first.taken_at_unix_ms,
        machine: outcome.first.machine.clone(),
        dry_run: outcome.dry_run,
        leaked: outcome.failing_leaks().count(),
        killed: outcome.killed(),
        failed,
        rounds: outcome.rounds,
        elapsed_ms: outcome.elapsed.as_millis() as u64,
        deadline_hit: outcome.deadline_hit,
        zombies: outcome.zombies,
        processes: outcome
            .entries
            .iter()
            .map(|e| ReportProcess {
                pid: e.process.id.pid,
                start_ticks: e.process.id.start_ticks,
                ppid: e.process.ppid,
                pgid: e.process.pgid,
                sid: e.process.sid,
                uid: e.process.uid,
                comm: e.process.comm.clone(),
                argv: e.process.argv.clone(),
                exe: e.process.exe.clone(),
                cwd: e.process.cwd.clone(),
                markers: e.process.markers.clone(),
                class: e.class.clone(),
                evidence: e.evidence.clone(),
                fate: e.fate,
                round: e.round,
                listening: e.listening.clone(),
            })
            .collect(),
        ports: outcome
            .ports
            .iter()
            .map(|p| {
                let (name, now): (&str, &[crate::model::ProcessId]) = match &p.outcome {
                    PortOutcome::Freed => ("freed", &[]),
                    PortOutcome::StillHeld(v) => ("still-held", v),
                    PortOutcome::Reused(v) => ("reused", v),
                    PortOutcome::NotChecked => ("not-checked", &[]),
                };
                ReportPort {
                    socket: p.listener.label(),
                    held_by: p.held_by.iter().map(|i| i.pid).collect(),
                    outcome: name.into(),
                    now_held_by: now.iter().map(|i| i.pid).collect(),
                }
            })
            .collect(),
    }
}
