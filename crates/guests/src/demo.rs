//! The demo guest that `ferrovisor demo` boots when no Linux test guest is
//! at hand: it identifies the CPU and the hypervisor through CPUID, computes
//! the primes below 100, prints everything on COM1 and resets the machine
//! through the i8042 (which ends the VM cleanly).

use super::*;

/// A scratch page for the guest, away from its code.
const SCRATCH: u64 = LOAD_ADDR + 0x1_0000;

pub fn program() -> Result<Program> {
    let mut a = assembler()?;
    let mut main = a.create_label();
    let mut putc = a.create_label();
    let mut puts = a.create_label();
    let mut putdec = a.create_label();
    let mut put_regs = a.create_label();
    a.jmp(main)?;

    let banner = emit_string(
        &mut a,
        "Hello from the Ferrovisor demo guest!\nCPU vendor:        ",
    )?;
    let hv_label = emit_string(&mut a, "\nHypervisor:        ")?;
    let primes_label = emit_string(&mut a, "\nPrimes below 100: ")?;
    let bye = emit_string(
        &mut a,
        "\nThe guest now resets the machine through the i8042. Bye!\n",
    )?;

    // putc: AL -> COM1. Clobbers RDX, preserves RAX's low byte via BL.
    a.set_label(&mut putc)?;
    {
        let mut wait = a.create_label();
        a.push(rbx)?;
        a.mov(bl, al)?;
        a.mov(dx, COM1_LSR as u32)?;
        a.set_label(&mut wait)?;
        a.in_(al, dx)?;
        a.test(al, 0x20)?;
        a.jz(wait)?;
        a.mov(al, bl)?;
        a.mov(dx, COM1 as u32)?;
        a.out(dx, al)?;
        a.pop(rbx)?;
        a.ret()?;
    }

    // puts: RSI -> NUL-terminated string on COM1. Clobbers RAX, RDX, RSI.
    a.set_label(&mut puts)?;
    {
        let mut done = a.create_label();
        a.mov(al, byte_ptr(rsi))?;
        a.test(al, al)?;
        a.jz(done)?;
        a.call(putc)?;
        a.inc(rsi)?;
        a.jmp(puts)?;
        a.set_label(&mut done)?;
        a.ret()?;
    }

    // putdec: RAX in decimal. Clobbers RAX, RCX, RDX, RSI, RDI.
    a.set_label(&mut putdec)?;
    {
        let mut digit = a.create_label();
        a.mov(rdi, SCRATCH + 64)?;
        a.mov(byte_ptr(rdi), 0)?;
        a.mov(rcx, 10u64)?;
        a.set_label(&mut digit)?;
        a.xor(edx, edx)?;
        a.div(rcx)?;
        a.add(dl, b'0' as u32)?;
        a.dec(rdi)?;
        a.mov(byte_ptr(rdi), dl)?;
        a.test(rax, rax)?;
        a.jnz(digit)?;
        a.mov(rsi, rdi)?;
        a.call(puts)?;
        a.ret()?;
    }

    // put_regs: print the 12 bytes EBX:EDX:ECX (vendor order) or, with
    // R8 = 1, EBX:ECX:EDX (hypervisor order).
    a.set_label(&mut put_regs)?;
    {
        let mut vendor_order = a.create_label();
        let mut stored = a.create_label();
        a.mov(rdi, SCRATCH)?;
        a.mov(dword_ptr(rdi), ebx)?;
        a.test(r8, r8)?;
        a.jz(vendor_order)?;
        a.mov(dword_ptr(rdi + 4), ecx)?;
        a.mov(dword_ptr(rdi + 8), edx)?;
        a.jmp(stored)?;
        a.set_label(&mut vendor_order)?;
        a.mov(dword_ptr(rdi + 4), edx)?;
        a.mov(dword_ptr(rdi + 8), ecx)?;
        a.set_label(&mut stored)?;
        a.mov(byte_ptr(rdi + 12), 0)?;
        a.mov(rsi, rdi)?;
        a.call(puts)?;
        a.ret()?;
    }

    a.set_label(&mut main)?;
    a.lea(rsi, ptr(banner))?;
    a.call(puts)?;
    a.xor(eax, eax)?;
    a.xor(ecx, ecx)?;
    a.cpuid()?;
    a.xor(r8d, r8d)?;
    a.call(put_regs)?;
    a.lea(rsi, ptr(hv_label))?;
    a.call(puts)?;
    a.mov(eax, 0x4000_0000u32)?;
    a.xor(ecx, ecx)?;
    a.cpuid()?;
    a.mov(r8d, 1)?;
    a.call(put_regs)?;
    a.lea(rsi, ptr(primes_label))?;
    a.call(puts)?;

    // for n in 2..100: if no d in 2..n divides n, print n.
    {
        let mut outer = a.create_label();
        let mut inner = a.create_label();
        let mut prime = a.create_label();
        let mut next_n = a.create_label();
        let mut done = a.create_label();
        a.mov(r12, 2u64)?;
        a.set_label(&mut outer)?;
        a.cmp(r12, 100)?;
        a.jae(done)?;
        a.mov(r13, 2u64)?;
        a.set_label(&mut inner)?;
        a.mov(rax, r13)?;
        a.imul_2(rax, r13)?;
        a.cmp(rax, r12)?;
        a.ja(prime)?;
        a.mov(rax, r12)?;
        a.xor(edx, edx)?;
        a.div(r13)?;
        a.test(rdx, rdx)?;
        a.jz(next_n)?;
        a.inc(r13)?;
        a.jmp(inner)?;
        a.set_label(&mut prime)?;
        a.mov(rax, r12)?;
        a.call(putdec)?;
        a.mov(al, b' ' as u32)?;
        a.call(putc)?;
        a.set_label(&mut next_n)?;
        a.inc(r12)?;
        a.jmp(outer)?;
        a.set_label(&mut done)?;
    }

    a.lea(rsi, ptr(bye))?;
    a.call(puts)?;
    emit_reset(&mut a)?;
    finish(a)
}

/// What the demo prints for the primes, to check its output.
pub const PRIMES_BELOW_100: &str =
    "2 3 5 7 11 13 17 19 23 29 31 37 41 43 47 53 59 61 67 71 73 79 83 89 97 ";
