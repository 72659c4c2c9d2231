//! The guard's journal: one JSON object per line, appended beside the state file and
//! flushed after every batch of events, so that what the guard learned survives the guard
//! (a crash, a SIGKILL) and is read by `sweep`.
//!
//! This is a wire format, versioned by [`JOURNAL_SCHEMA_VERSION`] in each `start` record:
//! a reader skips the records of a guard whose version it does not know rather than guess.
//! Only processes of the job are journaled (born below the job's root); the rest of the
//! machine is tracked in the guard's memory only.
//!
//! A journal is read leniently but never generously: a torn last line (the guard died
//! mid-write) or a garbled line is counted and skipped; nothing is inferred from it.

use std::fs::File;
use std::io::{self, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::model::{Argv, Markers, ProcessId};

pub const JOURNAL_SCHEMA_VERSION: u32 = 1;

/// How the guard learns of processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Mode {
    /// Every fork, exec and exit, from the netlink proc connector.
    Connector,
    /// Scans of `/proc` at an adaptive interval: processes that live shorter than the
    /// interval are missed, and a parent that exits before its child is seen is lost.
    Polling,
}

impl Mode {
    pub fn describe(self) -> &'static str {
        match self {
            Mode::Connector => "netlink proc connector (every fork, exec and exit)",
            Mode::Polling => {
                "polling /proc (weaker: processes shorter-lived than the interval are missed)"
            }
        }
    }
}

/// How a birth was learned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Via {
    /// A fork event.
    Fork,
    /// A child's event arrived before its own fork event; read from `/proc`.
    Early,
    /// A scan of `/proc` (polling, or a rescan after the kernel dropped events).
    Scan,
    /// It exec'd carrying the job's identity marker, its parent not being the job's (a
    /// step started by a long-lived agent).
    Marker,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Record {
    Start(Start),
    /// A job process alive when the guard started (and the job's root).
    Seed(Seed),
    Birth(Birth),
    Exec(Exec),
    Exit(Exit),
    Warning(Warning),
    /// The kernel dropped events (ENOBUFS).
    Lost(Lost),
    /// Something makes the guard's view partial.
    Degraded(Degraded),
    Stop(Stop),
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Start {
    pub schema_version: u32,
    pub tool_version: String,
    pub boot_id: String,
    pub at_unix_ms: u64,
    pub guard: ProcessId,
    /// The job's root: its descendants at birth are the job's. Also the watched process.
    pub root: Option<ProcessId>,
    pub mode: Mode,
    /// Mode details: receive buffer, kernel filter, polling interval.
    pub detail: String,
    pub warn_over: usize,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Seed {
    pub id: ProcessId,
    pub ppid: i32,
    pub in_job: bool,
    #[serde(default, skip_serializing_if = "Argv::is_empty")]
    pub argv: Argv,
    #[serde(default, skip_serializing_if = "Markers::is_empty")]
    pub markers: Markers,
}

/// The identity of a parent: its start time is unknown when the parent was itself a gap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parent {
    pub pid: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Birth {
    pub pid: i32,
    /// `None`: the process was gone (or its pid reused) before its start time could be
    /// read; its lineage is still recorded for the children it had (see `gap`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<u64>,
    pub parent: Parent,
    /// Ancestors at birth, nearest first, up to the job's root (at most 32).
    pub chain: Vec<i32>,
    pub in_job: bool,
    /// The job markers it carries: its parent's at birth (all inherited until it execs).
    #[serde(default, skip_serializing_if = "Markers::is_empty")]
    pub markers: Markers,
    pub via: Via,
    /// Why the identity or the parent is uncertain.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<String>,
    /// Microseconds since the guard started.
    pub t_us: u64,
}

impl Birth {
    pub fn id(&self) -> Option<ProcessId> {
        self.start_ticks.map(|start_ticks| ProcessId {
            pid: self.pid,
            start_ticks,
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exec {
    pub id: ProcessId,
    pub argv: Argv,
    pub in_job: bool,
    /// Its own markers, completed by its parent's where its environment lacks them (those
    /// are listed in `markers.inherited`).
    #[serde(default, skip_serializing_if = "Markers::is_empty")]
    pub markers: Markers,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub unreadable: Vec<String>,
    pub t_us: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exit {
    pub pid: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<u64>,
    pub t_us: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lost {
    /// `ENOBUFS` errors seen (each is one or more dropped events).
    pub overruns: u32,
    /// Processes found by the rescan that followed.
    pub found_by_rescan: usize,
    pub t_us: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Degraded {
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stop {
    pub at_unix_ms: u64,
    /// `stopped` (SIGTERM, `guard stop`, a sweep), `watch-exited` (the dead man's switch).
    pub reason: String,
    pub births: u64,
    pub execs: u64,
    pub exits: u64,
    pub gaps: u64,
    pub overruns: u64,
    /// Execs of job processes that were gone before they could be read.
    #[serde(default)]
    pub exec_misses: u64,
    /// Events handled (connector), the rest of the machine's included.
    #[serde(default)]
    pub events: u64,
}

/// A live warning: written when it happens, shown by `guard status` and `sweep`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "warning", rename_all = "kebab-case")]
pub enum Warning {
    /// A step's process exited while processes it started lived on.
    StepEndedWithLiveDescendants {
        step: String,
        process: ProcessId,
        command: String,
        live: usize,
        examples: Vec<Example>,
        t_us: u64,
    },
    /// More than `over` live job processes share one command-line signature.
    ManyAlike {
        signature: String,
        live: usize,
        over: usize,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        test: Option<String>,
        examples: Vec<Example>,
        t_us: u64,
    },
    /// A job process exited while a process it started still holds the pipe that was its
    /// stdout or stderr, and that pipe still has a reader (see [`super::pipes`]).
    PipeHolder {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        step: Option<String>,
        process: ProcessId,
        command: String,
        /// `stdout`, `stderr`, or `stdout and stderr`.
        stream: String,
        pipe: u64,
        holder: Example,
        /// The holder's parent at birth.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        started_by: Option<Example>,
        /// When the holder was born (ms since the epoch).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since_unix_ms: Option<u64>,
        t_us: u64,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Example {
    pub pid: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_ticks: Option<u64>,
    pub command: String,
}

impl Warning {
    /// One line for people (the guard's log, `guard status`, a sweep), redacted: a journal
    /// written by an older guard may hold a command line as it was.
    pub fn describe(&self) -> String {
        crate::redact::redact_text(&self.describe_raw(), &mut crate::redact::Secrets::default())
    }

    fn describe_raw(&self) -> String {
        let examples = |ex: &[Example]| {
            ex.iter()
                .map(|e| format!("{} `{}`", e.pid, e.command))
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            Warning::StepEndedWithLiveDescendants {
                step,
                process,
                command,
                live,
                examples: ex,
                ..
            } => format!(
                "step `{step}` ended (pid {}, `{command}`) while {live} process{} it started \
                 lived on: {}",
                process.pid,
                if *live == 1 { "" } else { "es" },
                examples(ex)
            ),
            Warning::ManyAlike {
                signature,
                live,
                over,
                step,
                test,
                examples: ex,
                ..
            } => {
                let mut s = format!(
                    "{live} live processes share the command line `{signature}` (more than \
                     {over})"
                );
                if let Some(step) = step {
                    s.push_str(&format!(", from step `{step}`"));
                }
                if let Some(test) = test {
                    s.push_str(&format!(", test `{test}`"));
                }
                s.push_str(&format!(": {}", examples(ex)));
                s
            }
            Warning::PipeHolder {
                step,
                process,
                command,
                stream,
                pipe,
                holder,
                started_by,
                since_unix_ms,
                ..
            } => format!(
                "{} (pid {}{}) exited while pid {} `{}`, started by {}{}, still holds \
                 its {stream} (pipe:[{pipe}]), which is still read: its reader waits for \
                 end-of-file until pid {} exits",
                match step {
                    Some(s) => format!("step `{s}`"),
                    None => "a job process".into(),
                },
                process.pid,
                if command.is_empty() {
                    String::new()
                } else {
                    format!(", `{command}`")
                },
                holder.pid,
                holder.command,
                match started_by {
                    Some(p) if p.command.is_empty() => format!("pid {}", p.pid),
                    Some(p) => format!("pid {} `{}`", p.pid, p.command),
                    None => "an unknown parent".into(),
                },
                since_unix_ms
                    .map(|ms| format!(" at {}", crate::guard::pipes::clock_time(ms)))
                    .unwrap_or_default(),
                holder.pid
            ),
        }
    }
}

/// Appends records to a journal file.
#[derive(Debug)]
pub struct Writer {
    out: BufWriter<File>,
}

impl Writer {
    /// Opens `path` for appending (creating it, mode 0600, in a private directory: see
    /// [`crate::files`]). A torn last line left by a guard that died mid-write is ended
    /// first, so it stays one bad line and does not swallow the next record.
    pub fn open(path: &Path) -> io::Result<Writer> {
        let (dir, name) = crate::files::Dir::of(path)?;
        let mut file = dir.append_rw(&name, crate::files::PRIVATE)?;
        let len = file.metadata()?.len();
        if len > 0 {
            file.seek(SeekFrom::Start(len - 1))?;
            let mut last = [0u8; 1];
            file.read_exact(&mut last)?;
            if last[0] != b'\n' {
                file.write_all(b"\n")?;
            }
        }
        Ok(Writer {
            out: BufWriter::with_capacity(64 * 1024, file),
        })
    }

    /// Buffers one record, its command lines redacted (see [`redacted`]); [`Writer::flush`]
    /// writes the buffer out.
    pub fn write(&mut self, record: &Record) -> io::Result<()> {
        match record {
            // The records of every job process, written by hand: no command line to
            // redact, and the same bytes serde_json writes (a test holds them equal).
            Record::Birth(b) => write_birth(&mut self.out, b)?,
            Record::Exit(e) => write_exit(&mut self.out, e)?,
            // Redacted without a copy of the rest of the record.
            Record::Exec(e) => {
                let argv = crate::redact::redact_argv(&e.argv, &mut Default::default());
                serde_json::to_writer(&mut self.out, &ExecOut { e, argv: &argv })?
            }
            _ => match redacted(record) {
                Some(r) => serde_json::to_writer(&mut self.out, &r)?,
                None => serde_json::to_writer(&mut self.out, record)?,
            },
        }
        self.out.write_all(b"\n")
    }

    /// Whether records wait in the buffer.
    pub fn pending(&self) -> bool {
        !self.out.buffer().is_empty()
    }

    /// Hands everything buffered to the kernel: from then on it survives our death (the
    /// page cache outlives the process; only a machine crash could lose it).
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// An exec record as [`Record::Exec`] serialises, with another argv (the redacted one).
struct ExecOut<'a> {
    e: &'a Exec,
    argv: &'a Argv,
}

impl Serialize for ExecOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let e = self.e;
        let mut m = s.serialize_map(None)?;
        m.serialize_entry("kind", "exec")?;
        m.serialize_entry("id", &e.id)?;
        m.serialize_entry("argv", self.argv)?;
        m.serialize_entry("in_job", &e.in_job)?;
        if !e.markers.is_empty() {
            m.serialize_entry("markers", &e.markers)?;
        }
        if !e.unreadable.is_empty() {
            m.serialize_entry("unreadable", &e.unreadable)?;
        }
        m.serialize_entry("t_us", &e.t_us)?;
        m.end()
    }
}

fn via_name(via: Via) -> &'static str {
    match via {
        Via::Fork => "fork",
        Via::Early => "early",
        Via::Scan => "scan",
        Via::Marker => "marker",
    }
}

/// A birth record's line (without its newline), as serde_json writes it.
fn write_birth(out: &mut impl Write, b: &Birth) -> io::Result<()> {
    write!(out, r#"{{"kind":"birth","pid":{}"#, b.pid)?;
    if let Some(t) = b.start_ticks {
        write!(out, r#","start_ticks":{t}"#)?;
    }
    write!(out, r#","parent":{{"pid":{}"#, b.parent.pid)?;
    if let Some(t) = b.parent.start_ticks {
        write!(out, r#","start_ticks":{t}"#)?;
    }
    out.write_all(br#"},"chain":["#)?;
    for (i, pid) in b.chain.iter().enumerate() {
        if i > 0 {
            out.write_all(b",")?;
        }
        write!(out, "{pid}")?;
    }
    write!(out, r#"],"in_job":{}"#, b.in_job)?;
    if !b.markers.is_empty() {
        out.write_all(br#","markers":"#)?;
        serde_json::to_writer(&mut *out, &b.markers)?;
    }
    write!(out, r#","via":"{}""#, via_name(b.via))?;
    if let Some(gap) = &b.gap {
        out.write_all(br#","gap":"#)?;
        serde_json::to_writer(&mut *out, gap)?;
    }
    write!(out, r#","t_us":{}}}"#, b.t_us)
}

/// An exit record's line (without its newline), as serde_json writes it.
fn write_exit(out: &mut impl Write, e: &Exit) -> io::Result<()> {
    write!(out, r#"{{"kind":"exit","pid":{}"#, e.pid)?;
    if let Some(t) = e.start_ticks {
        write!(out, r#","start_ticks":{t}"#)?;
    }
    write!(out, r#","t_us":{}}}"#, e.t_us)
}

/// `record` with the secrets in its command lines replaced (see [`crate::redact`]), or
/// `None` when it holds no command line. Nothing unredacted reaches the disk; the guard's
/// attribution works on identities, never on these texts.
pub fn redacted(record: &Record) -> Option<Record> {
    use crate::redact::{redact_argv, redact_text, Secrets};
    let mut s = Secrets::default();
    let mut text = |t: &mut String| *t = redact_text(t, &mut s);
    Some(match record {
        Record::Exec(e) => {
            let mut e = e.clone();
            e.argv = redact_argv(&e.argv, &mut s);
            Record::Exec(e)
        }
        Record::Seed(seed) if !seed.argv.is_empty() => {
            let mut seed = seed.clone();
            seed.argv = redact_argv(&seed.argv, &mut s);
            Record::Seed(seed)
        }
        Record::Warning(w) => {
            let mut w = w.clone();
            match &mut w {
                Warning::StepEndedWithLiveDescendants {
                    command, examples, ..
                } => {
                    text(command);
                    examples.iter_mut().for_each(|e| text(&mut e.command));
                }
                Warning::ManyAlike {
                    signature,
                    examples,
                    ..
                } => {
                    text(signature);
                    examples.iter_mut().for_each(|e| text(&mut e.command));
                }
                Warning::PipeHolder {
                    command,
                    holder,
                    started_by,
                    ..
                } => {
                    text(command);
                    text(&mut holder.command);
                    if let Some(p) = started_by {
                        text(&mut p.command);
                    }
                }
            }
            Record::Warning(w)
        }
        _ => return None,
    })
}

/// A journal as read back.
#[derive(Debug, Clone, Default)]
pub struct Journal {
    pub records: Vec<Record>,
    /// Lines that did not decode (garbled, or of a newer version), the torn tail included.
    pub bad_lines: usize,
    /// The last line had no newline: the guard died while writing it.
    pub torn_tail: bool,
    /// Records skipped because their guard wrote a schema version we do not know.
    pub skipped_other_version: usize,
    /// Bytes left unread: beyond [`MAX_JOURNAL_BYTES`], or not parsed before the time the
    /// sweep gave the read ran out (see [`read_until`]).
    pub unread_bytes: u64,
    /// Why bytes were left unread.
    pub cut: Option<Cut>,
}

/// Why a journal was read only in part.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cut {
    /// It is larger than [`MAX_JOURNAL_BYTES`]: only its head was read.
    Size,
    /// Parsing it would have taken longer than the sweep's deadline allows.
    Time,
}

impl Journal {
    /// What a partial read left out, for the report.
    pub fn describe_cut(&self) -> Option<String> {
        let why = match self.cut? {
            Cut::Size => format!("it is larger than {} MiB", MAX_JOURNAL_BYTES >> 20),
            Cut::Time => "the sweep's deadline left no more time to parse it".to_owned(),
        };
        Some(format!(
            "{} byte(s) at its end were not read ({why}): processes born in them have no \
             guard lineage",
            self.unread_bytes
        ))
    }
}

/// The largest journal read: a day-long job with a busy test suite writes tens of MB.
pub const MAX_JOURNAL_BYTES: u64 = 256 << 20;

/// Reads a journal (a regular file of ours in a private directory, at most
/// [`MAX_JOURNAL_BYTES`]); `Ok(None)` when there is none.
pub fn read(path: &Path) -> io::Result<Option<Journal>> {
    let (dir, name) = crate::files::Dir::of(path)?;
    let bytes = match dir.read(&name, MAX_JOURNAL_BYTES) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    Ok(Some(parse(&bytes)))
}

/// Reads a journal like [`read`], bounded by size and time: at most the first
/// [`MAX_JOURNAL_BYTES`] (up to their last whole line), parsed only until `until`; what was
/// left unread is counted in [`Journal::unread_bytes`]. A sweep's deadline covers this read.
pub fn read_until(path: &Path, until: std::time::Instant) -> io::Result<Option<Journal>> {
    let (dir, name) = crate::files::Dir::of(path)?;
    let (mut bytes, size) = match dir.read_head(&name, MAX_JOURNAL_BYTES) {
        Ok(b) => b,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut cut = None;
    if size > bytes.len() as u64 {
        // Only whole lines: the cut line is not a torn one.
        let keep = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        bytes.truncate(keep);
        cut = Some(Cut::Size);
    }
    let mut j = parse_until(&bytes, Some(until));
    j.unread_bytes += size.saturating_sub(bytes.len() as u64);
    if j.cut.is_none() {
        j.cut = cut;
    }
    Ok(Some(j))
}

/// Decodes journal bytes, line by line.
pub fn parse(bytes: &[u8]) -> Journal {
    parse_until(bytes, None)
}

/// How many lines are parsed between two looks at the clock.
const LINES_PER_CLOCK_CHECK: usize = 1024;

/// [`parse`], stopping at `until` (the rest counted as unread).
pub fn parse_until(bytes: &[u8], until: Option<std::time::Instant>) -> Journal {
    let mut j = Journal {
        torn_tail: !bytes.is_empty() && !bytes.ends_with(b"\n"),
        ..Journal::default()
    };
    let mut known_version = true;
    let mut offset = 0usize;
    for (n, line) in bytes.split(|&b| b == b'\n').enumerate() {
        if n % LINES_PER_CLOCK_CHECK == LINES_PER_CLOCK_CHECK - 1
            && until.is_some_and(|u| std::time::Instant::now() >= u)
        {
            j.unread_bytes = (bytes.len() - offset) as u64;
            j.cut = Some(Cut::Time);
            // The torn tail, if any, was not read either.
            j.torn_tail = false;
            break;
        }
        offset = (offset + line.len() + 1).min(bytes.len());
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Record>(line) {
            Ok(Record::Start(s)) => {
                known_version = s.schema_version == JOURNAL_SCHEMA_VERSION;
                if known_version {
                    j.records.push(Record::Start(s));
                } else {
                    j.skipped_other_version += 1;
                }
            }
            Ok(r) if known_version => j.records.push(r),
            Ok(_) => j.skipped_other_version += 1,
            Err(_) => j.bad_lines += 1,
        }
    }
    j
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::id;

    fn start() -> Record {
        Record::Start(Start {
            schema_version: JOURNAL_SCHEMA_VERSION,
            tool_version: "t".into(),
            boot_id: "b".into(),
            at_unix_ms: 1,
            guard: id(5, 1),
            root: Some(id(2, 1)),
            mode: Mode::Connector,
            detail: String::new(),
            warn_over: 20,
        })
    }

    fn birth(pid: i32) -> Record {
        Record::Birth(Birth {
            pid,
            start_ticks: Some(7),
            parent: Parent {
                pid: 2,
                start_ticks: Some(1),
            },
            chain: vec![2],
            in_job: true,
            markers: Markers {
                github_action: Some("step".into()),
                inherited: vec!["GITHUB_ACTION".into()],
                ..Default::default()
            },
            via: Via::Fork,
            gap: None,
            t_us: 3,
        })
    }

    #[test]
    fn records_round_trip_as_lines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let warning = Record::Warning(Warning::ManyAlike {
            signature: "uvicorn app --port N".into(),
            live: 21,
            over: 20,
            step: Some("Run tests".into()),
            test: None,
            examples: vec![Example {
                pid: 9,
                start_ticks: Some(3),
                command: "uvicorn app --port 8001".into(),
            }],
            t_us: 9,
        });
        let records = vec![start(), birth(9), warning];
        let mut w = Writer::open(&path).unwrap();
        for r in &records {
            w.write(r).unwrap();
        }
        w.flush().unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(
            text.contains(r#""kind":"warning","warning":"many-alike""#),
            "{text}"
        );
        let j = read(&path).unwrap().unwrap();
        assert_eq!(j.records, records);
        assert_eq!((j.bad_lines, j.torn_tail), (0, false));
    }

    /// The hand-written lines (births, exits) and the exec written without a copy are the
    /// bytes serde_json writes for the redacted record.
    #[test]
    fn hand_written_lines_are_serde_jsons() {
        let mut records = vec![birth(9)];
        for (start, pstart, chain, gap, via) in [
            (None, None, vec![], None, Via::Early),
            (
                Some(u64::MAX),
                Some(0),
                vec![1, 2, 3],
                Some("a \"quoted\"\n gap ✓"),
                Via::Scan,
            ),
            (Some(5), None, vec![i32::MAX], Some(""), Via::Marker),
        ] {
            records.push(Record::Birth(Birth {
                pid: -1,
                start_ticks: start,
                parent: Parent {
                    pid: 0,
                    start_ticks: pstart,
                },
                chain,
                in_job: false,
                markers: Markers::default(),
                via,
                gap: gap.map(str::to_owned),
                t_us: 0,
            }));
        }
        for start_ticks in [None, Some(42)] {
            records.push(Record::Exit(Exit {
                pid: 77,
                start_ticks,
                t_us: 123_456_789,
            }));
        }
        for (argv, unreadable, markers) in [
            (vec!["true"], vec![], Markers::default()),
            (
                vec![
                    "curl",
                    "-H",
                    "Authorization: Bearer abcdefghijklmnop",
                    "https://u:pw@h/",
                ],
                vec!["environ: permission denied".to_owned()],
                Markers {
                    github_action: Some("step \"x\"".into()),
                    inherited: vec!["GITHUB_ACTION".into()],
                    ..Default::default()
                },
            ),
        ] {
            records.push(Record::Exec(Exec {
                id: id(5, 6),
                argv: argv.into_iter().collect(),
                in_job: true,
                markers,
                unreadable,
                t_us: 8,
            }));
        }
        for r in &records {
            let mut ours = Vec::new();
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("j.jsonl");
            let mut w = Writer::open(&path).unwrap();
            w.write(r).unwrap();
            w.flush().unwrap();
            ours.extend(std::fs::read(&path).unwrap());
            let mut theirs = serde_json::to_vec(&redacted(r).unwrap_or_else(|| r.clone())).unwrap();
            theirs.push(b'\n');
            assert_eq!(
                String::from_utf8_lossy(&ours),
                String::from_utf8_lossy(&theirs)
            );
        }
    }

    #[test]
    fn a_torn_tail_is_counted_and_the_next_guard_starts_a_fresh_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("j.jsonl");
        let mut bytes = serde_json::to_vec(&start()).unwrap();
        bytes.push(b'\n');
        let full = serde_json::to_vec(&birth(9)).unwrap();
        bytes.extend_from_slice(&full[..full.len() / 2]);
        std::fs::write(&path, &bytes).unwrap();
        let j = read(&path).unwrap().unwrap();
        assert_eq!(j.records.len(), 1);
        assert!(j.torn_tail);
        assert_eq!(j.bad_lines, 1);
        // A new guard appends: the torn line stays one bad line.
        let mut w = Writer::open(&path).unwrap();
        w.write(&birth(10)).unwrap();
        w.flush().unwrap();
        let j = read(&path).unwrap().unwrap();
        assert_eq!(j.records.len(), 2);
        assert!(!j.torn_tail);
        assert_eq!(j.bad_lines, 1);
    }

    #[test]
    fn other_versions_and_garbage_are_skipped_not_guessed() {
        let mut newer = serde_json::to_value(start()).unwrap();
        newer["schema_version"] = 99.into();
        let mut text = String::new();
        text.push_str(&serde_json::to_string(&newer).unwrap());
        text.push('\n');
        text.push_str(&serde_json::to_string(&birth(9)).unwrap());
        text.push_str("\n{\"kind\":\"from-the-future\"}\nnot json\n");
        text.push_str(&serde_json::to_string(&start()).unwrap());
        text.push('\n');
        text.push_str(&serde_json::to_string(&birth(10)).unwrap());
        text.push('\n');
        let j = parse(text.as_bytes());
        assert_eq!(j.skipped_other_version, 2);
        assert_eq!(j.bad_lines, 2);
        assert_eq!(j.records, vec![start(), birth(10)]);
        assert!(read(Path::new("/nonexistent/j.jsonl")).unwrap().is_none());
    }
}
