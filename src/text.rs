//! Text shown to people that may hold what a process chose: one-line escaping and
//! truncation. A command line, a working directory, a step name or a stack can carry a
//! newline followed by `::error::` (a workflow command, once it starts a line of a CI log)
//! or a terminal escape; every renderer of such text passes it through [`sanitize`].
//!
//! Pure text in, text out; it must not read anything.

use std::fmt::Write;

/// Makes text safe for one terminal or log line: control characters (line breaks and the
/// escape sequences a hostile argv could carry) are shown as `\xNN`.
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

/// At most `max` characters, the last one `…` when something was cut.
pub fn truncate(text: String, max: usize) -> String {
    if text.chars().count() <= max {
        return text;
    }
    let mut s: String = text.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_break_and_escapes_stay_on_one_line() {
        let s = sanitize("x\n::error::y\x1b[2J\u{85}z");
        assert_eq!(s, r"x\x0a::error::y\x1b[2J\x85z");
        assert!(!s.contains('\n'));
    }

    #[test]
    fn truncation_counts_characters_and_marks_the_cut() {
        assert_eq!(truncate("héllo".into(), 5), "héllo");
        assert_eq!(truncate("héllo wörld".into(), 5), "héll…");
    }
}
