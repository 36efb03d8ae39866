//! Checks a bzImage's setup header before linux-loader loads it: Ferrovisor
//! enters Linux through the 64-bit boot protocol, which needs boot protocol
//! 2.12+ and `XLF_KERNEL_64`.

use std::io::{self, Read, Seek, SeekFrom};

use linux_loader::loader::bootparam::{setup_header, LOADED_HIGH, XLF_KERNEL_64};
use vm_memory::ByteValued;

/// "HdrS".
pub const HDRS_MAGIC: u32 = 0x5372_6448;
/// File offset of the magic.
pub const HDRS_OFFSET: usize = 0x202;
/// File offset of `struct setup_header`.
pub const SETUP_HEADER_OFFSET: u64 = 0x1f1;
/// Boot protocol 2.12: `xloadflags` (and so the 64-bit entry flag) exists.
pub const MIN_BOOT_PROTOCOL: u16 = 0x020c;
/// The 64-bit entry point is this far into the protected-mode code.
pub const ENTRY_64_OFFSET: u64 = 0x200;
/// `initrd_addr_max` of kernels that do not say (protocol < 2.03).
pub const DEFAULT_INITRD_ADDR_MAX: u64 = 0x37ff_ffff;
/// Command line limit of kernels that do not say (protocol < 2.06).
pub const DEFAULT_CMDLINE_MAX: u64 = 255;

/// Errors in a bzImage's setup header.
#[derive(Debug, thiserror::Error)]
pub enum BzImageError {
    #[error("cannot read the bzImage")]
    Io(#[source] io::Error),
    #[error("truncated bzImage: {len} bytes do not hold a setup header")]
    Truncated { len: u64 },
    #[error("no \"HdrS\" magic: not a bzImage")]
    BadMagic,
    #[error("boot protocol {version:#06x} is older than 2.12, which the 64-bit entry needs")]
    OldProtocol { version: u16 },
    #[error("the bzImage has no 64-bit entry point (XLF_KERNEL_64 is clear)")]
    Not64Bit,
    #[error("the image is a zImage loaded low (LOADED_HIGH is clear)")]
    NotLoadedHigh,
    #[error("the {setup_size}-byte setup code leaves no kernel in the {file_len}-byte file")]
    NoKernel { setup_size: u64, file_len: u64 },
}

/// A checked bzImage header.
#[derive(Debug, Clone, Copy)]
pub struct BzImage {
    /// The setup header as it is in the file.
    pub header: setup_header,
    /// Bytes of real-mode setup code before the protected-mode kernel.
    pub setup_size: u64,
    /// Bytes of protected-mode kernel (loaded at the load address).
    pub payload_size: u64,
}

impl BzImage {
    /// Memory the kernel needs from its (relocated) start while it
    /// decompresses and runs; at least the payload.
    pub fn init_size(&self) -> u64 {
        u64::from(self.header.init_size).max(self.payload_size)
    }

    /// Where the kernel prefers to run (decompresses itself to), if it says.
    pub fn pref_address(&self) -> u64 {
        self.header.pref_address
    }

    /// Highest address an initrd may occupy (inclusive).
    pub fn initrd_addr_max(&self) -> u64 {
        match self.header.initrd_addr_max {
            0 => DEFAULT_INITRD_ADDR_MAX,
            max => u64::from(max),
        }
    }

    /// Longest command line the kernel accepts, without the NUL.
    pub fn cmdline_max(&self) -> u64 {
        match self.header.cmdline_size {
            0 => DEFAULT_CMDLINE_MAX,
            max => u64::from(max),
        }
    }

    /// End (exclusive) of the memory the kernel uses when loaded at `load`:
    /// the loaded payload, and `init_size` bytes from where it decompresses
    /// to (the higher of `load` and `pref_address`).
    pub fn footprint_end(&self, load: u64) -> Option<u64> {
        let loaded = load.checked_add(self.payload_size)?;
        let run = load
            .max(self.pref_address())
            .checked_add(self.init_size())?;
        Some(loaded.max(run))
    }
}

/// Whether the first bytes of a file carry the bzImage magic.
pub fn is_bzimage(head: &[u8]) -> bool {
    head.get(HDRS_OFFSET..HDRS_OFFSET + 4) == Some(&HDRS_MAGIC.to_le_bytes()[..])
}

/// Reads and checks the setup header.
pub fn parse<R: Read + Seek>(r: &mut R) -> Result<BzImage, BzImageError> {
    let file_len = r.seek(SeekFrom::End(0)).map_err(BzImageError::Io)?;
    let mut header = setup_header::default();
    let header_end = SETUP_HEADER_OFFSET + header.as_slice().len() as u64;
    if file_len < header_end {
        return Err(BzImageError::Truncated { len: file_len });
    }
    r.seek(SeekFrom::Start(SETUP_HEADER_OFFSET))
        .map_err(BzImageError::Io)?;
    r.read_exact(header.as_mut_slice())
        .map_err(BzImageError::Io)?;
    if header.header != HDRS_MAGIC {
        return Err(BzImageError::BadMagic);
    }
    let version = header.version;
    if version < MIN_BOOT_PROTOCOL {
        return Err(BzImageError::OldProtocol { version });
    }
    if header.xloadflags & XLF_KERNEL_64 == 0 {
        return Err(BzImageError::Not64Bit);
    }
    if header.loadflags & LOADED_HIGH == 0 {
        return Err(BzImageError::NotLoadedHigh);
    }
    let setup_sects = match header.setup_sects {
        0 => 4,
        n => u64::from(n),
    };
    let setup_size = (setup_sects + 1) * 512;
    if file_len <= setup_size {
        return Err(BzImageError::NoKernel {
            setup_size,
            file_len,
        });
    }
    Ok(BzImage {
        header,
        setup_size,
        payload_size: file_len - setup_size,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn image(edit: impl FnOnce(&mut setup_header)) -> Vec<u8> {
        let mut h = setup_header {
            setup_sects: 1,
            boot_flag: 0xaa55,
            header: HDRS_MAGIC,
            version: 0x020f,
            loadflags: LOADED_HIGH,
            xloadflags: XLF_KERNEL_64,
            init_size: 0x4000,
            ..Default::default()
        };
        edit(&mut h);
        let mut v = vec![0u8; 1024 + 0x1000];
        let at = SETUP_HEADER_OFFSET as usize;
        v[at..at + h.as_slice().len()].copy_from_slice(h.as_slice());
        v
    }

    fn parse_bytes(v: &[u8]) -> Result<BzImage, BzImageError> {
        parse(&mut Cursor::new(v))
    }

    #[test]
    fn accepts_a_64bit_image() {
        let v = image(|_| {});
        assert!(is_bzimage(&v));
        let bz = parse_bytes(&v).unwrap();
        assert_eq!(bz.setup_size, 1024);
        assert_eq!(bz.payload_size, 0x1000);
        assert_eq!(bz.init_size(), 0x4000);
        assert_eq!(bz.initrd_addr_max(), DEFAULT_INITRD_ADDR_MAX);
        assert_eq!(bz.cmdline_max(), DEFAULT_CMDLINE_MAX);
        assert_eq!(bz.footprint_end(0x10_0000), Some(0x10_4000));
        let bz = parse_bytes(&image(|h| h.pref_address = 0x100_0000)).unwrap();
        assert_eq!(bz.footprint_end(0x10_0000), Some(0x100_4000));
    }

    #[test]
    fn rejects_what_the_64bit_protocol_cannot_boot() {
        assert!(matches!(
            parse_bytes(&image(|h| h.version = 0x020b)),
            Err(BzImageError::OldProtocol { version: 0x020b })
        ));
        assert!(matches!(
            parse_bytes(&image(|h| h.xloadflags = 0)),
            Err(BzImageError::Not64Bit)
        ));
        assert!(matches!(
            parse_bytes(&image(|h| h.loadflags = 0)),
            Err(BzImageError::NotLoadedHigh)
        ));
        assert!(matches!(
            parse_bytes(&image(|h| h.header = 0)),
            Err(BzImageError::BadMagic)
        ));
        assert!(matches!(
            parse_bytes(&image(|h| h.setup_sects = 200)),
            Err(BzImageError::NoKernel { .. })
        ));
        assert!(matches!(
            parse_bytes(&image(|_| {})[..0x230]),
            Err(BzImageError::Truncated { len: 0x230 })
        ));
        assert!(!is_bzimage(&[0u8; 0x203]));
    }
}
