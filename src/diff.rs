//! What appeared since the baseline: pure functions over two snapshots.
//!
//! A process *appeared* when it is alive now and started (by its start time, in clock ticks
//! since boot) no earlier than the tick in which the baseline's reading began, which the
//! reader aligns to the start of a tick. Only the start time decides, never the list: a
//! process born while the baseline was read is listed in it and still new, and a baseline
//! with processes missing from it (edited, or read while they were exiting) can never make
//! an older process look new.

use std::collections::{BTreeMap, HashSet};

use crate::model::{Listener, Process, ProcessId, Snapshot};

/// Whether `p` started after the baseline's reading began.
fn born_since(baseline: &Snapshot, p: &Process) -> bool {
    p.id.start_ticks >= baseline.taken_at_boot_ticks
}

/// The processes of `now` that appeared since `baseline`, in pid order. Kernel threads,
/// zombies (already dead, waiting to be reaped) and the process that took `now` are left
/// out.
pub fn appeared<'a>(baseline: &Snapshot, now: &'a Snapshot) -> Vec<&'a Process> {
    now.processes
        .iter()
        .filter(|p| {
            !p.kernel_thread
                && !p.is_zombie()
                && Some(p.id) != now.taken_by
                && born_since(baseline, p)
        })
        .collect()
}

/// Zombies among the processes that appeared: dead, but not yet reaped by their parent.
pub fn appeared_zombies<'a>(baseline: &Snapshot, now: &'a Snapshot) -> Vec<&'a Process> {
    now.processes
        .iter()
        .filter(|p| p.is_zombie() && born_since(baseline, p))
        .collect()
}

/// A set of processes arranged by parentage, in an arena: chains of thousands of processes
/// happen (a runaway respawner), so nothing here recurses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Forest {
    pub nodes: Vec<Node>,
    /// Indices into `nodes` of the processes whose parent is not in the set, in pid order.
    pub roots: Vec<usize>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub id: ProcessId,
    /// Indices into the forest's `nodes`, in pid order.
    pub children: Vec<usize>,
}

impl Forest {
    #[cfg(test)]
    /// The number of processes in the subtree at `node`.
    pub fn size(&self, node: usize) -> usize {
        let mut count = 0;
        let mut stack = vec![node];
        while let Some(n) = stack.pop() {
            count += 1;
            stack.extend(&self.nodes[n].children);
        }
        count
    }

    #[cfg(test)]
    pub fn root_ids(&self) -> impl Iterator<Item = ProcessId> + '_ {
        self.roots.iter().map(|&r| self.nodes[r].id)
    }
}

/// Arranges `set` as a forest: a process's parent is its `ppid` when that process is also in
/// the set, else it is a root.
pub fn forest(set: &[&Process]) -> Forest {
    let mut sorted: Vec<&Process> = set.to_vec();
    sorted.sort_by_key(|p| p.id.pid);
    sorted.dedup_by_key(|p| p.id.pid);
    let index: BTreeMap<i32, usize> = sorted
        .iter()
        .enumerate()
        .map(|(i, p)| (p.id.pid, i))
        .collect();
    let mut nodes: Vec<Node> = sorted
        .iter()
        .map(|p| Node {
            id: p.id,
            children: Vec::new(),
        })
        .collect();
    let mut roots = Vec::new();
    for (i, p) in sorted.iter().enumerate() {
        match index.get(&p.ppid) {
            Some(&parent) if parent != i => nodes[parent].children.push(i),
            _ => roots.push(i),
        }
    }
    Forest { nodes, roots }
}

/// The listeners held by any of `set` (in the order of `now.listeners`).
pub fn listeners_of<'a>(now: &'a Snapshot, set: &[&Process]) -> Vec<&'a Listener> {
    let ids: HashSet<ProcessId> = set.iter().map(|p| p.id).collect();
    now.listeners
        .iter()
        .filter(|l| l.owners.iter().any(|o| ids.contains(o)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::{proc_at, snapshot_of};

    #[test]
    fn appeared_needs_absence_and_a_late_start() {
        let baseline = snapshot_of(vec![proc_at(1, 0, 5), proc_at(10, 1, 50)], 100);
        let mut now = snapshot_of(
            vec![
                proc_at(1, 0, 5),
                proc_at(10, 1, 50),   // in the baseline
                proc_at(11, 1, 60),   // not listed, but older than the baseline: not new
                proc_at(12, 1, 150),  // new
                proc_at(13, 12, 160), // new
            ],
            200,
        );
        let mut zombie = proc_at(14, 12, 170);
        zombie.state = 'Z';
        now.processes.push(zombie);
        let mut kthread = proc_at(15, 2, 180);
        kthread.kernel_thread = true;
        now.processes.push(kthread);
        now.processes.push(proc_at(16, 1, 190));
        now.taken_by = Some(ProcessId {
            pid: 16,
            start_ticks: 190,
        });
        let got: Vec<i32> = appeared(&baseline, &now).iter().map(|p| p.id.pid).collect();
        assert_eq!(got, vec![12, 13]);
        let z: Vec<i32> = appeared_zombies(&baseline, &now)
            .iter()
            .map(|p| p.id.pid)
            .collect();
        assert_eq!(z, vec![14]);
    }

    #[test]
    fn reused_pid_is_new() {
        let baseline = snapshot_of(vec![proc_at(1, 0, 5), proc_at(10, 1, 50)], 100);
        let now = snapshot_of(vec![proc_at(1, 0, 5), proc_at(10, 1, 150)], 200);
        let got: Vec<_> = appeared(&baseline, &now).iter().map(|p| p.id).collect();
        assert_eq!(
            got,
            vec![ProcessId {
                pid: 10,
                start_ticks: 150
            }]
        );
    }

    #[test]
    fn forest_shapes() {
        let ps = [
            proc_at(20, 1, 0),
            proc_at(21, 20, 0),
            proc_at(22, 21, 0),
            proc_at(23, 20, 0),
            proc_at(30, 999, 0),
        ];
        let refs: Vec<&Process> = ps.iter().collect();
        let f = forest(&refs);
        let roots: Vec<i32> = f.root_ids().map(|id| id.pid).collect();
        assert_eq!(roots, vec![20, 30]);
        assert_eq!(f.size(f.roots[0]), 4);
        let first_child = f.nodes[f.roots[0]].children[0];
        assert_eq!(f.nodes[f.nodes[first_child].children[0]].id.pid, 22);
    }

    #[test]
    fn deep_chain_does_not_overflow() {
        let ps: Vec<Process> = (0..50_000).map(|i| proc_at(100 + i, 99 + i, 0)).collect();
        let refs: Vec<&Process> = ps.iter().collect();
        let f = forest(&refs);
        assert_eq!(f.roots.len(), 1);
        assert_eq!(f.size(f.roots[0]), 50_000);
    }
}
