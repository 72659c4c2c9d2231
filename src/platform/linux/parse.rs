//! Byte parsers for the files under `/proc/PID/`. Pure functions on `&[u8]`, so they are
//! tested on fixtures: a command name may hold spaces, `)` and invalid UTF-8, a file may be
//! truncated, a zombie's cmdline is empty.

use crate::model::{Argv, Markers};

/// The fields of `/proc/PID/stat` we use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    pub comm: Vec<u8>,
    pub state: char,
    pub ppid: i32,
    pub pgid: i32,
    pub sid: i32,
    pub flags: u64,
    pub threads: u32,
    pub start_ticks: u64,
}

/// `PF_KTHREAD` in `include/linux/sched.h`.
const PF_KTHREAD: u64 = 0x0020_0000;

impl Stat {
    pub fn is_kernel_thread(&self) -> bool {
        self.flags & PF_KTHREAD != 0
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StatError {
    #[error("parse stat: no `(comm)` in it")]
    NoComm,
    #[error("parse stat: it has too few fields ({0})")]
    TooShort(usize),
    #[error("parse stat: field {field} is not a number")]
    BadNumber { field: usize },
}

/// Parses `/proc/PID/stat`. The command name sits between the first `(` and the *last* `)`,
/// since the name itself may contain `)` and spaces; everything after is space-separated.
pub fn parse_stat(buf: &[u8]) -> Result<Stat, StatError> {
    let open = buf
        .iter()
        .position(|&b| b == b'(')
        .ok_or(StatError::NoComm)?;
    let close = buf
        .iter()
        .rposition(|&b| b == b')')
        .ok_or(StatError::NoComm)?;
    if close < open {
        return Err(StatError::NoComm);
    }
    let pid = ascii_num::<i32>(trim(&buf[..open])).ok_or(StatError::BadNumber { field: 1 })?;
    let comm = buf[open + 1..close].to_vec();
    // Fields after the comm, numbered as in proc(5): field 3 is the state.
    let rest: Vec<&[u8]> = buf[close + 1..]
        .split(|&b| b == b' ' || b == b'\n')
        .filter(|f| !f.is_empty())
        .collect();
    // We need up to field 22 (starttime). Field 23 must be there too: it proves field 22 was
    // not cut short (a truncated "987654" would read as a different start time, "98").
    if rest.len() < 21 {
        return Err(StatError::TooShort(rest.len() + 2));
    }
    let field = |n: usize| rest[n - 3];
    let num = |n: usize| ascii_num::<u64>(field(n)).ok_or(StatError::BadNumber { field: n });
    let inum = |n: usize| ascii_num::<i32>(field(n)).ok_or(StatError::BadNumber { field: n });
    let state = match field(3) {
        [c] if c.is_ascii_alphabetic() => *c as char,
        _ => return Err(StatError::BadNumber { field: 3 }),
    };
    Ok(Stat {
        pid,
        comm,
        state,
        ppid: inum(4)?,
        pgid: inum(5)?,
        sid: inum(6)?,
        flags: num(9)?,
        threads: u32::try_from(num(20)?).map_err(|_| StatError::BadNumber { field: 20 })?,
        start_ticks: num(22)?,
    })
}

fn trim(b: &[u8]) -> &[u8] {
    let start = b
        .iter()
        .position(|c| !c.is_ascii_whitespace())
        .unwrap_or(b.len());
    let end = b
        .iter()
        .rposition(|c| !c.is_ascii_whitespace())
        .map_or(start, |e| e + 1);
    &b[start..end.max(start)]
}

/// Parses a decimal number, with an optional leading `-` for signed types.
pub fn ascii_num<T: std::str::FromStr>(b: &[u8]) -> Option<T> {
    std::str::from_utf8(b).ok()?.parse().ok()
}

/// The real uid from `/proc/PID/status` (`Uid:\treal\teffective\tsaved\tfs`).
pub fn parse_status_uid(buf: &[u8]) -> Option<u32> {
    buf.split(|&b| b == b'\n')
        .find_map(|line| line.strip_prefix(b"Uid:"))
        .and_then(|rest| {
            rest.split(|b| b.is_ascii_whitespace())
                .find(|f| !f.is_empty())
                .and_then(ascii_num)
        })
}

/// Splits `/proc/PID/cmdline` on NUL. A process that rewrote its argv into one
/// space-separated string (setproctitle) yields one element; that is what it says it is.
pub fn parse_cmdline(buf: &[u8]) -> Argv {
    Argv::from_cmdline(buf)
}

/// Picks the job markers out of `/proc/PID/environ` without keeping anything else.
pub fn scan_environ_markers(buf: &[u8]) -> Markers {
    let mut markers = Markers::default();
    for entry in buf.split(|&b| b == 0) {
        // Every marker name starts with one of these letters; skip the rest cheaply.
        if !matches!(
            entry.first(),
            Some(b'R' | b'G' | b'P' | b'C' | b'V' | b'J' | b'B')
        ) {
            continue;
        }
        let Some(eq) = entry.iter().position(|&b| b == b'=') else {
            continue;
        };
        let name = &entry[..eq];
        if let Some(known) = Markers::NAMES.iter().find(|n| n.as_bytes() == name) {
            markers.set(
                known,
                String::from_utf8_lossy(&entry[eq + 1..]).into_owned(),
            );
        }
    }
    markers
}

/// `PRETTY_NAME` from `/etc/os-release` (`Debian GNU/Linux 12 (bookworm)`), unquoted.
pub fn parse_os_release(buf: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(buf);
    let value = text
        .lines()
        .find_map(|l| l.strip_prefix("PRETTY_NAME="))?
        .trim();
    let value = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .or_else(|| value.strip_prefix('\'').and_then(|v| v.strip_suffix('\'')))
        .unwrap_or(value);
    (!value.is_empty()).then(|| value.to_owned())
}

/// `MemTotal` from `/proc/meminfo`, in bytes.
pub fn parse_mem_total(buf: &[u8]) -> Option<u64> {
    let text = String::from_utf8_lossy(buf);
    let kib: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    Some(kib * 1024).filter(|&b| b > 0)
}

/// The cgroup path from `/proc/PID/cgroup`: the unified (`0::`) line on cgroup v2, else the
/// first line's path.
pub fn parse_cgroup(buf: &[u8]) -> Option<String> {
    let mut first = None;
    for line in buf.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
        let mut parts = line.splitn(3, |&b| b == b':');
        let (Some(id), Some(_controllers), Some(path)) = (parts.next(), parts.next(), parts.next())
        else {
            continue;
        };
        let path = String::from_utf8_lossy(path).into_owned();
        if id == b"0" {
            return Some(path);
        }
        first.get_or_insert(path);
    }
    first
}

/// `socket:[12345]` -> 12345, from a `/proc/PID/fd/N` link.
pub fn socket_inode(link: &[u8]) -> Option<u64> {
    ascii_num(link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?)
}

/// `btime` (boot time, seconds since the epoch) from `/proc/stat`.
pub fn parse_btime(buf: &[u8]) -> Option<u64> {
    buf.split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"btime "))
        .and_then(|v| ascii_num(trim(v)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat_line(comm: &str) -> Vec<u8> {
        format!(
            "4242 ({comm}) S 1 4242 4242 0 -1 4194560 97 0 0 0 0 0 0 0 20 0 3 0 987654 \
             2318336 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n"
        )
        .into_bytes()
    }

    #[test]
    fn stat_plain() {
        let s = parse_stat(&stat_line("sleep")).unwrap();
        assert_eq!(s.pid, 4242);
        assert_eq!(s.comm, b"sleep");
        assert_eq!(s.state, 'S');
        assert_eq!((s.ppid, s.pgid, s.sid), (1, 4242, 4242));
        assert_eq!(s.threads, 3);
        assert_eq!(s.start_ticks, 987654);
        assert!(!s.is_kernel_thread());
    }

    #[test]
    fn stat_comm_with_spaces_and_parens() {
        for comm in ["a b", "x) S 1 2 3", ")(", "((", "evil) Z 9"] {
            let s = parse_stat(&stat_line(comm)).unwrap();
            assert_eq!(s.comm, comm.as_bytes(), "comm {comm:?}");
            assert_eq!(s.state, 'S');
            assert_eq!(s.start_ticks, 987654);
        }
    }

    #[test]
    fn stat_comm_non_utf8() {
        let mut line = b"7 (\xff\xfe) Z 1 7 7 0 -1 0 0 0 0 0 0 0 0 0 20 0 1 0 55 0 0 0".to_vec();
        line.push(b'\n');
        let s = parse_stat(&line).unwrap();
        assert_eq!(s.comm, b"\xff\xfe");
        assert_eq!(s.state, 'Z');
        assert_eq!(s.start_ticks, 55);
    }

    #[test]
    fn stat_kernel_thread_flag() {
        let line = b"2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 1 0 0 0";
        let s = parse_stat(line).unwrap();
        assert!(s.is_kernel_thread());
    }

    #[test]
    fn stat_truncated_and_garbage() {
        let full = stat_line("sleep");
        // Field 23 starts after the 21st space following the comm: a file cut anywhere
        // before it is refused (never misread), and no cut panics.
        let after_comm = full.iter().rposition(|&b| b == b')').unwrap() + 1;
        let field23 = after_comm
            + full[after_comm..]
                .iter()
                .enumerate()
                .filter(|(_, &b)| b == b' ')
                .nth(20)
                .unwrap()
                .0;
        for cut in 0..full.len() {
            let r = parse_stat(&full[..cut]);
            if cut <= field23 + 1 {
                assert!(r.is_err(), "cut at {cut} parsed: {r:?}");
            } else {
                assert_eq!(r.unwrap().start_ticks, 987654, "cut at {cut}");
            }
        }
        assert_eq!(parse_stat(b""), Err(StatError::NoComm));
        assert_eq!(parse_stat(b"1 ) (x"), Err(StatError::NoComm));
        assert!(matches!(
            parse_stat(b"x (a) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21"),
            Err(StatError::BadNumber { field: 1 })
        ));
        assert!(matches!(
            parse_stat(b"1 (a) S 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 -19 20 21"),
            Err(StatError::BadNumber { field: 22 })
        ));
    }

    #[test]
    fn status_uid() {
        let status = b"Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nUid:\t1000\t1001\t1000\t1000\nGid:\t0\t0\t0\t0\n";
        assert_eq!(parse_status_uid(status), Some(1000));
        assert_eq!(parse_status_uid(b"Name:\tx\n"), None);
        assert_eq!(parse_status_uid(b"Uid:\t"), None);
    }

    #[test]
    fn cmdline_variants() {
        assert!(parse_cmdline(b"").is_empty());
        assert!(parse_cmdline(b"\0").is_empty());
        let args = |buf: &[u8]| {
            parse_cmdline(buf)
                .iter()
                .map(<[u8]>::to_vec)
                .collect::<Vec<_>>()
        };
        assert_eq!(
            args(b"python\0-m\0uvicorn\0"),
            [&b"python"[..], b"-m", b"uvicorn"]
        );
        // setproctitle style: one string with spaces, no trailing NUL.
        assert_eq!(
            args(b"postgres: writer process"),
            [&b"postgres: writer process"[..]]
        );
        // An empty argument in the middle is kept, and one at the end.
        assert_eq!(args(b"a\0\0b\0"), [&b"a"[..], b"", b"b"]);
        assert_eq!(args(b"a\0\0"), [&b"a"[..], b""]);
        assert_eq!(parse_cmdline(b"a\0\0b\0").len(), 3);
        // Backwards, the same arguments.
        let p = parse_cmdline(b"a\0\0bc\0");
        assert_eq!(p.iter().rev().collect::<Vec<_>>(), [&b"bc"[..], b"", b"a"]);
        assert_eq!(p.get(2), Some(&b"bc"[..]));
        assert_eq!(p.get(3), None);
        assert_eq!(p.as_cmdline(), b"a\0\0bc\0");
    }

    #[test]
    fn environ_markers_only() {
        let env = b"HOME=/root\0GITHUB_TOKEN=ghs_secret\0RUNNER_TRACKING_ID=github_abc\0\
PYTEST_CURRENT_TEST=tests/t.py::test_x (call)\0GITHUB_ACTION=__run_2\0RUNNER_TRACKING_ID_X=no\0\
CI_JANITOR_RUN=77\0GITHUB_JOB\0";
        let m = scan_environ_markers(env);
        assert_eq!(m.runner_tracking_id.as_deref(), Some("github_abc"));
        assert_eq!(
            m.pytest_current_test.as_deref(),
            Some("tests/t.py::test_x (call)")
        );
        assert_eq!(m.github_action.as_deref(), Some("__run_2"));
        assert_eq!(m.ci_janitor_run.as_deref(), Some("77"));
        assert_eq!(m.github_job, None);
        let json = serde_json::to_string(&m).unwrap();
        assert!(!json.contains("ghs_secret"), "{json}");
    }

    #[test]
    fn cgroup_v1_and_v2() {
        assert_eq!(
            parse_cgroup(b"0::/system.slice/actions.runner.service\n").as_deref(),
            Some("/system.slice/actions.runner.service")
        );
        assert_eq!(
            parse_cgroup(b"12:pids:/a\n11:memory:/b\n0::/c\n").as_deref(),
            Some("/c")
        );
        assert_eq!(
            parse_cgroup(b"12:pids:/a\n11:memory:/b\n").as_deref(),
            Some("/a")
        );
        assert_eq!(parse_cgroup(b"garbage"), None);
        assert_eq!(parse_cgroup(b""), None);
    }

    #[test]
    fn socket_links() {
        assert_eq!(socket_inode(b"socket:[12345]"), Some(12345));
        assert_eq!(socket_inode(b"pipe:[12345]"), None);
        assert_eq!(socket_inode(b"socket:[]"), None);
        assert_eq!(socket_inode(b"/dev/null"), None);
    }

    #[test]
    fn btime() {
        assert_eq!(
            parse_btime(b"cpu 1 2\nbtime 1763720000\nprocesses 9\n"),
            Some(1763720000)
        );
        assert_eq!(parse_btime(b"cpu 1 2\n"), None);
    }

    #[test]
    fn host_facts() {
        let os = b"NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 12 (bookworm)\"\nID=debian\n";
        assert_eq!(
            parse_os_release(os).as_deref(),
            Some("Debian GNU/Linux 12 (bookworm)")
        );
        assert_eq!(
            parse_os_release(b"PRETTY_NAME=Alpine").as_deref(),
            Some("Alpine")
        );
        assert_eq!(parse_os_release(b"ID=x\n"), None);
        let mem = b"MemTotal:       24522468 kB\nMemFree:         1000 kB\n";
        assert_eq!(parse_mem_total(mem), Some(24_522_468 * 1024));
        assert_eq!(parse_mem_total(b"MemFree: 1 kB\n"), None);
    }
}
