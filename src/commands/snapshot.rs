//! `ci-janitor snapshot`: the baseline, with the job's markers; `--export` gives the job a
//! marker of its own and prints the shell lines that carry it.

use std::io::Write;

use crate::cli::SnapshotArgs;
use crate::errors::{AppError, Exit};
use crate::job;
use crate::platform;
use crate::settings::{self, Env};
use crate::state;

pub fn run(args: SnapshotArgs, env: Env<'_>) -> Result<Exit, AppError> {
    let path = settings::state_path(&args.state, env);
    let mut markers = job::markers_from_env(env);
    let chain = args.export.then(|| {
        let chain = job::chain_marker(env, &job::new_marker("sh"));
        markers.ci_janitor_run = Some(chain.clone());
        chain
    });
    let snap = job::baseline(
        &markers,
        if args.full {
            platform::Detail::All
        } else {
            platform::Detail::None
        },
    )?;
    state::save(&path, &snap)?;
    let mut out = std::io::stdout().lock();
    if args.print {
        serde_json::to_writer_pretty(&mut out, &snap).map_err(std::io::Error::from)?;
        writeln!(out)?;
    }
    if let Some(chain) = &chain {
        // For `eval "$(ci-janitor snapshot --export)"`: everything the shell starts from
        // now on carries the marker, and later commands find the state.
        writeln!(
            out,
            "export CI_JANITOR_RUN={}\nexport CI_JANITOR_STATE={}",
            super::hooks::sh_quote(chain),
            super::hooks::sh_quote(
                &std::path::absolute(&path)
                    .unwrap_or_else(|_| path.clone())
                    .to_string_lossy()
            )
        )?;
    }
    let named: Vec<String> = markers
        .identity_pairs()
        .map(|(var, value)| format!("{var}={value}"))
        .collect();
    eprintln!(
        "ci-janitor: snapshot of {} processes and {} listening sockets in {:.1} ms -> {}; the \
         job is {}",
        snap.processes.len(),
        snap.listeners.len(),
        snap.duration_us as f64 / 1000.0,
        path.display(),
        if named.is_empty() {
            "named by no marker (use --export, `ci-janitor run`, or the guard)".to_owned()
        } else {
            format!("named by {}", named.join(", "))
        }
    );
    Ok(Exit::Clean)
}
