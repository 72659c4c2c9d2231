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

use rustix::event::{PollFd, PollFlags};

use crate::model::ProcessId;
use crate::platform;
use crate::platform::proc_events::{self, Connector, ProcEvent, ProcFacts};
use crate::settings::Env;

use super::control::Readiness;
use super::journal::{self, Degraded, Lost, Mode, Record, Start, Stop, Writer};
use super::pidfile::{remove_pid_file, write_pid_file};
use super::tracker::{FactSource, ScanKind, TickClock, Tracker, TrackerConfig};
use super::{GuardError, GuardPaths, JobFacts, PidFile};

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
/// Where the kernel filters events per socket, forks and exits come on a socket of their
/// own that wakes the guard only when it has been idle: while busy it is drained with every
/// exec and at least this often (with the journal's flush).
const BATCHED_EVERY: Duration = FLUSH_EVERY;

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
        let facts = match known {
            Some(id) => proc_events::read_exec_facts(&self.root, id),
            None => proc_events::read_facts(&self.root, pid, true),
        };
        // Its pipes, read in the directory of the same read (none: it has none, and the
        // pipe watch need not look again).
        if let Some(f) = &facts {
            self.stdio.set(pid, f.stdio_pipes.clone());
        }
        facts
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

/// Why the guard stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum StopReason {
    /// SIGTERM, SIGINT or SIGQUIT: `guard stop`, a sweep, the runner.
    Stopped,
    /// The watched process exited without a sweep: the dead man's switch.
    WatchExited,
}

impl StopReason {
    /// As the journal's stop record spells it.
    fn as_str(self) -> &'static str {
        match self {
            StopReason::Stopped => "stopped",
            StopReason::WatchExited => "watch-exited",
        }
    }
}

/// What one wait woke up for.
#[derive(Debug, Default)]
struct Wake {
    signalled: bool,
    watch_exited: bool,
    events_ready: bool,
}

/// The guard, ready: its event source and journal, between one wait and the next.
struct Daemon<'a> {
    opts: &'a RunOptions,
    proc_root: PathBuf,
    paths: GuardPaths,
    me: ProcessId,
    signals: platform::SignalQueue,
    watch_fd: Option<std::os::fd::OwnedFd>,
    source: Source,
    tracker: Tracker,
    facts: ProcSource,
    pipes: super::pipes::PipeWatch,
    journal: Writer,
    records: Vec<Record>,
    events: Vec<ProcEvent>,
    /// When the socket of forks and exits is to be drained next, while it is busy (it is
    /// not polled then); `None` while idle (polled).
    batched_due: Option<Instant>,
    started: Instant,
    start_ns: u64,
    last_flush: Instant,
}

fn setup(what: &str, e: &dyn std::fmt::Display) -> GuardError {
    GuardError::Setup(format!("{what}: {e}"))
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn run_inner(
    opts: &RunOptions,
    env: Env<'_>,
    ready_pipe: &mut Option<std::io::Stdout>,
    dead_man: DeadMan<'_>,
) -> Result<(), GuardError> {
    let signals = detach()?;
    let proc_root = PathBuf::from("/proc");
    let paths = GuardPaths::for_state(&opts.state);
    let boot_id = platform::boot_id(&proc_root)?;
    let me = platform::self_id(&proc_root)
        .ok_or_else(|| GuardError::Setup("read our own /proc entry".into()))?;
    let started = Instant::now();
    let start_ns = proc_events::monotonic_ns();
    let placement = proc_events::placement(&proc_root, Path::new("/"), env);
    let (source, mode, detail, degraded) = choose_source(opts, &placement);
    let root = opts.root.or(opts.watch);

    let journal = Writer::open(&paths.journal).map_err(|source| GuardError::File {
        what: "open the journal",
        path: paths.journal.clone(),
        source,
    })?;
    let mut first = vec![Record::Start(Start {
        schema_version: journal::JOURNAL_SCHEMA_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").into(),
        boot_id: boot_id.clone(),
        at_unix_ms: unix_ms(),
        guard: me,
        root,
        mode,
        detail: detail.clone(),
        warn_over: opts.warn_over,
    })];
    for reason in &degraded {
        tracing::warn!("degraded: {reason}");
        first.push(Record::Degraded(Degraded {
            reason: reason.clone(),
        }));
    }
    if root.is_none() && !opts.job.markers.has_identity() {
        tracing::warn!(
            "no job root to watch and no job marker: nothing will be attributed by lineage"
        );
    }
    let tracker = Tracker::new(TrackerConfig {
        me,
        root,
        markers: opts.job.markers.identity(),
        warn_over: opts.warn_over,
        pid_ns: placement.pid_ns.clone(),
        clock: Some(tick_clock()),
    });
    let mut d = Daemon {
        opts,
        facts: ProcSource {
            root: proc_root.clone(),
            stdio: Default::default(),
        },
        pipes: super::pipes::PipeWatch::new(proc_root.clone(), unix_ms()),
        proc_root,
        paths,
        me,
        signals,
        watch_fd: None,
        source,
        tracker,
        journal,
        records: first,
        events: Vec::with_capacity(BATCH),
        batched_due: None,
        started,
        start_ns,
        last_flush: Instant::now(),
    };
    d.write_records()?;
    // After subscribing, so that a process born meanwhile is met by the scan or its event.
    let seeded = d.scan(ScanKind::Seed, 0)?;
    d.write_records()?;
    d.flush()?;

    if let Some(id) = opts.watch {
        d.watch_fd = Some(proc_events::watch(&d.proc_root, id).map_err(|e| {
            GuardError::Watch(format!(
                "the process to watch (pid {}) is gone: {e}",
                id.pid
            ))
        })?);
    }
    let pid_file = PidFile {
        pid: me.pid,
        start_ticks: me.start_ticks,
        boot_id,
        mode,
        detail,
        degraded,
        root,
        watch: opts.watch,
        started_at_unix_ms: unix_ms(),
        exe: super::exe_of(Path::new("/proc"), "self"),
    };
    write_pid_file(&d.paths, &pid_file)?;
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
            let _ = rustix::stdio::dup2_stdout(&null);
        }
    }

    let reason = loop {
        let wake = d.wait()?;
        let stop = wake.signalled && d.take_signals();
        // Stopping, or the dead man's sweep: every event queued is handled first.
        let last = stop || wake.watch_exited;
        d.read_source(wake.events_ready || last)?;
        let now_us = d.now_us();
        d.tracker.due(now_us, &mut d.records);
        d.tracker.identify_due(
            if last { u64::MAX } else { now_us },
            &mut d.facts,
            &mut d.records,
        );
        d.write_records()?;
        if stop || wake.watch_exited || d.last_flush.elapsed() >= FLUSH_EVERY {
            d.flush()?;
        }
        if stop {
            break StopReason::Stopped;
        }
        if wake.watch_exited {
            break StopReason::WatchExited;
        }
    };
    d.finish(reason, dead_man)
}

/// Leaves the starter's session and directory, raises our priority where allowed, and
/// takes the stop signals as events.
fn detach() -> Result<platform::SignalQueue, GuardError> {
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
    use platform::Caught;
    platform::SignalQueue::block(&[
        Caught::Terminate,
        Caught::Interrupt,
        Caught::HangUp,
        Caught::Quit,
    ])
    .map_err(|e| setup("take signals on a signalfd", &e))
}

/// The proc connector, or polling where it cannot answer (a nested pid namespace), is
/// refused (no privilege) or is turned off (`--poll`); with the mode, its detail and what
/// that degrades.
fn choose_source(
    opts: &RunOptions,
    placement: &proc_events::Placement,
) -> (Source, Mode, String, Vec<String>) {
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
    let every = format!("every {POLL_MIN:?} to {POLL_MAX:?}");
    if placement.nested_pid_namespace && !opts.force_poll {
        // The kernel sends process events only to listeners in the initial pid namespace:
        // asking from a nested one waits for an answer that never comes. Known up front.
        degraded.push(
            "no proc connector, polling /proc instead: it sends no events into a nested \
             pid namespace"
                .to_owned(),
        );
        return (polling(), Mode::Polling, every, degraded);
    }
    if opts.force_poll {
        let detail = format!("forced (--poll); {every}");
        return (polling(), Mode::Polling, detail, degraded);
    }
    match Connector::open(opts.rcvbuf.unwrap_or(proc_events::RCVBUF)) {
        Ok(c) => {
            let detail = format!(
                "receive buffer {} KiB{}{}",
                c.rcvbuf / 1024,
                if c.rcvbuf_forced { " (forced)" } else { "" },
                if c.filtered {
                    ", filtered in the kernel: execs on one socket, forks and exits on another"
                } else {
                    ""
                }
            );
            (Source::Connector(c), Mode::Connector, detail, degraded)
        }
        Err(e) => {
            degraded.push(format!(
                "no proc connector, polling /proc instead: failed to {e}"
            ));
            (polling(), Mode::Polling, every, degraded)
        }
    }
}

impl Daemon<'_> {
    fn now_us(&self) -> u64 {
        self.started.elapsed().as_micros() as u64
    }

    fn write_err(&self, source: std::io::Error) -> GuardError {
        GuardError::File {
            what: "write the journal",
            path: self.paths.journal.clone(),
            source,
        }
    }

    /// Sends the records made so far to the journal's buffer (warnings to the log too).
    fn write_records(&mut self) -> Result<(), GuardError> {
        self.pipes.observe(&mut self.records, &mut self.facts.stdio);
        write_all(&mut self.journal, &mut self.records).map_err(|e| self.write_err(e))
    }

    /// Writes the journal's buffer out, if it holds anything.
    fn flush(&mut self) -> Result<(), GuardError> {
        if self.journal.pending() {
            self.journal.flush().map_err(|e| self.write_err(e))?;
        }
        self.last_flush = Instant::now();
        Ok(())
    }

    /// Reads every process alive and attributes what it has not met; the number found.
    fn scan(&mut self, kind: ScanKind, t_us: u64) -> Result<usize, GuardError> {
        let pids = proc_events::list_pids(&self.proc_root).map_err(|e| setup("list /proc", &e))?;
        Ok(self
            .tracker
            .scan(&pids, kind, t_us, &mut self.facts, &mut self.records))
    }

    /// Waits for a signal, the watched process's exit, process events, or the next thing
    /// due (a poll, a tracker deadline, a journal flush).
    fn wait(&self) -> Result<Wake, GuardError> {
        let mut timeout = Duration::from_secs(3600);
        if let Source::Polling { due, .. } = &self.source {
            timeout = due.saturating_duration_since(Instant::now());
        }
        if let Some(due) = self.tracker.next_due() {
            timeout = timeout.min(Duration::from_micros(due.saturating_sub(self.now_us())));
        }
        if self.journal.pending() {
            timeout = timeout.min(FLUSH_EVERY.saturating_sub(self.last_flush.elapsed()));
        }
        if let Some(due) = self.batched_due {
            timeout = timeout.min(due.saturating_duration_since(Instant::now()));
        }
        let mut fds = vec![PollFd::from_borrowed_fd(
            self.signals.as_fd(),
            PollFlags::IN,
        )];
        let watch_at = self.watch_fd.as_ref().map(|w| {
            fds.push(PollFd::from_borrowed_fd(w.as_fd(), PollFlags::IN));
            fds.len() - 1
        });
        let (events_at, batched_at) = match &self.source {
            Source::Connector(c) => {
                fds.push(PollFd::from_borrowed_fd(c.as_fd(), PollFlags::IN));
                let events_at = Some(fds.len() - 1);
                // The forks and exits wake us only when idle; while busy they wait for
                // the next exec or for `batched_due`.
                let batched_at = c
                    .batched_fd()
                    .filter(|_| self.batched_due.is_none())
                    .map(|fd| {
                        fds.push(PollFd::from_borrowed_fd(fd, PollFlags::IN));
                        fds.len() - 1
                    });
                (events_at, batched_at)
            }
            Source::Polling { .. } => (None, None),
        };
        let ts = crate::platform::proc_events::timespec(timeout);
        match rustix::event::poll(&mut fds, Some(&ts)) {
            Ok(_) | Err(rustix::io::Errno::INTR) => {}
            Err(e) => return Err(setup("wait for events", &e)),
        }
        // Only what polled ready is read: at hundreds of events a second, every system
        // call per wake-up counts.
        let ready = |at: Option<usize>| at.is_some_and(|i| !fds[i].revents().is_empty());
        Ok(Wake {
            signalled: ready(Some(0)),
            watch_exited: ready(watch_at),
            events_ready: ready(events_at)
                || ready(batched_at)
                || self.batched_due.is_some_and(|due| Instant::now() >= due),
        })
    }

    /// Takes the pending signals; whether one asks the guard to stop (SIGHUP does not: the
    /// guard has no terminal to lose).
    fn take_signals(&mut self) -> bool {
        let mut stop = false;
        while let Some(d) = self.signals.next() {
            stop |= d.signal != platform::Caught::HangUp;
        }
        stop
    }

    /// Reads the process events (or polls `/proc` when due) into records.
    fn read_source(&mut self, events_ready: bool) -> Result<(), GuardError> {
        let now_us = self.now_us();
        match &mut self.source {
            Source::Connector(c) if !events_ready && !c.has_early_events() => {}
            Source::Connector(_) => self.drain_events()?,
            Source::Polling { interval, due } => {
                if Instant::now() < *due {
                    return Ok(());
                }
                let interval = *interval;
                let before = (self.tracker.live_count(), self.records.len());
                self.scan(ScanKind::Scan, now_us)?;
                let changed = before != (self.tracker.live_count(), self.records.len());
                let interval = if changed {
                    POLL_MIN
                } else {
                    (interval * 2).min(POLL_MAX)
                };
                self.source = Source::Polling {
                    interval,
                    due: Instant::now() + interval,
                };
            }
        }
        Ok(())
    }

    /// Drains the connector in batches, rescanning `/proc` when the kernel dropped events.
    fn drain_events(&mut self) -> Result<(), GuardError> {
        let start_ns = self.start_ns;
        let t_us = |at_ns: u64| at_ns.saturating_sub(start_ns) / 1000;
        let mut batched = 0;
        loop {
            let Source::Connector(c) = &mut self.source else {
                return Ok(());
            };
            self.events.clear();
            let drained = c
                .drain(&mut self.events, BATCH)
                .map_err(|e| setup("read process events", &e))?;
            self.tracker
                .process(&self.events, &t_us, &mut self.facts, &mut self.records);
            if drained.overruns > 0 {
                self.tracker.add_overruns(drained.overruns);
                let now_us = self.now_us();
                let found = self.scan(ScanKind::Scan, now_us)?;
                tracing::warn!(
                    "the kernel dropped process events ({} ENOBUFS); a rescan found {found} \
                     job processes",
                    drained.overruns
                );
                self.records.push(Record::Lost(Lost {
                    overruns: drained.overruns,
                    found_by_rescan: found,
                    t_us: self.now_us(),
                }));
            }
            batched += drained.batched;
            if !drained.more {
                if let Source::Connector(c) = &self.source {
                    // Busy: drained again with the next exec or at the latest in
                    // BATCHED_EVERY. Idle: polled again.
                    self.batched_due = (c.batched_fd().is_some() && batched > 0)
                        .then(|| Instant::now() + BATCHED_EVERY);
                }
                return Ok(());
            }
            self.write_records()?;
        }
    }

    /// The dead man's sweep when the watched process died, then the stop record.
    fn finish(mut self, reason: StopReason, dead_man: DeadMan<'_>) -> Result<(), GuardError> {
        let mut said = reason.as_str().to_owned();
        if reason == StopReason::WatchExited {
            tracing::warn!(
                "the watched process ({:?}) exited without a sweep: sweeping",
                self.opts.watch.map(|w| w.pid)
            );
            // What the events said up to now is in the journal; the sweep reads it there.
            self.flush()?;
            match dead_man(self.opts, self.me, &self.paths) {
                Ok(summary) => said = format!("{said}; {summary}"),
                Err(e) => {
                    tracing::error!("the dead man's sweep failed: {e}");
                    said = format!("{said}; the sweep failed: {e}");
                }
            }
        }
        let stats = self.tracker.stats();
        self.records.push(Record::Stop(Stop {
            at_unix_ms: unix_ms(),
            reason: said.clone(),
            births: stats.births,
            execs: stats.execs,
            exits: stats.exits,
            gaps: stats.gaps,
            overruns: stats.overruns,
            exec_misses: stats.exec_misses,
            events: stats.events,
        }));
        self.write_records()?;
        self.flush()?;
        remove_pid_file(&self.paths, self.me);
        tracing::info!("guard stopped ({said}): {stats:?}");
        Ok(())
    }
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
