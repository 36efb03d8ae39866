//! AVX2 gathers: VGATHERDPS/DPD/QPS/QPD and VPGATHERDD/DQ/QD/QQ.
//!
//! `dest, [base + index_vector * scale + disp], mask`: each element whose
//! mask element has its sign bit set is loaded from memory, in order, and
//! its mask element is then cleared; the other elements keep their value.
//! A fault on an element leaves the elements before it loaded and their
//! mask elements cleared (the instruction can be restarted); without a
//! fault the whole mask register ends zero and, as for any VEX
//! instruction, bits above the vector length are zeroed. #UD when two of
//! the destination, index and mask registers are the same register.

use iced_x86::{Instruction, Mnemonic, Register};

use super::mov::{y_elem, y_set_elem};
use super::{vreg, Y};
use crate::exception::{ud, R};
use crate::exec::Exec;
use crate::state::Mode;

impl Exec<'_> {
    /// The gathers; `None` for other mnemonics.
    pub(super) fn vex_gather(&mut self, insn: &Instruction, m: Mnemonic) -> Option<R<()>> {
        use Mnemonic::*;
        // (data element bytes, index element bytes)
        let (size, isize) = match m {
            Vgatherdps | Vpgatherdd => (4, 4),
            Vgatherdpd | Vpgatherdq => (8, 4),
            Vgatherqps | Vpgatherqd => (4, 8),
            Vgatherqpd | Vpgatherqq => (8, 8),
            _ => return None,
        };
        Some(self.gather(insn, size, isize))
    }

    fn gather(&mut self, insn: &Instruction, size: usize, isize: usize) -> R<()> {
        let (d, wide) = vreg(insn.op0_register()).ok_or_else(ud)?;
        let (k, _) = vreg(insn.op2_register()).ok_or_else(ud)?;
        let (x, xwide) = vreg(insn.memory_index()).ok_or_else(ud)?;
        if d == k || d == x || k == x {
            return Err(ud());
        }
        let dest_bytes = if wide { 32 } else { 16 };
        let index_bytes = if xwide { 32 } else { 16 };
        let n = (dest_bytes / size).min(index_bytes / isize);
        let index = self.ymm(x);
        let base = match insn.memory_base() {
            Register::None => 0,
            r => self.gpr(r),
        };
        let disp = insn.memory_displacement64();
        let scale = insn.memory_index_scale() as u64;
        let addr_mask = match (self.c.state.mode, insn.memory_base().size()) {
            (Mode::Long, 0 | 8) => u64::MAX,
            _ => 0xffff_ffff,
        };
        let seg = Self::mem_seg(insn);
        let user = self.user();
        // The mask elements as all ones or all zeros.
        let raw_mask = self.ymm(k);
        let mut mask: Y = [0, 0];
        for j in 0..n {
            if y_elem(raw_mask, size, j) >> (size * 8 - 1) != 0 {
                mask = y_set_elem(mask, size, j, u64::MAX);
            }
        }
        let mut dest = self.ymm(d);
        let mut fault = None;
        for j in 0..n {
            if y_elem(mask, size, j) == 0 {
                continue;
            }
            let i = y_elem(index, isize, j);
            let i = if isize == 4 {
                i as u32 as i32 as i64 as u64
            } else {
                i
            };
            let off = base.wrapping_add(i.wrapping_mul(scale)).wrapping_add(disp) & addr_mask;
            let v = self
                .seg_lin(seg, off, size as u32, false)
                .and_then(|lin| self.read_lin(lin, size as u32, user));
            match v {
                Ok(v) => {
                    dest = y_set_elem(dest, size, j, v);
                    mask = y_set_elem(mask, size, j, 0);
                }
                Err(e) => {
                    fault = Some(e);
                    break;
                }
            }
        }
        // Bits beyond the gathered elements: zero in the destination when
        // the element count does not fill it (a QPS/QD form), and zero in
        // the mask.
        let keep = n * size * 8;
        if keep < 256 {
            for (lane, (dv, mv)) in dest.iter_mut().zip(mask.iter_mut()).enumerate() {
                let lo = lane * 128;
                if keep <= lo {
                    *dv = 0;
                    *mv = 0;
                } else if keep < lo + 128 {
                    let m = (1u128 << (keep - lo)) - 1;
                    *dv &= m;
                    *mv &= m;
                }
            }
        }
        // The mask register is as wide as the destination.
        self.set_vreg(d, wide, dest);
        self.set_vreg(k, wide, mask);
        match fault {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}
