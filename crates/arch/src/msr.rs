//! The MSR values a vCPU has at a 64-bit boot.
//!
//! | MSR | value |
//! |---|---|
//! | IA32_SYSENTER_CS/ESP/EIP | 0 |
//! | STAR, LSTAR, CSTAR, FMASK | 0 |
//! | KERNEL_GS_BASE | 0 |
//! | TSC | 0 |
//! | IA32_MISC_ENABLE | fast strings (bit 0) |
//! | IA32_PAT | 0x0007_0406_0007_0406 (the power-on default: WB, WT, UC-, UC) |
//!
//! EFER is part of the segment registers ([`crate::mode::long_mode_sregs`]).

use hv::state::msr_index::{
    IA32_CSTAR, IA32_FMASK, IA32_KERNEL_GS_BASE, IA32_LSTAR, IA32_MISC_ENABLE, IA32_PAT, IA32_STAR,
    IA32_SYSENTER_CS, IA32_SYSENTER_EIP, IA32_SYSENTER_ESP, IA32_TSC,
};
use hv::Msr;

/// IA32_MISC_ENABLE: fast-string operations enabled.
pub const MISC_ENABLE_FAST_STRING: u64 = 1 << 0;
/// IA32_PAT at power-on.
pub const PAT_DEFAULT: u64 = 0x0007_0406_0007_0406;

/// The boot MSRs (see the module table).
pub fn boot_msrs() -> Vec<Msr> {
    [
        (IA32_SYSENTER_CS, 0),
        (IA32_SYSENTER_ESP, 0),
        (IA32_SYSENTER_EIP, 0),
        (IA32_STAR, 0),
        (IA32_LSTAR, 0),
        (IA32_CSTAR, 0),
        (IA32_FMASK, 0),
        (IA32_KERNEL_GS_BASE, 0),
        (IA32_TSC, 0),
        (IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (IA32_PAT, PAT_DEFAULT),
    ]
    .into_iter()
    .map(|(index, data)| Msr { index, data })
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_msrs_have_the_documented_values() {
        let msrs = boot_msrs();
        let value = |index| msrs.iter().find(|m| m.index == index).map(|m| m.data);
        assert_eq!(value(IA32_PAT), Some(PAT_DEFAULT));
        assert_eq!(value(IA32_MISC_ENABLE), Some(1));
        assert_eq!(value(IA32_LSTAR), Some(0));
        assert_eq!(value(IA32_TSC), Some(0));
        let mut indices: Vec<_> = msrs.iter().map(|m| m.index).collect();
        indices.sort_unstable();
        indices.dedup();
        assert_eq!(indices.len(), msrs.len());
    }
}
