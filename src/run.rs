//! `ci-janitor run -- CMD`: snapshot, run the command as a child subreaper, then sweep what
//! it left. Attribution is by descent (orphans come back to us, the subreaper) and by the
//! `CI_JANITOR_RUN` marker in the command's environment; nothing else on the machine is
//! reported or touched.

use std::process::Command;

use crate::app::{AppError, Exit};
use crate::cli::RunArgs;
use crate::job::{GuardInput, Job, Root, RootKind};
use crate::platform::{self, ReadOptions};
use crate::settings::{self, Env};

pub fn run(args: RunArgs, env: Env<'_>) -> Result<Exit, AppError> {
    let mut settings = settings::sweep_settings(&args.opts, env).map_err(AppError::Input)?;
    settings.policy.only_attributed = true;
    let read = ReadOptions {
        host_facts: false,
        detail: platform::Detail::None,
        ..ReadOptions::default()
    };
    let baseline = platform::read_snapshot(&read)?;
    let me = platform::self_id(&read.proc_root)
        .ok_or_else(|| AppError::Internal("read our own /proc entry".into()))?;
    platform::become_subreaper().map_err(|e| AppError::Internal(e.to_string()))?;

    let marker = format!("run-{}-{}", me.pid, me.start_ticks);
    // Inside a job that already marks its processes (the Action), extend the chain, so
    // what this command leaves stays attributable to the job as well.
    let chain = crate::job::chain_marker(env, &marker);
    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| AppError::Input("no command given after `--`".into()))?;
    let display = args
        .command
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join(" ");
    let mut cmd = Command::new(program);
    cmd.args(rest).env("CI_JANITOR_RUN", &chain);
    let mut child = platform::spawn(cmd, &display).map_err(|e| match e {
        platform::ChildError::Spawn { .. } => AppError::Input(e.to_string()),
        other => AppError::Internal(other.to_string()),
    })?;
    let exit = child
        .wait()
        .map_err(|e| AppError::Internal(e.to_string()))?;
    let interrupted = child.received.iter().any(|r| {
        r.signal == nix::sys::signal::Signal::SIGINT as i32
            || r.signal == nix::sys::signal::Signal::SIGTERM as i32
    });
    eprintln!(
        "ci-janitor: `{display}` {}; sweeping what it left{}",
        match exit {
            platform::ChildExit::Code(c) => format!("exited with {c}"),
            platform::ChildExit::Signal(s) => format!("was killed by signal {s}"),
        },
        if interrupted { " (interrupted)" } else { "" }
    );

    // The job is the command: its marker (the chain: its processes stay the outer job's
    // too, and the outer job's are not ours) and its descent from us, its subreaper.
    let job = Job {
        me: Some(me),
        markers: crate::model::Markers {
            ci_janitor_run: Some(chain),
            ..Default::default()
        },
        roots: vec![Root {
            id: me,
            kind: RootKind::Run,
            depth: 0,
        }],
        own_exe: Job::discover_own_exe(&read.proc_root),
        ..Job::default()
    };
    let swept = crate::job::sweep(&job, &baseline, &settings, GuardInput::None);
    // Killed orphans are our children now: reap them so nothing is left as a zombie.
    child.reap_for(std::time::Duration::from_millis(200));
    let verdict = crate::job::finish(&swept?, &settings, None)?;
    // The command's own failure comes first; a status that does not fit in an exit code
    // (never, in practice) still reads as a failure.
    Ok(match exit.as_status() {
        0 => verdict,
        status => Exit::Command(u8::try_from(status).unwrap_or(1)),
    })
}
