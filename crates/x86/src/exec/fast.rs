//! Specialised handlers for the common integer instructions: MOV, MOVZX,
//! MOVSX, LEA, the ALU operations, INC/DEC/NEG/NOT, SHL/SHR/SAR, IMUL,
//! MUL, CMOVcc, SETcc, Jcc, JMP, CALL, RET, PUSH, POP and NOP, with
//! register, immediate and simple memory operands. Operand size, ALU
//! operation, condition code and whether flags are recorded are const
//! generics, so each handler is straight-line code.
//!
//! Memory operands take an inlined soft-TLB fast path in 64-bit mode and
//! fall back to the segmented, page-walking path otherwise; the results
//! are the same as the generic implementation's.

use iced_x86::{Code, Mnemonic, OpKind};

use super::op::{Handler, Op, NOREG};
use super::{Dst, Exec};
use crate::exception::{gp, R};
use crate::flags::{sign_bit, size_mask, FlagOp, LazyFlags};
use crate::mem::{canonical, host_read, host_write};
use crate::state::{Mode, CS, FS, GS};

/// The handlers chosen for one instruction.
pub(crate) struct Sel {
    /// Records the flags it writes.
    pub full: Handler,
    /// Does not record flags (they are dead).
    pub dead: Handler,
    pub can_fault: bool,
    pub sets_rip: bool,
}

// ------------------------------------------------------------ operands

impl Exec<'_> {
    #[inline(always)]
    pub(crate) fn rget<const SZ: u32>(&self, r: u8) -> u64 {
        super::sem::gpr_read(&self.c.state.gpr, r, SZ)
    }

    #[inline(always)]
    pub(crate) fn rset<const SZ: u32>(&mut self, r: u8, v: u64) {
        super::sem::gpr_write(&mut self.c.state.gpr, r, SZ, v)
    }

    /// The effective address of the op's memory operand.
    #[inline(always)]
    pub(crate) fn op_ea(&self, op: &Op) -> u64 {
        let g = &self.c.state.gpr;
        super::sem::ea(g, op.disp, op.base, op.index, op.scale, op.amask)
    }

    /// Linear address in 64-bit mode (FS/GS bases; not checked canonical).
    #[inline(always)]
    fn op_lin64(&self, op: &Op, ea: u64) -> u64 {
        match op.seg as usize {
            FS => ea.wrapping_add(self.c.state.seg[FS].base),
            GS => ea.wrapping_add(self.c.state.seg[GS].base),
            _ => ea,
        }
    }

    /// The host address of `size` bytes at `lin` when the TLB maps them
    /// for reading (`write` false) or writing. A non-canonical address
    /// never hits (the TLB holds canonical pages only).
    #[inline(always)]
    fn tlb_host(&self, lin: u64, size: u32, write: bool) -> Option<*mut u8> {
        debug_assert_eq!(self.c.dbank, self.data_bank(self.c.state.cpl == 3));
        self.c.tlb.host(self.c.dbank, lin, size, write)
    }

    #[inline(always)]
    fn mread<const SZ: u32>(&mut self, op: &Op) -> R<u64> {
        let ea = self.op_ea(op);
        if self.c.state.mode == Mode::Long {
            let lin = self.op_lin64(op, ea);
            if let Some(p) = self.tlb_host(lin, SZ, false) {
                // SAFETY: a TLB read tag is only installed for a RAM page
                // the Bus returned with at least 4096 bytes, valid until
                // the next TLB flush (Bus contract); the access stays in
                // the page (checked by tlb_host).
                return Ok(unsafe { host_read(p, SZ) });
            }
        }
        self.mread_slow(op.seg, ea, SZ)
    }

    #[cold]
    #[inline(never)]
    fn mread_slow(&mut self, seg: u8, ea: u64, size: u32) -> R<u64> {
        self.read(seg as usize, ea, size)
    }

    #[cold]
    #[inline(never)]
    fn mwrite_slow(&mut self, seg: u8, ea: u64, size: u32, v: u64) -> R<()> {
        self.write(seg as usize, ea, size, v)
    }

    #[inline(always)]
    fn mwrite<const SZ: u32>(&mut self, op: &Op, v: u64) -> R<()> {
        let ea = self.op_ea(op);
        if self.c.state.mode == Mode::Long {
            let lin = self.op_lin64(op, ea);
            if let Some(p) = self.tlb_host(lin, SZ, true) {
                // SAFETY: a TLB write tag is only installed for a writable
                // RAM page (>= 4096 bytes) holding no decoded code, valid
                // until the next TLB flush; the access stays in the page.
                unsafe { host_write(p, SZ, v) };
                return Ok(());
            }
        }
        self.mwrite_slow(op.seg, ea, SZ, v)
    }

    /// Read-modify-write of the op's memory operand (not LOCKed).
    #[inline(always)]
    fn mrmw<const SZ: u32>(
        &mut self,
        op: &Op,
        f: impl FnOnce(&mut LazyFlags, u64) -> u64,
    ) -> R<()> {
        let ea = self.op_ea(op);
        if self.c.state.mode == Mode::Long {
            let lin = self.op_lin64(op, ea);
            if let Some(p) = self.tlb_host(lin, SZ, true) {
                // SAFETY: as in mwrite; the page is readable as well.
                let old = unsafe { host_read(p, SZ) };
                let new = f(&mut self.c.state.flags, old);
                // SAFETY: as above.
                unsafe { host_write(p, SZ, new) };
                return Ok(());
            }
        }
        let d = Dst::Mem(self.seg_lin(op.seg as usize, ea, SZ, true)?);
        let old = self.read_dst(d, SZ)?;
        let new = f(&mut self.c.state.flags, old);
        self.write_dst(d, SZ, new)
    }

    /// PUSH of 8 bytes in 64-bit mode.
    #[inline(always)]
    fn push64(&mut self, v: u64) -> R<()> {
        let sp = self.c.state.gpr[4].wrapping_sub(8);
        if let Some(p) = self.tlb_host(sp, 8, true) {
            // SAFETY: as in mwrite (SS has base 0 in 64-bit mode).
            unsafe { host_write(p, 8, v) };
            self.c.state.gpr[4] = sp;
            return Ok(());
        }
        self.push64_slow(v)
    }

    #[cold]
    #[inline(never)]
    fn push64_slow(&mut self, v: u64) -> R<()> {
        self.push(v, 8)
    }

    #[cold]
    #[inline(never)]
    fn top64_slow(&mut self) -> R<u64> {
        self.peek(0, 8)
    }

    /// The 8 bytes at the top of the stack in 64-bit mode.
    #[inline(always)]
    fn top64(&mut self) -> R<u64> {
        let sp = self.c.state.gpr[4];
        if let Some(p) = self.tlb_host(sp, 8, false) {
            // SAFETY: as in mread.
            return Ok(unsafe { host_read(p, 8) });
        }
        self.top64_slow()
    }
}

#[inline(always)]
fn sext(v: u64, size: u32) -> i64 {
    let sh = 64 - size * 8;
    ((v << sh) as i64) >> sh
}

// ------------------------------------------------------------ ALU

use super::sem::{
    ADC, ADD, AND, BT, BTC, BTR, BTS, CMP, DEC, INC, NEG, NOT, OR, ROL, ROR, SAR, SBB, SHL, SHR,
    SUB, TEST, XOR,
};

#[inline(always)]
fn alu<const OP: u8, const SZ: u32, const F: bool>(f: &mut LazyFlags, a: u64, b: u64) -> u64 {
    super::sem::alu(OP, SZ, F, f, a, b)
}

fn alu_rr<const OP: u8, const SZ: u32, const F: bool>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let a = ex.rget::<SZ>(op.r0);
    let b = ex.rget::<SZ>(op.r1);
    let r = alu::<OP, SZ, F>(&mut ex.c.state.flags, a, b);
    if OP != CMP && OP != TEST {
        ex.rset::<SZ>(op.r0, r);
    }
    Ok(())
}

fn alu_ri<const OP: u8, const SZ: u32, const F: bool>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let a = ex.rget::<SZ>(op.r0);
    let r = alu::<OP, SZ, F>(&mut ex.c.state.flags, a, op.imm);
    if OP != CMP && OP != TEST {
        ex.rset::<SZ>(op.r0, r);
    }
    Ok(())
}

fn alu_rm<const OP: u8, const SZ: u32, const F: bool>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let b = ex.mread::<SZ>(op)?;
    let a = ex.rget::<SZ>(op.r0);
    let r = alu::<OP, SZ, F>(&mut ex.c.state.flags, a, b);
    if OP != CMP && OP != TEST {
        ex.rset::<SZ>(op.r0, r);
    }
    Ok(())
}

fn alu_mr<const OP: u8, const SZ: u32, const F: bool>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let b = ex.rget::<SZ>(op.r1);
    if OP == CMP || OP == TEST {
        let a = ex.mread::<SZ>(op)?;
        alu::<OP, SZ, F>(&mut ex.c.state.flags, a, b);
        return Ok(());
    }
    ex.mrmw::<SZ>(op, |f, a| alu::<OP, SZ, F>(f, a, b))
}

fn alu_mi<const OP: u8, const SZ: u32, const F: bool>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let b = op.imm;
    if OP == CMP || OP == TEST {
        let a = ex.mread::<SZ>(op)?;
        alu::<OP, SZ, F>(&mut ex.c.state.flags, a, b);
        return Ok(());
    }
    ex.mrmw::<SZ>(op, |f, a| alu::<OP, SZ, F>(f, a, b))
}

#[inline(always)]
fn unary<const K: u8, const SZ: u32, const F: bool>(f: &mut LazyFlags, a: u64) -> u64 {
    super::sem::unary(K, SZ, F, f, a)
}

fn unary_r<const K: u8, const SZ: u32, const F: bool>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let a = ex.rget::<SZ>(op.r0);
    let r = unary::<K, SZ, F>(&mut ex.c.state.flags, a);
    ex.rset::<SZ>(op.r0, r);
    Ok(())
}

fn unary_m<const K: u8, const SZ: u32, const F: bool>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    ex.mrmw::<SZ>(op, unary::<K, SZ, F>)
}

/// SHL/SHR/SAR by a count already masked and not zero.
#[inline(always)]
fn shift<const K: u8, const SZ: u32, const F: bool>(f: &mut LazyFlags, a: u64, count: u32) -> u64 {
    super::sem::shift(K, SZ, F, f, a, count)
}

fn shift_ri<const K: u8, const SZ: u32, const F: bool>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let a = ex.rget::<SZ>(op.r0);
    let count = op.imm as u32 & if SZ == 8 { 0x3f } else { 0x1f };
    let r = shift::<K, SZ, F>(&mut ex.c.state.flags, a, count);
    ex.rset::<SZ>(op.r0, r);
    Ok(())
}

fn shift_rc<const K: u8, const SZ: u32, const F: bool>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let count = (ex.c.state.gpr[1] as u32) & if SZ == 8 { 0x3f } else { 0x1f };
    let a = ex.rget::<SZ>(op.r0);
    if count == 0 {
        // No flags change; a 32-bit register is still zero-extended.
        ex.rset::<SZ>(op.r0, a);
        return Ok(());
    }
    let r = shift::<K, SZ, F>(&mut ex.c.state.flags, a, count);
    ex.rset::<SZ>(op.r0, r);
    Ok(())
}

fn shift_mi<const K: u8, const SZ: u32, const F: bool>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let count = op.imm as u32 & if SZ == 8 { 0x3f } else { 0x1f };
    ex.mrmw::<SZ>(op, |f, a| shift::<K, SZ, F>(f, a, count))
}

/// ROL/ROR by a count already masked and not zero: only CF and OF change.
#[inline(always)]
fn rotate<const K: u8, const SZ: u32, const F: bool>(f: &mut LazyFlags, a: u64, count: u32) -> u64 {
    super::sem::rotate(K, SZ, F, f, a, count)
}

fn rotate_ri<const K: u8, const SZ: u32, const F: bool>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let count = op.imm as u32 & if SZ == 8 { 0x3f } else { 0x1f };
    let a = ex.rget::<SZ>(op.r0);
    let r = rotate::<K, SZ, F>(&mut ex.c.state.flags, a, count);
    ex.rset::<SZ>(op.r0, r);
    Ok(())
}

fn rotate_rc<const K: u8, const SZ: u32, const F: bool>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let count = (ex.c.state.gpr[1] as u32) & if SZ == 8 { 0x3f } else { 0x1f };
    let a = ex.rget::<SZ>(op.r0);
    if count == 0 {
        ex.rset::<SZ>(op.r0, a);
        return Ok(());
    }
    let r = rotate::<K, SZ, F>(&mut ex.c.state.flags, a, count);
    ex.rset::<SZ>(op.r0, r);
    Ok(())
}

fn rotate_mi<const K: u8, const SZ: u32, const F: bool>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let count = op.imm as u32 & if SZ == 8 { 0x3f } else { 0x1f };
    ex.mrmw::<SZ>(op, |f, a| rotate::<K, SZ, F>(f, a, count))
}

#[inline(always)]
fn imul2<const SZ: u32, const F: bool>(f: &mut LazyFlags, a: u64, b: u64) -> u64 {
    super::sem::imul(SZ, F, f, a, b)
}

fn imul_rr<const SZ: u32, const F: bool>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let a = ex.rget::<SZ>(op.r0);
    let b = ex.rget::<SZ>(op.r1);
    let r = imul2::<SZ, F>(&mut ex.c.state.flags, a, b);
    ex.rset::<SZ>(op.r0, r);
    Ok(())
}

fn imul_rm<const SZ: u32, const F: bool>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let b = ex.mread::<SZ>(op)?;
    let a = ex.rget::<SZ>(op.r0);
    let r = imul2::<SZ, F>(&mut ex.c.state.flags, a, b);
    ex.rset::<SZ>(op.r0, r);
    Ok(())
}

fn imul_rri<const SZ: u32, const F: bool>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let a = ex.rget::<SZ>(op.r1);
    let r = imul2::<SZ, F>(&mut ex.c.state.flags, a, op.imm);
    ex.rset::<SZ>(op.r0, r);
    Ok(())
}

fn imul_rmi<const SZ: u32, const F: bool>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let a = ex.mread::<SZ>(op)?;
    let r = imul2::<SZ, F>(&mut ex.c.state.flags, a, op.imm);
    ex.rset::<SZ>(op.r0, r);
    Ok(())
}

/// One-operand MUL (S false) / IMUL (S true) of 4 or 8 bytes.
#[inline(always)]
fn mul1<const S: bool, const SZ: u32, const F: bool>(ex: &mut Exec<'_>, src: u64) {
    let a = ex.rget::<SZ>(0);
    let (lo, hi) = super::sem::mul(S, SZ, F, &mut ex.c.state.flags, a, src);
    ex.rset::<SZ>(0, lo);
    ex.rset::<SZ>(2, hi);
}

fn mul_r<const S: bool, const SZ: u32, const F: bool>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let src = ex.rget::<SZ>(op.r0);
    mul1::<S, SZ, F>(ex, src);
    Ok(())
}

fn mul_m<const S: bool, const SZ: u32, const F: bool>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let src = ex.mread::<SZ>(op)?;
    mul1::<S, SZ, F>(ex, src);
    Ok(())
}

/// One-operand DIV (S false) / IDIV (S true) of 4 or 8 bytes; flags
/// are left alone (they are undefined).
#[inline(always)]
fn div1<const S: bool, const SZ: u32>(ex: &mut Exec<'_>, src: u64) -> R<()> {
    let (lo, hi) = (ex.rget::<SZ>(0), ex.rget::<SZ>(2));
    let (q, r) = super::sem::div(S, SZ, lo, hi, src)?;
    ex.rset::<SZ>(0, q);
    ex.rset::<SZ>(2, r);
    Ok(())
}

fn div_r<const S: bool, const SZ: u32>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let src = ex.rget::<SZ>(op.r0);
    div1::<S, SZ>(ex, src)
}

fn div_m<const S: bool, const SZ: u32>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let src = ex.mread::<SZ>(op)?;
    div1::<S, SZ>(ex, src)
}

fn bswap<const SZ: u32>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let v = ex.rget::<SZ>(op.r0);
    let v = if SZ == 8 {
        v.swap_bytes()
    } else {
        (v as u32).swap_bytes() as u64
    };
    ex.rset::<SZ>(op.r0, v);
    Ok(())
}

/// CWDE / CDQE (K 0) and CDQ / CQO (K 1) of size SZ (4 or 8).
fn convert<const K: u8, const SZ: u32>(ex: &mut Exec<'_>, _: &Op) -> R<()> {
    let a = ex.c.state.gpr[0];
    if K == 0 {
        let v = if SZ == 8 {
            a as i32 as i64 as u64
        } else {
            a as i16 as i32 as u32 as u64
        };
        ex.rset::<SZ>(0, v);
    } else {
        let neg = a & sign_bit(SZ) != 0;
        ex.rset::<SZ>(2, if neg { u64::MAX } else { 0 });
    }
    Ok(())
}

/// BT/BTS/BTR/BTC of a register by an immediate bit number: CF is the
/// bit, the other flags are kept.
fn bt_ri<const K: u8, const SZ: u32, const F: bool>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let bit = op.imm as u32 & (SZ * 8 - 1);
    let a = ex.rget::<SZ>(op.r0);
    let r = super::sem::bit_test(K, F, &mut ex.c.state.flags, a, bit);
    if K != BT {
        ex.rset::<SZ>(op.r0, r);
    }
    Ok(())
}

// ------------------------------------------------------------ moves

fn mov_rr<const SZ: u32>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let v = ex.rget::<SZ>(op.r1);
    ex.rset::<SZ>(op.r0, v);
    Ok(())
}

fn mov_ri<const SZ: u32>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    ex.rset::<SZ>(op.r0, op.imm);
    Ok(())
}

fn mov_rm<const SZ: u32>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let v = ex.mread::<SZ>(op)?;
    ex.rset::<SZ>(op.r0, v);
    Ok(())
}

fn mov_mr<const SZ: u32>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let v = ex.rget::<SZ>(op.r1);
    ex.mwrite::<SZ>(op, v)
}

fn mov_mi<const SZ: u32>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    ex.mwrite::<SZ>(op, op.imm)
}

fn movzx_r<const D: u32, const S: u32>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let v = ex.rget::<S>(op.r1);
    ex.rset::<D>(op.r0, v);
    Ok(())
}

fn movzx_m<const D: u32, const S: u32>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let v = ex.mread::<S>(op)?;
    ex.rset::<D>(op.r0, v);
    Ok(())
}

fn movsx_r<const D: u32, const S: u32>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let v = sext(ex.rget::<S>(op.r1), S) as u64;
    ex.rset::<D>(op.r0, v & size_mask(D));
    Ok(())
}

fn movsx_m<const D: u32, const S: u32>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let v = sext(ex.mread::<S>(op)?, S) as u64;
    ex.rset::<D>(op.r0, v & size_mask(D));
    Ok(())
}

fn lea<const SZ: u32>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let v = ex.op_ea(op);
    ex.rset::<SZ>(op.r0, v);
    Ok(())
}

fn cmov_rr<const CC: u8, const SZ: u32>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let v = if ex.c.state.flags.cond(CC) {
        ex.rget::<SZ>(op.r1)
    } else {
        ex.rget::<SZ>(op.r0)
    };
    ex.rset::<SZ>(op.r0, v);
    Ok(())
}

fn cmov_rm<const CC: u8, const SZ: u32>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let m = ex.mread::<SZ>(op)?;
    let v = if ex.c.state.flags.cond(CC) {
        m
    } else {
        ex.rget::<SZ>(op.r0)
    };
    ex.rset::<SZ>(op.r0, v);
    Ok(())
}

fn setcc_r<const CC: u8>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let v = ex.c.state.flags.cond(CC) as u64;
    ex.rset::<1>(op.r0, v);
    Ok(())
}

fn setcc_m<const CC: u8>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let v = ex.c.state.flags.cond(CC) as u64;
    ex.mwrite::<1>(op, v)
}

fn nop(_: &mut Exec<'_>, _: &Op) -> R<()> {
    Ok(())
}

// ------------------------------------------------------------ branches

fn jcc64<const CC: u8>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    ex.c.state.rip = if ex.c.state.flags.cond(CC) {
        op.imm
    } else {
        op.next
    };
    Ok(())
}

/// Jcc outside 64-bit mode: the target is checked against the CS limit.
fn jcc_lim<const CC: u8>(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    if ex.c.state.flags.cond(CC) {
        if op.imm > ex.c.state.seg[CS].limit as u64 {
            return Err(gp(0));
        }
        ex.c.state.rip = op.imm;
    } else {
        ex.c.state.rip = op.next;
    }
    Ok(())
}

fn jmp64(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    ex.c.state.rip = op.imm;
    Ok(())
}

fn jmp_lim(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    if op.imm > ex.c.state.seg[CS].limit as u64 {
        return Err(gp(0));
    }
    ex.c.state.rip = op.imm;
    Ok(())
}

fn jmp_r64(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let t = ex.rget::<8>(op.r0);
    if !canonical(t) {
        return Err(gp(0));
    }
    ex.c.state.rip = t;
    Ok(())
}

fn call64(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    ex.push64(op.next)?;
    ex.c.state.rip = op.imm;
    Ok(())
}

fn call_r64(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let t = ex.rget::<8>(op.r0);
    if !canonical(t) {
        return Err(gp(0));
    }
    ex.push64(op.next)?;
    ex.c.state.rip = t;
    Ok(())
}

fn ret64(ex: &mut Exec<'_>, _: &Op) -> R<()> {
    let t = ex.top64()?;
    if !canonical(t) {
        return Err(gp(0));
    }
    ex.c.state.gpr[4] = ex.c.state.gpr[4].wrapping_add(8);
    ex.c.state.rip = t;
    Ok(())
}

fn push_r64(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let v = ex.rget::<8>(op.r0);
    ex.push64(v)
}

fn push_i64(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    ex.push64(op.imm)
}

fn pop_r64(ex: &mut Exec<'_>, op: &Op) -> R<()> {
    let v = ex.top64()?;
    ex.c.state.gpr[4] = ex.c.state.gpr[4].wrapping_add(8);
    ex.rset::<8>(op.r0, v);
    Ok(())
}

// ------------------------------------------------------------ selection

macro_rules! sz {
    ($h:ident, [$($c:tt),*], $size:expr) => {
        match $size {
            1 => $h::<$($c,)* 1> as Handler,
            2 => $h::<$($c,)* 2> as Handler,
            4 => $h::<$($c,)* 4> as Handler,
            _ => $h::<$($c,)* 8> as Handler,
        }
    };
}

macro_rules! sz_f {
    ($h:ident, [$($c:tt),*], $size:expr, $f:expr) => {
        match ($size, $f) {
            (1, true) => $h::<$($c,)* 1, true> as Handler,
            (1, false) => $h::<$($c,)* 1, false> as Handler,
            (2, true) => $h::<$($c,)* 2, true> as Handler,
            (2, false) => $h::<$($c,)* 2, false> as Handler,
            (4, true) => $h::<$($c,)* 4, true> as Handler,
            (4, false) => $h::<$($c,)* 4, false> as Handler,
            (_, true) => $h::<$($c,)* 8, true> as Handler,
            (_, false) => $h::<$($c,)* 8, false> as Handler,
        }
    };
}

macro_rules! alu_table {
    ($h:ident, $op:expr, $size:expr, $f:expr) => {
        match $op {
            ADD => sz_f!($h, [ADD], $size, $f),
            OR => sz_f!($h, [OR], $size, $f),
            ADC => sz_f!($h, [ADC], $size, $f),
            SBB => sz_f!($h, [SBB], $size, $f),
            AND => sz_f!($h, [AND], $size, $f),
            SUB => sz_f!($h, [SUB], $size, $f),
            XOR => sz_f!($h, [XOR], $size, $f),
            CMP => sz_f!($h, [CMP], $size, $f),
            _ => sz_f!($h, [TEST], $size, $f),
        }
    };
}

macro_rules! cc_table {
    ($h:ident, [$($pre:tt),*], $cc:expr $(, $post:tt)*) => {
        match $cc {
            0 => $h::<$($pre,)* 0 $(, $post)*> as Handler,
            1 => $h::<$($pre,)* 1 $(, $post)*> as Handler,
            2 => $h::<$($pre,)* 2 $(, $post)*> as Handler,
            3 => $h::<$($pre,)* 3 $(, $post)*> as Handler,
            4 => $h::<$($pre,)* 4 $(, $post)*> as Handler,
            5 => $h::<$($pre,)* 5 $(, $post)*> as Handler,
            6 => $h::<$($pre,)* 6 $(, $post)*> as Handler,
            7 => $h::<$($pre,)* 7 $(, $post)*> as Handler,
            8 => $h::<$($pre,)* 8 $(, $post)*> as Handler,
            9 => $h::<$($pre,)* 9 $(, $post)*> as Handler,
            10 => $h::<$($pre,)* 10 $(, $post)*> as Handler,
            11 => $h::<$($pre,)* 11 $(, $post)*> as Handler,
            12 => $h::<$($pre,)* 12 $(, $post)*> as Handler,
            13 => $h::<$($pre,)* 13 $(, $post)*> as Handler,
            14 => $h::<$($pre,)* 14 $(, $post)*> as Handler,
            _ => $h::<$($pre,)* 15 $(, $post)*> as Handler,
        }
    };
    ($h:ident, $cc:expr $(, $post:tt)*) => {
        cc_table!($h, [], $cc $(, $post)*)
    };
}

/// Operand shapes of two-operand (and one-operand) instructions.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Form {
    RR,
    RI,
    RM,
    MR,
    MI,
    R,
    M,
    Other,
}

fn is_imm(k: OpKind) -> bool {
    matches!(
        k,
        OpKind::Immediate8
            | OpKind::Immediate16
            | OpKind::Immediate32
            | OpKind::Immediate64
            | OpKind::Immediate8to16
            | OpKind::Immediate8to32
            | OpKind::Immediate8to64
            | OpKind::Immediate32to64
    )
}

fn form(op: &Op) -> Form {
    let insn = &op.insn;
    let mem_ok = (op.base == NOREG || op.base < 16) && (op.index == NOREG || op.index < 16);
    let r0 = op.r0 != NOREG;
    let r1 = op.r1 != NOREG;
    match insn.op_count() {
        1 => match insn.op0_kind() {
            OpKind::Register if r0 => Form::R,
            OpKind::Memory if mem_ok => Form::M,
            _ => Form::Other,
        },
        2 => match (insn.op0_kind(), insn.op1_kind()) {
            (OpKind::Register, OpKind::Register) if r0 && r1 => Form::RR,
            (OpKind::Register, k) if r0 && is_imm(k) => Form::RI,
            (OpKind::Register, OpKind::Memory) if r0 && mem_ok => Form::RM,
            (OpKind::Memory, OpKind::Register) if r1 && mem_ok => Form::MR,
            (OpKind::Memory, k) if mem_ok && is_imm(k) => Form::MI,
            _ => Form::Other,
        },
        _ => Form::Other,
    }
}

fn plain(h: Handler, can_fault: bool) -> Sel {
    Sel {
        full: h,
        dead: h,
        can_fault,
        sets_rip: false,
    }
}

fn branch(h: Handler, can_fault: bool) -> Sel {
    Sel {
        full: h,
        dead: h,
        can_fault,
        sets_rip: true,
    }
}

/// A flag-writing op: `pick(true)` records flags, `pick(false)` does not.
/// Memory forms always record, so RFLAGS is exact wherever a memory
/// access can end the block (a write to a code page, a fault).
fn flagged(pick: impl Fn(bool) -> Handler, mem: bool) -> Sel {
    Sel {
        full: pick(true),
        dead: if mem { pick(true) } else { pick(false) },
        can_fault: mem,
        sets_rip: false,
    }
}

/// The specialised handlers for the op, if it has any.
pub(crate) fn select(op: &Op, bits: u32) -> Option<Sel> {
    use Mnemonic::*;
    let insn = &op.insn;
    if insn.has_lock_prefix() {
        return None;
    }
    let m = insn.mnemonic();
    let form = form(op);
    let size = if insn.op_count() > 0 {
        Exec::op_size(insn, 0)
    } else {
        0
    };
    let sized = matches!(size, 1 | 2 | 4 | 8);
    let b64 = bits == 64;
    match m {
        Add | Or | Adc | Sbb | And | Sub | Xor | Cmp | Test if sized => {
            let code = match m {
                Add => ADD,
                Or => OR,
                Adc => ADC,
                Sbb => SBB,
                And => AND,
                Sub => SUB,
                Xor => XOR,
                Cmp => CMP,
                _ => TEST,
            };
            Some(match form {
                Form::RR => flagged(|f| alu_table!(alu_rr, code, size, f), false),
                Form::RI => flagged(|f| alu_table!(alu_ri, code, size, f), false),
                Form::RM => flagged(|f| alu_table!(alu_rm, code, size, f), true),
                Form::MR => flagged(|f| alu_table!(alu_mr, code, size, f), true),
                Form::MI => flagged(|f| alu_table!(alu_mi, code, size, f), true),
                _ => return None,
            })
        }
        Inc | Dec | Neg | Not if sized => {
            let k = match m {
                Inc => INC,
                Dec => DEC,
                Neg => NEG,
                _ => NOT,
            };
            let pick_r = |f: bool| match k {
                INC => sz_f!(unary_r, [INC], size, f),
                DEC => sz_f!(unary_r, [DEC], size, f),
                NEG => sz_f!(unary_r, [NEG], size, f),
                _ => sz_f!(unary_r, [NOT], size, f),
            };
            let pick_m = |f: bool| match k {
                INC => sz_f!(unary_m, [INC], size, f),
                DEC => sz_f!(unary_m, [DEC], size, f),
                NEG => sz_f!(unary_m, [NEG], size, f),
                _ => sz_f!(unary_m, [NOT], size, f),
            };
            Some(match form {
                Form::R => flagged(pick_r, false),
                Form::M => flagged(pick_m, true),
                _ => return None,
            })
        }
        Shl | Sal | Shr | Sar | Rol | Ror if sized => {
            let rot = matches!(m, Rol | Ror);
            let k = match m {
                Shl | Sal => SHL,
                Shr => SHR,
                Rol => ROL,
                Ror => ROR,
                _ => SAR,
            };
            let count_mask = if size == 8 { 0x3f } else { 0x1f };
            let by_cl = insn.op_count() == 2
                && insn.op1_kind() == OpKind::Register
                && insn.op1_register() == iced_x86::Register::CL;
            let imm_count = if insn.op_count() == 2 && insn.op1_kind() == OpKind::Immediate8 {
                Some(insn.immediate8() as u32 & count_mask)
            } else {
                None
            };
            let shape = match insn.op0_kind() {
                OpKind::Register if op.r0 != NOREG => 0,
                OpKind::Memory if form == Form::MI => 1,
                _ => return None,
            };
            macro_rules! by_k {
                ($h:ident, $f:expr) => {
                    match k {
                        SHL => sz_f!($h, [SHL], size, $f),
                        SHR => sz_f!($h, [SHR], size, $f),
                        _ => sz_f!($h, [SAR], size, $f),
                    }
                };
            }
            macro_rules! by_r {
                ($h:ident, $f:expr) => {
                    match k {
                        ROL => sz_f!($h, [ROL], size, $f),
                        _ => sz_f!($h, [ROR], size, $f),
                    }
                };
            }
            match (rot, shape, by_cl, imm_count) {
                (false, 0, true, _) => Some(flagged(|f| by_k!(shift_rc, f), false)),
                (false, 0, false, Some(c)) if c != 0 => {
                    Some(flagged(|f| by_k!(shift_ri, f), false))
                }
                (false, 1, false, Some(c)) if c != 0 => Some(flagged(|f| by_k!(shift_mi, f), true)),
                (true, 0, true, _) => Some(flagged(|f| by_r!(rotate_rc, f), false)),
                (true, 0, false, Some(c)) if c != 0 => {
                    Some(flagged(|f| by_r!(rotate_ri, f), false))
                }
                (true, 1, false, Some(c)) if c != 0 => Some(flagged(|f| by_r!(rotate_mi, f), true)),
                _ => None,
            }
        }
        Imul if size >= 2 && sized && insn.op_count() >= 2 => {
            if insn.op_count() == 3 {
                if !is_imm(insn.op2_kind()) {
                    return None;
                }
                return match insn.op1_kind() {
                    OpKind::Register if op.r1 != NOREG => {
                        Some(flagged(|f| sz_f!(imul_rri, [], size, f), false))
                    }
                    OpKind::Memory if form_mem_ok(op) => {
                        Some(flagged(|f| sz_f!(imul_rmi, [], size, f), true))
                    }
                    _ => None,
                };
            }
            match form {
                Form::RR => Some(flagged(|f| sz_f!(imul_rr, [], size, f), false)),
                Form::RM => Some(flagged(|f| sz_f!(imul_rm, [], size, f), true)),
                _ => None,
            }
        }
        Mul | Imul if insn.op_count() == 1 && (size == 4 || size == 8) => {
            let signed = m == Imul;
            macro_rules! by_s {
                ($h:ident, $f:expr) => {
                    match (signed, size, $f) {
                        (false, 4, true) => $h::<false, 4, true> as Handler,
                        (false, 4, false) => $h::<false, 4, false> as Handler,
                        (false, _, true) => $h::<false, 8, true> as Handler,
                        (false, _, false) => $h::<false, 8, false> as Handler,
                        (true, 4, true) => $h::<true, 4, true> as Handler,
                        (true, 4, false) => $h::<true, 4, false> as Handler,
                        (true, _, true) => $h::<true, 8, true> as Handler,
                        (true, _, false) => $h::<true, 8, false> as Handler,
                    }
                };
            }
            match form {
                Form::R => Some(flagged(|f| by_s!(mul_r, f), false)),
                Form::M => Some(flagged(|f| by_s!(mul_m, f), true)),
                _ => None,
            }
        }
        Div | Idiv if insn.op_count() == 1 && (size == 4 || size == 8) => {
            let h = match (m == Idiv, size, form) {
                (false, 4, Form::R) => div_r::<false, 4> as Handler,
                (false, _, Form::R) => div_r::<false, 8> as Handler,
                (true, 4, Form::R) => div_r::<true, 4> as Handler,
                (true, _, Form::R) => div_r::<true, 8> as Handler,
                (false, 4, Form::M) => div_m::<false, 4> as Handler,
                (false, _, Form::M) => div_m::<false, 8> as Handler,
                (true, 4, Form::M) => div_m::<true, 4> as Handler,
                (true, _, Form::M) => div_m::<true, 8> as Handler,
                _ => return None,
            };
            // Can fault (#DE) even with a register operand.
            Some(plain(h, true))
        }
        Bswap if form == Form::R && (size == 4 || size == 8) => Some(plain(
            if size == 4 { bswap::<4> } else { bswap::<8> },
            false,
        )),
        Cwde => Some(plain(convert::<0, 4>, false)),
        Cdqe => Some(plain(convert::<0, 8>, false)),
        Cdq => Some(plain(convert::<1, 4>, false)),
        Cqo => Some(plain(convert::<1, 8>, false)),
        Bt | Bts | Btr | Btc
            if form == Form::RI && insn.op1_kind() == OpKind::Immediate8 && size >= 2 && sized =>
        {
            let k = match m {
                Bt => BT,
                Bts => BTS,
                Btr => BTR,
                _ => BTC,
            };
            let pick = |f: bool| match k {
                BT => sz_f!(bt_ri, [BT], size, f),
                BTS => sz_f!(bt_ri, [BTS], size, f),
                BTR => sz_f!(bt_ri, [BTR], size, f),
                _ => sz_f!(bt_ri, [BTC], size, f),
            };
            Some(flagged(pick, false))
        }
        Mov if sized => match form {
            Form::RR => Some(plain(sz!(mov_rr, [], size), false)),
            Form::RI => Some(plain(sz!(mov_ri, [], size), false)),
            Form::RM => Some(plain(sz!(mov_rm, [], size), true)),
            Form::MR => Some(plain(sz!(mov_mr, [], size), true)),
            Form::MI => Some(plain(sz!(mov_mi, [], size), true)),
            _ => None,
        },
        Movzx | Movsx | Movsxd if form == Form::RR || form == Form::RM => {
            let d = size;
            let s = Exec::op_size(insn, 1);
            let mem = form == Form::RM;
            macro_rules! ds {
                ($r:ident, $m:ident) => {
                    match (d, s, mem) {
                        (2, 1, false) => $r::<2, 1> as Handler,
                        (2, 1, true) => $m::<2, 1> as Handler,
                        (4, 1, false) => $r::<4, 1> as Handler,
                        (4, 1, true) => $m::<4, 1> as Handler,
                        (4, 2, false) => $r::<4, 2> as Handler,
                        (4, 2, true) => $m::<4, 2> as Handler,
                        (8, 1, false) => $r::<8, 1> as Handler,
                        (8, 1, true) => $m::<8, 1> as Handler,
                        (8, 2, false) => $r::<8, 2> as Handler,
                        (8, 2, true) => $m::<8, 2> as Handler,
                        (8, 4, false) => $r::<8, 4> as Handler,
                        (8, 4, true) => $m::<8, 4> as Handler,
                        _ => return None,
                    }
                };
            }
            let h = if m == Movzx {
                if s == 4 {
                    return None;
                }
                ds!(movzx_r, movzx_m)
            } else {
                ds!(movsx_r, movsx_m)
            };
            Some(plain(h, mem))
        }
        Lea if insn.op_count() == 2
            && op.r0 != NOREG
            && insn.op1_kind() == OpKind::Memory
            && form_mem_ok(op)
            && size >= 2 =>
        {
            Some(plain(sz!(lea, [], size), false))
        }
        Cmovo | Cmovno | Cmovb | Cmovae | Cmove | Cmovne | Cmovbe | Cmova | Cmovs | Cmovns
        | Cmovp | Cmovnp | Cmovl | Cmovge | Cmovle | Cmovg
            if size >= 2 && sized =>
        {
            let cc = insn.condition_code() as u8 - 1;
            let h = match (form, size) {
                (Form::RR, 2) => cc_table!(cmov_rr, cc, 2),
                (Form::RR, 4) => cc_table!(cmov_rr, cc, 4),
                (Form::RR, _) => cc_table!(cmov_rr, cc, 8),
                (Form::RM, 2) => cc_table!(cmov_rm, cc, 2),
                (Form::RM, 4) => cc_table!(cmov_rm, cc, 4),
                (Form::RM, _) => cc_table!(cmov_rm, cc, 8),
                _ => return None,
            };
            Some(plain(h, form == Form::RM))
        }
        Seto | Setno | Setb | Setae | Sete | Setne | Setbe | Seta | Sets | Setns | Setp | Setnp
        | Setl | Setge | Setle | Setg => {
            let cc = insn.condition_code() as u8 - 1;
            match form {
                Form::R => Some(plain(cc_table!(setcc_r, cc), false)),
                Form::M => Some(plain(cc_table!(setcc_m, cc), true)),
                _ => None,
            }
        }
        Jo | Jno | Jb | Jae | Je | Jne | Jbe | Ja | Js | Jns | Jp | Jnp | Jl | Jge | Jle | Jg => {
            let cc = insn.condition_code() as u8 - 1;
            if b64 {
                if !canonical(op.imm) {
                    return None;
                }
                Some(branch(cc_table!(jcc64, cc), false))
            } else {
                Some(branch(cc_table!(jcc_lim, cc), true))
            }
        }
        Jmp => match insn.code() {
            Code::Jmp_rel8_64 | Code::Jmp_rel32_64 if canonical(op.imm) => {
                Some(branch(jmp64, false))
            }
            Code::Jmp_rel8_16 | Code::Jmp_rel8_32 | Code::Jmp_rel16 | Code::Jmp_rel32_32 => {
                Some(branch(jmp_lim, true))
            }
            Code::Jmp_rm64 if form == Form::R => Some(branch(jmp_r64, true)),
            _ => None,
        },
        Call if b64 => match insn.code() {
            Code::Call_rel32_64 if canonical(op.imm) => Some(branch(call64, true)),
            Code::Call_rm64 if form == Form::R => Some(branch(call_r64, true)),
            _ => None,
        },
        Ret if b64 && insn.code() == Code::Retnq => Some(branch(ret64, true)),
        Push if b64 => match insn.code() {
            Code::Push_r64 if op.r0 != NOREG => Some(plain(push_r64, true)),
            Code::Pushq_imm32 | Code::Pushq_imm8 => Some(plain(push_i64, true)),
            _ => None,
        },
        Pop if b64 && insn.code() == Code::Pop_r64 && op.r0 != NOREG => Some(plain(pop_r64, true)),
        // PAUSE takes the generic path: it watches for spin loops.
        Nop | Endbr32 | Endbr64 | Lfence | Sfence | Prefetch | Prefetchnta | Prefetcht0
        | Prefetcht1 | Prefetcht2 | Prefetchw => Some(plain(nop, false)),
        _ => None,
    }
}

fn form_mem_ok(op: &Op) -> bool {
    (op.base == NOREG || op.base < 16) && (op.index == NOREG || op.index < 16)
}

// ------------------------------------------------------------ fusion

/// CMP or TEST of registers or a register and an immediate, fused with
/// the Jcc that follows it (the end of the block): the condition comes
/// straight from the operands. `JUMP` false is the compare alone, for a
/// block cut short by the budget (RIP then points at the Jcc). The Jcc's
/// target is in `op.disp`, the address after it in `op.amask`.
fn cmp_jcc<const OP: u8, const SZ: u32, const RI: bool, const CC: u8, const JUMP: bool>(
    ex: &mut Exec<'_>,
    op: &Op,
) -> R<()> {
    let a = ex.rget::<SZ>(op.r0);
    let b = if RI { op.imm } else { ex.rget::<SZ>(op.r1) };
    let m = size_mask(SZ);
    let cmp = OP == CMP;
    let r = if cmp { a.wrapping_sub(b) & m } else { a & b };
    let kind = if cmp { FlagOp::Sub } else { FlagOp::Logic };
    ex.c.state.flags.record(kind, SZ, a, b, r, 0);
    if !JUMP {
        ex.c.state.rip = op.next;
        return Ok(());
    }
    let sign = 1u64 << (SZ * 8 - 1);
    let t = match CC >> 1 {
        0 => cmp && (a ^ b) & (a ^ r) & sign != 0,
        1 => cmp && a < b,
        2 => r == 0,
        3 => {
            if cmp {
                a <= b
            } else {
                r == 0
            }
        }
        4 => r & sign != 0,
        5 => (r as u8).count_ones() & 1 == 0,
        6 => {
            if cmp {
                sext(a, SZ) < sext(b, SZ)
            } else {
                r & sign != 0
            }
        }
        _ => {
            if cmp {
                sext(a, SZ) <= sext(b, SZ)
            } else {
                r == 0 || r & sign != 0
            }
        }
    };
    ex.c.state.rip = if t != (CC & 1 != 0) {
        op.disp
    } else {
        op.amask
    };
    Ok(())
}

/// The fused handlers (whole block, cut short) for a register CMP/TEST
/// `a` followed by a 64-bit-mode Jcc `b`, if they fuse.
pub(crate) fn fuse_cmp_jcc(a: &Op, b: &Op) -> Option<(Handler, Handler)> {
    use Mnemonic::*;
    let jcc = matches!(
        b.insn.mnemonic(),
        Jo | Jno | Jb | Jae | Je | Jne | Jbe | Ja | Js | Jns | Jp | Jnp | Jl | Jge | Jle | Jg
    );
    if !jcc || !canonical(b.imm) || a.insn.has_lock_prefix() {
        return None;
    }
    let op = match a.insn.mnemonic() {
        Cmp => CMP,
        Test => TEST,
        _ => return None,
    };
    let ri = match form(a) {
        Form::RR => false,
        Form::RI => true,
        _ => return None,
    };
    let size = Exec::op_size(&a.insn, 0);
    let cc = b.insn.condition_code() as u8 - 1;
    macro_rules! pick {
        ($jump:tt) => {
            match (op, size, ri) {
                (CMP, 1, false) => cc_table!(cmp_jcc, [CMP, 1, false], cc, $jump),
                (CMP, 1, true) => cc_table!(cmp_jcc, [CMP, 1, true], cc, $jump),
                (CMP, 2, false) => cc_table!(cmp_jcc, [CMP, 2, false], cc, $jump),
                (CMP, 2, true) => cc_table!(cmp_jcc, [CMP, 2, true], cc, $jump),
                (CMP, 4, false) => cc_table!(cmp_jcc, [CMP, 4, false], cc, $jump),
                (CMP, 4, true) => cc_table!(cmp_jcc, [CMP, 4, true], cc, $jump),
                (CMP, 8, false) => cc_table!(cmp_jcc, [CMP, 8, false], cc, $jump),
                (CMP, 8, true) => cc_table!(cmp_jcc, [CMP, 8, true], cc, $jump),
                (_, 1, false) => cc_table!(cmp_jcc, [TEST, 1, false], cc, $jump),
                (_, 1, true) => cc_table!(cmp_jcc, [TEST, 1, true], cc, $jump),
                (_, 2, false) => cc_table!(cmp_jcc, [TEST, 2, false], cc, $jump),
                (_, 2, true) => cc_table!(cmp_jcc, [TEST, 2, true], cc, $jump),
                (_, 4, false) => cc_table!(cmp_jcc, [TEST, 4, false], cc, $jump),
                (_, 4, true) => cc_table!(cmp_jcc, [TEST, 4, true], cc, $jump),
                (_, _, false) => cc_table!(cmp_jcc, [TEST, 8, false], cc, $jump),
                (_, _, true) => cc_table!(cmp_jcc, [TEST, 8, true], cc, $jump),
            }
        };
    }
    if !matches!(size, 1 | 2 | 4 | 8) {
        return None;
    }
    Some((pick!(true), pick!(false)))
}
