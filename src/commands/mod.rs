//! The commands: one file each, entry points only. They read the command line and the
//! environment (through [`crate::settings`]), call the library below them, print, and say
//! how the run ends; the work itself lives in [`crate::job`] and below.
//!
//! This file holds `main`'s body: logging, parsing, dispatch, and the one place where an
//! error becomes an exit code.

mod action;
mod diagnose;
mod diff;
mod diff_reports;
mod guard;
mod hooks;
mod known_leaks;
mod report;
mod run;
mod snapshot;
mod sweep;

use std::io::Write;
use std::process::ExitCode;

use crate::cli::{Cli, Command};
use crate::errors::{AppError, Exit};
use crate::settings::{self, Env};

pub fn main() -> ExitCode {
    init_logging();
    let cli = match Cli::parse_from_args(std::env::args_os()) {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are "errors" to clap that print to stdout and exit 0.
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() {
                Exit::Usage.code()
            } else {
                0
            });
        }
    };
    match run(cli, &settings::process_env) {
        Ok(exit) => ExitCode::from(exit.code()),
        // A closed stdout (`ci-janitor diff | head`) is not a failure.
        Err(AppError::Output(e)) if e.kind() == std::io::ErrorKind::BrokenPipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ci-janitor: error: failed to {e}");
            ExitCode::from(e.exit().code())
        }
    }
}

fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CI_JANITOR_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let actions = settings::process_env("GITHUB_ACTIONS").as_deref() == Some("true");
    // Colour only on a terminal: a log read from a file or a CI's page must stay plain.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && settings::process_env("NO_COLOR").is_none_or(|v| v.is_empty());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(move || RunnerSafe {
            escape: actions,
            out: std::io::stderr(),
        })
        .with_target(false)
        .try_init();
}

/// The runner reads workflow commands from stderr as well: under Actions, a log line's
/// line breaks (a command line in a warning) are escaped, so only its first line starts a
/// line. One event is one `write`.
struct RunnerSafe {
    escape: bool,
    out: std::io::Stderr,
}

impl Write for RunnerSafe {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if !self.escape {
            return self.out.write(buf);
        }
        let text = String::from_utf8_lossy(buf);
        let (body, end) = match text.strip_suffix('\n') {
            Some(body) => (body, "\n"),
            None => (&*text, ""),
        };
        let line = format!("{}{end}", crate::report::github::escape_data(body));
        self.out.write_all(line.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

pub fn run(cli: Cli, env: Env<'_>) -> Result<Exit, AppError> {
    match cli.command {
        Command::Snapshot(args) => snapshot::run(args, env),
        Command::Diff(args) => diff::run(args, env),
        Command::Sweep(args) => sweep::run(args, env),
        Command::Run(args) => run::run(args, env),
        Command::Action(args) => action::run(args.phase, env),
        Command::Hooks(args) => hooks::run(args.command, env),
        Command::Report(args) => report::run(&args, env),
        Command::Guard(args) => guard::run(args, env),
        Command::Diagnose(args) => diagnose::run(args, env),
        Command::KnownLeaks(args) => known_leaks::run(args.command),
        Command::DiffReports(args) => diff_reports::run(&args),
    }
}
