//! Regions (`jit::region`): loops of small blocks in one page compiled as
//! one function, against the interpreter and against regions turned off:
//! the loops, a fault inside a member, members evicted while their region
//! runs, the budget on a region's edges.

use iced_x86::code_asm::*;
use iced_x86::IcedError;

use super::*;
use crate::Engine;

/// A guest on `engine`, every block compiled the first time it runs
/// whole, regions of up to `region` blocks.
fn guest(engine: Engine, region: usize) -> Guest {
    let mut g = Guest::long64();
    g.cpu.set_engine(engine);
    g.cpu.jit_hot = 1;
    g.cpu.jit_region = region;
    g
}

/// A loop of four blocks (a conditional inside, a byte scan that loops
/// on itself, flags read across a block boundary by INC's carry and a
/// Jcc) runs inside one region, and ends as the interpreter and the JIT
/// without regions end.
#[test]
fn a_loop_of_blocks_runs_inside_its_region() {
    if !jit_or_skip() {
        return;
    }
    let program = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        let (mut top, mut odd, mut join, mut scan) = (
            a.create_label(),
            a.create_label(),
            a.create_label(),
            a.create_label(),
        );
        // A zero-terminated run of 5 bytes at DATA.
        a.mov(rdi, DATA)?;
        a.mov(rax, 0x0005_0505_0505_u64)?;
        a.mov(qword_ptr(rdi), rax)?;
        a.xor(eax, eax)?;
        a.mov(ecx, 3000u32)?;
        a.set_label(&mut top)?;
        a.test(cl, 1)?;
        a.jnz(odd)?;
        a.add(rbx, 7)?;
        a.jmp(join)?;
        a.set_label(&mut odd)?;
        a.sub(rbx, 3)?;
        a.stc()?;
        a.set_label(&mut join)?;
        a.mov(rsi, rdi)?;
        a.set_label(&mut scan)?;
        a.inc(rsi)?; // keeps CF (the block's first op: no known flags)
        a.cmp(byte_ptr(rsi), 0)?;
        a.jne(scan)?;
        a.adc(rdx, rsi)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.hlt()
    };
    let run = |engine, region| {
        let mut g = guest(engine, region);
        g.code(program);
        assert_eq!(g.run(), CpuExit::Halt);
        g
    };
    let i = run(Engine::Interp, 8);
    let alone = run(Engine::Jit, 1);
    let j = run(Engine::Jit, 8);
    assert_same_cpu_state(&i, &alone);
    assert_same_cpu_state(&i, &j);
    let c = j.cpu.cache_counters();
    assert!(c.jit_region_blocks.get() > 0, "no block joined a region");
    // Every pass takes the edges back to the top and the scan's own.
    assert!(
        c.jit_local_jumps.get() > 3 * 2000,
        "local jumps {}",
        c.jit_local_jumps.get()
    );
    // Alone, only the scan loops on itself (3 times a pass); in the
    // region the loop's other edges (5 a pass) are local too.
    let own = alone.cpu.cache_counters().jit_local_jumps.get();
    assert!(
        c.jit_local_jumps.get() > own + 3 * 3000,
        "local jumps {} (alone {own})",
        c.jit_local_jumps.get()
    );
}

/// A page fault in a member of a region, after cached writes in the same
/// member: the frame's RIP, the registers and the retired count are the
/// interpreter's.
#[test]
fn a_fault_inside_a_region_is_exact() {
    if !jit_or_skip() {
        return;
    }
    let run = |engine| {
        let mut g = guest(engine, 8);
        g.gate64(14, HANDLERS, 0, 0, false);
        g.code_at(HANDLERS, |a| a.hlt());
        g.code(|a| {
            let (mut top, mut b) = (a.create_label(), a.create_label());
            a.mov(ecx, 400u32)?;
            a.mov(rdx, DATA)?;
            a.mov(r8, 0x1_0000_0000u64)?; // beyond the 4 GiB identity map
            a.set_label(&mut top)?;
            a.add(rax, 1)?;
            a.cmp(rax, 1_000_000)?;
            a.jne(b)?;
            a.hlt()?;
            a.set_label(&mut b)?;
            a.add(rsi, 3)?;
            a.mov(rdi, qword_ptr(rdx))?; // faults on the 401st pass
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
    assert!(j.cpu.cache_counters().jit_local_jumps.get() > 300);
    assert_eq!(j.reg(0), 401);
    assert_eq!(j.reg(6), 401 * 3 + 400 * 4, "b ran up to the load");
    assert_eq!(j.cpu.state.cr2, 0x1_0000_0000);
    let rip = j.bus.read_u64(j.reg(4) + 8);
    assert_eq!(rip, i.bus.read_u64(i.reg(4) + 8), "frame RIP");
    assert_same_cpu_state(&i, &j);
}

/// Members of a region evicted from the block cache while the region's
/// code runs them: the region runs its own copies, freed with it, and
/// ends as the interpreter.
#[test]
fn members_evicted_under_their_region() {
    if !jit_or_skip() {
        return;
    }
    let program = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        let (mut outer, mut top, mut b) = (a.create_label(), a.create_label(), a.create_label());
        a.mov(r9d, 6u32)?;
        a.set_label(&mut outer)?;
        a.mov(ecx, 200u32)?;
        a.set_label(&mut top)?;
        a.add(rbx, rcx)?;
        a.test(cl, 3)?;
        a.jz(b)?;
        a.xor(rbx, rax)?;
        a.set_label(&mut b)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        // Many blocks after the loop: they evict the loop's blocks.
        for k in 0..200 {
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
        let mut g = guest(engine, 8);
        g.cpu.blocks.set_budget(48 << 10);
        g.code(program);
        assert_eq!(g.run(), CpuExit::Halt);
        g
    };
    let i = run(Engine::Interp);
    let j = run(Engine::Jit);
    assert_same_cpu_state(&i, &j);
    let c = j.cpu.cache_counters();
    assert!(c.drops(crate::BlockDrop::Evicted) > 100);
    assert!(c.jit_region_blocks.get() > 0);
    assert!(c.jit_local_jumps.get() > 6 * 150);
}

/// A region's edges are bounded by the budget, not by the chain bound:
/// a loop of two blocks runs inside its region across thousands of
/// edges from a few entries, and stops at an instruction budget with the
/// interpreter's state exactly.
#[test]
fn region_edges_stop_at_the_budget() {
    if !jit_or_skip() {
        return;
    }
    let program = |a: &mut CodeAssembler| -> Result<(), IcedError> {
        let (mut top, mut b) = (a.create_label(), a.create_label());
        a.mov(ecx, 8000u32)?;
        a.set_label(&mut top)?;
        a.add(rax, 1)?;
        a.test(cl, 1)?;
        a.jz(b)?;
        a.add(rbx, 1)?;
        a.set_label(&mut b)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.hlt()
    };
    let mut g = guest(Engine::Jit, 8);
    g.cpu.jit_chain = 16;
    g.code(program);
    assert_eq!(g.run(), CpuExit::Halt);
    assert_eq!((g.reg(0), g.reg(3)), (8000, 4000));
    let c = g.cpu.cache_counters();
    let local = c.jit_local_jumps.get();
    assert!(local > 8000, "{local}");
    let entered = c.jit_block_runs.get() - c.jit_chained.get();
    assert!(entered < 100, "entered from the run loop {entered}");
    // Stopped by budgets in the middle of the loop (an odd count: inside
    // a block), against the interpreter stopped by the same budgets.
    for limit in [9_001, 20_003, 31_337] {
        let run = |engine| {
            let mut g = guest(engine, 8);
            g.code(program);
            assert_eq!(g.cpu.run(&mut g.bus, limit), CpuExit::InstructionLimit);
            g
        };
        let (i, j) = (run(Engine::Interp), run(Engine::Jit));
        assert_eq!(j.cpu.icount, limit);
        assert_same_cpu_state(&i, &j);
    }
}

/// INC keeps CF from the record in memory (made by the block before it,
/// across a region edge) and stores its own record only where something
/// reads it: here the #PF of the load after it, whose frame holds RFLAGS.
/// For each kind of record before it (SUB, INC, logic, ADD, a shift), the
/// frame's RFLAGS and the state are the interpreter's.
#[test]
fn inc_keeps_the_carry_of_the_record_before_it_at_a_fault() {
    if !jit_or_skip() {
        return;
    }
    type Setter = fn(&mut CodeAssembler) -> Result<(), IcedError>;
    let setters: [Setter; 5] = [
        |a| a.cmp(r10, 1),
        |a| {
            a.stc()?;
            a.inc(r10)
        },
        |a| a.test(r10, r10),
        |a| {
            a.mov(r10, -1i64)?;
            a.add(r10, 1)
        },
        |a| {
            a.mov(r10, -1i64)?;
            a.shl(r10, 1)
        },
    ];
    for setter in setters {
        let run = |engine| {
            let mut g = guest(engine, 8);
            g.gate64(14, HANDLERS, 0, 0, false);
            g.code_at(HANDLERS, |a| a.hlt());
            g.code(|a| {
                let (mut top, mut next) = (a.create_label(), a.create_label());
                a.mov(ecx, 4u32)?;
                a.mov(rdx, DATA)?;
                a.mov(r8, 0x1_0000_0000u64)?; // beyond the identity map
                a.set_label(&mut top)?;
                a.mov(r10, rcx)?;
                setter(a)?;
                a.jmp(next)?;
                a.set_label(&mut next)?;
                a.inc(rax)?;
                a.mov(rdi, qword_ptr(rdx))?; // faults on the 5th pass
                a.dec(ecx)?;
                a.cmovz(rdx, r8)?;
                a.jmp(top)
            });
            assert_eq!(g.run(), CpuExit::Halt);
            g
        };
        let (i, j) = (run(Engine::Interp), run(Engine::Jit));
        assert_eq!(j.reg(0), 5);
        assert_eq!(j.cpu.state.cr2, 0x1_0000_0000);
        // The frame: error code, RIP, CS, RFLAGS.
        let flags = |g: &Guest| g.bus.read_u64(g.reg(4) + 24);
        assert_eq!(flags(&j), flags(&i), "RFLAGS in the #PF frame");
        assert_same_cpu_state(&i, &j);
    }
}
