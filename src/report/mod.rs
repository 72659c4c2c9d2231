//! Rendering: for people (terminal, job summary), for the CI system (workflow commands,
//! outputs, JUnit) and for machines (JSON). Renderers are pure functions of the
//! [`json::Report`] and return text; they never look at the OS. [`emit`] is the module that
//! writes files and stdout; [`saved`] renders a saved report again; [`progress`] is the
//! stderr line shown while the kill waits.

pub mod diff_json;
pub mod emit;
pub mod github;
pub mod json;
pub mod junit;
pub mod progress;
pub mod saved;
pub mod signature;
pub mod summary;
pub mod terminal;
pub mod tree;

#[cfg(test)]
mod fixtures;
