//! The integer instructions' semantics, written once: pure functions of
//! their operand values and the lazy flags, used by the generic
//! interpreter (`alu.rs`, operands from iced-x86's decoding) and by the
//! specialised handlers (`fast.rs`, pre-decoded operands, size as a const
//! generic). The JIT's inline forms are checked against these by the
//! differential tests (crates/x86/src/tests/jit*.rs).
//!
//! Sizes are in bytes (1, 2, 4, 8); operands and results are masked to
//! them. Registers are named by their code (`op::gpr_code`): 0..15, or
//! 16..19 for AH..BH in a one-byte access. `rec` false skips recording the flags (the block's next
//! instructions overwrite them all); the result is the same.

use crate::exception::{de, R};
use crate::flags::{size_mask, FlagOp, LazyFlags};
use crate::state::rflags::{CF, OF};

/// Reads register `code` as an operand of `size` bytes.
#[inline(always)]
pub(crate) fn gpr_read(g: &[u64; 16], code: u8, size: u32) -> u64 {
    let x = g[(code & 15) as usize];
    match size {
        8 => x,
        4 => x & 0xffff_ffff,
        2 => x & 0xffff,
        _ if code & 16 != 0 => (g[(code & 3) as usize] >> 8) & 0xff,
        _ => x & 0xff,
    }
}

/// Writes register `code` with an operand of `size` bytes: a 4-byte
/// write zero-extends, 1- and 2-byte writes keep the other bits.
#[inline(always)]
pub(crate) fn gpr_write(g: &mut [u64; 16], code: u8, size: u32, v: u64) {
    match size {
        8 => g[(code & 15) as usize] = v,
        4 => g[(code & 15) as usize] = v & 0xffff_ffff,
        2 => {
            let x = &mut g[(code & 15) as usize];
            *x = (*x & !0xffff) | (v & 0xffff);
        }
        _ if code & 16 != 0 => {
            let x = &mut g[(code & 3) as usize];
            *x = (*x & !0xff00) | ((v & 0xff) << 8);
        }
        _ => {
            let x = &mut g[(code & 15) as usize];
            *x = (*x & !0xff) | (v & 0xff);
        }
    }
}

/// The effective address of a memory operand: `disp + base + (index <<
/// scale)`, masked to the address size (`amask`). `base` and `index` are
/// GPR codes 0..15; any other value (no register, or a vector index)
/// adds nothing. A RIP-relative operand has its absolute target in
/// `disp` and no register.
#[inline(always)]
pub(crate) fn ea(g: &[u64; 16], disp: u64, base: u8, index: u8, scale: u8, amask: u64) -> u64 {
    let mut a = disp;
    if base < 16 {
        a = a.wrapping_add(g[base as usize]);
    }
    if index < 16 {
        a = a.wrapping_add(g[index as usize] << scale);
    }
    a & amask
}

/// Two-operand ALU operations, in the order of their opcode extension
/// (`/0`..`/7`), and TEST.
pub(crate) const ADD: u8 = 0;
pub(crate) const OR: u8 = 1;
pub(crate) const ADC: u8 = 2;
pub(crate) const SBB: u8 = 3;
pub(crate) const AND: u8 = 4;
pub(crate) const SUB: u8 = 5;
pub(crate) const XOR: u8 = 6;
pub(crate) const CMP: u8 = 7;
pub(crate) const TEST: u8 = 8;

/// `a OP b`; CMP is SUB and TEST is AND (their callers drop the result).
#[inline(always)]
pub(crate) fn alu(op: u8, size: u32, rec: bool, f: &mut LazyFlags, a: u64, b: u64) -> u64 {
    let m = size_mask(size);
    let (kind, r, c) = match op {
        ADD => (FlagOp::Add, a.wrapping_add(b) & m, 0),
        ADC => {
            let c = f.cf() as u64;
            (FlagOp::Adc, a.wrapping_add(b).wrapping_add(c) & m, c)
        }
        SUB | CMP => (FlagOp::Sub, a.wrapping_sub(b) & m, 0),
        SBB => {
            let c = f.cf() as u64;
            (FlagOp::Sbb, a.wrapping_sub(b).wrapping_sub(c) & m, c)
        }
        AND | TEST => (FlagOp::Logic, a & b, 0),
        OR => (FlagOp::Logic, a | b, 0),
        _ => (FlagOp::Logic, a ^ b, 0),
    };
    if rec {
        f.record(kind, size, a, b, r, c);
    }
    r
}

/// One-operand operations.
pub(crate) const INC: u8 = 0;
pub(crate) const DEC: u8 = 1;
pub(crate) const NEG: u8 = 2;
pub(crate) const NOT: u8 = 3;

/// INC/DEC (CF kept), NEG (flags of 0 - a), NOT (no flags).
#[inline(always)]
pub(crate) fn unary(k: u8, size: u32, rec: bool, f: &mut LazyFlags, a: u64) -> u64 {
    let m = size_mask(size);
    match k {
        INC | DEC => {
            let (kind, r) = if k == INC {
                (FlagOp::Inc, a.wrapping_add(1) & m)
            } else {
                (FlagOp::Dec, a.wrapping_sub(1) & m)
            };
            if rec {
                let c = f.cf() as u64;
                f.record(kind, size, a, 1, r, c);
            }
            r
        }
        NEG => {
            let r = 0u64.wrapping_sub(a) & m;
            if rec {
                f.record(FlagOp::Sub, size, 0, a, r, 0);
            }
            r
        }
        _ => !a & m,
    }
}

/// Shifts.
pub(crate) const SHL: u8 = 0;
pub(crate) const SHR: u8 = 1;
pub(crate) const SAR: u8 = 2;

#[inline(always)]
fn sext(v: u64, size: u32) -> i64 {
    let sh = 64 - size * 8;
    ((v << sh) as i64) >> sh
}

/// SHL/SHR/SAR by `count`, already masked (to 5 bits, 6 for 8 bytes) and
/// not zero (a zero count changes no flag: callers skip the call).
#[inline(always)]
pub(crate) fn shift(k: u8, size: u32, rec: bool, f: &mut LazyFlags, a: u64, count: u32) -> u64 {
    let bits = size * 8;
    let m = size_mask(size);
    let (r, aux) = match k {
        SHL => {
            let r = if count >= 64 { 0 } else { (a << count) & m };
            let cf = if count <= bits {
                (a >> (bits - count)) & 1
            } else {
                0
            };
            (r, cf | ((((r >> (bits - 1)) & 1) ^ cf) << 1))
        }
        SHR => {
            let r = a >> (count & 63);
            let cf = (a >> ((count - 1) & 63)) & 1;
            (r, cf | (((a >> (bits - 1)) & 1) << 1))
        }
        _ => {
            let s = sext(a, size);
            let r = (s >> count.min(63)) as u64 & m;
            (r, ((s >> (count - 1).min(63)) & 1) as u64)
        }
    };
    if rec {
        f.record(FlagOp::Szp, size, a, count as u64, r, aux);
    }
    r
}

/// Rotates without the carry.
pub(crate) const ROL: u8 = 0;
pub(crate) const ROR: u8 = 1;

/// ROL/ROR by `count`, already masked and not zero: only CF and OF
/// change (a count that is a multiple of the width rotates nothing but
/// still sets them from the result).
#[inline(always)]
pub(crate) fn rotate(k: u8, size: u32, rec: bool, f: &mut LazyFlags, a: u64, count: u32) -> u64 {
    let bits = size * 8;
    let m = size_mask(size);
    let c = count % bits;
    let msb = |v: u64| (v >> (bits - 1)) & 1;
    let r = if c == 0 {
        a
    } else if k == ROL {
        ((a << c) | (a >> (bits - c))) & m
    } else {
        ((a >> c) | (a << (bits - c))) & m
    };
    if rec {
        let (cf, of) = if k == ROL {
            let cf = r & 1;
            (cf, msb(r) ^ cf)
        } else {
            (msb(r), msb(r) ^ ((r >> (bits - 2)) & 1))
        };
        f.set_arith(CF | OF, (cf * CF) | (of * OF));
    }
    r
}

/// Two- and three-operand IMUL: the low half of the signed product; CF
/// and OF say it did not fit.
#[inline(always)]
pub(crate) fn imul(size: u32, rec: bool, f: &mut LazyFlags, a: u64, b: u64) -> u64 {
    let full = sext(a, size) as i128 * sext(b, size) as i128;
    let r = full as u64 & size_mask(size);
    if rec {
        let overflow = sext(r, size) as i128 != full;
        f.record(FlagOp::Szp, size, a, b, r, overflow as u64 * 3);
    }
    r
}

/// One-operand MUL (`signed` false) / IMUL of the accumulator `a` by
/// `src`: (low half, high half); CF and OF say the high half matters.
#[inline(always)]
pub(crate) fn mul(
    signed: bool,
    size: u32,
    rec: bool,
    f: &mut LazyFlags,
    a: u64,
    src: u64,
) -> (u64, u64) {
    let bits = size * 8;
    let m = size_mask(size);
    let (lo, hi, wide) = if signed {
        let full = sext(a, size) as i128 * sext(src, size) as i128;
        let lo = full as u64 & m;
        (
            lo,
            (full >> bits) as u64 & m,
            sext(lo, size) as i128 != full,
        )
    } else {
        let full = a as u128 * src as u128;
        let hi = (full >> bits) as u64 & m;
        (full as u64 & m, hi, hi != 0)
    };
    if rec {
        f.record(FlagOp::Szp, size, a, src, lo, wide as u64 * 3);
    }
    (lo, hi)
}

/// One-operand DIV (`signed` false) / IDIV of `hi:lo` by `src`:
/// (quotient, remainder), or #DE for a zero divisor or a quotient that
/// does not fit. The flags are undefined and left alone.
#[inline(always)]
pub(crate) fn div(signed: bool, size: u32, lo: u64, hi: u64, src: u64) -> R<(u64, u64)> {
    if src == 0 {
        return Err(de());
    }
    let bits = size * 8;
    let m = size_mask(size);
    if signed {
        let n = if size == 8 {
            (((hi as u128) << 64) | lo as u128) as i128
        } else {
            sext(((hi << bits) | lo) & size_mask(size * 2), size * 2) as i128
        };
        let d = sext(src, size) as i128;
        let q = n.checked_div(d).ok_or_else(de)?;
        let (min, max) = (-(1i128 << (bits - 1)), (1i128 << (bits - 1)) - 1);
        if q < min || q > max {
            return Err(de());
        }
        Ok((q as u64 & m, n.checked_rem(d).unwrap_or(0) as u64 & m))
    } else {
        let n = ((hi as u128) << bits) | lo as u128;
        let q = n / src as u128;
        if q > m as u128 {
            return Err(de());
        }
        Ok((q as u64, (n % src as u128) as u64))
    }
}

/// Bit tests.
pub(crate) const BT: u8 = 0;
pub(crate) const BTS: u8 = 1;
pub(crate) const BTR: u8 = 2;
pub(crate) const BTC: u8 = 3;

/// BT/BTS/BTR/BTC of bit `bit` (already reduced to the operand): CF is
/// the bit, the other flags are kept; the new value (`a` for BT).
#[inline(always)]
pub(crate) fn bit_test(k: u8, rec: bool, f: &mut LazyFlags, a: u64, bit: u32) -> u64 {
    if rec {
        f.set_arith(CF, ((a >> bit) & 1) * CF);
    }
    let m = 1u64 << bit;
    match k {
        BT => a,
        BTS => a | m,
        BTR => a & !m,
        _ => a ^ m,
    }
}
