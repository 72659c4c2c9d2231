//! Proves that `cij-fixture` builds exactly the process shapes it claims, and that
//! [`Fixture`]'s cleanup leaves nothing behind: the rest of the suite relies on both.
//!
//! Every check reads /proc directly (see `support`), never the ci-janitor library.

use std::collections::HashSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::support::*;

/// Generous upper bound for things that normally take milliseconds.
const WAIT: Duration = Duration::from_secs(10);

/// Drops `fx` and asserts that the fixture and every process it reported are dead and
/// that nothing is left running in its directory.
fn drop_and_check(fx: Fixture) {
    let ids = fx.idents();
    let dir = fx.dir().to_path_buf();
    drop(fx);
    let survivors: Vec<&Ident> = ids.iter().filter(|id| alive(id)).collect();
    assert!(
        survivors.is_empty(),
        "still alive after the fixture was dropped: {survivors:?}"
    );
    let stragglers = live_under(&dir);
    assert!(
        stragglers.is_empty(),
        "still running under {}: {stragglers:?}",
        dir.display()
    );
}

/// The text of a panic payload (`panic!` with arguments yields a String).
fn panic_text(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(text) => *text,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .unwrap_or_default(),
    }
}

fn stat_of(id: &Ident) -> Stat {
    let stat = read_stat(id.pid).unwrap_or_else(|| panic!("{id:?} has no /proc entry"));
    assert_eq!(
        stat.start_ticks, id.start_ticks,
        "pid {} was reused",
        id.pid
    );
    assert!(!stat.is_dead(), "{id:?} is a zombie");
    stat
}

fn own_stat() -> Stat {
    read_stat(std::process::id() as i32).expect("own /proc/self/stat")
}

const SIGTERM_BIT: u64 = 1 << (libc::SIGTERM - 1);

#[test]
fn parse_stat_splits_on_the_last_paren() {
    let mut fields = vec!["S", "1", "40", "41"];
    fields.extend(["0"; 15]); // fields 7..=21
    fields.push("123456"); // field 22: start time
    fields.extend(["0"; 5]);
    let text = format!("42 (a) (b c) {}\n", fields.join(" "));
    let stat = parse_stat(&text).expect("parses");
    assert_eq!(
        stat,
        Stat {
            pid: 42,
            comm: "a) (b c".into(),
            state: 'S',
            ppid: 1,
            pgid: 40,
            sid: 41,
            threads: 0,
            start_ticks: 123456
        }
    );
    let me = own_stat();
    assert_eq!(Some(me.comm), comm_of(std::process::id() as i32));
}

#[test]
fn sleep_child_is_orphaned_in_the_fixture_group() {
    let _serial = serial();
    let fx = Fixture::spawn("sleep", &[]);
    assert_eq!(fx.procs().len(), 1, "{:?}", fx.spawned());
    let sleeper = fx.proc("sleeper").ident();
    assert!(
        !alive(&fx.fixture()),
        "without --stay the fixture exits at once"
    );
    let stat = stat_of(&sleeper);
    assert_eq!(
        stat.pgid,
        fx.fixture().pid,
        "same group as the fixture (which leads its own)"
    );
    assert_ne!(stat.ppid, fx.fixture().pid, "orphaned");
    assert_eq!(stat.sid, own_stat().sid);
    assert_eq!(cwd_of(sleeper.pid).as_deref(), Some(fx.dir()));
    drop_and_check(fx);
}

#[test]
fn share_process_group_keeps_the_test_group() {
    let _serial = serial();
    let fx = Fixture::builder("sleep").share_process_group().spawn();
    assert_eq!(stat_of(&fx.proc("sleeper").ident()).pgid, own_stat().pgid);
    drop_and_check(fx);
}

#[test]
fn double_fork_daemon_is_in_another_session() {
    let _serial = serial();
    let fx = Fixture::spawn("double-fork", &[]);
    let daemon = fx.proc("daemon").ident();
    let stat = stat_of(&daemon);
    assert_ne!(stat.ppid, fx.fixture().pid);
    assert_ne!(stat.sid, own_stat().sid, "a session of its own");
    // fork -> setsid -> fork: the session and group belong to the exited intermediate.
    assert_eq!(stat.pgid, stat.sid);
    assert_ne!(stat.sid, daemon.pid, "the daemon is not the session leader");
    assert!(
        read_stat(stat.sid).is_none_or(|leader| leader.is_dead() || leader.sid != stat.sid),
        "the intermediate (session leader) has exited"
    );
    drop_and_check(fx);
}

#[test]
fn env_clear_child_has_an_empty_environment() {
    let _serial = serial();
    let fx = Fixture::spawn("env-clear", &[]);
    let pid = fx.proc("env-cleared").pid;
    let env = environ_of(pid).expect("readable environ");
    assert!(env.is_empty(), "{env:?}");
    assert_eq!(
        cmdline_of(pid).expect("cmdline").get(1).map(String::as_str),
        Some("idle")
    );
    drop_and_check(fx);
}

#[test]
fn unset_marker_child_lacks_only_the_marker() {
    let _serial = serial();
    let fx = Fixture::builder("unset-marker")
        .env("RUNNER_TRACKING_ID", "github_cij_selftest")
        .env("CIJ_SELFTEST_KEEP", "kept")
        .spawn();
    let pid = fx.proc("unmarked").pid;
    assert!(!environ_has(pid, "RUNNER_TRACKING_ID"));
    assert!(environ_of(pid)
        .expect("environ")
        .contains(&"CIJ_SELFTEST_KEEP=kept".to_string()));
    drop_and_check(fx);
}

#[test]
fn unset_marker_without_the_marker_fails_clearly() {
    let _serial = serial();
    let result = catch_unwind(|| {
        Fixture::builder("unset-marker")
            .env_remove("RUNNER_TRACKING_ID")
            .spawn()
    });
    let text = panic_text(result.expect_err("must fail without RUNNER_TRACKING_ID"));
    assert!(text.contains("RUNNER_TRACKING_ID is not set"), "{text}");
}

#[test]
fn rename_child_hides_the_fixture_name() {
    let _serial = serial();
    let fx = Fixture::spawn("rename", &[]);
    let pid = fx.proc("renamed").pid;
    assert_eq!(comm_of(pid).as_deref(), Some("innocent"));
    let argv = cmdline_of(pid).expect("cmdline");
    assert_eq!(argv.first().map(String::as_str), Some("innocent-daemon"));
    assert!(argv.iter().all(|a| !a.contains("cij-fixture")), "{argv:?}");
    let exe = std::fs::read_link(format!("/proc/{pid}/exe")).expect("exe link");
    assert!(
        exe.ends_with("cij-fixture"),
        "only /proc/PID/exe still tells: {}",
        exe.display()
    );
    drop_and_check(fx);
}

#[test]
fn new_pgrp_child_leads_its_own_group() {
    let _serial = serial();
    let fx = Fixture::spawn("new-pgrp", &[]);
    let leader = fx.proc("pgrp-leader").ident();
    let stat = stat_of(&leader);
    assert_eq!(stat.pgid, leader.pid);
    assert_ne!(stat.pgid, fx.fixture().pid);
    assert_eq!(stat.sid, own_stat().sid, "same session, new group");
    drop_and_check(fx);
}

#[test]
fn ignore_term_child_survives_sigterm() {
    let _serial = serial();
    let fx = Fixture::spawn("ignore-term", &[]);
    let control = Fixture::spawn("sleep", &[]);
    let ignorer = fx.proc("term-ignorer").ident();
    let sleeper = control.proc("sleeper").ident();
    assert_ne!(
        sigmask_of(ignorer.pid, "SigIgn").expect("SigIgn") & SIGTERM_BIT,
        0
    );
    assert!(kill_ident(&ignorer, Signal::TERM));
    assert!(kill_ident(&sleeper, Signal::TERM));
    // The control got the same signal at the same time and died of it...
    assert!(
        wait_dead(&[sleeper], WAIT),
        "control process survived SIGTERM"
    );
    // ...while the ignorer is alive, with nothing pending: the kernel discarded SIGTERM.
    assert!(alive(&ignorer), "SIGTERM killed the ignorer");
    let pending = sigmask_of(ignorer.pid, "SigPnd").expect("SigPnd")
        | sigmask_of(ignorer.pid, "ShdPnd").expect("ShdPnd");
    assert_eq!(pending & SIGTERM_BIT, 0);
    drop_and_check(control);
    drop_and_check(fx);
}

#[test]
fn respawner_replaces_killed_children_at_most_max_times() {
    let _serial = serial();
    let fx = Fixture::spawn("respawner", &["--max", "2"]);
    let respawner = fx.proc("respawner").ident();
    let mut child = fx.proc("child").ident();
    assert_eq!(children_of(respawner.pid), vec![child]);
    let mut seen = vec![child];
    for round in 1..=2 {
        assert!(kill_ident(&child, Signal::KILL));
        let mut replacement = None;
        let appeared = wait_until(Instant::now() + WAIT, || {
            replacement = children_of(respawner.pid)
                .into_iter()
                .find(|c| !seen.contains(c));
            replacement.is_some()
        });
        assert!(appeared, "replacement {round} never appeared");
        child = replacement.expect("found above");
        assert_eq!(
            cwd_of(child.pid).as_deref(),
            Some(fx.dir()),
            "replacements inherit the cwd"
        );
        seen.push(child);
    }
    // Both replacements are used up: after this kill the respawner stays childless.
    assert!(kill_ident(&child, Signal::KILL));
    let done = wait_until(Instant::now() + WAIT, || {
        comm_of(respawner.pid).as_deref() == Some("respawn-done")
    });
    assert!(done, "respawner never reported exhaustion");
    assert!(children_of(respawner.pid).is_empty());
    assert!(alive(&respawner));
    drop_and_check(fx);
    assert!(seen.iter().all(|id| !alive(id)));
}

#[test]
fn drop_kills_unreported_descendants() {
    let _serial = serial();
    let fx = Fixture::spawn("respawner", &["--max", "5"]);
    let respawner = fx.proc("respawner").ident();
    let first = fx.proc("child").ident();
    assert!(kill_ident(&first, Signal::KILL));
    let mut replacement = None;
    let appeared = wait_until(Instant::now() + WAIT, || {
        replacement = children_of(respawner.pid).into_iter().find(|c| *c != first);
        replacement.is_some()
    });
    assert!(appeared, "no replacement appeared");
    let replacement = replacement.expect("found above");
    assert!(
        !fx.spawned().idents().contains(&replacement),
        "the replacement is not reported"
    );
    drop_and_check(fx);
    assert!(
        !alive(&replacement),
        "cleanup missed the unreported replacement"
    );
}

#[test]
fn chain_of_50_is_one_line_of_descent() {
    let _serial = serial();
    let fx = Fixture::spawn("chain", &["--depth", "50"]);
    let chain = fx.spawned().with_role("chain");
    assert_eq!(chain.len(), 50);
    let stats: Vec<Stat> = chain.iter().map(|p| stat_of(&p.ident())).collect();
    for pair in stats.windows(2) {
        assert_eq!(
            pair[1].ppid, pair[0].pid,
            "each link is the parent of the next"
        );
    }
    drop_and_check(fx);
}

#[test]
fn groups_100_by_10_is_1000_processes_in_100_groups() {
    let _serial = serial();
    let started = Instant::now();
    let fx = Fixture::spawn("groups", &["--groups", "100", "--per-group", "10"]);
    let took = started.elapsed();
    assert!(
        took < Duration::from_secs(30),
        "1000 processes took {took:?}"
    );
    assert_eq!(fx.procs().len(), 1000);
    let mut pgids = HashSet::new();
    for group in fx.procs().chunks(10) {
        let leader = &group[0];
        assert_eq!(leader.role, "leader");
        assert_eq!(stat_of(&leader.ident()).pgid, leader.pid);
        for member in &group[1..] {
            assert_eq!(member.role, "member");
            let stat = stat_of(&member.ident());
            assert_eq!(stat.pgid, leader.pid);
            assert_eq!(stat.ppid, leader.pid);
        }
        pgids.insert(leader.pid);
    }
    assert_eq!(pgids.len(), 100);
    drop_and_check(fx);
}

#[test]
fn tcp_listen_port_is_listening() {
    let _serial = serial();
    let fx = Fixture::spawn("tcp-listen", &[]);
    let listener = fx.proc("tcp-listener").pid;
    let port = match fx.spawned().ports.as_slice() {
        [Port::Tcp { addr, port, pid }] if addr == "127.0.0.1" && *pid == listener => *port,
        other => panic!("unexpected ports {other:?}"),
    };
    assert_ne!(port, 0);
    assert!(port_is_listening_tcp(port));
    drop_and_check(fx);
    assert!(wait_until(
        Instant::now() + WAIT,
        || !port_is_listening_tcp(port)
    ));
}

#[test]
fn tcp_listen_takes_the_requested_port() {
    let _serial = serial();
    // Ask the kernel for a free port, release it, and have the fixture take it.
    let probe = std::net::TcpListener::bind("127.0.0.1:0").expect("bind probe");
    let port = probe.local_addr().expect("probe address").port();
    drop(probe);
    let fx = Fixture::spawn("tcp-listen", &["--port", &port.to_string()]);
    assert!(matches!(fx.spawned().ports.as_slice(), [Port::Tcp { port: p, .. }] if *p == port));
    assert!(port_is_listening_tcp(port));
    drop_and_check(fx);
}

#[test]
fn fixture_failure_panics_with_the_childs_error() {
    let _serial = serial();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = taken.local_addr().expect("address").port().to_string();
    let result = catch_unwind(|| Fixture::spawn("tcp-listen", &["--port", &port]));
    let text = panic_text(result.expect_err("the port is taken"));
    assert!(
        text.contains("binding 127.0.0.1:") && text.contains("in use"),
        "{text}"
    );
}

#[test]
fn unix_listen_path_is_listening() {
    let _serial = serial();
    let fx = Fixture::spawn("unix-listen", &["--path", "listen.sock"]);
    let path = fx.dir().join("listen.sock");
    let listener = fx.proc("unix-listener").pid;
    assert_eq!(
        fx.spawned().ports,
        vec![Port::Unix {
            path: path.clone(),
            pid: listener
        }]
    );
    assert!(
        unix_listening(&path),
        "{} not in /proc/net/unix",
        path.display()
    );
    drop_and_check(fx);
    assert!(wait_until(Instant::now() + WAIT, || !unix_listening(&path)));
}

#[test]
fn drop_privs_child_runs_as_nobody() {
    let _serial = serial();
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: drop-privs needs root");
        return;
    }
    let fx = Fixture::spawn("drop-privs", &["--uid", "65534"]);
    let pid = fx.proc("unprivileged").pid;
    assert_eq!(ids_of(pid, "Uid"), Some(vec![65534; 4]));
    assert_eq!(ids_of(pid, "Gid"), Some(vec![65534; 4]));
    assert_eq!(status_field(pid, "Groups").as_deref(), Some(""));
    drop_and_check(fx);
}

#[test]
fn stay_keeps_the_fixture_until_stdin_closes() {
    let _serial = serial();
    let mut fx = Fixture::builder("sleep").stay().spawn();
    let fixture = fx.fixture();
    let sleeper = fx.proc("sleeper").ident();
    assert!(alive(&fixture));
    assert_eq!(stat_of(&sleeper).ppid, fixture.pid);
    fx.close_stdin();
    let status = fx.wait_fixture_exit(WAIT).expect("exits on EOF");
    assert!(status.success(), "{status}");
    assert!(alive(&sleeper), "the fixture cleans nothing up");
    drop_and_check(fx);
}

#[test]
fn drop_cleans_up_when_the_test_panics() {
    let _serial = serial();
    let seen: Mutex<(Vec<Ident>, PathBuf)> = Mutex::new((Vec::new(), PathBuf::new()));
    let result = catch_unwind(AssertUnwindSafe(|| {
        let fx = Fixture::spawn("chain", &["--depth", "3"]);
        *seen.lock().expect("lock") = (fx.idents(), fx.dir().to_path_buf());
        panic!("deliberate panic with a live fixture");
    }));
    assert_eq!(
        panic_text(result.expect_err("the body panics")),
        "deliberate panic with a live fixture"
    );
    let (ids, dir) = seen.into_inner().expect("lock");
    assert_eq!(ids.len(), 4, "fixture + 3 links");
    assert!(ids.iter().all(|id| !alive(id)), "{ids:?}");
    assert!(live_under(&dir).is_empty());
}

#[test]
fn leftovers_lists_live_processes_under_a_dir() {
    let _serial = serial();
    let fx = Fixture::spawn("sleep", &[]);
    let sleeper = fx.proc("sleeper").pid;
    let dir = fx.dir().to_path_buf();
    let run = || {
        Command::new(fixture_exe())
            .arg("leftovers")
            .arg("--dir")
            .arg(&dir)
            .output()
            .expect("run leftovers")
    };
    let before = run();
    assert_eq!(before.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&before.stdout);
    assert!(
        stdout
            .lines()
            .any(|l| l.starts_with(&format!("{sleeper}\t"))),
        "{stdout}"
    );
    drop_and_check(fx);
    let after = run();
    assert_eq!(
        after.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&after.stdout)
    );
    assert!(after.stdout.is_empty());
}

#[test]
fn bad_usage_exits_2() {
    let _serial = serial();
    let scratch = ScratchDir::new("bad_usage");
    let cases: &[&[&str]] = &[
        &[],
        &["bogus"],
        &["sleep", "extra"],
        &["sleep", "--max", "3"],
        &["chain", "--depth", "0"],
        &["chain", "--depth"],
        &["groups", "--groups", "1000", "--per-group", "100"],
        &["tcp-listen", "--port", "70000"],
        &["unix-listen"],
        &["drop-privs"],
        &["leftovers"],
        &["leftovers", "--dir", ".", "--stay"],
    ];
    for args in cases {
        let out = Command::new(fixture_exe())
            .args(*args)
            .current_dir(scratch.path())
            .stdin(Stdio::null())
            .output()
            .expect("run cij-fixture");
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(out.stdout.is_empty(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).starts_with("cij-fixture: "),
            "{args:?}"
        );
    }
    // Had a case started anything, it would be running in the scratch dir (whose Drop
    // would then kill it).
    let stray = live_under(scratch.path());
    assert!(stray.is_empty(), "bad usage started processes: {stray:?}");
}
