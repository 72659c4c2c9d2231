//! The digest of a run's failing leaks: signature ids, counts and (shortened) commands, as
//! one hidden HTML comment at the top of the ci-janitor check run's summary. A pull
//! request's run reads the one on its base commit to tell its new leaks from the base's.
//!
//! `<!-- ci-janitor-digest {"v":1,"job":"CI/test","leaks":[["a1b2c3d4e5f6",3,"sleep <N>"]]} -->`

use serde::{Deserialize, Serialize};

use crate::report::json::{Report, SignatureClass};

const OPEN: &str = "<!-- ci-janitor-digest ";
const CLOSE: &str = " -->";
/// Signatures kept (most processes first); commands are cut to [`MAX_COMMAND`] chars.
pub const MAX_LEAKS: usize = 300;
const MAX_COMMAND: usize = 80;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Digest {
    pub v: u32,
    /// `WORKFLOW/JOB`: a check run holds one job's digest.
    pub job: String,
    #[serde(with = "tuples")]
    pub leaks: Vec<DigestLeak>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DigestLeak {
    pub id: String,
    pub count: usize,
    pub command: String,
}

mod tuples {
    use super::DigestLeak;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub fn serialize<S: Serializer>(v: &[DigestLeak], s: S) -> Result<S::Ok, S::Error> {
        v.iter()
            .map(|l| (&l.id, l.count, &l.command))
            .collect::<Vec<_>>()
            .serialize(s)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<DigestLeak>, D::Error> {
        let v: Vec<(String, usize, String)> = Vec::deserialize(d)?;
        Ok(v.into_iter()
            .map(|(id, count, command)| DigestLeak { id, count, command })
            .collect())
    }
}

fn cut(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((at, _)) => format!("{}…", &s[..at]),
        None => s.to_owned(),
    }
}

/// The digest of a report's failing leaks (class `job`), most processes first.
pub fn of(report: &Report, job: &str) -> Digest {
    Digest {
        v: 1,
        job: job.to_owned(),
        leaks: report
            .signatures
            .iter()
            .filter(|s| s.class == SignatureClass::Job)
            .take(MAX_LEAKS)
            .map(|s| DigestLeak {
                id: s.id.clone(),
                count: s.count,
                command: cut(&s.command, MAX_COMMAND),
            })
            .collect(),
    }
}

/// The digest as one hidden line: JSON inside an HTML comment, with `<`, `>` and `&`
/// escaped so that no command can close the comment.
pub fn render(d: &Digest) -> String {
    let json = serde_json::to_string(d)
        .unwrap_or_default()
        .replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026");
    format!("{OPEN}{json}{CLOSE}\n")
}

/// The digest in a check run's summary, if it holds one of this version.
pub fn find(text: &str) -> Option<Digest> {
    let start = text.find(OPEN)? + OPEN.len();
    let end = start + text[start..].find(CLOSE)?;
    serde_json::from_str::<Digest>(&text[start..end])
        .ok()
        .filter(|d| d.v == 1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::tests::report_of;

    #[test]
    fn round_trips_through_a_summary_and_cannot_be_closed_early() {
        let r = report_of(&[
            (&["sleep", "100"], 2, None),
            (&["sh", "-c", "echo --> <b>&"], 1, None),
        ]);
        let d = of(&r, "CI/test");
        assert_eq!(d.leaks.len(), 2);
        let text = format!("# title\n{}\nmore", render(&d));
        assert_eq!(text.matches("-->").count(), 1, "{text}");
        assert!(!text.contains("<b>"));
        assert_eq!(find(&text), Some(d));
        assert_eq!(find("no digest here"), None);
        assert_eq!(
            find("<!-- ci-janitor-digest {\"v\":9,\"job\":\"\",\"leaks\":[]} -->"),
            None
        );
    }
}
