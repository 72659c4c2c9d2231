//! Dispatch: parse the command line, run the command, and map every outcome to one of the
//! documented exit codes in one place.

use std::io::Write;
use std::process::ExitCode;

use crate::cli::{Cli, Command, DiffArgs, SnapshotArgs, SweepArgs};
use crate::job::{self, Caller, GuardInput, Job};
use crate::platform::{self, ReadOptions};
use crate::report;
use crate::settings::{self, Env};
use crate::state;

/// The documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Nothing leaked, or the policy passes: 0.
    Clean,
    /// Leaks were found and the policy fails the run: 1.
    Leaked,
    /// Bad usage or bad input; the message says what to fix: 2.
    Usage,
    /// Something failed that is not the user's input: 3.
    Internal,
    /// `run`: the command's own failing status, passed through.
    Command(u8),
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Clean => 0,
            Exit::Leaked => 1,
            Exit::Usage => 2,
            Exit::Internal => 3,
            Exit::Command(c) => c,
        }
    }
}

/// An error with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The user's input (a flag, a state file) is wrong.
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Read(#[from] platform::ReadError),
    #[error(transparent)]
    Guard(#[from] crate::guard::GuardError),
    #[error("write output: {0}")]
    Output(#[from] std::io::Error),
    #[error("{0}")]
    Internal(String),
}

impl AppError {
    fn exit(&self) -> Exit {
        use state::StateError as S;
        match self {
            AppError::Input(_) => Exit::Usage,
            AppError::State(S::Write { .. } | S::Read { .. }) => Exit::Internal,
            AppError::State(_) => Exit::Usage,
            AppError::Guard(e) if e.is_usage() => Exit::Usage,
            AppError::Guard(_) => Exit::Internal,
            AppError::Read(_) | AppError::Output(_) | AppError::Internal(_) => Exit::Internal,
        }
    }
}

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
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
        let line = format!("{}{end}", report::github::escape_data(body));
        self.out.write_all(line.as_bytes())?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

pub fn run(cli: Cli, env: Env<'_>) -> Result<Exit, AppError> {
    match cli.command {
        Command::Snapshot(args) => snapshot(args, env),
        Command::Diff(args) => diff(args, env),
        Command::Sweep(args) => sweep(args, env),
        Command::Run(args) => crate::run::run(args, env),
        Command::Action(args) => crate::action::run(args.phase, env),
        Command::Hooks(args) => crate::hooks::run(args.command, env),
        Command::Report(args) => report::saved::run(&args, env),
        Command::Guard(args) => crate::guard::command(args, env),
    }
}

fn sweep(args: SweepArgs, env: Env<'_>) -> Result<Exit, AppError> {
    let settings = settings::sweep_settings(&args.opts, env).map_err(AppError::Input)?;
    let path = settings::state_path(&args.state, env);
    let proc_root = ReadOptions::default().proc_root;
    let baseline = state::load(&path, &platform::boot_id(&proc_root)?)?;
    let job = Job::discover(&proc_root, env, Caller::Shell).with_baseline(&baseline, &path)?;
    let swept = job::sweep(&job, &baseline, &settings, GuardInput::Beside(&path))?;
    job::finish(&swept, &settings, None)
}

fn snapshot(args: SnapshotArgs, env: Env<'_>) -> Result<Exit, AppError> {
    let path = settings::state_path(&args.state, env);
    let mut markers = job::markers_from_env(env);
    let chain = args.export.then(|| {
        let chain = job::chain_marker(env, &job::new_marker("sh"));
        markers.ci_janitor_run = Some(chain.clone());
        chain
    });
    let mut snap = platform::read_snapshot(&ReadOptions {
        detail: if args.full {
            platform::Detail::All
        } else {
            platform::Detail::None
        },
        ..ReadOptions::default()
    })?;
    // The baseline's argv is never matched against (patterns look at processes alive at
    // sweep time), so it is saved and printed redacted like everything else.
    crate::redact::redact_snapshot(&mut snap);
    snap.job = Some(crate::model::JobInfo {
        markers: markers.identity(),
    });
    state::save(&path, &snap)?;
    let mut out = std::io::stdout().lock();
    if args.print {
        serde_json::to_writer_pretty(&mut out, &snap).map_err(std::io::Error::from)?;
        writeln!(out)?;
    }
    if let Some(chain) = &chain {
        // For `eval "$(ci-janitor snapshot --export)"`: everything the shell starts from
        // now on carries the marker, and later commands find the state.
        writeln!(
            out,
            "export CI_JANITOR_RUN={}\nexport CI_JANITOR_STATE={}",
            crate::hooks::sh_quote(chain),
            crate::hooks::sh_quote(
                &std::path::absolute(&path)
                    .unwrap_or_else(|_| path.clone())
                    .to_string_lossy()
            )
        )?;
    }
    let named: Vec<String> = markers
        .identity_pairs()
        .map(|(var, value)| format!("{var}={value}"))
        .collect();
    eprintln!(
        "ci-janitor: snapshot of {} processes and {} listening sockets in {:.1} ms -> {}; the \
         job is {}",
        snap.processes.len(),
        snap.listeners.len(),
        snap.duration_us as f64 / 1000.0,
        path.display(),
        if named.is_empty() {
            "named by no marker (use --export, `ci-janitor run`, or the guard)".to_owned()
        } else {
            format!("named by {}", named.join(", "))
        }
    );
    Ok(Exit::Clean)
}

fn diff(args: DiffArgs, env: Env<'_>) -> Result<Exit, AppError> {
    let path = settings::state_path(&args.state, env);
    let opts = ReadOptions::default();
    let boot_id = platform::boot_id(&opts.proc_root)?;
    let baseline = state::load(&path, &boot_id)?;
    let mut now = platform::read_snapshot(&ReadOptions {
        host_facts: false,
        detail: platform::Detail::new_since(&baseline),
        ..opts
    })?;
    crate::redact::redact_snapshot(&mut now);
    let appeared = crate::diff::appeared(&baseline, &now);
    let zombies = crate::diff::appeared_zombies(&baseline, &now);
    let mut out = std::io::stdout().lock();
    if args.json {
        let report = report::diff_json::build(&baseline, &now, &appeared, &zombies);
        serde_json::to_writer_pretty(&mut out, &report).map_err(std::io::Error::from)?;
        writeln!(out)?;
        return Ok(Exit::Clean);
    }
    let age_s = now
        .taken_at_unix_ms
        .saturating_sub(baseline.taken_at_unix_ms) as f64
        / 1000.0;
    if appeared.is_empty() {
        writeln!(
            out,
            "Nothing appeared since the snapshot ({age_s:.1} s ago) that is still alive."
        )?;
    } else {
        let forest = crate::diff::forest(&appeared);
        let ports = crate::diff::listeners_of(&now, &appeared).len();
        writeln!(
            out,
            "{} process{} appeared since the snapshot ({age_s:.1} s ago) and {} alive, \
             holding {ports} listening socket{}:\n",
            appeared.len(),
            if appeared.len() == 1 { "" } else { "es" },
            if appeared.len() == 1 { "is" } else { "are" },
            if ports == 1 { "" } else { "s" },
        )?;
        let style = report::tree::Style {
            color: settings::use_color(args.color, env),
        };
        write!(out, "{}", report::tree::render_forest(&now, &forest, style))?;
    }
    if !zombies.is_empty() {
        writeln!(
            out,
            "\n({} more exited and wait to be reaped by their parent: zombies, not counted.)",
            zombies.len()
        )?;
    }
    Ok(Exit::Clean)
}
