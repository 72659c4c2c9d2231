//! A process forest for a terminal: one line per process, children indented under their
//! parent, with the sockets each one listens on.

use std::fmt::Write;

use crate::diff::Forest;
use crate::model::Snapshot;
pub use crate::text::{sanitize, truncate};

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

fn shorten(text: String) -> String {
    truncate(text, MAX_COMMAND)
}

/// Renders `forest` (ids of processes in `now`) as indented lines.
pub fn render_forest(now: &Snapshot, forest: &Forest, style: Style) -> String {
    draw_forest(
        &forest.roots,
        |node| &forest.nodes[node].children,
        |node| {
            let p = now.process(forest.nodes[node].id)?;
            let pid = style.paint("1", &p.id.pid.to_string());
            let command = shorten(sanitize(&p.command_line()));
            let mut line = format!(
                "{pid} {command}  {}",
                style.paint("2", &format!("(pgid {}, sid {})", p.pgid, p.sid))
            );
            let ports: Vec<String> = now
                .listeners_of(p.id)
                .map(|l| sanitize(&l.label()))
                .collect();
            if !ports.is_empty() {
                let _ = write!(
                    line,
                    "  {}",
                    style.paint("33", &format!("listening: {}", ports.join(", ")))
                );
            }
            Some(line)
        },
    )
}

/// Draws a forest, one line per node, children under their parent with `├─`/`└─`
/// branches. `label` gives a node's line (`None` skips the node and its subtree). Iterative,
/// so a 500-deep chain cannot overflow the stack; a node is drawn at most once, so a
/// malformed parent map (a cycle) cannot loop.
pub fn draw_forest<'a>(
    roots: &[usize],
    children: impl Fn(usize) -> &'a [usize],
    mut label: impl FnMut(usize) -> Option<String>,
) -> String {
    let mut out = String::new();
    let mut drawn = std::collections::HashSet::new();
    // Explicit stack: (node, prefix for its line, prefix for its children).
    let mut stack: Vec<(usize, String, String)> = roots
        .iter()
        .rev()
        .map(|&r| (r, String::new(), String::new()))
        .collect();
    while let Some((node, line_prefix, child_prefix)) = stack.pop() {
        if !drawn.insert(node) {
            continue;
        }
        let Some(line) = label(node) else {
            continue;
        };
        let _ = writeln!(out, "{line_prefix}{line}");
        let kids = children(node);
        let n = kids.len();
        for (i, &child) in kids.iter().enumerate().rev() {
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
        ps[3].argv = ["evil\x1b[31m\nname"].into();
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
