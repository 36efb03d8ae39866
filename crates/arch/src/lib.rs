//! Ferrovisor's x86 machine: the guest-physical memory layout, the entry
//! state, loading a kernel (Linux bzImage/vmlinux through the 64-bit boot
//! protocol, a bare ELF, or a Multiboot kernel), the ACPI tables, and the
//! CPUID and MSR templates a vCPU starts with.
//!
//! - [`layout`]: addresses of RAM, the MMIO hole and the boot structures.
//! - [`mode`]: boot GDT/IDT/TSS, identity page tables, long-mode and
//!   protected-mode registers.
//! - [`boot`]: [`boot::load_kernel`] → [`boot::BootInfo`] for the boot vCPU.
//! - [`acpi`]: the ACPI tables (RSDP, XSDT, FADT, MADT, DSDT) from
//!   [`acpi::create_acpi_tables`], and the power-management ports the VMM
//!   emulates ([`acpi::pm`]).
//! - [`cpuid`], [`msr`]: the documented CPU template and boot MSRs;
//!   [`cpu_model`]: `--cpu` (QEMU's `-cpu` syntax) applied to the template.
//! - [`firmware`]: the reset vector (a ROM below 4 GiB, F000:FFF0).
//! - [`elf`], [`bzimage`]: bounds-checked readers of kernel headers.
//! - [`elf_builder`]: builds tiny ELF64/ELF32 (and Multiboot) kernels for
//!   tests.
#![forbid(unsafe_code)]

pub mod acpi;
pub mod boot;
pub mod bzimage;
pub mod cpu_model;
pub mod cpu_template;
pub mod cpuid;
pub mod elf;
pub mod elf_builder;
pub mod firmware;
pub mod layout;
pub mod mode;
pub mod msr;
