//! The soak test (issue 11): 20 cycles, back to back, of snapshot, guard, a job that leaks
//! 1,000 processes (100 process groups of 10) and a sweep, in one state directory (so the
//! journal also holds every earlier guard's records, which the sweep must not use). After
//! each cycle: no survivor, no false kill (bystanders started before and during the
//! cycles, outside the job, all alive), and the guard's peak and resident memory and its
//! open descriptors, sampled after it journaled the 1,000 births, do not grow across
//! cycles. Slow (about a minute and a half), so ignored by default; `.ci/run` runs it
//! (`cargo test --test integration soak -- --ignored`).

use std::path::Path;
use std::time::{Duration, Instant};

use crate::guard::{Job, PidFileJ};
use crate::support::{alive, serial, wait_dead, Fixture, Ident, ScratchDir};

const CYCLES: usize = 20;
const GROUPS: usize = 100;
const PER_GROUP: usize = 10;

/// What the guard holds, from `/proc/PID/status` and `/proc/PID/fd`.
#[derive(Debug, Clone, Copy)]
struct Usage {
    hwm_kb: u64,
    rss_kb: u64,
    fds: usize,
}

fn usage(pid: i32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kb = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {field} in the guard's status"))
    };
    Usage {
        hwm_kb: kb("VmHWM:"),
        rss_kb: kb("VmRSS:"),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count(),
    }
}

fn leaked_idents(job: &Job, name: &str) -> Vec<Ident> {
    job.spawned(name).idents()
}

fn job_count(report: &Path) -> usize {
    let v: serde_json::Value = serde_json::from_slice(&std::fs::read(report).unwrap()).unwrap();
    v["processes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["class"] == "job")
        .count()
}

#[test]
#[ignore = "slow: the soak test, run by .ci/run"]
fn soak_twenty_cycles_of_a_thousand_leaked_processes() {
    let _serial = serial();
    let began = Instant::now();
    let dir = ScratchDir::new("soak");
    // Bystanders: started before the first snapshot, and none of the job's.
    let before = Fixture::spawn("groups", &["--groups", "5", "--per-group", "2"]);
    let mut bystanders: Vec<Ident> = before.spawned().idents();
    let mut during: Vec<Fixture> = Vec::new();
    let mut usages: Vec<Usage> = Vec::new();
    let mut times: Vec<Duration> = Vec::new();
    for cycle in 1..=CYCLES {
        let t0 = Instant::now();
        let mut job = Job::start(dir.path());
        job.ok("$JANITOR snapshot --state state.json");
        job.ok("$JANITOR guard start --state state.json");
        let guard = PidFileJ::read(&dir.path().join("state.json"))
            .expect("no pid file")
            .ident();
        // A bystander started during the job, outside it: unattributed, never signalled.
        let by = Fixture::spawn("sleep", &[]);
        bystanders.extend(by.spawned().idents());
        during.push(by);
        job.ok(&format!(
            "$FIXTURE groups --groups {GROUPS} --per-group {PER_GROUP} > leak.json"
        ));
        let leaked = leaked_idents(&job, "leak.json");
        assert_eq!(leaked.len(), GROUPS * PER_GROUP);
        // The guard has seen the 1,000 births once its journal has them: poll for it.
        let journal = dir.path().join("state.journal.jsonl");
        let last = leaked.last().copied().unwrap();
        let needle = format!("\"pid\":{},\"start_ticks\":{}", last.pid, last.start_ticks);
        assert!(
            crate::support::wait_until(Instant::now() + Duration::from_secs(30), || {
                std::fs::read_to_string(&journal).is_ok_and(|t| t.contains(&needle))
            }),
            "cycle {cycle}: the guard never journaled the last birth"
        );
        usages.push(usage(guard.pid));
        let (code, out) = job.run(
            "$JANITOR sweep --state state.json --grace 2s --deadline 60s --color never \
             --report-json report.json > sweep.out",
        );
        assert_eq!(code, 1, "cycle {cycle}: the leak was not found");
        let _ = out;
        assert!(
            wait_dead(&leaked, Duration::from_secs(10)),
            "cycle {cycle}: survivors: {:?}",
            leaked
                .iter()
                .filter(|i| alive(i))
                .take(5)
                .collect::<Vec<_>>()
        );
        assert!(!alive(&guard), "cycle {cycle}: the guard was not stopped");
        let dead: Vec<&Ident> = bystanders.iter().filter(|b| !alive(b)).collect();
        assert!(
            dead.is_empty(),
            "cycle {cycle}: bystanders killed: {dead:?}"
        );
        assert_eq!(
            job_count(&dir.path().join("report.json")),
            GROUPS * PER_GROUP,
            "cycle {cycle}: the report does not hold exactly the leak"
        );
        drop(job);
        times.push(t0.elapsed());
        eprintln!(
            "cycle {cycle}: {:?}, guard {:?}",
            t0.elapsed(),
            usages.last().unwrap()
        );
    }
    let first = &usages[..5];
    let last = &usages[CYCLES - 5..];
    let avg = |u: &[Usage], f: fn(&Usage) -> u64| u.iter().map(f).sum::<u64>() / u.len() as u64;
    let (hwm0, hwm1) = (avg(first, |u| u.hwm_kb), avg(last, |u| u.hwm_kb));
    let (rss0, rss1) = (avg(first, |u| u.rss_kb), avg(last, |u| u.rss_kb));
    let fds: Vec<usize> = usages.iter().map(|u| u.fds).collect();
    eprintln!(
        "soak: {CYCLES} cycles of {} leaked processes in {:?} (cycles {:?} to {:?}); guard \
         VmHWM {hwm0} -> {hwm1} kB, VmRSS {rss0} -> {rss1} kB, fds {fds:?}",
        GROUPS * PER_GROUP,
        began.elapsed(),
        times.iter().min().unwrap(),
        times.iter().max().unwrap()
    );
    // No growth: the last cycles' guards hold no more than the first cycles' (a tenth,
    // and 1 MiB, of slack for the allocator), and the same descriptors.
    assert!(
        hwm1 <= hwm0 + hwm0 / 10 + 1024,
        "VmHWM grew: {hwm0} -> {hwm1} kB"
    );
    assert!(
        rss1 <= rss0 + rss0 / 10 + 1024,
        "VmRSS grew: {rss0} -> {rss1} kB"
    );
    assert!(
        fds.iter().max().unwrap() - fds.iter().min().unwrap() <= 1,
        "open descriptors changed: {fds:?}"
    );
    drop(during);
    drop(before);
}
