//! `FERROVISOR_JIT_PERFMAP=1`: the emu JIT names its compiled code in
//! `/tmp/perf-<pid>.map`, the file `perf report` reads, one line per
//! block ("<start> <size> guest_<rip>_...", hexadecimal), beside the
//! trampoline and the chain stubs, with no address named twice.

use std::process::{Command, Stdio};

#[test]
fn compiled_blocks_are_named_in_the_perf_map() {
    if !cfg!(target_arch = "x86_64") {
        eprintln!("the JIT runs on x86-64 hosts: skipped");
        return;
    }
    let dir = std::env::temp_dir().join(format!("ferrovisor-perfmap-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Prints 4 characters with a busy loop of 20 000 passes after each,
    // then exits through the debug-exit port with 0x2a.
    let p = guests::ticker("perf", 20_000, 0x30_0000, 0x2a).unwrap();
    let elf = dir.join("ticker.elf");
    std::fs::write(
        &elf,
        arch::elf_builder::build_elf64(&[(p.load_addr, &p.code)], p.load_addr),
    )
    .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_ferrovisor"))
        .args(["run", "--accel", "emu", "--memory", "64M"])
        .arg("--kernel")
        .arg(&elf)
        .env("FERROVISOR_EMU_ENGINE", "jit")
        .env("FERROVISOR_JIT_PERFMAP", "1")
        // Compiled on the vCPU thread: with the compiler thread the guest
        // (a few milliseconds) may end before the code comes back on a
        // loaded host. Both install through `jit::compile::install`,
        // which names the code.
        .env("FERROVISOR_JIT_ASYNC", "0")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    let map_path = format!("/tmp/perf-{pid}.map");
    let map = std::fs::read_to_string(&map_path);
    let _ = std::fs::remove_file(&map_path);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(
        out.status.code(),
        Some((0x2a << 1) | 1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("perf"));
    let map = map.expect("the perf map was written");
    let mut spans = Vec::new();
    let mut names = Vec::new();
    for line in map.lines() {
        let mut f = line.splitn(3, ' ');
        let (Some(start), Some(len), Some(name)) = (f.next(), f.next(), f.next()) else {
            panic!("a line of three fields: {line:?}");
        };
        let start = u64::from_str_radix(start, 16).expect("hex start");
        let len = u64::from_str_radix(len, 16).expect("hex size");
        assert!(len > 0, "{line}");
        spans.push((start, start + len));
        names.push(name.to_string());
    }
    for stub in ["jit_trampoline", "jit_chain_stub", "jit_chain_stub_slow"] {
        assert!(names.iter().any(|n| n == stub), "{stub} in {names:?}");
    }
    // The busy loop's block, compiled once it ran 2 048 times.
    assert!(
        names.iter().any(|n| n.starts_with("guest_")),
        "a compiled block in {names:?}"
    );
    spans.sort();
    for w in spans.windows(2) {
        assert!(w[0].1 <= w[1].0, "overlapping names {w:x?}");
    }
}
