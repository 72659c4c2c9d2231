//! The guard as text: `guard status`, and the guard's section of a sweep report.

use std::fmt::Write as _;

use super::control::{AtSweep, Status, Stopped};
use super::journal::Mode;
use crate::text::sanitize;

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
            let _ = writeln!(s, "last stop: {}", sanitize(stop));
        }
        for d in &self.degraded {
            let _ = writeln!(s, "degraded: {}", sanitize(d));
        }
        for w in &self.warnings {
            let _ = writeln!(s, "warning: {}", sanitize(w));
        }
        for p in &self.journal_problems {
            let _ = writeln!(s, "journal problem: {}", sanitize(p));
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
                let _ = writeln!(s, "Guard: {}", sanitize(p));
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
            let _ = writeln!(s, "  degraded: {}", sanitize(d));
        }
        for w in &l.warnings {
            let _ = writeln!(s, "  warning: {}", sanitize(&w.describe()));
        }
        for p in l.journal_problems.iter().chain(&self.problems) {
            let _ = writeln!(s, "  journal: {}", sanitize(p));
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A warning names a step and a command line, both chosen by the job: a line break in
    /// them must not start a line of its own (where `::error::` would be a workflow command).
    #[test]
    fn status_text_keeps_what_a_process_chose_on_its_line() {
        let status = Status {
            running: false,
            guard: None,
            stale: false,
            journal: "j".into(),
            log: "l".into(),
            births: 0,
            gaps: 0,
            overruns: 0,
            degraded: vec!["d\n::error::x".into()],
            warnings: vec!["step `a\n::error::b` left `c\x1b[2J`".into()],
            journal_problems: vec!["p\r\n::add-mask::y".into()],
            last_stop: Some("s\n::warning::z".into()),
        };
        let text = status.render();
        assert!(!text.lines().any(|l| l.starts_with("::")), "{text}");
        assert!(!text.contains('\x1b'), "{text}");
        assert!(
            text.contains(r"warning: step `a\x0a::error::b` left `c\x1b[2J`"),
            "{text}"
        );
    }
}
