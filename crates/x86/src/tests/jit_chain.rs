//! Block chaining inside compiled code (`jit::chain`) against the
//! interpreter: chained loops, a fault in a chained block, code written
//! under a chain, the instruction budget, eviction while chained, a kick
//! from another thread and the chain bound.

use iced_x86::code_asm::*;
use iced_x86::IcedError;

use super::*;
use crate::{BlockDrop, Engine};

/// A guest on `engine`, every block compiled the first time it runs whole.
fn guest(engine: Engine) -> Guest {
    let mut g = Guest::long64();
    g.cpu.set_engine(engine);
    g.cpu.jit_hot = 1;
    g
}

/// Direct jumps, both sides of a conditional branch, fall-through, CALL
/// and RET: the compiled blocks chain (and do not with a bound of 1) and
/// end where the interpreter does.
#[test]
fn chained_blocks_match_the_interpreter() {
    if !jit_or_skip() {
        return;
    }
    let program = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        let (mut top, mut b, mut even, mut join, mut f) = (
            a.create_label(),
            a.create_label(),
            a.create_label(),
            a.create_label(),
            a.create_label(),
        );
        a.mov(ecx, 2000u32)?;
        a.set_label(&mut top)?;
        a.add(rax, 3)?;
        a.jmp(b)?;
        a.set_label(&mut b)?;
        a.test(cl, 1)?;
        a.jz(even)?;
        a.add(rbx, 5)?;
        a.jmp(join)?;
        a.set_label(&mut even)?;
        a.sub(rbx, 1)?;
        a.set_label(&mut join)?;
        a.call(f)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.hlt()?;
        a.set_label(&mut f)?;
        a.imul_3(rsi, rsi, 3)?;
        a.add(rsi, rcx)?;
        a.ret()
    };
    let run = |engine, chain: u32| {
        let mut g = guest(engine);
        g.cpu.jit_chain = chain;
        g.code(program);
        assert_eq!(g.run(), CpuExit::Halt);
        g
    };
    let i = run(Engine::Interp, 128);
    let j = run(Engine::Jit, 128);
    assert_same_cpu_state(&i, &j);
    let c = j.cpu.cache_counters();
    // ~5 blocks an iteration, 2000 iterations.
    let chained = c.jit_chained.get();
    assert!(chained > 8_000, "chained {chained}");
    let off = run(Engine::Jit, 1);
    assert_same_cpu_state(&i, &off);
    assert_eq!(off.cpu.cache_counters().jit_chained.get(), 0);
    assert!(off.cpu.cache_counters().jit_block_runs.get() > 8_000);
}

/// A #PF on a load in a block reached through a chain of compiled blocks:
/// the frame holds the load's RIP, the ops before it ran, the retired
/// count is the interpreter's.
#[test]
fn page_fault_in_a_chained_block_is_exact() {
    if !jit_or_skip() {
        return;
    }
    let run = |engine| {
        let mut g = guest(engine);
        g.gate64(14, HANDLERS, 0, 0, false);
        g.code_at(HANDLERS, |a| a.hlt());
        g.code(|a| {
            let (mut top, mut b, mut c) = (a.create_label(), a.create_label(), a.create_label());
            a.mov(ecx, 4u32)?;
            a.mov(rdx, DATA)?;
            a.mov(r8, 0x1_0000_0000u64)?; // beyond the 4 GiB identity map
            a.set_label(&mut top)?;
            a.add(rax, 1)?;
            a.jmp(b)?;
            a.set_label(&mut b)?;
            a.add(rbx, 2)?;
            a.jmp(c)?;
            a.set_label(&mut c)?;
            a.add(rsi, 3)?;
            a.mov(rdi, qword_ptr(rdx))?; // faults on the 5th pass
            a.add(rsi, 4)?;
            a.dec(ecx)?;
            a.cmovz(rdx, r8)?;
            a.jmp(top)
        });
        assert_eq!(g.run(), CpuExit::Halt);
        g
    };
    let i = run(Engine::Interp);
    let j = run(Engine::Jit);
    assert!(j.cpu.cache_counters().jit_chained.get() >= 9);
    assert_eq!((j.reg(0), j.reg(3)), (5, 10), "top and b ran 5 times");
    assert_eq!(j.reg(6), 5 * 3 + 4 * 4, "c ran up to the load");
    assert_eq!(j.cpu.state.cr2, 0x1_0000_0000);
    let rip = j.bus.read_u64(j.reg(4) + 8);
    let insn: Vec<u8> = (0..3).map(|k| j.bus.read_u8(rip + k)).collect();
    assert_eq!(insn, [0x48, 0x8b, 0x3a], "frame RIP {rip:#x}");
    assert_eq!(rip, i.bus.read_u64(i.reg(4) + 8));
    assert_same_cpu_state(&i, &j);
}

/// A block rewrites the immediate of the block on another page it jumps
/// to, which jumps back: the chain never runs the stale code.
#[test]
fn code_written_under_a_chain_is_not_chained_to() {
    if !jit_or_skip() {
        return;
    }
    const TOP: u64 = CODE + 0x40;
    const B: u64 = CODE + 0x1000;
    let run = |engine| {
        let mut g = guest(engine);
        g.code(|a| {
            a.mov(ecx, 40u32)?;
            a.jmp(TOP)
        });
        g.code_at(TOP, |a| {
            a.mov(byte_ptr(B + 1), cl)?;
            a.jmp(B)
        });
        g.code_at(B, |a| {
            a.mov(eax, 1u32)?; // B8 imm32: the imm at B + 1
            a.add(ebx, eax)?;
            a.dec(ecx)?;
            a.jz(B + 0x40)?;
            a.jmp(TOP)
        });
        g.code_at(B + 0x40, |a| a.hlt());
        assert_eq!(g.run(), CpuExit::Halt);
        g
    };
    let i = run(Engine::Interp);
    let j = run(Engine::Jit);
    assert_eq!(i.reg(3), (1..=40).sum::<u64>());
    assert_same_cpu_state(&i, &j);
    let c = j.cpu.cache_counters();
    assert!(c.drops(BlockDrop::CodeWrite) >= 39);
    assert!(c.jit_chained.get() >= 30, "chained {}", c.jit_chained.get());
}

/// Two blocks chained in a loop, stopped by the instruction budget: the
/// chain stops where the interpreter does (no block past the budget).
#[test]
fn the_instruction_budget_stops_a_chain_exactly() {
    if !jit_or_skip() {
        return;
    }
    let program = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        let (mut top, mut b) = (a.create_label(), a.create_label());
        a.set_label(&mut top)?;
        a.add(rax, 1)?;
        a.add(rdx, rax)?;
        a.jmp(b)?;
        a.set_label(&mut b)?;
        a.add(rbx, 1)?;
        a.jmp(top)
    };
    for max in [1000, 1001, 1002, 5003, 77_777] {
        let run = |engine| {
            let mut g = guest(engine);
            g.code(program);
            assert_eq!(g.cpu.run(&mut g.bus, max), CpuExit::InstructionLimit);
            g
        };
        let i = run(Engine::Interp);
        let j = run(Engine::Jit);
        assert_same_cpu_state(&i, &j);
        assert!(j.cpu.instructions_retired() <= max);
        assert!(j.cpu.cache_counters().jit_chained.get() > max / 10);
    }
}

/// A hot chained loop and a sweep through cold blocks under a small code
/// cache: the hot blocks are evicted and rebuilt while linked to, and
/// the run ends as the interpreter's.
#[test]
fn eviction_while_chained() {
    if !jit_or_skip() {
        return;
    }
    let program = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        let (mut outer, mut hot, mut h2) = (a.create_label(), a.create_label(), a.create_label());
        a.mov(r9d, 8u32)?;
        a.set_label(&mut outer)?;
        a.mov(ecx, 50u32)?;
        a.set_label(&mut hot)?;
        a.add(rbx, rcx)?;
        a.jmp(h2)?;
        a.set_label(&mut h2)?;
        a.xor(rbx, rax)?;
        a.dec(ecx)?;
        a.jnz(hot)?;
        for k in 0..150 {
            let mut next = a.create_label();
            a.add(rax, k + 1)?;
            a.jmp(next)?;
            a.set_label(&mut next)?;
        }
        a.dec(r9d)?;
        a.jnz(outer)?;
        a.hlt()
    };
    let run = |engine| {
        let mut g = guest(engine);
        g.cpu.blocks.set_budget(64 << 10);
        g.code(program);
        assert_eq!(g.run(), CpuExit::Halt);
        g
    };
    let i = run(Engine::Interp);
    let j = run(Engine::Jit);
    assert_same_cpu_state(&i, &j);
    let c = j.cpu.cache_counters();
    assert!(
        c.drops(BlockDrop::Evicted) > 100,
        "{}",
        c.drops(BlockDrop::Evicted)
    );
    assert!(
        c.jit_chained.get() > 8 * 50,
        "chained {}",
        c.jit_chained.get()
    );
}

/// An endless chained loop is stopped by a kick from another thread (as
/// the VMM kicks a vCPU to deliver a timer interrupt), and the interrupt
/// is then delivered at a block boundary inside the loop.
#[test]
fn a_kick_stops_an_endless_chained_loop() {
    if !jit_or_skip() {
        return;
    }
    let mut g = guest(Engine::Jit);
    g.gate64(0x20, HANDLERS, 0, 0, false);
    g.code_at(HANDLERS, |a| a.hlt());
    g.code(|a| {
        let (mut top, mut b) = (a.create_label(), a.create_label());
        a.set_label(&mut top)?;
        a.add(rax, 1)?;
        a.jmp(b)?;
        a.set_label(&mut b)?;
        a.add(rbx, 1)?;
        a.jmp(top)
    });
    g.cpu.state.set_rflags(0x202);
    let signals = g.cpu.signals();
    let kicker = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        signals.kick();
    });
    // Far more than 200 ms of work: only the kick ends the run.
    let exit = g.cpu.run(&mut g.bus, 20_000_000_000);
    kicker.join().unwrap();
    assert_eq!(exit, CpuExit::Interrupted);
    assert!(g.reg(0) > 10_000, "the loop ran: {}", g.reg(0));
    assert!(g.cpu.cache_counters().jit_chained.get() > 10_000);
    let at = g.cpu.state.rip;
    assert!((CODE..CODE + 16).contains(&at), "stopped at {at:#x}");
    g.cpu.inject_external_interrupt(&mut g.bus, 0x20).unwrap();
    assert_eq!(g.run(), CpuExit::Halt);
    assert_eq!(g.bus.read_u64(g.reg(4)), at, "the frame's RIP");
}

/// A chain runs at most `jit_chain` blocks entered through the chain
/// stub before the run loop looks again; the edges inside compiled code
/// (a region's, a block's jump to itself) are bounded by the budget
/// alone, and counted as chained.
#[test]
fn chains_are_bounded() {
    if !jit_or_skip() {
        return;
    }
    // Each turn: two blocks (the loop's, the indirect jump's), each
    // entered from the other through the chain stub.
    let entered = |bound: u32| {
        let mut g = guest(Engine::Jit);
        g.cpu.jit_chain = bound;
        g.code(|a| {
            let (mut top, mut done) = (a.create_label(), a.create_label());
            a.mov(ecx, 8000u32)?;
            a.lea(rdx, ptr(top))?;
            a.set_label(&mut top)?;
            a.add(rax, 1)?;
            a.dec(ecx)?;
            a.jz(done)?;
            a.jmp(rdx)?;
            a.set_label(&mut done)?;
            a.hlt()
        });
        assert_eq!(g.run(), CpuExit::Halt);
        assert_eq!(g.reg(0), 8000);
        let c = g.cpu.cache_counters();
        assert!(
            c.jit_chained.get() > 12_000,
            "chained {}",
            c.jit_chained.get()
        );
        c.jit_block_runs.get() - c.jit_chained.get()
    };
    // 7 000 to 8 000 compiled turns, at most 7 (then 127) stub steps an
    // entry.
    let (e8, e128) = (entered(8), entered(128));
    assert!(e8 >= 2 * 7000 / 8, "entered from the run loop {e8}");
    assert!((2 * 7000 / 128..2 * 8000 / 64).contains(&e128), "{e128}");
    // A block that jumps to itself loops inside its code whatever the
    // bound: 7 999 edges from a handful of entries.
    let mut g = guest(Engine::Jit);
    g.cpu.jit_chain = 8;
    g.code(|a| {
        let mut top = a.create_label();
        a.mov(ecx, 8000u32)?;
        a.set_label(&mut top)?;
        a.add(rax, 1)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.hlt()
    });
    assert_eq!(g.run(), CpuExit::Halt);
    let c = g.cpu.cache_counters();
    assert!(
        c.jit_local_jumps.get() > 5_000,
        "{}",
        c.jit_local_jumps.get()
    );
    assert!(c.jit_block_runs.get() - c.jit_chained.get() < 3_000);
}
