//! The whole protocol in one process: a "VMM" thread maps anonymous
//! memory, registers it and sends the layout; the page server fills each
//! page from a memory file when the VMM touches it.

use std::io::Write;
use std::os::unix::net::UnixStream;

use super::*;
use crate::send_layout;

const PAGES: u64 = 4;

struct Anon {
    addr: *mut u8,
    len: usize,
}

impl Anon {
    fn new(len: usize) -> Anon {
        // SAFETY: a new private anonymous mapping, freed in drop.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        assert_ne!(addr, libc::MAP_FAILED);
        Anon {
            addr: addr.cast(),
            len,
        }
    }

    fn read(&self, offset: usize) -> u8 {
        assert!(offset < self.len);
        // SAFETY: inside our mapping; a volatile read so that the fault
        // really happens here.
        unsafe { self.addr.add(offset).read_volatile() }
    }
}

impl Drop for Anon {
    fn drop(&mut self) {
        // SAFETY: our mapping.
        unsafe { libc::munmap(self.addr.cast(), self.len) };
    }
}

#[test]
fn faults_are_filled_from_the_memory_file() {
    let uffd = match Uffd::create() {
        Ok(u) => u,
        Err(e) => {
            eprintln!("SKIPPED: no userfaultfd here: {e}");
            return;
        }
    };
    let dir = std::env::temp_dir().join(format!("userfault-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mem");
    let mut file = File::create(&path).unwrap();
    // Page 0 of the file is not used by the layout: the region starts at
    // offset one page.
    for page in 0..=PAGES {
        file.write_all(&[page as u8 + 0x10; PAGE as usize]).unwrap();
    }
    drop(file);

    let memory = Anon::new((PAGES * PAGE) as usize);
    uffd.register_missing(memory.addr as u64, PAGES * PAGE)
        .unwrap();
    let (vmm, handler) = UnixStream::pair().unwrap();
    let layout = [GuestRegionUffdMapping {
        base_host_virt_addr: memory.addr as u64,
        size: PAGES * PAGE,
        offset: PAGE,
        page_size: PAGE,
        page_size_kib: PAGE,
    }];
    send_layout(&vmm, &layout, &uffd).unwrap();
    let file = File::open(&path).unwrap();
    let server = std::thread::spawn(move || {
        let mut server = PageServer::new(&file, handler).unwrap();
        assert_eq!(server.regions().len(), 1);
        server.serve(&ServeOptions::default()).unwrap()
    });
    // Touch the pages backwards, the middle of each.
    for page in (0..PAGES).rev() {
        let at = (page * PAGE + PAGE / 2) as usize;
        assert_eq!(memory.read(at), page as u8 + 0x11, "page {page}");
    }
    assert_eq!(memory.read(0), 0x11, "a page served once stays");
    drop(vmm);
    let report = server.join().unwrap();
    assert_eq!(report.pages, PAGES);
    assert_eq!(report.faults, PAGES);
    assert!(!report.limit_reached);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_layout_past_the_end_of_the_file_is_refused() {
    let Ok(uffd) = Uffd::create() else {
        eprintln!("SKIPPED: no userfaultfd here");
        return;
    };
    let dir = std::env::temp_dir().join(format!("userfault-bad-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("mem");
    std::fs::write(&path, vec![0u8; 2 * PAGE as usize]).unwrap();
    let (vmm, handler) = UnixStream::pair().unwrap();
    let layout = [GuestRegionUffdMapping {
        base_host_virt_addr: 0x10_0000,
        size: 2 * PAGE,
        offset: PAGE,
        page_size: PAGE,
        page_size_kib: PAGE,
    }];
    send_layout(&vmm, &layout, &uffd).unwrap();
    let e = PageServer::new(&File::open(&path).unwrap(), handler)
        .err()
        .expect("refused");
    assert!(e.to_string().contains("region 0"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
