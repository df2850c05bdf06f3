//! The journaling engine: what it applied live is what a replay rebuilds.

use std::sync::Arc;

use ringledger::engine::{Clock, ManualClock};
use ringledger::journal::{self, Durability};
use ringledger::{Engine, InstrumentId, LedgerConfig, Request, Symbol};

fn workload(seed: u64, clock: &ManualClock, client: &mut ringledger::Client) {
    let mut x = seed | 1;
    let mut next = move |n: u64| {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x % n
    };
    client
        .call(Request::ListInstrument {
            symbol: Symbol::new("ACME").unwrap(),
            supply: 500,
            price: 3,
        })
        .unwrap()
        .unwrap();
    for account in 0..20 {
        client.send(Request::OpenAccount { account }).unwrap();
    }
    for i in 0..5_000u64 {
        let account = next(22); // sometimes unknown
        let amount = next(2_000) as i64; // sometimes zero
        let request = match next(7) {
            0 | 1 => Request::Deposit { account, amount },
            2 => Request::Withdraw { account, amount },
            3 => Request::Transfer {
                from: account,
                to: next(20),
                amount,
            },
            4 => Request::Reserve {
                reservation: i,
                account,
                instrument: InstrumentId(0),
                qty: next(9),
                ttl_ms: next(3) * 40,
                partial: next(2) == 0,
            },
            5 => Request::Confirm {
                reservation: next(i + 1),
            },
            _ => Request::Cancel {
                reservation: next(i + 1),
            },
        };
        client.send(request).unwrap();
        if i % 97 == 0 {
            clock.advance_to(clock.now_ms() + 50);
        }
        if client.in_flight() > 200 {
            client.recv().unwrap().ok();
        }
    }
    while client.in_flight() > 0 {
        client.recv().unwrap().ok();
    }
    client.barrier().unwrap();
}

#[test]
fn replay_of_the_journal_rebuilds_the_live_digest() {
    for (seed, durability) in [(7, Durability::Async), (11, Durability::Sync)] {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let clock = Arc::new(ManualClock::new(1_000));
        let engine = Engine::builder()
            .clock(Arc::clone(&clock) as Arc<dyn Clock>)
            .journal(dir.path(), durability)
            .segment_bytes(64 << 10)
            .snapshot_every(1_500)
            .start()
            .unwrap();
        let mut client = engine.client().unwrap();
        workload(seed, &clock, &mut client);
        drop(client);
        let live = engine.shutdown().unwrap();
        live.check_invariants().unwrap();
        assert_eq!(live.pending_rebates_len(), 0);

        let full = journal::replay(dir.path(), LedgerConfig::default(), false).unwrap();
        assert_eq!(full.recovered.ledger.digest(), live.digest(), "full replay");
        assert_eq!(full.recovered.records_replayed, live.last_seq());
        let from_snapshot = journal::replay(dir.path(), LedgerConfig::default(), true).unwrap();
        assert_eq!(
            from_snapshot.recovered.ledger.digest(),
            live.digest(),
            "snapshot + tail"
        );

        // A restarted engine (same clock, so nothing more expires) continues
        // from the same state.
        let engine = Engine::builder()
            .clock(Arc::clone(&clock) as Arc<dyn Clock>)
            .journal(dir.path(), durability)
            .start()
            .unwrap();
        let mut client = engine.client().unwrap();
        let digest = client.call(Request::Digest).unwrap();
        assert_eq!(digest, Ok(ringledger::Reply::Digest(live.digest())));
        drop(client);
        engine.shutdown().unwrap();
    }
}
