//! The state file: the baseline snapshot written by `snapshot` and read by `diff` and
//! `sweep`.
//!
//! A state file is an input that decides what gets killed, so reading it is strict: a
//! missing, truncated, corrupt, edited, wrong-version or wrong-boot file is refused with a
//! message that says what to do, never "repaired" into something that could make more
//! processes look new. The snapshot is sealed with its SHA-256 so that an edit (or a
//! half-written file) is detected.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use sha2::{Digest, Sha256};

use crate::model::{Snapshot, SCHEMA_VERSION};

/// What identifies our state files among other JSON.
const KIND: &str = "ci-janitor-state";

#[derive(Serialize, Deserialize)]
struct Envelope<'a> {
    kind: String,
    schema_version: u32,
    /// `sha256:` and the hex digest of the exact bytes of `snapshot`.
    snapshot_sha256: String,
    #[serde(borrow)]
    snapshot: &'a RawValue,
}

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error(
        "find a snapshot at {0}: there is none; run `ci-janitor snapshot` first (or pass \
         --state FILE)"
    )]
    Missing(PathBuf),
    #[error("read state file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "read the state file {path}: it is not a ci-janitor state file ({detail}); take a \
         new snapshot"
    )]
    Corrupt { path: PathBuf, detail: String },
    #[error(
        "read the state file {path}: it was written with schema version {found}, this \
         ci-janitor reads \
         version {SCHEMA_VERSION}; take the snapshot and the sweep with the same version"
    )]
    WrongVersion { path: PathBuf, found: u32 },
    #[error(
        "use the state file {path}: it does not match its checksum: it was edited or only partly \
         written; refusing to use it (take a new snapshot)"
    )]
    Tampered { path: PathBuf },
    #[error("use the state file {path}: it is inconsistent ({detail}); take a new snapshot")]
    Inconsistent { path: PathBuf, detail: String },
    #[error(
        "use the state file {path}: it was taken during another boot (boot id {found}, now \
         {now}); \
         every process is new since then, so it cannot tell what the job started"
    )]
    OtherBoot {
        path: PathBuf,
        found: String,
        now: String,
    },
    /// The file or its directory could be changed by someone else, or is not a regular
    /// file, or is too big: refused before anything was read or written.
    #[error(transparent)]
    Unsafe(crate::files::FileError),
    #[error("write state file {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn digest(bytes: &[u8]) -> String {
    let d = Sha256::digest(bytes);
    let mut hex = String::with_capacity(7 + 64);
    hex.push_str("sha256:");
    for b in d {
        hex.push_str(&format!("{b:02x}"));
    }
    hex
}

/// The largest state file read: 5,000 processes take about 5 MB.
pub const MAX_STATE_BYTES: u64 = 64 << 20;

/// Writes the snapshot atomically (temporary file, fsync, rename): a reader never sees a
/// half-written state file, and a crash leaves the old one or none. The directory must be
/// private (see [`crate::files`]); the file is created 0600 (it holds command lines).
pub fn save(path: &Path, snapshot: &Snapshot) -> Result<(), StateError> {
    let write_err = |source| StateError::Write {
        path: path.to_owned(),
        source,
    };
    let body = serde_json::to_string(snapshot).map_err(|e| write_err(e.into()))?;
    let raw = RawValue::from_string(body).map_err(|e| write_err(e.into()))?;
    let envelope = Envelope {
        kind: KIND.into(),
        schema_version: SCHEMA_VERSION,
        snapshot_sha256: digest(raw.get().as_bytes()),
        snapshot: &raw,
    };
    let bytes = serde_json::to_vec(&envelope).map_err(|e| write_err(e.into()))?;
    let on_write = |e: crate::files::FileError| {
        if e.is_refusal() {
            StateError::Unsafe(e)
        } else {
            write_err(e.into())
        }
    };
    let (dir, name) = crate::files::Dir::of(path).map_err(on_write)?;
    dir.replace(
        &name,
        &bytes,
        crate::files::PRIVATE,
        crate::files::Sync::Durable,
    )
    .map_err(on_write)
}

fn file_error(path: &Path) -> impl Fn(crate::files::FileError) -> StateError + '_ {
    move |e| {
        if e.is_refusal() {
            StateError::Unsafe(e)
        } else if e.is_not_found() {
            StateError::Missing(path.to_owned())
        } else {
            StateError::Read {
                path: path.to_owned(),
                source: e.into(),
            }
        }
    }
}

/// Reads and checks a state file written by [`save`]. `boot_id` is the current boot's.
///
/// The seal is a plain SHA-256 anyone who can write the file can recompute, so the one field
/// that decides what is new, the snapshot's start, is also bounded by a fact its writer
/// cannot forge: the file's change time (see [`bound_by_change_time`]). What that moved is
/// said in [`Snapshot::trust_notes`].
pub fn load(path: &Path, boot_id: &str) -> Result<Snapshot, StateError> {
    let (dir, name) = crate::files::Dir::of(path).map_err(file_error(path))?;
    let (bytes, st) = dir
        .read_with_stat(&name, MAX_STATE_BYTES)
        .map_err(file_error(path))?;
    let mut snapshot = decode(path, &bytes)?;
    if snapshot.machine.boot_id != boot_id {
        return Err(StateError::OtherBoot {
            path: path.to_owned(),
            found: snapshot.machine.boot_id,
            now: boot_id.to_owned(),
        });
    }
    let ns =
        |ts: rustix::time::Timespec| i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec);
    let changed = i128::from(st.st_ctime) * 1_000_000_000 + i128::from(st.st_ctime_nsec);
    let real_now = ns(rustix::time::clock_gettime(rustix::time::ClockId::Realtime));
    let boot_now = ns(rustix::time::clock_gettime(rustix::time::ClockId::Boottime));
    if let Some(note) = bound_by_change_time(&mut snapshot, changed - (real_now - boot_now)) {
        snapshot.trust_notes.push(note);
    }
    Ok(snapshot)
}

/// The longest a snapshot's reading is believed to take, whatever the file says (a
/// snapshot of 5,000 processes takes well under a second): the file's `duration_us` is
/// its writer's to choose.
pub const MAX_BELIEVED_READ_US: u64 = 2_000_000;
/// The time from the end of the reading to the file's last change: encoding, writing,
/// fsync, rename.
pub const WRITE_SLACK_US: u64 = 1_000_000;

/// Bounds the snapshot's start by the state file's change time, `changed_boot_ns` (on the
/// boot clock, nanoseconds). The kernel sets a file's change time on every write, rename
/// and chmod, and no one but root (by setting the clock) can set it back. A genuine
/// snapshot began at most [`MAX_BELIEVED_READ_US`] + [`WRITE_SLACK_US`] before its file
/// was last changed, so a process older than that cannot have appeared since the
/// snapshot, whatever the file says. An edit only moves the change time later, which
/// narrows. Returns what was moved, for the report.
pub fn bound_by_change_time(s: &mut Snapshot, changed_boot_ns: i128) -> Option<String> {
    let hz = i128::from(s.machine.clock_ticks_per_second.max(1));
    let read_ns = i128::from(s.duration_us.min(MAX_BELIEVED_READ_US)) * 1000;
    let earliest_ns = changed_boot_ns - read_ns - i128::from(WRITE_SLACK_US) * 1000;
    let earliest = u64::try_from(earliest_ns.max(0) * hz / 1_000_000_000).unwrap_or(u64::MAX);
    if s.taken_at_boot_ticks >= earliest {
        return None;
    }
    let note = format!(
        "the state says its snapshot began at tick {}, but the file was last changed at tick \
         {}: processes started before tick {earliest} are taken as older than the snapshot \
         (the state was edited, copied or touched after it was written)",
        s.taken_at_boot_ticks,
        u64::try_from(changed_boot_ns.max(0) * hz / 1_000_000_000).unwrap_or(u64::MAX),
    );
    s.taken_at_boot_ticks = earliest;
    Some(note)
}

/// Decodes and checks the bytes of a state file (everything [`load`] does but the boot).
pub fn decode(path: &Path, bytes: &[u8]) -> Result<Snapshot, StateError> {
    let corrupt = |detail: String| StateError::Corrupt {
        path: path.to_owned(),
        detail,
    };
    // Read the version first, so a newer file is reported as such, not as corrupt.
    #[derive(Deserialize)]
    struct Probe {
        kind: Option<String>,
        schema_version: Option<u32>,
    }
    let probe: Probe =
        serde_json::from_slice(bytes).map_err(|e| corrupt(format!("invalid JSON: {e}")))?;
    if probe.kind.as_deref() != Some(KIND) {
        return Err(corrupt("no `kind: ci-janitor-state`".into()));
    }
    match probe.schema_version {
        Some(SCHEMA_VERSION) => {}
        Some(found) => {
            return Err(StateError::WrongVersion {
                path: path.to_owned(),
                found,
            })
        }
        None => return Err(corrupt("no schema_version".into())),
    }
    let envelope: Envelope<'_> =
        serde_json::from_slice(bytes).map_err(|e| corrupt(e.to_string()))?;
    if digest(envelope.snapshot.get().as_bytes()) != envelope.snapshot_sha256 {
        return Err(StateError::Tampered {
            path: path.to_owned(),
        });
    }
    let snapshot: Snapshot = serde_json::from_str(envelope.snapshot.get())
        .map_err(|e| corrupt(format!("snapshot: {e}")))?;
    check_consistent(&snapshot).map_err(|detail| StateError::Inconsistent {
        path: path.to_owned(),
        detail,
    })?;
    Ok(snapshot)
}

/// Checks that cannot be faked by editing one field: every baseline process started before
/// the snapshot was finished, and the versions agree. A process may start while the
/// snapshot reads `/proc` (after `taken_at_boot_ticks`, which is when reading began) and
/// still be listed; it may not start after the reading ended.
fn check_consistent(s: &Snapshot) -> Result<(), String> {
    if s.schema_version != SCHEMA_VERSION {
        return Err(format!(
            "the snapshot says schema version {}, its envelope {SCHEMA_VERSION}",
            s.schema_version
        ));
    }
    let hz = s.machine.clock_ticks_per_second.max(1);
    // The reading's duration in ticks, rounded up, plus one tick for the rounding down of
    // both ends.
    let read_ticks = (s.duration_us.saturating_mul(hz)).div_ceil(1_000_000) + 1;
    let finished = s.taken_at_boot_ticks.saturating_add(read_ticks);
    if let Some(p) = s.processes.iter().find(|p| p.id.start_ticks > finished) {
        return Err(format!(
            "process {} started at tick {}, after the snapshot ended at tick {finished}",
            p.id.pid, p.id.start_ticks
        ));
    }
    if s.processes.is_empty() {
        return Err("it lists no processes".into());
    }
    Ok(())
}

/// Where the state lives when `--state` is not given: `$RUNNER_TEMP/ci-janitor/state.json`
/// under Actions, else `$XDG_RUNTIME_DIR/ci-janitor/state.json`, else a per-user directory
/// under the system temp dir.
pub fn default_path(env: impl Fn(&str) -> Option<String>) -> PathBuf {
    let base = env("RUNNER_TEMP")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            env("XDG_RUNTIME_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from)
        })
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("ci-janitor-{}", rustix::process::getuid().as_raw()))
        });
    base.join("ci-janitor").join("state.json")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{proc_at, snapshot_of};

    fn sample() -> Snapshot {
        let mut init = proc_at(1, 0, 500);
        init.comm = "init".into();
        init.argv = [].into();
        let mut s = snapshot_of(vec![init], 1000);
        s.tool_version = "0.0.0".into();
        s.taken_at_unix_ms = 1;
        s.duration_us = 5;
        s.machine.boot_id = "boot-a".into();
        s.machine.boot_time_unix = None;
        s
    }

    #[test]
    fn the_file_change_time_bounds_the_snapshot_time() {
        // A snapshot of 5 us that says it began at tick 1000, in a file last changed at
        // 20 s (tick 2000): it began no earlier than 20 s less its reading and 1 s of writing.
        let mut s = sample();
        let note = bound_by_change_time(&mut s, 20_000_000_000).unwrap();
        assert_eq!(s.taken_at_boot_ticks, 1899, "rounded down");
        assert!(note.contains("began at tick 1000"), "{note}");
        // A forged reading of an hour believes at most 2 s of it.
        let mut s = sample();
        s.duration_us = 3_600_000_000;
        bound_by_change_time(&mut s, 20_000_000_000).unwrap();
        assert_eq!(s.taken_at_boot_ticks, 1700);
        // A file written right after its snapshot is left as it is.
        let mut s = sample();
        assert!(bound_by_change_time(&mut s, 10_000_100_000).is_none());
        assert_eq!(s.taken_at_boot_ticks, 1000);
    }

    #[test]
    fn round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/state.json");
        // Taken now: the file's change time does not move it (see the test below).
        let mut sample = sample();
        sample.taken_at_boot_ticks = crate::platform::boot_ticks_now(100);
        save(&path, &sample).unwrap();
        assert_eq!(load(&path, "boot-a").unwrap(), sample);
        // No temporary file is left behind.
        let names: Vec<_> = std::fs::read_dir(dir.path().join("sub"))
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec!["state.json"]);
    }

    /// A state file as the versions before the compact marker set wrote it: a process with
    /// every marker and inherited ones, one with a single marker, one with none, and the
    /// job's markers. It reads, and writes back byte for byte.
    #[test]
    fn an_older_state_file_reads_and_writes_back_the_same() {
        let snapshot = concat!(
            r#"{"schema_version":2,"tool_version":"0.1.0","taken_at_unix_ms":1,"#,
            r#""taken_at_boot_ticks":1000,"duration_us":5,"machine":{"boot_id":"boot-a","#,
            r#""clock_ticks_per_second":100,"uid":0,"is_root":true,"cpus":2},"processes":["#,
            r#"{"id":{"pid":1,"start_ticks":500},"ppid":0,"pgid":1,"sid":1,"uid":0,"#,
            r#""state":"S","comm":"init","argv":[],"threads":1,"details":false},"#,
            r#"{"id":{"pid":40,"start_ticks":900},"ppid":1,"pgid":40,"sid":40,"uid":1001,"#,
            r#""state":"S","comm":"uvicorn","exe":"/usr/bin/python3","#,
            r#""argv":["python3","-m","uvicorn",{"hex":"ff01"}],"cwd":"/work","#,
            r#""cgroup":"/job.scope","threads":3,"details":true,"markers":{"#,
            r#""runner_tracking_id":"github_1","github_run_id":"18342210457","#,
            r#""github_job":"test","github_action":"__run_2","#,
            r#""pytest_current_test":"t.py::test_a (call)","pytest_xdist_worker":"gw0","#,
            r#""ci_janitor_run":"run-1-2:snap-3","vsts_process_lookup_id":"vsts_1","#,
            r#""jenkins_node_cookie":"dontKillMe","ci_job_id":"41","#,
            r#""buildkite_job_id":"bk-1","inherited":["GITHUB_ACTION","PYTEST_CURRENT_TEST"]},"#,
            r#""unreadable":["exe: permission denied"]},"#,
            r#"{"id":{"pid":41,"start_ticks":901},"ppid":40,"pgid":40,"sid":40,"#,
            r#""state":"Z","comm":"sh","argv":[],"threads":1,"details":true,"#,
            r#""markers":{"ci_job_id":"41"}}],"#,
            r#""listeners":[],"unreadable":[],"taken_by":{"pid":30,"start_ticks":800},"#,
            r#""job":{"markers":{"runner_tracking_id":"github_1","ci_janitor_run":"snap-3"}}}"#
        );
        let file = format!(
            r#"{{"kind":"{KIND}","schema_version":{SCHEMA_VERSION},"snapshot_sha256":"{}","snapshot":{snapshot}}}"#,
            digest(snapshot.as_bytes())
        );
        let s = decode(Path::new("old.json"), file.as_bytes()).unwrap();
        assert_eq!(serde_json::to_string(&s).unwrap(), snapshot);
        let m = &s.processes[1].markers;
        assert_eq!(m.runner_tracking_id(), Some("github_1"));
        assert_eq!(m.buildkite_job_id(), Some("bk-1"));
        assert_eq!(m.inherited, vec!["GITHUB_ACTION", "PYTEST_CURRENT_TEST"]);
        assert_eq!(s.processes[2].markers.ci_job_id(), Some("41"));
        assert_eq!(s.processes[2].markers.runner_tracking_id(), None);
        assert!(s.processes[0].markers.is_empty());
        // And through a file: saved, the same snapshot again.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        save(&path, &s).unwrap();
        let again = decode(&path, &std::fs::read(&path).unwrap()).unwrap();
        assert_eq!(again, s);
        assert_eq!(serde_json::to_string(&again).unwrap(), snapshot);
        // An argument holding a NUL byte, which no kernel gives and no version wrote from
        // /proc (earlier versions read it back; this one refuses the file, and a refused
        // state file kills nothing).
        let forged = snapshot.replace(r#"{"hex":"ff01"}"#, r#"{"hex":"ff00"}"#);
        let file = format!(
            r#"{{"kind":"{KIND}","schema_version":{SCHEMA_VERSION},"snapshot_sha256":"{}","snapshot":{forged}}}"#,
            digest(forged.as_bytes())
        );
        match decode(Path::new("old.json"), file.as_bytes()) {
            Err(StateError::Corrupt { detail, .. }) => {
                assert!(detail.contains("NUL byte"), "{detail}")
            }
            other => panic!("a NUL inside an argument was read: {other:?}"),
        }
    }

    #[test]
    fn refusals() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        assert!(matches!(load(&path, "boot-a"), Err(StateError::Missing(_))));

        save(&path, &sample()).unwrap();
        assert!(matches!(
            load(&path, "boot-b"),
            Err(StateError::OtherBoot { .. })
        ));

        let good = std::fs::read(&path).unwrap();
        let check = |bytes: &[u8]| decode(&path, bytes).unwrap_err();
        // Truncated at every length: always an error, never a panic.
        for cut in 0..good.len() {
            let _ = check(&good[..cut]);
        }
        assert!(matches!(check(b""), StateError::Corrupt { .. }));
        assert!(matches!(check(b"{\"a\":1}"), StateError::Corrupt { .. }));
        let text = String::from_utf8(good.clone()).unwrap();
        let future = text.replacen("\"schema_version\":2", "\"schema_version\":99", 1);
        assert!(matches!(
            check(future.as_bytes()),
            StateError::WrongVersion { found: 99, .. }
        ));
        // Dropping the baseline's only process would make it look new: detected.
        let edited = text.replace("\"comm\":\"init\"", "\"comm\":\"tini\"");
        assert!(matches!(
            check(edited.as_bytes()),
            StateError::Tampered { .. }
        ));
    }

    #[test]
    fn a_process_born_during_the_read_is_consistent() {
        // Regression: a process started while /proc was being read is listed with a start
        // time after `taken_at_boot_ticks`; that is not an inconsistency.
        let mut s = sample();
        s.duration_us = 20_000; // 2 ticks at 100 Hz
        s.processes[0].id.start_ticks = s.taken_at_boot_ticks + 2;
        assert!(check_consistent(&s).is_ok());
        s.processes[0].id.start_ticks = s.taken_at_boot_ticks + 4;
        assert!(check_consistent(&s).is_err());
    }

    #[test]
    fn resealed_but_inconsistent_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut s = sample();
        // Someone moved the snapshot time back to make everything "new" and re-sealed it.
        s.taken_at_boot_ticks = 0;
        save(&path, &s).unwrap();
        assert!(matches!(
            load(&path, "boot-a"),
            Err(StateError::Inconsistent { .. })
        ));
    }

    #[test]
    fn default_paths() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            default_path(env(&[("RUNNER_TEMP", "/rt"), ("XDG_RUNTIME_DIR", "/x")])),
            PathBuf::from("/rt/ci-janitor/state.json")
        );
        assert_eq!(
            default_path(env(&[("XDG_RUNTIME_DIR", "/x")])),
            PathBuf::from("/x/ci-janitor/state.json")
        );
        assert!(default_path(env(&[])).ends_with("ci-janitor/state.json"));
    }

    /// Property tests of the state parser: truncation and bit flips are refused or change
    /// nothing; a resealed edit (the seal is a plain SHA-256) never makes a process older
    /// than the file's change time, less a believed reading and write, new; nothing panics.
    mod props {
        use super::*;
        use proptest::prelude::*;

        /// A state file as `save` writes it (once: each save is fsynced).
        fn genuine() -> Vec<u8> {
            static BYTES: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
            BYTES
                .get_or_init(|| {
                    let dir = tempfile::tempdir().unwrap();
                    let path = dir.path().join("state.json");
                    save(&path, &sample()).unwrap();
                    std::fs::read(&path).unwrap()
                })
                .clone()
        }

        fn resealed(snapshot: &serde_json::Value) -> Vec<u8> {
            let body = serde_json::to_string(snapshot).unwrap();
            format!(
                r#"{{"kind":"{KIND}","schema_version":{SCHEMA_VERSION},"snapshot_sha256":"{}","snapshot":{body}}}"#,
                digest(body.as_bytes())
            )
            .into_bytes()
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn truncation_is_refused(cut in 0usize..4000) {
                let bytes = genuine();
                let cut = cut.min(bytes.len());
                let r = decode(Path::new("s"), &bytes[..cut]);
                prop_assert!(cut == bytes.len() || r.is_err());
            }

            #[test]
            fn bit_flips_are_refused_or_change_nothing(
                flips in proptest::collection::vec((0usize..4000, 0u8..8), 1..6)
            ) {
                let mut bytes = genuine();
                let n = bytes.len();
                for (at, bit) in flips {
                    bytes[at % n] ^= 1 << bit;
                }
                if let Ok(s) = decode(Path::new("s"), &bytes) {
                    // Only bytes outside the sealed snapshot (whitespace-insensitive JSON
                    // around it) can change without a refusal.
                    prop_assert_eq!(s, sample());
                }
            }

            #[test]
            fn a_resealed_edit_never_reaches_before_the_change_time(
                taken in 0u64..100_000,
                duration_us in 0u64..u64::MAX / 2,
                start in proptest::option::of(0u64..100_000),
                changed_ticks in 0u64..100_000,
            ) {
                let mut v = serde_json::to_value(sample()).unwrap();
                v["taken_at_boot_ticks"] = taken.into();
                v["duration_us"] = duration_us.into();
                if let Some(t) = start {
                    v["processes"][0]["id"]["start_ticks"] = t.into();
                }
                let changed_ns = i128::from(changed_ticks) * 10_000_000;
                if let Ok(mut s) = decode(Path::new("s"), &resealed(&v)) {
                    bound_by_change_time(&mut s, changed_ns);
                    let believed_ticks = (MAX_BELIEVED_READ_US + WRITE_SLACK_US) / 10_000;
                    prop_assert!(
                        s.taken_at_boot_ticks + believed_ticks + 1 >= changed_ticks,
                        "{} vs {changed_ticks}", s.taken_at_boot_ticks
                    );
                }
            }
        }
    }
}
