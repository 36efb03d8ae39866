//! Interpreter speed in guest MIPS per CPU second of the calling thread
//! (insensitive to other load on the machine, unlike the criterion bench
//! in `conformance`), on the loops of `benches/guest_mips.rs`:
//! `cargo test -p x86 --release mips -- --ignored --nocapture`.

use iced_x86::code_asm::*;
use iced_x86::IcedError;

use super::*;

const ITERATIONS: u32 = 2_000_000;

fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid clock id and a pointer to a timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn mips(name: &str, f: impl Fn(&mut CodeAssembler) -> Result<(), IcedError> + Copy) {
    let mut best = 0f64;
    for _ in 0..5 {
        let mut g = Guest::long64();
        g.code(|a| {
            f(a)?;
            a.hlt()
        });
        let t0 = thread_cpu_ns();
        assert_eq!(g.cpu.run(&mut g.bus, u64::MAX), CpuExit::Halt);
        let ns = thread_cpu_ns() - t0;
        best = best.max(g.cpu.instructions_retired() as f64 * 1e3 / ns as f64);
    }
    println!("{name}: {best:.0} MIPS");
}

#[test]
#[ignore = "prints MIPS for local profiling; the guest_mips criterion bench is the measurement"]
fn mips_of_the_benchmark_loops() {
    mips("integer loop", |a| {
        let mut top = a.create_label();
        a.mov(ecx, ITERATIONS)?;
        a.mov(rax, 1u64)?;
        a.mov(rbx, 3u64)?;
        a.set_label(&mut top)?;
        a.add(rax, rcx)?;
        a.xor(rbx, rax)?;
        a.imul_2(rdx, rbx)?;
        a.shl(rax, 3)?;
        a.sub(rdx, rax)?;
        a.and(rbx, 0x7fff_ffff)?;
        a.dec(ecx)?;
        a.jnz(top)
    });
    mips("memcpy loop", |a| {
        let mut top = a.create_label();
        a.mov(ecx, ITERATIONS)?;
        a.xor(r8d, r8d)?;
        a.set_label(&mut top)?;
        a.mov(rax, qword_ptr(r8 + DATA as i32))?;
        a.mov(qword_ptr(r8 + (DATA + 0x1_0000) as i32), rax)?;
        a.add(r8d, 8)?;
        a.and(r8d, 0xfff8)?;
        a.dec(ecx)?;
        a.jnz(top)
    });
    mips("call loop", |a| {
        let mut top = a.create_label();
        let mut done = a.create_label();
        let mut function = a.create_label();
        a.mov(ecx, ITERATIONS)?;
        a.xor(eax, eax)?;
        a.set_label(&mut top)?;
        a.call(function)?;
        a.dec(ecx)?;
        a.jnz(top)?;
        a.jmp(done)?;
        a.set_label(&mut function)?;
        a.add(rax, 1)?;
        a.ret()?;
        a.set_label(&mut done)?;
        a.nop()
    });
}
