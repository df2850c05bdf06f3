//! The secondary market inside the Ledger: backing checks, holds and
//! settlement around each instrument's [`Book`]. The book decides who trades
//! with whom; this file decides whether an order may exist and moves the
//! cash and shares of every fill.
//!
//! Holds: a resting buy holds `qty × limit` of its account's cash (in the
//! same `held` as reservations, so both compete for one available amount);
//! a resting sell holds its shares (`share_held`). An incoming order holds
//! nothing while it matches: its backing was checked against available on
//! arrival, so every fill it makes is paid from available, and only what
//! rests is held afterwards.

use super::accounts::Change;
use super::Ledger;
use crate::book::{Events, Incoming, OrderId, Refusal, Side, Status, Stp, Tif};
use crate::money::Units;
use crate::outcome::{
    Depth, EntryKind, OrderEvent, OrderEvents, OrderInfo, Outcome, Reject, Reply,
};
use crate::request::{AccountId, InstrumentId, Stamp};

/// Most levels a `book` query returns per side.
pub const BOOK_DEPTH_MAX: u32 = 1000;

/// The fields of a `place` request (the mutex baseline's books take the
/// same, so both refuse the same malformed orders with the same words).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NewOrder {
    pub order: OrderId,
    pub account: AccountId,
    pub instrument: InstrumentId,
    pub side: Side,
    pub market: bool,
    pub tif: Tif,
    pub post_only: bool,
    pub stp: Stp,
    pub qty: u64,
    pub price: Units,
}

impl NewOrder {
    /// Refuses an order that cannot exist (`invalid_order`), whatever the
    /// state: qty 0, a limit without a price, a market order with a price
    /// or `gtc`, `post_only` without a gtc limit.
    pub fn check_shape(&self) -> Result<(), Reject> {
        if self.qty == 0 {
            return Err(Reject::InvalidOrder(
                "an order's qty must be greater than zero",
            ));
        }
        if self.market {
            if self.price != 0 {
                return Err(Reject::InvalidOrder("a market order takes no price"));
            }
            if self.tif == Tif::Gtc {
                return Err(Reject::InvalidOrder(
                    "a market order is ioc or fok, never gtc",
                ));
            }
        } else if self.price <= 0 {
            return Err(Reject::InvalidOrder(
                "a limit order needs a price above zero",
            ));
        }
        if self.post_only && (self.market || self.tif != Tif::Gtc) {
            return Err(Reject::InvalidOrder("post_only needs a gtc limit order"));
        }
        Ok(())
    }
}

fn cost(qty: u64, price: Units) -> Result<Units, Reject> {
    i64::try_from(qty)
        .ok()
        .and_then(|q| q.checked_mul(price))
        .ok_or(Reject::Overflow("the order's value"))
}

/// Refuses `qty` on `side` that `account` cannot back (the place and amend
/// rule, shared with the mutex baseline's books): a limit buy needs
/// `qty × limit` within `cash()`, a sell `qty` within `shares()`; each is
/// asked only for its side. A market buy (`limit: None`) needs no cash: its
/// budget, the available cash, stops its fills.
pub fn check_backing(
    (account, instrument, side): (AccountId, InstrumentId, Side),
    qty: u64,
    limit: Option<Units>,
    cash: impl FnOnce() -> Units,
    shares: impl FnOnce() -> u64,
) -> Result<(), Reject> {
    match (side, limit) {
        (Side::Buy, Some(limit)) => {
            let needed = cost(qty, limit)?;
            let cash = cash();
            if needed > cash {
                return Err(Reject::InsufficientFunds {
                    account,
                    available: cash,
                    requested: needed,
                });
            }
        }
        (Side::Buy, None) => {}
        (Side::Sell, _) => {
            let shares = shares();
            if qty > shares {
                return Err(Reject::InsufficientShares {
                    instrument,
                    available: shares,
                    requested: qty,
                });
            }
        }
    }
    Ok(())
}

impl Ledger {
    /// A trade only moves cash between accounts, so no balance can pass
    /// `i64::MAX` while all the cash that ever entered the ledger
    /// (deposited − withdrawn + rebated, an upper bound of Σ balances) fits
    /// in it. Beyond that (over 92 quadrillion minor units) orders are
    /// refused rather than settled with a check that could fail halfway.
    fn trades_cannot_overflow(&self) -> Result<(), Reject> {
        let t = self.totals;
        if t.deposited - t.withdrawn + t.rebated > i128::from(i64::MAX) {
            return Err(Reject::Overflow(
                "the cash in the ledger (a trade could overflow a balance)",
            ));
        }
        Ok(())
    }

    fn shares_available(&self, account: AccountId, instrument: InstrumentId) -> u64 {
        let index = self.index_of(account).expect("an account with shares");
        let owned = self.accounts.shares(index, instrument);
        let held = self
            .share_held
            .get(&(account, instrument))
            .copied()
            .unwrap_or(0);
        owned - held
    }

    fn hold_shares(&mut self, account: AccountId, instrument: InstrumentId, qty: i128) {
        let held = self.share_held.entry((account, instrument)).or_insert(0);
        *held = (i128::from(*held) + qty) as u64;
        if *held == 0 {
            self.share_held.remove(&(account, instrument));
        }
    }

    fn move_shares(&mut self, account: AccountId, instrument: InstrumentId, qty: i128) {
        let index = self.index_of(account).expect("a trading account");
        self.accounts.change_shares(index, instrument, qty);
    }

    pub(super) fn place(&mut self, stamp: &Stamp, o: NewOrder) -> Outcome {
        o.check_shape()?;
        let index = self.index_of(o.account)?;
        self.instrument_checked(o.instrument)?;
        self.trades_cannot_overflow()?;
        if self.orders.find(&self.books, o.order).is_some() {
            return Err(Reject::OrderExists(o.order));
        }
        let available = self.accounts.lines[index].cash.available();
        check_backing(
            (o.account, o.instrument, o.side),
            o.qty,
            (!o.market).then_some(o.price),
            || available,
            || self.shares_available(o.account, o.instrument),
        )?;
        let incoming = Incoming {
            id: o.order,
            owner: o.account,
            side: o.side,
            price: (!o.market).then_some(o.price),
            qty: o.qty,
            tif: o.tif,
            post_only: o.post_only,
            stp: o.stp,
            budget: (o.market && o.side == Side::Buy).then_some(available as u128),
            filled_before: 0,
        };
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let placed = self.books[o.instrument.0 as usize].place(incoming, &mut events);
        let outcome = match placed {
            Err(Refusal::WouldCross) => Err(Reject::WouldCross(o.order)),
            Err(refusal) => {
                unreachable!("a book refuses a new order only for crossing: {refusal:?}")
            }
            Ok(placed) => Ok(self.settle(
                stamp,
                o.instrument,
                (o.account, o.side, o.price),
                placed,
                &events,
            )),
        };
        self.events = events;
        outcome
    }

    /// Settles what the book did for a taker of `account`: every fill moves cash
    /// and shares and gets a trade number, every self-trade cancellation
    /// releases its hold, what rests is held, and the order index follows
    /// the orders that left the book and the one that rested.
    fn settle(
        &mut self,
        stamp: &Stamp,
        instrument: InstrumentId,
        (account, side, limit): (AccountId, Side, Units),
        placed: crate::book::Placed,
        events: &Events,
    ) -> Reply {
        // Before the order that rested is indexed: it may rest in a slot
        // that one of these left.
        for &(id, slot) in &events.left {
            self.orders.remove(id, instrument, slot);
        }
        if let Some(slot) = events.rested {
            self.orders.insert(&self.books, instrument, slot);
        }
        let start = self.order_events.len();
        for c in &events.stp_cancelled {
            self.release_order(instrument, c.owner, c.side, c.price, c.qty);
            self.order_events.push(OrderEvent::StpCancelled(c.id));
        }
        for f in &events.fills {
            let value = f.price * f.qty as i64;
            let (buyer, seller) = match side {
                Side::Buy => (account, f.maker_owner),
                Side::Sell => (f.maker_owner, account),
            };
            // A resting maker's hold covers what it gives up here.
            match side {
                Side::Buy => self.hold_shares(seller, instrument, -i128::from(f.qty)),
                Side::Sell => {
                    let maker = self.index_of(buyer).expect("a resting order's account");
                    self.accounts.lines[maker].cash.held -= value;
                }
            }
            self.move_shares(seller, instrument, -i128::from(f.qty));
            self.move_shares(buyer, instrument, i128::from(f.qty));
            let b = self.index_of(buyer).expect("a trading account");
            let s = self.index_of(seller).expect("a trading account");
            let buyer_balance = self.accounts.lines[b].cash.balance - value;
            let seller_balance = self.accounts.lines[s].cash.balance + value;
            self.trades += 1;
            let trade = self.trades;
            self.trade_entry(stamp, trade, b, EntryKind::Buy, value, buyer_balance);
            self.trade_entry(stamp, trade, s, EntryKind::Sell, value, seller_balance);
            self.order_events.push(OrderEvent::Trade {
                trade,
                maker: f.maker,
                price: f.price,
                qty: f.qty,
            });
        }
        if placed.status == Status::Resting {
            match side {
                Side::Buy => {
                    let i = self.index_of(account).expect("checked on arrival");
                    self.accounts.lines[i].cash.held += limit * placed.resting as i64;
                }
                Side::Sell => self.hold_shares(account, instrument, i128::from(placed.resting)),
            }
        }
        Reply::Placed {
            status: placed.status,
            filled: placed.filled,
            resting: placed.resting,
            events: OrderEvents::new(start, self.order_events.len() - start),
        }
    }

    /// Sets the balance after one side of trade number `trade` and records it
    /// in the account's history with the trade's number.
    fn trade_entry(
        &mut self,
        stamp: &Stamp,
        trade: u64,
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
            trade: Some(trade),
        };
        self.accounts.push_change(index, change, history_max);
    }

    /// Releases the hold of an order leaving the book untraded.
    fn release_order(
        &mut self,
        instrument: InstrumentId,
        account: AccountId,
        side: Side,
        price: Units,
        qty: u64,
    ) {
        match side {
            Side::Buy => {
                let i = self.index_of(account).expect("a resting order's account");
                self.accounts.lines[i].cash.held -= price * qty as i64;
            }
            Side::Sell => self.hold_shares(account, instrument, -i128::from(qty)),
        }
    }

    pub(super) fn amend(
        &mut self,
        stamp: &Stamp,
        order: OrderId,
        qty: Option<u64>,
        price: Option<Units>,
    ) -> Outcome {
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
        let (instrument, slot) = self
            .orders
            .find(&self.books, order)
            .ok_or(Reject::UnknownOrder(order))?;
        self.trades_cannot_overflow()?;
        let now = self.books[instrument.0 as usize].at(slot);
        let new_qty = qty.unwrap_or(now.qty);
        let new_price = price.unwrap_or(now.price);
        let account = now.owner;
        let index = self.index_of(account).expect("a resting order's account");
        // What the order holds now backs it too.
        check_backing(
            (account, instrument, now.side),
            new_qty,
            Some(new_price),
            || self.accounts.lines[index].cash.available() + now.price * now.qty as i64,
            || self.shares_available(account, instrument) + now.qty,
        )?;
        let mut events = std::mem::take(&mut self.events);
        events.clear();
        let amended = self.books[instrument.0 as usize].amend_at(slot, qty, price, &mut events);
        let outcome = match amended {
            Err(_) => Err(Reject::WouldCross(order)),
            // Moved or resized without meeting any order (the common
            // move): the hold changes by the difference only, with the
            // answer `settle` would give.
            // (The book kept the order in its slot: nothing left the book
            // and nothing rested anew, so the order index stays as it is.)
            Ok(placed)
                if placed.status == Status::Resting
                    && events.fills.is_empty()
                    && events.stp_cancelled.is_empty()
                    && events.left.is_empty()
                    && events.rested.is_none() =>
            {
                match now.side {
                    Side::Buy => {
                        self.accounts.lines[index].cash.held +=
                            new_price * placed.resting as i64 - now.price * now.qty as i64;
                    }
                    Side::Sell if placed.resting != now.qty => self.hold_shares(
                        account,
                        instrument,
                        i128::from(placed.resting) - i128::from(now.qty),
                    ),
                    Side::Sell => {}
                }
                Ok(Reply::Placed {
                    status: placed.status,
                    filled: 0,
                    resting: placed.resting,
                    events: OrderEvents::default(),
                })
            }
            Ok(placed) => {
                self.release_order(instrument, account, now.side, now.price, now.qty);
                Ok(self.settle(
                    stamp,
                    instrument,
                    (account, now.side, new_price),
                    placed,
                    &events,
                ))
            }
        };
        self.events = events;
        outcome
    }

    pub(super) fn cancel_order(&mut self, order: OrderId) -> Outcome {
        let (instrument, slot) = self
            .orders
            .find(&self.books, order)
            .ok_or(Reject::UnknownOrder(order))?;
        let removed = self.books[instrument.0 as usize].cancel_at(slot);
        self.orders.remove(order, instrument, slot);
        self.release_order(
            instrument,
            removed.owner,
            removed.side,
            removed.price,
            removed.qty,
        );
        Ok(Reply::OrderCancelled {
            cancelled: removed.qty,
        })
    }

    pub(super) fn order_query(&self, order: OrderId) -> Outcome {
        let (instrument, slot) = self
            .orders
            .find(&self.books, order)
            .ok_or(Reject::UnknownOrder(order))?;
        let o = self.books[instrument.0 as usize].at(slot);
        Ok(Reply::Order(Box::new(OrderInfo {
            account: o.owner,
            instrument,
            symbol: self.instruments[instrument.0 as usize].symbol,
            side: o.side,
            price: o.price,
            qty: o.qty,
            filled: o.filled,
        })))
    }

    pub(super) fn book_query(&self, instrument: InstrumentId, depth: u32) -> Outcome {
        self.instrument_checked(instrument)?;
        if depth == 0 || depth > BOOK_DEPTH_MAX {
            return Err(Reject::InvalidOrder("a book's depth is 1 to 1000 levels"));
        }
        let book = &self.books[instrument.0 as usize];
        Ok(Reply::Book(Box::new(Depth {
            bids: book.depth(Side::Buy, depth as usize).collect(),
            asks: book.depth(Side::Sell, depth as usize).collect(),
        })))
    }
}
