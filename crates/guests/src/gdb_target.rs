//! A guest for the gdb stub's tests, whose addresses the test knows: a
//! loop that counts to 3 in a variable of its own (a watchpoint's
//! target), then prints a message and exits through the debug-exit port
//! with RBX (0x21 unless a debugger changed it: exit status 0x43).

use iced_x86::code_asm::*;
use iced_x86::BlockEncoderOptions;

use crate::{emit_debug_exit_eax, emit_halt_forever, emit_print, emit_string, Result, LOAD_ADDR};

/// The counter the loop writes (a quadword in RAM, away from the code).
pub const COUNTER: u64 = 0x30_0000;

/// The program and the addresses a debugger needs.
#[derive(Debug, Clone)]
pub struct GdbGuest {
    pub program: crate::Program,
    /// The first instruction of the loop (a NOP, one byte).
    pub loop_top: u64,
    /// The first instruction after the loop.
    pub after_loop: u64,
    /// The first byte of the message.
    pub message: u64,
}

/// The message the guest prints.
pub const MESSAGE: &str = "gdb guest: hello\n";

pub fn program() -> Result<GdbGuest> {
    let mut a = CodeAssembler::new(64)?;
    let mut start = a.create_label();
    let mut ap = a.create_label();
    let mut top = a.create_label();
    let mut after = a.create_label();
    a.test(rdi, rdi)?;
    a.jz(start)?;
    a.set_label(&mut ap)?;
    emit_halt_forever(&mut a)?;
    let message = emit_string(&mut a, MESSAGE)?;
    a.set_label(&mut start)?;
    a.mov(rbx, 0x21u64)?;
    a.xor(ecx, ecx)?;
    a.mov(qword_ptr(COUNTER), rcx)?;
    a.set_label(&mut top)?;
    a.nop()?;
    a.inc(rcx)?;
    a.mov(qword_ptr(COUNTER), rcx)?;
    a.cmp(rcx, 3)?;
    a.jb(top)?;
    a.set_label(&mut after)?;
    emit_print(&mut a, message)?;
    a.mov(eax, ebx)?;
    emit_debug_exit_eax(&mut a)?;
    let r = a.assemble_options(
        LOAD_ADDR,
        BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS,
    )?;
    Ok(GdbGuest {
        loop_top: r.label_ip(&top)?,
        after_loop: r.label_ip(&after)?,
        message: r.label_ip(&message)?,
        program: crate::Program {
            load_addr: LOAD_ADDR,
            code: r.inner.code_buffer,
        },
    })
}
