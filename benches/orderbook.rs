//! The Ledger (one thread) under exchange-core's order-book workload: one
//! book kept at about 1,000 resting orders over about 750 price levels,
//! funded traders, and the mix 9% GTC places, 3% IOC places, 6% cancels,
//! 82% moves (amends of price), from the same generator as `ringledger
//! bench --scenario orderbook` (`ringledger::bench::BookFlow`). Reports the
//! mix (with its generator's cost, and without: `mix_ledger_only` applies
//! recorded requests), and moves, GTC places and cancels alone, per
//! request; and the heap
//! bytes per resting order (a counting allocator around the system one).
//!
//! Run with `cargo bench --bench orderbook`; on a busy machine,
//! `ORDERBOOK_CPU_TIME=1 cargo bench --bench orderbook` times with the
//! thread's CPU time instead of the wall clock.

use std::sync::atomic::Ordering;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringledger::bench::workload::{BOOK_MID, OPENING_BALANCE};
use ringledger::bench::{BookFlow, Op, Scenario, Workload};
use ringledger::book::{Side, Stp, Tif};
use ringledger::{InstrumentId, Ledger, LedgerConfig, Reply, Request, Stamp, Stamped};

#[path = "common/clock.rs"]
mod clock;
#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::{ALLOCATIONS, HEAP_BYTES};

const TRADERS: u64 = 100;
const ACME: InstrumentId = InstrumentId(0);

/// The Ledger and the bench command's own order flow
/// (`ringledger::bench::BookFlow`), one gateway.
struct Bench {
    ledger: Ledger,
    seq: u64,
    flow: BookFlow,
}

impl Bench {
    fn new() -> Bench {
        let workload = Workload::new(Scenario::Orderbook, TRADERS, 0);
        let mut b = Bench {
            ledger: Ledger::new(LedgerConfig::default()),
            seq: 0,
            flow: BookFlow::new(&workload, 0, 1),
        };
        for account in 0..TRADERS {
            b.apply(Request::OpenAccount { account });
            b.apply(Request::Deposit {
                account,
                amount: OPENING_BALANCE,
            });
        }
        for request in workload.book_setup() {
            b.apply(request).expect("the set-up sale succeeds");
        }
        for op in b.flow.prefill() {
            b.step(op).expect("the traders are funded");
        }
        b
    }

    fn apply(&mut self, request: Request) -> Option<Reply> {
        self.seq += 1;
        let stamp = Stamp {
            seq: self.seq,
            time_ms: 0,
            session: 0,
            req: 0,
        };
        self.ledger
            .apply(&Stamped::new(stamp, request))
            .outcome
            .ok()
    }

    /// Applies `op` and tells the flow what became of its order.
    fn step(&mut self, op: Op) -> Option<Reply> {
        self.seq += 1;
        let stamp = Stamp {
            seq: self.seq,
            time_ms: 0,
            session: 0,
            req: 0,
        };
        let request = op.request(ACME);
        let outcome = self.ledger.apply(&Stamped::new(stamp, request)).outcome;
        self.flow.answered(&op, op.rests_after(&outcome));
        outcome.ok()
    }
}

/// Applies `count` operations from `make`, timed (the generator included:
/// a few ns of xorshift, a vector pick and an id-map update).
fn run(b: &mut Bench, count: u64, mut make: impl FnMut(&mut BookFlow) -> Op) -> Duration {
    let start = clock();
    for _ in 0..count {
        let op = make(&mut b.flow);
        std::hint::black_box(b.step(op));
    }
    clock() - start
}

/// Requests of the mix recorded for `mix_ledger_only` (about 17 MiB).
const MIX_RECORDED: usize = 1 << 18;

/// Requests per timed chunk of the place and cancel benches.
const CHUNK: u64 = 64;

/// The bench's clock: wall time, or (with `ORDERBOOK_CPU_TIME=1`) this
/// thread's CPU time, which preemption on a busy machine does not inflate.
fn clock() -> Duration {
    clock::clock("ORDERBOOK_CPU_TIME")
}

fn orderbook(c: &mut Criterion) {
    let mut b = Bench::new();
    // Heap per resting order: grow a second book by 100k resting orders,
    // and on until the Ledger's order index holds 114,688. Hash tables
    // double when 7/8 full, so the bytes per order swing with the count:
    // they are also shown just after the index doubled (57,345 indexed:
    // its worst) and just before it doubles again (114,688: its best).
    let before = HEAP_BYTES.load(Ordering::Relaxed);
    let mut ledger = b.ledger.clone();
    let base = HEAP_BYTES.load(Ordering::Relaxed);
    let indexed = b.flow.resting() as u64;
    let checkpoints = [57_345 - indexed, 100_000, 114_688 - indexed];
    let orders = 114_688 - indexed;
    let mut figures = Vec::new();
    for i in 0..orders {
        let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
        // 750 levels a side.
        let ticks = 1 + (i % 750) as i64;
        let price = match side {
            Side::Buy => BOOK_MID - ticks,
            Side::Sell => BOOK_MID + ticks,
        };
        let stamp = Stamp {
            seq: b.seq + 1 + i,
            time_ms: 0,
            session: 0,
            req: 0,
        };
        let request = Request::Place {
            order: 1 << 60 | i,
            account: i % TRADERS,
            instrument: ACME,
            side,
            market: false,
            tif: Tif::Gtc,
            post_only: false,
            stp: Stp::CancelResting,
            qty: 5,
            price,
        };
        let outcome = ledger.apply(&Stamped::new(stamp, request)).outcome;
        assert!(
            matches!(
                outcome,
                Ok(Reply::Placed {
                    filled: 0,
                    resting: 5,
                    ..
                })
            ),
            "every order of the memory count rests whole: {outcome:?}"
        );
        let added = i + 1;
        if checkpoints.contains(&added) {
            let per_order = (HEAP_BYTES.load(Ordering::Relaxed) - base) as f64 / added as f64;
            figures.push(format!(
                "{per_order:.1} bytes over {added} orders added ({} indexed)",
                indexed + added
            ));
        }
    }
    println!(
        "heap per resting order: {} (the clone of the bench ledger took {} bytes)",
        figures.join(", "),
        base - before
    );
    drop(ledger);

    let mut g = c.benchmark_group("orderbook_ledger");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("mix_9gtc_3ioc_6cancel_82move", |bench| {
        bench.iter_custom(|iters| run(&mut b, iters, BookFlow::next_op))
    });
    // The same mix without the generator: its requests are recorded from
    // the bench's state once (untimed), then applied again from that state
    // (a clone of the Ledger) as often as criterion asks, starting over
    // from a fresh clone whenever the recording runs out. The Ledger sees
    // exactly the requests, and so does the same work, as above.
    let start = b.ledger.clone();
    let recorded: Vec<Stamped> = (0..MIX_RECORDED)
        .map(|_| {
            let op = b.flow.next_op();
            b.seq += 1;
            let stamped = Stamped::new(
                Stamp {
                    seq: b.seq,
                    time_ms: 0,
                    session: 0,
                    req: 0,
                },
                op.request(ACME),
            );
            let outcome = b.ledger.apply(&stamped).outcome;
            b.flow.answered(&op, op.rests_after(&outcome));
            stamped
        })
        .collect();
    let mut replaying = start.clone();
    let mut next = 0;
    g.bench_function("mix_ledger_only", |bench| {
        bench.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut left = iters as usize;
            while left > 0 {
                if next == recorded.len() {
                    replaying = start.clone();
                    next = 0;
                }
                let chunk = left.min(recorded.len() - next);
                let began = clock();
                for stamped in &recorded[next..next + chunk] {
                    std::hint::black_box(replaying.apply(stamped));
                }
                timed += clock() - began;
                next += chunk;
                left -= chunk;
            }
            timed
        })
    });
    drop((start, replaying, recorded));
    g.bench_function("move", |bench| {
        bench.iter_custom(|iters| run(&mut b, iters, |flow| flow.move_one(0)))
    });
    // Place and cancel alone: in chunks, so the book stays near its size
    // (each chunk's places are cancelled, or its cancels replaced, untimed).
    g.bench_function("place_gtc", |bench| {
        bench.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let chunk = CHUNK.min(iters - done);
                let resting = b.flow.resting();
                timed += run(&mut b, chunk, |flow| flow.gtc(0));
                while b.flow.resting() > resting {
                    let cancel = b.flow.cancel(0);
                    b.step(cancel);
                }
                done += chunk;
            }
            timed
        })
    });
    g.bench_function("cancel", |bench| {
        bench.iter_custom(|iters| {
            let mut timed = Duration::ZERO;
            let mut done = 0;
            while done < iters {
                let chunk = CHUNK.min(iters - done);
                for _ in 0..chunk {
                    let place = b.flow.gtc(0);
                    b.step(place);
                }
                timed += run(&mut b, chunk, |flow| flow.cancel(0));
                done += chunk;
            }
            timed
        })
    });
    g.finish();
    // Allocations per request once warmed up (the benches above were the
    // warm-up): the mix, places and fills included.
    let requests = 200_000;
    let before = ALLOCATIONS.load(Ordering::Relaxed);
    run(&mut b, requests, BookFlow::next_op);
    println!(
        "allocations in {requests} requests of the mix, warmed up: {}",
        ALLOCATIONS.load(Ordering::Relaxed) - before
    );
    if let Some(Reply::Book(depth)) = b.apply(Request::Book {
        instrument: ACME,
        depth: 1000,
    }) {
        let orders: u32 = depth.bids.iter().chain(&depth.asks).map(|l| l.orders).sum();
        println!(
            "book at the end: {orders} resting orders over {} levels",
            depth.bids.len() + depth.asks.len()
        );
    }
}

criterion_group!(benches, orderbook);
criterion_main!(benches);
