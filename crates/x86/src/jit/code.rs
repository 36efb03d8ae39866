//! Executable memory for compiled blocks: one private mapping per block,
//! written while it is read-write, then made read-execute (never both).
//! The mapping is unmapped when its [`Code`] is dropped, which happens
//! when the block's ops are freed (block cache garbage collection), so
//! code never outlives the block it was compiled from and is never freed
//! while the block runs.

/// A compiled block's machine code.
pub(crate) struct Code {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is owned by this value alone; it moves with the
// CPU (and its block cache) to the vCPU thread.
unsafe impl Send for Code {}

impl Code {
    /// Copies `bytes` into a new executable mapping. None when the host
    /// refuses the mapping (out of memory, W^X policy).
    pub(crate) fn new(bytes: &[u8]) -> Option<Code> {
        let page = 4096;
        let len = bytes.len().div_ceil(page).max(1) * page;
        // SAFETY: a fresh anonymous mapping, no address hint.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return None;
        }
        let code = Code {
            ptr: ptr as *mut u8,
            len,
        };
        // SAFETY: the mapping holds `len >= bytes.len()` writable bytes.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), code.ptr, bytes.len()) };
        // SAFETY: the mapping is ours; from now on it is only executed.
        let r = unsafe { libc::mprotect(ptr, len, libc::PROT_READ | libc::PROT_EXEC) };
        (r == 0).then_some(code)
    }

    /// Host bytes held (whole pages).
    pub(crate) fn bytes(&self) -> usize {
        self.len
    }

    pub(crate) fn ptr(&self) -> *const u8 {
        self.ptr
    }
}

impl Drop for Code {
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, unmapped once.
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len) };
    }
}
