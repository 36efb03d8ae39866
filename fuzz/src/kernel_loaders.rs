//! Kernel files, as `--kernel` (and Firecracker's `kernel_image_path`)
//! give them: the ELF, bzImage and Multiboot header parsers, then
//! `arch::boot::load_kernel` of the whole file into a small guest memory
//! with each boot protocol (Linux bzImage/vmlinux, bare ELF, Multiboot,
//! PVH).

use std::io::Cursor;
use std::sync::OnceLock;

use arch::boot::{load_kernel, multiboot, BootConfig, BootProtocol};
use arch::{bzimage, elf};
use vm_memory::{GuestAddress, GuestMemoryMmap};

/// The guest's RAM: 16 MiB from 0 (shared by all inputs: what a kernel
/// leaves there does not matter to the next one).
const RAM: usize = 16 << 20;

fn memory() -> &'static GuestMemoryMmap<()> {
    static MEM: OnceLock<GuestMemoryMmap<()>> = OnceLock::new();
    MEM.get_or_init(|| {
        GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), RAM)]).expect("16 MiB of RAM")
    })
}

pub fn run(data: &[u8]) {
    let Some((&pick, kernel)) = data.split_first() else {
        return;
    };
    if let Ok(k) = elf::parse(&mut Cursor::new(kernel)) {
        for s in &k.segments {
            assert!(s.memsz > 0 && s.filesz <= s.memsz, "{s:?}");
            assert!(s.paddr.checked_add(s.memsz).is_some(), "{s:?}");
            assert!(s.offset.checked_add(s.filesz).is_some(), "{s:?}");
        }
        assert!(k.start() <= k.end());
        if let Some(entry) = k.physical_entry() {
            assert!(k
                .segments
                .iter()
                .any(|s| entry >= s.paddr && entry < s.end()));
        }
    }
    let _ = elf::parse_any_class(&mut Cursor::new(kernel));
    if let Ok(bz) = bzimage::parse(&mut Cursor::new(kernel)) {
        assert!(bz.setup_size <= kernel.len() as u64);
        assert!(bz.setup_size + bz.payload_size <= kernel.len() as u64);
        let _ = bz.footprint_end(0x10_0000);
    }
    if let Ok(Some(h)) = multiboot::find_header(kernel) {
        assert!(h.offset % 4 == 0 && h.offset < kernel.len() as u64, "{h:?}");
    }
    if kernel.is_empty() {
        return;
    }
    let protocol = match pick % 5 {
        0 => BootProtocol::Auto,
        1 => BootProtocol::Linux,
        2 => BootProtocol::Bare,
        3 => BootProtocol::Multiboot,
        _ => BootProtocol::Pvh,
    };
    let file = crate::input::memfile("kernel", kernel);
    let path = crate::input::proc_path(&file);
    let cfg = BootConfig {
        kernel: &path,
        initrd: None,
        cmdline: "console=ttyS0",
        protocol,
    };
    if let Ok(info) = load_kernel(memory(), &cfg) {
        assert!(info.kernel.start <= info.kernel.end, "{info:?}");
        assert!(
            info.kernel.end <= RAM as u64,
            "kernel {:?} past RAM",
            info.kernel
        );
        if info.kind != arch::boot::BootKind::Multiboot {
            assert_eq!(info.regs.rip, info.entry, "{info:?}");
        }
    }
}
