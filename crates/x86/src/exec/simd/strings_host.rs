//! PCMPxSTRx on the host's own SSE4.2 unit: the same function as
//! [`super::strings::pcmpstr_ref`] (the definition, which the tests below
//! hold this to for every imm8), about a hundred times cheaper than
//! evaluating the comparison matrix element by element. busybox's shell
//! spends ~4 % of its time in glibc's SSE4.2 string functions (strchr,
//! strcspn, strspn): PCMPISTRI in a loop.
//!
//! The instruction takes its imm8 as an immediate: one instance per
//! value of bits 6:0 (bit 7 is reserved and ignored, as by
//! `pcmpstr_ref`), chosen by a match. The result does not depend on the
//! host's vendor: the SDM and the APM define every output bit (the flags
//! the instruction does not define, AF and PF, are cleared by both and
//! are not read here).

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

use super::strings::{Lengths, StrResult};
use crate::state::rflags::{CF, OF, SF, ZF};

/// `pcmpstr_ref(a, b, imm, lengths)` computed by the host; None when
/// the host has no SSE4.2.
#[cfg(target_arch = "x86_64")]
#[inline]
pub(super) fn pcmpstr(a: u128, b: u128, imm: u8, lengths: Lengths) -> Option<StrResult> {
    if !std::is_x86_feature_detected!("sse4.2") {
        return None;
    }
    // SAFETY: SSE4.2 is present (checked above).
    Some(unsafe { dispatch(a, b, imm, lengths) })
}

#[cfg(not(target_arch = "x86_64"))]
#[inline]
pub(super) fn pcmpstr(_: u128, _: u128, _: u8, _: Lengths) -> Option<StrResult> {
    None
}

/// An explicit length as the instruction counts it: its absolute value
/// saturated to the element count (16 covers bytes and words), so that
/// the 64-bit forms' lengths fit the intrinsics' i32.
#[cfg(target_arch = "x86_64")]
fn saturated(l: i64) -> i32 {
    l.unsigned_abs().min(16) as i32
}

/// The instance of `one` for `imm`'s bits 6:0.
#[cfg(target_arch = "x86_64")]
macro_rules! by_imm {
    ($imm:expr, $f:ident $args:tt; $($n:literal)*) => {
        match $imm & 0x7f {
            $($n => $f::<$n> $args,)*
            _ => $f::<127> $args,
        }
    };
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
unsafe fn dispatch(a: u128, b: u128, imm: u8, lengths: Lengths) -> StrResult {
    // SAFETY: u128 and __m128i have the same size; any bits are valid.
    let (a, b) = unsafe {
        (
            std::mem::transmute::<u128, __m128i>(a),
            std::mem::transmute::<u128, __m128i>(b),
        )
    };
    match lengths {
        Lengths::Implicit => {
            by_imm!(imm, implicit(a, b); 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63 64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79 80 81 82 83 84 85 86 87 88 89 90 91 92 93 94 95 96 97 98 99 100 101 102 103 104 105 106 107 108 109 110 111 112 113 114 115 116 117 118 119 120 121 122 123 124 125 126)
        }
        Lengths::Explicit(la, lb) => {
            let (la, lb) = (saturated(la), saturated(lb));
            by_imm!(imm, explicit(a, la, b, lb); 0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63 64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79 80 81 82 83 84 85 86 87 88 89 90 91 92 93 94 95 96 97 98 99 100 101 102 103 104 105 106 107 108 109 110 111 112 113 114 115 116 117 118 119 120 121 122 123 124 125 126)
        }
    }
}

/// The flags of a comparison, as `StrResult::flags` holds them.
fn flags(c: i32, z: i32, s: i32, o: i32) -> u64 {
    let bit = |v: i32, f: u64| if v != 0 { f } else { 0 };
    bit(c, CF) | bit(z, ZF) | bit(s, SF) | bit(o, OF)
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn implicit<const IMM: i32>(a: __m128i, b: __m128i) -> StrResult {
    let mask = _mm_cmpistrm::<IMM>(a, b);
    StrResult {
        index: _mm_cmpistri::<IMM>(a, b) as u32,
        // SAFETY: same size, any bits valid.
        mask: unsafe { std::mem::transmute::<__m128i, u128>(mask) },
        flags: flags(
            _mm_cmpistrc::<IMM>(a, b),
            _mm_cmpistrz::<IMM>(a, b),
            _mm_cmpistrs::<IMM>(a, b),
            _mm_cmpistro::<IMM>(a, b),
        ),
    }
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "sse4.2")]
fn explicit<const IMM: i32>(a: __m128i, la: i32, b: __m128i, lb: i32) -> StrResult {
    let mask = _mm_cmpestrm::<IMM>(a, la, b, lb);
    StrResult {
        index: _mm_cmpestri::<IMM>(a, la, b, lb) as u32,
        // SAFETY: same size, any bits valid.
        mask: unsafe { std::mem::transmute::<__m128i, u128>(mask) },
        flags: flags(
            _mm_cmpestrc::<IMM>(a, la, b, lb),
            _mm_cmpestrz::<IMM>(a, la, b, lb),
            _mm_cmpestrs::<IMM>(a, la, b, lb),
            _mm_cmpestro::<IMM>(a, la, b, lb),
        ),
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::super::strings::pcmpstr_ref;
    use super::*;

    /// A 16-byte string of random bytes from a small alphabet (so that
    /// elements match often), with a zero at a random place or none.
    fn string(seed: &mut u64) -> u128 {
        let mut next = || {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            *seed
        };
        let mut v = [0u8; 16];
        for x in &mut v {
            *x = b"abc\x80\xff\x01"[(next() % 6) as usize];
        }
        let end = next() % 24;
        if end < 16 {
            v[end as usize] = 0;
            if end + 1 < 16 && next() % 2 == 0 {
                // A word string ends at a zero word only.
                v[end as usize + 1] = 0;
            }
        }
        u128::from_le_bytes(v)
    }

    #[test]
    fn the_host_computes_what_the_definition_says_for_every_imm8() {
        if !std::is_x86_feature_detected!("sse4.2") {
            eprintln!("no SSE4.2 on this host: its path is not used");
            return;
        }
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for imm in 0..=255u8 {
            for round in 0..200 {
                let (a, b) = (string(&mut seed), string(&mut seed));
                let lengths = match round % 3 {
                    0 => Lengths::Implicit,
                    // Lengths past the element count, negative ones, and
                    // 64-bit ones (the REX.W forms) saturate.
                    1 => Lengths::Explicit((seed % 40) as i64 - 20, (seed >> 8) as i64 % 40 - 20),
                    _ => Lengths::Explicit(i64::MIN + (seed % 3) as i64, (seed >> 20) as i64),
                };
                let want = pcmpstr_ref(a, b, imm, lengths);
                let got = pcmpstr(a, b, imm, lengths).expect("SSE4.2");
                assert_eq!(got, want, "imm {imm:#x} a {a:#x} b {b:#x} {lengths:?}");
            }
        }
    }
}
