//! The GitHub API phase of a sweep under GitHub Actions with a token: one check run named
//! `ci-janitor` (every annotation, in batches of 50; a summary that carries the digest a
//! pull request's run compares with), and one comment per workflow and job on a pull
//! request, updated in place.
//!
//! It never fails the run. It is bounded in time: each request by
//! [`client::PER_REQUEST`], the whole phase by `--api-timeout` and by what `--deadline`
//! left after the sweep. What it cannot do (no permission, a fork's read-only token, the
//! API down or slow) becomes ONE notice naming what is missing; the workflow commands and
//! the job summary, written before, have the report anyway.
//!
//! The tokio runtime (current-thread) lives in [`client`] and nowhere else: everything
//! here is called synchronously.

pub mod check_run;
pub mod client;
pub mod comment;
pub mod event;
pub mod origin;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::gate::diff::{self, Change, Changes};
use crate::gate::digest::{self, Digest};
use crate::gate::Known;
use crate::report::json::{KnownSource, Report, Signature};
use crate::settings::ApiSettings;

use client::{Client, Failure};

/// The API phase never gets less than this, so that a sweep that used its whole deadline
/// still posts its check run.
pub const MIN_BUDGET: Duration = Duration::from_secs(2);
/// Pages of comments or check runs read (100 each).
const MAX_PAGES: usize = 10;
/// The login of the `GITHUB_TOKEN`'s app, which cannot read `GET /user`.
pub const ACTIONS_BOT: &str = "github-actions[bot]";
/// The largest source file read to find a test's line.
const MAX_SOURCE: u64 = 4 << 20;

/// What the phase could not do.
#[derive(Debug, Default)]
struct Problems {
    /// Permissions the token lacks (`checks: write`, `pull-requests: write`).
    missing: BTreeSet<&'static str>,
    /// Everything else, in a few words each.
    other: Vec<String>,
}

/// The API phase of one sweep.
#[derive(Debug)]
pub struct Api {
    settings: ApiSettings,
    client: Option<Client>,
    event: event::Event,
    /// The base commit's digest for this job, once read, and what it is.
    base: Option<(Digest, String)>,
    problems: Problems,
}

/// What a check run looks like in a list.
#[derive(Debug, Deserialize)]
struct CheckRuns {
    #[serde(default)]
    check_runs: Vec<CheckRunItem>,
}

#[derive(Debug, Deserialize)]
struct CheckRunItem {
    #[serde(default)]
    output: Option<Output>,
}

#[derive(Debug, Deserialize)]
struct Output {
    #[serde(default)]
    summary: Option<String>,
}

#[derive(Debug, Deserialize)]
struct Created {
    id: u64,
}

impl Api {
    /// The phase, when the settings ask for it (Actions and a token), given what the
    /// sweep's deadline left. No request is made yet.
    pub fn open(settings: Option<&ApiSettings>, left: Duration) -> Option<Api> {
        let settings = settings?.clone();
        let budget = settings.timeout.min(left).max(MIN_BUDGET);
        let until = Instant::now() + budget;
        let event = event::read(settings.event_path.as_deref());
        let mut problems = Problems::default();
        let client = match Client::new(&settings.api_url, &settings.token, until) {
            Ok(c) => Some(c),
            Err(e) => {
                problems.other.push(e);
                None
            }
        };
        Some(Api {
            settings,
            client,
            event,
            base: None,
            problems,
        })
    }

    fn job_key(&self) -> String {
        format!("{}/{}", self.settings.workflow, self.settings.job)
    }

    /// On a pull request: the base commit's `ci-janitor` check run's digest for this job,
    /// as known leaks (a read; a fork may do it). Says in `notes` when there is none.
    pub fn base_known(&mut self, notes: &mut Vec<String>) -> Option<Known> {
        let pr = self.event.pr.clone()?;
        let client = self.client.as_ref()?;
        if pr.base_sha.is_empty() {
            return None;
        }
        let origin = format!(
            "{}@{}",
            self.settings.repository,
            pr.base_sha.chars().take(12).collect::<String>()
        );
        let mut path = Some(format!(
            "/repos/{}/commits/{}/check-runs?check_name={}&per_page=100",
            self.settings.repository,
            pr.base_sha,
            check_run::NAME
        ));
        let key = self.job_key();
        let mut found = None;
        for _ in 0..MAX_PAGES {
            let Some(p) = path.take() else { break };
            match client.get(&p) {
                Ok(reply) => {
                    let runs: CheckRuns = serde_json::from_str(&reply.body).unwrap_or(CheckRuns {
                        check_runs: Vec::new(),
                    });
                    found = runs
                        .check_runs
                        .iter()
                        .filter_map(|r| r.output.as_ref()?.summary.as_deref())
                        .filter_map(digest::find)
                        .find(|d| d.job == key);
                    if found.is_some() {
                        break;
                    }
                    path = reply.next;
                }
                Err(Failure::Status(403, _)) => {
                    self.problems.missing.insert("checks: read");
                    return None;
                }
                Err(e) => {
                    self.problems
                        .other
                        .push(format!("reading the base commit's check runs: {e}"));
                    return None;
                }
            }
        }
        match found {
            Some(d) => {
                let known = Known::from_digest(&d, &origin);
                self.base = Some((d, origin));
                Some(known)
            }
            None => {
                notes.push(format!(
                    "no ci-janitor check run for job {key} on the base commit {origin}: every \
                     leak counts as new (the base branch must have run this workflow with a \
                     github-token, or commit a known-leaks file)"
                ));
                None
            }
        }
    }

    /// The leaks this run adds and removes, against what it was gated with.
    fn changes(&self, r: &Report) -> (Changes, String) {
        match (&r.known_leaks, &self.base) {
            (Some(k), _) if k.source == KnownSource::File => {
                let new = r
                    .signatures
                    .iter()
                    .filter_map(|s| {
                        let g = s.gate.filter(|g| g.new > 0)?;
                        Some(Change {
                            id: s.id.clone(),
                            command: s.command.clone(),
                            base: g.known,
                            head: s.count,
                        })
                    })
                    .collect();
                let fixed = k
                    .entries
                    .iter()
                    .filter(|e| e.seen == 0)
                    .map(|e| Change {
                        id: e.id.clone(),
                        command: e.signature.clone(),
                        base: e.max,
                        head: 0,
                    })
                    .collect();
                (
                    Changes {
                        new,
                        fixed,
                        unchanged: Vec::new(),
                    },
                    format!(
                        "the known leaks in {}",
                        crate::report::summary::md(&k.origin)
                    ),
                )
            }
            (_, Some((d, origin))) => (
                diff::compare(&diff::counts_of_digest(d), &diff::counts_of_report(r)),
                format!(
                    "the base commit's run (`{}`)",
                    crate::report::summary::md(origin)
                ),
            ),
            _ => (
                diff::compare(&[], &diff::counts_of_report(r)),
                "nothing: no known-leaks file, and no ci-janitor check run on the base commit"
                    .into(),
            ),
        }
    }

    /// Where a signature's annotation points: its test's definition, else its step in the
    /// workflow file, else the workflow file.
    fn origin(&self, r: &Report, s: &Signature) -> (String, u32) {
        let read = |rel: &str| -> Option<String> {
            let ws = self.settings.workspace.as_deref()?;
            crate::files::read_input(&ws.join(rel), MAX_SOURCE)
                .ok()
                .map(|b| String::from_utf8_lossy(&b).into_owned())
        };
        if let Some((file, func)) = s.tests.first().and_then(|t| origin::test_parts(&t.value)) {
            let line = read(file).and_then(|src| origin::def_line(&src, func));
            return (file.to_owned(), line.unwrap_or(1));
        }
        let workflow = self
            .settings
            .workflow_file
            .clone()
            .unwrap_or_else(|| ".github/workflows".into());
        let line = s.steps.first().and_then(|step| {
            let text = read(&workflow)?;
            origin::step_line(
                &text,
                &step.value,
                r.step_names.get(&step.value).map(String::as_str),
            )
        });
        (workflow, line.unwrap_or(1))
    }

    fn post_check_run(&mut self, r: &Report, head_sha: &str) {
        let Some(client) = self.client.as_ref() else {
            return;
        };
        let annotations = check_run::annotations(r, &|s| self.origin(r, s));
        let mut summary = digest::render(&digest::of(r, &self.job_key()));
        // The job summary shortens itself (with its own note) to what the digest leaves.
        let room = check_run::SUMMARY_LIMIT.saturating_sub(summary.len());
        summary.push_str(&crate::report::summary::render(r, None, room));
        let output = |batch: &[check_run::Annotation]| {
            serde_json::json!({
                "title": check_run::title(r),
                "summary": check_run::trim_summary(&summary, check_run::SUMMARY_LIMIT),
                "annotations": batch,
            })
        };
        let batches = check_run::batches(&annotations);
        let repo = &self.settings.repository;
        let created = client.post(
            &format!("/repos/{repo}/check-runs"),
            &serde_json::json!({
                "name": check_run::NAME,
                "head_sha": head_sha,
                "status": "completed",
                "conclusion": check_run::conclusion(r),
                "external_id": self.job_key(),
                "output": output(batches[0]),
            }),
        );
        let id = match created.map(|c| serde_json::from_str::<Created>(&c.body)) {
            Ok(Ok(c)) => c.id,
            Ok(Err(e)) => {
                self.problems
                    .other
                    .push(format!("the check run's answer was not understood ({e})"));
                return;
            }
            Err(e) => return self.failed("checks: write", "the check run", &e),
        };
        for batch in &batches[1..] {
            if let Err(e) = client.patch(
                &format!("/repos/{repo}/check-runs/{id}"),
                &serde_json::json!({ "output": output(batch) }),
            ) {
                return self.failed("checks: write", "the check run's annotations", &e);
            }
        }
    }

    fn failed(&mut self, permission: &'static str, what: &str, e: &Failure) {
        match e {
            Failure::Status(403 | 404, _) => {
                self.problems.missing.insert(permission);
            }
            _ => self.problems.other.push(format!("{what}: {e}")),
        }
    }

    /// The login the token acts as: `GET /user`, or the Actions app's bot for a
    /// `GITHUB_TOKEN`, which may not read it.
    fn identity(&mut self) -> Option<String> {
        let client = self.client.as_ref()?;
        #[derive(Deserialize)]
        struct Me {
            login: String,
        }
        match client.get("/user") {
            Ok(reply) => serde_json::from_str::<Me>(&reply.body)
                .ok()
                .map(|m| m.login)
                .or_else(|| Some(ACTIONS_BOT.to_owned())),
            Err(Failure::Status(401 | 403 | 404, _)) => Some(ACTIONS_BOT.to_owned()),
            Err(e) => {
                self.problems
                    .other
                    .push(format!("finding the token's identity: {e}"));
                None
            }
        }
    }

    fn comment(&mut self, r: &Report, number: u64) {
        let Some(login) = self.identity() else { return };
        let Some(client) = self.client.as_ref() else {
            return;
        };
        let repo = self.settings.repository.clone();
        let marker = comment::marker(&self.settings.workflow, &self.settings.job);
        let mut comments: Vec<comment::Comment> = Vec::new();
        let mut path = Some(format!(
            "/repos/{repo}/issues/{number}/comments?per_page=100"
        ));
        let mut existing = None;
        for _ in 0..MAX_PAGES {
            let Some(p) = path.take() else { break };
            match client.get(&p) {
                Ok(reply) => {
                    let page: Vec<comment::Comment> =
                        serde_json::from_str(&reply.body).unwrap_or_default();
                    comments.extend(page);
                    if let Some(c) = comment::find_own(&comments, &marker, &login) {
                        existing = Some(c.clone());
                        break;
                    }
                    path = reply.next;
                }
                Err(e) => return self.failed("pull-requests: write", "the comment", &e),
            }
        }
        let (changes, against) = self.changes(r);
        let ctx = comment::Context {
            workflow: self.settings.workflow.clone(),
            job: self.settings.job.clone(),
            run_link: match (&self.settings.server_url, &self.settings.run_id) {
                (Some(server), Some(id)) => {
                    format!("[run {id}]({server}/{repo}/actions/runs/{id})")
                }
                _ => String::new(),
            },
            against,
        };
        let body = serde_json::json!({ "body": comment::body(&changes, &ctx) });
        let result = match comment::decide(existing.as_ref(), &changes) {
            comment::Action::Create => client
                .post(&format!("/repos/{repo}/issues/{number}/comments"), &body)
                .map(|_| ()),
            comment::Action::Update(id) => client
                .patch(&format!("/repos/{repo}/issues/comments/{id}"), &body)
                .map(|_| ()),
            comment::Action::Untouched | comment::Action::Nothing => Ok(()),
        };
        if let Err(e) = result {
            self.failed("pull-requests: write", "the comment", &e);
        }
    }

    /// Posts the check run and the comment; returns the one notice (a workflow command
    /// line) saying what could not be done, if anything.
    pub fn publish(mut self, r: &Report) -> Option<String> {
        let pr = self.event.pr.clone();
        if pr.as_ref().is_some_and(|p| p.fork) {
            return Some(notice(
                "this pull request comes from a fork, whose token cannot write: no check \
                 run and no comment (the annotations and the job summary have the report; \
                 to comment anyway, see the workflow_run recipe in ci-janitor's README)",
            ));
        }
        if self.settings.check_run {
            let head = pr
                .as_ref()
                .map(|p| p.head_sha.clone())
                .filter(|s| !s.is_empty())
                .or_else(|| self.settings.sha.clone());
            match head {
                Some(sha) => self.post_check_run(r, &sha),
                None => self
                    .problems
                    .other
                    .push("no commit to attach the check run to (GITHUB_SHA is unset)".into()),
            }
        }
        if let (true, Some(p)) = (self.settings.pr_comment, &pr) {
            self.comment(r, p.number);
        }
        let p = &self.problems;
        if p.missing.is_empty() && p.other.is_empty() {
            return None;
        }
        let mut text = String::from("ci-janitor could not use the GitHub API fully");
        if !p.missing.is_empty() {
            let list: Vec<String> = p.missing.iter().map(|m| format!("`{m}`")).collect();
            text.push_str(&format!(
                ": the token lacks {} (add {} under the job's `permissions:`)",
                list.join(" and "),
                if list.len() == 1 { "it" } else { "them" }
            ));
        }
        if !p.other.is_empty() {
            text.push_str(&format!(
                "{} {}",
                if p.missing.is_empty() { ":" } else { ";" },
                p.other.join("; ")
            ));
        }
        text.push_str(". The annotations and the job summary have the report.");
        Some(notice(&text))
    }
}

fn notice(text: &str) -> String {
    format!(
        "::notice title={}::{}",
        crate::report::github::escape_property("ci-janitor: GitHub API"),
        crate::report::github::escape_data(text)
    )
}

#[cfg(test)]
mod tests;
