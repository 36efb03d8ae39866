//! The CPU model the emu accelerator offers: exactly what the `x86` crate
//! implements, so that guests pick code paths that work.
//!
//! | leaf | content |
//! |---|---|
//! | 0 | max basic leaf 0x16, vendor "GenuineIntel" |
//! | 1 | family 6 model 0x2a stepping 7; EDX: FPU PSE TSC MSR PAE CX8 APIC SEP PGE CMOV PAT CLFSH FXSR SSE SSE2; ECX: SSE3 SSSE3 FMA CX16 PCID SSE4.1 SSE4.2 x2APIC MOVBE POPCNT TSC-deadline XSAVE AVX F16C (with LAHF/SAHF, LZCNT, BMI1, BMI2 and AVX2: x86-64-v3; OSXSAVE mirrors CR4 at CPUID time) |
//! | 2 | 0xFF descriptor only: "use leaf 4" (kept by the template) |
//! | 4 | L1d 32 KiB 8-way, L1i 32 KiB 8-way, L2 1 MiB 16-way, L3 16 MiB 16-way (64-byte lines), then the null sub-leaf; the core and sharing fields are written per VM by `arch::cpuid::template` |
//! | 7.0 | EBX: TSC_ADJUST, BMI1 (TZCNT), AVX2, SMEP, BMI2, INVPCID, SMAP, CLFLUSHOPT, CLWB; ECX: UMIP, PKU, OSPKE (mirrors CR4.PKE), RDPID, PKS; EDX: ARCH_CAPABILITIES (the MSR declares the CPU immune to Meltdown, MDS, SSB and the rest: it does not speculate, so guests skip page-table isolation and the other mitigations) |
//! | 0xB | x2APIC topology (filled per vCPU by `arch::cpuid::template`) |
//! | 0xD | XSAVE: 0: XCR0 may hold x87, SSE, AVX (EAX=7), EBX = area size for the current XCR0 (576 or 832, computed by the CPU), ECX = 832; 1: XSAVEOPT, XSAVEC (no XSAVES), EBX = the compacted size for the current XCR0 (computed by the CPU); 2: AVX state, 256 bytes at 576 |
//! | 0x15 | TSC = 1 GHz crystal × 1/1 (the guest need not calibrate) |
//! | 0x16 | 1000 MHz base, maximum and bus frequency |
//! | 0x8000_0000 | max extended leaf 0x8000_0008 |
//! | 0x8000_0001 | EDX: SYSCALL, NX, 1 GiB pages, RDTSCP, LM; ECX: LAHF/SAHF, LZCNT |
//! | 0x8000_0002..4 | "Ferrovisor emu x86-64 CPU @ 1.00GHz" (the frequency of leaf 0x16) |
//! | 0x8000_0005 | zero (reserved on Intel) |
//! | 0x8000_0006 | ECX: the L2 of leaf 4 (1024 KiB, 16-way, 64-byte lines) |
//! | 0x8000_0007 | EDX: invariant TSC |
//! | 0x8000_0008 | 40 physical, 48 linear address bits |
//!
//! Invariant TSC with TSC_ADJUST is what lets Linux trust the TSC as its
//! clocksource without the jiffies watchdog (whose ticks an emulated CPU
//! can deliver late during busy phases).
//!
//! Not advertised because the CPU does not implement them: MMX (only its
//! register moves are), MONITOR/MWAIT, AVX-512 and the other extensions
//! after x86-64-v3, XSAVES (and the PKRU state component), RDRAND, the
//! PMU. The x87 unit
//! computes in double precision (documented in the `x86` crate).

use hv::CpuidEntry;

const fn leaf(function: u32, eax: u32, ebx: u32, ecx: u32, edx: u32) -> CpuidEntry {
    CpuidEntry {
        function,
        index: 0,
        significant_index: false,
        eax,
        ebx,
        ecx,
        edx,
    }
}

fn regs(text: &[u8; 12]) -> (u32, u32, u32) {
    let word = |i: usize| u32::from_le_bytes([text[i], text[i + 1], text[i + 2], text[i + 3]]);
    (word(0), word(4), word(8))
}

// Leaf 1 EDX.
const FPU: u32 = 1 << 0;
const PSE: u32 = 1 << 3;
const TSC: u32 = 1 << 4;
const MSR: u32 = 1 << 5;
const PAE: u32 = 1 << 6;
const CX8: u32 = 1 << 8;
const APIC: u32 = 1 << 9;
const SEP: u32 = 1 << 11;
const PGE: u32 = 1 << 13;
const CMOV: u32 = 1 << 15;
const PAT: u32 = 1 << 16;
const CLFSH: u32 = 1 << 19;
const FXSR: u32 = 1 << 24;
const SSE: u32 = 1 << 25;
const SSE2: u32 = 1 << 26;
// Leaf 1 ECX.
const SSE3: u32 = 1 << 0;
const SSSE3: u32 = 1 << 9;
const CX16: u32 = 1 << 13;
const PCID: u32 = 1 << 17;
const SSE4_1: u32 = 1 << 19;
const SSE4_2: u32 = 1 << 20;
const X2APIC: u32 = 1 << 21;
const MOVBE: u32 = 1 << 22;
const FMA: u32 = 1 << 12;
const AVX: u32 = 1 << 28;
const F16C: u32 = 1 << 29;
const POPCNT: u32 = 1 << 23;
const TSC_DEADLINE: u32 = 1 << 24;
const XSAVE: u32 = 1 << 26;
// Leaf 0xD.
const XCR0_SUPPORTED: u32 = 0b111;
const XSAVE_LEGACY_AND_HEADER: u32 = 576;
const XSAVE_MAX: u32 = 576 + 256;
const XSAVEOPT: u32 = 1 << 0;
const XSAVEC: u32 = 1 << 1;
// Leaf 7 EBX.
const TSC_ADJUST: u32 = 1 << 1;
const BMI1: u32 = 1 << 3;
const BMI2: u32 = 1 << 8;
const AVX2: u32 = 1 << 5;
const SMEP: u32 = 1 << 7;
const INVPCID: u32 = 1 << 10;
const SMAP: u32 = 1 << 20;
const CLFLUSHOPT: u32 = 1 << 23;
const CLWB: u32 = 1 << 24;
// Leaf 7 ECX.
const UMIP: u32 = 1 << 2;
const PKU: u32 = 1 << 3;
const RDPID: u32 = 1 << 22;
const PKS: u32 = 1 << 31;
// Leaf 7 EDX.
const ARCH_CAPABILITIES: u32 = 1 << 29;
// Leaf 0x8000_0001.
const LAHF_LM: u32 = 1 << 0;
const ABM_LZCNT: u32 = 1 << 5;
const SYSCALL: u32 = 1 << 11;
const NX: u32 = 1 << 20;
const PDPE1GB: u32 = 1 << 26;
const RDTSCP: u32 = 1 << 27;
const LM: u32 = 1 << 29;
// Leaf 0x8000_0007 EDX.
const INVARIANT_TSC: u32 = 1 << 8;

/// Every leaf the emu CPU model has (before `arch::cpuid::template` adds
/// per-vCPU topology and the hypervisor leaves).
pub fn supported_cpuid() -> Vec<CpuidEntry> {
    let (vb, vd, vc) = regs(b"GenuineIntel");
    let leaf1_edx = FPU
        | PSE
        | TSC
        | MSR
        | PAE
        | CX8
        | APIC
        | SEP
        | PGE
        | CMOV
        | PAT
        | CLFSH
        | FXSR
        | SSE
        | SSE2;
    let brand = brand_string();
    let brand_leaf = |n: usize| {
        let w = |i: usize| {
            let o = n * 16 + i * 4;
            u32::from_le_bytes([brand[o], brand[o + 1], brand[o + 2], brand[o + 3]])
        };
        leaf(0x8000_0002 + n as u32, w(0), w(1), w(2), w(3))
    };
    let mut leaves = vec![
        leaf(0, 0x16, vb, vc, vd),
        // CLFLUSH line size 8 (x 8 bytes = 64) in EBX[15:8].
        leaf(
            1,
            0x0002_06a7,
            8 << 8,
            SSE3 | SSSE3
                | FMA
                | CX16
                | PCID
                | SSE4_1
                | SSE4_2
                | X2APIC
                | MOVBE
                | POPCNT
                | TSC_DEADLINE
                | XSAVE
                | AVX
                | F16C,
            leaf1_edx,
        ),
        CpuidEntry {
            significant_index: true,
            ..leaf(
                7,
                0,
                TSC_ADJUST | BMI1 | AVX2 | SMEP | BMI2 | INVPCID | SMAP | CLFLUSHOPT | CLWB,
                UMIP | PKU | RDPID | PKS,
                ARCH_CAPABILITIES,
            )
        },
        CpuidEntry {
            significant_index: true,
            ..leaf(0xb, 0, 0, 0, 0)
        },
        // XSAVE: x87, SSE and AVX state (XCR0 bits 0-2); EBX is the size
        // for the current XCR0 (the CPU fills it in), ECX the maximum.
        CpuidEntry {
            significant_index: true,
            ..leaf(0xd, XCR0_SUPPORTED, XSAVE_LEGACY_AND_HEADER, XSAVE_MAX, 0)
        },
        // XSAVEOPT and XSAVEC; no XGETBV with ECX=1, no XSAVES.
        CpuidEntry {
            index: 1,
            significant_index: true,
            ..leaf(0xd, XSAVEOPT | XSAVEC, 0, 0, 0)
        },
        // The AVX component: 256 bytes at offset 576.
        CpuidEntry {
            index: 2,
            significant_index: true,
            ..leaf(0xd, 256, XSAVE_LEGACY_AND_HEADER, 0, 0)
        },
        // TSC = crystal * EBX / EAX, crystal in ECX (Hz): the guest reads
        // its TSC frequency instead of calibrating it against the PIT, and
        // the crystal is the APIC timer's clock (Linux takes it as such).
        leaf(0x15, 1, TSC_PER_CRYSTAL, APIC_BUS_HZ as u32, 0),
        // Base, maximum and bus frequencies in MHz.
        leaf(0x16, MHZ, MHZ, (APIC_BUS_HZ / 1_000_000) as u32, 0),
        leaf(0x8000_0000, 0x8000_0008, 0, 0, 0),
        leaf(
            0x8000_0001,
            0,
            0,
            LAHF_LM | ABM_LZCNT,
            SYSCALL | NX | PDPE1GB | RDTSCP | LM,
        ),
        brand_leaf(0),
        brand_leaf(1),
        brand_leaf(2),
        // Intel reports no L1 cache/TLB information here (reserved).
        leaf(0x8000_0005, 0, 0, 0, 0),
        leaf(0x8000_0006, 0, 0, L2.ext_ecx(), 0),
        leaf(0x8000_0007, 0, 0, 0, INVARIANT_TSC),
        leaf(0x8000_0008, 0x3028, 0, 0, 0),
    ];
    // One CPUID 2 round whose only descriptor (0xFF) says "use leaf 4".
    leaves.push(leaf(2, LEAF2_USE_LEAF4, 0, 0, 0));
    for (i, c) in CACHES.iter().enumerate() {
        leaves.push(c.leaf4(i as u32));
    }
    // The null sub-leaf ends the list.
    leaves.push(CpuidEntry {
        index: CACHES.len() as u32,
        significant_index: true,
        ..leaf(4, 0, 0, 0, 0)
    });
    leaves.sort_by_key(|e| (e.function, e.index));
    leaves
}

/// Processor frequency in MHz (leaf 0x16, brand string): the TSC's.
const MHZ: u32 = (crate::vcpu::TSC_HZ / 1_000_000) as u32;
use irqchip::lapic::APIC_BUS_HZ;
/// TSC ticks per crystal (APIC bus) tick.
const TSC_PER_CRYSTAL: u32 = (crate::vcpu::TSC_HZ / APIC_BUS_HZ) as u32;
const _: () = assert!(crate::vcpu::TSC_HZ.is_multiple_of(APIC_BUS_HZ));

/// "Ferrovisor emu x86-64 CPU @ 1.00GHz", NUL-padded to 48 bytes, with
/// the frequency of leaf 0x16 (as Intel brand strings end).
fn brand_string() -> [u8; 48] {
    let text = format!(
        "Ferrovisor emu x86-64 CPU @ {}.{:02}GHz",
        MHZ / 1000,
        MHZ % 1000 / 10
    );
    let mut b = [0u8; 48];
    let n = text.len().min(47);
    b[..n].copy_from_slice(&text.as_bytes()[..n]);
    b
}

/// Leaf 2 EAX: AL = 1 round; descriptor 0xFF ("no descriptors here,
/// CPUID leaf 4 describes the caches").
const LEAF2_USE_LEAF4: u32 = 0xff01;

/// A cache as leaf 4 describes it.
struct Cache {
    /// 1 data, 2 instruction, 3 unified.
    kind: u32,
    level: u32,
    size_kib: u32,
    ways: u32,
    /// Leaf 4 EDX: bit 0 WBINVD does not flush lower levels' sharers,
    /// bit 1 inclusive, bit 2 complex indexing.
    edx: u32,
}

const LINE: u32 = 64;
const L1D: Cache = Cache {
    kind: 1,
    level: 1,
    size_kib: 32,
    ways: 8,
    edx: 0,
};
const L1I: Cache = Cache { kind: 2, ..L1D };
const L2: Cache = Cache {
    kind: 3,
    level: 2,
    size_kib: 1024,
    ways: 16,
    edx: 0,
};
const L3: Cache = Cache {
    kind: 3,
    level: 3,
    size_kib: 16 * 1024,
    ways: 16,
    edx: 1 << 2,
};
/// Leaf 4's sub-leaves in order (the null one follows).
const CACHES: [Cache; 4] = [L1D, L1I, L2, L3];

impl Cache {
    fn sets(&self) -> u32 {
        self.size_kib * 1024 / (self.ways * LINE)
    }

    /// Leaf 4 sub-leaf `index`. EAX[31:26] (cores per package − 1) and
    /// EAX[25:14] (logical processors sharing − 1) are left 0 here:
    /// `arch::cpuid::template` writes them for the VM's vCPU count.
    fn leaf4(&self, index: u32) -> CpuidEntry {
        const SELF_INITIALIZING: u32 = 1 << 8;
        CpuidEntry {
            index,
            significant_index: true,
            ..leaf(
                4,
                self.kind | self.level << 5 | SELF_INITIALIZING,
                (LINE - 1) | (self.ways - 1) << 22,
                self.sets() - 1,
                self.edx,
            )
        }
    }

    /// Leaf 0x8000_0006 ECX: size in KiB, associativity code, line size.
    fn ext_ecx(&self) -> u32 {
        let assoc = match self.ways {
            1 => 1,
            2 => 2,
            4 => 4,
            8 => 6,
            16 => 8,
            _ => 0xf,
        };
        self.size_kib << 16 | assoc << 12 | LINE
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vendor_and_long_mode_are_advertised() {
        let leaves = supported_cpuid();
        let l0 = leaves.iter().find(|e| e.function == 0).unwrap();
        let mut vendor = Vec::new();
        for r in [l0.ebx, l0.edx, l0.ecx] {
            vendor.extend_from_slice(&r.to_le_bytes());
        }
        assert_eq!(vendor, b"GenuineIntel");
        let ext = leaves.iter().find(|e| e.function == 0x8000_0001).unwrap();
        assert_ne!(ext.edx & LM, 0);
        let l1 = leaves.iter().find(|e| e.function == 1).unwrap();
        assert_ne!(l1.edx & SSE2, 0, "SSE2 is implemented");
        // x86-64-v2: SSE3 SSSE3 SSE4.1 SSE4.2 POPCNT CX16 LAHF/SAHF.
        let v2 = SSE3 | SSSE3 | SSE4_1 | SSE4_2 | POPCNT | CX16;
        assert_eq!(l1.ecx & v2, v2);
        assert_ne!(ext.ecx & LAHF_LM, 0);
        assert_eq!(l1.ecx & (1 << 3), 0, "no MONITOR/MWAIT");
        // x86-64-v3: AVX AVX2 BMI1 BMI2 F16C FMA LZCNT MOVBE OSXSAVE(XSAVE).
        let v3 = AVX | F16C | FMA | MOVBE | XSAVE;
        assert_eq!(l1.ecx & v3, v3);
        assert_ne!(ext.ecx & ABM_LZCNT, 0);
        assert_eq!(l1.ecx & (1 << 27), 0, "no OSXSAVE");
        assert_ne!(l1.ecx & MOVBE, 0);
        let l7 = leaves.iter().find(|e| e.function == 7).unwrap();
        assert_eq!(l7.ebx & (BMI1 | BMI2 | AVX2), BMI1 | BMI2 | AVX2);
    }

    fn sub(leaves: &[CpuidEntry], function: u32, index: u32) -> CpuidEntry {
        *leaves
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap_or_else(|| panic!("leaf {function:#x}.{index}"))
    }

    /// (type, level, bytes, line) of leaf 4 sub-leaf `e`.
    fn cache(e: &CpuidEntry) -> (u32, u32, u32, u32) {
        let line = (e.ebx & 0xfff) + 1;
        let partitions = ((e.ebx >> 12) & 0x3ff) + 1;
        let ways = (e.ebx >> 22) + 1;
        let sets = e.ecx + 1;
        (
            e.eax & 0x1f,
            (e.eax >> 5) & 7,
            line * partitions * ways * sets,
            line,
        )
    }

    #[test]
    fn leaf_4_lists_l1d_l1i_l2_l3_then_the_null_sub_leaf() {
        let leaves = supported_cpuid();
        let want = [
            (1, 1, 32 << 10, 64),
            (2, 1, 32 << 10, 64),
            (3, 2, 1 << 20, 64),
            (3, 3, 16 << 20, 64),
        ];
        for (i, w) in want.iter().enumerate() {
            let e = sub(&leaves, 4, i as u32);
            assert!(e.significant_index);
            assert_eq!(cache(&e), *w, "sub-leaf {i}");
            assert_ne!(e.eax & (1 << 8), 0, "self-initialising");
            assert_eq!(e.eax >> 14, 0, "sharing fields: the template's");
        }
        let null = sub(&leaves, 4, 4);
        assert!(null.significant_index);
        assert_eq!((null.eax, null.ebx, null.ecx, null.edx), (0, 0, 0, 0));
        // Leaf 2 defers to leaf 4.
        let l2 = sub(&leaves, 2, 0);
        assert_eq!((l2.eax, l2.ebx, l2.ecx, l2.edx), (0xff01, 0, 0, 0));
    }

    #[test]
    fn leaf_4_after_the_template_matches_the_vcpu_count() {
        let leaves = supported_cpuid();
        for count in [1u32, 2, 3, 4, 8, 64] {
            let t = arch::cpuid::template(&leaves, count - 1, count);
            assert_eq!(sub(&t, 2, 0).eax, 0xff01, "leaf 2 survives");
            let cores = sub(&t, 0xb, 1).ebx;
            assert_eq!(cores, count);
            for i in 0..4 {
                let e = sub(&t, 4, i);
                let per_package = (e.eax >> 26) + 1;
                let sharing = ((e.eax >> 14) & 0xfff) + 1;
                assert!(per_package >= count && per_package < 2 * count.max(1) + 1);
                assert_eq!(per_package, 1 << sub(&t, 0xb, 1).eax);
                let level = (e.eax >> 5) & 7;
                assert_eq!(
                    sharing,
                    if level == 3 { per_package } else { 1 },
                    "{count}: L{level}"
                );
                assert_eq!(cache(&e), cache(&sub(&leaves, 4, i)), "geometry kept");
            }
            assert_eq!(sub(&t, 4, 4).eax, 0);
        }
    }

    #[test]
    fn extended_cache_leaves_follow_intel_and_agree_with_leaf_4() {
        let leaves = supported_cpuid();
        assert!(sub(&leaves, 0x8000_0000, 0).eax >= 0x8000_0006);
        let l5 = sub(&leaves, 0x8000_0005, 0);
        assert_eq!(
            (l5.eax, l5.ebx, l5.ecx, l5.edx),
            (0, 0, 0, 0),
            "reserved on Intel"
        );
        let l6 = sub(&leaves, 0x8000_0006, 0);
        assert_eq!((l6.eax, l6.ebx, l6.edx), (0, 0, 0));
        let (_, _, l2_bytes, line) = cache(&sub(&leaves, 4, 2));
        assert_eq!(l6.ecx >> 16, l2_bytes >> 10, "L2 size in KiB");
        assert_eq!(l6.ecx & 0xff, line);
        assert_eq!((l6.ecx >> 12) & 0xf, 8, "16-way");
        let t = arch::cpuid::template(&leaves, 0, 1);
        assert_eq!(sub(&t, 0x8000_0006, 0), l6);
        assert_eq!(sub(&t, 0x8000_0005, 0), l5);
    }

    #[test]
    fn frequencies_and_the_brand_string_agree() {
        let leaves = supported_cpuid();
        let l15 = sub(&leaves, 0x15, 0);
        let tsc = l15.ecx as u64 * l15.ebx as u64 / l15.eax as u64;
        assert_eq!(tsc, crate::vcpu::TSC_HZ);
        let l16 = sub(&leaves, 0x16, 0);
        assert_eq!(l16.eax as u64 * 1_000_000, tsc, "base frequency");
        assert_eq!(l16.ebx, l16.eax, "maximum");
        assert_eq!(
            l15.ecx as u64, APIC_BUS_HZ,
            "the crystal is the APIC timer's clock"
        );
        assert_eq!(l16.ecx as u64 * 1_000_000, APIC_BUS_HZ, "bus frequency");
        let mut brand = Vec::new();
        for f in 0x8000_0002..=0x8000_0004 {
            let e = sub(&leaves, f, 0);
            for r in [e.eax, e.ebx, e.ecx, e.edx] {
                brand.extend_from_slice(&r.to_le_bytes());
            }
        }
        assert_eq!(brand.len(), 48);
        assert_eq!(brand[47], 0, "NUL-terminated");
        let text = String::from_utf8(brand.into_iter().take_while(|&b| b != 0).collect()).unwrap();
        let ghz = format!("@ {:.2}GHz", l16.eax as f64 / 1000.0);
        assert!(text.ends_with(&ghz), "{text:?} vs {ghz}");
    }

    #[test]
    fn xsave_leaves_describe_x87_sse_and_avx_state() {
        let leaves = supported_cpuid();
        assert_ne!(sub(&leaves, 1, 0).ecx & XSAVE, 0);
        assert_eq!(sub(&leaves, 1, 0).ecx & (1 << 27), 0, "OSXSAVE is dynamic");
        assert!(sub(&leaves, 0, 0).eax >= 0xd, "max basic leaf reaches 0xD");
        let d0 = sub(&leaves, 0xd, 0);
        assert_eq!((d0.eax, d0.ebx, d0.ecx, d0.edx), (7, 576, 832, 0));
        let d1 = sub(&leaves, 0xd, 1);
        assert_eq!(d1.eax, 0b11, "XSAVEOPT and XSAVEC, not XSAVES");
        let d2 = sub(&leaves, 0xd, 2);
        assert_eq!((d2.eax, d2.ebx, d2.ecx, d2.edx), (256, 576, 0, 0));
        assert!(leaves
            .iter()
            .filter(|e| e.function == 0xd)
            .all(|e| e.significant_index));
        // The template keeps every sub-leaf.
        let t = arch::cpuid::template(&leaves, 0, 2);
        for i in 0..3 {
            assert_eq!(sub(&t, 0xd, i), sub(&leaves, 0xd, i));
        }
    }
}
