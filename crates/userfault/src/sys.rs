//! The userfaultfd uAPI (`include/uapi/linux/userfaultfd.h`): the structs
//! the ioctls take, their numbers, and the event message.

#![allow(non_camel_case_types)]

use vmm_sys_util::{ioctl_io_nr, ioctl_ior_nr, ioctl_iowr_nr};

/// The API version UFFDIO_API asks for.
pub const UFFD_API: u64 = 0xAA;
/// Fault on pages not yet present (the mode lazy restore registers).
pub const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
/// `uffd_msg.event` of a page fault.
pub const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
/// `pagefault.flags`: a write access.
pub const UFFD_PAGEFAULT_FLAG_WRITE: u64 = 1;
/// Bit of `uffdio_register.ioctls`: UFFDIO_COPY is usable on the range.
pub const UFFDIO_COPY_BIT: u64 = 1 << 0x03;

const UFFDIO: u32 = 0xAA;

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct uffdio_api {
    pub api: u64,
    pub features: u64,
    pub ioctls: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct uffdio_range {
    pub start: u64,
    pub len: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct uffdio_register {
    pub range: uffdio_range,
    pub mode: u64,
    pub ioctls: u64,
}

#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct uffdio_copy {
    pub dst: u64,
    pub src: u64,
    pub len: u64,
    pub mode: u64,
    /// Bytes copied, or a negated errno.
    pub copy: i64,
}

/// `struct uffd_msg` (packed in C; this layout has no padding either):
/// the event, then its 24 bytes of arguments (a page fault's are flags,
/// address, thread id).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct uffd_msg {
    pub event: u8,
    pub reserved1: u8,
    pub reserved2: u16,
    pub reserved3: u32,
    pub arg: [u64; 3],
}

ioctl_iowr_nr!(UFFDIO_API, UFFDIO, 0x3F, uffdio_api);
ioctl_iowr_nr!(UFFDIO_REGISTER, UFFDIO, 0x00, uffdio_register);
ioctl_ior_nr!(UFFDIO_WAKE, UFFDIO, 0x02, uffdio_range);
ioctl_iowr_nr!(UFFDIO_COPY, UFFDIO, 0x03, uffdio_copy);
// /dev/userfaultfd: a new userfaultfd (for users the syscall refuses).
ioctl_io_nr!(USERFAULTFD_IOC_NEW, UFFDIO, 0x00);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_numbers_are_the_kernels() {
        assert_eq!(std::mem::size_of::<uffd_msg>(), 32);
        assert_eq!(UFFDIO_API(), 0xc018_aa3f);
        assert_eq!(UFFDIO_REGISTER(), 0xc020_aa00);
        assert_eq!(UFFDIO_WAKE(), 0x8010_aa02);
        assert_eq!(UFFDIO_COPY(), 0xc028_aa03);
        assert_eq!(USERFAULTFD_IOC_NEW(), 0xaa00);
    }
}
