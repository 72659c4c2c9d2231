//! Shared support for the process tests: the `cij-fixture` driver and /proc ground truth.
//!
//! Everything here reads /proc and signals processes directly and never calls into the
//! ci-janitor library: the tests' ground truth must not come from the code under test.
//!
//! Rules every process test follows:
//!
//! - hold [`serial()`] for the whole test (sweeps look at the whole machine, so process
//!   tests must not overlap);
//! - start processes only through [`Fixture`], whose `Drop` kills everything it started,
//!   by identity, even when the test panics;
//! - never sleep a fixed time: poll with [`wait_until`] / [`wait_dead`] against a deadline.
//!
//! Fixtures run with their cwd in a fresh directory under `<target>/cij-test-procs/`; every
//! descendant inherits it, which is how cleanup finds respawned, renamed or env-scrubbed
//! children too, and how `cij-fixture leftovers --dir target/cij-test-procs` (run by
//! `scripts/test.sh`) proves nothing was left behind.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use rustix::process::{pidfd_open, pidfd_send_signal, Pid, PidfdFlags};
use serde::Deserialize;

pub use rustix::process::Signal;

/// Polling step of [`wait_until`].
pub const POLL_STEP: Duration = Duration::from_millis(5);
/// How long [`Fixture::spawn`] waits for the fixture's JSON line.
pub const SPAWN_TIMEOUT: Duration = Duration::from_secs(60);
/// How long cleanup may take to kill everything a fixture started and see it dead.
pub const CLEANUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Name of the file (in the fixture's directory) that receives the fixture's stderr.
pub const STDERR_FILE: &str = "fixture.stderr";

// ---------------------------------------------------------------------------------------
// Serialization of process tests
// ---------------------------------------------------------------------------------------

static SERIAL: Mutex<()> = Mutex::new(());

/// Held for a test's whole body: see [`serial`].
pub struct Serial {
    _process: MutexGuard<'static, ()>,
    _machine: Option<File>,
}

impl std::fmt::Debug for Serial {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Serial")
    }
}

/// The lock every test that starts processes or sweeps must hold for its whole body: a
/// mutex within this test binary, and an exclusive `flock` on a file in the temp dir
/// across test binaries (two checkouts testing at once on one machine). Poisoning is
/// ignored: one failed test must not fail all later ones.
pub fn serial() -> Serial {
    let process = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    let machine = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(std::env::temp_dir().join("ci-janitor-tests.lock"))
        .ok()
        .filter(|f| rustix::fs::flock(f, rustix::fs::FlockOperation::LockExclusive).is_ok());
    Serial {
        _process: process,
        _machine: machine,
    }
}

// ---------------------------------------------------------------------------------------
// Fixture JSON
// ---------------------------------------------------------------------------------------

/// A process identity that survives pid reuse: pid plus start time in clock ticks
/// (field 22 of /proc/PID/stat).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
pub struct Ident {
    pub pid: i32,
    pub start_ticks: u64,
}

impl Ident {
    /// The identity of the live (non-zombie) process `pid`, if any.
    pub fn of(pid: i32) -> Option<Ident> {
        let stat = read_stat(pid)?;
        (!stat.is_dead()).then_some(stat.ident())
    }
}

/// A process the fixture left alive, with the role the scenario gave it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Proc {
    pub pid: i32,
    pub start_ticks: u64,
    pub role: String,
}

impl Proc {
    pub fn ident(&self) -> Ident {
        Ident {
            pid: self.pid,
            start_ticks: self.start_ticks,
        }
    }
}

/// A listener a scenario opened (`"proto"` tags the JSON object).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "proto", rename_all = "lowercase")]
pub enum Port {
    Tcp { addr: String, port: u16, pid: i32 },
    Unix { path: PathBuf, pid: i32 },
}

/// The fixture's JSON line.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct Spawned {
    pub scenario: String,
    /// The fixture's main process (already exited and reaped unless `--stay`).
    pub fixture: Ident,
    /// Every process the scenario left alive, in the scenario's order.
    pub procs: Vec<Proc>,
    pub ports: Vec<Port>,
}

impl Spawned {
    /// The identities in `procs`.
    pub fn idents(&self) -> Vec<Ident> {
        self.procs.iter().map(Proc::ident).collect()
    }

    /// Every proc with `role`, in order.
    pub fn with_role(&self, role: &str) -> Vec<&Proc> {
        self.procs.iter().filter(|p| p.role == role).collect()
    }

    /// The only proc with `role`; panics if there is not exactly one.
    pub fn role(&self, role: &str) -> &Proc {
        match self.with_role(role).as_slice() {
            [one] => one,
            other => panic!(
                "expected exactly one `{role}` proc in {} but found {}: {self:?}",
                self.scenario,
                other.len()
            ),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Fixture
// ---------------------------------------------------------------------------------------

/// Path of the `cij-fixture` binary cargo built for these tests.
pub fn fixture_exe() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_cij-fixture"))
}

/// `<target>/cij-test-procs`: the parent of every fixture directory (`target` being the
/// parent of `CARGO_TARGET_TMPDIR`, so it honours `CARGO_TARGET_DIR`).
pub fn procs_root() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("cij-test-procs")
}

/// Creates a fresh, unique `<procs_root>/<label>-<pid>-<n>` directory; returns its
/// canonical path (what /proc/PID/cwd will show).
pub fn fresh_dir(label: &str) -> PathBuf {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let root = procs_root();
    fs::create_dir_all(&root).unwrap_or_else(|e| panic!("cannot create {}: {e}", root.display()));
    // Short labels keep unix socket paths under the 108-byte sun_path limit.
    let label: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                c
            } else {
                '_'
            }
        })
        .take(32)
        .collect();
    for _attempt in 0..1000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let path = root.join(format!("{label}-{}-{n}", std::process::id()));
        match fs::create_dir(&path) {
            Ok(()) => {
                return path
                    .canonicalize()
                    .unwrap_or_else(|e| panic!("cannot canonicalize {}: {e}", path.display()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => panic!("cannot create {}: {e}", path.display()),
        }
    }
    panic!(
        "no free directory name under {} after 1000 tries",
        root.display()
    )
}

/// A fresh directory (see [`fresh_dir`]) for running processes outside [`Fixture`];
/// dropping it sweeps (see [`sweep`]) whatever still runs in it, then removes it.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    pub fn new(label: &str) -> ScratchDir {
        ScratchDir {
            path: fresh_dir(label),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        match sweep(&self.path, &[], CLEANUP_TIMEOUT) {
            Ok(()) => {
                let _ = fs::remove_dir_all(&self.path);
            }
            Err(why) if std::thread::panicking() => eprintln!("{why}"),
            Err(why) => panic!("{why}"),
        }
    }
}

/// A label for the current test: the last segment of the test thread's name.
fn test_label(fallback: &str) -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.rsplit("::").next().unwrap_or(name).to_string(),
        _ => fallback.to_string(),
    }
}

/// How to run one fixture; see [`Fixture::builder`].
#[derive(Debug, Clone)]
pub struct FixtureBuilder {
    scenario: String,
    args: Vec<String>,
    set_env: Vec<(String, String)>,
    remove_env: Vec<String>,
    stay: bool,
    share_process_group: bool,
}

impl FixtureBuilder {
    /// Adds scenario options (e.g. `["--depth", "50"]`).
    pub fn args(mut self, args: &[&str]) -> Self {
        self.args.extend(args.iter().map(|a| a.to_string()));
        self
    }

    /// Sets an environment variable for the fixture (and so for the children it forks).
    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.set_env.push((key.into(), value.into()));
        self
    }

    /// Removes an inherited environment variable from the fixture's environment.
    pub fn env_remove(mut self, key: &str) -> Self {
        self.remove_env.push(key.into());
        self
    }

    /// Passes `--stay`: the fixture's main process stays alive until
    /// [`Fixture::close_stdin`] (or cleanup).
    pub fn stay(mut self) -> Self {
        self.stay = true;
        self
    }

    /// Leaves the fixture in the test binary's process group. By default it gets a
    /// process group of its own, so a group-wide kill of a leaked `sleep` child (which
    /// shares the fixture's group) cannot hit the test harness.
    pub fn share_process_group(mut self) -> Self {
        self.share_process_group = true;
        self
    }

    /// Runs the fixture and waits for its JSON line. Panics with the fixture's stderr
    /// if it fails; whatever it started is cleaned up first.
    pub fn spawn(self) -> Fixture {
        let dir = fresh_dir(&test_label(&self.scenario));
        let stderr_path = dir.join(STDERR_FILE);
        let stderr = File::create(&stderr_path)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", stderr_path.display()));
        let mut cmd = Command::new(fixture_exe());
        cmd.arg(&self.scenario).args(&self.args);
        if self.stay {
            cmd.arg("--stay");
        }
        for key in &self.remove_env {
            cmd.env_remove(key);
        }
        for (key, value) in &self.set_env {
            cmd.env(key, value);
        }
        if !self.share_process_group {
            std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
        }
        cmd.current_dir(&dir)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr);
        let label = format!("cij-fixture {} {}", self.scenario, self.args.join(" "));
        let child = match cmd.spawn() {
            Ok(child) => child,
            Err(e) => {
                let _ = fs::remove_dir_all(&dir);
                panic!("cannot start `{label}` ({}): {e}", fixture_exe().display());
            }
        };
        // From here on `fx` owns the directory and the child: any panic below runs its
        // Drop, which kills whatever the fixture managed to start.
        let mut fx = Fixture {
            spawned: Spawned::default(),
            dir,
            child,
            stdin: None,
            label,
            cleaned: false,
        };
        fx.stdin = fx.child.stdin.take();
        let Some(stdout) = fx.child.stdout.take() else {
            fx.fail("stdout was not captured")
        };
        let line = match read_line_until(stdout, Instant::now() + SPAWN_TIMEOUT) {
            Ok(line) => line,
            Err(why) => fx.fail(&why),
        };
        fx.spawned = match serde_json::from_str(&line) {
            Ok(spawned) => spawned,
            Err(e) => fx.fail(&format!("unparsable JSON line ({e}): {line}")),
        };
        if !self.stay {
            match fx.wait_fixture_exit(Duration::from_secs(10)) {
                Some(status) if status.success() => {}
                Some(status) => fx.fail(&format!("printed its JSON but then exited with {status}")),
                None => fx.fail("did not exit after printing its JSON line"),
            }
        }
        fx
    }
}

/// One running `cij-fixture` scenario. Dropping it kills, by identity, everything the
/// scenario started (see [`Fixture::cleanup`]) and panics if anything survives (unless
/// the thread is already panicking, in which case it reports on stderr).
#[derive(Debug)]
pub struct Fixture {
    spawned: Spawned,
    dir: PathBuf,
    child: Child,
    stdin: Option<ChildStdin>,
    label: String,
    cleaned: bool,
}

impl Fixture {
    /// Runs `cij-fixture SCENARIO ARGS...` (no `--stay`, own process group).
    pub fn spawn(scenario: &str, args: &[&str]) -> Fixture {
        Fixture::builder(scenario).args(args).spawn()
    }

    /// A builder for env changes, `--stay`, process-group choice.
    pub fn builder(scenario: &str) -> FixtureBuilder {
        FixtureBuilder {
            scenario: scenario.into(),
            args: Vec::new(),
            set_env: Vec::new(),
            remove_env: Vec::new(),
            stay: false,
            share_process_group: false,
        }
    }

    /// The parsed JSON line.
    pub fn spawned(&self) -> &Spawned {
        &self.spawned
    }

    /// Shorthand for `spawned().procs`.
    pub fn procs(&self) -> &[Proc] {
        &self.spawned.procs
    }

    /// Shorthand for `spawned().role(role)`.
    pub fn proc(&self, role: &str) -> &Proc {
        self.spawned.role(role)
    }

    /// The fixture's main process.
    pub fn fixture(&self) -> Ident {
        self.spawned.fixture
    }

    /// The fixture's cwd, inherited by every process it started.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The fixture's identity plus every reported proc: what a test checks is dead
    /// after dropping the fixture.
    pub fn idents(&self) -> Vec<Ident> {
        std::iter::once(self.spawned.fixture)
            .chain(self.spawned.idents())
            .collect()
    }

    /// Closes the fixture's stdin: a `--stay` fixture then exits (cleaning nothing).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Waits up to `timeout` for the fixture's main process to exit and reaps it.
    pub fn wait_fixture_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut status = None;
        wait_until(Instant::now() + timeout, || {
            status = self.child.try_wait().ok().flatten();
            status.is_some()
        });
        status
    }

    /// Kills everything the fixture started and waits until it is all dead; idempotent.
    ///
    /// Kills the fixture's main process (our own unreaped child, so its pid cannot have
    /// been reused), then sweeps in rounds, bounded by [`CLEANUP_TIMEOUT`]: every
    /// reported proc still alive plus every live process whose cwd is under
    /// [`Fixture::dir`], each by identity ([`kill_ident`]); later rounds catch what a
    /// respawner forked meanwhile. Removes the directory once nothing is left in it.
    pub fn cleanup(&mut self) -> Result<(), String> {
        if self.cleaned {
            return Ok(());
        }
        self.cleaned = true;
        self.stdin = None;
        // `Child::kill` does nothing once the child is reaped; `wait` cannot hang after SIGKILL.
        let _ = self.child.kill();
        let _ = self.child.wait();
        sweep(&self.dir, &self.spawned.idents(), CLEANUP_TIMEOUT)
            .map_err(|why| format!("cleanup of `{}` failed: {why}", self.label))?;
        let _ = fs::remove_dir_all(&self.dir);
        Ok(())
    }

    /// Panics with `why`, the fixture's exit status and its stderr.
    fn fail(&mut self, why: &str) -> ! {
        let status = match self.wait_fixture_exit(Duration::from_secs(5)) {
            Some(status) => status.to_string(),
            None => "still running".into(),
        };
        let stderr = fs::read_to_string(self.dir.join(STDERR_FILE)).unwrap_or_default();
        panic!(
            "`{}` failed: {why}\nfixture status: {status}\nfixture stderr:\n{stderr}",
            self.label
        )
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        if let Err(why) = self.cleanup() {
            if std::thread::panicking() {
                eprintln!("{why}");
            } else {
                panic!("{why}");
            }
        }
    }
}

/// Reads up to the first newline from the fixture's stdout, giving up at `deadline`.
fn read_line_until(mut stdout: ChildStdout, deadline: Instant) -> Result<String, String> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.iter().position(|&b| b == b'\n') {
            return String::from_utf8(buf[..end].to_vec())
                .map_err(|e| format!("stdout is not UTF-8: {e}"));
        }
        let remaining = deadline.saturating_duration_since(Instant::now());
        if remaining.is_zero() {
            return Err(format!(
                "no JSON line within {SPAWN_TIMEOUT:?} (got {:?})",
                String::from_utf8_lossy(&buf)
            ));
        }
        let timeout = rustix::time::Timespec::try_from(remaining).map_err(|e| e.to_string())?;
        let mut fds = [rustix::event::PollFd::new(
            &stdout,
            rustix::event::PollFlags::IN,
        )];
        match rustix::event::poll(&mut fds, Some(&timeout)) {
            Ok(0) | Err(rustix::io::Errno::INTR) => continue,
            Ok(_) => {}
            Err(e) => return Err(format!("poll on stdout: {e}")),
        }
        match stdout.read(&mut chunk) {
            Ok(0) => {
                return Err(format!(
                    "stdout closed before a JSON line (got {:?})",
                    String::from_utf8_lossy(&buf)
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("reading stdout: {e}")),
        }
    }
}

// ---------------------------------------------------------------------------------------
// Killing by identity
// ---------------------------------------------------------------------------------------

/// Sends `signal` to exactly the process `id`: opens a pidfd, re-checks the start time
/// AFTER opening it (so a recycled pid is never signalled), then signals the pidfd.
/// Returns true if the signal was delivered to that process, false if it is gone (or
/// could not be signalled). Refuses pid <= 1 and the test process itself.
pub fn kill_ident(id: &Ident, signal: Signal) -> bool {
    assert!(
        id.pid > 1 && id.pid != std::process::id() as i32,
        "refusing to signal {id:?} (init or the test process itself)"
    );
    let Some(pid) = Pid::from_raw(id.pid) else {
        return false;
    };
    let Ok(pidfd) = pidfd_open(pid, PidfdFlags::empty()) else {
        return false;
    };
    match read_stat(id.pid) {
        Some(stat) if stat.start_ticks == id.start_ticks => {
            pidfd_send_signal(&pidfd, signal).is_ok()
        }
        _ => false,
    }
}

/// Kills (SIGKILL, by identity) every process in `known` that is alive and every live
/// process whose cwd is `dir` or below, in rounds (each waiting until its victims are
/// dead, i.e. gone or zombie) until a round finds nothing alive. Bounded by `timeout`
/// and 50 rounds. Never signals anything else. Err lists the survivors.
pub fn sweep(dir: &Path, known: &[Ident], timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    let mut targeted: HashSet<Ident> = known.iter().copied().collect();
    for _round in 0..50 {
        // Everything signalled so far that still lives, plus whatever now runs in `dir`
        // (a respawner may have forked replacements while the last round was dying).
        let mut targets: Vec<Ident> = targeted.iter().copied().filter(alive).collect();
        for id in live_under(dir) {
            if !targets.contains(&id) {
                targets.push(id);
            }
        }
        if targets.is_empty() {
            return Ok(());
        }
        if Instant::now() >= deadline {
            let described: Vec<String> = targets
                .iter()
                .map(|id| {
                    format!(
                        "{} {:?} {:?}",
                        id.pid,
                        read_stat(id.pid).map(|s| s.state),
                        cmdline_of(id.pid)
                    )
                })
                .collect();
            return Err(format!(
                "still alive after {timeout:?} under {}: {described:?}",
                dir.display()
            ));
        }
        for id in &targets {
            kill_ident(id, Signal::KILL);
        }
        wait_until(deadline, || targets.iter().all(|id| !alive(id)));
        targeted.extend(targets);
    }
    Err(format!(
        "processes kept appearing under {} for 50 rounds",
        dir.display()
    ))
}

// ---------------------------------------------------------------------------------------
// /proc ground truth
// ---------------------------------------------------------------------------------------

/// The fields of /proc/PID/stat the tests need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    /// The thread count (field 20): a `Z` leader whose other threads run is alive.
    pub threads: u32,
    pub start_ticks: u64,
}

impl Stat {
    pub fn ident(&self) -> Ident {
        Ident {
            pid: self.pid,
            start_ticks: self.start_ticks,
        }
    }

    /// Zombie or dead, with no thread left but its leader: counts as dead everywhere. (A
    /// process whose main thread exited while others run shows `Z` and is alive.)
    pub fn is_dead(&self) -> bool {
        matches!(self.state, 'Z' | 'X' | 'x') && self.threads <= 1
    }
}

/// Parses the text of /proc/PID/stat, splitting on the LAST ") " because comm may
/// contain spaces and parentheses.
pub fn parse_stat(text: &str) -> Option<Stat> {
    let (head, rest) = text.rsplit_once(") ")?;
    let (pid, comm) = head.split_once(" (")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); field N is fields[N - 3].
    let field = |n: usize| fields.get(n - 3).copied();
    Some(Stat {
        pid: pid.trim().parse().ok()?,
        comm: comm.to_string(),
        state: field(3)?.chars().next()?,
        ppid: field(4)?.parse().ok()?,
        pgid: field(5)?.parse().ok()?,
        sid: field(6)?.parse().ok()?,
        threads: field(20)?.parse().ok()?,
        start_ticks: field(22)?.parse().ok()?,
    })
}

/// /proc/PID/stat of `pid`, if it exists (zombies included).
pub fn read_stat(pid: i32) -> Option<Stat> {
    parse_stat(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// True iff `id` names a live process: /proc/PID/stat exists with the same start time
/// and the state is not zombie/dead.
pub fn alive(id: &Ident) -> bool {
    read_stat(id.pid).is_some_and(|s| s.start_ticks == id.start_ticks && !s.is_dead())
}

/// Polls `cond` every [`POLL_STEP`] until it holds (true) or `deadline` passes (false).
pub fn wait_until(deadline: Instant, mut cond: impl FnMut() -> bool) -> bool {
    loop {
        if cond() {
            return true;
        }
        let now = Instant::now();
        if now >= deadline {
            return false;
        }
        std::thread::sleep(POLL_STEP.min(deadline - now));
    }
}

/// Kills the processes a test left, by identity, also when an assertion fails.
pub struct KillOnDrop(pub Vec<Ident>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for id in self.0.iter().filter(|id| alive(id)) {
            kill_ident(id, Signal::KILL);
        }
        wait_dead(&self.0, Duration::from_secs(10));
    }
}

/// Waits up to `timeout` until none of `ids` is alive.
pub fn wait_dead(ids: &[Ident], timeout: Duration) -> bool {
    wait_until(Instant::now() + timeout, || ids.iter().all(|id| !alive(id)))
}

/// Every pid listed in /proc.
pub fn all_pids() -> Vec<i32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|s| s.parse().ok()))
        .collect()
}

/// Live children of `pid` (by ppid), in pid order.
pub fn children_of(pid: i32) -> Vec<Ident> {
    let mut kids: Vec<Ident> = all_pids()
        .into_iter()
        .filter_map(read_stat)
        .filter(|s| s.ppid == pid && !s.is_dead())
        .map(|s| s.ident())
        .collect();
    kids.sort_by_key(|id| id.pid);
    kids
}

/// The cwd of `pid` (None if unreadable or a zombie), without the kernel's " (deleted)".
pub fn cwd_of(pid: i32) -> Option<PathBuf> {
    let cwd = fs::read_link(format!("/proc/{pid}/cwd")).ok()?;
    Some(
        match cwd.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
            Some(stripped) => PathBuf::from(stripped),
            None => cwd,
        },
    )
}

/// Live processes (other than this one) whose cwd is `dir` or below it.
pub fn live_under(dir: &Path) -> Vec<Ident> {
    let me = std::process::id() as i32;
    all_pids()
        .into_iter()
        .filter(|&pid| pid != me)
        .filter_map(|pid| {
            // cwd first: it is unreadable for zombies, so most pids stop here cheaply.
            cwd_of(pid).filter(|cwd| cwd.starts_with(dir))?;
            let stat = read_stat(pid).filter(|s| !s.is_dead())?;
            Some(stat.ident())
        })
        .collect()
}

/// comm of `pid` (/proc/PID/comm without the newline).
pub fn comm_of(pid: i32) -> Option<String> {
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).ok()?;
    Some(comm.trim_end_matches('\n').to_string())
}

/// argv of `pid` from /proc/PID/cmdline.
pub fn cmdline_of(pid: i32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(split_nul(&raw))
}

/// The environment of `pid` as `KEY=VALUE` strings, from /proc/PID/environ.
pub fn environ_of(pid: i32) -> Option<Vec<String>> {
    let raw = fs::read(format!("/proc/{pid}/environ")).ok()?;
    Some(split_nul(&raw))
}

/// Whether `pid`'s environment has `key`. Panics if it cannot be read, so a test never
/// passes vacuously on an unreadable environ.
pub fn environ_has(pid: i32, key: &str) -> bool {
    let env = environ_of(pid).unwrap_or_else(|| panic!("cannot read /proc/{pid}/environ"));
    env.iter()
        .any(|kv| kv.split_once('=').map_or(kv.as_str(), |(k, _)| k) == key)
}

fn split_nul(raw: &[u8]) -> Vec<String> {
    raw.split(|&b| b == 0)
        .filter(|s| !s.is_empty())
        .map(|s| String::from_utf8_lossy(s).into_owned())
        .collect()
}

/// The value of `field` (e.g. "Uid", "SigIgn") in /proc/PID/status.
pub fn status_field(pid: i32, field: &str) -> Option<String> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        let (name, value) = line.split_once(':')?;
        (name == field).then(|| value.trim().to_string())
    })
}

/// The four ids (real, effective, saved, fs) of the "Uid" or "Gid" line of /proc/PID/status.
pub fn ids_of(pid: i32, field: &str) -> Option<Vec<u32>> {
    status_field(pid, field)?
        .split_whitespace()
        .map(|n| n.parse().ok())
        .collect()
}

/// A signal mask line of /proc/PID/status ("SigIgn", "SigPnd", "ShdPnd", ...) as bits.
pub fn sigmask_of(pid: i32, field: &str) -> Option<u64> {
    u64::from_str_radix(&status_field(pid, field)?, 16).ok()
}

/// Whether something listens on TCP `port` (state 0A in /proc/net/tcp or tcp6).
pub fn port_is_listening_tcp(port: u16) -> bool {
    ["/proc/net/tcp", "/proc/net/tcp6"].iter().any(|table| {
        let Ok(text) = fs::read_to_string(table) else {
            return false;
        };
        text.lines().skip(1).any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let local_port = fields
                .get(1)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            local_port == Some(port) && fields.get(3) == Some(&"0A")
        })
    })
}

/// Whether a listening unix socket is bound at `path` (in /proc/net/unix, flag
/// __SO_ACCEPTCON = 0x10000).
pub fn unix_listening(path: &Path) -> bool {
    let Ok(text) = fs::read_to_string("/proc/net/unix") else {
        return false;
    };
    let Some(wanted) = path.to_str() else {
        return false;
    };
    text.lines().skip(1).any(|line| {
        // Num RefCount Protocol Flags Type St Inode Path; the path (last, optional) may
        // contain spaces, so peel the first seven fields off one by one.
        let mut rest = line;
        let mut fields = Vec::with_capacity(7);
        for _ in 0..7 {
            let trimmed = rest.trim_start();
            let end = trimmed.find(' ').unwrap_or(trimmed.len());
            fields.push(&trimmed[..end]);
            rest = &trimmed[end..];
        }
        let listening = fields
            .get(3)
            .and_then(|f| u32::from_str_radix(f, 16).ok())
            .is_some_and(|f| f & 0x10000 != 0);
        listening && rest.strip_prefix(' ') == Some(wanted)
    })
}
