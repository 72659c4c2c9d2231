//! A progress line on stderr while the kill waits out its grace period ("waiting for 37
//! processes to exit… 2.1 s"), only when stderr is a terminal: logs and pipes never see it.

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::kill::OnWait;

/// Below this, a wait is not worth a line (most processes exit on SIGTERM at once).
const QUIET_FOR: Duration = Duration::from_millis(300);

/// The line for `remaining` processes after `elapsed`; empty once none remain.
pub fn line(remaining: usize, elapsed: Duration) -> String {
    if remaining == 0 {
        return String::new();
    }
    format!(
        "ci-janitor: waiting for {remaining} process{} to exit… {:.1} s",
        if remaining == 1 { "" } else { "es" },
        elapsed.as_secs_f64()
    )
}

/// A painter for the kill's waits, or `None` when stderr is not a terminal.
pub fn stderr_progress() -> Option<OnWait> {
    if !std::io::stderr().is_terminal() {
        return None;
    }
    let painted = Arc::new(AtomicBool::new(false));
    Some(OnWait(Arc::new(move |remaining, elapsed| {
        let mut err = std::io::stderr().lock();
        if remaining == 0 {
            if painted.swap(false, Ordering::Relaxed) {
                // Carriage return, then erase the line.
                let _ = write!(err, "\r\x1b[2K");
            }
        } else if elapsed >= QUIET_FOR {
            painted.store(true, Ordering::Relaxed);
            let _ = write!(err, "\r\x1b[2K{}", line(remaining, elapsed));
        }
        let _ = err.flush();
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines() {
        assert_eq!(
            line(37, Duration::from_millis(2140)),
            "ci-janitor: waiting for 37 processes to exit… 2.1 s"
        );
        assert_eq!(
            line(1, Duration::from_millis(500)),
            "ci-janitor: waiting for 1 process to exit… 0.5 s"
        );
        assert_eq!(line(0, Duration::from_secs(3)), "");
    }
}
