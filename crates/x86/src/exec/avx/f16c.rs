//! F16C: VCVTPH2PS (half → single, exact) and VCVTPS2PH (single → half,
//! rounded as imm8 says: bits 1:0 a rounding mode, or MXCSR.RC when bit
//! 2 is set), with IEEE subnormals, infinities and NaNs (a signalling NaN
//! is quieted, the payload kept as far as it fits).

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::mov::{y_elem, y_set_elem};
use super::Y;
use crate::exception::R;
use crate::exec::Exec;

/// A half-precision value as a single-precision one (exact).
pub(crate) fn half_to_single(h: u16) -> u32 {
    let sign = (h as u32 & 0x8000) << 16;
    let exp = (h >> 10) & 0x1f;
    let mant = h as u32 & 0x3ff;
    match exp {
        0x1f if mant == 0 => sign | 0x7f80_0000,
        0x1f => sign | 0x7fc0_0000 | mant << 13,
        0 if mant == 0 => sign,
        // Subnormal: mant × 2^-24, exact in single precision.
        0 => sign | (mant as f32 * 2f32.powi(-24)).to_bits(),
        _ => sign | (exp as u32 + 127 - 15) << 23 | mant << 13,
    }
}

/// A single-precision value rounded to half precision with rounding
/// control `rc` (0 nearest even, 1 down, 2 up, 3 toward zero).
pub(crate) fn single_to_half(f: u32, rc: u8) -> u16 {
    let sign = ((f >> 16) & 0x8000) as u16;
    let exp = (f >> 23) & 0xff;
    let mant = f & 0x7f_ffff;
    if exp == 0xff {
        return if mant == 0 {
            sign | 0x7c00
        } else {
            sign | 0x7e00 | (mant >> 13) as u16
        };
    }
    // The value is m × 2^(e − 150).
    let (m, e) = if exp == 0 {
        (mant as u64, 1i32)
    } else {
        ((mant | 0x80_0000) as u64, exp as i32)
    };
    if m == 0 {
        return sign;
    }
    let log2 = 63 - m.leading_zeros() as i32 + e - 150;
    // The quantum of the result: 10 fraction bits, or 2^-24 for subnormals.
    let q = (log2 - 10).max(-24);
    let shift = (q - (e - 150)) as u32;
    let (mut r, rem, half) = if shift == 0 {
        (m, 0, 1)
    } else if shift >= 40 {
        (0, m, u64::MAX)
    } else {
        (m >> shift, m & ((1 << shift) - 1), 1u64 << (shift - 1))
    };
    let negative = sign != 0;
    let up = rem != 0
        && match rc & 3 {
            0 => rem > half || (rem == half && r & 1 == 1),
            1 => negative,
            2 => !negative,
            _ => false,
        };
    if up {
        r += 1;
    }
    let mut q = q;
    if r >= 2048 {
        r >>= 1;
        q += 1;
    }
    // With q = -24 a value below 1024 is subnormal and 1024..2047 has
    // biased exponent 1: both encode as r itself.
    let bits = if q == -24 {
        r as u32
    } else {
        let biased = q + 25;
        if biased >= 31 {
            let to_inf = match rc & 3 {
                0 => true,
                1 => negative,
                2 => !negative,
                _ => false,
            };
            return sign | if to_inf { 0x7c00 } else { 0x7bff };
        }
        (biased as u32) << 10 | (r as u32 - 1024)
    };
    sign | bits as u16
}

impl Exec<'_> {
    /// VCVTPH2PS and VCVTPS2PH; `None` for other mnemonics.
    pub(super) fn vex_f16c(&mut self, insn: &Instruction, m: Mnemonic) -> Option<R<()>> {
        match m {
            Mnemonic::Vcvtph2ps => Some((|| {
                let wide = insn.op0_register().is_ymm();
                let src = self.vsrc(insn, 1)?;
                let mut r: Y = [0, 0];
                for i in 0..if wide { 8 } else { 4 } {
                    let h = y_elem(src, 2, i) as u16;
                    r = y_set_elem(r, 4, i, half_to_single(h) as u64);
                }
                self.vdst(insn, r)
            })()),
            Mnemonic::Vcvtps2ph => Some((|| {
                let src = self.vreg_op(insn, 1)?;
                let wide = insn.op1_register().is_ymm();
                let imm = insn.immediate8();
                let rc = if imm & 4 != 0 {
                    ((self.c.state.fpu.mxcsr >> 13) & 3) as u8
                } else {
                    imm & 3
                };
                let n = if wide { 8 } else { 4 };
                let mut r: Y = [0, 0];
                for i in 0..n {
                    let f = y_elem(src, 4, i) as u32;
                    r = y_set_elem(r, 2, i, single_to_half(f, rc) as u64);
                }
                if insn.op0_kind() == OpKind::Memory {
                    self.vmem_write(insn, n * 2, false, r)
                } else {
                    self.vdst(insn, r)
                }
            })()),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_half_converts_exactly_and_back() {
        for h in 0..=u16::MAX {
            let f = half_to_single(h);
            let is_nan = h & 0x7c00 == 0x7c00 && h & 0x3ff != 0;
            if is_nan {
                assert!(f32::from_bits(f).is_nan());
                // Quieted, payload kept.
                assert_eq!(single_to_half(f, 0), h | 0x200, "{h:#x}");
                continue;
            }
            for rc in 0..4 {
                assert_eq!(single_to_half(f, rc), h, "{h:#x} rc {rc}");
            }
        }
    }

    #[test]
    fn rounding_modes_overflow_and_subnormals() {
        let one = 0x3c00u16;
        // 1 + 2^-11 lies halfway between 1 and 1 + 2^-10: ties to even.
        let f = (1.0f32 + 2f32.powi(-11)).to_bits();
        assert_eq!(single_to_half(f, 0), one);
        assert_eq!(single_to_half(f, 1), one);
        assert_eq!(single_to_half(f, 2), one + 1);
        assert_eq!(single_to_half(f, 3), one);
        let neg = f | 0x8000_0000;
        assert_eq!(single_to_half(neg, 1), 0x8000 | (one + 1));
        assert_eq!(single_to_half(neg, 2), 0x8000 | one);
        // 1 + 3 * 2^-11: halfway, the odd neighbour rounds up.
        let f = (1.0f32 + 3.0 * 2f32.powi(-11)).to_bits();
        assert_eq!(single_to_half(f, 0), one + 2);
        // Overflow: 65520 rounds to infinity to nearest, 65504 toward zero.
        let big = 65520f32.to_bits();
        assert_eq!(single_to_half(big, 0), 0x7c00);
        assert_eq!(single_to_half(big, 3), 0x7bff);
        assert_eq!(single_to_half(big, 1), 0x7bff);
        assert_eq!(single_to_half(big | 1 << 31, 1), 0xfc00);
        assert_eq!(single_to_half(1e10f32.to_bits(), 2), 0x7c00);
        // Subnormals: 2^-24 is the smallest; half of it ties to zero.
        assert_eq!(single_to_half(2f32.powi(-24).to_bits(), 0), 1);
        assert_eq!(single_to_half(2f32.powi(-25).to_bits(), 0), 0);
        assert_eq!(single_to_half(2f32.powi(-25).to_bits(), 2), 1);
        assert_eq!(single_to_half((1.5 * 2f32.powi(-24)).to_bits(), 0), 2);
        assert_eq!(single_to_half(1e-30f32.to_bits(), 2), 1);
        assert_eq!(single_to_half((-1e-30f32).to_bits(), 0), 0x8000);
        // The largest subnormal rounding up to the smallest normal.
        let f = (2f32.powi(-14) - 2f32.powi(-26)).to_bits();
        assert_eq!(single_to_half(f, 0), 0x0400);
        // Infinities and NaNs.
        assert_eq!(single_to_half(f32::INFINITY.to_bits(), 3), 0x7c00);
        assert_eq!(single_to_half(0x7f80_0001, 0), 0x7e00, "sNaN quieted");
        assert_eq!(single_to_half(0xffc0_0000, 0), 0xfe00);
    }
}
