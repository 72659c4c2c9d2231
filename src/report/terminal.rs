//! The sweep result for a terminal (and for CI logs outside GitHub): what leaked, the
//! evidence, how each process died, and which ports were freed.

use std::fmt::Write;

use crate::classify::Class;
use crate::kill::Fate;
use crate::sweep::{Entry, PortOutcome, SweepOutcome};

use super::tree::{sanitize, Style};

const MAX_COMMAND: usize = 120;

fn short(cmd: &str) -> String {
    let cmd = sanitize(cmd);
    if cmd.chars().count() <= MAX_COMMAND {
        return cmd;
    }
    let mut s: String = cmd.chars().take(MAX_COMMAND - 1).collect();
    s.push('…');
    s
}

fn paint(style: Style, code: &str, text: &str) -> String {
    if style.color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

fn line(out: &mut String, e: &Entry, style: Style) {
    let evidence: Vec<&str> = e.evidence.iter().map(|r| r.describe()).collect();
    let _ = write!(
        out,
        "  {} {}",
        paint(style, "1", &e.process.id.pid.to_string()),
        short(&e.process.command_line())
    );
    if !e.listening.is_empty() {
        let _ = write!(
            out,
            "  {}",
            paint(
                style,
                "33",
                &format!("listening: {}", sanitize(&e.listening.join(", ")))
            )
        );
    }
    out.push('\n');
    let mut detail = Vec::new();
    if let Some(f) = &e.fate {
        detail.push(f.describe());
    }
    if !evidence.is_empty() {
        detail.push(format!("evidence: {}", evidence.join("; ")));
    }
    if let Some(t) = &e.process.markers.pytest_current_test {
        detail.push(format!("test: {}", sanitize(t)));
    }
    if let Some(a) = &e.process.markers.github_action {
        detail.push(format!("step: {}", sanitize(a)));
    }
    if !detail.is_empty() {
        let _ = writeln!(out, "      {}", paint(style, "2", &detail.join(" · ")));
    }
}

/// Renders the outcome. `failed` says whether the policy fails the run.
pub fn render(o: &SweepOutcome, failed: bool, style: Style) -> String {
    let mut out = String::new();
    let leaked: Vec<&Entry> = o.failing_leaks().collect();
    let allowed: Vec<&Entry> = o
        .entries
        .iter()
        .filter(|e| matches!(e.class, Class::Allowed { .. }))
        .collect();
    let unattributed: Vec<&Entry> = o
        .entries
        .iter()
        .filter(|e| e.class == Class::Unattributed)
        .collect();
    let untouched = o
        .entries
        .iter()
        .filter(|e| {
            matches!(
                e.class,
                Class::Protected { .. } | Class::Ignored { .. } | Class::OtherJob { .. }
            )
        })
        .count();
    let headline = if leaked.is_empty() {
        paint(
            style,
            "32",
            "clean: nothing the job started is still running",
        )
    } else {
        let verb = if o.dry_run {
            "found (dry run, nothing signalled)"
        } else {
            "found and killed"
        };
        paint(
            style,
            "31;1",
            &format!(
                "{} leaked process{} {verb}",
                leaked.len(),
                if leaked.len() == 1 { "" } else { "es" }
            ),
        )
    };
    let _ = writeln!(
        out,
        "ci-janitor: {headline} ({} round{}, {:.2} s)",
        o.rounds,
        if o.rounds == 1 { "" } else { "s" },
        o.elapsed.as_secs_f64()
    );
    let sections: [(&str, &[&Entry]); 3] = [
        ("Leaked (the job's):", &leaked),
        ("Allowed (killed, not failing):", &allowed),
        (
            "Unattributed (appeared during the job, no evidence it is the job's; not signalled \
             unless --kill-unattributed):",
            &unattributed,
        ),
    ];
    for (title, entries) in sections {
        if entries.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{title}");
        for e in entries {
            line(&mut out, e, style);
        }
    }
    if !o.ports.is_empty() {
        let _ = writeln!(out, "\nPorts:");
        for p in &o.ports {
            let holders: Vec<String> = p.held_by.iter().map(|i| i.pid.to_string()).collect();
            let result = match &p.outcome {
                PortOutcome::Freed => paint(style, "32", "free again"),
                PortOutcome::NotChecked => "not checked (dry run)".into(),
                PortOutcome::StillHeld(by) => paint(
                    style,
                    "31",
                    &format!(
                        "STILL HELD by {}",
                        by.iter()
                            .map(|i| i.pid.to_string())
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ),
                PortOutcome::Reused(by) => format!(
                    "freed, but now held by {} (not ours)",
                    by.iter()
                        .map(|i| i.pid.to_string())
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            };
            let _ = writeln!(
                out,
                "  {} held by {} -> {result}",
                sanitize(&p.listener.label()),
                holders.join(", ")
            );
        }
    }
    let survivors: Vec<&Entry> = o.survivors().collect();
    if !survivors.is_empty() {
        let _ = writeln!(out, "\nStill alive after the sweep:");
        for e in survivors {
            line(&mut out, e, style);
        }
    }
    let not_permitted = o
        .entries
        .iter()
        .filter(|e| e.fate == Some(Fate::NotPermitted))
        .count();
    if not_permitted > 0 {
        let _ = writeln!(
            out,
            "\n{not_permitted} process(es) belong to another user and could not be signalled \
             (run the sweep as that user or as root)."
        );
    }
    let mut notes = Vec::new();
    if untouched > 0 {
        notes.push(format!("{untouched} protected, ignored or another job's"));
    }
    if o.zombies > 0 {
        notes.push(format!("{} already exited (zombies)", o.zombies));
    }
    if o.deadline_hit {
        notes.push("the deadline ended the sweep".into());
    }
    if !notes.is_empty() {
        let _ = writeln!(out, "\n({})", notes.join("; "));
    }
    if failed {
        let _ = writeln!(
            out,
            "\nFailing: the job left processes running. Fix the leak, or accept it with \
             --allow 'PATTERN' (killed, not failing) or --fail-on never."
        );
    }
    out
}
