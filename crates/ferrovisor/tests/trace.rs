//! KVM's tracepoints end to end: a tiny guest's known port writes appear
//! as `kvm_pio` and `kvm_exit` lines in the kernel's trace format, on every
//! accelerator, and events that were not chosen do not appear.

mod common;

use std::path::PathBuf;
use std::process::{Command, Output};

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("ferrovisor-trace-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn guest(dir: &TempDir) -> PathBuf {
    let p = guests::print_and_exit("Hi\n", 0x21).unwrap();
    let path = dir.0.join("g.elf");
    std::fs::write(
        &path,
        arch::elf_builder::build_elf64(&[(p.load_addr, &p.code)], p.load_addr),
    )
    .unwrap();
    path
}

fn ferrovisor(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ferrovisor"))
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run ferrovisor")
}

/// One line of the kernel's trace text format, parsed.
#[derive(Debug)]
struct TraceLine {
    task: String,
    event: String,
    fields: String,
}

/// Parses `<task>-<tid> [<cpu>] <flags> <secs>.<usecs>: <event>: <fields>`
/// strictly: the task right-aligned in 16 columns, the tid in 7, a
/// three-digit CPU, five flag characters, six digits of microseconds.
fn parse(line: &str) -> Result<TraceLine, String> {
    let bad = || format!("not a kernel trace line: {line:?}");
    let (head, rest) = line.split_at_checked(24).ok_or_else(bad)?;
    let (task, tid) = head.rsplit_once('-').ok_or_else(bad)?;
    if task.len() < 16 || !tid.trim_end().chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let rest = rest.strip_prefix(" [").ok_or_else(bad)?;
    let (cpu, rest) = rest.split_once("] ").ok_or_else(bad)?;
    if cpu.len() != 3 || !cpu.chars().all(|c| c.is_ascii_digit()) {
        return Err(bad());
    }
    let (flags, rest) = rest.split_at_checked(5).ok_or_else(bad)?;
    if flags != "....." {
        return Err(bad());
    }
    let (time, rest) = rest.split_once(": ").ok_or_else(bad)?;
    let (secs, usecs) = time.trim_start().split_once('.').ok_or_else(bad)?;
    if usecs.len() != 6 || secs.parse::<u64>().is_err() || usecs.parse::<u32>().is_err() {
        return Err(bad());
    }
    let (event, fields) = rest.split_once(": ").ok_or_else(bad)?;
    Ok(TraceLine {
        task: task.trim_start().to_string(),
        event: event.to_string(),
        fields: fields.to_string(),
    })
}

#[test]
fn chosen_events_trace_the_guests_port_writes() {
    let dir = TempDir::new("pio");
    let elf = guest(&dir);
    for accel in common::accels() {
        let file = dir.0.join(format!("trace-{accel}.txt"));
        let out = ferrovisor(&[
            "run",
            "--kernel",
            elf.to_str().unwrap(),
            "--accel",
            accel,
            "--trace",
            "kvm_pio,kvm_exit",
            "--trace-file",
            file.to_str().unwrap(),
        ]);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "Hi\n",
            "{accel}: {stderr}"
        );
        let text = std::fs::read_to_string(&file).unwrap();
        let lines: Vec<TraceLine> = text
            .lines()
            .map(|l| parse(l).unwrap_or_else(|e| panic!("{accel}: {e}")))
            .collect();
        for l in &lines {
            assert!(
                l.event == "kvm_pio" || l.event == "kvm_exit",
                "{accel}: an event that was not chosen: {l:?}"
            );
            assert_eq!(l.task, "vcpu0", "{accel}: {l:?}");
        }
        let pio: Vec<&str> = lines
            .iter()
            .filter(|l| l.event == "kvm_pio" && l.fields.starts_with("pio_write"))
            .map(|l| l.fields.as_str())
            .collect();
        assert_eq!(
            pio,
            [
                "pio_write at 0x3f8 size 1 count 1 val 0x48 ",
                "pio_write at 0x3f8 size 1 count 1 val 0x69 ",
                "pio_write at 0x3f8 size 1 count 1 val 0xa ",
                "pio_write at 0xf4 size 4 count 1 val 0x21 ",
            ],
            "{accel}:\n{text}"
        );
        assert!(
            lines
                .iter()
                .any(|l| l.event == "kvm_pio" && l.fields.starts_with("pio_read at 0x3fd size 1 ")),
            "{accel}: the line-status reads:\n{text}"
        );
        let com1_exits = lines
            .iter()
            .filter(|l| {
                l.event == "kvm_exit"
                    && l.fields.starts_with("vcpu 0 reason IO_INSTRUCTION rip 0x")
                    && l.fields.contains(" info1 0x0000000003f80000 ")
            })
            .count();
        assert_eq!(com1_exits, 3, "{accel}:\n{text}");
    }
}

#[test]
fn without_trace_no_event_lines_and_bad_patterns_are_refused() {
    let dir = TempDir::new("off");
    let elf = guest(&dir);
    let out = ferrovisor(&["run", "--kernel", elf.to_str().unwrap(), "--accel", "emu"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("kvm_"), "{stderr}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "Hi\n");

    let out = ferrovisor(&[
        "run",
        "--kernel",
        elf.to_str().unwrap(),
        "--trace",
        "kvm_exit,kvm_bogus",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.starts_with("ferrovisor: --trace: no trace event matches \"kvm_bogus\""),
        "{stderr}"
    );
}

#[test]
fn trace_to_stderr_by_default_with_globs() {
    let dir = TempDir::new("stderr");
    let elf = guest(&dir);
    let out = ferrovisor(&[
        "run",
        "--kernel",
        elf.to_str().unwrap(),
        "--accel",
        "emu",
        "--trace",
        "kvm:kvm_p*",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let events: Vec<String> = stderr
        .lines()
        .filter_map(|l| parse(l).ok())
        .map(|l| l.event)
        .collect();
    assert!(events.iter().any(|e| e == "kvm_pio"), "{stderr}");
    assert!(
        events
            .iter()
            .all(|e| e == "kvm_pio" || e == "kvm_page_fault"),
        "{stderr}"
    );
}
