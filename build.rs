//! Names the build for `ci-janitor --version`: the commit and the target triple.
//!
//! The commit comes from `$CI_JANITOR_COMMIT` (a release build may set it), else from git
//! when building in a checkout, else from the `.cargo_vcs_info.json` that `cargo package`
//! writes into a published crate, else `unknown`: a build never fails for want of git.

use std::path::Path;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_owned())
}

fn from_vcs_info() -> Option<String> {
    let text = std::fs::read_to_string(".cargo_vcs_info.json").ok()?;
    let at = text.find("\"sha1\"")?;
    let rest = &text[at + 6..];
    let start = rest.find('"')? + 1;
    let len = rest[start..].find('"')?;
    Some(rest[start..start + len].chars().take(12).collect())
}

fn main() {
    println!("cargo:rerun-if-env-changed=CI_JANITOR_COMMIT");
    println!("cargo:rerun-if-changed=build.rs");
    let commit = std::env::var("CI_JANITOR_COMMIT")
        .ok()
        .filter(|c| !c.is_empty())
        .or_else(|| {
            let head = git(&["rev-parse", "--short=12", "HEAD"])?;
            // Rebuild when HEAD moves (a new commit, a checkout).
            if let Some(dir) = git(&["rev-parse", "--absolute-git-dir"]) {
                for f in ["HEAD", "index"] {
                    if Path::new(&dir).join(f).exists() {
                        println!("cargo:rerun-if-changed={dir}/{f}");
                    }
                }
            }
            let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some();
            Some(if dirty {
                format!("{head}-modified")
            } else {
                head
            })
        })
        .or_else(from_vcs_info)
        .unwrap_or_else(|| "unknown".into());
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown".into());
    println!("cargo:rustc-env=CI_JANITOR_COMMIT={commit}");
    println!("cargo:rustc-env=CI_JANITOR_TARGET={target}");
}
