//! `ci-janitor action pre|main|post|snapshot|sweep`: what the GitHub Action's shims run.
//!
//! - `pre` (and `main` when `pre` did not run, as with `uses: ./`) takes the baseline,
//!   saves its path in `$GITHUB_STATE`, and marks every later step of the job through
//!   `$GITHUB_ENV` with `CI_JANITOR_RUN=<marker>`, so a leaked process keeps that evidence
//!   after it is orphaned even where the runner sets no `RUNNER_TRACKING_ID` (act) or a
//!   test suite removes it.
//! - `post` (always runs, also after failure and cancellation) sweeps, writes the report,
//!   annotations, summary and outputs, and fails the step when the job leaked.
//! - `snapshot` / `sweep` are the same two halves for the composite sub-actions, which
//!   have no pre/post and share the state through its default path.
//!
//! Inputs come from `INPUT_*` variables (the runner keeps the hyphens of the input names:
//! `INPUT_FAIL-ON-LEAK`), which is why the shims spawn us directly rather than through a
//! shell: dash drops variables whose names it cannot represent.

use std::path::PathBuf;

use crate::cli::{ActionPhase, Dur, FailOn};
use crate::errors::{AppError, Exit};
use crate::job::{self, Caller, GuardInput, Job};
use crate::platform::{self, ReadOptions};
use crate::settings::{self, Env, SweepSettings};
use crate::state;

/// The `$GITHUB_STATE` key that carries the state path from pre/main to post.
const STATE_KEY: &str = "ci_janitor_state";

pub fn run(phase: ActionPhase, env: Env<'_>) -> Result<Exit, AppError> {
    let inputs = Inputs::read(env).map_err(|e| {
        println!("::error title=ci-janitor: bad input::{}", escape_data(&e));
        AppError::Input(e)
    })?;
    match phase {
        ActionPhase::Pre | ActionPhase::Snapshot => begin(&inputs, env),
        ActionPhase::Main => match env(&format!("STATE_{STATE_KEY}")).filter(|v| !v.is_empty()) {
            Some(path) => {
                println!(
                    "ci-janitor: baseline taken in the pre step ({path}); the post step sweeps"
                );
                Ok(Exit::Clean)
            }
            None => begin(&inputs, env),
        },
        ActionPhase::Post => end(&inputs, env, true),
        ActionPhase::Sweep => end(&inputs, env, false),
    }
}

/// The action's inputs, as the runner passes them.
#[derive(Debug, Clone)]
pub struct Inputs {
    pub fail_on_leak: bool,
    pub grace: Dur,
    pub deadline: Dur,
    pub allow: Vec<String>,
    pub ignore: Vec<String>,
    pub kill_unattributed: bool,
    pub dry_run: bool,
    pub known_leaks: Option<PathBuf>,
    /// `fail-on`: leak, new or never; `None` derives it from `fail-on-leak` and
    /// `known-leaks`.
    pub fail_on: Option<FailOn>,
    pub strict_known_leaks: bool,
    pub github_token: Option<String>,
    pub check_run: bool,
    pub comment_on_pr: bool,
    pub api_timeout: Dur,
    pub state: Option<PathBuf>,
    pub job_status: Option<String>,
    pub report_json: Option<PathBuf>,
    pub junit: Option<PathBuf>,
}

/// An input by its name in action.yml: `INPUT_FAIL-ON-LEAK` as the runner passes it to a
/// node action, or `INPUT_FAIL_ON_LEAK` as the composite sub-actions pass it (a shell step
/// cannot rely on names with hyphens).
fn input(env: Env<'_>, name: &str) -> Option<String> {
    let upper = name.to_uppercase();
    env(&format!("INPUT_{upper}"))
        .or_else(|| env(&format!("INPUT_{}", upper.replace('-', "_"))))
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

fn bool_input(env: Env<'_>, name: &str, default: bool) -> Result<bool, String> {
    match input(env, name) {
        None => Ok(default),
        Some(v) => match v.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" | "on" => Ok(true),
            "false" | "no" | "0" | "off" => Ok(false),
            _ => Err(format!(
                "read the input `{name}`: it must be true or false, not {v:?}"
            )),
        },
    }
}

/// A duration input (`5s`, `500ms`, `2m`), checked under its own name.
fn duration_input(env: Env<'_>, name: &str, default: &str) -> Result<Dur, String> {
    let text = input(env, name).unwrap_or_else(|| default.to_owned());
    text.parse()
        .map_err(|e| format!("read the input `{name}`: {e}"))
}

/// One pattern per line, each checked under the input's name.
fn pattern_input(env: Env<'_>, name: &str) -> Result<Vec<String>, String> {
    let lines = list_input(env, name);
    for line in &lines {
        crate::classify::Pattern::parse(line)
            .map_err(|e| format!("read the input `{name}`: {e}"))?;
    }
    Ok(lines)
}

/// One pattern per line (blank lines and `#` comments skipped).
fn list_input(env: Env<'_>, name: &str) -> Vec<String> {
    input(env, name)
        .map(|v| {
            v.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

impl Inputs {
    pub fn read(env: Env<'_>) -> Result<Inputs, String> {
        Ok(Inputs {
            fail_on_leak: bool_input(env, "fail-on-leak", true)?,
            grace: duration_input(env, "grace-period", "5s")?,
            deadline: duration_input(env, "deadline", "20s")?,
            allow: pattern_input(env, "allow")?,
            ignore: pattern_input(env, "ignore")?,
            kill_unattributed: bool_input(env, "kill-unattributed", false)?,
            dry_run: bool_input(env, "dry-run", false)?,
            known_leaks: input(env, "known-leaks").map(PathBuf::from),
            fail_on: match input(env, "fail-on").as_deref() {
                None => None,
                Some("leak") => Some(FailOn::Leak),
                Some("new") => Some(FailOn::New),
                Some("never") => Some(FailOn::Never),
                Some(v) => {
                    return Err(format!(
                        "read the input `fail-on`: it must be leak, new or never, not {v:?}"
                    ))
                }
            },
            strict_known_leaks: bool_input(env, "strict-known-leaks", false)?,
            github_token: input(env, "github-token"),
            check_run: bool_input(env, "check-run", true)?,
            comment_on_pr: bool_input(env, "comment-on-pr", true)?,
            api_timeout: duration_input(env, "api-timeout", "10s")?,
            state: input(env, "state").map(PathBuf::from),
            job_status: input(env, "job-status"),
            report_json: input(env, "report-json").map(PathBuf::from),
            junit: input(env, "junit").map(PathBuf::from),
        })
    }

    fn sweep_settings(&self, env: Env<'_>) -> Result<SweepSettings, String> {
        // Every input was read and checked under its own name: only their combination
        // is left to check.
        if self.deadline.0 < self.grace.0 {
            return Err(format!(
                "use the input `deadline: {}` with `grace-period: {}`: the deadline is \
                 shorter, and it bounds the whole sweep, grace periods included",
                self.deadline, self.grace
            ));
        }
        let mut settings = settings::sweep_settings(&self.sweep_opts(), env)?;
        crate::gate::check(&settings).map_err(|e| format!("use the input `known-leaks`: {e}"))?;
        settings.ran_as = crate::report::json::RanAs::Action;
        settings.step_names = crate::workflow::step_names(env);
        Ok(settings)
    }

    /// The inputs as the options of `sweep` (the guard takes them for its dead man's
    /// sweep).
    fn sweep_opts(&self) -> crate::cli::SweepOpts {
        crate::cli::SweepOpts {
            grace: self.grace,
            deadline: self.deadline,
            dry_run: self.dry_run,
            // `fail-on` wins; else `fail-on-leak: false` is never, and with a known-leaks
            // file only new leaks fail.
            fail_on: match self.fail_on {
                Some(f) => f,
                None if !self.fail_on_leak => FailOn::Never,
                None if self.known_leaks.is_some() => FailOn::New,
                None => FailOn::Leak,
            },
            // Absolute: the guard's dead man's sweep runs from another directory.
            known_leaks: self
                .known_leaks
                .as_ref()
                .map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())),
            strict_known_leaks: self.strict_known_leaks,
            github_token: self.github_token.clone(),
            no_check_run: !self.check_run,
            no_pr_comment: !self.comment_on_pr,
            api_timeout: self.api_timeout,
            allow: self.allow.clone(),
            ignore: self.ignore.clone(),
            kill_unattributed: self.kill_unattributed,
            report_json: self.report_json.clone(),
            junit: self.junit.clone(),
            ..Default::default()
        }
    }
}

fn state_path(inputs: &Inputs, env: Env<'_>) -> PathBuf {
    inputs
        .state
        .clone()
        .or_else(|| {
            env(&format!("STATE_{STATE_KEY}"))
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| state::default_path(env))
}

/// A marker unique to this job: run, attempt, job, and 64 random bits.
pub fn new_job_marker(env: Env<'_>) -> String {
    new_marker(env)
}

fn new_marker(env: Env<'_>) -> String {
    let part = |k: &str| {
        env(k)
            .filter(|v| !v.is_empty())
            .map(|v| {
                v.chars()
                    .filter(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect::<String>()
            })
            .unwrap_or_else(|| "x".into())
    };
    job::new_marker(&format!(
        "gha-{}-{}-{}",
        part("GITHUB_RUN_ID"),
        part("GITHUB_RUN_ATTEMPT"),
        part("GITHUB_JOB")
    ))
}

fn begin(inputs: &Inputs, env: Env<'_>) -> Result<Exit, AppError> {
    let path = state_path(inputs, env);
    // Bad inputs fail the first step, not only the last.
    inputs.sweep_settings(env).map_err(|e| {
        println!("::error title=ci-janitor: bad input::{}", escape_data(&e));
        AppError::Input(e)
    })?;
    let marker = job::chain_marker(env, &new_marker(env));
    let mut markers = job::markers_from_env(env);
    markers.ci_janitor_run = Some(marker.clone());
    let snap = job::baseline(&markers, crate::platform::Detail::None)?;
    state::save(&path, &snap)?;
    append_file_command(env, "GITHUB_STATE", STATE_KEY, &path.to_string_lossy())?;
    // The guard records every process's lineage at birth for the rest of the job, watching
    // the runner (whose death without a post step makes it sweep by itself). The post
    // step's sweep stops it. Without it the sweep still works from markers and ancestry.
    let proc_root = ReadOptions::default().proc_root;
    let job = Job::discover(&proc_root, env, Caller::Runner);
    let (root, watch) = job::guard_roots(&job, &proc_root, None)?;
    let guard = crate::guard::start(
        &crate::guard::StartOptions {
            state: path.clone(),
            watch,
            root,
            session: job.session,
            cgroup: job.cgroup.clone(),
            warn_over: 20,
            force_poll: false,
            rcvbuf: None,
            markers,
            sweep: inputs.sweep_opts(),
        },
        env,
    );
    if let Err(e) = guard {
        println!(
            "::warning title=ci-janitor::{}",
            escape_data(&format!(
                "the guard did not start ({e}); the sweep relies on markers and ancestry alone"
            ))
        );
    }
    append_file_command(env, "GITHUB_ENV", "CI_JANITOR_RUN", &marker)?;
    put_on_path(env)?;
    println!(
        "ci-janitor: baseline of {} processes and {} listening sockets in {:.1} ms; later steps \
         carry CI_JANITOR_RUN={marker}",
        snap.processes.len(),
        snap.listeners.len(),
        snap.duration_us as f64 / 1000.0
    );
    Ok(Exit::Clean)
}

/// `post`: the one-line form's last step, whose `github-token` defaults to the job's token
/// (an empty one is worth a notice; the sweep sub-action's is empty unless given).
fn end(inputs: &Inputs, env: Env<'_>, post: bool) -> Result<Exit, AppError> {
    let settings = inputs.sweep_settings(env).map_err(|e| {
        println!("::error title=ci-janitor: bad input::{}", escape_data(&e));
        AppError::Input(e)
    })?;
    let path = state_path(inputs, env);
    let opts = ReadOptions::default();
    let boot_id = platform::boot_id(&opts.proc_root)?;
    let baseline = match state::load(&path, &boot_id) {
        Ok(b) => b,
        Err(state::StateError::Missing(p)) => {
            // The job failed before our first step ran: there is no baseline, so nothing
            // can be told apart safely. Say so and do not fail the job for it.
            println!(
                "::warning title=ci-janitor::no baseline at {}: the snapshot step did not run, so \
                 nothing was swept",
                escape_data(&p.display().to_string())
            );
            return Ok(Exit::Clean);
        }
        Err(e) => {
            println!(
                "::error title=ci-janitor::{}",
                escape_data(&format!("failed to {e}"))
            );
            return Err(e.into());
        }
    };
    let job =
        Job::discover(&opts.proc_root, env, Caller::Runner).with_baseline(&baseline, &path)?;
    if let Some(status) = &inputs.job_status {
        println!("ci-janitor: job status {status}; sweeping");
    }
    let mut settings = settings;
    if inputs.job_status.as_deref() == Some("cancelled") {
        // Why it was stuck, before the sweep kills the evidence.
        let journal = crate::guard::GuardPaths::for_state(&path).journal;
        settings.capture = Some(crate::settings::Capture {
            reason: "job-status cancelled".into(),
            journal: journal.exists().then_some(journal),
            py_spy: crate::diagnose::py_spy(env),
        });
    }
    if post && inputs.github_token.is_none() && (inputs.check_run || inputs.comment_on_pr) {
        println!(
            "::notice title=ci-janitor: GitHub API::no check run and no pull-request comment:              the input `github-token` is empty (it defaults to the job's token, which needs              `checks: write` and `pull-requests: write`); the annotations and the job summary              have the report"
        );
    }
    let swept = job::sweep(&job, &baseline, &settings, GuardInput::Beside(&path))?;
    let report_path = path.with_file_name("report.json");
    // A process left holding a step's output: a warning on the run, naming the step.
    for w in swept
        .guard
        .lineage
        .iter()
        .flat_map(|l| &l.warnings)
        .filter(|w| matches!(w, crate::guard::journal::Warning::PipeHolder { .. }))
        .take(5)
    {
        println!(
            "::warning title=ci-janitor: a process held a step's output open::{}",
            escape_data(&w.describe())
        );
    }
    let exit = job::finish(swept, &settings, Some(&report_path));
    job::end_of_job(&path);
    exit
}

/// Puts the folder of this binary on `PATH` for the job's later steps (`$GITHUB_PATH`),
/// so they can run `ci-janitor diff`, and `ci-janitor report` on the report afterwards.
fn put_on_path(env: Env<'_>) -> Result<(), AppError> {
    let Some(file) = env("GITHUB_PATH").filter(|v| !v.is_empty()) else {
        return Ok(());
    };
    let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(std::path::Path::to_path_buf))
    else {
        return Ok(());
    };
    crate::files::append_output(
        std::path::Path::new(&file),
        format!("{}\n", dir.display()).as_bytes(),
    )
    .map_err(|e| AppError::Internal(format!("write GITHUB_PATH ({file}): {e}")))
}

/// Appends `name=value` to the file named by `$var` (`GITHUB_ENV`, `GITHUB_STATE`,
/// `GITHUB_OUTPUT`), in the multi-line form with a random delimiter when the value has a
/// newline. Without the variable (run by hand), nothing is written.
pub fn append_file_command(
    env: Env<'_>,
    var: &str,
    name: &str,
    value: &str,
) -> Result<(), AppError> {
    let Some(file) = env(var).filter(|v| !v.is_empty()) else {
        return Ok(());
    };
    let text = if value.contains('\n') || value.contains('\r') {
        let delimiter = format!("ghadelimiter_{}", new_marker(&|_| None));
        format!("{name}<<{delimiter}\n{value}\n{delimiter}\n")
    } else {
        format!("{name}={value}\n")
    };
    crate::files::append_output(std::path::Path::new(&file), text.as_bytes())
        .map_err(|e| AppError::Internal(format!("write {var} ({file}): {e}")))
}

/// The one escaper of workflow-command data (see [`crate::report::github`]).
pub use crate::report::github::escape_data;

#[cfg(test)]
mod tests {
    use super::*;

    fn env_of(vars: &'static [(&'static str, &'static str)]) -> impl Fn(&str) -> Option<String> {
        move |k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn inputs_keep_hyphens_and_validate() {
        let env = env_of(&[
            ("INPUT_FAIL-ON-LEAK", "False"),
            ("INPUT_GRACE-PERIOD", "2s"),
            (
                "INPUT_ALLOW",
                "uvicorn *\n\n# a comment\ncomm:redis-server\n",
            ),
            ("INPUT_DRY-RUN", ""),
        ]);
        let i = Inputs::read(&env).unwrap();
        assert!(!i.fail_on_leak);
        assert_eq!(i.grace.to_string(), "2s");
        assert_eq!(i.allow, vec!["uvicorn *", "comm:redis-server"]);
        assert!(!i.dry_run);
        let bad = env_of(&[("INPUT_FAIL-ON-LEAK", "sometimes")]);
        let e = Inputs::read(&bad).unwrap_err();
        assert!(e.contains("fail-on-leak"), "{e}");
        // Each input is checked under its own name, as it is read.
        let bad = env_of(&[("INPUT_GRACE-PERIOD", "soon")]);
        let e = Inputs::read(&bad).unwrap_err();
        assert!(e.starts_with("read the input `grace-period`"), "{e}");
        let bad = env_of(&[("INPUT_ALLOW", "*")]);
        let e = Inputs::read(&bad).unwrap_err();
        assert!(e.starts_with("read the input `allow`"), "{e}");
        let bad = env_of(&[("INPUT_GRACE-PERIOD", "10s"), ("INPUT_DEADLINE", "2s")]);
        let e = Inputs::read(&bad)
            .unwrap()
            .sweep_settings(&bad)
            .unwrap_err();
        assert!(e.contains("`deadline: 2s`"), "{e}");
    }

    #[test]
    fn gating_and_api_inputs() {
        let i = Inputs::read(&env_of(&[])).unwrap();
        assert_eq!(i.sweep_opts().fail_on, FailOn::Leak);
        assert!(i.check_run && i.comment_on_pr && i.github_token.is_none());
        let i = Inputs::read(&env_of(&[("INPUT_KNOWN-LEAKS", "k.toml")])).unwrap();
        assert_eq!(
            i.sweep_opts().fail_on,
            FailOn::New,
            "a file gates on new leaks"
        );
        let i = Inputs::read(&env_of(&[
            ("INPUT_KNOWN-LEAKS", "k.toml"),
            ("INPUT_FAIL-ON", "leak"),
            ("INPUT_GITHUB-TOKEN", "t"),
            ("INPUT_COMMENT-ON-PR", "false"),
        ]))
        .unwrap();
        let o = i.sweep_opts();
        assert_eq!(o.fail_on, FailOn::Leak);
        assert!(o.known_leaks.unwrap().is_absolute());
        assert_eq!(o.github_token.as_deref(), Some("t"));
        assert!(o.no_pr_comment && !o.no_check_run);
        let i = Inputs::read(&env_of(&[("INPUT_FAIL-ON-LEAK", "false")])).unwrap();
        assert_eq!(i.sweep_opts().fail_on, FailOn::Never);
        let e = Inputs::read(&env_of(&[("INPUT_FAIL-ON", "sometimes")])).unwrap_err();
        assert!(e.starts_with("read the input `fail-on`"), "{e}");
        // The composite sub-action's spelling.
        let i = Inputs::read(&env_of(&[("INPUT_FAIL_ON", "new")])).unwrap();
        assert_eq!(i.fail_on, Some(FailOn::New));
    }

    #[test]
    fn file_commands() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("env");
        let f = file.to_string_lossy().into_owned();
        let env = move |k: &str| (k == "GITHUB_ENV").then(|| f.clone());
        append_file_command(&env, "GITHUB_ENV", "A", "1").unwrap();
        append_file_command(&env, "GITHUB_ENV", "B", "two\nlines").unwrap();
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "A=1");
        assert!(lines[1].starts_with("B<<ghadelimiter_"));
        assert_eq!(lines[2..4], ["two", "lines"]);
        assert_eq!(lines[4], &lines[1][3..]);
        // No variable: nothing written, no error.
        append_file_command(&|_| None, "GITHUB_OUTPUT", "x", "y").unwrap();
    }

    #[test]
    fn markers_are_unique_and_plain() {
        let env = env_of(&[
            ("GITHUB_RUN_ID", "42"),
            ("GITHUB_RUN_ATTEMPT", "1"),
            ("GITHUB_JOB", "te st;x"),
        ]);
        let a = new_marker(&env);
        let b = new_marker(&env);
        assert_ne!(a, b);
        assert!(a.starts_with("gha-42-1-testx-"), "{a}");
        assert!(a
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_'));
    }

    #[test]
    fn escaping() {
        assert_eq!(escape_data("50%\r\nnext"), "50%25%0D%0Anext");
    }
}
