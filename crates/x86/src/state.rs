//! Architectural state of one x86-64 logical processor.

use crate::flags::LazyFlags;

/// Segment register indices, in iced-x86's order (ES, CS, SS, DS, FS, GS).
pub const ES: usize = 0;
pub const CS: usize = 1;
pub const SS: usize = 2;
pub const DS: usize = 3;
pub const FS: usize = 4;
pub const GS: usize = 5;

/// GPR indices.
pub const RAX: usize = 0;
pub const RCX: usize = 1;
pub const RDX: usize = 2;
pub const RBX: usize = 3;
pub const RSP: usize = 4;
pub const RBP: usize = 5;
pub const RSI: usize = 6;
pub const RDI: usize = 7;

/// RFLAGS bits.
pub mod rflags {
    pub const CF: u64 = 1 << 0;
    pub const FIXED1: u64 = 1 << 1;
    pub const PF: u64 = 1 << 2;
    pub const AF: u64 = 1 << 4;
    pub const ZF: u64 = 1 << 6;
    pub const SF: u64 = 1 << 7;
    pub const TF: u64 = 1 << 8;
    pub const IF: u64 = 1 << 9;
    pub const DF: u64 = 1 << 10;
    pub const OF: u64 = 1 << 11;
    pub const IOPL: u64 = 3 << 12;
    pub const NT: u64 = 1 << 14;
    pub const RF: u64 = 1 << 16;
    pub const VM: u64 = 1 << 17;
    pub const AC: u64 = 1 << 18;
    pub const VIF: u64 = 1 << 19;
    pub const VIP: u64 = 1 << 20;
    pub const ID: u64 = 1 << 21;
    /// The arithmetic flags.
    pub const ARITH: u64 = CF | PF | AF | ZF | SF | OF;
    /// Bits software can change at all.
    pub const WRITABLE: u64 = ARITH | TF | IF | DF | IOPL | NT | RF | VM | AC | VIF | VIP | ID;
}

/// CR0 bits.
pub mod cr0 {
    pub const PE: u64 = 1 << 0;
    pub const MP: u64 = 1 << 1;
    pub const EM: u64 = 1 << 2;
    pub const TS: u64 = 1 << 3;
    pub const ET: u64 = 1 << 4;
    pub const NE: u64 = 1 << 5;
    pub const WP: u64 = 1 << 16;
    pub const AM: u64 = 1 << 18;
    pub const NW: u64 = 1 << 29;
    pub const CD: u64 = 1 << 30;
    pub const PG: u64 = 1 << 31;
}

/// CR4 bits.
pub mod cr4 {
    pub const VME: u64 = 1 << 0;
    pub const PVI: u64 = 1 << 1;
    pub const TSD: u64 = 1 << 2;
    pub const DE: u64 = 1 << 3;
    pub const PSE: u64 = 1 << 4;
    pub const PAE: u64 = 1 << 5;
    pub const MCE: u64 = 1 << 6;
    pub const PGE: u64 = 1 << 7;
    pub const PCE: u64 = 1 << 8;
    pub const OSFXSR: u64 = 1 << 9;
    pub const OSXMMEXCPT: u64 = 1 << 10;
    pub const UMIP: u64 = 1 << 11;
    pub const FSGSBASE: u64 = 1 << 16;
    pub const PCIDE: u64 = 1 << 17;
    pub const OSXSAVE: u64 = 1 << 18;
    pub const SMEP: u64 = 1 << 20;
    pub const SMAP: u64 = 1 << 21;
    pub const PKE: u64 = 1 << 22;
    pub const PKS: u64 = 1 << 24;
    /// The CR4 bits this CPU accepts (others raise #GP on MOV to CR4).
    pub const SUPPORTED: u64 = VME
        | PVI
        | TSD
        | DE
        | PSE
        | PAE
        | MCE
        | PGE
        | PCE
        | OSFXSR
        | OSXMMEXCPT
        | UMIP
        | FSGSBASE
        | PCIDE
        | OSXSAVE
        | SMEP
        | SMAP
        | PKE
        | PKS;
}

/// XCR0 bits (XSAVE state components).
pub mod xcr0 {
    pub const X87: u64 = 1 << 0;
    pub const SSE: u64 = 1 << 1;
    pub const AVX: u64 = 1 << 2;
    /// The components this CPU implements.
    pub const SUPPORTED: u64 = X87 | SSE | AVX;
}

/// EFER bits.
pub mod efer {
    pub const SCE: u64 = 1 << 0;
    pub const LME: u64 = 1 << 8;
    pub const LMA: u64 = 1 << 10;
    pub const NXE: u64 = 1 << 11;
    pub const FFXSR: u64 = 1 << 14;
    pub const SUPPORTED: u64 = SCE | LME | LMA | NXE | FFXSR;
}

/// A segment register with its hidden descriptor cache. `limit` is the
/// expanded byte limit (granularity already applied).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SegCache {
    pub selector: u16,
    pub base: u64,
    pub limit: u32,
    /// Access rights in the VMX layout: bits 0-3 type, 4 S, 5-6 DPL, 7 P,
    /// 12 AVL, 13 L, 14 D/B, 15 G, 16 unusable.
    pub attr: u32,
}

impl SegCache {
    pub const UNUSABLE: u32 = 1 << 16;

    pub fn typ(&self) -> u8 {
        (self.attr & 0xf) as u8
    }
    pub fn s(&self) -> bool {
        self.attr & (1 << 4) != 0
    }
    pub fn dpl(&self) -> u8 {
        ((self.attr >> 5) & 3) as u8
    }
    pub fn present(&self) -> bool {
        self.attr & (1 << 7) != 0
    }
    pub fn l(&self) -> bool {
        self.attr & (1 << 13) != 0
    }
    pub fn db(&self) -> bool {
        self.attr & (1 << 14) != 0
    }
    pub fn g(&self) -> bool {
        self.attr & (1 << 15) != 0
    }
    pub fn unusable(&self) -> bool {
        self.attr & Self::UNUSABLE != 0
    }
    pub fn is_code(&self) -> bool {
        self.s() && self.typ() & 8 != 0
    }
    /// A real-mode style segment: base = selector * 16, 64 KiB limit, data RW.
    pub fn real(selector: u16, code: bool) -> SegCache {
        SegCache {
            selector,
            base: (selector as u64) << 4,
            limit: 0xffff,
            attr: if code { 0x9b } else { 0x93 },
        }
    }

    /// Builds the cache from a raw 8-byte descriptor (the upper 32 bits of
    /// the base for system descriptors in long mode are applied by callers).
    pub fn from_descriptor(selector: u16, raw: u64) -> SegCache {
        let base = ((raw >> 16) & 0xff_ffff) | (((raw >> 56) & 0xff) << 24);
        let mut limit = ((raw & 0xffff) | ((raw >> 32) & 0xf_0000)) as u32;
        let attr = ((raw >> 40) & 0xf0ff) as u32;
        if attr & (1 << 15) != 0 {
            limit = (limit << 12) | 0xfff;
        }
        SegCache {
            selector,
            base,
            limit,
            attr,
        }
    }
}

/// GDTR / IDTR.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TableReg {
    pub base: u64,
    pub limit: u16,
}

/// MSRs the CPU models itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Msrs {
    pub star: u64,
    pub lstar: u64,
    pub cstar: u64,
    pub fmask: u64,
    pub kernel_gs_base: u64,
    pub sysenter_cs: u64,
    pub sysenter_esp: u64,
    pub sysenter_eip: u64,
    pub pat: u64,
    pub misc_enable: u64,
    pub tsc_aux: u64,
    /// Guest TSC = host TSC + offset.
    pub tsc_offset: u64,
    /// IA32_TSC_ADJUST: the sum of the guest's changes to its TSC.
    pub tsc_adjust: u64,
    /// IA32_PKRS: the supervisor protection-key rights (with CR4.PKS).
    pub pkrs: u64,
    /// MSRs the accelerator defined through `set_msrs` that the CPU does
    /// not model: plain storage, readable and writable by the guest.
    pub extra: std::collections::BTreeMap<u32, u64>,
}

impl Default for Msrs {
    fn default() -> Self {
        Msrs {
            star: 0,
            lstar: 0,
            cstar: 0,
            fmask: 0,
            kernel_gs_base: 0,
            sysenter_cs: 0,
            sysenter_esp: 0,
            sysenter_eip: 0,
            pat: 0x0007_0406_0007_0406,
            misc_enable: 1, // fast strings
            tsc_aux: 0,
            tsc_offset: 0,
            tsc_adjust: 0,
            pkrs: 0,
            extra: Default::default(),
        }
    }
}

/// x87 and SSE register file (FXSAVE terms).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FpuState {
    /// ST0..ST7 as 80-bit extended values (physical registers R0..R7).
    pub st: [[u8; 10]; 8],
    pub fcw: u16,
    pub fsw: u16,
    /// Abridged tag word (1 = valid).
    pub ftw: u8,
    pub fop: u16,
    pub fip: u64,
    pub fdp: u64,
    pub xmm: [u128; 16],
    pub mxcsr: u32,
    /// Bits 255:128 of YMM0..YMM15 (the AVX state component of XSAVE).
    pub ymm_hi: [u128; 16],
}

impl Default for FpuState {
    fn default() -> Self {
        FpuState {
            st: [[0; 10]; 8],
            fcw: 0x37f,
            fsw: 0,
            ftw: 0,
            fop: 0,
            fip: 0,
            fdp: 0,
            xmm: [0; 16],
            mxcsr: 0x1f80,
            ymm_hi: [0; 16],
        }
    }
}

/// The operating mode, derived from CR0.PE, EFER.LMA, RFLAGS.VM and CS.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Real,
    /// 16- or 32-bit protected mode (or compatibility mode under LMA).
    Protected,
    Virtual8086,
    /// 64-bit mode (LMA and CS.L).
    Long,
}

/// Everything architectural about the CPU.
#[derive(Debug, Clone)]
pub struct CpuState {
    pub gpr: [u64; 16],
    pub rip: u64,
    pub flags: LazyFlags,
    pub seg: [SegCache; 6],
    pub ldtr: SegCache,
    pub tr: SegCache,
    pub gdtr: TableReg,
    pub idtr: TableReg,
    pub cr0: u64,
    pub cr2: u64,
    pub cr3: u64,
    pub cr4: u64,
    pub cr8: u64,
    pub efer: u64,
    /// XCR0: the XSAVE state components enabled (bit 0 x87, 1 SSE, 2 AVX).
    pub xcr0: u64,
    /// PKRU: the user protection-key rights (RDPKRU/WRPKRU, CR4.PKE).
    pub pkru: u32,
    pub dr: [u64; 8],
    pub msr: Msrs,
    pub fpu: FpuState,
    /// Derived: current privilege level.
    pub cpl: u8,
    /// Derived: mode.
    pub mode: Mode,
    /// Derived: code size of CS in bits (16, 32, 64).
    pub code_bits: u32,
    /// Halted by HLT until an interrupt.
    pub halted: bool,
    /// NMIs blocked (between NMI delivery and the next IRET).
    pub nmi_blocked: bool,
}

impl Default for CpuState {
    /// The state after RESET (real mode at F000:FFF0).
    fn default() -> Self {
        let mut seg = [SegCache::real(0, false); 6];
        seg[CS] = SegCache {
            selector: 0xf000,
            base: 0xffff_0000,
            limit: 0xffff,
            attr: 0x9b,
        };
        let mut s = CpuState {
            gpr: [0; 16],
            rip: 0xfff0,
            flags: LazyFlags::new(rflags::FIXED1),
            seg,
            ldtr: SegCache {
                attr: 0x82,
                limit: 0xffff,
                ..Default::default()
            },
            tr: SegCache {
                attr: 0x8b,
                limit: 0xffff,
                ..Default::default()
            },
            gdtr: TableReg {
                base: 0,
                limit: 0xffff,
            },
            idtr: TableReg {
                base: 0,
                limit: 0xffff,
            },
            cr0: cr0::ET | cr0::CD | cr0::NW,
            cr2: 0,
            cr3: 0,
            cr4: 0,
            cr8: 0,
            efer: 0,
            xcr0: 1,
            pkru: 0,
            dr: [0, 0, 0, 0, 0, 0, 0xffff_0ff0, 0x400],
            msr: Msrs::default(),
            fpu: FpuState::default(),
            cpl: 0,
            mode: Mode::Real,
            code_bits: 16,
            halted: false,
            nmi_blocked: false,
        };
        s.gpr[RDX] = 0x600; // family 6 signature
        s.update_mode();
        s
    }
}

impl CpuState {
    pub fn rflags(&self) -> u64 {
        self.flags.get()
    }

    pub fn set_rflags(&mut self, v: u64) {
        self.flags.set((v & rflags::WRITABLE) | rflags::FIXED1);
        self.update_mode();
    }

    pub fn long_mode_active(&self) -> bool {
        self.efer & efer::LMA != 0
    }

    pub fn paging(&self) -> bool {
        self.cr0 & cr0::PG != 0
    }

    /// Recomputes the derived fields after CR0, EFER, CS or RFLAGS.VM changed.
    pub fn update_mode(&mut self) {
        let cs = &self.seg[CS];
        if self.cr0 & cr0::PE == 0 {
            self.mode = Mode::Real;
            self.cpl = 0;
            self.code_bits = if cs.db() { 32 } else { 16 };
        } else if self.flags.raw_bits() & rflags::VM != 0 {
            self.mode = Mode::Virtual8086;
            self.cpl = 3;
            self.code_bits = 16;
        } else if self.long_mode_active() && cs.l() {
            self.mode = Mode::Long;
            self.cpl = (cs.selector & 3) as u8;
            self.code_bits = 64;
        } else {
            self.mode = Mode::Protected;
            self.cpl = (cs.selector & 3) as u8;
            self.code_bits = if cs.db() { 32 } else { 16 };
        }
    }

    /// The stack-pointer width in bytes (SS.B, or 8 in 64-bit mode).
    pub fn stack_size(&self) -> u32 {
        if self.mode == Mode::Long {
            8
        } else if self.seg[SS].db() {
            4
        } else {
            2
        }
    }

    /// IOPL from RFLAGS.
    pub fn iopl(&self) -> u8 {
        ((self.flags.raw_bits() >> 12) & 3) as u8
    }

    pub fn if_set(&self) -> bool {
        self.flags.raw_bits() & rflags::IF != 0
    }
}
