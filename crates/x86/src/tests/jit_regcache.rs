//! The JIT's register and flags cache (phase 6) against the interpreter:
//! guest registers and the lazy-flags record live in SSA values within a
//! compiled block and reach `Cpu` only where Rust may read them. Each
//! test runs a loop whose body is compiled after its first run, so the
//! interesting iterations run compiled: a #PF on an inline load and a #DE
//! of a called-out DIV after several inline register writes (partial
//! ones, PUSH, a pending flags record); flags of inline producers read by
//! called-out consumers (ADC, PUSHFQ) and by a Jcc of the next block;
//! values cached across TLB-miss slow paths; 8- and 16-bit writes merged
//! into cached registers.

use iced_x86::code_asm::*;
use iced_x86::IcedError;

use super::*;
use crate::Engine;

type Program = fn(&mut CodeAssembler) -> Result<(), IcedError>;

fn run(engine: Engine, program: Program) -> Guest {
    let mut g = Guest::long64();
    g.cpu.set_engine(engine);
    g.cpu.jit_hot = 1;
    g.gate64(0, HANDLERS, 1, 0, false);
    g.gate64(14, HANDLERS, 1, 0, false);
    g.code_at(HANDLERS, |a| a.hlt());
    g.code(program);
    assert_eq!(g.run(), CpuExit::Halt, "rip {:#x}", g.cpu.state.rip);
    g
}

/// Runs `program` on both engines and compares registers, RIP, RFLAGS,
/// CR2, the retired count, 64 pages of data, the stack and the exception
/// frame (on IST 1); returns (interp, jit).
fn compare(program: Program) -> (Guest, Guest) {
    let i = run(Engine::Interp, program);
    let j = run(Engine::Jit, program);
    assert_same_cpu_state(&i, &j);
    for k in 0..(64 * 512) {
        let a = DATA + 8 * k;
        assert_eq!(j.bus.read_u64(a), i.bus.read_u64(a), "memory at {a:#x}");
    }
    for k in 0..64 {
        let a = STACK_TOP - 8 * k - 8;
        assert_eq!(j.bus.read_u64(a), i.bus.read_u64(a), "stack at {a:#x}");
    }
    for k in 0..16 {
        let a = 0x5_ff80 + 8 * k;
        assert_eq!(j.bus.read_u64(a), i.bus.read_u64(a), "frame at {a:#x}");
    }
    (i, j)
}

/// The loop body shared by the fault tests: inline writes of whole,
/// 32-, 16- and 8-bit registers, LEA, PUSH, and an ADD whose flags are
/// pending when the faulting op runs (live: an exception frame holds
/// RFLAGS). RCX counts 3, 2, 1; `last` (the fault) sees RCX == 1.
fn writes_then(a: &mut CodeAssembler, last: Program) -> Result<(), IcedError> {
    let mut top = a.create_label();
    a.mov(rcx, 3u64)?;
    a.mov(rdx, 0x1_0000_0000u64)?; // beyond the 4 GiB identity map
    a.mov(rdi, DATA)?;
    a.mov(r12, 0u64)?;
    a.mov(r10, 0x1111_2222_3333_4444u64)?;
    a.set_label(&mut top)?;
    a.mov(rax, rcx)?;
    a.add(rax, 5)?;
    a.mov(rbx, rax)?;
    a.shl(rbx, 3)?;
    a.mov(r10w, 0x1234)?;
    a.add(r10b, 0x7f)?;
    a.mov(r9d, 0xffff_ffffu32)?;
    a.inc(r9d)?;
    a.lea(rsi, qword_ptr(rax + rbx * 2 + 1))?;
    a.push(rax)?;
    a.mov(r11, 7u64)?;
    a.cmp(rcx, 1)?;
    a.cmove(rdi, rdx)?;
    a.cmove(r11, r12)?;
    a.add(rax, rbx)?;
    last(a)?;
    a.add(rax, 100)?;
    a.mov(rsi, 0u64)?;
    a.dec(rcx)?;
    a.jnz(top)?;
    a.hlt()
}

/// A #PF on an inline load: every inline write before it is in the CPU,
/// the ones after it are not, the frame's RFLAGS are the pending ADD's.
#[test]
fn a_page_fault_sees_every_cached_write() {
    if !Engine::jit_available() {
        return;
    }
    let (_, j) = compare(|a| writes_then(a, |a| a.mov(r8, qword_ptr(rdi))));
    assert_eq!(j.cpu.state.cr2, 0x1_0000_0000);
    assert_eq!(j.reg(1), 1, "faulted on the third iteration");
    assert_eq!(j.reg(0), 6 + 48, "the ADD before the fault ran");
    assert_eq!(j.reg(6), 6 + 96 + 1, "the LEA before the fault ran");
    assert_eq!(j.reg(10), 0x1111_2222_3333_12b3);
}

/// A #DE raised by a called-out DIV: the handler sees the same.
#[test]
fn a_called_out_exception_sees_every_cached_write() {
    if !Engine::jit_available() {
        return;
    }
    let (_, j) = compare(|a| {
        writes_then(a, |a| {
            a.mov(r13, rdx)?;
            a.mov(rdx, 0u64)?;
            a.div(r11)?;
            a.mov(rdx, r13)
        })
    });
    assert_eq!(j.reg(1), 1, "faulted on the third iteration");
    assert_eq!(j.reg(11), 0);
}

/// Flags produced by inline ops and read by called-out ones (ADC,
/// PUSHFQ, a shift's record read by SBB and, through `lazy_cond`, by
/// SETB) and by a Jcc at the start of
/// the next block, over operands that carry and overflow.
#[test]
fn inline_flags_reach_called_out_readers() {
    if !Engine::jit_available() {
        return;
    }
    compare(|a| {
        let mut top = a.create_label();
        let mut next = a.create_label();
        let mut skip = a.create_label();
        a.mov(rcx, 40u64)?;
        a.mov(rdi, DATA)?;
        a.mov(rax, 0x7fff_ffff_ffff_fff0u64)?;
        a.mov(rbx, 0x6000_0000_0000_0007u64)?;
        a.set_label(&mut top)?;
        a.add(rax, rbx)?;
        a.adc(rdx, 0)?;
        a.sub(r8, rax)?;
        a.pushfq()?;
        a.pop(r10)?;
        a.mov(qword_ptr(rdi), r10)?;
        a.shl(rax, 1)?;
        a.setb(r13b)?;
        a.add(r14, r13)?;
        a.shl(rax, 1)?;
        a.sbb(r11, 0)?;
        a.add(r9, rax)?;
        a.jmp(next)?;
        a.set_label(&mut next)?;
        a.jno(skip)?;
        a.add(r12, 1)?;
        a.set_label(&mut skip)?;
        a.mov(qword_ptr(rdi + 8), rdx)?;
        a.mov(qword_ptr(rdi + 16), r11)?;
        a.mov(qword_ptr(rdi + 24), r12)?;
        a.add(rdi, 32)?;
        a.dec(rcx)?;
        a.jnz(top)?;
        a.hlt()
    });
}

/// Each iteration touches a new page (a TLB miss on the load, the store,
/// the ALU read-modify-write and the narrow load, in compiled code) with
/// registers written inline before and read after each miss.
#[test]
fn cached_registers_survive_tlb_miss_paths() {
    if !Engine::jit_available() {
        return;
    }
    let (i, _) = compare(|a| {
        let mut top = a.create_label();
        a.mov(rcx, 60u64)?;
        a.mov(rsi, DATA + 0x1000)?;
        a.mov(rax, 0x0123_4567_89ab_cdefu64)?;
        a.mov(rdx, -1i64 as u64)?;
        a.set_label(&mut top)?;
        a.add(rax, rcx)?;
        a.mov(r9, rax)?;
        a.mov(qword_ptr(rsi + 0x800), rax)?;
        a.mov(rbx, qword_ptr(rsi + 0x800))?;
        a.add(rbx, rax)?;
        a.add(qword_ptr(rsi + 0x10), rbx)?;
        a.mov(dl, byte_ptr(rsi + 0x801))?;
        a.movzx(r10d, word_ptr(rsi + 0x802))?;
        a.push(rdx)?;
        a.pop(r11)?;
        a.add(r11, r9)?;
        a.mov(qword_ptr(rsi + 0x18), r11)?;
        a.add(rsi, 0x1000)?;
        a.dec(rcx)?;
        a.jnz(top)?;
        a.hlt()
    });
    assert_ne!(i.bus.read_u64(DATA + 0x1018), 0, "the loop wrote its pages");
}

/// 8- and 16-bit writes into cached registers (register, immediate,
/// memory and SETcc sources) keep the rest of the register.
#[test]
fn narrow_writes_merge_into_cached_registers() {
    if !Engine::jit_available() {
        return;
    }
    compare(|a| {
        let mut top = a.create_label();
        a.mov(rcx, 30u64)?;
        a.mov(rdi, DATA)?;
        a.mov(rax, 0x8877_6655_4433_2211u64)?;
        a.mov(rbx, 0x0102_0304_0506_0708u64)?;
        a.set_label(&mut top)?;
        a.mov(ax, bx)?;
        a.add(al, cl)?;
        a.add(bx, 0x7ff1)?;
        a.mov(qword_ptr(rdi + 0x100), rbx)?;
        a.mov(r8, rax)?;
        a.mov(r8b, byte_ptr(rdi + 0x101))?;
        a.mov(r9, rbx)?;
        a.mov(r9w, word_ptr(rdi + 0x102))?;
        a.cmp(al, bl)?;
        a.setb(r8b)?;
        a.inc(r9w)?;
        a.add(rax, r8)?;
        a.add(rbx, r9)?;
        a.mov(qword_ptr(rdi), rax)?;
        a.add(rdi, 8)?;
        a.dec(rcx)?;
        a.jnz(top)?;
        a.hlt()
    });
}
