//! Compiling on the compiler thread (`jit::worker`): the CPU interprets a
//! hot block while its unit compiles, installs the code between blocks,
//! and ends as the interpreter ends; code for a block dropped while it
//! compiled is discarded.

use std::time::Duration;

use iced_x86::code_asm::*;
use iced_x86::IcedError;

use super::*;
use crate::jit::Compiler;
use crate::Engine;

/// A compiler thread as the VMM starts one (unsandboxed here).
fn compiler() -> std::sync::Arc<Compiler> {
    Compiler::new(Box::new(|f| {
        std::thread::Builder::new()
            .name("test-jit".into())
            .spawn(f)
            .map(|_| ())
    }))
}

/// A loop of a few blocks: a conditional, memory written and read back,
/// flags carried across a block boundary (ADC after DEC).
fn program(a: &mut CodeAssembler) -> Result<(), IcedError> {
    let (mut top, mut odd, mut join) = (a.create_label(), a.create_label(), a.create_label());
    a.mov(rdi, DATA)?;
    a.xor(eax, eax)?;
    a.mov(ecx, 5000u32)?;
    a.set_label(&mut top)?;
    a.test(cl, 1)?;
    a.jnz(odd)?;
    a.add(rbx, 7)?;
    a.jmp(join)?;
    a.set_label(&mut odd)?;
    a.sub(rbx, 3)?;
    a.stc()?;
    a.set_label(&mut join)?;
    a.mov(qword_ptr(rdi + rcx * 8), rbx)?;
    a.add(rax, qword_ptr(rdi + rcx * 8))?;
    a.adc(rdx, 1)?;
    a.dec(ecx)?;
    a.jnz(top)?;
    a.hlt()
}

fn guest(engine: Engine, async_jit: bool) -> Guest {
    let mut g = Guest::long64();
    g.cpu.set_engine(engine);
    g.cpu.jit_hot = 4;
    if async_jit {
        g.cpu.set_jit_compiler(compiler());
    }
    g.code(program);
    g
}

/// Runs `g` to HLT in short slices; between them `between` sees the CPU
/// (with units out or not).
fn run_in_slices(g: &mut Guest, mut between: impl FnMut(&mut Guest)) {
    for _ in 0..100_000 {
        match g.cpu.run(&mut g.bus, 500) {
            CpuExit::InstructionLimit => between(g),
            CpuExit::Halt => return,
            other => panic!("exit {other:?} at {:#x}", g.cpu.state.rip),
        }
    }
    panic!("no HLT");
}

#[test]
fn blocks_compiled_on_the_compiler_thread_run_as_the_interpreter() {
    if !jit_or_skip() {
        return;
    }
    let mut i = guest(Engine::Interp, false);
    assert_eq!(i.run(), CpuExit::Halt);
    let mut j = guest(Engine::Jit, true);
    let mut waited = 0;
    run_in_slices(&mut j, |g| {
        if g.cpu.jit_jobs_out() > 0 {
            assert!(
                g.cpu.jit_wait_ready(Duration::from_secs(30)),
                "no code came back"
            );
            waited += 1;
        }
    });
    assert!(waited > 0, "nothing went to the compiler thread");
    assert_same_cpu_state(&i, &j);
    let c = j.cpu.cache_counters();
    assert_eq!(c.jit_compiles_stale.get(), 0);
    assert_eq!(c.jit_compile_failures.get(), 0);
    assert!(c.jit_compile_us.get() > 0);
    assert_eq!(i.bus.bytes(), j.bus.bytes());
}

/// Blocks dropped (a flush, as a code write or a new memory map makes)
/// while their units compile: the code that comes back is discarded, the
/// blocks are decoded and compiled again, and the guest ends as the
/// interpreter's.
#[test]
fn code_for_blocks_dropped_while_they_compiled_is_discarded() {
    if !jit_or_skip() {
        return;
    }
    let mut i = guest(Engine::Interp, false);
    assert_eq!(i.run(), CpuExit::Halt);
    let mut j = guest(Engine::Jit, true);
    let mut flushes = 0;
    run_in_slices(&mut j, |g| {
        if g.cpu.jit_jobs_out() > 0 {
            if flushes < 3 {
                g.cpu.flush_code();
                flushes += 1;
            }
            assert!(
                g.cpu.jit_wait_ready(Duration::from_secs(30)),
                "no code came back"
            );
        }
    });
    assert_eq!(flushes, 3);
    let c = j.cpu.cache_counters();
    assert!(
        c.jit_compiles_stale.get() >= 3,
        "stale {}",
        c.jit_compiles_stale.get()
    );
    assert_same_cpu_state(&i, &j);
    assert_eq!(i.bus.bytes(), j.bus.bytes());
}
