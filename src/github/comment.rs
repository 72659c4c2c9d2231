//! The pull-request comment (pure): one per workflow and job, found again by a hidden
//! marker *and* by its author being the token's own identity (another user's comment that
//! quotes the marker is never edited), updated in place when what it says changes.
//!
//! What it says is the leaks this run adds (new) and removes (fixed) compared with the
//! gate: the base commit's run, or the known-leaks file. Its state (a hash of the new and
//! fixed signatures and counts) is kept in a second hidden line, so that:
//! - with no comment yet, one is created only when something is new or fixed;
//! - an existing comment is edited only when the state changed (a later clean run turns
//!   "adds a leak" into "no new leak");
//! - a run that says what the comment already says leaves it untouched.

use std::fmt::Write;

use serde::Deserialize;
use sha2::{Digest as _, Sha256};

use crate::gate::diff::{render_markdown, Changes};
use crate::report::summary::md;

const MARKER: &str = "<!-- ci-janitor:pr-comment ";
const STATE: &str = "<!-- ci-janitor:state ";
/// Rows per table of the comment.
const MAX_ROWS: usize = 30;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Comment {
    pub id: u64,
    #[serde(default)]
    pub body: Option<String>,
    pub user: Option<User>,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct User {
    pub login: String,
}

/// Names for a marker: no `--`, `>` or line breaks.
fn safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_control() || c == '>' || c == '<' {
                '_'
            } else {
                c
            }
        })
        .collect::<String>()
        .replace("--", "__")
}

/// The hidden line that names the comment of one workflow's job.
pub fn marker(workflow: &str, job: &str) -> String {
    format!(
        "{MARKER}workflow=\"{}\" job=\"{}\" -->",
        safe(workflow),
        safe(job)
    )
}

/// The state of what a comment says.
pub fn state_of(changes: &Changes) -> String {
    let mut h = Sha256::new();
    for (tag, list) in [("new", &changes.new), ("fixed", &changes.fixed)] {
        for c in list {
            h.update(format!("{tag} {} {} {}\n", c.id, c.base, c.head).as_bytes());
        }
    }
    h.finalize()
        .iter()
        .take(8)
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The state a comment's body records.
pub fn recorded_state(body: &str) -> Option<&str> {
    let start = body.find(STATE)? + STATE.len();
    let end = start + body[start..].find(" -->")?;
    Some(&body[start..end])
}

/// What the comment is about, besides the changes.
#[derive(Debug, Clone, Default)]
pub struct Context {
    pub workflow: String,
    pub job: String,
    /// `[run 123](https://…/actions/runs/123)`, or empty.
    pub run_link: String,
    /// What the run was compared with (the base commit, the known-leaks file).
    pub against: String,
}

/// The comment's body.
pub fn body(changes: &Changes, ctx: &Context) -> String {
    let mut out = format!(
        "{}\n{STATE}{} -->\n",
        marker(&ctx.workflow, &ctx.job),
        state_of(changes)
    );
    let heading = if !changes.new.is_empty() {
        let processes: usize = changes.new.iter().map(|c| c.head - c.base).sum();
        format!(
            "### ❌ ci-janitor: this pull request adds {} ({})",
            if changes.new.len() == 1 {
                "a leak".to_owned()
            } else {
                format!("{} leaks", changes.new.len())
            },
            crate::report::terminal::plural(processes, "process", "processes")
        )
    } else if !changes.fixed.is_empty() {
        format!(
            "### ✅ ci-janitor: no new leak, and {} no longer {}",
            crate::report::terminal::plural(changes.fixed.len(), "known leak", "known leaks"),
            if changes.fixed.len() == 1 {
                "occurs"
            } else {
                "occur"
            }
        )
    } else {
        "### ✅ ci-janitor: no new leak".to_owned()
    };
    let _ = writeln!(out, "{heading}\n");
    let _ = writeln!(
        out,
        "Job `{}` of workflow `{}`{}, compared with {}.\n",
        md(&ctx.job),
        md(&ctx.workflow),
        if ctx.run_link.is_empty() {
            String::new()
        } else {
            format!(" ({})", ctx.run_link)
        },
        ctx.against
    );
    let shown = Changes {
        new: changes.new.clone(),
        fixed: changes.fixed.clone(),
        unchanged: Vec::new(),
    };
    out.push_str(&render_markdown(&shown, MAX_ROWS));
    if changes.is_quiet() {
        out.push_str("Nothing this job leaves running is new.\n\n");
    }
    out.push_str("<sub>Updated in place on every push by ci-janitor.</sub>\n");
    out
}

/// This job's comment among `comments`: it holds the marker and the token's own login
/// wrote it.
pub fn find_own<'a>(comments: &'a [Comment], marker: &str, login: &str) -> Option<&'a Comment> {
    comments.iter().find(|c| {
        c.body.as_deref().is_some_and(|b| b.contains(marker))
            && c.user
                .as_ref()
                .is_some_and(|u| u.login.eq_ignore_ascii_case(login))
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Create,
    Update(u64),
    /// The comment already says this.
    Untouched,
    /// No comment, and nothing to say.
    Nothing,
}

pub fn decide(existing: Option<&Comment>, changes: &Changes) -> Action {
    match existing {
        Some(c) => {
            if c.body.as_deref().and_then(recorded_state) == Some(state_of(changes).as_str()) {
                Action::Untouched
            } else {
                Action::Update(c.id)
            }
        }
        None if changes.is_quiet() => Action::Nothing,
        None => Action::Create,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::diff::Change;

    fn change(id: &str, base: usize, head: usize) -> Change {
        Change {
            id: id.into(),
            command: format!("cmd {id}"),
            base,
            head,
        }
    }

    fn comment(id: u64, body: &str, login: &str) -> Comment {
        Comment {
            id,
            body: Some(body.into()),
            user: Some(User {
                login: login.into(),
            }),
        }
    }

    #[test]
    fn created_once_updated_on_change_untouched_when_the_same() {
        let ctx = Context {
            workflow: "CI".into(),
            job: "test".into(),
            ..Context::default()
        };
        let leaking = Changes {
            new: vec![change("a", 0, 2)],
            ..Changes::default()
        };
        let clean = Changes::default();
        assert_eq!(decide(None, &clean), Action::Nothing);
        assert_eq!(decide(None, &leaking), Action::Create);
        let posted = comment(9, &body(&leaking, &ctx), "github-actions[bot]");
        assert!(posted
            .body
            .as_deref()
            .unwrap()
            .contains("adds a leak (2 processes)"));
        assert_eq!(decide(Some(&posted), &leaking), Action::Untouched);
        assert_eq!(decide(Some(&posted), &clean), Action::Update(9));
        let cleaned = comment(9, &body(&clean, &ctx), "github-actions[bot]");
        assert!(cleaned.body.as_deref().unwrap().contains("no new leak"));
        assert_eq!(decide(Some(&cleaned), &clean), Action::Untouched);
    }

    #[test]
    fn only_our_own_comment_with_the_marker_is_ours() {
        let m = marker("CI", "test");
        let comments = [
            comment(1, &format!("quoting {m}"), "someone"),
            comment(2, "no marker", "github-actions[bot]"),
            comment(3, &format!("{m}\nours"), "GitHub-Actions[bot]"),
        ];
        assert_eq!(
            find_own(&comments, &m, "github-actions[bot]").map(|c| c.id),
            Some(3)
        );
        assert_eq!(find_own(&comments[..2], &m, "github-actions[bot]"), None);
        assert_eq!(find_own(&comments, &marker("CI", "lint"), "someone"), None);
        assert!(!marker("a-->b", "x\ny").contains("-->b"));
    }
}
