//! Process events for the guard: births, execs and exits from the netlink proc connector
//! (`NETLINK_CONNECTOR`, group `CN_IDX_PROC`), and the `/proc` reads that turn an event into
//! facts about one process (its identity, parent, command line and job markers).
//!
//! Messages are built and parsed as plain bytes in native byte order, framed by
//! [`super::netlink`] as sock_diag's are, so there is no `unsafe` here.
//!
//! Subscribing is checked, never assumed: the kernel answers `PROC_CN_MCAST_LISTEN` with a
//! `PROC_EVENT_NONE` message carrying an errno (`EPERM` for an unprivileged caller before
//! Linux 6.6), and ignores the request altogether from a pid or user namespace other than
//! the initial one (a container). No answer within [`ACK_TIMEOUT`] means no events will
//! come, and the guard falls back to polling `/proc`.
//!
//! The kernel drops events when the socket's receive buffer is full and then fails the
//! next `recv` with `ENOBUFS`. The buffer is made large (`SO_RCVBUFFORCE` when privileged)
//! and every `ENOBUFS` is counted and returned, never swallowed.

#[cfg(test)]
use super::ne_bytes::u16_at;
use super::ne_bytes::{i32_at, u32_at, u64_at};
use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::Path;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
use rustix::net::netlink::SocketAddrNetlink;
use rustix::net::RecvFlags;

#[cfg(test)]
use super::netlink::NLMSG_HDRLEN;
use super::netlink::{self, NLMSG_DONE};

use crate::model::{Argv, Bytes, Markers, ProcessId};

use super::parse::{parse_cmdline, parse_stat, scan_environ_markers, Stat};
use super::procfs::{self, errno_text};

// The connector sends (and expects) every message as NLMSG_DONE.
// <linux/connector.h>: cn_msg is idx, val, seq, ack (u32 each), len, flags (u16 each).
const CN_MSG_LEN: usize = 20;
const CN_IDX_PROC: u32 = 1;
const CN_VAL_PROC: u32 = 1;
// <linux/cn_proc.h>
const PROC_CN_MCAST_LISTEN: u32 = 1;
const PROC_EVENT_NONE: u32 = 0;
const PROC_EVENT_FORK: u32 = 0x0000_0001;
const PROC_EVENT_EXEC: u32 = 0x0000_0002;
const PROC_EVENT_EXIT: u32 = 0x8000_0000;
/// Where `struct proc_event` starts in a datagram, and its fields within it: `what` (u32),
/// `cpu` (u32), `timestamp_ns` (u64), then the `event_data` union.
#[cfg(test)]
const EVENT_AT: usize = NLMSG_HDRLEN + CN_MSG_LEN;
const EVENT_DATA: usize = 16;

/// How long to wait for the kernel's answer to the subscription.
pub const ACK_TIMEOUT: Duration = Duration::from_secs(2);
/// The receive buffer asked for by default: at roughly 1 KiB of kernel memory per queued
/// event, room for some 30,000 events while the guard is busy.
pub const RCVBUF: usize = 32 * 1024 * 1024;
/// One connector datagram is 76 bytes; a larger buffer costs nothing.
const RECV_BUF: usize = 4096;

/// One process event, as the kernel reported it (pids in the initial pid namespace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProcEvent {
    /// `parent` (a thread group id) forked the new process `child`. Thread creations are
    /// left out.
    Fork { parent: i32, child: i32, at_ns: u64 },
    /// `pid` called execve (successfully).
    Exec { pid: i32, at_ns: u64 },
    /// The process `pid` exited (its last thread, or its leader: see the guard).
    Exit { pid: i32, at_ns: u64 },
}

impl ProcEvent {
    /// The kernel's timestamp (`CLOCK_MONOTONIC`, nanoseconds).
    pub fn at_ns(&self) -> u64 {
        match *self {
            ProcEvent::Fork { at_ns, .. }
            | ProcEvent::Exec { at_ns, .. }
            | ProcEvent::Exit { at_ns, .. } => at_ns,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectorError {
    #[error("open a NETLINK_CONNECTOR socket: {0}")]
    Socket(io::Error),
    #[error("join the proc connector's multicast group: {0}")]
    Bind(io::Error),
    #[error("send the proc connector subscription: {0}")]
    Send(io::Error),
    #[error(
        "subscribe to process events: the kernel refused ({0}); run the guard as root or \
         with CAP_NET_ADMIN (or on Linux 6.6 or later)"
    )]
    Refused(io::Error),
    #[error(
        "subscribe to process events: no answer from the kernel within {0:?} (this happens \
         in a pid or user namespace other than the host's, such as a container, and on \
         kernels without CONFIG_PROC_EVENTS)"
    )]
    NoAnswer(Duration),
    #[error("read the proc connector's answer: {0}")]
    Recv(io::Error),
}

/// The events the polled socket takes when the kernel filters (Linux 6.6+): execs only. An
/// exec must be read at once (a short-lived process is gone a moment later, with its
/// command line and markers); forks and exits can wait for the next batch.
const POLLED_EVENTS: u32 = PROC_EVENT_EXEC;
/// The events of the second socket, drained (not woken for) while it is busy.
const BATCHED_EVENTS: u32 = PROC_EVENT_FORK | PROC_EVENT_EXIT;

/// Subscribed proc connector sockets: one, or (where the kernel filters events per socket,
/// Linux 6.6+) two — execs on the polled one, forks and exits on a second that is drained
/// before it.
///
/// Why the second socket is drained first: a process's fork event is queued before the
/// process runs, and its exec event before it can exit, so every exec read from the polled
/// socket finds its fork already queued on the other, and every exit read there finds its
/// process's exec already queued on the polled one. The two streams are then merged by
/// their timestamps, each keeping its own order.
#[derive(Debug)]
pub struct Connector {
    fd: OwnedFd,
    /// Forks and exits, when the kernel filters.
    batched: Option<OwnedFd>,
    buf: Vec<u8>,
    /// The receive buffer the kernel granted, in bytes.
    pub rcvbuf: usize,
    /// Whether `SO_RCVBUFFORCE` (beyond `net.core.rmem_max`) was allowed.
    pub rcvbuf_forced: bool,
    /// Whether the kernel filters events per socket (Linux 6.6+), found by its answer to
    /// the filtered subscription (older kernels ignore it without answering). Then execs
    /// come on the polled socket and forks and exits on [`Connector::batched_fd`].
    pub filtered: bool,
    /// Events that arrived on the polled socket while subscribing.
    early: Vec<ProcEvent>,
    /// Batched events read but not handed out: the polled socket's drain stopped short of
    /// them (see [`Connector::drain`]).
    held: Vec<ProcEvent>,
    /// Fork and exit events may have come on both sockets while the filters were being
    /// set: the first drain drops the batched socket's copies of the early events.
    dedup_early: bool,
}

/// What one [`Connector::drain`] read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drained {
    /// Datagrams read.
    pub messages: usize,
    /// Datagrams read from the batched socket (forks and exits).
    pub batched: usize,
    /// `ENOBUFS` errors: each means the kernel dropped one or more events.
    pub overruns: u32,
    /// A socket still had datagrams when the batch was full: drain again.
    pub more: bool,
}

impl Connector {
    /// Opens the socket with a receive buffer of `rcvbuf` bytes ([`RCVBUF`] unless testing
    /// overflows), subscribes, and waits for the kernel to confirm. Where the kernel
    /// filters events, a second socket takes the forks and exits.
    pub fn open(rcvbuf: usize) -> Result<Connector, ConnectorError> {
        let (fd, rcvbuf, rcvbuf_forced) = event_socket(rcvbuf)?;
        rustix::net::bind(&fd, &SocketAddrNetlink::new(0, CN_IDX_PROC))
            .map_err(|e| ConnectorError::Bind(e.into()))?;
        let mut c = Connector {
            fd,
            batched: None,
            buf: vec![0; RECV_BUF],
            rcvbuf,
            rcvbuf_forced,
            filtered: false,
            early: Vec::new(),
            held: Vec::new(),
            dedup_early: false,
        };
        // Our own pid makes the answers ours: every listener receives every answer (that
        // its filter lets through: on Linux 6.6+ an answer is an event of type NONE, which
        // only a socket taking every event receives).
        let nonce = std::process::id();
        c.send(&c.fd, &subscription(1, nonce, None))?;
        c.wait_for_answer(nonce.wrapping_add(1), &[])?;
        c.split(nonce, rcvbuf)?;
        Ok(c)
    }

    /// Moves forks and exits to a second socket where the kernel filters events per socket
    /// (Linux 6.6+), found, not guessed: the second socket joins the group and asks for
    /// forks and exits only (8 bytes, `struct proc_input`), then the polled socket (still
    /// taking every event) asks again plainly. A kernel that filters answers both, in that
    /// order; an older one ignores the first without a word. Only then is the polled
    /// socket narrowed to execs, so no fork or exit falls between the two.
    fn split(&mut self, nonce: u32, rcvbuf: usize) -> Result<(), ConnectorError> {
        let (side, _, _) = event_socket(rcvbuf)?;
        rustix::net::bind(&side, &SocketAddrNetlink::new(0, CN_IDX_PROC))
            .map_err(|e| ConnectorError::Bind(e.into()))?;
        self.send(
            &side,
            &subscription(2, nonce.wrapping_add(2), Some(BATCHED_EVENTS)),
        )?;
        self.send(&self.fd, &subscription(3, nonce.wrapping_add(4), None))?;
        let answers = self.wait_for_answer(nonce.wrapping_add(5), &[nonce.wrapping_add(3)])?;
        if answers.first() != Some(&Some(0)) {
            // No filtering: the one socket takes every event (the second closes unused).
            return Ok(());
        }
        self.filtered = true;
        self.batched = Some(side);
        // The polled socket's answer to this is filtered out (it takes execs only).
        self.send(
            &self.fd,
            &subscription(4, nonce.wrapping_add(6), Some(POLLED_EVENTS)),
        )?;
        // What it received before, every event, is early; the second socket has copies of
        // its forks and exits, which the first drain drops.
        let mut overruns = 0;
        recv_events(
            &self.fd,
            &mut self.buf,
            &mut self.early,
            usize::MAX,
            &mut overruns,
        )
        .map_err(ConnectorError::Recv)?;
        self.dedup_early = true;
        Ok(())
    }

    fn send(&self, fd: &OwnedFd, msg: &[u8]) -> Result<(), ConnectorError> {
        netlink::send(fd, msg).map_err(ConnectorError::Send)
    }

    /// Reads the polled socket until the answer with ack `last` (its errno refused is an
    /// error), keeping the events that come meanwhile. Returns the errnos of the answers
    /// with the acks in `also` that came before it (`None` for one that did not), then
    /// `last`'s.
    fn wait_for_answer(
        &mut self,
        last: u32,
        also: &[u32],
    ) -> Result<Vec<Option<u32>>, ConnectorError> {
        let mut seen: Vec<Option<u32>> = vec![None; also.len()];
        let until = Instant::now() + ACK_TIMEOUT;
        loop {
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(ConnectorError::NoAnswer(ACK_TIMEOUT));
            }
            let mut fds = [PollFd::new(&self.fd, PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&timespec(left))) {
                Ok(_) | Err(Errno::INTR) => {}
                Err(e) => return Err(ConnectorError::Recv(e.into())),
            }
            loop {
                let len = match rustix::net::recv(&self.fd, &mut self.buf[..], RecvFlags::empty()) {
                    Ok((n, _)) => n,
                    Err(Errno::AGAIN) => break,
                    Err(Errno::INTR | Errno::NOBUFS) => continue,
                    Err(e) => return Err(ConnectorError::Recv(e.into())),
                };
                match parse_datagram(&self.buf[..len]) {
                    Some(Message::Answer { ack, errno }) if ack == last => {
                        if errno != 0 {
                            return Err(ConnectorError::Refused(io::Error::from_raw_os_error(
                                errno as i32,
                            )));
                        }
                        seen.push(Some(errno));
                        return Ok(seen);
                    }
                    Some(Message::Answer { ack, errno }) => {
                        if let Some(i) = also.iter().position(|&a| a == ack) {
                            seen[i] = Some(errno);
                        }
                    }
                    Some(Message::Event(ev)) => self.early.push(ev),
                    _ => {}
                }
            }
        }
    }

    /// The socket to poll: execs (or every event, on one socket).
    pub fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// The socket of forks and exits, where the kernel filters: polled only while it is
    /// idle, and drained with every batch.
    pub fn batched_fd(&self) -> Option<BorrowedFd<'_>> {
        self.batched.as_ref().map(|f| f.as_fd())
    }

    /// Whether events that arrived while subscribing wait to be drained.
    pub fn has_early_events(&self) -> bool {
        !self.early.is_empty() || !self.held.is_empty()
    }

    /// Reads every datagram queued now (at most `max` per socket), without blocking,
    /// appending the events to `out`: the batched socket first, then the polled one, merged
    /// by timestamp (see [`Connector`]).
    pub fn drain(&mut self, out: &mut Vec<ProcEvent>, max: usize) -> io::Result<Drained> {
        let mut d = Drained::default();
        let mut side = std::mem::take(&mut self.held);
        let mut side_full = false;
        if let Some(fd) = &self.batched {
            let before = side.len();
            let (n, full) = recv_events(fd, &mut self.buf, &mut side, max, &mut d.overruns)?;
            d.batched = n;
            d.messages += n;
            side_full = full;
            if self.dedup_early {
                self.dedup_early = false;
                let early: std::collections::HashSet<ProcEvent> =
                    self.early.iter().copied().collect();
                let mut i = 0;
                // Before its filter it took every event, as the polled socket did.
                side.retain(|ev| {
                    i += 1;
                    i <= before || !(early.contains(ev) || matches!(ev, ProcEvent::Exec { .. }))
                });
            }
        }
        let mut main = std::mem::take(&mut self.early);
        // With the batched socket cut short, the polled one waits: an exec read now could
        // belong to a fork still unread.
        let main_full = if side_full {
            true
        } else {
            let (n, full) = recv_events(&self.fd, &mut self.buf, &mut main, max, &mut d.overruns)?;
            d.messages += n;
            full
        };
        d.more = side_full || main_full;
        merge(&main, side, main_full, out, &mut self.held);
        Ok(d)
    }
}

/// Merges two event streams by timestamp, each in its own order (ties: the batched one
/// first, a fork before its child's exec). With `main_cut` (the polled socket was not
/// drained to the end), the batched events after the last polled one are held for the next
/// drain: the polled events before them may still be unread.
fn merge(
    main: &[ProcEvent],
    side: Vec<ProcEvent>,
    main_cut: bool,
    out: &mut Vec<ProcEvent>,
    held: &mut Vec<ProcEvent>,
) {
    if side.is_empty() {
        out.extend_from_slice(main);
        return;
    }
    let mut side = side.into_iter().peekable();
    for ev in main {
        while let Some(s) = side.next_if(|s| s.at_ns() <= ev.at_ns()) {
            out.push(s);
        }
        out.push(*ev);
    }
    if main_cut {
        held.extend(side);
    } else {
        out.extend(side);
    }
}

/// Reads up to `max` datagrams from `fd` into `out`: how many, and whether it stopped at
/// `max` (more may be queued).
fn recv_events(
    fd: &OwnedFd,
    buf: &mut [u8],
    out: &mut Vec<ProcEvent>,
    max: usize,
    overruns: &mut u32,
) -> io::Result<(usize, bool)> {
    let mut n = 0;
    while n < max {
        let len = match rustix::net::recv(fd, &mut buf[..], RecvFlags::empty()) {
            Ok((len, _)) => len,
            Err(Errno::AGAIN) => return Ok((n, false)),
            Err(Errno::INTR) => continue,
            Err(Errno::NOBUFS) => {
                *overruns += 1;
                continue;
            }
            Err(e) => return Err(e.into()),
        };
        n += 1;
        if let Some(Message::Event(ev)) = parse_datagram(&buf[..len]) {
            out.push(ev);
        }
    }
    Ok((n, true))
}

/// A non-blocking connector socket with a receive buffer of `rcvbuf` bytes (forced where
/// allowed): the socket, the size granted, and whether it was forced.
fn event_socket(rcvbuf: usize) -> Result<(OwnedFd, usize, bool), ConnectorError> {
    let fd =
        netlink::socket(rustix::net::netlink::CONNECTOR, true).map_err(ConnectorError::Socket)?;
    let forced = rustix::net::sockopt::set_socket_recv_buffer_size_force(&fd, rcvbuf).is_ok();
    if !forced {
        // Capped by net.core.rmem_max; whatever we get is reported.
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size(&fd, rcvbuf);
    }
    let granted = rustix::net::sockopt::socket_recv_buffer_size(&fd).unwrap_or(0);
    Ok((fd, granted, forced))
}

/// A subscription message: `PROC_CN_MCAST_LISTEN`, alone (4 bytes, every kernel) or with an
/// event filter (the 8-byte `struct proc_input` of Linux 6.6+).
fn subscription(seq: u32, ack: u32, filter: Option<u32>) -> Vec<u8> {
    let mut data = PROC_CN_MCAST_LISTEN.to_ne_bytes().to_vec();
    if let Some(events) = filter {
        data.extend_from_slice(&events.to_ne_bytes());
    }
    // struct cn_msg, then the data.
    let mut cn = Vec::with_capacity(CN_MSG_LEN + data.len());
    cn.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
    cn.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
    cn.extend_from_slice(&seq.to_ne_bytes());
    cn.extend_from_slice(&ack.to_ne_bytes());
    cn.extend_from_slice(&(data.len() as u16).to_ne_bytes());
    cn.extend_from_slice(&0u16.to_ne_bytes()); // cn_msg flags
    cn.extend_from_slice(&data);
    netlink::message(NLMSG_DONE, 0, seq, &cn)
}

/// A connector datagram, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Message {
    Event(ProcEvent),
    /// The answer to a subscription: `ack` is the request's ack plus one.
    Answer {
        ack: u32,
        errno: u32,
    },
    /// Another event type, a thread's fork or exit, or another connector's message.
    Other,
}

fn parse_datagram(buf: &[u8]) -> Option<Message> {
    // One message per datagram, of type NLMSG_DONE: a cn_msg and a proc_event.
    let msg = netlink::messages(buf).next()?.ok()?;
    if msg.kind != NLMSG_DONE || msg.payload.len() < CN_MSG_LEN {
        return None;
    }
    let cn = msg.payload;
    if u32_at(cn, 0)? != CN_IDX_PROC || u32_at(cn, 4)? != CN_VAL_PROC {
        return Some(Message::Other);
    }
    let ack = u32_at(cn, 12)?;
    let ev = &cn[CN_MSG_LEN..];
    let what = u32_at(ev, 0)?;
    let at_ns = u64_at(ev, 8)?;
    let field = |i: usize| i32_at(ev, EVENT_DATA + 4 * i);
    Some(match what {
        PROC_EVENT_NONE => Message::Answer {
            ack,
            errno: u32_at(ev, EVENT_DATA)?,
        },
        // fork: parent_pid, parent_tgid, child_pid, child_tgid
        PROC_EVENT_FORK => {
            let (child_pid, child_tgid) = (field(2)?, field(3)?);
            if child_pid != child_tgid {
                return Some(Message::Other); // a new thread
            }
            Message::Event(ProcEvent::Fork {
                parent: field(1)?,
                child: child_tgid,
                at_ns,
            })
        }
        // exec: process_pid, process_tgid
        PROC_EVENT_EXEC => Message::Event(ProcEvent::Exec {
            pid: field(1)?,
            at_ns,
        }),
        // exit: process_pid, process_tgid, exit_code, exit_signal, parent_pid, parent_tgid
        PROC_EVENT_EXIT => {
            let (pid, tgid) = (field(0)?, field(1)?);
            if pid != tgid {
                return Some(Message::Other); // a thread
            }
            Message::Event(ProcEvent::Exit { pid, at_ns })
        }
        _ => Message::Other,
    })
}

/// A duration as the `Timespec` that `poll` and friends take: the one conversion.
pub fn timespec(d: Duration) -> rustix::time::Timespec {
    rustix::time::Timespec {
        tv_sec: d.as_secs() as i64,
        tv_nsec: i64::from(d.subsec_nanos()),
    }
}

/// `CLOCK_MONOTONIC` in nanoseconds: the clock of the connector's event timestamps.
pub fn monotonic_ns() -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

// ---------------------------------------------------------------------------------------
// Facts about one process, read at an event
// ---------------------------------------------------------------------------------------

/// What the guard reads about a process when it learns of it. `argv` and `markers` are read
/// only when asked (at an exec, or when a process is first seen by polling).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcFacts {
    pub id: ProcessId,
    pub ppid: i32,
    pub state: char,
    pub comm: Bytes,
    /// A kernel thread: nothing more is read, and it is never the job's.
    pub kernel_thread: bool,
    pub argv: Option<Argv>,
    pub markers: Option<Markers>,
    /// The pid namespace (`pid:[4026531836]`), read with the details.
    pub pid_ns: Option<String>,
    /// Details that could not be read, with the reason (`"environ: permission denied"`).
    pub unreadable: Vec<String>,
    /// Its stdout (fd 1) and stderr (fd 2) where they are pipes: (fd, pipe inode), read
    /// with the details (for the guard's pipe-holder alarm).
    pub stdio_pipes: Vec<(i32, u64)>,
}

impl ProcFacts {
    /// A zombie (or a process being torn down): dead, whatever is left to read.
    pub fn is_dead(&self) -> bool {
        crate::model::is_dead_state(self.state)
    }
}

/// Runs `f` with this thread's [`procfs::Reader`] for `proc_root`: the root stays open and
/// the buffer allocated from one event to the next (the guard reads at thousands of events
/// a second, each read relative to the open root instead of a path walked from `/`).
fn with_reader<T>(proc_root: &Path, f: impl FnOnce(&mut procfs::Reader) -> T) -> T {
    thread_local! {
        static READER: RefCell<Option<procfs::Reader>> = const { RefCell::new(None) };
    }
    READER.with(|cell| {
        let mut cell = cell.borrow_mut();
        let reader = match cell.as_mut() {
            Some(r) if r.root() == proc_root => r,
            _ => cell.insert(procfs::Reader::at(proc_root)),
        };
        f(reader)
    })
}

/// Reads `pid`'s stat (and with `details`, its cmdline, environ markers and pid namespace)
/// through one directory descriptor, so every field belongs to the same process. `None`
/// when the process is gone.
pub fn read_facts(proc_root: &Path, pid: i32, details: bool) -> Option<ProcFacts> {
    with_reader(proc_root, |r| {
        // The stat alone is one file: opened without a directory descriptor (this is every
        // job fork's read).
        if !details {
            return r.stat(pid).map(|stat| facts_of(pid, stat));
        }
        let dir = r.dir(pid).ok()?;
        let stat = parse_stat(r.read(&dir, "stat").ok()?).ok()?;
        let mut facts = facts_of(pid, stat);
        if facts.kernel_thread || facts.is_dead() {
            return Some(facts);
        }
        facts.stdio_pipes = stdio_pipes(&dir);
        match r.read(&dir, "cmdline") {
            Ok(buf) => facts.argv = Some(parse_cmdline(buf)),
            Err(Errno::SRCH) => return Some(facts),
            Err(e) => facts.unreadable.push(format!("cmdline: {}", errno_text(e))),
        }
        match r.read(&dir, "environ") {
            Ok(buf) => facts.markers = Some(scan_environ_markers(buf)),
            Err(Errno::SRCH) => return Some(facts),
            Err(e) => facts.unreadable.push(format!("environ: {}", errno_text(e))),
        }
        facts.pid_ns = pid_ns(&dir);
        Some(facts)
    })
}

/// The facts a `stat` line gives, nothing more read yet.
fn facts_of(pid: i32, stat: Stat) -> ProcFacts {
    ProcFacts {
        id: ProcessId {
            pid,
            start_ticks: stat.start_ticks,
        },
        ppid: stat.ppid,
        state: stat.state,
        kernel_thread: stat.is_kernel_thread(),
        comm: Bytes::from(stat.comm),
        argv: None,
        markers: None,
        pid_ns: None,
        unreadable: Vec::new(),
        stdio_pipes: Vec::new(),
    }
}

/// The pipes `dir`'s process has as stdout and stderr: (fd, inode).
fn stdio_pipes(dir: &OwnedFd) -> Vec<(i32, u64)> {
    [(1, "fd/1"), (2, "fd/2")]
        .into_iter()
        .filter_map(|(fd, path)| {
            let link = rustix::fs::readlinkat(dir, path, Vec::new()).ok()?;
            match super::inspect::parse_fd_link(link.as_bytes()) {
                (super::inspect::FdKind::Pipe, inode) => Some((fd, inode)),
                _ => None,
            }
        })
        .collect()
}

fn pid_ns(dir: &OwnedFd) -> Option<String> {
    rustix::fs::readlinkat(dir, "ns/pid", Vec::new())
        .ok()
        .map(|l| l.to_string_lossy().into_owned())
}

/// The details of `id` after an exec, without its stat: the identity is known from its
/// fork, and the kernel reported no exit since, so the pid still names that process (a pid
/// reused in between would take the pid space wrapping within milliseconds). `None` when
/// it is gone or a zombie (whose command line and environment read empty).
pub fn read_exec_facts(proc_root: &Path, id: ProcessId) -> Option<ProcFacts> {
    with_reader(proc_root, |r| {
        let dir = r.dir(id.pid).ok()?;
        let mut facts = ProcFacts {
            id,
            ppid: 0,
            state: 'R',
            comm: Bytes::default(),
            kernel_thread: false,
            argv: None,
            markers: None,
            pid_ns: None,
            unreadable: Vec::new(),
            stdio_pipes: stdio_pipes(&dir),
        };
        match r.read(&dir, "cmdline") {
            Ok([]) => return None,
            Ok(buf) => facts.argv = Some(parse_cmdline(buf)),
            Err(Errno::SRCH | Errno::NOENT) => return None,
            Err(e) => facts.unreadable.push(format!("cmdline: {}", errno_text(e))),
        }
        match r.read(&dir, "environ") {
            Ok(buf) => facts.markers = Some(scan_environ_markers(buf)),
            Err(Errno::SRCH) => return None,
            Err(e) => facts.unreadable.push(format!("environ: {}", errno_text(e))),
        }
        facts.pid_ns = pid_ns(&dir);
        Some(facts)
    })
}

/// The job markers in `pid`'s environment, and nothing else: one file, read when a
/// process that is not (yet) the job's execs, to see whether it carries the job's marker.
/// `None` when it is gone or unreadable.
pub fn read_markers(proc_root: &Path, pid: i32) -> Option<Markers> {
    with_reader(proc_root, |r| {
        r.read_one(pid, "environ").ok().map(scan_environ_markers)
    })
}

/// Every pid listed in `proc_root`, ascending.
pub use super::procfs::list_pids;

/// A pidfd on the process `id`, checked against its start time after opening (see
/// [`super::signal::open`]): it becomes readable when that process exits.
pub fn watch(proc_root: &Path, id: ProcessId) -> io::Result<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(id.pid)
        .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
    let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())?;
    match super::start_ticks(proc_root, id.pid) {
        Some(t) if t == id.start_ticks => Ok(fd),
        _ => Err(io::Error::from_raw_os_error(libc::ESRCH)),
    }
}

// ---------------------------------------------------------------------------------------
// Where the guard runs: containers and pid namespaces
// ---------------------------------------------------------------------------------------

/// Facts that make the guard's view partial.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    /// Our pid namespace is nested (`NSpid:` lists more than one pid): processes outside it
    /// are invisible and the proc connector does not answer.
    pub nested_pid_namespace: bool,
    /// Signs of a container (`/.dockerenv`, `/run/.containerenv`, the `container`
    /// variable, a container runtime's cgroup).
    pub container: Option<String>,
    /// Our pid namespace (`pid:[...]`).
    pub pid_ns: Option<String>,
}

/// `/proc/self/ns/pid` in the initial pid namespace (`PROC_PID_INIT_INO`).
pub const INITIAL_PID_NAMESPACE: &str = "pid:[4026531836]";

/// Reads where we run. `root` is the filesystem root (`/` outside tests).
pub fn placement(proc_root: &Path, root: &Path, env: &dyn Fn(&str) -> Option<String>) -> Placement {
    let status = std::fs::read(proc_root.join("self/status")).unwrap_or_default();
    let cgroup = std::fs::read(proc_root.join("self/cgroup")).unwrap_or_default();
    let pid_ns = std::fs::read_link(proc_root.join("self/ns/pid"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let container = if root.join(".dockerenv").exists() {
        Some("/.dockerenv exists".to_owned())
    } else if root.join("run/.containerenv").exists() {
        Some("/run/.containerenv exists".to_owned())
    } else if let Some(v) = env("container").filter(|v| !v.is_empty()) {
        Some(format!("container={v}"))
    } else {
        container_cgroup(&cgroup).map(|c| format!("cgroup {c}"))
    };
    // The initial pid namespace has a fixed inode (PROC_PID_INIT_INO); NSpid catches a
    // nested namespace whose /proc is the host's, the inode one with a /proc of its own.
    let nested = nspid_depth(&status) > 1
        || pid_ns
            .as_deref()
            .is_some_and(|ns| ns != INITIAL_PID_NAMESPACE);
    Placement {
        nested_pid_namespace: nested,
        container,
        pid_ns,
    }
}

/// The number of pids on the `NSpid:` line of `/proc/self/status` (1 in the initial pid
/// namespace; 0 when the line is missing, before Linux 4.1).
fn nspid_depth(status: &[u8]) -> usize {
    status
        .split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"NSpid:"))
        .map_or(0, |rest| {
            rest.split(|b| b.is_ascii_whitespace())
                .filter(|f| !f.is_empty())
                .count()
        })
}

/// A cgroup path that a container runtime made (`/docker/<id>`, `.../kubepods/...`).
fn container_cgroup(cgroup: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(cgroup);
    text.lines()
        .filter_map(|l| l.splitn(3, ':').nth(2))
        .find(|path| {
            [
                "/docker",
                "docker-",
                "/kubepods",
                "/libpod",
                "containerd",
                "/lxc/",
            ]
            .iter()
            .any(|k| path.contains(k))
        })
        .map(str::to_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A connector datagram as the kernel sends it: nlmsghdr, cn_msg, proc_event.
    fn datagram(what: u32, ack: u32, data: &[i32]) -> Vec<u8> {
        let mut ev = Vec::new();
        ev.extend_from_slice(&what.to_ne_bytes());
        ev.extend_from_slice(&1u32.to_ne_bytes()); // cpu
        ev.extend_from_slice(&123_456_789u64.to_ne_bytes());
        for d in data {
            ev.extend_from_slice(&d.to_ne_bytes());
        }
        while ev.len() < 40 {
            ev.push(0);
        }
        let len = NLMSG_HDRLEN + CN_MSG_LEN + ev.len();
        let mut b = Vec::new();
        b.extend_from_slice(&(len as u32).to_ne_bytes());
        b.extend_from_slice(&NLMSG_DONE.to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&7u32.to_ne_bytes());
        b.extend_from_slice(&0u32.to_ne_bytes());
        b.extend_from_slice(&CN_IDX_PROC.to_ne_bytes());
        b.extend_from_slice(&CN_VAL_PROC.to_ne_bytes());
        b.extend_from_slice(&7u32.to_ne_bytes());
        b.extend_from_slice(&ack.to_ne_bytes());
        b.extend_from_slice(&(ev.len() as u16).to_ne_bytes());
        b.extend_from_slice(&0u16.to_ne_bytes());
        b.extend_from_slice(&ev);
        b
    }

    #[test]
    fn parses_fork_exec_exit_and_skips_threads() {
        let fork = datagram(PROC_EVENT_FORK, 0, &[10, 10, 11, 11]);
        assert_eq!(
            parse_datagram(&fork),
            Some(Message::Event(ProcEvent::Fork {
                parent: 10,
                child: 11,
                at_ns: 123_456_789
            }))
        );
        // A thread of 10 (child_pid != child_tgid).
        let thread = datagram(PROC_EVENT_FORK, 0, &[10, 10, 12, 10]);
        assert_eq!(parse_datagram(&thread), Some(Message::Other));
        // A fork by a thread of 10 names the thread group as parent.
        let by_thread = datagram(PROC_EVENT_FORK, 0, &[12, 10, 13, 13]);
        assert!(matches!(
            parse_datagram(&by_thread),
            Some(Message::Event(ProcEvent::Fork {
                parent: 10,
                child: 13,
                ..
            }))
        ));
        let exec = datagram(PROC_EVENT_EXEC, 0, &[11, 11]);
        assert!(matches!(
            parse_datagram(&exec),
            Some(Message::Event(ProcEvent::Exec { pid: 11, .. }))
        ));
        let exit = datagram(PROC_EVENT_EXIT, 0, &[11, 11, 0, 17, 10, 10]);
        assert!(matches!(
            parse_datagram(&exit),
            Some(Message::Event(ProcEvent::Exit { pid: 11, .. }))
        ));
        let thread_exit = datagram(PROC_EVENT_EXIT, 0, &[12, 10, 0, 0, 10, 10]);
        assert_eq!(parse_datagram(&thread_exit), Some(Message::Other));
        // Other event types (UID = 4) are not ours.
        assert_eq!(
            parse_datagram(&datagram(4, 0, &[11, 11])),
            Some(Message::Other)
        );
    }

    #[test]
    fn the_two_streams_merge_by_time_each_in_its_own_order() {
        let fork = |child, at_ns| ProcEvent::Fork {
            parent: 1,
            child,
            at_ns,
        };
        let exec = |pid, at_ns| ProcEvent::Exec { pid, at_ns };
        let exit = |pid, at_ns| ProcEvent::Exit { pid, at_ns };
        // An exit queued before a fork of another CPU that has an earlier stamp keeps its
        // place in its own stream.
        let side = vec![fork(10, 5), exit(10, 30), exit(7, 20), fork(11, 40)];
        let main = vec![exec(10, 5), exec(11, 45)];
        let (mut out, mut held) = (Vec::new(), Vec::new());
        merge(&main, side.clone(), false, &mut out, &mut held);
        assert_eq!(
            out,
            vec![
                fork(10, 5),
                exec(10, 5),
                exit(10, 30),
                exit(7, 20),
                fork(11, 40),
                exec(11, 45)
            ]
        );
        assert!(held.is_empty());
        // The polled socket cut short: what comes after its last event waits.
        let (mut out, mut held) = (Vec::new(), Vec::new());
        merge(&main[..1], side, true, &mut out, &mut held);
        assert_eq!(out, vec![fork(10, 5), exec(10, 5)]);
        assert_eq!(held, vec![exit(10, 30), exit(7, 20), fork(11, 40)]);
    }

    #[test]
    fn parses_the_subscription_answer() {
        let ok = datagram(PROC_EVENT_NONE, 78, &[0]);
        assert_eq!(
            parse_datagram(&ok),
            Some(Message::Answer { ack: 78, errno: 0 })
        );
        let refused = datagram(PROC_EVENT_NONE, 78, &[1]);
        assert_eq!(
            parse_datagram(&refused),
            Some(Message::Answer { ack: 78, errno: 1 })
        );
    }

    #[test]
    fn malformed_datagrams_are_refused_not_misread() {
        let good = datagram(PROC_EVENT_FORK, 0, &[10, 10, 11, 11]);
        for cut in 0..EVENT_AT + EVENT_DATA + 16 {
            assert!(
                !matches!(parse_datagram(&good[..cut]), Some(Message::Event(_))),
                "cut at {cut}"
            );
        }
        let mut other = good.clone();
        other[NLMSG_HDRLEN] = 9; // another connector (idx 9)
        assert_eq!(parse_datagram(&other), Some(Message::Other));
        let mut not_done = good;
        not_done[4] = 2; // NLMSG_ERROR
        assert_eq!(parse_datagram(&not_done), None);
    }

    #[test]
    fn subscription_layout() {
        let plain = subscription(1, 42, None);
        assert_eq!(plain.len(), 40);
        assert_eq!(u32_at(&plain, 0), Some(40));
        assert_eq!(u16_at(&plain, 4), Some(NLMSG_DONE));
        assert_eq!(u32_at(&plain, NLMSG_HDRLEN), Some(CN_IDX_PROC));
        assert_eq!(u32_at(&plain, NLMSG_HDRLEN + 12), Some(42));
        assert_eq!(u16_at(&plain, NLMSG_HDRLEN + 16), Some(4));
        assert_eq!(u32_at(&plain, 36), Some(PROC_CN_MCAST_LISTEN));
        let filtered = subscription(
            2,
            42,
            Some(PROC_EVENT_FORK | PROC_EVENT_EXEC | PROC_EVENT_EXIT),
        );
        assert_eq!(filtered.len(), 44);
        assert_eq!(u16_at(&filtered, NLMSG_HDRLEN + 16), Some(8));
        assert_eq!(
            u32_at(&filtered, 40),
            Some(PROC_EVENT_FORK | PROC_EVENT_EXEC | PROC_EVENT_EXIT)
        );
    }

    #[test]
    fn placement_signs() {
        assert_eq!(nspid_depth(b"Name:\tx\nNSpid:\t4242\n"), 1);
        assert_eq!(nspid_depth(b"NSpid:\t4242\t7\n"), 2);
        assert_eq!(nspid_depth(b"Name:\tx\n"), 0);
        assert_eq!(
            container_cgroup(b"0::/system.slice/docker-abc.scope\n").as_deref(),
            Some("/system.slice/docker-abc.scope")
        );
        assert_eq!(container_cgroup(b"0::/user.slice/session-1.scope\n"), None);
        assert_eq!(
            container_cgroup(b"12:pids:/kubepods/burstable/pod1\n0::/\n").as_deref(),
            Some("/kubepods/burstable/pod1")
        );
    }

    #[test]
    fn reads_our_own_facts() {
        let me = std::process::id() as i32;
        let f = read_facts(Path::new("/proc"), me, true).unwrap();
        assert_eq!(f.id.pid, me);
        assert!(f.argv.is_some_and(|a| !a.is_empty()));
        assert!(f.markers.is_some());
        assert!(f.pid_ns.is_some());
        assert!(read_facts(Path::new("/proc"), i32::MAX, true).is_none());
    }
}
