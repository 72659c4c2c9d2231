//! Redaction: secrets in command lines are replaced by [`MASK`] before anything is printed
//! or saved. A leaked process's argv is the most useful thing a report shows and also the
//! place where people pass `--token ghp_…`, `PASSWORD=…` and `https://user:pass@host`.
//!
//! What is redacted, in every argument (and in every word of an argument, so that the
//! script of an `sh -c '…'` is covered too):
//!
//! - the value after a flag whose name looks secret: `--password x`, `--token=x`,
//!   `--api-key x`, `-e DB_PASS=x` (see [`is_secret_name`]);
//! - the short password flags of the usual clients, which only mean "password" after their
//!   own program: `mysql -pX` (and `mysqldump`, `mariadb`, …), `sshpass -p X`,
//!   `redis-cli -a X`, and the password half of `curl -u user:pw` / `--user user:pw`;
//! - the value of `KEY=value` when `KEY` looks secret (`GITHUB_TOKEN=…`, `AWS_SECRET_ACCESS_KEY=…`),
//!   and of `"key": "value"` in inline JSON;
//! - credentials in headers (`Authorization: Bearer x`, `X-Api-Key: x`, `Cookie: x`) and any
//!   `Bearer x`;
//! - URL credentials (`https://user:pass@host` becomes `https://***:***@host`) and secret-looking
//!   query parameters (`?token=x`, `&sig=x`);
//! - well-known token shapes wherever they appear: GitHub (`ghp_`, `gho_`, `ghu_`, `ghs_`,
//!   `ghr_`, `github_pat_`), GitLab (`glpat-`), Slack (`xoxb-`, …), AWS key ids
//!   (`AKIA…`, `ASIA…`), npm (`npm_`), PyPI (`pypi-`), Stripe/OpenAI-style `sk-…`, Google
//!   (`AIza…`), JWTs, and PEM private-key blocks.
//!
//! Redaction works on bytes (argv need not be UTF-8); every rule keys on ASCII. It is
//! idempotent: redacting a redacted argv changes nothing.
//!
//! The removed values are collected in [`Secrets`], which stays in memory so that the
//! GitHub runner can be told to mask them in the rest of the log (`::add-mask::`); it has
//! no `Serialize` and its `Debug` prints only a count.

use std::collections::BTreeSet;
use std::fmt;
use std::ops::Range;

use crate::model::{Argv, Snapshot};

/// What a secret is replaced with.
pub const MASK: &str = "***";

/// Values shorter than this are redacted but not passed to `::add-mask::`: the runner would
/// then hide every occurrence of, say, `x` or `abc` in the rest of the log.
pub const MIN_MASK_LEN: usize = 4;

/// The values redaction removed. Never serialised; `Debug` shows only how many.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Secrets {
    values: BTreeSet<String>,
}

impl fmt::Debug for Secrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Secrets({} values)", self.values.len())
    }
}

impl Secrets {
    /// How many distinct values were removed.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// The values worth an `::add-mask::` (at least [`MIN_MASK_LEN`] bytes), in a stable order.
    pub fn to_mask(&self) -> impl Iterator<Item = &str> {
        self.values
            .iter()
            .map(String::as_str)
            .filter(|v| v.len() >= MIN_MASK_LEN)
    }

    fn add(&mut self, raw: &[u8]) {
        let text = String::from_utf8_lossy(raw);
        let text = text.trim();
        if !text.is_empty() && text != MASK {
            self.values.insert(text.to_owned());
        }
    }
}

/// Redacts an argv; the removed values go to `secrets`.
pub fn redact_argv(argv: &Argv, secrets: &mut Secrets) -> Argv {
    let args: Vec<&[u8]> = argv.iter().collect();
    let found = find_argv(&args);
    args.iter()
        .zip(found)
        .map(|(arg, f)| apply(arg, f, secrets))
        .collect()
}

/// Redacts one piece of text (a marker value, a single-string command line).
pub fn redact_text(text: &str, secrets: &mut Secrets) -> String {
    let found = find_argv(&[text.as_bytes()]);
    let out = apply(
        text.as_bytes(),
        found.into_iter().next().unwrap_or_default(),
        secrets,
    );
    // Only whole ASCII runs are replaced by ASCII, so valid UTF-8 stays valid; lossy is a
    // belt for the braces.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Redacts what a snapshot holds of every process's command line and test marker, in place.
/// Used before a snapshot is saved or printed.
pub fn redact_snapshot(snap: &mut Snapshot) -> Secrets {
    let mut secrets = Secrets::default();
    for p in &mut snap.processes {
        p.argv = redact_argv(&p.argv, &mut secrets);
        p.markers
            .change("PYTEST_CURRENT_TEST", |t| redact_text(t, &mut secrets));
    }
    secrets
}

/// What to redact in one argument.
#[derive(Debug, Clone, Default)]
struct Found {
    /// Secrets: redacted, and their values recorded for masking.
    ranges: Vec<Range<usize>>,
    /// Redacted but not recorded: a URL's user name next to a password is usually a
    /// word like `git` or `oauth2`, which the runner would then hide everywhere in the log.
    quiet: Vec<Range<usize>>,
}

/// Replaces the ranges `found` in `arg` by [`MASK`], recording what the loud ones held.
fn apply(arg: &[u8], found: Found, secrets: &mut Secrets) -> Vec<u8> {
    let loud = found.ranges;
    let mut ranges: Vec<Range<usize>> = loud.iter().chain(&found.quiet).cloned().collect();
    if ranges.is_empty() {
        return arg.to_vec();
    }
    ranges.sort_by_key(|r| (r.start, std::cmp::Reverse(r.end)));
    let mut merged: Vec<Range<usize>> = Vec::new();
    for r in ranges {
        match merged.last_mut() {
            Some(last) if r.start <= last.end => last.end = last.end.max(r.end),
            _ => merged.push(r),
        }
    }
    let mut out = Vec::with_capacity(arg.len());
    let mut at = 0;
    for r in merged {
        let (start, end) = (r.start.min(arg.len()), r.end.min(arg.len()));
        if start >= end || start < at {
            continue;
        }
        out.extend_from_slice(&arg[at..start]);
        if loud.iter().any(|l| l.start < end && start < l.end) {
            secrets.add(&arg[start..end]);
        }
        out.extend_from_slice(MASK.as_bytes());
        at = end;
    }
    out.extend_from_slice(&arg[at..]);
    out
}

/// Whether a flag, variable or parameter name looks like it holds a secret. Case and
/// separators do not matter (`--api-key`, `API_KEY`, `apiKey`); names of files, paths and
/// similar companions do not count (`--token-file`, `PASSWORD_PATH`, `--password-stdin`).
pub fn is_secret_name(name: &[u8]) -> bool {
    let squashed: Vec<u8> = name
        .iter()
        .filter(|b| !matches!(b, b'-' | b'_' | b'.'))
        .map(u8::to_ascii_lowercase)
        .collect();
    let s = squashed.as_slice();
    if s.is_empty() || s == b"pwd" || s == b"oldpwd" {
        return false;
    }
    const COMPANIONS: [&[u8]; 21] = [
        b"file",
        b"path",
        b"dir",
        b"stdin",
        b"env",
        b"url",
        b"uri",
        b"endpoint",
        b"length",
        b"len",
        b"type",
        b"name",
        b"id",
        b"count",
        b"tokens",
        b"tokenizer",
        b"size",
        b"limit",
        b"timeout",
        b"ttl",
        b"expiry",
    ];
    if COMPANIONS.iter().any(|c| s.ends_with(c)) {
        return false;
    }
    const NEEDLES: [&[u8]; 16] = [
        b"token",
        b"secret",
        b"password",
        b"passwd",
        b"passphrase",
        b"apikey",
        b"accesskey",
        b"privatekey",
        b"credential",
        b"authkey",
        b"signingkey",
        b"encryptionkey",
        b"masterkey",
        b"licensekey",
        b"sessionkey",
        b"masterauth",
    ];
    NEEDLES.iter().any(|n| contains(s, n))
        || s.ends_with(b"pass")
        || s.ends_with(b"pwd")
        || s == b"auth"
        || s.ends_with(b"auth") && name.len() > 4 && !s.ends_with(b"oauth")
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

fn find_ci(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if needle.is_empty() || hay.len() < needle.len() {
        return None;
    }
    (from..=hay.len() - needle.len())
        .find(|&i| hay[i..i + needle.len()].eq_ignore_ascii_case(needle))
}

fn is_word_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'_'
}

fn is_quote(b: u8) -> bool {
    b == b'\'' || b == b'"'
}

/// A word of an argument: a run of non-whitespace, where a quoted stretch may hold spaces.
fn words(arg: &[u8]) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < arg.len() {
        while i < arg.len() && arg[i].is_ascii_whitespace() {
            i += 1;
        }
        if i >= arg.len() {
            break;
        }
        let start = i;
        while i < arg.len() && !arg[i].is_ascii_whitespace() {
            if is_quote(arg[i]) {
                let q = arg[i];
                match arg[i + 1..].iter().position(|&b| b == q) {
                    Some(k) => i += k + 2,
                    None => i += 1,
                }
            } else {
                i += 1;
            }
        }
        out.push(start..i.min(arg.len()));
    }
    out
}

/// A value that starts at `r.start`: inside its quotes when it is quoted (`"a b";` gives
/// `a b`), else all of `r`.
fn unquote(arg: &[u8], r: Range<usize>) -> Range<usize> {
    let s = &arg[r.clone()];
    match s.first() {
        Some(&q) if is_quote(q) => match s[1..].iter().position(|&b| b == q) {
            Some(k) => r.start + 1..r.start + 1 + k,
            None => r.start + 1..r.end,
        },
        _ => r,
    }
}

/// Whether a value is only a reference to a variable (`$TOKEN`, `${TOKEN}`): nothing secret
/// in the text itself, and the name helps the reader.
fn is_variable_reference(v: &[u8]) -> bool {
    let rest = match v.strip_prefix(b"$") {
        Some(r) => r,
        None => return false,
    };
    let rest = rest
        .strip_prefix(b"{")
        .and_then(|r| r.strip_suffix(b"}"))
        .unwrap_or(rest);
    !rest.is_empty() && rest.iter().all(|&b| is_word_byte(b))
}

/// A flag that takes a secret as its next word: `-p`-style short flags are left alone
/// (`-p` is a port as often as a password).
fn secret_flag(word: &[u8]) -> bool {
    let name = word.strip_prefix(b"--").or_else(|| word.strip_prefix(b"-"));
    match name {
        Some(n) if n.len() > 1 && !n.contains(&b'=') && n[0].is_ascii_alphabetic() => {
            n.iter().all(|&b| is_word_byte(b) || b == b'-' || b == b'.') && is_secret_name(n)
        }
        _ => false,
    }
}

/// `NAME=value` (optionally behind `-`/`--`): the value's range when NAME looks secret,
/// looking one level into values that are themselves assignments (`--env=TOKEN=x`).
fn assignment_value(arg: &[u8], w: Range<usize>) -> Option<Range<usize>> {
    let word = &arg[w.clone()];
    let skip = word.iter().take(2).take_while(|&&b| b == b'-').count();
    let body = w.start + skip..w.end;
    let eq = arg[body.clone()].iter().position(|&b| b == b'=')?;
    let name = &arg[body.start..body.start + eq];
    let valid = !name.is_empty()
        && (name[0].is_ascii_alphabetic() || name[0] == b'_')
        && name
            .iter()
            .all(|&b| is_word_byte(b) || b == b'-' || b == b'.');
    if !valid {
        return None;
    }
    let value = body.start + eq + 1..body.end;
    if is_secret_name(name) {
        let v = unquote(arg, value);
        let text = &arg[v.clone()];
        return (!text.is_empty() && !is_variable_reference(text)).then_some(v);
    }
    // One level down: `--env=TOKEN=x`, `--build-arg=NPM_TOKEN=x`.
    let inner = &arg[value.clone()];
    if inner.contains(&b'=') && skip > 0 {
        return assignment_value(arg, value);
    }
    None
}

/// Every range to redact, per argument.
fn find_argv(args: &[&[u8]]) -> Vec<Found> {
    let mut found: Vec<Found> = vec![Found::default(); args.len()];
    let mut out: Vec<Vec<Range<usize>>> = vec![Vec::new(); args.len()];
    // Word rules run over the words of all arguments in order, so that `--token` and its
    // value match whether they are two argv elements or two words of one `sh -c` script.
    let all: Vec<(usize, Range<usize>)> = args
        .iter()
        .enumerate()
        .flat_map(|(i, a)| words(a).into_iter().map(move |w| (i, w)))
        .collect();
    for (k, (i, w)) in all.iter().enumerate() {
        let arg = args[*i];
        if let Some(v) = assignment_value(arg, w.clone()) {
            out[*i].push(v);
            continue;
        }
        if !secret_flag(&arg[w.clone()]) {
            continue;
        }
        let Some((j, next)) = all.get(k + 1) else {
            continue;
        };
        let value = &args[*j][next.clone()];
        if value.len() > 1 && value[0] == b'-' {
            continue;
        }
        if *j == *i {
            let v = unquote(arg, next.clone());
            if !is_variable_reference(&arg[v.clone()]) {
                out[*i].push(v);
            }
        } else if *j == *i + 1 {
            // The next argv element is the value, spaces and all (`next` is its first word).
            if !is_variable_reference(args[*j]) {
                out[*j].push(0..args[*j].len());
            }
        }
    }
    program_passwords(args, &all, &mut out);
    for (i, arg) in args.iter().enumerate() {
        headers(arg, &mut out[i]);
        bearer(arg, &mut out[i]);
        url_credentials(arg, &mut out[i], &mut found[i].quiet);
        query_parameters(arg, &mut out[i]);
        json_fields(arg, &mut out[i]);
        embedded_assignments(arg, &mut out[i]);
        token_shapes(arg, &mut out[i]);
        private_keys(arg, &mut out[i]);
    }
    for (f, ranges) in found.iter_mut().zip(out) {
        f.ranges = ranges;
    }
    found
}

/// How a client takes its password in a short flag (see [`program_passwords`]).
#[derive(Clone, Copy)]
enum ShortPassword {
    /// `-pX` only (`-p` alone prompts; `-p X` is a database name): MySQL's clients.
    Attached(u8),
    /// `-p X` or `-pX`.
    Either(u8),
    /// `-u user:pw`, `-uuser:pw`, `--user user:pw`, `--user=user:pw`: the part after the
    /// first colon (no colon: the client prompts).
    UserColonPassword,
}

fn short_password(program: &[u8]) -> Option<ShortPassword> {
    use ShortPassword::*;
    Some(match program {
        b"mysql" | b"mysqldump" | b"mysqladmin" | b"mysqlimport" | b"mysqlcheck" | b"mysqlsh"
        | b"mariadb" | b"mariadb-dump" | b"mariadb-admin" => Attached(b'p'),
        b"sshpass" => Either(b'p'),
        b"redis-cli" | b"valkey-cli" | b"keydb-cli" => Either(b'a'),
        b"curl" => UserColonPassword,
        _ => return None,
    })
}

/// The value of the flag at `all[k]` when it is the next word: in the same argument (an
/// `sh -c` script) or the whole next argument.
fn next_value(
    args: &[&[u8]],
    all: &[(usize, Range<usize>)],
    k: usize,
) -> Option<(usize, Range<usize>)> {
    let (i, _) = &all[k];
    let (j, next) = all.get(k + 1)?;
    if j == i {
        Some((*j, unquote(args[*j], next.clone())))
    } else if *j == *i + 1 {
        Some((*j, 0..args[*j].len()))
    } else {
        None
    }
}

/// Short password flags that mean "password" only after their own program (`-p` is a port
/// elsewhere): the program is a word whose base name is a known client, and its flags run
/// to the end of the command (`;`, `&&`, `||`, `|`).
fn program_passwords(args: &[&[u8]], all: &[(usize, Range<usize>)], out: &mut [Vec<Range<usize>>]) {
    let mut program = None;
    for (k, (i, w)) in all.iter().enumerate() {
        let arg = args[*i];
        let word = &arg[w.clone()];
        let base = word.rsplit(|&b| b == b'/').next().unwrap_or(word);
        if let Some(p) = short_password(base) {
            program = Some(p);
            continue;
        }
        if matches!(word, b";" | b"&&" | b"||" | b"|") {
            program = None;
            continue;
        }
        let Some(p) = program else { continue };
        let mut push = |j: usize, v: Range<usize>| {
            if !v.is_empty() && !is_variable_reference(&args[j][v.clone()]) {
                out[j].push(v);
            }
        };
        match p {
            ShortPassword::Attached(f) | ShortPassword::Either(f)
                if word.len() > 2 && word[0] == b'-' && word[1] == f =>
            {
                push(*i, unquote(arg, w.start + 2..w.end));
            }
            ShortPassword::Either(f) if word == [b'-', f] => {
                if let Some((j, v)) = next_value(args, all, k) {
                    push(j, v);
                }
            }
            ShortPassword::UserColonPassword => {
                let (j, v) = if word == b"-u" || word == b"--user" || word == b"--proxy-user" {
                    match next_value(args, all, k) {
                        Some(jv) => jv,
                        None => continue,
                    }
                } else if let Some(rest) = [&b"--user="[..], b"--proxy-user=", b"-u"]
                    .iter()
                    .find(|p| word.starts_with(p) && word.len() > p.len())
                {
                    (*i, unquote(arg, w.start + rest.len()..w.end))
                } else {
                    continue;
                };
                if let Some(colon) = args[j][v.clone()].iter().position(|&b| b == b':') {
                    push(j, v.start + colon + 1..v.end);
                }
            }
            _ => {}
        }
    }
}

/// End of an inline value: whitespace, a quote, or the end.
fn value_end(arg: &[u8], from: usize) -> usize {
    arg[from..]
        .iter()
        .position(|&b| b.is_ascii_whitespace() || is_quote(b))
        .map_or(arg.len(), |k| from + k)
}

fn skip_spaces(arg: &[u8], mut i: usize) -> usize {
    while i < arg.len() && (arg[i] == b' ' || arg[i] == b'\t') {
        i += 1;
    }
    i
}

/// `Authorization: Bearer x`, `X-Api-Key: x`, `Cookie: x`: the credential, up to a quote,
/// a newline or the end of the argument.
fn headers(arg: &[u8], out: &mut Vec<Range<usize>>) {
    const NAMES: [&[u8]; 8] = [
        b"authorization:",
        b"proxy-authorization:",
        b"x-api-key:",
        b"api-key:",
        b"x-auth-token:",
        b"private-token:",
        b"cookie:",
        b"x-goog-api-key:",
    ];
    const SCHEMES: [&[u8]; 8] = [
        b"bearer",
        b"basic",
        b"token",
        b"digest",
        b"bot",
        b"negotiate",
        b"ntlm",
        b"apikey",
    ];
    for name in NAMES {
        let mut from = 0;
        while let Some(at) = find_ci(arg, name, from) {
            from = at + name.len();
            let boundary = at == 0 || !(is_word_byte(arg[at - 1]) || arg[at - 1] == b'-');
            if !boundary {
                continue;
            }
            let mut v = skip_spaces(arg, at + name.len());
            let scheme_end = arg[v..]
                .iter()
                .position(|b| !b.is_ascii_alphabetic())
                .map_or(arg.len(), |k| v + k);
            if scheme_end < arg.len()
                && arg[scheme_end] == b' '
                && SCHEMES
                    .iter()
                    .any(|s| arg[v..scheme_end].eq_ignore_ascii_case(s))
            {
                v = skip_spaces(arg, scheme_end);
            }
            let end = arg[v..]
                .iter()
                .position(|&b| b == b'\n' || b == b'\r' || is_quote(b))
                .map_or(arg.len(), |k| v + k);
            let mut end = end;
            while end > v && arg[end - 1].is_ascii_whitespace() {
                end -= 1;
            }
            if end > v && !is_variable_reference(&arg[v..end]) {
                out.push(v..end);
            }
        }
    }
}

/// `Bearer x` anywhere.
fn bearer(arg: &[u8], out: &mut Vec<Range<usize>>) {
    let mut from = 0;
    while let Some(at) = find_ci(arg, b"bearer ", from) {
        from = at + 7;
        if at > 0 && is_word_byte(arg[at - 1]) {
            continue;
        }
        let v = skip_spaces(arg, at + 7);
        let end = value_end(arg, v);
        if end > v && !is_variable_reference(&arg[v..end]) {
            out.push(v..end);
        }
    }
}

/// `scheme://user:pass@host`: the user and the password (between `://` and the last `@` of
/// the authority), each on its own so that each is masked on its own.
fn url_credentials(arg: &[u8], out: &mut Vec<Range<usize>>, quiet: &mut Vec<Range<usize>>) {
    let mut from = 0;
    while let Some(k) = arg[from..].windows(3).position(|w| w == b"://") {
        let start = from + k + 3;
        from = start;
        let end = arg[start..]
            .iter()
            .position(|&b| {
                matches!(b, b'/' | b'?' | b'#' | b'<' | b'>')
                    || b.is_ascii_whitespace()
                    || is_quote(b)
            })
            .map_or(arg.len(), |k| start + k);
        if let Some(at) = arg[start..end].iter().rposition(|&b| b == b'@') {
            let userinfo = start..start + at;
            match arg[userinfo.clone()].iter().position(|&b| b == b':') {
                Some(colon) => {
                    // A long user name may be a token itself (`https://TOKEN:x-oauth-basic@`).
                    let user = userinfo.start..userinfo.start + colon;
                    if user.len() >= 16 {
                        out.push(user);
                    } else {
                        quiet.push(user);
                    }
                    out.push(userinfo.start + colon + 1..userinfo.end);
                }
                None => out.push(userinfo),
            }
        }
    }
}

/// `?token=x`, `&access_token=x`, `&sig=x` (signed URLs).
fn query_parameters(arg: &[u8], out: &mut Vec<Range<usize>>) {
    for (i, &b) in arg.iter().enumerate() {
        if b != b'?' && b != b'&' {
            continue;
        }
        let name_start = i + 1;
        let name_end = arg[name_start..]
            .iter()
            .position(|&c| !(is_word_byte(c) || c == b'-' || c == b'.'))
            .map_or(arg.len(), |k| name_start + k);
        if name_end >= arg.len() || arg[name_end] != b'=' || name_end == name_start {
            continue;
        }
        let name = &arg[name_start..name_end];
        let signed = name.eq_ignore_ascii_case(b"sig") || name.eq_ignore_ascii_case(b"signature");
        if !(signed || is_secret_name(name)) {
            continue;
        }
        let v = name_end + 1;
        let end = arg[v..]
            .iter()
            .position(|&c| c == b'&' || c == b'#' || c.is_ascii_whitespace() || is_quote(c))
            .map_or(arg.len(), |k| v + k);
        if end > v {
            out.push(v..end);
        }
    }
}

/// The end (exclusive) of a JSON string starting with the quote at `open`.
fn json_string_end(arg: &[u8], open: usize) -> Option<usize> {
    let mut i = open + 1;
    while i < arg.len() {
        match arg[i] {
            b'\\' => i += 2,
            b'"' => return Some(i),
            _ => i += 1,
        }
    }
    None
}

/// `"password": "x"` in inline JSON.
fn json_fields(arg: &[u8], out: &mut Vec<Range<usize>>) {
    let mut i = 0;
    while i < arg.len() {
        if arg[i] != b'"' {
            i += 1;
            continue;
        }
        let Some(name_end) = json_string_end(arg, i) else {
            break;
        };
        let name = &arg[i + 1..name_end];
        i = name_end + 1;
        let colon = skip_spaces(arg, i);
        if colon >= arg.len() || arg[colon] != b':' {
            continue;
        }
        let open = skip_spaces(arg, colon + 1);
        if open >= arg.len() || arg[open] != b'"' {
            continue;
        }
        // A key and its string value: step over both, so a value is never read as a key.
        let Some(close) = json_string_end(arg, open) else {
            break;
        };
        if is_secret_name(name) && close > open + 1 {
            out.push(open + 1..close);
        }
        i = close + 1;
    }
}

/// `NAME=value` inside a word (`[TOKEN=x]`, `A=1,PASSWORD=x`): the value up to the next
/// separator. (At the start of a word, [`assignment_value`] takes the whole rest.)
fn embedded_assignments(arg: &[u8], out: &mut Vec<Range<usize>>) {
    let name_byte = |b: u8| is_word_byte(b) || b == b'-' || b == b'.';
    for (e, _) in arg.iter().enumerate().filter(|(_, &b)| b == b'=') {
        let start = arg[..e]
            .iter()
            .rposition(|&b| !name_byte(b))
            .map_or(0, |k| k + 1);
        let name = &arg[start..e];
        if name.is_empty() || !is_secret_name(name) {
            continue;
        }
        let v = e + 1;
        let r = match arg.get(v) {
            Some(&q) if is_quote(q) => unquote(arg, v..arg.len()),
            Some(b'$') if arg.get(v + 1) == Some(&b'{') => {
                let end = arg[v..]
                    .iter()
                    .position(|&b| b == b'}')
                    .map_or(arg.len(), |k| v + k + 1);
                v..end
            }
            _ => {
                let end = arg[v..]
                    .iter()
                    .position(|&b| {
                        b.is_ascii_whitespace()
                            || is_quote(b)
                            || matches!(b, b',' | b';' | b'&' | b']' | b')' | b'}')
                    })
                    .map_or(arg.len(), |k| v + k);
                v..end
            }
        };
        if r.end > r.start && !is_variable_reference(&arg[r.clone()]) {
            out.push(r);
        }
    }
}

/// A token format: its prefix, the bytes that may follow, and how many must.
struct Shape {
    prefix: &'static [u8],
    extra: &'static [u8],
    min: usize,
    max: usize,
}

const SHAPES: [Shape; 19] = [
    Shape {
        prefix: b"ghp_",
        extra: b"",
        min: 20,
        max: 255,
    },
    Shape {
        prefix: b"gho_",
        extra: b"",
        min: 20,
        max: 255,
    },
    Shape {
        prefix: b"ghu_",
        extra: b"",
        min: 20,
        max: 255,
    },
    Shape {
        prefix: b"ghs_",
        extra: b"",
        min: 20,
        max: 255,
    },
    Shape {
        prefix: b"ghr_",
        extra: b"",
        min: 20,
        max: 255,
    },
    Shape {
        prefix: b"github_pat_",
        extra: b"_",
        min: 20,
        max: 255,
    },
    Shape {
        prefix: b"glpat-",
        extra: b"_-",
        min: 20,
        max: 255,
    },
    Shape {
        prefix: b"xoxb-",
        extra: b"-",
        min: 10,
        max: 255,
    },
    Shape {
        prefix: b"xoxp-",
        extra: b"-",
        min: 10,
        max: 255,
    },
    Shape {
        prefix: b"xoxa-",
        extra: b"-",
        min: 10,
        max: 255,
    },
    Shape {
        prefix: b"xoxs-",
        extra: b"-",
        min: 10,
        max: 255,
    },
    Shape {
        prefix: b"xapp-",
        extra: b"-",
        min: 10,
        max: 255,
    },
    Shape {
        prefix: b"AKIA",
        extra: b"",
        min: 16,
        max: 16,
    },
    Shape {
        prefix: b"ASIA",
        extra: b"",
        min: 16,
        max: 16,
    },
    Shape {
        prefix: b"npm_",
        extra: b"",
        min: 36,
        max: 255,
    },
    Shape {
        prefix: b"pypi-",
        extra: b"_-",
        min: 50,
        max: 1000,
    },
    Shape {
        prefix: b"sk-",
        extra: b"_-",
        min: 20,
        max: 255,
    },
    Shape {
        prefix: b"sk_live_",
        extra: b"",
        min: 16,
        max: 255,
    },
    Shape {
        prefix: b"AIza",
        extra: b"_-",
        min: 35,
        max: 35,
    },
];

/// Well-known token formats, at a word boundary, whole token redacted.
fn token_shapes(arg: &[u8], out: &mut Vec<Range<usize>>) {
    for shape in &SHAPES {
        let mut from = 0;
        while let Some(k) = arg[from..]
            .windows(shape.prefix.len())
            .position(|w| w == shape.prefix)
        {
            let at = from + k;
            from = at + shape.prefix.len();
            if at > 0 && is_word_byte(arg[at - 1]) {
                continue;
            }
            let body = from;
            let end = arg[body..]
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || shape.extra.contains(b)))
                .map_or(arg.len(), |k| body + k);
            let n = end - body;
            if n >= shape.min && n <= shape.max {
                out.push(at..end);
                from = end;
            }
        }
    }
    jwts(arg, out);
}

/// `eyJ….eyJ….sig`: a JSON Web Token (header and payload are base64url JSON objects).
fn jwts(arg: &[u8], out: &mut Vec<Range<usize>>) {
    let b64 = |b: &u8| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_';
    let mut from = 0;
    while let Some(k) = arg[from..].windows(3).position(|w| w == b"eyJ") {
        let at = from + k;
        from = at + 3;
        if at > 0 && is_word_byte(arg[at - 1]) {
            continue;
        }
        let mut end = at;
        let mut parts = 0;
        loop {
            let run = arg[end..].iter().take_while(|b| b64(b)).count();
            if run == 0 {
                break;
            }
            parts += 1;
            end += run;
            if parts == 3 || end >= arg.len() || arg[end] != b'.' {
                break;
            }
            end += 1;
        }
        if parts == 3 && end - at >= 30 {
            out.push(at..end);
            from = end;
        }
    }
}

/// A PEM private key pasted into an argument.
fn private_keys(arg: &[u8], out: &mut Vec<Range<usize>>) {
    let mut from = 0;
    while let Some(k) = arg[from..].windows(10).position(|w| w == b"-----BEGIN") {
        let at = from + k;
        let line_end = arg[at..]
            .iter()
            .position(|&b| b == b'\n')
            .map_or(arg.len(), |k| at + k);
        from = at + 10;
        if !contains(&arg[at..line_end], b"PRIVATE KEY") {
            continue;
        }
        let end = match arg[at..].windows(8).position(|w| w == b"-----END") {
            Some(k) => {
                let e = at + k + 8;
                arg[e..]
                    .windows(5)
                    .position(|w| w == b"-----")
                    .map_or(arg.len(), |k| e + k + 5)
            }
            None => arg.len(),
        };
        out.push(at..end);
        from = end;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn argv(args: &[&str]) -> Argv {
        args.iter().collect()
    }

    /// Redacts `args` and returns the result joined by spaces, plus the masked values.
    fn red(args: &[&str]) -> (String, Vec<String>) {
        let mut s = Secrets::default();
        let out = redact_argv(&argv(args), &mut s);
        let text = out.join_lossy();
        (text, s.values.into_iter().collect())
    }

    fn r(args: &[&str]) -> String {
        red(args).0
    }

    #[test]
    fn flags_with_separate_and_attached_values() {
        assert_eq!(
            r(&["mysql", "--user", "root", "--password", "hunter2", "db"]),
            "mysql --user root --password *** db"
        );
        assert_eq!(r(&["app", "--password=hunter2"]), "app --password=***");
        assert_eq!(r(&["gh", "--token", "abc123"]), "gh --token ***");
        assert_eq!(r(&["svc", "--api-key", "k-1"]), "svc --api-key ***");
        assert_eq!(r(&["svc", "--api_key=k-1"]), "svc --api_key=***");
        assert_eq!(r(&["svc", "--apiKey", "k-1"]), "svc --apiKey ***");
        assert_eq!(
            r(&["redis-server", "--requirepass", "s3cr3t", "--port", "6379"]),
            "redis-server --requirepass *** --port 6379"
        );
        assert_eq!(r(&["x", "--client-secret", "abc"]), "x --client-secret ***");
        // A value with spaces is one argv element: all of it goes.
        assert_eq!(
            r(&["x", "--passphrase", "correct horse"]),
            "x --passphrase ***"
        );
    }

    #[test]
    fn short_password_flags_of_the_usual_clients() {
        assert_eq!(
            r(&["mysql", "-uroot", "-phunter2", "db"]),
            "mysql -uroot -p*** db"
        );
        assert_eq!(
            r(&["/usr/bin/mysqldump", "-p", "db"]),
            "/usr/bin/mysqldump -p db",
            "-p alone prompts; the next word is the database"
        );
        assert_eq!(r(&["mysql", "--password=hunter2"]), "mysql --password=***");
        assert_eq!(
            r(&["sshpass", "-p", "hunter2", "ssh", "h"]),
            "sshpass -p *** ssh h"
        );
        assert_eq!(
            r(&["sshpass", "-phunter2", "ssh", "h"]),
            "sshpass -p*** ssh h"
        );
        assert_eq!(
            r(&["redis-cli", "-a", "hunter2", "ping"]),
            "redis-cli -a *** ping"
        );
        assert_eq!(
            r(&["redis-cli", "--pass", "hunter2"]),
            "redis-cli --pass ***"
        );
        assert_eq!(r(&["curl", "-u", "bob:hunter2", "u"]), "curl -u bob:*** u");
        assert_eq!(r(&["curl", "--user", "bob:hunter2"]), "curl --user bob:***");
        assert_eq!(r(&["curl", "--user=bob:hunter2"]), "curl --user=bob:***");
        assert_eq!(r(&["curl", "-ubob:hunter2"]), "curl -ubob:***");
        assert_eq!(
            r(&["curl", "-u", "bob"]),
            "curl -u bob",
            "no password: curl prompts"
        );
        assert_eq!(
            r(&["psql", "postgresql://app:hunter2@db:5432/x"]),
            "psql postgresql://***:***@db:5432/x"
        );
        assert_eq!(r(&["gh", "--token", "hunter2"]), "gh --token ***");
        assert_eq!(
            r(&["docker", "run", "-e", "PASSWORD=hunter2", "img"]),
            "docker run -e PASSWORD=*** img"
        );
        // Inside a shell script, up to the end of the client's command only.
        assert_eq!(
            r(&["sh", "-c", "mysql -phunter2 db && nc -p 80 h"]),
            "sh -c mysql -p*** db && nc -p 80 h"
        );
        // Elsewhere `-p` and `-a` are not passwords.
        assert_eq!(r(&["ssh", "-p", "2222", "h"]), "ssh -p 2222 h");
        assert_eq!(r(&["ls", "-a", "x"]), "ls -a x");
        let (_, masked) = red(&["sshpass", "-p", "hunter2", "ssh"]);
        assert_eq!(masked, vec!["hunter2"]);
    }

    #[test]
    fn companions_and_booleans_are_not_secrets() {
        assert_eq!(
            r(&["x", "--token-file", "/run/secrets/t", "--password-stdin"]),
            "x --token-file /run/secrets/t --password-stdin"
        );
        // A flag followed by another flag takes no value.
        assert_eq!(
            r(&["docker", "login", "--password", "--username", "u"]),
            "docker login --password --username u"
        );
        assert_eq!(
            r(&["x", "PWD=/home/u", "OLDPWD=/"]),
            "x PWD=/home/u OLDPWD=/"
        );
        assert_eq!(
            r(&["x", "--port", "8000", "-p", "80"]),
            "x --port 8000 -p 80"
        );
        assert_eq!(
            r(&["llm", "--tokenizer", "gpt2", "--max-tokens", "100"]),
            "llm --tokenizer gpt2 --max-tokens 100"
        );
    }

    #[test]
    fn assignments() {
        assert_eq!(
            r(&[
                "env",
                "GITHUB_TOKEN=ghx",
                "AWS_SECRET_ACCESS_KEY=abc",
                "HOME=/root"
            ]),
            "env GITHUB_TOKEN=*** AWS_SECRET_ACCESS_KEY=*** HOME=/root"
        );
        assert_eq!(
            r(&[
                "docker",
                "run",
                "-e",
                "DB_PASSWORD=pw",
                "--env=API_KEY=k",
                "img"
            ]),
            "docker run -e DB_PASSWORD=*** --env=API_KEY=*** img"
        );
        assert_eq!(
            r(&["docker", "build", "--build-arg", "NPM_TOKEN=abc", "."]),
            "docker build --build-arg NPM_TOKEN=*** ."
        );
        for key in [
            "PASSWD",
            "PRIVATE_KEY",
            "ACCESS_KEY",
            "CREDENTIALS",
            "DB_PASS",
            "SECRET",
        ] {
            assert_eq!(r(&[&format!("{key}=v1")]), format!("{key}=***"), "{key}");
        }
        // A variable reference is not a secret, and its name helps.
        assert_eq!(r(&["TOKEN=$GITHUB_TOKEN"]), "TOKEN=$GITHUB_TOKEN");
        assert_eq!(r(&["TOKEN=${GH}"]), "TOKEN=${GH}");
        assert_eq!(r(&["TOKEN="]), "TOKEN=");
        // Inside a word, the value ends at the next separator.
        assert_eq!(
            r(&["--set-env-vars=A=1,DB_PASSWORD=pw,B=2"]),
            "--set-env-vars=A=1,DB_PASSWORD=***,B=2"
        );
    }

    #[test]
    fn shell_scripts_in_one_argument() {
        assert_eq!(
            r(&[
                "bash",
                "-c",
                "export API_TOKEN=\"abc def\"; ./server --password 'pw 1' --port 9 &"
            ]),
            "bash -c export API_TOKEN=\"***\"; ./server --password '***' --port 9 &"
        );
        assert_eq!(
            r(&[
                "sh",
                "-c",
                "curl -H 'Authorization: Bearer abc.def' https://api"
            ]),
            "sh -c curl -H 'Authorization: Bearer ***' https://api"
        );
    }

    #[test]
    fn headers_and_bearer() {
        assert_eq!(
            r(&[
                "curl",
                "-H",
                "Authorization: token ghx123",
                "https://api.github.com"
            ]),
            "curl -H Authorization: token *** https://api.github.com"
        );
        assert_eq!(
            r(&["curl", "-H", "authorization:Basic dXNlcjpwYXNz"]),
            "curl -H authorization:Basic ***"
        );
        assert_eq!(
            r(&["curl", "-H", "X-Api-Key: k1"]),
            "curl -H X-Api-Key: ***"
        );
        assert_eq!(
            r(&["curl", "--header=Cookie: session=abc; x=y"]),
            "curl --header=Cookie: ***"
        );
        assert_eq!(r(&["http", "Bearer xyz", "url"]), "http Bearer *** url");
        assert_eq!(
            r(&["x", "Proxy-Authorization: Basic abc"]),
            "x Proxy-Authorization: Basic ***"
        );
    }

    #[test]
    fn urls() {
        assert_eq!(
            r(&["git", "clone", "https://user:pass@github.com/o/r.git"]),
            "git clone https://***:***@github.com/o/r.git"
        );
        assert_eq!(
            r(&["git", "push", "https://x-access-token:ghs_x@github.com/o/r"]),
            "git push https://***:***@github.com/o/r"
        );
        assert_eq!(
            r(&["psql", "postgresql://app:pw@db:5432/app"]),
            "psql postgresql://***:***@db:5432/app"
        );
        assert_eq!(
            r(&["curl", "https://h/p?x=1&access_token=abc&y=2#f"]),
            "curl https://h/p?x=1&access_token=***&y=2#f"
        );
        assert_eq!(
            r(&["az", "https://a.blob.core.windows.net/c?sv=1&sig=abc%2B"]),
            "az https://a.blob.core.windows.net/c?sv=1&sig=***"
        );
        // No credentials: untouched.
        assert_eq!(
            r(&["curl", "https://example.com/a@b"]),
            "curl https://example.com/a@b"
        );
        assert_eq!(r(&["git", "git@github.com:o/r"]), "git git@github.com:o/r");
    }

    #[test]
    fn token_shapes_anywhere() {
        let ghp = "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789";
        let pat = "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz";
        let cases = [
            (format!("--header={ghp}"), "--header=***".to_owned()),
            (format!("x{ghp}"), format!("x{ghp}")), // not at a word boundary
            (pat.to_owned(), "***".to_owned()),
            ("xoxb-1234567890-abcdefghij".into(), "***".into()),
            ("aws=AKIAIOSFODNN7EXAMPLE,".into(), "aws=***,".into()),
            ("AKIASHORT".into(), "AKIASHORT".into()),
            ("glpat-abcdefghijklmnopqrst".into(), "***".into()),
            (
                "npm_abcdefghijklmnopqrstuvwxyz0123456789".into(),
                "***".into(),
            ),
            ("sk-proj-abcdefghijklmnopqrstuv".into(), "***".into()),
            (
                "AIzaSyA-abcdefghijklmnopqrstuvwxyz12345".into(),
                "***".into(),
            ),
            (
                "jwt=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJlX2hlcmU".into(),
                "jwt=***".into(),
            ),
        ];
        for (input, want) in cases {
            assert_eq!(r(&["cmd", &input]), format!("cmd {want}"), "{input}");
        }
    }

    #[test]
    fn json_and_private_keys() {
        assert_eq!(
            r(&[
                "app",
                "--config",
                r#"{"a": "b", "api_key": "k1", "port": 8000, "token":"t\"2"}"#
            ]),
            r#"app --config {"a": "b", "api_key": "***", "port": 8000, "token":"***"}"#
        );
        let pem =
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaA\n-----END OPENSSH PRIVATE KEY-----";
        assert_eq!(r(&["ssh-add", pem]), "ssh-add ***");
        let cert = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----";
        assert_eq!(r(&["x", cert]), format!("x {cert}"));
    }

    #[test]
    fn real_command_lines_stay_readable() {
        // Nothing secret: nothing changes.
        let plain = [
            "python",
            "-m",
            "uvicorn",
            "prefect.server.api.server:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            "8123",
            "--log-level",
            "error",
            "--lifespan",
            "on",
        ];
        assert_eq!(r(&plain), plain.join(" "));
        let npm = [
            "node",
            "/repo/node_modules/.bin/vite",
            "--port",
            "5173",
            "--strictPort",
        ];
        assert_eq!(r(&npm), npm.join(" "));
        let xdist = [
            "/home/runner/work/p/.venv/bin/python",
            "-c",
            "import sys;exec(eval(sys.stdin.readline()))",
        ];
        assert_eq!(r(&xdist), xdist.join(" "));
    }

    #[test]
    fn values_are_collected_for_masking_and_redaction_is_idempotent() {
        let (text, values) = red(&[
            "app",
            "--token",
            "abcd1234",
            "DB_PASS=x",
            "https://u:pw12@h/",
        ]);
        assert_eq!(text, "app --token *** DB_PASS=*** https://***:***@h/");
        assert_eq!(values, vec!["abcd1234", "pw12", "x"]);
        let (_, values) = red(&[
            "git",
            "https://0123456789abcdef0123:x-oauth-basic@github.com/",
        ]);
        assert_eq!(values, vec!["0123456789abcdef0123", "x-oauth-basic"]);
        let mut s = Secrets::default();
        s.add(b"x");
        s.add(b"abcd1234");
        assert_eq!(s.to_mask().collect::<Vec<_>>(), vec!["abcd1234"]);
        assert_eq!(format!("{s:?}"), "Secrets(2 values)");
        let (again, more) = red(&["app", "--token", "***", "DB_PASS=***", "https://***:***@h/"]);
        assert_eq!(again, text);
        assert!(more.is_empty(), "{more:?}");
    }

    #[test]
    fn non_utf8_arguments_are_redacted_as_bytes() {
        let mut s = Secrets::default();
        let out = redact_argv(
            &[&b"--password"[..], &[0xff, b'p', 0xfe]]
                .into_iter()
                .collect(),
            &mut s,
        );
        assert_eq!(out.get(1), Some(&b"***"[..]));
        let out = redact_argv(
            &[[0xff, b' ', b'T', b'O', b'K', b'E', b'N', b'=', 0xfe]]
                .into_iter()
                .collect(),
            &mut s,
        );
        assert_eq!(
            out.get(0),
            Some(&[0xff, b' ', b'T', b'O', b'K', b'E', b'N', b'=', b'*', b'*', b'*'][..])
        );
    }

    #[test]
    fn snapshots_are_redacted_in_place() {
        let mut p = crate::test_support::proc_at(10, 1, 0);
        p.argv = argv(&["srv", "--token", "abcdef"]);
        p.markers.set(
            "PYTEST_CURRENT_TEST",
            "t.py::test[TOKEN=zzzz] (call)".into(),
        );
        let mut snap = crate::test_support::snapshot_of(vec![p], 0);
        let s = redact_snapshot(&mut snap);
        assert_eq!(snap.processes[0].command_line(), "srv --token ***");
        assert_eq!(
            snap.processes[0].markers.pytest_current_test(),
            Some("t.py::test[TOKEN=***] (call)")
        );
        assert_eq!(s.len(), 2);
    }
}
