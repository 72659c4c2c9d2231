//! The job boundary, the way CI systems really run ci-janitor: each step a separate
//! short-lived process under a long-lived agent (GitLab, Jenkins, Buildkite), several jobs
//! at once on one agent, wrappers around the sweep, a fork loop during the snapshot, the
//! dead man's switch with the sweep's options, and leaks that call themselves after system
//! daemons. Every scenario runs on real processes, and what must survive is checked as
//! carefully as what must die.
//!
//! The agent is a shell in a session of its own ([`Job`]); each step is `sh -c STEP`
//! started by it with the job's `CI_JOB_ID`, as GitLab's shell executor does.

use std::time::{Duration, Instant};

use crate::guard::{births, journal, kill_guard, Job, PidFileJ};
use crate::janitor::Report;
use crate::support::{
    alive, children_of, kill_ident, read_stat, serial, wait_dead, wait_until, Ident, ScratchDir,
    Signal, Spawned,
};

/// Kills, by identity, every process a scenario left (the agent's own `Drop` handles the
/// agent and the guard of `state.json`; scenarios here use other state names too).
struct Cleanup {
    ids: Vec<Ident>,
    states: Vec<std::path::PathBuf>,
}

impl Cleanup {
    fn new() -> Cleanup {
        Cleanup {
            ids: Vec::new(),
            states: Vec::new(),
        }
    }
    fn add(&mut self, s: &Spawned) {
        self.ids.extend(s.idents());
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        for state in &self.states {
            kill_guard(state);
        }
        for id in &self.ids {
            kill_ident(id, Signal::KILL);
        }
        wait_dead(&self.ids, Duration::from_secs(10));
    }
}

fn read_spawned(agent: &Job, name: &str) -> Spawned {
    agent.spawned(name)
}

fn step(job_id: &str, body: &str) -> String {
    format!("CI_JOB_ID={job_id} sh -c '{body}'")
}

#[test]
fn separate_steps_under_a_long_lived_agent_catch_every_leak_and_spare_the_rest() {
    // Regression: with the snapshot, each step and the sweep as separate processes, the
    // guard took the first step's shell as the job's root, ran its dead man's sweep when
    // that shell exited (killing the next step), and attributed nothing after it.
    let _g = serial();
    let dir = ScratchDir::new("deploy_steps");
    let mut agent = Job::start(dir.path());
    let mut cleanup = Cleanup::new();
    let state = agent.path("a.json");
    cleanup.states.push(state.clone());

    // A daemon of the agent's from before the job, which forks a tool during it.
    agent.ok("sh -c 'echo $$ > daemon.pid; while [ ! -e go ]; do sleep 0.05; done; sleep 300 & echo $! > tool.pid; wait' > /dev/null 2>&1 &");
    let mut daemon = None;
    assert!(wait_until(Instant::now() + Duration::from_secs(20), || {
        daemon = std::fs::read_to_string(agent.path("daemon.pid"))
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
            .and_then(|pid| read_stat(pid).map(|s| s.ident()));
        daemon.is_some()
    }));
    cleanup.ids.push(daemon.unwrap());
    // Step 1: the baseline and the guard, then the step's shell exits.
    agent.ok(&step(
        "41",
        r#""$JANITOR" snapshot --state a.json && "$JANITOR" guard start --state a.json"#,
    ));
    let pf = PidFileJ::read(&state).expect("the guard runs");
    assert!(
        pf.watch.is_none(),
        "a transient step shell must not be watched"
    );
    // Step 2: the leaks. A setsid daemon (keeps the marker), an orphan with an empty
    // environment, an MCP-style server (own session, scrubbed environment), a renamed one.
    agent.ok(&step(
        "41",
        r#""$FIXTURE" double-fork > d.json; "$FIXTURE" env-clear > e.json; "$FIXTURE" scrubbed-session > s.json; "$FIXTURE" rename > r.json"#,
    ));
    let leaks: Vec<Spawned> = ["d.json", "e.json", "s.json", "r.json"]
        .iter()
        .map(|f| read_spawned(&agent, f))
        .collect();
    for l in &leaks {
        cleanup.add(l);
    }
    // Another job on the same agent (same session, same cgroup): its test runner and its
    // server keep running through this job's sweep.
    agent.ok(&step(
        "77",
        r#""$FIXTURE" tcp-listen > b-server.json; "$FIXTURE" sleep > b-runner.json"#,
    ));
    let other: Vec<Spawned> = ["b-server.json", "b-runner.json"]
        .iter()
        .map(|f| read_spawned(&agent, f))
        .collect();
    for o in &other {
        cleanup.add(o);
    }
    // The agent's own helper, with no marker.
    agent.ok(r#""$FIXTURE" sleep > helper.json"#);
    let helper = read_spawned(&agent, "helper.json");
    cleanup.add(&helper);
    // The old daemon forks its tool now, during the job.
    std::fs::write(dir.path().join("go"), "").unwrap();
    let mut tool = None;
    assert!(wait_until(Instant::now() + Duration::from_secs(20), || {
        tool = std::fs::read_to_string(dir.path().join("tool.pid"))
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
            .and_then(|pid| read_stat(pid).map(|s| s.ident()));
        tool.is_some()
    }));
    let tool = tool.unwrap();
    cleanup.ids.push(tool);
    // Step 3 is still running when the guard has seen it born: nothing swept mid-job.
    agent.ok(&format!(
        "{} < /dev/null > /dev/null 2>&1 &",
        step("41", "echo $$ > running.pid; exec sleep 300")
    ));
    let mut running = None;
    assert!(wait_until(Instant::now() + Duration::from_secs(20), || {
        running = std::fs::read_to_string(agent.path("running.pid"))
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
            .and_then(|pid| {
                read_stat(pid)
                    .filter(|s| s.comm == "sleep")
                    .map(|s| s.ident())
            });
        running.is_some()
    }));
    let running = running.unwrap();
    cleanup.ids.push(running);
    let state2 = state.clone();
    assert!(
        wait_until(Instant::now() + Duration::from_secs(20), || births(
            &journal(&state2)
        )
        .iter()
        .any(|b| b.pid == running.pid)),
        "the guard did not see step 3 born"
    );
    assert!(alive(&pf.ident()), "the guard stopped mid-job");
    assert!(alive(&running), "a running step was killed mid-job");
    for l in &leaks {
        for id in l.idents() {
            assert!(alive(&id), "a leak was swept before the sweep: {id:?}");
        }
    }

    // The last step sweeps.
    let (code, _) = agent.run(&step(
        "41",
        r#""$JANITOR" sweep --state a.json --grace 1s --color never --report-json ra.json"#,
    ));
    assert_eq!(code, 1, "the leaks must fail the job");
    let r = Report::read(&agent.path("ra.json"));
    for l in &leaks {
        for p in &l.procs {
            let e = r.entry(p.ident());
            assert_eq!(e.class, "job", "{} {p:?}: {e:?}", l.scenario);
        }
        assert!(
            wait_dead(&l.idents(), Duration::from_secs(10)),
            "{}",
            l.scenario
        );
    }
    // The scrubbed ones have only the guard's lineage.
    let scrubbed = &leaks[1].procs[0];
    assert_eq!(r.entry(scrubbed.ident()).evidence, vec!["guard-lineage"]);
    for o in &other {
        for p in &o.procs {
            assert_eq!(r.entry(p.ident()).class, "other-job", "{p:?}");
            assert!(alive(&p.ident()), "the other job's {} was killed", p.role);
        }
    }
    for id in helper.idents().into_iter().chain([tool, daemon.unwrap()]) {
        assert!(alive(&id), "the agent's process {id:?} was killed");
    }
    assert!(alive(&agent.ident));
}

#[test]
fn two_jobs_without_markers_in_one_session_stay_apart() {
    // Two jobs under one agent, sharing its session and cgroup, neither with a marker:
    // job A's sweep (in A's own script) takes A's script as its root and nothing else.
    let _g = serial();
    let dir = ScratchDir::new("deploy_nomark");
    let mut agent = Job::start(dir.path());
    let mut cleanup = Cleanup::new();
    // Job B: its script holds a server and a test runner as its children.
    agent.ok(r#"sh -c 'echo $$ > b.pid; sleep 300 & sleep 300 & wait' > /dev/null 2>&1 &"#);
    let mut b = Vec::new();
    assert!(wait_until(Instant::now() + Duration::from_secs(20), || {
        b = std::fs::read_to_string(agent.path("b.pid"))
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
            .and_then(read_stat)
            .map(|s| {
                let mut v = vec![s.ident()];
                v.extend(children_of(s.pid));
                v
            })
            .unwrap_or_default();
        b.len() == 3
    }));
    cleanup.ids.extend(b.iter().copied());
    // Job A: snapshot, a leak that stays its script's child, the sweep.
    let (code, out) = agent.run(
        r#"sh -c '"$JANITOR" snapshot --state a.json 2>/dev/null; sleep 300 & echo $! > a-leak.pid; "$JANITOR" sweep --state a.json --grace 1s --color never --report-json ra.json > a.txt; echo "sweep=$?"'"#,
    );
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("sweep=1"), "{out}");
    let a_leak: i32 = std::fs::read_to_string(agent.path("a-leak.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let r = Report::read(&agent.path("ra.json"));
    let leak = r.processes.iter().find(|p| p.pid == a_leak).unwrap();
    assert_eq!(leak.class, "job");
    assert_eq!(leak.evidence, vec!["descendant"]);
    for id in &b {
        assert!(alive(id), "job B's {id:?} was killed");
        if let Some(e) = r.processes.iter().find(|p| p.pid == id.pid) {
            assert_eq!(e.class, "unattributed");
        }
    }
    cleanup.ids.push(Ident {
        pid: leak.pid,
        start_ticks: leak.start_ticks,
    });
}

#[test]
fn a_wrapped_sweep_finds_what_a_bare_sweep_finds() {
    // Regression: `timeout 60 ci-janitor sweep` made `timeout` the job's root, and the
    // leaks (the script's children) escaped with "clean".
    let _g = serial();
    let dir = ScratchDir::new("deploy_wrap");
    let mut agent = Job::start(dir.path());
    for (name, wrapper) in [
        ("bare", ""),
        ("timeout", "timeout 60"),
        ("time", "/usr/bin/time -o time.txt"),
        ("flock", "flock lock"),
        ("nice", "nice -n 1"),
    ] {
        let (code, out) = agent.run(&format!(
            r#"sh -c '"$JANITOR" snapshot --state {name}.json 2>/dev/null; sleep 300 & echo $! > {name}.pid; {wrapper} "$JANITOR" sweep --state {name}.json --grace 1s --color never --report-json {name}-r.json > {name}.txt; echo "sweep=$?"'"#
        ));
        let pid: i32 = std::fs::read_to_string(agent.path(&format!("{name}.pid")))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(code, 0, "{name}: {out}");
        assert!(out.contains("sweep=1"), "{name}: {out}");
        let r = Report::read(&agent.path(&format!("{name}-r.json")));
        let e = r.processes.iter().find(|p| p.pid == pid).unwrap();
        assert_eq!(e.class, "job", "{name}");
        assert_eq!(e.evidence, vec!["descendant"], "{name}");
    }
}

#[test]
fn a_fork_loop_during_the_snapshot_leaves_no_child_behind() {
    // Regression: processes the job forked while the snapshot read /proc were listed in
    // the baseline and never counted as new (8 of 300 in one run).
    let _g = serial();
    let dir = ScratchDir::new("deploy_race");
    let mut agent = Job::start(dir.path());
    // A loop of the job's, already running: up to 5,000 children, each a long sleep, until
    // the test has what it needs.
    agent.ok(r#"CI_JOB_ID=race sh -c 'i=0; while [ ! -e stop ] && [ $i -lt 5000 ]; do sleep 300 & i=$((i+1)); done; touch loop-done; wait' > /dev/null 2>&1 & echo $! > loop.pid"#);
    let loop_pid: i32 = std::fs::read_to_string(agent.path("loop.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let loop_id = read_stat(loop_pid).unwrap().ident();
    struct KillAll(i32, Ident);
    impl Drop for KillAll {
        fn drop(&mut self) {
            let kids = children_of(self.0);
            kill_ident(&self.1, Signal::KILL);
            for k in &kids {
                kill_ident(k, Signal::KILL);
            }
            wait_dead(&kids, Duration::from_secs(20));
        }
    }
    let _kill = KillAll(loop_pid, loop_id);
    // Snapshots run while the loop forks, until one of them lists a child born while it
    // read /proc (the window is short: from the clock tick the reading starts on to the
    // moment it lists /proc).
    assert!(wait_until(Instant::now() + Duration::from_secs(20), || {
        children_of(loop_pid).len() >= 50
    }));
    let mut exercised = None;
    // Batches of snapshots back to back (one shell command each), until one lists a child
    // born during its read or the loop has forked all it may.
    'batches: for batch in 0..8 {
        if agent.path("loop-done").exists() {
            break;
        }
        agent.ok(&format!(
            r#"for n in $(seq 0 24); do CI_JANITOR_LOG=off CI_JOB_ID=race "$JANITOR" snapshot --state race{batch}-$n.json 2>/dev/null; done"#
        ));
        for n in 0..25 {
            let name = format!("race{batch}-{n}.json");
            let state: serde_json::Value =
                serde_json::from_slice(&std::fs::read(agent.path(&name)).unwrap()).unwrap();
            let snap = &state["snapshot"];
            let taken = snap["taken_at_boot_ticks"].as_u64().unwrap();
            let during = snap["processes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|p| {
                    p["ppid"].as_i64() == Some(i64::from(loop_pid))
                        && p["id"]["start_ticks"].as_u64().unwrap() >= taken
                })
                .count();
            if during > 0 {
                exercised = Some((name, taken, during));
                break 'batches;
            }
        }
    }
    std::fs::write(agent.path("stop"), "").unwrap();
    assert!(wait_until(Instant::now() + Duration::from_secs(60), || {
        agent.path("loop-done").exists()
    }));
    // The loop's `sleep 300` children (not the `touch` that may still be exiting).
    let kids: Vec<Ident> = children_of(loop_pid)
        .into_iter()
        .filter(|k| read_stat(k.pid).is_some_and(|s| s.comm == "sleep"))
        .collect();
    assert!(kids.len() >= 50, "{} children", kids.len());
    let (name, taken, during) =
        exercised.expect("no snapshot listed a child born while it read /proc");
    let (code, out) = agent.run(&format!(
        r#"CI_JOB_ID=race "$JANITOR" sweep --state {name} --grace 1s --color never --report-json race-r.json > race.txt"#
    ));
    assert_eq!(code, 1, "{out}");
    let r = Report::read(&agent.path("race-r.json"));
    let (new, old): (Vec<&Ident>, Vec<&Ident>) = kids.iter().partition(|k| k.start_ticks >= taken);
    for k in &new {
        assert_eq!(r.entry(**k).class, "job", "{k:?}");
    }
    let new_ids: Vec<Ident> = new.iter().map(|k| **k).collect();
    assert!(wait_dead(&new_ids, Duration::from_secs(20)));
    for k in &old {
        assert!(
            alive(k),
            "a child from before the snapshot was killed: {k:?}"
        );
    }
    eprintln!(
        "{} children before the snapshot, {} after ({} of them listed in the baseline)",
        old.len(),
        new.len(),
        during
    );
}

#[test]
fn the_dead_mans_sweep_uses_the_sweeps_options() {
    // Regression: the dead man's sweep ignored --ignore and killed an ignored cache server
    // when the runner's worker died.
    let _g = serial();
    let dir = ScratchDir::new("deploy_deadman");
    let mut agent = Job::start(dir.path());
    agent.ok("$JANITOR snapshot --state state.json");
    agent.ok("$JANITOR guard start --state state.json --watch $$ --grace 1s --ignore '*cij-fixture sleep*'");
    agent.ok("$FIXTURE sleep > kept.json; $FIXTURE double-fork > leak.json");
    let kept = agent.spawned("kept.json");
    let leak = agent.spawned("leak.json");
    let mut cleanup = Cleanup::new();
    cleanup.add(&kept);
    cleanup.add(&leak);
    let state = agent.path("state.json");
    assert!(wait_until(Instant::now() + Duration::from_secs(20), || {
        let b = births(&journal(&state));
        leak.idents()
            .iter()
            .all(|id| b.iter().any(|x| x.pid == id.pid))
    }));
    let guard = PidFileJ::read(&state).unwrap().ident();
    // The per-job root dies without a sweep.
    assert!(kill_ident(&agent.ident, Signal::KILL));
    let report = agent.path("state.guard-report.json");
    assert!(wait_until(
        Instant::now() + Duration::from_secs(60),
        || report.exists() && !alive(&guard)
    ));
    let r = Report::read(&report);
    for p in &kept.procs {
        assert_eq!(r.entry(p.ident()).class, "ignored");
        assert!(alive(&p.ident()), "the ignored process was killed");
    }
    for p in &leak.procs {
        assert_eq!(r.entry(p.ident()).class, "job");
    }
    assert!(wait_dead(&leak.idents(), Duration::from_secs(10)));
}

#[test]
fn names_never_save_a_leak_and_the_keep_list_is_verified() {
    // Regression: leaks carrying the job's marker survived when they were called sshd,
    // dockerd, systemd-* or Runner.Worker, or had "GradleDaemon" in an argument; the job's
    // ssh-agent and gpg-agent survived, keys loaded, for the next job.
    let _g = serial();
    let dir = ScratchDir::new("deploy_names");
    let mut agent = Job::start(dir.path());
    let mut cleanup = Cleanup::new();
    let names = ["sshd", "dockerd", "systemd-logind", "Runner.Worker"];
    let mut script = String::from("set -e; mkdir -p bin gnupg; chmod 700 gnupg;");
    for n in names {
        script.push_str(&format!(
            " cp /bin/sleep bin/{n}; (setsid ./bin/{n} 300 < /dev/null > /dev/null 2>&1 &) ;"
        ));
    }
    script.push_str(" eval \"$(ssh-agent -s)\" > /dev/null; echo $SSH_AGENT_PID > ssh-agent.pid;");
    script.push_str(
        " GNUPGHOME=$PWD/gnupg gpg-agent --daemon > /dev/null 2>&1 || true; sleep 300 < /dev/null > /dev/null 2>&1 &",
    );
    std::fs::write(dir.path().join("leak.sh"), &script).unwrap();
    // A real build-cache daemon: a JVM running the Gradle daemon's main class.
    let gradle = dir.path().join("gradle");
    let java_ok = std::process::Command::new("javac")
        .arg("-version")
        .output()
        .is_ok();
    if java_ok {
        let src = gradle.join("org/gradle/launcher/daemon/bootstrap");
        std::fs::create_dir_all(&src).unwrap();
        std::fs::write(
            src.join("GradleDaemon.java"),
            "package org.gradle.launcher.daemon.bootstrap;\n\
             public class GradleDaemon { public static void main(String[] a) throws Exception { \
             Thread.sleep(300_000); } }\n",
        )
        .unwrap();
        let out = std::process::Command::new("javac")
            .arg(src.join("GradleDaemon.java"))
            .current_dir(&gradle)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    } else {
        eprintln!("javac is missing: the keep-list half of this test is skipped");
    }
    let gradle_cmd = if java_ok {
        "(java -cp gradle org.gradle.launcher.daemon.bootstrap.GradleDaemon 8.5 < /dev/null > /dev/null 2>&1 &);"
    } else {
        ""
    };
    let (code, out) = agent.run(&format!(
        r#"$JANITOR run --grace 1s --color never --report-json run.json -- sh -c '{gradle_cmd} sh leak.sh'"#
    ));
    // Everything the run started that is not kept was killed: ground truth from /proc.
    let r = Report::read(&agent.path("run.json"));
    for p in &r.processes {
        if let Some(stat) = read_stat(p.pid) {
            if stat.start_ticks == p.start_ticks && p.class != "kept" {
                cleanup.ids.push(stat.ident());
            }
        }
    }
    let class_of = |comm: &str| -> Vec<String> {
        r.processes
            .iter()
            .filter(|p| p.comm.as_str() == Some(comm))
            .map(|p| p.class.clone())
            .collect()
    };
    assert_eq!(code, 1, "{out}");
    for n in names {
        assert_eq!(class_of(n), vec!["job"], "{n}");
    }
    assert_eq!(class_of("ssh-agent"), vec!["job"]);
    assert!(class_of("gpg-agent").iter().all(|c| c == "job"));
    for p in r.processes.iter().filter(|p| p.class == "job") {
        assert!(
            wait_dead(
                &[Ident {
                    pid: p.pid,
                    start_ticks: p.start_ticks
                }],
                Duration::from_secs(10)
            ),
            "{p:?} survived"
        );
    }
    if java_ok {
        let kept: Vec<_> = r.processes.iter().filter(|p| p.class == "kept").collect();
        assert_eq!(kept.len(), 1, "{:#?}", r.processes);
        let id = Ident {
            pid: kept[0].pid,
            start_ticks: kept[0].start_ticks,
        };
        cleanup.ids.push(id);
        assert!(alive(&id), "the kept Gradle daemon was killed");
        assert!(std::fs::read_to_string(agent.path("run.json"))
            .unwrap()
            .contains("Gradle daemon"));
    }
}

#[test]
fn under_act_a_parallel_job_without_ci_janitor_is_never_touched() {
    // Regression: act runs a workflow's jobs in parallel in one process; the post step of
    // the job that used ci-janitor killed the other job's processes, which descend from
    // act too. act is no root: only the job's marker and the guard's lineage count.
    let _g = serial();
    let dir = ScratchDir::new("deploy_act");
    let workflow = r#"on: push
jobs:
  with-janitor:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: ./
        with:
          grace-period: 1s
      - name: Leak a daemon
        run: |
          setsid sh -c 'echo $$ > "$SCRATCH/a-leak.pid"; exec sleep 600' > /dev/null 2>&1 < /dev/null &
          for _ in $(seq 1 200); do [ -s "$SCRATCH/a-leak.pid" ] && break; sleep 0.05; done
  without-janitor:
    runs-on: ubuntu-latest
    steps:
      - name: A server that outlives the other job's sweep
        run: |
          setsid sh -c 'echo $$ > "$SCRATCH/b-server.pid"; exec sleep 600' > /dev/null 2>&1 < /dev/null &
          for _ in $(seq 1 200); do [ -s "$SCRATCH/b-server.pid" ] && break; sleep 0.05; done
          # Wait (at most 120 s) until the other job's post step has swept its leak.
          for _ in $(seq 1 1200); do
            if [ -s "$SCRATCH/a-leak.pid" ] && ! kill -0 "$(cat "$SCRATCH/a-leak.pid")" 2>/dev/null; then
              break
            fi
            sleep 0.1
          done
          kill -0 "$(cat "$SCRATCH/b-server.pid")" && echo ok > "$SCRATCH/b-survived"
"#;
    let repo = crate::action::action_repo(dir.path(), &[("two.yml", workflow)]);
    let bin = format!("CI_JANITOR_BIN={}", crate::janitor::janitor_exe().display());
    let run = crate::action::act_with(dir.path(), &repo, "two.yml", &["--env", &bin], &[]);
    let read_pid = |f: &str| -> Option<Ident> {
        std::fs::read_to_string(dir.path().join(f))
            .ok()
            .and_then(|t| t.trim().parse::<i32>().ok())
            .and_then(read_stat)
            .map(|s| s.ident())
    };
    let b_server = read_pid("b-server.pid");
    let mut cleanup = Cleanup::new();
    cleanup.ids.extend(b_server);
    cleanup.ids.extend(read_pid("a-leak.pid"));
    assert_eq!(run.code, 1, "the leaking job must fail");
    assert!(
        dir.path().join("b-survived").exists(),
        "the other job's server was killed, or its step: {}",
        run.log
    );
    let b_server = b_server.expect("the other job's server is gone");
    assert!(alive(&b_server));
    assert!(
        run.log.contains("ci-janitor: 1 leaked process"),
        "{}",
        run.log
    );
}

#[test]
fn a_job_in_its_own_pid_namespace_is_swept_there() {
    // A container job: the job, its guard and its sweep in a pid namespace of their own
    // (`unshare --pid --mount-proc`, pid 1 is the job's shell, which is never a root). The
    // guard knows at once that the proc connector is silent there and polls; the marked
    // daemon and the orphan a marked step started with an empty environment are killed;
    // a process from before the snapshot is not. Everything in the namespace dies with
    // it when the test ends.
    let _g = serial();
    let dir = ScratchDir::new("deploy_pidns");
    let mut c = std::process::Command::new("unshare");
    c.args(["--pid", "--fork", "--mount-proc", "sh", "-c"])
        .arg(
            r#"set -e
            sleep 303 < /dev/null > /dev/null 2>&1 &
            echo $! > bystander.pid
            eval "$("$JANITOR" snapshot --export --state state.json)"
            "$JANITOR" guard start --state state.json 2> guard.txt
            setsid sh -c 'echo $$ > daemon.pid; exec sleep 300' < /dev/null > /dev/null 2>&1 &
            # A marked client starts a server with an empty environment in a session of its
            # own (as MCP SDKs do) and stays until the polling guard has seen the server.
            sh -c 'env -i setsid sh -c "echo \$\$ > scrubbed.pid; exec sleep 301" &
                i=0; while [ $i -lt 1000 ] && ! grep -q "\"pid\":$(cat scrubbed.pid 2>/dev/null)," state.journal.jsonl; do sleep 0.01; i=$((i+1)); done' < /dev/null > /dev/null 2>&1
            i=0; while [ $i -lt 1000 ] && { [ ! -s daemon.pid ] || [ ! -s scrubbed.pid ]; }; do sleep 0.01; i=$((i+1)); done
            i=0; while [ $i -lt 1000 ] && ! grep -q "\"pid\":$(cat scrubbed.pid)," state.journal.jsonl; do sleep 0.01; i=$((i+1)); done
            set +e
            "$JANITOR" sweep --state state.json --grace 1s --color never --report-json report.json > sweep.txt
            echo "sweep=$?" > result.txt
            cut -d' ' -f3 /proc/$(cat bystander.pid)/stat > bystander.state"#,
        )
        .current_dir(dir.path())
        .env("JANITOR", crate::janitor::janitor_exe())
        .env_remove("RUNNER_TRACKING_ID")
        .env_remove("CI_JANITOR_RUN")
        .env_remove("GITHUB_ACTIONS")
        .env("CI_JANITOR_LOG", "warn");
    let out = crate::janitor::output_of(c);
    assert!(out.status.success());
    let read = |f: &str| std::fs::read_to_string(dir.path().join(f)).unwrap_or_default();
    assert_eq!(
        read("result.txt").trim(),
        "sweep=1",
        "{}",
        read("sweep.txt")
    );
    assert!(
        read("guard.txt").contains("no proc connector, polling"),
        "{}",
        read("guard.txt")
    );
    let r = Report::read(&dir.path().join("report.json"));
    for (file, evidence) in [
        ("daemon.pid", "run-marker"),
        ("scrubbed.pid", "guard-lineage"),
    ] {
        let pid: i32 = read(file).trim().parse().unwrap();
        let e = r.processes.iter().find(|p| p.pid == pid).unwrap();
        assert_eq!(e.class, "job", "{file}: {e:?}");
        assert!(e.evidence.iter().any(|x| x == evidence), "{file}: {e:?}");
        let fate = e.fate.as_ref().map(|f| f.fate.as_str());
        assert!(
            matches!(fate, Some("terminated" | "killed")),
            "{file}: {fate:?}"
        );
    }
    let bystander: i32 = read("bystander.pid").trim().parse().unwrap();
    assert!(r.processes.iter().all(|p| p.pid != bystander));
    assert_eq!(
        read("bystander.state").trim(),
        "S",
        "the bystander was touched"
    );
}
