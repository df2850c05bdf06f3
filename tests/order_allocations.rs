//! Once warmed up, placing, filling, amending and cancelling orders
//! allocates nothing per request: in the Ledger (the book's arena, the
//! order index and the batch's event buffer reuse their room), and through
//! the engine to the client (each batch's events reach the client in a
//! pooled buffer, not a new allocation per outcome). Counted with a
//! counting allocator, so this file holds one test: nothing else runs in
//! the process while it counts. Release builds only (see the test).

use std::sync::atomic::Ordering;

use ringledger::book::{Side, Stp, Tif};
use ringledger::{
    Client, Engine, InstrumentId, Ledger, OrderEvent, Outcome, Reply, Request, Stamp, Stamped,
    Symbol,
};

#[path = "../benches/common/counting_alloc.rs"]
mod counting_alloc;

use counting_alloc::ALLOCATIONS;

const ACME: InstrumentId = InstrumentId(0);

fn setup() -> Vec<Request> {
    let mut requests = vec![Request::ListInstrument {
        symbol: Symbol::new("ACME").unwrap(),
        supply: 1_000_000,
        price: 1,
    }];
    for account in 1..=2 {
        requests.push(Request::OpenAccount { account });
        requests.push(Request::Deposit {
            account,
            amount: 1 << 40,
        });
    }
    requests.push(Request::Reserve {
        reservation: 1,
        account: 2,
        instrument: ACME,
        qty: 1_000_000,
        ttl_ms: 0,
        partial: false,
    });
    requests.push(Request::Confirm { reservation: 1 });
    requests
}

fn place(order: u64, account: u64, side: Side, qty: u64, price: i64) -> Request {
    Request::Place {
        order,
        account,
        instrument: ACME,
        side,
        market: false,
        tif: Tif::Gtc,
        post_only: false,
        stp: Stp::CancelResting,
        qty,
        price,
    }
}

/// One round that leaves the book as it found it: five makers, a taker
/// that fills all five and rests, a move of its rest, and its cancel.
fn round() -> [Request; 8] {
    [
        place(10, 2, Side::Sell, 1, 100),
        place(11, 2, Side::Sell, 2, 100),
        place(12, 2, Side::Sell, 3, 101),
        place(13, 2, Side::Sell, 4, 101),
        place(14, 2, Side::Sell, 5, 102),
        place(20, 1, Side::Buy, 20, 102),
        Request::Amend {
            order: 20,
            qty: Some(4),
            price: Some(99),
        },
        Request::CancelOrder { order: 20 },
    ]
}

/// The fills of the taker in each round, as (maker, qty).
const TAKER_FILLS: [(u64, u64); 5] = [(10, 1), (11, 2), (12, 3), (13, 4), (14, 5)];

/// Whether `events` are exactly the taker's fills (compared in place: a
/// collected list would be an allocation of the test's own).
fn fills_are_the_takers(events: &[OrderEvent]) -> bool {
    events.len() == TAKER_FILLS.len()
        && events.iter().zip(TAKER_FILLS).all(|(e, (m, q))| {
            matches!(*e, OrderEvent::Trade { maker, qty, .. } if (maker, qty) == (m, q))
        })
}

struct Direct {
    ledger: Ledger,
    seq: u64,
}

impl Direct {
    fn apply(&mut self, request: Request) -> Outcome {
        self.seq += 1;
        let stamp = Stamp {
            seq: self.seq,
            time_ms: 0,
            session: 0,
            req: 0,
        };
        self.ledger.apply(&Stamped::new(stamp, request)).outcome
    }

    fn round(&mut self) {
        for (i, request) in round().into_iter().enumerate() {
            let outcome = self.apply(request);
            let Ok(reply) = outcome else {
                panic!("{request:?}: {outcome:?}")
            };
            if i == 5 {
                let Reply::Placed { events, .. } = &reply else {
                    panic!("{reply:?}")
                };
                assert!(fills_are_the_takers(self.ledger.events(events)));
            }
        }
    }
}

fn engine_round(client: &mut Client) {
    for request in round() {
        client.send(request).unwrap();
    }
    for i in 0..8 {
        let outcome = client.recv().unwrap();
        let Ok(reply) = outcome else {
            panic!("{outcome:?}")
        };
        if i == 5 {
            let Reply::Placed { events, .. } = &reply else {
                panic!("{reply:?}")
            };
            assert!(fills_are_the_takers(events.get().unwrap()));
        }
    }
}

fn allocations_in(rounds: u64, mut run: impl FnMut()) -> u64 {
    let before = ALLOCATIONS.load(Ordering::SeqCst);
    for _ in 0..rounds {
        run();
    }
    ALLOCATIONS.load(Ordering::SeqCst) - before
}

/// In release only: debug builds check the Ledger's invariants after every
/// request, and that check allocates. `.ci/run` runs it in release.
#[test]
#[cfg_attr(
    debug_assertions,
    ignore = "debug builds check invariants after every request, which allocates: run in release"
)]
fn a_warmed_up_place_fill_amend_cancel_path_allocates_nothing() {
    let mut direct = Direct {
        ledger: Ledger::default(),
        seq: 0,
    };
    for request in setup() {
        direct.apply(request).unwrap();
    }
    // Warm-up: the accounts' history rings fill up, the book's arena,
    // levels and the index reach their size.
    allocations_in(100, || direct.round());
    assert_eq!(
        allocations_in(1_000, || direct.round()),
        0,
        "allocations in 8,000 Ledger requests"
    );

    let engine = Engine::builder().start().unwrap();
    let mut client = engine.client().unwrap();
    for request in setup() {
        client.call(request).unwrap().unwrap();
    }
    client.barrier().unwrap();
    allocations_in(1_000, || engine_round(&mut client));
    assert_eq!(
        allocations_in(1_000, || engine_round(&mut client)),
        0,
        "allocations in 8,000 engine requests, 8 in flight"
    );
    drop(client);
    engine.shutdown().unwrap();
}
