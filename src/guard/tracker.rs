//! The guard's memory of the process tree: it turns process events (and scans of `/proc`)
//! into journal records — each job process's identity, parent chain at birth, first
//! command line, and the job markers it inherited — and raises the live warnings.
//!
//! Pure logic: what it needs to know about a process it asks of a [`FactSource`] (the real
//! one reads `/proc`; tests pass a table), and time comes in as microseconds since the guard
//! started. It decides *when* to read: only processes of the job cost a `/proc` read, the
//! rest of the machine is a table entry.
//!
//! Events do not always arrive in order: the kernel sends a fork event after the child is
//! already running, so the child's own fork can be queued first. A process first met as
//! someone's parent (or at its exec) is read from `/proc` — or taken from a fork event later
//! in the same batch — and marked early, so its own fork event, when it comes, is not a
//! second birth.

use std::collections::{HashMap, HashSet, VecDeque};

use crate::model::{Argv, Markers, ProcessId};
use crate::platform::proc_events::{ProcEvent, ProcFacts};

use super::journal::{Birth, Example, Exec, Exit, Parent, Record, Seed, Via, Warning};

/// Reads facts about a process: `details` adds argv, markers and the pid namespace.
pub trait FactSource {
    fn facts(&mut self, pid: i32, details: bool) -> Option<ProcFacts>;

    /// The details after an exec of a process whose identity is already `known` (from its
    /// fork): the stat — the dearest file to read — can then be skipped.
    fn exec_facts(&mut self, pid: i32, known: Option<ProcessId>) -> Option<ProcFacts> {
        let _ = known;
        self.facts(pid, true)
    }

    /// Only the job markers in `pid`'s environment (one file: read at every exec of a
    /// process that is not the job's, to see whether it carries the job's marker).
    fn markers(&mut self, pid: i32) -> Option<Markers> {
        self.facts(pid, true).and_then(|f| f.markers)
    }
}

/// How long after a step's process exits its descendants are counted: processes that are
/// exiting with it (SIGHUP, a closed pipe) get this long to go.
pub const STEP_GRACE_US: u64 = 500_000;
/// Longest parent chain kept per process.
const MAX_CHAIN: usize = 32;
/// Exited processes remembered for late events about them.
const GRAVEYARD: usize = 4096;
/// Examples named in a warning.
const EXAMPLES: usize = 5;
/// Longest command kept for examples.
const MAX_COMMAND: usize = 200;

/// How long after its fork a job process that has not exec'd is read for its identity (a
/// process that execs is read at its exec instead, once, with its command line).
pub const IDENTIFY_AFTER_US: u64 = 10_000;

/// How many clock ticks a fork event may come after the child's recorded start time (the
/// forking process can be preempted in between).
const FORK_TOLERANCE_TICKS: u64 = 2;

/// Turns the connector's timestamps (`CLOCK_MONOTONIC`) into start-time clock ticks
/// (`CLOCK_BOOTTIME`), to check that a pid read after a fork event is still that child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickClock {
    /// `CLOCK_BOOTTIME` minus `CLOCK_MONOTONIC`, in nanoseconds (the time spent suspended).
    pub boot_minus_mono_ns: i128,
    pub ticks_per_second: u64,
}

impl TickClock {
    pub fn ticks_at(&self, mono_ns: u64) -> u64 {
        let boot_ns = (i128::from(mono_ns) + self.boot_minus_mono_ns).max(0) as u128;
        (boot_ns * u128::from(self.ticks_per_second) / 1_000_000_000) as u64
    }
}

/// A fork event of the batch being handled.
#[derive(Debug, Clone, Copy)]
struct LaterFork {
    index: usize,
    parent: i32,
    at_ns: u64,
}

/// The batch being handled: where we are in it, and its fork events by child.
struct Batch<'a> {
    at: usize,
    forks: &'a HashMap<i32, Vec<LaterFork>>,
    t_us: &'a dyn Fn(u64) -> u64,
}

#[derive(Debug, Clone)]
pub struct TrackerConfig {
    /// The guard itself: never the job's.
    pub me: ProcessId,
    /// The job's root: processes born below it are the job's.
    pub root: Option<ProcessId>,
    /// The job's identity markers: a process that execs carrying one of them (and no
    /// other job's) is born into the job, whoever its parent.
    pub markers: Markers,
    /// Warn when more live job processes than this share one signature.
    pub warn_over: usize,
    /// Our pid namespace: a job process in another one is reported once.
    pub pid_ns: Option<String>,
    /// Event time to start ticks; `None` skips the check (tests, polling).
    pub clock: Option<TickClock>,
}

/// Counters for the `stop` record and `status`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    pub births: u64,
    pub execs: u64,
    pub exits: u64,
    pub gaps: u64,
    pub overruns: u64,
    /// Exec events of job processes that were gone before their command line and
    /// environment could be read: their children inherit what their parent had.
    pub exec_misses: u64,
    /// Every event handled, the rest of the machine's included.
    pub events: u64,
}

/// A job process whose fork was handled but whose identity is not read yet: its birth
/// record waits for its exec, its first child, its exit or [`IDENTIFY_AFTER_US`],
/// whichever comes first.
#[derive(Debug, Clone, Copy)]
struct Unborn {
    parent: Parent,
    via: Via,
    /// The fork event's time: a start time read later must agree with it.
    at_ns: u64,
    t_us: u64,
}

#[derive(Debug, Clone)]
struct Node {
    pid: i32,
    id: Option<ProcessId>,
    /// Its birth record is not written yet (see [`Unborn`]).
    unborn: Option<Unborn>,
    in_job: bool,
    is_root: bool,
    /// Created from `/proc` or a later event before its own fork event was seen.
    early: bool,
    chain: Vec<i32>,
    /// Effective markers: its own, completed by its parent's.
    markers: Markers,
    /// Its parent's effective markers at birth, to complete its own after an exec.
    parent_markers: Markers,
    /// The step it belongs to (the serial of the step's root process).
    step: Option<u64>,
    is_step_root: bool,
    signature: Option<String>,
    command: String,
    /// Whether an exec (or a first read by a scan) was recorded.
    execd: bool,
    serial: u64,
}

#[derive(Debug, Clone)]
struct Step {
    name: String,
    process: Option<ProcessId>,
    pid: i32,
    command: String,
    /// Live processes of the step, its root excluded.
    live: usize,
    ended: bool,
    warned: bool,
}

#[derive(Debug, Default)]
struct SigCount {
    live: usize,
    warned: bool,
}

/// What a scan is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScanKind {
    /// The first scan: what was alive when the guard started (`seed` records).
    Seed,
    /// Polling, or a rescan after the kernel dropped events (`birth` records, via scan).
    Scan,
}

#[derive(Debug)]
pub struct Tracker {
    cfg: TrackerConfig,
    live: HashMap<i32, Node>,
    dead: HashMap<i32, Node>,
    dead_order: VecDeque<(i32, u64)>,
    steps: HashMap<u64, Step>,
    step_checks: Vec<(u64, u64)>,
    sigs: HashMap<String, SigCount>,
    next_serial: u64,
    stats: Stats,
    /// Job processes first met by a scan: read again at the next scan, in case they exec'd.
    recheck: Vec<(i32, u64)>,
    foreign_ns_reported: HashSet<String>,
    /// The time of the last event, for records made without one.
    last_t_us: u64,
    /// Job processes not read yet, by when they are to be: (due, pid, serial).
    unborn_due: VecDeque<(u64, i32, u64)>,
}

impl Tracker {
    pub fn new(cfg: TrackerConfig) -> Tracker {
        Tracker {
            cfg,
            live: HashMap::new(),
            dead: HashMap::new(),
            dead_order: VecDeque::new(),
            steps: HashMap::new(),
            step_checks: Vec::new(),
            sigs: HashMap::new(),
            next_serial: 1,
            stats: Stats::default(),
            recheck: Vec::new(),
            foreign_ns_reported: HashSet::new(),
            last_t_us: 0,
            unborn_due: VecDeque::new(),
        }
    }

    pub fn stats(&self) -> Stats {
        self.stats
    }

    pub fn add_overruns(&mut self, n: u32) {
        self.stats.overruns += u64::from(n);
    }

    /// Live processes known (the whole machine).
    pub fn live_count(&self) -> usize {
        self.live.len()
    }

    /// When the next step check or identity read is due (microseconds since start).
    pub fn next_due(&self) -> Option<u64> {
        let steps = self.step_checks.iter().map(|&(due, _)| due).min();
        let unborn = self.unborn_due.front().map(|&(due, _, _)| due);
        match (steps, unborn) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Reads the identity of the job processes forked at least [`IDENTIFY_AFTER_US`]
    /// before `now_us` that have not exec'd, and journals their births (`u64::MAX`: all of
    /// them, when the guard stops).
    pub fn identify_due(&mut self, now_us: u64, src: &mut dyn FactSource, out: &mut Vec<Record>) {
        while let Some(&(due, pid, serial)) = self.unborn_due.front() {
            if due > now_us {
                break;
            }
            self.unborn_due.pop_front();
            if self.is_unborn(pid, serial) {
                self.identify_unborn(pid, None, src, out);
            }
        }
        self.drop_stale_due();
    }

    fn is_unborn(&self, pid: i32, serial: u64) -> bool {
        self.live
            .get(&pid)
            .is_some_and(|n| n.serial == serial && n.unborn.is_some())
    }

    /// Forgets the due reads at the front that were done already (at an exec, a fork or an
    /// exit), so that [`Tracker::next_due`] does not wake the guard for them.
    fn drop_stale_due(&mut self) {
        while let Some(&(_, pid, serial)) = self.unborn_due.front() {
            if self.is_unborn(pid, serial) {
                break;
            }
            self.unborn_due.pop_front();
        }
    }

    /// Journals the birth of `pid` if it is still unborn, with the identity `given` (read
    /// with its exec's details) or read now. A start time that does not fit the fork
    /// event is another process's (the pid was reused): a gap. Returns the identity taken.
    fn identify_unborn(
        &mut self,
        pid: i32,
        given: Option<Option<ProcessId>>,
        src: &mut dyn FactSource,
        out: &mut Vec<Record>,
    ) -> Option<ProcessId> {
        let node = self.live.get(&pid)?;
        let Some(u) = node.unborn else {
            return node.id;
        };
        let found = match given {
            Some(g) => g,
            None => src.facts(pid, false).map(|f| f.id),
        };
        let (id, gap) = match found {
            Some(id) if self.plausible(id.start_ticks, u.at_ns) => (Some(id), None),
            Some(_) => (None, Some("its pid was reused before it could be read")),
            None => (None, Some("it exited before it could be read")),
        };
        let node = self.live.get_mut(&pid)?;
        node.unborn = None;
        node.id = id;
        let chain = node.chain.clone();
        let markers = node.parent_markers.clone();
        self.journal_birth(
            Birth {
                pid,
                start_ticks: id.map(|i| i.start_ticks),
                parent: u.parent,
                chain,
                in_job: true,
                markers,
                via: u.via,
                gap: gap.map(str::to_owned),
                t_us: u.t_us,
            },
            out,
        );
        id
    }

    /// Journals a job process's birth, counted (and as a gap when it has no identity).
    fn journal_birth(&mut self, birth: Birth, out: &mut Vec<Record>) {
        if birth.gap.is_some() {
            self.stats.gaps += 1;
        }
        self.stats.births += 1;
        out.push(Record::Birth(birth));
    }

    /// `parent`, with its birth journaled first if it was still unborn: a child's birth
    /// names its parent's start time, and a reader meets the parent's birth first.
    fn born_parent(
        &mut self,
        parent: Option<Node>,
        src: &mut dyn FactSource,
        out: &mut Vec<Record>,
    ) -> Option<Node> {
        match parent {
            Some(p) if p.unborn.is_some() && self.live.contains_key(&p.pid) => {
                self.identify_unborn(p.pid, None, src, out);
                self.live.get(&p.pid).cloned()
            }
            other => other,
        }
    }

    // -----------------------------------------------------------------------------------
    // Events
    // -----------------------------------------------------------------------------------

    /// Handles one batch of events, in order. `t_us` turns an event's kernel timestamp into
    /// microseconds since the guard started.
    pub fn process(
        &mut self,
        events: &[ProcEvent],
        t_us: &dyn Fn(u64) -> u64,
        src: &mut dyn FactSource,
        out: &mut Vec<Record>,
    ) {
        // Fork events by child pid: a child met before its own fork event takes its parent
        // from there, and a pid forked again later in the batch was reused, so reading it
        // now could read the wrong process.
        self.stats.events += events.len() as u64;
        let mut forks: HashMap<i32, Vec<LaterFork>> = HashMap::new();
        for (i, ev) in events.iter().enumerate() {
            if let ProcEvent::Fork {
                parent,
                child,
                at_ns,
            } = *ev
            {
                forks.entry(child).or_default().push(LaterFork {
                    index: i,
                    parent,
                    at_ns,
                });
            }
        }
        for (i, ev) in events.iter().enumerate() {
            let batch = Batch {
                at: i,
                forks: &forks,
                t_us,
            };
            match *ev {
                ProcEvent::Fork {
                    parent,
                    child,
                    at_ns,
                } => self.on_fork(parent, child, at_ns, &batch, src, out),
                ProcEvent::Exec { pid, at_ns } => self.on_exec(pid, at_ns, &batch, src, out),
                ProcEvent::Exit { pid, at_ns } => self.on_exit(pid, t_us(at_ns), src, out),
            }
        }
        self.drop_stale_due();
    }

    /// Whether a process that started at `start_ticks` can be the one a fork event at
    /// `at_ns` created. The kernel stamps the start time just before it sends the event;
    /// a pid reused in between would need the pid space to wrap within the tolerance.
    fn plausible(&self, start_ticks: u64, at_ns: u64) -> bool {
        let Some(clock) = self.cfg.clock else {
            return true;
        };
        let t = clock.ticks_at(at_ns);
        start_ticks <= t + 1 && start_ticks + FORK_TOLERANCE_TICKS >= t
    }

    fn on_fork(
        &mut self,
        parent_pid: i32,
        child: i32,
        at_ns: u64,
        batch: &Batch<'_>,
        src: &mut dyn FactSource,
        out: &mut Vec<Record>,
    ) {
        let t_us = (batch.t_us)(at_ns);
        if let Some(existing) = self.live.get_mut(&child) {
            if existing.early {
                // Its birth was recorded when it was first met; this is that birth.
                existing.early = false;
                return;
            }
            // Met already by the first scan (born while we subscribed) — or an older
            // process with this pid whose exit we never saw (dropped events).
            let known = existing.id;
            if known.is_some() && src.facts(child, false).map(|f| f.id) == known {
                return;
            }
            self.on_exit(child, t_us, src, out);
        } else if let Some(dead) = self.dead.get_mut(&child).filter(|n| n.early) {
            // Met early, and already gone: its birth and exit are recorded.
            dead.early = false;
            return;
        }
        // A parent known to be outside the job (most of the machine): no copy of its node.
        let outside = self
            .live
            .get(&parent_pid)
            .is_some_and(|p| !p.in_job && !p.is_root);
        let parent = if outside {
            None
        } else {
            let parent = self.resolve(parent_pid, batch, src, out, 0);
            self.born_parent(parent, src, out)
        };
        let in_job = self.is_job_parent(parent.as_ref()) && child != self.cfg.me.pid;
        // Its identity is read later (see `Unborn`), unless its pid is forked again later in
        // this batch: then the process it names now is another.
        let reused_later = in_job
            && batch
                .forks
                .get(&child)
                .is_some_and(|v| v.iter().any(|f| f.index > batch.at));
        let gap = reused_later.then(|| "its pid was reused before it could be read".to_owned());
        let parent = parent.unwrap_or_else(|| Node::unknown(parent_pid));
        let defer = (in_job && gap.is_none()).then_some(at_ns);
        self.insert_child(
            child,
            None,
            &parent,
            Via::Fork,
            gap,
            t_us,
            in_job,
            defer,
            out,
        );
    }

    /// Whether a child of `parent` is the job's.
    fn is_job_parent(&self, parent: Option<&Node>) -> bool {
        parent.is_some_and(|p| p.in_job || p.is_root)
    }

    /// Adds a new node below `parent` and journals its birth when it is the job's — or,
    /// with `defer` (the fork event's time), leaves it unborn until its identity is read.
    #[expect(clippy::too_many_arguments)]
    fn insert_child(
        &mut self,
        pid: i32,
        id: Option<ProcessId>,
        parent: &Node,
        via: Via,
        gap: Option<String>,
        t_us: u64,
        in_job: bool,
        defer: Option<u64>,
        out: &mut Vec<Record>,
    ) {
        let serial = self.serial();
        let parent_ref = Parent {
            pid: parent.pid,
            start_ticks: parent.id.map(|i| i.start_ticks),
        };
        if !in_job {
            self.live.insert(
                pid,
                Node {
                    pid,
                    id,
                    unborn: None,
                    in_job: false,
                    is_root: id.is_some() && id == self.cfg.root,
                    early: via == Via::Early,
                    chain: Vec::new(),
                    markers: Markers::default(),
                    parent_markers: Markers::default(),
                    step: None,
                    is_step_root: false,
                    signature: None,
                    command: String::new(),
                    execd: false,
                    serial,
                },
            );
            return;
        }
        let mut chain = Vec::with_capacity(parent.chain.len() + 1);
        chain.push(parent_ref.pid);
        if !parent.is_root {
            chain.extend(parent.chain.iter().take(MAX_CHAIN - 1));
        }
        let unborn = defer.map(|at_ns| Unborn {
            parent: parent_ref,
            via,
            at_ns,
            t_us,
        });
        let node = Node {
            pid,
            id,
            unborn,
            in_job: true,
            is_root: false,
            early: via == Via::Early,
            chain: chain.clone(),
            markers: parent.markers.clone(),
            parent_markers: parent.markers.clone(),
            step: parent.step,
            is_step_root: false,
            signature: parent.signature.clone(),
            command: parent.command.clone(),
            execd: false,
            serial,
        };
        if unborn.is_some() {
            self.unborn_due
                .push_back((t_us.saturating_add(IDENTIFY_AFTER_US), pid, serial));
        } else {
            self.journal_birth(
                Birth {
                    pid,
                    start_ticks: id.map(|i| i.start_ticks),
                    parent: parent_ref,
                    chain,
                    in_job: true,
                    markers: node.markers.clone(),
                    via,
                    gap,
                    t_us,
                },
                out,
            );
        }
        self.count_in(&node, t_us, out);
        self.live.insert(pid, node);
    }

    fn serial(&mut self) -> u64 {
        self.next_serial += 1;
        self.next_serial
    }

    /// The node for `pid`, creating it when it is met before its own fork event: from a
    /// fork event later in the batch, from `/proc`, or from the recently exited.
    fn resolve(
        &mut self,
        pid: i32,
        batch: &Batch<'_>,
        src: &mut dyn FactSource,
        out: &mut Vec<Record>,
        depth: usize,
    ) -> Option<Node> {
        if let Some(n) = self.live.get(&pid) {
            return Some(n.clone());
        }
        if pid <= 0 || depth > MAX_CHAIN {
            return None;
        }
        // Its own fork event is further on in this batch: that names its parent.
        let later = batch
            .forks
            .get(&pid)
            .and_then(|v| v.iter().find(|f| f.index > batch.at))
            .copied();
        if let Some(fork) = later {
            let parent = self.resolve(fork.parent, batch, src, out, depth + 1);
            let parent = self.born_parent(parent, src, out);
            let in_job = self.is_job_parent(parent.as_ref()) && pid != self.cfg.me.pid;
            let reused_later = in_job
                && batch
                    .forks
                    .get(&pid)
                    .is_some_and(|v| v.iter().any(|f| f.index > fork.index));
            let gap = reused_later.then(|| "its pid was reused before it could be read".to_owned());
            let defer = (in_job && gap.is_none()).then_some(fork.at_ns);
            let parent = parent.unwrap_or_else(|| Node::unknown(fork.parent));
            let t_us = (batch.t_us)(fork.at_ns);
            self.insert_child(
                pid,
                None,
                &parent,
                Via::Early,
                gap,
                t_us,
                in_job,
                defer,
                out,
            );
            return self.live.get(&pid).cloned();
        }
        if let Some(n) = self.dead.get(&pid) {
            return Some(n.clone());
        }
        let facts = src.facts(pid, false)?;
        if facts.kernel_thread {
            self.insert_plain(&facts);
            return self.live.get(&pid).cloned();
        }
        let parent = self.resolve(facts.ppid, batch, src, out, depth + 1);
        let parent = self.born_parent(parent, src, out);
        let in_job = self.is_job_parent(parent.as_ref()) && pid != self.cfg.me.pid;
        let parent = parent.unwrap_or_else(|| Node::unknown(facts.ppid));
        let gap = Some("its fork was not seen; its parent is the one it had when read".to_owned());
        let t_us = self.last_t_us;
        self.insert_child(
            pid,
            Some(facts.id),
            &parent,
            Via::Early,
            gap,
            t_us,
            in_job,
            None,
            out,
        );
        self.live.get(&pid).cloned()
    }

    fn insert_plain(&mut self, f: &ProcFacts) {
        let serial = self.serial();
        self.live.insert(
            f.id.pid,
            Node {
                pid: f.id.pid,
                id: Some(f.id),
                unborn: None,
                in_job: false,
                is_root: Some(f.id) == self.cfg.root,
                early: false,
                chain: Vec::new(),
                markers: Markers::default(),
                parent_markers: Markers::default(),
                step: None,
                is_step_root: false,
                signature: None,
                command: String::new(),
                execd: false,
                serial,
            },
        );
    }

    fn on_exec(
        &mut self,
        pid: i32,
        at_ns: u64,
        batch: &Batch<'_>,
        src: &mut dyn FactSource,
        out: &mut Vec<Record>,
    ) {
        let t_us = (batch.t_us)(at_ns);
        self.last_t_us = t_us;
        if !self.live.contains_key(&pid) {
            // A thread other than the leader exec'd: the kernel reported the leader's exit
            // first, then the exec under the same pid (and start time).
            if let Some(dead) = self.dead.get(&pid).cloned() {
                if let Some(f) = src.facts(pid, false) {
                    if Some(f.id) == dead.id {
                        self.dead.remove(&pid);
                        self.count_in(&dead, t_us, out);
                        self.live.insert(pid, dead);
                    }
                }
            }
        }
        // (Known already, the common case: no copy of its node.)
        if !self.live.contains_key(&pid) && self.resolve(pid, batch, src, out, 0).is_none() {
            return;
        }
        let in_job = self.live.get(&pid).is_some_and(|n| n.in_job);
        if !in_job && !self.adopt_if_marked(pid, t_us, src, out) {
            return;
        }
        let known = self.live.get(&pid).and_then(|n| n.id);
        let read = src.exec_facts(pid, known);
        // Its identity may have been left for now: then its stat was read with the
        // details, in the same directory, and its birth goes first.
        let taken = self
            .live
            .get(&pid)
            .is_some_and(|n| n.unborn.is_some())
            .then(|| self.identify_unborn(pid, Some(read.as_ref().map(|f| f.id)), src, out));
        let Some(facts) = read.filter(|f| !f.is_dead()) else {
            self.stats.exec_misses += 1;
            return;
        };
        let other = match taken {
            Some(taken) => taken != Some(facts.id),
            None => self
                .live
                .get(&pid)
                .and_then(|n| n.id)
                .is_some_and(|id| id != facts.id),
        };
        if other {
            // Not the process we knew: it exited and the pid was reused unseen.
            self.on_exit(pid, t_us, src, out);
            if self.resolve(pid, batch, src, out, 0).is_none() {
                return;
            }
        }
        self.apply_exec(pid, &facts, t_us, out);
    }

    /// Whether `pid`, not (yet) the job's, carries this job's identity marker in its own
    /// environment (and no other job's): then it is the job's, whoever started it (the
    /// next step of a job under a long-lived agent, which hands every step the job's
    /// marker). One `environ` read, and only when the job has markers.
    fn marked_ours(&self, pid: i32, src: &mut dyn FactSource) -> bool {
        if !self.cfg.markers.has_identity() || pid == self.cfg.me.pid {
            return false;
        }
        if self.live.get(&pid).is_some_and(|n| n.is_root) {
            return false;
        }
        src.markers(pid).is_some_and(|m| {
            matches!(
                m.belongs_to(&self.cfg.markers),
                crate::model::Belongs::Ours(_)
            )
        })
    }

    /// Makes `pid` a job process when it carries the job's marker, with a birth record
    /// (`via: marker`) naming the parent it has now. Returns whether it did.
    fn adopt_if_marked(
        &mut self,
        pid: i32,
        t_us: u64,
        src: &mut dyn FactSource,
        out: &mut Vec<Record>,
    ) -> bool {
        if !self.marked_ours(pid, src) {
            return false;
        }
        let Some(f) = src.facts(pid, false).filter(|f| !f.is_dead()) else {
            return false;
        };
        if self.live.get(&f.ppid).is_some_and(|n| n.unborn.is_some()) {
            self.identify_unborn(f.ppid, None, src, out);
        }
        let serial = match self.live.get(&pid) {
            Some(n) => n.serial,
            None => self.serial(),
        };
        let parent = Parent {
            pid: f.ppid,
            start_ticks: self
                .live
                .get(&f.ppid)
                .and_then(|n| n.id)
                .map(|i| i.start_ticks),
        };
        let node = Node {
            pid,
            id: Some(f.id),
            unborn: None,
            in_job: true,
            is_root: false,
            early: false,
            chain: vec![f.ppid],
            markers: Markers::default(),
            parent_markers: Markers::default(),
            step: None,
            is_step_root: false,
            signature: None,
            command: String::new(),
            execd: false,
            serial,
        };
        self.journal_birth(
            Birth {
                pid,
                start_ticks: Some(f.id.start_ticks),
                parent,
                chain: vec![f.ppid],
                in_job: true,
                markers: Markers::default(),
                via: Via::Marker,
                gap: None,
                t_us,
            },
            out,
        );
        self.count_in(&node, t_us, out);
        self.live.insert(pid, node);
        true
    }

    /// Records what an exec (or a first read by a scan) showed: identity, command line,
    /// markers, step and signature.
    fn apply_exec(&mut self, pid: i32, facts: &ProcFacts, t_us: u64, out: &mut Vec<Record>) {
        let Some(mut node) = self.live.remove(&pid) else {
            return;
        };
        if !node.in_job {
            self.live.insert(pid, node);
            return;
        }
        self.count_out(&node);
        let before = (node.execd, node.command.clone(), node.markers.clone());
        node.id = Some(facts.id);
        let mut unreadable = facts.unreadable.clone();
        node.markers = complete(facts.markers.as_ref(), &node.parent_markers);
        // A process that execs carrying another job's marker is that job's from now on
        // (`JENKINS_NODE_COOKIE=dontKillMe server &`): it and what it starts leave ours.
        let theirs = facts.markers.as_ref().is_some_and(|m| {
            matches!(
                m.belongs_to(&self.cfg.markers),
                crate::model::Belongs::Theirs(_)
            )
        });
        if theirs {
            node.in_job = false;
            self.stats.execs += 1;
            out.push(Record::Exec(Exec {
                id: facts.id,
                argv: facts.argv.clone().unwrap_or_default(),
                in_job: false,
                markers: node.markers.clone(),
                unreadable: facts.unreadable.clone(),
                t_us,
            }));
            self.live.insert(pid, node);
            return;
        }
        if facts.markers.is_none() && !unreadable.iter().any(|u| u.starts_with("environ")) {
            unreadable.push("environ: not read".into());
        }
        let argv = facts.argv.clone().unwrap_or_default();
        if !argv.is_empty() {
            let args = argv.lossy_args();
            node.signature = Some(crate::signature::live(&args));
            node.command = short(&args.join(" "));
        }
        // A new step starts where GITHUB_ACTION changes.
        let step_name = node.markers.github_action.clone();
        if step_name.is_some() && step_name != node.parent_markers.github_action {
            if !node.is_step_root {
                node.is_step_root = true;
                node.step = Some(node.serial);
            }
            self.steps.insert(
                node.serial,
                Step {
                    name: step_name.unwrap_or_default(),
                    process: node.id,
                    pid,
                    command: node.command.clone(),
                    live: self.steps.get(&node.serial).map_or(0, |s| s.live),
                    ended: false,
                    warned: false,
                },
            );
        }
        if let (Some(ns), Some(ours)) = (&facts.pid_ns, &self.cfg.pid_ns) {
            if ns != ours && self.foreign_ns_reported.insert(ns.clone()) {
                out.push(Record::Degraded(super::journal::Degraded {
                    reason: format!(
                        "job process {pid} (`{}`) runs in another pid namespace ({ns}, ours \
                         is {ours}): a container; its children are seen with host pids",
                        node.command
                    ),
                }));
            }
        }
        // Events are handled a moment after they happen: a process that exec'd twice
        // meanwhile reads the same twice. Once is enough.
        let repeat = before == (true, node.command.clone(), node.markers.clone());
        node.execd = true;
        self.count_in(&node, t_us, out);
        if repeat {
            self.live.insert(pid, node);
            return;
        }
        self.stats.execs += 1;
        out.push(Record::Exec(Exec {
            id: facts.id,
            argv,
            in_job: true,
            markers: node.markers.clone(),
            unreadable,
            t_us,
        }));
        self.live.insert(pid, node);
    }

    fn on_exit(&mut self, pid: i32, t_us: u64, src: &mut dyn FactSource, out: &mut Vec<Record>) {
        if self.live.get(&pid).is_some_and(|n| n.unborn.is_some()) {
            // Not read yet: its zombie may still tell its start time.
            self.identify_unborn(pid, None, src, out);
        }
        let Some(node) = self.live.remove(&pid) else {
            return;
        };
        if node.in_job {
            self.count_out(&node);
            if node.is_step_root {
                if let Some(step) = self.steps.get_mut(&node.serial) {
                    step.ended = true;
                    self.step_checks.push((t_us + STEP_GRACE_US, node.serial));
                }
            }
            self.stats.exits += 1;
            out.push(Record::Exit(Exit {
                pid,
                start_ticks: node.id.map(|i| i.start_ticks),
                t_us,
            }));
        }
        self.bury(pid, node);
    }

    fn bury(&mut self, pid: i32, node: Node) {
        self.dead_order.push_back((pid, node.serial));
        self.dead.insert(pid, node);
        while self.dead_order.len() > GRAVEYARD {
            if let Some((old, serial)) = self.dead_order.pop_front() {
                if self.dead.get(&old).is_some_and(|n| n.serial == serial) {
                    self.dead.remove(&old);
                }
            }
        }
    }

    // -----------------------------------------------------------------------------------
    // Counting for the warnings
    // -----------------------------------------------------------------------------------

    fn count_in(&mut self, node: &Node, t_us: u64, out: &mut Vec<Record>) {
        if !node.in_job {
            return;
        }
        if let Some(step) = node.step.filter(|_| !node.is_step_root) {
            if let Some(s) = self.steps.get_mut(&step) {
                s.live += 1;
            }
        }
        let Some(sig) = node.signature.clone() else {
            return;
        };
        let count = self.sigs.entry(sig.clone()).or_default();
        count.live += 1;
        if count.live > self.cfg.warn_over && !count.warned {
            count.warned = true;
            let live = count.live;
            let mut examples: Vec<Example> = self
                .live
                .iter()
                .filter(|(_, n)| n.in_job && n.signature.as_deref() == Some(sig.as_str()))
                .map(|(&pid, n)| example(pid, n))
                .collect();
            examples.sort_by_key(|e| e.pid);
            examples.truncate(EXAMPLES);
            out.push(Record::Warning(Warning::ManyAlike {
                signature: sig,
                live,
                over: self.cfg.warn_over,
                step: node.markers.github_action.clone(),
                test: node.markers.pytest_current_test.clone(),
                examples,
                t_us,
            }));
        }
    }

    fn count_out(&mut self, node: &Node) {
        if !node.in_job {
            return;
        }
        if let Some(step) = node.step.filter(|_| !node.is_step_root) {
            if let Some(s) = self.steps.get_mut(&step) {
                s.live = s.live.saturating_sub(1);
            }
        }
        if let Some(sig) = &node.signature {
            if let Some(c) = self.sigs.get_mut(sig) {
                c.live = c.live.saturating_sub(1);
                if c.live == 0 {
                    self.sigs.remove(sig);
                }
            }
        }
    }

    /// Raises the step warnings that are due at `now_us`.
    pub fn due(&mut self, now_us: u64, out: &mut Vec<Record>) {
        let (due, later): (Vec<_>, Vec<_>) =
            self.step_checks.iter().partition(|&&(t, _)| t <= now_us);
        self.step_checks = later;
        for (_, serial) in due {
            let Some(step) = self.steps.get(&serial) else {
                continue;
            };
            if step.live > 0 && !step.warned {
                let mut examples: Vec<Example> = self
                    .live
                    .iter()
                    .filter(|(_, n)| n.in_job && n.step == Some(serial))
                    .map(|(&pid, n)| example(pid, n))
                    .collect();
                examples.sort_by_key(|e| e.pid);
                examples.truncate(EXAMPLES);
                out.push(Record::Warning(Warning::StepEndedWithLiveDescendants {
                    step: step.name.clone(),
                    process: step.process.unwrap_or(ProcessId {
                        pid: step.pid,
                        start_ticks: 0,
                    }),
                    command: step.command.clone(),
                    live: step.live,
                    examples,
                    t_us: now_us,
                }));
            }
            self.steps.remove(&serial);
        }
    }

    // -----------------------------------------------------------------------------------
    // Scans
    // -----------------------------------------------------------------------------------

    /// Reconciles the table with the pids listed in `/proc`: the missing have exited, the
    /// unknown are births (in start order, so parents come first). Returns how many job
    /// processes it found.
    pub fn scan(
        &mut self,
        pids: &[i32],
        kind: ScanKind,
        t_us: u64,
        src: &mut dyn FactSource,
        out: &mut Vec<Record>,
    ) -> usize {
        let listed: HashSet<i32> = pids.iter().copied().collect();
        let gone: Vec<i32> = self
            .live
            .keys()
            .copied()
            .filter(|p| !listed.contains(p))
            .collect();
        for pid in gone {
            self.on_exit(pid, t_us, src, out);
        }
        // Job processes first met by the previous scan may have exec'd since.
        for (pid, serial) in std::mem::take(&mut self.recheck) {
            let current = self
                .live
                .get(&pid)
                .filter(|n| n.serial == serial && n.in_job);
            let Some(node) = current else { continue };
            let before = node.command.clone();
            if let Some(f) = src.facts(pid, true) {
                let now = f.argv.as_ref().map(Argv::lossy_args).unwrap_or_default();
                if Some(f.id) == node.id && !now.is_empty() && short(&now.join(" ")) != before {
                    self.apply_exec(pid, &f, t_us, out);
                }
            }
        }
        let mut fresh: Vec<ProcFacts> = pids
            .iter()
            .filter(|p| !self.live.contains_key(p))
            .filter_map(|&p| src.facts(p, false))
            .collect();
        fresh.sort_by_key(|f| (f.id.start_ticks, f.id.pid));
        let mut found = 0;
        for f in fresh {
            if f.kernel_thread || f.is_dead() {
                self.insert_plain(&f);
                continue;
            }
            let parent = self.live.get(&f.ppid).cloned();
            let in_job = (self.is_job_parent(parent.as_ref())
                || (Some(f.id) != self.cfg.root && self.marked_ours(f.id.pid, src)))
                && f.id.pid != self.cfg.me.pid;
            if !in_job {
                self.insert_plain(&f);
                if Some(f.id) == self.cfg.root {
                    if let Some(details) = src.facts(f.id.pid, true).filter(|d| d.id == f.id) {
                        self.seed_root(&details);
                    }
                }
                continue;
            }
            let parent = parent.unwrap_or_else(|| Node::unknown(f.ppid));
            found += 1;
            match kind {
                ScanKind::Seed => self.seed_one(&f, &parent, src, out),
                ScanKind::Scan => {
                    let gap = Some(
                        "found by a scan: if its parent had already exited, the parent named \
                         here is its reaper"
                            .to_owned(),
                    );
                    self.insert_child(
                        f.id.pid,
                        Some(f.id),
                        &parent,
                        Via::Scan,
                        gap,
                        t_us,
                        true,
                        None,
                        out,
                    );
                    if let Some(details) = src.facts(f.id.pid, true) {
                        if details.id == f.id {
                            self.apply_exec(f.id.pid, &details, t_us, out);
                        }
                    }
                    if let Some(n) = self.live.get(&f.id.pid) {
                        self.recheck.push((f.id.pid, n.serial));
                    }
                }
            }
        }
        found
    }

    /// A job process alive at the guard's start: recorded as a seed, not a birth.
    fn seed_one(
        &mut self,
        f: &ProcFacts,
        parent: &Node,
        src: &mut dyn FactSource,
        out: &mut Vec<Record>,
    ) {
        let mut sink = Vec::new();
        self.insert_child(
            f.id.pid,
            Some(f.id),
            parent,
            Via::Scan,
            None,
            0,
            true,
            None,
            &mut sink,
        );
        self.stats.births = self.stats.births.saturating_sub(1);
        if let Some(details) = src.facts(f.id.pid, true).filter(|d| d.id == f.id) {
            self.apply_exec(f.id.pid, &details, 0, &mut sink);
            self.stats.execs = self.stats.execs.saturating_sub(1);
        }
        // Warnings raised while seeding are real: keep them; the rest becomes one seed.
        out.extend(
            sink.into_iter()
                .filter(|r| matches!(r, Record::Warning(_) | Record::Degraded(_))),
        );
        if let Some(n) = self.live.get(&f.id.pid) {
            out.push(Record::Seed(Seed {
                id: f.id,
                ppid: f.ppid,
                in_job: true,
                argv: Argv::default(),
                markers: n.markers.clone(),
            }));
        }
    }

    /// The job's root, read at start: its markers are what its children inherit.
    fn seed_root(&mut self, root: &ProcFacts) {
        if let Some(n) = self.live.get_mut(&root.id.pid).filter(|n| n.is_root) {
            n.markers = root.markers.clone().unwrap_or_default();
            let args = root.argv.as_ref().map(Argv::lossy_args).unwrap_or_default();
            n.command = short(&args.join(" "));
            if n.markers.github_action.is_some() {
                // The root is itself a step (`ci-janitor run` inside one): its children are
                // that step's.
                n.is_step_root = true;
                n.step = Some(n.serial);
                let serial = n.serial;
                let step = Step {
                    name: n.markers.github_action.clone().unwrap_or_default(),
                    process: n.id,
                    pid: root.id.pid,
                    command: n.command.clone(),
                    live: 0,
                    ended: false,
                    warned: false,
                };
                self.steps.insert(serial, step);
            }
        }
    }
}

impl Node {
    /// A parent we know nothing about (gone before we could read it).
    fn unknown(pid: i32) -> Node {
        Node {
            pid,
            id: None,
            unborn: None,
            in_job: false,
            is_root: false,
            early: false,
            chain: Vec::new(),
            markers: Markers::default(),
            parent_markers: Markers::default(),
            step: None,
            is_step_root: false,
            signature: None,
            command: String::new(),
            execd: false,
            serial: 0,
        }
    }
}

/// A process's own markers completed by its parent's; those taken from the parent are
/// listed in `inherited`. Unreadable own markers: all of the parent's, inherited.
fn complete(own: Option<&Markers>, parent: &Markers) -> Markers {
    let Some(own) = own else {
        let mut m = parent.clone();
        m.inherited = Markers::NAMES
            .iter()
            .filter(|n| parent.get(n).is_some())
            .map(|n| (*n).to_owned())
            .collect();
        return m;
    };
    let mut m = own.clone();
    m.inherited.clear();
    for name in Markers::NAMES {
        if own.get(name).is_none() {
            if let Some(v) = parent.get(name) {
                m.set(name, v.clone());
                m.inherited.push(name.to_owned());
            }
        }
    }
    m
}

fn short(cmd: &str) -> String {
    if cmd.chars().count() <= MAX_COMMAND {
        return cmd.to_owned();
    }
    let mut s: String = cmd.chars().take(MAX_COMMAND - 1).collect();
    s.push('…');
    s
}

fn example(pid: i32, n: &Node) -> Example {
    Example {
        pid,
        start_ticks: n.id.map(|i| i.start_ticks),
        command: n.command.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::journal::{Birth, Exec};

    /// A process table the tracker reads from, edited as the test goes.
    #[derive(Default)]
    struct Table {
        procs: HashMap<i32, ProcFacts>,
        reads: usize,
    }

    impl FactSource for Table {
        fn facts(&mut self, pid: i32, details: bool) -> Option<ProcFacts> {
            self.reads += 1;
            let mut f = self.procs.get(&pid)?.clone();
            if !details {
                f.argv = None;
                f.markers = None;
            }
            Some(f)
        }
    }

    impl Table {
        fn add(&mut self, pid: i32, ppid: i32, ticks: u64, argv: &[&str], markers: Markers) {
            self.procs.insert(
                pid,
                ProcFacts {
                    id: ProcessId {
                        pid,
                        start_ticks: ticks,
                    },
                    ppid,
                    state: 'S',
                    comm: "x".into(),
                    kernel_thread: false,
                    argv: Some(argv.iter().collect()),
                    markers: Some(markers),
                    pid_ns: None,
                    unreadable: vec![],
                    stdio_pipes: vec![],
                },
            );
        }
        fn remove(&mut self, pid: i32) {
            self.procs.remove(&pid);
        }
        fn pids(&self) -> Vec<i32> {
            let mut p: Vec<i32> = self.procs.keys().copied().collect();
            p.sort_unstable();
            p
        }
    }

    fn id(pid: i32, t: u64) -> ProcessId {
        ProcessId {
            pid,
            start_ticks: t,
        }
    }

    fn step(name: &str) -> Markers {
        Markers {
            github_action: Some(name.into()),
            ..Default::default()
        }
    }

    /// init (1), the runner worker (10, the root), and a stranger (20); the guard is 99.
    fn setup(warn_over: usize) -> (Tracker, Table) {
        let mut t = Table::default();
        t.add(1, 0, 1, &["init"], Markers::default());
        t.add(10, 1, 2, &["Runner.Worker"], Markers::default());
        t.add(20, 1, 3, &["sshd"], Markers::default());
        t.add(
            99,
            1,
            4,
            &["ci-janitor", "guard", "run"],
            Markers::default(),
        );
        let mut tr = Tracker::new(TrackerConfig {
            me: id(99, 4),
            root: Some(id(10, 2)),
            markers: Markers::default(),
            warn_over,
            pid_ns: None,
            clock: None,
        });
        let mut out = Vec::new();
        let pids = t.pids();
        assert_eq!(tr.scan(&pids, ScanKind::Seed, 0, &mut t, &mut out), 0);
        assert!(out.is_empty(), "{out:?}");
        (tr, t)
    }

    fn fork(parent: i32, child: i32) -> ProcEvent {
        ProcEvent::Fork {
            parent,
            child,
            at_ns: 1000,
        }
    }
    fn exec(pid: i32) -> ProcEvent {
        ProcEvent::Exec { pid, at_ns: 2000 }
    }
    fn exit(pid: i32) -> ProcEvent {
        ProcEvent::Exit { pid, at_ns: 3000 }
    }

    fn run(tr: &mut Tracker, t: &mut Table, events: &[ProcEvent]) -> Vec<Record> {
        let mut out = Vec::new();
        tr.process(events, &|ns| ns / 1000, t, &mut out);
        // What the guard reads on its timer: the job processes that did not exec.
        tr.identify_due(u64::MAX, t, &mut out);
        out
    }

    fn births(out: &[Record]) -> Vec<&Birth> {
        out.iter()
            .filter_map(|r| match r {
                Record::Birth(b) => Some(b),
                _ => None,
            })
            .collect()
    }

    fn execs(out: &[Record]) -> Vec<&Exec> {
        out.iter()
            .filter_map(|r| match r {
                Record::Exec(e) => Some(e),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_scrubbed_orphan_keeps_its_lineage_and_markers() {
        let (mut tr, mut t) = setup(20);
        // The step shell (exec'd by the worker with GITHUB_ACTION), a test process with
        // PYTEST_CURRENT_TEST, and a server it starts with an empty environment.
        t.add(30, 10, 10, &["bash", "step.sh"], step("run-tests"));
        let test = Markers {
            pytest_current_test: Some("t.py::x (call)".into()),
            ..step("run-tests")
        };
        t.add(31, 30, 11, &["pytest"], test);
        t.add(32, 31, 12, &["mcp-server"], Markers::default());
        let out = run(
            &mut tr,
            &mut t,
            &[
                fork(10, 30),
                exec(30),
                fork(30, 31),
                exec(31),
                fork(31, 32),
                exec(32),
                exit(31),
            ],
        );
        let b = births(&out);
        assert_eq!(b.len(), 3);
        assert!(b.iter().all(|b| b.in_job && b.gap.is_none()));
        assert_eq!(b[2].chain, vec![31, 30, 10]);
        assert_eq!(b[0].chain, vec![10]);
        let e = execs(&out);
        let server = e.iter().find(|e| e.id == id(32, 12)).unwrap();
        assert_eq!(server.markers.github_action.as_deref(), Some("run-tests"));
        assert_eq!(
            server.markers.pytest_current_test.as_deref(),
            Some("t.py::x (call)")
        );
        assert_eq!(
            server.markers.inherited,
            vec!["GITHUB_ACTION", "PYTEST_CURRENT_TEST"]
        );
        // Its own environment had them: nothing inherited.
        let shell = e.iter().find(|e| e.id == id(30, 10)).unwrap();
        assert!(shell.markers.inherited.is_empty());
        assert!(out
            .iter()
            .any(|r| matches!(r, Record::Exit(x) if x.pid == 31)));
    }

    #[test]
    fn processes_outside_the_job_cost_nothing_and_are_not_journaled() {
        let (mut tr, mut t) = setup(20);
        t.add(40, 20, 10, &["sshd: session"], Markers::default());
        let before = t.reads;
        let out = run(&mut tr, &mut t, &[fork(20, 40), exec(40), exit(40)]);
        assert!(out.is_empty(), "{out:?}");
        assert_eq!(t.reads, before, "no /proc read for a stranger's child");
        // Nor the guard itself, even below the root.
        let out = run(&mut tr, &mut t, &[fork(10, 99)]);
        assert!(births(&out).is_empty());
    }

    #[test]
    fn a_child_seen_before_its_own_fork_event_is_born_once_with_the_right_parent() {
        let (mut tr, mut t) = setup(20);
        t.add(30, 10, 10, &["sh"], step("s"));
        t.add(31, 30, 10, &["daemon"], Markers::default());
        // 30 forked 31 and exited before 10's fork event for 30 was queued.
        t.remove(30);
        let out = run(
            &mut tr,
            &mut t,
            &[fork(30, 31), exit(30), fork(10, 30), exec(31)],
        );
        let b = births(&out);
        assert_eq!(b.len(), 2, "{b:?}");
        let mid = b.iter().find(|b| b.pid == 30).unwrap();
        assert_eq!(mid.via, Via::Early);
        assert_eq!(mid.parent.pid, 10);
        assert!(mid.start_ticks.is_none(), "gone before it could be read");
        let daemon = b.iter().find(|b| b.pid == 31).unwrap();
        assert!(daemon.in_job);
        assert_eq!(daemon.chain, vec![30, 10]);
    }

    #[test]
    fn a_short_lived_intermediate_is_a_gap_in_identity_not_in_lineage() {
        let (mut tr, mut t) = setup(20);
        t.add(31, 30, 10, &["daemon"], Markers::default());
        // 30 is already gone when its fork event is handled.
        let out = run(&mut tr, &mut t, &[fork(10, 30), fork(30, 31), exit(30)]);
        let b = births(&out);
        assert_eq!(b[0].pid, 30);
        assert_eq!(
            b[0].gap.as_deref(),
            Some("it exited before it could be read")
        );
        assert_eq!(b[1].parent.pid, 30);
        assert!(b[1].in_job);
        assert_eq!(b[1].start_ticks, Some(10));
        assert_eq!(tr.stats().gaps, 1);
    }

    #[test]
    fn a_pid_reused_within_the_batch_is_not_read_as_the_first_child() {
        let (mut tr, mut t) = setup(20);
        t.add(30, 20, 50, &["someone else"], Markers::default());
        let out = run(&mut tr, &mut t, &[fork(10, 30), exit(30), fork(20, 30)]);
        let b = births(&out);
        assert_eq!(b.len(), 1);
        assert!(b[0].start_ticks.is_none());
        assert_eq!(
            b[0].gap.as_deref(),
            Some("its pid was reused before it could be read")
        );
    }

    #[test]
    fn a_start_time_far_from_the_fork_event_is_another_process() {
        let (mut tr, mut t) = setup(20);
        tr.cfg.clock = Some(TickClock {
            boot_minus_mono_ns: 0,
            ticks_per_second: 100,
        });
        // The fork event is at 10 s (tick 1000); pid 30 now started at tick 1500.
        t.add(30, 1, 1500, &["late"], Markers::default());
        t.add(31, 10, 999, &["ok"], Markers::default());
        let ev = |parent, child| ProcEvent::Fork {
            parent,
            child,
            at_ns: 10_000_000_000,
        };
        let out = run(&mut tr, &mut t, &[ev(10, 30), ev(10, 31)]);
        let b = births(&out);
        assert!(b[0].start_ticks.is_none());
        assert_eq!(b[1].start_ticks, Some(999));
    }

    #[test]
    fn warns_when_a_step_ends_with_live_descendants() {
        let (mut tr, mut t) = setup(20);
        t.add(30, 10, 10, &["bash", "-e", "step.sh"], step("start-server"));
        t.add(31, 30, 11, &["server"], step("start-server"));
        t.add(40, 10, 12, &["bash", "other.sh"], step("clean-step"));
        t.add(41, 40, 13, &["helper"], step("clean-step"));
        let out = run(
            &mut tr,
            &mut t,
            &[
                fork(10, 30),
                exec(30),
                fork(30, 31),
                exec(31),
                fork(10, 40),
                exec(40),
                fork(40, 41),
                exec(41),
                exit(41),
                exit(40),
                exit(30),
            ],
        );
        assert!(!out.iter().any(|r| matches!(r, Record::Warning(_))));
        let mut w = Vec::new();
        tr.due(3 + STEP_GRACE_US - 1, &mut w);
        assert!(w.is_empty(), "not before the grace period");
        tr.due(3 + STEP_GRACE_US, &mut w);
        assert_eq!(w.len(), 1, "{w:?}");
        match &w[0] {
            Record::Warning(Warning::StepEndedWithLiveDescendants {
                step,
                live,
                examples,
                ..
            }) => {
                assert_eq!(step, "start-server");
                assert_eq!(*live, 1);
                assert_eq!(examples[0].pid, 31);
                assert_eq!(examples[0].command, "server");
            }
            other => panic!("{other:?}"),
        }
        assert!(tr.next_due().is_none());
    }

    #[test]
    fn warns_once_when_too_many_alike() {
        let (mut tr, mut t) = setup(3);
        t.add(30, 10, 10, &["pytest"], step("tests"));
        let mut events = vec![fork(10, 30), exec(30)];
        for (i, port) in (50..56).zip(8000..) {
            let port = port.to_string();
            t.add(
                i,
                30,
                20,
                &["uvicorn", "app:main", "--port", port.as_str()],
                Markers::default(),
            );
            events.push(fork(30, i));
            events.push(exec(i));
        }
        let out = run(&mut tr, &mut t, &events);
        let warnings: Vec<&Record> = out
            .iter()
            .filter(|r| matches!(r, Record::Warning(_)))
            .collect();
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        match warnings[0] {
            Record::Warning(Warning::ManyAlike {
                signature,
                live,
                over,
                step,
                ..
            }) => {
                assert_eq!(signature, "uvicorn app:main --port <N>");
                assert_eq!((*live, *over), (4, 3));
                assert_eq!(step.as_deref(), Some("tests"));
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn scans_find_births_and_exits_in_start_order_and_catch_a_late_exec() {
        let (mut tr, mut t) = setup(20);
        t.add(30, 10, 10, &["sh"], step("s"));
        t.add(29, 30, 11, &["sh"], Markers::default()); // a lower pid, born later
        let mut out = Vec::new();
        let pids = t.pids();
        assert_eq!(tr.scan(&pids, ScanKind::Scan, 5, &mut t, &mut out), 2);
        let b = births(&out);
        assert_eq!(b.iter().map(|b| b.pid).collect::<Vec<_>>(), vec![30, 29]);
        assert!(b.iter().all(|b| b.via == Via::Scan && b.in_job));
        // 29 was still the forked shell; by the next scan it exec'd the server.
        t.add(29, 30, 11, &["server", "--port", "1"], Markers::default());
        t.remove(30);
        let mut out = Vec::new();
        let pids = t.pids();
        tr.scan(&pids, ScanKind::Scan, 6, &mut t, &mut out);
        let e = execs(&out);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].argv.len(), 3);
        assert_eq!(e[0].markers.github_action.as_deref(), Some("s"));
        assert!(out
            .iter()
            .any(|r| matches!(r, Record::Exit(x) if x.pid == 30)));
    }

    #[test]
    fn the_first_scan_seeds_the_jobs_live_processes() {
        let mut t = Table::default();
        t.add(1, 0, 1, &["init"], Markers::default());
        t.add(10, 1, 2, &["sh"], step("outer"));
        t.add(11, 10, 3, &["make"], Markers::default());
        t.add(12, 1, 4, &["other"], Markers::default());
        let mut tr = Tracker::new(TrackerConfig {
            me: id(99, 9),
            root: Some(id(10, 2)),
            markers: Markers::default(),
            warn_over: 20,
            pid_ns: None,
            clock: None,
        });
        let mut out = Vec::new();
        let pids = t.pids();
        assert_eq!(tr.scan(&pids, ScanKind::Seed, 0, &mut t, &mut out), 1);
        assert_eq!(out.len(), 1, "{out:?}");
        match &out[0] {
            Record::Seed(s) => {
                assert_eq!(s.id, id(11, 3));
                // Inherited from the root.
                assert_eq!(s.markers.github_action.as_deref(), Some("outer"));
                assert_eq!(s.markers.inherited, vec!["GITHUB_ACTION"]);
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(tr.stats().births, 0);
    }

    #[test]
    fn repeated_execs_read_late_are_journaled_once() {
        let (mut tr, mut t) = setup(20);
        t.add(30, 10, 10, &["sleep", "9"], Markers::default());
        let out = run(
            &mut tr,
            &mut t,
            &[fork(10, 30), exec(30), exec(30), exec(30)],
        );
        assert_eq!(execs(&out).len(), 1);
    }

    /// A guard with no root, attributing by the job's marker: a long-lived agent (5) runs
    /// each step as a separate process, handing it the job's `CI_JOB_ID`.
    fn agent_setup() -> (Tracker, Table) {
        let mut t = Table::default();
        t.add(1, 0, 1, &["init"], Markers::default());
        t.add(5, 1, 2, &["gitlab-runner", "run"], Markers::default());
        t.add(
            99,
            1,
            4,
            &["ci-janitor", "guard", "run"],
            Markers::default(),
        );
        let mut tr = Tracker::new(TrackerConfig {
            me: id(99, 4),
            root: None,
            markers: gitlab("41"),
            warn_over: 20,
            pid_ns: None,
            clock: None,
        });
        let mut out = Vec::new();
        let pids = t.pids();
        assert_eq!(tr.scan(&pids, ScanKind::Seed, 0, &mut t, &mut out), 0);
        (tr, t)
    }

    fn gitlab(job: &str) -> Markers {
        Markers {
            ci_job_id: Some(job.into()),
            ..Default::default()
        }
    }

    #[test]
    fn a_step_started_by_a_long_lived_agent_is_born_into_the_job_by_its_marker() {
        // Regression: with separate steps, the guard took the short-lived first step as the
        // job's root and attributed nothing after it exited.
        let (mut tr, mut t) = agent_setup();
        t.add(40, 5, 10, &["bash", "-c", "pytest"], gitlab("41"));
        t.add(41, 40, 11, &["pytest"], gitlab("41"));
        // An MCP stdio server: a scrubbed environment and a session of its own.
        t.add(42, 41, 12, &["mcp-server"], Markers::default());
        // Another job's step on the same agent, and its child.
        t.add(50, 5, 13, &["bash", "-c", "make"], gitlab("77"));
        t.add(51, 50, 14, &["server"], Markers::default());
        // The agent's own helper, with no marker.
        t.add(60, 5, 15, &["git", "fetch"], Markers::default());
        let out = run(
            &mut tr,
            &mut t,
            &[
                fork(5, 40),
                exec(40),
                fork(40, 41),
                exec(41),
                fork(41, 42),
                exec(42),
                exit(40),
                exit(41),
                fork(5, 50),
                exec(50),
                fork(50, 51),
                exec(51),
                fork(5, 60),
                exec(60),
            ],
        );
        let b = births(&out);
        let born: Vec<i32> = b.iter().map(|b| b.pid).collect();
        assert_eq!(born, vec![40, 41, 42], "{out:?}");
        assert_eq!(b[0].via, Via::Marker);
        assert_eq!(b[0].parent.pid, 5);
        assert_eq!(b[2].via, Via::Fork);
        let lineage = super::super::lineage::Lineage::from_journal(&journal_of(&out));
        assert!(lineage.in_job(id(42, 12)), "the orphaned, scrubbed server");
        assert!(!lineage.in_job(id(51, 14)), "the other job's server");
        assert!(!lineage.in_job(id(60, 15)));
    }

    #[test]
    fn an_exec_with_another_jobs_marker_leaves_the_job() {
        // `JENKINS_NODE_COOKIE=dontKillMe server &`, in GitLab terms: the process and what
        // it starts are not ours any more.
        let (mut tr, mut t) = agent_setup();
        t.add(40, 5, 10, &["bash"], gitlab("41"));
        t.add(41, 40, 11, &["server"], gitlab("keep"));
        t.add(42, 41, 12, &["worker"], Markers::default());
        let out = run(
            &mut tr,
            &mut t,
            &[
                fork(5, 40),
                exec(40),
                fork(40, 41),
                exec(41),
                fork(41, 42),
                exec(42),
            ],
        );
        let lineage = super::super::lineage::Lineage::from_journal(&journal_of(&out));
        assert!(lineage.in_job(id(40, 10)));
        assert!(!lineage.in_job(id(41, 11)));
        assert!(!lineage.in_job(id(42, 12)));
    }

    #[test]
    fn a_scan_adopts_processes_that_carry_the_jobs_marker() {
        // Polling, or the first scan: a marked process whose parent is not the job's.
        let (mut tr, mut t) = agent_setup();
        t.add(40, 5, 10, &["bash"], gitlab("41"));
        t.add(41, 40, 11, &["server"], Markers::default());
        t.add(50, 5, 12, &["bash"], gitlab("77"));
        let mut out = Vec::new();
        let pids = t.pids();
        assert_eq!(tr.scan(&pids, ScanKind::Scan, 5, &mut t, &mut out), 2);
        let born: Vec<i32> = births(&out).iter().map(|b| b.pid).collect();
        assert_eq!(born, vec![40, 41]);
    }

    #[test]
    fn without_markers_nothing_is_read_at_a_strangers_exec() {
        // The cost of marker attribution is paid only when the job has markers.
        let (mut tr, mut t) = setup(20);
        t.add(70, 1, 30, &["cron-job"], gitlab("41"));
        let before = t.reads;
        let out = run(&mut tr, &mut t, &[fork(1, 70), exec(70)]);
        assert!(births(&out).is_empty());
        assert!(t.reads - before <= 1, "{} reads", t.reads - before);
    }

    fn journal_of(out: &[Record]) -> super::super::journal::Journal {
        super::super::journal::Journal {
            records: out.to_vec(),
            ..Default::default()
        }
    }
}
