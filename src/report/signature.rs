//! Leak signatures: leaked processes grouped by their command line with the parts that
//! change from run to run masked (numbers, temp paths, hashes, UUIDs, redacted secrets), so
//! that 82 Prefect servers on 82 ports read as one line:
//! `82 × python -m uvicorn prefect.server.api.server:create_app --port <N>`.
//!
//! Pure: report processes in, [`Signature`]s out. The masked command is also the basis of
//! the `--allow` pattern a report suggests, built alongside it so that the pattern matches
//! every raw command line the signature stands for (placeholders become `*`).

use std::collections::{BTreeMap, BTreeSet};

use crate::classify::{Flags, Rule};
use crate::kill::Fate;
pub(crate) use crate::signature::{normalize, signature_id, Normalized};

use super::json::{FateTally, ReportProcess, Signature, SignatureClass, Tally};

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
            p.argv.lossy_args()
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
            let evidence: Flags<Rule> = members.iter().flat_map(|p| p.evidence.iter()).collect();
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
                        .filter_map(|p| p.markers.get("GITHUB_ACTION").map(str::to_owned)),
                ),
                tests: tally(
                    members
                        .iter()
                        .filter_map(|p| p.markers.get("PYTEST_CURRENT_TEST").map(str::to_owned)),
                ),
                xdist_workers: tally(
                    members
                        .iter()
                        .filter_map(|p| p.markers.get("PYTEST_XDIST_WORKER").map(str::to_owned)),
                )
                .into_iter()
                .map(|t| t.value)
                .collect(),
                evidence: evidence.to_vec(),
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
        p.argv = ["12345"].into();
        let report_process = crate::report::json::ReportProcess {
            pid: 10,
            start_ticks: 0,
            ppid: 1,
            pgid: 10,
            sid: 10,
            uid: None,
            comm: "srv".into(),
            argv: ["/x/9", "1"].into(),
            exe: None,
            cwd: None,
            markers: Default::default(),
            class: crate::classify::Class::Job,
            evidence: Default::default(),
            marked_by: None,
            hints: Default::default(),
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
