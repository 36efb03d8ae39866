//! Ferrovisor's x86 machine: the guest-physical memory layout, the long-mode
//! entry state, loading a kernel (Linux bzImage/vmlinux through the 64-bit
//! boot protocol, or a bare ELF), and the CPUID and MSR templates a vCPU
//! starts with.
//!
//! - [`layout`]: addresses of RAM, the MMIO hole and the boot structures.
//! - [`mode`]: boot GDT/IDT/TSS, identity page tables, long-mode registers.
//! - [`boot`]: [`boot::load_kernel`] → [`boot::BootInfo`] for the boot vCPU.
//! - [`cpuid`], [`msr`]: the documented CPU template and boot MSRs.
//! - [`elf`], [`bzimage`]: bounds-checked readers of kernel headers.
//! - [`elf_builder`]: builds tiny ELF64 kernels for tests.
#![forbid(unsafe_code)]

pub mod boot;
pub mod bzimage;
pub mod cpuid;
pub mod elf;
pub mod elf_builder;
pub mod layout;
pub mod mode;
pub mod msr;
