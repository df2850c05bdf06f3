//! The real engine with real threads: many gateways, one business thread.

use std::collections::HashSet;
use std::sync::Arc;
use std::thread;

use ringledger::engine::{Clock, ManualClock};
use ringledger::{Engine, EngineError, ErrorCode, InstrumentId, Reject, Reply, Request, Symbol};

fn balance(client: &mut ringledger::Client, account: u64) -> (i64, i64) {
    match client.call(Request::Balance { account }).unwrap() {
        Ok(Reply::Balance { balance, held, .. }) => (balance, held),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn eight_gateways_hammering_one_wallet_end_exact_and_never_negative() {
    const GATEWAYS: u64 = 8;
    const OPS: u64 = 10_000;
    let engine = Engine::builder().start().unwrap();
    let mut admin = engine.client().unwrap();
    admin
        .call(Request::OpenAccount { account: 1 })
        .unwrap()
        .unwrap();

    let mut gateways = Vec::new();
    for g in 0..GATEWAYS {
        let mut client = engine.client().unwrap();
        gateways.push(thread::spawn(move || {
            let mut sent = Vec::new();
            let mut net = 0i64;
            let mut deposited = 0i64;
            let mut check =
                |request: Request, outcome: ringledger::Outcome| match (request, outcome) {
                    (Request::Deposit { amount, .. }, Ok(Reply::Moved { balance })) => {
                        assert!(balance >= 0);
                        net += amount;
                        deposited += amount;
                    }
                    (Request::Withdraw { amount, .. }, Ok(Reply::Moved { balance })) => {
                        assert!(balance >= 0);
                        net -= amount;
                    }
                    (Request::Withdraw { .. }, Err(Reject::InsufficientFunds { .. })) => {}
                    (request, outcome) => panic!("{request:?} -> {outcome:?}"),
                };
            for i in 0..OPS {
                let amount = ((g * 7_919 + i * 104_729) % 5_000 + 1) as i64;
                let request = if (g + i) % 2 == 0 {
                    Request::Deposit { account: 1, amount }
                } else {
                    Request::Withdraw { account: 1, amount }
                };
                client.send(request).unwrap();
                sent.push(request);
                // Pipelined: keep up to 64 in flight.
                if client.in_flight() >= 64 {
                    let request = sent.remove(0);
                    check(request, client.recv().unwrap());
                }
            }
            for request in sent {
                check(request, client.recv().unwrap());
            }
            (net, deposited)
        }));
    }
    let (mut net, mut deposited) = (0, 0);
    for gateway in gateways {
        let (n, d) = gateway.join().unwrap();
        net += n;
        deposited += d;
    }
    admin.barrier().unwrap();
    // Every deposit earns 1% rounded toward zero: add each rebate exactly once.
    let ledger_view = balance(&mut admin, 1);
    let ledger = engine.shutdown().unwrap();
    ledger.check_invariants().unwrap();
    assert_eq!(ledger.pending_rebates_len(), 0);
    let rebates = ledger_view.0 - net;
    assert!(
        rebates >= 0 && rebates <= deposited / 100,
        "rebates {rebates} of {deposited}"
    );
    assert_eq!(ledger_view.1, 0);
}

#[test]
fn rebates_are_exactly_one_percent_of_each_deposit() {
    let engine = Engine::builder().start().unwrap();
    let mut client = engine.client().unwrap();
    client
        .call(Request::OpenAccount { account: 5 })
        .unwrap()
        .unwrap();
    let amounts = [10_000i64, 1_099, 99, 250_000, 1];
    for amount in amounts {
        client
            .send(Request::Deposit { account: 5, amount })
            .unwrap();
    }
    for _ in amounts {
        client.recv().unwrap().unwrap();
    }
    client.barrier().unwrap();
    let expected: i64 = amounts.iter().map(|a| a + a / 100).sum();
    assert_eq!(balance(&mut client, 5), (expected, 0));
    let ledger = engine.shutdown().unwrap();
    assert_eq!(ledger.pending_rebates_len(), 0);
}

#[test]
fn thousand_buyers_race_for_a_hundred_shares() {
    const BUYERS: u64 = 1_000;
    const THREADS: u64 = 8;
    const PRICE: i64 = 2_500;
    let engine = Engine::builder().start().unwrap();
    let mut admin = engine.client().unwrap();
    let listed = admin
        .call(Request::ListInstrument {
            symbol: Symbol::new("ACME").unwrap(),
            supply: 100,
            price: PRICE,
        })
        .unwrap();
    let Ok(Reply::Listed { instrument }) = listed else {
        panic!("{listed:?}")
    };
    assert_eq!(
        admin.instrument_id(&Symbol::new("ACME").unwrap()),
        Some(instrument)
    );
    for buyer in 0..BUYERS {
        admin.send(Request::OpenAccount { account: buyer }).unwrap();
        admin
            .send(Request::Deposit {
                account: buyer,
                amount: 10 * PRICE,
            })
            .unwrap();
    }
    for _ in 0..2 * BUYERS {
        admin.recv().unwrap().unwrap();
    }

    let threads: Vec<_> = (0..THREADS)
        .map(|t| {
            let mut client = engine.client().unwrap();
            thread::spawn(move || {
                let mine: Vec<u64> = (0..BUYERS).filter(|b| b % THREADS == t).collect();
                for &buyer in &mine {
                    let qty = buyer % 3 + 1;
                    client
                        .send(Request::Reserve {
                            reservation: buyer,
                            account: buyer,
                            instrument,
                            qty,
                            ttl_ms: 0,
                            partial: false,
                        })
                        .unwrap();
                }
                let mut got = 0u64;
                for &buyer in &mine {
                    match client.recv().unwrap() {
                        Ok(Reply::Reserved { qty }) => {
                            assert_eq!(
                                qty,
                                buyer % 3 + 1,
                                "all-or-nothing gives exactly what was asked"
                            );
                            got += qty;
                        }
                        Err(Reject::InsufficientShares { .. }) => {}
                        other => panic!("buyer {buyer}: {other:?}"),
                    }
                }
                got
            })
        })
        .collect();
    let reserved: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    assert!(
        (98..=100).contains(&reserved),
        "all-or-nothing leaves at most 2 unsold: {reserved}"
    );
    let view = admin.call(Request::Instrument { instrument }).unwrap();
    let Ok(Reply::Instrument(view)) = view else {
        panic!("{view:?}")
    };
    assert_eq!(view.reserved, reserved);
    assert_eq!(view.available + view.reserved + view.sold, 100);
    let ledger = engine.shutdown().unwrap();
    ledger.check_invariants().unwrap();
    let held: i64 = (0..BUYERS)
        .map(|b| {
            let mut l = ledger.clone();
            let stamp = ringledger::Stamp {
                seq: ledger.last_seq() + 1,
                time_ms: ledger.now_ms(),
                session: 0,
                req: 0,
            };
            match l
                .apply(&ringledger::Stamped::new(
                    stamp,
                    Request::Balance { account: b },
                ))
                .outcome
            {
                Ok(Reply::Balance { held, .. }) => held,
                other => panic!("{other:?}"),
            }
        })
        .sum();
    assert_eq!(held, reserved as i64 * PRICE);
}

#[test]
fn thousand_one_share_buyers_get_exactly_a_hundred() {
    let engine = Engine::builder().start().unwrap();
    let mut admin = engine.client().unwrap();
    admin
        .call(Request::ListInstrument {
            symbol: Symbol::new("HOT").unwrap(),
            supply: 100,
            price: 1,
        })
        .unwrap()
        .unwrap();
    for buyer in 0..1_000 {
        admin.send(Request::OpenAccount { account: buyer }).unwrap();
        admin
            .send(Request::Deposit {
                account: buyer,
                amount: 5,
            })
            .unwrap();
    }
    for _ in 0..2_000 {
        admin.recv().unwrap().unwrap();
    }
    let threads: Vec<_> = (0..10u64)
        .map(|t| {
            let mut client = engine.client().unwrap();
            thread::spawn(move || {
                let mut won = Vec::new();
                for buyer in (t * 100)..(t * 100 + 100) {
                    let r = Request::Reserve {
                        reservation: buyer,
                        account: buyer,
                        instrument: InstrumentId(0),
                        qty: 1,
                        ttl_ms: 0,
                        partial: false,
                    };
                    match client.call(r).unwrap() {
                        Ok(Reply::Reserved { qty: 1 }) => won.push(buyer),
                        Err(e) => assert_eq!(e.code(), ErrorCode::InsufficientShares),
                        other => panic!("{other:?}"),
                    }
                }
                won
            })
        })
        .collect();
    let winners: Vec<u64> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(winners.len(), 100);
    assert_eq!(winners.iter().collect::<HashSet<_>>().len(), 100);
    engine.shutdown().unwrap().check_invariants().unwrap();
}

#[test]
fn shutdown_answers_every_request_in_flight_exactly_once() {
    let engine = Engine::builder().ring_capacity(1 << 10).start().unwrap();
    let mut admin = engine.client().unwrap();
    admin
        .call(Request::OpenAccount { account: 1 })
        .unwrap()
        .unwrap();
    let barrier = Arc::new(std::sync::Barrier::new(5));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let mut client = engine.client().unwrap();
            let barrier = Arc::clone(&barrier);
            thread::spawn(move || {
                barrier.wait();
                let mut sent = 0u64;
                // Send until the engine refuses; never read until then.
                while sent < 3_000
                    && client
                        .send(Request::Deposit {
                            account: 1,
                            amount: 1,
                        })
                        .is_ok()
                {
                    sent += 1;
                }
                let mut answered = 0u64;
                loop {
                    match client.recv() {
                        Ok(outcome) => {
                            outcome.unwrap();
                            answered += 1;
                        }
                        Err(EngineError::NothingInFlight) => break,
                        Err(e) => panic!("request lost at shutdown: {e} after {answered}/{sent}"),
                    }
                }
                (sent, answered)
            })
        })
        .collect();
    barrier.wait();
    thread::sleep(std::time::Duration::from_millis(2));
    let ledger = engine.shutdown().unwrap();
    let mut total = 0;
    for t in threads {
        let (sent, answered) = t.join().unwrap();
        assert_eq!(sent, answered);
        total += sent;
    }
    // The ledger holds exactly the answered 1-cent deposits (their 1% rebates round to zero).
    let stamp = ringledger::Stamp {
        seq: ledger.last_seq() + 1,
        time_ms: ledger.now_ms(),
        session: 0,
        req: 0,
    };
    let mut l = ledger.clone();
    let outcome = l
        .apply(&ringledger::Stamped::new(
            stamp,
            Request::Balance { account: 1 },
        ))
        .outcome;
    assert_eq!(
        outcome,
        Ok(Reply::Balance {
            balance: total as i64,
            held: 0,
            available: total as i64
        })
    );
    assert!(total > 0);
    assert!(matches!(
        admin.send(Request::Balance { account: 1 }),
        Err(EngineError::Stopped)
    ));
}

#[test]
fn repeated_request_number_is_answered_duplicate_through_the_engine() {
    let engine = Engine::builder().start().unwrap();
    let mut client = engine.session("gateway").unwrap();
    client
        .call_numbered(Request::OpenAccount { account: 9 }, 1)
        .unwrap()
        .unwrap();
    client
        .call_numbered(
            Request::Deposit {
                account: 9,
                amount: 500,
            },
            2,
        )
        .unwrap()
        .unwrap();
    let again = client
        .call_numbered(
            Request::Deposit {
                account: 9,
                amount: 500,
            },
            2,
        )
        .unwrap();
    assert_eq!(again.unwrap_err().code(), ErrorCode::Duplicate);
    // Unnumbered requests apply every time and use no number up.
    for _ in 0..2 {
        client
            .call(Request::Withdraw {
                account: 9,
                amount: 50,
            })
            .unwrap()
            .unwrap();
    }
    assert_eq!(client.last_req(), 2);
    client
        .call_numbered(
            Request::Deposit {
                account: 9,
                amount: 1,
            },
            3,
        )
        .unwrap()
        .unwrap();
    client.barrier().unwrap();
    assert_eq!(balance(&mut client, 9), (406, 0));
}

#[test]
fn a_client_without_a_session_cannot_number_requests() {
    let engine = Engine::builder().start().unwrap();
    let mut client = engine.client().unwrap();
    assert_eq!(client.session(), None);
    assert!(matches!(
        client.call_numbered(Request::OpenAccount { account: 1 }, 1),
        Err(EngineError::Refused(_))
    ));
    assert!(matches!(
        engine.session("has space"),
        Err(EngineError::Session(_))
    ));
    let id = client.open_session("later").unwrap();
    assert_eq!(client.session(), Some(id));
    client
        .call_numbered(Request::OpenAccount { account: 1 }, 1)
        .unwrap()
        .unwrap();
    assert_eq!(client.close_session().unwrap(), Ok(Reply::Done));
    assert!(matches!(
        engine.session("later"),
        Err(EngineError::Session(_))
    ));
}

#[test]
fn call_keeps_earlier_outcomes_for_recv_in_order() {
    let engine = Engine::builder().start().unwrap();
    let mut client = engine.client().unwrap();
    client.send(Request::OpenAccount { account: 1 }).unwrap();
    client.send(Request::OpenAccount { account: 1 }).unwrap();
    assert_eq!(
        client.call(Request::Balance { account: 1 }).unwrap(),
        Ok(Reply::Balance {
            balance: 0,
            held: 0,
            available: 0
        })
    );
    assert_eq!(client.recv().unwrap(), Ok(Reply::Done));
    assert_eq!(
        client.recv().unwrap().unwrap_err().code(),
        ErrorCode::AccountExists
    );
    assert!(matches!(client.recv(), Err(EngineError::NothingInFlight)));
}

#[test]
fn reservations_expire_by_the_engine_clock() {
    let clock = Arc::new(ManualClock::new(1_000));
    let engine = Engine::builder()
        .clock(Arc::clone(&clock) as Arc<dyn Clock>)
        .start()
        .unwrap();
    let mut c = engine.client().unwrap();
    c.call(Request::OpenAccount { account: 1 })
        .unwrap()
        .unwrap();
    c.call(Request::Deposit {
        account: 1,
        amount: 1_000,
    })
    .unwrap()
    .unwrap();
    c.call(Request::ListInstrument {
        symbol: Symbol::new("X").unwrap(),
        supply: 10,
        price: 10,
    })
    .unwrap()
    .unwrap();
    let reserve = Request::Reserve {
        reservation: 1,
        account: 1,
        instrument: InstrumentId(0),
        qty: 5,
        ttl_ms: 500,
        partial: false,
    };
    assert_eq!(c.call(reserve).unwrap(), Ok(Reply::Reserved { qty: 5 }));
    clock.advance_to(1_500).unwrap();
    c.call(Request::Tick).unwrap().unwrap();
    assert_eq!(
        c.call(Request::Confirm { reservation: 1 })
            .unwrap()
            .unwrap_err()
            .code(),
        ErrorCode::ReservationExpired
    );
    engine.shutdown().unwrap().check_invariants().unwrap();
}

/// A clock that panics on its third reading: a stand-in for any bug on the
/// business thread.
struct FaultyClock(std::sync::atomic::AtomicU32);

impl Clock for FaultyClock {
    fn now_ms(&self) -> u64 {
        if self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst) == 2 {
            panic!("injected fault");
        }
        0
    }
}

#[test]
fn business_thread_panic_gives_clients_an_error_not_a_hang() {
    let engine = Engine::builder()
        .clock(Arc::new(FaultyClock(Default::default())))
        .start()
        .unwrap();
    let mut client = engine.client().unwrap();
    client
        .call(Request::OpenAccount { account: 1 })
        .unwrap()
        .unwrap();
    client
        .call(Request::OpenAccount { account: 2 })
        .unwrap()
        .unwrap();
    let err = client
        .call(Request::OpenAccount { account: 3 })
        .unwrap_err();
    assert!(matches!(err, EngineError::Failed(_)), "{err}");
    assert!(client.send(Request::Balance { account: 1 }).is_err() || client.recv().is_err());
    assert!(matches!(engine.shutdown(), Err(EngineError::Failed(_))));
}

#[test]
fn pinning_to_a_missing_core_runs_unpinned() {
    let engine = Engine::builder().pin_core(Some(10_000)).start().unwrap();
    let mut client = engine.client().unwrap();
    assert!(client.call(Request::Digest).unwrap().is_ok());
    engine.shutdown().unwrap();
}

#[test]
fn clients_created_concurrently_each_get_their_own_answers() {
    let engine = Arc::new(Engine::builder().start().unwrap());
    let mut admin = engine.client().unwrap();
    admin
        .call(Request::OpenAccount { account: 1 })
        .unwrap()
        .unwrap();
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let engine = Arc::clone(&engine);
            thread::spawn(move || {
                for _ in 0..300 {
                    let mut client = engine.client().unwrap();
                    // Distinct requests in order: each answer must match its request.
                    for limit in 1..=3u32 {
                        client.send(Request::History { account: 1, limit }).unwrap();
                    }
                    client.send(Request::Balance { account: 1 }).unwrap();
                    for _ in 1..=3 {
                        assert!(matches!(client.recv().unwrap(), Ok(Reply::History { .. })));
                    }
                    assert!(matches!(client.recv().unwrap(), Ok(Reply::Balance { .. })));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    drop(admin);
    Arc::try_unwrap(engine).ok().unwrap().shutdown().unwrap();
}

#[test]
fn only_the_rebate_thread_may_credit_rebates() {
    let engine = Engine::builder().start().unwrap();
    let mut client = engine.client().unwrap();
    let err = client
        .send(Request::CreditRebate {
            deposit_seq: 1,
            amount: 1,
        })
        .unwrap_err();
    assert!(matches!(err, EngineError::Refused(_)), "{err}");
    assert_eq!(client.in_flight(), 0);
}

#[test]
fn try_recv_reports_a_failed_engine() {
    let engine = Engine::builder()
        .clock(Arc::new(FaultyClock(Default::default())))
        .start()
        .unwrap();
    let mut client = engine.client().unwrap();
    client.call(Request::Digest).unwrap().unwrap();
    client.call(Request::Digest).unwrap().unwrap();
    client.send(Request::Digest).unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        match client.try_recv() {
            Err(EngineError::Failed(_)) => break,
            Ok(None) if std::time::Instant::now() < deadline => thread::yield_now(),
            other => panic!("expected a failure, got {other:?}"),
        }
    }
}

#[test]
fn a_clients_first_answer_wakes_it() {
    // Regression: a client answered in an engine's very first release was
    // never woken. A watchdog turns a lost wake-up into a failure, not a hang.
    let (done, finished) = std::sync::mpsc::channel();
    thread::spawn(move || {
        for _ in 0..200 {
            let engine = Engine::builder().start().unwrap();
            let mut client = engine.client().unwrap();
            thread::sleep(std::time::Duration::from_micros(200));
            client
                .call(Request::OpenAccount { account: 1 })
                .unwrap()
                .unwrap();
            drop(client);
            engine.shutdown().unwrap();
        }
        done.send(()).unwrap();
    });
    finished
        .recv_timeout(std::time::Duration::from_secs(120))
        .expect("a client was never woken for its answer");
}
