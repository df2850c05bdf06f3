//! The hiccup meter (jHiccup's method): a thread that sleeps 1 ms at a
//! time and records how late it wakes. It does no work of its own, so its
//! lateness is the machine's — the scheduler, other processes, page faults,
//! a busy core — not the engine's. Reported next to the engine's latency, it
//! tells a reader which part of a p99.9 the machine would have added to any
//! program at that moment.
//!
//! Like jHiccup, a wake-up `late` past its due time also records the
//! wake-ups the stall swallowed (`late − 1 ms`, `late − 2 ms`, …), so a long
//! stall weighs as much as the 1 ms samples it hid (HdrHistogram's
//! `record_correct`).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::load::{self, LATENCY_NS_MAX};

/// How long the meter sleeps between samples.
pub const RESOLUTION: Duration = Duration::from_millis(1);

/// A running meter; [`HiccupMeter::stop`] hands back what it recorded.
pub struct HiccupMeter {
    stop: Arc<AtomicBool>,
    thread: JoinHandle<Histogram<u64>>,
}

impl HiccupMeter {
    pub fn start() -> HiccupMeter {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let thread = thread::Builder::new()
            .name("bench-hiccups".into())
            .spawn(move || {
                // The same timer slack as an open-loop client (see
                // `load::TIMER_SLACK_NS`), so the meter measures the
                // machine's lateness and not Linux's default 50 µs slack.
                load::narrow_timer_slack();
                let mut hiccups =
                    Histogram::new_with_bounds(1, LATENCY_NS_MAX, 3).expect("the bounds are valid");
                let resolution_ns = RESOLUTION.as_nanos() as u64;
                // At least one sample, however late this thread first runs:
                // a meter stopped before it was scheduled still reports the
                // stall it saw instead of an empty histogram.
                loop {
                    let slept_from = Instant::now();
                    thread::sleep(RESOLUTION);
                    let late_ns = slept_from.elapsed().saturating_sub(RESOLUTION).as_nanos() as u64;
                    let _ = hiccups.record_correct(late_ns.clamp(1, LATENCY_NS_MAX), resolution_ns);
                    if flag.load(Ordering::Acquire) {
                        return hiccups;
                    }
                }
            })
            .expect("starting the hiccup meter");
        HiccupMeter { stop, thread }
    }

    /// Stops the meter (within one sleep) and returns its histogram of
    /// wake-up lateness, in nanoseconds.
    pub fn stop(self) -> Histogram<u64> {
        self.stop.store(true, Ordering::Release);
        self.thread.join().expect("the hiccup meter panicked")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_meter_records_its_wake_ups() {
        let meter = HiccupMeter::start();
        thread::sleep(Duration::from_millis(30));
        let hiccups = meter.stop();
        assert!(!hiccups.is_empty());
        assert!(hiccups.max() >= 1);
    }

    /// On a loaded machine the meter's thread may first run after `stop`:
    /// it must still record the wake-up it made, not report nothing.
    #[test]
    fn a_meter_stopped_at_once_records_one_sample() {
        for _ in 0..20 {
            let hiccups = HiccupMeter::start().stop();
            assert!(!hiccups.is_empty());
        }
    }
}
