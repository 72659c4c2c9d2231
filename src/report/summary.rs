//! The job summary (`$GITHUB_STEP_SUMMARY`) in GitHub-flavoured Markdown: a headline, a
//! table by signature, what to do next (the exact `allow:` lines), the process forests in
//! collapsible `<details>`, and — when the guard recorded samples — a chart of the job's
//! processes over time.
//!
//! Everything from a process (argv, test ids, socket paths) is untrusted: in text it is
//! entity-escaped ([`md`]) so it can neither break the table nor become a link, an image,
//! a mention or HTML; in `<pre>` blocks it is HTML-escaped; in code fences the fence is
//! longer than any backtick run inside. The output never exceeds the cap it is given
//! (GitHub refuses summaries over 1 MiB); what did not fit is named in a closing note.

use crate::report::json::{PortState, SignatureClass};
use std::fmt::Write;

use super::json::{RanAs, Report, ReportProcess, Sample, Signature};
use super::signature::{describe_fates, describe_tallies, port_ranges};
use super::terminal::{commands_and_processes, describe_fate, plural, shell_quote};
use super::tree::{draw_forest, sanitize, truncate};

/// The default cap: well under GitHub's 1 MiB per step, leaving room for what else the
/// step writes.
pub const SUMMARY_CAP: usize = 900 * 1024;
/// Table rows before "and N more commands".
const MAX_ROWS: usize = 100;
/// `allow:` suggestions listed.
const MAX_ALLOW: usize = 20;
/// Signatures with a `<details>` block of trees, and trees in each.
const MAX_TREE_SIGNATURES: usize = 50;
const MAX_TREES: usize = 20;
/// Longest command in a table cell or a tree line.
const MAX_COMMAND: usize = 300;
/// Kept free for the closing note and footer whatever else happens.
const RESERVE: usize = 2048;
/// Points in the chart of samples.
const MAX_POINTS: usize = 60;

/// Escapes untrusted text for Markdown text and table cells: every character that
/// Markdown or HTML could read as syntax becomes an entity, control characters `\xNN`.
pub fn md(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '|' | '`' | '*' | '_' | '[' | ']' | '(' | ')' | '#' | '!' | '~' | '@' | '\\' | '{'
            | '}' | '$' | ':' | '\'' => {
                let _ = write!(out, "&#{};", c as u32);
            }
            c if c.is_control() => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Escapes untrusted text for a `<pre>` block.
pub fn html(text: &str) -> String {
    sanitize(text)
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A code fence longer than any run of backticks in `body`.
fn fence(body: &str) -> String {
    let mut longest = 0;
    let mut run = 0;
    for c in body.chars() {
        run = if c == '`' { run + 1 } else { 0 };
        longest = longest.max(run);
    }
    "`".repeat((longest + 1).max(3))
}

/// Output with a hard size limit: a chunk that does not fit is refused whole.
struct Capped {
    out: String,
    cap: usize,
    dropped: Vec<String>,
}

impl Capped {
    fn fits(&self, chunk: &str) -> bool {
        self.out.len() + chunk.len() + RESERVE <= self.cap
    }

    /// Appends `chunk` if it fits and nothing before it was left out (so the output
    /// never skips a part and goes on); else records that `what` was left out.
    fn push(&mut self, chunk: &str, what: &str) -> bool {
        if self.dropped.is_empty() && self.fits(chunk) {
            self.out.push_str(chunk);
            true
        } else {
            if !self.dropped.iter().any(|d| d == what) {
                self.dropped.push(what.to_owned());
            }
            false
        }
    }
}

fn kind(s: &Signature) -> &'static str {
    match s.class {
        SignatureClass::Job => "leaked",
        SignatureClass::Allowed => "allowed",
        SignatureClass::Unattributed => "unattributed",
    }
}

fn headline(r: &Report) -> String {
    let mut out = String::new();
    if r.leaked == 0 && r.signatures.is_empty() {
        let _ = writeln!(out, "## ✅ ci-janitor: clean\n");
        let _ = writeln!(
            out,
            "Nothing the job started is still running (checked in {:.2} s).\n",
            r.elapsed_ms as f64 / 1000.0
        );
        return out;
    }
    let icon = if r.failed {
        "❌"
    } else if r.leaked > 0 {
        "⚠️"
    } else {
        "✅"
    };
    let title = if r.leaked > 0 {
        plural(r.leaked, "leaked process", "leaked processes")
    } else {
        "no failing leaks".into()
    };
    let _ = writeln!(out, "## {icon} ci-janitor: {title}\n");
    let commands = r
        .signatures
        .iter()
        .filter(|s| s.class == SignatureClass::Job)
        .count();
    let mut said = Vec::new();
    if r.leaked > 0 {
        said.push(format!(
            "The job left **{}** running, from **{}**.",
            plural(r.leaked, "process", "processes"),
            plural(commands, "command", "commands")
        ));
    }
    if r.dry_run {
        said.push("Dry run: nothing was signalled.".into());
    } else {
        said.push(format!(
            "{} killed in {} ({:.2} s).",
            plural(r.killed, "process was", "processes were"),
            plural(r.rounds as usize, "round", "rounds"),
            r.elapsed_ms as f64 / 1000.0
        ));
    }
    let freed = r
        .ports
        .iter()
        .filter(|p| p.outcome == PortState::Freed)
        .count();
    let held = r
        .ports
        .iter()
        .filter(|p| p.outcome == PortState::StillHeld)
        .count();
    if !r.ports.is_empty() && !r.dry_run {
        said.push(if held == 0 {
            format!(
                "{} they listened on {} free again.",
                plural(freed, "socket", "sockets"),
                if freed == 1 { "is" } else { "are" }
            )
        } else {
            format!(
                "**{} still held** after the sweep.",
                plural(held, "socket is", "sockets are")
            )
        });
    }
    let survivors = r
        .processes
        .iter()
        .filter(|p| super::terminal::is_survivor(p))
        .count();
    if survivors > 0 {
        said.push(format!(
            "**{} still alive** after the sweep.",
            plural(survivors, "process is", "processes are")
        ));
    }
    said.push(if r.failed {
        "This fails the run.".into()
    } else if r.leaked > 0 {
        "The policy lets the run pass.".into()
    } else {
        "Nothing here fails the run.".into()
    });
    let _ = writeln!(out, "{}\n", said.join(" "));
    out
}

/// The "known leaks used" table: each entry of the known leaks, what it matched, its max.
fn known_leaks_section(r: &Report) -> String {
    let Some(k) = &r.known_leaks else {
        return String::new();
    };
    let from = match k.source {
        super::json::KnownSource::File => format!("<code>{}</code>", md(&k.origin)),
        super::json::KnownSource::Base => format!("the base commit's run ({})", md(&k.origin)),
    };
    let mut out = format!(
        "### Known leaks used\n\nFrom {from}: **{} known**, **{} new**, {} that matched nothing.\n\n",
        plural(k.known, "process", "processes"),
        plural(k.new, "process", "processes"),
        plural(k.removable, "entry", "entries"),
    );
    if k.entries.is_empty() {
        return out;
    }
    out.push_str(
        "| Entry | Seen | Max | Status | Owner | Expires |\n|---|---:|---:|---|---|---|\n",
    );
    for e in k.entries.iter().take(MAX_ROWS) {
        let _ = writeln!(
            out,
            "| <code>{}</code> | {} | {} | {} | {} | {} |",
            md(&truncate(e.signature.clone(), MAX_COMMAND)),
            e.seen,
            e.max,
            e.status.describe(),
            md(e.owner.as_deref().unwrap_or("")),
            md(e.expires.as_deref().unwrap_or("")),
        );
    }
    if k.entries.len() > MAX_ROWS {
        let _ = writeln!(
            out,
            "\n… and {} more entries: all are in the JSON report.",
            k.entries.len() - MAX_ROWS
        );
    }
    out.push('\n');
    out
}

fn table_row(r: &Report, s: &Signature) -> String {
    let ports = if s.ports.is_empty() {
        s.listening.join(", ")
    } else {
        port_ranges(&s.ports)
    };
    // A step by the name the workflow file gives it, as the run's log shows it; the id
    // (with what a generated id means) only when the file was not there to read.
    let steps: Vec<super::json::Tally> = s
        .steps
        .iter()
        .map(|t| super::json::Tally {
            value: r
                .step_names
                .get(&t.value)
                .cloned()
                .unwrap_or_else(|| super::signature::describe_step(&t.value, &r.step_names)),
            count: t.count,
        })
        .collect();
    let mut tests = describe_tallies(&s.tests, 3);
    if !s.xdist_workers.is_empty() {
        tests = format!("{tests} (xdist {})", s.xdist_workers.join(", "));
    }
    let kind = match s.gate {
        Some(g) if g.new == 0 => format!("{}, known", kind(s)),
        Some(g) if g.known == 0 => format!("{}, **new**", kind(s)),
        Some(g) => format!("{}, {} known + **{} new**", kind(s), g.known, g.new),
        None => kind(s).to_owned(),
    };
    format!(
        "| {} | {} | <code>{}</code> | {} | {} | {} | {} |\n",
        kind,
        s.count,
        md(&truncate(s.command.clone(), MAX_COMMAND)),
        md(&truncate(ports, MAX_COMMAND)),
        md(&describe_tallies(&steps, 2)),
        md(&truncate(tests, 3 * MAX_COMMAND)),
        md(&describe_fates(&s.fates)),
    )
}

fn next_steps(r: &Report) -> String {
    let job: Vec<&Signature> = r
        .signatures
        .iter()
        .filter(|s| s.class == SignatureClass::Job)
        .collect();
    let unattributed = r
        .signatures
        .iter()
        .filter(|s| s.class == SignatureClass::Unattributed)
        .count();
    if job.is_empty() && unattributed == 0 {
        return String::new();
    }
    let action = r.ran_as == RanAs::Action;
    let mut out = String::from("### What to do next\n\n");
    if !job.is_empty() {
        out.push_str(
            "- **Fix the leak** where it starts: stop what the tests and steps above started \
             (a fixture's teardown, a `finally`, a context manager), then reproduce locally \
             with `ci-janitor run -- <your test command>`.\n",
        );
        let patterns: Vec<String> = job
            .iter()
            .take(MAX_ALLOW)
            .map(|s| sanitize(&s.allow_pattern))
            .collect();
        if action {
            out.push_str(
                "- **Or accept it**: an allowed leak is still killed but no longer fails the \
                 run. Add to the action's inputs:\n\n",
            );
            let mut yaml = String::from("with:\n  allow: |\n");
            for p in &patterns {
                let _ = writeln!(yaml, "    {p}");
            }
            let f = fence(&yaml);
            let _ = write!(out, "{f}yaml\n{yaml}{f}\n\n");
        } else {
            out.push_str(
                "- **Or accept it**: an allowed leak is still killed but no longer fails the \
                 run:\n\n",
            );
            let mut sh = String::from("ci-janitor sweep");
            for p in &patterns {
                let _ = write!(sh, " \\\n  --allow {}", shell_quote(p));
            }
            sh.push('\n');
            let f = fence(&sh);
            let _ = write!(out, "{f}sh\n{sh}{f}\n\n");
        }
        if job.len() > MAX_ALLOW {
            let _ = writeln!(
                out,
                "  ({} more: see `allow_pattern` in the JSON report.)\n",
                job.len() - MAX_ALLOW
            );
        }
    }
    if unattributed > 0 {
        let (tell, kill, ignore) = if action {
            (
                "check the guard's section of the log: it journals every process born into the job",
                "set the input `kill-unattributed: true`",
                "list them in the input `ignore`",
            )
        } else {
            (
                "let ci-janitor tell: start `ci-janitor guard start` after the snapshot, mark \
                 the job with `eval \"$(ci-janitor snapshot --export)\"`, or run it under \
                 `ci-janitor run`",
                "pass `--kill-unattributed`",
                "pass `--ignore 'PATTERN'`",
            )
        };
        let _ = writeln!(
            out,
            "- **Unattributed** processes appeared during the job with no evidence that it \
             started them, so they were left alone. If they are the job's, {tell}; to kill \
             them without evidence, {kill}. If they belong to the machine, {ignore}.\n"
        );
    }
    out
}

/// The processes a tree is drawn from: every reported (non-protected, non-ignored) one.
fn reportable(r: &Report) -> Vec<&ReportProcess> {
    r.processes
        .iter()
        .filter(|p| matches!(p.class.name(), "job" | "allowed" | "unattributed"))
        .collect()
}

fn tree_line(p: &ReportProcess) -> String {
    let cmd = p.command_line();
    let mut line = format!(
        "{} {}  [{}]",
        p.pid,
        html(&truncate(cmd, MAX_COMMAND)),
        html(&describe_fate(p))
    );
    if !p.listening.is_empty() {
        let _ = write!(line, "  listening: {}", html(&p.listening.join(", ")));
    }
    line
}

/// One `<details>` block per signature whose processes are the roots of trees (a child
/// appears inside its parent's tree, under the parent's signature).
fn forests(r: &Report, c: &mut Capped) {
    let procs = reportable(r);
    if procs.is_empty() {
        return;
    }
    let index: std::collections::HashMap<i32, usize> =
        procs.iter().enumerate().map(|(i, p)| (p.pid, i)).collect();
    let mut children: Vec<Vec<usize>> = vec![Vec::new(); procs.len()];
    let mut is_root = vec![true; procs.len()];
    for (i, p) in procs.iter().enumerate() {
        if let Some(&parent) = index.get(&p.ppid) {
            if parent != i {
                children[parent].push(i);
                is_root[i] = false;
            }
        }
    }
    if !c.push("### Process trees\n\n", "the process trees") {
        return;
    }
    let mut shown = 0;
    for s in &r.signatures {
        let roots: Vec<usize> = s
            .pids
            .iter()
            .filter_map(|pid| index.get(pid).copied())
            .filter(|&i| is_root[i])
            .collect();
        if roots.is_empty() {
            continue;
        }
        if shown == MAX_TREE_SIGNATURES {
            c.push(
                "Trees of the less frequent commands are in the JSON report.\n\n",
                "some process trees",
            );
            break;
        }
        shown += 1;
        let mut block = format!(
            "<details><summary>{} × <code>{}</code>{}</summary>\n\n<pre>\n",
            s.count,
            md(&truncate(s.command.clone(), MAX_COMMAND)),
            match s.ports.len() {
                0 => String::new(),
                1 => format!(" — port {}", s.ports[0]),
                _ => format!(" — ports {}", md(&port_ranges(&s.ports))),
            }
        );
        block.push_str(&draw_forest(
            &roots[..roots.len().min(MAX_TREES)],
            |i| children[i].as_slice(),
            |i| Some(tree_line(procs[i])),
        ));
        if roots.len() > MAX_TREES {
            let _ = writeln!(
                block,
                "… and {} more trees like these",
                roots.len() - MAX_TREES
            );
        }
        block.push_str("</pre>\n\n</details>\n\n");
        if !c.push(&block, "some process trees") {
            break;
        }
    }
}

/// Shorter jobs get a table: a chart of a few seconds shows nothing a table does not.
const MIN_CHART_SECONDS: f64 = 10.0;
/// Rows of that table.
const MAX_TABLE_ROWS: usize = 12;

/// The job's processes over time, from the guard's samples: a Mermaid line chart on a
/// numeric time axis, or a small table when the job is too short for a chart.
///
/// Samples come at uneven times (the guard samples on change), so the chart resamples
/// them into equal time buckets: each point is the largest count seen in its bucket (a
/// spike shows), or the count carried over from before when no sample fell in it. Equal
/// buckets are what make the points' positions on the axis true.
fn chart(samples: &[Sample], baseline_ms: u64) -> String {
    if samples.len() < 2 {
        return String::new();
    }
    let secs = |s: &Sample| s.at_unix_ms.saturating_sub(baseline_ms) as f64 / 1000.0;
    let end = samples.iter().map(secs).fold(0.0, f64::max);
    let mut out = String::from("### The job's processes over time\n\n");
    if end < MIN_CHART_SECONDS {
        out.push_str("| Seconds since the snapshot | Processes |\n|---:|---:|\n");
        let per = samples.len().div_ceil(MAX_TABLE_ROWS);
        for b in samples.chunks(per) {
            let most = b.iter().max_by_key(|s| s.processes).unwrap_or(&b[0]);
            let _ = writeln!(out, "| {:.1} | {} |", secs(most), most.processes);
        }
        out.push('\n');
        return out;
    }
    let width = end / MAX_POINTS as f64;
    let mut points = Vec::with_capacity(MAX_POINTS);
    let mut carried = samples[0].processes;
    let mut next = 0;
    for i in 0..MAX_POINTS {
        let upto = if i + 1 == MAX_POINTS {
            f64::INFINITY
        } else {
            (i + 1) as f64 * width
        };
        let mut most = None;
        while next < samples.len() && secs(&samples[next]) < upto {
            carried = samples[next].processes;
            most = Some(most.map_or(carried, |m: u32| m.max(carried)));
            next += 1;
        }
        points.push(most.unwrap_or(carried));
    }
    let ys: Vec<String> = points.iter().map(u32::to_string).collect();
    let _ = write!(
        out,
        "```mermaid\nxychart-beta\n    x-axis \"seconds since the snapshot\" 0 --> {}\n    \
         y-axis \"processes\"\n    line [{}]\n```\n\n",
        end.ceil() as u64,
        ys.join(", ")
    );
    out
}

/// Renders the summary, at most `cap` bytes. `report_path` is where the JSON report was
/// written, if it was.
/// Why the job was stuck (captured before the kill): the verdicts, then the facts folded.
fn hang_section(h: &crate::diagnose::Hang) -> String {
    let mut s = format!("### Why the job was stuck ({})\n\n", md(&h.reason));
    if h.verdicts.is_empty() {
        s.push_str("No verdict: the facts do not show what anything waited on.\n");
    }
    for v in &h.verdicts {
        let _ = writeln!(s, "- {}", md(&v.sentence));
    }
    for m in &h.missing {
        let _ = writeln!(s, "- _missing: {}_", md(m));
    }
    let _ = write!(
        s,
        "\n<details><summary>{} at the capture: states, connections, pipes, stacks</summary>\n\n<pre>{}</pre>\n</details>\n\n",
        plural(h.processes.len(), "job process", "job processes"),
        truncate(h.render_text(), 20_000)
            .lines()
            .map(html)
            .collect::<Vec<_>>()
            .join("\n")
    );
    s
}

pub fn render(r: &Report, report_path: Option<&str>, cap: usize) -> String {
    let mut c = Capped {
        out: String::new(),
        cap,
        dropped: Vec::new(),
    };
    c.push(&headline(r), "the headline");
    if let Some(h) = &r.hang {
        c.push(&hang_section(h), "the hang report");
    }
    if !r.pipe_holders.is_empty() {
        let mut s = String::from("### A process held a step's output open\n\n");
        for p in r.pipe_holders.iter().take(MAX_ROWS) {
            let _ = writeln!(s, "- {}", md(&p.sentence));
        }
        s.push('\n');
        c.push(&s, "the pipe holders");
    }
    if !r.signatures.is_empty() {
        c.push(
            "| Kind | Processes | Command | Ports | Step | Tests | How they ended |\n\
             |---|---:|---|---|---|---|---|\n",
            "the table",
        );
        for s in r.signatures.iter().take(MAX_ROWS) {
            if !c.push(&table_row(r, s), "rows of the table") {
                break;
            }
        }
        if r.signatures.len() > MAX_ROWS && c.dropped.is_empty() {
            c.push(
                &format!(
                    "\n… and {} more: all are in the JSON report.\n",
                    commands_and_processes(&r.signatures[MAX_ROWS..])
                ),
                "rows of the table",
            );
        }
        c.push("\n", "the table");
        c.push(&known_leaks_section(r), "the known leaks used");
        c.push(&next_steps(r), "what to do next");
        forests(r, &mut c);
    }
    if let Some(samples) = &r.samples {
        c.push(&chart(samples, r.baseline_taken_at_unix_ms), "the chart");
    }
    // The reserve guarantees room for this.
    let mut tail = String::new();
    if !c.dropped.is_empty() {
        let _ = writeln!(
            tail,
            "> [!NOTE]\n> Shortened to stay under GitHub's summary size limit: left out {}.{}\n",
            c.dropped.join(", "),
            if report_path.is_some() {
                " Everything is in the JSON report."
            } else {
                ""
            }
        );
    }
    let _ = write!(
        tail,
        "<sub>ci-janitor {}",
        md(&truncate(r.tool_version.clone(), 40))
    );
    if r.redacted_values > 0 {
        let _ = write!(
            tail,
            " · {} redacted from command lines",
            plural(r.redacted_values, "secret", "secrets")
        );
    }
    if let Some(p) = report_path {
        let _ = write!(
            tail,
            " · JSON report: <code>{}</code> (render it again with <code>ci-janitor report \
             FILE --format text</code>)",
            md(&truncate(p.to_owned(), 300))
        );
    }
    tail.push_str("</sub>\n\n");
    if c.out.len() + tail.len() <= c.cap {
        c.out.push_str(&tail);
    }
    c.out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;

    const PATH: Option<&str> = Some("/home/runner/work/_temp/ci-janitor/report.json");

    #[test]
    fn prefect_summary() {
        insta::assert_snapshot!(render(&fixtures::prefect().report, PATH, SUMMARY_CAP));
    }

    #[test]
    fn mcp_summary() {
        insta::assert_snapshot!(render(&fixtures::mcp().report, None, SUMMARY_CAP));
    }

    #[test]
    fn hang_summary() {
        let built = fixtures::hung();
        let text = render(&built.report, PATH, SUMMARY_CAP);
        assert!(
            text.contains("### Why the job was stuck (signal SIGTERM)"),
            "{text}"
        );
        insta::assert_snapshot!(text);
    }

    #[test]
    fn clean_summary() {
        insta::assert_snapshot!(render(&fixtures::clean().report, PATH, SUMMARY_CAP));
    }

    #[test]
    fn hostile_summary() {
        let text = render(&fixtures::hostile().report, None, SUMMARY_CAP);
        insta::assert_snapshot!(text);
        for bad in ["hunter2", "pa55w0rd", "\r"] {
            assert!(!text.contains(bad), "{bad:?} in the summary");
        }
        let live = outside_fences(&text);
        for bad in ["<script", "<img"] {
            assert!(!live.contains(bad), "{bad:?} outside code fences");
        }
        let markdown = live
            .split("<pre>")
            .enumerate()
            .map(|(i, part)| {
                if i == 0 {
                    part
                } else {
                    part.split_once("</pre>").map_or("", |p| p.1)
                }
            })
            .collect::<String>();
        for bad in ["`id`", "|b`", "::error", "](", "@"] {
            assert!(!markdown.contains(bad), "{bad:?} in Markdown text");
        }
    }

    /// Samples every 250 ms of a job of `secs` seconds whose count follows `count(t)`.
    fn sampled(r: &Report, secs: u64, count: impl Fn(f64) -> u32) -> Option<Vec<Sample>> {
        Some(
            (0..=secs * 4)
                .map(|i| Sample {
                    at_unix_ms: r.baseline_taken_at_unix_ms + 250 * i,
                    processes: count(i as f64 / 4.0),
                })
                .collect(),
        )
    }

    /// The section from its heading to the next one.
    fn section<'a>(text: &'a str, heading: &str) -> &'a str {
        let from = text.find(heading).expect("the section");
        let rest = &text[from..];
        let end = ["\n#", "\n<sub>"]
            .iter()
            .filter_map(|m| rest[3..].find(m))
            .min()
            .map_or(rest.len(), |n| n + 4);
        &rest[..end]
    }

    #[test]
    fn samples_are_charted_only_when_present() {
        let r = fixtures::prefect().report;
        assert!(!render(&r, None, SUMMARY_CAP).contains("processes over time"));
    }

    #[test]
    fn chart_of_a_forty_second_job_on_a_time_axis() {
        // 4 processes, a test session's servers up to 81 from 10 s to 25 s, then 22 left
        // to the end: the 81 must show where it happened on the axis.
        let mut r = fixtures::prefect().report;
        r.samples = sampled(&r, 40, |t| match t {
            t if t < 10.0 => 4,
            t if t < 25.0 => 81,
            _ => 22,
        });
        let text = render(&r, None, SUMMARY_CAP);
        let chart = section(&text, "### The job's processes over time");
        insta::assert_snapshot!(chart);
        assert!(chart.contains("0 --> 40"), "a numeric axis of 40 seconds");
        let line = chart
            .lines()
            .find(|l| l.contains("line ["))
            .expect("a line");
        let points: Vec<u32> = line
            .trim()
            .trim_start_matches("line [")
            .trim_end_matches(']')
            .split(", ")
            .map(|v| v.parse().expect("a number"))
            .collect();
        assert_eq!(points.len(), MAX_POINTS);
        // Each point covers 40/60 s: 81 from point 15 (10 s) to 37 (24.7 s to 25.3 s).
        assert_eq!((points[0], points[14], points[15]), (4, 4, 81));
        assert_eq!((points[37], points[38]), (81, 22));
        assert_eq!(points[59], 22);
    }

    #[test]
    fn a_short_job_gets_a_table() {
        let mut r = fixtures::prefect().report;
        r.samples = sampled(&r, 3, |t| if t < 1.0 { 4 } else { 9 });
        let text = render(&r, None, SUMMARY_CAP);
        let table = section(&text, "### The job's processes over time");
        assert!(!table.contains("mermaid"));
        insta::assert_snapshot!(table);
    }

    #[test]
    fn step_names_come_from_the_workflow_file() {
        let mut r = fixtures::prefect().report;
        let names = crate::workflow::step_names_in(include_str!("testdata/prefect.yml"), "test");
        crate::report::json::name_steps(&mut r, &names);
        r.ran_as = RanAs::Action;
        let text = render(&r, PATH, SUMMARY_CAP);
        assert!(text.contains("Run tests &#40;xdist&#41;"), "{text}");
        assert!(!text.contains("run step #2 without an id"));
        // Advice in the Action's terms: inputs, not flags.
        assert!(!text.contains("--allow"));
        insta::assert_snapshot!(
            section(&text, "| Kind |").to_owned() + section(&text, "### What to do next")
        );
    }

    #[test]
    fn five_thousand_leaks_stay_under_the_cap() {
        let signatures = fixtures::many_signatures(5000);
        let trees = fixtures::many_trees(5000);
        for b in [&signatures, &trees] {
            let text = render(&b.report, PATH, SUMMARY_CAP);
            assert!(text.len() <= SUMMARY_CAP, "{} bytes", text.len());
            assert!(text.ends_with("</sub>\n\n"), "the footer survives");
            assert!(!text.contains("Shortened"), "the count limits come first");
        }
        let text = render(&signatures.report, PATH, SUMMARY_CAP);
        assert!(text.contains("… and 4900 commands (4900 processes) more"));
        // Whatever the cap, the text stays under it and says what it left out.
        // The count limits keep these well under the cap (about 36 KB and 3 KB).
        assert!(render(&signatures.report, PATH, SUMMARY_CAP).len() < 40_000);
        assert!(render(&trees.report, PATH, SUMMARY_CAP).len() < 4_000);
        let caps = [
            (&signatures, 8 * 1024),
            (&signatures, 32 * 1024),
            (&trees, 3000),
        ];
        for (b, cap) in caps {
            let text = render(&b.report, PATH, cap);
            assert!(
                text.len() <= cap,
                "{} bytes over a cap of {cap}",
                text.len()
            );
            assert!(text.contains("> Shortened to stay under GitHub's summary size limit"));
            assert!(text.contains("Everything is in the JSON report."));
            assert!(text.ends_with("</sub>\n\n"));
        }
    }

    /// Text outside code fences (where Markdown and HTML are live).
    fn outside_fences(text: &str) -> String {
        let mut live = String::new();
        let mut fenced = false;
        for line in text.lines() {
            if line.starts_with("```") {
                fenced = !fenced;
            } else if !fenced {
                live.push_str(line);
                live.push('\n');
            }
        }
        live
    }

    #[test]
    fn known_leaks_used_section() {
        let mut r = fixtures::prefect().report;
        let text = "version = 1\n[[leak]]\nsignature = \"python -m uvicorn --app-dir /home/runner/work/app/app/.venv/lib/python3.12/site-packages --factory prefect.server.api.server:create_app --host 127.0.0.1 --port <N> --log-level error --lifespan on\"\nmax = 82\nreason = \"r\"\nowner = \"@team\"\n[[leak]]\nsignature = \"gone <N>\"\nmax = 1\nreason = \"r\"\nowner = \"@team\"\nexpires = 2099-01-01\n";
        let f = crate::gate::file::parse(text, "k.toml").unwrap();
        crate::gate::apply(&mut r, &crate::gate::Known::from_file(&f, "k.toml"), false);
        let out = render(&r, PATH, SUMMARY_CAP);
        assert!(out.contains("| leaked, known | 82 |"), "{out}");
        insta::assert_snapshot!(section(&out, "### Known leaks used"));
    }

    #[test]
    fn escaping() {
        assert_eq!(
            md("a|b`c<d>&e[f](g)@h\n*i*"),
            "a&#124;b&#96;c&lt;d&gt;&amp;e&#91;f&#93;&#40;g&#41;&#64;h\\x0a&#42;i&#42;"
        );
        assert_eq!(html("<pre>&\r"), "&lt;pre&gt;&amp;\\x0d");
        assert_eq!(fence("a ``` b"), "````");
        assert_eq!(fence("plain"), "```");
    }
}
