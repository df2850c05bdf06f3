//! Seed 2 on Redis: every operation is one Lua script (`EVALSHA`, loaded
//! once) that checks and updates atomically — a wallet's balance and hold,
//! the instrument's free supply (the seed's atomic decrement), the
//! reservation — since Redis runs one script at a time. A deposit's script
//! also pushes its rebate job onto a Redis list, the queue; a worker thread
//! with its own connection pops jobs (`LPOP … 256`, or `BLPOP` when idle),
//! computes each rebate with the engine's [`RateRebate`] and credits them
//! with one more script.
//!
//! Keys live under the run's prefix (`ringledger_bench_<pid>_<nanos>:`):
//! `w:<id>` (hash: balance, held), `i:<id>` (hash: symbol, supply,
//! available, reserved, sold, price), `sym` (symbol → id), `r:<id>` (hash:
//! account, instrument, qty, cost, state), `totals` (deposited, withdrawn,
//! rebated, deposits, rebates) and `rebates` (the queue). All are deleted
//! when the bank is dropped, and the server settings the run's durability
//! changed are put back.
//!
//! Lua numbers are doubles, exact up to 2^53: the scripts update with
//! `HINCRBY` (exact 64-bit) and refuse (`overflow`) any balance, cost or
//! amount beyond 2^53 minor units rather than compare inexactly. A popped
//! job lives only in the worker until credited: like Laravel's simple
//! Redis queue without its reserved set, a worker crash would lose it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::Mutex;
use redis::{Connection, Script, Value};

use super::{
    server_failed, unique_name, ExternalBank, Failure, Pool, RebateProgress, ServerError,
    CONNECT_TIMEOUT,
};
use crate::baseline::{Bank, RebateCounts};
use crate::journal::Durability;
use crate::money::Units;
use crate::outcome::{Closure, InstrumentView, Reject};
use crate::rebate::{RateRebate, RebateJob, RebatePolicy};
use crate::request::{AccountId, InstrumentId, ReservationId, Symbol};

/// Largest integer a Lua number holds exactly.
const EXACT_MAX: i64 = 1 << 53;
/// Jobs the worker pops and credits at once.
const JOBS_PER_POP: usize = 256;
/// Accounts one set-up script opens (a script blocks the server while it runs).
const SETUP_CHUNK: u64 = 10_000;
/// How long an idle worker blocks on the queue before looking at `stop`.
const IDLE_BLOCK_SECONDS: f64 = 0.05;
/// A reply slower than this means the server is stuck: fail, do not hang.
const READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Common to every script: refusal codes (the first element of each reply;
/// 0 is success).
const PRELUDE: &str = r#"
local EXACT_MAX = 9007199254740992
local function num(v) return tonumber(v) or 0 end
"#;

const OPEN_ACCOUNT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return {2} end
redis.call('HSET', KEYS[1], 'balance', 0, 'held', 0)
return {0}
"#;

/// KEYS: none. ARGV: prefix, first id, end id, balance. Opens and funds a
/// range of wallets, queueing each opening deposit's rebate.
const OPEN_FUNDED: &str = r#"
local prefix, first, stop, balance = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
for id = first, stop - 1 do
  if redis.call('EXISTS', prefix .. 'w:' .. string.format('%d', id)) == 1 then return {2, id} end
end
for id = first, stop - 1 do
  local sid = string.format('%d', id)
  redis.call('HSET', prefix .. 'w:' .. sid, 'balance', balance, 'held', 0)
  if num(balance) > 0 then
    redis.call('HINCRBY', prefix .. 'totals', 'deposited', balance)
    local seq = redis.call('HINCRBY', prefix .. 'totals', 'deposits', 1)
    redis.call('RPUSH', prefix .. 'rebates', seq .. ':' .. sid .. ':' .. balance)
  end
end
return {0}
"#;

/// KEYS: wallet, totals, queue. ARGV: amount, account.
const DEPOSIT: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {1} end
local amount = num(ARGV[1])
if amount <= 0 then return {3} end
if num(redis.call('HGET', KEYS[1], 'balance')) + amount > EXACT_MAX then return {5} end
local after = redis.call('HINCRBY', KEYS[1], 'balance', ARGV[1])
redis.call('HINCRBY', KEYS[2], 'deposited', ARGV[1])
local seq = redis.call('HINCRBY', KEYS[2], 'deposits', 1)
redis.call('RPUSH', KEYS[3], seq .. ':' .. ARGV[2] .. ':' .. ARGV[1])
return {0, after}
"#;

/// KEYS: wallet, totals. ARGV: amount.
const WITHDRAW: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {1} end
local amount = num(ARGV[1])
if amount <= 0 then return {3} end
local w = redis.call('HMGET', KEYS[1], 'balance', 'held')
local available = num(w[1]) - num(w[2])
if amount > available then return {4, available, amount} end
local after = redis.call('HINCRBY', KEYS[1], 'balance', -amount)
redis.call('HINCRBY', KEYS[2], 'withdrawn', ARGV[1])
return {0, after}
"#;

/// KEYS: sender, receiver. ARGV: amount. Refusal 1 carries which account
/// is unknown (0 the sender, 1 the receiver).
const TRANSFER: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return {1, 0} end
if redis.call('EXISTS', KEYS[2]) == 0 then return {1, 1} end
local amount = num(ARGV[1])
if amount <= 0 then return {3} end
local w = redis.call('HMGET', KEYS[1], 'balance', 'held')
local available = num(w[1]) - num(w[2])
if amount > available then return {4, available, amount} end
if KEYS[1] == KEYS[2] then return {0} end
if num(redis.call('HGET', KEYS[2], 'balance')) + amount > EXACT_MAX then return {5} end
redis.call('HINCRBY', KEYS[1], 'balance', -amount)
redis.call('HINCRBY', KEYS[2], 'balance', ARGV[1])
return {0}
"#;

/// KEYS: symbol index. ARGV: prefix, symbol, supply, price.
const LIST: &str = r#"
if redis.call('HEXISTS', KEYS[1], ARGV[2]) == 1 then return {7} end
if num(ARGV[3]) <= 0 then return {3, 0} end
if num(ARGV[4]) <= 0 then return {3, 1} end
local id = redis.call('HLEN', KEYS[1])
redis.call('HSET', ARGV[1] .. 'i:' .. id, 'symbol', ARGV[2], 'supply', ARGV[3],
  'available', ARGV[3], 'reserved', 0, 'sold', 0, 'price', ARGV[4])
redis.call('HSET', KEYS[1], ARGV[2], id)
return {0, id}
"#;

/// KEYS: reservation, wallet, instrument. ARGV: qty, partial (0/1),
/// account, instrument id.
const RESERVE: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 1 then return {10} end
if redis.call('EXISTS', KEYS[2]) == 0 then return {1} end
if redis.call('EXISTS', KEYS[3]) == 0 then return {6} end
local qty = num(ARGV[1])
if qty <= 0 then return {3} end
local i = redis.call('HMGET', KEYS[3], 'available', 'price')
local available, price = num(i[1]), num(i[2])
local taken
if available >= qty then taken = qty
elseif ARGV[2] == '1' and available > 0 then taken = available
else return {8, available, qty} end
local cost = taken * price
if cost > EXACT_MAX then return {5} end
local w = redis.call('HMGET', KEYS[2], 'balance', 'held')
local free = num(w[1]) - num(w[2])
if cost > free then return {4, free, cost} end
redis.call('HINCRBY', KEYS[3], 'available', -taken)
redis.call('HINCRBY', KEYS[3], 'reserved', taken)
redis.call('HINCRBY', KEYS[2], 'held', cost)
redis.call('HSET', KEYS[1], 'account', ARGV[3], 'instrument', ARGV[4], 'qty', taken,
  'cost', cost, 'state', 'open')
return {0, taken}
"#;

/// KEYS: reservation. ARGV: prefix, 1 to confirm or 0 to cancel.
/// Refusal 9 carries how it was closed (0 never opened, 1 confirmed, 2
/// cancelled).
const CLOSE: &str = r#"
local r = redis.call('HMGET', KEYS[1], 'account', 'instrument', 'qty', 'cost', 'state')
if not r[5] then return {9, 0} end
if r[5] == 'confirmed' then return {9, 1} end
if r[5] == 'cancelled' then return {9, 2} end
local wallet, instrument = ARGV[1] .. 'w:' .. r[1], ARGV[1] .. 'i:' .. r[2]
redis.call('HINCRBY', instrument, 'reserved', -num(r[3]))
redis.call('HINCRBY', wallet, 'held', -num(r[4]))
if ARGV[2] == '1' then
  redis.call('HINCRBY', instrument, 'sold', r[3])
  redis.call('HINCRBY', wallet, 'balance', -num(r[4]))
  redis.call('HSET', KEYS[1], 'state', 'confirmed')
else
  redis.call('HINCRBY', instrument, 'available', r[3])
  redis.call('HSET', KEYS[1], 'state', 'cancelled')
end
return {0}
"#;

/// KEYS: totals. ARGV: prefix, then (account, rebate) pairs.
const CREDIT: &str = r#"
for k = 2, #ARGV, 2 do
  redis.call('HINCRBY', ARGV[1] .. 'w:' .. ARGV[k], 'balance', ARGV[k + 1])
  redis.call('HINCRBY', KEYS[1], 'rebated', ARGV[k + 1])
end
redis.call('HINCRBY', KEYS[1], 'rebates', (#ARGV - 1) / 2)
return {0}
"#;

struct Scripts {
    open_account: Script,
    open_funded: Script,
    deposit: Script,
    withdraw: Script,
    transfer: Script,
    list: Script,
    reserve: Script,
    close: Script,
    credit: Script,
}

impl Scripts {
    fn new() -> Scripts {
        let script = |body: &str| Script::new(&format!("{PRELUDE}{body}"));
        Scripts {
            open_account: script(OPEN_ACCOUNT),
            open_funded: script(OPEN_FUNDED),
            deposit: script(DEPOSIT),
            withdraw: script(WITHDRAW),
            transfer: script(TRANSFER),
            list: script(LIST),
            reserve: script(RESERVE),
            close: script(CLOSE),
            credit: script(CREDIT),
        }
    }
}

/// A script's reply: the refusal code (0: done) and its figures.
type Reply = (i64, Vec<i64>);

fn reply(value: Value) -> Result<Reply, redis::RedisError> {
    let numbers: Vec<i64> = redis::from_redis_value(value)?;
    match numbers.split_first() {
        Some((code, rest)) => Ok((*code, rest.to_vec())),
        None => Err(redis::RedisError::from((
            redis::ErrorKind::UnexpectedReturnType,
            "a script returned an empty reply",
        ))),
    }
}

/// The figure at `index` of a refusal (0 when missing).
fn figure(figures: &[i64], index: usize) -> i64 {
    figures.get(index).copied().unwrap_or(0)
}

/// Server settings a run changed, put back when it is dropped (also when a
/// run fails or panics).
struct SettingsGuard {
    conn: Connection,
    address: String,
    /// (name, value before the run), in the order they were changed.
    saved: Vec<(String, String)>,
}

impl SettingsGuard {
    /// Sets the server's AOF for `durability`, remembering what it was.
    fn apply(
        conn: Connection,
        address: String,
        durability: Durability,
    ) -> Result<SettingsGuard, ServerError> {
        let mut guard = SettingsGuard {
            conn,
            address,
            saved: Vec::new(),
        };
        let wanted: &[(&str, &str)] = match durability {
            Durability::Sync => &[("appendonly", "yes"), ("appendfsync", "always")],
            Durability::Async => &[("appendonly", "yes"), ("appendfsync", "everysec")],
            Durability::None => &[("appendonly", "no")],
        };
        for &(name, value) in wanted {
            let (_, before): (String, String) = redis::cmd("CONFIG")
                .arg("GET")
                .arg(name)
                .query::<Vec<String>>(&mut guard.conn)
                .ok()
                .and_then(|pair| pair.into_iter().collect::<Vec<_>>().try_into().ok())
                .map(|[k, v]: [String; 2]| (k, v))
                .ok_or_else(|| {
                    ServerError(format!(
                        "Redis at {}: CONFIG GET {name} failed (is CONFIG allowed?)",
                        guard.address
                    ))
                })?;
            if before == value {
                continue;
            }
            redis::cmd("CONFIG")
                .arg("SET")
                .arg(name)
                .arg(value)
                .query::<()>(&mut guard.conn)
                .map_err(|e| {
                    ServerError(format!(
                        "Redis at {}: CONFIG SET {name} {value}: {e}",
                        guard.address
                    ))
                })?;
            guard.saved.push((name.to_string(), before));
        }
        Ok(guard)
    }
}

impl Drop for SettingsGuard {
    fn drop(&mut self) {
        for (name, before) in self.saved.drain(..).rev() {
            let restored = redis::cmd("CONFIG")
                .arg("SET")
                .arg(&name)
                .arg(&before)
                .query::<()>(&mut self.conn);
            if let Err(e) = restored {
                eprintln!(
                    "ringledger: could not put back Redis at {}: CONFIG SET {name} {before}: {e}",
                    self.address
                );
            }
        }
    }
}

/// Seed 2 on a Redis server, under a key prefix of its own that is deleted
/// when the bank is dropped.
pub struct RedisBank {
    address: String,
    prefix: String,
    scripts: Arc<Scripts>,
    pool: Pool<Connection>,
    admin: Mutex<Connection>,
    progress: Arc<RebateProgress>,
    failure: Arc<Failure>,
    stop: Arc<AtomicBool>,
    workers_running: Arc<AtomicUsize>,
    worker: Option<JoinHandle<()>>,
    /// Dropped last among the server-side state: settings back once the
    /// keys are gone.
    settings: Option<SettingsGuard>,
}

impl RedisBank {
    /// Connects to `url`, sets the server's AOF for `durability` (restored
    /// on drop), opens one connection per client and starts the worker.
    pub fn connect(
        url: &str,
        durability: Durability,
        clients: usize,
        policy: RateRebate,
    ) -> Result<RedisBank, ServerError> {
        let client = redis::Client::open(url)
            .map_err(|e| ServerError(format!("the Redis URL {url:?} is not valid: {e}")))?;
        let address = client.get_connection_info().addr().to_string();
        let connect = || -> Result<Connection, ServerError> {
            let conn = client
                .get_connection_with_timeout(CONNECT_TIMEOUT)
                .map_err(|e| {
                    let why = if e.is_timeout() {
                        format!(
                            "no answer within {} s (is it a Redis server? set \
                             RINGLEDGER_REDIS_URL)",
                            CONNECT_TIMEOUT.as_secs()
                        )
                    } else {
                        format!(
                            "cannot connect (is the server running? set \
                             RINGLEDGER_REDIS_URL): {e}"
                        )
                    };
                    ServerError(format!("Redis at {address}: {why}"))
                })?;
            conn.set_read_timeout(Some(READ_TIMEOUT))
                .and_then(|()| conn.set_write_timeout(Some(READ_TIMEOUT)))
                .map_err(|e| ServerError(format!("Redis at {address}: {e}")))?;
            Ok(conn)
        };
        let admin = connect()?;
        let settings = SettingsGuard::apply(connect()?, address.clone(), durability)?;
        let mut bank = RedisBank {
            address: address.clone(),
            prefix: format!("{}:", unique_name()),
            scripts: Arc::new(Scripts::new()),
            pool: Pool::default(),
            admin: Mutex::new(admin),
            progress: Arc::new(RebateProgress::default()),
            failure: Arc::new(Failure::default()),
            stop: Arc::new(AtomicBool::new(false)),
            workers_running: Arc::new(AtomicUsize::new(0)),
            worker: None,
            settings: Some(settings),
        };
        let conns = (0..clients)
            .map(|_| connect())
            .collect::<Result<Vec<_>, _>>()?;
        bank.pool.fill(conns);
        let worker = Worker {
            conn: connect()?,
            address,
            prefix: bank.prefix.clone(),
            scripts: Arc::clone(&bank.scripts),
            policy,
            progress: Arc::clone(&bank.progress),
            failure: Arc::clone(&bank.failure),
            stop: Arc::clone(&bank.stop),
            running: Arc::clone(&bank.workers_running),
        };
        bank.workers_running.fetch_add(1, Ordering::AcqRel);
        bank.worker = Some(
            std::thread::Builder::new()
                .name("redis-queue-worker".into())
                .spawn(move || worker.run())
                .map_err(|e| ServerError(format!("starting the queue worker: {e}")))?,
        );
        Ok(bank)
    }

    /// The run's key prefix (tests look for leftovers after the bank is gone).
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    fn key(&self, kind: &str, id: impl std::fmt::Display) -> String {
        format!("{}{kind}:{id}", self.prefix)
    }

    fn alive(&self) -> bool {
        self.workers_running.load(Ordering::Acquire) > 0
    }

    /// Runs one script on a pooled connection.
    fn call(
        &self,
        script: impl Fn(&Scripts) -> &Script,
        keys: &[String],
        args: &[String],
    ) -> Result<Reply, Reject> {
        let mut conn = self.pool.take();
        let mut invocation = script(&self.scripts).prepare_invoke();
        for key in keys {
            invocation.key(key);
        }
        for arg in args {
            invocation.arg(arg);
        }
        let result = invocation.invoke::<Value>(&mut conn).and_then(reply);
        self.pool.give(conn);
        result.map_err(|e| {
            self.failure
                .record(format!("Redis at {}: {e}", self.address));
            server_failed()
        })
    }

    fn close(&self, reservation: ReservationId, how: Closure) -> Result<(), Reject> {
        let confirm = if how == Closure::Confirmed { "1" } else { "0" };
        let (code, figures) = self.call(
            |s| &s.close,
            &[self.key("r", reservation)],
            &[self.prefix.clone(), confirm.into()],
        )?;
        match (code, figure(&figures, 0)) {
            (0, _) => Ok(()),
            (9, closed) => Err(Reject::UnknownReservation {
                reservation,
                closed: match closed {
                    1 => Some(Closure::Confirmed),
                    2 => Some(Closure::Cancelled),
                    _ => None,
                },
            }),
            (code, _) => Err(self.unexpected(code)),
        }
    }

    /// A refusal code this script never returns: a broken script.
    fn unexpected(&self, code: i64) -> Reject {
        self.failure.record(format!(
            "Redis at {}: a script answered the unexpected code {code}",
            self.address
        ));
        server_failed()
    }

    fn checked(&self) -> Result<(), String> {
        let mut admin = self.admin.lock();
        let conn = &mut *admin;
        let failed = |e: redis::RedisError| format!("Redis at {}: checking: {e}", self.address);
        let reservations = scan(conn, &self.prefix, "r:*").map_err(failed)?;
        let mut held_by = HashMap::<String, i128>::new();
        let mut taken_of = HashMap::<String, i128>::new();
        for chunk in reservations.chunks(1_000) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("HMGET")
                    .arg(key)
                    .arg(&["account", "instrument", "qty", "cost", "state"][..]);
            }
            let rows: Vec<(String, String, i64, i64, String)> = pipe.query(conn).map_err(failed)?;
            for (account, instrument, qty, cost, state) in rows {
                if state == "open" {
                    *held_by.entry(account).or_default() += i128::from(cost);
                    *taken_of.entry(instrument).or_default() += i128::from(qty);
                }
            }
        }
        let wallets = scan(conn, &self.prefix, "w:*").map_err(failed)?;
        let mut cash = 0i128;
        for chunk in wallets.chunks(1_000) {
            let mut pipe = redis::pipe();
            for key in chunk {
                pipe.cmd("HMGET").arg(key).arg(&["balance", "held"][..]);
            }
            let rows: Vec<(i64, i64)> = pipe.query(conn).map_err(failed)?;
            for (key, (balance, held)) in chunk.iter().zip(rows) {
                let account = &key[self.prefix.len() + 2..];
                if balance < 0 || held < 0 || held > balance {
                    return Err(format!(
                        "account {account}: balance {balance} held {held} breaks 0 <= held <= balance"
                    ));
                }
                let open = held_by.get(account).copied().unwrap_or(0);
                if i128::from(held) != open {
                    return Err(format!(
                        "account {account}: held {held} but open reservations hold {open}"
                    ));
                }
                cash += i128::from(balance);
            }
        }
        let listed: i64 = redis::cmd("HLEN")
            .arg(format!("{}sym", self.prefix))
            .query(conn)
            .map_err(failed)?;
        let mut proceeds = 0i128;
        for id in 0..listed {
            let (symbol, supply, available, reserved, sold, price): (
                String,
                i64,
                i64,
                i64,
                i64,
                i64,
            ) = redis::cmd("HMGET")
                .arg(self.key("i", id))
                .arg(&["symbol", "supply", "available", "reserved", "sold", "price"][..])
                .query(conn)
                .map_err(failed)?;
            let open = taken_of.get(&id.to_string()).copied().unwrap_or(0);
            if available < 0
                || reserved < 0
                || sold < 0
                || available + reserved + sold != supply
                || i128::from(reserved) != open
            {
                return Err(format!(
                    "instrument {symbol}: available {available} + reserved {reserved} + sold \
                     {sold} vs supply {supply}, open reservations take {open}"
                ));
            }
            proceeds += i128::from(sold) * i128::from(price);
        }
        let (deposited, withdrawn, rebated, deposits, rebates): (i64, i64, i64, i64, i64) =
            redis::cmd("HMGET")
                .arg(format!("{}totals", self.prefix))
                .arg(&["deposited", "withdrawn", "rebated", "deposits", "rebates"][..])
                .query::<Vec<Option<i64>>>(conn)
                .map(|v| {
                    let n = |i: usize| v.get(i).copied().flatten().unwrap_or(0);
                    (n(0), n(1), n(2), n(3), n(4))
                })
                .map_err(failed)?;
        let queued: i64 = redis::cmd("LLEN")
            .arg(format!("{}rebates", self.prefix))
            .query(conn)
            .map_err(failed)?;
        if queued != 0 || deposits != rebates {
            return Err(format!(
                "rebates: {queued} jobs still queued, {rebates} credited for {deposits} deposits"
            ));
        }
        let net = i128::from(deposited) - i128::from(withdrawn) + i128::from(rebated);
        if cash + proceeds != net {
            return Err(format!(
                "money is not conserved: balances {cash} + sale proceeds {proceeds} != \
                 deposited − withdrawn + rebates {net}"
            ));
        }
        Ok(())
    }
}

impl Bank for RedisBank {
    fn open_account(&self, account: AccountId) -> Result<(), Reject> {
        match self
            .call(|s| &s.open_account, &[self.key("w", account)], &[])?
            .0
        {
            0 => Ok(()),
            2 => Err(Reject::AccountExists(account)),
            code => Err(self.unexpected(code)),
        }
    }

    fn deposit(&self, account: AccountId, amount: Units) -> Result<Units, Reject> {
        let keys = [
            self.key("w", account),
            format!("{}totals", self.prefix),
            format!("{}rebates", self.prefix),
        ];
        let (code, figures) = self.call(
            |s| &s.deposit,
            &keys,
            &[amount.to_string(), account.to_string()],
        )?;
        let balance = match code {
            0 => figure(&figures, 0),
            1 => return Err(Reject::UnknownAccount(account)),
            3 => {
                return Err(Reject::InvalidAmount(
                    "the amount must be greater than zero",
                ))
            }
            5 => return Err(Reject::Overflow("the balance (exact in Redis Lua to 2^53)")),
            code => return Err(self.unexpected(code)),
        };
        self.progress.queued(1, || self.alive());
        Ok(balance)
    }

    fn withdraw(&self, account: AccountId, amount: Units) -> Result<Units, Reject> {
        let keys = [self.key("w", account), format!("{}totals", self.prefix)];
        let (code, figures) = self.call(|s| &s.withdraw, &keys, &[amount.to_string()])?;
        match code {
            0 => Ok(figure(&figures, 0)),
            1 => Err(Reject::UnknownAccount(account)),
            3 => Err(Reject::InvalidAmount(
                "the amount must be greater than zero",
            )),
            4 => Err(Reject::InsufficientFunds {
                account,
                available: figure(&figures, 0),
                requested: amount,
            }),
            code => Err(self.unexpected(code)),
        }
    }

    fn transfer(&self, from: AccountId, to: AccountId, amount: Units) -> Result<(), Reject> {
        let keys = [self.key("w", from), self.key("w", to)];
        let (code, figures) = self.call(|s| &s.transfer, &keys, &[amount.to_string()])?;
        match code {
            0 => Ok(()),
            1 if figure(&figures, 0) == 0 => Err(Reject::UnknownAccount(from)),
            1 => Err(Reject::UnknownAccount(to)),
            3 => Err(Reject::InvalidAmount(
                "the amount must be greater than zero",
            )),
            4 => Err(Reject::InsufficientFunds {
                account: from,
                available: figure(&figures, 0),
                requested: amount,
            }),
            5 => Err(Reject::Overflow(
                "the receiving balance (exact in Redis Lua to 2^53)",
            )),
            code => Err(self.unexpected(code)),
        }
    }

    fn balance(&self, account: AccountId) -> Result<(Units, Units), Reject> {
        let mut conn = self.pool.take();
        let row: Result<(Option<i64>, Option<i64>), _> = redis::cmd("HMGET")
            .arg(self.key("w", account))
            .arg(&["balance", "held"][..])
            .query(&mut conn);
        self.pool.give(conn);
        match row {
            Ok((Some(balance), Some(held))) => Ok((balance, held)),
            Ok(_) => Err(Reject::UnknownAccount(account)),
            Err(e) => {
                self.failure
                    .record(format!("Redis at {}: {e}", self.address));
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
        if supply > EXACT_MAX as u64 {
            return Err(Reject::Overflow("the supply (exact in Redis Lua to 2^53)"));
        }
        let (code, figures) = self.call(
            |s| &s.list,
            &[format!("{}sym", self.prefix)],
            &[
                self.prefix.clone(),
                symbol.as_str().to_string(),
                supply.to_string(),
                price.to_string(),
            ],
        )?;
        match code {
            0 => u32::try_from(figure(&figures, 0))
                .map(InstrumentId)
                .map_err(|_| Reject::Overflow("the number of instruments")),
            7 => Err(Reject::InstrumentExists(symbol)),
            3 if figure(&figures, 0) == 0 => Err(Reject::InvalidAmount(
                "the supply must be greater than zero",
            )),
            3 => Err(Reject::InvalidAmount("the price must be greater than zero")),
            code => Err(self.unexpected(code)),
        }
    }

    fn reserve(
        &self,
        reservation: ReservationId,
        account: AccountId,
        instrument: InstrumentId,
        qty: u64,
        partial: bool,
    ) -> Result<u64, Reject> {
        let keys = [
            self.key("r", reservation),
            self.key("w", account),
            self.key("i", instrument.0),
        ];
        let args = [
            qty.min(EXACT_MAX as u64).to_string(),
            if partial { "1" } else { "0" }.to_string(),
            account.to_string(),
            instrument.0.to_string(),
        ];
        let (code, figures) = self.call(|s| &s.reserve, &keys, &args)?;
        match code {
            0 => Ok(figure(&figures, 0) as u64),
            10 => Err(Reject::ReservationExists(reservation)),
            1 => Err(Reject::UnknownAccount(account)),
            6 => Err(Reject::UnknownInstrument(instrument)),
            3 => Err(Reject::InvalidAmount(
                "the quantity must be greater than zero",
            )),
            8 => Err(Reject::InsufficientShares {
                instrument,
                available: figure(&figures, 0) as u64,
                requested: qty,
            }),
            5 => Err(Reject::Overflow("the reservation's cost")),
            4 => Err(Reject::InsufficientFunds {
                account,
                available: figure(&figures, 0),
                requested: figure(&figures, 1),
            }),
            code => Err(self.unexpected(code)),
        }
    }

    fn confirm(&self, reservation: ReservationId) -> Result<(), Reject> {
        self.close(reservation, Closure::Confirmed)
    }

    fn cancel(&self, reservation: ReservationId) -> Result<(), Reject> {
        self.close(reservation, Closure::Cancelled)
    }

    fn instrument(&self, instrument: InstrumentId) -> Result<InstrumentView, Reject> {
        let mut conn = self.pool.take();
        let row: Result<Vec<Option<String>>, _> = redis::cmd("HMGET")
            .arg(self.key("i", instrument.0))
            .arg(&["symbol", "supply", "available", "reserved", "sold", "price"][..])
            .query(&mut conn);
        self.pool.give(conn);
        let row = row.map_err(|e| {
            self.failure
                .record(format!("Redis at {}: {e}", self.address));
            server_failed()
        })?;
        let text = |i: usize| row.get(i).cloned().flatten();
        let count = |i: usize| text(i).and_then(|t| t.parse::<u64>().ok());
        let symbol = text(0)
            .and_then(|s| Symbol::new(&s).ok())
            .ok_or(Reject::UnknownInstrument(instrument))?;
        match (
            count(1),
            count(2),
            count(3),
            count(4),
            text(5).and_then(|t| t.parse().ok()),
        ) {
            (Some(supply), Some(available), Some(reserved), Some(sold), Some(price)) => {
                Ok(InstrumentView {
                    id: instrument,
                    symbol,
                    supply,
                    available,
                    reserved,
                    sold,
                    price,
                })
            }
            _ => Err(Reject::UnknownInstrument(instrument)),
        }
    }

    fn rebates(&self) -> RebateCounts {
        self.progress.counts()
    }

    /// Parks until the queue worker has credited every job queued before
    /// the call; if the worker stopped first, the run's failure says why.
    fn settle_rebates(&self) {
        if !self.progress.settle(|| self.alive()) {
            self.failure.record(format!(
                "Redis at {}: the queue worker stopped with rebates owed",
                self.address
            ));
        }
    }

    /// By reads at quiescence: every wallet within `0 <= held <= balance`
    /// and holding exactly its open reservations' cost; every instrument's
    /// shares accounted for; money conserved (Σ balances + Σ sold × price
    /// == deposits − withdrawals + rebates, kept by the scripts in
    /// `totals`); no job left in the queue and one credit per deposit.
    fn check_invariants(&self) -> Result<(), String> {
        if let Some(failure) = self.failure.get() {
            return Err(failure);
        }
        self.checked()
    }

    /// Set-up by a script per [`SETUP_CHUNK`] wallets rather than two calls
    /// per wallet, leaving what the ordinary operations would.
    fn open_funded(
        &self,
        accounts: std::ops::Range<AccountId>,
        balance: Units,
    ) -> Result<(), Reject> {
        if balance < 0 {
            return Err(Reject::InvalidAmount(
                "the amount must be greater than zero",
            ));
        }
        if balance > EXACT_MAX || accounts.end > EXACT_MAX as u64 {
            return Err(Reject::Overflow("the balance (exact in Redis Lua to 2^53)"));
        }
        let mut first = accounts.start;
        while first < accounts.end {
            let end = (first + SETUP_CHUNK).min(accounts.end);
            let (code, figures) = self.call(
                |s| &s.open_funded,
                &[],
                &[
                    self.prefix.clone(),
                    first.to_string(),
                    end.to_string(),
                    balance.to_string(),
                ],
            )?;
            match code {
                0 => {}
                2 => return Err(Reject::AccountExists(figure(&figures, 0) as AccountId)),
                code => return Err(self.unexpected(code)),
            }
            if balance > 0 {
                self.progress.queued(end - first, || self.alive());
            }
            first = end;
        }
        Ok(())
    }
}

impl ExternalBank for RedisBank {
    fn failure(&self) -> Option<ServerError> {
        self.failure.get().map(ServerError)
    }
}

impl Drop for RedisBank {
    /// Stops the worker, deletes every key under the prefix, then puts the
    /// server's settings back.
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Release);
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
        self.pool.clear();
        let admin = self.admin.get_mut();
        let deleted = scan(admin, &self.prefix, "*").and_then(|keys| {
            for chunk in keys.chunks(1_000) {
                redis::cmd("UNLINK").arg(chunk).query::<()>(admin)?;
            }
            Ok(())
        });
        if let Err(e) = deleted {
            eprintln!(
                "ringledger: could not delete the keys {}* on Redis at {}: {e}",
                self.prefix, self.address
            );
        }
        drop(self.settings.take());
    }
}

/// Every key under `prefix` matching `pattern` (after the prefix).
fn scan(
    conn: &mut Connection,
    prefix: &str,
    pattern: &str,
) -> Result<Vec<String>, redis::RedisError> {
    let pattern = format!("{prefix}{pattern}");
    let mut keys = Vec::new();
    let mut cursor = 0u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(&pattern)
            .arg("COUNT")
            .arg(1_000)
            .query(conn)?;
        keys.extend(batch);
        if next == 0 {
            return Ok(keys);
        }
        cursor = next;
    }
}

/// The queue worker: pops jobs, computes their rebates, credits them.
struct Worker {
    conn: Connection,
    address: String,
    prefix: String,
    scripts: Arc<Scripts>,
    policy: RateRebate,
    progress: Arc<RebateProgress>,
    failure: Arc<Failure>,
    stop: Arc<AtomicBool>,
    running: Arc<AtomicUsize>,
}

impl Worker {
    fn run(mut self) {
        if let Err(e) = self.work() {
            self.failure
                .record(format!("Redis at {}: the queue worker: {e}", self.address));
        }
        self.running.fetch_sub(1, Ordering::AcqRel);
    }

    fn work(&mut self) -> Result<(), redis::RedisError> {
        let queue = format!("{}rebates", self.prefix);
        let totals = format!("{}totals", self.prefix);
        loop {
            let mut jobs: Vec<String> = redis::cmd("LPOP")
                .arg(&queue)
                .arg(JOBS_PER_POP)
                .query::<Option<Vec<String>>>(&mut self.conn)?
                .unwrap_or_default();
            if jobs.is_empty() {
                if self.stop.load(Ordering::Acquire) {
                    return Ok(());
                }
                let popped: Option<(String, String)> = redis::cmd("BLPOP")
                    .arg(&queue)
                    .arg(IDLE_BLOCK_SECONDS)
                    .query(&mut self.conn)?;
                match popped {
                    Some((_, job)) => jobs.push(job),
                    None => continue,
                }
            }
            let mut invocation = self.scripts.credit.prepare_invoke();
            invocation.key(&totals).arg(&self.prefix);
            for job in &jobs {
                let mut parts = job.split(':').map(|p| p.parse::<i64>());
                let (Some(Ok(seq)), Some(Ok(account)), Some(Ok(amount))) =
                    (parts.next(), parts.next(), parts.next())
                else {
                    return Err(redis::RedisError::from((
                        redis::ErrorKind::UnexpectedReturnType,
                        "a malformed rebate job",
                        job.clone(),
                    )));
                };
                let rebate = self.policy.rebate(&RebateJob {
                    deposit_seq: seq as u64,
                    account: account as AccountId,
                    amount,
                });
                invocation.arg(account).arg(rebate);
            }
            invocation.invoke::<Value>(&mut self.conn)?;
            self.progress.credited(jobs.len() as u64);
        }
    }
}
