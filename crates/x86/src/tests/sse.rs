//! x87 control, FXSAVE/FXRSTOR and the SSE2 integer/move subset.

use iced_x86::code_asm::*;

use super::*;

#[test]
fn x87_control_words() {
    let mut g = Guest::long64();
    g.code(|a| {
        a.mov(word_ptr(DATA), 0)?;
        a.fninit()?;
        a.fnstcw(word_ptr(DATA))?;
        a.mov(ax, 0xffff)?;
        a.fnstsw(ax)?;
        a.mov(word_ptr(DATA + 2), 0x27f)?;
        a.fldcw(word_ptr(DATA + 2))?;
        a.fnstcw(word_ptr(DATA + 4))?;
        a.hlt()
    });
    g.run_to_hlt();
    assert_eq!(g.bus.read_u64(DATA) & 0xffff, 0x37f);
    assert_eq!(g.reg(0) & 0xffff, 0);
    assert_eq!((g.bus.read_u64(DATA) >> 32) & 0xffff, 0x27f);
}

#[test]
fn sse2_strlen_style_sequence() {
    let mut g = Guest::long64();
    g.bus.load(DATA, b"abcdefghij\0zzzzz");
    g.code(|a| {
        a.pxor(xmm1, xmm1)?;
        a.movdqu(xmm0, xmmword_ptr(DATA))?;
        a.pcmpeqb(xmm0, xmm1)?;
        a.pmovmskb(eax, xmm0)?;
        a.bsf(eax, eax)?;
        // movq / pshufd / punpck / paddd / psrldq
        a.mov(rbx, 0x0000_0002_0000_0001u64)?;
        a.movq(xmm2, rbx)?;
        a.pshufd(xmm3, xmm2, 0b00_01_00_01)?;
        a.paddd(xmm3, xmm3)?;
        a.movq(rcx, xmm3)?;
        a.psrldq(xmm3, 8)?;
        a.movq(rdx, xmm3)?;
        a.movdqa(xmmword_ptr(DATA + 0x100), xmm3)?;
        a.hlt()
    });
    g.run_to_hlt();
    assert_eq!(g.reg(0), 10);
    assert_eq!(g.reg(1), 0x0000_0002_0000_0004);
    assert_eq!(g.reg(2), 0x0000_0002_0000_0004);
    assert_eq!(g.bus.read_u64(DATA + 0x100), 0x0000_0002_0000_0004);
}

#[test]
fn fxsave_fxrstor_round_trip() {
    let mut g = Guest::long64();
    g.code(|a| {
        a.mov(rax, 0x1122_3344_5566_7788u64)?;
        a.movq(xmm0, rax)?;
        a.movq(xmm15, rax)?;
        a.fxsave64(ptr(DATA + 0x200))?;
        a.pxor(xmm0, xmm0)?;
        a.pxor(xmm15, xmm15)?;
        a.fxrstor64(ptr(DATA + 0x200))?;
        a.movq(rbx, xmm15)?;
        a.stmxcsr(dword_ptr(DATA))?;
        a.hlt()
    });
    g.run_to_hlt();
    assert_eq!(g.bus.read_u64(DATA + 0x200 + 24) & 0xffff_ffff, 0x1f80);
    assert_eq!(g.bus.read_u64(DATA + 0x200 + 160), 0x1122_3344_5566_7788);
    assert_eq!(g.reg(3), 0x1122_3344_5566_7788);
    assert_eq!(g.bus.read_u64(DATA) & 0xffff_ffff, 0x1f80);
}

#[test]
fn sse_faults() {
    // MOVAPS from an unaligned address: #GP(0).
    let mut g = Guest::long64();
    g.gate64(13, HANDLERS, 0, 0, false);
    g.code_at(HANDLERS, |a| {
        a.mov(r15, 13u64)?;
        a.hlt()
    });
    g.code(|a| {
        a.movaps(xmm0, xmmword_ptr(DATA + 8))?;
        a.hlt()
    });
    g.run_to_hlt();
    assert_eq!(g.reg(15), 13);
    // CR0.TS: #NM.
    let mut g = Guest::long64();
    g.cpu.state.cr0 |= crate::state::cr0::TS;
    g.gate64(7, HANDLERS, 0, 0, false);
    g.code_at(HANDLERS, |a| {
        a.mov(r15, 7u64)?;
        a.clts()?;
        a.iretq()
    });
    g.code(|a| {
        a.pxor(xmm0, xmm0)?;
        a.mov(r14, 1u64)?;
        a.hlt()
    });
    g.run_to_hlt();
    assert_eq!((g.reg(15), g.reg(14)), (7, 1));
}

#[test]
fn x87_extended_conversions_round_trip() {
    use crate::exec::x87_conv::{f64_to_f80, f80_to_f64};
    let one = f64_to_f80(1.0);
    assert_eq!(u64::from_le_bytes(one[..8].try_into().unwrap()), 1 << 63);
    assert_eq!(u16::from_le_bytes([one[8], one[9]]), 0x3fff);
    for v in [
        0.0,
        -0.0,
        1.5,
        -3.25e-300,
        f64::MAX,
        f64::MIN_POSITIVE,
        5e-324,
        f64::INFINITY,
        f64::NEG_INFINITY,
        std::f64::consts::PI,
    ] {
        assert_eq!(f80_to_f64(&f64_to_f80(v)).to_bits(), v.to_bits(), "{v}");
    }
    assert!(f80_to_f64(&f64_to_f80(f64::NAN)).is_nan());
}

#[test]
fn x87_arithmetic_program() {
    let mut g = Guest::long64();
    g.bus.write_u64(DATA + 8, 2.5f64.to_bits());
    g.bus.load(DATA + 16, &7i32.to_le_bytes());
    g.code(|a| {
        a.fninit()?;
        a.fld1()?;
        a.fldpi()?;
        a.fmulp(st1, st0)?; // pi
        a.fstp(qword_ptr(DATA))?;
        a.fld(qword_ptr(DATA + 8))?; // 2.5
        a.fild(dword_ptr(DATA + 16))?; // 7
        a.fmul_2(st0, st1)?; // 17.5
        a.fsqrt()?;
        a.fmul_2(st0, st0)?; // 17.5
        a.fistp(dword_ptr(DATA + 24))?; // 18 (round to nearest even of 17.5 = 18)
        a.fld(qword_ptr(DATA + 8))?;
        a.fcomip(st0, st1)?; // equal
        a.setz(bl)?;
        a.fstp(st0)?;
        a.fnstsw(ax)?;
        a.hlt()
    });
    g.run_to_hlt();
    assert_eq!(f64::from_bits(g.bus.read_u64(DATA)), std::f64::consts::PI);
    assert_eq!(g.bus.read_u64(DATA + 24) & 0xffff_ffff, 18);
    assert_eq!(g.reg(3) & 0xff, 1);
    assert_eq!((g.reg(0) >> 11) & 7, 0, "stack empty again (TOP=0)");
    assert_eq!(g.cpu.state.fpu.ftw, 0);
}
