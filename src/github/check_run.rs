//! The `ci-janitor` check run's content (pure): the conclusion, the title, the summary
//! (the base digest first, then the job summary's Markdown, trimmed under GitHub's limit at
//! a line boundary with a note), and one annotation per reported signature, every one of
//! them (the API takes 50 per request; [`batches`]).

use serde::Serialize;

use crate::report::json::{Report, Signature, SignatureClass};
use crate::report::terminal::{headline, plural};

/// GitHub refuses a check run's `output.summary` over this many characters.
pub const SUMMARY_LIMIT: usize = 65_535;
/// Annotations per create or update request.
pub const BATCH: usize = 50;
/// A title's most characters.
const MAX_TITLE: usize = 200;

pub const NAME: &str = "ci-janitor";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Annotation {
    pub path: String,
    pub start_line: u32,
    pub end_line: u32,
    /// `notice`, `warning` or `failure`.
    pub annotation_level: &'static str,
    pub title: String,
    pub message: String,
}

/// `failure` when the run fails, `neutral` when it leaked but the policy passes it,
/// `success` otherwise.
pub fn conclusion(r: &Report) -> &'static str {
    if r.failed {
        "failure"
    } else if r.leaked > 0 {
        "neutral"
    } else {
        "success"
    }
}

fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

pub fn title(r: &Report) -> String {
    let mut t = headline(r);
    if let Some(k) = &r.known_leaks {
        t = format!("{t} ({} new, {} known)", k.new, k.known);
    }
    cut(&t, MAX_TITLE)
}

/// `text` under `limit` characters: cut at the last line break that leaves room for the
/// note, which says so.
pub fn trim_summary(text: &str, limit: usize) -> String {
    if text.chars().count() <= limit {
        return text.to_owned();
    }
    let note = "\n\n> [!NOTE]\n> Shortened to stay under GitHub's check-run summary limit \
                (65,535 characters): the job summary and the JSON report have everything.\n";
    let room = limit.saturating_sub(note.chars().count());
    let byte_end = text.char_indices().nth(room).map_or(text.len(), |(i, _)| i);
    let head = &text[..byte_end];
    let cut_at = head.rfind('\n').map_or(0, |i| i + 1);
    format!("{}{note}", &head[..cut_at])
}

/// One annotation per signature of the classes that are reported (failing leaks, then
/// unattributed, then allowed), all of them, at the place `origin` says.
pub fn annotations(r: &Report, origin: &dyn Fn(&Signature) -> (String, u32)) -> Vec<Annotation> {
    r.signatures
        .iter()
        .map(|s| {
            let (level, adjective) = match s.class {
                SignatureClass::Job if r.failed => ("failure", "leaked"),
                SignatureClass::Job => ("warning", "leaked"),
                SignatureClass::Unattributed => ("warning", "unattributed"),
                SignatureClass::Allowed => ("notice", "allowed"),
            };
            let known = match s.gate {
                Some(g) if g.new == 0 => " (known)",
                Some(_) => " (new)",
                None => "",
            };
            let (path, line) = origin(s);
            Annotation {
                path,
                start_line: line,
                end_line: line,
                annotation_level: level,
                title: cut(
                    &format!(
                        "ci-janitor: {}{known}",
                        plural(
                            s.count,
                            &format!("{adjective} process"),
                            &format!("{adjective} processes")
                        )
                    ),
                    MAX_TITLE,
                ),
                message: cut(&crate::report::github::annotation_message(r, s), 60_000),
            }
        })
        .collect()
}

/// The annotations in requests of at most [`BATCH`]: the first with the create, the
/// rest each with an update (GitHub appends them). Always at least one (maybe empty).
pub fn batches(all: &[Annotation]) -> Vec<&[Annotation]> {
    if all.is_empty() {
        return vec![&[]];
    }
    all.chunks(BATCH).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;

    #[test]
    fn every_signature_is_annotated_in_batches_of_fifty() {
        let r = fixtures::many_signatures(120).report;
        let a = annotations(&r, &|_| ("tests/t.py".into(), 3));
        assert_eq!(a.len(), 120);
        let b = batches(&a);
        assert_eq!(b.iter().map(|x| x.len()).collect::<Vec<_>>(), [50, 50, 20]);
        assert_eq!(batches(&[]).len(), 1);
        assert!(a.iter().all(|x| x.annotation_level == "failure"));
    }

    #[test]
    fn summaries_are_trimmed_at_a_line_with_a_note() {
        let line = "x".repeat(99);
        let text: String = (0..1000).map(|i| format!("{i} {line}\n")).collect();
        let t = trim_summary(&text, SUMMARY_LIMIT);
        assert!(t.chars().count() <= SUMMARY_LIMIT);
        assert!(t.contains("Shortened to stay under"));
        let before = &t[..t.find("\n\n> [!NOTE]").unwrap()];
        assert!(
            before.ends_with(&format!("{line}\n")),
            "cut at a line boundary"
        );
        assert_eq!(trim_summary("short\n", SUMMARY_LIMIT), "short\n");
        // Multi-byte characters count as one.
        let wide: String = "é".repeat(SUMMARY_LIMIT);
        assert_eq!(trim_summary(&wide, SUMMARY_LIMIT), wide);
    }

    #[test]
    fn conclusions() {
        assert_eq!(conclusion(&fixtures::prefect().report), "failure");
        assert_eq!(conclusion(&fixtures::clean().report), "success");
        let mut r = fixtures::prefect().report;
        r.failed = false;
        assert_eq!(conclusion(&r), "neutral");
    }
}
