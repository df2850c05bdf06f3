//! Automatic promotion (`--auto-takeover`): who may lead is decided by a
//! lease in JetStream's key-value store, an existing distributed primitive,
//! never by an election made here.
//!
//! The lease is one key (`leader`) in a bucket of its own per stream
//! (`ringledger-<stream>-lease`), whose `max_age` is the lease's time to
//! live: a message older than that is removed by the server, so the key of a
//! dead leader disappears by itself. A standby takes the lease with
//! `create` (JetStream's expected last subject sequence 0: only if nobody
//! holds it); the holder renews it with `update(key, value, revision)`
//! (only if nobody changed it since). Both are compare-and-set in the
//! stream's own (Raft) replication.
//!
//! The holder **fails closed**: it counts its lease valid until `ttl − margin`
//! after it *sent* its last renewal that the server confirmed. The server
//! stamps the renewal on arrival, after that send, so the key cannot expire
//! (and a standby cannot take it) before the holder's own deadline, as long
//! as the two clocks run at the same rate (the margin covers drift). Past
//! that deadline, or once a renewal finds the key changed, the holder
//! never acknowledges again: [`Lease::holds`] says why, and the callback
//! given to [`Lease::on_lost`] runs once.
//!
//! The lease decides who *tries* to lead; the stream's expected last
//! sequence still decides whose frames are stored. A standby that took the
//! lease catches up to the end of the stream and stores a takeover marker
//! (see [`super::take_over`]), so an old leader that woke up after its lease
//! expired is fenced by the stream even before it notices the lease is gone.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::{Duration, Instant};

use async_nats::jetstream::kv::{self, CreateErrorKind, Operation, UpdateErrorKind};
use async_nats::jetstream::{self, Context};
use parking_lot::Mutex;
use tokio::runtime::Runtime;

use super::{connect, runtime, unavailable, ReplicationConfig, ReplicationError};

/// The lease's time to live unless `--lease-ttl-ms` says otherwise: long
/// enough that a busy machine's pauses (hundreds of milliseconds here) do
/// not depose a healthy leader, short enough to fail over in seconds.
pub const LEASE_TTL_DEFAULT: Duration = Duration::from_secs(5);

/// The shortest lease accepted: renewals every fifth of it must still be
/// reasonable requests.
pub const LEASE_TTL_MIN: Duration = Duration::from_millis(500);

/// The longest lease accepted: a dead leader holds failover up for a whole
/// lease, so a longer one is a mistake, not a choice (and one beyond
/// JetStream's `max_age`, i64 nanoseconds, is refused by the server in a way
/// that looks like an outage).
pub const LEASE_TTL_MAX: Duration = Duration::from_secs(24 * 60 * 60);

/// The key holding the leader's id.
const LEASE_KEY: &str = "leader";

/// How the lease behaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LeaseConfig {
    /// Time to live of the lease: the bucket's `max_age` when this process
    /// creates the bucket. An existing bucket's own `max_age` wins (it is
    /// what the server expires by), and the holder counts with that.
    pub ttl: Duration,
}

impl Default for LeaseConfig {
    fn default() -> Self {
        LeaseConfig {
            ttl: LEASE_TTL_DEFAULT,
        }
    }
}

impl LeaseConfig {
    pub fn new(ttl: Duration) -> LeaseConfig {
        LeaseConfig { ttl }
    }

    fn check(&self) -> Result<(), ReplicationError> {
        if self.ttl < LEASE_TTL_MIN {
            return Err(ReplicationError::Config(format!(
                "a lease of {:?} is too short: use at least {LEASE_TTL_MIN:?}",
                self.ttl
            )));
        }
        if self.ttl > LEASE_TTL_MAX {
            return Err(ReplicationError::Config(format!(
                "a lease of {:?} is too long: use at most {LEASE_TTL_MAX:?} (a dead leader holds \
                 failover up for a whole lease)",
                self.ttl
            )));
        }
        Ok(())
    }
}

/// Timings derived from the bucket's time to live.
#[derive(Clone, Copy, Debug)]
struct Timing {
    ttl: Duration,
}

impl Timing {
    /// Renewals: five per lease, so four can fail before it runs out.
    fn renew_every(&self) -> Duration {
        self.ttl / 5
    }

    /// What the holder takes off its deadline for clock drift and for
    /// noticing in time.
    fn margin(&self) -> Duration {
        self.ttl / 5
    }

    /// How often a standby looks at the key.
    fn poll_every(&self) -> Duration {
        (self.ttl / 10).max(Duration::from_millis(50))
    }
}

/// The bucket of a stream's lease.
pub fn bucket_name(config: &ReplicationConfig) -> String {
    format!("ringledger-{}-lease", config.stream)
}

/// A standby's handle on the lease bucket: it looks at the key and takes it
/// when nobody holds it.
pub(super) struct LeaseBucket {
    rt: Runtime,
    store: kv::Store,
    timing: Timing,
    bucket: String,
}

impl LeaseBucket {
    /// Connects, and opens the bucket (created with `lease.ttl` as its
    /// `max_age` and the stream's replicas if missing).
    pub fn open(
        config: &ReplicationConfig,
        lease: LeaseConfig,
    ) -> Result<LeaseBucket, ReplicationError> {
        lease.check()?;
        let rt = runtime()?;
        let bucket = bucket_name(config);
        let (store, ttl) = rt.block_on(async {
            let js = connect(config).await?;
            open_bucket(&js, config, &bucket, lease.ttl).await
        })?;
        Ok(LeaseBucket {
            rt,
            store,
            timing: Timing { ttl },
            bucket,
        })
    }

    pub fn poll_every(&self) -> Duration {
        self.timing.poll_every()
    }

    pub fn ttl(&self) -> Duration {
        self.timing.ttl
    }

    /// Takes the lease for `id` if nobody holds it: `Ok(None)` while
    /// someone does (the holder's id, for messages, is in the error-free
    /// path's log line of the caller).
    pub fn try_take(&self, id: &str) -> Result<Option<Taken>, ReplicationError> {
        self.rt.block_on(async {
            let entry = tokio::time::timeout(super::REQUEST_TIMEOUT, self.store.entry(LEASE_KEY))
                .await
                .map_err(|e| unavailable(&format!("reading lease bucket {}", self.bucket), e))?
                .map_err(|e| unavailable(&format!("reading lease bucket {}", self.bucket), e))?;
            if entry.is_some_and(|e| e.operation == Operation::Put) {
                return Ok(None);
            }
            let sent = Instant::now();
            let created = tokio::time::timeout(
                super::REQUEST_TIMEOUT,
                self.store.create(LEASE_KEY, id.to_string().into()),
            )
            .await
            .map_err(|e| unavailable(&format!("taking the lease in {}", self.bucket), e))?;
            match created {
                Ok(revision) => Ok(Some(Taken { revision, sent })),
                Err(e) if e.kind() == CreateErrorKind::AlreadyExists => Ok(None),
                Err(e) => Err(unavailable(
                    &format!("taking the lease in {}", self.bucket),
                    e,
                )),
            }
        })
    }

    /// Starts renewing a lease just taken, on a thread of its own.
    pub fn keep(self, id: String, taken: Taken) -> Result<Lease, ReplicationError> {
        let state = Arc::new(LeaseState {
            origin: taken.sent,
            valid_until_ns: AtomicU64::new(0),
            lost: Mutex::new(None),
            on_lost: Mutex::new(None),
            timing: self.timing,
        });
        state.renewed(taken.sent);
        let (stop_tx, stop_rx) = mpsc::channel::<()>();
        let keeper = Keeper {
            state: Arc::clone(&state),
            bucket: self,
            id,
            revision: taken.revision,
        };
        let thread = thread::Builder::new()
            .name("ringledger-lease".into())
            .spawn(move || keeper.run(stop_rx))
            .map_err(|e| ReplicationError::Config(format!("cannot start the lease thread: {e}")))?;
        Ok(Lease {
            state,
            stop: Arc::new(Mutex::new(Some((stop_tx, thread)))),
        })
    }
}

/// The bucket, made if missing (without asking for the account's limits,
/// which the client cannot parse from every server version), and the time
/// to live the server expires its keys by.
async fn open_bucket(
    js: &Context,
    config: &ReplicationConfig,
    bucket: &str,
    ttl: Duration,
) -> Result<(kv::Store, Duration), ReplicationError> {
    // The layout `create_key_value` makes: one subject per key, history 1,
    // rollups, direct gets, new messages refused when full.
    let stream = js
        .get_or_create_stream(jetstream::stream::Config {
            name: format!("KV_{bucket}"),
            description: Some(format!(
                "ringledger leader lease of stream {}",
                config.stream
            )),
            subjects: vec![format!("$KV.{bucket}.>")],
            max_messages_per_subject: 1,
            max_age: ttl,
            storage: jetstream::stream::StorageType::File,
            num_replicas: config.replicas,
            allow_rollup: true,
            deny_delete: true,
            allow_direct: true,
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable(&format!("cannot open lease bucket {bucket}"), e))?;
    let ttl = stream.cached_info().config.max_age;
    if ttl < LEASE_TTL_MIN {
        return Err(ReplicationError::Config(format!(
            "lease bucket {bucket} expires keys after {ttl:?}: a lease needs a max_age of at \
             least {LEASE_TTL_MIN:?}"
        )));
    }
    let store = js
        .get_key_value(bucket)
        .await
        .map_err(|e| unavailable(&format!("cannot open lease bucket {bucket}"), e))?;
    Ok((store, ttl))
}

/// A lease just taken: its revision, and when the request that took it
/// was sent (the server's clock for it started later).
#[derive(Clone, Copy, Debug)]
pub(super) struct Taken {
    revision: u64,
    sent: Instant,
}

/// What runs once when the lease is lost.
type LostHook = Box<dyn FnOnce(String) + Send>;

/// The renewing thread: how to stop it, and its handle.
type KeeperThread = (mpsc::Sender<()>, thread::JoinHandle<()>);

struct LeaseState {
    origin: Instant,
    /// Nanoseconds after `origin` until which the lease holds (fails
    /// closed: before the server could expire it).
    valid_until_ns: AtomicU64,
    /// Why the lease was lost, once it was (for good).
    lost: Mutex<Option<String>>,
    on_lost: Mutex<Option<LostHook>>,
    timing: Timing,
}

impl LeaseState {
    fn renewed(&self, sent: Instant) {
        let until = sent + self.timing.ttl - self.timing.margin();
        let ns = until.saturating_duration_since(self.origin).as_nanos();
        self.valid_until_ns
            .store(u64::try_from(ns).unwrap_or(u64::MAX), Ordering::Release);
    }

    fn valid_until(&self) -> Instant {
        self.origin + Duration::from_nanos(self.valid_until_ns.load(Ordering::Acquire))
    }

    fn holds(&self) -> Result<(), String> {
        if let Some(why) = &*self.lost.lock() {
            return Err(why.clone());
        }
        if Instant::now() >= self.valid_until() {
            return Err(format!(
                "its leader lease was not renewed within {:?} (it expires after {:?}): it \
                 stopped acknowledging, as a standby may take the lease",
                self.timing.ttl - self.timing.margin(),
                self.timing.ttl
            ));
        }
        Ok(())
    }

    /// Marks the lease lost for good; `notify`: run the [`Lease::on_lost`]
    /// hook (not when this process released it itself).
    fn lose(&self, why: String, notify: bool) {
        {
            let mut lost = self.lost.lock();
            if lost.is_some() {
                return;
            }
            *lost = Some(why.clone());
        }
        let hook = self.on_lost.lock().take();
        if let (Some(hook), true) = (hook, notify) {
            hook(why);
        }
    }
}

/// The leader lease this process holds, renewed on a thread of its own.
/// Clones share it; the thread stops (and releases the key, so a standby
/// promotes at once) with [`Lease::release`] or when the last clone drops.
#[derive(Clone)]
pub struct Lease {
    state: Arc<LeaseState>,
    stop: Arc<Mutex<Option<KeeperThread>>>,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("holds", &self.holds())
            .finish()
    }
}

impl Lease {
    /// `Ok` while the lease certainly holds; otherwise why this process
    /// must not acknowledge anything any more. Lost once, lost for good.
    pub fn holds(&self) -> Result<(), String> {
        let held = self.state.holds();
        if let Err(why) = &held {
            self.state.lose(why.clone(), true);
        }
        held
    }

    /// Runs `hook` once, when the lease is lost (at once if it already is).
    pub fn on_lost(&self, hook: impl FnOnce(String) + Send + 'static) {
        let lost = self.state.lost.lock().clone();
        match lost {
            Some(why) => hook(why),
            None => *self.state.on_lost.lock() = Some(Box::new(hook)),
        }
    }

    /// Stops renewing and deletes the key (if this process still holds
    /// it), so that a standby takes over without waiting for it to expire.
    pub fn release(&self) {
        if let Some((stop, thread)) = self.stop.lock().take() {
            drop(stop);
            let _ = thread.join();
        }
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        if Arc::strong_count(&self.stop) == 1 {
            self.release();
        }
    }
}

/// The renewing thread's state.
struct Keeper {
    state: Arc<LeaseState>,
    bucket: LeaseBucket,
    id: String,
    revision: u64,
}

impl Keeper {
    fn run(mut self, stop: mpsc::Receiver<()>) {
        let timing = self.state.timing;
        let mut next = Instant::now() + timing.renew_every();
        loop {
            match stop.recv_timeout(next.saturating_duration_since(Instant::now())) {
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                // Released: give the key up if it is still ours.
                _ => {
                    if self.state.holds().is_ok() {
                        let store = &self.bucket.store;
                        let _ = self.bucket.rt.block_on(async {
                            tokio::time::timeout(
                                super::REQUEST_TIMEOUT,
                                store.delete_expect_revision(LEASE_KEY, Some(self.revision)),
                            )
                            .await
                        });
                    }
                    self.state
                        .lose("the leader lease was released".into(), false);
                    return;
                }
            }
            if let Err(why) = self.state.holds() {
                self.state.lose(why, true);
                return;
            }
            let sent = Instant::now();
            // Never wait past the deadline: the holder must know by then.
            let wait = self.state.valid_until().saturating_duration_since(sent);
            let store = &self.bucket.store;
            let renewed = self.bucket.rt.block_on(async {
                tokio::time::timeout(
                    wait,
                    store.update(LEASE_KEY, self.id.clone().into(), self.revision),
                )
                .await
            });
            match renewed {
                Ok(Ok(revision)) => {
                    self.revision = revision;
                    self.state.renewed(sent);
                    next = sent + timing.renew_every();
                }
                Ok(Err(e)) if e.kind() == UpdateErrorKind::WrongLastRevision => {
                    self.state.lose(
                        format!(
                            "its leader lease in bucket {} was taken by another process",
                            self.bucket.bucket
                        ),
                        true,
                    );
                    return;
                }
                Ok(Err(e)) => {
                    eprintln!(
                        "ringledger: renewing the leader lease in {} failed: {e}; retrying",
                        self.bucket.bucket
                    );
                    next = Instant::now() + timing.renew_every() / 4;
                }
                Err(_) => next = Instant::now(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_ttl_out_of_range_is_refused_before_any_server_is_asked() {
        for ms in [0, 1, 499, 86_400_001, 9_223_372_036_854_775_807, u64::MAX] {
            let refused = LeaseConfig::new(Duration::from_millis(ms)).check();
            assert!(
                matches!(refused, Err(ReplicationError::Config(_))),
                "{ms} ms: {refused:?}"
            );
        }
        for ms in [500, 5_000, 86_400_000] {
            assert!(
                LeaseConfig::new(Duration::from_millis(ms)).check().is_ok(),
                "{ms} ms"
            );
        }
    }
}
