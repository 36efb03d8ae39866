//! SSE4.1 and SSE4.2 packed integer operations: blends, min/max, sign and
//! zero extension, multiplies, PACKUSDW, PCMPEQQ/PCMPGTQ, PHMINPOSUW,
//! MPSADBW.

use super::{all, build, elem, lanes, sx, LaneIn};

/// Element `j` from `b` where `pick(j)`, else from `a`.
fn blend(i: &LaneIn, size: u32, pick: impl Fn(u32) -> bool) -> u128 {
    build(size, 16 / size, |j| {
        elem(if pick(j) { i.b } else { i.a }, size, j)
    })
}

pub(super) fn pblendw(i: &LaneIn) -> u128 {
    blend(i, 2, |j| i.imm >> j & 1 != 0)
}
pub(super) fn blendps(i: &LaneIn) -> u128 {
    blend(i, 4, |j| i.imm >> j & 1 != 0)
}
pub(super) fn blendpd(i: &LaneIn) -> u128 {
    blend(i, 8, |j| i.imm >> j & 1 != 0)
}

/// BLENDV: element from `b` where the selector element's sign bit is set.
fn blendv(i: &LaneIn, size: u32) -> u128 {
    blend(i, size, |j| elem(i.c, size, j) >> (size * 8 - 1) & 1 != 0)
}

pub(super) fn pblendvb(i: &LaneIn) -> u128 {
    blendv(i, 1)
}
pub(super) fn blendvps(i: &LaneIn) -> u128 {
    blendv(i, 4)
}
pub(super) fn blendvpd(i: &LaneIn) -> u128 {
    blendv(i, 8)
}

macro_rules! lanewise {
    ($($name:ident, $size:expr, |$x:ident, $y:ident| $body:expr;)*) => {$(
        pub(super) fn $name(i: &LaneIn) -> u128 {
            lanes(i.a, i.b, $size, |$x: u64, $y: u64| $body)
        }
    )*};
}

lanewise! {
    pminsb, 1, |x, y| if sx(x, 8) < sx(y, 8) { x } else { y };
    pmaxsb, 1, |x, y| if sx(x, 8) > sx(y, 8) { x } else { y };
    pminsd, 4, |x, y| if sx(x, 32) < sx(y, 32) { x } else { y };
    pmaxsd, 4, |x, y| if sx(x, 32) > sx(y, 32) { x } else { y };
    pminuw, 2, |x, y| x.min(y);
    pmaxuw, 2, |x, y| x.max(y);
    pminud, 4, |x, y| x.min(y);
    pmaxud, 4, |x, y| x.max(y);
    pmulld, 4, |x, y| x.wrapping_mul(y);
    pcmpeqq, 8, |x, y| all(x == y);
    pcmpgtq, 8, |x, y| all((x as i64) > (y as i64));
}

/// Signed products of the even doublewords, as quadwords.
pub(super) fn pmuldq(i: &LaneIn) -> u128 {
    build(8, 2, |j| {
        let x = sx(elem(i.a, 4, 2 * j), 32);
        let y = sx(elem(i.b, 4, 2 * j), 32);
        x.wrapping_mul(y) as u64
    })
}

/// Signed doublewords of `a` then `b` to words with unsigned saturation.
pub(super) fn packusdw(i: &LaneIn) -> u128 {
    build(2, 8, |j| {
        let src = if j < 4 { i.a } else { i.b };
        sx(elem(src, 4, j % 4), 32).clamp(0, 0xffff) as u64
    })
}

/// The smallest unsigned word of `b` (the lowest index among equals) in
/// bits 15..0, its index in bits 18..16, the rest zero.
pub(super) fn phminposuw(i: &LaneIn) -> u128 {
    let mut best = (elem(i.b, 2, 0), 0u32);
    for j in 1..8 {
        let v = elem(i.b, 2, j);
        if v < best.0 {
            best = (v, j);
        }
    }
    best.0 as u128 | ((best.1 as u128) << 16)
}

/// Sums of absolute differences of 4-byte groups: the group of `b` at
/// byte 4*imm8[1:0] against the eight groups of `a` starting at byte
/// 4*imm8[2] + k, one word each.
pub(super) fn mpsadbw(i: &LaneIn) -> u128 {
    let boff = (i.imm as u32 & 3) * 4;
    let aoff = ((i.imm as u32 >> 2) & 1) * 4;
    build(2, 8, |k| {
        (0..4)
            .map(|m| {
                let x = elem(i.a, 1, aoff + k + m) as i64;
                let y = elem(i.b, 1, boff + m) as i64;
                (x - y).unsigned_abs()
            })
            .sum()
    })
}

/// PMOVSX/PMOVZX: the low elements of `from` bytes of `b`, extended to
/// `to` bytes.
fn extend(i: &LaneIn, from: u32, to: u32, signed: bool) -> u128 {
    build(to, 16 / to, |j| {
        let v = elem(i.b, from, j);
        if signed {
            sx(v, from * 8) as u64
        } else {
            v
        }
    })
}

macro_rules! extends {
    ($($name:ident, $from:expr, $to:expr, $signed:expr;)*) => {$(
        pub(super) fn $name(i: &LaneIn) -> u128 {
            extend(i, $from, $to, $signed)
        }
    )*};
}

extends! {
    pmovsxbw, 1, 2, true;
    pmovsxbd, 1, 4, true;
    pmovsxbq, 1, 8, true;
    pmovsxwd, 2, 4, true;
    pmovsxwq, 2, 8, true;
    pmovsxdq, 4, 8, true;
    pmovzxbw, 1, 2, false;
    pmovzxbd, 1, 4, false;
    pmovzxbq, 1, 8, false;
    pmovzxwd, 2, 4, false;
    pmovzxwq, 2, 8, false;
    pmovzxdq, 4, 8, false;
}
