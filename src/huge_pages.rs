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
//! system allocator and makes every allocation of at least
//! [`HUGE_ALLOCATION_MIN`] bytes (one huge page) aligned to a huge page,
//! asking for huge pages over it (`madvise(MADV_HUGEPAGE)`) before anything
//! touches it, so its pages are huge from the first fault. Smaller allocations, and every
//! other system, go to the system allocator unchanged. The cost: a
//! large allocation's resident memory grows 2 MiB at a time, and where
//! the kernel is set to defragment on demand (`defrag` = `madvise`) a first
//! touch may wait for it to compact memory; growing a large allocation
//! always copies it (as the system allocator does for any alignment beyond
//! `malloc`'s, such as the account lines' cache-line alignment).
//!
//! The `ringledger` binary and the benches install it as the global
//! allocator (`RINGLEDGER_HUGE_PAGES=0` in the environment turns the huge
//! pages off); a program embedding the library chooses for itself:
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
use std::sync::atomic::{AtomicU8, Ordering};

/// Allocations at least this large go on huge pages: one huge page.
pub const HUGE_ALLOCATION_MIN: usize = HUGE_PAGE;

/// The size of a transparent huge page on x86-64 (and most aarch64 kernels).
const HUGE_PAGE: usize = 2 << 20;

/// The environment variable that turns huge pages off (`0`, `off` or
/// `never`), for comparing with and without them, or for a machine where
/// their memory cost matters more. Read once, at the first allocation, and
/// never again, so an allocation is always freed as it was made.
pub const HUGE_PAGES_ENV: &str = "RINGLEDGER_HUGE_PAGES";

const HUGE_PAGES_ENV_C: &std::ffi::CStr = c"RINGLEDGER_HUGE_PAGES";

/// Whether huge pages are on: 0 not decided yet, 1 on, 2 off.
static STATE: AtomicU8 = AtomicU8::new(0);

/// Whether large allocations go on huge pages (see [`HUGE_PAGES_ENV`]).
pub fn huge_pages_on() -> bool {
    match STATE.load(Ordering::Relaxed) {
        1 => true,
        2 => false,
        _ => {
            let on = !env_says_off();
            // Every thread that decides reads the same environment, so
            // they agree; the first store is the one that counts.
            let _ = STATE.compare_exchange(
                0,
                if on { 1 } else { 2 },
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            STATE.load(Ordering::Relaxed) == 1
        }
    }
}

/// Reads the environment without allocating (this runs inside the
/// allocator): `getenv` hands back a pointer into the environment block.
fn env_says_off() -> bool {
    #[cfg(unix)]
    {
        // `getenv` returns null or a pointer to a NUL-terminated string in
        // the environment, read here at once (nothing in this program
        // changes the environment while allocating).
        // SAFETY: the name is a NUL-terminated constant; see above.
        unsafe {
            let value = libc::getenv(HUGE_PAGES_ENV_C.as_ptr());
            if value.is_null() {
                return false;
            }
            matches!(
                std::ffi::CStr::from_ptr(value).to_bytes(),
                b"0" | b"off" | b"never" | b"false" | b"no"
            )
        }
    }
    #[cfg(not(unix))]
    false
}

/// The system allocator, with huge pages for large allocations (see the
/// module documentation).
#[derive(Clone, Copy, Debug, Default)]
pub struct HugePages;

impl HugePages {
    /// The layout a large allocation is really made with: aligned to a huge
    /// page, so that all of it but its tail sits on whole huge pages. The
    /// same function of the caller's layout every time, so `dealloc` and
    /// `realloc` hand the system allocator back the layout it allocated.
    fn huge(layout: Layout) -> Option<Layout> {
        if layout.size() < HUGE_ALLOCATION_MIN || !huge_pages_on() {
            return None;
        }
        Layout::from_size_align(layout.size(), layout.align().max(HUGE_PAGE)).ok()
    }

    /// Asks for huge pages over the whole aligned huge pages inside
    /// `[start, start + len)`. Advice only: a kernel without transparent
    /// huge pages, or set to `never`, refuses it and nothing changes.
    fn advise(start: *mut u8, len: usize) {
        if start.is_null() {
            return;
        }
        let first = (start as usize).next_multiple_of(HUGE_PAGE);
        let end = (start as usize).saturating_add(len) & !(HUGE_PAGE - 1);
        if end <= first {
            return;
        }
        // `[first, end)` lies inside an allocation the system allocator just
        // made for us and nothing has touched yet; MADV_HUGEPAGE changes
        // only how its pages are backed, never their contents, and fails
        // harmlessly (EINVAL) where huge pages are not supported.
        #[cfg(target_os = "linux")]
        // SAFETY: mapped memory of this process, advice only (see above).
        unsafe {
            libc::madvise(first as *mut libc::c_void, end - first, libc::MADV_HUGEPAGE);
        }
    }
}

// Small allocations go to the system allocator unchanged. A large one is
// made by the system allocator with a stricter alignment (`huge`), which
// satisfies the caller's, and is freed or reallocated with that same layout,
// recomputed from the caller's; `advise` only adds advice about pages the
// returned allocation owns.
// SAFETY: every block is made and freed by the system allocator, as above.
unsafe impl GlobalAlloc for HugePages {
    // SAFETY: callers keep `GlobalAlloc`'s contract, which this passes on.
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let Some(huge) = Self::huge(layout) else {
            // SAFETY: same contract as our caller's.
            return unsafe { System.alloc(layout) };
        };
        // SAFETY: `huge` has the caller's non-zero size.
        let ptr = unsafe { System.alloc(huge) };
        Self::advise(ptr, huge.size());
        ptr
    }

    // SAFETY: callers keep `GlobalAlloc`'s contract, which this passes on.
    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if Self::huge(layout).is_none() {
            // SAFETY: same contract as our caller's.
            return unsafe { System.alloc_zeroed(layout) };
        }
        // Advised before the zeroing touches it, so its pages are huge.
        // SAFETY: same contract as our caller's.
        let ptr = unsafe { self.alloc(layout) };
        if !ptr.is_null() {
            // SAFETY: `ptr` holds `layout.size()` writable bytes.
            unsafe { ptr.write_bytes(0, layout.size()) };
        }
        ptr
    }

    // SAFETY: callers keep `GlobalAlloc`'s contract, which this passes on.
    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` was allocated by `alloc` with this layout, so by the
        // system allocator with the layout `huge` gives (or this one).
        unsafe { System.dealloc(ptr, Self::huge(layout).unwrap_or(layout)) }
    }

    // SAFETY: callers keep `GlobalAlloc`'s contract, which this passes on.
    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: the caller guarantees `new_size`, rounded up to the
        // alignment, does not overflow `isize`.
        let new_layout = unsafe { Layout::from_size_align_unchecked(new_size, layout.align()) };
        if Self::huge(layout).is_none() && Self::huge(new_layout).is_none() {
            // SAFETY: same contract as our caller's.
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // To or from a huge layout: a new allocation (advised before the
        // copy touches it) and a copy, as the system allocator itself does
        // for any alignment beyond malloc's.
        // SAFETY: `new_layout` has a non-zero size (the caller's contract).
        let moved = unsafe { self.alloc(new_layout) };
        if !moved.is_null() {
            // SAFETY: both blocks hold at least the smaller size, and a
            // fresh allocation never overlaps a live one.
            unsafe {
                std::ptr::copy_nonoverlapping(ptr, moved, layout.size().min(new_size));
                self.dealloc(ptr, layout);
            }
        }
        moved
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
        // All of it but a page (memory may be too fragmented for one on a
        // busy machine).
        assert!(
            huge >= len - HUGE_PAGE,
            "only {huge} of {len} bytes are on huge pages"
        );
    }

    #[test]
    fn growing_and_shrinking_across_the_threshold_keeps_the_contents() {
        let mut ptr = std::ptr::null_mut::<u8>();
        let mut size = 0;
        for new_size in [1000, 3 << 20, 9 << 20, 5 << 20, 100, 4 << 20] {
            // SAFETY: allocated (or reallocated) here with `size` and
            // alignment 8, and every write stays inside `new_size` bytes.
            unsafe {
                let layout = Layout::from_size_align(size, 8).unwrap();
                ptr = if ptr.is_null() {
                    HugePages.alloc(Layout::from_size_align(new_size, 8).unwrap())
                } else {
                    HugePages.realloc(ptr, layout, new_size)
                };
                assert!(!ptr.is_null());
                assert_eq!(ptr as usize % 8, 0);
                if new_size >= HUGE_ALLOCATION_MIN {
                    assert_eq!(
                        ptr as usize % HUGE_PAGE,
                        0,
                        "{new_size} bytes not on a huge page"
                    );
                }
                for i in (0..size.min(new_size)).step_by(4093) {
                    assert_eq!(
                        *ptr.add(i),
                        (i % 251) as u8,
                        "byte {i} after {size} -> {new_size}"
                    );
                }
                for i in (0..new_size).step_by(4093) {
                    *ptr.add(i) = (i % 251) as u8;
                }
            }
            size = new_size;
        }
        // SAFETY: allocated above with this size and alignment.
        unsafe { HugePages.dealloc(ptr, Layout::from_size_align(size, 8).unwrap()) };
        // SAFETY: a non-zero size; freed with the same layout.
        unsafe {
            let layout = Layout::from_size_align(8 << 20, 64).unwrap();
            let zeroed = HugePages.alloc_zeroed(layout);
            assert!((0..layout.size())
                .step_by(4096)
                .all(|i| *zeroed.add(i) == 0));
            HugePages.dealloc(zeroed, layout);
        }
    }

    /// Run by `the_environment_turns_huge_pages_off` in a child process
    /// whose environment says off.
    #[test]
    #[ignore = "run in a child process with RINGLEDGER_HUGE_PAGES=0"]
    fn child_with_huge_pages_off() {
        assert!(!huge_pages_on());
        let layout = Layout::from_size_align(16 << 20, 8).unwrap();
        assert_eq!(HugePages::huge(layout), None);
        // SAFETY: a non-zero size; freed with the same layout.
        unsafe {
            let ptr = HugePages.alloc(layout);
            assert!(!ptr.is_null());
            ptr.write_bytes(7, layout.size());
            HugePages.dealloc(ptr, layout);
        }
    }

    /// Runs `child_with_huge_pages_off` in a child process with
    /// `RINGLEDGER_HUGE_PAGES` set to `value` (or unset): whether it passed.
    fn child_passes(value: Option<&str>) -> bool {
        let mut child = std::process::Command::new(std::env::current_exe().unwrap());
        child
            .args([
                "--exact",
                "huge_pages::tests::child_with_huge_pages_off",
                "--ignored",
                "--quiet",
            ])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null());
        match value {
            Some(value) => child.env(HUGE_PAGES_ENV, value),
            None => child.env_remove(HUGE_PAGES_ENV),
        };
        child.status().unwrap().success()
    }

    #[test]
    fn the_environment_turns_huge_pages_off() {
        for off in ["0", "off", "never"] {
            assert!(
                child_passes(Some(off)),
                "{HUGE_PAGES_ENV}={off} left them on"
            );
        }
        // And the child's check can fail: on without the variable, or
        // with any other value.
        for on in [None, Some("1"), Some("")] {
            assert!(!child_passes(on), "{HUGE_PAGES_ENV}={on:?} turned them off");
        }
        assert_eq!(HUGE_PAGES_ENV_C.to_str(), Ok(HUGE_PAGES_ENV));
    }

    #[test]
    fn small_and_unaligned_ranges_are_left_alone() {
        // Nothing to advise: no address, or no whole aligned huge page.
        HugePages::advise(std::ptr::null_mut(), 64 << 20);
        HugePages::advise((HUGE_PAGE + 1) as *mut u8, HUGE_PAGE);
        let mut v: Vec<u8> = Vec::with_capacity(1024);
        v.push(1);
        HugePages::advise(v.as_mut_ptr(), v.capacity());
        assert_eq!(v, [1]);
    }
}
