//! The pipe-holder alarm: a step backgrounds a server that inherits its stdout, then exits.
//! Under `run`, the wait for the command's pipes is bounded (like Go's WaitDelay), then the
//! holder is named and swept; under the guard, the alarm names the server and the step
//! live, `guard status` shows it, and so does the sweep's report.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::diagnose::{python3, SERVER};
use crate::janitor::janitor;
use crate::support::{serial, wait_until, ScratchDir};

#[test]
fn run_bounds_its_wait_for_a_server_holding_the_commands_stdout() {
    let _g = serial();
    let dir = ScratchDir::new("pipes_run");
    std::fs::write(dir.path().join("server.py"), SERVER).unwrap();
    let stderr = dir.path().join("run.stderr");
    let mut c = janitor();
    c.current_dir(dir.path())
        .args([
            "run",
            "--grace",
            "1s",
            "--pipe-wait",
            "1s",
            "--color",
            "never",
            "--report-json",
            "report.json",
            "--",
            "sh",
            "-c",
            "\"$PY\" server.py 0 & echo started",
        ])
        .env("PY", python3())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr).unwrap());
    let mut child = c.spawn().unwrap();
    // Whoever reads run's stdout gets end-of-file once the holder is gone: run does not
    // leave it waiting.
    let mut out = String::new();
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    let status = child.wait().unwrap();
    let err = std::fs::read_to_string(&stderr).unwrap();
    eprintln!("exit {status:?}\nstdout:\n{out}\nstderr:\n{err}");
    assert!(out.starts_with("started\n"), "{out}");
    assert_eq!(status.code(), Some(1), "the server was a leak");
    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    let holders = report["pipe_holders"].as_array().expect("pipe_holders");
    assert_eq!(holders.len(), 1, "{holders:#?}");
    let h = &holders[0];
    assert_eq!(h["seen_by"], "run");
    assert_eq!(h["stream"], "stdout");
    assert!(h["command"].as_str().unwrap().starts_with("sh -c "), "{h}");
    assert!(
        h["holder_command"]
            .as_str()
            .unwrap()
            .ends_with("server.py 0"),
        "{h}"
    );
    assert!(err.contains("still held its stdout"), "{err}");
    // And then it was swept.
    let pid = h["holder_pid"].as_i64().unwrap();
    let entry = report["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == pid)
        .unwrap();
    assert_eq!(entry["class"], "job");
}

#[test]
fn the_guard_names_the_server_holding_an_exited_steps_stdout() {
    let _g = serial();
    let dir = ScratchDir::new("pipes_guard");
    std::fs::write(dir.path().join("server.py"), SERVER).unwrap();
    let mut job = crate::guard::Job::start(dir.path());
    job.ok("$JANITOR snapshot --state state.json");
    job.ok("$JANITOR guard start --state state.json");
    // The step: starts a server in the background (it inherits the step's stdout, which
    // `cat` reads, as the runner reads a step's output), does a little more, then ends.
    // (A holder that has not exec'd 200 ms after the step ended is named by the command
    // line it still shares with the step: a known limit, not what this test is about.)
    job.ok(&format!(
        "GITHUB_ACTION=start-server PY=\"{}\" sh -c '\"$PY\" server.py 0 & sleep 0.5; echo started' | cat > out.txt &",
        python3().display()
    ));
    let mut warnings = Vec::new();
    assert!(
        wait_until(Instant::now() + Duration::from_secs(30), || {
            let status = job.ok("$JANITOR guard status --state state.json --json");
            let v: Value = serde_json::from_str(&status).unwrap();
            warnings = v["warnings"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w.as_str().unwrap().to_owned())
                .filter(|w| w.contains("still holds its stdout"))
                .collect();
            !warnings.is_empty()
        }),
        "no pipe-holder warning; journal:\n{}",
        std::fs::read_to_string(dir.path().join("state.journal.jsonl"))
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.contains("\"seed\""))
            .collect::<Vec<_>>()
            .join("\n")
    );
    let w = &warnings[0];
    assert!(w.starts_with("step `start-server` (pid "), "{w}");
    assert!(w.contains("server.py 0`, started by pid "), "{w}");
    // The sweep's report has it too, then kills the server (and cat, its reader).
    let (code, _) = job.run(
        "$JANITOR sweep --state state.json --grace 1s --color never --report-json report.json > sweep.txt",
    );
    assert_eq!(code, 1);
    let report: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("report.json")).unwrap()).unwrap();
    let h = &report["pipe_holders"][0];
    assert_eq!(h["seen_by"], "guard", "{report:#}");
    assert_eq!(h["step"], "start-server");
    assert!(h["holder_command"]
        .as_str()
        .unwrap()
        .ends_with("server.py 0"));
    let text = std::fs::read_to_string(dir.path().join("sweep.txt")).unwrap();
    assert!(text.contains("still holds its stdout"), "{text}");
}
