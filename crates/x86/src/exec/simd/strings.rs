//! SSE4.2 string comparisons (PCMPESTRI/PCMPESTRM/PCMPISTRI/PCMPISTRM)
//! and CRC32.
//!
//! The imm8 of a string comparison: bit 0 words (else bytes), bit 1
//! signed, bits 3:2 the aggregation (equal any, ranges, equal each, equal
//! ordered), bits 5:4 the polarity (+, negate, +, negate only the valid
//! elements of the second operand), bit 6 the most significant index /
//! an element mask (else the least significant index / a bit mask).

use crate::state::rflags::{CF, OF, SF, ZF};

use super::{build, elem, sx};

/// The lengths of the two strings of a PCMPxSTRx.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Lengths {
    /// PCMPISTRx: each string ends before its first zero element.
    Implicit,
    /// PCMPESTRx: the lengths of the first and the second operand as
    /// signed integers (EAX and EDX, or RAX and RDX with REX.W); their
    /// absolute values, saturated to the element count, count.
    Explicit(i64, i64),
}

/// What a PCMPxSTRx produces: the caller writes `index` to ECX (the I
/// forms) or `mask` to XMM0 (the M forms), and `flags` (CF ZF SF OF; AF
/// and PF cleared) to RFLAGS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct StrResult {
    pub index: u32,
    pub mask: u128,
    pub flags: u64,
}

impl StrResult {
    /// Writes the result as the instruction does: `index` to ECX (RCX
    /// zero-extended) for the I forms, else `mask` to XMM0; the flags.
    /// (The interpreter and the JIT's inline PCMPISTRI both write it so.)
    pub(crate) fn write(&self, st: &mut crate::state::CpuState, index: bool) {
        if index {
            st.gpr[1] = self.index as u64;
        } else {
            st.fpu.xmm[0] = self.mask;
        }
        st.flags.set_arith(crate::state::rflags::ARITH, self.flags);
    }
}

/// The string comparison of `a` (first operand, an XMM register) and `b`
/// (second operand, XMM or m128) under `imm`: [`pcmpstr_ref`], on the
/// host's SSE4.2 unit when it has one (`strings_host`).
#[inline]
pub(crate) fn pcmpstr(a: u128, b: u128, imm: u8, lengths: Lengths) -> StrResult {
    super::strings_host::pcmpstr(a, b, imm, lengths)
        .unwrap_or_else(|| pcmpstr_ref(a, b, imm, lengths))
}

/// The definition of [`pcmpstr`], element by element as the SDM's
/// pseudocode goes.
pub(crate) fn pcmpstr_ref(a: u128, b: u128, imm: u8, lengths: Lengths) -> StrResult {
    let size: u32 = if imm & 1 != 0 { 2 } else { 1 };
    let n = 16 / size;
    let signed = imm & 2 != 0;
    let get = |v: u128, j: u32| {
        let e = elem(v, size, j);
        if signed {
            sx(e, size * 8)
        } else {
            e as i64
        }
    };
    let implicit = |v: u128| (0..n).find(|&j| elem(v, size, j) == 0).unwrap_or(n);
    let explicit = |l: i64| l.unsigned_abs().min(n as u64) as u32;
    let (la, lb) = match lengths {
        Lengths::Implicit => (implicit(a), implicit(b)),
        Lengths::Explicit(x, y) => (explicit(x), explicit(y)),
    };
    let agg = (imm >> 2) & 3;
    // BoolRes[i][j] with i indexing `a` and j indexing `b`, after the
    // overrides for invalid elements.
    let bool_res = |i: u32, j: u32| -> bool {
        match (i < la, j < lb) {
            (true, true) => {
                let (x, y) = (get(a, i), get(b, j));
                match agg {
                    1 if i.is_multiple_of(2) => y >= x,
                    1 => y <= x,
                    _ => x == y,
                }
            }
            (false, false) => agg >= 2,
            (false, true) => agg == 3,
            (true, false) => false,
        }
    };
    let mut res1 = 0u32;
    for j in 0..n {
        let hit = match agg {
            0 => (0..n).any(|i| bool_res(i, j)),
            1 => (0..n)
                .step_by(2)
                .any(|i| bool_res(i, j) && bool_res(i + 1, j)),
            2 => bool_res(j, j),
            _ => (0..n - j).all(|k| bool_res(k, j + k)),
        };
        if hit {
            res1 |= 1 << j;
        }
    }
    let all = (1u32 << n) - 1;
    let valid_b = (1u32 << lb) - 1;
    let res2 = match (imm >> 4) & 3 {
        1 => !res1 & all,
        3 => res1 ^ valid_b,
        _ => res1,
    };
    let index = if res2 == 0 {
        n
    } else if imm & 0x40 != 0 {
        31 - res2.leading_zeros()
    } else {
        res2.trailing_zeros()
    };
    let mask = if imm & 0x40 != 0 {
        let ones = crate::flags::size_mask(size);
        build(size, n, |j| if res2 >> j & 1 != 0 { ones } else { 0 })
    } else {
        res2 as u128
    };
    let mut flags = 0;
    if res2 != 0 {
        flags |= CF;
    }
    if lb < n {
        flags |= ZF;
    }
    if la < n {
        flags |= SF;
    }
    if res2 & 1 != 0 {
        flags |= OF;
    }
    StrResult { index, mask, flags }
}

/// CRC32: `crc` updated with the `bytes` low bytes of `data` (least
/// significant first), CRC-32C polynomial 0x11EDC6F41 bit-reflected, no
/// inversion on entry or exit.
pub(crate) fn crc32(crc: u32, data: u64, bytes: u32) -> u32 {
    let mut c = crc;
    for k in 0..bytes.min(8) {
        c ^= (data >> (8 * k)) as u8 as u32;
        for _ in 0..8 {
            let low = c & 1;
            c >>= 1;
            if low != 0 {
                c ^= 0x82f6_3b78;
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_check_value() {
        // The CRC-32C check value: "123456789" with inversion on entry
        // and exit gives 0xE3069283.
        let mut c = !0u32;
        for b in b"123456789" {
            c = crc32(c, *b as u64, 1);
        }
        assert_eq!(!c, 0xe306_9283);
    }

    #[test]
    fn strings_find_a_character_of_a_set() {
        let set = u128::from_le_bytes(*b"xyz\0............");
        let text = u128::from_le_bytes(*b"hello, yz\0abcdef");
        // Equal any, unsigned bytes, least significant index.
        let r = pcmpstr(set, text, 0x00, Lengths::Implicit);
        assert_eq!(r.index, 7);
        assert_eq!(r.flags, CF | ZF | SF);
        // Equal ordered: "yz" found at 7; "lo" at 3.
        let needle = u128::from_le_bytes(*b"lo\0.............");
        let r = pcmpstr(needle, text, 0x0c, Lengths::Implicit);
        assert_eq!(r.index, 3);
        // Explicit lengths, negative length counts by its absolute value.
        let r = pcmpstr(set, text, 0x00, Lengths::Explicit(-3, 7));
        assert_eq!((r.index, r.flags & CF), (16, 0));
    }
}
