//! `ci-janitor diagnose`: why is the job stuck. The job's processes by the sweep's own
//! attribution (the baseline, the job's markers and roots, the guard's lineage, read
//! without stopping the guard), their facts and the verdicts; kills nothing.

use std::io::Write;

use crate::cli::DiagnoseArgs;
use crate::errors::{AppError, Exit};
use crate::guard::GuardPaths;
use crate::job::{Caller, Job};
use crate::platform::{self, ReadOptions};
use crate::settings::Env;

pub fn run(args: DiagnoseArgs, env: Env<'_>) -> Result<Exit, AppError> {
    let path = crate::settings::state_path(&args.state, env);
    let proc_root = ReadOptions::default().proc_root;
    let boot_id = platform::boot_id(&proc_root)?;
    let baseline = crate::state::load(&path, &boot_id)?;
    let job = Job::discover(&proc_root, env, Caller::Shell).with_baseline(&baseline, &path)?;
    let bound = args.bound.0;
    // The guard's journal as a dry-run sweep takes it: vouched by its pid file, the guard
    // left running.
    let at = crate::guard::for_sweep(&path, true, std::time::Instant::now() + bound / 4);
    let mut ctx = job.context();
    ctx.also_protected.extend(at.protect.iter().copied());
    let journal = GuardPaths::for_state(&path).journal;
    let hang = crate::diagnose::capture(&crate::diagnose::CaptureInput {
        baseline: &baseline,
        ctx: &ctx,
        policy: &crate::classify::Policy::default(),
        lineage: at.lineage.as_ref(),
        journal: journal.exists().then_some(journal),
        reason: "diagnose".into(),
        bound,
        py_spy: crate::diagnose::py_spy(env),
        proc_root,
    });
    let mut out = std::io::stdout().lock();
    if args.json {
        serde_json::to_writer_pretty(&mut out, &hang).map_err(std::io::Error::from)?;
        writeln!(out)?;
    } else {
        write!(out, "{}", hang.render_text())?;
    }
    Ok(Exit::Clean)
}
