//! `ci-janitor run -- CMD`: snapshot, run the command as a child subreaper, then sweep what
//! it left. Attribution is by descent (orphans come back to us, the subreaper) and by the
//! `CI_JANITOR_RUN` marker in the command's environment; nothing else on the machine is
//! reported or touched.

use std::process::Command;

use crate::cli::RunArgs;
use crate::errors::{AppError, Exit};
use crate::job::{GuardInput, Job, Root, RootKind};
use crate::platform::{self, ReadOptions};
use crate::settings::{self, Env};

fn describe_exit(exit: platform::ChildExit) -> String {
    match exit {
        platform::ChildExit::Code(c) => format!("exited with {c}"),
        platform::ChildExit::Signal(s) => format!("was killed by signal {s}"),
    }
}

fn signal_name(signal: i32) -> String {
    match signal {
        2 => "SIGINT".into(),
        15 => "SIGTERM".into(),
        s => format!("{s}"),
    }
}

pub fn run(args: RunArgs, env: Env<'_>) -> Result<Exit, AppError> {
    let mut settings = settings::sweep_settings(&args.opts, env).map_err(AppError::Input)?;
    crate::gate::check(&settings).map_err(|e| AppError::Input(e.to_string()))?;
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
        .ok_or_else(|| AppError::Input("run a command: none was given after `--`".into()))?;
    // Echoed on stderr and named in errors: redacted like every other command line, and
    // on one escaped line.
    let display = crate::text::sanitize(
        &crate::redact::redact_argv(
            &args.command.iter().map(|a| a.as_encoded_bytes()).collect(),
            &mut crate::redact::Secrets::default(),
        )
        .join_lossy(),
    );
    let mut cmd = Command::new(program);
    cmd.args(rest).env("CI_JANITOR_RUN", &chain);
    // The job is the command: its marker (the chain: its processes stay the outer job's
    // too, and the outer job's are not ours) and its descent from us, its subreaper.
    let job = Job {
        me: Some(me),
        markers: crate::model::Markers {
            ci_janitor_run: Some(chain.clone()),
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
    let mut child = platform::spawn(cmd, &display).map_err(|e| match e {
        platform::ChildError::Spawn { .. } => AppError::Input(e.to_string()),
        other => AppError::Internal(other.to_string()),
    })?;
    // A stop signal, or our own --timeout, is held back until the hang report is taken:
    // once the command is told to stop, the evidence of why it was stuck goes with it.
    child.hold_stop = true;
    let until = args.timeout.map(|t| std::time::Instant::now() + t.0);
    let internal = |e: platform::ChildError| AppError::Internal(e.to_string());
    let mut waited = child.wait_until(settings.grace, until).map_err(internal)?;
    let mut hang = None;
    if let platform::Waited::Cancelled { .. } | platform::Waited::TimedOut = waited {
        let reason = match waited {
            platform::Waited::Cancelled { signal } => format!("signal {}", signal_name(signal)),
            _ => format!(
                "--timeout {}",
                args.timeout.map(|t| t.to_string()).unwrap_or_default()
            ),
        };
        eprintln!("ci-janitor: `{display}`: {reason}; capturing why it is stuck");
        hang = Some(crate::diagnose::capture(&crate::diagnose::CaptureInput {
            baseline: &baseline,
            ctx: &job.context(),
            policy: &settings.policy,
            lineage: None,
            journal: None,
            reason,
            bound: settings.capture_bound.min(settings.deadline / 2),
            py_spy: crate::diagnose::py_spy(env),
            proc_root: read.proc_root.clone(),
        }));
        if matches!(waited, platform::Waited::TimedOut) {
            child.terminate();
        } else {
            child.release();
        }
        waited = child.wait(settings.grace).map_err(internal)?;
    }
    let interrupted = child.cancelled_at.is_some();
    // Like Go's WaitDelay: what the command left holding our stdout or stderr (a pipe
    // something reads) gets a bounded time to let go; then it is named, and swept.
    let pipe_holders = match waited {
        // Not after a cancellation: then the command's tree is to stop now.
        platform::Waited::Exited(_) if !interrupted => wait_for_pipes(
            &mut child,
            &display,
            args.pipe_wait.0,
            &read.proc_root,
            &baseline,
        ),
        _ => Vec::new(),
    };
    match waited {
        platform::Waited::Exited(exit) => eprintln!(
            "ci-janitor: `{display}` {}; sweeping what it left{}",
            describe_exit(exit),
            if interrupted { " (interrupted)" } else { "" }
        ),
        platform::Waited::Cancelled { .. } | platform::Waited::TimedOut => {}
        platform::Waited::Outlived { second_signal } => eprintln!(
            "ci-janitor: `{display}` still runs {}; sweeping its whole tree",
            if second_signal {
                "after a second signal".to_owned()
            } else {
                format!("{:?} after the signal it was passed", settings.grace)
            }
        ),
    }
    // Cancelled: the deadline runs from the first signal, and covers the sweep.
    let deadline = match child.cancelled_at {
        Some(at) => settings.deadline.saturating_sub(at.elapsed()),
        None => settings.deadline,
    };

    let mut bounded = settings.clone();
    bounded.deadline = deadline;
    bounded.grace = settings.grace.min(deadline);
    let mut swept = crate::job::sweep(&job, &baseline, &bounded, GuardInput::None);
    if let Ok(s) = &mut swept {
        s.hang = hang;
        s.pipe_holders = pipe_holders;
    }
    // Killed orphans are our children now: reap them so nothing is left as a zombie. The
    // command itself too, when the sweep had to kill it.
    child.reap_for(std::time::Duration::from_millis(200));
    let exit = match (waited, child.exit()) {
        (platform::Waited::Exited(exit), _) | (_, Some(exit)) => exit,
        // Still not reaped (a dry run, or it is stuck): it did not end by itself.
        (_, None) => platform::ChildExit::Signal(9),
    };
    let verdict = crate::job::finish(swept?, &settings, None)?;
    // The command's own failure comes first; a status that does not fit in an exit code
    // (never, in practice) still reads as a failure.
    Ok(match exit.as_status() {
        0 => verdict,
        status => Exit::Command(u8::try_from(status).unwrap_or(1)),
    })
}

/// Waits at most `bound` for the command's descendants to let go of our stdout and stderr
/// (when they are pipes something reads), reaping orphans meanwhile; returns those that
/// still hold one, described.
fn wait_for_pipes(
    child: &mut platform::child::Supervised,
    display: &str,
    bound: std::time::Duration,
    proc_root: &std::path::Path,
    baseline: &crate::model::Snapshot,
) -> Vec<crate::report::json::PipeHolder> {
    use crate::guard::pipes;
    let stdio = pipes::read_stdio(proc_root);
    if stdio.is_empty() {
        return Vec::new();
    }
    let me = std::process::id() as i32;
    let descendants = || -> Vec<i32> {
        let Ok(snap) = platform::read_snapshot(&ReadOptions {
            proc_root: proc_root.to_owned(),
            sockets: false,
            host_facts: false,
            detail: platform::Detail::None,
            ..Default::default()
        }) else {
            return Vec::new();
        };
        let Some(me_id) = snap.processes.iter().find(|p| p.id.pid == me).map(|p| p.id) else {
            return Vec::new();
        };
        let mut d: Vec<i32> = crate::classify::descendants_of(me_id, &snap.processes)
            .into_iter()
            .filter(|id| id.pid != me)
            .filter(|id| snap.process(*id).is_some_and(|p| !p.is_zombie()))
            .map(|id| id.pid)
            .collect();
        d.sort_unstable();
        d
    };
    let started = std::time::Instant::now();
    let mut held = pipes::holders(proc_root, &descendants(), &stdio);
    while !held.is_empty() && started.elapsed() < bound {
        child.reap_for(std::time::Duration::from_millis(50).min(bound));
        let pids: Vec<i32> = held.iter().map(|h| h.0).collect();
        held = pipes::holders(proc_root, &pids, &stdio);
    }
    let hz = baseline.machine.clock_ticks_per_second.max(1);
    let boot_ms = baseline.machine.boot_time_unix.map(|s| s * 1000);
    let mut secrets = crate::redact::Secrets::default();
    let mut cmd_of =
        |p: &crate::model::Process| crate::redact::redact_argv(&p.argv, &mut secrets).join_lossy();
    let child_pid = child.pid();
    held.into_iter()
        .filter_map(|(pid, stream, inode)| {
            let p = platform::read_one(proc_root, pid)?;
            let parent = (p.ppid != me)
                .then(|| platform::read_one(proc_root, p.ppid))
                .flatten();
            let holder_command = cmd_of(&p);
            let started_by_command = parent.as_ref().map(&mut cmd_of);
            let since_unix_ms = boot_ms.map(|b| b + p.id.start_ticks * 1000 / hz);
            let sentence = format!(
                "`{display}` (pid {child_pid}) exited while pid {pid} `{holder_command}`{}{} \
                 still held its {stream} (pipe:[{inode}]), which is still read; waited {:.1} s \
                 (--pipe-wait) for it to let go, then swept it",
                match (&parent, &started_by_command) {
                    (Some(q), Some(c)) => format!(", started by pid {} `{c}`,", q.id.pid),
                    _ => ", started under it (it inherited the pipe),".into(),
                },
                since_unix_ms
                    .map(|ms| format!(" at {}", pipes::clock_time(ms)))
                    .unwrap_or_default(),
                started.elapsed().as_secs_f64()
            );
            // One line: the holder's command line is the job's to choose (a newline and
            // `::error::` would be a workflow command in a CI log).
            eprintln!("ci-janitor: warning: {}", crate::text::sanitize(&sentence));
            Some(crate::report::json::PipeHolder {
                seen_by: "run".into(),
                step: None,
                pid: child_pid,
                command: display.to_owned(),
                stream: stream.into(),
                holder_pid: pid,
                holder_command,
                started_by_pid: parent.as_ref().map(|q| q.id.pid),
                started_by_command,
                since_unix_ms,
                sentence,
            })
        })
        .collect()
}
