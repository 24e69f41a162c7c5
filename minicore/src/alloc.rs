//! An allocator adapter that keeps a decoder's absurd capacity request from aborting
//! the process.
//!
//! Why this exists. The Kafka codecs (the `kafka-protocol` crate, 0.18) decode an array
//! by reading its element count off the wire and calling `Vec::with_capacity(count)`
//! before decoding a single element. A 20-byte request that claims two billion elements
//! asks for ~160 GB up front; the system allocator refuses, and Rust's answer to a
//! refused allocation is `abort()`, not a panic that a server could catch. One malformed
//! frame would take the broker down. (The upstream fix is proposed in kafka-protocol-rs
//! pull requests 152, 161 and 200: reject a count larger than the bytes left.)
//!
//! The remedy here: an allocation of [`HUGE`] bytes or more is served by an anonymous
//! `mmap` with `MAP_NORESERVE`. The kernel hands out address space without committing
//! memory, so the request succeeds; the decoder then runs out of input after a few
//! elements, returns an error, and the untouched mapping is unmapped. Memory is only
//! used for pages actually written, exactly as for any other allocation.
//!
//! What it costs: nothing below [`HUGE`] (one comparison). A legitimate allocation that
//! large is served correctly too, just without the kernel's overcommit accounting up
//! front, and `realloc` of such a block copies instead of remapping.
//!
//! Left out: `vm.overcommit_memory=2` (strict accounting) refuses even `MAP_NORESERVE`
//! mappings, so there the abort remains possible; the limit is then the kernel's.

use std::alloc::{GlobalAlloc, Layout};

/// Allocations this big or bigger are mapped with `MAP_NORESERVE`. No server in this
/// workspace makes a legitimate single allocation near 1 GiB (frames are capped at
/// 100 MiB), so in practice only a decoder's bogus capacity reaches this path.
pub const HUGE: usize = 1 << 30;

/// Wraps an allocator `A`; see the module docs.
pub struct ReserveHuge<A>(pub A);

fn page_size() -> usize {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as usize
    } else {
        4096
    }
}

/// Whether `layout` goes to `mmap`: big enough, and no stricter alignment than a page.
fn mapped(layout: Layout) -> bool {
    layout.size() >= HUGE && layout.align() <= page_size()
}

unsafe fn map(size: usize) -> *mut u8 {
    // SAFETY: an anonymous private mapping with no address hint has no preconditions.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            size,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        std::ptr::null_mut()
    } else {
        p.cast()
    }
}

unsafe fn unmap(ptr: *mut u8, size: usize) {
    // SAFETY: the caller passes a mapping made by `map` with the same size.
    let result = unsafe { libc::munmap(ptr.cast(), size) };
    debug_assert_eq!(result, 0, "munmap of a block this allocator mapped failed");
}

// SAFETY: every block is either from `A` (and returned to `A`) or from `map` (and
// returned to `unmap`); which one is decided by the layout, which the caller must pass
// unchanged to dealloc and realloc, as GlobalAlloc requires.
unsafe impl<A: GlobalAlloc> GlobalAlloc for ReserveHuge<A> {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if mapped(layout) {
            unsafe { map(layout.size()) }
        } else {
            unsafe { self.0.alloc(layout) }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if mapped(layout) {
            // Anonymous mappings are zero-filled.
            unsafe { map(layout.size()) }
        } else {
            unsafe { self.0.alloc_zeroed(layout) }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if mapped(layout) {
            unsafe { unmap(ptr, layout.size()) }
        } else {
            unsafe { self.0.dealloc(ptr, layout) }
        }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: GlobalAlloc::realloc's contract: new_size, rounded up to the alignment,
        // does not overflow isize.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if !mapped(layout) && !mapped(new_layout) {
            return unsafe { self.0.realloc(ptr, layout, new_size) };
        }
        let new = unsafe { self.alloc(new_layout) };
        if !new.is_null() {
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        new
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::alloc::System;

    #[test]
    fn an_absurd_request_is_granted_address_space_not_memory() {
        let alloc = ReserveHuge(System);
        // 200 GiB: far more than this machine has; the system allocator would refuse.
        let layout = Layout::from_size_align(200 << 30, 8).unwrap();
        unsafe {
            let p = alloc.alloc(layout);
            assert!(!p.is_null(), "MAP_NORESERVE grants the address space");
            // The first and last pages can be used; only they become resident.
            *p = 1;
            *p.add(layout.size() - 1) = 2;
            assert_eq!((*p, *p.add(layout.size() - 1)), (1, 2));
            alloc.dealloc(p, layout);
        }
    }

    #[test]
    fn growing_across_the_threshold_keeps_the_contents() {
        let alloc = ReserveHuge(System);
        let small = Layout::from_size_align(4096, 8).unwrap();
        unsafe {
            let p = alloc.alloc(small);
            for i in 0..4096 {
                *p.add(i) = (i % 251) as u8;
            }
            let grown = alloc.realloc(p, small, HUGE + 1);
            assert!(!grown.is_null());
            assert!((0..4096).all(|i| *grown.add(i) == (i % 251) as u8));
            let shrunk = alloc.realloc(grown, Layout::from_size_align(HUGE + 1, 8).unwrap(), 100);
            assert!((0..100).all(|i| *shrunk.add(i) == (i % 251) as u8));
            alloc.dealloc(shrunk, Layout::from_size_align(100, 8).unwrap());
        }
    }

    #[test]
    fn small_requests_go_to_the_wrapped_allocator() {
        assert!(!mapped(Layout::from_size_align(HUGE - 1, 8).unwrap()));
        assert!(mapped(Layout::from_size_align(HUGE, 8).unwrap()));
        assert!(!mapped(Layout::from_size_align(HUGE, 1 << 30).unwrap()), "alignment beyond a page goes to A");
    }
}
