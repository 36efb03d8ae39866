//! The CPU model the emu accelerator offers: exactly what the `x86` crate
//! implements, so that guests pick code paths that work.
//!
//! | leaf | content |
//! |---|---|
//! | 0 | max basic leaf 0x16, vendor "GenuineIntel" |
//! | 1 | family 6 model 0x2a stepping 7; EDX: FPU PSE TSC MSR PAE CX8 APIC SEP PGE CMOV PAT CLFSH FXSR SSE SSE2; ECX: CX16 x2APIC MOVBE POPCNT TSC-deadline XSAVE (OSXSAVE mirrors CR4 at CPUID time) |
//! | 7.0 | EBX: TSC_ADJUST, BMI1 (TZCNT), BMI2; EDX: ARCH_CAPABILITIES (the MSR declares the CPU immune to Meltdown, MDS, SSB and the rest: it does not speculate, so guests skip page-table isolation and the other mitigations) |
//! | 0xB | x2APIC topology (filled per vCPU by `arch::cpuid::template`) |
//! | 0xD | XSAVE: 0: XCR0 may hold x87, SSE, AVX (EAX=7), EBX = area size for the current XCR0 (576 or 832, computed by the CPU), ECX = 832; 1: XSAVEOPT, XSAVEC (no XSAVES); 2: AVX state, 256 bytes at 576 |
//! | 0x15 | TSC = 1 GHz crystal × 1/1 (the guest need not calibrate) |
//! | 0x16 | 1000 MHz base, maximum and bus frequency |
//! | 0x8000_0000 | max extended leaf 0x8000_0008 |
//! | 0x8000_0001 | EDX: SYSCALL, NX, 1 GiB pages, RDTSCP, LM; ECX: LAHF/SAHF, LZCNT |
//! | 0x8000_0007 | EDX: invariant TSC |
//!
//! Invariant TSC with TSC_ADJUST is what lets Linux trust the TSC as its
//! clocksource without the jiffies watchdog (whose ticks an emulated CPU
//! can deliver late during busy phases).
//! | 0x8000_0008 | 40 physical, 48 linear address bits |
//!
//! Not advertised because the CPU does not implement them: MMX, SSE3 and
//! later, AVX, XSAVES, SMEP/SMAP, PCID, RDRAND, the PMU. The x87 unit
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
const CX16: u32 = 1 << 13;
const X2APIC: u32 = 1 << 21;
const MOVBE: u32 = 1 << 22;
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
    let brand = b"Ferrovisor emu x86-64 CPU\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0";
    let brand_leaf = |n: usize| {
        let w = |i: usize| {
            let o = n * 16 + i * 4;
            u32::from_le_bytes([brand[o], brand[o + 1], brand[o + 2], brand[o + 3]])
        };
        leaf(0x8000_0002 + n as u32, w(0), w(1), w(2), w(3))
    };
    vec![
        leaf(0, 0x16, vb, vc, vd),
        // CLFLUSH line size 8 (x 8 bytes = 64) in EBX[15:8].
        leaf(
            1,
            0x0002_06a7,
            8 << 8,
            CX16 | X2APIC | MOVBE | POPCNT | TSC_DEADLINE | XSAVE,
            leaf1_edx,
        ),
        CpuidEntry {
            significant_index: true,
            ..leaf(7, 0, TSC_ADJUST | BMI1 | BMI2, 0, ARCH_CAPABILITIES)
        },
        CpuidEntry {
            significant_index: true,
            ..leaf(0xb, 0, 0, 0, 0)
        },
        // TSC = crystal * EBX / EAX, crystal in ECX (Hz): the guest reads
        // its TSC frequency instead of calibrating it against the PIT.
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
        leaf(0x15, 1, 1, crate::vcpu::TSC_HZ as u32, 0),
        // Base, maximum and bus frequencies in MHz.
        leaf(0x16, 1000, 1000, 1000, 0),
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
        leaf(0x8000_0007, 0, 0, 0, INVARIANT_TSC),
        leaf(0x8000_0008, 0x3028, 0, 0, 0),
    ]
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
        assert_eq!(l1.ecx & 1, 0, "no SSE3");
        assert_ne!(l1.ecx & MOVBE, 0);
        let l7 = leaves.iter().find(|e| e.function == 7).unwrap();
        assert_eq!(l7.ebx & (BMI1 | BMI2), BMI1 | BMI2);
    }

    fn sub(leaves: &[CpuidEntry], function: u32, index: u32) -> CpuidEntry {
        *leaves
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap_or_else(|| panic!("leaf {function:#x}.{index}"))
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
