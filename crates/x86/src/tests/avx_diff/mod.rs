//! Differential tests of the VEX layer (AVX, AVX2, FMA, F16C): a random
//! instruction (VEX.128 or VEX.256, register or memory form, random
//! imm8) runs natively and on the emulator from the same YMM, GPR, flag,
//! MXCSR and memory image; GPRs, all 256 bits of every YMM register (so
//! that VEX.128's zeroing of bits 255:128 is checked: the image's upper
//! halves are never zero), memory and the defined flags must match.
//!
//! The generators live by family in the submodules; each family is one
//! test, skipped with a message when the host lacks its CPUID feature.

mod fp;
mod int;
mod special;
mod xsave;

use iced_x86::code_asm::*;
use iced_x86::{Decoder, DecoderOptions, Instruction};

use super::differential::{
    canonical_nans, cases, iced_flags, nan_choice_unspecified, Native, Rng, REGS,
};
use super::*;
use crate::state::{cr4, rflags, xcr0};

/// GPRs, RFLAGS, then YMM0..15 as four u64 each.
pub(super) type YmmImage = [u64; 17 + 64];

/// Scratch memory the instructions address through RBP.
pub(super) const MEM: usize = 320;
/// Memory operands stay below this offset (the MXCSR words follow).
pub(super) const OPS_END: u64 = 256;
const MXCSR_TEST: i32 = 304;
const MXCSR_DEFAULT: i32 = 308;

const YMM: [AsmRegisterYmm; 16] = [
    ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11, ymm12, ymm13, ymm14,
    ymm15,
];

/// Wraps instruction bytes into a native function over a YmmImage.
fn ymm_thunk(insn: &[u8]) -> Vec<u8> {
    super::differential::thunk_with(insn, super::differential::VecRegs::Ymm)
}

/// What register and memory contents suit an instruction.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(super) enum Flavor {
    Int,
    Fp,
    /// Conversions that round per MXCSR.RC: also run under a random RC.
    Round,
    /// Strings: small alphabets with zeros; small lengths in EAX/EDX.
    Str,
}

impl Rng {
    /// A 64-bit lane for the flavor.
    pub(super) fn avx_lane(&mut self, flavor: Flavor) -> u64 {
        match flavor {
            Flavor::Fp | Flavor::Round => match self.next() % 6 {
                0 => {
                    let nan32 = |r: &mut Rng| 0x7f80_0001 | (r.next() as u32 & 0x807f_ffff);
                    nan32(self) as u64 | ((nan32(self) as u64) << 32)
                }
                1 => 0x7ff0_0000_0000_0001 | (self.next() & 0x800f_ffff_ffff_ffff),
                2 => {
                    let f = |r: &mut Rng| ((r.next() % 64) as f32 - 32.0) * 0.25;
                    f(self).to_bits() as u64 | ((f(self).to_bits() as u64) << 32)
                }
                3 => {
                    let f = |r: &mut Rng| ((r.next() % 4000) as f64 - 2000.0) * 0.125;
                    f(self).to_bits()
                }
                _ => self.fp_lane(),
            },
            Flavor::Str => {
                let alphabet = [0u8, 0, b'a', b'b', b'c', b'z', 0x80, 0xff, 1];
                let mut v = 0u64;
                for k in 0..8 {
                    v |= (self.pick(&alphabet) as u64) << (8 * k);
                }
                if self.next().is_multiple_of(4) {
                    v |= 0x0101_0101_0101_0101;
                }
                v
            }
            Flavor::Int => match self.next() % 7 {
                0 => 0,
                1 => u64::MAX,
                2 => 0x8080_8080_8080_8080 ^ (self.next() & 0x0f0f_0f0f_0f0f_0f0f),
                3 => self.next() & 0x8f8f_8f8f_8f8f_8f8f,
                4 => 0x7fff_8000_0000_ffff ^ (self.next() & 0x0001_0001_0001_0001),
                // Small per-element counts and indexes.
                5 => self.next() & 0x1f1f_1f1f_1f1f_1f1f,
                _ => self.next(),
            },
        }
    }
}

pub(super) fn listing(code: &[u8]) -> String {
    Decoder::with_ip(64, code, 0, DecoderOptions::NONE)
        .iter()
        .map(|i| format!("{:?}", i.code()))
        .collect::<Vec<_>>()
        .join("; ")
}

fn ymm_of(image: &YmmImage, i: usize) -> [u128; 2] {
    let q = |k: usize| image[17 + 4 * i + k] as u128;
    [q(0) | q(1) << 64, q(2) | q(3) << 64]
}

/// A test case: the instruction, its inputs, where RDI points (when it is
/// an address: VMASKMOVDQU), and a final fix-up of the inputs.
pub(super) struct Case {
    pub insn: Vec<u8>,
    pub image: YmmImage,
    pub mem: [u8; MEM],
    pub rdi_mem: Option<u64>,
}

/// A random image for `flavor`: upper halves of the YMM registers never
/// all zero.
pub(super) fn random_inputs(rng: &mut Rng, flavor: Flavor, rc: u32) -> (YmmImage, [u8; MEM]) {
    let mut image: YmmImage = [0; 81];
    for &i in REGS.iter() {
        image[i] = rng.value();
    }
    if flavor == Flavor::Str {
        let len = |r: &mut Rng| match r.next() % 5 {
            0 => r.value(),
            _ => ((r.next() % 41) as i64 - 20) as u64,
        };
        image[0] = len(rng);
        image[2] = len(rng);
    }
    image[16] = (rng.next() & rflags::ARITH) | 0x2;
    for i in 0..64 {
        let f = if rng.next().is_multiple_of(8) {
            Flavor::Int
        } else {
            flavor
        };
        image[17 + i] = rng.avx_lane(f);
    }
    for r in 0..16 {
        if image[17 + 4 * r + 2] == 0 && image[17 + 4 * r + 3] == 0 {
            image[17 + 4 * r + 3] = 0x5555;
        }
    }
    let mut mem = [0u8; MEM];
    for k in 0..OPS_END as usize / 8 {
        let f = if k % 3 == 0 { Flavor::Int } else { flavor };
        let v = rng.avx_lane(f);
        mem[8 * k..8 * k + 8].copy_from_slice(&v.to_le_bytes());
    }
    let t = MXCSR_TEST as usize;
    mem[t..t + 4].copy_from_slice(&(0x1f80 | (rc << 13)).to_le_bytes());
    let d = MXCSR_DEFAULT as usize;
    mem[d..d + 4].copy_from_slice(&0x1f80u32.to_le_bytes());
    (image, mem)
}

/// Runs a case (between two LDMXCSR) natively and on the emulator and
/// compares. Returns whether the instruction changed anything.
pub(super) fn run_case(n: usize, case: &Case) -> bool {
    let insn = &case.insn[..];
    let decoded: Instruction = Decoder::with_ip(64, insn, 0, DecoderOptions::NONE).decode();
    let mut code = asm64(0, |a| a.ldmxcsr(dword_ptr(rbp + MXCSR_TEST)));
    code.extend_from_slice(insn);
    code.extend(asm64(0, |a| a.ldmxcsr(dword_ptr(rbp + MXCSR_DEFAULT))));

    // Native: RBP points at a 32-byte aligned copy of the memory.
    #[repr(align(32))]
    struct Aligned([u8; MEM]);
    let mut host_mem = Aligned(case.mem);
    let mut host = case.image;
    host[5] = host_mem.0.as_mut_ptr() as u64;
    if let Some(off) = case.rdi_mem {
        host[7] = host[5] + off;
    }
    Native::new(&ymm_thunk(&code)).call_any(&mut host);

    let mut g = Guest::long64();
    g.cpu.state.cr4 |= cr4::OSXSAVE;
    g.cpu.state.xcr0 = xcr0::SUPPORTED;
    for &i in REGS.iter() {
        g.cpu.state.gpr[i] = case.image[i];
    }
    g.cpu.state.gpr[5] = DATA;
    if let Some(off) = case.rdi_mem {
        g.cpu.state.gpr[7] = DATA + off;
    }
    g.bus.load(DATA, &case.mem);
    for i in 0..16 {
        let [lo, hi] = ymm_of(&case.image, i);
        g.cpu.state.fpu.xmm[i] = lo;
        g.cpu.state.fpu.ymm_hi[i] = hi;
    }
    g.cpu.state.set_rflags(case.image[16]);
    let mut guest_code = code.clone();
    guest_code.push(0xf4);
    g.bus.load(CODE, &guest_code);
    let exit = g.run();
    let what = || format!("case {n}: [{}]", listing(insn));
    assert_eq!(
        exit,
        CpuExit::Halt,
        "{} did not run to HLT (rip {:#x}, unimplemented {})",
        what(),
        g.cpu.state.rip,
        g.cpu.unimplemented_count()
    );
    for &i in REGS
        .iter()
        .filter(|&&i| i != 5 && (i != 7 || case.rdi_mem.is_none()))
    {
        assert_eq!(
            g.cpu.state.gpr[i],
            host[i],
            "{} reg {i}, inputs {:x?}",
            what(),
            &case.image[..17]
        );
    }
    let nans = |v: [u128; 2]| match nan_choice_unspecified(&decoded) {
        Some(size) => v.map(|h| canonical_nans(h, size)),
        None => v,
    };
    for i in 0..16 {
        let want = ymm_of(&host, i);
        let got = [g.cpu.state.fpu.xmm[i], g.cpu.state.fpu.ymm_hi[i]];
        assert_eq!(
            nans(got),
            nans(want),
            "{} ymm{i}: got {:#034x}_{:032x} want {:#034x}_{:032x}\ninputs {:x?}\nmem {:x?}",
            what(),
            got[1],
            got[0],
            want[1],
            want[0],
            &case.image[17..],
            &case.mem[..OPS_END as usize]
        );
    }
    let guest_mem = &g.bus.bytes()[DATA as usize..DATA as usize + OPS_END as usize];
    assert_eq!(
        guest_mem,
        &host_mem.0[..OPS_END as usize],
        "{} memory",
        what()
    );
    let mask = rflags::ARITH & !iced_flags(decoded.rflags_undefined());
    assert_eq!(
        g.cpu.state.rflags() & mask,
        host[16] & mask,
        "{} flags (mask {mask:#x}), inputs {:x?}",
        what(),
        &case.image[..17]
    );
    host[..16] != case.image[..16]
        || host[17..] != case.image[17..]
        || host_mem.0[..OPS_END as usize] != case.mem[..OPS_END as usize]
        || (host[16] ^ case.image[16]) & rflags::ARITH != 0
}

/// Host features a family needs; prints why it is skipped.
pub(super) fn host_has(family: &str, features: &[&str]) -> bool {
    for f in features {
        let ok = match *f {
            "avx" => std::is_x86_feature_detected!("avx"),
            "avx2" => std::is_x86_feature_detected!("avx2"),
            "fma" => std::is_x86_feature_detected!("fma"),
            "f16c" => std::is_x86_feature_detected!("f16c"),
            "sse4.2" => std::is_x86_feature_detected!("sse4.2"),
            _ => false,
        };
        if !ok {
            eprintln!("host lacks {f}: the {family} differential test is SKIPPED");
            return false;
        }
    }
    true
}

/// Runs `n` random cases of a family; checks that most changed state and
/// that the generator covered `min_mnemonics` mnemonics.
pub(super) fn run_family(
    seed: u64,
    n: usize,
    min_mnemonics: usize,
    mut gen: impl FnMut(&mut Rng) -> Case,
) {
    let mut rng = Rng(seed);
    let mut changed = 0;
    let mut seen = std::collections::HashSet::new();
    for i in 0..n {
        let case = gen(&mut rng);
        let m = Decoder::with_ip(64, &case.insn, 0, DecoderOptions::NONE)
            .decode()
            .mnemonic();
        seen.insert(m);
        if run_case(i, &case) {
            changed += 1;
        }
    }
    assert!(
        changed > n * 2 / 3,
        "only {changed} of {n} cases changed state"
    );
    if n >= 2000 {
        assert!(
            seen.len() >= min_mnemonics,
            "only {} mnemonics generated: {seen:?}",
            seen.len()
        );
    }
}

/// Operand helpers for the generators: a random destination/source pair
/// of the chosen width and memory operands at aligned or unaligned
/// offsets below OPS_END.
pub(super) struct Ops {
    pub wide: bool,
    pub mem: bool,
    pub x: [AsmRegisterXmm; 3],
    pub y: [AsmRegisterYmm; 3],
    /// 32-byte aligned and unaligned offsets with room for 32 bytes.
    pub al: i32,
    pub un: i32,
    pub imm: u32,
}

impl Ops {
    pub fn new(r: &mut Rng) -> Ops {
        const X: [AsmRegisterXmm; 16] = [
            xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13,
            xmm14, xmm15,
        ];
        let i = [
            (r.next() % 16) as usize,
            (r.next() % 16) as usize,
            (r.next() % 16) as usize,
        ];
        Ops {
            wide: r.next() & 1 == 0,
            mem: r.next().is_multiple_of(3),
            x: [X[i[0]], X[i[1]], X[i[2]]],
            y: [YMM[i[0]], YMM[i[1]], YMM[i[2]]],
            al: ((r.next() % (OPS_END / 32)) * 32) as i32,
            un: (r.next() % (OPS_END - 32)) as i32,
            imm: (r.next() & 0xff) as u32,
        }
    }
}

/// Assembles one instruction.
pub(super) fn asm1(f: impl FnOnce(&mut CodeAssembler) -> Result<(), IcedError>) -> Vec<u8> {
    asm64(0, f)
}

/// The common case: random inputs for `flavor`, RC random for Round.
pub(super) fn case(rng: &mut Rng, insn: Vec<u8>, flavor: Flavor) -> Case {
    let rc = if flavor == Flavor::Round {
        (rng.next() % 4) as u32
    } else {
        0
    };
    let (image, mem) = random_inputs(rng, flavor, rc);
    Case {
        insn,
        image,
        mem,
        rdi_mem: None,
    }
}
