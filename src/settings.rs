//! What the command line means: raw clap values plus the environment, validated once.

use std::io::IsTerminal;
use std::path::PathBuf;

use crate::cli::{ColorChoice, StateArg};

/// Reads an environment variable; a seam so that tests pass their own environment.
pub type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

pub fn state_path(arg: &StateArg, env: Env<'_>) -> PathBuf {
    arg.state
        .clone()
        .unwrap_or_else(|| crate::state::default_path(env))
}

/// Whether to colour output written to stdout.
pub fn use_color(choice: ColorChoice, env: Env<'_>) -> bool {
    match choice {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => {
            env("NO_COLOR").is_none_or(|v| v.is_empty()) && std::io::stdout().is_terminal()
        }
    }
}
