//! Classification: for every process that appeared since the baseline, decide whether it is
//! the job's (and so killed), and keep the evidence. Pure: plain data in, a [`Plan`] out.
//!
//! The rules, in the order they are applied:
//!
//! 1. **protected** — ourselves, our ancestors, pid 1, the runner (`Runner.Listener`,
//!    `Runner.Worker`) and a shipped list of shared daemons (dockerd, sshd, ...). Never
//!    touched, whatever else matches.
//! 2. **ignored** — matches an `--ignore` pattern. Never touched.
//! 3. **job** — there is evidence the job started it, strongest first: the guard saw it
//!    born into the job (its journal); the `run` marker or
//!    descent from `ci-janitor run`; this job's `RUNNER_TRACKING_ID`; the job's cgroup;
//!    live descent from the job's root process; the sweep's own session; descent from a
//!    process already found to be the job's. Killed; fails the run unless it matches an
//!    `--allow` pattern (then **allowed**: killed, not failing).
//! 4. **unattributed** — appeared during the job, no evidence. Reported; signalled only
//!    with `--kill-unattributed`.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

use crate::model::{Process, ProcessId, Snapshot};

/// What the sweep knows about itself and the job, gathered by the caller from the
/// environment and `/proc`.
#[derive(Debug, Clone, Default)]
pub struct Context {
    /// The sweeping process.
    pub me: Option<ProcessId>,
    /// Other processes that must never be touched (the guard, the process that started us
    /// for `run`).
    pub also_protected: Vec<ProcessId>,
    /// `RUNNER_TRACKING_ID` of this job (from our own environment).
    pub tracking_id: Option<String>,
    /// `CI_JANITOR_RUN` value given to the command under `ci-janitor run`.
    pub run_marker: Option<String>,
    /// The process whose descendants are the job (`ci-janitor run` itself, the runner's
    /// worker, or the shell that ran `snapshot` and `sweep`).
    pub job_root: Option<ProcessId>,
    /// The job's cgroup; ignored when it is `/` (everything is there).
    pub job_cgroup: Option<String>,
    /// The job's session (our own): a process that appeared in it is the job's.
    pub job_session: Option<i32>,
    /// The guard's journal: who was born into the job.
    pub lineage: Option<std::sync::Arc<crate::guard::lineage::Lineage>>,
}

/// Patterns and switches from the command line.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub allow: Vec<Pattern>,
    pub ignore: Vec<Pattern>,
    pub protect: Vec<Pattern>,
    /// Leave out the shipped list of shared daemons.
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
    /// The guard saw it born below the job's root (strongest: it survives reparenting and
    /// a scrubbed environment).
    GuardLineage,
    /// It carries the `CI_JANITOR_RUN` marker ci-janitor gave this job (`run`'s command, or
    /// every step after the Action's first step, through `$GITHUB_ENV`).
    RunMarker,
    /// It carries this job's `RUNNER_TRACKING_ID`.
    TrackingId,
    /// It is in the job's cgroup.
    Cgroup,
    /// It descends (through live parents) from the job's root process.
    Descendant,
    /// It is in the sweep's own session.
    Session,
    /// Its parent (or an earlier ancestor) is a process found to be the job's.
    ChildOfJob,
}

impl Rule {
    pub fn describe(self) -> &'static str {
        match self {
            Rule::GuardLineage => "was born into the job (the guard's lineage)",
            Rule::RunMarker => "carries this job's ci-janitor marker (CI_JANITOR_RUN)",
            Rule::TrackingId => "carries this job's RUNNER_TRACKING_ID",
            Rule::Cgroup => "is in the job's cgroup",
            Rule::Descendant => "descends from the job's root process",
            Rule::Session => "is in the sweep's session",
            Rule::ChildOfJob => "descends from a leaked job process",
        }
    }
}

/// Why a process is never touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "reason", content = "detail")]
pub enum Protection {
    Ourselves,
    Ancestor,
    Init,
    Runner,
    /// The shipped list of shared daemons, or `--protect`.
    Daemon(String),
    /// The guard, or another process the caller named.
    Named,
    /// A ci-janitor guard (`ci-janitor guard run`), this job's or another's: it watches a
    /// job and stops when that job's sweep stops it, so it is never anyone's leak.
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
    /// Carries another job's marker (a different RUNNER_TRACKING_ID or CI_JANITOR_RUN):
    /// it is that job's, whatever weaker rules (descent, session, cgroup) say. Happens when
    /// one runner process runs several jobs at once (act), or with `run` inside a job.
    OtherJob {
        marker: String,
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
            Class::Protected { .. } | Class::Ignored { .. } | Class::OtherJob { .. } => false,
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
    pub evidence: Vec<Rule>,
}

/// Decisions for every process that appeared, in pid order.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub decisions: Vec<Decision>,
}

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
    let job_root_descendants = ctx
        .job_root
        .map(|root| descendants_of(root, &now.processes))
        .unwrap_or_default();
    let weak_rules = ctx.tracking_id.is_none() && ctx.run_marker.is_none();
    let appeared_pids: HashSet<i32> = appeared.iter().map(|p| p.id.pid).collect();
    let root_pid = ctx.job_root.map(|r| r.pid);
    let born_of_a_bystander = |p: &Process| {
        p.ppid > 1
            && Some(p.ppid) != root_pid
            && !appeared_pids.contains(&p.ppid)
            && by_pid.contains_key(&p.ppid)
    };
    let job_cgroup = ctx
        .job_cgroup
        .as_deref()
        .filter(|c| *c != "/" && !c.is_empty());

    let mut decisions: Vec<Decision> = appeared
        .iter()
        .map(|p| {
            let class = if let Some(protection) = protection(p, ctx, &ancestors, policy) {
                Class::Protected { protection }
            } else if let Some(pat) = policy.ignore.iter().find(|pat| pat.matches(p)) {
                Class::Ignored {
                    pattern: pat.source.clone(),
                }
            } else if let Some(marker) = foreign_marker(p, ctx) {
                Class::OtherJob { marker }
            } else {
                Class::Unattributed
            };
            let mut evidence = Vec::new();
            if class == Class::Unattributed {
                let m = &p.markers;
                if ctx.lineage.as_ref().is_some_and(|l| l.in_job(p.id)) {
                    evidence.push(Rule::GuardLineage);
                }
                if let (Some(ours), Some(theirs)) = (&ctx.run_marker, &m.ci_janitor_run) {
                    if marker_chain_has(theirs, ours) {
                        evidence.push(Rule::RunMarker);
                    }
                }
                if ctx.tracking_id.is_some() && m.runner_tracking_id == ctx.tracking_id {
                    evidence.push(Rule::TrackingId);
                }
                if job_root_descendants.contains(&p.id) {
                    evidence.push(Rule::Descendant);
                }
                // The weak rules (cgroup, session) say only "near the job". They count when
                // the job has no markers at all (a laptop, another CI), and never for a
                // process whose live parent existed before the job and is not its root: a
                // build server or daemon that was already running spawned it.
                if weak_rules && !born_of_a_bystander(p) {
                    if job_cgroup.is_some() && p.cgroup.as_deref() == job_cgroup {
                        evidence.push(Rule::Cgroup);
                    }
                    if ctx.job_session.is_some_and(|s| s == p.sid) {
                        evidence.push(Rule::Session);
                    }
                }
            }
            Decision {
                id: p.id,
                class,
                evidence,
            }
        })
        .collect();

    // A process below a leaked job process is the job's too (a setsid daemon's children,
    // a respawner's new child), unless it is protected or ignored.
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
                if !decisions[c].evidence.contains(&Rule::ChildOfJob) {
                    decisions[c].evidence.push(Rule::ChildOfJob);
                }
                queue.push(c);
            }
        }
    }

    for (d, p) in decisions.iter_mut().zip(appeared) {
        if d.class == Class::Unattributed && !d.evidence.is_empty() {
            d.evidence.sort();
            d.class = match policy.allow.iter().find(|pat| pat.matches(p)) {
                Some(pat) => Class::Allowed {
                    pattern: pat.source.clone(),
                },
                None => Class::Job,
            };
        }
    }
    if policy.only_attributed {
        decisions.retain(|d| d.class != Class::Unattributed);
    }
    Plan { decisions }
}

/// `CI_JANITOR_RUN` is a `:`-separated chain: a `run` inside a job marked by the Action
/// appends its own marker, so its processes stay attributable to both.
pub fn marker_chain_has(chain: &str, marker: &str) -> bool {
    chain.split(':').any(|m| m == marker)
}

/// The other job's marker a process carries, when it carries one and it is not ours.
fn foreign_marker(p: &Process, ctx: &Context) -> Option<String> {
    let m = &p.markers;
    if let (Some(ours), Some(theirs)) = (&ctx.tracking_id, &m.runner_tracking_id) {
        if ours != theirs {
            return Some(format!("RUNNER_TRACKING_ID={theirs}"));
        }
    }
    if let (Some(ours), Some(theirs)) = (&ctx.run_marker, &m.ci_janitor_run) {
        if !marker_chain_has(theirs, ours) {
            return Some(format!("CI_JANITOR_RUN={theirs}"));
        }
    }
    None
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
    if ctx.also_protected.contains(&p.id) {
        return Some(Protection::Named);
    }
    let comm = p.comm.as_bytes();
    if comm == b"Runner.Listener" || comm == b"Runner.Worker" {
        return Some(Protection::Runner);
    }
    if is_guard(p) {
        return Some(Protection::Guard);
    }
    if let Some(pat) = policy.protect.iter().find(|pat| pat.matches(p)) {
        return Some(Protection::Daemon(pat.source.clone()));
    }
    if !policy.no_default_protect {
        if let Some(name) = shared_daemon(p) {
            return Some(Protection::Daemon(name.to_owned()));
        }
    }
    None
}

/// `ci-janitor guard run ...`: the guard's hidden subcommand, as its argv shows it.
fn is_guard(p: &Process) -> bool {
    let named_janitor = p
        .argv
        .first()
        .is_some_and(|a| a.as_bytes().ends_with(b"ci-janitor"))
        || p.comm.as_bytes() == b"ci-janitor";
    named_janitor
        && p.argv.get(1).is_some_and(|a| a.as_bytes() == b"guard")
        && p.argv.get(2).is_some_and(|a| a.as_bytes() == b"run")
}

/// The shipped list of daemons that outlive jobs on purpose and are shared between them.
/// `--no-default-protect` turns it off; `--protect` adds to it.
pub const SHARED_DAEMONS: &[&str] = &[
    "dockerd",
    "containerd",
    "containerd-shim*",
    "sshd",
    "systemd",
    "systemd-*",
    "ssh-agent",
    "gpg-agent",
    "buildkitd",
    "sccache",
    "mspdbsrv",
    "Gradle daemon (GradleDaemon)",
    "Kotlin daemon (KotlinCompileDaemon)",
    "Bazel server (A-server.jar)",
];

fn shared_daemon(p: &Process) -> Option<&'static str> {
    let comm = p.comm.as_bytes();
    let by_comm: &[(&[u8], bool, &'static str)] = &[
        (b"dockerd", false, "dockerd"),
        (b"containerd", false, "containerd"),
        (b"containerd-shim", true, "containerd-shim*"),
        (b"sshd", false, "sshd"),
        (b"systemd", false, "systemd"),
        (b"systemd-", true, "systemd-*"),
        (b"ssh-agent", false, "ssh-agent"),
        (b"gpg-agent", false, "gpg-agent"),
        (b"buildkitd", false, "buildkitd"),
        (b"sccache", false, "sccache"),
        (b"mspdbsrv", false, "mspdbsrv"),
    ];
    for (name, prefix, label) in by_comm {
        if (*prefix && comm.starts_with(name)) || comm == *name {
            return Some(label);
        }
    }
    let has_arg = |needle: &[u8]| {
        p.argv
            .iter()
            .any(|a| a.as_bytes().windows(needle.len()).any(|w| w == needle))
    };
    if has_arg(b"GradleDaemon") {
        return Some("Gradle daemon (GradleDaemon)");
    }
    if has_arg(b"KotlinCompileDaemon") {
        return Some("Kotlin daemon (KotlinCompileDaemon)");
    }
    if has_arg(b"A-server.jar") {
        return Some("Bazel server (A-server.jar)");
    }
    None
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

    /// A job tree: the sweep (100) under a shell (90) under the runner worker (80); a step
    /// shell (95) that leaked a server (96) and its worker (97); a daemon (98) that moved to
    /// its own session and carries the tracking id; an unrelated process (99).
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
        daemon.markers = Markers {
            runner_tracking_id: Some("github_1".into()),
            ..Default::default()
        };
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
            tracking_id: Some("github_1".into()),
            job_root: Some(ProcessId {
                pid: 80,
                start_ticks: 10,
            }),
            job_session: None,
            ..Default::default()
        };
        (now, ctx)
    }

    #[test]
    fn job_tree_classes_and_evidence() {
        let (now, ctx) = scene();
        let appeared: Vec<&Process> = now.processes.iter().collect();
        let plan = classify(&now, &appeared, &ctx, &Policy::default());
        let class_of = |p: i32| {
            let d = plan.decisions.iter().find(|d| pid(&d.id) == p).unwrap();
            (d.class.name(), d.evidence.clone())
        };
        assert_eq!(class_of(80).0, "protected");
        assert_eq!(class_of(90).0, "protected");
        assert_eq!(class_of(100).0, "protected");
        assert_eq!(class_of(95), ("job", vec![Rule::Descendant]));
        assert_eq!(class_of(97), ("job", vec![Rule::Descendant]));
        assert_eq!(class_of(98), ("job", vec![Rule::TrackingId]));
        assert_eq!(class_of(101), ("job", vec![Rule::ChildOfJob]));
        assert_eq!(class_of(99), ("unattributed", vec![]));
        let targets: Vec<i32> = plan
            .targets(&Policy::default())
            .map(|d| pid(&d.id))
            .collect();
        assert_eq!(targets, vec![95, 96, 97, 98, 101]);
    }

    #[test]
    fn allow_ignore_protect_and_kill_unattributed() {
        let (now, ctx) = scene();
        let appeared: Vec<&Process> = now.processes.iter().collect();
        let policy = Policy {
            allow: vec![Pattern::parse("p96 *").unwrap()],
            ignore: vec![Pattern::parse("p97*").unwrap()],
            protect: vec![Pattern::parse("comm:p98").unwrap()],
            kill_unattributed: true,
            ..Default::default()
        };
        let plan = classify(&now, &appeared, &ctx, &policy);
        let class = |p: i32| {
            plan.decisions
                .iter()
                .find(|d| pid(&d.id) == p)
                .unwrap()
                .class
                .clone()
        };
        assert_eq!(
            class(96),
            Class::Allowed {
                pattern: "p96 *".into()
            }
        );
        assert_eq!(
            class(97),
            Class::Ignored {
                pattern: "p97*".into()
            }
        );
        assert!(matches!(class(98), Class::Protected { .. }));
        // 101's only evidence came through 98, which is protected: not the job's.
        assert_eq!(class(101), Class::Unattributed);
        assert!(class(99).is_target(&policy));
        assert!(!class(99).is_failing_leak());
    }

    #[test]
    fn shared_daemons_are_protected_unless_turned_off() {
        let (mut now, ctx) = scene();
        now.processes[4].comm = "containerd-shim-runc-v2".into();
        now.processes[5].argv = vec![
            "java".into(),
            "org.gradle.launcher.daemon.bootstrap.GradleDaemon".into(),
        ];
        let appeared: Vec<&Process> = now.processes.iter().collect();
        let plan = classify(&now, &appeared, &ctx, &Policy::default());
        let get = |p: i32| {
            plan.decisions
                .iter()
                .find(|d| d.id.pid == p)
                .unwrap()
                .class
                .clone()
        };
        assert_eq!(
            get(96),
            Class::Protected {
                protection: Protection::Daemon("containerd-shim*".into())
            }
        );
        assert!(matches!(get(97), Class::Protected { .. }));
        let off = Policy {
            no_default_protect: true,
            ..Default::default()
        };
        let plan = classify(&now, &appeared, &ctx, &off);
        assert_eq!(plan.get(now.processes[4].id).unwrap().class, Class::Job);
    }

    #[test]
    fn session_and_cgroup_rules() {
        let mut a = proc_at(10, 1, 0);
        a.sid = 7;
        let mut b = proc_at(11, 1, 0);
        b.cgroup = Some("/user.slice/session-3.scope".into());
        let mut c = proc_at(12, 1, 0);
        c.cgroup = Some("/".into());
        let now = snapshot_of(vec![a, b, c], 0);
        let appeared: Vec<&Process> = now.processes.iter().collect();
        let ctx = Context {
            job_session: Some(7),
            job_cgroup: Some("/user.slice/session-3.scope".into()),
            ..Default::default()
        };
        let plan = classify(&now, &appeared, &ctx, &Policy::default());
        assert_eq!(plan.decisions[0].evidence, vec![Rule::Session]);
        assert_eq!(plan.decisions[1].evidence, vec![Rule::Cgroup]);
        assert!(plan.decisions[2].evidence.is_empty());
        // The root cgroup holds everything: it is never evidence.
        let ctx = Context {
            job_cgroup: Some("/".into()),
            ..Default::default()
        };
        let plan = classify(&now, &appeared, &ctx, &Policy::default());
        assert!(plan.decisions[2].evidence.is_empty());
    }

    #[test]
    fn another_jobs_marker_beats_weaker_rules() {
        // act runs two jobs in one process: both descend from it, each marks its own.
        let (mut now, mut ctx) = scene();
        ctx.run_marker = Some("job-a".into());
        now.processes[4].markers.ci_janitor_run = Some("job-b".into()); // 96: other job
        now.processes[5].markers.ci_janitor_run = Some("job-b:job-a".into()); // 97: nested
        now.processes[3].markers.runner_tracking_id = Some("github_2".into()); // 95: other runner job
        let appeared: Vec<&Process> = now.processes.iter().collect();
        let policy = Policy {
            kill_unattributed: true,
            ..Default::default()
        };
        let plan = classify(&now, &appeared, &ctx, &policy);
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
        assert!(
            !get(96).class.is_target(&policy),
            "never killed, even with kill-unattributed"
        );
        // A nested `run` chain that includes our marker is ours.
        assert_eq!(get(97).class, Class::Job);
        assert_eq!(get(97).evidence, vec![Rule::RunMarker, Rule::Descendant]);
    }

    #[test]
    fn guard_lineage_is_the_strongest_evidence() {
        let (now, mut ctx) = scene();
        let lineage = crate::guard::lineage::Lineage::with_job(&[
            now.processes[6].id, // 98: also carries the tracking id
            now.processes[7].id, // 99: no other evidence at all
        ]);
        ctx.lineage = Some(std::sync::Arc::new(lineage));
        let appeared: Vec<&Process> = now.processes.iter().collect();
        let plan = classify(&now, &appeared, &ctx, &Policy::default());
        let get = |p: i32| plan.decisions.iter().find(|d| d.id.pid == p).unwrap();
        assert_eq!(get(98).evidence, vec![Rule::GuardLineage, Rule::TrackingId]);
        assert_eq!(get(99).class, Class::Job);
        assert_eq!(get(99).evidence, vec![Rule::GuardLineage]);
        // Lineage never overrides protection: the sweep's ancestors stay protected.
        let ancestors = crate::guard::lineage::Lineage::with_job(&[now.processes[1].id]);
        ctx.lineage = Some(std::sync::Arc::new(ancestors));
        let plan = classify(&now, &appeared, &ctx, &Policy::default());
        assert_eq!(
            plan.get(now.processes[1].id).unwrap().class.name(),
            "protected"
        );
    }

    #[test]
    fn every_guard_is_protected() {
        // Regression: under act two jobs run in one process; one job's sweep saw the other
        // job's guard born below the shared root and killed it.
        let (mut now, ctx) = scene();
        now.processes[4].argv = vec![
            "/opt/ci-janitor".into(),
            "guard".into(),
            "run".into(),
            "--state".into(),
            "/tmp/other/state.json".into(),
        ];
        let appeared: Vec<&Process> = now.processes.iter().collect();
        let plan = classify(&now, &appeared, &ctx, &Policy::default());
        assert_eq!(
            plan.get(now.processes[4].id).unwrap().class,
            Class::Protected {
                protection: Protection::Guard
            }
        );
        // Only the guard's own subcommand: `ci-janitor run -- ...` is not protected.
        now.processes[4].argv = vec!["ci-janitor".into(), "run".into(), "--".into(), "x".into()];
        let appeared: Vec<&Process> = now.processes.iter().collect();
        let plan = classify(&now, &appeared, &ctx, &Policy::default());
        assert_eq!(plan.get(now.processes[4].id).unwrap().class, Class::Job);
    }

    #[test]
    fn weak_rules_need_a_job_without_markers_and_a_parent_of_the_job() {
        // Regression: a sweep in a shared terminal session killed a `rustc` that a build
        // started before the snapshot (`cargo`, alive) spawned during the job: same session.
        let mut cargo = proc_at(50, 1, 1); // in the baseline: not in `appeared`
        cargo.sid = 7;
        let mut rustc = proc_at(51, 50, 60);
        rustc.sid = 7;
        let mut leak = proc_at(52, 1, 61); // an orphan in the session: init adopted it
        leak.sid = 7;
        let now = snapshot_of(vec![cargo, rustc, leak], 0);
        let appeared: Vec<&Process> = now.processes[1..].iter().collect();
        let ctx = Context {
            job_session: Some(7),
            ..Default::default()
        };
        let plan = classify(&now, &appeared, &ctx, &Policy::default());
        assert_eq!(
            plan.decisions[0].class,
            Class::Unattributed,
            "rustc is the build's"
        );
        assert_eq!(plan.decisions[1].evidence, vec![Rule::Session]);
        // With job markers known, the session says nothing.
        let ctx = Context {
            job_session: Some(7),
            tracking_id: Some("github_1".into()),
            ..Default::default()
        };
        let plan = classify(&now, &appeared, &ctx, &Policy::default());
        assert!(plan
            .decisions
            .iter()
            .all(|d| d.class == Class::Unattributed));
    }

    #[test]
    fn no_context_means_nothing_is_the_jobs() {
        // Missing context (no markers, no root, no session) never widens the kill.
        let (now, _) = scene();
        let appeared: Vec<&Process> = now.processes.iter().collect();
        let plan = classify(&now, &appeared, &Context::default(), &Policy::default());
        assert_eq!(plan.targets(&Policy::default()).count(), 0);
    }
}
