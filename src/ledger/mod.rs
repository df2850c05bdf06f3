//! The Ledger: the deterministic state machine the business thread owns.
//!
//! `apply` is a pure function of (state, stamped request): no I/O, no clock,
//! no threads, no randomness. Time arrives in the stamp, so replaying the
//! same stamped requests rebuilds the same state, and [`Ledger::digest`]
//! proves it. Every rule of the domain lives here; a rejected request
//! changes nothing (all checks run before the first write).
//!
//! Layout choices, measured on a 2-core machine with 1M accounts (`cargo
//! bench --bench ledger`): accounts sit in a dense array found through a
//! direct index for dense ids (hash map for the rest), one 64-byte line per
//! account holding what a request changes (cash, history header, shares
//! owned, one of them inline: see `holdings`), apart from the ids (76 heap
//! bytes per account before history); balances are `i64` minor units with
//! checked arithmetic; history rings hold 40-byte records in chunks of a
//! shared paged pool (see `accounts`); expiries are a min-heap ordered by
//! time, so expiring k reservations costs O(k log n) (see `expiries`);
//! owed rebates form a queue in deposit order (see `rebates`); closed
//! reservations are remembered for a bounded window (see
//! `closed_reservations`). A batch
//! prefetches the accounts of the requests a few places ahead, rebate
//! credits included (their account is found in the rebate queue). See
//! `accounts` for why.

mod accounts;
mod closed_reservations;
mod codec;
mod expiries;
mod holdings;
mod invariants;
mod order_index;
#[cfg(test)]
mod order_tests;
mod orders;
mod rebates;
mod sessions;
#[cfg(test)]
mod tests;

use std::collections::hash_map::Entry as MapEntry;
use std::collections::BTreeSet;
use std::num::NonZeroU64;

use bincode::{Decode, Encode};
use rustc_hash::FxHashMap;

use self::accounts::{Accounts, Change};
use self::closed_reservations::ClosedReservations;
use self::expiries::Expiries;
use self::order_index::OrderIndex;
pub use self::orders::BOOK_DEPTH_MAX;
pub use self::orders::{check_backing, NewOrder};
pub use self::rebates::UnpaidRebate;
use self::rebates::{Owed, Rebates};
use self::sessions::Sessions;
pub use self::sessions::{RETIRED_NAMES_BITS, RETIRED_NAME_HASHES, SESSION_ANSWERS_MAX};
use crate::book::{Events, SlotBook};
use crate::money::Units;
use crate::outcome::{
    Answer, Closure, Entry, EntryKind, InstrumentView, OrderEvent, OrderEvents, Outcome, Reject,
    Reply,
};
use crate::rebate::RebateJob;
use crate::request::{
    AccountId, InstrumentId, Request, ReservationId, SessionId, SessionName, Stamp, Stamped, Symbol,
};

/// How many requests ahead `apply_batch` starts loading accounts: far enough
/// to cover a DRAM miss (~140 ns) at ~20-40 ns per request.
const PREFETCH_AHEAD: usize = 4;

/// Below this many accounts (64-byte lines: 256 KiB, the size of a core's
/// L2 on the smallest machines this runs on) the accounts stay in cache and
/// `apply_batch` does not prefetch: with 100 traders the three prefetch
/// stages cost ~160 instructions per request of an order-heavy replay
/// (callgrind) and hid no miss.
const PREFETCH_ACCOUNTS_MIN: usize = 4096;

/// Sizing and retention of a Ledger.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct LedgerConfig {
    /// History entries kept per account for `history`; older ones are only
    /// in the journal, and a `history` answer they would have been part of
    /// says `truncated`.
    pub history_per_account_max: u32,
    /// Live sessions kept at most (at least 1): opening one more retires the
    /// longest-idle. Each costs up to ~1 KiB (its window of answers).
    pub sessions_max: u32,
    /// A session unused (no open, no numbered request) for longer than this,
    /// in sequencer time, retires; `u64::MAX` never retires one for idleness.
    pub session_idle_ms_max: u64,
    /// Closed (confirmed, cancelled, expired) reservations remembered, the
    /// most recently closed; older ones are forgotten, first closed first,
    /// and answer `unknown_reservation` (their ids may be used again).
    pub closed_reservations_max: u32,
}

/// Default `LedgerConfig::sessions_max`: a few thousand gateways or remote
/// clients, about 4 MiB of windows at most.
pub const SESSIONS_MAX_DEFAULT: u32 = 4096;
/// Default `LedgerConfig::session_idle_ms_max`: 7 days, long enough that a
/// client retrying after an outage or a restart still finds its session.
pub const SESSION_IDLE_MS_MAX_DEFAULT: u64 = 7 * 24 * 60 * 60 * 1000;

impl Default for LedgerConfig {
    fn default() -> Self {
        LedgerConfig {
            history_per_account_max: 32,
            sessions_max: SESSIONS_MAX_DEFAULT,
            session_idle_ms_max: SESSION_IDLE_MS_MAX_DEFAULT,
            // About 40 bytes each in memory and 10 in a snapshot: 4 MB and
            // 1 MB at most.
            closed_reservations_max: 100_000,
        }
    }
}

/// What applying one request produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Applied {
    pub outcome: Outcome,
    /// A deposit's rebate, for the side thread to compute and credit.
    pub rebate: Option<RebateJob>,
}

#[derive(Clone, Debug, Encode, Decode)]
struct Instrument {
    symbol: Symbol,
    supply: u64,
    available: u64,
    reserved: u64,
    sold: u64,
    price: Units,
    /// Cash paid for confirmed sales: where purchase money goes.
    proceeds: i128,
}

#[derive(Clone, Copy, Debug, Encode, Decode)]
struct Reservation {
    account_index: u32,
    instrument: InstrumentId,
    qty: u64,
    cost: Units,
    /// When the reservation expires; `None` when it never does (no TTL).
    /// Never zero: a TTL is at least 1 ms after a time of at least 0. A
    /// separate `None` (rather than a sentinel time) lets a TTL that runs
    /// past the end of time expire at `u64::MAX` like any other.
    expires_at_ms: Option<NonZeroU64>,
}

/// Money that entered and left the ledger; conservation is checked against it.
#[derive(Clone, Copy, Debug, Default, Encode, Decode)]
struct Totals {
    deposited: i128,
    withdrawn: i128,
    rebated: i128,
}

/// The wallet and share-sale state machine. See the module docs. Its
/// snapshot encoding is in `codec`.
#[derive(Clone, Debug)]
pub struct Ledger {
    config: LedgerConfig,
    accounts: Accounts,
    instrument_index: FxHashMap<Symbol, InstrumentId>,
    instruments: Vec<Instrument>,
    reservations: FxHashMap<ReservationId, Reservation>,
    /// Ids of recently closed reservations, so a reused id is refused and a
    /// late confirm learns what happened (a bounded window).
    closed_reservations: ClosedReservations,
    /// (expiry time, reservation) for every open reservation with a TTL
    /// (and stale entries of ones closed early, see `expiries`).
    expiries: Expiries,
    /// Shares held by resting sells per (account, instrument); never above
    /// the shares owned. A hash map (the digest sorts it): every sell,
    /// move and fill of a sell reads and writes it, and a `BTreeMap` there
    /// cost ~12% of the order-book mix.
    share_held: FxHashMap<(AccountId, InstrumentId), u64>,
    /// One book per listed instrument, by instrument id.
    books: Vec<SlotBook>,
    /// Where each resting order is, over all books: order ids are unique
    /// over the whole Ledger, and `cancel_order` names only the order.
    orders: OrderIndex,
    /// Trades so far: the last trade number.
    trades: u64,
    /// Scratch for the book's fills, reused from request to request.
    events: Events,
    /// The events of this batch's places and amends, which their replies
    /// name by range (see [`OrderEvents`]): cleared when a batch (or a lone
    /// request) starts, handed to the engine when it ends. Not state.
    order_events: Vec<OrderEvent>,
    /// Sessions by name and id, each with its window of answers (see `sessions`).
    sessions: Sessions,
    rebates: Rebates,
    totals: Totals,
    last_seq: u64,
    now_ms: u64,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger::new(LedgerConfig::default())
    }
}

impl Ledger {
    pub fn new(config: LedgerConfig) -> Ledger {
        Ledger {
            config,
            accounts: Accounts::default(),
            instrument_index: FxHashMap::default(),
            instruments: Vec::new(),
            reservations: FxHashMap::default(),
            closed_reservations: ClosedReservations::default(),
            expiries: Expiries::default(),
            share_held: FxHashMap::default(),
            books: Vec::new(),
            orders: OrderIndex::default(),
            trades: 0,
            events: Events::default(),
            order_events: Vec::new(),
            sessions: Sessions::default(),
            rebates: Rebates::default(),
            totals: Totals::default(),
            last_seq: 0,
            now_ms: 0,
        }
    }

    /// Reserves room for `accounts` accounts up front, so opening them later
    /// does not reallocate on the business thread.
    pub fn with_capacity(config: LedgerConfig, accounts: usize) -> Ledger {
        Ledger {
            accounts: Accounts::with_capacity(accounts),
            ..Ledger::new(config)
        }
    }

    pub fn config(&self) -> LedgerConfig {
        self.config
    }

    /// Sequence number of the last applied request (0 before any).
    pub fn last_seq(&self) -> u64 {
        self.last_seq
    }

    /// The latest sequencer time seen (time never goes backwards here).
    pub fn now_ms(&self) -> u64 {
        self.now_ms
    }

    pub fn accounts_len(&self) -> usize {
        self.accounts.len()
    }

    /// The live session called `name`: its id and highest answered request
    /// number.
    pub fn session(&self, name: &SessionName) -> Option<(SessionId, u64)> {
        self.sessions.find(name)
    }

    pub fn sessions_len(&self) -> usize {
        self.sessions.live_len()
    }

    /// The id an instrument got when it was listed.
    pub fn instrument_id(&self, symbol: &Symbol) -> Option<InstrumentId> {
        self.instrument_index.get(symbol).copied()
    }

    /// Every listed instrument, in listing order.
    pub fn instruments(&self) -> impl Iterator<Item = InstrumentView> + '_ {
        (0..self.instruments.len()).map(|i| self.instrument_view(InstrumentId(i as u32)))
    }

    /// Rebates owed but not yet credited, in deposit order. After recovery
    /// these are handed to the side thread again.
    pub fn pending_rebates(&self) -> impl Iterator<Item = RebateJob> + '_ {
        self.rebates.pending()
    }

    pub fn pending_rebates_len(&self) -> usize {
        self.rebates.pending_len()
    }

    /// Rebates still owed whose credit was refused because it would have
    /// overflowed the balance (it grew after the deposit), by deposit
    /// sequence. They are not dispatched again; a credit that fits pays them.
    pub fn unpaid_rebates(&self) -> impl Iterator<Item = UnpaidRebate> + '_ {
        self.rebates.unpaid()
    }

    /// Closed reservations remembered now (at most `closed_reservations_max`).
    pub fn closed_reservations_len(&self) -> usize {
        self.closed_reservations.len()
    }

    /// (expiry time, reservation) for every open reservation with a TTL, in
    /// expiry order: the expiry index's live entries.
    fn timed_reservations(&self) -> BTreeSet<(u64, ReservationId)> {
        self.reservations
            .iter()
            .filter_map(|(&id, r)| Some((r.expires_at_ms?.get(), id)))
            .collect()
    }

    /// Applies one stamped request. Reservations due at the stamp's time
    /// expire and idle sessions retire first, then the request runs; a
    /// rejected request changes nothing beyond that and its session's record
    /// of the answer. A place's or amend's events are readable with
    /// [`Ledger::events`] until the next request.
    pub fn apply(&mut self, stamped: &Stamped) -> Applied {
        self.order_events.clear();
        self.apply_one(stamped)
    }

    /// The events a place or amend reply names: from the Ledger's buffer
    /// (valid until the next request or batch starts), or from the batch
    /// buffer the reply carries.
    pub fn events<'a>(&'a self, events: &'a OrderEvents) -> &'a [OrderEvent] {
        events.read(&self.order_events)
    }

    /// Swaps the events of the batch just applied with `spare` (an empty
    /// buffer, whose capacity the Ledger reuses): the engine hands them to
    /// the batch's outcomes this way without copying or allocating.
    pub fn take_events(&mut self, spare: &mut Vec<OrderEvent>) {
        debug_assert!(spare.is_empty());
        std::mem::swap(&mut self.order_events, spare);
    }

    /// Whether the batch (or request) just applied left any events.
    pub fn has_events(&self) -> bool {
        !self.order_events.is_empty()
    }

    fn apply_one(&mut self, stamped: &Stamped) -> Applied {
        let Stamped { stamp, request } = *stamped;
        debug_assert!(
            stamp.seq > self.last_seq,
            "sequence must increase: {} after {}",
            stamp.seq,
            self.last_seq
        );
        self.last_seq = stamp.seq;
        self.now_ms = self.now_ms.max(stamp.time_ms);
        self.expire_due();
        self.sessions
            .retire_idle(self.now_ms, self.config.session_idle_ms_max);

        let numbered = stamp.req != 0 && request.is_numbered();
        let checked = if numbered {
            self.sessions.check(stamp.session, stamp.req, self.now_ms)
        } else {
            Ok(())
        };
        let applied = match checked {
            Err(reject) => Applied {
                outcome: Err(reject),
                rebate: None,
            },
            Ok(()) => {
                let applied = self.dispatch(&stamp, &request);
                if numbered {
                    self.sessions
                        .record(stamp.session, stamp.req, Answer::of(&applied.outcome));
                }
                applied
            }
        };
        #[cfg(debug_assertions)]
        self.debug_check(&request);
        applied
    }

    /// Applies a batch in order, exactly as calling [`Ledger::apply`] on each
    /// would, handing each result to `each` with its index; the events of
    /// all its places and amends stay readable until the next batch or
    /// request (see [`Ledger::take_events`]). While request `i`
    /// runs, later requests' accounts are prefetched in three stages (index
    /// entry at `i + 12`, the account's line at `i + 8`, the history slot to
    /// be written at `i + 4`), so their cache misses overlap with useful work
    /// instead of following one another.
    pub fn apply_batch(&mut self, batch: &[Stamped], mut each: impl FnMut(usize, Applied)) {
        self.order_events.clear();
        if self.accounts.len() < PREFETCH_ACCOUNTS_MIN {
            for (i, stamped) in batch.iter().enumerate() {
                each(i, self.apply_one(stamped));
            }
            return;
        }
        // The first requests have no earlier ones to hide their loads
        // behind: start each of their stages now, all requests of a stage
        // at once, so their misses overlap one another.
        if let Some(first) = batch.first() {
            for (j, ahead) in batch.iter().enumerate().take(3 * PREFETCH_AHEAD) {
                for id in self.accounts_ahead(first, ahead, j) {
                    self.accounts.prefetch_index(id);
                }
            }
            for (j, ahead) in batch.iter().enumerate().take(2 * PREFETCH_AHEAD) {
                self.prefetch_account(first, ahead, j);
            }
            for (j, ahead) in batch.iter().enumerate().take(PREFETCH_AHEAD) {
                for id in self.accounts_ahead(first, ahead, j) {
                    self.accounts
                        .prefetch_history_slot(id, self.config.history_per_account_max);
                }
            }
        }
        for (i, stamped) in batch.iter().enumerate() {
            if let Some(ahead) = batch.get(i + 3 * PREFETCH_AHEAD) {
                for id in self.accounts_ahead(stamped, ahead, 3 * PREFETCH_AHEAD) {
                    self.accounts.prefetch_index(id);
                }
            }
            if let Some(ahead) = batch.get(i + 2 * PREFETCH_AHEAD) {
                self.prefetch_account(stamped, ahead, 2 * PREFETCH_AHEAD);
            }
            if let Some(ahead) = batch.get(i + PREFETCH_AHEAD) {
                for id in self.accounts_ahead(stamped, ahead, PREFETCH_AHEAD) {
                    self.accounts
                        .prefetch_history_slot(id, self.config.history_per_account_max);
                }
            }
            each(i, self.apply_one(stamped));
        }
    }

    /// The second prefetch stage for the request `distance` places after
    /// `now`: its accounts' lines (cash, history header, holdings).
    fn prefetch_account(&self, now: &Stamped, ahead: &Stamped, distance: usize) {
        for id in self.accounts_ahead(now, ahead, distance) {
            self.accounts.prefetch_account(id);
        }
    }

    /// The accounts the request `distance` places after `now` will touch,
    /// as far as they can be told cheaply. A rebate credit names only its
    /// deposit: its account is found in the rebate queue when `now` is the
    /// credit for the oldest rebate (the business thread batches credits,
    /// in deposit order, ahead of other requests), so credits are
    /// prefetched like deposits.
    fn accounts_ahead(
        &self,
        now: &Stamped,
        ahead: &Stamped,
        distance: usize,
    ) -> impl Iterator<Item = AccountId> {
        let accounts = match (&now.request, &ahead.request) {
            (Request::CreditRebate { .. }, &Request::CreditRebate { deposit_seq, .. }) => {
                [self.rebates.account_at_guess(deposit_seq, distance), None]
            }
            (_, request) => request.accounts(),
        };
        accounts.into_iter().flatten()
    }

    fn dispatch(&mut self, stamp: &Stamp, request: &Request) -> Applied {
        let mut rebate = None;
        let outcome = match *request {
            Request::OpenAccount { account } => self.open_account(account),
            Request::Deposit { account, amount } => {
                let outcome = self.deposit(stamp, account, amount);
                if outcome.is_ok() {
                    let job = RebateJob {
                        deposit_seq: stamp.seq,
                        account,
                        amount,
                    };
                    self.rebates.push(job);
                    rebate = Some(job);
                }
                outcome
            }
            Request::Withdraw { account, amount } => self.withdraw(stamp, account, amount),
            Request::Transfer { from, to, amount } => self.transfer(stamp, from, to, amount),
            Request::Balance { account } => self.balance(account),
            Request::History { account, limit } => self.history(account, limit),
            Request::ListInstrument {
                symbol,
                supply,
                price,
            } => self.list_instrument(symbol, supply, price),
            Request::Instrument { instrument } => self
                .instrument_checked(instrument)
                .map(|_| Reply::Instrument(Box::new(self.instrument_view(instrument)))),
            Request::Reserve {
                reservation,
                account,
                instrument,
                qty,
                ttl_ms,
                partial,
            } => self.reserve(reservation, account, instrument, qty, ttl_ms, partial),
            Request::Confirm { reservation } => self.confirm(stamp, reservation),
            Request::Cancel { reservation } => self.cancel(reservation),
            Request::Holdings { account } => self.holdings(account),
            Request::Place {
                order,
                account,
                instrument,
                side,
                market,
                tif,
                post_only,
                stp,
                qty,
                price,
            } => self.place(
                stamp,
                NewOrder {
                    order,
                    account,
                    instrument,
                    side,
                    market,
                    tif,
                    post_only,
                    stp,
                    qty,
                    price,
                },
            ),
            Request::Amend { order, qty, price } => self.amend(stamp, order, qty, price),
            Request::CancelOrder { order } => self.cancel_order(order),
            Request::Order { order } => self.order_query(order),
            Request::Book { instrument, depth } => self.book_query(instrument, depth),
            Request::Tick => Ok(Reply::Done),
            Request::Digest => Ok(Reply::Digest(self.digest())),
            Request::CreditRebate {
                deposit_seq,
                amount,
            } => self.credit_rebate(stamp, deposit_seq, amount),
            Request::OpenSession { name } => self
                .sessions
                .open(name, self.now_ms, self.config.sessions_max)
                .map(|(session, last_req)| Reply::Session { session, last_req }),
            Request::CloseSession => self.sessions.close(stamp.session).map(|()| Reply::Done),
            Request::Rejected { code } => Err(Reject::AtEdge(code)),
        };
        Applied { outcome, rebate }
    }

    fn index_of(&self, account: AccountId) -> Result<usize, Reject> {
        self.accounts
            .slot(account)
            .ok_or(Reject::UnknownAccount(account))
    }

    fn open_account(&mut self, account: AccountId) -> Outcome {
        if self.accounts.slot(account).is_some() {
            return Err(Reject::AccountExists(account));
        }
        self.accounts
            .open(account)
            .ok_or(Reject::Overflow("the number of accounts"))?;
        Ok(Reply::Done)
    }

    fn deposit(&mut self, stamp: &Stamp, account: AccountId, amount: Units) -> Outcome {
        let index = self.index_of(account)?;
        positive(amount)?;
        let balance = self.accounts.lines[index]
            .cash
            .balance
            .checked_add(amount)
            .ok_or(Reject::Overflow("the balance"))?;
        // The rebate is part of what a deposit promises and never exceeds
        // it, so a deposit is taken only if twice its amount fits: then its
        // rebate can be credited (unless the balance grows meanwhile).
        balance
            .checked_add(amount)
            .ok_or(Reject::Overflow("the balance with the deposit's rebate"))?;
        self.totals.deposited += i128::from(amount);
        self.set_balance(stamp, index, EntryKind::Deposit, amount, balance);
        Ok(Reply::Moved { balance })
    }

    fn withdraw(&mut self, stamp: &Stamp, account: AccountId, amount: Units) -> Outcome {
        let index = self.index_of(account)?;
        positive(amount)?;
        let balance = self.debitable(index, amount)?;
        self.totals.withdrawn += i128::from(amount);
        self.set_balance(stamp, index, EntryKind::Withdrawal, amount, balance);
        Ok(Reply::Moved { balance })
    }

    /// A transfer to the same account is accepted as a no-op once the
    /// account and amount check out: nothing moves and nothing is recorded.
    fn transfer(
        &mut self,
        stamp: &Stamp,
        from: AccountId,
        to: AccountId,
        amount: Units,
    ) -> Outcome {
        let from_index = self.index_of(from)?;
        let to_index = self.index_of(to)?;
        positive(amount)?;
        let from_balance = self.debitable(from_index, amount)?;
        if from_index == to_index {
            return Ok(Reply::Done);
        }
        let to_balance = self.accounts.lines[to_index]
            .cash
            .balance
            .checked_add(amount)
            .ok_or(Reject::Overflow("the receiving balance"))?;
        self.set_balance(
            stamp,
            from_index,
            EntryKind::TransferOut,
            amount,
            from_balance,
        );
        self.set_balance(stamp, to_index, EntryKind::TransferIn, amount, to_balance);
        Ok(Reply::Done)
    }

    /// The balance after taking `amount` out, if `amount <= available`.
    fn debitable(&self, index: usize, amount: Units) -> Result<Units, Reject> {
        let cash = &self.accounts.lines[index].cash;
        if amount > cash.available() {
            return Err(Reject::InsufficientFunds {
                account: self.accounts.ids[index],
                available: cash.available(),
                requested: amount,
            });
        }
        Ok(cash.balance - amount)
    }

    /// Sets the balance of the account in slot `index` and records the
    /// change in its history.
    fn set_balance(
        &mut self,
        stamp: &Stamp,
        index: usize,
        kind: EntryKind,
        amount: Units,
        balance: Units,
    ) {
        let history_max = self.config.history_per_account_max;
        self.accounts.lines[index].cash.balance = balance;
        let change = Change {
            seq: stamp.seq,
            time_ms: stamp.time_ms,
            kind,
            amount,
            balance,
            trade: None,
        };
        self.accounts.push_change(index, change, history_max);
    }

    fn balance(&self, account: AccountId) -> Outcome {
        let cash = self.accounts.lines[self.index_of(account)?].cash;
        Ok(Reply::Balance {
            balance: cash.balance,
            held: cash.held,
            available: cash.available(),
        })
    }

    fn history(&self, account: AccountId, limit: u32) -> Outcome {
        let index = self.index_of(account)?;
        let entries: Vec<Entry> = self
            .accounts
            .history_newest(index)
            .take(limit as usize)
            .collect();
        let (_, dropped) = self.accounts.history_len(index);
        Ok(Reply::History {
            truncated: dropped && entries.len() < limit as usize,
            entries,
        })
    }

    fn list_instrument(&mut self, symbol: Symbol, supply: u64, price: Units) -> Outcome {
        if self.instrument_index.contains_key(&symbol) {
            return Err(Reject::InstrumentExists(symbol));
        }
        if supply == 0 {
            return Err(Reject::InvalidAmount(
                "the supply must be greater than zero",
            ));
        }
        if price <= 0 {
            return Err(Reject::InvalidAmount("the price must be greater than zero"));
        }
        let id = InstrumentId(
            u32::try_from(self.instruments.len())
                .map_err(|_| Reject::Overflow("the number of instruments"))?,
        );
        self.instrument_index.insert(symbol, id);
        self.instruments.push(Instrument {
            symbol,
            supply,
            available: supply,
            reserved: 0,
            sold: 0,
            price,
            proceeds: 0,
        });
        self.books.push(SlotBook::new());
        Ok(Reply::Listed { instrument: id })
    }

    fn instrument_checked(&self, id: InstrumentId) -> Result<&Instrument, Reject> {
        self.instruments
            .get(id.0 as usize)
            .ok_or(Reject::UnknownInstrument(id))
    }

    fn instrument_view(&self, id: InstrumentId) -> InstrumentView {
        let i = &self.instruments[id.0 as usize];
        InstrumentView {
            id,
            symbol: i.symbol,
            supply: i.supply,
            available: i.available,
            reserved: i.reserved,
            sold: i.sold,
            price: i.price,
        }
    }

    fn reserve(
        &mut self,
        reservation: ReservationId,
        account: AccountId,
        instrument: InstrumentId,
        qty: u64,
        ttl_ms: u64,
        partial: bool,
    ) -> Outcome {
        if self.reservations.contains_key(&reservation)
            || self.closed_reservations.contains(reservation)
        {
            return Err(Reject::ReservationExists(reservation));
        }
        let index = self.index_of(account)?;
        let listed = self.instrument_checked(instrument)?;
        if qty == 0 {
            return Err(Reject::InvalidAmount(
                "the quantity must be greater than zero",
            ));
        }
        let taken = if listed.available >= qty {
            qty
        } else if partial && listed.available > 0 {
            listed.available
        } else {
            return Err(Reject::InsufficientShares {
                instrument,
                available: listed.available,
                requested: qty,
            });
        };
        let cost = i64::try_from(taken)
            .ok()
            .and_then(|q| q.checked_mul(listed.price))
            .ok_or(Reject::Overflow("the reservation's cost"))?;
        let available = self.accounts.lines[index].cash.available();
        if cost > available {
            return Err(Reject::InsufficientFunds {
                account,
                available,
                requested: cost,
            });
        }
        // Saturating: a TTL beyond the end of time expires at its last
        // millisecond, u64::MAX, which a stamp can still reach.
        let expires_at_ms = NonZeroU64::new(ttl_ms).map(|ttl| ttl.saturating_add(self.now_ms));

        let listed = &mut self.instruments[instrument.0 as usize];
        listed.available -= taken;
        listed.reserved += taken;
        self.accounts.lines[index].cash.held += cost;
        self.reservations.insert(
            reservation,
            Reservation {
                account_index: index as u32,
                instrument,
                qty: taken,
                cost,
                expires_at_ms,
            },
        );
        if let Some(at) = expires_at_ms {
            self.expiries.insert(at.get(), reservation);
        }
        Ok(Reply::Reserved { qty: taken })
    }

    /// Removes an open reservation, or says why there is none.
    fn take_open(&mut self, reservation: ReservationId) -> Result<Reservation, Reject> {
        let Some(open) = self.reservations.remove(&reservation) else {
            return Err(match self.closed_reservations.get(reservation) {
                Some(Closure::Expired) => Reject::ReservationExpired(reservation),
                closed => Reject::UnknownReservation {
                    reservation,
                    closed,
                },
            });
        };
        if open.expires_at_ms.is_some() {
            let reservations = &self.reservations;
            self.expiries
                .closed(|at, id| expires_at(reservations, at, id));
        }
        Ok(open)
    }

    fn confirm(&mut self, stamp: &Stamp, reservation: ReservationId) -> Outcome {
        let open = self.take_open(reservation)?;
        let index = open.account_index as usize;
        let balance = self.accounts.lines[index].cash.balance - open.cost;
        self.accounts.lines[index].cash.held -= open.cost;
        self.set_balance(stamp, index, EntryKind::Purchase, open.cost, balance);
        let listed = &mut self.instruments[open.instrument.0 as usize];
        listed.reserved -= open.qty;
        listed.sold += open.qty;
        listed.proceeds += i128::from(open.cost);
        self.accounts
            .change_shares(index, open.instrument, i128::from(open.qty));
        self.close(reservation, Closure::Confirmed);
        Ok(Reply::Done)
    }

    fn cancel(&mut self, reservation: ReservationId) -> Outcome {
        let open = self.take_open(reservation)?;
        self.release(reservation, open, Closure::Cancelled);
        Ok(Reply::Done)
    }

    /// Returns a reservation's shares and cash.
    fn release(&mut self, reservation: ReservationId, open: Reservation, how: Closure) {
        self.accounts.lines[open.account_index as usize].cash.held -= open.cost;
        let listed = &mut self.instruments[open.instrument.0 as usize];
        listed.reserved -= open.qty;
        listed.available += open.qty;
        self.close(reservation, how);
    }

    fn close(&mut self, reservation: ReservationId, how: Closure) {
        let max = self.config.closed_reservations_max;
        self.closed_reservations.insert(reservation, how, max);
    }

    /// Expires every reservation due at `now_ms`, earliest first.
    fn expire_due(&mut self) {
        while let Some((at, reservation)) = self.expiries.pop_due(self.now_ms) {
            // A stale entry (its reservation closed early) expires nothing.
            let open = match self.reservations.entry(reservation) {
                MapEntry::Occupied(open)
                    if open.get().expires_at_ms.map(NonZeroU64::get) == Some(at) =>
                {
                    open.remove()
                }
                _ => continue,
            };
            let reservations = &self.reservations;
            self.expiries
                .expired(|at, id| expires_at(reservations, at, id));
            self.release(reservation, open, Closure::Expired);
        }
    }

    fn holdings(&self, account: AccountId) -> Outcome {
        let index = self.index_of(account)?;
        let shares = self
            .accounts
            .holdings_of(index)
            .map(|(id, qty)| {
                let held = self.share_held.get(&(account, id)).copied().unwrap_or(0);
                (self.instruments[id.0 as usize].symbol, qty, held)
            })
            .collect();
        Ok(Reply::Holdings(shares))
    }

    fn credit_rebate(&mut self, stamp: &Stamp, deposit_seq: u64, amount: Units) -> Outcome {
        let (job, position) = match self.rebates.find(deposit_seq) {
            Owed::No => return Ok(Reply::RebateCredited { credited: false }),
            Owed::Queued(position) => (self.rebates.job(position), Some(position)),
            Owed::Unpaid(unpaid) => (unpaid.job, None),
        };
        if amount < 0 || amount > job.amount {
            return Err(Reject::InvalidAmount(
                "a rebate must be between zero and the deposit it is for",
            ));
        }
        let index = self.index_of(job.account)?;
        let Some(balance) = self.accounts.lines[index].cash.balance.checked_add(amount) else {
            // Still owed, but out of the queue so later credits settle.
            if let Some(position) = position {
                self.rebates.set_unpaid(position, amount);
            }
            return Err(Reject::Overflow("the balance with its rebate"));
        };
        match position {
            Some(position) => self.rebates.settle(position),
            None => self.rebates.paid(deposit_seq),
        }
        if amount > 0 {
            self.totals.rebated += i128::from(amount);
            self.set_balance(stamp, index, EntryKind::Rebate, amount, balance);
        }
        Ok(Reply::RebateCredited { credited: true })
    }
}

/// Whether `reservation` is open and expires at `at_ms`: whether an
/// expiry entry is live.
fn expires_at(
    reservations: &FxHashMap<ReservationId, Reservation>,
    at_ms: u64,
    reservation: ReservationId,
) -> bool {
    reservations
        .get(&reservation)
        .is_some_and(|r| r.expires_at_ms.map(NonZeroU64::get) == Some(at_ms))
}

fn positive(amount: Units) -> Result<(), Reject> {
    if amount <= 0 {
        return Err(Reject::InvalidAmount(
            "the amount must be greater than zero",
        ));
    }
    Ok(())
}
