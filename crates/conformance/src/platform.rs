//! Whole-machine cases for the platform: a Multiboot kernel boots with its
//! information structure, module and ACPI tables; ACPI power-off ends the
//! machine; the CMOS RTC shows the host's date and interrupts through
//! IOAPIC pin 8.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use hv::Hypervisor;
use iced_x86::code_asm::*;

use crate::harness::{SCRATCH, TIMEOUT};

/// A directory of files for one case, removed on drop.
struct CaseDir(PathBuf);

impl CaseDir {
    fn new(case: &str) -> CaseDir {
        let dir = std::env::temp_dir().join(format!(
            "ferrovisor-conformance-{case}-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        CaseDir(dir)
    }

    fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for CaseDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Builds `config` (with a console buffer) on a second handle of `hv`'s
/// accelerator, runs it, and returns the report and the console text.
/// Fails the case if the machine does not end within [`TIMEOUT`].
fn run_machine(hv: &dyn Hypervisor, config: vmm::MachineConfig) -> (vmm::RunReport, String) {
    let accel: vmm::Accel = hv.name().parse().expect("a known accelerator");
    let console = Arc::new(Mutex::new(Vec::new()));
    let config = vmm::MachineConfig {
        console: vmm::ConsoleOutput::Buffer(console.clone()),
        ..config
    };
    let (done, report) = std::sync::mpsc::channel();
    // The machine runs on a thread of its own so that a guest that never
    // ends fails the case instead of hanging it.
    std::thread::spawn(move || {
        let hv = vmm::open_accelerator(accel).expect("the accelerator opened once already");
        let machine = vmm::Machine::with_hypervisor(&config, hv).expect("build the machine");
        let _ = done.send(machine.run().expect("run the machine"));
    });
    let text = || String::from_utf8_lossy(&console.lock().unwrap()).into_owned();
    match report.recv_timeout(TIMEOUT) {
        Ok(report) => (report, text()),
        Err(e) => panic!(
            "the machine did not end within {TIMEOUT:?} ({e}); console: {:?}",
            text()
        ),
    }
}

fn bare_elf(dir: &CaseDir, program: &guests::Program) -> PathBuf {
    dir.file(
        "guest.elf",
        &arch::elf_builder::build_elf64(&[(program.load_addr, &program.code)], program.load_addr),
    )
}

fn config(kernel: &Path, vcpus: u32) -> vmm::MachineConfig {
    vmm::MachineConfig {
        memory: 64 << 20,
        vcpus,
        ..vmm::MachineConfig::new(kernel)
    }
}

/// A Multiboot kernel enters 32-bit protected mode with EAX = 0x2BADB002
/// and EBX = the information structure: memory sizes, the command line,
/// the memory map and the initrd as module 0; the ACPI RSDP is in the BIOS
/// area. Two vCPUs: only the boot vCPU runs the kernel.
pub fn multiboot_kernel_boots(hv: &dyn Hypervisor) {
    let dir = CaseDir::new("multiboot");
    let kernel = dir.file("kernel.elf", &guests::multiboot::elf().unwrap());
    let module: Vec<u8> = b"FERROMOD\x01\x02 module body".to_vec();
    let initrd = dir.file("module.bin", &module);
    let mut config = config(&kernel, 2);
    config.initrd = Some(initrd);
    config.cmdline = "hello multiboot".into();
    config.boot_protocol = arch::boot::BootProtocol::Multiboot;
    let (report, console) = run_machine(hv, config);

    let regions = arch::layout::ram_regions(64 << 20);
    let mmap_entries = arch::boot::e820_table(&regions).len();
    let expected = format!(
        "multiboot ok: mem_upper={} KiB cmdline='hello multiboot' mmap={mmap_entries} \
         module={} bytes 'FERROMOD' rsdp=0x000e0000\n",
        (64 << 10) - 1024,
        module.len()
    );
    assert_eq!(console, expected, "exit: {:?}", report.exit);
    assert!(
        matches!(
            report.exit,
            vmm::MachineExit::DebugExit { status } if status == (guests::multiboot::MULTIBOOT_PASS << 1 | 1) as i32
        ),
        "{:?}; console: {console}",
        report.exit
    );
}

/// The ACPI sleep control register with SLP_TYP 5 + SLP_EN powers the
/// machine off: exit status 0.
pub fn acpi_poweroff_ends_the_machine(hv: &dyn Hypervisor) {
    let dir = CaseDir::new("acpi-poweroff");
    let p = guests::acpi_poweroff("powering off\n").unwrap();
    let (report, console) = run_machine(hv, config(&bare_elf(&dir, &p), 1));
    assert_eq!(console, "powering off\n");
    assert!(
        matches!(report.exit, vmm::MachineExit::PowerOff),
        "{:?}",
        report.exit
    );
    assert_eq!(report.exit.exit_status(), 0);
}

/// The CMOS RTC at ports 0x70/0x71 reads the host's date in BCD.
pub fn rtc_shows_the_host_date(hv: &dyn Hypervisor) {
    let dir = CaseDir::new("rtc");
    let p = guests::rtc_date().unwrap();
    let before = today();
    let (report, _) = run_machine(hv, config(&bare_elf(&dir, &p), 1));
    let after = today();
    let vmm::MachineExit::DebugExit { status } = report.exit else {
        panic!("{:?}", report.exit);
    };
    let value = (status as u32) >> 1;
    let bcd = |v: u32| ((v / 10 % 10) << 4) | (v % 10);
    let date = |(year, month): (i64, u8)| {
        bcd((year / 100) as u32) << 16 | bcd((year % 100) as u32) << 8 | bcd(month.into())
    };
    assert!(
        value == date(before) || value == date(after),
        "the RTC says {value:#08x}; the host {before:?}..{after:?}"
    );
}

/// The guest's IDT (16-byte gates) and its interrupt counter.
const IDT: u64 = SCRATCH + 0x1000;
const RTC_INTERRUPTS: u64 = SCRATCH;
const RTC_VECTOR: u8 = 0x28;
const IOAPIC: u64 = 0xfec0_0000;
const LAPIC: u64 = 0xfee0_0000;
/// How many periodic interrupts the guest waits for.
const RTC_WANTED: u32 = 3;

/// Emits: read RTC register `index` into AL.
fn emit_rtc_read(a: &mut CodeAssembler, index: u32) -> guests::Result<()> {
    a.mov(al, index)?;
    a.out(0x70, al)?;
    a.in_(al, 0x71)
}

/// The RTC's periodic interrupt (1024 Hz) reaches a halted guest through
/// IOAPIC pin 8: the platform timer polls the RTC, IRQ 8 rises, the
/// handler reads register C (which lowers it) and the next one comes.
pub fn rtc_periodic_interrupt_wakes_hlt(hv: &dyn Hypervisor) {
    let p = rtc_interrupt_guest().unwrap();
    let dir = CaseDir::new("rtc-irq");
    let (report, _) = run_machine(hv, config(&bare_elf(&dir, &p), 1));
    assert!(
        matches!(
            report.exit,
            vmm::MachineExit::DebugExit { status } if status == (RTC_WANTED << 1 | 1) as i32
        ),
        "{:?}",
        report.exit
    );
}

fn rtc_interrupt_guest() -> guests::Result<guests::Program> {
    let mut a = guests::assembler()?;
    let mut main = a.create_label();
    let mut handler = a.create_label();
    let mut wait = a.create_label();
    a.jmp(main)?;

    // The handler: read register C (acknowledges the RTC, lowers IRQ 8),
    // count, EOI.
    a.set_label(&mut handler)?;
    a.push(rax)?;
    emit_rtc_read(&mut a, 0x0c)?;
    a.mov(rax, RTC_INTERRUPTS)?;
    a.inc(dword_ptr(rax))?;
    a.mov(rax, LAPIC + 0xb0)?;
    a.mov(dword_ptr(rax), 0)?;
    a.pop(rax)?;
    a.iretq()?;

    a.set_label(&mut main)?;
    // The gate: offset, selector 0x10 (the bare boot's 64-bit CS),
    // present interrupt gate.
    a.lea(rax, ptr(handler))?;
    a.mov(rbx, IDT + 16 * u64::from(RTC_VECTOR))?;
    a.mov(word_ptr(rbx), ax)?;
    a.mov(word_ptr(rbx + 2), 0x10)?;
    a.mov(word_ptr(rbx + 4), 0x8e00)?;
    a.shr(rax, 16)?;
    a.mov(word_ptr(rbx + 6), ax)?;
    a.shr(rax, 16)?;
    a.mov(dword_ptr(rbx + 8), eax)?;
    a.mov(dword_ptr(rbx + 12), 0)?;
    a.mov(rax, SCRATCH + 0x800)?;
    a.mov(word_ptr(rax), 0xfff)?;
    a.mov(rbx, IDT)?;
    a.mov(qword_ptr(rax + 2), rbx)?;
    a.lidt(ptr(rax))?;
    a.mov(rax, RTC_INTERRUPTS)?;
    a.mov(dword_ptr(rax), 0)?;
    // The LAPIC on, the PICs masked, IOAPIC pin 8 → the vector (edge,
    // fixed, physical destination 0).
    a.mov(rax, LAPIC + 0xf0)?;
    a.mov(dword_ptr(rax), 0x1ff)?;
    a.mov(al, 0xff)?;
    a.out(0x21, al)?;
    a.out(0xa1, al)?;
    a.mov(rbx, IOAPIC)?;
    a.mov(dword_ptr(rbx), 0x10 + 2 * 8 + 1)?;
    a.mov(dword_ptr(rbx + 0x10), 0)?;
    a.mov(dword_ptr(rbx), 0x10 + 2 * 8)?;
    a.mov(dword_ptr(rbx + 0x10), u32::from(RTC_VECTOR))?;
    // RTC register B: 24-hour, BCD, periodic interrupt on (register A's
    // default rate: 1024 Hz).
    a.mov(al, 0x0b)?;
    a.out(0x70, al)?;
    a.mov(al, 0x42)?;
    a.out(0x71, al)?;

    a.set_label(&mut wait)?;
    // STI's shadow covers the HLT: no interrupt slips in between.
    a.sti()?;
    a.hlt()?;
    a.cli()?;
    a.mov(rax, RTC_INTERRUPTS)?;
    a.cmp(dword_ptr(rax), RTC_WANTED)?;
    a.jb(wait)?;
    // Periodic interrupts off, then report the count.
    a.mov(al, 0x0b)?;
    a.out(0x70, al)?;
    a.mov(al, 0x02)?;
    a.out(0x71, al)?;
    a.mov(rax, RTC_INTERRUPTS)?;
    a.mov(eax, dword_ptr(rax))?;
    guests::emit_debug_exit_eax(&mut a)?;
    guests::finish(a)
}

/// (year, month) of the host's UTC date.
fn today() -> (i64, u8) {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("a host clock after 1970")
        .as_secs();
    let t = irqchip::rtc::civil::DateTime::from_unix(secs as i64);
    (t.year, t.month)
}

/// Code that a device (not a vCPU) rewrote in guest RAM runs in its new
/// form once the VMM reports the write ([`hv::Vm::note_guest_write`]): an
/// accelerator that caches decoded code must not run the old bytes.
pub fn device_writes_to_code_are_seen(hv: &dyn Hypervisor) {
    use crate::harness::{run_guest, Access, TestIo, TestVm};
    use vm_memory::{Bytes, GuestAddress};
    const FUNC: u64 = SCRATCH + 0x2000;
    const REPORT: u16 = 0x80;
    let t = TestVm::new(hv, 1);
    // mov eax, 1; ret
    t.mem
        .write_slice(&[0xb8, 1, 0, 0, 0, 0xc3], GuestAddress(FUNC))
        .unwrap();
    let mut a = guests::assembler().unwrap();
    for _ in 0..2 {
        a.mov(rax, FUNC).unwrap();
        a.call(rax).unwrap();
        a.out(u32::from(REPORT), eax).unwrap();
        a.mov(eax, 0x600du32).unwrap();
        // The debug-exit write ends `run_guest`; the next run goes on.
        a.out(guests::DEBUG_EXIT as u32, eax).unwrap();
    }
    guests::emit_halt_forever(&mut a).unwrap();
    let p = guests::finish(a).unwrap();
    t.load(&p);
    let mut vcpu = t.vcpu(0, p.load_addr);
    let reported = |io: &TestIo| {
        io.accesses().into_iter().find_map(|a| match a {
            Access::PioWrite { port, data } if port == REPORT => Some(data),
            _ => None,
        })
    };
    let io = TestIo::new(vcpu.kicker());
    assert_eq!(run_guest(&mut *vcpu, &io), None);
    assert_eq!(reported(&io), Some(vec![1, 0, 0, 0]));
    // A device overwrites the function: mov eax, 2; ret.
    t.mem
        .write_slice(&[0xb8, 2, 0, 0, 0, 0xc3], GuestAddress(FUNC))
        .unwrap();
    t.vm.note_guest_write(FUNC, 6);
    let io = TestIo::new(vcpu.kicker());
    assert_eq!(run_guest(&mut *vcpu, &io), None);
    assert_eq!(reported(&io), Some(vec![2, 0, 0, 0]), "the old code ran");
}
