//! `ci-janitor diff-reports BASE.json HEAD.json`: new, fixed and unchanged failing-leak
//! signatures between two saved reports (see [`crate::gate::diff`]).

use std::io::Write;

use crate::cli::{DiffFormat, DiffReportsArgs};
use crate::errors::{AppError, Exit};
use crate::gate::diff;
use crate::report::json;

pub fn run(args: &DiffReportsArgs) -> Result<Exit, AppError> {
    let base = json::load(&args.base)?;
    let head = json::load(&args.head)?;
    let changes = diff::reports(&base, &head);
    let text = match args.format {
        DiffFormat::Text => diff::render_text(&changes),
        DiffFormat::Markdown => diff::render_markdown(&changes, 100),
        DiffFormat::Json => {
            let mut t = serde_json::to_string_pretty(&changes)
                .map_err(|e| AppError::Internal(format!("serialise the comparison: {e}")))?;
            t.push('\n');
            t
        }
    };
    let mut out = std::io::stdout().lock();
    out.write_all(text.as_bytes())?;
    out.flush()?;
    Ok(if args.exit_code && !changes.new.is_empty() {
        Exit::Leaked
    } else {
        Exit::Clean
    })
}
