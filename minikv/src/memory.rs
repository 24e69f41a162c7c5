//! `used_memory`: how many bytes the process has asked the allocator for.
//!
//! Redis wraps malloc (`zmalloc`) to count allocated bytes, and `maxmemory` is compared
//! against that count, not against RSS. We do the same with a counting
//! [`GlobalAlloc`] wrapper that the `minikv` binary installs.
//!
//! Every allocation and free adjusts a counter. A single shared counter would be a
//! cache line that every core writes on every allocation, so each thread adds to its
//! own padded slot and readers sum the slots. A thread may free memory another thread
//! allocated, so a single slot can go negative; only the sum is meaningful.
//!
//! When the binary has not installed the allocator (unit tests, embedding), the count
//! stays at 0 and `maxmemory` never triggers; [`is_counting`] tells which.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};

use crossbeam::utils::CachePadded;

const SLOTS: usize = 64;

static COUNTS: [CachePadded<AtomicI64>; SLOTS] = [const { CachePadded::new(AtomicI64::new(0)) }; SLOTS];
static NEXT_SLOT: AtomicUsize = AtomicUsize::new(0);
static INSTALLED: AtomicBool = AtomicBool::new(false);

thread_local! {
    static SLOT: Cell<usize> = const { Cell::new(usize::MAX) };
}

#[inline]
fn add(delta: i64) {
    // `try_with` because the allocator runs during thread teardown too, after the
    // thread-local is gone; those few bytes go to slot 0.
    let slot = SLOT
        .try_with(|s| {
            let mut i = s.get();
            if i == usize::MAX {
                i = NEXT_SLOT.fetch_add(1, Ordering::Relaxed) % SLOTS;
                s.set(i);
            }
            i
        })
        .unwrap_or(0);
    COUNTS[slot].fetch_add(delta, Ordering::Relaxed);
}

/// The system allocator, counted.
pub struct CountingAlloc;

/// Where the memory comes from: the system allocator, with huge requests mapped lazily so
/// that a decoder's bogus capacity cannot abort the process (see [`minicore::alloc`]).
static INNER: minicore::alloc::ReserveHuge<System> = minicore::alloc::ReserveHuge(System);

unsafe impl GlobalAlloc for CountingAlloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = INNER.alloc(layout);
        if !p.is_null() {
            add(layout.size() as i64);
        }
        p
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        let p = INNER.alloc_zeroed(layout);
        if !p.is_null() {
            add(layout.size() as i64);
        }
        p
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        INNER.dealloc(ptr, layout);
        add(-(layout.size() as i64));
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let p = INNER.realloc(ptr, layout, new_size);
        if !p.is_null() {
            add(new_size as i64 - layout.size() as i64);
        }
        p
    }
}

/// Marks the counting allocator as installed; the binary calls this at start-up.
pub fn mark_installed() {
    INSTALLED.store(true, Ordering::Relaxed);
}

pub fn is_counting() -> bool {
    INSTALLED.load(Ordering::Relaxed)
}

/// Bytes currently allocated by the process (INFO `used_memory`).
pub fn used_memory() -> u64 {
    let sum: i64 = COUNTS.iter().map(|c| c.load(Ordering::Relaxed)).sum();
    sum.max(0) as u64
}

/// Formats bytes like Redis's `bytesToHuman` (INFO `used_memory_human`).
pub fn human(bytes: u64) -> String {
    let b = bytes as f64;
    if bytes < 1024 {
        format!("{bytes}B")
    } else if b < 1024.0 * 1024.0 {
        format!("{:.2}K", b / 1024.0)
    } else if b < 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2}M", b / (1024.0 * 1024.0))
    } else if b < 1024.0f64.powi(4) {
        format!("{:.2}G", b / 1024.0f64.powi(3))
    } else {
        format!("{:.2}T", b / 1024.0f64.powi(4))
    }
}
