//! ci-janitor: find the processes a CI job started and left running, kill them group by
//! group, and report them.
//!
//! The data flows one way:
//!
//! ```text
//! platform (reads /proc) -> model::Snapshot -> diff / classify (pure) -> kill (acts) -> report
//! ```
//!
//! - [`model`]: the plain data types (and the on-disk format).
//! - [`platform`]: the OS seam, `/proc` into [`model`] types and signals out.
//! - [`files`]: every file read or written: private directory, no symlinks, bounded.
//! - [`state`]: the baseline state file, sealed and checked.
//! - [`diff`]: what appeared since the baseline.
//! - [`classify`]: whose each appeared process is, with the evidence (pure).
//! - [`kill`] / [`sweep`]: one round of signals by identity; the rounds until nothing is left.
//! - [`guard`]: the background tracker: lineage at birth, journal, dead man's switch.
//! - [`run`]: `ci-janitor run -- CMD`, the command under a subreaper, then a sweep.
//! - [`redact`]: secrets in command lines replaced before anything is printed or saved.
//! - [`report`]: rendering for people and machines.
//! - [`cli`] / [`settings`] / [`app`]: the command line, its meaning, and dispatch.

pub(crate) mod classify;
pub(crate) mod cli;
pub mod commands;
pub(crate) mod diff;
pub(crate) mod errors;
pub(crate) mod files;
pub(crate) mod guard;
pub(crate) mod job;
pub(crate) mod kill;
pub(crate) mod model;
pub(crate) mod platform;
pub(crate) mod redact;
pub(crate) mod report;
pub(crate) mod settings;
pub(crate) mod state;
pub(crate) mod sweep;
pub(crate) mod workflow;

#[cfg(test)]
mod test_support;
