//! Kicks: during KVM_RUN, before the first run, between runs, during an
//! in-kernel HLT, and many in a row (no kick is ever lost).

use std::time::{Duration, Instant};

use hv::{MpState, VcpuExit};
use iced_x86::code_asm::*;

use crate::common::*;

/// `jmp $` at CODE.
fn spin() -> Vec<u8> {
    asm16(|a| {
        let mut l = a.create_label();
        a.set_label(&mut l)?;
        a.jmp(l)
    })
}

#[test]
fn kick_from_another_thread_interrupts_a_spinning_guest() {
    let Some(hv) = kvm_or_skip("kick_from_another_thread_interrupts_a_spinning_guest") else {
        return;
    };
    let mut g = Guest::new(&hv, &spin());
    let rec = Recorder::default();
    for delay_ms in [100u64, 200] {
        let dog = Watchdog::start(g.vcpu.kicker(), Duration::from_secs(20));
        let start = Instant::now();
        let kicker = kick_after(g.vcpu.kicker(), Duration::from_millis(delay_ms));
        let exit = g.vcpu.run(&rec).expect("run");
        let elapsed = start.elapsed();
        kicker.join().unwrap();
        assert!(!dog.stop(), "the kick did not interrupt the run");
        assert_eq!(exit, VcpuExit::Interrupted);
        // The run really ran until the kick: no stale kick from the
        // previous round made it return early.
        assert!(
            elapsed >= Duration::from_millis(delay_ms * 3 / 4),
            "returned after {elapsed:?}, kick was at {delay_ms} ms"
        );
        assert_eq!(g.vcpu.get_regs().unwrap().rip, CODE);
    }
    assert!(rec.take().is_empty());
}

#[test]
fn kick_before_the_first_run_returns_at_once_without_running_the_guest() {
    let Some(hv) = kvm_or_skip("kick_before_the_first_run_returns_at_once") else {
        return;
    };
    let code = asm16(|a| {
        a.mov(al, 0x42)?;
        a.out(0x80, al)?;
        a.out(DONE_PORT as i32, al)
    });
    let mut g = Guest::new(&hv, &code);
    let rec = Recorder::default();
    g.vcpu.kicker().kick();
    let dog = Watchdog::start(g.vcpu.kicker(), Duration::from_secs(20));
    let exit = g.vcpu.run(&rec).expect("run");
    assert!(!dog.stop());
    assert_eq!(exit, VcpuExit::Interrupted);
    assert!(rec.take().is_empty(), "the guest ran");
    assert_eq!(g.vcpu.get_regs().unwrap().rip, CODE);
    // The kick was consumed: the next run executes the guest.
    g.run_to_done(&rec, Duration::from_secs(10));
    assert_eq!(rec.take(), vec![Access::PioWrite(0x80, vec![0x42])]);
}

#[test]
fn kick_between_runs_interrupts_the_next_run() {
    let Some(hv) = kvm_or_skip("kick_between_runs_interrupts_the_next_run") else {
        return;
    };
    let mut g = Guest::new(&hv, &spin());
    let rec = Recorder::default();
    let kicker = kick_after(g.vcpu.kicker(), Duration::from_millis(20));
    assert_eq!(g.vcpu.run(&rec).unwrap(), VcpuExit::Interrupted);
    kicker.join().unwrap();
    // Now the vCPU has a recorded-then-cleared thread; kick while idle.
    g.vcpu.kicker().kick();
    let dog = Watchdog::start(g.vcpu.kicker(), Duration::from_secs(20));
    let start = Instant::now();
    assert_eq!(g.vcpu.run(&rec).unwrap(), VcpuExit::Interrupted);
    assert!(!dog.stop(), "the pending kick was lost");
    assert!(start.elapsed() < Duration::from_secs(2));
}

#[test]
fn kick_from_inside_the_io_handler_completes_the_instruction() {
    let Some(hv) = kvm_or_skip("kick_from_inside_the_io_handler_completes_the_instruction") else {
        return;
    };
    // The recorder kicks from inside pio_read of the done port: the IN is
    // still pending in KVM then. run must complete it (re-entering with
    // immediate_exit) before returning, so AL and RIP are final.
    let code = asm16(|a| {
        a.mov(ax, 0)?;
        a.in_(al, DONE_PORT as i32)?;
        a.in_(ax, DONE_PORT as i32)?;
        let mut l = a.create_label();
        a.set_label(&mut l)?;
        a.jmp(l)
    });
    let mut g = Guest::new(&hv, &code);
    let rec = Recorder::with_reads(0x3164);
    g.run_to_done(&rec, Duration::from_secs(10));
    let regs = g.vcpu.get_regs().unwrap();
    assert_eq!(regs.rip, CODE + 3 + 2, "RIP is past the IN");
    assert_eq!(regs.rax & 0xffff, 0x0064, "IN's value is in AL");
    g.run_to_done(&rec, Duration::from_secs(10));
    let regs = g.vcpu.get_regs().unwrap();
    assert_eq!(regs.rip, CODE + 3 + 2 + 2);
    assert_eq!(regs.rax & 0xffff, 0x3165);
}

#[test]
fn hlt_with_interrupts_off_blocks_until_kicked() {
    let Some(hv) = kvm_or_skip("hlt_with_interrupts_off_blocks_until_kicked") else {
        return;
    };
    let code = asm16(|a| {
        a.cli()?;
        a.hlt()?;
        let mut l = a.create_label();
        a.set_label(&mut l)?;
        a.jmp(l)
    });
    let mut g = Guest::new(&hv, &code);
    let rec = Recorder::default();
    let dog = Watchdog::start(g.vcpu.kicker(), Duration::from_secs(20));
    let start = Instant::now();
    let kicker = kick_after(g.vcpu.kicker(), Duration::from_millis(100));
    let exit = g.vcpu.run(&rec).expect("run");
    kicker.join().unwrap();
    assert!(!dog.stop());
    assert_eq!(
        exit,
        VcpuExit::Interrupted,
        "KVM blocks on HLT in the kernel"
    );
    assert!(start.elapsed() >= Duration::from_millis(75));
    assert_eq!(
        g.vcpu.get_regs().unwrap().rip,
        CODE + 2,
        "RIP is past the HLT"
    );
    assert_eq!(g.vcpu.get_mp_state().unwrap(), MpState::Halted);
    if hv.has_binary_stats() {
        let hlt = g.vcpu.exit_stats().get(hv::ExitReason::Hlt);
        assert!(hlt >= Some(1), "halt_exits {hlt:?}");
    }
}

#[test]
fn no_kick_is_lost_under_racing_kicks() {
    let Some(hv) = kvm_or_skip("no_kick_is_lost_under_racing_kicks") else {
        return;
    };
    let mut g = Guest::new(&hv, &spin());
    let rec = Recorder::default();
    for i in 0..200u64 {
        // Kicks land before, around and during the entry into KVM_RUN.
        let delay = Duration::from_micros((i * 37) % 1500);
        let kicker = kick_after(g.vcpu.kicker(), delay);
        let dog = Watchdog::start(g.vcpu.kicker(), Duration::from_secs(10));
        let exit = g.vcpu.run(&rec).expect("run");
        let fired = dog.stop();
        kicker.join().unwrap();
        assert!(!fired, "kick {i} (after {delay:?}) was lost");
        assert_eq!(exit, VcpuExit::Interrupted);
    }
}

#[test]
fn a_vcpu_moved_to_another_thread_is_still_kickable() {
    let Some(hv) = kvm_or_skip("a_vcpu_moved_to_another_thread_is_still_kickable") else {
        return;
    };
    let mut g = Guest::new(&hv, &spin());
    for round in 0..3u64 {
        let kicker = g.vcpu.kicker();
        let handle = std::thread::spawn(move || {
            let k = kick_after(kicker.clone(), Duration::from_millis(30));
            let dog = Watchdog::start(kicker, Duration::from_secs(10));
            let exit = g.vcpu.run(&Recorder::default()).expect("run");
            k.join().unwrap();
            assert!(!dog.stop(), "round {round}: kick lost");
            assert_eq!(exit, VcpuExit::Interrupted);
            g
        });
        g = handle.join().expect("vCPU thread");
    }
}

#[test]
fn a_kick_interrupts_only_its_own_vcpu() {
    let Some(hv) = kvm_or_skip("a_kick_interrupts_only_its_own_vcpu") else {
        return;
    };
    let g = Guest::with_vcpus(&hv, &spin(), 2);
    let Guest {
        vm,
        vcpu: mut v0,
        ram: _ram,
    } = g;
    let mut v1 = real_mode_vcpu(vm.as_ref(), 1);
    let (kick0, kick1) = (v0.kicker(), v1.kicker());
    let (tx, rx) = std::sync::mpsc::channel();
    let tx0 = tx.clone();
    let dog0 = Watchdog::start(kick0.clone(), Duration::from_secs(20));
    let dog1 = Watchdog::start(kick1.clone(), Duration::from_secs(20));
    let t0 = std::thread::spawn(move || {
        let exit = v0.run(&Recorder::default()).expect("run 0");
        tx0.send((0, exit)).unwrap();
    });
    let t1 = std::thread::spawn(move || {
        let exit = v1.run(&Recorder::default()).expect("run 1");
        tx.send((1, exit)).unwrap();
    });
    std::thread::sleep(Duration::from_millis(50));
    kick1.kick();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5))
            .expect("vCPU 1 returned"),
        (1, VcpuExit::Interrupted)
    );
    // vCPU 0 keeps running.
    assert!(rx.recv_timeout(Duration::from_millis(200)).is_err());
    kick0.kick();
    assert_eq!(
        rx.recv_timeout(Duration::from_secs(5))
            .expect("vCPU 0 returned"),
        (0, VcpuExit::Interrupted)
    );
    t0.join().unwrap();
    t1.join().unwrap();
    assert!(!dog0.stop() && !dog1.stop());
}
