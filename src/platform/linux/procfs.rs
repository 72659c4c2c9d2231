//! The one `/proc` reader: how a process's directory is opened, how a file in it is read
//! to its end, and what an error means. The snapshot reader ([`super::ProcReader`]), the
//! identity check before a signal ([`super::start_ticks`]) and the guard's reads at process
//! events ([`super::proc_events`]) all read through it, so they agree on all three.
//!
//! - **Where:** relative to the procfs root opened once (no walk from `/` per file), by
//!   path when it cannot be opened.
//! - **End of file:** procfs fills the whole buffer it is given unless the file ends first
//!   (`stat`, `status`, `cgroup` are formatted whole; `cmdline` and `environ` are copied
//!   page after page within one call), so a read that returns less than was asked is the
//!   end, and the read that would return 0 is not made. The buffer only grows, and stays
//!   initialised (no `unsafe`).
//! - **Gone:** a read through a process's directory after the process was reaped answers
//!   `ESRCH` ([`is_gone`]); a zombie still reads (its `stat` says `Z`), and is dead all the
//!   same ([`crate::model::is_dead_state`]).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{Mode, OFlags};
use rustix::io::Errno;

use super::parse::{parse_stat, Stat};

/// The first read asks for this much; `stat` and most `status` files fit.
const FIRST_READ: usize = 4096;

/// A procfs root and a reusable buffer.
#[derive(Debug, Default)]
pub struct Reader {
    /// The procfs root, `/proc` outside tests.
    path: PathBuf,
    /// The root opened once; `None` when it could not be (then paths are walked).
    root: Option<OwnedFd>,
    buf: Vec<u8>,
}

impl Reader {
    /// A reader for the procfs at `root`, which it opens once (or reads by path if it
    /// cannot).
    pub fn at(root: &Path) -> Reader {
        Reader {
            path: root.to_owned(),
            root: rustix::fs::open(
                root,
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ok(),
            buf: Vec::new(),
        }
    }

    /// A reader for the procfs at `root` that walks paths from it (one process read once:
    /// opening the root first would cost more than it saves).
    pub fn by_path(root: &Path) -> Reader {
        Reader {
            path: root.to_owned(),
            ..Reader::default()
        }
    }

    /// The procfs root this reader reads.
    pub fn root(&self) -> &Path {
        &self.path
    }

    /// Opens `/proc/PID`: files opened relative to it belong to that process even if its
    /// pid is reused meanwhile (the kernel then answers `ESRCH`).
    pub fn dir(&self, pid: i32) -> Result<OwnedFd, Errno> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        match &self.root {
            Some(root) => rustix::fs::openat(root, pid.to_string(), flags, Mode::empty()),
            None => rustix::fs::open(self.path.join(pid.to_string()), flags, Mode::empty()),
        }
    }

    /// Reads the file `name` in a process's directory `dir` to its end.
    pub fn read(&mut self, dir: &impl AsFd, name: &str) -> Result<&[u8], Errno> {
        let fd = rustix::fs::openat(dir, name, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty())?;
        let n = read_to_end(&fd, &mut self.buf)?;
        Ok(&self.buf[..n])
    }

    /// Reads `/proc/PID/name` without a descriptor on the directory: one file of one
    /// process, three system calls (open, read, close).
    pub fn read_one(&mut self, pid: i32, name: &str) -> Result<&[u8], Errno> {
        let flags = OFlags::RDONLY | OFlags::CLOEXEC;
        let fd = match &self.root {
            Some(root) => rustix::fs::openat(root, format!("{pid}/{name}"), flags, Mode::empty()),
            None => {
                let mut path = self.path.clone();
                path.push(pid.to_string());
                path.push(name);
                rustix::fs::open(path, flags, Mode::empty())
            }
        }?;
        let n = read_to_end(&fd, &mut self.buf)?;
        Ok(&self.buf[..n])
    }

    /// `pid`'s `stat`, parsed; `None` when it is gone (or unreadable).
    pub fn stat(&mut self, pid: i32) -> Option<Stat> {
        self.stat_or_why(pid).ok().flatten()
    }

    /// `pid`'s `stat`, parsed: `Ok(None)` when there is no such process (or what is there
    /// does not parse), an error when it could not be read for another reason (too many
    /// open files, say), which proves nothing about the process.
    pub fn stat_or_why(&mut self, pid: i32) -> Result<Option<Stat>, Errno> {
        match self.read_one(pid, "stat") {
            Ok(buf) => Ok(parse_stat(buf).ok()),
            Err(e) if e == Errno::NOENT || is_gone(e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// Reads `fd` to its end into `buf` (grown as needed) and returns the length read. A
/// short read is the end (see the module's notes).
pub fn read_to_end(fd: &OwnedFd, buf: &mut Vec<u8>) -> Result<usize, Errno> {
    let mut filled = 0;
    loop {
        if buf.len() - filled < FIRST_READ {
            let grown = (buf.len() * 2).max(filled + FIRST_READ).max(16 * 1024);
            buf.resize(grown, 0);
        }
        let room = buf.len() - filled;
        match rustix::io::read(fd, &mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => {
                filled += n;
                if n < room {
                    break;
                }
            }
            Err(Errno::INTR) => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Whether an error reading through a process's directory means the process is gone.
pub fn is_gone(e: Errno) -> bool {
    e == Errno::SRCH
}

/// What an error reading one file of a process is, for its `unreadable` list.
pub fn errno_text(e: Errno) -> &'static str {
    match e {
        Errno::ACCESS | Errno::PERM => "permission denied",
        Errno::NOENT => "not present",
        _ => "unreadable",
    }
}

/// Every pid listed in `proc_root`, ascending.
pub fn list_pids(proc_root: &Path) -> std::io::Result<Vec<i32>> {
    let mut pids: Vec<i32> = std::fs::read_dir(proc_root)?
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    Ok(pids)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_whole_files_short_and_long() {
        let dir = tempfile::tempdir().unwrap();
        let pid_dir = dir.path().join("42");
        std::fs::create_dir(&pid_dir).unwrap();
        // Longer than the first read and than the buffer's first size: a regular file
        // answers in full reads until its end, as procfs does.
        let long: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        std::fs::write(pid_dir.join("environ"), &long).unwrap();
        std::fs::write(pid_dir.join("comm"), b"x\n").unwrap();
        let mut r = Reader::at(dir.path());
        let d = r.dir(42).unwrap();
        assert_eq!(r.read(&d, "environ").unwrap(), &long[..]);
        assert_eq!(r.read(&d, "comm").unwrap(), b"x\n");
        assert_eq!(r.read_one(42, "environ").unwrap(), &long[..]);
        assert_eq!(r.read_one(42, "missing"), Err(Errno::NOENT));
        assert!(r.dir(43).is_err());
        // By path, when the root cannot be held open.
        let mut by_path = Reader::by_path(dir.path());
        assert_eq!(by_path.read_one(42, "comm").unwrap(), b"x\n");
        assert!(by_path.dir(42).is_ok());
    }

    #[test]
    fn reads_our_own_stat() {
        let me = std::process::id() as i32;
        let mut r = Reader::at(Path::new("/proc"));
        let s = r.stat(me).unwrap();
        assert_eq!(s.pid, me);
        assert!(r.stat(i32::MAX).is_none());
    }
}
