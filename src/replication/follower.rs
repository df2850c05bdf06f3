//! The follower's side: consumes the stream in order, checks each frame
//! (checksum, seqs following on from what it applied, and its parent: the
//! journal's hash chain), applies it to its own Ledger and appends it, as it
//! is, to its own journal, with snapshots, so it can restart from its own
//! disk and resume where it stopped. Its journal holds the leader's very
//! frames, so at every seq its chain head is the leader's (`ringledger
//! verify` prints the same head on both directories).
//!
//! A follower with an empty disk starts from the newest snapshot in the
//! stream's object store bucket, if there is one (see
//! [`super::snapshot_store`]), and reads the stream from there on.
//!
//! A follower has no business thread to protect: it runs on the caller's
//! thread and waits for the network there.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull::OrderedConfig, DeliverPolicy};
use async_nats::jetstream::stream::Stream;
use futures_util::StreamExt;
use tokio::runtime::Runtime;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;

use super::lease::{self, Lease, LeaseBucket, LeaseConfig};
use super::snapshot_store::{bucket_name, SnapshotStore};
use super::{
    connect, leader_id, leader_stream, message_stamp, runtime, stream_meta, tail_at_start,
    unavailable, ReplicationConfig, ReplicationError, HEADER_LAST_SEQ, HEADER_LEADER,
};
use crate::journal::{self, ChainHead, Durability, JournalConfig, JournalError, JournalWriter};
use crate::ledger::Ledger;
use crate::metrics::JournalMetrics;
use crate::request::Stamped;

/// How far a follower has come, reported after every frame and, while the
/// stream is quiet, once per tick.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FollowProgress {
    /// The last journal seq applied (and journaled) here.
    pub applied_seq: u64,
    /// The stream sequence of the last frame applied (0: none yet this run).
    pub stream_seq: u64,
    /// Frames the stream holds beyond it, as the server last said.
    pub lag_frames: u64,
}

/// A follower of one stream, with its own journal directory (locked while
/// it lives, like an engine's).
pub struct Follower {
    config: ReplicationConfig,
    rt: Runtime,
    stream: Stream,
    ledger: Ledger,
    writer: JournalWriter,
    /// The journal's hash chain at the last seq applied: the parent the
    /// next frame must name.
    head: ChainHead,
    dir: PathBuf,
    /// Where snapshots are stored for new followers, if this one does.
    snapshot_store: Option<SnapshotStore>,
    /// The snapshot an empty disk started from (object store), if any.
    bootstrapped: Option<ChainHead>,
    snapshot_every: Option<u64>,
    snapshots_kept: usize,
    last_snapshot_seq: u64,
    progress: FollowProgress,
    batch: Vec<Stamped>,
}

/// Connects to the stream (with a runtime of its own) and checks it was
/// made for `meta`; with `create`, the stream is made if it does not exist
/// yet.
fn open_stream(
    config: &ReplicationConfig,
    meta: crate::journal::Meta,
    create: bool,
) -> Result<(Runtime, Stream), ReplicationError> {
    let rt = runtime()?;
    let stream = rt.block_on(async {
        let js = connect(config).await?;
        if create {
            return leader_stream(&js, config, meta).await;
        }
        let stream = js.get_stream(&config.stream).await.map_err(|e| {
            unavailable(
                &format!("cannot open stream {} to take over", config.stream),
                e,
            )
        })?;
        let found = stream_meta(config, &stream)?;
        if found != meta {
            return Err(ReplicationError::Config(format!(
                "stream {} holds a journal written with {found:?}, this engine runs with {meta:?}",
                config.stream
            )));
        }
        Ok(stream)
    })?;
    Ok((rt, stream))
}

/// Retries `open` while the stream or bucket is unavailable (a busy
/// cluster, an election), up to [`STANDBY_OPEN_WAIT`].
fn retry_unavailable<T>(
    what: &str,
    mut open: impl FnMut() -> Result<T, ReplicationError>,
) -> Result<T, ReplicationError> {
    let deadline = Instant::now() + STANDBY_OPEN_WAIT;
    loop {
        match open() {
            Err(ReplicationError::Unavailable(why)) if Instant::now() < deadline => {
                eprintln!("ringledger: {what}: {why}; retrying");
                std::thread::sleep(Duration::from_millis(500));
            }
            opened => return opened,
        }
    }
}

/// How long a standby keeps trying to reach the stream and the lease bucket
/// when it starts.
const STANDBY_OPEN_WAIT: Duration = Duration::from_secs(60);

impl Follower {
    /// Connects to the stream (which must exist: the leader creates it),
    /// takes the journal settings from it, and recovers the local journal in
    /// `journal_dir` (created if missing). An empty disk starts from the
    /// newest snapshot in the stream's object store bucket, checked, if
    /// there is one ([`Self::bootstrapped_from`]), else from the stream's
    /// first frame.
    pub fn open(
        config: &ReplicationConfig,
        journal_dir: impl AsRef<Path>,
    ) -> Result<Follower, ReplicationError> {
        let dir = journal_dir.as_ref().to_path_buf();
        let rt = runtime()?;
        let (stream, meta) = rt.block_on(async {
            let js = connect(config).await?;
            let stream = js.get_stream(&config.stream).await.map_err(|e| {
                unavailable(
                    &format!(
                        "cannot open stream {} (a leader creates it when it starts)",
                        config.stream
                    ),
                    e,
                )
            })?;
            let meta = stream_meta(config, &stream)?;
            Ok::<_, ReplicationError>((stream, meta))
        })?;
        std::fs::create_dir_all(&dir)
            .map_err(|e| JournalError::io(&dir, "create journal directory", e))?;
        let lock = journal::lock_dir(&dir)?;
        journal::check_meta(&dir, &meta)?;
        let recovered = journal::recover_locked(&lock, meta.ledger)?;
        for warning in &recovered.warnings {
            eprintln!("ringledger follow: journal recovery: {warning}");
        }
        let (mut ledger, mut head) = (recovered.ledger, recovered.chain_head);
        let mut bootstrapped = None;
        if ledger.last_seq() == 0 {
            let stored = rt.block_on(async {
                let js = connect(config).await?;
                match SnapshotStore::existing(&js, config).await? {
                    Some(store) => store.newest(meta.ledger).await,
                    None => Ok(None),
                }
            })?;
            if let Some(snapshot) = stored {
                journal::write_snapshot(&dir, &snapshot.ledger, snapshot.head).map_err(|e| {
                    JournalError::io(&dir, "write the snapshot fetched from the object store", e)
                })?;
                (ledger, head) = (snapshot.ledger, snapshot.head);
                bootstrapped = Some(head);
            }
        }
        let mut writer = JournalWriter::open_locked(
            lock,
            JournalConfig {
                durability: Durability::Async,
                ..JournalConfig::default()
            },
        )?;
        writer.resume(head)?;
        let applied_seq = ledger.last_seq();
        Ok(Follower {
            config: config.clone(),
            rt,
            stream,
            ledger,
            writer,
            head,
            dir,
            snapshot_store: None,
            bootstrapped,
            snapshot_every: None,
            snapshots_kept: crate::engine::SNAPSHOTS_KEPT_DEFAULT,
            last_snapshot_seq: applied_seq,
            progress: FollowProgress {
                applied_seq,
                ..FollowProgress::default()
            },
            batch: Vec::new(),
        })
    }

    /// A follower over a Ledger and journal writer its caller recovered
    /// (an engine about to take over), on a stream [`open_stream`] opened.
    fn from_parts(
        config: &ReplicationConfig,
        (rt, stream): (Runtime, Stream),
        ledger: Ledger,
        writer: JournalWriter,
    ) -> Follower {
        let applied_seq = ledger.last_seq();
        Follower {
            config: config.clone(),
            rt,
            stream,
            dir: writer.dir().to_path_buf(),
            head: writer.chain_head(),
            ledger,
            writer,
            snapshot_store: None,
            bootstrapped: None,
            snapshot_every: None,
            snapshots_kept: crate::engine::SNAPSHOTS_KEPT_DEFAULT,
            last_snapshot_seq: applied_seq,
            progress: FollowProgress {
                applied_seq,
                ..FollowProgress::default()
            },
            batch: Vec::new(),
        }
    }

    /// Writes a snapshot after every `records` applied (and at close),
    /// pruning as [`crate::EngineBuilder::snapshots_kept`] describes.
    pub fn snapshot_every(mut self, records: u64, snapshots_kept: usize) -> Follower {
        self.snapshot_every = Some(records.max(1));
        self.snapshots_kept = snapshots_kept;
        self
    }

    /// Also stores every snapshot this follower takes in the stream's object
    /// store bucket (created if missing), for new followers to start from.
    /// A snapshot that cannot be stored is reported on stderr and the
    /// follower goes on: the next one is tried again.
    pub fn store_snapshots(mut self) -> Result<Follower, ReplicationError> {
        let store = self.rt.block_on(async {
            let js = connect(&self.config).await?;
            SnapshotStore::open(&js, &self.config).await
        })?;
        self.snapshot_store = Some(store);
        Ok(self)
    }

    /// Counts the bytes this follower journals and times its fdatasyncs.
    pub fn set_metrics(&mut self, metrics: JournalMetrics) {
        self.writer.set_metrics(metrics);
    }

    /// The chain head of the object store snapshot this follower's empty
    /// disk started from (None: it started from its own disk or the stream's
    /// first frame).
    pub fn bootstrapped_from(&self) -> Option<ChainHead> {
        self.bootstrapped
    }

    /// The journal's hash chain at the last seq applied.
    pub fn chain_head(&self) -> ChainHead {
        self.head
    }

    pub fn ledger(&self) -> &Ledger {
        &self.ledger
    }

    pub fn progress(&self) -> FollowProgress {
        self.progress
    }

    /// Applies frames as the stream delivers them, calling `keep_going`
    /// after each frame and once per `tick` while none arrives; returns when
    /// it says false. A lost connection is retried (the client reconnects;
    /// the consumer is made again from what was applied); a damaged frame, a
    /// gap in the seqs or a frame that does not extend the chain (its parent
    /// is not this journal's head: forged, spliced in from another journal,
    /// or re-encoded) stops the follower with an error before the frame is
    /// journaled or applied.
    pub fn run(
        &mut self,
        tick: Duration,
        mut keep_going: impl FnMut(&FollowProgress, &Ledger) -> bool,
    ) -> Result<(), ReplicationError> {
        loop {
            let start = self.rt.block_on(self.resume_point());
            let messages = match start {
                Ok(start) => self.rt.block_on(async {
                    let consumer = self
                        .stream
                        .create_consumer(OrderedConfig {
                            filter_subject: self.config.subject(),
                            deliver_policy: DeliverPolicy::ByStartSequence {
                                start_sequence: start,
                            },
                            ..OrderedConfig::default()
                        })
                        .await
                        .map_err(|e| unavailable("cannot create a consumer", e))?;
                    consumer
                        .messages()
                        .await
                        .map_err(|e| unavailable("cannot consume", e))
                }),
                Err(ReplicationError::Unavailable(why)) => Err(ReplicationError::Unavailable(why)),
                Err(e) => return Err(e),
            };
            let mut messages = match messages {
                Ok(messages) => messages,
                Err(e) => {
                    eprintln!("ringledger follow: {e}");
                    if !keep_going(&self.progress, &self.ledger) {
                        return Ok(());
                    }
                    std::thread::sleep(tick);
                    continue;
                }
            };
            loop {
                let next = self
                    .rt
                    .block_on(async { tokio::time::timeout(tick, messages.next()).await });
                match next {
                    Err(_) => {
                        if !keep_going(&self.progress, &self.ledger) {
                            return Ok(());
                        }
                    }
                    Ok(None) => break,
                    Ok(Some(Err(e))) => {
                        eprintln!(
                            "ringledger follow: consuming stream {}: {e}; resuming",
                            self.config.stream
                        );
                        break;
                    }
                    Ok(Some(Ok(message))) => {
                        let (stream_seq, pending) = match message.info() {
                            Ok(info) => (info.stream_sequence, info.pending),
                            Err(e) => {
                                return Err(ReplicationError::Config(format!(
                                    "a message from stream {} has no JetStream metadata: {e}",
                                    self.config.stream
                                )))
                            }
                        };
                        let last_seq = message
                            .headers
                            .as_ref()
                            .and_then(|h| h.get(HEADER_LAST_SEQ))
                            .and_then(|v| v.as_str().parse::<u64>().ok());
                        self.apply(stream_seq, last_seq, &message.payload)?;
                        self.progress.stream_seq = stream_seq;
                        self.progress.lag_frames = pending;
                        if !keep_going(&self.progress, &self.ledger) {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }

    /// The stream sequence of the first message with seqs not applied here:
    /// a binary search on the last-seq header (stream sequences and journal
    /// seqs grow together).
    async fn resume_point(&self) -> Result<u64, ReplicationError> {
        let info =
            self.stream.get_info().await.map_err(|e| {
                unavailable(&format!("cannot read stream {}", self.config.stream), e)
            })?;
        let applied = self.ledger.last_seq();
        let (mut lo, mut hi) = (
            info.state.first_sequence.max(1),
            info.state.last_sequence + 1,
        );
        // Invariant: every message before `lo` is applied; `hi` and after are not.
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            let (stamp, _) = message_stamp(&self.config, &self.stream, mid).await?;
            if stamp.last_seq <= applied {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        Ok(lo)
    }

    /// Applies one message's frame, if it holds seqs not applied yet.
    fn apply(
        &mut self,
        stream_seq: u64,
        last_seq: Option<u64>,
        payload: &[u8],
    ) -> Result<(), ReplicationError> {
        let applied = self.ledger.last_seq();
        if last_seq.is_some_and(|last| last <= applied) {
            return Ok(());
        }
        let origin = PathBuf::from(format!(
            "stream {} sequence {stream_seq}",
            self.config.stream
        ));
        self.batch.clear();
        let frame = journal::decode_lone_frame(payload, &origin, &mut self.batch)?;
        let (first, last) = match (self.batch.first(), self.batch.last()) {
            (Some(first), Some(last)) => (first.stamp.seq, last.stamp.seq),
            _ => return Ok(()),
        };
        if last <= applied {
            return Ok(());
        }
        if first > applied + 1 && last_seq == Some(last) {
            let remedy = if applied == 0 {
                format!(
                    "a new follower needs a snapshot in object store bucket {} (stored by \
                     `ringledger follow --store-snapshots`), and there is none",
                    bucket_name(&self.config)
                )
            } else {
                format!(
                    "this follower fell behind what the stream keeps; start it on an empty journal \
                     directory to begin from the newest snapshot in object store bucket {}",
                    bucket_name(&self.config)
                )
            };
            return Err(JournalError::corrupt(
                origin,
                0,
                format!(
                    "the stream no longer holds seqs {}..={} (dropped by its limits or purged): {remedy}",
                    applied + 1,
                    first - 1
                ),
            )
            .into());
        }
        if first != applied + 1 || last_seq != Some(last) {
            return Err(JournalError::corrupt(
                origin,
                0,
                format!(
                    "frame holds seqs {first}..={last} (header says {last_seq:?}), but this \
                     follower applied through {applied}: a frame is missing or out of order"
                ),
            )
            .into());
        }
        if frame.parent != self.head.checksum {
            return Err(JournalError::corrupt(
                origin,
                48,
                format!(
                    "chain broken: the frame holding seqs {first}..={last} names parent {:032x}, but \
                     this follower's chain head at seq {} is {}: it is not the frame the leader \
                     journaled after it (forged, spliced in from another journal, or re-encoded); \
                     refused, nothing of it journaled or applied",
                    frame.parent, self.head.seq, self.head
                ),
            )
            .into());
        }
        self.writer
            .append_frame(payload, &self.batch)
            .map_err(|e| JournalError::io(&self.dir, "append to the follower's journal", e))?;
        if self.writer.durability() == Durability::Sync {
            self.writer
                .sync()
                .map_err(|e| JournalError::io(&self.dir, "fdatasync the follower's journal", e))?;
        }
        self.ledger.apply_batch(&self.batch, |_, _| {});
        self.head = ChainHead {
            seq: last,
            checksum: frame.checksum,
        };
        self.progress.applied_seq = last;
        if self
            .snapshot_every
            .is_some_and(|every| last - self.last_snapshot_seq >= every)
        {
            self.snapshot()?;
        }
        Ok(())
    }

    /// fdatasync, then a snapshot of what the journal now durably holds.
    fn snapshot(&mut self) -> Result<(), ReplicationError> {
        self.writer
            .sync()
            .map_err(|e| JournalError::io(&self.dir, "fdatasync the follower's journal", e))?;
        let path = journal::write_snapshot(&self.dir, &self.ledger, self.head)
            .map_err(|e| JournalError::io(&self.dir, "write a snapshot", e))?;
        if let Some(store) = &self.snapshot_store {
            let stored = std::fs::read(&path)
                .map_err(|e| unavailable(&format!("cannot read {}", path.display()), e))
                .and_then(|bytes| self.rt.block_on(store.put(self.head, &bytes)));
            if let Err(e) = stored {
                eprintln!(
                    "ringledger follow: the snapshot at seq {} is not in object store bucket {}: \
                     {e}; the next snapshot is stored again",
                    self.head.seq,
                    store.bucket()
                );
            }
        }
        journal::retain(&self.dir, self.snapshots_kept)?;
        self.last_snapshot_seq = self.ledger.last_seq();
        Ok(())
    }

    /// Snapshots what was applied since the last one, marks a clean
    /// shutdown and hands back the Ledger.
    pub fn close(mut self) -> Result<Ledger, ReplicationError> {
        if self.ledger.last_seq() > self.last_snapshot_seq {
            self.snapshot()?;
        }
        self.writer
            .close()
            .map_err(|e| JournalError::io(&self.dir, "close the follower's journal", e))?;
        Ok(self.ledger)
    }
}

/// Attempts at a takeover marker before giving up: each refused one means
/// the old leader published meanwhile (it is not paused or dead).
const TAKEOVER_ATTEMPTS_MAX: usize = 20;

/// A takeover this process won: its leader id and the stream sequence of
/// its marker, for the [`super::Publisher`] that leads from there, and the
/// lease it holds (automatic promotion): the publisher acknowledges nothing
/// once that lease is lost.
#[derive(Clone, Debug)]
pub struct Takeover {
    pub(super) id: String,
    pub(super) stream_seq: u64,
    pub(super) lease: Option<Lease>,
}

impl Takeover {
    /// The leader lease held (automatic promotion), if any.
    pub fn lease(&self) -> Option<&Lease> {
        self.lease.as_ref()
    }
}

/// Applies the stream to `ledger` (appending to its journal `writer`) up to
/// the stream's end, then stores a takeover marker expecting the stream's
/// last sequence, so the old leader's next publish is refused (it is
/// fenced). If the old leader published in between, the marker is refused:
/// catch up again and retry. The local journal must not hold seqs the stream
/// lacks (it would diverge from the stream).
pub fn take_over(
    config: &ReplicationConfig,
    meta: crate::journal::Meta,
    ledger: Ledger,
    writer: JournalWriter,
) -> Result<(Ledger, JournalWriter, Takeover), ReplicationError> {
    let opened = open_stream(config, meta, false)?;
    Follower::from_parts(config, opened, ledger, writer).take_over(leader_id(), None)
}

/// Automatic promotion: follows the stream (applying it to `ledger` and its
/// journal `writer`, as a follower would) until the leader lease in
/// JetStream's key-value store is free (its holder died or stopped renewing
/// and the key expired, or it released it), takes the lease, and then takes
/// over as [`take_over`] does, holding the lease (renewed on a thread of its
/// own) in the returned [`Takeover`]. `progress` is called after each frame
/// and once per tick while the stream is quiet. Creates the stream and the
/// lease bucket if they do not exist yet (the first process to start leads).
pub fn stand_by(
    config: &ReplicationConfig,
    lease: LeaseConfig,
    meta: crate::journal::Meta,
    (ledger, writer): (Ledger, JournalWriter),
    mut progress: impl FnMut(&FollowProgress),
) -> Result<(Ledger, JournalWriter, Takeover), ReplicationError> {
    let bucket = retry_unavailable("standby: opening the lease bucket", || {
        LeaseBucket::open(config, lease)
    })?;
    let opened = retry_unavailable("standby: opening the stream", || {
        open_stream(config, meta, true)
    })?;
    let mut follower = Follower::from_parts(config, opened, ledger, writer);
    let id = leader_id();
    let mut taken = retry_unavailable("standby: reading the lease", || bucket.try_take(&id))?;
    if taken.is_none() {
        eprintln!(
            "ringledger: standby for stream {}: following it from seq {}; promotes itself once \
             the leader lease (bucket {}, {:?}) expires",
            config.stream,
            follower.ledger.last_seq(),
            lease::bucket_name(config),
            bucket.ttl()
        );
        let mut next_poll = Instant::now() + bucket.poll_every();
        let mut failed = None;
        follower.run(STANDBY_TICK, |done, _| {
            progress(done);
            if Instant::now() < next_poll {
                return true;
            }
            next_poll = Instant::now() + bucket.poll_every();
            match bucket.try_take(&id) {
                Ok(None) => true,
                Ok(Some(won)) => {
                    taken = Some(won);
                    false
                }
                // The bucket cannot be read now (no quorum): keep
                // following, look again later.
                Err(ReplicationError::Unavailable(why)) => {
                    eprintln!("ringledger: standby: {why}");
                    true
                }
                Err(e) => {
                    failed = Some(e);
                    false
                }
            }
        })?;
        if let Some(e) = failed {
            return Err(e);
        }
    }
    let Some(taken) = taken else {
        return Err(ReplicationError::Unavailable(
            "the standby stopped before it took the lease".into(),
        ));
    };
    eprintln!(
        "ringledger: took the leader lease of stream {} at seq {}; taking over",
        config.stream,
        follower.ledger.last_seq()
    );
    let lease = bucket.keep(id.clone(), taken)?;
    follower.take_over(id, Some(lease))
}

/// How often a standby's follower reports while the stream is quiet.
const STANDBY_TICK: Duration = Duration::from_millis(50);

impl Follower {
    /// Catches up to the end of the stream and stores the takeover marker
    /// (see [`take_over`]), under `lease` if there is one: it must hold
    /// before each attempt.
    fn take_over(
        mut self,
        id: String,
        lease: Option<Lease>,
    ) -> Result<(Ledger, JournalWriter, Takeover), ReplicationError> {
        let config = self.config.clone();
        for _ in 0..TAKEOVER_ATTEMPTS_MAX {
            let end = self.rt.block_on(tail_at_start(&config, &self.stream))?;
            let applied = self.ledger.last_seq();
            if end.record_seq < applied {
                return Err(ReplicationError::Config(format!(
                    "this journal holds seqs up to {applied}, beyond the stream's {}: they never \
                     reached the stream (a deposed leader's?), so it cannot take over; start from \
                     an empty journal directory",
                    end.record_seq
                )));
            }
            if end.record_seq > applied {
                let deadline = std::time::Instant::now() + super::REQUEST_TIMEOUT * 20;
                self.run(Duration::from_millis(50), |progress, _| {
                    progress.applied_seq < end.record_seq && std::time::Instant::now() < deadline
                })?;
                if self.ledger.last_seq() < end.record_seq {
                    return Err(ReplicationError::Unavailable(format!(
                        "catching up with stream {} stalled at seq {}",
                        config.stream,
                        self.ledger.last_seq()
                    )));
                }
            }
            if let Some(lease) = &lease {
                lease.holds().map_err(ReplicationError::NotLeader)?;
            }
            let marker = self.rt.block_on(async {
                let js = connect(&config).await?;
                let mut headers = async_nats::HeaderMap::new();
                headers.insert(
                    async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
                    end.stream_seq.to_string().as_str(),
                );
                headers.insert(HEADER_LEADER, id.as_str());
                headers.insert(HEADER_LAST_SEQ, end.record_seq.to_string().as_str());
                let published = js
                    .send_publish(
                        config.subject(),
                        PublishMessage::build()
                            .payload(Default::default())
                            .headers(headers),
                    )
                    .await;
                let ack = match published {
                    Ok(ack) => ack.await,
                    Err(e) => Err(e),
                };
                match ack {
                    Ok(ack) => Ok(Some(ack.sequence)),
                    Err(e) if e.kind() == PublishErrorKind::WrongLastSequence => Ok(None),
                    Err(e) => Err(unavailable("publishing the takeover marker failed", e)),
                }
            })?;
            if let Some(stream_seq) = marker {
                let Follower { ledger, writer, .. } = self;
                return Ok((
                    ledger,
                    writer,
                    Takeover {
                        id,
                        stream_seq,
                        lease,
                    },
                ));
            }
        }
        Err(ReplicationError::Unavailable(format!(
            "the old leader kept extending stream {} during {TAKEOVER_ATTEMPTS_MAX} takeover \
             attempts: stop or pause it first",
            config.stream
        )))
    }
}
