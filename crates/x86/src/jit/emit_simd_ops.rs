//! The packed integer and logic operations the JIT emits inline
//! (`emit_simd`), one 128-bit lane at a time with Cranelift's vector
//! types.
//!
//! Which operation an instruction is comes from the interpreter's lane
//! table (`exec::simd::lane_op`: the VEX twin and the float-typed logic
//! forms map to their canonical legacy mnemonic there); each entry below
//! restates that canonical mnemonic's lane function (`exec/simd/int.rs`)
//! as one Cranelift instruction, and tests/jit_simd.rs runs every entry
//! against the interpreter in all its forms.

use cranelift_codegen::ir::{
    condcodes::IntCC,
    types::{I16X8, I32X4, I64X2, I8X16},
    InstBuilder, Type, Value,
};
use cranelift_frontend::FunctionBuilder;
use iced_x86::Mnemonic;

use crate::exec::simd;

/// What a lane operation computes on each element of its type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// All ones where equal (PCMPEQ*).
    Eq,
    /// All ones where `a > b`, signed (PCMPGT*).
    Gt,
    /// Unsigned / signed minimum and maximum (PMINUB, PMINSW, ...).
    MinU,
    MaxU,
    MinS,
    MaxS,
    /// Wrapping (PADD*, PSUB*, PMULLW).
    Add,
    Sub,
    Mul,
    /// Saturating (PADDUS*, PSUBUS*, PADDS*, PSUBS*).
    AddSatU,
    SubSatU,
    AddSatS,
    SubSatS,
    /// `(a + b + 1) >> 1`, unsigned (PAVGB/W).
    Avg,
    And,
    Or,
    Xor,
    /// `!a & b`.
    AndN,
    /// PSHUFB: byte `b[i] & 15` of `a`, or zero where `b[i]` has bit 7
    /// set (x86's own operation: Cranelift's `x86_pshufb`).
    Shufb,
}

/// A lane operation and the vector type its operands are loaded as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Lane {
    pub kind: Kind,
    pub ty: Type,
}

impl Lane {
    /// The inline operation of a legacy or VEX mnemonic, if it has one:
    /// a two-source, per-lane operation of the interpreter's table on
    /// m128/m256 operands, with an entry here.
    pub(crate) fn of(m: Mnemonic) -> Option<Lane> {
        let op = simd::lane_op(m)?;
        if op.unary || !op.per_lane || op.mem != 16 {
            return None;
        }
        let lane = Lane::of_canonical(op.name)?;
        // Cranelift lowers `x86_pshufb` with SSSE3 only.
        (lane.kind != Kind::Shufb || host_ssse3()).then_some(lane)
    }

    fn of_canonical(m: Mnemonic) -> Option<Lane> {
        use Kind as K;
        use Mnemonic::*;
        let (kind, ty) = match m {
            Pcmpeqb => (K::Eq, I8X16),
            Pcmpeqw => (K::Eq, I16X8),
            Pcmpeqd => (K::Eq, I32X4),
            Pcmpgtb => (K::Gt, I8X16),
            Pcmpgtw => (K::Gt, I16X8),
            Pcmpgtd => (K::Gt, I32X4),
            Pminub => (K::MinU, I8X16),
            Pmaxub => (K::MaxU, I8X16),
            Pminsw => (K::MinS, I16X8),
            Pmaxsw => (K::MaxS, I16X8),
            Paddb => (K::Add, I8X16),
            Paddw => (K::Add, I16X8),
            Paddd => (K::Add, I32X4),
            Paddq => (K::Add, I64X2),
            Psubb => (K::Sub, I8X16),
            Psubw => (K::Sub, I16X8),
            Psubd => (K::Sub, I32X4),
            Psubq => (K::Sub, I64X2),
            Pmullw => (K::Mul, I16X8),
            Paddusb => (K::AddSatU, I8X16),
            Paddusw => (K::AddSatU, I16X8),
            Psubusb => (K::SubSatU, I8X16),
            Psubusw => (K::SubSatU, I16X8),
            Paddsb => (K::AddSatS, I8X16),
            Paddsw => (K::AddSatS, I16X8),
            Psubsb => (K::SubSatS, I8X16),
            Psubsw => (K::SubSatS, I16X8),
            Pavgb => (K::Avg, I8X16),
            Pavgw => (K::Avg, I16X8),
            Pshufb => (K::Shufb, I8X16),
            Pand | Andps | Andpd => (K::And, I64X2),
            Por | Orps | Orpd => (K::Or, I64X2),
            Pxor | Xorps | Xorpd => (K::Xor, I64X2),
            Pandn | Andnps | Andnpd => (K::AndN, I64X2),
            _ => return None,
        };
        Some(Lane { kind, ty })
    }

    /// Emits the operation on one 128-bit lane of `a` and `b` (of type
    /// [`Lane::ty`]).
    pub(crate) fn emit(self, b: &mut FunctionBuilder<'_>, x: Value, y: Value) -> Value {
        let i = b.ins();
        match self.kind {
            Kind::Eq => i.icmp(IntCC::Equal, x, y),
            Kind::Gt => i.icmp(IntCC::SignedGreaterThan, x, y),
            Kind::MinU => i.umin(x, y),
            Kind::MaxU => i.umax(x, y),
            Kind::MinS => i.smin(x, y),
            Kind::MaxS => i.smax(x, y),
            Kind::Add => i.iadd(x, y),
            Kind::Sub => i.isub(x, y),
            Kind::Mul => i.imul(x, y),
            Kind::AddSatU => i.uadd_sat(x, y),
            Kind::SubSatU => i.usub_sat(x, y),
            Kind::AddSatS => i.sadd_sat(x, y),
            Kind::SubSatS => i.ssub_sat(x, y),
            Kind::Avg => i.avg_round(x, y),
            Kind::And => i.band(x, y),
            Kind::Or => i.bor(x, y),
            Kind::Xor => i.bxor(x, y),
            // band_not(y, x) = y & !x.
            Kind::AndN => i.band_not(y, x),
            Kind::Shufb => i.x86_pshufb(x, y),
        }
    }
}

/// Whether the host has SSSE3 (what Cranelift's native ISA was built
/// with).
fn host_ssse3() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("ssse3")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Every legacy mnemonic with an inline lane operation (the VEX twins
/// are `V` + the name), for the tests.
#[cfg(test)]
pub(crate) const MNEMONICS: [Mnemonic; 42] = {
    use Mnemonic::*;
    [
        Pcmpeqb, Pcmpeqw, Pcmpeqd, Pcmpgtb, Pcmpgtw, Pcmpgtd, Pminub, Pmaxub, Pminsw, Pmaxsw,
        Paddb, Paddw, Paddd, Paddq, Psubb, Psubw, Psubd, Psubq, Pmullw, Paddusb, Paddusw, Psubusb,
        Psubusw, Paddsb, Paddsw, Psubsb, Psubsw, Pavgb, Pavgw, Pand, Andps, Andpd, Por, Orps, Orpd,
        Pxor, Xorps, Xorpd, Pandn, Andnps, Andnpd, Pshufb,
    ]
};

/// The VEX twin of a legacy mnemonic (`Pxor` → `Vpxor`), for the tests.
#[cfg(test)]
pub(crate) fn vex_twin(m: Mnemonic) -> Mnemonic {
    let name = format!("v{m:?}").to_lowercase();
    Mnemonic::values()
        .find(|v| format!("{v:?}").to_lowercase() == name)
        .unwrap_or_else(|| panic!("no VEX twin of {m:?}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The list the tests run is every entry, and each entry's legacy
    /// and VEX forms reach it through the interpreter's table.
    #[test]
    fn every_inline_lane_op_is_in_the_interpreters_table() {
        let mut n = 0;
        for m in iced_x86::Mnemonic::values() {
            if Lane::of_canonical(m).is_some() {
                n += 1;
                assert!(MNEMONICS.contains(&m), "{m:?} untested");
                assert_eq!(Lane::of(m), Lane::of_canonical(m), "{m:?}");
            }
        }
        assert_eq!(n, MNEMONICS.len());
        for m in MNEMONICS {
            assert_eq!(Lane::of(vex_twin(m)), Lane::of(m), "{m:?}");
        }
    }
}
