//! The one command-line masker: an argv with the parts that change from run to run masked
//! (numbers, temp paths, hashes, UUIDs, redacted secrets), so that 82 Prefect servers on 82
//! ports read as one line, `python -m uvicorn prefect.server.api.server:create_app --port
//! <N>`. The reports group leaks by it ([`crate::report::signature`]), and the guard's live
//! warnings use it too ([`live`]), so a warning and the report name one leak alike.
//!
//! Pure text in, text out; it must not read anything. The masked command is also the basis
//! of the `--allow` pattern a report suggests, built alongside it so that the pattern
//! matches every raw command line the signature stands for (placeholders become `*`).

use sha2::{Digest, Sha256};

use crate::redact::MASK;

/// A command line with run-specific parts masked, for people (`display`) and as a glob
/// (`pattern`) that matches the raw command line.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Normalized {
    pub display: String,
    pub pattern: String,
}

impl Normalized {
    fn literal(&mut self, text: &str) {
        for c in text.chars() {
            if c.is_control() {
                self.display.push_str(&format!("\\x{:02x}", c as u32));
                self.pattern.push('?');
            } else if c == char::REPLACEMENT_CHARACTER {
                // One or more bytes that were not UTF-8.
                self.display.push(c);
                self.pattern.push('*');
            } else {
                self.display.push(c);
                self.pattern.push(c);
            }
        }
    }

    fn placeholder(&mut self, name: &str) {
        self.display.push_str(name);
        self.pattern.push('*');
    }
}

/// Normalises an argv (already redacted). The program is shown by its file name
/// (`python`, not `/home/runner/work/app/.venv/bin/python`; the pattern then starts with
/// `*`) and keeps its numbers (`python3.12`); every element loses temp paths, UUIDs and
/// hashes, and every later one its numbers.
pub fn normalize(argv: &[String]) -> Normalized {
    let mut n = Normalized::default();
    for (i, arg) in argv.iter().enumerate() {
        if i > 0 {
            n.literal(" ");
            normalize_arg(arg, false, &mut n);
            continue;
        }
        // A program name with spaces is a title a process gave itself (`exec -a`,
        // setproctitle: `postgres: checkpointer`), masked like any argument.
        if arg.contains(char::is_whitespace) {
            normalize_arg(arg, false, &mut n);
            continue;
        }
        match arg.rsplit_once('/') {
            Some((_, name)) if !name.is_empty() => {
                n.pattern.push('*');
                normalize_arg(name, true, &mut n);
            }
            _ => normalize_arg(arg, true, &mut n),
        }
    }
    // `**` means the same as `*` to the glob; keep patterns short.
    while n.pattern.contains("**") {
        n.pattern = n.pattern.replace("**", "*");
    }
    n
}

fn is_path_byte(b: u8) -> bool {
    !(b.is_ascii_whitespace()
        || matches!(
            b,
            b'\'' | b'"' | b':' | b',' | b';' | b'=' | b'(' | b')' | b'<' | b'>' | b'|' | b'&'
        ))
}

/// Where temporary files live: a path under one of these says nothing stable about the
/// process.
const TEMP_ROOTS: [&str; 6] = [
    "/tmp",
    "/var/tmp",
    "/dev/shm",
    "/private/tmp",
    "/private/var/folders",
    "/run/user",
];

fn is_temp_root(path: &str) -> bool {
    TEMP_ROOTS.contains(&path) || path.ends_with("/_temp")
}

fn is_temp_path(path: &str) -> bool {
    TEMP_ROOTS
        .iter()
        .any(|r| path == *r || path.strip_prefix(r).is_some_and(|s| s.starts_with('/')))
        // $RUNNER_TEMP on GitHub runners, pytest's basetemp anywhere.
        || path.contains("/_temp/")
        || path.contains("/pytest-of-")
}

fn normalize_arg(arg: &str, program: bool, n: &mut Normalized) {
    let b = arg.as_bytes();
    let mut i = 0;
    let mut plain_start = 0;
    while i < b.len() {
        // A temp path: `<tmp>/name` (the name kept only when it has no digits).
        if b[i] == b'/'
            && (i == 0 || !(b[i - 1].is_ascii_alphanumeric() || b"._~-".contains(&b[i - 1])))
        {
            let end = b[i..]
                .iter()
                .position(|&c| !is_path_byte(c))
                .map_or(b.len(), |k| i + k);
            let path = &arg[i..end];
            if is_temp_path(path) {
                tokens(&arg[plain_start..i], program, n);
                // `/tmp/x.sock` becomes `<tmp>/x.sock`; a bare temp root, or a last name
                // with digits in it (random: `tmpk2j3l4x_`), becomes `<tmp>`.
                let trimmed = path.trim_end_matches('/');
                let base = trimmed.rsplit('/').next().unwrap_or("");
                n.placeholder("<tmp>");
                if !is_temp_root(trimmed)
                    && !base.is_empty()
                    && !base.bytes().any(|c| c.is_ascii_digit())
                {
                    n.literal("/");
                    n.literal(base);
                }
                i = end;
                plain_start = i;
                continue;
            }
            i = end.max(i + 1);
            continue;
        }
        i += 1;
    }
    tokens(&arg[plain_start..], program, n);
}

fn is_uuid(s: &[u8]) -> bool {
    s.len() == 36
        && s.iter().enumerate().all(|(i, &c)| {
            if matches!(i, 8 | 13 | 18 | 23) {
                c == b'-'
            } else {
                c.is_ascii_hexdigit()
            }
        })
}

/// Masks numbers, hashes and UUIDs in `text`, word by word (a word is a run of ASCII
/// letters and digits, so the `3` of `python3` is part of a word and stays).
fn tokens(text: &str, program: bool, n: &mut Normalized) {
    let b = text.as_bytes();
    let mut i = 0;
    let mut lit = 0;
    let flush = |n: &mut Normalized, from: usize, to: usize| n.literal(&text[from..to]);
    while i < b.len() {
        if !b[i].is_ascii_alphanumeric() {
            if b[i..].starts_with(MASK.as_bytes()) {
                flush(n, lit, i);
                n.placeholder(MASK);
                i += MASK.len();
                lit = i;
                continue;
            }
            i += 1;
            continue;
        }
        if (i == 0 || !b[i - 1].is_ascii_alphanumeric())
            && b.len() >= i + 36
            && is_uuid(&b[i..i + 36])
            && b.get(i + 36).is_none_or(|c| !c.is_ascii_alphanumeric())
        {
            flush(n, lit, i);
            n.placeholder("<uuid>");
            i += 36;
            lit = i;
            continue;
        }
        let start = i;
        while i < b.len() && b[i].is_ascii_alphanumeric() {
            i += 1;
        }
        let word = &b[start..i];
        let digits = word.iter().all(u8::is_ascii_digit);
        if digits {
            // A dotted run of numbers (an address, a version) is kept whole.
            let mut end = i;
            while end + 1 < b.len() && b[end] == b'.' && b[end + 1].is_ascii_digit() {
                end += 1;
                while end < b.len() && b[end].is_ascii_digit() {
                    end += 1;
                }
            }
            let dotted =
                end > i || (start > 1 && b[start - 1] == b'.' && b[start - 2].is_ascii_digit());
            if dotted || program {
                i = end;
                continue;
            }
            flush(n, lit, start);
            n.placeholder("<N>");
            lit = i;
            continue;
        }
        let has_digit = word.iter().any(u8::is_ascii_digit);
        let has_alpha = word.iter().any(u8::is_ascii_alphabetic);
        let hexish = word.len() >= 8 && word.iter().all(u8::is_ascii_hexdigit);
        if has_digit && has_alpha && (hexish || word.len() >= 16) {
            flush(n, lit, start);
            n.placeholder("<hash>");
            lit = i;
        }
    }
    flush(n, lit, b.len());
}

/// A short, stable id for a masked command line (the first 12 hex digits of its SHA-256):
/// the key known-leaks files and report comparisons use.
pub fn signature_id(command: &str) -> String {
    let digest = Sha256::digest(command.as_bytes());
    digest.iter().take(6).map(|b| format!("{b:02x}")).collect()
}

/// At most this many arguments take part in a live warning's signature, and it is cut at
/// [`LIVE_MAX_LEN`] characters: a warning is one line.
const LIVE_MAX_ARGS: usize = 12;
const LIVE_MAX_LEN: usize = 200;

/// The masked command for the guard's live warnings: [`normalize`]'s display of the first
/// arguments, bounded.
pub fn live<S: AsRef<str>>(argv: &[S]) -> String {
    let args: Vec<String> = argv
        .iter()
        .take(LIVE_MAX_ARGS)
        .map(|a| a.as_ref().to_owned())
        .collect();
    let mut out = normalize(&args).display;
    if out.chars().count() > LIVE_MAX_LEN {
        out = out.chars().take(LIVE_MAX_LEN - 1).collect();
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_warning_names_a_leak_as_the_report_does() {
        let server = |port: &str| {
            live(&[
                "python",
                "-m",
                "uvicorn",
                "prefect.server.api.server:create_app",
                "--port",
                port,
            ])
        };
        assert_eq!(server("8001"), server("8042"));
        assert_eq!(
            server("8001"),
            "python -m uvicorn prefect.server.api.server:create_app --port <N>"
        );
        let args: Vec<String> = ["python", "-m", "uvicorn", "x:app", "--port", "8001"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(live(&args), normalize(&args).display);
    }

    #[test]
    fn a_live_signature_is_bounded() {
        let long = vec!["x".repeat(300)];
        assert!(live(&long).chars().count() <= LIVE_MAX_LEN);
        let many: Vec<String> = (0..100).map(|i| format!("--flag-{i}")).collect();
        assert!(live(&many).chars().count() <= LIVE_MAX_LEN);
        assert_eq!(live::<&str>(&[]), "");
    }
}
