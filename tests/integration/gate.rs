//! Leak-regression gating end to end on real leaks: `run` writes a report, `known-leaks
//! write|update` turns it into a file, `--known-leaks FILE --fail-on new` fails on new
//! leaks only, and `diff-reports` compares two real reports.

use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::janitor::{janitor, output_of};
use crate::support::{serial, ScratchDir};

/// The leaks a test run may leave, each its own signature once masked (no interpreter:
/// a version manager's shim would show up as a leak of its own).
const SLEEP: &str = "sleep 3601";
const TAIL: &str = "tail -f /dev/null";
const PYTHON: &str = "tail -n0 -F /dev/null";
const CAT: &str = "tail -c0 -f /dev/null";

/// `ci-janitor run` of a shell that leaves `leaks` (each once) and returns when all of
/// them have exec'd; the report goes to `report`. Extra flags go before `--`.
fn run_leaking(dir: &Path, leaks: &[&str], report: &Path, extra: &[&str]) -> i32 {
    let mut script = String::new();
    let mut checks = Vec::new();
    for (i, l) in leaks.iter().enumerate() {
        script.push_str(&format!("{l} >/dev/null 2>&1 & p{i}=$!\n"));
        let word = l.split_whitespace().next().unwrap_or("");
        checks.push(format!("grep -qa '^{word}' /proc/$p{i}/cmdline"));
    }
    script.push_str(&format!(
        "for _ in $(seq 1 400); do {} && exit 0; sleep 0.025; done; exit 0\n",
        if checks.is_empty() {
            "true".to_owned()
        } else {
            checks.join(" && ")
        }
    ));
    let mut c = janitor();
    c.current_dir(dir)
        .args([
            "run",
            "--grace",
            "500ms",
            "--color",
            "never",
            "--report-json",
        ])
        .arg(report)
        .args(extra)
        .args(["--", "sh", "-c", &script]);
    output_of(c).status.code().unwrap_or(-1)
}

#[derive(Debug, Deserialize)]
struct Gated {
    failed: bool,
    known_leaks: Option<KnownLeaks>,
}

#[derive(Debug, Deserialize)]
struct KnownLeaks {
    known: usize,
    new: usize,
    removable: usize,
    entries: Vec<Entry>,
}

#[derive(Debug, Deserialize)]
struct Entry {
    signature: String,
    seen: usize,
    max: usize,
    status: String,
}

fn gated(path: &Path) -> Gated {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

fn known_leaks(args: &[&str], file: &Path, report: &Path) -> (i32, String) {
    let mut c = janitor();
    c.arg("known-leaks")
        .arg(args[0])
        .arg(file)
        .arg(report)
        .args(&args[1..]);
    let out = output_of(c);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
    )
}

fn p(dir: &ScratchDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

#[test]
fn three_leaks_against_a_file_of_two_fail_with_exactly_one_new() {
    let _g = serial();
    let dir = ScratchDir::new("gate_three");
    let base = p(&dir, "base.json");
    assert_eq!(
        run_leaking(dir.path(), &[SLEEP, TAIL, PYTHON], &base, &[]),
        1
    );

    // A file tolerating all three, written from the report.
    let all = p(&dir, "all.toml");
    let (code, out) = known_leaks(&["write", "--owner", "@ci"], &all, &base);
    assert_eq!(code, 0, "{out}");
    let text = std::fs::read_to_string(&all).unwrap();
    assert_eq!(text.matches("[[leak]]").count(), 3, "{text}");
    assert!(text.contains("owner = \"@ci\""), "{text}");
    // It refuses to replace the file.
    assert_eq!(known_leaks(&["write"], &all, &base).0, 2);

    // The same file less the python entry: two known, one new.
    let two = p(&dir, "two.toml");
    let kept: Vec<&str> = text
        .split("[[leak]]")
        .filter(|block| !block.contains("-F"))
        .collect();
    std::fs::write(&two, kept.join("[[leak]]")).unwrap();
    let head = p(&dir, "head.json");
    let code = run_leaking(
        dir.path(),
        &[SLEEP, TAIL, PYTHON],
        &head,
        &["--known-leaks", two.to_str().unwrap(), "--fail-on", "new"],
    );
    assert_eq!(code, 1);
    let g = gated(&head);
    let k = g.known_leaks.expect("a known_leaks section");
    assert_eq!((k.known, k.new, k.removable), (2, 1, 0), "{k:?}");
    assert!(g.failed);

    // All three known: --fail-on new passes, an unused entry is removable and fails only
    // under --strict-known-leaks.
    let code = run_leaking(
        dir.path(),
        &[SLEEP, TAIL],
        &head,
        &["--known-leaks", all.to_str().unwrap(), "--fail-on", "new"],
    );
    assert_eq!(code, 0);
    let k = gated(&head).known_leaks.unwrap();
    assert_eq!((k.new, k.removable), (0, 1), "{k:?}");
    let unused: Vec<&Entry> = k.entries.iter().filter(|e| e.status == "unused").collect();
    assert_eq!(unused.len(), 1);
    assert_eq!(unused[0].signature, PYTHON, "{unused:?}");
    assert_eq!((unused[0].seen, unused[0].max), (0, 1));
    let code = run_leaking(
        dir.path(),
        &[SLEEP, TAIL],
        &head,
        &[
            "--known-leaks",
            all.to_str().unwrap(),
            "--fail-on",
            "new",
            "--strict-known-leaks",
        ],
    );
    assert_eq!(code, 1);

    // A broken file is refused before anything is swept.
    let bad = p(&dir, "bad.toml");
    std::fs::write(&bad, "version = 7\n").unwrap();
    let code = run_leaking(
        dir.path(),
        &[],
        &head,
        &["--known-leaks", bad.to_str().unwrap()],
    );
    assert_eq!(code, 2);
}

#[test]
fn update_never_raises_a_max_by_itself_and_diff_reports_compares_real_reports() {
    let _g = serial();
    let dir = ScratchDir::new("gate_update");
    let base = p(&dir, "base.json");
    assert_eq!(run_leaking(dir.path(), &[SLEEP, TAIL], &base, &[]), 1);
    let file = p(&dir, "known.toml");
    assert_eq!(known_leaks(&["write"], &file, &base).0, 0);

    // Two sleeps now (one more than the file's max of 1), no tail, a new cat.
    let head = p(&dir, "head.json");
    assert_eq!(run_leaking(dir.path(), &[SLEEP, SLEEP, CAT], &head, &[]), 1);
    let (code, out) = known_leaks(&["update"], &file, &head);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("pass --raise"), "{out}");
    assert!(out.contains("removed (matched nothing): tail"), "{out}");
    assert!(out.contains("--add-new"), "{out}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert_eq!(text.matches("[[leak]]").count(), 1, "{text}");
    assert!(text.contains("max = 1\n"), "{text}");
    let (code, out) = known_leaks(&["update", "--raise", "--add-new"], &file, &head);
    assert_eq!(code, 0, "{out}");
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains("max = 2\n"), "{text}");
    assert!(
        text.contains("signature = \"tail -c0 -f /dev/null\""),
        "{text}"
    );

    // diff-reports on the two real reports.
    #[derive(Deserialize)]
    struct Changes {
        new: Vec<Change>,
        fixed: Vec<Change>,
        unchanged: Vec<Change>,
    }
    #[derive(Deserialize)]
    struct Change {
        command: String,
        base: usize,
        head: usize,
    }
    let mut c = janitor();
    c.arg("diff-reports")
        .arg(&base)
        .arg(&head)
        .args(["--format", "json", "--exit-code"]);
    let out = output_of(c);
    assert_eq!(out.status.code(), Some(1));
    let ch: Changes = serde_json::from_slice(&out.stdout).unwrap();
    let new: Vec<(&str, usize, usize)> = ch
        .new
        .iter()
        .map(|c| (c.command.as_str(), c.base, c.head))
        .collect();
    assert_eq!(new, [("sleep <N>", 1, 2), (CAT, 0, 1)]);
    assert_eq!(ch.fixed.len(), 1);
    assert_eq!(ch.fixed[0].command, "tail -f /dev/null");
    assert!(ch.unchanged.is_empty());
    for format in ["text", "markdown"] {
        let mut c = janitor();
        c.arg("diff-reports")
            .arg(&base)
            .arg(&head)
            .args(["--format", format]);
        let out = output_of(c);
        assert_eq!(out.status.code(), Some(0));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("tail -f /dev/null"), "{text}");
    }
}
