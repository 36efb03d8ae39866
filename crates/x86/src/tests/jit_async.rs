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

/// Runs the program on the interpreter, then on the JIT with a compiler
/// thread in short slices, calling `between` with the JIT's guest after
/// each slice (with units out or not); checks that both ended alike and
/// returns the JIT's guest.
fn against_the_interpreter(mut between: impl FnMut(&mut Guest)) -> Guest {
    let mut i = guest(Engine::Interp, false);
    assert_eq!(i.run(), CpuExit::Halt);
    let mut j = guest(Engine::Jit, true);
    let mut halted = false;
    for _ in 0..100_000 {
        match j.cpu.run(&mut j.bus, 500) {
            CpuExit::InstructionLimit => between(&mut j),
            CpuExit::Halt => {
                halted = true;
                break;
            }
            other => panic!("exit {other:?} at {:#x}", j.cpu.state.rip),
        }
    }
    assert!(halted, "no HLT");
    assert_same_cpu_state(&i, &j);
    assert_eq!(i.bus.bytes(), j.bus.bytes());
    j
}

/// Waits for the code of the units out, if any; whether there were.
fn wait_for_code(g: &Guest) -> bool {
    if g.cpu.jit_jobs_out() == 0 {
        return false;
    }
    assert!(
        g.cpu.jit_wait_ready(Duration::from_secs(30)),
        "no code came back"
    );
    true
}

#[test]
fn blocks_compiled_on_the_compiler_thread_run_as_the_interpreter() {
    if !jit_or_skip() {
        return;
    }
    let mut waited = 0;
    let j = against_the_interpreter(|g| waited += usize::from(wait_for_code(g)));
    assert!(waited > 0, "nothing went to the compiler thread");
    let c = j.cpu.cache_counters();
    assert_eq!(c.jit_compiles_stale.get(), 0);
    assert_eq!(c.jit_compile_failures.get(), 0);
    assert!(c.jit_compile_us.get() > 0);
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
    let mut flushes = 0;
    let j = against_the_interpreter(|g| {
        if g.cpu.jit_jobs_out() > 0 && flushes < 3 {
            g.cpu.flush_code();
            flushes += 1;
        }
        wait_for_code(g);
    });
    assert_eq!(flushes, 3);
    let stale = j.cpu.cache_counters().jit_compiles_stale.get();
    assert!(stale >= 3, "stale {stale}");
}
