//! The guest loops of the `guest_mips` benchmark (`benches/guest_mips.rs`)
//! and of `examples/guest_loop.rs`, which `scripts/host-insns-per-guest-insn`
//! runs under callgrind: integer arithmetic, a memory copy, calls, and a
//! byte-by-byte string compare, each `iterations` times.

use std::time::{Duration, Instant};

use hv::Hypervisor;
use iced_x86::code_asm::*;

use crate::harness::{run_guest, TestIo, TestVm, SCRATCH};

/// A benchmark guest and the number of instructions it retires.
pub struct Loop {
    pub name: &'static str,
    pub program: guests::Program,
    /// Guest instructions the loop retires.
    pub instructions: u64,
}

fn finish(
    mut a: CodeAssembler,
    name: &'static str,
    iterations: u32,
    per_iteration: u64,
    fixed: u64,
) -> Loop {
    a.mov(eax, 0x600du32).unwrap();
    guests::emit_debug_exit_eax(&mut a).unwrap();
    Loop {
        name,
        program: guests::finish(a).unwrap(),
        // + mov eax and the OUT that ends the run.
        instructions: per_iteration * u64::from(iterations) + fixed + 2,
    }
}

/// Integer arithmetic with dependencies and flags: 8 instructions a turn.
pub fn integer_loop(iterations: u32) -> Loop {
    let mut a = guests::assembler().unwrap();
    let mut top = a.create_label();
    a.mov(ecx, iterations).unwrap();
    a.mov(rax, 1u64).unwrap();
    a.mov(rbx, 3u64).unwrap();
    a.set_label(&mut top).unwrap();
    a.add(rax, rcx).unwrap();
    a.xor(rbx, rax).unwrap();
    a.imul_2(rdx, rbx).unwrap();
    a.shl(rax, 3).unwrap();
    a.sub(rdx, rax).unwrap();
    a.and(rbx, 0x7fff_ffff).unwrap();
    a.dec(ecx).unwrap();
    a.jnz(top).unwrap();
    finish(a, "integer loop", iterations, 8, 3)
}

/// Copies 64 KiB over and over, 8 bytes at a time: 6 instructions a turn.
pub fn memcpy_loop(iterations: u32) -> Loop {
    let mut a = guests::assembler().unwrap();
    let mut top = a.create_label();
    let mut same = a.create_label();
    a.mov(ecx, iterations).unwrap();
    a.xor(r8d, r8d).unwrap();
    a.set_label(&mut top).unwrap();
    a.mov(rax, qword_ptr(r8 + SCRATCH as i32)).unwrap();
    a.mov(qword_ptr(r8 + (SCRATCH + 0x1_0000) as i32), rax)
        .unwrap();
    a.add(r8d, 8).unwrap();
    a.and(r8d, 0xfff8).unwrap();
    a.dec(ecx).unwrap();
    a.jnz(top).unwrap();
    a.set_label(&mut same).unwrap();
    a.nop().unwrap();
    finish(a, "memcpy loop", iterations, 6, 3)
}

/// A call and a return every turn: 5 instructions a turn.
pub fn call_loop(iterations: u32) -> Loop {
    let mut a = guests::assembler().unwrap();
    let mut top = a.create_label();
    let mut done = a.create_label();
    let mut function = a.create_label();
    a.mov(ecx, iterations).unwrap();
    a.xor(eax, eax).unwrap();
    a.set_label(&mut top).unwrap();
    a.call(function).unwrap();
    a.dec(ecx).unwrap();
    a.jnz(top).unwrap();
    a.jmp(done).unwrap();
    a.set_label(&mut function).unwrap();
    a.add(rax, 1).unwrap();
    a.ret().unwrap();
    a.set_label(&mut done).unwrap();
    a.nop().unwrap();
    finish(a, "call loop", iterations, 5, 4)
}

/// The shape of the shell's hot code (busybox's operator lookup): two
/// 63-byte strings compared byte by byte in three small blocks (load and
/// test for the end, compare, advance), 448 instructions a turn.
pub fn scan_loop(iterations: u32) -> Loop {
    let turns = iterations / 64;
    let mut a = guests::assembler().unwrap();
    let (mut fill, mut top, mut scan, mut end) = (
        a.create_label(),
        a.create_label(),
        a.create_label(),
        a.create_label(),
    );
    // Both strings: 63 bytes of 'a', then the NUL of zeroed memory.
    a.mov(edi, 63u32).unwrap();
    a.set_label(&mut fill).unwrap();
    a.mov(byte_ptr(rdi + (SCRATCH - 1) as i32), 0x61u32)
        .unwrap();
    a.mov(byte_ptr(rdi + (SCRATCH + 0x1000 - 1) as i32), 0x61u32)
        .unwrap();
    a.dec(edi).unwrap();
    a.jnz(fill).unwrap();
    a.mov(r9d, turns).unwrap();
    a.set_label(&mut top).unwrap();
    a.mov(eax, SCRATCH as u32).unwrap();
    a.mov(edx, (SCRATCH + 0x1000) as u32).unwrap();
    a.set_label(&mut scan).unwrap();
    a.mov(cl, byte_ptr(rax)).unwrap();
    a.test(cl, cl).unwrap();
    a.je(end).unwrap();
    a.cmp(cl, byte_ptr(rdx)).unwrap();
    a.jne(end).unwrap();
    a.inc(rax).unwrap();
    a.inc(rdx).unwrap();
    a.jmp(scan).unwrap();
    a.set_label(&mut end).unwrap();
    a.dec(r9d).unwrap();
    a.jnz(top).unwrap();
    let per_turn = 2 + 63 * 7 + 3 + 2;
    let mut l = finish(a, "scan loop", 0, 0, 1 + 63 * 4 + 1);
    l.instructions += per_turn * u64::from(turns);
    l
}

/// The loop named `name` (`integer`, `memcpy`, `call`, `scan`).
pub fn by_name(name: &str, iterations: u32) -> Option<Loop> {
    Some(match name {
        "integer" => integer_loop(iterations),
        "memcpy" => memcpy_loop(iterations),
        "call" => call_loop(iterations),
        "scan" => scan_loop(iterations),
        _ => return None,
    })
}

/// Runs `l` once on `hv` and returns how long the guest ran (it must end
/// with the loops' exit value).
pub fn run(hv: &dyn Hypervisor, l: &Loop) -> Duration {
    let t = TestVm::new(hv, 1);
    t.load(&l.program);
    let mut vcpu = t.vcpu(0, l.program.load_addr);
    let io = TestIo::new(vcpu.kicker());
    let start = Instant::now();
    assert_eq!(run_guest(&mut *vcpu, &io), None);
    let elapsed = start.elapsed();
    assert_eq!(io.exit_value(), Some(0x600d), "the loop did not finish");
    elapsed
}
