//! SSE/SSE2 packed integer and logic operations.

use super::{all, build, elem, lanes, sat_i16, sat_i8, sat_u8, sx, LaneIn};

/// `fn $name(&LaneIn)`: `$f(a_lane, b_lane)` on every `$size`-byte lane.
macro_rules! lanewise {
    ($($name:ident, $size:expr, |$x:ident, $y:ident| $body:expr;)*) => {$(
        pub(super) fn $name(i: &LaneIn) -> u128 {
            lanes(i.a, i.b, $size, |$x: u64, $y: u64| $body)
        }
    )*};
}

pub(super) fn pxor(i: &LaneIn) -> u128 {
    i.a ^ i.b
}
pub(super) fn por(i: &LaneIn) -> u128 {
    i.a | i.b
}
pub(super) fn pand(i: &LaneIn) -> u128 {
    i.a & i.b
}
pub(super) fn pandn(i: &LaneIn) -> u128 {
    !i.a & i.b
}

lanewise! {
    pcmpeqb, 1, |x, y| all(x == y);
    pcmpeqw, 2, |x, y| all(x == y);
    pcmpeqd, 4, |x, y| all(x == y);
    pcmpgtb, 1, |x, y| all(sx(x, 8) > sx(y, 8));
    pcmpgtw, 2, |x, y| all(sx(x, 16) > sx(y, 16));
    pcmpgtd, 4, |x, y| all(sx(x, 32) > sx(y, 32));
    paddb, 1, |x, y| x.wrapping_add(y);
    paddw, 2, |x, y| x.wrapping_add(y);
    paddd, 4, |x, y| x.wrapping_add(y);
    paddq, 8, |x, y| x.wrapping_add(y);
    psubb, 1, |x, y| x.wrapping_sub(y);
    psubw, 2, |x, y| x.wrapping_sub(y);
    psubd, 4, |x, y| x.wrapping_sub(y);
    psubq, 8, |x, y| x.wrapping_sub(y);
    pminub, 1, |x, y| x.min(y);
    pmaxub, 1, |x, y| x.max(y);
    pminsw, 2, |x, y| if sx(x, 16) < sx(y, 16) { x } else { y };
    pmaxsw, 2, |x, y| if sx(x, 16) > sx(y, 16) { x } else { y };
    pavgb, 1, |x, y| (x + y + 1) >> 1;
    pavgw, 2, |x, y| (x + y + 1) >> 1;
    paddsb, 1, |x, y| sat_i8(sx(x, 8) + sx(y, 8));
    psubsb, 1, |x, y| sat_i8(sx(x, 8) - sx(y, 8));
    paddsw, 2, |x, y| sat_i16(sx(x, 16) + sx(y, 16));
    psubsw, 2, |x, y| sat_i16(sx(x, 16) - sx(y, 16));
    paddusb, 1, |x, y| (x + y).min(0xff);
    psubusb, 1, |x, y| x.saturating_sub(y);
    paddusw, 2, |x, y| (x + y).min(0xffff);
    psubusw, 2, |x, y| x.saturating_sub(y);
    pmullw, 2, |x, y| x.wrapping_mul(y);
    pmulhw, 2, |x, y| ((sx(x, 16) * sx(y, 16)) >> 16) as u64;
    pmulhuw, 2, |x, y| (x * y) >> 16;
}

pub(super) fn pmuludq(i: &LaneIn) -> u128 {
    build(8, 2, |j| {
        elem(i.a, 8, j) as u32 as u64 * elem(i.b, 8, j) as u32 as u64
    })
}

pub(super) fn pmaddwd(i: &LaneIn) -> u128 {
    let w = |v: u128, j: u32| sx(elem(v, 2, j), 16);
    build(4, 4, |j| {
        let s = w(i.a, 2 * j) * w(i.b, 2 * j) + w(i.a, 2 * j + 1) * w(i.b, 2 * j + 1);
        s as u64
    })
}

pub(super) fn psadbw(i: &LaneIn) -> u128 {
    build(8, 2, |half| {
        (0..8)
            .map(|j| {
                let x = elem(i.a, 1, 8 * half + j) as i64;
                let y = elem(i.b, 1, 8 * half + j) as i64;
                (x - y).unsigned_abs()
            })
            .sum()
    })
}

/// Narrows the `from`-byte elements of `a` then `b` with `sat`.
fn pack(i: &LaneIn, from: u32, sat: impl Fn(i64) -> u64) -> u128 {
    let n = 16 / from;
    build(from / 2, 2 * n, |j| {
        let src = if j < n { i.a } else { i.b };
        sat(sx(elem(src, from, j % n), from * 8))
    })
}

pub(super) fn packsswb(i: &LaneIn) -> u128 {
    pack(i, 2, sat_i8)
}
pub(super) fn packuswb(i: &LaneIn) -> u128 {
    pack(i, 2, sat_u8)
}
pub(super) fn packssdw(i: &LaneIn) -> u128 {
    pack(i, 4, sat_i16)
}

/// Interleaves the low (or high) halves of two vectors by element size.
pub(super) fn unpack(a: u128, b: u128, size: u32, high: bool) -> u128 {
    let n = 8 / size;
    let base = if high { n } else { 0 };
    build(size, 2 * n, |j| {
        let src = if j % 2 == 0 { a } else { b };
        elem(src, size, base + j / 2)
    })
}

macro_rules! unpacks {
    ($($name:ident, $size:expr, $high:expr;)*) => {$(
        pub(super) fn $name(i: &LaneIn) -> u128 {
            unpack(i.a, i.b, $size, $high)
        }
    )*};
}

unpacks! {
    punpcklbw, 1, false;
    punpcklwd, 2, false;
    punpckldq, 4, false;
    punpcklqdq, 8, false;
    punpckhbw, 1, true;
    punpckhwd, 2, true;
    punpckhdq, 4, true;
    punpckhqdq, 8, true;
}

// ------------------------------------------------------------ shifts

/// The count of a shift: the low 64 bits of `b` (an imm8 for the immediate forms).
fn count(i: &LaneIn) -> u64 {
    i.b as u64
}

fn shl(i: &LaneIn, size: u32) -> u128 {
    let n = count(i);
    if n >= size as u64 * 8 {
        return 0;
    }
    lanes(i.a, 0, size, |x, _| x << n)
}

fn shr(i: &LaneIn, size: u32) -> u128 {
    let n = count(i);
    if n >= size as u64 * 8 {
        return 0;
    }
    lanes(i.a, 0, size, |x, _| x >> n)
}

fn sar(i: &LaneIn, size: u32) -> u128 {
    let bits = size * 8;
    let n = count(i).min(bits as u64 - 1) as u32;
    lanes(i.a, 0, size, |x, _| (sx(x, bits) >> n) as u64)
}

pub(super) fn psllw(i: &LaneIn) -> u128 {
    shl(i, 2)
}
pub(super) fn pslld(i: &LaneIn) -> u128 {
    shl(i, 4)
}
pub(super) fn psllq(i: &LaneIn) -> u128 {
    shl(i, 8)
}
pub(super) fn psrlw(i: &LaneIn) -> u128 {
    shr(i, 2)
}
pub(super) fn psrld(i: &LaneIn) -> u128 {
    shr(i, 4)
}
pub(super) fn psrlq(i: &LaneIn) -> u128 {
    shr(i, 8)
}
pub(super) fn psraw(i: &LaneIn) -> u128 {
    sar(i, 2)
}
pub(super) fn psrad(i: &LaneIn) -> u128 {
    sar(i, 4)
}

/// Byte shift of `a` left by imm8 (16 or more: zero).
pub(super) fn pslldq(i: &LaneIn) -> u128 {
    match i.imm {
        n @ 0..=15 => i.a << (n as u32 * 8),
        _ => 0,
    }
}

pub(super) fn psrldq(i: &LaneIn) -> u128 {
    match i.imm {
        n @ 0..=15 => i.a >> (n as u32 * 8),
        _ => 0,
    }
}

// ------------------------------------------------------------ shuffles

pub(super) fn pshufd(i: &LaneIn) -> u128 {
    build(4, 4, |j| elem(i.b, 4, (i.imm as u32 >> (2 * j)) & 3))
}

/// Shuffles the words of one 64-bit half of `b` (`hi`), keeping the other.
fn pshufw_half(i: &LaneIn, hi: bool) -> u128 {
    let base = if hi { 4 } else { 0 };
    build(2, 8, |j| {
        if (j >= 4) == hi {
            let sel = (i.imm as u32 >> (2 * (j - base))) & 3;
            elem(i.b, 2, base + sel)
        } else {
            elem(i.b, 2, j)
        }
    })
}

pub(super) fn pshuflw(i: &LaneIn) -> u128 {
    pshufw_half(i, false)
}
pub(super) fn pshufhw(i: &LaneIn) -> u128 {
    pshufw_half(i, true)
}
