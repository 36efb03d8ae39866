//! Ferrovisor's x86-64 CPU in software.
//!
//! The CPU knows nothing of devices or hypervisors: it reaches guest memory
//! and I/O through the [`Bus`] trait, and returns from [`Cpu::run`] with a
//! [`CpuExit`] when the accelerator has something to decide (HLT, triple
//! fault, a kick, the instruction budget, an interrupt window). Guest code is
//! decoded once (iced-x86) into blocks cached by (RIP, guest-physical
//! address, code size) and dropped when their page is written, and is
//! interpreted block by block, so that a JIT can later replace the
//! interpreter one block at a time.
//!
//! Guest RAM is accessed through host pointers cached in a software TLB
//! (guest-linear page → host page; supervisor/user × data/fetch banks), so a
//! RAM access costs no virtual call. Fast write access is only cached for a
//! page after a write to it (the Bus sees `ram(gpa, true)` and can log the
//! page dirty), never for a page that holds decoded code.
//!
//! # How it runs fast
//!
//! - Each block is compiled once into pre-decoded ops (`exec::op`): the
//!   handler of every instruction is chosen at decode time — a specialised
//!   one (`exec::fast`, const-generic over operation, operand size,
//!   condition and flag recording) for the common integer forms (MOV,
//!   MOVZX/MOVSX, LEA, ALU, INC/DEC/NEG/NOT, shifts and rotates, IMUL, MUL,
//!   DIV, CMOVcc, SETcc, BT*, BSWAP, Jcc/JMP/CALL/RET, PUSH/POP) with
//!   register, immediate and memory operands, else the generic dispatch on
//!   the iced-x86 mnemonic. Operands become GPR numbers, base/index/scale/
//!   displacement and masked immediates.
//! - Lazy flags, and a backward liveness pass per block: an instruction
//!   whose flags a later one overwrites (with defined values) before
//!   anything can observe them — a read, the block's end, an instruction
//!   that can fault — records nothing. Ops also keep a handler that always
//!   records, used when the budget cuts a block short, so RFLAGS is exact
//!   wherever `run` can stop or an exception or interrupt is delivered.
//!   A register CMP/TEST and the Jcc ending a block run as one op.
//! - Memory operands in 64-bit mode take an inlined TLB path (the TLB only
//!   holds canonical pages, so no canonical check is needed on a hit);
//!   other modes use the segmented path.
//! - The soft TLB has 4096 entries per bank; a CR3 write changes a salt in
//!   the tags instead of clearing entries (global pages are re-salted),
//!   each PCID keeps its own salt (so a no-flush CR3 write switches back
//!   to its entries), guest-requested full flushes just retire every salt,
//!   and page-table pages are found through a small physical-page cache.
//! - Blocks are found through a jump cache keyed, in 64-bit mode, by RIP
//!   and the TLB generation (no translation needed on a hit), and chained:
//!   the last op of a block remembers its successor. Blocks run back to
//!   back until an instruction asks for the run loop (`block_exit`), a
//!   signal arrives or the budget is spent.
//! - The block cache is bounded by bytes (`block::CODE_CACHE_BYTES` per
//!   CPU, oldest blocks evicted first); accesses wider than 8 bytes (SSE,
//!   AVX, x87) take the TLB page by page like the others.
//! - `counters`: page walks, TLB fills, flushes by cause, blocks built,
//!   dropped by cause and bytes held ([`Cpu::cache_counters`], shown by
//!   `ferrovisor run --stats`).
//!
//! # Using it
//!
//! ```text
//! let mut cpu = Cpu::new(counters);        // Arc<hv::ExitCounters>
//! cpu.set_cpuid(&entries);                 // the leaves the guest sees
//! cpu.set_code_share(vm_share.clone());    // one CodeShare per VM (SMP SMC)
//! cpu.set_regs(&regs); cpu.set_sregs(&sregs);
//! let kick = cpu.signals();                // kick() / request_flush() from any thread
//! loop {
//!     match cpu.run(&mut bus, u64::MAX) {
//!         CpuExit::Halt => { /* sleep until an interrupt */ }
//!         CpuExit::Interrupted | CpuExit::InterruptWindow => {
//!             if cpu.can_inject_interrupt() { cpu.inject_external_interrupt(&mut bus, v)?; }
//!         }
//!         CpuExit::Shutdown => break,        // triple fault
//!         CpuExit::InstructionLimit => {}
//!     }
//! }
//! ```
//!
//! # What is implemented
//!
//! - Modes: real mode (IVT, unreal-mode limits), 16/32-bit protected mode,
//!   compatibility mode, 64-bit mode, and the transitions (CR0.PE/PG,
//!   EFER.LME/LMA, far JMP/CALL/RET, IRET, segment loads with the
//!   descriptor checks and #GP/#NP/#SS/#TS error codes).
//! - Paging (`mmu`): 32-bit (4 MiB PSE pages), PAE and 4-level paging with
//!   2 MiB / 1 GiB pages, A/D bits set with host atomics, U/S, R/W, NX,
//!   CR0.WP, SMEP, SMAP (EFLAGS.AC with STAC/CLAC; implicit supervisor
//!   accesses to descriptor tables, IDT and TSS ignore AC), protection
//!   keys (PKU: PKRU, RDPKRU/WRPKRU, CR4.PKE; PKS: IA32_PKRS, CR4.PKS),
//!   global pages, PCIDs (CR4.PCIDE, CR3 bit 63 keeps a PCID's
//!   translations, INVPCID types 0-3), INVLPG, CR3 reloads, reserved-bit
//!   checks, #PF error codes (P, W, U, RSVD, I/D, PK) and CR2. The TLB
//!   keeps one bank per kind of access (supervisor data, supervisor data
//!   with SMAP overridden by AC, user data, supervisor and user fetches),
//!   each filled by the walk with what that access may do, so that a hit
//!   checks nothing; permissions and PCIDs are folded into the tag salt.
//! - Debugging (`debug`): DR0-DR7 with instruction, data (read/write,
//!   write) and I/O (CR4.DE) breakpoints, single-step (TF) traps, RF,
//!   general detect (DR7.GD), ICEBP, DR4/DR5 aliases, DR6 status bits,
//!   MOV SS / POP SS holding traps for one instruction, SYSCALL/SYSRET
//!   stepping by TF at their end. While TF, RF or a DR7 enable is set the
//!   CPU runs one instruction at a time; otherwise nothing is checked.
//!   A fault pushes RF=1 (all but instruction breakpoints), as the SDM says.
//! - Events: exceptions and interrupts through real-mode IVT, 32-bit and
//!   64-bit IDT gates (interrupt/trap, 16-bit gates), privilege changes with
//!   the TSS stack (RSP0 / IST / SS0:ESP0), #DF by the SDM's table, triple
//!   fault → Shutdown; external interrupts with IF and the STI/MOV SS
//!   shadow; NMI blocking until IRET.
//! - Instructions: the general-purpose integer ISA with exact flags (lazy),
//!   BMI1, BMI2, MOVBE, string instructions with REP (page-chunk fast
//!   paths for REP MOVS/STOS), LOCKed read-modify-writes as host atomics,
//!   system instructions (descriptor tables, CR/DR, MSRs, CPUID, TSC, port
//!   I/O with IOPL and the TSS I/O bitmap, SYSCALL/SYSRET,
//!   SYSENTER/SYSEXIT, SWAPGS, FSGSBASE, XGETBV/XSETBV, LAR/LSL/VERR/VERW,
//!   UMIP, RDTSCP, RDPID, CLFLUSH/CLFLUSHOPT/CLWB checked as one-byte
//!   loads), x87 (computed in f64), FXSAVE/FXRSTOR, MXCSR, SSE/SSE2
//!   (integer, moves, float scalar/packed, conversions), SSE3, SSSE3,
//!   SSE4.1 and SSE4.2 on XMM registers (PCMPxSTRx, CRC32, POPCNT
//!   included). The MMX register file with MOVD/MOVQ and EMMS.
//! - The x86-64-v3 set: XCR0 with x87/SSE/AVX state and XSAVE, XSAVEOPT,
//!   XSAVEC, XRSTOR (standard and compacted forms; the YMM upper halves
//!   live in `FpuState::ymm_hi`); AVX, AVX2, FMA and F16C (`exec::avx`,
//!   every VEX-encoded instruction of those extensions), with the VEX
//!   rules: #UD without CR4.OSXSAVE and XCR0.SSE|AVX or the CPUID feature,
//!   #NM on CR0.TS, VEX.128 zeroing bits 255:128, no alignment except
//!   VMOVAPS/APD/DQA and the non-temporal moves. The 128-bit operations
//!   are pure functions behind one table (`exec::simd::lane_op`) shared by
//!   the legacy SSE forms and the VEX.128/VEX.256 ones.
//! - Anything else raises #UD, counted as `InsnEmulationFail`; random code
//!   never panics the host.
//!
//! # Not implemented
//!
//! Task switches and task gates, call gates, virtual-8086 mode, MMX
//! arithmetic (only its moves are; and so the MMX forms of SSE/SSSE3),
//! MONITOR/MWAIT, AVX-512 and the other extensions after x86-64-v3
//! (AVX-VNNI, VAES, VPCLMULQDQ, GFNI, ...), AES-NI and PCLMULQDQ,
//! XSAVES/XRSTORS and the PKRU state component, the XSAVE modified
//! optimization (XSAVEOPT uses the init optimization only); alignment
//! checks (#AC), bus-lock and RTM debug features, branch trace and LBRs
//! (the CPUID table must not advertise these). A data breakpoint hit in
//! the middle of a REP string instruction traps after the whole
//! instruction, not after the iteration; an interrupt between REP
//! iterations pushes RF=0. PCID, INVPCID, SMEP, SMAP, PKU, PKS, UMIP,
//! RDPID, RDTSCP, BMI2, MOVBE, AVX, AVX2, FMA and F16C are gated on the
//! CPUID table (#GP on the CR4 bit, #UD on the instruction without it).
//! Approximations: x87 computes in double precision; no FP exception
//! flags, #MF or #XM; SSE/AVX arithmetic rounds to nearest whatever
//! MXCSR.RC says (conversions and ROUND* do honour it), without DAZ/FTZ;
//! RCPPS/RSQRTPS return the exact value instead of the hardware's 12-bit
//! approximation. A write by one vCPU through fast write access it cached
//! before the page became code on another vCPU is not seen by that
//! vCPU's block cache ([`smc`]).

pub mod block;
pub mod convert;
pub mod counters;
mod debug;
mod debugger;
pub mod exception;
mod exec;
pub mod flags;
mod jit;
mod mem;
pub mod mmu;
pub mod msr;
mod opbuf;
pub mod smc;
pub mod snapshot;
pub mod state;
mod zeroed;

#[cfg(test)]
mod tests;

/// Builds what the CPU builds on its first use in a process (the
/// instruction decoder's tables, ~300 KiB of small allocations): a process
/// that forks VMs calls it first, so that the processes forked from it
/// share those pages instead of each building its own.
pub fn warm_up() {
    let _ = iced_x86::Decoder::new(64, &[0x90], iced_x86::DecoderOptions::NONE).decode();
    // The JIT's Cranelift target, built once per process.
    let _ = Engine::jit_available();
}

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use hv::{CpuidEntry, ExitCounters, ExitReason};

pub use counters::{BlockDrop, CpuCounters, TlbFlush};
pub use jit::perfmap::open as open_jit_perfmap;
pub use jit::{Compiler as JitCompiler, Engine};
pub use smc::CodeShare;
pub use state::{CpuState, FpuState, Mode, Msrs, SegCache, TableReg};

/// Optional features the CPU implements and gates on what CPUID offers
/// the guest: an instruction or CR4 bit the table does not advertise
/// raises #UD or #GP as on a processor without it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Features {
    pub pcid: bool,
    pub fsgsbase: bool,
    pub smep: bool,
    pub invpcid: bool,
    pub smap: bool,
    pub umip: bool,
    pub pku: bool,
    pub rdpid: bool,
    pub pks: bool,
    pub rdtscp: bool,
    /// TZCNT and ANDN & co. (without BMI1 TZCNT runs as BSF).
    pub bmi1: bool,
    /// LZCNT (without it, BSR).
    pub lzcnt: bool,
    pub bmi2: bool,
    pub movbe: bool,
    pub avx: bool,
    pub avx2: bool,
    pub fma: bool,
    pub f16c: bool,
}

impl Features {
    /// Everything (a CPU that was given no CPUID table).
    pub const ALL: Features = Features {
        pcid: true,
        fsgsbase: true,
        smep: true,
        invpcid: true,
        smap: true,
        umip: true,
        pku: true,
        rdpid: true,
        pks: true,
        rdtscp: true,
        bmi1: true,
        lzcnt: true,
        bmi2: true,
        movbe: true,
        avx: true,
        avx2: true,
        fma: true,
        f16c: true,
    };

    /// The CR4 bits MOV to CR4 accepts.
    pub fn cr4_valid(&self) -> u64 {
        use state::cr4::*;
        let gate = |on: bool, bit: u64| if on { 0 } else { bit };
        SUPPORTED
            & !(gate(self.pcid, PCIDE)
                | gate(self.fsgsbase, FSGSBASE)
                | gate(self.smep, SMEP)
                | gate(self.smap, SMAP)
                | gate(self.umip, UMIP)
                | gate(self.pku, PKE)
                | gate(self.pks, PKS))
    }
}

/// A contiguous run of guest RAM as the host sees it.
#[derive(Debug, Clone, Copy)]
pub struct RamRef {
    /// Host address of the guest-physical address that was asked for.
    pub host: *mut u8,
    /// Number of bytes valid from `host` on (to the end of the RAM run).
    pub len: usize,
}

/// The CPU's view of the machine: guest-physical RAM, MMIO and port I/O.
///
/// # Safety
///
/// A [`RamRef`] returned by [`Bus::ram`] must stay valid for reads (and for
/// writes when `write` was true) of `len` bytes until the accelerator calls
/// [`Cpu::flush_tlb`] (or raises [`CpuSignals::request_flush`] and the CPU
/// has acknowledged it by returning from `run`). The CPU caches these
/// pointers in its TLB. Memory may be written concurrently by other vCPUs.
pub unsafe trait Bus {
    /// Guest-physical RAM lookup. Returns `None` when `gpa` is not RAM (then
    /// the access becomes MMIO), or when `write` is true and the RAM is
    /// read-only. A call with `write == true` means the CPU is about to
    /// write the 4 KiB page containing `gpa` (and may keep writing it
    /// without further calls until the next TLB flush): the accelerator
    /// marks the page dirty here.
    fn ram(&mut self, gpa: u64, write: bool) -> Option<RamRef>;
    fn mmio_read(&mut self, gpa: u64, data: &mut [u8]);
    fn mmio_write(&mut self, gpa: u64, data: &[u8]);
    fn pio_read(&mut self, port: u16, data: &mut [u8]);
    fn pio_write(&mut self, port: u16, data: &[u8]);
    /// RDMSR of an MSR the CPU does not model (x2APIC, TSC deadline...).
    /// `None` raises #GP in the guest.
    fn rdmsr(&mut self, _index: u32) -> Option<u64> {
        None
    }
    /// WRMSR of an MSR the CPU does not model. `false` raises #GP.
    fn wrmsr(&mut self, _index: u32, _value: u64) -> bool {
        false
    }
    /// MOV from CR8: the task priority, which the local APIC holds
    /// (TPR[7:4]). `None`: there is no local APIC behind this bus, and the
    /// CPU keeps CR8 itself.
    fn read_cr8(&mut self) -> Option<u64> {
        None
    }
    /// MOV to CR8 (a value of 0..=15). `false`: no local APIC; the CPU
    /// keeps the value itself.
    fn write_cr8(&mut self, _value: u64) -> bool {
        false
    }
    /// VMCALL or VMMCALL: a hypercall to the accelerator. Returns the value
    /// for RAX, or `None` when the accelerator takes no hypercalls (the
    /// instruction then raises #UD).
    fn hypercall(&mut self, _call: &Hypercall) -> Option<u64> {
        None
    }
}

/// A VMCALL/VMMCALL as the accelerator sees it (KVM's register ABI).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hypercall {
    /// RAX.
    pub nr: u64,
    /// RBX, RCX, RDX, RSI.
    pub args: [u64; 4],
    /// The privilege level it was made at.
    pub cpl: u8,
    /// Made in 64-bit mode (else only the low 32 bits of the registers
    /// count, and of the result).
    pub long_mode: bool,
}

/// Why [`Cpu::run`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CpuExit {
    /// HLT executed; RIP points after it. Call [`Cpu::run`] again after an
    /// interrupt was injected (the CPU stays halted until then).
    Halt,
    /// Triple fault.
    Shutdown,
    /// A kick ([`CpuSignals::kick`]) was seen at a block boundary.
    Interrupted,
    /// The instruction budget given to `run` is used up.
    InstructionLimit,
    /// An interrupt window was requested and the CPU can now take an
    /// external interrupt ([`Cpu::can_inject_interrupt`] is true).
    InterruptWindow,
    /// A PAUSE spin loop has spun long enough that the host CPU is better
    /// given to another vCPU (pause-loop exiting); RIP is after the PAUSE.
    PauseLoop,
    /// The VMM's debugger asked for this stop ([`Cpu::set_guest_debug`]).
    Debug(hv::DebugCause),
}

/// Requests other threads make to a running CPU, polled at block boundaries.
#[derive(Debug, Default)]
pub struct CpuSignals {
    bits: AtomicU32,
    /// The [`TlbFlush`] causes of the flushes asked for, as a mask.
    flush_causes: AtomicU32,
}

impl CpuSignals {
    const KICK: u32 = 1;
    const FLUSH: u32 = 2;
    /// Another CPU (or a device) wrote code or made a page code: the run
    /// loop catches up with the CPU's `CodeShare` (it does on every pass;
    /// the bit only ends a chain of compiled blocks, `jit::chain_emit`).
    const CODE: u32 = 4;
    /// Compiled code is ready (`jit_ready`).
    const JIT: u32 = 8;

    /// Where the pending bits live (compiled code reads them: nonzero is
    /// `pending`).
    pub(crate) fn bits_ptr(&self) -> *const AtomicU32 {
        &self.bits
    }

    /// Makes a running (or the next) `run` return [`CpuExit::Interrupted`].
    pub fn kick(&self) {
        self.bits.fetch_or(Self::KICK, Ordering::Release);
    }

    /// Asks the CPU to drop its TLB and decoded blocks at the next block
    /// boundary, or when the accelerator calls [`Cpu::flush_if_requested`]
    /// (memory map changed, dirty log re-armed), counted as `cause`.
    pub fn request_flush(&self, cause: TlbFlush) {
        self.flush_causes.fetch_or(cause.bit(), Ordering::Release);
        self.bits.fetch_or(Self::FLUSH, Ordering::Release);
    }

    /// Sets the code bit (`CodeShare`, after an epoch bump).
    pub(crate) fn code_changed(&self) {
        self.bits.fetch_or(Self::CODE, Ordering::Release);
    }

    /// Compiled code waits in the CPU's inbox (`jit::worker`): the bit
    /// only ends a chain of compiled blocks; the run loop installs it.
    pub(crate) fn jit_ready(&self) {
        self.bits.fetch_or(Self::JIT, Ordering::Release);
    }

    /// The causes of a pending flush (taking it), or None.
    fn take_flush(&self) -> Option<u32> {
        if self.bits.fetch_and(!Self::FLUSH, Ordering::AcqRel) & Self::FLUSH == 0 {
            return None;
        }
        Some(self.flush_causes.swap(0, Ordering::AcqRel))
    }

    #[inline]
    fn pending(&self) -> bool {
        self.bits.load(Ordering::Relaxed) != 0
    }

    fn take(&self) -> u32 {
        self.bits.swap(0, Ordering::Acquire)
    }

    /// The causes of a flush `take` returned.
    fn take_causes(&self) -> u32 {
        self.flush_causes.swap(0, Ordering::AcqRel)
    }
}

/// Errors of the state accessors.
#[derive(Debug, thiserror::Error)]
pub enum CpuError {
    #[error("unknown MSR {0:#x}")]
    UnknownMsr(u32),
    #[error("invalid value {1:#x} for MSR {0:#x}")]
    InvalidMsrValue(u32, u64),
    #[error("interrupts cannot be injected now (IF=0 or interrupt shadow)")]
    InterruptBlocked,
}

/// One x86-64 logical processor.
pub struct Cpu {
    /// Architectural state. After changing control registers, EFER or
    /// segment caches directly, call [`Cpu::state_changed`].
    pub state: CpuState,
    pub(crate) tlb: mmu::Tlb,
    pub(crate) blocks: block::BlockCache,
    pub(crate) cpuid: Vec<CpuidEntry>,
    pub(crate) counters: Arc<ExitCounters>,
    /// TLB and block-cache counters (shared with `tlb` and `blocks`).
    pub(crate) cache_counters: Arc<CpuCounters>,
    pub(crate) signals: Arc<CpuSignals>,
    /// Retired instructions since creation.
    pub(crate) icount: u64,
    /// An interrupt shadow (STI, MOV SS) is active while `icount` equals this.
    pub(crate) shadow_icount: u64,
    /// End the current block after this instruction (mode, CR, code change).
    pub(crate) block_exit: bool,
    /// An exit an instruction asked for (HLT, triple fault).
    pub(crate) pending_exit: Option<CpuExit>,
    pub(crate) want_interrupt_window: bool,
    /// Return [`CpuExit::InterruptWindow`] once an NMI can be delivered.
    pub(crate) want_nmi_window: bool,
    /// The PAUSE spin loop being watched (pause-loop exiting).
    pub(crate) ple: exec::PauseLoop,
    /// Physical address width (from CPUID 0x80000008, default 40).
    pub(crate) phys_bits: u32,
    /// Guest instructions that raised #UD because they are not implemented.
    pub(crate) unimplemented: u64,
    /// TSC frequency the guest sees.
    pub(crate) tsc_hz: u64,
    /// CPUID-derived: the optional features the guest was offered.
    pub(crate) feat: Features,
    /// CPUID-derived: the XCR0 bits XSETBV accepts (leaf 0xD.0 EAX).
    pub(crate) xcr0_supported: u64,
    /// Breakpoint and single-step bookkeeping.
    pub(crate) dbg: debug::DebugState,
    /// The VMM debugger's breakpoints and single-step (see `debugger`).
    pub(crate) debugger: debugger::DebuggerState,
    /// The TLB data bank of explicit accesses by the running block (set
    /// as each block starts; see `Exec::data_bank`).
    pub(crate) dbank: usize,
    /// The host address of that bank's first TLB entry (set as compiled
    /// code is entered): where its inline lookups index.
    pub(crate) dtlb: u64,
    /// Code pages shared with the other CPUs of the VM.
    pub(crate) code_share: Arc<CodeShare>,
    pub(crate) seen_code_epoch: u64,
    pub(crate) seen_revoke: u64,
    /// Interpreter only, or hot blocks compiled (see [`Engine`]).
    pub(crate) engine: Engine,
    /// Whole runs of a block before the JIT compiles it.
    pub(crate) jit_hot: u32,
    /// Blocks a compiled chain runs at most (`jit::chain::max`).
    pub(crate) jit_chain: u32,
    /// Blocks in one compiled region at most (`jit::region`).
    pub(crate) jit_region: usize,
    /// The VM's compiler thread (None: blocks compile on this thread).
    pub(crate) jit_compiler: Option<Arc<jit::Compiler>>,
    /// Where the compiler thread returns this CPU's units.
    pub(crate) jit_inbox: Arc<jit::worker::Inbox>,
    /// Units out at the compiler thread, by job number.
    pub(crate) jit_pending: std::collections::HashMap<u64, jit::Pending>,
    pub(crate) jit_next_job: u64,
}

impl Default for Cpu {
    fn default() -> Self {
        Self::new(Arc::new(ExitCounters::default()))
    }
}

impl Cpu {
    /// A CPU in the RESET state, counting exits into `counters`.
    pub fn new(counters: Arc<ExitCounters>) -> Cpu {
        Cpu::with_signals(counters, Arc::default())
    }

    /// A CPU in the RESET state whose kicks and flush requests arrive
    /// through `signals` (shared with the accelerator before the CPU exists).
    pub fn with_signals(counters: Arc<ExitCounters>, signals: Arc<CpuSignals>) -> Cpu {
        let cache_counters = Arc::new(CpuCounters::default());
        Cpu {
            state: CpuState::default(),
            tlb: mmu::Tlb::with_counters(cache_counters.clone()),
            blocks: block::BlockCache::with_counters(cache_counters.clone()),
            cache_counters,
            cpuid: Vec::new(),
            counters,
            jit_inbox: Arc::new(jit::worker::Inbox::new(signals.clone())),
            signals,
            icount: 0,
            shadow_icount: u64::MAX,
            block_exit: false,
            pending_exit: None,
            want_interrupt_window: false,
            want_nmi_window: false,
            ple: Default::default(),
            phys_bits: 40,
            unimplemented: 0,
            tsc_hz: 1_000_000_000,
            feat: Features::ALL,
            dbg: Default::default(),
            debugger: Default::default(),
            dbank: 0,
            dtlb: 0,
            xcr0_supported: state::xcr0::SUPPORTED,
            code_share: Arc::new(CodeShare::new()),
            seen_code_epoch: 0,
            seen_revoke: 0,
            engine: Engine::from_env(),
            jit_hot: jit::hot(),
            jit_chain: jit::chain::max(),
            jit_region: jit::region::max(),
            jit_compiler: None,
            jit_pending: Default::default(),
            jit_next_job: 0,
        }
    }

    /// Compiles hot blocks on `compiler`'s thread (shared by the VM's
    /// CPUs) while this one interprets them, instead of on its own.
    pub fn set_jit_compiler(&mut self, compiler: Arc<jit::Compiler>) {
        self.jit_compiler = Some(compiler);
    }

    /// Units out at the compiler thread.
    #[cfg(test)]
    pub(crate) fn jit_jobs_out(&self) -> usize {
        self.jit_pending.len()
    }

    /// Waits until the compiler thread has returned code (at most
    /// `limit`); the next `run` installs it.
    #[cfg(test)]
    pub(crate) fn jit_wait_ready(&self, limit: std::time::Duration) -> bool {
        let end = std::time::Instant::now() + limit;
        while !self.jit_inbox.ready() {
            if std::time::Instant::now() > end {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        true
    }

    /// The engine that runs this CPU's guest code.
    pub fn engine(&self) -> Engine {
        self.engine
    }

    /// Chooses the engine (the default comes from `FERROVISOR_EMU_ENGINE`).
    /// The JIT falls back to the interpreter on hosts Cranelift does not
    /// support.
    pub fn set_engine(&mut self, engine: Engine) {
        self.engine = match engine {
            Engine::Jit if !Engine::jit_available() => Engine::Interp,
            e => e,
        };
    }

    /// Makes this CPU track self-modifying code together with the other
    /// CPUs of its VM: give every vCPU of a VM the same [`CodeShare`]. A CPU
    /// that is not given one tracks only its own writes.
    pub fn set_code_share(&mut self, share: Arc<CodeShare>) {
        share.watch(&self.signals);
        self.seen_code_epoch = share.epoch();
        self.seen_revoke = share.revoke_epoch();
        self.code_share = share;
        self.flush_tlb(TlbFlush::Other);
    }

    /// Drops the decoded blocks (not the TLB).
    pub fn flush_code(&mut self) {
        self.blocks.clear();
        // Outside `run`: no block is executing.
        self.blocks.collect_garbage();
        self.block_exit = true;
    }

    /// The handle other threads use to kick this CPU or request flushes.
    pub fn signals(&self) -> Arc<CpuSignals> {
        self.signals.clone()
    }

    pub fn counters(&self) -> &Arc<ExitCounters> {
        &self.counters
    }

    /// The TLB and block-cache counters, readable from any thread.
    pub fn cache_counters(&self) -> &Arc<CpuCounters> {
        &self.cache_counters
    }

    /// Sets the byte budget of the decoded-block cache (default
    /// [`block::CODE_CACHE_BYTES`]).
    pub fn set_code_cache_budget(&mut self, bytes: usize) {
        self.blocks.set_budget(bytes);
        // Outside `run`: no block is executing.
        self.blocks.collect_garbage();
    }

    /// Instructions retired since creation.
    pub fn instructions_retired(&self) -> u64 {
        self.icount
    }

    /// Guest instructions that raised #UD because this CPU lacks them.
    pub fn unimplemented_count(&self) -> u64 {
        self.unimplemented
    }

    /// Puts the CPU back into the RESET state (real mode at F000:FFF0),
    /// keeping its CPUID table, counters, signals and TSC frequency, and
    /// dropping cached translations and blocks. MSRs are reset as well
    /// (see [`Cpu::init`] for INIT).
    pub fn reset(&mut self) {
        self.state = CpuState::default();
        self.shadow_icount = u64::MAX;
        self.pending_exit = None;
        self.dbg = Default::default();
        self.flush_tlb(TlbFlush::StateSet);
        self.block_exit = true;
    }

    /// The INIT signal (SDM 9.1, table 9-1): the processor goes back to its
    /// RESET state in real mode, but keeps its MSRs (the TSC runs on), the
    /// x87/SSE/AVX register file (YMM upper halves included), MXCSR and
    /// XCR0. It then waits for a SIPI ([`Cpu::start_up`]) or runs from the
    /// reset vector, as the accelerator's MP state says.
    pub fn init(&mut self) {
        let msr = std::mem::take(&mut self.state.msr);
        let fpu = self.state.fpu;
        let xcr0 = self.state.xcr0;
        self.reset();
        self.state.msr = msr;
        self.state.fpu = fpu;
        self.state.xcr0 = xcr0;
    }

    /// A start-up IPI with `vector`: the processor starts in real mode at
    /// `vector << 12` (CS = `vector << 8`, IP = 0).
    pub fn start_up(&mut self, vector: u8) {
        let cs = &mut self.state.seg[state::CS];
        cs.selector = u16::from(vector) << 8;
        cs.base = u64::from(vector) << 12;
        self.state.rip = 0;
        self.state.halted = false;
        self.state_changed();
    }

    /// Block-cache statistics: blocks decoded, blocks invalidated by writes
    /// to their page, blocks currently cached.
    pub fn block_stats(&self) -> (u64, u64, usize) {
        (
            self.blocks.decoded,
            self.blocks.invalidated,
            self.blocks.len(),
        )
    }

    /// Sets the CPUID table (leaves as the accelerator presents them).
    pub fn set_cpuid(&mut self, entries: &[CpuidEntry]) {
        self.cpuid = entries.to_vec();
        self.phys_bits = self
            .cpuid
            .iter()
            .find(|e| e.function == 0x8000_0008)
            .map(|e| (e.eax & 0xff).clamp(32, 52))
            .unwrap_or(40);
        let leaf = |f: u32, i: u32| {
            self.cpuid
                .iter()
                .find(|e| e.function == f && (!e.significant_index || e.index == i))
                .copied()
        };
        let l1 = leaf(1, 0).unwrap_or_default();
        let l7 = leaf(7, 0).unwrap_or_default();
        let ext = leaf(0x8000_0001, 0).unwrap_or_default();
        self.feat = Features {
            pcid: l1.ecx & (1 << 17) != 0,
            fsgsbase: l7.ebx & (1 << 0) != 0,
            smep: l7.ebx & (1 << 7) != 0,
            invpcid: l7.ebx & (1 << 10) != 0,
            smap: l7.ebx & (1 << 20) != 0,
            umip: l7.ecx & (1 << 2) != 0,
            pku: l7.ecx & (1 << 3) != 0,
            rdpid: l7.ecx & (1 << 22) != 0,
            pks: l7.ecx & (1 << 31) != 0,
            rdtscp: ext.edx & (1 << 27) != 0,
            bmi1: l7.ebx & (1 << 3) != 0,
            bmi2: l7.ebx & (1 << 8) != 0,
            avx2: l7.ebx & (1 << 5) != 0,
            lzcnt: ext.ecx & (1 << 5) != 0,
            movbe: l1.ecx & (1 << 22) != 0,
            avx: l1.ecx & (1 << 28) != 0,
            fma: l1.ecx & (1 << 12) != 0,
            f16c: l1.ecx & (1 << 29) != 0,
        };
        // x87 state is always there; the rest only as leaf 0xD reports it.
        self.xcr0_supported =
            state::xcr0::X87 | leaf(0xd, 0).map_or(0, |e| e.eax as u64 & state::xcr0::SUPPORTED);
    }

    pub(crate) fn has_feature_bmi1(&self) -> bool {
        self.feat.bmi1
    }

    pub(crate) fn has_feature_lzcnt(&self) -> bool {
        self.feat.lzcnt
    }

    pub(crate) fn has_feature_bmi2(&self) -> bool {
        self.feat.bmi2
    }

    pub(crate) fn has_feature_movbe(&self) -> bool {
        self.feat.movbe
    }

    pub fn cpuid_entries(&self) -> &[CpuidEntry] {
        &self.cpuid
    }

    /// Drops every cached translation and decoded block (counted as
    /// `cause`). Required after the memory map changed or dirty logging
    /// was re-armed.
    pub fn flush_tlb(&mut self, cause: TlbFlush) {
        self.tlb.flush_all(cause);
        self.blocks.clear();
        // Outside `run`: no block is executing.
        self.blocks.collect_garbage();
    }

    /// Performs the flush asked for through [`CpuSignals::request_flush`]
    /// unless `run` already did; returns whether it flushed.
    pub fn flush_if_requested(&mut self) -> bool {
        match self.signals.take_flush() {
            Some(causes) => {
                self.flush_for(causes);
                // Outside `run`: no block is executing.
                self.blocks.collect_garbage();
                true
            }
            None => false,
        }
    }

    /// Drops every translation and block for the causes in mask `causes`.
    pub(crate) fn flush_for(&mut self, causes: u32) {
        let mut first = None;
        for cause in TlbFlush::ALL.into_iter().filter(|c| causes & c.bit() != 0) {
            match first {
                None => first = Some(cause),
                Some(_) => self.cache_counters.flush(cause),
            }
        }
        self.tlb.flush_all(first.unwrap_or(TlbFlush::Other));
        self.blocks.clear();
    }

    /// Recomputes derived state after `state` was changed from outside.
    pub fn state_changed(&mut self) {
        self.state.update_mode();
        self.debug_regs_changed();
        self.tlb.flush_all(TlbFlush::StateSet);
        self.block_exit = true;
    }

    /// Asks `run` to return [`CpuExit::InterruptWindow`] as soon as an
    /// external interrupt can be injected.
    pub fn request_interrupt_window(&mut self, on: bool) {
        self.want_interrupt_window = on;
    }

    /// Asks `run` to return [`CpuExit::InterruptWindow`] as soon as an NMI
    /// can be delivered ([`Cpu::can_inject_nmi`]).
    pub fn request_nmi_window(&mut self, on: bool) {
        self.want_nmi_window = on;
    }

    /// Whether an NMI can be taken now: NMIs not blocked (by an NMI
    /// handler that has not executed IRET) and no interrupt shadow (STI /
    /// MOV SS block NMIs too, as VMX's interruptibility state does).
    pub fn can_inject_nmi(&self) -> bool {
        !self.state.nmi_blocked && self.shadow_icount != self.icount
    }

    /// Whether an external interrupt can be taken now: IF=1 and no
    /// interrupt shadow (STI / MOV SS).
    pub fn can_inject_interrupt(&self) -> bool {
        self.state.if_set() && self.shadow_icount != self.icount
    }

    /// Whether the CPU is halted (HLT executed, no interrupt since).
    pub fn is_halted(&self) -> bool {
        self.state.halted
    }

    /// Delivers external interrupt `vector` through the IDT now. Wakes the
    /// CPU from HLT. Call only at a `run` boundary when
    /// [`Cpu::can_inject_interrupt`] is true. A fault while delivering it
    /// is handled as the hardware does (#DF, or triple fault → the next
    /// `run` returns Shutdown).
    pub fn inject_external_interrupt(
        &mut self,
        bus: &mut dyn Bus,
        vector: u8,
    ) -> Result<(), CpuError> {
        if !self.can_inject_interrupt() {
            return Err(CpuError::InterruptBlocked);
        }
        self.state.halted = false;
        self.counters.inc(ExitReason::IrqInjection);
        tracepoints::kvm_inj_virq(vector.into(), false, false);
        let mut ex = exec::Exec::new(self, bus);
        ex.deliver_event(vector, None, exception::EventKind::External);
        Ok(())
    }

    /// Delivers an NMI (vector 2) unless NMIs are blocked or an interrupt
    /// shadow is active (then it returns `false` and the caller keeps it
    /// pending; see [`Cpu::request_nmi_window`]).
    pub fn inject_nmi(&mut self, bus: &mut dyn Bus) -> bool {
        if !self.can_inject_nmi() {
            return false;
        }
        self.state.halted = false;
        self.counters.inc(ExitReason::IrqInjection);
        let mut ex = exec::Exec::new(self, bus);
        ex.deliver_event(2, None, exception::EventKind::Nmi);
        self.state.nmi_blocked = true;
        true
    }

    /// Runs guest code until an exit. At most `max_instructions` are
    /// retired (u64::MAX for no limit).
    pub fn run(&mut self, bus: &mut dyn Bus, max_instructions: u64) -> CpuExit {
        let i0 = self.icount;
        let exit = exec::Exec::new(self, bus).run(max_instructions);
        let n = self.icount.wrapping_sub(i0);
        self.cache_counters.instructions.add(n);
        exit
    }
}
