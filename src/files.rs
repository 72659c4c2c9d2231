//! Every file ci-janitor reads or writes goes through here, because it runs as root on
//! shared machines and what it reads decides what it kills.
//!
//! - [`Dir::private`]: the state directory. Created 0700; refused when it, or any directory
//!   above it, could be changed by another user (owned by someone else, group- or
//!   world-writable without the sticky bit, or a symbolic link someone else owns), or when
//!   the directory itself is a symbolic link. Every file inside is then opened relative to
//!   the directory's descriptor, never following a symbolic link, so the checked directory
//!   is the one written to.
//! - Files in it are created with `O_EXCL | O_NOFOLLOW` (a temporary name, then a rename for
//!   an atomic replace), 0600, fsynced when the data decides a later kill. An existing file
//!   that is kept (a log, a journal, a lock) must be a regular file of ours that no one else
//!   can write.
//! - Reads refuse anything but a regular file (a FIFO must not hang us, `/dev/zero` must not
//!   be read until memory runs out) and anything larger than the caller's bound.
//! - [`write_output`] / [`append_output`] / [`read_input`]: files the user or the runner
//!   names (reports, `$GITHUB_OUTPUT`, the summary, a known-leaks file): the same rules
//!   but the ownership ones, which are the user's business there.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{FileType, Mode, OFlags};
use rustix::io::Errno;

/// Files that hold command lines (state, journal, log, reports) are readable by us only.
pub const PRIVATE: u32 = 0o600;

/// Whether the data must reach the disk before we go on (it decides a later kill).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sync {
    /// fsync the file and its directory.
    Durable,
    /// The page cache is enough (it survives our death; only a machine crash loses it).
    Cached,
}

#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file or a directory on its way could be changed by someone else, or is not what
    /// it should be: nothing was read or written.
    #[error("use {}: {problem}; {hint}", path.display())]
    Refused {
        path: PathBuf,
        problem: String,
        hint: String,
    },
    #[error("use {}: it is {size} bytes, more than the {limit} bytes allowed; it is not a file ci-janitor wrote (remove it, or point ci-janitor elsewhere)", path.display())]
    TooBig {
        path: PathBuf,
        size: u64,
        limit: u64,
    },
    #[error("use {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl FileError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, FileError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }

    /// Whether the file itself is at fault (refused, too big), not the machine.
    pub fn is_refusal(&self) -> bool {
        matches!(self, FileError::Refused { .. } | FileError::TooBig { .. })
    }

    fn io(path: &Path, e: impl Into<std::io::Error>) -> FileError {
        FileError::Io {
            path: path.to_owned(),
            source: e.into(),
        }
    }
}

impl From<FileError> for std::io::Error {
    fn from(e: FileError) -> Self {
        match e {
            FileError::Io { source, .. } => source,
            other => std::io::Error::new(std::io::ErrorKind::PermissionDenied, other.to_string()),
        }
    }
}

const HINT_DIR: &str = "another user may have prepared it: remove it, or pass --state FILE \
                        in a directory only you can write";

fn refused(path: &Path, problem: impl Into<String>, hint: &str) -> FileError {
    FileError::Refused {
        path: path.to_owned(),
        problem: problem.into(),
        hint: hint.to_owned(),
    }
}

fn euid() -> u32 {
    rustix::process::geteuid().as_raw()
}

fn file_type(st: &rustix::fs::Stat) -> FileType {
    FileType::from_raw_mode(st.st_mode)
}

/// A directory on the way to the state directory is safe when only root or we can change
/// what it holds: owned by one of us, and not writable by others unless sticky (then others
/// cannot rename or remove what we put there, `/tmp`).
fn check_ancestor(path: &Path) -> Result<(), FileError> {
    let me = euid();
    let link = std::fs::symlink_metadata(path).map_err(|e| FileError::io(path, e))?;
    use std::os::unix::fs::MetadataExt;
    if link.file_type().is_symlink() && link.uid() != 0 && link.uid() != me {
        return Err(refused(
            path,
            format!(
                "it is a symbolic link owned by uid {}, who could point it anywhere",
                link.uid()
            ),
            HINT_DIR,
        ));
    }
    let meta = std::fs::metadata(path).map_err(|e| FileError::io(path, e))?;
    if !meta.is_dir() {
        return Err(refused(path, "it is not a directory", HINT_DIR));
    }
    if meta.uid() != 0 && meta.uid() != me {
        return Err(refused(
            path,
            format!(
                "it is owned by uid {}, not by us (uid {me}) or root",
                meta.uid()
            ),
            HINT_DIR,
        ));
    }
    if meta.mode() & 0o022 != 0 && meta.mode() & 0o1000 == 0 {
        return Err(refused(
            path,
            format!(
                "it is writable by others (mode {:o}) without the sticky bit",
                meta.mode() & 0o7777
            ),
            "chmod go-w it, or pass --state FILE in a directory only you can write",
        ));
    }
    Ok(())
}

/// A file we keep (a log, a journal, a lock, anything we read back) must be a regular file
/// of ours, with one name, that no one else can write.
fn check_own_file(path: &Path, fd: &OwnedFd) -> Result<rustix::fs::Stat, FileError> {
    let st = rustix::fs::fstat(fd).map_err(|e| FileError::io(path, e))?;
    let hint = "remove it; ci-janitor writes it again";
    if file_type(&st) != FileType::RegularFile {
        return Err(refused(
            path,
            format!("it is not a regular file ({:?})", file_type(&st)),
            hint,
        ));
    }
    ours_alone(path, &st, hint, hint)?;
    if st.st_nlink > 1 {
        return Err(refused(
            path,
            format!("it has {} names (a hard link to another file)", st.st_nlink),
            hint,
        ));
    }
    Ok(st)
}

/// Owned by us, and writable by no one else: `owner_hint` and `mode_hint` say what to do
/// when it is not.
fn ours_alone(
    path: &Path,
    st: &rustix::fs::Stat,
    owner_hint: &str,
    mode_hint: &str,
) -> Result<(), FileError> {
    if st.st_uid != euid() {
        return Err(refused(
            path,
            format!(
                "it is owned by uid {}, not by us (uid {})",
                st.st_uid,
                euid()
            ),
            owner_hint,
        ));
    }
    if st.st_mode & 0o022 != 0 {
        return Err(refused(
            path,
            format!("it is writable by others (mode {:o})", st.st_mode & 0o7777),
            mode_hint,
        ));
    }
    Ok(())
}

/// Reads at most `limit` bytes from `fd`, refusing more.
fn read_bounded(path: &Path, fd: OwnedFd, limit: u64) -> Result<Vec<u8>, FileError> {
    let st = rustix::fs::fstat(&fd).map_err(|e| FileError::io(path, e))?;
    let size = u64::try_from(st.st_size).unwrap_or(0);
    if size > limit {
        return Err(FileError::TooBig {
            path: path.to_owned(),
            size,
            limit,
        });
    }
    let mut buf = Vec::with_capacity(size as usize);
    File::from(fd)
        .take(limit + 1)
        .read_to_end(&mut buf)
        .map_err(|e| FileError::io(path, e))?;
    if buf.len() as u64 > limit {
        return Err(FileError::TooBig {
            path: path.to_owned(),
            size: buf.len() as u64,
            limit,
        });
    }
    Ok(buf)
}

/// A name for a temporary file beside `name` that no one can predict.
fn temp_name(name: &str) -> String {
    let mut r = [0u8; 8];
    let _ = File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut r));
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    format!(
        ".{name}.{}.{nanos:x}{}.tmp",
        std::process::id(),
        r.iter().map(|b| format!("{b:02x}")).collect::<String>()
    )
}

fn create_excl(dir: impl AsFd, name: &str, mode: u32) -> rustix::io::Result<OwnedFd> {
    rustix::fs::openat(
        dir,
        name,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::from_raw_mode(mode),
    )
}

/// Writes `bytes` to a new temporary file in `dir`, then renames it over `name`: a reader
/// sees the old file or the new one, never a mix, and a symbolic link at `name` is replaced,
/// not followed.
fn replace_in(
    dir: &OwnedFd,
    dir_path: &Path,
    name: &str,
    bytes: &[u8],
    mode: u32,
    sync: Sync,
) -> Result<(), FileError> {
    let path = dir_path.join(name);
    let tmp = temp_name(name);
    let fd = create_excl(dir, &tmp, mode).map_err(|e| FileError::io(&path, e))?;
    let mut file = File::from(fd);
    let written = file.write_all(bytes).and_then(|()| match sync {
        Sync::Durable => file.sync_all(),
        Sync::Cached => Ok(()),
    });
    let renamed = written.and_then(|()| Ok(rustix::fs::renameat(dir, &tmp, dir, name)?));
    if let Err(e) = renamed {
        let _ = rustix::fs::unlinkat(dir, &tmp, rustix::fs::AtFlags::empty());
        return Err(FileError::io(&path, e));
    }
    if sync == Sync::Durable {
        rustix::fs::fsync(dir).map_err(|e| FileError::io(dir_path, e))?;
    }
    Ok(())
}

/// The state directory, checked and held open.
#[derive(Debug)]
pub struct Dir {
    fd: OwnedFd,
    path: PathBuf,
}

impl Dir {
    /// Opens the private directory `path`, creating it (and missing parents) 0700. Refused
    /// when another user could change it or what it holds (see the module's doc).
    pub fn private(path: &Path) -> Result<Dir, FileError> {
        let path = std::path::absolute(path).map_err(|e| FileError::io(path, e))?;
        // Every existing ancestor must be safe; missing ones are created (ours, 0700).
        let mut prefix = PathBuf::new();
        let parts: Vec<_> = path.components().collect();
        for (i, part) in parts.iter().enumerate() {
            prefix.push(part);
            let last = i + 1 == parts.len();
            match std::fs::symlink_metadata(&prefix) {
                Ok(_) if !last => check_ancestor(&prefix)?,
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    match rustix::fs::mkdir(&prefix, Mode::from_raw_mode(0o700)) {
                        Ok(()) | Err(Errno::EXIST) => {}
                        Err(e) => return Err(FileError::io(&prefix, e)),
                    }
                    if !last {
                        check_ancestor(&prefix)?;
                    }
                }
                Err(e) => return Err(FileError::io(&prefix, e)),
            }
        }
        let fd = match rustix::fs::open(
            &path,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => fd,
            Err(Errno::LOOP | Errno::NOTDIR) => {
                let link = std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_symlink());
                let problem = if link {
                    "it is a symbolic link: refusing to follow it"
                } else {
                    "it is not a directory"
                };
                return Err(refused(&path, problem, HINT_DIR));
            }
            Err(e) => return Err(FileError::io(&path, e)),
        };
        let st = rustix::fs::fstat(&fd).map_err(|e| FileError::io(&path, e))?;
        ours_alone(
            &path,
            &st,
            HINT_DIR,
            "chmod 700 it, or pass --state FILE in a directory only you can write",
        )?;
        Ok(Dir { fd, path })
    }

    /// The private directory that holds `file` (its parent).
    pub fn of(file: &Path) -> Result<(Dir, String), FileError> {
        let file = std::path::absolute(file).map_err(|e| FileError::io(file, e))?;
        let name = file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .ok_or_else(|| refused(&file, "it names no file", "pass a file name"))?;
        let dir = file.parent().unwrap_or(Path::new("/"));
        Ok((Dir::private(dir)?, name))
    }

    #[cfg(test)]
    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }

    /// Replaces `name` atomically with `bytes`, created with `mode`.
    pub fn replace(
        &self,
        name: &str,
        bytes: &[u8],
        mode: u32,
        sync: Sync,
    ) -> Result<(), FileError> {
        replace_in(&self.fd, &self.path, name, bytes, mode, sync)
    }

    /// Reads `name` (at most `limit` bytes): a regular file of ours that no one else can
    /// write. `NotFound` when there is none.
    pub fn read(&self, name: &str, limit: u64) -> Result<Vec<u8>, FileError> {
        let path = self.join(name);
        let fd = self.open_existing(name, OFlags::RDONLY)?;
        check_own_file(&path, &fd)?;
        read_bounded(&path, fd, limit)
    }

    /// [`Dir::read`], with what `fstat` said of the very file read (its change time is a
    /// fact its writer cannot set).
    pub fn read_with_stat(
        &self,
        name: &str,
        limit: u64,
    ) -> Result<(Vec<u8>, rustix::fs::Stat), FileError> {
        let path = self.join(name);
        let fd = self.open_existing(name, OFlags::RDONLY)?;
        let st = check_own_file(&path, &fd)?;
        Ok((read_bounded(&path, fd, limit)?, st))
    }

    /// Reads the first `limit` bytes of `name` (checked as [`Dir::read`] checks it), and
    /// says how big it is: for a file whose head is worth reading when it is too big (a
    /// journal).
    pub fn read_head(&self, name: &str, limit: u64) -> Result<(Vec<u8>, u64), FileError> {
        let path = self.join(name);
        let fd = self.open_existing(name, OFlags::RDONLY)?;
        let st = check_own_file(&path, &fd)?;
        let size = u64::try_from(st.st_size).unwrap_or(0);
        let mut buf = Vec::with_capacity(size.min(limit) as usize);
        File::from(fd)
            .take(limit)
            .read_to_end(&mut buf)
            .map_err(|e| FileError::io(&path, e))?;
        Ok((buf, size))
    }

    /// Opens `name` for appending: created new (`O_EXCL`) with `mode`, or an existing
    /// regular file of ours that no one else can write.
    pub fn append(&self, name: &str, mode: u32) -> Result<File, FileError> {
        self.open_kept(name, OFlags::WRONLY | OFlags::APPEND, mode)
    }

    /// Like [`Dir::append`], also readable (a journal that checks its last byte).
    pub fn append_rw(&self, name: &str, mode: u32) -> Result<File, FileError> {
        self.open_kept(name, OFlags::RDWR | OFlags::APPEND, mode)
    }

    /// Opens `name` for reading and writing without truncating it (a lock file).
    pub fn keep(&self, name: &str, mode: u32) -> Result<File, FileError> {
        self.open_kept(name, OFlags::RDWR, mode)
    }

    pub fn remove(&self, name: &str) -> Result<(), FileError> {
        rustix::fs::unlinkat(&self.fd, name, rustix::fs::AtFlags::empty())
            .map_err(|e| FileError::io(&self.join(name), e))
    }

    fn open_existing(&self, name: &str, flags: OFlags) -> Result<OwnedFd, FileError> {
        let path = self.join(name);
        // NONBLOCK: opening a FIFO must not wait for a writer.
        match rustix::fs::openat(
            &self.fd,
            name,
            flags | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC,
            Mode::empty(),
        ) {
            Ok(fd) => {
                clear_nonblock(&fd);
                Ok(fd)
            }
            Err(Errno::LOOP) => Err(refused(
                &path,
                "it is a symbolic link: refusing to follow it",
                "remove it; ci-janitor writes it again",
            )),
            Err(e) => Err(FileError::io(&path, e)),
        }
    }

    fn open_kept(&self, name: &str, flags: OFlags, mode: u32) -> Result<File, FileError> {
        let path = self.join(name);
        let created = rustix::fs::openat(
            &self.fd,
            name,
            flags | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(mode),
        );
        let fd = match created {
            Ok(fd) => fd,
            Err(Errno::EXIST) => {
                let fd = self.open_existing(name, flags)?;
                check_own_file(&path, &fd)?;
                fd
            }
            Err(e) => return Err(FileError::io(&path, e)),
        };
        Ok(File::from(fd))
    }
}

fn clear_nonblock(fd: &OwnedFd) {
    if let Ok(fl) = rustix::fs::fcntl_getfl(fd) {
        let _ = rustix::fs::fcntl_setfl(fd, fl - OFlags::NONBLOCK);
    }
}

/// Refuses what `fd` (opened non-blocking, so a FIFO could not hang the open) names unless
/// it is a regular file; then makes it blocking for the read or write to come.
fn regular_blocking(path: &Path, fd: &OwnedFd) -> Result<(), FileError> {
    clear_nonblock(fd);
    let st = rustix::fs::fstat(fd).map_err(|e| FileError::io(path, e))?;
    if file_type(&st) != FileType::RegularFile {
        return Err(refused(
            path,
            format!("it is not a regular file ({:?})", file_type(&st)),
            "pass the path of a regular file",
        ));
    }
    Ok(())
}

/// Opens a file the user named, for reading: a regular file only (a FIFO does not hang us,
/// a device is not read), at most `limit` bytes.
pub fn read_input(path: &Path, limit: u64) -> Result<Vec<u8>, FileError> {
    let fd = rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::NONBLOCK | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| FileError::io(path, e))?;
    regular_blocking(path, &fd)?;
    read_bounded(path, fd, limit)
}

/// Writes a file the user named (a report) whole or not at all: a temporary file in its
/// directory (created if missing), renamed over it. Refused when something other than a
/// regular file is there (a device, a FIFO): it is never written through.
pub fn write_output(path: &Path, bytes: &[u8]) -> Result<(), FileError> {
    write_output_mode(path, bytes, 0o644)
}

/// [`write_output`] with the new file's mode (a hook script is 0755).
pub fn write_output_mode(path: &Path, bytes: &[u8], mode: u32) -> Result<(), FileError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) if !m.file_type().is_file() && !m.file_type().is_symlink() => {
            return Err(refused(
                path,
                "it is not a regular file",
                "pass the path of a file to write",
            ))
        }
        // The rename below replaces a link; a link to a device is refused all the same: a
        // user who pointed it there meant the device.
        Ok(m)
            if m.file_type().is_symlink()
                && std::fs::metadata(path).is_ok_and(|t| !t.is_file()) =>
        {
            return Err(refused(
                path,
                "it links to something other than a regular file",
                "pass the path of a file to write",
            ))
        }
        _ => {}
    }
    let dir = match path.parent().filter(|d| !d.as_os_str().is_empty()) {
        Some(d) => d.to_owned(),
        None => PathBuf::from("."),
    };
    std::fs::create_dir_all(&dir).map_err(|e| FileError::io(path, e))?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .ok_or_else(|| refused(path, "it names no file", "pass a file name"))?;
    let dfd = rustix::fs::open(
        &dir,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| FileError::io(path, e))?;
    replace_in(&dfd, &dir, &name, bytes, mode, Sync::Cached)
}

/// Appends `text` to a file the runner or the user named (`$GITHUB_OUTPUT`, the summary),
/// created if missing. A symbolic link at the path is not followed, and anything but a
/// regular file is refused.
pub fn append_output(path: &Path, text: &[u8]) -> Result<(), FileError> {
    let fd = match rustix::fs::open(
        path,
        OFlags::WRONLY
            | OFlags::APPEND
            | OFlags::CREATE
            | OFlags::NOFOLLOW
            | OFlags::NONBLOCK
            | OFlags::CLOEXEC,
        Mode::from_raw_mode(0o644),
    ) {
        Ok(fd) => fd,
        Err(Errno::LOOP) => {
            return Err(refused(
                path,
                "it is a symbolic link: refusing to follow it",
                "pass the path of a regular file",
            ))
        }
        Err(e) => return Err(FileError::io(path, e)),
    };
    regular_blocking(path, &fd)?;
    File::from(fd)
        .write_all(text)
        .map_err(|e| FileError::io(path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};

    fn mode_of(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().mode() & 0o7777
    }

    #[test]
    fn private_dir_is_created_0700_and_files_0600() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::private(&tmp.path().join("a/b")).unwrap();
        assert_eq!(mode_of(&tmp.path().join("a")), 0o700);
        assert_eq!(mode_of(&tmp.path().join("a/b")), 0o700);
        dir.replace("s.json", b"{}", PRIVATE, Sync::Durable)
            .unwrap();
        assert_eq!(mode_of(&dir.join("s.json")), 0o600);
        assert_eq!(dir.read("s.json", 10).unwrap(), b"{}");
        // Only the file: no temporary left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1);
        let mut log = dir.append("log", PRIVATE).unwrap();
        log.write_all(b"one\n").unwrap();
        let mut log = dir.append("log", PRIVATE).unwrap();
        log.write_all(b"two\n").unwrap();
        assert_eq!(dir.read("log", 100).unwrap(), b"one\ntwo\n");
        assert!(dir.read("missing", 10).unwrap_err().is_not_found());
    }

    #[test]
    fn symlinks_fifos_devices_and_big_files_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = Dir::private(tmp.path()).unwrap();
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        std::os::unix::fs::symlink(&victim, dir.join("log")).unwrap();
        assert!(dir.append("log", PRIVATE).unwrap_err().is_refusal());
        assert!(dir.read("log", 100).unwrap_err().is_refusal());
        // Replacing replaces the link, never writes through it.
        dir.replace("log", b"new", PRIVATE, Sync::Cached).unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");

        rustix::fs::mknodat(
            rustix::fs::CWD,
            dir.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
            0,
        )
        .unwrap();
        assert!(dir.read("fifo", 100).unwrap_err().is_refusal());
        assert!(read_input(&dir.join("fifo"), 100).unwrap_err().is_refusal());
        assert!(read_input(Path::new("/dev/zero"), 100)
            .unwrap_err()
            .is_refusal());
        std::fs::write(dir.join("big"), vec![b'x'; 101]).unwrap();
        std::fs::set_permissions(dir.join("big"), std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(matches!(
            dir.read("big", 100),
            Err(FileError::TooBig { size: 101, .. })
        ));
        // A hard link to a file elsewhere is not ours to append to.
        std::fs::hard_link(&victim, dir.join("linked")).unwrap();
        std::fs::set_permissions(&victim, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(dir.append("linked", PRIVATE).unwrap_err().is_refusal());
    }

    #[test]
    fn a_directory_writable_by_others_or_a_link_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let open = tmp.path().join("open");
        std::fs::create_dir(&open).unwrap();
        std::fs::set_permissions(&open, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = Dir::private(&open).unwrap_err();
        assert!(e.to_string().contains("writable by others"), "{e}");
        assert!(Dir::private(&open.join("sub")).is_err());
        let link = tmp.path().join("link");
        std::os::unix::fs::symlink(tmp.path(), &link).unwrap();
        let e = Dir::private(&link).unwrap_err();
        assert!(e.to_string().contains("symbolic link"), "{e}");
    }

    #[test]
    fn outputs_refuse_devices_and_do_not_follow_links() {
        let tmp = tempfile::tempdir().unwrap();
        assert!(write_output(Path::new("/dev/full"), b"x")
            .unwrap_err()
            .is_refusal());
        assert!(append_output(Path::new("/dev/full"), b"x")
            .unwrap_err()
            .is_refusal());
        let victim = tmp.path().join("victim");
        std::fs::write(&victim, b"precious").unwrap();
        let out = tmp.path().join("out");
        std::os::unix::fs::symlink(&victim, &out).unwrap();
        assert!(append_output(&out, b"x").unwrap_err().is_refusal());
        write_output(&out, b"report").unwrap();
        assert_eq!(std::fs::read(&victim).unwrap(), b"precious");
        assert_eq!(std::fs::read(&out).unwrap(), b"report");
    }
}
