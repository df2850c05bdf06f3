//! The journaling engine: what it applied live is what a replay rebuilds.

use std::sync::Arc;

use ringledger::engine::{Clock, ManualClock};
use ringledger::journal::{self, Durability};
use ringledger::{
    Engine, EngineError, InstrumentId, JournalThread, LedgerConfig, RebateJob, RebatePolicy, Reply,
    Request, Symbol,
};

const JOURNAL_THREADS: [JournalThread; 2] = [JournalThread::Business, JournalThread::Flusher];

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
            clock.advance_to(clock.now_ms() + 50).unwrap();
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

/// In sync mode the business thread gathers inputs across batches until the
/// ring runs dry. A batch of rebate credits alone holds no outcome to
/// release; the credit must still be journaled, also when the engine shuts
/// down right after it (a barrier, then shutdown): otherwise the shutdown
/// snapshot holds a credit the journal lacks and a full replay differs.
#[test]
fn a_rebate_credit_applied_just_before_shutdown_is_journaled() {
    for thread in JOURNAL_THREADS {
        for durability in [Durability::Sync, Durability::Async] {
            let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
            let engine = Engine::builder()
                .journal(dir.path(), durability)
                .journal_thread(thread)
                .start()
                .unwrap();
            let mut client = engine.client().unwrap();
            client
                .call(Request::OpenAccount { account: 1 })
                .unwrap()
                .unwrap();
            client
                .call(Request::Deposit {
                    account: 1,
                    amount: 10_000,
                })
                .unwrap()
                .unwrap();
            client.barrier().unwrap();
            drop(client);
            let live = engine.shutdown().unwrap();
            let full = journal::replay(dir.path(), LedgerConfig::default(), false).unwrap();
            assert_eq!(
                full.recovered.records_replayed,
                live.last_seq(),
                "{durability} via {thread}: every applied record is journaled"
            );
            assert_eq!(full.recovered.ledger.digest(), live.digest());
        }
    }
}

#[test]
fn replay_of_the_journal_rebuilds_the_live_digest() {
    let cases = [(7, Durability::Async), (11, Durability::Sync)]
        .into_iter()
        .flat_map(|case| JOURNAL_THREADS.map(|thread| (case, thread)));
    for ((seed, durability), thread) in cases {
        let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
        let clock = Arc::new(ManualClock::new(1_000));
        let engine = Engine::builder()
            .clock(Arc::clone(&clock) as Arc<dyn Clock>)
            .journal(dir.path(), durability)
            .journal_thread(thread)
            .segment_bytes(64 << 10)
            .snapshot_every(1_500)
            .snapshots_kept(0)
            .start()
            .unwrap();
        let mut client = engine.client().unwrap();
        workload(seed, &clock, &mut client);
        drop(client);
        let live = engine.shutdown().unwrap();
        live.check_invariants().unwrap();
        assert_eq!(live.pending_rebates_len(), 0);

        let full = journal::replay(dir.path(), LedgerConfig::default(), false).unwrap();
        assert_eq!(
            full.recovered.ledger.digest(),
            live.digest(),
            "full replay, {durability} via {thread}"
        );
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
            .journal_thread(thread)
            .start()
            .unwrap();
        let mut client = engine.client().unwrap();
        let digest = client.call(Request::Digest).unwrap();
        assert_eq!(digest, Ok(ringledger::Reply::Digest(live.digest())));
        drop(client);
        engine.shutdown().unwrap();
    }
}

/// Gateways pipelining deposits on their own threads: every acknowledged
/// deposit is in the journal, and the journal replays to the live state.
#[test]
fn pipelined_gateways_journal_everything_they_were_answered() {
    const GATEWAYS: u64 = 4;
    const DEPOSITS: u64 = 3_000;
    for durability in [Durability::Async, Durability::Sync] {
        for thread in JOURNAL_THREADS {
            let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
            let engine = Engine::builder()
                .journal(dir.path(), durability)
                .journal_thread(thread)
                .segment_bytes(256 << 10)
                .start()
                .unwrap();
            let mut opener = engine.client().unwrap();
            for account in 0..GATEWAYS {
                opener
                    .call(Request::OpenAccount { account })
                    .unwrap()
                    .unwrap();
            }
            let acknowledged: u64 = std::thread::scope(|s| {
                let gateways: Vec<_> = (0..GATEWAYS)
                    .map(|account| {
                        let mut client = engine.client().unwrap();
                        s.spawn(move || {
                            let mut ok = 0;
                            for _ in 0..DEPOSITS {
                                if client.in_flight() >= 64 {
                                    client.recv().unwrap().unwrap();
                                    ok += 1;
                                }
                                client
                                    .send(Request::Deposit {
                                        account,
                                        amount: 100,
                                    })
                                    .unwrap();
                            }
                            while client.in_flight() > 0 {
                                client.recv().unwrap().unwrap();
                                ok += 1;
                            }
                            ok
                        })
                    })
                    .collect();
                gateways.into_iter().map(|g| g.join().unwrap()).sum()
            });
            assert_eq!(acknowledged, GATEWAYS * DEPOSITS);
            opener.barrier().unwrap();
            for account in 0..GATEWAYS {
                // 1% rebate on each deposit of 100.
                let balance = (DEPOSITS * 101) as i64;
                assert_eq!(
                    opener.call(Request::Balance { account }).unwrap(),
                    Ok(Reply::Balance {
                        balance,
                        held: 0,
                        available: balance
                    })
                );
            }
            drop(opener);
            let live = engine.shutdown().unwrap();
            let replayed = journal::replay(dir.path(), LedgerConfig::default(), false).unwrap();
            let ledger = &replayed.recovered.ledger;
            assert_eq!(ledger.digest(), live.digest(), "{durability} via {thread}");
        }
    }
}

/// A journal that can no longer be written stops the engine: clients get
/// `Failed` (not a hang, not an unjournaled answer), whichever thread writes.
#[test]
fn a_failing_journal_stops_the_engine_as_unavailable_instead_of_answering() {
    for durability in [Durability::Async, Durability::Sync] {
        for thread in JOURNAL_THREADS {
            let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
            let journal_dir = dir.path().join("journal");
            let engine = Engine::builder()
                .journal(&journal_dir, durability)
                .journal_thread(thread)
                .segment_bytes(4 << 10)
                .start()
                .unwrap();
            let mut client = engine.client().unwrap();
            client
                .call(Request::OpenAccount { account: 1 })
                .unwrap()
                .unwrap();
            // The next segment roll cannot rename its file into a directory
            // that is gone: a real I/O error on the journal path.
            // (Retried: the writer's helper thread may be creating the next
            // spare segment in it right now.)
            let mut attempts = 0;
            while let Err(e) = std::fs::remove_dir_all(&journal_dir) {
                attempts += 1;
                assert!(attempts < 100, "cannot remove the journal directory: {e}");
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            let mut answered = 0u64;
            let err = loop {
                match client.call(Request::Deposit {
                    account: 1,
                    amount: 1,
                }) {
                    Ok(outcome) => {
                        outcome.unwrap();
                        answered += 1;
                        assert!(answered < 10_000, "the journal never failed");
                    }
                    Err(e) => break e,
                }
            };
            assert!(
                matches!(&err, EngineError::Unavailable(why) if why.contains("journal")),
                "{err}"
            );
            assert!(matches!(
                engine.shutdown(),
                Err(EngineError::Unavailable(_))
            ));
        }
    }
}

/// A client's answers come back in the order it sent its requests, across
/// many flusher groups of varying size.
#[test]
fn answers_keep_their_order_through_the_flusher() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let engine = Engine::builder()
        .journal(dir.path(), Durability::Sync)
        .journal_thread(JournalThread::Flusher)
        .start()
        .unwrap();
    let mut client = engine.client().unwrap();
    client
        .call(Request::OpenAccount { account: 9 })
        .unwrap()
        .unwrap();
    client
        .call(Request::Deposit {
            account: 9,
            amount: 1_000_000,
        })
        .unwrap()
        .unwrap();
    client.barrier().unwrap();
    let mut expected = 1_010_000; // with the 1% rebate
    for round in 0..300 {
        for _ in 0..(round % 13 + 1) {
            client
                .send(Request::Withdraw {
                    account: 9,
                    amount: 1,
                })
                .unwrap();
        }
        while client.in_flight() > 0 {
            expected -= 1;
            assert_eq!(
                client.recv().unwrap(),
                Ok(Reply::Moved { balance: expected })
            );
        }
    }
    drop(client);
    engine.shutdown().unwrap();
}

/// A client's very first request, sent just before shutdown, is still
/// answered whichever thread journals it: shutdown answers everything it
/// accepted, including for a client the answering thread has not met yet.
#[test]
fn a_new_clients_last_moment_request_is_answered_at_shutdown() {
    for thread in JOURNAL_THREADS {
        for round in 0..100u64 {
            let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
            let engine = Engine::builder()
                .journal(dir.path(), Durability::Async)
                .journal_thread(thread)
                .segment_bytes(64 << 10)
                .start()
                .unwrap();
            let mut client = engine.client().unwrap();
            client
                .send(Request::OpenAccount { account: round })
                .unwrap();
            engine.shutdown().unwrap();
            assert_eq!(
                client.recv().unwrap(),
                Ok(Reply::Done),
                "{thread}, round {round}"
            );
        }
    }
}

/// 1%, computed slowly enough that the credit arrives after its deposit's
/// group was written, alone in a batch of its own.
struct SlowRebate;

impl RebatePolicy for SlowRebate {
    fn rebate(&self, job: &RebateJob) -> i64 {
        std::thread::sleep(std::time::Duration::from_millis(20));
        job.amount / 100
    }
}

/// A batch of nothing but rebate credits has no answers to hold, yet its
/// inputs must still reach the journal before the business thread sleeps:
/// in sync mode they were left unwritten, so the journal lost the credits
/// the live Ledger (and the shutdown snapshot) had applied.
#[test]
fn rebate_credits_alone_in_a_batch_are_journaled() {
    for durability in [Durability::Async, Durability::Sync] {
        for thread in JOURNAL_THREADS {
            let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
            // Slow enough that the credit arrives after its deposit's group
            // was written, alone in a batch of its own.
            let engine = Engine::builder()
                .journal(dir.path(), durability)
                .journal_thread(thread)
                .rebate_policy(SlowRebate)
                .start()
                .unwrap();
            let mut client = engine.client().unwrap();
            client
                .call(Request::OpenAccount { account: 1 })
                .unwrap()
                .unwrap();
            client
                .call(Request::Deposit {
                    account: 1,
                    amount: 10_000,
                })
                .unwrap()
                .unwrap();
            client.barrier().unwrap();
            drop(client);
            let live = engine.shutdown().unwrap();
            assert_eq!(live.pending_rebates_len(), 0);

            let full = journal::replay(dir.path(), LedgerConfig::default(), false).unwrap();
            assert_eq!(
                full.recovered.records_replayed,
                live.last_seq(),
                "{durability} via {thread}: every applied input is in the journal"
            );
            assert_eq!(full.recovered.ledger.digest(), live.digest());
        }
    }
}
