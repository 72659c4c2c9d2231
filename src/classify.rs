//! Classification: for every process that appeared since the baseline, decide whether it is
//! the job's (and so killed), and keep the evidence. Pure: plain data in, a [`Plan`] out.
//!
//! The classes, in the order they are decided:
//!
//! 1. **protected**: ourselves, our ancestors, pid 1, the job's roots, ci-janitor guards
//!    (recognised by identity), `--protect`. Never touched.
//! 2. **ignored**: matches an `--ignore` pattern. Never touched.
//! 3. **other-job**: carries another job's identity marker. Never touched.
//! 4. **kept**: a build-cache daemon on the shipped keep-list, recognised by its verified
//!    executable and exact arguments, never by its name alone. Reported, never touched.
//! 5. **job**: there is evidence that the job started it, strongest first: the guard saw it
//!    born into the job; it carries this job's ci-janitor marker or CI marker; it descends,
//!    through live parents, from one of the job's roots; it descends from a process already
//!    found to be the job's. Killed; fails the run unless it matches `--allow` (then
//!    **allowed**: killed, not failing).
//! 6. **unattributed**: appeared during the job, no evidence. Reported, with the session and
//!    cgroup it shares with the sweep as *hints* (never evidence: concurrent jobs on one
//!    agent share both); signalled only with `--kill-unattributed`.
//!
//! A name never beats evidence: a process the job started is killed whatever it calls
//! itself. Names only ever *spare*: with `--kill-unattributed`, an unattributed process
//! that looks like a runner, a guard or a system daemon is left alone.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::model::{Belongs, Markers, Process, ProcessId, Snapshot};

/// What the sweep knows about itself and the job, gathered by [`crate::job`] from the
/// environment, the baseline and `/proc`.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The sweeping process.
    pub me: Option<ProcessId>,
    /// Other processes that must never be touched (the guard, the process that took the
    /// baseline).
    pub also_protected: Vec<ProcessId>,
    /// This job's identity markers (see [`crate::model::JOB_MARKERS`]).
    pub markers: Markers,
    /// The job's roots: per-job processes whose live descendants are the job's
    /// (`ci-janitor run`, the runner's worker, the sweep's own caller, `--watch`).
    pub roots: Vec<ProcessId>,
    /// The sweep's session and cgroup: shown as hints on unattributed processes.
    pub session: Option<i32>,
    pub cgroup: Option<String>,
    /// Our own executable's path: a process running it as `guard run` is a ci-janitor guard.
    pub own_exe: Option<crate::model::Bytes>,
    /// Checks that an executable path is the program a keep-list entry names (a JVM's
    /// `java`, the real `sccache`), on disk; `None`: nothing can be verified, nothing kept.
    pub verify_exe: Option<fn(KeepKind, &[u8]) -> bool>,
    /// Who the guard saw born into the job (from its journal).
    pub born_into_job: Option<std::sync::Arc<HashSet<ProcessId>>>,
}

/// Patterns and switches from the command line.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub allow: Vec<Pattern>,
    pub ignore: Vec<Pattern>,
    pub protect: Vec<Pattern>,
    /// Leave out the shipped keep-list, and spare no unattributed process by its name.
    pub no_default_protect: bool,
    pub kill_unattributed: bool,
    /// Only report processes with evidence (`run`: the rest of the machine is not ours to
    /// report on).
    pub only_attributed: bool,
}

/// Why a process is the job's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Rule {
    /// The guard saw it born into the job (strongest: it survives reparenting, a scrubbed
    /// environment, a new session and a new name).
    GuardLineage,
    /// It carries the `CI_JANITOR_RUN` marker ci-janitor gave this job.
    RunMarker,
    /// It carries this job's CI marker (`RUNNER_TRACKING_ID`, `CI_JOB_ID`, ...).
    CiMarker,
    /// It descends (through live parents) from one of the job's roots.
    Descendant,
    /// Its parent (or an earlier ancestor) is a process found to be the job's.
    ChildOfJob,
}

impl Rule {
    pub fn describe(self) -> &'static str {
        match self {
            Rule::GuardLineage => "was born into the job (the guard's lineage)",
            Rule::RunMarker => "carries this job's ci-janitor marker (CI_JANITOR_RUN)",
            Rule::CiMarker => "carries this job's CI marker",
            Rule::Descendant => "descends from one of the job's roots",
            Rule::ChildOfJob => "descends from a leaked job process",
        }
    }
}

/// Why an unattributed process may belong to the job: facts shown to a person, never
/// acted on (another job on the same agent shares them).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Hint {
    /// It is in the sweep's session.
    Session,
    /// It is in the sweep's cgroup.
    Cgroup,
}

impl Hint {
    pub fn describe(self) -> &'static str {
        match self {
            Hint::Session => "is in the sweep's session",
            Hint::Cgroup => "is in the sweep's cgroup",
        }
    }
}

/// A fieldless enum that fits a [`Flags`] set.
pub trait Flag: Copy + 'static {
    /// Every value, in order (bit `i` is `ALL[i]`).
    const ALL: &'static [Self];
    fn index(self) -> u8;
}

impl Flag for Rule {
    const ALL: &'static [Rule] = &[
        Rule::GuardLineage,
        Rule::RunMarker,
        Rule::CiMarker,
        Rule::Descendant,
        Rule::ChildOfJob,
    ];
    fn index(self) -> u8 {
        self as u8
    }
}

impl Flag for Hint {
    const ALL: &'static [Hint] = &[Hint::Session, Hint::Cgroup];
    fn index(self) -> u8 {
        self as u8
    }
}

/// A set of [`Rule`]s or [`Hint`]s in one byte, iterated in the enum's order (for rules,
/// strongest first), written as the list a `Vec` wrote. A sweep keeps one per process in
/// its plan and one per entry: a `Vec` was 24 bytes and an allocation each.
pub struct Flags<T>(u8, std::marker::PhantomData<T>);

impl<T: Flag> Flags<T> {
    pub fn insert(&mut self, value: T) {
        self.0 |= 1 << value.index();
    }
    pub fn contains(self, value: T) -> bool {
        self.0 & (1 << value.index()) != 0
    }
    pub fn is_empty(&self) -> bool {
        self.0 == 0
    }
    pub fn iter(self) -> impl Iterator<Item = T> {
        T::ALL.iter().copied().filter(move |v| self.contains(*v))
    }
    /// The members, in order.
    pub fn to_vec(self) -> Vec<T> {
        self.iter().collect()
    }
}

impl<T> Clone for Flags<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Flags<T> {}
impl<T> Default for Flags<T> {
    fn default() -> Self {
        Flags(0, std::marker::PhantomData)
    }
}
impl<T> PartialEq for Flags<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl<T> Eq for Flags<T> {}
impl<T: Flag + PartialEq> PartialEq<Vec<T>> for Flags<T> {
    fn eq(&self, other: &Vec<T>) -> bool {
        self.iter().eq(other.iter().copied())
    }
}
impl<T: Flag> FromIterator<T> for Flags<T> {
    fn from_iter<I: IntoIterator<Item = T>>(values: I) -> Self {
        let mut set = Flags::default();
        for v in values {
            set.insert(v);
        }
        set
    }
}
impl<T: Flag + std::fmt::Debug> std::fmt::Debug for Flags<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}
impl<T: Flag + Serialize> Serialize for Flags<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(self.iter())
    }
}
impl<'de, T: Flag + Deserialize<'de>> Deserialize<'de> for Flags<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Vec::<T>::deserialize(d)?.into_iter().collect())
    }
}

/// Why a process is never touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "reason", content = "detail")]
pub enum Protection {
    Ourselves,
    Ancestor,
    Init,
    /// One of the job's roots (the runner's worker, `ci-janitor run`), by identity.
    Root,
    /// An unattributed process named like a CI runner or agent, spared by
    /// `--kill-unattributed`.
    Runner,
    /// `--protect`, or (for an unattributed process, under `--kill-unattributed`) a shared
    /// system daemon's name.
    Daemon(String),
    /// The guard, or another process the caller named.
    Named,
    /// A ci-janitor guard: this job's or another's, recognised by identity (our own
    /// executable running `guard run`); an unattributed one is also spared by its name.
    Guard,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "class")]
pub enum Class {
    Protected {
        protection: Protection,
    },
    Ignored {
        pattern: String,
    },
    /// Carries another job's identity marker: it is that job's, whatever else holds
    /// (lineage, descent). Happens when one agent runs several jobs at once (act, Jenkins
    /// executors, GitLab `concurrent`), with `run` inside a job, and with a marker set on
    /// purpose (`JENKINS_NODE_COOKIE=dontKillMe`).
    OtherJob {
        marker: String,
    },
    /// A build-cache daemon on the shipped keep-list (verified executable and exact
    /// arguments): meant to outlive the job.
    Kept {
        daemon: String,
    },
    Job,
    Allowed {
        pattern: String,
    },
    Unattributed,
}

impl Class {
    /// Whether the sweep signals it.
    pub fn is_target(&self, policy: &Policy) -> bool {
        match self {
            Class::Job | Class::Allowed { .. } => true,
            Class::Unattributed => policy.kill_unattributed,
            Class::Protected { .. }
            | Class::Ignored { .. }
            | Class::OtherJob { .. }
            | Class::Kept { .. } => false,
        }
    }

    /// Whether it counts as a leak that fails the run.
    pub fn is_failing_leak(&self) -> bool {
        matches!(self, Class::Job)
    }

    pub fn name(&self) -> &'static str {
        match self {
            Class::Protected { .. } => "protected",
            Class::Ignored { .. } => "ignored",
            Class::OtherJob { .. } => "other-job",
            Class::Kept { .. } => "kept",
            Class::Job => "job",
            Class::Allowed { .. } => "allowed",
            Class::Unattributed => "unattributed",
        }
    }
}

/// The decision about one appeared process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub id: ProcessId,
    pub class: Class,
    /// The rules that matched, strongest first (empty unless job/allowed).
    pub evidence: Flags<Rule>,
    /// The marker variable behind [`Rule::RunMarker`] or [`Rule::CiMarker`].
    pub marker: Option<&'static str>,
    /// Hints for an unattributed process (empty otherwise).
    pub hints: Flags<Hint>,
}

/// Decisions for every process that appeared, in pid order.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub decisions: Vec<Decision>,
}

#[cfg(test)]
impl Plan {
    pub fn targets<'a>(&'a self, policy: &'a Policy) -> impl Iterator<Item = &'a Decision> {
        self.decisions
            .iter()
            .filter(move |d| d.class.is_target(policy))
    }

    pub fn get(&self, id: ProcessId) -> Option<&Decision> {
        self.decisions.iter().find(|d| d.id == id)
    }
}

/// Classifies every process in `appeared` (processes of `now`).
pub fn classify(now: &Snapshot, appeared: &[&Process], ctx: &Context, policy: &Policy) -> Plan {
    let by_pid: HashMap<i32, &Process> = now.processes.iter().map(|p| (p.id.pid, p)).collect();
    let ancestors = ancestors_of(ctx.me, &by_pid);
    let mut below_roots: HashSet<ProcessId> = HashSet::new();
    for &root in &ctx.roots {
        below_roots.extend(descendants_of(root, &now.processes));
    }
    let job_cgroup = ctx.cgroup.as_deref().filter(|c| *c != "/" && !c.is_empty());

    let mut decisions: Vec<Decision> = appeared
        .iter()
        .map(|p| {
            let belongs = p.markers.belongs_to(&ctx.markers);
            let class = if let Some(protection) = protection(p, ctx, &ancestors, policy) {
                Class::Protected { protection }
            } else if let Some(pat) = policy.ignore.iter().find(|pat| pat.matches(p)) {
                Class::Ignored {
                    pattern: pat.source.clone(),
                }
            } else if let Belongs::Theirs(marker) = &belongs {
                Class::OtherJob {
                    marker: marker.clone(),
                }
            } else if let Some(daemon) = ctx
                .verify_exe
                .filter(|_| !policy.no_default_protect)
                .and_then(|verify| kept(p, verify))
            {
                Class::Kept {
                    daemon: daemon.to_owned(),
                }
            } else {
                Class::Unattributed
            };
            let mut d = Decision {
                id: p.id,
                class,
                evidence: Flags::default(),
                marker: None,
                hints: Flags::default(),
            };
            if d.class != Class::Unattributed {
                return d;
            }
            if ctx
                .born_into_job
                .as_ref()
                .is_some_and(|l| l.contains(&p.id))
            {
                d.evidence.insert(Rule::GuardLineage);
            }
            if let Belongs::Ours(var) = belongs {
                d.evidence.insert(if var == "CI_JANITOR_RUN" {
                    Rule::RunMarker
                } else {
                    Rule::CiMarker
                });
                d.marker = Some(var);
            }
            if below_roots.contains(&p.id) {
                d.evidence.insert(Rule::Descendant);
            }
            d
        })
        .collect();

    // A process below a leaked job process is the job's too (a setsid daemon's children,
    // a respawner's new child), unless it is protected, ignored, kept or another job's.
    let mut children: HashMap<i32, Vec<usize>> = HashMap::new();
    for (i, p) in appeared.iter().enumerate() {
        children.entry(p.ppid).or_default().push(i);
    }
    let mut queue: Vec<usize> = (0..decisions.len())
        .filter(|&i| !decisions[i].evidence.is_empty())
        .collect();
    let mut seen: HashSet<usize> = queue.iter().copied().collect();
    while let Some(i) = queue.pop() {
        let pid = decisions[i].id.pid;
        for &c in children.get(&pid).map(Vec::as_slice).unwrap_or(&[]) {
            if decisions[c].class == Class::Unattributed && seen.insert(c) {
                decisions[c].evidence.insert(Rule::ChildOfJob);
                queue.push(c);
            }
        }
    }

    for (d, p) in decisions.iter_mut().zip(appeared) {
        if d.class != Class::Unattributed {
            continue;
        }
        if !d.evidence.is_empty() {
            d.class = match policy.allow.iter().find(|pat| pat.matches(p)) {
                Some(pat) => Class::Allowed {
                    pattern: pat.source.clone(),
                },
                None => Class::Job,
            };
            continue;
        }
        if ctx.session.is_some_and(|s| s == p.sid && s > 1) {
            d.hints.insert(Hint::Session);
        }
        if job_cgroup.is_some() && p.cgroup.as_deref() == job_cgroup {
            d.hints.insert(Hint::Cgroup);
        }
        // Names only ever spare, and only what has no evidence.
        if policy.kill_unattributed && !policy.no_default_protect {
            if let Some(protection) = spared_by_name(p) {
                d.class = Class::Protected { protection };
            }
        }
    }
    if policy.only_attributed {
        decisions.retain(|d| d.class != Class::Unattributed);
    }
    Plan { decisions }
}

fn protection(
    p: &Process,
    ctx: &Context,
    ancestors: &HashSet<ProcessId>,
    policy: &Policy,
) -> Option<Protection> {
    if Some(p.id) == ctx.me {
        return Some(Protection::Ourselves);
    }
    if ancestors.contains(&p.id) {
        return Some(Protection::Ancestor);
    }
    if p.id.pid == 1 {
        return Some(Protection::Init);
    }
    if ctx.roots.contains(&p.id) {
        return Some(Protection::Root);
    }
    if ctx.also_protected.contains(&p.id) {
        return Some(Protection::Named);
    }
    if ctx.own_exe.is_some() && p.exe == ctx.own_exe && runs_guard(p) {
        return Some(Protection::Guard);
    }
    if let Some(pat) = policy.protect.iter().find(|pat| pat.matches(p)) {
        return Some(Protection::Daemon(pat.source.clone()));
    }
    None
}

/// Its argv is `ci-janitor guard run ...`: the guard's hidden subcommand.
fn runs_guard(p: &Process) -> bool {
    p.argv.get(1) == Some(b"guard") && p.argv.get(2) == Some(b"run")
}

/// Names that spare an unattributed process from `--kill-unattributed`: CI runners and
/// agents, ci-janitor guards of other versions, and daemons shared by every job.
fn spared_by_name(p: &Process) -> Option<Protection> {
    let comm = p.comm.as_bytes();
    if matches!(
        comm,
        b"Runner.Listener" | b"Runner.Worker" | b"Agent.Listener" | b"Agent.Worker"
    ) {
        return Some(Protection::Runner);
    }
    let named_janitor =
        p.argv.first().is_some_and(|a| a.ends_with(b"ci-janitor")) || comm == b"ci-janitor";
    if named_janitor && runs_guard(p) {
        return Some(Protection::Guard);
    }
    for (name, prefix) in SPARED_DAEMONS {
        if comm == name.as_bytes() || (*prefix && comm.starts_with(name.as_bytes())) {
            return Some(Protection::Daemon((*name).to_owned()));
        }
    }
    None
}

/// System daemons shared by every job, spared by `--kill-unattributed` when nothing says
/// the job started them (`true`: a name prefix).
const SPARED_DAEMONS: &[(&str, bool)] = &[
    ("dockerd", false),
    ("containerd", true),
    ("sshd", false),
    ("systemd", true),
    ("buildkitd", false),
];

/// The shipped keep-list: build-cache daemons that outlive jobs on purpose, named for the
/// reports. `--no-default-protect` turns it off.
pub const KEEP_LIST: &[&str] = &[
    "sccache server (sccache, started with SCCACHE_START_SERVER)",
    "Gradle daemon (java org.gradle.launcher.daemon.bootstrap.GradleDaemon)",
    "Kotlin daemon (java org.jetbrains.kotlin.daemon.KotlinCompileDaemon)",
    "Bazel server (java -jar .../install/.../A-server.jar)",
];

/// Which program a keep-list entry runs, for [`Context::verify_exe`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepKind {
    /// `java` of a JDK or JRE (a `libjvm.so` beside it).
    Jvm,
    /// The `sccache` program.
    Sccache,
}

/// The keep-list entry `p` is, judged by its executable (the file `/proc/PID/exe` points
/// at, which a process cannot rename, verified on disk by `verify`) and exact arguments:
/// never by `comm`, never by a substring of an argument.
fn kept(p: &Process, verify: fn(KeepKind, &[u8]) -> bool) -> Option<&'static str> {
    let exe = p.exe.as_ref()?.as_bytes();
    let exe_name = file_name(exe);
    let arg = |i: usize| p.argv.get(i);
    let has_arg = |want: &[u8]| p.argv.iter().any(|a| a == want);
    if exe_name == b"sccache" && p.argv.len() == 1 && arg(0).map(file_name) == Some(b"sccache") {
        return verify(KeepKind::Sccache, exe).then_some(KEEP_LIST[0]);
    }
    if exe_name != b"java" {
        return None;
    }
    let entry = if has_arg(b"org.gradle.launcher.daemon.bootstrap.GradleDaemon") {
        KEEP_LIST[1]
    } else if has_arg(b"org.jetbrains.kotlin.daemon.KotlinCompileDaemon") {
        KEEP_LIST[2]
    } else if p.argv.iter().zip(p.argv.iter().skip(1)).any(|(flag, jar)| {
        flag == b"-jar"
            && file_name(jar) == b"A-server.jar"
            && String::from_utf8_lossy(jar).contains("/install/")
    }) {
        KEEP_LIST[3]
    } else {
        return None;
    };
    verify(KeepKind::Jvm, exe).then_some(entry)
}

fn file_name(path: &[u8]) -> &[u8] {
    path.rsplit(|&b| b == b'/').next().unwrap_or(path)
}

/// `me` and its ancestors' identities, by walking `ppid` through the snapshot.
fn ancestors_of(me: Option<ProcessId>, by_pid: &HashMap<i32, &Process>) -> HashSet<ProcessId> {
    let mut out = HashSet::new();
    let Some(me) = me else { return out };
    let mut pid = by_pid.get(&me.pid).map_or(0, |p| p.ppid);
    // Bounded: a ppid cycle cannot exist in a consistent snapshot, but a snapshot is read
    // over time, not at one instant.
    for _ in 0..by_pid.len() {
        let Some(p) = by_pid.get(&pid) else { break };
        if !out.insert(p.id) || p.ppid == pid {
            break;
        }
        pid = p.ppid;
    }
    out
}

/// Every process below `root` in the live tree (not `root` itself).
pub fn descendants_of(root: ProcessId, processes: &[Process]) -> HashSet<ProcessId> {
    let mut children: HashMap<i32, Vec<&Process>> = HashMap::new();
    for p in processes {
        children.entry(p.ppid).or_default().push(p);
    }
    let mut out = HashSet::new();
    if !processes.iter().any(|p| p.id == root) {
        return out;
    }
    let mut stack = vec![root.pid];
    while let Some(pid) = stack.pop() {
        for c in children.get(&pid).map(Vec::as_slice).unwrap_or(&[]) {
            if c.id.pid != pid && out.insert(c.id) {
                stack.push(c.id.pid);
            }
        }
    }
    out
}

/// A user pattern: a glob (`*`, `?`) on the command line (argv joined by spaces), or, with
/// a `comm:` or `exe:` prefix, on the command name or the executable path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    pub source: String,
    target: PatternTarget,
    glob: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PatternTarget {
    CommandLine,
    Comm,
    Exe,
}

impl Pattern {
    pub fn parse(source: &str) -> Result<Pattern, String> {
        let (target, glob) = if let Some(rest) = source.strip_prefix("comm:") {
            (PatternTarget::Comm, rest)
        } else if let Some(rest) = source.strip_prefix("exe:") {
            (PatternTarget::Exe, rest)
        } else {
            (PatternTarget::CommandLine, source)
        };
        if glob.trim().is_empty() {
            return Err(format!("pattern {source:?} is empty"));
        }
        if glob.chars().all(|c| c == '*' || c == '?') {
            return Err(format!(
                "pattern {source:?} matches every process; name what it should match"
            ));
        }
        Ok(Pattern {
            source: source.to_owned(),
            target,
            glob: glob.to_owned(),
        })
    }

    pub fn matches(&self, p: &Process) -> bool {
        match self.target {
            PatternTarget::CommandLine => glob_match(&self.glob, &p.command_line()),
            PatternTarget::Comm => glob_match(&self.glob, &p.comm.lossy()),
            PatternTarget::Exe => p
                .exe
                .as_ref()
                .is_some_and(|e| glob_match(&self.glob, &e.lossy())),
        }
    }
}

/// Glob matching with `*` (any run, including empty) and `?` (one character), iterative
/// with single-star backtracking: linear in practice, no recursion.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some((pi, ti));
            pi += 1;
        } else if let Some((sp, st)) = star {
            pi = sp + 1;
            ti = st + 1;
            star = Some((sp, st + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Markers;
    use crate::test_support::{proc_at, snapshot_of};

    fn pid(id: &ProcessId) -> i32 {
        id.pid
    }

    #[test]
    fn globs() {
        assert!(glob_match("uvicorn *", "uvicorn app:main --port 1"));
        assert!(glob_match(
            "*prefect.server*",
            "python -m uvicorn prefect.server.api"
        ));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "ac"));
        assert!(!glob_match("uvicorn", "uvicorn x"));
        assert!(glob_match("*", ""));
        assert!(glob_match("a*b*c", "a-b-b-c"));
        assert!(!glob_match("a*b*c", "a-b-b-d"));
    }

    #[test]
    fn patterns_refuse_match_all() {
        assert!(Pattern::parse("*").is_err());
        assert!(Pattern::parse("comm:**").is_err());
        assert!(Pattern::parse("").is_err());
        assert!(Pattern::parse("exe:").is_err());
        let p = Pattern::parse("comm:sleep").unwrap();
        let mut proc = proc_at(5, 1, 0);
        proc.comm = "sleep".into();
        assert!(p.matches(&proc));
    }

    fn tracking(id: &str) -> Markers {
        Markers {
            runner_tracking_id: Some(id.into()),
            ..Default::default()
        }
    }

    /// A job tree: the sweep (100) under a shell (90) under the runner worker (80, the
    /// root); a step shell (95) that leaked a server (96) and its worker (97); a daemon (98)
    /// that moved to its own session and carries the tracking id; an unrelated process (99);
    /// the daemon's child (101), which scrubbed its environment.
    fn scene() -> (Snapshot, Context) {
        let mut worker = proc_at(80, 1, 10);
        worker.comm = "Runner.Worker".into();
        let mut shell = proc_at(90, 80, 20);
        shell.sid = 80;
        let mut me = proc_at(100, 90, 30);
        me.sid = 80;
        let mut step = proc_at(95, 80, 40);
        step.sid = 80;
        let mut server = proc_at(96, 95, 41);
        server.sid = 80;
        let mut worker2 = proc_at(97, 96, 42);
        worker2.sid = 80;
        let mut daemon = proc_at(98, 1, 43);
        daemon.markers = tracking("github_1").into();
        let other = proc_at(99, 1, 44);
        let mut daemon_child = proc_at(101, 98, 45);
        daemon_child.sid = 98;
        let now = snapshot_of(
            vec![
                worker,
                shell,
                me,
                step,
                server,
                worker2,
                daemon,
                other,
                daemon_child,
            ],
            50,
        );
        let ctx = Context {
            me: Some(ProcessId {
                pid: 100,
                start_ticks: 30,
            }),
            markers: tracking("github_1"),
            roots: vec![ProcessId {
                pid: 80,
                start_ticks: 10,
            }],
            ..Default::default()
        };
        (now, ctx)
    }

    fn decide(now: &Snapshot, ctx: &Context, policy: &Policy) -> Plan {
        let appeared: Vec<&Process> = now.processes.iter().collect();
        classify(now, &appeared, ctx, policy)
    }

    fn class_of(plan: &Plan, p: i32) -> Class {
        plan.decisions
            .iter()
            .find(|d| d.id.pid == p)
            .unwrap()
            .class
            .clone()
    }

    #[test]
    fn job_tree_classes_and_evidence() {
        let (now, ctx) = scene();
        let plan = decide(&now, &ctx, &Policy::default());
        let class_of = |p: i32| {
            let d = plan.decisions.iter().find(|d| pid(&d.id) == p).unwrap();
            (d.class.name(), d.evidence.to_vec())
        };
        assert_eq!(class_of(80), ("protected", vec![]));
        assert_eq!(class_of(90).0, "protected");
        assert_eq!(class_of(100).0, "protected");
        assert_eq!(class_of(95), ("job", vec![Rule::Descendant]));
        assert_eq!(class_of(97), ("job", vec![Rule::Descendant]));
        assert_eq!(class_of(98), ("job", vec![Rule::CiMarker]));
        assert_eq!(class_of(101), ("job", vec![Rule::ChildOfJob]));
        assert_eq!(class_of(99), ("unattributed", vec![]));
        assert_eq!(
            plan.get(now.processes[6].id).unwrap().marker,
            Some("RUNNER_TRACKING_ID")
        );
        let targets: Vec<i32> = plan
            .targets(&Policy::default())
            .map(|d| pid(&d.id))
            .collect();
        assert_eq!(targets, vec![95, 96, 97, 98, 101]);
    }

    #[test]
    fn allow_ignore_protect_and_kill_unattributed() {
        let (now, ctx) = scene();
        let policy = Policy {
            allow: vec![Pattern::parse("p96 *").unwrap()],
            ignore: vec![Pattern::parse("p97*").unwrap()],
            protect: vec![Pattern::parse("comm:p98").unwrap()],
            kill_unattributed: true,
            ..Default::default()
        };
        let plan = decide(&now, &ctx, &policy);
        assert_eq!(
            class_of(&plan, 96),
            Class::Allowed {
                pattern: "p96 *".into()
            }
        );
        assert_eq!(
            class_of(&plan, 97),
            Class::Ignored {
                pattern: "p97*".into()
            }
        );
        assert!(matches!(class_of(&plan, 98), Class::Protected { .. }));
        // 101's only evidence came through 98, which is protected: not the job's.
        assert_eq!(class_of(&plan, 101), Class::Unattributed);
        assert!(class_of(&plan, 99).is_target(&policy));
        assert!(!class_of(&plan, 99).is_failing_leak());
    }

    #[test]
    fn a_name_never_protects_a_process_with_job_evidence() {
        // Regression: leaks carrying the job's marker were protected when they called
        // themselves sshd, dockerd, systemd-*, Runner.Worker, or had an argument
        // containing GradleDaemon; the job's ssh-agent and gpg-agent survived it.
        let (mut now, ctx) = scene();
        let names = [
            "sshd",
            "dockerd",
            "systemd-resolved",
            "Runner.Worker",
            "ssh-agent",
        ];
        for (i, name) in names.iter().enumerate() {
            let mut p = proc_at(200 + i as i32, 1, 60);
            p.comm = (*name).into();
            p.argv = [format!("/tmp/copy/{name}")].into_iter().collect();
            p.exe = Some(format!("/tmp/copy/{name}").as_str().into());
            p.markers = tracking("github_1").into();
            now.processes.push(p);
        }
        let mut gradle_like = proc_at(210, 1, 60);
        gradle_like.argv = ["python", "fake-GradleDaemon-x"].into();
        gradle_like.exe = Some("/usr/bin/python3".into());
        gradle_like.markers = tracking("github_1").into();
        now.processes.push(gradle_like);
        let plan = decide(&now, &ctx, &Policy::default());
        for p in (200..205).chain([210]) {
            assert_eq!(class_of(&plan, p), Class::Job, "pid {p}");
        }
    }

    #[test]
    fn the_keep_list_needs_the_real_executable_and_exact_arguments() {
        let (mut now, ctx) = scene();
        let daemon = |pid: i32, exe: &str, argv: &[&str]| {
            let mut p = proc_at(pid, 96, 60);
            p.exe = Some(exe.into());
            p.argv = argv.iter().collect();
            p.comm = "java".into();
            p
        };
        let gradle = "org.gradle.launcher.daemon.bootstrap.GradleDaemon";
        now.processes.extend([
            daemon(
                300,
                "/usr/lib/jvm/java-17/bin/java",
                &["java", "-Xmx1g", gradle, "8.5"],
            ),
            daemon(301, "/tmp/bin/java", &["java", gradle]), // not a JVM on disk
            daemon(
                302,
                "/usr/lib/jvm/java-17/bin/java",
                &["java", "x.GradleDaemonish"],
            ),
            daemon(303, "/usr/local/bin/sccache", &["sccache"]),
            daemon(304, "/tmp/sccache", &["/tmp/sccache", "--port", "1"]),
            daemon(
                305,
                "/opt/jdk/bin/java",
                &[
                    "bazel(ws)",
                    "-jar",
                    "/root/.cache/bazel/install/abc/A-server.jar",
                ],
            ),
        ]);
        // The test's stand-in for the check on disk: JVMs live under /usr/lib/jvm or /opt.
        fn verify(kind: KeepKind, exe: &[u8]) -> bool {
            match kind {
                KeepKind::Jvm => exe.starts_with(b"/usr/lib/jvm/") || exe.starts_with(b"/opt/"),
                KeepKind::Sccache => exe == b"/usr/local/bin/sccache",
            }
        }
        let mut ctx = ctx;
        let plan = decide(&now, &ctx, &Policy::default());
        assert_eq!(
            class_of(&plan, 300),
            Class::Job,
            "nothing verified, nothing kept"
        );
        ctx.verify_exe = Some(verify);
        let plan = decide(&now, &ctx, &Policy::default());
        assert!(matches!(class_of(&plan, 300), Class::Kept { .. }));
        assert!(matches!(class_of(&plan, 303), Class::Kept { .. }));
        assert!(matches!(class_of(&plan, 305), Class::Kept { .. }));
        // Not a JVM's java, a substring, extra arguments: the job's, killed.
        for p in [301, 302, 304] {
            assert_eq!(class_of(&plan, p), Class::Job, "pid {p}");
        }
        let off = Policy {
            no_default_protect: true,
            ..Default::default()
        };
        assert_eq!(class_of(&decide(&now, &ctx, &off), 300), Class::Job);
    }

    #[test]
    fn session_and_cgroup_are_hints_never_evidence() {
        // Regression: concurrent jobs on one agent share a session or a service cgroup;
        // job A's sweep killed job B's test server through them.
        let mut a = proc_at(10, 1, 0);
        a.sid = 7;
        let mut b = proc_at(11, 1, 0);
        b.cgroup = Some("/system.slice/agent.service".into());
        let mut c = proc_at(12, 1, 0);
        c.cgroup = Some("/".into());
        let now = snapshot_of(vec![a, b, c], 0);
        let ctx = Context {
            session: Some(7),
            cgroup: Some("/system.slice/agent.service".into()),
            ..Default::default()
        };
        let policy = Policy::default();
        let plan = decide(&now, &ctx, &policy);
        assert!(plan
            .decisions
            .iter()
            .all(|d| d.class == Class::Unattributed));
        assert!(plan.decisions.iter().all(|d| d.evidence.is_empty()));
        assert_eq!(plan.decisions[0].hints, vec![Hint::Session]);
        assert_eq!(plan.decisions[1].hints, vec![Hint::Cgroup]);
        assert!(
            plan.decisions[2].hints.is_empty(),
            "the root cgroup says nothing"
        );
        assert_eq!(plan.targets(&policy).count(), 0);
    }

    #[test]
    fn another_jobs_marker_beats_lineage_and_descent() {
        // act runs two jobs in one process: both descend from it, each marks its own.
        let (mut now, mut ctx) = scene();
        ctx.markers.ci_janitor_run = Some("job-a".into());
        now.processes[4]
            .markers
            .set("CI_JANITOR_RUN", "job-b".into()); // 96: other job
        now.processes[5]
            .markers
            .set("CI_JANITOR_RUN", "job-b:job-a".into()); // 97: nested
        now.processes[3].markers = tracking("github_2").into(); // 95: other runner job
        let mut cookie = proc_at(120, 95, 60);
        cookie
            .markers
            .set("JENKINS_NODE_COOKIE", "dontKillMe".into());
        now.processes.push(cookie);
        ctx.born_into_job = Some(std::sync::Arc::new([now.processes[4].id].into()));
        let policy = Policy {
            kill_unattributed: true,
            ..Default::default()
        };
        let plan = decide(&now, &ctx, &policy);
        let get = |p: i32| {
            plan.decisions
                .iter()
                .find(|d| d.id.pid == p)
                .unwrap()
                .clone()
        };
        assert_eq!(
            get(96).class,
            Class::OtherJob {
                marker: "CI_JANITOR_RUN=job-b".into()
            }
        );
        assert!(matches!(get(95).class, Class::OtherJob { .. }));
        assert_eq!(
            get(120).class,
            Class::OtherJob {
                marker: "JENKINS_NODE_COOKIE=dontKillMe".into()
            }
        );
        assert!(
            !get(96).class.is_target(&policy),
            "never killed, even with kill-unattributed"
        );
        // A nested `run` chain that holds our marker is ours.
        assert_eq!(get(97).class, Class::Job);
        assert_eq!(get(97).evidence, vec![Rule::RunMarker, Rule::Descendant]);
    }

    #[test]
    fn marker_chains() {
        let m = |chain: &str| Markers {
            ci_janitor_run: Some(chain.into()),
            ..Default::default()
        };
        // The outer job sees its nested run's processes as its own...
        assert_eq!(
            m("a:b").belongs_to(&m("a")),
            Belongs::Ours("CI_JANITOR_RUN")
        );
        // ...the nested run does not see the outer job's as its own.
        assert!(matches!(m("a").belongs_to(&m("a:b")), Belongs::Theirs(_)));
        assert_eq!(
            m("a:b:c").belongs_to(&m("a:b")),
            Belongs::Ours("CI_JANITOR_RUN")
        );
        // A kind the job lacks, and none of the job's: another job's.
        let gitlab = Markers {
            ci_job_id: Some("7".into()),
            ..Default::default()
        };
        assert!(matches!(gitlab.belongs_to(&m("a")), Belongs::Theirs(_)));
        let mut both = gitlab.clone();
        both.ci_janitor_run = Some("a".into());
        assert_eq!(both.belongs_to(&m("a")), Belongs::Ours("CI_JANITOR_RUN"));
        assert_eq!(Markers::default().belongs_to(&m("a")), Belongs::Unmarked);
    }

    #[test]
    fn guard_lineage_is_the_strongest_evidence() {
        let (now, mut ctx) = scene();
        ctx.born_into_job = Some(std::sync::Arc::new(
            [
                now.processes[6].id, // 98: also carries the tracking id
                now.processes[7].id, // 99: no other evidence at all
            ]
            .into(),
        ));
        let plan = decide(&now, &ctx, &Policy::default());
        let get = |p: i32| plan.decisions.iter().find(|d| d.id.pid == p).unwrap();
        assert_eq!(get(98).evidence, vec![Rule::GuardLineage, Rule::CiMarker]);
        assert_eq!(get(99).class, Class::Job);
        assert_eq!(get(99).evidence, vec![Rule::GuardLineage]);
        // Lineage never overrides protection: the sweep's ancestors stay protected.
        ctx.born_into_job = Some(std::sync::Arc::new([now.processes[1].id].into()));
        let plan = decide(&now, &ctx, &Policy::default());
        assert_eq!(
            plan.get(now.processes[1].id).unwrap().class.name(),
            "protected"
        );
    }

    #[test]
    fn guards_are_recognised_by_identity() {
        // Regression: under act two jobs run in one process; one job's sweep saw the other
        // job's guard born below the shared root and killed it.
        let (mut now, mut ctx) = scene();
        ctx.own_exe = Some("/opt/ci-janitor".into());
        now.processes[4].exe = Some("/opt/ci-janitor".into());
        now.processes[4].argv = [
            "/opt/ci-janitor",
            "guard",
            "run",
            "--state",
            "/tmp/other/state.json",
        ]
        .into();
        let plan = decide(&now, &ctx, &Policy::default());
        assert_eq!(
            plan.get(now.processes[4].id).unwrap().class,
            Class::Protected {
                protection: Protection::Guard
            }
        );
        // A leak that only calls itself a guard is the job's.
        now.processes[4].exe = Some("/usr/bin/python3".into());
        let plan = decide(&now, &ctx, &Policy::default());
        assert_eq!(plan.get(now.processes[4].id).unwrap().class, Class::Job);
        // Only the guard's own subcommand: `ci-janitor run -- ...` is not protected.
        now.processes[4].exe = Some("/opt/ci-janitor".into());
        now.processes[4].argv = ["ci-janitor", "run", "--", "x"].into();
        let plan = decide(&now, &ctx, &Policy::default());
        assert_eq!(plan.get(now.processes[4].id).unwrap().class, Class::Job);
    }

    #[test]
    fn names_only_spare_unattributed_processes_from_kill_unattributed() {
        let (mut now, ctx) = scene();
        now.processes[7].comm = "Runner.Worker".into(); // 99: another runner's worker
        let mut guard = proc_at(130, 1, 60);
        guard.argv = ["/x/ci-janitor", "guard", "run"].into();
        let mut dockerd = proc_at(131, 1, 60);
        dockerd.comm = "dockerd".into();
        now.processes.extend([guard, dockerd]);
        let policy = Policy {
            kill_unattributed: true,
            ..Default::default()
        };
        let plan = decide(&now, &ctx, &policy);
        for p in [99, 130, 131] {
            assert!(matches!(class_of(&plan, p), Class::Protected { .. }), "{p}");
        }
        // Without --kill-unattributed nothing changes: they stay unattributed, reported.
        let plan = decide(&now, &ctx, &Policy::default());
        assert_eq!(class_of(&plan, 99), Class::Unattributed);
    }

    #[test]
    fn no_context_means_nothing_is_the_jobs() {
        // Missing context (no markers, no root, no session) never widens the kill.
        let (now, _) = scene();
        let plan = decide(&now, &Context::default(), &Policy::default());
        assert_eq!(plan.targets(&Policy::default()).count(), 0);
    }

    /// A set of rules is written as the sorted list a `Vec` was, reads back from one in
    /// any order, and holds each rule once.
    #[test]
    fn a_set_of_rules_is_the_list_it_replaced() {
        let mut set = Flags::default();
        for r in [Rule::ChildOfJob, Rule::GuardLineage, Rule::ChildOfJob] {
            set.insert(r);
        }
        assert_eq!(set, vec![Rule::GuardLineage, Rule::ChildOfJob]);
        let mut list = vec![Rule::ChildOfJob, Rule::GuardLineage];
        list.sort();
        assert_eq!(
            serde_json::to_string(&set).unwrap(),
            serde_json::to_string(&list).unwrap()
        );
        let back: Flags<Rule> =
            serde_json::from_str(r#"["child-of-job", "guard-lineage", "child-of-job"]"#).unwrap();
        assert_eq!(back, set);
        assert!(serde_json::from_str::<Flags<Rule>>(r#"["no-such-rule"]"#).is_err());
        assert!(Flags::<Hint>::default().is_empty());
        assert_eq!(format!("{set:?}"), "[GuardLineage, ChildOfJob]");
    }
}
