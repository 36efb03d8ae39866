//! The chain step of compiled code (`jit::chain_emit` over the blocks'
//! exit records, `jit::exit`) with no chain bound (`jit_chain` at its
//! maximum, so only the step's checks can end a chain): stale links
//! after a TLB flush, another thread's code write, an interrupt window
//! request and a kick while a chain runs, the budget at its end, the
//! exit record filled for both sides of a branch, a block's code size.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;

use iced_x86::code_asm::*;
use iced_x86::IcedError;

use super::*;
use crate::exec::Exec;
use crate::{BlockDrop, Engine};

/// A guest on `engine`, every block compiled the first time it runs
/// whole and alone (no region: every step goes through the stub and the
/// exit records these tests look at), chains unbounded.
fn guest(engine: Engine) -> Guest {
    let mut g = Guest::long64();
    g.cpu.set_engine(engine);
    g.cpu.jit_hot = 1;
    g.cpu.jit_chain = u32::MAX;
    g.cpu.jit_region = 1;
    g
}

/// The 2 MiB page at V is remapped between two physical pages holding
/// different code at the same RIP, with INVLPG, before every jump to it:
/// no link made under the old TLB generation is followed, each pass
/// runs the code mapped now.
#[test]
fn a_link_made_before_invlpg_is_not_followed() {
    if !jit_or_skip() {
        return;
    }
    const V: u64 = 0x80_0000;
    // The PDE of V (PML4 → PDPT → the first PD at PML4 + 0x2000).
    const PDE: u64 = PML4 + 0x2000 + (V >> 21) * 8;
    let run = |engine| {
        let mut g = guest(engine);
        g.bus.write_u64(PDE, 0x40_0000 | 0x87);
        g.code(|a| {
            a.xor(qword_ptr(PDE), 0x20_0000)?;
            a.invlpg(byte_ptr(V))?;
            a.jmp(V)
        });
        for (phys, add) in [(0x40_0000usize, 1i32), (0x60_0000, 1000)] {
            let b = asm64(V, |a| {
                a.add(rbx, add)?;
                a.dec(ecx)?;
                a.jnz(CODE)?;
                a.hlt()
            });
            g.bus.load(phys as u64, &b);
        }
        g.cpu.state.gpr[1] = 300;
        assert_eq!(g.run(), CpuExit::Halt);
        g
    };
    let i = run(Engine::Interp);
    let j = run(Engine::Jit);
    assert_eq!(i.reg(3), 150 * 1000 + 150);
    assert_same_cpu_state(&i, &j);
    // (INVLPG ends its block, and every pass runs under a new key: no
    // block is chained to.)
}

/// A one-block loop runs until another thread (a device, as another CPU
/// would) rewrites its immediate: the chain sees the code-share stamp
/// move and the new code runs.
#[test]
fn code_written_by_another_thread_ends_an_unbounded_chain() {
    if !jit_or_skip() {
        return;
    }
    let mut g = guest(Engine::Jit);
    let share = Arc::new(crate::CodeShare::new());
    g.cpu.set_code_share(share.clone());
    g.code(|a| {
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        a.mov(eax, 0u32)?; // B8 imm32: the immediate at CODE + 1
        a.add(rbx, 1)?;
        a.test(eax, eax)?;
        a.jz(top)?;
        a.hlt()
    });
    // The CPU reads guest RAM through this pointer too (`Bus::ram`).
    let host = g.bus.ram(0, false).unwrap().host as usize;
    let writer = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        // SAFETY: guest RAM, alive until the run below returns (joined
        // after it); a byte store racing only with the CPU's decoder,
        // which rereads it after the share says it changed.
        unsafe { (*((host + CODE as usize + 1) as *const AtomicU8)).store(1, Ordering::SeqCst) };
        share.note_external_write(CODE + 1, 1);
    });
    // Seconds of work: only the write ends the loop.
    let exit = g.cpu.run(&mut g.bus, 5_000_000_000);
    writer.join().unwrap();
    assert_eq!(exit, CpuExit::Halt);
    assert!(g.reg(3) > 10_000, "the loop ran: {}", g.reg(3));
    let c = g.cpu.cache_counters();
    assert!(c.drops(BlockDrop::RemoteWrite) >= 1);
    assert!(c.jit_chained.get() > 10_000);
}

/// An interrupt window wanted while IF=0: the loop chains, then STI
/// opens the window and the run returns within a block of it.
#[test]
fn an_interrupt_window_is_seen_within_a_block() {
    if !jit_or_skip() {
        return;
    }
    let mut g = guest(Engine::Jit);
    g.code(|a| {
        let (mut top, mut spin) = (a.create_label(), a.create_label());
        a.set_label(&mut top)?;
        a.add(rax, 1)?;
        a.cmp(rax, 20_000)?;
        a.jne(top)?;
        a.sti()?;
        a.nop()?;
        a.set_label(&mut spin)?;
        a.add(rbx, 1)?;
        a.jmp(spin)
    });
    g.cpu.request_interrupt_window(true);
    assert_eq!(g.cpu.run(&mut g.bus, 100_000_000), CpuExit::InterruptWindow);
    assert_eq!(g.reg(0), 20_000);
    assert!(g.reg(3) <= 1, "ran {} blocks past the window", g.reg(3));
    assert!(g.cpu.can_inject_interrupt());
}

/// An endless loop of two chained blocks is stopped by a kick from
/// another thread.
#[test]
fn a_kick_ends_an_unbounded_chain() {
    if !jit_or_skip() {
        return;
    }
    let mut g = guest(Engine::Jit);
    g.code(|a| {
        let (mut top, mut b) = (a.create_label(), a.create_label());
        a.set_label(&mut top)?;
        a.add(rax, 1)?;
        a.jmp(b)?;
        a.set_label(&mut b)?;
        a.add(rbx, 1)?;
        a.jmp(top)
    });
    let signals = g.cpu.signals();
    let kicker = std::thread::spawn(move || {
        std::thread::sleep(std::time::Duration::from_millis(200));
        signals.kick();
    });
    let exit = g.cpu.run(&mut g.bus, 20_000_000_000);
    kicker.join().unwrap();
    assert_eq!(exit, CpuExit::Interrupted);
    assert!(g.reg(0) > 10_000, "the loop ran: {}", g.reg(0));
    let c = g.cpu.cache_counters();
    assert!(c.jit_chained.get() > 10_000);
    // The loop chained in the stub's common case, not `chain::next`.
    assert!(
        c.jit_chain_slow.get() < 100,
        "slow steps {}",
        c.jit_chain_slow.get()
    );
}

/// Blocks of 1 to 9 instructions chained in a loop, stopped by budgets
/// around the largest block (`Watch::fast_end`) and far from it: every
/// run stops where the interpreter's does, run after run.
#[test]
fn the_budget_is_exact_near_its_end() {
    if !jit_or_skip() {
        return;
    }
    let program = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        let mut labels: Vec<_> = (0..10).map(|_| a.create_label()).collect();
        for k in 0..9 {
            a.set_label(&mut labels[k])?;
            for _ in 0..k {
                a.add(rax, k as i32)?;
            }
            a.add(rdx, rax)?;
            if k == 8 {
                a.jmp(labels[0])?;
            } else {
                a.jmp(labels[k + 1])?;
            }
        }
        Ok(())
    };
    for max in [1, 2, 3, 7, 100, 254, 255, 256, 257, 300, 511, 1000, 4099] {
        let run = |engine| {
            let mut g = guest(engine);
            g.code(program);
            for _ in 0..3 {
                assert_eq!(g.cpu.run(&mut g.bus, max), CpuExit::InstructionLimit);
            }
            g
        };
        let i = run(Engine::Interp);
        let j = run(Engine::Jit);
        assert_same_cpu_state(&i, &j);
        assert!(j.cpu.instructions_retired() <= 3 * max);
    }
}

/// A block ending in a conditional branch that goes both ways in turn:
/// its exit record holds both successors under the current key, and the
/// loop chains through it without the slow path.
#[test]
fn the_exit_record_holds_both_sides_of_a_branch() {
    if !jit_or_skip() {
        return;
    }
    let mut g = guest(Engine::Jit);
    g.code(|a| {
        let (mut top, mut odd, mut join) = (a.create_label(), a.create_label(), a.create_label());
        a.mov(ecx, 20_000u32)?;
        a.set_label(&mut top)?;
        a.test(cl, 1)?;
        a.jnz(odd)?;
        a.add(rbx, 2)?;
        a.jmp(join)?;
        a.set_label(&mut odd)?;
        a.add(rbx, 1)?;
        a.set_label(&mut join)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.hlt()
    });
    assert_eq!(g.run(), CpuExit::Halt);
    assert_eq!(g.reg(3), 30_000);
    let c = g.cpu.cache_counters();
    // 2 or 3 blocks an iteration.
    assert!(c.jit_chained.get() > 45_000, "{}", c.jit_chained.get());
    assert!(
        c.jit_chain_slow.get() < 100,
        "slow steps {}",
        c.jit_chain_slow.get()
    );
    // The block at `top` (TEST, JNZ): both of its successors recorded.
    let (jump, key) = {
        let ex = Exec::new(&mut g.cpu, &mut g.bus);
        (ex.jump_key(), ex.chain_key())
    };
    let top = g
        .cpu
        .blocks
        .get_fast(CODE + 5, jump)
        .expect("the loop's block is cached");
    // SAFETY: no run since, the block is live.
    let slot = unsafe { &top.rt().jit };
    let rec = slot.exits_made().expect("compiled").entries();
    let mut rips: Vec<u64> = rec.iter().map(|e| e.0).collect();
    rips.sort();
    assert!(rec.iter().all(|e| e.1 == key && e.2 != 0));
    assert_eq!(rips.len(), 2);
    assert_ne!(rips[0], rips[1]);
}

/// The code of a two-block loop (`add; jmp`), decoded: a block ends in
/// one tail call to the stub and stays small (the caches hold ~3 000
/// blocks' worth of the shell loop poorly already). `--nocapture`
/// prints it.
#[test]
fn a_small_block_ends_in_one_tail_call() {
    if !jit_or_skip() {
        return;
    }
    let mut g = guest(Engine::Jit);
    g.code(|a| {
        let (mut top, mut b) = (a.create_label(), a.create_label());
        a.mov(ecx, 100u32)?;
        a.set_label(&mut top)?;
        a.add(rax, 1)?;
        a.jmp(b)?;
        a.set_label(&mut b)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.hlt()
    });
    assert_eq!(g.run(), CpuExit::Halt);
    let jump = Exec::new(&mut g.cpu, &mut g.bus).jump_key();
    let top = g.cpu.blocks.get_fast(CODE + 5, jump).expect("cached");
    // SAFETY: no run since, the block is live.
    let slot = unsafe { &top.rt().jit };
    let f = slot.entry().expect("compiled");
    let len = slot.code_bytes() - std::mem::size_of::<crate::jit::ExitRecord>();
    // SAFETY: the block's code, mapped readable while it lives.
    let code = unsafe { std::slice::from_raw_parts(f.addr() as *const u8, len) };
    let mut d = iced_x86::Decoder::with_ip(64, code, f.addr(), 0);
    let mut jumps = 0;
    for insn in &mut d {
        println!("{:#x} {:2} {:?}", insn.ip(), insn.len(), insn.code());
        // The tail call to the chain stub.
        jumps += (insn.code() == iced_x86::Code::Jmp_rm64) as u32;
    }
    println!("{len} bytes");
    assert_eq!(jumps, 1);
    assert!(len <= 160, "{len} bytes");
}

/// A function called from three places in a loop: its RET block's record
/// holds all three return sites, so that the steady state chains without
/// the slow path (a record of two ways missed on every return).
#[test]
fn a_return_to_three_callers_chains_through_the_record() {
    if !jit_or_skip() {
        return;
    }
    let mut g = guest(Engine::Jit);
    g.code(|a| {
        let (mut top, mut f) = (a.create_label(), a.create_label());
        a.mov(ecx, 3000u32)?;
        a.set_label(&mut top)?;
        a.call(f)?;
        a.add(rbx, 1)?;
        a.call(f)?;
        a.add(rbx, 2)?;
        a.call(f)?;
        a.add(rbx, 3)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.hlt()?;
        a.set_label(&mut f)?;
        a.add(rax, 1)?;
        a.ret()
    });
    assert_eq!(g.run(), CpuExit::Halt);
    assert_eq!((g.reg(0), g.reg(3)), (9000, 18000));
    let c = g.cpu.cache_counters();
    // 21 000 block steps; the first pass links each site once.
    assert!(c.jit_chained.get() > 20_000, "{}", c.jit_chained.get());
    assert!(
        c.jit_chain_slow.get() < 100,
        "slow steps {}",
        c.jit_chain_slow.get()
    );
}
