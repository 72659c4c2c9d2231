//! Leak signatures: leaked processes grouped by their command line with the parts that
//! change from run to run masked (numbers, temp paths, hashes, UUIDs, redacted secrets), so
//! that 82 Prefect servers on 82 ports read as one line:
//! `82 × python -m uvicorn prefect.server.api.server:create_app --port <N>`.
//!
//! Pure: report processes in, [`Signature`]s out. The masked command is also the basis of
//! the `--allow` pattern a report suggests, built alongside it so that the pattern matches
//! every raw command line the signature stands for (placeholders become `*`).

use std::collections::{BTreeMap, BTreeSet};

use sha2::{Digest, Sha256};

use crate::classify::Rule;
use crate::kill::Fate;
use crate::redact::MASK;

use super::json::{FateTally, ReportProcess, Signature, SignatureClass, Tally};

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

/// The TCP/UDP port of a listening-socket label (`tcp 127.0.0.1:8000`, `tcp [::1]:80`).
pub fn port_of(label: &str) -> Option<u16> {
    let (proto, addr) = label.split_once(' ')?;
    if proto != "tcp" && proto != "udp" {
        return None;
    }
    addr.rsplit_once(':')?.1.parse().ok()
}

/// The kebab-case name of a fate, as it appears in the JSON (`terminated`, `killed`, ...).
pub fn fate_tag(f: Option<&Fate>) -> &'static str {
    match f {
        None => "not-signalled",
        Some(Fate::Terminated { .. }) => "terminated",
        Some(Fate::Killed { .. }) => "killed",
        Some(Fate::AlreadyGone) => "already-gone",
        Some(Fate::NotPermitted) => "not-permitted",
        Some(Fate::Unkillable { .. }) => "unkillable",
        Some(Fate::Survived { .. }) => "survived",
        Some(Fate::Failed { .. }) => "failed",
        Some(Fate::WouldKill) => "would-kill",
        Some(Fate::DeadlinePassed) => "deadline-passed",
    }
}

fn after_ms(f: Option<&Fate>) -> Option<u64> {
    match f {
        Some(Fate::Terminated { after_ms } | Fate::Killed { after_ms }) => Some(*after_ms),
        _ => None,
    }
}

fn tally(values: impl Iterator<Item = String>) -> Vec<Tally> {
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    for v in values {
        *counts.entry(v).or_default() += 1;
    }
    let mut out: Vec<Tally> = counts
        .into_iter()
        .map(|(value, count)| Tally { value, count })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.value.cmp(&b.value)));
    out
}

/// A pattern must say something: one with fewer than this many letters or digits would
/// accept far more than the leak it was suggested for.
const MIN_PATTERN_LITERALS: usize = 3;

/// Groups the processes worth reporting by class and masked command line; ranked: failing
/// leaks first, then unattributed, then allowed; within each, most processes first.
pub fn compute(processes: &[ReportProcess]) -> Vec<Signature> {
    let mut groups: BTreeMap<(SignatureClass, String), (Normalized, Vec<&ReportProcess>)> =
        BTreeMap::new();
    for p in processes {
        let Some(rank) = SignatureClass::of(&p.class) else {
            continue;
        };
        let argv: Vec<String> = if p.argv.is_empty() {
            vec![format!("[{}]", p.comm.lossy())]
        } else {
            p.argv.iter().map(|a| a.lossy().into_owned()).collect()
        };
        let n = normalize(&argv);
        groups
            .entry((rank, n.display.clone()))
            .or_insert_with(|| (n, Vec::new()))
            .1
            .push(p);
    }
    let mut out: Vec<Signature> = groups
        .into_iter()
        .map(|((rank, command), (n, members))| {
            let mut pids: Vec<i32> = members.iter().map(|p| p.pid).collect();
            pids.sort_unstable();
            let listening: BTreeSet<&str> = members
                .iter()
                .flat_map(|p| p.listening.iter().map(String::as_str))
                .collect();
            let ports: BTreeSet<u16> = listening.iter().filter_map(|l| port_of(l)).collect();
            let evidence: BTreeSet<Rule> = members
                .iter()
                .flat_map(|p| p.evidence.iter().copied())
                .collect();
            let mut fates: BTreeMap<&'static str, (usize, Option<u64>)> = BTreeMap::new();
            for p in &members {
                let e = fates.entry(fate_tag(p.fate.as_ref())).or_default();
                e.0 += 1;
                e.1 = e.1.max(after_ms(p.fate.as_ref()));
            }
            let mut fates: Vec<FateTally> = fates
                .into_iter()
                .map(|(fate, (count, max_after_ms))| FateTally {
                    fate: fate.into(),
                    count,
                    max_after_ms,
                })
                .collect();
            fates.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.fate.cmp(&b.fate)));
            let literals = n.pattern.chars().filter(|c| c.is_alphanumeric()).count();
            let allow_pattern = if literals >= MIN_PATTERN_LITERALS {
                n.pattern.clone()
            } else {
                format!("comm:{}", members[0].comm.lossy())
            };
            Signature {
                id: signature_id(&command),
                class: rank,
                count: members.len(),
                pids,
                ports: ports.into_iter().collect(),
                listening: listening.into_iter().map(str::to_owned).collect(),
                steps: tally(
                    members
                        .iter()
                        .filter_map(|p| p.markers.github_action.clone()),
                ),
                tests: tally(
                    members
                        .iter()
                        .filter_map(|p| p.markers.pytest_current_test.clone()),
                ),
                xdist_workers: tally(
                    members
                        .iter()
                        .filter_map(|p| p.markers.pytest_xdist_worker.clone()),
                )
                .into_iter()
                .map(|t| t.value)
                .collect(),
                evidence: evidence.into_iter().collect(),
                fates,
                allow_pattern,
                command,
                gate: None,
            }
        })
        .collect();
    // Most processes first; among equals, the one that started first (a parent before
    // its children).
    out.sort_by(|a, b| {
        let rank = |s: &Signature| s.class;
        rank(a)
            .cmp(&rank(b))
            .then_with(|| b.count.cmp(&a.count))
            .then_with(|| a.pids.first().cmp(&b.pids.first()))
            .then_with(|| a.command.cmp(&b.command))
    });
    out
}

/// Ports as ranges: `8000–8002, 9000`.
pub fn port_ranges(ports: &[u16]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < ports.len() {
        let mut j = i;
        while j + 1 < ports.len() && u32::from(ports[j + 1]) == u32::from(ports[j]) + 1 {
            j += 1;
        }
        out.push(if j > i + 1 {
            format!("{}–{}", ports[i], ports[j])
        } else if j == i + 1 {
            format!("{}, {}", ports[i], ports[j])
        } else {
            ports[i].to_string()
        });
        i = j + 1;
    }
    out.join(", ")
}

/// How a signature's processes ended, in a few words: `80 TERM in ≤0.2 s, 2 KILL after
/// 5.0 s grace`.
pub fn describe_fates(fates: &[FateTally]) -> String {
    let total: usize = fates.iter().map(|f| f.count).sum();
    fates
        .iter()
        .map(|f| {
            let t = f.max_after_ms.map(seconds).unwrap_or_default();
            let le = if f.count > 1 { "≤" } else { "" };
            let what = match f.fate.as_str() {
                "terminated" => format!("TERM, exited in {le}{t}"),
                "killed" => format!("KILL after {t} grace"),
                "already-gone" => "already gone".into(),
                "not-permitted" => "not ours to kill (EPERM)".into(),
                "unkillable" => "unkillable (uninterruptible sleep)".into(),
                "survived" => "survived SIGKILL".into(),
                "failed" => "signal failed".into(),
                "would-kill" => "would be killed (dry run)".into(),
                "deadline-passed" => "not signalled: deadline passed".into(),
                _ => "not signalled".into(),
            };
            if total > 1 {
                format!("{} {what}", f.count)
            } else {
                what
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn seconds(ms: u64) -> String {
    if ms < 100 {
        format!("{ms} ms")
    } else {
        format!("{:.1} s", ms as f64 / 1000.0)
    }
}

/// A step id (`GITHUB_ACTION`) for people: its name when the report has one, else what
/// the runner's generated ids mean (`__run_2` is the second `run:` step without an `id:`).
/// A signature's steps as people read them (names where known), with their counts.
pub fn described_steps(
    steps: &[super::json::Tally],
    names: &BTreeMap<String, String>,
) -> Vec<super::json::Tally> {
    steps
        .iter()
        .map(|t| super::json::Tally {
            value: describe_step(&t.value, names),
            count: t.count,
        })
        .collect()
}

pub fn describe_step(id: &str, names: &BTreeMap<String, String>) -> String {
    if let Some(name) = names.get(id) {
        return format!("{name} ({id})");
    }
    if id == "__run" {
        return format!("{id} (a run step without an id)");
    }
    if let Some(n) = id
        .strip_prefix("__run_")
        .and_then(|n| n.parse::<u32>().ok())
    {
        return format!("{id} (run step #{n} without an id)");
    }
    if id.starts_with("__") {
        return format!("{id} (an action step)");
    }
    id.to_owned()
}

/// A one-line list with the most frequent first: `a (3), b, and 2 more`; counts only when
/// there is more than one value.
pub fn describe_tallies(t: &[Tally], max: usize) -> String {
    let mut parts: Vec<String> = t
        .iter()
        .take(max)
        .map(|x| {
            if x.count > 1 && t.len() > 1 {
                format!("{} ({})", x.value, x.count)
            } else {
                x.value.clone()
            }
        })
        .collect();
    if t.len() > max {
        parts.push(format!("and {} more", t.len() - max));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::classify::Pattern;
    use crate::test_support::proc_at;

    fn norm(args: &[&str]) -> Normalized {
        normalize(&args.iter().map(|a| a.to_string()).collect::<Vec<_>>())
    }

    /// The pattern of `args` matches the raw process it came from.
    fn assert_pattern_matches(raw: &[&str], n: &Normalized) {
        let mut p = proc_at(10, 1, 0);
        p.argv = raw.iter().map(|a| crate::model::Bytes::from(*a)).collect();
        let pat = Pattern::parse(&n.pattern).unwrap();
        assert!(pat.matches(&p), "{:?} does not match {raw:?}", n.pattern);
    }

    #[test]
    fn run_specific_parts_are_masked() {
        let cases: [(&[&str], &str); 10] = [
            (
                &["/venv/bin/python", "-m", "uvicorn", "app:create", "--port", "8123"],
                "python -m uvicorn app:create --port <N>",
            ),
            (
                &["node", "server.js", "--listen=127.0.0.1:40123"],
                "node server.js --listen=127.0.0.1:<N>",
            ),
            (
                &["python3.12", "-c", "from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=5, pipe_handle=7)"],
                "python3.12 -c from multiprocessing.spawn import spawn_main; spawn_main(tracker_fd=<N>, pipe_handle=<N>)",
            ),
            (
                &["redis-server", "--unixsocket", "/tmp/pytest-of-runner/pytest-3/test_a0/redis.sock"],
                "redis-server --unixsocket <tmp>/redis.sock",
            ),
            (&["sqlite3", "/tmp/tmpk2j3l4x_"], "sqlite3 <tmp>"),
            (
                &["app", "--db=sqlite:////home/runner/work/_temp/9f8e/app.db"],
                "app --db=sqlite:<tmp>/app.db",
            ),
            (
                &["worker", "--id", "3f2b8c1e-0d4a-4b6e-9a7c-1e2f3a4b5c6d", "--sha", "a94a8fe5ccb19ba61c4c0873d391e987982fbbd3"],
                "worker --id <uuid> --sha <hash>",
            ),
            (&["java", "-Xmx512m", "-jar", "app-1.2.3.jar"], "java -Xmx512m -jar app-1.2.3.jar"),
            (&["app", "--token", "***", "x"], "app --token *** x"),
            (&["sleep", "3600"], "sleep <N>"),
        ];
        for (raw, want) in cases {
            let n = norm(raw);
            assert_eq!(n.display, want, "{raw:?}");
            if !raw.contains(&"***") {
                assert_pattern_matches(raw, &n);
            }
        }
    }

    #[test]
    fn hostile_bytes_are_shown_escaped_and_still_matched() {
        let raw = ["sh", "-c", "a\r\nb\x1b[31m", "\u{fffd}x"];
        let n = norm(&raw);
        assert_eq!(n.display, "sh -c a\\x0d\\x0ab\\x1b[31m \u{fffd}x");
        assert_eq!(n.pattern, "sh -c a??b?[31m *x");
        assert_pattern_matches(&raw, &n);
    }

    #[test]
    fn patterns_that_say_nothing_fall_back_to_the_name() {
        let mut p = proc_at(10, 1, 0);
        p.argv = vec!["12345".into()];
        let report_process = crate::report::json::ReportProcess {
            pid: 10,
            start_ticks: 0,
            ppid: 1,
            pgid: 10,
            sid: 10,
            uid: None,
            comm: "srv".into(),
            argv: vec!["/x/9".into(), "1".into()],
            exe: None,
            cwd: None,
            markers: Default::default(),
            class: crate::classify::Class::Job,
            evidence: vec![],
            marked_by: None,
            hints: vec![],
            fate: None,
            round: 1,
            listening: vec![],
        };
        let s = compute(&[report_process]);
        assert_eq!(s[0].allow_pattern, "comm:srv");
    }

    #[test]
    fn ranges_fates_and_steps_read_well() {
        assert_eq!(
            port_ranges(&[8000, 8001, 8002, 8004, 8005, 9000]),
            "8000–8002, 8004, 8005, 9000"
        );
        assert_eq!(port_ranges(&[]), "");
        assert_eq!(
            describe_fates(&[
                FateTally {
                    fate: "terminated".into(),
                    count: 80,
                    max_after_ms: Some(180)
                },
                FateTally {
                    fate: "killed".into(),
                    count: 2,
                    max_after_ms: Some(5000)
                },
            ]),
            "80 TERM, exited in ≤0.2 s, 2 KILL after 5.0 s grace"
        );
        assert_eq!(
            describe_fates(&[FateTally {
                fate: "unkillable".into(),
                count: 1,
                max_after_ms: None
            }]),
            "unkillable (uninterruptible sleep)"
        );
        let names = BTreeMap::from([("__run_3".to_string(), "Run tests".to_string())]);
        assert_eq!(describe_step("__run_3", &names), "Run tests (__run_3)");
        assert_eq!(
            describe_step("__run_2", &names),
            "__run_2 (run step #2 without an id)"
        );
        assert_eq!(
            describe_step("__actions_setup-python", &names),
            "__actions_setup-python (an action step)"
        );
        assert_eq!(describe_step("tests", &names), "tests");
        assert_eq!(port_of("tcp [::1]:80"), Some(80));
        assert_eq!(port_of("unix /tmp/a:1"), None);
        assert_eq!(signature_id("sleep <N>").len(), 12);
    }
}
