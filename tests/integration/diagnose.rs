//! `ci-janitor diagnose` and the hang report on real stuck processes: a client blocked on
//! a local server that accepts and never replies, the same client after its server was
//! killed (named from the guard's journal), two processes blocked on each other's pipes,
//! the report without py-spy and with it (a hung pytest's stack).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::janitor::{janitor, output_of, snapshot};
use crate::support::{kill_ident, serial, wait_until, Ident, ScratchDir, Signal};

/// Accepts connections, reads the request and never answers. `server.py PORT` (0: any)
/// prints its port.
pub const SERVER: &str = r#"
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1])))
s.listen(8)
print(s.getsockname()[1], flush=True)
held = []
while True:
    c, _ = s.accept()
    c.recv(65536)
    held.append(c)
"#;

/// Connects, sends a request, and waits for the answer in recv().
pub const CLIENT: &str = r#"
import socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
c.sendall(b"GET /api/health HTTP/1.1\r\nHost: x\r\n\r\n")
print("sent", flush=True)
c.recv(100)
"#;

/// Connects, sends, then waits on something else (an event that never comes) while it
/// keeps the connection: what a pooled HTTP client does.
const HOLDING_CLIENT: &str = r#"
import os, select, socket, sys
c = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
c.sendall(b"POST /api/flow_runs HTTP/1.1\r\nHost: x\r\n\r\n")
r, w = os.pipe()
print("sent", flush=True)
select.select([r], [], [])
"#;

/// Two `cat`s, each reading the pipe the other writes; the launcher prints their pids and
/// exits.
const CROSSED_CATS: &str = r#"
import os, subprocess
r1, w1 = os.pipe()
r2, w2 = os.pipe()
a = subprocess.Popen(["cat"], stdin=r1, stdout=w2)
b = subprocess.Popen(["cat"], stdin=r2, stdout=w1)
for fd in (r1, w1, r2, w2):
    os.close(fd)
print(a.pid, b.pid, flush=True)
"#;

pub fn python3() -> PathBuf {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(sys.executable)"])
        .output()
        .expect("python3 is required");
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

/// Starts `python3 SCRIPT ARGS` in `dir` with the job's marker, and returns it with its
/// first line of output.
pub fn start_py(
    dir: &Path,
    name: &str,
    script: &str,
    args: &[&str],
    marker: &str,
) -> (Child, String) {
    std::fs::write(dir.join(name), script).unwrap();
    // The script by its name in `dir`, so a command line does not grow with the checkout's
    // path (a report cuts long ones).
    let mut child = Command::new(python3())
        .arg(name)
        .args(args)
        .current_dir(dir)
        .env("CI_JANITOR_RUN", marker)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    (child, line.trim().to_owned())
}

fn diagnose(state: &Path, marker: &str, extra_env: &[(&str, &str)]) -> Value {
    let mut c = janitor();
    c.args(["diagnose", "--json", "--state"])
        .arg(state)
        .env("CI_JANITOR_RUN", marker);
    for (k, v) in extra_env {
        c.env(k, v);
    }
    let out = output_of(c);
    assert!(out.status.success(), "diagnose failed");
    serde_json::from_slice(&out.stdout).expect("diagnose --json prints JSON")
}

/// Diagnoses until a verdict of `kind` appears (the processes need a moment to block).
fn diagnose_until(state: &Path, marker: &str, kind: &str, env: &[(&str, &str)]) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = diagnose(state, marker, env);
        if verdict(&v, kind).is_some() || Instant::now() > deadline {
            return v;
        }
    }
}

pub fn verdict<'a>(hang: &'a Value, kind: &str) -> Option<&'a Value> {
    hang["verdicts"]
        .as_array()?
        .iter()
        .find(|v| v["kind"] == kind)
}

fn pids_of(v: &Value) -> Vec<i64> {
    v["pids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_i64().unwrap())
        .collect()
}

fn marker() -> String {
    format!("cij-diag-{}-{}", std::process::id(), rand_suffix())
}

fn rand_suffix() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[test]
fn client_blocked_on_a_server_that_never_replies() {
    let _g = serial();
    let dir = ScratchDir::new("diag_peer");
    let state = snapshot(dir.path());
    let m = marker();
    let (mut server, port) = start_py(dir.path(), "server.py", SERVER, &["0"], &m);
    let (mut client, sent) = start_py(dir.path(), "client.py", CLIENT, &[&port], &m);
    assert_eq!(sent, "sent");
    let hang = diagnose_until(&state, &m, "waits-on-peer", &[("CI_JANITOR_PY_SPY", "off")]);
    let v = verdict(&hang, "waits-on-peer").unwrap_or_else(|| panic!("no verdict: {hang:#}"));
    assert_eq!(
        pids_of(v),
        vec![i64::from(client.id() as i32), i64::from(server.id() as i32)]
    );
    let s = v["sentence"].as_str().unwrap();
    assert!(
        s.starts_with(&format!("client.py pid {} ", client.id())),
        "{s}"
    );
    assert!(s.contains(&format!("on 127.0.0.1:{port}")), "{s}");
    assert!(
        s.contains(&format!(
            "server.py pid {} holds the other end",
            server.id()
        )),
        "{s}"
    );
    // The facts behind it: the client sleeps in a read on its socket, the server listens.
    let c = hang["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == client.id())
        .unwrap();
    assert_eq!(c["state"], "S");
    assert!(c["syscall"].as_str().unwrap().contains("(fd "), "{c}");
    assert!(hang["listening"]
        .as_array()
        .unwrap()
        .iter()
        .any(|l| l["pid"] == server.id() && l["address"] == format!("127.0.0.1:{port}")));
    // Without py-spy the report still works and says what is missing.
    assert!(hang["missing"]
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m.as_str().unwrap().contains("py-spy")));
    // Nothing was killed.
    assert!(client.try_wait().unwrap().is_none() && server.try_wait().unwrap().is_none());
    for c in [&mut client, &mut server] {
        let _ = c.kill();
        let _ = c.wait();
    }
}

fn sockets_of(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
                .filter(|l| l.to_string_lossy().starts_with("socket:"))
                .count()
        })
        .unwrap_or(0)
}

/// Stops the guard of a state file when dropped.
struct GuardRunning(PathBuf);

impl GuardRunning {
    fn start(state: &Path, marker: &str) -> GuardRunning {
        let mut c = janitor();
        c.args(["guard", "start", "--state"])
            .arg(state)
            .env("CI_JANITOR_RUN", marker);
        assert!(output_of(c).status.success(), "guard start failed");
        GuardRunning(state.to_owned())
    }
}

impl Drop for GuardRunning {
    fn drop(&mut self) {
        let mut c = janitor();
        c.args(["guard", "stop", "--state"]).arg(&self.0);
        let _ = output_of(c);
    }
}

#[test]
fn client_holding_a_connection_to_a_killed_server_names_it_from_the_journal() {
    let _g = serial();
    let dir = ScratchDir::new("diag_gone");
    let state = snapshot(dir.path());
    let m = marker();
    let _guard = GuardRunning::start(&state, &m);
    let want = free_port().to_string();
    let (mut server, port) = start_py(dir.path(), "server.py", SERVER, &[&want], &m);
    assert_eq!(port, want);
    let (mut client, _) = start_py(dir.path(), "client.py", HOLDING_CLIENT, &[&port], &m);
    let server_id = Ident::of(server.id() as i32).unwrap();
    // The server accepted (it holds a second socket) and read the request (it waits in
    // accept again); now it dies. Killed with the request unread, its end would reset the
    // connection, and the client would hold no connection at all.
    assert!(wait_until(Instant::now() + Duration::from_secs(10), || {
        sockets_of(server_id.pid) >= 2 && in_accept(server_id.pid)
    }));
    assert!(kill_ident(&server_id, Signal::KILL));
    let _ = server.wait();
    // The guard writes its journal at most 20 ms after an event: the server's exit may not
    // be there yet for the first verdict.
    let deadline = Instant::now() + Duration::from_secs(30);
    let hang = loop {
        let hang = diagnose_until(
            &state,
            &m,
            "holds-dead-connection",
            &[("CI_JANITOR_PY_SPY", "off")],
        );
        let named = verdict(&hang, "holds-dead-connection")
            .and_then(|v| v["sentence"].as_str())
            .is_some_and(|s| s.ends_with("(journal)."));
        if named || Instant::now() > deadline {
            break hang;
        }
    };
    let v =
        verdict(&hang, "holds-dead-connection").unwrap_or_else(|| panic!("no verdict: {hang:#}"));
    let s = v["sentence"].as_str().unwrap();
    assert!(
        s.starts_with(&format!("client.py pid {} is idle", client.id())),
        "{s}"
    );
    assert!(s.contains(&format!("127.0.0.1:{port} (CLOSE-WAIT")), "{s}");
    assert!(s.contains("nothing listens there"), "{s}");
    assert!(
        s.contains(&format!("pid {}, exited ", server_id.pid)) && s.ends_with("s ago (journal)."),
        "{s}"
    );
    let _ = client.kill();
    let _ = client.wait();
}

#[test]
fn two_processes_blocked_on_each_others_pipes() {
    let _g = serial();
    let dir = ScratchDir::new("diag_pipes");
    let state = snapshot(dir.path());
    let m = marker();
    let (mut launcher, pids) = start_py(dir.path(), "cats.py", CROSSED_CATS, &[], &m);
    let _ = launcher.wait();
    let pids: Vec<i64> = pids.split(' ').map(|p| p.parse().unwrap()).collect();
    let idents: Vec<Ident> = pids.iter().filter_map(|p| Ident::of(*p as i32)).collect();
    assert_eq!(idents.len(), 2);
    let hang = diagnose_until(&state, &m, "pipe-cycle", &[]);
    let v = verdict(&hang, "pipe-cycle").unwrap_or_else(|| panic!("no verdict: {hang:#}"));
    let mut got = pids_of(v);
    got.sort_unstable();
    let mut want = pids.clone();
    want.sort_unstable();
    assert_eq!(got, want);
    let s = v["sentence"].as_str().unwrap();
    assert!(
        s.starts_with(&format!(
            "cat pid {} and cat pid {} wait on each other's pipes",
            got[0], got[1]
        )),
        "{s}"
    );
    for id in &idents {
        kill_ident(id, Signal::KILL);
    }
    assert!(wait_until(Instant::now() + Duration::from_secs(10), || {
        idents.iter().all(|i| !crate::support::alive(i))
    }));
}

/// py-spy, when it can be had: on PATH, or installed from PyPI by scripts/test.sh.
fn py_spy() -> Option<PathBuf> {
    let scripts = Command::new("python3")
        .args([
            "-c",
            "import sysconfig; print(sysconfig.get_path('scripts'))",
        ])
        .output()
        .ok()?;
    let dir = PathBuf::from(String::from_utf8_lossy(&scripts.stdout).trim());
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default()
        .into_iter()
        .chain([dir])
        .map(|d| d.join("py-spy"))
        .find(|p| p.is_file())
}

#[test]
fn a_hung_pytest_gets_its_python_stack_from_py_spy() {
    let _g = serial();
    let Some(py_spy) = py_spy() else {
        eprintln!("SKIPPED: py-spy is not installed and could not be found (pip install py-spy)");
        return;
    };
    let has_pytest = Command::new(python3())
        .args(["-c", "import pytest"])
        .status()
        .is_ok_and(|s| s.success());
    if !has_pytest {
        eprintln!(
            "SKIPPED: pytest is not installed for {}",
            python3().display()
        );
        return;
    }
    let dir = ScratchDir::new("diag_pyspy");
    let state = snapshot(dir.path());
    let m = marker();
    let (mut server, port) = start_py(dir.path(), "server.py", SERVER, &["0"], &m);
    std::fs::write(
        dir.path().join("test_hang.py"),
        format!(
            "import socket\n\ndef test_waits_for_the_api():\n    c = socket.create_connection((\"127.0.0.1\", {port}))\n    c.sendall(b\"GET / HTTP/1.0\\r\\n\\r\\n\")\n    print(\"sent\", flush=True)\n    c.recv(100)\n"
        ),
    )
    .unwrap();
    let mut pytest = Command::new(python3())
        .args([
            "-m",
            "pytest",
            "-q",
            "-s",
            "-p",
            "no:cacheprovider",
            "test_hang.py",
        ])
        .current_dir(dir.path())
        .env("CI_JANITOR_RUN", &m)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(pytest.stdout.take().unwrap());
    let mut line = String::new();
    while !line.contains("sent") {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "pytest ended early");
    }
    let exe = py_spy.to_string_lossy().into_owned();
    let hang = diagnose_until(
        &state,
        &m,
        "waits-on-peer",
        &[("CI_JANITOR_PY_SPY", exe.as_str())],
    );
    let p = hang["processes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["pid"] == pytest.id())
        .unwrap_or_else(|| panic!("pytest not in {hang:#}"));
    assert_eq!(p["stack"]["source"], "py-spy", "{p:#}");
    let stack = p["stack"]["text"].as_str().unwrap();
    assert!(stack.contains("test_waits_for_the_api"), "{stack}");
    let v = verdict(&hang, "waits-on-peer").unwrap();
    assert!(v["sentence"]
        .as_str()
        .unwrap()
        .starts_with(&format!("pytest pid {}", pytest.id())));
    for c in [&mut pytest, &mut server] {
        let _ = c.kill();
        let _ = c.wait();
    }
}

/// Whether `pid` waits in accept(2) or accept4(2) (x86_64 numbers 43 and 288).
fn in_accept(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/syscall"))
        .ok()
        .and_then(|s| s.split_whitespace().next().map(str::to_owned))
        .is_some_and(|n| n == "43" || n == "288")
}

/// Kills a child the test started when the test ends, also when an assertion fails.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A job process whose command line carries a newline, a workflow command and terminal
/// escapes: the text report shows it on one line, escaped, so nothing in it can act as a
/// workflow command in a CI log or move a terminal's cursor.
#[test]
fn a_hostile_command_line_stays_one_escaped_line_in_the_text_report() {
    let _g = serial();
    let dir = ScratchDir::new("diag_hostile");
    let state = snapshot(dir.path());
    let m = marker();
    let hostile = "x\n::error title=forged::injected\x1b[2J\x1b]0;title\x07";
    let (child, ready) = start_py(
        dir.path(),
        "wait.py",
        "import select, sys\nprint('ready', flush=True)\nselect.select([], [], [])\n",
        &[hostile],
        &m,
    );
    let child = Reaped(child);
    assert_eq!(ready, "ready");
    let mut c = janitor();
    c.args(["diagnose", "--state"])
        .arg(&state)
        .env("CI_JANITOR_RUN", &m)
        .env("CI_JANITOR_PY_SPY", "off");
    let out = output_of(c);
    assert!(out.status.success(), "diagnose failed");
    let text = String::from_utf8(out.stdout).unwrap();
    let pid = child.0.id().to_string();
    let line = text
        .lines()
        .find(|l| l.trim_start().starts_with(&pid))
        .unwrap_or_else(|| panic!("the process is not in:\n{text}"));
    assert!(line.contains(r"x\x0a::error"), "{line}");
    assert!(!text.contains('\x1b'), "{text:?}");
    assert!(!text.contains('\x07'), "{text:?}");
    assert!(
        !text.lines().any(|l| l.trim_start().starts_with("::")),
        "{text}"
    );
}
