//! `ci-janitor report FILE --format …`: renders a saved JSON report again, in any of the
//! formats a sweep writes.

use std::io::Write;

use crate::app::{AppError, Exit};
use crate::cli::{ReportArgs, ReportFormat};
use crate::settings::{self, Env};

use super::json::{self, LoadError};
use super::summary::SUMMARY_CAP;
use super::{github, junit, summary, terminal, tree::Style};

impl From<LoadError> for AppError {
    fn from(e: LoadError) -> Self {
        match e {
            // A missing, unreadable or foreign file is the user's input.
            LoadError::Read { .. } | LoadError::Parse { .. } | LoadError::Version { .. } => {
                AppError::Input(e.to_string())
            }
        }
    }
}

/// Renders `r` in `format`. A saved report holds no secrets (they were redacted before it
/// was written), so annotations come without `::add-mask::` lines.
pub fn render(r: &json::Report, format: ReportFormat, color: bool, path: &str) -> String {
    match format {
        ReportFormat::Text => terminal::render(r, Style { color }),
        ReportFormat::Markdown => summary::render(r, Some(path), SUMMARY_CAP),
        ReportFormat::Annotations => github::annotations(r, Some(path)),
        ReportFormat::Junit => junit::render(r),
    }
}

pub fn run(args: &ReportArgs, env: Env<'_>) -> Result<Exit, AppError> {
    let report = json::load(&args.file)?;
    let text = render(
        &report,
        args.format,
        settings::use_color(args.color, env),
        &args.file.display().to_string(),
    );
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(Exit::Clean)
}
