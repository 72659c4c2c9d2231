//! The self-hosted runner's job hooks: installed into a runner directory, then run the way
//! the runner runs them (`bash -e FILE`, with the job's environment and `$GITHUB_ENV`).

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::janitor::{janitor, output_of};
use crate::support::{alive, serial, wait_dead, Fixture, ScratchDir};

fn runner_dir(scratch: &Path) -> std::path::PathBuf {
    let dir = scratch.join("actions-runner");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("run.sh"), "#!/bin/sh\n").unwrap();
    std::fs::write(
        dir.join(".env"),
        "LANG=C.UTF-8\nhttp_proxy=http://proxy.invalid:3128\n",
    )
    .unwrap();
    dir.canonicalize().unwrap()
}

fn install(dir: &Path, extra: &[&str]) -> std::process::Output {
    let mut c = janitor();
    c.args(["hooks", "install", "--runner-dir"])
        .arg(dir)
        .args(extra);
    output_of(c)
}

/// Runs a hook script as the runner does, in a session of its own, with a job's env.
fn run_hook(script: &Path, scratch: &Path, tracking: &str) -> (i32, String, String) {
    let github_env = scratch.join("github_env");
    let mut c = Command::new("setsid");
    c.arg("--wait")
        .arg("bash")
        .arg("-e")
        .arg(script)
        .current_dir(scratch)
        .env("GITHUB_ACTIONS", "true")
        .env("RUNNER_TRACKING_ID", tracking)
        .env("GITHUB_RUN_ID", "77")
        .env("GITHUB_JOB", "test")
        .env("GITHUB_ENV", &github_env)
        .env("GITHUB_STEP_SUMMARY", scratch.join("summary.md"))
        .env_remove("CI_JANITOR_RUN");
    let out = output_of(c);
    let marker = std::fs::read_to_string(&github_env)
        .unwrap_or_default()
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix("CI_JANITOR_RUN=").map(str::to_owned))
        .unwrap_or_default();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        marker,
    )
}

#[test]
fn install_and_uninstall_edit_only_their_own_lines() {
    let _g = crate::support::serial();
    let scratch = ScratchDir::new("hooks_install");
    let dir = runner_dir(scratch.path());
    let out = install(&dir, &[]);
    assert!(out.status.success());
    let env = std::fs::read_to_string(dir.join(".env")).unwrap();
    assert!(
        env.starts_with("LANG=C.UTF-8\nhttp_proxy=http://proxy.invalid:3128\n"),
        "{env}"
    );
    let started = dir.join("ci-janitor/job-started.sh");
    assert!(env.contains(&format!(
        "ACTIONS_RUNNER_HOOK_JOB_STARTED={}",
        started.display()
    )));
    assert!(env.contains("ACTIONS_RUNNER_HOOK_JOB_COMPLETED="));
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(&started).unwrap().permissions(),
    );
    assert_eq!(mode & 0o777, 0o755);
    // Installing twice changes nothing.
    assert!(install(&dir, &[]).status.success());
    assert_eq!(std::fs::read_to_string(dir.join(".env")).unwrap(), env);

    let mut c = janitor();
    c.args(["hooks", "uninstall", "--runner-dir"]).arg(&dir);
    assert!(output_of(c).status.success());
    assert_eq!(
        std::fs::read_to_string(dir.join(".env")).unwrap(),
        "LANG=C.UTF-8\nhttp_proxy=http://proxy.invalid:3128\n"
    );
    assert!(!started.exists());
}

#[test]
fn install_refuses_someone_elses_hook_and_a_non_runner_dir() {
    let _g = crate::support::serial();
    let scratch = ScratchDir::new("hooks_refuse");
    let dir = runner_dir(scratch.path());
    std::fs::write(
        dir.join(".env"),
        "ACTIONS_RUNNER_HOOK_JOB_STARTED=/opt/other/hook.sh\n",
    )
    .unwrap();
    let out = install(&dir, &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/opt/other/hook.sh"));
    let out = install(scratch.path(), &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("it has no config.sh or run.sh"));
}

#[test]
fn a_job_is_swept_by_its_completed_hook() {
    let _g = serial();
    let scratch = ScratchDir::new("hooks_job");
    let dir = runner_dir(scratch.path());
    assert!(install(&dir, &[]).status.success());
    let tracking = format!("github_hooks_{}", std::process::id());
    let (code, text, marker) = run_hook(
        &dir.join("ci-janitor/job-started.sh"),
        scratch.path(),
        &tracking,
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        !marker.is_empty(),
        "the started hook marks the job's steps through GITHUB_ENV"
    );

    // A step leaks a daemon that scrubbed RUNNER_TRACKING_ID but kept the job's marker.
    let leak = Fixture::builder("double-fork")
        .env("CI_JANITOR_RUN", &marker)
        .env_remove("RUNNER_TRACKING_ID")
        .spawn();
    let (code, text, _) = run_hook(
        &dir.join("ci-janitor/job-completed.sh"),
        scratch.path(),
        &tracking,
    );
    assert_eq!(
        code, 0,
        "hygiene hooks report but do not fail the job by default: {text}"
    );
    assert!(
        text.contains("::warning title=ci-janitor%3A 1 leaked process::"),
        "{text}"
    );
    assert!(wait_dead(&leak.spawned().idents(), Duration::from_secs(5)));
    assert!(!dir.join("ci-janitor/state/active").exists());
}

#[test]
fn the_next_job_sweeps_what_a_crashed_job_left() {
    let _g = serial();
    let scratch = ScratchDir::new("hooks_crash");
    let dir = runner_dir(scratch.path());
    assert!(install(&dir, &["--fail-on", "leak"]).status.success());
    let first = format!("github_first_{}", std::process::id());
    let (code, _, _) = run_hook(
        &dir.join("ci-janitor/job-started.sh"),
        scratch.path(),
        &first,
    );
    assert_eq!(code, 0);
    let leak = Fixture::builder("double-fork")
        .env("RUNNER_TRACKING_ID", &first)
        .spawn();
    // The runner dies: no completed hook. A process of some other job, started meanwhile,
    // must survive the next job's cleanup.
    let bystander = Fixture::builder("double-fork")
        .env("RUNNER_TRACKING_ID", "github_someone_else")
        .spawn();
    let second = format!("github_second_{}", std::process::id());
    let (code, text, _) = run_hook(
        &dir.join("ci-janitor/job-started.sh"),
        scratch.path(),
        &second,
    );
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains("previous job on this runner never completed"),
        "{text}"
    );
    assert!(
        wait_dead(&leak.spawned().idents(), Duration::from_secs(5)),
        "the crashed job's leak survived"
    );
    for id in bystander.spawned().idents() {
        assert!(alive(&id), "another job's process was killed");
    }
    // And this job's end is clean, so with --fail-on leak it passes.
    let (code, text, _) = run_hook(
        &dir.join("ci-janitor/job-completed.sh"),
        scratch.path(),
        &second,
    );
    assert_eq!(code, 0, "{text}");
}
