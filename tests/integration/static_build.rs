//! The release binary is static: it runs on any Linux runner image without a matching libc.

use std::path::PathBuf;
use std::process::Command;

/// `PT_INTERP`: the program header naming a dynamic loader.
const PT_INTERP: u32 = 3;
const PT_DYNAMIC: u32 = 2;

fn program_header_types(elf: &[u8]) -> Vec<u32> {
    assert_eq!(&elf[..4], b"\x7fELF", "not an ELF file");
    assert_eq!(elf[4], 2, "not a 64-bit ELF");
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let u64_at = |o: usize| u64::from_le_bytes(elf[o..o + 8].try_into().unwrap()) as usize;
    let (phoff, phentsize, phnum) = (u64_at(0x20), u16_at(0x36), u16_at(0x38));
    (0..phnum)
        .map(|i| {
            let o = phoff + i * phentsize;
            u32::from_le_bytes(elf[o..o + 4].try_into().unwrap())
        })
        .collect()
}

#[test]
fn release_build_has_no_dynamic_interpreter() {
    // Holds the lock like every test that starts processes: a sweep test running
    // meanwhile would rightly see this build's cargo and rustc as new descendants of
    // the test binary (its job's root) and kill them.
    let _g = crate::support::serial();
    // Build exactly as the README documents, into a target dir of its own.
    let target_dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("static-build");
    let status = Command::new(env!("CARGO"))
        .args([
            "build",
            "--release",
            "--target",
            "x86_64-unknown-linux-gnu",
            "--bin",
            "ci-janitor",
        ])
        .env("RUSTFLAGS", "-C target-feature=+crt-static")
        .env("CARGO_TARGET_DIR", &target_dir)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .expect("run cargo");
    assert!(status.success());
    let bin = target_dir.join("x86_64-unknown-linux-gnu/release/ci-janitor");
    let types = program_header_types(&std::fs::read(&bin).unwrap());
    assert!(
        !types.contains(&PT_INTERP),
        "{} names a dynamic loader",
        bin.display()
    );
    assert!(!types.is_empty());

    // The negative control: the ordinary debug build is dynamic, so the check can fail.
    let dynamic = program_header_types(&std::fs::read(crate::janitor::janitor_exe()).unwrap());
    assert!(dynamic.contains(&PT_INTERP) && dynamic.contains(&PT_DYNAMIC));

    // And the static binary runs.
    let out = Command::new(&bin).arg("--version").output().unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("ci-janitor "));
}
