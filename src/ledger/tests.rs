//! One test per rule and per error code, driven through `apply` only.

use super::*;
use crate::outcome::ErrorCode;

/// Stamps requests the way the sequencer would: increasing sequence numbers,
/// a controllable clock, unnumbered (request numbers are tested in
/// `sessions::tests`).
struct Driver {
    ledger: Ledger,
    seq: u64,
    now_ms: u64,
}

const ACME: InstrumentId = InstrumentId(0);

impl Driver {
    fn new() -> Driver {
        Driver::with(LedgerConfig::default())
    }

    fn with(config: LedgerConfig) -> Driver {
        Driver {
            ledger: Ledger::new(config),
            seq: 0,
            now_ms: 1_000,
        }
    }

    fn stamped(&mut self, session: SessionId, req: u64, request: Request) -> Applied {
        self.seq += 1;
        let stamp = Stamp {
            seq: self.seq,
            time_ms: self.now_ms,
            session,
            req,
        };
        let applied = self.ledger.apply(&Stamped { stamp, request });
        self.ledger.check_invariants().unwrap();
        applied
    }

    fn send(&mut self, request: Request) -> Outcome {
        self.full(request).outcome
    }

    fn full(&mut self, request: Request) -> Applied {
        self.stamped(0, 0, request)
    }

    fn code(&mut self, request: Request) -> ErrorCode {
        self.send(request)
            .expect_err("request should be rejected")
            .code()
    }

    fn open(&mut self, account: AccountId, cash: Units) {
        assert_eq!(self.send(Request::OpenAccount { account }), Ok(Reply::Done));
        if cash > 0 {
            self.send(Request::Deposit {
                account,
                amount: cash,
            })
            .unwrap();
        }
    }

    fn balance(&mut self, account: AccountId) -> (Units, Units, Units) {
        match self.send(Request::Balance { account }).unwrap() {
            Reply::Balance {
                balance,
                held,
                available,
            } => (balance, held, available),
            other => panic!("unexpected {other:?}"),
        }
    }

    fn list(&mut self, symbol: &str, supply: u64, price: Units) -> InstrumentId {
        match self.send(Request::ListInstrument {
            symbol: Symbol::new(symbol).unwrap(),
            supply,
            price,
        }) {
            Ok(Reply::Listed { instrument }) => instrument,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn instrument(&mut self, instrument: InstrumentId) -> InstrumentView {
        match self.send(Request::Instrument { instrument }).unwrap() {
            Reply::Instrument(view) => *view,
            other => panic!("unexpected {other:?}"),
        }
    }

    fn reserve(
        &mut self,
        reservation: u64,
        account: AccountId,
        qty: u64,
        ttl_ms: u64,
        partial: bool,
    ) -> Outcome {
        self.send(Request::Reserve {
            reservation,
            account,
            instrument: ACME,
            qty,
            ttl_ms,
            partial,
        })
    }

    fn history(&mut self, account: AccountId, limit: u32) -> Vec<Entry> {
        self.history_cut(account, limit).0
    }

    /// The entries and whether retention cut them.
    fn history_cut(&mut self, account: AccountId, limit: u32) -> (Vec<Entry>, bool) {
        match self.send(Request::History { account, limit }).unwrap() {
            Reply::History { entries, truncated } => (entries, truncated),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn opening_an_account_twice_is_rejected() {
    let mut d = Driver::new();
    d.open(7, 0);
    assert_eq!(
        d.code(Request::OpenAccount { account: 7 }),
        ErrorCode::AccountExists
    );
    assert_eq!(d.ledger.accounts_len(), 1);
}

#[test]
fn requests_on_unknown_accounts_are_rejected() {
    let mut d = Driver::new();
    d.open(1, 100);
    for request in [
        Request::Deposit {
            account: 9,
            amount: 1,
        },
        Request::Withdraw {
            account: 9,
            amount: 1,
        },
        Request::Transfer {
            from: 9,
            to: 1,
            amount: 1,
        },
        Request::Transfer {
            from: 1,
            to: 9,
            amount: 1,
        },
        Request::Balance { account: 9 },
        Request::History {
            account: 9,
            limit: 5,
        },
        Request::Holdings { account: 9 },
    ] {
        assert_eq!(d.code(request), ErrorCode::UnknownAccount, "{request:?}");
    }
    assert_eq!(d.balance(1), (100, 0, 100));
}

#[test]
fn deposit_adds_to_the_balance_and_answers_it() {
    let mut d = Driver::new();
    d.open(1, 0);
    assert_eq!(
        d.send(Request::Deposit {
            account: 1,
            amount: 1050
        }),
        Ok(Reply::Moved { balance: 1050 })
    );
    assert_eq!(
        d.send(Request::Deposit {
            account: 1,
            amount: 50
        }),
        Ok(Reply::Moved { balance: 1100 })
    );
}

#[test]
fn zero_or_negative_amounts_are_invalid_and_change_nothing() {
    let mut d = Driver::new();
    d.open(1, 500);
    d.open(2, 0);
    for amount in [0, -5] {
        assert_eq!(
            d.code(Request::Deposit { account: 1, amount }),
            ErrorCode::InvalidAmount
        );
        assert_eq!(
            d.code(Request::Withdraw { account: 1, amount }),
            ErrorCode::InvalidAmount
        );
        assert_eq!(
            d.code(Request::Transfer {
                from: 1,
                to: 2,
                amount
            }),
            ErrorCode::InvalidAmount
        );
    }
    assert_eq!(d.balance(1), (500, 0, 500));
    assert_eq!(d.balance(2), (0, 0, 0));
}

#[test]
fn withdraw_more_than_available_is_rejected() {
    let mut d = Driver::new();
    d.open(1, 500);
    assert_eq!(
        d.send(Request::Withdraw {
            account: 1,
            amount: 501
        }),
        Err(Reject::InsufficientFunds {
            account: 1,
            available: 500,
            requested: 501
        })
    );
    assert_eq!(
        d.send(Request::Withdraw {
            account: 1,
            amount: 500
        }),
        Ok(Reply::Moved { balance: 0 })
    );
    assert_eq!(d.balance(1), (0, 0, 0));
}

#[test]
fn held_cash_cannot_be_withdrawn_or_transferred() {
    let mut d = Driver::new();
    d.open(1, 1_000);
    d.open(2, 0);
    d.list("ACME", 10, 300);
    d.reserve(1, 1, 3, 0, false).unwrap();
    assert_eq!(d.balance(1), (1_000, 900, 100));
    assert_eq!(
        d.code(Request::Withdraw {
            account: 1,
            amount: 101
        }),
        ErrorCode::InsufficientFunds
    );
    assert_eq!(
        d.code(Request::Transfer {
            from: 1,
            to: 2,
            amount: 101
        }),
        ErrorCode::InsufficientFunds
    );
    d.send(Request::Withdraw {
        account: 1,
        amount: 100,
    })
    .unwrap();
    assert_eq!(d.balance(1), (900, 900, 0));
}

#[test]
fn transfer_moves_money_between_accounts() {
    let mut d = Driver::new();
    d.open(1, 1_000);
    d.open(2, 10);
    assert_eq!(
        d.send(Request::Transfer {
            from: 1,
            to: 2,
            amount: 400
        }),
        Ok(Reply::Done)
    );
    assert_eq!(d.balance(1), (600, 0, 600));
    assert_eq!(d.balance(2), (410, 0, 410));
    assert_eq!(
        d.code(Request::Transfer {
            from: 2,
            to: 1,
            amount: 411
        }),
        ErrorCode::InsufficientFunds
    );
}

#[test]
fn transfer_to_self_is_a_checked_no_op() {
    let mut d = Driver::new();
    d.open(1, 100);
    assert_eq!(
        d.send(Request::Transfer {
            from: 1,
            to: 1,
            amount: 100
        }),
        Ok(Reply::Done)
    );
    assert_eq!(
        d.code(Request::Transfer {
            from: 1,
            to: 1,
            amount: 101
        }),
        ErrorCode::InsufficientFunds
    );
    assert_eq!(d.balance(1), (100, 0, 100));
    assert_eq!(
        d.history(1, 10).len(),
        1,
        "only the opening deposit is recorded"
    );
}

#[test]
fn balance_overflow_is_rejected_and_changes_nothing() {
    let mut d = Driver::new();
    d.open(1, 0);
    fill_to(&mut d, 1, i64::MAX);
    d.open(2, 5);
    assert_eq!(
        d.code(Request::Deposit {
            account: 1,
            amount: 1
        }),
        ErrorCode::Overflow
    );
    assert_eq!(
        d.code(Request::Transfer {
            from: 2,
            to: 1,
            amount: 1
        }),
        ErrorCode::Overflow
    );
    assert_eq!(d.balance(1), (i64::MAX, 0, i64::MAX));
    assert_eq!(d.balance(2), (5, 0, 5));
}

#[test]
fn every_balance_change_is_recorded_newest_first() {
    let mut d = Driver::new();
    d.open(1, 1_000);
    d.open(2, 0);
    d.send(Request::Withdraw {
        account: 1,
        amount: 100,
    })
    .unwrap();
    d.send(Request::Transfer {
        from: 1,
        to: 2,
        amount: 200,
    })
    .unwrap();
    let kinds: Vec<_> = d
        .history(1, 10)
        .iter()
        .map(|e| (e.kind, e.amount, e.balance))
        .collect();
    assert_eq!(
        kinds,
        vec![
            (EntryKind::TransferOut, 200, 700),
            (EntryKind::Withdrawal, 100, 900),
            (EntryKind::Deposit, 1_000, 1_000),
        ]
    );
    let incoming = d.history(2, 10);
    assert_eq!(incoming.len(), 1);
    assert_eq!(
        (incoming[0].kind, incoming[0].account, incoming[0].balance),
        (EntryKind::TransferIn, 2, 200)
    );
    assert_eq!(d.history(1, 2).len(), 2, "limit caps the answer");
}

#[test]
fn history_keeps_only_the_newest_entries_per_account() {
    let mut d = Driver::with(LedgerConfig {
        history_per_account_max: 3,
        ..LedgerConfig::default()
    });
    d.open(1, 0);
    for amount in 1..=5 {
        d.send(Request::Deposit { account: 1, amount }).unwrap();
    }
    let amounts: Vec<_> = d.history(1, 100).iter().map(|e| e.amount).collect();
    assert_eq!(amounts, vec![5, 4, 3]);
}

#[test]
fn history_says_when_retention_cut_what_limit_asked_for() {
    let mut d = Driver::new();
    d.open(1, 0);
    d.open(2, 0);
    for amount in 1..=82 {
        d.send(Request::Deposit { account: 1, amount }).unwrap();
    }
    for amount in 1..=5 {
        d.send(Request::Deposit { account: 2, amount }).unwrap();
    }
    let (entries, truncated) = d.history_cut(1, 1_000);
    assert_eq!((entries.len(), truncated), (32, true));
    assert_eq!((entries[0].amount, entries[31].amount), (82, 51));
    assert_eq!(d.history_cut(1, 10).0.len(), 10);
    assert!(!d.history_cut(1, 10).1, "the limit, not retention, cut it");
    assert!(!d.history_cut(1, 32).1, "everything asked for was kept");
    assert!(d.history_cut(1, 33).1);
    assert_eq!(d.history_cut(2, 1_000), (d.history(2, 5), false));
}

#[test]
fn history_kept_nowhere_is_always_cut() {
    let mut d = Driver::with(LedgerConfig {
        history_per_account_max: 0,
        ..LedgerConfig::default()
    });
    d.open(1, 0);
    assert_eq!(d.history_cut(1, 5), (vec![], false), "nothing happened yet");
    d.send(Request::Deposit {
        account: 1,
        amount: 7,
    })
    .unwrap();
    assert_eq!(d.history_cut(1, 5), (vec![], true));
    assert_eq!(d.history_cut(1, 0), (vec![], false));
}

#[test]
fn each_deposit_schedules_one_rebate_credited_once() {
    let mut d = Driver::new();
    d.open(1, 0);
    let applied = d.full(Request::Deposit {
        account: 1,
        amount: 10_000,
    });
    let job = applied.rebate.expect("a deposit schedules a rebate");
    assert_eq!((job.account, job.amount), (1, 10_000));
    assert_eq!(d.ledger.pending_rebates().collect::<Vec<_>>(), vec![job]);
    let credit = Request::CreditRebate {
        deposit_seq: job.deposit_seq,
        amount: 100,
    };
    assert_eq!(d.send(credit), Ok(Reply::RebateCredited { credited: true }));
    assert_eq!(
        d.send(credit),
        Ok(Reply::RebateCredited { credited: false })
    );
    assert_eq!(d.balance(1), (10_100, 0, 10_100));
    assert_eq!(d.ledger.pending_rebates_len(), 0);
    assert_eq!(d.history(1, 1)[0].kind, EntryKind::Rebate);
}

#[test]
fn rejected_deposit_schedules_no_rebate() {
    let mut d = Driver::new();
    d.open(1, 0);
    assert_eq!(
        d.full(Request::Deposit {
            account: 1,
            amount: 0
        })
        .rebate,
        None
    );
    assert_eq!(
        d.full(Request::Deposit {
            account: 2,
            amount: 5
        })
        .rebate,
        None
    );
    assert_eq!(d.ledger.pending_rebates_len(), 0);
}

#[test]
fn zero_rebate_settles_without_a_balance_change() {
    let mut d = Driver::new();
    d.open(1, 0);
    let job = d
        .full(Request::Deposit {
            account: 1,
            amount: 99,
        })
        .rebate
        .unwrap();
    assert_eq!(
        d.send(Request::CreditRebate {
            deposit_seq: job.deposit_seq,
            amount: 0
        }),
        Ok(Reply::RebateCredited { credited: true })
    );
    assert_eq!(d.history(1, 10).len(), 1);
    assert_eq!(d.ledger.pending_rebates_len(), 0);
}

#[test]
fn rebate_for_an_unknown_deposit_changes_nothing() {
    let mut d = Driver::new();
    d.open(1, 500);
    let before = d.ledger.digest();
    assert_eq!(
        d.stamped(
            9,
            0,
            Request::CreditRebate {
                deposit_seq: 999,
                amount: 5
            }
        )
        .outcome,
        Ok(Reply::RebateCredited { credited: false })
    );
    assert_eq!(d.ledger.digest(), before);
    assert_eq!(d.balance(1), (500, 0, 500));
}

#[test]
fn rebates_credited_out_of_order_all_settle() {
    let mut d = Driver::new();
    d.open(1, 0);
    let jobs: Vec<_> = (1..=4)
        .map(|i| {
            d.full(Request::Deposit {
                account: 1,
                amount: i * 100,
            })
            .rebate
            .unwrap()
        })
        .collect();
    for job in [jobs[2], jobs[0], jobs[3], jobs[1]] {
        let outcome = d.send(Request::CreditRebate {
            deposit_seq: job.deposit_seq,
            amount: job.amount / 100,
        });
        assert_eq!(outcome, Ok(Reply::RebateCredited { credited: true }));
    }
    assert_eq!(d.ledger.pending_rebates_len(), 0);
    assert_eq!(d.balance(1).0, 1_000 + 10);
}

#[test]
fn negative_rebate_is_refused_and_stays_pending() {
    let mut d = Driver::new();
    d.open(1, 0);
    let job = d
        .full(Request::Deposit {
            account: 1,
            amount: 100,
        })
        .rebate
        .unwrap();
    assert_eq!(
        d.code(Request::CreditRebate {
            deposit_seq: job.deposit_seq,
            amount: -1
        }),
        ErrorCode::InvalidAmount
    );
    assert_eq!(d.ledger.pending_rebates_len(), 1);
}

#[test]
fn listing_an_instrument_twice_is_rejected() {
    let mut d = Driver::new();
    assert_eq!(d.list("ACME", 100, 250), ACME);
    let again = Request::ListInstrument {
        symbol: Symbol::new("ACME").unwrap(),
        supply: 5,
        price: 1,
    };
    assert_eq!(d.code(again), ErrorCode::InstrumentExists);
    assert_eq!(d.instrument(ACME).supply, 100);
    assert_eq!(
        d.ledger.instrument_id(&Symbol::new("ACME").unwrap()),
        Some(ACME)
    );
}

#[test]
fn listing_with_zero_supply_or_price_is_invalid() {
    let mut d = Driver::new();
    let sym = Symbol::new("ACME").unwrap();
    assert_eq!(
        d.code(Request::ListInstrument {
            symbol: sym,
            supply: 0,
            price: 1
        }),
        ErrorCode::InvalidAmount
    );
    assert_eq!(
        d.code(Request::ListInstrument {
            symbol: sym,
            supply: 1,
            price: 0
        }),
        ErrorCode::InvalidAmount
    );
    assert_eq!(d.ledger.instruments().count(), 0);
}

#[test]
fn unknown_instrument_is_rejected() {
    let mut d = Driver::new();
    d.open(1, 100);
    assert_eq!(
        d.code(Request::Instrument {
            instrument: InstrumentId(3)
        }),
        ErrorCode::UnknownInstrument
    );
    assert_eq!(
        d.reserve(1, 1, 1, 0, false).unwrap_err().code(),
        ErrorCode::UnknownInstrument
    );
}

#[test]
fn reserve_takes_shares_and_holds_their_cost() {
    let mut d = Driver::new();
    d.open(1, 10_000);
    d.list("ACME", 100, 250);
    assert_eq!(
        d.reserve(1, 1, 10, 0, false),
        Ok(Reply::Reserved { qty: 10 })
    );
    let view = d.instrument(ACME);
    assert_eq!((view.available, view.reserved, view.sold), (90, 10, 0));
    assert_eq!(d.balance(1), (10_000, 2_500, 7_500));
}

#[test]
fn all_or_nothing_reserve_beyond_available_is_rejected() {
    let mut d = Driver::new();
    d.open(1, 10_000);
    d.list("ACME", 5, 10);
    assert_eq!(
        d.reserve(1, 1, 6, 0, false),
        Err(Reject::InsufficientShares {
            instrument: ACME,
            available: 5,
            requested: 6
        })
    );
    assert_eq!(d.instrument(ACME).available, 5);
    assert_eq!(d.balance(1).1, 0);
}

#[test]
fn partial_reserve_takes_what_is_left() {
    let mut d = Driver::new();
    d.open(1, 10_000);
    d.list("ACME", 5, 10);
    assert_eq!(d.reserve(1, 1, 8, 0, true), Ok(Reply::Reserved { qty: 5 }));
    assert_eq!(d.balance(1).1, 50);
    assert_eq!(
        d.reserve(2, 1, 1, 0, true).unwrap_err().code(),
        ErrorCode::InsufficientShares
    );
}

#[test]
fn reserve_without_the_cash_is_rejected() {
    let mut d = Driver::new();
    d.open(1, 99);
    d.list("ACME", 5, 30);
    assert_eq!(
        d.reserve(1, 1, 10, 0, true),
        Err(Reject::InsufficientFunds {
            account: 1,
            available: 99,
            requested: 150
        })
    );
    assert_eq!(d.instrument(ACME).available, 5);
}

#[test]
fn reserve_of_zero_shares_is_invalid() {
    let mut d = Driver::new();
    d.open(1, 99);
    d.list("ACME", 5, 10);
    assert_eq!(
        d.reserve(1, 1, 0, 0, false).unwrap_err().code(),
        ErrorCode::InvalidAmount
    );
}

#[test]
fn reserve_cost_overflow_is_rejected() {
    let mut d = Driver::new();
    d.open(1, 0);
    fill_to(&mut d, 1, i64::MAX);
    d.list("ACME", u64::MAX, i64::MAX);
    assert_eq!(
        d.reserve(1, 1, 2, 0, false).unwrap_err().code(),
        ErrorCode::Overflow
    );
    assert_eq!(d.instrument(ACME).available, u64::MAX);
}

#[test]
fn reusing_a_reservation_id_is_rejected_even_after_it_closed() {
    let mut d = Driver::new();
    d.open(1, 10_000);
    d.list("ACME", 100, 10);
    d.reserve(1, 1, 1, 0, false).unwrap();
    assert_eq!(
        d.reserve(1, 1, 1, 0, false).unwrap_err().code(),
        ErrorCode::ReservationExists
    );
    d.send(Request::Confirm { reservation: 1 }).unwrap();
    assert_eq!(
        d.reserve(1, 1, 1, 0, false).unwrap_err().code(),
        ErrorCode::ReservationExists
    );
}

#[test]
fn confirm_turns_a_reservation_into_a_sale() {
    let mut d = Driver::new();
    d.open(1, 10_000);
    d.list("ACME", 100, 250);
    d.reserve(1, 1, 4, 0, false).unwrap();
    assert_eq!(d.send(Request::Confirm { reservation: 1 }), Ok(Reply::Done));
    let view = d.instrument(ACME);
    assert_eq!((view.available, view.reserved, view.sold), (96, 0, 4));
    assert_eq!(d.balance(1), (9_000, 0, 9_000));
    assert_eq!(
        d.send(Request::Holdings { account: 1 }),
        Ok(Reply::Holdings(vec![(Symbol::new("ACME").unwrap(), 4, 0)]))
    );
    assert_eq!(d.history(1, 1)[0].kind, EntryKind::Purchase);
}

#[test]
fn cancel_returns_shares_and_cash() {
    let mut d = Driver::new();
    d.open(1, 10_000);
    d.list("ACME", 100, 250);
    d.reserve(1, 1, 4, 0, false).unwrap();
    assert_eq!(d.send(Request::Cancel { reservation: 1 }), Ok(Reply::Done));
    assert_eq!(d.instrument(ACME).available, 100);
    assert_eq!(d.balance(1), (10_000, 0, 10_000));
    assert_eq!(
        d.send(Request::Holdings { account: 1 }),
        Ok(Reply::Holdings(vec![]))
    );
}

#[test]
fn closing_an_unknown_or_closed_reservation_is_rejected() {
    let mut d = Driver::new();
    d.open(1, 10_000);
    d.list("ACME", 100, 250);
    assert_eq!(
        d.code(Request::Confirm { reservation: 5 }),
        ErrorCode::UnknownReservation
    );
    assert_eq!(
        d.code(Request::Cancel { reservation: 5 }),
        ErrorCode::UnknownReservation
    );
    d.reserve(5, 1, 1, 0, false).unwrap();
    d.send(Request::Cancel { reservation: 5 }).unwrap();
    assert_eq!(
        d.send(Request::Confirm { reservation: 5 }),
        Err(Reject::UnknownReservation {
            reservation: 5,
            closed: Some(Closure::Cancelled)
        })
    );
}

#[test]
fn reservation_expires_at_its_ttl_and_returns_everything() {
    let mut d = Driver::new();
    d.open(1, 10_000);
    d.list("ACME", 100, 250);
    d.reserve(1, 1, 4, 500, false).unwrap();
    d.now_ms += 499;
    assert_eq!(d.instrument(ACME).reserved, 4, "not yet due");
    d.now_ms += 1;
    d.send(Request::Tick).unwrap();
    assert_eq!(d.instrument(ACME).available, 100);
    assert_eq!(d.balance(1), (10_000, 0, 10_000));
    assert_eq!(
        d.code(Request::Confirm { reservation: 1 }),
        ErrorCode::ReservationExpired
    );
    assert_eq!(
        d.code(Request::Cancel { reservation: 1 }),
        ErrorCode::ReservationExpired
    );
}

#[test]
fn confirm_after_expiry_time_is_rejected_without_a_tick() {
    let mut d = Driver::new();
    d.open(1, 10_000);
    d.list("ACME", 100, 250);
    d.reserve(1, 1, 4, 500, false).unwrap();
    d.now_ms += 10_000;
    assert_eq!(
        d.code(Request::Confirm { reservation: 1 }),
        ErrorCode::ReservationExpired
    );
}

#[test]
fn a_ttl_past_the_end_of_time_expires_at_the_end_of_time() {
    let mut d = Driver::new();
    d.open(1, 10_000);
    d.list("ACME", 100, 10);
    d.now_ms = u64::MAX - 5;
    d.reserve(1, 1, 1, 10, false).unwrap();
    d.reserve(2, 1, 1, 10, false).unwrap();
    d.reserve(3, 1, 1, 0, false).unwrap();
    d.now_ms = u64::MAX - 1;
    d.send(Request::Confirm { reservation: 2 }).unwrap();
    d.now_ms = u64::MAX;
    assert_eq!(
        d.code(Request::Confirm { reservation: 1 }),
        ErrorCode::ReservationExpired
    );
    assert_eq!(
        d.instrument(ACME).reserved,
        1,
        "only the TTL-less one is left"
    );
    d.send(Request::Confirm { reservation: 3 }).unwrap();
}

#[test]
fn confirmed_reservation_no_longer_expires() {
    let mut d = Driver::new();
    d.open(1, 10_000);
    d.list("ACME", 100, 250);
    d.reserve(1, 1, 4, 500, false).unwrap();
    d.send(Request::Confirm { reservation: 1 }).unwrap();
    d.now_ms += 1_000;
    d.send(Request::Tick).unwrap();
    assert_eq!(d.instrument(ACME).sold, 4);
}

#[test]
fn expiries_happen_in_time_order_and_only_when_due() {
    let mut d = Driver::new();
    d.open(1, 100_000);
    d.list("ACME", 100, 10);
    d.reserve(1, 1, 1, 300, false).unwrap();
    d.reserve(2, 1, 2, 100, false).unwrap();
    d.reserve(3, 1, 4, 200, false).unwrap();
    d.reserve(4, 1, 8, 0, false).unwrap();
    d.now_ms += 250;
    assert_eq!(d.instrument(ACME).reserved, 1 + 8);
    d.now_ms += 1_000_000;
    assert_eq!(d.instrument(ACME).reserved, 8, "no TTL, no expiry");
}

/// A hostile client on a frozen clock: it keeps one reservation id coming
/// back (each time its closing has left the bounded window of closed ids,
/// so the id may be used again) with the same ttl, so every one of its
/// expiry entries names it at the same time. The Ledger's invariants (the
/// expiry index's bound among them) hold throughout.
#[test]
fn a_reservation_id_reused_at_a_frozen_time_keeps_the_expiry_index_bounded() {
    let mut d = Driver::with(LedgerConfig {
        closed_reservations_max: 1,
        ..LedgerConfig::default()
    });
    d.open(1, 1_000_000);
    d.list("ACME", 1_000, 10);
    for id in 1..=200 {
        d.reserve(id, 1, 1, 500, false).unwrap();
    }
    for _ in 0..100 {
        d.reserve(0, 1, 1, 1_000, false).unwrap();
        d.send(Request::Cancel { reservation: 0 }).unwrap();
        // Pushes id 0 out of the window of closed ids.
        d.reserve(1_000, 1, 1, 0, false).unwrap();
        d.send(Request::Cancel { reservation: 1_000 }).unwrap();
    }
    d.reserve(0, 1, 1, 1_000, false).unwrap();
    for id in 1..=200 {
        d.send(Request::Cancel { reservation: id }).unwrap();
    }
    d.now_ms += 1_000;
    assert_eq!(d.instrument(ACME).reserved, 0, "id 0 expired");
}

#[test]
fn time_never_goes_backwards_for_expiry() {
    let mut d = Driver::new();
    d.open(1, 100_000);
    d.list("ACME", 100, 10);
    d.reserve(1, 1, 1, 100, false).unwrap();
    d.now_ms += 200;
    d.send(Request::Tick).unwrap();
    d.now_ms -= 200;
    assert_eq!(d.ledger.now_ms(), 1_200);
    assert_eq!(
        d.reserve(2, 1, 1, 100, false),
        Ok(Reply::Reserved { qty: 1 })
    );
    d.now_ms += 150;
    assert_eq!(
        d.instrument(ACME).reserved,
        1,
        "the second TTL counted from the ledger's time"
    );
}

#[test]
fn same_stamped_requests_give_the_same_digest() {
    let run = || {
        let mut d = Driver::new();
        d.open(1, 10_000);
        d.open(2, 50);
        d.list("ACME", 10, 100);
        d.reserve(1, 1, 3, 100, false).unwrap();
        d.reserve(2, 2, 3, 0, true).unwrap_err();
        d.send(Request::Transfer {
            from: 1,
            to: 2,
            amount: 700,
        })
        .unwrap();
        d.now_ms += 200;
        d.send(Request::Tick).unwrap();
        d.ledger.digest()
    };
    assert_eq!(run(), run());
}

#[test]
fn digest_changes_with_state() {
    let mut d = Driver::new();
    d.open(1, 100);
    let before = d.ledger.digest();
    d.send(Request::Deposit {
        account: 1,
        amount: 1,
    })
    .unwrap();
    assert_ne!(d.ledger.digest(), before);
}

#[test]
fn digest_request_answers_the_current_digest() {
    let mut d = Driver::new();
    d.open(1, 100);
    let expected = d.ledger.digest();
    assert_eq!(d.send(Request::Digest), Ok(Reply::Digest(expected)));
}

#[test]
fn hundred_shares_thousand_buyers_first_hundred_win() {
    let mut d = Driver::new();
    d.list("ACME", 100, 10);
    for buyer in 0..1_000 {
        d.open(buyer, 10);
    }
    let mut winners = Vec::new();
    for buyer in 0..1_000u64 {
        match d.reserve(buyer, buyer, 1, 0, false) {
            Ok(Reply::Reserved { qty: 1 }) => winners.push(buyer),
            Err(Reject::InsufficientShares { available: 0, .. }) => {}
            other => panic!("buyer {buyer}: unexpected {other:?}"),
        }
    }
    assert_eq!(winners, (0..100).collect::<Vec<_>>());
    let view = d.instrument(ACME);
    assert_eq!((view.available, view.reserved), (0, 100));
}

#[test]
fn interleaved_deposits_and_withdrawals_on_one_wallet_end_exact() {
    let mut d = Driver::new();
    d.open(1, 0);
    let mut expected = 0i64;
    for i in 0..10_000i64 {
        let amount = (i * 7919) % 1_000 + 1;
        if i % 3 == 0 {
            d.send(Request::Deposit { account: 1, amount }).unwrap();
            expected += amount;
        } else {
            match d.send(Request::Withdraw { account: 1, amount }) {
                Ok(Reply::Moved { balance }) => {
                    expected -= amount;
                    assert_eq!(balance, expected);
                }
                Err(Reject::InsufficientFunds { available, .. }) => assert_eq!(available, expected),
                other => panic!("unexpected {other:?}"),
            }
        }
        assert!(expected >= 0);
    }
    assert_eq!(d.balance(1).0, expected);
}

#[test]
fn apply_batch_gives_the_same_outcomes_and_state_as_one_by_one() {
    let mut requests = vec![Request::ListInstrument {
        symbol: Symbol::new("ACME").unwrap(),
        supply: 30,
        price: 5,
    }];
    for i in 0..200u64 {
        let account = i % 13;
        requests.push(match i % 5 {
            0 => Request::OpenAccount { account },
            1 => Request::Deposit {
                account,
                amount: (i * 37 % 500) as i64 + 1,
            },
            2 => Request::Withdraw {
                account,
                amount: (i * 11 % 300) as i64 + 1,
            },
            3 => Request::Transfer {
                from: account,
                to: (i * 7) % 13,
                amount: 9,
            },
            _ => Request::Reserve {
                reservation: i,
                account,
                instrument: ACME,
                qty: i % 4 + 1,
                ttl_ms: 0,
                partial: true,
            },
        });
    }
    let batch: Vec<Stamped> = requests
        .iter()
        .enumerate()
        .map(|(i, &request)| {
            Stamped::new(
                Stamp {
                    seq: i as u64 + 1,
                    time_ms: 5,
                    session: 1,
                    req: i as u64 + 1,
                },
                request,
            )
        })
        .collect();
    let mut single = Ledger::default();
    let expected: Vec<Applied> = batch.iter().map(|s| single.apply(s)).collect();
    let mut batched = Ledger::default();
    let mut got = Vec::new();
    for chunk in batch.chunks(64) {
        batched.apply_batch(chunk, |_, applied| got.push(applied));
    }
    assert_eq!(got, expected);
    assert_eq!(batched.digest(), single.digest());
}

#[test]
fn rebate_larger_than_its_deposit_is_refused() {
    let mut d = Driver::new();
    d.open(1, 100);
    let job = d.ledger.pending_rebates().next().unwrap();
    let credit = Request::CreditRebate {
        deposit_seq: job.deposit_seq,
        amount: 101,
    };
    assert_eq!(
        d.stamped(9, 0, credit).outcome.unwrap_err().code(),
        ErrorCode::InvalidAmount
    );
    assert_eq!(d.ledger.pending_rebates_len(), 1);
}

/// Moves `account`'s balance up to exactly `balance` with deposits that each
/// leave room for their rebate, spread over helper accounts 900.. and
/// transferred in, so `account` itself owes no new rebate.
fn fill_to(d: &mut Driver, account: AccountId, balance: Units) {
    let mut helper = 900;
    while d.balance(account).0 < balance {
        let amount = (balance - d.balance(account).0).min(i64::MAX / 2);
        d.open(helper, amount);
        d.send(Request::Transfer {
            from: helper,
            to: account,
            amount,
        })
        .unwrap();
        helper += 1;
    }
}

#[test]
fn deposit_without_room_for_its_rebate_is_refused_and_changes_nothing() {
    let mut d = Driver::new();
    d.open(1, 0);
    let before = d.ledger.digest();
    // i64::MAX minor units: "92233720368547758.07" at scale 2.
    for amount in [i64::MAX, i64::MAX / 2 + 1] {
        let applied = d.stamped(9, 0, Request::Deposit { account: 1, amount });
        assert_eq!(applied.outcome.unwrap_err().code(), ErrorCode::Overflow);
        assert_eq!(applied.rebate, None);
    }
    assert_eq!(d.ledger.digest(), before);
    assert_eq!(d.ledger.pending_rebates_len(), 0);
    // The largest deposit whose rebate (at most the deposit) still fits.
    d.send(Request::Deposit {
        account: 1,
        amount: i64::MAX / 2,
    })
    .unwrap();
    assert_eq!(d.balance(1).0, i64::MAX / 2);
}

#[test]
fn rebate_refused_for_overflow_stays_owed_without_blocking_later_ones() {
    let mut d = Driver::new();
    d.open(1, 0);
    let stuck = d
        .full(Request::Deposit {
            account: 1,
            amount: 100,
        })
        .rebate
        .unwrap();
    d.open(2, 0);
    let later: Vec<_> = (0..3)
        .map(|_| {
            d.full(Request::Deposit {
                account: 2,
                amount: 1_000,
            })
            .rebate
            .unwrap()
        })
        .collect();
    // The balance grew after the deposit: its rebate no longer fits.
    fill_to(&mut d, 1, i64::MAX - 50);
    let helper_jobs: Vec<_> = d.ledger.pending_rebates().skip(4).collect();
    let credit = |job: RebateJob, amount| Request::CreditRebate {
        deposit_seq: job.deposit_seq,
        amount,
    };
    assert_eq!(d.code(credit(stuck, 100)), ErrorCode::Overflow);
    for job in later.iter().chain(&helper_jobs) {
        assert_eq!(
            d.send(credit(*job, 10)),
            Ok(Reply::RebateCredited { credited: true })
        );
    }
    // Every other rebate settled and left the queue; the refused one is
    // still owed, with its amount, but no longer dispatched.
    assert_eq!(d.ledger.pending_rebates_len(), 0);
    assert_eq!(d.ledger.pending_rebates().count(), 0);
    assert_eq!(d.ledger.rebates.queued_len(), 0);
    assert_eq!(
        d.ledger.unpaid_rebates().collect::<Vec<_>>(),
        vec![UnpaidRebate {
            job: stuck,
            amount: 100
        }]
    );
    assert_eq!(d.balance(1).0, i64::MAX - 50);
    // Once the balance has room, the same credit pays it, exactly once.
    d.send(Request::Withdraw {
        account: 1,
        amount: 1_000,
    })
    .unwrap();
    assert_eq!(
        d.send(credit(stuck, 100)),
        Ok(Reply::RebateCredited { credited: true })
    );
    assert_eq!(
        d.send(credit(stuck, 100)),
        Ok(Reply::RebateCredited { credited: false })
    );
    assert_eq!(d.ledger.unpaid_rebates().count(), 0);
    assert_eq!(d.balance(1).0, i64::MAX - 950);
}

#[test]
fn unpaid_rebates_are_in_the_digest_and_survive_a_snapshot() {
    let mut d = Driver::new();
    d.open(1, 100);
    let job = d.ledger.pending_rebates().next().unwrap();
    fill_to(&mut d, 1, i64::MAX);
    for job in d.ledger.pending_rebates().skip(1).collect::<Vec<_>>() {
        d.send(Request::CreditRebate {
            deposit_seq: job.deposit_seq,
            amount: 0,
        })
        .unwrap();
    }
    let owed = d.ledger.digest();
    d.code(Request::CreditRebate {
        deposit_seq: job.deposit_seq,
        amount: 1,
    });
    assert_ne!(
        d.ledger.digest(),
        owed,
        "the rebate moved from owed to unpaid"
    );
    let config = bincode::config::standard();
    let bytes = bincode::encode_to_vec(&d.ledger, config).unwrap();
    let (copy, _): (Ledger, usize) = bincode::decode_from_slice(&bytes, config).unwrap();
    assert_eq!(copy.digest(), d.ledger.digest());
    assert_eq!(copy.unpaid_rebates().count(), 1);
}

#[test]
fn closed_reservations_beyond_the_window_are_forgotten_oldest_first() {
    let mut d = Driver::with(LedgerConfig {
        closed_reservations_max: 3,
        ..LedgerConfig::default()
    });
    d.open(1, 10_000);
    d.list("ACME", 100, 10);
    for id in 1..=5 {
        d.reserve(id, 1, 1, 0, false).unwrap();
        d.send(if id % 2 == 0 {
            Request::Confirm { reservation: id }
        } else {
            Request::Cancel { reservation: id }
        })
        .unwrap();
        assert!(d.ledger.closed_reservations_len() <= 3);
    }
    assert_eq!(d.ledger.closed_reservations_len(), 3);
    for forgotten in [1, 2] {
        assert_eq!(
            d.send(Request::Confirm {
                reservation: forgotten
            }),
            Err(Reject::UnknownReservation {
                reservation: forgotten,
                closed: None
            })
        );
    }
    assert_eq!(
        d.send(Request::Confirm { reservation: 3 }),
        Err(Reject::UnknownReservation {
            reservation: 3,
            closed: Some(Closure::Cancelled)
        })
    );
    assert_eq!(
        d.reserve(4, 1, 1, 0, false).unwrap_err().code(),
        ErrorCode::ReservationExists
    );
    // A forgotten id may be used again.
    assert_eq!(d.reserve(1, 1, 1, 0, false), Ok(Reply::Reserved { qty: 1 }));
}

#[test]
fn closed_reservation_window_is_state_in_the_digest_and_snapshot() {
    let config = LedgerConfig {
        closed_reservations_max: 2,
        ..LedgerConfig::default()
    };
    let close_in = |order: [u64; 2]| {
        let mut d = Driver::with(config);
        d.open(1, 10_000);
        d.list("ACME", 100, 10);
        for id in [1, 2] {
            d.reserve(id, 1, 1, 0, false).unwrap();
        }
        for id in order {
            d.send(Request::Cancel { reservation: id }).unwrap();
        }
        d
    };
    let (mut a, b) = (close_in([1, 2]), close_in([2, 1]));
    // The same ids remembered, but a different one is forgotten next.
    assert_ne!(a.ledger.digest(), b.ledger.digest());
    let bincode_config = bincode::config::standard();
    let bytes = bincode::encode_to_vec(&a.ledger, bincode_config).unwrap();
    let (copy, _): (Ledger, usize) = bincode::decode_from_slice(&bytes, bincode_config).unwrap();
    assert_eq!(copy.digest(), a.ledger.digest());
    a.ledger = copy;
    a.reserve(3, 1, 1, 0, false).unwrap();
    a.send(Request::Cancel { reservation: 3 }).unwrap();
    assert_eq!(
        a.send(Request::Cancel { reservation: 1 }),
        Err(Reject::UnknownReservation {
            reservation: 1,
            closed: None
        })
    );
    assert_eq!(
        a.code(Request::Cancel { reservation: 2 }),
        ErrorCode::UnknownReservation
    );
}
