//! x87/SSE state through KVM_GET/SET_XSAVE.
//!
//! `KVM_GET_FPU`/`KVM_SET_FPU` are not enough, for two reasons found on
//! this project's hosts (Linux 6.18):
//! - they do not carry MXCSR (the kernel copies every field but that one);
//! - `KVM_SET_FPU` writes the legacy area of the vCPU's XSAVE buffer but not
//!   the XSTATE_BV bits of its header, so on a fresh vCPU, whose header
//!   says "x87 and SSE in init state", the guest's first XRSTOR discards
//!   what was set: the guest saw FCW = 0x37f after `set_fpu` of 0x27f.
//!
//! So where KVM has KVM_CAP_XSAVE, `get_fpu` reads the legacy area from
//! `KVM_GET_XSAVE` (which reports init values for components in init state,
//! exactly what the guest would see) and `set_fpu` rewrites it and marks x87
//! and SSE as in use (XSTATE_BV bits 0 and 1) before `KVM_SET_XSAVE`.
//! Hosts without XSAVE fall back to `KVM_GET/SET_FPU`.
//!
//! Buffer size: since Linux 5.17 a process may enable large dynamic xstate
//! components (AMX), and then the state is larger than the 4 KiB
//! `kvm_xsave`. `KVM_CHECK_EXTENSION(KVM_CAP_XSAVE2)` on the VM fd gives the
//! size; it is queried right before each get, and the buffer read is the
//! one written back.

use hv::{Fpu, HvError};
use kvm_bindings::{kvm_xsave, kvm_xsave2, Xsave};
use kvm_ioctls::{Cap, VcpuFd, VmFd};
use vmm_sys_util::fam::FamStruct;

use crate::error::os;

/// Bytes of the FXSAVE legacy area plus the XSAVE header.
const LEGACY_AND_HEADER: usize = 512 + 64;
/// Byte offset of XSTATE_BV (first field of the XSAVE header).
const XSTATE_BV: usize = 512;
/// XSTATE_BV bits of the x87 and SSE components.
const XFEATURE_FP_SSE: u64 = 0b11;

/// A vCPU's XSAVE buffer in whichever form the host's KVM takes.
pub(crate) enum XsaveArea {
    /// Linux < 5.17 or no dynamic features: the 4 KiB `kvm_xsave`.
    Plain(Box<kvm_xsave>),
    /// KVM_CAP_XSAVE2: sized as the kernel says.
    Sized(Xsave),
}

impl XsaveArea {
    /// KVM_GET_XSAVE(2) of `vcpu`.
    pub fn get(vcpu: &VcpuFd, vm: &VmFd) -> Result<XsaveArea, HvError> {
        let size = vm.check_extension_int(Cap::Xsave2);
        let plain = std::mem::size_of::<kvm_xsave>();
        if size <= 0 {
            let xsave = vcpu.get_xsave().map_err(os("KVM_GET_XSAVE"))?;
            return Ok(XsaveArea::Plain(Box::new(xsave)));
        }
        let entry = std::mem::size_of::<<kvm_xsave2 as FamStruct>::Entry>();
        let fam_len = (size as usize).saturating_sub(plain).div_ceil(entry);
        let mut xsave = Xsave::new(fam_len).map_err(|e| HvError::Os {
            op: "allocating the XSAVE buffer",
            source: std::io::Error::other(e.to_string()),
        })?;
        // SAFETY: the buffer holds `size` bytes, the size
        // KVM_CAP_XSAVE2 reported for this VM just now; dynamic xstate
        // features are never enabled by this crate.
        unsafe { vcpu.get_xsave2(&mut xsave) }.map_err(os("KVM_GET_XSAVE2"))?;
        Ok(XsaveArea::Sized(xsave))
    }

    /// KVM_SET_XSAVE of this buffer (read by [`XsaveArea::get`] from the
    /// same vCPU).
    pub fn set(&self, vcpu: &VcpuFd) -> Result<(), HvError> {
        match self {
            // SAFETY: a plain buffer means the kernel reported no
            // KVM_CAP_XSAVE2 size, i.e. its state fits the 4 KiB struct.
            XsaveArea::Plain(xsave) => unsafe { vcpu.set_xsave(xsave) },
            // SAFETY: the buffer has the size the kernel reported when it
            // was filled.
            XsaveArea::Sized(xsave) => unsafe { vcpu.set_xsave2(xsave) },
        }
        .map_err(os("KVM_SET_XSAVE"))
    }

    fn region(&self) -> &[u32; 1024] {
        match self {
            XsaveArea::Plain(x) => &x.region,
            XsaveArea::Sized(x) => &x.as_fam_struct_ref().xsave.region,
        }
    }

    fn region_mut(&mut self) -> &mut [u32; 1024] {
        match self {
            XsaveArea::Plain(x) => &mut x.region,
            XsaveArea::Sized(x) => {
                // SAFETY: only the fixed-size `region` is modified, never
                // the FAM length.
                &mut unsafe { x.as_mut_fam_struct() }.xsave.region
            }
        }
    }

    /// The whole area as bytes (4 KiB, or the size KVM_CAP_XSAVE2 gave).
    pub fn to_bytes(&self) -> Vec<u8> {
        let extra: &[u32] = match self {
            XsaveArea::Plain(_) => &[],
            XsaveArea::Sized(x) => x.as_slice(),
        };
        self.region()
            .iter()
            .chain(extra)
            .flat_map(|w| w.to_le_bytes())
            .collect()
    }

    /// Replaces the area with `bytes`, zero-padded to this buffer's size
    /// (a 4 KiB area from a host without dynamic features, or from emu,
    /// fits a larger buffer). Longer input is refused.
    pub fn load_bytes(&mut self, bytes: &[u8]) -> Result<(), HvError> {
        let size = 4 * (1024 + self.extra_words());
        if bytes.len() > size {
            return Err(hv::snapshot::mismatch(format!(
                "an XSAVE area of {} bytes (this host's holds {size})",
                bytes.len()
            )));
        }
        let mut words = bytes
            .chunks(4)
            .map(|c| {
                let mut w = [0u8; 4];
                w[..c.len()].copy_from_slice(c);
                u32::from_le_bytes(w)
            })
            .chain(std::iter::repeat(0));
        for w in self.region_mut().iter_mut() {
            *w = words.next().unwrap_or(0);
        }
        if let XsaveArea::Sized(x) = self {
            for w in x.as_mut_slice() {
                *w = words.next().unwrap_or(0);
            }
        }
        Ok(())
    }

    fn extra_words(&self) -> usize {
        match self {
            XsaveArea::Plain(_) => 0,
            XsaveArea::Sized(x) => x.as_slice().len(),
        }
    }

    /// The x87/SSE state in the legacy area.
    pub fn fpu(&self) -> Fpu {
        fpu_from_legacy(&legacy_bytes(self.region()))
    }

    /// Replaces the x87/SSE state and marks both components in use.
    pub fn set_fpu(&mut self, fpu: &Fpu) {
        let region = self.region_mut();
        let mut bytes = legacy_bytes(region);
        fpu_into_legacy(fpu, &mut bytes);
        let bv = u64_at(&bytes, XSTATE_BV) | XFEATURE_FP_SSE;
        bytes[XSTATE_BV..XSTATE_BV + 8].copy_from_slice(&bv.to_le_bytes());
        store_legacy_bytes(region, &bytes);
    }
}

fn legacy_bytes(region: &[u32; 1024]) -> [u8; LEGACY_AND_HEADER] {
    let mut bytes = [0u8; LEGACY_AND_HEADER];
    for (chunk, word) in bytes.chunks_exact_mut(4).zip(region.iter()) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    bytes
}

fn store_legacy_bytes(region: &mut [u32; 1024], bytes: &[u8; LEGACY_AND_HEADER]) {
    for (chunk, word) in bytes.chunks_exact(4).zip(region.iter_mut()) {
        *word = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
    }
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(v)
}

/// Reads the FXSAVE (64-bit format) legacy area.
pub(crate) fn fpu_from_legacy(b: &[u8; LEGACY_AND_HEADER]) -> Fpu {
    let mut fpu = Fpu {
        fpr: [[0; 16]; 8],
        fcw: u16_at(b, 0),
        fsw: u16_at(b, 2),
        ftwx: b[4],
        last_opcode: u16_at(b, 6),
        last_ip: u64_at(b, 8),
        last_dp: u64_at(b, 16),
        xmm: [[0; 16]; 16],
        mxcsr: u32_at(b, 24),
    };
    for (i, st) in fpu.fpr.iter_mut().enumerate() {
        st.copy_from_slice(&b[32 + 16 * i..48 + 16 * i]);
    }
    for (i, xmm) in fpu.xmm.iter_mut().enumerate() {
        xmm.copy_from_slice(&b[160 + 16 * i..176 + 16 * i]);
    }
    fpu
}

/// Writes the FXSAVE (64-bit format) legacy area; MXCSR_MASK and the
/// reserved bytes are kept.
pub(crate) fn fpu_into_legacy(fpu: &Fpu, b: &mut [u8; LEGACY_AND_HEADER]) {
    b[0..2].copy_from_slice(&fpu.fcw.to_le_bytes());
    b[2..4].copy_from_slice(&fpu.fsw.to_le_bytes());
    b[4] = fpu.ftwx;
    b[6..8].copy_from_slice(&fpu.last_opcode.to_le_bytes());
    b[8..16].copy_from_slice(&fpu.last_ip.to_le_bytes());
    b[16..24].copy_from_slice(&fpu.last_dp.to_le_bytes());
    b[24..28].copy_from_slice(&fpu.mxcsr.to_le_bytes());
    for (i, st) in fpu.fpr.iter().enumerate() {
        b[32 + 16 * i..48 + 16 * i].copy_from_slice(st);
    }
    for (i, xmm) in fpu.xmm.iter().enumerate() {
        b[160 + 16 * i..176 + 16 * i].copy_from_slice(xmm);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_area_round_trips_and_keeps_mxcsr_mask() {
        let mut fpu = Fpu {
            fcw: 0x27f,
            fsw: 0x3800,
            ftwx: 0x81,
            last_opcode: 0x5d9,
            last_ip: 0x1122_3344_5566_7788,
            last_dp: 0x99aa_bbcc_ddee_ff00,
            mxcsr: 0x1fa0,
            ..Fpu::default()
        };
        fpu.fpr[7] = [7; 16];
        fpu.xmm[15] = [0xf; 16];
        let mut bytes = [0u8; LEGACY_AND_HEADER];
        bytes[28..32].copy_from_slice(&0xffffu32.to_le_bytes());
        fpu_into_legacy(&fpu, &mut bytes);
        assert_eq!(fpu_from_legacy(&bytes), fpu);
        assert_eq!(u32_at(&bytes, 28), 0xffff, "MXCSR_MASK untouched");
        assert_eq!(u16_at(&bytes, 0), 0x27f);
        assert_eq!(bytes[32 + 7 * 16], 7, "ST7 at byte 144");
        assert_eq!(bytes[160 + 15 * 16], 0xf, "XMM15 at byte 400");
    }

    #[test]
    fn bytes_round_trip_and_oversized_areas_are_refused() {
        let mut area = XsaveArea::Plain(Box::default());
        area.region_mut()[3] = 0x1234_5678;
        let bytes = area.to_bytes();
        assert_eq!(bytes.len(), 4096);
        let mut other = XsaveArea::Plain(Box::default());
        other.load_bytes(&bytes[..100]).unwrap();
        assert_eq!(other.region()[3], 0x1234_5678);
        other.load_bytes(&bytes).unwrap();
        assert_eq!(other.to_bytes(), bytes);
        assert!(other.load_bytes(&[0; 4100]).is_err());
    }

    #[test]
    fn set_fpu_marks_x87_and_sse_in_use() {
        let mut area = XsaveArea::Plain(Box::default());
        area.region_mut()[128] = 0b100; // AVX in use, x87/SSE in init state
        area.set_fpu(&Fpu::default());
        assert_eq!(area.region()[128], 0b111);
        assert_eq!(area.fpu(), Fpu::default());
    }
}
