//! The VMM debugger's layer (`debugger.rs`): single-step, INT3 as a
//! software breakpoint, hardware breakpoints and watchpoints, each a
//! `CpuExit::Debug` with the guest's own debug state untouched.

use hv::{DebugCause, GuestDebug, HwBreakpoint, HwKind};
use iced_x86::code_asm::*;
use iced_x86::BlockEncoderOptions;

use super::*;
use crate::exception::BP;

/// Loads `body` (then HLT) at CODE and returns its labels' addresses.
fn load(
    g: &mut Guest,
    body: impl FnOnce(&mut CodeAssembler, &mut Vec<CodeLabel>) -> Result<(), iced_x86::IcedError>,
) -> Vec<u64> {
    let mut a = CodeAssembler::new(64).unwrap();
    let mut marks = Vec::new();
    body(&mut a, &mut marks).unwrap();
    a.hlt().unwrap();
    let r = a
        .assemble_options(CODE, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
        .unwrap();
    g.bus.load(CODE, r.inner.code_buffer.as_slice());
    marks.iter().map(|l| r.label_ip(l).unwrap()).collect()
}

fn mark(a: &mut CodeAssembler, marks: &mut Vec<CodeLabel>) -> Result<(), iced_x86::IcedError> {
    let mut l = a.create_label();
    a.set_label(&mut l)?;
    marks.push(l);
    Ok(())
}

#[test]
fn single_step_stops_after_each_instruction_without_touching_tf_or_dr6() {
    let mut g = Guest::long64();
    let m = load(&mut g, |a, m| {
        a.mov(eax, 1)?;
        mark(a, m)?;
        a.add(eax, 2)?;
        mark(a, m)?;
        a.nop()
    });
    g.cpu.set_guest_debug(&GuestDebug {
        single_step: true,
        ..Default::default()
    });
    let guest_dr6 = g.cpu.state.dr[6];
    assert_eq!(g.run(), CpuExit::Debug(DebugCause::SingleStep));
    assert_eq!((g.cpu.state.rip, g.reg(0)), (m[0], 1));
    assert_eq!(g.run(), CpuExit::Debug(DebugCause::SingleStep));
    assert_eq!((g.cpu.state.rip, g.reg(0)), (m[1], 3));
    assert_eq!(g.cpu.state.rflags() & crate::state::rflags::TF, 0);
    assert_eq!(g.cpu.state.dr[6], guest_dr6);
    g.cpu.set_guest_debug(&GuestDebug::default());
    g.run_to_hlt();
}

#[test]
fn int3_stops_at_itself_when_intercepted_and_raises_bp_otherwise() {
    let mut g = Guest::long64();
    let m = load(&mut g, |a, m| {
        a.mov(ebx, 5)?;
        mark(a, m)?;
        a.int3()?;
        a.mov(ebx, 6)
    });
    g.cpu.set_guest_debug(&GuestDebug {
        sw_breakpoints: true,
        ..Default::default()
    });
    assert_eq!(g.run(), CpuExit::Debug(DebugCause::SwBreakpoint));
    assert_eq!((g.cpu.state.rip, g.reg(3)), (m[0], 5));
    // The debugger put the original byte back (a NOP here) and goes on.
    g.bus.load(m[0], &[0x90]);
    g.cpu.flush_code();
    g.run_to_hlt();
    assert_eq!(g.reg(3), 6);
    // Not intercepted: the guest's own #BP, through its IDT.
    let mut g = Guest::long64();
    g.gate64(BP, HANDLERS, 0, 0, false);
    g.code_at(HANDLERS, |a| {
        a.mov(edx, 0xb9)?;
        a.hlt()
    });
    load(&mut g, |a, _| a.int3());
    g.run_to_hlt();
    assert_eq!(g.reg(2), 0xb9);
}

#[test]
fn hw_breakpoint_stops_before_and_continuing_runs_the_instruction() {
    let mut g = Guest::long64();
    let m = load(&mut g, |a, m| {
        a.mov(ecx, 1)?;
        mark(a, m)?;
        a.mov(ecx, 2)?;
        a.nop()
    });
    let mut d = GuestDebug::default();
    d.hw[2] = Some(HwBreakpoint {
        addr: m[0],
        kind: HwKind::Exec,
        len: 1,
    });
    g.cpu.set_guest_debug(&d);
    assert_eq!(
        g.run(),
        CpuExit::Debug(DebugCause::HwBreakpoint { slot: 2 })
    );
    assert_eq!((g.cpu.state.rip, g.reg(1)), (m[0], 1));
    g.run_to_hlt();
    assert_eq!(g.reg(1), 2);
}

#[test]
fn watchpoints_stop_after_the_access_they_watch() {
    let mut g = Guest::long64();
    let var = DATA + 0x2000;
    let m = load(&mut g, |a, m| {
        a.mov(rax, qword_ptr(var))?; // a read: not a write watchpoint's
        a.mov(qword_ptr(var + 8), rax)?; // next to it
        a.mov(dword_ptr(var + 4), 7)?; // overlaps
        mark(a, m)?;
        a.nop()
    });
    let mut d = GuestDebug::default();
    d.hw[1] = Some(HwBreakpoint {
        addr: var,
        kind: HwKind::Write,
        len: 8,
    });
    g.cpu.set_guest_debug(&d);
    assert_eq!(g.run(), CpuExit::Debug(DebugCause::Watchpoint { slot: 1 }));
    assert_eq!(g.cpu.state.rip, m[0]);
    assert_eq!(g.bus.read_u64(var) >> 32, 7);
    g.run_to_hlt();
}

#[test]
fn debug_translation_leaves_the_page_tables_and_cr2_alone() {
    let mut g = Guest::long64();
    load(&mut g, |a, _| a.nop());
    let old_cr2 = g.cpu.state.cr2;
    let before = g.bus.ram.clone();
    assert_eq!(
        g.cpu.debug_translate(&mut g.bus, DATA + 0x123),
        Some(DATA + 0x123)
    );
    assert_eq!(
        g.cpu.debug_translate(&mut g.bus, 0xffff_8000_0000_0000),
        None
    );
    assert_eq!(g.cpu.state.cr2, old_cr2);
    assert!(g.bus.ram == before, "the walk wrote guest memory");
}
