//! The mutex baseline's secondary market: a lock per book, the pure
//! [`Book`] for matching (the Ledger's own), and settlement by the Ledger's
//! rules (`ledger/orders.rs`): the same backing checks on arrival, holds on
//! resting orders, trades at the maker's price, self-trade cancellations
//! releasing their holds.
//!
//! **Locks.** The global order of [`MutexBank`](super::MutexBank) holds:
//! the book (where the instrument comes in that order), then wallets by
//! ascending account id, then order-index shards and the journal (leaves).
//! Which wallets a request touches is only known from the book, so with the
//! book locked a read-only walk of the other side, in priority order, lists
//! every maker matching could meet (all crossing orders until the qty is
//! covered by others' orders; own orders are walked past, as self-trade
//! prevention does): a superset of the real counterparties. Those wallets
//! and the taker's are locked lowest id first, then the request is checked,
//! matched and settled under all of them: linearizable, and journaled in
//! that order. A move that does not cross (the common request) walks
//! nothing and locks one wallet.
//!
//! **The same work per trade as the Ledger.** Each fill gets the next trade
//! number from one counter for all books (an atomic add, under the book's
//! lock, so a book's trades are numbered in its order), and both wallets
//! get a history entry with it (`buy` for the buyer, `sell` for the seller:
//! amount, balance after, trade number) in a ring as long as the Ledger's
//! default `history_per_account_max`. The backing check on arrival and on
//! amend is the Ledger's own [`check_backing`].
//!
//! **Where it differs from the Ledger, and why.** The history holds trades
//! only (the baseline keeps no history of deposits and the like) and has
//! no seq or time (it has no sequencer). The overflow guard is per request:
//! an order is refused (`overflow`) when a wallet it could touch would pass
//! `i64::MAX` if it received the most the order could move; the Ledger
//! refuses orders once the cash it holds in all could overflow a balance.
//! Both refuse rather than wrap; they differ only for balances within one
//! order's value of `i64::MAX`. An order id is claimed before its book is
//! locked, so a concurrent place of the same id on another book is refused
//! (`order_exists`) while the first is being matched, even if that one
//! then does not rest.

use std::sync::atomic::Ordering;

use crossbeam::utils::CachePadded;
use parking_lot::{Mutex, MutexGuard};
use rustc_hash::FxHashMap;

use super::mutex::{MutexBank, Shares, Wallet};
use super::Bank;
use crate::book::{Book, Events, Incoming, OrderId, Placed, Price, Side, Status};
use crate::ledger::check_backing;
use crate::money::Units;
use crate::outcome::{EntryKind, Reject};
use crate::request::{AccountId, InstrumentId, Request};

pub use crate::ledger::NewOrder;

/// Trade entries kept per wallet: the Ledger's default
/// `history_per_account_max`.
pub const TRADE_HISTORY_MAX: usize = 32;

/// One side of a trade in a wallet's history: what the Ledger's `buy` and
/// `sell` entries hold, less the sequencer's seq and time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TradeEntry {
    pub trade: u64,
    /// `Buy` or `Sell`.
    pub kind: EntryKind,
    /// The trade's value, always positive.
    pub amount: Units,
    /// The wallet's balance right after the trade.
    pub balance: Units,
}

/// A bank that also runs order books (only the mutex baseline does; see
/// [`Bank::as_exchange`]). Shares reach accounts through the sale
/// (`confirm`), then trade on the books.
pub trait Exchange: Bank {
    fn place(&self, order: NewOrder) -> Result<Placed, Reject>;
    /// A new remaining `qty` and/or `price` for a resting order.
    fn amend(
        &self,
        order: OrderId,
        qty: Option<u64>,
        price: Option<Units>,
    ) -> Result<Placed, Reject>;
    /// The qty taken off the book.
    fn cancel_order(&self, order: OrderId) -> Result<u64, Reject>;
    /// `(owned, held)` shares of `instrument` in `account`'s wallet.
    fn shares(&self, account: AccountId, instrument: InstrumentId) -> Result<(u64, u64), Reject>;
    /// `account`'s sides of its newest trades, newest first (at most
    /// [`TRADE_HISTORY_MAX`]).
    fn trade_history(&self, account: AccountId) -> Result<Vec<TradeEntry>, Reject>;
}

/// One instrument's book and its reusable event buffer, under one lock.
#[derive(Default)]
pub(super) struct BookSlot {
    pub book: Book,
    events: Events,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Where {
    /// Claimed by a place still matching: the id is taken, but nothing rests.
    Claimed,
    /// Resting on this instrument's book. Set and removed only under that
    /// book's lock, so under it "the index says here" means "it is here".
    Resting(InstrumentId),
}

type Shard = Mutex<FxHashMap<OrderId, Where>>;

/// Order id → where it rests, in independently locked shards (leaves of
/// the lock order, like the reservation shards).
pub(super) struct OrderIndex {
    shards: Box<[CachePadded<Shard>]>,
    mask: usize,
}

impl OrderIndex {
    pub fn new(shards: usize) -> OrderIndex {
        let shards = shards.max(1).next_power_of_two();
        OrderIndex {
            shards: (0..shards)
                .map(|_| CachePadded::new(Mutex::new(FxHashMap::default())))
                .collect(),
            mask: shards - 1,
        }
    }

    fn shard(&self, id: OrderId) -> &Shard {
        // Fibonacci hashing spreads sequential ids over all shards.
        let mixed = id.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
        &self.shards[mixed as usize & self.mask]
    }

    /// Takes `id` for a place; refused while it is taken.
    fn claim(&self, id: OrderId) -> Result<(), Reject> {
        let mut shard = self.shard(id).lock();
        if shard.contains_key(&id) {
            return Err(Reject::OrderExists(id));
        }
        shard.insert(id, Where::Claimed);
        Ok(())
    }

    fn forget(&self, id: OrderId) {
        self.shard(id).lock().remove(&id);
    }

    fn rest(&self, id: OrderId, instrument: InstrumentId) {
        self.shard(id).lock().insert(id, Where::Resting(instrument));
    }

    fn find(&self, id: OrderId) -> Option<InstrumentId> {
        match self.shard(id).lock().get(&id) {
            Some(Where::Resting(instrument)) => Some(*instrument),
            Some(Where::Claimed) | None => None,
        }
    }

    /// Resting orders indexed, by id (for the invariant check).
    pub fn resting(&self) -> FxHashMap<OrderId, InstrumentId> {
        let mut all = FxHashMap::default();
        for shard in self.shards.iter() {
            for (&id, &at) in shard.lock().iter() {
                if let Where::Resting(instrument) = at {
                    all.insert(id, instrument);
                }
            }
        }
        all
    }
}

/// The wallets a request locked, lowest account id first.
enum Locked<'a> {
    One(AccountId, MutexGuard<'a, Wallet>),
    Many(Vec<(AccountId, MutexGuard<'a, Wallet>)>),
}

impl Locked<'_> {
    fn get(&mut self, account: AccountId) -> &mut Wallet {
        let found = match self {
            Locked::One(id, wallet) => (*id == account).then_some(&mut **wallet),
            Locked::Many(all) => all
                .binary_search_by_key(&account, |(id, _)| *id)
                .ok()
                .map(|i| &mut *all[i].1),
        };
        found.expect("the walk locked every wallet matching can touch")
    }

    fn balances(&self) -> impl Iterator<Item = (AccountId, Units)> + '_ {
        let (one, many) = match self {
            Locked::One(id, wallet) => (Some((*id, wallet.balance)), None),
            Locked::Many(all) => (None, Some(all.iter().map(|(id, w)| (*id, w.balance)))),
        };
        one.into_iter().chain(many.into_iter().flatten())
    }
}

/// Shares of `instrument` in `wallet` that no resting sell holds.
fn free_shares(wallet: &Wallet, instrument: InstrumentId) -> u64 {
    wallet
        .shares
        .get(&instrument)
        .map_or(0, |s| s.owned - s.held)
}

fn crosses(side: Side, limit: Option<Price>, resting: Price) -> bool {
    match (side, limit) {
        (_, None) => true,
        (Side::Buy, Some(limit)) => limit >= resting,
        (Side::Sell, Some(limit)) => limit <= resting,
    }
}

/// The makers an order of `owner` on `side` at `limit` for `qty` could
/// meet, pushed to `makers` (see the module docs), and the most cash its
/// fills could move.
fn walk(
    book: &Book,
    (side, limit, qty, owner): (Side, Option<Price>, u64, AccountId),
    makers: &mut Vec<AccountId>,
) -> i128 {
    let mut left = qty;
    let mut value = 0i128;
    for o in book.orders(side.opposite()) {
        if left == 0 || !crosses(side, limit, o.price) {
            break;
        }
        makers.push(o.owner);
        if o.owner != owner {
            let take = left.min(o.qty);
            left -= take;
            value += i128::from(take) * i128::from(o.price);
        }
    }
    value
}

fn shares(wallet: &mut Wallet, instrument: InstrumentId) -> &mut Shares {
    wallet.shares.entry(instrument).or_default()
}

/// Moves a trade's value into or out of `wallet` and records it.
fn trade_entry(wallet: &mut Wallet, trade: u64, kind: EntryKind, value: Units) {
    wallet.balance += match kind {
        EntryKind::Sell => value,
        _ => -value,
    };
    if wallet.trades.len() == TRADE_HISTORY_MAX {
        wallet.trades.pop_front();
    }
    wallet.trades.push_back(TradeEntry {
        trade,
        kind,
        amount: value,
        balance: wallet.balance,
    });
}

/// Releases the hold of an order leaving the book untraded.
fn release(wallet: &mut Wallet, instrument: InstrumentId, side: Side, price: Units, qty: u64) {
    match side {
        Side::Buy => wallet.held -= price * qty as i64,
        Side::Sell => shares(wallet, instrument).held -= qty,
    }
}

impl MutexBank {
    /// Locks the taker's wallet and the makers', lowest id first.
    fn lock_parties(
        &self,
        taker: (AccountId, usize),
        mut makers: Vec<AccountId>,
    ) -> Result<Locked<'_>, Reject> {
        if makers.is_empty() {
            return Ok(Locked::One(taker.0, self.wallets[taker.1].lock()));
        }
        makers.push(taker.0);
        makers.sort_unstable();
        makers.dedup();
        let mut slots = Vec::with_capacity(makers.len());
        for &account in &makers {
            slots.push((account, self.directory.slot(account)?));
        }
        Ok(Locked::Many(
            slots
                .into_iter()
                .map(|(account, slot)| (account, self.wallets[slot].lock()))
                .collect(),
        ))
    }

    /// Refuses an order that could make a wallet it touches overflow (see
    /// the module docs).
    fn cannot_overflow(wallets: &Locked<'_>, value_max: i128) -> Result<(), Reject> {
        for (_, balance) in wallets.balances() {
            if i128::from(balance) + value_max > i128::from(i64::MAX) {
                return Err(Reject::Overflow(
                    "a balance the trade could credit (it would pass the largest amount)",
                ));
            }
        }
        Ok(())
    }

    /// Settles what the book did for taker `order`, as the Ledger does.
    fn settle_trades(
        &self,
        wallets: &mut Locked<'_>,
        instrument: InstrumentId,
        (order, account, side, limit): (OrderId, AccountId, Side, Units),
        placed: Placed,
        events: &Events,
    ) {
        for c in &events.stp_cancelled {
            release(wallets.get(c.owner), instrument, c.side, c.price, c.qty);
            self.orders.forget(c.id);
        }
        for f in &events.fills {
            let value = f.price * f.qty as i64;
            let (buyer, seller) = match side {
                Side::Buy => (account, f.maker_owner),
                Side::Sell => (f.maker_owner, account),
            };
            // A resting maker's hold covers what it gives up here.
            let maker = wallets.get(f.maker_owner);
            match side {
                Side::Buy => shares(maker, instrument).held -= f.qty,
                Side::Sell => maker.held -= value,
            }
            let trade = self.trades.fetch_add(1, Ordering::Relaxed) + 1;
            let b = wallets.get(buyer);
            shares(b, instrument).owned += f.qty;
            trade_entry(b, trade, EntryKind::Buy, value);
            let s = wallets.get(seller);
            shares(s, instrument).owned -= f.qty;
            trade_entry(s, trade, EntryKind::Sell, value);
            if f.maker_left == 0 {
                self.orders.forget(f.maker);
            }
        }
        if placed.status == Status::Resting {
            self.orders.rest(order, instrument);
            let wallet = wallets.get(account);
            match side {
                Side::Buy => wallet.held += limit * placed.resting as i64,
                Side::Sell => shares(wallet, instrument).held += placed.resting,
            }
        }
    }

    /// A place whose id is claimed: everything under the book's lock.
    fn place_claimed(&self, o: NewOrder, slot: usize) -> Result<Placed, Reject> {
        let (placed, ticket) = {
            let mut guard = self.books[o.instrument.0 as usize].lock();
            let BookSlot { book, events } = &mut *guard;
            let limit = (!o.market).then_some(o.price);
            let mut makers = Vec::new();
            let value_max = walk(book, (o.side, limit, o.qty, o.account), &mut makers);
            let mut wallets = self.lock_parties((o.account, slot), makers)?;
            let taker = wallets.get(o.account);
            let available = taker.available();
            check_backing(
                (o.account, o.instrument, o.side),
                o.qty,
                limit,
                || available,
                || free_shares(taker, o.instrument),
            )?;
            Self::cannot_overflow(&wallets, value_max)?;
            events.clear();
            let incoming = Incoming {
                id: o.order,
                owner: o.account,
                side: o.side,
                price: limit,
                qty: o.qty,
                tif: o.tif,
                post_only: o.post_only,
                stp: o.stp,
                budget: (o.market && o.side == Side::Buy).then_some(available as u128),
                filled_before: 0,
            };
            let placed = book
                .place(incoming, events)
                .map_err(|_| Reject::WouldCross(o.order))?;
            self.settle_trades(
                &mut wallets,
                o.instrument,
                (o.order, o.account, o.side, o.price),
                placed,
                events,
            );
            let ticket = self.log(Request::Place {
                order: o.order,
                account: o.account,
                instrument: o.instrument,
                side: o.side,
                market: o.market,
                tif: o.tif,
                post_only: o.post_only,
                stp: o.stp,
                qty: o.qty,
                price: o.price,
            });
            (placed, ticket)
        };
        self.settle(ticket);
        Ok(placed)
    }
}

impl Exchange for MutexBank {
    fn place(&self, o: NewOrder) -> Result<Placed, Reject> {
        o.check_shape()?;
        let slot = self.directory.slot(o.account)?;
        self.catalog.get(o.instrument)?;
        self.orders.claim(o.order)?;
        let placed = self.place_claimed(o, slot);
        if !matches!(
            placed,
            Ok(Placed {
                status: Status::Resting,
                ..
            })
        ) {
            self.orders.forget(o.order);
        }
        placed
    }

    fn amend(
        &self,
        order: OrderId,
        qty: Option<u64>,
        price: Option<Units>,
    ) -> Result<Placed, Reject> {
        if qty.is_none() && price.is_none() {
            return Err(Reject::InvalidOrder("an amend changes qty, price or both"));
        }
        if qty == Some(0) {
            return Err(Reject::InvalidOrder(
                "an amend's qty must be greater than zero (cancel_order takes an order off)",
            ));
        }
        if price.is_some_and(|p| p <= 0) {
            return Err(Reject::InvalidOrder(
                "a limit order needs a price above zero",
            ));
        }
        loop {
            let instrument = self.orders.find(order).ok_or(Reject::UnknownOrder(order))?;
            let mut guard = self.books[instrument.0 as usize].lock();
            let BookSlot { book, events } = &mut *guard;
            // It left this book since the look-up: look again.
            let Some(now) = book.order(order) else {
                continue;
            };
            let new_qty = qty.unwrap_or(now.qty);
            let new_price = price.unwrap_or(now.price);
            let account = now.owner;
            let mut makers = Vec::new();
            let value_max = if new_price != now.price || new_qty > now.qty {
                walk(
                    book,
                    (now.side, Some(new_price), new_qty, account),
                    &mut makers,
                )
            } else {
                0
            };
            let slot = self.directory.slot(account)?;
            let mut wallets = self.lock_parties((account, slot), makers)?;
            let wallet = wallets.get(account);
            // What the order holds now backs it too.
            check_backing(
                (account, instrument, now.side),
                new_qty,
                Some(new_price),
                || wallet.available() + now.price * now.qty as i64,
                || free_shares(wallet, instrument) + now.qty,
            )?;
            Self::cannot_overflow(&wallets, value_max)?;
            events.clear();
            let placed = book
                .amend(order, qty, price, events)
                .map_err(|_| Reject::WouldCross(order))?;
            release(
                wallets.get(account),
                instrument,
                now.side,
                now.price,
                now.qty,
            );
            if placed.status != Status::Resting {
                self.orders.forget(order);
            }
            self.settle_trades(
                &mut wallets,
                instrument,
                (order, account, now.side, new_price),
                placed,
                events,
            );
            let ticket = self.log(Request::Amend { order, qty, price });
            drop(wallets);
            drop(guard);
            self.settle(ticket);
            return Ok(placed);
        }
    }

    fn cancel_order(&self, order: OrderId) -> Result<u64, Reject> {
        loop {
            let instrument = self.orders.find(order).ok_or(Reject::UnknownOrder(order))?;
            let ticket = {
                let mut guard = self.books[instrument.0 as usize].lock();
                // It left this book since the look-up: look again.
                let Ok(removed) = guard.book.cancel(order) else {
                    continue;
                };
                let slot = self.directory.slot(removed.owner)?;
                let mut wallet = self.wallets[slot].lock();
                release(
                    &mut wallet,
                    instrument,
                    removed.side,
                    removed.price,
                    removed.qty,
                );
                self.orders.forget(order);
                (self.log(Request::CancelOrder { order }), removed.qty)
            };
            self.settle(ticket.0);
            return Ok(ticket.1);
        }
    }

    fn shares(&self, account: AccountId, instrument: InstrumentId) -> Result<(u64, u64), Reject> {
        let wallet = self.wallets[self.directory.slot(account)?].lock();
        let s = wallet.shares.get(&instrument).copied().unwrap_or_default();
        Ok((s.owned, s.held))
    }

    fn trade_history(&self, account: AccountId) -> Result<Vec<TradeEntry>, Reject> {
        let wallet = self.wallets[self.directory.slot(account)?].lock();
        Ok(wallet.trades.iter().rev().copied().collect())
    }
}
