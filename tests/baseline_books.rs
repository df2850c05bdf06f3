//! The mutex baseline's order books against the Ledger: the same seeded
//! random order flow (limit and market, gtc / ioc / fok, post-only, both
//! self-trade modes, amends of qty and price, cancels, refusals for cash,
//! shares, unknown and duplicate ids) through both, one request at a time.
//! Every answer must agree (status, qty traded, qty resting, or the error
//! code), and every 100 requests every wallet's cash, shares and trade
//! history (trade numbers, amounts, balances after) must too.
//! Then many threads trade on the baseline at once and its invariants must
//! hold at the end, and its journal, replayed through the Ledger, must be
//! accepted record by record and end in the same cash and shares (the file
//! order is a valid serialization with the Ledger's semantics).

use ringledger::baseline::{
    Bank, BankConfig, BaselineJournal, Exchange, MutexBank, NewOrder, TradeEntry, TRADE_HISTORY_MAX,
};
use ringledger::book::{Side, Status, Stp, Tif};
use ringledger::journal::Durability;
use ringledger::outcome::EntryKind;
use ringledger::{
    InstrumentId, Ledger, LedgerConfig, Outcome, Reject, Reply, Request, Stamp, Stamped, Symbol,
};

const ACCOUNTS: u64 = 6;
const INSTRUMENTS: u32 = 2;
const PRICE: i64 = 100;

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

struct Pair {
    ledger: Ledger,
    seq: u64,
    bank: MutexBank,
}

impl Pair {
    fn new() -> Pair {
        Pair::journaled(None)
    }

    fn journaled(journal: Option<BaselineJournal>) -> Pair {
        let mut pair = Pair {
            ledger: Ledger::new(LedgerConfig::default()),
            seq: 0,
            bank: MutexBank::new(BankConfig::with_accounts(64), journal),
        };
        for k in 0..INSTRUMENTS {
            let symbol = Symbol::new(&format!("S{k}")).unwrap();
            pair.ledger_ok(Request::ListInstrument {
                symbol,
                supply: 1_000,
                price: 1,
            });
            pair.bank.list_instrument(symbol, 1_000, 1).unwrap();
        }
        for account in 0..ACCOUNTS {
            // Some traders are poor, so cash refusals happen.
            let cash = if account % 3 == 0 { 2_000 } else { 200_000 };
            pair.ledger_ok(Request::OpenAccount { account });
            pair.ledger_ok(Request::Deposit {
                account,
                amount: cash,
            });
            pair.bank.open_funded(account..account + 1, cash).unwrap();
            for k in 0..INSTRUMENTS {
                let reservation = account * 10 + u64::from(k);
                let qty = 20 + account * 5;
                pair.ledger_ok(Request::Reserve {
                    reservation,
                    account,
                    instrument: InstrumentId(k),
                    qty,
                    ttl_ms: 0,
                    partial: false,
                });
                pair.ledger_ok(Request::Confirm { reservation });
                pair.bank
                    .reserve(reservation, account, InstrumentId(k), qty, false)
                    .unwrap();
                pair.bank.confirm(reservation).unwrap();
            }
        }
        pair
    }

    fn ledger(&mut self, request: Request) -> Outcome {
        self.seq += 1;
        let stamp = Stamp {
            seq: self.seq,
            ..Stamp::default()
        };
        self.ledger.apply(&Stamped::new(stamp, request)).outcome
    }

    fn ledger_ok(&mut self, request: Request) -> Reply {
        self.ledger(request).expect("set-up succeeds")
    }

    /// Every wallet's cash, shares and trade history agree; `numbers`:
    /// trade numbers too (one request at a time; with threads the bank
    /// numbers each book's trades in its own order, while the journal
    /// interleaves the books as their wallets' locks did).
    fn assert_same_wallets(&mut self, step: usize, numbers: bool) {
        for account in 0..ACCOUNTS {
            let Reply::History { entries, .. } = self.ledger_ok(Request::History {
                account,
                limit: TRADE_HISTORY_MAX as u32,
            }) else {
                panic!("a history answer")
            };
            let ledger: Vec<TradeEntry> = entries
                .iter()
                .filter(|e| matches!(e.kind, EntryKind::Buy | EntryKind::Sell))
                .map(|e| TradeEntry {
                    trade: e.trade.expect("a trade entry has its number"),
                    kind: e.kind,
                    amount: e.amount,
                    balance: e.balance,
                })
                .collect();
            let bank = self.bank.trade_history(account).unwrap();
            // The Ledger's history also holds the set-up's entries, but
            // always the same newest trades as the bank's (both keep 32).
            let unnumbered = |all: &[TradeEntry]| {
                all.iter()
                    .map(|e| TradeEntry { trade: 0, ..*e })
                    .collect::<Vec<_>>()
            };
            if numbers {
                assert_eq!(bank, ledger, "trades of {account} after step {step}");
            } else {
                assert_eq!(
                    unnumbered(&bank),
                    unnumbered(&ledger),
                    "trades of {account} after step {step}"
                );
            }
            let Reply::Balance { balance, held, .. } = self.ledger_ok(Request::Balance { account })
            else {
                panic!("a balance answer")
            };
            assert_eq!(
                self.bank.balance(account).unwrap(),
                (balance, held),
                "cash of {account} after step {step}"
            );
            let Reply::Holdings(all) = self.ledger_ok(Request::Holdings { account }) else {
                panic!("a holdings answer")
            };
            for k in 0..INSTRUMENTS {
                let symbol = Symbol::new(&format!("S{k}")).unwrap();
                let ledger = all
                    .iter()
                    .find(|(s, _, _)| *s == symbol)
                    .map_or((0, 0), |&(_, owned, held)| (owned, held));
                let bank = self.bank.shares(account, InstrumentId(k)).unwrap();
                assert_eq!(bank, ledger, "shares {k} of {account} after step {step}");
            }
        }
    }
}

/// A random order request; ids are `base` + 1, 2, 3, …, often reused, so
/// duplicates and unknown ids happen.
fn random_request(rng: &mut Rng, next_id: &mut u64, base: u64) -> Request {
    let order = base
        + if rng.below(3) == 0 {
            *next_id += 1;
            *next_id
        } else {
            1 + rng.below((*next_id).max(1))
        };
    match rng.below(10) {
        0..=5 => {
            let market = rng.below(8) == 0;
            let tif = match rng.below(6) {
                _ if market && rng.below(2) == 0 => Tif::Fok,
                _ if market => Tif::Ioc,
                0 => Tif::Ioc,
                1 => Tif::Fok,
                _ => Tif::Gtc,
            };
            Request::Place {
                order,
                account: rng.below(ACCOUNTS),
                instrument: InstrumentId(rng.below(u64::from(INSTRUMENTS)) as u32),
                side: if rng.below(2) == 0 {
                    Side::Buy
                } else {
                    Side::Sell
                },
                market,
                tif,
                post_only: tif == Tif::Gtc && !market && rng.below(6) == 0,
                stp: if rng.below(3) == 0 {
                    Stp::CancelIncoming
                } else {
                    Stp::CancelResting
                },
                qty: 1 + rng.below(8),
                price: if market {
                    0
                } else {
                    PRICE - 5 + rng.below(11) as i64
                },
            }
        }
        6..=8 => {
            let (qty, price) = match rng.below(3) {
                0 => (Some(1 + rng.below(8)), None),
                1 => (None, Some(PRICE - 5 + rng.below(11) as i64)),
                _ => (
                    Some(1 + rng.below(8)),
                    Some(PRICE - 5 + rng.below(11) as i64),
                ),
            };
            Request::Amend { order, qty, price }
        }
        _ => Request::CancelOrder { order },
    }
}

/// The bank's answer in the Ledger's terms: `(status, filled, resting)` of
/// a place or amend, the qty of a cancel (as resting), or the error code.
fn bank_answer(bank: &MutexBank, request: Request) -> Result<(Status, u64, u64), &'static str> {
    let code = |r: Reject| r.code().as_str();
    match request {
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
        } => bank
            .place(NewOrder {
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
            })
            .map(|p| (p.status, p.filled, p.resting))
            .map_err(code),
        Request::Amend { order, qty, price } => bank
            .amend(order, qty, price)
            .map(|p| (p.status, p.filled, p.resting))
            .map_err(code),
        Request::CancelOrder { order } => bank
            .cancel_order(order)
            .map(|qty| (Status::Cancelled, 0, qty))
            .map_err(code),
        other => panic!("not an order request: {other:?}"),
    }
}

fn ledger_answer(outcome: Outcome) -> Result<(Status, u64, u64), &'static str> {
    match outcome {
        Ok(Reply::Placed {
            status,
            filled,
            resting,
            ..
        }) => Ok((status, filled, resting)),
        Ok(Reply::OrderCancelled { cancelled }) => Ok((Status::Cancelled, 0, cancelled)),
        Ok(other) => panic!("unexpected answer {other:?}"),
        Err(reject) => Err(reject.code().as_str()),
    }
}

#[test]
fn the_mutex_baseline_matches_and_settles_like_the_ledger() {
    for seed in 1..=4u64 {
        let mut pair = Pair::new();
        let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ seed);
        let mut next_id = 0;
        let mut trades = 0;
        for step in 0..5_000 {
            let request = random_request(&mut rng, &mut next_id, 0);
            let ledger = ledger_answer(pair.ledger(request));
            let bank = bank_answer(&pair.bank, request);
            assert_eq!(bank, ledger, "seed {seed} step {step}: {request:?}");
            if let Ok((_, filled, _)) = ledger {
                trades += u64::from(filled > 0);
            }
            if step % 100 == 99 {
                pair.assert_same_wallets(step, true);
            }
        }
        pair.assert_same_wallets(5_000, true);
        pair.bank.check_invariants().unwrap();
        pair.ledger.check_invariants().unwrap();
        assert!(trades > 200, "seed {seed}: only {trades} requests traded");
    }
}

#[test]
fn threads_trading_at_once_keep_the_baseline_s_invariants_and_journal_a_serialization() {
    let dir = tempfile::tempdir().unwrap();
    let journal = BaselineJournal::create(dir.path(), Durability::Async).unwrap();
    let pair = Pair::journaled(Some(journal));
    let bank = &pair.bank;
    std::thread::scope(|scope| {
        for t in 0..8u64 {
            scope.spawn(move || {
                let mut rng = Rng(0xDEAD_BEEF ^ (t + 1) << 20);
                // Each thread its own id range: the races are for makers,
                // cash and shares, not for ids.
                let mut next_id = 0;
                for _ in 0..3_000 {
                    let request = random_request(&mut rng, &mut next_id, t << 32);
                    let _ = bank_answer(bank, request);
                }
            });
        }
    });
    bank.check_invariants().unwrap();
    // The bank's journal holds its own set-up too: replay all of it into
    // a fresh Ledger, then compare that Ledger with the bank.
    let records = BaselineJournal::read(dir.path()).unwrap();
    let mut replayed = Pair {
        ledger: Ledger::new(LedgerConfig::default()),
        seq: 0,
        bank: pair.bank,
    };
    let mut orders = 0;
    for record in &records {
        orders += u64::from(matches!(
            record.request,
            Request::Place { .. } | Request::Amend { .. } | Request::CancelOrder { .. }
        ));
        if let Err(reject) = replayed.ledger(record.request) {
            panic!("{record:?} refused on replay: {reject}");
        }
    }
    assert!(orders > 10_000, "only {orders} order records");
    replayed.ledger.check_invariants().unwrap();
    replayed.assert_same_wallets(records.len(), false);
}

#[test]
fn an_order_on_a_bank_without_books_is_not_offered() {
    let bank = ringledger::baseline::OptimisticBank::new(BankConfig::default(), None);
    assert!(bank.as_exchange().is_none());
    let mutex = MutexBank::new(BankConfig::default(), None);
    assert!(mutex.as_exchange().is_some());
}

#[test]
fn the_baseline_keeps_as_many_trade_entries_as_the_ledger_keeps_history() {
    assert_eq!(
        TRADE_HISTORY_MAX,
        LedgerConfig::default().history_per_account_max as usize
    );
}
