//! Where the sequencer's time comes from. The Ledger never reads a clock:
//! the business thread reads one of these once per batch and stamps it on
//! every request, so the journal carries the time and replay is exact.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

/// A source of milliseconds for stamping requests.
pub trait Clock: Send + Sync + 'static {
    fn now_ms(&self) -> u64;

    /// Told once at start what time the (recovered) Ledger has reached. The
    /// sequencer never stamps earlier than that anyway; a clock that can be
    /// set (a [`ManualClock`]) moves there, so it shows the time requests
    /// will really carry and refuses to go back before it.
    fn resume_from(&self, _ledger_now_ms: u64) {}
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

/// A [`ManualClock`] was asked to move back in time; it did not move.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TimeWentBackwards {
    /// What the clock shows (and still shows).
    pub now_ms: u64,
    pub requested_ms: u64,
}

impl fmt::Display for TimeWentBackwards {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "time never goes backwards: the clock shows {} ms, {} ms is earlier",
            self.now_ms, self.requested_ms
        )
    }
}

impl std::error::Error for TimeWentBackwards {}

impl ManualClock {
    pub fn new(now_ms: u64) -> ManualClock {
        ManualClock {
            now_ms: AtomicU64::new(now_ms),
        }
    }

    /// Moves time to `now_ms`, which may equal the current time but not be
    /// earlier: an earlier time is refused, not silently ignored, because
    /// whoever asked for it believes something that is not so.
    pub fn advance_to(&self, now_ms: u64) -> Result<(), TimeWentBackwards> {
        self.now_ms
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |shown| {
                (now_ms >= shown).then_some(now_ms)
            })
            .map(drop)
            .map_err(|shown| TimeWentBackwards {
                now_ms: shown,
                requested_ms: now_ms,
            })
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> u64 {
        self.now_ms.load(Ordering::Acquire)
    }

    fn resume_from(&self, ledger_now_ms: u64) {
        self.now_ms.fetch_max(ledger_now_ms, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_refuses_to_go_backwards() {
        let clock = ManualClock::new(10);
        assert_eq!(clock.advance_to(50), Ok(()));
        assert_eq!(
            clock.advance_to(20),
            Err(TimeWentBackwards {
                now_ms: 50,
                requested_ms: 20
            })
        );
        assert_eq!(clock.now_ms(), 50);
        assert_eq!(clock.advance_to(50), Ok(()), "the same time is fine");
    }

    #[test]
    fn manual_clock_resumes_from_the_ledger_time_but_never_goes_back() {
        let clock = ManualClock::new(10);
        clock.resume_from(500);
        assert_eq!(clock.now_ms(), 500);
        clock.resume_from(100);
        assert_eq!(clock.now_ms(), 500);
        assert!(clock.advance_to(499).is_err());
    }

    #[test]
    fn wall_clock_is_after_2020() {
        assert!(WallClock.now_ms() > 1_577_836_800_000);
    }
}
