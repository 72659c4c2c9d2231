//! Rendering: for people (terminal, job summary), for the CI system (workflow commands,
//! outputs, JUnit) and for machines (JSON). Renderers are pure functions of the
//! [`json::Report`] and return text; they never look at the OS. [`emit`] is the module that
//! writes files and stdout; [`render`] renders a saved report again in any format;
//! [`progress`] is the stderr line shown while the kill waits.

pub mod diff_json;
pub mod emit;
pub mod github;
pub mod json;
pub mod junit;
pub mod progress;
pub mod signature;
pub mod summary;
pub mod terminal;
pub mod tree;

#[cfg(test)]
pub(crate) mod fixtures;

use crate::cli::ReportFormat;

/// Renders `r` in `format`. A saved report holds no secrets (they were redacted before it
/// was written), so annotations come without `::add-mask::` lines.
pub fn render(r: &json::Report, format: ReportFormat, color: bool, path: &str) -> String {
    match format {
        ReportFormat::Text => terminal::render(r, tree::Style { color }),
        ReportFormat::Markdown => summary::render(r, Some(path), summary::SUMMARY_CAP),
        ReportFormat::Annotations => github::annotations(r, Some(path)),
        ReportFormat::Junit => junit::render(r),
    }
}
