//! End to end: programs built for the x86-64 micro-architecture levels run
//! in the Linux test guest on the emu CPU with the same output as on the
//! host. `guest/programs/isa-check.c` is compiled static with gcc at
//! `-O3 -march=<level>` (vectorised loops, glibc's string functions picked
//! by CPU features, bit manipulation, CRC32, FMA, half floats), run on the
//! host, handed to the guest on a read-only virtio disk, and run there.
//! glibc refuses to start a binary built for a level the CPU's CPUID does
//! not reach, so this checks what the emu CPU advertises as well as what
//! it computes.
//!
//! Needs the test guest and gcc with a static libc (`scripts/test`
//! installs them); without them the tests report SKIPPED, or fail with
//! `FERROVISOR_REQUIRE_GUEST=1` / `FERROVISOR_REQUIRE_CC=1`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::guest;

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(label: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("ferrovisor-isa-{}-{label}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Compiles isa-check for `march` into `dir`; None (SKIPPED) without gcc
/// or a static libc.
fn compile(march: &str, dir: &Path) -> Option<PathBuf> {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../guest/programs/isa-check.c");
    let binary = dir.join(format!("isa-check-{march}"));
    let out = Command::new("gcc")
        .args(["-O3", "-static", "-Wall", "-Werror"])
        .arg(format!("-march={march}"))
        .arg("-o")
        .arg(&binary)
        .arg(&source)
        .arg("-lm")
        .output();
    match out {
        Ok(out) if out.status.success() => Some(binary),
        Ok(out) => {
            conformance::skip_or_fail(
                "cc",
                &format!(
                    "gcc cannot build isa-check for {march}: {}",
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            );
            None
        }
        Err(e) => {
            conformance::skip_or_fail("cc", &format!("cannot run gcc: {e}"));
            None
        }
    }
}

/// The program's report: its lines from the start marker to the end
/// marker.
fn report(output: &str) -> Vec<String> {
    let lines: Vec<&str> = output.lines().map(str::trim_end).collect();
    let start = lines.iter().position(|l| *l == "isa-check: start");
    let end = lines.iter().position(|l| *l == "isa-check: end");
    match (start, end) {
        (Some(s), Some(e)) if s < e => lines[s..=e].iter().map(|l| l.to_string()).collect(),
        _ => Vec::new(),
    }
}

/// Builds isa-check for `march`, runs it on the host and in the guest, and
/// compares the two reports.
fn same_output_as_the_host(march: &str) {
    let Some(guest) = guest() else { return };
    let dir = TempDir::new(march);
    let Some(binary) = compile(march, &dir.0) else {
        return;
    };
    let host = Command::new(&binary)
        .output()
        .expect("run isa-check on the host");
    let host_report = report(&String::from_utf8_lossy(&host.stdout));
    let host_ran = host.status.success() && !host_report.is_empty();
    if !host_ran {
        // The host's CPU is below the level: the guest's report can only
        // be checked for completeness.
        eprintln!(
            "{march}: the host cannot run it ({}): the guest's output is not compared",
            String::from_utf8_lossy(&host.stderr).trim()
        );
    }
    // The disk: the binary padded to whole sectors (the zeros after the
    // ELF image are never read by the loader).
    let mut image = std::fs::read(&binary).expect("read the binary");
    image.resize(image.len().div_ceil(512) * 512, 0);
    let disk = dir.0.join("disk.img");
    std::fs::write(&disk, &image).expect("write the disk image");
    let disk_arg = format!("path={},readonly=on", disk.display());
    let b = common::boot(
        &guest,
        1,
        "cat /dev/vda > /tmp/isa-check && chmod +x /tmp/isa-check && /tmp/isa-check",
        &["--disk", &disk_arg],
    );
    b.expect("FERROVISOR-CMD-EXIT=0");
    let guest_report = report(&b.console);
    assert!(
        !guest_report.is_empty(),
        "{march}: no report from the guest; console tail:\n{}",
        b.tail()
    );
    if host_ran {
        assert_eq!(
            guest_report, host_report,
            "{march}: the guest's report differs from the host's"
        );
    }
}

#[test]
fn x86_64_baseline_program_matches_the_host() {
    same_output_as_the_host("x86-64");
}

#[test]
fn x86_64_v2_program_matches_the_host() {
    same_output_as_the_host("x86-64-v2");
}
