//! The follower's side of replication on a real 3-node JetStream cluster
//! (started by each test, see `support/nats.rs`): its journal holds the
//! leader's very frames and chain, a frame that does not extend the chain
//! is refused, an empty follower starts from the snapshot in the object
//! store when the stream no longer holds the start, and `follow --metrics`
//! answers a real scrape.

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use ringledger::journal::{self, ChainHead, Durability, JournalConfig, JournalWriter};
use ringledger::replication::{Publisher, ReplicationConfig, ReplicationError};
use ringledger::LedgerConfig;
use support::leader::{follow_to, meta, Leader, WAIT};
use support::nats::{open_follower, Cluster};
use support::prometheus::{get, metrics_addr, parse, sample};

fn config(cluster: &Cluster, stream: &str) -> ReplicationConfig {
    ReplicationConfig::new(cluster.url(), stream).replicas(3)
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

async fn jetstream(config: &ReplicationConfig) -> async_nats::jetstream::Context {
    let addrs: Vec<async_nats::ServerAddr> =
        config.url.split(',').map(|u| u.parse().unwrap()).collect();
    let client = async_nats::ConnectOptions::new()
        .connect(addrs)
        .await
        .unwrap();
    async_nats::jetstream::new(client)
}

/// Publishes `frame` to the stream as a leader would (expecting the
/// stream's last sequence, with ringledger's headers), but from a process
/// that is not the leader: a forger.
fn publish_forged(config: &ReplicationConfig, frame: &[u8], last_seq: u64) {
    runtime().block_on(async {
        let js = jetstream(config).await;
        let mut stream = js.get_stream(&config.stream).await.unwrap();
        let last = stream.info().await.unwrap().state.last_sequence;
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
            last.to_string().as_str(),
        );
        headers.insert("Ringledger-Leader", "forger");
        headers.insert("Ringledger-Last-Seq", last_seq.to_string().as_str());
        js.publish_with_headers(
            config.subject(),
            headers,
            bytes::Bytes::copy_from_slice(frame),
        )
        .await
        .unwrap()
        .await
        .unwrap();
    });
}

/// The head line `ringledger verify` prints for `dir`.
fn verify_head(dir: &Path) -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_ringledger"))
        .args(["verify", "--journal-dir"])
        .arg(dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).to_string();
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
        .lines()
        .find(|l| l.starts_with("head "))
        .unwrap_or_else(|| panic!("no head in:\n{stdout}"))
        .to_string()
}

#[test]
fn the_followers_journal_holds_the_leaders_frames_and_chain_head() {
    let cluster = Cluster::start(3);
    let config = config(&cluster, "same-head");
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let mut leader = Leader::open(leader_dir.path(), 21);
    let publisher =
        Publisher::start(&config, meta(), Some(leader_dir.path()), 0, None, ()).unwrap();
    for _ in 0..10 {
        leader.publish_steps(&publisher, 10);
        // The frames after a sync say so in their durable seq, which is
        // hashed: a follower must journal it as the leader wrote it.
        leader.writer.sync().unwrap();
    }
    publisher
        .wait_stored(leader.ledger.last_seq(), WAIT)
        .unwrap();
    drop(publisher);
    // Journaled, never published (the leader died in between): the
    // restarted leader publishes them from its journal first.
    for _ in 0..15 {
        leader.step();
    }
    leader.writer.sync().unwrap();
    let journaled = leader.ledger.last_seq();
    let publisher = Publisher::start(
        &config,
        meta(),
        Some(leader_dir.path()),
        journaled,
        None,
        (),
    )
    .unwrap();
    let end = leader.publish_steps(&publisher, 10);
    publisher.wait_stored(end, WAIT).unwrap();

    let follower = follow_to(&config, follower_dir.path(), end);
    assert_eq!(follower.digest(), leader.ledger.digest());
    let frames = |dir: &Path| -> Vec<journal::RawFrame> {
        journal::read_frames(dir, 1)
            .unwrap()
            .map(Result::unwrap)
            .collect()
    };
    let leader_frames = frames(leader_dir.path());
    assert_eq!(leader_frames.last().map(|f| f.last_seq), Some(end));
    assert!(
        leader_frames == frames(follower_dir.path()),
        "the follower's frames differ from the leader's"
    );
    let verified = |dir: &Path| journal::verify(dir, LedgerConfig::default()).unwrap();
    let (on_leader, on_follower) = (verified(leader_dir.path()), verified(follower_dir.path()));
    assert_eq!(on_follower.head, leader.writer.chain_head());
    assert_eq!(on_follower.head, on_leader.head);
    assert_eq!(on_follower.digest, on_leader.digest);
    assert_eq!(
        verify_head(follower_dir.path()),
        verify_head(leader_dir.path())
    );
}

#[test]
fn a_frame_that_does_not_extend_the_chain_is_refused_and_nothing_of_it_applied() {
    let cluster = Cluster::start(3);
    let config = config(&cluster, "spliced");
    let leader_dir = tempfile::tempdir().unwrap();
    let mut leader = Leader::open(leader_dir.path(), 5);
    let publisher =
        Publisher::start(&config, meta(), Some(leader_dir.path()), 0, None, ()).unwrap();
    let last = leader.publish_steps(&publisher, 10);
    publisher.wait_stored(last, WAIT).unwrap();
    drop(publisher);
    let head = leader.writer.chain_head();
    let digest = leader.ledger.digest();

    // The next records, in a frame of another journal: its own checksum
    // holds and its seqs follow on, but its parent is that journal's.
    let forger_dir = tempfile::tempdir().unwrap();
    let mut forger = JournalWriter::open(
        forger_dir.path(),
        JournalConfig {
            durability: Durability::Async,
            ..JournalConfig::default()
        },
    )
    .unwrap();
    forger
        .resume(ChainHead {
            seq: last,
            checksum: head.checksum ^ 1,
        })
        .unwrap();
    let batch = leader.workload.batch();
    forger.append(&batch).unwrap();
    let forged_last = batch.last().unwrap().stamp.seq;
    publish_forged(&config, forger.last_frame(), forged_last);

    let follower_dir = tempfile::tempdir().unwrap();
    for attempt in ["first run", "after a restart"] {
        let mut follower = open_follower(&config, follower_dir.path());
        let deadline = Instant::now() + WAIT;
        let refused = follower.run(Duration::from_millis(100), |progress, _| {
            assert!(
                Instant::now() < deadline,
                "{attempt}: the forged frame was not refused: {progress:?}"
            );
            true
        });
        match refused {
            Err(ReplicationError::Journal(e)) => {
                let why = e.to_string();
                assert!(
                    why.contains("chain broken")
                        && why.contains("stream spliced sequence 11")
                        && why.contains(&head.to_string()),
                    "{attempt}: {why}"
                );
            }
            other => panic!("{attempt}: expected the chain error, got {other:?}"),
        }
        assert_eq!(follower.ledger().last_seq(), last, "{attempt}");
        assert_eq!(follower.chain_head(), head, "{attempt}");
        assert_eq!(follower.ledger().digest(), digest, "{attempt}");
        drop(follower);
        // Nothing of the forged frame reached the follower's journal.
        let recovered = journal::recover(follower_dir.path(), LedgerConfig::default()).unwrap();
        assert_eq!(recovered.chain_head, head, "{attempt}");
        assert_eq!(recovered.ledger.digest(), digest, "{attempt}");
    }
}

/// Deletes the stream's messages up to (not including) the last `keep`.
fn purge_keeping(config: &ReplicationConfig, keep: u64) {
    runtime().block_on(async {
        let js = jetstream(config).await;
        let stream = js.get_stream(&config.stream).await.unwrap();
        stream.purge().keep(keep).await.unwrap();
    });
}

/// Runs a follower (already open) until it has applied `seq`.
fn run_to(follower: &mut ringledger::replication::Follower, seq: u64) {
    let deadline = Instant::now() + WAIT;
    follower
        .run(Duration::from_millis(100), |progress, _| {
            assert!(
                Instant::now() < deadline,
                "stuck at {progress:?}, want {seq}"
            );
            progress.applied_seq < seq
        })
        .unwrap();
}

#[test]
fn an_empty_follower_starts_from_the_object_store_snapshot_once_the_stream_lost_its_start() {
    let cluster = Cluster::start(3);
    let config = config(&cluster, "bootstrap");
    let leader_dir = tempfile::tempdir().unwrap();
    let mut leader = Leader::open(leader_dir.path(), 77);
    let publisher =
        Publisher::start(&config, meta(), Some(leader_dir.path()), 0, None, ()).unwrap();
    let first_part = leader.publish_steps(&publisher, 100);
    publisher.wait_stored(first_part, WAIT).unwrap();

    // A follower that keeps up stores its snapshots in the object store.
    let keeper_dir = tempfile::tempdir().unwrap();
    let mut keeper = open_follower(&config, keeper_dir.path())
        .store_snapshots()
        .unwrap();
    assert_eq!(keeper.bootstrapped_from(), None, "nothing stored yet");
    run_to(&mut keeper, first_part);
    let snapshot_head = keeper.chain_head();
    keeper.close().unwrap();

    // The stream drops everything the snapshot covers, and goes on.
    let later = 50;
    let end = leader.publish_steps(&publisher, later);
    publisher.wait_stored(end, WAIT).unwrap();
    purge_keeping(&config, later as u64);

    let new_dir = tempfile::tempdir().unwrap();
    let mut new = open_follower(&config, new_dir.path());
    assert_eq!(new.bootstrapped_from(), Some(snapshot_head));
    assert_eq!(new.ledger().last_seq(), first_part);
    run_to(&mut new, end);
    let ledger = new.close().unwrap();
    assert_eq!(ledger.digest(), leader.ledger.digest());
    // Its journal starts after the snapshot and continues the leader's chain.
    let verified = journal::verify(new_dir.path(), LedgerConfig::default()).unwrap();
    assert_eq!(verified.first_seq, Some(first_part + 1));
    assert_eq!(verified.head, leader.writer.chain_head());

    // Without the snapshot, an empty follower cannot come up: the stream
    // no longer holds the first records.
    runtime().block_on(async {
        let js = jetstream(&config).await;
        js.delete_object_store(&config.stream).await.unwrap();
    });
    let bare_dir = tempfile::tempdir().unwrap();
    let mut bare = open_follower(&config, bare_dir.path());
    assert_eq!(bare.bootstrapped_from(), None);
    let deadline = Instant::now() + WAIT;
    match bare.run(Duration::from_millis(100), |progress, _| {
        assert!(Instant::now() < deadline, "not refused: {progress:?}");
        true
    }) {
        Err(ReplicationError::Journal(e)) => {
            let why = e.to_string();
            assert!(
                why.contains(&format!("no longer holds seqs 1..={first_part}"))
                    && why.contains("object store bucket bootstrap"),
                "{why}"
            );
        }
        other => panic!("expected a clear refusal, got {other:?}"),
    }
    assert_eq!(bare.ledger().last_seq(), 0);
}

#[test]
fn a_damaged_snapshot_in_the_object_store_is_refused_by_name() {
    let cluster = Cluster::start(3);
    let config = config(&cluster, "rotten");
    let leader_dir = tempfile::tempdir().unwrap();
    let mut leader = Leader::open(leader_dir.path(), 3);
    let publisher =
        Publisher::start(&config, meta(), Some(leader_dir.path()), 0, None, ()).unwrap();
    let end = leader.publish_steps(&publisher, 5);
    publisher.wait_stored(end, WAIT).unwrap();
    let keeper_dir = tempfile::tempdir().unwrap();
    let mut keeper = open_follower(&config, keeper_dir.path())
        .store_snapshots()
        .unwrap();
    run_to(&mut keeper, end);
    keeper.close().unwrap();

    // The same object name, other bytes: a well-formed object (its digest
    // matches) whose snapshot does not check out.
    let name = format!("snapshot-{end:020}");
    runtime().block_on(async {
        let js = jetstream(&config).await;
        let store = js.get_object_store(&config.stream).await.unwrap();
        let mut object = store.get(&name).await.unwrap();
        let mut bytes = Vec::new();
        tokio::io::AsyncReadExt::read_to_end(&mut object, &mut bytes)
            .await
            .unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0x40;
        let metadata = object.info().metadata.clone();
        store
            .put(
                async_nats::jetstream::object_store::ObjectMetadata {
                    name: name.clone(),
                    metadata,
                    ..Default::default()
                },
                &mut bytes.as_slice(),
            )
            .await
            .unwrap();
    });
    let new_dir = tempfile::tempdir().unwrap();
    match ringledger::replication::Follower::open(&config, new_dir.path()) {
        Err(ReplicationError::Journal(e)) => {
            let why = e.to_string();
            assert!(
                why.contains(&name) && why.contains("payload checksum mismatch"),
                "{why}"
            );
        }
        Err(e) => panic!("expected a journal error, got {e}"),
        Ok(_) => panic!("a damaged snapshot was accepted"),
    }
    // Nothing was written.
    let left: Vec<_> = std::fs::read_dir(new_dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|name| name.ends_with(".snap") || name.ends_with(".seg"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn follow_metrics_answer_a_real_scrape() {
    let cluster = Cluster::start(3);
    let config = config(&cluster, "scraped");
    let leader_dir = tempfile::tempdir().unwrap();
    let mut leader = Leader::open(leader_dir.path(), 13);
    let publisher =
        Publisher::start(&config, meta(), Some(leader_dir.path()), 0, None, ()).unwrap();
    let end = leader.publish_steps(&publisher, 40);
    publisher.wait_stored(end, WAIT).unwrap();
    let frame_bytes: usize = journal::read_frames(leader_dir.path(), 1)
        .unwrap()
        .map(|f| f.unwrap().bytes.len())
        .sum();

    let follower_dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_ringledger"))
        .args(["follow", "--nats", &cluster.url(), "--stream", "scraped"])
        .args(["--metrics", "127.0.0.1:0", "--journal-dir"])
        .arg(follower_dir.path())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    let addr = metrics_addr(&line);
    // Keep reading stderr, so the follower never blocks on a full pipe.
    let log = std::thread::spawn(move || {
        let mut rest = String::new();
        let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
        rest
    });

    // Scrape until the follower has journaled every frame and its
    // background fdatasync has run once (waited for, not timed).
    let deadline = Instant::now() + WAIT;
    let m = loop {
        let (status, content_type, body) = get(&addr, "/metrics");
        assert_eq!(status, 200, "{body}");
        assert!(
            content_type.starts_with("text/plain; version=0.0.4"),
            "{content_type}"
        );
        let m = parse(&body);
        let journaled = sample(&m, "ringledger_journal_bytes_written_total", &[]);
        let fsyncs = sample(&m, "ringledger_journal_fsync_seconds_count", &[]);
        let lag = sample(&m, "ringledger_replication_lag_frames", &[]);
        if journaled == frame_bytes as f64 && fsyncs >= 1.0 && lag == 0.0 {
            break m;
        }
        assert!(
            journaled <= frame_bytes as f64,
            "journaled {journaled} bytes, the leader's frames are {frame_bytes}"
        );
        assert!(Instant::now() < deadline, "follower stuck:\n{body}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(sample(&m, "ringledger_role", &[("role", "follower")]), 1.0);
    assert_eq!(sample(&m, "ringledger_role", &[("role", "leader")]), 0.0);
    assert_eq!(
        sample(
            &m,
            "ringledger_journal_fsync_seconds_bucket",
            &[("le", "+Inf")]
        ),
        sample(&m, "ringledger_journal_fsync_seconds_count", &[])
    );
    // A follower takes no requests of its own.
    assert_eq!(
        sample(&m, "ringledger_requests_total", &[("op", "deposit")]),
        0.0
    );
    assert_eq!(get(&addr, "/").0, 404);

    // SAFETY: plain kill(2) of our own child by its pid.
    unsafe {
        libc::kill(child.id() as i32, libc::SIGTERM);
    }
    assert!(child.wait().unwrap().success());
    let log = log.join().unwrap();
    let digest = format!("digest {:016x}", leader.ledger.digest());
    assert!(
        log.contains(&format!("stopped at seq {end}")) && log.contains(&digest),
        "{log}"
    );
}
