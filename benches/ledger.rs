//! Ledger::apply on one thread over 1,000,000 accounts with random access:
//! the business thread's cost per request, before any queueing or I/O.
//! Also prints the heap bytes per account (counted by a wrapping allocator).
//!
//! `LEDGER_CPU_TIME=1 cargo bench --bench ledger` times with the thread's
//! CPU time instead of wall time, which preemption on a busy machine does
//! not inflate.

use std::sync::atomic::Ordering;
use std::time::Duration;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ringledger::{InstrumentId, Ledger, LedgerConfig, Request, Stamp, Stamped, Symbol};

#[path = "common/clock.rs"]
mod clock;
#[path = "common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::HEAP_BYTES;

/// The bench's clock: wall time, or (with `LEDGER_CPU_TIME=1`) this
/// thread's CPU time.
fn clock() -> Duration {
    clock::clock("LEDGER_CPU_TIME")
}

const ACCOUNTS: u64 = 1_000_000;
const PICKS: usize = 1 << 20;
const BATCH: usize = 64;

struct Bench {
    ledger: Ledger,
    seq: u64,
    picks: Vec<u64>,
    next: usize,
}

impl Bench {
    fn new() -> Bench {
        let mut b = Bench {
            ledger: Ledger::with_capacity(
                LedgerConfig {
                    history_per_account_max: std::env::var("HIST")
                        .map(|v| v.parse().unwrap())
                        .unwrap_or(32),
                    ..LedgerConfig::default()
                },
                ACCOUNTS as usize,
            ),
            seq: 0,
            picks: Vec::new(),
            next: 0,
        };
        for account in 0..ACCOUNTS {
            b.apply(Request::OpenAccount { account });
        }
        // A fixed xorshift sequence: random access, same in every run.
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        b.picks = (0..PICKS)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x % ACCOUNTS
            })
            .collect();
        b
    }

    fn pick(&mut self) -> u64 {
        self.next = (self.next + 1) & (PICKS - 1);
        self.picks[self.next]
    }

    fn apply(&mut self, request: Request) {
        self.seq += 1;
        let stamp = Stamp {
            seq: self.seq,
            time_ms: 0,
            session: 1,
            req: 0,
        };
        let applied = self.ledger.apply(&Stamped::new(stamp, request));
        std::hint::black_box(applied);
    }

    /// Applies `count` generated requests through `apply_batch` in batches
    /// of `BATCH`, as the business thread does; returns the time taken.
    fn batched(&mut self, count: u64, mut make: impl FnMut(&mut Bench) -> Request) -> Duration {
        let mut batch = Vec::with_capacity(BATCH);
        let mut elapsed = Duration::ZERO;
        let mut left = count;
        while left > 0 {
            let n = left.min(BATCH as u64);
            let start = clock();
            batch.clear();
            for _ in 0..n {
                self.seq += 1;
                let stamp = Stamp {
                    seq: self.seq,
                    time_ms: 0,
                    session: 1,
                    req: 0,
                };
                let request = make(self);
                batch.push(Stamped::new(stamp, request));
            }
            self.ledger.apply_batch(&batch, |_, applied| {
                std::hint::black_box(applied);
            });
            elapsed += clock() - start;
            left -= n;
        }
        elapsed
    }

    fn fund_all(&mut self, amount: i64) {
        for account in 0..ACCOUNTS {
            self.apply(Request::Deposit { account, amount });
        }
        self.settle_rebates();
    }

    /// Credits every owed rebate (untimed), so the queue stays bounded.
    fn settle_rebates(&mut self) {
        let jobs: Vec<_> = self.ledger.pending_rebates().collect();
        for job in jobs {
            self.apply(Request::CreditRebate {
                deposit_seq: job.deposit_seq,
                amount: job.amount / 100,
            });
        }
    }
}

fn timed(iters: u64, mut one: impl FnMut()) -> Duration {
    let start = clock();
    for _ in 0..iters {
        one();
    }
    clock() - start
}

fn ledger_apply(c: &mut Criterion) {
    let before = HEAP_BYTES.load(Ordering::Relaxed);
    let mut b = Bench::new();
    let picks_bytes = (PICKS * 8) as isize;
    let per_account =
        (HEAP_BYTES.load(Ordering::Relaxed) - before - picks_bytes) as f64 / ACCOUNTS as f64;
    println!("heap per account at {ACCOUNTS} accounts (empty history): {per_account:.1} bytes");
    b.fund_all(1_000_000_000);
    // Fill every account's history ring first, so the figures are the steady
    // state of a long-running engine rather than the rings' one-off growth.
    let fill: u32 = std::env::var("FILL")
        .map(|v| v.parse().unwrap())
        .unwrap_or(0);
    for _ in 0..fill {
        b.fund_all(1);
    }
    let with_history =
        (HEAP_BYTES.load(Ordering::Relaxed) - before - picks_bytes) as f64 / ACCOUNTS as f64;
    println!("heap per account after one deposit and one rebate each: {with_history:.1} bytes");

    let mut g = c.benchmark_group("ledger_apply_1m_accounts");
    g.throughput(Throughput::Elements(1));
    g.sample_size(20)
        .measurement_time(Duration::from_secs(3))
        .warm_up_time(Duration::from_secs(1));
    g.bench_function("deposit_one_by_one", |bench| {
        bench.iter_custom(|iters| {
            let t = timed(iters, || {
                let account = b.pick();
                b.apply(Request::Deposit {
                    account,
                    amount: 1_00,
                });
            });
            b.settle_rebates();
            t
        })
    });
    g.bench_function("deposit", |bench| {
        bench.iter_custom(|iters| {
            let t = b.batched(iters, |b| Request::Deposit {
                account: b.pick(),
                amount: 1_00,
            });
            b.settle_rebates();
            t
        })
    });
    g.bench_function("withdraw", |bench| {
        bench.iter_custom(|iters| {
            b.batched(iters, |b| Request::Withdraw {
                account: b.pick(),
                amount: 1,
            })
        })
    });
    g.bench_function("transfer", |bench| {
        bench.iter_custom(|iters| {
            b.batched(iters, |b| Request::Transfer {
                from: b.pick(),
                to: b.pick(),
                amount: 1,
            })
        })
    });
    g.bench_function("credit_rebate", |bench| {
        bench.iter_custom(|iters| {
            b.batched(iters, |b| Request::Deposit {
                account: b.pick(),
                amount: 1_00,
            });
            let mut jobs: Vec<_> = b.ledger.pending_rebates().collect();
            jobs.reverse();
            b.batched(iters, move |_| {
                let job = jobs.pop().expect("one job per deposit");
                Request::CreditRebate {
                    deposit_seq: job.deposit_seq,
                    amount: 1,
                }
            })
        })
    });
    // What the business thread does per settled deposit: the deposit, and
    // later its rebate credit; time per pair.
    g.bench_function("deposit_then_credit", |bench| {
        bench.iter_custom(|iters| {
            let deposits = b.batched(iters, |b| Request::Deposit {
                account: b.pick(),
                amount: 1_00,
            });
            let mut jobs: Vec<_> = b.ledger.pending_rebates().collect();
            jobs.reverse();
            let credits = b.batched(iters, move |_| {
                let job = jobs.pop().expect("one job per deposit");
                Request::CreditRebate {
                    deposit_seq: job.deposit_seq,
                    amount: 1,
                }
            });
            deposits + credits
        })
    });

    b.apply(Request::ListInstrument {
        symbol: Symbol::new("ACME").unwrap(),
        supply: u64::MAX / 2,
        price: 1,
    });
    let mut reservation = 0u64;
    g.bench_function("reserve_then_confirm_pair", |bench| {
        bench.iter_custom(|iters| {
            b.batched(iters * 2, |b| {
                reservation += 1;
                if reservation % 2 == 1 {
                    Request::Reserve {
                        reservation,
                        account: b.pick(),
                        instrument: InstrumentId(0),
                        qty: 1,
                        ttl_ms: 60_000,
                        partial: false,
                    }
                } else {
                    Request::Confirm {
                        reservation: reservation - 1,
                    }
                }
            })
        })
    });
    g.finish();
    b.ledger
        .check_invariants()
        .expect("invariants hold after the bench");
}

criterion_group!(benches, ledger_apply);
criterion_main!(benches);
