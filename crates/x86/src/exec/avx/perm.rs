//! AVX/AVX2 permutes within and across lanes (VPERMILPS/PD, VPERMD/PS,
//! VPERMQ/PD), VPBLENDD, the per-element variable shifts (VPSLLV*,
//! VPSRLV*, VPSRAVD) and the sign-bit tests VTESTPS/PD.

use iced_x86::{Instruction, Mnemonic, OpKind};

use super::mov::{y_elem, y_set_elem};
use super::Y;
use crate::exception::R;
use crate::exec::Exec;
use crate::state::rflags::{ARITH, CF, ZF};

/// Builds a 256-bit value from `n` elements of `size` bytes.
fn build(size: usize, n: usize, f: impl Fn(usize) -> u64) -> Y {
    let mut r: Y = [0, 0];
    for i in 0..n {
        r = y_set_elem(r, size, i, f(i));
    }
    r
}

/// A per-element shift by the matching element of `counts`.
fn variable_shift(m: Mnemonic, v: Y, counts: Y, size: usize, n: usize) -> Y {
    use Mnemonic::*;
    let bits = size as u64 * 8;
    build(size, n, |i| {
        let x = y_elem(v, size, i);
        let c = y_elem(counts, size, i);
        match m {
            Vpsllvd | Vpsllvq if c < bits => x << c,
            Vpsrlvd | Vpsrlvq if c < bits => x >> c,
            Vpsravd => {
                let s = (x as u32 as i32) >> c.min(31);
                s as u32 as u64
            }
            _ => 0,
        }
    })
}

/// The sign bits of each `size`-byte element of `v`, as a mask value.
fn sign_bits(v: Y, size: usize) -> Y {
    let m = build(size, 32 / size, |_| 1u64 << (size * 8 - 1));
    [v[0] & m[0], v[1] & m[1]]
}

impl Exec<'_> {
    /// The permutes, blends, variable shifts and tests; `None` otherwise.
    pub(super) fn vex_perm(&mut self, insn: &Instruction, m: Mnemonic) -> Option<R<()>> {
        use Mnemonic::*;
        if !matches!(
            m,
            Vpermilps
                | Vpermilpd
                | Vpermd
                | Vpermps
                | Vpermq
                | Vpermpd
                | Vpblendd
                | Vpsllvd
                | Vpsllvq
                | Vpsrlvd
                | Vpsrlvq
                | Vpsravd
                | Vtestps
                | Vtestpd
        ) {
            return None;
        }
        Some(self.vex_perm_op(insn, m))
    }

    fn vex_perm_op(&mut self, insn: &Instruction, m: Mnemonic) -> R<()> {
        use Mnemonic::*;
        let wide = insn.op0_kind() == OpKind::Register && insn.op0_register().is_ymm()
            || insn.op1_kind() == OpKind::Register && insn.op1_register().is_ymm();
        let n32 = if wide { 8 } else { 4 };
        let imm = Self::imm8(insn) as usize;
        let r = match m {
            Vpermilps | Vpermilpd => {
                let size = if m == Vpermilps { 4 } else { 8 };
                let per_lane = 16 / size;
                let (src, ctl) = if insn.op_kind(2) == OpKind::Immediate8 {
                    // PS: four 2-bit selectors, the same for both lanes;
                    // PD: one bit per element of the whole register.
                    let v = self.vsrc(insn, 1)?;
                    let ctl = build(size, 32 / size, |i| {
                        if size == 4 {
                            ((imm >> (2 * (i % per_lane))) & 3) as u64
                        } else {
                            // VPERMILPD's variable form reads bit 1.
                            (((imm >> i) & 1) as u64) << 1
                        }
                    });
                    (v, ctl)
                } else {
                    (self.vsrc(insn, 1)?, self.vsrc(insn, 2)?)
                };
                build(size, 32 / size, |i| {
                    let c = y_elem(ctl, size, i);
                    let sel = if size == 4 { c & 3 } else { (c >> 1) & 1 } as usize;
                    let lane = i / per_lane;
                    y_elem(src, size, lane * per_lane + sel)
                })
            }
            Vpermd | Vpermps => {
                let idx = self.vsrc(insn, 1)?;
                let table = self.vsrc(insn, 2)?;
                build(4, 8, |i| y_elem(table, 4, (y_elem(idx, 4, i) & 7) as usize))
            }
            Vpermq | Vpermpd => {
                let src = self.vsrc(insn, 1)?;
                build(8, 4, |i| y_elem(src, 8, (imm >> (2 * i)) & 3))
            }
            Vpblendd => {
                let a = self.vsrc(insn, 1)?;
                let b = self.vsrc(insn, 2)?;
                build(4, n32, |i| {
                    let src = if imm >> i & 1 != 0 { b } else { a };
                    y_elem(src, 4, i)
                })
            }
            Vpsllvd | Vpsllvq | Vpsrlvd | Vpsrlvq | Vpsravd => {
                let size = if matches!(m, Vpsllvq | Vpsrlvq) { 8 } else { 4 };
                let v = self.vsrc(insn, 1)?;
                let counts = self.vsrc(insn, 2)?;
                variable_shift(m, v, counts, size, n32 * 4 / size)
            }
            _ => {
                // VTESTPS/PD: ZF when no element has both sign bits set, CF
                // when none has the source's set and the first's clear.
                let size = if m == Vtestps { 4 } else { 8 };
                let a = sign_bits(self.vsrc(insn, 0)?, size);
                let b = sign_bits(self.vsrc(insn, 1)?, size);
                let mut f = 0;
                if (a[0] & b[0]) | (a[1] & b[1]) == 0 {
                    f |= ZF;
                }
                if (b[0] & !a[0]) | (b[1] & !a[1]) == 0 {
                    f |= CF;
                }
                self.c.state.flags.set_arith(ARITH, f);
                return Ok(());
            }
        };
        self.vdst(insn, r)
    }
}
