//! The VEX layer's faults and state rules: #UD without OSXSAVE, XCR0.AVX
//! or the CPUID feature, #NM, alignment #GP of the aligned moves, VEX.128
//! zeroing, gathers and masked moves that fault part-way, VZEROUPPER
//! outside 64-bit mode, XSAVE of state made by AVX code.

use hv::CpuidEntry;
use iced_x86::code_asm::*;

use super::*;
use crate::state::{cr0, cr4, xcr0, SegCache, CS};

const NO_FAULT: u64 = 0xff;

/// Code for one case of a table test.
type Emit = fn(&mut CodeAssembler) -> Result<(), IcedError>;

/// A long-mode guest with AVX enabled (OSXSAVE, XCR0 = 7) whose #UD,
/// #NM, #GP and #PF handlers put their vector into R15 (and the #PF
/// address into R14) and halt.
fn guest() -> Guest {
    let mut g = Guest::long64();
    g.cpu.state.cr4 |= cr4::OSXSAVE;
    g.cpu.state.xcr0 = xcr0::SUPPORTED;
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
    g
}

fn fault_of(g: &mut Guest, f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> u64 {
    g.code(|a| {
        f(a)?;
        a.hlt()
    });
    g.run_to_hlt();
    g.reg(15)
}

fn ymm(g: &Guest, i: usize) -> [u128; 2] {
    [g.cpu.state.fpu.xmm[i], g.cpu.state.fpu.ymm_hi[i]]
}

#[test]
fn vex_needs_osxsave_xcr0_avx_and_the_cpuid_feature() {
    let add = |a: &mut CodeAssembler| a.vaddps(ymm0, ymm1, ymm2);
    let mut g = guest();
    assert_eq!(fault_of(&mut g, add), NO_FAULT);
    let mut g = guest();
    g.cpu.state.cr4 &= !cr4::OSXSAVE;
    assert_eq!(fault_of(&mut g, add), 6, "CR4.OSXSAVE = 0");
    let mut g = guest();
    g.cpu.state.xcr0 = xcr0::X87 | xcr0::SSE;
    assert_eq!(fault_of(&mut g, add), 6, "XCR0.AVX = 0");
    // XCR0.SSE is needed too (XCR0 = x87|AVX cannot be set by XSETBV,
    // but the state may come from outside).
    let mut g = guest();
    g.cpu.state.xcr0 = xcr0::X87 | xcr0::AVX;
    assert_eq!(fault_of(&mut g, add), 6, "XCR0.SSE = 0");
    // CR0.TS: #NM (after the #UD checks); CR0.EM does not matter.
    let mut g = guest();
    g.cpu.state.cr0 |= cr0::TS;
    assert_eq!(fault_of(&mut g, add), 7);
    let mut g = guest();
    g.cpu.state.cr0 |= cr0::EM;
    g.cpu.state.cr4 &= !cr4::OSFXSR;
    assert_eq!(
        fault_of(&mut g, add),
        NO_FAULT,
        "EM and OSFXSR are not checked"
    );

    // A CPUID table with AVX but not AVX2, FMA, F16C.
    let table = [
        CpuidEntry {
            function: 1,
            ecx: 1 << 28 | 1 << 26,
            ..Default::default()
        },
        CpuidEntry {
            function: 0xd,
            significant_index: true,
            eax: 7,
            ..Default::default()
        },
    ];
    let cases: [(&str, Emit, u64); 5] = [
        ("AVX", |a| a.vaddps(ymm0, ymm1, ymm2), NO_FAULT),
        (
            "AVX VEX.128 integer",
            |a| a.vpaddb(xmm0, xmm1, xmm2),
            NO_FAULT,
        ),
        ("AVX2 VEX.256 integer", |a| a.vpaddb(ymm0, ymm1, ymm2), 6),
        ("FMA", |a| a.vfmadd231ps(xmm0, xmm1, xmm2), 6),
        ("F16C", |a| a.vcvtph2ps(xmm0, xmm1), 6),
    ];
    for (what, f, want) in cases {
        let mut g = guest();
        g.cpu.set_cpuid(&table);
        assert_eq!(fault_of(&mut g, f), want, "{what}");
    }
    // Without AVX in leaf 1 (XCR0 as the OS left it): #UD.
    let mut g = guest();
    g.cpu.set_cpuid(&[table[1]]);
    assert_eq!(fault_of(&mut g, add), 6, "no AVX in CPUID");
}

#[test]
fn vex_is_ud_in_real_mode() {
    let mut rm = Guest {
        cpu: crate::Cpu::default(),
        bus: TestBus::new(),
    };
    rm.cpu.state.cr4 = cr4::OSXSAVE;
    rm.cpu.state.xcr0 = xcr0::SUPPORTED;
    // Real mode at 0:0x7c00 with an IVT entry for #UD at 0x500.
    rm.cpu.state.seg[CS] = SegCache::real(0, true);
    rm.cpu.state.rip = 0x7c00;
    rm.cpu.state_changed();
    rm.bus.load(6 * 4, &[0x00, 0x05, 0x00, 0x00]);
    rm.bus.load(0x500, &[0xb0, 0x06, 0xf4]); // mov al, 6; hlt
                                             // C5 F8 58 C1 = vaddps xmm0, xmm0, xmm1, then HLT.
    rm.bus.load(0x7c00, &[0xc5, 0xf8, 0x58, 0xc1, 0xf4]);
    rm.cpu.state.gpr[0] = 0;
    assert_eq!(rm.run(), CpuExit::Halt);
    assert_eq!(rm.reg(0) & 0xff, 6);
}

#[test]
fn aligned_moves_fault_on_misalignment_others_do_not() {
    let cases: [(&str, Emit, u64); 8] = [
        (
            "vmovaps xmm, m128+16",
            |a| a.vmovaps(xmm0, xmmword_ptr(DATA + 16)),
            NO_FAULT,
        ),
        (
            "vmovaps xmm, m128+8",
            |a| a.vmovaps(xmm0, xmmword_ptr(DATA + 8)),
            13,
        ),
        (
            "vmovaps ymm, m256+16",
            |a| a.vmovaps(ymm0, ymmword_ptr(DATA + 16)),
            13,
        ),
        (
            "vmovdqa m256+32, ymm",
            |a| a.vmovdqa(ymmword_ptr(DATA + 32), ymm1),
            NO_FAULT,
        ),
        (
            "vmovntdq m256+16, ymm",
            |a| a.vmovntdq(ymmword_ptr(DATA + 16), ymm1),
            13,
        ),
        (
            "vmovups ymm, m256+3",
            |a| a.vmovups(ymm0, ymmword_ptr(DATA + 3)),
            NO_FAULT,
        ),
        (
            "vaddps ymm, m256+4",
            |a| a.vaddps(ymm0, ymm1, ymmword_ptr(DATA + 4)),
            NO_FAULT,
        ),
        (
            "vpshufb xmm, m128+1",
            |a| a.vpshufb(xmm0, xmm1, xmmword_ptr(DATA + 1)),
            NO_FAULT,
        ),
    ];
    for (what, f, want) in cases {
        let mut g = guest();
        assert_eq!(fault_of(&mut g, f), want, "{what}");
    }
}

#[test]
fn vex128_zeroes_the_upper_half_legacy_sse_keeps_it() {
    let mut g = guest();
    for i in 0..4 {
        g.cpu.state.fpu.xmm[i] = 0x1111 * (i as u128 + 1);
        g.cpu.state.fpu.ymm_hi[i] = 0xaaaa_0000 + i as u128;
    }
    assert_eq!(
        fault_of(&mut g, |a| {
            a.vpaddd(xmm0, xmm1, xmm2)?;
            a.paddd(xmm3, xmm1)
        }),
        NO_FAULT
    );
    assert_eq!(ymm(&g, 0), [0x2222 + 0x3333, 0], "VEX.128: upper zeroed");
    assert_eq!(
        ymm(&g, 3),
        [0x4444 + 0x2222, 0xaaaa_0003],
        "SSE: upper kept"
    );
    assert_eq!(ymm(&g, 1)[1], 0xaaaa_0001, "sources untouched");
}

#[test]
fn vzeroupper_outside_64_bit_mode_leaves_registers_8_to_15() {
    let mut g = guest();
    for i in 0..16 {
        g.cpu.state.fpu.xmm[i] = i as u128 + 1;
        g.cpu.state.fpu.ymm_hi[i] = 0x100 + i as u128;
    }
    g.cpu.state.seg[CS] = SegCache::from_descriptor(0x08, GDT_ENTRIES[1]);
    g.cpu.state_changed();
    let code = asm(32, CODE, |a| {
        a.vzeroupper()?;
        a.hlt()
    });
    g.bus.load(CODE, &code);
    g.run_to_hlt();
    assert_eq!(g.reg(15), NO_FAULT);
    for i in 0..16 {
        let hi = if i < 8 { 0 } else { 0x100 + i as u128 };
        assert_eq!(ymm(&g, i), [i as u128 + 1, hi], "ymm{i}");
    }
}

/// The identity map covers 4 GiB: the page at 4 GiB is not present.
const HOLE: u64 = 4 << 30;

#[test]
fn a_gather_faulting_part_way_keeps_the_elements_it_loaded() {
    let mut g = guest();
    // Elements 0 and 1 from DATA, element 2 from the unmapped page,
    // element 3 masked off (and also unmapped).
    for (i, v) in [11u64, 22].iter().enumerate() {
        g.bus.write_u64(DATA + 8 * i as u64, *v);
    }
    let idx = [DATA, DATA + 8, HOLE + 8, HOLE];
    g.cpu.state.fpu.xmm[1] = idx[0] as u128 | (idx[1] as u128) << 64;
    g.cpu.state.fpu.ymm_hi[1] = idx[2] as u128 | (idx[3] as u128) << 64;
    g.cpu.state.fpu.xmm[2] = u128::MAX;
    g.cpu.state.fpu.ymm_hi[2] = u64::MAX as u128; // element 3's sign bit clear
    g.cpu.state.fpu.xmm[0] = 0x5555;
    g.cpu.state.fpu.ymm_hi[0] = 0x7777 << 64;
    let got = fault_of(&mut g, |a| {
        a.xor(eax, eax)?;
        a.vpgatherqq_3(ymm0, ptr(rax + ymm1), ymm2)
    });
    assert_eq!(got, 14);
    assert_eq!(g.reg(14), HOLE + 8, "CR2: element 2's address");
    assert_eq!(
        ymm(&g, 0),
        [11 | 22 << 64, 0x7777 << 64],
        "elements 0, 1 loaded"
    );
    assert_eq!(
        ymm(&g, 2),
        [0, u64::MAX as u128],
        "their mask elements cleared"
    );

    // Without the faulting element the gather completes: mask all zero,
    // the masked-off element keeps its value.
    let mut g = guest();
    g.bus.write_u64(DATA + 16, 33);
    g.cpu.state.fpu.xmm[1] = DATA as u128 | ((DATA + 16) as u128) << 64;
    g.cpu.state.fpu.ymm_hi[1] = HOLE as u128 | (HOLE as u128) << 64;
    g.cpu.state.fpu.xmm[2] = u128::MAX;
    g.cpu.state.fpu.ymm_hi[2] = 0;
    g.cpu.state.fpu.xmm[0] = 0;
    g.cpu.state.fpu.ymm_hi[0] = 0x9999;
    g.bus.write_u64(DATA, 44);
    let got = fault_of(&mut g, |a| {
        a.xor(eax, eax)?;
        a.vpgatherqq_3(ymm0, ptr(rax + ymm1), ymm2)
    });
    assert_eq!(got, NO_FAULT);
    assert_eq!(ymm(&g, 0), [44 | 33 << 64, 0x9999]);
    assert_eq!(ymm(&g, 2), [0, 0]);
}

#[test]
fn masked_moves_touch_only_the_selected_elements() {
    // A 32-byte VMASKMOVPS load from 16 bytes before the hole: the upper
    // four elements are masked off and never read.
    let mut g = guest();
    g.cpu.state.fpu.xmm[1] = 0x8000_0000_0000_0000_8000_0000_8000_0000; // elements 0, 1, 3
    g.cpu.state.fpu.ymm_hi[1] = 0;
    g.cpu.state.gpr[3] = HOLE - 16;
    let got = fault_of(&mut g, |a| a.vmaskmovps(ymm0, ymm1, ymmword_ptr(rbx)));
    assert_eq!(got, NO_FAULT);
    // Selected upper element: #PF, and a store writes nothing then.
    let mut g = guest();
    g.cpu.state.fpu.xmm[1] = 1 << 31;
    g.cpu.state.fpu.ymm_hi[1] = 1 << 127;
    g.cpu.state.fpu.xmm[2] = 0x1234_5678;
    g.cpu.state.gpr[3] = DATA - 16 + 0x1000; // any mapped address
    g.bus.write_u64(DATA - 16 + 0x1000, 0);
    let got = fault_of(&mut g, |a| {
        a.mov(rbx, HOLE - 16)?;
        a.vmaskmovps(ymmword_ptr(rbx), ymm1, ymm2)
    });
    assert_eq!(got, 14);
    assert_eq!(g.reg(14), HOLE + 12);
    assert!(g.bus.mmio.is_empty(), "nothing written: {:x?}", g.bus.mmio);
}

#[test]
fn vldmxcsr_checks_reserved_bits() {
    let mut g = guest();
    g.bus.load(DATA, &0x1_0000u32.to_le_bytes());
    assert_eq!(fault_of(&mut g, |a| a.vldmxcsr(dword_ptr(DATA))), 13);
    let mut g = guest();
    g.bus.load(DATA, &0x7f80u32.to_le_bytes());
    assert_eq!(
        fault_of(&mut g, |a| {
            a.vldmxcsr(dword_ptr(DATA))?;
            a.vstmxcsr(dword_ptr(DATA + 4))
        }),
        NO_FAULT
    );
    assert_eq!(g.bus.read_u64(DATA) >> 32, 0x7f80);
}

#[test]
fn xsave_and_xrstor_carry_ymm_state_made_by_avx_code() {
    let mut g = guest();
    for i in 0..32u8 {
        g.bus.load(DATA + i as u64, &[i + 1]);
    }
    let area = DATA + 0x1000;
    let got = fault_of(&mut g, |a| {
        a.vmovdqu(ymm9, ymmword_ptr(DATA))?;
        a.mov(eax, 7)?;
        a.xor(edx, edx)?;
        a.mov(rbx, area)?;
        a.xsave64(ptr(rbx))?;
        a.vzeroall()?;
        a.vmovdqu(ymmword_ptr(DATA + 0x100), ymm9)?;
        a.xrstor64(ptr(rbx))?;
        a.vmovdqu(ymmword_ptr(DATA + 0x200), ymm9)
    });
    assert_eq!(got, NO_FAULT);
    let bytes = g.bus.bytes();
    let d = DATA as usize;
    assert_eq!(&bytes[d + 0x100..d + 0x120], &[0u8; 32], "VZEROALL");
    assert_eq!(&bytes[d + 0x200..d + 0x220], &bytes[d..d + 32], "restored");
    assert_eq!(
        g.bus.read_u64(area + 512) & 7,
        6,
        "SSE and AVX in use, x87 not"
    );
    assert_eq!(g.bus.read_u64(area + 576 + 9 * 16), 0x1817_1615_1413_1211);
}

/// Random VEX-encoded bytes (C4/C5 prefixes with random fields, opcode,
/// ModRM, SIB, displacement and imm8) with AVX enabled and random vector
/// and general registers (pointing into RAM, MMIO and unmapped memory):
/// the host never panics.
#[test]
fn random_vex_code_never_panics() {
    let mut seed = 0x7a3c_55e1_9d02_4f6bu64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut g = guest();
    for v in 0..=255u8 {
        g.gate64(v, HANDLERS, 1, 0, false);
    }
    g.code_at(HANDLERS, |a| {
        a.mov(rsp, STACK_TOP)?;
        a.hlt()
    });
    let init = g.cpu.state.clone();
    for round in 0..20000 {
        g.cpu.state = init.clone();
        g.cpu.state_changed();
        // Sixteen random byte strings that decode as valid VEX instructions.
        let mut code = Vec::new();
        let mut tries = 0;
        while code.len() < 16 * 15 && tries < 2000 {
            tries += 1;
            let mut b = Vec::new();
            if next() & 1 == 0 {
                b.extend_from_slice(&[0xc5, next() as u8]);
            } else {
                // Map 1-3, any R/X/B, W, vvvv, L, pp.
                let map = 1 + (next() % 3) as u8;
                b.extend_from_slice(&[0xc4, (next() as u8 & 0xe0) | map, next() as u8]);
            }
            b.extend_from_slice(&next().to_le_bytes());
            let insn =
                iced_x86::Decoder::with_ip(64, &b, 0, iced_x86::DecoderOptions::NONE).decode();
            use iced_x86::CpuidFeature as F;
            let ours = insn
                .cpuid_features()
                .iter()
                .all(|f| matches!(f, F::AVX | F::AVX2 | F::FMA | F::F16C | F::BMI1 | F::BMI2));
            if insn.is_invalid() || insn.encoding() != iced_x86::EncodingKind::VEX || !ours {
                continue;
            }
            code.extend_from_slice(&b[..insn.len()]);
        }
        g.bus.load(CODE, &code);
        g.cpu.flush_code();
        for i in 0..16 {
            if i != 4 {
                g.cpu.state.gpr[i] = match next() % 8 {
                    0 => next(),
                    1 => next() & 0xff,
                    2 => 0xfee0_0000 + (next() & 0xfff),
                    _ => DATA + (next() & 0xffff),
                };
            }
            g.cpu.state.fpu.xmm[i] = (next() as u128) << 64 | next() as u128;
            g.cpu.state.fpu.ymm_hi[i] = match round % 3 {
                0 => 0,
                _ => (next() as u128) << 64 | (next() & 0xff) as u128,
            };
        }
        g.cpu.state.fpu.mxcsr = 0x1f80 | ((next() as u32 & 3) << 13);
        let _ = g.cpu.run(&mut g.bus, 200);
    }
    // Most rounds execute some VEX instructions before one faults.
    let retired = g.cpu.instructions_retired();
    assert_eq!(g.cpu.unimplemented_count(), 0);
    assert!(retired > 80_000, "only {retired} instructions retired");
}
