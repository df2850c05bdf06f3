//! Where the sequencer's time comes from. The Ledger never reads a clock:
//! the business thread reads one of these once per batch and stamps it on
//! every request, so the journal carries the time and replay is exact.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of milliseconds for stamping requests.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;
}

/// Milliseconds since the Unix epoch.
#[derive(Clone, Copy, Debug, Default)]
pub struct WallClock;

impl Clock for WallClock {
    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64)
    }
}

/// Time that moves only when told to (tests, simulations, `run --clock manual`).
#[derive(Debug, Default)]
pub struct ManualClock {
    now_ms: AtomicU64,
}

impl ManualClock {
    pub fn new(now_ms: u64) -> ManualClock {
        ManualClock {
            now_ms: AtomicU64::new(now_ms),
        }
    }

    /// Moves time forward to `now_ms`; time never goes backwards, so an
    /// earlier value is ignored. Returns the clock's time afterwards.
    pub fn advance_to(&self, now_ms: u64) -> u64 {
        self.now_ms.fetch_max(now_ms, Ordering::AcqRel).max(now_ms)
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_only_moves_forward() {
        let clock = ManualClock::new(10);
        assert_eq!(clock.advance_to(50), 50);
        assert_eq!(clock.advance_to(20), 50);
        assert_eq!(clock.now_ms(), 50);
    }

    #[test]
    fn wall_clock_is_after_2020() {
        assert!(WallClock.now_ms() > 1_577_836_800_000);
    }
}
