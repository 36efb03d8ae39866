//! Arrays of plain data in anonymous memory of their own, which the
//! kernel zero-fills on first touch: a page costs host memory only once
//! it is written. The soft TLB and the jump cache are mostly empty in a
//! small guest, and a VM restored or forked into a new process then owns
//! only the parts its guest uses (an aligned allocation from the heap
//! would be zeroed by writing every page).

use std::ptr::NonNull;

/// `len` values of `T`, all zeros until written, page-aligned.
#[repr(C)]
pub(crate) struct ZeroedArray<T> {
    /// First (the JIT reads the entries' address at the field's offset).
    ptr: NonNull<T>,
    len: usize,
}

// SAFETY: the array owns its memory like a Box<[T]>.
unsafe impl<T: Send> Send for ZeroedArray<T> {}
// SAFETY: as above; shared access is only through `&[T]`.
unsafe impl<T: Sync> Sync for ZeroedArray<T> {}

impl<T: Copy> ZeroedArray<T> {
    /// # Safety
    /// All-zero bytes must be a valid `T`.
    pub(crate) unsafe fn new(len: usize) -> ZeroedArray<T> {
        let bytes = std::mem::size_of::<T>()
            .checked_mul(len)
            .filter(|&b| b > 0 && std::mem::align_of::<T>() <= 4096)
            .expect("a non-empty array of page-aligned values");
        // SAFETY: a new private anonymous mapping; nothing else is at
        // the address the kernel picks.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            // As the global allocator does when memory runs out.
            let layout = std::alloc::Layout::array::<T>(len).expect("a valid layout");
            std::alloc::handle_alloc_error(layout);
        }
        ZeroedArray {
            ptr: NonNull::new(p.cast()).expect("mmap does not return NULL"),
            len,
        }
    }
}

impl<T> std::ops::Deref for ZeroedArray<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        // SAFETY: `len` initialized values (zeros are valid: `new`'s
        // contract) in memory this array owns.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> std::ops::DerefMut for ZeroedArray<T> {
    fn deref_mut(&mut self) -> &mut [T] {
        // SAFETY: as in `deref`, and `&mut self` is the only access.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }
}

impl<T> Drop for ZeroedArray<T> {
    fn drop(&mut self) {
        let bytes = std::mem::size_of::<T>() * self.len;
        // SAFETY: the mapping `new` made, unmapped once.
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), bytes) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zeroed_until_written_and_writable() {
        // SAFETY: u64 is valid as zeros.
        let mut a = unsafe { ZeroedArray::<[u64; 4]>::new(1000) };
        assert_eq!(a.len(), 1000);
        assert!(a.iter().all(|e| *e == [0; 4]));
        a[999][3] = 7;
        a[0][0] = 1;
        assert_eq!(a[999][3] + a[0][0], 8);
        assert_eq!(a.as_ptr() as usize % 4096, 0);
    }
}
