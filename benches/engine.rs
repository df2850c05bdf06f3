//! End to end through the real engine: pipelined gateways → ring → business
//! thread → response queues, durability none. One run = `iters` requests
//! split across the gateways, each keeping a window of requests in flight.

use std::thread;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringledger::journal::Durability;
use ringledger::ring::WaitStrategy;
use ringledger::{Engine, Request};

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

fn start(wait: WaitStrategy, durability: Durability, dir: &std::path::Path) -> Engine {
    let engine = Engine::builder()
        .wait(wait)
        .accounts_hint(ACCOUNTS as usize)
        .journal(dir, durability)
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
    let only: Option<String> = std::env::var("DURABILITY").ok();
    for durability in [Durability::None, Durability::Async, Durability::Sync] {
        if only.as_deref().is_some_and(|d| d != durability.to_string()) {
            continue;
        }
        for wait in [WaitStrategy::Block, WaitStrategy::Yield] {
            // The journal goes to the repository's journal/ (a real disk; /tmp may be tmpfs).
            let dir =
                tempfile::tempdir_in(concat!(env!("CARGO_MANIFEST_DIR"), "/journal")).unwrap();
            let engine = start(wait, durability, dir.path());
            for gateways in [1, 2] {
                g.bench_function(format!("{gateways}_gateway_{wait}_{durability}"), |b| {
                    b.iter_custom(|iters| pipelined(&engine, gateways, iters))
                });
            }
            engine.shutdown().unwrap();
        }
    }
    g.finish();
}

criterion_group!(benches, engine_end_to_end);
criterion_main!(benches);
