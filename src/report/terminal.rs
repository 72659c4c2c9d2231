//! The sweep result for a terminal (and for CI logs outside GitHub): what leaked, grouped by
//! signature, with where it came from, the evidence, how each process died, which ports
//! were freed, and what to do next. Compact: a signature of 82 processes takes a handful of
//! lines, not 82.

use crate::report::json::{PortState, SignatureClass};
use std::collections::HashMap;
use std::fmt::Write;

use crate::classify::Rule;

use super::json::{Report, ReportProcess, Signature};
use super::signature::{describe_fates, describe_tallies, port_ranges};
use super::tree::{sanitize, truncate, Style};

/// Longest command shown on a process's line; the JSON report has the whole argv.
const MAX_COMMAND: usize = 120;
/// Longest masked command heading a signature: it is what identifies the leak, so it
/// may wrap rather than lose its end.
const MAX_SIGNATURE: usize = 400;
/// Sockets listed one by one when all were freed; above this, one line says so.
const MAX_FREED_LISTED: usize = 5;
/// Processes listed under a signature before "… and N more".
const MAX_LISTED: usize = 5;
/// Signatures listed per section; the JSON report and the job summary have the rest.
const MAX_SIGNATURES: usize = 50;

fn paint(style: Style, code: &str, text: &str) -> String {
    if style.color {
        format!("\x1b[{code}m{text}\x1b[0m")
    } else {
        text.to_owned()
    }
}

/// `n thing` / `n things`.
pub fn plural(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `3 commands (12 processes)`: the signatures a report left out of a list.
pub fn commands_and_processes<'a>(rest: impl IntoIterator<Item = &'a Signature>) -> String {
    let (commands, processes) = rest
        .into_iter()
        .fold((0, 0), |(c, p), s| (c + 1, p + s.count));
    format!(
        "{} ({})",
        plural(commands, "command", "commands"),
        plural(processes, "process", "processes")
    )
}

/// The first line of every report: clean, or how many leaked and what was done.
pub fn headline(r: &Report) -> String {
    let unattributed = r
        .processes
        .iter()
        .filter(|p| matches!(p.class, crate::classify::Class::Unattributed))
        .count();
    if r.leaked == 0 && unattributed > 0 {
        // Never a bare "clean" while processes that nothing attributes are alive: they may
        // be the job's, and only a better deployment can tell.
        return format!(
            "no leak attributed to the job, but {} appeared during it that nothing \
             attributes (see below)",
            plural(unattributed, "process", "processes")
        );
    }
    if r.leaked == 0 {
        return "clean: nothing the job started is still running".into();
    }
    let verb = if r.dry_run {
        "found (dry run, nothing signalled)"
    } else {
        "found and killed"
    };
    format!(
        "{} {verb}",
        plural(r.leaked, "leaked process", "leaked processes")
    )
}

/// The facts about a signature, for one line: ports, step, tests, workers, evidence.
pub fn signature_facts(r: &Report, s: &Signature) -> Vec<String> {
    let mut facts = Vec::new();
    if !s.ports.is_empty() {
        facts.push(format!(
            "{} {}",
            if s.ports.len() == 1 { "port" } else { "ports" },
            port_ranges(&s.ports)
        ));
    } else if !s.listening.is_empty() {
        facts.push(format!("listening: {}", s.listening.join(", ")));
    }
    if !s.steps.is_empty() {
        let steps = super::signature::described_steps(&s.steps, &r.step_names);
        facts.push(format!(
            "{}: {}",
            if steps.len() == 1 { "step" } else { "steps" },
            describe_tallies(&steps, 3)
        ));
    }
    if !s.tests.is_empty() {
        facts.push(format!(
            "{}: {}",
            if s.tests.len() == 1 { "test" } else { "tests" },
            describe_tallies(&s.tests, 3)
        ));
    }
    if !s.xdist_workers.is_empty() {
        facts.push(format!("xdist: {}", s.xdist_workers.join(", ")));
    }
    facts
}

/// The attribution rules, in words.
pub fn describe_evidence(rules: &[Rule]) -> String {
    rules
        .iter()
        .map(|r| r.describe())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A process's fate in words, or why it was not signalled.
pub fn describe_fate(p: &ReportProcess) -> String {
    match &p.fate {
        Some(f) => f.describe(),
        None => "not signalled".into(),
    }
}

/// One process: pid, command line (unless `with_command` is false: the signature above
/// already says it), fate, sockets.
fn process_line(out: &mut String, p: &ReportProcess, style: Style, with_command: bool) {
    let _ = write!(out, "      {}", paint(style, "1", &p.pid.to_string()));
    if with_command {
        let cmd = p.command_line();
        let _ = write!(out, " {}", truncate(sanitize(&cmd), MAX_COMMAND));
    }
    let _ = write!(out, "  {}", paint(style, "2", &describe_fate(p)));
    if !p.hints.is_empty() {
        let hints: Vec<&str> = p.hints.iter().map(|h| h.describe()).collect();
        let _ = write!(
            out,
            "  {}",
            paint(style, "2", &format!("hint: {}", hints.join(", ")))
        );
    }
    if !p.listening.is_empty() {
        let _ = write!(
            out,
            "  {}",
            paint(
                style,
                "33",
                &format!("listening: {}", sanitize(&p.listening.join(", ")))
            )
        );
    }
    out.push('\n');
}

fn signature_block(
    out: &mut String,
    r: &Report,
    s: &Signature,
    by_pid: &HashMap<i32, &ReportProcess>,
    style: Style,
) {
    let colour = if s.class == SignatureClass::Job {
        "31;1"
    } else {
        "1"
    };
    let _ = writeln!(
        out,
        "  {} {}",
        paint(style, colour, &format!("{} ×", s.count)),
        truncate(sanitize(&s.command), MAX_SIGNATURE)
    );
    let facts = signature_facts(r, s);
    if !facts.is_empty() {
        let _ = writeln!(
            out,
            "      {}",
            paint(style, "2", &sanitize(&facts.join(" · ")))
        );
    }
    if !s.evidence.is_empty() {
        let _ = writeln!(
            out,
            "      {}",
            paint(
                style,
                "2",
                &format!("evidence: {}", describe_evidence(&s.evidence))
            )
        );
    }
    if let Some(g) = s.gate {
        let _ = writeln!(out, "      {}", describe_gate(g));
    }
    let members: Vec<&ReportProcess> = s
        .pids
        .iter()
        .filter_map(|pid| by_pid.get(pid).copied())
        .collect();
    for p in members.iter().take(MAX_LISTED) {
        process_line(out, p, style, members.len() == 1);
    }
    if members.len() > MAX_LISTED {
        let _ = writeln!(
            out,
            "      … and {} more; all of them: {}",
            members.len() - MAX_LISTED,
            describe_fates(&s.fates)
        );
    }
}

/// A failing signature against the known leaks: `known (2)`, `NEW (1)`, or both.
pub fn describe_gate(g: super::json::SignatureGate) -> String {
    match (g.known, g.new) {
        (k, 0) => format!(
            "known: {} tolerated by the known leaks",
            plural(k, "process", "processes")
        ),
        (0, n) => format!(
            "NEW: {} no known leak tolerates",
            plural(n, "process", "processes")
        ),
        (k, n) => format!("{k} known, NEW: {n} above what the known leaks tolerate"),
    }
}

/// The "known leaks used" table: each entry, what it matched, its max, its status.
pub fn known_leaks_table(out: &mut String, r: &Report) {
    let Some(k) = &r.known_leaks else {
        return;
    };
    let from = match k.source {
        super::json::KnownSource::File => sanitize(&k.origin),
        super::json::KnownSource::Base => format!("the base commit's run, {}", sanitize(&k.origin)),
    };
    let _ = writeln!(
        out,
        "\nKnown leaks used (from {from}): {} known, {} new, {} matched nothing",
        k.known,
        k.new,
        plural(k.removable, "entry", "entries"),
    );
    if k.entries.is_empty() {
        return;
    }
    let _ = writeln!(out, "  {:>9}  {:<28}  entry", "seen/max", "status");
    for e in k.entries.iter().take(MAX_SIGNATURES) {
        let mut who = Vec::new();
        if let Some(o) = &e.owner {
            who.push(format!("owner {}", sanitize(o)));
        }
        if let Some(x) = &e.expires {
            who.push(format!("expires {x}"));
        }
        let _ = writeln!(
            out,
            "  {:>9}  {:<28}  {}{}",
            format!("{}/{}", e.seen, e.max),
            e.status.describe(),
            truncate(sanitize(&e.signature), MAX_COMMAND),
            if who.is_empty() {
                String::new()
            } else {
                format!("  ({})", who.join(", "))
            }
        );
    }
    if k.entries.len() > MAX_SIGNATURES {
        let _ = writeln!(
            out,
            "  … and {} more, in the JSON report",
            k.entries.len() - MAX_SIGNATURES
        );
    }
    if k.removable > 0 {
        let _ = writeln!(
            out,
            "  {} matched nothing: remove {} from the file{}",
            plural(k.removable, "entry", "entries"),
            if k.removable == 1 { "it" } else { "them" },
            if k.strict {
                " (strict: this fails the run)"
            } else {
                ""
            }
        );
    }
}

/// The processes left running on purpose: the keep-list's daemons, and other jobs'.
fn left_alone(out: &mut String, r: &Report) {
    let kept: Vec<&ReportProcess> = r
        .processes
        .iter()
        .filter(|p| matches!(p.class, crate::classify::Class::Kept { .. }))
        .collect();
    if !kept.is_empty() {
        let _ = writeln!(
            out,
            "\nKept (build-cache daemons on the keep-list, left running):"
        );
        for p in kept.iter().take(MAX_LISTED) {
            let daemon = match &p.class {
                crate::classify::Class::Kept { daemon } => daemon.as_str(),
                _ => "",
            };
            let _ = writeln!(
                out,
                "      {} {}  {}",
                p.pid,
                truncate(sanitize(&p.command_line()), MAX_COMMAND),
                sanitize(daemon)
            );
        }
    }
    let others = r
        .processes
        .iter()
        .filter(|p| matches!(p.class, crate::classify::Class::OtherJob { .. }))
        .count();
    if others > 0 {
        let _ = writeln!(
            out,
            "\nLeft alone: {} carrying another job's marker.",
            plural(others, "process", "processes")
        );
    }
}

/// Renders the report for a terminal.
pub fn render(r: &Report, style: Style) -> String {
    let mut out = String::new();
    let head = headline(r);
    let head = if r.leaked == 0 {
        paint(style, "32", &head)
    } else {
        paint(style, "31;1", &head)
    };
    let _ = writeln!(
        out,
        "ci-janitor: {head} ({}, {:.2} s)",
        plural(r.rounds as usize, "round", "rounds"),
        r.elapsed_ms as f64 / 1000.0
    );
    for note in &r.notes {
        let _ = writeln!(out, "note: {}", sanitize(note));
    }
    let sections: [(SignatureClass, &str); 3] = [
        (SignatureClass::Job, "Leaked (the job's):"),
        (SignatureClass::Allowed, "Allowed (killed, not failing):"),
        (
            SignatureClass::Unattributed,
            "Unattributed (appeared during the job, no evidence it is the job's; not signalled \
             unless --kill-unattributed; a guard, `eval \"$(ci-janitor snapshot --export)\"` \
             or `ci-janitor run` would have told):",
        ),
    ];
    let by_pid: HashMap<i32, &ReportProcess> = r.processes.iter().map(|p| (p.pid, p)).collect();
    for (class, title) in sections {
        let sigs: Vec<&Signature> = r.signatures.iter().filter(|s| s.class == class).collect();
        if sigs.is_empty() {
            continue;
        }
        let _ = writeln!(out, "\n{title}");
        for s in sigs.iter().take(MAX_SIGNATURES) {
            signature_block(&mut out, r, s, &by_pid, style);
        }
        if sigs.len() > MAX_SIGNATURES {
            let _ = writeln!(
                out,
                "  … and {} more, in the JSON report (--report-json)",
                commands_and_processes(sigs[MAX_SIGNATURES..].iter().copied())
            );
        }
    }
    known_leaks_table(&mut out, r);
    left_alone(&mut out, r);
    if let Some(h) = &r.hang {
        // Escaped field by field where it is rendered (commands, stacks, paths).
        let _ = write!(out, "\n{}", h.render_text());
    }
    if !r.ports.is_empty() {
        let _ = writeln!(out, "\nPorts:");
        let pids = |v: &[i32]| v.iter().map(i32::to_string).collect::<Vec<_>>().join(", ");
        let freed = r
            .ports
            .iter()
            .filter(|p| p.outcome == PortState::Freed)
            .count();
        let one_by_one = r.ports.len() <= MAX_FREED_LISTED;
        if !one_by_one && freed > 0 {
            let _ = writeln!(
                out,
                "  {} the leaked processes listened on {}",
                plural(freed, "socket", "sockets"),
                paint(
                    style,
                    "32",
                    if freed == 1 {
                        "is free again"
                    } else {
                        "are free again"
                    }
                )
            );
        }
        for p in r
            .ports
            .iter()
            .filter(|p| one_by_one || p.outcome != PortState::Freed)
        {
            let result = match p.outcome {
                PortState::Freed => paint(style, "32", "free again"),
                PortState::NotChecked => "not checked (dry run)".into(),
                PortState::StillHeld => paint(
                    style,
                    "31",
                    &format!("STILL HELD by {}", pids(&p.now_held_by)),
                ),
                PortState::Reused => {
                    format!("freed, but now held by {} (not ours)", pids(&p.now_held_by))
                }
            };
            let _ = writeln!(
                out,
                "  {} held by {} -> {result}",
                sanitize(&p.socket),
                pids(&p.held_by)
            );
        }
    }
    let survivors: Vec<&ReportProcess> = r.processes.iter().filter(|p| is_survivor(p)).collect();
    if !survivors.is_empty() {
        let _ = writeln!(out, "\nStill alive after the sweep:");
        for p in survivors {
            process_line(&mut out, p, style, true);
        }
    }
    let not_permitted = r
        .processes
        .iter()
        .filter(|p| matches!(p.fate, Some(crate::kill::Fate::NotPermitted)))
        .count();
    if not_permitted > 0 {
        let _ = writeln!(
            out,
            "\n{not_permitted} process(es) belong to another user and could not be signalled \
             (run the sweep as that user or as root)."
        );
    }
    let untouched = r
        .processes
        .iter()
        .filter(|p| matches!(p.class.name(), "protected" | "ignored"))
        .count();
    let mut notes = Vec::new();
    if untouched > 0 {
        notes.push(format!("{untouched} protected, ignored or another job's"));
    }
    if r.zombies > 0 {
        notes.push(format!("{} already exited (zombies)", r.zombies));
    }
    if r.deadline_hit {
        notes.push("the deadline ended the sweep".into());
    }
    if r.redacted_values > 0 {
        notes.push(format!(
            "{} redacted from command lines",
            plural(r.redacted_values, "secret", "secrets")
        ));
    }
    if !notes.is_empty() {
        let _ = writeln!(out, "\n({})", notes.join("; "));
    }
    if r.failed && r.ran_as == crate::report::json::RanAs::Action {
        let _ = writeln!(
            out,
            "\nFailing: the job left processes running. Fix the leak, or accept it (killed, \
             not failing) with lines in the input `allow`:"
        );
        for s in r
            .signatures
            .iter()
            .filter(|s| s.class == SignatureClass::Job)
            .take(5)
        {
            let _ = writeln!(out, "  {}", sanitize(&s.allow_pattern));
        }
        let _ = writeln!(out, "or set the input `fail-on-leak: false`.");
    } else if r.failed {
        let _ = writeln!(
            out,
            "\nFailing: the job left processes running. Fix the leak, or accept it (killed, \
             not failing) with:"
        );
        for s in r
            .signatures
            .iter()
            .filter(|s| s.class == SignatureClass::Job)
            .take(5)
        {
            let _ = writeln!(
                out,
                "  --allow {}",
                shell_quote(&sanitize(&s.allow_pattern))
            );
        }
        let _ = writeln!(out, "or pass --fail-on never.");
    }
    out
}

/// Whether a process is still alive after the sweep, by its fate.
pub fn is_survivor(p: &ReportProcess) -> bool {
    use crate::kill::Fate;
    matches!(
        p.fate,
        Some(
            Fate::Unkillable { .. }
                | Fate::Survived { .. }
                | Fate::Failed { .. }
                | Fate::DeadlinePassed
        )
    )
}

/// `'text'` for a POSIX shell (a `'` inside becomes `'\''`).
pub fn shell_quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', r"'\''"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;

    #[test]
    fn prefect_servers() {
        insta::assert_snapshot!(render(&fixtures::prefect().report, Style::default()));
    }

    #[test]
    fn mcp_server_without_markers() {
        insta::assert_snapshot!(render(&fixtures::mcp().report, Style::default()));
    }

    #[test]
    fn clean_run() {
        insta::assert_snapshot!(render(&fixtures::clean().report, Style::default()));
    }

    /// `report --format text` of a saved report shows why the job was stuck, as the live
    /// report did; a command line the job chose stays on its line there too.
    #[test]
    fn a_hung_run_shows_why_it_was_stuck() {
        let mut built = fixtures::hung();
        let hang = built.report.hang.as_mut().unwrap();
        hang.processes[0].command = "python3 x\n::error::forged".into();
        let text = render(&built.report, Style::default());
        assert!(
            text.contains("\nWhy the job is stuck (signal SIGTERM; 1 job process"),
            "{text}"
        );
        assert!(
            text.contains("  * pytest pid 42 has waited 290 s on 127.0.0.1:4200"),
            "{text}"
        );
        assert!(text.contains(r"python3 x\x0a::error::forged"), "{text}");
        assert!(!text.lines().any(|l| l.starts_with("::")), "{text}");
    }

    #[test]
    fn hostile_argv_stays_on_its_line() {
        let text = render(&fixtures::hostile().report, Style::default());
        insta::assert_snapshot!(text);
        assert!(!text.contains('\r'));
        assert!(!text.contains("hunter2"));
    }

    #[test]
    fn thousands_of_commands_stay_readable() {
        let text = render(&fixtures::many_signatures(5000).report, Style::default());
        assert!(
            text.contains("\n  … and 4950 commands (4950 processes) more"),
            "{text}"
        );
        assert!(text.lines().count() < 400, "{} lines", text.lines().count());
    }

    #[test]
    fn known_leaks_used_table() {
        let mut r = fixtures::prefect().report;
        let text = "version = 1\n[[leak]]\nsignature = \"python -m uvicorn --app-dir /home/runner/work/app/app/.venv/lib/python3.12/site-packages --factory prefect.server.api.server:create_app --host 127.0.0.1 --port <N> --log-level error --lifespan on\"\nmax = 80\nreason = \"r\"\nowner = \"@team\"\nexpires = 2099-01-01\n[[leak]]\nsignature = \"gone <N>\"\nmax = 1\nreason = \"r\"\nowner = \"@team\"\n";
        let f = crate::gate::file::parse(text, "k.toml").unwrap();
        crate::gate::apply(&mut r, &crate::gate::Known::from_file(&f, "k.toml"), false);
        let out = render(&r, Style::default());
        let k = r.known_leaks.as_ref().unwrap();
        assert_eq!((k.known, k.new, k.removable), (80, 2, 1), "{out}");
        assert!(
            out.contains("80 known, NEW: 2 above what the known leaks tolerate"),
            "{out}"
        );
        insta::assert_snapshot!(
            &out[out.find("Known leaks used").unwrap()..out.find("\nPorts:").unwrap()]
        );
    }

    #[test]
    fn colour_only_when_asked() {
        let r = fixtures::prefect().report;
        assert!(!render(&r, Style { color: false }).contains('\x1b'));
        assert!(render(&r, Style { color: true }).contains("\x1b[31;1m"));
    }
}
