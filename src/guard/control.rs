//! `guard start|stop|status`, and what a sweep asks of the guard ([`for_sweep`]): the
//! guard as seen from outside it. The daemon itself is in [`super::daemon`].

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::lineage::{self, Lineage};
use super::pidfile::{
    check_pid_file, read_pid_file, read_stopped_file, remove_pid, remove_pid_file, running,
    GuardPaths, Named, PidFile,
};
use super::{file_error, journal, GuardError};
use crate::model::ProcessId;
use crate::platform;
use crate::settings::Env;

/// How long `guard start` waits for the guard to say it is ready (subscribing takes at
/// most two seconds, the first scan a fraction of one).
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long `guard stop` waits after SIGTERM before SIGKILL, and after SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a SIGKILLed guard is waited for when the deadline has passed already.
const KILL_MIN_WAIT: Duration = Duration::from_millis(500);

/// What the guard's first line on the readiness pipe says.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub(super) enum Readiness {
    Ready(PidFile),
    Failed { error: String },
}

/// What the guard needs to know about the job, gathered by `guard start` (the guard itself
/// runs detached, in a session of its own, with no job marker in its environment).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct JobFacts {
    /// The job's identity markers: a process that execs carrying one is born into the job.
    pub markers: crate::model::Markers,
    /// Hints for the dead man's report.
    pub session: Option<i32>,
    pub cgroup: Option<String>,
    /// How the dead man's sweep sweeps: the options `sweep` would have been given.
    #[serde(default)]
    pub sweep: Option<crate::cli::SweepOpts>,
}

/// `guard start` options.
#[derive(Debug, Clone)]
pub struct StartOptions {
    pub state: PathBuf,
    /// The process whose exit without a sweep makes the guard sweep (its dead man's
    /// switch): a per-job root, checked by the caller ([`checked_watch`]).
    pub watch: Option<ProcessId>,
    /// The job's root for lineage: what is born below it is the job's.
    pub root: Option<ProcessId>,
    /// Hints for the dead man's report.
    pub session: Option<i32>,
    pub cgroup: Option<String>,
    pub warn_over: usize,
    /// Poll `/proc` even when the proc connector is available (tests, comparisons).
    pub force_poll: bool,
    /// The connector's receive buffer (tests of dropped events); default: 32 MiB.
    pub rcvbuf: Option<usize>,
    /// The job's identity markers (completed from the state's baseline).
    pub markers: crate::model::Markers,
    /// The options of the dead man's sweep.
    pub sweep: crate::cli::SweepOpts,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Started {
    New(PidFile),
    /// A guard for this state file already runs; nothing was started.
    Already(PidFile),
}

/// Starts the guard in the background, or finds it running (idempotent). Returns once the
/// guard is listening: everything forked after this returns is seen.
pub fn start(opts: &StartOptions, env: Env<'_>) -> Result<Started, GuardError> {
    let paths = GuardPaths::for_state(&opts.state);
    let proc_root = Path::new("/proc");
    let dir = paths.dir()?;
    let _lock = lock(&dir, &paths)?;
    if let Some(running) = running(&paths, proc_root)? {
        return Ok(Started::Already(running));
    }
    // The dead man's sweep must be possible with these options: refuse bad ones now.
    crate::settings::sweep_settings(&opts.sweep, env).map_err(GuardError::Options)?;
    // A dead man's sweep needs a baseline: take one now if the job has none.
    let boot_id = platform::boot_id(proc_root)?;
    let mut markers = opts.markers.identity();
    match crate::state::load(&paths.state, &boot_id) {
        Ok(baseline) => {
            // The markers the snapshot gave the job (`--export`) count too.
            for (var, value) in baseline
                .job
                .as_ref()
                .map(|j| j.markers.identity())
                .unwrap_or_default()
                .identity_pairs()
            {
                if markers.get(var).is_none() {
                    markers.set(var, value.to_owned());
                }
            }
        }
        Err(crate::state::StateError::Missing(_)) => {
            let mut snap = platform::read_snapshot(&platform::ReadOptions {
                detail: platform::Detail::None,
                ..platform::ReadOptions::default()
            })?;
            crate::redact::redact_snapshot(&mut snap);
            snap.job = Some(crate::model::JobInfo {
                markers: markers.clone(),
            });
            crate::state::save(&paths.state, &snap)?;
            eprintln!(
                "ci-janitor: no snapshot at {}; took one ({} processes)",
                paths.state.display(),
                snap.processes.len()
            );
        }
        Err(e) => return Err(e.into()),
    }
    let (watch, root) = (opts.watch, opts.root);
    let facts = JobFacts {
        markers,
        session: opts.session,
        cgroup: opts.cgroup.clone(),
        sweep: Some(opts.sweep.clone()),
    };
    let exe = std::env::current_exe().map_err(|source| GuardError::Spawn {
        exe: "ci-janitor".into(),
        source,
    })?;
    let log = dir
        .append(&GuardPaths::name(&paths.log), crate::files::PRIVATE)
        .map_err(|e| file_error("open the guard's log", e))?;
    let (ready_r, ready_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| GuardError::Setup(format!("create the readiness pipe: {e}")))?;
    let context = serde_json::to_string(&facts).map_err(|e| GuardError::Setup(e.to_string()))?;
    let mut cmd = Command::new(&exe);
    cmd.args(["guard", "run", "--state"])
        .arg(&paths.state)
        .arg("--warn-over")
        .arg(opts.warn_over.to_string())
        .arg("--context")
        .arg(context)
        .stdin(Stdio::null())
        .stdout(Stdio::from(ready_w))
        .stderr(Stdio::from(log))
        // The guard is not a job process: it must not look like one to the runner's own
        // orphan cleanup, nor to a sweep. The job's markers travel in --context.
        // Its log is a file: no colour codes in it.
        .env("NO_COLOR", "1")
        .env(
            "CI_JANITOR_LOG",
            env("CI_JANITOR_LOG")
                .filter(|v| !v.is_empty())
                .unwrap_or_else(|| "info".into()),
        );
    for k in crate::model::JOB_MARKERS {
        cmd.env_remove(k.var);
    }
    if let Some(w) = watch {
        cmd.arg("--watch")
            .arg(format!("{}:{}", w.pid, w.start_ticks));
    }
    if let Some(r) = root {
        cmd.arg("--root")
            .arg(format!("{}:{}", r.pid, r.start_ticks));
    }
    if opts.force_poll {
        cmd.arg("--poll");
    }
    if let Some(bytes) = opts.rcvbuf {
        cmd.arg("--rcvbuf").arg(bytes.to_string());
    }
    let child = cmd.spawn().map_err(|source| GuardError::Spawn {
        exe: exe.clone(),
        source,
    })?;
    // Drop our copy of the write end (it went into `cmd`), so EOF means the guard died.
    drop(cmd);
    let line = read_line(ready_r, Instant::now() + READY_TIMEOUT);
    let not_ready = |reason: String| GuardError::NotReady {
        reason,
        log: paths.log.clone(),
    };
    // The guard stays our child until we exit; it is reparented then. Not waited for.
    drop(child);
    match line.map_err(not_ready)? {
        Readiness::Ready(pid_file) => Ok(Started::New(pid_file)),
        Readiness::Failed { error } => Err(not_ready(error)),
    }
}

/// A `--watch` process, checked: a root is something the job runs under, so it must be an
/// ancestor of ours, and never init (everything descends from it).
pub fn checked_watch(proc_root: &Path, pid: i32) -> Result<(ProcessId, u32), GuardError> {
    if pid <= 1 {
        return Err(GuardError::Watch(format!(
            "--watch {pid}: pid {pid} is the ancestor of every process, so watching it would \
             make everything the job's; name a per-job process (the job's shell, `ci-janitor \
             run`) or leave --watch out"
        )));
    }
    let id = ProcessId {
        pid,
        start_ticks: platform::start_ticks(proc_root, pid).ok_or_else(|| {
            GuardError::Watch(format!("--watch {pid}: no process {pid} is running"))
        })?,
    };
    let mut at = platform::read_one(proc_root, std::process::id() as i32).map(|p| p.ppid);
    for depth in 1..64 {
        match at {
            Some(p) if p == pid => return Ok((id, depth)),
            Some(p) if p > 1 => at = platform::read_one(proc_root, p).map(|p| p.ppid),
            _ => break,
        }
    }
    Err(GuardError::Watch(format!(
        "--watch {pid}: process {pid} is not an ancestor of this command; the watched process \
         must be one the job runs under (its shell, `ci-janitor run`)"
    )))
}

fn read_line(fd: OwnedFd, deadline: Instant) -> Result<Readiness, String> {
    use rustix::event::{PollFd, PollFlags};
    let mut file = File::from(fd);
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            return serde_json::from_slice(&buf[..end])
                .map_err(|e| format!("the guard said something unexpected ({e})"));
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(format!("the guard was not ready within {READY_TIMEOUT:?}"));
        }
        let ts = crate::platform::proc_events::timespec(left);
        let mut fds = [PollFd::new(&file, PollFlags::IN)];
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(format!("wait for the guard: {e}")),
        }
        match file.read(&mut chunk) {
            Ok(0) => return Err("the guard exited before it was ready".into()),
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("wait for the guard: {e}")),
        }
    }
}

/// An exclusive lock on the guard's lock file, so two `guard start`s cannot both start one.
fn lock(dir: &crate::files::Dir, paths: &GuardPaths) -> Result<OwnedFd, GuardError> {
    let file = dir
        .keep(&GuardPaths::name(&paths.lock), crate::files::PRIVATE)
        .map_err(|e| file_error("open the guard's lock file", e))?;
    let fd = OwnedFd::from(file);
    rustix::fs::flock(&fd, rustix::fs::FlockOperation::LockExclusive).map_err(|e| {
        GuardError::File {
            what: "lock the guard's lock file",
            path: paths.lock.clone(),
            source: e.into(),
        }
    })?;
    Ok(fd)
}

/// What `guard stop` did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Stopped {
    /// No pid file: no guard.
    NotRunning,
    /// A pid file for a guard that is gone (crashed, killed, another boot); removed.
    Stale(PidFile),
    /// Stopped with SIGTERM (`killed: false`) or, when it did not exit in time, SIGKILL.
    Signalled { guard: PidFile, killed: bool },
    /// The pid file names a live process that is not this state's guard: not signalled.
    Distrusted { pid_file: PidFile, why: String },
    /// A dry run: the guard was left running (its journal so far was read).
    LeftRunning(PidFile),
}

/// Stops the guard of `state` (idempotent), waiting for it at most until `until` (and
/// [`STOP_TIMEOUT`] per signal): SIGTERM and SIGCONT (a stopped guard must be able to act
/// on it), then SIGKILL for what remains of the time.
pub fn stop(state: &Path, until: Instant) -> Result<Stopped, GuardError> {
    let paths = GuardPaths::for_state(state);
    let proc_root = Path::new("/proc");
    let Some(pf) = read_pid_file(&paths)? else {
        return Ok(Stopped::NotRunning);
    };
    let live = match check_pid_file(&paths, pf, proc_root)? {
        Named::Guard(live) => live,
        Named::Gone(pf) => {
            remove_pid(&paths);
            return Ok(Stopped::Stale(pf));
        }
        Named::Distrusted { pid_file, why } => return Ok(Stopped::Distrusted { pid_file, why }),
    };
    let pf = live.clone();
    let handle = match platform::open(proc_root, live.id()) {
        Ok(h) => h,
        Err(platform::SignalResult::Gone) => {
            remove_pid(&paths);
            return Ok(Stopped::Stale(pf));
        }
        Err(e) => {
            return Err(GuardError::Stop {
                pid: pf.pid,
                detail: describe_signal(e),
            })
        }
    };
    let mut killed = false;
    for sig in [platform::Sig::Term, platform::Sig::Kill] {
        let sent = match handle.signal(sig) {
            platform::SignalResult::Sent if sig == platform::Sig::Term => {
                handle.signal(platform::Sig::Cont)
            }
            r => r,
        };
        match sent {
            platform::SignalResult::Sent | platform::SignalResult::Gone => {}
            e => {
                return Err(GuardError::Stop {
                    pid: pf.pid,
                    detail: describe_signal(e),
                })
            }
        }
        // SIGTERM gets half of what is left; SIGKILL the rest (at least a moment: a
        // SIGKILLed process is gone as soon as the kernel has run its exit).
        let now = Instant::now();
        let left = until.saturating_duration_since(now);
        let wait = match sig {
            platform::Sig::Term => left / 2,
            _ => left.max(KILL_MIN_WAIT),
        }
        .min(STOP_TIMEOUT);
        if !platform::wait_exits(&[&handle], now + wait).is_empty() {
            break;
        }
        if sig == platform::Sig::Kill {
            return Err(GuardError::Stop {
                pid: pf.pid,
                detail: format!("it did not exit within {wait:?} of SIGKILL"),
            });
        }
        tracing::warn!(
            "the guard (pid {}) did not exit within {wait:?} of SIGTERM; killing it",
            pf.pid
        );
        killed = true;
    }
    remove_pid_file(&paths, live.id());
    Ok(Stopped::Signalled {
        guard: live,
        killed,
    })
}

fn describe_signal(r: platform::SignalResult) -> String {
    match r {
        platform::SignalResult::NotPermitted => {
            "not permitted (it runs as another user: stop it as that user or as root)".into()
        }
        platform::SignalResult::Failed(errno) => io::Error::from_raw_os_error(errno).to_string(),
        platform::SignalResult::Sent | platform::SignalResult::Gone => "no error".into(),
    }
}

/// `guard status`: whether it runs, and what its journal holds.
#[derive(Debug, Clone, Serialize)]
pub struct Status {
    pub running: bool,
    pub guard: Option<PidFile>,
    /// A pid file names a guard that is gone.
    pub stale: bool,
    pub journal: PathBuf,
    pub log: PathBuf,
    pub births: usize,
    pub gaps: usize,
    pub overruns: u64,
    pub degraded: Vec<String>,
    pub warnings: Vec<String>,
    pub journal_problems: Vec<String>,
    pub last_stop: Option<String>,
}

pub fn status(state: &Path) -> Result<Status, GuardError> {
    let paths = GuardPaths::for_state(state);
    let pf = read_pid_file(&paths)?;
    let live = running(&paths, Path::new("/proc"))?;
    let lineage = read_lineage(&paths).unwrap_or_default();
    Ok(Status {
        running: live.is_some(),
        stale: pf.is_some() && live.is_none(),
        guard: live.or(pf),
        journal: paths.journal,
        log: paths.log,
        births: lineage.births,
        gaps: lineage.gaps,
        overruns: lineage.overruns,
        degraded: lineage.degraded.clone(),
        warnings: lineage.warnings.iter().map(|w| w.describe()).collect(),
        journal_problems: lineage.journal_problems.clone(),
        last_stop: lineage.last_stop.clone(),
    })
}

fn read_lineage(paths: &GuardPaths) -> Result<Lineage, String> {
    match journal::read(&paths.journal) {
        Ok(Some(j)) => Ok(Lineage::from_journal(&j)),
        Ok(None) => Ok(Lineage::default()),
        Err(e) => Err(format!("read the journal {}: {e}", paths.journal.display())),
    }
}

/// What a sweep gets from the guard.
#[derive(Debug, Clone, Default)]
pub struct AtSweep {
    /// What stopping the guard did (`None`: there was no pid file).
    pub stopped: Option<Stopped>,
    /// Guards to protect whatever happened (one that would not stop, older ones).
    pub protect: Vec<ProcessId>,
    /// The journal, when there is one.
    pub lineage: Option<Lineage>,
    /// Problems met (stopping, reading the journal): reported, never fatal to the sweep.
    pub problems: Vec<String>,
}

/// Stops the guard of `state` (waiting at most until `until`) and reads its journal: the
/// first thing a sweep does. A dry run signals nothing: the guard is left running.
pub fn for_sweep(state: &Path, dry_run: bool, until: Instant) -> AtSweep {
    let paths = GuardPaths::for_state(state);
    let mut at = AtSweep::default();
    if let Ok(Some(pf)) = read_pid_file(&paths) {
        at.protect.push(pf.id());
    }
    let stopped = if dry_run {
        match read_pid_file(&paths) {
            Ok(None) => Ok(Stopped::NotRunning),
            Ok(Some(pf)) => check_pid_file(&paths, pf, Path::new("/proc")).map(|n| match n {
                Named::Guard(pf) => Stopped::LeftRunning(pf),
                Named::Gone(pf) => Stopped::Stale(pf),
                Named::Distrusted { pid_file, why } => Stopped::Distrusted { pid_file, why },
            }),
            Err(e) => Err(e),
        }
    } else {
        stop(state, until)
    };
    // The journal is taken only from the guard the pid file names, verified (alive and
    // ours) or dead in this boot: see [`Lineage::of_guard`].
    let boot = platform::boot_id(Path::new("/proc")).ok();
    // After `guard stop` there is no pid file: the stopped guard's file names it.
    let last_stopped = match &stopped {
        Ok(Stopped::NotRunning) => read_stopped_file(&paths),
        _ => None,
    };
    let vouched = match &stopped {
        Ok(
            Stopped::Signalled { guard: pf, .. } | Stopped::Stale(pf) | Stopped::LeftRunning(pf),
        ) => Some(pf),
        _ => last_stopped.as_ref(),
    }
    .filter(|pf| boot.as_ref() == Some(&pf.boot_id))
    .map(|pf| lineage::Vouched {
        guard: pf.id(),
        boot_id: pf.boot_id.clone(),
        root: pf.root,
    });
    match stopped {
        Ok(Stopped::NotRunning) => {}
        Ok(Stopped::Distrusted { pid_file, why }) => {
            at.problems.push(format!(
                "distrusted the pid file {} (it names pid {}): {why}; nothing was signalled",
                paths.pid.display(),
                pid_file.pid
            ));
            at.stopped = Some(Stopped::Distrusted { pid_file, why });
        }
        Ok(s) => at.stopped = Some(s),
        Err(e) => at.problems.push(format!("could not stop the guard: {e}")),
    }
    // Parsing the journal gets at most half of the time left: the kill needs the rest.
    let now = Instant::now();
    let parse_until = now + until.saturating_duration_since(now) / 2;
    match read_sweep_lineage(&paths.journal, vouched.as_ref(), parse_until) {
        Ok(None) => {}
        Ok(Some(l)) => {
            at.protect.extend(l.guards.iter().copied());
            at.lineage = Some(l);
        }
        Err(e) => at.problems.push(e),
    }
    at
}

/// The journal at `path` as a sweep may use it: read within `until` (see
/// [`journal::read_until`]), only the records of the guard `vouched` names (see
/// [`Lineage::of_guard`]). `None` when there is no journal or it holds nothing.
pub fn read_sweep_lineage(
    path: &Path,
    vouched: Option<&lineage::Vouched>,
    until: Instant,
) -> Result<Option<Lineage>, String> {
    match journal::read_until(path, until) {
        Ok(Some(j)) if j.records.is_empty() && j.cut.is_none() => Ok(None),
        Ok(Some(j)) => {
            let mut l = Lineage::of_guard(&j, vouched);
            l.journal_problems.extend(j.describe_cut());
            Ok(Some(l))
        }
        Ok(None) => Ok(None),
        Err(e) => Err(format!("read the journal {}: {e}", path.display())),
    }
}
