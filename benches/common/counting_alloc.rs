//! A counting allocator around the one the `ringledger` binary installs
//! (the system allocator with huge pages for large allocations: see
//! `ringledger::HugePages`), installed as the global
//! allocator of the crate that includes this file (`#[path]`): the
//! benches read the heap bytes in use (`benches/ledger.rs`,
//! `benches/orderbook.rs`), `tests/order_allocations.rs` the number of
//! allocations.

use std::alloc::{GlobalAlloc, Layout};

use ringledger::HugePages as System;
use std::sync::atomic::{AtomicIsize, AtomicU64, Ordering};

/// Bytes allocated and not yet freed.
#[allow(dead_code)] // not every includer reads both counters
pub static HEAP_BYTES: AtomicIsize = AtomicIsize::new(0);
/// Calls to `alloc` and `realloc`.
#[allow(dead_code)]
pub static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

struct Counting;

// SAFETY: forwards every call to the binary's allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HEAP_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HEAP_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
        HEAP_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;
