//! The process allocator: the system allocator, except that single allocations of at least
//! `RESERVED_ALLOCATION_BYTES_MIN` are served as `MAP_NORESERVE` anonymous mappings. Runs on:
//! every thread. Why: the wire codec (kafka-protocol) sizes a decoded array with
//! `Vec::with_capacity(count)` before it reads the elements, so a 20-byte request claiming two
//! billion elements (KAFKA-14063's shape) asks for hundreds of GB. The system allocator refuses
//! that and Rust aborts the process. A no-reserve mapping of that size only reserves address
//! space: no page is touched before the decoder runs out of bytes and fails, and the mapping is
//! released on drop. Legitimate allocations of that size do not exist (frames are at most
//! `socket_request_max_bytes`). Invariant: a pointer is unmapped if and only if it was mapped,
//! decided by the same size test on the same layout.

use std::alloc::{GlobalAlloc, Layout, System};

use crate::constants::RESERVED_ALLOCATION_BYTES_MIN;

const PAGE_BYTES: usize = 4096;

/// See the module documentation.
pub struct ReservingAllocator;

fn reserved(layout: &Layout) -> bool {
    layout.size() >= RESERVED_ALLOCATION_BYTES_MIN && layout.align() <= PAGE_BYTES
}

// SAFETY: every method either forwards to `System` or pairs mmap with munmap of the same size;
// mmap returns page-aligned, zeroed memory, which satisfies any alignment up to a page.
unsafe impl GlobalAlloc for ReservingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if !reserved(&layout) {
            return unsafe { System.alloc(layout) };
        }
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                layout.size(),
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            std::ptr::null_mut()
        } else {
            ptr as *mut u8
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if reserved(&layout) {
            // Fresh anonymous mappings are zeroed by the kernel.
            unsafe { self.alloc(layout) }
        } else {
            unsafe { System.alloc_zeroed(layout) }
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if reserved(&layout) {
            unsafe { libc::munmap(ptr as *mut libc::c_void, layout.size()) };
        } else {
            unsafe { System.dealloc(ptr, layout) }
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !reserved(&layout) && !reserved(&new_layout) {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        let new_ptr = unsafe { self.alloc(new_layout) };
        if !new_ptr.is_null() {
            let keep = layout.size().min(new_size);
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new_ptr, keep);
                self.dealloc(ptr, layout);
            }
        }
        new_ptr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_reservation_is_not_committed() {
        let a = ReservingAllocator;
        // 512 GiB: far beyond this machine's memory; only address space is reserved.
        let layout = Layout::from_size_align(512 << 30, 8).unwrap();
        let p = unsafe { a.alloc(layout) };
        assert!(!p.is_null(), "a no-reserve mapping of 512 GiB succeeds");
        unsafe {
            *p = 7;
            assert_eq!(*p, 7);
            let p2 = a.realloc(p, layout, 16);
            assert_eq!(*p2, 7, "realloc down keeps the prefix");
            a.dealloc(p2, Layout::from_size_align(16, 8).unwrap());
        }
        let small = Layout::from_size_align(64, 8).unwrap();
        let q = unsafe { a.alloc_zeroed(small) };
        assert!(unsafe { *q } == 0);
        unsafe { a.dealloc(q, small) };
    }
}
