//! Differential tests of SSE3, SSSE3, SSE4.1, SSE4.2 (and memory forms of
//! SSE2): a random instruction, register or memory form with a random
//! imm8, runs natively and on the emulator from the same XMM, GPR, flag
//! and memory image; GPRs, XMM registers, memory and the flags the
//! instruction defines must match.

use iced_x86::code_asm::*;
use iced_x86::{Decoder, DecoderOptions, Mnemonic};

use super::differential::{
    canonical_nans, cases, iced_flags, nan_choice_unspecified, sse_thunk, Native, Rng, SseImage,
    REGS,
};
use super::*;
use crate::state::rflags;

/// Scratch memory the instructions address through RBP.
const MEM: usize = 256;
/// Memory operands stay below this offset (so the MXCSR words after it
/// are never written).
const OPS_END: u64 = 192;
/// The MXCSR the instruction runs under, then the default restored.
const MXCSR_TEST: i32 = 240;
const MXCSR_DEFAULT: i32 = 244;

/// What kind of register contents suit an instruction.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Flavor {
    Int,
    Fp,
    /// Strings: small alphabets with zeros; small lengths in EAX/EDX.
    Str,
    /// Rounding instructions: also run under a random MXCSR.RC.
    Round,
}

const X: [AsmRegisterXmm; 16] = [
    xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13, xmm14,
    xmm15,
];
/// GPR destinations and sources (never RBP, the memory base, or RSP).
const G64: [AsmRegister64; 8] = [rax, rcx, rdx, rbx, rsi, r8, r9, r15];
const G32: [AsmRegister32; 8] = [eax, ecx, edx, ebx, esi, r8d, r9d, r15d];
const G16: [AsmRegister16; 8] = [ax, cx, dx, bx, si, r8w, r9w, r15w];
const G8: [AsmRegister8; 8] = [al, cl, dl, bl, sil, r8b, r9b, r15b];

/// One random instruction, encoded, and the register contents it wants.
fn random_simd(r: &mut Rng) -> (Vec<u8>, Flavor) {
    let mut a = CodeAssembler::new(64).unwrap();
    let d = r.pick(&X);
    let s = r.pick(&X);
    let mem = r.next().is_multiple_of(3);
    let imm = (r.next() & 0xff) as u32;
    // An aligned and an unaligned memory operand offset.
    let al16 = ((r.next() % (OPS_END / 16)) * 16) as i32;
    let un = (r.next() % (OPS_END - 16)) as i32;
    let m128 = xmmword_ptr(rbp + al16);
    let mut flavor = Flavor::Int;
    // (xmm, xmm/m128) forms, with an imm8 when given.
    macro_rules! xm {
        ($f:ident) => {
            if mem {
                a.$f(d, m128)
            } else {
                a.$f(d, s)
            }
        };
        ($f:ident, $imm:expr) => {
            if mem {
                a.$f(d, m128, $imm)
            } else {
                a.$f(d, s, $imm)
            }
        };
    }
    // (xmm, xmm/mN) forms with an unaligned narrower memory operand.
    macro_rules! xn {
        ($f:ident, $ptr:ident) => {
            if mem {
                a.$f(d, $ptr(rbp + un))
            } else {
                a.$f(d, s)
            }
        };
        ($f:ident, $ptr:ident, $imm:expr) => {
            if mem {
                a.$f(d, $ptr(rbp + un), $imm)
            } else {
                a.$f(d, s, $imm)
            }
        };
    }
    // Unaligned m128 (string instructions, LDDQU).
    let mu = xmmword_ptr(rbp + un);
    let res = match r.next() % 130 {
        // SSE3.
        0 => {
            flavor = Flavor::Fp;
            xm!(addsubps)
        }
        1 => {
            flavor = Flavor::Fp;
            xm!(addsubpd)
        }
        2 => {
            flavor = Flavor::Fp;
            xm!(haddps)
        }
        3 => {
            flavor = Flavor::Fp;
            xm!(haddpd)
        }
        4 => {
            flavor = Flavor::Fp;
            xm!(hsubps)
        }
        5 => {
            flavor = Flavor::Fp;
            xm!(hsubpd)
        }
        6 => xn!(movddup, qword_ptr),
        7 => xm!(movshdup),
        8 => xm!(movsldup),
        9 => a.lddqu(d, mu),
        // SSSE3.
        10 => xm!(pabsb),
        11 => xm!(pabsw),
        12 => xm!(pabsd),
        13 => xm!(palignr, imm & 0x3f),
        14 => xm!(phaddw),
        15 => xm!(phaddd),
        16 => xm!(phaddsw),
        17 => xm!(phsubw),
        18 => xm!(phsubd),
        19 => xm!(phsubsw),
        20 => xm!(pmaddubsw),
        21 => xm!(pmulhrsw),
        22 => xm!(pshufb),
        23 => xm!(psignb),
        24 => xm!(psignw),
        25 => xm!(psignd),
        // SSE4.1.
        26 => {
            flavor = Flavor::Fp;
            xm!(blendps, imm & 15)
        }
        27 => {
            flavor = Flavor::Fp;
            xm!(blendpd, imm & 3)
        }
        28 => xm!(blendvps),
        29 => xm!(blendvpd),
        30 => xm!(pblendvb),
        31 => xm!(pblendw, imm),
        32 => {
            flavor = Flavor::Fp;
            xm!(dpps, imm)
        }
        33 => {
            flavor = Flavor::Fp;
            xm!(dppd, imm & 0x33)
        }
        34 => {
            if mem {
                a.extractps(dword_ptr(rbp + un), s, imm & 3)
            } else if r.next().is_multiple_of(2) {
                a.extractps(r.pick(&G32), s, imm & 3)
            } else {
                a.extractps(r.pick(&G64), s, imm & 3)
            }
        }
        35 => {
            flavor = Flavor::Fp;
            xn!(insertps, dword_ptr, imm)
        }
        36 => a.movntdqa(d, m128),
        37 => xm!(mpsadbw, imm & 7),
        38 => xm!(packusdw),
        39 => xm!(pcmpeqq),
        40 => match (mem, r.next() % 2) {
            (true, _) => a.pextrb(byte_ptr(rbp + un), s, imm & 15),
            (_, 0) => a.pextrb(r.pick(&G32), s, imm & 15),
            _ => a.pextrb(r.pick(&G64), s, imm & 15),
        },
        41 => match mem {
            true => a.pextrw(word_ptr(rbp + un), s, imm & 7),
            _ => a.pextrw(r.pick(&G32), s, imm & 7),
        },
        42 => match mem {
            true => a.pextrd(dword_ptr(rbp + un), s, imm & 3),
            _ => a.pextrd(r.pick(&G32), s, imm & 3),
        },
        43 => match mem {
            true => a.pextrq(qword_ptr(rbp + un), s, imm & 1),
            _ => a.pextrq(r.pick(&G64), s, imm & 1),
        },
        44 => xm!(phminposuw),
        45 => match mem {
            true => a.pinsrb(d, byte_ptr(rbp + un), imm & 15),
            _ => a.pinsrb(d, r.pick(&G32), imm & 15),
        },
        46 => match mem {
            true => a.pinsrd(d, dword_ptr(rbp + un), imm & 3),
            _ => a.pinsrd(d, r.pick(&G32), imm & 3),
        },
        47 => match mem {
            true => a.pinsrq(d, qword_ptr(rbp + un), imm & 1),
            _ => a.pinsrq(d, r.pick(&G64), imm & 1),
        },
        48 => xm!(pmaxsb),
        49 => xm!(pmaxsd),
        50 => xm!(pmaxuw),
        51 => xm!(pmaxud),
        52 => xm!(pminsb),
        53 => xm!(pminsd),
        54 => xm!(pminuw),
        55 => xm!(pminud),
        56 => xn!(pmovsxbw, qword_ptr),
        57 => xn!(pmovsxbd, dword_ptr),
        58 => xn!(pmovsxbq, word_ptr),
        59 => xn!(pmovsxwd, qword_ptr),
        60 => xn!(pmovsxwq, dword_ptr),
        61 => xn!(pmovsxdq, qword_ptr),
        62 => xn!(pmovzxbw, qword_ptr),
        63 => xn!(pmovzxbd, dword_ptr),
        64 => xn!(pmovzxbq, word_ptr),
        65 => xn!(pmovzxwd, qword_ptr),
        66 => xn!(pmovzxwq, dword_ptr),
        67 => xn!(pmovzxdq, qword_ptr),
        68 => xm!(pmuldq),
        69 => xm!(pmulld),
        70 => xm!(ptest),
        71 => {
            flavor = Flavor::Round;
            xm!(roundps, imm & 15)
        }
        72 => {
            flavor = Flavor::Round;
            xm!(roundpd, imm & 15)
        }
        73 => {
            flavor = Flavor::Round;
            xn!(roundss, dword_ptr, imm & 15)
        }
        74 => {
            flavor = Flavor::Round;
            xn!(roundsd, qword_ptr, imm & 15)
        }
        // SSE4.2.
        75 => xm!(pcmpgtq),
        76..=83 => {
            flavor = Flavor::Str;
            let imm = imm & 0x7f;
            let b = |a: &mut CodeAssembler, op: u64| -> Result<(), iced_x86::IcedError> {
                match (op, mem) {
                    (0, true) => a.pcmpestri(d, mu, imm),
                    (0, false) => a.pcmpestri(d, s, imm),
                    (1, true) => a.pcmpestrm(d, mu, imm),
                    (1, false) => a.pcmpestrm(d, s, imm),
                    (2, true) => a.pcmpistri(d, mu, imm),
                    (2, false) => a.pcmpistri(d, s, imm),
                    (3, true) => a.pcmpistrm(d, mu, imm),
                    (3, false) => a.pcmpistrm(d, s, imm),
                    (4, true) => a.pcmpestri64(d, mu, imm),
                    (4, false) => a.pcmpestri64(d, s, imm),
                    (_, true) => a.pcmpestrm64(d, mu, imm),
                    (_, false) => a.pcmpestrm64(d, s, imm),
                }
            };
            b(&mut a, r.next() % 6)
        }
        84 => match (mem, r.next() % 4) {
            (true, 0) => a.crc32(r.pick(&G32), byte_ptr(rbp + un)),
            (true, 1) => a.crc32(r.pick(&G32), word_ptr(rbp + un)),
            (true, 2) => a.crc32(r.pick(&G32), dword_ptr(rbp + un)),
            (true, _) => a.crc32(r.pick(&G64), qword_ptr(rbp + un)),
            (false, 0) => a.crc32(r.pick(&G32), r.pick(&G8)),
            (false, 1) => a.crc32(r.pick(&G32), r.pick(&G16)),
            (false, 2) => a.crc32(r.pick(&G32), r.pick(&G32)),
            (false, _) => a.crc32(r.pick(&G64), r.pick(&G64)),
        },
        85 => match mem {
            true => a.crc32(r.pick(&G64), byte_ptr(rbp + un)),
            _ => a.crc32(r.pick(&G64), r.pick(&G8)),
        },
        86 => match (mem, r.next() % 3) {
            (true, 0) => a.popcnt(r.pick(&G16), word_ptr(rbp + un)),
            (true, 1) => a.popcnt(r.pick(&G32), dword_ptr(rbp + un)),
            (true, _) => a.popcnt(r.pick(&G64), qword_ptr(rbp + un)),
            (false, 0) => a.popcnt(r.pick(&G16), r.pick(&G16)),
            (false, 1) => a.popcnt(r.pick(&G32), r.pick(&G32)),
            (false, _) => a.popcnt(r.pick(&G64), r.pick(&G64)),
        },
        87 => match r.next() % 2 {
            0 => a.lahf(),
            _ => a.sahf(),
        },
        88 => a.cmpxchg16b(xmmword_ptr(rbp + al16)),
        // SSE2 (memory forms mostly) and conversions under MXCSR.RC.
        89 => xm!(paddb),
        90 => xm!(pmulhuw),
        91 => xm!(psubusw),
        92 => xm!(punpcklwd),
        93 => xm!(pshufd, imm),
        94 => xm!(pshufhw, imm),
        95 => xm!(psllw),
        96 => a.pslldq(d, imm & 0x1f),
        97 => a.psrldq(d, imm & 0x1f),
        98 => xm!(packssdw),
        99 => xm!(pavgb),
        100 => xm!(psadbw),
        101 => {
            flavor = Flavor::Round;
            xm!(cvtps2dq)
        }
        102 => {
            flavor = Flavor::Round;
            xm!(cvtpd2dq)
        }
        103 => {
            flavor = Flavor::Fp;
            xm!(addps)
        }
        104 => {
            flavor = Flavor::Fp;
            xn!(mulsd, qword_ptr)
        }
        105 => {
            flavor = Flavor::Fp;
            xm!(cmpps, imm & 7)
        }
        106 => {
            flavor = Flavor::Fp;
            xn!(cvtps2pd, qword_ptr)
        }
        107 => xm!(pmaxsw),
        108 => xm!(psrad),
        109 => xm!(punpckhqdq),
        110 => {
            flavor = Flavor::Fp;
            xm!(shufps, imm)
        }
        111 => xm!(pcmpgtb),
        // MASKMOVDQU stores through RDI (set to the memory by the caller).
        112 => a.maskmovdqu(d, s),
        // SSE/SSE2 moves and conversions with memory operands.
        113 => match mem {
            true => a.movq(d, qword_ptr(rbp + un)),
            _ => a.movq(qword_ptr(rbp + un), s),
        },
        114 => match mem {
            true => a.movd(d, dword_ptr(rbp + un)),
            _ => a.movd(dword_ptr(rbp + un), s),
        },
        115 => match mem {
            true => a.movss(d, dword_ptr(rbp + un)),
            _ => a.movss(dword_ptr(rbp + un), s),
        },
        116 => match mem {
            true => a.movsd_2(d, qword_ptr(rbp + un)),
            _ => a.movsd_2(qword_ptr(rbp + un), s),
        },
        117 => match (mem, r.next() % 2) {
            (true, 0) => a.movhps(d, qword_ptr(rbp + un)),
            (true, _) => a.movlpd(d, qword_ptr(rbp + un)),
            (false, 0) => a.movhpd(qword_ptr(rbp + un), s),
            (false, _) => a.movlps(qword_ptr(rbp + un), s),
        },
        118 => match mem {
            true => a.movups(xmmword_ptr(rbp + un), s),
            _ => a.movaps(m128, s),
        },
        119 => match mem {
            true => a.movntdq(m128, s),
            _ => a.movnti(qword_ptr(rbp + un), r.pick(&G64)),
        },
        120 => {
            flavor = Flavor::Fp;
            match mem {
                true => a.cvtsi2sd(d, qword_ptr(rbp + un)),
                _ => a.cvtsi2ss(d, dword_ptr(rbp + un)),
            }
        }
        121 => {
            flavor = Flavor::Round;
            match mem {
                true => a.cvttss2si(r.pick(&G64), dword_ptr(rbp + un)),
                _ => a.cvtsd2si(r.pick(&G32), qword_ptr(rbp + un)),
            }
        }
        122 => {
            flavor = Flavor::Fp;
            match mem {
                true => a.comisd(d, qword_ptr(rbp + un)),
                _ => a.ucomiss(d, dword_ptr(rbp + un)),
            }
        }
        123 => a.pinsrw(d, word_ptr(rbp + un), imm & 7),
        124 => {
            flavor = Flavor::Fp;
            xm!(unpcklps)
        }
        125 => a.movmskps(r.pick(&G32), s),
        126 => {
            flavor = Flavor::Fp;
            xn!(cvtss2sd, dword_ptr)
        }
        127 => {
            flavor = Flavor::Fp;
            xm!(sqrtpd)
        }
        128 => {
            flavor = Flavor::Round;
            xm!(cvttpd2dq)
        }
        // FISTTP (SSE3) of a double loaded by FLD: truncation.
        _ => {
            flavor = Flavor::Fp;
            a.fld(qword_ptr(rbp + al16))
                .and_then(|_| match r.next() % 3 {
                    0 => a.fisttp(word_ptr(rbp + un)),
                    1 => a.fisttp(dword_ptr(rbp + un)),
                    _ => a.fisttp(qword_ptr(rbp + un)),
                })
        }
    };
    res.unwrap();
    (a.assemble(0).unwrap(), flavor)
}

impl Rng {
    /// A 64-bit lane for the flavor.
    fn lane(&mut self, flavor: Flavor) -> u64 {
        match flavor {
            Flavor::Fp | Flavor::Round => match self.next() % 5 {
                // NaNs with random payloads (quiet and signalling).
                0 => {
                    let nan32 = |r: &mut Rng| 0x7f80_0001 | (r.next() as u32 & 0x807f_ffff);
                    nan32(self) as u64 | ((nan32(self) as u64) << 32)
                }
                1 => 0x7ff0_0000_0000_0001 | (self.next() & 0x800f_ffff_ffff_ffff),
                2 => {
                    let f = |r: &mut Rng| ((r.next() % 64) as f32 - 32.0) * 0.25;
                    f(self).to_bits() as u64 | ((f(self).to_bits() as u64) << 32)
                }
                _ => self.fp_lane(),
            },
            Flavor::Str => {
                let alphabet = [0u8, 0, b'a', b'b', b'c', b'z', 0x80, 0xff, 1];
                let mut v = 0u64;
                for k in 0..8 {
                    v |= (self.pick(&alphabet) as u64) << (8 * k);
                }
                // Sometimes all non-zero (a full-length string).
                if self.next().is_multiple_of(4) {
                    v |= 0x0101_0101_0101_0101;
                }
                v
            }
            Flavor::Int => match self.next() % 6 {
                0 => 0,
                1 => u64::MAX,
                2 => 0x8080_8080_8080_8080 ^ (self.next() & 0x0f0f_0f0f_0f0f_0f0f),
                3 => self.next() & 0x8f8f_8f8f_8f8f_8f8f,
                4 => 0x7fff_8000_0000_ffff ^ (self.next() & 0x0001_0001_0001_0001),
                _ => self.next(),
            },
        }
    }

    /// A string length for EAX/EDX: mostly within ±20.
    fn str_len(&mut self) -> u64 {
        match self.next() % 5 {
            0 => self.value(),
            _ => ((self.next() % 41) as i64 - 20) as u64,
        }
    }
}

fn listing(code: &[u8]) -> String {
    Decoder::with_ip(64, code, 0, DecoderOptions::NONE)
        .iter()
        .map(|i| format!("{:?}", i.code()))
        .collect::<Vec<_>>()
        .join("; ")
}

/// Runs `insn` (between two LDMXCSR) natively and on the emulator and
/// compares. `rdi_mem`: RDI points into the memory at that offset (and
/// is not compared). Returns whether the instruction changed anything.
fn run_case(
    case: usize,
    insn: &[u8],
    image: &SseImage,
    mem: &[u8; MEM],
    rdi_mem: Option<u64>,
) -> bool {
    let decoded = Decoder::with_ip(64, insn, 0, DecoderOptions::NONE).decode();
    let mut code = asm64(0, |a| a.ldmxcsr(dword_ptr(rbp + MXCSR_TEST)));
    code.extend_from_slice(insn);
    code.extend(asm64(0, |a| a.ldmxcsr(dword_ptr(rbp + MXCSR_DEFAULT))));

    // Native: RBP points at a 16-byte aligned copy of the memory.
    let mut host_mem = [0u128; MEM / 16];
    for (k, chunk) in mem.chunks(16).enumerate() {
        host_mem[k] = u128::from_le_bytes(chunk.try_into().unwrap());
    }
    let mut host = *image;
    host[5] = host_mem.as_mut_ptr() as u64;
    if let Some(off) = rdi_mem {
        host[7] = host[5] + off;
    }
    Native::new(&sse_thunk(&code)).call_any(&mut host);
    let host_bytes: Vec<u8> = host_mem.iter().flat_map(|v| v.to_le_bytes()).collect();

    let mut g = Guest::long64();
    for &i in REGS.iter() {
        g.cpu.state.gpr[i] = image[i];
    }
    g.cpu.state.gpr[5] = DATA;
    if let Some(off) = rdi_mem {
        g.cpu.state.gpr[7] = DATA + off;
    }
    g.bus.load(DATA, mem);
    for i in 0..16 {
        g.cpu.state.fpu.xmm[i] = image[17 + 2 * i] as u128 | ((image[18 + 2 * i] as u128) << 64);
    }
    g.cpu.state.set_rflags(image[16]);
    let mut guest_code = code.clone();
    guest_code.push(0xf4);
    g.bus.load(CODE, &guest_code);
    let exit = g.run();
    assert_eq!(
        exit,
        CpuExit::Halt,
        "case {case}: [{}] did not run to HLT (rip {:#x})",
        listing(insn),
        g.cpu.state.rip
    );

    let what = || format!("case {case}: [{}]", listing(insn));
    for &i in REGS
        .iter()
        .filter(|&&i| i != 5 && (i != 7 || rdi_mem.is_none()))
    {
        assert_eq!(
            g.cpu.state.gpr[i],
            host[i],
            "{} reg {i}, inputs {:x?}",
            what(),
            &image[..17]
        );
    }
    let nans = |v: u128| match nan_choice_unspecified(&decoded) {
        Some(size) => canonical_nans(v, size),
        None => v,
    };
    for i in 0..16 {
        let want = host[17 + 2 * i] as u128 | ((host[18 + 2 * i] as u128) << 64);
        assert_eq!(
            nans(g.cpu.state.fpu.xmm[i]),
            nans(want),
            "{} xmm{i}: got {:#034x} want {want:#034x}, inputs {:x?} mem {:x?}",
            what(),
            g.cpu.state.fpu.xmm[i],
            &image[17..],
            &mem[..OPS_END as usize]
        );
    }
    let guest_mem = &g.bus.bytes()[DATA as usize..DATA as usize + OPS_END as usize];
    assert_eq!(
        guest_mem,
        &host_bytes[..OPS_END as usize],
        "{} memory",
        what()
    );
    let mask = rflags::ARITH & !iced_flags(decoded.rflags_undefined());
    assert_eq!(
        g.cpu.state.rflags() & mask,
        host[16] & mask,
        "{} flags (mask {mask:#x}), inputs {:x?}",
        what(),
        &image[..17]
    );
    host[..16] != image[..16]
        || host[17..] != image[17..]
        || host_bytes[..OPS_END as usize] != mem[..OPS_END as usize]
        || (host[16] ^ image[16]) & rflags::ARITH != 0
}

#[test]
fn random_simd_instructions_match_the_host() {
    on_both_engines(random_simd_instructions_match_the_host_on_engine);
}

fn random_simd_instructions_match_the_host_on_engine() {
    for f in ["sse3", "ssse3", "sse4.1", "sse4.2", "popcnt"] {
        let ok = match f {
            "sse3" => std::is_x86_feature_detected!("sse3"),
            "ssse3" => std::is_x86_feature_detected!("ssse3"),
            "sse4.1" => std::is_x86_feature_detected!("sse4.1"),
            "sse4.2" => std::is_x86_feature_detected!("sse4.2"),
            _ => std::is_x86_feature_detected!("popcnt"),
        };
        if !ok {
            eprintln!("host lacks {f}: SIMD differential test skipped");
            return;
        }
    }
    let mut rng = Rng(0x6a09_e667_f3bc_c908);
    let n = cases(20000);
    let mut changed = 0;
    let mut seen = std::collections::HashSet::new();
    for case in 0..n {
        let (insn, flavor) = random_simd(&mut rng);
        let m = Decoder::with_ip(64, &insn, 0, DecoderOptions::NONE)
            .decode()
            .mnemonic();
        seen.insert(m);
        let mut image: SseImage = [0; 49];
        for &i in REGS.iter() {
            image[i] = rng.value();
        }
        if flavor == Flavor::Str {
            image[0] = rng.str_len();
            image[2] = rng.str_len();
        }
        image[16] = (rng.next() & rflags::ARITH) | 0x2;
        for i in 0..32 {
            // Mostly the instruction's flavor, sometimes anything.
            let f = if rng.next().is_multiple_of(8) {
                Flavor::Int
            } else {
                flavor
            };
            image[17 + i] = rng.lane(f);
        }
        let mut mem = [0u8; MEM];
        for k in 0..OPS_END as usize / 8 {
            let f = if k % 3 == 0 { Flavor::Int } else { flavor };
            let v = rng.lane(f);
            mem[8 * k..8 * k + 8].copy_from_slice(&v.to_le_bytes());
        }
        // CMPXCHG16B: make the comparison succeed half of the time.
        if m == Mnemonic::Cmpxchg16b && rng.next().is_multiple_of(2) {
            for k in (0..OPS_END as usize).step_by(16) {
                mem[k..k + 8].copy_from_slice(&image[0].to_le_bytes());
                mem[k + 8..k + 16].copy_from_slice(&image[2].to_le_bytes());
            }
        }
        let rc = if flavor == Flavor::Round {
            (rng.next() % 4) as u32
        } else {
            0
        };
        let t = MXCSR_TEST as usize;
        mem[t..t + 4].copy_from_slice(&(0x1f80 | (rc << 13)).to_le_bytes());
        let dflt = MXCSR_DEFAULT as usize;
        mem[dflt..dflt + 4].copy_from_slice(&0x1f80u32.to_le_bytes());
        let rdi_mem = (m == Mnemonic::Maskmovdqu).then(|| rng.next() % (OPS_END - 16));
        if run_case(case, &insn, &image, &mem, rdi_mem) {
            changed += 1;
        }
    }
    assert!(
        changed > n * 3 / 4,
        "only {changed} of {n} cases changed state"
    );
    if n >= 5000 {
        assert!(seen.len() >= 100, "only {} mnemonics generated", seen.len());
    }
}
