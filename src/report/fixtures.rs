//! Realistic sweep outcomes for the renderers' snapshot tests, built in code: the shapes
//! from the seeds (82 Prefect servers started by three tests, MCP stdio servers that lost
//! their markers), a clean run, hostile command lines, and thousands of leaks.

use std::time::Duration;

use crate::classify::{Class, Rule};
use crate::kill::Fate;
use crate::model::{Bytes, Listener, Markers, ProcessId, Protocol};
use crate::sweep::{Entry, PortCheck, PortOutcome, SweepOutcome};
use crate::test_support::{proc_at, snapshot_of};

use super::json::{build, Built};

const T0: u64 = 1_760_000_000_000;
const TRACKING: &str = "github_5a8e0c4e-2f1b-4c7e-9d3a-6b1f0e2d4c8a";
const PYTHON: &str = "/home/runner/work/app/app/.venv/bin/python";

/// One leaked (or spared) process, the way the sweep records it.
pub struct P<'a> {
    pub pid: i32,
    pub ppid: i32,
    pub pgid: i32,
    pub argv: Vec<Bytes>,
    pub class: Class,
    pub evidence: &'a [Rule],
    pub fate: Option<Fate>,
    pub listening: Vec<String>,
    pub markers: Markers,
}

impl<'a> P<'a> {
    pub fn new(pid: i32, ppid: i32, argv: &[&str]) -> P<'a> {
        P {
            pid,
            ppid,
            pgid: pid,
            argv: argv.iter().map(|a| Bytes::from(*a)).collect(),
            class: Class::Job,
            evidence: &[Rule::CiMarker, Rule::Descendant],
            fate: Some(Fate::Terminated { after_ms: 12 }),
            listening: vec![],
            markers: Markers::default(),
        }
    }

    fn entry(self) -> Entry {
        let mut p = proc_at(self.pid, self.ppid, 50_000 + self.pid as u64);
        p.pgid = self.pgid;
        p.sid = 3100;
        p.comm = self
            .argv
            .first()
            .map(|a| {
                let base = a.lossy().rsplit('/').next().unwrap_or("").to_owned();
                Bytes::from(base.chars().take(15).collect::<String>().as_str())
            })
            .unwrap_or_default();
        p.argv = self.argv.iter().collect();
        p.markers = self.markers.into();
        Entry {
            process: p,
            class: self.class,
            evidence: self.evidence.iter().copied().collect(),
            marker: self
                .evidence
                .contains(&Rule::CiMarker)
                .then_some("RUNNER_TRACKING_ID"),
            hints: Default::default(),
            fate: self.fate,
            round: 1,
            listening: self.listening,
        }
    }
}

fn job_markers(step: &str, test: Option<&str>, worker: Option<&str>) -> Markers {
    Markers {
        runner_tracking_id: Some(TRACKING.into()),
        github_run_id: Some("18342210457".into()),
        github_job: Some("test".into()),
        github_action: Some(step.into()),
        pytest_current_test: test.map(Into::into),
        pytest_xdist_worker: worker.map(Into::into),
        ..Markers::default()
    }
}

/// The listener behind a label like `tcp 127.0.0.1:8000` or `tcp [::]:6379`.
fn tcp(label: &str, owner: ProcessId) -> Option<Listener> {
    let (addr, port) = label.strip_prefix("tcp ")?.rsplit_once(':')?;
    let port: u16 = port.parse().ok()?;
    let v6 = addr.starts_with('[');
    Some(Listener {
        protocol: Protocol::Tcp,
        ip_version: Some(if v6 { 6 } else { 4 }),
        address: Some(addr.trim_matches(['[', ']']).into()),
        port: Some(port),
        path: None,
        kind: None,
        inode: 900_000 + u64::from(port) * 2 + u64::from(v6),
        uid: Some(1001),
        owners: vec![owner],
    })
}

/// Assembles an outcome and builds its report; ports of killed processes are checked free.
pub fn outcome(entries: Vec<Entry>, elapsed_ms: u64, rounds: u32) -> SweepOutcome {
    let mut first = snapshot_of(vec![], 0);
    first.taken_at_unix_ms = T0 + 600_000;
    first.machine.hostname = Some("fv-az1234-567".into());
    let ports = entries
        .iter()
        .filter(|e| e.fate.is_some())
        .flat_map(|e| {
            e.listening.iter().filter_map(|l| {
                Some(PortCheck {
                    listener: tcp(l, e.process.id)?,
                    held_by: vec![e.process.id],
                    outcome: if e.fate.as_ref().is_some_and(Fate::is_dead) {
                        PortOutcome::Freed
                    } else {
                        PortOutcome::StillHeld(vec![e.process.id])
                    },
                })
            })
        })
        .collect();
    SweepOutcome {
        baseline_taken_at_unix_ms: T0,
        first,
        entries,
        ports,
        zombies: 0,
        rounds,
        elapsed: Duration::from_millis(elapsed_ms),
        deadline_hit: false,
        distrusted: Vec::new(),
        dry_run: false,
    }
}

fn report(o: SweepOutcome) -> Built {
    let failed = o.failing_leaks().count() > 0;
    build(o, failed)
}

/// 82 Prefect API servers (uvicorn), each on its own port, started by three tests on four
/// xdist workers in step `__run_2`; two ignored SIGTERM until SIGKILL.
pub fn prefect() -> Built {
    let tests = [
        ("tests/test_prefect.py::test_multiple_agents (call)", 40),
        (
            "tests/test_prefect.py::test_complex_agent_run_in_flow (setup)",
            30,
        ),
        (
            "tests/test_uv_prefect_tasks.py::TestPrefectTasks::test_flow_runs (setup)",
            12,
        ),
    ];
    let mut entries = Vec::new();
    let mut i = 0u16;
    for (test, n) in tests {
        for _ in 0..n {
            let pid = 4100 + i32::from(i);
            let port = 8000 + i;
            let port_s = port.to_string();
            let mut p = P::new(
                pid,
                1,
                &[
                    PYTHON,
                    "-m",
                    "uvicorn",
                    "--app-dir",
                    "/home/runner/work/app/app/.venv/lib/python3.12/site-packages",
                    "--factory",
                    "prefect.server.api.server:create_app",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    &port_s,
                    "--log-level",
                    "error",
                    "--lifespan",
                    "on",
                ],
            );
            let worker = format!("gw{}", i % 4);
            p.markers = job_markers("__run_2", Some(test), Some(&worker));
            // Reparented to init: only the tracking id is left as evidence.
            p.evidence = &[Rule::CiMarker];
            p.listening = vec![format!("tcp 127.0.0.1:{port}")];
            p.fate = Some(if i == 17 || i == 58 {
                Fate::Killed { after_ms: 5000 }
            } else {
                Fate::Terminated {
                    after_ms: 40 + u64::from(i) * 2,
                }
            });
            entries.push(p.entry());
            i += 1;
        }
    }
    report(outcome(entries, 5_270, 2))
}

/// MCP stdio servers: one the job's (its session, no markers left: MCP clients start
/// servers with a scrubbed environment) with a child; one that double-forked out of the
/// session and so has no evidence at all; and an allowed redis.
pub fn mcp() -> Built {
    let mut server = P::new(
        5200,
        1,
        &[
            "uv",
            "run",
            "--with",
            "mcp",
            "python",
            "-m",
            "tests.mcp_server",
        ],
    );
    server.evidence = &[Rule::GuardLineage];
    let mut child = P::new(5203, 5200, &["python", "-m", "tests.mcp_server", "--stdio"]);
    child.pgid = 5200;
    child.evidence = &[Rule::ChildOfJob];
    child.fate = Some(Fate::Terminated { after_ms: 230 });
    let mut fs = P::new(
        5310,
        1,
        &[
            "node",
            "/usr/lib/node_modules/@modelcontextprotocol/server-filesystem/dist/index.js",
            "/tmp/pytest-of-runner/pytest-0/test_fs_tools0",
        ],
    );
    fs.class = Class::Unattributed;
    fs.evidence = &[];
    fs.fate = None;
    let mut redis = P::new(5400, 1, &["redis-server", "*:6379"]);
    redis.class = Class::Allowed {
        pattern: "comm:redis-server".into(),
    };
    redis.markers = job_markers("start-services", None, None);
    redis.listening = vec!["tcp 0.0.0.0:6379".into(), "tcp [::]:6379".into()];
    report(outcome(
        vec![server.entry(), child.entry(), fs.entry(), redis.entry()],
        260,
        1,
    ))
}

/// Nothing leaked.
pub fn clean() -> Built {
    report(outcome(vec![], 3, 1))
}

/// Command lines written to break renderers, and secrets that must not come out.
pub fn hostile() -> Built {
    let mut evil = P::new(
        6100,
        1,
        &[
            "/bin/sh",
            "-c",
            "echo 100% done\r\n::error::pwned | `id` <script>alert(1)</script> && --password hunter2 ]]> &amp;",
            "--token=ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789",
        ],
    );
    evil.argv.push(Bytes::from(vec![0xff, 0xfe, b'x', 0x01]));
    evil.markers = job_markers(
        "__run",
        Some("tests/test_x.py::test_evil[<img src=x onerror=alert(1)>|`a`,b:c] (call)"),
        None,
    );
    evil.listening = vec!["unix /tmp/a|b`c<d>.sock".into()];
    let mut curl = P::new(
        6101,
        6100,
        &[
            "curl",
            "-H",
            "Authorization: Bearer abc.def.ghi",
            "https://user:pa55w0rd@example.com/api?x=1&token=t0k3n",
        ],
    );
    curl.fate = Some(Fate::Unkillable { state: 'D' });
    report(outcome(vec![evil.entry(), curl.entry()], 5_100, 1))
}

/// `n` leaks with `n` different command lines (a name made of letters, so nothing is
/// masked), each on a port.
pub fn many_signatures(n: usize) -> Built {
    let entries = (0..n)
        .map(|i| {
            let name = letters(i);
            let mut p = P::new(
                10_000 + i as i32,
                1,
                &[
                    "node",
                    &format!("/srv/app/services/{name}/server.js"),
                    "--port",
                    &(20_000 + i).to_string(),
                ],
            );
            p.markers = job_markers("__run_3", Some(&format!("tests/{name}.test.js")), None);
            p.listening = vec![format!("tcp 127.0.0.1:{}", 20_000 + i)];
            p.entry()
        })
        .collect();
    report(outcome(entries, 5_000, 1))
}

/// `n` leaks of one command line, each its own tree of a parent and a child.
pub fn many_trees(n: usize) -> Built {
    let entries = (0..n)
        .flat_map(|i| {
            let pid = 20_000 + 2 * i as i32;
            let mut parent = P::new(pid, 1, &["sh", "-c", "sleep 3600"]);
            parent.markers = job_markers("__run", None, None);
            let mut child = P::new(pid + 1, pid, &["sleep", &(3600 + i).to_string()]);
            child.pgid = pid;
            child.evidence = &[Rule::ChildOfJob];
            [parent.entry(), child.entry()]
        })
        .collect();
    report(outcome(entries, 5_000, 1))
}

/// `aa`, `ab`, ...: distinct names without digits.
fn letters(mut i: usize) -> String {
    let mut s = Vec::new();
    loop {
        s.push(b'a' + (i % 26) as u8);
        i /= 26;
        if i == 0 {
            break;
        }
    }
    s.push(b'x');
    s.reverse();
    String::from_utf8_lossy(&s).into_owned()
}

/// A clean run whose job was stuck when it was cancelled: the hang report captured
/// before the kill, with one verdict.
pub fn hung() -> Built {
    let mut built = clean();
    built.report.hang = Some(crate::diagnose::Hang {
        reason: "signal SIGTERM".into(),
        at_unix_ms: 1_000_000,
        elapsed_ms: 1200,
        bound_ms: 5000,
        sample_ms: 1000,
        complete: true,
        processes: vec![crate::diagnose::HangProcess {
            pid: 42,
            comm: "python3".into(),
            command: "python3 -m pytest -k <test>".into(),
            state: 'S',
            wchan: Some("wait_woken".into()),
            syscall: Some("recvfrom(fd 5)".into()),
            cpu_ms: 300,
            cpu_delta_ms: Some(0),
            age_s: 291,
            threads: 2,
            python: true,
            ..Default::default()
        }],
        verdicts: vec![crate::diagnose::Verdict {
            pids: vec![42],
            kind: "waits-on-closed-port".into(),
            sentence: "pytest pid 42 has waited 290 s on 127.0.0.1:4200 (CLOSE-WAIT, in \
                       recvfrom(fd 5)); nothing listens there."
                .into(),
        }],
        missing: vec!["py-spy is not installed".into()],
        ..Default::default()
    });
    built
}
