//! `ci-janitor run -- CMD` on real leaking process trees: every leak is found, killed and
//! reported with its evidence; everything else survives.

use std::time::Duration;

use crate::janitor::{janitor, output_of, spawned_from, Report};
use crate::support::{
    alive, fixture_exe, kill_ident, port_is_listening_tcp, serial, unix_listening, wait_dead,
    wait_until, Fixture, Ident, KillOnDrop, Port, ScratchDir, Signal, Spawned,
};

/// Runs `ci-janitor run --grace 1s -- cij-fixture SCENARIO ARGS` in a scratch directory;
/// returns what the fixture left, the report, and the exit code.
fn run_fixture(
    dir: &ScratchDir,
    scenario: &str,
    args: &[&str],
    extra: &[&str],
) -> (Spawned, Report, i32) {
    let report = dir.path().join("report.json");
    let mut c = janitor();
    c.current_dir(dir.path())
        .args(["run", "--grace", "1s", "--color", "never", "--report-json"])
        .arg(&report)
        .args(extra)
        .arg("--")
        .arg(fixture_exe())
        .arg(scenario)
        .args(args);
    let out = output_of(c);
    let spawned = spawned_from(&out.stdout);
    (
        spawned,
        Report::read(&report),
        out.status.code().unwrap_or(-1),
    )
}

/// Starts `ci-janitor run -- cij-fixture sleep --stay` (stdin and stdout piped) and waits
/// for the fixture's line: the leak is in place and the command runs until stdin closes.
fn run_staying_sleep(
    dir: &ScratchDir,
    report: &std::path::Path,
) -> (
    std::process::Child,
    Spawned,
    std::io::BufReader<std::process::ChildStdout>,
) {
    let mut c = janitor();
    c.current_dir(dir.path())
        .args(["run", "--grace", "1s", "--report-json"])
        .arg(report)
        .arg("--")
        .arg(fixture_exe())
        .args(["sleep", "--stay"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    // The caller holds the read end until the command is done: see
    // `a_closed_stdout_does_not_hide_a_leak` for what happens when it does not.
    (child, spawned_from(line.as_bytes()), stdout)
}

/// The common assertions: exit 1, every leaked process reported as the job's and dead.
fn assert_all_killed(spawned: &Spawned, report: &Report, code: i32) {
    assert_eq!(code, 1, "a leak fails the run");
    assert!(report.failed);
    for p in &spawned.procs {
        let entry = report.entry(p.ident());
        assert_eq!(entry.class, "job", "{p:?}: {entry:?}");
        assert!(
            entry
                .evidence
                .iter()
                .any(|e| e == "run-marker" || e == "descendant"),
            "{p:?}: {entry:?}"
        );
        let fate = report.fate(p.ident());
        assert!(
            matches!(fate.as_str(), "terminated" | "killed" | "already-gone"),
            "{p:?}: {fate}"
        );
    }
    assert!(
        wait_dead(&spawned.idents(), Duration::from_secs(5)),
        "leaked processes still alive after the sweep"
    );
}

#[test]
fn background_sleep() {
    let _g = serial();
    let dir = ScratchDir::new("run_sleep");
    let (s, r, code) = run_fixture(&dir, "sleep", &[], &[]);
    assert_eq!(s.procs.len(), 1);
    assert_all_killed(&s, &r, code);
    assert_eq!(r.fate(s.procs[0].ident()), "terminated");
}

#[test]
fn double_forked_setsid_daemon() {
    let _g = serial();
    let dir = ScratchDir::new("run_dfork");
    let (s, r, code) = run_fixture(&dir, "double-fork", &[], &[]);
    assert_all_killed(&s, &r, code);
}

#[test]
fn child_with_empty_environment() {
    let _g = serial();
    let dir = ScratchDir::new("run_envi");
    let (s, r, code) = run_fixture(&dir, "env-clear", &[], &[]);
    assert_all_killed(&s, &r, code);
    // No marker survives `env -i`: the subreaper's descent is the evidence.
    for p in &s.procs {
        assert_eq!(r.entry(p.ident()).evidence, vec!["descendant"]);
    }
}

#[test]
fn renamed_process() {
    let _g = serial();
    let dir = ScratchDir::new("run_rename");
    let (s, r, code) = run_fixture(&dir, "rename", &[], &[]);
    assert_all_killed(&s, &r, code);
}

#[test]
fn own_process_group() {
    let _g = serial();
    let dir = ScratchDir::new("run_pgrp");
    let (s, r, code) = run_fixture(&dir, "new-pgrp", &[], &[]);
    assert_all_killed(&s, &r, code);
}

#[test]
fn term_ignoring_process_gets_kill() {
    let _g = serial();
    let dir = ScratchDir::new("run_noterm");
    let (s, r, code) = run_fixture(&dir, "ignore-term", &[], &[]);
    assert_all_killed(&s, &r, code);
    assert_eq!(r.fate(s.procs[0].ident()), "killed");
}

#[test]
fn respawner_is_swept_to_a_fixed_point() {
    let _g = serial();
    let dir = ScratchDir::new("run_respawn");
    let (s, r, code) = run_fixture(&dir, "respawner", &["--max", "20"], &[]);
    assert_all_killed(&s, &r, code);
    assert!(r.rounds >= 1);
    // Nothing the respawner forked is left either (cwd is inherited by every child).
    assert!(crate::support::live_under(dir.path()).is_empty());
}

#[test]
fn chain_fifty_deep() {
    let _g = serial();
    let dir = ScratchDir::new("run_chain");
    let (s, r, code) = run_fixture(&dir, "chain", &["--depth", "50"], &[]);
    assert_eq!(s.procs.len(), 50);
    assert_all_killed(&s, &r, code);
}

#[test]
fn thousand_processes_in_a_hundred_groups() {
    let _g = serial();
    let dir = ScratchDir::new("run_groups");
    let (s, r, code) = run_fixture(
        &dir,
        "groups",
        &["--groups", "100", "--per-group", "10"],
        &[],
    );
    assert_eq!(s.procs.len(), 1000);
    assert_all_killed(&s, &r, code);
    assert_eq!(r.leaked, 1000);
    assert_eq!(r.killed, 1000);
}

#[test]
fn tcp_and_unix_listeners_are_freed() {
    let _g = serial();
    let dir = ScratchDir::new("run_ports");
    let (tcp, r, code) = run_fixture(&dir, "tcp-listen", &[], &[]);
    assert_all_killed(&tcp, &r, code);
    let Port::Tcp { port, pid, .. } = &tcp.ports[0] else {
        panic!("{tcp:?}")
    };
    assert!(!port_is_listening_tcp(*port));
    let holder = tcp.procs.iter().find(|p| p.pid == *pid).unwrap();
    assert_eq!(
        r.entry(holder.ident()).listening,
        vec![format!("tcp 127.0.0.1:{port}")]
    );
    let checked = r
        .ports
        .iter()
        .find(|p| p.socket.ends_with(&format!(":{port}")))
        .expect("port in report");
    assert_eq!(checked.outcome, "freed");
    assert_eq!(checked.held_by, vec![*pid]);

    let path = dir.path().join("s.sock");
    let path_arg = path.to_str().unwrap();
    let (unix, r, code) = run_fixture(&dir, "unix-listen", &["--path", path_arg], &[]);
    assert_all_killed(&unix, &r, code);
    assert!(!unix_listening(&path));
    let checked = r
        .ports
        .iter()
        .find(|p| p.socket.contains("s.sock"))
        .expect("socket in report");
    assert_eq!(checked.outcome, "freed");
}

#[test]
fn dry_run_reports_and_kills_nothing() {
    let _g = serial();
    let dir = ScratchDir::new("run_dry");
    let (s, r, code) = run_fixture(&dir, "sleep", &[], &["--dry-run"]);
    assert_eq!(code, 1, "a dry run still fails on a leak");
    assert!(r.dry_run);
    assert_eq!(r.fate(s.procs[0].ident()), "would-kill");
    assert!(alive(&s.procs[0].ident()), "dry run killed the process");
    // ScratchDir's drop cleans it up.
}

#[test]
fn allow_and_fail_on_never_pass() {
    let _g = serial();
    let dir = ScratchDir::new("run_allow");
    let (s, r, code) = run_fixture(&dir, "sleep", &[], &["--allow", "*cij-fixture*"]);
    assert_eq!(code, 0, "an allowed leak does not fail");
    assert_eq!(r.entry(s.procs[0].ident()).class, "allowed");
    assert!(
        wait_dead(&s.idents(), Duration::from_secs(5)),
        "allowed leaks are still killed"
    );

    let (s, r, code) = run_fixture(&dir, "sleep", &[], &["--fail-on", "never"]);
    assert_eq!(code, 0);
    assert_eq!(r.entry(s.procs[0].ident()).class, "job");
    assert!(!r.failed);
}

#[test]
fn processes_outside_the_command_survive() {
    let _g = serial();
    // Alive before `run` starts.
    let before = Fixture::spawn("sleep", &[]);
    let dir = ScratchDir::new("run_outside");
    let report = dir.path().join("report.json");
    let (mut child, s, _stdout) = run_staying_sleep(&dir, &report);
    // Started while the command runs, but not by it: a setsid daemon and a plain child of
    // the test.
    let during = Fixture::builder("double-fork").spawn();
    let during_child = Fixture::builder("sleep").stay().spawn();
    drop(child.stdin.take()); // the command exits; the sweep starts
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1));
    let r = Report::read(&report);
    assert_all_killed(&s, &r, 1);
    for id in before
        .spawned()
        .idents()
        .iter()
        .chain(during.spawned().idents().iter())
        .chain(during_child.spawned().idents().iter())
    {
        assert!(
            alive(id),
            "{id:?} was not the command's but is gone ({:?}); report: {:?}",
            crate::support::read_stat(id.pid),
            r.by_ident().get(id)
        );
        assert!(
            !r.by_ident().contains_key(id),
            "{id:?} should not even be reported"
        );
    }
}

#[test]
fn exit_status_of_the_command_comes_first() {
    let _g = serial();
    for (cmd, want) in [("exit 7", 7), ("kill -TERM $$", 143), ("true", 0)] {
        let mut c = janitor();
        c.args(["run", "--", "sh", "-c", cmd]);
        assert_eq!(output_of(c).status.code(), Some(want), "{cmd}");
    }
}

#[test]
fn missing_command_is_a_usage_error() {
    let _g = crate::support::serial();
    let mut c = janitor();
    c.args(["run", "--", "/nonexistent/command"]);
    let out = output_of(c);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/command"));
    let mut c = janitor();
    c.args(["run"]);
    assert_eq!(output_of(c).status.code(), Some(2));
}

#[test]
fn sigterm_is_forwarded_then_leftovers_swept() {
    let _g = serial();
    let dir = ScratchDir::new("run_sigterm");
    let report = dir.path().join("report.json");
    // The fixture prints its line once its leak is in place; then stop the janitor.
    let (mut child, s, _stdout) = run_staying_sleep(&dir, &report);
    let me = crate::support::Ident::of(child.id() as i32).unwrap();
    // Hold the command's stdin open: `wait` would close it, and the `--stay` fixture exits
    // (with 0) at EOF, racing the forwarded SIGTERM.
    let stdin = child.stdin.take();
    assert!(crate::support::kill_ident(
        &me,
        crate::support::Signal::TERM
    ));
    let status = child.wait().unwrap();
    drop(stdin);
    // The fixture died of the forwarded SIGTERM: 128 + 15.
    assert_eq!(status.code(), Some(143));
    let r = Report::read(&report);
    assert_all_killed(&s, &r, 1);
    assert!(!alive(&s.fixture), "the command itself got the SIGTERM");
}

#[test]
fn a_closed_stdout_does_not_hide_a_leak() {
    // Regression: a reader that closes our stdout early (`ci-janitor run ... | head -1`)
    // made the report's write fail with EPIPE, and the exit code, which is the verdict,
    // became 0.
    let _g = serial();
    let dir = ScratchDir::new("run_epipe");
    let report = dir.path().join("report.json");
    let (mut child, s, stdout) = run_staying_sleep(&dir, &report);
    drop(stdout);
    drop(child.stdin.take());
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(1), "the leak must still fail the run");
    assert_eq!(Report::read(&report).fate(s.procs[0].ident()), "terminated");
}

/// Starts `ci-janitor run --grace 1s -- sh -c …` whose command ignores SIGTERM (and so does
/// the child it leaves); returns the janitor, its identity and the child's.
fn run_term_ignoring(
    dir: &ScratchDir,
    report: &std::path::Path,
) -> (std::process::Child, Ident, Ident, Ident) {
    let mut c = janitor();
    c.current_dir(dir.path())
        .args(["run", "--grace", "1s", "--deadline", "20s", "--report-json"])
        .arg(report)
        .args(["--", "sh", "-c"])
        .arg("trap '' TERM; sleep 1000 & echo \"$$ $!\"; wait; wait; wait")
        .stdout(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let me = Ident::of(child.id() as i32).unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    let mut pids = line.split_whitespace().map(|p| p.parse::<i32>().unwrap());
    let shell = Ident::of(pids.next().unwrap()).unwrap();
    let sleeper = Ident::of(pids.next().unwrap()).unwrap();
    (child, me, shell, sleeper)
}

/// Waits for `child` to exit within `timeout`; kills it (by identity) if it does not.
fn exit_of(child: &mut std::process::Child, me: &Ident, timeout: Duration) -> Option<i32> {
    let mut status = None;
    wait_until(std::time::Instant::now() + timeout, || {
        status = child.try_wait().unwrap();
        status.is_some()
    });
    if status.is_none() {
        kill_ident(me, Signal::KILL);
        let _ = child.wait();
    }
    status.map(|s| s.code().unwrap_or(-1))
}

/// Regression (issue 11): `run` never ended when its command ignored the forwarded signal.
/// Now the command's whole tree is killed when it outlives `--grace` after the signal, or
/// at once after a second signal, then swept, and `run` ends within `--deadline`.
#[test]
fn a_command_that_ignores_sigterm_is_escalated_and_swept() {
    let _g = serial();
    for signals in [1, 2] {
        let dir = ScratchDir::new("run_ignores_term");
        let report = dir.path().join("report.json");
        let (mut child, me, shell, sleeper) = run_term_ignoring(&dir, &report);
        for _ in 0..signals {
            assert!(kill_ident(&me, Signal::TERM));
        }
        let code = exit_of(&mut child, &me, Duration::from_secs(30));
        assert_eq!(
            code,
            Some(128 + 9),
            "the command was killed ({signals} signals)"
        );
        assert!(wait_dead(&[shell, sleeper], Duration::from_secs(5)));
        let r = Report::read(&report);
        assert!(r.by_ident().contains_key(&sleeper), "the leak is reported");
    }
}

/// The command `run` echoes on stderr is the user's, but its arguments may be anything a
/// script passed along: a newline and `::error::` in one stays on the echoed line.
#[test]
fn a_command_line_with_a_workflow_command_in_it_is_echoed_on_one_line() {
    let _g = serial();
    let dir = ScratchDir::new("run_hostile_argv");
    let mut c = janitor();
    c.current_dir(dir.path())
        .args(["run", "--color", "never", "--", "true"])
        .arg("x\n::error title=forged::injected\x1b[2J");
    let out = output_of(c);
    assert_eq!(out.status.code(), Some(0));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(r"`true x\x0a::error title=forged::injected\x1b[2J` exited with 0"),
        "{err}"
    );
    assert!(!err.lines().any(|l| l.starts_with("::")), "{err}");
    assert!(!err.contains('\x1b'), "{err:?}");
}

/// Starts, under `ci-janitor run --grace 0s`, a process whose main thread exits
/// (`pthread_exit`) while another thread runs: `/proc` shows its leader as `Z`, but it is
/// alive. With `marker`, it carries that marker (another job's) instead of the run's.
/// Returns it (killed by identity when dropped), its report entry's class and fate, and
/// the run's exit code.
fn main_thread_exited(
    name: &str,
    marker: Option<&str>,
) -> (KillOnDrop, String, Option<String>, Option<i32>) {
    let dir = ScratchDir::new(name);
    let script = dir.path().join("leak.py");
    std::fs::write(
        &script,
        r#"
import ctypes, os, subprocess, sys, threading, time
if sys.argv[1:] == ["child"]:
    threading.Thread(target=time.sleep, args=(3600,)).start()
    ctypes.CDLL(None).pthread_exit(None)
env = dict(os.environ)
if sys.argv[1:]:
    env["CI_JANITOR_RUN"] = sys.argv[1]
# Its own stdio: another job's process that is left alive must not hold the run's output.
child = subprocess.Popen(
    [sys.executable, __file__, "child"], env=env, start_new_session=True,
    stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
)
deadline = time.monotonic() + 10
while time.monotonic() < deadline:
    if open(f"/proc/{child.pid}/stat").read().rsplit(")", 1)[1].split()[0] == "Z":
        break
    time.sleep(0.01)
open("leak.pid", "w").write(str(child.pid))
"#,
    )
    .unwrap();
    let report = dir.path().join("report.json");
    let mut c = janitor();
    c.current_dir(dir.path())
        .args(["run", "--grace", "0s", "--color", "never", "--report-json"])
        .arg(&report)
        .arg("--")
        .arg(crate::diagnose::python3())
        .arg(&script)
        .args(marker);
    let out = output_of(c);
    let pid: i32 = std::fs::read_to_string(dir.path().join("leak.pid"))
        .expect("the script wrote the process's pid")
        .parse()
        .expect("a pid");
    // Killed by identity at the end of the test, whatever happened.
    let process = KillOnDrop(vec![crate::support::read_stat(pid)
        .expect("the process's stat")
        .ident()]);
    let report = Report::read(&report);
    let entry = report
        .processes
        .iter()
        .find(|p| p.pid == pid)
        .unwrap_or_else(|| panic!("pid {pid} is not in the report: {report:?}"));
    let fate = entry.fate.as_ref().map(|f| f.fate.clone());
    (process, entry.class.clone(), fate, out.status.code())
}

/// The job's leak whose main thread exited: the sweep sees it, reads its details through
/// the live thread, kills it, and the kill is real.
#[test]
fn a_leak_whose_main_thread_exited_is_still_found_and_killed() {
    let _g = serial();
    let (leak, class, fate, code) = main_thread_exited("run_main_thread_exited", None);
    assert_eq!(class, "job");
    assert_eq!(fate.as_deref(), Some("killed"));
    assert_eq!(code, Some(1), "a leak fails the run");
    assert!(
        wait_dead(&leak.0, Duration::from_secs(10)),
        "still running: {:?}",
        crate::support::read_stat(leak.0[0].pid)
    );
}

/// The same process of another job: now that the sweep sees such processes, it must read
/// their markers right and leave another job's alone.
#[test]
fn another_jobs_process_whose_main_thread_exited_is_left_alone() {
    let _g = serial();
    let (bystander, class, fate, code) =
        main_thread_exited("run_main_thread_exited_other", Some("another-job"));
    assert_eq!(class, "other-job");
    assert_eq!(fate, None, "not signalled");
    assert_eq!(code, Some(0));
    assert!(alive(&bystander.0[0]), "another job's process was killed");
}
