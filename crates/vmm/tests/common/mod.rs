//! What the vmm crate's integration tests share: a temporary directory
//! removed on drop, and a minimal bzImage.
#![allow(dead_code)] // each test binary uses a part

use std::path::PathBuf;

use linux_loader::loader::bootparam::{setup_header, LOADED_HIGH, XLF_KERNEL_64};
use vm_memory::ByteValued;

pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(test: &str) -> TempDir {
        let dir =
            std::env::temp_dir().join(format!("ferrovisor-vmm-{}-{}", std::process::id(), test));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn file(&self, name: &str, bytes: &[u8]) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A minimal bzImage linux-loader accepts (as in arch's tests): one setup
/// sector after the boot sector, then a payload of HLTs.
pub fn bzimage() -> Vec<u8> {
    let h = setup_header {
        setup_sects: 1,
        boot_flag: 0xaa55,
        header: 0x5372_6448,
        version: 0x020f,
        loadflags: LOADED_HIGH,
        code32_start: 0x10_0000,
        initrd_addr_max: 0x7fff_ffff,
        kernel_alignment: 0x20_0000,
        relocatable_kernel: 1,
        xloadflags: XLF_KERNEL_64,
        cmdline_size: 2047,
        pref_address: 0x10_0000,
        init_size: 0x1_0000,
        vid_mode: 0xffff,
        ..Default::default()
    };
    let mut image = vec![0u8; 1024];
    image[0x1f1..0x1f1 + h.as_slice().len()].copy_from_slice(h.as_slice());
    image.extend_from_slice(&[0xf4; 0x1000]);
    image
}
