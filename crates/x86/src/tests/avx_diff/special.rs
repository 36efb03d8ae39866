//! Moves (whole, scalar, halves, GPR), VZEROUPPER/VZEROALL, broadcasts,
//! 128-bit lane inserts/extracts/permutes, masked loads and stores, MXCSR
//! loads/stores, FMA, F16C and the AVX2 gathers.

use iced_x86::code_asm::*;
use iced_x86::{Decoder, DecoderOptions, OpKind};

use super::fp::{s3, v3};
use super::*;

const G32: [AsmRegister32; 6] = [eax, ecx, edx, ebx, esi, r9d];
const G64: [AsmRegister64; 6] = [rax, rcx, rdx, rbx, rsi, r9];

fn random_mov(r: &mut Rng, avx2: bool) -> Case {
    let o = Ops::new(r);
    let g32 = r.pick(&G32);
    let g64 = r.pick(&G64);
    let n = if avx2 { 40 } else { 31 };
    let k = r.next() % n;
    let (x, y, uo, ao, imm) = (o.x, o.y, o.un, o.al, o.imm);
    let insn = asm1(|a| match (k, o.wide, o.mem) {
        (0, true, true) => a.vmovaps(y[0], ymmword_ptr(rbp + ao)),
        (0, true, false) => a.vmovaps(ymmword_ptr(rbp + ao), y[1]),
        (0, false, true) => a.vmovapd(x[0], xmmword_ptr(rbp + ao)),
        (0, false, false) => a.vmovdqa(x[0], x[1]),
        (1, true, true) => a.vmovups(y[0], ymmword_ptr(rbp + uo)),
        (1, true, false) => a.vmovdqu(ymmword_ptr(rbp + uo), y[1]),
        (1, false, true) => a.vmovupd(xmmword_ptr(rbp + uo), x[1]),
        (1, false, false) => a.vmovups(y[0], y[1]),
        (2, true, _) => a.vmovntps(ymmword_ptr(rbp + ao), y[1]),
        (2, false, _) => a.vmovntpd(xmmword_ptr(rbp + ao), x[1]),
        (3, _, _) => a.vmovntdq(ymmword_ptr(rbp + ao), y[1]),
        (4, _, true) => a.vmovss(x[0], dword_ptr(rbp + uo)),
        (4, _, false) => a.vmovss_3(x[0], x[1], x[2]),
        (5, _, true) => a.vmovsd(qword_ptr(rbp + uo), x[1]),
        (5, _, false) => a.vmovsd_3(x[0], x[1], x[2]),
        (6, _, true) => a.vmovsd(x[0], qword_ptr(rbp + uo)),
        (6, _, false) => a.vmovss(dword_ptr(rbp + uo), x[1]),
        (7, true, true) => a.vmovlps_3(x[0], x[1], qword_ptr(rbp + uo)),
        (7, true, false) => a.vmovlpd(qword_ptr(rbp + uo), x[1]),
        (7, false, true) => a.vmovhpd_3(x[0], x[1], qword_ptr(rbp + uo)),
        (7, false, false) => a.vmovhps(qword_ptr(rbp + uo), x[1]),
        (8, true, _) => a.vmovhlps(x[0], x[1], x[2]),
        (8, false, _) => a.vmovlhps(x[0], x[1], x[2]),
        (9, true, true) => a.vmovd(x[0], dword_ptr(rbp + uo)),
        (9, true, false) => a.vmovd(g32, x[1]),
        (9, false, true) => a.vmovq(qword_ptr(rbp + uo), x[1]),
        (9, false, false) => a.vmovq(x[0], g64),
        (10, true, _) => a.vmovq(x[0], x[1]),
        (10, false, true) => a.vmovq(x[0], qword_ptr(rbp + uo)),
        (10, false, false) => a.vmovd(x[0], g32),
        (11, _, _) => a.vzeroupper(),
        (12, _, _) => a.vzeroall(),
        (13, true, _) => a.vbroadcastss(y[0], dword_ptr(rbp + uo)),
        (13, false, _) => a.vbroadcastss(x[0], dword_ptr(rbp + uo)),
        (14, _, _) => a.vbroadcastsd(y[0], qword_ptr(rbp + uo)),
        (15, _, _) => a.vbroadcastf128(y[0], xmmword_ptr(rbp + uo)),
        (16, _, true) => a.vinsertf128(y[0], y[1], xmmword_ptr(rbp + uo), imm & 1),
        (16, _, false) => a.vinsertf128(y[0], y[1], x[2], imm & 1),
        (17, _, true) => a.vextractf128(xmmword_ptr(rbp + uo), y[1], imm & 1),
        (17, _, false) => a.vextractf128(x[0], y[1], imm & 1),
        (18, _, true) => a.vperm2f128(y[0], y[1], ymmword_ptr(rbp + uo), imm),
        (18, _, false) => a.vperm2f128(y[0], y[1], y[2], imm),
        (19, true, _) => a.vmaskmovps(y[0], y[1], ymmword_ptr(rbp + uo)),
        (19, false, _) => a.vmaskmovpd(x[0], x[1], xmmword_ptr(rbp + uo)),
        (20, true, _) => a.vmaskmovpd(ymmword_ptr(rbp + uo), y[1], y[2]),
        (20, false, _) => a.vmaskmovps(xmmword_ptr(rbp + uo), x[1], x[2]),
        (21, _, _) => a.vstmxcsr(dword_ptr(rbp + uo)),
        (22, _, _) => a
            .vldmxcsr(dword_ptr(rbp + 304))
            .and_then(|_| a.vstmxcsr(dword_ptr(rbp + uo))),
        (23, true, _) => a.vlddqu(y[0], ymmword_ptr(rbp + uo)),
        (23, false, _) => a.vlddqu(x[0], xmmword_ptr(rbp + uo)),
        (24, _, _) => v3!(a, o, vunpckhps),
        (25, _, true) => a.vmovdqa(xmmword_ptr(rbp + ao), x[1]),
        (25, _, false) => a.vmovapd(y[0], y[1]),
        (26, _, true) => a.vmovupd(y[0], ymmword_ptr(rbp + uo)),
        (26, _, false) => a.vmovdqu(x[0], x[1]),
        (27, _, _) => a.vmovsd_3(x[0], x[0], x[1]),
        (28, _, _) => a.vpextrq(g64, x[1], imm & 1),
        (29, _, _) => a.vmovntdq(xmmword_ptr(rbp + ao), x[1]),
        (30, _, _) => a.vmovd(dword_ptr(rbp + uo), x[1]),
        // AVX2.
        (31, true, _) => a.vbroadcastss(y[0], x[1]),
        (31, false, _) => a.vbroadcastss(x[0], x[1]),
        (32, _, true) => a.vbroadcastsd(y[0], x[1]),
        (32, _, false) => a.vbroadcasti128(y[0], xmmword_ptr(rbp + uo)),
        (33, true, true) => a.vpbroadcastb(y[0], byte_ptr(rbp + uo)),
        (33, true, false) => a.vpbroadcastb(y[0], x[1]),
        (33, false, true) => a.vpbroadcastw(x[0], word_ptr(rbp + uo)),
        (33, false, false) => a.vpbroadcastw(x[0], x[1]),
        (34, true, true) => a.vpbroadcastd(y[0], dword_ptr(rbp + uo)),
        (34, true, false) => a.vpbroadcastq(y[0], x[1]),
        (34, false, true) => a.vpbroadcastq(x[0], qword_ptr(rbp + uo)),
        (34, false, false) => a.vpbroadcastd(x[0], x[1]),
        (35, true, _) => a.vpmaskmovd(y[0], y[1], ymmword_ptr(rbp + uo)),
        (35, false, _) => a.vpmaskmovq(x[0], x[1], xmmword_ptr(rbp + uo)),
        (36, true, _) => a.vpmaskmovq(ymmword_ptr(rbp + uo), y[1], y[2]),
        (36, false, _) => a.vpmaskmovd(xmmword_ptr(rbp + uo), x[1], x[2]),
        (37, _, _) => a.vpbroadcastw(y[0], x[1]),
        (38, _, _) => a.vpbroadcastb(x[0], byte_ptr(rbp + uo)),
        _ => a.vpbroadcastq(y[0], qword_ptr(rbp + uo)),
    });
    let flavor = if r.next() & 1 == 0 {
        Flavor::Fp
    } else {
        Flavor::Int
    };
    case(r, insn, flavor)
}

#[test]
fn random_avx_moves_match_the_host() {
    if !host_has("AVX moves", &["avx"]) {
        return;
    }
    let avx2 = host_has("AVX2 broadcasts and masked moves", &["avx2"]);
    run_family(0x510e_527f_ade6_82d1, cases(8000), 40, |r| {
        random_mov(r, avx2)
    });
}

// ------------------------------------------------------------------ FMA

/// Element size of an FMA mnemonic (its name ends in ps/ss or pd/sd).
fn fma_elem(insn: &Instruction) -> usize {
    if format!("{:?}", insn.mnemonic()).ends_with('d') {
        8
    } else {
        4
    }
}

fn is_nan(v: u64, size: usize) -> bool {
    if size == 4 {
        f32::from_bits(v as u32).is_nan()
    } else {
        f64::from_bits(v).is_nan()
    }
}

/// Where a source's bytes live: YMM register `n` of the image, or
/// memory at an offset.
#[derive(Clone, Copy)]
enum Loc {
    Reg(usize),
    Mem(usize),
}

fn get(c: &Case, l: Loc, at: usize, size: usize) -> u64 {
    let mut e = [0u8; 8];
    match l {
        Loc::Reg(i) => {
            let q = c.image[17 + 4 * i + at / 8].to_le_bytes();
            e[..size].copy_from_slice(&q[at % 8..at % 8 + size]);
        }
        Loc::Mem(off) => e[..size].copy_from_slice(&c.mem[off + at..off + at + size]),
    }
    u64::from_le_bytes(e)
}

fn set(c: &mut Case, l: Loc, at: usize, size: usize, v: u64) {
    match l {
        Loc::Reg(i) => {
            let q = &mut c.image[17 + 4 * i + at / 8];
            let mut b = q.to_le_bytes();
            b[at % 8..at % 8 + size].copy_from_slice(&v.to_le_bytes()[..size]);
            *q = u64::from_le_bytes(b);
        }
        Loc::Mem(off) => c.mem[off + at..off + at + size].copy_from_slice(&v.to_le_bytes()[..size]),
    }
}

/// Leaves at most one NaN among the three sources of each element (the
/// others become 1.5): which of several NaN sources an FMA returns is not
/// the same on every x86 CPU.
fn one_nan_per_element(c: &mut Case) {
    let d = Decoder::with_ip(64, &c.insn, 0, DecoderOptions::NONE).decode();
    let size = fma_elem(&d);
    let loc = |n: u32| match d.op_kind(n) {
        OpKind::Memory => Loc::Mem(d.memory_displacement64() as usize),
        _ => {
            let r = d.op_register(n);
            let base = if r.is_ymm() {
                iced_x86::Register::YMM0
            } else {
                iced_x86::Register::XMM0
            };
            Loc::Reg(r as usize - base as usize)
        }
    };
    let locs = [loc(0), loc(1), loc(2)];
    let one = if size == 4 {
        1.5f32.to_bits() as u64
    } else {
        1.5f64.to_bits()
    };
    for j in 0..32 / size {
        let mut seen = false;
        for l in locs {
            if is_nan(get(c, l, j * size, size), size) {
                if seen {
                    set(c, l, j * size, size, one);
                }
                seen = true;
            }
        }
    }
}

fn random_fma(r: &mut Rng) -> Case {
    let o = Ops::new(r);
    let k = r.next() % 60;
    let insn = asm1(|a| match k {
        0 => v3!(a, o, vfmadd132ps),
        1 => v3!(a, o, vfmadd132pd),
        2 => v3!(a, o, vfmadd213ps),
        3 => v3!(a, o, vfmadd213pd),
        4 => v3!(a, o, vfmadd231ps),
        5 => v3!(a, o, vfmadd231pd),
        6 => v3!(a, o, vfmsub132ps),
        7 => v3!(a, o, vfmsub132pd),
        8 => v3!(a, o, vfmsub213ps),
        9 => v3!(a, o, vfmsub213pd),
        10 => v3!(a, o, vfmsub231ps),
        11 => v3!(a, o, vfmsub231pd),
        12 => v3!(a, o, vfnmadd132ps),
        13 => v3!(a, o, vfnmadd132pd),
        14 => v3!(a, o, vfnmadd213ps),
        15 => v3!(a, o, vfnmadd213pd),
        16 => v3!(a, o, vfnmadd231ps),
        17 => v3!(a, o, vfnmadd231pd),
        18 => v3!(a, o, vfnmsub132ps),
        19 => v3!(a, o, vfnmsub132pd),
        20 => v3!(a, o, vfnmsub213ps),
        21 => v3!(a, o, vfnmsub213pd),
        22 => v3!(a, o, vfnmsub231ps),
        23 => v3!(a, o, vfnmsub231pd),
        24 => v3!(a, o, vfmaddsub132ps),
        25 => v3!(a, o, vfmaddsub132pd),
        26 => v3!(a, o, vfmaddsub213ps),
        27 => v3!(a, o, vfmaddsub213pd),
        28 => v3!(a, o, vfmaddsub231ps),
        29 => v3!(a, o, vfmaddsub231pd),
        30 => v3!(a, o, vfmsubadd132ps),
        31 => v3!(a, o, vfmsubadd132pd),
        32 => v3!(a, o, vfmsubadd213ps),
        33 => v3!(a, o, vfmsubadd213pd),
        34 => v3!(a, o, vfmsubadd231ps),
        35 => v3!(a, o, vfmsubadd231pd),
        36 => s3!(a, o, vfmadd132ss, dword_ptr),
        37 => s3!(a, o, vfmadd132sd, qword_ptr),
        38 => s3!(a, o, vfmadd213ss, dword_ptr),
        39 => s3!(a, o, vfmadd213sd, qword_ptr),
        40 => s3!(a, o, vfmadd231ss, dword_ptr),
        41 => s3!(a, o, vfmadd231sd, qword_ptr),
        42 => s3!(a, o, vfmsub132ss, dword_ptr),
        43 => s3!(a, o, vfmsub132sd, qword_ptr),
        44 => s3!(a, o, vfmsub213ss, dword_ptr),
        45 => s3!(a, o, vfmsub213sd, qword_ptr),
        46 => s3!(a, o, vfmsub231ss, dword_ptr),
        47 => s3!(a, o, vfmsub231sd, qword_ptr),
        48 => s3!(a, o, vfnmadd132ss, dword_ptr),
        49 => s3!(a, o, vfnmadd132sd, qword_ptr),
        50 => s3!(a, o, vfnmadd213ss, dword_ptr),
        51 => s3!(a, o, vfnmadd213sd, qword_ptr),
        52 => s3!(a, o, vfnmadd231ss, dword_ptr),
        53 => s3!(a, o, vfnmadd231sd, qword_ptr),
        54 => s3!(a, o, vfnmsub132ss, dword_ptr),
        55 => s3!(a, o, vfnmsub132sd, qword_ptr),
        56 => s3!(a, o, vfnmsub213ss, dword_ptr),
        57 => s3!(a, o, vfnmsub213sd, qword_ptr),
        58 => s3!(a, o, vfnmsub231ss, dword_ptr),
        _ => s3!(a, o, vfnmsub231sd, qword_ptr),
    });
    let mut c = case(r, insn, Flavor::Fp);
    one_nan_per_element(&mut c);
    c
}

#[test]
fn random_fma_instructions_match_the_host() {
    if !host_has("FMA", &["avx", "fma"]) {
        return;
    }
    run_family(0x9b05_688c_2b3e_6c1f, cases(10000), 60, random_fma);
}

// ----------------------------------------------------------------- F16C

fn random_f16c(r: &mut Rng) -> Case {
    let o = Ops::new(r);
    let (x, y, uo) = (o.x, o.y, o.un);
    let imm = o.imm & 7;
    let insn = asm1(|a| match (r.next() % 2, o.wide, o.mem) {
        (0, true, true) => a.vcvtph2ps(y[0], xmmword_ptr(rbp + uo)),
        (0, true, false) => a.vcvtph2ps(y[0], x[1]),
        (0, false, true) => a.vcvtph2ps(x[0], qword_ptr(rbp + uo)),
        (0, false, false) => a.vcvtph2ps(x[0], x[1]),
        (_, true, true) => a.vcvtps2ph(xmmword_ptr(rbp + uo), y[1], imm),
        (_, true, false) => a.vcvtps2ph(x[0], y[1], imm),
        (_, false, true) => a.vcvtps2ph(qword_ptr(rbp + uo), x[1], imm),
        (_, false, false) => a.vcvtps2ph(x[0], x[1], imm),
    });
    let mut c = case(r, insn, Flavor::Round);
    // Half-precision inputs: random halves (every class) now and then.
    if r.next().is_multiple_of(2) {
        for q in c.image[17..].iter_mut() {
            *q = r.next();
        }
        for b in c.mem[..OPS_END as usize].iter_mut() {
            *b = r.next() as u8;
        }
    }
    c
}

#[test]
fn random_f16c_conversions_match_the_host() {
    if !host_has("F16C", &["avx", "f16c"]) {
        return;
    }
    run_family(0x1f83_d9ab_fb41_bd6b, cases(6000), 2, random_f16c);
}

// --------------------------------------------------------------- gathers

fn random_gather(r: &mut Rng) -> Case {
    // Three distinct registers: destination, index, mask.
    let mut regs = [0usize; 3];
    regs[0] = (r.next() % 16) as usize;
    loop {
        regs[1] = (r.next() % 16) as usize;
        if regs[1] != regs[0] {
            break;
        }
    }
    loop {
        regs[2] = (r.next() % 16) as usize;
        if regs[2] != regs[0] && regs[2] != regs[1] {
            break;
        }
    }
    const X: [AsmRegisterXmm; 16] = [
        xmm0, xmm1, xmm2, xmm3, xmm4, xmm5, xmm6, xmm7, xmm8, xmm9, xmm10, xmm11, xmm12, xmm13,
        xmm14, xmm15,
    ];
    const Y: [AsmRegisterYmm; 16] = [
        ymm0, ymm1, ymm2, ymm3, ymm4, ymm5, ymm6, ymm7, ymm8, ymm9, ymm10, ymm11, ymm12, ymm13,
        ymm14, ymm15,
    ];
    let (d, i, m) = (regs[0], regs[1], regs[2]);
    let scale = r.pick(&[1, 2, 4, 8]);
    let disp = 96i32;
    let wide = r.next() & 1 == 0;
    let k = r.next() % 8;
    let insn = asm1(|a| match (k, wide) {
        (0, true) => a.vgatherdps_3(Y[d], ptr(rbp + Y[i] * scale + disp), Y[m]),
        (0, false) => a.vgatherdps_3(X[d], ptr(rbp + X[i] * scale + disp), X[m]),
        (1, true) => a.vgatherdpd_3(Y[d], ptr(rbp + X[i] * scale + disp), Y[m]),
        (1, false) => a.vgatherdpd_3(X[d], ptr(rbp + X[i] * scale + disp), X[m]),
        (2, true) => a.vgatherqps_3(X[d], ptr(rbp + Y[i] * scale + disp), X[m]),
        (2, false) => a.vgatherqps_3(X[d], ptr(rbp + X[i] * scale + disp), X[m]),
        (3, true) => a.vgatherqpd_3(Y[d], ptr(rbp + Y[i] * scale + disp), Y[m]),
        (3, false) => a.vgatherqpd_3(X[d], ptr(rbp + X[i] * scale + disp), X[m]),
        (4, true) => a.vpgatherdd_3(Y[d], ptr(rbp + Y[i] * scale + disp), Y[m]),
        (4, false) => a.vpgatherdq_3(X[d], ptr(rbp + X[i] * scale + disp), X[m]),
        (5, true) => a.vpgatherdq_3(Y[d], ptr(rbp + X[i] * scale + disp), Y[m]),
        (5, false) => a.vpgatherdd_3(X[d], ptr(rbp + X[i] * scale + disp), X[m]),
        (6, true) => a.vpgatherqd_3(X[d], ptr(rbp + Y[i] * scale + disp), X[m]),
        (6, false) => a.vpgatherqq_3(X[d], ptr(rbp + X[i] * scale + disp), X[m]),
        (_, true) => a.vpgatherqq_3(Y[d], ptr(rbp + Y[i] * scale + disp), Y[m]),
        (_, false) => a.vpgatherqd_3(X[d], ptr(rbp + X[i] * scale + disp), X[m]),
    });
    let mut c = case(r, insn, Flavor::Int);
    // Index elements within the memory: -8..16 elements of `scale` bytes
    // around the displacement, as dwords or qwords.
    let qword_index = matches!(k, 2 | 3 | 6 | 7);
    for q in 0..4 {
        let mut v = 0u64;
        let pick = |r: &mut Rng| ((r.next() % 24) as i64 - 8) as u64;
        if qword_index {
            v = pick(r);
        } else {
            v |= pick(r) & 0xffff_ffff;
            v |= pick(r) << 32;
        }
        c.image[17 + 4 * i + q] = v;
    }
    // Mask: sign bits random.
    for q in 0..4 {
        c.image[17 + 4 * m + q] = r.next();
    }
    c
}

#[test]
fn random_gathers_match_the_host() {
    if !host_has("AVX2 gathers", &["avx2"]) {
        return;
    }
    run_family(0x5be0_cd19_137e_2179, cases(4000), 8, random_gather);
}
