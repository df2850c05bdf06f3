//! Seed 1 on PostgreSQL: the Laravel wallet as written.
//!
//! Every operation is one transaction (`DB::transaction`) on a connection
//! of its own client thread. [`Locking::Pessimistic`] reads each row it
//! changes with `SELECT … FOR UPDATE` (`lockForUpdate`), always in one
//! order (instrument, then wallets by ascending id, then the reservation)
//! so two operations never deadlock. [`Locking::Optimistic`] reads without
//! locks and writes `… WHERE id = $1 AND version = $v`; a write that finds
//! the version moved rolls the whole transaction back and starts again
//! (each retry counted), as do a deadlock or serialization failure
//! reported by the server. A deposit, withdrawal, transfer or purchase
//! inserts its signed amount into `transactions`; a deposit also queues a
//! rebate job row in `jobs`, in the same transaction (`CalculateRebate::
//! dispatch` on the database queue).
//!
//! The queue worker is a thread with its own connection. Like Laravel's
//! database queue it claims jobs with `SELECT … FOR UPDATE SKIP LOCKED`,
//! credits them and deletes them in one transaction; unlike Laravel's, which
//! takes one job per transaction, it takes up to [`JOBS_PER_CLAIM`] at once
//! (kinder to the server, and the engine's rebate thread batches too). It
//! computes each rebate with the engine's [`RateRebate`], credits the
//! wallets in ascending id order, bumps their version (so an optimistic
//! writer notices) and records each credit in `transactions`.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use postgres::error::SqlState;
use postgres::{Client, Config, NoTls, Statement, Transaction};

use super::{
    server_failed, unique_name, ExternalBank, Failure, Pool, RebateProgress, ServerError,
    CONNECT_TIMEOUT,
};
use crate::baseline::{positive, take_shares, Bank, Listing, RebateCounts};
use crate::journal::Durability;
use crate::money::Units;
use crate::outcome::{Closure, InstrumentView, Reject};
use crate::rebate::{RateRebate, RebateJob, RebatePolicy};
use crate::request::{AccountId, InstrumentId, ReservationId, Symbol};

/// How an operation keeps its rows from changing under it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Locking {
    /// `SELECT … FOR UPDATE` on every row it will change.
    Pessimistic,
    /// A `version` column checked by every `UPDATE`, with retry.
    Optimistic,
}

/// Jobs the worker claims in one transaction.
pub const JOBS_PER_CLAIM: i64 = 256;
/// Queue workers (each its own thread and connection).
const WORKERS: usize = 1;
/// How long a worker that found the queue empty waits before looking again.
const IDLE_POLL: Duration = Duration::from_millis(1);

/// Connections a run opens besides one per client thread: the set-up and
/// check connection and the workers'.
pub const CONNECTIONS_EXTRA: usize = 1 + WORKERS;

/// One client thread's connection and its prepared statements.
struct Conn {
    client: Client,
    st: Statements,
}

struct Statements {
    /// Optimistic: the writes check the version read.
    versioned: bool,
    read_wallet: Statement,
    write_wallet: Statement,
    read_instrument: Statement,
    write_instrument: Statement,
    read_reservation: Statement,
    reservation_exists: Statement,
    open_reservation: Statement,
    close_reservation: Statement,
    record: Statement,
    queue_job: Statement,
    balance: Statement,
}

impl Statements {
    fn prepare(client: &mut Client, locking: Locking) -> Result<Statements, postgres::Error> {
        let lock = match locking {
            Locking::Pessimistic => " FOR UPDATE",
            Locking::Optimistic => "",
        };
        let versioned = locking == Locking::Optimistic;
        let check = if versioned { " AND version = $5" } else { "" };
        Ok(Statements {
            versioned,
            read_wallet: client.prepare(&format!(
                "SELECT balance, held, version FROM wallets WHERE id = $1{lock}"
            ))?,
            write_wallet: client.prepare(&format!(
                "UPDATE wallets SET balance = $2, held = $3, version = version + 1 \
                 WHERE id = $1{}",
                if versioned { " AND version = $4" } else { "" }
            ))?,
            read_instrument: client.prepare(&format!(
                "SELECT symbol, supply, available, reserved, sold, price, version \
                 FROM instruments WHERE id = $1{lock}"
            ))?,
            write_instrument: client.prepare(&format!(
                "UPDATE instruments SET available = $2, reserved = $3, sold = $4, \
                 version = version + 1 WHERE id = $1{check}"
            ))?,
            read_reservation: client.prepare(
                "SELECT wallet_id, instrument_id, qty, cost, state FROM reservations WHERE id = $1",
            )?,
            reservation_exists: client.prepare("SELECT 1 FROM reservations WHERE id = $1")?,
            open_reservation: client.prepare(
                "INSERT INTO reservations (id, wallet_id, instrument_id, qty, cost) \
                 VALUES ($1, $2, $3, $4, $5)",
            )?,
            close_reservation: client
                .prepare("UPDATE reservations SET state = $2 WHERE id = $1 AND state = 'open'")?,
            record: client.prepare(
                "INSERT INTO transactions (wallet_id, kind, amount) VALUES ($1, $2, $3)",
            )?,
            queue_job: client.prepare("INSERT INTO jobs (wallet_id, amount) VALUES ($1, $2)")?,
            balance: client.prepare("SELECT balance, held FROM wallets WHERE id = $1")?,
        })
    }
}

/// Why one attempt at an operation stopped.
enum Stop {
    /// A business rule refused it: roll back and answer.
    Reject(Reject),
    /// An optimistic write found the row changed: roll back and retry.
    Conflict,
    Server(postgres::Error),
}

impl From<Reject> for Stop {
    fn from(r: Reject) -> Stop {
        Stop::Reject(r)
    }
}

impl From<postgres::Error> for Stop {
    fn from(e: postgres::Error) -> Stop {
        Stop::Server(e)
    }
}

/// A deadlock or serialization failure: the server rolled the transaction
/// back and asks for it to be run again.
fn retryable(e: &postgres::Error) -> bool {
    e.code() == Some(&SqlState::T_R_DEADLOCK_DETECTED)
        || e.code() == Some(&SqlState::T_R_SERIALIZATION_FAILURE)
}

struct WalletRow {
    balance: Units,
    held: Units,
    version: i64,
}

struct InstrumentRow {
    listing: Listing,
    available: u64,
    reserved: u64,
    sold: u64,
    version: i64,
}

/// Seed 1 on a PostgreSQL server, in a schema of its own that is dropped
/// when the bank is.
pub struct PgBank {
    /// `host:port`, for messages.
    address: String,
    schema: String,
    pool: Pool<Conn>,
    admin: Mutex<Client>,
    progress: Arc<RebateProgress>,
    failure: Arc<Failure>,
    retries: AtomicU64,
    stop: Arc<AtomicBool>,
    workers_running: Arc<AtomicUsize>,
    workers: Mutex<Vec<JoinHandle<()>>>,
    policy: RateRebate,
}

/// `host:port` of the first host in `config`, for messages.
fn address_of(config: &Config) -> String {
    let host = match config.get_hosts().first() {
        Some(postgres::config::Host::Tcp(host)) => host.clone(),
        #[cfg(unix)]
        Some(postgres::config::Host::Unix(path)) => path.display().to_string(),
        None => "localhost".into(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// Connects with `config`, giving up after [`CONNECT_TIMEOUT`] (plus a
/// second for the handshake): the client library's own timeout covers only
/// the TCP connect, and a server that accepts and then says nothing would
/// hang it. A connect given up on is left to finish or fail on its thread.
fn connect_within(config: &Config, address: &str) -> Result<Client, ServerError> {
    let (answer, answered) = std::sync::mpsc::channel();
    let config = config.clone();
    std::thread::Builder::new()
        .name("pg-connect".into())
        .spawn(move || {
            let _ = answer.send(config.connect(NoTls));
        })
        .map_err(|e| ServerError(format!("starting a connect thread: {e}")))?;
    let patience = CONNECT_TIMEOUT + Duration::from_secs(1);
    match answered.recv_timeout(patience) {
        Ok(Ok(client)) => Ok(client),
        Ok(Err(e)) => Err(ServerError(format!(
            "PostgreSQL at {address}: cannot connect (is the server running? set \
             RINGLEDGER_POSTGRES_URL): {e}"
        ))),
        Err(_) => Err(ServerError(format!(
            "PostgreSQL at {address}: no answer within {} s (is it a PostgreSQL server? set \
             RINGLEDGER_POSTGRES_URL)",
            patience.as_secs()
        ))),
    }
}

impl PgBank {
    /// Connects to `url`, checks that the server allows `clients` more
    /// connections (plus [`CONNECTIONS_EXTRA`]), creates the run's schema and
    /// tables, opens one connection per client and starts the queue worker.
    /// `durability` sets each session's `synchronous_commit` (see the
    /// module docs of [`crate::external`]).
    pub fn connect(
        url: &str,
        locking: Locking,
        durability: Durability,
        clients: usize,
        policy: RateRebate,
    ) -> Result<PgBank, ServerError> {
        let mut config = Config::from_str(url)
            .map_err(|e| ServerError(format!("the PostgreSQL URL {url:?} is not valid: {e}")))?;
        config.connect_timeout(CONNECT_TIMEOUT);
        let address = address_of(&config);
        let fail = |what: &str, e: postgres::Error| {
            ServerError(format!("PostgreSQL at {address}: {what}: {e}"))
        };
        let mut admin = connect_within(&config, &address)?;
        Room::read(&mut admin, &address)?.check(&address, clients)?;
        let schema = unique_name();
        create_schema(&mut admin, &schema).map_err(|e| fail("creating the run's schema", e))?;
        // From here on, dropping the bank drops the schema.
        let mut bank = PgBank {
            address: address.clone(),
            schema,
            pool: Pool::default(),
            admin: Mutex::new(admin),
            progress: Arc::new(RebateProgress::default()),
            failure: Arc::new(Failure::default()),
            retries: AtomicU64::new(0),
            stop: Arc::new(AtomicBool::new(false)),
            workers_running: Arc::new(AtomicUsize::new(0)),
            workers: Mutex::new(Vec::new()),
            policy,
        };
        let session = |config: &Config| -> Result<Client, ServerError> {
            let mut client = connect_within(config, &address)?;
            set_session(&mut client, &bank.schema, durability)
                .map_err(|e| fail("setting up a session", e))?;
            Ok(client)
        };
        let mut conns = Vec::with_capacity(clients);
        for _ in 0..clients {
            let mut client = session(&config)?;
            let st = Statements::prepare(&mut client, locking)
                .map_err(|e| fail("preparing statements", e))?;
            conns.push(Conn { client, st });
        }
        bank.pool.fill(conns);
        set_session(bank.admin.get_mut(), &bank.schema, durability)
            .map_err(|e| fail("setting up a session", e))?;
        for index in 0..WORKERS {
            let client = session(&config)?;
            let worker = Worker {
                client,
                address: address.clone(),
                policy,
                progress: Arc::clone(&bank.progress),
                failure: Arc::clone(&bank.failure),
                stop: Arc::clone(&bank.stop),
                running: Arc::clone(&bank.workers_running),
            };
            bank.workers_running.fetch_add(1, Ordering::AcqRel);
            let handle = std::thread::Builder::new()
                .name(format!("pg-queue-worker-{index}"))
                .spawn(move || worker.run())
                .map_err(|e| ServerError(format!("starting the queue worker: {e}")))?;
            bank.workers.get_mut().push(handle);
        }
        Ok(bank)
    }

    /// Most requests in flight a run on the server at `url` may have now
    /// (one connection each, see [`CONNECTIONS_EXTRA`]), and why.
    pub fn inflight_max(url: &str) -> Result<(usize, String), ServerError> {
        let mut config = Config::from_str(url)
            .map_err(|e| ServerError(format!("the PostgreSQL URL {url:?} is not valid: {e}")))?;
        config.connect_timeout(CONNECT_TIMEOUT);
        let address = address_of(&config);
        let mut admin = connect_within(&config, &address)?;
        let room = Room::read(&mut admin, &address)?;
        let why = format!(
            "PostgreSQL at {address} allows {} in flight (max_connections {} − {} reserved − {} \
             in use − {CONNECTIONS_EXTRA} for set-up and the queue worker)",
            room.inflight_max(),
            room.max,
            room.reserved,
            room.others
        );
        Ok((room.inflight_max(), why))
    }

    /// The run's schema (tests look for it after the bank is gone).
    pub fn schema(&self) -> &str {
        &self.schema
    }

    fn alive(&self) -> bool {
        self.workers_running.load(Ordering::Acquire) > 0
    }

    /// Runs `attempt` in a transaction on a pooled connection until it
    /// commits or is refused, retrying conflicts.
    fn transact<T>(
        &self,
        mut attempt: impl FnMut(&mut Transaction<'_>, &Statements) -> Result<T, Stop>,
    ) -> Result<T, Reject> {
        let mut conn = self.pool.take();
        let result = loop {
            let Conn { client, st } = &mut conn;
            let mut tx = match client.transaction() {
                Ok(tx) => tx,
                Err(e) => break Err(Stop::Server(e)),
            };
            match attempt(&mut tx, st) {
                Ok(value) => match tx.commit() {
                    Ok(()) => break Ok(value),
                    Err(e) if retryable(&e) => {}
                    Err(e) => break Err(Stop::Server(e)),
                },
                Err(Stop::Conflict) => {
                    if let Err(e) = tx.rollback() {
                        break Err(Stop::Server(e));
                    }
                }
                Err(Stop::Server(e)) if retryable(&e) => {
                    if let Err(e) = tx.rollback() {
                        break Err(Stop::Server(e));
                    }
                }
                Err(stop) => {
                    let rolled_back = tx.rollback();
                    break match (stop, rolled_back) {
                        (stop, Ok(())) => Err(stop),
                        (_, Err(e)) => Err(Stop::Server(e)),
                    };
                }
            }
            self.retries.fetch_add(1, Ordering::Relaxed);
        };
        self.pool.give(conn);
        match result {
            Ok(value) => Ok(value),
            Err(Stop::Reject(reject)) => Err(reject),
            Err(Stop::Conflict) => unreachable!("a conflict is retried"),
            Err(Stop::Server(e)) => {
                self.failure
                    .record(format!("PostgreSQL at {}: {e}", self.address));
                Err(server_failed())
            }
        }
    }

    fn close(&self, reservation: ReservationId, how: Closure) -> Result<(), Reject> {
        let unknown = |closed| Reject::UnknownReservation {
            reservation,
            closed,
        };
        let id = i64::try_from(reservation).map_err(|_| unknown(None))?;
        let state = match how {
            Closure::Confirmed => "confirmed",
            _ => "cancelled",
        };
        self.transact(|tx, st| {
            let row = tx
                .query_opt(&st.read_reservation, &[&id])?
                .ok_or(unknown(None))?;
            match row.get::<_, &str>(4) {
                "open" => {}
                "confirmed" => return Err(unknown(Some(Closure::Confirmed)).into()),
                _ => return Err(unknown(Some(Closure::Cancelled)).into()),
            }
            let (wallet, instrument): (i64, i32) = (row.get(0), row.get(1));
            let (qty, cost): (i64, i64) = (row.get(2), row.get(3));
            let stock = read_instrument(tx, st, instrument)?
                .ok_or(Reject::UnknownInstrument(InstrumentId(instrument as u32)))?;
            let w =
                read_wallet(tx, st, wallet)?.ok_or(Reject::UnknownAccount(wallet as AccountId))?;
            // Closed since the unlocked read: start again and see how.
            if tx.execute(&st.close_reservation, &[&id, &state])? == 0 {
                return Err(Stop::Conflict);
            }
            let qty = qty as u64;
            let (mut available, mut sold, mut balance) = (stock.available, stock.sold, w.balance);
            if how == Closure::Confirmed {
                sold += qty;
                balance -= cost;
                tx.execute(&st.record, &[&wallet, &"purchase", &-cost])?;
            } else {
                available += qty;
            }
            write_instrument(
                tx,
                st,
                instrument,
                available,
                stock.reserved - qty,
                sold,
                stock.version,
            )?;
            write_wallet(tx, st, wallet, balance, w.held - cost, w.version)?;
            Ok(())
        })
    }

    fn checked(&self) -> Result<(), String> {
        let mut admin = self.admin.lock();
        let one = |admin: &mut Client, sql: &str| -> Result<Option<postgres::Row>, String> {
            admin
                .query_opt(sql, &[])
                .map_err(|e| format!("PostgreSQL at {}: checking: {e}", self.address))
        };
        if let Some(r) = one(
            &mut admin,
            "SELECT id, balance, held FROM wallets \
             WHERE balance < 0 OR held < 0 OR held > balance ORDER BY id LIMIT 1",
        )? {
            let (id, balance, held): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
            return Err(format!(
                "account {id}: balance {balance} held {held} breaks 0 <= held <= balance"
            ));
        }
        if let Some(r) = one(
            &mut admin,
            "SELECT w.id, w.held, COALESCE(r.cost, 0)::bigint FROM wallets w LEFT JOIN \
             (SELECT wallet_id, sum(cost) AS cost FROM reservations WHERE state = 'open' \
              GROUP BY wallet_id) r ON r.wallet_id = w.id \
             WHERE w.held <> COALESCE(r.cost, 0) ORDER BY w.id LIMIT 1",
        )? {
            let (id, held, open): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
            return Err(format!(
                "account {id}: held {held} but open reservations hold {open}"
            ));
        }
        if let Some(r) = one(
            &mut admin,
            "SELECT w.id, w.balance, COALESCE(t.total, 0)::bigint FROM wallets w LEFT JOIN \
             (SELECT wallet_id, sum(amount) AS total FROM transactions GROUP BY wallet_id) t \
             ON t.wallet_id = w.id WHERE w.balance <> COALESCE(t.total, 0) ORDER BY w.id LIMIT 1",
        )? {
            let (id, balance, total): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
            return Err(format!(
                "account {id}: balance {balance} but its transactions add up to {total}"
            ));
        }
        if let Some(r) = one(
            &mut admin,
            "SELECT i.symbol, i.available, i.reserved, i.sold, i.supply, \
             COALESCE(r.qty, 0)::bigint FROM instruments i LEFT JOIN \
             (SELECT instrument_id, sum(qty) AS qty FROM reservations WHERE state = 'open' \
              GROUP BY instrument_id) r ON r.instrument_id = i.id \
             WHERE i.available < 0 OR i.reserved < 0 OR i.sold < 0 \
             OR i.available + i.reserved + i.sold <> i.supply \
             OR i.reserved <> COALESCE(r.qty, 0) ORDER BY i.id LIMIT 1",
        )? {
            let symbol: String = r.get(0);
            let [available, reserved, sold, supply, open]: [i64; 5] =
                [r.get(1), r.get(2), r.get(3), r.get(4), r.get(5)];
            return Err(format!(
                "instrument {symbol}: available {available} + reserved {reserved} + sold {sold} \
                 vs supply {supply}, open reservations take {open}"
            ));
        }
        let r = one(
            &mut admin,
            "SELECT (SELECT COALESCE(sum(balance), 0) FROM wallets)::text, \
             (SELECT COALESCE(sum(sold * price), 0) FROM instruments)::text, \
             (SELECT COALESCE(sum(amount), 0) FROM transactions \
              WHERE kind IN ('deposit', 'withdraw', 'rebate'))::text, \
             (SELECT COALESCE(sum(balance), 0) FROM wallets) \
              + (SELECT COALESCE(sum(sold * price), 0) FROM instruments) \
              = (SELECT COALESCE(sum(amount), 0) FROM transactions \
                 WHERE kind IN ('deposit', 'withdraw', 'rebate'))",
        )?
        .ok_or("the money check returned no row")?;
        if !r.get::<_, bool>(3) {
            let [cash, proceeds, net]: [String; 3] = [r.get(0), r.get(1), r.get(2)];
            return Err(format!(
                "money is not conserved: balances {cash} + sale proceeds {proceeds} != \
                 deposited − withdrawn + rebates {net}"
            ));
        }
        let rate = self.policy.rate().to_string();
        let r = admin
            .query_one(
                "SELECT (SELECT count(*) FROM jobs), \
                 (SELECT count(*) FROM transactions WHERE kind = 'deposit'), \
                 (SELECT count(*) FROM transactions WHERE kind = 'rebate'), \
                 (SELECT COALESCE(sum(trunc(amount * $1::text::numeric)), 0) \
                  FROM transactions WHERE kind = 'deposit')::text, \
                 (SELECT COALESCE(sum(amount), 0) FROM transactions WHERE kind = 'rebate')::text",
                &[&rate],
            )
            .map_err(|e| format!("PostgreSQL at {}: checking: {e}", self.address))?;
        let (jobs, deposits, rebates): (i64, i64, i64) = (r.get(0), r.get(1), r.get(2));
        let (owed, paid): (String, String) = (r.get(3), r.get(4));
        if jobs != 0 || deposits != rebates || owed != paid {
            return Err(format!(
                "rebates: {jobs} jobs still queued, {rebates} credited for {deposits} deposits, \
                 {paid} paid of {owed} owed"
            ));
        }
        Ok(())
    }
}

/// How many more connections the server lets this run open, counting the
/// connection `admin` as one of them, and the figures behind it.
struct Room {
    max: i32,
    reserved: i32,
    /// Client connections open besides `admin`.
    others: i32,
}

impl Room {
    fn read(admin: &mut Client, address: &str) -> Result<Room, ServerError> {
        let row = admin
            .query_one(
                "SELECT current_setting('max_connections')::int, \
                 current_setting('superuser_reserved_connections')::int, \
                 (SELECT count(*)::int FROM pg_stat_activity \
                  WHERE backend_type = 'client backend')",
                &[],
            )
            .map_err(|e| {
                ServerError(format!(
                    "PostgreSQL at {address}: reading max_connections: {e}"
                ))
            })?;
        Ok(Room {
            max: row.get(0),
            reserved: row.get(1),
            others: row.get::<_, i32>(2) - 1,
        })
    }

    /// Connections this run may open, `admin` included.
    fn connections(&self) -> usize {
        (self.max - self.reserved - self.others).max(0) as usize
    }

    /// Requests in flight this run may have: a connection each, after
    /// [`CONNECTIONS_EXTRA`].
    fn inflight_max(&self) -> usize {
        self.connections().saturating_sub(CONNECTIONS_EXTRA)
    }

    fn check(&self, address: &str, clients: usize) -> Result<(), ServerError> {
        let needed = clients + CONNECTIONS_EXTRA;
        if needed <= self.connections() {
            return Ok(());
        }
        Err(ServerError(format!(
            "{clients} requests in flight need {needed} connections to PostgreSQL at {address} \
             (one per request in flight, plus {CONNECTIONS_EXTRA} for set-up and the queue \
             worker), but the server allows {} more (max_connections {} − {} reserved for \
             superusers − {} in use): run {} or fewer in flight",
            self.connections(),
            self.max,
            self.reserved,
            self.others,
            self.inflight_max()
        )))
    }
}

fn create_schema(admin: &mut Client, schema: &str) -> Result<(), postgres::Error> {
    admin.batch_execute(&format!(
        "CREATE SCHEMA {schema};
         CREATE TABLE {schema}.wallets (
             id bigint PRIMARY KEY,
             balance bigint NOT NULL DEFAULT 0,
             held bigint NOT NULL DEFAULT 0,
             version bigint NOT NULL DEFAULT 0);
         CREATE TABLE {schema}.transactions (
             id bigserial PRIMARY KEY,
             wallet_id bigint NOT NULL,
             kind text NOT NULL,
             amount bigint NOT NULL,
             created_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE {schema}.jobs (
             id bigserial PRIMARY KEY,
             queue text NOT NULL DEFAULT 'rebates',
             wallet_id bigint NOT NULL,
             amount bigint NOT NULL,
             created_at timestamptz NOT NULL DEFAULT now());
         CREATE TABLE {schema}.instruments (
             id int PRIMARY KEY,
             symbol text NOT NULL UNIQUE,
             supply bigint NOT NULL,
             available bigint NOT NULL,
             reserved bigint NOT NULL DEFAULT 0,
             sold bigint NOT NULL DEFAULT 0,
             price bigint NOT NULL,
             version bigint NOT NULL DEFAULT 0);
         CREATE TABLE {schema}.reservations (
             id bigint PRIMARY KEY,
             wallet_id bigint NOT NULL,
             instrument_id int NOT NULL,
             qty bigint NOT NULL,
             cost bigint NOT NULL,
             state text NOT NULL DEFAULT 'open');"
    ))
}

fn set_session(
    client: &mut Client,
    schema: &str,
    durability: Durability,
) -> Result<(), postgres::Error> {
    let commit = match durability {
        Durability::Sync => "on",
        Durability::Async | Durability::None => "off",
    };
    client.batch_execute(&format!(
        "SET search_path TO {schema}; SET synchronous_commit TO {commit};"
    ))
}

fn read_wallet(
    tx: &mut Transaction<'_>,
    st: &Statements,
    id: i64,
) -> Result<Option<WalletRow>, Stop> {
    Ok(tx.query_opt(&st.read_wallet, &[&id])?.map(|r| WalletRow {
        balance: r.get(0),
        held: r.get(1),
        version: r.get(2),
    }))
}

fn write_wallet(
    tx: &mut Transaction<'_>,
    st: &Statements,
    id: i64,
    balance: Units,
    held: Units,
    version: i64,
) -> Result<(), Stop> {
    let written = if st.versioned {
        tx.execute(&st.write_wallet, &[&id, &balance, &held, &version])?
    } else {
        tx.execute(&st.write_wallet, &[&id, &balance, &held])?
    };
    if written == 0 {
        return Err(Stop::Conflict);
    }
    Ok(())
}

fn read_instrument(
    tx: &mut Transaction<'_>,
    st: &Statements,
    id: i32,
) -> Result<Option<InstrumentRow>, Stop> {
    let Some(r) = tx.query_opt(&st.read_instrument, &[&id])? else {
        return Ok(None);
    };
    let symbol: &str = r.get(0);
    let symbol =
        Symbol::new(symbol).map_err(|_| Reject::UnknownInstrument(InstrumentId(id as u32)))?;
    let count = |i| r.get::<_, i64>(i) as u64;
    Ok(Some(InstrumentRow {
        listing: Listing {
            symbol,
            supply: count(1),
            price: r.get(5),
        },
        available: count(2),
        reserved: count(3),
        sold: count(4),
        version: r.get(6),
    }))
}

fn write_instrument(
    tx: &mut Transaction<'_>,
    st: &Statements,
    id: i32,
    available: u64,
    reserved: u64,
    sold: u64,
    version: i64,
) -> Result<(), Stop> {
    let [available, reserved, sold] = [available, reserved, sold].map(|n| n as i64);
    let written = if st.versioned {
        tx.execute(
            &st.write_instrument,
            &[&id, &available, &reserved, &sold, &version],
        )?
    } else {
        tx.execute(&st.write_instrument, &[&id, &available, &reserved, &sold])?
    };
    if written == 0 {
        return Err(Stop::Conflict);
    }
    Ok(())
}

/// An account id as the `bigint` it is stored as (None: cannot exist).
fn account_key(account: AccountId) -> Option<i64> {
    i64::try_from(account).ok()
}

impl Bank for PgBank {
    fn open_account(&self, account: AccountId) -> Result<(), Reject> {
        let id = account_key(account).ok_or(Reject::Overflow("the account id"))?;
        self.transact(|tx, _| {
            let inserted = tx.execute(
                "INSERT INTO wallets (id) VALUES ($1) ON CONFLICT (id) DO NOTHING",
                &[&id],
            )?;
            if inserted == 0 {
                return Err(Reject::AccountExists(account).into());
            }
            Ok(())
        })
    }

    fn deposit(&self, account: AccountId, amount: Units) -> Result<Units, Reject> {
        let id = account_key(account).ok_or(Reject::UnknownAccount(account))?;
        let balance = self.transact(|tx, st| {
            let w = read_wallet(tx, st, id)?.ok_or(Reject::UnknownAccount(account))?;
            positive(amount)?;
            let balance = w
                .balance
                .checked_add(amount)
                .ok_or(Reject::Overflow("the balance"))?;
            write_wallet(tx, st, id, balance, w.held, w.version)?;
            tx.execute(&st.record, &[&id, &"deposit", &amount])?;
            tx.execute(&st.queue_job, &[&id, &amount])?;
            Ok(balance)
        })?;
        self.progress.queued(1, || self.alive());
        Ok(balance)
    }

    fn withdraw(&self, account: AccountId, amount: Units) -> Result<Units, Reject> {
        let id = account_key(account).ok_or(Reject::UnknownAccount(account))?;
        self.transact(|tx, st| {
            let w = read_wallet(tx, st, id)?.ok_or(Reject::UnknownAccount(account))?;
            positive(amount)?;
            let available = w.balance - w.held;
            if amount > available {
                return Err(Reject::InsufficientFunds {
                    account,
                    available,
                    requested: amount,
                }
                .into());
            }
            let balance = w.balance - amount;
            write_wallet(tx, st, id, balance, w.held, w.version)?;
            tx.execute(&st.record, &[&id, &"withdraw", &-amount])?;
            Ok(balance)
        })
    }

    fn transfer(&self, from: AccountId, to: AccountId, amount: Units) -> Result<(), Reject> {
        let sender = account_key(from).ok_or(Reject::UnknownAccount(from))?;
        let receiver = account_key(to).ok_or(Reject::UnknownAccount(to))?;
        self.transact(|tx, st| {
            // Lowest id first, whichever way the money goes.
            let (low, high) = (sender.min(receiver), sender.max(receiver));
            let first = read_wallet(tx, st, low)?;
            let second = if high == low {
                None
            } else {
                read_wallet(tx, st, high)?
            };
            let (s, r) = if sender == low {
                (first, second)
            } else {
                (second, first)
            };
            let s = s.ok_or(Reject::UnknownAccount(from))?;
            if sender != receiver && r.is_none() {
                return Err(Reject::UnknownAccount(to).into());
            }
            positive(amount)?;
            let available = s.balance - s.held;
            if amount > available {
                return Err(Reject::InsufficientFunds {
                    account: from,
                    available,
                    requested: amount,
                }
                .into());
            }
            let Some(r) = r else {
                // To itself: checked, nothing moves.
                return Ok(());
            };
            let credited = r
                .balance
                .checked_add(amount)
                .ok_or(Reject::Overflow("the receiving balance"))?;
            let mut writes = [
                (sender, s.balance - amount, s.held, s.version),
                (receiver, credited, r.held, r.version),
            ];
            writes.sort_by_key(|w| w.0);
            for (id, balance, held, version) in writes {
                write_wallet(tx, st, id, balance, held, version)?;
            }
            tx.execute(&st.record, &[&sender, &"transfer_out", &-amount])?;
            tx.execute(&st.record, &[&receiver, &"transfer_in", &amount])?;
            Ok(())
        })
    }

    fn balance(&self, account: AccountId) -> Result<(Units, Units), Reject> {
        let id = account_key(account).ok_or(Reject::UnknownAccount(account))?;
        let mut conn = self.pool.take();
        let Conn { client, st } = &mut conn;
        let row = client.query_opt(&st.balance, &[&id]);
        self.pool.give(conn);
        match row {
            Ok(Some(r)) => Ok((r.get(0), r.get(1))),
            Ok(None) => Err(Reject::UnknownAccount(account)),
            Err(e) => {
                self.failure
                    .record(format!("PostgreSQL at {}: {e}", self.address));
                Err(server_failed())
            }
        }
    }

    fn list_instrument(
        &self,
        symbol: Symbol,
        supply: u64,
        price: Units,
    ) -> Result<InstrumentId, Reject> {
        self.transact(|tx, _| {
            // Listings are numbered in order: one at a time.
            tx.batch_execute("LOCK TABLE instruments IN EXCLUSIVE MODE")?;
            let taken = tx.query_opt(
                "SELECT 1 FROM instruments WHERE symbol = $1",
                &[&symbol.as_str()],
            )?;
            if taken.is_some() {
                return Err(Reject::InstrumentExists(symbol).into());
            }
            if supply == 0 {
                return Err(Reject::InvalidAmount("the supply must be greater than zero").into());
            }
            if price <= 0 {
                return Err(Reject::InvalidAmount("the price must be greater than zero").into());
            }
            let supply = i64::try_from(supply).map_err(|_| Reject::Overflow("the supply"))?;
            let count: i64 = tx
                .query_one("SELECT count(*) FROM instruments", &[])?
                .get(0);
            let id =
                i32::try_from(count).map_err(|_| Reject::Overflow("the number of instruments"))?;
            tx.execute(
                "INSERT INTO instruments (id, symbol, supply, available, price) \
                 VALUES ($1, $2, $3, $3, $4)",
                &[&id, &symbol.as_str(), &supply, &price],
            )?;
            Ok(InstrumentId(id as u32))
        })
    }

    fn reserve(
        &self,
        reservation: ReservationId,
        account: AccountId,
        instrument: InstrumentId,
        qty: u64,
        partial: bool,
    ) -> Result<u64, Reject> {
        let rid = i64::try_from(reservation).map_err(|_| Reject::Overflow("the reservation id"))?;
        let wallet = account_key(account).ok_or(Reject::UnknownAccount(account))?;
        let iid = i32::try_from(instrument.0).map_err(|_| Reject::UnknownInstrument(instrument))?;
        self.transact(|tx, st| {
            if tx.query_opt(&st.reservation_exists, &[&rid])?.is_some() {
                return Err(Reject::ReservationExists(reservation).into());
            }
            // Instrument, then wallet: the one lock order.
            let stock = read_instrument(tx, st, iid)?;
            let w = read_wallet(tx, st, wallet)?.ok_or(Reject::UnknownAccount(account))?;
            let stock = stock.ok_or(Reject::UnknownInstrument(instrument))?;
            if qty == 0 {
                return Err(Reject::InvalidAmount("the quantity must be greater than zero").into());
            }
            let (taken, cost) =
                take_shares(instrument, &stock.listing, stock.available, qty, partial)?;
            let available = w.balance - w.held;
            if cost > available {
                return Err(Reject::InsufficientFunds {
                    account,
                    available,
                    requested: cost,
                }
                .into());
            }
            write_instrument(
                tx,
                st,
                iid,
                stock.available - taken,
                stock.reserved + taken,
                stock.sold,
                stock.version,
            )?;
            write_wallet(tx, st, wallet, w.balance, w.held + cost, w.version)?;
            match tx.execute(
                &st.open_reservation,
                &[&rid, &wallet, &iid, &(taken as i64), &cost],
            ) {
                Ok(_) => Ok(taken),
                // Another client opened it since the check above.
                Err(e) if e.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
                    Err(Reject::ReservationExists(reservation).into())
                }
                Err(e) => Err(e.into()),
            }
        })
    }

    fn confirm(&self, reservation: ReservationId) -> Result<(), Reject> {
        self.close(reservation, Closure::Confirmed)
    }

    fn cancel(&self, reservation: ReservationId) -> Result<(), Reject> {
        self.close(reservation, Closure::Cancelled)
    }

    fn instrument(&self, instrument: InstrumentId) -> Result<InstrumentView, Reject> {
        let iid = i32::try_from(instrument.0).map_err(|_| Reject::UnknownInstrument(instrument))?;
        self.transact(|tx, st| {
            let stock =
                read_instrument(tx, st, iid)?.ok_or(Reject::UnknownInstrument(instrument))?;
            Ok(InstrumentView {
                id: instrument,
                symbol: stock.listing.symbol,
                supply: stock.listing.supply,
                available: stock.available,
                reserved: stock.reserved,
                sold: stock.sold,
                price: stock.listing.price,
            })
        })
    }

    fn rebates(&self) -> RebateCounts {
        self.progress.counts()
    }

    /// Parks until the queue worker has credited every job queued before
    /// the call; if the worker stopped first, the run's failure says why.
    fn settle_rebates(&self) {
        if !self.progress.settle(|| self.alive()) {
            self.failure.record(format!(
                "PostgreSQL at {}: the queue worker stopped with rebates owed",
                self.address
            ));
        }
    }

    /// By SQL over the tables, at quiescence: every wallet within
    /// `0 <= held <= balance`, its hold equal to its open reservations'
    /// cost and its balance equal to the sum of its `transactions` rows;
    /// every instrument's shares accounted for; money conserved (Σ balances
    /// plus Σ sold × price == deposits − withdrawals + rebates); and every
    /// rebate paid: no job left, one credit per deposit, each the policy's
    /// amount.
    fn check_invariants(&self) -> Result<(), String> {
        if let Some(failure) = self.failure.get() {
            return Err(failure);
        }
        self.checked()
    }

    fn retries(&self) -> u64 {
        self.retries.load(Ordering::Relaxed)
    }

    /// Set-up in three statements rather than two transactions per wallet:
    /// the wallets, their opening deposits in `transactions`, and one
    /// rebate job per deposit, as the ordinary operations would leave them.
    fn open_funded(
        &self,
        accounts: std::ops::Range<AccountId>,
        balance: Units,
    ) -> Result<(), Reject> {
        let (Some(start), Some(end)) = (account_key(accounts.start), account_key(accounts.end))
        else {
            return Err(Reject::Overflow("the account id"));
        };
        if balance < 0 {
            return Err(Reject::InvalidAmount(
                "the amount must be greater than zero",
            ));
        }
        self.transact(|tx, _| {
            let clash = tx.query_opt(
                "SELECT id FROM wallets WHERE id >= $1 AND id < $2 LIMIT 1",
                &[&start, &end],
            )?;
            if let Some(r) = clash {
                return Err(Reject::AccountExists(r.get::<_, i64>(0) as AccountId).into());
            }
            tx.execute(
                "INSERT INTO wallets (id, balance) SELECT g, $3 FROM generate_series($1::bigint, $2::bigint - 1) g",
                &[&start, &end, &balance],
            )?;
            if balance > 0 {
                tx.execute(
                    "INSERT INTO transactions (wallet_id, kind, amount) \
                     SELECT g, 'deposit', $3 FROM generate_series($1::bigint, $2::bigint - 1) g",
                    &[&start, &end, &balance],
                )?;
                tx.execute(
                    "INSERT INTO jobs (wallet_id, amount) \
                     SELECT g, $3 FROM generate_series($1::bigint, $2::bigint - 1) g",
                    &[&start, &end, &balance],
                )?;
            }
            Ok(())
        })?;
        if balance > 0 {
            self.progress
                .queued((end - start).max(0) as u64, || self.alive());
        }
        Ok(())
    }
}

impl ExternalBank for PgBank {
    fn failure(&self) -> Option<ServerError> {
        self.failure.get().map(ServerError)
    }
}

impl Drop for PgBank {
    /// Stops the worker, closes the client connections and drops the run's
    /// schema with everything in it.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        for worker in self.workers.get_mut().drain(..) {
            let _ = worker.join();
        }
        self.pool.clear();
        let dropped = self
            .admin
            .get_mut()
            .batch_execute(&format!("DROP SCHEMA IF EXISTS {} CASCADE", self.schema));
        if let Err(e) = dropped {
            eprintln!(
                "ringledger: could not drop the schema {} on PostgreSQL at {}: {e}",
                self.schema, self.address
            );
        }
    }
}

/// The queue worker: claims jobs, credits them, deletes them.
struct Worker {
    client: Client,
    address: String,
    policy: RateRebate,
    progress: Arc<RebateProgress>,
    failure: Arc<Failure>,
    stop: Arc<AtomicBool>,
    running: Arc<AtomicUsize>,
}

impl Worker {
    fn run(mut self) {
        if let Err(e) = self.work() {
            self.failure.record(format!(
                "PostgreSQL at {}: the queue worker: {e}",
                self.address
            ));
        }
        self.running.fetch_sub(1, Ordering::AcqRel);
    }

    fn work(&mut self) -> Result<(), postgres::Error> {
        let claim = self.client.prepare(
            "SELECT id, wallet_id, amount FROM jobs WHERE queue = 'rebates' \
             ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED",
        )?;
        let credit = self.client.prepare(
            "UPDATE wallets SET balance = balance + $2, version = version + 1 WHERE id = $1",
        )?;
        let record = self.client.prepare(
            "INSERT INTO transactions (wallet_id, kind, amount) \
             SELECT w, 'rebate', a FROM unnest($1::bigint[], $2::bigint[]) AS t(w, a)",
        )?;
        let delete = self.client.prepare("DELETE FROM jobs WHERE id = ANY($1)")?;
        loop {
            let mut tx = self.client.transaction()?;
            let jobs = tx.query(&claim, &[&JOBS_PER_CLAIM])?;
            if jobs.is_empty() {
                tx.commit()?;
                if self.stop.load(Ordering::Acquire) {
                    return Ok(());
                }
                std::thread::sleep(IDLE_POLL);
                continue;
            }
            let mut ids = Vec::with_capacity(jobs.len());
            let (mut wallets, mut amounts) = (Vec::new(), Vec::new());
            let mut per_wallet = BTreeMap::<i64, Units>::new();
            for row in &jobs {
                let (id, wallet, amount): (i64, i64, i64) = (row.get(0), row.get(1), row.get(2));
                let rebate = self.policy.rebate(&RebateJob {
                    deposit_seq: id as u64,
                    account: wallet as AccountId,
                    amount,
                });
                ids.push(id);
                wallets.push(wallet);
                amounts.push(rebate);
                *per_wallet.entry(wallet).or_default() += rebate;
            }
            // Ascending ids: the lock order every operation keeps.
            for (wallet, total) in &per_wallet {
                tx.execute(&credit, &[wallet, total])?;
            }
            tx.execute(&record, &[&wallets, &amounts])?;
            tx.execute(&delete, &[&ids])?;
            tx.commit()?;
            self.progress.credited(ids.len() as u64);
        }
    }
}
