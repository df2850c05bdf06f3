//! An allocator that backs large allocations with transparent huge pages.
//!
//! The business thread touches its big arrays (account lines, the id table,
//! history chunks, hash tables of reservations and orders) at random. With
//! 4 KiB pages a million accounts span tens of thousands of pages, far more
//! than the TLB holds, so nearly every random access also misses the TLB,
//! and under virtualisation a TLB miss walks two sets of page tables. With
//! 2 MiB pages the same arrays need a few dozen TLB entries.
//!
//! Linux hands out transparent huge pages either always or only where the
//! program asked for them (`madvise`, the usual default: see
//! `/sys/kernel/mm/transparent_hugepage/enabled`). [`HugePages`] wraps the
//! system allocator and, for every allocation of at least
//! [`HUGE_ALLOCATION_MIN`] bytes, asks for huge pages over the 2 MiB-aligned
//! part of it (`madvise(MADV_HUGEPAGE)`) before anything touches it, so its
//! pages are huge from the first fault. Smaller allocations, and every
//! other system, go to the system allocator unchanged. The cost: a
//! large allocation's resident memory grows 2 MiB at a time, and where
//! the kernel is set to defragment on demand (`defrag` = `madvise`) a first
//! touch may wait for it to compact memory.
//!
//! The `ringledger` binary and the benches install it as the global
//! allocator; a program embedding the library chooses for itself:
//!
//! ```
//! #[global_allocator]
//! static ALLOCATOR: ringledger::HugePages = ringledger::HugePages;
//!
//! fn main() {
//!     let accounts = vec![0u64; 1 << 20]; // 8 MiB: on huge pages
//!     assert_eq!(accounts.len(), 1 << 20);
//! }
//! ```

use std::alloc::{GlobalAlloc, Layout, System};

/// Allocations at least this large are advised to use huge pages: twice a
/// huge page, so that every one contains at least one whole aligned huge
/// page wherever the system allocator places it.
pub const HUGE_ALLOCATION_MIN: usize = 4 << 20;

/// The size of a transparent huge page on x86-64 and most aarch64 kernels.
const HUGE_PAGE: usize = 2 << 20;

/// The system allocator, with huge pages for large allocations (see the
/// module documentation).
#[derive(Clone, Copy, Debug, Default)]
pub struct HugePages;

impl HugePages {
    /// Asks for huge pages over the whole aligned huge pages inside
    /// `[start, start + len)`. Advice only: a kernel without transparent
    /// huge pages, or set to `never`, refuses it and nothing changes.
    fn advise(start: *mut u8, len: usize) {
        if len < HUGE_ALLOCATION_MIN || start.is_null() {
            return;
        }
        let first = (start as usize).next_multiple_of(HUGE_PAGE);
        let end = (start as usize + len) & !(HUGE_PAGE - 1);
        if end <= first {
            return;
        }
        #[cfg(target_os = "linux")]
        // SAFETY: `[first, end)` lies inside an allocation the system
        // allocator just made (or grew) for us, so it is mapped memory of
        // this process; MADV_HUGEPAGE changes only how its pages are backed,
        // never their contents, and fails harmlessly (EINVAL) where huge
        // pages are not supported.
        unsafe {
            libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
        }
    }
}

// SAFETY: every call goes to the system allocator with the caller's own
// arguments, so its contract is the system allocator's; `advise` only adds
// advice about pages the returned allocation owns.
unsafe impl GlobalAlloc for HugePages {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let ptr = unsafe { System.alloc(layout) };
        Self::advise(ptr, layout.size());
        ptr
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        Self::advise(ptr, layout.size());
        ptr
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as our caller's.
        let ptr = unsafe { System.realloc(ptr, layout, new_size) };
        // A grown allocation may have moved, or gained pages the advice
        // did not cover yet.
        if new_size > layout.size() {
            Self::advise(ptr, new_size);
        }
        ptr
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Bytes on huge pages in the mappings that overlap `[start, end)`,
    /// from the `AnonHugePages` lines of `/proc/self/smaps` (the advice
    /// splits an allocation's mapping at the huge-page boundaries); `None`
    /// where that file cannot be read.
    #[cfg(target_os = "linux")]
    fn huge_bytes_within(start: usize, end: usize) -> Option<usize> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let mut inside = false;
        let mut huge = 0;
        for line in smaps.lines() {
            let range = line.split_once(' ').and_then(|(range, _)| {
                let (from, to) = range.split_once('-')?;
                Some((
                    usize::from_str_radix(from, 16).ok()?,
                    usize::from_str_radix(to, 16).ok()?,
                ))
            });
            if let Some((from, to)) = range {
                inside = from < end && start < to;
            } else if let Some(kb) = line.strip_prefix("AnonHugePages:").filter(|_| inside) {
                huge += kb
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse::<usize>()
                    .ok()?
                    * 1024;
            }
        }
        Some(huge)
    }

    /// Whether this kernel gives huge pages where asked (`always` or
    /// `madvise`).
    #[cfg(target_os = "linux")]
    fn kernel_offers_huge_pages() -> bool {
        std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .is_ok_and(|s| s.contains("[always]") || s.contains("[madvise]"))
    }

    #[test]
    #[cfg(target_os = "linux")]
    fn a_large_allocation_is_backed_by_huge_pages_once_touched() {
        if !kernel_offers_huge_pages() {
            eprintln!("skipped: transparent huge pages are off on this kernel");
            return;
        }
        let len = 16 << 20;
        let layout = Layout::from_size_align(len, 64).unwrap();
        // SAFETY: a non-zero size; freed below with the same layout.
        let ptr = unsafe { HugePages.alloc(layout) };
        assert!(!ptr.is_null());
        // Touch every page, as a growing array would.
        for offset in (0..len).step_by(4096) {
            // SAFETY: inside the allocation.
            unsafe { ptr.add(offset).write_volatile(1) };
        }
        let huge = huge_bytes_within(ptr as usize, ptr as usize + len);
        // SAFETY: allocated above with this layout.
        unsafe { HugePages.dealloc(ptr, layout) };
        let huge = huge.expect("/proc/self/smaps is readable");
        // At least the 2 MiB-aligned interior but one page (memory may be
        // too fragmented for a page or two on a busy machine).
        assert!(
            huge >= len - 3 * HUGE_PAGE,
            "only {huge} of {len} bytes are on huge pages"
        );
    }

    #[test]
    fn small_and_unaligned_ranges_are_left_alone() {
        // Nothing to advise: too small, or no whole aligned huge page.
        HugePages::advise(std::ptr::null_mut(), 64 << 20);
        HugePages::advise(HUGE_PAGE as *mut u8, HUGE_ALLOCATION_MIN - 1);
        let mut v: Vec<u8> = Vec::with_capacity(1024);
        v.push(1);
        HugePages::advise(v.as_mut_ptr(), v.capacity());
        assert_eq!(v, [1]);
    }
}
