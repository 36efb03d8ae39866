//! Bare ELF kernels: segments at `p_paddr`, entered in long mode at
//! `e_entry` with RDI = RSI = 0 and RSP = [`BARE_STACK_TOP`].

use vm_memory::GuestMemoryBackend;

use super::{
    check_segments, load_segments, require_ram, BootContext, BootError, BootInfo, BootKind,
};
use crate::elf::ElfKernel;
use crate::layout::{BARE_RESERVED_END, BARE_STACK_TOP};
use crate::mode;

pub(super) fn boot<M: GuestMemoryBackend>(
    ctx: &mut BootContext<'_, M>,
    elf: &ElfKernel,
) -> Result<BootInfo, BootError> {
    if ctx.cfg.initrd.is_some() {
        return Err(BootError::InitrdNeedsLinux);
    }
    require_ram(ctx.ram_end, BARE_RESERVED_END)?;
    check_segments(elf, BARE_RESERVED_END, ctx.ram_end)?;
    mode::setup_long_mode(ctx.mem).map_err(BootError::LongMode)?;
    load_segments(ctx, elf)?;
    Ok(BootInfo {
        kind: BootKind::Bare,
        entry: elf.entry,
        regs: mode::long_mode_regs(elf.entry, 0, BARE_STACK_TOP),
        sregs: mode::long_mode_sregs(),
        kernel: elf.start()..elf.end(),
        initrd: None,
    })
}
