//! A Multiboot (v1) test kernel: 32-bit protected-mode code in an ELF32
//! image whose first bytes are the Multiboot header.
//!
//! It checks EAX = 0x2BADB002 and reads the information structure at EBX:
//! the flags (memory, command line, modules and memory map must be valid),
//! `mem_upper`, the command line, the memory map (it counts the entries by
//! walking their `size` fields), the first module's start and end and its
//! first bytes; it also scans the BIOS area for the ACPI RSDP as hobby
//! kernels do. It prints one line on COM1:
//!
//! ```text
//! multiboot ok: mem_upper=64512 KiB cmdline='hello mb' mmap=3 module=16 bytes 'FERROMOD' rsdp=0x000e0000
//! ```
//!
//! (`rsdp=none` without ACPI tables; up to 8 module bytes, `.` for those
//! that are not printable) and exits through the debug-exit port with
//! [`MULTIBOOT_PASS`]. On a failed check it prints `multiboot FAIL: ...`
//! and exits with [`MULTIBOOT_FAIL_MAGIC`], [`MULTIBOOT_FAIL_FLAGS`] or
//! [`MULTIBOOT_FAIL_NO_MODULE`].

use arch::boot::multiboot::{
    MULTIBOOT_BOOTLOADER_MAGIC, MULTIBOOT_FLAG_MEMORY_INFO, MULTIBOOT_FLAG_PAGE_ALIGN,
    MULTIBOOT_INFO_CMDLINE, MULTIBOOT_INFO_MEMORY, MULTIBOOT_INFO_MEM_MAP, MULTIBOOT_INFO_MODS,
};
use arch::elf_builder::{multiboot_header, ElfBuilder};
use iced_x86::code_asm::*;

use crate::{Program, Result, COM1, COM1_LSR, DEBUG_EXIT};

/// Where the kernel loads (its Multiboot header first, then the code).
pub const MULTIBOOT_LOAD_ADDR: u64 = 0x10_0000;
/// The debug-exit value when every check passed (exit status 0x63).
pub const MULTIBOOT_PASS: u32 = 0x31;
/// EAX was not 0x2BADB002.
pub const MULTIBOOT_FAIL_MAGIC: u32 = 0x41;
/// An information flag the kernel needs was clear.
pub const MULTIBOOT_FAIL_FLAGS: u32 = 0x42;
/// No module was given.
pub const MULTIBOOT_FAIL_NO_MODULE: u32 = 0x43;

/// The stack the kernel sets up (the spec leaves ESP undefined).
const STACK_TOP: u32 = 0x8_f000;
/// The information flags the kernel needs.
const NEEDED_FLAGS: u32 =
    MULTIBOOT_INFO_MEMORY | MULTIBOOT_INFO_CMDLINE | MULTIBOOT_INFO_MODS | MULTIBOOT_INFO_MEM_MAP;
/// How many module bytes are shown.
const MODULE_BYTES_SHOWN: u32 = 8;

/// Subroutines of the kernel.
struct Routines {
    putc: CodeLabel,
    puts: CodeLabel,
    putdec: CodeLabel,
    puthex: CodeLabel,
}

/// The kernel's strings, placed between the header and the code (a 32-bit
/// `CodeAssembler` cannot take a label's address: its label operands are
/// RIP-relative).
struct Strings {
    base: u32,
    data: Vec<u8>,
}

impl Strings {
    /// Adds a NUL-terminated string; returns its address.
    fn add(&mut self, text: &str) -> u32 {
        let addr = self.base + self.data.len() as u32;
        self.data.extend_from_slice(text.as_bytes());
        self.data.push(0);
        addr
    }
}

/// putc: AL to COM1 (waits for THR empty). Clobbers EDX.
/// puts: the NUL-terminated string at ESI. Clobbers EAX, EDX, ESI.
/// putdec: EAX in decimal. Clobbers EAX, EDX.
/// puthex: EAX as 0x + 8 hex digits. Clobbers EAX, EDX.
fn emit_routines(a: &mut CodeAssembler) -> Result<Routines> {
    let mut r = Routines {
        putc: a.create_label(),
        puts: a.create_label(),
        putdec: a.create_label(),
        puthex: a.create_label(),
    };

    a.set_label(&mut r.putc)?;
    {
        let mut wait = a.create_label();
        a.push(eax)?;
        a.mov(dx, COM1_LSR as u32)?;
        a.set_label(&mut wait)?;
        a.in_(al, dx)?;
        a.test(al, 0x20)?;
        a.jz(wait)?;
        a.pop(eax)?;
        a.mov(dx, COM1 as u32)?;
        a.out(dx, al)?;
        a.ret()?;
    }

    a.set_label(&mut r.puts)?;
    {
        let mut done = a.create_label();
        a.mov(al, byte_ptr(esi))?;
        a.test(al, al)?;
        a.jz(done)?;
        a.call(r.putc)?;
        a.inc(esi)?;
        a.jmp(r.puts)?;
        a.set_label(&mut done)?;
        a.ret()?;
    }

    a.set_label(&mut r.putdec)?;
    {
        let mut divide = a.create_label();
        let mut print = a.create_label();
        a.push(ebx)?;
        a.push(ecx)?;
        a.mov(ebx, 10u32)?;
        a.xor(ecx, ecx)?;
        a.set_label(&mut divide)?;
        a.xor(edx, edx)?;
        a.div(ebx)?;
        a.push(edx)?;
        a.inc(ecx)?;
        a.test(eax, eax)?;
        a.jnz(divide)?;
        a.set_label(&mut print)?;
        a.pop(eax)?;
        a.add(al, b'0' as u32)?;
        a.call(r.putc)?;
        a.dec(ecx)?;
        a.jnz(print)?;
        a.pop(ecx)?;
        a.pop(ebx)?;
        a.ret()?;
    }

    a.set_label(&mut r.puthex)?;
    {
        let mut digit = a.create_label();
        let mut put = a.create_label();
        a.push(ebx)?;
        a.push(ecx)?;
        a.mov(ebx, eax)?;
        a.mov(al, b'0' as u32)?;
        a.call(r.putc)?;
        a.mov(al, b'x' as u32)?;
        a.call(r.putc)?;
        a.mov(ecx, 8u32)?;
        a.set_label(&mut digit)?;
        a.rol(ebx, 4)?;
        a.mov(al, bl)?;
        a.and(al, 0xf)?;
        a.add(al, b'0' as u32)?;
        a.cmp(al, b'9' as u32)?;
        a.jbe(put)?;
        a.add(al, (b'a' - b'9' - 1) as u32)?;
        a.set_label(&mut put)?;
        a.call(r.putc)?;
        a.dec(ecx)?;
        a.jnz(digit)?;
        a.pop(ecx)?;
        a.pop(ebx)?;
        a.ret()?;
    }
    Ok(r)
}

/// Emits: print the string at `text`, exit with `value`, halt.
fn emit_fail(a: &mut CodeAssembler, r: &Routines, text: u32, value: u32) -> Result<()> {
    emit_puts(a, r, text)?;
    a.mov(eax, value)?;
    a.out(DEBUG_EXIT as u32, eax)?;
    emit_halt_forever32(a)
}

fn emit_halt_forever32(a: &mut CodeAssembler) -> Result<()> {
    let mut again = a.create_label();
    a.cli()?;
    a.set_label(&mut again)?;
    a.hlt()?;
    a.jmp(again)?;
    Ok(())
}

/// Emits: print the string at `addr` with puts.
fn emit_puts(a: &mut CodeAssembler, r: &Routines, addr: u32) -> Result<()> {
    a.mov(esi, addr)?;
    a.call(r.puts)
}

/// The kernel's strings (at `s.base`) and code (right after them, 16-byte
/// aligned); returns the code's address (the entry point) and bytes.
fn code(s: &mut Strings) -> Result<(u64, Vec<u8>)> {
    let mut a = CodeAssembler::new(32)?;
    let mut main = a.create_label();
    a.jmp(main)?;
    let r = emit_routines(&mut a)?;
    let s_ok = s.add("multiboot ok: mem_upper=");
    let s_kib = s.add(" KiB cmdline='");
    let s_mmap = s.add("' mmap=");
    let s_module = s.add(" module=");
    let s_bytes = s.add(" bytes '");
    let s_rsdp = s.add("' rsdp=");
    let s_none = s.add("none");
    let s_nl = s.add("\n");
    let s_bad_magic = s.add("multiboot FAIL: EAX is not 0x2BADB002\n");
    let s_bad_flags = s.add("multiboot FAIL: information flags missing\n");
    let s_no_module = s.add("multiboot FAIL: no module\n");
    let mut fail_magic = a.create_label();
    let mut fail_flags = a.create_label();
    let mut fail_module = a.create_label();

    a.set_label(&mut main)?;
    a.mov(esp, STACK_TOP)?;
    a.cmp(eax, MULTIBOOT_BOOTLOADER_MAGIC)?;
    a.jne(fail_magic)?;
    a.mov(ebp, ebx)?;
    a.mov(eax, dword_ptr(ebp))?;
    a.and(eax, NEEDED_FLAGS)?;
    a.cmp(eax, NEEDED_FLAGS)?;
    a.jne(fail_flags)?;
    a.cmp(dword_ptr(ebp + 20), 0)?;
    a.je(fail_module)?;

    emit_puts(&mut a, &r, s_ok)?;
    a.mov(eax, dword_ptr(ebp + 8))?;
    a.call(r.putdec)?;
    emit_puts(&mut a, &r, s_kib)?;
    a.mov(esi, dword_ptr(ebp + 16))?;
    a.call(r.puts)?;
    emit_puts(&mut a, &r, s_mmap)?;

    // Count the memory map entries: each is `size` bytes after its size
    // field.
    {
        let mut next = a.create_label();
        let mut done = a.create_label();
        a.mov(esi, dword_ptr(ebp + 48))?;
        a.mov(edi, esi)?;
        a.add(edi, dword_ptr(ebp + 44))?;
        a.xor(ecx, ecx)?;
        a.set_label(&mut next)?;
        a.cmp(esi, edi)?;
        a.jae(done)?;
        a.inc(ecx)?;
        a.mov(eax, dword_ptr(esi))?;
        a.lea(esi, ptr(esi + eax + 4))?;
        a.jmp(next)?;
        a.set_label(&mut done)?;
        a.mov(eax, ecx)?;
        a.call(r.putdec)?;
    }

    // The first module: its size, then its first bytes.
    emit_puts(&mut a, &r, s_module)?;
    a.mov(ebx, dword_ptr(ebp + 24))?;
    a.mov(eax, dword_ptr(ebx + 4))?;
    a.sub(eax, dword_ptr(ebx))?;
    a.call(r.putdec)?;
    emit_puts(&mut a, &r, s_bytes)?;
    {
        let mut counted = a.create_label();
        let mut next = a.create_label();
        let mut dot = a.create_label();
        let mut put = a.create_label();
        let mut done = a.create_label();
        a.mov(esi, dword_ptr(ebx))?;
        a.mov(ecx, dword_ptr(ebx + 4))?;
        a.sub(ecx, esi)?;
        a.cmp(ecx, MODULE_BYTES_SHOWN)?;
        a.jbe(counted)?;
        a.mov(ecx, MODULE_BYTES_SHOWN)?;
        a.set_label(&mut counted)?;
        a.test(ecx, ecx)?;
        a.set_label(&mut next)?;
        a.jz(done)?;
        a.mov(al, byte_ptr(esi))?;
        a.cmp(al, b' ' as u32)?;
        a.jb(dot)?;
        a.cmp(al, b'~' as u32)?;
        a.jbe(put)?;
        a.set_label(&mut dot)?;
        a.mov(al, b'.' as u32)?;
        a.set_label(&mut put)?;
        a.call(r.putc)?;
        a.inc(esi)?;
        a.dec(ecx)?;
        a.jmp(next)?;
        a.set_label(&mut done)?;
        a.nop()?;
    }

    // The RSDP: "RSD PTR " on a 16-byte boundary in 0xE0000..0xFFFFF.
    emit_puts(&mut a, &r, s_rsdp)?;
    {
        let mut scan = a.create_label();
        let mut next = a.create_label();
        let mut none = a.create_label();
        let mut done = a.create_label();
        a.mov(esi, 0xe_0000u32)?;
        a.set_label(&mut scan)?;
        a.cmp(esi, 0x10_0000u32)?;
        a.jae(none)?;
        a.cmp(dword_ptr(esi), u32::from_le_bytes(*b"RSD "))?;
        a.jne(next)?;
        a.cmp(dword_ptr(esi + 4), u32::from_le_bytes(*b"PTR "))?;
        a.jne(next)?;
        a.mov(eax, esi)?;
        a.call(r.puthex)?;
        a.jmp(done)?;
        a.set_label(&mut next)?;
        a.add(esi, 16)?;
        a.jmp(scan)?;
        a.set_label(&mut none)?;
        emit_puts(&mut a, &r, s_none)?;
        a.set_label(&mut done)?;
        emit_puts(&mut a, &r, s_nl)?;
    }
    a.mov(eax, MULTIBOOT_PASS)?;
    a.out(DEBUG_EXIT as u32, eax)?;
    emit_halt_forever32(&mut a)?;

    a.set_label(&mut fail_magic)?;
    emit_fail(&mut a, &r, s_bad_magic, MULTIBOOT_FAIL_MAGIC)?;
    a.set_label(&mut fail_flags)?;
    emit_fail(&mut a, &r, s_bad_flags, MULTIBOOT_FAIL_FLAGS)?;
    a.set_label(&mut fail_module)?;
    emit_fail(&mut a, &r, s_no_module, MULTIBOOT_FAIL_NO_MODULE)?;
    let base = (u64::from(s.base) + s.data.len() as u64).next_multiple_of(16);
    Ok((base, a.assemble(base)?))
}

/// The kernel and its entry point.
fn build() -> Result<(Program, u64)> {
    let mut bytes = multiboot_header(MULTIBOOT_FLAG_PAGE_ALIGN | MULTIBOOT_FLAG_MEMORY_INFO, None);
    let mut strings = Strings {
        base: (MULTIBOOT_LOAD_ADDR + bytes.len() as u64) as u32,
        data: Vec::new(),
    };
    let (entry, code) = code(&mut strings)?;
    bytes.extend_from_slice(&strings.data);
    bytes.resize((entry - MULTIBOOT_LOAD_ADDR) as usize, 0);
    bytes.extend_from_slice(&code);
    let program = Program {
        load_addr: MULTIBOOT_LOAD_ADDR,
        code: bytes,
    };
    Ok((program, entry))
}

/// The kernel as loaded at [`MULTIBOOT_LOAD_ADDR`]: the Multiboot header
/// (flags: page-aligned modules, memory information), the strings, then
/// the code.
pub fn program() -> Result<Program> {
    Ok(build()?.0)
}

/// The kernel as an ELF32 i386 file for the Multiboot loader, entered at
/// its code.
pub fn elf() -> Result<Vec<u8>> {
    let (p, entry) = build()?;
    // Below 4 GiB by construction.
    Ok(ElfBuilder::new32(entry as u32)
        .segment(p.load_addr, &p.code)
        .build())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_comes_first_and_is_found() {
        let image = elf().unwrap();
        let header = arch::boot::multiboot::find_header(&image)
            .unwrap()
            .expect("a Multiboot header");
        assert_eq!(header.flags, 0x3);
        assert_eq!(header.offset % 0x1000, 0, "the segment's first bytes");
        let (p, entry) = build().unwrap();
        assert!(p.code.windows(8).any(|w| w == b"multiboo"));
        assert!(entry > MULTIBOOT_LOAD_ADDR + 12 && entry % 16 == 0);
        assert!(entry < MULTIBOOT_LOAD_ADDR + p.code.len() as u64);
    }
}
