//! `ci-janitor snapshot` then `ci-janitor sweep`, the way a CI job uses them: attribution by
//! RUNNER_TRACKING_ID, by session and by descent; what must survive (the baseline, other
//! sessions, our ancestors, other users); and state files that are missing or wrong.
//!
//! Every sweep here runs in a session of its own (or inside a job script that has one), so
//! the "same session" rule can never reach the session the tests themselves run in.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::janitor::{janitor, janitor_exe, janitor_in_new_session, output_of, snapshot, Report};
use crate::support::{alive, fixture_exe, serial, wait_dead, Fixture, ScratchDir};

fn unique_tracking_id(label: &str) -> String {
    format!("github_test_{label}_{}", std::process::id())
}

/// `ci-janitor sweep` in a new session with this job's RUNNER_TRACKING_ID.
fn sweep(dir: &Path, state: &Path, tracking: Option<&str>, extra: &[&str]) -> (Report, i32) {
    let report = dir.join("report.json");
    let _ = std::fs::remove_file(&report);
    let mut c = janitor_in_new_session();
    c.current_dir(dir)
        .args(["sweep", "--grace", "1s", "--color", "never", "--state"])
        .arg(state)
        .arg("--report-json")
        .arg(&report)
        .args(extra);
    if let Some(t) = tracking {
        c.env("RUNNER_TRACKING_ID", t);
    }
    let out = output_of(c);
    (Report::read(&report), out.status.code().unwrap_or(-1))
}

#[test]
fn tracking_id_finds_a_setsid_daemon_and_spares_the_rest() {
    let _g = serial();
    let dir = ScratchDir::new("sweep_tid");
    let tid = unique_tracking_id("tid");
    // Alive at snapshot time, even with this job's marker: never touched.
    let baseline = Fixture::builder("double-fork")
        .env("RUNNER_TRACKING_ID", &tid)
        .spawn();
    let state = snapshot(dir.path());
    // The job's daemon (escaped into its own session, orphaned, but marked).
    let leak = Fixture::builder("double-fork")
        .env("RUNNER_TRACKING_ID", &tid)
        .spawn();
    // Negative control: born during the job in another session, no marker.
    let stranger = Fixture::builder("double-fork")
        .env_remove("RUNNER_TRACKING_ID")
        .spawn();

    let (r, code) = sweep(dir.path(), &state, Some(&tid), &[]);
    assert_eq!(code, 1);
    for p in leak.procs() {
        let e = r.entry(p.ident());
        assert_eq!(e.class, "job");
        assert_eq!(e.evidence, vec!["ci-marker"]);
    }
    assert!(wait_dead(&leak.idents(), Duration::from_secs(5)));
    for id in baseline.spawned().idents() {
        assert!(alive(&id), "a baseline process was touched");
        assert!(!r.by_ident().contains_key(&id));
    }
    for p in stranger.procs() {
        assert!(alive(&p.ident()), "the negative control was killed");
        let e = r.entry(p.ident());
        assert_eq!(e.class, "unattributed");
        assert_eq!(r.fate(p.ident()), "none");
    }
}

#[test]
fn without_the_marker_the_same_daemon_is_another_jobs() {
    // The negative control of the test above: same scenario, no RUNNER_TRACKING_ID for the
    // sweep. The daemon carries a GitHub job's marker and the sweep's job has none: it is
    // that other job's, seen but never killed, and the run does not fail on it.
    let _g = serial();
    let dir = ScratchDir::new("sweep_nomark");
    let tid = unique_tracking_id("nomark");
    let state = snapshot(dir.path());
    let leak = Fixture::builder("double-fork")
        .env("RUNNER_TRACKING_ID", &tid)
        .spawn();
    let unmarked = Fixture::builder("double-fork")
        .env_remove("RUNNER_TRACKING_ID")
        .spawn();
    // (No --kill-unattributed here: it would reach whatever else the machine started
    // meanwhile, and this suite shares the machine.)
    let (r, code) = sweep(dir.path(), &state, None, &[]);
    assert_eq!(code, 0);
    for p in leak.procs() {
        assert_eq!(r.entry(p.ident()).class, "other-job");
        assert!(alive(&p.ident()));
    }
    // Unmarked: unattributed, reported, left alone.
    for p in unmarked.procs() {
        assert_eq!(r.entry(p.ident()).class, "unattributed");
        assert!(alive(&p.ident()));
    }
}

/// A job as a shell script in its own session: the steps and the sweep share it, as a
/// runner's steps share the runner's session.
fn job_script(dir: &Path, body: &str) -> std::process::Output {
    let mut c = Command::new("setsid");
    c.arg("--wait")
        .args(["sh", "-c", body])
        .current_dir(dir)
        .env("JANITOR", janitor_exe())
        .env("FIXTURE", fixture_exe())
        .env_remove("RUNNER_TRACKING_ID")
        .env_remove("CI_JANITOR_RUN");
    output_of(c)
}

#[test]
fn a_shared_session_is_a_hint_never_evidence() {
    // Regression: concurrent jobs under one agent share its session; job A's sweep killed
    // job B's processes through the session rule. An orphan that scrubbed its environment
    // shares the sweep's session here, and nothing else says it is the job's: reported,
    // with the session as a hint, and left alone. (The guard attributes it: see the guard
    // tests.) A process of another job in the same session is that job's.
    let _g = serial();
    let dir = ScratchDir::new("sweep_session");
    let out = job_script(
        dir.path(),
        r#"set -e
        eval "$("$JANITOR" snapshot --export --state state.json)"
        "$FIXTURE" env-clear > fixture.json
        CI_JANITOR_RUN=another-job "$FIXTURE" sleep > other.json
        set +e
        "$JANITOR" sweep --state state.json --grace 1s --report-json report.json
        echo "sweep=$?"
        "#,
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("sweep=0"), "{text}");
    assert!(text.contains("nothing attributes"), "{text}");
    let read = |f: &str| -> crate::support::Spawned {
        serde_json::from_str(std::fs::read_to_string(dir.path().join(f)).unwrap().trim()).unwrap()
    };
    let scrubbed = read("fixture.json");
    let other = read("other.json");
    let r = Report::read(&dir.path().join("report.json"));
    for p in &scrubbed.procs {
        let e = r.entry(p.ident());
        if p.role == "env-cleared" {
            assert_eq!(e.class, "unattributed", "{e:?}");
            assert!(alive(&p.ident()));
        }
    }
    for p in &other.procs {
        assert_eq!(r.entry(p.ident()).class, "other-job");
        assert!(alive(&p.ident()));
    }
    for s in [&scrubbed, &other] {
        for id in s.idents() {
            crate::support::kill_ident(&id, crate::support::Signal::KILL);
        }
    }
}

#[test]
fn the_sweep_spares_itself_and_its_ancestors() {
    let _g = serial();
    let dir = ScratchDir::new("sweep_self");
    // The snapshot comes first, so the job shell and everything in it are new.
    let state = snapshot(dir.path());
    // The job's marker, as `snapshot --export` would have set it.
    let script = format!(
        r#"export CI_JANITOR_RUN=sweep-self-{}
        "$FIXTURE" sleep > fixture.json
        "$JANITOR" sweep --state {} --grace 1s --report-json report.json
        echo "the job shell is still alive: $?""#,
        std::process::id(),
        state.display()
    );
    let out = job_script(dir.path(), &script);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("the job shell is still alive: 1"), "{text}");
    let r = Report::read(&dir.path().join("report.json"));
    let protected: Vec<&str> = r
        .processes
        .iter()
        .filter(|p| p.class == "protected")
        .map(|p| {
            p.protection
                .as_ref()
                .and_then(|v| v["reason"].as_str())
                .unwrap_or("?")
        })
        .collect();
    // The job shell (new since the snapshot) is our ancestor; the sweep itself is never
    // even a candidate.
    assert_eq!(protected, vec!["ancestor"], "{r:#?}");
    let s: crate::support::Spawned = serde_json::from_str(
        std::fs::read_to_string(dir.path().join("fixture.json"))
            .unwrap()
            .trim(),
    )
    .unwrap();
    assert_eq!(r.entry(s.procs[0].ident()).class, "job");
}

#[test]
fn another_users_process_is_never_ours() {
    let _g = serial();
    if !rustix::process::geteuid().is_root() {
        eprintln!("skipped: needs root to start a process as another user");
        return;
    }
    let dir = ScratchDir::new("sweep_user");
    let tid = unique_tracking_id("user");
    let state = snapshot(dir.path());
    // A process of uid 65533 with no evidence: root could kill it, and must not.
    let other = Fixture::builder("drop-privs")
        .args(&["--uid", "65533"])
        .env_remove("RUNNER_TRACKING_ID")
        .spawn();
    let (r, code) = sweep(dir.path(), &state, Some(&tid), &[]);
    assert_eq!(code, 0);
    for p in other.procs() {
        assert_eq!(r.entry(p.ident()).class, "unattributed");
        assert!(alive(&p.ident()));
    }

    // An unprivileged sweep told to kill the unattributed cannot: EPERM is reported as
    // "not ours to kill", and the process lives.
    let open = dir.path().join("open");
    // The unprivileged user's own state directory and file: ci-janitor reads no state
    // another user could have written.
    std::fs::create_dir(&open).unwrap();
    let state_copy = open.join("state.json");
    std::fs::copy(&state, &state_copy).unwrap();
    std::os::unix::fs::chown(&open, Some(65534), Some(65534)).unwrap();
    std::os::unix::fs::chown(&state_copy, Some(65534), Some(65534)).unwrap();
    let report = open.join("report.json");
    let mut c = janitor_in_new_session();
    std::os::unix::process::CommandExt::uid(&mut c, 65534);
    std::os::unix::process::CommandExt::gid(&mut c, 65534);
    c.current_dir(&open)
        .args([
            "sweep",
            "--grace",
            "1s",
            "--kill-unattributed",
            "--fail-on",
            "never",
            "--state",
        ])
        .arg(&state_copy)
        .arg("--report-json")
        .arg(&report);
    let out = output_of(c);
    assert_eq!(out.status.code(), Some(0));
    let r = Report::read(&report);
    for p in other.procs() {
        assert_eq!(r.fate(p.ident()), "not-permitted");
        assert!(alive(&p.ident()));
    }
}

#[test]
fn the_debug_log_explains_every_kill() {
    // CI_JANITOR_LOG=debug: for each process, the rule that decided it; for each signal,
    // the identity it went to and what the kernel answered.
    let _g = serial();
    let dir = ScratchDir::new("sweep_debug");
    let tid = unique_tracking_id("debug");
    let state = snapshot(dir.path());
    let leak = Fixture::builder("sleep")
        .env("RUNNER_TRACKING_ID", &tid)
        .spawn();
    let mut c = janitor_in_new_session();
    c.current_dir(dir.path())
        .env("RUNNER_TRACKING_ID", &tid)
        .env("CI_JANITOR_LOG", "debug")
        .args(["sweep", "--grace", "1s", "--color", "never", "--state"])
        .arg(&state);
    let out = output_of(c);
    assert_eq!(out.status.code(), Some(1));
    let log = String::from_utf8_lossy(&out.stderr);
    for p in leak.procs() {
        let pid = format!("pid={}", p.pid);
        assert!(
            log.lines()
                .any(|l| l.contains("classified") && l.contains(&pid) && l.contains("CiMarker")),
            "no decision for {pid}:\n{log}"
        );
        assert!(
            log.lines()
                .any(|l| l.contains("pidfd_send_signal") && l.contains(&pid) && l.contains("Term")),
            "no signal for {pid}:\n{log}"
        );
    }
    assert!(wait_dead(&leak.idents(), Duration::from_secs(5)));
}

#[test]
fn dry_run_reports_the_leak_and_it_stays_alive() {
    let _g = serial();
    let dir = ScratchDir::new("sweep_dry");
    let tid = unique_tracking_id("dry");
    let state = snapshot(dir.path());
    let leak = Fixture::builder("tcp-listen")
        .env("RUNNER_TRACKING_ID", &tid)
        .spawn();
    let (r, code) = sweep(dir.path(), &state, Some(&tid), &["--dry-run"]);
    assert_eq!(code, 1);
    assert!(r.dry_run);
    for p in leak.procs() {
        assert_eq!(r.fate(p.ident()), "would-kill");
        assert!(alive(&p.ident()));
    }
    assert_eq!(r.ports.len(), 1);
    assert_eq!(r.ports[0].outcome, "not-checked");
}

#[test]
fn bad_state_files_never_widen_the_kill() {
    let _g = serial();
    let dir = ScratchDir::new("sweep_badstate");
    let tid = unique_tracking_id("bad");
    let state = snapshot(dir.path());
    let leak = Fixture::builder("sleep")
        .env("RUNNER_TRACKING_ID", &tid)
        .spawn();
    let good = std::fs::read_to_string(&state).unwrap();
    let cases: Vec<(&str, Option<String>, &str)> = vec![
        ("missing", None, "find a snapshot at"),
        ("empty", Some(String::new()), "not a ci-janitor state file"),
        (
            "truncated",
            Some(good[..good.len() / 2].to_owned()),
            "not a ci-janitor state file",
        ),
        (
            "corrupt",
            Some("{\"kind\": 12".to_owned()),
            "not a ci-janitor state file",
        ),
        (
            "other JSON",
            Some("[1,2,3]".to_owned()),
            "not a ci-janitor state file",
        ),
        (
            "wrong version",
            Some(good.replacen("\"schema_version\":2", "\"schema_version\":3", 1)),
            "schema version 3",
        ),
        (
            // An edit that would make the baseline's processes look new.
            "tampered",
            Some(good.replacen("\"processes\":[{", "\"processes\":[{\"x\":1,", 1)),
            "does not match its checksum",
        ),
        (
            "edited boot id",
            Some(good.replacen("\"boot_id\":\"", "\"boot_id\":\"0", 1)),
            "does not match its checksum",
        ),
    ];
    for (name, content, message) in cases {
        let path = dir.path().join(format!("{}.json", name.replace(' ', "_")));
        if let Some(c) = &content {
            std::fs::write(&path, c).unwrap();
        }
        let mut c = janitor_in_new_session();
        c.current_dir(dir.path())
            .env("RUNNER_TRACKING_ID", &tid)
            .args(["sweep", "--grace", "1s", "--state"])
            .arg(&path);
        let out = output_of(c);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{name}: {stderr}");
        assert!(stderr.contains(message), "{name}: {stderr}");
        for id in leak.spawned().idents() {
            assert!(
                alive(&id),
                "{name}: a sweep with a bad state file killed {id:?}"
            );
        }
    }
}

#[test]
fn diff_shows_the_leak_with_its_port() {
    let _g = serial();
    let dir = ScratchDir::new("diff_port");
    let state = snapshot(dir.path());
    let leak = Fixture::builder("tcp-listen").spawn();
    let mut c = janitor();
    c.args(["diff", "--color", "never", "--state"]).arg(&state);
    let out = output_of(c);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let crate::support::Port::Tcp { port, pid, .. } = &leak.spawned().ports[0] else {
        panic!()
    };
    let line = text
        .lines()
        .find(|l| l.contains(&format!("{pid} ")))
        .unwrap_or_else(|| panic!("{pid} not in diff:\n{text}"));
    assert!(
        line.contains(&format!("listening: tcp 127.0.0.1:{port}")),
        "{line}"
    );

    let mut c = janitor();
    c.args(["diff", "--json", "--state"]).arg(&state);
    let out = output_of(c);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let entry = v["appeared"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == *pid)
        .expect("leak in diff --json");
    assert_eq!(entry["listening"][0], format!("tcp 127.0.0.1:{port}"));
    assert!(alive(&leak.spawned().idents()[0]), "diff must not kill");
}

#[test]
fn a_group_is_killed_whole_only_when_every_member_is_ours() {
    // With no grace, a process group all of whose members are the job's takes one SIGKILL
    // (through its leader's pidfd); a group that also holds a process that is not the
    // job's (here another job's, forked by the job's leader) is killed member by member,
    // and that process survives.
    let _g = serial();
    let dir = ScratchDir::new("sweep_whole_group");
    let run = group_sweep(
        dir.path(),
        r#"setsid sh -c 'CI_JANITOR_RUN=another-job sleep 1000 & echo $! > outsider.pid; exec sleep 1000' \
          < /dev/null > /dev/null 2>&1 &
        echo $! > mixed.pid
        setsid sh -c 'sleep 1000 & echo $! > member.pid; exec sleep 1000' < /dev/null > /dev/null 2>&1 &
        echo $! > whole.pid
        n=0
        while [ ! -s outsider.pid ] || [ ! -s member.pid ]; do
          n=$((n + 1)); [ $n -lt 400 ] || exit 3; sleep 0.05
        done"#,
        &["mixed", "outsider", "whole", "member"],
    );
    let (ids, log) = (&run.ids, &run.log);
    let dead = wait_dead(
        &[ids["mixed"], ids["whole"], ids["member"]],
        Duration::from_secs(5),
    );
    let outsider_alive = alive(&ids["outsider"]);
    assert!(dead, "the job's processes were killed");
    assert!(
        outsider_alive,
        "another job's process in a job's group survived"
    );
    let r = Report::read(&dir.path().join("report.json"));
    assert_eq!(r.entry(ids["outsider"]).class, "other-job");
    let group_signal = |pgid: i32| {
        log.lines()
            .any(|l| l.contains("to the process group") && l.contains(&format!("pgid={pgid}")))
    };
    assert!(
        !group_signal(ids["mixed"].pid),
        "a mixed group was signalled whole:\n{log}"
    );
    assert!(group_signal(ids["whole"].pid), "no group signal:\n{log}");
    assert!(
        log.lines().any(|l| l.contains("pidfd_send_signal")
            && l.contains(&format!("pid={}", ids["mixed"].pid))
            && l.contains("Kill")),
        "the mixed group's leader was signalled alone:\n{log}"
    );
}

#[test]
fn a_group_is_not_killed_whole_while_its_session_holds_another_jobs_process() {
    // The kernel signals whoever is in a group when the signal is sent, and any process of
    // the group's session may join it. So a group of the job's processes takes one signal
    // only when its whole session is the job's: here the session also holds another job's
    // process (in a group of its own), so the job's group is killed member by member, and
    // the other job's process survives.
    let _g = serial();
    let dir = ScratchDir::new("sweep_session_group");
    let run = group_sweep(
        dir.path(),
        r#"setsid sh -c '
          CI_JANITOR_RUN=another-job python3 -c "import os; os.setpgid(0, 0); os.execvp(\"sleep\", [\"sleep\", \"1000\"])" &
          echo $! > outsider.pid
          sleep 1000 & echo $! > member.pid
          exec sleep 1000' < /dev/null > /dev/null 2>&1 &
        echo $! > leader.pid
        n=0
        while [ ! -s outsider.pid ] || [ ! -s member.pid ] \
          || [ "$(cut -d' ' -f5 /proc/$(cat outsider.pid)/stat 2>/dev/null)" != "$(cat outsider.pid)" ]; do
          n=$((n + 1)); [ $n -lt 400 ] || exit 3; sleep 0.05
        done"#,
        &["leader", "outsider", "member"],
    );
    let (ids, log) = (&run.ids, &run.log);
    let dead = wait_dead(&[ids["leader"], ids["member"]], Duration::from_secs(5));
    let outsider_alive = alive(&ids["outsider"]);
    assert!(dead, "the job's processes were killed:\n{log}");
    assert!(
        outsider_alive,
        "another job's process in the job's session survived"
    );
    let r = Report::read(&dir.path().join("report.json"));
    assert_eq!(r.entry(ids["outsider"]).class, "other-job");
    assert!(
        !log.lines().any(|l| l.contains("to the process group")),
        "a group was signalled whole though its session holds another job's process:\n{log}"
    );
}

#[test]
fn a_proc_of_another_pid_namespace_is_refused_before_any_signal() {
    // `unshare --pid --fork` without `--mount-proc`: /proc still shows the outer namespace,
    // whose pids name other processes than the ones a signal inside would reach. The sweep
    // refuses before it reads or signals anything, and says why.
    let _g = serial();
    let dir = ScratchDir::new("sweep_foreign_proc");
    let state = snapshot(dir.path());
    let mut c = Command::new("unshare");
    c.args(["--pid", "--fork"])
        .arg(janitor_exe())
        .args(["sweep", "--state"])
        .arg(&state)
        .args(["--grace", "0s", "--color", "never", "--report-json"])
        .arg(dir.path().join("report.json"));
    let out = output_of(c);
    let err = String::from_utf8_lossy(&out.stderr);
    // 3: the sweep could not run (the machine's fault, not the job's leaks: not 1).
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("another pid namespace"), "{err}");
    assert!(!dir.path().join("report.json").exists(), "{err}");
}

/// A job (see [`job_script`]) that runs `setup` (which starts processes, writes each one's
/// pid to NAME.pid and waits for them), records the `names`' identities, then sweeps at
/// grace 0 with every signal in the debug log. Dropping it kills what is left of them.
fn group_sweep(dir: &Path, setup: &str, names: &[&str]) -> GroupSweep {
    let body = format!(
        r#"set -e
        eval "$("$JANITOR" snapshot --export --state state.json)"
        {setup}
        for f in {names}; do
          p=$(cat $f.pid); echo "$f $p $(cut -d' ' -f22 /proc/$p/stat)"
        done > ids.txt
        set +e
        CI_JANITOR_LOG=debug "$JANITOR" sweep --state state.json --grace 0s --color never \
          --report-json report.json 2> log.txt
        echo "sweep=$?"
        "#,
        names = names.join(" ")
    );
    let out = job_script(dir, &body);
    let run = GroupSweep {
        ids: read_ids(&dir.join("ids.txt")),
        log: std::fs::read_to_string(dir.join("log.txt")).unwrap_or_default(),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("sweep=1") && run.ids.len() == names.len(),
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    run
}

struct GroupSweep {
    ids: std::collections::HashMap<String, crate::support::Ident>,
    log: String,
}

impl Drop for GroupSweep {
    fn drop(&mut self) {
        for id in self.ids.values() {
            if alive(id) {
                crate::support::kill_ident(id, crate::support::Signal::KILL);
            }
        }
    }
}

/// `NAME PID START_TICKS` lines, as the job scripts write them.
fn read_ids(path: &Path) -> std::collections::HashMap<String, crate::support::Ident> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let name = f.next()?.to_owned();
            let pid = f.next()?.parse().ok()?;
            let start_ticks = f.next()?.parse().ok()?;
            Some((name, crate::support::Ident { pid, start_ticks }))
        })
        .collect()
}

#[test]
fn children_forked_while_the_sweep_works_are_found_in_a_later_round() {
    // At grace 0 the sweep reads, classifies, then kills: the window between a process's
    // reading and its kill is where it can fork. Here a job process forks a child every
    // 10 ms in the job's session (which holds the job's shell, not a target: every process
    // gets its own SIGKILL), so children are born between the reading and the kill of the
    // forker. Each child it recorded must be in the report, found in the round that read
    // it, and dead.
    let _g = serial();
    let dir = ScratchDir::new("sweep_forked_meanwhile");
    let run = group_sweep(
        dir.path(),
        r#"sh -c 'while :; do
            sleep 1000 &
            echo "$! $(cut -d" " -f22 /proc/$!/stat)" >> kids.txt
            sleep 0.01
          done' < /dev/null > /dev/null 2>&1 &
        echo $! > forker.pid
        n=0
        while [ "$(wc -l < kids.txt 2>/dev/null || echo 0)" -lt 3 ]; do
          n=$((n + 1)); [ $n -lt 400 ] || exit 3; sleep 0.05
        done"#,
        &["forker"],
    );
    let kids: Vec<crate::support::Ident> = std::fs::read_to_string(dir.path().join("kids.txt"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let pid = f.next()?.parse().ok()?;
            let start_ticks = f.next()?.parse().ok()?;
            Some(crate::support::Ident { pid, start_ticks })
        })
        .collect();
    let cleanup = GroupSweep {
        ids: kids
            .iter()
            .enumerate()
            .map(|(i, id)| (format!("kid{i}"), *id))
            .collect(),
        log: String::new(),
    };
    assert!(kids.len() >= 3, "kids: {kids:?}");
    assert!(
        wait_dead(&[run.ids["forker"]], Duration::from_secs(5)),
        "the forker was killed:\n{}",
        run.log
    );
    let r = Report::read(&dir.path().join("report.json"));
    for kid in &kids {
        assert!(
            wait_dead(&[*kid], Duration::from_secs(5)),
            "{kid:?} survived:\n{}",
            run.log
        );
        let e = r.entry(*kid);
        assert_eq!(e.class, "job", "{e:?}");
    }
    drop(cleanup);
}

#[test]
fn a_job_group_beside_a_bystander_group_in_its_session_is_killed_member_by_member() {
    // A session started before the baseline (its leader and a bystander in a group of its
    // own are not new) in which the job then starts a group of its own processes. The
    // job's group is all targets, but its session is not: no group signal, each member
    // its own SIGKILL, and the bystander and the leader survive.
    let _g = serial();
    let dir = ScratchDir::new("sweep_bystander_group");
    let body = r#"set -e
        setsid sh -c '
          python3 -c "import os; os.setpgid(0, 0); os.execvp(\"sleep\", [\"sleep\", \"1000\"])" &
          echo $! > bystander.pid
          n=0
          while [ ! -s go ]; do n=$((n + 1)); [ $n -lt 400 ] || exit 3; sleep 0.05; done
          . ./go
          python3 -c "
import os, subprocess
os.setpgid(0, 0)
c = subprocess.Popen([\"sleep\", \"1000\"])
open(\"member.pid.tmp\", \"w\").write(str(c.pid))
os.rename(\"member.pid.tmp\", \"member.pid\")
os.execvp(\"sleep\", [\"sleep\", \"1000\"])" &
          echo $! > group.pid
          exec sleep 1000' < /dev/null > /dev/null 2>&1 &
        echo $! > leader.pid
        n=0
        while [ ! -s bystander.pid ] \
          || [ "$(cut -d' ' -f5 /proc/$(cat bystander.pid)/stat 2>/dev/null)" != "$(cat bystander.pid)" ]; do
          n=$((n + 1)); [ $n -lt 400 ] || exit 3; sleep 0.05
        done
        eval "$("$JANITOR" snapshot --export --state state.json)"
        echo "export CI_JANITOR_RUN='$CI_JANITOR_RUN'" > go.tmp && mv go.tmp go
        n=0
        while [ ! -s member.pid ] \
          || [ "$(cut -d' ' -f5 /proc/$(cat group.pid)/stat 2>/dev/null)" != "$(cat group.pid)" ]; do
          n=$((n + 1)); [ $n -lt 400 ] || exit 3; sleep 0.05
        done
        for f in leader bystander group member; do
          p=$(cat $f.pid); echo "$f $p $(cut -d' ' -f22 /proc/$p/stat)"
        done > ids.txt
        set +e
        CI_JANITOR_LOG=debug "$JANITOR" sweep --state state.json --grace 0s --color never \
          --report-json report.json 2> log.txt
        echo "sweep=$?"
        "#;
    let out = job_script(dir.path(), body);
    let run = GroupSweep {
        ids: read_ids(&dir.path().join("ids.txt")),
        log: std::fs::read_to_string(dir.path().join("log.txt")).unwrap_or_default(),
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("sweep=1") && run.ids.len() == 4,
        "{text}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let (ids, log) = (&run.ids, &run.log);
    let dead = wait_dead(&[ids["group"], ids["member"]], Duration::from_secs(5));
    assert!(dead, "the job's group was killed:\n{log}");
    assert!(alive(&ids["bystander"]), "the bystander survived:\n{log}");
    assert!(
        alive(&ids["leader"]),
        "the session's leader survived:\n{log}"
    );
    assert!(
        !log.lines().any(|l| l.contains("to the process group")),
        "a group was signalled whole though its session holds a bystander:\n{log}"
    );
    for name in ["group", "member"] {
        assert!(
            log.lines().any(|l| l.contains("pidfd_send_signal")
                && l.contains(&format!("pid={}", ids[name].pid))
                && l.contains("Kill")),
            "{name} got its own SIGKILL:\n{log}"
        );
    }
    let r = Report::read(&dir.path().join("report.json"));
    assert_eq!(r.entry(ids["group"]).class, "job");
    assert_eq!(r.entry(ids["member"]).class, "job");
}
