//! Lazy arithmetic flags: the last flag-setting operation is remembered
//! (kind, operands, result, size) and CF/PF/AF/ZF/SF/OF are computed only
//! when something reads them.

use crate::state::rflags::*;

/// The operation whose result the lazy flags describe.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum FlagOp {
    /// Flags are materialised in `bits`.
    None,
    Add,
    /// ADC; `aux` holds the carry-in.
    Adc,
    Sub,
    /// SBB; `aux` holds the borrow-in.
    Sbb,
    /// AND/OR/XOR/TEST: CF=OF=AF=0.
    Logic,
    /// INC; `aux` holds the preserved CF.
    Inc,
    /// DEC; `aux` holds the preserved CF.
    Dec,
    /// SF/ZF/PF from the result, CF = `aux` bit 0, OF = `aux` bit 1,
    /// AF = 0 (shifts, multiplications).
    Szp,
}

/// RFLAGS with lazily evaluated arithmetic flags (one cache line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(align(64))]
pub struct LazyFlags {
    /// All RFLAGS bits; the arithmetic ones are valid only when `op` is None.
    bits: u64,
    op: FlagOp,
    /// The operand-size mask (0xff, 0xffff, 0xffff_ffff, all ones). Kept
    /// as a whole word rather than the size in bytes: reading it back right
    /// after `record` then forwards from the store (a byte field next to
    /// `op` would be read with a wider load and stall).
    mask: u64,
    a: u64,
    b: u64,
    res: u64,
    aux: u64,
}

#[inline]
pub fn size_mask(size: u32) -> u64 {
    if size >= 8 {
        u64::MAX
    } else {
        (1u64 << (size * 8)) - 1
    }
}

#[inline]
pub fn sign_bit(size: u32) -> u64 {
    1u64 << (size * 8 - 1)
}

#[inline]
fn parity(v: u64) -> bool {
    (v as u8).count_ones() & 1 == 0
}

/// Byte offsets of the [`LazyFlags`] fields, for code the JIT emits.
pub(crate) struct FlagsLayout {
    pub op: usize,
    pub mask: usize,
    pub a: usize,
    pub b: usize,
    pub res: usize,
    pub aux: usize,
}

impl LazyFlags {
    pub(crate) const LAYOUT: FlagsLayout = FlagsLayout {
        op: std::mem::offset_of!(LazyFlags, op),
        mask: std::mem::offset_of!(LazyFlags, mask),
        a: std::mem::offset_of!(LazyFlags, a),
        b: std::mem::offset_of!(LazyFlags, b),
        res: std::mem::offset_of!(LazyFlags, res),
        aux: std::mem::offset_of!(LazyFlags, aux),
    };

    pub fn new(bits: u64) -> Self {
        LazyFlags {
            bits,
            op: FlagOp::None,
            mask: u64::MAX,
            a: 0,
            b: 0,
            res: 0,
            aux: 0,
        }
    }

    /// The non-arithmetic bits (IF, DF, TF, IOPL, VM...), always exact; the
    /// arithmetic bits in it may be stale.
    #[inline]
    pub fn raw_bits(&self) -> u64 {
        self.bits
    }

    /// Sets or clears non-arithmetic bits (IF, DF, AC...).
    #[inline]
    pub fn set_bit(&mut self, bit: u64, on: bool) {
        debug_assert_eq!(bit & ARITH, 0);
        if on {
            self.bits |= bit;
        } else {
            self.bits &= !bit;
        }
    }

    /// The full RFLAGS value.
    pub fn get(&self) -> u64 {
        if self.op == FlagOp::None {
            return self.bits;
        }
        let mut v = self.bits & !ARITH;
        if self.cf() {
            v |= CF;
        }
        if self.pf() {
            v |= PF;
        }
        if self.af() {
            v |= AF;
        }
        if self.zf() {
            v |= ZF;
        }
        if self.sf() {
            v |= SF;
        }
        if self.of() {
            v |= OF;
        }
        v
    }

    /// Replaces the whole RFLAGS value.
    pub fn set(&mut self, v: u64) {
        self.bits = v;
        self.op = FlagOp::None;
    }

    /// Materialises the arithmetic flags, then replaces those in `mask`
    /// with the ones in `v`.
    pub fn set_arith(&mut self, mask: u64, v: u64) {
        let cur = self.get();
        self.set((cur & !mask) | (v & mask));
    }

    #[inline]
    pub fn record(&mut self, op: FlagOp, size: u32, a: u64, b: u64, res: u64, aux: u64) {
        self.op = op;
        self.mask = size_mask(size);
        self.a = a;
        self.b = b;
        self.res = res;
        self.aux = aux;
    }

    #[inline]
    fn mask(&self) -> u64 {
        self.mask
    }
    #[inline]
    fn top(&self) -> u64 {
        self.mask ^ (self.mask >> 1)
    }

    pub fn cf(&self) -> bool {
        let m = self.mask();
        match self.op {
            FlagOp::None => self.bits & CF != 0,
            FlagOp::Add => (self.res & m) < (self.a & m),
            FlagOp::Adc => {
                if self.aux != 0 {
                    (self.res & m) <= (self.a & m)
                } else {
                    (self.res & m) < (self.a & m)
                }
            }
            FlagOp::Sub => (self.a & m) < (self.b & m),
            FlagOp::Sbb => {
                if self.aux != 0 {
                    (self.a & m) <= (self.b & m)
                } else {
                    (self.a & m) < (self.b & m)
                }
            }
            FlagOp::Logic => false,
            FlagOp::Inc | FlagOp::Dec => self.aux != 0,
            FlagOp::Szp => self.aux & 1 != 0,
        }
    }

    pub fn zf(&self) -> bool {
        match self.op {
            FlagOp::None => self.bits & ZF != 0,
            _ => self.res & self.mask() == 0,
        }
    }

    pub fn sf(&self) -> bool {
        match self.op {
            FlagOp::None => self.bits & SF != 0,
            _ => self.res & self.top() != 0,
        }
    }

    pub fn pf(&self) -> bool {
        match self.op {
            FlagOp::None => self.bits & PF != 0,
            _ => parity(self.res),
        }
    }

    pub fn af(&self) -> bool {
        match self.op {
            FlagOp::None => self.bits & AF != 0,
            FlagOp::Logic | FlagOp::Szp => false,
            FlagOp::Inc => self.res & 0xf == 0,
            FlagOp::Dec => self.res & 0xf == 0xf,
            _ => (self.a ^ self.b ^ self.res) & 0x10 != 0,
        }
    }

    pub fn of(&self) -> bool {
        let t = self.top();
        match self.op {
            FlagOp::None => self.bits & OF != 0,
            FlagOp::Add | FlagOp::Adc => (self.a ^ self.res) & (self.b ^ self.res) & t != 0,
            FlagOp::Sub | FlagOp::Sbb => (self.a ^ self.b) & (self.a ^ self.res) & t != 0,
            FlagOp::Logic => false,
            FlagOp::Inc => self.res & self.mask() == t,
            FlagOp::Dec => self.res & self.mask() == t - 1,
            FlagOp::Szp => self.aux & 2 != 0,
        }
    }

    pub fn df(&self) -> bool {
        self.bits & DF != 0
    }

    /// Evaluates condition code `cc` (0..15 in the Jcc encoding order).
    #[inline]
    pub fn cond(&self, cc: u8) -> bool {
        let r = match cc >> 1 {
            0 => self.of(),
            1 => self.cf(),
            2 => self.zf(),
            3 => self.cf() || self.zf(),
            4 => self.sf(),
            5 => self.pf(),
            6 => self.sf() != self.of(),
            _ => self.zf() || (self.sf() != self.of()),
        };
        r != (cc & 1 != 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_flags_byte() {
        let mut f = LazyFlags::new(FIXED1);
        f.record(FlagOp::Add, 1, 0x7f, 1, 0x80, 0);
        assert!(f.of() && f.sf() && !f.zf() && !f.cf() && f.af());
        f.record(FlagOp::Add, 1, 0xff, 1, 0x100, 0);
        assert!(f.cf() && f.zf() && !f.of() && f.pf());
    }

    #[test]
    fn set_arith_materialises() {
        let mut f = LazyFlags::new(FIXED1);
        f.record(FlagOp::Sub, 4, 1, 2, 0xffff_ffff, 0);
        f.set_arith(CF, 0);
        assert_eq!(f.get() & (CF | SF | ZF), SF);
    }
}
