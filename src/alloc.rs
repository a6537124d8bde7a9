//! The process allocator: the system allocator, except that single allocations of at least
//! `RESERVED_ALLOCATION_BYTES_MIN` are served as `MAP_NORESERVE` anonymous mappings. Runs on:
//! every thread. Why: the wire codec (kafka-protocol) sizes a decoded array with
//! `Vec::with_capacity(count)` before it reads the elements, so a 20-byte request claiming two
//! billion elements (KAFKA-14063's shape) asks for hundreds of GB. The system allocator refuses
//! that and Rust aborts the process. A no-reserve mapping of that size only reserves address
//! space: no page is touched before the decoder runs out of bytes and fails, and the mapping is
//! released on drop. Legitimate allocations of that size do not exist (frames are at most
//! `socket_request_max_bytes`).
//!
//! Second exception: page-aligned allocations of at least `HUGE_DMA_BYTES_MIN` (the O_DIRECT
//! write buffers glommio allocates with 4 KiB alignment) are mapped 2 MiB-aligned with
//! `MADV_HUGEPAGE`. Physically contiguous 2 MiB pages let the block layer build bios up to the
//! device's `max_sectors_kb` instead of one 4 KiB segment per page (virtio: 254 segments, about
//! 1 MiB), so a large group-commit write costs a quarter of the IOs on an IOPS-limited disk,
//! and the buffer faults in 2 MiB at a time. Invariant: a pointer is unmapped if and only if it
//! was mapped, decided by the same test (`class`) on the same layout.

use std::alloc::{GlobalAlloc, Layout, System};

use crate::constants::RESERVED_ALLOCATION_BYTES_MIN;

const PAGE_BYTES: usize = 4096;

/// See the module documentation.
pub struct ReservingAllocator;

/// Smallest page-aligned allocation mapped with transparent huge pages.
const HUGE_DMA_BYTES_MIN: usize = 2 << 20;
const HUGE_PAGE_BYTES: usize = 2 << 20;

#[derive(PartialEq, Eq)]
enum Class {
    System,
    /// A no-reserve mapping of exactly the size.
    Reserved,
    /// A 2 MiB-aligned mapping of the size rounded up to 2 MiB.
    HugeDma,
}

fn class(layout: &Layout) -> Class {
    if layout.size() >= RESERVED_ALLOCATION_BYTES_MIN && layout.align() <= PAGE_BYTES {
        Class::Reserved
    } else if layout.size() >= HUGE_DMA_BYTES_MIN && layout.align() == PAGE_BYTES {
        Class::HugeDma
    } else {
        Class::System
    }
}

fn huge_len(size: usize) -> usize {
    size.div_ceil(HUGE_PAGE_BYTES) * HUGE_PAGE_BYTES
}

/// Maps `len` bytes (a multiple of 2 MiB) at a 2 MiB boundary and asks for huge pages.
unsafe fn map_huge(len: usize) -> *mut u8 {
    let span = len + HUGE_PAGE_BYTES;
    let raw = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            span,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    if raw == libc::MAP_FAILED {
        return std::ptr::null_mut();
    }
    let start = raw as usize;
    let aligned = start.next_multiple_of(HUGE_PAGE_BYTES);
    // Give back the unaligned head and the tail beyond `len`.
    unsafe {
        if aligned > start {
            libc::munmap(raw, aligned - start);
        }
        let tail = start + span - (aligned + len);
        if tail > 0 {
            libc::munmap((aligned + len) as *mut libc::c_void, tail);
        }
        // Advice only: without THP the buffer still works, with 4 KiB pages.
        libc::madvise(aligned as *mut libc::c_void, len, libc::MADV_HUGEPAGE);
    }
    aligned as *mut u8
}

// SAFETY: every method either forwards to `System` or pairs mmap with munmap of the same
// length, chosen by `class` of the same layout; mmap returns page-aligned (HugeDma: 2 MiB
// aligned), zeroed memory, which satisfies the alignments each class admits.
unsafe impl GlobalAlloc for ReservingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        match class(&layout) {
            Class::System => unsafe { System.alloc(layout) },
            Class::HugeDma => unsafe { map_huge(huge_len(layout.size())) },
            Class::Reserved => {
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
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        match class(&layout) {
            Class::System => unsafe { System.alloc_zeroed(layout) },
            // Fresh anonymous mappings are zeroed by the kernel.
            _ => unsafe { self.alloc(layout) },
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        match class(&layout) {
            Class::System => unsafe { System.dealloc(ptr, layout) },
            Class::Reserved => unsafe {
                libc::munmap(ptr as *mut libc::c_void, layout.size());
            },
            Class::HugeDma => unsafe {
                libc::munmap(ptr as *mut libc::c_void, huge_len(layout.size()));
            },
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if class(&layout) == Class::System && class(&new_layout) == Class::System {
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
        // A DMA-sized page-aligned buffer: 2 MiB aligned, usable to its end, reallocatable.
        let dma = Layout::from_size_align(3 << 20, PAGE_BYTES).unwrap();
        let d = unsafe { a.alloc(dma) };
        assert_eq!(
            d as usize % HUGE_PAGE_BYTES,
            0,
            "huge DMA buffers are 2 MiB aligned"
        );
        unsafe {
            *d.add((3 << 20) - 1) = 9;
            let d2 = a.realloc(d, dma, 5 << 20);
            assert_eq!(*d2.add((3 << 20) - 1), 9, "realloc keeps the bytes");
            a.dealloc(d2, Layout::from_size_align(5 << 20, PAGE_BYTES).unwrap());
        }
        let small = Layout::from_size_align(64, 8).unwrap();
        let q = unsafe { a.alloc_zeroed(small) };
        assert!(unsafe { *q } == 0);
        unsafe { a.dealloc(q, small) };
    }
}
