//! Files other users can write never steer ci-janitor (issue 11). Each finding of the
//! issue is reproduced here as it was met: another user (`nobody`, through `setpriv`)
//! prepares the default state directory under `$TMPDIR` before root's ci-janitor runs.
//! Also: pid files that name something other than this state's guard, dry runs, a stopped
//! guard under a short deadline, unwritable reports, and workflow-command injection.

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crate::janitor::{janitor, output_of, snapshot};
use crate::support::{alive, kill_ident, serial, wait_until, Fixture, Ident, ScratchDir, Signal};

const NOBODY: &str = "65534";

/// Runs `script` with `sh` as uid/gid 65534, no supplementary groups, in `cwd`.
fn as_nobody(cwd: &Path, script: &str) {
    let out = Command::new("setpriv")
        .args([
            "--reuid",
            NOBODY,
            "--regid",
            NOBODY,
            "--clear-groups",
            "sh",
            "-c",
            script,
        ])
        .current_dir(cwd)
        .output()
        .expect("setpriv");
    assert!(
        out.status.success(),
        "`{script}` as nobody: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A directory like `/tmp` (root's, 1777) inside `scratch`, for `TMPDIR`.
fn shared_tmp(scratch: &Path) -> PathBuf {
    let tmp = scratch.join("tmp");
    std::fs::create_dir(&tmp).unwrap();
    std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o1777)).unwrap();
    tmp
}

/// A root-only directory holding a root-only file with known content.
fn root_only(scratch: &Path, file: &str) -> PathBuf {
    let dir = scratch.join("root-only");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    let path = dir.join(file);
    std::fs::write(&path, b"precious\n").unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

/// `ci-janitor` with the default state path under `tmp` (no RUNNER_TEMP, no
/// XDG_RUNTIME_DIR: cron, a service, sudo).
fn janitor_with_tmpdir(tmp: &Path) -> Command {
    let mut c = janitor();
    c.env("TMPDIR", tmp).env_remove("XDG_RUNTIME_DIR");
    c
}

fn default_dir(tmp: &Path) -> PathBuf {
    tmp.join("ci-janitor-0").join("ci-janitor")
}

fn stderr_of(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Kills (by identity) a guard a pid file names, if it is alive: cleanup for a test whose
/// expectation failed and left a guard running.
fn kill_guard_named_in(pid_file: &Path) {
    let Ok(bytes) = std::fs::read(pid_file) else {
        return;
    };
    let Ok(id) = serde_json::from_slice::<Ident>(&bytes) else {
        return;
    };
    if alive(&id)
        && crate::support::cmdline_of(id.pid).is_some_and(|a| a.iter().any(|s| s == "guard"))
    {
        kill_ident(&id, Signal::KILL);
    }
}

fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .unwrap()
        .trim()
        .to_owned()
}

/// Regression (issue 11, finding 1): another user made the state directory a symbolic link
/// to a root-only directory; root's `snapshot` overwrote the root-only file there.
#[test]
fn snapshot_refuses_a_state_directory_another_user_planted() {
    let _serial = serial();
    let scratch = ScratchDir::new("trust_planted_link");
    let tmp = shared_tmp(scratch.path());
    let victim = root_only(scratch.path(), "state.json");
    let target = victim.parent().unwrap().display().to_string();
    as_nobody(
        &tmp,
        &format!("mkdir -m 755 ci-janitor-0 && ln -s '{target}' ci-janitor-0/ci-janitor"),
    );
    let mut c = janitor_with_tmpdir(&tmp);
    c.arg("snapshot");
    let out = output_of(c);
    assert_eq!(out.status.code(), Some(2), "refused as bad input");
    assert!(stderr_of(&out).contains("owned by uid 65534"), "says why");
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");

    // The same directory made by hand, with a link where the state file goes.
    as_nobody(
        &tmp,
        &format!(
            "rm ci-janitor-0/ci-janitor && mkdir -m 777 ci-janitor-0/ci-janitor && \
             ln -s '{}' ci-janitor-0/ci-janitor/state.json",
            victim.display()
        ),
    );
    let mut c = janitor_with_tmpdir(&tmp);
    c.arg("snapshot");
    let out = output_of(c);
    assert_eq!(out.status.code(), Some(2));
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
}

/// Regression (issue 11, finding 2): `guard start` appended its log and journal to
/// root-only files through links another user planted in a directory of theirs.
#[test]
fn guard_start_refuses_links_to_root_only_files() {
    let _serial = serial();
    let scratch = ScratchDir::new("trust_guard_links");
    let tmp = shared_tmp(scratch.path());
    let log_victim = root_only(scratch.path(), "log");
    let journal_victim = root_only(scratch.path(), "journal");
    as_nobody(
        &tmp,
        &format!(
            "mkdir -p -m 777 ci-janitor-0/ci-janitor && cd ci-janitor-0/ci-janitor && \
             ln -s '{}' state.guard.log && ln -s '{}' state.journal.jsonl",
            log_victim.display(),
            journal_victim.display()
        ),
    );
    let mut c = janitor_with_tmpdir(&tmp);
    c.args(["guard", "start", "--poll", "--watch"])
        .arg(std::process::id().to_string());
    let out = output_of(c);
    kill_guard_named_in(&default_dir(&tmp).join("state.guard.pid"));
    assert_eq!(out.status.code(), Some(2), "refused as bad input");
    assert!(stderr_of(&out).contains("owned by uid 65534"), "says why");
    assert_eq!(std::fs::read(&log_victim).unwrap(), b"precious\n");
    assert_eq!(std::fs::read(&journal_victim).unwrap(), b"precious\n");
}

/// Regression (issue 11, finding 3): a pid file another user planted beside a state file
/// made root's sweep kill root's own daemon.
#[test]
fn sweep_refuses_a_pid_file_another_user_planted() {
    let _serial = serial();
    let scratch = ScratchDir::new("trust_planted_pid");
    let fx = Fixture::spawn("sleep", &[]);
    let daemon = fx.proc("sleeper").ident();
    let tmp = shared_tmp(scratch.path());
    // A genuine state file (anyone can copy one), taken after the daemon started.
    let ours = scratch.path().join("ours");
    std::fs::create_dir(&ours).unwrap();
    let state = snapshot(&ours);
    let readable = scratch.path().join("state-copy.json");
    std::fs::copy(&state, &readable).unwrap();
    std::fs::set_permissions(&readable, std::fs::Permissions::from_mode(0o644)).unwrap();
    let pid_file = format!(
        r#"{{"pid":{},"start_ticks":{},"boot_id":"{}","mode":"polling","detail":"","root":null,"started_at_unix_ms":0}}"#,
        daemon.pid,
        daemon.start_ticks,
        boot_id()
    );
    as_nobody(
        &tmp,
        &format!(
            "mkdir -p -m 777 ci-janitor-0/ci-janitor && cd ci-janitor-0/ci-janitor && \
             cp '{}' state.json && printf '%s' '{pid_file}' > state.guard.pid",
            readable.display()
        ),
    );
    let mut c = janitor_with_tmpdir(&tmp);
    c.args(["sweep", "--grace", "1s", "--deadline", "5s"]);
    let out = output_of(c);
    assert_eq!(out.status.code(), Some(2), "refused as bad input");
    assert!(alive(&daemon), "root's daemon was signalled");
}

/// A pid file in our own directory that names a process which is not this state's guard
/// is not obeyed: the process is not signalled and the sweep says it distrusted the file.
#[test]
fn a_pid_file_naming_another_process_is_distrusted() {
    let _serial = serial();
    let scratch = ScratchDir::new("trust_pid_other");
    let fx = Fixture::spawn("sleep", &[]);
    let daemon = fx.proc("sleeper").ident();
    let state = snapshot(scratch.path());
    let pid_file = format!(
        r#"{{"pid":{},"start_ticks":{},"boot_id":"{}","mode":"polling","detail":"","root":null,"started_at_unix_ms":0}}"#,
        daemon.pid,
        daemon.start_ticks,
        boot_id()
    );
    let pid_path = scratch.path().join("state.guard.pid");
    std::fs::write(&pid_path, pid_file).unwrap();
    std::fs::set_permissions(&pid_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    for dry_run in [true, false] {
        let mut c = janitor();
        c.args(["sweep", "--grace", "1s", "--deadline", "5s", "--state"])
            .arg(&state);
        if dry_run {
            c.arg("--dry-run");
        }
        let out = output_of(c);
        assert_eq!(out.status.code(), Some(0), "nothing leaked");
        assert!(
            alive(&daemon),
            "the process the pid file names was signalled"
        );
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("distrusted"), "says it distrusted the file");
    }
    drop(fx);
}

/// A stopped (SIGSTOP) guard does not hold the sweep: it is continued after SIGTERM, and
/// the wait for it is bounded by what is left of `--deadline` (no timing is asserted here;
/// the old fixed wait was 10 s per signal).
#[test]
fn a_stopped_guard_does_not_hold_the_sweep_past_its_deadline() {
    let _serial = serial();
    let scratch = ScratchDir::new("trust_stopped_guard");
    let state = snapshot(scratch.path());
    let mut c = janitor();
    c.args(["guard", "start", "--poll", "--state"])
        .arg(&state)
        .arg("--watch")
        .arg(std::process::id().to_string());
    assert!(output_of(c).status.success());
    let pid_path = scratch.path().join("state.guard.pid");
    let guard: Ident = serde_json::from_slice(&std::fs::read(&pid_path).unwrap()).unwrap();
    assert!(kill_ident(&guard, Signal::STOP));
    let mut c = janitor();
    c.args(["sweep", "--grace", "0s", "--deadline", "2s", "--state"])
        .arg(&state);
    let out = output_of(c);
    let gone = wait_until(Instant::now() + Duration::from_secs(10), || !alive(&guard));
    if !gone {
        kill_ident(&guard, Signal::KILL);
    }
    assert_eq!(out.status.code(), Some(0));
    assert!(gone, "the stopped guard was stopped for good");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("stopped the guard"), "{text}");
}

/// A job process of `tid` with a hostile argv, in a process group of its own (so a sweep
/// that kills its group kills nothing of ours), with its cwd in `dir` (so cleanup finds it).
fn hostile_leak(dir: &Path, tid: &str, argv: &[&str]) -> (std::process::Child, Ident) {
    use std::os::unix::process::CommandExt;
    let mut c = Command::new("sh");
    c.arg("-c")
        .arg("sleep 1000; : \"$@\"")
        .args(argv)
        .current_dir(dir)
        .env("RUNNER_TRACKING_ID", tid)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .process_group(0);
    let child = c.spawn().unwrap();
    let pid = child.id() as i32;
    let mut id = None;
    assert!(wait_until(Instant::now() + Duration::from_secs(10), || {
        id = Ident::of(pid);
        id.is_some() && !crate::support::children_of(pid).is_empty()
    }));
    (child, id.unwrap())
}

/// Waits for a leak the sweep should have killed; kills it (by identity) if it did not.
fn reap(mut child: std::process::Child, id: Ident) -> bool {
    let dead = wait_until(Instant::now() + Duration::from_secs(10), || !alive(&id));
    if !dead {
        kill_ident(&id, Signal::KILL);
    }
    let _ = child.wait();
    dead
}

fn sweep_cmd(state: &Path, tid: &str) -> Command {
    let mut c = crate::janitor::janitor_in_new_session();
    c.args(["sweep", "--grace", "1s", "--color", "never", "--state"])
        .arg(state)
        .env("RUNNER_TRACKING_ID", tid);
    c
}

fn dev_full() -> std::fs::File {
    std::fs::File::options()
        .write(true)
        .open("/dev/full")
        .unwrap()
}

/// The exit code is the verdict: reports that cannot be written (a device, a path below a
/// file, a full stdout, a closed stdout) are warnings and change neither 1 nor 0.
#[test]
fn unwritable_reports_never_change_the_verdict() {
    let _serial = serial();
    let scratch = ScratchDir::new("trust_unwritable");
    let tid = format!("github_test_unwritable_{}", std::process::id());
    let state = snapshot(scratch.path());
    let not_a_dir = scratch.path().join("file");
    std::fs::write(&not_a_dir, b"").unwrap();
    let bad = [
        "--report-json",
        "/dev/full",
        "--junit",
        &format!("{}/junit.xml", not_a_dir.display()),
        "--summary",
        "/dev/full",
    ];
    // Nothing leaked: 0 whatever could not be written, stdout full or closed.
    let mut c = sweep_cmd(&state, &tid);
    c.args(bad).stdout(dev_full());
    let out = output_of(c);
    assert_eq!(out.status.code(), Some(0));
    let err = stderr_of(&out);
    for named in [
        "JSON report /dev/full",
        "JUnit report",
        "job summary /dev/full",
        "stdout",
    ] {
        assert!(err.contains(named), "{named} not named: {err}");
    }
    let mut c = Command::new("sh");
    c.args(["-c", "exec \"$@\" >&-", "sh"])
        .arg(crate::janitor::janitor_exe())
        .args(["sweep", "--grace", "1s", "--state"])
        .arg(&state)
        .env("RUNNER_TRACKING_ID", &tid)
        .env_remove("GITHUB_ACTIONS");
    assert_eq!(output_of(c).status.code(), Some(0));

    // A leak: 1, the same.
    let (child, leak) = hostile_leak(scratch.path(), &tid, &["plain"]);
    let mut c = sweep_cmd(&state, &tid);
    c.args(bad).stdout(dev_full());
    let code = output_of(c).status.code();
    assert!(reap(child, leak), "the leak was killed");
    assert_eq!(code, Some(1));

    // Under Actions: the runner's files too, and each is a warning annotation.
    let (child, leak) = hostile_leak(scratch.path(), &tid, &["plain"]);
    let mut c = sweep_cmd(&state, &tid);
    c.args(bad)
        .env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", "/dev/full")
        .env("GITHUB_STEP_SUMMARY", "/dev/full");
    let out = output_of(c);
    assert!(reap(child, leak), "the leak was killed");
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    for named in [
        "JSON report /dev/full",
        "step outputs /dev/full",
        "JUnit report",
    ] {
        assert!(
            text.lines()
                .any(|l| l.starts_with("::warning ") && l.contains(named)),
            "no annotation for {named}: {text}"
        );
    }
    assert!(wait_until(Instant::now() + Duration::from_secs(10), || {
        !alive(&leak)
    }));
}

/// Lines a runner would read as workflow commands: every line of stderr, and every line of
/// stdout outside `::stop-commands::TOKEN` … `::TOKEN::`.
fn commands_read(stdout: &str, stderr: &str) -> Vec<String> {
    let mut read = Vec::new();
    let mut stopped: Option<String> = None;
    for line in stdout.lines() {
        let t = line.trim_start();
        match &stopped {
            Some(token) if t == format!("::{token}::") => stopped = None,
            Some(_) => {}
            None => {
                if let Some(token) = t.strip_prefix("::stop-commands::") {
                    stopped = Some(token.to_owned());
                } else if t.starts_with("::") || t.starts_with("##[") {
                    read.push(t.to_owned());
                }
            }
        }
    }
    for line in stderr.lines() {
        let t = line.trim_start();
        if t.starts_with("::") || t.starts_with("##[") {
            read.push(t.to_owned());
        }
    }
    read
}

/// An argv with a line break and a workflow command never reaches the runner as one, end
/// to end through `ci-janitor sweep` under `GITHUB_ACTIONS=true`.
#[test]
fn a_hostile_argv_never_reaches_the_runner_as_a_command() {
    let _serial = serial();
    let scratch = ScratchDir::new("trust_inject");
    let tid = format!("github_test_inject_{}", std::process::id());
    let state = snapshot(scratch.path());
    let (child, leak) = hostile_leak(
        scratch.path(),
        &tid,
        &[
            "x\n::error title=injected::pwned",
            "y\r\n::add-mask::injected-mask\n##[error]injected-v1",
            "--password=hunter2\n::stop-commands::injected",
        ],
    );
    let mut c = sweep_cmd(&state, &tid);
    c.env("GITHUB_ACTIONS", "true")
        .env("GITHUB_OUTPUT", scratch.path().join("output"))
        .env("GITHUB_STEP_SUMMARY", scratch.path().join("summary.md"))
        .env("CI_JANITOR_LOG", "info");
    let out = output_of(c);
    assert!(reap(child, leak), "the leak was killed");
    assert_eq!(out.status.code(), Some(1));
    let read = commands_read(
        &String::from_utf8_lossy(&out.stdout),
        &String::from_utf8_lossy(&out.stderr),
    );
    assert!(!read.is_empty(), "the sweep annotated nothing");
    for line in &read {
        let command = line
            .trim_start_matches("::")
            .split([' ', ':'])
            .next()
            .unwrap_or("");
        assert!(
            ["add-mask", "error", "warning", "notice", "group", "endgroup"].contains(&command),
            "{line}"
        );
        // The redacted password may be named only to mask it.
        assert!(
            !line.contains("hunter2") || line == "::add-mask::hunter2",
            "{line}"
        );
        // An injected word may appear inside our own commands' data (escaped), never as the
        // start of a command.
        for injected in ["injected", "pwned"] {
            assert!(
                !line.starts_with(&format!("::error title={injected}"))
                    && !line.starts_with(&format!("::add-mask::{injected}"))
                    && !line.starts_with("##["),
                "{line}"
            );
        }
    }
}

/// Secrets in command lines never reach a file or a status: the journal's exec records, the
/// guard's log (0600) and `guard status`, and `run`'s echo of its command.
#[test]
fn secrets_are_redacted_before_anything_is_written() {
    use std::io::Write;
    let _serial = serial();
    let scratch = ScratchDir::new("trust_secrets");
    let state = snapshot(scratch.path());
    // The job: a shell that starts what we write to it, marked as `snapshot --export` would.
    let marker = format!("trust-secrets-{}", std::process::id());
    let mut root = Command::new("sh")
        .arg("-s")
        .env("CI_JANITOR_RUN", &marker)
        .current_dir(scratch.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .process_group(0)
        .spawn()
        .unwrap();
    let root_id = {
        let mut id = None;
        assert!(wait_until(Instant::now() + Duration::from_secs(10), || {
            id = Ident::of(root.id() as i32);
            id.is_some()
        }));
        id.unwrap()
    };
    let mut c = janitor();
    c.args(["guard", "start", "--poll", "--state"])
        .arg(&state)
        .env("CI_JANITOR_RUN", &marker);
    let started = output_of(c).status.success();
    let pid_path = scratch.path().join("state.guard.pid");
    let mut stdin = root.stdin.take().unwrap();
    let check = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        assert!(started);
        writeln!(
            stdin,
            "sh -c 'sleep 1000' mysql -phunter2 & sh -c 'sleep 1000' sshpass -p hunter3 &"
        )
        .unwrap();
        stdin.flush().unwrap();
        let journal = scratch.path().join("state.journal.jsonl");
        assert!(wait_until(Instant::now() + Duration::from_secs(20), || {
            std::fs::read_to_string(&journal).is_ok_and(|j| j.matches("\"exec\"").count() >= 2)
        }));
        let j = std::fs::read_to_string(&journal).unwrap();
        assert!(j.contains("-p***"), "{j}");
        let mut c = janitor();
        c.args(["guard", "status", "--state"]).arg(&state);
        let status = output_of(c);
        let log = scratch.path().join("state.guard.log");
        let log_mode = std::fs::metadata(&log).unwrap().permissions().mode() & 0o777;
        for (what, text) in [
            ("journal", j),
            ("log", std::fs::read_to_string(&log).unwrap()),
            (
                "status",
                String::from_utf8_lossy(&status.stdout).into_owned(),
            ),
        ] {
            assert!(
                !text.contains("hunter2") && !text.contains("hunter3"),
                "{what}: {text}"
            );
        }
        assert_eq!(log_mode, 0o600);
    }));
    drop(stdin);
    // Cleanup by identity: the guard (pid file), the shell's children, the shell.
    let mut c = janitor();
    c.args(["guard", "stop", "--state"]).arg(&state);
    output_of(c);
    kill_guard_named_in(&pid_path);
    for child in crate::support::children_of(root_id.pid) {
        for grandchild in crate::support::children_of(child.pid) {
            kill_ident(&grandchild, Signal::KILL);
        }
        kill_ident(&child, Signal::KILL);
    }
    kill_ident(&root_id, Signal::KILL);
    let _ = root.wait();
    if let Err(e) = check {
        std::panic::resume_unwind(e);
    }

    // `run` echoes its command redacted.
    let mut c = janitor();
    c.current_dir(scratch.path()).args([
        "run",
        "--grace",
        "1s",
        "--",
        "sh",
        "-c",
        "true",
        "mysql",
        "-phunter2",
    ]);
    let out = output_of(c);
    assert_eq!(out.status.code(), Some(0));
    let err = stderr_of(&out);
    assert!(err.contains("-p***"), "{err}");
    assert!(!err.contains("hunter2"), "{err}");
}

/// Regression (issue 11): a FIFO as the state path hung for ever, and `/dev/zero` was read
/// until memory ran out. Both are refused as bad input, at once.
#[test]
fn a_fifo_or_a_device_as_the_state_is_refused() {
    let _serial = serial();
    let scratch = ScratchDir::new("trust_fifo");
    let fifo = scratch.path().join("state.json");
    let made = Command::new("mkfifo")
        .arg("-m")
        .arg("600")
        .arg(&fifo)
        .status();
    assert!(made.unwrap().success());
    for state in [fifo.as_path(), Path::new("/dev/zero")] {
        for args in [&["sweep", "--dry-run"][..], &["diff"][..]] {
            // `timeout` turns a hang into a failure instead of a stuck suite.
            let mut c = Command::new("timeout");
            c.arg("20")
                .arg(crate::janitor::janitor_exe())
                .args(args)
                .arg("--state")
                .arg(state)
                .env_remove("GITHUB_ACTIONS");
            let out = output_of(c);
            assert_eq!(out.status.code(), Some(2), "{state:?} {args:?}");
            assert!(stderr_of(&out).contains("not a regular file"), "{state:?}");
        }
    }
    let mut c = Command::new("timeout");
    c.arg("20").arg(crate::janitor::janitor_exe()).args([
        "report",
        "/dev/zero",
        "--format",
        "markdown",
    ]);
    let out = output_of(c);
    assert_ne!(out.status.code(), Some(124), "hung");
    assert!(stderr_of(&out).contains("not a regular file"));
}

/// Regression (issue 11): `--dry-run` stopped the guard, so leaks started after a preview
/// escaped it. A dry run signals nothing, the guard included, and reads its journal so far.
#[test]
fn a_dry_run_leaves_the_guard_running() {
    let _serial = serial();
    let scratch = ScratchDir::new("trust_dry_guard");
    let state = snapshot(scratch.path());
    let mut c = janitor();
    c.args(["guard", "start", "--poll", "--state"])
        .arg(&state)
        .arg("--watch")
        .arg(std::process::id().to_string());
    let started = output_of(c).status.success();
    let pid_path = scratch.path().join("state.guard.pid");
    let guard: Option<Ident> = std::fs::read(&pid_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let mut c = janitor();
    c.args(["sweep", "--dry-run", "--grace", "1s", "--state"])
        .arg(&state);
    let out = output_of(c);
    let still = guard.is_some_and(|g| alive(&g));
    let mut c = janitor();
    c.args(["guard", "stop", "--state"]).arg(&state);
    let stopped = output_of(c).status.success();
    kill_guard_named_in(&pid_path);
    assert!(started && guard.is_some());
    assert_eq!(out.status.code(), Some(0));
    assert!(still, "the dry run stopped the guard");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("dry run: the guard"), "{text}");
    assert!(stopped);
}

/// Regression (issue 11, "the journal is obeyed as written"): one appended `birth` line
/// made a daemon's worker "guard lineage", and the sweep killed it. The daemon (a
/// respawner, started before the snapshot, not by the job) forks a worker after the guard
/// started; a line naming that worker as born to the job's shell, and an exec line saying
/// it is the job's, are appended to the journal. The worker's live parent is the daemon:
/// the records contradict the live process tree, are distrusted and said so, and the
/// worker survives.
#[test]
fn a_forged_birth_line_never_makes_a_daemons_worker_the_jobs() {
    use std::io::Write;
    let _serial = serial();
    let scratch = ScratchDir::new("trust_forged_birth");
    let daemon_fx = Fixture::spawn("respawner", &["--max", "2"]);
    let daemon = daemon_fx.proc("respawner").ident();
    let first = daemon_fx.proc("child").ident();
    let mut job = crate::guard::Job::start(scratch.path());
    job.ok("$JANITOR snapshot --state state.json");
    job.ok("$JANITOR guard start --state state.json");
    // The daemon's new worker, born after the snapshot and the guard's start.
    assert!(kill_ident(&first, Signal::KILL));
    let mut worker = None;
    assert!(
        wait_until(Instant::now() + Duration::from_secs(10), || {
            worker = crate::support::children_of(daemon.pid)
                .into_iter()
                .find(|c| *c != first);
            worker.is_some()
        }),
        "the daemon forked no new worker"
    );
    let worker = worker.expect("found above");
    let journal = scratch.path().join("state.journal.jsonl");
    let forged = format!(
        "{{\"kind\":\"birth\",\"pid\":{w},\"start_ticks\":{t},\"parent\":{{\"pid\":{j},\
         \"start_ticks\":{jt}}},\"chain\":[{j}],\"in_job\":true,\"via\":\"fork\",\"t_us\":1}}\n\
         {{\"kind\":\"exec\",\"id\":{{\"pid\":{w},\"start_ticks\":{t}}},\"argv\":[\"worker\"],\
         \"in_job\":true,\"t_us\":2}}\n",
        w = worker.pid,
        t = worker.start_ticks,
        j = job.ident.pid,
        jt = job.ident.start_ticks,
    );
    std::fs::OpenOptions::new()
        .append(true)
        .open(&journal)
        .unwrap()
        .write_all(forged.as_bytes())
        .unwrap();
    let (code, out) = job.run(
        "$JANITOR sweep --state state.json --grace 1s --deadline 10s --color never \
         --report-json report.json",
    );
    assert!(alive(&worker), "the daemon's worker was killed:\n{out}");
    assert!(alive(&daemon), "the daemon was killed:\n{out}");
    assert_eq!(code, 0, "nothing of the job leaked:\n{out}");
    assert!(
        out.contains(&format!(
            "distrusted the birth record of pid {}",
            worker.pid
        )),
        "the report does not say the line was distrusted:\n{out}"
    );
    assert!(
        out.contains("is alive but is not its parent"),
        "the report does not say why:\n{out}"
    );
    let report = std::fs::read_to_string(scratch.path().join("report.json")).unwrap();
    let r: serde_json::Value = serde_json::from_str(&report).unwrap();
    let classes: Vec<String> = r["processes"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| p["pid"] == worker.pid)
        .map(|p| p["class"].to_string())
        .collect();
    assert!(
        !classes.iter().any(|c| c.contains("job")),
        "the worker was classed as the job's: {classes:?}"
    );
}

/// `CLOCK_BOOTTIME` in clock ticks (100 per second on every Linux ABI in use), the clock of
/// a process's start time.
fn boot_ticks_now() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    (ts.tv_sec as u64) * 100 + (ts.tv_nsec as u64) / 10_000_000
}

/// Rewrites the state file in place with its snapshot changed by `edit`, resealed.
fn forge_state(state: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    use sha2::Digest;
    let text = std::fs::read_to_string(state).unwrap();
    let mut envelope: serde_json::Value = serde_json::from_str(&text).unwrap();
    let mut snap = envelope["snapshot"].take();
    edit(&mut snap);
    let body = serde_json::to_string(&snap).unwrap();
    let digest: String = sha2::Sha256::digest(body.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let forged = format!(
        r#"{{"kind":"ci-janitor-state","schema_version":{},"snapshot_sha256":"sha256:{digest}","snapshot":{body}}}"#,
        envelope["schema_version"]
    );
    std::fs::write(state, forged).unwrap();
}

/// Regression (issue 11, "the state file's seal is a plain SHA-256 anyone can
/// recompute"): emptying the baseline and moving the snapshot time to 0, resealed, made
/// processes older than the snapshot "new", and they were killed. Here the old process
/// carries the job's marker, so looking new is enough to be killed; a process with the
/// same marker started after the edit is the negative control (it is killed). The state's
/// change time bounds the snapshot time: nothing older than the real snapshot is killed.
#[test]
fn a_resealed_state_cannot_make_an_old_process_new() {
    const MARKER: &str = "github_cij_forged_state";
    let _serial = serial();
    let scratch = ScratchDir::new("trust_forged_state");
    let old = Fixture::builder("sleep")
        .env("RUNNER_TRACKING_ID", MARKER)
        .spawn();
    let old_proc = old.proc("sleeper").ident();
    let state = marked_snapshot(scratch.path(), MARKER);
    // The bound is the file's change time less at most 3 s (a believed reading plus the
    // write): the edit must come more than that after the old process started. This waits
    // on the clock the check reads, not for something to die.
    let window = 3 * 100 + 50;
    assert!(wait_until(Instant::now() + Duration::from_secs(10), || {
        boot_ticks_now() > old_proc.start_ticks + window
    }));
    forge_state(&state, |snap| {
        // One process is kept (an empty list is refused), started at tick 0 too.
        let mut first = snap["processes"][0].clone();
        first["id"]["start_ticks"] = 0.into();
        snap["processes"] = serde_json::json!([first]);
        snap["taken_at_boot_ticks"] = 0.into();
    });
    let young = Fixture::builder("sleep")
        .env("RUNNER_TRACKING_ID", MARKER)
        .spawn();
    let young_proc = young.proc("sleeper").ident();
    let mut c = crate::janitor::janitor_in_new_session();
    c.env("RUNNER_TRACKING_ID", MARKER)
        .args([
            "sweep",
            "--grace",
            "1s",
            "--deadline",
            "10s",
            "--color",
            "never",
            "--state",
        ])
        .arg(&state);
    let out = output_of(c);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        alive(&old_proc),
        "a process older than the snapshot was killed"
    );
    assert!(
        crate::support::wait_dead(&[young_proc], Duration::from_secs(5)),
        "the negative control (same marker, started after the edit) was not killed"
    );
    assert_eq!(out.status.code(), Some(1), "the young one is a leak");
    assert!(
        text.contains("the state says its snapshot began at tick 0"),
        "the report does not say the snapshot time was distrusted:\n{text}"
    );
}

/// A genuine state file left by an earlier job is stale: its snapshot began before the
/// job's per-job root (here `ci-janitor run`) started. It is reported, and only processes
/// started after the root are new: a process with the job's marker that started between
/// the old snapshot and the job survives.
#[test]
fn a_state_older_than_the_job_is_reported_stale_and_narrows() {
    const MARKER: &str = "github_cij_stale_state";
    let _serial = serial();
    let scratch = ScratchDir::new("trust_stale_state");
    let state = marked_snapshot(scratch.path(), MARKER);
    // Started after the old snapshot, before the job: it would look new.
    let between = Fixture::builder("sleep")
        .env("RUNNER_TRACKING_ID", MARKER)
        .spawn();
    let between_proc = between.proc("sleeper").ident();
    assert!(wait_until(Instant::now() + Duration::from_secs(5), || {
        boot_ticks_now() > between_proc.start_ticks + 1
    }));
    let mut c = crate::janitor::janitor_in_new_session();
    c.env("RUNNER_TRACKING_ID", MARKER)
        .args(["run", "--grace", "1s", "--deadline", "10s", "--"])
        .arg(crate::janitor::janitor_exe())
        .args([
            "sweep",
            "--grace",
            "1s",
            "--deadline",
            "10s",
            "--color",
            "never",
            "--state",
        ])
        .arg(&state);
    let out = output_of(c);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        alive(&between_proc),
        "a process older than the job was killed"
    );
    assert!(
        text.contains("the state is stale: its snapshot began at tick"),
        "not reported as stale:\n{text}"
    );
}

/// A leak stopped with SIGSTOP that also ignores SIGTERM: the sweep continues it, and the
/// SIGKILL that ends the grace period ends it; the wait never holds the sweep past
/// `--deadline` (issue 11: "the deadline covers waiting on stopped processes").
#[test]
fn a_stopped_leak_does_not_hold_the_sweep_past_its_deadline() {
    const MARKER: &str = "github_cij_stopped_leak";
    let _serial = serial();
    let scratch = ScratchDir::new("trust_stopped_leak");
    let state = marked_snapshot(scratch.path(), MARKER);
    let fx = Fixture::builder("ignore-term")
        .env("RUNNER_TRACKING_ID", MARKER)
        .spawn();
    let leak = fx.proc("term-ignorer").ident();
    assert!(kill_ident(&leak, Signal::STOP));
    assert!(wait_until(Instant::now() + Duration::from_secs(5), || {
        crate::support::read_stat(leak.pid).is_some_and(|s| s.state == 'T')
    }));
    let mut c = crate::janitor::janitor_in_new_session();
    c.env("RUNNER_TRACKING_ID", MARKER)
        .args([
            "sweep",
            "--grace",
            "2s",
            "--deadline",
            "2s",
            "--color",
            "never",
            "--state",
        ])
        .arg(&state);
    let began = Instant::now();
    let out = output_of(c);
    let took = began.elapsed();
    assert!(
        crate::support::wait_dead(&[leak], Duration::from_secs(5)),
        "the stopped leak survived"
    );
    assert_eq!(out.status.code(), Some(1));
    eprintln!("a stopped, TERM-ignoring leak: swept in {took:?} under --deadline 2s");
    assert!(
        took < Duration::from_millis(3500),
        "the sweep took {took:?} under --deadline 2s"
    );
}

/// A 2-million-line journal (a runaway job, or a forger) is read within the sweep's
/// deadline: at most its first 256 MiB, parsed for at most half of the deadline, and the
/// report says how much was left unread (issue 11: it was parsed, 2 GB in 5 s, before the
/// deadline clock started).
#[test]
fn a_two_million_line_journal_is_read_within_the_deadline() {
    use std::io::Write;
    let _serial = serial();
    let scratch = ScratchDir::new("trust_huge_journal");
    let state = snapshot(scratch.path());
    let mut c = janitor();
    c.args(["guard", "start", "--poll", "--state"])
        .arg(&state)
        .arg("--watch")
        .arg(std::process::id().to_string());
    assert!(output_of(c).status.success());
    let pid_path = scratch.path().join("state.guard.pid");
    let guard: Ident = serde_json::from_slice(&std::fs::read(&pid_path).unwrap()).unwrap();
    let journal = scratch.path().join("state.journal.jsonl");
    {
        let mut w = std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::OpenOptions::new()
                .append(true)
                .open(&journal)
                .unwrap(),
        );
        for i in 0..2_000_000u32 {
            writeln!(
                w,
                "{{\"kind\":\"birth\",\"pid\":{},\"start_ticks\":{i},\"parent\":{{\"pid\":1,\
                 \"start_ticks\":0}},\"chain\":[1],\"in_job\":true,\"via\":\"fork\",\
                 \"gap\":\"padding to the size of a real record, padding padding\",\"t_us\":{i}}}",
                4_000_000 + i
            )
            .unwrap();
        }
        w.flush().unwrap();
    }
    let size = std::fs::metadata(&journal).unwrap().len();
    let mut c = janitor();
    c.args([
        "sweep",
        "--grace",
        "1s",
        "--deadline",
        "3s",
        "--color",
        "never",
        "--state",
    ])
    .arg(&state);
    let began = Instant::now();
    let out = output_of(c);
    let took = began.elapsed();
    let gone = wait_until(Instant::now() + Duration::from_secs(10), || !alive(&guard));
    if !gone {
        kill_ident(&guard, Signal::KILL);
    }
    let _ = std::fs::remove_file(&journal);
    eprintln!(
        "a journal of {} MB, 2,000,000 lines: swept in {took:?}",
        size >> 20
    );
    assert!(gone, "the guard was not stopped");
    assert_eq!(out.status.code(), Some(0));
    assert!(
        took < Duration::from_millis(4500),
        "the sweep took {took:?} under --deadline 3s"
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("at its end were not read"), "{text}");
}

/// The baseline of a job named by `RUNNER_TRACKING_ID=marker`, at `dir/state.json`.
fn marked_snapshot(dir: &std::path::Path, marker: &str) -> std::path::PathBuf {
    let state = dir.join("state.json");
    let mut c = janitor();
    c.env("RUNNER_TRACKING_ID", marker)
        .args(["snapshot", "--state"])
        .arg(&state);
    assert!(output_of(c).status.success());
    state
}
