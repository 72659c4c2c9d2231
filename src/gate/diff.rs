//! New, fixed and unchanged failing-leak signatures between two runs (`ci-janitor
//! diff-reports BASE.json HEAD.json`, and the pull-request comment), as text, JSON or
//! Markdown. A signature is new when the base did not have it or had fewer processes of
//! it (the excess is what the head adds), fixed when the head does not have it.

use std::collections::BTreeMap;
use std::fmt::Write;

use serde::{Deserialize, Serialize};

use crate::report::json::{Report, SignatureClass};
use crate::report::summary::md;
use crate::text::{sanitize, truncate};

use super::digest::Digest;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Change {
    pub id: String,
    pub command: String,
    pub base: usize,
    pub head: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Changes {
    pub new: Vec<Change>,
    pub fixed: Vec<Change>,
    pub unchanged: Vec<Change>,
}

impl Changes {
    /// Nothing new and nothing fixed.
    pub fn is_quiet(&self) -> bool {
        self.new.is_empty() && self.fixed.is_empty()
    }
}

/// `(id, command, count)` of a report's failing leaks.
pub fn counts_of_report(r: &Report) -> Vec<(String, String, usize)> {
    r.signatures
        .iter()
        .filter(|s| s.class == SignatureClass::Job)
        .map(|s| (s.id.clone(), s.command.clone(), s.count))
        .collect()
}

/// `(id, command, count)` of a digest.
pub fn counts_of_digest(d: &Digest) -> Vec<(String, String, usize)> {
    d.leaks
        .iter()
        .map(|l| (l.id.clone(), l.command.clone(), l.count))
        .collect()
}

/// Compares two runs' failing leaks by signature id.
pub fn compare(base: &[(String, String, usize)], head: &[(String, String, usize)]) -> Changes {
    let mut all: BTreeMap<&str, Change> = BTreeMap::new();
    for (id, command, count) in base {
        let c = all.entry(id).or_insert_with(|| Change {
            id: id.clone(),
            command: command.clone(),
            base: 0,
            head: 0,
        });
        c.base += count;
    }
    for (id, command, count) in head {
        let c = all.entry(id).or_insert_with(|| Change {
            id: id.clone(),
            command: command.clone(),
            base: 0,
            head: 0,
        });
        // The head's command is whole; a digest's may be cut.
        c.command = command.clone();
        c.head += count;
    }
    let mut out = Changes::default();
    for c in all.into_values() {
        if c.head > c.base {
            out.new.push(c);
        } else if c.head == 0 {
            out.fixed.push(c);
        } else {
            out.unchanged.push(c);
        }
    }
    let by_size = |a: &Change, b: &Change| {
        b.head
            .max(b.base)
            .cmp(&a.head.max(a.base))
            .then_with(|| a.command.cmp(&b.command))
    };
    out.new.sort_by(by_size);
    out.fixed.sort_by(by_size);
    out.unchanged.sort_by(by_size);
    out
}

/// The changes between two saved reports.
pub fn reports(base: &Report, head: &Report) -> Changes {
    compare(&counts_of_report(base), &counts_of_report(head))
}

fn counts(c: &Change) -> String {
    if c.base == 0 || c.head == 0 {
        c.head.max(c.base).to_string()
    } else {
        format!("{} → {}", c.base, c.head)
    }
}

/// For a terminal.
pub fn render_text(c: &Changes) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{} new, {} fixed, {} unchanged",
        c.new.len(),
        c.fixed.len(),
        c.unchanged.len()
    );
    for (title, list) in [
        ("New", &c.new),
        ("Fixed", &c.fixed),
        ("Unchanged", &c.unchanged),
    ] {
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{title}:");
        for x in list {
            let _ = writeln!(
                out,
                "  {:>7} × {}  [{}]",
                counts(x),
                truncate(sanitize(&x.command), 300),
                x.id
            );
        }
    }
    out
}

/// For a comment or a job summary; untrusted text escaped.
pub fn render_markdown(c: &Changes, max_rows: usize) -> String {
    let mut out = String::new();
    for (title, list) in [
        ("New leaks", &c.new),
        ("Fixed leaks", &c.fixed),
        ("Unchanged leaks", &c.unchanged),
    ] {
        if list.is_empty() {
            continue;
        }
        let _ = writeln!(
            out,
            "**{title}** ({})\n\n| Processes | Command | Signature |\n|---:|---|---|",
            list.len()
        );
        for x in list.iter().take(max_rows) {
            let _ = writeln!(
                out,
                "| {} | <code>{}</code> | `{}` |",
                counts(x),
                md(&truncate(x.command.clone(), 300)),
                md(&x.id)
            );
        }
        if list.len() > max_rows {
            let _ = writeln!(out, "\n… and {} more.", list.len() - max_rows);
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::tests::report_of;

    #[test]
    fn new_fixed_unchanged_with_counts() {
        let base = report_of(&[
            (&["sleep", "1"], 2, None),
            (&["redis-server"], 1, None),
            (&["node", "a.js"], 1, None),
        ]);
        let head = report_of(&[
            (&["sleep", "1"], 3, None),
            (&["node", "a.js"], 1, None),
            (&["uvicorn", "app:app"], 1, None),
        ]);
        let c = reports(&base, &head);
        let names = |v: &[Change]| v.iter().map(|c| c.command.clone()).collect::<Vec<_>>();
        assert_eq!(names(&c.new), ["sleep <N>", "uvicorn app:app"]);
        assert_eq!(names(&c.fixed), ["redis-server"]);
        assert_eq!(names(&c.unchanged), ["node a.js"]);
        let text = render_text(&c);
        assert!(text.starts_with("2 new, 1 fixed, 1 unchanged\n"), "{text}");
        assert!(text.contains("2 → 3 × sleep <N>"), "{text}");
        let mdown = render_markdown(&c, 10);
        assert!(mdown.contains("**Fixed leaks** (1)"), "{mdown}");
        assert!(mdown.contains("&lt;N&gt;"), "{mdown}");
        assert!(reports(&base, &base).is_quiet());
    }
}
