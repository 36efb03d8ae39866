//! The SSE operations whose result is not a vector: COMISS/UCOMISS/
//! COMISD/UCOMISD flags, conversions between the low float element and a
//! general register, and the sign-bit masks of MOVMSKPS/MOVMSKPD/PMOVMSKB
//! (shared by the legacy and VEX forms; a VEX.256 mask is the low lane's
//! bits followed by the high lane's).

use super::fp::{mxcsr_rc, round_rc, to_int};
use super::{elem, sx};
use crate::state::rflags::{CF, PF, ZF};

/// The flags of (U)COMISS (`double` false) or (U)COMISD comparing the low
/// elements of `a` and `b`: ZF PF CF all set when unordered, CF for less,
/// ZF for equal; OF SF AF cleared. (The signalling difference between
/// COMIS and UCOMIS is only in the #I flag, which is not modelled.)
pub(crate) fn comis(a: u128, b: u128, double: bool) -> u64 {
    let (x, y) = if double {
        (f64::from_bits(a as u64), f64::from_bits(b as u64))
    } else {
        (
            f32::from_bits(a as u32) as f64,
            f32::from_bits(b as u32) as f64,
        )
    };
    if x.is_nan() || y.is_nan() {
        ZF | PF | CF
    } else if x < y {
        CF
    } else if x == y {
        ZF
    } else {
        0
    }
}

/// CVTSI2SS/CVTSI2SD: `a` with its low element replaced by the signed
/// `bits`-bit integer `v` converted (rounded to nearest).
pub(crate) fn cvtsi2f(a: u128, v: u64, bits: u32, double: bool) -> u128 {
    let i = sx(v, bits);
    if double {
        (a & !(u64::MAX as u128)) | (i as f64).to_bits() as u128
    } else {
        (a & !0xffff_ffffu128) | (i as f32).to_bits() as u128
    }
}

/// CVT(T)SS2SI/CVT(T)SD2SI: the low element of `b` as a signed
/// `bits`-bit integer, truncated or rounded per MXCSR.RC, the integer
/// indefinite value when it does not fit.
pub(crate) fn cvtf2si(b: u128, double: bool, truncate: bool, mxcsr: u32, bits: u32) -> u64 {
    let v = if double {
        f64::from_bits(b as u64)
    } else {
        f32::from_bits(b as u32) as f64
    };
    let rc = if truncate { 3 } else { mxcsr_rc(mxcsr) };
    to_int(round_rc(v, rc), bits)
}

/// The sign bits of the elements of `size` bytes of `v`, element 0 in bit 0.
pub(crate) fn movmsk(v: u128, size: u32) -> u64 {
    let n = 16 / size;
    (0..n).fold(0, |r, i| r | (elem(v, size, i) >> (size * 8 - 1)) << i)
}
