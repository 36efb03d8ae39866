//! The JIT's inline ALU forms with a memory operand (and NOPs) against
//! the interpreter: every operation, size and form at the edges, the
//! flags read back by SETcc and Jcc (inline over known flags after both
//! the TLB hit and the miss path), and a #PF on the access.

use iced_x86::code_asm::*;
use iced_x86::IcedError;

use super::*;
use crate::Engine;

fn run(engine: Engine, program: fn(&mut CodeAssembler) -> Result<(), IcedError>) -> Guest {
    let mut g = Guest::long64();
    g.cpu.set_engine(engine);
    g.cpu.jit_hot = 1;
    g.gate64(14, HANDLERS, 1, 0, false);
    g.code_at(HANDLERS, |a| a.hlt());
    g.code(program);
    assert_eq!(g.run(), CpuExit::Halt, "rip {:#x}", g.cpu.state.rip);
    g
}

/// Runs `program` on both engines (every block compiled on its first run
/// on jit) and compares registers, RIP, RFLAGS, CR2, the retired count
/// and the data and stack pages; returns the jit guest.
pub(super) fn compare(program: fn(&mut CodeAssembler) -> Result<(), IcedError>) -> Guest {
    let i = run(Engine::Interp, program);
    let j = run(Engine::Jit, program);
    assert_eq!(j.cpu.state.gpr, i.cpu.state.gpr);
    assert_eq!(j.cpu.state.rip, i.cpu.state.rip);
    assert_eq!(j.cpu.state.rflags(), i.cpu.state.rflags());
    assert_eq!(j.cpu.state.cr2, i.cpu.state.cr2);
    assert_eq!(j.cpu.instructions_retired(), i.cpu.instructions_retired());
    for k in 0..1024 {
        let a = DATA + 8 * k;
        assert_eq!(j.bus.read_u64(a), i.bus.read_u64(a), "memory at {a:#x}");
    }
    for k in 0..16 {
        let a = 0x5_ff80 + 8 * k;
        assert_eq!(j.bus.read_u64(a), i.bus.read_u64(a), "frame at {a:#x}");
    }
    j
}

const VALUES: [u64; 5] = [0, 1, 0x7f, 0x8000_0000_8000_8080, u64::MAX];

/// One case: [DATA + slot] = va, RBX = vb; `f` emits the op on
/// [RDI] / RBX / an immediate; SETcc of four conditions and a Jcc fold
/// the flags into RSI; the memory and RAX are left for the comparison.
fn case(
    a: &mut CodeAssembler,
    va: u64,
    vb: u64,
    f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> Result<(), IcedError> {
    let mut skip = a.create_label();
    a.mov(rax, va)?;
    a.mov(qword_ptr(rdi), rax)?;
    a.mov(rbx, vb)?;
    a.mov(rax, 0x0123_4567_89ab_cdefu64)?;
    f(a)?;
    a.setb(cl)?;
    a.seto(dl)?;
    a.setle(r8b)?;
    a.setp(r9b)?;
    a.jns(skip)?;
    a.add(rsi, 0x100)?;
    a.set_label(&mut skip)?;
    a.imul_3(rsi, rsi, 17)?;
    a.movzx(ecx, cl)?;
    a.movzx(edx, dl)?;
    a.movzx(r8d, r8b)?;
    a.movzx(r9d, r9b)?;
    a.add(rsi, rcx)?;
    a.add(rsi, rdx)?;
    a.add(rsi, r8)?;
    a.add(rsi, r9)?;
    a.add(rsi, rax)?;
    a.add(rdi, 8)?;
    Ok(())
}

#[test]
fn alu_with_memory_operands_matches_the_interpreter() {
    if !Engine::jit_available() {
        return;
    }
    let j = compare(|a| {
        a.mov(rdi, DATA)?;
        a.xor(esi, esi)?;
        for &va in &VALUES {
            for &vb in &VALUES {
                // reg op= [mem], 32 and 64 bits.
                case(a, va, vb, |a| a.add(rbx, qword_ptr(rdi)))?;
                case(a, va, vb, |a| a.sub(ebx, dword_ptr(rdi)))?;
                case(a, va, vb, |a| a.cmp(rbx, qword_ptr(rdi)))?;
                case(a, va, vb, |a| a.cmp(bl, byte_ptr(rdi)))?;
                case(a, va, vb, |a| a.test(word_ptr(rdi), bx))?;
                case(a, va, vb, |a| a.xor(ebx, dword_ptr(rdi + 1)))?;
                // [mem] op= reg, every size.
                case(a, va, vb, |a| a.add(byte_ptr(rdi), bl))?;
                case(a, va, vb, |a| a.sub(word_ptr(rdi), bx))?;
                case(a, va, vb, |a| a.or(dword_ptr(rdi), ebx))?;
                case(a, va, vb, |a| a.and(qword_ptr(rdi), rbx))?;
                case(a, va, vb, |a| a.cmp(qword_ptr(rdi), rbx))?;
                case(a, va, vb, |a| a.test(byte_ptr(rdi + 3), bl))?;
                // [mem] op= imm.
                case(a, va, vb, |a| a.cmp(byte_ptr(rdi), 0x7f))?;
                case(a, va, vb, |a| a.cmp(dword_ptr(rdi), -1))?;
                case(a, va, vb, |a| a.sub(qword_ptr(rdi), 1))?;
                case(a, va, vb, |a| a.add(word_ptr(rdi + 6), 0x7fff))?;
                case(a, va, vb, |a| {
                    a.xor(dword_ptr(rdi + 4), 0x8000_0000u32 as i32)
                })?;
                case(a, va, vb, |a| a.test(qword_ptr(rdi), 0x80))?;
                // NOPs between a producer and its consumers.
                case(a, va, vb, |a| {
                    a.cmp(qword_ptr(rdi), rbx)?;
                    a.nop()?;
                    a.nop_1(dword_ptr(rax))
                })?;
            }
        }
        a.hlt()
    });
    let c = j.cpu.cache_counters();
    let (ops, out) = (c.jit_ops_compiled.get(), c.jit_ops_called.get());
    assert!(out * 20 < ops, "{out} of {ops} ops call out");
}

/// A #PF on a read-modify-write in the middle of a compiled block: the
/// memory and flags are untouched, RIP is the faulting op's.
#[test]
fn page_fault_on_an_inline_read_modify_write_is_exact() {
    if !Engine::jit_available() {
        return;
    }
    let j = compare(|a| {
        a.mov(rax, 5u64)?;
        a.cmp(rax, 9)?;
        a.mov(rdx, 0x1_0000_0000u64)?;
        a.add(qword_ptr(DATA), rax)?;
        a.add(qword_ptr(rdx + 8), rax)?;
        a.add(rax, 1)?;
        a.hlt()
    });
    assert_eq!(j.reg(0), 5);
    assert_eq!(j.bus.read_u64(DATA), 5);
    assert_eq!(j.cpu.state.cr2, 0x1_0000_0008);
}

/// SHL/SHR/SAR of 32- and 64-bit registers by immediates at the edges,
/// RFLAGS read back by PUSHFQ and by SETcc (from the lazy flags).
#[test]
fn shifts_by_an_immediate_match_the_interpreter() {
    if !Engine::jit_available() {
        return;
    }
    let j = compare(|a| {
        a.mov(rdi, DATA)?;
        for &v in &VALUES {
            for count in [1u32, 2, 7, 31, 32, 63] {
                for kind in 0..6 {
                    a.mov(rax, v)?;
                    match kind {
                        0 => a.shl(rax, count)?,
                        1 => a.shr(rax, count)?,
                        2 => a.sar(rax, count)?,
                        3 => a.shl(eax, count)?,
                        4 => a.shr(eax, count)?,
                        _ => a.sar(eax, count)?,
                    }
                    a.setb(cl)?;
                    a.seto(dl)?;
                    a.pushfq()?;
                    a.pop(rbx)?;
                    a.mov(qword_ptr(rdi), rax)?;
                    a.mov(qword_ptr(rdi + 8), rbx)?;
                    a.mov(byte_ptr(rdi + 16), cl)?;
                    a.mov(byte_ptr(rdi + 17), dl)?;
                    a.add(rdi, 24)?;
                    a.and(rdi, (DATA + 0x1ff8) as i32)?;
                }
            }
        }
        a.hlt()
    });
    let c = j.cpu.cache_counters();
    let (ops, out) = (c.jit_ops_compiled.get(), c.jit_ops_called.get());
    // PUSHFQ and the byte stores call out.
    assert!(out * 3 < ops, "{out} of {ops} ops call out");
}
