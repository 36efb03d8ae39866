//! VEX forms whose result is not a whole vector: compares into flags
//! (VCOMISS/SD, VUCOMISS/SD, VPTEST), conversions to and from general
//! registers, element extracts and inserts, sign-bit masks, the SSE4.2
//! string compares and VMASKMOVDQU. Their semantics are the shared
//! `simd` functions of the legacy forms.

use iced_x86::{Instruction, Mnemonic, OpKind};

use crate::exception::R;
use crate::exec::simd::{self, scalar, strings};
use crate::exec::Exec;
use crate::state::rflags::ARITH;

impl Exec<'_> {
    /// These instructions; `None` for other mnemonics.
    pub(super) fn vex_scalar(&mut self, insn: &Instruction, m: Mnemonic) -> Option<R<()>> {
        use Mnemonic::*;
        Some(match m {
            Vcomiss | Vucomiss | Vcomisd | Vucomisd => (|| {
                let a = self.vreg_op(insn, 0)?[0];
                let b = self.vsrc(insn, 1)?[0];
                let f = scalar::comis(a, b, matches!(m, Vcomisd | Vucomisd));
                self.c.state.flags.set_arith(ARITH, f);
                Ok(())
            })(),
            Vcvtsi2ss | Vcvtsi2sd => (|| {
                let a = self.vreg_op(insn, 1)?[0];
                let size = Self::op_size(insn, 2);
                let v = self.read_op(insn, 2, size)?;
                self.vdst(insn, [scalar::cvtsi2f(a, v, size * 8, m == Vcvtsi2sd), 0])
            })(),
            Vcvtss2si | Vcvttss2si | Vcvtsd2si | Vcvttsd2si => (|| {
                let b = self.vsrc(insn, 1)?[0];
                let r = insn.op0_register();
                let double = matches!(m, Vcvtsd2si | Vcvttsd2si);
                let truncate = matches!(m, Vcvttss2si | Vcvttsd2si);
                let mxcsr = self.c.state.fpu.mxcsr;
                let bits = r.size() as u32 * 8;
                self.set_gpr(r, scalar::cvtf2si(b, double, truncate, mxcsr, bits));
                Ok(())
            })(),
            Vmovmskps | Vmovmskpd | Vpmovmskb => (|| {
                let v = self.vreg_op(insn, 1)?;
                let size = match m {
                    Vpmovmskb => 1,
                    Vmovmskps => 4,
                    _ => 8,
                };
                let hi = if insn.op1_register().is_ymm() {
                    scalar::movmsk(v[1], size) << (16 / size)
                } else {
                    0
                };
                let r = scalar::movmsk(v[0], size) | hi;
                self.set_gpr(insn.op0_register(), r);
                Ok(())
            })(),
            Vpinsrb | Vpinsrw | Vpinsrd | Vpinsrq => (|| {
                let size = elem_size(m);
                let a = self.vreg_op(insn, 1)?[0];
                let v = self.read_op(insn, 2, size)?;
                self.vdst(insn, [simd::insert(a, size, insn.immediate8(), v), 0])
            })(),
            Vpextrb | Vpextrw | Vpextrd | Vpextrq | Vextractps => (|| {
                let size = elem_size(m);
                let v = simd::extract(self.vreg_op(insn, 1)?[0], size, insn.immediate8());
                match insn.op0_kind() {
                    // A register destination is written whole, zero-extended.
                    OpKind::Register => {
                        self.set_gpr(insn.op0_register(), v);
                        Ok(())
                    }
                    _ => self.write_op(insn, 0, size, v),
                }
            })(),
            Vptest => (|| {
                let a = self.vreg_op(insn, 0)?;
                let b = self.vsrc(insn, 1)?;
                // Both lanes must give ZF (CF) for the result to.
                let f = simd::ptest(a[0], b[0]) & simd::ptest(a[1], b[1]);
                self.c.state.flags.set_arith(ARITH, f);
                Ok(())
            })(),
            Vpcmpestri | Vpcmpestri64 | Vpcmpestrm | Vpcmpestrm64 | Vpcmpistri | Vpcmpistrm => {
                (|| {
                    let a = self.vreg_op(insn, 0)?[0];
                    let b = self.vsrc(insn, 1)?[0];
                    let g = &self.c.state.gpr;
                    let lengths = match m {
                        Vpcmpestri | Vpcmpestrm => {
                            strings::Lengths::Explicit(g[0] as i32 as i64, g[2] as i32 as i64)
                        }
                        Vpcmpestri64 | Vpcmpestrm64 => {
                            strings::Lengths::Explicit(g[0] as i64, g[2] as i64)
                        }
                        _ => strings::Lengths::Implicit,
                    };
                    let r = strings::pcmpstr(a, b, insn.immediate8(), lengths);
                    if matches!(m, Vpcmpestri | Vpcmpestri64 | Vpcmpistri) {
                        self.c.state.gpr[1] = r.index as u64;
                    } else {
                        self.set_vreg(0, false, [r.mask, 0]);
                    }
                    self.c.state.flags.set_arith(ARITH, r.flags);
                    Ok(())
                })()
            }
            Vmaskmovdqu => self.maskmovdqu(insn),
            _ => return None,
        })
    }
}

/// Element size of the PINSR*/PEXTR*/EXTRACTPS forms.
fn elem_size(m: Mnemonic) -> u32 {
    use Mnemonic::*;
    match m {
        Vpinsrb | Vpextrb => 1,
        Vpinsrw | Vpextrw => 2,
        Vpinsrq | Vpextrq => 8,
        _ => 4,
    }
}
