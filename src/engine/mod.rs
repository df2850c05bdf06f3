//! The runtime: gateway [`Client`]s push requests into the lock-free ring,
//! one business thread (optionally pinned) stamps, applies and answers them,
//! and a side thread computes rebates and sends them back as ordinary
//! requests.
//!
//! ```
//! use ringledger::{Engine, Reply, Request};
//!
//! let engine = Engine::builder().start().unwrap();
//! let mut client = engine.client().unwrap();
//! client.call(Request::OpenAccount { account: 1 }).unwrap().unwrap();
//! client.call(Request::Deposit { account: 1, amount: 10_000 }).unwrap().unwrap();
//! client.barrier().unwrap(); // the 1% rebate is credited
//! let balance = client.call(Request::Balance { account: 1 }).unwrap();
//! assert_eq!(balance, Ok(Reply::Balance { balance: 10_100, held: 0, available: 10_100 }));
//! let ledger = engine.shutdown().unwrap();
//! assert_eq!(ledger.pending_rebates_len(), 0);
//! ```

mod business;
mod client;
mod clock;
mod events;
mod flusher;
mod outbox;
mod rebater;
#[cfg(feature = "nats")]
mod replicate;
mod stages;
#[cfg(test)]
mod tests;

use std::fmt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Condvar, Mutex, RwLock};
use rustc_hash::FxHashMap;

pub use self::client::Client;
pub use self::clock::{Clock, ManualClock, TimeWentBackwards, WallClock};
pub use self::flusher::JournalThread;
use crate::journal::{self, Durability, JournalConfig, JournalError, JournalWriter};
use crate::ledger::{Ledger, LedgerConfig};
use crate::metrics::EngineMetrics;
use crate::money::Scale;
use crate::outcome::Outcome;
use crate::rebate::{RateRebate, RebatePolicy};
use crate::request::{InstrumentId, Request, SessionId, Symbol};
use crate::ring::{self, Producer, WaitStrategy};

/// Why the engine could not do what was asked.
#[derive(Debug)]
pub enum EngineError {
    /// The engine has shut down (or is shutting down): nothing more is accepted.
    Stopped,
    /// The business or rebate thread panicked; the message says where.
    Failed(String),
    /// The journal could not be written or synced (a full disk, an I/O
    /// error): the engine stopped without releasing what it could not make
    /// durable. Restart it (recovery from the journal) once the cause is
    /// fixed; nothing acknowledged is lost.
    Unavailable(String),
    /// Another process leads the replicated journal now: this one was
    /// fenced and stopped. Send requests to the new leader.
    NotLeader(String),
    /// `recv` with nothing in flight would wait forever.
    NothingInFlight,
    /// A builder setting that cannot work.
    Config(String),
    /// Starting a thread failed.
    Io(std::io::Error),
    /// The journal could not be recovered or opened.
    Journal(JournalError),
    /// A request this client may not send.
    Refused(&'static str),
    /// A session could not be opened (an invalid or retired name).
    Session(String),
}

impl fmt::Display for EngineError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EngineError::Stopped => {
                f.write_str("the engine has stopped and accepts no more requests")
            }
            EngineError::Failed(why) => write!(f, "the engine failed: {why}"),
            EngineError::Unavailable(why) => write!(
                f,
                "the engine cannot make requests durable and has stopped: {why}. \
                 Nothing acknowledged is lost: restart it once the cause is fixed"
            ),
            EngineError::NotLeader(why) => write!(
                f,
                "this engine no longer leads the replicated journal and has stopped: {why}"
            ),
            EngineError::NothingInFlight => {
                f.write_str("recv called with no request in flight: send one first")
            }
            EngineError::Config(why) => write!(f, "invalid engine configuration: {why}"),
            EngineError::Io(e) => write!(f, "engine I/O error: {e}"),
            EngineError::Journal(e) => write!(f, "{e}"),
            EngineError::Refused(why) => write!(f, "request refused: {why}"),
            EngineError::Session(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for EngineError {}

/// The engine's gauges, read on demand (see [`Engine::gauges`]).
pub struct EngineGauges {
    shared: Arc<Shared>,
}

impl EngineGauges {
    /// Requests in the ring not yet drained by the business thread (0 once
    /// the engine stopped).
    pub fn ring_occupancy(&self) -> u64 {
        self.shared
            .requests
            .lock()
            .as_ref()
            .map_or(0, |producer| producer.occupancy())
    }

    /// Rebate jobs handed to the side thread whose credits are not settled.
    pub fn rebate_backlog(&self) -> u64 {
        let answered = self.shared.rebates_answered.load(Ordering::Acquire);
        let dispatched = self.shared.rebates_dispatched.load(Ordering::Acquire);
        dispatched.saturating_sub(answered)
    }

    /// Journal records handed to the replication thread that the stream has
    /// not stored yet (0 without replication); see
    /// [`EngineBuilder::replication_backlog_max`].
    #[cfg(feature = "nats")]
    pub fn replication_backlog(&self) -> u64 {
        self.shared
            .replication_backlog
            .get()
            .map_or(0, crate::replication::Backlog::records)
    }

    /// The most records [`Self::replication_backlog`] has held, as seen
    /// each time a frame was handed over.
    #[cfg(feature = "nats")]
    pub fn replication_backlog_peak(&self) -> u64 {
        self.shared
            .replication_backlog
            .get()
            .map_or(0, crate::replication::Backlog::peak_records)
    }
}

/// What gateways put in the ring: a request plus who sent it under which number.
#[derive(Clone, Copy, Debug)]
struct Envelope {
    /// The client's response queue.
    client: u32,
    session: SessionId,
    req: u64,
    request: Request,
}

/// State shared by the engine, its clients and its threads. Nothing here is
/// touched per request except the rebate counters (plain stores).
struct Shared {
    scale: Scale,
    requests: Mutex<Option<Producer<Envelope>>>,
    /// Response producers of newly created clients, waiting for the business
    /// thread to adopt them (locked only when a client is created).
    registrations: Mutex<Vec<(u32, Producer<Outcome>)>>,
    /// Set (under the `registrations` lock) when it holds something.
    registered: AtomicBool,
    next_client: AtomicU32,
    /// Dropped clients and freed ids (see `outbox`); locked only when a
    /// client is created or dropped, and by the answering side after that.
    departures: Mutex<Departures>,
    /// Set when `departures.left` holds something.
    departed: AtomicBool,
    /// Response queues the answering side holds / client ids it has slots
    /// for, as it last published them (for tests of the bound).
    response_queues_held: AtomicUsize,
    response_slots: AtomicUsize,
    response_capacity: usize,
    wait: WaitStrategy,
    /// Symbol → id, updated by the business thread when a listing succeeds.
    directory: RwLock<FxHashMap<Symbol, InstrumentId>>,
    /// Rebate jobs handed to the side thread so far / credits applied and
    /// journaled as durably as the mode promises so far (what barriers wait for).
    rebates_dispatched: AtomicU64,
    rebates_answered: AtomicU64,
    /// Every journaled input up to this seq is known fdatasynced, as the
    /// thread writing the journal last published it.
    journal_synced_seq: AtomicU64,
    /// The largest owed backlog seen after a batch (for tests of the bound).
    rebate_backlog_peak: AtomicU64,
    /// Threads parked in [`client::wait_for_rebates`]: the business thread
    /// wakes them after a batch with credits only when there are any.
    rebate_waiters: AtomicUsize,
    rebate_wait: Mutex<()>,
    rebates_credited: Condvar,
    /// Why the engine failed (the first reason), and what kind of failure
    /// clients are told it was.
    failure: Mutex<Option<(String, FailureKind)>>,
    failed: AtomicBool,
    /// The rebate thread, set as it starts, for `hurry_rebates`.
    rebater: OnceLock<std::thread::Thread>,
    /// The replication backlog, set as replication starts (for gauges).
    #[cfg(feature = "nats")]
    replication_backlog: OnceLock<crate::replication::Backlog>,
}

/// Which [`EngineError`] a failed engine answers with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum FailureKind {
    Failed,
    Unavailable,
    #[cfg(feature = "nats")]
    NotLeader,
}

/// Clients that went away, and the ids the answering side freed.
#[derive(Default)]
struct Departures {
    /// (client id, requests it sent), for the answering side.
    left: Vec<(u32, u64)>,
    /// Ids whose queues are freed, for new clients.
    free: Vec<u32>,
}

impl Shared {
    fn fail(&self, why: String) {
        self.fail_as(why, FailureKind::Failed);
    }

    /// The journal could not be written or synced: the engine stops, and
    /// every request from now on is answered [`EngineError::Unavailable`].
    fn fail_journal(&self, why: String) {
        self.fail_as(why, FailureKind::Unavailable);
    }

    /// Another process leads the replicated journal: the engine stops, and
    /// every request from now on is answered [`EngineError::NotLeader`].
    #[cfg(feature = "nats")]
    fn fail_fenced(&self, why: String) {
        self.fail_as(why, FailureKind::NotLeader);
    }

    fn fail_as(&self, why: String, kind: FailureKind) {
        let mut failure = self.failure.lock();
        if failure.is_none() {
            *failure = Some((why, kind));
        }
        self.failed.store(true, Ordering::Release);
        drop(failure);
        self.wake_rebate_waiters();
    }

    /// Counts `credits` rebate credits (a running total) as answered, that
    /// is settled, and wakes the barriers waiting for them. Called by one
    /// thread only: the one that makes inputs as durable as the mode
    /// promises (see `business::Business::journal_held`).
    fn publish_credits(&self, credits: u64) {
        if credits > self.rebates_answered.load(Ordering::Relaxed) {
            self.rebates_answered.store(credits, Ordering::Release);
            self.wake_rebate_waiters();
        }
    }

    /// Wakes the threads parked in [`client::wait_for_rebates`], after
    /// credits were counted or the engine failed or stopped. The SeqCst
    /// fence pairs with the waiter's registration (eventcount): either the
    /// waiter sees the new state when it checks, or this sees the waiter.
    /// One fence and one load while nobody waits.
    fn wake_rebate_waiters(&self) {
        std::sync::atomic::fence(Ordering::SeqCst);
        if self.rebate_waiters.load(Ordering::Relaxed) != 0 {
            let _lock = self.rebate_wait.lock();
            self.rebates_credited.notify_all();
        }
    }

    /// Cuts the rebate thread's linger short: for whoever needs the owed
    /// credits now (the business thread at the backlog limit, a barrier,
    /// shutdown) rather than when the linger ends.
    fn hurry_rebates(&self) {
        if let Some(rebater) = self.rebater.get() {
            rebater.unpark();
        }
    }

    fn error(&self) -> EngineError {
        if self.failed.load(Ordering::Acquire) {
            match self.failure.lock().clone() {
                Some((why, FailureKind::Unavailable)) => EngineError::Unavailable(why),
                #[cfg(feature = "nats")]
                Some((why, FailureKind::NotLeader)) => EngineError::NotLeader(why),
                Some((why, FailureKind::Failed)) => EngineError::Failed(why),
                None => EngineError::Failed(String::new()),
            }
        } else {
            EngineError::Stopped
        }
    }
}

/// Marks the engine failed if the thread holding it unwinds, so clients get
/// an error that says so instead of a bare "stopped" (or a wait).
struct PanicGuard<'a> {
    shared: &'a Shared,
    thread: &'static str,
}

impl Drop for PanicGuard<'_> {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.shared.fail(format!(
                "the {} thread panicked; see the panic message above",
                self.thread
            ));
        }
    }
}

/// How to build an [`Engine`]; every setting has a default that behaves on a
/// small machine.
pub struct EngineBuilder {
    ring_capacity: usize,
    batch_max: usize,
    response_capacity: usize,
    wait: WaitStrategy,
    pin_core: Option<usize>,
    scale: Scale,
    ledger_config: LedgerConfig,
    accounts_hint: usize,
    rebate_policy: Box<dyn RebatePolicy>,
    rebate_backlog_max: usize,
    /// How long the rebate thread waits for more jobs after a group (see
    /// `rebater::LINGER`); tests lengthen it so that a missing wake-up hangs
    /// instead of costing a few microseconds.
    rebate_linger: Duration,
    clock: Arc<dyn Clock>,
    ledger: Option<Ledger>,
    journal: Option<(PathBuf, Durability)>,
    segment_bytes: u64,
    snapshot_every: Option<u64>,
    snapshots_kept: usize,
    journal_thread: JournalThread,
    metrics: Option<EngineMetrics>,
    #[cfg(feature = "nats")]
    replication: Option<crate::replication::ReplicationConfig>,
    #[cfg(feature = "nats")]
    takeover: bool,
    #[cfg(feature = "nats")]
    auto_takeover: Option<crate::replication::LeaseConfig>,
    #[cfg(feature = "nats")]
    replication_backlog_max: usize,
}

impl Default for EngineBuilder {
    fn default() -> Self {
        EngineBuilder {
            ring_capacity: 1 << 14,
            batch_max: 4096,
            response_capacity: 1 << 12,
            wait: WaitStrategy::default(),
            pin_core: None,
            scale: Scale::default(),
            ledger_config: LedgerConfig::default(),
            accounts_hint: 0,
            rebate_policy: Box::new(RateRebate::default()),
            rebate_backlog_max: REBATE_BACKLOG_MAX_DEFAULT,
            rebate_linger: rebater::LINGER,
            clock: Arc::new(WallClock),
            ledger: None,
            journal: None,
            segment_bytes: journal::SEGMENT_BYTES_DEFAULT,
            snapshot_every: None,
            snapshots_kept: SNAPSHOTS_KEPT_DEFAULT,
            journal_thread: JournalThread::default(),
            metrics: None,
            #[cfg(feature = "nats")]
            replication: None,
            #[cfg(feature = "nats")]
            takeover: false,
            #[cfg(feature = "nats")]
            auto_takeover: None,
            #[cfg(feature = "nats")]
            replication_backlog_max: REPLICATION_BACKLOG_MAX_DEFAULT,
        }
    }
}

impl EngineBuilder {
    /// Slots in the request ring (rounded up to a power of two).
    pub fn ring_capacity(mut self, slots: usize) -> Self {
        self.ring_capacity = slots;
        self
    }

    /// Where the business thread records batch sizes and the journal its
    /// bytes and fdatasync latency (see [`crate::metrics`]): a few relaxed
    /// atomic adds per batch, never a lock.
    pub fn metrics(mut self, metrics: EngineMetrics) -> Self {
        self.metrics = Some(metrics);
        self
    }

    /// Most requests the business thread takes in one batch.
    pub fn batch_max(mut self, requests: usize) -> Self {
        self.batch_max = requests;
        self
    }

    /// Slots in each client's response queue: the most requests one client
    /// can have in flight before `send` first collects answers.
    pub fn response_capacity(mut self, slots: usize) -> Self {
        self.response_capacity = slots;
        self
    }

    /// How idle threads wait: `Block` (the default) parks them, which is
    /// what a machine with few cores needs; `Spin` and `Yield` trade CPU for
    /// latency and only pay off with a core per busy thread.
    pub fn wait(mut self, wait: WaitStrategy) -> Self {
        self.wait = wait;
        self
    }

    /// Pins the business thread to this core (an index into the cores the
    /// process may use). A core that does not exist is reported and ignored.
    pub fn pin_core(mut self, core: Option<usize>) -> Self {
        self.pin_core = core;
        self
    }

    pub fn scale(mut self, scale: Scale) -> Self {
        self.scale = scale;
        self
    }

    pub fn ledger_config(mut self, config: LedgerConfig) -> Self {
        self.ledger_config = config;
        self
    }

    /// History entries kept per account for `history` (default 32); a
    /// `history` answer cut by this says `truncated`. Part of the
    /// [`LedgerConfig`]: a Ledger recovered from a snapshot keeps the
    /// retention it was taken with.
    pub fn history_per_account_max(mut self, entries: u32) -> Self {
        self.ledger_config.history_per_account_max = entries;
        self
    }

    /// Accounts to make room for up front, so opening them does not
    /// reallocate on the business thread.
    pub fn accounts_hint(mut self, accounts: usize) -> Self {
        self.accounts_hint = accounts;
        self
    }

    pub fn rebate_policy(mut self, policy: impl RebatePolicy) -> Self {
        self.rebate_policy = Box::new(policy);
        self
    }

    /// Most rebates handed to the rebate thread and not yet credited back
    /// (the owed backlog). At the limit, the business thread takes no more
    /// gateway requests (they wait in the ring, then gateways wait to push)
    /// until credits come back, so a rebate thread that falls behind slows
    /// the gateways instead of growing a queue. Credits travel on a lane of
    /// their own that the business thread drains first, so they always get
    /// through. After recovery the backlog may start above the limit (every
    /// owed rebate is dispatched again); gateways then wait for it to drop.
    pub fn rebate_backlog_max(mut self, jobs: usize) -> Self {
        self.rebate_backlog_max = jobs;
        self
    }

    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Starts from an existing Ledger (e.g. one recovered from a journal)
    /// instead of an empty one. Its owed rebates are dispatched again.
    pub fn ledger(mut self, ledger: Ledger) -> Self {
        self.ledger = Some(ledger);
        self
    }

    /// Journals every input to `dir` with the given durability (`None`
    /// turns journaling off). If `dir` already holds a journal, the engine
    /// first recovers from it (newest valid snapshot + journal tail) and
    /// dispatches again every rebate still owed.
    ///
    /// The engine holds `dir`'s lock (`dir/LOCK`, see [`journal::lock_dir`])
    /// from `start` until it has shut down: a second engine or process on
    /// the same directory fails to start with [`JournalError::Locked`].
    pub fn journal(mut self, dir: impl Into<PathBuf>, durability: Durability) -> Self {
        self.journal = (durability != Durability::None).then(|| (dir.into(), durability));
        self
    }

    /// Journal segment size (bytes preallocated per segment file).
    pub fn segment_bytes(mut self, bytes: u64) -> Self {
        self.segment_bytes = bytes;
        self
    }

    /// Writes a snapshot after every `requests` journaled requests (and
    /// always at a clean shutdown), so recovery replays only the tail. Off
    /// by default in the library (`ringledger run` takes one every
    /// 1,000,000); each snapshot is followed by pruning (see
    /// [`Self::snapshots_kept`]).
    pub fn snapshot_every(mut self, requests: u64) -> Self {
        self.snapshot_every = Some(requests.max(1));
        self
    }

    /// How many snapshots to keep after each new one, the new one included
    /// (default 2): older snapshots are deleted, and so are the journal
    /// segments the oldest kept snapshot covers ([`journal::retain`]).
    /// Keeping 2 lets recovery fall back to the previous snapshot if the
    /// newest is damaged. 0 keeps everything: no pruning at all.
    pub fn snapshots_kept(mut self, snapshots: usize) -> Self {
        self.snapshots_kept = snapshots;
        self
    }

    /// Which thread writes (and in `sync` mode fdatasyncs) the journal: the
    /// business thread itself (the default, faster on two cores), or a
    /// flusher thread, so the business thread applies the next requests
    /// meanwhile (see [`JournalThread`] for the measurements).
    pub fn journal_thread(mut self, thread: JournalThread) -> Self {
        self.journal_thread = thread;
        self
    }

    /// Durability `replicated` (cargo feature `nats`): every journaled frame
    /// is also published to the JetStream stream `config` names, and an
    /// outcome is released only once the stream acknowledged its frame
    /// (stored by a quorum of `config.replicas`). Needs a journal (written
    /// by the business thread); the stream must end where the journal does,
    /// or a little before it (the missing frames are published first).
    /// While the stream cannot store frames, outcomes are answered
    /// [`Reject::Unavailable`](crate::Reject::Unavailable); once another
    /// process extends the stream, this engine is fenced and stops
    /// ([`EngineError::NotLeader`]).
    #[cfg(feature = "nats")]
    pub fn replicated(mut self, config: crate::replication::ReplicationConfig) -> Self {
        self.replication = Some(config);
        self
    }

    /// With [`Self::replicated`]: before leading, apply the stream up to its
    /// end (as a follower would, into this engine's journal) and store a
    /// takeover marker there, so the old leader's next publish is refused
    /// and it stops with `not_leader`. Without it, an engine whose journal
    /// is behind the stream refuses to start ([`EngineError::NotLeader`]).
    #[cfg(feature = "nats")]
    pub fn takeover(mut self, takeover: bool) -> Self {
        self.takeover = takeover;
        self
    }

    /// With [`Self::replicated`]: most journal records handed to the
    /// replication thread and not yet stored by the stream (default
    /// [`REPLICATION_BACKLOG_MAX_DEFAULT`]). They wait in memory while the
    /// stream has no quorum (their requests are answered `unavailable`, and
    /// published once it is back). Past the bound the engine sheds load: it
    /// answers every gateway request `unavailable` at once, without applying
    /// or journaling it (a retry later with the same `req` is applied once);
    /// rebate credits are still applied, so the backlog may pass the bound
    /// by one batch and the credits owed then (at most
    /// [`Self::rebate_backlog_max`]). Shedding stops once the backlog is
    /// down to half the bound. Checking costs the business thread one
    /// atomic load per batch.
    #[cfg(feature = "nats")]
    pub fn replication_backlog_max(mut self, records: usize) -> Self {
        self.replication_backlog_max = records;
        self
    }

    /// With [`Self::replicated`]: automatic promotion under a leader lease
    /// in JetStream's key-value store (see [`crate::replication::lease`]).
    /// [`Self::start`] first stands by: it follows the stream into this
    /// engine's journal until the lease is free (at once for the first
    /// process; otherwise once the leader's lease expired), takes it, takes
    /// over as [`Self::takeover`] does, and only then starts and returns.
    /// While leading it renews the lease; if a renewal does not get through
    /// before the lease could expire, it stops acknowledging at once and
    /// stops ([`EngineError::NotLeader`]): a standby may be leading by then.
    /// On a clean shutdown it releases the lease, so a standby takes over
    /// without waiting for it to expire.
    #[cfg(feature = "nats")]
    pub fn auto_takeover(mut self, lease: crate::replication::LeaseConfig) -> Self {
        self.auto_takeover = Some(lease);
        self
    }

    /// Starts the business and rebate threads.
    pub fn start(self) -> Result<Engine, EngineError> {
        if self.batch_max == 0 || self.ring_capacity < 2 || self.response_capacity < 2 {
            return Err(EngineError::Config(
                "batch_max must be at least 1 and capacities at least 2".into(),
            ));
        }
        if self.rebate_backlog_max == 0 {
            return Err(EngineError::Config(
                "rebate_backlog_max must be at least 1: every deposit owes a rebate".into(),
            ));
        }
        #[cfg(feature = "nats")]
        if self.replication_backlog_max == 0 {
            return Err(EngineError::Config(
                "replication_backlog_max must be at least 1: every frame waits for the stream \
                 until it is stored"
                    .into(),
            ));
        }
        #[cfg(feature = "nats")]
        if self.replication.is_some()
            && (self.journal.is_none() || self.journal_thread != JournalThread::Business)
        {
            return Err(EngineError::Config(
                "replication publishes the frames the business thread journals: give the engine \
                 a journal (async or sync) written by the business thread"
                    .into(),
            ));
        }
        let meta = journal::Meta {
            scale: self.scale.places(),
            ledger: self.ledger_config,
        };
        // Read the cores before pinning anything: a pinned thread sees only its own.
        let core = match self.pin_core {
            None => None,
            Some(index) => {
                let cores = core_affinity::get_core_ids().unwrap_or_default();
                match cores.get(index) {
                    Some(&core) => Some(core),
                    None => {
                        eprintln!(
                            "ringledger: cannot pin the business thread to core {index}: this process may use {} core(s); running unpinned",
                            cores.len()
                        );
                        None
                    }
                }
            }
        };
        #[cfg(feature = "nats")]
        let mut takeover = None;
        let (ledger, journal) = match (&self.journal, self.ledger) {
            (Some(_), Some(_)) => {
                return Err(EngineError::Config(
                    "give the engine either a Ledger or a journal to recover from, not both".into(),
                ))
            }
            (None, ledger) => (
                ledger.unwrap_or_else(|| {
                    Ledger::with_capacity(self.ledger_config, self.accounts_hint)
                }),
                None,
            ),
            (Some((dir, durability)), None) => {
                let config = JournalConfig {
                    durability: *durability,
                    segment_bytes: self.segment_bytes,
                };
                // One lock from before the first read to the writer's end
                // (it owns the lock), so no other writer gets in between.
                let lock = journal::lock_dir(dir).map_err(EngineError::Journal)?;
                journal::check_meta(dir, &meta).map_err(EngineError::Journal)?;
                let recovered = journal::recover_locked(&lock, self.ledger_config)
                    .map_err(EngineError::Journal)?;
                for warning in &recovered.warnings {
                    eprintln!("ringledger: journal recovery: {warning}");
                }
                let mut writer =
                    JournalWriter::open_locked(lock, config).map_err(EngineError::Journal)?;
                writer
                    .resume(recovered.chain_head)
                    .map_err(EngineError::Journal)?;
                if let Some(metrics) = &self.metrics {
                    writer.set_metrics(metrics.journal.clone());
                }
                #[cfg(feature = "nats")]
                if let (Some(replication), Some(lease)) = (&self.replication, self.auto_takeover) {
                    let (ledger, writer, won) = crate::replication::stand_by(
                        replication,
                        lease,
                        meta,
                        (recovered.ledger, writer),
                        |_| {},
                    )
                    .map_err(replicate::engine_error)?;
                    takeover = Some(won);
                    (ledger, Some((dir.clone(), writer)))
                } else if let (Some(replication), true) = (&self.replication, self.takeover) {
                    let (ledger, writer, won) =
                        crate::replication::take_over(replication, meta, recovered.ledger, writer)
                            .map_err(replicate::engine_error)?;
                    takeover = Some(won);
                    (ledger, Some((dir.clone(), writer)))
                } else {
                    (recovered.ledger, Some((dir.clone(), writer)))
                }
                #[cfg(not(feature = "nats"))]
                (recovered.ledger, Some((dir.clone(), writer)))
            }
        };
        self.clock.resume_from(ledger.now_ms());
        // Rebates still owed (after recovery) are dispatched before any
        // client exists, so a first barrier already waits for them. The
        // backlog never exceeds the larger of its limit and what was owed at
        // the start, so the business thread's sends never wait.
        let owed = ledger.pending_rebates_len();
        let (jobs_tx, jobs_rx) = crossbeam::channel::bounded(self.rebate_backlog_max.max(owed));
        for job in ledger.pending_rebates() {
            let _ = jobs_tx.send(job);
        }
        // The business thread spins a little before parking: under a steady
        // stream of requests the next one is usually there within the budget.
        let (producer, consumer) =
            ring::channel_spinning(self.ring_capacity, self.wait, BUSINESS_SPIN_BUDGET);
        let (credits_tx, credits_rx) = ring::channel(rebater::LANE_CAPACITY, self.wait);
        let directory = ledger.instruments().map(|i| (i.symbol, i.id)).collect();
        let shared = Arc::new(Shared {
            scale: self.scale,
            requests: Mutex::new(Some(producer)),
            registrations: Mutex::new(Vec::new()),
            registered: AtomicBool::new(false),
            next_client: AtomicU32::new(0),
            departures: Mutex::new(Departures::default()),
            departed: AtomicBool::new(false),
            response_queues_held: AtomicUsize::new(0),
            response_slots: AtomicUsize::new(0),
            response_capacity: self.response_capacity,
            wait: self.wait,
            directory: RwLock::new(directory),
            rebates_dispatched: AtomicU64::new(owed as u64),
            rebates_answered: AtomicU64::new(0),
            journal_synced_seq: AtomicU64::new(
                journal
                    .as_ref()
                    .map_or(0, |(_, writer)| writer.durable_seq()),
            ),
            rebate_backlog_peak: AtomicU64::new(owed as u64),
            rebate_waiters: AtomicUsize::new(0),
            rebate_wait: Mutex::new(()),
            rebates_credited: Condvar::new(),
            failure: Mutex::new(None),
            failed: AtomicBool::new(false),
            rebater: OnceLock::new(),
            #[cfg(feature = "nats")]
            replication_backlog: OnceLock::new(),
        });
        let waker = consumer.waker();
        let downstream: Box<dyn stages::Stage> = match journal {
            None => Box::new(stages::Answer::new()),
            Some((dir, writer)) => match self.journal_thread {
                JournalThread::Flusher => Box::new(stages::Flushed {
                    flusher: flusher::Flusher::spawn(
                        writer,
                        ledger.last_seq(),
                        Arc::clone(&shared),
                    )
                    .map_err(EngineError::Io)?,
                    dir,
                }),
                JournalThread::Business => {
                    #[cfg(feature = "nats")]
                    if let Some(config) = &self.replication {
                        let replicate = replicate::Replicate::start(
                            config,
                            meta,
                            &dir,
                            ledger.last_seq(),
                            takeover.take(),
                            self.replication_backlog_max as u64,
                            Arc::clone(&shared),
                        )?;
                        Box::new(stages::Journal::new(dir, writer, replicate))
                    } else {
                        Box::new(stages::Journal::new(dir, writer, stages::Answer::new()))
                    }
                    #[cfg(not(feature = "nats"))]
                    Box::new(stages::Journal::new(dir, writer, stages::Answer::new()))
                }
            },
        };
        let business = business::spawn(business::Business {
            shared: Arc::clone(&shared),
            consumer,
            ledger,
            clock: self.clock,
            batch_max: self.batch_max,
            core,
            jobs: jobs_tx,
            credits: credits_rx,
            rebate_backlog_max: self.rebate_backlog_max as u64,
            downstream,
            snapshot_every: self.snapshot_every,
            snapshots_kept: self.snapshots_kept,
            batch_sizes: self.metrics.map(|m| m.batch_size),
        })?;
        let rebater = rebater::spawn(
            Arc::clone(&shared),
            self.rebate_policy,
            jobs_rx,
            credits_tx,
            waker,
            self.rebate_linger,
        )?;
        Ok(Engine {
            shared,
            business: Some(business),
            rebater: Some(rebater),
        })
    }
}

/// A running engine. Create one [`Client`] per gateway thread.
pub struct Engine {
    shared: Arc<Shared>,
    business: Option<JoinHandle<Ledger>>,
    rebater: Option<JoinHandle<()>>,
}

/// How long the idle business thread spins (under `WaitStrategy::Block`)
/// before it parks: a few request arrivals at 100k requests/s, far less than
/// a scheduler time slice.
const BUSINESS_SPIN_BUDGET: Duration = Duration::from_micros(30);

/// Default of [`EngineBuilder::rebate_backlog_max`]: a few milliseconds of
/// deposits at full speed, about 2 MB of queued jobs.
pub const REBATE_BACKLOG_MAX_DEFAULT: usize = 1 << 16;

/// Default of [`EngineBuilder::replication_backlog_max`]: 1,048,576 journal
/// records waiting for the stream, about 40 to 90 MB of frames (a record
/// is 36 to 86 bytes of bincode, plus a 64-byte header per frame of up to
/// `batch_max` records).
pub const REPLICATION_BACKLOG_MAX_DEFAULT: usize = 1 << 20;

/// Snapshots kept by default: the newest and the previous one.
pub const SNAPSHOTS_KEPT_DEFAULT: usize = 2;

/// How long shutdown waits for owed rebates before closing anyway (they stay
/// owed in the Ledger and are dispatched again on the next start).
const SHUTDOWN_REBATE_WAIT: Duration = Duration::from_secs(5);

impl Engine {
    pub fn builder() -> EngineBuilder {
        EngineBuilder::default()
    }

    /// A new gateway handle with its own response queue and no session: its
    /// requests are unnumbered (see [`Engine::session`] for numbered ones).
    pub fn client(&self) -> Result<Client, EngineError> {
        Client::new(&self.shared)
    }

    /// A new gateway handle in the session called `name`, opened or, if it
    /// is live (also after a restart: the name is journaled), resumed with
    /// its numbering, so that a request retried under the same number is
    /// applied at most once. See [`Client::open_session`].
    ///
    /// ```
    /// use ringledger::{Engine, Request};
    ///
    /// let engine = Engine::builder().start().unwrap();
    /// let mut client = engine.session("gateway-1").unwrap();
    /// let deposit = Request::Deposit { account: 1, amount: 500 };
    /// client.call_numbered(Request::OpenAccount { account: 1 }, 1).unwrap().unwrap();
    /// client.call_numbered(deposit, 2).unwrap().unwrap();
    /// let retry = client.call_numbered(deposit, 2).unwrap();
    /// assert_eq!(retry.unwrap_err().code().as_str(), "duplicate");
    /// ```
    pub fn session(&self, name: &str) -> Result<Client, EngineError> {
        let mut client = Client::new(&self.shared)?;
        client.open_session(name)?;
        Ok(client)
    }

    pub fn scale(&self) -> Scale {
        self.shared.scale
    }

    /// Why the engine stopped working on its own (fenced by a newer leader,
    /// its journal unwritable, a thread panicked), once it has: a front end
    /// that serves many clients stops taking requests then.
    pub fn failure(&self) -> Option<EngineError> {
        self.shared
            .failed
            .load(Ordering::Acquire)
            .then(|| self.shared.error())
    }

    /// A handle for a monitoring thread to read the engine's gauges at
    /// scrape time, so the hot path pays nothing for them.
    pub fn gauges(&self) -> EngineGauges {
        EngineGauges {
            shared: Arc::clone(&self.shared),
        }
    }

    /// Stops accepting requests, answers everything already accepted, waits
    /// (briefly) for owed rebates, joins every thread and hands back the
    /// final Ledger. `Err(Failed)` if the engine failed on the way (a
    /// business-thread panic or a journal write that failed).
    pub fn shutdown(mut self) -> Result<Ledger, EngineError> {
        self.stop()
    }

    fn stop(&mut self) -> Result<Ledger, EngineError> {
        let Some(business) = self.business.take() else {
            return Err(EngineError::Stopped);
        };
        let _ = client::wait_for_rebates(&self.shared, SHUTDOWN_REBATE_WAIT);
        if let Some(requests) = self.shared.requests.lock().take() {
            requests.close();
        }
        // Barriers still waiting see the engine stopped.
        self.shared.wake_rebate_waiters();
        let ledger = business.join();
        // The business thread dropped its job sender: a lingering rebate
        // thread sees that at once instead of when its linger ends.
        self.shared.hurry_rebates();
        if let Some(rebater) = self.rebater.take() {
            let _ = rebater.join();
        }
        match ledger {
            // A failed engine (a journal write failed) may hold state the
            // journal lacks: recovering from the journal is the way back.
            Ok(ledger) if !self.shared.failed.load(Ordering::Acquire) => Ok(ledger),
            _ => Err(self.shared.error()),
        }
    }
}

impl Drop for Engine {
    fn drop(&mut self) {
        let _ = self.stop();
    }
}
