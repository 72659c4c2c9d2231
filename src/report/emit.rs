//! Writing the reports out: the JSON and JUnit files, the job summary, the step outputs,
//! and stdout (workflow commands under GitHub Actions, the terminal report elsewhere). The
//! only module of `report` that touches files; everything it writes comes from the pure
//! renderers beside it.
//!
//! Under GitHub Actions (`GITHUB_ACTIONS=true`) stdout carries workflow commands in place of
//! the terminal report, which goes inside a collapsed log group at the end: first what the
//! runner must see before anything else (masks, annotations), then the files, then the
//! detail. [`emit_all`] is that sequence; it makes no network call, so a caller with a short
//! cancellation window (the Action's post step) gets the essentials out before its own.

use std::io::Write;
use std::path::{Path, PathBuf};

use crate::redact::Secrets;
use crate::settings::SweepSettings;

use super::json::{Built, Report};
use super::summary::SUMMARY_CAP;
use super::{github, junit, summary, terminal, tree::Style};

/// GitHub refuses a step summary over this size (all writers of the step together).
const GITHUB_SUMMARY_LIMIT: usize = 1024 * 1024;

/// Where the GitHub-facing outputs go.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GithubTargets {
    /// The job summary file (`$GITHUB_STEP_SUMMARY`, or `--summary`), appended to.
    pub summary: Option<PathBuf>,
    /// The step outputs file (`$GITHUB_OUTPUT`), appended to.
    pub output: Option<PathBuf>,
    /// Where the JSON report was written: the `report-path` output, and named in the
    /// notice and summary.
    pub report_path: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    #[error("write the report to stdout: {0}")]
    Stdout(#[source] std::io::Error),
    #[error("write the {what} {}: {source}", path.display())]
    File {
        what: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("serialise the JSON report: {0}")]
    Json(#[from] serde_json::Error),
}

fn file_error<'a>(
    what: &'static str,
    path: &'a Path,
) -> impl FnOnce(std::io::Error) -> EmitError + 'a {
    move |source| EmitError::File {
        what,
        path: path.to_owned(),
        source,
    }
}

/// Appends `text` to `path` (the runner's files are shared by every writer of the step).
/// A symbolic link is not followed; anything but a regular file is refused.
fn append(path: &Path, text: &str, what: &'static str) -> Result<(), EmitError> {
    crate::files::append_output(path, text.as_bytes()).map_err(|e| file_error(what, path)(e.into()))
}

/// Writes `bytes` to `path` whole or not at all (a temporary file renamed into place), its
/// directory created if needed; never through a device or a FIFO.
fn write_new(path: &Path, bytes: &[u8], what: &'static str) -> Result<(), EmitError> {
    crate::files::write_output(path, bytes).map_err(|e| file_error(what, path)(e.into()))
}

/// 16 random bytes as hex, for the output delimiter and the stop-commands token: an argv
/// cannot guess them. From the kernel; if that fails, from the hasher keys std seeds from
/// the kernel, mixed with the time and our pid.
fn random_token() -> String {
    let mut buf = [0u8; 16];
    let from_kernel = std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut buf))
        .is_ok();
    if !from_kernel {
        use std::hash::{BuildHasher, Hasher};
        for chunk in buf.chunks_mut(8) {
            let mut h = std::collections::hash_map::RandomState::new().build_hasher();
            h.write_u128(
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos()),
            );
            h.write_u32(std::process::id());
            chunk.copy_from_slice(&h.finish().to_le_bytes()[..chunk.len()]);
        }
    }
    buf.iter().map(|b| format!("{b:02x}")).collect()
}

/// How much of the summary file is left for us: GitHub's limit minus what the step already
/// wrote, minus a margin, and never more than [`SUMMARY_CAP`].
fn summary_budget(path: &Path) -> usize {
    let used = std::fs::metadata(path).map_or(0, |m| m.len() as usize);
    SUMMARY_CAP.min(GITHUB_SUMMARY_LIMIT.saturating_sub(used + 64 * 1024))
}

fn display(path: &Option<PathBuf>) -> Option<String> {
    path.as_ref().map(|p| p.display().to_string())
}

/// What could not be written, in order. A report that could not be written never changes
/// the verdict: each is a warning, named on stderr, in an annotation under Actions, and in
/// the text report when it was written first.
pub type Problems = Vec<EmitError>;

fn write_out(stdout: &mut dyn Write, text: &str) -> Result<(), EmitError> {
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .map_err(EmitError::Stdout)
}

/// The lines that name what could not be written, for the end of the text report.
fn not_written(problems: &[String]) -> String {
    let mut s = String::new();
    for p in problems {
        s.push_str(&format!("warning: failed to {p}\n"));
    }
    s
}

/// One warning annotation per problem.
fn problem_annotations(problems: &[String]) -> String {
    let mut s = String::new();
    for p in problems {
        s.push_str(&format!(
            "::warning title={}::{}\n",
            github::escape_property("ci-janitor: a report was not written"),
            github::escape_data(&format!("failed to {p}; the verdict stands"))
        ));
    }
    s
}

/// Everything GitHub reads after a sweep, in this order: `::add-mask::` for each redacted
/// value, the annotations (at most 10 errors and 10 warnings, then one notice), the job
/// summary, the step outputs (`leaked-count`, `killed-count`, `report-path`, `clean`), and
/// last the whole text report and `extra` (the guard's section) in a collapsed group with
/// workflow commands stopped. No network. Every part is attempted even if an earlier one
/// fails; every failure is returned, after one warning annotation each for `earlier` and
/// the files that failed here.
pub fn emit_all(
    report: &Report,
    secrets: &Secrets,
    targets: &GithubTargets,
    stdout: &mut dyn Write,
    extra: &str,
    mut earlier: Problems,
) -> Problems {
    let path = display(&targets.report_path);
    let mut stdout_failed = false;
    let head = format!(
        "{}{}",
        github::add_masks(secrets),
        github::annotations(report, path.as_deref())
    );
    if let Err(e) = write_out(stdout, &head) {
        stdout_failed = true;
        earlier.push(e);
    }
    if let Some(file) = &targets.summary {
        let text = summary::render(report, path.as_deref(), summary_budget(file));
        if let Err(e) = append(file, &text, "job summary") {
            earlier.push(e);
        }
    }
    if let Some(file) = &targets.output {
        let text = github::outputs(
            report,
            path.as_deref(),
            &format!("ghadelimiter_{}", random_token()),
        );
        if let Err(e) = append(file, &text, "step outputs") {
            earlier.push(e);
        }
    }
    if !stdout_failed {
        let files: Vec<String> = earlier.iter().map(ToString::to_string).collect();
        let mut text = problem_annotations(&files);
        let detail_extra = format!("{extra}{}", not_written(&files));
        text.push_str(&github::details_group(
            report,
            &random_token(),
            &detail_extra,
        ));
        if let Err(e) = write_out(stdout, &text) {
            earlier.push(e);
        }
    }
    earlier
}

/// Writes every report the settings ask for: the JSON report and JUnit file first (so the
/// paths named later exist), then either [`emit_all`] (under GitHub Actions) or the
/// terminal report and `extra` (the guard's section) on stdout and, if asked, a job summary
/// file. Returns what could not be written (see [`Problems`]).
pub fn write_reports(
    built: &Built,
    settings: &SweepSettings,
    stdout: &mut dyn Write,
    extra: &str,
) -> Problems {
    let report = &built.report;
    let mut problems = Problems::new();
    let mut report_json = None;
    if let Some(path) = &settings.report_json {
        let written = serde_json::to_vec_pretty(report)
            .map_err(EmitError::from)
            .and_then(|mut bytes| {
                bytes.push(b'\n');
                write_new(path, &bytes, "JSON report")
            });
        // Name the report in the outputs only if it is there.
        match written {
            Ok(()) => report_json = Some(path.clone()),
            Err(e) => problems.push(e),
        }
    }
    if let Some(path) = &settings.junit {
        if let Err(e) = write_new(path, junit::render(report).as_bytes(), "JUnit report") {
            problems.push(e);
        }
    }
    if settings.github_actions {
        let targets = GithubTargets {
            summary: settings.summary.clone(),
            output: settings.github_output.clone(),
            report_path: report_json,
        };
        return emit_all(report, &built.secrets, &targets, stdout, extra, problems);
    }
    if let Some(file) = &settings.summary {
        let path = display(&report_json);
        if let Err(e) = append(
            file,
            &summary::render(report, path.as_deref(), summary_budget(file)),
            "job summary",
        ) {
            problems.push(e);
        }
    }
    let mut text = terminal::render(
        report,
        Style {
            color: settings.color,
        },
    );
    text.push_str(extra);
    let files: Vec<String> = problems.iter().map(ToString::to_string).collect();
    text.push_str(&not_written(&files));
    if let Err(e) = write_out(stdout, &text) {
        problems.push(e);
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;

    #[test]
    fn emit_all_writes_in_order_and_appends() {
        let dir = tempfile::tempdir().expect("tempdir");
        let targets = GithubTargets {
            summary: Some(dir.path().join("summary.md")),
            output: Some(dir.path().join("output")),
            report_path: Some(dir.path().join("report.json")),
        };
        std::fs::write(dir.path().join("output"), "earlier=1\n").expect("seed");
        let b = fixtures::hostile();
        let mut out = Vec::new();
        let problems = emit_all(&b.report, &b.secrets, &targets, &mut out, "", Vec::new());
        assert!(problems.is_empty(), "{problems:?}");
        let out = String::from_utf8(out).expect("utf-8");
        let masks = out.find("::add-mask::").expect("masks");
        let error = out.find("::error ").expect("annotations");
        let group = out.find("::group::").expect("detail");
        assert!(masks < error && error < group, "{out}");
        let outputs = std::fs::read_to_string(dir.path().join("output")).expect("outputs");
        assert!(
            outputs.starts_with("earlier=1\nleaked-count=2\nkilled-count=1\n"),
            "{outputs}"
        );
        assert!(outputs.contains("clean=false"), "{outputs}");
        let summary = std::fs::read_to_string(dir.path().join("summary.md")).expect("summary");
        assert!(
            summary.contains("## ❌ ci-janitor: 2 leaked processes"),
            "{summary}"
        );
        // The stop token is random and closes what it opened.
        let token = out
            .lines()
            .find_map(|l| l.strip_prefix("::stop-commands::"))
            .expect("stop-commands");
        assert_eq!(token.len(), 32);
        assert!(out.contains(&format!("\n::{token}::\n")));
    }

    #[test]
    fn a_failing_file_does_not_stop_the_rest() {
        let dir = tempfile::tempdir().expect("tempdir");
        let targets = GithubTargets {
            summary: Some(dir.path().join("missing-dir").join("summary.md")),
            output: Some(dir.path().join("output")),
            report_path: None,
        };
        let b = fixtures::prefect();
        let mut out = Vec::new();
        let problems = emit_all(&b.report, &b.secrets, &targets, &mut out, "", Vec::new());
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].to_string().contains("job summary"),
            "{problems:?}"
        );
        let text = String::from_utf8_lossy(&out);
        assert!(
            text.contains("::warning title=ci-janitor%3A a report was not written::failed to write the job summary"),
            "{text}"
        );
        assert!(std::fs::read_to_string(dir.path().join("output"))
            .expect("outputs written anyway")
            .contains("leaked-count=82"));
        assert!(String::from_utf8_lossy(&out).contains("::endgroup::"));
    }

    #[test]
    fn the_guards_section_is_inside_the_stopped_group() {
        // Regression (issue 11): the guard's section (its warnings quote command lines) was
        // printed after the group, where the runner reads workflow commands.
        let b = fixtures::clean();
        let mut out = Vec::new();
        let extra = "Guard:\n  warning: a step left `x\n::error::injected`\n::add-mask::injected";
        let problems = emit_all(
            &b.report,
            &b.secrets,
            &GithubTargets::default(),
            &mut out,
            extra,
            Vec::new(),
        );
        assert!(problems.is_empty(), "{problems:?}");
        let out = String::from_utf8(out).expect("utf-8");
        let token = out
            .lines()
            .find_map(|l| l.strip_prefix("::stop-commands::"))
            .expect("stop-commands");
        let inside = &out[out.find("::stop-commands::").expect("start")
            ..out.find(&format!("\n::{token}::\n")).expect("end")];
        assert!(inside.contains("::error::injected"), "{out}");
        assert!(inside.contains("\n::add-mask::injected"), "{out}");
        assert_eq!(out.matches("injected").count(), 2, "{out}");
    }

    #[test]
    fn tokens_are_random() {
        let (a, b) = (random_token(), random_token());
        assert_eq!(a.len(), 32);
        assert_ne!(a, b);
    }
}
