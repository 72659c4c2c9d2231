//! From facts to sentences. Pure: a [`Hang`]'s facts in, verdicts out. A verdict is said
//! only when the facts settle it: the process is blocked in a system call on a descriptor
//! (or is idle holding a connection to a port nobody listens on), and what is at the other
//! end of that descriptor is known. Anything less gets no sentence; the facts still show.

use std::collections::{BTreeSet, HashMap};

use super::{Connection, Gone, Hang, HangProcess, Pipe, Verdict};
use crate::platform::inspect::{FdKind, FdOp};

/// The verdicts for `hang`'s facts.
pub fn verdicts(hang: &Hang) -> Vec<Verdict> {
    let by_pid: HashMap<i32, &HangProcess> = hang.processes.iter().map(|p| (p.pid, p)).collect();
    let mut out = Vec::new();
    let mut said: BTreeSet<i32> = BTreeSet::new();

    // Pipes: who waits on whom. An edge P -> Q when P is blocked on a pipe whose other end
    // (the end P needs to move) is held, among the job's processes, by Q alone.
    let mut waits_on_pipe: HashMap<i32, (u64, FdOp, Vec<i32>)> = HashMap::new();
    for p in &hang.processes {
        let Some(b) = &p.blocked_on else { continue };
        if !matches!(b.op, FdOp::Read | FdOp::Write) || p.cpu_delta_ms.is_some_and(|d| d > 0) {
            continue;
        }
        for fd in &b.fds {
            let Some(f) = p.fds.iter().find(|f| f.fd == *fd && f.kind == FdKind::Pipe) else {
                continue;
            };
            let Some(pipe) = hang.pipes.iter().find(|x| x.inode == f.inode) else {
                continue;
            };
            let others = other_end(pipe, b.op, p.pid);
            waits_on_pipe.insert(p.pid, (f.inode, b.op, others));
        }
    }
    // Cycles of two or more: A waits on B waits on ... on A.
    let mut in_cycle: BTreeSet<i32> = BTreeSet::new();
    let mut pids: Vec<i32> = waits_on_pipe.keys().copied().collect();
    pids.sort_unstable();
    for &start in &pids {
        if in_cycle.contains(&start) {
            continue;
        }
        let mut path = vec![start];
        let mut cur = start;
        while let Some((_, _, others)) = waits_on_pipe.get(&cur) {
            let [next] = others.as_slice() else { break };
            if *next == start && path.len() >= 2 {
                let parts: Vec<String> = path
                    .iter()
                    .map(|pid| {
                        let (inode, op, others) = &waits_on_pipe[pid];
                        format!(
                            "{} waits to {} pipe:[{inode}], whose other end only {} holds",
                            by_pid[pid].label(),
                            verb(*op),
                            by_pid
                                .get(&others[0])
                                .map_or_else(|| format!("pid {}", others[0]), |q| q.label())
                        )
                    })
                    .collect();
                let names: Vec<String> = path.iter().map(|pid| by_pid[pid].label()).collect();
                out.push(Verdict {
                    pids: path.clone(),
                    kind: "pipe-cycle".into(),
                    sentence: format!(
                        "{} wait on each other's pipes: {}.",
                        join_and(&names),
                        parts.join("; ")
                    ),
                });
                in_cycle.extend(path.iter().copied());
                break;
            }
            if path.contains(next) || !waits_on_pipe.contains_key(next) {
                break;
            }
            path.push(*next);
            cur = *next;
        }
    }
    said.extend(in_cycle.iter().copied());

    for p in &hang.processes {
        if said.contains(&p.pid) {
            continue;
        }
        match p.state {
            'T' | 't' => {
                out.push(Verdict {
                    pids: vec![p.pid],
                    kind: "stopped".into(),
                    sentence: format!(
                        "{} is stopped (state {}): it runs again only on SIGCONT.",
                        p.label(),
                        p.state
                    ),
                });
                said.insert(p.pid);
                continue;
            }
            'D' if p.cpu_delta_ms == Some(0) => {
                out.push(Verdict {
                    pids: vec![p.pid],
                    kind: "uninterruptible".into(),
                    sentence: format!(
                        "{} is in uninterruptible sleep (D){} and used no CPU in {:.1} s: no signal \
                         reaches it until that kernel call returns.",
                        p.label(),
                        p.wchan
                            .as_ref()
                            .map(|w| format!(" in {w}"))
                            .unwrap_or_default(),
                        hang.sample_ms as f64 / 1000.0
                    ),
                });
                said.insert(p.pid);
                continue;
            }
            _ => {}
        }
        if p.cpu_delta_ms.is_some_and(|d| d > 0) {
            continue; // it runs: not waiting
        }
        // Blocked on a pipe.
        if let Some((inode, op, others)) = waits_on_pipe.get(&p.pid) {
            let own_other_end = hang
                .pipes
                .iter()
                .find(|x| x.inode == *inode)
                .map(|x| {
                    let ends = if *op == FdOp::Read {
                        &x.writers
                    } else {
                        &x.readers
                    };
                    ends.iter()
                        .filter(|(pid, _)| *pid == p.pid)
                        .map(|(_, fd)| *fd)
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            let sentence = if others.is_empty() && *op == FdOp::Read && !own_other_end.is_empty() {
                format!(
                    "{} waits to read pipe:[{inode}], and the only write end any job process \
                     still holds is its own fd {}: it will never see end-of-file.",
                    p.label(),
                    own_other_end[0]
                )
            } else if others.is_empty() {
                continue;
            } else {
                let holders: Vec<String> = others
                    .iter()
                    .map(|q| {
                        by_pid.get(q).map_or_else(
                            || format!("pid {q}"),
                            |q| format!("{}{}", q.label(), idle_note(q, hang.sample_ms)),
                        )
                    })
                    .collect();
                format!(
                    "{} waits to {} pipe:[{inode}], whose other end is held by {}.",
                    p.label(),
                    verb(*op),
                    join_and(&holders)
                )
            };
            out.push(Verdict {
                pids: std::iter::once(p.pid)
                    .chain(others.iter().copied())
                    .collect(),
                kind: if others.is_empty() {
                    "own-pipe".into()
                } else {
                    "waits-on-pipe".into()
                },
                sentence,
            });
            said.insert(p.pid);
            continue;
        }
        // Blocked on a TCP connection (directly, or through the epoll set it waits in).
        let conns: Vec<&Connection> = hang.connections.iter().filter(|c| c.pid == p.pid).collect();
        let blocked_conns: Vec<&Connection> = match &p.blocked_on {
            Some(b) => conns
                .iter()
                .copied()
                .filter(|c| b.fds.contains(&c.fd) && c.remote_is_local)
                .collect(),
            None => Vec::new(),
        };
        if let [c] = blocked_conns.as_slice() {
            let waited = c
                .idle_ms
                .map(|ms| format!("has waited {}", secs(ms)))
                .unwrap_or_else(|| "waits".into());
            let other = if let Some(peer) = c.peer.and_then(|q| by_pid.get(&q)) {
                format!(
                    "{} holds the other end{}",
                    peer.label(),
                    idle_note(peer, hang.sample_ms)
                )
            } else if !c.listeners.is_empty() {
                format!(
                    "{} listens there",
                    join_and(
                        &c.listeners
                            .iter()
                            .map(|l| format!("{} pid {}", l.comm, l.pid))
                            .collect::<Vec<_>>()
                    )
                )
            } else if c.nobody_listens {
                format!(
                    "nothing listens there{}",
                    gone_note(&hang.gone, c, hang.at_unix_ms)
                )
            } else {
                continue;
            };
            out.push(Verdict {
                pids: std::iter::once(p.pid).chain(c.peer).collect(),
                kind: if c.nobody_listens {
                    "waits-on-closed-port".into()
                } else {
                    "waits-on-peer".into()
                },
                sentence: format!(
                    "{} {waited} on {} ({}{}); {other}.",
                    p.label(),
                    c.remote,
                    c.state,
                    p.syscall
                        .as_ref()
                        .map(|s| format!(", in {s}"))
                        .unwrap_or_default()
                ),
            });
            said.insert(p.pid);
            continue;
        }
        // Idle, holding a connection to a local port nobody listens on.
        if p.idle() {
            let dead: Vec<&&Connection> = conns.iter().filter(|c| c.nobody_listens).collect();
            if let [c] = dead.as_slice() {
                out.push(Verdict {
                    pids: vec![p.pid],
                    kind: "holds-dead-connection".into(),
                    sentence: format!(
                        "{} is idle (no CPU in {:.1} s{}) and holds a connection to {} ({}{}); \
                         nothing listens there{}.",
                        p.label(),
                        hang.sample_ms as f64 / 1000.0,
                        p.wchan
                            .as_ref()
                            .map(|w| format!(", in {w}"))
                            .unwrap_or_default(),
                        c.remote,
                        c.state,
                        c.idle_ms
                            .map(|ms| format!(", no data for {}", secs(ms)))
                            .unwrap_or_default(),
                        gone_note(&hang.gone, c, hang.at_unix_ms)
                    ),
                });
                said.insert(p.pid);
            }
        }
    }
    out
}

/// The processes other than `me` holding the end of `pipe` that a blocked `op` waits on:
/// the writers for a read, the readers for a write.
fn other_end(pipe: &Pipe, op: FdOp, me: i32) -> Vec<i32> {
    let ends = if op == FdOp::Read {
        &pipe.writers
    } else {
        &pipe.readers
    };
    let mut v: Vec<i32> = ends
        .iter()
        .map(|(pid, _)| *pid)
        .filter(|pid| *pid != me)
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

fn verb(op: FdOp) -> &'static str {
    match op {
        FdOp::Write => "write to",
        _ => "read",
    }
}

fn idle_note(p: &HangProcess, sample_ms: u64) -> String {
    match p.cpu_delta_ms {
        Some(0) => format!(
            " (idle: no CPU in {:.1} s{})",
            sample_ms as f64 / 1000.0,
            p.wchan
                .as_ref()
                .map(|w| format!(", in {w}"))
                .unwrap_or_default()
        ),
        Some(d) => format!(
            " (busy: {d} ms of CPU in {:.1} s)",
            sample_ms as f64 / 1000.0
        ),
        None => String::new(),
    }
}

/// What the journal says of the process that served the port: the most recent exited job
/// process whose command line names that port. Only a fact the journal holds; nothing when
/// it holds none.
fn gone_note(gone: &[Gone], c: &Connection, now_ms: u64) -> String {
    let Some(port) = c.remote.rsplit(':').next() else {
        return String::new();
    };
    let names_port = |cmd: &str| cmd.split([' ', '=', ':', '/']).any(|tok| tok == port);
    match gone.iter().find(|g| names_port(&g.command)) {
        Some(g) => format!(
            "; the job's process whose command line names port {port}, `{}` pid {}, exited \
             {} ago (journal)",
            short(&g.command),
            g.pid,
            secs(now_ms.saturating_sub(g.exited_at_unix_ms))
        ),
        None if gone.is_empty() => String::new(),
        None => format!("; no job process the guard saw exit names port {port}"),
    }
}

/// `0.4 s`, `12 s`: tenths only where they matter.
fn secs(ms: u64) -> String {
    if ms < 10_000 {
        format!("{:.1} s", ms as f64 / 1000.0)
    } else {
        format!("{} s", ms / 1000)
    }
}

/// The first words of a command line, paths by their last part.
fn short(cmd: &str) -> String {
    let mut words: Vec<&str> = cmd
        .split(' ')
        .take(6)
        .map(|w| w.rsplit('/').next().unwrap_or(w))
        .collect();
    if cmd.split(' ').count() > 6 {
        words.push("…");
    }
    words.join(" ")
}

fn join_and(items: &[String]) -> String {
    match items {
        [] => String::new(),
        [a] => a.clone(),
        [a, b] => format!("{a} and {b}"),
        [rest @ .., last] => format!("{}, and {last}", rest.join(", ")),
    }
}

#[cfg(test)]
mod tests {
    use super::super::{BlockedOn, HangFd, PidName};
    use super::*;

    fn proc(pid: i32, comm: &str, cpu_delta: u64) -> HangProcess {
        HangProcess {
            pid,
            comm: comm.into(),
            command: comm.into(),
            state: 'S',
            cpu_delta_ms: Some(cpu_delta),
            ..HangProcess::default()
        }
    }

    fn pipe_fd(fd: i32, inode: u64, read: bool) -> HangFd {
        HangFd {
            fd,
            kind: FdKind::Pipe,
            inode,
            read,
            write: !read,
        }
    }

    fn blocked(op: FdOp, fd: i32) -> Option<BlockedOn> {
        Some(BlockedOn { op, fds: vec![fd] })
    }

    #[test]
    fn two_processes_blocked_on_each_others_pipes() {
        let mut a = proc(10, "a", 0);
        a.fds = vec![pipe_fd(3, 100, true), pipe_fd(4, 200, false)];
        a.blocked_on = blocked(FdOp::Read, 3);
        let mut b = proc(11, "b", 0);
        b.fds = vec![pipe_fd(3, 200, true), pipe_fd(4, 100, false)];
        b.blocked_on = blocked(FdOp::Read, 3);
        let hang = Hang {
            processes: vec![a, b],
            pipes: vec![
                Pipe {
                    inode: 100,
                    readers: vec![(10, 3)],
                    writers: vec![(11, 4)],
                },
                Pipe {
                    inode: 200,
                    readers: vec![(11, 3)],
                    writers: vec![(10, 4)],
                },
            ],
            sample_ms: 1000,
            ..Hang::default()
        };
        let v = verdicts(&hang);
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].kind, "pipe-cycle");
        assert_eq!(v[0].pids, vec![10, 11]);
        assert!(
            v[0].sentence
                .starts_with("a pid 10 and b pid 11 wait on each other's pipes"),
            "{}",
            v[0].sentence
        );
    }

    #[test]
    fn a_busy_process_gets_no_verdict() {
        let mut a = proc(10, "a", 40);
        a.fds = vec![pipe_fd(3, 100, true)];
        a.blocked_on = blocked(FdOp::Read, 3);
        let hang = Hang {
            processes: vec![a],
            pipes: vec![Pipe {
                inode: 100,
                readers: vec![(10, 3)],
                writers: vec![(11, 4)],
            }],
            ..Hang::default()
        };
        assert!(verdicts(&hang).is_empty());
    }

    #[test]
    fn reader_holding_its_own_write_end() {
        let mut a = proc(10, "a", 0);
        a.fds = vec![pipe_fd(3, 100, true), pipe_fd(4, 100, false)];
        a.blocked_on = blocked(FdOp::Read, 3);
        let hang = Hang {
            processes: vec![a],
            pipes: vec![Pipe {
                inode: 100,
                readers: vec![(10, 3)],
                writers: vec![(10, 4)],
            }],
            ..Hang::default()
        };
        let v = verdicts(&hang);
        assert_eq!(v[0].kind, "own-pipe");
        assert!(v[0].sentence.contains("its own fd 4"), "{}", v[0].sentence);
    }

    fn client_on(conn: Connection, gone: Vec<Gone>) -> Hang {
        let mut c = proc(20, "python3", 0);
        c.python = true;
        c.command = "python3 -m pytest tests".into();
        c.xdist_worker = Some("gw0".into());
        c.blocked_on = blocked(FdOp::Read, 5);
        c.syscall = Some("recvfrom(fd 5)".into());
        let server = proc(30, "uvicorn", 0);
        Hang {
            processes: vec![c, server],
            connections: vec![conn],
            gone,
            at_unix_ms: 1_000_000,
            sample_ms: 1000,
            ..Hang::default()
        }
    }

    fn conn(peer: Option<i32>, nobody: bool) -> Connection {
        Connection {
            pid: 20,
            fd: 5,
            inode: 1,
            local: "127.0.0.1:50000".into(),
            remote: "127.0.0.1:4200".into(),
            state: if nobody { "CLOSE-WAIT" } else { "ESTAB" }.into(),
            remote_is_local: true,
            idle_ms: Some(290_400),
            unread: 0,
            peer,
            listeners: if nobody {
                vec![]
            } else {
                vec![PidName {
                    pid: 30,
                    comm: "uvicorn".into(),
                }]
            },
            nobody_listens: nobody,
        }
    }

    #[test]
    fn client_waiting_on_a_live_server_that_never_replies() {
        let v = verdicts(&client_on(conn(Some(30), false), vec![]));
        assert_eq!(v.len(), 1, "{v:?}");
        assert_eq!(v[0].kind, "waits-on-peer");
        assert_eq!(v[0].pids, vec![20, 30]);
        assert_eq!(
            v[0].sentence,
            "pytest pid 20 (gw0) has waited 290 s on 127.0.0.1:4200 (ESTAB, in recvfrom(fd 5)); \
             uvicorn pid 30 holds the other end (idle: no CPU in 1.0 s)."
        );
    }

    #[test]
    fn client_waiting_on_a_server_that_is_gone() {
        let gone = vec![Gone {
            pid: 1234,
            command: "python3 -m uvicorn app:app --port 4200".into(),
            exited_at_unix_ms: 1_000_000 - 295_000,
        }];
        let v = verdicts(&client_on(conn(None, true), gone));
        assert_eq!(v[0].kind, "waits-on-closed-port");
        assert!(
            v[0].sentence.contains(
                "nothing listens there; the job's process whose command line names port 4200, \
                 `python3 -m uvicorn app:app --port 4200` pid 1234, exited 295 s ago (journal)"
            ),
            "{}",
            v[0].sentence
        );
        // Without a journal: the facts, no guess about who served it.
        let v = verdicts(&client_on(conn(None, true), vec![]));
        assert!(
            v[0].sentence.ends_with("nothing listens there."),
            "{}",
            v[0].sentence
        );
    }

    #[test]
    fn idle_holder_of_a_dead_connection() {
        let mut h = client_on(conn(None, true), vec![]);
        h.processes[0].blocked_on = Some(BlockedOn {
            op: FdOp::Epoll,
            fds: vec![9],
        });
        h.processes[0].wchan = Some("do_epoll_wait".into());
        let v = verdicts(&h);
        assert_eq!(v[0].kind, "holds-dead-connection");
        assert!(v[0]
            .sentence
            .contains("is idle (no CPU in 1.0 s, in do_epoll_wait)"));
        // Busy: nothing said.
        h.processes[0].cpu_delta_ms = Some(30);
        assert!(verdicts(&h).is_empty());
    }

    #[test]
    fn stopped_and_uninterruptible() {
        let mut a = proc(1, "a", 0);
        a.state = 'T';
        let mut b = proc(2, "b", 0);
        b.state = 'D';
        b.wchan = Some("nfs_wait".into());
        let v = verdicts(&Hang {
            processes: vec![a, b],
            sample_ms: 500,
            ..Hang::default()
        });
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].kind, "stopped");
        assert!(v[1].sentence.contains("(D) in nfs_wait"));
    }
}
