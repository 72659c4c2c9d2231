//! The command line as the user typed it: clap structs with raw values only. What the
//! values mean (durations, defaults from the environment, paths) is worked out once, in
//! [`crate::settings`].

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Typical use:
  ci-janitor snapshot                 # at the start of a job: remember what was running
  ...run your tests...
  ci-janitor diff                     # what your job started that is still alive (kills nothing)

Exit codes: 0 nothing leaked (or the policy passes), 1 leaks found and the policy fails,
2 bad usage or bad input, 3 internal error.
Environment: CI_JANITOR_LOG sets the log filter (e.g. debug); logs go to stderr.";

/// Find the processes a CI job started and left running, kill them group by group, and
/// report them.
#[derive(Debug, Parser)]
#[command(name = "ci-janitor", version, about, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Record the baseline: every process and listening socket alive now.
    ///
    /// Run it first thing in a job. Processes in the baseline are never touched later.
    Snapshot(SnapshotArgs),
    /// Show what appeared since the snapshot and is still alive, as a process forest with
    /// the ports each process listens on. Kills nothing.
    Diff(DiffArgs),
}

#[derive(Debug, Args)]
pub struct StateArg {
    /// The state file [default: $RUNNER_TEMP/ci-janitor/state.json under GitHub Actions,
    /// else $XDG_RUNTIME_DIR/ci-janitor/state.json, else a per-user temp directory]
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct SnapshotArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// Also print the snapshot as JSON on stdout.
    #[arg(long)]
    pub print: bool,
}

#[derive(Debug, Args)]
pub struct DiffArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// Print JSON instead of a tree.
    #[arg(long)]
    pub json: bool,
    /// Colour: auto (on a terminal, unless NO_COLOR is set), always or never.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl Cli {
    pub fn parse_from_args(args: impl IntoIterator<Item = OsString>) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(args)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }
}
