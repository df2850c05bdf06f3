//! The benches' clock: wall time, or, when the environment variable the
//! bench names is `1`, this thread's CPU time, which preemption on a busy
//! machine does not inflate.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Now, on the clock `cpu_time_var` picks (read once per process).
pub fn clock(cpu_time_var: &str) -> Duration {
    static CPU_TIME: OnceLock<bool> = OnceLock::new();
    static EPOCH: OnceLock<Instant> = OnceLock::new();
    if !*CPU_TIME.get_or_init(|| std::env::var_os(cpu_time_var).is_some_and(|v| v == "1")) {
        return EPOCH.get_or_init(Instant::now).elapsed();
    }
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the call's duration,
    // and CLOCK_THREAD_CPUTIME_ID is supported on every Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
