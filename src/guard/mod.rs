//! The guard: a detached daemon that lives for the length of the job and journals every
//! job process's lineage at birth, so that a leak whose parent died (reparented to init)
//! or whose environment was scrubbed (MCP SDKs, an unset `RUNNER_TRACKING_ID`) is still
//! attributed to the job, the step and the test that started it. It is also a dead man's
//! switch: when the process it watches (the runner's worker, the job's root) dies and no
//! sweep came, it sweeps by itself.
//!
//! - [`journal`]: the on-disk JSON-lines format, beside the state file.
//! - [`tracker`]: events into records and warnings (pure).
//! - [`lineage`]: the journal digested for a sweep (pure).
//! - [`pipes`]: the pipe-holder alarm (a process left holding an exited step's output).
//! - [`daemon`]: `guard run`, the event loop and the dead man's switch.
//! - [`control`]: `guard start|stop|status`, and what `sweep` asks of the guard.
//! - [`pidfile`]: the guard's files, and who the pid file names (checked, never trusted).
//! - [`render`]: `guard status` and the guard's section of a sweep report, as text.
//! - this module: the guard's errors.
//!
//! It must not call up into `job` or `commands`: the dead man's sweep is handed to the
//! daemon as a callback.
//!
//! Files, for a state file `DIR/NAME.json`: `DIR/NAME.guard.pid`, `DIR/NAME.guard.log`,
//! `DIR/NAME.journal.jsonl`, and after a dead man's sweep `DIR/NAME.guard-report.json` and
//! `.txt`.

pub mod control;
pub mod daemon;
pub mod journal;
pub mod lineage;
pub mod pidfile;
pub mod pipes;
mod render;
pub mod tracker;

use std::io;
use std::path::PathBuf;

use crate::platform;

pub use control::{
    checked_watch, for_sweep, read_sweep_lineage, start, status, stop, AtSweep, JobFacts,
    StartOptions, Started, Stopped, STOP_TIMEOUT,
};
pub use pidfile::{exe_of, GuardPaths, PidFile};

#[derive(Debug, thiserror::Error)]
pub enum GuardError {
    #[error("start the guard ({exe}): {source}")]
    Spawn { exe: PathBuf, source: io::Error },
    #[error("start the guard: {reason} (its log: {log})")]
    NotReady { reason: String, log: PathBuf },
    #[error("{what} {path}: {source}")]
    File {
        what: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    #[error("use the guard's pid file {path}: {detail}; remove it if no guard runs")]
    PidFile { path: PathBuf, detail: String },
    #[error("stop the guard (pid {pid}): {detail}")]
    Stop { pid: i32, detail: String },
    #[error("find the process to watch: {0}")]
    Watch(String),
    #[error("start the guard: {0}")]
    Options(String),
    #[error("start the guard: {0}")]
    Setup(String),
    #[error(transparent)]
    Unsafe(crate::files::FileError),
    #[error(transparent)]
    State(#[from] crate::state::StateError),
    #[error(transparent)]
    Read(#[from] platform::ReadError),
}

impl GuardError {
    /// Whether the user's input is at fault (exit code 2), not the machine.
    pub fn is_usage(&self) -> bool {
        use crate::state::StateError as S;
        match self {
            GuardError::Watch(_)
            | GuardError::Options(_)
            | GuardError::PidFile { .. }
            | GuardError::Unsafe(_) => true,
            GuardError::State(S::Write { .. } | S::Read { .. }) => false,
            GuardError::State(_) => true,
            _ => false,
        }
    }
}

/// A refusal is the user's to fix (exit 2); anything else is the machine's.
pub(crate) fn file_error(what: &'static str, e: crate::files::FileError) -> GuardError {
    match e {
        crate::files::FileError::Io { path, source } => GuardError::File { what, path, source },
        refused => GuardError::Unsafe(refused),
    }
}
