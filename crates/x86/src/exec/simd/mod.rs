//! The semantics of 128-bit vector operations, as pure functions over
//! their inputs, shared by the legacy SSE dispatch (`exec::sse`) and the
//! VEX layer (VEX.128 forms, and each 128-bit lane of VEX.256 forms).
//!
//! # Interface
//!
//! [`lane_op`] maps an iced-x86 [`Mnemonic`] — the legacy one (`Paddb`)
//! or its VEX twin (`Vpaddb`) — to a [`LaneOp`]: a function
//! [`LaneFn`] `fn(&LaneIn) -> u128` plus how to feed it.
//!
//! - [`LaneIn::a`]: the first source. Legacy SSE: the destination register
//!   (two-operand form, read before it is written). VEX: the VEX.vvvv
//!   source (for shifts by an immediate: the register being shifted).
//!   Ignored by unary operations ([`LaneOp::unary`]).
//! - [`LaneIn::b`]: the second source, the xmm/m operand. A memory operand
//!   of [`LaneOp::mem`] bytes is read and zero-extended (16: an m128).
//!   Forms whose only source besides `a` is an imm8 (`PSRLW xmm, imm8`,
//!   `PSLLDQ`) pass that imm8 as `b` (and as `imm`). Shifts by a vector
//!   count take it from the low 64 bits of `b`; a VEX.256 shift passes the
//!   same count vector to both lanes.
//! - [`LaneIn::c`]: a third vector, the BLENDV selector (legacy: XMM0;
//!   VEX: the register in imm8[7:4]). Zero otherwise.
//! - [`LaneIn::imm`]: the imm8, for a VEX.256 lane as [`lane_imm`] gives it.
//!   INSERTPS with a memory source: the caller clears imm8[7:6] (the m32
//!   is the element; `b` holds it in its low 32 bits).
//! - [`LaneIn::mxcsr`]: MXCSR, for the rounding control of conversions
//!   and of ROUND* with imm8 bit 2 set.
//!
//! The result is the whole 128-bit destination (scalar operations return
//! `a` with the low element replaced, as VEX.128 scalar forms want; the
//! legacy dispatch writes it to the destination register, which was `a`).
//! [`LaneOp::per_lane`] says whether a VEX.256 form is this function on
//! each 128-bit lane; it is false for scalar operations and for those whose
//! 256-bit form crosses lanes (widening/narrowing conversions, PMOVSX/ZX),
//! which the VEX layer does itself.
//!
//! Operations that produce something other than one vector have their
//! own pure functions: [`ptest`] (flags), [`strings::pcmpstr`] (PCMPxSTRx:
//! index or mask, and flags), [`strings::crc32`], [`extract`] and
//! [`insert`] (PEXTR*/EXTRACTPS, PINSR*).
//!
//! Legacy SSE alignment (16-byte m128 operands must be aligned, except
//! MOVU*, LDDQU and PCMPxSTRx) is the caller's business, as are the
//! #UD/#NM checks; VEX forms do not require alignment.
//!
//! Floating point: host f32/f64 arithmetic (round to nearest even), no
//! MXCSR exception flags, no DAZ/FTZ; a NaN result is the first NaN source
//! quieted, as SSE defines it.

pub(crate) mod fp;
mod fpx;
mod int;
pub(crate) mod scalar;
mod sse41;
mod ssse3;
pub(crate) mod strings;
mod strings_host;
mod table;

use iced_x86::Mnemonic;

// `lane_imm`, `LaneOp::unary` and `LaneOp::per_lane` are for the VEX layer.
#[allow(unused_imports)]
pub(crate) use table::lane_imm;
pub(crate) use table::lane_op;

/// The inputs of a lane operation (see the module doc).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct LaneIn {
    pub a: u128,
    pub b: u128,
    pub c: u128,
    pub imm: u8,
    pub mxcsr: u32,
}

/// A 128-bit lane operation.
pub(crate) type LaneFn = fn(&LaneIn) -> u128;

/// A lane operation and how to feed it.
#[derive(Clone, Copy)]
#[allow(dead_code)]
pub(crate) struct LaneOp {
    pub f: LaneFn,
    /// Bytes of a memory `b` operand: 16 (m128), or 8/4/2 for scalar
    /// operations and the widening ones (PMOVSX/ZX, CVTPS2PD, MOVDDUP...).
    pub mem: u8,
    /// `a` is not an input (PABSB, PSHUFD, PMOVSXBW, SQRTPS, MOVDDUP...):
    /// the VEX form has no VEX.vvvv source.
    pub unary: bool,
    /// A VEX.256 form is this operation on each 128-bit lane.
    pub per_lane: bool,
    /// The mnemonic's canonical (legacy) name, for the VEX layer's logs
    /// and for callers that special-case one operation.
    pub name: Mnemonic,
}

impl LaneOp {
    /// Runs the operation.
    #[inline]
    pub fn run(&self, i: &LaneIn) -> u128 {
        (self.f)(i)
    }
}

/// Result flags of PTEST: ZF when `a & b` is zero, CF when `!a & b` is
/// zero; the other arithmetic flags are cleared. Returns RFLAGS bits
/// (VEX.256: ZF and CF each set only when set for both lanes).
pub(crate) fn ptest(a: u128, b: u128) -> u64 {
    use crate::state::rflags::{CF, ZF};
    let mut f = 0;
    if a & b == 0 {
        f |= ZF;
    }
    if !a & b == 0 {
        f |= CF;
    }
    f
}

/// Element `idx` (modulo the element count) of `size` bytes (1, 2, 4 or
/// 8) of `v`: PEXTRB/W/D/Q, EXTRACTPS.
pub(crate) fn extract(v: u128, size: u32, idx: u8) -> u64 {
    let n = 16 / size.clamp(1, 8);
    elem(v, size, idx as u32 % n)
}

/// `v` with element `idx` (modulo the element count) of `size` bytes
/// replaced by the low bytes of `x`: PINSRB/W/D/Q.
pub(crate) fn insert(v: u128, size: u32, idx: u8, x: u64) -> u128 {
    let n = 16 / size.clamp(1, 8);
    let sh = (idx as u32 % n) * size * 8;
    let mask = (crate::flags::size_mask(size) as u128) << sh;
    (v & !mask) | (((x as u128) << sh) & mask)
}

// ------------------------------------------------------------ helpers

/// Applies `f` to each of the 16/size lanes of two 128-bit values.
pub(crate) fn lanes(a: u128, b: u128, size: u32, f: impl Fn(u64, u64) -> u64) -> u128 {
    let bits = size * 8;
    let mask: u128 = if bits >= 64 {
        u64::MAX as u128
    } else {
        (1u128 << bits) - 1
    };
    let mut r = 0u128;
    for i in 0..(128 / bits) {
        let sh = i * bits;
        let x = ((a >> sh) & mask) as u64;
        let y = ((b >> sh) & mask) as u64;
        r |= ((f(x, y) as u128) & mask) << sh;
    }
    r
}

/// Element `i` of `size` bytes of `v`, zero-extended.
#[inline]
pub(crate) fn elem(v: u128, size: u32, i: u32) -> u64 {
    ((v >> (i * size * 8)) as u64) & crate::flags::size_mask(size)
}

/// Builds a vector from `n` elements of `size` bytes.
pub(crate) fn build(size: u32, n: u32, f: impl Fn(u32) -> u64) -> u128 {
    let mask = crate::flags::size_mask(size) as u128;
    let mut r = 0u128;
    for i in 0..n {
        r |= ((f(i) as u128) & mask) << (i * size * 8);
    }
    r
}

/// Sign-extends the low `bits` of `v`.
#[inline]
pub(crate) fn sx(v: u64, bits: u32) -> i64 {
    let sh = 64 - bits;
    ((v << sh) as i64) >> sh
}

pub(crate) fn sat_i8(v: i64) -> u64 {
    v.clamp(-128, 127) as u64 & 0xff
}
pub(crate) fn sat_u8(v: i64) -> u64 {
    v.clamp(0, 255) as u64
}
pub(crate) fn sat_i16(v: i64) -> u64 {
    v.clamp(-32768, 32767) as u64 & 0xffff
}

/// All ones when `c`.
#[inline]
pub(crate) fn all(c: bool) -> u64 {
    if c {
        u64::MAX
    } else {
        0
    }
}
