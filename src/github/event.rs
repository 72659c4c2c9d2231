//! The event that started the workflow (`$GITHUB_EVENT_PATH`), read up front: is this a
//! pull request, which one, its head and base commits, and does it come from a fork (then
//! the token cannot write, and no write is attempted).

use std::path::Path;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    pub pr: Option<PullRequest>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullRequest {
    pub number: u64,
    pub head_sha: String,
    pub base_sha: String,
    /// The head branch lives in another repository (or one that was deleted).
    pub fork: bool,
}

/// The largest event payload read.
const MAX_BYTES: u64 = 32 << 20;

/// The pull request in an event payload, if it has one.
pub fn parse(json: &str) -> Event {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(json) else {
        return Event::default();
    };
    let pr = &v["pull_request"];
    let Some(number) = pr["number"].as_u64() else {
        return Event::default();
    };
    let s = |v: &serde_json::Value| v.as_str().unwrap_or("").to_owned();
    let head_repo = s(&pr["head"]["repo"]["full_name"]);
    let base_repo = s(&pr["base"]["repo"]["full_name"]);
    Event {
        pr: Some(PullRequest {
            number,
            head_sha: s(&pr["head"]["sha"]),
            base_sha: s(&pr["base"]["sha"]),
            fork: head_repo.is_empty()
                || head_repo != base_repo
                || pr["head"]["repo"]["fork"].as_bool() == Some(true),
        }),
    }
}

/// The event at `path` (none when unset or unreadable).
pub fn read(path: Option<&Path>) -> Event {
    path.and_then(|p| crate::files::read_input(p, MAX_BYTES).ok())
        .map(|b| parse(&String::from_utf8_lossy(&b)))
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pull_requests_and_forks() {
        let same = r#"{"pull_request":{"number":7,"head":{"sha":"h","repo":{"full_name":"o/r","fork":false}},"base":{"sha":"b","repo":{"full_name":"o/r"}}}}"#;
        let e = parse(same).pr.unwrap();
        assert_eq!(
            (e.number, e.head_sha.as_str(), e.base_sha.as_str(), e.fork),
            (7, "h", "b", false)
        );
        let fork = same.replace(
            r#""full_name":"o/r","fork":false"#,
            r#""full_name":"x/r","fork":true"#,
        );
        assert!(parse(&fork).pr.unwrap().fork);
        let deleted = same.replace(r#"{"full_name":"o/r","fork":false}"#, "null");
        assert!(parse(&deleted).pr.unwrap().fork);
        assert_eq!(parse(r#"{"ref":"refs/heads/main"}"#), Event::default());
        assert_eq!(parse("not json"), Event::default());
    }
}
