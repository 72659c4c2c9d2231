//! GitHub Actions workflow commands: the lines a runner reads from a step's stdout
//! (`::add-mask::`, `::error`, `::notice`, `::group::`) and the `$GITHUB_OUTPUT` file.
//! Pure text; [`super::emit`] writes it.
//!
//! Escaping is the runner's: in data, `%` → `%25`, `\r` → `%0D`, `\n` → `%0A`; in property
//! values also `:` → `%3A` and `,` → `%2C`. Command lines are shown inside
//! `::stop-commands::`, so even a line that escaped every other defence could not be read
//! as a command.

use crate::report::json::SignatureClass;
use std::fmt::Write;

use crate::redact::Secrets;

use super::json::{Report, Signature};
use super::signature::describe_fates;
use super::terminal::{describe_evidence, headline, plural, shell_quote, signature_facts};
use super::tree::{sanitize, truncate, Style};

/// GitHub shows at most 10 error and 10 warning annotations per step; more are dropped
/// silently. We rank and send at most this many of each, and say where the rest are.
pub const MAX_ANNOTATIONS: usize = 10;

/// Longest command line in an annotation; the summary and the JSON report have it whole.
const MAX_COMMAND: usize = 300;

/// Escapes a workflow command's data (the part after `::`).
pub fn escape_data(s: &str) -> String {
    s.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// Escapes a workflow command's property value (`title=…`, `file=…`).
pub fn escape_property(s: &str) -> String {
    escape_data(s).replace(':', "%3A").replace(',', "%2C")
}

/// `::add-mask::` for every redacted value long enough to mask, so the runner hides it
/// wherever else it turns up in the log (a test's own output, a later step).
pub fn add_masks(secrets: &Secrets) -> String {
    let mut out = String::new();
    for v in secrets.to_mask() {
        let _ = writeln!(out, "::add-mask::{}", escape_data(v));
    }
    out
}

/// The file of the tests that started a signature's processes, when they all share one
/// (`tests/test_prefect.py` from `tests/test_prefect.py::test_x (call)`): the annotation is
/// then shown on that file.
fn test_file(s: &Signature) -> Option<&str> {
    let mut files = s
        .tests
        .iter()
        .map(|t| t.value.split("::").next().unwrap_or(""));
    let first = files.next()?;
    let plausible = !first.is_empty() && !first.contains(char::is_whitespace);
    (plausible && files.all(|f| f == first)).then_some(first)
}

/// The message of a signature's annotation: the masked command, then one line each for
/// where it came from, how it ended, and how to accept it.
pub fn annotation_message(r: &Report, s: &Signature) -> String {
    let mut lines = vec![format!(
        "{} × {}",
        s.count,
        truncate(sanitize(&s.command), MAX_COMMAND)
    )];
    let facts = signature_facts(r, s);
    if !facts.is_empty() {
        lines.push(sanitize(&facts.join(" · ")));
    }
    if !s.evidence.is_empty() {
        lines.push(format!("evidence: {}", describe_evidence(&s.evidence)));
    }
    lines.push(format!("ended: {}", describe_fates(&s.fates)));
    let action = r.ran_as == crate::report::json::RanAs::Action;
    match s.class {
        SignatureClass::Job if action => lines.push(format!(
            "to accept it, add a line to the input `allow`: {}",
            sanitize(&s.allow_pattern)
        )),
        SignatureClass::Job => lines.push(format!(
            "to accept it: --allow {}",
            shell_quote(&sanitize(&s.allow_pattern))
        )),
        SignatureClass::Unattributed if action => lines.push(
            "no evidence the job started it, so it was left alone: the input \
             `kill-unattributed: true` kills such processes, the input `ignore` drops them \
             from the report"
                .into(),
        ),
        SignatureClass::Unattributed => lines.push(
            "no evidence the job started it, so it was left alone: --kill-unattributed kills \
             such processes, --ignore 'PATTERN' drops them from the report"
                .into(),
        ),
        SignatureClass::Allowed => {}
    }
    lines.join("\n")
}

/// One annotation line.
fn annotation(level: &str, title: &str, file: Option<&str>, message: &str) -> String {
    let mut props = Vec::new();
    if let Some(f) = file {
        props.push(format!("file={}", escape_property(f)));
    }
    props.push(format!("title={}", escape_property(title)));
    format!("::{level} {}::{}\n", props.join(","), escape_data(message))
}

/// The annotations: failing leaks as errors (warnings when the policy passes the run),
/// unattributed processes as warnings, each ranked by count and capped at
/// [`MAX_ANNOTATIONS`]; then one notice for what did not fit. Allowed leaks get none: the
/// user accepted them, and the summary lists them.
pub fn annotations(r: &Report, report_path: Option<&str>) -> String {
    let mut out = String::new();
    let job_level = if r.failed { "error" } else { "warning" };
    let kinds: [(SignatureClass, &str, &str); 2] = [
        (SignatureClass::Job, job_level, "leaked"),
        (SignatureClass::Unattributed, "warning", "unattributed"),
    ];
    let mut left_signatures = 0;
    let mut left_processes = 0;
    let mut warnings = 0;
    for (class, level, adjective) in kinds {
        let sigs: Vec<&Signature> = r.signatures.iter().filter(|s| s.class == class).collect();
        // Warnings of both kinds share one per-step cap.
        let room = if level == "warning" {
            MAX_ANNOTATIONS - warnings
        } else {
            MAX_ANNOTATIONS
        };
        for s in sigs.iter().take(room) {
            // With a known-leaks gate, whether the leak is tolerated or new.
            let gate = match s.gate {
                Some(g) if g.new == 0 => " (known)",
                Some(_) => " (new)",
                None => "",
            };
            let title = format!(
                "ci-janitor: {}{gate}",
                plural(
                    s.count,
                    &format!("{adjective} process"),
                    &format!("{adjective} processes")
                )
            );
            out.push_str(&annotation(
                level,
                &title,
                test_file(s),
                &annotation_message(r, s),
            ));
        }
        let shown = sigs.len().min(room);
        if level == "warning" {
            warnings += shown;
        }
        left_signatures += sigs.len() - shown;
        left_processes += sigs.iter().skip(shown).map(|s| s.count).sum::<usize>();
    }
    if left_signatures > 0 {
        let mut message = format!(
            "{} ({}) {} not annotated: GitHub shows at most {MAX_ANNOTATIONS} errors and \
             {MAX_ANNOTATIONS} warnings per step. All of them are in the job summary",
            plural(left_signatures, "more command", "more commands"),
            plural(left_processes, "process", "processes"),
            if left_signatures == 1 { "is" } else { "are" },
        );
        match report_path {
            Some(p) => {
                let _ = write!(message, " and in the JSON report at {p}.");
            }
            None => message.push('.'),
        }
        out.push_str(&annotation(
            "notice",
            "ci-janitor: more leaks",
            None,
            &message,
        ));
    }
    out
}

/// The full text report, folded into a log group: one headline line outside it, the detail
/// inside. `stop_token` (random, from the caller) turns command processing off around the
/// detail, so no command line in it can act as a workflow command.
///
/// `extra` (the guard's section, what could not be written) goes inside it too: it holds
/// command lines.
pub fn details_group(r: &Report, stop_token: &str, extra: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "ci-janitor: {}", headline(r));
    let _ = writeln!(out, "::group::ci-janitor: details");
    let _ = writeln!(out, "::stop-commands::{stop_token}");
    out.push_str(&super::terminal::render(r, Style { color: false }));
    // The token must end a line of its own even if `extra` does not end in one.
    out.push_str(extra);
    if !out.ends_with('\n') {
        out.push('\n');
    }
    let _ = writeln!(out, "::{stop_token}::");
    let _ = writeln!(out, "::endgroup::");
    out
}

/// The step outputs, in the `$GITHUB_OUTPUT` format: `name=value` lines, or
/// `name<<DELIMITER` … `DELIMITER` for a value with a line break. `delimiter` is random
/// (from the caller) and lengthened until no value contains it.
pub fn outputs(r: &Report, report_path: Option<&str>, delimiter: &str) -> String {
    let values = [
        ("leaked-count", r.leaked.to_string()),
        ("killed-count", r.killed.to_string()),
        ("report-path", report_path.unwrap_or("").to_owned()),
        ("clean", (r.leaked == 0).to_string()),
    ];
    let mut out = String::new();
    for (name, value) in values {
        if value.contains('\n') || value.contains('\r') {
            let mut delim = delimiter.to_owned();
            while value.contains(&delim) {
                delim.push('_');
            }
            let _ = write!(out, "{name}<<{delim}\n{value}\n{delim}\n");
        } else {
            let _ = writeln!(out, "{name}={value}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;

    #[test]
    fn escaping_follows_the_runner() {
        assert_eq!(escape_data("100% a\r\nb::c,d"), "100%25 a%0D%0Ab::c,d");
        assert_eq!(escape_property("a:b,c%\n"), "a%3Ab%2Cc%25%0A");
    }

    #[test]
    fn inside_the_action_advice_names_inputs_not_flags() {
        let mut b = fixtures::prefect();
        b.report.ran_as = crate::report::json::RanAs::Action;
        let text = annotations(&b.report, None);
        assert!(text.contains("add a line to the input `allow`"), "{text}");
        assert!(!text.contains("--allow"), "{text}");
        let terminal =
            crate::report::terminal::render(&b.report, crate::report::tree::Style { color: false });
        assert!(
            terminal.contains("input `fail-on-leak: false`"),
            "{terminal}"
        );
        assert!(!terminal.contains("--allow"), "{terminal}");
    }

    #[test]
    fn prefect_annotations() {
        let b = fixtures::prefect();
        let text = format!(
            "{}{}",
            add_masks(&b.secrets),
            annotations(
                &b.report,
                Some("/home/runner/work/_temp/ci-janitor/report.json")
            )
        );
        insta::assert_snapshot!(text);
    }

    #[test]
    fn mcp_annotations_and_outputs() {
        let b = fixtures::mcp();
        let text = format!(
            "{}\n--- outputs\n{}",
            annotations(&b.report, None),
            outputs(&b.report, Some("/tmp/r.json"), "ghadelimiter_x")
        );
        insta::assert_snapshot!(text);
    }

    #[test]
    fn clean_run_has_no_annotations() {
        let b = fixtures::clean();
        assert_eq!(annotations(&b.report, None), "");
        assert_eq!(add_masks(&b.secrets), "");
        insta::assert_snapshot!(outputs(&b.report, None, "d"), @r"
        leaked-count=0
        killed-count=0
        report-path=
        clean=true
        ");
    }

    #[test]
    fn hostile_argv_cannot_inject_commands() {
        let b = fixtures::hostile();
        let text = format!(
            "{}{}{}",
            add_masks(&b.secrets),
            annotations(&b.report, None),
            details_group(&b.report, "stoptoken123", "")
        );
        insta::assert_snapshot!(text);
        // Every line is a command we wrote, or lies between stop-commands and its token.
        let mut stopped = false;
        for line in text.lines() {
            if line == "::stop-commands::stoptoken123" {
                stopped = true;
            } else if line == "::stoptoken123::" {
                stopped = false;
            } else if !stopped && line.starts_with("::") {
                let command = line[2..].split([' ', ':']).next().unwrap_or("");
                assert!(
                    ["add-mask", "error", "warning", "notice", "group", "endgroup"]
                        .contains(&command),
                    "{line}"
                );
            }
        }
        assert!(!text.contains('\r'));
        // Redacted values appear only in their own add-mask lines.
        for line in text.lines().filter(|l| !l.starts_with("::add-mask::")) {
            for secret in ["hunter2", "ghp_aBc", "pa55w0rd", "t0k3n", "abc.def.ghi"] {
                assert!(!line.contains(secret), "{secret} in {line}");
            }
        }
    }

    #[test]
    fn at_most_ten_errors_then_one_notice() {
        let b = fixtures::many_signatures(25);
        let text = annotations(&b.report, Some("/r.json"));
        assert_eq!(
            text.lines().filter(|l| l.starts_with("::error ")).count(),
            10
        );
        let notices: Vec<&str> = text
            .lines()
            .filter(|l| l.starts_with("::notice "))
            .collect();
        assert_eq!(notices.len(), 1);
        assert!(
            notices[0].contains("15 more commands (15 processes) are not annotated"),
            "{}",
            notices[0]
        );
        assert!(notices[0].contains("/r.json"), "{}", notices[0]);
    }

    #[test]
    fn multi_line_output_values_use_a_delimiter_they_do_not_contain() {
        let b = fixtures::clean();
        let out = outputs(&b.report, Some("/tmp/a\nEOF\nb"), "EOF");
        assert!(
            out.contains("report-path<<EOF_\n/tmp/a\nEOF\nb\nEOF_\n"),
            "{out}"
        );
    }
}
