//! The long soak: mixed operations (deposits, withdrawals, transfers,
//! reservations confirmed, cancelled or left to expire) on a fixed set of
//! accounts, with a new client every 1 000 operations, for as long as asked.
//! Prints RSS and ops/s every 10 s, and the snapshot size every minute (the
//! engine restarts from its Ledger to measure it).
//!
//! `cargo run --release --example soak -- --minutes M [--accounts N]`

use std::time::{Duration, Instant};

use ringledger::LedgerConfig;

#[path = "../benches/common/soak.rs"]
mod soak;

const REPORT_EVERY: Duration = Duration::from_secs(10);
const SNAPSHOT_EVERY_REPORTS: u32 = 6;
const OPS_PER_STEP: u64 = 10_000;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut minutes = 1u64;
    let mut accounts = 10_000u64;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--minutes" => minutes = value()?.parse()?,
            "--accounts" => accounts = value()?.parse()?,
            other => {
                return Err(format!(
                    "unknown argument {other}; usage: soak --minutes M [--accounts N]"
                )
                .into())
            }
        }
    }
    let ledger = LedgerConfig::default();
    println!("soak: {minutes} min, {accounts} accounts, a new client every 1000 ops, {ledger:?}");
    let start = Instant::now();
    let mut soak = soak::Soak::new(soak::Config {
        accounts,
        ledger,
        churn_ops: 1_000,
        inflight: 64,
    });
    let first = soak.checkpoint(true);
    print_checkpoint(start.elapsed(), &first, 0.0);
    let end = start + Duration::from_secs(minutes * 60);
    let mut reports = 0u32;
    let mut last_report = Instant::now();
    let mut last_ops = soak.ops;
    while Instant::now() < end {
        soak.run(OPS_PER_STEP);
        if last_report.elapsed() >= REPORT_EVERY {
            let rate = (soak.ops - last_ops) as f64 / last_report.elapsed().as_secs_f64();
            reports += 1;
            let checkpoint = soak.checkpoint(reports.is_multiple_of(SNAPSHOT_EVERY_REPORTS));
            print_checkpoint(start.elapsed(), &checkpoint, rate);
            last_report = Instant::now();
            last_ops = soak.ops;
        }
    }
    let last = soak.checkpoint(true);
    print_checkpoint(start.elapsed(), &last, 0.0);
    println!(
        "soak done: {} ops, {} clients; RSS {:.1} -> {:.1} MiB; snapshot {} -> {} bytes",
        last.ops,
        last.clients,
        mib(first.rss_bytes),
        mib(last.rss_bytes),
        first.snapshot_bytes.unwrap_or(0),
        last.snapshot_bytes.unwrap_or(0)
    );
    Ok(())
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

fn print_checkpoint(elapsed: Duration, c: &soak::Checkpoint, ops_per_s: f64) {
    let snapshot = c
        .snapshot_bytes
        .map_or(String::new(), |b| format!("  snapshot {b} bytes"));
    println!(
        "{:>6.0}s  ops {:>12}  clients {:>9}  {:>10.0} ops/s  RSS {:>7.1} MiB{snapshot}",
        elapsed.as_secs_f64(),
        c.ops,
        c.clients,
        ops_per_s,
        mib(c.rss_bytes)
    );
}
