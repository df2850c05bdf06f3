//! The seeds' own designs on their real servers, for `ringledger bench`
//! (cargo feature `external-engines`, off by default).
//!
//! - [`PgBank`] is seed 1 as written, on PostgreSQL: one transaction per
//!   operation, the wallet row locked with `SELECT … FOR UPDATE`
//!   ([`Locking::Pessimistic`], engine `postgres`) or guarded by a version
//!   column with retry ([`Locking::Optimistic`], engine
//!   `postgres-optimistic`), a row in a `transactions` table, and for a
//!   deposit a rebate job row queued in the same transaction, which a queue
//!   worker (its own thread and connection, `FOR UPDATE SKIP LOCKED` like
//!   Laravel's database queue) credits.
//! - [`RedisBank`] is seed 2, on Redis: Lua scripts that check and update
//!   atomically (balances, holds, the share supply, reservations), and the
//!   rebates through a Redis list used as a queue, with a worker.
//!
//! Both implement [`Bank`](crate::baseline::Bank), so the benchmark drives
//! them like the in-process baselines: one client thread per request in
//! flight, each call synchronous, each thread on its own connection from a
//! pool sized for them. Both compute the rebate with the engine's
//! [`RateRebate`](crate::RateRebate) (1%, rounded toward zero).
//!
//! **Leaving the server as found.** A run works in its own namespace: a
//! PostgreSQL schema named `ringledger_bench_<pid>_<nanos>`, dropped with
//! everything in it at the end, and Redis keys under a prefix of the same
//! form, deleted at the end by `SCAN MATCH`. Redis settings changed for the
//! run's durability are put back as they were. Both happen in `Drop`, so an
//! error or a panic cleans up too (a killed process cannot: its schema or
//! keys stay, under a name that says what they are).
//!
//! **Durability, mapped honestly** (see [`Durability`](crate::journal::Durability)):
//!
//! | `--durability` | PostgreSQL (per session) | Redis (server-wide, restored after) |
//! |---|---|---|
//! | `sync` | `synchronous_commit = on`: the commit's WAL is flushed before the reply | `appendonly yes`, `appendfsync always` |
//! | `async` | `synchronous_commit = off`: the reply comes before the WAL flush | `appendonly yes`, `appendfsync everysec` |
//! | `none` | `synchronous_commit = off` too: PostgreSQL always writes WAL | `appendonly no` |
//!
//! `synchronous_commit = off` and `appendfsync everysec` can lose the last
//! commits (up to about three times `wal_writer_delay`, or a second) if the
//! *server* crashes or the machine loses power, not only the client: that is
//! weaker than the engine's `async`, whose records reach the OS page cache
//! before the reply and so survive any crash of the engine's process.
//!
//! **Servers.** `RINGLEDGER_POSTGRES_URL` (default
//! [`POSTGRES_URL_DEFAULT`]) and `RINGLEDGER_REDIS_URL` (default
//! [`REDIS_URL_DEFAULT`]). Connecting gives up after
//! [`CONNECT_TIMEOUT`] with an error naming the address.

mod pg;
mod redis_bank;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::{Condvar, Mutex};

pub use self::pg::{Locking, PgBank};
pub use self::redis_bank::RedisBank;
use crate::baseline::{RebateCounts, REBATE_BACKLOG_MAX};
use crate::outcome::Reject;

/// Where `--engine postgres` connects unless `RINGLEDGER_POSTGRES_URL` says.
pub const POSTGRES_URL_DEFAULT: &str = "postgresql://postgres@127.0.0.1:5432/test";
/// Where `--engine redis` connects unless `RINGLEDGER_REDIS_URL` says.
pub const REDIS_URL_DEFAULT: &str = "redis://127.0.0.1:6379/";
/// How long connecting to a server may take before the run gives up.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// The PostgreSQL URL from `RINGLEDGER_POSTGRES_URL`, or the default.
pub fn postgres_url() -> String {
    std::env::var("RINGLEDGER_POSTGRES_URL").unwrap_or_else(|_| POSTGRES_URL_DEFAULT.into())
}

/// The Redis URL from `RINGLEDGER_REDIS_URL`, or the default.
pub fn redis_url() -> String {
    std::env::var("RINGLEDGER_REDIS_URL").unwrap_or_else(|_| REDIS_URL_DEFAULT.into())
}

/// Why an external engine could not be set up, run or checked: a server
/// that cannot be reached, refuses, or fails part-way. The message names
/// the server's address.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerError(pub String);

impl fmt::Display for ServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ServerError {}

/// What a [`Bank`](crate::baseline::Bank) call answers when the server
/// failed under it (the trait has no room for that): the call counts as
/// refused, and the first failure is kept in [`Failure`] so the run stops
/// with it instead of reporting numbers.
pub fn server_failed() -> Reject {
    Reject::Overflow("the server failed; the run reports why")
}

/// The first server failure seen during a run.
#[derive(Default)]
pub struct Failure(Mutex<Option<String>>);

impl Failure {
    pub fn record(&self, why: String) {
        self.0.lock().get_or_insert(why);
    }

    pub fn get(&self) -> Option<String> {
        self.0.lock().clone()
    }
}

/// The rebate bookkeeping a bank and its worker share: counts that say
/// when everything is settled, and the backlog bound deposits wait on.
#[derive(Default)]
pub struct RebateProgress {
    queued: AtomicU64,
    credited: AtomicU64,
    /// Pairs with `changed`; holds nothing, the counts are atomics.
    lock: Mutex<()>,
    changed: Condvar,
}

/// How long a waiter sleeps between looks at whether the worker died.
const WAIT_SLICE: Duration = Duration::from_millis(50);

impl RebateProgress {
    pub fn counts(&self) -> RebateCounts {
        // A deposit counts its job after its commit, so the worker may have
        // credited it already: never show more credited than queued.
        let queued = self.queued.load(Ordering::Acquire);
        RebateCounts {
            queued,
            credited: self.credited.load(Ordering::Acquire).min(queued),
        }
    }

    /// A deposit committed `jobs` rebate jobs; waits while more than
    /// [`REBATE_BACKLOG_MAX`] are owed (unless `alive` turns false), as the
    /// baselines' and the engine's deposits wait at the same depth.
    pub fn queued(&self, jobs: u64, alive: impl Fn() -> bool) {
        self.queued.fetch_add(jobs, Ordering::AcqRel);
        let max = REBATE_BACKLOG_MAX as u64;
        if self.counts().owed() <= max {
            return;
        }
        let mut guard = self.lock.lock();
        while self.counts().owed() > max && alive() {
            self.changed.wait_for(&mut guard, WAIT_SLICE);
        }
    }

    /// The worker credited `jobs` jobs.
    pub fn credited(&self, jobs: u64) {
        self.credited.fetch_add(jobs, Ordering::AcqRel);
        let _guard = self.lock.lock();
        self.changed.notify_all();
    }

    /// Parks until every job queued before the call is credited; false if
    /// `alive` turned false first (the worker stopped).
    pub fn settle(&self, alive: impl Fn() -> bool) -> bool {
        let target = self.queued.load(Ordering::Acquire);
        let mut guard = self.lock.lock();
        while self.credited.load(Ordering::Acquire) < target {
            if !alive() {
                return false;
            }
            self.changed.wait_for(&mut guard, WAIT_SLICE);
        }
        true
    }
}

/// The connections of the client threads: a thread takes one for a call
/// and gives it back (there are as many as threads, so a take rarely waits).
pub struct Pool<T> {
    free: Mutex<Vec<T>>,
    returned: Condvar,
}

impl<T> Default for Pool<T> {
    fn default() -> Self {
        Pool {
            free: Mutex::new(Vec::new()),
            returned: Condvar::new(),
        }
    }
}

impl<T> Pool<T> {
    pub fn fill(&self, items: Vec<T>) {
        self.free.lock().extend(items);
        self.returned.notify_all();
    }

    pub fn take(&self) -> T {
        let mut free = self.free.lock();
        loop {
            if let Some(item) = free.pop() {
                return item;
            }
            self.returned.wait(&mut free);
        }
    }

    pub fn give(&self, item: T) {
        self.free.lock().push(item);
        self.returned.notify_one();
    }

    /// Closes every connection given back.
    pub fn clear(&self) {
        self.free.lock().clear();
    }
}

/// A name no other run uses: `ringledger_bench_<pid>_<nanos>`.
pub fn unique_name() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    format!("ringledger_bench_{}_{nanos}", std::process::id())
}

/// What a benchmark needs of an external bank beyond [`Bank`]: the failure
/// that stops a run (a [`Bank`] call can only answer a [`Reject`]).
///
/// [`Bank`]: crate::baseline::Bank
pub trait ExternalBank: crate::baseline::Bank {
    /// The first server failure of the run, if any (a queue worker that
    /// stopped with rebates owed is one).
    fn failure(&self) -> Option<ServerError>;
}
