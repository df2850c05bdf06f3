//! End to end through the real engine: pipelined gateways → ring → business
//! thread → (journal) → response queues. One run = `iters` requests split
//! across the gateways, each keeping a window of requests in flight.
//!
//! Every durability mode; with a journal, both journal threads (the
//! business thread inline, or the flusher) side by side in one run.
//! `DURABILITY=none|async|sync` and `WAIT=block|yield` narrow the set.

use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringledger::journal::Durability;
use ringledger::ring::WaitStrategy;
use ringledger::{Engine, JournalThread, Request};

/// As the `ringledger` binary: large allocations on huge pages.
#[global_allocator]
static ALLOCATOR: ringledger::HugePages = ringledger::HugePages;

const ACCOUNTS: u64 = 10_000;
const WINDOW: usize = 512;

fn pipelined(engine: &Engine, gateways: u64, iters: u64) -> Duration {
    let clients: Vec<_> = (0..gateways).map(|_| engine.client().unwrap()).collect();
    let start = Instant::now();
    let threads: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(g, mut client)| {
            let count = iters / gateways + u64::from((g as u64) < iters % gateways);
            thread::spawn(move || {
                for i in 0..count {
                    let account = (i * 7_919 + g as u64) % ACCOUNTS;
                    // Withdrawals of 1 from well-funded accounts: pure
                    // request/response cost, no rebate traffic.
                    client
                        .send(Request::Withdraw { account, amount: 1 })
                        .unwrap();
                    if client.in_flight() >= WINDOW {
                        client.recv().unwrap().unwrap();
                    }
                }
                while client.in_flight() > 0 {
                    client.recv().unwrap().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    start.elapsed()
}

fn start(
    wait: WaitStrategy,
    durability: Durability,
    thread: JournalThread,
    dir: &std::path::Path,
) -> Engine {
    let engine = Engine::builder()
        .wait(wait)
        .accounts_hint(ACCOUNTS as usize)
        .journal(dir, durability)
        .journal_thread(thread)
        .start()
        .unwrap();
    let mut admin = engine.client().unwrap();
    for account in 0..ACCOUNTS {
        admin.send(Request::OpenAccount { account }).unwrap();
        admin
            .send(Request::Deposit {
                account,
                amount: i64::MAX / 4,
            })
            .unwrap();
    }
    while admin.in_flight() > 0 {
        admin.recv().unwrap().unwrap();
    }
    admin.barrier().unwrap();
    engine
}

fn engine_end_to_end(c: &mut Criterion) {
    let mut g = c.benchmark_group("engine_pipelined");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10)
        .measurement_time(Duration::from_secs(4))
        .warm_up_time(Duration::from_secs(1));
    let only = |var: &str, value: String| std::env::var(var).is_ok_and(|only| only != value);
    for durability in [Durability::None, Durability::Async, Durability::Sync] {
        if only("DURABILITY", durability.to_string()) {
            continue;
        }
        let threads: &[JournalThread] = match durability {
            Durability::None => &[JournalThread::Business],
            _ => &[JournalThread::Business, JournalThread::Flusher],
        };
        for wait in [WaitStrategy::Block, WaitStrategy::Yield] {
            if only("WAIT", wait.to_string()) {
                continue;
            }
            for &thread in threads {
                // The journal goes to the repository's journal/ (a real disk; /tmp may be tmpfs).
                let dir =
                    tempfile::tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/journal")).unwrap();
                let engine = start(wait, durability, thread, dir.path());
                let suffix = match durability {
                    Durability::None => String::new(),
                    _ => format!("_{thread}"),
                };
                for gateways in [1, 2] {
                    g.bench_function(
                        format!("{gateways}_gateway_{wait}_{durability}{suffix}"),
                        |b| b.iter_custom(|iters| pipelined(&engine, gateways, iters)),
                    );
                }
                engine.shutdown().unwrap();
            }
        }
    }
    g.finish();
}

/// What `ringledger bench` adds per operation on a closed-loop gateway
/// (`bench::load`): one clock read (an answer's arrival is also the next
/// request's send time) and one HdrHistogram record. Compare with the
/// engine's time per settled operation (1 / settled ops/s).
fn harness_per_op(c: &mut Criterion) {
    let mut g = c.benchmark_group("bench_harness");
    g.throughput(Throughput::Elements(1));
    let base = Instant::now();
    let mut histogram =
        hdrhistogram::Histogram::<u64>::new_with_bounds(1, 60_000_000_000, 3).unwrap();
    let mut sent_ns = 0u64;
    g.bench_function("clock_read_and_record", |b| {
        b.iter(|| {
            let now_ns = base.elapsed().as_nanos() as u64;
            histogram.saturating_record(now_ns.saturating_sub(sent_ns).max(1));
            sent_ns = now_ns;
        })
    });
    g.finish();
    std::hint::black_box(histogram.len());
}

criterion_group!(benches, engine_end_to_end, harness_per_op);
criterion_main!(benches);
