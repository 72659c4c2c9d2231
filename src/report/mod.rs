//! Rendering: for people (terminal trees) and for machines (JSON). Renderers read plain data
//! and write text; they never look at the OS.

pub mod diff_json;
pub mod github;
pub mod json;
pub mod terminal;
pub mod tree;
