//! The CPU model a machine's vCPUs show: `ferrovisor run --cpu`, in QEMU's
//! `-cpu` syntax, applied to the CPUID [`crate::cpuid::template`] builds.
//!
//! `--cpu MODEL[,ITEM]...`:
//!
//! - `MODEL`: `host` or `max` (the default: every feature the accelerator
//!   offers, the template unchanged), `qemu64` or `Opteron_G1`, which keep
//!   only QEMU's feature set of those models (see [`BaseModel`]) of the
//!   feature flags of leaves 1, 7 and 0x8000_0001 and of XSAVE's leaf
//!   0xD.1; family, model, leaves and vendor stay the accelerator's.
//! - `+NAME` or `NAME` or `NAME=on`: turn feature NAME on. The accelerator
//!   must offer it (it is in the `max` CPUID), else building the machine
//!   fails with a one-line error naming the feature.
//! - `-NAME` or `NAME=off`: turn it off.
//! - `vendor=STRING`: the 12-character vendor in leaves 0 and 0x8000_0000
//!   (e.g. `GenuineIntel`, `AuthenticAMD`).
//! - `host-phys-bits` or `host-phys-bits=on`: accepted; the physical
//!   address width (leaf 0x8000_0008) is always the accelerator's.
//!
//! Items apply left to right. Feature names are QEMU's ([`FEATURES`];
//! `_` and `-` are the same, case does not matter). An unknown model,
//! feature or property is a parse error.

use hv::CpuidEntry;

/// A CPUID register.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reg {
    Eax,
    Ebx,
    Ecx,
    Edx,
}

/// Where a feature flag lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FeatureBit {
    pub leaf: u32,
    pub subleaf: u32,
    pub reg: Reg,
    pub bit: u32,
}

const fn f(leaf: u32, subleaf: u32, reg: Reg, bit: u32) -> FeatureBit {
    FeatureBit {
        leaf,
        subleaf,
        reg,
        bit,
    }
}

use Reg::{Eax, Ebx, Ecx, Edx};

const EXT: u32 = 0x8000_0001;

/// Feature names (QEMU's, canonical spelling with `-`) and their bits.
pub const FEATURES: &[(&str, FeatureBit)] = &[
    // Leaf 1 EDX.
    ("fpu", f(1, 0, Edx, 0)),
    ("vme", f(1, 0, Edx, 1)),
    ("de", f(1, 0, Edx, 2)),
    ("pse", f(1, 0, Edx, 3)),
    ("tsc", f(1, 0, Edx, 4)),
    ("msr", f(1, 0, Edx, 5)),
    ("pae", f(1, 0, Edx, 6)),
    ("mce", f(1, 0, Edx, 7)),
    ("cx8", f(1, 0, Edx, 8)),
    ("apic", f(1, 0, Edx, 9)),
    ("sep", f(1, 0, Edx, 11)),
    ("mtrr", f(1, 0, Edx, 12)),
    ("pge", f(1, 0, Edx, 13)),
    ("mca", f(1, 0, Edx, 14)),
    ("cmov", f(1, 0, Edx, 15)),
    ("pat", f(1, 0, Edx, 16)),
    ("pse36", f(1, 0, Edx, 17)),
    ("clflush", f(1, 0, Edx, 19)),
    ("mmx", f(1, 0, Edx, 23)),
    ("fxsr", f(1, 0, Edx, 24)),
    ("sse", f(1, 0, Edx, 25)),
    ("sse2", f(1, 0, Edx, 26)),
    ("ss", f(1, 0, Edx, 27)),
    ("ht", f(1, 0, Edx, 28)),
    // Leaf 1 ECX.
    ("pni", f(1, 0, Ecx, 0)),
    ("sse3", f(1, 0, Ecx, 0)),
    ("pclmulqdq", f(1, 0, Ecx, 1)),
    ("monitor", f(1, 0, Ecx, 3)),
    ("vmx", f(1, 0, Ecx, 5)),
    ("ssse3", f(1, 0, Ecx, 9)),
    ("fma", f(1, 0, Ecx, 12)),
    ("cx16", f(1, 0, Ecx, 13)),
    ("pdcm", f(1, 0, Ecx, 15)),
    ("pcid", f(1, 0, Ecx, 17)),
    ("sse4.1", f(1, 0, Ecx, 19)),
    ("sse4.2", f(1, 0, Ecx, 20)),
    ("x2apic", f(1, 0, Ecx, 21)),
    ("movbe", f(1, 0, Ecx, 22)),
    ("popcnt", f(1, 0, Ecx, 23)),
    ("tsc-deadline", f(1, 0, Ecx, 24)),
    ("aes", f(1, 0, Ecx, 25)),
    ("xsave", f(1, 0, Ecx, 26)),
    ("avx", f(1, 0, Ecx, 28)),
    ("f16c", f(1, 0, Ecx, 29)),
    ("rdrand", f(1, 0, Ecx, 30)),
    ("hypervisor", f(1, 0, Ecx, 31)),
    // Leaf 7.0 EBX.
    ("fsgsbase", f(7, 0, Ebx, 0)),
    ("tsc-adjust", f(7, 0, Ebx, 1)),
    ("bmi1", f(7, 0, Ebx, 3)),
    ("hle", f(7, 0, Ebx, 4)),
    ("avx2", f(7, 0, Ebx, 5)),
    ("smep", f(7, 0, Ebx, 7)),
    ("bmi2", f(7, 0, Ebx, 8)),
    ("erms", f(7, 0, Ebx, 9)),
    ("invpcid", f(7, 0, Ebx, 10)),
    ("rtm", f(7, 0, Ebx, 11)),
    ("avx512f", f(7, 0, Ebx, 16)),
    ("avx512dq", f(7, 0, Ebx, 17)),
    ("rdseed", f(7, 0, Ebx, 18)),
    ("adx", f(7, 0, Ebx, 19)),
    ("smap", f(7, 0, Ebx, 20)),
    ("avx512ifma", f(7, 0, Ebx, 21)),
    ("clflushopt", f(7, 0, Ebx, 23)),
    ("clwb", f(7, 0, Ebx, 24)),
    ("avx512cd", f(7, 0, Ebx, 28)),
    ("sha-ni", f(7, 0, Ebx, 29)),
    ("avx512bw", f(7, 0, Ebx, 30)),
    ("avx512vl", f(7, 0, Ebx, 31)),
    // Leaf 7.0 ECX.
    ("avx512vbmi", f(7, 0, Ecx, 1)),
    ("umip", f(7, 0, Ecx, 2)),
    ("pku", f(7, 0, Ecx, 3)),
    ("waitpkg", f(7, 0, Ecx, 5)),
    ("avx512vbmi2", f(7, 0, Ecx, 6)),
    ("gfni", f(7, 0, Ecx, 8)),
    ("vaes", f(7, 0, Ecx, 9)),
    ("vpclmulqdq", f(7, 0, Ecx, 10)),
    ("avx512vnni", f(7, 0, Ecx, 11)),
    ("avx512bitalg", f(7, 0, Ecx, 12)),
    ("avx512-vpopcntdq", f(7, 0, Ecx, 14)),
    ("la57", f(7, 0, Ecx, 16)),
    ("rdpid", f(7, 0, Ecx, 22)),
    ("pks", f(7, 0, Ecx, 31)),
    // Leaf 7.0 EDX.
    ("fsrm", f(7, 0, Edx, 4)),
    ("md-clear", f(7, 0, Edx, 10)),
    ("serialize", f(7, 0, Edx, 14)),
    ("spec-ctrl", f(7, 0, Edx, 26)),
    ("arch-capabilities", f(7, 0, Edx, 29)),
    ("ssbd", f(7, 0, Edx, 31)),
    // XSAVE sub-leaf 1 EAX.
    ("xsaveopt", f(0xd, 1, Eax, 0)),
    ("xsavec", f(0xd, 1, Eax, 1)),
    ("xgetbv1", f(0xd, 1, Eax, 2)),
    ("xsaves", f(0xd, 1, Eax, 3)),
    // Leaf 0x8000_0001 ECX.
    ("lahf-lm", f(EXT, 0, Ecx, 0)),
    ("cmp-legacy", f(EXT, 0, Ecx, 1)),
    ("svm", f(EXT, 0, Ecx, 2)),
    ("extapic", f(EXT, 0, Ecx, 3)),
    ("cr8legacy", f(EXT, 0, Ecx, 4)),
    ("abm", f(EXT, 0, Ecx, 5)),
    ("sse4a", f(EXT, 0, Ecx, 6)),
    ("misalignsse", f(EXT, 0, Ecx, 7)),
    ("3dnowprefetch", f(EXT, 0, Ecx, 8)),
    ("xop", f(EXT, 0, Ecx, 11)),
    ("skinit", f(EXT, 0, Ecx, 12)),
    ("fma4", f(EXT, 0, Ecx, 16)),
    ("tbm", f(EXT, 0, Ecx, 21)),
    ("topoext", f(EXT, 0, Ecx, 22)),
    // Leaf 0x8000_0001 EDX.
    ("syscall", f(EXT, 0, Edx, 11)),
    ("nx", f(EXT, 0, Edx, 20)),
    ("mmxext", f(EXT, 0, Edx, 22)),
    ("fxsr-opt", f(EXT, 0, Edx, 25)),
    ("pdpe1gb", f(EXT, 0, Edx, 26)),
    ("rdtscp", f(EXT, 0, Edx, 27)),
    ("lm", f(EXT, 0, Edx, 29)),
    // SVM leaf 0x8000_000A EDX.
    ("npt", f(0x8000_000a, 0, Edx, 0)),
];

/// The feature bit of a name (QEMU's spelling; `_` = `-`, any case;
/// `sse4_1` = `sse4.1`).
pub fn feature(name: &str) -> Option<FeatureBit> {
    let mut name = name.to_ascii_lowercase().replace('_', "-");
    // QEMU spells these sse4.1 and sse4_1.
    if let Some(n) = name.strip_prefix("sse4-") {
        name = format!("sse4.{n}");
    }
    FEATURES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|&(_, bit)| bit)
}

/// The registers a named model masks, with the model's features.
const MASKED: &[(u32, u32, Reg)] = &[
    (1, 0, Ecx),
    (1, 0, Edx),
    (7, 0, Ebx),
    (7, 0, Ecx),
    (7, 0, Edx),
    (7, 1, Eax),
    (0xd, 1, Eax),
    (EXT, 0, Ecx),
    (EXT, 0, Edx),
];

/// The leaf 1 EDX bits AMD repeats in leaf 0x8000_0001 EDX.
const AMD_EDX_ALIASES: u32 = 0x0183_f3ff;

/// The feature set a `--cpu` model starts from.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum BaseModel {
    /// Everything the accelerator offers (`host`, `max`).
    #[default]
    Max,
    /// QEMU's `qemu64`: fpu de pse tsc msr pae mce cx8 apic sep mtrr pge
    /// mca cmov pat pse36 clflush mmx fxsr sse sse2, sse3 cx16, syscall nx
    /// lm, lahf-lm svm.
    Qemu64,
    /// QEMU's `Opteron_G1`: the same leaf 1 EDX with vme, sse3, syscall nx
    /// lm.
    OpteronG1,
}

impl BaseModel {
    fn parse(name: &str) -> Option<BaseModel> {
        match name {
            "host" | "max" => Some(BaseModel::Max),
            "qemu64" => Some(BaseModel::Qemu64),
            "Opteron_G1" => Some(BaseModel::OpteronG1),
            _ => None,
        }
    }

    /// The model's feature names (`None` for [`BaseModel::Max`]).
    fn features(self) -> Option<&'static [&'static str]> {
        const PPRO: [&str; 21] = [
            "fpu", "de", "pse", "tsc", "msr", "pae", "mce", "cx8", "apic", "sep", "mtrr", "pge",
            "mca", "cmov", "pat", "pse36", "clflush", "mmx", "fxsr", "sse", "sse2",
        ];
        const QEMU64: [&str; 28] = concat_features(
            PPRO,
            ["pni", "cx16", "syscall", "nx", "lm", "lahf-lm", "svm"],
        );
        const OPTERON_G1: [&str; 26] = concat_features(PPRO, ["vme", "pni", "syscall", "nx", "lm"]);
        match self {
            BaseModel::Max => None,
            BaseModel::Qemu64 => Some(&QEMU64),
            BaseModel::OpteronG1 => Some(&OPTERON_G1),
        }
    }
}

const fn concat_features<const A: usize, const B: usize, const C: usize>(
    a: [&'static str; A],
    b: [&'static str; B],
) -> [&'static str; C] {
    let mut out = [""; C];
    let mut i = 0;
    while i < A {
        out[i] = a[i];
        i += 1;
    }
    while i < C {
        out[i] = b[i - A];
        i += 1;
    }
    out
}

/// One `+NAME` / `-NAME` item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FeatureChange {
    pub name: String,
    pub bit: FeatureBit,
    pub on: bool,
}

/// A parsed `--cpu` value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuModel {
    pub base: BaseModel,
    pub changes: Vec<FeatureChange>,
    pub vendor: Option<[u8; 12]>,
}

/// Why a `--cpu` value cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CpuModelError {
    #[error("unknown CPU model '{0}' (host, max, qemu64 or Opteron_G1)")]
    UnknownModel(String),
    #[error("unknown CPU feature '{0}'")]
    UnknownFeature(String),
    #[error("unsupported CPU property '{0}' (vendor= and host-phys-bits are the only ones)")]
    UnknownProperty(String),
    #[error("the vendor '{0}' is not 12 printable ASCII characters")]
    BadVendor(String),
    #[error("CPU feature '{name}' is not offered by the {accel} accelerator")]
    NotOffered { name: String, accel: String },
}

impl std::str::FromStr for CpuModel {
    type Err = CpuModelError;

    fn from_str(s: &str) -> Result<CpuModel, CpuModelError> {
        let mut items = s.split(',');
        let model = items.next().unwrap_or_default();
        let base =
            BaseModel::parse(model).ok_or_else(|| CpuModelError::UnknownModel(model.into()))?;
        let mut cpu = CpuModel {
            base,
            ..CpuModel::default()
        };
        for item in items {
            let (name, on) = if let Some(name) = item.strip_prefix('+') {
                (name, true)
            } else if let Some(name) = item.strip_prefix('-') {
                (name, false)
            } else if let Some((key, value)) = item.split_once('=') {
                match (key, value) {
                    ("vendor", v) => {
                        let bytes: [u8; 12] = v
                            .as_bytes()
                            .try_into()
                            .ok()
                            .filter(|b: &[u8; 12]| b.iter().all(|c| (b' '..=b'~').contains(c)))
                            .ok_or_else(|| CpuModelError::BadVendor(v.into()))?;
                        cpu.vendor = Some(bytes);
                        continue;
                    }
                    ("host-phys-bits", "on") => continue,
                    (name, "on") if feature(name).is_some() => (name, true),
                    (name, "off") if feature(name).is_some() => (name, false),
                    _ => return Err(CpuModelError::UnknownProperty(item.into())),
                }
            } else if item == "host-phys-bits" {
                continue;
            } else {
                (item, true)
            };
            let bit = feature(name).ok_or_else(|| CpuModelError::UnknownFeature(name.into()))?;
            cpu.changes.push(FeatureChange {
                name: name.into(),
                bit,
                on,
            });
        }
        Ok(cpu)
    }
}

fn reg_mut(entry: &mut CpuidEntry, reg: Reg) -> &mut u32 {
    match reg {
        Eax => &mut entry.eax,
        Ebx => &mut entry.ebx,
        Ecx => &mut entry.ecx,
        Edx => &mut entry.edx,
    }
}

fn reg(entry: &CpuidEntry, r: Reg) -> u32 {
    match r {
        Eax => entry.eax,
        Ebx => entry.ebx,
        Ecx => entry.ecx,
        Edx => entry.edx,
    }
}

fn find_mut(entries: &mut [CpuidEntry], leaf: u32, subleaf: u32) -> Option<&mut CpuidEntry> {
    entries
        .iter_mut()
        .find(|e| e.function == leaf && (e.index == subleaf || !e.significant_index))
}

/// Whether `bit` is set in `entries`.
fn has(entries: &[CpuidEntry], bit: FeatureBit) -> bool {
    entries
        .iter()
        .find(|e| e.function == bit.leaf && (e.index == bit.subleaf || !e.significant_index))
        .is_some_and(|e| reg(e, bit.reg) & (1 << bit.bit) != 0)
}

impl CpuModel {
    /// Applies the model to `entries`, one vCPU's CPUID as
    /// [`crate::cpuid::template`] made it (the accelerator's `max`); `accel`
    /// names the accelerator in errors.
    pub fn apply(&self, entries: &mut [CpuidEntry], accel: &str) -> Result<(), CpuModelError> {
        let offered = entries.to_vec();
        if let Some(names) = self.base.features() {
            for &(leaf, subleaf, r) in MASKED {
                let mut mask = names
                    .iter()
                    .filter_map(|n| feature(n))
                    .filter(|b| (b.leaf, b.subleaf, b.reg) == (leaf, subleaf, r))
                    .fold(0u32, |m, b| m | 1 << b.bit);
                if (leaf, r) == (1, Ecx) {
                    mask |= crate::cpuid::LEAF1_ECX_HYPERVISOR;
                }
                if (leaf, r) == (EXT, Edx) {
                    // AMD's copies of the model's leaf 1 EDX features.
                    let leaf1 = names
                        .iter()
                        .filter_map(|n| feature(n))
                        .filter(|b| (b.leaf, b.reg) == (1, Edx))
                        .fold(0u32, |m, b| m | 1 << b.bit);
                    mask |= leaf1 & AMD_EDX_ALIASES;
                }
                if let Some(e) = find_mut(entries, leaf, subleaf) {
                    *reg_mut(e, r) &= mask;
                }
            }
        }
        for change in &self.changes {
            let bit = change.bit;
            if change.on && !has(&offered, bit) {
                return Err(CpuModelError::NotOffered {
                    name: change.name.clone(),
                    accel: accel.into(),
                });
            }
            if let Some(e) = find_mut(entries, bit.leaf, bit.subleaf) {
                let r = reg_mut(e, bit.reg);
                if change.on {
                    *r |= 1 << bit.bit;
                } else {
                    *r &= !(1 << bit.bit);
                }
            }
        }
        if let Some(v) = self.vendor {
            let word = |i: usize| u32::from_le_bytes([v[i], v[i + 1], v[i + 2], v[i + 3]]);
            for leaf in [0, 0x8000_0000] {
                if let Some(e) = find_mut(entries, leaf, 0) {
                    e.ebx = word(0);
                    e.edx = word(4);
                    e.ecx = word(8);
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, regs: [u32; 4]) -> CpuidEntry {
        CpuidEntry {
            function,
            index,
            significant_index: function == 7 || function == 0xd,
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
        }
    }

    /// A CPU with every flag of leaves 1, 7 and 0x8000_0001 but VMX.
    fn full() -> Vec<CpuidEntry> {
        let vendor = *b"GenuineIntel";
        let w = |i: usize| u32::from_le_bytes(vendor[i..i + 4].try_into().unwrap());
        vec![
            entry(0, 0, [0xd, w(0), w(8), w(4)]),
            entry(1, 0, [0x806c1, 0, !(1 << 5), u32::MAX]),
            entry(7, 0, [0, u32::MAX, u32::MAX, u32::MAX]),
            entry(0xd, 1, [0xf, 0, 0, 0]),
            entry(0x8000_0000, 0, [0x8000_0008, w(0), w(8), w(4)]),
            entry(EXT, 0, [0, 0, 0x1, u32::MAX]),
        ]
    }

    fn get(entries: &[CpuidEntry], leaf: u32, subleaf: u32) -> CpuidEntry {
        *entries
            .iter()
            .find(|e| e.function == leaf && e.index == subleaf)
            .unwrap()
    }

    fn applied(spec: &str) -> Result<Vec<CpuidEntry>, CpuModelError> {
        let mut e = full();
        spec.parse::<CpuModel>()?.apply(&mut e, "emu")?;
        Ok(e)
    }

    #[test]
    fn max_and_host_change_nothing() {
        assert_eq!(applied("max").unwrap(), full());
        assert_eq!(applied("host").unwrap(), full());
        assert_eq!(CpuModel::default(), "max".parse().unwrap());
    }

    #[test]
    fn features_go_off_and_on() {
        let e = applied("max,-x2apic,-pcid,invpcid=off,+x2apic").unwrap();
        let l1 = get(&e, 1, 0);
        assert_ne!(l1.ecx & 1 << 21, 0, "x2apic back on");
        assert_eq!(l1.ecx & 1 << 17, 0, "pcid");
        assert_eq!(get(&e, 7, 0).ebx & 1 << 10, 0, "invpcid");
        let e = applied("max,-tsc_deadline,-sse4_1,-LAHF_LM").unwrap();
        assert_eq!(get(&e, 1, 0).ecx & (1 << 24 | 1 << 19), 0);
        assert_eq!(get(&e, EXT, 0).ecx & 1, 0);
    }

    #[test]
    fn qemu64_keeps_its_features_and_what_is_added() {
        let e = applied("qemu64,+x2apic,+tsc-deadline").unwrap();
        let l1 = get(&e, 1, 0);
        assert_eq!(l1.ecx, 1 << 0 | 1 << 13 | 1 << 21 | 1 << 24 | 1 << 31);
        assert_eq!(l1.edx & 1 << 28, 0, "no ht");
        assert_ne!(l1.edx & 1 << 26, 0, "sse2");
        let l7 = get(&e, 7, 0);
        assert_eq!((l7.ebx, l7.ecx, l7.edx), (0, 0, 0));
        assert_eq!(get(&e, 0xd, 1).eax, 0);
        let ext = get(&e, EXT, 0);
        assert_eq!(ext.ecx, 1, "lahf-lm (no svm offered)");
        assert_eq!(
            ext.edx & !AMD_EDX_ALIASES,
            1 << 11 | 1 << 20 | 1 << 29,
            "syscall nx lm"
        );
        // Leaves and family stay.
        assert_eq!(l1.eax, 0x806c1);
        let e = applied("qemu64,-x2apic,+umip,+pcid,+invpcid").unwrap();
        assert_eq!(get(&e, 7, 0).ecx, 1 << 2);
        assert_eq!(get(&e, 7, 0).ebx, 1 << 10);
        let e = applied("Opteron_G1,vendor=AuthenticAMD").unwrap();
        assert_eq!(get(&e, 1, 0).ecx, 1 | 1 << 31);
        assert_ne!(get(&e, 1, 0).edx & 1 << 1, 0, "vme");
    }

    #[test]
    fn vendor_changes_both_vendor_leaves() {
        let e = applied("max,vendor=AuthenticAMD,host-phys-bits").unwrap();
        for leaf in [0, 0x8000_0000] {
            let l = get(&e, leaf, 0);
            let mut v = Vec::new();
            for r in [l.ebx, l.edx, l.ecx] {
                v.extend_from_slice(&r.to_le_bytes());
            }
            assert_eq!(v, b"AuthenticAMD");
        }
        assert_eq!(get(&e, 0, 0).eax, 0xd);
    }

    #[test]
    fn features_the_accelerator_lacks_are_refused() {
        assert_eq!(
            applied("max,+vmx").unwrap_err(),
            CpuModelError::NotOffered {
                name: "vmx".into(),
                accel: "emu".into()
            }
        );
        assert!(matches!(
            applied("max,+npt"),
            Err(CpuModelError::NotOffered { .. })
        ));
        // Turning off what is absent is fine.
        assert!(applied("max,-svm,-npt,-vmx").is_ok());
    }

    #[test]
    fn bad_values_are_parse_errors() {
        let err = |s: &str| s.parse::<CpuModel>().unwrap_err();
        assert_eq!(
            err("IvyBridge"),
            CpuModelError::UnknownModel("IvyBridge".into())
        );
        assert_eq!(err(""), CpuModelError::UnknownModel("".into()));
        assert_eq!(
            err("max,+bogus"),
            CpuModelError::UnknownFeature("bogus".into())
        );
        assert_eq!(
            err("max,phys-bits=36"),
            CpuModelError::UnknownProperty("phys-bits=36".into())
        );
        assert_eq!(
            err("max,host-phys-bits=off"),
            CpuModelError::UnknownProperty("host-phys-bits=off".into())
        );
        assert_eq!(
            err("max,migratable=no"),
            CpuModelError::UnknownProperty("migratable=no".into())
        );
        assert_eq!(
            err("max,vendor=Intel"),
            CpuModelError::BadVendor("Intel".into())
        );
        assert!(matches!(err("max,,"), CpuModelError::UnknownFeature(_)));
    }
}
