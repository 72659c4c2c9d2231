//! The guard as text: `guard status`, and the guard's section of a sweep report.

use std::fmt::Write as _;

use super::control::{AtSweep, Status, Stopped};
use super::journal::Mode;

impl Status {
    pub fn render(&self) -> String {
        let mut s = String::new();
        match (&self.guard, self.running) {
            (Some(g), true) => {
                let _ = writeln!(
                    s,
                    "guard: running (pid {}), {}{}",
                    g.pid,
                    g.mode.describe(),
                    if g.detail.is_empty() {
                        String::new()
                    } else {
                        format!("; {}", g.detail)
                    }
                );
                if let Some(root) = g.root {
                    let _ = writeln!(s, "root: pid {} (its descendants are the job)", root.pid);
                }
                match g.watch {
                    Some(w) => {
                        let _ = writeln!(
                            s,
                            "dead man's switch: watching pid {} (sweeps if it exits first)",
                            w.pid
                        );
                    }
                    None => {
                        let _ = writeln!(
                            s,
                            "dead man's switch: off (no per-job root; the sweep stops the guard)"
                        );
                    }
                }
            }
            (Some(g), false) => {
                let _ = writeln!(
                    s,
                    "guard: not running (pid file names pid {}, which is gone)",
                    g.pid
                );
            }
            (None, _) => {
                let _ = writeln!(s, "guard: not running");
            }
        }
        let _ = writeln!(
            s,
            "journal: {} ({} births, {} without an identity, {} kernel overruns)",
            self.journal.display(),
            self.births,
            self.gaps,
            self.overruns
        );
        if let Some(stop) = &self.last_stop {
            let _ = writeln!(s, "last stop: {stop}");
        }
        for d in &self.degraded {
            let _ = writeln!(s, "degraded: {d}");
        }
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {w}");
        }
        for p in &self.journal_problems {
            let _ = writeln!(s, "journal problem: {p}");
        }
        s
    }
}

impl AtSweep {
    /// The guard's section of a sweep report, for people (empty when there was no guard).
    pub fn render(&self) -> String {
        let mut s = String::new();
        let Some(l) = &self.lineage else {
            for p in &self.problems {
                let _ = writeln!(s, "Guard: {p}");
            }
            return s;
        };
        let _ = writeln!(s, "\nGuard:");
        let mode = if l.polling() {
            Mode::Polling
        } else {
            Mode::Connector
        };
        let _ = writeln!(s, "  lineage from {}", mode.describe());
        let _ = writeln!(
            s,
            "  {} births journaled ({} without an identity: gone before they could be read)",
            l.births, l.gaps
        );
        match &self.stopped {
            Some(Stopped::Signalled { guard, killed }) => {
                let _ = writeln!(
                    s,
                    "  stopped the guard (pid {}){}",
                    guard.pid,
                    if *killed { " with SIGKILL" } else { "" }
                );
            }
            Some(Stopped::Stale(pf)) => {
                let _ = writeln!(
                    s,
                    "  the guard (pid {}) had died before the sweep: its journal so far was used",
                    pf.pid
                );
            }
            Some(Stopped::LeftRunning(pf)) => {
                let _ = writeln!(
                    s,
                    "  dry run: the guard (pid {}) was left running; its journal so far was used",
                    pf.pid
                );
            }
            _ => {}
        }
        if l.overruns > 0 {
            let _ = writeln!(
                s,
                "  the kernel dropped process events {} time(s) (ENOBUFS): births in those \
                 moments may be missing",
                l.overruns
            );
        }
        for d in &l.degraded {
            let _ = writeln!(s, "  degraded: {d}");
        }
        for w in &l.warnings {
            let _ = writeln!(s, "  warning: {}", w.describe());
        }
        for p in l.journal_problems.iter().chain(&self.problems) {
            let _ = writeln!(s, "  journal: {p}");
        }
        s
    }
}
