//! The reports as a CI system sees them, end to end: a real `run` or `sweep` of real leaking
//! processes with `GITHUB_ACTIONS=true` and the runner's files pointed at temp files, then
//! what the runner would show (annotations on stdout, the job summary, the step outputs),
//! the JUnit file, and `ci-janitor report` rendering the saved report again.
//!
//! The leaking process is given a hostile command line (`exec -a`): workflow-command and
//! Markdown syntax, HTML, control characters, bytes that are not UTF-8, and secrets, which
//! must come out nowhere but in `::add-mask::` lines.

use std::ffi::OsString;
use std::os::unix::ffi::OsStringExt;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use quick_xml::events::Event;
use serde::Deserialize;

use crate::janitor::{janitor, janitor_exe, output_of, spawned_from, Report};
use crate::support::{fixture_exe, serial, wait_dead, Port, ScratchDir, Spawned};

const SECRETS: [&str; 3] = [
    "hunter2-s3cret",
    "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
    "pa55w0rd",
];

/// argv[0] for the leaking process: everything a renderer could trip over.
fn hostile_argv0() -> OsString {
    let mut v = b"evil-server 100% %0A ::error::pwned | `id` <script>alert(1)</script> \
        --password hunter2-s3cret \r\n--token=ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 \
        https://ci:pa55w0rd@example.com "
        .to_vec();
    v.extend_from_slice(&[0xff, 0xfe]);
    OsString::from_vec(v)
}

/// The report's signatures, decoded with types declared here.
#[derive(Debug, Deserialize)]
struct Signatures {
    signatures: Vec<Signature>,
    redacted_values: usize,
}

#[derive(Debug, Deserialize)]
struct Signature {
    id: String,
    class: String,
    command: String,
    count: usize,
    pids: Vec<i32>,
    ports: Vec<u16>,
    steps: Vec<Tally>,
    tests: Vec<Tally>,
    evidence: Vec<String>,
    fates: Vec<FateTally>,
    allow_pattern: String,
}

#[derive(Debug, Deserialize)]
struct Tally {
    value: String,
    count: usize,
}

#[derive(Debug, Deserialize)]
struct FateTally {
    fate: String,
    count: usize,
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()))
}

/// Every workflow command on `stdout` is one we write, nothing appears between
/// `::stop-commands::TOKEN` and `::TOKEN::` as a command, and no secret appears outside
/// its `::add-mask::` line.
fn assert_runner_safe(stdout: &str) {
    let mut stop: Option<String> = None;
    for line in stdout.lines() {
        if let Some(token) = &stop {
            if line == format!("::{token}::") {
                stop = None;
            }
            continue;
        }
        if let Some(token) = line.strip_prefix("::stop-commands::") {
            stop = Some(token.to_owned());
            continue;
        }
        if let Some(rest) = line.strip_prefix("::") {
            let command = rest.split([' ', ':']).next().unwrap_or("");
            assert!(
                ["add-mask", "error", "warning", "notice", "group", "endgroup"].contains(&command),
                "unexpected workflow command: {line}"
            );
        }
        if !line.starts_with("::add-mask::") {
            for s in SECRETS {
                assert!(!line.contains(s), "{s} on stdout: {line}");
            }
        }
    }
    assert!(stop.is_none(), "stop-commands never resumed");
    assert!(!stdout.contains('\r'), "a carriage return reached stdout");
}

/// Lowercase hex, the way the JSON files spell byte strings that are not UTF-8.
fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn assert_no_secret(what: &str, text: &str) {
    for s in SECRETS {
        assert!(!text.contains(s), "{s} in the {what}:\n{text}");
        assert!(
            !text.contains(&hex(s)),
            "{s} (in hex) in the {what}:\n{text}"
        );
    }
}

/// The JUnit file is well-formed XML with `failures` failing test cases.
fn assert_junit(xml: &str, failures: usize) {
    let mut reader = quick_xml::Reader::from_str(xml);
    reader.config_mut().check_end_names = true;
    let mut failed = 0;
    loop {
        match reader.read_event() {
            Ok(Event::Start(e) | Event::Empty(e)) if e.name().as_ref() == b"failure" => failed += 1,
            Ok(Event::Eof) => break,
            Ok(_) => {}
            Err(e) => panic!("JUnit is not well-formed: {e}\n{xml}"),
        }
    }
    assert_eq!(failed, failures, "{xml}");
}

/// `ci-janitor report FILE --format FORMAT`.
fn render_saved(report: &Path, format: &str) -> String {
    let mut c = janitor();
    c.args(["report", "--color", "never", "--format", format])
        .arg(report);
    let out = output_of(c);
    assert!(out.status.success(), "report --format {format} failed");
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn run_under_github_actions_shows_what_a_runner_shows() {
    let _g = serial();
    let dir = ScratchDir::new("gh_run");
    let d = dir.path();
    let (summary, output, report, junit) = (
        d.join("summary.md"),
        d.join("output.txt"),
        d.join("report.json"),
        d.join("junit.xml"),
    );
    let mut c = janitor();
    c.current_dir(d)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", &summary)
        .env("GITHUB_OUTPUT", &output)
        .env("GITHUB_ACTION", "__run_2")
        .env(
            "PYTEST_CURRENT_TEST",
            "tests/test_srv.py::test_leak[a|b] (call)",
        )
        .args(["run", "--grace", "1s", "--report-json"])
        .arg(&report)
        .arg("--junit")
        .arg(&junit)
        .args(["--", "bash", "-c", r#"exec -a "$0" "$1" tcp-listen"#])
        .arg(hostile_argv0())
        .arg(fixture_exe());
    let out = output_of(c);
    let spawned: Spawned = spawned_from(&out.stdout);
    let Port::Tcp { port, .. } = spawned.ports[0].clone() else {
        panic!("no TCP port in {spawned:?}")
    };
    assert_eq!(out.status.code(), Some(1), "a leak fails the run");
    assert!(
        wait_dead(&spawned.idents(), Duration::from_secs(5)),
        "the leak was killed"
    );

    // stdout: masks first, then one error annotation, then the detail group.
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_runner_safe(&stdout);
    for s in SECRETS {
        assert!(
            stdout.contains(&format!("::add-mask::{s}\n")),
            "no mask for {s}"
        );
    }
    let first_mask = stdout.find("::add-mask::").expect("masks");
    let errors: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("::error "))
        .collect();
    assert_eq!(errors.len(), 1, "{stdout}");
    assert!(first_mask < stdout.find("::error ").expect("an error"));
    let error = errors[0];
    assert!(
        error.starts_with("::error file=tests/test_srv.py,title=ci-janitor%3A 1 leaked process::"),
        "{error}"
    );
    for part in [
        "1 × evil-server <N>%25 %250A ::error::pwned | `id` <script>",
        "--password *** \\x0d\\x0a--token=*** https://***:***@example.com",
        &format!("port {port} · step: __run_2 (run step #2 without an id)"),
        "test: tests/test_srv.py::test_leak[a|b] (call)",
        "%0Aended: TERM, exited in",
        "%0Ato accept it: --allow '",
    ] {
        assert!(error.contains(part), "{part:?} not in {error}");
    }
    assert!(
        stdout.contains("::group::ci-janitor: details\n"),
        "{stdout}"
    );
    assert!(stdout.ends_with("::endgroup::\n"), "{stdout}");
    // A terminal's progress line never goes to a pipe.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("waiting for"));

    // The step outputs.
    let outputs = read(&output);
    assert_eq!(
        outputs,
        format!(
            "leaked-count=1\nkilled-count=1\nreport-path={}\nclean=false\n",
            report.display()
        )
    );

    // The job summary.
    let md = read(&summary);
    assert_no_secret("summary", &md);
    assert!(
        md.starts_with("## ❌ ci-janitor: 1 leaked process\n"),
        "{md}"
    );
    assert!(md.contains("| leaked | 1 | <code>evil-server"), "{md}");
    assert!(
        md.contains(&format!(" | {port} | ")),
        "the port is in the table:\n{md}"
    );
    assert!(md.contains("tests/test&#95;srv.py&#58;&#58;test&#95;leak&#91;a&#124;b&#93;"));
    assert!(
        md.contains("<details><summary>1 × <code>evil-server"),
        "{md}"
    );
    // `run` is the command line, so the advice is in its flags (the Action's in inputs).
    assert!(md.contains("--allow '"), "{md}");
    let live: String = md.split("```").step_by(2).collect::<Vec<_>>().join("");
    assert!(
        !live.contains("<script"),
        "raw HTML outside code fences:\n{md}"
    );

    // The JSON report, decoded with types of our own.
    let r = Report::read(&report);
    assert_eq!((r.leaked, r.killed, r.failed), (1, 1, true));
    let json = read(&report);
    assert_no_secret("JSON report", &json);
    let sigs: Signatures = serde_json::from_str(&json).expect("signatures decode");
    assert_eq!(sigs.redacted_values, 3);
    let [sig] = sigs.signatures.as_slice() else {
        panic!("{sigs:?}")
    };
    assert_eq!((sig.class.as_str(), sig.count), ("job", 1));
    assert_eq!(sig.id.len(), 12);
    assert_eq!(sig.pids, vec![spawned.procs[0].pid]);
    assert_eq!(sig.ports, vec![port]);
    assert_eq!(sig.steps[0].value, "__run_2");
    assert_eq!(sig.tests[0].count, 1);
    assert!(sig.evidence.iter().any(|e| e == "run-marker"), "{sig:?}");
    assert_eq!(
        (sig.fates[0].fate.as_str(), sig.fates[0].count),
        ("terminated", 1)
    );
    assert!(
        sig.command.ends_with(" \u{fffd}\u{fffd} tcp-listen"),
        "{:?}",
        sig.command
    );
    assert!(
        sig.allow_pattern.contains("--password * ??--token=*"),
        "{sig:?}"
    );

    // JUnit.
    let xml = read(&junit);
    assert_no_secret("JUnit file", &xml);
    assert_junit(&xml, 1);

    // `ci-janitor report` renders the saved report as the sweep did.
    let path = report.display().to_string();
    assert_eq!(render_saved(&report, "junit"), xml);
    assert_eq!(render_saved(&report, "markdown"), md);
    let annotations = render_saved(&report, "annotations");
    assert_eq!(annotations.lines().collect::<Vec<_>>(), errors, "{path}");
    let text = render_saved(&report, "text");
    assert!(
        text.starts_with("ci-janitor: 1 leaked process found and killed"),
        "{text}"
    );
    assert!(
        stdout.contains(&text),
        "the detail group holds the text report"
    );
}

#[test]
fn clean_run_under_github_actions() {
    let _g = serial();
    let dir = ScratchDir::new("gh_clean");
    let d = dir.path();
    let mut c = janitor();
    c.current_dir(d)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_STEP_SUMMARY", d.join("summary.md"))
        .env("GITHUB_OUTPUT", d.join("output.txt"))
        .env("RUNNER_TEMP", d)
        .args(["run", "--", "true"]);
    let out = output_of(c);
    assert_eq!(out.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_runner_safe(&stdout);
    assert!(
        !stdout.contains("::error") && !stdout.contains("::add-mask"),
        "{stdout}"
    );
    assert!(stdout.starts_with("ci-janitor: clean"), "{stdout}");
    let default_report = d.join("ci-janitor").join("report.json");
    assert_eq!(
        read(&d.join("output.txt")),
        format!(
            "leaked-count=0\nkilled-count=0\nreport-path={}\nclean=true\n",
            default_report.display()
        )
    );
    assert_eq!(Report::read(&default_report).leaked, 0);
    assert!(read(&d.join("summary.md")).starts_with("## ✅ ci-janitor: clean\n"));
}

/// A job as a shell script in its own session, marked by `snapshot --export`.
fn job_script(dir: &Path, body: &str) -> std::process::Output {
    let mut c = Command::new("setsid");
    c.arg("--wait")
        .args(["bash", "-c", body])
        .current_dir(dir)
        .env("JANITOR", janitor_exe())
        .env("FIXTURE", fixture_exe())
        .env("ARGV0", hostile_argv0())
        .env_remove("GITHUB_ACTIONS")
        .env_remove("GITHUB_STEP_SUMMARY")
        .env_remove("RUNNER_TRACKING_ID")
        .env_remove("CI_JANITOR_RUN")
        .env_remove("NO_COLOR");
    output_of(c)
}

#[test]
fn snapshot_diff_sweep_outside_github_write_redacted_files() {
    let _g = serial();
    let dir = ScratchDir::new("plain_sweep");
    let out = job_script(
        dir.path(),
        r#"set -e
        eval "$("$JANITOR" snapshot --export --full --state state.json)"
        bash -c 'exec -a "$ARGV0" "$FIXTURE" groups --groups 2 --per-group 2' > fixture.json
        "$JANITOR" snapshot --full --print --state with-leak.json > printed.json
        "$JANITOR" diff --state state.json --color never > diff.txt
        "$JANITOR" diff --state state.json --json > diff.json
        set +e
        "$JANITOR" sweep --state state.json --grace 1s --color never --report-json report.json \
            --junit junit.xml --summary summary.md > sweep.txt
        echo "sweep=$?"
        "#,
    );
    let d = dir.path();
    assert!(String::from_utf8_lossy(&out.stdout).contains("sweep=1"));
    let spawned: Spawned = spawned_from(read(&d.join("fixture.json")).as_bytes());
    assert!(wait_dead(&spawned.idents(), Duration::from_secs(5)));
    let files = [
        "with-leak.json",
        "printed.json",
        "diff.txt",
        "diff.json",
        "sweep.txt",
        "report.json",
        "junit.xml",
        "summary.md",
    ];
    for file in files {
        assert_no_secret(
            file,
            &String::from_utf8_lossy(&std::fs::read(d.join(file)).expect(file)),
        );
    }
    // The terminal report groups the four processes under one signature.
    let text = read(&d.join("sweep.txt"));
    assert!(
        text.starts_with("ci-janitor: 4 leaked processes found and killed"),
        "{text}"
    );
    assert!(
        text.contains("\n  4 × evil-server <N>% %0A ::error::pwned"),
        "{text}"
    );
    assert!(
        text.contains("--password *** \\x0d\\x0a--token=***"),
        "{text}"
    );
    assert!(!text.contains('\x1b') && !text.contains('\r'), "{text}");
    assert_junit(&read(&d.join("junit.xml")), 1);
    let md = read(&d.join("summary.md"));
    assert!(
        md.starts_with("## ❌ ci-janitor: 4 leaked processes\n"),
        "{md}"
    );
    // The redacted command line is there, not just absent secrets (in JSON, as hex: the
    // argv is not UTF-8).
    let diff = read(&d.join("diff.txt"));
    assert!(diff.contains("--password *** "), "{diff}");
    for file in ["printed.json", "with-leak.json", "diff.json", "report.json"] {
        let text = read(&d.join(file));
        assert!(text.contains(&hex("--password *** ")), "{file}: {text}");
    }
}

/// On a terminal, the grace-period wait shows a progress line on stderr, then clears it.
/// (`script` gives the sweep a pseudo-terminal; the tests above prove a pipe never sees it.)
#[test]
fn progress_line_on_a_terminal() {
    let _g = serial();
    if Command::new("script").arg("--version").output().is_err() {
        eprintln!("skipped: `script` (util-linux) is not installed");
        return;
    }
    let dir = ScratchDir::new("tty_progress");
    let inner = format!(
        "'{}' run --grace 1s --color never -- '{}' ignore-term",
        janitor_exe().display(),
        fixture_exe().display()
    );
    let mut c = Command::new("script");
    c.args(["-q", "-e", "-c", &inner, "/dev/null"])
        .current_dir(dir.path())
        .env("CI_JANITOR_LOG", "warn")
        .stdin(std::process::Stdio::null());
    for var in [
        "RUNNER_TRACKING_ID",
        "GITHUB_ACTIONS",
        "CI_JANITOR_RUN",
        "NO_COLOR",
    ] {
        c.env_remove(var);
    }
    let out = output_of(c);
    let tty = String::from_utf8_lossy(&out.stdout);
    let spawned: Spawned = spawned_from(tty.replace('\r', "").as_bytes());
    assert!(wait_dead(&spawned.idents(), Duration::from_secs(5)));
    assert!(
        tty.contains("ci-janitor: waiting for 1 process to exit… "),
        "{tty:?}"
    );
    assert!(tty.contains("\r\x1b[2K"), "the line is cleared: {tty:?}");
    assert!(tty.contains("  KILL after "), "{tty:?}");
}
