//! SSSE3: absolute values, horizontal add/subtract, PALIGNR, PSHUFB,
//! PSIGN*, PMADDUBSW, PMULHRSW.

use super::{build, elem, lanes, sat_i16, sx, LaneIn};

fn abs(i: &LaneIn, size: u32) -> u128 {
    lanes(i.b, 0, size, |x, _| sx(x, size * 8).unsigned_abs())
}

pub(super) fn pabsb(i: &LaneIn) -> u128 {
    abs(i, 1)
}
pub(super) fn pabsw(i: &LaneIn) -> u128 {
    abs(i, 2)
}
pub(super) fn pabsd(i: &LaneIn) -> u128 {
    abs(i, 4)
}

/// Horizontal: element `j` of the result combines the adjacent pair
/// `2j, 2j+1` of `a` (low half of the result) then of `b` (high half).
fn horizontal(i: &LaneIn, size: u32, f: impl Fn(i64, i64) -> u64) -> u128 {
    let n = 16 / size;
    build(size, n, |j| {
        let (src, k) = if j < n / 2 {
            (i.a, j)
        } else {
            (i.b, j - n / 2)
        };
        let x = sx(elem(src, size, 2 * k), size * 8);
        let y = sx(elem(src, size, 2 * k + 1), size * 8);
        f(x, y)
    })
}

pub(super) fn phaddw(i: &LaneIn) -> u128 {
    horizontal(i, 2, |x, y| x.wrapping_add(y) as u64)
}
pub(super) fn phaddd(i: &LaneIn) -> u128 {
    horizontal(i, 4, |x, y| x.wrapping_add(y) as u64)
}
pub(super) fn phaddsw(i: &LaneIn) -> u128 {
    horizontal(i, 2, |x, y| sat_i16(x + y))
}
pub(super) fn phsubw(i: &LaneIn) -> u128 {
    horizontal(i, 2, |x, y| x.wrapping_sub(y) as u64)
}
pub(super) fn phsubd(i: &LaneIn) -> u128 {
    horizontal(i, 4, |x, y| x.wrapping_sub(y) as u64)
}
pub(super) fn phsubsw(i: &LaneIn) -> u128 {
    horizontal(i, 2, |x, y| sat_i16(x - y))
}

/// Unsigned bytes of `a` times signed bytes of `b`, adjacent products
/// added with signed saturation into words.
pub(super) fn pmaddubsw(i: &LaneIn) -> u128 {
    build(2, 8, |j| {
        let p = |k: u32| elem(i.a, 1, k) as i64 * sx(elem(i.b, 1, k), 8);
        sat_i16(p(2 * j) + p(2 * j + 1))
    })
}

/// Signed word products, rounded and scaled: bits 30..15 of `a*b + 2^14`.
pub(super) fn pmulhrsw(i: &LaneIn) -> u128 {
    lanes(i.a, i.b, 2, |x, y| {
        let p = sx(x, 16) * sx(y, 16);
        (((p >> 14) + 1) >> 1) as u64
    })
}

/// Each byte of the result is the byte of `a` that the low 4 bits of the
/// byte of `b` select, or zero when that byte's bit 7 is set.
pub(super) fn pshufb(i: &LaneIn) -> u128 {
    build(1, 16, |j| {
        let sel = elem(i.b, 1, j);
        if sel & 0x80 != 0 {
            0
        } else {
            elem(i.a, 1, sel as u32 & 15)
        }
    })
}

/// The 32-byte `a:b` shifted right by imm8 bytes, low 16 bytes.
pub(super) fn palignr(i: &LaneIn) -> u128 {
    let n = i.imm as u32;
    build(1, 16, |j| match j + n {
        k @ 0..=15 => elem(i.b, 1, k),
        k @ 16..=31 => elem(i.a, 1, k - 16),
        _ => 0,
    })
}

/// `a` negated, zeroed or kept by the sign of `b`.
fn sign(i: &LaneIn, size: u32) -> u128 {
    lanes(i.a, i.b, size, |x, y| match sx(y, size * 8) {
        0 => 0,
        s if s < 0 => x.wrapping_neg(),
        _ => x,
    })
}

pub(super) fn psignb(i: &LaneIn) -> u128 {
    sign(i, 1)
}
pub(super) fn psignw(i: &LaneIn) -> u128 {
    sign(i, 2)
}
pub(super) fn psignd(i: &LaneIn) -> u128 {
    sign(i, 4)
}
