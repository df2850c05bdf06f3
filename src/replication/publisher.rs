//! The leader's side: a thread of its own, with a current-thread tokio
//! runtime, that publishes frames in order with many in flight and releases
//! each frame's item once JetStream acknowledged it (stored by a quorum of
//! the stream's replicas). The thread that hands frames over never waits
//! for the network.
//!
//! Publishes are pipelined: frame k after the last confirmed one expects
//! stream sequence `confirmed + k - 1` before it, known in advance because
//! this is the only writer. When anything goes wrong (a timeout, a lost
//! connection, a refused expected sequence) everything in flight is dropped
//! and the stream is reconciled: messages after the last confirmed one that
//! this run wrote (landed despite the error) confirm their frames; a message
//! another process wrote means this one was deposed (fenced for good);
//! otherwise the unconfirmed frames are published again. While the stream
//! cannot be read, items are refused `Unavailable` and their frames wait to
//! be published when it comes back: the local journal already holds them.
//!
//! Those waiting frames are the leader's replication backlog (journal
//! records handed over and not yet stored, see [`Backlog`]). It lives in
//! memory, so the thread handing frames over bounds it: past its bound it
//! stops handing frames and hands items alone ([`Publisher::pass`]), which
//! are refused in their turn, after every item handed before them.

use std::collections::VecDeque;
use std::future::{Future, IntoFuture};
use std::path::Path;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use async_nats::jetstream::context::PublishError;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::publish::PublishAck;
use async_nats::jetstream::{stream::Stream, Context};
use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::stream::{FuturesOrdered, StreamExt};
use parking_lot::{Condvar, Mutex};
use tokio::sync::mpsc;

use super::lease::Lease;
use super::{
    connect, leader_id, leader_stream, message_stamp, runtime, tail, tail_at_start,
    ReplicationConfig, ReplicationError, Takeover, HEADER_LAST_SEQ, HEADER_LEADER,
};
use crate::journal::{self, Meta};

/// Frames published and not yet acknowledged, at most: enough to keep the
/// stream busy across a round trip at full speed (a frame is a whole batch),
/// few enough that a failure has little to publish again.
pub const FRAMES_IN_FLIGHT_MAX: usize = 256;

/// The longest pause between attempts to reach an unavailable stream.
const RETRY_BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Where the leader stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Publishing; items are released as their frames are stored.
    Leading,
    /// The stream cannot store frames now (the reason says why); items are
    /// refused until it can, and their frames are published then.
    Unavailable(String),
    /// Another process extended the stream: this one never publishes
    /// again, and every item is refused `NotLeader`.
    Fenced(String),
}

/// What happens to each frame's item: released once its frame is stored, or
/// refused with the reason it could not be confirmed. Runs on the
/// replication thread, in the order items were handed over.
pub trait Release: Send + 'static {
    type Item: Send + 'static;
    /// What a frame makes final once the stream stores it, whether its item
    /// was released then or refused before (a frame refused while the stream
    /// was unavailable is still published when it is back).
    type Settles: Send + 'static;

    /// What the frame of `item` settles, taken as the frame is handed over.
    fn settles(item: &Self::Item) -> Self::Settles;

    fn stored(&mut self, item: Self::Item);

    fn refused(&mut self, item: Self::Item, why: &ReplicationError);

    /// Every stored frame's [`Self::Settles`], in frame order, just before
    /// its item's `stored` (if it was not refused before). Not called for a
    /// frame stored by a run that no longer leads.
    fn settle(&mut self, settles: Self::Settles);

    /// After a run of `stored`/`refused` calls, before the thread waits
    /// again (e.g. to wake the clients just answered).
    fn flush(&mut self) {}
}

/// For callers that only wait ([`Publisher::wait_stored`]).
impl Release for () {
    type Item = ();
    type Settles = ();

    fn settles(_: &()) {}

    fn stored(&mut self, _: ()) {}

    fn settle(&mut self, _: ()) {}

    fn refused(&mut self, _: (), _: &ReplicationError) {}
}

struct Outgoing<R: Release> {
    frame: Bytes,
    last_seq: u64,
    /// None once released or refused (or for a frame read back from the
    /// journal at start, which has none).
    item: Option<R::Item>,
    /// None for a frame read back from the journal at start.
    settles: Option<R::Settles>,
    /// Items handed over after this frame and before the next one, with no
    /// frame of their own: refused right after this frame's item is released.
    passes: Vec<R::Item>,
}

/// What the thread handing frames over sends the replication thread.
enum Handed<R: Release> {
    Frame(Outgoing<R>),
    /// An item with no frame (see [`Publisher::pass`]).
    Pass(R::Item),
}

struct Watch {
    status: Mutex<Status>,
    changed: Condvar,
    /// The last journal seq the stream is known to store.
    stored_seq: AtomicU64,
    /// The last journal seq handed to the replication thread (written only
    /// by the thread handing frames over).
    handed_seq: AtomicU64,
    /// The largest backlog seen as a frame was handed over.
    backlog_peak: AtomicU64,
}

impl Watch {
    fn set(&self, status: Status) {
        let mut current = self.status.lock();
        if matches!(*current, Status::Fenced(_)) || *current == status {
            return;
        }
        *current = status;
        self.changed.notify_all();
    }

    fn stored(&self, seq: u64) {
        self.stored_seq.store(seq, Ordering::Release);
        let _lock = self.status.lock();
        self.changed.notify_all();
    }
}

/// A read-only view of a leader's replication backlog: journal records
/// handed to the replication thread and not yet stored by the stream. Each
/// record waits there inside its frame (the records' bincode, 36 to 86
/// bytes each, plus a 64-byte header per frame), so the backlog is about
/// the memory the waiting frames take.
#[derive(Clone)]
pub struct Backlog {
    watch: Arc<Watch>,
}

impl Backlog {
    /// Records handed over and not yet stored, now.
    pub fn records(&self) -> u64 {
        let handed = self.watch.handed_seq.load(Ordering::Acquire);
        handed.saturating_sub(self.watch.stored_seq.load(Ordering::Acquire))
    }

    /// The most records ever waiting, as seen each time a frame was handed
    /// over (the backlog only grows then).
    pub fn peak_records(&self) -> u64 {
        self.watch.backlog_peak.load(Ordering::Relaxed)
    }
}

/// The leader's handle on its replication thread.
pub struct Publisher<R: Release> {
    frames: Option<mpsc::UnboundedSender<Handed<R>>>,
    watch: Arc<Watch>,
    thread: Option<JoinHandle<R>>,
}

impl<R: Release> Publisher<R> {
    /// Connects, opens (or creates) the stream and starts publishing after
    /// the last journal seq the stream holds, which must be `last_seq`, the
    /// local journal's last. A stream behind it (this leader crashed after
    /// writing its journal, before the stream stored the frames) first gets
    /// the missing records again from `journal_dir`; a stream ahead of it was
    /// extended by another process: [`ReplicationError::NotLeader`], and so
    /// is a stream ending in another process's takeover marker. After
    /// [`super::take_over`], pass its [`Takeover`]: the stream must still end
    /// with that marker.
    pub fn start(
        config: &ReplicationConfig,
        meta: Meta,
        journal_dir: Option<&Path>,
        last_seq: u64,
        takeover: Option<Takeover>,
        release: R,
    ) -> Result<Publisher<R>, ReplicationError> {
        let config = config.clone();
        let journal_dir = journal_dir.map(Path::to_path_buf);
        let watch = Arc::new(Watch {
            status: Mutex::new(Status::Leading),
            changed: Condvar::new(),
            stored_seq: AtomicU64::new(0),
            handed_seq: AtomicU64::new(last_seq),
            backlog_peak: AtomicU64::new(0),
        });
        let (frames_tx, frames_rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        let thread_watch = Arc::clone(&watch);
        let thread = thread::Builder::new()
            .name("ringledger-replication".into())
            .spawn(move || {
                let rt = match runtime() {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready_tx.send(Err(e));
                        return release;
                    }
                };
                let resume = Resume {
                    journal_dir: journal_dir.as_deref(),
                    last_seq,
                    takeover,
                };
                match rt.block_on(Leader::start(
                    config,
                    meta,
                    resume,
                    frames_rx,
                    release,
                    thread_watch,
                )) {
                    Ok(leader) => {
                        let _ = ready_tx.send(Ok(()));
                        rt.block_on(leader.run())
                    }
                    Err((e, release)) => {
                        let _ = ready_tx.send(Err(e));
                        release
                    }
                }
            })
            .map_err(|e| {
                ReplicationError::Config(format!("cannot start the replication thread: {e}"))
            })?;
        let ready = ready_rx.recv().unwrap_or_else(|_| {
            Err(ReplicationError::Config(
                "the replication thread panicked while starting".into(),
            ))
        });
        if let Err(e) = ready {
            let _ = thread.join();
            return Err(e);
        }
        watch.stored(last_seq);
        Ok(Publisher {
            frames: Some(frames_tx),
            watch,
            thread: Some(thread),
        })
    }

    /// Hands a frame (the bytes the journal wrote, whose last record is
    /// `last_seq`) to the replication thread. Never waits. `item` is released
    /// when the frame is stored, or refused.
    pub fn publish(&self, frame: &[u8], last_seq: u64, item: R::Item) {
        debug_assert!(!frame.is_empty(), "a frame holds records");
        if let Some(frames) = &self.frames {
            self.watch.handed_seq.store(last_seq, Ordering::Release);
            let backlog = last_seq.saturating_sub(self.stored_seq());
            if backlog > self.watch.backlog_peak.load(Ordering::Relaxed) {
                self.watch.backlog_peak.store(backlog, Ordering::Relaxed);
            }
            // A send fails only once the thread has stopped (it panicked):
            // `status` and `wait_stored` then never report the item stored.
            let _ = frames.send(Handed::Frame(Outgoing {
                frame: Bytes::copy_from_slice(frame),
                last_seq,
                settles: Some(R::settles(&item)),
                item: Some(item),
                passes: Vec::new(),
            }));
        }
    }

    /// Hands over an item with no frame (nothing was journaled for it, e.g.
    /// requests shed while the backlog is full). Never waits. It is refused
    /// `Unavailable`, right after every item handed before it is released,
    /// so answers keep the order their requests came in.
    pub fn pass(&self, item: R::Item) {
        if let Some(frames) = &self.frames {
            let _ = frames.send(Handed::Pass(item));
        }
    }

    /// The replication backlog, for gauges and tests.
    pub fn backlog(&self) -> Backlog {
        Backlog {
            watch: Arc::clone(&self.watch),
        }
    }

    pub fn status(&self) -> Status {
        self.watch.status.lock().clone()
    }

    /// The last journal seq the stream is known to store.
    pub fn stored_seq(&self) -> u64 {
        self.watch.stored_seq.load(Ordering::Acquire)
    }

    /// Waits until the stream stores everything through `seq`:
    /// `NotLeader` once fenced, `Unavailable` if `timeout` passes first.
    pub fn wait_stored(&self, seq: u64, timeout: Duration) -> Result<(), ReplicationError> {
        let deadline = Instant::now() + timeout;
        let mut status = self.watch.status.lock();
        loop {
            if let Status::Fenced(why) = &*status {
                return Err(ReplicationError::NotLeader(why.clone()));
            }
            if self.stored_seq() >= seq {
                return Ok(());
            }
            if self
                .watch
                .changed
                .wait_until(&mut status, deadline)
                .timed_out()
            {
                let why = match &*status {
                    Status::Unavailable(why) => why.clone(),
                    _ => format!("the stream did not confirm seq {seq} within {timeout:?}"),
                };
                return Err(ReplicationError::Unavailable(why));
            }
        }
    }

    /// Stops taking frames, lets the thread publish what it was given (or
    /// give up on it, if the stream stays unavailable for [`FINISH_GRACE`])
    /// and hands back the release.
    pub fn finish(mut self) -> Option<R> {
        self.stop()
    }

    fn stop(&mut self) -> Option<R> {
        drop(self.frames.take());
        self.thread.take()?.join().ok()
    }
}

impl<R: Release> Drop for Publisher<R> {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}

/// Where a leader starts: the local journal's last seq (and the journal,
/// for records the stream lacks), and the takeover it won, if any.
struct Resume<'a> {
    journal_dir: Option<&'a Path>,
    last_seq: u64,
    takeover: Option<Takeover>,
}

type AckFuture = Pin<Box<dyn Future<Output = Result<PublishAck, PublishError>> + Send>>;

/// How long a stopping leader keeps trying to publish what it was given.
const FINISH_GRACE: Duration = Duration::from_secs(5);

/// The replication thread's state.
struct Leader<R: Release> {
    config: ReplicationConfig,
    js: Context,
    stream: Stream,
    id: String,
    /// The leader lease this run holds (automatic promotion): nothing is
    /// published or released once it is lost.
    lease: Option<Lease>,
    /// Stream sequence of the last message this run knows stored in order.
    confirmed: u64,
    /// Frames not yet confirmed, oldest first; the first `sent` of them are
    /// in flight.
    unconfirmed: VecDeque<Outgoing<R>>,
    sent: usize,
    acks: FuturesOrdered<AckFuture>,
    frames: mpsc::UnboundedReceiver<Handed<R>>,
    frames_open: bool,
    release: R,
    watch: Arc<Watch>,
}

impl<R: Release> Leader<R> {
    async fn start(
        config: ReplicationConfig,
        meta: Meta,
        resume: Resume<'_>,
        frames: mpsc::UnboundedReceiver<Handed<R>>,
        release: R,
        watch: Arc<Watch>,
    ) -> Result<Leader<R>, (ReplicationError, R)> {
        let Resume {
            journal_dir,
            last_seq,
            takeover,
        } = resume;
        let opened = async {
            let js = connect(&config).await?;
            let stream = leader_stream(&js, &config, meta).await?;
            let tail = tail_at_start(&config, &stream).await?;
            Ok::<_, ReplicationError>((js, stream, tail))
        }
        .await;
        let (js, stream, tail) = match opened {
            Ok(opened) => opened,
            Err(e) => return Err((e, release)),
        };
        let refused = match &takeover {
            Some(won) if tail.stream_seq != won.stream_seq || tail.leader != won.id => {
                Some(format!(
                "stream {} was extended after this process took over (at sequence {}): another \
                 process took over since",
                config.stream, won.stream_seq
            ))
            }
            None if tail.marker && tail.record_seq == last_seq => Some(format!(
                "leader {} took over stream {} at journal seq {}: start with --takeover to lead \
                 again",
                tail.leader, config.stream, tail.record_seq
            )),
            _ => None,
        };
        if let Some(why) = refused {
            return Err((ReplicationError::NotLeader(why), release));
        }
        if tail.record_seq > last_seq {
            return Err((
                ReplicationError::NotLeader(format!(
                    "stream {} holds journal seqs up to {}, this journal only up to {last_seq}: \
                     another process leads (take over to catch up and lead)",
                    config.stream, tail.record_seq
                )),
                release,
            ));
        }
        let (id, lease) = match takeover {
            Some(won) => (won.id, won.lease),
            None => (leader_id(), None),
        };
        let mut leader = Leader {
            id,
            lease,
            confirmed: tail.stream_seq,
            config,
            js,
            stream,
            unconfirmed: VecDeque::new(),
            sent: 0,
            acks: FuturesOrdered::new(),
            frames,
            frames_open: true,
            release,
            watch,
        };
        if tail.record_seq < last_seq {
            if let Err(e) = leader.catch_up(journal_dir, tail.record_seq).await {
                return Err((e, leader.release));
            }
        }
        Ok(leader)
    }

    /// Publishes again, and waits for, the records the local journal holds
    /// after the stream's last (`stream_last`).
    async fn catch_up(
        &mut self,
        journal_dir: Option<&Path>,
        stream_last: u64,
    ) -> Result<(), ReplicationError> {
        let dir = journal_dir.ok_or_else(|| {
            ReplicationError::Config(format!(
                "stream {} stops at seq {stream_last}, before this Ledger's, and there is no \
                 journal to publish the rest from",
                self.config.stream
            ))
        })?;
        // The frames as the journal holds them, byte for byte: followers
        // check each one's parent against their chain and journal it as it
        // is, so their heads stay the leader's.
        for frame in journal::read_frames(dir, stream_last + 1)? {
            let frame = frame?;
            let expected_first = self
                .unconfirmed
                .back()
                .map_or(stream_last + 1, |o| o.last_seq + 1);
            if frame.first_seq != expected_first {
                return Err(ReplicationError::Config(format!(
                    "stream {} stops at seq {stream_last} but the local journal's next frame holds seqs \
                     {}..={}: {}",
                    self.config.stream,
                    frame.first_seq,
                    frame.last_seq,
                    if frame.first_seq > expected_first {
                        "the records between are in neither"
                    } else {
                        "the stream ends inside one of this journal's frames, so it was not written \
                         from this journal"
                    }
                )));
            }
            self.unconfirmed.push_back(Outgoing {
                frame: Bytes::from(frame.bytes),
                last_seq: frame.last_seq,
                item: None,
                settles: None,
                passes: Vec::new(),
            });
        }
        while !self.unconfirmed.is_empty() {
            self.send_unsent().await?;
            match self.acks.next().await {
                Some(Ok(ack)) => self.confirm(ack.sequence),
                Some(Err(_)) => {
                    self.reset_in_flight();
                    if let Some(fenced) = self.reconcile().await? {
                        return Err(ReplicationError::NotLeader(fenced));
                    }
                }
                None => {}
            }
        }
        Ok(())
    }

    async fn run(mut self) -> R {
        let mut retry = Duration::from_millis(50);
        let mut finish_by: Option<Instant> = None;
        loop {
            if matches!(*self.watch.status.lock(), Status::Fenced(_)) {
                self.refuse_all_fenced();
                // Fenced for good: refuse what still arrives, then stop.
                while let Some(handed) = self.frames.recv().await {
                    match handed {
                        Handed::Frame(outgoing) => self.refuse(outgoing),
                        Handed::Pass(item) => self.refuse_pass(item),
                    }
                    self.release.flush();
                }
                return self.release;
            }
            if !self.frames_open && self.unconfirmed.is_empty() {
                return self.release;
            }
            if !self.frames_open {
                let deadline = *finish_by.get_or_insert_with(|| Instant::now() + FINISH_GRACE);
                if Instant::now() >= deadline {
                    eprintln!(
                        "ringledger: stopping with {} frame(s) the stream {} did not confirm; \
                         the local journal holds them and the next leader run publishes them",
                        self.unconfirmed.len(),
                        self.config.stream
                    );
                    return self.release;
                }
            }
            let healthy = matches!(*self.watch.status.lock(), Status::Leading);
            if !healthy {
                match self.reconcile().await {
                    Ok(Some(fenced)) => {
                        self.watch.set(Status::Fenced(fenced));
                        continue;
                    }
                    Ok(None) => {
                        self.watch.set(Status::Leading);
                        retry = Duration::from_millis(50);
                    }
                    Err(e) => {
                        self.watch.set(Status::Unavailable(e.to_string()));
                        self.refuse_waiting(&e);
                        self.take_arrivals(retry).await;
                        retry = (retry * 2).min(RETRY_BACKOFF_MAX);
                        continue;
                    }
                }
            }
            if let Err(e) = self.send_unsent().await {
                self.fail(e);
                continue;
            }
            tokio::select! {
                biased;
                ack = self.acks.next(), if !self.acks.is_empty() => match ack {
                    Some(Ok(ack)) => {
                        self.confirm(ack.sequence);
                        // Everything else already acknowledged, before waking anyone.
                        while let Some(Some(Ok(ack))) =
                            futures_util::FutureExt::now_or_never(self.acks.next())
                        {
                            self.confirm(ack.sequence);
                        }
                        self.release.flush();
                    }
                    Some(Err(e)) => self.fail(unavailable_publish(&self.config, e)),
                    None => {}
                },
                handed = self.frames.recv(), if self.frames_open => match handed {
                    Some(Handed::Frame(outgoing)) => self.unconfirmed.push_back(outgoing),
                    Some(Handed::Pass(item)) => self.take_pass(item),
                    None => self.frames_open = false,
                },
                else => {}
            }
        }
    }

    /// Publishes the unconfirmed frames not in flight yet, as many as the
    /// in-flight limit allows.
    async fn send_unsent(&mut self) -> Result<(), ReplicationError> {
        if self.sent < self.unconfirmed.len() && !self.lease_holds() {
            return Ok(());
        }
        while self.sent < self.unconfirmed.len() && self.acks.len() < FRAMES_IN_FLIGHT_MAX {
            let outgoing = &self.unconfirmed[self.sent];
            let expected_last = self.confirmed + self.sent as u64;
            let mut headers = HeaderMap::new();
            headers.insert(
                async_nats::header::NATS_EXPECTED_LAST_SEQUENCE,
                expected_last.to_string().as_str(),
            );
            // The expected sequence alone does not fence a frame behind
            // another in flight: had a rival stored exactly as many
            // messages as this leader has frames ahead of it, the sequence
            // would match. So each message is named by this leader's id and
            // the sequence it is meant to take, and a frame behind another
            // also expects that one's name as the stream's last message id.
            headers.insert(
                async_nats::header::NATS_MESSAGE_ID,
                message_id(&self.id, expected_last + 1).as_str(),
            );
            if self.sent > 0 {
                headers.insert(
                    async_nats::header::NATS_EXPECTED_LAST_MESSAGE_ID,
                    message_id(&self.id, expected_last).as_str(),
                );
            }
            headers.insert(HEADER_LEADER, self.id.as_str());
            headers.insert(HEADER_LAST_SEQ, outgoing.last_seq.to_string().as_str());
            let ack = self
                .js
                .send_publish(
                    self.config.subject(),
                    PublishMessage::build()
                        .payload(outgoing.frame.clone())
                        .headers(headers),
                )
                .await
                .map_err(|e| unavailable_publish(&self.config, e))?;
            self.acks.push_back(Box::pin(ack.into_future()));
            self.sent += 1;
        }
        Ok(())
    }

    /// The oldest frame in flight is stored at stream sequence `stream_seq`.
    fn confirm(&mut self, stream_seq: u64) {
        let Some(outgoing) = self.unconfirmed.pop_front() else {
            return;
        };
        self.sent = self.sent.saturating_sub(1);
        self.confirmed = stream_seq;
        self.watch.stored(outgoing.last_seq);
        // Fail closed: stored, but acknowledged (or settled) only under a
        // lease that still holds (a standby may lead once it expired). The
        // item is refused instead; a retry with the same req finds it
        // applied.
        if !self.lease_holds() {
            self.refuse(outgoing);
            return;
        }
        if let Some(settles) = outgoing.settles {
            self.release.settle(settles);
        }
        if let Some(item) = outgoing.item {
            self.release.stored(item);
        }
        for item in outgoing.passes {
            self.refuse_pass(item);
        }
    }

    /// An item with no frame: refused once every item handed before it is
    /// released. Items are released in the order they were handed (a
    /// refusal takes every waiting one, a store the oldest), so the newest
    /// frame still holds its item exactly when some item is unreleased.
    fn take_pass(&mut self, item: R::Item) {
        match self.unconfirmed.back_mut() {
            Some(newest) if newest.item.is_some() => newest.passes.push(item),
            _ => {
                self.refuse_pass(item);
                self.release.flush();
            }
        }
    }

    fn refuse_pass(&mut self, item: R::Item) {
        let waiting = self
            .watch
            .handed_seq
            .load(Ordering::Acquire)
            .saturating_sub(self.watch.stored_seq.load(Ordering::Acquire));
        self.release.refused(
            item,
            &ReplicationError::Unavailable(format!(
                "the replication backlog is full: {waiting} records wait for stream {}",
                self.config.stream
            )),
        );
    }

    /// Whether this run may still publish and acknowledge: always without a
    /// lease; with one, while it holds. A lost lease fences this run for
    /// good.
    fn lease_holds(&mut self) -> bool {
        let Some(lease) = &self.lease else {
            return true;
        };
        match lease.holds() {
            Ok(()) => true,
            Err(why) => {
                self.watch.set(Status::Fenced(format!(
                    "this process no longer leads stream {}: {why}",
                    self.config.stream
                )));
                false
            }
        }
    }

    /// A publish or its ack failed: drop what is in flight and reconcile
    /// before publishing again.
    fn fail(&mut self, e: ReplicationError) {
        self.reset_in_flight();
        self.watch.set(Status::Unavailable(e.to_string()));
    }

    fn reset_in_flight(&mut self) {
        self.acks = FuturesOrdered::new();
        self.sent = 0;
    }

    /// Reads the stream after the last confirmed message: messages this run
    /// wrote (their acks were lost) confirm their frames; a message written
    /// by anyone else means this process was deposed (`Some(why)`).
    async fn reconcile(&mut self) -> Result<Option<String>, ReplicationError> {
        let tail = tail(&self.config, &self.stream).await?;
        if tail.stream_seq < self.confirmed {
            return Ok(Some(format!(
                "stream {} ends at sequence {} but this leader had {} stored: the stream was \
                 reset, so it may not extend it",
                self.config.stream, tail.stream_seq, self.confirmed
            )));
        }
        while self.confirmed < tail.stream_seq {
            let at = self.confirmed + 1;
            let (stamp, _) = message_stamp(&self.config, &self.stream, at).await?;
            let ours = stamp.leader == self.id
                && self
                    .unconfirmed
                    .front()
                    .is_some_and(|o| o.last_seq == stamp.last_seq);
            if !ours {
                return Ok(Some(format!(
                    "stream {} sequence {at} (journal seq {}) was written by leader {}, not by \
                     this process ({}): another process took over",
                    self.config.stream, stamp.last_seq, stamp.leader, self.id
                )));
            }
            self.confirm(at);
        }
        self.release.flush();
        Ok(None)
    }

    /// While unavailable: takes the frames arriving for `pause`, refusing
    /// their items at once (their frames wait to be published).
    async fn take_arrivals(&mut self, pause: Duration) {
        let why = match &*self.watch.status.lock() {
            Status::Unavailable(why) => ReplicationError::Unavailable(why.clone()),
            Status::Fenced(why) => ReplicationError::NotLeader(why.clone()),
            Status::Leading => return,
        };
        let deadline = tokio::time::Instant::now() + pause;
        while self.frames_open {
            match tokio::time::timeout_at(deadline, self.frames.recv()).await {
                Err(_) => break,
                Ok(None) => self.frames_open = false,
                Ok(Some(Handed::Frame(mut outgoing))) => {
                    if let Some(item) = outgoing.item.take() {
                        self.release.refused(item, &why);
                    }
                    self.unconfirmed.push_back(outgoing);
                    self.release.flush();
                }
                // Every item handed before it was refused already.
                Ok(Some(Handed::Pass(item))) => {
                    self.refuse_pass(item);
                    self.release.flush();
                }
            }
        }
        if !self.frames_open {
            tokio::time::sleep_until(deadline).await;
        }
    }

    /// Refuses every waiting item (their frames stay, to be published when
    /// the stream is back).
    fn refuse_waiting(&mut self, why: &ReplicationError) {
        for i in 0..self.unconfirmed.len() {
            let outgoing = &mut self.unconfirmed[i];
            let item = outgoing.item.take();
            let passes = std::mem::take(&mut outgoing.passes);
            if let Some(item) = item {
                self.release.refused(item, why);
            }
            for item in passes {
                self.refuse_pass(item);
            }
        }
        self.release.flush();
    }

    fn refuse_all_fenced(&mut self) {
        for outgoing in std::mem::take(&mut self.unconfirmed) {
            self.refuse(outgoing);
        }
        self.release.flush();
    }

    /// Refuses a frame's item (`NotLeader`) and the items passed after it;
    /// the frame is dropped, never settled.
    fn refuse(&mut self, outgoing: Outgoing<R>) {
        if let Some(item) = outgoing.item {
            let why = match &*self.watch.status.lock() {
                Status::Fenced(why) => why.clone(),
                _ => "this process no longer leads".to_string(),
            };
            self.release
                .refused(item, &ReplicationError::NotLeader(why));
        }
        for item in outgoing.passes {
            self.refuse_pass(item);
        }
    }
}

fn unavailable_publish(config: &ReplicationConfig, e: PublishError) -> ReplicationError {
    ReplicationError::Unavailable(format!(
        "publishing to stream {} failed: {e}",
        config.stream
    ))
}

/// The `Nats-Msg-Id` of the message leader `id` publishes to take stream
/// sequence `stream_seq`.
fn message_id(id: &str, stream_seq: u64) -> String {
    format!("{id}:{stream_seq}")
}
