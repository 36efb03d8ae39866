//! XCR0 (XSETBV/XGETBV), the XSAVE family and the YMM upper halves.

use hv::CpuidEntry;
use iced_x86::code_asm::*;

use super::*;
use crate::state::{cr0, cr4, xcr0, SegCache};

/// Vector of the exception a test program raised (`None`: it reached HLT).
const NO_FAULT: u64 = 0xff;

/// A long-mode guest with CR4.OSXSAVE and XCR0 = x87|SSE|AVX, whose
/// #UD/#NM/#GP/#PF handlers put their vector into R15 and halt.
fn guest() -> Guest {
    let mut g = Guest::long64();
    g.cpu.state.cr4 |= cr4::OSXSAVE;
    g.cpu.state.xcr0 = xcr0::SUPPORTED;
    for v in [6u8, 7, 13, 14] {
        let h = HANDLERS + v as u64 * 0x10;
        g.gate64(v, h, 0, 0, false);
        g.code_at(h, |a| {
            a.mov(r15, v as u64)?;
            a.hlt()
        });
    }
    g.cpu.state.gpr[15] = NO_FAULT;
    g
}

fn run(g: &mut Guest) -> u64 {
    g.run_to_hlt();
    g.reg(15)
}

/// Runs `code` (followed by HLT) and returns the vector it raised.
fn fault_of(g: &mut Guest, f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> u64 {
    g.code(|a| {
        f(a)?;
        a.hlt()
    });
    run(g)
}

/// Runs a second program (at a fresh address: no stale decoded block).
fn run_more(g: &mut Guest, f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> u64 {
    let at = CODE + 0x800;
    g.code_at(at, |a| {
        f(a)?;
        a.hlt()
    });
    g.cpu.state.rip = at;
    g.cpu.state.halted = false;
    run(g)
}

fn xsetbv_with(g: &mut Guest, index: u32, value: u64) -> u64 {
    fault_of(g, |a| {
        a.mov(ecx, index)?;
        a.mov(eax, value as u32)?;
        a.mov(edx, (value >> 32) as u32)?;
        a.xsetbv()
    })
}

#[test]
fn xsetbv_checks_its_value() {
    for (index, v, want) in [
        (0, 7, NO_FAULT),
        (0, 3, NO_FAULT),
        (0, 1, NO_FAULT),
        (1, 7, 13),   // only XCR0
        (0, 6, 13),   // x87 state cannot be off
        (0, 5, 13),   // AVX without SSE
        (0, 0xf, 13), // MPX state is not supported
        (0, 1 << 32 | 7, 13),
    ] {
        let mut g = guest();
        assert_eq!(xsetbv_with(&mut g, index, v), want, "XSETBV {index} {v:#x}");
        let expect = if want == NO_FAULT { v } else { xcr0::SUPPORTED };
        assert_eq!(g.cpu.state.xcr0, expect);
    }
    // Without CR4.OSXSAVE: #UD, for XGETBV too.
    let mut g = guest();
    g.cpu.state.cr4 &= !cr4::OSXSAVE;
    assert_eq!(xsetbv_with(&mut g, 0, 3), 6);
    let mut g = guest();
    g.cpu.state.cr4 &= !cr4::OSXSAVE;
    assert_eq!(fault_of(&mut g, |a| a.xgetbv()), 6);
    // At CPL 3: #GP.
    let mut g = guest();
    g.cpu.state.seg[crate::state::CS] = SegCache::from_descriptor(0x2b, GDT_ENTRIES[5]);
    g.cpu.state_changed();
    assert_eq!(xsetbv_with(&mut g, 0, 3), 13);
    // XGETBV reads it back (any CPL); ECX != 0 is #GP.
    let mut g = guest();
    g.cpu.state.xcr0 = 3;
    assert_eq!(
        fault_of(&mut g, |a| {
            a.xor(ecx, ecx)?;
            a.xgetbv()
        }),
        NO_FAULT
    );
    assert_eq!((g.reg(0), g.reg(2)), (3, 0));
    let mut g = guest();
    assert_eq!(
        fault_of(&mut g, |a| {
            a.mov(ecx, 1)?;
            a.xgetbv()
        }),
        13
    );
}

#[test]
fn xcr0_bits_follow_the_cpuid_table() {
    // A table whose leaf 0xD does not offer AVX state: XSETBV refuses it.
    let mut g = guest();
    g.cpu.set_cpuid(&[CpuidEntry {
        function: 0xd,
        index: 0,
        significant_index: true,
        eax: 3,
        ..Default::default()
    }]);
    assert_eq!(xsetbv_with(&mut g, 0, 7), 13);
    let mut g = guest();
    g.cpu.set_cpuid(&[]);
    assert_eq!(xsetbv_with(&mut g, 0, 3), 13, "no leaf 0xD: x87 only");
}

fn set_state(g: &mut Guest) {
    let f = &mut g.cpu.state.fpu;
    for i in 0..16 {
        f.xmm[i] = 0x1111_0000_0000_0000_0000_0000_0000_0000u128 * (i as u128 + 1) + 7;
        f.ymm_hi[i] = 0x2222_0000_0000_0000_0000_0000_0000_0000u128 * (i as u128 + 1) + 9;
    }
    f.mxcsr = 0x3f80;
    f.fcw = 0x27f;
    f.st[3] = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10];
    f.ftw = 0x08;
}

const AREA: u64 = DATA + 0x1000;

fn area_u64(g: &Guest, off: u64) -> u64 {
    g.bus.read_u64(AREA + off)
}

fn area_u128(g: &Guest, off: u64) -> u128 {
    area_u64(g, off) as u128 | (area_u64(g, off + 8) as u128) << 64
}

#[test]
fn xsave_and_xrstor_round_trip_all_components() {
    let mut g = guest();
    set_state(&mut g);
    let saved = g.cpu.state.fpu;
    // Bytes XSAVE must not touch: 464..511 and the header past XSTATE_BV.
    g.bus.load(AREA + 464, &[0xaa; 48]);
    g.bus.write_u64(AREA + 512, 1 << 40); // a bit outside RFBM survives
    g.bus.write_u64(AREA + 520, 0);
    g.bus.write_u64(AREA + 528, 0);
    let code = |a: &mut CodeAssembler| {
        a.mov(eax, 7)?;
        a.xor(edx, edx)?;
        a.mov(rbx, AREA)?;
        a.xsave64(ptr(rbx))?;
        a.hlt()
    };
    g.code(code);
    assert_eq!(run(&mut g), NO_FAULT);
    assert_eq!(area_u64(&g, 512), 1 << 40 | 7, "XSTATE_BV");
    assert_eq!(area_u64(&g, 24) & 0xffff_ffff, 0x3f80, "MXCSR");
    assert_eq!(area_u64(&g, 0) & 0xffff, 0x27f, "FCW");
    assert_eq!(area_u64(&g, 32 + 3 * 16), 0x0807_0605_0403_0201);
    for i in 0..16 {
        assert_eq!(area_u128(&g, 160 + 16 * i), saved.xmm[i as usize]);
        assert_eq!(area_u128(&g, 576 + 16 * i), saved.ymm_hi[i as usize]);
    }
    assert!(g.bus.bytes()[(AREA + 464) as usize..(AREA + 512) as usize]
        .iter()
        .all(|&b| b == 0xaa));

    // Clear everything, then XRSTOR (XSTATE_BV bit 40 is outside XCR0:
    // clear it first).
    g.bus.write_u64(AREA + 512, 7);
    g.cpu.state.fpu = crate::state::FpuState::default();
    let got = run_more(&mut g, |a| {
        a.mov(eax, 7)?;
        a.xor(edx, edx)?;
        a.mov(rbx, AREA)?;
        a.xrstor64(ptr(rbx))
    });
    assert_eq!(got, NO_FAULT);
    assert_eq!(g.cpu.state.fpu, saved);
}

#[test]
fn xrstor_initialises_components_whose_xstate_bv_bit_is_clear() {
    let mut g = guest();
    set_state(&mut g);
    // An area with XSTATE_BV = SSE only, MXCSR 0x1f00, XMM = 0x55...
    g.bus.load(AREA, &[0u8; 832]);
    g.bus.load(AREA + 24, &0x1f00u32.to_le_bytes());
    g.bus.load(AREA + 160, &[0x55; 256]);
    g.bus.load(AREA + 576, &[0x66; 256]);
    g.bus.write_u64(AREA + 512, xcr0::SSE);
    g.code(|a| {
        a.mov(eax, 7)?;
        a.xor(edx, edx)?;
        a.mov(rbx, AREA)?;
        a.xrstor64(ptr(rbx))?;
        a.hlt()
    });
    assert_eq!(run(&mut g), NO_FAULT);
    let f = &g.cpu.state.fpu;
    assert_eq!(f.ymm_hi, [0; 16], "AVX initialised, not loaded");
    assert_eq!(f.xmm, [0x5555_5555_5555_5555_5555_5555_5555_5555; 16]);
    assert_eq!(f.mxcsr, 0x1f00);
    assert_eq!(
        (f.fcw, f.ftw, f.st[3]),
        (0x37f, 0, [0; 10]),
        "x87 initialised"
    );

    // RFBM without AVX: the upper halves are left alone even though
    // XSTATE_BV has no AVX bit.
    let mut g = guest();
    set_state(&mut g);
    let hi = g.cpu.state.fpu.ymm_hi;
    g.bus.write_u64(AREA + 512, 0);
    g.code(|a| {
        a.mov(eax, 3)?;
        a.xor(edx, edx)?;
        a.mov(rbx, AREA)?;
        a.xrstor64(ptr(rbx))?;
        a.hlt()
    });
    assert_eq!(run(&mut g), NO_FAULT);
    assert_eq!(g.cpu.state.fpu.ymm_hi, hi);
    assert_eq!(g.cpu.state.fpu.xmm, [0; 16]);
}

#[test]
fn xsaveopt_and_xsavec_skip_components_in_their_initial_configuration() {
    for compacted in [false, true] {
        let mut g = guest();
        // x87 initial, SSE in use, AVX initial.
        g.cpu.state.fpu.xmm[2] = 5;
        g.bus.load(AREA, &[0xcc; 832]);
        // XSAVEC writes only XSTATE_BV and XCOMP_BV of the header (as
        // the host does): the rest must be zero for XRSTOR.
        g.bus.load(AREA + 512, &[0; 64]);
        g.code(|a| {
            a.mov(eax, 7)?;
            a.xor(edx, edx)?;
            a.mov(rbx, AREA)?;
            if compacted {
                a.xsavec64(ptr(rbx))?;
            } else {
                a.xsaveopt64(ptr(rbx))?;
            }
            a.hlt()
        });
        assert_eq!(run(&mut g), NO_FAULT);
        assert_eq!(area_u64(&g, 512), xcr0::SSE, "XSTATE_BV");
        let xcomp = if compacted { 1 << 63 | 7 } else { 0 };
        assert_eq!(area_u64(&g, 520), xcomp, "XCOMP_BV");
        assert_eq!(area_u64(&g, 0), 0xcccc_cccc_cccc_cccc, "x87 not written");
        assert_eq!(area_u64(&g, 24) & 0xffff_ffff, 0x1f80, "MXCSR written");
        assert_eq!(area_u128(&g, 160 + 32), 5);
        assert_eq!(area_u64(&g, 576), 0xcccc_cccc_cccc_cccc, "AVX not written");

        // XRSTOR of that area gives back the same state (the compacted
        // form for XSAVEC's area).
        let before = g.cpu.state.fpu;
        set_state(&mut g);
        let got = run_more(&mut g, |a| {
            a.mov(eax, 7)?;
            a.xor(edx, edx)?;
            a.mov(rbx, AREA)?;
            a.xrstor64(ptr(rbx))
        });
        assert_eq!(got, NO_FAULT);
        assert_eq!(g.cpu.state.fpu, before, "compacted {compacted}");
    }
}

#[test]
fn xsave_family_faults() {
    let save = |a: &mut CodeAssembler, addr: u64| -> Result<(), IcedError> {
        a.mov(eax, 7)?;
        a.xor(edx, edx)?;
        a.mov(rbx, addr)?;
        a.xsave64(ptr(rbx))
    };
    let restore = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        a.mov(eax, 7)?;
        a.xor(edx, edx)?;
        a.mov(rbx, AREA)?;
        a.xrstor64(ptr(rbx))
    };
    // Misaligned (16 but not 64 bytes): #GP.
    let mut g = guest();
    assert_eq!(fault_of(&mut g, |a| save(a, AREA + 16)), 13);
    // CR0.TS: #NM.
    let mut g = guest();
    g.cpu.state.cr0 |= cr0::TS;
    assert_eq!(fault_of(&mut g, |a| save(a, AREA)), 7);
    // No CR4.OSXSAVE: #UD.
    let mut g = guest();
    g.cpu.state.cr4 &= !cr4::OSXSAVE;
    assert_eq!(fault_of(&mut g, |a| save(a, AREA)), 6);
    // A page fault on the second page writes nothing.
    let mut g = guest();
    let top = 4u64 << 30; // the identity map ends at 4 GiB
    assert_eq!(fault_of(&mut g, |a| save(a, top - 512)), 14);
    assert!(g.bus.mmio.is_empty(), "{:x?}", g.bus.mmio);

    // XRSTOR header checks: standard form.
    for (xstate_bv, xcomp_bv, extra, want) in [
        (7u64, 0u64, 0u64, NO_FAULT),
        (1 << 3, 0, 0, 13), // XSTATE_BV outside XCR0
        (7, 0, 1, 13),      // bytes 23:16 not zero
        (7, 1, 0, 13),      // XCOMP_BV without bit 63
        // Compacted form.
        (7, 1 << 63 | 7, 0, NO_FAULT),
        (7, 1 << 63 | 3, 0, 13),      // XSTATE_BV not within XCOMP_BV
        (3, 1 << 63 | 0xf, 0, 13),    // XCOMP_BV outside XCR0
        (3, 1 << 63 | 3, 1 << 8, 13), // bytes 63:16 not zero
    ] {
        let mut g = guest();
        g.bus.load(AREA, &[0; 832]);
        g.bus.load(AREA + 24, &0x1f80u32.to_le_bytes());
        g.bus.write_u64(AREA + 512, xstate_bv);
        g.bus.write_u64(AREA + 520, xcomp_bv);
        g.bus.write_u64(AREA + 528, extra);
        set_state(&mut g);
        let before = g.cpu.state.fpu;
        let got = fault_of(&mut g, restore);
        assert_eq!(got, want, "XSTATE_BV {xstate_bv:#x} XCOMP_BV {xcomp_bv:#x}");
        if got != NO_FAULT {
            assert_eq!(g.cpu.state.fpu, before, "a faulting XRSTOR changes nothing");
        }
    }
    // A reserved MXCSR bit: #GP, nothing loaded.
    let mut g = guest();
    set_state(&mut g);
    let before = g.cpu.state.fpu;
    g.bus.load(AREA, &[0; 832]);
    g.bus.load(AREA + 24, &0x1_0000u32.to_le_bytes());
    g.bus.write_u64(AREA + 512, 7);
    assert_eq!(fault_of(&mut g, restore), 13);
    assert_eq!(g.cpu.state.fpu, before);
}

#[test]
fn xsave_outside_64_bit_mode_touches_eight_registers() {
    // Compatibility mode (CS.L = 0 under LMA) has XMM0-7 / YMM0-7 only.
    let mut g = guest();
    set_state(&mut g);
    g.bus.load(AREA, &[0xee; 832]);
    g.bus.write_u64(AREA + 512, 0);
    g.cpu.state.seg[crate::state::CS] = SegCache::from_descriptor(0x08, GDT_ENTRIES[1]);
    g.cpu.state_changed();
    let code = asm(32, CODE, |a| {
        a.mov(eax, 7)?;
        a.xor(edx, edx)?;
        a.mov(ebx, AREA as u32)?;
        a.xsave(ptr(ebx))?;
        a.hlt()
    });
    g.bus.load(CODE, &code);
    assert_eq!(run(&mut g), NO_FAULT);
    assert_eq!(area_u128(&g, 160 + 16 * 7), g.cpu.state.fpu.xmm[7]);
    assert_eq!(area_u64(&g, 160 + 16 * 8), 0xeeee_eeee_eeee_eeee);
    assert_eq!(area_u128(&g, 576 + 16 * 7), g.cpu.state.fpu.ymm_hi[7]);
    assert_eq!(area_u64(&g, 576 + 16 * 8), 0xeeee_eeee_eeee_eeee);
}

#[test]
fn cpuid_reports_the_xsave_size_for_the_current_xcr0() {
    let leaves = [
        CpuidEntry {
            function: 0xd,
            index: 0,
            significant_index: true,
            eax: 7,
            ebx: 576,
            ecx: 832,
            edx: 0,
        },
        CpuidEntry {
            function: 0xd,
            index: 1,
            significant_index: true,
            eax: 0b11,
            ..Default::default()
        },
        CpuidEntry {
            function: 0xd,
            index: 2,
            significant_index: true,
            eax: 256,
            ebx: 576,
            ..Default::default()
        },
    ];
    for (x, size) in [(3u64, 576u64), (7, 832)] {
        let mut g = guest();
        g.cpu.set_cpuid(&leaves);
        g.cpu.state.xcr0 = x;
        g.code(|a| {
            a.mov(eax, 0xd)?;
            a.xor(ecx, ecx)?;
            a.cpuid()?;
            a.hlt()
        });
        assert_eq!(run(&mut g), NO_FAULT);
        assert_eq!((g.reg(0), g.reg(3), g.reg(1)), (7, size, 832), "XCR0 {x}");
        // Sub-leaf 1 EBX: the compacted size (the same offsets here).
        g.code_at(CODE + 0x100, |a| {
            a.mov(eax, 0xd)?;
            a.mov(ecx, 1)?;
            a.cpuid()?;
            a.hlt()
        });
        g.cpu.state.rip = CODE + 0x100;
        g.cpu.state.halted = false;
        assert_eq!(run(&mut g), NO_FAULT);
        assert_eq!((g.reg(0), g.reg(3)), (0b11, size), "XCR0 {x}: compacted");
    }
}

#[test]
fn reset_clears_the_ymm_state_init_keeps_it_and_hv_fpu_round_trips() {
    let mut g = guest();
    set_state(&mut g);
    // The hv::Fpu view has no YMM halves yet: set_fpu(get_fpu()) keeps them.
    let fpu = g.cpu.get_fpu();
    let before = g.cpu.state.fpu;
    g.cpu.set_fpu(&fpu);
    assert_eq!(g.cpu.state.fpu, before);
    assert_eq!(g.cpu.get_fpu(), fpu);
    // INIT keeps the register file and XCR0 (SDM table 9-1); RESET
    // clears them.
    g.cpu.init();
    assert_eq!(g.cpu.state.fpu, before);
    assert_eq!(g.cpu.state.xcr0, xcr0::SUPPORTED);
    assert_eq!(g.cpu.state.cr4, 0);
    g.cpu.reset();
    assert_eq!(g.cpu.state.fpu.ymm_hi, [0; 16]);
    assert_eq!(g.cpu.state.xcr0, 1);
}
