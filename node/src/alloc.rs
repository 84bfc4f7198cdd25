//! The node's heap: mimalloc for small blocks, the system allocator (glibc) for
//! large ones.
//!
//! Under single-event appends the node makes and frees many small blocks per
//! request on every thread (hyper's buffers, parsed envelopes, receipts): with glibc
//! alone, malloc and free took ~16% of the node's CPU (README §Performance).
//! mimalloc's per-thread free lists make that cheaper, but given the megabyte
//! bodies and replies of batch appends as well it kept almost twice the memory (peak
//! 274–286 MB against 139–164 MB), where glibc serves large blocks with mmap
//! ([`super::fixed_mmap_threshold`]) and returns them on free. So each block goes by
//! its size: below [`LARGE`] to mimalloc, from it up to glibc. Measured on one log
//! at 10M–12M entries (README §Performance, Current figures): mimalloc's functions
//! ~8% of the node under single appends, ~10% less node CPU per single append and
//! less per proof, batch appends unchanged; peak 206–237 MB in batch runs, between
//! the two.
//!
//! Sound because Rust hands `dealloc` and `realloc` the layout the block was
//! allocated with, so the size names the allocator that owns the block; a
//! `realloc` across the boundary moves the block from one to the other.
#![allow(unsafe_code)]

use mimalloc::MiMalloc;
use std::alloc::{GlobalAlloc, Layout, System};

/// Blocks of this many bytes or more come from the system allocator. It is the mmap
/// threshold the node fixes for glibc, so these blocks are usually mapped and
/// unmapped on their own.
pub const LARGE: usize = 256 << 10;

pub struct BySize;

fn large(size: usize) -> bool {
    size >= LARGE
}

// SAFETY: every method forwards to the allocator that owns the block, which the
// block's size decides the same way at allocation and at release; both allocators
// uphold GlobalAlloc's contract themselves.
unsafe impl GlobalAlloc for BySize {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if large(layout.size()) {
            System.alloc(layout)
        } else {
            MiMalloc.alloc(layout)
        }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if large(layout.size()) {
            System.alloc_zeroed(layout)
        } else {
            MiMalloc.alloc_zeroed(layout)
        }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if large(layout.size()) {
            System.dealloc(ptr, layout)
        } else {
            MiMalloc.dealloc(ptr, layout)
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        match (large(layout.size()), large(new_size)) {
            (true, true) => System.realloc(ptr, layout, new_size),
            (false, false) => MiMalloc.realloc(ptr, layout, new_size),
            _ => {
                // SAFETY: the caller guarantees new_size, rounded up to the
                // alignment, does not overflow isize; the alignment is the block's.
                let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
                let moved = self.alloc(new_layout);
                if !moved.is_null() {
                    std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                    self.dealloc(ptr, layout);
                }
                moved
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    extern "C" {
        /// mimalloc's own answer to whether it holds a block (linked in through the
        /// mimalloc crate).
        fn mi_is_in_heap_region(p: *const u8) -> bool;
    }

    /// Blocks grown and shrunk across the boundary keep their bytes and their
    /// alignment, and each lives in the allocator its size names.
    #[test]
    fn blocks_keep_their_bytes_across_the_boundary() {
        let a = BySize;
        for align in [1usize, 8, 64, 4096] {
            let layout = |size| Layout::from_size_align(size, align).unwrap();
            let pattern = |i: usize| (i % 251) as u8;
            unsafe {
                let p = a.alloc(layout(1000));
                assert!(!p.is_null() && (p as usize).is_multiple_of(align));
                assert!(
                    mi_is_in_heap_region(p),
                    "1000 B, align {align}: not mimalloc's"
                );
                for i in 0..1000 {
                    *p.add(i) = pattern(i);
                }
                let p = a.realloc(p, layout(1000), LARGE + 1);
                assert!(!p.is_null() && (p as usize).is_multiple_of(align));
                assert!(
                    !mi_is_in_heap_region(p),
                    "grown past LARGE: still mimalloc's"
                );
                assert!((0..1000).all(|i| *p.add(i) == pattern(i)));
                let p = a.realloc(p, layout(LARGE + 1), 10);
                assert!(!p.is_null() && (p as usize).is_multiple_of(align));
                assert!(
                    mi_is_in_heap_region(p),
                    "shrunk below LARGE: not mimalloc's"
                );
                assert!((0..10).all(|i| *p.add(i) == pattern(i)));
                a.dealloc(p, layout(10));
                let z = a.alloc_zeroed(layout(LARGE));
                assert!(!z.is_null() && (z as usize).is_multiple_of(align));
                assert!(!mi_is_in_heap_region(z), "LARGE bytes: mimalloc's");
                assert!((0..LARGE).all(|i| *z.add(i) == 0));
                a.dealloc(z, layout(LARGE));
                let z = a.alloc_zeroed(layout(LARGE - 1));
                assert!(mi_is_in_heap_region(z), "LARGE - 1 bytes: not mimalloc's");
                assert!((0..LARGE - 1).all(|i| *z.add(i) == 0));
                a.dealloc(z, layout(LARGE - 1));
            }
        }
        // And through the real global allocator, which is this one.
        let mut v: Vec<u8> = (0..=255u8).cycle().take(LARGE - 8).collect();
        assert!(unsafe { mi_is_in_heap_region(v.as_ptr()) });
        v.extend_from_slice(&[7; 64]);
        assert!(!unsafe { mi_is_in_heap_region(v.as_ptr()) });
        v.truncate(100);
        v.shrink_to_fit();
        assert!(unsafe { mi_is_in_heap_region(v.as_ptr()) });
        assert_eq!(v[..3], [0, 1, 2]);
    }
}
