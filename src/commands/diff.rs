//! `ci-janitor diff`: what appeared since the snapshot and is alive; kills nothing.

use std::io::Write;

use crate::cli::DiffArgs;
use crate::errors::{AppError, Exit};
use crate::platform::{self, ReadOptions};
use crate::report;
use crate::settings::{self, Env};
use crate::state;

pub fn run(args: DiffArgs, env: Env<'_>) -> Result<Exit, AppError> {
    let path = settings::state_path(&args.state, env);
    let opts = ReadOptions::default();
    let boot_id = platform::boot_id(&opts.proc_root)?;
    let baseline = state::load(&path, &boot_id)?;
    let mut now = platform::read_snapshot(&ReadOptions {
        host_facts: false,
        detail: platform::Detail::new_since(&baseline),
        ..opts
    })?;
    crate::redact::redact_snapshot(&mut now);
    let appeared = crate::diff::appeared(&baseline, &now);
    let zombies = crate::diff::appeared_zombies(&baseline, &now);
    let mut out = std::io::stdout().lock();
    if args.json {
        let report = report::diff_json::build(&baseline, &now, &appeared, &zombies);
        serde_json::to_writer_pretty(&mut out, &report).map_err(std::io::Error::from)?;
        writeln!(out)?;
        return Ok(Exit::Clean);
    }
    let age_s = now
        .taken_at_unix_ms
        .saturating_sub(baseline.taken_at_unix_ms) as f64
        / 1000.0;
    if appeared.is_empty() {
        writeln!(
            out,
            "Nothing appeared since the snapshot ({age_s:.1} s ago) that is still alive."
        )?;
    } else {
        let forest = crate::diff::forest(&appeared);
        let ports = crate::diff::listeners_of(&now, &appeared).len();
        writeln!(
            out,
            "{} process{} appeared since the snapshot ({age_s:.1} s ago) and {} alive, \
             holding {ports} listening socket{}:\n",
            appeared.len(),
            if appeared.len() == 1 { "" } else { "es" },
            if appeared.len() == 1 { "is" } else { "are" },
            if ports == 1 { "" } else { "s" },
        )?;
        let style = report::tree::Style {
            color: settings::use_color(args.color, env),
        };
        write!(out, "{}", report::tree::render_forest(&now, &forest, style))?;
    }
    if !zombies.is_empty() {
        writeln!(
            out,
            "\n({} more exited and wait to be reaped by their parent: zombies, not counted.)",
            zombies.len()
        )?;
    }
    Ok(Exit::Clean)
}
