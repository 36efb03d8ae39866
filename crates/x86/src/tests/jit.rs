//! The JIT against the interpreter on the cases it must get exactly
//! right: an exception in the middle of a compiled block, self-modifying
//! code, and the code cache's bookkeeping of host code.

use iced_x86::code_asm::*;
use iced_x86::IcedError;

use super::*;
use crate::Engine;

/// A guest on `engine`, every block compiled the first time it runs whole.
fn guest(engine: Engine) -> Guest {
    let mut g = Guest::long64();
    g.cpu.set_engine(engine);
    g.cpu.jit_hot = 1;
    g
}

/// A #PF on a load in the middle of a compiled block: the inline ops
/// before it have run, the ones after it have not, the frame holds the
/// load's RIP, the retired count is the interpreter's.
#[test]
fn page_fault_inside_a_compiled_block_is_exact() {
    if !jit_or_skip() {
        return;
    }
    let run = |engine| {
        let mut g = guest(engine);
        g.gate64(14, HANDLERS, 0, 0, false);
        g.code_at(HANDLERS, |a| a.hlt());
        g.code(|a| {
            a.mov(rax, 5u64)?;
            a.mov(rdx, 0x1_0000_0000u64)?; // beyond the 4 GiB identity map
            a.add(rax, 7)?;
            a.lea(rsi, qword_ptr(rax + rax * 2 + 1))?;
            a.mov(rbx, qword_ptr(rdx))?;
            a.add(rax, 100)?;
            a.mov(rsi, 0u64)?;
            a.hlt()
        });
        assert_eq!(g.run(), CpuExit::Halt);
        g
    };
    let i = run(Engine::Interp);
    let j = run(Engine::Jit);
    assert!(j.cpu.cache_counters().jit_blocks_compiled.get() >= 1);
    assert!(j.cpu.cache_counters().jit_block_runs.get() >= 1);
    assert_eq!(
        j.reg(0),
        12,
        "the add before the fault ran, the one after did not"
    );
    assert_eq!(j.reg(6), 37);
    assert_eq!(j.cpu.state.cr2, 0x1_0000_0000);
    // Frame: error code, then RIP of the faulting load (mov rbx,[rdx]).
    let rsp_j = j.reg(4);
    let rip = j.bus.read_u64(rsp_j + 8);
    let mut insn = [0u8; 3];
    for (k, b) in insn.iter_mut().enumerate() {
        *b = j.bus.read_u64(rip + k as u64) as u8;
    }
    assert_eq!(insn, [0x48, 0x8b, 0x1a], "frame RIP {rip:#x}");
    assert_eq!(j.cpu.state.gpr, i.cpu.state.gpr);
    assert_eq!(j.cpu.state.rflags(), i.cpu.state.rflags());
    assert_eq!(j.cpu.instructions_retired(), i.cpu.instructions_retired());
    assert_eq!(j.bus.read_u64(rsp_j + 8), i.bus.read_u64(i.reg(4) + 8));
}

/// A compiled loop that rewrites an immediate in its own block: the next
/// iteration runs the new code (the block and its host code are dropped).
#[test]
fn self_modifying_code_is_caught_in_compiled_blocks() {
    if !jit_or_skip() {
        return;
    }
    let run = |engine| {
        let mut g = guest(engine);
        g.code(|a| {
            let mut top = a.create_label();
            a.mov(ecx, 3u32)?; // B9 imm32: 5 bytes
            a.set_label(&mut top)?;
            a.mov(eax, 1u32)?; // B8 imm32 at CODE + 5, its imm at CODE + 6
            a.add(ebx, eax)?;
            a.mov(byte_ptr(CODE + 6), 5)?;
            a.dec(ecx)?;
            a.jnz(top)?;
            a.hlt()
        });
        assert_eq!(g.run(), CpuExit::Halt);
        g
    };
    let i = run(Engine::Interp);
    let j = run(Engine::Jit);
    assert_eq!(i.reg(3), 11);
    assert_eq!(j.reg(3), 11);
    let c = j.cpu.cache_counters();
    assert!(
        c.jit_blocks_compiled.get() >= 2,
        "the block was compiled again"
    );
    assert!(c.drops(crate::BlockDrop::CodeWrite) >= 1);
    assert_eq!(j.cpu.instructions_retired(), i.cpu.instructions_retired());
}

/// Host code counts in the code cache's bytes and leaves with its block.
#[test]
fn compiled_code_counts_in_the_code_cache_bound() {
    if !jit_or_skip() {
        return;
    }
    let bytes = |engine| {
        let mut g = guest(engine);
        g.code(|a| {
            a.mov(eax, 1u32)?;
            a.add(eax, 2)?;
            a.hlt()
        });
        assert_eq!(g.run(), CpuExit::Halt);
        let held = g.cpu.cache_counters().code_cache_bytes.get();
        g.cpu.blocks.clear();
        assert_eq!(g.cpu.cache_counters().code_cache_bytes.get(), 0);
        held
    };
    let interp = bytes(Engine::Interp);
    let jit = bytes(Engine::Jit);
    assert!(jit > interp, "interp {interp} jit {jit}");
}

/// Every condition code after every flag producer the JIT inlines (ALU,
/// INC/DEC after a known carry, fused CMP/TEST + Jcc), at the edges of
/// 32- and 64-bit arithmetic: the branches taken are the interpreter's.
#[test]
fn inline_branches_take_the_interpreters_path() {
    if !jit_or_skip() {
        return;
    }
    const EDGES: [u64; 8] = [
        0,
        1,
        0x7fff_ffff,
        0x8000_0000,
        0xffff_ffff,
        0x7fff_ffff_ffff_ffff,
        0x8000_0000_0000_0000,
        u64::MAX,
    ];
    let program = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        a.xor(esi, esi)?;
        for (x, &va) in EDGES.iter().enumerate() {
            for &vb in &EDGES[x % 3..] {
                for producer in 0..9 {
                    for cc in 0..16u8 {
                        let mut taken = a.create_label();
                        let mut next = a.create_label();
                        a.mov(rax, va)?;
                        a.mov(rbx, vb)?;
                        match producer {
                            0 => a.add(rax, rbx)?,
                            1 => a.sub(rax, rbx)?,
                            2 => a.and(eax, ebx)?,
                            3 => a.xor(rax, 0x7fff_0001)?,
                            4 => {
                                a.cmp(rax, rbx)?;
                                a.dec(rax)?
                            }
                            5 => {
                                a.cmp(ebx, eax)?;
                                a.inc(eax)?
                            }
                            6 => a.cmp(eax, ebx)?,
                            7 => a.test(rax, rbx)?,
                            _ => a.sub(eax, 1)?,
                        }
                        match cc {
                            0 => a.jo(taken)?,
                            1 => a.jno(taken)?,
                            2 => a.jb(taken)?,
                            3 => a.jae(taken)?,
                            4 => a.je(taken)?,
                            5 => a.jne(taken)?,
                            6 => a.jbe(taken)?,
                            7 => a.ja(taken)?,
                            8 => a.js(taken)?,
                            9 => a.jns(taken)?,
                            10 => a.jp(taken)?,
                            11 => a.jnp(taken)?,
                            12 => a.jl(taken)?,
                            13 => a.jge(taken)?,
                            14 => a.jle(taken)?,
                            _ => a.jg(taken)?,
                        }
                        a.imul_3(rsi, rsi, 3)?;
                        a.jmp(next)?;
                        a.set_label(&mut taken)?;
                        a.imul_3(rsi, rsi, 5)?;
                        a.add(rsi, 1)?;
                        a.set_label(&mut next)?;
                    }
                }
            }
        }
        a.hlt()
    };
    let run = |engine| {
        let mut g = guest(engine);
        g.code(program);
        assert_eq!(g.run(), CpuExit::Halt);
        g
    };
    let i = run(Engine::Interp);
    let j = run(Engine::Jit);
    assert!(j.cpu.cache_counters().jit_blocks_compiled.get() > 1000);
    assert_eq!(j.reg(6), i.reg(6), "branch history differs");
    assert_eq!(j.cpu.state.gpr, i.cpu.state.gpr);
    assert_eq!(j.cpu.state.rflags(), i.cpu.state.rflags());
    assert_eq!(j.cpu.instructions_retired(), i.cpu.instructions_retired());
}
