//! `ci-janitor guard start|stop|status|run`: the guard's command line. The guard itself is
//! in [`crate::guard`].

use std::io::{self, Write};
use std::time::Instant;

use crate::cli::{GuardAction, GuardArgs};
use crate::errors::{AppError, Exit};
use crate::guard::{
    daemon, start, status, stop, GuardError, GuardPaths, JobFacts, StartOptions, Started, Stopped,
    STOP_TIMEOUT,
};
use crate::job::{Caller, Job};
use crate::settings::Env;

/// `ci-janitor guard start|stop|status|run`.
pub fn run(args: GuardArgs, env: Env<'_>) -> Result<Exit, AppError> {
    match args.action {
        GuardAction::Start(a) => {
            let proc_root = std::path::Path::new("/proc");
            let job = Job::discover(proc_root, env, Caller::Shell);
            let (root, watch) = crate::job::guard_roots(&job, proc_root, a.watch)?;
            let opts = StartOptions {
                state: crate::settings::state_path(&a.state, env),
                watch,
                root,
                session: job.session,
                cgroup: job.cgroup.clone(),
                warn_over: a.warn_over,
                force_poll: a.poll,
                rcvbuf: a.rcvbuf,
                markers: crate::job::markers_from_env(env),
                sweep: a.sweep,
            };
            let paths = GuardPaths::for_state(&opts.state);
            match start(&opts, env)? {
                Started::New(pf) => {
                    eprintln!(
                        "ci-janitor: guard started (pid {}), {}; journal {}",
                        pf.pid,
                        pf.mode.describe(),
                        paths.journal.display()
                    );
                    eprintln!(
                        "ci-janitor: the job is {}; {}",
                        match pf.root {
                            Some(r) => format!("what is born below pid {}", r.pid),
                            None => "what carries its marker".into(),
                        },
                        match pf.watch {
                            Some(w) =>
                                format!("if pid {} exits before a sweep, the guard sweeps", w.pid),
                            None => "no dead man's switch (no per-job root): run the sweep \
                                     as the job's last step"
                                .into(),
                        }
                    );
                    for d in &pf.degraded {
                        eprintln!("ci-janitor: guard degraded: {d}");
                    }
                }
                Started::Already(pf) => eprintln!(
                    "ci-janitor: guard already running (pid {}), {}",
                    pf.pid,
                    pf.mode.describe()
                ),
            }
            Ok(Exit::Clean)
        }
        GuardAction::Stop(a) => {
            let state = crate::settings::state_path(&a.state, env);
            match stop(&state, Instant::now() + 2 * STOP_TIMEOUT)? {
                Stopped::NotRunning => eprintln!("ci-janitor: no guard is running"),
                Stopped::Stale(pf) => eprintln!(
                    "ci-janitor: the guard (pid {}) was no longer running; removed its pid file",
                    pf.pid
                ),
                Stopped::Signalled { guard, killed } => eprintln!(
                    "ci-janitor: guard (pid {}) stopped{}",
                    guard.pid,
                    if killed { " with SIGKILL" } else { "" }
                ),
                Stopped::Distrusted { pid_file, why } => {
                    return Err(GuardError::PidFile {
                        path: GuardPaths::for_state(&state).pid,
                        detail: format!(
                            "it names pid {}, which is not this state's guard ({why}); \
                             nothing was signalled",
                            pid_file.pid
                        ),
                    }
                    .into())
                }
                Stopped::LeftRunning(_) => {}
            }
            Ok(Exit::Clean)
        }
        GuardAction::Status(a) => {
            let state = crate::settings::state_path(&a.state, env);
            let st = status(&state)?;
            let mut out = std::io::stdout().lock();
            if a.json {
                serde_json::to_writer_pretty(&mut out, &st).map_err(io::Error::from)?;
                writeln!(out)?;
            } else {
                write!(out, "{}", st.render())?;
            }
            Ok(Exit::Clean)
        }
        GuardAction::Run(a) => {
            let watch = a
                .watch
                .as_deref()
                .map(daemon::parse_identity)
                .transpose()
                .map_err(AppError::Input)?;
            let job: JobFacts = match &a.context {
                Some(text) => serde_json::from_str(text)
                    .map_err(|e| AppError::Input(format!("read --context: {e}")))?,
                None => JobFacts::default(),
            };
            let root = a
                .root
                .as_deref()
                .map(daemon::parse_identity)
                .transpose()
                .map_err(AppError::Input)?;
            daemon::run(
                daemon::RunOptions {
                    state: a.state,
                    watch,
                    root,
                    warn_over: a.warn_over,
                    force_poll: a.poll,
                    rcvbuf: a.rcvbuf,
                    job,
                },
                env,
                &|opts, me, paths| dead_man_sweep(opts, me, paths, env),
            )?;
            Ok(Exit::Clean)
        }
    }
}

/// The dead man's switch: the job's root died and no sweep stopped us. Sweep through the
/// one sweep routine, with the options `guard start` was given (the baseline, the
/// journal's lineage, the job's markers), and leave the report beside the state file unless
/// the options name another place.
fn dead_man_sweep(
    opts: &daemon::RunOptions,
    me: crate::model::ProcessId,
    paths: &GuardPaths,
    env: Env<'_>,
) -> Result<String, GuardError> {
    let read = crate::platform::ReadOptions::default();
    let boot_id = crate::platform::boot_id(&read.proc_root)?;
    let baseline = crate::state::load(&paths.state, &boot_id)?;
    let sweep_opts = opts.job.sweep.clone().unwrap_or_default();
    let mut settings =
        crate::settings::sweep_settings(&sweep_opts, env).map_err(GuardError::Options)?;
    settings.progress = false;
    settings.color = false;
    // The job's root died without a sweep (cancelled, killed): why it was stuck first.
    settings.capture = Some(crate::settings::Capture {
        reason: "dead man's switch (the job's root exited without a sweep)".into(),
        journal: Some(paths.journal.clone()),
        py_spy: crate::diagnose::py_spy(env),
    });
    let mut at = crate::guard::AtSweep::default();
    // Our own records only, read within the sweep's deadline.
    let vouched = crate::guard::lineage::Vouched {
        guard: me,
        boot_id: boot_id.clone(),
        root: opts.root.or(opts.watch),
    };
    let deadline = std::time::Instant::now() + settings.deadline / 2;
    match crate::guard::read_sweep_lineage(&paths.journal, Some(&vouched), deadline) {
        Ok(l) => at.lineage = l,
        Err(e) => at.problems.push(e),
    }
    let job = crate::job::Job {
        me: Some(me),
        markers: opts.job.markers.identity(),
        session: opts.job.session,
        cgroup: opts.job.cgroup.clone(),
        own_exe: crate::job::Job::discover_own_exe(&read.proc_root),
        also_protected: baseline.taken_by.into_iter().collect(),
        ..crate::job::Job::default()
    };
    let swept = crate::job::sweep(
        &job,
        &baseline,
        &settings,
        crate::job::GuardInput::Own(Box::new(at)),
    )
    .map_err(|e| GuardError::Setup(format!("sweep: {e}")))?;
    let leaked = swept.outcome.failing_leaks().count();
    let report = settings
        .report_json
        .clone()
        .unwrap_or_else(|| paths.report_json.clone());
    // The guard's stdout is /dev/null: the reports go to files, the text to its log.
    let (_, text) = crate::job::finish_with(swept, &settings, Some(&paths.report_json), |r| {
        crate::report::terminal::render(r, crate::report::tree::Style { color: false })
    })
    .map_err(|e| GuardError::Setup(format!("write the dead man's report: {e}")))?;
    paths
        .dir()?
        .replace(
            &GuardPaths::name(&paths.report_txt),
            text.as_bytes(),
            crate::files::PRIVATE,
            crate::files::Sync::Durable,
        )
        .map_err(|e| crate::guard::file_error("write the dead man's report", e))?;
    tracing::warn!("{text}");
    Ok(format!(
        "swept {leaked} leaked job process{} (report: {})",
        if leaked == 1 { "" } else { "es" },
        report.display()
    ))
}
