//! A command line's signature for the guard's live warnings: the same masking as the
//! reports' signatures ([`crate::report::signature::normalize`]), so the warning and the
//! report name one leak alike.

/// At most this many arguments take part, and the result is cut at [`MAX_LEN`] characters.
const MAX_ARGS: usize = 12;
const MAX_LEN: usize = 200;

/// The signature of `argv` (lossy UTF-8 arguments).
pub fn signature<S: AsRef<str>>(argv: &[S]) -> String {
    let args: Vec<String> = argv
        .iter()
        .take(MAX_ARGS)
        .map(|a| a.as_ref().to_owned())
        .collect();
    let mut out = crate::report::signature::normalize(&args).display;
    if out.chars().count() > MAX_LEN {
        out = out.chars().take(MAX_LEN - 1).collect();
        out.push('…');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_of_one_server_share_a_signature_and_read_as_the_report_says() {
        let server = |port: &str| {
            signature(&[
                "python",
                "-m",
                "uvicorn",
                "prefect.server.api.server:create_app",
                "--port",
                port,
            ])
        };
        assert_eq!(server("8001"), server("8042"));
        let args: Vec<String> = ["python", "-m", "uvicorn", "x:app", "--port", "8001"]
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        assert_eq!(
            signature(&args),
            crate::report::signature::normalize(&args).display
        );
    }

    #[test]
    fn long_command_lines_are_cut() {
        let long = vec!["x".repeat(300)];
        assert!(signature(&long).chars().count() <= MAX_LEN);
    }
}
