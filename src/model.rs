//! Plain data: what a snapshot of the machine holds. Nothing here knows about `/proc`,
//! signals or the network; the platform reader fills these types and everything downstream
//! (diff, classify, kill, reports) reads them.
//!
//! These types are also the on-disk state format, versioned by [`SCHEMA_VERSION`]. A change
//! that removes or re-means a field bumps the version; readers refuse versions they do not
//! know rather than guess.

use std::collections::HashSet;
use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

/// Version of the snapshot/state JSON written by this build.
pub const SCHEMA_VERSION: u32 = 2;

/// The identity of a process: a pid alone can be reused, a pid plus its start time (in clock
/// ticks since boot) cannot within one boot. The boot id lives on [`Machine`], so comparing
/// identities across snapshots is only done after checking that the boot ids agree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: i32,
    pub start_ticks: u64,
}

impl fmt::Display for ProcessId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.pid, self.start_ticks)
    }
}

/// Bytes read from the OS that are usually, but not always, UTF-8 (argv, paths, comm).
///
/// Serialised as a JSON string when the bytes are valid UTF-8, and as `{"hex": "..."}`
/// otherwise, so nothing is lost and the common case stays readable.
///
/// Shared, not copied: a clone is a reference count, and a reading gives the processes
/// that share a value (the same `exe`, `cwd` or name) one allocation of it.
#[derive(Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Bytes(Arc<[u8]>);

impl Bytes {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// A lossy rendering for people; the raw bytes stay in `self`.
    pub fn lossy(&self) -> std::borrow::Cow<'_, str> {
        String::from_utf8_lossy(&self.0)
    }
}

impl From<&str> for Bytes {
    fn from(s: &str) -> Self {
        Bytes(Arc::from(s.as_bytes()))
    }
}

impl From<&[u8]> for Bytes {
    fn from(b: &[u8]) -> Self {
        Bytes(Arc::from(b))
    }
}

impl From<Vec<u8>> for Bytes {
    fn from(v: Vec<u8>) -> Self {
        Bytes(Arc::from(v))
    }
}

impl AsRef<[u8]> for Bytes {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl std::borrow::Borrow<[u8]> for Bytes {
    fn borrow(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.lossy())
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.lossy())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(untagged)]
enum BytesRepr {
    Text(String),
    Hex { hex: String },
}

impl Serialize for Bytes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        BytesRef(&self.0).serialize(s)
    }
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        match BytesRepr::deserialize(d)? {
            BytesRepr::Text(text) => Ok(Bytes::from(text.into_bytes())),
            BytesRepr::Hex { hex } => decode_hex(&hex)
                .map(Bytes::from)
                .ok_or_else(|| serde::de::Error::custom("invalid hex in byte string")),
        }
    }
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if hex.len() % 2 != 0 {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// A command line: its arguments as the kernel keeps them in `/proc/PID/cmdline`, each
/// followed by a NUL byte, in one allocation. (A `Vec` of one allocation per argument cost
/// about 350 bytes more per process, which a sweep of thousands holds at once.)
///
/// An argument never holds a NUL byte (the kernel separates them with it): the constructors
/// cut an argument at its first NUL, and a saved file with one is refused. Serialised as a
/// list of [`Bytes`], the format it replaced.
#[derive(Clone, PartialEq, Eq, Hash, Default, PartialOrd, Ord)]
pub struct Argv(Box<[u8]>);

impl Argv {
    /// From the raw contents of `/proc/PID/cmdline`: one trailing NUL is the last
    /// argument's terminator; nothing left means no argument (kernel threads, zombies). A
    /// command line a process rewrote without NULs is one argument.
    pub fn from_cmdline(buf: &[u8]) -> Argv {
        let body = buf.strip_suffix(b"\0").unwrap_or(buf);
        if body.is_empty() {
            return Argv::default();
        }
        let mut v = Vec::with_capacity(body.len() + 1);
        v.extend_from_slice(body);
        v.push(0);
        Argv(v.into_boxed_slice())
    }

    /// The arguments, in order.
    pub fn iter(&self) -> Args<'_> {
        Args { rest: &self.0 }
    }

    pub fn len(&self) -> usize {
        self.0.iter().filter(|&&b| b == 0).count()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn get(&self, i: usize) -> Option<&[u8]> {
        self.iter().nth(i)
    }

    pub fn first(&self) -> Option<&[u8]> {
        self.iter().next()
    }

    /// The arguments for people, each one lossily decoded.
    pub fn lossy_args(&self) -> Vec<String> {
        self.iter()
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect()
    }

    /// The arguments joined by spaces, for people (each one lossily decoded).
    pub fn join_lossy(&self) -> String {
        self.lossy_args().join(" ")
    }

    /// The arguments as one NUL-terminated run, as `/proc/PID/cmdline` gives them.
    pub fn as_cmdline(&self) -> &[u8] {
        &self.0
    }
}

/// The arguments of an [`Argv`], in order.
#[derive(Debug, Clone)]
pub struct Args<'a> {
    /// The arguments not yet taken, each followed by its NUL.
    rest: &'a [u8],
}

impl<'a> Iterator for Args<'a> {
    type Item = &'a [u8];

    fn next(&mut self) -> Option<&'a [u8]> {
        let end = self.rest.iter().position(|&b| b == 0)?;
        let (arg, tail) = self.rest.split_at(end);
        self.rest = tail.get(1..).unwrap_or_default();
        Some(arg)
    }
}

impl DoubleEndedIterator for Args<'_> {
    fn next_back(&mut self) -> Option<Self::Item> {
        let (_, body) = self.rest.split_last()?;
        let start = body.iter().rposition(|&b| b == 0).map_or(0, |i| i + 1);
        let arg = body.get(start..).unwrap_or_default();
        self.rest = self.rest.get(..start).unwrap_or_default();
        Some(arg)
    }
}

impl<'a> IntoIterator for &'a Argv {
    type Item = &'a [u8];
    type IntoIter = Args<'a>;

    fn into_iter(self) -> Args<'a> {
        self.iter()
    }
}

impl<A: AsRef<[u8]>> FromIterator<A> for Argv {
    fn from_iter<I: IntoIterator<Item = A>>(args: I) -> Self {
        let mut v = Vec::new();
        for arg in args {
            let arg = arg.as_ref();
            let end = arg.iter().position(|&b| b == 0).unwrap_or(arg.len());
            v.extend_from_slice(&arg[..end]);
            v.push(0);
        }
        Argv(v.into_boxed_slice())
    }
}

impl<const N: usize> From<[&str; N]> for Argv {
    fn from(args: [&str; N]) -> Self {
        args.into_iter().collect()
    }
}

impl fmt::Debug for Argv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.iter().map(String::from_utf8_lossy))
            .finish()
    }
}

impl Serialize for Argv {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        let mut seq = s.serialize_seq(Some(self.len()))?;
        for arg in self.iter() {
            seq.serialize_element(&BytesRef(arg))?;
        }
        seq.end()
    }
}

impl<'de> Deserialize<'de> for Argv {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let args = Vec::<Bytes>::deserialize(d)?;
        if args.iter().any(|a| a.0.contains(&0)) {
            return Err(serde::de::Error::custom(
                "a command-line argument holds a NUL byte, which no command line can",
            ));
        }
        Ok(args.iter().collect())
    }
}

/// Serialises borrowed bytes as [`Bytes`] does.
struct BytesRef<'a>(&'a [u8]);

impl Serialize for BytesRef<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => BytesRepr::Hex {
                hex: self.0.iter().map(|b| format!("{b:02x}")).collect(),
            }
            .serialize(s),
        }
    }
}

/// The job markers read from a process's environment. Only these variables are ever
/// kept: the rest of an environment holds secrets.
///
/// Two sorts: the *identity* markers ([`JOB_MARKERS`]), each set by a CI (or by
/// ci-janitor) to a value unique to one job, which say whose job a process is; and the
/// *context* markers (step, test), which say where in the job it started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Markers {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub runner_tracking_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_run_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_job: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub github_action: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pytest_current_test: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pytest_xdist_worker: Option<String>,
    /// Set by ci-janitor (`run`, the Action through `$GITHUB_ENV`, `snapshot --export`) in
    /// the job's environment, so its descendants can be recognised even after they leave
    /// its process tree. A `:`-separated chain when nested (`run` inside a marked job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci_janitor_run: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vsts_process_lookup_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jenkins_node_cookie: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ci_job_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub buildkite_job_id: Option<String>,
    /// Markers (by variable name) that are not in the process's own environment but were
    /// inherited, through the guard's lineage, from the nearest ancestor that had them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inherited: Vec<String>,
}

/// A per-job identity marker: an environment variable that a CI sets, in the environment
/// of every process of one job, to a value no other job has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MarkerKind {
    pub var: &'static str,
    /// Who sets it.
    pub set_by: &'static str,
}

/// The identity markers, most specific first. Each is set per job by its CI:
///
/// - `CI_JANITOR_RUN`: ci-janitor itself (`run`; the Action and the runner hooks through
///   `$GITHUB_ENV`; `eval "$(ci-janitor snapshot --export)"` in any shell).
/// - `RUNNER_TRACKING_ID`: GitHub Actions. The runner's job extension sets
///   `github_<guid>` for every step of a job and, at the job's end, kills what still
///   carries it ("Cleaning up orphan processes"; actions/runner,
///   `src/Runner.Worker/JobExtension.cs`).
/// - `VSTS_PROCESS_LOOKUP_ID`: Azure Pipelines. The agent's job extension sets
///   `vsts_<guid>` the same way (microsoft/azure-pipelines-agent,
///   `src/Agent.Worker/JobExtension.cs`).
/// - `JENKINS_NODE_COOKIE`: Jenkins Pipeline. A UUID per `node` block, set on every
///   process it launches; Jenkins' own ProcessTreeKiller kills by it, and
///   `JENKINS_NODE_COOKIE=dontKillMe` is the documented way out
///   (jenkinsci/workflow-durable-task-step-plugin, `ExecutorStepExecution.PlaceholderTask`).
/// - `CI_JOB_ID`: GitLab CI/CD, a predefined variable unique to each job.
/// - `BUILDKITE_JOB_ID`: Buildkite, set by the agent for each job.
pub const JOB_MARKERS: [MarkerKind; 6] = [
    MarkerKind {
        var: "CI_JANITOR_RUN",
        set_by: "ci-janitor",
    },
    MarkerKind {
        var: "RUNNER_TRACKING_ID",
        set_by: "GitHub Actions",
    },
    MarkerKind {
        var: "VSTS_PROCESS_LOOKUP_ID",
        set_by: "Azure Pipelines",
    },
    MarkerKind {
        var: "JENKINS_NODE_COOKIE",
        set_by: "Jenkins",
    },
    MarkerKind {
        var: "CI_JOB_ID",
        set_by: "GitLab CI",
    },
    MarkerKind {
        var: "BUILDKITE_JOB_ID",
        set_by: "Buildkite",
    },
];

/// Whose job a process's identity markers say it is, judged against one job's.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Belongs {
    /// It carries this job's marker (the variable named) and no other job's.
    Ours(&'static str),
    /// It carries another job's marker (`VAR=value`): a different value for a kind this
    /// job has, or a kind this job does not have and none of this job's.
    Theirs(String),
    /// It carries no identity marker at all.
    Unmarked,
}

impl Markers {
    /// The environment variable names this struct keeps, in field order.
    pub const NAMES: [&'static str; 11] = [
        "RUNNER_TRACKING_ID",
        "GITHUB_RUN_ID",
        "GITHUB_JOB",
        "GITHUB_ACTION",
        "PYTEST_CURRENT_TEST",
        "PYTEST_XDIST_WORKER",
        "CI_JANITOR_RUN",
        "VSTS_PROCESS_LOOKUP_ID",
        "JENKINS_NODE_COOKIE",
        "CI_JOB_ID",
        "BUILDKITE_JOB_ID",
    ];

    fn slot(&mut self, name: &str) -> Option<&mut Option<String>> {
        Some(match name {
            "RUNNER_TRACKING_ID" => &mut self.runner_tracking_id,
            "GITHUB_RUN_ID" => &mut self.github_run_id,
            "GITHUB_JOB" => &mut self.github_job,
            "GITHUB_ACTION" => &mut self.github_action,
            "PYTEST_CURRENT_TEST" => &mut self.pytest_current_test,
            "PYTEST_XDIST_WORKER" => &mut self.pytest_xdist_worker,
            "CI_JANITOR_RUN" => &mut self.ci_janitor_run,
            "VSTS_PROCESS_LOOKUP_ID" => &mut self.vsts_process_lookup_id,
            "JENKINS_NODE_COOKIE" => &mut self.jenkins_node_cookie,
            "CI_JOB_ID" => &mut self.ci_job_id,
            "BUILDKITE_JOB_ID" => &mut self.buildkite_job_id,
            _ => return None,
        })
    }

    /// Stores `value` under the marker `name` (one of [`Markers::NAMES`]); other names, and
    /// empty values (act sets `RUNNER_TRACKING_ID=`), are ignored.
    pub fn set(&mut self, name: &str, value: String) {
        if value.is_empty() {
            return;
        }
        if let Some(slot) = self.slot(name) {
            *slot = Some(value);
        }
    }

    /// The value of the marker `name` (one of [`Markers::NAMES`]).
    pub fn get(&self, name: &str) -> Option<&String> {
        match name {
            "RUNNER_TRACKING_ID" => self.runner_tracking_id.as_ref(),
            "GITHUB_RUN_ID" => self.github_run_id.as_ref(),
            "GITHUB_JOB" => self.github_job.as_ref(),
            "GITHUB_ACTION" => self.github_action.as_ref(),
            "PYTEST_CURRENT_TEST" => self.pytest_current_test.as_ref(),
            "PYTEST_XDIST_WORKER" => self.pytest_xdist_worker.as_ref(),
            "CI_JANITOR_RUN" => self.ci_janitor_run.as_ref(),
            "VSTS_PROCESS_LOOKUP_ID" => self.vsts_process_lookup_id.as_ref(),
            "JENKINS_NODE_COOKIE" => self.jenkins_node_cookie.as_ref(),
            "CI_JOB_ID" => self.ci_job_id.as_ref(),
            "BUILDKITE_JOB_ID" => self.buildkite_job_id.as_ref(),
            _ => None,
        }
    }

    pub fn is_empty(&self) -> bool {
        *self == Markers::default()
    }

    /// Only the identity markers ([`JOB_MARKERS`]), the rest cleared.
    pub fn identity(&self) -> Markers {
        let mut m = Markers::default();
        for k in JOB_MARKERS {
            if let Some(v) = self.get(k.var) {
                m.set(k.var, v.clone());
            }
        }
        m
    }

    /// Whether any identity marker is set.
    pub fn has_identity(&self) -> bool {
        JOB_MARKERS.iter().any(|k| self.get(k.var).is_some())
    }

    /// The identity markers that are set, as `(variable, value)`, most specific first.
    pub fn identity_pairs(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        JOB_MARKERS
            .iter()
            .filter_map(|k| self.get(k.var).map(|v| (k.var, v.as_str())))
    }

    /// Whose job a process with these markers is, for a job whose identity markers are
    /// `job`. A process that carries one of the job's markers is the job's unless it also
    /// carries a different value for a kind the job has (a nested `ci-janitor run`, or
    /// another job's marker set on purpose, like Jenkins' `JENKINS_NODE_COOKIE=dontKillMe`).
    /// One that carries none of the job's, but a marker of a kind the job lacks, is another
    /// job's (another CI, or a job of this CI when this job has no CI marker).
    pub fn belongs_to(&self, job: &Markers) -> Belongs {
        belongs(self.identity_pairs(), job)
    }
}

/// [`Markers::belongs_to`] for a process's identity markers, `(variable, value)`.
fn belongs<'a>(pairs: impl Iterator<Item = (&'static str, &'a str)>, job: &Markers) -> Belongs {
    let mut ours = None;
    let mut other_kind = None;
    for (var, value) in pairs {
        match job.get(var) {
            Some(mine) if marker_matches(var, mine, value) => {
                ours.get_or_insert(var);
            }
            Some(_) => return Belongs::Theirs(format!("{var}={value}")),
            None => {
                other_kind.get_or_insert_with(|| format!("{var}={value}"));
            }
        }
    }
    match (ours, other_kind) {
        (Some(var), _) => Belongs::Ours(var),
        (None, Some(theirs)) => Belongs::Theirs(theirs),
        (None, None) => Belongs::Unmarked,
    }
}

/// The markers of one process, compact: the variables of [`Markers`] it carries, by
/// index, and the ones it inherited. A process carries a few of the eleven at most, and a
/// sweep holds thousands of processes: [`Markers`] is 288 bytes inline, this 48 (plus the
/// values it holds). Written and read as exactly the same JSON as [`Markers`], so state
/// files and reports read back the same whichever wrote them.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct MarkerSet {
    /// `(index in Markers::NAMES, value)`, in that order, one per variable. Shared, and
    /// replaced whole when it changes: the processes of one job carry the same markers,
    /// and a reading keeps each set of them once (see [`Sharing`]).
    values: MarkerValues,
    /// Markers (by variable name) that are not in the process's own environment but were
    /// inherited, through the guard's lineage, from the nearest ancestor that had them.
    pub inherited: Vec<String>,
}

/// A marker set's values: `(index in Markers::NAMES, value)`, in that order.
type MarkerValues = Arc<[(u8, Arc<str>)]>;

/// The JSON field of each of [`Markers::NAMES`], in the same order.
const MARKER_FIELDS: [&str; 11] = [
    "runner_tracking_id",
    "github_run_id",
    "github_job",
    "github_action",
    "pytest_current_test",
    "pytest_xdist_worker",
    "ci_janitor_run",
    "vsts_process_lookup_id",
    "jenkins_node_cookie",
    "ci_job_id",
    "buildkite_job_id",
];

fn marker_index(name: &str) -> Option<u8> {
    Markers::NAMES
        .iter()
        .position(|n| *n == name)
        .map(|i| i as u8)
}

/// `MarkerSet::github_action()` and the like: each marker by the name of its field in
/// [`Markers`] (some are read by tests only).
macro_rules! marker_getters {
    ($($field:ident = $var:literal),* $(,)?) => {
        #[allow(dead_code)]
        impl MarkerSet {
            $(
                #[doc = concat!("The value of `", $var, "`.")]
                pub fn $field(&self) -> Option<&str> {
                    self.get($var)
                }
            )*
        }
    };
}

marker_getters!(
    runner_tracking_id = "RUNNER_TRACKING_ID",
    github_run_id = "GITHUB_RUN_ID",
    github_job = "GITHUB_JOB",
    github_action = "GITHUB_ACTION",
    pytest_current_test = "PYTEST_CURRENT_TEST",
    pytest_xdist_worker = "PYTEST_XDIST_WORKER",
    ci_janitor_run = "CI_JANITOR_RUN",
    vsts_process_lookup_id = "VSTS_PROCESS_LOOKUP_ID",
    jenkins_node_cookie = "JENKINS_NODE_COOKIE",
    ci_job_id = "CI_JOB_ID",
    buildkite_job_id = "BUILDKITE_JOB_ID",
);

impl MarkerSet {
    fn find(&self, name: &str) -> Result<usize, usize> {
        match marker_index(name) {
            Some(i) => self.values.binary_search_by_key(&i, |(k, _)| *k),
            None => Err(usize::MAX),
        }
    }

    /// Stores `value` under the marker `name` (one of [`Markers::NAMES`]); other names, and
    /// empty values, are ignored (as [`Markers::set`]).
    pub fn set(&mut self, name: &str, value: String) {
        if value.is_empty() {
            return;
        }
        let Some(i) = marker_index(name) else {
            return;
        };
        let value = Arc::from(value);
        self.edit(
            |values| match values.binary_search_by_key(&i, |(k, _)| *k) {
                Ok(at) => values[at].1 = value,
                Err(at) => values.insert(at, (i, value)),
            },
        );
    }

    /// Changes the values through a copy of them: the set may be shared.
    fn edit<R>(&mut self, change: impl FnOnce(&mut Vec<(u8, Arc<str>)>) -> R) -> R {
        let mut values = self.values.to_vec();
        let out = change(&mut values);
        self.values = shared_values(values);
        out
    }

    /// The value of the marker `name` (one of [`Markers::NAMES`]).
    pub fn get(&self, name: &str) -> Option<&str> {
        self.find(name).ok().map(|at| &*self.values[at].1)
    }

    /// Removes the marker `name`, and gives its value.
    #[cfg_attr(not(test), allow(dead_code))]
    pub fn remove(&mut self, name: &str) -> Option<String> {
        let at = self.find(name).ok()?;
        let (_, value) = self.edit(|values| values.remove(at));
        Some(value.to_string())
    }

    /// Replaces the value of the marker `name`, if it is set, by `change` of it (an empty
    /// value is a value still).
    pub fn change(&mut self, name: &str, change: impl FnOnce(&str) -> String) {
        if let Ok(at) = self.find(name) {
            self.edit(|values| values[at].1 = Arc::from(change(&values[at].1)));
        }
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty() && self.inherited.is_empty()
    }

    /// The markers that are set, as `(variable, value)`, in [`Markers::NAMES`] order.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        self.values
            .iter()
            .map(|(i, v)| (Markers::NAMES[usize::from(*i)], &**v))
    }

    /// The identity markers that are set, as `(variable, value)`, most specific first.
    pub fn identity_pairs(&self) -> impl Iterator<Item = (&'static str, &str)> + '_ {
        JOB_MARKERS
            .iter()
            .filter_map(|k| self.get(k.var).map(|v| (k.var, v)))
    }

    /// See [`Markers::belongs_to`].
    pub fn belongs_to(&self, job: &Markers) -> Belongs {
        belongs(self.identity_pairs(), job)
    }
}

/// `values` as a set's values; no allocation for none (most processes of a snapshot carry
/// no marker, and an empty `Arc` slice is one shared, static value).
fn shared_values(values: Vec<(u8, Arc<str>)>) -> MarkerValues {
    if values.is_empty() {
        MarkerValues::default()
    } else {
        Arc::from(values)
    }
}

/// The values of `m`'s markers, in [`Markers::NAMES`] order, each made by `share`.
fn marker_values(
    m: &mut Markers,
    mut share: impl FnMut(String) -> Arc<str>,
) -> Vec<(u8, Arc<str>)> {
    let mut values = Vec::new();
    for (i, name) in Markers::NAMES.iter().enumerate() {
        if let Some(v) = m.slot(name).and_then(Option::take) {
            values.push((i as u8, share(v)));
        }
    }
    values
}

impl From<Markers> for MarkerSet {
    fn from(mut m: Markers) -> MarkerSet {
        MarkerSet {
            values: shared_values(marker_values(&mut m, Arc::from)),
            inherited: m.inherited,
        }
    }
}

/// Keeps one copy of each value that many processes of one reading share: their names,
/// `exe` and `cwd`, the values of their markers and whole sets of markers (thousands of a
/// job's processes carry the same five under GitHub Actions), which would otherwise be
/// copied into each.
#[derive(Debug, Default)]
pub struct Sharing {
    bytes: HashSet<Bytes>,
    marker_values: HashSet<Arc<str>>,
    marker_sets: HashSet<MarkerValues>,
}

/// The copy of `value` in `seen`, or a new one (`make`) kept there.
fn one_copy<T, Q>(seen: &mut HashSet<T>, value: &Q, make: impl FnOnce() -> T) -> T
where
    T: std::borrow::Borrow<Q> + std::hash::Hash + Eq + Clone,
    Q: std::hash::Hash + Eq + ?Sized,
{
    if let Some(known) = seen.get(value) {
        return known.clone();
    }
    let new = make();
    seen.insert(new.clone());
    new
}

impl Sharing {
    /// `value` as [`Bytes`], shared with every other made by this.
    pub fn bytes(&mut self, value: &[u8]) -> Bytes {
        one_copy(&mut self.bytes, value, || Bytes::from(value))
    }

    /// `m` as a [`MarkerSet`] whose values, and whose set of them, are shared with every
    /// other made by this.
    pub fn markers(&mut self, mut m: Markers) -> MarkerSet {
        let seen = &mut self.marker_values;
        let values = marker_values(&mut m, |v| {
            one_copy(seen, v.as_str(), || Arc::from(v.as_str()))
        });
        let values = one_copy(&mut self.marker_sets, values.as_slice(), || {
            shared_values(values.clone())
        });
        MarkerSet {
            values,
            inherited: m.inherited,
        }
    }
}

impl fmt::Debug for MarkerSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("MarkerSet");
        for (name, v) in self.iter() {
            s.field(name, &v);
        }
        if !self.inherited.is_empty() {
            s.field("inherited", &self.inherited);
        }
        s.finish()
    }
}

impl Serialize for MarkerSet {
    /// Field for field what `#[derive(Serialize)]` on [`Markers`] writes.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeStruct;
        let len = self.values.len() + usize::from(!self.inherited.is_empty());
        let mut st = s.serialize_struct("Markers", len)?;
        let mut at = self.values.iter().peekable();
        for (i, field) in MARKER_FIELDS.iter().enumerate() {
            match at.next_if(|(k, _)| usize::from(*k) == i) {
                Some((_, v)) => st.serialize_field(field, &**v)?,
                None => st.skip_field(field)?,
            }
        }
        if self.inherited.is_empty() {
            st.skip_field("inherited")?;
        } else {
            st.serialize_field("inherited", &self.inherited)?;
        }
        st.end()
    }
}

impl<'de> Deserialize<'de> for MarkerSet {
    /// What [`Markers`] reads, kept compact.
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Markers::deserialize(d).map(MarkerSet::from)
    }
}

/// Whether a process's `value` of the marker `var` is the job's `mine`. `CI_JANITOR_RUN`
/// is a chain: a `run` inside a marked job appends its own marker, so a process of that
/// `run` carries `outer:inner`. It is the job's when its chain holds the job's own (last)
/// marker: the outer job's processes are not the inner `run`'s, and the inner `run`'s
/// processes are still the outer job's.
fn marker_matches(var: &str, mine: &str, value: &str) -> bool {
    if var == "CI_JANITOR_RUN" {
        let own = mine.rsplit(':').next().unwrap_or(mine);
        value.split(':').any(|m| m == own)
    } else {
        mine == value
    }
}

/// One process as read at snapshot time. `None` means "could not be read" (permission,
/// vanished mid-read, kernel thread): never a guess. Why a field is missing is in
/// `unreadable`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Process {
    pub id: ProcessId,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// Real uid (from `/proc/PID/status`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// One-letter state from `/proc/PID/stat` (`R`, `S`, `D`, `Z`, `T`, ...).
    pub state: char,
    pub comm: Bytes,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<Bytes>,
    #[serde(default)]
    pub argv: Argv,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<Bytes>,
    /// The cgroup v2 path (the `0::` line), or the first line's path on v1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cgroup: Option<String>,
    pub threads: u32,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub kernel_thread: bool,
    /// Whether the details (argv, markers, exe, cwd, cgroup, real uid) were read. A
    /// baseline reads them for no process; a sweep for the processes that appeared. Without
    /// details, `uid` is the effective uid (the owner of `/proc/PID`).
    #[serde(default)]
    pub details: bool,
    #[serde(default, skip_serializing_if = "MarkerSet::is_empty")]
    pub markers: MarkerSet,
    /// Fields that could not be read, with the reason (`"environ: permission denied"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
}

/// Whether a process in this `stat` state is dead: a zombie (`Z`), or being torn down
/// (`X`; `x` on Linux 2.6.33 to 3.13). Every reader of `/proc` judges by this one rule.
pub fn is_dead_state(state: char) -> bool {
    matches!(state, 'Z' | 'X' | 'x')
}

/// Whether a process is dead: in a dead state ([`is_dead_state`]) with no thread left but
/// its leader. A process whose main thread exited (`pthread_exit`) while its other threads
/// run shows `Z` too, with the group's thread count: it is alive, holds its ports and takes
/// signals, and a sweep must see it.
pub fn is_dead(state: char, threads: u32) -> bool {
    is_dead_state(state) && threads <= 1
}

impl Process {
    /// Dead, not yet reaped (see [`is_dead`]).
    pub fn is_zombie(&self) -> bool {
        is_dead(self.state, self.threads)
    }

    /// The command line for people: argv joined by spaces, or `[comm]` when argv is empty
    /// (kernel threads, zombies, processes we may not read).
    pub fn command_line(&self) -> String {
        if self.argv.is_empty() {
            format!("[{}]", self.comm.lossy())
        } else {
            self.argv.join_lossy()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
    Unix,
}

/// A unix socket's type; inet listeners do not carry one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SocketKind {
    Stream,
    Seqpacket,
    Dgram,
}

/// A listening (TCP, unix stream/seqpacket) or bound (UDP) socket and who holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Listener {
    pub protocol: Protocol,
    /// `4` or `6` for inet sockets; absent for unix sockets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_version: Option<u8>,
    /// The local address (`127.0.0.1`, `::`), absent for unix sockets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// The unix socket path; abstract names start with `@`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<Bytes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<SocketKind>,
    pub inode: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    /// Every process with a file descriptor on this socket.
    #[serde(default)]
    pub owners: Vec<ProcessId>,
}

impl Listener {
    /// `tcp 127.0.0.1:8000`, `unix /tmp/x.sock`: a short label for people.
    pub fn label(&self) -> String {
        let proto = match self.protocol {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
            Protocol::Unix => "unix",
        };
        match (&self.address, self.port, &self.path) {
            (Some(addr), Some(port), _) if addr.contains(':') => format!("{proto} [{addr}]:{port}"),
            (Some(addr), Some(port), _) => format!("{proto} {addr}:{port}"),
            (_, _, Some(path)) => format!("{proto} {}", path.lossy()),
            _ => format!("{proto} inode {}", self.inode),
        }
    }
}

/// Facts about the machine at snapshot time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Machine {
    pub boot_id: String,
    pub clock_ticks_per_second: u64,
    /// Boot time, seconds since the epoch (`btime` in `/proc/stat`): with the clock tick
    /// rate, turns a start time in ticks into a wall-clock time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub boot_time_unix: Option<u64>,
    /// The pid namespace we read from (`pid:[4026531836]`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid_namespace: Option<String>,
    pub uid: u32,
    pub is_root: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub os: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kernel: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    pub cpus: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_bytes: Option<u64>,
}

/// Something that could not be read at all (as opposed to one field of a process).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Unreadable {
    /// What it was: `"process 1234"`, `"/proc/net/tcp6"`.
    pub what: String,
    pub reason: String,
}

/// Everything ci-janitor knows about the machine at one instant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Snapshot {
    pub schema_version: u32,
    /// The ci-janitor version that wrote it.
    pub tool_version: String,
    pub taken_at_unix_ms: u64,
    /// `CLOCK_BOOTTIME` in clock ticks when reading began: the same clock as a process's
    /// start time. A process that started before this instant did not appear during the
    /// job, whatever the process list says.
    pub taken_at_boot_ticks: u64,
    /// How long reading took, in microseconds.
    pub duration_us: u64,
    pub machine: Machine,
    pub processes: Vec<Process>,
    pub listeners: Vec<Listener>,
    #[serde(default)]
    pub unreadable: Vec<Unreadable>,
    /// The process that took the snapshot, so that a later sweep can tell the snapshotter
    /// (and a guard it started) apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub taken_by: Option<ProcessId>,
    /// The job this baseline was taken for, so that a sweep in another process (an Action's
    /// post step, the next job's hook after a crash) knows its markers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobInfo>,
    /// What reading the state file distrusted in it (see [`crate::state::load`]): for the
    /// report, never written.
    #[serde(skip)]
    pub trust_notes: Vec<String>,
}

/// The job a snapshot was taken for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInfo {
    /// The job's identity markers: its CI's (`RUNNER_TRACKING_ID`, `CI_JOB_ID`, ...) from
    /// the environment of the process that took the snapshot, and the `CI_JANITOR_RUN`
    /// marker ci-janitor gave the job's processes.
    #[serde(default, skip_serializing_if = "Markers::is_empty")]
    pub markers: Markers,
}

impl Snapshot {
    /// The process with this identity. The reader lists processes in pid order, so this
    /// is a binary search; a list in another order (a hand-edited state file) falls back to
    /// a scan, so the answer never depends on the order. A sweep asks once per process:
    /// a scan each time made that O(n²).
    pub fn process(&self, id: ProcessId) -> Option<&Process> {
        let at = self.processes.partition_point(|p| p.id.pid < id.pid);
        self.processes[at..]
            .iter()
            .take_while(|p| p.id.pid == id.pid)
            .find(|p| p.id == id)
            .or_else(|| self.processes.iter().find(|p| p.id == id))
    }

    /// The listeners that `id` holds a descriptor on.
    pub fn listeners_of(&self, id: ProcessId) -> impl Iterator<Item = &Listener> {
        self.listeners
            .iter()
            .filter(move |l| l.owners.contains(&id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_is_found_in_pid_order_and_in_any_other() {
        use crate::test_support::{proc_at, snapshot_of};
        let ids = [(7, 70), (3, 30), (3, 31), (12, 120), (5, 50)];
        let mut snap = snapshot_of(ids.iter().map(|&(p, t)| proc_at(p, 1, t)).collect(), 0);
        for sorted in [false, true] {
            if sorted {
                snap.processes.sort_by_key(|p| p.id.pid);
            }
            for (pid, start_ticks) in ids {
                let id = ProcessId { pid, start_ticks };
                assert_eq!(snap.process(id).map(|p| p.id), Some(id), "sorted: {sorted}");
            }
            let absent = ProcessId {
                pid: 3,
                start_ticks: 32,
            };
            assert!(snap.process(absent).is_none());
        }
    }

    /// Every marker set, and inherited ones: what the derived `Markers` writes.
    fn every_marker() -> Markers {
        let mut m = Markers::default();
        for (i, name) in Markers::NAMES.iter().enumerate() {
            m.set(name, format!("{name}-value-{i}"));
        }
        m.inherited = vec!["GITHUB_ACTION".into(), "PYTEST_CURRENT_TEST".into()];
        m
    }

    #[test]
    fn marker_sets_write_and_read_what_markers_do() {
        let mut one = Markers::default();
        one.set("CI_JOB_ID", "41".into());
        let empty_value = Markers {
            github_job: Some(String::new()),
            ..Default::default()
        };
        let only_inherited = Markers {
            inherited: vec!["GITHUB_ACTION".into()],
            ..Default::default()
        };
        for m in [
            every_marker(),
            Markers::default(),
            one,
            empty_value,
            only_inherited,
        ] {
            let json = serde_json::to_string(&m).unwrap();
            let set = MarkerSet::from(m.clone());
            assert_eq!(serde_json::to_string(&set).unwrap(), json);
            assert_eq!(
                serde_json::to_string_pretty(&set).unwrap(),
                serde_json::to_string_pretty(&m).unwrap()
            );
            let back: MarkerSet = serde_json::from_str(&json).unwrap();
            assert_eq!(back, set, "via {json}");
            assert_eq!(serde_json::to_string(&back).unwrap(), json);
            assert_eq!(set.is_empty(), m.is_empty(), "{json}");
            for name in Markers::NAMES {
                assert_eq!(set.get(name), m.get(name).map(String::as_str), "{name}");
            }
            assert_eq!(
                set.identity_pairs().collect::<Vec<_>>(),
                m.identity_pairs().collect::<Vec<_>>()
            );
        }
        assert_eq!(serde_json::to_string(&MarkerSet::default()).unwrap(), "{}");
    }

    #[test]
    fn a_process_writes_its_markers_as_before() {
        use crate::test_support::proc_at;
        // With none, the field is left out; with some, it is the markers' object.
        let mut p = proc_at(7, 1, 70);
        let bare = serde_json::to_value(&p).unwrap();
        assert!(bare.get("markers").is_none(), "{bare}");
        p.markers = every_marker().into();
        let v = serde_json::to_value(&p).unwrap();
        assert_eq!(v["markers"], serde_json::to_value(every_marker()).unwrap());
        let back: Process = serde_json::from_value(v).unwrap();
        assert_eq!(back, p);
    }

    #[test]
    fn marker_sets_set_get_and_judge_like_markers() {
        let mut m = Markers::default();
        let mut set = MarkerSet::default();
        // Out of order, replaced, empty (ignored), unknown (ignored).
        for (name, value) in [
            ("PYTEST_CURRENT_TEST", "t.py::a (call)"),
            ("RUNNER_TRACKING_ID", "github_1"),
            ("CI_JANITOR_RUN", "outer:inner"),
            ("RUNNER_TRACKING_ID", "github_2"),
            ("GITHUB_JOB", ""),
            ("HOME", "/root"),
        ] {
            m.set(name, value.into());
            set.set(name, value.into());
        }
        assert_eq!(MarkerSet::from(m.clone()), set);
        assert_eq!(set.runner_tracking_id(), Some("github_2"));
        assert_eq!(set.github_job(), None);
        let mut job = Markers::default();
        job.set("CI_JANITOR_RUN", "inner".into());
        assert_eq!(set.belongs_to(&job), m.belongs_to(&job));
        assert_eq!(set.belongs_to(&job), Belongs::Ours("CI_JANITOR_RUN"));
        set.change("PYTEST_CURRENT_TEST", |t| format!("{t} x"));
        assert_eq!(set.pytest_current_test(), Some("t.py::a (call) x"));
        // A marker that is not set stays unset.
        set.change("GITHUB_JOB", |t| format!("{t} x"));
        assert_eq!(set.github_job(), None);
        assert_eq!(set.remove("CI_JANITOR_RUN").as_deref(), Some("outer:inner"));
        assert_eq!(
            set.belongs_to(&job),
            Belongs::Theirs("RUNNER_TRACKING_ID=github_2".into())
        );
    }

    #[test]
    fn bytes_round_trip_text_and_binary() {
        for raw in [b"plain".to_vec(), vec![0xff, b'a', 0x00, 0x80], vec![]] {
            let b = Bytes::from(raw.clone());
            let json = serde_json::to_string(&b).unwrap();
            let back: Bytes = serde_json::from_str(&json).unwrap();
            assert_eq!(back.as_bytes(), raw, "via {json}");
        }
        assert_eq!(
            serde_json::to_string(&Bytes::from("x y")).unwrap(),
            "\"x y\""
        );
        assert_eq!(
            serde_json::to_string(&Bytes::from(vec![0xff, 0x01])).unwrap(),
            r#"{"hex":"ff01"}"#
        );
    }

    /// Equal marker sets read from different processes are one allocation; a change to one
    /// process's set leaves the others as they were; different sets stay apart.
    #[test]
    fn shared_marker_sets_are_one_copy_and_change_apart() {
        let markers = |job: &str, step: &str| {
            let mut m = Markers::default();
            m.set("RUNNER_TRACKING_ID", "github_1".into());
            m.set("GITHUB_JOB", job.into());
            m.set("GITHUB_ACTION", step.into());
            m
        };
        let mut sharing = Sharing::default();
        let mut a = sharing.markers(markers("test", "__run_2"));
        let b = sharing.markers(markers("test", "__run_2"));
        let c = sharing.markers(markers("test", "__run_3"));
        assert!(Arc::ptr_eq(&a.values, &b.values));
        assert!(!Arc::ptr_eq(&a.values, &c.values));
        assert_eq!(a, MarkerSet::from(markers("test", "__run_2")));
        assert_eq!(c.github_action(), Some("__run_3"));
        // The value both sets hold is one copy too.
        assert!(std::ptr::eq(
            a.github_job().unwrap().as_ptr(),
            c.github_job().unwrap().as_ptr()
        ));
        a.change("GITHUB_ACTION", |v| format!("{v}x"));
        a.set("PYTEST_XDIST_WORKER", "gw0".into());
        assert_eq!(a.github_action(), Some("__run_2x"));
        assert_eq!(b.github_action(), Some("__run_2"));
        assert_eq!(b.pytest_xdist_worker(), None);
        assert_eq!(a.remove("PYTEST_XDIST_WORKER").as_deref(), Some("gw0"));
        assert_eq!(b, sharing.markers(markers("test", "__run_2")));
        // No markers: the one empty set, allocated by nobody.
        let none = MarkerSet::default();
        assert!(Arc::ptr_eq(
            &MarkerSet::from(Markers::default()).values,
            &none.values
        ));
        assert!(Arc::ptr_eq(
            &sharing.markers(Markers::default()).values,
            &none.values
        ));
        assert_eq!(
            serde_json::to_string(&b).unwrap(),
            serde_json::to_string(&markers("test", "__run_2")).unwrap()
        );
    }

    /// A command line in one buffer is written as the list of strings it replaced, reads
    /// back the same, and a list no kernel could have given (an argument with a NUL) is
    /// refused rather than split into other arguments.
    #[test]
    fn a_command_line_is_the_list_it_replaced() {
        let lists: [&[&[u8]]; 5] = [
            &[],
            &[b""],
            &[b"python3", b"-m", b"uvicorn"],
            &[b"a", b"", b"b", b""],
            &[b"\xffbin", b"x y", b"--token=\x01"],
        ];
        for args in lists {
            let argv: Argv = args.iter().collect();
            assert_eq!(argv.len(), args.len());
            assert_eq!(argv.iter().collect::<Vec<_>>(), args);
            assert_eq!(argv.iter().rev().collect::<Vec<_>>(), {
                let mut r = args.to_vec();
                r.reverse();
                r
            });
            let old: Vec<Bytes> = args.iter().map(|a| Bytes::from(*a)).collect();
            let json = serde_json::to_string(&argv).unwrap();
            assert_eq!(json, serde_json::to_string(&old).unwrap());
            let back: Argv = serde_json::from_str(&json).unwrap();
            assert_eq!(back, argv, "via {json}");
            assert_eq!(format!("{argv:?}"), format!("{old:?}"));
        }
        let err = serde_json::from_str::<Argv>(r#"["a",{"hex":"ff00"}]"#).unwrap_err();
        assert!(err.to_string().contains("NUL byte"), "{err}");
        // In code, an argument is cut at a NUL (none comes from the kernel).
        let cut: Argv = [&b"a\0b"[..], b"c"].into_iter().collect();
        assert_eq!(cut.iter().collect::<Vec<_>>(), [&b"a"[..], b"c"]);
        assert_eq!(cut.as_cmdline(), b"a\0c\0");
    }

    #[test]
    fn bad_hex_is_an_error_not_a_panic() {
        for bad in [r#"{"hex":"f"}"#, r#"{"hex":"zz"}"#, r#"{"hex":"é1"}"#] {
            assert!(serde_json::from_str::<Bytes>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn listener_labels() {
        let mut l = Listener {
            protocol: Protocol::Tcp,
            ip_version: Some(6),
            address: Some("::1".into()),
            port: Some(8000),
            path: None,
            kind: None,
            inode: 7,
            uid: None,
            owners: vec![],
        };
        assert_eq!(l.label(), "tcp [::1]:8000");
        l.address = Some("127.0.0.1".into());
        assert_eq!(l.label(), "tcp 127.0.0.1:8000");
        l.protocol = Protocol::Unix;
        l.address = None;
        l.port = None;
        l.path = Some("/tmp/s.sock".into());
        assert_eq!(l.label(), "unix /tmp/s.sock");
    }
}
