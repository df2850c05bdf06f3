//! Journal replication over a real 3-node JetStream cluster on loopback
//! (started by each test, see `support/nats.rs`): the leader's frames reach
//! followers intact and in order, followers resume from their own disk, and
//! a second writer deposes the first.

mod support;

use std::path::Path;
use std::time::Duration;

use ringledger::journal::{self, Durability};
use ringledger::replication::{Publisher, Release, ReplicationConfig, ReplicationError, Status};
use ringledger::{Engine, EngineError, Ledger, LedgerConfig, Outcome, Reject, Request};
use support::leader::{follow_to, meta, Leader, Workload, WAIT};
use support::nats::Cluster;

fn config(cluster: &Cluster, stream: &str) -> ReplicationConfig {
    ReplicationConfig::new(cluster.url(), stream).replicas(3)
}

#[test]
fn follower_digest_equals_leader_and_resumes_from_its_own_journal() {
    let cluster = Cluster::start(3);
    let config = config(&cluster, "digest");
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let mut leader = Leader::open(leader_dir.path(), 0x5eed);
    let publisher =
        Publisher::start(&config, meta(), Some(leader_dir.path()), 0, None, ()).unwrap();

    let half = leader.publish_steps(&publisher, 300);
    publisher.wait_stored(half, WAIT).unwrap();
    let leader_half_digest = leader.ledger.digest();
    let follower = follow_to(&config, follower_dir.path(), half);
    assert_eq!(follower.digest(), leader_half_digest);

    // The follower restarts from its own journal and snapshot while the
    // leader goes on publishing.
    let end = std::thread::scope(|scope| {
        let resumed = scope.spawn(|| {
            let mut follower = support::nats::open_follower(&config, follower_dir.path());
            assert_eq!(
                follower.ledger().last_seq(),
                half,
                "resumed from its own disk"
            );
            follower
                .run(Duration::from_millis(100), |_, ledger| {
                    ledger.last_seq() < half + 1
                })
                .unwrap();
            follower.close().unwrap()
        });
        let end = leader.publish_steps(&publisher, 300);
        resumed.join().unwrap();
        end
    });
    publisher.wait_stored(end, WAIT).unwrap();
    let follower = follow_to(&config, follower_dir.path(), end);
    assert_eq!(follower.digest(), leader.ledger.digest());
    assert_eq!(publisher.status(), Status::Leading);

    // The follower's own journal rebuilds the same state.
    let replayed = journal::replay(follower_dir.path(), LedgerConfig::default(), false).unwrap();
    assert_eq!(replayed.recovered.ledger.digest(), leader.ledger.digest());
}

#[test]
fn a_second_writer_fences_the_first() {
    let cluster = Cluster::start(3);
    let config = config(&cluster, "fence");
    let dir_a = tempfile::tempdir().unwrap();
    let dir_b = tempfile::tempdir().unwrap();
    let mut a = Leader::open(dir_a.path(), 7);
    let publisher_a = Publisher::start(&config, meta(), Some(dir_a.path()), 0, None, ()).unwrap();
    let mut frames = Vec::new();
    for _ in 0..10 {
        let last = a.step();
        frames.push(a.writer.last_frame().to_vec());
        publisher_a.publish(a.writer.last_frame(), last, ());
    }
    let stored = a.ledger.last_seq();
    publisher_a.wait_stored(stored, WAIT).unwrap();

    // B has caught up with the same frames (as a follower that takes over
    // would have: byte for byte, so its chain is A's) and extends the
    // stream.
    let mut b = Leader::open(dir_b.path(), 7);
    for frame in &frames {
        b.step_as(frame);
    }
    assert_eq!(b.ledger.digest(), a.ledger.digest());
    let publisher_b =
        Publisher::start(&config, meta(), Some(dir_b.path()), stored, None, ()).unwrap();
    let b_end = b.publish_steps(&publisher_b, 1);
    publisher_b.wait_stored(b_end, WAIT).unwrap();

    // A's next frame is refused by the stream: A is fenced, for good.
    let a_end = a.publish_steps(&publisher_a, 1);
    match publisher_a.wait_stored(a_end, WAIT) {
        Err(ReplicationError::NotLeader(why)) => assert!(why.contains("another process"), "{why}"),
        other => panic!("expected NotLeader, got {other:?}"),
    }
    assert!(matches!(publisher_a.status(), Status::Fenced(_)));
    let a_later = a.publish_steps(&publisher_a, 1);
    assert!(matches!(
        publisher_a.wait_stored(a_later, WAIT),
        Err(ReplicationError::NotLeader(_))
    ));

    // The stream holds B's history only: a follower ends with B's digest.
    let follower_dir = tempfile::tempdir().unwrap();
    let follower = follow_to(&config, follower_dir.path(), b_end);
    assert_eq!(follower.digest(), b.ledger.digest());
    assert_eq!(publisher_b.status(), Status::Leading);
}

#[test]
fn a_restarted_leader_publishes_what_its_journal_holds_beyond_the_stream() {
    let cluster = Cluster::start(3);
    let config = config(&cluster, "catchup");
    let dir = tempfile::tempdir().unwrap();
    let mut leader = Leader::open(dir.path(), 99);
    let publisher = Publisher::start(&config, meta(), Some(dir.path()), 0, None, ()).unwrap();
    let stored = leader.publish_steps(&publisher, 20);
    publisher.wait_stored(stored, WAIT).unwrap();
    drop(publisher);
    // Journaled, never published: the process died in between.
    for _ in 0..20 {
        leader.step();
    }
    let end = leader.ledger.last_seq();
    leader.writer.sync().unwrap();
    let publisher = Publisher::start(&config, meta(), Some(dir.path()), end, None, ()).unwrap();
    assert_eq!(publisher.stored_seq(), end);
    let end = leader.publish_steps(&publisher, 5);
    publisher.wait_stored(end, WAIT).unwrap();

    let follower_dir = tempfile::tempdir().unwrap();
    let follower = follow_to(&config, follower_dir.path(), end);
    assert_eq!(follower.digest(), leader.ledger.digest());
}

#[test]
fn a_leader_behind_the_stream_is_not_the_leader() {
    let cluster = Cluster::start(3);
    let config = config(&cluster, "behind");
    let dir = tempfile::tempdir().unwrap();
    let mut leader = Leader::open(dir.path(), 3);
    let publisher = Publisher::start(&config, meta(), Some(dir.path()), 0, None, ()).unwrap();
    let stored = leader.publish_steps(&publisher, 3);
    publisher.wait_stored(stored, WAIT).unwrap();
    drop(publisher);
    let stale = tempfile::tempdir().unwrap();
    match Publisher::start(&config, meta(), Some(stale.path()), 0, None, ()) {
        Err(ReplicationError::NotLeader(why)) => assert!(why.contains("another process"), "{why}"),
        Err(e) => panic!("expected NotLeader, got {e}"),
        Ok(_) => panic!("a leader behind the stream was allowed to extend it"),
    }
}

#[test]
fn follow_command_applies_the_stream_and_stops_cleanly_on_sigterm() {
    let cluster = Cluster::start(3);
    let config = config(&cluster, "cli");
    let leader_dir = tempfile::tempdir().unwrap();
    let mut leader = Leader::open(leader_dir.path(), 11);
    let publisher =
        Publisher::start(&config, meta(), Some(leader_dir.path()), 0, None, ()).unwrap();
    let end = leader.publish_steps(&publisher, 50);
    publisher.wait_stored(end, WAIT).unwrap();

    let follower_dir = tempfile::tempdir().unwrap();
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_ringledger"))
        .args([
            "follow",
            "--nats",
            &cluster.url(),
            "--stream",
            "cli",
            "--journal-dir",
        ])
        .arg(follower_dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let applied = journal::replay(follower_dir.path(), LedgerConfig::default(), false)
            .map_or(0, |r| r.recovered.ledger.last_seq());
        if applied == end {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "follow applied only {applied} of {end}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: plain kill(2) of our own child by its pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    let output = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stderr}");
    let digest = format!("digest {:016x}", leader.ledger.digest());
    assert!(
        stderr.contains(&format!("stopped at seq {end}")) && stderr.contains(&digest),
        "expected seq {end} and {digest} in:\n{stderr}"
    );
}

/// What a publisher did with each item, in order.
#[derive(Clone, Default)]
struct Log(std::sync::Arc<std::sync::Mutex<Vec<String>>>);

impl Log {
    fn lines(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }
}

impl Release for Log {
    type Item = u64;
    type Settles = u64;

    fn settles(item: &u64) -> u64 {
        *item
    }

    fn settle(&mut self, item: u64) {
        self.0.lock().unwrap().push(format!("settled {item}"));
    }

    fn stored(&mut self, item: u64) {
        self.0.lock().unwrap().push(format!("stored {item}"));
    }

    fn refused(&mut self, item: u64, why: &ReplicationError) {
        let why = match why {
            ReplicationError::Unavailable(why) if why.contains("backlog is full") => "backlog",
            _ => "other",
        };
        self.0
            .lock()
            .unwrap()
            .push(format!("refused {item}: {why}"));
    }
}

#[test]
fn items_passed_without_a_frame_are_refused_after_every_item_handed_before_them() {
    let cluster = Cluster::start(3);
    let config = config(&cluster, "pass");
    let dir = tempfile::tempdir().unwrap();
    let mut leader = Leader::open(dir.path(), 17);
    let log = Log::default();
    let publisher =
        Publisher::start(&config, meta(), Some(dir.path()), 0, None, log.clone()).unwrap();
    let mut expected = Vec::new();
    for i in 0..100 {
        let last = leader.step();
        publisher.publish(leader.writer.last_frame(), last, 2 * i);
        publisher.pass(2 * i + 1);
        expected.extend([
            format!("settled {}", 2 * i),
            format!("stored {}", 2 * i),
            format!("refused {}: backlog", 2 * i + 1),
        ]);
    }
    publisher
        .wait_stored(leader.ledger.last_seq(), WAIT)
        .unwrap();
    let deadline = std::time::Instant::now() + WAIT;
    while log.lines().len() < expected.len() && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(log.lines(), expected);
    drop(publisher);

    // Nothing but frames reached the stream.
    let follower_dir = tempfile::tempdir().unwrap();
    let follower = follow_to(&config, follower_dir.path(), leader.ledger.last_seq());
    assert_eq!(follower.digest(), leader.ledger.digest());
}

fn replicated_engine(config: &ReplicationConfig, dir: &Path) -> Engine {
    Engine::builder()
        .journal(dir, Durability::Async)
        .replicated(config.clone())
        .start()
        .unwrap()
}

#[test]
fn a_replicated_engine_and_its_follower_reach_the_same_digest() {
    let cluster = Cluster::start(3);
    let config = config(&cluster, "engine");
    let dir = tempfile::tempdir().unwrap();
    let engine = replicated_engine(&config, dir.path());
    std::thread::scope(|scope| {
        for gateway in 0..4u64 {
            let engine = &engine;
            scope.spawn(move || {
                let mut client = engine.client().unwrap();
                let mut workload = Workload::new(gateway + 1);
                for _ in 0..20 {
                    let batch = workload.batch();
                    for stamped in &batch {
                        match stamped.request {
                            // Credits are the rebate thread's to send.
                            Request::CreditRebate { .. } => {}
                            request => client.send(request).unwrap(),
                        }
                    }
                    while client.in_flight() > 0 {
                        let outcome = client.recv().unwrap();
                        assert!(
                            !matches!(outcome, Err(Reject::Unavailable | Reject::NotLeader)),
                            "{outcome:?}"
                        );
                    }
                }
                client.barrier().unwrap();
            });
        }
    });
    let ledger = engine.shutdown().unwrap();
    assert_eq!(ledger.pending_rebates_len(), 0);
    let follower_dir = tempfile::tempdir().unwrap();
    let follower = follow_to(&config, follower_dir.path(), ledger.last_seq());
    assert_eq!(follower.digest(), ledger.digest());
}

/// Sends a deposit numbered `req` until it is acknowledged (answered ok, or
/// `duplicate` of an ok: an earlier try was stored after all); returns the
/// `unavailable` answers seen on the way.
fn deposit_until_acknowledged(client: &mut ringledger::Client, req: u64) -> usize {
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    let mut unavailable = 0;
    loop {
        let outcome: Outcome = client
            .call_numbered(
                Request::Deposit {
                    account: 1,
                    amount: 100,
                },
                req,
            )
            .unwrap();
        match outcome {
            Ok(_) => return unavailable,
            Err(Reject::Duplicate { original, .. }) => {
                assert_eq!(original.map(|a| a.as_str()), Some("ok"));
                return unavailable;
            }
            Err(Reject::Unavailable) => unavailable += 1,
            Err(other) => panic!("deposit {req}: {other:?}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "deposit {req} never acknowledged"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn writes_go_on_without_one_node_stop_without_two_and_resume_with_a_quorum() {
    let mut cluster = Cluster::start(3);
    let config = config(&cluster, "quorum");
    let dir = tempfile::tempdir().unwrap();
    let engine = replicated_engine(&config, dir.path());
    let mut client = engine.session("quorum").unwrap();
    client
        .call_numbered(Request::OpenAccount { account: 1 }, 1)
        .unwrap()
        .unwrap();
    let mut req = 1;

    cluster.kill(0);
    for _ in 0..20 {
        req += 1;
        deposit_until_acknowledged(&mut client, req);
    }

    // No quorum: the next deposit is answered `unavailable`, never ok.
    cluster.kill(1);
    req += 1;
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        match client
            .call_numbered(
                Request::Deposit {
                    account: 1,
                    amount: 100,
                },
                req,
            )
            .unwrap()
        {
            Err(Reject::Unavailable) => break,
            // Stored before the quorum noticed it was gone: the next one.
            Ok(_) => req += 1,
            other => panic!("without a quorum: {other:?}"),
        }
        assert!(std::time::Instant::now() < deadline, "never unavailable");
    }

    // A quorum again: the same request is acknowledged (as a duplicate of
    // its applied, now stored, first try), and new ones are too.
    cluster.restart(1);
    deposit_until_acknowledged(&mut client, req);
    req += 1;
    deposit_until_acknowledged(&mut client, req);
    drop(client);
    let ledger = engine.shutdown().unwrap();
    cluster.restart(0);
    cluster.wait_ready();
    let follower_dir = tempfile::tempdir().unwrap();
    let follower = follow_to(&config, follower_dir.path(), ledger.last_seq());
    assert_eq!(follower.digest(), ledger.digest());
}

#[test]
fn a_fenced_engine_answers_not_leader_and_stops() {
    let cluster = Cluster::start(3);
    let config = config(&cluster, "fenced");
    let dir = tempfile::tempdir().unwrap();
    let engine = replicated_engine(&config, dir.path());
    let mut client = engine.client().unwrap();
    client
        .call(Request::OpenAccount { account: 1 })
        .unwrap()
        .unwrap();

    // Another process catches up with the stream and extends it.
    let caught_up_dir = tempfile::tempdir().unwrap();
    let caught_up = follow_to_end(&config, caught_up_dir.path());
    let last = caught_up.last_seq();
    let rival_dir = tempfile::tempdir().unwrap();
    let mut rival = Leader::open(rival_dir.path(), 5);
    // Its journal goes on from the caught-up state's chain (format 4: a
    // writer continues the chain of the state it was restored to).
    let head = journal::recover(caught_up_dir.path(), LedgerConfig::default())
        .unwrap()
        .chain_head;
    assert_eq!(head.seq, last);
    rival.writer.resume(head).unwrap();
    rival.workload.seq = last;
    rival.workload.time_ms = caught_up.now_ms();
    rival.ledger = caught_up;
    let publisher = Publisher::start(&config, meta(), None, last, None, ()).unwrap();
    let rival_end = rival.publish_steps(&publisher, 1);
    publisher.wait_stored(rival_end, WAIT).unwrap();

    let outcome = client
        .call(Request::Deposit {
            account: 1,
            amount: 5,
        })
        .unwrap();
    assert_eq!(outcome, Err(Reject::NotLeader));
    match client.call(Request::Balance { account: 1 }) {
        Err(EngineError::NotLeader(why)) => assert!(why.contains("another process"), "{why}"),
        other => panic!("expected NotLeader, got {other:?}"),
    }
    assert!(matches!(engine.shutdown(), Err(EngineError::NotLeader(_))));
}

/// A follower's state once it has applied everything the stream holds.
fn follow_to_end(config: &ReplicationConfig, dir: &Path) -> Ledger {
    let mut follower = support::nats::open_follower(config, dir);
    follower
        .run(Duration::from_millis(100), |progress, _| {
            progress.stream_seq == 0 || progress.lag_frames > 0
        })
        .unwrap();
    follower.close().unwrap()
}

/// Waits for a barrier (every rebate owed credited and stored) on a thread
/// of its own, so that a barrier that never returns fails the test instead
/// of hanging it. True if it returned within `limit`.
fn barrier_within(engine: &Engine, limit: Duration) -> bool {
    let mut client = engine.client().unwrap();
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done_tx.send(client.barrier());
    });
    match done_rx.recv_timeout(limit) {
        Ok(result) => {
            result.unwrap();
            true
        }
        // Left parked: the engine's shutdown wakes it.
        Err(_) => false,
    }
}

fn balance(client: &mut ringledger::Client, account: u64) -> i64 {
    match client.call(Request::Balance { account }).unwrap() {
        Ok(ringledger::Reply::Balance { balance, .. }) => balance,
        other => panic!("expected a balance, got {other:?}"),
    }
}

#[test]
fn credits_refused_during_an_outage_settle_once_their_frame_is_stored() {
    let mut cluster = Cluster::start(3);
    let config = config(&cluster, "credits");
    let dir = tempfile::tempdir().unwrap();
    let engine = replicated_engine(&config, dir.path());
    let mut client = engine.session("credits").unwrap();
    client
        .call_numbered(Request::OpenAccount { account: 1 }, 1)
        .unwrap()
        .unwrap();

    // No quorum: the deposit is applied and journaled here, and answered
    // `unavailable`; so is the frame of its rebate credit, applied a moment
    // later.
    cluster.kill(0);
    cluster.kill(1);
    let deposit = Request::Deposit {
        account: 1,
        amount: 10_000,
    };
    assert_eq!(
        client.call_numbered(deposit, 2).unwrap(),
        Err(Reject::Unavailable)
    );
    assert!(
        !barrier_within(&engine, Duration::from_secs(5)),
        "a credit counted as settled while the stream could not store it"
    );

    // A quorum again: both frames are published and stored. Nothing else
    // is sent, so no later outcome settles the credit on its way.
    cluster.restart(0);
    cluster.restart(1);
    cluster.wait_ready();
    assert!(
        barrier_within(&engine, Duration::from_secs(60)),
        "the barrier never saw the credit of a frame stored after its refusal"
    );
    match client.call_numbered(deposit, 2).unwrap() {
        Err(Reject::Duplicate { .. }) => {}
        other => panic!("the retry of the stored deposit: {other:?}"),
    }
    assert_eq!(balance(&mut client, 1), 10_100);
    drop(client);
    let ledger = engine.shutdown().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let follower = follow_to(&config, follower_dir.path(), ledger.last_seq());
    assert_eq!(follower.digest(), ledger.digest());
}

#[test]
fn a_long_outage_sheds_requests_past_the_backlog_bound_and_retries_apply_once() {
    const BOUND: u64 = 2_000;
    const BATCH_MAX: u64 = 256;
    const REBATES_OWED_MAX: u64 = 256;
    const DEPOSITS: u64 = 3 * BOUND;
    const WINDOW: u64 = 1_000;
    let mut cluster = Cluster::start(3);
    let config = config(&cluster, "backlog");
    let dir = tempfile::tempdir().unwrap();
    let engine = Engine::builder()
        .journal(dir.path(), Durability::Async)
        .replicated(config.clone())
        .replication_backlog_max(BOUND as usize)
        .batch_max(BATCH_MAX as usize)
        .rebate_backlog_max(REBATES_OWED_MAX as usize)
        .start()
        .unwrap();
    let gauges = engine.gauges();
    let mut client = engine.session("backlog").unwrap();
    client
        .call_numbered(Request::OpenAccount { account: 1 }, 1)
        .unwrap()
        .unwrap();
    let deposit = Request::Deposit {
        account: 1,
        amount: 100,
    };

    // No quorum for the whole flood: every deposit is answered
    // `unavailable` (the first ones applied and waiting in the backlog,
    // the rest shed), each within the stream's timeouts.
    cluster.kill(0);
    cluster.kill(1);
    let reqs = 2..2 + DEPOSITS;
    for window in reqs.clone().collect::<Vec<_>>().chunks(WINDOW as usize) {
        for &req in window {
            client.send_numbered(deposit, req).unwrap();
        }
        for &req in window {
            let outcome = client
                .recv_timeout(Duration::from_secs(30))
                .unwrap()
                .unwrap_or_else(|| panic!("deposit {req} was not answered within 30 s"));
            assert_eq!(outcome, Err(Reject::Unavailable), "deposit {req}");
        }
        // The backlog holds at most the bound, the batch that crossed it
        // and the credits of the rebates owed then.
        let peak = gauges.replication_backlog_peak();
        assert!(
            peak <= BOUND + BATCH_MAX + REBATES_OWED_MAX,
            "{peak} records waited for the stream (bound {BOUND})"
        );
    }
    assert!(
        gauges.replication_backlog() >= BOUND,
        "the flood never filled the backlog: {} records",
        gauges.replication_backlog()
    );

    // A quorum again: every request resent with its number is applied
    // exactly once (a duplicate if it was applied during the outage).
    cluster.restart(0);
    cluster.restart(1);
    cluster.wait_ready();
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    for req in reqs {
        loop {
            match client.call_numbered(deposit, req).unwrap() {
                Ok(_) => break,
                Err(Reject::Duplicate { original, .. }) => {
                    // `original` is forgotten beyond the session's window.
                    assert!(original.is_none_or(|o| o.as_str() == "ok"), "{original:?}");
                    break;
                }
                Err(Reject::Unavailable) => {
                    assert!(
                        std::time::Instant::now() < deadline,
                        "deposit {req} never acknowledged"
                    );
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(other) => panic!("deposit {req}: {other:?}"),
            }
        }
    }
    assert!(
        barrier_within(&engine, Duration::from_secs(60)),
        "the rebates were never settled"
    );
    // 1.00 each, and its rebate of 0.01, once.
    assert_eq!(balance(&mut client, 1), 101 * DEPOSITS as i64);
    assert_eq!(gauges.replication_backlog(), 0);
    drop(client);
    let ledger = engine.shutdown().unwrap();
    assert_eq!(ledger.pending_rebates_len(), 0);
    let follower_dir = tempfile::tempdir().unwrap();
    let follower = follow_to(&config, follower_dir.path(), ledger.last_seq());
    assert_eq!(follower.digest(), ledger.digest());
}
