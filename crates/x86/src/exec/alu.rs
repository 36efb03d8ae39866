//! Integer arithmetic, logic, shifts, multiply/divide, bit operations and
//! data movement.

use iced_x86::{Instruction, Mnemonic, OpKind, Register};

use super::{sem, Dst, Exec};
use crate::exception::{de, gp, ud, R};
use crate::flags::{sign_bit, size_mask};
use crate::state::rflags::*;
use crate::state::{Mode, RAX, RBX, RCX, RDX};

/// SF, ZF and PF of a result.
#[inline]
pub(crate) fn szp(r: u64, size: u32) -> u64 {
    let mut f = 0;
    if r & size_mask(size) == 0 {
        f |= ZF;
    }
    if r & sign_bit(size) != 0 {
        f |= SF;
    }
    if (r as u8).count_ones() & 1 == 0 {
        f |= PF;
    }
    f
}

#[inline]
fn sext(v: u64, size: u32) -> i64 {
    let sh = 64 - size * 8;
    ((v << sh) as i64) >> sh
}

impl Exec<'_> {
    /// Read-modify-write of a destination, as a host atomic when LOCKed.
    pub(crate) fn rmw<F: FnMut(&mut Self, u64) -> u64>(
        &mut self,
        insn: &Instruction,
        d: Dst,
        size: u32,
        mut f: F,
    ) -> R<()> {
        if let Dst::Mem(lin) = d {
            if insn.has_lock_prefix() && self.locked_rmw(lin, size, &mut f)? {
                return Ok(());
            }
        }
        let old = self.read_dst(d, size)?;
        let new = f(self, old);
        self.write_dst(d, size, new)
    }

    /// The two-operand ALU operation `m` with flags.
    #[inline]
    pub(crate) fn alu_op(&mut self, m: Mnemonic, a: u64, b: u64, size: u32) -> u64 {
        let op = match m {
            Mnemonic::Add => sem::ADD,
            Mnemonic::Adc => sem::ADC,
            Mnemonic::Sub | Mnemonic::Cmp => sem::SUB,
            Mnemonic::Sbb => sem::SBB,
            Mnemonic::And | Mnemonic::Test => sem::AND,
            Mnemonic::Or => sem::OR,
            _ => sem::XOR,
        };
        sem::alu(op, size, true, &mut self.c.state.flags, a, b)
    }

    pub(super) fn alu2(&mut self, insn: &Instruction) -> R<()> {
        let m = insn.mnemonic();
        let size = Self::op_size(insn, 0);
        let b = self.read_op(insn, 1, size)?;
        if matches!(m, Mnemonic::Cmp | Mnemonic::Test) {
            let a = self.read_op(insn, 0, size)?;
            self.alu_op(m, a, b, size);
            return Ok(());
        }
        // Fast path: register destination.
        if insn.op0_kind() == OpKind::Register {
            let r = insn.op0_register();
            let a = self.gpr(r);
            let v = self.alu_op(m, a, b, size);
            self.set_gpr(r, v);
            return Ok(());
        }
        let d = self.dst(insn, size)?;
        self.rmw(insn, d, size, |ex, a| ex.alu_op(m, a, b, size))
    }

    pub(super) fn alu1(&mut self, insn: &Instruction) -> R<()> {
        let m = insn.mnemonic();
        let size = Self::op_size(insn, 0);
        let d = self.dst(insn, size)?;
        let k = match m {
            Mnemonic::Inc => sem::INC,
            Mnemonic::Dec => sem::DEC,
            Mnemonic::Neg => sem::NEG,
            _ => sem::NOT,
        };
        self.rmw(insn, d, size, |ex, a| {
            sem::unary(k, size, true, &mut ex.c.state.flags, a)
        })
    }

    /// A shift or rotate by a masked, non-zero count.
    fn shift_op(&mut self, m: Mnemonic, a: u64, count: u32, size: u32) -> u64 {
        let f = &mut self.c.state.flags;
        match m {
            Mnemonic::Shl | Mnemonic::Sal => sem::shift(sem::SHL, size, true, f, a, count),
            Mnemonic::Shr => sem::shift(sem::SHR, size, true, f, a, count),
            Mnemonic::Sar => sem::shift(sem::SAR, size, true, f, a, count),
            Mnemonic::Rol => sem::rotate(sem::ROL, size, true, f, a, count),
            Mnemonic::Ror => sem::rotate(sem::ROR, size, true, f, a, count),
            _ => self.rotate_carry(m == Mnemonic::Rcl, a, count, size),
        }
    }

    /// RCL (`left`) / RCR: a rotate through CF of `size * 8 + 1` bits;
    /// only CF and OF change.
    fn rotate_carry(&mut self, left: bool, a: u64, count: u32, size: u32) -> u64 {
        let bits = size * 8;
        let mask = size_mask(size);
        let msb = |v: u64| (v >> (bits - 1)) & 1;
        let c = count % (bits + 1);
        if c == 0 {
            return a;
        }
        let cf_in = self.c.state.flags.get() & CF;
        let w = bits + 1;
        let v = (a as u128) | ((cf_in as u128) << bits);
        let wm = (1u128 << w) - 1;
        let rr = if left {
            ((v << c) | (v >> (w - c))) & wm
        } else {
            ((v >> c) | (v << (w - c))) & wm
        };
        let r = (rr as u64) & mask;
        let cf = ((rr >> bits) & 1) as u64;
        let of = if left {
            msb(r) ^ cf
        } else {
            msb(r) ^ ((r >> (bits - 2)) & 1)
        };
        self.c.state.flags.set_arith(CF | OF, (cf * CF) | (of * OF));
        r
    }

    pub(super) fn shift(&mut self, insn: &Instruction) -> R<()> {
        let m = insn.mnemonic();
        let size = Self::op_size(insn, 0);
        let count = if insn.op_count() < 2 {
            1
        } else {
            self.read_op(insn, 1, 1)? as u32
        };
        let count = count & if size == 8 { 0x3f } else { 0x1f };
        let d = self.dst(insn, size)?;
        if count == 0 {
            // No flags change; a 32-bit register is still zero-extended.
            let v = self.read_dst(d, size)?;
            if let Dst::Reg(_) = d {
                self.write_dst(d, size, v)?;
            }
            return Ok(());
        }
        self.rmw(insn, d, size, |ex, a| ex.shift_op(m, a, count, size))
    }

    pub(super) fn shift_double(&mut self, insn: &Instruction) -> R<()> {
        let left = insn.mnemonic() == Mnemonic::Shld;
        let size = Self::op_size(insn, 0);
        let bits = size * 8;
        let src = self.read_op(insn, 1, size)?;
        let count = self.read_op(insn, 2, 1)? as u32 & if size == 8 { 0x3f } else { 0x1f };
        let d = self.dst(insn, size)?;
        if count == 0 {
            let v = self.read_dst(d, size)?;
            if let Dst::Reg(_) = d {
                self.write_dst(d, size, v)?;
            }
            return Ok(());
        }
        let mask = size_mask(size);
        self.rmw(insn, d, size, |ex, a| {
            // Work on a 2*bits-wide (up to 128-bit) concatenation.
            let (r, cf) = if left {
                let v = ((a as u128) << bits) | src as u128;
                let shifted = v << count;
                let r = ((shifted >> bits) as u64) & mask;
                let cf = ((v >> (2 * bits - count)) & 1) as u64;
                (r, cf)
            } else {
                let v = ((src as u128) << bits) | a as u128;
                let r = ((v >> count) as u64) & mask;
                let cf = ((v >> (count - 1)) & 1) as u64;
                (r, cf)
            };
            let of = ((r ^ a) >> (bits - 1)) & 1;
            let mut nf = szp(r, size);
            if cf != 0 {
                nf |= CF;
            }
            if of != 0 {
                nf |= OF;
            }
            ex.c.state.flags.set_arith(ARITH, nf);
            r
        })
    }

    pub(super) fn muldiv(&mut self, insn: &Instruction) -> R<()> {
        let m = insn.mnemonic();
        if m == Mnemonic::Imul && insn.op_count() >= 2 {
            let size = Self::op_size(insn, 0);
            let (a, b) = if insn.op_count() == 3 {
                (self.read_op(insn, 1, size)?, self.read_op(insn, 2, size)?)
            } else {
                (self.read_op(insn, 0, size)?, self.read_op(insn, 1, size)?)
            };
            let r = sem::imul(size, true, &mut self.c.state.flags, a, b);
            self.set_gpr(insn.op0_register(), r);
            return Ok(());
        }
        let size = Self::op_size(insn, 0);
        let src = self.read_op(insn, 0, size)?;
        // The implicit accumulator pair.
        let (lo, hi) = if size == 1 {
            let ax = self.gpr_sized(RAX, 2);
            (ax & 0xff, ax >> 8)
        } else {
            (self.gpr_sized(RAX, size), self.gpr_sized(RDX, size))
        };
        let (lo, hi) = match m {
            Mnemonic::Mul | Mnemonic::Imul => {
                let f = &mut self.c.state.flags;
                sem::mul(m == Mnemonic::Imul, size, true, f, lo, src)
            }
            _ => sem::div(m == Mnemonic::Idiv, size, lo, hi, src)?,
        };
        if size == 1 {
            self.set_gpr_sized(RAX, 2, (lo & 0xff) | ((hi & 0xff) << 8));
        } else {
            self.set_gpr_sized(RAX, size, lo);
            self.set_gpr_sized(RDX, size, hi);
        }
        Ok(())
    }

    pub(super) fn bit_test(&mut self, insn: &Instruction) -> R<()> {
        let m = insn.mnemonic();
        let size = Self::op_size(insn, 0);
        let bits = size as u64 * 8;
        let imm = insn.op1_kind() != OpKind::Register;
        let off = self.read_op(insn, 1, size)?;
        let (d, bit) = if insn.op0_kind() == OpKind::Memory && !imm {
            // The bit offset is a signed index that can leave the operand.
            let soff = sext(off, size);
            let byte_off = (soff >> (bits.trailing_zeros())) * size as i64;
            let ea = self.ea(insn).wrapping_add(byte_off as u64) & self.addr_mask(insn);
            let write = m != Mnemonic::Bt;
            let lin = self.seg_lin(Self::mem_seg(insn), ea, size, write)?;
            (Dst::Mem(lin), (off & (bits - 1)) as u32)
        } else {
            let d = if m == Mnemonic::Bt && insn.op0_kind() == OpKind::Memory {
                let ea = self.ea(insn);
                Dst::Mem(self.seg_lin(Self::mem_seg(insn), ea, size, false)?)
            } else {
                self.dst(insn, size)?
            };
            (d, (off & (bits - 1)) as u32)
        };
        let k = match m {
            Mnemonic::Bt => sem::BT,
            Mnemonic::Bts => sem::BTS,
            Mnemonic::Btr => sem::BTR,
            _ => sem::BTC,
        };
        if k == sem::BT {
            let v = match d {
                Dst::Reg(r) => self.gpr(r),
                Dst::Mem(lin) => {
                    let u = self.user();
                    self.read_lin(lin, size, u)?
                }
            };
            sem::bit_test(k, true, &mut self.c.state.flags, v, bit);
            return Ok(());
        }
        self.rmw(insn, d, size, |ex, v| {
            sem::bit_test(k, true, &mut ex.c.state.flags, v, bit)
        })
    }

    /// The address-size mask of a memory operand.
    pub(crate) fn addr_mask(&self, insn: &Instruction) -> u64 {
        let r = if insn.memory_base() != Register::None {
            insn.memory_base()
        } else {
            insn.memory_index()
        };
        match r.size() {
            2 => 0xffff,
            4 => 0xffff_ffff,
            8 => u64::MAX,
            _ => match self.c.state.code_bits {
                64 => u64::MAX,
                32 => 0xffff_ffff,
                _ => 0xffff,
            },
        }
    }

    pub(super) fn bit_scan(&mut self, insn: &Instruction) -> R<()> {
        let m = insn.mnemonic();
        let size = Self::op_size(insn, 0);
        let bits = size * 8;
        let src = self.read_op(insn, 1, size)?;
        let m = match m {
            Mnemonic::Tzcnt if !self.c.has_feature_bmi1() => Mnemonic::Bsf,
            Mnemonic::Lzcnt if !self.c.has_feature_lzcnt() => Mnemonic::Bsr,
            m => m,
        };
        let fl = self.c.state.flags.get();
        match m {
            Mnemonic::Bsf | Mnemonic::Bsr => {
                if src == 0 {
                    self.c.state.flags.set_arith(ARITH, ZF);
                    return Ok(());
                }
                let r = if m == Mnemonic::Bsf {
                    src.trailing_zeros() as u64
                } else {
                    63 - src.leading_zeros() as u64
                };
                self.c.state.flags.set_arith(ARITH, szp(r, size) & PF);
                self.set_gpr(insn.op0_register(), r);
            }
            Mnemonic::Tzcnt | Mnemonic::Lzcnt => {
                let r = if m == Mnemonic::Tzcnt {
                    if src == 0 {
                        bits as u64
                    } else {
                        src.trailing_zeros() as u64
                    }
                } else {
                    (src.leading_zeros() - (64 - bits)) as u64
                };
                let mut nf = fl & (SF | OF | AF | PF);
                if src == 0 {
                    nf |= CF;
                }
                if r == 0 {
                    nf |= ZF;
                }
                self.c.state.flags.set_arith(ARITH, nf);
                self.set_gpr(insn.op0_register(), r);
            }
            _ => {
                let r = src.count_ones() as u64;
                self.c
                    .state
                    .flags
                    .set_arith(ARITH, if src == 0 { ZF } else { 0 });
                self.set_gpr(insn.op0_register(), r);
            }
        }
        Ok(())
    }

    pub(super) fn bswap(&mut self, insn: &Instruction) -> R<()> {
        let r = insn.op0_register();
        let v = self.gpr(r);
        let nv = match r.size() {
            8 => v.swap_bytes(),
            4 => (v as u32).swap_bytes() as u64,
            _ => 0,
        };
        self.set_gpr(r, nv);
        Ok(())
    }

    pub(super) fn mov(&mut self, insn: &Instruction) -> R<()> {
        let k0 = insn.op0_kind();
        let k1 = insn.op1_kind();
        if k0 == OpKind::Register {
            let r0 = insn.op0_register();
            if r0.is_gpr() {
                if k1 == OpKind::Register {
                    let r1 = insn.op1_register();
                    if r1.is_segment_register() {
                        let v = self.c.state.seg[r1 as usize - Register::ES as usize].selector;
                        self.set_gpr(r0, v as u64);
                        return Ok(());
                    }
                    if r1.is_cr() || r1.is_dr() {
                        return self.mov_from_crdr(insn);
                    }
                    let v = self.gpr(r1);
                    self.set_gpr(r0, v);
                    return Ok(());
                }
                let size = r0.size() as u32;
                let v = self.read_op(insn, 1, size)?;
                self.set_gpr(r0, v);
                return Ok(());
            }
            if r0.is_segment_register() {
                let v = self.read_op(insn, 1, 2)? as u16;
                let s = r0 as usize - Register::ES as usize;
                if s == crate::state::CS {
                    return Err(ud());
                }
                return self.load_seg(s, v);
            }
            if r0.is_cr() || r0.is_dr() {
                return self.mov_to_crdr(insn);
            }
            return self.unimplemented(insn);
        }
        // Memory destination.
        let size = Self::op_size(insn, 0);
        let v = if k1 == OpKind::Register && insn.op1_register().is_segment_register() {
            let r = insn.op1_register();
            self.c.state.seg[r as usize - Register::ES as usize].selector as u64
        } else {
            self.read_op(insn, 1, size)?
        };
        self.write_op(insn, 0, size, v)
    }

    pub(super) fn movx(&mut self, insn: &Instruction) -> R<()> {
        let dsize = insn.op0_register().size() as u32;
        let ssize = Self::op_size(insn, 1);
        let v = self.read_op(insn, 1, ssize)?;
        let v = if insn.mnemonic() == Mnemonic::Movzx {
            v
        } else {
            sext(v, ssize) as u64 & size_mask(dsize)
        };
        self.set_gpr(insn.op0_register(), v);
        Ok(())
    }

    pub(super) fn lea(&mut self, insn: &Instruction) -> R<()> {
        if insn.op1_kind() != OpKind::Memory {
            return Err(ud());
        }
        let v = self.ea(insn);
        self.set_gpr(insn.op0_register(), v);
        Ok(())
    }

    pub(super) fn xchg(&mut self, insn: &Instruction) -> R<()> {
        let size = Self::op_size(insn, 0);
        if insn.op0_kind() == OpKind::Register && insn.op1_kind() == OpKind::Register {
            let (a, b) = (insn.op0_register(), insn.op1_register());
            let (va, vb) = (self.gpr(a), self.gpr(b));
            self.set_gpr(a, vb);
            self.set_gpr(b, va);
            return Ok(());
        }
        // One side is memory: always locked.
        let (mem_n, reg) = if insn.op0_kind() == OpKind::Memory {
            (0, insn.op1_register())
        } else {
            (1, insn.op0_register())
        };
        let _ = mem_n;
        let off = self.ea(insn);
        let lin = self.seg_lin(Self::mem_seg(insn), off, size, true)?;
        let rv = self.gpr(reg);
        let mut old_v = 0;
        let mut f = |_: &mut Self, old: u64| {
            old_v = old;
            rv
        };
        if !self.locked_rmw(lin, size, &mut f)? {
            let old = self.read_dst(Dst::Mem(lin), size)?;
            self.write_dst(Dst::Mem(lin), size, rv)?;
            old_v = old;
        }
        self.set_gpr(reg, old_v);
        Ok(())
    }

    pub(super) fn xadd(&mut self, insn: &Instruction) -> R<()> {
        let size = Self::op_size(insn, 0);
        let reg = insn.op1_register();
        let src = self.gpr(reg);
        let d = self.dst(insn, size)?;
        if let Dst::Reg(r) = d {
            // SRC ← DEST, then DEST ← sum (matters when both are one register).
            let old = self.gpr(r);
            let sum = self.alu_op(Mnemonic::Add, old, src, size);
            self.set_gpr(reg, old);
            self.set_gpr(r, sum);
            return Ok(());
        }
        let mut old_v = 0;
        self.rmw(insn, d, size, |ex, old| {
            old_v = old;
            ex.alu_op(Mnemonic::Add, old, src, size)
        })?;
        self.set_gpr(reg, old_v);
        Ok(())
    }

    pub(super) fn cmpxchg(&mut self, insn: &Instruction) -> R<()> {
        let size = Self::op_size(insn, 0);
        let src = self.gpr(insn.op1_register());
        let acc = self.gpr_sized(RAX, size);
        let d = self.dst(insn, size)?;
        if let Dst::Reg(r) = d {
            // A register destination is written only on success (so a
            // 32-bit one is not zero-extended on failure).
            let old = self.gpr(r);
            self.alu_op(Mnemonic::Cmp, acc, old, size);
            if old == acc {
                self.set_gpr(r, src);
            } else {
                self.set_gpr_sized(RAX, size, old);
            }
            return Ok(());
        }
        let mut old_v = 0;
        self.rmw(insn, d, size, |ex, old| {
            old_v = old;
            ex.alu_op(Mnemonic::Cmp, acc, old, size);
            if old == acc {
                src
            } else {
                old
            }
        })?;
        if old_v != acc {
            self.set_gpr_sized(RAX, size, old_v);
        }
        Ok(())
    }

    pub(super) fn cmpxchg_wide(&mut self, insn: &Instruction) -> R<()> {
        let wide = insn.mnemonic() == Mnemonic::Cmpxchg16b;
        let size: u32 = if wide { 8 } else { 4 };
        let off = self.ea(insn);
        let lin = self.seg_lin(Self::mem_seg(insn), off, size * 2, true)?;
        if wide && lin % 16 != 0 {
            return Err(gp(0));
        }
        let expect_lo = self.gpr_sized(RAX, size);
        let expect_hi = self.gpr_sized(RDX, size);
        let new_lo = self.gpr_sized(RBX, size);
        let new_hi = self.gpr_sized(RCX, size);
        let equal;
        if !wide {
            let expect = expect_lo | (expect_hi << 32);
            let new = new_lo | (new_hi << 32);
            let mut old_v = 0;
            let mut f = |_: &mut Self, old: u64| {
                old_v = old;
                if old == expect {
                    new
                } else {
                    old
                }
            };
            if !self.locked_rmw(lin, 8, &mut f)? {
                let old = self.read_dst(Dst::Mem(lin), 8)?;
                let new_v = f(self, old);
                self.write_dst(Dst::Mem(lin), 8, new_v)?;
            }
            equal = old_v == expect;
            if !equal {
                self.set_gpr_sized(RAX, 4, old_v & 0xffff_ffff);
                self.set_gpr_sized(RDX, 4, old_v >> 32);
            }
        } else {
            // 16 bytes: serialised by a global lock against other CMPXCHG16B.
            static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
            let _g = LOCK.lock().unwrap_or_else(|e| e.into_inner());
            let u = self.user();
            let lo = self.read_dst(Dst::Mem(lin), 8)?;
            let hi = self.read_lin(lin + 8, 8, u)?;
            equal = lo == expect_lo && hi == expect_hi;
            if equal {
                self.write_lin(lin, 8, new_lo, u)?;
                self.write_lin(lin + 8, 8, new_hi, u)?;
            } else {
                self.write_lin(lin, 8, lo, u)?;
                self.write_lin(lin + 8, 8, hi, u)?;
                self.set_gpr_sized(RAX, 8, lo);
                self.set_gpr_sized(RDX, 8, hi);
            }
        }
        self.c.state.flags.set_arith(ZF, if equal { ZF } else { 0 });
        Ok(())
    }

    pub(super) fn convert(&mut self, insn: &Instruction) -> R<()> {
        let g = &mut self.c.state.gpr;
        match insn.mnemonic() {
            Mnemonic::Cbw => {
                let v = sext(g[RAX], 1) as u64 & 0xffff;
                g[RAX] = (g[RAX] & !0xffff) | v;
            }
            Mnemonic::Cwde => g[RAX] = sext(g[RAX], 2) as u64 & 0xffff_ffff,
            Mnemonic::Cdqe => g[RAX] = sext(g[RAX], 4) as u64,
            Mnemonic::Cwd => {
                let v = if g[RAX] & 0x8000 != 0 { 0xffff } else { 0 };
                g[RDX] = (g[RDX] & !0xffff) | v;
            }
            Mnemonic::Cdq => {
                g[RDX] = if g[RAX] & 0x8000_0000 != 0 {
                    0xffff_ffff
                } else {
                    0
                }
            }
            _ => g[RDX] = if g[RAX] >> 63 != 0 { u64::MAX } else { 0 },
        }
        Ok(())
    }

    pub(super) fn flag_op(&mut self, insn: &Instruction) -> R<()> {
        let f = &mut self.c.state.flags;
        match insn.mnemonic() {
            Mnemonic::Lahf => {
                let v = (f.get() & (SF | ZF | AF | PF | CF)) | FIXED1;
                self.set_gpr(Register::AH, v);
            }
            Mnemonic::Sahf => {
                let ah = (self.c.state.gpr[RAX] >> 8) & 0xff;
                self.c.state.flags.set_arith(SF | ZF | AF | PF | CF, ah);
            }
            Mnemonic::Clc => f.set_arith(CF, 0),
            Mnemonic::Stc => f.set_arith(CF, CF),
            Mnemonic::Cmc => {
                let c = f.cf();
                f.set_arith(CF, if c { 0 } else { CF });
            }
            Mnemonic::Cld => f.set_bit(DF, false),
            Mnemonic::Std => f.set_bit(DF, true),
            Mnemonic::Cli | Mnemonic::Sti => {
                let st = &self.c.state;
                if st.mode != Mode::Real && st.cpl > st.iopl() {
                    return Err(gp(0));
                }
                let sti = insn.mnemonic() == Mnemonic::Sti;
                if sti && !self.c.state.if_set() {
                    // Interrupts stay blocked until the next instruction retires.
                    self.c.shadow_icount = self.c.icount + 1;
                }
                self.c.state.flags.set_bit(IF, sti);
                self.c.block_exit = true;
            }
            _ => return self.unimplemented(insn),
        }
        Ok(())
    }

    pub(super) fn cmov(&mut self, insn: &Instruction) -> R<()> {
        let r = insn.op0_register();
        let size = r.size() as u32;
        let v = self.read_op(insn, 1, size)?;
        let cc = insn.condition_code() as u8 - 1;
        if self.c.state.flags.cond(cc) {
            self.set_gpr(r, v);
        } else if size == 4 {
            let cur = self.gpr(r);
            self.set_gpr(r, cur);
        }
        Ok(())
    }

    pub(super) fn setcc(&mut self, insn: &Instruction) -> R<()> {
        let cc = insn.condition_code() as u8 - 1;
        let v = self.c.state.flags.cond(cc) as u64;
        self.write_op(insn, 0, 1, v)
    }

    pub(super) fn xlat(&mut self, insn: &Instruction) -> R<()> {
        let off = self.ea(insn);
        let v = self.read(Self::mem_seg(insn), off, 1)?;
        self.set_gpr(Register::AL, v);
        Ok(())
    }

    pub(super) fn bcd(&mut self, insn: &Instruction) -> R<()> {
        let ax = self.c.state.gpr[RAX];
        let al = ax & 0xff;
        let ah = (ax >> 8) & 0xff;
        let cf = self.c.state.flags.cf();
        let af = self.c.state.flags.af();
        let (nal, nah, ncf, naf) = match insn.mnemonic() {
            Mnemonic::Aaa | Mnemonic::Aas => {
                let adjust = (al & 0xf) > 9 || af;
                if adjust {
                    let (l, h) = if insn.mnemonic() == Mnemonic::Aaa {
                        (al.wrapping_add(6), ah.wrapping_add(1))
                    } else {
                        (al.wrapping_sub(6), ah.wrapping_sub(1))
                    };
                    (l & 0xf, h & 0xff, true, true)
                } else {
                    (al & 0xf, ah, false, false)
                }
            }
            Mnemonic::Daa | Mnemonic::Das => {
                let add = insn.mnemonic() == Mnemonic::Daa;
                let mut l = al;
                let mut ncf = false;
                let mut naf = false;
                if (al & 0xf) > 9 || af {
                    l = if add { l + 6 } else { l.wrapping_sub(6) } & 0xff;
                    ncf = cf || if add { al + 6 > 0xff } else { al < 6 };
                    naf = true;
                }
                if al > 0x99 || cf {
                    l = if add { l + 0x60 } else { l.wrapping_sub(0x60) } & 0xff;
                    ncf = true;
                }
                (l, ah, ncf, naf)
            }
            Mnemonic::Aam => {
                let base = insn.immediate8() as u64;
                if base == 0 {
                    return Err(de());
                }
                (al % base, al / base, false, false)
            }
            _ => {
                let base = insn.immediate8() as u64;
                ((al + ah * base) & 0xff, 0, false, false)
            }
        };
        self.c.state.gpr[RAX] = (ax & !0xffff) | nal | (nah << 8);
        let mut nf = szp(nal, 1);
        if ncf {
            nf |= CF;
        }
        if naf {
            nf |= AF;
        }
        self.c.state.flags.set_arith(ARITH, nf);
        Ok(())
    }
}

impl Exec<'_> {
    /// BMI1: ANDN, BEXTR, BLSI, BLSMSK, BLSR.
    pub(super) fn bmi1(&mut self, insn: &Instruction) -> R<()> {
        if !self.c.has_feature_bmi1()
            || self.c.state.mode != Mode::Long && self.c.state.mode != Mode::Protected
        {
            return Err(ud());
        }
        let m = insn.mnemonic();
        let size = insn.op0_register().size() as u32;
        let mask = size_mask(size);
        let (r, cf) = match m {
            Mnemonic::Andn => {
                let a = self.read_op(insn, 1, size)?;
                let b = self.read_op(insn, 2, size)?;
                (!a & b & mask, false)
            }
            Mnemonic::Bextr => {
                let a = self.read_op(insn, 1, size)?;
                let ctl = self.read_op(insn, 2, size)?;
                let start = (ctl & 0xff) as u32;
                let len = ((ctl >> 8) & 0xff) as u32;
                let v = if start >= 64 { 0 } else { a >> start };
                let v = if len >= 64 {
                    v
                } else {
                    v & ((1u64 << len) - 1)
                };
                (v & mask, false)
            }
            _ => {
                let s = self.read_op(insn, 1, size)?;
                match m {
                    Mnemonic::Blsi => (s.wrapping_neg() & s & mask, s != 0),
                    Mnemonic::Blsmsk => ((s.wrapping_sub(1) ^ s) & mask, s == 0),
                    _ => (s.wrapping_sub(1) & s & mask, s == 0),
                }
            }
        };
        let mut nf = szp(r, size) & (SF | ZF);
        if cf {
            nf |= CF;
        }
        self.c.state.flags.set_arith(ARITH, nf);
        self.set_gpr(insn.op0_register(), r);
        Ok(())
    }
}

/// PDEP: the low bits of `src` deposited at the set bits of `mask`.
fn pdep(src: u64, mask: u64) -> u64 {
    let (mut r, mut m, mut k) = (0u64, mask, 0);
    while m != 0 {
        let bit = m & m.wrapping_neg();
        if (src >> k) & 1 != 0 {
            r |= bit;
        }
        m &= m - 1;
        k += 1;
    }
    r
}

/// PEXT: the bits of `src` at the set bits of `mask`, packed low.
fn pext(src: u64, mask: u64) -> u64 {
    let (mut r, mut m, mut k) = (0u64, mask, 0);
    while m != 0 {
        let bit = m & m.wrapping_neg();
        if src & bit != 0 {
            r |= 1 << k;
        }
        m &= m - 1;
        k += 1;
    }
    r
}

impl Exec<'_> {
    /// BMI2: BZHI, MULX, PDEP, PEXT, RORX, SARX, SHLX, SHRX (32/64-bit,
    /// VEX-encoded; only BZHI changes flags).
    pub(super) fn bmi2(&mut self, insn: &Instruction) -> R<()> {
        if !self.c.has_feature_bmi2()
            || self.c.state.mode != Mode::Long && self.c.state.mode != Mode::Protected
        {
            return Err(ud());
        }
        let m = insn.mnemonic();
        let size = insn.op0_register().size() as u32;
        let bits = size * 8;
        let mask = size_mask(size);
        let count_mask = bits as u64 - 1;
        let r = match m {
            Mnemonic::Bzhi => {
                let a = self.read_op(insn, 1, size)?;
                let n = self.read_op(insn, 2, size)? & 0xff;
                let v = if n < bits as u64 {
                    a & ((1u64 << n) - 1)
                } else {
                    a
                };
                let mut nf = szp(v, size) & (SF | ZF);
                if n > bits as u64 - 1 {
                    nf |= CF;
                }
                self.c.state.flags.set_arith(SF | ZF | CF | OF, nf);
                v
            }
            Mnemonic::Mulx => {
                let src = self.read_op(insn, 2, size)? as u128;
                let prod = src * (self.gpr_sized(RDX, size) as u128);
                // The low half goes to the second operand first, so that
                // the high half wins when both name one register.
                self.set_gpr(insn.op1_register(), prod as u64 & mask);
                (prod >> bits) as u64 & mask
            }
            Mnemonic::Pdep | Mnemonic::Pext => {
                let a = self.read_op(insn, 1, size)?;
                let sel = self.read_op(insn, 2, size)?;
                if m == Mnemonic::Pdep {
                    pdep(a, sel)
                } else {
                    pext(a, sel)
                }
            }
            Mnemonic::Rorx => {
                let a = self.read_op(insn, 1, size)?;
                let n = (insn.immediate8() as u64 & count_mask) as u32;
                if size == 8 {
                    a.rotate_right(n)
                } else {
                    (a as u32).rotate_right(n) as u64
                }
            }
            _ => {
                let a = self.read_op(insn, 1, size)?;
                let n = self.read_op(insn, 2, size)? & count_mask;
                match m {
                    Mnemonic::Shlx => (a << n) & mask,
                    Mnemonic::Shrx => a >> n,
                    _ => (sext(a, size) >> n) as u64 & mask,
                }
            }
        };
        self.set_gpr(insn.op0_register(), r);
        Ok(())
    }

    /// MOVBE: a load or store with the bytes reversed (16/32/64-bit).
    pub(super) fn movbe(&mut self, insn: &Instruction) -> R<()> {
        if !self.c.has_feature_movbe() {
            return Err(ud());
        }
        let size = Self::op_size(insn, 0);
        let v = self.read_op(insn, 1, size)?;
        let swapped = v.swap_bytes() >> (64 - size * 8);
        self.write_op(insn, 0, size, swapped)
    }
}
