//! Differential tests: random user-mode register instructions run natively
//! on the host CPU (from an mmap'd executable buffer) and on the emulator;
//! registers and the defined arithmetic flags must match.

use iced_x86::code_asm::*;
use iced_x86::{Decoder, DecoderOptions, RflagsBits};

use super::*;
use crate::state::rflags;

/// Register image exchanged with the native thunk: 16 GPRs then RFLAGS.
pub(super) type Image = [u64; 17];

/// An executable copy of some code.
pub(super) struct Native {
    mem: *mut u8,
    len: usize,
}

impl Native {
    pub(super) fn new(code: &[u8]) -> Native {
        let len = code.len().div_ceil(4096) * 4096;
        // SAFETY: an anonymous private mapping; arguments are valid.
        let mem = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        assert_ne!(mem, libc::MAP_FAILED);
        let mem = mem as *mut u8;
        // SAFETY: the mapping is `len >= code.len()` bytes and writable;
        // then it is made read+exec only.
        unsafe {
            std::ptr::copy_nonoverlapping(code.as_ptr(), mem, code.len());
            assert_eq!(
                libc::mprotect(mem as *mut _, len, libc::PROT_READ | libc::PROT_EXEC),
                0
            );
        }
        Native { mem, len }
    }

    pub(super) fn call(&self, image: &mut Image) {
        self.call_any(image)
    }

    pub(super) fn call_any(&self, image: &mut [u64]) {
        // SAFETY: the buffer holds a complete function following the SysV
        // ABI (callee-saved registers and RSP restored) that only reads and
        // writes the image it is given, which is as large as the thunk
        // built for it expects.
        unsafe {
            let f: extern "C" fn(*mut u64) = std::mem::transmute(self.mem);
            f(image.as_mut_ptr());
        }
    }
}

impl Drop for Native {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping made in `new`.
        unsafe {
            libc::munmap(self.mem as *mut _, self.len);
        }
    }
}

pub(super) const SAVED: [AsmRegister64; 6] = [rbx, rbp, r12, r13, r14, r15];
/// Registers the test instructions use (RSP excluded; RDI holds the image
/// pointer until it is loaded last).
pub(super) const REGS: [usize; 15] = [0, 1, 2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15];
pub(super) const R64: [AsmRegister64; 16] = [
    rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15,
];

/// The vector registers a thunk loads from its image and stores back,
/// after the 16 GPRs and RFLAGS (words 17 on).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum VecRegs {
    None,
    /// XMM0..15, two words each.
    Xmm,
    /// YMM0..15, four words each (VZEROUPPER before returning).
    Ymm,
}

/// Wraps instruction bytes into a native function over a GPR image.
pub(super) fn thunk(insn: &[u8]) -> Vec<u8> {
    thunk_with(insn, VecRegs::None)
}

/// Wraps instruction bytes into a native SysV function over an image of
/// the GPRs, RFLAGS and the `vec` registers: it loads them all, runs the
/// bytes, and stores them back (RSP and the callee-saved registers
/// restored).
pub(super) fn thunk_with(insn: &[u8], vec: VecRegs) -> Vec<u8> {
    const XMM: [AsmRegisterXmm; 16] = [
        xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13,
        xmm14, xmm15,
    ];
    const YMM: [AsmRegisterYmm; 16] = [
        ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11, ymm12, ymm13,
        ymm14, ymm15,
    ];
    let mut a = CodeAssembler::new(64).unwrap();
    (|| -> Result<(), iced_x86::IcedError> {
        for r in SAVED {
            a.push(r)?;
        }
        a.push(rdi)?;
        for i in 0..16 {
            match vec {
                VecRegs::None => {}
                VecRegs::Xmm => a.movdqu(XMM[i], xmmword_ptr(rdi + (17 + 2 * i) * 8))?,
                VecRegs::Ymm => a.vmovdqu(YMM[i], ymmword_ptr(rdi + (17 + 4 * i) * 8))?,
            }
        }
        a.push(qword_ptr(rdi + 16 * 8))?;
        a.popfq()?;
        for &i in REGS.iter() {
            if i != 7 {
                a.mov(R64[i], qword_ptr(rdi + i * 8))?;
            }
        }
        a.mov(rdi, qword_ptr(rdi + 7 * 8))?;
        Ok(())
    })()
    .unwrap();
    let mut code = a.assemble(0).unwrap();
    code.extend_from_slice(insn);
    let mut b = CodeAssembler::new(64).unwrap();
    (|| -> Result<(), iced_x86::IcedError> {
        b.xchg(qword_ptr(rsp), rdi)?;
        for &i in REGS.iter() {
            if i != 7 {
                b.mov(qword_ptr(rdi + i * 8), R64[i])?;
            }
        }
        b.pushfq()?;
        b.pop(rax)?;
        b.mov(qword_ptr(rdi + 16 * 8), rax)?;
        b.pop(rax)?;
        b.mov(qword_ptr(rdi + 7 * 8), rax)?;
        for i in 0..16 {
            match vec {
                VecRegs::None => {}
                VecRegs::Xmm => b.movdqu(xmmword_ptr(rdi + (17 + 2 * i) * 8), XMM[i])?,
                VecRegs::Ymm => b.vmovdqu(ymmword_ptr(rdi + (17 + 4 * i) * 8), YMM[i])?,
            }
        }
        if vec == VecRegs::Ymm {
            b.vzeroupper()?;
        }
        for r in SAVED.iter().rev() {
            b.pop(*r)?;
        }
        b.ret()
    })()
    .unwrap();
    code.extend(b.assemble(0).unwrap());
    code
}

/// Cases per differential test: `default`, or FERROVISOR_DIFF_CASES for
/// longer local runs (e.g. `FERROVISOR_DIFF_CASES=1000000 cargo test -p
/// x86 --release differential`).
pub(super) fn cases(default: usize) -> usize {
    std::env::var("FERROVISOR_DIFF_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

pub(super) struct Rng(pub(super) u64);
impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    pub(super) fn pick<T: Copy>(&mut self, v: &[T]) -> T {
        v[(self.next() % v.len() as u64) as usize]
    }
    /// Operand values biased towards edge cases.
    pub(super) fn value(&mut self) -> u64 {
        match self.next() % 6 {
            0 => 0,
            1 => u64::MAX,
            2 => 0x8000_0000_0000_0000 ^ (self.next() & 0xff),
            3 => self.next() & 0xff,
            4 => 0x7fff_ffff ^ (self.next() & 3),
            _ => self.next(),
        }
    }
}

/// One random register instruction, encoded.
fn random_insn(r: &mut Rng, bmi1: bool) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    let g64 = [
        rax, rcx, rdx, rbx, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15,
    ];
    let g32 = [
        eax, ecx, edx, ebx, esi, edi, r8d, r9d, r10d, r11d, r12d, r13d, r14d, r15d,
    ];
    let g16 = [
        ax, cx, dx, bx, si, di, r8w, r9w, r10w, r11w, r12w, r13w, r14w, r15w,
    ];
    let g8 = [
        al, cl, dl, bl, sil, dil, r8b, r9b, r10b, r11b, r12b, r13b, r14b, r15b,
    ];
    let imm = (r.next() & 0xff) as i32 - 0x80;
    let sh = (r.next() % 70) as i32;
    macro_rules! ops {
        ($regs:expr) => {{
            let d = r.pick(&$regs);
            let s = r.pick(&$regs);
            match r.next() % 30 {
                0 => a.add(d, s),
                1 => a.adc(d, s),
                2 => a.sub(d, s),
                3 => a.sbb(d, s),
                4 => a.and(d, s),
                5 => a.or(d, s),
                6 => a.xor(d, s),
                7 => a.cmp(d, s),
                8 => a.test(d, s),
                9 => a.inc(d),
                10 => a.dec(d),
                11 => a.neg(d),
                12 => a.not(d),
                13 => a.shl(d, cl),
                14 => a.shr(d, cl),
                15 => a.sar(d, cl),
                16 => a.rol(d, cl),
                17 => a.ror(d, cl),
                18 => a.rcl(d, cl),
                19 => a.rcr(d, cl),
                20 => a.shl(d, sh & 0x3f),
                21 => a.sar(d, 1),
                22 => a.add(d, imm),
                23 => a.sbb(d, imm),
                24 => a.xadd(d, s),
                25 => a.rcr(d, sh & 0x1f),
                26 => a.rol(d, sh & 0x1f),
                27 => a.shr(d, sh & 0x1f),
                28 => a.xchg(d, s),
                _ => a.cmpxchg(d, s),
            }
        }};
    }
    macro_rules! wide_ops {
        ($regs:expr) => {{
            let d = r.pick(&$regs);
            let s = r.pick(&$regs);
            let n = if bmi1 { 21 } else { 16 };
            match r.next() % n {
                0 => a.imul_2(d, s),
                1 => a.imul_3(d, s, imm),
                2 => a.bt(d, s),
                3 => a.bts(d, s),
                4 => a.btr(d, s),
                5 => a.btc(d, sh),
                6 => a.shld(d, s, cl),
                7 => a.shrd(d, s, (sh & 0x1f) as u32),
                8 => a.bsf(d, s),
                9 => a.bsr(d, s),
                10 => a.cmovbe(d, s),
                11 => a.cmovl(d, s),
                12 => a.bswap(d),
                13 => a.lea(
                    d,
                    qword_ptr(r.pick(&[rax, rbx, r9]) + r.pick(&[rcx, rsi, r15]) * 4 + imm),
                ),
                14 => a.cmovo(d, s),
                15 => a.popcnt(d, s),
                16 => a.andn(d, s, r.pick(&$regs)),
                17 => a.bextr(d, s, r.pick(&$regs)),
                18 => a.blsi(d, s),
                19 => a.blsmsk(d, s),
                _ => a.blsr(d, s),
            }
        }};
    }
    match r.next() % 7 {
        0 => ops!(g64),
        1 => ops!(g32),
        2 => ops!(g16),
        3 => ops!(g8),
        4 => wide_ops!(g64),
        5 => wide_ops!(g32),
        _ => match r.next() % 4 {
            0 => a.mul(r.pick(&g64)),
            1 => a.imul(r.pick(&g32)),
            2 => a.mul(r.pick(&g8)),
            _ => a.imul(r.pick(&g16)),
        },
    }
    .unwrap();
    a.assemble(0).unwrap()
}

/// Maps iced's RflagsBits to RFLAGS bits.
/// For DPPS and DPPD, which of several NaNs meeting in the dot product
/// reaches each destination element is not the same on every x86 CPU (an
/// Intel Xeon writes different NaNs to lanes that the SDM's pseudocode
/// gives one value): the element size under which a NaN result compares
/// as any NaN. None for other instructions, whose NaN results must match.
pub(super) fn nan_choice_unspecified(insn: &iced_x86::Instruction) -> Option<u32> {
    use iced_x86::Mnemonic::*;
    match insn.mnemonic() {
        Dpps | Vdpps => Some(4),
        Dppd | Vdppd => Some(8),
        _ => None,
    }
}

/// `v` with each NaN element of `size` bytes made one canonical value.
pub(super) fn canonical_nans(v: u128, size: u32) -> u128 {
    let bits = size * 8;
    let (exp, frac) = if size == 4 {
        (0x7f80_0000u128, 0x007f_ffffu128)
    } else {
        (0x7ff0_0000_0000_0000u128, 0x000f_ffff_ffff_ffffu128)
    };
    let mut out = v;
    for k in 0..128 / bits {
        let shift = k * bits;
        let e = (v >> shift) & ((1u128 << bits) - 1);
        if e & exp == exp && e & frac != 0 {
            out &= !(((1u128 << bits) - 1) << shift);
            out |= (exp | frac) << shift;
        }
    }
    out
}

pub(super) fn iced_flags(bits: u32) -> u64 {
    let mut f = 0;
    for (i, x) in [
        (RflagsBits::OF, rflags::OF),
        (RflagsBits::SF, rflags::SF),
        (RflagsBits::ZF, rflags::ZF),
        (RflagsBits::AF, rflags::AF),
        (RflagsBits::CF, rflags::CF),
        (RflagsBits::PF, rflags::PF),
    ] {
        if bits & i != 0 {
            f |= x;
        }
    }
    f
}

/// The arithmetic flags `d` leaves undefined on some x86 CPU: iced's
/// table, plus OF after a shift or rotate whose masked count is not 1. The
/// SDM and the APM define OF only for 1-bit shifts and rotates; for other
/// counts Intel and AMD CPUs differ (RCL/RCR of 8/16-bit operands, whose
/// count is taken modulo 9 or 17, above all), so a test compares OF only
/// when the count is known to be 1. `count_reg` is CL's value,
/// when known.
fn undefined_flags(d: &iced_x86::Instruction, count_reg: Option<u8>) -> u64 {
    use iced_x86::{Mnemonic, OpKind};
    let mut undefined = iced_flags(d.rflags_undefined());
    let shift = matches!(
        d.mnemonic(),
        Mnemonic::Shl
            | Mnemonic::Sal
            | Mnemonic::Shr
            | Mnemonic::Sar
            | Mnemonic::Rol
            | Mnemonic::Ror
            | Mnemonic::Rcl
            | Mnemonic::Rcr
            | Mnemonic::Shld
            | Mnemonic::Shrd
    );
    if shift {
        let size = d.op0_register().size().max(d.memory_size().size());
        let mask = if size == 8 { 0x3f } else { 0x1f };
        let n = d.op_count() - 1;
        let count = match d.op_kind(n) {
            OpKind::Immediate8 => Some(d.immediate8()),
            OpKind::Register if d.op_register(n) == iced_x86::Register::CL => count_reg,
            // The 1-bit forms (D0/D1 /r) have no count operand.
            _ if d.op_count() == 1 => Some(1),
            _ => None,
        };
        if count.map(|c| c & mask) != Some(1) {
            undefined |= rflags::OF;
        }
    }
    undefined
}

#[test]
fn random_register_instructions_match_the_host() {
    on_both_engines(random_register_instructions_match_the_host_on_engine);
}

fn random_register_instructions_match_the_host_on_engine() {
    if !std::is_x86_feature_detected!("popcnt") {
        eprintln!("host lacks POPCNT: differential test skipped");
        return;
    }
    let bmi1 = std::is_x86_feature_detected!("bmi1");
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut checked = 0;
    let n = cases(5000);
    for _ in 0..n {
        let insn = random_insn(&mut rng, bmi1);
        let decoded = Decoder::with_ip(64, &insn, 0, DecoderOptions::NONE).decode();
        let mut image: Image = [0; 17];
        for v in image.iter_mut().take(16) {
            *v = rng.value();
        }
        let undefined = undefined_flags(&decoded, Some(image[1] as u8));
        image[4] = 0;
        image[16] = (rng.next() & rflags::ARITH) | 0x2;
        let start = image;

        let native = Native::new(&thunk(&insn));
        let mut host = start;
        native.call(&mut host);

        let mut g = Guest::long64();
        for &i in REGS.iter() {
            g.cpu.state.gpr[i] = start[i];
        }
        g.cpu.state.set_rflags(start[16]);
        let mut code = insn.clone();
        code.push(0xf4);
        g.bus.load(CODE, &code);
        g.run_to_hlt();

        for &i in REGS.iter() {
            assert_eq!(
                g.cpu.state.gpr[i],
                host[i],
                "{:?} reg {i}: inputs {start:x?}",
                decoded.code()
            );
        }
        let mask = rflags::ARITH & !undefined;
        assert_eq!(
            g.cpu.state.rflags() & mask,
            host[16] & mask,
            "{:?}: flags (mask {mask:#x}), inputs {start:x?}",
            decoded.code()
        );
        checked += 1;
    }
    assert_eq!(checked, n);
}

/// GPR image plus XMM0..15, for the SSE differential test.
pub(super) type SseImage = [u64; 17 + 32];

pub(super) fn sse_thunk(insn: &[u8]) -> Vec<u8> {
    thunk_with(insn, VecRegs::Xmm)
}

fn random_sse(r: &mut Rng) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    let x = [
        xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13,
        xmm14, xmm15,
    ];
    let d = r.pick(&x);
    let s = r.pick(&x);
    let g64 = [rax, rcx, rdx, rbx, rsi, r8, r9, r15];
    let g32 = [eax, ecx, edx, ebx, esi, r8d, r9d, r15d];
    let imm = (r.next() & 0xff) as i32;
    match r.next() % 60 {
        0 => a.addss(d, s),
        1 => a.addsd(d, s),
        2 => a.subps(d, s),
        3 => a.mulpd(d, s),
        4 => a.divss(d, s),
        5 => a.divpd(d, s),
        6 => a.minsd(d, s),
        7 => a.maxps(d, s),
        8 => a.sqrtsd(d, s),
        9 => a.sqrtps(d, s),
        10 => a.cmpsd_3(d, s, imm & 7),
        11 => a.cmpps(d, s, imm & 7),
        12 => a.comisd(d, s),
        13 => a.ucomiss(d, s),
        14 => a.cvtsi2sd(d, r.pick(&g64)),
        15 => a.cvtsi2ss(d, r.pick(&g32)),
        16 => a.cvtss2sd(d, s),
        17 => a.cvtsd2ss(d, s),
        18 => a.cvttsd2si(r.pick(&g64), s),
        19 => a.cvtsd2si(r.pick(&g32), s),
        20 => a.cvttss2si(r.pick(&g32), s),
        21 => a.cvtdq2ps(d, s),
        22 => a.cvtps2dq(d, s),
        23 => a.cvttpd2dq(d, s),
        24 => a.cvtdq2pd(d, s),
        25 => a.cvtps2pd(d, s),
        26 => a.cvtpd2ps(d, s),
        27 => a.shufps(d, s, imm),
        28 => a.shufpd(d, s, imm & 3),
        29 => a.unpcklps(d, s),
        30 => a.unpckhpd(d, s),
        31 => a.pmuludq(d, s),
        32 => a.pmullw(d, s),
        33 => a.pmulhw(d, s),
        34 => a.pmaddwd(d, s),
        35 => a.psadbw(d, s),
        36 => a.packsswb(d, s),
        37 => a.packuswb(d, s),
        38 => a.packssdw(d, s),
        39 => a.pmaxsw(d, s),
        40 => a.paddsb(d, s),
        41 => a.psubsw(d, s),
        42 => a.paddusw(d, s),
        43 => a.pavgw(d, s),
        44 => a.pshuflw(d, s, imm),
        45 => a.pshufhw(d, s, imm),
        46 => a.pinsrw(d, r.pick(&g32), imm & 7),
        47 => a.pextrw(r.pick(&g32), s, imm & 7),
        48 => a.pcmpgtb(d, s),
        49 => a.pminub(d, s),
        50 => a.punpckhbw(d, s),
        51 => a.pshufd(d, s, imm),
        52 => a.psrad(d, imm & 0x3f),
        53 => a.psllq(d, s),
        54 => a.pmovmskb(r.pick(&g32), s),
        55 => a.movmskpd(r.pick(&g32), s),
        56 => a.psubusb(d, s),
        57 => a.andnpd(d, s),
        58 => a.movhlps(d, s),
        _ => a.movss(d, s),
    }
    .unwrap();
    a.assemble(0).unwrap()
}

impl Rng {
    /// A float-ish 64-bit lane: special values, small numbers, raw bits.
    pub(super) fn fp_lane(&mut self) -> u64 {
        let f = |v: f64| v.to_bits();
        let g = |v: f32| v.to_bits() as u64;
        match self.next() % 8 {
            0 => g(1.5) | (g(-0.0) << 32),
            1 => f(f64::NAN),
            2 => f(-2.75e10),
            3 => g(f32::INFINITY) | (g(3.0e9) << 32),
            4 => f((self.next() % 2000) as f64 - 1000.5),
            5 => g((self.next() % 200) as f32 * 0.25) | (g(-1.0e-3) << 32),
            6 => f(9.3e18),
            _ => self.next(),
        }
    }
}

#[test]
fn random_sse_instructions_match_the_host() {
    on_both_engines(random_sse_instructions_match_the_host_on_engine);
}

fn random_sse_instructions_match_the_host_on_engine() {
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    let mut changed = 0;
    let n = cases(4000);
    for _ in 0..n {
        let insn = random_sse(&mut rng);
        let decoded = Decoder::with_ip(64, &insn, 0, DecoderOptions::NONE).decode();
        let mut image: SseImage = [0; 49];
        for &i in REGS.iter() {
            image[i] = rng.value();
        }
        image[16] = 0x2;
        for i in 0..32 {
            image[17 + i] = rng.fp_lane();
        }
        let start = image;
        let native = Native::new(&sse_thunk(&insn));
        let mut host = start;
        native.call_any(&mut host);
        if host[17..] != start[17..] || host[..16] != start[..16] {
            changed += 1;
        }

        let mut g = Guest::long64();
        for &i in REGS.iter() {
            g.cpu.state.gpr[i] = start[i];
        }
        for i in 0..16 {
            g.cpu.state.fpu.xmm[i] =
                start[17 + 2 * i] as u128 | ((start[18 + 2 * i] as u128) << 64);
        }
        g.cpu.state.set_rflags(0x2);
        let mut code = insn.clone();
        code.push(0xf4);
        g.bus.load(CODE, &code);
        g.run_to_hlt();
        for &i in REGS.iter() {
            assert_eq!(g.cpu.state.gpr[i], host[i], "{:?} reg {i}", decoded.code());
        }
        for i in 0..16 {
            let want = host[17 + 2 * i] as u128 | ((host[18 + 2 * i] as u128) << 64);
            assert_eq!(
                g.cpu.state.fpu.xmm[i],
                want,
                "{:?} xmm{i}: inputs {:x?}",
                decoded.code(),
                &start[17..]
            );
        }
        let mask = rflags::ARITH;
        assert_eq!(
            g.cpu.state.rflags() & mask,
            host[16] & mask,
            "{:?} flags",
            decoded.code()
        );
    }
    assert!(
        changed > n * 3 / 4,
        "only {changed} instructions changed state"
    );
}

// ------------------------------------------------------------ sequences

/// Bytes of scratch memory the sequences address through RBP.
const SEQ_MEM: usize = 512;

/// One random instruction that reads or writes memory at [RBP+disp]
/// (RBP is never written by the sequences), or a balanced PUSH/POP pair.
fn random_mem_insn(r: &mut Rng) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    let g64 = [
        rax, rcx, rdx, rbx, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15,
    ];
    let g32 = [
        eax, ecx, edx, ebx, esi, edi, r8d, r9d, r10d, r11d, r12d, r13d, r14d, r15d,
    ];
    let g16 = [
        ax, cx, dx, bx, si, di, r8w, r9w, r10w, r11w, r12w, r13w, r14w, r15w,
    ];
    let g8 = [
        al, cl, dl, bl, sil, dil, r8b, r9b, r10b, r11b, r12b, r13b, r14b, r15b, ah, ch, dh, bh,
    ];
    let d = (r.next() % (SEQ_MEM as u64 - 8)) as i32;
    let imm = (r.next() & 0xff) as i32 - 0x80;
    let sh = (r.next() % 40) as u32;
    macro_rules! forms {
        ($regs:expr, $ptr:ident) => {{
            let g = r.pick(&$regs);
            let m = $ptr(rbp + d);
            match r.next() % 24 {
                0 => a.mov(g, m),
                1 => a.mov(m, g),
                2 => a.add(g, m),
                3 => a.sub(m, g),
                4 => a.and(m, imm),
                5 => a.or(g, m),
                6 => a.xor(m, g),
                7 => a.cmp(m, imm),
                8 => a.cmp(g, m),
                9 => a.test(m, g),
                10 => a.adc(m, imm),
                11 => a.sbb(g, m),
                12 => a.inc(m),
                13 => a.dec(m),
                14 => a.neg(m),
                15 => a.not(m),
                16 => a.shl(m, sh),
                17 => a.shr(m, sh),
                18 => a.sar(m, sh),
                19 => a.rol(m, sh),
                20 => a.ror(m, sh),
                21 => a.xadd(m, g),
                22 => a.cmpxchg(m, g),
                _ => a.xchg(m, g),
            }
        }};
    }
    match r.next() % 8 {
        0 => forms!(g64, qword_ptr),
        1 => forms!(g32, dword_ptr),
        2 => forms!(g16, word_ptr),
        3 => forms!(g8, byte_ptr),
        4 => match r.next() % 8 {
            0 => a.movzx(r.pick(&g32), byte_ptr(rbp + d)),
            1 => a.movzx(r.pick(&g64), word_ptr(rbp + d)),
            2 => a.movsx(r.pick(&g64), byte_ptr(rbp + d)),
            3 => a.movsxd(r.pick(&g64), dword_ptr(rbp + d)),
            4 => a.imul_2(r.pick(&g64), qword_ptr(rbp + d)),
            5 => a.imul_3(r.pick(&g32), dword_ptr(rbp + d), imm),
            6 => a.mul(qword_ptr(rbp + d)),
            _ => a.imul(dword_ptr(rbp + d)),
        },
        5 => match r.next() % 4 {
            0 => a.cmovne(r.pick(&g64), qword_ptr(rbp + d)),
            1 => a.cmovb(r.pick(&g32), dword_ptr(rbp + d)),
            2 => a.sete(byte_ptr(rbp + d)),
            _ => a.setl(byte_ptr(rbp + d)),
        },
        6 => {
            let x = r.pick(&g64);
            let y = r.pick(&g64);
            a.push(x).and_then(|_| a.pop(y))
        }
        _ => match r.next() % 3 {
            0 => a.mov(qword_ptr(rbp + d), imm),
            1 => a.mov(byte_ptr(rbp + d), imm as u32 & 0xff),
            _ => a.mov(dword_ptr(rbp + d), imm),
        },
    }
    .unwrap();
    a.assemble(0).unwrap()
}

/// A division that cannot fault (the divisor is made positive and not
/// zero, the dividend's high half zero or a sign extension), or one of
/// the sign-extension and byte-swap instructions next to it.
fn random_divide(r: &mut Rng) -> Vec<u8> {
    let mut a = CodeAssembler::new(64).unwrap();
    let d64 = [rbx, rcx, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15];
    let d32 = [
        ebx, ecx, esi, edi, r8d, r9d, r10d, r11d, r12d, r13d, r14d, r15d,
    ];
    let q = r.pick(&d64);
    let q32 = r.pick(&d32);
    (|| -> Result<(), iced_x86::IcedError> {
        match r.next() % 8 {
            0 => {
                a.xor(edx, edx)?;
                a.or(q, 1)?;
                a.div(q)
            }
            1 => {
                a.cqo()?;
                a.and(q, 0x7fff_ffff)?;
                a.or(q, 1)?;
                a.idiv(q)
            }
            2 => {
                a.xor(edx, edx)?;
                a.or(q32, 1)?;
                a.div(q32)
            }
            3 => {
                a.cdq()?;
                a.and(q32, 0x7fff)?;
                a.or(q32, 1)?;
                a.idiv(q32)
            }
            4 => a.cdqe(),
            5 => a.cwde(),
            6 => a.bswap(q),
            _ => a.bswap(q32),
        }
    })()
    .unwrap();
    a.assemble(0).unwrap()
}

/// How instructions leave the arithmetic flags, for deciding which final
/// flags a sequence defines: `None` if one reads a flag that is undefined
/// then (the sequence is not comparable), else the new set of undefined
/// flags.
fn track_undefined(code: &[u8], mut undef: u64) -> Option<u64> {
    use iced_x86::{Mnemonic, OpKind};
    for d in Decoder::with_ip(64, code, 0, DecoderOptions::NONE).iter() {
        if iced_flags(d.rflags_read()) & undef != 0 {
            return None;
        }
        let modified = iced_flags(d.rflags_modified());
        let undefined = undefined_flags(&d, None);
        let shift = matches!(
            d.mnemonic(),
            Mnemonic::Shl
                | Mnemonic::Shr
                | Mnemonic::Sar
                | Mnemonic::Rol
                | Mnemonic::Ror
                | Mnemonic::Rcl
                | Mnemonic::Rcr
                | Mnemonic::Shld
                | Mnemonic::Shrd
        );
        // A shift whose count may be zero leaves the flags alone: whether
        // they are defined afterwards is not known statically.
        let maybe_zero = shift && {
            let n = d.op_count() - 1;
            d.op_kind(n) != OpKind::Immediate8 || {
                let size = d.op0_register().size().max(d.memory_size().size());
                let mask = if size == 8 { 0x3f } else { 0x1f };
                d.immediate8() & mask == 0
            }
        };
        undef = if maybe_zero {
            undef | undefined
        } else {
            (undef & !modified) | undefined
        };
    }
    Some(undef)
}

/// A random block of instructions (register and memory forms, sometimes a
/// Jcc over the next one), and the arithmetic flags it leaves undefined.
fn random_sequence(r: &mut Rng, bmi1: bool) -> (Vec<u8>, u64) {
    let mut code = Vec::new();
    let mut undef = 0u64;
    let len = 1 + r.next() % 16;
    let mut n = 0;
    while n < len {
        let insn = match r.next() % 12 {
            0..=3 => random_mem_insn(r),
            4 => random_divide(r),
            _ => random_insn(r, bmi1),
        };
        if r.next().is_multiple_of(6) {
            // Jcc over `insn`.
            let cc = (r.next() % 16) as u8;
            let jcc = [0x70 + cc, insn.len() as u8];
            let Some(u) = track_undefined(&jcc, undef) else {
                continue;
            };
            let Some(u2) = track_undefined(&insn, u) else {
                continue;
            };
            code.extend_from_slice(&jcc);
            code.extend_from_slice(&insn);
            undef = u | u2;
        } else {
            let Some(u) = track_undefined(&insn, undef) else {
                continue;
            };
            code.extend_from_slice(&insn);
            undef = u;
        }
        n += 1;
    }
    (code, undef)
}

#[test]
fn random_instruction_sequences_match_the_host() {
    on_both_engines(random_instruction_sequences_match_the_host_on_engine);
}

fn random_instruction_sequences_match_the_host_on_engine() {
    if !std::is_x86_feature_detected!("popcnt") {
        eprintln!("host lacks POPCNT: differential test skipped");
        return;
    }
    let bmi1 = std::is_x86_feature_detected!("bmi1");
    let mut rng = Rng(0x5851_f42d_4c95_7f2d);
    let n = cases(3000);
    for case in 0..n {
        let (code, undef) = random_sequence(&mut rng, bmi1);
        let mut mem = vec![0u8; SEQ_MEM];
        for b in mem.iter_mut() {
            *b = rng.next() as u8;
        }
        let mut image: Image = [0; 17];
        for v in image.iter_mut().take(16) {
            *v = rng.value();
        }
        image[4] = 0;
        image[16] = (rng.next() & rflags::ARITH) | 0x2;
        let start = image;

        let native = Native::new(&thunk(&code));
        let mut host = start;
        let mut host_mem = mem.clone();
        host[5] = host_mem.as_mut_ptr() as u64;
        native.call(&mut host);

        let mut g = Guest::long64();
        for &i in REGS.iter() {
            g.cpu.state.gpr[i] = start[i];
        }
        g.cpu.state.gpr[5] = DATA;
        g.bus.load(DATA, &mem);
        g.cpu.state.set_rflags(start[16]);
        let mut guest_code = code.clone();
        guest_code.push(0xf4);
        g.bus.load(CODE, &guest_code);
        g.run_to_hlt();

        let listing = || {
            let mut d = Decoder::with_ip(64, &code, 0, DecoderOptions::NONE);
            d.iter()
                .map(|i| format!("{:?}", i.code()))
                .collect::<Vec<_>>()
                .join("; ")
        };
        for &i in REGS.iter().filter(|&&i| i != 5) {
            assert_eq!(
                g.cpu.state.gpr[i],
                host[i],
                "case {case} reg {i}: [{}] inputs {start:x?}",
                listing()
            );
        }
        let guest_mem = &g.bus.bytes()[DATA as usize..DATA as usize + SEQ_MEM];
        assert_eq!(
            guest_mem,
            &host_mem[..],
            "case {case} memory: [{}]",
            listing()
        );
        let mask = rflags::ARITH & !undef;
        assert_eq!(
            g.cpu.state.rflags() & mask,
            host[16] & mask,
            "case {case} flags (mask {mask:#x}): [{}] inputs {start:x?}",
            listing()
        );
    }
}

/// A sequence run in steps of a few instructions (blocks cut short by the
/// budget run with the handlers that keep flags exact) ends in the same
/// state, and retires the same number of instructions, as one run.
#[test]
fn sequences_run_in_steps_match_one_run() {
    on_both_engines(sequences_run_in_steps_match_one_run_on_engine);
}

fn sequences_run_in_steps_match_one_run_on_engine() {
    let mut rng = Rng(0x2f83_9ab1_c4d5_e6f7);
    for case in 0..cases(2000) {
        let (code, _) = random_sequence(&mut rng, true);
        let mut mem = vec![0u8; SEQ_MEM];
        for b in mem.iter_mut() {
            *b = rng.next() as u8;
        }
        let mut regs = [0u64; 16];
        for v in regs.iter_mut() {
            *v = rng.value();
        }
        let flags = (rng.next() & rflags::ARITH) | 0x2;
        let run = |steps: &mut dyn FnMut() -> u64| {
            let mut g = Guest::long64();
            for &i in REGS.iter() {
                g.cpu.state.gpr[i] = regs[i];
            }
            g.cpu.state.gpr[5] = DATA;
            g.bus.load(DATA, &mem);
            g.cpu.state.set_rflags(flags);
            let mut c = code.clone();
            c.push(0xf4);
            g.bus.load(CODE, &c);
            loop {
                let budget = steps();
                let before = g.cpu.instructions_retired();
                let exit = g.cpu.run(&mut g.bus, budget);
                let retired = g.cpu.instructions_retired() - before;
                assert!(retired <= budget, "{retired} retired, budget {budget}");
                match exit {
                    CpuExit::InstructionLimit => continue,
                    e => {
                        assert_eq!(e, CpuExit::Halt);
                        break;
                    }
                }
            }
            g
        };
        let whole = run(&mut || u64::MAX);
        let mut srng = Rng(rng.next() | 1);
        let stepped = run(&mut || 1 + srng.next() % 4);
        assert_eq!(whole.cpu.state.gpr, stepped.cpu.state.gpr, "case {case}");
        assert_eq!(
            whole.cpu.state.rflags(),
            stepped.cpu.state.rflags(),
            "case {case}"
        );
        assert_eq!(
            whole.cpu.instructions_retired(),
            stepped.cpu.instructions_retired(),
            "case {case}"
        );
        let range = DATA as usize..DATA as usize + SEQ_MEM;
        assert_eq!(
            whole.bus.bytes()[range.clone()],
            stepped.bus.bytes()[range],
            "case {case}"
        );
    }
}
