//! `ci-janitor report FILE --format …`: renders a saved JSON report again, in any of the
//! formats a sweep writes.

use std::io::Write;

use crate::cli::ReportArgs;
use crate::errors::{AppError, Exit};
use crate::report::{self, json};
use crate::settings::{self, Env};

pub fn run(args: &ReportArgs, env: Env<'_>) -> Result<Exit, AppError> {
    let report = json::load(&args.file)?;
    let text = report::render(
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
