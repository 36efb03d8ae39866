//! The command line, end to end: every error path is one clear line and a
//! non-zero status; a bare ELF guest runs and ends with its debug-exit status.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn ferrovisor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrovisor"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run ferrovisor")
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The error contract: exactly one line on stderr, prefixed, no panic.
fn assert_one_line_error(out: &Output, status: i32, needle: &str) {
    let err = stderr(out);
    assert_eq!(out.status.code(), Some(status), "stderr: {err}");
    assert_eq!(err.lines().count(), 1, "one line expected: {err:?}");
    assert!(err.starts_with("ferrovisor: "), "{err:?}");
    assert!(err.contains(needle), "{err:?} should mention {needle:?}");
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{err:?}"
    );
}

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("ferrovisor-cli-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
    fn file(&self, name: &str, contents: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, contents).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn path_str(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn missing_kernel_is_one_line() {
    let out = ferrovisor(&["run", "--kernel", "/nonexistent/kernel", "--accel", "kvm"]);
    assert_one_line_error(&out, 1, "/nonexistent/kernel");
}

#[test]
fn malformed_kernel_is_one_line() {
    let dir = TempDir::new("malformed");
    let garbage = dir.file("garbage.bin", b"this is not a kernel at all, just text\n");
    let out = ferrovisor(&["run", "--kernel", path_str(&garbage)]);
    assert_one_line_error(&out, 1, "kernel");
    let empty = dir.file("empty.bin", b"");
    let out = ferrovisor(&["run", "--kernel", path_str(&empty)]);
    assert_one_line_error(&out, 1, "kernel");
    let mut truncated = arch::elf_builder::build_elf64(&[(0x20_0000, &[0xf4; 64])], 0x20_0000);
    truncated.truncate(70);
    let truncated = dir.file("truncated.elf", &truncated);
    let out = ferrovisor(&["run", "--kernel", path_str(&truncated)]);
    assert_one_line_error(&out, 1, "kernel");
}

#[test]
fn bad_sizes_are_one_line() {
    for bad in ["12X", "lots", "-5", "1.5G"] {
        let out = ferrovisor(&["run", "--kernel", "/x", &format!("--memory={bad}")]);
        assert_one_line_error(&out, 2, "invalid size");
    }
    let out = ferrovisor(&["run", "--kernel", "/x", "--memory", "1M"]);
    assert_one_line_error(&out, 1, "too small");
}

#[test]
fn unknown_flags_and_values_are_one_line() {
    let out = ferrovisor(&["run", "--kernel", "/x", "--frobnicate"]);
    assert_one_line_error(&out, 2, "--frobnicate");
    let out = ferrovisor(&["run", "--kernel", "/x", "--accel", "xen"]);
    assert_one_line_error(&out, 2, "xen");
    let out = ferrovisor(&["run", "--kernel", "/x", "--cpus", "many"]);
    assert_one_line_error(&out, 2, "many");
    let out = ferrovisor(&["run", "--kernel", "/x", "--boot", "grub"]);
    assert_one_line_error(
        &out,
        2,
        "unknown boot protocol \"grub\" (expected auto, linux, bare, multiboot or pvh)",
    );
    let out = ferrovisor(&["launch"]);
    assert_one_line_error(&out, 2, "launch");
    let out = ferrovisor(&["run"]);
    assert_one_line_error(&out, 2, "--kernel");
}

#[test]
fn bad_cpu_counts_are_one_line() {
    let dir = TempDir::new("cpus");
    let p = guests::print_and_exit("x", 1).unwrap();
    let elf = dir.file(
        "g.elf",
        &arch::elf_builder::build_elf64(&[(p.load_addr, &p.code)], p.load_addr),
    );
    for bad in ["0", "100000"] {
        let out = ferrovisor(&["run", "--kernel", path_str(&elf), "--cpus", bad]);
        assert_one_line_error(&out, 1, "vCPUs");
    }
}

#[test]
fn unavailable_accelerator_is_one_line() {
    let dir = TempDir::new("accel");
    let p = guests::print_and_exit("x", 1).unwrap();
    let elf = dir.file(
        "g.elf",
        &arch::elf_builder::build_elf64(&[(p.load_addr, &p.code)], p.load_addr),
    );
    let out = Command::new(env!("CARGO_BIN_EXE_ferrovisor"))
        .args(["run", "--kernel", path_str(&elf), "--accel", "kvm"])
        .env("FERROVISOR_KVM_DEVICE", "/nonexistent/kvm")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_one_line_error(
        &out,
        1,
        "accelerator kvm is not available: /nonexistent/kvm does not exist",
    );
    // Auto falls back to emu.
    let out = Command::new(env!("CARGO_BIN_EXE_ferrovisor"))
        .args(["run", "--kernel", path_str(&elf), "--stats"])
        .env("FERROVISOR_KVM_DEVICE", "/nonexistent/kvm")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("accelerator: emu"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn bare_elf_guest_ends_with_debug_exit_status_and_stats() {
    let dir = TempDir::new("debug-exit");
    let p = guests::print_and_exit("Hello through the CLI\n", 0x21).unwrap();
    let elf = dir.file(
        "g.elf",
        &arch::elf_builder::build_elf64(&[(p.load_addr, &p.code)], p.load_addr),
    );
    for accel in common::accels() {
        let out = ferrovisor(&[
            "run",
            "--kernel",
            path_str(&elf),
            "--accel",
            accel,
            "--stats",
            "--cpus",
            "2",
        ]);
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(0x43), "{accel}: {err}");
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "Hello through the CLI\n"
        );
        assert!(
            err.contains(&format!("VM exits by reason (accelerator: {accel})")),
            "{err}"
        );
        let io_row = err
            .lines()
            .find(|l| l.starts_with("io "))
            .expect("an io row");
        let cells: Vec<&str> = io_row.split_whitespace().collect();
        assert_eq!(cells.len(), 3, "reason + 2 vCPUs: {io_row}");
        let vcpu0_io: u64 = cells[1].parse().expect("vcpu0 io count is a number");
        assert!(vcpu0_io >= 22, "{accel}: {io_row}");
        // emu also reports its soft TLB and code cache; kvm has no such
        // counters and prints no such table.
        assert_eq!(
            err.contains(&format!("{accel} accelerator counters")),
            accel == "emu",
            "{accel}: {err}"
        );
        if accel == "emu" {
            assert!(err.lines().any(|l| l.starts_with("blocks_built ")), "{err}");
        }
    }
}

#[test]
fn demo_runs_the_bundled_guest() {
    for accel in common::accels() {
        let out = ferrovisor(&["demo", "--tiny", "--accel", accel]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{accel}: {}", stderr(&out));
        assert!(
            stdout.contains("Hello from the Ferrovisor demo guest!"),
            "{stdout}"
        );
        assert!(stdout.contains(guests::demo::PRIMES_BELOW_100), "{stdout}");
    }
}

#[test]
fn console_input_reaches_the_guest_and_eof_does_not_end_it() {
    use std::io::Write;
    let dir = TempDir::new("echo");
    let p = guests::echo().unwrap();
    let elf = dir.file(
        "echo.elf",
        &arch::elf_builder::build_elf64(&[(p.load_addr, &p.code)], p.load_addr),
    );
    for accel in common::accels() {
        let mut child = Command::new(env!("CARGO_BIN_EXE_ferrovisor"))
            .args(["run", "--kernel", path_str(&elf), "--accel", accel])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        stdin.write_all(b"hello, guest").unwrap();
        // End of file: the guest keeps running until it reads the `q`
        // that a second writer would send; here the VM must survive EOF
        // and only the quit byte ends it, so send it before closing.
        stdin.write_all(b"!q").unwrap();
        drop(stdin);
        let out = child.wait_with_output().unwrap();
        assert_eq!(out.status.code(), Some(1), "{accel}: {}", stderr(&out));
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "echo ready\nhello, guest!"
        );
    }
}

#[test]
fn end_of_input_never_ends_the_vm() {
    let dir = TempDir::new("eof");
    let p = guests::echo().unwrap();
    let elf = dir.file(
        "echo.elf",
        &arch::elf_builder::build_elf64(&[(p.load_addr, &p.code)], p.load_addr),
    );
    let mut child = Command::new(env!("CARGO_BIN_EXE_ferrovisor"))
        .args(["run", "--kernel", path_str(&elf), "--accel", "emu"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(500));
    assert!(
        child.try_wait().unwrap().is_none(),
        "the VM ended at end of input"
    );
    child.kill().unwrap();
    let _ = child.wait();
}

#[test]
fn multiboot_kernel_gets_its_module_and_cmdline() {
    let dir = TempDir::new("multiboot");
    let kernel = dir.file("mb.elf", &guests::multiboot::elf().unwrap());
    let module = dir.file("module.txt", b"module text");
    let not_multiboot = dir.file(
        "bare.elf",
        &arch::elf_builder::build_elf64(&[(0x20_0000, &[0xf4])], 0x20_0000),
    );
    for accel in common::accels() {
        let out = ferrovisor(&[
            "run",
            "--kernel",
            path_str(&kernel),
            "--boot",
            "multiboot",
            "--initrd",
            path_str(&module),
            "--cmdline",
            "via the CLI",
            "--accel",
            accel,
        ]);
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0x63), "{accel}: {}", stderr(&out));
        assert!(
            stdout.starts_with("multiboot ok: mem_upper=261120 KiB cmdline='via the CLI' mmap="),
            "{stdout}"
        );
        assert!(
            stdout.contains(" module=11 bytes 'module t' rsdp=0x000e0000"),
            "{stdout}"
        );
    }
    // --boot multiboot on a kernel without the header is one line.
    let out = ferrovisor(&[
        "run",
        "--kernel",
        path_str(&not_multiboot),
        "--boot",
        "multiboot",
    ]);
    assert_one_line_error(&out, 1, "no Multiboot header");
}

#[test]
fn net_errors_are_one_line() {
    let dir = TempDir::new("net");
    let p = guests::print_and_exit("x", 1).unwrap();
    let elf = dir.file(
        "g.elf",
        &arch::elf_builder::build_elf64(&[(p.load_addr, &p.code)], p.load_addr),
    );
    let run = |net: &[&str]| {
        let mut args = vec!["run", "--kernel", path_str(&elf), "--accel", "emu"];
        args.extend_from_slice(net);
        ferrovisor(&args)
    };
    // A TAP that does not exist, and an interface that is no TAP.
    let out = run(&["--net", "tap=fvnosuchtap0"]);
    assert_one_line_error(&out, 1, "TAP device \"fvnosuchtap0\" does not exist");
    let out = run(&["--net", "tap=lo"]);
    assert_one_line_error(&out, 1, "\"lo\"");
    // Bad values.
    let out = run(&["--net", "tap=t0,mac=06:00:00:00:00"]);
    assert_one_line_error(&out, 2, "mac=06:00:00:00:00");
    let out = run(&["--net", "tap=t0,model=e1000"]);
    assert_one_line_error(&out, 2, "unknown option 'model'");
    let out = run(&["--net", "mac=06:00:00:00:00:01"]);
    assert_one_line_error(&out, 2, "tap=NAME is missing");
    let out = run(&["--net", "tap=t0", "--net", "tap=t0"]);
    assert_one_line_error(&out, 2, "tap=t0");
}

/// A guest that resets the machine ends `run` with status 3 (docs/CLI.md);
/// one that powers off, with 0.
#[test]
fn reset_exits_3_and_power_off_exits_0() {
    let dir = TempDir::new("reset");
    let p = guests::demo::program().unwrap();
    let reset = dir.file(
        "reset.elf",
        &arch::elf_builder::build_elf64(&[(p.load_addr, &p.code)], p.load_addr),
    );
    let p = guests::acpi_poweroff("off\n").unwrap();
    let off = dir.file(
        "off.elf",
        &arch::elf_builder::build_elf64(&[(p.load_addr, &p.code)], p.load_addr),
    );
    let out = ferrovisor(&["run", "--accel", "emu", "--kernel", path_str(&reset)]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("resets the machine"));
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    let out = ferrovisor(&["run", "--accel", "emu", "--kernel", path_str(&off)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
}

/// No arguments at all: the help on standard error, status 2.
#[test]
fn no_arguments_prints_the_help_and_exits_2() {
    let out = ferrovisor(&[]);
    let err = stderr(&out);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(out.stdout.is_empty());
    assert!(err.contains("Usage: ferrovisor"), "{err}");
    assert!(err.contains("Exit status of run and demo"), "{err}");
    for sub in ["run", "demo", "completions", "manpage"] {
        assert!(err.contains(&format!("  {sub} ")), "{sub}: {err}");
    }
    // Our own options without a subcommand: a usage error too.
    assert_one_line_error(
        &ferrovisor(&["--log-level", "debug"]),
        2,
        "requires a subcommand",
    );
}

/// clap's suggestion stays in the one-line error.
#[test]
fn a_misspelt_option_gets_a_suggestion_in_one_line() {
    let out = ferrovisor(&["run", "--kernl", "x"]);
    assert_one_line_error(&out, 2, "a similar argument exists: '--kernel'");
    let out = ferrovisor(&["dem"]);
    assert_one_line_error(&out, 2, "a similar subcommand exists: 'demo'");
}

#[test]
fn bash_completion_names_the_subcommands_and_options() {
    let out = ferrovisor(&["completions", "bash"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.contains("complete -F _ferrovisor"), "{script}");
    let words = script
        .lines()
        .find(|l| l.contains("opts=\"") && l.contains("run"))
        .expect("the top level's words");
    for word in [
        "run",
        "demo",
        "stat",
        "completions",
        "manpage",
        "--log-level",
    ] {
        assert!(
            words
                .split_whitespace()
                .any(|w| w.trim_matches('"') == word),
            "{word}: {words}"
        );
    }
    assert!(script.contains("--kernel"), "run's options");
    for shell in ["zsh", "fish"] {
        let out = ferrovisor(&["completions", shell]);
        assert_eq!(out.status.code(), Some(0), "{shell}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("demo"),
            "{shell}"
        );
    }
    assert_one_line_error(&ferrovisor(&["completions", "tcsh"]), 2, "tcsh");
}

#[test]
fn the_man_pages_have_the_options() {
    let out = ferrovisor(&["manpage"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let page = String::from_utf8(out.stdout).unwrap();
    assert!(
        page.starts_with(".ie") || page.contains(".TH ferrovisor 1"),
        "{page}"
    );
    for text in [
        ".SH OPTIONS",
        "\\-\\-log\\-level",
        "\\-\\-log\\-file",
        "ferrovisor\\-run(1)",
        "triple",
    ] {
        assert!(page.contains(text), "{text}: {page}");
    }
    let dir = TempDir::new("man");
    let out = ferrovisor(&["manpage", "--dir", path_str(&dir.0)]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let run = std::fs::read_to_string(dir.0.join("ferrovisor-run.1")).unwrap();
    for text in ["\\-\\-kernel", "\\-\\-initrd", "\\-\\-disk", "\\-\\-accel"] {
        assert!(run.contains(text), "{text}: {run}");
    }
    assert!(dir.0.join("ferrovisor-demo.1").is_file());
}

/// --log-level and --log-file: the log goes to the file, at that level,
/// and not to standard error; a bad filter is a usage error.
#[test]
fn log_level_and_log_file() {
    let dir = TempDir::new("log");
    let log = dir.0.join("log");
    let out = ferrovisor(&[
        "--log-level",
        "debug",
        "demo",
        "--tiny",
        "--accel",
        "emu",
        "--log-file",
        path_str(&log),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains(" DEBUG "), "{text}");
    assert!(!stderr(&out).contains(" DEBUG "), "{}", stderr(&out));
    // FERROVISOR_LOG gives the level without --log-level.
    let log2 = dir.0.join("log2");
    let out = Command::new(env!("CARGO_BIN_EXE_ferrovisor"))
        .args([
            "demo",
            "--tiny",
            "--accel",
            "emu",
            "--log-file",
            path_str(&log2),
        ])
        .env("FERROVISOR_LOG", "debug")
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(std::fs::read_to_string(&log2).unwrap().contains(" DEBUG "));
    assert_one_line_error(
        &ferrovisor(&["demo", "--tiny", "--log-level", "vmm=loud"]),
        2,
        "--log-level",
    );
}
