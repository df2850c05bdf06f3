//! Heavy order flow through the journaling engine: a replay of the journal
//! (full, or from a snapshot plus the tail) rebuilds exactly the live state,
//! books included, and the invariants hold on both.

use std::sync::Arc;

use ringledger::book::{Side, Stp, Tif};
use ringledger::engine::{Clock, ManualClock};
use ringledger::journal::{self, Durability};
use ringledger::{Engine, InstrumentId, LedgerConfig, OrderEvent, Outcome, Reply, Request, Symbol};

const ACCOUNTS: u64 = 30;

fn order_flow(seed: u64, client: &mut ringledger::Client) -> (u64, u64) {
    let mut x = seed | 1;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    for symbol in ["ACME", "BETA"] {
        client
            .call(Request::ListInstrument {
                symbol: Symbol::new(symbol).unwrap(),
                supply: 1_000_000,
                price: 1,
            })
            .unwrap()
            .unwrap();
    }
    for account in 0..ACCOUNTS {
        client.send(Request::OpenAccount { account }).unwrap();
        client
            .send(Request::Deposit {
                account,
                amount: 200_000,
            })
            .unwrap();
        for i in 0..2 {
            let reservation = account * 2 + i;
            client
                .send(Request::Reserve {
                    reservation,
                    account,
                    instrument: InstrumentId(i as u32),
                    qty: 500,
                    ttl_ms: 0,
                    partial: false,
                })
                .unwrap();
            client.send(Request::Confirm { reservation }).unwrap();
        }
    }
    let (mut trades, mut ok) = (0, 0);
    for _ in 0..20_000u64 {
        let order = next(400);
        let request = match next(10) {
            0..=4 => {
                let market = next(10) == 0;
                Request::Place {
                    order,
                    account: next(ACCOUNTS),
                    instrument: InstrumentId(next(2) as u32),
                    side: if next(2) == 0 { Side::Buy } else { Side::Sell },
                    market,
                    tif: match next(5) {
                        0 => Tif::Ioc,
                        1 => Tif::Fok,
                        _ if market => Tif::Ioc,
                        _ => Tif::Gtc,
                    },
                    post_only: !market && next(8) == 0,
                    stp: if next(2) == 0 {
                        Stp::CancelResting
                    } else {
                        Stp::CancelIncoming
                    },
                    qty: 1 + next(30),
                    price: if market { 0 } else { 90 + next(21) as i64 },
                }
            }
            5..=7 => Request::Amend {
                order,
                qty: (next(2) == 0).then(|| 1 + next(30)),
                price: (next(2) == 0).then(|| 90 + next(21) as i64),
            },
            _ => Request::CancelOrder { order },
        };
        client.send(request).unwrap();
        if client.in_flight() > 200 {
            count(client.recv().unwrap(), &mut ok, &mut trades);
        }
    }
    while client.in_flight() > 0 {
        count(client.recv().unwrap(), &mut ok, &mut trades);
    }
    (ok, trades)
}

/// Counts an accepted place or amend and its events. Only this client
/// trades, and it reads its outcomes in order, so its trades must be
/// numbered 1, 2, 3... with none missing or repeated: each outcome reads its
/// own events from its batch's buffer while up to 200 requests (many
/// batches, many buffers) are in flight.
fn count(outcome: Outcome, ok: &mut u64, events_seen: &mut u64) {
    if let Ok(Reply::Placed { events, .. }) = outcome {
        let list = events.get().expect("a client's outcome carries its events");
        assert_eq!(list.len(), events.len());
        for event in list {
            *events_seen += 1;
            if let OrderEvent::Trade { trade, .. } = *event {
                TRADES.with(|last| {
                    assert_eq!(trade, last.get() + 1, "trades numbered in order");
                    last.set(trade);
                });
            }
        }
        *ok += 1;
    }
}

thread_local! {
    static TRADES: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
}

#[test]
fn replay_of_heavy_order_flow_rebuilds_the_live_digest() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let clock = Arc::new(ManualClock::new(1_000));
    let engine = Engine::builder()
        .clock(Arc::clone(&clock) as Arc<dyn Clock>)
        .journal(dir.path(), Durability::Async)
        .segment_bytes(256 << 10)
        .snapshot_every(7_000)
        .snapshots_kept(0)
        .start()
        .unwrap();
    let mut client = engine.client().unwrap();
    let (placed, events) = order_flow(5, &mut client);
    assert!(
        placed > 5_000 && events > 2_000,
        "{placed} accepted, {events} events"
    );
    let resting = match client
        .call(Request::Book {
            instrument: InstrumentId(0),
            depth: 1000,
        })
        .unwrap()
        .unwrap()
    {
        Reply::Book(depth) => depth.bids.len() + depth.asks.len(),
        other => panic!("unexpected {other:?}"),
    };
    assert!(resting > 0, "orders rest at the end");
    drop(client);
    let live = engine.shutdown().unwrap();
    live.check_invariants().unwrap();

    let full = journal::replay(dir.path(), LedgerConfig::default(), false).unwrap();
    full.recovered.ledger.check_invariants().unwrap();
    assert_eq!(full.recovered.ledger.digest(), live.digest(), "full replay");
    let from_snapshot = journal::replay(dir.path(), LedgerConfig::default(), true).unwrap();
    assert_eq!(
        from_snapshot.recovered.ledger.digest(),
        live.digest(),
        "snapshot + tail"
    );
}
