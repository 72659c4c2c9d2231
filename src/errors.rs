//! Every way a command can fail, and the one map from failure to the documented exit code.
//!
//! Messages are lowercase fragments that read after "failed to" (`main` prints
//! `ci-janitor: error: failed to {error}`), and say what to do next where there is
//! something to do; a test formats every variant to hold that rule.

use crate::report::emit::EmitError;
use crate::report::json::LoadError;
use crate::{guard, platform, state};

/// The documented exit codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Nothing leaked, or the policy passes: 0.
    Clean,
    /// Leaks were found and the policy fails the run: 1.
    Leaked,
    /// Bad usage or bad input; the message says what to fix: 2.
    Usage,
    /// Something failed that is not the user's input: 3.
    Internal,
    /// `run`: the command's own failing status, passed through.
    Command(u8),
}

impl Exit {
    pub fn code(self) -> u8 {
        match self {
            Exit::Clean => 0,
            Exit::Leaked => 1,
            Exit::Usage => 2,
            Exit::Internal => 3,
            Exit::Command(c) => c,
        }
    }
}

/// An error with the exit code it maps to.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// The user's input (a flag, a state file) is wrong.
    #[error("{0}")]
    Input(String),
    #[error(transparent)]
    State(#[from] state::StateError),
    #[error(transparent)]
    Read(#[from] platform::ReadError),
    #[error(transparent)]
    Guard(#[from] guard::GuardError),
    #[error("write output: {0}")]
    Output(#[from] std::io::Error),
    #[error("{0}")]
    Internal(String),
}

impl AppError {
    /// The exit code this failure maps to.
    pub fn exit(&self) -> Exit {
        use state::StateError as S;
        match self {
            AppError::Input(_) => Exit::Usage,
            AppError::State(S::Write { .. } | S::Read { .. }) => Exit::Internal,
            AppError::State(_) => Exit::Usage,
            AppError::Guard(e) if e.is_usage() => Exit::Usage,
            AppError::Guard(_) => Exit::Internal,
            AppError::Read(_) | AppError::Output(_) | AppError::Internal(_) => Exit::Internal,
        }
    }
}

impl From<LoadError> for AppError {
    fn from(e: LoadError) -> Self {
        match e {
            // A missing, unreadable or foreign file is the user's input.
            LoadError::Read { .. } | LoadError::Parse { .. } | LoadError::Version { .. } => {
                AppError::Input(e.to_string())
            }
        }
    }
}

impl From<EmitError> for AppError {
    fn from(e: EmitError) -> Self {
        match e {
            // Keeps BrokenPipe recognisable (a closed stdout is not a failure).
            EmitError::Stdout(io) => AppError::Output(io),
            other => AppError::Internal(other.to_string()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::files::FileError;
    use crate::guard::GuardError;
    use crate::platform::{ChildError, ReadError};
    use crate::state::StateError;

    /// The first word of every message: a verb that reads after "failed to".
    const VERBS: &[&str] = &[
        "become",
        "create",
        "find",
        "install",
        "join",
        "lock",
        "open",
        "parse",
        "read",
        "remove",
        "resolve",
        "run",
        "send",
        "serialise",
        "set",
        "start",
        "stop",
        "subscribe",
        "use",
        "watch",
        "write",
    ];

    fn reads_after_failed_to(message: &str) -> bool {
        let first = message.split([' ', ':', '"', ',']).next().unwrap_or("");
        VERBS.contains(&first)
    }

    fn io() -> std::io::Error {
        std::io::Error::from_raw_os_error(2)
    }

    /// Every variant of every error a command can end with, formatted.
    fn every_error() -> Vec<String> {
        let p = || PathBuf::from("/x/state.json");
        let state = || {
            vec![
                StateError::Missing(p()),
                StateError::Read {
                    path: p(),
                    source: io(),
                },
                StateError::Corrupt {
                    path: p(),
                    detail: "invalid JSON".into(),
                },
                StateError::WrongVersion {
                    path: p(),
                    found: 9,
                },
                StateError::Tampered { path: p() },
                StateError::Inconsistent {
                    path: p(),
                    detail: "x".into(),
                },
                StateError::OtherBoot {
                    path: p(),
                    found: "a".into(),
                    now: "b".into(),
                },
                StateError::Unsafe(FileError::Io {
                    path: p(),
                    source: io(),
                }),
                StateError::Write {
                    path: p(),
                    source: io(),
                },
            ]
        };
        let files = || {
            vec![
                FileError::Refused {
                    path: p(),
                    problem: "it is a symlink".into(),
                    hint: "remove it".into(),
                },
                FileError::TooBig {
                    path: p(),
                    size: 9,
                    limit: 1,
                },
                FileError::Io {
                    path: p(),
                    source: io(),
                },
            ]
        };
        let read = || {
            vec![
                ReadError::Io {
                    path: p(),
                    source: io(),
                },
                ReadError::NoBootId(p()),
                ReadError::ForeignProc(p(), 7, 1234),
            ]
        };
        let guard = vec![
            GuardError::Spawn {
                exe: p(),
                source: io(),
            },
            GuardError::NotReady {
                reason: "x".into(),
                log: p(),
            },
            GuardError::File {
                what: "open the journal",
                path: p(),
                source: io(),
            },
            GuardError::PidFile {
                path: p(),
                detail: "x".into(),
            },
            GuardError::Stop {
                pid: 1,
                detail: "x".into(),
            },
            GuardError::Watch("x".into()),
            GuardError::Options("x".into()),
            GuardError::Setup("x".into()),
            GuardError::Unsafe(files().remove(0)),
            GuardError::State(StateError::Missing(p())),
            GuardError::Read(ReadError::NoBootId(p())),
        ];
        let mut all: Vec<String> = Vec::new();
        all.extend(state().iter().map(ToString::to_string));
        all.extend(files().iter().map(ToString::to_string));
        all.extend(read().iter().map(ToString::to_string));
        all.extend(guard.iter().map(ToString::to_string));
        all.extend(
            [
                ChildError::Subreaper(io()),
                ChildError::Signals(std::io::Error::from_raw_os_error(1)),
                ChildError::Spawn {
                    command: "x".into(),
                    source: io(),
                },
                ChildError::Watch(io()),
            ]
            .iter()
            .map(ToString::to_string),
        );
        all.extend(
            [
                EmitError::Stdout(io()),
                EmitError::File {
                    what: "JSON report",
                    path: p(),
                    source: io(),
                },
            ]
            .iter()
            .map(ToString::to_string),
        );
        all.extend(
            [
                LoadError::Read {
                    path: "r.json".into(),
                    source: io(),
                },
                LoadError::Parse {
                    path: "r.json".into(),
                    source: serde_json::from_str::<u8>("x").unwrap_err(),
                },
                LoadError::Version {
                    path: "r.json".into(),
                    found: 9,
                },
            ]
            .iter()
            .map(ToString::to_string),
        );
        all.extend(
            [
                AppError::Output(io()),
                AppError::State(StateError::Tampered { path: p() }),
                AppError::Read(ReadError::NoBootId(p())),
                AppError::Guard(GuardError::Watch("x".into())),
            ]
            .iter()
            .map(ToString::to_string),
        );
        all
    }

    #[test]
    fn every_error_variant_reads_after_failed_to() {
        for message in every_error() {
            assert!(
                reads_after_failed_to(&message),
                "`failed to {message}` does not read: start it with one of {VERBS:?}"
            );
        }
    }

    /// The free-text errors (`AppError::Input`, `AppError::Internal`, and the `String` errors
    /// of settings and the Action's inputs) are written at their call sites: every string
    /// literal that starts one is held to the same rule.
    #[test]
    fn every_free_text_error_reads_after_failed_to() {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src");
        let starts = [
            "AppError::Input(format!(\"",
            "AppError::Internal(format!(\"",
            "AppError::Input(\"",
            "AppError::Internal(\"",
            "Err(format!(\"",
            "io_err(\"",
        ];
        let mut checked = 0;
        let mut stack = vec![root];
        while let Some(dir) = stack.pop() {
            for entry in std::fs::read_dir(&dir).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                let text = std::fs::read_to_string(&path).unwrap();
                // The code before the file's tests.
                let code = text.split("#[cfg(test)]").next().unwrap_or("");
                let flat: String = code.split_whitespace().collect::<Vec<_>>().join(" ");
                for start in starts {
                    for (at, _) in flat.match_indices(start) {
                        let literal = &flat[at + start.len()..];
                        // Messages of the parsers (durations, patterns) are the detail
                        // after a "read --flag:" their callers add.
                        if path.ends_with("settings.rs") && start == "Err(format!(\"" {
                            let line = literal.split('"').next().unwrap_or("");
                            if line.starts_with('{') {
                                continue;
                            }
                        }
                        // `Err(format!(...))` becomes a user's error as it is only in the
                        // commands and the settings; elsewhere it is a detail that a typed
                        // variant prefixes.
                        let direct = path.ends_with("settings.rs")
                            || path.parent().is_some_and(|d| d.ends_with("commands"));
                        if (start == "Err(format!(\"" && !direct) || literal.starts_with("{what}") {
                            continue;
                        }
                        checked += 1;
                        assert!(
                            reads_after_failed_to(literal),
                            "{}: `failed to {}` does not read",
                            path.display(),
                            &literal[..literal.len().min(60)]
                        );
                    }
                }
            }
        }
        assert!(
            checked >= 10,
            "only {checked} messages found: the scan is broken"
        );
    }
}
