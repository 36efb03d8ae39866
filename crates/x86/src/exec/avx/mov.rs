//! VEX moves: whole registers, scalars and halves, GPR transfers,
//! broadcasts, 128-bit lane inserts/extracts/permutes, masked loads and
//! stores, VZEROUPPER/VZEROALL, VLDMXCSR/VSTMXCSR.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::{vreg, Y};
use crate::exception::{gp, R};
use crate::exec::sse::MXCSR_MASK;
use crate::exec::Exec;
use crate::mmu::AccessKind;

/// Low `bytes` bytes of a u128 as a mask.
fn low_mask(bytes: usize) -> u128 {
    if bytes >= 16 {
        u128::MAX
    } else {
        (1u128 << (bytes * 8)) - 1
    }
}

/// `v` repeated to fill 256 bits, from an element of `size` bytes.
fn broadcast(v: u128, size: usize) -> Y {
    let e = v & low_mask(size);
    let mut r = 0u128;
    for i in 0..16 / size {
        r |= e << (i * size * 8);
    }
    [r, r]
}

/// Element `i` of `size` bytes of a 256-bit value.
pub(super) fn y_elem(v: Y, size: usize, i: usize) -> u64 {
    let bit = i * size * 8;
    let lane = v[(bit / 128) & 1];
    ((lane >> (bit % 128)) & low_mask(size)) as u64
}

/// `v` with element `i` of `size` bytes replaced by `x`.
pub(super) fn y_set_elem(mut v: Y, size: usize, i: usize, x: u64) -> Y {
    let bit = i * size * 8;
    let m = low_mask(size) << (bit % 128);
    let lane = &mut v[(bit / 128) & 1];
    *lane = (*lane & !m) | (((x as u128) << (bit % 128)) & m);
    v
}

impl Exec<'_> {
    /// The moves; `None` when `m` is not one.
    pub(super) fn vex_mov(&mut self, insn: &Instruction, m: Mnemonic) -> Option<R<()>> {
        use Mnemonic::*;
        Some(match m {
            Vmovaps | Vmovapd | Vmovdqa | Vmovups | Vmovupd | Vmovdqu | Vlddqu | Vmovntps
            | Vmovntpd | Vmovntdq | Vmovntdqa => {
                let aligned = matches!(
                    m,
                    Vmovaps | Vmovapd | Vmovdqa | Vmovntps | Vmovntpd | Vmovntdq | Vmovntdqa
                );
                self.vmov_full(insn, aligned)
            }
            Vmovss | Vmovsd => self.vmov_scalar(insn, if m == Vmovss { 4 } else { 8 }),
            Vmovlps | Vmovlpd | Vmovhps | Vmovhpd | Vmovhlps | Vmovlhps => self.vmov_half(insn, m),
            Vmovd | Vmovq => self.vmov_gpr(insn, if m == Vmovd { 4 } else { 8 }),
            Vzeroupper | Vzeroall => {
                let n = self.vector_regs();
                let f = &mut self.c.state.fpu;
                f.ymm_hi[..n].fill(0);
                if m == Vzeroall {
                    f.xmm[..n].fill(0);
                }
                Ok(())
            }
            Vbroadcastss | Vbroadcastsd | Vbroadcastf128 | Vbroadcasti128 | Vpbroadcastb
            | Vpbroadcastw | Vpbroadcastd | Vpbroadcastq => {
                let size = match m {
                    Vpbroadcastb => 1,
                    Vpbroadcastw => 2,
                    Vbroadcastss | Vpbroadcastd => 4,
                    Vbroadcastsd | Vpbroadcastq => 8,
                    _ => 16,
                };
                self.vsrc(insn, 1)
                    .and_then(|v| self.vdst(insn, broadcast(v[0], size)))
            }
            Vinsertf128 | Vinserti128 => (|| {
                let mut r = self.vsrc(insn, 1)?;
                let v = self.vsrc(insn, 2)?;
                r[(insn.immediate8() & 1) as usize] = v[0];
                self.vdst(insn, r)
            })(),
            Vextractf128 | Vextracti128 => (|| {
                let v = self.vreg_op(insn, 1)?[(insn.immediate8() & 1) as usize];
                if insn.op0_kind() == OpKind::Memory {
                    self.vmem_write(insn, 16, false, [v, 0])
                } else {
                    self.vdst(insn, [v, 0])
                }
            })(),
            Vperm2f128 | Vperm2i128 => (|| {
                let a = self.vsrc(insn, 1)?;
                let b = self.vsrc(insn, 2)?;
                let imm = insn.immediate8();
                let pick = |sel: u8| {
                    if sel & 8 != 0 {
                        0
                    } else {
                        [a[0], a[1], b[0], b[1]][(sel & 3) as usize]
                    }
                };
                self.vdst(insn, [pick(imm), pick(imm >> 4)])
            })(),
            Vmaskmovps | Vmaskmovpd | Vpmaskmovd | Vpmaskmovq => {
                let size = if matches!(m, Vmaskmovps | Vpmaskmovd) {
                    4
                } else {
                    8
                };
                self.vmaskmov(insn, size)
            }
            Vldmxcsr => (|| {
                let v = self.read_op(insn, 0, 4)? as u32;
                if v & !MXCSR_MASK != 0 {
                    return Err(gp(0));
                }
                self.c.state.fpu.mxcsr = v;
                Ok(())
            })(),
            Vstmxcsr => {
                let v = self.c.state.fpu.mxcsr as u64;
                self.write_op(insn, 0, 4, v)
            }
            _ => return None,
        })
    }

    /// VMOVAPS and friends: register or memory to register, or register to
    /// memory; `aligned` ones need an operand-size-aligned address.
    fn vmov_full(&mut self, insn: &Instruction, aligned: bool) -> R<()> {
        let size = insn.memory_size().size();
        match (insn.op0_kind(), insn.op1_kind()) {
            (OpKind::Memory, _) => {
                let v = self.vreg_op(insn, 1)?;
                self.vmem_write(insn, size, aligned, v)
            }
            (_, OpKind::Memory) => {
                let v = self.vmem_read(insn, size, aligned)?;
                self.vdst(insn, v)
            }
            _ => {
                let v = self.vreg_op(insn, 1)?;
                self.vdst(insn, v)
            }
        }
    }

    /// VMOVSS/VMOVSD (`size` 4 or 8): load (upper bits zeroed), store, or
    /// the three-register merge.
    fn vmov_scalar(&mut self, insn: &Instruction, size: usize) -> R<()> {
        let mask = low_mask(size);
        match (insn.op0_kind(), insn.op_count()) {
            (OpKind::Memory, _) => {
                let v = self.vreg_op(insn, 1)?;
                self.vmem_write(insn, size, false, v)
            }
            (_, 2) => {
                let v = self.vmem_read(insn, size, false)?;
                self.vdst(insn, [v[0] & mask, 0])
            }
            _ => {
                let a = self.vreg_op(insn, 1)?[0];
                let b = self.vreg_op(insn, 2)?[0];
                self.vdst(insn, [(a & !mask) | (b & mask), 0])
            }
        }
    }

    /// VMOVLPS/LPD/HPS/HPD, VMOVHLPS, VMOVLHPS.
    fn vmov_half(&mut self, insn: &Instruction, m: Mnemonic) -> R<()> {
        use Mnemonic::*;
        let low = u64::MAX as u128;
        let high = matches!(m, Vmovhps | Vmovhpd);
        if insn.op0_kind() == OpKind::Memory {
            let v = self.vreg_op(insn, 1)?[0];
            let half = if high { v >> 64 } else { v & low };
            return self.vmem_write(insn, 8, false, [half, 0]);
        }
        let a = self.vreg_op(insn, 1)?[0];
        let b = self.vsrc(insn, 2)?[0];
        let r = match m {
            Vmovhlps => (b >> 64) | (a & !low),
            Vmovlhps => (a & low) | (b << 64),
            Vmovhps | Vmovhpd => (a & low) | (b << 64),
            _ => (a & !low) | (b & low),
        };
        self.vdst(insn, [r, 0])
    }

    /// VMOVD/VMOVQ between a vector register and a GPR or memory, and
    /// VMOVQ between vector registers (`size` 4 or 8 bytes).
    fn vmov_gpr(&mut self, insn: &Instruction, size: usize) -> R<()> {
        let to_vector = insn.op0_kind() == OpKind::Register && vreg(insn.op0_register()).is_some();
        if to_vector {
            let v = match insn.op1_kind() {
                OpKind::Register => match vreg(insn.op1_register()) {
                    Some((s, _)) => self.ymm(s)[0],
                    None => self.gpr(insn.op1_register()) as u128,
                },
                _ => self.vmem_read(insn, size, false)?[0],
            };
            return self.vdst(insn, [v & low_mask(size), 0]);
        }
        let v = self.vreg_op(insn, 1)?[0] & low_mask(size);
        match insn.op0_kind() {
            OpKind::Register => {
                self.set_gpr(insn.op0_register(), v as u64);
                Ok(())
            }
            _ => self.vmem_write(insn, size, false, [v, 0]),
        }
    }

    /// VMASKMOVPS/PD, VPMASKMOVD/Q: elements whose mask element has its
    /// sign bit set are loaded (others are zero) or stored (others are
    /// left alone); only those elements' memory is accessed, so masked
    /// elements never fault.
    fn vmaskmov(&mut self, insn: &Instruction, size: usize) -> R<()> {
        let store = insn.op0_kind() == OpKind::Memory;
        let bytes = insn.memory_size().size().min(32);
        let mask = self.vreg_op(insn, 1)?;
        let n = bytes / size;
        let selected = |i: usize| y_elem(mask, size, i) >> (size * 8 - 1) & 1 != 0;
        let lin = self.vmem_lin(insn, bytes, store, false)?;
        let user = self.user();
        let at = |i: usize| lin.wrapping_add((i * size) as u64);
        if !store {
            let mut r: Y = [0, 0];
            for i in (0..n).filter(|&i| selected(i)) {
                let a = self.wrap_lin(at(i));
                let v = self.read_lin(a, size as u32, user)?;
                r = y_set_elem(r, size, i, v);
            }
            return self.vdst(insn, r);
        }
        let src = self.vreg_op(insn, 2)?;
        // Every selected element's pages are checked before anything is
        // written.
        for i in (0..n).filter(|&i| selected(i)) {
            for a in [at(i), at(i).wrapping_add(size as u64 - 1)] {
                let a = self.wrap_lin(a);
                self.translate_fill(a, AccessKind::Write, user)?;
            }
        }
        for i in (0..n).filter(|&i| selected(i)) {
            let a = self.wrap_lin(at(i));
            self.write_lin(a, size as u32, y_elem(src, size, i), user)?;
        }
        Ok(())
    }
}
