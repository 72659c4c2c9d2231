//! The guard's files beside the state file, and its pid file: who the guard is, by
//! identity. A pid file is a claim, never trusted as it stands: [`check_pid_file`] checks it
//! against facts its writer cannot forge before anything is signalled.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::journal::Mode;
use super::{file_error, GuardError};
use crate::model::ProcessId;
use crate::platform;

/// The guard's files, beside the state file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GuardPaths {
    pub state: PathBuf,
    pub pid: PathBuf,
    /// The pid file of the last guard that stopped, kept so that a sweep after `guard stop`
    /// still knows which guard's journal records to take (see [`lineage::Vouched`]).
    pub stopped: PathBuf,
    pub log: PathBuf,
    pub journal: PathBuf,
    pub lock: PathBuf,
    pub report_json: PathBuf,
    pub report_txt: PathBuf,
}

impl GuardPaths {
    /// The private directory the files are in (see [`crate::files`]), checked and open.
    pub fn dir(&self) -> Result<crate::files::Dir, GuardError> {
        let dir = self.state.parent().unwrap_or(Path::new("/"));
        crate::files::Dir::private(dir).map_err(|e| file_error("open the state directory", e))
    }

    /// The name of one of the files in [`GuardPaths::dir`].
    pub fn name(path: &Path) -> String {
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    }

    pub fn for_state(state: &Path) -> GuardPaths {
        let state = std::path::absolute(state).unwrap_or_else(|_| state.to_owned());
        let dir = state.parent().map(Path::to_owned).unwrap_or_default();
        let stem = state
            .file_stem()
            .map_or_else(|| "state".into(), |s| s.to_string_lossy().into_owned());
        let file = |suffix: &str| dir.join(format!("{stem}.{suffix}"));
        GuardPaths {
            pid: file("guard.pid"),
            stopped: file("guard.stopped"),
            log: file("guard.log"),
            journal: file("journal.jsonl"),
            lock: file("guard.lock"),
            report_json: file("guard-report.json"),
            report_txt: file("guard-report.txt"),
            state,
        }
    }
}

/// The largest pid file read (ours are a few hundred bytes).
const MAX_PID_FILE: u64 = 64 * 1024;

/// The pid file: who the guard is (by identity) and how it runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PidFile {
    pub pid: i32,
    pub start_ticks: u64,
    pub boot_id: String,
    pub mode: Mode,
    pub detail: String,
    #[serde(default)]
    pub degraded: Vec<String>,
    pub root: Option<ProcessId>,
    /// The process whose exit without a sweep makes the guard sweep (its dead man's
    /// switch); none when the job has no per-job root.
    #[serde(default)]
    pub watch: Option<ProcessId>,
    pub started_at_unix_ms: u64,
    /// The executable of the guard that wrote the file (`/proc/self/exe`): a pid file names
    /// a process only if that process runs this very file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exe: Option<FileId>,
}

/// A file by device and inode: what a path cannot fake.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

/// The file a process runs (`/proc/PID/exe`, followed: a replaced binary is still the file
/// the process runs).
pub fn exe_of(proc_root: &Path, pid: &str) -> Option<FileId> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(proc_root.join(pid).join("exe")).ok()?;
    Some(FileId {
        dev: m.dev(),
        ino: m.ino(),
    })
}

impl PidFile {
    pub fn id(&self) -> ProcessId {
        ProcessId {
            pid: self.pid,
            start_ticks: self.start_ticks,
        }
    }
}

/// What a pid file names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Named {
    /// A live guard of this state: the identity, executable, user and arguments agree.
    Guard(PidFile),
    /// Nothing alive: another boot, an exited process, a reused pid.
    Gone(PidFile),
    /// A live process that is not this state's guard, or that cannot be shown to be one:
    /// it is never signalled.
    Distrusted { pid_file: PidFile, why: String },
}

/// Checks what `pf` names against facts its writer cannot forge: the process's identity
/// (pid, start time, boot), that it runs as us, runs the executable the guard recorded,
/// and runs `guard run --state` with this state.
pub fn check_pid_file(
    paths: &GuardPaths,
    pf: PidFile,
    proc_root: &Path,
) -> Result<Named, GuardError> {
    let boot = platform::boot_id(proc_root)?;
    if pf.boot_id != boot || platform::start_ticks(proc_root, pf.pid) != Some(pf.start_ticks) {
        return Ok(Named::Gone(pf));
    }
    let Some(p) = platform::read_one(proc_root, pf.pid).filter(|p| !p.is_zombie()) else {
        return Ok(Named::Gone(pf));
    };
    let me = rustix::process::geteuid().as_raw();
    let expected: [&[u8]; 4] = [
        b"guard",
        b"run",
        b"--state",
        paths.state.as_os_str().as_encoded_bytes(),
    ];
    let args: Vec<&[u8]> = p.argv.iter().skip(1).take(4).collect();
    let why = if p.uid != Some(me) {
        Some(format!(
            "pid {} runs as uid {}, not as us (uid {me})",
            pf.pid,
            p.uid.map_or_else(|| "unknown".into(), |u| u.to_string())
        ))
    } else if pf.exe.is_none() {
        Some("it does not record the guard's executable".into())
    } else if exe_of(proc_root, &pf.pid.to_string()) != pf.exe {
        Some(format!(
            "pid {} ({}) does not run the executable the guard recorded",
            pf.pid, p.comm
        ))
    } else if args != expected {
        Some(format!(
            "pid {} ({}) is not `guard run --state {}`",
            pf.pid,
            p.comm,
            paths.state.display()
        ))
    } else {
        None
    };
    Ok(match why {
        None => Named::Guard(pf),
        Some(why) => Named::Distrusted { pid_file: pf, why },
    })
}

/// The pid file, if it names a live guard of this state (see [`check_pid_file`]).
pub fn running(paths: &GuardPaths, proc_root: &Path) -> Result<Option<PidFile>, GuardError> {
    let Some(pf) = read_pid_file(paths)? else {
        return Ok(None);
    };
    Ok(match check_pid_file(paths, pf, proc_root)? {
        Named::Guard(pf) => Some(pf),
        _ => None,
    })
}

pub(super) fn read_pid_file(paths: &GuardPaths) -> Result<Option<PidFile>, GuardError> {
    let dir = paths.dir()?;
    match dir.read(&GuardPaths::name(&paths.pid), MAX_PID_FILE) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| GuardError::PidFile {
                path: paths.pid.clone(),
                detail: format!("it does not decode ({e})"),
            }),
        Err(e) if e.is_not_found() => Ok(None),
        Err(e) => Err(GuardError::PidFile {
            path: paths.pid.clone(),
            detail: e.to_string(),
        }),
    }
}

/// Writes the pid file atomically (temporary file, then rename).
pub fn write_pid_file(paths: &GuardPaths, pf: &PidFile) -> Result<(), GuardError> {
    let err = |source| GuardError::File {
        what: "write the guard's pid file",
        path: paths.pid.clone(),
        source,
    };
    let bytes = serde_json::to_vec(pf).map_err(|e| err(e.into()))?;
    paths
        .dir()?
        .replace(
            &GuardPaths::name(&paths.pid),
            &bytes,
            crate::files::PRIVATE,
            crate::files::Sync::Durable,
        )
        .map_err(|e| file_error("write the guard's pid file", e))
}

/// Removes the pid file, keeping what it said as the stopped guard's file: it is ours (read
/// from the private directory), and it names the guard whose journal records a later sweep
/// takes.
pub(super) fn remove_pid(paths: &GuardPaths) {
    if let Ok(dir) = paths.dir() {
        if let Ok(bytes) = dir.read(&GuardPaths::name(&paths.pid), MAX_PID_FILE) {
            let _ = dir.replace(
                &GuardPaths::name(&paths.stopped),
                &bytes,
                crate::files::PRIVATE,
                crate::files::Sync::Durable,
            );
        }
        let _ = dir.remove(&GuardPaths::name(&paths.pid));
    }
}

/// The pid file of the last guard that stopped (see [`remove_pid`]).
pub(super) fn read_stopped_file(paths: &GuardPaths) -> Option<PidFile> {
    let bytes = paths
        .dir()
        .ok()?
        .read(&GuardPaths::name(&paths.stopped), MAX_PID_FILE)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// Removes the pid file if it still names `id` (a newer guard's file is left alone).
pub fn remove_pid_file(paths: &GuardPaths, id: ProcessId) {
    if let Ok(Some(pf)) = read_pid_file(paths) {
        if pf.id() == id {
            remove_pid(paths);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn paths() -> (tempfile::TempDir, GuardPaths) {
        let tmp = tempfile::tempdir().unwrap();
        let paths = GuardPaths::for_state(&tmp.path().join("job.json"));
        (tmp, paths)
    }

    /// A pid file naming this test process, as the guard would write it of itself.
    fn of_self() -> PidFile {
        let proc_root = Path::new("/proc");
        let me = platform::self_id(proc_root).unwrap();
        PidFile {
            pid: me.pid,
            start_ticks: me.start_ticks,
            boot_id: platform::boot_id(proc_root).unwrap(),
            mode: Mode::Connector,
            detail: String::new(),
            degraded: vec![],
            root: None,
            watch: None,
            started_at_unix_ms: 0,
            exe: exe_of(proc_root, "self"),
        }
    }

    #[test]
    fn the_files_sit_beside_the_state_file() {
        let p = GuardPaths::for_state(Path::new("/x/y/job-7.json"));
        assert_eq!(p.pid, Path::new("/x/y/job-7.guard.pid"));
        assert_eq!(p.stopped, Path::new("/x/y/job-7.guard.stopped"));
        assert_eq!(p.journal, Path::new("/x/y/job-7.journal.jsonl"));
        assert_eq!(p.report_json, Path::new("/x/y/job-7.guard-report.json"));
        assert_eq!(GuardPaths::name(&p.lock), "job-7.guard.lock");
    }

    #[test]
    fn a_live_process_that_is_not_this_states_guard_is_distrusted() {
        // This test process is alive, ours and runs the recorded executable, but it is
        // not `guard run --state …`: never signalled.
        let (_tmp, paths) = paths();
        match check_pid_file(&paths, of_self(), Path::new("/proc")).unwrap() {
            Named::Distrusted { why, .. } => assert!(why.contains("is not `guard run"), "{why}"),
            other => panic!("expected distrust, got {other:?}"),
        }
        let unrecorded = PidFile {
            exe: None,
            ..of_self()
        };
        match check_pid_file(&paths, unrecorded, Path::new("/proc")).unwrap() {
            Named::Distrusted { why, .. } => assert!(why.contains("executable"), "{why}"),
            other => panic!("expected distrust, got {other:?}"),
        }
        let other_file = PidFile {
            exe: Some(FileId { dev: 0, ino: 1 }),
            ..of_self()
        };
        assert!(matches!(
            check_pid_file(&paths, other_file, Path::new("/proc")).unwrap(),
            Named::Distrusted { .. }
        ));
    }

    #[test]
    fn another_boot_or_start_time_names_nothing_alive() {
        let (_tmp, paths) = paths();
        let reused = PidFile {
            start_ticks: of_self().start_ticks + 1,
            ..of_self()
        };
        assert!(matches!(
            check_pid_file(&paths, reused, Path::new("/proc")).unwrap(),
            Named::Gone(_)
        ));
        let old_boot = PidFile {
            boot_id: "another-boot".into(),
            ..of_self()
        };
        assert!(matches!(
            check_pid_file(&paths, old_boot, Path::new("/proc")).unwrap(),
            Named::Gone(_)
        ));
    }

    #[test]
    fn removing_keeps_the_stopped_guards_file_and_spares_a_newer_guards() {
        let (_tmp, paths) = paths();
        assert_eq!(read_pid_file(&paths).unwrap(), None);
        let pf = of_self();
        write_pid_file(&paths, &pf).unwrap();
        assert_eq!(read_pid_file(&paths).unwrap(), Some(pf.clone()));
        // A file naming someone else is left alone.
        remove_pid_file(
            &paths,
            ProcessId {
                pid: pf.pid,
                start_ticks: pf.start_ticks + 1,
            },
        );
        assert!(read_pid_file(&paths).unwrap().is_some());
        remove_pid_file(&paths, pf.id());
        assert_eq!(read_pid_file(&paths).unwrap(), None);
        assert_eq!(read_stopped_file(&paths), Some(pf));
        // What does not decode is an error that names the file, never a guess.
        std::fs::write(&paths.pid, b"{not json").unwrap();
        let e = read_pid_file(&paths).unwrap_err().to_string();
        assert!(
            e.contains("guard.pid") && e.contains("does not decode"),
            "{e}"
        );
    }
}
