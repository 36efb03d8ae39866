//! AVX/AVX2 integer instructions: every SSE2..SSE4.2 integer operation in
//! its VEX.128 form and (AVX2) its VEX.256 form, shifts by a vector count
//! and an immediate, widening moves, PEXTR/PINSR, PCMPxSTRx, and the
//! AVX2-only permutes, variable shifts, VPBLENDD.

use iced_x86::code_asm::*;

use super::fp::{v2, v3};
use super::*;

const G32: [AsmRegister32; 6] = [eax, ecx, edx, ebx, esi, r9d];
const G64: [AsmRegister64; 6] = [rax, rcx, rdx, rbx, rsi, r9];

/// `d, s, xmm/m128 count` shifts (the count is 128 bits at both widths).
macro_rules! vshift {
    ($a:ident, $o:ident, $f:ident) => {
        match ($o.wide, $o.mem) {
            (true, true) => $a.$f($o.y[0], $o.y[1], xmmword_ptr(rbp + $o.un)),
            (true, false) => $a.$f($o.y[0], $o.y[1], $o.x[2]),
            (false, true) => $a.$f($o.x[0], $o.x[1], xmmword_ptr(rbp + $o.un)),
            (false, false) => $a.$f($o.x[0], $o.x[1], $o.x[2]),
        }
    };
}

/// Widening `d, xmm/mN` (N half, quarter or eighth of the destination).
macro_rules! widen {
    ($a:ident, $o:ident, $f:ident, $narrow:ident, $wide:ident) => {
        match ($o.wide, $o.mem) {
            (true, true) => $a.$f($o.y[0], $wide(rbp + $o.un)),
            (true, false) => $a.$f($o.y[0], $o.x[1]),
            (false, true) => $a.$f($o.x[0], $narrow(rbp + $o.un)),
            (false, false) => $a.$f($o.x[0], $o.x[1]),
        }
    };
}

fn random_int(r: &mut Rng, avx2: bool) -> Case {
    let mut o = Ops::new(r);
    // Without AVX2 only the VEX.128 forms exist.
    o.wide &= avx2;
    let g32 = r.pick(&G32);
    let g64 = r.pick(&G64);
    let mut flavor = Flavor::Int;
    let n = if avx2 { 112 } else { 100 };
    let k = r.next() % n;
    if matches!(k, 92..=95) {
        flavor = Flavor::Str;
    }
    let imm = o.imm;
    let insn = asm1(|a| match k {
        0 => v3!(a, o, vpaddb),
        1 => v3!(a, o, vpaddw),
        2 => v3!(a, o, vpaddd),
        3 => v3!(a, o, vpaddq),
        4 => v3!(a, o, vpsubb),
        5 => v3!(a, o, vpsubw),
        6 => v3!(a, o, vpsubd),
        7 => v3!(a, o, vpsubq),
        8 => v3!(a, o, vpaddsb),
        9 => v3!(a, o, vpaddsw),
        10 => v3!(a, o, vpaddusb),
        11 => v3!(a, o, vpaddusw),
        12 => v3!(a, o, vpsubsb),
        13 => v3!(a, o, vpsubsw),
        14 => v3!(a, o, vpsubusb),
        15 => v3!(a, o, vpsubusw),
        16 => v3!(a, o, vpmullw),
        17 => v3!(a, o, vpmulhw),
        18 => v3!(a, o, vpmulhuw),
        19 => v3!(a, o, vpmulld),
        20 => v3!(a, o, vpmuludq),
        21 => v3!(a, o, vpmuldq),
        22 => v3!(a, o, vpmaddwd),
        23 => v3!(a, o, vpmaddubsw),
        24 => v3!(a, o, vpsadbw),
        25 => v3!(a, o, vpavgb),
        26 => v3!(a, o, vpavgw),
        27 => v3!(a, o, vpminub),
        28 => v3!(a, o, vpminsw),
        29 => v3!(a, o, vpminsb),
        30 => v3!(a, o, vpminud),
        31 => v3!(a, o, vpmaxsd),
        32 => v3!(a, o, vpmaxuw),
        33 => v3!(a, o, vpcmpeqb),
        34 => v3!(a, o, vpcmpeqw),
        35 => v3!(a, o, vpcmpeqd),
        36 => v3!(a, o, vpcmpeqq),
        37 => v3!(a, o, vpcmpgtb),
        38 => v3!(a, o, vpcmpgtw),
        39 => v3!(a, o, vpcmpgtd),
        40 => v3!(a, o, vpcmpgtq),
        41 => v3!(a, o, vpand),
        42 => v3!(a, o, vpandn),
        43 => v3!(a, o, vpor),
        44 => v3!(a, o, vpxor),
        45 => v3!(a, o, vpunpcklbw),
        46 => v3!(a, o, vpunpckhwd),
        47 => v3!(a, o, vpunpckldq),
        48 => v3!(a, o, vpunpckhqdq),
        49 => v3!(a, o, vpacksswb),
        50 => v3!(a, o, vpackuswb),
        51 => v3!(a, o, vpackssdw),
        52 => v3!(a, o, vpackusdw),
        53 => v3!(a, o, vpshufb),
        54 => v2!(a, o, vpshufd, imm),
        55 => v2!(a, o, vpshufhw, imm),
        56 => v2!(a, o, vpshuflw, imm),
        57 => v3!(a, o, vpalignr, imm & 0x3f),
        58 => vshift!(a, o, vpsllw),
        59 => vshift!(a, o, vpslld),
        60 => vshift!(a, o, vpsllq),
        61 => vshift!(a, o, vpsrlw),
        62 => vshift!(a, o, vpsrld),
        63 => vshift!(a, o, vpsrlq),
        64 => vshift!(a, o, vpsraw),
        65 => vshift!(a, o, vpsrad),
        66 => match o.wide {
            true => a.vpsllw(o.y[0], o.y[1], imm & 0x1f),
            false => a.vpsrad(o.x[0], o.x[1], imm & 0x3f),
        },
        67 => match o.wide {
            true => a.vpsrlq(o.y[0], o.y[1], imm & 0x7f),
            false => a.vpslld(o.x[0], o.x[1], imm & 0x3f),
        },
        68 => match o.wide {
            true => a.vpslldq(o.y[0], o.y[1], imm & 0x1f),
            false => a.vpsrldq(o.x[0], o.x[1], imm & 0x1f),
        },
        69 => v2!(a, o, vpabsb),
        70 => v2!(a, o, vpabsw),
        71 => v2!(a, o, vpabsd),
        72 => v3!(a, o, vpsignb),
        73 => v3!(a, o, vpsignd),
        74 => v3!(a, o, vphaddw),
        75 => v3!(a, o, vphaddsw),
        76 => v3!(a, o, vphsubd),
        77 => v3!(a, o, vpmulhrsw),
        78 => v3!(a, o, vpblendw, imm),
        79 => match (o.wide, o.mem) {
            (true, true) => a.vpblendvb(o.y[0], o.y[1], ymmword_ptr(rbp + o.un), o.y[2]),
            (true, false) => a.vpblendvb(o.y[0], o.y[1], o.y[0], o.y[2]),
            (false, true) => a.vpblendvb(o.x[0], o.x[1], xmmword_ptr(rbp + o.un), o.x[2]),
            (false, false) => a.vpblendvb(o.x[0], o.x[1], o.x[2], o.x[0]),
        },
        80 => v3!(a, o, vmpsadbw, imm & 0x3f),
        81 => widen!(a, o, vpmovsxbw, qword_ptr, xmmword_ptr),
        82 => widen!(a, o, vpmovzxbd, dword_ptr, qword_ptr),
        83 => widen!(a, o, vpmovsxbq, word_ptr, dword_ptr),
        84 => widen!(a, o, vpmovzxwd, qword_ptr, xmmword_ptr),
        85 => widen!(a, o, vpmovsxwq, dword_ptr, qword_ptr),
        86 => widen!(a, o, vpmovzxdq, qword_ptr, xmmword_ptr),
        87 => match o.mem {
            true => a.vphminposuw(o.x[0], xmmword_ptr(rbp + o.un)),
            false => a.vphminposuw(o.x[0], o.x[1]),
        },
        88 => match (o.mem, r.next() % 4) {
            (true, 0) => a.vpextrb(byte_ptr(rbp + o.un), o.x[1], imm & 15),
            (true, 1) => a.vpextrw(word_ptr(rbp + o.un), o.x[1], imm & 7),
            (true, 2) => a.vpextrd(dword_ptr(rbp + o.un), o.x[1], imm & 3),
            (true, _) => a.vpextrq(qword_ptr(rbp + o.un), o.x[1], imm & 1),
            (false, 0) => a.vpextrb(g64, o.x[1], imm & 15),
            (false, 1) => a.vpextrw(g32, o.x[1], imm & 7),
            (false, 2) => a.vextractps(g32, o.x[1], imm & 3),
            (false, _) => a.vpextrq(g64, o.x[1], imm & 1),
        },
        89 => match (o.mem, r.next() % 4) {
            (true, 0) => a.vpinsrb(o.x[0], o.x[1], byte_ptr(rbp + o.un), imm & 15),
            (true, 1) => a.vpinsrw(o.x[0], o.x[1], word_ptr(rbp + o.un), imm & 7),
            (true, 2) => a.vpinsrd(o.x[0], o.x[1], dword_ptr(rbp + o.un), imm & 3),
            (true, _) => a.vpinsrq(o.x[0], o.x[1], qword_ptr(rbp + o.un), imm & 1),
            (false, 0) => a.vpinsrb(o.x[0], o.x[1], g32, imm & 15),
            (false, 1) => a.vpinsrw(o.x[0], o.x[1], g32, imm & 7),
            (false, 2) => a.vpinsrd(o.x[0], o.x[1], g32, imm & 3),
            (false, _) => a.vpinsrq(o.x[0], o.x[1], g64, imm & 1),
        },
        90 => match o.wide {
            true => a.vpmovmskb(g32, o.y[1]),
            false => a.vpmovmskb(g64, o.x[1]),
        },
        91 => match o.mem {
            true => a.vmovntdqa(o.x[0], xmmword_ptr(rbp + o.al)),
            false => a.vlddqu(o.x[0], xmmword_ptr(rbp + o.un)),
        },
        // String compares (small alphabets and lengths).
        92 => match o.mem {
            true => a.vpcmpestri(o.x[0], xmmword_ptr(rbp + o.un), imm & 0x7f),
            false => a.vpcmpestrm(o.x[0], o.x[1], imm & 0x7f),
        },
        93 => match o.mem {
            true => a.vpcmpistrm(o.x[0], xmmword_ptr(rbp + o.un), imm & 0x7f),
            false => a.vpcmpistri(o.x[0], o.x[1], imm & 0x7f),
        },
        94 => a.vpcmpestri64(o.x[0], o.x[1], imm & 0x7f),
        95 => a.vpcmpestrm64(o.x[0], xmmword_ptr(rbp + o.un), imm & 0x7f),
        // VMASKMOVDQU stores through RDI (set by the caller).
        96 => a.vmaskmovdqu(o.x[0], o.x[1]),
        97 => v3!(a, o, vpblendd, imm),
        98 => v3!(a, o, vpsllvd),
        99 => v3!(a, o, vpsrlvq),
        // AVX2 only (the VEX.128 forms of these are AVX2 too).
        100 => v3!(a, o, vpsravd),
        101 => v3!(a, o, vpsllvq),
        102 => v3!(a, o, vpsrlvd),
        103 => match o.mem {
            true => a.vpermd(o.y[0], o.y[1], ymmword_ptr(rbp + o.un)),
            false => a.vpermd(o.y[0], o.y[1], o.y[2]),
        },
        104 => match o.mem {
            true => a.vpermps(o.y[0], o.y[1], ymmword_ptr(rbp + o.un)),
            false => a.vpermps(o.y[0], o.y[1], o.y[2]),
        },
        105 => match o.mem {
            true => a.vpermq(o.y[0], ymmword_ptr(rbp + o.un), imm),
            false => a.vpermq(o.y[0], o.y[1], imm),
        },
        106 => match o.mem {
            true => a.vpermpd(o.y[0], ymmword_ptr(rbp + o.un), imm),
            false => a.vpermpd(o.y[0], o.y[1], imm),
        },
        107 => match o.mem {
            true => a.vperm2i128(o.y[0], o.y[1], ymmword_ptr(rbp + o.un), imm),
            false => a.vperm2i128(o.y[0], o.y[1], o.y[2], imm),
        },
        108 => match o.mem {
            true => a.vinserti128(o.y[0], o.y[1], xmmword_ptr(rbp + o.un), imm & 1),
            false => a.vinserti128(o.y[0], o.y[1], o.x[2], imm & 1),
        },
        109 => match o.mem {
            true => a.vextracti128(xmmword_ptr(rbp + o.un), o.y[1], imm & 1),
            false => a.vextracti128(o.x[0], o.y[1], imm & 1),
        },
        110 => match o.mem {
            true => a.vmovntdqa(o.y[0], ymmword_ptr(rbp + o.al)),
            false => v3!(a, o, vpcmpgtq),
        },
        _ => v3!(a, o, vpmaxsb),
    });
    let mut c = case(r, insn, flavor);
    if k == 96 {
        c.rdi_mem = Some(r.next() % (OPS_END - 16));
    }
    c
}

#[test]
fn random_avx_integer_instructions_match_the_host() {
    if !host_has("AVX integer", &["avx", "sse4.2"]) {
        return;
    }
    let avx2 = host_has("AVX2 integer (VEX.256 and AVX2-only forms)", &["avx2"]);
    run_family(0xbb67_ae85_84ca_a73b, cases(15000), 100, |r| {
        random_int(r, avx2)
    });
}
