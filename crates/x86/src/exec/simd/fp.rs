//! SSE/SSE2 floating point: packed and scalar arithmetic, compares,
//! conversions between vectors, shuffles and unpacks of float lanes.

use super::int::unpack;
use super::{build, elem, LaneIn};

pub(super) fn f32_at(x: u128, i: u32) -> f32 {
    f32::from_bits(elem(x, 4, i) as u32)
}
pub(super) fn f64_at(x: u128, i: u32) -> f64 {
    f64::from_bits(elem(x, 8, i))
}
pub(super) fn with_f32(x: u128, i: u32, v: f32) -> u128 {
    (x & !(0xffff_ffffu128 << (32 * i))) | ((v.to_bits() as u128) << (32 * i))
}
pub(super) fn with_f64(x: u128, i: u32, v: f64) -> u128 {
    (x & !((u64::MAX as u128) << (64 * i))) | ((v.to_bits() as u128) << (64 * i))
}

/// A quiet copy of a NaN.
pub(super) fn quiet32(v: f32) -> f32 {
    f32::from_bits(v.to_bits() | 0x0040_0000)
}
pub(super) fn quiet64(v: f64) -> f64 {
    f64::from_bits(v.to_bits() | 0x0008_0000_0000_0000)
}

/// `f(a, b)` with SSE's NaN rule: a NaN source gives that NaN quieted,
/// the first source's when both are NaN.
pub(super) fn op32(a: f32, b: f32, f: impl Fn(f32, f32) -> f32) -> f32 {
    if a.is_nan() {
        quiet32(a)
    } else if b.is_nan() {
        quiet32(b)
    } else {
        f(a, b)
    }
}
pub(super) fn op64(a: f64, b: f64, f: impl Fn(f64, f64) -> f64) -> f64 {
    if a.is_nan() {
        quiet64(a)
    } else if b.is_nan() {
        quiet64(b)
    } else {
        f(a, b)
    }
}

pub(super) fn add32(a: f32, b: f32) -> f32 {
    op32(a, b, |x, y| x + y)
}
pub(super) fn sub32(a: f32, b: f32) -> f32 {
    op32(a, b, |x, y| x - y)
}
pub(super) fn mul32(a: f32, b: f32) -> f32 {
    op32(a, b, |x, y| x * y)
}
pub(super) fn add64(a: f64, b: f64) -> f64 {
    op64(a, b, |x, y| x + y)
}
pub(super) fn sub64(a: f64, b: f64) -> f64 {
    op64(a, b, |x, y| x - y)
}
pub(super) fn mul64(a: f64, b: f64) -> f64 {
    op64(a, b, |x, y| x * y)
}
fn div32(a: f32, b: f32) -> f32 {
    op32(a, b, |x, y| x / y)
}
fn div64(a: f64, b: f64) -> f64 {
    op64(a, b, |x, y| x / y)
}
/// MIN/MAX return the second source when either is NaN (not quieted), or
/// when both are zeros.
fn min32(a: f32, b: f32) -> f32 {
    if a < b {
        a
    } else {
        b
    }
}
fn max32(a: f32, b: f32) -> f32 {
    if a > b {
        a
    } else {
        b
    }
}
fn min64(a: f64, b: f64) -> f64 {
    if a < b {
        a
    } else {
        b
    }
}
fn max64(a: f64, b: f64) -> f64 {
    if a > b {
        a
    } else {
        b
    }
}
fn sqrt32(_: f32, b: f32) -> f32 {
    if b.is_nan() {
        quiet32(b)
    } else {
        b.sqrt()
    }
}
fn sqrt64(_: f64, b: f64) -> f64 {
    if b.is_nan() {
        quiet64(b)
    } else {
        b.sqrt()
    }
}
/// RCP/RSQRT: computed exactly (the hardware's are approximations within
/// 1.5 * 2^-12 relative error).
fn rcp32(_: f32, b: f32) -> f32 {
    if b.is_nan() {
        quiet32(b)
    } else {
        (1.0 / b as f64) as f32
    }
}
fn rsqrt32(_: f32, b: f32) -> f32 {
    if b.is_nan() {
        quiet32(b)
    } else {
        (1.0 / (b as f64).sqrt()) as f32
    }
}

/// `fn $ps(&LaneIn)` (all lanes) and `fn $ss` (low lane, rest of `a`).
macro_rules! float_ops {
    ($($ps:ident, $ss:ident, $f:expr, 32;)*) => {$(
        pub(super) fn $ps(i: &LaneIn) -> u128 {
            build(4, 4, |j| $f(f32_at(i.a, j), f32_at(i.b, j)).to_bits() as u64)
        }
        pub(super) fn $ss(i: &LaneIn) -> u128 {
            with_f32(i.a, 0, $f(f32_at(i.a, 0), f32_at(i.b, 0)))
        }
    )*};
    ($($pd:ident, $sd:ident, $f:expr, 64;)*) => {$(
        pub(super) fn $pd(i: &LaneIn) -> u128 {
            build(8, 2, |j| $f(f64_at(i.a, j), f64_at(i.b, j)).to_bits())
        }
        pub(super) fn $sd(i: &LaneIn) -> u128 {
            with_f64(i.a, 0, $f(f64_at(i.a, 0), f64_at(i.b, 0)))
        }
    )*};
}

float_ops! {
    addps, addss, add32, 32;
    subps, subss, sub32, 32;
    mulps, mulss, mul32, 32;
    divps, divss, div32, 32;
    minps, minss, min32, 32;
    maxps, maxss, max32, 32;
    sqrtps, sqrtss, sqrt32, 32;
    rcpps, rcpss, rcp32, 32;
    rsqrtps, rsqrtss, rsqrt32, 32;
}

float_ops! {
    addpd, addsd, add64, 64;
    subpd, subsd, sub64, 64;
    mulpd, mulsd, mul64, 64;
    divpd, divsd, div64, 64;
    minpd, minsd, min64, 64;
    maxpd, maxsd, max64, 64;
    sqrtpd, sqrtsd, sqrt64, 64;
}

/// CMPxx predicate `pred` (0..31; legacy SSE has 0..7).
pub(super) fn compare(pred: u8, a: f64, b: f64) -> bool {
    let unord = a.is_nan() || b.is_nan();
    match pred & 15 {
        0 => a == b,
        1 => a < b,
        2 => a <= b,
        3 => unord,
        4 => a != b || unord,
        5 => a >= b || unord,
        6 => a > b || unord,
        7 => !unord,
        8 => a == b || unord,
        9 => a < b || unord,
        10 => a <= b || unord,
        11 => false,
        12 => a != b && !unord,
        13 => a >= b,
        14 => a > b,
        _ => true,
    }
}

fn mask(c: bool) -> u64 {
    if c {
        u64::MAX
    } else {
        0
    }
}

fn cmpps_p(i: &LaneIn, pred: u8) -> u128 {
    build(4, 4, |j| {
        mask(compare(pred, f32_at(i.a, j) as f64, f32_at(i.b, j) as f64))
    })
}
fn cmppd_p(i: &LaneIn, pred: u8) -> u128 {
    build(8, 2, |j| {
        mask(compare(pred, f64_at(i.a, j), f64_at(i.b, j)))
    })
}
fn cmpss_p(i: &LaneIn, pred: u8) -> u128 {
    let c = compare(pred, f32_at(i.a, 0) as f64, f32_at(i.b, 0) as f64);
    (i.a & !0xffff_ffff) | (mask(c) as u32 as u128)
}
fn cmpsd_p(i: &LaneIn, pred: u8) -> u128 {
    let c = compare(pred, f64_at(i.a, 0), f64_at(i.b, 0));
    (i.a & !(u64::MAX as u128)) | mask(c) as u128
}

/// Legacy CMPPS..CMPSD use imm8[2:0]; the VEX forms imm8[4:0].
pub(super) fn cmpps(i: &LaneIn) -> u128 {
    cmpps_p(i, i.imm & 7)
}
pub(super) fn cmppd(i: &LaneIn) -> u128 {
    cmppd_p(i, i.imm & 7)
}
pub(super) fn cmpss(i: &LaneIn) -> u128 {
    cmpss_p(i, i.imm & 7)
}
pub(super) fn cmpsd(i: &LaneIn) -> u128 {
    cmpsd_p(i, i.imm & 7)
}
pub(super) fn vcmpps(i: &LaneIn) -> u128 {
    cmpps_p(i, i.imm & 31)
}
pub(super) fn vcmppd(i: &LaneIn) -> u128 {
    cmppd_p(i, i.imm & 31)
}
pub(super) fn vcmpss(i: &LaneIn) -> u128 {
    cmpss_p(i, i.imm & 31)
}
pub(super) fn vcmpsd(i: &LaneIn) -> u128 {
    cmpsd_p(i, i.imm & 31)
}

// ------------------------------------------------------------ conversions

/// Rounds to an integral value per a rounding-control field (0 nearest
/// even, 1 down, 2 up, 3 toward zero).
pub(crate) fn round_rc(v: f64, rc: u32) -> f64 {
    match rc & 3 {
        0 => v.round_ties_even(),
        1 => v.floor(),
        2 => v.ceil(),
        _ => v.trunc(),
    }
}

/// MXCSR.RC.
pub(super) fn mxcsr_rc(mxcsr: u32) -> u32 {
    (mxcsr >> 13) & 3
}

/// Float (already integral) → integer of `bits`, with the x86 "integer
/// indefinite" result on overflow or NaN.
pub(crate) fn to_int(v: f64, bits: u32) -> u64 {
    let lim = 2f64.powi(bits as i32 - 1);
    if v.is_nan() || v >= lim || v < -lim {
        return 1u64 << (bits - 1);
    }
    (v as i64 as u64) & crate::flags::size_mask(bits / 8)
}

pub(super) fn cvtdq2ps(i: &LaneIn) -> u128 {
    build(4, 4, |j| (elem(i.b, 4, j) as i32 as f32).to_bits() as u64)
}
pub(super) fn cvtps2dq(i: &LaneIn) -> u128 {
    let rc = mxcsr_rc(i.mxcsr);
    build(4, 4, |j| to_int(round_rc(f32_at(i.b, j) as f64, rc), 32))
}
pub(super) fn cvttps2dq(i: &LaneIn) -> u128 {
    build(4, 4, |j| to_int((f32_at(i.b, j) as f64).trunc(), 32))
}
pub(super) fn cvtdq2pd(i: &LaneIn) -> u128 {
    build(8, 2, |j| (elem(i.b, 4, j) as i32 as f64).to_bits())
}
pub(super) fn cvtps2pd(i: &LaneIn) -> u128 {
    build(8, 2, |j| (f32_at(i.b, j) as f64).to_bits())
}
pub(super) fn cvtpd2ps(i: &LaneIn) -> u128 {
    build(4, 2, |j| (f64_at(i.b, j) as f32).to_bits() as u64)
}
pub(super) fn cvtpd2dq(i: &LaneIn) -> u128 {
    let rc = mxcsr_rc(i.mxcsr);
    build(4, 2, |j| to_int(round_rc(f64_at(i.b, j), rc), 32))
}
pub(super) fn cvttpd2dq(i: &LaneIn) -> u128 {
    build(4, 2, |j| to_int(f64_at(i.b, j).trunc(), 32))
}
pub(super) fn cvtss2sd(i: &LaneIn) -> u128 {
    with_f64(i.a, 0, f32_at(i.b, 0) as f64)
}
pub(super) fn cvtsd2ss(i: &LaneIn) -> u128 {
    with_f32(i.a, 0, f64_at(i.b, 0) as f32)
}

// ------------------------------------------------------------ shuffles

pub(super) fn shufps(i: &LaneIn) -> u128 {
    let imm = i.imm as u32;
    build(4, 4, |j| {
        let src = if j < 2 { i.a } else { i.b };
        elem(src, 4, (imm >> (2 * j)) & 3)
    })
}

pub(super) fn shufpd(i: &LaneIn) -> u128 {
    let imm = i.imm as u32;
    build(8, 2, |j| {
        let src = if j == 0 { i.a } else { i.b };
        elem(src, 8, (imm >> j) & 1)
    })
}

pub(super) fn unpcklps(i: &LaneIn) -> u128 {
    unpack(i.a, i.b, 4, false)
}
pub(super) fn unpckhps(i: &LaneIn) -> u128 {
    unpack(i.a, i.b, 4, true)
}
pub(super) fn unpcklpd(i: &LaneIn) -> u128 {
    unpack(i.a, i.b, 8, false)
}
pub(super) fn unpckhpd(i: &LaneIn) -> u128 {
    unpack(i.a, i.b, 8, true)
}
