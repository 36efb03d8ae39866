//! Firecracker's custom CPU templates (x86-64): CPUID and MSR modifiers
//! (`PUT /cpu-config`, the `cpu-config` section of a VM description).
//!
//! A modifier names a register and a bitmap `0b` + one character a bit,
//! most significant first: `0` clears the bit, `1` sets it, `x` keeps it;
//! `_` may separate groups and is not counted. A CPUID bitmap has 32 bits,
//! an MSR bitmap 64. Leaves, subleaves and MSR addresses are written in
//! hex (`0x`), binary (`0b`) or decimal.
//!
//! A CPUID modifier of a leaf/subleaf the CPUID does not have adds that
//! leaf (all registers 0 before the modifier), as Firecracker does; its
//! `flags` bit 0 (KVM_CPUID_FLAG_SIGNIFCANT_INDEX) says whether the
//! subleaf matters. An MSR modifier applies to the MSR's value at boot.

use hv::CpuidEntry;

use crate::cpu_model::Reg;

/// What a template's text can get wrong.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    #[error("bad bitmap {text:?}: {why}")]
    Bitmap { text: String, why: String },
    #[error("bad {what} {text:?}: expected a hex (0x...), binary (0b...) or decimal number of at most 32 bits")]
    Number { what: &'static str, text: String },
    #[error("bad CPUID flags {0}: only bit 0 (significant subleaf) is defined")]
    Flags(u32),
    #[error("bad KVM capability {0:?}: expected a decimal number, or ! and a number to remove it")]
    KvmCapability(String),
}

/// Which bits a modifier changes (`mask`) and to what (`value`, only bits
/// of `mask`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bitmap {
    pub mask: u64,
    pub value: u64,
}

impl Bitmap {
    /// `old` with the bits of the mask replaced.
    pub fn apply(&self, old: u64) -> u64 {
        (old & !self.mask) | self.value
    }

    /// Parses `0b` + `bits` characters of `0`, `1`, `x` (and `_`).
    pub fn parse(text: &str, bits: u32) -> Result<Bitmap, TemplateError> {
        let bad = |why: String| TemplateError::Bitmap {
            text: text.to_string(),
            why,
        };
        let body = text
            .strip_prefix("0b")
            .ok_or_else(|| bad("it must start with 0b".into()))?;
        let mut mask = 0u64;
        let mut value = 0u64;
        let mut count = 0u32;
        for c in body.chars().filter(|&c| c != '_') {
            count += 1;
            if count > bits {
                break;
            }
            mask <<= 1;
            value <<= 1;
            match c {
                '0' => mask |= 1,
                '1' => {
                    mask |= 1;
                    value |= 1;
                }
                'x' | 'X' => {}
                other => return Err(bad(format!("{other:?} is not 0, 1, x or _"))),
            }
        }
        if count != bits {
            return Err(bad(format!(
                "it has {count} bits, a {bits}-bit register needs exactly {bits}"
            )));
        }
        Ok(Bitmap { mask, value })
    }
}

/// Parses a 32-bit number in hex (`0x`), binary (`0b`) or decimal.
pub fn parse_u32(what: &'static str, text: &str) -> Result<u32, TemplateError> {
    let t = text.trim();
    let parsed = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        u32::from_str_radix(&h.replace('_', ""), 16)
    } else if let Some(b) = t.strip_prefix("0b").or_else(|| t.strip_prefix("0B")) {
        u32::from_str_radix(&b.replace('_', ""), 2)
    } else {
        t.parse::<u32>()
    };
    parsed.map_err(|_| TemplateError::Number {
        what,
        text: text.to_string(),
    })
}

/// One CPUID register modifier of one leaf/subleaf.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CpuidModifier {
    pub leaf: u32,
    pub subleaf: u32,
    /// The subleaf matters (flags bit 0).
    pub significant_index: bool,
    pub reg: Reg,
    pub bitmap: Bitmap,
}

/// One MSR modifier.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MsrModifier {
    pub index: u32,
    pub bitmap: Bitmap,
}

/// A parsed template.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuTemplate {
    pub cpuid: Vec<CpuidModifier>,
    pub msrs: Vec<MsrModifier>,
    /// KVM capabilities the accelerator must have (`"N"`).
    pub kvm_required: Vec<u32>,
    /// KVM capabilities removed from the checks (`"!N"`).
    pub kvm_removed: Vec<u32>,
}

/// A `kvm_capabilities` item: `(cap, true)` for `"N"` (required),
/// `(cap, false)` for `"!N"` (removed).
pub fn parse_kvm_capability(text: &str) -> Result<(u32, bool), TemplateError> {
    let (body, add) = match text.strip_prefix('!') {
        Some(rest) => (rest, false),
        None => (text, true),
    };
    let cap = body
        .parse::<u32>()
        .map_err(|_| TemplateError::KvmCapability(text.to_string()))?;
    Ok((cap, add))
}

impl CpuidModifier {
    /// Parses one register modifier of a leaf modifier's text.
    pub fn parse(
        leaf: &str,
        subleaf: &str,
        flags: u32,
        reg: Reg,
        bitmap: &str,
    ) -> Result<CpuidModifier, TemplateError> {
        if flags & !1 != 0 {
            return Err(TemplateError::Flags(flags));
        }
        Ok(CpuidModifier {
            leaf: parse_u32("CPUID leaf", leaf)?,
            subleaf: parse_u32("CPUID subleaf", subleaf)?,
            significant_index: flags & 1 != 0,
            reg,
            bitmap: Bitmap::parse(bitmap, 32)?,
        })
    }
}

impl MsrModifier {
    /// Parses one MSR modifier's text.
    pub fn parse(addr: &str, bitmap: &str) -> Result<MsrModifier, TemplateError> {
        Ok(MsrModifier {
            index: parse_u32("MSR address", addr)?,
            bitmap: Bitmap::parse(bitmap, 64)?,
        })
    }
}

fn reg_mut(e: &mut CpuidEntry, reg: Reg) -> &mut u32 {
    match reg {
        Reg::Eax => &mut e.eax,
        Reg::Ebx => &mut e.ebx,
        Reg::Ecx => &mut e.ecx,
        Reg::Edx => &mut e.edx,
    }
}

impl CpuTemplate {
    /// Applies the CPUID modifiers to a vCPU's CPUID, in order; a missing
    /// leaf/subleaf is added.
    pub fn apply_cpuid(&self, cpuid: &mut Vec<CpuidEntry>) {
        for m in &self.cpuid {
            let pos = cpuid
                .iter()
                .position(|e| e.function == m.leaf && e.index == m.subleaf);
            let entry = match pos {
                Some(i) => &mut cpuid[i],
                None => {
                    cpuid.push(CpuidEntry {
                        function: m.leaf,
                        index: m.subleaf,
                        significant_index: m.significant_index,
                        ..CpuidEntry::default()
                    });
                    cpuid.last_mut().expect("just pushed")
                }
            };
            let r = reg_mut(entry, m.reg);
            *r = m.bitmap.apply(u64::from(*r)) as u32;
        }
    }

    /// The MSR indices the modifiers change, each once, in first-use order.
    pub fn msr_indices(&self) -> Vec<u32> {
        let mut out: Vec<u32> = Vec::new();
        for m in &self.msrs {
            if !out.contains(&m.index) {
                out.push(m.index);
            }
        }
        out
    }

    /// The MSR values after the modifiers, from their values `current`
    /// (which must hold every index of [`Self::msr_indices`]).
    pub fn apply_msrs(&self, current: &mut [hv::Msr]) {
        for m in &self.msrs {
            if let Some(msr) = current.iter_mut().find(|msr| msr.index == m.index) {
                msr.data = m.bitmap.apply(msr.data);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEEP32: &str = "0bxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx";

    #[test]
    fn bitmaps_parse_most_significant_first() {
        let b = Bitmap::parse("0b1xxxxxxxxxxxxxxxxxxxxxxxxxxxxx0x", 32).unwrap();
        assert_eq!(b.mask, 0x8000_0002);
        assert_eq!(b.value, 0x8000_0000);
        assert_eq!(b.apply(0x0000_0003), 0x8000_0001);
        let keep = Bitmap::parse(KEEP32, 32).unwrap();
        assert_eq!(keep.apply(0xdead_beef), 0xdead_beef);
        let b64 = Bitmap::parse(
            "0b0000_0000_0000_0000_0000_0000_0000_0000_0000_0000_0000_0000_0000_0000_0000_01x1",
            64,
        )
        .unwrap();
        assert_eq!(b64.mask, !0b10);
        assert_eq!(b64.value, 0b101);
        assert_eq!(b64.apply(u64::MAX), 0b111);
    }

    #[test]
    fn bad_bitmaps_say_why() {
        let e = |t: &str, bits| Bitmap::parse(t, bits).unwrap_err().to_string();
        assert!(e("1xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx", 32).contains("start with 0b"));
        assert!(e("0bxxx", 32).contains("has 3 bits"));
        assert!(e(&format!("{KEEP32}x"), 32).contains("has 33 bits"));
        assert!(e("0bxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx2", 32).contains("'2'"));
        assert!(e(KEEP32, 64).contains("has 32 bits"));
    }

    #[test]
    fn numbers_in_three_bases() {
        assert_eq!(parse_u32("l", "0x8000_0001").unwrap(), 0x8000_0001);
        assert_eq!(parse_u32("l", "0b100001010").unwrap(), 0x10a);
        assert_eq!(parse_u32("l", "266").unwrap(), 266);
        assert!(parse_u32("l", "0x1_0000_0000").is_err());
        assert!(parse_u32("l", "ten").is_err());
        assert!(CpuidModifier::parse("1", "0", 2, Reg::Eax, KEEP32).is_err());
        assert_eq!(parse_kvm_capability("56"), Ok((56, true)));
        assert_eq!(parse_kvm_capability("!121"), Ok((121, false)));
        assert!(parse_kvm_capability("!x").is_err());
        assert!(parse_kvm_capability("0x10").is_err());
    }

    #[test]
    fn cpuid_modifiers_change_existing_and_add_missing_leaves() {
        let mut cpuid = vec![CpuidEntry {
            function: 1,
            ecx: 0x8000_0000,
            edx: 0,
            ..CpuidEntry::default()
        }];
        let t = CpuTemplate {
            cpuid: vec![
                // Clear ecx bit 31 (hypervisor).
                CpuidModifier::parse(
                    "0x1",
                    "0x0",
                    0,
                    Reg::Ecx,
                    "0b0xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
                )
                .unwrap(),
                // Set edx bit 0 (fpu).
                CpuidModifier::parse("1", "0", 0, Reg::Edx, "0bxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx1")
                    .unwrap(),
                // A leaf the CPUID lacks.
                CpuidModifier::parse(
                    "0x4000_0010",
                    "0b11",
                    1,
                    Reg::Ebx,
                    "0b00000000000000000000000000101010",
                )
                .unwrap(),
            ],
            ..CpuTemplate::default()
        };
        t.apply_cpuid(&mut cpuid);
        assert_eq!(cpuid[0].ecx, 0);
        assert_eq!(cpuid[0].edx, 1);
        assert_eq!(cpuid.len(), 2);
        assert_eq!(
            cpuid[1],
            CpuidEntry {
                function: 0x4000_0010,
                index: 3,
                significant_index: true,
                ebx: 42,
                ..CpuidEntry::default()
            }
        );
    }

    #[test]
    fn msr_modifiers_apply_in_order_to_the_current_values() {
        let ones = format!("0b{}", "1".repeat(64));
        let low = format!("0b{}0x", "x".repeat(62));
        let t = CpuTemplate {
            msrs: vec![
                MsrModifier::parse("0x1a0", &ones).unwrap(),
                MsrModifier::parse("416", &low).unwrap(),
                MsrModifier::parse("0xc0000103", &format!("0b{}", "0".repeat(64))).unwrap(),
            ],
            ..CpuTemplate::default()
        };
        assert_eq!(t.msr_indices(), vec![0x1a0, 0xc000_0103]);
        let mut msrs = vec![
            hv::Msr {
                index: 0x1a0,
                data: 1,
            },
            hv::Msr {
                index: 0xc000_0103,
                data: 7,
            },
        ];
        t.apply_msrs(&mut msrs);
        assert_eq!(msrs[0].data, !0b10);
        assert_eq!(msrs[1].data, 0);
        assert!(MsrModifier::parse("0x1a0", KEEP32).is_err());
    }
}
