//! Tests: tiny guests assembled with iced-x86's CodeAssembler, run on a
//! RAM-only test bus.

mod alu;
mod avx;
mod counters;
mod debug;
mod debugger;
mod fuzz;
mod jit;
mod jit_alu_mem;
mod jit_async;
mod jit_chain;
mod jit_exit;
mod jit_ext;
mod jit_narrow;
mod jit_regcache;
mod jit_region;
mod jit_simd;
mod mmx;
mod modes;
mod paging;
mod perf;
mod protect;
mod simd;
mod sse;
mod system;
mod xsave;

#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod avx_diff;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod diff_bmi;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod differential;
#[cfg(all(target_arch = "x86_64", target_os = "linux"))]
mod simd_diff;

use iced_x86::code_asm::CodeAssembler;

use crate::state::{cr0, cr4, efer, SegCache, TableReg, CS, DS, ES, FS, GS, SS};
use crate::{Bus, Cpu, CpuExit, RamRef};

pub const RAM_SIZE: usize = 16 << 20;
/// Most MMIO / port accesses a TestBus records.
const LOG_CAP: usize = 4096;
pub const GDT: u64 = 0x500;
pub const PML4: u64 = 0x1000;
pub const IDT: u64 = 0x8000;
pub const TSS: u64 = 0x9000;
pub const PT: u64 = 0xa000;
pub const STACK_TOP: u64 = 0x80000;
pub const CODE: u64 = 0x10_0000;
pub const HANDLERS: u64 = 0x20_0000;
pub const DATA: u64 = 0x30_0000;

pub const GDT_ENTRIES: [u64; 6] = [
    0,
    0x00cf_9b00_0000_ffff, // 0x08 32-bit code
    0x00af_9b00_0000_ffff, // 0x10 64-bit code
    0x00cf_9300_0000_ffff, // 0x18 data
    0x00cf_f300_0000_ffff, // 0x20 user data (0x23)
    0x00af_fb00_0000_ffff, // 0x28 user 64-bit code (0x2b)
];

/// A CPUID table with every optional feature the CPU gates on CPUID
/// (PCID, FSGSBASE, SMEP, INVPCID, SMAP, UMIP, PKU, RDPID, PKS, RDTSCP),
/// plus BMI1 and LZCNT.
pub fn feature_cpuid() -> Vec<hv::CpuidEntry> {
    let leaf = |function, ebx, ecx, edx| hv::CpuidEntry {
        function,
        index: 0,
        significant_index: function == 7,
        eax: 0,
        ebx,
        ecx,
        edx,
    };
    vec![
        leaf(0, 0, 0, 0),
        leaf(1, 0, 1 << 17, 0),
        leaf(
            7,
            1 | 1 << 3 | 1 << 7 | 1 << 10 | 1 << 20,
            1 << 2 | 1 << 3 | 1 << 22 | 1 << 31,
            0,
        ),
        leaf(0x8000_0001, 0, 1 << 5, 1 << 27 | 1 << 29),
    ]
}

/// A RAM-only bus that records MMIO and port accesses.
pub struct TestBus {
    ram: Vec<u64>,
    pub mmio: Vec<(u64, Vec<u8>, bool)>,
    pub pio: Vec<(u16, Vec<u8>, bool)>,
    /// Value returned by port reads (little-endian bytes).
    pub pio_value: u32,
    /// Value returned by MMIO reads.
    pub mmio_value: u64,
    pub writes_requested: usize,
}

impl TestBus {
    pub fn new() -> TestBus {
        TestBus {
            ram: vec![0; RAM_SIZE / 8],
            mmio: Vec::new(),
            pio: Vec::new(),
            pio_value: 0,
            mmio_value: 0,
            writes_requested: 0,
        }
    }

    pub fn bytes(&self) -> &[u8] {
        as_bytes(&self.ram)
    }

    pub fn load(&mut self, gpa: u64, data: &[u8]) {
        let b = bytes_mut(&mut self.ram);
        b[gpa as usize..gpa as usize + data.len()].copy_from_slice(data);
    }

    pub fn write_u64(&mut self, gpa: u64, v: u64) {
        self.load(gpa, &v.to_le_bytes());
    }

    pub fn read_u64(&self, gpa: u64) -> u64 {
        let b = self.bytes();
        u64::from_le_bytes(b[gpa as usize..gpa as usize + 8].try_into().unwrap())
    }

    pub fn read_u8(&self, gpa: u64) -> u8 {
        self.bytes()[gpa as usize]
    }
}

fn as_bytes(v: &[u64]) -> &[u8] {
    let ptr = v.as_ptr() as *const u8;
    let len = v.len() * 8;
    // SAFETY: u8 has no alignment or validity requirements; the slice
    // covers exactly the initialised storage of `v`.
    unsafe { std::slice::from_raw_parts(ptr, len) }
}

fn bytes_mut(v: &mut [u64]) -> &mut [u8] {
    let ptr = v.as_mut_ptr() as *mut u8;
    let len = v.len() * 8;
    // SAFETY: as in as_bytes, with exclusive access through &mut.
    unsafe { std::slice::from_raw_parts_mut(ptr, len) }
}

// SAFETY: the RAM Vec is never resized, so pointers into it stay valid for
// the bus's lifetime, which outlives every run of the CPU in the tests.
unsafe impl Bus for TestBus {
    fn ram(&mut self, gpa: u64, write: bool) -> Option<RamRef> {
        if gpa as usize >= RAM_SIZE {
            return None;
        }
        if write {
            self.writes_requested += 1;
        }
        let b = bytes_mut(&mut self.ram);
        Some(RamRef {
            host: b[gpa as usize..].as_mut_ptr(),
            len: RAM_SIZE - gpa as usize,
        })
    }
    fn mmio_read(&mut self, gpa: u64, data: &mut [u8]) {
        let v = self.mmio_value.to_le_bytes();
        data.copy_from_slice(&v[..data.len()]);
        if self.mmio.len() < LOG_CAP {
            self.mmio.push((gpa, data.to_vec(), false));
        }
    }
    fn mmio_write(&mut self, gpa: u64, data: &[u8]) {
        if self.mmio.len() < LOG_CAP {
            self.mmio.push((gpa, data.to_vec(), true));
        }
    }
    fn pio_read(&mut self, port: u16, data: &mut [u8]) {
        let v = self.pio_value.to_le_bytes();
        data.copy_from_slice(&v[..data.len()]);
        if self.pio.len() < LOG_CAP {
            self.pio.push((port, data.to_vec(), false));
        }
    }
    fn pio_write(&mut self, port: u16, data: &[u8]) {
        if self.pio.len() < LOG_CAP {
            self.pio.push((port, data.to_vec(), true));
        }
    }
}

/// A CPU plus its test bus.
pub struct Guest {
    pub cpu: Cpu,
    pub bus: TestBus,
}

pub fn tss_descriptor(base: u64, limit: u32) -> (u64, u64) {
    let lo = (limit as u64 & 0xffff)
        | ((base & 0xff_ffff) << 16)
        | (0x89u64 << 40)
        | (((limit as u64 >> 16) & 0xf) << 48)
        | (((base >> 24) & 0xff) << 56);
    (lo, base >> 32)
}

/// Writes the GDT (with a 64-bit TSS at 0x30), the TSS and identity-mapping
/// 4-level page tables (4 GiB in 2 MiB pages). Returns the TSS descriptor's
/// low half.
pub fn setup_tables(bus: &mut TestBus) -> u64 {
    for (i, d) in GDT_ENTRIES.iter().enumerate() {
        bus.write_u64(GDT + i as u64 * 8, *d);
    }
    let (lo, hi) = tss_descriptor(TSS, 0x67);
    bus.write_u64(GDT + 0x30, lo);
    bus.write_u64(GDT + 0x38, hi);
    // RSP0 and IST1 in the TSS.
    bus.write_u64(TSS + 4, 0x7_0000);
    bus.write_u64(TSS + 0x24, 0x6_0000);
    bus.load(TSS + 0x66, &0x68u16.to_le_bytes());
    // Page tables: PML4 → PDPT → 4 PDs of 2 MiB pages.
    bus.write_u64(PML4, (PML4 + 0x1000) | 7);
    for i in 0..4u64 {
        let pd = PML4 + 0x2000 + i * 0x1000;
        bus.write_u64(PML4 + 0x1000 + i * 8, pd | 7);
        for j in 0..512u64 {
            bus.write_u64(pd + j * 8, ((i << 30) | (j << 21)) | 0x87);
        }
    }
    lo
}

/// Whether the JIT runs on this host; says so when a test is skipped.
pub fn jit_or_skip() -> bool {
    if !crate::Engine::jit_available() {
        eprintln!("no JIT on this host: skipped");
    }
    crate::Engine::jit_available()
}

/// The JIT ran compiled code in `j`, and left registers, RIP, RFLAGS,
/// CR2 and the retired count as the interpreter did in `i`.
pub fn assert_same_cpu_state(i: &Guest, j: &Guest) {
    assert!(j.cpu.cache_counters().jit_blocks_compiled.get() >= 1);
    assert!(j.cpu.cache_counters().jit_block_runs.get() >= 1);
    assert_eq!(j.cpu.state.gpr, i.cpu.state.gpr);
    assert_eq!(j.cpu.state.rip, i.cpu.state.rip);
    assert_eq!(j.cpu.state.rflags(), i.cpu.state.rflags());
    assert_eq!(j.cpu.state.cr2, i.cpu.state.cr2);
    assert_eq!(j.cpu.instructions_retired(), i.cpu.instructions_retired());
}

/// Assembles 64-bit code at `ip`.
pub fn asm64(
    ip: u64,
    f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>,
) -> Vec<u8> {
    asm(64, ip, f)
}

pub fn asm(
    bits: u32,
    ip: u64,
    f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>,
) -> Vec<u8> {
    let mut a = CodeAssembler::new(bits).unwrap();
    f(&mut a).unwrap();
    a.assemble(ip).unwrap()
}

thread_local! {
    /// The engine the CPUs of this test thread's guests run on.
    static ENGINE: std::cell::Cell<crate::Engine> = const { std::cell::Cell::new(crate::Engine::Interp) };
}

/// Runs `f` on the interpreter, then again on the JIT with every block
/// compiled the first time it runs whole (the tests' guests mostly run
/// each block once).
pub fn on_both_engines(f: impl Fn()) {
    for e in [crate::Engine::Interp, crate::Engine::Jit] {
        if e == crate::Engine::Jit && !crate::Engine::jit_available() {
            eprintln!("no JIT on this host: interpreter only");
            continue;
        }
        eprintln!("engine {e:?}");
        ENGINE.set(e);
        f();
    }
    ENGINE.set(crate::Engine::Interp);
}

/// A CPU in the RESET state on this test thread's engine.
pub fn test_cpu() -> Cpu {
    let mut cpu = Cpu::default();
    cpu.set_engine(ENGINE.get());
    cpu.jit_hot = 1;
    cpu
}

impl Guest {
    /// Long mode as the bare-ELF test guests enter it: paging on with an
    /// identity map of the low 4 GiB in 2 MiB pages, flat GDT, CS=0x10,
    /// DS/SS=0x18, an IDT at IDT (all gates not present) and a TSS.
    pub fn long64() -> Guest {
        let mut bus = TestBus::new();
        let lo = setup_tables(&mut bus);
        for (i, d) in GDT_ENTRIES.iter().enumerate() {
            bus.write_u64(GDT + i as u64 * 8, *d);
        }
        let mut cpu = test_cpu();
        let s = &mut cpu.state;
        s.cr0 = cr0::PE | cr0::MP | cr0::ET | cr0::NE | cr0::WP | cr0::PG;
        s.cr4 = cr4::PAE | cr4::OSFXSR | cr4::OSXMMEXCPT;
        s.cr3 = PML4;
        s.efer = efer::SCE | efer::LME | efer::LMA | efer::NXE;
        s.seg[CS] = SegCache::from_descriptor(0x10, GDT_ENTRIES[2]);
        for r in [DS, ES, SS, FS, GS] {
            s.seg[r] = SegCache::from_descriptor(0x18, GDT_ENTRIES[3]);
        }
        let mut tr = SegCache::from_descriptor(0x30, lo);
        tr.attr |= 2;
        s.tr = tr;
        s.gdtr = TableReg {
            base: GDT,
            limit: 0x3f,
        };
        s.idtr = TableReg {
            base: IDT,
            limit: 0xfff,
        };
        s.gpr[4] = STACK_TOP;
        s.rip = CODE;
        s.set_rflags(0x2);
        cpu.state_changed();
        Guest { cpu, bus }
    }

    /// Sets a 64-bit interrupt gate.
    pub fn gate64(&mut self, vector: u8, handler: u64, ist: u8, dpl: u8, trap: bool) {
        let typ: u64 = if trap { 0xf } else { 0xe };
        let lo = (handler & 0xffff)
            | (0x10u64 << 16)
            | ((ist as u64 & 7) << 32)
            | (typ << 40)
            | ((dpl as u64 & 3) << 45)
            | (1u64 << 47)
            | (((handler >> 16) & 0xffff) << 48);
        let a = IDT + vector as u64 * 16;
        self.bus.write_u64(a, lo);
        self.bus.write_u64(a + 8, handler >> 32);
    }

    /// Loads 64-bit code at CODE.
    pub fn code(&mut self, f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>) {
        let b = asm64(CODE, f);
        self.bus.load(CODE, &b);
    }

    /// Loads 64-bit code at `addr`.
    pub fn code_at(
        &mut self,
        addr: u64,
        f: impl FnOnce(&mut CodeAssembler) -> Result<(), iced_x86::IcedError>,
    ) {
        let b = asm64(addr, f);
        self.bus.load(addr, &b);
    }

    pub fn run(&mut self) -> CpuExit {
        self.cpu.run(&mut self.bus, 10_000_000)
    }

    pub fn reg(&self, i: usize) -> u64 {
        self.cpu.state.gpr[i]
    }

    /// Runs and expects HLT; returns RFLAGS.
    pub fn run_to_hlt(&mut self) -> u64 {
        let e = self.run();
        assert_eq!(e, CpuExit::Halt, "rip={:#x}", self.cpu.state.rip);
        self.cpu.state.rflags()
    }
}
