//! What `ci-janitor known-leaks write|update FILE REPORT.json` does: a new file with one
//! entry per failing signature of a report, or an existing file refreshed against a
//! report. A refresh only ever tightens by itself: it lowers a max to what was seen and
//! drops entries that matched nothing; it raises a max only with `raise`, and adds
//! entries for new leaks only with `add_new`.

use crate::report::json::{EntryStatus, Report, SignatureClass};

use super::file::{Entry, KnownLeaksFile, VERSION};
use super::{apply, Known};

#[derive(Debug, Clone, Default)]
pub struct Options {
    /// Raise a max to what the report saw.
    pub raise: bool,
    /// Add entries for signatures no entry names.
    pub add_new: bool,
    /// Keep entries that matched nothing.
    pub keep_unused: bool,
    /// For new entries.
    pub owner: String,
    pub reason: String,
    pub expires: Option<toml::value::Datetime>,
}

/// A file and what was done to get it, line by line.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub file: KnownLeaksFile,
    pub changes: Vec<String>,
}

fn new_entry(command: &str, max: usize, o: &Options) -> Entry {
    Entry {
        signature: command.to_owned(),
        max,
        step: None,
        test: None,
        reason: o.reason.clone(),
        owner: o.owner.clone(),
        expires: o.expires,
    }
}

/// A file tolerating every failing leak of `report` at its count.
pub fn write(report: &Report, o: &Options) -> Outcome {
    let leaks: Vec<Entry> = report
        .signatures
        .iter()
        .filter(|s| s.class == SignatureClass::Job)
        .map(|s| new_entry(&s.command, s.count, o))
        .collect();
    let changes = leaks
        .iter()
        .map(|e| format!("added (max {}): {}", e.max, e.signature))
        .collect();
    Outcome {
        file: KnownLeaksFile {
            version: VERSION,
            leaks,
        },
        changes,
    }
}

/// `file` refreshed against `report`.
pub fn update(file: &KnownLeaksFile, report: &Report, o: &Options) -> Outcome {
    let mut r = report.clone();
    apply(&mut r, &Known::from_file(file, ""), false);
    let uses = r.known_leaks.map(|k| k.entries).unwrap_or_default();
    let mut changes = Vec::new();
    let mut leaks = Vec::new();
    for (e, u) in file.leaks.iter().zip(&uses) {
        let mut e = e.clone();
        match u.status {
            EntryStatus::Unused if !o.keep_unused => {
                changes.push(format!("removed (matched nothing): {}", e.signature));
                continue;
            }
            EntryStatus::Unused => {}
            _ if u.seen < e.max => {
                changes.push(format!(
                    "lowered max {} → {}: {}",
                    e.max, u.seen, e.signature
                ));
                e.max = u.seen;
            }
            _ if u.seen > e.max && o.raise => {
                changes.push(format!(
                    "raised max {} → {} (--raise): {}",
                    e.max, u.seen, e.signature
                ));
                e.max = u.seen;
            }
            _ if u.seen > e.max => changes.push(format!(
                "kept max {} though {} were seen (pass --raise to raise it): {}",
                e.max, u.seen, e.signature
            )),
            _ => {}
        }
        if u.status == EntryStatus::Expired {
            changes.push(format!(
                "expired on {} (kept: fix the leak, or move the date): {}",
                u.expires.as_deref().unwrap_or("?"),
                e.signature
            ));
        }
        leaks.push(e);
    }
    for s in r
        .signatures
        .iter()
        .filter(|s| s.class == SignatureClass::Job)
        .filter(|s| !file.leaks.iter().any(|e| e.signature == s.command))
    {
        if o.add_new {
            changes.push(format!("added (max {}): {}", s.count, s.command));
            leaks.push(new_entry(&s.command, s.count, o));
        } else {
            changes.push(format!(
                "not added, a new leak (pass --add-new to tolerate it): {} × {}",
                s.count, s.command
            ));
        }
    }
    Outcome {
        file: KnownLeaksFile {
            version: VERSION,
            leaks,
        },
        changes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::file::parse;
    use crate::gate::tests::report_of;

    fn opts() -> Options {
        Options {
            owner: "unowned".into(),
            reason: "r".into(),
            ..Options::default()
        }
    }

    #[test]
    fn write_then_update_never_raises_by_itself() {
        let r = report_of(&[(&["sleep", "1"], 2, None), (&["redis-server"], 1, None)]);
        let w = write(&r, &opts());
        assert_eq!(w.file.leaks.len(), 2);
        assert_eq!(w.file.leaks[0].max, 2);
        // The file as written parses back.
        let text = crate::gate::file::render(&w.file).unwrap();
        assert_eq!(parse(&text, "k").unwrap(), w.file);

        // More sleeps, no redis, a new node: the max stays, redis goes, node is not added.
        let later = report_of(&[(&["sleep", "1"], 5, None), (&["node", "x.js"], 1, None)]);
        let u = update(&w.file, &later, &opts());
        assert_eq!(u.file.leaks.len(), 1);
        assert_eq!(u.file.leaks[0].max, 2, "{:?}", u.changes);
        assert!(u.changes.iter().any(|c| c.contains("pass --raise")));
        assert!(u.changes.iter().any(|c| c.starts_with("removed")));
        assert!(u.changes.iter().any(|c| c.contains("--add-new")));

        let raised = update(
            &w.file,
            &later,
            &Options {
                raise: true,
                add_new: true,
                ..opts()
            },
        );
        assert_eq!(raised.file.leaks[0].max, 5);
        assert_eq!(raised.file.leaks.len(), 2);

        // Fewer: the max comes down.
        let fewer = report_of(&[(&["sleep", "1"], 1, None), (&["redis-server"], 1, None)]);
        let u = update(&w.file, &fewer, &opts());
        assert_eq!(u.file.leaks[0].max, 1);
    }
}
