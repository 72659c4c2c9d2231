//! Collecting the facts of a [`Hang`], under a time bound.
//!
//! The job's processes are the ones the sweep would take as the job's: what appeared since
//! the baseline, classified with the job's context (the guard's lineage checked against the
//! live tree first, as the sweep does), class `job` or `allowed`. For each: `/proc/PID/stat`
//! twice (CPU time over the sample: busy or idle), wchan, the system call of each thread,
//! its pipes and sockets, cwd; then every TCP socket of the machine once, to join both ends
//! of a connection and to know who listens where; Python stacks through `py-spy` during
//! the sample; kernel stacks where readable. Nothing is signalled.
//!
//! The bound covers everything: a process not reached in time is left out and the report
//! says the capture was cut short; py-spy is given what is left, never more.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{
    verdict, BlockedOn, Connection, Gone, Hang, HangFd, HangProcess, Listening, PidName, Pipe,
    Stack,
};
use crate::classify::{self, Class, Context, Policy};
use crate::guard::journal::{self, Record};
use crate::guard::lineage::Lineage;
use crate::model::{Argv, Bytes, Process, ProcessId, Protocol, Snapshot};
use crate::platform::conns::{self, TcpSocket};
use crate::platform::inspect::{self, FdKind, FdOp, PySpy, Syscall};
use crate::platform::{self, ReadOptions};

/// What a capture needs: the job's attribution, as the sweep has it, and its limits.
pub struct CaptureInput<'a> {
    pub baseline: &'a Snapshot,
    pub ctx: &'a Context,
    pub policy: &'a Policy,
    /// The guard's lineage, unverified (it is checked against the live tree here).
    pub lineage: Option<&'a Lineage>,
    /// The guard's journal, for the job processes it saw exit.
    pub journal: Option<PathBuf>,
    pub reason: String,
    pub bound: Duration,
    pub py_spy: PySpy,
    pub proc_root: PathBuf,
}

/// Python processes given to py-spy at most, and at once.
const MAX_PY_SPY: usize = 8;
const PY_SPY_PARALLEL: usize = 4;
/// The longest one py-spy dump may take.
const PY_SPY_TIMEOUT: Duration = Duration::from_secs(2);
/// Kernel stacks read at most.
const MAX_KERNEL_STACKS: usize = 64;
/// Threads whose system call is read, per process.
const MAX_THREADS: usize = 16;
/// Kept back from the bound for the second CPU reading and the verdicts.
const RESERVE: Duration = Duration::from_millis(300);
/// Exited job processes kept from the journal.
const MAX_GONE: usize = 50;

/// The job's processes, under `input.bound`.
pub fn capture(input: &CaptureInput<'_>) -> Hang {
    let started = Instant::now();
    let deadline = started + input.bound;
    let root = input.proc_root.as_path();
    let sample = (input.bound / 5).clamp(Duration::from_millis(100), Duration::from_secs(1));
    let mut hang = Hang {
        reason: input.reason.clone(),
        at_unix_ms: unix_ms(),
        bound_ms: input.bound.as_millis() as u64,
        sample_ms: sample.as_millis() as u64,
        complete: true,
        ..Hang::default()
    };
    let (snap, job) = match job_processes(input) {
        Ok(x) => x,
        Err(e) => {
            hang.missing
                .push(format!("the process table could not be read: {e}"));
            hang.complete = false;
            hang.elapsed_ms = started.elapsed().as_millis() as u64;
            return hang;
        }
    };
    let hz = snap.machine.clock_ticks_per_second.max(1);
    let now_ticks = platform::boot_ticks_now(hz);
    let mut secrets = crate::redact::Secrets::default();

    // Each process, once.
    let mut first_cpu: HashMap<i32, u64> = HashMap::new();
    let mut all_fds: Vec<(i32, Vec<inspect::Fd>)> = Vec::new();
    for p in &job {
        if Instant::now() + RESERVE >= deadline {
            hang.complete = false;
            hang.missing.push(format!(
                "the bound ({:?}) ran out: {} of the job's {} processes were not read",
                input.bound,
                job.len() - hang.processes.len(),
                job.len()
            ));
            break;
        }
        let Some(st) = inspect::cpu_stat(root, p.id.pid, p.id.start_ticks) else {
            continue; // gone meanwhile
        };
        first_cpu.insert(p.id.pid, st.cpu_ticks);
        let calls = inspect::thread_calls(root, p.id.pid, MAX_THREADS);
        let (fds, more) = inspect::fds(root, p.id.pid).unwrap_or_default();
        if more {
            hang.missing.push(format!(
                "pid {} has more than {} descriptors: the rest were not read",
                p.id.pid,
                inspect::MAX_FDS
            ));
        }
        let (syscall, blocked_on) = blocked(root, p.id.pid, &calls);
        let argv = crate::redact::redact_argv(&p.argv, &mut secrets);
        let command = if argv.is_empty() {
            format!("[{}]", p.comm.lossy())
        } else {
            argv.join_lossy()
        };
        let marker = |name: &str| p.markers.get(name).map(str::to_owned);
        hang.processes.push(HangProcess {
            pid: p.id.pid,
            start_ticks: p.id.start_ticks,
            ppid: p.ppid,
            comm: p.comm.lossy().into_owned(),
            command,
            state: st.state,
            wchan: inspect::wchan(root, p.id.pid),
            syscall,
            blocked_on,
            cpu_ms: st.cpu_ticks * 1000 / hz,
            cpu_delta_ms: None,
            age_s: now_ticks.saturating_sub(p.id.start_ticks) / hz,
            threads: st.threads,
            cwd: p
                .cwd
                .as_ref()
                .or(inspect::cwd(root, p.id.pid).as_ref())
                .map(|c| c.lossy().into_owned()),
            step: marker("GITHUB_ACTION"),
            test: marker("PYTEST_CURRENT_TEST"),
            xdist_worker: marker("PYTEST_XDIST_WORKER"),
            fds: fds
                .iter()
                .filter(|f| matches!(f.kind, FdKind::Pipe | FdKind::Socket))
                .map(|f| HangFd {
                    fd: f.fd,
                    kind: f.kind,
                    inode: f.inode,
                    read: f.read,
                    write: f.write,
                })
                .collect(),
            stack: None,
            no_stack: None,
            python: inspect::is_python(p.exe.as_ref().map(Bytes::as_bytes), p.comm.as_bytes()),
        });
        all_fds.push((p.id.pid, fds));
    }

    // Sockets and pipes, joined.
    match conns::tcp_sockets(root) {
        Ok(sockets) => join_sockets(&mut hang, &sockets, &snap),
        Err(e) => hang
            .missing
            .push(format!("TCP connections could not be read: {e}")),
    }
    hang.pipes = join_pipes(&hang.processes);
    hang.gone = input
        .journal
        .as_deref()
        .map(|j| gone_from_journal(j, deadline, &mut secrets))
        .unwrap_or_default();
    if input.journal.is_none() {
        hang.missing.push(
            "no guard journal: a server that exited cannot be named (start `ci-janitor guard`)"
                .into(),
        );
    }

    // Stacks while the CPU sample runs.
    let sample_end = started + sample;
    stacks(&mut hang, input, deadline);
    if let Some(wait) = sample_end.checked_duration_since(Instant::now()) {
        std::thread::sleep(wait);
    }
    let sampled_over = Instant::now().duration_since(started).min(input.bound);
    hang.sample_ms = sampled_over.as_millis() as u64;
    for p in &mut hang.processes {
        if let (Some(before), Some(now)) = (
            first_cpu.get(&p.pid),
            inspect::cpu_stat(root, p.pid, p.start_ticks),
        ) {
            p.cpu_delta_ms = Some(now.cpu_ticks.saturating_sub(*before) * 1000 / hz);
            p.state = now.state;
        }
    }
    drop(all_fds);
    hang.verdicts = verdict::verdicts(&hang);
    hang.elapsed_ms = started.elapsed().as_millis() as u64;
    hang
}

/// The job's processes by the sweep's own attribution: classified with the job's context,
/// the guard's lineage verified against the live tree first.
fn job_processes(input: &CaptureInput<'_>) -> Result<(Snapshot, Vec<Process>), String> {
    let mut snap = platform::read_snapshot(&ReadOptions {
        proc_root: input.proc_root.clone(),
        sockets: true,
        host_facts: false,
        detail: platform::Detail::new_since(input.baseline),
        ..Default::default()
    })
    .map_err(|e| e.to_string())?;
    let mut ctx = input.ctx.clone();
    if let Some(lineage) = input.lineage {
        let verified = lineage.verified(&snap, &ctx.markers);
        ctx.born_into_job = Some(Arc::new(verified.born_into_job()));
        verified.fill_markers(&mut snap);
    }
    let appeared = crate::diff::appeared(input.baseline, &snap);
    let plan = classify::classify(&snap, &appeared, &ctx, input.policy);
    let ids: HashSet<ProcessId> = plan
        .decisions
        .iter()
        .filter(|d| matches!(d.class, Class::Job | Class::Allowed { .. }))
        .map(|d| d.id)
        .collect();
    let job = snap
        .processes
        .iter()
        .filter(|p| ids.contains(&p.id) && !p.is_zombie())
        .cloned()
        .collect();
    Ok((snap, job))
}

/// The system call shown for a process (the first thread blocked on a descriptor, else the
/// main thread's), and the descriptors it waits on.
fn blocked(
    root: &Path,
    pid: i32,
    calls: &[inspect::ThreadCall],
) -> (Option<String>, Option<BlockedOn>) {
    for c in calls {
        let Syscall::In { nr, args } = c.call else {
            continue;
        };
        let (name, op) = inspect::syscall_name(nr);
        let (Some(name), Some(op)) = (name, op) else {
            continue;
        };
        let fd = args[0] as i32;
        let thread = if c.tid == pid {
            String::new()
        } else {
            format!(" in thread {}", c.tid)
        };
        let fds = if op == FdOp::Epoll {
            inspect::epoll_targets(root, pid, c.tid, fd)
        } else {
            vec![fd]
        };
        return (
            Some(format!("{name}(fd {fd}){thread}")),
            Some(BlockedOn { op, fds }),
        );
    }
    let main = calls.iter().find(|c| c.tid == pid).map(|c| match c.call {
        Syscall::Running => "running".to_owned(),
        Syscall::Elsewhere => "not in a system call".to_owned(),
        Syscall::In { nr, .. } => match inspect::syscall_name(nr).0 {
            Some(n) => n.to_owned(),
            None => format!("system call {nr}"),
        },
    });
    (main, None)
}

fn is_unspecified_or(addr: &str, ip: IpAddr) -> bool {
    match addr.parse::<IpAddr>() {
        Ok(a) => a.is_unspecified() || a == ip,
        Err(_) => false,
    }
}

/// Connections and listeners of the job's processes, each connection joined to its other
/// end (a job process) and to whoever listens on its remote address.
fn join_sockets(hang: &mut Hang, sockets: &[TcpSocket], snap: &Snapshot) {
    let by_inode: HashMap<u64, &TcpSocket> = sockets.iter().map(|s| (s.inode, s)).collect();
    let mut holder: HashMap<u64, (i32, i32)> = HashMap::new();
    for p in &hang.processes {
        for f in p.fds.iter().filter(|f| f.kind == FdKind::Socket) {
            holder.entry(f.inode).or_insert((p.pid, f.fd));
        }
    }
    let by_ends: HashMap<(SocketAddr, SocketAddr), &TcpSocket> = sockets
        .iter()
        .filter(|s| s.state != conns::TCP_LISTEN)
        .map(|s| ((s.local, s.remote), s))
        .collect();
    let local_ips: HashSet<IpAddr> = sockets.iter().map(|s| s.local.ip()).collect();
    let listening_on = |remote: SocketAddr| -> bool {
        sockets.iter().any(|s| {
            s.state == conns::TCP_LISTEN
                && s.local.port() == remote.port()
                && (s.local.ip().is_unspecified() || same_ip(s.local.ip(), remote.ip()))
        })
    };
    for p in &hang.processes {
        for f in p.fds.iter().filter(|f| f.kind == FdKind::Socket) {
            let Some(s) = by_inode.get(&f.inode) else {
                continue;
            };
            if s.state == conns::TCP_LISTEN {
                hang.listening.push(Listening {
                    pid: p.pid,
                    address: s.local.to_string(),
                    backlog: s.recv_queue,
                });
                continue;
            }
            let remote_is_local = s.remote.ip().is_loopback() || local_ips.contains(&s.remote.ip());
            let peer = by_ends
                .get(&(s.remote, s.local))
                .and_then(|other| holder.get(&other.inode))
                .map(|(pid, _)| *pid)
                .filter(|pid| *pid != p.pid || s.remote != s.local);
            // Accepted here: the local port is one that something listens on.
            let inbound = sockets.iter().any(|l| {
                l.state == conns::TCP_LISTEN
                    && l.local.port() == s.local.port()
                    && (l.local.ip().is_unspecified() || same_ip(l.local.ip(), s.local.ip()))
            });
            let listeners: Vec<PidName> = snap
                .listeners
                .iter()
                .filter(|l| {
                    l.protocol == Protocol::Tcp
                        && l.port == Some(s.remote.port())
                        && l.address
                            .as_deref()
                            .is_some_and(|a| is_unspecified_or(a, s.remote.ip()))
                })
                .flat_map(|l| l.owners.iter())
                .map(|o| PidName {
                    pid: o.pid,
                    comm: snap
                        .process(*o)
                        .map(|q| q.comm.lossy().into_owned())
                        .unwrap_or_default(),
                })
                .collect();
            let idle_ms = match (s.last_data_sent_ms, s.last_data_recv_ms) {
                (Some(a), Some(b)) => Some(u64::from(a.min(b))),
                _ => None,
            };
            hang.connections.push(Connection {
                pid: p.pid,
                fd: f.fd,
                inode: f.inode,
                local: s.local.to_string(),
                remote: s.remote.to_string(),
                state: conns::state_name(s.state).to_owned(),
                remote_is_local,
                idle_ms,
                unread: s.recv_queue,
                peer,
                listeners,
                nobody_listens: remote_is_local
                    && !inbound
                    && peer.is_none()
                    && !listening_on(s.remote),
            });
        }
    }
}

/// 127.0.0.1 and ::ffff:127.0.0.1 are the same address.
fn same_ip(a: IpAddr, b: IpAddr) -> bool {
    let canon = |ip: IpAddr| match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    };
    canon(a) == canon(b)
}

/// Pipes by inode: which job process holds which end. Kept when two processes share it
/// or one is blocked on it.
fn join_pipes(processes: &[HangProcess]) -> Vec<Pipe> {
    let mut by_inode: BTreeMap<u64, Pipe> = BTreeMap::new();
    for p in processes {
        for f in p.fds.iter().filter(|f| f.kind == FdKind::Pipe) {
            let pipe = by_inode.entry(f.inode).or_insert_with(|| Pipe {
                inode: f.inode,
                readers: Vec::new(),
                writers: Vec::new(),
            });
            if f.read {
                pipe.readers.push((p.pid, f.fd));
            }
            if f.write {
                pipe.writers.push((p.pid, f.fd));
            }
        }
    }
    let waited_on: HashSet<u64> = processes
        .iter()
        .filter_map(|p| {
            let b = p.blocked_on.as_ref()?;
            Some(
                p.fds
                    .iter()
                    .filter(|f| b.fds.contains(&f.fd) && f.kind == FdKind::Pipe)
                    .map(|f| f.inode)
                    .collect::<Vec<_>>(),
            )
        })
        .flatten()
        .collect();
    by_inode
        .into_values()
        .filter(|pipe| {
            let pids: HashSet<i32> = pipe
                .readers
                .iter()
                .chain(&pipe.writers)
                .map(|(pid, _)| *pid)
                .collect();
            pids.len() >= 2 || waited_on.contains(&pipe.inode)
        })
        .collect()
}

/// Python stacks through py-spy (bounded), else kernel stacks where readable.
fn stacks(hang: &mut Hang, input: &CaptureInput<'_>, deadline: Instant) {
    let root = input.proc_root.as_path();
    let mut python: Vec<usize> = (0..hang.processes.len())
        .filter(|&i| hang.processes[i].python)
        .collect();
    // The blocked ones first, then the sleeping ones, then the rest.
    python.sort_by_key(|&i| {
        let p = &hang.processes[i];
        (
            p.blocked_on.is_none(),
            p.state != 'S',
            std::cmp::Reverse(p.pid),
        )
    });
    match &input.py_spy {
        PySpy::At(exe) if !python.is_empty() => {
            let chosen: Vec<usize> = python.iter().copied().take(MAX_PY_SPY).collect();
            if python.len() > MAX_PY_SPY {
                hang.missing.push(format!(
                    "py-spy was run on {MAX_PY_SPY} of {} Python processes (blocked ones first)",
                    python.len()
                ));
            }
            for batch in chosen.chunks(PY_SPY_PARALLEL) {
                let left = deadline
                    .saturating_duration_since(Instant::now())
                    .saturating_sub(RESERVE);
                if left < Duration::from_millis(100) {
                    for &i in batch {
                        hang.processes[i].no_stack =
                            Some("no time was left within the capture's bound".into());
                    }
                    hang.complete = false;
                    continue;
                }
                let timeout = left.min(PY_SPY_TIMEOUT);
                let pids: Vec<i32> = batch.iter().map(|&i| hang.processes[i].pid).collect();
                let results: Vec<Result<String, String>> = std::thread::scope(|s| {
                    let handles: Vec<_> = pids
                        .iter()
                        .map(|&pid| s.spawn(move || inspect::py_spy_dump(exe, pid, timeout)))
                        .collect();
                    handles
                        .into_iter()
                        .map(|h| h.join().unwrap_or_else(|_| Err("py-spy panicked".into())))
                        .collect()
                });
                for (&i, r) in batch.iter().zip(results) {
                    match r {
                        Ok(text) => {
                            hang.processes[i].stack = Some(Stack {
                                source: "py-spy".into(),
                                text: crate::redact::redact_text(
                                    &text,
                                    &mut crate::redact::Secrets::default(),
                                ),
                            });
                        }
                        Err(e) => hang.processes[i].no_stack = Some(format!("py-spy: {e}")),
                    }
                }
            }
        }
        PySpy::Missing(why) if !python.is_empty() => {
            hang.missing.push(format!(
                "{why}; without it the {} Python process{} get kernel stacks at most",
                python.len(),
                if python.len() == 1 { "" } else { "es" }
            ));
        }
        _ => {}
    }
    // Kernel stacks for the rest, where the kernel lets us read them.
    let mut read = 0;
    for p in hang.processes.iter_mut() {
        if p.stack.is_some() || read >= MAX_KERNEL_STACKS || Instant::now() + RESERVE >= deadline {
            continue;
        }
        if !matches!(p.state, 'S' | 'D') {
            continue;
        }
        read += 1;
        match inspect::kernel_stack(root, p.pid) {
            Ok(lines) if !lines.is_empty() => {
                p.stack = Some(Stack {
                    source: "kernel".into(),
                    text: lines.join("\n"),
                });
            }
            Ok(_) => {}
            Err(e) => {
                let why = format!("kernel stack unreadable ({e}; /proc/PID/stack needs root)");
                if !hang.missing.iter().any(|m| m.starts_with("kernel stack")) {
                    hang.missing.push(why.clone());
                }
                if p.no_stack.is_none() {
                    p.no_stack = Some(why);
                }
                break;
            }
        }
    }
}

/// The job's processes the guard saw exit, most recent first: from the records of the
/// journal's last guard.
fn gone_from_journal(
    path: &Path,
    deadline: Instant,
    secrets: &mut crate::redact::Secrets,
) -> Vec<Gone> {
    let Ok(Some(j)) = journal::read_until(path, deadline) else {
        return Vec::new();
    };
    let begin = j
        .records
        .iter()
        .rposition(|r| matches!(r, Record::Start(_)))
        .unwrap_or(0);
    let mut base_ms = 0;
    let mut in_job: HashSet<(i32, Option<u64>)> = HashSet::new();
    let mut argv: HashMap<i32, Argv> = HashMap::new();
    let mut gone = Vec::new();
    for r in &j.records[begin..] {
        match r {
            Record::Start(s) => base_ms = s.at_unix_ms,
            Record::Seed(s) if s.in_job => {
                in_job.insert((s.id.pid, Some(s.id.start_ticks)));
                argv.insert(s.id.pid, s.argv.clone());
            }
            Record::Birth(b) if b.in_job => {
                in_job.insert((b.pid, b.start_ticks));
                argv.remove(&b.pid);
            }
            Record::Exec(e) if e.in_job => {
                in_job.insert((e.id.pid, Some(e.id.start_ticks)));
                argv.insert(e.id.pid, e.argv.clone());
            }
            Record::Exit(x) if in_job.contains(&(x.pid, x.start_ticks)) => {
                let Some(args) = argv.remove(&x.pid).filter(|a| !a.is_empty()) else {
                    continue;
                };
                let command = crate::redact::redact_argv(&args, secrets).join_lossy();
                gone.push(Gone {
                    pid: x.pid,
                    command,
                    exited_at_unix_ms: base_ms + x.t_us / 1000,
                });
            }
            _ => {}
        }
    }
    gone.sort_by_key(|g| std::cmp::Reverse(g.exited_at_unix_ms));
    gone.truncate(MAX_GONE);
    gone
}

fn unix_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipes_are_kept_when_shared_or_waited_on() {
        let fd = |fd, inode, read| HangFd {
            fd,
            kind: FdKind::Pipe,
            inode,
            read,
            write: !read,
        };
        let a = HangProcess {
            pid: 1,
            fds: vec![fd(0, 10, true), fd(1, 11, false), fd(5, 12, true)],
            blocked_on: Some(BlockedOn {
                op: FdOp::Read,
                fds: vec![5],
            }),
            ..HangProcess::default()
        };
        let b = HangProcess {
            pid: 2,
            fds: vec![fd(1, 10, false)],
            ..HangProcess::default()
        };
        let pipes = join_pipes(&[a, b]);
        let inodes: Vec<u64> = pipes.iter().map(|p| p.inode).collect();
        assert_eq!(inodes, vec![10, 12]);
        assert_eq!(pipes[0].readers, vec![(1, 0)]);
        assert_eq!(pipes[0].writers, vec![(2, 1)]);
    }

    #[test]
    fn mapped_addresses_are_the_same() {
        assert!(same_ip(
            "127.0.0.1".parse().unwrap(),
            "::ffff:127.0.0.1".parse().unwrap()
        ));
        assert!(!same_ip(
            "127.0.0.1".parse().unwrap(),
            "127.0.0.2".parse().unwrap()
        ));
    }
}
