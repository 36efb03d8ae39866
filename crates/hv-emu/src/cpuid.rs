//! The CPU model the emu accelerator offers: exactly what the `x86` crate
//! implements, so that guests pick code paths that work.
//!
//! | leaf | content |
//! |---|---|
//! | 0 | max basic leaf 0x16, vendor "GenuineIntel" |
//! | 1 | family 6 model 0x2a stepping 7; EDX: FPU PSE TSC MSR PAE CX8 APIC SEP PGE CMOV PAT CLFSH FXSR SSE SSE2; ECX: SSE3 SSSE3 CX16 SSE4.1 SSE4.2 x2APIC POPCNT TSC-deadline (with LAHF/SAHF and CX16: x86-64-v2) |
//! | 7.0 | EBX: TSC_ADJUST, BMI1 (TZCNT); EDX: ARCH_CAPABILITIES (the MSR declares the CPU immune to Meltdown, MDS, SSB and the rest: it does not speculate, so guests skip page-table isolation and the other mitigations) |
//! | 0xB | x2APIC topology (filled per vCPU by `arch::cpuid::template`) |
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
//! Not advertised because the CPU does not implement them: MMX,
//! MONITOR/MWAIT, AVX and later, XSAVE, SMEP/SMAP, PCID, RDRAND, the PMU. The x87 unit
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
const SSE4_1: u32 = 1 << 19;
const SSE4_2: u32 = 1 << 20;
const X2APIC: u32 = 1 << 21;
const POPCNT: u32 = 1 << 23;
const TSC_DEADLINE: u32 = 1 << 24;
// Leaf 7 EBX.
const TSC_ADJUST: u32 = 1 << 1;
const BMI1: u32 = 1 << 3;
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
            SSE3 | SSSE3 | CX16 | SSE4_1 | SSE4_2 | X2APIC | POPCNT | TSC_DEADLINE,
            leaf1_edx,
        ),
        CpuidEntry {
            significant_index: true,
            ..leaf(7, 0, TSC_ADJUST | BMI1, 0, ARCH_CAPABILITIES)
        },
        CpuidEntry {
            significant_index: true,
            ..leaf(0xb, 0, 0, 0, 0)
        },
        // TSC = crystal * EBX / EAX, crystal in ECX (Hz): the guest reads
        // its TSC frequency instead of calibrating it against the PIT.
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
        // x86-64-v2: SSE3 SSSE3 SSE4.1 SSE4.2 POPCNT CX16 LAHF/SAHF.
        let v2 = SSE3 | SSSE3 | SSE4_1 | SSE4_2 | POPCNT | CX16;
        assert_eq!(l1.ecx & v2, v2);
        assert_ne!(ext.ecx & LAHF_LM, 0);
        assert_eq!(l1.ecx & (1 << 3), 0, "no MONITOR/MWAIT");
        assert_eq!(l1.ecx & (1 << 28), 0, "no AVX");
        assert_eq!(l1.ecx & (1 << 27), 0, "no OSXSAVE");
    }
}
