//! The JIT's phase-2 inline forms against the interpreter: MOVZX/MOVSX,
//! SETcc/CMOVcc, IMUL, CALL/RET, CALL and JMP through registers and
//! memory (values, flags, faults with RIP and RSP exact, self-modifying
//! code), and the chaining of compiled blocks.

use iced_x86::code_asm::*;
use iced_x86::IcedError;

use super::*;
use crate::Engine;

fn guest(engine: Engine) -> Guest {
    let mut g = Guest::long64();
    g.cpu.set_engine(engine);
    g.cpu.jit_hot = 1;
    g
}

type Program = fn(&mut CodeAssembler) -> Result<(), IcedError>;

/// Runs `program` (at CODE, HLT at its end) on both engines and checks
/// that registers, RFLAGS, retired instructions and the DATA page agree;
/// returns the JIT's guest.
fn same_on_both(program: Program, setup: fn(&mut Guest)) -> Guest {
    let run = |engine| {
        let mut g = guest(engine);
        setup(&mut g);
        g.code(program);
        assert_eq!(g.run(), CpuExit::Halt, "rip {:#x}", g.cpu.state.rip);
        g
    };
    let i = run(Engine::Interp);
    let j = run(Engine::Jit);
    assert_same_cpu_state(&i, &j);
    let page = |g: &Guest| {
        (0..512)
            .map(|k| g.bus.read_u64(DATA + 8 * k))
            .collect::<Vec<_>>()
    };
    assert_eq!(page(&j), page(&i), "DATA differs");
    let stack = |g: &Guest| {
        (0..64)
            .map(|k| g.bus.read_u64(0x5_fe00 + 8 * k))
            .collect::<Vec<_>>()
    };
    assert_eq!(stack(&j), stack(&i), "exception stack differs");
    j
}

fn no_setup(_: &mut Guest) {}

/// (ops compiled, ops of them calling their handler) on `g`.
fn called(g: &Guest) -> (u64, u64) {
    let c = g.cpu.cache_counters();
    (c.jit_ops_compiled.get(), c.jit_ops_called.get())
}

/// MOVZX/MOVSX/MOVSXD from registers and memory into 32- and 64-bit
/// registers (a 32-bit destination clears the high half), at sign edges.
#[test]
fn movzx_movsx_match_the_interpreter() {
    if !jit_or_skip() {
        return;
    }
    let j = same_on_both(
        |a| {
            a.mov(rax, 0x8081_7f82_ff85_f687u64)?;
            a.mov(qword_ptr(DATA), rax)?;
            a.mov(rbx, u64::MAX)?;
            a.mov(rcx, u64::MAX)?;
            a.mov(rdx, u64::MAX)?;
            a.movzx(ecx, al)?;
            a.movzx(rdx, ax)?;
            a.movsx(esi, al)?;
            a.movsx(rdi, ax)?;
            a.movsxd(r8, eax)?;
            a.movsx(r9, byte_ptr(DATA + 1))?;
            a.movzx(r10d, word_ptr(DATA + 2))?;
            a.movsxd(r11, dword_ptr(DATA + 4))?;
            a.movsx(r12d, word_ptr(DATA + 6))?;
            a.movzx(r13, byte_ptr(DATA + 7))?;
            a.movsx(r14, sil)?;
            a.movzx(ebx, bl)?;
            a.mov(r15, DATA)?;
            a.movsx(r15d, byte_ptr(r15 + 5))?;
            a.hlt()
        },
        no_setup,
    );
    // One block: everything inline but the HLT.
    assert_eq!(called(&j).1, 1, "{:?}", called(&j));
    assert_eq!(j.reg(1), 0x87);
    assert_eq!(j.reg(2), 0xf687);
    assert_eq!(j.reg(6), 0xffff_ff87);
    assert_eq!(j.reg(9), 0xffff_ffff_ffff_fff6);
    assert_eq!(j.reg(13), 0x80);
    assert_eq!(j.reg(15), 0x7f);
}

const EDGES: [u64; 6] = [
    0,
    1,
    0x7fff_ffff,
    0xffff_ffff,
    0x8000_0000_0000_0000,
    u64::MAX,
];

/// SETcc and CMOVcc of every condition after each inline flag producer,
/// at the edges of 32- and 64-bit arithmetic; the results are folded
/// into RSI and stored, so any difference shows.
#[test]
fn setcc_and_cmovcc_match_the_interpreter() {
    if !jit_or_skip() {
        return;
    }
    let j = same_on_both(
        |a| {
            a.xor(esi, esi)?;
            a.mov(rdi, DATA)?;
            for &va in &EDGES {
                for &vb in &EDGES {
                    for producer in 0..5 {
                        for cc in 0..16u8 {
                            a.mov(rax, va)?;
                            a.mov(rbx, vb)?;
                            a.mov(rcx, 0x1111_2222_3333_4444u64)?;
                            a.mov(rdx, 0x5555_6666_7777_8888u64)?;
                            match producer {
                                0 => a.add(rax, rbx)?,
                                1 => a.sub(eax, ebx)?,
                                2 => a.cmp(rax, rbx)?,
                                3 => a.test(eax, ebx)?,
                                _ => {
                                    a.cmp(rbx, rax)?;
                                    a.inc(rax)?
                                }
                            }
                            setcc(a, cc)?;
                            cmov(a, cc, producer % 2 == 0)?;
                            a.lea(rsi, qword_ptr(rsi + rsi * 2))?;
                            a.add(rsi, rcx)?;
                            a.xor(rsi, rdx)?;
                            a.mov(qword_ptr(rdi), rsi)?;
                            a.add(rdi, 8)?;
                            a.and(rdi, (DATA + 0xff8) as i32)?;
                        }
                    }
                }
            }
            a.hlt()
        },
        no_setup,
    );
    // Only a SETcc opening a block (its flags from the block before) and
    // the HLT call out.
    let (ops, out) = called(&j);
    assert!(out * 50 < ops, "{out} of {ops} ops call out");
}

fn setcc(a: &mut CodeAssembler, cc: u8) -> Result<(), IcedError> {
    match cc {
        0 => a.seto(cl),
        1 => a.setno(cl),
        2 => a.setb(cl),
        3 => a.setae(cl),
        4 => a.sete(cl),
        5 => a.setne(cl),
        6 => a.setbe(cl),
        7 => a.seta(cl),
        8 => a.sets(cl),
        9 => a.setns(cl),
        10 => a.setp(cl),
        11 => a.setnp(cl),
        12 => a.setl(cl),
        13 => a.setge(cl),
        14 => a.setle(cl),
        _ => a.setg(cl),
    }
}

/// CMOVcc rdx, rbx (64-bit) or edx, ebx (32-bit: the high half clears
/// whether or not it moves).
fn cmov(a: &mut CodeAssembler, cc: u8, wide: bool) -> Result<(), IcedError> {
    macro_rules! both {
        ($m:ident) => {
            if wide {
                a.$m(rdx, rbx)
            } else {
                a.$m(edx, ebx)
            }
        };
    }
    match cc {
        0 => both!(cmovo),
        1 => both!(cmovno),
        2 => both!(cmovb),
        3 => both!(cmovae),
        4 => both!(cmove),
        5 => both!(cmovne),
        6 => both!(cmovbe),
        7 => both!(cmova),
        8 => both!(cmovs),
        9 => both!(cmovns),
        10 => both!(cmovp),
        11 => both!(cmovnp),
        12 => both!(cmovl),
        13 => both!(cmovge),
        14 => both!(cmovle),
        _ => both!(cmovg),
    }
}

/// IMUL r, r and r, r, imm at the overflow edges of 32 and 64 bits; CF
/// and OF read back by the (handler) Jcc and by PUSHFQ.
#[test]
fn imul_matches_the_interpreter() {
    if !jit_or_skip() {
        return;
    }
    let j = same_on_both(
        |a| {
            a.mov(rdi, DATA)?;
            for &va in &EDGES {
                for &vb in &[0u64, 3, 0x7fff_ffff, 0x8000_0000, u64::MAX, 1 << 62] {
                    for form in 0..4 {
                        a.mov(rax, va)?;
                        a.mov(rbx, vb)?;
                        match form {
                            0 => a.imul_2(rax, rbx)?,
                            1 => a.imul_2(eax, ebx)?,
                            2 => a.imul_3(rax, rbx, -3)?,
                            _ => a.imul_3(eax, ebx, 0x7fff_0000)?,
                        }
                        a.pushfq()?;
                        a.pop(rcx)?;
                        a.and(ecx, 0x801)?; // OF, CF (SF/ZF/PF undefined)
                        a.mov(qword_ptr(rdi), rax)?;
                        a.mov(qword_ptr(rdi + 8), rcx)?;
                        a.add(rdi, 16)?;
                    }
                }
            }
            a.hlt()
        },
        no_setup,
    );
    // PUSHFQ (one op in ten) calls out, the IMULs do not.
    let (ops, out) = called(&j);
    assert!(out * 8 < ops, "{out} of {ops} ops call out");
}

/// Near CALL and RET through the inline stack path: a recursive
/// function, return addresses and RSP checked against the interpreter.
#[test]
fn call_and_ret_match_the_interpreter() {
    if !jit_or_skip() {
        return;
    }
    let j = same_on_both(
        |a| {
            let mut f = a.create_label();
            let mut base = a.create_label();
            let mut top = a.create_label();
            a.mov(ecx, 50u32)?;
            a.xor(eax, eax)?;
            a.set_label(&mut top)?;
            a.mov(edx, 6u32)?;
            a.call(f)?;
            a.dec(ecx)?;
            a.jnz(top)?;
            a.hlt()?;
            // f: rax += rdx; recurse while --rdx; leaves its return
            // address at DATA + rdx * 8.
            a.set_label(&mut f)?;
            a.add(rax, rdx)?;
            a.mov(r8, qword_ptr(rsp))?;
            a.mov(qword_ptr(rdx * 8 + DATA), r8)?;
            a.dec(rdx)?;
            a.jz(base)?;
            a.call(f)?;
            a.set_label(&mut base)?;
            a.ret()
        },
        no_setup,
    );
    // Only the HLT calls out (the DEC opening the block the RET returns
    // to reads the kept CF from the lazy flags).
    assert_eq!(called(&j).1, 1, "{:?}", called(&j));
    assert_eq!(j.reg(0), 50 * 21);
    assert_eq!(j.reg(4), STACK_TOP);
}

/// A jump table in memory (JMP m64), JMP r64 and CALL r64, compiled:
/// the same registers, memory and stack as the interpreter, and none of
/// them calls its handler.
#[test]
fn indirect_jumps_and_calls_match_the_interpreter() {
    if !jit_or_skip() {
        return;
    }
    let j = same_on_both(
        |a| {
            let mut top = a.create_label();
            let mut cases = [a.create_label(), a.create_label(), a.create_label()];
            let mut join = a.create_label();
            let mut f = a.create_label();
            // The jump table at DATA + 0x800.
            for (k, c) in cases.iter().enumerate() {
                a.lea(rax, ptr(*c))?;
                a.mov(qword_ptr(DATA + 0x800 + 8 * k as u64), rax)?;
            }
            a.mov(ecx, 60u32)?;
            a.xor(eax, eax)?;
            a.set_label(&mut top)?;
            // case (ecx % 3) through the table
            a.mov(eax, ecx)?;
            a.xor(edx, edx)?;
            a.mov(r8d, 3u32)?;
            a.div(r8d)?;
            a.mov(r9, DATA + 0x800)?;
            a.jmp(qword_ptr(r9 + rdx * 8))?;
            a.set_label(&mut cases[0])?;
            a.add(rbx, 1)?;
            a.lea(r10, ptr(join))?;
            a.jmp(r10)?;
            a.set_label(&mut cases[1])?;
            a.add(rbx, 100)?;
            a.lea(r11, ptr(f))?;
            a.call(r11)?;
            a.jmp(join)?;
            a.set_label(&mut cases[2])?;
            a.add(rbx, 10_000)?;
            a.set_label(&mut join)?;
            a.mov(qword_ptr(rcx * 8 + DATA), rbx)?;
            a.dec(ecx)?;
            a.jnz(top)?;
            a.hlt()?;
            // f: counts its calls, leaves its return address
            a.set_label(&mut f)?;
            a.add(r12, 1)?;
            a.mov(r13, qword_ptr(rsp))?;
            a.ret()
        },
        no_setup,
    );
    assert_eq!(j.reg(3), 20 * (1 + 100 + 10_000));
    assert_eq!(j.reg(12), 20);
    assert_eq!(j.reg(4), STACK_TOP);
    let (_, calls) = called(&j);
    // What still calls out: DIV, HLT and the RIP-relative LEAs (11 with
    // the branches calling their handlers, in the units that hold them).
    assert_eq!(calls, 4, "{:?}", called(&j));
}

/// A JMP r64 and a CALL r64 to a non-canonical address raise #GP with
/// RIP at the branch and RSP unchanged, on both engines.
#[test]
fn indirect_branches_to_non_canonical_addresses_raise_gp() {
    if !jit_or_skip() {
        return;
    }
    fn with_gp_gate(g: &mut Guest) {
        g.gate64(13, HANDLERS, 0, 0, false);
        g.code_at(HANDLERS, |a| a.hlt());
    }
    for call in [false, true] {
        let program: Program = if call {
            |a| {
                a.mov(rax, 0x8000_0000_0000_0000u64)?;
                a.add(rbx, 3)?;
                a.call(rax)
            }
        } else {
            |a| {
                a.mov(rax, 0x0000_8000_0000_0000u64)?;
                a.add(rbx, 3)?;
                a.jmp(rax)
            }
        };
        let j = same_on_both(program, with_gp_gate);
        assert_eq!(j.reg(3), 3, "call {call}");
        // The #GP frame: error code 0, then the branch's RIP.
        let frame = j.reg(4);
        assert_eq!(j.bus.read_u64(frame), 0, "call {call}");
        assert_eq!(j.bus.read_u64(frame + 8), CODE + 10 + 4, "call {call}");
    }
}

/// A #PF on the push of a CALL at the end of a compiled block: the ops
/// before it ran, RIP is the CALL's, RSP is unchanged, CR2 is the push's
/// address; then the same for a RET popping from an unmapped stack.
#[test]
fn page_faults_on_call_and_ret_are_exact() {
    if !jit_or_skip() {
        return;
    }
    fn with_pf_gate(g: &mut Guest) {
        // IST1: the faulting RSP points nowhere.
        g.gate64(14, HANDLERS, 1, 0, false);
        g.code_at(HANDLERS, |a| a.hlt());
    }
    let unmapped = 0x1_0000_0010u64;
    for ret in [false, true] {
        let j = if ret {
            same_on_both(
                |a| {
                    a.mov(rax, 5u64)?;
                    a.mov(rsp, 0x1_0000_0010u64)?;
                    a.add(rax, 7)?;
                    a.ret()
                },
                with_pf_gate,
            )
        } else {
            same_on_both(
                |a| {
                    let mut f = a.create_label();
                    a.mov(rax, 5u64)?;
                    a.mov(rsp, 0x1_0000_0010u64)?;
                    a.add(rax, 7)?;
                    a.call(f)?;
                    a.set_label(&mut f)?;
                    a.hlt()
                },
                with_pf_gate,
            )
        };
        assert_eq!(j.reg(0), 12, "the ops before the fault ran");
        let frame = j.reg(4);
        let rip = j.bus.read_u64(frame + 8);
        let saved_rsp = j.bus.read_u64(frame + 32);
        assert_eq!(saved_rsp, unmapped, "RSP unchanged (ret: {ret})");
        let first = j.bus.read_u8(rip);
        assert_eq!(first, if ret { 0xc3 } else { 0xe8 }, "frame RIP {rip:#x}");
        let want = if ret { unmapped } else { unmapped - 8 };
        assert_eq!(j.cpu.state.cr2, want);
    }
}

/// A compiled function rewritten between calls (the immediate of its
/// MOV): each call runs the current code.
#[test]
fn self_modifying_code_reached_by_call_is_caught() {
    if !jit_or_skip() {
        return;
    }
    const F: u64 = CODE + 0x1000;
    let j = same_on_both(
        |a| {
            let mut top = a.create_label();
            a.mov(ecx, 10u32)?;
            a.xor(ebx, ebx)?;
            a.set_label(&mut top)?;
            a.mov(rdx, F)?;
            a.call(rdx)?;
            a.add(ebx, eax)?;
            // F: B8 imm32 (mov eax, imm): the immediate at F + 1.
            a.mov(dword_ptr(F + 1), ecx)?;
            a.dec(ecx)?;
            a.jnz(top)?;
            a.hlt()
        },
        |g| {
            g.code_at(F, |a| {
                a.mov(eax, 100u32)?;
                a.ret()
            })
        },
    );
    // 100 + 10 + 9 + ... + 2.
    assert_eq!(j.reg(3), 100 + (2..=10).sum::<u64>());
    assert!(j.cpu.cache_counters().drops(crate::BlockDrop::CodeWrite) >= 1);
}
