//! ci-janitor: find the processes a CI job started and left running, kill them group by
//! group, and report them.
//!
//! The rooms, top to bottom; each may use the rooms below it, never one above
//! (`python3 scripts/check-layers.py` checks it, and that there is no cycle):
//!
//! ```text
//! commands ─> job, errors ─> report, gate, github, guard, sweep, workflow, diagnose ─> kill,
//! classify, diff, state, settings ─> cli, redact, signature, files, text ─> platform ─> model
//! ```
//!
//! - [`commands`]: the entry points, one file per command; `main`'s body and the one map
//!   from an error to an exit code. Nothing else parses arguments or prints verdicts.
//! - [`job`]: what *the job* is (markers, roots) and the one sweep routine every command
//!   uses. [`errors`]: every failure, with messages that read after "failed to".
//! - [`report`]: the report's wire types, built once from a sweep, and its renderers.
//! - [`gate`]: known leaks and new ones (the known-leaks file, base digests, report
//!   comparisons; pure). [`github`]: the check run and the pull-request comment through
//!   the API (octocrab; the only async code, on its own current-thread runtime).
//! - [`guard`]: the background tracker (lineage at birth, journal, dead man's switch).
//! - [`diagnose`]: why the job is stuck (facts and verdicts; kills nothing).
//! - [`sweep`] / [`kill`]: the rounds until nothing is left; one round of signals by
//!   identity.
//! - [`classify`]: whose each appeared process is, with the evidence (pure).
//! - [`diff`]: what appeared since the baseline (pure). [`state`]: the baseline on disk.
//! - [`settings`]: what the command line and the environment mean, read once.
//! - [`cli`]: the command line as typed. [`redact`]: secrets out of command lines before
//!   anything is printed or saved. [`signature`]: the one command-line masker. [`files`]: every file read or written.
//!   [`text`]: what people read that a process chose, on one escaped line.
//! - [`platform`]: the OS seam, `/proc` and netlink into [`model`] types, signals out.
//! - [`model`]: the plain data types (and the on-disk format).

pub(crate) mod classify;
pub(crate) mod cli;
pub mod commands;
pub(crate) mod diagnose;
pub(crate) mod diff;
pub(crate) mod errors;
pub(crate) mod files;
pub(crate) mod gate;
pub(crate) mod github;
pub(crate) mod guard;
pub(crate) mod job;
pub(crate) mod kill;
pub(crate) mod model;
pub(crate) mod platform;
pub(crate) mod redact;
pub(crate) mod report;
pub(crate) mod settings;
pub(crate) mod signature;
pub(crate) mod state;
pub(crate) mod sweep;
pub(crate) mod text;
pub(crate) mod workflow;

#[cfg(test)]
mod test_support;
