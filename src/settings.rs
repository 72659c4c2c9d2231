//! What the command line means: raw clap values plus the environment, validated once.

use std::io::IsTerminal;
use std::path::PathBuf;

use std::time::Duration;

use crate::classify::{Pattern, Policy};
use crate::cli::{ColorChoice, FailOn, StateArg, SweepOpts};

/// Reads an environment variable; a seam so that tests pass their own environment.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The state file: `--state`, else `$CI_JANITOR_STATE` (set by `snapshot --export`), else
/// the default place, in a directory of this job's own when the CI names the job and
/// several jobs may share the machine (see [`state_key`]).
pub fn state_path(arg: &StateArg, env: Env<'_>) -> PathBuf {
    if let Some(p) = &arg.state {
        return p.clone();
    }
    if let Some(p) = env("CI_JANITOR_STATE").filter(|v| !v.is_empty()) {
        return PathBuf::from(p);
    }
    let default = crate::state::default_path(env);
    match (state_key(env), default.parent()) {
        (Some(key), Some(dir)) => dir.join(key).join("state.json"),
        _ => default,
    }
}

/// Whether to colour output written to stdout.
pub fn use_color(choice: ColorChoice, env: Env<'_>) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            env("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
        }
    }
}

/// What `sweep` and `run` options mean, validated.
#[derive(Debug, Clone)]
pub struct SweepSettings {
    pub grace: Duration,
    pub deadline: Duration,
    pub dry_run: bool,
    pub fail_on: FailOn,
    pub policy: Policy,
    /// The JSON report; defaults to `$RUNNER_TEMP/ci-janitor/report.json` under Actions.
    pub report_json: Option<PathBuf>,
    pub junit: Option<PathBuf>,
    /// The Markdown summary, appended to: `--summary`, else `$GITHUB_STEP_SUMMARY`.
    pub summary: Option<PathBuf>,
    /// `GITHUB_ACTIONS=true`: stdout carries workflow commands (see `report::emit`).
    pub github_actions: bool,
    /// `$GITHUB_OUTPUT`, appended to under Actions.
    pub github_output: Option<PathBuf>,
    pub color: bool,
    /// Show the grace-period waits on stderr (off for the guard's own sweep).
    pub progress: bool,
    /// What runs the sweep (the Action fills this and the step names in).
    pub ran_as: RanAs,
    /// Step names by `GITHUB_ACTION` id, for the reports ([`crate::workflow`]).
    pub step_names: std::collections::BTreeMap<String, String>,
    /// Capture why the job is stuck before the kill (the job was cancelled or timed out):
    /// set by the caller that knows it was; `None` for an ordinary sweep.
    pub capture: Option<Capture>,
    /// The bound on that capture (`--capture-bound`).
    pub capture_bound: Duration,
    /// `--known-leaks`: the known-leaks file, and whether an unused entry fails.
    pub known_leaks: Option<PathBuf>,
    pub strict_known_leaks: bool,
    /// The GitHub API (check run, pull-request comment): under Actions with a token only.
    pub github_api: Option<ApiSettings>,
}

/// What the GitHub API phase needs, read from the environment once (see `crate::github`).
#[derive(Clone, Default)]
pub struct ApiSettings {
    pub token: String,
    /// `$GITHUB_API_URL` (GitHub Enterprise Server: `https://HOST/api/v3`).
    pub api_url: String,
    /// `OWNER/REPO`.
    pub repository: String,
    pub sha: Option<String>,
    pub event_name: Option<String>,
    pub event_path: Option<PathBuf>,
    pub workflow: String,
    pub job: String,
    pub run_id: Option<String>,
    pub server_url: Option<String>,
    pub workspace: Option<PathBuf>,
    /// The workflow file, relative to the workspace (from `GITHUB_WORKFLOW_REF`).
    pub workflow_file: Option<String>,
    pub check_run: bool,
    pub pr_comment: bool,
    /// The whole API phase's bound (`--api-timeout`).
    pub timeout: Duration,
}

impl std::fmt::Debug for ApiSettings {
    /// Everything but the token.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiSettings")
            .field("api_url", &self.api_url)
            .field("repository", &self.repository)
            .field("sha", &self.sha)
            .field("event_name", &self.event_name)
            .field("job", &self.job)
            .field("check_run", &self.check_run)
            .field("pr_comment", &self.pr_comment)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

/// The API settings under GitHub Actions when a token is given (else `None`).
pub fn api_settings(o: &SweepOpts, env: Env<'_>) -> Option<ApiSettings> {
    let present = |k: &str| env(k).filter(|v| !v.is_empty());
    let token = o.github_token.clone().filter(|t| !t.trim().is_empty())?;
    if present("GITHUB_ACTIONS").as_deref() != Some("true") {
        return None;
    }
    let workflow_file = present("GITHUB_WORKFLOW_REF").and_then(|r| {
        let path = r.rsplit_once('@').map_or(r.as_str(), |(p, _)| p).to_owned();
        path.find(".github/workflows/")
            .map(|at| path[at..].to_owned())
    });
    Some(ApiSettings {
        token: token.trim().to_owned(),
        api_url: present("GITHUB_API_URL").unwrap_or_else(|| "https://api.github.com".into()),
        repository: present("GITHUB_REPOSITORY").unwrap_or_default(),
        sha: present("GITHUB_SHA"),
        event_name: present("GITHUB_EVENT_NAME"),
        event_path: present("GITHUB_EVENT_PATH").map(PathBuf::from),
        workflow: present("GITHUB_WORKFLOW").unwrap_or_default(),
        job: present("GITHUB_JOB").unwrap_or_default(),
        run_id: present("GITHUB_RUN_ID"),
        server_url: present("GITHUB_SERVER_URL"),
        workspace: present("GITHUB_WORKSPACE").map(PathBuf::from),
        workflow_file,
        check_run: !o.no_check_run,
        pr_comment: !o.no_pr_comment,
        timeout: o.api_timeout.0,
    })
}

/// Why a hang report is taken before a sweep, and where the guard's journal is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Capture {
    pub reason: String,
    pub journal: Option<PathBuf>,
    pub py_spy: crate::platform::inspect::PySpy,
}

pub fn sweep_settings(o: &SweepOpts, env: Env<'_>) -> Result<SweepSettings, String> {
    let (grace, deadline) = (o.grace.0, o.deadline.0);
    if deadline < grace {
        return Err(format!(
            "use --deadline {} with --grace {}: the deadline is shorter, and it bounds the \
             whole sweep, grace periods included",
            o.deadline, o.grace
        ));
    }
    let env_path = |name: &str| env(name).filter(|v| !v.is_empty()).map(PathBuf::from);
    let github_actions = env("GITHUB_ACTIONS").is_some_and(|v| v == "true");
    let patterns = |flag: &str, v: &[String]| -> Result<Vec<Pattern>, String> {
        v.iter()
            .map(|p| Pattern::parse(p).map_err(|e| format!("read {flag}: {e}")))
            .collect()
    };
    Ok(SweepSettings {
        grace,
        deadline,
        dry_run: o.dry_run,
        fail_on: o.fail_on,
        policy: Policy {
            allow: patterns("--allow", &o.allow)?,
            ignore: patterns("--ignore", &o.ignore)?,
            protect: patterns("--protect", &o.protect)?,
            no_default_protect: o.no_default_protect,
            kill_unattributed: o.kill_unattributed,
            only_attributed: false,
        },
        report_json: o.report_json.clone().or_else(|| {
            github_actions
                .then(|| env_path("RUNNER_TEMP"))
                .flatten()
                .map(|t| t.join("ci-janitor").join("report.json"))
        }),
        junit: o.junit.clone(),
        summary: o
            .summary
            .clone()
            .or_else(|| env_path("GITHUB_STEP_SUMMARY")),
        github_actions,
        github_output: github_actions.then(|| env_path("GITHUB_OUTPUT")).flatten(),
        color: use_color(o.color, env),
        progress: true,
        ran_as: RanAs::Cli,
        step_names: std::collections::BTreeMap::new(),
        capture: None,
        capture_bound: o.capture_bound.0,
        known_leaks: o.known_leaks.clone(),
        strict_known_leaks: o.strict_known_leaks,
        github_api: api_settings(o, env),
    })
}

/// A name for this job's state directory when several jobs may share one machine and one
/// user (GitLab `concurrent`, Jenkins executors, several Buildkite agents): the CI's job
/// marker, made safe as a file name. `None` under GitHub Actions, whose `RUNNER_TEMP` is
/// already the job's, and outside CI.
pub fn state_key(env: Env<'_>) -> Option<String> {
    let present = |v: &str| env(v).filter(|s| !s.is_empty());
    if present("RUNNER_TEMP").is_some() {
        return None;
    }
    let (prefix, value) = [
        ("azure", "VSTS_PROCESS_LOOKUP_ID"),
        ("jenkins", "JENKINS_NODE_COOKIE"),
        ("gitlab", "CI_JOB_ID"),
        ("buildkite", "BUILDKITE_JOB_ID"),
    ]
    .iter()
    .find_map(|(prefix, var)| present(var).map(|v| (*prefix, v)))?;
    let safe: String = value
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(80)
        .collect();
    (!safe.is_empty() && safe != "." && safe != "..").then(|| format!("{prefix}-{safe}"))
}

/// What ran a sweep, so reports name the knobs the reader has: the Action's inputs or the
/// command line's flags.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RanAs {
    /// `ci-janitor sweep`, `run`, the hooks.
    #[default]
    Cli,
    /// The GitHub Action (one line, or the sweep sub-action).
    Action,
}

impl RanAs {
    pub fn is_cli(&self) -> bool {
        *self == RanAs::Cli
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn github_defaults_come_from_the_environment() {
        use clap::Parser;
        let cli = crate::cli::Cli::parse_from(["ci-janitor", "sweep"]);
        let crate::cli::Command::Sweep(args) = cli.command else {
            panic!("not a sweep")
        };
        let vars = [
            ("GITHUB_ACTIONS", "true"),
            ("RUNNER_TEMP", "/rt"),
            ("GITHUB_STEP_SUMMARY", "/rt/summary"),
            ("GITHUB_OUTPUT", "/rt/output"),
        ];
        let env = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.to_string())
        };
        let s = sweep_settings(&args.opts, &env).unwrap();
        assert!(s.github_actions);
        assert_eq!(
            s.report_json,
            Some(PathBuf::from("/rt/ci-janitor/report.json"))
        );
        assert_eq!(s.summary, Some(PathBuf::from("/rt/summary")));
        assert_eq!(s.github_output, Some(PathBuf::from("/rt/output")));
        let none = |_: &str| None;
        let s = sweep_settings(&args.opts, &none).unwrap();
        assert!(!s.github_actions);
        assert_eq!(
            (s.report_json, s.summary, s.github_output),
            (None, None, None)
        );
    }
}
