//! The optimistic baseline: every decision is one compare-and-swap on one
//! atomic word, retried when another thread changed the word first.
//!
//! A wallet is `available` and `held` (balance = available + held). Every
//! refusal for lack of funds is decided by a CAS on `available`, every
//! refusal for lack of shares by a CAS on the instrument's `available`.
//! Operations that touch two words commit them one after the other, in an
//! order chosen so that a wallet's `available + held` never understates the
//! money that is in it or on its way back to it. That keeps every credit's
//! overflow check honest and makes every undo fit:
//! - money leaves `available` only after it was added to `held` ("hold,
//!   then debit"): a reservation keeps the hold, a transfer drops it once
//!   the receiver is credited, or returns the money if that credit would
//!   overflow;
//! - a reservation takes its shares first and returns them if the hold is
//!   refused for lack of funds;
//! - cancel returns cash to `available` before releasing `held`.
//!
//! Between the commits the amount is in flight (a transfer's money shows as
//! held on the sender), so sums over the bank balance only at quiescence
//! (see the [module docs](super)).

use std::sync::atomic::{AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam::utils::CachePadded;

use super::directory::{Catalog, Directory};
use super::journal::BaselineJournal;
use super::rebates::{Job, RebateCounts, RebateDesk};
use super::reservations::{Held, Reservations};
use super::{check_books, positive, take_shares, Bank, BankConfig, StockFigures, WalletFigures};
use crate::money::Units;
use crate::outcome::{Closure, InstrumentView, Reject};
use crate::rebate::RebateJob;
use crate::request::{AccountId, InstrumentId, Request, ReservationId, Symbol};

/// Counters for retries, one per thread (modulo this), so counting a retry
/// never adds a contended write of its own.
const RETRY_STRIPES: usize = 64;

static NEXT_STRIPE: AtomicUsize = AtomicUsize::new(0);

thread_local! {
    static STRIPE: usize = NEXT_STRIPE.fetch_add(1, Ordering::Relaxed) % RETRY_STRIPES;
}

#[derive(Debug, Default)]
struct Wallet {
    available: AtomicI64,
    held: AtomicI64,
    /// Deposits − withdrawals, wrapping; only for the invariant check.
    net: AtomicI64,
}

#[derive(Debug, Default)]
struct Stock {
    available: AtomicU64,
    reserved: AtomicU64,
    sold: AtomicU64,
}

/// A wallet's balance from its two words. A hold raised before its debit
/// lands counts the amount twice for an instant, which near `i64::MAX` can
/// exceed it; the answer then saturates instead of wrapping.
fn balance_of(available: Units, wallet: &Wallet) -> Units {
    available.saturating_add(wallet.held.load(Ordering::Acquire))
}

type Stripes = Arc<[CachePadded<AtomicU64>]>;

fn count_retries(stripes: &Stripes, retries: u64) {
    if retries > 0 {
        let stripe = STRIPE.with(|stripe| *stripe);
        stripes[stripe].fetch_add(retries, Ordering::Relaxed);
    }
}

/// Reads `word`, lets `decide` compute its next value (or refuse), and
/// commits with a compare-and-swap, deciding again on the fresh value
/// whenever another thread got there first. Returns the committed value.
fn update_i64(
    stripes: &Stripes,
    word: &AtomicI64,
    mut decide: impl FnMut(i64) -> Result<i64, Reject>,
) -> Result<i64, Reject> {
    let mut current = word.load(Ordering::Acquire);
    let mut retries = 0;
    let result = loop {
        let next = match decide(current) {
            Ok(next) => next,
            Err(reject) => break Err(reject),
        };
        match word.compare_exchange(current, next, Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => break Ok(next),
            Err(actual) => {
                current = actual;
                retries += 1;
            }
        }
    };
    count_retries(stripes, retries);
    result
}

/// Adds `amount` to `available` unless the balance would overflow.
fn credit(
    stripes: &Stripes,
    wallet: &Wallet,
    amount: Units,
    what: &'static str,
) -> Result<Units, Reject> {
    update_i64(stripes, &wallet.available, |available| {
        let held = wallet.held.load(Ordering::Acquire);
        available
            .checked_add(held)
            .and_then(|balance| balance.checked_add(amount))
            .ok_or(Reject::Overflow(what))?;
        Ok(available + amount)
    })
}

/// The compare-and-swap bank. See the [module docs](super).
pub struct OptimisticBank {
    directory: Directory,
    /// By slot; padded so two wallets never share a cache line. Shared with
    /// the rebate worker.
    wallets: Arc<[CachePadded<Wallet>]>,
    catalog: Catalog,
    /// By instrument id.
    stocks: Box<[CachePadded<Stock>]>,
    reservations: Reservations,
    journal: Option<Arc<BaselineJournal>>,
    retries: Stripes,
    /// The rebate job queue and its worker, when the config pays rebates.
    rebates: Option<RebateDesk>,
}

impl OptimisticBank {
    /// A bank with every table allocated for `config`, journaling to
    /// `journal` if given.
    pub fn new(config: BankConfig, journal: Option<BaselineJournal>) -> OptimisticBank {
        let directory = Directory::new(config.accounts_max);
        let wallets: Arc<[CachePadded<Wallet>]> = (0..directory.capacity())
            .map(|_| CachePadded::new(Wallet::default()))
            .collect();
        let retries: Stripes = (0..RETRY_STRIPES)
            .map(|_| CachePadded::new(AtomicU64::new(0)))
            .collect();
        let journal = journal.map(Arc::new);
        let rebates = config.rebates.map(|policy| {
            let (wallets, retries, log) =
                (Arc::clone(&wallets), Arc::clone(&retries), journal.clone());
            RebateDesk::start(
                policy,
                journal.clone(),
                Box::new(move |job: &Job, amount: Units| {
                    let wallet = &wallets[job.slot];
                    credit(&retries, wallet, amount, "the balance with its rebate").ok()?;
                    wallet.net.fetch_add(amount, Ordering::Relaxed);
                    log.as_ref().map(|journal| {
                        journal.append(Request::CreditRebate {
                            deposit_seq: job.job.deposit_seq,
                            amount,
                        })
                    })
                }),
            )
        });
        OptimisticBank {
            wallets,
            directory,
            catalog: Catalog::new(config.instruments_max),
            stocks: (0..config.instruments_max)
                .map(|_| CachePadded::new(Stock::default()))
                .collect(),
            reservations: Reservations::new(config.reservation_shards),
            journal,
            retries,
            rebates,
        }
    }

    pub fn journal(&self) -> Option<&BaselineJournal> {
        self.journal.as_deref()
    }

    /// Appends after the operation's last commit and waits as the journal's
    /// durability asks; there are no locks to order the records by.
    fn log(&self, request: Request) {
        let ticket = self.journal.as_ref().map(|journal| journal.append(request));
        self.settle(ticket);
    }

    fn settle(&self, ticket: Option<u64>) {
        if let (Some(journal), Some(seq)) = (&self.journal, ticket) {
            journal.make_durable(seq);
        }
    }

    fn update_i64(
        &self,
        word: &AtomicI64,
        decide: impl FnMut(i64) -> Result<i64, Reject>,
    ) -> Result<i64, Reject> {
        update_i64(&self.retries, word, decide)
    }

    /// [`OptimisticBank::update_i64`] for share counts.
    fn update_u64(
        &self,
        word: &AtomicU64,
        mut decide: impl FnMut(u64) -> Result<u64, Reject>,
    ) -> Result<u64, Reject> {
        let mut current = word.load(Ordering::Acquire);
        let mut retries = 0;
        let result = loop {
            let next = match decide(current) {
                Ok(next) => next,
                Err(reject) => break Err(reject),
            };
            match word.compare_exchange(current, next, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break Ok(next),
                Err(actual) => {
                    current = actual;
                    retries += 1;
                }
            }
        };
        count_retries(&self.retries, retries);
        result
    }

    /// Takes `amount` out of `available` if it is there.
    fn debit(&self, account: AccountId, wallet: &Wallet, amount: Units) -> Result<Units, Reject> {
        self.update_i64(&wallet.available, |available| {
            if amount > available {
                return Err(Reject::InsufficientFunds {
                    account,
                    available,
                    requested: amount,
                });
            }
            Ok(available - amount)
        })
    }

    /// Moves `amount` from the wallet's available cash to its held cash,
    /// raising the hold before the debit (see the module docs).
    fn hold(&self, account: AccountId, wallet: &Wallet, amount: Units) -> Result<(), Reject> {
        self.update_i64(&wallet.held, |held| {
            // The balance fits in an i64 and holds in flight will each be
            // debited, so a hold that overflows asks for more than will be
            // available once they land: refused as if they went first.
            held.checked_add(amount)
                .ok_or_else(|| Reject::InsufficientFunds {
                    account,
                    available: wallet.available.load(Ordering::Acquire),
                    requested: amount,
                })
        })?;
        if let Err(reject) = self.debit(account, wallet, amount) {
            wallet.held.fetch_sub(amount, Ordering::AcqRel);
            return Err(reject);
        }
        Ok(())
    }

    fn credit(&self, wallet: &Wallet, amount: Units, what: &'static str) -> Result<Units, Reject> {
        credit(&self.retries, wallet, amount, what)
    }

    fn reserve_claimed(
        &self,
        reservation: ReservationId,
        account: AccountId,
        instrument: InstrumentId,
        qty: u64,
        partial: bool,
    ) -> Result<u64, Reject> {
        let slot = self.directory.slot(account)?;
        let listing = self.catalog.get(instrument)?;
        if qty == 0 {
            return Err(Reject::InvalidAmount(
                "the quantity must be greater than zero",
            ));
        }
        let stock = &self.stocks[instrument.0 as usize];
        let mut taken_cost = (0, 0);
        self.update_u64(&stock.available, |available| {
            taken_cost = take_shares(instrument, listing, available, qty, partial)?;
            Ok(available - taken_cost.0)
        })?;
        let (taken, cost) = taken_cost;
        stock.reserved.fetch_add(taken, Ordering::AcqRel);
        if let Err(reject) = self.hold(account, &self.wallets[slot], cost) {
            stock.reserved.fetch_sub(taken, Ordering::AcqRel);
            stock.available.fetch_add(taken, Ordering::AcqRel);
            return Err(reject);
        }
        // Journaled before it can be found, so no confirm or cancel of it
        // can be journaled ahead of it.
        self.log(Request::Reserve {
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
        Ok(taken)
    }
}

impl Bank for OptimisticBank {
    fn open_account(&self, account: AccountId) -> Result<(), Reject> {
        let mut ticket = None;
        self.directory.open(account, |_| {
            ticket = self
                .journal
                .as_ref()
                .map(|journal| journal.append(Request::OpenAccount { account }));
        })?;
        self.settle(ticket);
        Ok(())
    }

    fn deposit(&self, account: AccountId, amount: Units) -> Result<Units, Reject> {
        let slot = self.directory.slot(account)?;
        let wallet = &self.wallets[slot];
        positive(amount)?;
        let available = self.credit(wallet, amount, "the balance")?;
        wallet.net.fetch_add(amount, Ordering::Relaxed);
        let ticket = self
            .journal
            .as_ref()
            .map(|journal| journal.append(Request::Deposit { account, amount }));
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
        Ok(balance_of(available, wallet))
    }

    fn withdraw(&self, account: AccountId, amount: Units) -> Result<Units, Reject> {
        let wallet = &self.wallets[self.directory.slot(account)?];
        positive(amount)?;
        let available = self.debit(account, wallet, amount)?;
        wallet.net.fetch_sub(amount, Ordering::Relaxed);
        self.log(Request::Withdraw { account, amount });
        Ok(balance_of(available, wallet))
    }

    /// A transfer to the same account is accepted as a no-op once the
    /// account and amount check out, as in the Ledger.
    fn transfer(&self, from: AccountId, to: AccountId, amount: Units) -> Result<(), Reject> {
        let from_slot = self.directory.slot(from)?;
        let to_slot = self.directory.slot(to)?;
        positive(amount)?;
        let sender = &self.wallets[from_slot];
        if from_slot == to_slot {
            let available = sender.available.load(Ordering::Acquire);
            if amount > available {
                return Err(Reject::InsufficientFunds {
                    account: from,
                    available,
                    requested: amount,
                });
            }
        } else {
            self.hold(from, sender, amount)?;
            let credited = self.credit(&self.wallets[to_slot], amount, "the receiving balance");
            if credited.is_err() {
                // The hold kept `amount` in the sender's available + held,
                // so every credit accepted meanwhile left room for it.
                sender.available.fetch_add(amount, Ordering::AcqRel);
            }
            sender.held.fetch_sub(amount, Ordering::AcqRel);
            credited?;
        }
        self.log(Request::Transfer { from, to, amount });
        Ok(())
    }

    fn balance(&self, account: AccountId) -> Result<(Units, Units), Reject> {
        let wallet = &self.wallets[self.directory.slot(account)?];
        let available = wallet.available.load(Ordering::Acquire);
        Ok((
            balance_of(available, wallet),
            wallet.held.load(Ordering::Acquire),
        ))
    }

    fn list_instrument(
        &self,
        symbol: Symbol,
        supply: u64,
        price: Units,
    ) -> Result<InstrumentId, Reject> {
        let mut ticket = None;
        let id = self.catalog.list(symbol, supply, price, |id| {
            self.stocks[id.0 as usize]
                .available
                .store(supply, Ordering::Release);
            ticket = self.journal.as_ref().map(|journal| {
                journal.append(Request::ListInstrument {
                    symbol,
                    supply,
                    price,
                })
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
        self.reserve_claimed(reservation, account, instrument, qty, partial)
            .inspect_err(|_| self.reservations.release_claim(reservation))
    }

    fn confirm(&self, reservation: ReservationId) -> Result<(), Reject> {
        let held = self.reservations.close(reservation, Closure::Confirmed)?;
        let stock = &self.stocks[held.instrument.0 as usize];
        self.wallets[held.slot]
            .held
            .fetch_sub(held.cost, Ordering::AcqRel);
        stock.reserved.fetch_sub(held.qty, Ordering::AcqRel);
        stock.sold.fetch_add(held.qty, Ordering::AcqRel);
        self.log(Request::Confirm { reservation });
        Ok(())
    }

    fn cancel(&self, reservation: ReservationId) -> Result<(), Reject> {
        let held = self.reservations.close(reservation, Closure::Cancelled)?;
        let wallet = &self.wallets[held.slot];
        wallet.available.fetch_add(held.cost, Ordering::AcqRel);
        wallet.held.fetch_sub(held.cost, Ordering::AcqRel);
        let stock = &self.stocks[held.instrument.0 as usize];
        stock.reserved.fetch_sub(held.qty, Ordering::AcqRel);
        stock.available.fetch_add(held.qty, Ordering::AcqRel);
        self.log(Request::Cancel { reservation });
        Ok(())
    }

    fn instrument(&self, instrument: InstrumentId) -> Result<InstrumentView, Reject> {
        let listing = self.catalog.get(instrument)?;
        let stock = &self.stocks[instrument.0 as usize];
        Ok(InstrumentView {
            id: instrument,
            symbol: listing.symbol,
            supply: listing.supply,
            available: stock.available.load(Ordering::Acquire),
            reserved: stock.reserved.load(Ordering::Acquire),
            sold: stock.sold.load(Ordering::Acquire),
            price: listing.price,
        })
    }

    fn check_invariants(&self) -> Result<(), String> {
        let wallets = (0..self.directory.len())
            .map(|slot| {
                let wallet = &self.wallets[slot];
                let account = self.directory.id(slot);
                let held = wallet.held.load(Ordering::Acquire);
                let balance = wallet
                    .available
                    .load(Ordering::Acquire)
                    .checked_add(held)
                    .ok_or_else(|| format!("account {account}: available + held overflows"))?;
                Ok(WalletFigures {
                    account,
                    balance,
                    held,
                    net: wallet.net.load(Ordering::Acquire),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let stocks: Vec<StockFigures> = self
            .catalog
            .iter()
            .map(|(id, _)| {
                let stock = &self.stocks[id.0 as usize];
                StockFigures {
                    available: stock.available.load(Ordering::Acquire),
                    reserved: stock.reserved.load(Ordering::Acquire),
                    sold: stock.sold.load(Ordering::Acquire),
                }
            })
            .collect();
        let listings = self.catalog.iter().map(|(id, listing)| (id, *listing));
        check_books(&wallets, &stocks, listings, &self.reservations, &[])
    }

    fn retries(&self) -> u64 {
        self.retries
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .sum()
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
