//! `ci-janitor known-leaks write|update FILE REPORT.json`: a known-leaks file from a
//! report, or an existing one refreshed (see [`crate::gate::update`]).

use std::io::Write;

use crate::cli::{KnownLeaksCommand, KnownLeaksFiles};
use crate::errors::{AppError, Exit};
use crate::gate::{file, update};
use crate::report::json;

fn options(f: &KnownLeaksFiles) -> Result<update::Options, AppError> {
    let expires = match &f.expires {
        Some(text) => {
            let date: toml::value::Datetime = text.parse().map_err(|_| {
                AppError::Input(format!(
                    "use --expires {text}: it must be a date such as 2027-03-01"
                ))
            })?;
            if date.date.is_none() || date.time.is_some() {
                return Err(AppError::Input(format!(
                    "use --expires {text}: it must be a date such as 2027-03-01"
                )));
            }
            Some(date)
        }
        None => None,
    };
    Ok(update::Options {
        owner: f.owner.clone(),
        reason: f.reason.clone(),
        expires,
        ..update::Options::default()
    })
}

pub fn run(command: KnownLeaksCommand) -> Result<Exit, AppError> {
    let (files, outcome) = match command {
        KnownLeaksCommand::Write { files, force } => {
            if files.file.exists() && !force {
                return Err(AppError::Input(format!(
                    "write {}: it exists; refresh it with `ci-janitor known-leaks update`, \
                     or pass --force to replace it",
                    files.file.display()
                )));
            }
            let report = json::load(&files.report)?;
            let outcome = update::write(&report, &options(&files)?);
            (files, outcome)
        }
        KnownLeaksCommand::Update {
            files,
            raise,
            add_new,
            keep_unused,
        } => {
            let current = file::load(&files.file).map_err(|e| AppError::Input(e.to_string()))?;
            let report = json::load(&files.report)?;
            let o = update::Options {
                raise,
                add_new,
                keep_unused,
                ..options(&files)?
            };
            let outcome = update::update(&current, &report, &o);
            (files, outcome)
        }
    };
    let text = file::render(&outcome.file).map_err(|e| AppError::Internal(e.to_string()))?;
    crate::files::write_output(&files.file, text.as_bytes()).map_err(|e| {
        AppError::Input(format!(
            "write the known-leaks file {}: {e}",
            files.file.display()
        ))
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "ci-janitor: {} ({} entries)",
        files.file.display(),
        outcome.file.leaks.len()
    )?;
    for c in &outcome.changes {
        writeln!(out, "  {c}")?;
    }
    if outcome.changes.is_empty() {
        writeln!(out, "  unchanged")?;
    }
    Ok(Exit::Clean)
}
