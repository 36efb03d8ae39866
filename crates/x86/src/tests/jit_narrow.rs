//! The JIT's inline 8- and 16-bit forms and stores of immediates (phase
//! 4) against the interpreter: register ALU/MOV/INC/DEC on a GPR's low
//! byte or word (the rest of the register kept), the fused CMP/TEST +
//! Jcc of bytes and words, MOV between narrow registers and memory, MOV
//! of an immediate to memory of every size, and a #PF on an inline store
//! of an immediate in the middle of a block.

use iced_x86::code_asm::*;
use iced_x86::IcedError;

use super::jit_alu_mem::compare;
use super::*;
use crate::Engine;

const VALUES: [u64; 6] = [0, 1, 0x7f, 0x80ff, 0x8000_0000_8000_7f80, u64::MAX];

/// Folds CF, OF, ZF/SF/OF (LE), PF and SF (by a Jcc) into RSI, with RAX
/// and RBX (whole registers: the untouched bits count).
fn fold(a: &mut CodeAssembler) -> Result<(), IcedError> {
    let mut skip = a.create_label();
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
    a.add(rsi, rbx)?;
    a.mov(qword_ptr(rdi), rsi)?;
    a.add(rdi, 8)?;
    a.and(rdi, (DATA + 0x1ff8) as i32)
}

/// Every ALU operation, MOV, INC and DEC on AL/BL/SIL/R9B and AX/BX/R9W,
/// register and immediate sources, over values at the edges.
#[test]
fn narrow_register_forms_match_the_interpreter() {
    if !Engine::jit_available() {
        return;
    }
    let j = compare(|a| {
        a.mov(rdi, DATA)?;
        for &va in &VALUES {
            for &vb in &VALUES {
                for k in 0..22 {
                    a.mov(rax, va)?;
                    a.mov(rbx, vb.rotate_left(8))?;
                    a.mov(r9, vb)?;
                    a.mov(rsi, va ^ 0x5a5a)?;
                    match k {
                        0 => a.add(al, bl)?,
                        1 => a.sub(al, r9b)?,
                        2 => a.and(bl, al)?,
                        3 => a.or(sil, bl)?,
                        4 => a.xor(al, r9b)?,
                        5 => a.cmp(al, bl)?,
                        6 => a.test(bl, r9b)?,
                        7 => a.add(al, 0x81)?,
                        8 => a.sub(bl, 1)?,
                        9 => a.cmp(al, 0x7f)?,
                        10 => a.test(al, 0x80)?,
                        11 => a.mov(al, r9b)?,
                        12 => a.mov(sil, 0x99u32)?,
                        13 => a.inc(al)?,
                        14 => a.dec(r9b)?,
                        15 => a.add(ax, bx)?,
                        16 => a.sub(ax, 0x7fff)?,
                        17 => a.cmp(bx, ax)?,
                        18 => a.xor(r9w, ax)?,
                        19 => a.mov(bx, r9w)?,
                        20 => a.inc(ax)?,
                        _ => a.dec(bx)?,
                    }
                    a.add(rsi, r9)?;
                    fold(a)?;
                }
            }
        }
        a.hlt()
    });
    let c = j.cpu.cache_counters();
    let (ops, out) = (c.jit_ops_compiled.get(), c.jit_ops_called.get());
    assert!(out * 20 < ops, "{out} of {ops} ops call out");
}

/// CMP/TEST of bytes and words fused with the Jcc after them, both
/// sides, every condition the loop below takes.
#[test]
fn narrow_compare_and_branch_match_the_interpreter() {
    if !Engine::jit_available() {
        return;
    }
    let j = compare(|a| {
        a.mov(rdi, DATA)?;
        for &va in &VALUES {
            for &vb in &VALUES {
                for k in 0..8 {
                    let mut t = a.create_label();
                    a.mov(rax, va)?;
                    a.mov(rbx, vb)?;
                    a.mov(rsi, 1u64)?;
                    match k {
                        0 => a.cmp(al, bl)?,
                        1 => a.cmp(al, 0x80)?,
                        2 => a.test(al, al)?,
                        3 => a.test(bl, 0x81)?,
                        4 => a.cmp(ax, bx)?,
                        5 => a.cmp(bx, 0x7fff)?,
                        6 => a.test(ax, bx)?,
                        _ => a.cmp(sil, al)?,
                    }
                    match k % 4 {
                        0 => a.jb(t)?,
                        1 => a.jl(t)?,
                        2 => a.jz(t)?,
                        _ => a.jbe(t)?,
                    }
                    a.add(rsi, 2)?;
                    a.set_label(&mut t)?;
                    fold(a)?;
                }
            }
        }
        a.hlt()
    });
    assert!(j.cpu.cache_counters().jit_ops_compiled.get() > 1000);
}

/// MOV of narrow registers to and from memory and of immediates to
/// memory, every size, unaligned and at the end of a page.
#[test]
fn narrow_moves_and_stores_of_immediates_match_the_interpreter() {
    if !Engine::jit_available() {
        return;
    }
    let j = compare(|a| {
        a.mov(rdi, DATA)?;
        for &v in &VALUES {
            a.mov(rax, v)?;
            a.mov(rbx, !v)?;
            a.mov(qword_ptr(rdi), 0x1234_5678)?;
            a.mov(qword_ptr(rdi + 8), -2i32)?;
            a.mov(dword_ptr(rdi + 17), 0x8765_4321u32)?;
            a.mov(word_ptr(rdi + 22), 0xfedcu32)?;
            a.mov(byte_ptr(rdi + 25), 0x9cu32)?;
            a.mov(byte_ptr(rdi + 26), al)?;
            a.mov(byte_ptr(rdi + 27), r9b)?;
            a.mov(word_ptr(rdi + 29), bx)?;
            a.mov(bl, byte_ptr(rdi + 17))?;
            a.mov(ax, word_ptr(rdi + 22))?;
            a.mov(sil, byte_ptr(rdi + 8))?;
            a.mov(r9w, word_ptr(rdi + 1))?;
            a.add(rsi, rax)?;
            a.add(rsi, rbx)?;
            a.add(rsi, r9)?;
            a.add(rdi, 32)?;
        }
        // The last bytes of a page.
        a.mov(rdx, DATA + 0xffe)?;
        a.mov(word_ptr(rdx), 0x4142u32)?;
        a.mov(byte_ptr(rdx + 1), 0x43u32)?;
        a.mov(cx, word_ptr(rdx))?;
        a.hlt()
    });
    let c = j.cpu.cache_counters();
    let (ops, out) = (c.jit_ops_compiled.get(), c.jit_ops_called.get());
    assert!(out * 20 < ops, "{out} of {ops} ops call out");
}

/// A #PF on an inline store of an immediate after inline ops that
/// changed registers and flags in the same block: memory untouched,
/// registers, flags, CR2, RIP and the retired count the interpreter's.
#[test]
fn page_fault_on_an_inline_store_of_an_immediate_is_exact() {
    if !Engine::jit_available() {
        return;
    }
    let j = compare(|a| {
        a.mov(rax, 5u64)?;
        a.mov(rdx, 0x1_0000_0000u64)?;
        a.add(al, 0x7f)?;
        a.mov(byte_ptr(DATA), 0x11u32)?;
        a.mov(dword_ptr(rdx + 4), 0x2222_2222u32)?;
        a.mov(rax, 1u64)?;
        a.hlt()
    });
    assert_eq!(j.reg(0), 0x84);
    assert_eq!(j.bus.read_u64(DATA) & 0xff, 0x11);
    assert_eq!(j.cpu.state.cr2, 0x1_0000_0004);
}
