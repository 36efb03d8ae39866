//! FMA: VFMADD/VFMSUB/VFNMADD/VFNMSUB 132/213/231 PS/PD/SS/SD and
//! VFMADDSUB/VFMSUBADD 132/213/231 PS/PD, computed fused (one rounding,
//! `mul_add`), round to nearest even like the rest of the SSE/AVX unit.
//!
//! Operands: op0 is the destination and a source, op1 the VEX.vvvv
//! source, op2 the r/m source. The digits name the operands of
//! `x * y + z`: 132 is op0 * op2 + op1, 213 is op1 * op0 + op2, 231 is
//! op1 * op2 + op0. A NaN source gives that NaN quieted, the first one in
//! the order x, y, z; the negations do not change a NaN's sign; an
//! invalid operation (0 × ∞, ∞ − ∞) gives the default NaN.

use iced_x86::{Instruction, Mnemonic};

use super::mov::{y_elem, y_set_elem};
use super::Y;
use crate::exception::R;
use crate::exec::Exec;

/// Multiply-add flavour of one element.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// x*y + z
    Add,
    /// x*y - z
    Sub,
    /// -(x*y) + z
    NegAdd,
    /// -(x*y) - z
    NegSub,
}

/// A float format by its bits: `f32` or `f64` held in a u64.
trait Float {
    const QUIET: u64;
    const INDEFINITE: u64;
    fn is_nan_bits(b: u64) -> bool;
    fn fma(x: u64, y: u64, z: u64, neg_product: bool, neg_addend: bool) -> u64;
}

struct F32;
struct F64;

impl Float for F32 {
    const QUIET: u64 = 0x0040_0000;
    const INDEFINITE: u64 = 0xffc0_0000;
    fn is_nan_bits(b: u64) -> bool {
        f32::from_bits(b as u32).is_nan()
    }
    fn fma(x: u64, y: u64, z: u64, neg_product: bool, neg_addend: bool) -> u64 {
        let mut x = f32::from_bits(x as u32);
        let y = f32::from_bits(y as u32);
        let mut z = f32::from_bits(z as u32);
        if neg_product {
            x = -x;
        }
        if neg_addend {
            z = -z;
        }
        x.mul_add(y, z).to_bits() as u64
    }
}

impl Float for F64 {
    const QUIET: u64 = 0x0008_0000_0000_0000;
    const INDEFINITE: u64 = 0xfff8_0000_0000_0000;
    fn is_nan_bits(b: u64) -> bool {
        f64::from_bits(b).is_nan()
    }
    fn fma(x: u64, y: u64, z: u64, neg_product: bool, neg_addend: bool) -> u64 {
        let mut x = f64::from_bits(x);
        let y = f64::from_bits(y);
        let mut z = f64::from_bits(z);
        if neg_product {
            x = -x;
        }
        if neg_addend {
            z = -z;
        }
        x.mul_add(y, z).to_bits()
    }
}

/// One element: `kind` of x, y, z with x86's NaN rules.
fn element<F: Float>(kind: Kind, x: u64, y: u64, z: u64) -> u64 {
    for v in [x, y, z] {
        if F::is_nan_bits(v) {
            return v | F::QUIET;
        }
    }
    let (neg_product, neg_addend) = match kind {
        Kind::Add => (false, false),
        Kind::Sub => (false, true),
        Kind::NegAdd => (true, false),
        Kind::NegSub => (true, true),
    };
    let r = F::fma(x, y, z, neg_product, neg_addend);
    if F::is_nan_bits(r) {
        F::INDEFINITE
    } else {
        r
    }
}

/// What a mnemonic computes: the flavour of even and odd elements, the
/// operand order (132, 213, 231), double precision, scalar.
struct Form {
    even: Kind,
    odd: Kind,
    order: u16,
    double: bool,
    scalar: bool,
}

/// The FMA form of a mnemonic.
fn form(m: Mnemonic) -> Option<Form> {
    use Mnemonic::*;
    let f = |even, odd, order, double, scalar| Form {
        even,
        odd,
        order,
        double,
        scalar,
    };
    Some(match m {
        Vfmadd132ps => f(Kind::Add, Kind::Add, 132, false, false),
        Vfmadd132pd => f(Kind::Add, Kind::Add, 132, true, false),
        Vfmadd132ss => f(Kind::Add, Kind::Add, 132, false, true),
        Vfmadd132sd => f(Kind::Add, Kind::Add, 132, true, true),
        Vfmadd213ps => f(Kind::Add, Kind::Add, 213, false, false),
        Vfmadd213pd => f(Kind::Add, Kind::Add, 213, true, false),
        Vfmadd213ss => f(Kind::Add, Kind::Add, 213, false, true),
        Vfmadd213sd => f(Kind::Add, Kind::Add, 213, true, true),
        Vfmadd231ps => f(Kind::Add, Kind::Add, 231, false, false),
        Vfmadd231pd => f(Kind::Add, Kind::Add, 231, true, false),
        Vfmadd231ss => f(Kind::Add, Kind::Add, 231, false, true),
        Vfmadd231sd => f(Kind::Add, Kind::Add, 231, true, true),
        Vfmsub132ps => f(Kind::Sub, Kind::Sub, 132, false, false),
        Vfmsub132pd => f(Kind::Sub, Kind::Sub, 132, true, false),
        Vfmsub132ss => f(Kind::Sub, Kind::Sub, 132, false, true),
        Vfmsub132sd => f(Kind::Sub, Kind::Sub, 132, true, true),
        Vfmsub213ps => f(Kind::Sub, Kind::Sub, 213, false, false),
        Vfmsub213pd => f(Kind::Sub, Kind::Sub, 213, true, false),
        Vfmsub213ss => f(Kind::Sub, Kind::Sub, 213, false, true),
        Vfmsub213sd => f(Kind::Sub, Kind::Sub, 213, true, true),
        Vfmsub231ps => f(Kind::Sub, Kind::Sub, 231, false, false),
        Vfmsub231pd => f(Kind::Sub, Kind::Sub, 231, true, false),
        Vfmsub231ss => f(Kind::Sub, Kind::Sub, 231, false, true),
        Vfmsub231sd => f(Kind::Sub, Kind::Sub, 231, true, true),
        Vfnmadd132ps => f(Kind::NegAdd, Kind::NegAdd, 132, false, false),
        Vfnmadd132pd => f(Kind::NegAdd, Kind::NegAdd, 132, true, false),
        Vfnmadd132ss => f(Kind::NegAdd, Kind::NegAdd, 132, false, true),
        Vfnmadd132sd => f(Kind::NegAdd, Kind::NegAdd, 132, true, true),
        Vfnmadd213ps => f(Kind::NegAdd, Kind::NegAdd, 213, false, false),
        Vfnmadd213pd => f(Kind::NegAdd, Kind::NegAdd, 213, true, false),
        Vfnmadd213ss => f(Kind::NegAdd, Kind::NegAdd, 213, false, true),
        Vfnmadd213sd => f(Kind::NegAdd, Kind::NegAdd, 213, true, true),
        Vfnmadd231ps => f(Kind::NegAdd, Kind::NegAdd, 231, false, false),
        Vfnmadd231pd => f(Kind::NegAdd, Kind::NegAdd, 231, true, false),
        Vfnmadd231ss => f(Kind::NegAdd, Kind::NegAdd, 231, false, true),
        Vfnmadd231sd => f(Kind::NegAdd, Kind::NegAdd, 231, true, true),
        Vfnmsub132ps => f(Kind::NegSub, Kind::NegSub, 132, false, false),
        Vfnmsub132pd => f(Kind::NegSub, Kind::NegSub, 132, true, false),
        Vfnmsub132ss => f(Kind::NegSub, Kind::NegSub, 132, false, true),
        Vfnmsub132sd => f(Kind::NegSub, Kind::NegSub, 132, true, true),
        Vfnmsub213ps => f(Kind::NegSub, Kind::NegSub, 213, false, false),
        Vfnmsub213pd => f(Kind::NegSub, Kind::NegSub, 213, true, false),
        Vfnmsub213ss => f(Kind::NegSub, Kind::NegSub, 213, false, true),
        Vfnmsub213sd => f(Kind::NegSub, Kind::NegSub, 213, true, true),
        Vfnmsub231ps => f(Kind::NegSub, Kind::NegSub, 231, false, false),
        Vfnmsub231pd => f(Kind::NegSub, Kind::NegSub, 231, true, false),
        Vfnmsub231ss => f(Kind::NegSub, Kind::NegSub, 231, false, true),
        Vfnmsub231sd => f(Kind::NegSub, Kind::NegSub, 231, true, true),
        Vfmaddsub132ps => f(Kind::Sub, Kind::Add, 132, false, false),
        Vfmaddsub132pd => f(Kind::Sub, Kind::Add, 132, true, false),
        Vfmaddsub213ps => f(Kind::Sub, Kind::Add, 213, false, false),
        Vfmaddsub213pd => f(Kind::Sub, Kind::Add, 213, true, false),
        Vfmaddsub231ps => f(Kind::Sub, Kind::Add, 231, false, false),
        Vfmaddsub231pd => f(Kind::Sub, Kind::Add, 231, true, false),
        Vfmsubadd132ps => f(Kind::Add, Kind::Sub, 132, false, false),
        Vfmsubadd132pd => f(Kind::Add, Kind::Sub, 132, true, false),
        Vfmsubadd213ps => f(Kind::Add, Kind::Sub, 213, false, false),
        Vfmsubadd213pd => f(Kind::Add, Kind::Sub, 213, true, false),
        Vfmsubadd231ps => f(Kind::Add, Kind::Sub, 231, false, false),
        Vfmsubadd231pd => f(Kind::Add, Kind::Sub, 231, true, false),
        _ => return None,
    })
}

impl Exec<'_> {
    /// The FMA instructions; `None` for other mnemonics.
    pub(super) fn vex_fma(&mut self, insn: &Instruction, m: Mnemonic) -> Option<R<()>> {
        let f = form(m)?;
        Some(self.fma_op(insn, f))
    }

    fn fma_op(&mut self, insn: &Instruction, f: Form) -> R<()> {
        let dst = self.vreg_op(insn, 0)?;
        let src2 = self.vreg_op(insn, 1)?;
        let src3 = self.vsrc(insn, 2)?;
        let wide = insn.op0_register().is_ymm();
        let size = if f.double { 8 } else { 4 };
        let n = if f.scalar {
            1
        } else if wide {
            32 / size
        } else {
            16 / size
        };
        let mut r: Y = if f.scalar { [dst[0], 0] } else { [0, 0] };
        for i in 0..n {
            let (d, s2, s3) = (
                y_elem(dst, size, i),
                y_elem(src2, size, i),
                y_elem(src3, size, i),
            );
            let (x, y, z) = match f.order {
                132 => (d, s3, s2),
                213 => (s2, d, s3),
                _ => (s2, s3, d),
            };
            let kind = if i % 2 == 0 { f.even } else { f.odd };
            let v = if f.double {
                element::<F64>(kind, x, y, z)
            } else {
                element::<F32>(kind, x, y, z)
            };
            r = y_set_elem(r, size, i, v);
        }
        self.vdst(insn, r)
    }
}
