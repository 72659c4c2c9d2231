//! Builders for plain snapshot data in unit tests.

use crate::model::{Machine, Process, ProcessId, Snapshot, SCHEMA_VERSION};

/// A process identity.
pub fn id(pid: i32, start_ticks: u64) -> ProcessId {
    ProcessId { pid, start_ticks }
}

pub fn proc_at(pid: i32, ppid: i32, start_ticks: u64) -> Process {
    Process {
        id: ProcessId { pid, start_ticks },
        ppid,
        pgid: pid,
        sid: pid,
        uid: Some(0),
        state: 'S',
        comm: format!("p{pid}").as_str().into(),
        exe: None,
        argv: [format!("p{pid}").as_str(), "--port", "8000"].into(),
        cwd: None,
        cgroup: None,
        threads: 1,
        kernel_thread: false,
        details: true,
        markers: Default::default(),
        unreadable: vec![],
    }
}

pub fn snapshot_of(processes: Vec<Process>, taken_at_boot_ticks: u64) -> Snapshot {
    Snapshot {
        schema_version: SCHEMA_VERSION,
        tool_version: "test".into(),
        taken_at_unix_ms: 0,
        taken_at_boot_ticks,
        duration_us: 0,
        machine: Machine {
            boot_id: "boot".into(),
            clock_ticks_per_second: 100,
            boot_time_unix: Some(1_700_000_000),
            pid_namespace: None,
            uid: 0,
            is_root: true,
            os: None,
            kernel: None,
            hostname: None,
            cpus: 2,
            memory_bytes: None,
        },
        processes,
        listeners: vec![],
        unreadable: vec![],
        taken_by: None,
        job: None,
        trust_notes: Vec::new(),
    }
}
