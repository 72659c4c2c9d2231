//! Dispatch: parse the command line, run the command, and map every outcome to one of the
//! documented exit codes in one place.

use std::io::Write;
use std::process::ExitCode;

use crate::classify::Context;
use crate::cli::{Cli, Command, DiffArgs, FailOn, SnapshotArgs, SweepArgs};
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

/// Where the job's root is when no runner worker is among our ancestors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RootHint {
    /// Our parent: the shell or script that runs the snapshot, the tests and the sweep.
    Parent,
    /// Our grandparent: we were started by the Action's node shim, whose parent runs the
    /// job's steps.
    BelowShim,
}

/// Process names of runner implementations whose descendants are the job: GitHub's runner
/// worker, and `act`, which runs each step as its own child.
const RUNNERS: [&[u8]; 2] = [b"Runner.Worker", b"act"];

/// What the sweep knows about the job, from our environment and our place in the process
/// tree. Missing facts leave rules off; they never widen what is killed.
pub fn job_context(proc_root: &std::path::Path, env: Env<'_>, hint: RootHint) -> Context {
    let me = platform::read_one(proc_root, std::process::id() as i32);
    let mut ctx = Context {
        me: me.as_ref().map(|p| p.id),
        tracking_id: env("RUNNER_TRACKING_ID").filter(|v| !v.is_empty()),
        ..Default::default()
    };
    let Some(me) = me else { return ctx };
    // The job's root: the runner's worker if we run under one, else our parent (the shell
    // or script that runs the snapshot, the tests and the sweep). Never init: everything
    // descends from it.
    let mut parent = platform::read_one(proc_root, me.ppid);
    let mut root = match hint {
        RootHint::Parent => parent.clone(),
        RootHint::BelowShim => parent
            .as_ref()
            .and_then(|p| platform::read_one(proc_root, p.ppid)),
    };
    for _ in 0..64 {
        let Some(p) = parent else { break };
        if RUNNERS.contains(&p.comm.as_bytes()) {
            root = Some(p);
            break;
        }
        if p.ppid <= 1 {
            break;
        }
        parent = platform::read_one(proc_root, p.ppid);
    }
    ctx.job_root = root.filter(|r| r.id.pid > 1).map(|r| r.id);
    // The session rule holds for a session of our own, not init's (a container's pid 1
    // often leads the session everything runs in).
    let init_sid = platform::read_one(proc_root, 1).map(|p| p.sid);
    if me.sid > 1 && Some(me.sid) != init_sid {
        ctx.job_session = Some(me.sid);
    }
    ctx.job_cgroup = me.cgroup.clone();
    ctx
}

/// Writes the reports of a finished sweep and says how the run ends.
pub fn finish_sweep(
    outcome: &crate::sweep::SweepOutcome,
    settings: &settings::SweepSettings,
) -> Result<Exit, AppError> {
    finish_sweep_with(outcome, settings, None, None, "")
}

/// [`finish_sweep`], also writing the JSON report to `extra_report` (the Action keeps one
/// beside its state whatever the flags say), with `guard` (the guard's section) after the
/// text report. The exit code is the verdict: a report that could not be written (a file,
/// a full or closed stdout) is a warning, never an error.
pub fn finish_sweep_with(
    outcome: &crate::sweep::SweepOutcome,
    settings: &settings::SweepSettings,
    extra_report: Option<&std::path::Path>,
    samples: Option<Vec<report::json::Sample>>,
    guard: &str,
) -> Result<Exit, AppError> {
    let leaked = outcome.failing_leaks().count() > 0;
    let failed = leaked && settings.fail_on == FailOn::Leak;
    let mut built = report::json::build(outcome, failed);
    built.report.samples = samples;
    let mut settings = settings.clone();
    if settings.report_json.is_none() {
        settings.report_json = extra_report.map(std::path::Path::to_path_buf);
    }
    let verdict = if failed { Exit::Leaked } else { Exit::Clean };
    let problems =
        report::emit::write_reports(&built, &settings, &mut std::io::stdout().lock(), guard);
    let mut err = std::io::stderr().lock();
    for p in &problems {
        // A reader that closed our stdout early (`sweep | head`) is not worth a warning.
        if !matches!(p, report::emit::EmitError::Stdout(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
        {
            let _ = writeln!(
                err,
                "ci-janitor: warning: failed to {p} (the verdict stands)"
            );
        }
    }
    Ok(verdict)
}

fn sweep(args: SweepArgs, env: Env<'_>) -> Result<Exit, AppError> {
    let settings = settings::sweep_settings(&args.opts, env).map_err(AppError::Input)?;
    let path = settings::state_path(&args.state, env);
    let proc_root = ReadOptions::default().proc_root;
    let baseline = state::load(&path, &platform::boot_id(&proc_root)?)?;
    let ctx = job_context(&proc_root, env, RootHint::Parent);
    let swept = sweep_job(&baseline, &path, ctx, &settings, JobMarkers::Fallback)?;
    finish_job(&swept, &settings, None)
}

/// A finished sweep of a job, with what its guard (if one ran) had to say.
#[derive(Debug)]
pub struct JobSweep {
    pub outcome: crate::sweep::SweepOutcome,
    pub guard: crate::guard::AtSweep,
}

/// Writes the reports of a job's sweep, then the guard's notes, and says how it ends.
pub fn finish_job(
    swept: &JobSweep,
    settings: &settings::SweepSettings,
    extra_report: Option<&std::path::Path>,
) -> Result<Exit, AppError> {
    // The guard's journal gives the number of job processes over time: the summary's chart.
    let samples = swept
        .guard
        .lineage
        .as_ref()
        .map(|l| &l.samples)
        .filter(|s| s.len() >= 2)
        .map(|s| {
            s.iter()
                .map(|&(at_unix_ms, processes)| report::json::Sample {
                    at_unix_ms,
                    processes,
                })
                .collect()
        });
    // The guard's section holds command lines: it goes with the report (under Actions,
    // inside the group where workflow commands are stopped).
    finish_sweep_with(
        &swept.outcome,
        settings,
        extra_report,
        samples,
        &swept.guard.render(),
    )
}

/// How a baseline's recorded job markers combine with the sweep's own context.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobMarkers {
    /// Ours come first (from the environment); the baseline's fill what is missing.
    Fallback,
    /// Only the baseline's count: it is an earlier job's, swept on its behalf.
    Only,
}

/// Sweeps what appeared since `baseline` (saved at `state_path`), with `ctx` completed
/// from the baseline (the job markers it recorded; the process that took it, protected)
/// and from the guard beside the state, if one ran: it is stopped first (it must not watch
/// the sweep, nor be swept), and its journal's lineage is the strongest evidence.
pub fn sweep_job(
    baseline: &crate::model::Snapshot,
    state_path: &std::path::Path,
    mut ctx: Context,
    settings: &settings::SweepSettings,
    markers: JobMarkers,
) -> Result<JobSweep, AppError> {
    // The deadline covers stopping the guard: the sweep gets what is left of it.
    let started = std::time::Instant::now();
    let guard = crate::guard::for_sweep(state_path, settings.dry_run, started + settings.deadline);
    ctx.also_protected.extend(guard.protect.iter().copied());
    ctx.lineage = guard.lineage.clone().map(std::sync::Arc::new);
    let job = baseline.job.clone().unwrap_or_default();
    if markers == JobMarkers::Only || ctx.tracking_id.is_none() {
        ctx.tracking_id = job.tracking_id;
    }
    if markers == JobMarkers::Only || ctx.run_marker.is_none() {
        ctx.run_marker = job.marker;
    }
    if let Some(taker) = baseline.taken_by {
        ctx.also_protected.push(taker);
    }
    let outcome = crate::sweep::sweep(
        baseline,
        &ctx,
        &settings.policy,
        &crate::sweep::SweepOptions {
            grace: settings.grace,
            deadline: settings.deadline.saturating_sub(started.elapsed()),
            dry_run: settings.dry_run,
            proc_root: ReadOptions::default().proc_root,
            on_wait: report::progress::stderr_progress(),
        },
    )?;
    Ok(JobSweep { outcome, guard })
}

/// A baseline for a job: every process and socket now, with the job's markers recorded
/// (its RUNNER_TRACKING_ID, and the CI_JANITOR_RUN marker we give its steps).
pub fn job_baseline(env: Env<'_>, marker: &str) -> Result<crate::model::Snapshot, AppError> {
    let mut snap = platform::read_snapshot(&ReadOptions {
        detail: platform::Detail::None,
        ..ReadOptions::default()
    })?;
    crate::redact::redact_snapshot(&mut snap);
    snap.job = Some(crate::model::JobInfo {
        tracking_id: env("RUNNER_TRACKING_ID").filter(|v| !v.is_empty()),
        marker: Some(marker.to_owned()),
    });
    Ok(snap)
}

fn snapshot(args: SnapshotArgs, env: Env<'_>) -> Result<Exit, AppError> {
    let path = settings::state_path(&args.state, env);
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
    state::save(&path, &snap)?;
    let mut out = std::io::stdout().lock();
    if args.print {
        serde_json::to_writer_pretty(&mut out, &snap).map_err(std::io::Error::from)?;
        writeln!(out)?;
    }
    eprintln!(
        "ci-janitor: snapshot of {} processes and {} listening sockets in {:.1} ms -> {}",
        snap.processes.len(),
        snap.listeners.len(),
        snap.duration_us as f64 / 1000.0,
        path.display()
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
