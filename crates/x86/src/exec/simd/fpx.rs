//! SSE3 and SSE4.1 floating point: ADDSUB, horizontal add/subtract, the
//! MOVxDUP duplicates, blends by immediate, dot products, INSERTPS, ROUND.

use super::fp::{
    add32, add64, f32_at, f64_at, mul32, mul64, mxcsr_rc, quiet32, quiet64, sub32, sub64, with_f32,
    with_f64,
};
use super::{build, elem, LaneIn};

pub(super) fn addsubps(i: &LaneIn) -> u128 {
    build(4, 4, |j| {
        let (x, y) = (f32_at(i.a, j), f32_at(i.b, j));
        let r = if j % 2 == 0 { sub32(x, y) } else { add32(x, y) };
        r.to_bits() as u64
    })
}

pub(super) fn addsubpd(i: &LaneIn) -> u128 {
    build(8, 2, |j| {
        let (x, y) = (f64_at(i.a, j), f64_at(i.b, j));
        let r = if j == 0 { sub64(x, y) } else { add64(x, y) };
        r.to_bits()
    })
}

/// Element `j` combines the adjacent pair `2k, 2k+1` of `a` (low half of
/// the result) or of `b` (high half).
fn hps(i: &LaneIn, f: fn(f32, f32) -> f32) -> u128 {
    build(4, 4, |j| {
        let (src, k) = if j < 2 { (i.a, j) } else { (i.b, j - 2) };
        f(f32_at(src, 2 * k), f32_at(src, 2 * k + 1)).to_bits() as u64
    })
}

fn hpd(i: &LaneIn, f: fn(f64, f64) -> f64) -> u128 {
    build(8, 2, |j| {
        let src = if j == 0 { i.a } else { i.b };
        f(f64_at(src, 0), f64_at(src, 1)).to_bits()
    })
}

pub(super) fn haddps(i: &LaneIn) -> u128 {
    hps(i, add32)
}
pub(super) fn hsubps(i: &LaneIn) -> u128 {
    hps(i, sub32)
}
pub(super) fn haddpd(i: &LaneIn) -> u128 {
    hpd(i, add64)
}
pub(super) fn hsubpd(i: &LaneIn) -> u128 {
    hpd(i, sub64)
}

pub(super) fn movddup(i: &LaneIn) -> u128 {
    let lo = i.b as u64 as u128;
    lo | (lo << 64)
}
pub(super) fn movshdup(i: &LaneIn) -> u128 {
    build(4, 4, |j| elem(i.b, 4, j | 1))
}
pub(super) fn movsldup(i: &LaneIn) -> u128 {
    build(4, 4, |j| elem(i.b, 4, j & !1))
}

/// DPPS: the products selected by imm8[7:4], summed in pairs then
/// together, written to the elements imm8[3:0] selects (others +0.0).
pub(super) fn dpps(i: &LaneIn) -> u128 {
    let p = |j: u32| {
        if i.imm >> (4 + j) & 1 != 0 {
            mul32(f32_at(i.a, j), f32_at(i.b, j))
        } else {
            0.0
        }
    };
    let sum = add32(add32(p(0), p(1)), add32(p(2), p(3)));
    build(4, 4, |j| {
        if i.imm >> j & 1 != 0 {
            sum.to_bits() as u64
        } else {
            0
        }
    })
}

/// DPPD: as DPPS with two elements (imm8[5:4] and imm8[1:0]).
pub(super) fn dppd(i: &LaneIn) -> u128 {
    let p = |j: u32| {
        if i.imm >> (4 + j) & 1 != 0 {
            mul64(f64_at(i.a, j), f64_at(i.b, j))
        } else {
            0.0
        }
    };
    let sum = add64(p(0), p(1));
    build(8, 2, |j| {
        if i.imm >> j & 1 != 0 {
            sum.to_bits()
        } else {
            0
        }
    })
}

/// INSERTPS: element imm8[7:6] of `b` into element imm8[5:4] of `a`,
/// then the elements imm8[3:0] selects zeroed.
pub(super) fn insertps(i: &LaneIn) -> u128 {
    let v = elem(i.b, 4, (i.imm as u32 >> 6) & 3);
    let d = (i.imm as u32 >> 4) & 3;
    build(4, 4, |j| {
        if i.imm >> j & 1 != 0 {
            0
        } else if j == d {
            v
        } else {
            elem(i.a, 4, j)
        }
    })
}

/// The rounding control of ROUND*: imm8[1:0], or MXCSR.RC when imm8[2].
fn round_mode(i: &LaneIn) -> u32 {
    if i.imm & 4 != 0 {
        mxcsr_rc(i.mxcsr)
    } else {
        i.imm as u32 & 3
    }
}

fn round32(v: f32, rc: u32) -> f32 {
    if v.is_nan() {
        return quiet32(v);
    }
    match rc {
        0 => v.round_ties_even(),
        1 => v.floor(),
        2 => v.ceil(),
        _ => v.trunc(),
    }
}

fn round64(v: f64, rc: u32) -> f64 {
    if v.is_nan() {
        return quiet64(v);
    }
    match rc {
        0 => v.round_ties_even(),
        1 => v.floor(),
        2 => v.ceil(),
        _ => v.trunc(),
    }
}

pub(super) fn roundps(i: &LaneIn) -> u128 {
    let rc = round_mode(i);
    build(4, 4, |j| round32(f32_at(i.b, j), rc).to_bits() as u64)
}
pub(super) fn roundpd(i: &LaneIn) -> u128 {
    let rc = round_mode(i);
    build(8, 2, |j| round64(f64_at(i.b, j), rc).to_bits())
}
pub(super) fn roundss(i: &LaneIn) -> u128 {
    with_f32(i.a, 0, round32(f32_at(i.b, 0), round_mode(i)))
}
pub(super) fn roundsd(i: &LaneIn) -> u128 {
    with_f64(i.a, 0, round64(f64_at(i.b, 0), round_mode(i)))
}
