//! A process forest for a terminal: one line per process, children indented under their
//! parent, with the sockets each one listens on.

use std::fmt::Write;

use crate::diff::Forest;
use crate::model::Snapshot;

/// Longest command line shown on one line; the JSON output has the whole argv.
const MAX_COMMAND: usize = 160;

#[derive(Debug, Clone, Copy, Default)]
pub struct Style {
    pub color: bool,
}

impl Style {
    fn paint(&self, code: &str, text: &str) -> String {
        if self.color {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }
}

/// Makes text safe for one terminal line: control characters (including escape sequences
/// that a hostile argv could carry) are shown as `\xNN`.
pub fn sanitize(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() {
            let _ = write!(out, "\\x{:02x}", c as u32);
        } else {
            out.push(c);
        }
    }
    out
}

fn shorten(text: String) -> String {
    if text.chars().count() <= MAX_COMMAND {
        return text;
    }
    let mut s: String = text.chars().take(MAX_COMMAND - 1).collect();
    s.push('…');
    s
}

/// Renders `forest` (ids of processes in `now`) as indented lines.
pub fn render_forest(now: &Snapshot, forest: &Forest, style: Style) -> String {
    let mut out = String::new();
    // Explicit stack: (node, prefix for its line, prefix for its children).
    let mut stack: Vec<(usize, String, String)> = forest
        .roots
        .iter()
        .rev()
        .map(|&r| (r, String::new(), String::new()))
        .collect();
    while let Some((node, line_prefix, child_prefix)) = stack.pop() {
        let tree = &forest.nodes[node];
        let Some(p) = now.process(tree.id) else {
            continue;
        };
        let pid = style.paint("1", &p.id.pid.to_string());
        let command = shorten(sanitize(&p.command_line()));
        let _ = write!(
            out,
            "{line_prefix}{pid} {command}  {}",
            style.paint("2", &format!("(pgid {}, sid {})", p.pgid, p.sid))
        );
        let ports: Vec<String> = now
            .listeners_of(p.id)
            .map(|l| sanitize(&l.label()))
            .collect();
        if !ports.is_empty() {
            let _ = write!(
                out,
                "  {}",
                style.paint("33", &format!("listening: {}", ports.join(", ")))
            );
        }
        out.push('\n');
        let n = tree.children.len();
        for (i, &child) in tree.children.iter().enumerate().rev() {
            let last = i + 1 == n;
            let (branch, cont) = if last {
                ("└─ ", "   ")
            } else {
                ("├─ ", "│  ")
            };
            stack.push((
                child,
                format!("{child_prefix}{branch}"),
                format!("{child_prefix}{cont}"),
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::diff::forest;
    use crate::model::{Listener, Process, Protocol};
    use crate::test_support::{proc_at, snapshot_of};

    #[test]
    fn forest_lines() {
        let mut ps = vec![
            proc_at(20, 1, 0),
            proc_at(21, 20, 0),
            proc_at(22, 20, 0),
            proc_at(23, 21, 0),
        ];
        ps[3].argv = vec!["evil\x1b[31m\nname".into()];
        let mut now = snapshot_of(ps, 0);
        now.listeners.push(Listener {
            protocol: Protocol::Tcp,
            ip_version: Some(4),
            address: Some("127.0.0.1".into()),
            port: Some(8765),
            path: None,
            kind: None,
            inode: 1,
            uid: None,
            owners: vec![now.processes[2].id],
        });
        let refs: Vec<&Process> = now.processes.iter().collect();
        let text = render_forest(&now, &forest(&refs), Style::default());
        insta::assert_snapshot!(text, @r"
        20 p20 --port 8000  (pgid 20, sid 20)
        ├─ 21 p21 --port 8000  (pgid 21, sid 21)
        │  └─ 23 evil\x1b[31m\x0aname  (pgid 23, sid 23)
        └─ 22 p22 --port 8000  (pgid 22, sid 22)  listening: tcp 127.0.0.1:8765
        ");
    }
}
