//! The JIT's inline SIMD forms (`jit::emit_simd`) against the
//! interpreter: every lane operation in its legacy, VEX.128 and VEX.256
//! forms with register and memory sources over random and edge values,
//! the whole-register moves (aligned, unaligned, across a page), VEX.128
//! zeroing bits 255:128 and legacy forms keeping them, (V)PMOVMSKB,
//! VPBROADCASTB, VZEROUPPER, (V)MOVD/(V)MOVQ, PCMPISTRI, and the faults the inline path leaves to
//! the handler: #PF on a vector load or store in the middle of a block
//! after inline ops changed registers, #GP of misaligned aligned forms,
//! #NM and #UD. Registers (vector ones whole), RIP, RFLAGS, CR2, the
//! retired count and the data pages must be the interpreter's.

use iced_x86::code_asm::*;
use iced_x86::{Code, EncodingKind, IcedError, Instruction, MemoryOperand, Register};

use super::*;
use crate::jit::emit_simd_ops::{vex_twin, MNEMONICS};
use crate::state::{cr0, cr4, xcr0};
use crate::Engine;

/// The compared bytes: DATA..DATA + OUT.
const OUT: u64 = 0x8000;
/// Inputs live here.
const IN: u64 = DATA + 0x10000;
/// No exception handler ran.
const NO_FAULT: u64 = 0xff;
/// An unmapped address (the identity map covers the low 4 GiB).
const UNMAPPED: u64 = 0x1_0000_0000;

type Prog<'a> = &'a dyn Fn(&mut CodeAssembler) -> Result<(), IcedError>;
type Setup<'a> = &'a dyn Fn(&mut Guest);

/// The input pages: edge bytes among a xorshift stream; in the second
/// page most bytes of every other 32-byte row repeat the row before (equal
/// lanes for the compares).
fn fill(bus: &mut TestBus, seed: u64) {
    const EDGES: [u8; 8] = [0x00, 0xff, 0x80, 0x7f, 0x01, 0xfe, 0x81, 0x00];
    let mut x = seed | 1;
    let mut bytes = vec![0u8; 0x2000];
    for b in bytes.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = if x.is_multiple_of(3) {
            EDGES[(x >> 8) as usize % 8]
        } else {
            (x >> 24) as u8
        };
    }
    for i in 0x1000..0x2000 {
        if (i / 32) % 2 == 1 && (i * 7) % 5 != 0 {
            bytes[i] = bytes[i - 32];
        }
    }
    for (k, c) in bytes.chunks(8).enumerate() {
        let v = u64::from_le_bytes(c.try_into().unwrap());
        bus.write_u64(IN + 8 * k as u64, v);
    }
}

fn run(engine: Engine, setup: Setup<'_>, prog: Prog<'_>) -> Guest {
    let mut g = Guest::long64();
    g.cpu.set_engine(engine);
    g.cpu.jit_hot = 1;
    g.cpu.state.cr4 |= cr4::OSXSAVE;
    g.cpu.state.xcr0 = xcr0::SUPPORTED;
    // #UD, #NM, #GP and #PF put their vector in R15 (and CR2 in R14).
    for v in [6u8, 7, 13, 14] {
        let h = HANDLERS + v as u64 * 0x20;
        g.gate64(v, h, 0, 0, false);
        g.code_at(h, |a| {
            a.mov(r15, v as u64)?;
            if v == 14 {
                a.mov(r14, cr2)?;
            }
            a.hlt()
        });
    }
    g.cpu.state.gpr[15] = NO_FAULT;
    fill(&mut g.bus, 0x9e37_79b9_7f4a_7c15);
    setup(&mut g);
    g.code(|a| prog(a));
    assert_eq!(g.run(), CpuExit::Halt, "rip {:#x}", g.cpu.state.rip);
    g
}

/// Runs `prog` on both engines (every block compiled on its first run
/// on jit) and compares the whole state named in the module doc;
/// returns the jit guest.
fn compare(setup: Setup<'_>, prog: Prog<'_>) -> Guest {
    let i = run(Engine::Interp, setup, prog);
    let j = run(Engine::Jit, setup, prog);
    assert_eq!(j.cpu.state.gpr, i.cpu.state.gpr);
    assert_eq!(j.cpu.state.rip, i.cpu.state.rip);
    assert_eq!(j.cpu.state.rflags(), i.cpu.state.rflags());
    assert_eq!(j.cpu.state.cr2, i.cpu.state.cr2);
    assert_eq!(j.cpu.instructions_retired(), i.cpu.instructions_retired());
    for r in 0..16 {
        let (jf, f) = (&j.cpu.state.fpu, &i.cpu.state.fpu);
        assert_eq!(jf.xmm[r], f.xmm[r], "xmm{r}");
        assert_eq!(jf.ymm_hi[r], f.ymm_hi[r], "ymm{r} bits 255:128");
    }
    for k in 0..OUT / 8 {
        let a = DATA + 8 * k;
        assert_eq!(j.bus.read_u64(a), i.bus.read_u64(a), "memory at {a:#x}");
    }
    j
}

fn no_setup(_: &mut Guest) {}

/// Ops that called out against all ops compiled.
fn called(g: &Guest) -> (u64, u64) {
    let c = g.cpu.cache_counters();
    (c.jit_ops_called.get(), c.jit_ops_compiled.get())
}

/// The code of `m` with operands `suffix` (iced-x86's naming).
fn code_of(m: iced_x86::Mnemonic, vex: bool, suffix: &str) -> Code {
    Code::values()
        .find(|c| {
            c.mnemonic() == m
                && (c.encoding() == EncodingKind::VEX) == vex
                && format!("{c:?}").ends_with(suffix)
        })
        .unwrap_or_else(|| panic!("no code {m:?} {suffix}"))
}

fn xmm(i: usize) -> Register {
    Register::XMM0 + i as u32
}

fn ymm(i: usize) -> Register {
    Register::YMM0 + i as u32
}

/// Every lane operation, legacy `xmm, xmm` and `xmm, m128`, VEX.128 and
/// VEX.256 `d, vvvv, reg` and `d, vvvv, m` (unaligned), over the
/// input pages; each result stored to the compared pages and folded into
/// the registers the run ends with.
#[test]
fn lane_ops_match_the_interpreter() {
    if !Engine::jit_available() {
        return;
    }
    let prog = |a: &mut CodeAssembler| {
        a.mov(rsi, IN)?;
        a.mov(rdi, DATA)?;
        let forms = MNEMONICS
            .iter()
            .flat_map(|&m| [(m, false), (vex_twin(m), true)]);
        for (n, (m, vex)) in forms.enumerate() {
            for row in 0..2u64 {
                // Alternate the halves: random against random, and near
                // copies (equal lanes).
                let off = ((n as u64 * 2 + row) * 64) % 0xf80 + (row % 2) * 0x1000;
                let src = |d: i64| MemoryOperand::with_base_displ(Register::RSI, off as i64 + d);
                a.vmovdqu(ymm1, ymmword_ptr(rsi + off as i32))?;
                a.vmovdqu(ymm2, ymmword_ptr(rsi + off as i32 + 32))?;
                a.vmovdqu(ymm4, ymmword_ptr(rsi + off as i32 + 32))?;
                if !vex {
                    let rr = code_of(m, false, "_xmm_xmmm128");
                    a.add_instruction(Instruction::with2(rr, xmm(1), xmm(2))?)?;
                    a.add_instruction(Instruction::with2(rr, xmm(4), src(0))?)?;
                    a.movdqu(xmmword_ptr(rdi), xmm1)?;
                    a.movdqu(xmmword_ptr(rdi + 16), xmm4)?;
                    a.vmovdqu(ymmword_ptr(rdi + 32), ymm4)?;
                } else {
                    let x = code_of(m, true, "_xmm_xmm_xmmm128");
                    let y = code_of(m, true, "_ymm_ymm_ymmm256");
                    a.add_instruction(Instruction::with3(x, xmm(3), xmm(1), xmm(2))?)?;
                    a.vmovdqu(ymmword_ptr(rdi), ymm3)?;
                    a.add_instruction(Instruction::with3(y, ymm(3), ymm(1), ymm(2))?)?;
                    a.vmovdqu(ymmword_ptr(rdi + 32), ymm3)?;
                    a.add_instruction(Instruction::with3(x, xmm(5), xmm(4), src(3))?)?;
                    a.add_instruction(Instruction::with3(y, ymm(6), ymm(1), src(-5))?)?;
                    a.vpxor(ymm3, ymm5, ymm6)?;
                    a.vmovdqu(ymmword_ptr(rdi + 64), ymm5)?;
                    a.vmovdqu(ymmword_ptr(rdi + 96), ymm6)?;
                }
                a.add(rdi, 128)?;
            }
        }
        assert!(MNEMONICS.len() as u64 * 2 * 2 * 128 <= OUT);
        a.hlt()
    };
    let j = compare(&no_setup, &prog);
    let (out, ops) = called(&j);
    assert!(out * 50 < ops, "{out} of {ops} ops call out");
}

/// The whole-register moves: loads and stores of every legacy and VEX
/// form, aligned and not, one across a page (the handler's path),
/// register to register; VEX.128 zeroes bits 255:128, legacy keeps them.
#[test]
fn moves_match_the_interpreter() {
    if !Engine::jit_available() {
        return;
    }
    let prog = |a: &mut CodeAssembler| {
        a.mov(rsi, IN)?;
        a.mov(rdi, DATA)?;
        a.mov(rbx, DATA + 0xff8)?;
        for k in 0..16 {
            let m = MemoryOperand::with_base_displ(Register::RSI, 32 * k as i64);
            a.add_instruction(Instruction::with2(
                Code::VEX_Vmovdqu_ymm_ymmm256,
                ymm(k),
                m,
            )?)?;
        }
        // Legacy: bits 255:128 of the destination kept.
        a.movdqu(xmm0, xmmword_ptr(rsi + 0x101))?;
        a.movdqa(xmm1, xmmword_ptr(rsi + 0x110))?;
        a.movups(xmm2, xmmword_ptr(rsi + 0x123))?;
        a.movaps(xmm3, xmmword_ptr(rsi + 0x140))?;
        a.movapd(xmm4, xmmword_ptr(rsi + 0x150))?;
        a.movupd(xmm5, xmmword_ptr(rsi + 0x15f))?;
        a.lddqu(xmm6, xmmword_ptr(rsi + 0x17f))?;
        a.movdqa(xmm7, xmm0)?;
        a.movdqu(xmm8, xmm15)?;
        a.movaps(xmm9, xmm1)?;
        a.movdqu(xmmword_ptr(rdi + 1), xmm0)?;
        a.movdqa(xmmword_ptr(rdi + 0x20), xmm1)?;
        a.movups(xmmword_ptr(rdi + 0x33), xmm2)?;
        a.movntdq(xmmword_ptr(rdi + 0x40), xmm3)?;
        a.movntps(xmmword_ptr(rdi + 0x50), xmm4)?;
        // Across a page: 8 bytes on each side.
        a.movdqu(xmmword_ptr(rbx), xmm5)?;
        a.movdqu(xmm10, xmmword_ptr(rbx))?;
        // VEX.128: bits 255:128 zeroed; VEX.256 whole.
        a.vmovdqu(xmm11, xmmword_ptr(rsi + 0x203))?;
        a.vmovdqa(xmm12, xmmword_ptr(rsi + 0x210))?;
        a.vmovdqa(ymm13, ymmword_ptr(rsi + 0x240))?;
        a.vmovups(ymm14, ymmword_ptr(rsi + 0x265))?;
        a.vmovdqa(xmm15, xmm13)?;
        a.vmovdqu(ymm0, ymm14)?;
        a.vmovaps(xmm1, xmm14)?;
        a.vmovdqu(ymmword_ptr(rdi + 0x81), ymm13)?;
        a.vmovdqa(ymmword_ptr(rdi + 0xa0), ymm14)?;
        a.vmovdqu(xmmword_ptr(rdi + 0xc7), xmm12)?;
        a.vmovntdq(ymmword_ptr(rdi + 0xe0), ymm0)?;
        a.vmovdqu(ymmword_ptr(rbx - 8), ymm13)?;
        a.vmovdqu(ymm2, ymmword_ptr(rbx - 16))?;
        a.hlt()
    };
    let j = compare(&no_setup, &prog);
    assert_eq!(j.reg(15), NO_FAULT);
    let (out, ops) = called(&j);
    assert!(out * 10 < ops, "{out} of {ops} ops call out");
}

/// (V)PMOVMSKB to 32- and 64-bit registers, VPBROADCASTB from a
/// register and from memory at both widths, VZEROUPPER.
#[test]
fn masks_broadcasts_and_vzeroupper_match_the_interpreter() {
    if !Engine::jit_available() {
        return;
    }
    let prog = |a: &mut CodeAssembler| {
        a.mov(rsi, IN)?;
        a.mov(rdi, DATA)?;
        for row in 0..24 {
            let off = row * 48 + 0x1000 * (row % 2);
            a.mov(rax, -1i64)?;
            a.mov(r9, -1i64)?;
            a.vmovdqu(ymm1, ymmword_ptr(rsi + off))?;
            a.vmovdqu(ymm2, ymmword_ptr(rsi + off + 32))?;
            a.pcmpeqb(xmm1, xmm2)?;
            a.pmovmskb(eax, xmm1)?;
            a.vpcmpeqb(ymm3, ymm2, ymmword_ptr(rsi + off + 1))?;
            a.vpmovmskb(ecx, ymm3)?;
            a.vpmovmskb(r9, xmm2)?;
            a.pmovmskb(rdx, xmm2)?;
            a.vpbroadcastb(ymm4, xmm2)?;
            a.vpbroadcastb(xmm5, byte_ptr(rsi + off + 7))?;
            a.vpbroadcastb(ymm6, byte_ptr(rsi + off + 9))?;
            a.vpbroadcastb(xmm7, xmm1)?;
            a.vpminub(ymm8, ymm4, ymm6)?;
            a.vmovdqu(ymmword_ptr(rdi), ymm8)?;
            a.vmovdqu(ymmword_ptr(rdi + 32), ymm5)?;
            a.mov(qword_ptr(rdi + 64), rax)?;
            a.mov(qword_ptr(rdi + 72), rcx)?;
            a.mov(qword_ptr(rdi + 80), rdx)?;
            a.mov(qword_ptr(rdi + 88), r9)?;
            a.add(rdi, 96)?;
            if row % 5 == 4 {
                a.vzeroupper()?;
            }
        }
        a.hlt()
    };
    let j = compare(&no_setup, &prog);
    let (out, ops) = called(&j);
    assert!(out * 20 < ops, "{out} of {ops} ops call out");
}

/// Inline ops change vector and general registers, then a vector load
/// or store (MOVDQU, PCMPEQB, PCMPISTRI, VMOVQ) faults in the middle of
/// the block:
/// the destination and memory untouched, CR2, RIP and the retired
/// count exact.
#[test]
fn page_fault_on_a_vector_access_mid_block_is_exact() {
    if !Engine::jit_available() {
        return;
    }
    for (k, store) in [(0, false), (1, true), (2, false), (3, false), (4, true)] {
        let prog = move |a: &mut CodeAssembler| {
            a.mov(rsi, IN)?;
            a.mov(rdx, UNMAPPED - 0x10)?;
            a.vmovdqu(ymm1, ymmword_ptr(rsi))?;
            a.vpcmpeqb(ymm2, ymm1, ymmword_ptr(rsi + 32))?;
            a.pxor(xmm1, xmm2)?;
            a.vpmovmskb(eax, ymm2)?;
            a.add(eax, 3)?;
            match (k, store) {
                (0, _) => a.vmovdqu(ymm3, ymmword_ptr(rdx + 8))?,
                (1, true) => a.movdqu(xmmword_ptr(rdx + 0x12), xmm1)?,
                (2, _) => a.pcmpeqb(xmm1, xmmword_ptr(rdx + 0x20))?,
                (3, _) => a.pcmpistri(xmm1, xmmword_ptr(rdx + 0x31), 0x0c)?,
                _ => a.vmovq(qword_ptr(rdx + 0x40), xmm2)?,
            }
            a.mov(eax, 1)?;
            a.hlt()
        };
        let j = compare(&no_setup, &prog);
        assert_eq!(j.reg(15), 14, "case {k}");
    }
}

/// #GP of the aligned forms on a misaligned operand (legacy moves and
/// m128 sources, VMOVDQA at both widths); VEX lane ops need no
/// alignment.
#[test]
fn alignment_faults_are_exact() {
    if !Engine::jit_available() {
        return;
    }
    let cases: [(u64, Prog<'_>); 5] = [
        (13, &|a| a.movdqa(xmm1, xmmword_ptr(rsi + 8))),
        (13, &|a| a.pcmpeqb(xmm1, xmmword_ptr(rsi + 4))),
        (13, &|a| a.vmovdqa(ymmword_ptr(rsi + 16), ymm1)),
        (13, &|a| a.movntdq(xmmword_ptr(rsi + 1), xmm1)),
        (NO_FAULT, &|a| a.vpor(ymm1, ymm2, ymmword_ptr(rsi + 3))),
    ];
    for (want, op) in cases {
        let prog = |a: &mut CodeAssembler| {
            a.mov(rsi, DATA)?;
            a.vmovdqu(ymm2, ymmword_ptr(rsi + 0x40))?;
            a.por(xmm1, xmm2)?;
            a.mov(ebx, 5)?;
            op(a)?;
            a.mov(ebx, 6)?;
            a.hlt()
        };
        let j = compare(&no_setup, &prog);
        assert_eq!(j.reg(15), want);
    }
}

/// #NM with CR0.TS (legacy and VEX), #UD without CR4.OSFXSR (legacy) or
/// without XCR0.AVX (VEX): the inline guard leaves them to the handler.
#[test]
fn nm_and_ud_are_exact() {
    if !Engine::jit_available() {
        return;
    }
    let ts = |g: &mut Guest| g.cpu.state.cr0 |= cr0::TS;
    let no_fxsr = |g: &mut Guest| g.cpu.state.cr4 &= !cr4::OSFXSR;
    let no_avx = |g: &mut Guest| g.cpu.state.xcr0 = xcr0::X87 | xcr0::SSE;
    let legacy: Prog<'_> = &|a| a.pxor(xmm1, xmm2);
    let vex: Prog<'_> = &|a| a.vpcmpeqb(ymm1, ymm2, ymm3);
    let cases: [(u64, Setup<'_>, Prog<'_>); 5] = [
        (7, &ts, legacy),
        (7, &ts, vex),
        (6, &no_fxsr, legacy),
        (6, &no_avx, vex),
        (NO_FAULT, &no_fxsr, vex),
    ];
    for (want, setup, op) in cases {
        let prog = |a: &mut CodeAssembler| {
            a.mov(ebx, 5)?;
            a.add(rbx, rbx)?;
            op(a)?;
            a.mov(ebx, 6)?;
            a.hlt()
        };
        let j = compare(setup, &prog);
        assert_eq!(j.reg(15), want);
    }
}

/// (V)MOVD and (V)MOVQ between XMM registers, general registers and
/// memory, every direction; VEX forms zero bits 255:128 of a vector
/// destination, legacy forms keep them.
#[test]
fn movd_and_movq_match_the_interpreter() {
    if !Engine::jit_available() {
        return;
    }
    let prog = |a: &mut CodeAssembler| {
        a.mov(rsi, IN)?;
        a.mov(rdi, DATA)?;
        for row in 0..8 {
            let off = row * 40 + 0x1000 * (row % 2);
            for k in 0..8 {
                let m = MemoryOperand::with_base_displ(Register::RSI, off as i64 + 32 * k);
                let c = Code::VEX_Vmovdqu_ymm_ymmm256;
                a.add_instruction(Instruction::with2(c, ymm(k as usize), m)?)?;
            }
            a.mov(rax, qword_ptr(rsi + off + 3))?;
            a.mov(rbx, qword_ptr(rsi + off + 11))?;
            a.movd(xmm0, eax)?;
            a.movq(xmm1, rbx)?;
            a.movd(xmm2, dword_ptr(rsi + off + 5))?;
            a.movq(xmm3, qword_ptr(rsi + off + 13))?;
            a.vmovd(xmm4, ebx)?;
            a.vmovq(xmm5, rax)?;
            a.vmovd(xmm6, dword_ptr(rsi + off + 1))?;
            a.vmovq(xmm7, qword_ptr(rsi + off + 2))?;
            a.movq(xmm8, xmm7)?;
            a.vmovq(xmm9, xmm6)?;
            a.mov(rcx, -1i64)?;
            a.mov(rdx, -1i64)?;
            a.movd(ecx, xmm3)?;
            a.vmovq(rdx, xmm1)?;
            a.movq(r8, xmm2)?;
            a.vmovd(r9d, xmm5)?;
            a.movd(dword_ptr(rdi), xmm1)?;
            a.movq(qword_ptr(rdi + 4), xmm3)?;
            a.vmovd(dword_ptr(rdi + 12), xmm7)?;
            a.vmovq(qword_ptr(rdi + 16), xmm4)?;
            for (k, r) in [rcx, rdx, r8, r9].into_iter().enumerate() {
                a.mov(qword_ptr(rdi + 24 + 8 * k as i32), r)?;
            }
            for k in 0..10 {
                let m = MemoryOperand::with_base_displ(Register::RDI, 56 + 32 * k);
                let c = Code::VEX_Vmovdqu_ymmm256_ymm;
                a.add_instruction(Instruction::with2(c, m, ymm(k as usize))?)?;
            }
            a.add(rdi, 376)?;
        }
        a.hlt()
    };
    let j = compare(&no_setup, &prog);
    let (out, ops) = called(&j);
    assert!(out * 20 < ops, "{out} of {ops} ops call out");
}

/// PCMPISTRI of every aggregation, polarity, element size and index
/// order the loop below takes, register and unaligned memory operands
/// over strings with and without zero elements: ECX and the flags (read
/// back by SETcc and PUSHFQ) the interpreter's.
#[test]
fn pcmpistri_matches_the_interpreter() {
    if !Engine::jit_available() {
        return;
    }
    let prog = |a: &mut CodeAssembler| {
        a.mov(rsi, IN)?;
        a.mov(rdi, DATA)?;
        let imms = [
            0x00u32, 0x01, 0x02, 0x04, 0x08, 0x0c, 0x0d, 0x12, 0x1a, 0x30, 0x3a, 0x40, 0x44,
        ];
        for (n, &imm) in imms.iter().enumerate() {
            for row in 0..6 {
                let off = (n as i32 * 6 + row) * 24 % 0xf00 + 0x1000 * (row % 2);
                a.vmovdqu(ymm1, ymmword_ptr(rsi + off))?;
                a.vmovdqu(ymm2, ymmword_ptr(rsi + off + 20))?;
                a.mov(rcx, -1i64)?;
                a.pcmpistri(xmm1, xmm2, imm)?;
                a.mov(qword_ptr(rdi), rcx)?;
                a.pushfq()?;
                a.pop(rax)?;
                a.mov(qword_ptr(rdi + 8), rax)?;
                a.pcmpistri(xmm2, xmmword_ptr(rsi + off + 7), imm)?;
                a.seta(al)?;
                a.setc(bl)?;
                a.sets(dl)?;
                a.mov(byte_ptr(rdi + 16), al)?;
                a.mov(byte_ptr(rdi + 17), bl)?;
                a.mov(byte_ptr(rdi + 18), dl)?;
                a.mov(dword_ptr(rdi + 20), ecx)?;
                a.add(rdi, 24)?;
            }
        }
        a.hlt()
    };
    let j = compare(&no_setup, &prog);
    // PUSHFQ calls out (78 of them).
    let (out, ops) = called(&j);
    assert!(out < 90 && ops > 1000, "{out} of {ops} ops call out");
}
