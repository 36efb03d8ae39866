//! The CPU fuzz harness: random bytes become guest code, run by the `x86`
//! CPU in one of its modes against a RAM-only bus with a bounded
//! instruction budget. Whatever the bytes, the host must not panic (guest
//! faults become exceptions, delivered through an IDT whose every vector
//! leads to a HLT).
//!
//! Input layout: byte 0 selects the mode, bytes 1..17 seed the sixteen
//! general-purpose registers (and byte 1 also RFLAGS), the rest is code.
//!
//! The other targets' harnesses are the modules below, one for each
//! parser the outside world feeds (`fuzz_targets/<name>.rs` calls
//! `<name>::run`).

pub mod api_http;
pub mod cli_options;
pub mod config_file;
pub mod input;
pub mod kernel_loaders;
pub mod mmds_request;
pub mod pci_config;
pub mod qcow2_image;
mod qemu;

// `ferrovisor run`'s option parsers, compiled from the binary's sources at
// the crate root, where they find each other as they do in the binary.
#[allow(dead_code)]
#[path = "../../crates/ferrovisor/src/disk.rs"]
mod disk;
#[allow(dead_code)]
#[path = "../../crates/ferrovisor/src/limits.rs"]
mod limits;
#[allow(dead_code)]
#[path = "../../crates/ferrovisor/src/net.rs"]
mod net;
#[allow(dead_code)]
#[path = "../../crates/ferrovisor/src/size.rs"]
mod size;
#[allow(dead_code)]
#[path = "../../crates/ferrovisor/src/vsock.rs"]
mod vsock;

use hv::CpuidEntry;
use x86::state::{cr0, cr4, efer, rflags, SegCache, TableReg, CS, DS, ES, FS, GS, SS};
use x86::{Bus, Cpu, CpuExit, RamRef};

/// Guest RAM; everything above is MMIO that reads as all ones.
pub const RAM_SIZE: usize = 4 << 20;
const GDT: u64 = 0x500;
const PML4: u64 = 0x1000;
const PD32: u64 = 0x4000;
const PDPT_PAE: u64 = 0x5000;
const PD_PAE: u64 = 0x10000;
const IDT: u64 = 0x8000;
const TSS: u64 = 0x9000;
/// Code of every mode (real mode: 2000:0000).
const CODE: u64 = 0x20000;
/// Every exception and interrupt handler: a HLT (0xF4 in every mode).
const HANDLER: u64 = 0x30000;
const USER_STACK: u64 = 0x70000;
const STACK: u64 = 0x80000;
const DATA: u64 = 0x10_0000;
/// Instructions per input.
const BUDGET: u64 = 4_000;
/// Blocks the `jit` target compiles per input at most (see `run_cpu_on`).
const JIT_COMPILES: u64 = 8;

/// Opcode and prefix bytes worth mixing into random inputs.
pub const COMMON_BYTES: [u8; 30] = [
    0x0f, 0x48, 0x66, 0x67, 0xf3, 0xf2, 0xf0, 0x89, 0x8b, 0x01, 0x29, 0x31, 0xc7, 0xff, 0xf7, 0xd3,
    0xc1, 0xa4, 0xab, 0xe8, 0xeb, 0x74, 0x38, 0xdd, 0xd9, 0x9c, 0x9d, 0xcf, 0xc4, 0xc5,
];

const GDT_ENTRIES: [u64; 11] = [
    0,
    0x00cf_9b00_0000_ffff, // 0x08 32-bit code
    0x00af_9b00_0000_ffff, // 0x10 64-bit code
    0x00cf_9300_0000_ffff, // 0x18 data
    0x00cf_f300_0000_ffff, // 0x20 user data (0x23)
    0x00af_fb00_0000_ffff, // 0x28 user 64-bit code (0x2b)
    0,                     // 0x30 TSS (two slots)
    0,
    0x0000_9b00_0000_ffff, // 0x40 16-bit code
    0x0000_9300_0000_ffff, // 0x48 16-bit data
    0x00cf_fb00_0000_ffff, // 0x50 user 32-bit code (0x53)
];

/// A RAM-only bus: MMIO reads return all ones, port reads zero, writes
/// to either vanish.
pub struct RamBus {
    ram: Vec<u64>,
}

impl Default for RamBus {
    fn default() -> Self {
        RamBus {
            ram: vec![0; RAM_SIZE / 8],
        }
    }
}

impl RamBus {
    fn bytes_mut(&mut self) -> &mut [u8] {
        let len = self.ram.len() * 8;
        // SAFETY: u8 has no alignment or validity requirements; the slice
        // covers exactly the storage of `ram`, borrowed mutably.
        unsafe { std::slice::from_raw_parts_mut(self.ram.as_mut_ptr() as *mut u8, len) }
    }

    fn load(&mut self, gpa: u64, data: &[u8]) {
        let start = gpa as usize;
        let end = (start + data.len()).min(RAM_SIZE);
        self.bytes_mut()[start..end].copy_from_slice(&data[..end - start]);
    }

    fn write_u64(&mut self, gpa: u64, v: u64) {
        self.load(gpa, &v.to_le_bytes());
    }
}

// SAFETY: the RAM vector is allocated once and never resized, so the
// pointers `ram` returns stay valid (for `len` bytes) as long as the bus,
// which outlives every `Cpu::run` on it.
unsafe impl Bus for RamBus {
    fn ram(&mut self, gpa: u64, _write: bool) -> Option<RamRef> {
        if gpa >= RAM_SIZE as u64 {
            return None;
        }
        let b = self.bytes_mut();
        Some(RamRef {
            host: b[gpa as usize..].as_mut_ptr(),
            len: RAM_SIZE - gpa as usize,
        })
    }
    fn mmio_read(&mut self, _gpa: u64, data: &mut [u8]) {
        data.fill(0xff);
    }
    fn mmio_write(&mut self, _gpa: u64, _data: &[u8]) {}
    fn pio_read(&mut self, _port: u16, data: &mut [u8]) {
        data.fill(0);
    }
    fn pio_write(&mut self, _port: u16, _data: &[u8]) {}
}

/// The modes an input can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Real,
    Protected16,
    Protected32,
    Paged32,
    Pae,
    Long64,
    User64,
    Compat32,
}

const MODES: [Mode; 8] = [
    Mode::Real,
    Mode::Protected16,
    Mode::Protected32,
    Mode::Paged32,
    Mode::Pae,
    Mode::Long64,
    Mode::User64,
    Mode::Compat32,
];

fn leaf(function: u32, ebx: u32, ecx: u32, edx: u32) -> CpuidEntry {
    CpuidEntry {
        function,
        index: 0,
        significant_index: false,
        eax: 0,
        ebx,
        ecx,
        edx,
    }
}

/// Writes the GDT, TSS, IDT, page tables and handler.
fn setup_tables(bus: &mut RamBus, long: bool) {
    for (i, d) in GDT_ENTRIES.iter().enumerate() {
        bus.write_u64(GDT + i as u64 * 8, *d);
    }
    // 64-bit TSS at 0x30: RSP0 and IST1.
    let limit = 0x67u64;
    let lo = limit | ((TSS & 0xff_ffff) << 16) | (0x89u64 << 40) | (((TSS >> 24) & 0xff) << 56);
    bus.write_u64(GDT + 0x30, lo);
    bus.write_u64(GDT + 0x38, 0);
    bus.write_u64(TSS + 4, STACK);
    bus.write_u64(TSS + 0x24, STACK - 0x1000);
    // 4-level: identity map of the low 1 GiB in 2 MiB pages, user-accessible.
    bus.write_u64(PML4, (PML4 + 0x1000) | 7);
    bus.write_u64(PML4 + 0x1000, (PML4 + 0x2000) | 7);
    for j in 0..512u64 {
        bus.write_u64(PML4 + 0x2000 + j * 8, (j << 21) | 0x87);
    }
    // 32-bit: 4 MiB pages over 4 GiB.
    for j in 0..1024u64 {
        bus.load(PD32 + j * 4, &(((j << 22) | 0x87) as u32).to_le_bytes());
    }
    // PAE: 4 page directories of 2 MiB pages.
    for i in 0..4u64 {
        let pd = PD_PAE + i * 0x1000;
        bus.write_u64(PDPT_PAE + i * 8, pd | 1);
        for j in 0..512u64 {
            bus.write_u64(pd + j * 8, (i << 30) | (j << 21) | 0x87);
        }
    }
    // Real-mode IVT: every vector to 3000:0000.
    for v in 0..256u64 {
        bus.load(v * 4, &((HANDLER >> 4) << 16).to_le_bytes()[..4]);
    }
    // IDT gates (DPL 3 so INT n works from user mode too).
    for v in 0..256u64 {
        if long {
            let lo = (HANDLER & 0xffff)
                | (0x10u64 << 16)
                | (0xeu64 << 40)
                | (3u64 << 45)
                | (1u64 << 47)
                | (((HANDLER >> 16) & 0xffff) << 48);
            bus.write_u64(IDT + v * 16, lo);
            bus.write_u64(IDT + v * 16 + 8, 0);
        } else {
            let lo = (HANDLER & 0xffff)
                | (0x08u64 << 16)
                | (0xeu64 << 40)
                | (3u64 << 45)
                | (1u64 << 47)
                | (((HANDLER >> 16) & 0xffff) << 48);
            bus.write_u64(IDT + v * 8, lo);
        }
    }
    bus.load(HANDLER, &[0xf4]);
}

/// Puts `cpu` into `mode` with the tables `setup_tables` wrote.
fn enter(cpu: &mut Cpu, mode: Mode) {
    let s = &mut cpu.state;
    let seg = |sel: u16| SegCache::from_descriptor(sel, GDT_ENTRIES[sel as usize >> 3]);
    s.gdtr = TableReg {
        base: GDT,
        limit: (GDT_ENTRIES.len() * 8 - 1) as u16,
    };
    s.gpr[4] = STACK;
    s.rip = CODE;
    match mode {
        Mode::Real => {
            s.seg[CS] = SegCache::real((CODE >> 4) as u16, true);
            for r in [DS, ES, SS, FS, GS] {
                s.seg[r] = SegCache::real(0, false);
            }
            s.rip = 0;
            s.idtr = TableReg {
                base: 0,
                limit: 0x3ff,
            };
            s.gpr[4] = 0x7000;
        }
        Mode::Protected16 | Mode::Protected32 | Mode::Paged32 | Mode::Pae => {
            s.cr0 = cr0::PE | cr0::ET | cr0::NE;
            let (code, data) = if mode == Mode::Protected16 {
                (0x40, 0x48)
            } else {
                (0x08, 0x18)
            };
            s.seg[CS] = seg(code);
            for r in [DS, ES, SS, FS, GS] {
                s.seg[r] = seg(data);
            }
            s.idtr = TableReg {
                base: IDT,
                limit: 0x7ff,
            };
            if mode == Mode::Paged32 {
                s.cr4 = cr4::PSE | cr4::OSFXSR;
                s.cr3 = PD32;
                s.cr0 |= cr0::PG | cr0::WP;
            } else if mode == Mode::Pae {
                s.cr4 = cr4::PAE | cr4::OSFXSR;
                s.cr3 = PDPT_PAE;
                s.cr0 |= cr0::PG;
                s.efer = efer::NXE;
            }
        }
        Mode::Long64 | Mode::User64 | Mode::Compat32 => {
            s.cr0 = cr0::PE | cr0::MP | cr0::ET | cr0::NE | cr0::WP | cr0::PG;
            s.cr4 = cr4::PAE | cr4::OSFXSR | cr4::OSXMMEXCPT | cr4::PGE;
            s.cr3 = PML4;
            s.efer = efer::SCE | efer::LME | efer::LMA | efer::NXE;
            s.seg[CS] = match mode {
                Mode::Long64 => seg(0x10),
                Mode::User64 => seg(0x2b),
                _ => seg(0x08),
            };
            let data = if mode == Mode::User64 { 0x23 } else { 0x18 };
            for r in [DS, ES, SS, FS, GS] {
                s.seg[r] = seg(data);
            }
            let mut tr = SegCache::from_descriptor(
                0x30,
                (0x67u64) | ((TSS & 0xff_ffff) << 16) | (0x8bu64 << 40),
            );
            tr.base = TSS;
            s.tr = tr;
            s.idtr = TableReg {
                base: IDT,
                limit: 0xfff,
            };
            if mode == Mode::User64 {
                s.gpr[4] = USER_STACK;
            }
        }
    }
}

/// Runs one input on the interpreter. Panics only if the CPU has a bug.
pub fn run_cpu(data: &[u8]) {
    run_cpu_on(data, x86::Engine::Interp);
}

/// Runs one input on the JIT: every block is compiled from its first
/// complete run (`FERROVISOR_JIT_HOT=1`), so the random code goes through
/// Cranelift and the compiled blocks' fault, chain and exit paths.
/// Panics only if the CPU has a bug; a host without the JIT runs nothing.
pub fn run_jit(data: &[u8]) {
    static HOT: std::sync::Once = std::sync::Once::new();
    // Read once per process, before the first CPU is made.
    HOT.call_once(|| std::env::set_var("FERROVISOR_JIT_HOT", "1"));
    if x86::Engine::jit_available() {
        run_cpu_on(data, x86::Engine::Jit);
    }
}

fn run_cpu_on(data: &[u8], engine: x86::Engine) {
    let Some((&sel, rest)) = data.split_first() else {
        return;
    };
    let mode = MODES[sel as usize % MODES.len()];
    let (seeds, code) = rest.split_at(rest.len().min(16));
    let mut bus = RamBus::default();
    let long = matches!(mode, Mode::Long64 | Mode::User64 | Mode::Compat32);
    setup_tables(&mut bus, long);
    bus.load(CODE, &code[..code.len().min(0x8000)]);
    let mut cpu = Cpu::default();
    cpu.set_engine(engine);
    cpu.set_cpuid(&[
        leaf(0, 0x756e_6547, 0x6c65_746e, 0x4965_6e69),
        // CX16 POPCNT, and the x86-64-v3 set: MOVBE XSAVE AVX FMA F16C,
        // AVX2 BMI1 BMI2 (XCR0 enables AVX state, so VEX code runs).
        leaf(
            1,
            0,
            (1 << 13) | (1 << 23) | (1 << 22) | (1 << 26) | (1 << 28) | (1 << 12) | (1 << 29),
            0x0783_a1f9,
        ),
        leaf(7, (1 << 3) | (1 << 5) | (1 << 8), 0, 0),
        CpuidEntry {
            function: 0xd,
            significant_index: true,
            eax: 7,
            ..leaf(0xd, 576, 832, 0)
        },
        leaf(
            0x8000_0001,
            0,
            0x21,
            (1 << 11) | (1 << 20) | (1 << 26) | (1 << 27) | (1 << 29),
        ),
        leaf(0x8000_0008, 0, 0, 0),
    ]);
    enter(&mut cpu, mode);
    if mode != Mode::Real {
        cpu.state.cr4 |= cr4::OSXSAVE;
        cpu.state.xcr0 = 7;
    }
    for (i, &b) in seeds.iter().enumerate() {
        if i == 4 {
            continue;
        }
        let v = b as u64;
        cpu.state.gpr[i] = match b & 3 {
            0 => DATA + v * 0x101,
            1 => v,
            2 => 0xfee0_0000 + v * 8,
            _ => (v << 56) | (v * 0x0101_0101),
        };
    }
    let flags = seeds.first().copied().unwrap_or(0) as u64;
    cpu.state
        .set_rflags(rflags::FIXED1 | (flags & (rflags::ARITH | rflags::DF)));
    cpu.state_changed();
    // A few runs: an interrupt injected between them when the guest
    // allows it, so that delivery paths see random states too.
    let mut left = BUDGET;
    // The JIT compiles a block at its first run: code that rewrites
    // itself under every instruction compiles a block per instruction,
    // which the fuzzer's instrumented Cranelift takes seconds over. Its
    // runs are short and end after JIT_COMPILES compilations.
    let slice = match engine {
        x86::Engine::Jit => 64,
        x86::Engine::Interp => BUDGET / 4,
    };
    while left > 0 && cpu.cache_counters().jit_blocks_compiled.get() < JIT_COMPILES {
        let before = cpu.instructions_retired();
        let exit = cpu.run(&mut bus, left.min(slice));
        left = left.saturating_sub(cpu.instructions_retired() - before + 1);
        match exit {
            CpuExit::Halt | CpuExit::Shutdown => break,
            CpuExit::InstructionLimit if cpu.can_inject_interrupt() => {
                let _ = cpu.inject_external_interrupt(&mut bus, 0x20 + (left & 0x1f) as u8);
            }
            _ => {}
        }
    }
}

/// The command line of the stable random runners:
/// `[--iterations N] [--seed S] [FILE...]` → (iterations, seed, files).
pub fn runner_args(iterations: u64, seed: u64) -> (u64, u64, Vec<String>) {
    let (mut iterations, mut seed) = (iterations, seed);
    let mut files = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--iterations" => iterations = args.next().and_then(|v| v.parse().ok()).unwrap_or(0),
            "--seed" => seed = args.next().and_then(|v| v.parse().ok()).unwrap_or(seed),
            _ => files.push(a),
        }
    }
    (iterations, seed, files)
}
