//! What each gateway asks. The wallet and sale scenarios are a pure function
//! of (scenario, gateway, index): every engine sees exactly the same
//! operations in the same per-gateway order, and a run can be repeated. No
//! randomness crate: a splitmix64 hash of the position is uniform enough for
//! picking accounts and amounts, and costs a few nanoseconds, far below what
//! is being measured.
//!
//! The order-book scenarios cannot be pure: a move or cancel must name an
//! order that rests, and which ones still rest depends on what the IOCs
//! took. Each gateway runs a [`BookFlow`] over its own orders (seeded per
//! gateway, so one gateway alone is repeatable), told by the answers which
//! of its orders left the book. With several gateways on one book the
//! interleaving decides the fills, so the exact sequence varies from run to
//! run, for every engine alike. The criterion bench `benches/orderbook.rs`
//! drives the Ledger with the same generator.

use std::fmt;
use std::str::FromStr;

use rustc_hash::FxHashMap;

use crate::book::{OrderId, Side, Stp, Tif};
use crate::money::Units;
use crate::outcome::{Outcome, Reject, Reply};
use crate::request::{AccountId, InstrumentId, Request, ReservationId, Symbol};

/// Which workload to run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Scenario {
    /// Deposits spread uniformly over `--accounts` wallets.
    Deposit,
    /// Deposits, withdrawals, transfers and balance reads (40/20/20/20).
    Mixed,
    /// Every gateway deposits to and withdraws from ONE wallet: the
    /// contention case, where a lock per wallet serialises everything.
    HotWallet,
    /// Buyers race for a fixed supply of one instrument: reserve, then
    /// confirm (80%) or cancel (20%) that reservation.
    ShareSale,
    /// exchange-core's workload on one book kept at about 1,000 resting
    /// orders over about 750 price levels: 9% GTC places, 3% IOC places,
    /// 6% cancels, 82% moves (amends of price).
    Orderbook,
    /// The same mix over 1,000 books whose activity is Pareto-weighted (a
    /// few hot instruments, a long cold tail), traders spread over every
    /// account.
    OrderbookMulti,
}

impl Scenario {
    pub const ALL: [Scenario; 6] = [
        Scenario::Deposit,
        Scenario::Mixed,
        Scenario::HotWallet,
        Scenario::ShareSale,
        Scenario::Orderbook,
        Scenario::OrderbookMulti,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Deposit => "deposit",
            Scenario::Mixed => "mixed",
            Scenario::HotWallet => "hot-wallet",
            Scenario::ShareSale => "share-sale",
            Scenario::Orderbook => "orderbook",
            Scenario::OrderbookMulti => "orderbook-multi",
        }
    }

    /// Books the scenario trades on (0: it trades on none).
    pub fn books(self) -> u32 {
        match self {
            Scenario::Orderbook => 1,
            Scenario::OrderbookMulti => MULTI_BOOKS,
            _ => 0,
        }
    }

    /// Whether the scenario trades on order books (an engine must
    /// implement them to run it).
    pub fn is_book(self) -> bool {
        self.books() > 0
    }
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Scenario {
    type Err = String;

    fn from_str(text: &str) -> Result<Scenario, String> {
        Scenario::ALL
            .into_iter()
            .find(|s| s.as_str() == text)
            .ok_or_else(|| {
                format!(
                    "unknown scenario {text:?}: expected deposit, mixed, hot-wallet, \
                     share-sale, orderbook or orderbook-multi"
                )
            })
    }
}

/// One operation of a workload, independent of the engine that runs it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Op {
    Deposit {
        account: AccountId,
        amount: Units,
    },
    Withdraw {
        account: AccountId,
        amount: Units,
    },
    Transfer {
        from: AccountId,
        to: AccountId,
        amount: Units,
    },
    Balance {
        account: AccountId,
    },
    Reserve {
        reservation: ReservationId,
        account: AccountId,
        qty: u64,
    },
    /// `qty` is not sent: it is what the reservation took, so the gateway
    /// can count the shares it saw sold and the run can check them.
    Confirm {
        reservation: ReservationId,
        qty: u64,
    },
    Cancel {
        reservation: ReservationId,
    },
    /// A limit order (GTC or IOC) on book `book` (instrument `book`: the
    /// books are listed first, in order).
    Place {
        order: OrderId,
        account: AccountId,
        book: u32,
        side: Side,
        tif: Tif,
        qty: u64,
        price: Units,
    },
    /// A move: a new price for a resting order.
    Move {
        order: OrderId,
        price: Units,
    },
    CancelOrder {
        order: OrderId,
    },
}

impl Op {
    /// The engine's request for this op; `sale` is the share-sale
    /// instrument.
    pub fn request(self, sale: InstrumentId) -> Request {
        match self {
            Op::Deposit { account, amount } => Request::Deposit { account, amount },
            Op::Withdraw { account, amount } => Request::Withdraw { account, amount },
            Op::Transfer { from, to, amount } => Request::Transfer { from, to, amount },
            Op::Balance { account } => Request::Balance { account },
            Op::Reserve {
                reservation,
                account,
                qty,
            } => Request::Reserve {
                reservation,
                account,
                instrument: sale,
                qty,
                ttl_ms: 0,
                partial: false,
            },
            Op::Confirm { reservation, .. } => Request::Confirm { reservation },
            Op::Cancel { reservation } => Request::Cancel { reservation },
            Op::Place {
                order,
                account,
                book,
                side,
                tif,
                qty,
                price,
            } => Request::Place {
                order,
                account,
                instrument: InstrumentId(book),
                side,
                market: false,
                tif,
                post_only: false,
                stp: Stp::CancelResting,
                qty,
                price,
            },
            Op::Move { order, price } => Request::Amend {
                order,
                qty: None,
                price: Some(price),
            },
            Op::CancelOrder { order } => Request::CancelOrder { order },
        }
    }

    /// Whether the order of [`Op::resting_order`] rests after `outcome`: a
    /// move refused for any reason but an unknown order leaves it where it
    /// was.
    pub fn rests_after(&self, outcome: &Outcome) -> bool {
        match outcome {
            Ok(Reply::Placed { resting, .. }) => *resting > 0,
            Ok(_) | Err(Reject::UnknownOrder(_)) => false,
            Err(_) => matches!(self, Op::Move { .. }),
        }
    }

    /// The order a GTC place or a move leaves resting, if it succeeds:
    /// the one whose answer its [`BookFlow`] must hear.
    pub fn resting_order(&self) -> Option<OrderId> {
        match *self {
            Op::Place {
                order,
                tif: Tif::Gtc,
                ..
            }
            | Op::Move { order, .. } => Some(order),
            _ => None,
        }
    }
}

/// Cash every wallet starts with: large enough that withdrawals and
/// purchases rarely fail for money, small enough that no amount of deposits
/// in a run can overflow an `i64` of minor units.
pub const OPENING_BALANCE: Units = 1_000_000_000_000;
/// The share-sale instrument's symbol and price (minor units per share).
pub const SALE_SYMBOL: &str = "BENCH";
pub const SALE_PRICE: Units = 100;
/// Largest amount of one deposit, withdrawal or transfer, in minor units.
const AMOUNT_MAX: u64 = 10_000;
/// Largest quantity of one reservation.
const QTY_MAX: u64 = 4;
/// Reservation ids are `gateway << RESERVATION_GATEWAY_SHIFT | n`, unique
/// across gateways without any coordination.
const RESERVATION_GATEWAY_SHIFT: u32 = 40;

/// The order-book scenarios' prices: every book's middle, in minor units
/// (1,000.00 at scale 2; one tick is one minor unit).
pub const BOOK_MID: Units = 100_000;
/// GTC places and moves rest 1 to this many ticks from the middle on their
/// own side, so they never cross. 1,000 orders spread uniformly over these
/// 1,650 prices occupy about 750 of them (1,650 × (1 − e^(−1000/1650))),
/// exchange-core's level count.
pub const BOOK_HALF_SPREAD_TICKS: u64 = 825;
/// An IOC reaches up to this many ticks past the middle into the other side.
const IOC_REACH_TICKS: u64 = 20;
/// Largest qty of one order.
const ORDER_QTY_MAX: u64 = 10;
/// Resting orders `orderbook` keeps on its book.
pub const BOOK_RESTING_TARGET: usize = 1_000;
/// Books of `orderbook-multi`.
pub const MULTI_BOOKS: u32 = 1_000;
/// Resting orders `orderbook-multi` keeps on each of its books (25,000 in
/// all: cold books are thin).
pub const MULTI_RESTING_TARGET: usize = 25;
/// The Pareto shape of the books' activity: 1.16 is the 80/20 rule (a
/// fifth of the books take four fifths of the orders).
const PARETO_SHAPE: f64 = 1.16;
/// Shares each trader buys in the set-up sale of the one book it sells on.
pub const TRADER_SHARES: u64 = 1 << 20;
/// Order ids are `(gateway + 1) << ORDER_GATEWAY_SHIFT | n`.
const ORDER_GATEWAY_SHIFT: u32 = 40;

/// A scenario sized for one run.
#[derive(Clone, Copy, Debug)]
pub struct Workload {
    pub scenario: Scenario,
    /// Wallets opened and funded before the run (ids `0..accounts`).
    pub accounts: u64,
    /// Shares listed for the share sale: half the reservations' expected
    /// demand, so the supply sells out about halfway through and the second
    /// half races for what cancellations give back.
    pub supply: u64,
}

/// Every book's symbol: `BOOK0`, `BOOK1`, …
pub fn book_symbol(book: u32) -> Symbol {
    Symbol::new(&format!("BOOK{book}")).expect("a short printable symbol")
}

impl Workload {
    pub fn new(scenario: Scenario, accounts: u64, ops: u64) -> Workload {
        let accounts = match scenario {
            Scenario::HotWallet => 1,
            _ => accounts,
        };
        Workload {
            scenario,
            accounts,
            supply: (ops / 2).max(1),
        }
    }

    /// Traders that sell on `book`: accounts `book`, `book + books`,
    /// `book + 2 × books`, … (each holds shares of that book only; any
    /// account buys on any book).
    pub fn sellers(&self, book: u32) -> u64 {
        let books = u64::from(self.scenario.books());
        self.accounts / books + u64::from(u64::from(book) < self.accounts % books)
    }

    /// The order-book scenarios' set-up after the accounts are opened and
    /// funded (not measured; nothing for the other scenarios): list every book at the sale price with one
    /// [`TRADER_SHARES`] lot per seller, then each account reserves and
    /// confirms its lot (reservation id = account id). Instrument ids are
    /// given in listing order, so book `k` is `InstrumentId(k)` on a fresh
    /// engine.
    pub fn book_setup(&self) -> impl Iterator<Item = Request> + '_ {
        let books = self.scenario.books();
        let listings = (0..books).map(|book| Request::ListInstrument {
            symbol: book_symbol(book),
            supply: self.sellers(book) * TRADER_SHARES,
            price: SALE_PRICE,
        });
        // No books, no sale: nothing to set up.
        let traders = if books == 0 { 0 } else { self.accounts };
        let sales = (0..traders).flat_map(move |account| {
            [
                Request::Reserve {
                    reservation: account,
                    account,
                    instrument: InstrumentId((account % u64::from(books)) as u32),
                    qty: TRADER_SHARES,
                    ttl_ms: 0,
                    partial: false,
                },
                Request::Confirm {
                    reservation: account,
                },
            ]
        });
        listings.chain(sales)
    }

    /// The `index`-th operation of gateway `gateway` (wallet and sale
    /// scenarios; the order-book ones come from a [`BookFlow`]).
    pub fn op(&self, gateway: usize, index: u64) -> Op {
        let h = mix((gateway as u64) << 48 ^ index);
        let amount = 1 + (h >> 8) as Units % AMOUNT_MAX as Units;
        let account = (h >> 24) % self.accounts;
        match self.scenario {
            Scenario::Deposit => Op::Deposit { account, amount },
            Scenario::HotWallet if h.is_multiple_of(2) => Op::Deposit { account: 0, amount },
            Scenario::HotWallet => Op::Withdraw { account: 0, amount },
            Scenario::Mixed => match h % 10 {
                0..=3 => Op::Deposit { account, amount },
                4 | 5 => Op::Withdraw { account, amount },
                6 | 7 if self.accounts > 1 => {
                    let step = 1 + (h >> 40) % (self.accounts - 1);
                    Op::Transfer {
                        from: account,
                        to: (account + step) % self.accounts,
                        amount,
                    }
                }
                _ => Op::Balance { account },
            },
            Scenario::ShareSale => {
                // Even positions reserve, the next one settles that reservation.
                let reservation = ((gateway as u64) << RESERVATION_GATEWAY_SHIFT) | (index / 2);
                let r = mix(reservation);
                let qty = 1 + r % QTY_MAX;
                if index.is_multiple_of(2) {
                    Op::Reserve {
                        reservation,
                        account: (r >> 16) % self.accounts,
                        qty,
                    }
                } else if (r >> 8).is_multiple_of(5) {
                    Op::Cancel { reservation }
                } else {
                    Op::Confirm { reservation, qty }
                }
            }
            Scenario::Orderbook | Scenario::OrderbookMulti => {
                unreachable!("the order-book scenarios come from a BookFlow")
            }
        }
    }
}

/// Where one gateway's operations come from.
pub enum Flow {
    /// A pure function of the position (wallet and sale scenarios).
    Scripted { workload: Workload, gateway: usize },
    /// The order flow of one gateway (order-book scenarios).
    Book(Box<BookFlow>),
}

impl Flow {
    /// Gateway `gateway`'s flow of `gateways` (a book flow not yet pre-filled).
    pub fn new(workload: &Workload, gateway: usize, gateways: usize) -> Flow {
        if workload.scenario.is_book() {
            Flow::Book(Box::new(BookFlow::new(workload, gateway, gateways)))
        } else {
            Flow::Scripted {
                workload: *workload,
                gateway,
            }
        }
    }

    /// The places that bring a book flow's books to its resting target
    /// (set-up; none for a scripted flow).
    pub fn prefill(&mut self) -> Vec<Op> {
        match self {
            Flow::Scripted { .. } => Vec::new(),
            Flow::Book(flow) => flow.prefill(),
        }
    }

    /// The `index`-th operation.
    pub fn next(&mut self, index: u64) -> Op {
        match self {
            Flow::Scripted { workload, gateway } => workload.op(*gateway, index),
            Flow::Book(flow) => flow.next_op(),
        }
    }

    /// Tells the flow what became of `op`: `rests` is whether the order of
    /// [`Op::resting_order`] rests after it.
    pub fn answered(&mut self, op: &Op, rests: bool) {
        if let Flow::Book(flow) = self {
            flow.answered(op, rests);
        }
    }
}

/// One gateway's order flow in exchange-core's mix (see the module docs):
/// 9% GTC places and 6% cancels, turned into each other to keep each book
/// between half its target and its target; 3% IOCs reaching up to
/// 20 ticks into the other side; 82% moves to a new passive
/// price. GTC places and moves never cross, so only the IOCs trade.
/// Allocation-free once its order table has grown to its books' size.
pub struct BookFlow {
    /// xorshift64 state, seeded from the gateway.
    x: u64,
    gateway: u64,
    next_order: u64,
    accounts: u64,
    books: u32,
    /// Resting orders per book over all gateways, and the gateways.
    per_book: usize,
    gateways: usize,
    /// Running sums of the books' Pareto weights (empty for one book).
    activity: Vec<f64>,
    /// Per book, the orders this gateway believes rest, with their side.
    live: Vec<Vec<(OrderId, Side)>>,
    /// Where each of them is: (book, position in `live[book]`).
    at: FxHashMap<OrderId, (u32, u32)>,
}

impl BookFlow {
    /// Gateway `gateway` of `gateways`: keeps its share of each book's
    /// resting target.
    pub fn new(workload: &Workload, gateway: usize, gateways: usize) -> BookFlow {
        let books = workload.scenario.books();
        assert!(books > 0, "{} has no books", workload.scenario);
        let per_book = match workload.scenario {
            Scenario::Orderbook => BOOK_RESTING_TARGET,
            _ => MULTI_RESTING_TARGET,
        };
        let activity = if books > 1 {
            pareto_running_sums(books)
        } else {
            Vec::new()
        };
        BookFlow {
            x: mix(0x0b00_c0de ^ gateway as u64) | 1,
            gateway: gateway as u64,
            next_order: 0,
            accounts: workload.accounts,
            books,
            per_book,
            gateways: gateways.max(1),
            activity,
            live: vec![Vec::new(); books as usize],
            at: FxHashMap::default(),
        }
    }

    /// The orders this gateway keeps resting on `book`: its share of the
    /// book's target, the remainder spread so the gateways' shares add up
    /// to the target on every book.
    fn target(&self, book: u32) -> usize {
        let (g, n) = (self.gateway as usize, self.gateways);
        self.per_book / n + usize::from((book as usize + g) % n < self.per_book % n)
    }

    /// GTC places that bring each book to this gateway's target (set-up).
    pub fn prefill(&mut self) -> Vec<Op> {
        let mut ops = Vec::new();
        for book in 0..self.books {
            while self.live[book as usize].len() < self.target(book) {
                ops.push(self.gtc(book));
            }
        }
        ops
    }

    /// Orders this gateway believes rest, over all books.
    pub fn resting(&self) -> usize {
        self.at.len()
    }

    fn rand(&mut self, n: u64) -> u64 {
        self.x ^= self.x << 13;
        self.x ^= self.x >> 7;
        self.x ^= self.x << 17;
        self.x % n
    }

    /// A book, by its Pareto weight (exact inverse of the running sums).
    fn book(&mut self) -> u32 {
        let Some(&total) = self.activity.last() else {
            return 0;
        };
        let u = (self.rand(1 << 53) as f64 / (1u64 << 53) as f64) * total;
        let k = self.activity.partition_point(|&sum| sum <= u);
        k.min(self.activity.len() - 1) as u32
    }

    fn side(&mut self) -> Side {
        if self.rand(2) == 0 {
            Side::Buy
        } else {
            Side::Sell
        }
    }

    /// A price on `side` that does not cross the middle.
    fn passive_price(&mut self, side: Side) -> Units {
        let ticks = 1 + self.rand(BOOK_HALF_SPREAD_TICKS) as Units;
        match side {
            Side::Buy => BOOK_MID - ticks,
            Side::Sell => BOOK_MID + ticks,
        }
    }

    fn place(&mut self, book: u32, side: Side, price: Units, tif: Tif) -> Op {
        self.next_order += 1;
        let order = (self.gateway + 1) << ORDER_GATEWAY_SHIFT | self.next_order;
        // Anyone buys; a seller is one of the book's share holders.
        let account = match side {
            Side::Buy => self.rand(self.accounts),
            Side::Sell => {
                let books = u64::from(self.books);
                let sellers =
                    self.accounts / books + u64::from(u64::from(book) < self.accounts % books);
                u64::from(book) + books * self.rand(sellers)
            }
        };
        Op::Place {
            order,
            account,
            book,
            side,
            tif,
            qty: 1 + self.rand(ORDER_QTY_MAX),
            price,
        }
    }

    /// A GTC place on `book`, counted as resting from now on (it never
    /// crosses; an answer saying otherwise makes the flow forget it).
    pub fn gtc(&mut self, book: u32) -> Op {
        let side = self.side();
        let price = self.passive_price(side);
        let op = self.place(book, side, price, Tif::Gtc);
        if let Op::Place { order, .. } = op {
            let live = &mut self.live[book as usize];
            self.at.insert(order, (book, live.len() as u32));
            live.push((order, side));
        }
        op
    }

    fn ioc(&mut self, book: u32) -> Op {
        let side = self.side();
        let reach = self.rand(IOC_REACH_TICKS) as Units;
        let price = match side {
            Side::Buy => BOOK_MID + reach,
            Side::Sell => BOOK_MID - reach,
        };
        self.place(book, side, price, Tif::Ioc)
    }

    fn pick(&mut self, book: u32) -> Option<(OrderId, Side)> {
        let live = &self.live[book as usize];
        if live.is_empty() {
            return None;
        }
        let i = self.rand(live.len() as u64) as usize;
        Some(self.live[book as usize][i])
    }

    /// A cancel of one of this gateway's orders on `book` (a GTC place
    /// when it has none there).
    pub fn cancel(&mut self, book: u32) -> Op {
        match self.pick(book) {
            Some((order, _)) => self.cancel_of(order),
            None => self.gtc(book),
        }
    }

    /// The cancel of `order`, forgotten from now on.
    pub fn cancel_of(&mut self, order: OrderId) -> Op {
        self.forget(order);
        Op::CancelOrder { order }
    }

    /// A move of one of this gateway's orders on `book` to a new price on
    /// its own side of the middle (a GTC place when it has none there).
    pub fn move_one(&mut self, book: u32) -> Op {
        match self.pick(book) {
            Some((order, side)) => Op::Move {
                order,
                price: self.passive_price(side),
            },
            None => self.gtc(book),
        }
    }

    /// The next operation of the mix.
    pub fn next_op(&mut self) -> Op {
        let book = self.book();
        let (live, target) = (self.live[book as usize].len(), self.target(book));
        match self.rand(100) {
            // Keep the book near its size: a place becomes a cancel when
            // the book is thick, a cancel a place when it is thin.
            0..=8 if live > target => self.cancel(book),
            0..=8 => self.gtc(book),
            9..=11 => self.ioc(book),
            12..=17 if live < target / 2 => self.gtc(book),
            12..=17 => self.cancel(book),
            _ => self.move_one(book),
        }
    }

    /// Hears what became of `op`: `rests` is whether the order of
    /// [`Op::resting_order`] rests after it.
    pub fn answered(&mut self, op: &Op, rests: bool) {
        if let (Some(order), false) = (op.resting_order(), rests) {
            self.forget(order);
        }
    }

    /// Drops `order` from the orders believed resting (an IOC filled it,
    /// or it was cancelled); nothing if it is not there.
    pub fn forget(&mut self, order: OrderId) {
        let Some((book, position)) = self.at.remove(&order) else {
            return;
        };
        let live = &mut self.live[book as usize];
        live.swap_remove(position as usize);
        if let Some(&(moved, _)) = live.get(position as usize) {
            self.at.insert(moved, (book, position));
        }
    }
}

/// Running sums of `books` activity weights drawn from a Pareto
/// distribution (scale 1, shape [`PARETO_SHAPE`]) by its exact inverse
/// CDF, `(1 − u)^(−1/α)`, over a fixed seed: the same weights every run.
fn pareto_running_sums(books: u32) -> Vec<f64> {
    let mut sum = 0.0;
    (0..books)
        .map(|book| {
            let u = (mix(0xa11c_e000 + u64::from(book)) >> 11) as f64 / (1u64 << 53) as f64;
            sum += (1.0 - u).powf(-1.0 / PARETO_SHAPE);
            sum
        })
        .collect()
}

/// How many of `ops` operations gateway `gateway` of `gateways` runs.
pub fn share(ops: u64, gateways: usize, gateway: usize) -> u64 {
    let gateways = gateways as u64;
    ops / gateways + u64::from((gateway as u64) < ops % gateways)
}

/// splitmix64's finaliser: a bijective, well-mixed hash of a position.
fn mix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scenario_names_round_trip_and_unknown_ones_are_refused() {
        for s in Scenario::ALL {
            assert_eq!(s.as_str().parse::<Scenario>().unwrap(), s);
        }
        let err = "deposits".parse::<Scenario>().unwrap_err();
        assert!(err.contains("unknown scenario"), "{err}");
    }

    #[test]
    fn shares_of_the_ops_add_up_to_the_ops() {
        for gateways in 1..9 {
            let total: u64 = (0..gateways).map(|g| share(1_001, gateways, g)).sum();
            assert_eq!(total, 1_001);
        }
    }

    #[test]
    fn the_same_position_always_gives_the_same_op() {
        let w = Workload::new(Scenario::Mixed, 100, 1_000);
        assert_eq!(w.op(3, 77), w.op(3, 77));
    }

    #[test]
    fn ops_stay_within_the_funded_accounts_and_amounts_are_positive() {
        for scenario in Scenario::ALL.into_iter().filter(|s| !s.is_book()) {
            let w = Workload::new(scenario, 7, 1_000);
            for g in 0..3 {
                for i in 0..500 {
                    match w.op(g, i) {
                        Op::Deposit { account, amount } | Op::Withdraw { account, amount } => {
                            assert!(account < w.accounts && amount > 0)
                        }
                        Op::Transfer { from, to, amount } => {
                            assert!(from < 7 && to < 7 && from != to && amount > 0)
                        }
                        Op::Balance { account } => assert!(account < 7),
                        Op::Reserve { account, qty, .. } => assert!(account < 7 && qty > 0),
                        Op::Confirm { .. } | Op::Cancel { .. } => {}
                        other => panic!("{scenario} made a book op: {other:?}"),
                    }
                }
            }
        }
    }

    #[test]
    fn hot_wallet_touches_one_account_only() {
        let w = Workload::new(Scenario::HotWallet, 1_000, 1_000);
        assert_eq!(w.accounts, 1);
        for i in 0..200 {
            assert!(matches!(
                w.op(1, i),
                Op::Deposit { account: 0, .. } | Op::Withdraw { account: 0, .. }
            ));
        }
    }

    #[test]
    fn share_sale_settles_each_reservation_right_after_it_is_made() {
        let w = Workload::new(Scenario::ShareSale, 10, 1_000);
        let (mut confirms, mut cancels) = (0, 0);
        for i in (0..1_000).step_by(2) {
            let Op::Reserve {
                reservation, qty, ..
            } = w.op(2, i)
            else {
                panic!("even positions reserve")
            };
            match w.op(2, i + 1) {
                Op::Confirm {
                    reservation: r,
                    qty: q,
                } => {
                    assert_eq!((r, q), (reservation, qty));
                    confirms += 1;
                }
                Op::Cancel { reservation: r } => {
                    assert_eq!(r, reservation);
                    cancels += 1;
                }
                other => panic!("odd positions settle, got {other:?}"),
            }
        }
        // Roughly 80/20.
        assert!(
            confirms > 3 * cancels,
            "{confirms} confirms, {cancels} cancels"
        );
        assert_ne!(
            w.op(0, 0),
            w.op(1, 0),
            "gateways use distinct reservation ids"
        );
    }

    fn book_flow(scenario: Scenario, accounts: u64, gateway: usize, gateways: usize) -> BookFlow {
        BookFlow::new(&Workload::new(scenario, accounts, 0), gateway, gateways)
    }

    #[test]
    fn the_book_mix_is_exchange_core_s() {
        let mut flow = book_flow(Scenario::Orderbook, 100, 0, 1);
        flow.prefill();
        let (mut gtc, mut ioc, mut cancels, mut moves) = (0, 0, 0, 0);
        let n = 100_000;
        for _ in 0..n {
            match flow.next_op() {
                Op::Place { tif: Tif::Gtc, .. } => gtc += 1,
                Op::Place { tif: Tif::Ioc, .. } => ioc += 1,
                Op::CancelOrder { .. } => cancels += 1,
                Op::Move { .. } => moves += 1,
                other => panic!("not a book op: {other:?}"),
            }
        }
        let percent = |k: u64| k as f64 * 100.0 / n as f64;
        assert!((81.0..83.0).contains(&percent(moves)), "{moves} moves");
        assert!((2.5..3.5).contains(&percent(ioc)), "{ioc} iocs");
        // Places and cancels trade places to hold the book's size.
        assert!(
            (14.0..16.0).contains(&percent(gtc + cancels)),
            "{gtc} + {cancels}"
        );
        let resting = flow.resting();
        assert!((500..=1_001).contains(&resting), "{resting} resting");
    }

    #[test]
    fn book_orders_rest_on_their_own_side_and_sellers_hold_the_book() {
        let w = Workload::new(Scenario::OrderbookMulti, 3_500, 0);
        let mut flow = BookFlow::new(&w, 1, 2);
        for _ in 0..20_000 {
            match flow.next_op() {
                Op::Place {
                    account,
                    book,
                    side,
                    tif,
                    qty,
                    price,
                    ..
                } => {
                    assert!(account < 3_500 && book < MULTI_BOOKS && (1..=10).contains(&qty));
                    if side == Side::Sell {
                        assert_eq!(account % u64::from(MULTI_BOOKS), u64::from(book));
                    }
                    let passive = match side {
                        Side::Buy => price < BOOK_MID,
                        Side::Sell => price > BOOK_MID,
                    };
                    assert_eq!(passive, tif == Tif::Gtc, "{side:?} {tif:?} at {price}");
                }
                Op::Move { price, .. } => assert_ne!(price, BOOK_MID),
                _ => {}
            }
        }
        assert_eq!(w.sellers(0) + w.sellers(999), 4 + 3);
    }

    #[test]
    fn the_gateways_shares_of_each_book_add_up_to_its_target() {
        for gateways in [1, 2, 3, 64, 1_024] {
            for (scenario, per_book) in [
                (Scenario::Orderbook, BOOK_RESTING_TARGET),
                (Scenario::OrderbookMulti, MULTI_RESTING_TARGET),
            ] {
                let resting: usize = (0..gateways)
                    .map(|g| {
                        let mut flow = book_flow(scenario, 2_000, g, gateways);
                        flow.prefill();
                        flow.resting()
                    })
                    .sum();
                let books = scenario.books() as usize;
                assert_eq!(resting, per_book * books, "{scenario} over {gateways}");
            }
        }
    }

    #[test]
    fn book_activity_is_pareto_weighted() {
        let mut flow = book_flow(Scenario::OrderbookMulti, 1_000, 0, 1);
        let mut hits = vec![0u64; MULTI_BOOKS as usize];
        for _ in 0..200_000 {
            hits[flow.book() as usize] += 1;
        }
        hits.sort_unstable_by(|a, b| b.cmp(a));
        let top_fifth: u64 = hits[..MULTI_BOOKS as usize / 5].iter().sum();
        // The 80/20 shape: a fifth of the books take most of the orders,
        // far more than the fifth a uniform pick would give them.
        assert!(top_fifth > 100_000, "the busiest fifth took {top_fifth}");
        assert!(hits[0] > 20 * hits[MULTI_BOOKS as usize / 2]);
    }

    #[test]
    fn a_forgotten_order_is_never_moved_or_cancelled_again() {
        let mut flow = book_flow(Scenario::Orderbook, 10, 0, 1);
        let placed: Vec<OrderId> = flow
            .prefill()
            .iter()
            .filter_map(Op::resting_order)
            .collect();
        // An IOC filled every other one.
        for order in placed.iter().step_by(2) {
            flow.answered(
                &Op::Move {
                    order: *order,
                    price: 1,
                },
                false,
            );
        }
        assert_eq!(flow.resting(), placed.len() / 2);
        for _ in 0..5_000 {
            if let Op::Move { order, .. } | Op::CancelOrder { order } = flow.next_op() {
                let index = placed.iter().position(|&o| o == order);
                assert!(
                    index.is_none_or(|i| i % 2 == 1),
                    "order {order} was forgotten"
                );
            }
        }
    }
}
