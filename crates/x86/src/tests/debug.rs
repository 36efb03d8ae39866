//! Debug facilities: single-step, instruction/data/I/O breakpoints, DR6
//! and DR7 semantics, general detect, ICEBP, RF, MOV SS holding traps,
//! SYSCALL/SYSRET and TF.

use iced_x86::code_asm::*;
use iced_x86::{BlockEncoderOptions, IcedError};

use super::*;
use crate::debug::{dr6, dr7};
use crate::exception::{BP, DB, UD};
use crate::state::rflags::{RF, TF};

/// The exception log: a count, then (vector, RIP, DR6, RFLAGS) records.
const LOG: u64 = DATA + 0x1000;
/// A page for data breakpoints (not the log's).
const WATCH: u64 = DATA + 0x2000;

struct Event {
    vector: u8,
    rip: u64,
    dr6: u64,
    rflags: u64,
}

/// A long-mode guest whose #DB, #BP and #UD handlers log the event. The
/// #DB handler sets RF in the frame when a B0-B3 bit is set (like
/// kvm-unit-tests' handler, so that an instruction breakpoint resumes);
/// the #UD handler skips a UD2.
fn guest() -> Guest {
    let mut g = Guest::long64();
    for (v, off) in [(DB, 0x300u64), (BP, 0x400), (UD, 0x500)] {
        g.gate64(v, HANDLERS + off, 0, 0, false);
        g.code_at(HANDLERS + off, |a| {
            let mut no_rf = a.create_label();
            a.push(rax)?;
            a.push(rbx)?;
            a.push(rcx)?;
            a.mov(rax, qword_ptr(LOG))?;
            a.shl(rax, 5)?;
            a.mov(qword_ptr(rax + LOG + 8), v as i32)?;
            a.mov(rbx, qword_ptr(rsp + 24))?;
            a.mov(qword_ptr(rax + LOG + 16), rbx)?;
            a.mov(rbx, dr6)?;
            a.mov(qword_ptr(rax + LOG + 24), rbx)?;
            a.mov(rcx, qword_ptr(rsp + 40))?;
            a.mov(qword_ptr(rax + LOG + 32), rcx)?;
            a.inc(qword_ptr(LOG))?;
            if v == DB {
                a.test(ebx, 0xf)?;
                a.jz(no_rf)?;
                a.or(qword_ptr(rsp + 40), RF as i32)?;
            }
            if v == UD {
                a.add(qword_ptr(rsp + 24), 2)?;
            }
            a.set_label(&mut no_rf)?;
            a.pop(rcx)?;
            a.pop(rbx)?;
            a.pop(rax)?;
            a.iretq()
        });
    }
    g
}

fn events(g: &Guest) -> Vec<Event> {
    let n = g.bus.read_u64(LOG).min(32);
    (0..n)
        .map(|i| {
            let r = LOG + 8 + i * 32;
            Event {
                vector: g.bus.read_u64(r) as u8,
                rip: g.bus.read_u64(r + 8),
                dr6: g.bus.read_u64(r + 16),
                rflags: g.bus.read_u64(r + 24),
            }
        })
        .collect()
}

/// Assembles `body` at CODE followed by HLT and runs it; returns the
/// address of every label in `marks` order (set by `body` through the
/// closure's labels).
fn run(
    g: &mut Guest,
    body: impl FnOnce(&mut CodeAssembler, &mut Vec<CodeLabel>) -> Result<(), IcedError>,
) -> Vec<u64> {
    let mut a = CodeAssembler::new(64).unwrap();
    let mut marks = Vec::new();
    body(&mut a, &mut marks).unwrap();
    a.hlt().unwrap();
    let r = a
        .assemble_options(CODE, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)
        .unwrap();
    g.bus.load(CODE, r.inner.code_buffer.as_slice());
    let addrs = marks.iter().map(|l| r.label_ip(l).unwrap()).collect();
    g.run_to_hlt();
    addrs
}

/// A label at the current position, remembered in `marks`.
fn mark(a: &mut CodeAssembler, marks: &mut Vec<CodeLabel>) -> Result<(), IcedError> {
    let mut l = a.create_label();
    a.set_label(&mut l)?;
    marks.push(l);
    Ok(())
}

fn set_tf(a: &mut CodeAssembler, on: bool) -> Result<(), IcedError> {
    a.pushfq()?;
    if on {
        a.or(qword_ptr(rsp), TF as i32)?;
    } else {
        a.and(qword_ptr(rsp), !(TF as i32))?;
    }
    a.popfq()
}

#[test]
fn single_step_traps_after_each_instruction_from_the_second_on() {
    let mut g = guest();
    let m = run(&mut g, |a, m| {
        set_tf(a, true)?;
        a.nop()?;
        mark(a, m)?;
        a.cpuid()?;
        mark(a, m)?;
        a.pushfq()?;
        mark(a, m)?;
        a.and(qword_ptr(rsp), !(TF as i32))?;
        mark(a, m)?;
        a.popfq()?; // clears TF, but TF was set when it started
        mark(a, m)?;
        a.nop()
    });
    let ev = events(&g);
    // POPF that set TF does not trap; the NOP after it does.
    let rips: Vec<u64> = ev.iter().map(|e| e.rip).collect();
    assert_eq!(rips, m[..5].to_vec());
    for (i, e) in ev.iter().enumerate() {
        assert_eq!(e.vector, DB);
        assert_eq!(e.dr6, dr6::FIXED1 | dr6::BS);
        // The last trap follows the POPF that cleared TF.
        assert_eq!(e.rflags & TF != 0, i < 4);
        assert_eq!(e.rflags & RF, 0);
    }
    assert_eq!(g.cpu.state.rflags() & TF, 0);
}

#[test]
fn instruction_breakpoint_faults_and_rf_lets_it_run() {
    let mut g = guest();
    let m = run(&mut g, |a, m| {
        let mut target = a.create_label();
        a.lea(rax, ptr(target))?;
        a.mov(dr0, rax)?;
        a.mov(eax, 0x401)?; // L0
        a.mov(dr7, rax)?;
        a.mov(ebx, 7)?;
        a.set_label(&mut target)?;
        m.push(target);
        a.mov(ebx, 1)?;
        a.xor(eax, eax)?;
        a.mov(dr7, rax)
    });
    let ev = events(&g);
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].vector, ev[0].rip), (DB, m[0]));
    assert_eq!(ev[0].dr6, dr6::FIXED1 | 1);
    // An instruction-breakpoint #DB pushes RF as it was (clear).
    assert_eq!(ev[0].rflags & RF, 0);
    assert_eq!(g.reg(3), 1, "the instruction ran after the handler set RF");
    assert_eq!(
        g.cpu.state.rflags() & RF,
        0,
        "RF cleared after one instruction"
    );
}

#[test]
fn data_breakpoints_trap_after_the_access() {
    let mut g = guest();
    // DR1: 4 bytes at WATCH + 4, write only (R/W1 = 01, LEN1 = 11), G1.
    let m = run(&mut g, |a, m| {
        a.mov(rax, WATCH + 4)?;
        a.mov(dr1, rax)?;
        a.mov(eax, 0x00d0_0008)?;
        a.mov(dr7, rax)?;
        a.mov(eax, dword_ptr(WATCH + 4))?; // read: no trap
        a.mov(word_ptr(WATCH + 6), ax)?; // overlaps: trap
        mark(a, m)?;
        a.mov(dword_ptr(WATCH + 8), eax)?; // next to it: no trap
                                           // R/W1 = 11: reads trap too.
        a.mov(eax, 0x00f0_0008)?;
        a.mov(dr7, rax)?;
        a.mov(rbx, qword_ptr(WATCH))?;
        mark(a, m)?;
        a.xor(eax, eax)?;
        a.mov(dr7, rax)?;
        // Disabled: the page is cached again and nothing traps.
        a.mov(qword_ptr(WATCH + 4), rax)
    });
    let ev = events(&g);
    let rips: Vec<u64> = ev.iter().map(|e| e.rip).collect();
    assert_eq!(rips, m);
    for e in &ev {
        assert_eq!(e.dr6, dr6::FIXED1 | 2);
    }
}

#[test]
fn io_breakpoints_need_cr4_de() {
    let mut g = guest();
    // DR2: port 0x80, R/W2 = 10, G2.
    let m = run(&mut g, |a, m| {
        a.mov(eax, 0x80)?;
        a.mov(dr2, rax)?;
        a.mov(eax, 0x0200_0020)?;
        a.mov(dr7, rax)?;
        a.out(0x80, al)?; // CR4.DE clear: no trap
        a.mov(rax, cr4)?;
        a.or(eax, cr4::DE as i32)?;
        a.mov(cr4, rax)?;
        a.out(0x81, al)?;
        a.out(0x80, al)?;
        mark(a, m)?;
        a.mov(edx, 0x7f)?;
        a.in_(ax, dx)?; // 0x7f..0x80 overlaps
        mark(a, m)?;
        a.xor(eax, eax)?;
        a.mov(dr7, rax)
    });
    let ev = events(&g);
    let rips: Vec<u64> = ev.iter().map(|e| e.rip).collect();
    assert_eq!(rips, m);
    assert!(ev.iter().all(|e| e.dr6 == dr6::FIXED1 | 4));
}

#[test]
fn general_detect_faults_once_and_clears_gd() {
    let mut g = guest();
    let m = run(&mut g, |a, m| {
        a.mov(eax, (dr7::GD | dr7::FIXED1) as u32)?;
        a.mov(dr7, rax)?;
        mark(a, m)?;
        a.mov(rbx, dr0)?;
        a.mov(rcx, dr7)
    });
    let ev = events(&g);
    assert_eq!(ev.len(), 1);
    assert_eq!((ev[0].vector, ev[0].rip), (DB, m[0]));
    assert_eq!(ev[0].dr6, dr6::FIXED1 | dr6::BD);
    // A fault-class #DB other than an instruction breakpoint pushes RF.
    assert_ne!(ev[0].rflags & RF, 0);
    assert_eq!(g.reg(1), dr7::FIXED1, "GD was cleared for the handler");
}

#[test]
fn icebp_is_a_trap_without_dr6_bits_and_int3_is_a_bp() {
    let mut g = guest();
    let m = run(&mut g, |a, m| {
        a.int1()?;
        mark(a, m)?;
        a.int3()?;
        mark(a, m)?;
        a.nop()
    });
    let ev = events(&g);
    assert_eq!(ev.len(), 2);
    assert_eq!(
        (ev[0].vector, ev[0].rip, ev[0].dr6),
        (DB, m[0], dr6::FIXED1)
    );
    assert_eq!((ev[1].vector, ev[1].rip), (BP, m[1]));
}

#[test]
fn mov_ss_holds_the_single_step_trap_for_one_instruction() {
    let mut g = guest();
    let m = run(&mut g, |a, m| {
        a.mov(eax, 0x18)?;
        set_tf(a, true)?;
        a.mov(ss, ax)?; // its trap is lost
        a.nop()?;
        mark(a, m)?;
        set_tf(a, false)
    });
    let ev = events(&g);
    // After the NOP, then the PUSHF, AND, POPF of set_tf.
    assert_eq!(ev.len(), 4);
    assert_eq!(ev[0].rip, m[0]);
    assert_eq!(ev[0].dr6, dr6::FIXED1 | dr6::BS);
}

#[test]
fn faults_push_rf_and_rf_lasts_one_instruction() {
    let mut g = guest();
    let m = run(&mut g, |a, m| {
        mark(a, m)?;
        a.ud2()?;
        a.int3()?; // the first instruction after IRET with RF
        mark(a, m)?;
        a.nop()
    });
    let ev = events(&g);
    assert_eq!(ev.len(), 2);
    assert_eq!((ev[0].vector, ev[0].rip), (UD, m[0]));
    assert_ne!(ev[0].rflags & RF, 0);
    assert_eq!((ev[1].vector, ev[1].rip), (BP, m[1]));
    assert_eq!(ev[1].rflags & RF, 0);
}

#[test]
fn dr6_and_dr7_read_back_with_their_fixed_bits() {
    let mut g = guest();
    g.gate64(13, HANDLERS + 0x600, 0, 0, false);
    g.code_at(HANDLERS + 0x600, |a| a.hlt());
    run(&mut g, |a, _| {
        a.xor(eax, eax)?;
        a.mov(dr6, rax)?;
        a.mov(dr7, rax)?;
        a.mov(r8, dr6)?;
        a.mov(r9, dr7)?;
        a.mov(rax, u64::MAX)?;
        a.mov(dr6, rax) // upper half set: #GP
    });
    assert_eq!(g.reg(8), dr6::FIXED1);
    assert_eq!(g.reg(9), dr7::FIXED1);
    assert_eq!(g.cpu.state.rip, HANDLERS + 0x601);
}

#[test]
fn syscall_and_sysret_single_step_by_tf_at_their_end() {
    let mut g = guest();
    g.cpu.state.msr.star = (0x18u64 << 48) | (0x10u64 << 32);
    g.cpu.state.msr.lstar = HANDLERS;
    g.cpu.state.msr.fmask = TF;
    g.code_at(HANDLERS, |a| {
        set_tf(a, false)?;
        a.hlt()
    });
    // CPL-3 HLT ends the last part.
    g.gate64(13, HANDLERS + 0x600, 0, 0, false);
    g.code_at(HANDLERS + 0x600, |a| a.hlt());
    // SYSCALL with TF set that FMASK clears: no trap.
    run(&mut g, |a, _| {
        set_tf(a, true)?;
        a.syscall()
    });
    assert_eq!(events(&g).len(), 0);
    // Without TF in FMASK: a trap at the first kernel instruction.
    g.cpu.state.msr.fmask = 0;
    g.cpu.state.rip = CODE;
    g.cpu.state.halted = false;
    g.cpu.flush_code();
    run(&mut g, |a, _| {
        set_tf(a, true)?;
        a.syscall()
    });
    let ev = events(&g);
    assert!(!ev.is_empty());
    assert_eq!((ev[0].rip, ev[0].dr6), (HANDLERS, dr6::FIXED1 | dr6::BS));
    // SYSRET that sets TF traps at the first user instruction.
    g.bus.write_u64(LOG, 0);
    g.cpu.state.rip = CODE;
    g.cpu.state.halted = false;
    set_tf_off(&mut g);
    g.cpu.flush_code();
    let m = run(&mut g, |a, m| {
        let mut user = a.create_label();
        a.lea(rcx, ptr(user))?;
        a.mov(r11, 0x102u64)?;
        a.sysretq()?;
        a.set_label(&mut user)?;
        m.push(user);
        a.nop()
    });
    let ev = events(&g);
    assert!(!ev.is_empty());
    assert_eq!((ev[0].rip, ev[0].dr6), (m[0], dr6::FIXED1 | dr6::BS));
}

fn set_tf_off(g: &mut Guest) {
    let f = g.cpu.state.rflags() & !TF;
    g.cpu.state.set_rflags(f);
}
