//! The known-leaks file: TOML, one `[[leak]]` table per tolerated leak.
//!
//! ```toml
//! version = 1
//!
//! [[leak]]
//! signature = "python3 -m http.server <N> --bind 127.0.0.1"   # a report's masked command
//! max = 1                          # at most this many processes are tolerated
//! step = "__run_2"                 # optional glob on the step id (or its name)
//! test = "tests/test_api.py::*"    # optional glob on PYTEST_CURRENT_TEST
//! reason = "the api fixture leaks its server (#123)"
//! owner = "@team-api"
//! expires = 2027-03-01             # optional: the last day it is tolerated (UTC)
//! ```
//!
//! Pure: text in, entries out (and back). Reading the file goes through
//! [`crate::files::read_input`].

use std::path::Path;

use serde::{Deserialize, Serialize};

/// The format version this build reads and writes.
pub const VERSION: u32 = 1;

/// The largest known-leaks file read.
pub const MAX_BYTES: u64 = 4 << 20;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnownLeaksFile {
    pub version: u32,
    #[serde(default, rename = "leak", skip_serializing_if = "Vec::is_empty")]
    pub leaks: Vec<Entry>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    /// The masked command line, as a report's signature `command` shows it.
    pub signature: String,
    /// The most processes of it tolerated in one run.
    pub max: usize,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<String>,
    pub reason: String,
    pub owner: String,
    /// The last day the leak is tolerated (a TOML date, UTC).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires: Option<toml::value::Datetime>,
}

impl Entry {
    /// The expiry as `(year, month, day)`.
    pub fn expiry(&self) -> Option<(u16, u8, u8)> {
        let d = self.expires.as_ref()?.date?;
        Some((d.year, d.month, d.day))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    #[error("read the known-leaks file {path}: {detail}")]
    Read { path: String, detail: String },
    #[error(
        "parse the known-leaks file {path}: {detail} (see `ci-janitor known-leaks --help` \
         for the format)"
    )]
    Parse { path: String, detail: String },
    #[error("write the known-leaks file {path}: {detail}")]
    Write { path: String, detail: String },
}

/// Parses and checks a known-leaks file's text. `path` names it in errors.
pub fn parse(text: &str, path: &str) -> Result<KnownLeaksFile, FileError> {
    let bad = |detail: String| FileError::Parse {
        path: path.to_owned(),
        detail,
    };
    let file: KnownLeaksFile = toml::from_str(text).map_err(|e| bad(e.to_string()))?;
    if file.version != VERSION {
        return Err(bad(format!(
            "version {} is not {VERSION} (the version this ci-janitor reads)",
            file.version
        )));
    }
    for (i, e) in file.leaks.iter().enumerate() {
        let n = i + 1;
        if e.signature.trim().is_empty() {
            return Err(bad(format!("leak #{n} has an empty signature")));
        }
        if e.max == 0 {
            return Err(bad(format!(
                "leak #{n} ({}) has max = 0: remove the entry instead",
                e.signature
            )));
        }
        if e.expires.is_some() && e.expiry().is_none() {
            return Err(bad(format!(
                "leak #{n} ({}): expires must be a date (expires = 2027-03-01)",
                e.signature
            )));
        }
        if e.reason.trim().is_empty() || e.owner.trim().is_empty() {
            return Err(bad(format!(
                "leak #{n} ({}) needs a reason and an owner",
                e.signature
            )));
        }
    }
    Ok(file)
}

/// Reads and checks a known-leaks file.
pub fn load(path: &Path) -> Result<KnownLeaksFile, FileError> {
    let shown = path.display().to_string();
    let bytes = crate::files::read_input(path, MAX_BYTES).map_err(|e| FileError::Read {
        path: shown.clone(),
        detail: e.to_string(),
    })?;
    let text = String::from_utf8(bytes).map_err(|_| FileError::Parse {
        path: shown.clone(),
        detail: "it is not UTF-8".into(),
    })?;
    parse(&text, &shown)
}

/// What the file says about itself, above the entries.
const HEADER: &str = "\
# ci-janitor known leaks: leaks this job is known to leave, tolerated until fixed.
# A leak that matches an entry (its masked command line, and the step and test globs when
# set) within the entry's max is killed and reported as known; above the max, unmatched or
# past `expires`, it is new, and `--fail-on new` fails the run. Entries that match nothing
# are reported as removable. Refresh with `ci-janitor known-leaks update FILE REPORT.json`
# (it lowers maxima and drops unused entries; it raises a max only with --raise).
";

/// The file as text: the header, then the entries.
pub fn render(file: &KnownLeaksFile) -> Result<String, FileError> {
    let body = toml::to_string(file).map_err(|e| FileError::Write {
        path: String::new(),
        detail: e.to_string(),
    })?;
    Ok(format!("{HEADER}\n{body}"))
}

/// Days since 1970-01-01 of a civil date (proleptic Gregorian).
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXAMPLE: &str = r#"
version = 1

[[leak]]
signature = "python3 -m http.server <N> --bind 127.0.0.1"
max = 1
test = "tests/test_api.py::*"
reason = "the api fixture leaks its server (#123)"
owner = "@team-api"
expires = 2027-03-01

[[leak]]
signature = "sleep <N>"
max = 2
reason = "r"
owner = "o"
"#;

    #[test]
    fn parses_and_round_trips() {
        let f = parse(EXAMPLE, "k.toml").unwrap();
        assert_eq!(f.leaks.len(), 2);
        assert_eq!(f.leaks[0].expiry(), Some((2027, 3, 1)));
        assert_eq!(f.leaks[0].test.as_deref(), Some("tests/test_api.py::*"));
        let text = render(&f).unwrap();
        assert!(text.starts_with("# ci-janitor known leaks"));
        assert!(text.contains("expires = 2027-03-01\n"), "{text}");
        assert_eq!(parse(&text, "k.toml").unwrap(), f);
    }

    #[test]
    fn bad_files_say_what_is_wrong() {
        let cases = [
            ("version = 2", "version 2"),
            ("version = 1\n[[leak]]\nsignature = \"x\"\nmax = 0\nreason = \"r\"\nowner = \"o\"", "max = 0"),
            ("version = 1\n[[leak]]\nsignature = \"\"\nmax = 1\nreason = \"r\"\nowner = \"o\"", "empty signature"),
            ("version = 1\n[[leak]]\nsignature = \"x\"\nmax = 1\nreason = \"\"\nowner = \"o\"", "a reason and an owner"),
            ("version = 1\n[[leak]]\nsignature = \"x\"\nmax = 1\nreason = \"r\"\nowner = \"o\"\nexpires = 10:00:00", "must be a date"),
            ("version = 1\n[[leak]]\nsignature = \"x\"\nmax = 1\nreason = \"r\"\nowner = \"o\"\ncolour = 1", "colour"),
        ];
        for (text, want) in cases {
            let e = parse(text, "k.toml").unwrap_err().to_string();
            assert!(e.starts_with("parse the known-leaks file k.toml"), "{e}");
            assert!(e.contains(want), "{want:?} not in {e}");
        }
    }

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(2026, 12, 1), 20_788);
    }
}
