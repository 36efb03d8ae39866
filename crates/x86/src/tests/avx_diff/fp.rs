//! AVX floating point: arithmetic, compares (all 32 predicates), logic,
//! blends, shuffles, unpacks, permutes, rounding, dot products,
//! horizontal and alternating add/sub, conversions, flag compares and
//! sign masks; VEX.128 and VEX.256, register and memory forms.

use iced_x86::code_asm::*;

use super::*;

/// Three-operand `d, s1, s2/m` at the chosen width, optional imm8.
macro_rules! v3 {
    ($a:ident, $o:ident, $f:ident $(, $imm:expr)?) => {
        match ($o.wide, $o.mem) {
            (true, true) => $a.$f($o.y[0], $o.y[1], ymmword_ptr(rbp + $o.un) $(, $imm)?),
            (true, false) => $a.$f($o.y[0], $o.y[1], $o.y[2] $(, $imm)?),
            (false, true) => $a.$f($o.x[0], $o.x[1], xmmword_ptr(rbp + $o.un) $(, $imm)?),
            (false, false) => $a.$f($o.x[0], $o.x[1], $o.x[2] $(, $imm)?),
        }
    };
}
pub(super) use v3;

/// Two-operand `d, s/m` at the chosen width, optional imm8.
macro_rules! v2 {
    ($a:ident, $o:ident, $f:ident $(, $imm:expr)?) => {
        match ($o.wide, $o.mem) {
            (true, true) => $a.$f($o.y[0], ymmword_ptr(rbp + $o.un) $(, $imm)?),
            (true, false) => $a.$f($o.y[0], $o.y[1] $(, $imm)?),
            (false, true) => $a.$f($o.x[0], xmmword_ptr(rbp + $o.un) $(, $imm)?),
            (false, false) => $a.$f($o.x[0], $o.x[1] $(, $imm)?),
        }
    };
}
pub(super) use v2;

/// Scalar `xd, xs1, xs2/mN`, optional imm8.
macro_rules! s3 {
    ($a:ident, $o:ident, $f:ident, $ptr:ident $(, $imm:expr)?) => {
        if $o.mem {
            $a.$f($o.x[0], $o.x[1], $ptr(rbp + $o.un) $(, $imm)?)
        } else {
            $a.$f($o.x[0], $o.x[1], $o.x[2] $(, $imm)?)
        }
    };
}
#[allow(unused_imports)]
pub(super) use s3;

const G32: [AsmRegister32; 6] = [eax, ecx, edx, ebx, esi, r9d];
const G64: [AsmRegister64; 6] = [rax, rcx, rdx, rbx, rsi, r9];

fn random_fp(r: &mut Rng) -> Case {
    let o = Ops::new(r);
    let g32 = r.pick(&G32);
    let g64 = r.pick(&G64);
    let mut flavor = Flavor::Fp;
    let k = r.next() % 74;
    if matches!(k, 50..=57) {
        flavor = Flavor::Round;
    }
    let insn = asm1(|a| match k {
        0 => v3!(a, o, vaddps),
        1 => v3!(a, o, vaddpd),
        2 => v3!(a, o, vsubps),
        3 => v3!(a, o, vsubpd),
        4 => v3!(a, o, vmulps),
        5 => v3!(a, o, vmulpd),
        6 => v3!(a, o, vdivps),
        7 => v3!(a, o, vdivpd),
        8 => v3!(a, o, vminps),
        9 => v3!(a, o, vmaxpd),
        10 => v2!(a, o, vsqrtps),
        11 => v2!(a, o, vsqrtpd),
        12 => s3!(a, o, vaddss, dword_ptr),
        13 => s3!(a, o, vsubsd, qword_ptr),
        14 => s3!(a, o, vmulss, dword_ptr),
        15 => s3!(a, o, vdivsd, qword_ptr),
        16 => s3!(a, o, vminsd, qword_ptr),
        17 => s3!(a, o, vmaxss, dword_ptr),
        18 => s3!(a, o, vsqrtss, dword_ptr),
        19 => s3!(a, o, vsqrtsd, qword_ptr),
        20 => v3!(a, o, vcmpps, o.imm & 31),
        21 => v3!(a, o, vcmppd, o.imm & 31),
        22 => s3!(a, o, vcmpss, dword_ptr, o.imm & 31),
        23 => s3!(a, o, vcmpsd, qword_ptr, o.imm & 31),
        24 => v3!(a, o, vandps),
        25 => v3!(a, o, vandnpd),
        26 => v3!(a, o, vorps),
        27 => v3!(a, o, vxorpd),
        28 => v3!(a, o, vblendps, o.imm),
        29 => v3!(a, o, vblendpd, o.imm & 15),
        30 => {
            let sel = o.x[2];
            let ysel = o.y[2];
            match (o.wide, o.mem) {
                (true, true) => a.vblendvps(o.y[0], o.y[1], ymmword_ptr(rbp + o.un), ysel),
                (true, false) => a.vblendvpd(o.y[0], o.y[1], o.y[0], ysel),
                (false, true) => a.vblendvpd(o.x[0], o.x[1], xmmword_ptr(rbp + o.un), sel),
                (false, false) => a.vblendvps(o.x[0], o.x[1], o.x[0], sel),
            }
        }
        31 => v3!(a, o, vshufps, o.imm),
        32 => v3!(a, o, vshufpd, o.imm & 15),
        33 => v3!(a, o, vunpcklps),
        34 => v3!(a, o, vunpckhpd),
        35 => v3!(a, o, vpermilps),
        36 => v3!(a, o, vpermilpd),
        37 => v2!(a, o, vpermilps, o.imm),
        38 => v2!(a, o, vpermilpd, o.imm & 15),
        39 => v3!(a, o, vaddsubps),
        40 => v3!(a, o, vaddsubpd),
        41 => v3!(a, o, vhaddps),
        42 => v3!(a, o, vhsubpd),
        43 => v3!(a, o, vdpps, o.imm),
        44 => {
            if o.mem {
                a.vdppd(o.x[0], o.x[1], xmmword_ptr(rbp + o.un), o.imm)
            } else {
                a.vdppd(o.x[0], o.x[1], o.x[2], o.imm)
            }
        }
        45 => v2!(a, o, vroundps, o.imm & 15),
        46 => v2!(a, o, vroundpd, o.imm & 15),
        47 => s3!(a, o, vroundss, dword_ptr, o.imm & 15),
        48 => s3!(a, o, vroundsd, qword_ptr, o.imm & 15),
        49 => v2!(a, o, vcvtdq2ps),
        // Rounding per MXCSR.RC.
        50 => v2!(a, o, vcvtps2dq),
        51 => v2!(a, o, vcvttps2dq),
        52 => match (o.wide, o.mem) {
            (true, true) => a.vcvtpd2dq(o.x[0], ymmword_ptr(rbp + o.un)),
            (true, false) => a.vcvtpd2dq(o.x[0], o.y[1]),
            (false, true) => a.vcvtpd2dq(o.x[0], xmmword_ptr(rbp + o.un)),
            (false, false) => a.vcvtpd2dq(o.x[0], o.x[1]),
        },
        53 => match (o.wide, o.mem) {
            (true, true) => a.vcvttpd2dq(o.x[0], ymmword_ptr(rbp + o.un)),
            (true, false) => a.vcvttpd2dq(o.x[0], o.y[1]),
            (false, true) => a.vcvttpd2dq(o.x[0], xmmword_ptr(rbp + o.un)),
            (false, false) => a.vcvttpd2dq(o.x[0], o.x[1]),
        },
        54 => match (o.mem, o.wide) {
            (true, true) => a.vcvtss2si(g64, dword_ptr(rbp + o.un)),
            (true, false) => a.vcvtsd2si(g32, qword_ptr(rbp + o.un)),
            (false, true) => a.vcvtsd2si(g64, o.x[1]),
            (false, false) => a.vcvtss2si(g32, o.x[1]),
        },
        55 => match (o.mem, o.wide) {
            (true, true) => a.vcvttss2si(g32, dword_ptr(rbp + o.un)),
            (true, false) => a.vcvttsd2si(g64, qword_ptr(rbp + o.un)),
            (false, true) => a.vcvttsd2si(g32, o.x[1]),
            (false, false) => a.vcvttss2si(g64, o.x[1]),
        },
        56 => v2!(a, o, vroundps, 4 | (o.imm & 8)),
        57 => s3!(a, o, vroundsd, qword_ptr, 4 | (o.imm & 8)),
        58 => match (o.wide, o.mem) {
            (true, true) => a.vcvtpd2ps(o.x[0], ymmword_ptr(rbp + o.un)),
            (true, false) => a.vcvtpd2ps(o.x[0], o.y[1]),
            (false, true) => a.vcvtpd2ps(o.x[0], xmmword_ptr(rbp + o.un)),
            (false, false) => a.vcvtpd2ps(o.x[0], o.x[1]),
        },
        59 => match (o.wide, o.mem) {
            (true, true) => a.vcvtps2pd(o.y[0], xmmword_ptr(rbp + o.un)),
            (true, false) => a.vcvtps2pd(o.y[0], o.x[1]),
            (false, true) => a.vcvtps2pd(o.x[0], qword_ptr(rbp + o.un)),
            (false, false) => a.vcvtps2pd(o.x[0], o.x[1]),
        },
        60 => match (o.wide, o.mem) {
            (true, true) => a.vcvtdq2pd(o.y[0], xmmword_ptr(rbp + o.un)),
            (true, false) => a.vcvtdq2pd(o.y[0], o.x[1]),
            (false, true) => a.vcvtdq2pd(o.x[0], qword_ptr(rbp + o.un)),
            (false, false) => a.vcvtdq2pd(o.x[0], o.x[1]),
        },
        61 => match (o.mem, o.wide) {
            (true, true) => a.vcvtsi2ss(o.x[0], o.x[1], qword_ptr(rbp + o.un)),
            (true, false) => a.vcvtsi2sd(o.x[0], o.x[1], dword_ptr(rbp + o.un)),
            (false, true) => a.vcvtsi2sd(o.x[0], o.x[1], g64),
            (false, false) => a.vcvtsi2ss(o.x[0], o.x[1], g32),
        },
        62 => s3!(a, o, vcvtss2sd, dword_ptr),
        63 => s3!(a, o, vcvtsd2ss, qword_ptr),
        64 => match (o.mem, o.wide) {
            (true, true) => a.vcomiss(o.x[0], dword_ptr(rbp + o.un)),
            (true, false) => a.vucomisd(o.x[0], qword_ptr(rbp + o.un)),
            (false, true) => a.vcomisd(o.x[0], o.x[1]),
            (false, false) => a.vucomiss(o.x[0], o.x[1]),
        },
        65 => match o.wide {
            true => a.vmovmskps(g32, o.y[1]),
            false => a.vmovmskpd(g64, o.x[1]),
        },
        66 => v2!(a, o, vtestps),
        67 => v2!(a, o, vtestpd),
        68 => v2!(a, o, vptest),
        69 => v2!(a, o, vmovsldup),
        70 => v2!(a, o, vmovshdup),
        71 => match (o.wide, o.mem) {
            (true, true) => a.vmovddup(o.y[0], ymmword_ptr(rbp + o.un)),
            (true, false) => a.vmovddup(o.y[0], o.y[1]),
            (false, true) => a.vmovddup(o.x[0], qword_ptr(rbp + o.un)),
            (false, false) => a.vmovddup(o.x[0], o.x[1]),
        },
        72 => match (o.mem, o.wide) {
            (true, _) => a.vinsertps(o.x[0], o.x[1], dword_ptr(rbp + o.un), o.imm),
            (false, _) => a.vinsertps(o.x[0], o.x[1], o.x[2], o.imm),
        },
        _ => v3!(a, o, vminpd),
    });
    case(r, insn, flavor)
}

#[test]
fn random_avx_float_instructions_match_the_host() {
    if !host_has("AVX floating point", &["avx"]) {
        return;
    }
    run_family(0x3c6e_f372_fe94_f82b, cases(12000), 70, random_fp);
}
