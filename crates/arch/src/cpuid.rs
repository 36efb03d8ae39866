//! Ferrovisor's CPU template: the CPUID a vCPU sees, derived from what the
//! accelerator supports (`Vm::supported_cpuid`). A leaf the accelerator does
//! not report stays absent (except the synthesized 0xB and 0x4000_0000
//! leaves); a feature bit is never turned on that the accelerator did not
//! report, except the hypervisor bit and the topology fields.
//!
//! Topology ([`Topology`]): one package of `vcpu_count` logical
//! processors, one thread per core, or two with SMT (Firecracker's `smt`:
//! vCPUs 2k and 2k+1 are the threads of core k); vCPU `n` has APIC id and
//! x2APIC id `n`. `shift` below is ⌈log2(vcpu_count)⌉ (the package's
//! APIC-id bits), `smt_shift` is 1 with two threads per core, else 0.
//!
//! | leaf | kept | changed |
//! |---|---|---|
//! | 0 | vendor | EAX (max basic leaf) = 0x15 or 0x16 when those are kept, else 0xD if the accelerator has leaf 0xD, else 0xB |
//! | 1 | family/model/stepping, features | `EBX[31:24]` = APIC id, `EBX[23:16]` = 2^shift; ECX: hypervisor (31) set; MONITOR (3), DS-CPL (4), VMX (5), SMX (6), EST (7), TM2 (8), SDBG (11), xTPR (14), PDCM (15), DCA (18), OSXSAVE (27, the accelerator sets it from CR4) cleared; EDX: DS (21), ACPI (22), TM (29), PBE (31) cleared, HTT (28) = more than one vCPU |
//! | 2 | when its only descriptor is 0xFF ("use leaf 4") | otherwise dropped (the cache descriptors of a host: leaf 4 is used) |
//! | 3, 5 | — | dropped (serial number; MONITOR) |
//! | 4 | every sub-leaf | `EAX[31:26]` = 2^(shift − smt_shift) − 1 (cores); `EAX[25:14]` = 2^smt_shift − 1 for L1/L2 (private per core, shared by its threads), 2^shift − 1 for L3 |
//! | 6 | ARAT (EAX bit 2: APIC timer always running) | everything else zero (no thermal/power management) |
//! | 7.0 | features | EAX (max sub-leaf) = 0; EBX: SGX (2), HLE (4), RTM (11), RDT-M (12), MPX (14), RDT-A (15), PT (25) cleared; ECX: WAITPKG (5), TME (13), SGX-LC (30) cleared; EDX: SGX-KEYS (1), TSX-FORCE-ABORT (13), HYBRID (15), PCONFIG (18), ARCH-LBR (19) cleared |
//! | 8, 9, 0xA, 0xC, 0xE..0x14 | — | dropped (no PMU, RDT, SGX, PT) |
//! | 0x15, 0x16 | TSC/crystal ratio and frequencies, when the accelerator reports them | — |
//! | 0x17..0x3FFF_FFFF | — | dropped (V2 topology and the rest) |
//! | 0xB | — | synthesized: sub-leaf 0 SMT (smt_shift, threads per core), 1 core (shift, vcpu_count), 2 invalid; EDX = x2APIC id |
//! | 0xD | every sub-leaf (XSAVE) | — |
//! | 0x4000_0000 | — | EAX = 0x4000_0001, EBX:ECX:EDX = "FerroVisor  " |
//! | 0x4000_0001 | — | all zero: no paravirtual features |
//! | 0x8000_0000 | vendor | EAX = min(accelerator's, 0x8000_0008) |
//! | 0x8000_0001 | features | ECX: SVM (2), IBS (10), SKINIT (12), WDT (13), TOPOEXT (22), PERFCTR-CORE (23), PERFCTR-NB (24), MONITORX (29) cleared |
//! | 0x8000_0002..4 | brand string | — |
//! | 0x8000_0005, 6 | cache/TLB info | — |
//! | 0x8000_0007 | invariant TSC (EDX bit 8) | everything else zero |
//! | 0x8000_0008 | address sizes (EAX), EBX, EDX | ECX: AMD: NC = vcpu_count − 1, ApicIdCoreIdSize = shift; others 0 |
//! | above 0x8000_0008 | — | dropped |
//!
//! Note that the hypervisor leaves replace the accelerator's own (KVM's
//! "KVMKVMKVM" and its paravirtual clock features are not passed through).

use hv::CpuidEntry;

/// The hypervisor signature in leaf 0x4000_0000 (EBX, ECX, EDX).
pub const SIGNATURE: &[u8; 12] = b"FerroVisor  ";
/// First hypervisor leaf.
pub const HYPERVISOR_LEAF: u32 = 0x4000_0000;
/// Highest hypervisor leaf.
pub const HYPERVISOR_MAX_LEAF: u32 = 0x4000_0001;
/// Highest extended leaf kept.
pub const EXTENDED_MAX_LEAF: u32 = 0x8000_0008;

/// Leaf 1 ECX: running under a hypervisor.
pub const LEAF1_ECX_HYPERVISOR: u32 = 1 << 31;
const LEAF1_ECX_CLEAR: u32 = bits(&[3, 4, 5, 6, 7, 8, 11, 14, 15, 18, 27]);
const LEAF1_EDX_CLEAR: u32 = bits(&[21, 22, 29, 31]);
const LEAF1_EDX_HTT: u32 = 1 << 28;
const LEAF6_EAX_ARAT: u32 = 1 << 2;
const LEAF7_EBX_CLEAR: u32 = bits(&[2, 4, 11, 12, 14, 15, 25]);
const LEAF7_ECX_CLEAR: u32 = bits(&[5, 13, 30]);
const LEAF7_EDX_CLEAR: u32 = bits(&[1, 13, 15, 18, 19]);
const EXT1_ECX_CLEAR: u32 = bits(&[2, 10, 12, 13, 22, 23, 24, 29]);
const EXT7_EDX_INVARIANT_TSC: u32 = 1 << 8;

const fn bits(list: &[u32]) -> u32 {
    let mut mask = 0;
    let mut i = 0;
    while i < list.len() {
        mask |= 1 << list[i];
        i += 1;
    }
    mask
}

/// ⌈log2(n)⌉ for n ≥ 1: the APIC-id bits the cores of a package use.
fn core_shift(count: u32) -> u32 {
    32 - count.max(1).saturating_sub(1).leading_zeros()
}

fn is_amd(leaf0: &CpuidEntry) -> bool {
    let mut vendor = [0u8; 12];
    vendor[..4].copy_from_slice(&leaf0.ebx.to_le_bytes());
    vendor[4..8].copy_from_slice(&leaf0.edx.to_le_bytes());
    vendor[8..].copy_from_slice(&leaf0.ecx.to_le_bytes());
    &vendor == b"AuthenticAMD" || &vendor == b"HygonGenuine"
}

/// The processors of the one package a VM has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Topology {
    /// Logical processors (vCPUs).
    pub vcpus: u32,
    /// Threads per core: 1, or 2 with SMT (a single vCPU is one thread
    /// whatever this says).
    pub threads_per_core: u32,
}

impl Topology {
    /// `vcpus` cores of one thread each.
    pub fn cores(vcpus: u32) -> Topology {
        Topology {
            vcpus,
            threads_per_core: 1,
        }
    }
}

/// The CPUID of vCPU `vcpu_id` of `vcpu_count` single-thread cores (see
/// the module table), sorted by function and index.
pub fn template(supported: &[CpuidEntry], vcpu_id: u32, vcpu_count: u32) -> Vec<CpuidEntry> {
    template_for(supported, vcpu_id, Topology::cores(vcpu_count))
}

/// The CPUID of vCPU `vcpu_id` in `topology` (see the module table),
/// sorted by function and index.
pub fn template_for(supported: &[CpuidEntry], vcpu_id: u32, topology: Topology) -> Vec<CpuidEntry> {
    let count = topology.vcpus.max(1);
    let shift = core_shift(count);
    let threads = if count > 1 {
        topology.threads_per_core.clamp(1, 2)
    } else {
        1
    };
    let smt_shift = core_shift(threads);
    // APIC ids a package reserves: 2^shift (saturating for absurd counts).
    let package_ids = u32::try_from(1u64 << shift).unwrap_or(u32::MAX);
    let find = |function: u32| {
        supported
            .iter()
            .find(|e| e.function == function && (e.index == 0 || !e.significant_index))
            .copied()
    };
    let all = |function: u32| supported.iter().filter(move |e| e.function == function);
    let has_xsave = supported.iter().any(|e| e.function == 0xd);
    let mut out = Vec::new();

    let leaf0 = find(0);
    let basic_max = leaf0.map_or(0, |l| l.eax);
    let amd = leaf0.as_ref().is_some_and(is_amd);
    let basic = |function: u32| (function <= basic_max).then(|| find(function)).flatten();
    // The TSC and processor frequency leaves, when the accelerator knows
    // them: the guest then reads its TSC frequency instead of calibrating.
    let frequency_leaves: Vec<CpuidEntry> = [0x15, 0x16].into_iter().filter_map(basic).collect();
    if let Some(mut l) = leaf0 {
        l.eax = match frequency_leaves.last() {
            Some(f) => f.function,
            None if has_xsave => 0xd,
            None => 0xb,
        };
        out.push(l);
    }

    if let Some(mut l) = basic(1) {
        l.ebx = (l.ebx & 0xffff) | package_ids.min(0xff) << 16 | (vcpu_id & 0xff) << 24;
        l.ecx = (l.ecx & !LEAF1_ECX_CLEAR) | LEAF1_ECX_HYPERVISOR;
        l.edx &= !(LEAF1_EDX_CLEAR | LEAF1_EDX_HTT);
        if count > 1 {
            l.edx |= LEAF1_EDX_HTT;
        }
        out.push(l);
    }
    if let Some(l) = basic(2).filter(defers_to_leaf4) {
        out.push(l);
    }
    if basic_max >= 4 {
        for l in all(4) {
            let mut l = *l;
            if l.eax & 0x1f != 0 {
                let level = (l.eax >> 5) & 0x7;
                let sharing = if level >= 3 {
                    package_ids - 1
                } else {
                    (1 << smt_shift) - 1
                };
                let core_ids = package_ids >> smt_shift;
                l.eax =
                    (l.eax & 0x3fff) | sharing.min(0xfff) << 14 | (core_ids - 1).min(0x3f) << 26;
            }
            out.push(l);
        }
    }
    if let Some(mut l) = basic(6) {
        l.eax &= LEAF6_EAX_ARAT;
        l.ebx = 0;
        l.ecx = 0;
        l.edx = 0;
        out.push(l);
    }
    if let Some(mut l) = basic(7) {
        l.index = 0;
        l.significant_index = true;
        l.eax = 0;
        l.ebx &= !LEAF7_EBX_CLEAR;
        l.ecx &= !LEAF7_ECX_CLEAR;
        l.edx &= !LEAF7_EDX_CLEAR;
        out.push(l);
    }
    if leaf0.is_some() {
        out.extend(topology_leaves(vcpu_id, count, shift, threads, smt_shift));
    }
    if basic_max >= 0xd {
        out.extend(all(0xd).copied());
    }
    out.extend(frequency_leaves);

    out.push(CpuidEntry {
        function: HYPERVISOR_LEAF,
        eax: HYPERVISOR_MAX_LEAF,
        ebx: u32::from_le_bytes([SIGNATURE[0], SIGNATURE[1], SIGNATURE[2], SIGNATURE[3]]),
        ecx: u32::from_le_bytes([SIGNATURE[4], SIGNATURE[5], SIGNATURE[6], SIGNATURE[7]]),
        edx: u32::from_le_bytes([SIGNATURE[8], SIGNATURE[9], SIGNATURE[10], SIGNATURE[11]]),
        ..CpuidEntry::default()
    });
    out.push(CpuidEntry {
        function: HYPERVISOR_MAX_LEAF,
        ..CpuidEntry::default()
    });

    if let Some(mut l) = find(0x8000_0000) {
        let ext_max = l.eax.min(EXTENDED_MAX_LEAF);
        l.eax = ext_max;
        out.push(l);
        for function in 0x8000_0001..=ext_max {
            let Some(mut l) = find(function) else {
                continue;
            };
            match function {
                0x8000_0001 => l.ecx &= !EXT1_ECX_CLEAR,
                0x8000_0007 => {
                    l.eax = 0;
                    l.ebx = 0;
                    l.ecx = 0;
                    l.edx &= EXT7_EDX_INVARIANT_TSC;
                }
                0x8000_0008 => {
                    l.ecx = if amd {
                        (count - 1).min(0xff) | shift.min(0xf) << 12
                    } else {
                        0
                    };
                }
                _ => {}
            }
            out.push(l);
        }
    }

    out.sort_by_key(|e| (e.function, e.index));
    out
}

/// Whether leaf 2 says only "see leaf 4": one round (AL = 1) whose
/// descriptor bytes are all null except 0xFF ones.
fn defers_to_leaf4(l: &CpuidEntry) -> bool {
    let mut bytes = l.eax.to_le_bytes()[1..].to_vec();
    for r in [l.ebx, l.ecx, l.edx] {
        bytes.extend_from_slice(&r.to_le_bytes());
    }
    l.eax & 0xff == 1 && bytes.contains(&0xff) && bytes.iter().all(|&b| b == 0 || b == 0xff)
}

/// Leaf 0xB: `threads` threads per core (`smt_shift` APIC-id bits),
/// `count` logical processors in the package (`shift` bits), x2APIC id =
/// `vcpu_id`.
fn topology_leaves(
    vcpu_id: u32,
    count: u32,
    shift: u32,
    threads: u32,
    smt_shift: u32,
) -> [CpuidEntry; 3] {
    const LEVEL_SMT: u32 = 1;
    const LEVEL_CORE: u32 = 2;
    let leaf = |index: u32, eax: u32, ebx: u32, level_type: u32| CpuidEntry {
        function: 0xb,
        index,
        significant_index: true,
        eax,
        ebx,
        ecx: level_type << 8 | index,
        edx: vcpu_id,
    };
    [
        leaf(0, smt_shift, threads, LEVEL_SMT),
        leaf(1, shift, count & 0xffff, LEVEL_CORE),
        leaf(2, 0, 0, 0),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(function: u32, index: u32, regs: [u32; 4]) -> CpuidEntry {
        CpuidEntry {
            function,
            index,
            significant_index: matches!(function, 4 | 7 | 0xb | 0xd),
            eax: regs[0],
            ebx: regs[1],
            ecx: regs[2],
            edx: regs[3],
        }
    }

    /// Something like KVM_GET_SUPPORTED_CPUID on an Intel host.
    fn intel() -> Vec<CpuidEntry> {
        let vendor = b"GenuineIntel";
        let word = |i: usize| u32::from_le_bytes(vendor[i..i + 4].try_into().unwrap());
        vec![
            entry(0, 0, [0x1f, word(0), word(8), word(4)]),
            entry(
                1,
                0,
                [0x906ea, 0x0010_0800, 0xf7fa_3223 | 1 << 5, 0x0f8b_fbff],
            ),
            entry(2, 0, [1, 2, 3, 4]),
            entry(4, 0, [0x1c00_4121, 0x01c0_003f, 0x3f, 0]),
            entry(4, 1, [0x1c00_4122, 0x01c0_003f, 0x3f, 0]),
            entry(4, 2, [0x1c00_4143, 0x03c0_003f, 0x3ff, 0]),
            entry(4, 3, [0x1c03_c163, 0x03c0_003f, 0x2fff, 6]),
            entry(4, 4, [0, 0, 0, 0]),
            entry(6, 0, [0x77, 2, 9, 0]),
            entry(
                7,
                0,
                [
                    0,
                    0x029c_6fbf | 1 << 11 | 1 << 4,
                    1 << 5 | 1 << 2,
                    1 << 13 | 1 << 26,
                ],
            ),
            entry(0xa, 0, [0x0000_7604, 0, 0, 0]),
            entry(0xd, 0, [7, 0x340, 0, 0]),
            entry(0xd, 1, [0xf, 0, 0, 0]),
            entry(0x12, 0, [1, 0, 0, 0]),
            entry(
                0x4000_0000,
                0,
                [0x4000_0001, 0x4b4d_564b, 0x564b_4d56, 0x4d],
            ),
            entry(0x4000_0001, 0, [0x0100_07fb, 0, 0, 0]),
            entry(0x8000_0000, 0, [0x8000_0008, 0, 0, 0]),
            entry(0x8000_0001, 0, [0, 0, 0x121, 0x2c10_0800]),
            entry(0x8000_0007, 0, [1, 2, 3, 0x100 | 1]),
            entry(0x8000_0008, 0, [0x3027, 0, 0x55, 0]),
        ]
    }

    fn get(t: &[CpuidEntry], function: u32, index: u32) -> CpuidEntry {
        *t.iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap_or_else(|| panic!("leaf {function:#x}.{index} missing"))
    }

    fn has(t: &[CpuidEntry], function: u32) -> bool {
        t.iter().any(|e| e.function == function)
    }

    #[test]
    fn apic_ids_follow_the_vcpu_id() {
        for (id, count) in [(0, 1), (0, 4), (3, 4), (5, 6), (200, 254)] {
            let t = template(&intel(), id, count);
            assert_eq!(get(&t, 1, 0).ebx >> 24, id, "leaf 1 APIC id");
            for sub in 0..3 {
                assert_eq!(get(&t, 0xb, sub).edx, id, "x2APIC id in 0xB.{sub}");
            }
            let core = get(&t, 0xb, 1);
            assert_eq!(core.ebx, count);
            assert!(1u32 << core.eax >= count && (core.eax == 0 || 1u32 << (core.eax - 1) < count));
            assert_eq!(core.ecx, 0x201);
            assert_eq!(get(&t, 0xb, 0).ebx, 1);
            assert_eq!(get(&t, 0xb, 0).ecx, 0x100);
            assert_eq!(get(&t, 0xb, 2).ebx, 0);
            let htt = get(&t, 1, 0).edx & LEAF1_EDX_HTT != 0;
            assert_eq!(htt, count > 1);
            assert_eq!(
                (get(&t, 1, 0).ebx >> 16) & 0xff,
                (1u32 << core.eax).min(0xff)
            );
        }
    }

    #[test]
    fn the_hypervisor_is_announced_as_ferrovisor() {
        let t = template(&intel(), 0, 1);
        let leaf1 = get(&t, 1, 0);
        assert_ne!(leaf1.ecx & LEAF1_ECX_HYPERVISOR, 0);
        assert_eq!(leaf1.ecx & (1 << 5), 0, "VMX hidden");
        assert_eq!(leaf1.ecx & (1 << 3), 0, "MONITOR hidden");
        let hv = get(&t, HYPERVISOR_LEAF, 0);
        assert_eq!(hv.eax, HYPERVISOR_MAX_LEAF);
        let mut sig = Vec::new();
        for r in [hv.ebx, hv.ecx, hv.edx] {
            sig.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(&sig, SIGNATURE);
        assert_eq!(
            get(&t, HYPERVISOR_MAX_LEAF, 0),
            CpuidEntry {
                function: HYPERVISOR_MAX_LEAF,
                ..CpuidEntry::default()
            }
        );
    }

    #[test]
    fn leaves_outside_the_template_are_dropped_or_masked() {
        let t = template(&intel(), 1, 2);
        for f in [2, 0xa, 0x12] {
            assert!(!has(&t, f), "leaf {f:#x}");
        }
        assert_eq!(get(&t, 0, 0).eax, 0xd);
        let l6 = get(&t, 6, 0);
        assert_eq!((l6.eax, l6.ebx, l6.ecx, l6.edx), (LEAF6_EAX_ARAT, 0, 0, 0));
        let l7 = get(&t, 7, 0);
        assert_eq!(l7.ebx & (1 << 11 | 1 << 4), 0, "TSX hidden");
        assert_eq!(l7.ecx & (1 << 5), 0, "WAITPKG hidden");
        assert_ne!(l7.ecx & (1 << 2), 0, "UMIP kept");
        assert_eq!(l7.edx, 1 << 26, "SPEC_CTRL kept, TSX_FORCE_ABORT hidden");
        assert_eq!(get(&t, 0xd, 1).eax, 0xf);
        assert_eq!(
            get(&t, 0x8000_0007, 0),
            entry(0x8000_0007, 0, [0, 0, 0, 0x100])
        );
        assert_eq!(get(&t, 0x8000_0008, 0).ecx, 0, "reserved on Intel");
        // Sorted.
        assert!(t
            .windows(2)
            .all(|w| (w[0].function, w[0].index) < (w[1].function, w[1].index)));
    }

    #[test]
    fn cache_topology_is_normalised() {
        let t = template(&intel(), 0, 4);
        for (sub, sharing) in [(0, 0), (1, 0), (2, 0), (3, 3)] {
            let l = get(&t, 4, sub);
            assert_eq!((l.eax >> 14) & 0xfff, sharing, "sub-leaf {sub}");
            assert_eq!(l.eax >> 26, 3);
            assert_eq!(l.eax & 0x3fff, intel()[3 + sub as usize].eax & 0x3fff);
        }
        assert_eq!(get(&t, 4, 4).eax, 0);
    }

    #[test]
    fn smt_makes_pairs_of_threads_per_core() {
        let smt = |vcpus| Topology {
            vcpus,
            threads_per_core: 2,
        };
        for id in 0..6 {
            let t = template_for(&intel(), id, smt(6));
            let thread = get(&t, 0xb, 0);
            assert_eq!((thread.eax, thread.ebx, thread.ecx), (1, 2, 0x100));
            let core = get(&t, 0xb, 1);
            assert_eq!((core.eax, core.ebx, core.ecx), (3, 6, 0x201));
            assert_eq!(core.edx, id);
            // L1d/L1i/L2 shared by the two threads of a core, L3 by the
            // package; four addressable cores (the 3-bit package id space
            // less the thread bit).
            for (sub, sharing) in [(0, 1), (1, 1), (2, 1), (3, 7)] {
                let l = get(&t, 4, sub);
                assert_eq!((l.eax >> 14) & 0xfff, sharing, "sub-leaf {sub}");
                assert_eq!(l.eax >> 26, 3, "sub-leaf {sub}");
            }
            assert_eq!((get(&t, 1, 0).ebx >> 16) & 0xff, 8);
        }
        // One vCPU is one thread whatever SMT says.
        let t = template_for(&intel(), 0, smt(1));
        assert_eq!(get(&t, 0xb, 0).ebx, 1);
        assert_eq!(get(&t, 0xb, 0).eax, 0);
        // Without SMT, the same as `template`.
        assert_eq!(
            template_for(&intel(), 1, Topology::cores(4)),
            template(&intel(), 1, 4)
        );
    }

    #[test]
    fn leaf_2_is_kept_only_when_it_points_to_leaf_4() {
        let mut supported = intel();
        assert!(!has(&template(&supported, 0, 1), 2), "host descriptors");
        supported.retain(|e| e.function != 2);
        supported.push(entry(2, 0, [0xff01, 0, 0, 0]));
        assert_eq!(
            get(&template(&supported, 0, 1), 2, 0),
            entry(2, 0, [0xff01, 0, 0, 0])
        );
        supported.retain(|e| e.function != 2);
        supported.push(entry(2, 0, [0x00fe_ff01, 0, 0, 0]));
        assert!(!has(&template(&supported, 0, 1), 2), "0xFE: leaf 0x18");
    }

    #[test]
    fn amd_core_count_goes_in_leaf_0x8000_0008() {
        let vendor = b"AuthenticAMD";
        let word = |i: usize| u32::from_le_bytes(vendor[i..i + 4].try_into().unwrap());
        let supported = vec![
            entry(0, 0, [0x10, word(0), word(8), word(4)]),
            entry(1, 0, [0, 0, 0, 0]),
            entry(0x8000_0000, 0, [0x8000_0021, 0, 0, 0]),
            entry(0x8000_0001, 0, [0, 0, 1 << 2 | 1 << 22 | 1, 0]),
            entry(0x8000_0008, 0, [0x3030, 0, 0, 0]),
            entry(0x8000_001e, 0, [1, 2, 3, 4]),
        ];
        let t = template(&supported, 2, 3);
        assert_eq!(get(&t, 0x8000_0008, 0).ecx, 2 | 2 << 12);
        assert_eq!(get(&t, 0x8000_0001, 0).ecx, 1, "SVM and TOPOEXT hidden");
        assert_eq!(get(&t, 0x8000_0000, 0).eax, EXTENDED_MAX_LEAF);
        assert!(!has(&t, 0x8000_001e));
        assert_eq!(get(&t, 0, 0).eax, 0xb, "no XSAVE leaf");
    }

    #[test]
    fn degenerate_input_does_not_panic() {
        assert_eq!(template(&[], 0, 0).len(), 2);
        let t = template(&[entry(0, 0, [0, 0, 0, 0])], u32::MAX, u32::MAX);
        assert!(has(&t, 0xb));
        assert!(!has(&t, 1));
        assert_eq!(core_shift(1), 0);
        assert_eq!(core_shift(2), 1);
        assert_eq!(core_shift(3), 2);
        assert_eq!(core_shift(u32::MAX), 32);
    }

    #[test]
    fn frequency_leaves_are_kept_and_raise_the_max_leaf() {
        let mut supported = intel();
        supported.retain(|e| e.function != 0x15 && e.function != 0x16);
        let without = template(&supported, 0, 1);
        assert!(without.iter().all(|e| e.function != 0x15));
        let max_without = without.iter().find(|e| e.function == 0).unwrap().eax;
        assert!(max_without < 0x15);

        supported.push(entry(0x15, 0, [1, 1, 1_000_000_000, 0]));
        supported.push(entry(0x16, 0, [1000, 1000, 1000, 0]));
        let with = template(&supported, 0, 1);
        assert_eq!(with.iter().find(|e| e.function == 0).unwrap().eax, 0x16);
        let tsc = with.iter().find(|e| e.function == 0x15).unwrap();
        assert_eq!((tsc.eax, tsc.ebx, tsc.ecx), (1, 1, 1_000_000_000));
    }
}
