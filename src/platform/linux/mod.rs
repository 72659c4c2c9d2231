//! The Linux platform reader: `/proc` into [`Snapshot`]s.
//!
//! Each process is read through a directory descriptor on `/proc/PID`, opened once. Files
//! opened relative to it belong to that process even if its pid is reused meanwhile (the
//! kernel then answers ESRCH), so one process's fields never mix with another's.
//!
//! The `/proc` root is a parameter, so the whole reader runs on fixture trees in tests.

pub mod child;
pub mod conns;
pub mod inspect;
pub mod ne_bytes;
pub mod net;
pub mod netlink;
pub mod parse;
pub mod proc_events;
pub mod procfs;
pub mod signal;
pub mod sigqueue;
pub mod sock_diag;

pub use child::{become_subreaper, spawn, ChildError, ChildExit, Waited};
pub use signal::{open, raise_fd_limit, wait_exits, GroupSignal, Handle, Sig, SignalResult};
pub use sigqueue::{Caught, SignalQueue};

use std::collections::{HashMap, HashSet};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::time::Instant;

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use crate::model::{
    Argv, Listener, Machine, Process, ProcessId, Protocol, Sharing, Snapshot, Unreadable,
    SCHEMA_VERSION,
};

use parse::{parse_cgroup, parse_cmdline, parse_stat, parse_status_uid, scan_environ_markers};
use procfs::{errno_text, is_gone};

/// Where to read from and what to read.
#[derive(Debug, Clone)]
pub struct ReadOptions {
    /// The procfs root, `/proc` outside tests.
    pub proc_root: PathBuf,
    /// Read listening sockets and tie them to processes.
    pub sockets: bool,
    /// Read host facts (OS, kernel, hostname, memory) for the report header. Off for the
    /// repeated re-reads of a sweep, which only need processes.
    pub host_facts: bool,
    /// Which processes get their details read.
    pub detail: Detail,
    /// Processes left out of the reading once they are dead: a sweep's targets of earlier
    /// rounds, whose zombies its re-reads would otherwise hold by the thousand (each a
    /// whole `Process`) for nothing.
    pub forget_dead: Option<std::sync::Arc<HashSet<ProcessId>>>,
}

/// How much to read per process. Identity, parentage, group, session, state, name, owner
/// and the sockets it holds are always read (one `stat` read, one `fstat`, the fd walk).
/// The details — argv, job markers from the environment, exe, cwd, cgroup, real uid — cost
/// five more files per process and matter only for processes that may be classified, that
/// is those that appeared since the baseline.
#[derive(Debug, Clone, Default)]
pub enum Detail {
    /// Details for every process.
    #[default]
    All,
    /// Details for no process: a baseline, which is only ever used to exclude.
    None,
    /// Details for every process except these (the baseline's).
    Except(std::sync::Arc<std::collections::HashSet<ProcessId>>),
}

impl Detail {
    fn wants(&self, id: &ProcessId) -> bool {
        match self {
            Detail::All => true,
            Detail::None => false,
            Detail::Except(known) => !known.contains(id),
        }
    }

    /// Details for what is new since `baseline`: everything but the processes that
    /// started before it (one born while it was read is new, though listed).
    pub fn new_since(baseline: &Snapshot) -> Detail {
        Detail::Except(std::sync::Arc::new(
            baseline
                .processes
                .iter()
                .filter(|p| p.id.start_ticks < baseline.taken_at_boot_ticks)
                .map(|p| p.id)
                .collect(),
        ))
    }
}

impl Default for ReadOptions {
    fn default() -> Self {
        ReadOptions {
            proc_root: PathBuf::from("/proc"),
            sockets: true,
            host_facts: true,
            detail: Detail::All,
            forget_dead: None,
        }
    }
}

/// Why the snapshot as a whole could not be taken.
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("read {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "find the boot id: neither {0}/sys/kernel/random/boot_id nor btime in {0}/stat is \
         readable (is procfs mounted?)"
    )]
    NoBootId(PathBuf),
    #[error(
        "use {0}: it shows this process as pid {1}, but the kernel calls it pid {2}, so it \
         belongs to another pid namespace and its pids would name other processes; mount a \
         procfs of this namespace (`unshare --pid --fork --mount-proc`, or `mount -t proc \
         proc /proc` in the container) before sweeping"
    )]
    ForeignProc(PathBuf, i32, i32),
}

/// Refuses a `/proc` of another pid namespace than ours (`unshare --pid --fork` without
/// `--mount-proc`): there the pids read name other processes than the pids a signal takes,
/// and a pidfd opened by number would not be the process read.
pub fn check_proc_is_ours(proc_root: &Path) -> Result<(), ReadError> {
    let seen = std::fs::read_link(proc_root.join("self"))
        .ok()
        .and_then(|t| t.to_str().and_then(|s| s.parse::<i32>().ok()));
    let real = rustix::process::getpid().as_raw_nonzero().get();
    match seen {
        Some(pid) if pid != real => Err(ReadError::ForeignProc(proc_root.to_owned(), pid, real)),
        // Unreadable: the reads that follow fail on their own.
        _ => Ok(()),
    }
}

/// Takes a snapshot of every process and (with `opts.sockets`) every listening socket.
pub fn read_snapshot(opts: &ReadOptions) -> Result<Snapshot, ReadError> {
    read(opts, false).map(|(snap, _)| snap)
}

/// Pidfds pinned to processes of a snapshot, by identity (see [`read_snapshot_pinned`]).
pub type Pins = HashMap<ProcessId, Handle>;

/// [`read_snapshot`] for a sweep. Sockets are tied to the processes read in detail only
/// (a sweep acts on those and reports no other's descriptors: the baseline's are not
/// walked), and each of them (kernel threads and zombies aside) gets a pidfd pinned to it
/// while it was read: the pidfd is opened after `/proc/PID` and `stat` and before the next
/// file, whose successful read through the same
/// directory proves that process still held the pid when the pidfd was opened, so the pidfd
/// is that process's. A signal through it needs no second identity check. A process whose
/// pidfd could not be opened or proved (it exited, no descriptor left) has none: the kill
/// opens and checks one itself. The reading does not wait for the start of a clock tick
/// (see [`read_snapshot`]): a sweep's reading is no baseline.
pub fn read_snapshot_pinned(opts: &ReadOptions) -> Result<(Snapshot, Pins), ReadError> {
    raise_fd_limit();
    read(opts, true)
}

fn read(opts: &ReadOptions, pin: bool) -> Result<(Snapshot, Pins), ReadError> {
    let started = Instant::now();
    let taken_at_unix_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let root = opts.proc_root.as_path();
    let machine = read_machine(root, opts.host_facts)?;
    // A baseline's reading starts on a tick (see `begin_on_a_tick`); a sweep's is never
    // the baseline of anything, and would wait up to a tick (10 ms) for nothing.
    let taken_at_boot_ticks = if pin {
        boot_ticks_now(machine.clock_ticks_per_second)
    } else {
        begin_on_a_tick(machine.clock_ticks_per_second)
    };
    let mut unreadable = Vec::new();

    let mut listeners = if opts.sockets {
        read_listeners(root, &mut unreadable)
    } else {
        Vec::new()
    };
    let by_inode: HashMap<u64, usize> = listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (l.inode, i))
        .collect();

    let pids = procfs::list_pids(root).map_err(|source| ReadError::Io {
        path: root.to_owned(),
        source,
    })?;

    let mut processes = Vec::with_capacity(pids.len());
    let mut pins = Pins::new();
    read_processes(
        root,
        &pids,
        &by_inode,
        &opts.detail,
        opts.forget_dead.as_deref(),
        pin,
        |pid, read| match read {
            Ok(ReadProcess {
                process,
                sockets,
                pidfd,
            }) => {
                for idx in sockets {
                    listeners[idx].owners.push(process.id);
                }
                if let Some(fd) = pidfd {
                    pins.insert(process.id, Handle::pinned(process.id, fd));
                }
                processes.push(process);
            }
            Err(ProcessGone { unread }) => unreadable.push(Unreadable {
                what: format!("process {pid}"),
                reason: match unread {
                    None => EXITED_WHILE_READ.into(),
                    Some(e) => format!("could not be read: {e}"),
                },
            }),
        },
    );
    for l in &mut listeners {
        l.owners.sort_unstable();
        l.owners.dedup();
    }
    let me = std::process::id() as i32;
    let taken_by = processes.iter().find(|p| p.id.pid == me).map(|p| p.id);

    let snap = Snapshot {
        schema_version: SCHEMA_VERSION,
        tool_version: env!("CARGO_PKG_VERSION").to_owned(),
        taken_at_unix_ms,
        taken_at_boot_ticks,
        duration_us: started.elapsed().as_micros() as u64,
        machine,
        processes,
        listeners,
        unreadable,
        taken_by,
        job: None,
        trust_notes: Vec::new(),
    };
    Ok((snap, pins))
}

/// Fewer processes than this are read by one thread: a second one costs more to start than
/// it saves.
const PARALLEL_FROM: usize = 256;
/// At most this many reading threads: procfs scales with cores, the gain flattens out.
const MAX_READERS: usize = 4;

/// One process as read: the indices (into the listener list) of the listening sockets it
/// holds, and the pidfd pinned to it when one was asked for.
struct ReadProcess {
    process: Process,
    sockets: Vec<usize>,
    pidfd: Option<OwnedFd>,
}

type ProcessRead = Result<ReadProcess, ProcessGone>;

/// Reads every process in `pids` (ascending) and hands each pid with what was read to
/// `each`, in the same order, leaving out the dead among `forget`. With many processes and
/// more than one core, several threads share the work, pid by pid in turn (new processes,
/// the dear ones to read, have the high pids): nearly all of a snapshot's time is the
/// kernel formatting `/proc` files, which runs in parallel for different processes. Each
/// thread has its own buffers and `/proc` descriptor; a thread that cannot be started
/// leaves its share to the calling thread. The shares, each in pid order, are merged by
/// pid, so nothing is sorted or copied twice.
fn read_processes(
    root: &Path,
    pids: &[i32],
    sockets: &HashMap<u64, usize>,
    detail: &Detail,
    forget: Option<&HashSet<ProcessId>>,
    pin: bool,
    mut each: impl FnMut(i32, ProcessRead),
) {
    let readers = if pids.len() >= PARALLEL_FROM {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(MAX_READERS))
    } else {
        1
    };
    let forgotten = |read: &ProcessRead| {
        forget.is_some_and(|f| {
            read.as_ref()
                .is_ok_and(|r| r.process.is_zombie() && f.contains(&r.process.id))
        })
    };
    if readers == 1 {
        let mut reader = ProcReader::at(root);
        reader.pin = pin;
        for &pid in pids {
            let read = reader.read_entry(root, pid, sockets, detail);
            if !forgotten(&read) {
                each(pid, read);
            }
        }
        return;
    }
    let share = |k: usize| -> Vec<(i32, ProcessRead)> {
        let mut reader = ProcReader::at(root);
        reader.pin = pin;
        let mut out = Vec::with_capacity(pids.len() / readers + 1);
        for &pid in pids.iter().skip(k).step_by(readers) {
            let read = reader.read_entry(root, pid, sockets, detail);
            if !forgotten(&read) {
                out.push((pid, read));
            }
        }
        out
    };
    let shares: Vec<Vec<(i32, ProcessRead)>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (1..readers)
            .map(|k| {
                std::thread::Builder::new()
                    .name(format!("proc-reader-{k}"))
                    .spawn_scoped(scope, move || share(k))
                    .map_err(|_| k)
            })
            .collect();
        let mut shares = vec![share(0)];
        for handle in handles {
            shares.push(match handle {
                Ok(h) => match h.join() {
                    Ok(part) => part,
                    Err(panic) => std::panic::resume_unwind(panic),
                },
                Err(k) => share(k),
            });
        }
        shares
    });
    // Each share is taken from its end (reversed first) and shrunk as it goes: the shares
    // are released while the caller's table grows, instead of sitting beside all of it
    // (5,000 processes: 1.2 MB of shares).
    let mut shares: Vec<_> = shares
        .into_iter()
        .map(|mut s| {
            s.reverse();
            s
        })
        .collect();
    let mut taken = 0usize;
    // At most four shares: the smallest head is found by looking at each.
    loop {
        let next = shares
            .iter()
            .enumerate()
            .filter_map(|(k, s)| Some((s.last()?.0, k)))
            .min();
        let Some((_, k)) = next else { break };
        if let Some((pid, read)) = shares[k].pop() {
            each(pid, read);
        }
        taken += 1;
        if taken % 512 == 0 {
            shares.iter_mut().for_each(Vec::shrink_to_fit);
        }
    }
}

/// The listening sockets alone, without their owners (no walk over `/proc/*/fd`): enough
/// to tell whether a port is free.
pub fn read_listeners_only(proc_root: &Path) -> (Vec<Listener>, Vec<Unreadable>) {
    let mut unreadable = Vec::new();
    let listeners = read_listeners(proc_root, &mut unreadable);
    (listeners, unreadable)
}

/// Reads just one process by pid, for the re-checks before a signal and for finding our own
/// identity. `None` when it is gone (or is not a readable process).
pub fn read_one(proc_root: &Path, pid: i32) -> Option<Process> {
    ProcReader::by_path(proc_root)
        .read_process(proc_root, pid, &HashMap::new(), &Detail::All)
        .ok()
        .map(|(p, _)| p)
}

/// The start time (clock ticks since boot) of `pid` now, or `None` when it is gone.
///
/// The identity check after a `pidfd_open` the reader did not pin (see
/// [`read_snapshot_pinned`]): three system calls, open, one read (a `stat` line is far
/// shorter than the buffer), close; no size query, no second read for end of file.
pub fn start_ticks(proc_root: &Path, pid: i32) -> Option<u64> {
    procfs::Reader::by_path(proc_root)
        .stat(pid)
        .map(|s| s.start_ticks)
}

/// Our own identity.
pub fn self_id(proc_root: &Path) -> Option<ProcessId> {
    let pid = std::process::id() as i32;
    start_ticks(proc_root, pid).map(|start_ticks| ProcessId { pid, start_ticks })
}

/// Reads the boot id that, with `(pid, start time)`, makes a process identity.
pub fn boot_id(proc_root: &Path) -> Result<String, ReadError> {
    if let Ok(id) = std::fs::read_to_string(proc_root.join("sys/kernel/random/boot_id")) {
        let id = id.trim();
        if !id.is_empty() {
            return Ok(id.to_owned());
        }
    }
    // No boot_id (an unusual procfs): the boot time in seconds also changes at every boot.
    std::fs::read(proc_root.join("stat"))
        .ok()
        .and_then(|b| parse::parse_btime(&b))
        .map(|t| format!("btime:{t}"))
        .ok_or_else(|| ReadError::NoBootId(proc_root.to_owned()))
}

fn read_machine(root: &Path, host_facts: bool) -> Result<Machine, ReadError> {
    let boot_id = boot_id(root)?;
    let uid = rustix::process::geteuid().as_raw();
    let boot_time_unix = std::fs::read(root.join("stat"))
        .ok()
        .and_then(|b| parse::parse_btime(&b));
    let pid_namespace = std::fs::read_link(root.join("self/ns/pid"))
        .ok()
        .map(|p| p.to_string_lossy().into_owned());
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get() as u32);
    let mut machine = Machine {
        boot_id,
        clock_ticks_per_second: clock_ticks_per_second(),
        boot_time_unix,
        pid_namespace,
        uid,
        is_root: uid == 0,
        os: None,
        kernel: None,
        hostname: None,
        cpus,
        memory_bytes: None,
    };
    if host_facts {
        // Four facts for the report's header, read where the kernel and the distribution
        // keep them (a crate for this was one call site and a second /proc reader).
        let line = |path: &Path| {
            std::fs::read_to_string(path)
                .ok()
                .map(|t| t.trim().to_owned())
                .filter(|t| !t.is_empty())
        };
        machine.kernel = line(&root.join("sys/kernel/osrelease"));
        machine.hostname = line(&root.join("sys/kernel/hostname"));
        machine.os = std::fs::read(Path::new("/etc/os-release"))
            .ok()
            .and_then(|b| parse::parse_os_release(&b));
        machine.memory_bytes = std::fs::read(root.join("meminfo"))
            .ok()
            .and_then(|b| parse::parse_mem_total(&b));
    }
    Ok(machine)
}

/// Waits for the start of the next clock tick and returns it. A start time is counted in
/// ticks (10 ms), so the tick in which a reading begins holds processes from just before
/// it and from during it, which a start time cannot tell apart. A reading begun at the
/// start of a tick leaves that doubt to the few microseconds between the tick and the
/// reading: every process of that tick counts as born during the reading, none before.
fn begin_on_a_tick(ticks_per_second: u64) -> u64 {
    let tick_ns = 1_000_000_000 / u128::from(ticks_per_second.max(1));
    for _ in 0..3 {
        let now = boot_ns_now();
        let into = now % tick_ns;
        if into < 200_000 {
            break;
        }
        let wait = (tick_ns - into) as u64;
        std::thread::sleep(std::time::Duration::from_nanos(wait + 20_000));
    }
    boot_ticks_now(ticks_per_second)
}

fn boot_ns_now() -> u128 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128
}

/// `CLOCK_BOOTTIME` now, in clock ticks: the clock behind field 22 of `/proc/PID/stat`.
/// Rounded down, like the kernel's own conversion of a start time.
pub fn boot_ticks_now(ticks_per_second: u64) -> u64 {
    let ts = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    let nanos = ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128;
    (nanos * ticks_per_second as u128 / 1_000_000_000) as u64
}

pub fn clock_ticks_per_second() -> u64 {
    // sysconf(_SC_CLK_TCK) is 100 on every Linux ABI in use; ask anyway.
    rustix::param::clock_ticks_per_second()
}

fn read_listeners(root: &Path, unreadable: &mut Vec<Unreadable>) -> Vec<Listener> {
    if root == Path::new("/proc") {
        match sock_diag::read_listeners() {
            Ok(listeners) => return listeners,
            Err(e) => tracing::debug!("sock_diag: {e}; reading /proc/net instead"),
        }
    }
    let mut out = Vec::new();
    let files: [(&str, Protocol, Option<u8>); 5] = [
        ("net/tcp", Protocol::Tcp, Some(4)),
        ("net/tcp6", Protocol::Tcp, Some(6)),
        ("net/udp", Protocol::Udp, Some(4)),
        ("net/udp6", Protocol::Udp, Some(6)),
        ("net/unix", Protocol::Unix, None),
    ];
    for (file, protocol, ip_version) in files {
        let path = root.join(file);
        match std::fs::read(&path) {
            Ok(buf) => match ip_version {
                Some(v) => out.extend(net::parse_inet(&buf, protocol, v)),
                None => out.extend(net::parse_unix(&buf)),
            },
            // No IPv6 in this kernel: nothing listens there.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => unreadable.push(Unreadable {
                what: path.display().to_string(),
                reason: e.to_string(),
            }),
        }
    }
    out
}

impl ReadProcess {
    /// A process with nothing more read: a kernel thread or a zombie.
    fn bare(process: Process) -> ReadProcess {
        ReadProcess {
            process,
            sockets: Vec::new(),
            pidfd: None,
        }
    }
}

/// The process exited (or its pid was reused) while we read it (`unread: None`), or its
/// `/proc` entry could not be opened or its `stat` read for another reason (descriptors
/// run out, say): then the reading is incomplete, not the process gone.
#[derive(Debug)]
struct ProcessGone {
    unread: Option<Errno>,
}

const GONE: ProcessGone = ProcessGone { unread: None };

/// What the reading says of a process it met but could not read (see [`reading_complete`]).
const EXITED_WHILE_READ: &str = "exited while being read";

/// The directory of a live thread of `pid` other than its leader (`task/TID`, opened
/// relative to the process's own directory, so it is that process's thread).
fn live_thread(dir: &OwnedFd, pid: i32) -> Option<OwnedFd> {
    let flags =
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY | rustix::fs::OFlags::CLOEXEC;
    let task = rustix::fs::openat(dir, "task", flags, rustix::fs::Mode::empty()).ok()?;
    let mut entries = rustix::fs::Dir::read_from(&task).ok()?;
    let me = pid.to_string();
    while let Some(Ok(entry)) = entries.read() {
        let name = entry.file_name().to_bytes();
        if name.is_empty() || !name.iter().all(u8::is_ascii_digit) || name == me.as_bytes() {
            continue;
        }
        let name = std::str::from_utf8(name).ok()?;
        if let Ok(fd) = rustix::fs::openat(&task, name, flags, rustix::fs::Mode::empty()) {
            return Some(fd);
        }
    }
    None
}

/// Whether every process `/proc` listed was read or had exited: no process was skipped
/// for another reason (an error other than "gone"), so no live process is missing from
/// `snap`. A proof that covers "every process of X" needs it.
pub fn reading_complete(snap: &Snapshot) -> bool {
    !snap
        .unreadable
        .iter()
        .any(|u| u.what.starts_with("process ") && u.reason != EXITED_WHILE_READ)
}

/// An error opening a process's directory or reading its `stat`: gone, or unread.
fn gone_or_unread(e: Errno) -> ProcessGone {
    if e == Errno::NOENT || is_gone(e) {
        GONE
    } else {
        ProcessGone { unread: Some(e) }
    }
}

/// Reusable buffers for reading many processes.
#[derive(Default)]
struct ProcReader {
    /// The procfs root (opened once for a whole snapshot) and the file buffer.
    files: procfs::Reader,
    link: Vec<u8>,
    /// Open a pidfd for each process whose details are read (see [`read_snapshot_pinned`]).
    pin: bool,
    /// Our own pid, whose descriptors are not walked.
    me: i32,
    /// One copy of each name, `exe`, `cwd` and set of markers many processes share.
    share: Sharing,
}

impl ProcReader {
    /// A reader for the procfs at `root`, which it opens once (or reads by path if it
    /// cannot).
    fn at(root: &Path) -> ProcReader {
        ProcReader {
            files: procfs::Reader::at(root),
            me: std::process::id() as i32,
            ..ProcReader::default()
        }
    }

    /// A reader that walks paths from `root` (one process, read once).
    fn by_path(root: &Path) -> ProcReader {
        ProcReader {
            files: procfs::Reader::by_path(root),
            me: std::process::id() as i32,
            ..ProcReader::default()
        }
    }

    /// Reads a whole file under a process directory (see [`procfs`] for the end-of-file
    /// rule).
    fn read_file(&mut self, dir: &OwnedFd, name: &str) -> Result<&[u8], Errno> {
        self.files.read(dir, name)
    }

    /// Reads one process; returns it and the indices (into the listener list) of the
    /// listening sockets it holds.
    fn read_process(
        &mut self,
        root: &Path,
        pid: i32,
        sockets: &HashMap<u64, usize>,
        detail: &Detail,
    ) -> Result<(Process, Vec<usize>), ProcessGone> {
        self.read_entry(root, pid, sockets, detail)
            .map(|r| (r.process, r.sockets))
    }

    /// [`ProcReader::read_process`], with the pidfd pinned to the process when `pin` is set
    /// and its details are read.
    fn read_entry(
        &mut self,
        _root: &Path,
        pid: i32,
        sockets: &HashMap<u64, usize>,
        detail: &Detail,
    ) -> Result<ReadProcess, ProcessGone> {
        // Relative to the procfs root when it is open: no walk from `/` for each process.
        let dir = self.files.dir(pid).map_err(gone_or_unread)?;
        let stat = match self.read_file(&dir, "stat") {
            Ok(buf) => parse_stat(buf).map_err(|_| gone_or_unread(Errno::INVAL))?,
            Err(e) => return Err(gone_or_unread(e)),
        };
        let mut p = Process {
            id: ProcessId {
                pid,
                start_ticks: stat.start_ticks,
            },
            ppid: stat.ppid,
            pgid: stat.pgid,
            sid: stat.sid,
            uid: None,
            state: stat.state,
            comm: self.share.bytes(&stat.comm),
            exe: None,
            argv: Argv::default(),
            cwd: None,
            cgroup: None,
            threads: stat.threads,
            kernel_thread: stat.is_kernel_thread(),
            details: false,
            markers: Default::default(),
            unreadable: Vec::new(),
        };
        if p.kernel_thread || p.is_zombie() {
            // A zombie has exited: no memory, files, cwd or environment left, and it is
            // never classified. Reading more of it is what made re-scans after a kill slow
            // (hundreds of unreaped orphans, three files each).
            return Ok(ReadProcess::bare(p));
        }
        if !detail.wants(&p.id) {
            // The owner of /proc/PID: the effective uid (root for a non-dumpable process).
            p.uid = rustix::fs::fstat(&dir).ok().map(|st| st.st_uid);
            // A sweep's reading ties sockets to the processes it may act on only: the rest
            // are the baseline's, whose descriptors it never reports.
            let held = if self.pin {
                Vec::new()
            } else {
                self.held(&dir, sockets, &mut p)?
            };
            return Ok(ReadProcess {
                process: p,
                sockets: held,
                pidfd: None,
            });
        }
        p.details = true;
        // Opened before `status` is read through the directory: that read succeeding
        // proves the directory's process still held the pid at the open, so the pidfd is
        // its own (a pid is not reused while its process, or its zombie, holds it).
        let mut pidfd = if self.pin {
            rustix::process::Pid::from_raw(pid).and_then(|raw| {
                rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty()).ok()
            })
        } else {
            None
        };
        match self.read_file(&dir, "status") {
            Ok(buf) => p.uid = parse_status_uid(buf),
            Err(e) if is_gone(e) => return Err(GONE),
            Err(e) => {
                pidfd = None;
                p.unreadable.push(format!("status: {}", errno_text(e)));
            }
        }
        match self.read_file(&dir, "cgroup") {
            Ok(buf) => p.cgroup = parse_cgroup(buf),
            Err(e) if is_gone(e) => return Err(GONE),
            Err(e) => p.unreadable.push(format!("cgroup: {}", errno_text(e))),
        }
        // Its main thread exited while others run (`Z`, with more than one thread): its
        // memory, files and cwd are read through one of those, the leader's own directory
        // shows none of them. (`status` above, through its own, is the pidfd's proof.)
        let dir = if crate::model::is_dead_state(p.state) {
            live_thread(&dir, pid).unwrap_or(dir)
        } else {
            dir
        };
        match self.read_file(&dir, "cmdline") {
            Ok(buf) => p.argv = parse_cmdline(buf),
            Err(e) if is_gone(e) => return Err(GONE),
            Err(e) => p.unreadable.push(format!("cmdline: {}", errno_text(e))),
        }
        match self.read_file(&dir, "environ") {
            Ok(buf) => {
                let found = scan_environ_markers(buf);
                p.markers = self.share.markers(found);
            }
            Err(e) if is_gone(e) => return Err(GONE),
            Err(e) => p.unreadable.push(format!("environ: {}", errno_text(e))),
        }
        for name in ["exe", "cwd"] {
            match rustix::fs::readlinkat(&dir, name, std::mem::take(&mut self.link)) {
                // Copied out exactly, or shared: readlinkat reserves 256 bytes, and a sweep
                // keeps thousands of these; its buffer is reused.
                Ok(target) => {
                    let target = target.into_bytes();
                    let value = Some(self.share.bytes(&target));
                    if name == "exe" {
                        p.exe = value;
                    } else {
                        p.cwd = value;
                    }
                    self.link = target;
                }
                Err(e) if is_gone(e) => return Err(GONE),
                Err(e) => p.unreadable.push(format!("{name}: {}", errno_text(e))),
            }
        }
        let held = self.held(&dir, sockets, &mut p)?;
        // If the process died after we opened its directory, reads above answer ESRCH, which
        // we already turned into ProcessGone; a zombie by now is still this process.
        Ok(ReadProcess {
            process: p,
            sockets: held,
            pidfd,
        })
    }

    /// The listening sockets among the process's descriptors (none asked: none read).
    fn held(
        &mut self,
        dir: &OwnedFd,
        sockets: &HashMap<u64, usize>,
        p: &mut Process,
    ) -> Result<Vec<usize>, ProcessGone> {
        // Our own descriptors are no listening sockets, and a sweep holds a pidfd on every
        // process it is about to kill: thousands of descriptors to walk for nothing.
        if sockets.is_empty() || p.id.pid == self.me {
            return Ok(Vec::new());
        }
        match held_sockets(dir, sockets) {
            Ok(held) => Ok(held),
            Err(e) if is_gone(e) => Err(GONE),
            Err(e) => {
                p.unreadable.push(format!("fd: {}", errno_text(e)));
                Ok(Vec::new())
            }
        }
    }
}

/// The listening sockets (indices into the listener list) among a process's descriptors.
///
/// The entries are read with `RawDir` on the `fd` directory's own descriptor: `Dir`
/// would first duplicate it (`fcntl` + `openat(".")` + one more `close`), three system
/// calls per process for nothing.
fn held_sockets(dir: &OwnedFd, sockets: &HashMap<u64, usize>) -> Result<Vec<usize>, Errno> {
    let fd_dir = rustix::fs::openat(
        dir,
        "fd",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )?;
    let mut held = Vec::new();
    let mut link = Vec::with_capacity(64);
    let mut space = [std::mem::MaybeUninit::<u8>::uninit(); 4096];
    let mut entries = rustix::fs::RawDir::new(fd_dir.as_fd(), &mut space);
    while let Some(entry) = entries.next() {
        let entry = entry?;
        let name = entry.file_name();
        if name.to_bytes().first() == Some(&b'.') {
            continue;
        }
        let target = match rustix::fs::readlinkat(&fd_dir, name, std::mem::take(&mut link)) {
            Ok(t) => t,
            // The descriptor was closed between listing and reading: normal.
            Err(Errno::NOENT) => continue,
            Err(e) => return Err(e),
        };
        if let Some(idx) = parse::socket_inode(target.as_bytes()).and_then(|i| sockets.get(&i)) {
            held.push(*idx);
        }
        link = target.into_bytes();
    }
    Ok(held)
}

#[cfg(test)]
mod tests;
