//! MMX register moves (MOVD/MOVQ) and their aliasing of the x87 registers.

use iced_x86::code_asm::*;

use super::*;

#[test]
fn movd_and_movq_move_through_mmx_registers() {
    let mut g = Guest::long64();
    g.code(|a| {
        a.fninit()?;
        a.mov(rax, 0x0102_0304_0506_0708u64)?;
        a.movq(mm0, rax)?;
        a.movq(qword_ptr(DATA), mm0)?;
        a.movq(mm1, qword_ptr(DATA))?;
        a.movq(mm2, mm1)?;
        a.movd(ebx, mm2)?;
        a.mov(ecx, 0x8899_aabbu32)?;
        a.movd(mm3, ecx)?;
        a.movq(rdx, mm3)?;
        a.movd(dword_ptr(DATA + 8), mm3)?;
        a.hlt()
    });
    g.run_to_hlt();
    assert_eq!(g.bus.read_u64(DATA), 0x0102_0304_0506_0708);
    assert_eq!(g.reg(3), 0x0506_0708);
    assert_eq!(g.reg(2), 0x8899_aabb);
    assert_eq!(g.bus.read_u64(DATA + 8) & 0xffff_ffff, 0x8899_aabb);
    let f = &g.cpu.state.fpu;
    // MMn is the mantissa of Rn; a write sets its exponent bits; every
    // register is tagged valid and TOP is 0.
    assert_eq!(&f.st[2][..8], &0x0102_0304_0506_0708u64.to_le_bytes());
    assert_eq!(&f.st[2][8..], &[0xff, 0xff]);
    assert_eq!(f.ftw, 0xff);
    assert_eq!(f.fsw & (7 << 11), 0);
}

#[test]
fn mmx_faults_follow_cr0_em_and_ts() {
    for (bit, vector) in [
        (cr0::EM, crate::exception::UD),
        (cr0::TS, crate::exception::NM),
    ] {
        let mut g = Guest::long64();
        g.gate64(vector, HANDLERS, 0, 0, false);
        g.code_at(HANDLERS, |a| a.hlt());
        g.cpu.state.cr0 |= bit;
        g.code(|a| {
            a.movq(mm0, rax)?;
            a.hlt()
        });
        g.run_to_hlt();
        assert_eq!(g.cpu.state.rip, HANDLERS + 1, "CR0 bit {bit:#x}");
    }
}
