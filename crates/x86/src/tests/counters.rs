//! The TLB and code-cache counters, the code cache's byte budget, and
//! multi-byte accesses served by the TLB.

use iced_x86::code_asm::*;

use super::*;
use crate::counters::{BlockDrop, TlbFlush};

/// Where the long run of distinct code is placed.
const NOPS: u64 = 0x40_0000;

#[test]
fn the_code_cache_stays_under_its_byte_budget_and_evicts_the_oldest_blocks() {
    const BUDGET: usize = 4 << 20;
    const LEN: usize = 2 << 20;
    let mut g = Guest::long64();
    g.cpu.set_code_cache_budget(BUDGET);
    // 2 MiB of NOPs (32768 blocks of 64, ~230 MB of ops unbounded), run
    // three times, then HLT.
    g.bus.load(NOPS, &vec![0x90; LEN]);
    g.code_at(NOPS + LEN as u64, |a| {
        a.dec(rcx)?;
        a.jnz(NOPS)?;
        a.hlt()
    });
    g.code(|a| {
        a.mov(rcx, 3u64)?;
        a.mov(rax, NOPS)?;
        a.jmp(rax)
    });
    let mut exit = CpuExit::InstructionLimit;
    for _ in 0..20 {
        exit = g.run();
        if exit != CpuExit::InstructionLimit {
            break;
        }
    }
    assert_eq!(exit, CpuExit::Halt, "rip={:#x}", g.cpu.state.rip);
    assert_eq!(g.reg(1), 0, "the loop ran three times");
    let c = g.cpu.cache_counters();
    let built = c.blocks_built.get();
    assert!(built >= 3 * (LEN / 64) as u64, "blocks built {built}");
    assert!(c.drops(BlockDrop::Evicted) > 2 * (LEN / 64) as u64);
    let peak = c.code_cache_peak_bytes.get();
    assert!(peak <= BUDGET as u64, "peak {peak} over {BUDGET}");
    assert!(peak > BUDGET as u64 / 2, "peak {peak}: the budget was used");
    assert_eq!(c.code_cache_bytes.get(), g.cpu.blocks.bytes() as u64);
    assert!(g.cpu.blocks.bytes() <= BUDGET);
}

/// A block the guest keeps running survives the eviction of the distinct
/// code streaming past it (its second chance): 4096 pieces of 63 NOPs and
/// a CALL of one small function, through a cache that holds a few hundred
/// pieces. First in, first out rebuilt the function each time it reached
/// the front of the order (37 times here).
#[test]
fn a_block_kept_in_use_survives_the_eviction_of_the_code_around_it() {
    const PIECES: u64 = 4096;
    const PIECE: u64 = 63 + 5;
    const HOT: u64 = 0x30_0000;
    let mut g = Guest::long64();
    g.cpu.set_code_cache_budget(1 << 20);
    // inc rbx; ret
    g.bus.load(HOT, &[0x48, 0xff, 0xc3, 0xc3]);
    let mut code = Vec::with_capacity((PIECES * PIECE) as usize + 1);
    for i in 0..PIECES {
        code.extend_from_slice(&[0x90; 63]);
        let next = NOPS + (i + 1) * PIECE;
        code.push(0xe8);
        code.extend_from_slice(&((HOT as i64 - next as i64) as i32).to_le_bytes());
    }
    code.push(0xf4); // hlt
    g.bus.load(NOPS, &code);
    g.code(|a| {
        a.xor(rbx, rbx)?;
        a.mov(rax, NOPS)?;
        a.jmp(rax)
    });
    while g.run() == CpuExit::InstructionLimit {}
    assert_eq!(g.reg(3), PIECES, "the function ran once a piece");
    let c = g.cpu.cache_counters();
    assert!(
        c.drops(BlockDrop::Evicted) > PIECES / 2,
        "the pieces were evicted"
    );
    let built = c.blocks_built.get();
    // A block ends where an instruction starts on the next page: a piece
    // with one of its 64 instructions starting there is two blocks.
    let split = (0..PIECES)
        .filter(|i| (NOPS + i * PIECE) >> 12 != (NOPS + i * PIECE + 63) >> 12)
        .count() as u64;
    // Each piece once, the function once, the setup block and the HLT.
    let once = PIECES + split + 3;
    assert_eq!(built, once, "blocks built ({split} pieces split by a page)");
}

#[test]
fn the_default_budget_bounds_the_cache() {
    let mut g = Guest::long64();
    const LEN: usize = 8 << 20;
    g.bus.load(NOPS, &vec![0x90; LEN]);
    g.code_at(NOPS + LEN as u64, |a| a.hlt());
    g.code(|a| {
        a.mov(rax, NOPS)?;
        a.jmp(rax)
    });
    while g.run() == CpuExit::InstructionLimit {}
    let c = g.cpu.cache_counters();
    assert!(c.drops(BlockDrop::Evicted) > 0);
    assert!(c.code_cache_peak_bytes.get() <= crate::block::CODE_CACHE_BYTES as u64);
}

#[test]
fn sixteen_byte_accesses_are_served_by_the_tlb_after_one_walk() {
    let mut g = Guest::long64();
    g.code(|a| {
        a.mov(rcx, 1000u64)?;
        let mut top = a.create_label();
        a.set_label(&mut top)?;
        a.movdqu(xmm0, xmmword_ptr(DATA + 0xff8))?; // straddles two pages
        a.movdqu(xmmword_ptr(DATA + 0x2ff8), xmm0)?; // likewise
        a.movdqu(xmm1, xmmword_ptr(DATA + 0x100))?;
        a.movdqu(xmmword_ptr(DATA + 0x200), xmm1)?;
        a.dec(rcx)?;
        a.jnz(top)?;
        a.hlt()
    });
    g.bus.load(DATA + 0xff8, &(0..16).collect::<Vec<u8>>());
    g.run_to_hlt();
    let b = g.bus.bytes();
    let at = (DATA + 0x2ff8) as usize;
    assert_eq!(&b[at..at + 16], &(0..16).collect::<Vec<u8>>()[..]);
    let walks = g.cpu.cache_counters().tlb_walks.get();
    // Code, stack and four data pages, each walked for reading and for
    // writing at most: not once per access.
    assert!(walks < 20, "{walks} page walks for 4000 accesses");
}

#[test]
fn flushes_are_counted_by_cause() {
    let mut g = Guest::long64();
    g.code(|a| {
        a.mov(rax, cr3)?;
        a.mov(cr3, rax)?;
        a.mov(cr3, rax)?;
        a.invlpg(byte_ptr(DATA))?;
        a.mov(rax, cr4)?;
        a.or(rax, 1 << 7)?; // PGE
        a.mov(cr4, rax)?;
        a.hlt()
    });
    let c = g.cpu.cache_counters().clone();
    let before: Vec<u64> = TlbFlush::ALL.iter().map(|&f| c.flushes(f)).collect();
    g.run_to_hlt();
    let delta = |f: TlbFlush| c.flushes(f) - before[f as usize];
    assert_eq!(delta(TlbFlush::Cr3), 2);
    assert_eq!(delta(TlbFlush::Invlpg), 1);
    assert_eq!(delta(TlbFlush::PagingControl), 1);
    assert_eq!(delta(TlbFlush::Invpcid), 0);
    assert_eq!(delta(TlbFlush::MemoryMap), 0);
    // The snapshot names every counter once.
    let names: Vec<&str> = c.snapshot().iter().map(|(n, _)| *n).collect();
    let mut unique = names.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(names.len(), unique.len());
    assert!(names.contains(&"tlb_flush_cr3") && names.contains(&"code_cache_bytes"));
}

#[test]
fn a_requested_flush_is_counted_once_by_its_cause() {
    let mut g = Guest::long64();
    g.code(|a| a.hlt());
    let c = g.cpu.cache_counters().clone();
    g.cpu.signals().request_flush(TlbFlush::DirtyLog);
    assert!(g.cpu.flush_if_requested());
    assert!(!g.cpu.flush_if_requested(), "already done");
    assert_eq!(c.flushes(TlbFlush::DirtyLog), 1);
    g.cpu.signals().request_flush(TlbFlush::MemoryMap);
    g.run_to_hlt();
    assert_eq!(c.flushes(TlbFlush::MemoryMap), 1, "run did it");
    assert!(!g.cpu.flush_if_requested());
}
