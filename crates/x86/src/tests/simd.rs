//! SSE3..SSE4.2 faults and a few fixed-value checks (the values are
//! compared against the host in `simd_diff`).

use iced_x86::code_asm::*;
use iced_x86::IcedError;

use super::*;
use crate::state::{cr0, cr4, rflags};

/// Runs `body` (which ends in HLT) with handlers for #UD, #NM and #GP that
/// record their vector in R15 and halt. Returns R15 (0: no fault).
fn fault_of(
    setup: impl FnOnce(&mut Guest),
    body: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>,
) -> u64 {
    let mut g = Guest::long64();
    for (i, v) in [6u8, 7, 13].into_iter().enumerate() {
        let h = HANDLERS + 0x100 * i as u64;
        g.gate64(v, h, 0, 0, false);
        g.code_at(h, |a| {
            a.mov(r15, v as u64)?;
            a.hlt()
        });
    }
    setup(&mut g);
    g.code(body);
    g.run_to_hlt();
    g.reg(15)
}

type Body = fn(&mut CodeAssembler) -> Result<(), IcedError>;

#[test]
fn legacy_m128_operands_must_be_aligned() {
    // DATA + 8 is not 16-byte aligned.
    let aligned_only: [Body; 8] = [
        |a| a.ptest(xmm0, xmmword_ptr(DATA + 8)),
        |a| a.pshufb(xmm0, xmmword_ptr(DATA + 8)),
        |a| a.roundps(xmm0, xmmword_ptr(DATA + 8), 0),
        |a| a.movntdqa(xmm0, xmmword_ptr(DATA + 8)),
        |a| a.phminposuw(xmm0, xmmword_ptr(DATA + 8)),
        |a| a.blendvps(xmm1, xmmword_ptr(DATA + 8)),
        |a| a.haddps(xmm1, xmmword_ptr(DATA + 8)),
        |a| a.pcmpgtq(xmm1, xmmword_ptr(DATA + 8)),
    ];
    for (k, body) in aligned_only.into_iter().enumerate() {
        let v = fault_of(
            |_| {},
            |a| {
                body(a)?;
                a.hlt()
            },
        );
        assert_eq!(v, 13, "form {k}: #GP expected");
    }
    let unaligned_ok: [Body; 8] = [
        |a| a.pcmpestri(xmm0, xmmword_ptr(DATA + 8), 0x0c),
        |a| a.pcmpistrm(xmm0, xmmword_ptr(DATA + 3), 0x40),
        |a| a.lddqu(xmm0, xmmword_ptr(DATA + 1)),
        |a| a.pmovsxbw(xmm0, qword_ptr(DATA + 1)),
        |a| a.roundss(xmm0, dword_ptr(DATA + 3), 1),
        |a| a.movddup(xmm0, qword_ptr(DATA + 8)),
        |a| a.pinsrq(xmm0, qword_ptr(DATA + 5), 1),
        |a| a.extractps(dword_ptr(DATA + 6), xmm0, 2),
    ];
    for (k, body) in unaligned_ok.into_iter().enumerate() {
        let v = fault_of(
            |_| {},
            |a| {
                body(a)?;
                a.hlt()
            },
        );
        assert_eq!(v, 0, "form {k}: no fault expected");
    }
}

#[test]
fn sse4_needs_osfxsr_and_not_em_and_faults_nm_on_ts() {
    let body = |a: &mut CodeAssembler| {
        a.pshufb(xmm0, xmm1)?;
        a.pcmpistri(xmm0, xmm1, 0)?;
        a.hlt()
    };
    assert_eq!(fault_of(|g| g.cpu.state.cr4 &= !cr4::OSFXSR, body), 6);
    assert_eq!(fault_of(|g| g.cpu.state.cr0 |= cr0::EM, body), 6);
    assert_eq!(fault_of(|g| g.cpu.state.cr0 |= cr0::TS, body), 7);
    assert_eq!(fault_of(|_| {}, body), 0);
    // The MMX forms of SSSE3 are not implemented (MMX is not advertised).
    assert_eq!(
        fault_of(
            |_| {},
            |a| {
                a.pshufb(mm0, mm1)?;
                a.hlt()
            }
        ),
        6
    );
}

#[test]
fn a_vex_form_does_not_run_as_its_legacy_twin() {
    // VPSHUFB xmm0, xmm1, xmm2 is PSHUFB of xmm1 by xmm2 into xmm0 (or #UD
    // without a VEX layer), never PSHUFB of xmm0 by xmm1.
    let mut g = Guest::long64();
    g.gate64(6, HANDLERS, 0, 0, false);
    g.code_at(HANDLERS, |a| {
        a.mov(r15, 6u64)?;
        a.hlt()
    });
    g.cpu.state.fpu.xmm[0] = 0x0f0e_0d0c_0b0a_0908_0706_0504_0302_0100;
    g.cpu.state.fpu.xmm[1] = 0x1111_2222_3333_4444_5555_6666_7777_8888;
    g.cpu.state.fpu.xmm[2] = 0;
    g.code(|a| {
        a.vpshufb(xmm0, xmm1, xmm2)?;
        a.hlt()
    });
    g.run_to_hlt();
    if g.reg(15) != 6 {
        assert_eq!(
            g.cpu.state.fpu.xmm[0],
            0x8888_8888_8888_8888_8888_8888_8888_8888
        );
    }
}

#[test]
fn crc32_and_popcnt_do_not_need_sse_state() {
    let mut g = Guest::long64();
    g.cpu.state.cr0 |= cr0::TS;
    g.cpu.state.cr4 &= !cr4::OSFXSR;
    g.bus.load(DATA, b"123456789");
    g.code(|a| {
        a.mov(eax, 0xffff_ffffu32)?;
        a.crc32(rax, qword_ptr(DATA))?;
        a.crc32(eax, byte_ptr(DATA + 8))?;
        a.not(eax)?;
        a.mov(rbx, u64::MAX)?;
        a.mov(ecx, 0xffu32)?;
        a.crc32(rbx, cl)?;
        a.mov(rdx, 0xf0f0_0000_0000_0001u64)?;
        a.popcnt(rsi, rdx)?;
        a.hlt()
    });
    g.run_to_hlt();
    assert_eq!(g.reg(0), 0xe306_9283, "CRC-32C check value");
    assert_eq!(g.reg(3) >> 32, 0, "CRC32 r64 zero-extends");
    assert_eq!(g.reg(6), 9);
}

#[test]
fn cmpxchg16b_compares_and_requires_alignment() {
    let mut g = Guest::long64();
    g.bus.write_u64(DATA, 1);
    g.bus.write_u64(DATA + 8, 2);
    g.code(|a| {
        a.mov(eax, 1u32)?;
        a.mov(edx, 2u32)?;
        a.mov(ebx, 3u32)?;
        a.mov(ecx, 4u32)?;
        a.cmpxchg16b(xmmword_ptr(DATA))?; // equal: stores RCX:RBX
        a.setz(r8b)?;
        a.cmpxchg16b(xmmword_ptr(DATA))?; // not equal: loads RDX:RAX
        a.setz(r9b)?;
        a.hlt()
    });
    g.run_to_hlt();
    assert_eq!((g.bus.read_u64(DATA), g.bus.read_u64(DATA + 8)), (3, 4));
    assert_eq!((g.reg(8) & 0xff, g.reg(9) & 0xff), (1, 0));
    assert_eq!((g.reg(0), g.reg(2)), (3, 4));
    let v = fault_of(
        |_| {},
        |a| {
            a.cmpxchg16b(xmmword_ptr(DATA + 8))?;
            a.hlt()
        },
    );
    assert_eq!(v, 13);
}

#[test]
fn lahf_sahf_work_in_64_bit_mode() {
    let mut g = Guest::long64();
    g.code(|a| {
        a.mov(rax, 0x1234_5678_0000_d500u64)?; // AH = SF ZF AF PF CF
        a.sahf()?;
        a.mov(eax, 0u32)?;
        a.lahf()?;
        a.hlt()
    });
    let f = g.run_to_hlt();
    let all = rflags::SF | rflags::ZF | rflags::AF | rflags::PF | rflags::CF;
    assert_eq!(f & all, all);
    assert_eq!(g.reg(0), 0xd700, "LAHF: AH = flags with bit 1 set");
}

#[test]
fn fisttp_truncates_whatever_the_rounding_control() {
    let mut g = Guest::long64();
    g.bus.write_u64(DATA, 2.75f64.to_bits());
    g.bus.write_u64(DATA + 8, (-2.75f64).to_bits());
    g.bus.write_u64(DATA + 16, 1e30f64.to_bits());
    g.code(|a| {
        a.fninit()?;
        a.fld(qword_ptr(DATA))?;
        a.fisttp(dword_ptr(DATA + 0x100))?;
        a.fld(qword_ptr(DATA + 8))?;
        a.fisttp(qword_ptr(DATA + 0x108))?;
        a.fld(qword_ptr(DATA + 16))?;
        a.fisttp(word_ptr(DATA + 0x110))?;
        a.fnstsw(ax)?;
        a.hlt()
    });
    g.run_to_hlt();
    assert_eq!(g.bus.read_u64(DATA + 0x100) & 0xffff_ffff, 2);
    assert_eq!(g.bus.read_u64(DATA + 0x108) as i64, -2);
    assert_eq!(g.bus.read_u64(DATA + 0x110) & 0xffff, 0x8000, "indefinite");
    assert_eq!((g.reg(0) >> 11) & 7, 0, "stack empty again");
}

#[test]
fn string_compare_finds_a_substring() {
    let mut g = Guest::long64();
    g.bus.load(DATA, b"find the needle in here\0");
    g.bus.load(DATA + 0x40, b"needle\0");
    g.bus.load(DATA + 0x80, b"0123456789abcnee");
    g.code(|a| {
        a.movdqu(xmm1, xmmword_ptr(DATA + 0x40))?;
        // Equal ordered, unsigned bytes: index of the first match.
        a.pcmpistri(xmm1, xmmword_ptr(DATA), 0x0c)?;
        a.mov(r8, rcx)?;
        // Explicit lengths: needle 6, text 11 ("find the ne"): a needle
        // cut off by the end of the text does not match (16)...
        a.mov(eax, 6u32)?;
        a.mov(edx, 11u32)?;
        a.pcmpestri(xmm1, xmmword_ptr(DATA), 0x0c)?;
        a.mov(r9, rcx)?;
        // ... but one cut off by the end of the register does (13).
        a.mov(edx, 16u32)?;
        a.pcmpestri(xmm1, xmmword_ptr(DATA + 0x80), 0x0c)?;
        a.mov(r11, rcx)?;
        // Byte mask of the text's bytes that are in "ei".
        a.mov(eax, 0x6965u32)?;
        a.movd(xmm2, eax)?;
        a.pcmpistrm(xmm2, xmmword_ptr(DATA), 0x40)?;
        a.pmovmskb(r10d, xmm0)?;
        a.hlt()
    });
    g.run_to_hlt();
    assert_eq!(g.reg(8), 9);
    assert_eq!(g.reg(9), 16);
    assert_eq!(g.reg(11), 13);
    // "find the needle " : i at 1, e at 7, 10, 11, 14.
    assert_eq!(
        g.reg(10),
        (1 << 1) | (1 << 7) | (1 << 10) | (1 << 11) | (1 << 14)
    );
}
