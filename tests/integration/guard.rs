//! The guard on real processes: a job shell (its own session, the job's root) starts the
//! guard, leaks processes that escape every other rule (a new session, a scrubbed
//! environment, a dead parent), and a sweep must still attribute them — to the step and
//! the test — from the guard's journal. Also: bursts, polling, unprivileged guards, a
//! guard killed mid-job, the dead man's switch, warnings, and a foreign pid namespace.
//!
//! The journal and the report are read with types declared here, independently of the
//! crate's own.

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde::Deserialize;

use crate::janitor::{janitor_exe, output_of};
use crate::support::{
    alive, environ_has, fixture_exe, kill_ident, read_stat, serial, wait_dead, wait_until, Ident,
    KillOnDrop, ScratchDir, Signal, Spawned,
};

/// How long one job command may take (a sweep with a 1 s grace, a fixture).
const STEP_TIMEOUT: Duration = Duration::from_secs(60);

/// Variables a job must not inherit from whoever runs the tests.
const SCRUBBED: [&str; 8] = [
    "RUNNER_TRACKING_ID",
    "GITHUB_ACTIONS",
    "GITHUB_ACTION",
    "PYTEST_CURRENT_TEST",
    "CI_JANITOR_RUN",
    "RUNNER_TEMP",
    "NO_COLOR",
    "CI_JANITOR_LOG",
];

// ---------------------------------------------------------------------------------------
// A job: a shell in a session of its own, driven one command at a time
// ---------------------------------------------------------------------------------------

/// A job shell (`setsid sh -s`): the job's root, as the runner's worker is in CI. Each
/// [`Job::run`] sends one command and waits for its exit status. Dropping it kills the
/// guard of `state.json` (by identity, so no dead man's sweep fires) and then the shell.
pub(crate) struct Job {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: Receiver<String>,
    pub(crate) ident: Ident,
    dir: PathBuf,
}

impl Job {
    pub(crate) fn start(dir: &Path) -> Job {
        Job::start_with(dir, &[])
    }

    /// The job shell run by `nobody` (every command of it, the guard and sweep included):
    /// a job of an unprivileged user, in a state directory of its own.
    fn start_as_nobody(dir: &Path) -> Job {
        std::os::unix::fs::chown(dir, Some(65534), Some(65534)).unwrap();
        Job::start_with(
            dir,
            &[
                "setpriv",
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
            ],
        )
    }

    fn start_with(dir: &Path, prefix: &[&str]) -> Job {
        let mut c = Command::new("setsid");
        c.args(prefix)
            .args(["sh", "-s"])
            .current_dir(dir)
            .env("JANITOR", janitor_exe())
            .env("FIXTURE", fixture_exe())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(dir.join("job.stderr")).unwrap());
        for var in SCRUBBED {
            c.env_remove(var);
        }
        c.env("CI_JANITOR_LOG", "warn");
        let mut child = c.spawn().expect("cannot start the job shell");
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let pid = child.id() as i32;
        let mut ident = None;
        assert!(wait_until(Instant::now() + STEP_TIMEOUT, || {
            ident = Ident::of(pid);
            ident.is_some()
        }));
        Job {
            stdin: child.stdin.take(),
            child,
            lines,
            ident: ident.unwrap(),
            dir: dir.to_owned(),
        }
    }

    /// Runs `cmd` in the job shell; returns its exit status and what it printed on stdout.
    pub(crate) fn run(&mut self, cmd: &str) -> (i32, String) {
        eprintln!("job$ {cmd}");
        let stdin = self.stdin.as_mut().expect("the job shell is gone");
        writeln!(stdin, "{cmd}\necho \"__cij_done__ $?\"").unwrap();
        stdin.flush().unwrap();
        let deadline = Instant::now() + STEP_TIMEOUT;
        let mut out = String::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.lines.recv_timeout(left).unwrap_or_else(|e| {
                panic!(
                    "`{cmd}` did not finish ({e}); stdout so far:\n{out}\nstderr:\n{}",
                    self.stderr()
                )
            });
            if let Some(code) = line.strip_prefix("__cij_done__ ") {
                eprint!("{out}");
                return (code.trim().parse().unwrap(), out);
            }
            out.push_str(&line);
            out.push('\n');
        }
    }

    /// Runs `cmd` and panics unless it exits 0.
    pub(crate) fn ok(&mut self, cmd: &str) -> String {
        let (code, out) = self.run(cmd);
        assert_eq!(
            code,
            0,
            "`{cmd}` failed:\n{out}\nstderr:\n{}",
            self.stderr()
        );
        out
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(self.dir.join("job.stderr")).unwrap_or_default()
    }

    pub(crate) fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The fixture JSON line a command wrote to `name`.
    pub(crate) fn spawned(&self, name: &str) -> Spawned {
        let text = std::fs::read_to_string(self.path(name)).unwrap();
        serde_json::from_str(text.lines().next().unwrap()).unwrap()
    }
}

impl Drop for Job {
    fn drop(&mut self) {
        kill_guard(&self.dir.join("state.json"));
        self.stdin = None;
        kill_ident(&self.ident, Signal::KILL);
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// The guard's files, read independently
// ---------------------------------------------------------------------------------------

fn pid_file(state: &Path) -> PathBuf {
    state.with_file_name(format!(
        "{}.guard.pid",
        state.file_stem().unwrap().to_string_lossy()
    ))
}

fn journal_path(state: &Path) -> PathBuf {
    state.with_file_name(format!(
        "{}.journal.jsonl",
        state.file_stem().unwrap().to_string_lossy()
    ))
}

#[derive(Debug, Deserialize)]
pub(crate) struct PidFileJ {
    pub(crate) pid: i32,
    pub(crate) start_ticks: u64,
    pub(crate) mode: String,
    #[serde(default)]
    pub(crate) watch: Option<Ident>,
    #[serde(default)]
    pub(crate) degraded: Vec<String>,
}

impl PidFileJ {
    pub(crate) fn read(state: &Path) -> Option<PidFileJ> {
        let bytes = std::fs::read(pid_file(state)).ok()?;
        Some(serde_json::from_slice(&bytes).unwrap())
    }
    pub(crate) fn ident(&self) -> Ident {
        Ident {
            pid: self.pid,
            start_ticks: self.start_ticks,
        }
    }
}

/// Kills the guard of `state` by identity, if one runs (test cleanup).
pub(crate) fn kill_guard(state: &Path) {
    if let Some(pf) = PidFileJ::read(state) {
        let id = pf.ident();
        if alive(&id) {
            kill_ident(&id, Signal::KILL);
            wait_dead(&[id], Duration::from_secs(10));
        }
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
pub(crate) struct MarkersJ {
    github_action: Option<String>,
    pytest_current_test: Option<String>,
    #[serde(default)]
    inherited: Vec<String>,
}

#[derive(Debug, Clone, Copy, Deserialize)]
pub(crate) struct ParentJ {
    pid: i32,
    start_ticks: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct BirthJ {
    pub(crate) pid: i32,
    pub(crate) start_ticks: Option<u64>,
    pub(crate) parent: ParentJ,
    pub(crate) chain: Vec<i32>,
    pub(crate) in_job: bool,
    #[serde(default)]
    pub(crate) markers: MarkersJ,
    pub(crate) via: String,
    pub(crate) gap: Option<String>,
    pub(crate) t_us: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub(crate) struct ExecJ {
    id: Ident,
    argv: Vec<String>,
    in_job: bool,
    #[serde(default)]
    markers: MarkersJ,
    #[serde(default)]
    unreadable: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub(crate) enum Rec {
    Start {
        guard: Ident,
        root: Option<Ident>,
        mode: String,
    },
    Seed {
        id: Ident,
    },
    Birth(BirthJ),
    Exec(ExecJ),
    Exit {
        pid: i32,
        t_us: u64,
    },
    Warning {
        warning: String,
        step: Option<String>,
        signature: Option<String>,
        live: usize,
    },
    Lost {
        overruns: u32,
    },
    Degraded {},
    Stop {
        reason: String,
    },
}

pub(crate) fn journal(state: &Path) -> Vec<Rec> {
    let text = std::fs::read_to_string(journal_path(state)).unwrap_or_default();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("bad journal line {l}: {e}")))
        .collect()
}

pub(crate) fn births(recs: &[Rec]) -> Vec<BirthJ> {
    recs.iter()
        .filter_map(|r| match r {
            Rec::Birth(b) => Some(b.clone()),
            _ => None,
        })
        .collect()
}

fn exec_of(recs: &[Rec], id: Ident) -> Option<ExecJ> {
    recs.iter().rev().find_map(|r| match r {
        Rec::Exec(e) if e.id == id => Some(e.clone()),
        _ => None,
    })
}

/// Waits until the journal holds an exec record for `id`.
fn wait_for_exec(state: &Path, id: Ident) -> ExecJ {
    let mut found = None;
    let ok = wait_until(Instant::now() + Duration::from_secs(20), || {
        found = exec_of(&journal(state), id);
        found.is_some()
    });
    assert!(ok, "no exec record for {id:?} in {:#?}", journal(state));
    found.unwrap()
}

#[derive(Debug, Deserialize)]
struct ReportJ {
    processes: Vec<ReportProcessJ>,
    /// The job's process count over time, from the guard's journal.
    #[serde(default)]
    samples: Option<Vec<SampleJ>>,
}

#[derive(Debug, Deserialize)]
struct SampleJ {
    at_unix_ms: u64,
    processes: u32,
}

#[derive(Debug, Deserialize)]
struct ReportProcessJ {
    pid: i32,
    start_ticks: u64,
    class: String,
    evidence: Vec<String>,
    #[serde(default)]
    markers: MarkersJ,
}

impl ReportJ {
    fn read(path: &Path) -> ReportJ {
        let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        serde_json::from_slice(&bytes).unwrap()
    }
    fn entry(&self, id: Ident) -> &ReportProcessJ {
        self.processes
            .iter()
            .find(|p| p.pid == id.pid && p.start_ticks == id.start_ticks)
            .unwrap_or_else(|| panic!("{id:?} not in the report: {self:#?}"))
    }
}

const SWEEP: &str =
    "$JANITOR sweep --state state.json --grace 1s --color never --report-json report.json";
const MARKED: &str =
    "GITHUB_ACTION=run-tests PYTEST_CURRENT_TEST='tests/test_mcp.py::test_stdio (call)'";

/// The ground truth of a leak that only the guard can attribute: its own session, no
/// markers in its environment, its parent (the fixture) gone.
fn assert_escaped_every_other_rule(child: Ident, fixture: Ident) {
    let stat = read_stat(child.pid).unwrap();
    assert_eq!(stat.sid, child.pid, "not in a session of its own");
    assert_ne!(stat.ppid, fixture.pid, "still a child of the fixture");
    assert!(!alive(&fixture), "the fixture (its parent) still lives");
    assert!(!environ_has(child.pid, "GITHUB_ACTION"));
    assert!(!environ_has(child.pid, "PYTEST_CURRENT_TEST"));
    assert!(!environ_has(child.pid, "RUNNER_TRACKING_ID"));
}

// ---------------------------------------------------------------------------------------
// Attribution
// ---------------------------------------------------------------------------------------

#[test]
fn a_scrubbed_orphan_in_a_new_session_is_attributed_to_its_step_and_test() {
    let _g = serial();
    let dir = ScratchDir::new("guard_attr");
    let mut job = Job::start(dir.path());
    job.ok("$JANITOR snapshot --state state.json");
    job.ok("$JANITOR guard start --state state.json");
    job.ok(&format!(
        "{MARKED} $FIXTURE scrubbed-session > fixture.json"
    ));
    let fx = job.spawned("fixture.json");
    let child = fx.role("scrubbed").ident();
    assert_escaped_every_other_rule(child, fx.fixture);

    let (code, out) = job.run(SWEEP);
    assert_eq!(code, 1, "{out}");
    let r = ReportJ::read(&job.path("report.json"));
    // The guard's births and exits become the report's samples (the summary's chart).
    let samples = r
        .samples
        .as_ref()
        .expect("samples from the guard's journal");
    assert!(samples.len() >= 2, "{samples:?}");
    assert!(samples
        .windows(2)
        .all(|w| w[0].at_unix_ms <= w[1].at_unix_ms));
    assert!(samples.iter().any(|s| s.processes >= 1));
    let e = r.entry(child);
    assert_eq!(e.class, "job");
    // Nothing but the guard's lineage could tell: no marker, no session, no live parent.
    assert_eq!(e.evidence, vec!["guard-lineage"]);
    assert_eq!(e.markers.github_action.as_deref(), Some("run-tests"));
    assert_eq!(
        e.markers.pytest_current_test.as_deref(),
        Some("tests/test_mcp.py::test_stdio (call)")
    );
    assert_eq!(
        e.markers.inherited,
        vec!["GITHUB_ACTION", "PYTEST_CURRENT_TEST"]
    );
    assert!(
        out.contains("test: tests/test_mcp.py::test_stdio (call)"),
        "{out}"
    );
    assert!(out.contains("step: run-tests"), "{out}");
    assert!(wait_dead(&[child], Duration::from_secs(5)));

    // The journal: born to the fixture, below the job's root, at birth.
    let recs = journal(&job.path("state.json"));
    let b = births(&recs)
        .into_iter()
        .find(|b| b.pid == child.pid && b.start_ticks == Some(child.start_ticks))
        .expect("no birth record for the leak");
    assert!(b.in_job);
    assert_eq!(b.parent.pid, fx.fixture.pid);
    assert_eq!(b.parent.start_ticks, Some(fx.fixture.start_ticks));
    assert_eq!(b.chain, vec![fx.fixture.pid, job.ident.pid]);
    assert_eq!(b.via, "fork");
    // At birth it carried its parent's markers; its exec showed them gone from its own
    // environment, hence inherited.
    assert_eq!(b.markers.github_action.as_deref(), Some("run-tests"));
    let e = exec_of(&recs, child).unwrap();
    assert!(e.in_job);
    assert_eq!(e.argv[1..], ["idle", "--role", "scrubbed"]);
    assert_eq!(
        e.markers.inherited,
        vec!["GITHUB_ACTION", "PYTEST_CURRENT_TEST"]
    );
    // The sweep stopped the guard first; it was never a candidate.
    assert!(matches!(recs.last(), Some(Rec::Stop { reason }) if reason == "stopped"));
    let Some(Rec::Start { guard, root, mode }) = recs.first().cloned() else {
        panic!("no start record")
    };
    assert_eq!(root, Some(job.ident));
    assert_eq!(mode, "connector");
    assert!(!alive(&guard));
    assert!(!r
        .processes
        .iter()
        .any(|p| p.pid == guard.pid && p.class != "protected"));
    assert!(PidFileJ::read(&job.path("state.json")).is_none());
}

#[test]
fn without_the_guard_the_same_orphan_is_only_reported() {
    // The negative control of the test above: no guard, same leak. Nothing attributes it.
    let _g = serial();
    let dir = ScratchDir::new("guard_none");
    let mut job = Job::start(dir.path());
    job.ok("$JANITOR snapshot --state state.json");
    job.ok(&format!(
        "{MARKED} $FIXTURE scrubbed-session > fixture.json"
    ));
    let fx = job.spawned("fixture.json");
    let child = fx.role("scrubbed").ident();
    let (code, out) = job.run(SWEEP);
    assert_eq!(code, 0, "{out}");
    let r = ReportJ::read(&job.path("report.json"));
    assert_eq!(r.entry(child).class, "unattributed");
    assert!(r.entry(child).markers.github_action.is_none());
    assert!(alive(&child), "the negative control was killed");
}

#[test]
fn a_short_lived_intermediate_is_in_the_lineage() {
    let _g = serial();
    let dir = ScratchDir::new("guard_mid");
    let mut job = Job::start(dir.path());
    job.ok("$JANITOR snapshot --state state.json");
    job.ok("$JANITOR guard start --state state.json");
    // fork, setsid, fork: the intermediate exits right after forking the daemon.
    job.ok("$FIXTURE double-fork > fixture.json");
    let fx = job.spawned("fixture.json");
    let daemon = fx.role("daemon").ident();
    job.ok("$JANITOR guard stop --state state.json");

    let recs = journal(&job.path("state.json"));
    let all = births(&recs);
    let d = all
        .iter()
        .find(|b| b.pid == daemon.pid && b.start_ticks == Some(daemon.start_ticks))
        .expect("no birth record for the daemon");
    let mid = all
        .iter()
        .find(|b| b.pid == d.parent.pid)
        .expect("no birth record for the intermediate");
    assert_ne!(mid.pid, fx.fixture.pid);
    assert_eq!(mid.parent.pid, fx.fixture.pid);
    assert_eq!(d.chain, vec![mid.pid, fx.fixture.pid, job.ident.pid]);
    let exit = recs
        .iter()
        .find_map(|r| match r {
            Rec::Exit { pid, t_us } if *pid == mid.pid => Some(*t_us),
            _ => None,
        })
        .expect("no exit record for the intermediate");
    eprintln!(
        "intermediate {} lived {} us by the kernel's clock (born at {}, exited at {}); {}",
        mid.pid,
        exit.saturating_sub(mid.t_us),
        mid.t_us,
        exit,
        match &mid.gap {
            Some(g) => format!("no identity: {g}"),
            None => format!("identity read: {:?}", mid.start_ticks),
        }
    );
    // And the daemon (its own session, no marker, its parent gone) is attributed by it.
    let (code, _) = job.run(SWEEP);
    assert_eq!(code, 1);
    let r = ReportJ::read(&job.path("report.json"));
    assert_eq!(r.entry(daemon).evidence, vec!["guard-lineage"]);
    assert!(wait_dead(&[daemon], Duration::from_secs(5)));
}

#[test]
fn a_burst_of_2000_forks_misses_no_birth() {
    let _g = serial();
    let dir = ScratchDir::new("guard_burst");
    let mut job = Job::start(dir.path());
    job.ok("$JANITOR guard start --state state.json");
    job.ok("$FIXTURE burst --count 2000 > fixture.json");
    let fx = job.spawned("fixture.json");
    job.ok("$JANITOR guard stop --state state.json");
    let text = std::fs::read_to_string(job.path("burst.pids")).unwrap();
    let forked: HashSet<i32> = text.lines().filter_map(|l| l.parse().ok()).collect();
    let elapsed_us: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("elapsed_us "))
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(forked.len(), 2000);

    let recs = journal(&job.path("state.json"));
    let lost: u32 = recs
        .iter()
        .map(|r| match r {
            Rec::Lost { overruns } => *overruns,
            _ => 0,
        })
        .sum();
    assert_eq!(
        lost, 0,
        "the kernel dropped events (ENOBUFS): see the journal"
    );
    let born: Vec<BirthJ> = births(&recs)
        .into_iter()
        .filter(|b| {
            b.parent.pid == fx.fixture.pid && b.parent.start_ticks == Some(fx.fixture.start_ticks)
        })
        .collect();
    let seen: HashSet<i32> = born.iter().map(|b| b.pid).collect();
    let missed: Vec<&i32> = forked.difference(&seen).collect();
    assert!(
        missed.is_empty(),
        "{} births missed: {missed:?}",
        missed.len()
    );
    assert_eq!(born.len(), 2000, "a birth was journaled twice");
    assert!(born.iter().all(|b| b.in_job && b.via == "fork"));
    let gaps = born.iter().filter(|b| b.start_ticks.is_none()).count();
    eprintln!(
        "2000 forks in {:.1} ms ({:.0}/s): 2000 births journaled, {gaps} reaped before the \
         guard read their start time",
        elapsed_us as f64 / 1000.0,
        2000.0 / (elapsed_us as f64 / 1e6)
    );
    assert!(
        elapsed_us < 1_000_000,
        "the burst took longer than a second"
    );
}

#[test]
fn a_child_that_never_execs_is_born_with_its_start_time_while_the_guard_runs() {
    // Its identity is read on the guard's timer (a child that execs is read at its exec):
    // the birth must reach the journal with the right start time before any stop.
    let _g = serial();
    let dir = ScratchDir::new("guard_noexec");
    let mut job = Job::start(dir.path());
    job.ok("$JANITOR guard start --state state.json");
    job.ok("$FIXTURE new-pgrp > fixture.json");
    let fx = job.spawned("fixture.json");
    let child = fx.role("pgrp-leader").ident();
    let _kill = KillOnDrop(vec![child]);
    let state = job.path("state.json");
    let mut found = None;
    let ok = wait_until(Instant::now() + Duration::from_secs(20), || {
        found = births(&journal(&state))
            .into_iter()
            .find(|b| b.pid == child.pid);
        found.is_some()
    });
    assert!(
        ok,
        "no birth record for {child:?} in {:#?}",
        journal(&state)
    );
    let b = found.unwrap();
    assert_eq!(b.start_ticks, Some(child.start_ticks), "{b:?}");
    assert_eq!(b.parent.pid, fx.fixture.pid);
    assert_eq!(b.parent.start_ticks, Some(fx.fixture.start_ticks));
    assert!(b.in_job && b.gap.is_none() && b.via == "fork", "{b:?}");
    assert!(alive(&child));
    job.ok("$JANITOR guard stop --state state.json");
    // Written once, whatever read it first.
    let recs = journal(&state);
    assert_eq!(
        births(&recs).iter().filter(|b| b.pid == child.pid).count(),
        1
    );
}

#[test]
fn children_that_exit_at_once_are_born_before_they_exit() {
    // Where the kernel filters events (Linux 6.6+), forks and exits come on one socket and
    // execs on another, merged by time: an exit handled before its fork would leave the
    // child alive in the guard's eyes, with no exit record after its birth.
    let _g = serial();
    let dir = ScratchDir::new("guard_order");
    let mut job = Job::start(dir.path());
    job.ok("$JANITOR guard start --state state.json");
    // Children that exit at once without exec'ing (reaped after the burst), then shells
    // that exec and exit at once, reaped as they go.
    job.ok("$FIXTURE burst --count 1000 > fixture.json");
    let fx = job.spawned("fixture.json");
    job.ok("i=0; while [ $i -lt 200 ]; do /bin/true; i=$((i + 1)); done");
    job.ok("$JANITOR guard stop --state state.json");
    let text = std::fs::read_to_string(job.path("burst.pids")).unwrap();
    let forked: HashSet<i32> = text.lines().filter_map(|l| l.parse().ok()).collect();
    assert_eq!(forked.len(), 1000);

    let recs = journal(&job.path("state.json"));
    // On Linux 6.6+ the guard is to have split the events over two sockets.
    let text = std::fs::read_to_string(journal_path(&job.path("state.json"))).unwrap();
    let detail = text.lines().next().unwrap_or_default().to_owned();
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release
        .split(|c: char| !c.is_ascii_digit())
        .map(|p| p.parse().unwrap_or(0));
    let (major, minor): (u32, u32) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    if (major, minor) >= (6, 6) {
        assert!(detail.contains("execs on one socket"), "{detail}");
    }
    assert!(
        !recs.iter().any(|r| matches!(r, Rec::Lost { .. })),
        "the kernel dropped events (ENOBUFS): see the journal"
    );
    // Journal order: each birth, then that pid's exit.
    let mut open: HashSet<i32> = HashSet::new();
    let mut born_burst = 0;
    let mut exited_unborn = Vec::new();
    for r in &recs {
        match r {
            // Alive when the guard started (`guard start` itself).
            Rec::Seed { id } => {
                open.insert(id.pid);
            }
            Rec::Birth(b) if b.in_job => {
                if b.parent.pid == fx.fixture.pid {
                    born_burst += 1;
                }
                open.insert(b.pid);
            }
            Rec::Exit { pid, .. } if !open.remove(pid) => exited_unborn.push(*pid),
            _ => {}
        }
    }
    assert_eq!(born_burst, 1000, "births of the burst's children");
    let burst_open: Vec<&i32> = open.iter().filter(|p| forked.contains(p)).collect();
    assert!(burst_open.is_empty(), "born, never exited: {burst_open:?}");
    let true_births = births(&recs)
        .iter()
        .filter(|b| b.in_job && b.parent.pid == job.ident.pid)
        .count();
    assert!(
        true_births >= 200,
        "{true_births} births of the shell's children"
    );
    // Every job process that exited was born (or seeded) first.
    assert!(
        exited_unborn.is_empty(),
        "exits before births: {exited_unborn:?}"
    );
    // And the shell's `/bin/true`s: each exec'd and exited.
    let trues: HashSet<i32> = recs
        .iter()
        .filter_map(|r| match r {
            Rec::Exec(e) if e.argv.first().map(String::as_str) == Some("/bin/true") => {
                Some(e.id.pid)
            }
            _ => None,
        })
        .collect();
    // (A `/bin/true` may be gone before its exec is read: then it has no exec record.)
    assert!(!trues.is_empty(), "no exec of /bin/true read");
    eprintln!("{} of 200 execs of /bin/true read", trues.len());
    let trues_open: Vec<&i32> = open.iter().filter(|p| trues.contains(p)).collect();
    assert!(trues_open.is_empty(), "born, never exited: {trues_open:?}");
}

// ---------------------------------------------------------------------------------------
// Polling, and unprivileged guards
// ---------------------------------------------------------------------------------------

/// Runs a `--stay` fixture in the background of the job with stdin on a fifo held by the
/// shell's fd 3: it stays until [`release_stay`].
fn start_stay(job: &mut Job, env: &str, scenario: &str) -> Spawned {
    job.ok("rm -f stay.fifo && mkfifo stay.fifo");
    job.ok(&format!(
        "{env} $FIXTURE {scenario} --stay < stay.fifo > fixture.json & exec 3> stay.fifo"
    ));
    let mut fx = None;
    assert!(wait_until(Instant::now() + STEP_TIMEOUT, || {
        fx = std::fs::read_to_string(job.path("fixture.json"))
            .ok()
            .filter(|t| t.ends_with('\n'))
            .map(|t| serde_json::from_str(t.lines().next().unwrap()).unwrap());
        fx.is_some()
    }));
    fx.unwrap()
}

fn release_stay(job: &mut Job, fixture: Ident) {
    job.ok("exec 3>&-; wait");
    assert!(wait_dead(&[fixture], Duration::from_secs(10)));
}

/// Polling sees a child only while its parent lives, so the parent stays until the
/// journal has the child; then it dies, and the sweep attributes the orphan.
fn polling_attribution(label: &str, as_nobody: bool) -> (Vec<Rec>, Ident, Ident) {
    let dir = ScratchDir::new(label);
    let mut job = if as_nobody {
        Job::start_as_nobody(dir.path())
    } else {
        Job::start(dir.path())
    };
    job.ok("$JANITOR snapshot --state state.json");
    job.ok("$JANITOR guard start --state state.json --poll");
    let status = job.ok("$JANITOR guard status --state state.json");
    assert!(status.contains("polling /proc (weaker"), "{status}");
    if as_nobody {
        let pf = PidFileJ::read(&job.path("state.json")).unwrap();
        let uid = crate::support::ids_of(pf.pid, "Uid").unwrap();
        assert_eq!(uid, vec![65534; 4], "the guard is not unprivileged");
    }
    let fx = start_stay(&mut job, MARKED, "scrubbed-session");
    let child = fx.role("scrubbed").ident();
    wait_for_exec(&job.path("state.json"), child);
    release_stay(&mut job, fx.fixture);
    assert_escaped_every_other_rule(child, fx.fixture);
    let (code, out) = job.run(SWEEP);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("polling /proc (weaker"), "{out}");
    let r = ReportJ::read(&job.path("report.json"));
    assert_eq!(r.entry(child).evidence, vec!["guard-lineage"]);
    assert!(wait_dead(&[child], Duration::from_secs(5)));
    let recs = journal(&job.path("state.json"));
    let b = births(&recs)
        .into_iter()
        .find(|b| b.pid == child.pid)
        .unwrap();
    assert_eq!(b.via, "scan");
    assert_eq!(b.parent.pid, fx.fixture.pid);
    (recs, child, fx.fixture)
}

#[test]
fn forced_polling_attributes_a_scrubbed_orphan_whose_parent_it_saw() {
    let _g = serial();
    let (recs, child, _) = polling_attribution("guard_poll", false);
    let e = exec_of(&recs, child).unwrap();
    assert_eq!(e.markers.github_action.as_deref(), Some("run-tests"));
    assert_eq!(
        e.markers.inherited,
        vec!["GITHUB_ACTION", "PYTEST_CURRENT_TEST"]
    );
    assert!(matches!(recs.first(), Some(Rec::Start { mode, .. }) if mode == "polling"));
}

#[test]
fn an_unprivileged_polling_guard_still_records_lineage() {
    let _g = serial();
    // The whole job is nobody's (a state directory root's sweep would refuse to read a
    // journal another user wrote): the guard reads its own user's processes, markers too.
    let (recs, child, fixture) = polling_attribution("guard_nobody_poll", true);
    let e = exec_of(&recs, fixture).unwrap();
    assert!(e.unreadable.is_empty(), "{e:?}");
    assert_eq!(
        exec_of(&recs, child)
            .unwrap()
            .markers
            .github_action
            .as_deref(),
        Some("run-tests")
    );
}

#[test]
fn an_unprivileged_guard_runs_for_real() {
    let _g = serial();
    let dir = ScratchDir::new("guard_nobody");
    let mut job = Job::start_as_nobody(dir.path());
    job.ok("$JANITOR snapshot --state state.json");
    job.ok("$JANITOR guard start --state state.json");
    let pf = PidFileJ::read(&job.path("state.json")).unwrap();
    assert_eq!(
        crate::support::ids_of(pf.pid, "Uid").unwrap(),
        vec![65534; 4],
        "the guard is not unprivileged"
    );
    eprintln!("unprivileged guard mode: {} {:?}", pf.mode, pf.degraded);
    // Linux 6.6 opened the proc connector to unprivileged listeners; before it the kernel
    // answers EPERM and the guard polls.
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release.split(|c: char| !c.is_ascii_digit());
    let version: (u32, u32) = (
        v.next().unwrap().parse().unwrap(),
        v.next().unwrap().parse().unwrap(),
    );
    let connector = version >= (6, 6);
    assert_eq!(pf.mode, if connector { "connector" } else { "polling" });
    let leak = if connector {
        // Every fork is an event: even a daemon whose parent lived a millisecond.
        job.ok("$FIXTURE double-fork > fixture.json");
        job.spawned("fixture.json").role("daemon").ident()
    } else {
        let fx = start_stay(&mut job, "", "scrubbed-session");
        let child = fx.role("scrubbed").ident();
        wait_for_exec(&job.path("state.json"), child);
        release_stay(&mut job, fx.fixture);
        child
    };
    let (code, out) = job.run(SWEEP);
    assert_eq!(code, 1, "{out}");
    let r = ReportJ::read(&job.path("report.json"));
    assert_eq!(r.entry(leak).evidence, vec!["guard-lineage"]);
    assert!(wait_dead(&[leak], Duration::from_secs(5)));
}

// ---------------------------------------------------------------------------------------
// Failure modes
// ---------------------------------------------------------------------------------------

#[test]
fn a_guard_killed_mid_job_still_informs_the_sweep() {
    let _g = serial();
    let dir = ScratchDir::new("guard_killed");
    let mut job = Job::start(dir.path());
    job.ok("$JANITOR snapshot --state state.json");
    job.ok("$JANITOR guard start --state state.json");
    job.ok(&format!(
        "{MARKED} $FIXTURE scrubbed-session > fixture.json"
    ));
    let fx = job.spawned("fixture.json");
    let child = fx.role("scrubbed").ident();
    let state = job.path("state.json");
    wait_for_exec(&state, child);
    let guard = PidFileJ::read(&state).unwrap().ident();
    assert!(kill_ident(&guard, Signal::KILL));
    assert!(wait_dead(&[guard], Duration::from_secs(5)));

    let (code, out) = job.run(SWEEP);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("had died before the sweep"), "{out}");
    let r = ReportJ::read(&job.path("report.json"));
    let e = r.entry(child);
    assert_eq!(e.evidence, vec!["guard-lineage"]);
    assert_eq!(e.markers.github_action.as_deref(), Some("run-tests"));
    assert!(wait_dead(&[child], Duration::from_secs(5)));
    // The stale pid file is gone; the journal has no stop record from the dead guard.
    assert!(PidFileJ::read(&state).is_none());
    assert!(!journal(&state)
        .iter()
        .any(|r| matches!(r, Rec::Stop { .. })));
}

#[test]
fn start_and_stop_are_idempotent() {
    let _g = serial();
    let dir = ScratchDir::new("guard_idem");
    let mut job = Job::start(dir.path());
    job.ok("$JANITOR snapshot --state state.json");
    job.ok("$JANITOR guard start --state state.json 2> start1.txt");
    let first = PidFileJ::read(&job.path("state.json")).unwrap();
    job.ok("$JANITOR guard start --state state.json 2> start2.txt");
    let again = std::fs::read_to_string(job.path("start2.txt")).unwrap();
    assert!(again.contains("already running"), "{again}");
    assert_eq!(
        PidFileJ::read(&job.path("state.json")).unwrap().ident(),
        first.ident()
    );
    let status = job.ok("$JANITOR guard status --state state.json --json");
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["running"], true);
    assert_eq!(v["guard"]["pid"], first.pid);

    job.ok("$JANITOR guard stop --state state.json 2> stop1.txt");
    assert!(wait_dead(&[first.ident()], Duration::from_secs(5)));
    job.ok("$JANITOR guard stop --state state.json 2> stop2.txt");
    let stop2 = std::fs::read_to_string(job.path("stop2.txt")).unwrap();
    assert!(stop2.contains("no guard is running"), "{stop2}");
    let status = job.ok("$JANITOR guard status --state state.json --json");
    let v: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(v["running"], false);

    // Started again: a new guard, appending to the same journal.
    job.ok("$JANITOR guard start --state state.json");
    let second = PidFileJ::read(&job.path("state.json")).unwrap();
    assert_ne!(second.ident(), first.ident());
    job.ok("$JANITOR guard stop --state state.json");
    let starts = journal(&job.path("state.json"))
        .iter()
        .filter(|r| matches!(r, Rec::Start { .. }))
        .count();
    assert_eq!(starts, 2);
}

#[test]
fn the_dead_mans_switch_sweeps_when_the_job_root_dies() {
    let _g = serial();
    let dir = ScratchDir::new("guard_deadman");
    let mut job = Job::start(dir.path());
    job.ok("$JANITOR snapshot --state state.json");
    // The job shell stands for a per-job process (a runner's worker): named with --watch.
    job.ok("$JANITOR guard start --state state.json --watch $$");
    job.ok(&format!(
        "{MARKED} $FIXTURE scrubbed-session > fixture.json"
    ));
    let fx = job.spawned("fixture.json");
    let child = fx.role("scrubbed").ident();
    let state = job.path("state.json");
    wait_for_exec(&state, child);
    let guard = PidFileJ::read(&state).unwrap().ident();
    // The runner's worker dies: no post step, no sweep.
    assert!(kill_ident(&job.ident, Signal::KILL));
    let report = job.path("state.guard-report.json");
    assert!(
        wait_until(Instant::now() + Duration::from_secs(60), || report.exists()
            && !alive(&guard)),
        "no dead man's report; guard log:\n{}",
        std::fs::read_to_string(job.path("state.guard.log")).unwrap_or_default()
    );
    let r = ReportJ::read(&report);
    let e = r.entry(child);
    assert_eq!(e.class, "job");
    assert_eq!(e.evidence, vec!["guard-lineage"]);
    assert_eq!(
        e.markers.pytest_current_test.as_deref(),
        Some("tests/test_mcp.py::test_stdio (call)")
    );
    assert!(wait_dead(&[child], Duration::from_secs(5)));
    assert!(job.path("state.guard-report.txt").exists());
    assert!(PidFileJ::read(&state).is_none());
    let recs = journal(&state);
    assert!(
        matches!(recs.last(), Some(Rec::Stop { reason }) if reason.starts_with("watch-exited; swept 1")),
        "{:?}",
        recs.last()
    );
}

// ---------------------------------------------------------------------------------------
// Live warnings, degraded mode
// ---------------------------------------------------------------------------------------

#[test]
fn warns_of_a_step_that_left_processes_and_of_many_alike() {
    let _g = serial();
    let dir = ScratchDir::new("guard_warn");
    let mut job = Job::start(dir.path());
    job.ok("$JANITOR snapshot --state state.json");
    job.ok("$JANITOR guard start --state state.json --warn-over 3");
    // One step starts five copies of one program (forked, same command line) and ends.
    job.ok("GITHUB_ACTION=leaky-step $FIXTURE groups --groups 1 --per-group 5 > fixture.json");
    let fx = job.spawned("fixture.json");
    let state = job.path("state.json");
    let mut warnings = Vec::new();
    assert!(
        wait_until(Instant::now() + Duration::from_secs(20), || {
            warnings = journal(&state)
                .into_iter()
                .filter(|r| matches!(r, Rec::Warning { .. }))
                .collect();
            warnings.len() >= 2
        }),
        "{warnings:?}\njournal:\n{}\nlog:\n{}",
        std::fs::read_to_string(journal_path(&state)).unwrap_or_default(),
        std::fs::read_to_string(job.path("state.guard.log")).unwrap_or_default()
    );
    let kinds: Vec<(String, Option<String>, usize)> = warnings
        .iter()
        .map(|w| match w {
            Rec::Warning {
                warning,
                step,
                live,
                signature,
            } => {
                eprintln!("warning: {warning} {step:?} {live} {signature:?}");
                (warning.clone(), step.clone(), *live)
            }
            _ => unreachable!(),
        })
        .collect();
    assert!(kinds.contains(&("many-alike".into(), Some("leaky-step".into()), 4)));
    assert!(kinds.contains(&(
        "step-ended-with-live-descendants".into(),
        Some("leaky-step".into()),
        5
    )));
    let status = job.ok("$JANITOR guard status --state state.json");
    assert!(
        status.contains("warning: step `leaky-step` ended"),
        "{status}"
    );
    let (code, out) = job.run(SWEEP);
    assert_eq!(code, 1);
    assert!(out.contains("warning: step `leaky-step` ended"), "{out}");
    assert!(
        out.contains("live processes share the command line"),
        "{out}"
    );
    assert!(wait_dead(&fx.idents(), Duration::from_secs(5)));
}

#[test]
fn a_guard_in_a_foreign_pid_namespace_says_it_is_degraded() {
    let _g = serial();
    let dir = ScratchDir::new("guard_pidns");
    let mut c = Command::new("unshare");
    c.args(["--pid", "--fork", "--mount-proc", "sh", "-c"])
        .arg(
            r#"set -e
            "$JANITOR" snapshot --state state.json
            if "$JANITOR" guard start --state state.json --watch 1 2> watch1.txt; then
                echo "--watch 1 was accepted" >&2; exit 1
            fi
            "$JANITOR" guard start --state state.json
            "$JANITOR" guard status --state state.json --json > status.json
            "$JANITOR" guard stop --state state.json"#,
        )
        .current_dir(dir.path())
        .env("JANITOR", janitor_exe())
        .env("CI_JANITOR_LOG", "warn");
    for var in SCRUBBED {
        c.env_remove(var);
    }
    let out = output_of(c);
    assert!(out.status.success());
    // Regression: `--watch 1` made every new process on the machine the job's.
    let refusal = std::fs::read_to_string(dir.path().join("watch1.txt")).unwrap();
    assert!(
        refusal.contains("pid 1 is the ancestor of every process"),
        "{refusal}"
    );
    let v: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("status.json")).unwrap()).unwrap();
    assert_eq!(v["running"], true);
    assert_eq!(v["guard"]["mode"], "polling");
    let degraded = v["degraded"].to_string();
    assert!(degraded.contains("nested pid namespace"), "{degraded}");
    assert!(degraded.contains("no proc connector"), "{degraded}");
}

/// Births of `fixture`'s children in the journal, and the overruns it records.
fn burst_births(state: &Path, fixture: Ident) -> (usize, u32) {
    let recs = journal(state);
    // A frozen guard reads the fixture only after it exited: then its start time is
    // unknown (a gap) and its children name it by pid alone.
    let born = births(&recs)
        .iter()
        .filter(|b| {
            b.parent.pid == fixture.pid
                && b.parent
                    .start_ticks
                    .is_none_or(|t| t == fixture.start_ticks)
        })
        .count();
    let lost = recs
        .iter()
        .map(|r| match r {
            Rec::Lost { overruns } => *overruns,
            _ => 0,
        })
        .sum();
    (born, lost)
}

/// A guard frozen (SIGSTOP) through a burst of `count` forks, then thawed and stopped.
fn frozen_through_a_burst(job: &mut Job, start_args: &str, count: u32) -> (usize, u32, String) {
    job.ok(&format!(
        "$JANITOR guard start --state state.json {start_args}"
    ));
    let state = job.path("state.json");
    let guard = PidFileJ::read(&state).unwrap().ident();
    assert!(kill_ident(&guard, Signal::STOP));
    job.ok(&format!("$FIXTURE burst --count {count} > fixture.json"));
    let fx = job.spawned("fixture.json");
    assert!(kill_ident(&guard, Signal::CONT));
    let status_out = job
        .ok("$JANITOR guard stop --state state.json && $JANITOR guard status --state state.json");
    let (born, lost) = burst_births(&state, fx.fixture);
    (born, lost, status_out)
}

#[test]
fn dropped_events_are_reported_never_silently() {
    let _g = serial();
    let dir = ScratchDir::new("guard_enobufs");
    let mut job = Job::start(dir.path());
    job.ok("$JANITOR snapshot --state state.json");
    // A receive buffer of a few events, and a guard that cannot read while 500 forks happen:
    // the kernel must drop events.
    let (born, lost, status) = frozen_through_a_burst(&mut job, "--rcvbuf 4096", 500);
    eprintln!("tiny buffer: {born} of 500 births journaled, {lost} overruns reported");
    assert!(born < 500, "nothing was dropped from a 4 KiB buffer?");
    assert!(
        lost > 0,
        "events were dropped silently ({born} of 500 journaled)"
    );
    assert!(!status.contains(" 0 kernel overruns"), "{status}");
    let (_, out) = job.run(SWEEP);
    assert!(out.contains("the kernel dropped process events"), "{out}");
}

#[test]
fn the_default_buffer_holds_a_burst_while_the_guard_is_frozen() {
    // The control of the test above: same freeze, same kind of burst, the default buffer.
    let _g = serial();
    let dir = ScratchDir::new("guard_bigbuf");
    let mut job = Job::start(dir.path());
    let (born, lost, _) = frozen_through_a_burst(&mut job, "", 2000);
    assert_eq!((born, lost), (2000, 0));
}
