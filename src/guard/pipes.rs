//! The pipe-holder alarm: a job process exited while a process it started still holds the
//! pipe that was its stdout or stderr, and that pipe still has a reader. Whoever reads it
//! (the runner, `docker exec`, a shell's `|`) waits for end-of-file until the holder exits:
//! GitHub's and Azure's runners give up after 5 s and drop the rest of the output, GitLab's
//! shell executor and `docker exec` hang. The alarm names the holder, who started it and
//! since when.
//!
//! It reads the records the tracker makes (births, execs, exits of the job's processes)
//! before they are written, remembers which pipe each job process had as stdout and stderr
//! (matched by inode through `/proc/PID/fd`), and on an exit looks at the live processes
//! born below the one that exited. A warning record is added for each holder.

use std::collections::HashMap;
use std::path::PathBuf;

use super::journal::{Example, Record, Warning};
use crate::model::{Argv, ProcessId};
use crate::platform::inspect::{self, FdKind};

/// Holders named per exit at most.
const MAX_HOLDERS: usize = 5;
/// Job processes remembered at most (the oldest dead ones are dropped first).
const MAX_TRACKED: usize = 100_000;

#[derive(Debug, Clone)]
struct Tracked {
    id: Option<ProcessId>,
    /// Ancestors at birth, nearest first.
    chain: Vec<i32>,
    command: String,
    step: Option<String>,
    /// The pipes that were its stdout (fd 1) and stderr (fd 2): (fd, inode).
    stdio: Vec<(i32, u64)>,
    /// `stdio` was read at its exec (else at its birth, or from a child's).
    stdio_at_exec: bool,
    born_unix_ms: Option<u64>,
}

/// Stdout and stderr pipes read the moment an exec was handled (a step's shell may be gone
/// by the time its records are looked at): pid -> (fd, inode).
#[derive(Debug, Default)]
pub struct StdioSeen(HashMap<i32, Vec<(i32, u64)>>);

impl StdioSeen {
    /// Records the pipes read with an exec's details (see `ProcFacts::stdio_pipes`).
    pub fn set(&mut self, pid: i32, pipes: Vec<(i32, u64)>) {
        self.0.insert(pid, pipes);
    }
}

fn stdio_of(proc_root: &std::path::Path, pid: i32) -> Vec<(i32, u64)> {
    [1, 2]
        .into_iter()
        .filter_map(|fd| Some((fd, inspect::pipe_inode(proc_root, pid, fd)?)))
        .collect()
}

/// The alarm's memory of the job's processes.
#[derive(Debug)]
pub struct PipeWatch {
    proc_root: PathBuf,
    /// The guard's start, for turning a record's `t_us` into a time of day.
    started_unix_ms: u64,
    live: HashMap<i32, Tracked>,
}

impl PipeWatch {
    pub fn new(proc_root: PathBuf, started_unix_ms: u64) -> PipeWatch {
        PipeWatch {
            proc_root,
            started_unix_ms,
            live: HashMap::new(),
        }
    }

    /// Looks at the tracker's new records (in order) and appends a warning for each process
    /// that holds the stdout or stderr pipe of a job process that just exited.
    pub fn observe(&mut self, records: &mut Vec<Record>, seen: &mut StdioSeen) {
        let mut warnings = Vec::new();
        for r in records.iter() {
            match r {
                Record::Seed(s) if s.in_job => {
                    let t = Tracked {
                        id: Some(s.id),
                        chain: vec![s.ppid],
                        command: command(&s.argv),
                        step: s.markers.get("GITHUB_ACTION").cloned(),
                        stdio: self.stdio(s.id.pid),
                        stdio_at_exec: true,
                        born_unix_ms: None,
                    };
                    self.insert(s.id.pid, t);
                }
                Record::Birth(b) if b.in_job => {
                    // A birth journaled at its exec: its pipes were read then (not twice).
                    let stdio = match seen.0.get(&b.pid) {
                        Some(s) => s.clone(),
                        None => self.stdio(b.pid),
                    };
                    // A step's shell that forked and exited at once may be gone before its
                    // own descriptors were read: its child, just forked, has copies of them.
                    if let Some(p) = self.live.get_mut(&b.parent.pid) {
                        if !p.stdio_at_exec && !stdio.is_empty() {
                            p.stdio = stdio.clone();
                        }
                    }
                    let parent = self.live.get(&b.parent.pid);
                    let t = Tracked {
                        id: b.id(),
                        chain: b.chain.clone(),
                        command: parent.map(|p| p.command.clone()).unwrap_or_default(),
                        step: b
                            .markers
                            .get("GITHUB_ACTION")
                            .cloned()
                            .or_else(|| parent.and_then(|p| p.step.clone())),
                        stdio,
                        stdio_at_exec: false,
                        born_unix_ms: Some(self.started_unix_ms + b.t_us / 1000),
                    };
                    self.insert(b.pid, t);
                }
                Record::Exec(e) if e.in_job => {
                    // Read with its exec's details, pipes or none; else now.
                    let stdio = match seen.0.remove(&e.id.pid) {
                        Some(s) => s,
                        None => self.stdio(e.id.pid),
                    };
                    if let Some(t) = self.live.get_mut(&e.id.pid) {
                        t.command = command(&e.argv);
                        if let Some(step) = e.markers.get("GITHUB_ACTION") {
                            t.step = Some(step.clone());
                        }
                        // After exec the descriptors are the ones the program runs with
                        // (a shell redirects between fork and exec).
                        if !stdio.is_empty() || t.stdio.is_empty() {
                            t.stdio = stdio;
                            t.stdio_at_exec = true;
                        }
                    }
                }
                Record::Exec(e) => {
                    self.live.remove(&e.id.pid);
                }
                Record::Exit(x) => {
                    if let Some(gone) = self.live.remove(&x.pid) {
                        warnings.extend(self.holders_of(x.pid, &gone, x.t_us));
                    }
                }
                _ => {}
            }
        }
        records.extend(warnings.into_iter().map(Record::Warning));
        seen.0.clear();
    }

    fn insert(&mut self, pid: i32, t: Tracked) {
        if self.live.len() >= MAX_TRACKED {
            return;
        }
        self.live.insert(pid, t);
    }

    /// The pipes a process has as stdout and stderr, now.
    fn stdio(&self, pid: i32) -> Vec<(i32, u64)> {
        stdio_of(&self.proc_root, pid)
    }

    /// The live job processes born below `pid` that hold one of its stdio pipes for
    /// writing, where the pipe still has a reader: one warning each.
    fn holders_of(&self, pid: i32, gone: &Tracked, t_us: u64) -> Vec<Warning> {
        if gone.stdio.is_empty() {
            return Vec::new();
        }
        let mut out = Vec::new();
        let mut below: Vec<(&i32, &Tracked)> = self
            .live
            .iter()
            .filter(|(_, t)| t.chain.contains(&pid))
            .collect();
        below.sort_by_key(|(p, _)| **p);
        for (&holder, t) in below {
            if out.len() >= MAX_HOLDERS {
                break;
            }
            let Ok((fds, _)) = inspect::fds(&self.proc_root, holder) else {
                continue;
            };
            let held: Vec<(i32, i32, u64)> = gone
                .stdio
                .iter()
                .filter_map(|&(which, inode)| {
                    let f = fds
                        .iter()
                        .find(|f| f.kind == FdKind::Pipe && f.inode == inode && f.write)?;
                    Some((which, f.fd, inode))
                })
                .collect();
            let Some(&(_, fd, inode)) = held.first() else {
                continue;
            };
            if inspect::pipe_has_reader(&self.proc_root, holder, fd) != Some(true) {
                continue;
            }
            let stream = match (held.iter().any(|h| h.0 == 1), held.iter().any(|h| h.0 == 2)) {
                (true, true) => "stdout and stderr",
                (true, false) => "stdout",
                _ => "stderr",
            };
            let parent = t.chain.first().copied();
            let (holder_command, holder_step) =
                self.settled_command(holder, &gone.command, &t.command);
            out.push(Warning::PipeHolder {
                // A step's shell that exec'd and exited at once may have left no exec
                // record: the holder inherited the step's marker.
                step: gone.step.clone().or_else(|| t.step.clone()).or(holder_step),
                process: gone.id.unwrap_or(ProcessId {
                    pid,
                    start_ticks: 0,
                }),
                command: gone.command.clone(),
                stream: stream.into(),
                pipe: inode,
                holder: Example {
                    pid: holder,
                    start_ticks: t.id.map(|i| i.start_ticks),
                    // What it runs now (it may have exec'd since its records).
                    command: holder_command,
                },
                started_by: parent.map(|pp| Example {
                    pid: pp,
                    start_ticks: None,
                    command: if pp == pid {
                        gone.command.clone()
                    } else {
                        self.live
                            .get(&pp)
                            .map(|p| p.command.clone())
                            .unwrap_or_default()
                    },
                }),
                since_unix_ms: t.born_unix_ms,
                t_us,
            });
        }
        out
    }
}

impl PipeWatch {
    /// The holder's command line now. A holder forked a moment ago may not have exec'd
    /// yet (it still shows its parent's command line): it gets up to [`EXEC_WAIT`] to.
    /// With the step (`GITHUB_ACTION`) its environment names, when it names one.
    fn settled_command(&self, pid: i32, parents: &str, recorded: &str) -> (String, Option<String>) {
        let until = std::time::Instant::now() + EXEC_WAIT;
        loop {
            let now = crate::platform::read_one(&self.proc_root, pid)
                .filter(|p| !p.argv.is_empty())
                .map(|p| {
                    (
                        command(&p.argv),
                        p.markers.get("GITHUB_ACTION").map(str::to_owned),
                    )
                });
            let settled = std::time::Instant::now() >= until;
            match now {
                Some((c, step)) if c != parents || settled => return (c, step),
                // Unreadable for now (its command line is empty while it execs): ask again
                // until the time is up, then say what the records say.
                None if settled => return (recorded.to_owned(), None),
                _ => std::thread::sleep(std::time::Duration::from_millis(5)),
            }
        }
    }
}

/// How long a just-forked holder is given to exec before it is named.
const EXEC_WAIT: std::time::Duration = std::time::Duration::from_millis(200);

/// Our own stdout and stderr, where they are pipes that something reads: (fd, inode).
pub fn read_stdio(proc_root: &std::path::Path) -> Vec<(i32, u64)> {
    let me = std::process::id() as i32;
    [1, 2]
        .into_iter()
        .filter_map(|fd| {
            let inode = inspect::pipe_inode(proc_root, me, fd)?;
            (inspect::pipe_has_reader(proc_root, me, fd) == Some(true)).then_some((fd, inode))
        })
        .collect()
}

/// Which of `candidates` hold one of `pipes` ((fd, inode), as [`read_stdio`] gives them)
/// for writing: (pid, the stream it holds).
pub fn holders(
    proc_root: &std::path::Path,
    candidates: &[i32],
    pipes: &[(i32, u64)],
) -> Vec<(i32, &'static str, u64)> {
    candidates
        .iter()
        .filter_map(|&pid| {
            let (fds, _) = inspect::fds(proc_root, pid).ok()?;
            let held: Vec<&(i32, u64)> = pipes
                .iter()
                .filter(|(_, inode)| {
                    fds.iter()
                        .any(|f| f.kind == FdKind::Pipe && f.inode == *inode && f.write)
                })
                .collect();
            let stream = match (held.iter().any(|h| h.0 == 1), held.iter().any(|h| h.0 == 2)) {
                (true, true) => "stdout and stderr",
                (true, false) => "stdout",
                (false, true) => "stderr",
                (false, false) => return None,
            };
            Some((pid, stream, held[0].1))
        })
        .collect()
}

fn command(argv: &Argv) -> String {
    argv.join_lossy()
}

/// `HH:MM:SS UTC` of a time in ms since the epoch.
pub fn clock_time(unix_ms: u64) -> String {
    let s = unix_ms / 1000 % 86_400;
    format!("{:02}:{:02}:{:02} UTC", s / 3600, s / 60 % 60, s % 60)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::journal::{Birth, Exit, Parent, Via};
    use std::process::{Command, Stdio};

    #[test]
    fn clock() {
        assert_eq!(clock_time(3_723_000), "01:02:03 UTC");
    }

    /// A real holder: a child started with the pipe as stdout outlives the "step" (us, as
    /// far as the records say), and the pipe has a reader (our read end).
    #[test]
    fn names_a_live_holder_of_an_exited_steps_stdout() {
        let (reader, writer) = std::io::pipe().unwrap();
        let mut holder = Command::new("sleep")
            .arg("30")
            .stdout(Stdio::from(writer.try_clone().unwrap()))
            .spawn()
            .unwrap();
        let me = std::process::id() as i32;
        let step_pid = 999_999; // the exited step, as the records name it
        let mut w = PipeWatch::new(PathBuf::from("/proc"), 0);
        let ino = rustix::fs::fstat(&writer).unwrap().st_ino;
        w.live.insert(
            step_pid,
            Tracked {
                id: None,
                chain: vec![me],
                command: "bash step.sh".into(),
                step: Some("run-tests".into()),
                stdio: vec![(1, ino)],
                stdio_at_exec: true,
                born_unix_ms: None,
            },
        );
        let hpid = holder.id() as i32;
        // Until it has exec'd, the child still runs as a copy of us.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while !std::fs::read(format!("/proc/{hpid}/cmdline")).is_ok_and(|c| c.starts_with(b"sleep"))
        {
            assert!(std::time::Instant::now() < until, "sleep never started");
            std::thread::yield_now();
        }
        let mut records = vec![
            Record::Birth(Birth {
                pid: hpid,
                start_ticks: None,
                parent: Parent {
                    pid: step_pid,
                    start_ticks: None,
                },
                chain: vec![step_pid, me],
                in_job: true,
                markers: Default::default(),
                via: Via::Fork,
                gap: None,
                t_us: 5_000_000,
            }),
            Record::Exit(Exit {
                pid: step_pid,
                start_ticks: None,
                t_us: 6_000_000,
            }),
        ];
        drop(writer);
        w.observe(&mut records, &mut StdioSeen::default());
        let warning = records
            .iter()
            .find_map(|r| match r {
                Record::Warning(w) => Some(w.describe()),
                _ => None,
            })
            .expect("a pipe-holder warning");
        assert!(
            warning.starts_with(&format!(
                "step `run-tests` (pid {step_pid}, `bash step.sh`) exited while pid {hpid} `sleep \
                 30`, started by pid {step_pid} `bash step.sh` at 00:00:05 UTC, still \
                 holds its stdout (pipe:[{ino}])"
            )),
            "{warning}"
        );
        // Without a reader: no alarm (nobody waits on that pipe).
        drop(reader);
        let mut w2 = PipeWatch::new(PathBuf::from("/proc"), 0);
        w2.live.insert(
            step_pid,
            Tracked {
                id: None,
                chain: vec![me],
                command: "bash step.sh".into(),
                step: None,
                stdio: vec![(1, ino)],
                stdio_at_exec: true,
                born_unix_ms: None,
            },
        );
        w2.live.insert(
            hpid,
            Tracked {
                id: None,
                chain: vec![step_pid],
                command: "sleep 30".into(),
                step: None,
                stdio: vec![(1, ino)],
                stdio_at_exec: true,
                born_unix_ms: None,
            },
        );
        let mut records = vec![Record::Exit(Exit {
            pid: step_pid,
            start_ticks: None,
            t_us: 1,
        })];
        w2.observe(&mut records, &mut StdioSeen::default());
        assert_eq!(records.len(), 1, "{records:?}");
        let _ = holder.kill();
        let _ = holder.wait();
    }
}
