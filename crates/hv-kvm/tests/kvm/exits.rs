//! Exits that return to the VMM, and exit accounting.

use std::time::Duration;

use hv::{ExitReason, Segment, VcpuExit};
use iced_x86::code_asm::*;

use crate::common::*;

#[test]
fn triple_fault_is_a_shutdown() {
    let Some(hv) = kvm_or_skip("triple_fault_is_a_shutdown") else {
        return;
    };
    // 32-bit protected mode (flat segments loaded through set_sregs) with
    // an empty IDT: UD2 → #UD → #GP (vector past the IDT limit) → #DF →
    // triple fault. (Real mode does not work here: on nested kvm_pvm the
    // host's emulator delivers real-mode exceptions without a limit check.)
    let mut a = CodeAssembler::new(32).unwrap();
    a.ud2().unwrap();
    let code = a.assemble(CODE).unwrap();
    let mut g = Guest::new(&hv, &code);
    let mut sregs = g.vcpu.get_sregs().unwrap();
    sregs.cr0 |= 1;
    sregs.cs = Segment::flat(0x8, 0xb, false);
    sregs.ds = Segment::flat(0x10, 0x3, false);
    sregs.ss = sregs.ds;
    sregs.es = sregs.ds;
    sregs.tr = Segment {
        limit: 0x67,
        selector: 0x18,
        type_: 0xb,
        present: true,
        ..Segment::default()
    };
    sregs.idt.limit = 0;
    g.vcpu.set_sregs(&sregs).unwrap();
    let rec = Recorder::default();
    let dog = Watchdog::start(g.vcpu.kicker(), Duration::from_secs(20));
    let exit = g.vcpu.run(&rec).expect("run");
    assert!(!dog.stop(), "no shutdown exit");
    assert_eq!(exit, VcpuExit::Shutdown);
    assert_eq!(g.vcpu.exit_stats().get(ExitReason::Shutdown), Some(1));
}

#[test]
fn exit_stats_count_io_exits() {
    let Some(hv) = kvm_or_skip("exit_stats_count_io_exits") else {
        return;
    };
    // Five port writes served by the VMM, then two PIT reads KVM serves in
    // the kernel (only KVM's binary stats see those).
    let code = asm16(|a| {
        for i in 0..5 {
            a.mov(al, i)?;
            a.out(0x80, al)?;
        }
        a.in_(al, 0x40)?;
        a.in_(al, 0x40)?;
        a.out(DONE_PORT as i32, al)
    });
    let mut g = Guest::new(&hv, &code);
    let before = g.vcpu.exit_stats();
    assert_eq!(before.get(ExitReason::Io), Some(0));
    assert_eq!(before.get(ExitReason::Cpuid), None, "not observable on kvm");
    let rec = Recorder::default();
    g.run_to_done(&rec, Duration::from_secs(10));
    assert_eq!(rec.take().len(), 5);
    let stats = g.vcpu.exit_stats();
    let io = stats.get(ExitReason::Io).expect("io counted");
    let total = stats.get(ExitReason::Total).expect("total counted");
    eprintln!("exit stats after the run: {stats:?}");
    // At least the 5 writes + the done port that reached userspace (KVM's
    // io_exits, where it counts them, adds the 2 in-kernel PIT reads).
    assert!(io >= 6, "io {io}");
    if hv.has_binary_stats() {
        for reason in [
            ExitReason::Hlt,
            ExitReason::ExternalInterrupt,
            ExitReason::InterruptWindow,
            ExitReason::IrqInjection,
            ExitReason::InsnEmulation,
            ExitReason::PageFault,
        ] {
            assert!(stats.get(reason).is_some(), "{reason} from binary stats");
        }
    } else {
        assert_eq!(stats.get(ExitReason::Hlt), None);
    }
    assert!(total >= io, "total {total} < io {io}");
    assert!(
        stats.get(ExitReason::Signal).unwrap_or(0) >= 1,
        "the done kick"
    );
}

#[test]
fn binary_stats_names_are_listed_when_the_host_has_them() {
    let Some(hv) = kvm_or_skip("binary_stats_names_are_listed_when_the_host_has_them") else {
        return;
    };
    let names = hv.vcpu_stat_names().expect("stat names");
    // `cargo test -p hv-kvm binary_stats -- --nocapture` shows them.
    eprintln!(
        "KVM_CAP_BINARY_STATS_FD: {}; vCPU stats: {}",
        hv.has_binary_stats(),
        names.join(" ")
    );
    if hv.has_binary_stats() {
        for name in ["exits", "io_exits", "halt_exits"] {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
    } else {
        assert!(names.is_empty());
    }
}
