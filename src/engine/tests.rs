//! Engine behaviour that needs a look inside: how many response queues the
//! answering side holds, and the rebate backlog's peak.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use super::*;
use crate::outcome::Reply;
use crate::rebate::RebateJob;

/// Deposits `amount` into `account`, which must be accepted.
fn deposit(client: &mut Client, account: u64, amount: i64) {
    client
        .call(Request::Deposit { account, amount })
        .unwrap()
        .unwrap();
}

fn balance(client: &mut Client, account: u64) -> i64 {
    match client.call(Request::Balance { account }).unwrap() {
        Ok(Reply::Balance { balance, .. }) => balance,
        other => panic!("expected a balance, got {other:?}"),
    }
}

#[test]
fn dropped_clients_free_their_response_queues_and_ids() {
    let engine = Engine::builder().start().unwrap();
    let mut setup = engine.client().unwrap();
    setup
        .call(Request::OpenAccount { account: 1 })
        .unwrap()
        .unwrap();
    drop(setup);
    let mut deposited = 0;
    for round in 0..3_000 {
        let mut client = engine.client().unwrap();
        // A reused id must not receive answers meant for its last owner.
        balance(&mut client, 1);
        if round % 2 == 0 {
            // Dropped with answers still in flight: they are discarded.
            for _ in 0..8 {
                client
                    .send(Request::Deposit {
                        account: 1,
                        amount: 1,
                    })
                    .unwrap();
                deposited += 1;
            }
        }
    }
    let mut last = engine.client().unwrap();
    // The second call's batch comes after the release that settled every
    // earlier departure.
    balance(&mut last, 1);
    assert_eq!(balance(&mut last, 1), deposited);
    let held = engine.shared.response_queues_held.load(Ordering::Relaxed);
    let slots = engine.shared.response_slots.load(Ordering::Relaxed);
    assert_eq!(held, 1, "only the live client's queue is held");
    assert!(
        slots <= 8,
        "{slots} client slots for at most 2 clients alive at once"
    );
    drop(last);
    engine.shutdown().unwrap();
}

/// A rebate policy that holds every computation until the gate opens.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn open(&self) {
        *self.0 .0.lock().unwrap() = true;
        self.0 .1.notify_all();
    }
}

impl RebatePolicy for Gate {
    fn rebate(&self, job: &RebateJob) -> i64 {
        let mut open = self.0 .0.lock().unwrap();
        while !*open {
            open = self.0 .1.wait(open).unwrap();
        }
        job.amount / 100
    }
}

fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "gave up waiting for {what}"
        );
        thread::sleep(Duration::from_millis(1));
    }
}

#[test]
fn rebate_backlog_stays_bounded_under_a_flood_and_every_rebate_is_credited_once() {
    const BACKLOG_MAX: u64 = 64;
    const GATEWAYS: u64 = 4;
    const DEPOSITS: u64 = 2_000;
    let gate = Gate::default();
    let engine = Engine::builder()
        .rebate_policy(gate.clone())
        .rebate_backlog_max(BACKLOG_MAX as usize)
        .ring_capacity(64)
        .start()
        .unwrap();
    let engine = Arc::new(engine);
    let gateways: Vec<_> = (0..GATEWAYS)
        .map(|g| {
            let engine = Arc::clone(&engine);
            thread::spawn(move || {
                let mut client = engine.client().unwrap();
                client
                    .call(Request::OpenAccount { account: g })
                    .unwrap()
                    .unwrap();
                for i in 0..DEPOSITS {
                    // Pipelined, 32 in flight.
                    if client.in_flight() == 32 {
                        client.recv().unwrap().unwrap();
                    }
                    client
                        .send(Request::Deposit {
                            account: g,
                            amount: 100 + i as i64,
                        })
                        .unwrap();
                }
                while client.in_flight() > 0 {
                    client.recv().unwrap().unwrap();
                }
            })
        })
        .collect();
    // The rebate thread is stuck: deposits stop at the limit, the ring fills
    // and the gateways wait.
    let shared = Arc::clone(&engine.shared);
    wait_for("the backlog to reach its limit", || {
        shared.rebates_dispatched.load(Ordering::Acquire) >= BACKLOG_MAX
    });
    thread::sleep(Duration::from_millis(50));
    assert_eq!(
        shared.rebates_dispatched.load(Ordering::Acquire),
        BACKLOG_MAX
    );
    gate.open();
    for gateway in gateways {
        gateway.join().unwrap();
    }
    let mut client = engine.client().unwrap();
    client.barrier().unwrap();
    for g in 0..GATEWAYS {
        let expected: i64 = (0..DEPOSITS as i64)
            .map(|i| (100 + i) + (100 + i) / 100)
            .sum();
        assert_eq!(balance(&mut client, g), expected, "account {g}");
    }
    drop(client);
    let peak = shared.rebate_backlog_peak.load(Ordering::Relaxed);
    assert!(peak <= BACKLOG_MAX, "backlog peaked at {peak}");
    let ledger = Arc::into_inner(engine).unwrap().shutdown().unwrap();
    assert_eq!(ledger.pending_rebates_len(), 0);
    assert_eq!(
        shared.rebates_answered.load(Ordering::Acquire),
        GATEWAYS * DEPOSITS
    );
}

/// The rebate thread lingers after each group without asking to be woken;
/// with an hour-long linger, deposits past the backlog limit, a barrier and
/// shutdown get through only because each of them cuts the linger short
/// (without that, this test hangs and fails at its deadline).
#[test]
fn a_lingering_rebate_thread_is_hurried_by_the_backlog_limit_a_barrier_and_shutdown() {
    const DEPOSITS: i64 = 40;
    let (done_tx, done) = std::sync::mpsc::channel();
    thread::spawn(move || {
        let engine = EngineBuilder {
            rebate_linger: Duration::from_secs(3_600),
            ..Engine::builder()
        }
        .rebate_backlog_max(4)
        .start()
        .unwrap();
        let mut client = engine.client().unwrap();
        client
            .call(Request::OpenAccount { account: 1 })
            .unwrap()
            .unwrap();
        for _ in 0..DEPOSITS {
            deposit(&mut client, 1, 10_000);
        }
        let _ = done_tx.send("deposits");
        client.barrier().unwrap();
        // Below the backlog limit only a barrier hurries the thread, which
        // lingers after the group the last barrier asked for.
        deposit(&mut client, 1, 10_000);
        client.barrier().unwrap();
        assert_eq!(balance(&mut client, 1), (DEPOSITS + 1) * 10_100);
        let _ = done_tx.send("barrier");
        drop(client);
        assert_eq!(engine.shutdown().unwrap().pending_rebates_len(), 0);
        let _ = done_tx.send("shutdown");
    });
    for step in ["deposits", "barrier", "shutdown"] {
        assert_eq!(
            done.recv_timeout(Duration::from_secs(60)),
            Ok(step),
            "stuck before the {step} were through"
        );
    }
}

#[test]
fn owed_rebates_above_the_limit_at_start_are_all_credited() {
    use crate::request::{Stamp, Stamped};
    let mut ledger = Ledger::default();
    let requests = std::iter::once(Request::OpenAccount { account: 1 }).chain((0..100).map(|_| {
        Request::Deposit {
            account: 1,
            amount: 10_000,
        }
    }));
    for (seq, request) in (1..).zip(requests) {
        let stamp = Stamp {
            seq,
            time_ms: 0,
            session: 1,
            req: 0,
        };
        ledger.apply(&Stamped { stamp, request }).outcome.unwrap();
    }
    assert_eq!(ledger.pending_rebates_len(), 100);
    let engine = Engine::builder()
        .ledger(ledger)
        .rebate_backlog_max(10)
        .start()
        .unwrap();
    let mut client = engine.client().unwrap();
    client.barrier().unwrap();
    assert_eq!(balance(&mut client, 1), 100 * 10_100);
    drop(client);
    assert_eq!(engine.shutdown().unwrap().pending_rebates_len(), 0);
}

/// A rebate policy that panics: a bug in user code on the side thread.
struct Panicking;

impl RebatePolicy for Panicking {
    fn rebate(&self, _: &RebateJob) -> i64 {
        panic!("injected rebate policy fault")
    }
}

#[test]
fn a_panicking_rebate_policy_fails_the_engine_without_a_hang() {
    let engine = Engine::builder()
        .rebate_policy(Panicking)
        .rebate_backlog_max(4)
        .start()
        .unwrap();
    let mut client = engine.client().unwrap();
    client
        .call(Request::OpenAccount { account: 1 })
        .unwrap()
        .unwrap();
    // With the rebate thread gone, the backlog fills and never drains: the
    // business thread stops instead of waiting for credits forever.
    let failed = (0..100).find_map(|_| {
        client
            .call(Request::Deposit {
                account: 1,
                amount: 100,
            })
            .err()
    });
    assert!(
        matches!(failed, Some(EngineError::Failed(_))),
        "expected a failure, got {failed:?}"
    );
    assert!(matches!(client.barrier(), Err(EngineError::Failed(_))));
    assert!(matches!(engine.shutdown(), Err(EngineError::Failed(_))));
}

#[test]
fn barriers_park_until_the_credits_they_wait_for_land() {
    let gate = Gate::default();
    let engine = Engine::builder()
        .rebate_policy(gate.clone())
        .start()
        .unwrap();
    let mut client = engine.client().unwrap();
    client
        .call(Request::OpenAccount { account: 1 })
        .unwrap()
        .unwrap();
    deposit(&mut client, 1, 10_000);
    let barriers: Vec<_> = (0..3)
        .map(|_| {
            let mut client = engine.client().unwrap();
            thread::spawn(move || client.barrier())
        })
        .collect();
    let shared = Arc::clone(&engine.shared);
    wait_for("three parked barriers", || {
        shared.rebate_waiters.load(Ordering::Acquire) == 3
    });
    assert!(barriers.iter().all(|b| !b.is_finished()));
    assert_eq!(
        balance(&mut client, 1),
        10_000,
        "no credit before the gate opens"
    );
    gate.open();
    for barrier in barriers {
        barrier.join().unwrap().unwrap();
    }
    assert_eq!(balance(&mut client, 1), 10_100);
    assert_eq!(shared.rebate_waiters.load(Ordering::Acquire), 0);
    engine.shutdown().unwrap();
}

/// Holds every computation until the gate opens, then panics.
#[derive(Clone, Default)]
struct PanicAfterGate(Gate);

impl RebatePolicy for PanicAfterGate {
    fn rebate(&self, job: &RebateJob) -> i64 {
        self.0.rebate(job);
        panic!("injected rebate policy fault after the gate")
    }
}

#[test]
fn a_parked_barrier_wakes_with_the_failure_when_the_engine_fails() {
    let policy = PanicAfterGate::default();
    let engine = Engine::builder()
        .rebate_policy(policy.clone())
        .start()
        .unwrap();
    let mut client = engine.client().unwrap();
    client
        .call(Request::OpenAccount { account: 1 })
        .unwrap()
        .unwrap();
    deposit(&mut client, 1, 100);
    let barrier = thread::spawn(move || client.barrier());
    let shared = Arc::clone(&engine.shared);
    wait_for("a parked barrier", || {
        shared.rebate_waiters.load(Ordering::Acquire) == 1
    });
    policy.0.open();
    assert!(matches!(
        barrier.join().unwrap(),
        Err(EngineError::Failed(_))
    ));
    assert!(matches!(engine.shutdown(), Err(EngineError::Failed(_))));
}

#[test]
fn recv_timeout_hands_back_answers_in_order_and_none_when_nothing_came() {
    let engine = Engine::builder().start().unwrap();
    let mut client = engine.client().unwrap();
    assert!(matches!(
        client.recv_timeout(Duration::from_millis(1)),
        Ok(None)
    ));
    client.send(Request::OpenAccount { account: 1 }).unwrap();
    client.send(Request::Balance { account: 1 }).unwrap();
    let mut answers = Vec::new();
    while answers.len() < 2 {
        if let Some(outcome) = client.recv_timeout(Duration::from_millis(10)).unwrap() {
            answers.push(outcome);
        }
    }
    assert_eq!(
        answers,
        vec![
            Ok(Reply::Done),
            Ok(Reply::Balance {
                balance: 0,
                held: 0,
                available: 0
            })
        ]
    );
    assert_eq!(client.in_flight(), 0);
    drop(client);
    engine.shutdown().unwrap();
}

/// The bench's settled clock stops when a barrier returns, and a baseline
/// counts a credit only once it is journaled: so in sync mode a barrier must
/// not return before the credits it waited for are fdatasynced, whichever
/// thread syncs.
#[test]
fn a_barrier_in_sync_mode_returns_only_once_the_credits_are_fdatasynced() {
    const ROUNDS: u64 = 20;
    for thread in [JournalThread::Business, JournalThread::Flusher] {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::builder()
            .journal(dir.path(), Durability::Sync)
            .journal_thread(thread)
            .start()
            .unwrap();
        let mut client = engine.client().unwrap();
        client
            .call(Request::OpenAccount { account: 1 })
            .unwrap()
            .unwrap();
        for round in 1..=ROUNDS {
            deposit(&mut client, 1, 10_000);
            client.barrier().unwrap();
            // Seq 1 opened the account; each round adds a deposit and its credit.
            let credit_seq = 1 + 2 * round;
            let synced = engine.shared.journal_synced_seq.load(Ordering::Acquire);
            assert!(
                synced >= credit_seq,
                "{thread} thread, round {round}: the barrier returned with the journal \
                 fdatasynced through seq {synced}, before the credit at seq {credit_seq}"
            );
        }
        assert_eq!(balance(&mut client, 1), ROUNDS as i64 * 10_100);
        drop(client);
        engine.shutdown().unwrap();
    }
}

/// A frame's last seq (None: passed with no frame) and its outcomes.
type HandedGroup = (Option<u64>, Vec<(u32, Outcome)>);

/// What the journal stage hands on.
#[derive(Clone, Default)]
struct Handed(Arc<Mutex<Vec<HandedGroup>>>);

impl stages::AfterJournal for Handed {
    fn journaled(
        &mut self,
        _: &Shared,
        frame: &[u8],
        last_seq: u64,
        held: &mut Vec<(u32, Outcome)>,
        _: u64,
    ) {
        assert!(!frame.is_empty());
        self.0
            .lock()
            .unwrap()
            .push((Some(last_seq), std::mem::take(held)));
    }

    fn passed(&mut self, _: &Shared, held: &mut Vec<(u32, Outcome)>, _: u64) {
        self.0.lock().unwrap().push((None, std::mem::take(held)));
    }
}

#[test]
fn the_journal_stage_hands_on_outcomes_without_inputs_and_writes_no_frame_for_them() {
    use stages::Stage;

    let engine = Engine::builder().start().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let writer = JournalWriter::open(
        dir.path(),
        JournalConfig {
            durability: Durability::Async,
            segment_bytes: journal::SEGMENT_BYTES_DEFAULT,
        },
    )
    .unwrap();
    let handed = Handed::default();
    let mut stage = stages::Journal::new(dir.path().to_path_buf(), writer, handed.clone());
    let stamped = |seq| {
        crate::request::Stamped::new(
            crate::request::Stamp {
                seq,
                time_ms: 0,
                session: 0,
                req: 0,
            },
            Request::OpenAccount { account: seq },
        )
    };
    let shed: Outcome = Err(crate::Reject::Unavailable);
    let applied: Outcome = Ok(Reply::Done);

    let mut inputs = vec![stamped(1)];
    let mut held = vec![(0, applied.clone())];
    assert!(stage.take(&engine.shared, &mut inputs, &mut held, 0));
    // Shed requests: outcomes and nothing to journal.
    let mut held = vec![(0, shed.clone()), (1, shed.clone())];
    assert!(stage.take(&engine.shared, &mut inputs, &mut held, 0));
    assert!(held.is_empty(), "outcomes were left behind: {held:?}");
    // Nothing at all: nothing handed on.
    assert!(stage.take(&engine.shared, &mut inputs, &mut held, 0));

    let (_, writer) = Box::new(stage).finish().unwrap();
    assert_eq!(writer.chain_head().seq, 1, "no frame for outcomes alone");
    assert_eq!(
        *handed.0.lock().unwrap(),
        vec![
            (Some(1), vec![(0, applied)]),
            (None, vec![(0, shed.clone()), (1, shed)]),
        ]
    );
    drop(writer);
    engine.shutdown().unwrap();
}

#[cfg(feature = "nats")]
#[test]
fn a_replication_backlog_bound_of_zero_is_refused() {
    match Engine::builder().replication_backlog_max(0).start() {
        Err(EngineError::Config(why)) => assert!(why.contains("replication_backlog_max"), "{why}"),
        Err(e) => panic!("expected a configuration error, got {e}"),
        Ok(_) => panic!("a bound of 0 records was accepted"),
    }
}
