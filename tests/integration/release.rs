//! The Action as a user pins it, with no cargo on PATH: a release asset built by
//! `scripts/package.sh`, served by a local HTTP server standing in for the release host
//! (`GITHUB_SERVER_URL`), downloaded and verified against the tree's `dist/SHA256SUMS`,
//! cached in the tool cache. act resolves `uses: ci-janitor/ci-janitor@v0.1.0` to a local
//! tagged copy of the action (`--local-repository`), as GitHub would resolve the tag.
//!
//! There is no docker here, so "a container image without node" is simulated: the steps'
//! PATH is a directory holding only the POSIX tools the sub-actions need (no node, no
//! bash, no cargo).

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::action::{act_with, action_repo, leak_step, leaked, output, repo_root};
use crate::support::{serial, wait_dead, wait_until, ScratchDir};

const REPOSITORY: &str = "ci-janitor/ci-janitor";

/// The release assets and manifest, built once per test run by the documented command.
struct Assets {
    dir: PathBuf,
    asset: String,
    tag: String,
}

fn assets() -> &'static Assets {
    static ASSETS: OnceLock<Assets> = OnceLock::new();
    ASSETS.get_or_init(|| {
        let tmp = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        let dir = tmp.join("release-assets");
        let dist = tmp.join("release-dist");
        let _ = std::fs::remove_dir_all(&dir);
        // The static build shares its target dir with static_build.rs.
        let status = Command::new("bash")
            .arg(repo_root().join("scripts/package.sh"))
            .arg("--out")
            .arg(&dir)
            .arg("--dist")
            .arg(&dist)
            .env("CARGO_TARGET_DIR", tmp.join("static-build"))
            .env("CARGO", env!("CARGO"))
            .status()
            .expect("run scripts/package.sh");
        assert!(status.success(), "scripts/package.sh failed");
        let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
        let asset = sums.split_whitespace().nth(1).unwrap().to_owned();
        let release = std::fs::read_to_string(dist.join("RELEASE")).unwrap();
        let tag = release
            .lines()
            .find_map(|l| l.strip_prefix("tag="))
            .unwrap()
            .to_owned();
        assert!(release.contains(&format!("repository={REPOSITORY}")));
        Assets { dir, asset, tag }
    })
}

/// The action as a release tags it: the tree with the manifest package.sh wrote, in a git
/// repository tagged with the release's tag.
fn tagged_action(dir: &Path) -> PathBuf {
    let a = assets();
    let repo = action_repo(&dir.join("action"), &[]);
    let dist = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("release-dist");
    for f in ["SHA256SUMS", "RELEASE"] {
        std::fs::copy(dist.join(f), repo.join("dist").join(f)).unwrap();
    }
    let git = |args: &[&str]| {
        let ok = Command::new("git")
            .args(["-c", "user.email=t@example.invalid", "-c", "user.name=t"])
            .args(args)
            .current_dir(&repo)
            .status()
            .unwrap()
            .success();
        assert!(ok, "git {args:?}");
    };
    git(&["commit", "-qam", "release"]);
    git(&["tag", &a.tag]);
    repo
}

/// What the release host serves: `<root>/OWNER/REPO/releases/download/TAG/ASSET`, the
/// asset as built or with one byte flipped.
fn release_host(dir: &Path, tamper: bool) -> PathBuf {
    let a = assets();
    let root = dir.join("host");
    let at = root.join(format!("{REPOSITORY}/releases/download/{}", a.tag));
    std::fs::create_dir_all(&at).unwrap();
    let mut bytes = std::fs::read(a.dir.join(&a.asset)).unwrap();
    if tamper {
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
    }
    std::fs::write(at.join(&a.asset), bytes).unwrap();
    root
}

/// The release host: a child of the test, so its pid cannot be reused before it is waited
/// for; dropping it kills and reaps it (and the scratch directory's drop would catch it
/// too, its cwd being inside).
struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Serves `root` on 127.0.0.1:`port` until the returned server is dropped.
#[must_use]
fn serve(root: &Path, port: u16) -> Server {
    let child = Command::new("python3")
        .args([
            "-m",
            "http.server",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
        ])
        .current_dir(root)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start python3 -m http.server");
    let server = Server(child);
    let up = wait_until(Instant::now() + Duration::from_secs(20), || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    assert!(up, "the release host did not start");
    server
}

/// A workflow repository whose job uses the tagged action.
fn workflow_repo(dir: &Path, uses: &str, with: &str, steps: &str) -> PathBuf {
    let text = format!(
        "on: push\njobs:\n  job:\n    runs-on: ubuntu-latest\n    steps:\n      - uses: \
         actions/checkout@v4\n      - uses: {uses}\n        with:\n          grace-period: \
         1s\n{with}{steps}"
    );
    let repo = dir.join("user");
    std::fs::create_dir_all(repo.join(".github/workflows")).unwrap();
    std::fs::write(repo.join(".github/workflows/ci.yml"), text).unwrap();
    for args in [
        &["init", "-q"][..],
        &["add", "-A"],
        &["commit", "-qm", "ci"],
    ] {
        let ok = Command::new("git")
            .args(["-c", "user.email=t@example.invalid", "-c", "user.name=t"])
            .args(args)
            .current_dir(&repo)
            .status()
            .unwrap()
            .success();
        assert!(ok);
    }
    repo
}

/// The steps' PATH without cargo (nor rustup): the system directories only.
const NO_CARGO_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// Runs the user's workflow with the tagged action and the given release host URL.
fn run_pinned(
    dir: &Path,
    action: &Path,
    user: &Path,
    server: &str,
    path: &str,
) -> crate::action::ActRun {
    let local = format!("{REPOSITORY}@{}={}", assets().tag, action.display());
    let server = format!("GITHUB_SERVER_URL={server}");
    let path = format!("PATH={path}");
    act_with(
        dir,
        user,
        "ci.yml",
        &[
            "--local-repository",
            &local,
            "--env",
            &server,
            "--env",
            &path,
        ],
        &[],
    )
}

fn uses() -> String {
    format!("{REPOSITORY}@{}", assets().tag)
}

#[test]
fn a_pinned_release_downloads_verifies_and_runs_without_cargo() {
    let _g = serial();
    let dir = ScratchDir::new("release_ok");
    let action = tagged_action(dir.path());
    let _server = serve(&release_host(dir.path(), false), 18781);
    let steps = format!(
        "{}      - name: The binary is on PATH, cargo is not\n        run: |\n          \
         ci-janitor --version\n          ! command -v cargo\n",
        leak_step(18782)
    );
    let user = workflow_repo(dir.path(), &uses(), "", &steps);
    let run = run_pinned(
        dir.path(),
        &action,
        &user,
        "http://127.0.0.1:18781",
        NO_CARGO_PATH,
    );
    let a = assets();
    assert!(
        run.log
            .contains(&format!("ci-janitor: verified {}", a.asset)),
        "the asset was not downloaded and verified"
    );
    assert!(run
        .log
        .contains("Success - Main The binary is on PATH, cargo is not"));
    // It ran: the leak is found, killed and fails the job.
    assert_eq!(run.code, 1);
    assert_eq!(output(&run.log, "leaked-count").as_deref(), Some("2"));
    assert!(wait_dead(&leaked(dir.path()), Duration::from_secs(5)));
    // Cached in the tool cache, under the release's version.
    let cached = dir
        .path()
        .join("act-cache/tool_cache/ci-janitor")
        .join(a.tag.trim_start_matches('v'))
        .join("x86_64/ci-janitor");
    assert!(cached.is_file(), "{} is not cached", cached.display());
    // The pre step downloaded it; main and post found it in the cache.
    assert_eq!(run.log.matches("ci-janitor: verified").count(), 1);
}

#[test]
fn a_tampered_asset_fails_the_step() {
    let _g = serial();
    let dir = ScratchDir::new("release_tampered");
    let action = tagged_action(dir.path());
    let _server = serve(&release_host(dir.path(), true), 18783);
    let user = workflow_repo(
        dir.path(),
        &uses(),
        "          on-missing-binary: warn\n",
        "",
    );
    let run = run_pinned(
        dir.path(),
        &action,
        &user,
        "http://127.0.0.1:18783",
        NO_CARGO_PATH,
    );
    assert_ne!(run.code, 0, "a tampered binary must fail the job");
    assert!(
        run.log
            .contains("::error title=ci-janitor::checksum mismatch"),
        "no error annotation for the mismatch"
    );
    assert!(!run.log.contains("ci-janitor: verified"));
    assert!(
        !run.log.contains("ci-janitor: baseline"),
        "the tampered binary ran"
    );
}

#[test]
fn no_release_host_fails_closed_and_warns_with_the_opt_out() {
    let _g = serial();
    let dir = ScratchDir::new("release_none");
    let action = tagged_action(dir.path());
    // Nothing listens on this port.
    let server = "http://127.0.0.1:18785";
    let user = workflow_repo(dir.path(), &uses(), "", "      - run: \"true\"\n");
    let run = run_pinned(dir.path(), &action, &user, server, NO_CARGO_PATH);
    assert_eq!(run.code, 1, "no binary must fail the job by default");
    assert!(
        run.log
            .contains("::error title=ci-janitor::ci-janitor cannot run: downloading"),
        "no error annotation"
    );
    assert!(
        run.log.contains("on-missing-binary: warn"),
        "the error says what to do"
    );

    let dir2 = ScratchDir::new("release_none_warn");
    let user = workflow_repo(
        dir2.path(),
        &uses(),
        "          on-missing-binary: warn\n",
        "      - run: \"true\"\n",
    );
    let run = run_pinned(dir2.path(), &action, &user, server, NO_CARGO_PATH);
    assert_eq!(run.code, 0, "with on-missing-binary: warn the job goes on");
    assert!(run
        .log
        .contains("::warning title=ci-janitor::ci-janitor did not run"));
}

/// A directory of the tools a minimal image has, and no node, bash or cargo: the PATH of
/// a container step, simulated.
fn container_path(dir: &Path) -> PathBuf {
    let bin = dir.join("image-bin");
    std::fs::create_dir_all(&bin).unwrap();
    for tool in [
        "sh",
        "cat",
        "cut",
        "head",
        "tr",
        "sed",
        "awk",
        "grep",
        "mkdir",
        "mktemp",
        "chmod",
        "mv",
        "rm",
        "dirname",
        "uname",
        "curl",
        "sha256sum",
        "sleep",
        "setsid",
        "nohup",
        "python3",
        "test",
        "env",
        "seq",
        "readlink",
    ] {
        let found = ["/usr/bin", "/bin"]
            .iter()
            .map(|d| Path::new(d).join(tool))
            .find(|p| p.exists())
            .unwrap_or_else(|| panic!("{tool} is not installed"));
        std::os::unix::fs::symlink(found, bin.join(tool)).unwrap();
    }
    bin
}

#[test]
fn the_sub_actions_run_without_node() {
    let _g = serial();
    let dir = ScratchDir::new("release_no_node");
    let action = tagged_action(dir.path());
    let _server = serve(&release_host(dir.path(), false), 18786);
    let bin = container_path(dir.path());
    let tag = &assets().tag;
    let text = format!(
        r#"on: push
jobs:
  job:
    runs-on: ubuntu-latest
    steps:
      - uses: actions/checkout@v4
      - uses: {REPOSITORY}/snapshot@{tag}
      - name: No node, no bash here
        shell: sh
        run: |
          ! command -v node && ! command -v bash && ! command -v cargo
          cd "$SCRATCH"
          setsid sh -c 'echo $$ > pids; cut -d" " -f22 < /proc/$$/stat > ticks.$$; exec sleep 600' >/dev/null 2>&1 < /dev/null &
          for _ in $(seq 1 200); do [ -s pids ] && break; sleep 0.05; done
      - id: sweep
        uses: {REPOSITORY}/sweep@{tag}
        continue-on-error: true
        with:
          grace-period: 1s
      - name: The sweep failed, with its outputs
        shell: sh
        env:
          OUTCOME: ${{{{ steps.sweep.outcome }}}}
          LEAKED: ${{{{ steps.sweep.outputs.leaked-count }}}}
        run: test "$OUTCOME" = failure && test "$LEAKED" = 1
"#
    );
    let user = dir.path().join("user");
    std::fs::create_dir_all(user.join(".github/workflows")).unwrap();
    std::fs::write(user.join(".github/workflows/ci.yml"), text).unwrap();
    for args in [
        &["init", "-q"][..],
        &["add", "-A"],
        &["commit", "-qm", "ci"],
    ] {
        assert!(Command::new("git")
            .args(["-c", "user.email=t@example.invalid", "-c", "user.name=t"])
            .args(args)
            .current_dir(&user)
            .status()
            .unwrap()
            .success());
    }
    let run = run_pinned(
        dir.path(),
        &action,
        &user,
        "http://127.0.0.1:18786",
        bin.to_str().unwrap(),
    );
    assert!(run.log.contains("Success - Main No node, no bash here"));
    assert!(run
        .log
        .contains("Success - Main The sweep failed, with its outputs"));
    assert_eq!(run.code, 0);
    assert!(wait_dead(&leaked(dir.path()), Duration::from_secs(5)));
}

#[test]
fn a_source_checkout_without_a_binary_fails_closed() {
    // The tree as committed lists no release asset: the step fails and says what to do,
    // instead of building with cargo or passing unchecked.
    let _g = serial();
    let dir = ScratchDir::new("release_source");
    let out = Command::new("node")
        .arg("-e")
        .arg(format!(
            "require('{}/dist/shim.js').run(['--version'])",
            repo_root().display()
        ))
        .env_remove("CI_JANITOR_BIN")
        .env("RUNNER_TOOL_CACHE", dir.path())
        .current_dir(dir.path())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("::error title=ci-janitor::ci-janitor cannot run: this copy of the action lists no release binary"),
        "{stdout}"
    );
}
