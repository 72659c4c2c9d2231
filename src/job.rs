//! The job: the one notion of *which processes are this job's*, used by `snapshot`, the
//! guard, `sweep`, `run`, the runner hooks and the Action alike.
//!
//! A job is named by its **identity markers** ([`crate::model::JOB_MARKERS`]): environment
//! variables that everything it starts inherits. ci-janitor sets its own
//! (`CI_JANITOR_RUN`: `run`, the Action through `$GITHUB_ENV`, `snapshot --export`), and
//! every CI sets one of its own per job (`RUNNER_TRACKING_ID`, `CI_JOB_ID`, ...). A
//! process that carries another job's marker is that job's.
//!
//! A job may also have **roots**: per-job processes whose live descendants are the job's.
//! Only per-job processes qualify: `ci-janitor run`, GitHub's `Runner.Worker`, Azure's
//! `Agent.Worker`, a `--watch` process within the caller's own ancestry, and, for a sweep,
//! the shell that called it (wrappers such as `timeout` or `flock` skipped) when that shell
//! carries the job's marker. A long-lived agent (GitLab runner, Jenkins agent, Buildkite
//! agent), which runs other jobs too, is never a root; neither is init.
//!
//! This module also holds the one sweep routine ([`sweep`] then [`finish`]): `sweep`, `run`,
//! the guard's dead man's switch, the runner hooks and the Action all go through it, with
//! the same settings.

use std::io::Write;
use std::path::Path;

use crate::classify::Context;
use crate::cli::FailOn;
use crate::errors::{AppError, Exit};
use crate::model::{Bytes, Markers, ProcessId, Snapshot, JOB_MARKERS};
use crate::platform::{self, ReadOptions};
use crate::report;
use crate::settings::{Env, SweepSettings};

/// What a root is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RootKind {
    /// `ci-janitor run`, the command's subreaper.
    Run,
    /// GitHub Actions' `Runner.Worker`: one per job.
    RunnerWorker,
    /// Azure Pipelines' `Agent.Worker`: one per job.
    AgentWorker,
    /// The shell that called the sweep (it carries the job's markers, or the job has none).
    Caller,
    /// A process named by `guard start --watch`.
    Watch,
}

impl RootKind {
    /// Whether the guard's dead man's switch may watch it: a root that ends with the job.
    /// The sweep's caller is not one (a step's shell ends with its step).
    pub fn ends_with_the_job(self) -> bool {
        !matches!(self, RootKind::Caller)
    }

    pub fn describe(self) -> &'static str {
        match self {
            RootKind::Run => "ci-janitor run",
            RootKind::RunnerWorker => "the GitHub runner's worker (Runner.Worker)",
            RootKind::AgentWorker => "the Azure Pipelines agent's worker (Agent.Worker)",
            RootKind::Caller => "the shell that ran ci-janitor",
            RootKind::Watch => "the process given to --watch",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Root {
    pub id: ProcessId,
    pub kind: RootKind,
    /// How many generations above the running ci-janitor (0: itself).
    pub depth: u32,
}

/// Where the command that needs the job runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    /// Run by the job's shell (`sweep`, `snapshot`, `guard start`): the shell, wrappers
    /// skipped, is a root when it carries the job's marker.
    Shell,
    /// Run by the Action's node shim or a runner hook: the caller is transient; the
    /// runner's worker is the root.
    Runner,
}

/// Wrappers that may stand between the job's shell and ci-janitor. A sweep looks past them
/// for its caller: `timeout 60 ci-janitor sweep` must find the same leaks as a bare sweep.
const WRAPPERS: &[&[u8]] = &[
    b"timeout",
    b"time",
    b"flock",
    b"nice",
    b"ionice",
    b"env",
    b"sudo",
    b"doas",
    b"su",
    b"runuser",
    b"setpriv",
    b"stdbuf",
    b"unbuffer",
    b"nohup",
    b"setsid",
    b"chrt",
    b"taskset",
    b"xargs",
    b"strace",
    b"ltrace",
    b"catchsegv",
];

/// Per-job processes of CI runners, by the name of the process among our ancestors.
const WORKERS: &[(&[u8], RootKind)] = &[
    (b"Runner.Worker", RootKind::RunnerWorker),
    (b"Agent.Worker", RootKind::AgentWorker),
];

/// The job, as seen from the running ci-janitor.
#[derive(Debug, Clone, Default)]
pub struct Job {
    pub me: Option<ProcessId>,
    /// The job's identity markers.
    pub markers: Markers,
    pub roots: Vec<Root>,
    /// Hints only (see [`crate::classify::Hint`]).
    pub session: Option<i32>,
    pub cgroup: Option<String>,
    /// Our executable's path, to recognise ci-janitor guards by identity.
    pub own_exe: Option<Bytes>,
    /// Processes never to touch (the process that took the baseline, guards).
    pub also_protected: Vec<ProcessId>,
    /// What a person should know about how the job was found (a caller that was not taken
    /// as a root, a marker missing), for the report.
    pub notes: Vec<String>,
}

/// The job's identity markers in an environment.
pub fn markers_from_env(env: Env<'_>) -> Markers {
    let mut m = Markers::default();
    for k in JOB_MARKERS {
        if let Some(v) = env(k.var) {
            m.set(k.var, v);
        }
    }
    m
}

/// A new ci-janitor marker: `PREFIX-` and 64 random bits.
pub fn new_marker(prefix: &str) -> String {
    let random = std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .map(|u| {
            u.trim()
                .replace('-', "")
                .chars()
                .take(16)
                .collect::<String>()
        })
        .unwrap_or_else(|_| format!("{:x}", std::process::id()));
    format!("{prefix}-{random}")
}

/// `outer:marker` when the environment already carries a ci-janitor marker (a `run` or a
/// `snapshot --export` inside a marked job): what this one starts stays the outer job's
/// too.
pub fn chain_marker(env: Env<'_>, marker: &str) -> String {
    match env("CI_JANITOR_RUN").filter(|v| !v.is_empty()) {
        Some(outer) => format!("{outer}:{marker}"),
        None => marker.to_owned(),
    }
}

impl Job {
    /// The job around the running process: markers from our environment, roots among our
    /// ancestors, hints from our session and cgroup. Missing facts leave rules off; they
    /// never widen what is killed.
    pub fn discover(proc_root: &Path, env: Env<'_>, caller: Caller) -> Job {
        let mut job = Job {
            markers: markers_from_env(env),
            own_exe: Job::discover_own_exe(proc_root),
            ..Job::default()
        };
        let Some(me) = platform::read_one(proc_root, std::process::id() as i32) else {
            return job;
        };
        job.me = Some(me.id);
        let init_sid = platform::read_one(proc_root, 1).map(|p| p.sid);
        if me.sid > 1 && Some(me.sid) != init_sid {
            job.session = Some(me.sid);
        }
        job.cgroup = me.cgroup.clone();

        // Our ancestors, nearest first.
        let mut ancestors = Vec::new();
        let mut pid = me.ppid;
        for _ in 0..64 {
            if pid <= 1 {
                break;
            }
            let Some(p) = platform::read_one(proc_root, pid) else {
                break;
            };
            pid = p.ppid;
            ancestors.push(p);
        }
        // `ci-janitor run` marks its command `run-PID-TICKS`: an ancestor of ours with that
        // identity is a root.
        let runs: Vec<ProcessId> = env("CI_JANITOR_RUN")
            .unwrap_or_default()
            .split(':')
            .filter_map(parse_run_marker)
            .collect();
        for (depth, a) in (1..).zip(&ancestors) {
            if runs.contains(&a.id) {
                job.add_root(a.id, RootKind::Run, depth);
            }
            if let Some((_, kind)) = WORKERS.iter().find(|(n, _)| a.comm.as_bytes() == *n) {
                job.add_root(a.id, *kind, depth);
            }
        }
        if caller == Caller::Shell {
            let shell = (1..).zip(&ancestors).find(|(_, a)| !is_wrapper(a));
            // A shell that ran `eval "$(ci-janitor snapshot --export)"` never shows the
            // marker in its own environment (only what it starts carries it): when the
            // job's only marker is ci-janitor's, the shell that called us is the job's.
            // A CI's marker missing from the caller is another matter: a long-lived agent
            // runs other jobs too.
            let no_ci_marker = !job
                .markers
                .identity_pairs()
                .any(|(v, _)| v != "CI_JANITOR_RUN");
            match shell {
                Some((_, s)) if job.roots.iter().any(|r| r.id == s.id) => {}
                Some((depth, s)) if no_ci_marker || carries_ours(s, &job.markers) => {
                    job.add_root(s.id, RootKind::Caller, depth);
                }
                Some((_, s)) => job.notes.push(format!(
                    "the process that ran ci-janitor (pid {}, `{}`) does not carry the \
                     job's marker, so its descendants are not taken as the job's (a \
                     long-lived agent runs other jobs too)",
                    s.id.pid,
                    s.command_line()
                )),
                None => {}
            }
        }
        job
    }

    /// The path of our own executable, as `/proc/PID/exe` shows it for every process that
    /// runs it.
    pub fn discover_own_exe(proc_root: &Path) -> Option<Bytes> {
        std::fs::read_link(proc_root.join("self/exe"))
            .ok()
            .map(|p| Bytes::from(p.into_os_string().into_encoded_bytes()))
    }

    fn add_root(&mut self, id: ProcessId, kind: RootKind, depth: u32) {
        if id.pid > 1 && !self.roots.iter().any(|r| r.id == id) {
            self.roots.push(Root { id, kind, depth });
        }
    }

    /// The root whose descendants the guard takes as the job's from birth: the outermost
    /// (all roots are our ancestors, so it holds the others).
    pub fn lineage_root(&self) -> Option<Root> {
        self.roots.iter().copied().max_by_key(|r| r.depth)
    }

    /// The root a guard's dead man's switch watches: one that ends with the job (never the
    /// sweep's caller), the nearest first.
    pub fn watchable_root(&self) -> Option<Root> {
        self.roots
            .iter()
            .copied()
            .find(|r| r.kind.ends_with_the_job())
    }

    /// Completes the job with what its baseline recorded: the markers our environment
    /// lacks (a later step of a job under an agent, the Action's post step), and the
    /// process that took it, protected. A baseline taken for another job (a different
    /// value of one of our markers) is refused: it cannot tell what this job started.
    pub fn with_baseline(mut self, baseline: &Snapshot, path: &Path) -> Result<Job, AppError> {
        if let Some(info) = &baseline.job {
            for (var, theirs) in info.markers.identity_pairs() {
                match self.markers.get(var) {
                    Some(ours) if ours != theirs && var != "CI_JANITOR_RUN" => {
                        return Err(AppError::Input(format!(
                            "use the state file {}: it was taken for another job ({var}={theirs}; \
                             this job has {var}={ours}); take a snapshot in this job, or pass \
                             --state",
                            path.display()
                        )));
                    }
                    // Ours (from the environment) is the more specific: a `run` inside
                    // the job appended to the chain.
                    Some(_) => {}
                    None => self.markers.set(var, theirs.to_owned()),
                }
            }
        }
        if let Some(taker) = baseline.taken_by {
            self.also_protected.push(taker);
        }
        Ok(self)
    }

    /// Only the baseline's markers count: the sweep of an earlier job, on its behalf (the
    /// runner hook that finds the previous job never completed). Its roots are gone, and
    /// our environment is not its.
    pub fn for_earlier_job(proc_root: &Path, baseline: &Snapshot) -> Job {
        Job {
            me: platform::self_id(proc_root),
            markers: baseline
                .job
                .as_ref()
                .map(|j| j.markers.identity())
                .unwrap_or_default(),
            own_exe: Job::discover_own_exe(proc_root),
            also_protected: baseline.taken_by.into_iter().collect(),
            ..Job::default()
        }
    }

    /// The classification context.
    pub fn context(&self) -> Context {
        Context {
            me: self.me,
            also_protected: self.also_protected.clone(),
            markers: self.markers.clone(),
            roots: self.roots.iter().map(|r| r.id).collect(),
            session: self.session,
            cgroup: self.cgroup.clone(),
            own_exe: self.own_exe.clone(),
            verify_exe: Some(verify_exe),
            born_into_job: None,
        }
    }

    /// Whether anything names this job: a marker or a root. Without either, only a guard's
    /// lineage can attribute anything.
    pub fn is_named(&self) -> bool {
        self.markers.has_identity() || !self.roots.is_empty()
    }
}

/// Whether the executable at `exe` is the program a keep-list entry names, on disk: a
/// JVM's `java` has `libjvm.so` in its `lib` tree; the real `sccache` carries its own
/// name for its variables (`SCCACHE_`). A copy of another program under the same name is
/// neither.
fn verify_exe(kind: crate::classify::KeepKind, exe: &[u8]) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let exe = Path::new(std::ffi::OsStr::from_bytes(exe));
    match kind {
        crate::classify::KeepKind::Jvm => {
            let Some(home) = exe.parent().and_then(Path::parent) else {
                return false;
            };
            let arch = std::env::consts::ARCH;
            [
                "lib/server/libjvm.so".to_owned(),
                format!("lib/{arch}/server/libjvm.so"),
                format!("jre/lib/{arch}/server/libjvm.so"),
                "jre/lib/amd64/server/libjvm.so".to_owned(),
            ]
            .iter()
            .any(|rel| home.join(rel).is_file())
        }
        crate::classify::KeepKind::Sccache => {
            // Bounded: an executable larger than this is not read.
            const MAX: u64 = 128 << 20;
            let Ok(meta) = std::fs::metadata(exe) else {
                return false;
            };
            if !meta.is_file() || meta.len() > MAX {
                return false;
            }
            std::fs::read(exe)
                .map(|bytes| bytes.windows(8).any(|w| w == b"SCCACHE_"))
                .unwrap_or(false)
        }
    }
}

/// What a guard started from here takes as the job: `(root, watch)`, the root whose
/// descendants are born into the job (the outermost of ours) and the per-job root its dead
/// man's switch watches (`--watch PID`, checked to be one of our ancestors and not pid 1;
/// else the nearest root that ends with the job; else none).
pub fn guard_roots(
    job: &Job,
    proc_root: &Path,
    watch: Option<i32>,
) -> Result<(Option<ProcessId>, Option<ProcessId>), crate::guard::GuardError> {
    let watch = match watch {
        Some(pid) => Some(crate::guard::checked_watch(proc_root, pid)?),
        None => job.watchable_root().map(|r| (r.id, r.depth)),
    };
    let root = match (job.lineage_root(), watch) {
        (Some(r), Some((_, depth))) if r.depth >= depth => Some(r.id),
        (_, Some((id, _))) => Some(id),
        (r, None) => r.map(|r| r.id),
    };
    Ok((root, watch.map(|(id, _)| id)))
}

/// `run-PID-TICKS` as `ci-janitor run` marks its command.
pub fn parse_run_marker(m: &str) -> Option<ProcessId> {
    let (pid, ticks) = m.strip_prefix("run-")?.split_once('-')?;
    Some(ProcessId {
        pid: pid.parse().ok()?,
        start_ticks: ticks.parse().ok()?,
    })
}

fn is_wrapper(p: &crate::model::Process) -> bool {
    let exe_name = p.exe.as_ref().map(|e| {
        e.as_bytes()
            .rsplit(|&b| b == b'/')
            .next()
            .unwrap_or(&[])
            .to_vec()
    });
    let name = exe_name.unwrap_or_else(|| p.comm.as_bytes().to_vec());
    WRAPPERS.contains(&name.as_slice()) || WRAPPERS.contains(&p.comm.as_bytes())
}

fn carries_ours(p: &crate::model::Process, job: &Markers) -> bool {
    matches!(p.markers.belongs_to(job), crate::model::Belongs::Ours(_))
}

/// A baseline for a job: every process and socket now (in `detail`), with the job's
/// markers recorded. Its argv is never matched against (patterns look at processes alive
/// at sweep time), so it is kept redacted like everything else saved or printed.
pub fn baseline(markers: &Markers, detail: platform::Detail) -> Result<Snapshot, AppError> {
    let mut snap = platform::read_snapshot(&ReadOptions {
        detail,
        ..ReadOptions::default()
    })?;
    crate::redact::redact_snapshot(&mut snap);
    snap.job = Some(crate::model::JobInfo {
        markers: markers.identity(),
    });
    Ok(snap)
}

/// Where the sweep gets the guard's lineage from.
#[derive(Debug)]
pub enum GuardInput<'a> {
    /// No guard (`run`).
    None,
    /// The guard beside this state file, if one ran: stopped first (it must not watch the
    /// sweep, nor be swept), and its journal read.
    Beside(&'a Path),
    /// The guard itself is sweeping (its dead man's switch): its own journal.
    Own(Box<crate::guard::AtSweep>),
}

/// The job is over (the Action's post step, the runner's job-completed hook): a guard
/// still running beside `state` is stopped. A sweep stops it already, but a dry run leaves
/// it running on purpose, and nothing would stop it after the job.
pub fn end_of_job(state: &Path) {
    let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
    if let Err(e) = crate::guard::stop(state, until) {
        tracing::warn!("the job is over, but its guard could not be stopped: {e}");
    }
}

/// A finished sweep of a job, with what its guard (if one ran) had to say.
#[derive(Debug)]
pub struct JobSweep {
    pub outcome: crate::sweep::SweepOutcome,
    pub guard: crate::guard::AtSweep,
    pub notes: Vec<String>,
    /// Why the job was stuck, captured before the kill (cancelled, timed out).
    pub hang: Option<crate::diagnose::Hang>,
    /// Processes `run` found holding its command's stdout or stderr after it exited.
    pub pipe_holders: Vec<report::json::PipeHolder>,
}

/// The guard's pipe-holder warning as a report record.
fn pipe_holder(w: &crate::guard::journal::Warning) -> Option<report::json::PipeHolder> {
    let crate::guard::journal::Warning::PipeHolder {
        step,
        process,
        command,
        stream,
        holder,
        started_by,
        since_unix_ms,
        ..
    } = w
    else {
        return None;
    };
    Some(report::json::PipeHolder {
        seen_by: "guard".into(),
        step: step.clone(),
        pid: process.pid,
        command: command.clone(),
        stream: stream.clone(),
        holder_pid: holder.pid,
        holder_command: holder.command.clone(),
        started_by_pid: started_by.as_ref().map(|p| p.pid),
        started_by_command: started_by.as_ref().map(|p| p.command.clone()),
        since_unix_ms: *since_unix_ms,
        sentence: w.describe(),
    })
}

/// The one sweep routine: what appeared since `baseline`, classified against `job`, killed
/// and checked as `settings` say.
pub fn sweep(
    job: &Job,
    baseline: &Snapshot,
    settings: &SweepSettings,
    guard: GuardInput<'_>,
) -> Result<JobSweep, AppError> {
    // The deadline covers stopping the guard: the sweep gets what is left of it.
    let started = std::time::Instant::now();
    let at = match guard {
        GuardInput::None => crate::guard::AtSweep::default(),
        GuardInput::Beside(state) => {
            crate::guard::for_sweep(state, settings.dry_run, started + settings.deadline)
        }
        GuardInput::Own(at) => *at,
    };
    let mut ctx = job.context();
    ctx.also_protected.extend(at.protect.iter().copied());
    // The sweep checks the journal against the live process tree before it uses it.
    let lineage = at.lineage.clone().map(std::sync::Arc::new);
    let mut notes = job.notes.clone();
    notes.extend(baseline.trust_notes.iter().cloned());
    let (stale, stale_notes) = older_than_the_job(job, baseline);
    notes.extend(stale_notes);
    let bounded;
    let baseline = match stale {
        Some(ticks) => {
            bounded = Snapshot {
                taken_at_boot_ticks: ticks,
                ..baseline.clone()
            };
            &bounded
        }
        None => baseline,
    };
    if !job.is_named() && lineage.is_none() {
        notes.push(
            "nothing names this job: no ci-janitor or CI marker in the environment, no \
             per-job root, no guard. Start the job with `eval \"$(ci-janitor snapshot \
             --export)\"`, run it under `ci-janitor run`, or start `ci-janitor guard`"
                .into(),
        );
    }
    // Cancelled or timed out: why the job was stuck, before anything is killed.
    let hang = settings.capture.as_ref().map(|c| {
        crate::diagnose::capture(&crate::diagnose::CaptureInput {
            baseline,
            ctx: &ctx,
            policy: &settings.policy,
            lineage: lineage.as_deref(),
            journal: c.journal.clone(),
            reason: c.reason.clone(),
            bound: settings.capture_bound.min(settings.deadline / 2),
            py_spy: c.py_spy.clone(),
            proc_root: ReadOptions::default().proc_root,
        })
    });
    let outcome = crate::sweep::sweep(
        baseline,
        &ctx,
        &settings.policy,
        &crate::sweep::SweepOptions {
            grace: settings.grace,
            deadline: settings.deadline.saturating_sub(started.elapsed()),
            dry_run: settings.dry_run,
            proc_root: ReadOptions::default().proc_root,
            lineage,
            on_wait: if settings.progress {
                report::progress::stderr_progress()
            } else {
                None
            },
        },
    )?;
    let mut at = at;
    at.problems.extend(outcome.distrusted.iter().cloned());
    Ok(JobSweep {
        outcome,
        guard: at,
        notes,
        hang,
        pipe_holders: Vec::new(),
    })
}

/// A state older than the job is stale: taken by an earlier job (a crashed one, or one
/// whose sweep never ran), or edited to look older. "Older than the job" is decided on
/// facts the state's writer cannot forge, and a stale state only ever narrows:
///
/// - its snapshot began before the oldest live per-job root (`ci-janitor run`, the
///   runner's worker, `--watch`) started. Nothing the job started is older than its root,
///   so the snapshot time is raised to the root's start (returned);
/// - it was taken for another job: the job's markers in the state and in our environment
///   differ (reported);
/// - it is older than [`STALE_AFTER`] by the boot clock (reported).
fn older_than_the_job(job: &Job, baseline: &Snapshot) -> (Option<u64>, Vec<String>) {
    let mut notes = Vec::new();
    let hz = baseline.machine.clock_ticks_per_second.max(1);
    let oldest_root = job
        .roots
        .iter()
        .filter(|r| r.kind.ends_with_the_job())
        .min_by_key(|r| r.id.start_ticks);
    let raised = oldest_root
        .filter(|r| r.id.start_ticks > baseline.taken_at_boot_ticks)
        .map(|r| {
            notes.push(format!(
                "the state is stale: its snapshot began at tick {}, before the job's root \
                 (pid {}, {}) started at tick {}; it was left by an earlier job, so only \
                 processes started after the root are taken as new",
                baseline.taken_at_boot_ticks,
                r.id.pid,
                r.kind.describe(),
                r.id.start_ticks
            ));
            r.id.start_ticks
        });
    if let Some(theirs) = baseline.job.as_ref().map(|j| j.markers.identity()) {
        for (var, ours) in job.markers.identity_pairs() {
            if let Some(v) = theirs.get(var).filter(|v| *v != ours) {
                notes.push(format!(
                    "the state is stale: it was taken for another job ({var}={v}, this job \
                     has {var}={ours}); take the snapshot at the start of this job"
                ));
            }
        }
    }
    let age = platform::boot_ticks_now(hz).saturating_sub(baseline.taken_at_boot_ticks);
    if age > STALE_AFTER.as_secs() * hz {
        notes.push(format!(
            "the state is stale: its snapshot is {} h old (more than {} h); take the snapshot \
             at the start of the job",
            age / hz / 3600,
            STALE_AFTER.as_secs() / 3600
        ));
    }
    (raised, notes)
}

/// A snapshot older than this is reported as stale: no CI job runs this long (GitHub's
/// limit is 6 h on hosted runners, 5 days on self-hosted ones, but a day is already rare).
pub const STALE_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Writes the reports of a job's sweep, then the guard's notes, and says how it ends. It
/// takes the sweep: the report is built from it, not from a copy of it.
pub fn finish(
    swept: JobSweep,
    settings: &SweepSettings,
    extra_report: Option<&Path>,
) -> Result<Exit, AppError> {
    finish_with(swept, settings, extra_report, |_| ()).map(|(exit, ())| exit)
}

/// [`finish`], and `plain` called with the report as the sweep alone makes it (`failed`
/// when anything leaked; before the guard's samples, the notes, the step names and the
/// known-leaks gate are added): what the guard's dead man's switch renders as text.
pub fn finish_with<T>(
    swept: JobSweep,
    settings: &SweepSettings,
    extra_report: Option<&Path>,
    plain: impl FnOnce(&report::json::Report) -> T,
) -> Result<(Exit, T), AppError> {
    // The guard's journal gives the number of job processes over time: the summary's chart.
    let samples = swept
        .guard
        .lineage
        .as_ref()
        .map(|l| &l.samples)
        .filter(|s| s.len() >= 2)
        .map(|s| {
            s.iter()
                .map(|&(at_unix_ms, processes)| report::json::Sample {
                    at_unix_ms,
                    processes,
                })
                .collect()
        });
    let JobSweep {
        outcome,
        guard,
        notes,
        hang,
        pipe_holders,
    } = swept;
    let leaked = outcome.failing_leaks().count() > 0;
    let failed = leaked && settings.fail_on == FailOn::Leak;
    // What the deadline leaves for the API phase, read before the outcome becomes the report.
    let left = settings.deadline.saturating_sub(outcome.elapsed);
    let mut built = report::json::build(outcome, leaked);
    let plain = plain(&built.report);
    built.report.failed = failed;
    built.report.samples = samples;
    built.report.notes = notes;
    built.report.ran_as = settings.ran_as;
    report::json::name_steps(&mut built.report, &settings.step_names);
    built.report.hang = hang;
    built.report.pipe_holders = pipe_holders;
    built.report.pipe_holders.extend(
        guard
            .lineage
            .iter()
            .flat_map(|l| &l.warnings)
            .filter_map(pipe_holder),
    );
    // Known leaks (a file, else the base commit's run): the verdict is on new leaks. The
    // API phase (check run, PR comment) is bounded by what the deadline left; it never
    // fails the run.
    let mut api = crate::github::Api::open(settings.github_api.as_ref(), left);
    let failed = crate::gate::run(&mut built.report, settings, |notes| {
        api.as_mut()?.base_known(notes)
    });
    let mut settings = settings.clone();
    if settings.report_json.is_none() {
        settings.report_json = extra_report.map(Path::to_path_buf);
    }
    let verdict = if failed { Exit::Leaked } else { Exit::Clean };
    // The guard's section holds command lines: it goes with the report (under Actions,
    // inside the group where workflow commands are stopped). The exit code is the
    // verdict: a report that could not be written (a file, a full or closed stdout) is a
    // warning, never an error.
    let problems = report::emit::write_reports(
        &built,
        &settings,
        &mut std::io::stdout().lock(),
        &guard.render(),
    );
    let mut err = std::io::stderr().lock();
    for p in &problems {
        // A reader that closed our stdout early (`sweep | head`) is not worth a warning.
        if !matches!(p, report::emit::EmitError::Stdout(e) if e.kind() == std::io::ErrorKind::BrokenPipe)
        {
            let _ = writeln!(
                err,
                "ci-janitor: warning: failed to {p} (the verdict stands)"
            );
        }
    }
    if let Some(notice) = api.and_then(|a| a.publish(&built.report)) {
        let _ = writeln!(std::io::stdout().lock(), "{notice}");
    }
    Ok((verdict, plain))
}
