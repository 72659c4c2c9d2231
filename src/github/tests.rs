//! The API phase against a local stand-in for GitHub's REST API (`tests/fake_github.py`,
//! started by each test, killed when it ends) that records every request and answers
//! like GitHub: status codes, pagination links, rate-limit headers, POST and PATCH.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::*;
use crate::gate::tests::report_of;

struct Fake {
    child: Child,
    dir: tempfile::TempDir,
    url: String,
}

impl Fake {
    fn start(mut config: Value) -> Fake {
        let dir = tempfile::tempdir().unwrap();
        let port_file = dir.path().join("port");
        config["state_file"] = json!(dir.path().join("state.json"));
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fake_github.py");
        let child = Command::new("python3")
            .arg(script)
            .arg("--port-file")
            .arg(&port_file)
            .arg("--log")
            .arg(dir.path().join("log.jsonl"))
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

    fn requests(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join("log.jsonl"))
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect()
    }

    fn writes(&self) -> Vec<(String, String)> {
        self.requests()
            .iter()
            .filter(|r| r["method"] != "GET")
            .map(|r| {
                (
                    r["method"].as_str().unwrap().to_owned(),
                    r["path"].as_str().unwrap().to_owned(),
                )
            })
            .collect()
    }

    fn state(&self) -> Value {
        std::fs::read_to_string(self.dir.path().join("state.json"))
            .map(|s| serde_json::from_str(&s).unwrap())
            .unwrap_or(json!({"check_runs": {}, "comments": []}))
    }

    fn event(&self, fork: bool) -> PathBuf {
        let head = if fork { "someone/r" } else { "o/r" };
        let path = self.dir.path().join(format!("event-{fork}.json"));
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

    fn settings(&self, event: Option<PathBuf>) -> ApiSettings {
        ApiSettings {
            token: "t0k3n-value".into(),
            api_url: self.url.clone(),
            repository: "o/r".into(),
            sha: Some("pushsha".into()),
            event_name: Some("pull_request".into()),
            event_path: event,
            workflow: "CI".into(),
            job: "test".into(),
            run_id: Some("42".into()),
            server_url: Some("https://github.example".into()),
            workspace: None,
            workflow_file: Some(".github/workflows/ci.yml".into()),
            check_run: true,
            pr_comment: true,
            timeout: Duration::from_secs(10),
        }
    }

    fn publish(&self, s: &ApiSettings, r: &Report) -> Option<String> {
        Api::open(Some(s), Duration::from_secs(30))
            .unwrap()
            .publish(r)
    }
}

impl Drop for Fake {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn leaking(n: usize) -> Report {
    let leaks: Vec<(&[&str], usize, Option<&str>)> = [
        &["sleep", "1"][..],
        &["redis-server"][..],
        &["node", "x.js"][..],
    ]
    .into_iter()
    .take(n)
    .map(|a| (a, 1, None))
    .collect();
    let mut r = report_of(&leaks);
    r.failed = r.leaked > 0;
    r
}

#[test]
fn a_hundred_and_twenty_annotations_arrive_in_three_batches() {
    let fake = Fake::start(json!({}));
    let mut r = crate::report::fixtures::many_signatures(120).report;
    r.failed = true;
    let notice = fake.publish(&fake.settings(None), &r);
    assert_eq!(notice, None);
    let reqs = fake.requests();
    let runs: Vec<&Value> = reqs
        .iter()
        .filter(|q| q["path"].as_str().unwrap().contains("check-runs"))
        .collect();
    let sizes: Vec<usize> = runs
        .iter()
        .map(|q| q["body"]["output"]["annotations"].as_array().unwrap().len())
        .collect();
    assert_eq!(sizes, [50, 50, 20]);
    assert_eq!(runs[0]["method"], "POST");
    assert_eq!(runs[0]["body"]["name"], "ci-janitor");
    assert_eq!(runs[0]["body"]["head_sha"], "pushsha");
    assert_eq!(runs[0]["body"]["conclusion"], "failure");
    assert!(runs[1..].iter().all(|q| q["method"] == "PATCH"));
    assert!(reqs.iter().all(|q| q["auth"] == "Bearer t0k3n-value"));
    let summary = runs[0]["body"]["output"]["summary"].as_str().unwrap();
    assert!(summary.chars().count() <= check_run::SUMMARY_LIMIT);
    let d = digest::find(summary).expect("the digest");
    assert_eq!((d.job.as_str(), d.leaks.len()), ("CI/test", 120));
    let run = &fake.state()["check_runs"]
        .as_object()
        .unwrap()
        .values()
        .next()
        .unwrap()
        .clone();
    assert_eq!(run["annotations_received"], 120);
    // Not a pull request: no comment.
    assert!(!reqs
        .iter()
        .any(|q| q["path"].as_str().unwrap().contains("issues")));
}

#[test]
fn the_comment_is_created_once_then_updated_and_a_clean_run_says_so() {
    // A GITHUB_TOKEN: GET /user is refused; the comments are github-actions[bot]'s.
    let fake = Fake::start(json!({"user": null}));
    let s = fake.settings(Some(fake.event(false)));
    assert_eq!(fake.publish(&s, &leaking(1)), None);
    assert_eq!(fake.publish(&s, &leaking(2)), None);
    assert_eq!(
        fake.publish(&s, &leaking(2)),
        None,
        "the same again: untouched"
    );
    let clean = crate::report::fixtures::clean().report;
    assert_eq!(fake.publish(&s, &clean), None);
    assert_eq!(fake.publish(&s, &clean), None, "clean again: untouched");
    let comment_writes: Vec<(String, String)> = fake
        .writes()
        .into_iter()
        .filter(|(_, p)| p.contains("/issues/"))
        .collect();
    assert_eq!(
        comment_writes,
        [
            ("POST".to_owned(), "/repos/o/r/issues/7/comments".to_owned()),
            (
                "PATCH".to_owned(),
                "/repos/o/r/issues/comments/1002".to_owned()
            ),
            (
                "PATCH".to_owned(),
                "/repos/o/r/issues/comments/1002".to_owned()
            ),
        ],
        "{:?}",
        fake.writes()
    );
    let comments = fake.state()["comments"].as_array().unwrap().clone();
    assert_eq!(comments.len(), 1);
    let body = comments[0]["body"].as_str().unwrap();
    assert!(body.contains("ci-janitor: no new leak"), "{body}");
    assert!(body.contains(&comment::marker("CI", "test")));
    // The check runs go to the pull request's head commit.
    let first = fake
        .requests()
        .into_iter()
        .find(|q| q["method"] == "POST" && q["path"] == "/repos/o/r/check-runs")
        .unwrap();
    assert_eq!(first["body"]["head_sha"], "head0sha");
}

#[test]
fn another_users_comment_with_the_marker_is_never_edited() {
    let marker = comment::marker("CI", "test");
    let mut comments: Vec<Value> = (0..150)
        .map(|i| json!({"id": i + 1, "body": format!("chatter {i}"), "login": "alice"}))
        .collect();
    comments.push(json!({"id": 500, "body": format!("quoting {marker}"), "login": "mallory"}));
    let fake = Fake::start(json!({"user": "ci-bot", "comments": comments, "page_size": 100}));
    let s = fake.settings(Some(fake.event(false)));
    assert_eq!(fake.publish(&s, &leaking(1)), None);
    assert_eq!(fake.publish(&s, &leaking(2)), None);
    let writes: Vec<(String, String)> = fake
        .writes()
        .into_iter()
        .filter(|(_, p)| p.contains("/issues/"))
        .collect();
    assert_eq!(writes.len(), 2, "{writes:?}");
    assert_eq!(writes[0].0, "POST");
    assert_eq!(
        writes[1],
        (
            "PATCH".to_owned(),
            "/repos/o/r/issues/comments/1002".to_owned()
        )
    );
    let reqs = fake.requests();
    assert!(reqs.iter().any(|q| q["path"] == "/user"));
    // Pages followed through the Link header, with the token.
    assert!(reqs
        .iter()
        .any(|q| q["query"].as_str().unwrap().contains("page=2")
            && q["auth"] == "Bearer t0k3n-value"));
}

#[test]
fn forbidden_and_not_found_degrade_to_one_notice_naming_the_permissions() {
    for status in [403, 404] {
        let fake = Fake::start(json!({"fail": {
            "POST /repos/o/r/check-runs": [status],
            "GET /repos/o/r/issues": [status],
        }}));
        let s = fake.settings(Some(fake.event(false)));
        let notice = fake.publish(&s, &leaking(1)).expect("a notice");
        assert_eq!(notice.lines().count(), 1, "{notice}");
        assert!(
            notice.starts_with("::notice title=ci-janitor%3A GitHub API::"),
            "{notice}"
        );
        assert!(
            notice.contains("`checks: write` and `pull-requests: write`"),
            "{notice}"
        );
        assert!(fake.state()["comments"].as_array().unwrap().is_empty());
    }
}

#[test]
fn server_errors_are_retried_then_degrade() {
    let fake = Fake::start(json!({"fail": {"POST /repos/o/r/check-runs": [502, 503]}}));
    assert_eq!(fake.publish(&fake.settings(None), &leaking(1)), None);
    let posts = fake
        .requests()
        .iter()
        .filter(|q| q["method"] == "POST")
        .count();
    assert_eq!(posts, 3, "two failures, then the check run");

    let fake = Fake::start(json!({"fail": {"POST /repos/o/r/check-runs": [500]}, "sticky": true}));
    let notice = fake
        .publish(&fake.settings(None), &leaking(1))
        .expect("a notice");
    assert!(notice.contains("the check run: HTTP 500"), "{notice}");
    assert!(
        !notice.contains("lacks"),
        "a 5xx is not a permission: {notice}"
    );
}

#[test]
fn a_rate_limit_is_waited_out_within_the_bound() {
    let fake = Fake::start(json!({"rate_limit": {"POST /repos/o/r/check-runs": 1}}));
    assert_eq!(fake.publish(&fake.settings(None), &leaking(1)), None);
    let posts = fake
        .requests()
        .iter()
        .filter(|q| q["method"] == "POST")
        .count();
    assert_eq!(posts, 2);
    // A reset beyond the bound: not waited for.
    let fake = Fake::start(json!({"rate_limit": {"POST /repos/o/r/check-runs": 600}}));
    let started = Instant::now();
    let notice = fake
        .publish(&fake.settings(None), &leaking(1))
        .expect("a notice");
    assert!(notice.contains("rate limited"), "{notice}");
    assert!(started.elapsed() < Duration::from_secs(60));
}

#[test]
fn a_server_that_never_answers_hits_the_bound() {
    let fake = Fake::start(json!({"hang": true}));
    let mut s = fake.settings(Some(fake.event(false)));
    s.timeout = Duration::from_secs(2);
    let started = Instant::now();
    let mut api = Api::open(Some(&s), Duration::from_secs(30)).unwrap();
    let mut notes = Vec::new();
    assert_eq!(api.base_known(&mut notes), None);
    let notice = api.publish(&leaking(1)).expect("a notice");
    let took = started.elapsed();
    assert!(notice.contains("no answer in time"), "{notice}");
    // The bound is 2 s for the whole phase; generous slack for a loaded machine.
    assert!(took < Duration::from_secs(10), "{took:?}");
    assert!(!fake.requests().is_empty());
}

#[test]
fn a_fork_makes_no_api_write() {
    let fake = Fake::start(json!({}));
    let s = fake.settings(Some(fake.event(true)));
    let notice = fake.publish(&s, &leaking(2)).expect("a notice");
    assert!(notice.contains("fork"), "{notice}");
    assert!(fake.writes().is_empty(), "{:?}", fake.writes());
}

#[test]
fn a_pull_request_is_gated_against_its_base_commits_run() {
    let base = leaking(1);
    let summary = format!(
        "{}# earlier run\n",
        digest::render(&digest::of(&base, "CI/test"))
    );
    let other_job = digest::render(&digest::of(&leaking(3), "CI/lint"));
    let fake = Fake::start(json!({"base_runs": [{"summary": other_job}, {"summary": summary}]}));
    let s = fake.settings(Some(fake.event(false)));
    let mut api = Api::open(Some(&s), Duration::from_secs(30)).unwrap();
    let mut head = leaking(2);
    let mut settings = crate::settings::sweep_settings(&Default::default(), &|_| None).unwrap();
    settings.fail_on = crate::cli::FailOn::New;
    let failed = crate::gate::run(&mut head, &settings, |notes| api.base_known(notes));
    assert!(failed);
    let k = head.known_leaks.clone().unwrap();
    assert_eq!((k.known, k.new), (1, 1));
    assert_eq!(k.origin, "o/r@base0sha");
    assert_eq!(api.publish(&head), None);
    let body = fake.state()["comments"][0]["body"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(body.contains("adds a leak (1 process)"), "{body}");
    assert!(body.contains("redis-server"), "{body}");
    assert!(!body.contains("sleep"), "{body}");

    // No run on the base commit: a note, and every leak is new.
    let fake = Fake::start(json!({}));
    let s = fake.settings(Some(fake.event(false)));
    let mut api = Api::open(Some(&s), Duration::from_secs(30)).unwrap();
    let mut notes = Vec::new();
    assert_eq!(api.base_known(&mut notes), None);
    assert!(
        notes[0].contains("no ci-janitor check run for job CI/test"),
        "{notes:?}"
    );
}

#[test]
fn annotations_point_at_the_test_that_started_the_leak() {
    let fake = Fake::start(json!({}));
    let ws = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(ws.path().join("tests")).unwrap();
    std::fs::write(
        ws.path().join("tests/test_api.py"),
        "import x\n\n\nclass TestApi:\n    def test_server(self):\n        pass\n",
    )
    .unwrap();
    let mut s = fake.settings(None);
    s.workspace = Some(ws.path().to_path_buf());
    let mut r = report_of(&[
        (
            &["sleep", "1"],
            1,
            Some("tests/test_api.py::TestApi::test_server (call)"),
        ),
        (&["redis-server"], 1, None),
    ]);
    r.failed = true;
    assert_eq!(fake.publish(&s, &r), None);
    let post = fake
        .requests()
        .into_iter()
        .find(|q| q["method"] == "POST")
        .unwrap();
    let a = post["body"]["output"]["annotations"]
        .as_array()
        .unwrap()
        .clone();
    let at: Vec<(String, u64)> = a
        .iter()
        .map(|x| {
            (
                x["path"].as_str().unwrap().to_owned(),
                x["start_line"].as_u64().unwrap(),
            )
        })
        .collect();
    assert!(at.contains(&("tests/test_api.py".to_owned(), 5)), "{at:?}");
    assert!(
        at.contains(&(".github/workflows/ci.yml".to_owned(), 1)),
        "{at:?}"
    );
}
