//! The Ledger (one thread) under exchange-core's order-book workload: one
//! book kept at about 1,000 resting orders over about 750 price levels,
//! funded traders, and the mix 9% GTC places, 3% IOC places, 6% cancels,
//! 82% moves (amends of price). Reports the mix, moves alone and a place
//! followed by its cancel, per request; and the heap bytes per resting order
//! (a counting allocator around the system one).
//!
//! Run with `cargo bench --bench orderbook`.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringledger::book::{Side, Stp, Tif};
use ringledger::{InstrumentId, Ledger, LedgerConfig, Reply, Request, Stamp, Stamped, Symbol};

struct Counting;
static HEAP_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        HEAP_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        HEAP_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        HEAP_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const TRADERS: u64 = 100;
const ACME: InstrumentId = InstrumentId(0);
/// Prices are MID ± HALF_SPREAD_TICKS: about 750 levels in all.
const MID: i64 = 100_000;
const HALF_SPREAD_TICKS: u64 = 375;
const RESTING_TARGET: usize = 1_000;

struct Bench {
    ledger: Ledger,
    seq: u64,
    x: u64,
    next_order: u64,
    /// Orders that rested when placed, with their side; some may have
    /// traded since (a move or cancel of one is answered unknown_order and
    /// it is dropped here: a real request all the same).
    live: Vec<(u64, Side)>,
    /// Where in `live` the order of the amend or cancel being built is, so
    /// that dropping it is O(1).
    picked: usize,
}

impl Bench {
    fn new() -> Bench {
        let mut b = Bench {
            ledger: Ledger::new(LedgerConfig::default()),
            seq: 0,
            x: 0x9E37_79B9_7F4A_7C15,
            next_order: 1,
            live: Vec::new(),
            picked: 0,
        };
        b.apply(Request::ListInstrument {
            symbol: Symbol::new("ACME").unwrap(),
            supply: u64::MAX / 4,
            price: 1,
        });
        for account in 0..TRADERS {
            b.apply(Request::OpenAccount { account });
            b.apply(Request::Deposit {
                account,
                amount: 1 << 50,
            });
            b.apply(Request::Reserve {
                reservation: account,
                account,
                instrument: ACME,
                qty: 1 << 40,
                ttl_ms: 0,
                partial: false,
            });
            b.apply(Request::Confirm {
                reservation: account,
            });
        }
        while b.live.len() < RESTING_TARGET {
            let r = b.gtc();
            b.apply(r).expect("the traders are funded");
        }
        b
    }

    fn rand(&mut self, n: u64) -> u64 {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        self.x % n
    }

    fn apply(&mut self, request: Request) -> Option<Reply> {
        self.seq += 1;
        let stamp = Stamp {
            seq: self.seq,
            time_ms: 0,
            session: 0,
            req: 0,
        };
        let outcome = self.ledger.apply(&Stamped::new(stamp, request)).outcome;
        match (&request, &outcome) {
            (Request::Place { order, side, .. }, Ok(Reply::Placed { resting, .. }))
                if *resting > 0 =>
            {
                self.live.push((*order, *side))
            }
            (Request::Amend { order, .. } | Request::CancelOrder { order }, Err(_))
            | (Request::CancelOrder { order }, Ok(_))
                if self
                    .live
                    .get(self.picked)
                    .is_some_and(|&(o, _)| o == *order) =>
            {
                self.live.swap_remove(self.picked);
            }
            _ => {}
        }
        outcome.ok()
    }

    /// A price on `side` that does not cross the middle.
    fn passive_price(&mut self, side: Side) -> i64 {
        let ticks = 1 + self.rand(HALF_SPREAD_TICKS) as i64;
        match side {
            Side::Buy => MID - ticks,
            Side::Sell => MID + ticks,
        }
    }

    fn side(&mut self) -> Side {
        if self.rand(2) == 0 {
            Side::Buy
        } else {
            Side::Sell
        }
    }

    fn place(&mut self, side: Side, price: i64, tif: Tif) -> Request {
        let order = self.next_order;
        self.next_order += 1;
        Request::Place {
            order,
            account: self.rand(TRADERS),
            instrument: ACME,
            side,
            market: false,
            tif,
            post_only: false,
            stp: Stp::CancelResting,
            qty: 1 + self.rand(10),
            price,
        }
    }

    fn gtc(&mut self) -> Request {
        let side = self.side();
        let price = self.passive_price(side);
        self.place(side, price, Tif::Gtc)
    }

    fn ioc(&mut self) -> Request {
        let side = self.side();
        let reach = self.rand(20) as i64;
        let price = match side {
            Side::Buy => MID + reach,
            Side::Sell => MID - reach,
        };
        self.place(side, price, Tif::Ioc)
    }

    fn some_live(&mut self) -> (u64, Side) {
        if self.live.is_empty() {
            return (u64::MAX, Side::Buy);
        }
        self.picked = self.rand(self.live.len() as u64) as usize;
        self.live[self.picked]
    }

    fn cancel(&mut self) -> Request {
        Request::CancelOrder {
            order: self.some_live().0,
        }
    }

    /// A move: a new price on the order's own side of the middle.
    fn amend(&mut self) -> Request {
        let (order, side) = self.some_live();
        Request::Amend {
            order,
            qty: None,
            price: Some(self.passive_price(side)),
        }
    }

    fn mixed(&mut self) -> Request {
        let live = self.live.len();
        match self.rand(100) {
            // Keep the book near its size: a place becomes a cancel when
            // the book is thick, a cancel a place when it is thin.
            0..=8 if live > RESTING_TARGET => self.cancel(),
            0..=8 => self.gtc(),
            9..=11 => self.ioc(),
            12..=17 if live < RESTING_TARGET / 2 => self.gtc(),
            12..=17 => self.cancel(),
            _ => self.amend(),
        }
    }
}

/// Applies `count` requests from `make`, timed (the generator included:
/// a few ns of xorshift and a vector pick).
fn run(b: &mut Bench, count: u64, mut make: impl FnMut(&mut Bench) -> Request) -> Duration {
    let start = Instant::now();
    for _ in 0..count {
        let request = make(b);
        std::hint::black_box(b.apply(request));
    }
    start.elapsed()
}

fn orderbook(c: &mut Criterion) {
    let mut b = Bench::new();
    // Heap per resting order: grow a second book to 100k resting orders.
    let before = HEAP_BYTES.load(Ordering::Relaxed);
    let mut ledger = b.ledger.clone();
    let base = HEAP_BYTES.load(Ordering::Relaxed);
    let orders = 100_000u64;
    for i in 0..orders {
        let side = if i % 2 == 0 { Side::Buy } else { Side::Sell };
        let price = match side {
            Side::Buy => MID - 1 - (i % 750) as i64,
            Side::Sell => MID + 1 + (i % 750) as i64,
        };
        let stamp = Stamp {
            seq: b.seq + 1 + i,
            time_ms: 0,
            session: 0,
            req: 0,
        };
        let request = Request::Place {
            order: 1 << 40 | i,
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
        std::hint::black_box(ledger.apply(&Stamped::new(stamp, request)));
    }
    let per_order = (HEAP_BYTES.load(Ordering::Relaxed) - base) as f64 / orders as f64;
    println!(
        "heap per resting order at {orders} orders: {per_order:.1} bytes (the clone of the bench ledger took {} bytes)",
        base - before
    );
    drop(ledger);

    let mut g = c.benchmark_group("orderbook_ledger");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("mix_9gtc_3ioc_6cancel_82move", |bench| {
        bench.iter_custom(|iters| run(&mut b, iters, Bench::mixed))
    });
    g.bench_function("move", |bench| {
        bench.iter_custom(|iters| run(&mut b, iters, Bench::amend))
    });
    g.throughput(Throughput::Elements(2));
    g.bench_function("place_then_cancel", |bench| {
        bench.iter_custom(|iters| {
            let start = Instant::now();
            for _ in 0..iters {
                let place = b.gtc();
                let Request::Place { order, .. } = place else {
                    unreachable!()
                };
                std::hint::black_box(b.apply(place));
                b.picked = b.live.len().wrapping_sub(1);
                std::hint::black_box(b.apply(Request::CancelOrder { order }));
            }
            start.elapsed()
        })
    });
    g.finish();
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
