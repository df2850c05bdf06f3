//! Baselines: the wallet and share-sale domain implemented the classic
//! lock-based ways, only so the benchmark can put them next to the engine.
//!
//! Both banks implement [`Bank`], which a benchmark gateway thread calls
//! synchronously, and both follow the [`Ledger`](crate::Ledger)'s rules and
//! error precedence for accounts, deposits, withdrawals, transfers, listings,
//! reservations, confirmations and cancellations, returning the same
//! [`Reject`]s. They leave out what the comparison does not need: no
//! transaction history, no reservation expiry and no idempotency (request
//! numbering). Only [`MutexBank`] keeps per-account share holdings and
//! runs order books ([`Exchange`], see `books.rs`), for the benchmark's
//! order-book scenarios; in [`OptimisticBank`] an instrument only counts
//! the shares it sold. Accounts live in a table preallocated for
//! [`BankConfig::accounts_max`] wallets; an id below that bound is found with
//! one atomic load, a larger one through a read-locked map. Instruments are
//! numbered 0, 1, 2, … in listing order, as in the Ledger.
//!
//! **Rebates** ([`BankConfig::rebates`]; off by default so rule tests can
//! assert exact balances, on in the benchmark for equal work): each deposit
//! queues a job and a worker thread credits `rate × deposit`, the seed's
//! job queue and queue worker. [`Bank::settle_rebates`] waits until every
//! queued rebate is credited, [`Bank::rebates`] counts them (see
//! `rebates.rs`).
//!
//! **[`MutexBank`] (pessimistic, like `SELECT … FOR UPDATE`).** Every wallet,
//! every instrument and every order book has its own `parking_lot::Mutex`, on its own cache
//! line, held from the check to the update. Locks are always taken in one
//! global order — an instrument or a book (no path holds both), then
//! wallets by ascending account id, then a reservation or order-index
//! shard, then the journal — so no two operations can deadlock:
//! a transfer locks its two wallets lowest id first; a reservation locks the
//! instrument, then the wallet; confirm and cancel lock the same two in the
//! same order. Reservations sit in a map split into shards, each with its own
//! mutex, so there is no global lock on any hot operation (opening accounts
//! and listing instruments take one, as set-up). Every operation is
//! linearizable and the journal order is a valid serialization.
//!
//! **[`OptimisticBank`] (version + compare-and-swap with retry).** A wallet is
//! two atomic words, `available` and `held` (balance = available + held),
//! and an instrument's free supply is one atomic word; an operation reads
//! the word, decides, and commits with `compare_exchange`, retrying on
//! conflict (every retry is counted, see [`Bank::retries`]). The compared
//! word plays the role of the version column: the decision depends only on
//! the value, so an ABA change cannot make it wrong. Every rule that can
//! reject — funds, shares — is decided by one CAS on one word, so a
//! withdrawal, transfer or reservation is never accepted against money or
//! shares that are not there. Operations that touch several words commit
//! them one after the other and undo the earlier commits if a later one is
//! refused: a transfer raises the sender's hold, debits its `available`,
//! credits the receiver, then drops the hold; a reservation takes shares,
//! then holds the cash. So conservation holds at quiescence, not at every
//! instant: in between, money or shares are in flight (a transfer's money
//! shows as held on the sender) and a reader may see, say, shares taken by
//! a buyer about to be refused for lack of funds. Raising a hold before
//! debiting means a wallet's `available + held` never understates its
//! money, so overflow checks (exact when nothing is in flight) can only err
//! towards refusing, and an undo always fits.
//!
//! **Journaling** ([`BaselineJournal`], the "equal durability" comparison):
//! with a journal, every accepted mutating operation (and every rebate
//! credit) is one record in the engine's own journal format — the
//! [`Request`](crate::Request) in a [`Stamped`](crate::Stamped), framed and
//! written by the engine's [`JournalWriter`](crate::journal::JournalWriter)
//! — in one total order, before the call returns: in the OS page cache for
//! `async` (a copy into the mapped segment), fdatasync'ed for `sync`. Records
//! are written in groups, one frame and one fdatasync per group, by a
//! leader/follower group commit modelled on PostgreSQL's (see `journal.rs`).
//! The mutex bank appends while it still holds the business locks, so the
//! file order is a valid serialization; it waits for the write after
//! releasing them, which is safe because a later record is durable only once
//! every earlier one is. The optimistic bank has no locks to hold: it
//! appends right after its last commit, so the records are complete and
//! durable before the reply, but two conflicting operations on one wallet
//! can appear in either order; replaying such a file would need per-record
//! versions this baseline does not keep. (The tests replay the mutex bank's
//! journal and get the same state back; the same replay of an optimistic
//! journal can be refused part-way.)
//!
//! Set-up for a benchmark: size the tables with [`BankConfig`], hand over a
//! journal or `None` to the constructor, and open funded accounts with
//! [`Bank::open_funded`]; then share the bank (`&bank` or an `Arc`) with the
//! gateway threads.
//!
//! ```
//! use ringledger::baseline::{Bank, BankConfig, MutexBank, OptimisticBank};
//!
//! let banks: [Box<dyn Bank>; 2] = [
//!     Box::new(MutexBank::new(BankConfig::with_accounts(1_000), None)),
//!     Box::new(OptimisticBank::new(BankConfig::with_accounts(1_000), None)),
//! ];
//! for bank in &banks {
//!     bank.open_funded(0..1_000, 10_000).unwrap();
//!     std::thread::scope(|scope| {
//!         for t in 0..4 {
//!             let bank = &**bank;
//!             scope.spawn(move || bank.transfer(t, t + 1, 2_500).unwrap());
//!         }
//!     });
//!     bank.check_invariants().unwrap();
//! }
//! ```

mod books;
mod directory;
mod journal;
mod mutex;
mod optimistic;
mod rebates;
mod reservations;

use std::ops::Range;

pub use self::books::{Exchange, NewOrder, TradeEntry, TRADE_HISTORY_MAX};
pub use self::journal::BaselineJournal;
pub use self::mutex::MutexBank;
pub use self::optimistic::OptimisticBank;
pub use self::rebates::{RebateCounts, REBATE_BACKLOG_MAX};
use crate::money::Units;
use crate::outcome::{InstrumentView, Reject};
use crate::rebate::RateRebate;
use crate::request::{AccountId, InstrumentId, ReservationId, Symbol};

/// The operations a benchmark gateway thread calls on a baseline, each
/// answering before it returns (and, with a journal, only once its record is
/// written as the journal's durability asks).
pub trait Bank: Send + Sync {
    fn open_account(&self, account: AccountId) -> Result<(), Reject>;
    /// The balance after the deposit.
    fn deposit(&self, account: AccountId, amount: Units) -> Result<Units, Reject>;
    /// The balance after the withdrawal.
    fn withdraw(&self, account: AccountId, amount: Units) -> Result<Units, Reject>;
    fn transfer(&self, from: AccountId, to: AccountId, amount: Units) -> Result<(), Reject>;
    /// `(balance, held)`; available is their difference.
    fn balance(&self, account: AccountId) -> Result<(Units, Units), Reject>;
    fn list_instrument(
        &self,
        symbol: Symbol,
        supply: u64,
        price: Units,
    ) -> Result<InstrumentId, Reject>;
    /// Shares actually reserved (fewer than `qty` only with `partial`).
    fn reserve(
        &self,
        reservation: ReservationId,
        account: AccountId,
        instrument: InstrumentId,
        qty: u64,
        partial: bool,
    ) -> Result<u64, Reject>;
    fn confirm(&self, reservation: ReservationId) -> Result<(), Reject>;
    fn cancel(&self, reservation: ReservationId) -> Result<(), Reject>;
    fn instrument(&self, instrument: InstrumentId) -> Result<InstrumentView, Reject>;
    /// Checks, at the end of a run (quiescence), that money is conserved
    /// (Σ balances + Σ sold × price == deposited − withdrawn), that shares
    /// are (available + reserved + sold == supply, reserved == Σ open
    /// reservations), that nothing is negative and that each wallet's hold
    /// equals the cost of its open reservations.
    fn check_invariants(&self) -> Result<(), String>;
    /// Compare-and-swap retries so far (always 0 for a lock-based bank).
    fn retries(&self) -> u64 {
        0
    }
    /// Rebates queued by deposits and credited so far (both 0 when the
    /// bank pays none).
    fn rebates(&self) -> RebateCounts;
    /// Parks until every rebate queued before the call has been credited.
    fn settle_rebates(&self);
    /// The bank's order books, if it has any (only [`MutexBank`] does: the
    /// benchmark's order-book scenarios run on it and on the engine).
    fn as_exchange(&self) -> Option<&dyn Exchange> {
        None
    }

    /// Set-up for a benchmark: opens `accounts` and deposits `balance` in
    /// each (nothing when `balance` is 0), through the ordinary operations.
    fn open_funded(&self, accounts: Range<AccountId>, balance: Units) -> Result<(), Reject> {
        for account in accounts {
            self.open_account(account)?;
            if balance != 0 {
                self.deposit(account, balance)?;
            }
        }
        Ok(())
    }
}

/// Sizing of a baseline bank; everything is allocated at construction.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BankConfig {
    /// Wallets the table holds; opening one more is refused (`overflow`).
    /// Ids below this bound are found without any lock. Each wallet takes
    /// one cache-line-padded slot (128 bytes on x86-64).
    pub accounts_max: usize,
    /// Instruments that can be listed; one more is refused (`overflow`).
    pub instruments_max: usize,
    /// Independent locks over the reservation map (rounded up to a power of
    /// two); more shards, fewer collisions between unrelated reservations.
    pub reservation_shards: usize,
    /// Pay each deposit a rebate at this rate, through a job queue and a
    /// worker thread (None: no rebates).
    pub rebates: Option<RateRebate>,
}

impl Default for BankConfig {
    fn default() -> Self {
        BankConfig {
            accounts_max: 65_536,
            instruments_max: 1_024,
            reservation_shards: 64,
            rebates: None,
        }
    }
}

impl BankConfig {
    /// A configuration for `accounts_max` wallets, other limits default.
    pub fn with_accounts(accounts_max: usize) -> BankConfig {
        BankConfig {
            accounts_max,
            ..BankConfig::default()
        }
    }
}

pub(crate) fn positive(amount: Units) -> Result<(), Reject> {
    if amount <= 0 {
        return Err(Reject::InvalidAmount(
            "the amount must be greater than zero",
        ));
    }
    Ok(())
}

/// What a listing fixes for good; the mutable counts live in each bank.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Listing {
    pub(crate) symbol: Symbol,
    pub(crate) supply: u64,
    pub(crate) price: Units,
}

/// How many shares a reservation takes of `available`, and their cost, in
/// the Ledger's order of checks (shares, then the cost's overflow).
pub(crate) fn take_shares(
    instrument: InstrumentId,
    listing: &Listing,
    available: u64,
    qty: u64,
    partial: bool,
) -> Result<(u64, Units), Reject> {
    let taken = if available >= qty {
        qty
    } else if partial && available > 0 {
        available
    } else {
        return Err(Reject::InsufficientShares {
            instrument,
            available,
            requested: qty,
        });
    };
    let cost = i64::try_from(taken)
        .ok()
        .and_then(|q| q.checked_mul(listing.price))
        .ok_or(Reject::Overflow("the reservation's cost"))?;
    Ok((taken, cost))
}

/// One wallet's figures as the invariant check sees them.
struct WalletFigures {
    account: AccountId,
    balance: Units,
    held: Units,
    /// Deposits minus withdrawals into this wallet, wrapping (see [`check_books`]).
    net: i64,
}

/// One instrument's counts as the invariant check sees them.
struct StockFigures {
    available: u64,
    reserved: u64,
    sold: u64,
}

/// The invariant check both banks share, over figures read at quiescence;
/// `wallets` and `order_held` (the cash resting buys hold, empty for a bank
/// without books) are indexed by slot and `stocks` by instrument id. Sale proceeds
/// are `sold × price` (prices never change). Money is compared modulo 2^64
/// because a wallet's running deposits − withdrawals is kept in a wrapping
/// `i64`: it can exceed `i64::MAX` where the balance cannot.
fn check_books(
    wallets: &[WalletFigures],
    stocks: &[StockFigures],
    listings: impl Iterator<Item = (InstrumentId, Listing)>,
    reservations: &reservations::Reservations,
    order_held: &[i128],
) -> Result<(), String> {
    let mut held = vec![0i128; wallets.len()];
    for (held, orders) in held.iter_mut().zip(order_held) {
        *held += orders;
    }
    let mut reserved = vec![0u128; stocks.len()];
    reservations.for_each_open(|r| {
        held[r.slot] += i128::from(r.cost);
        reserved[r.instrument.0 as usize] += u128::from(r.qty);
    });
    let mut cash = 0i128;
    let mut net = 0i64;
    for (w, held) in wallets.iter().zip(&held) {
        if w.balance < 0 || w.held < 0 || w.held > w.balance {
            return Err(format!(
                "account {}: balance {} held {} breaks 0 <= held <= balance",
                w.account, w.balance, w.held
            ));
        }
        if i128::from(w.held) != *held {
            return Err(format!(
                "account {}: held {} but open reservations and resting buys hold {held}",
                w.account, w.held
            ));
        }
        cash += i128::from(w.balance);
        net = net.wrapping_add(w.net);
    }
    let mut proceeds = 0i128;
    for ((id, listing), stock) in listings.zip(stocks) {
        let total =
            u128::from(stock.available) + u128::from(stock.reserved) + u128::from(stock.sold);
        if total != u128::from(listing.supply) {
            return Err(format!(
                "instrument {}: available {} + reserved {} + sold {} != supply {}",
                listing.symbol, stock.available, stock.reserved, stock.sold, listing.supply
            ));
        }
        if u128::from(stock.reserved) != reserved[id.0 as usize] {
            return Err(format!(
                "instrument {}: reserved {} but open reservations take {}",
                listing.symbol, stock.reserved, reserved[id.0 as usize]
            ));
        }
        proceeds += i128::from(stock.sold) * i128::from(listing.price);
    }
    if (cash + proceeds) as i64 != net {
        return Err(format!(
            "money is not conserved: balances {cash} + sale proceeds {proceeds} != deposited − withdrawn {net} (mod 2^64)"
        ));
    }
    Ok(())
}
