//! Tiny 64-bit guest programs, assembled at run time with iced-x86's
//! `CodeAssembler`. They are entered in long mode (identity-mapped low
//! 4 GiB, interrupts off) with RDI = vCPU id, as the bare-ELF boot protocol
//! and the conformance harness both do. [`multiboot`] is the exception: a
//! 32-bit Multiboot kernel.
#![forbid(unsafe_code)]

use iced_x86::code_asm::*;

/// Where guest programs are placed (2 MiB, above the boot structures).
pub const LOAD_ADDR: u64 = 0x20_0000;

/// COM1 data and line-status ports.
pub const COM1: u16 = 0x3f8;
pub const COM1_LSR: u16 = 0x3fd;
/// QEMU-compatible debug-exit port.
pub const DEBUG_EXIT: u16 = 0xf4;
/// i8042 command port (0xFE pulses the reset line).
pub const I8042_CMD: u16 = 0x64;

pub type Result<T> = std::result::Result<T, IcedError>;

/// A program and the address it was assembled for.
#[derive(Debug, Clone)]
pub struct Program {
    pub load_addr: u64,
    pub code: Vec<u8>,
}

/// Starts a 64-bit program.
pub fn assembler() -> Result<CodeAssembler> {
    CodeAssembler::new(64)
}

/// Assembles `a` at [`LOAD_ADDR`].
pub fn finish(mut a: CodeAssembler) -> Result<Program> {
    let code = a.assemble(LOAD_ADDR)?;
    Ok(Program {
        load_addr: LOAD_ADDR,
        code,
    })
}

/// Emits: print the NUL-terminated string at label `text` on COM1, polling
/// the line-status register before each byte. Clobbers RAX, RDX, RSI.
pub fn emit_print(a: &mut CodeAssembler, text: CodeLabel) -> Result<()> {
    emit_print_each(a, text, |_| Ok(()))
}

/// [`emit_print`] with `after_byte`'s code run after each byte is sent
/// (RSI then points at the next byte; it may clobber RAX, RCX and RDX).
pub fn emit_print_each(
    a: &mut CodeAssembler,
    text: CodeLabel,
    mut after_byte: impl FnMut(&mut CodeAssembler) -> Result<()>,
) -> Result<()> {
    let mut next = a.create_label();
    let mut wait = a.create_label();
    let mut done = a.create_label();
    a.lea(rsi, ptr(text))?;
    a.set_label(&mut next)?;
    a.mov(dx, COM1_LSR as u32)?;
    a.set_label(&mut wait)?;
    a.in_(al, dx)?;
    a.test(al, 0x20)?;
    a.jz(wait)?;
    a.mov(al, byte_ptr(rsi))?;
    a.test(al, al)?;
    a.jz(done)?;
    a.mov(dx, COM1 as u32)?;
    a.out(dx, al)?;
    a.inc(rsi)?;
    after_byte(a)?;
    a.jmp(next)?;
    // A NOP carries the label, so that callers may label what follows.
    a.set_label(&mut done)?;
    a.nop()?;
    Ok(())
}

/// Emits a NUL-terminated string at a new label and returns the label.
pub fn emit_string(a: &mut CodeAssembler, text: &str) -> Result<CodeLabel> {
    let mut label = a.create_label();
    emit_string_at(a, &mut label, text)?;
    Ok(label)
}

/// Emits a NUL-terminated string at `label` (created earlier, so that
/// code before it can refer to it).
pub fn emit_string_at(a: &mut CodeAssembler, label: &mut CodeLabel, text: &str) -> Result<()> {
    a.set_label(label)?;
    let mut bytes = text.as_bytes().to_vec();
    bytes.push(0);
    a.db(&bytes)?;
    Ok(())
}

/// Emits: write EAX to the debug-exit port, then halt forever.
pub fn emit_debug_exit_eax(a: &mut CodeAssembler) -> Result<()> {
    a.out(DEBUG_EXIT as u32, eax)?;
    emit_halt_forever(a)
}

/// Prints `text` on COM1 one character at a time, with `delay` iterations
/// of a busy loop after each and its progress (the address of the next
/// character) stored at `progress` (a page of its own: the guest's only
/// data write), then writes `exit` to the debug-exit port. Everything it
/// needs is in its registers and memory: the snapshot tests' guest.
pub fn ticker(text: &str, delay: u32, progress: u64, exit: u32) -> Result<Program> {
    let mut a = assembler()?;
    let mut chars = a.create_label();
    emit_print_each(&mut a, chars, |a| {
        let mut spin = a.create_label();
        a.mov(rax, progress)?;
        a.mov(qword_ptr(rax), rsi)?;
        a.mov(ecx, delay)?;
        a.set_label(&mut spin)?;
        a.dec(ecx)?;
        a.jnz(spin)?;
        Ok(())
    })?;
    a.mov(eax, exit)?;
    emit_debug_exit_eax(&mut a)?;
    emit_string_at(&mut a, &mut chars, text)?;
    finish(a)
}

/// Emits: `cli; hlt` in a loop.
pub fn emit_halt_forever(a: &mut CodeAssembler) -> Result<()> {
    let mut again = a.create_label();
    a.cli()?;
    a.set_label(&mut again)?;
    a.hlt()?;
    a.jmp(again)?;
    Ok(())
}

/// Emits: pulse the reset line through the i8042, then halt forever.
pub fn emit_reset(a: &mut CodeAssembler) -> Result<()> {
    a.mov(al, 0xfe)?;
    a.out(I8042_CMD as u32, al)?;
    emit_halt_forever(a)
}

/// Prints `text` on COM1 then exits through the debug-exit port with
/// `value`. Only vCPU 0 does so; the others halt.
pub fn print_and_exit(text: &str, value: u32) -> Result<Program> {
    let mut a = assembler()?;
    let mut start = a.create_label();
    let mut ap = a.create_label();
    a.test(rdi, rdi)?;
    a.jnz(ap)?;
    a.jmp(start)?;
    a.set_label(&mut ap)?;
    emit_halt_forever(&mut a)?;
    let text_label = emit_string(&mut a, text)?;
    a.set_label(&mut start)?;
    emit_print(&mut a, text_label)?;
    a.mov(eax, value)?;
    emit_debug_exit_eax(&mut a)?;
    finish(a)
}

/// Reports what a custom CPU template changed through the debug-exit
/// port: bit 0 = CPUID.1:ECX bit 31 (hypervisor) is clear, bit 1 =
/// CPUID.1:EDX bit 30 (reserved) is set, bit 2 = IA32_MISC_ENABLE bits 11
/// and 12 (BTS and PEBS unavailable) are set.
pub fn cpu_template_probe() -> Result<Program> {
    let mut a = assembler()?;
    let mut s0 = a.create_label();
    let mut s1 = a.create_label();
    let mut s2 = a.create_label();
    a.mov(eax, 1u32)?;
    a.xor(ecx, ecx)?;
    a.cpuid()?;
    a.xor(r8d, r8d)?;
    a.bt(ecx, 31)?;
    a.jc(s0)?;
    a.or(r8d, 1)?;
    a.set_label(&mut s0)?;
    a.bt(edx, 30)?;
    a.jnc(s1)?;
    a.or(r8d, 2)?;
    a.set_label(&mut s1)?;
    a.mov(ecx, 0x1a0u32)?;
    a.rdmsr()?;
    a.and(eax, 0x1800)?;
    a.cmp(eax, 0x1800)?;
    a.jne(s2)?;
    a.or(r8d, 4)?;
    a.set_label(&mut s2)?;
    a.mov(eax, r8d)?;
    emit_debug_exit_eax(&mut a)?;
    finish(a)
}

/// Prints `text` on COM1, then asks for power off through the ACPI sleep
/// control register (S5: SLP_TYP 5 with SLP_EN), then halts forever. Only
/// vCPU 0 does so; the others halt.
pub fn acpi_poweroff(text: &str) -> Result<Program> {
    use arch::acpi::pm::{ACPI_SLEEP_CONTROL_PORT, SLEEP_CONTROL_SLP_EN, SLP_TYP_S5};
    let mut a = assembler()?;
    let mut start = a.create_label();
    let mut ap = a.create_label();
    a.test(rdi, rdi)?;
    a.jnz(ap)?;
    a.jmp(start)?;
    a.set_label(&mut ap)?;
    emit_halt_forever(&mut a)?;
    let text_label = emit_string(&mut a, text)?;
    a.set_label(&mut start)?;
    emit_print(&mut a, text_label)?;
    a.mov(dx, u32::from(ACPI_SLEEP_CONTROL_PORT))?;
    a.mov(al, u32::from(SLP_TYP_S5 << 2 | SLEEP_CONTROL_SLP_EN))?;
    a.out(dx, al)?;
    emit_halt_forever(&mut a)?;
    finish(a)
}

/// Reads the CMOS RTC's century, year and month registers (once no update
/// is in progress) and exits through the debug-exit port with
/// `century << 16 | year << 8 | month`, in the RTC's BCD.
pub fn rtc_date() -> Result<Program> {
    let mut a = assembler()?;
    let mut uip = a.create_label();
    let read = |a: &mut CodeAssembler, index: u32| -> Result<()> {
        a.mov(al, index)?;
        a.out(0x70, al)?;
        a.in_(al, 0x71)
    };
    // Register A bit 7: an update is about to happen; wait it out.
    a.set_label(&mut uip)?;
    read(&mut a, 0x0a)?;
    a.test(al, 0x80)?;
    a.jnz(uip)?;
    read(&mut a, 0x32)?;
    a.movzx(ebx, al)?;
    a.shl(ebx, 8)?;
    read(&mut a, 0x09)?;
    a.mov(bl, al)?;
    a.shl(ebx, 8)?;
    read(&mut a, 0x08)?;
    a.mov(bl, al)?;
    a.mov(eax, ebx)?;
    emit_debug_exit_eax(&mut a)?;
    finish(a)
}

/// The local APIC's MMIO page and the registers the guests use.
pub(crate) const LAPIC: u64 = 0xfee0_0000;
pub(crate) const LAPIC_EOI: u64 = LAPIC + 0xb0;
pub(crate) const LAPIC_SVR: u64 = LAPIC + 0xf0;
/// The I/O APIC's MMIO page.
pub(crate) const IOAPIC: u64 = 0xfec0_0000;
/// The boot GDT's 64-bit code selector (see arch::mode).
pub(crate) const CODE_SELECTOR: u32 = 0x10;

pub mod demo;
pub mod gdb_target;
pub mod hostile;
pub mod multiboot;
pub mod virtio;

/// Prints "echo ready\n", then echoes every byte received on COM1 until it
/// receives `q`, then exits through the debug-exit port with value 0.
pub fn echo() -> Result<Program> {
    let mut a = assembler()?;
    let mut start = a.create_label();
    let mut ap = a.create_label();
    let mut poll = a.create_label();
    let mut quit = a.create_label();
    a.test(rdi, rdi)?;
    a.jnz(ap)?;
    a.jmp(start)?;
    a.set_label(&mut ap)?;
    emit_halt_forever(&mut a)?;
    let ready = emit_string(&mut a, "echo ready\n")?;
    a.set_label(&mut start)?;
    emit_print(&mut a, ready)?;
    a.set_label(&mut poll)?;
    a.mov(dx, COM1_LSR as u32)?;
    a.in_(al, dx)?;
    a.test(al, 1)?;
    a.jz(poll)?;
    a.mov(dx, COM1 as u32)?;
    a.in_(al, dx)?;
    a.cmp(al, b'q' as u32)?;
    a.je(quit)?;
    a.out(dx, al)?;
    a.jmp(poll)?;
    a.set_label(&mut quit)?;
    a.xor(eax, eax)?;
    emit_debug_exit_eax(&mut a)?;
    finish(a)
}

/// Signals Firecracker's boot timer (the byte 123 at 0xd000_0000, which
/// Firecracker's test init writes once booted), prints "booted\n" on
/// COM1 and exits through the debug-exit port with value 0.
pub fn boot_timer_signal() -> Result<Program> {
    let mut a = assembler()?;
    let mut text = a.create_label();
    a.mov(eax, 0xd000_0000u32)?;
    a.mov(byte_ptr(rax), 123u32)?;
    emit_print(&mut a, text)?;
    a.xor(eax, eax)?;
    emit_debug_exit_eax(&mut a)?;
    emit_string_at(&mut a, &mut text, "booted\n")?;
    finish(a)
}

/// Transmits `x` on COM1 forever, as fast as it can (without waiting for
/// the transmitter: a guest that floods the console). Only vCPU 0 does
/// so; the others halt.
pub fn serial_flood() -> Result<Program> {
    let mut a = assembler()?;
    let mut start = a.create_label();
    let mut again = a.create_label();
    a.test(rdi, rdi)?;
    a.jz(start)?;
    emit_halt_forever(&mut a)?;
    a.set_label(&mut start)?;
    a.mov(dx, COM1 as u32)?;
    a.mov(al, b'x' as u32)?;
    a.set_label(&mut again)?;
    a.out(dx, al)?;
    a.jmp(again)?;
    finish(a)
}

/// Prints `text` on COM1, loads an empty IDT and executes UD2: the #UD
/// cannot be delivered, nor the #DF after it, so the vCPU triple-faults.
pub fn triple_fault(text: &str) -> Result<Program> {
    let mut a = assembler()?;
    let mut start = a.create_label();
    let mut idtr = a.create_label();
    a.jmp(start)?;
    a.set_label(&mut idtr)?;
    a.db(&[0u8; 10])?;
    let text_label = emit_string(&mut a, text)?;
    a.set_label(&mut start)?;
    emit_print(&mut a, text_label)?;
    a.lidt(ptr(idtr))?;
    a.ud2()?;
    emit_halt_forever(&mut a)?;
    finish(a)
}

/// Runs `mib` MiB of distinct code (NOPs, so ~16 K blocks a MiB for the
/// emu CPU) `rounds` times on every vCPU; then the bootstrap processor
/// exits through the debug-exit port with `value` and the others halt.
/// What bounds a code cache by bytes is measured with it.
pub fn nop_sled(mib: usize, rounds: u32, value: u32) -> Result<Program> {
    let mut a = assembler()?;
    let mut top = a.create_label();
    let mut ap = a.create_label();
    a.mov(ecx, rounds)?;
    a.set_label(&mut top)?;
    a.db(&vec![0x90; mib << 20])?;
    a.dec(ecx)?;
    a.jnz(top)?;
    a.test(rdi, rdi)?;
    a.jnz(ap)?;
    a.mov(eax, value)?;
    emit_debug_exit_eax(&mut a)?;
    a.set_label(&mut ap)?;
    emit_halt_forever(&mut a)?;
    finish(a)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_assemble_at_load_addr() {
        let p = print_and_exit("hi\n", 7).unwrap();
        assert_eq!(p.load_addr, LOAD_ADDR);
        assert!(p.code.windows(3).any(|w| w == b"hi\n"));
        let d = demo::program().unwrap();
        assert!(!d.code.is_empty());
    }
}
