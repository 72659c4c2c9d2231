//! The whole reader on a fake `/proc` tree: kernel threads, zombies, odd names, truncated
//! and unreadable files, sockets tied to their owners.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::Path;

use super::*;
use crate::model::{Bytes, SocketKind};

fn stat_line(pid: i32, comm: &[u8], state: char, ppid: i32, flags: u64, start: u64) -> Vec<u8> {
    let mut v = format!("{pid} (").into_bytes();
    v.extend_from_slice(comm);
    v.extend_from_slice(
        format!(
            ") {state} {ppid} {pid} {pid} 0 -1 {flags} 0 0 0 0 0 0 0 0 20 0 2 0 {start} 100 10 0 0\n"
        )
        .as_bytes(),
    );
    v
}

fn process(
    root: &Path,
    pid: i32,
    stat: &[u8],
    cmdline: &[u8],
    environ: &[u8],
) -> std::path::PathBuf {
    let dir = root.join(pid.to_string());
    fs::create_dir_all(dir.join("fd")).unwrap();
    fs::write(dir.join("stat"), stat).unwrap();
    fs::write(
        dir.join("status"),
        b"Name:\tx\nUid:\t1000\t1000\t1000\t1000\n",
    )
    .unwrap();
    fs::write(dir.join("cmdline"), cmdline).unwrap();
    fs::write(dir.join("environ"), environ).unwrap();
    fs::write(dir.join("cgroup"), b"0::/job.scope\n").unwrap();
    symlink("/usr/bin/python3.11", dir.join("exe")).unwrap();
    symlink("/work/repo", dir.join("cwd")).unwrap();
    dir
}

fn fake_proc() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    fs::create_dir_all(root.join("sys/kernel/random")).unwrap();
    fs::write(
        root.join("sys/kernel/random/boot_id"),
        "b7e1c0de-0000-4000-8000-000000000001\n",
    )
    .unwrap();
    fs::write(root.join("stat"), "cpu 1 2 3\nbtime 1763700000\n").unwrap();
    fs::create_dir_all(root.join("net")).unwrap();
    fs::write(
        root.join("net/tcp"),
        "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n\
         \x20  0: 0100007F:1F40 00000000:0000 0A 00000000:00000000 00:00000000 00000000  1000        0 5001 1 0 100 0 0 10 0\n",
    )
    .unwrap();
    fs::write(
        root.join("net/unix"),
        "Num       RefCount Protocol Flags    Type St Inode Path\n\
         0000000000000000: 00000002 00000000 00010000 0001 01 5002 /tmp/mcp server.sock\n",
    )
    .unwrap();
    // No net/tcp6, udp, udp6: a kernel without IPv6 is normal, not an error.

    // 1: init.
    process(
        root,
        1,
        &stat_line(1, b"init", 'S', 0, 0, 1),
        b"/sbin/init\0",
        b"",
    );
    // 2: a kernel thread (PF_KTHREAD), no cmdline.
    process(
        root,
        2,
        &stat_line(2, b"kthreadd", 'S', 0, 0x0020_0040, 1),
        b"",
        b"",
    );
    // 10: uvicorn holding the TCP listener twice (dup'd fd) and the unix socket.
    let d = process(
        root,
        10,
        &stat_line(10, b"python3", 'S', 1, 0, 500),
        b"python3\0-m\0uvicorn\0app:main\0--port\08000\0",
        b"HOME=/root\0GITHUB_TOKEN=ghs_x\0RUNNER_TRACKING_ID=github_42\0PYTEST_CURRENT_TEST=t.py::test_a (call)\0",
    );
    symlink("socket:[5001]", d.join("fd/3")).unwrap();
    symlink("socket:[5001]", d.join("fd/4")).unwrap();
    symlink("socket:[5002]", d.join("fd/5")).unwrap();
    symlink("pipe:[9]", d.join("fd/6")).unwrap();
    symlink("/dev/null", d.join("fd/0")).unwrap();
    // 11: a child that inherited the listener.
    let d = process(
        root,
        11,
        &stat_line(11, b"python3", 'S', 10, 0, 510),
        b"python3\0worker\0",
        b"",
    );
    symlink("socket:[5001]", d.join("fd/3")).unwrap();
    // 12: a zombie (its leader is the one thread left).
    let zombie = String::from_utf8(stat_line(12, b"sh", 'Z', 10, 0, 520))
        .unwrap()
        .replace(" 20 0 2 0 ", " 20 0 1 0 ");
    process(root, 12, zombie.as_bytes(), b"", b"");
    // 16: a process whose main thread exited while another runs: `Z` with 2 threads; its
    // leader's directory shows no memory, its live thread's (task/17) does.
    let d = process(root, 16, &stat_line(16, b"srv", 'Z', 1, 0, 560), b"", b"");
    let t = process(
        &d.join("task"),
        17,
        &stat_line(17, b"srv", 'S', 1, 0, 561),
        b"srv\0--port\09000\0",
        b"RUNNER_TRACKING_ID=github_42\0",
    );
    fs::remove_file(t.join("cwd")).unwrap();
    symlink("/work/srv", t.join("cwd")).unwrap();
    process(
        &d.join("task"),
        16,
        &stat_line(16, b"srv", 'Z', 1, 0, 560),
        b"",
        b"",
    );
    // 13: a name with spaces, parens and invalid UTF-8; argv not UTF-8 either.
    process(
        root,
        13,
        &stat_line(13, b"a) (b \xff", 'S', 1, 0, 530),
        b"\xffbin\0--flag\0",
        b"",
    );
    // 14: truncated stat (cut before the start time): skipped and recorded, not guessed.
    let mut cut = stat_line(14, b"cut", 'S', 1, 0, 540);
    cut.truncate(30);
    process(root, 14, &cut, b"cut\0", b"");
    // 15: environ that cannot be read (a directory here; EACCES on a real system).
    let d = process(
        root,
        15,
        &stat_line(15, b"secret", 'S', 1, 0, 550),
        b"secret\0",
        b"",
    );
    fs::remove_file(d.join("environ")).unwrap();
    fs::create_dir(d.join("environ")).unwrap();
    fs::remove_file(d.join("exe")).unwrap();
    // Not processes: ignored.
    fs::create_dir_all(root.join("sysvipc")).unwrap();
    fs::create_dir_all(root.join("123abc")).unwrap();
    tmp
}

fn read(root: &Path) -> Snapshot {
    read_snapshot(&ReadOptions {
        proc_root: root.to_owned(),
        sockets: true,
        host_facts: false,
        detail: Detail::All,
        forget_dead: None,
    })
    .unwrap()
}

#[test]
fn reads_a_fake_proc_tree() {
    let tmp = fake_proc();
    let s = read(tmp.path());
    assert_eq!(s.machine.boot_id, "b7e1c0de-0000-4000-8000-000000000001");
    assert_eq!(s.machine.boot_time_unix, Some(1763700000));
    let pids: Vec<i32> = s.processes.iter().map(|p| p.id.pid).collect();
    assert_eq!(pids, vec![1, 2, 10, 11, 12, 13, 15, 16]);
    assert_eq!(s.unreadable.len(), 1);
    assert_eq!(s.unreadable[0].what, "process 14");

    let by = |pid: i32| s.processes.iter().find(|p| p.id.pid == pid).unwrap();
    assert!(by(2).kernel_thread);
    assert!(by(2).argv.is_empty());

    let uvicorn = by(10);
    assert_eq!(uvicorn.id.start_ticks, 500);
    assert_eq!(uvicorn.uid, Some(1000));
    assert_eq!(
        uvicorn.command_line(),
        "python3 -m uvicorn app:main --port 8000"
    );
    assert_eq!(uvicorn.markers.runner_tracking_id(), Some("github_42"));
    assert_eq!(
        uvicorn.markers.pytest_current_test(),
        Some("t.py::test_a (call)")
    );
    assert_eq!(uvicorn.cgroup.as_deref(), Some("/job.scope"));
    assert_eq!(uvicorn.cwd.as_ref().unwrap().lossy(), "/work/repo");
    assert!(uvicorn.unreadable.is_empty(), "{:?}", uvicorn.unreadable);

    let zombie = by(12);
    assert!(zombie.is_zombie());
    assert!(zombie.exe.is_none() && zombie.unreadable.is_empty());

    let main_exited = by(16);
    assert!(!main_exited.is_zombie(), "alive: another thread runs");
    assert_eq!(main_exited.command_line(), "srv --port 9000");
    assert_eq!(main_exited.markers.runner_tracking_id(), Some("github_42"));
    assert_eq!(main_exited.cwd.as_ref().unwrap().lossy(), "/work/srv");

    let odd = by(13);
    assert_eq!(odd.comm.as_bytes(), b"a) (b \xff");
    assert_eq!(odd.argv.first(), Some(&b"\xffbin"[..]));

    let secret = by(15);
    assert!(secret.markers.is_empty());
    assert!(secret.exe.is_none());
    assert_eq!(
        secret.unreadable,
        vec!["environ: unreadable", "exe: not present"]
    );

    // Sockets: the TCP listener is held by 10 (twice, counted once) and its child 11.
    assert_eq!(s.listeners.len(), 2);
    let tcp = &s.listeners[0];
    assert_eq!(tcp.label(), "tcp 127.0.0.1:8000");
    let owners: Vec<i32> = tcp.owners.iter().map(|o| o.pid).collect();
    assert_eq!(owners, vec![10, 11]);
    let unix = &s.listeners[1];
    assert_eq!(unix.kind, Some(SocketKind::Stream));
    assert_eq!(unix.label(), "unix /tmp/mcp server.sock");
    assert_eq!(unix.owners.len(), 1);

    // Nothing secret is kept.
    let json = serde_json::to_string(&s).unwrap();
    assert!(!json.contains("ghs_x") && !json.contains("HOME="), "{json}");
}

#[test]
fn a_process_vanishing_is_recorded_not_an_error() {
    let tmp = fake_proc();
    // A process directory without a stat file: it exited between listing and reading.
    fs::create_dir_all(tmp.path().join("77")).unwrap();
    let s = read(tmp.path());
    assert!(s.unreadable.iter().any(|u| u.what == "process 77"));
    assert!(s.processes.iter().all(|p| p.id.pid != 77));
}

#[test]
fn no_boot_id_falls_back_to_btime_then_errors() {
    let tmp = fake_proc();
    fs::remove_file(tmp.path().join("sys/kernel/random/boot_id")).unwrap();
    assert_eq!(boot_id(tmp.path()).unwrap(), "btime:1763700000");
    fs::write(tmp.path().join("stat"), "cpu 1\n").unwrap();
    assert!(matches!(boot_id(tmp.path()), Err(ReadError::NoBootId(_))));
    assert!(read_snapshot(&ReadOptions {
        proc_root: tmp.path().to_owned(),
        sockets: false,
        host_facts: false,
        detail: Detail::All,
        forget_dead: None,
    })
    .is_err());
}

#[test]
fn missing_proc_root_is_an_error() {
    let err = read_snapshot(&ReadOptions {
        proc_root: "/nonexistent/proc".into(),
        sockets: true,
        host_facts: false,
        detail: Detail::All,
        forget_dead: None,
    })
    .unwrap_err();
    assert!(err.to_string().contains("/nonexistent/proc"), "{err}");
}

#[test]
fn reads_the_real_proc_and_finds_itself() {
    let s = read_snapshot(&ReadOptions::default()).unwrap();
    let me = s.taken_by.expect("the snapshot names its taker");
    let p = s.process(me).unwrap();
    assert_eq!(p.id.pid, std::process::id() as i32);
    assert!(!p.argv.is_empty());
    assert!(s.processes.iter().any(|p| p.id.pid == 1));
    assert!(s.taken_at_boot_ticks >= p.id.start_ticks);
    assert_eq!(self_id(Path::new("/proc")), Some(me));
}

#[test]
fn details_only_where_asked() {
    let tmp = fake_proc();
    let full = read(tmp.path());
    let known: std::collections::HashSet<ProcessId> = full
        .processes
        .iter()
        .filter(|p| p.id.pid != 10)
        .map(|p| p.id)
        .collect();
    let s = read_snapshot(&ReadOptions {
        proc_root: tmp.path().to_owned(),
        sockets: true,
        host_facts: false,
        detail: Detail::Except(std::sync::Arc::new(known)),
        forget_dead: None,
    })
    .unwrap();
    for p in &s.processes {
        let new = p.id.pid == 10;
        assert_eq!(p.details, new && !p.kernel_thread, "{p:?}");
        assert_eq!(p.argv.is_empty(), !new, "{p:?}");
        assert_eq!(p.markers.is_empty(), !new, "{p:?}");
    }
    // Ownership of sockets is read for every process, detailed or not.
    assert_eq!(s.listeners, full.listeners);
    // The basics are there without details.
    let child = s.processes.iter().find(|p| p.id.pid == 11).unwrap();
    assert_eq!(
        (child.ppid, child.state, child.comm.lossy().as_ref()),
        (10, 'S', "python3")
    );
    assert!(child.uid.is_some());
}

#[test]
fn many_processes_read_by_several_threads_match_one_thread() {
    // Enough processes for the parallel path, with gaps (vanished) and a socket owner.
    let tmp = fake_proc();
    let root = tmp.path();
    for pid in 1000..1000 + 2 * super::PARALLEL_FROM as i32 {
        if pid % 97 == 0 {
            fs::create_dir_all(root.join(pid.to_string())).unwrap(); // no stat: gone
            continue;
        }
        let argv = format!("worker\0{pid}\0");
        process(
            root,
            pid,
            &stat_line(pid, b"worker", 'S', 1, 0, pid as u64),
            argv.as_bytes(),
            b"RUNNER_TRACKING_ID=github_x\0",
        );
    }
    let many = read(root);
    let pids: Vec<i32> = many.processes.iter().map(|p| p.id.pid).collect();
    assert!(pids.windows(2).all(|w| w[0] < w[1]), "in pid order");
    let mut one = ProcReader::at(root);
    let sockets: HashMap<u64, usize> = many
        .listeners
        .iter()
        .enumerate()
        .map(|(i, l)| (l.inode, i))
        .collect();
    let mut expected = Vec::new();
    let mut gone = Vec::new();
    let mut all: Vec<i32> = fs::read_dir(root)
        .unwrap()
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    all.sort_unstable();
    for pid in all {
        match one.read_process(root, pid, &sockets, &Detail::All) {
            Ok((p, _)) => expected.push(p),
            Err(_) => gone.push(format!("process {pid}")),
        }
    }
    assert_eq!(many.processes, expected);
    // A name, `exe` or `cwd` that many processes share is kept once per reading thread,
    // not copied into each.
    let copies = |field: fn(&Process) -> Option<&[u8]>| {
        many.processes
            .iter()
            .filter(|p| p.comm.as_bytes() == b"worker")
            .filter_map(field)
            .map(<[u8]>::as_ptr)
            .collect::<HashSet<_>>()
            .len()
    };
    assert!(many.processes.len() > 2 * super::MAX_READERS);
    for (what, n) in [
        ("comm", copies(|p| Some(p.comm.as_bytes()))),
        ("exe", copies(|p| p.exe.as_ref().map(Bytes::as_bytes))),
        ("cwd", copies(|p| p.cwd.as_ref().map(Bytes::as_bytes))),
        (
            "marker",
            copies(|p| p.markers.runner_tracking_id().map(str::as_bytes)),
        ),
    ] {
        assert!((1..=super::MAX_READERS).contains(&n), "{what}: {n} copies");
    }
    let unreadable: Vec<&String> = many.unreadable.iter().map(|u| &u.what).collect();
    assert_eq!(unreadable, gone.iter().collect::<Vec<_>>());
    assert!(many.listeners.iter().any(|l| !l.owners.is_empty()));
}

/// A sweep's re-read leaves out its own dead targets, and only those: a zombie it did not
/// signal and a live target are still listed, in pid order, on one thread or several.
#[test]
fn forgotten_zombies_are_left_out_of_a_reading_and_nothing_else() {
    for count in [8, 2 * super::PARALLEL_FROM as i32] {
        let tmp = fake_proc();
        let root = tmp.path();
        let mut forget = HashSet::new();
        let mut want = Vec::new();
        for pid in 1000..1000 + count {
            let zombie = pid % 2 == 0;
            let state = if zombie { 'Z' } else { 'S' };
            // One thread: a zombie, not a process whose main thread exited.
            let stat = String::from_utf8(stat_line(pid, b"worker", state, 1, 0, pid as u64))
                .unwrap()
                .replace(" 20 0 2 0 ", " 20 0 1 0 ");
            process(root, pid, stat.as_bytes(), b"worker\0", b"");
            let id = ProcessId {
                pid,
                start_ticks: pid as u64,
            };
            // Half the zombies and one live process in three are the sweep's targets.
            let target = if zombie { pid % 4 == 0 } else { pid % 3 == 0 };
            if target {
                forget.insert(id);
            }
            if !(zombie && target) {
                want.push(pid);
            }
        }
        let snap = read_snapshot(&ReadOptions {
            proc_root: root.to_owned(),
            sockets: false,
            host_facts: false,
            detail: Detail::All,
            forget_dead: Some(std::sync::Arc::new(forget)),
        })
        .unwrap();
        let pids: Vec<i32> = snap
            .processes
            .iter()
            .map(|p| p.id.pid)
            .filter(|&pid| pid >= 1000)
            .collect();
        assert_eq!(pids, want, "{count} processes");
    }
}

#[test]
fn a_reading_is_complete_unless_a_live_process_was_skipped() {
    use crate::test_support::snapshot_of;
    let mut snap = snapshot_of(vec![], 0);
    assert!(reading_complete(&snap));
    // A process that exited mid-read, a socket table that could not be read: complete.
    snap.unreadable.push(Unreadable {
        what: "process 12".into(),
        reason: EXITED_WHILE_READ.into(),
    });
    snap.unreadable.push(Unreadable {
        what: "/proc/net/tcp6".into(),
        reason: "permission denied".into(),
    });
    assert!(reading_complete(&snap));
    // A process whose entry could not be opened (descriptors ran out): incomplete.
    snap.unreadable.push(Unreadable {
        what: "process 13".into(),
        reason: format!("could not be read: {}", Errno::MFILE),
    });
    assert!(!reading_complete(&snap));
    assert!(gone_or_unread(Errno::NOENT).unread.is_none());
    assert!(gone_or_unread(Errno::SRCH).unread.is_none());
    assert_eq!(gone_or_unread(Errno::MFILE).unread, Some(Errno::MFILE));
}
