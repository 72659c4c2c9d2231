//! JUnit XML, so that GitLab, Jenkins and other CI systems show leaks in their test UI: one
//! test case per signature, failing when it is a failing leak. Test case names are the
//! masked command lines, stable from run to run, so "new" and "fixed" comparisons work.
//!
//! XML 1.0 cannot carry most control characters at all, not even as references; they are
//! replaced by a visible `\xNN` (as are U+FFFE and U+FFFF). Everything else is escaped.

use crate::report::json::SignatureClass;
use std::fmt::Write;

use super::json::{Report, Signature};
use super::signature::{describe_fates, port_ranges};
use super::terminal::{describe_evidence, headline, plural, shell_quote, signature_facts};

/// Whether XML 1.0 allows `c` at all.
fn xml_allowed(c: char) -> bool {
    matches!(c, '\t' | '\n' | '\r' | '\u{20}'..='\u{D7FF}' | '\u{E000}'..='\u{FFFD}' | '\u{10000}'..)
}

fn escape(text: &str, attribute: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' if attribute => out.push_str("&quot;"),
            '\'' if attribute => out.push_str("&apos;"),
            // Attribute values are normalised by parsers: keep line breaks as references.
            '\n' if attribute => out.push_str("&#10;"),
            '\r' => out.push_str("&#13;"),
            '\t' if attribute => out.push_str("&#9;"),
            c if !xml_allowed(c) => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Escapes text content.
pub fn text(s: &str) -> String {
    escape(s, false)
}

/// Escapes an attribute value (for double quotes).
pub fn attr(s: &str) -> String {
    escape(s, true)
}

/// `2025-10-09T08:53:20Z` from milliseconds since the epoch.
pub fn iso8601(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Days to a civil date (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

fn details(r: &Report, s: &Signature) -> String {
    let mut lines = vec![format!("{} × {}", s.count, s.command)];
    lines.extend(signature_facts(r, s));
    if !s.evidence.is_empty() {
        lines.push(format!("evidence: {}", describe_evidence(&s.evidence)));
    }
    lines.push(format!("ended: {}", describe_fates(&s.fates)));
    lines.push(format!(
        "pids: {}",
        s.pids
            .iter()
            .map(i32::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    ));
    if s.class == SignatureClass::Job {
        lines.push(format!(
            "to accept it: --allow {}",
            shell_quote(&s.allow_pattern)
        ));
    }
    lines.join("\n")
}

/// Renders the report as JUnit XML.
pub fn render(r: &Report) -> String {
    let failures = r
        .signatures
        .iter()
        .filter(|s| s.class == SignatureClass::Job && r.failed)
        .count();
    let skipped = r
        .signatures
        .iter()
        .filter(|s| s.class == SignatureClass::Unattributed)
        .count();
    let tests = r.signatures.len().max(1);
    let time = format!("{:.3}", r.elapsed_ms as f64 / 1000.0);
    let mut out = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
    let _ = writeln!(
        out,
        "<testsuites name=\"ci-janitor\" tests=\"{tests}\" failures=\"{failures}\" errors=\"0\" \
         skipped=\"{skipped}\" time=\"{time}\">"
    );
    let _ = writeln!(
        out,
        "  <testsuite name=\"ci-janitor: processes left running\" tests=\"{tests}\" \
         failures=\"{failures}\" errors=\"0\" skipped=\"{skipped}\" time=\"{time}\" \
         timestamp=\"{}\" hostname=\"{}\">",
        iso8601(r.swept_at_unix_ms),
        attr(r.machine.hostname.as_deref().unwrap_or("localhost"))
    );
    let _ = writeln!(out, "    <properties>");
    for (name, value) in [
        ("ci-janitor.version", r.tool_version.clone()),
        ("ci-janitor.schema_version", r.schema_version.to_string()),
        ("ci-janitor.leaked", r.leaked.to_string()),
        ("ci-janitor.killed", r.killed.to_string()),
        ("ci-janitor.dry_run", r.dry_run.to_string()),
    ] {
        let _ = writeln!(
            out,
            "      <property name=\"{name}\" value=\"{}\"/>",
            attr(&value)
        );
    }
    let _ = writeln!(out, "    </properties>");
    if r.signatures.is_empty() {
        let _ = writeln!(
            out,
            "    <testcase name=\"no processes left running\" classname=\"ci-janitor\" \
             time=\"{time}\"/>"
        );
    }
    for s in &r.signatures {
        let _ = write!(
            out,
            "    <testcase name=\"{}\" classname=\"ci-janitor.{}\" time=\"0\"",
            attr(&s.command),
            attr(s.class.as_str())
        );
        let body = text(&details(r, s));
        match s.class {
            SignatureClass::Job if r.failed => {
                let message = format!(
                    "{} left running{}",
                    plural(s.count, "process", "processes"),
                    if s.ports.is_empty() {
                        String::new()
                    } else {
                        format!(" (ports {})", port_ranges(&s.ports))
                    }
                );
                let _ = write!(
                    out,
                    ">\n      <failure type=\"leak\" message=\"{}\">{body}</failure>\n    \
                     </testcase>\n",
                    attr(&message)
                );
            }
            SignatureClass::Unattributed => {
                let _ = write!(
                    out,
                    ">\n      <skipped message=\"appeared during the job with no evidence it is \
                     the job's; not signalled unless --kill-unattributed\"/>\n      \
                     <system-out>{body}</system-out>\n    </testcase>\n"
                );
            }
            _ => {
                let _ = write!(
                    out,
                    ">\n      <system-out>{body}</system-out>\n    </testcase>\n"
                );
            }
        }
    }
    let _ = writeln!(
        out,
        "    <system-out>{}</system-out>",
        text(&format!("ci-janitor: {}", headline(r)))
    );
    let _ = writeln!(out, "  </testsuite>");
    let _ = writeln!(out, "</testsuites>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::fixtures;
    use quick_xml::events::Event;

    /// Parses `xml` with a real XML parser; returns (test cases, failures, skipped) and
    /// every test case name, decoded.
    fn parse(xml: &str) -> (usize, usize, usize, Vec<String>) {
        let mut reader = quick_xml::Reader::from_str(xml);
        reader.config_mut().check_end_names = true;
        let (mut cases, mut failures, mut skipped) = (0, 0, 0);
        let mut names = Vec::new();
        let mut roots = 0;
        loop {
            match reader.read_event() {
                Ok(Event::Start(e) | Event::Empty(e)) => match e.name().as_ref() {
                    b"testsuites" => roots += 1,
                    b"testcase" => {
                        cases += 1;
                        let name = e
                            .try_get_attribute("name")
                            .expect("attributes parse")
                            .expect("a name")
                            .normalized_value(quick_xml::XmlVersion::Explicit1_0)
                            .expect("the name decodes")
                            .into_owned();
                        names.push(name);
                    }
                    b"failure" => failures += 1,
                    b"skipped" => skipped += 1,
                    _ => {}
                },
                Ok(Event::Text(t)) => {
                    t.decode().expect("text decodes");
                }
                Ok(Event::Eof) => break,
                Ok(_) => {}
                Err(e) => panic!("not well-formed at {}: {e}\n{xml}", reader.error_position()),
            }
        }
        assert_eq!(roots, 1, "one root element");
        (cases, failures, skipped, names)
    }

    #[test]
    fn prefect_junit() {
        let xml = render(&fixtures::prefect().report);
        let (cases, failures, _, names) = parse(&xml);
        assert_eq!((cases, failures), (1, 1));
        assert!(
            names[0].starts_with("python -m uvicorn --app-dir"),
            "{names:?}"
        );
        insta::assert_snapshot!(xml);
    }

    #[test]
    fn mcp_junit() {
        let xml = render(&fixtures::mcp().report);
        let (cases, failures, skipped, _) = parse(&xml);
        assert_eq!((cases, failures, skipped), (4, 2, 1));
        insta::assert_snapshot!(xml);
    }

    #[test]
    fn clean_junit_has_one_passing_case() {
        let xml = render(&fixtures::clean().report);
        assert_eq!(parse(&xml).0, 1);
        insta::assert_snapshot!(xml);
    }

    #[test]
    fn hostile_argv_is_well_formed_xml() {
        let xml = render(&fixtures::hostile().report);
        let (cases, failures, _, names) = parse(&xml);
        assert_eq!((cases, failures), (2, 2));
        assert!(names.iter().any(|n| n.contains("<script>")), "{names:?}");
        for bad in ["hunter2", "pa55w0rd", "\r", "\u{1}"] {
            assert!(!xml.contains(bad), "{bad:?} in the XML");
        }
        insta::assert_snapshot!(xml);
    }

    #[test]
    fn forbidden_characters_are_replaced() {
        assert_eq!(
            text("a\u{0}b\u{1b}c\u{fffe}d\te\n"),
            "a\\x00b\\x1bc\\xfffed\te\n"
        );
        assert_eq!(attr("\"'<&>\n\t"), "&quot;&apos;&lt;&amp;&gt;&#10;&#9;");
    }

    #[test]
    fn timestamps() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00Z");
        assert_eq!(iso8601(1_760_000_600_000), "2025-10-09T09:03:20Z");
        assert_eq!(iso8601(951_782_400_000), "2000-02-29T00:00:00Z");
    }
}
