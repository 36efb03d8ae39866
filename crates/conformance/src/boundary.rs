//! The boundary between the CPU and the rest of the vCPU: the local APIC
//! owns IA32_APIC_BASE (x2APIC mode is entered through it), and each exit is
//! counted once, by the part that saw it.

use hv::{ExitReason, Hypervisor};
use iced_x86::code_asm::*;

use crate::harness::*;
use crate::interrupts::{emit_lapic_enable, LAPIC};

const EXIT_OK: u32 = 0x600d;
const IA32_APIC_BASE: u32 = 0x1b;
const X2APIC_ID: u32 = 0x802;
const X2APIC_VERSION: u32 = 0x803;
const X2APIC_TPR: u32 = 0x808;
const APIC_BASE_EXTD: u64 = 1 << 10;
const APIC_BASE_ENABLE: u64 = 1 << 11;

/// Emits `rdmsr` of `msr`, then stores EDX:EAX at `[rdi + slot * 8]`.
fn store_msr(a: &mut CodeAssembler, msr: u32, slot: i32) -> guests::Result<()> {
    a.mov(ecx, msr)?;
    a.rdmsr()?;
    a.shl(rdx, 32)?;
    a.or(rax, rdx)?;
    a.mov(qword_ptr(rdi + slot * 8), rax)?;
    Ok(())
}

/// Emits: IA32_APIC_BASE |= EXTD (x2APIC mode on).
fn enable_x2apic(a: &mut CodeAssembler) -> guests::Result<()> {
    a.mov(ecx, IA32_APIC_BASE)?;
    a.rdmsr()?;
    a.or(eax, APIC_BASE_EXTD as i32)?;
    a.wrmsr()?;
    Ok(())
}

/// A guest turns on x2APIC mode by writing IA32_APIC_BASE, as Linux and
/// kvm-unit-tests do: the LAPIC sees the write, its registers answer as
/// MSRs, and IA32_APIC_BASE reads back from the LAPIC (also from the VMM's
/// side). Disabling the APIC globally clears CPUID.1:EDX.APIC.
pub fn x2apic_through_apic_base(hv: &dyn Hypervisor) {
    let t = TestVm::new(hv, 1);
    let p = program(
        |a| {
            a.mov(rdi, SCRATCH)?;
            enable_x2apic(a)?;
            store_msr(a, IA32_APIC_BASE, 0)?;
            store_msr(a, X2APIC_ID, 1)?;
            store_msr(a, X2APIC_VERSION, 2)?;
            a.mov(ecx, X2APIC_TPR)?;
            a.mov(eax, 0x20)?;
            a.xor(edx, edx)?;
            a.wrmsr()?;
            store_msr(a, X2APIC_TPR, 3)?;
            // x2APIC → disabled (EN and EXTD clear) is a legal transition.
            a.mov(ecx, IA32_APIC_BASE)?;
            a.rdmsr()?;
            a.and(eax, !((APIC_BASE_ENABLE | APIC_BASE_EXTD) as i32))?;
            a.wrmsr()?;
            a.mov(eax, 1)?;
            a.cpuid()?;
            a.mov(qword_ptr(rdi + 32), rdx)?;
            Ok(())
        },
        EXIT_OK,
    );
    t.load(&p);
    let mut vcpu = t.vcpu(0, p.load_addr);
    let io = TestIo::new(vcpu.kicker());
    assert_eq!(run_guest(&mut *vcpu, &io), None);
    assert_eq!(io.exit_value(), Some(EXIT_OK));
    let base = t.read_u64(SCRATCH);
    assert_eq!(
        base & (APIC_BASE_ENABLE | APIC_BASE_EXTD),
        APIC_BASE_ENABLE | APIC_BASE_EXTD,
        "IA32_APIC_BASE after the write: {base:#x}"
    );
    assert_eq!(base & !0xfff, 0xfee0_0000, "APIC base address");
    assert_eq!(t.read_u64(SCRATCH + 8), 0, "x2APIC ID of vCPU 0");
    let version = t.read_u64(SCRATCH + 16);
    assert!(
        (0x10..=0x15).contains(&(version & 0xff)),
        "integrated APIC version: {version:#x}"
    );
    assert_eq!(t.read_u64(SCRATCH + 24), 0x20, "TPR through its MSR");
    assert_eq!(
        t.read_u64(SCRATCH + 32) & (1 << 9),
        0,
        "CPUID.1:EDX.APIC with the APIC disabled"
    );
    // The VMM sees the LAPIC's IA32_APIC_BASE.
    let sregs = vcpu.get_sregs().expect("sregs");
    assert_eq!(
        sregs.apic_base & APIC_BASE_ENABLE,
        0,
        "{:#x}",
        sregs.apic_base
    );
    let mut msr = [hv::Msr {
        index: IA32_APIC_BASE,
        data: u64::MAX,
    }];
    vcpu.get_msrs(&mut msr).expect("read IA32_APIC_BASE");
    assert_eq!(msr[0].data, sregs.apic_base);
}

/// A guest whose exits are known exactly: each is counted once, where the
/// accelerator can observe it (`None` elsewhere), and only the VMM's kick
/// counts as a signal.
pub fn exits_are_counted_once(hv: &dyn Hypervisor) {
    let t = TestVm::new(hv, 1);
    let p = program(
        |a| {
            a.mov(rdi, SCRATCH)?;
            for _ in 0..3 {
                a.out(0x80, al)?;
            }
            for _ in 0..2 {
                a.in_(al, 0x90)?;
            }
            for _ in 0..2 {
                a.xor(eax, eax)?;
                a.cpuid()?;
            }
            // Four MSR accesses, all of them the LAPIC's.
            enable_x2apic(a)?;
            store_msr(a, X2APIC_ID, 0)?;
            store_msr(a, X2APIC_VERSION, 1)?;
            Ok(())
        },
        EXIT_OK,
    );
    t.load(&p);
    let mut vcpu = t.vcpu(0, p.load_addr);
    let io = TestIo::new(vcpu.kicker());
    assert_eq!(run_guest(&mut *vcpu, &io), None);
    assert_eq!(io.exit_value(), Some(EXIT_OK));
    let stats = vcpu.exit_stats();
    let expect = [
        // Three OUTs, two INs and the debug-exit write.
        (ExitReason::Io, 6),
        (ExitReason::Cpuid, 2),
        (ExitReason::MsrAccess, 4),
        (ExitReason::Hlt, 0),
        (ExitReason::Mmio, 0),
        (ExitReason::Shutdown, 0),
        // The test's I/O handler kicks the vCPU once, at the debug exit.
        (ExitReason::Signal, 1),
    ];
    for (reason, n) in expect {
        if let Some(seen) = stats.get(reason) {
            assert_eq!(seen, n, "{reason} exits");
        }
    }
}

/// INIT sent to the bootstrap processor resets it to the reset vector
/// (0xFFFF_FFF0, CS base 0xFFFF_0000), where a read-only ROM slot holds the
/// code it runs next, instead of waiting for a SIPI as an AP does; its MSRs
/// survive the INIT (SDM 9.1, table 9-1).
pub fn init_resets_the_bsp_to_the_reset_vector(hv: &dyn Hypervisor) {
    use arch::firmware::{RESET_VECTOR, ROM_BASE, ROM_SIZE};
    use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, GuestMemoryMmap};
    const FROM_ROM: u8 = 0x42;
    const SYSENTER_CS: u32 = 0x174;
    let t = TestVm::new(hv, 1);
    let rom = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(ROM_BASE), ROM_SIZE as usize)])
        .expect("map the ROM");
    // mov al, FROM_ROM; out DEBUG_EXIT, al; cli; hlt
    let stub = [0xb0, FROM_ROM, 0xe6, guests::DEBUG_EXIT as u8, 0xfa, 0xf4];
    rom.write_slice(&stub, GuestAddress(RESET_VECTOR))
        .expect("write the ROM");
    t.vm.set_memory_slot(hv::MemorySlot {
        id: 1,
        guest_addr: ROM_BASE,
        region: rom.iter().next().expect("one region").get_mmap(),
        read_only: true,
        log_dirty: false,
    })
    .expect("map the ROM slot");
    let p = program(
        |a| {
            a.mov(ecx, SYSENTER_CS)?;
            a.mov(eax, 0x10)?;
            a.xor(edx, edx)?;
            a.wrmsr()?;
            emit_lapic_enable(a)?;
            // INIT, level assert, to APIC ID 0: this processor.
            a.mov(rbx, LAPIC)?;
            a.mov(dword_ptr(rbx + 0x310), 0)?;
            a.mov(dword_ptr(rbx + 0x300), 0x4500)?;
            // Not reached: the INIT takes effect first.
            a.mov(eax, 0xbad)?;
            Ok(())
        },
        0xbad,
    );
    t.load(&p);
    let mut vcpu = t.vcpu(0, p.load_addr);
    let io = TestIo::new(vcpu.kicker());
    assert_eq!(run_guest(&mut *vcpu, &io), None);
    assert_eq!(
        io.exit_value(),
        Some(u32::from(FROM_ROM)),
        "ran from the ROM"
    );
    let sregs = vcpu.get_sregs().expect("sregs");
    assert_eq!(sregs.cs.base, 0xffff_0000, "CS base after INIT");
    assert_eq!(sregs.cs.selector, 0xf000);
    assert_eq!(sregs.cr0 & 1, 0, "real mode");
    let regs = vcpu.get_regs().expect("regs");
    assert!(
        (0xfff0..0xfff8).contains(&regs.rip),
        "RIP {:#x} in the stub",
        regs.rip
    );
    let mut msr = [hv::Msr {
        index: SYSENTER_CS,
        data: 0,
    }];
    vcpu.get_msrs(&mut msr).expect("read IA32_SYSENTER_CS");
    assert_eq!(msr[0].data, 0x10, "MSRs survive INIT");
}

const X2APIC_IRR_64: u32 = 0x822;
const X2APIC_SVR: u32 = 0x80f;

/// Emits: software-enable the x2APIC (SVR), so that it accepts vectors.
fn enable_svr(a: &mut CodeAssembler) -> guests::Result<()> {
    a.mov(ecx, X2APIC_SVR)?;
    a.mov(eax, 0x1ff)?;
    a.xor(edx, edx)?;
    a.wrmsr()?;
    Ok(())
}

/// CR8 is the LAPIC's task priority (TPR[7:4]), both ways.
pub fn cr8_is_the_lapic_tpr(hv: &dyn Hypervisor) {
    let t = TestVm::new(hv, 1);
    let p = program(
        |a| {
            a.mov(rdi, SCRATCH)?;
            enable_x2apic(a)?;
            enable_svr(a)?;
            a.mov(eax, 5)?;
            a.mov(cr8, rax)?;
            store_msr(a, X2APIC_TPR, 0)?;
            a.mov(ecx, X2APIC_TPR)?;
            a.mov(eax, 0x30)?;
            a.xor(edx, edx)?;
            a.wrmsr()?;
            a.mov(rax, cr8)?;
            a.mov(qword_ptr(rdi + 8), rax)?;
            Ok(())
        },
        EXIT_OK,
    );
    t.load(&p);
    let mut vcpu = t.vcpu(0, p.load_addr);
    let io = TestIo::new(vcpu.kicker());
    assert_eq!(run_guest(&mut *vcpu, &io), None);
    assert_eq!(io.exit_value(), Some(EXIT_OK));
    assert_eq!(t.read_u64(SCRATCH), 0x50, "TPR after MOV CR8, 5");
    assert_eq!(t.read_u64(SCRATCH + 8), 3, "CR8 after TPR = 0x30");
    // The VMM reads CR8 from the LAPIC too.
    assert_eq!(vcpu.get_sregs().expect("sregs").cr8, 3);
}

/// VMCALL follows KVM's hypercall ABI: an unknown number returns
/// -KVM_ENOSYS, KVM_HC_SEND_IPI returns how many vCPUs took the IPI (none
/// for APIC IDs beyond the machine; the vCPU itself for a bitmap naming
/// APIC ID 0, the vector then pending in its IRR).
///
/// Not in the cross-backend suite: KVM implements this ABI, but the
/// development machines' nested `kvm_pvm` does not return from a guest
/// VMCALL.
pub fn hypercalls_follow_kvm(hv: &dyn Hypervisor) {
    let t = TestVm::new(hv, 1);
    let p = program(
        |a| {
            a.mov(rdi, SCRATCH)?;
            enable_x2apic(a)?;
            enable_svr(a)?;
            // An unknown hypercall.
            a.mov(eax, 0x1234)?;
            a.vmcall()?;
            a.mov(qword_ptr(rdi), rax)?;
            // KVM_HC_SEND_IPI to APIC IDs from 0xffffffff: nobody.
            a.mov(eax, 10)?;
            a.mov(ebx, 0xffff_ffffu32)?;
            a.xor(ecx, ecx)?;
            a.mov(edx, 0xffff_ffffu32)?;
            a.xor(esi, esi)?;
            a.vmcall()?;
            a.mov(qword_ptr(rdi + 8), rax)?;
            // KVM_HC_SEND_IPI of vector 0x40 to APIC ID 0: this vCPU.
            a.mov(eax, 10)?;
            a.mov(ebx, 1)?;
            a.xor(ecx, ecx)?;
            a.xor(edx, edx)?;
            a.mov(esi, 0x40)?;
            a.vmmcall()?;
            a.mov(qword_ptr(rdi + 16), rax)?;
            store_msr(a, X2APIC_IRR_64, 3)?;
            Ok(())
        },
        EXIT_OK,
    );
    t.load(&p);
    let mut vcpu = t.vcpu(0, p.load_addr);
    let io = TestIo::new(vcpu.kicker());
    assert_eq!(run_guest(&mut *vcpu, &io), None);
    assert_eq!(io.exit_value(), Some(EXIT_OK));
    assert_eq!(t.read_u64(SCRATCH) as i64, -1000, "-KVM_ENOSYS");
    assert_eq!(t.read_u64(SCRATCH + 8), 0, "IPIs to nobody");
    assert_eq!(t.read_u64(SCRATCH + 16), 1, "IPIs to APIC ID 0");
    assert_eq!(t.read_u64(SCRATCH + 24) & 1, 1, "vector 0x40 in the IRR");
    assert!(vcpu
        .exit_stats()
        .get(ExitReason::Hypercall)
        .is_none_or(|n| n == 3));
}
