//! The conformance cases. Each runs one tiny guest and checks everything
//! observable: bus accesses with sizes and values, memory, registers, exits.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use hv::{ExitReason, Hypervisor, MemorySlot, VcpuExit};
use iced_x86::code_asm::*;
use vm_memory::MmapRegion;

pub use crate::boundary::*;
use crate::harness::*;
pub use crate::interrupts::*;
pub use crate::ioevent::*;
pub use crate::nmi::*;
pub use crate::platform::*;

const EXIT_OK: u32 = 0x600d;

/// Serial output through a real 16550 model reaches the console.
pub fn uart_output(hv: &dyn Hypervisor) {
    let t = TestVm::new(hv, 1);
    let text = "Hello from the conformance suite!\n";
    let p = guests::print_and_exit(text, EXIT_OK).unwrap();
    t.load(&p);
    let mut vcpu = t.vcpu(0, p.load_addr);
    let io = TestIo::new(vcpu.kicker());
    assert_eq!(run_guest(&mut *vcpu, &io), None);
    assert_eq!(io.exit_value(), Some(EXIT_OK));
    assert_eq!(io.console_text(), text);
    if let Some(n) = vcpu.exit_stats().get(ExitReason::Io) {
        // At least one LSR poll and one THR write per character.
        assert!(n >= 2 * text.len() as u64, "io exits {n}");
    }
}

/// OUT and IN of 1, 2 and 4 bytes, immediate and DX ports.
pub fn pio_sizes_and_values(hv: &dyn Hypervisor) {
    let t = TestVm::new(hv, 1);
    let p = program(
        |a| {
            a.mov(al, 0x11)?;
            a.out(0x80, al)?;
            a.mov(ax, 0x2233)?;
            a.out(0x80, ax)?;
            a.mov(eax, 0x4455_6677)?;
            a.out(0x80, eax)?;
            a.mov(dx, 0x1234)?;
            a.mov(al, 0x99)?;
            a.out(dx, al)?;
            a.mov(rdi, SCRATCH)?;
            a.xor(eax, eax)?;
            a.in_(al, 0x90)?;
            a.mov(qword_ptr(rdi), rax)?;
            a.xor(eax, eax)?;
            a.in_(ax, 0x90)?;
            a.mov(qword_ptr(rdi + 8), rax)?;
            a.mov(rax, -1i64)?;
            a.mov(dx, 0x5678)?;
            a.in_(eax, dx)?;
            a.mov(qword_ptr(rdi + 16), rax)?;
            Ok(())
        },
        EXIT_OK,
    );
    t.load(&p);
    let mut vcpu = t.vcpu(0, p.load_addr);
    let io = TestIo::new(vcpu.kicker());
    assert_eq!(run_guest(&mut *vcpu, &io), None);
    assert_eq!(
        io.accesses(),
        vec![
            Access::PioWrite {
                port: 0x80,
                data: vec![0x11]
            },
            Access::PioWrite {
                port: 0x80,
                data: vec![0x33, 0x22]
            },
            Access::PioWrite {
                port: 0x80,
                data: vec![0x77, 0x66, 0x55, 0x44]
            },
            Access::PioWrite {
                port: 0x1234,
                data: vec![0x99]
            },
            Access::PioRead {
                port: 0x90,
                size: 1
            },
            Access::PioRead {
                port: 0x90,
                size: 2
            },
            Access::PioRead {
                port: 0x5678,
                size: 4
            },
        ]
    );
    assert_eq!(t.read_u64(SCRATCH), 0xa1);
    assert_eq!(t.read_u64(SCRATCH + 8), 0xa2a1);
    // A 32-bit IN zero-extends into RAX.
    assert_eq!(t.read_u64(SCRATCH + 16), 0xa4a3_a2a1);
}

/// Without an in-kernel PIT (`VmConfig::pit` false, QEMU's `pit=off`) its
/// ports reach the VMM; with one they never do.
pub fn pit_off_ports_reach_the_vmm(hv: &dyn Hypervisor) {
    let p = program(
        |a| {
            a.mov(al, 0x34)?;
            a.out(0x43, al)?;
            a.in_(al, 0x40)?;
            a.in_(al, 0x61)?;
            Ok(())
        },
        EXIT_OK,
    );
    for pit in [true, false] {
        let t = TestVm::with_config(
            hv,
            hv::VmConfig {
                pit,
                ..hv::VmConfig::new(1)
            },
        );
        t.load(&p);
        let mut vcpu = t.vcpu(0, p.load_addr);
        let io = TestIo::new(vcpu.kicker());
        assert_eq!(run_guest(&mut *vcpu, &io), None);
        let seen: Vec<u16> = io
            .accesses()
            .iter()
            .filter_map(|a| match a {
                Access::PioRead { port, .. } | Access::PioWrite { port, .. } => Some(*port),
                _ => None,
            })
            .filter(|&port| port != 0xf4)
            .collect();
        let expected: &[u16] = if pit { &[] } else { &[0x43, 0x40, 0x61] };
        assert_eq!(seen, expected, "pit: {pit}");
    }
}

/// REP OUTSB and REP INSW: one access per element, in order.
pub fn string_pio(hv: &dyn Hypervisor) {
    let t = TestVm::new(hv, 1);
    let p = program(
        |a| {
            a.mov(rsi, SCRATCH)?;
            a.mov(dword_ptr(rsi), 0x0403_0201)?;
            a.mov(ecx, 3)?;
            a.mov(dx, 0x80)?;
            a.cld()?;
            a.rep().outsb()?;
            a.mov(rdi, SCRATCH + 0x100)?;
            a.mov(ecx, 2)?;
            a.mov(dx, 0x90)?;
            a.rep().insw()?;
            Ok(())
        },
        EXIT_OK,
    );
    t.load(&p);
    let mut vcpu = t.vcpu(0, p.load_addr);
    let io = TestIo::new(vcpu.kicker());
    assert_eq!(run_guest(&mut *vcpu, &io), None);
    assert_eq!(
        io.accesses(),
        vec![
            Access::PioWrite {
                port: 0x80,
                data: vec![1]
            },
            Access::PioWrite {
                port: 0x80,
                data: vec![2]
            },
            Access::PioWrite {
                port: 0x80,
                data: vec![3]
            },
            Access::PioRead {
                port: 0x90,
                size: 2
            },
            Access::PioRead {
                port: 0x90,
                size: 2
            },
        ]
    );
    assert_eq!(t.read_u64(SCRATCH + 0x100) & 0xffff_ffff, 0xa2a1_a2a1);
    let regs = vcpu.get_regs().unwrap();
    assert_eq!(regs.rcx, 0);
    assert_eq!(regs.rdi, SCRATCH + 0x104);
}

/// MMIO writes and reads of 1, 2, 4 and 8 bytes outside RAM.
pub fn mmio_sizes_and_values(hv: &dyn Hypervisor) {
    let t = TestVm::new(hv, 1);
    let p = program(
        |a| {
            a.mov(rbx, MMIO_ADDR)?;
            a.mov(byte_ptr(rbx + 0x10), 0x5a)?;
            a.mov(word_ptr(rbx + 0x20), 0x1234)?;
            a.mov(dword_ptr(rbx + 0x30), 0xdead_beefu32 as i32)?;
            a.mov(rax, 0x0102_0304_0506_0708u64)?;
            a.mov(qword_ptr(rbx + 0x40), rax)?;
            a.mov(rdi, SCRATCH)?;
            a.movzx(eax, byte_ptr(rbx + 0x50))?;
            a.mov(qword_ptr(rdi), rax)?;
            a.movzx(eax, word_ptr(rbx + 0x60))?;
            a.mov(qword_ptr(rdi + 8), rax)?;
            a.mov(eax, dword_ptr(rbx + 0x70))?;
            a.mov(qword_ptr(rdi + 16), rax)?;
            a.mov(rax, qword_ptr(rbx + 0x80))?;
            a.mov(qword_ptr(rdi + 24), rax)?;
            Ok(())
        },
        EXIT_OK,
    );
    t.load(&p);
    let mut vcpu = t.vcpu(0, p.load_addr);
    let io = TestIo::new(vcpu.kicker());
    assert_eq!(run_guest(&mut *vcpu, &io), None);
    let m = MMIO_ADDR;
    assert_eq!(
        io.accesses(),
        vec![
            Access::MmioWrite {
                gpa: m + 0x10,
                data: vec![0x5a]
            },
            Access::MmioWrite {
                gpa: m + 0x20,
                data: vec![0x34, 0x12]
            },
            Access::MmioWrite {
                gpa: m + 0x30,
                data: vec![0xef, 0xbe, 0xad, 0xde]
            },
            Access::MmioWrite {
                gpa: m + 0x40,
                data: vec![8, 7, 6, 5, 4, 3, 2, 1]
            },
            Access::MmioRead {
                gpa: m + 0x50,
                size: 1
            },
            Access::MmioRead {
                gpa: m + 0x60,
                size: 2
            },
            Access::MmioRead {
                gpa: m + 0x70,
                size: 4
            },
            Access::MmioRead {
                gpa: m + 0x80,
                size: 8
            },
        ]
    );
    let expect = |gpa: u64, size: u64| -> u64 {
        (0..size).fold(0, |v, i| v | u64::from(mmio_pattern(gpa + i)) << (8 * i))
    };
    assert_eq!(t.read_u64(SCRATCH), expect(m + 0x50, 1));
    assert_eq!(t.read_u64(SCRATCH + 8), expect(m + 0x60, 2));
    assert_eq!(t.read_u64(SCRATCH + 16), expect(m + 0x70, 4));
    assert_eq!(t.read_u64(SCRATCH + 24), expect(m + 0x80, 8));
    if let Some(n) = vcpu.exit_stats().get(ExitReason::Mmio) {
        assert!(n >= 8, "mmio exits {n}");
    }
}

const EXTRA_SLOT_ADDR: u64 = 0x1000_0000;
const EXTRA_SLOT_PAGES: u64 = 256;

fn extra_region() -> Arc<MmapRegion> {
    Arc::new(MmapRegion::new((EXTRA_SLOT_PAGES * 4096) as usize).expect("map"))
}

fn region_u64(region: &MmapRegion, offset: u64) -> u64 {
    use vm_memory::VolatileMemory;
    region
        .get_ref::<u64>(offset as usize)
        .expect("offset in region")
        .load()
}

/// A read-only slot: reads see its contents, writes become MMIO writes and
/// leave the contents alone.
pub fn read_only_slot(hv: &dyn Hypervisor) {
    use vm_memory::VolatileMemory;
    let t = TestVm::new(hv, 1);
    let region = extra_region();
    region
        .get_ref::<u64>(0x800)
        .unwrap()
        .store(0x1122_3344_5566_7788);
    t.vm.set_memory_slot(MemorySlot {
        id: 1,
        guest_addr: EXTRA_SLOT_ADDR,
        region: region.clone(),
        read_only: true,
        log_dirty: false,
    })
    .unwrap();
    let p = program(
        |a| {
            a.mov(rbx, EXTRA_SLOT_ADDR)?;
            a.mov(rax, qword_ptr(rbx + 0x800))?;
            a.mov(rdi, SCRATCH)?;
            a.mov(qword_ptr(rdi), rax)?;
            a.mov(dword_ptr(rbx + 0x800), 0x7777_7777)?;
            Ok(())
        },
        EXIT_OK,
    );
    t.load(&p);
    let mut vcpu = t.vcpu(0, p.load_addr);
    let io = TestIo::new(vcpu.kicker());
    assert_eq!(run_guest(&mut *vcpu, &io), None);
    assert_eq!(t.read_u64(SCRATCH), 0x1122_3344_5566_7788);
    assert_eq!(
        io.accesses(),
        vec![Access::MmioWrite {
            gpa: EXTRA_SLOT_ADDR + 0x800,
            data: vec![0x77; 4]
        }]
    );
    assert_eq!(region_u64(&region, 0x800), 0x1122_3344_5566_7788);
}

/// HLT with interrupts off waits (in the accelerator) until a kick; RIP is
/// past the HLT.
pub fn hlt_waits_for_a_kick(hv: &dyn Hypervisor) {
    let t = TestVm::new(hv, 1);
    let mut a = guests::assembler().unwrap();
    a.mov(eax, 1).unwrap();
    a.hlt().unwrap();
    a.mov(eax, 2).unwrap();
    a.out(guests::DEBUG_EXIT as u32, eax).unwrap();
    guests::emit_halt_forever(&mut a).unwrap();
    let p = guests::finish(a).unwrap();
    let hlt_end = p.load_addr + 5 + 1;
    t.load(&p);
    let mut vcpu = t.vcpu(0, p.load_addr);
    let io = TestIo::new(vcpu.kicker());
    let kicker = vcpu.kicker();
    let kick_after = Duration::from_millis(300);
    let started = std::time::Instant::now();
    let watchdog = Watchdog::new(kicker.clone(), TIMEOUT);
    let waker = std::thread::spawn(move || {
        std::thread::sleep(kick_after);
        kicker.kick();
    });
    let exit = loop {
        let exit = vcpu.run(&io).expect("run");
        // A HLT exit (accelerators that return on HLT) is as good as waiting.
        if exit == VcpuExit::Halt || started.elapsed() >= kick_after || watchdog.fired() {
            break exit;
        }
    };
    waker.join().unwrap();
    assert!(!watchdog.fired(), "HLT did not return after a kick");
    assert!(
        matches!(exit, VcpuExit::Interrupted | VcpuExit::Halt),
        "{exit:?}"
    );
    let regs = vcpu.get_regs().unwrap();
    assert_eq!(regs.rip, hlt_end, "RIP after HLT");
    assert_eq!(regs.rax, 1, "nothing after HLT ran");
    assert_eq!(io.exit_value(), None);
    if let Ok(state) = vcpu.get_mp_state() {
        assert!(
            matches!(state, hv::MpState::Halted | hv::MpState::Runnable),
            "{state:?}"
        );
    }
    if let Some(n) = vcpu.exit_stats().get(ExitReason::Hlt) {
        assert_eq!(n, 1, "hlt exits: the guest ran one HLT");
    }
}

/// A guest spinning in a loop is interrupted by a kick from another thread,
/// and a kick before `run` makes the next `run` return at once.
pub fn kick_interrupts_a_spinning_guest(hv: &dyn Hypervisor) {
    let t = TestVm::new(hv, 1);
    let mut a = guests::assembler().unwrap();
    let mut spin = a.create_label();
    a.set_label(&mut spin).unwrap();
    a.inc(rax).unwrap();
    a.jmp(spin).unwrap();
    let p = guests::finish(a).unwrap();
    t.load(&p);
    let mut vcpu = t.vcpu(0, p.load_addr);
    let io = TestIo::new(vcpu.kicker());

    vcpu.kicker().kick();
    assert_eq!(vcpu.run(&io).unwrap(), VcpuExit::Interrupted);

    let kicker = vcpu.kicker();
    let waker = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        kicker.kick();
    });
    let watchdog = Watchdog::new(vcpu.kicker(), TIMEOUT);
    assert_eq!(vcpu.run(&io).unwrap(), VcpuExit::Interrupted);
    assert!(!watchdog.fired());
    waker.join().unwrap();
    let regs = vcpu.get_regs().unwrap();
    assert!(regs.rax > 0, "the guest ran");
    assert!(
        (p.load_addr..p.load_addr + p.code.len() as u64).contains(&regs.rip),
        "RIP {:#x} inside the loop",
        regs.rip
    );
}

/// An exception with no IDT to deliver it through ends in a triple fault.
pub fn triple_fault_is_shutdown(hv: &dyn Hypervisor) {
    let t = TestVm::new(hv, 1);
    let p = program(
        |a| {
            a.ud2()?;
            Ok(())
        },
        EXIT_OK,
    );
    t.load(&p);
    let mut vcpu = t.vcpu(0, p.load_addr);
    let mut sregs = vcpu.get_sregs().unwrap();
    sregs.idt = hv::DescriptorTable { base: 0, limit: 0 };
    vcpu.set_sregs(&sregs).unwrap();
    let io = TestIo::new(vcpu.kicker());
    assert_eq!(run_guest(&mut *vcpu, &io), Some(VcpuExit::Shutdown));
    assert_eq!(io.exit_value(), None);
}

/// The dirty log of a slot names exactly the pages the guest wrote, and is
/// cleared by reading it; the VMM's device writes are logged too.
pub fn dirty_log_names_written_pages(hv: &dyn Hypervisor) {
    let t = TestVm::new(hv, 1);
    let region = extra_region();
    t.vm.set_memory_slot(MemorySlot {
        id: 1,
        guest_addr: EXTRA_SLOT_ADDR,
        region: region.clone(),
        read_only: false,
        log_dirty: true,
    })
    .unwrap();
    assert!(hv::memory::dirty_pages(&t.vm.get_dirty_log(1).unwrap()).is_empty());
    let p = program(
        |a| {
            a.mov(rbx, EXTRA_SLOT_ADDR)?;
            a.mov(byte_ptr(rbx), 1)?;
            // Reading does not dirty a page.
            a.mov(rax, qword_ptr(rbx + 3 * 4096))?;
            // One store across the boundary of pages 5 and 6.
            a.mov(rax, 0x0807_0605_0403_0201u64)?;
            a.mov(qword_ptr(rbx + 6 * 4096 - 4), rax)?;
            a.mov(rcx, EXTRA_SLOT_ADDR + 255 * 4096 + 4088)?;
            a.mov(qword_ptr(rcx), rax)?;
            Ok(())
        },
        EXIT_OK,
    );
    t.load(&p);
    let mut vcpu = t.vcpu(0, p.load_addr);
    let io = TestIo::new(vcpu.kicker());
    assert_eq!(run_guest(&mut *vcpu, &io), None);
    let log = t.vm.get_dirty_log(1).unwrap();
    assert_eq!(log.len() as u64, EXTRA_SLOT_PAGES / 64);
    assert_eq!(hv::memory::dirty_pages(&log), vec![0, 5, 6, 255]);
    assert!(hv::memory::dirty_pages(&t.vm.get_dirty_log(1).unwrap()).is_empty());
    assert_eq!(region_u64(&region, 6 * 4096 - 4), 0x0807_0605_0403_0201);
    // A device's write (DMA, reported by the VMM) is logged too: a
    // migration must send what a virtio worker wrote.
    t.vm.note_guest_write(EXTRA_SLOT_ADDR + 9 * 4096 + 100, 4096);
    t.vm.note_guest_write(EXTRA_SLOT_ADDR + 200 * 4096, 1);
    assert_eq!(
        hv::memory::dirty_pages(&t.vm.get_dirty_log(1).unwrap()),
        vec![9, 10, 200]
    );
    assert!(hv::memory::dirty_pages(&t.vm.get_dirty_log(1).unwrap()).is_empty());
    assert!(t.vm.get_dirty_log(0).is_err(), "slot 0 does not log");
    assert!(t.vm.get_dirty_log(7).is_err(), "no slot 7");
}

/// Two vCPUs on two threads each write their id.
pub fn two_vcpus_write_their_ids(hv: &dyn Hypervisor) {
    let t = TestVm::new(hv, 2);
    let p = program(
        |a| {
            a.mov(rbx, SCRATCH)?;
            a.lea(rax, ptr(rdi + 0x100))?;
            a.mov(qword_ptr(rbx + rdi * 8), rax)?;
            a.mov(eax, 1)?;
            a.xor(ecx, ecx)?;
            a.cpuid()?;
            a.shr(ebx, 24)?;
            a.mov(rax, SCRATCH + 0x40)?;
            a.mov(qword_ptr(rax + rdi * 8), rbx)?;
            Ok(())
        },
        EXIT_OK,
    );
    t.load(&p);
    t.write_u64(SCRATCH, 0);
    t.write_u64(SCRATCH + 8, 0);
    let outcomes = Arc::new(Mutex::new(Vec::new()));
    std::thread::scope(|s| {
        for id in 0..2 {
            let mut vcpu = t.vcpu(id, p.load_addr);
            let outcomes = outcomes.clone();
            s.spawn(move || {
                let io = TestIo::new(vcpu.kicker());
                let exit = run_guest(&mut *vcpu, &io);
                outcomes.lock().unwrap().push((id, exit, io.exit_value()));
            });
        }
    });
    let mut outcomes = outcomes.lock().unwrap().clone();
    outcomes.sort_by_key(|o| o.0);
    assert_eq!(
        outcomes,
        vec![(0, None, Some(EXIT_OK)), (1, None, Some(EXIT_OK))]
    );
    assert_eq!(t.read_u64(SCRATCH), 0x100);
    assert_eq!(t.read_u64(SCRATCH + 8), 0x101);
    // CPUID leaf 1 reports each vCPU's own initial APIC id.
    assert_eq!(t.read_u64(SCRATCH + 0x40), 0);
    assert_eq!(t.read_u64(SCRATCH + 0x48), 1);
}

/// CPUID shows Ferrovisor's template: the hypervisor bit and signature.
pub fn cpuid_template(hv: &dyn Hypervisor) {
    let t = TestVm::new(hv, 1);
    let p = program(
        |a| {
            a.mov(rdi, SCRATCH)?;
            a.mov(eax, 0x4000_0000)?;
            a.xor(ecx, ecx)?;
            a.cpuid()?;
            a.mov(dword_ptr(rdi), ebx)?;
            a.mov(dword_ptr(rdi + 4), ecx)?;
            a.mov(dword_ptr(rdi + 8), edx)?;
            a.mov(eax, 1)?;
            a.cpuid()?;
            a.mov(dword_ptr(rdi + 16), ecx)?;
            Ok(())
        },
        EXIT_OK,
    );
    t.load(&p);
    let mut vcpu = t.vcpu(0, p.load_addr);
    let io = TestIo::new(vcpu.kicker());
    assert_eq!(run_guest(&mut *vcpu, &io), None);
    let mut signature = Vec::new();
    signature.extend_from_slice(&t.read_u64(SCRATCH).to_le_bytes());
    signature.extend_from_slice(&(t.read_u64(SCRATCH + 8) as u32).to_le_bytes());
    assert_eq!(signature.as_slice(), arch::cpuid::SIGNATURE);
    let leaf1_ecx = t.read_u64(SCRATCH + 16) as u32;
    assert_ne!(leaf1_ecx & (1 << 31), 0, "hypervisor bit");
    assert_eq!(leaf1_ecx & (1 << 5), 0, "no VMX");
    if let Some(n) = vcpu.exit_stats().get(ExitReason::Cpuid) {
        assert!(n >= 2);
    }
}

fn bare_elf_machine(
    hv: Box<dyn Hypervisor>,
    program: &guests::Program,
    vcpus: u32,
) -> (vmm::RunReport, String) {
    let dir = std::env::temp_dir().join(format!(
        "ferrovisor-conformance-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let kernel = dir.join("guest.elf");
    let elf =
        arch::elf_builder::build_elf64(&[(program.load_addr, &program.code)], program.load_addr);
    std::fs::write(&kernel, elf).unwrap();
    let console = Arc::new(Mutex::new(Vec::new()));
    let config = vmm::MachineConfig {
        memory: 64 << 20,
        vcpus,
        console: vmm::ConsoleOutput::Buffer(console.clone()),
        ..vmm::MachineConfig::new(&kernel)
    };
    let machine = vmm::Machine::with_hypervisor(&config, hv).expect("build the machine");
    let report = machine.run().expect("run the machine");
    let _ = std::fs::remove_dir_all(&dir);
    let text = String::from_utf8_lossy(&console.lock().unwrap()).into_owned();
    (report, text)
}

/// The debug-exit port ends the whole machine with status (v << 1) | 1.
pub fn debug_exit_status(hv: &dyn Hypervisor) {
    let hv = reopen(hv);
    let p = guests::print_and_exit("bye\n", 0x21).unwrap();
    let (report, console) = bare_elf_machine(hv, &p, 1);
    assert_eq!(console, "bye\n");
    assert!(
        matches!(report.exit, vmm::MachineExit::DebugExit { status: 0x43 }),
        "{:?}",
        report.exit
    );
    assert_eq!(report.exit.exit_status(), 0x43);
}

/// A bare ELF boots on a whole machine with two vCPUs; the demo guest's
/// i8042 reset ends it cleanly.
pub fn machine_runs_bare_elf(hv: &dyn Hypervisor) {
    let hv = reopen(hv);
    let p = guests::demo::program().unwrap();
    let (report, console) = bare_elf_machine(hv, &p, 1);
    assert!(
        matches!(report.exit, vmm::MachineExit::Reset),
        "{:?}; console: {console}",
        report.exit
    );
    assert!(
        console.contains("Hello from the Ferrovisor demo guest!"),
        "{console}"
    );
    assert!(
        console.contains(guests::demo::PRIMES_BELOW_100),
        "{console}"
    );
    assert!(console.contains("FerroVisor"), "{console}");
    assert_eq!(report.vcpu_stats.len(), 1);
    assert_eq!(report.exit.exit_status(), 0);
}

/// A second handle on the same accelerator, for cases that hand one to a
/// whole machine.
fn reopen(hv: &dyn Hypervisor) -> Box<dyn Hypervisor> {
    vmm::open_accelerator(hv.name().parse().expect("a known accelerator"))
        .expect("the accelerator opened once already")
}
