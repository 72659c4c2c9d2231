//! The command line as the user typed it: clap structs with raw values only. What the
//! values mean (durations, defaults from the environment, paths) is worked out once, in
//! [`crate::settings`].

use std::ffi::OsString;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

const AFTER_HELP: &str = "\
Typical use:
  ci-janitor snapshot                 # at the start of a job: remember what was running
  ...run your tests...
  ci-janitor diff                     # what your job started that is still alive (kills nothing)
  ci-janitor sweep                    # kill it, group by group; exit 1 if anything leaked
  ci-janitor run -- pytest -n auto    # or all in one: run a command, then sweep its leftovers
  ci-janitor guard start              # after the snapshot: track lineage (sweep stops it)

Exit codes: 0 nothing leaked (or the policy passes), 1 leaks found and the policy fails,
2 bad usage or bad input, 3 internal error.
Environment: CI_JANITOR_LOG sets the log filter (e.g. debug); logs go to stderr.";

/// `--version`: the version, the commit it was built from and the target it runs on.
pub const LONG_VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("CI_JANITOR_COMMIT"),
    ", ",
    env!("CI_JANITOR_TARGET"),
    ")"
);

/// Find the processes a CI job started and left running, kill them group by group, and
/// report them.
/// A duration as the command line writes it (`5s`, `500ms`, `1.5`, `2m`): parsed once,
/// by clap, so a bad one is refused with the flag's name before anything runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Dur(pub Duration);

impl std::str::FromStr for Dur {
    type Err = String;
    fn from_str(text: &str) -> Result<Dur, String> {
        parse_duration(text).map(Dur)
    }
}

impl TryFrom<String> for Dur {
    type Error = String;
    fn try_from(text: String) -> Result<Dur, String> {
        text.parse()
    }
}

impl From<Dur> for String {
    fn from(d: Dur) -> String {
        d.to_string()
    }
}

impl std::fmt::Display for Dur {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ms = self.0.as_millis();
        if ms % 1000 == 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

/// Parses `5s`, `500ms`, `1.5s`, `2m`, or a bare number of seconds.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| !(c.is_ascii_digit() || c == '.')) {
        Some(i) => (&t[..i], &t[i..]),
        None => (t, "s"),
    };
    let value: f64 = num
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (try 5s, 500ms or 2m)"))?;
    let secs = match unit {
        "ms" => value / 1000.0,
        "s" | "" => value,
        "m" | "min" => value * 60.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use ms, s or m)")),
    };
    if !secs.is_finite() || !(0.0..=86_400.0).contains(&secs) {
        return Err(format!("{text:?} is out of range (0 to 24h)"));
    }
    Ok(Duration::from_secs_f64(secs))
}

#[derive(Debug, Parser)]
#[command(name = "ci-janitor", version = LONG_VERSION, about, after_help = AFTER_HELP)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Record the baseline: every process and listening socket alive now.
    ///
    /// Run it first thing in a job. Processes in the baseline are never touched later.
    #[command(after_help = "Examples:
  ci-janitor snapshot                          # state in the default place (see --state)
  ci-janitor snapshot --state /tmp/job.json    # a state file of your choosing
  ci-janitor snapshot --print | jq '.processes | length'")]
    Snapshot(SnapshotArgs),
    /// Show what appeared since the snapshot and is still alive, as a process forest with
    /// the ports each process listens on. Kills nothing.
    #[command(after_help = "Examples:
  ci-janitor diff                 # what is new since the snapshot, as trees with ports
  ci-janitor diff --json | jq .   # the same as data")]
    Diff(DiffArgs),
    /// Kill what the job started and left running, group by group (TERM, grace, KILL),
    /// check its ports are free again, report, and fail when anything leaked.
    ///
    /// Only processes that appeared since the snapshot AND carry evidence that the job
    /// started them are signalled. The evidence, strongest first: the lineage the guard
    /// recorded at each process's birth (its parent was the job's); this job's markers in
    /// its environment (CI_JANITOR_RUN from the snapshot, RUNNER_TRACKING_ID and other CIs'
    /// job ids); live descent from the job's root process (the runner's worker, or `run`);
    /// descent from a job process. A name, a session or a cgroup is never evidence.
    /// Processes alive at snapshot time are never touched.
    #[command(after_help = "Examples:
  ci-janitor sweep                                   # kill and report; exit 1 on a leak
  ci-janitor sweep --dry-run                         # report what would be killed
  ci-janitor sweep --grace 2s --allow 'comm:redis-server' --ignore 'exe:/opt/agent/*'
  ci-janitor sweep --fail-on never --report-json leaks.json --junit leaks.xml
  ci-janitor report leaks.json                       # read the report again later")]
    Sweep(SweepArgs),
    /// Run a command, then sweep everything it left behind.
    ///
    /// The command runs under ci-janitor as a child subreaper, so even daemons that double
    /// fork and call setsid stay its descendants. SIGINT/SIGTERM/SIGHUP are forwarded to
    /// it; when it exits (or is interrupted), its leftovers are killed and reported.
    /// Exit status: the command's own when it failed, else 1 if it leaked (and --fail-on
    /// says so), else 0.
    #[command(
        after_help = "Example:\n  ci-janitor run -- pytest -n auto\n  ci-janitor run --grace 2s --allow 'comm:redis-server' -- make test"
    )]
    Run(RunArgs),
    /// What the GitHub Action's steps run (inputs from INPUT_* variables).
    ///
    /// pre: take the baseline and mark later steps (CI_JANITOR_RUN via $GITHUB_ENV).
    /// main: the same when pre did not run (`uses: ./`). post: sweep, annotate, summarise,
    /// set outputs, fail on leaks. snapshot / sweep: the composite sub-actions' halves.
    Action(ActionArgs),
    /// Install or remove the self-hosted runner's job hooks, which sweep every job on that
    /// runner without changing any workflow.
    #[command(after_help = "Examples:
  sudo ci-janitor hooks install --runner-dir /home/runner/actions-runner
  ci-janitor hooks install --runner-dir ~/actions-runner --fail-on leak --grace 2s
  ci-janitor hooks uninstall --runner-dir ~/actions-runner
Restart the runner service afterwards: it reads its .env at start.")]
    Hooks(HooksArgs),
    /// Render a saved JSON report (from --report-json) again: as text, as the job summary's
    /// Markdown, as GitHub annotations, or as JUnit XML.
    #[command(after_help = "Examples:
  ci-janitor report \"$RUNNER_TEMP/ci-janitor/report.json\"   # the Action's report
  ci-janitor report leaks.json --format junit > leaks.xml")]
    Report(ReportArgs),
    /// Write or refresh a known-leaks file from a JSON report: the leaks a job is known to
    /// leave, tolerated (killed, reported as known) until fixed, so that `--fail-on new`
    /// fails only on new ones.
    #[command(
        name = "known-leaks",
        after_help = "The file (TOML, e.g. .github/ci-janitor-known-leaks.toml):
  version = 1
  [[leak]]
  signature = \"python3 -m http.server <N> --bind 127.0.0.1\"  # a report's masked command
  max = 1                          # at most this many processes tolerated
  step = \"__run_2\"                 # optional glob on the step (id or name)
  test = \"tests/test_api.py::*\"    # optional glob on PYTEST_CURRENT_TEST
  reason = \"the api fixture leaks its server (#123)\"
  owner = \"@team-api\"
  expires = 2027-03-01             # optional: after this day its leaks are new

Examples:
  ci-janitor known-leaks write .github/ci-janitor-known-leaks.toml report.json --owner @me
  ci-janitor known-leaks update .github/ci-janitor-known-leaks.toml report.json
  ci-janitor sweep --known-leaks .github/ci-janitor-known-leaks.toml --fail-on new"
    )]
    KnownLeaks(KnownLeaksArgs),
    /// Compare the failing leaks of two JSON reports: new, fixed and unchanged signatures
    /// with their counts.
    #[command(
        name = "diff-reports",
        after_help = "Examples:
  ci-janitor diff-reports base/report.json head/report.json
  ci-janitor diff-reports base.json head.json --format markdown >> \"$GITHUB_STEP_SUMMARY\"
  ci-janitor diff-reports base.json head.json --format json --exit-code"
    )]
    DiffReports(DiffReportsArgs),
    /// The background tracker for the length of the job: it records every new process's
    /// lineage at birth (parent chain, first command line, step and test), so that a
    /// leak that was reparented or scrubbed its environment is still attributed; and it
    /// sweeps by itself if the job's root dies without a sweep.
    #[command(after_help = "Examples:
  ci-janitor snapshot && ci-janitor guard start   # at the job's start
  ci-janitor guard status                         # is it running, what has it seen
  ci-janitor sweep                                # stops it, then sweeps")]
    Guard(GuardArgs),
    /// Why is the job stuck: each of the job's processes with its state, wait channel, CPU
    /// use over a short sample, the TCP connections and pipes between them, listening
    /// ports and stacks (py-spy for Python when installed), and a one-sentence verdict per
    /// blocked process where the facts settle it. Kills nothing.
    #[command(after_help = "Examples:
  ci-janitor diagnose                      # the job of the default state file
  ci-janitor diagnose --state /tmp/job.json --json | jq '.verdicts'
  CI_JANITOR_PY_SPY=off ci-janitor diagnose   # without Python stacks")]
    Diagnose(DiagnoseArgs),
}

#[derive(Debug, Args)]
pub struct DiagnoseArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// Print the report as JSON (the `hang` section of the sweep report).
    #[arg(long)]
    pub json: bool,
    /// The most the capture may take.
    #[arg(long, value_name = "DUR", default_value = "5s")]
    pub bound: Dur,
}

#[derive(Debug, Args)]
pub struct HooksArgs {
    #[command(subcommand)]
    pub command: HooksCommand,
}

#[derive(Debug, Subcommand)]
pub enum HooksCommand {
    /// Write the job-started/job-completed scripts and point the runner's .env at them.
    Install {
        /// The folder the runner was configured in (holds config.sh, run.sh, .env).
        #[arg(long, value_name = "DIR")]
        runner_dir: PathBuf,
        /// Where to keep the state between a job's start and its end [default:
        /// RUNNER_DIR/ci-janitor/state; not RUNNER_TEMP, which the runner empties].
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Whether a leak fails the job (`leak`) or is only reported (`never`).
        #[arg(long, value_enum, default_value_t = FailOn::Never, value_name = "WHEN")]
        fail_on: FailOn,
        /// SIGTERM to SIGKILL.
        #[arg(long, value_name = "DUR", default_value = "5s")]
        grace: Dur,
        /// Replace hooks that another tool installed.
        #[arg(long)]
        force: bool,
    },
    /// Remove the scripts and the .env entries that `install` wrote.
    Uninstall {
        #[arg(long, value_name = "DIR")]
        runner_dir: PathBuf,
    },
    /// What the job-started script runs.
    #[command(hide = true)]
    JobStarted {
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
    },
    /// What the job-completed script runs.
    #[command(hide = true)]
    JobCompleted {
        #[arg(long, value_name = "DIR")]
        state_dir: PathBuf,
        #[arg(long, value_enum, default_value_t = FailOn::Never)]
        fail_on: FailOn,
        #[arg(long, default_value = "5s")]
        grace: Dur,
    },
}

#[derive(Debug, Args)]
pub struct ActionArgs {
    #[arg(value_enum)]
    pub phase: ActionPhase,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ActionPhase {
    Pre,
    Main,
    Post,
    Snapshot,
    Sweep,
}

#[derive(Debug, Args)]
pub struct GuardArgs {
    #[command(subcommand)]
    pub action: GuardAction,
}

#[derive(Debug, Subcommand)]
pub enum GuardAction {
    /// Start the guard in the background and return once it listens (a guard already
    /// running for this state file is left as it is).
    Start(GuardStartArgs),
    /// Stop the guard (nothing to do when none runs). `sweep` does this first by itself.
    Stop(GuardStateArgs),
    /// Whether the guard runs, how it sees processes, and what it has journaled.
    Status(GuardStatusArgs),
    /// The guard itself, as `start` runs it (detached, in a session of its own).
    #[command(hide = true)]
    Run(GuardRunArgs),
}

#[derive(Debug, Args)]
pub struct GuardStartArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// A per-job process to watch: its descendants are the job, and if it exits without
    /// a sweep the guard sweeps (its dead man's switch). It must be an ancestor of
    /// `guard start` other than pid 1 [default: `ci-janitor run` when under it, else the
    /// runner's per-job worker (Runner.Worker, Agent.Worker); without either, the guard
    /// attributes by the job's markers and waits for the sweep]
    #[arg(long, value_name = "PID")]
    pub watch: Option<i32>,
    /// Warn when more than N live job processes share one command line.
    #[arg(long, value_name = "N", default_value_t = 20)]
    pub warn_over: usize,
    /// Poll /proc even where the proc connector works.
    #[arg(long, hide = true)]
    pub poll: bool,
    /// The proc connector's receive buffer in bytes (tests of dropped events).
    #[arg(long, hide = true, value_name = "BYTES")]
    pub rcvbuf: Option<usize>,
    /// How the dead man's sweep sweeps: the same options as `sweep`.
    #[command(flatten)]
    pub sweep: SweepOpts,
}

#[derive(Debug, Args)]
pub struct GuardStateArgs {
    #[command(flatten)]
    pub state: StateArg,
}

#[derive(Debug, Args)]
pub struct GuardStatusArgs {
    #[command(flatten)]
    pub state: StateArg,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct GuardRunArgs {
    #[arg(long, value_name = "FILE")]
    pub state: PathBuf,
    /// PID:START_TICKS of the process to watch (the dead man's switch).
    #[arg(long)]
    pub watch: Option<String>,
    /// PID:START_TICKS of the job's root: what is born below it is the job's.
    #[arg(long)]
    pub root: Option<String>,
    #[arg(long, default_value_t = 20)]
    pub warn_over: usize,
    #[arg(long)]
    pub poll: bool,
    #[arg(long)]
    pub rcvbuf: Option<usize>,
    /// The job's facts (JSON) gathered by `guard start`.
    #[arg(long)]
    pub context: Option<String>,
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
    #[arg(long, conflicts_with = "export")]
    pub print: bool,
    /// Give the job a marker of its own and print `export` lines for a POSIX shell:
    /// `eval "$(ci-janitor snapshot --export)"` marks everything the shell starts from now
    /// on (CI_JANITOR_RUN) and tells later commands where the state is (CI_JANITOR_STATE).
    #[arg(long)]
    pub export: bool,
    /// Read every process's details too (argv, job markers, exe, cwd, cgroup, real uid).
    /// By default the baseline records identity, parentage, state, name, owner and
    /// sockets, which is all a later sweep needs, at a fraction of the cost.
    #[arg(long)]
    pub full: bool,
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

/// Options shared by `sweep`, `run` and `guard start` (for the guard's dead man's sweep).
#[derive(Debug, Clone, Args, serde::Serialize, serde::Deserialize)]
pub struct SweepOpts {
    /// How long processes get to exit after SIGTERM before SIGKILL (e.g. 5s, 500ms).
    #[arg(long, value_name = "DUR", default_value = "5s")]
    pub grace: Dur,
    /// The most the whole sweep may take, re-scans for respawned children included.
    #[arg(long, value_name = "DUR", default_value = "30s")]
    pub deadline: Dur,
    /// Report what would be killed; signal nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// When to exit 1: `leak` (any leaked job process), `new` (only leaks the known-leaks
    /// file, or the base commit's run, does not tolerate) or `never` (report only).
    #[arg(long, value_enum, default_value_t = FailOn::Leak, value_name = "WHEN")]
    pub fail_on: FailOn,
    /// Leaks tolerated until fixed (see `ci-janitor known-leaks --help`): a leak an entry
    /// matches within its max is killed and reported as known; `--fail-on new` fails only
    /// on the others.
    #[arg(long, value_name = "FILE")]
    #[serde(default)]
    pub known_leaks: Option<PathBuf>,
    /// Fail when an entry of --known-leaks matched nothing (by default a warning: the
    /// entry can go).
    #[arg(long)]
    #[serde(default)]
    pub strict_known_leaks: bool,
    /// Under GitHub Actions: post a check run (and a pull-request comment) through the
    /// API with this token [env: CI_JANITOR_GITHUB_TOKEN].
    #[arg(
        long,
        env = "CI_JANITOR_GITHUB_TOKEN",
        hide_env_values = true,
        value_name = "TOKEN"
    )]
    #[serde(skip)]
    pub github_token: Option<String>,
    /// With a token: do not post the `ci-janitor` check run.
    #[arg(long)]
    #[serde(default)]
    pub no_check_run: bool,
    /// With a token: do not comment on the pull request.
    #[arg(long)]
    #[serde(default)]
    pub no_pr_comment: bool,
    /// The most the GitHub API may take, all requests together (each request gets at most
    /// 5 s); never more than what --deadline leaves after the sweep, nor less than 2 s.
    #[arg(long, value_name = "DUR", default_value = "10s")]
    #[serde(default = "default_api_timeout")]
    pub api_timeout: Dur,
    /// Leaks matching PATTERN are killed but do not fail the run. PATTERN is a glob on the
    /// command line (`'uvicorn *'`), or `comm:GLOB` / `exe:GLOB`. Repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub allow: Vec<String>,
    /// Processes matching PATTERN are never touched nor counted. Repeatable.
    #[arg(long, value_name = "PATTERN")]
    pub ignore: Vec<String>,
    /// Add PATTERN to the protected shared daemons (dockerd, sshd, Gradle daemon, ...).
    #[arg(long, value_name = "PATTERN")]
    pub protect: Vec<String>,
    /// Do not protect the shipped list of shared daemons.
    #[arg(long)]
    pub no_default_protect: bool,
    /// Also kill processes that appeared during the job with no evidence that the job
    /// started them (by default they are only reported).
    #[arg(long)]
    pub kill_unattributed: bool,
    /// Write the report as JSON to FILE [default under GitHub Actions:
    /// $RUNNER_TEMP/ci-janitor/report.json].
    #[arg(long, value_name = "FILE")]
    pub report_json: Option<PathBuf>,
    /// Write the report as JUnit XML to FILE (one test case per leaked command), for the
    /// test UI of GitLab, Jenkins and others.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Append the report as Markdown to FILE [default: $GITHUB_STEP_SUMMARY when set].
    #[arg(long, value_name = "FILE")]
    pub summary: Option<PathBuf>,
    /// Colour: auto (on a terminal, unless NO_COLOR is set), always or never.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
    /// The most the hang report taken before a kill may take (when the job is cancelled,
    /// `run` is signalled or times out, or the guard's dead man's switch fires).
    #[arg(long, value_name = "DUR", default_value = "5s")]
    #[serde(default = "default_capture_bound")]
    pub capture_bound: Dur,
}

fn default_capture_bound() -> Dur {
    Dur(Duration::from_secs(5))
}

fn default_api_timeout() -> Dur {
    Dur(Duration::from_secs(10))
}

impl Default for SweepOpts {
    /// The same values the command line defaults to, for the Action and the hooks, which
    /// build their options from inputs rather than flags.
    fn default() -> Self {
        SweepOpts {
            grace: Dur(Duration::from_secs(5)),
            deadline: Dur(Duration::from_secs(30)),
            dry_run: false,
            fail_on: FailOn::Leak,
            known_leaks: None,
            strict_known_leaks: false,
            github_token: None,
            no_check_run: false,
            no_pr_comment: false,
            api_timeout: default_api_timeout(),
            allow: Vec::new(),
            ignore: Vec::new(),
            protect: Vec::new(),
            no_default_protect: false,
            kill_unattributed: false,
            report_json: None,
            junit: None,
            summary: None,
            color: ColorChoice::Never,
            capture_bound: default_capture_bound(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FailOn {
    /// Any leak of the job fails.
    Leak,
    /// Only new leaks fail: those no entry of --known-leaks tolerates (under GitHub
    /// Actions on a pull request without a file, those the base commit's run did not have).
    New,
    /// Nothing fails.
    Never,
}

#[derive(Debug, Args)]
pub struct SweepArgs {
    #[command(flatten)]
    pub state: StateArg,
    #[command(flatten)]
    pub opts: SweepOpts,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub opts: SweepOpts,
    /// End the command after DUR: capture why it is stuck (the hang report), then stop it
    /// as SIGTERM would, and sweep.
    #[arg(long, value_name = "DUR")]
    pub timeout: Option<Dur>,
    /// After the command exits, wait at most DUR for the processes it left holding its
    /// stdout or stderr pipe to let go (like Go's WaitDelay); then name them and sweep.
    #[arg(long, value_name = "DUR", default_value = "5s")]
    pub pipe_wait: Dur,
    /// The command and its arguments (after `--`).
    #[arg(required = true, last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct KnownLeaksArgs {
    #[command(subcommand)]
    pub command: KnownLeaksCommand,
}

#[derive(Debug, Subcommand)]
pub enum KnownLeaksCommand {
    /// Write a new file tolerating every failing leak of REPORT at its count (refuses to
    /// replace an existing file without --force).
    Write {
        #[command(flatten)]
        files: KnownLeaksFiles,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Refresh FILE against REPORT: lower each max to what was seen, drop entries that
    /// matched nothing. A max is raised only with --raise; a new leak is added only with
    /// --add-new.
    Update {
        #[command(flatten)]
        files: KnownLeaksFiles,
        /// Raise a max to the count REPORT saw.
        #[arg(long)]
        raise: bool,
        /// Add entries for failing leaks no entry names.
        #[arg(long)]
        add_new: bool,
        /// Keep entries that matched nothing.
        #[arg(long)]
        keep_unused: bool,
    },
}

#[derive(Debug, Args)]
pub struct KnownLeaksFiles {
    /// The known-leaks file.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// The JSON report (--report-json) to take the leaks from.
    #[arg(value_name = "REPORT")]
    pub report: PathBuf,
    /// The owner of entries this adds.
    #[arg(long, default_value = "unassigned", value_name = "WHO")]
    pub owner: String,
    /// The reason of entries this adds.
    #[arg(
        long,
        default_value = "known when this file was written: fix the leak, then remove the entry",
        value_name = "TEXT"
    )]
    pub reason: String,
    /// The last day the entries this adds are tolerated (YYYY-MM-DD).
    #[arg(long, value_name = "DATE")]
    pub expires: Option<String>,
}

#[derive(Debug, Args)]
pub struct DiffReportsArgs {
    /// The base run's JSON report.
    #[arg(value_name = "BASE")]
    pub base: PathBuf,
    /// The head run's JSON report.
    #[arg(value_name = "HEAD")]
    pub head: PathBuf,
    #[arg(long, value_enum, default_value_t = DiffFormat::Text)]
    pub format: DiffFormat,
    /// Exit 1 when HEAD has a new leak.
    #[arg(long)]
    pub exit_code: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DiffFormat {
    Text,
    Json,
    Markdown,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    /// The JSON report to render.
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// What to render it as.
    #[arg(long, value_enum, default_value_t = ReportFormat::Text)]
    pub format: ReportFormat,
    /// Colour (text format): auto (on a terminal, unless NO_COLOR is set), always or never.
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReportFormat {
    /// What `sweep` prints on a terminal.
    Text,
    /// The GitHub job summary.
    Markdown,
    /// GitHub workflow commands (`::error`, `::notice`).
    Annotations,
    /// JUnit XML.
    Junit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl Cli {
    pub fn parse_from_args(args: impl IntoIterator<Item = OsString>) -> Result<Cli, clap::Error> {
        let args: Vec<OsString> = args.into_iter().collect();
        Cli::try_parse_from(&args).map_err(|e| run_without_separator(&args).unwrap_or(e))
    }
}

/// `ci-janitor run pytest -x` (no `--`): clap sees `pytest` as an unknown argument. Say
/// what was meant instead.
fn run_without_separator(args: &[OsString]) -> Option<clap::Error> {
    use clap::CommandFactory;
    let run_at = args.iter().position(|a| a == "run")?;
    if args[1..run_at]
        .iter()
        .any(|a| !a.to_string_lossy().starts_with('-'))
        || args.iter().any(|a| a == "--")
    {
        return None;
    }
    let rest: Vec<String> = args[run_at + 1..]
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let mut root = Cli::command();
    root.build();
    let run = root.find_subcommand_mut("run")?;
    // Our own options come first (with their values); the command starts after them.
    let takes_value = |flag: &str| {
        run.get_arguments().any(|a| {
            a.get_long().is_some_and(|l| flag == format!("--{l}")) && a.get_action().takes_values()
        })
    };
    let mut cmd_at = None;
    let mut i = 0;
    while i < rest.len() {
        let a = &rest[i];
        if !a.starts_with('-') {
            cmd_at = Some(i);
            break;
        }
        i += if !a.contains('=') && takes_value(a) {
            2
        } else {
            1
        };
    }
    let (ours, theirs) = rest.split_at(cmd_at?);
    let mut line = String::from("ci-janitor run");
    for a in ours
        .iter()
        .chain(std::iter::once(&"--".to_owned()))
        .chain(theirs)
    {
        line.push(' ');
        line.push_str(a);
    }
    Some(run.error(
        clap::error::ErrorKind::UnknownArgument,
        format!(
            "the command to run goes after `--`, so that its own options are not read as \
             ci-janitor's:\n\n  {line}\n"
        ),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_consistent() {
        Cli::command().debug_assert();
    }

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::parse_from_args(args.iter().map(OsString::from))
    }

    #[test]
    fn run_without_the_separator_suggests_it() {
        let e = parse(&["ci-janitor", "run", "--grace", "2s", "pytest", "-x"]).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("goes after `--`"), "{text}");
        assert!(
            text.contains("ci-janitor run --grace 2s -- pytest -x"),
            "{text}"
        );
        let e = parse(&["ci-janitor", "run", "pytest", "-n", "4"]).unwrap_err();
        assert!(
            e.to_string().contains("ci-janitor run -- pytest -n 4"),
            "{e}"
        );
        assert!(parse(&["ci-janitor", "run", "--", "pytest"]).is_ok());
        // Other mistakes keep clap's own message.
        let e = parse(&["ci-janitor", "sweep", "extra"]).unwrap_err();
        assert!(!e.to_string().contains("goes after"));
    }

    #[test]
    fn version_names_commit_and_target() {
        let v = Cli::command().render_version();
        assert!(v.starts_with(&format!(
            "ci-janitor {} (commit ",
            env!("CARGO_PKG_VERSION")
        )));
        assert!(v.contains(env!("CI_JANITOR_TARGET")), "{v}");
    }
    #[test]
    fn durations() {
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("0s"), Ok(Duration::ZERO));
        for bad in ["", "s", "-1s", "5h", "1e9", "nan", "5 s x", "99999999s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} parsed");
        }
    }
}
