//! NMIs between vCPUs that spin on each other: every NMI arrives, and two
//! vCPUs sharing one host CPU hand it back and forth without waiting for
//! the host's scheduler to preempt the one that spins.

use std::time::Instant;

use hv::Hypervisor;
use iced_x86::code_asm::*;

use crate::harness::*;
use crate::interrupts::{emit_gate, emit_lapic_enable, emit_lidt, COUNTS, LAPIC};

const EXIT_OK: u32 = 0x600d;
/// NMIs vCPU 0 sends, each after vCPU 1 has handled the previous one.
const ROUNDS: u64 = 20_000;

/// Pins the calling thread to the first host CPU this process may use
/// (through `taskset`: no unsafe code here). Returns whether it did.
fn pin_to_one_host_cpu() -> bool {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return false;
    };
    let Some(first) = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .and_then(|l| l.trim().split([',', '-']).next().map(str::to_string))
    else {
        return false;
    };
    // "/proc/thread-self" links to "<pid>/task/<tid>".
    let Some(tid) = std::fs::read_link("/proc/thread-self")
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
    else {
        return false;
    };
    std::process::Command::new("taskset")
        .args(["-pc", &first, &tid])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// vCPU 0 sends vCPU 1 an NMI through its ICR, then spins with PAUSE
/// until vCPU 1's handler has counted it, [`ROUNDS`] times; vCPU 1 spins
/// with PAUSE until it has counted them all. Both vCPU threads share one
/// host CPU: each hand-off needs the spinning vCPU to give the CPU up
/// (pause-loop exiting), else it waits for a scheduler tick — the
/// kvm-unit-tests `multiple nmi` test "hung" that way under load.
pub fn nmis_ping_pong_on_one_host_cpu(hv: &dyn Hypervisor) {
    let t = TestVm::new(hv, 2);
    let count = COUNTS + 8 * 2;
    let mut a = guests::assembler().unwrap();
    let mut main = a.create_label();
    let mut nmi = a.create_label();
    let mut sender = a.create_label();
    let mut wait_all = a.create_label();
    let mut ready = a.create_label();
    let mut round = a.create_label();
    let mut handled = a.create_label();
    a.jmp(main).unwrap();
    // The NMI handler: count, IRET (which unblocks NMIs).
    a.set_label(&mut nmi).unwrap();
    a.push(rax).unwrap();
    a.mov(rax, count).unwrap();
    a.lock().inc(qword_ptr(rax)).unwrap();
    a.pop(rax).unwrap();
    a.iretq().unwrap();
    a.set_label(&mut main).unwrap();
    a.test(rdi, rdi).unwrap();
    a.jz(sender).unwrap();
    // vCPU 1: gate 2, "ready", spin until every NMI arrived.
    emit_gate(&mut a, 2, nmi).unwrap();
    emit_lidt(&mut a).unwrap();
    emit_lapic_enable(&mut a).unwrap();
    a.mov(rax, SCRATCH).unwrap();
    a.mov(qword_ptr(rax), 1).unwrap();
    a.mov(rbx, count).unwrap();
    a.mov(rcx, ROUNDS).unwrap();
    a.set_label(&mut wait_all).unwrap();
    a.pause().unwrap();
    a.cmp(qword_ptr(rbx), rcx).unwrap();
    a.jb(wait_all).unwrap();
    a.mov(eax, EXIT_OK).unwrap();
    guests::emit_debug_exit_eax(&mut a).unwrap();
    // vCPU 0: wait for "ready", then the rounds (R12 = NMIs sent).
    a.set_label(&mut sender).unwrap();
    emit_lapic_enable(&mut a).unwrap();
    a.mov(rax, SCRATCH).unwrap();
    a.set_label(&mut ready).unwrap();
    a.pause().unwrap();
    a.cmp(qword_ptr(rax), 1).unwrap();
    a.jne(ready).unwrap();
    a.mov(rbx, LAPIC).unwrap();
    a.mov(rsi, count).unwrap();
    a.xor(r12d, r12d).unwrap();
    a.set_label(&mut round).unwrap();
    a.inc(r12).unwrap();
    // ICR: physical destination APIC 1, delivery mode NMI, assert.
    a.mov(dword_ptr(rbx + 0x310), 1 << 24).unwrap();
    a.mov(dword_ptr(rbx + 0x300), 0x4400).unwrap();
    a.set_label(&mut handled).unwrap();
    a.pause().unwrap();
    a.cmp(qword_ptr(rsi), r12).unwrap();
    a.jb(handled).unwrap();
    a.cmp(r12, ROUNDS as i32).unwrap();
    a.jb(round).unwrap();
    a.mov(eax, EXIT_OK + 1).unwrap();
    guests::emit_debug_exit_eax(&mut a).unwrap();
    let p = guests::finish(a).unwrap();
    t.load(&p);
    let start = Instant::now();
    let exits = std::thread::scope(|s| {
        let runners: Vec<_> = (0..2)
            .map(|id| {
                let mut vcpu = t.vcpu(id, p.load_addr);
                s.spawn(move || {
                    if !pin_to_one_host_cpu() {
                        eprintln!("nmis_ping_pong: could not pin vCPU {id} (taskset missing?)");
                    }
                    let io = TestIo::new(vcpu.kicker());
                    let exit = run_guest(&mut *vcpu, &io);
                    (exit, io.exit_value())
                })
            })
            .collect();
        runners
            .into_iter()
            .map(|r| r.join().unwrap())
            .collect::<Vec<_>>()
    });
    eprintln!(
        "nmis_ping_pong: {ROUNDS} NMI round trips on one host CPU in {:?}",
        start.elapsed()
    );
    assert_eq!(
        exits,
        vec![(None, Some(EXIT_OK + 1)), (None, Some(EXIT_OK))]
    );
    assert_eq!(t.read_u64(count), ROUNDS, "every NMI arrived, once");
}
