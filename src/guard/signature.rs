//! A command line's signature: argv with what varies between copies of one program masked
//! (numbers, temporary paths, long hex ids), so that 82 Prefect servers on 82 ports read as
//! one line. Deliberately simple; the reports may refine it.

/// At most this many arguments take part, and the result is cut at [`MAX_LEN`] characters.
const MAX_ARGS: usize = 12;
const MAX_LEN: usize = 200;

/// The signature of `argv` (lossy UTF-8 arguments).
pub fn signature<S: AsRef<str>>(argv: &[S]) -> String {
    let mut out = argv
        .iter()
        .take(MAX_ARGS)
        .map(|a| mask(a.as_ref()))
        .collect::<Vec<_>>()
        .join(" ");
    if out.chars().count() > MAX_LEN {
        out = out.chars().take(MAX_LEN - 1).collect();
        out.push('…');
    }
    out
}

const TEMP_DIRS: [&str; 4] = ["/tmp/", "/var/tmp/", "/dev/shm/", "/private/tmp/"];

fn mask(arg: &str) -> String {
    // `--opt=VALUE`: keep the option name, mask the value.
    if let Some((name, value)) = arg.split_once('=').filter(|(n, _)| n.starts_with('-')) {
        return format!("{name}={}", mask(value));
    }
    if TEMP_DIRS.iter().any(|d| arg.starts_with(d)) || arg.contains("/pytest-of-") {
        return "<tmp>".to_owned();
    }
    let mut out = String::with_capacity(arg.len());
    let mut run = String::new();
    let flush = |run: &mut String, out: &mut String| {
        if run.is_empty() {
            return;
        }
        let digits = run.chars().all(|c| c.is_ascii_digit());
        let hexid = run.len() >= 8
            && run.chars().all(|c| c.is_ascii_hexdigit())
            && run.chars().any(|c| c.is_ascii_digit());
        if digits {
            out.push('N');
        } else if hexid {
            out.push('X');
        } else {
            out.push_str(run);
        }
        run.clear();
    };
    for c in arg.chars() {
        if c.is_ascii_alphanumeric() {
            run.push(c);
        } else {
            flush(&mut run, &mut out);
            out.push(c);
        }
    }
    flush(&mut run, &mut out);
    // A word with digits inside (`worker12`, `py3`): mask the digit runs within it.
    let mut masked = String::with_capacity(out.len());
    let mut prev_digit = false;
    for c in out.chars() {
        if c.is_ascii_digit() {
            if !prev_digit {
                masked.push('N');
            }
            prev_digit = true;
        } else {
            masked.push(c);
            prev_digit = false;
        }
    }
    masked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_of_one_server_share_a_signature() {
        let a = signature(&[
            "python",
            "-m",
            "uvicorn",
            "prefect.server.api.server:create_app",
            "--port",
            "8001",
            "--host",
            "127.0.0.1",
        ]);
        let b = signature(&[
            "python",
            "-m",
            "uvicorn",
            "prefect.server.api.server:create_app",
            "--port",
            "8042",
            "--host",
            "127.0.0.1",
        ]);
        assert_eq!(a, b);
        assert_eq!(
            a,
            "python -m uvicorn prefect.server.api.server:create_app --port N --host N.N.N.N"
        );
    }

    #[test]
    fn temp_paths_options_and_ids_are_masked() {
        assert_eq!(
            signature(&["node", "/tmp/tmp.Ab12/server.js", "--db=/tmp/x/y.db"]),
            "node <tmp> --db=<tmp>"
        );
        assert_eq!(
            signature(&["worker", "--id", "deadbeef00112233", "gw12"]),
            "worker --id X gwN"
        );
        assert_eq!(
            signature(&["pytest", "/home/u/pytest-of-u/pytest-3/t"]),
            "pytest <tmp>"
        );
        // Words without digits are untouched, even when they are hex letters.
        assert_eq!(signature(&["cat", "deadbeef"]), "cat deadbeef");
    }

    #[test]
    fn long_command_lines_are_bounded() {
        let args: Vec<String> = (0..100).map(|i| format!("--flag-{i}-xxxxxxxx")).collect();
        let s = signature(&args);
        assert!(s.chars().count() <= MAX_LEN);
        assert_eq!(signature::<&str>(&[]), "");
    }
}
