//! What a GitHub runner shows: workflow commands on stdout (annotations, a collapsible
//! group with the full report), the job summary, and the step's outputs. Everything is
//! written before any network call, since a post step gets little time when a job is
//! cancelled.

use std::io::Write;
use std::path::Path;

use crate::action::{append_file_command, escape_data};
use crate::settings::Env;

use super::json::Report;

/// At most this many `::error` annotations per step; the rest are summed up in a notice.
const MAX_ANNOTATIONS: usize = 10;

/// Escapes Markdown (and the HTML GitHub renders in it) in text taken from processes.
fn md(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '|' | '`' | '*' | '_' | '[' | ']' | '\\' | '#' => {
                out.push('\\');
                out.push(c);
            }
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\n' | '\r' => out.push(' '),
            c if c.is_control() => out.push('�'),
            c => out.push(c),
        }
    }
    out
}

fn command_line(p: &super::json::ReportProcess) -> String {
    if p.argv.is_empty() {
        format!("[{}]", p.comm.lossy())
    } else {
        p.argv
            .iter()
            .map(|a| a.lossy().into_owned())
            .collect::<Vec<_>>()
            .join(" ")
    }
}

/// Writes annotations and the grouped terminal report to `out`, the summary to
/// `$GITHUB_STEP_SUMMARY` and the outputs to `$GITHUB_OUTPUT`.
pub fn emit(
    report: &Report,
    terminal_text: &str,
    report_path: Option<&Path>,
    env: Env<'_>,
    out: &mut dyn Write,
) -> Result<(), crate::app::AppError> {
    let leaked: Vec<&super::json::ReportProcess> = report
        .processes
        .iter()
        .filter(|p| matches!(p.class, crate::classify::Class::Job))
        .collect();
    let level = if report.failed { "error" } else { "warning" };
    for p in leaked.iter().take(MAX_ANNOTATIONS) {
        let mut detail = format!(
            "pid {} still running after the job: {}",
            p.pid,
            command_line(p)
        );
        if !p.listening.is_empty() {
            detail.push_str(&format!(" (listening: {})", p.listening.join(", ")));
        }
        if let Some(f) = &p.fate {
            detail.push_str(&format!(" — {}", f.describe()));
        }
        writeln!(
            out,
            "::{level} title=ci-janitor%3A leaked process::{}",
            escape_data(&detail)
        )?;
    }
    if leaked.len() > MAX_ANNOTATIONS {
        writeln!(
            out,
            "::notice title=ci-janitor::{} more leaked processes: see the job summary and the JSON report",
            leaked.len() - MAX_ANNOTATIONS
        )?;
    }
    writeln!(out, "::group::ci-janitor report")?;
    // Inside the group the text is plain log output; a line that starts with `::` would be
    // read as a command, so such lines are indented.
    for line in terminal_text.lines() {
        if line.trim_start().starts_with("::") {
            writeln!(out, "  {line}")?;
        } else {
            writeln!(out, "{line}")?;
        }
    }
    writeln!(out, "::endgroup::")?;

    if let Some(summary) = env("GITHUB_STEP_SUMMARY").filter(|v| !v.is_empty()) {
        let mut md_text = String::new();
        if leaked.is_empty() {
            md_text
                .push_str("### ci-janitor: clean\n\nNothing the job started is still running.\n");
        } else {
            md_text.push_str(&format!(
                "### ci-janitor: {} leaked process{}\n\n| pid | command | listening | what happened |\n|---:|---|---|---|\n",
                leaked.len(),
                if leaked.len() == 1 { "" } else { "es" }
            ));
            for p in leaked.iter().take(500) {
                md_text.push_str(&format!(
                    "| {} | `{}` | {} | {} |\n",
                    p.pid,
                    md(&command_line(p)).replace('`', "'"),
                    md(&p.listening.join(", ")),
                    p.fate.map(|f| md(&f.describe())).unwrap_or_default()
                ));
            }
        }
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&summary)
            .and_then(|mut f| f.write_all(md_text.as_bytes()))
            .map_err(|e| {
                crate::app::AppError::Internal(format!("write the job summary ({summary}): {e}"))
            })?;
    }
    append_file_command(
        env,
        "GITHUB_OUTPUT",
        "leaked-count",
        &report.leaked.to_string(),
    )?;
    append_file_command(
        env,
        "GITHUB_OUTPUT",
        "killed-count",
        &report.killed.to_string(),
    )?;
    append_file_command(
        env,
        "GITHUB_OUTPUT",
        "report-path",
        &report_path
            .map(|p| p.display().to_string())
            .unwrap_or_default(),
    )?;
    append_file_command(
        env,
        "GITHUB_OUTPUT",
        "clean",
        if report.leaked == 0 { "true" } else { "false" },
    )?;
    Ok(())
}
