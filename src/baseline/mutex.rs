//! The pessimistic baseline: a mutex per wallet and per instrument, held
//! across check and update, like `SELECT … FOR UPDATE` in a database.
//!
//! Global lock order (the proof that nothing deadlocks): an instrument or
//! an order book (no path holds both; see `books.rs`), then wallets by
//! ascending account id, then a reservation or order-index shard, then the
//! journal. No path takes a lock earlier in that order while holding a later
//! one; the shards and the journal are leaves. The set-up locks
//! (opening accounts, listing instruments) come before all of these and are
//! never taken while a business lock is held.

use std::collections::VecDeque;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use crossbeam::utils::CachePadded;
use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use super::books::{BookSlot, Exchange, OrderIndex, TradeEntry};
use super::directory::{Catalog, Directory};
use super::journal::BaselineJournal;
use super::rebates::{Job, RebateCounts, RebateDesk};
use super::reservations::{Held, Reservations};
use super::{check_books, positive, take_shares, Bank, BankConfig, StockFigures, WalletFigures};
use crate::book::Side;
use crate::money::Units;
use crate::outcome::{Closure, InstrumentView, Reject};
use crate::rebate::RebateJob;
use crate::request::{AccountId, InstrumentId, Request, ReservationId, Symbol};

#[derive(Debug, Default)]
pub(super) struct Wallet {
    pub balance: Units,
    /// Cash held by open reservations and resting buys; `available =
    /// balance − held`.
    pub held: Units,
    /// Deposits − withdrawals, wrapping; only for the invariant check.
    net: i64,
    /// Shares owned per instrument (bought in the sale or on a book).
    pub shares: FxHashMap<InstrumentId, Shares>,
    /// This wallet's sides of its newest trades, oldest first, as many as
    /// the Ledger keeps history entries per account (see `books.rs`).
    pub trades: VecDeque<TradeEntry>,
}

/// One wallet's shares of one instrument.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Shares {
    pub owned: u64,
    /// Held by resting sells; at most `owned`.
    pub held: u64,
}

impl Wallet {
    pub(super) fn available(&self) -> Units {
        self.balance - self.held
    }

    fn debitable(&self, account: AccountId, amount: Units) -> Result<Units, Reject> {
        if amount > self.available() {
            return Err(Reject::InsufficientFunds {
                account,
                available: self.available(),
                requested: amount,
            });
        }
        Ok(self.balance - amount)
    }
}

#[derive(Debug, Default)]
struct Stock {
    available: u64,
    reserved: u64,
    sold: u64,
}

/// The lock-per-record bank. See the [module docs](super).
pub struct MutexBank {
    pub(super) directory: Directory,
    /// By slot; padded so two wallets' locks never share a cache line.
    /// Shared with the rebate worker.
    pub(super) wallets: Arc<[CachePadded<Mutex<Wallet>>]>,
    pub(super) catalog: Catalog,
    /// Each instrument's order book, by instrument id (see `books.rs`).
    pub(super) books: Box<[CachePadded<Mutex<BookSlot>>]>,
    /// Where each resting order is.
    pub(super) orders: OrderIndex,
    /// Trades numbered so far, on every book (the Ledger's trade numbers).
    pub(super) trades: CachePadded<AtomicU64>,
    /// By instrument id.
    stocks: Box<[CachePadded<Mutex<Stock>>]>,
    reservations: Reservations,
    journal: Option<Arc<BaselineJournal>>,
    /// The rebate job queue and its worker, when the config pays rebates.
    rebates: Option<RebateDesk>,
}

impl MutexBank {
    /// A bank with every table allocated for `config`, journaling to
    /// `journal` if given.
    pub fn new(config: BankConfig, journal: Option<BaselineJournal>) -> MutexBank {
        let directory = Directory::new(config.accounts_max);
        let wallets: Arc<[CachePadded<Mutex<Wallet>>]> = (0..directory.capacity())
            .map(|_| CachePadded::new(Mutex::new(Wallet::default())))
            .collect();
        let journal = journal.map(Arc::new);
        let rebates = config.rebates.map(|policy| {
            let (wallets, log) = (Arc::clone(&wallets), journal.clone());
            RebateDesk::start(
                policy,
                journal.clone(),
                Box::new(move |job: &Job, amount: Units| {
                    // The credit's record is appended under the wallet's
                    // lock, after the deposit's: the file stays a valid
                    // serialization.
                    let mut wallet = wallets[job.slot].lock();
                    wallet.balance = wallet.balance.checked_add(amount)?;
                    wallet.net = wallet.net.wrapping_add(amount);
                    log.as_ref().map(|journal| {
                        journal.append(Request::CreditRebate {
                            deposit_seq: job.job.deposit_seq,
                            amount,
                        })
                    })
                }),
            )
        });
        MutexBank {
            wallets,
            directory,
            catalog: Catalog::new(config.instruments_max),
            books: (0..config.instruments_max)
                .map(|_| CachePadded::new(Mutex::new(BookSlot::default())))
                .collect(),
            orders: OrderIndex::new(config.reservation_shards),
            trades: CachePadded::new(AtomicU64::new(0)),
            stocks: (0..config.instruments_max)
                .map(|_| CachePadded::new(Mutex::new(Stock::default())))
                .collect(),
            reservations: Reservations::new(config.reservation_shards),
            journal,
            rebates,
        }
    }

    pub fn journal(&self) -> Option<&BaselineJournal> {
        self.journal.as_deref()
    }

    /// Appends while the caller still holds the business locks, so the
    /// journal order is the order the locks serialized the operations in.
    pub(super) fn log(&self, request: Request) -> Option<u64> {
        self.journal.as_ref().map(|journal| journal.append(request))
    }

    /// Waits for durability after the locks are released: a later record is
    /// durable only once every earlier one is, so nobody can act on state
    /// whose record could be lost while theirs survives.
    pub(super) fn settle(&self, ticket: Option<u64>) {
        if let (Some(journal), Some(seq)) = (&self.journal, ticket) {
            journal.make_durable(seq);
        }
    }

    fn reserve_claimed(
        &self,
        reservation: ReservationId,
        account: AccountId,
        instrument: InstrumentId,
        qty: u64,
        partial: bool,
    ) -> Result<(u64, Option<u64>), Reject> {
        let slot = self.directory.slot(account)?;
        let listing = self.catalog.get(instrument)?;
        if qty == 0 {
            return Err(Reject::InvalidAmount(
                "the quantity must be greater than zero",
            ));
        }
        let mut stock = self.stocks[instrument.0 as usize].lock();
        let (taken, cost) = take_shares(instrument, listing, stock.available, qty, partial)?;
        let mut wallet = self.wallets[slot].lock();
        if cost > wallet.available() {
            return Err(Reject::InsufficientFunds {
                account,
                available: wallet.available(),
                requested: cost,
            });
        }
        stock.available -= taken;
        stock.reserved += taken;
        wallet.held += cost;
        let ticket = self.log(Request::Reserve {
            reservation,
            account,
            instrument,
            qty,
            ttl_ms: 0,
            partial,
        });
        self.reservations.open(
            reservation,
            Held {
                slot,
                instrument,
                qty: taken,
                cost,
            },
        );
        Ok((taken, ticket))
    }

    /// Ends an open reservation: `Confirmed` sells the shares and debits the
    /// cash, `Cancelled` returns both.
    fn close(&self, reservation: ReservationId, how: Closure) -> Result<(), Reject> {
        let held = self.reservations.close(reservation, how)?;
        let ticket = {
            let mut stock = self.stocks[held.instrument.0 as usize].lock();
            let mut wallet = self.wallets[held.slot].lock();
            stock.reserved -= held.qty;
            wallet.held -= held.cost;
            let request = if how == Closure::Confirmed {
                stock.sold += held.qty;
                wallet.balance -= held.cost;
                wallet.shares.entry(held.instrument).or_default().owned += held.qty;
                Request::Confirm { reservation }
            } else {
                stock.available += held.qty;
                Request::Cancel { reservation }
            };
            self.log(request)
        };
        self.settle(ticket);
        Ok(())
    }
}

impl Bank for MutexBank {
    fn open_account(&self, account: AccountId) -> Result<(), Reject> {
        let mut ticket = None;
        self.directory.open(account, |_| {
            ticket = self.log(Request::OpenAccount { account });
        })?;
        self.settle(ticket);
        Ok(())
    }

    fn deposit(&self, account: AccountId, amount: Units) -> Result<Units, Reject> {
        let slot = self.directory.slot(account)?;
        positive(amount)?;
        let (balance, ticket) = {
            let mut wallet = self.wallets[slot].lock();
            let balance = wallet
                .balance
                .checked_add(amount)
                .ok_or(Reject::Overflow("the balance"))?;
            wallet.balance = balance;
            wallet.net = wallet.net.wrapping_add(amount);
            (balance, self.log(Request::Deposit { account, amount }))
        };
        if let Some(rebates) = &self.rebates {
            rebates.queue(Job {
                slot,
                job: RebateJob {
                    // The deposit's record, which the credit's names (0
                    // without a journal, where nothing needs to match it).
                    deposit_seq: ticket.unwrap_or(0),
                    account,
                    amount,
                },
            });
        }
        self.settle(ticket);
        Ok(balance)
    }

    fn withdraw(&self, account: AccountId, amount: Units) -> Result<Units, Reject> {
        let slot = self.directory.slot(account)?;
        positive(amount)?;
        let (balance, ticket) = {
            let mut wallet = self.wallets[slot].lock();
            let balance = wallet.debitable(account, amount)?;
            wallet.balance = balance;
            wallet.net = wallet.net.wrapping_sub(amount);
            (balance, self.log(Request::Withdraw { account, amount }))
        };
        self.settle(ticket);
        Ok(balance)
    }

    /// A transfer to the same account is accepted as a no-op once the
    /// account and amount check out, as in the Ledger.
    fn transfer(&self, from: AccountId, to: AccountId, amount: Units) -> Result<(), Reject> {
        let from_slot = self.directory.slot(from)?;
        let to_slot = self.directory.slot(to)?;
        positive(amount)?;
        let record = Request::Transfer { from, to, amount };
        if from_slot == to_slot {
            let ticket = {
                let wallet = self.wallets[from_slot].lock();
                wallet.debitable(from, amount)?;
                self.log(record)
            };
            self.settle(ticket);
            return Ok(());
        }
        let ticket = {
            // Lowest account id first, whichever way the money goes.
            let (mut sender, mut receiver) = if from < to {
                let sender = self.wallets[from_slot].lock();
                (sender, self.wallets[to_slot].lock())
            } else {
                let receiver = self.wallets[to_slot].lock();
                (self.wallets[from_slot].lock(), receiver)
            };
            let sender_balance = sender.debitable(from, amount)?;
            let receiver_balance = receiver
                .balance
                .checked_add(amount)
                .ok_or(Reject::Overflow("the receiving balance"))?;
            sender.balance = sender_balance;
            receiver.balance = receiver_balance;
            self.log(record)
        };
        self.settle(ticket);
        Ok(())
    }

    fn balance(&self, account: AccountId) -> Result<(Units, Units), Reject> {
        let wallet = self.wallets[self.directory.slot(account)?].lock();
        Ok((wallet.balance, wallet.held))
    }

    fn list_instrument(
        &self,
        symbol: Symbol,
        supply: u64,
        price: Units,
    ) -> Result<InstrumentId, Reject> {
        let mut ticket = None;
        let id = self.catalog.list(symbol, supply, price, |id| {
            self.stocks[id.0 as usize].lock().available = supply;
            ticket = self.log(Request::ListInstrument {
                symbol,
                supply,
                price,
            });
        })?;
        self.settle(ticket);
        Ok(id)
    }

    fn reserve(
        &self,
        reservation: ReservationId,
        account: AccountId,
        instrument: InstrumentId,
        qty: u64,
        partial: bool,
    ) -> Result<u64, Reject> {
        self.reservations.claim(reservation)?;
        match self.reserve_claimed(reservation, account, instrument, qty, partial) {
            Ok((taken, ticket)) => {
                self.settle(ticket);
                Ok(taken)
            }
            Err(reject) => {
                self.reservations.release_claim(reservation);
                Err(reject)
            }
        }
    }

    fn confirm(&self, reservation: ReservationId) -> Result<(), Reject> {
        self.close(reservation, Closure::Confirmed)
    }

    fn cancel(&self, reservation: ReservationId) -> Result<(), Reject> {
        self.close(reservation, Closure::Cancelled)
    }

    fn instrument(&self, instrument: InstrumentId) -> Result<InstrumentView, Reject> {
        let listing = self.catalog.get(instrument)?;
        let stock = self.stocks[instrument.0 as usize].lock();
        Ok(InstrumentView {
            id: instrument,
            symbol: listing.symbol,
            supply: listing.supply,
            available: stock.available,
            reserved: stock.reserved,
            sold: stock.sold,
            price: listing.price,
        })
    }

    /// Besides the checks every bank makes: each wallet's hold also covers
    /// its resting buys, its shares held equal its resting sells and stay
    /// within what it owns, the shares owned add up to the shares sold per
    /// instrument, and the order index names exactly the resting orders.
    fn check_invariants(&self) -> Result<(), String> {
        // The global lock order: every book, then the wallets one by one.
        let books: Vec<_> = self
            .catalog
            .iter()
            .map(|(id, _)| (id, self.books[id.0 as usize].lock()))
            .collect();
        let indexed = self.orders.resting();
        let mut order_held = vec![0i128; self.directory.len()];
        let mut sells: FxHashMap<(usize, InstrumentId), u64> = FxHashMap::default();
        let mut resting = 0usize;
        for (id, slot) in &books {
            for side in [Side::Buy, Side::Sell] {
                for o in slot.book.orders(side) {
                    resting += 1;
                    if indexed.get(&o.id) != Some(id) {
                        return Err(format!("order {} is not indexed on its book", o.id));
                    }
                    let owner = self
                        .directory
                        .slot(o.owner)
                        .map_err(|_| format!("order {}: no account {}", o.id, o.owner))?;
                    match side {
                        Side::Buy => order_held[owner] += i128::from(o.price) * i128::from(o.qty),
                        Side::Sell => *sells.entry((owner, *id)).or_default() += o.qty,
                    }
                }
            }
        }
        if resting != indexed.len() {
            return Err(format!(
                "{} orders indexed but {resting} rest on the books",
                indexed.len()
            ));
        }
        let mut owned = vec![0u128; self.catalog.iter().count()];
        let mut wallets = Vec::with_capacity(self.directory.len());
        for slot in 0..self.directory.len() {
            let wallet = self.wallets[slot].lock();
            let account = self.directory.id(slot);
            for (instrument, shares) in &wallet.shares {
                let needed = sells.remove(&(slot, *instrument)).unwrap_or(0);
                if shares.held != needed || shares.held > shares.owned {
                    return Err(format!(
                        "account {account}, instrument {}: {} shares held of {} owned, but its \
                         resting sells need {needed}",
                        instrument.0, shares.held, shares.owned
                    ));
                }
                owned[instrument.0 as usize] += u128::from(shares.owned);
            }
            wallets.push(WalletFigures {
                account,
                balance: wallet.balance,
                held: wallet.held,
                net: wallet.net,
            });
        }
        if let Some(((slot, instrument), qty)) = sells.into_iter().next() {
            return Err(format!(
                "account {} rests sells of {qty} shares of instrument {} it does not hold",
                self.directory.id(slot),
                instrument.0
            ));
        }
        drop(books);
        let stocks: Vec<StockFigures> = self
            .catalog
            .iter()
            .map(|(id, _)| {
                let stock = self.stocks[id.0 as usize].lock();
                StockFigures {
                    available: stock.available,
                    reserved: stock.reserved,
                    sold: stock.sold,
                }
            })
            .collect();
        for ((id, listing), stock) in self.catalog.iter().zip(&stocks) {
            if owned[id.0 as usize] != u128::from(stock.sold) {
                return Err(format!(
                    "instrument {}: accounts own {} shares but {} were sold",
                    listing.symbol, owned[id.0 as usize], stock.sold
                ));
            }
        }
        let listings = self.catalog.iter().map(|(id, listing)| (id, *listing));
        check_books(&wallets, &stocks, listings, &self.reservations, &order_held)
    }

    fn as_exchange(&self) -> Option<&dyn Exchange> {
        Some(self)
    }

    fn rebates(&self) -> RebateCounts {
        self.rebates
            .as_ref()
            .map_or(RebateCounts::default(), RebateDesk::counts)
    }

    fn settle_rebates(&self) {
        if let Some(rebates) = &self.rebates {
            rebates.settle();
        }
    }
}
