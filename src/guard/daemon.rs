//! `guard run`: the guard itself, started detached by `guard start`.
//!
//! It leaves the starter's session, subscribes to process events (or falls back to
//! polling `/proc`), reads what is alive, writes its pid file, says "ready" on stdout (the
//! starter's pipe) and then waits on three things at once: process events, its signals
//! (SIGTERM/SIGINT: stop), and a pidfd on the watched process (the dead man's switch).
//! Every batch of events becomes journal records, flushed before it waits again.

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::sys::signal::{SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use rustix::event::{PollFd, PollFlags};

use crate::model::ProcessId;
use crate::platform;
use crate::platform::proc_events::{self, Connector, ProcEvent, ProcFacts};
use crate::settings::Env;

use super::journal::{self, Degraded, Lost, Mode, Record, Start, Stop, Writer};
use super::tracker::{FactSource, ScanKind, TickClock, Tracker, TrackerConfig};
use super::{GuardError, GuardPaths, JobFacts, PidFile, Readiness};

/// Polling: the interval right after a change, and the most it backs off to when nothing
/// changes.
pub const POLL_MIN: Duration = Duration::from_millis(10);
pub const POLL_MAX: Duration = Duration::from_millis(100);
/// The guard's nice value where it may raise its priority.
const GUARD_NICE: i32 = -10;
/// The most a record waits in memory before it is written to the journal: a guard killed
/// with SIGKILL loses at most this much. Writing once per event instead costs a system
/// call per event, a third of the guard's time at 100 forks a second.
const FLUSH_EVERY: Duration = Duration::from_millis(20);
/// Datagrams read per batch before handling them.
const BATCH: usize = 8192;

/// The hidden `guard run` arguments, as parsed.
#[derive(Debug, Clone)]
pub struct RunOptions {
    pub state: PathBuf,
    pub watch: Option<ProcessId>,
    /// The job's root for lineage (defaults to `watch`).
    pub root: Option<ProcessId>,
    pub warn_over: usize,
    pub force_poll: bool,
    pub rcvbuf: Option<usize>,
    pub job: JobFacts,
}

/// Parses `PID:START_TICKS`.
pub fn parse_identity(text: &str) -> Result<ProcessId, String> {
    let (pid, ticks) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not PID:START_TICKS"))?;
    Ok(ProcessId {
        pid: pid.parse().map_err(|_| format!("bad pid in {text:?}"))?,
        start_ticks: ticks
            .parse()
            .map_err(|_| format!("bad start time in {text:?}"))?,
    })
}

struct ProcSource {
    root: PathBuf,
    /// Stdout and stderr pipes read at each exec, for the pipe-holder alarm.
    stdio: super::pipes::StdioSeen,
}

impl FactSource for ProcSource {
    fn facts(&mut self, pid: i32, details: bool) -> Option<ProcFacts> {
        proc_events::read_facts(&self.root, pid, details)
    }

    fn exec_facts(&mut self, pid: i32, known: Option<ProcessId>) -> Option<ProcFacts> {
        self.stdio.note(&self.root, pid);
        match known {
            Some(id) => proc_events::read_exec_facts(&self.root, id),
            None => proc_events::read_facts(&self.root, pid, true),
        }
    }

    fn markers(&mut self, pid: i32) -> Option<crate::model::Markers> {
        proc_events::read_markers(&self.root, pid)
    }
}

enum Source {
    Connector(Connector),
    Polling { interval: Duration, due: Instant },
}

/// The dead man's sweep, given by the caller (it sweeps through the job's one sweep
/// routine, which lives above the guard): the guard's identity and files in, a one-line
/// summary out.
pub type DeadMan<'a> =
    &'a dyn Fn(&RunOptions, ProcessId, &GuardPaths) -> Result<String, GuardError>;

/// Runs the guard until it is stopped or its watched process dies (then `dead_man`
/// sweeps). Failures before it is ready are reported on stdout (the starter reads them) as
/// well as returned.
pub fn run(opts: RunOptions, env: Env<'_>, dead_man: DeadMan<'_>) -> Result<(), GuardError> {
    let mut ready_pipe = Some(std::io::stdout());
    let result = run_inner(&opts, env, &mut ready_pipe, dead_man);
    if let (Err(e), Some(mut out)) = (&result, ready_pipe) {
        // Not ready yet: tell the starter why.
        let _ = say(
            &mut out,
            &Readiness::Failed {
                error: e.to_string(),
            },
        );
    }
    result
}

fn say(out: &mut std::io::Stdout, r: &Readiness) -> std::io::Result<()> {
    use std::io::Write;
    let mut line = serde_json::to_vec(r)?;
    line.push(b'\n');
    out.write_all(&line)?;
    out.flush()
}

fn run_inner(
    opts: &RunOptions,
    env: Env<'_>,
    ready_pipe: &mut Option<std::io::Stdout>,
    dead_man: DeadMan<'_>,
) -> Result<(), GuardError> {
    let setup = |what: &str, e: &dyn std::fmt::Display| GuardError::Setup(format!("{what}: {e}"));
    // A session of our own: the step's terminal, its process group and its session end
    // with the step; we must not.
    if let Err(e) = rustix::process::setsid() {
        tracing::debug!("setsid: {e} (already a session leader)");
    }
    std::env::set_current_dir("/").map_err(|e| setup("chdir /", &e))?;
    // A busy job must not starve the guard: an exec read a few milliseconds late finds a
    // short-lived process gone, with its command line and markers. The guard needs little
    // CPU, but needs it promptly (allowed as root; otherwise it stays at the default).
    if let Err(e) = rustix::process::setpriority_process(None, GUARD_NICE) {
        tracing::info!("cannot raise the guard's priority ({e}); it runs at the default");
    }
    let mut mask = SigSet::empty();
    for s in [
        Signal::SIGTERM,
        Signal::SIGINT,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ] {
        mask.add(s);
    }
    nix::sys::signal::pthread_sigmask(SigmaskHow::SIG_BLOCK, Some(&mask), None)
        .map_err(|e| setup("block signals", &e))?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_CLOEXEC | SfdFlags::SFD_NONBLOCK)
        .map_err(|e| setup("create a signalfd", &e))?;

    let proc_root = PathBuf::from("/proc");
    let paths = GuardPaths::for_state(&opts.state);
    let boot_id = platform::boot_id(&proc_root)?;
    let me = platform::self_id(&proc_root)
        .ok_or_else(|| GuardError::Setup("read our own /proc entry".into()))?;
    let started = Instant::now();
    let start_ns = proc_events::monotonic_ns();
    let placement = proc_events::placement(&proc_root, Path::new("/"), env);

    let mut degraded = Vec::new();
    if placement.nested_pid_namespace {
        degraded.push(
            "the guard runs in a nested pid namespace (a container job?): processes outside \
             it are invisible, and the proc connector does not answer there"
                .to_owned(),
        );
    }
    if let Some(sign) = &placement.container {
        if placement.nested_pid_namespace {
            degraded.push(format!("container signs: {sign}"));
        } else {
            // A container sharing the host's pid namespace sees (and hears of) everything.
            tracing::info!("container signs ({sign}), but in the host's pid namespace");
        }
    }
    let (mut source, mode, detail) = if placement.nested_pid_namespace && !opts.force_poll {
        // The kernel sends process events only to listeners in the initial pid namespace:
        // asking from a nested one waits for an answer that never comes. Known up front.
        degraded.push(
            "no proc connector, polling /proc instead: it sends no events into a nested \
             pid namespace"
                .to_owned(),
        );
        (
            polling(),
            Mode::Polling,
            format!("every {POLL_MIN:?} to {POLL_MAX:?}"),
        )
    } else if opts.force_poll {
        (
            polling(),
            Mode::Polling,
            format!("forced (--poll); every {POLL_MIN:?} to {POLL_MAX:?}"),
        )
    } else {
        match Connector::open(opts.rcvbuf.unwrap_or(proc_events::RCVBUF)) {
            Ok(c) => {
                let detail = format!(
                    "receive buffer {} KiB{}{}",
                    c.rcvbuf / 1024,
                    if c.rcvbuf_forced { " (forced)" } else { "" },
                    if c.filtered {
                        ", filtered in the kernel to fork/exec/exit"
                    } else {
                        ""
                    }
                );
                (Source::Connector(c), Mode::Connector, detail)
            }
            Err(e) => {
                degraded.push(format!(
                    "no proc connector, polling /proc instead: failed to {e}"
                ));
                (
                    polling(),
                    Mode::Polling,
                    format!("every {POLL_MIN:?} to {POLL_MAX:?}"),
                )
            }
        }
    };
    let mut journal = Writer::open(&paths.journal).map_err(|source| GuardError::File {
        what: "open the journal",
        path: paths.journal.clone(),
        source,
    })?;
    let write_err = |source| GuardError::File {
        what: "write the journal",
        path: paths.journal.clone(),
        source,
    };
    let unix_ms = || {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    };
    journal
        .write(&Record::Start(Start {
            schema_version: journal::JOURNAL_SCHEMA_VERSION,
            tool_version: env!("CARGO_PKG_VERSION").into(),
            boot_id: boot_id.clone(),
            at_unix_ms: unix_ms(),
            guard: me,
            root: opts.root.or(opts.watch),
            mode,
            detail: detail.clone(),
            warn_over: opts.warn_over,
        }))
        .map_err(write_err)?;
    for reason in &degraded {
        tracing::warn!("degraded: {reason}");
        journal
            .write(&Record::Degraded(Degraded {
                reason: reason.clone(),
            }))
            .map_err(write_err)?;
    }
    if opts.root.or(opts.watch).is_none() && !opts.job.markers.has_identity() {
        tracing::warn!(
            "no job root to watch and no job marker: nothing will be attributed by lineage"
        );
    }

    let mut tracker = Tracker::new(TrackerConfig {
        me,
        root: opts.root.or(opts.watch),
        markers: opts.job.markers.identity(),
        warn_over: opts.warn_over,
        pid_ns: placement.pid_ns.clone(),
        clock: Some(tick_clock()),
    });
    let mut src = ProcSource {
        root: proc_root.clone(),
        stdio: Default::default(),
    };
    let mut records = Vec::new();
    let mut pipes = super::pipes::PipeWatch::new(proc_root.clone(), unix_ms());
    // After subscribing, so that a process born meanwhile is met by the scan or its event.
    let pids = proc_events::list_pids(&proc_root).map_err(|e| setup("list /proc", &e))?;
    let seeded = tracker.scan(&pids, ScanKind::Seed, 0, &mut src, &mut records);
    pipes.observe(&mut records, &mut src.stdio);
    write_all(&mut journal, &mut records).map_err(write_err)?;
    journal.flush().map_err(write_err)?;

    let watch_fd = match opts.watch {
        Some(id) => Some(proc_events::watch(&proc_root, id).map_err(|e| {
            GuardError::Watch(format!(
                "the process to watch (pid {}) is gone: {e}",
                id.pid
            ))
        })?),
        None => None,
    };
    let pid_file = PidFile {
        pid: me.pid,
        start_ticks: me.start_ticks,
        boot_id,
        mode,
        detail,
        degraded,
        root: opts.root.or(opts.watch),
        watch: opts.watch,
        started_at_unix_ms: unix_ms(),
        exe: super::exe_of(Path::new("/proc"), "self"),
    };
    super::write_pid_file(&paths, &pid_file)?;
    tracing::info!(
        "guard ready: pid {}, {}; {} job processes alive, watching {:?}",
        me.pid,
        mode.describe(),
        seeded,
        opts.watch.map(|w| w.pid)
    );
    if let Some(mut out) = ready_pipe.take() {
        say(&mut out, &Readiness::Ready(pid_file)).map_err(|e| setup("report readiness", &e))?;
        // The starter's pipe must not stay open: our stdout is /dev/null from now on.
        if let Ok(null) = std::fs::File::options().write(true).open("/dev/null") {
            let _ = nix::unistd::dup2_stdout(&null);
        }
    }

    let t_us = |at_ns: u64| at_ns.saturating_sub(start_ns) / 1000;
    let now_us = || started.elapsed().as_micros() as u64;
    let mut events: Vec<ProcEvent> = Vec::with_capacity(BATCH);
    let mut last_flush = Instant::now();
    let reason = loop {
        let mut timeout = Duration::from_secs(3600);
        if let Source::Polling { due, .. } = &source {
            timeout = due.saturating_duration_since(Instant::now());
        }
        if let Some(due) = tracker.next_due() {
            timeout = timeout.min(Duration::from_micros(due.saturating_sub(now_us())));
        }
        if journal.pending() {
            timeout = timeout.min(FLUSH_EVERY.saturating_sub(last_flush.elapsed()));
        }
        let mut fds = Vec::with_capacity(3);
        fds.push(PollFd::from_borrowed_fd(signals.as_fd(), PollFlags::IN));
        if let Some(w) = &watch_fd {
            fds.push(PollFd::from_borrowed_fd(w.as_fd(), PollFlags::IN));
        }
        if let Source::Connector(c) = &source {
            fds.push(PollFd::from_borrowed_fd(c.as_fd(), PollFlags::IN));
        }
        let ts = crate::platform::proc_events::timespec(timeout);
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(setup("wait for events", &e)),
        }
        // Only what polled ready is read: at hundreds of events a second, every system
        // call per wake-up counts.
        let ready = |i: usize| fds.get(i).is_some_and(|f| !f.revents().is_empty());
        let signalled = ready(0);
        let watch_exited = watch_fd.is_some() && ready(1);
        let events_ready = match source {
            Source::Connector(_) => ready(if watch_fd.is_some() { 2 } else { 1 }),
            Source::Polling { .. } => false,
        };
        drop(fds);

        let mut stop_reason = None;
        while let Some(info) = signalled
            .then(|| signals.read_signal().ok().flatten())
            .flatten()
        {
            let signo = info.ssi_signo as i32;
            if signo == Signal::SIGHUP as i32 {
                continue; // no terminal to lose: ignored
            }
            stop_reason = Some("stopped".to_owned());
        }
        match &mut source {
            Source::Connector(c) if !events_ready && !c.has_early_events() => {}
            Source::Connector(c) => loop {
                events.clear();
                let drained = c
                    .drain(&mut events, BATCH)
                    .map_err(|e| setup("read process events", &e))?;
                tracker.process(&events, &t_us, &mut src, &mut records);
                pipes.observe(&mut records, &mut src.stdio);
                if drained.overruns > 0 {
                    tracker.add_overruns(drained.overruns);
                    let pids =
                        proc_events::list_pids(&proc_root).map_err(|e| setup("list /proc", &e))?;
                    let found =
                        tracker.scan(&pids, ScanKind::Scan, now_us(), &mut src, &mut records);
                    tracing::warn!(
                        "the kernel dropped process events ({} ENOBUFS); a rescan found {found} \
                         job processes",
                        drained.overruns
                    );
                    records.push(Record::Lost(Lost {
                        overruns: drained.overruns,
                        found_by_rescan: found,
                        t_us: now_us(),
                    }));
                }
                if drained.messages < BATCH {
                    break;
                }
                write_all(&mut journal, &mut records).map_err(write_err)?;
            },
            Source::Polling { interval, due } => {
                if Instant::now() >= *due {
                    let pids =
                        proc_events::list_pids(&proc_root).map_err(|e| setup("list /proc", &e))?;
                    let before = tracker.live_count();
                    let n = records.len();
                    tracker.scan(&pids, ScanKind::Scan, now_us(), &mut src, &mut records);
                    pipes.observe(&mut records, &mut src.stdio);
                    let changed = records.len() != n || tracker.live_count() != before;
                    *interval = if changed {
                        POLL_MIN
                    } else {
                        (*interval * 2).min(POLL_MAX)
                    };
                    *due = Instant::now() + *interval;
                }
            }
        }
        tracker.due(now_us(), &mut records);
        write_all(&mut journal, &mut records).map_err(write_err)?;
        if journal.pending()
            && (last_flush.elapsed() >= FLUSH_EVERY || stop_reason.is_some() || watch_exited)
        {
            journal.flush().map_err(write_err)?;
            last_flush = Instant::now();
        }

        if let Some(r) = stop_reason {
            break r;
        }
        if watch_exited {
            break "watch-exited".to_owned();
        }
    };

    let mut stop_reason = reason.clone();
    if reason == "watch-exited" {
        tracing::warn!(
            "the watched process ({:?}) exited without a sweep: sweeping",
            opts.watch.map(|w| w.pid)
        );
        // What the events said up to now is in the journal; the sweep reads it there.
        journal.flush().map_err(write_err)?;
        match dead_man(opts, me, &paths) {
            Ok(summary) => stop_reason = format!("watch-exited; {summary}"),
            Err(e) => {
                tracing::error!("the dead man's sweep failed: {e}");
                stop_reason = format!("watch-exited; the sweep failed: {e}");
            }
        }
    }
    let stats = tracker.stats();
    journal
        .write(&Record::Stop(Stop {
            at_unix_ms: unix_ms(),
            reason: stop_reason.clone(),
            births: stats.births,
            execs: stats.execs,
            exits: stats.exits,
            gaps: stats.gaps,
            overruns: stats.overruns,
            exec_misses: stats.exec_misses,
            events: stats.events,
        }))
        .map_err(write_err)?;
    journal.flush().map_err(write_err)?;
    super::remove_pid_file(&paths, me);
    tracing::info!("guard stopped ({stop_reason}): {stats:?}");
    Ok(())
}

/// The offset between the connector's clock and the start-time clock, measured now.
fn tick_clock() -> TickClock {
    let mono = proc_events::monotonic_ns();
    let boot = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let boot_ns = boot.tv_sec as i128 * 1_000_000_000 + i128::from(boot.tv_nsec);
    TickClock {
        boot_minus_mono_ns: boot_ns - i128::from(mono),
        ticks_per_second: platform::clock_ticks_per_second(),
    }
}

fn polling() -> Source {
    Source::Polling {
        interval: POLL_MIN,
        due: Instant::now(),
    }
}

fn write_all(journal: &mut Writer, records: &mut Vec<Record>) -> std::io::Result<()> {
    for r in records.drain(..) {
        if let Record::Warning(w) = &r {
            tracing::warn!("{}", w.describe());
        }
        journal.write(&r)?;
    }
    Ok(())
}
