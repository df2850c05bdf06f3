//! Scenario tests of the order book inside the Ledger, in the style of
//! Liquibook's and exchange-core's suites: one fixture, one command, then
//! the result, the ordered fills (maker, price, qty), each order's state,
//! the depth per level, and every account's available and held cash and
//! shares. Conservation (cash, shares per instrument, holds recomputed from
//! the books) is checked after every request by the fixture.

use super::*;
use crate::book::{Side, Status, Stp, Tif};
use crate::outcome::{ErrorCode, OrderEvent};

const ACME: InstrumentId = InstrumentId(0);
const BETA: InstrumentId = InstrumentId(1);
/// Every account starts with this much cash (after buying its shares).
const CASH: Units = 100_000;
/// And this many shares of each instrument.
const SHARES: u64 = 100;

struct Market {
    ledger: Ledger,
    seq: u64,
}

/// A place with the defaults of a gtc limit order.
#[derive(Clone, Copy)]
struct Order {
    order: u64,
    account: AccountId,
    instrument: InstrumentId,
    side: Side,
    qty: u64,
    price: Units,
    market: bool,
    tif: Tif,
    post_only: bool,
    stp: Stp,
}

fn buy(order: u64, account: AccountId, qty: u64, price: Units) -> Order {
    Order {
        order,
        account,
        instrument: ACME,
        side: Side::Buy,
        qty,
        price,
        market: false,
        tif: Tif::Gtc,
        post_only: false,
        stp: Stp::CancelResting,
    }
}

fn sell(order: u64, account: AccountId, qty: u64, price: Units) -> Order {
    Order {
        side: Side::Sell,
        ..buy(order, account, qty, price)
    }
}

impl Order {
    fn tif(self, tif: Tif) -> Order {
        Order { tif, ..self }
    }
    fn market(self) -> Order {
        Order {
            market: true,
            price: 0,
            tif: if self.tif == Tif::Gtc {
                Tif::Ioc
            } else {
                self.tif
            },
            ..self
        }
    }
    fn post_only(self) -> Order {
        Order {
            post_only: true,
            ..self
        }
    }
    fn stp(self, stp: Stp) -> Order {
        Order { stp, ..self }
    }
    fn on(self, instrument: InstrumentId) -> Order {
        Order { instrument, ..self }
    }
}

/// What a place or amend answered: status, filled, resting, fills, stp.
#[derive(Debug, PartialEq, Eq)]
struct Placed {
    status: Status,
    filled: u64,
    resting: u64,
    fills: Vec<(u64, Units, u64)>,
    stp_cancelled: Vec<u64>,
}

fn placed(status: Status, filled: u64, resting: u64, fills: &[(u64, Units, u64)]) -> Placed {
    Placed {
        status,
        filled,
        resting,
        fills: fills.to_vec(),
        stp_cancelled: vec![],
    }
}

impl Market {
    /// Accounts 1..=`accounts`, each with `CASH` and `SHARES` of ACME and
    /// BETA (bought in the sale at 1 unit a share).
    fn new(accounts: u64) -> Market {
        let mut m = Market {
            ledger: Ledger::default(),
            seq: 0,
        };
        for symbol in ["ACME", "BETA"] {
            m.ok(Request::ListInstrument {
                symbol: Symbol::new(symbol).unwrap(),
                supply: 1_000_000,
                price: 1,
            });
        }
        for account in 1..=accounts {
            m.ok(Request::OpenAccount { account });
            m.ok(Request::Deposit {
                account,
                amount: CASH + 2 * SHARES as Units,
            });
            for (i, instrument) in [ACME, BETA].into_iter().enumerate() {
                let reservation = account * 10 + i as u64;
                m.ok(Request::Reserve {
                    reservation,
                    account,
                    instrument,
                    qty: SHARES,
                    ttl_ms: 0,
                    partial: false,
                });
                m.ok(Request::Confirm { reservation });
            }
        }
        m
    }

    fn send(&mut self, request: Request) -> Outcome {
        self.seq += 1;
        let stamp = Stamp {
            seq: self.seq,
            time_ms: 1_000,
            session: 0,
            req: 0,
        };
        let outcome = self.ledger.apply(&Stamped { stamp, request }).outcome;
        self.ledger.check_invariants().unwrap();
        outcome
    }

    fn ok(&mut self, request: Request) -> Reply {
        self.send(request)
            .unwrap_or_else(|e| panic!("{request:?}: {e}"))
    }

    fn code(&mut self, request: Request) -> ErrorCode {
        let digest = self.ledger.digest();
        let code = self.send(request).expect_err("should be rejected").code();
        assert_eq!(self.ledger.digest(), digest, "a rejection changed state");
        code
    }

    fn request(o: Order) -> Request {
        Request::Place {
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
        }
    }

    fn place(&mut self, o: Order) -> Placed {
        let reply = self.ok(Market::request(o));
        unpack(&self.ledger, reply)
    }

    /// The trade numbers of a place's fills.
    fn trade_numbers(&mut self, o: Order) -> Vec<u64> {
        let Reply::Placed { events, .. } = self.ok(Market::request(o)) else {
            panic!("not placed")
        };
        self.ledger
            .events(&events)
            .iter()
            .filter_map(|e| match e {
                OrderEvent::Trade { trade, .. } => Some(*trade),
                OrderEvent::StpCancelled(_) => None,
            })
            .collect()
    }

    fn place_code(&mut self, o: Order) -> ErrorCode {
        self.code(Market::request(o))
    }

    fn amend(&mut self, order: u64, qty: Option<u64>, price: Option<Units>) -> Placed {
        let reply = self.ok(Request::Amend { order, qty, price });
        unpack(&self.ledger, reply)
    }

    fn cancel(&mut self, order: u64) -> Result<u64, ErrorCode> {
        match self.send(Request::CancelOrder { order }) {
            Ok(Reply::OrderCancelled { cancelled }) => Ok(cancelled),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(e) => Err(e.code()),
        }
    }

    /// (qty resting, filled so far), or None when the order is not resting.
    fn order(&mut self, order: u64) -> Option<(u64, u64)> {
        match self.send(Request::Order { order }) {
            Ok(Reply::Order(o)) => Some((o.qty, o.filled)),
            Err(Reject::UnknownOrder(_)) => None,
            other => panic!("unexpected {other:?}"),
        }
    }

    /// (bids, asks), each best first as (price, qty, orders).
    fn depth(&mut self, instrument: InstrumentId) -> [Vec<(Units, u64, u32)>; 2] {
        match self.ok(Request::Book {
            instrument,
            depth: 1000,
        }) {
            Reply::Book(depth) => [depth.bids, depth.asks]
                .map(|side| side.iter().map(|l| (l.price, l.qty, l.orders)).collect()),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// (available, held) cash.
    fn cash(&mut self, account: AccountId) -> (Units, Units) {
        match self.ok(Request::Balance { account }) {
            Reply::Balance {
                held, available, ..
            } => (available, held),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// (available, held) shares of `instrument`.
    fn shares(&mut self, account: AccountId, instrument: InstrumentId) -> (u64, u64) {
        let symbol = self.ledger.instruments[instrument.0 as usize].symbol;
        match self.ok(Request::Holdings { account }) {
            Reply::Holdings(all) => all
                .iter()
                .find(|(s, _, _)| *s == symbol)
                .map_or((0, 0), |&(_, owned, held)| (owned - held, held)),
            other => panic!("unexpected {other:?}"),
        }
    }
}

fn unpack(ledger: &Ledger, reply: Reply) -> Placed {
    let Reply::Placed {
        status,
        filled,
        resting,
        events,
    } = reply
    else {
        panic!("unexpected {reply:?}")
    };
    let mut fills = vec![];
    let mut stp_cancelled = vec![];
    for e in ledger.events(&events) {
        match *e {
            OrderEvent::Trade {
                maker, price, qty, ..
            } => fills.push((maker, price, qty)),
            OrderEvent::StpCancelled(id) => stp_cancelled.push(id),
        }
    }
    Placed {
        status,
        filled,
        resting,
        fills,
        stp_cancelled,
    }
}

// ---- matching ----

#[test]
fn an_order_that_does_not_match_rests_and_holds() {
    let mut m = Market::new(2);
    assert_eq!(
        m.place(sell(1, 1, 10, 101)),
        placed(Status::Resting, 0, 10, &[])
    );
    assert_eq!(
        m.place(buy(2, 2, 5, 99)),
        placed(Status::Resting, 0, 5, &[])
    );
    assert_eq!(m.depth(ACME), [vec![(99, 5, 1)], vec![(101, 10, 1)]]);
    assert_eq!(m.order(1), Some((10, 0)));
    assert_eq!(m.shares(1, ACME), (SHARES - 10, 10));
    assert_eq!(m.cash(2), (CASH - 495, 495));
    assert_eq!(m.cash(1), (CASH, 0));
}

#[test]
fn a_full_match_settles_both_sides_at_the_makers_price() {
    let mut m = Market::new(2);
    m.place(sell(1, 1, 10, 100));
    assert_eq!(
        m.place(buy(2, 2, 10, 105)),
        placed(Status::Filled, 10, 0, &[(1, 100, 10)])
    );
    assert_eq!(m.depth(ACME), [vec![], vec![]]);
    assert_eq!(m.order(1), None);
    assert_eq!(m.order(2), None);
    assert_eq!(m.cash(1), (CASH + 1000, 0));
    assert_eq!(
        m.cash(2),
        (CASH - 1000, 0),
        "a buy below its limit keeps the difference"
    );
    assert_eq!(m.shares(1, ACME), (SHARES - 10, 0));
    assert_eq!(m.shares(2, ACME), (SHARES + 10, 0));
    let kinds: Vec<_> = m
        .ledger
        .accounts
        .history_newest(1)
        .map(|e| (e.kind, e.amount))
        .take(1)
        .collect();
    assert_eq!(kinds, vec![(EntryKind::Buy, 1000)]);
    let kinds: Vec<_> = m
        .ledger
        .accounts
        .history_newest(0)
        .map(|e| (e.kind, e.amount))
        .take(1)
        .collect();
    assert_eq!(kinds, vec![(EntryKind::Sell, 1000)]);
}

#[test]
fn a_partial_match_rests_the_incoming_rest_and_keeps_the_maker_at_the_front() {
    let mut m = Market::new(3);
    m.place(buy(1, 1, 10, 100));
    m.place(buy(2, 2, 10, 100));
    assert_eq!(
        m.place(sell(3, 3, 4, 100)),
        placed(Status::Filled, 4, 0, &[(1, 100, 4)])
    );
    assert_eq!(m.order(1), Some((6, 4)));
    assert_eq!(m.depth(ACME), [vec![(100, 16, 2)], vec![]]);
    assert_eq!(m.cash(1), (CASH - 1000, 600));
    assert_eq!(
        m.place(sell(4, 3, 20, 100)),
        placed(Status::Resting, 16, 4, &[(1, 100, 6), (2, 100, 10)])
    );
    assert_eq!(m.depth(ACME), [vec![], vec![(100, 4, 1)]]);
    assert_eq!(m.shares(3, ACME), (SHARES - 24, 4));
    assert_eq!(m.cash(3), (CASH + 2000, 0));
}

#[test]
fn multi_level_matches_sweep_best_first_on_both_sides() {
    let mut m = Market::new(4);
    m.place(sell(1, 1, 5, 102));
    m.place(sell(2, 2, 5, 101));
    m.place(sell(3, 1, 5, 103));
    assert_eq!(
        m.place(buy(4, 3, 12, 102)),
        placed(Status::Resting, 10, 2, &[(2, 101, 5), (1, 102, 5)])
    );
    assert_eq!(m.depth(ACME), [vec![(102, 2, 1)], vec![(103, 5, 1)]]);
    assert_eq!(m.cash(3), (CASH - 505 - 510 - 204, 204));
    m.place(buy(5, 4, 5, 101));
    assert_eq!(
        m.place(sell(6, 2, 10, 100)),
        placed(Status::Resting, 7, 3, &[(4, 102, 2), (5, 101, 5)])
    );
    assert_eq!(m.depth(ACME), [vec![], vec![(100, 3, 1), (103, 5, 1)]]);
}

#[test]
fn fifo_within_a_level() {
    let mut m = Market::new(4);
    for (id, account) in [(1, 1), (2, 2), (3, 3)] {
        m.place(sell(id, account, 2, 100));
    }
    assert_eq!(
        m.place(buy(4, 4, 5, 100)),
        placed(
            Status::Filled,
            5,
            0,
            &[(1, 100, 2), (2, 100, 2), (3, 100, 1)]
        )
    );
    assert_eq!(m.order(3), Some((1, 1)));
    assert_eq!(m.depth(ACME), [vec![], vec![(100, 1, 1)]]);
}

// ---- market orders ----

#[test]
fn a_market_order_sweeps_and_cancels_its_rest() {
    let mut m = Market::new(3);
    m.place(buy(1, 1, 5, 100));
    m.place(buy(2, 2, 5, 90));
    assert_eq!(
        m.place(sell(3, 3, 12, 0).market()),
        placed(Status::Cancelled, 10, 0, &[(1, 100, 5), (2, 90, 5)])
    );
    assert_eq!(m.depth(ACME), [vec![], vec![]]);
    assert_eq!(m.shares(3, ACME), (SHARES - 10, 0));
    assert_eq!(m.cash(3), (CASH + 950, 0));
}

#[test]
fn a_market_buy_stops_when_the_cash_runs_out() {
    let mut m = Market::new(2);
    m.ok(Request::Withdraw {
        account: 2,
        amount: CASH - 250,
    });
    m.place(sell(1, 1, 2, 100));
    m.place(sell(2, 1, 5, 120));
    assert_eq!(
        m.place(buy(3, 2, 5, 0).market()),
        placed(Status::Cancelled, 2, 0, &[(1, 100, 2)])
    );
    assert_eq!(m.cash(2), (50, 0), "50 cannot pay for a share at 120");
    assert_eq!(m.depth(ACME), [vec![], vec![(120, 5, 1)]]);
}

#[test]
fn a_market_order_with_no_liquidity_trades_nothing_and_is_ok() {
    let mut m = Market::new(1);
    assert_eq!(
        m.place(buy(1, 1, 5, 0).market()),
        placed(Status::Cancelled, 0, 0, &[])
    );
    assert_eq!(m.cash(1), (CASH, 0));
    assert_eq!(m.order(1), None);
}

// ---- time in force ----

#[test]
fn ioc_no_fill_partial_fill_and_full_fill() {
    let mut m = Market::new(2);
    assert_eq!(
        m.place(buy(1, 2, 5, 100).tif(Tif::Ioc)),
        placed(Status::Cancelled, 0, 0, &[])
    );
    m.place(sell(2, 1, 5, 100));
    assert_eq!(
        m.place(buy(3, 2, 3, 100).tif(Tif::Ioc)),
        placed(Status::Filled, 3, 0, &[(2, 100, 3)])
    );
    assert_eq!(
        m.place(buy(4, 2, 5, 100).tif(Tif::Ioc)),
        placed(Status::Cancelled, 2, 0, &[(2, 100, 2)])
    );
    assert_eq!(m.depth(ACME), [vec![], vec![]]);
    assert_eq!(m.cash(2), (CASH - 500, 0), "nothing of an ioc stays held");
}

#[test]
fn fok_fills_everything_or_nothing_across_levels() {
    let mut m = Market::new(3);
    m.place(sell(1, 1, 5, 100));
    m.place(sell(2, 2, 5, 101));
    let before = (m.cash(3), m.depth(ACME));
    assert_eq!(
        m.place(buy(3, 3, 11, 101).tif(Tif::Fok)),
        placed(Status::Cancelled, 0, 0, &[]),
        "a partial fill must trade nothing"
    );
    assert_eq!(
        m.place(buy(3, 3, 6, 100).tif(Tif::Fok)),
        placed(Status::Cancelled, 0, 0, &[]),
        "the limit leaves only 5"
    );
    assert_eq!((m.cash(3), m.depth(ACME)), before);
    assert_eq!(
        m.place(buy(4, 3, 7, 101).tif(Tif::Fok)),
        placed(Status::Filled, 7, 0, &[(1, 100, 5), (2, 101, 2)])
    );
    assert_eq!(m.depth(ACME), [vec![], vec![(101, 3, 1)]]);
    assert_eq!(
        m.place(sell(5, 3, 3, 0).market().tif(Tif::Fok)),
        placed(Status::Cancelled, 0, 0, &[]),
        "no bids at all"
    );
}

#[test]
fn post_only_that_would_cross_is_rejected_and_otherwise_rests() {
    let mut m = Market::new(2);
    m.place(sell(1, 1, 5, 100));
    assert_eq!(
        m.place_code(buy(2, 2, 5, 100).post_only()),
        ErrorCode::WouldCross
    );
    assert_eq!(
        m.place_code(buy(2, 2, 5, 99).post_only().tif(Tif::Ioc)),
        ErrorCode::InvalidOrder
    );
    assert_eq!(
        m.place(buy(2, 2, 5, 99).post_only()),
        placed(Status::Resting, 0, 5, &[])
    );
    assert_eq!(
        m.place_code(sell(3, 1, 1, 99).post_only()),
        ErrorCode::WouldCross,
        "whoever's order it is"
    );
}

#[test]
fn orders_that_cannot_exist_are_invalid() {
    let mut m = Market::new(1);
    assert_eq!(m.place_code(buy(1, 1, 0, 100)), ErrorCode::InvalidOrder);
    assert_eq!(m.place_code(buy(1, 1, 5, 0)), ErrorCode::InvalidOrder);
    assert_eq!(
        m.place_code(Order {
            price: 5,
            ..buy(1, 1, 5, 0).market()
        }),
        ErrorCode::InvalidOrder
    );
    assert_eq!(
        m.place_code(buy(1, 1, 5, 0).market().tif(Tif::Gtc)),
        ErrorCode::InvalidOrder
    );
    assert_eq!(
        m.code(Request::Amend {
            order: 1,
            qty: None,
            price: None
        }),
        ErrorCode::InvalidOrder
    );
    m.place(buy(1, 1, 5, 100));
    assert_eq!(
        m.code(Request::Amend {
            order: 1,
            qty: Some(0),
            price: None
        }),
        ErrorCode::InvalidOrder
    );
    assert_eq!(
        m.place_code(buy(2, 1, 5, 100).on(InstrumentId(9))),
        ErrorCode::UnknownInstrument
    );
    assert_eq!(m.place_code(buy(2, 9, 5, 100)), ErrorCode::UnknownAccount);
}

// ---- cancel ----

#[test]
fn cancel_a_resting_a_filled_and_an_unknown_order() {
    let mut m = Market::new(2);
    m.place(buy(1, 1, 5, 100));
    m.place(sell(2, 2, 5, 110));
    assert_eq!(m.cancel(1), Ok(5));
    assert_eq!(m.cash(1), (CASH, 0));
    assert_eq!(m.depth(ACME), [vec![], vec![(110, 5, 1)]]);
    m.place(buy(3, 1, 5, 110));
    assert_eq!(
        m.cancel(2),
        Err(ErrorCode::UnknownOrder),
        "filled: forgotten"
    );
    assert_eq!(m.cancel(77), Err(ErrorCode::UnknownOrder));
    assert_eq!(
        m.cancel(1),
        Err(ErrorCode::UnknownOrder),
        "cancelled already"
    );
    assert_eq!(
        m.place(buy(1, 1, 1, 50)).status,
        Status::Resting,
        "a finished id may be used again"
    );
}

// ---- amend ----

#[test]
fn amend_to_a_smaller_qty_keeps_priority() {
    let mut m = Market::new(3);
    m.place(sell(1, 1, 10, 100));
    m.place(sell(2, 2, 10, 100));
    assert_eq!(
        m.amend(1, Some(4), None),
        placed(Status::Resting, 0, 4, &[])
    );
    assert_eq!(m.shares(1, ACME), (SHARES - 4, 4));
    assert_eq!(
        m.place(buy(3, 3, 5, 100)).fills,
        vec![(1, 100, 4), (2, 100, 1)]
    );
}

#[test]
fn amend_to_a_larger_qty_or_a_new_price_loses_priority() {
    let mut m = Market::new(4);
    m.place(buy(1, 1, 5, 100));
    m.place(buy(2, 2, 5, 100));
    m.place(buy(3, 3, 5, 100));
    m.amend(1, Some(6), None);
    m.amend(2, None, Some(101));
    m.amend(2, None, Some(100));
    assert_eq!(m.cash(1), (CASH - 600, 600));
    assert_eq!(m.depth(ACME), [vec![(100, 16, 3)], vec![]]);
    assert_eq!(
        m.place(sell(4, 4, 16, 100)).fills,
        vec![(3, 100, 5), (1, 100, 6), (2, 100, 5)]
    );
}

#[test]
fn amend_to_a_crossing_price_trades_at_once_and_filled_counts_across_amends() {
    let mut m = Market::new(3);
    m.place(sell(1, 1, 3, 105));
    m.place(buy(2, 2, 5, 100));
    assert_eq!(
        m.amend(2, None, Some(106)),
        placed(Status::Resting, 3, 2, &[(1, 105, 3)])
    );
    assert_eq!(m.cash(2), (CASH - 315 - 212, 212));
    assert_eq!(m.order(2), Some((2, 3)));
    m.place(sell(3, 3, 1, 106));
    assert_eq!(m.order(2), Some((1, 4)));
}

#[test]
fn an_amend_that_cannot_be_backed_is_rejected_and_changes_nothing() {
    let mut m = Market::new(2);
    m.place(buy(1, 1, 10, 100));
    m.place(sell(2, 2, 10, 200));
    let (available, _) = m.cash(1);
    // Own hold (1000) plus available buys exactly this many at 100 ...
    let most = ((available + 1000) / 100) as u64;
    assert_eq!(
        m.code(Request::Amend {
            order: 1,
            qty: Some(most + 1),
            price: None
        }),
        ErrorCode::InsufficientFunds
    );
    assert_eq!(
        m.code(Request::Amend {
            order: 2,
            qty: Some(SHARES + 1),
            price: None
        }),
        ErrorCode::InsufficientShares
    );
    assert_eq!(m.amend(2, Some(SHARES), None).resting, SHARES);
    assert_eq!(m.amend(1, Some(most), None).resting, most);
    assert_eq!(m.cash(1), (0, CASH));
}

#[test]
fn a_post_only_amend_to_a_crossing_price_is_rejected_and_changes_nothing() {
    let mut m = Market::new(2);
    m.place(sell(1, 1, 5, 100));
    m.place(buy(2, 2, 5, 90).post_only());
    assert_eq!(
        m.code(Request::Amend {
            order: 2,
            qty: None,
            price: Some(100)
        }),
        ErrorCode::WouldCross
    );
    assert_eq!(m.order(2), Some((5, 0)));
    assert_eq!(m.cash(2), (CASH - 450, 450));
}

// ---- backing ----

#[test]
fn a_duplicate_resting_id_is_rejected_even_across_instruments() {
    let mut m = Market::new(2);
    m.place(buy(1, 1, 1, 100));
    assert_eq!(m.place_code(sell(1, 2, 1, 200)), ErrorCode::OrderExists);
    assert_eq!(
        m.place_code(sell(1, 2, 1, 200).on(BETA)),
        ErrorCode::OrderExists
    );
}

#[test]
fn backing_is_exact_for_cash_and_for_shares() {
    let mut m = Market::new(1);
    m.ok(Request::Withdraw {
        account: 1,
        amount: CASH - 1000,
    });
    assert_eq!(
        m.place_code(buy(1, 1, 10, 101)),
        ErrorCode::InsufficientFunds,
        "one minor unit short"
    );
    assert_eq!(m.place(buy(1, 1, 10, 100)).status, Status::Resting);
    assert_eq!(m.cash(1), (0, 1000));
    assert_eq!(
        m.place_code(sell(2, 1, SHARES + 1, 500)),
        ErrorCode::InsufficientShares,
        "one share short"
    );
    assert_eq!(m.place(sell(2, 1, SHARES, 500)).status, Status::Resting);
    assert_eq!(
        m.place_code(sell(3, 1, 1, 500)),
        ErrorCode::InsufficientShares,
        "held shares back nothing"
    );
    assert_eq!(m.shares(1, ACME), (0, SHARES));
}

// ---- self-trade prevention ----

#[test]
fn stp_cancel_resting_cancels_own_orders_and_goes_on() {
    let mut m = Market::new(2);
    m.place(sell(1, 1, 5, 100));
    m.place(sell(2, 2, 5, 100));
    m.place(sell(3, 1, 5, 101));
    let p = m.place(buy(4, 1, 10, 101));
    assert_eq!(p.fills, vec![(2, 100, 5)]);
    assert_eq!(p.stp_cancelled, vec![1, 3]);
    assert_eq!((p.status, p.filled, p.resting), (Status::Resting, 5, 5));
    assert_eq!(
        m.shares(1, ACME),
        (SHARES + 5, 0),
        "the cancelled sells' shares are free again"
    );
    assert_eq!(m.depth(ACME), [vec![(101, 5, 1)], vec![]]);
}

#[test]
fn stp_cancel_incoming_stops_matching_and_never_rests() {
    let mut m = Market::new(2);
    m.place(sell(1, 2, 5, 100));
    m.place(sell(2, 1, 5, 100));
    m.place(sell(3, 2, 5, 100));
    let p = m.place(buy(4, 1, 15, 100).stp(Stp::CancelIncoming));
    assert_eq!(p, placed(Status::Cancelled, 5, 0, &[(1, 100, 5)]));
    assert_eq!(m.depth(ACME), [vec![], vec![(100, 10, 2)]]);
    assert_eq!(m.cash(1), (CASH - 500, 0));
}

#[test]
fn an_fok_that_meets_its_own_order_counts_only_what_it_could_take() {
    let mut m = Market::new(2);
    m.place(sell(1, 1, 5, 100));
    m.place(sell(2, 2, 5, 100));
    let before = m.ledger.digest();
    assert_eq!(
        m.place(buy(3, 1, 6, 100).tif(Tif::Fok)),
        placed(Status::Cancelled, 0, 0, &[]),
        "nothing at all happens: no trade, no cancel"
    );
    assert_eq!(
        m.place(buy(3, 1, 1, 100).tif(Tif::Fok).stp(Stp::CancelIncoming)),
        placed(Status::Cancelled, 0, 0, &[])
    );
    assert_eq!(m.ledger.digest(), before, "no trade, no cancel, no hold");
    assert_eq!(m.depth(ACME), [vec![], vec![(100, 10, 2)]]);
    let p = m.place(buy(3, 1, 5, 100).tif(Tif::Fok));
    assert_eq!(
        (p.status, p.fills.clone(), p.stp_cancelled.clone()),
        (Status::Filled, vec![(2, 100, 5)], vec![1])
    );
}

// ---- isolation and holds ----

#[test]
fn instruments_are_kept_apart() {
    let mut m = Market::new(2);
    m.place(sell(1, 1, 5, 100).on(BETA));
    assert_eq!(
        m.place(buy(2, 2, 5, 100)),
        placed(Status::Resting, 0, 5, &[])
    );
    assert_eq!(m.depth(ACME), [vec![(100, 5, 1)], vec![]]);
    assert_eq!(m.depth(BETA), [vec![], vec![(100, 5, 1)]]);
    assert_eq!(m.shares(1, BETA), (SHARES - 5, 5));
    assert_eq!(m.shares(1, ACME), (SHARES, 0));
    assert_eq!(m.place(buy(3, 2, 5, 100).on(BETA)).fills, vec![(1, 100, 5)]);
    assert_eq!(m.shares(2, BETA), (SHARES + 5, 0));
    assert_eq!(m.shares(2, ACME), (SHARES, 0));
}

#[test]
fn a_reservation_and_an_order_compete_for_the_same_cash() {
    let mut m = Market::new(1);
    m.ok(Request::Withdraw {
        account: 1,
        amount: CASH - 1000,
    });
    m.place(buy(1, 1, 6, 100));
    assert_eq!(
        m.code(Request::Reserve {
            reservation: 5,
            account: 1,
            instrument: ACME,
            qty: 401,
            ttl_ms: 0,
            partial: false
        }),
        ErrorCode::InsufficientFunds
    );
    m.ok(Request::Reserve {
        reservation: 5,
        account: 1,
        instrument: ACME,
        qty: 400,
        ttl_ms: 0,
        partial: false,
    });
    assert_eq!(m.cash(1), (0, 1000));
    assert_eq!(m.place_code(buy(2, 1, 1, 1)), ErrorCode::InsufficientFunds);
    m.ok(Request::Cancel { reservation: 5 });
    assert_eq!(m.cash(1), (400, 600));
    assert_eq!(m.cancel(1), Ok(6));
    assert_eq!(m.cash(1), (1000, 0));
}

#[test]
fn trade_numbers_count_over_the_whole_ledger() {
    let mut m = Market::new(2);
    m.place(sell(1, 1, 5, 100));
    m.place(sell(2, 1, 5, 100).on(BETA));
    assert_eq!(m.trade_numbers(buy(3, 2, 2, 100)), vec![1]);
    assert_eq!(m.trade_numbers(buy(4, 2, 4, 100).on(BETA)), vec![2]);
}

/// The newest `n` history entries of `account`: (kind, amount, trade).
fn newest(m: &mut Market, account: AccountId, n: u32) -> Vec<(EntryKind, Units, Option<u64>)> {
    match m.ok(Request::History { account, limit: n }) {
        Reply::History { entries, .. } => entries
            .iter()
            .map(|e| (e.kind, e.amount, e.trade))
            .collect(),
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn history_entries_of_a_trade_carry_its_number() {
    let mut m = Market::new(3);
    m.place(sell(1, 1, 5, 100));
    m.place(sell(2, 3, 5, 101));
    assert_eq!(m.trade_numbers(buy(3, 2, 7, 101)), vec![1, 2]);
    assert_eq!(
        newest(&mut m, 2, 2),
        vec![
            (EntryKind::Buy, 202, Some(2)),
            (EntryKind::Buy, 500, Some(1))
        ]
    );
    assert_eq!(newest(&mut m, 1, 1), vec![(EntryKind::Sell, 500, Some(1))]);
    assert_eq!(newest(&mut m, 3, 1), vec![(EntryKind::Sell, 202, Some(2))]);
    m.ok(Request::Deposit {
        account: 2,
        amount: 1,
    });
    assert_eq!(newest(&mut m, 2, 1), vec![(EntryKind::Deposit, 1, None)]);
    let digest = m.ledger.digest();
    let config = bincode::config::standard();
    let bytes = bincode::encode_to_vec(&m.ledger, config).unwrap();
    let (copy, _): (Ledger, usize) = bincode::decode_from_slice(&bytes, config).unwrap();
    assert_eq!(copy.digest(), digest);
    let mut restored = Market {
        ledger: copy,
        seq: m.seq,
    };
    assert_eq!(
        newest(&mut restored, 2, 3),
        newest(&mut m, 2, 3),
        "a snapshot keeps the trade numbers"
    );
}

#[test]
fn books_are_in_the_digest_and_survive_a_snapshot() {
    let mut m = Market::new(3);
    let empty = m.ledger.digest();
    m.place(sell(1, 1, 5, 100));
    assert_ne!(m.ledger.digest(), empty);
    m.place(sell(2, 2, 5, 100));
    m.place(buy(3, 3, 4, 99));
    m.cancel(1).unwrap();
    let before = m.ledger.digest();
    let config = bincode::config::standard();
    let bytes = bincode::encode_to_vec(&m.ledger, config).unwrap();
    let (copy, _): (Ledger, usize) = bincode::decode_from_slice(&bytes, config).unwrap();
    assert_eq!(copy.digest(), before);
    copy.check_invariants().unwrap();
    let mut restored = Market {
        ledger: copy,
        seq: m.seq,
    };
    for market in [&mut m, &mut restored] {
        assert_eq!(
            market.place(buy(4, 3, 6, 100)),
            placed(Status::Resting, 5, 1, &[(2, 100, 5)])
        );
        market.place(sell(5, 1, 1, 99));
    }
    assert_eq!(restored.ledger.digest(), m.ledger.digest());
}

#[test]
fn orders_are_refused_while_a_trade_could_overflow_a_balance() {
    let mut m = Market::new(2);
    // Account 1 sells into a buy of account 2 after enough cash entered the
    // ledger that a seller's balance plus the trade's value could pass i64.
    let big = i64::MAX / 3;
    for account in 3..=5 {
        m.ok(Request::OpenAccount { account });
        m.ok(Request::Deposit {
            account,
            amount: big,
        });
    }
    m.ok(Request::Transfer {
        from: 3,
        to: 1,
        amount: big,
    });
    m.ok(Request::Transfer {
        from: 4,
        to: 1,
        amount: big,
    });
    // Unchecked, this buy would rest and the sell below would pay account 1
    // (two thirds of i64::MAX) another third: past i64::MAX.
    assert_eq!(m.place_code(buy(1, 5, 1, big)), ErrorCode::Overflow);
    assert_eq!(m.place_code(sell(2, 1, 1, 10)), ErrorCode::Overflow);
    m.ok(Request::Withdraw {
        account: 5,
        amount: big,
    });
    m.ok(Request::Withdraw {
        account: 1,
        amount: big,
    });
    assert_eq!(m.place(sell(2, 1, 1, 10)).status, Status::Resting);
}

// ---- the Ledger-wide order index ----

#[test]
fn orders_that_leave_the_book_are_forgotten_and_their_ids_free_on_any_book() {
    let mut m = Market::new(3);
    m.place(sell(1, 1, 5, 100));
    m.place(sell(2, 1, 5, 101));
    m.place(buy(3, 2, 5, 90));
    m.place(buy(4, 2, 5, 89));
    // Filled in full: maker 1 leaves, maker 2 stays with 2 left.
    assert_eq!(
        m.place(buy(5, 3, 8, 101).tif(Tif::Ioc)),
        placed(Status::Filled, 8, 0, &[(1, 100, 5), (2, 101, 3)])
    );
    assert_eq!(m.order(1), None);
    assert_eq!(m.order(2), Some((2, 3)));
    // Cancelled.
    assert_eq!(m.cancel(3), Ok(5));
    assert_eq!(m.order(3), None);
    assert_eq!(m.cancel(3), Err(ErrorCode::UnknownOrder));
    // Cancelled by self-trade prevention: account 2's own buy 4 meets its sell.
    let stp = m.place(sell(6, 2, 1, 80));
    assert_eq!(stp.stp_cancelled, vec![4]);
    assert_eq!(m.order(4), None);
    assert_eq!(m.order(6), Some((1, 0)));
    // An amend that moves the order keeps it findable; one that trades it
    // away in full forgets it, and the makers it took.
    m.amend(2, None, Some(102));
    assert_eq!(m.order(2), Some((2, 3)));
    m.place(buy(7, 3, 1, 50));
    assert_eq!(
        m.amend(7, Some(3), Some(102)),
        placed(Status::Filled, 3, 0, &[(6, 80, 1), (2, 102, 2)])
    );
    for id in [7, 6, 2] {
        assert_eq!(m.order(id), None, "order {id}");
    }
    // Every id that left is free again, on either book.
    m.place(sell(1, 1, 1, 200).on(BETA));
    m.place(sell(2, 1, 1, 200));
    m.place(buy(3, 2, 1, 10).on(BETA));
    m.place(buy(4, 2, 1, 10));
    assert_eq!(m.place_code(buy(1, 2, 1, 10)), ErrorCode::OrderExists);
    for id in [1, 2, 3, 4] {
        assert!(m.order(id).is_some(), "order {id}");
    }
    assert_eq!(m.ledger.orders.len(), 4);
}

#[test]
fn a_taker_that_rests_in_the_slot_its_maker_left_is_indexed_there() {
    let mut m = Market::new(2);
    m.place(sell(1, 1, 5, 100));
    // Order 2 fills maker 1 in full, then rests in the slot 1 left.
    assert_eq!(
        m.place(buy(2, 2, 8, 100)),
        placed(Status::Resting, 5, 3, &[(1, 100, 5)])
    );
    assert_eq!(m.order(1), None);
    assert_eq!(m.order(2), Some((3, 5)));
    assert_eq!(m.cancel(1), Err(ErrorCode::UnknownOrder));
    assert_eq!(m.cancel(2), Ok(3));
    assert_eq!(m.ledger.orders.len(), 0);
}

#[test]
fn the_order_index_survives_a_snapshot_across_books_and_arena_pages() {
    let mut m = Market::new(4);
    // More than one arena page in a book, the books growing in turns so
    // that their pages' Ledger-wide numbers interleave.
    let orders = 2_500u64;
    for id in 1..=orders {
        let instrument = if id % 3 == 0 { BETA } else { ACME };
        m.place(buy(id, 1 + id % 4, 1, 1 + (id % 40) as Units).on(instrument));
    }
    for id in (1..=orders).step_by(7) {
        m.cancel(id).unwrap();
    }
    let config = bincode::config::standard();
    let bytes = bincode::encode_to_vec(&m.ledger, config).unwrap();
    let (copy, _): (Ledger, usize) = bincode::decode_from_slice(&bytes, config).unwrap();
    copy.check_invariants().unwrap();
    assert_eq!(copy.digest(), m.ledger.digest());
    assert_eq!(copy.orders.len(), m.ledger.orders.len());
    assert_eq!(
        bincode::encode_to_vec(&copy, config).unwrap(),
        bytes,
        "the same state encodes to the same bytes"
    );
    let mut restored = Market {
        ledger: copy,
        seq: m.seq,
    };
    for id in 1..=orders {
        assert_eq!(
            restored.ledger.order_query(id),
            m.ledger.order_query(id),
            "order {id}"
        );
    }
    // Both go on alike: cancels, moves and trades against the restored index.
    for market in [&mut m, &mut restored] {
        for id in (2..=orders).step_by(5) {
            let _ = market.cancel(id);
        }
        for id in (3..=orders).step_by(11) {
            if market.ledger.order_query(id).is_ok() {
                market.amend(id, Some(2), None);
            }
        }
        market.place(sell(orders + 1, 2, 50, 1).tif(Tif::Ioc));
        market.place(sell(orders + 2, 3, 50, 1).on(BETA).tif(Tif::Ioc));
    }
    assert_eq!(restored.ledger.digest(), m.ledger.digest());
    for id in 1..=orders {
        assert_eq!(
            restored.ledger.order_query(id),
            m.ledger.order_query(id),
            "order {id}"
        );
    }
}
