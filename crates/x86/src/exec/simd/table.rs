//! The lookup from mnemonic (legacy or VEX) to lane operation.

use iced_x86::Mnemonic;

use super::{fp, fpx, int, sse41, ssse3, LaneFn, LaneOp};

/// A two-source m128 operation applied per lane.
fn bin(name: Mnemonic, f: LaneFn) -> LaneOp {
    LaneOp {
        f,
        mem: 16,
        unary: false,
        per_lane: true,
        name,
    }
}

/// A one-source (`b`) m128 operation applied per lane.
fn un(name: Mnemonic, f: LaneFn) -> LaneOp {
    LaneOp {
        unary: true,
        ..bin(name, f)
    }
}

/// A scalar operation: `a` with its low element replaced; `mem` bytes.
fn scalar(name: Mnemonic, f: LaneFn, mem: u8) -> LaneOp {
    LaneOp {
        f,
        mem,
        unary: false,
        per_lane: false,
        name,
    }
}

/// A one-source operation whose 256-bit form crosses lanes; `mem` bytes.
fn whole(name: Mnemonic, f: LaneFn, mem: u8) -> LaneOp {
    LaneOp {
        f,
        mem,
        unary: true,
        per_lane: false,
        name,
    }
}

/// The lane operation of a legacy SSE mnemonic or of its VEX twin.
pub(crate) fn lane_op(m: Mnemonic) -> Option<LaneOp> {
    use Mnemonic::*;
    Some(match m {
        // SSE/SSE2 integer and logic.
        Pxor | Vpxor => bin(Pxor, int::pxor),
        Xorps | Vxorps => bin(Xorps, int::pxor),
        Xorpd | Vxorpd => bin(Xorpd, int::pxor),
        Por | Vpor => bin(Por, int::por),
        Orps | Vorps => bin(Orps, int::por),
        Orpd | Vorpd => bin(Orpd, int::por),
        Pand | Vpand => bin(Pand, int::pand),
        Andps | Vandps => bin(Andps, int::pand),
        Andpd | Vandpd => bin(Andpd, int::pand),
        Pandn | Vpandn => bin(Pandn, int::pandn),
        Andnps | Vandnps => bin(Andnps, int::pandn),
        Andnpd | Vandnpd => bin(Andnpd, int::pandn),
        Pcmpeqb | Vpcmpeqb => bin(Pcmpeqb, int::pcmpeqb),
        Pcmpeqw | Vpcmpeqw => bin(Pcmpeqw, int::pcmpeqw),
        Pcmpeqd | Vpcmpeqd => bin(Pcmpeqd, int::pcmpeqd),
        Pcmpgtb | Vpcmpgtb => bin(Pcmpgtb, int::pcmpgtb),
        Pcmpgtw | Vpcmpgtw => bin(Pcmpgtw, int::pcmpgtw),
        Pcmpgtd | Vpcmpgtd => bin(Pcmpgtd, int::pcmpgtd),
        Paddb | Vpaddb => bin(Paddb, int::paddb),
        Paddw | Vpaddw => bin(Paddw, int::paddw),
        Paddd | Vpaddd => bin(Paddd, int::paddd),
        Paddq | Vpaddq => bin(Paddq, int::paddq),
        Psubb | Vpsubb => bin(Psubb, int::psubb),
        Psubw | Vpsubw => bin(Psubw, int::psubw),
        Psubd | Vpsubd => bin(Psubd, int::psubd),
        Psubq | Vpsubq => bin(Psubq, int::psubq),
        Pminub | Vpminub => bin(Pminub, int::pminub),
        Pmaxub | Vpmaxub => bin(Pmaxub, int::pmaxub),
        Pminsw | Vpminsw => bin(Pminsw, int::pminsw),
        Pmaxsw | Vpmaxsw => bin(Pmaxsw, int::pmaxsw),
        Pavgb | Vpavgb => bin(Pavgb, int::pavgb),
        Pavgw | Vpavgw => bin(Pavgw, int::pavgw),
        Paddsb | Vpaddsb => bin(Paddsb, int::paddsb),
        Psubsb | Vpsubsb => bin(Psubsb, int::psubsb),
        Paddsw | Vpaddsw => bin(Paddsw, int::paddsw),
        Psubsw | Vpsubsw => bin(Psubsw, int::psubsw),
        Paddusb | Vpaddusb => bin(Paddusb, int::paddusb),
        Psubusb | Vpsubusb => bin(Psubusb, int::psubusb),
        Paddusw | Vpaddusw => bin(Paddusw, int::paddusw),
        Psubusw | Vpsubusw => bin(Psubusw, int::psubusw),
        Pmullw | Vpmullw => bin(Pmullw, int::pmullw),
        Pmulhw | Vpmulhw => bin(Pmulhw, int::pmulhw),
        Pmulhuw | Vpmulhuw => bin(Pmulhuw, int::pmulhuw),
        Pmuludq | Vpmuludq => bin(Pmuludq, int::pmuludq),
        Pmaddwd | Vpmaddwd => bin(Pmaddwd, int::pmaddwd),
        Psadbw | Vpsadbw => bin(Psadbw, int::psadbw),
        Packsswb | Vpacksswb => bin(Packsswb, int::packsswb),
        Packuswb | Vpackuswb => bin(Packuswb, int::packuswb),
        Packssdw | Vpackssdw => bin(Packssdw, int::packssdw),
        Punpcklbw | Vpunpcklbw => bin(Punpcklbw, int::punpcklbw),
        Punpcklwd | Vpunpcklwd => bin(Punpcklwd, int::punpcklwd),
        Punpckldq | Vpunpckldq => bin(Punpckldq, int::punpckldq),
        Punpcklqdq | Vpunpcklqdq => bin(Punpcklqdq, int::punpcklqdq),
        Punpckhbw | Vpunpckhbw => bin(Punpckhbw, int::punpckhbw),
        Punpckhwd | Vpunpckhwd => bin(Punpckhwd, int::punpckhwd),
        Punpckhdq | Vpunpckhdq => bin(Punpckhdq, int::punpckhdq),
        Punpckhqdq | Vpunpckhqdq => bin(Punpckhqdq, int::punpckhqdq),
        Psllw | Vpsllw => bin(Psllw, int::psllw),
        Pslld | Vpslld => bin(Pslld, int::pslld),
        Psllq | Vpsllq => bin(Psllq, int::psllq),
        Psrlw | Vpsrlw => bin(Psrlw, int::psrlw),
        Psrld | Vpsrld => bin(Psrld, int::psrld),
        Psrlq | Vpsrlq => bin(Psrlq, int::psrlq),
        Psraw | Vpsraw => bin(Psraw, int::psraw),
        Psrad | Vpsrad => bin(Psrad, int::psrad),
        Pslldq | Vpslldq => bin(Pslldq, int::pslldq),
        Psrldq | Vpsrldq => bin(Psrldq, int::psrldq),
        Pshufd | Vpshufd => un(Pshufd, int::pshufd),
        Pshuflw | Vpshuflw => un(Pshuflw, int::pshuflw),
        Pshufhw | Vpshufhw => un(Pshufhw, int::pshufhw),

        // SSE/SSE2 floating point.
        Addps | Vaddps => bin(Addps, fp::addps),
        Addpd | Vaddpd => bin(Addpd, fp::addpd),
        Subps | Vsubps => bin(Subps, fp::subps),
        Subpd | Vsubpd => bin(Subpd, fp::subpd),
        Mulps | Vmulps => bin(Mulps, fp::mulps),
        Mulpd | Vmulpd => bin(Mulpd, fp::mulpd),
        Divps | Vdivps => bin(Divps, fp::divps),
        Divpd | Vdivpd => bin(Divpd, fp::divpd),
        Minps | Vminps => bin(Minps, fp::minps),
        Minpd | Vminpd => bin(Minpd, fp::minpd),
        Maxps | Vmaxps => bin(Maxps, fp::maxps),
        Maxpd | Vmaxpd => bin(Maxpd, fp::maxpd),
        Sqrtps | Vsqrtps => un(Sqrtps, fp::sqrtps),
        Sqrtpd | Vsqrtpd => un(Sqrtpd, fp::sqrtpd),
        Rcpps | Vrcpps => un(Rcpps, fp::rcpps),
        Rsqrtps | Vrsqrtps => un(Rsqrtps, fp::rsqrtps),
        Addss | Vaddss => scalar(Addss, fp::addss, 4),
        Addsd | Vaddsd => scalar(Addsd, fp::addsd, 8),
        Subss | Vsubss => scalar(Subss, fp::subss, 4),
        Subsd | Vsubsd => scalar(Subsd, fp::subsd, 8),
        Mulss | Vmulss => scalar(Mulss, fp::mulss, 4),
        Mulsd | Vmulsd => scalar(Mulsd, fp::mulsd, 8),
        Divss | Vdivss => scalar(Divss, fp::divss, 4),
        Divsd | Vdivsd => scalar(Divsd, fp::divsd, 8),
        Minss | Vminss => scalar(Minss, fp::minss, 4),
        Minsd | Vminsd => scalar(Minsd, fp::minsd, 8),
        Maxss | Vmaxss => scalar(Maxss, fp::maxss, 4),
        Maxsd | Vmaxsd => scalar(Maxsd, fp::maxsd, 8),
        Sqrtss | Vsqrtss => scalar(Sqrtss, fp::sqrtss, 4),
        Sqrtsd | Vsqrtsd => scalar(Sqrtsd, fp::sqrtsd, 8),
        Rcpss | Vrcpss => scalar(Rcpss, fp::rcpss, 4),
        Rsqrtss | Vrsqrtss => scalar(Rsqrtss, fp::rsqrtss, 4),
        Cmpps => bin(Cmpps, fp::cmpps),
        Cmppd => bin(Cmppd, fp::cmppd),
        Cmpss => scalar(Cmpss, fp::cmpss, 4),
        Cmpsd => scalar(Cmpsd, fp::cmpsd, 8),
        Vcmpps => bin(Cmpps, fp::vcmpps),
        Vcmppd => bin(Cmppd, fp::vcmppd),
        Vcmpss => scalar(Cmpss, fp::vcmpss, 4),
        Vcmpsd => scalar(Cmpsd, fp::vcmpsd, 8),
        Cvtdq2ps | Vcvtdq2ps => un(Cvtdq2ps, fp::cvtdq2ps),
        Cvtps2dq | Vcvtps2dq => un(Cvtps2dq, fp::cvtps2dq),
        Cvttps2dq | Vcvttps2dq => un(Cvttps2dq, fp::cvttps2dq),
        Cvtdq2pd | Vcvtdq2pd => whole(Cvtdq2pd, fp::cvtdq2pd, 8),
        Cvtps2pd | Vcvtps2pd => whole(Cvtps2pd, fp::cvtps2pd, 8),
        Cvtpd2ps | Vcvtpd2ps => whole(Cvtpd2ps, fp::cvtpd2ps, 16),
        Cvtpd2dq | Vcvtpd2dq => whole(Cvtpd2dq, fp::cvtpd2dq, 16),
        Cvttpd2dq | Vcvttpd2dq => whole(Cvttpd2dq, fp::cvttpd2dq, 16),
        Cvtss2sd | Vcvtss2sd => scalar(Cvtss2sd, fp::cvtss2sd, 4),
        Cvtsd2ss | Vcvtsd2ss => scalar(Cvtsd2ss, fp::cvtsd2ss, 8),
        Shufps | Vshufps => bin(Shufps, fp::shufps),
        Shufpd | Vshufpd => bin(Shufpd, fp::shufpd),
        Unpcklps | Vunpcklps => bin(Unpcklps, fp::unpcklps),
        Unpckhps | Vunpckhps => bin(Unpckhps, fp::unpckhps),
        Unpcklpd | Vunpcklpd => bin(Unpcklpd, fp::unpcklpd),
        Unpckhpd | Vunpckhpd => bin(Unpckhpd, fp::unpckhpd),

        // SSE3.
        Addsubps | Vaddsubps => bin(Addsubps, fpx::addsubps),
        Addsubpd | Vaddsubpd => bin(Addsubpd, fpx::addsubpd),
        Haddps | Vhaddps => bin(Haddps, fpx::haddps),
        Haddpd | Vhaddpd => bin(Haddpd, fpx::haddpd),
        Hsubps | Vhsubps => bin(Hsubps, fpx::hsubps),
        Hsubpd | Vhsubpd => bin(Hsubpd, fpx::hsubpd),
        Movddup | Vmovddup => LaneOp {
            mem: 8,
            ..un(Movddup, fpx::movddup)
        },
        Movshdup | Vmovshdup => un(Movshdup, fpx::movshdup),
        Movsldup | Vmovsldup => un(Movsldup, fpx::movsldup),

        // SSSE3.
        Pabsb | Vpabsb => un(Pabsb, ssse3::pabsb),
        Pabsw | Vpabsw => un(Pabsw, ssse3::pabsw),
        Pabsd | Vpabsd => un(Pabsd, ssse3::pabsd),
        Palignr | Vpalignr => bin(Palignr, ssse3::palignr),
        Phaddw | Vphaddw => bin(Phaddw, ssse3::phaddw),
        Phaddd | Vphaddd => bin(Phaddd, ssse3::phaddd),
        Phaddsw | Vphaddsw => bin(Phaddsw, ssse3::phaddsw),
        Phsubw | Vphsubw => bin(Phsubw, ssse3::phsubw),
        Phsubd | Vphsubd => bin(Phsubd, ssse3::phsubd),
        Phsubsw | Vphsubsw => bin(Phsubsw, ssse3::phsubsw),
        Pmaddubsw | Vpmaddubsw => bin(Pmaddubsw, ssse3::pmaddubsw),
        Pmulhrsw | Vpmulhrsw => bin(Pmulhrsw, ssse3::pmulhrsw),
        Pshufb | Vpshufb => bin(Pshufb, ssse3::pshufb),
        Psignb | Vpsignb => bin(Psignb, ssse3::psignb),
        Psignw | Vpsignw => bin(Psignw, ssse3::psignw),
        Psignd | Vpsignd => bin(Psignd, ssse3::psignd),

        // SSE4.1 / SSE4.2.
        Blendps | Vblendps => bin(Blendps, sse41::blendps),
        Blendpd | Vblendpd => bin(Blendpd, sse41::blendpd),
        Blendvps | Vblendvps => bin(Blendvps, sse41::blendvps),
        Blendvpd | Vblendvpd => bin(Blendvpd, sse41::blendvpd),
        Pblendvb | Vpblendvb => bin(Pblendvb, sse41::pblendvb),
        Pblendw | Vpblendw => bin(Pblendw, sse41::pblendw),
        Dpps | Vdpps => bin(Dpps, fpx::dpps),
        Dppd | Vdppd => scalar(Dppd, fpx::dppd, 16),
        Insertps | Vinsertps => scalar(Insertps, fpx::insertps, 4),
        Mpsadbw | Vmpsadbw => bin(Mpsadbw, sse41::mpsadbw),
        Packusdw | Vpackusdw => bin(Packusdw, sse41::packusdw),
        Pcmpeqq | Vpcmpeqq => bin(Pcmpeqq, sse41::pcmpeqq),
        Pcmpgtq | Vpcmpgtq => bin(Pcmpgtq, sse41::pcmpgtq),
        Phminposuw | Vphminposuw => whole(Phminposuw, sse41::phminposuw, 16),
        Pmaxsb | Vpmaxsb => bin(Pmaxsb, sse41::pmaxsb),
        Pmaxsd | Vpmaxsd => bin(Pmaxsd, sse41::pmaxsd),
        Pmaxuw | Vpmaxuw => bin(Pmaxuw, sse41::pmaxuw),
        Pmaxud | Vpmaxud => bin(Pmaxud, sse41::pmaxud),
        Pminsb | Vpminsb => bin(Pminsb, sse41::pminsb),
        Pminsd | Vpminsd => bin(Pminsd, sse41::pminsd),
        Pminuw | Vpminuw => bin(Pminuw, sse41::pminuw),
        Pminud | Vpminud => bin(Pminud, sse41::pminud),
        Pmuldq | Vpmuldq => bin(Pmuldq, sse41::pmuldq),
        Pmulld | Vpmulld => bin(Pmulld, sse41::pmulld),
        Pmovsxbw | Vpmovsxbw => whole(Pmovsxbw, sse41::pmovsxbw, 8),
        Pmovsxbd | Vpmovsxbd => whole(Pmovsxbd, sse41::pmovsxbd, 4),
        Pmovsxbq | Vpmovsxbq => whole(Pmovsxbq, sse41::pmovsxbq, 2),
        Pmovsxwd | Vpmovsxwd => whole(Pmovsxwd, sse41::pmovsxwd, 8),
        Pmovsxwq | Vpmovsxwq => whole(Pmovsxwq, sse41::pmovsxwq, 4),
        Pmovsxdq | Vpmovsxdq => whole(Pmovsxdq, sse41::pmovsxdq, 8),
        Pmovzxbw | Vpmovzxbw => whole(Pmovzxbw, sse41::pmovzxbw, 8),
        Pmovzxbd | Vpmovzxbd => whole(Pmovzxbd, sse41::pmovzxbd, 4),
        Pmovzxbq | Vpmovzxbq => whole(Pmovzxbq, sse41::pmovzxbq, 2),
        Pmovzxwd | Vpmovzxwd => whole(Pmovzxwd, sse41::pmovzxwd, 8),
        Pmovzxwq | Vpmovzxwq => whole(Pmovzxwq, sse41::pmovzxwq, 4),
        Pmovzxdq | Vpmovzxdq => whole(Pmovzxdq, sse41::pmovzxdq, 8),
        Roundps | Vroundps => un(Roundps, fpx::roundps),
        Roundpd | Vroundpd => un(Roundpd, fpx::roundpd),
        Roundss | Vroundss => scalar(Roundss, fpx::roundss, 4),
        Roundsd | Vroundsd => scalar(Roundsd, fpx::roundsd, 8),
        _ => return None,
    })
}

/// The imm8 the 128-bit lane `lane` (0 or 1) of a VEX.256 form sees:
/// the operations whose imm8 holds one field per element of the whole
/// register take the high lane's fields from the upper bits.
#[allow(dead_code)]
pub(crate) fn lane_imm(m: Mnemonic, imm: u8, lane: usize) -> u8 {
    use Mnemonic::*;
    let shift = match m {
        Blendps | Vblendps => 4,
        Blendpd | Vblendpd | Shufpd | Vshufpd => 2,
        Mpsadbw | Vmpsadbw => 3,
        _ => 0,
    };
    if lane == 0 {
        imm
    } else {
        imm >> shift
    }
}
