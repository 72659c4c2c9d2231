//! Self-hosted runner hygiene without changing any workflow: the runner's job hooks.
//!
//! `hooks install --runner-dir DIR` writes two scripts and points the runner's
//! `ACTIONS_RUNNER_HOOK_JOB_STARTED` / `_COMPLETED` at them in `DIR/.env`. The runner runs
//! each with `bash -e` at the start and end of every job, as the runner user, with the
//! job's environment (and `$GITHUB_ENV` support).
//!
//! - job started: if the previous job's state is still marked active (the runner or the
//!   machine died before its completed hook), sweep what that job left first, with that
//!   job's markers; then take this job's baseline and mark its steps (`CI_JANITOR_RUN`).
//! - job completed: sweep, annotate, summarise; fail the job only if installed with
//!   `--fail-on leak` (hygiene should not break jobs by surprise).
//!
//! The state lives outside `RUNNER_TEMP` (the runner empties that per job), by default in
//! `DIR/ci-janitor/state`.

use std::path::{Path, PathBuf};

use crate::cli::{Dur, FailOn, HooksCommand};
use crate::commands::action::append_file_command;
use crate::errors::{AppError, Exit};
use crate::job::{self, Caller, GuardInput, Job};
use crate::platform::{self, ReadOptions};
use crate::settings::{self, Env};
use crate::state;

const STARTED: &str = "ACTIONS_RUNNER_HOOK_JOB_STARTED";
const COMPLETED: &str = "ACTIONS_RUNNER_HOOK_JOB_COMPLETED";

pub fn run(cmd: HooksCommand, env: Env<'_>) -> Result<Exit, AppError> {
    match cmd {
        HooksCommand::Install {
            runner_dir,
            state_dir,
            fail_on,
            grace,
            force,
        } => install(&runner_dir, state_dir, fail_on, grace, force),
        HooksCommand::Uninstall { runner_dir } => uninstall(&runner_dir),
        HooksCommand::JobStarted { state_dir } => job_started(&state_dir, env),
        HooksCommand::JobCompleted {
            state_dir,
            fail_on,
            grace,
        } => job_completed(&state_dir, fail_on, grace, env),
    }
}

fn hooks_dir(runner_dir: &Path) -> PathBuf {
    runner_dir.join("ci-janitor")
}

/// Single-quotes a value for bash.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> AppError {
    AppError::Internal(format!("{what} {}: {e}", path.display()))
}

fn install(
    runner_dir: &Path,
    state_dir: Option<PathBuf>,
    fail_on: FailOn,
    grace: Dur,
    force: bool,
) -> Result<Exit, AppError> {
    if !runner_dir.join("config.sh").exists() && !runner_dir.join("run.sh").exists() {
        return Err(AppError::Input(format!(
            "find a runner in {}: it has no config.sh or run.sh; pass the folder you \
             configured the runner in",
            runner_dir.display()
        )));
    }
    let runner_dir = runner_dir
        .canonicalize()
        .map_err(|e| io_err("resolve", runner_dir, e))?;
    let dir = hooks_dir(&runner_dir);
    let state_dir = state_dir.unwrap_or_else(|| dir.join("state"));
    let exe = std::env::current_exe()
        .and_then(|p| p.canonicalize())
        .map_err(|e| AppError::Internal(format!("find our own executable: {e}")))?;
    let exe = exe.to_string_lossy();
    let fail_on = match fail_on {
        FailOn::Leak => "leak",
        FailOn::New => "new",
        FailOn::Never => "never",
    };
    private_dir(&state_dir)?;
    let scripts = [
        (
            "job-started.sh",
            STARTED,
            format!(
                "hooks job-started --state-dir {}",
                sh_quote(&state_dir.to_string_lossy())
            ),
        ),
        (
            "job-completed.sh",
            COMPLETED,
            format!(
                "hooks job-completed --state-dir {} --fail-on {fail_on} --grace {}",
                sh_quote(&state_dir.to_string_lossy()),
                sh_quote(&grace.to_string())
            ),
        ),
    ];
    let env_path = runner_dir.join(".env");
    let mut env_text = match crate::files::read_input(&env_path, MAX_ENV_FILE) {
        Ok(t) => String::from_utf8_lossy(&t).into_owned(),
        Err(e) if e.is_not_found() => String::new(),
        Err(e) => return Err(AppError::Input(format!("read {}: {e}", env_path.display()))),
    };
    for (file, var, _) in &scripts {
        let ours = dir.join(file);
        if let Some(current) = env_value(&env_text, var) {
            if Path::new(&current) != ours && !force {
                return Err(AppError::Input(format!(
                    "install the hook {var} in {}: it already runs {current}, and ci-janitor \
                     will not replace another hook (call ci-janitor from it, or pass --force)",
                    env_path.display()
                )));
            }
        }
    }
    std::fs::create_dir_all(&dir).map_err(|e| io_err("create", &dir, e))?;
    for (file, var, args) in &scripts {
        let path = dir.join(file);
        let text = format!(
            "#!/usr/bin/env bash\n\
             # Written by `ci-janitor hooks install`. The runner runs this file with `bash -e`\n\
             # when a job {} ({var} in {}).\n\
             # Remove it with: ci-janitor hooks uninstall --runner-dir {}\n\
             exec {} {args}\n",
            if *var == STARTED {
                "starts"
            } else {
                "completes"
            },
            env_path.display(),
            sh_quote(&runner_dir.to_string_lossy()),
            sh_quote(&exe),
        );
        write_atomically(&path, text.as_bytes(), 0o755)?;
        env_text = set_env_value(&env_text, var, &path.to_string_lossy());
    }
    write_atomically(&env_path, env_text.as_bytes(), 0o644)?;
    println!(
        "ci-janitor: installed the runner's job hooks in {}.\n\
         Restart the runner for .env to take effect (as a service: ./svc.sh stop && ./svc.sh start).\n\
         Note: the runner service runs with systemd KillMode=process, so processes a job leaks\n\
         also survive a service restart; the next job's start hook sweeps them.",
        env_path.display()
    );
    Ok(Exit::Clean)
}

fn uninstall(runner_dir: &Path) -> Result<Exit, AppError> {
    let dir = hooks_dir(runner_dir);
    let env_path = runner_dir.join(".env");
    if let Ok(text) = crate::files::read_input(&env_path, MAX_ENV_FILE)
        .map(|t| String::from_utf8_lossy(&t).into_owned())
    {
        let mut out = text.clone();
        for (var, file) in [(STARTED, "job-started.sh"), (COMPLETED, "job-completed.sh")] {
            let ours = runner_dir
                .canonicalize()
                .map(|d| hooks_dir(&d).join(file))
                .unwrap_or_else(|_| dir.join(file));
            if env_value(&out, var).is_some_and(|v| Path::new(&v) == ours) {
                out = remove_env_value(&out, var);
            }
        }
        if out != text {
            write_atomically(&env_path, out.as_bytes(), 0o644)?;
        }
    }
    for file in ["job-started.sh", "job-completed.sh"] {
        let _ = std::fs::remove_file(dir.join(file));
    }
    println!(
        "ci-janitor: removed the job hooks from {} (the state in {} is kept; delete it by hand if you like)",
        env_path.display(),
        dir.join("state").display()
    );
    Ok(Exit::Clean)
}

fn env_value(text: &str, var: &str) -> Option<String> {
    text.lines().rev().find_map(|l| {
        l.strip_prefix(var)
            .and_then(|r| r.strip_prefix('='))
            .map(str::to_owned)
    })
}

fn set_env_value(text: &str, var: &str, value: &str) -> String {
    let mut out = remove_env_value(text, var);
    if !out.is_empty() && !out.ends_with('\n') {
        out.push('\n');
    }
    out.push_str(&format!("{var}={value}\n"));
    out
}

fn remove_env_value(text: &str, var: &str) -> String {
    let prefix = format!("{var}=");
    let mut out: String = text
        .lines()
        .filter(|l| !l.starts_with(&prefix))
        .map(|l| format!("{l}\n"))
        .collect();
    if !text.ends_with('\n') && out.ends_with('\n') && !text.is_empty() {
        out.pop();
    }
    out
}

/// The runner's `.env` is a few lines; anything bigger is not one.
const MAX_ENV_FILE: u64 = 1 << 20;

fn write_atomically(path: &Path, bytes: &[u8], mode: u32) -> Result<(), AppError> {
    crate::files::write_output_mode(path, bytes, mode).map_err(|e| io_err("write", path, e.into()))
}

/// The state directory: private (see [`crate::files`]).
fn private_dir(dir: &Path) -> Result<crate::files::Dir, AppError> {
    crate::files::Dir::private(dir).map_err(|e| {
        if e.is_refusal() {
            AppError::Input(e.to_string())
        } else {
            AppError::Internal(format!("create the state directory: {e}"))
        }
    })
}

fn state_file(state_dir: &Path) -> PathBuf {
    state_dir.join("state.json")
}

const ACTIVE: &str = "active";

fn active_file(state_dir: &Path) -> PathBuf {
    state_dir.join(ACTIVE)
}

fn job_started(state_dir: &Path, env: Env<'_>) -> Result<Exit, AppError> {
    let dir = private_dir(state_dir)?;
    let path = state_file(state_dir);
    if dir.read(ACTIVE, 0).is_ok() {
        println!(
            "ci-janitor: the previous job on this runner never completed; sweeping what it left"
        );
        match sweep_with_state(
            &path,
            FailOn::Never,
            Dur(std::time::Duration::from_secs(5)),
            env,
            true,
        ) {
            Ok(_) => {}
            Err(AppError::State(state::StateError::OtherBoot { .. })) => {
                println!(
                    "ci-janitor: (its state is from before a reboot: nothing of it can be alive)"
                );
            }
            Err(e) => println!(
                "::warning title=ci-janitor::{}",
                crate::report::github::escape_data(&format!(
                    "could not sweep the previous job: {e}"
                ))
            ),
        }
    }
    let marker = job::chain_marker(env, &crate::commands::action::new_job_marker(env));
    let mut markers = job::markers_from_env(env);
    markers.ci_janitor_run = Some(marker.clone());
    let snap = job::baseline(&markers, crate::platform::Detail::None)?;
    state::save(&path, &snap)?;
    dir.replace(
        ACTIVE,
        b"",
        crate::files::PRIVATE,
        crate::files::Sync::Durable,
    )
    .map_err(|e| io_err("write", &active_file(state_dir), e.into()))?;
    append_file_command(env, "GITHUB_ENV", "CI_JANITOR_RUN", &marker)?;
    println!(
        "ci-janitor: baseline of {} processes in {:.1} ms; the job's steps carry CI_JANITOR_RUN={marker}",
        snap.processes.len(),
        snap.duration_us as f64 / 1000.0
    );
    Ok(Exit::Clean)
}

fn job_completed(
    state_dir: &Path,
    fail_on: FailOn,
    grace: Dur,
    env: Env<'_>,
) -> Result<Exit, AppError> {
    let path = state_file(state_dir);
    let exit = match sweep_with_state(&path, fail_on, grace, env, false) {
        Err(AppError::State(state::StateError::Missing(_))) => {
            println!(
                "::warning title=ci-janitor::{}",
                crate::report::github::escape_data(&format!(
                    "no baseline in {}: the job-started hook did not run",
                    state_dir.display()
                ))
            );
            Exit::Clean
        }
        other => other?,
    };
    job::end_of_job(&path);
    if let Ok(dir) = private_dir(state_dir) {
        let _ = dir.remove(ACTIVE);
    }
    Ok(exit)
}

/// Sweeps against the state at `path`. `previous`: the state is an earlier job's, so only
/// its markers are evidence (its runner worker and session are gone; ours are not its).
fn sweep_with_state(
    path: &Path,
    fail_on: FailOn,
    grace: Dur,
    env: Env<'_>,
    previous: bool,
) -> Result<Exit, AppError> {
    let opts = ReadOptions::default();
    let baseline = state::load(path, &platform::boot_id(&opts.proc_root)?)?;
    let mut settings = settings::sweep_settings(
        &crate::cli::SweepOpts {
            grace,
            fail_on,
            ..Default::default()
        },
        env,
    )
    .map_err(AppError::Input)?;
    settings.report_json = Some(path.with_file_name("report.json"));
    let job = if previous {
        Job::for_earlier_job(&opts.proc_root, &baseline)
    } else {
        Job::discover(&opts.proc_root, env, Caller::Runner).with_baseline(&baseline, path)?
    };
    let swept = job::sweep(&job, &baseline, &settings, GuardInput::Beside(path))?;
    job::finish(swept, &settings, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_file_edits_keep_other_lines() {
        let text = "LANG=C.UTF-8\nhttp_proxy=http://proxy:3128\n";
        let t = set_env_value(text, STARTED, "/r/ci-janitor/job-started.sh");
        assert_eq!(
            t,
            "LANG=C.UTF-8\nhttp_proxy=http://proxy:3128\nACTIONS_RUNNER_HOOK_JOB_STARTED=/r/ci-janitor/job-started.sh\n"
        );
        assert_eq!(
            env_value(&t, STARTED).as_deref(),
            Some("/r/ci-janitor/job-started.sh")
        );
        let t2 = set_env_value(&t, STARTED, "/x");
        assert_eq!(t2.matches(STARTED).count(), 1);
        assert_eq!(remove_env_value(&t, STARTED), text);
        assert_eq!(set_env_value("A=1", "B", "2"), "A=1\nB=2\n");
    }

    #[test]
    fn quoting() {
        assert_eq!(sh_quote("/a b/it's"), r"'/a b/it'\''s'");
    }
}
