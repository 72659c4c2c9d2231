//! Step names as a person sees them, read from the workflow file that runs the job.
//!
//! A leaked process records the step that started it as `GITHUB_ACTION`, which is the
//! step's `id:` or an id the runner made up: GitHub's `__run`, `__run_2`, … for `run:`
//! steps and `__OWNER_REPO`, `__self` for `uses:` steps (a suffix `_2`, `_3`, … on
//! repeats); act's index of the step in the job (`0`, `1`, …). This module maps every
//! such id of the current job to the label GitHub's log shows: the step's `name:`, else
//! its `uses:`, else the first line of its `run:`. The file is found through
//! `GITHUB_WORKFLOW_REF` (`OWNER/REPO/.github/workflows/FILE@REF`) in `GITHUB_WORKSPACE`;
//! when it is not there (no checkout, a reusable workflow from elsewhere), there are no
//! names and the reports fall back to the ids.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

use crate::settings::Env;

/// Longest label kept (a long `run:` line is cut with `…`).
const MAX_LABEL: usize = 80;

/// The workflow file of the running job, if the environment names one that exists.
pub fn workflow_file(env: Env<'_>) -> Option<PathBuf> {
    let reference = env("GITHUB_WORKFLOW_REF").filter(|v| !v.is_empty())?;
    let without_ref = reference
        .rsplit_once('@')
        .map_or(reference.as_str(), |(p, _)| p);
    let at = without_ref.find(".github/workflows/")?;
    let workspace = env("GITHUB_WORKSPACE").filter(|v| !v.is_empty())?;
    let file = Path::new(&workspace).join(&without_ref[at..]);
    file.is_file().then_some(file)
}

/// Names of the steps of job `GITHUB_JOB` by every id the runner may give them; empty
/// when the workflow file cannot be found or read.
pub fn step_names(env: Env<'_>) -> BTreeMap<String, String> {
    let (Some(file), Some(job)) = (workflow_file(env), env("GITHUB_JOB")) else {
        return BTreeMap::new();
    };
    match std::fs::read_to_string(&file) {
        Ok(text) => step_names_in(&text, &job),
        Err(e) => {
            tracing::debug!("cannot read {} for step names: {e}", file.display());
            BTreeMap::new()
        }
    }
}

/// [`step_names`] on the text of a workflow file.
pub fn step_names_in(text: &str, job: &str) -> BTreeMap<String, String> {
    let mut names = BTreeMap::new();
    let Ok(docs) = YamlLoader::load_from_str(text) else {
        return names;
    };
    let Some(steps) = docs
        .first()
        .map(|d| &d["jobs"][job]["steps"])
        .and_then(Yaml::as_vec)
    else {
        return names;
    };
    let mut seen: BTreeMap<String, usize> = BTreeMap::new();
    for (index, step) in steps.iter().enumerate() {
        let Some(label) = label(step) else { continue };
        // act names a step by its position; GitHub by its id, else one it generates.
        names.insert(index.to_string(), label.clone());
        if let Some(id) = step["id"].as_str() {
            names.insert(id.to_owned(), label);
            continue;
        }
        let base = generated_base(step);
        let n = seen.entry(base.clone()).or_insert(0);
        *n += 1;
        let id = if *n == 1 { base } else { format!("{base}_{n}") };
        names.insert(id, label);
    }
    names
}

/// What GitHub's log shows for a step.
fn label(step: &Yaml) -> Option<String> {
    let text = step["name"]
        .as_str()
        .or_else(|| step["uses"].as_str())
        .map(str::to_owned)
        .or_else(|| {
            step["run"]
                .as_str()
                .and_then(|r| r.lines().map(str::trim).find(|l| !l.is_empty()))
                .map(str::to_owned)
        })?;
    let text = text.trim();
    Some(if text.chars().count() > MAX_LABEL {
        let cut: String = text.chars().take(MAX_LABEL - 1).collect();
        format!("{cut}…")
    } else {
        text.to_owned()
    })
}

/// The id GitHub gives a step without `id:`, before the `_N` of repeats.
fn generated_base(step: &Yaml) -> String {
    match step["uses"].as_str() {
        None => "__run".into(),
        Some(u) if u.starts_with("./") || u == "." => "__self".into(),
        Some(u) => {
            let action = u.split('@').next().unwrap_or(u);
            let repo: String = action
                .split('/')
                .take(2)
                .collect::<Vec<_>>()
                .join("_")
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            format!("__{repo}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WORKFLOW: &str = r#"
on: push
jobs:
  other:
    runs-on: ubuntu-latest
    steps:
      - run: echo not this job
  test:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: ci-janitor/ci-janitor@v1
      - name: Start the API server
        run: nohup uvicorn app:app &
      - run: |

          pytest -n auto tests/
          echo done
      - id: e2e
        run: npm run e2e
      - run: npm run dev &
      - uses: actions/checkout@v4
        with:
          path: other
"#;

    #[test]
    fn ids_of_github_and_act_map_to_what_the_log_shows() {
        let names = step_names_in(WORKFLOW, "test");
        let get = |id: &str| names.get(id).map(String::as_str);
        assert_eq!(get("__actions_checkout"), Some("actions/checkout@v4"));
        assert_eq!(get("__actions_checkout_2"), Some("actions/checkout@v4"));
        assert_eq!(
            get("__ci-janitor_ci-janitor"),
            Some("ci-janitor/ci-janitor@v1")
        );
        assert_eq!(get("__run"), Some("Start the API server"));
        assert_eq!(get("__run_2"), Some("pytest -n auto tests/"));
        assert_eq!(get("e2e"), Some("npm run e2e"));
        assert_eq!(get("__run_3"), Some("npm run dev &"));
        // act: by position.
        assert_eq!(get("2"), Some("Start the API server"));
        assert_eq!(get("4"), Some("npm run e2e"));
        assert!(!names.values().any(|v| v.contains("not this job")));
    }

    #[test]
    fn no_file_or_no_job_means_no_names() {
        assert!(step_names_in(WORKFLOW, "missing").is_empty());
        assert!(step_names_in("{{ not yaml", "test").is_empty());
        assert!(step_names(&|_| None).is_empty());
        let long = format!(
            "jobs:\n  j:\n    steps:\n      - run: {}\n",
            "x".repeat(200)
        );
        let names = step_names_in(&long, "j");
        assert_eq!(names["__run"].chars().count(), MAX_LABEL);
    }

    #[test]
    fn the_file_is_found_from_the_workflow_ref() {
        let dir = tempfile::tempdir().expect("tempdir");
        let wf = dir.path().join(".github/workflows");
        std::fs::create_dir_all(&wf).expect("mkdir");
        std::fs::write(wf.join("ci.yml"), WORKFLOW).expect("write");
        let ws = dir.path().to_string_lossy().into_owned();
        let env = move |k: &str| match k {
            "GITHUB_WORKFLOW_REF" => {
                Some("o/r/.github/workflows/ci.yml@refs/pull/7/merge".to_owned())
            }
            "GITHUB_WORKSPACE" => Some(ws.clone()),
            "GITHUB_JOB" => Some("test".to_owned()),
            _ => None,
        };
        assert_eq!(step_names(&env)["e2e"], "npm run e2e");
    }
}
