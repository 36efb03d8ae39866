//! The legacy FXSAVE region and the XSAVE feature set: XSAVE, XSAVEOPT,
//! XSAVEC and XRSTOR over the x87, SSE and AVX (YMM_Hi128) state
//! components, in the standard layout (legacy region at 0, XSAVE header
//! at 512, YMM_Hi128 at 576) or the compacted one (XSAVEC; with only
//! these three components its offsets equal the standard ones).
//!
//! XINUSE (which components are not in their initial configuration) is
//! computed from the registers when it is needed: x87 state is initial
//! when it equals FNINIT's state with zero registers, SSE state when the
//! XMM registers of the mode are zero and MXCSR is 1F80H, AVX state when
//! the upper halves are zero. XSAVEOPT and XSAVEC use the init
//! optimization (a component in its initial configuration is not
//! written); XSAVEOPT does not use the modified optimization.

use iced_x86::{Instruction, Mnemonic};

use super::sse::{nm, MXCSR_MASK};
use super::Exec;
use crate::exception::{gp, ud, R};
use crate::mmu::AccessKind;
use crate::state::{cr0, cr4, xcr0, Mode, RAX, RDX};

/// Offset of the XSAVE header and of the AVX component (both formats).
const HEADER: usize = 512;
const YMM: usize = 576;
/// Size of an XSAVE area holding x87, SSE and AVX state.
pub(crate) const AREA_MAX: usize = YMM + 256;
/// XCOMP_BV bit 63: the compacted format.
const COMPACTED: u64 = 1 << 63;
const MXCSR_INIT: u32 = 0x1f80;

/// Byte ranges of the legacy region by component.
const X87_RANGES: [(usize, usize); 2] = [(0, 24), (32, 160)];
const MXCSR_RANGE: (usize, usize) = (24, 32);

fn u64_at(b: &[u8], o: usize) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[o..o + 8]);
    u64::from_le_bytes(v)
}

impl Exec<'_> {
    /// XMM/YMM registers the current mode has (8 outside 64-bit mode).
    pub(super) fn vector_regs(&self) -> usize {
        if self.c.state.mode == Mode::Long {
            16
        } else {
            8
        }
    }

    /// The FXSAVE image of the x87 and SSE state (`wide`: 64-bit FIP/FDP).
    pub(super) fn fxsave_image(&self, wide: bool, nxmm: usize) -> [u8; 512] {
        let f = &self.c.state.fpu;
        let mut b = [0u8; 512];
        b[0..2].copy_from_slice(&f.fcw.to_le_bytes());
        b[2..4].copy_from_slice(&f.fsw.to_le_bytes());
        b[4] = f.ftw;
        b[6..8].copy_from_slice(&f.fop.to_le_bytes());
        if wide {
            b[8..16].copy_from_slice(&f.fip.to_le_bytes());
            b[16..24].copy_from_slice(&f.fdp.to_le_bytes());
        } else {
            b[8..12].copy_from_slice(&(f.fip as u32).to_le_bytes());
            b[16..20].copy_from_slice(&(f.fdp as u32).to_le_bytes());
        }
        b[24..28].copy_from_slice(&f.mxcsr.to_le_bytes());
        b[28..32].copy_from_slice(&MXCSR_MASK.to_le_bytes());
        for (i, st) in f.st.iter().enumerate() {
            b[32 + i * 16..42 + i * 16].copy_from_slice(st);
        }
        for (i, x) in f.xmm.iter().take(nxmm).enumerate() {
            b[160 + i * 16..176 + i * 16].copy_from_slice(&x.to_le_bytes());
        }
        b
    }

    /// FXRSTOR of an image: #GP (and nothing loaded) for a reserved MXCSR bit.
    pub(super) fn fxrstor_image(&mut self, b: &[u8; 512], wide: bool, nxmm: usize) -> R<()> {
        let mxcsr = mxcsr_of(b)?;
        self.load_x87(b, wide);
        self.c.state.fpu.mxcsr = mxcsr;
        self.load_xmm(b, nxmm);
        Ok(())
    }

    fn load_x87(&mut self, b: &[u8], wide: bool) {
        let u16_at = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let u32_at = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        let f = &mut self.c.state.fpu;
        f.fcw = u16_at(0);
        f.fsw = u16_at(2);
        f.ftw = b[4];
        f.fop = u16_at(6);
        if wide {
            f.fip = u64_at(b, 8);
            f.fdp = u64_at(b, 16);
        } else {
            f.fip = u32_at(8) as u64;
            f.fdp = u32_at(16) as u64;
        }
        for (i, st) in f.st.iter_mut().enumerate() {
            st.copy_from_slice(&b[32 + i * 16..42 + i * 16]);
        }
    }

    fn load_xmm(&mut self, b: &[u8], nxmm: usize) {
        for (i, x) in self.c.state.fpu.xmm.iter_mut().take(nxmm).enumerate() {
            let mut v = [0u8; 16];
            v.copy_from_slice(&b[160 + i * 16..176 + i * 16]);
            *x = u128::from_le_bytes(v);
        }
    }

    /// XINUSE: the components not in their initial configuration.
    pub(super) fn xinuse(&self) -> u64 {
        let f = &self.c.state.fpu;
        let n = self.vector_regs();
        let mut r = 0;
        if f.fcw != 0x37f
            || f.fsw != 0
            || f.ftw != 0
            || f.fop != 0
            || f.fip != 0
            || f.fdp != 0
            || f.st.iter().any(|s| s.iter().any(|&b| b != 0))
        {
            r |= xcr0::X87;
        }
        if f.xmm[..n].iter().any(|&x| x != 0) || f.mxcsr != MXCSR_INIT {
            r |= xcr0::SSE;
        }
        if f.ymm_hi[..n].iter().any(|&x| x != 0) {
            r |= xcr0::AVX;
        }
        r
    }

    /// Puts state component `bit` into its initial configuration (the
    /// registers of the current mode; MXCSR is not part of this).
    fn init_component(&mut self, bit: u64) {
        let n = self.vector_regs();
        let f = &mut self.c.state.fpu;
        match bit {
            xcr0::X87 => {
                f.fcw = 0x37f;
                f.fsw = 0;
                f.ftw = 0;
                f.fop = 0;
                f.fip = 0;
                f.fdp = 0;
                f.st = [[0; 10]; 8];
            }
            xcr0::SSE => f.xmm[..n].fill(0),
            _ => f.ymm_hi[..n].fill(0),
        }
    }

    /// XSAVE, XSAVE64, XSAVEOPT(64), XSAVEC(64), XRSTOR(64).
    pub(super) fn xsave_family(&mut self, insn: &Instruction) -> R<()> {
        use Mnemonic::*;
        let st = &self.c.state;
        if st.cr4 & cr4::OSXSAVE == 0 {
            return Err(ud());
        }
        if st.cr0 & cr0::TS != 0 {
            return Err(nm());
        }
        let m = insn.mnemonic();
        let mask = (st.gpr[RAX] & 0xffff_ffff) | (st.gpr[RDX] << 32);
        let rfbm = st.xcr0 & mask;
        let wide = matches!(m, Xsave64 | Xsaveopt64 | Xsavec64 | Xrstor64);
        let save = !matches!(m, Xrstor | Xrstor64);
        // The area reaches the AVX component only when it is requested.
        let size = if rfbm & xcr0::AVX != 0 { AREA_MAX } else { YMM };
        let seg = Self::mem_seg(insn);
        let off = self.ea(insn);
        let lin = self.seg_lin(seg, off, size as u32, save)?;
        if lin & 63 != 0 {
            return Err(gp(0));
        }
        if save {
            let kind = match m {
                Xsave | Xsave64 => SaveKind::Standard,
                Xsaveopt | Xsaveopt64 => SaveKind::Opt,
                _ => SaveKind::Compacted,
            };
            self.xsave(lin, size, rfbm, wide, kind)
        } else {
            self.xrstor(lin, rfbm, wide)
        }
    }

    fn xsave(&mut self, lin: u64, size: usize, rfbm: u64, wide: bool, kind: SaveKind) -> R<()> {
        let user = self.user();
        let n = self.vector_regs();
        let inuse = self.xinuse();
        // Every page of the area is checked for writing before anything
        // is written.
        let mut page = lin & !0xfff;
        let last = lin.wrapping_add(size as u64 - 1);
        for _ in 0..2 {
            self.translate_fill(self.wrap_lin(page), AccessKind::Write, user)?;
            if page >> 12 == last >> 12 {
                break;
            }
            page = page.wrapping_add(0x1000);
        }
        let header = match kind {
            SaveKind::Compacted => [rfbm & inuse, rfbm | COMPACTED],
            _ => {
                let at = self.wrap_lin(lin.wrapping_add(HEADER as u64));
                let old = self.read_lin(at, 8, user)?;
                [(old & !rfbm) | (rfbm & inuse), 0]
            }
        };
        // Components written: all requested ones (XSAVE), or only those
        // not in their initial configuration (init optimization).
        let write = match kind {
            SaveKind::Standard => rfbm,
            _ => rfbm & inuse,
        };
        let legacy = self.fxsave_image(wide, n);
        let mut ranges: Vec<(usize, usize)> = Vec::with_capacity(6);
        if write & xcr0::X87 != 0 {
            ranges.extend_from_slice(&X87_RANGES);
        }
        // MXCSR goes with SSE state, or with AVX state for the standard
        // forms; the init optimization does not apply to it.
        let mxcsr = match kind {
            SaveKind::Compacted => rfbm & xcr0::SSE != 0,
            _ => rfbm & (xcr0::SSE | xcr0::AVX) != 0,
        };
        if mxcsr {
            ranges.push(MXCSR_RANGE);
        }
        if write & xcr0::SSE != 0 {
            ranges.push((160, 160 + 16 * n));
        }
        for (a, b) in ranges {
            self.write_lin_bytes(lin.wrapping_add(a as u64), &legacy[a..b], user)?;
        }
        let mut h = [0u8; 16];
        h[..8].copy_from_slice(&header[0].to_le_bytes());
        h[8..].copy_from_slice(&header[1].to_le_bytes());
        let hlen = if kind == SaveKind::Compacted { 16 } else { 8 };
        self.write_lin_bytes(lin.wrapping_add(HEADER as u64), &h[..hlen], user)?;
        if write & xcr0::AVX != 0 {
            let mut y = [0u8; 256];
            for (i, v) in self.c.state.fpu.ymm_hi.iter().take(n).enumerate() {
                y[i * 16..i * 16 + 16].copy_from_slice(&v.to_le_bytes());
            }
            self.write_lin_bytes(lin.wrapping_add(YMM as u64), &y[..16 * n], user)?;
        }
        Ok(())
    }

    fn xrstor(&mut self, lin: u64, rfbm: u64, wide: bool) -> R<()> {
        let user = self.user();
        let n = self.vector_regs();
        let mut area = [0u8; AREA_MAX];
        self.read_lin_bytes(lin, &mut area[..YMM], user)?;
        let xstate_bv = u64_at(&area, HEADER);
        let xcomp_bv = u64_at(&area, HEADER + 8);
        let xcr0 = self.c.state.xcr0;
        let compacted = xcomp_bv & COMPACTED != 0;
        let reserved_ok = if compacted {
            // XCOMP_BV within XCR0, XSTATE_BV within XCOMP_BV, bytes
            // 63:16 of the header zero.
            xcomp_bv & !COMPACTED & !xcr0 == 0
                && xstate_bv & !xcomp_bv == 0
                && area[HEADER + 16..HEADER + 64].iter().all(|&b| b == 0)
        } else {
            // XSTATE_BV within XCR0, bytes 23:8 of the header zero.
            xstate_bv & !xcr0 == 0 && area[HEADER + 8..HEADER + 24].iter().all(|&b| b == 0)
        };
        if !reserved_ok {
            return Err(gp(0));
        }
        let load = rfbm & xstate_bv;
        if load & xcr0::AVX != 0 {
            let lin_y = lin.wrapping_add(YMM as u64);
            self.read_lin_bytes(lin_y, &mut area[YMM..YMM + 16 * n], user)?;
        }
        // MXCSR: the standard form loads it whenever SSE or AVX state is
        // requested; the compacted form with SSE state, or initialises it.
        let mxcsr = if compacted {
            match (rfbm & xcr0::SSE != 0, xstate_bv & xcr0::SSE != 0) {
                (true, true) => Some(mxcsr_of(&area)?),
                (true, false) => Some(MXCSR_INIT),
                _ => None,
            }
        } else if rfbm & (xcr0::SSE | xcr0::AVX) != 0 {
            Some(mxcsr_of(&area)?)
        } else {
            None
        };
        // Nothing can fault from here on.
        for bit in [xcr0::X87, xcr0::SSE, xcr0::AVX] {
            if rfbm & bit == 0 {
                continue;
            }
            if load & bit == 0 {
                self.init_component(bit);
                continue;
            }
            match bit {
                xcr0::X87 => self.load_x87(&area, wide),
                xcr0::SSE => self.load_xmm(&area, n),
                _ => {
                    for i in 0..n {
                        let mut v = [0u8; 16];
                        v.copy_from_slice(&area[YMM + 16 * i..YMM + 16 * i + 16]);
                        self.c.state.fpu.ymm_hi[i] = u128::from_le_bytes(v);
                    }
                }
            }
        }
        if let Some(v) = mxcsr {
            self.c.state.fpu.mxcsr = v;
        }
        Ok(())
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum SaveKind {
    Standard,
    Opt,
    Compacted,
}

/// The MXCSR of a legacy region, #GP for a reserved bit.
fn mxcsr_of(b: &[u8]) -> R<u32> {
    let v = u32::from_le_bytes([b[24], b[25], b[26], b[27]]);
    if v & !MXCSR_MASK != 0 {
        return Err(gp(0));
    }
    Ok(v)
}
