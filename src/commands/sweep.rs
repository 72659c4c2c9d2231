//! `ci-janitor sweep`: the job's baseline, the job around us, the one sweep routine.

use crate::cli::SweepArgs;
use crate::errors::{AppError, Exit};
use crate::job::{self, Caller, GuardInput, Job};
use crate::platform::{self, ReadOptions};
use crate::settings::{self, Env};
use crate::state;

pub fn run(args: SweepArgs, env: Env<'_>) -> Result<Exit, AppError> {
    let settings = settings::sweep_settings(&args.opts, env).map_err(AppError::Input)?;
    crate::gate::check(&settings).map_err(|e| AppError::Input(e.to_string()))?;
    let path = settings::state_path(&args.state, env);
    let proc_root = ReadOptions::default().proc_root;
    let baseline = state::load(&path, &platform::boot_id(&proc_root)?)?;
    let job = Job::discover(&proc_root, env, Caller::Shell).with_baseline(&baseline, &path)?;
    let swept = job::sweep(&job, &baseline, &settings, GuardInput::Beside(&path))?;
    job::finish(swept, &settings, None)
}
