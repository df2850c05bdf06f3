//! Each domain rule and error of the baselines, one thread at a time: the
//! same answers, in the same order of checks, as the Ledger gives. Every test
//! runs against both banks and ends with the invariant check.

use ringledger::baseline::{Bank, BankConfig, MutexBank, OptimisticBank};
use ringledger::outcome::Closure;
use ringledger::{InstrumentId, Reject, Symbol};

const PRICE: i64 = 250;

fn config() -> BankConfig {
    BankConfig {
        accounts_max: 8,
        instruments_max: 2,
        reservation_shards: 4,
        // Rules tests assert exact balances: no rebates arriving later.
        rebates: None,
    }
}

fn sym(text: &str) -> Symbol {
    Symbol::new(text).unwrap()
}

/// Accounts 1 and 2 with 1000 each, and ACME: 10 shares at `PRICE`.
fn set_up(bank: &dyn Bank) -> InstrumentId {
    bank.open_funded(1..3, 1_000).unwrap();
    bank.list_instrument(sym("ACME"), 10, PRICE).unwrap()
}

fn opening_an_open_account_is_refused(bank: &dyn Bank) {
    bank.open_account(7).unwrap();
    assert_eq!(bank.open_account(7), Err(Reject::AccountExists(7)));
    assert_eq!(bank.balance(7), Ok((0, 0)));
}

fn unknown_account_is_refused_before_the_amount_is_checked(bank: &dyn Bank) {
    set_up(bank);
    assert_eq!(bank.deposit(9, 0), Err(Reject::UnknownAccount(9)));
    assert_eq!(bank.withdraw(9, -1), Err(Reject::UnknownAccount(9)));
    assert_eq!(bank.balance(9), Err(Reject::UnknownAccount(9)));
    assert_eq!(bank.transfer(9, 1, 0), Err(Reject::UnknownAccount(9)));
    assert_eq!(bank.transfer(1, 9, 0), Err(Reject::UnknownAccount(9)));
}

fn zero_or_negative_amounts_are_invalid(bank: &dyn Bank) {
    set_up(bank);
    for amount in [0, -1, i64::MIN] {
        assert!(matches!(
            bank.deposit(1, amount),
            Err(Reject::InvalidAmount(_))
        ));
        assert!(matches!(
            bank.withdraw(1, amount),
            Err(Reject::InvalidAmount(_))
        ));
        assert!(matches!(
            bank.transfer(1, 2, amount),
            Err(Reject::InvalidAmount(_))
        ));
    }
    assert_eq!(bank.balance(1), Ok((1_000, 0)));
}

fn deposit_and_withdraw_answer_the_balance_after(bank: &dyn Bank) {
    set_up(bank);
    assert_eq!(bank.deposit(1, 50), Ok(1_050));
    assert_eq!(bank.withdraw(1, 1_050), Ok(0));
    assert_eq!(bank.balance(1), Ok((0, 0)));
}

fn withdraw_more_than_available_is_rejected(bank: &dyn Bank) {
    let acme = set_up(bank);
    assert_eq!(
        bank.withdraw(1, 1_001),
        Err(Reject::InsufficientFunds {
            account: 1,
            available: 1_000,
            requested: 1_001
        })
    );
    // Held cash is not available: 2 shares hold 500 of the 1000.
    assert_eq!(bank.reserve(1, 1, acme, 2, false), Ok(2));
    assert_eq!(
        bank.withdraw(1, 501),
        Err(Reject::InsufficientFunds {
            account: 1,
            available: 500,
            requested: 501
        })
    );
    assert_eq!(bank.balance(1), Ok((1_000, 500)));
}

fn deposit_beyond_i64_overflows_and_changes_nothing(bank: &dyn Bank) {
    bank.open_account(1).unwrap();
    assert_eq!(bank.deposit(1, i64::MAX), Ok(i64::MAX));
    assert_eq!(bank.deposit(1, 1), Err(Reject::Overflow("the balance")));
    assert_eq!(bank.balance(1), Ok((i64::MAX, 0)));
}

fn transfer_moves_money_between_two_wallets(bank: &dyn Bank) {
    set_up(bank);
    assert_eq!(bank.transfer(1, 2, 300), Ok(()));
    assert_eq!(bank.balance(1), Ok((700, 0)));
    assert_eq!(bank.balance(2), Ok((1_300, 0)));
    assert_eq!(bank.transfer(2, 1, 1_300), Ok(()));
    assert_eq!(bank.balance(2), Ok((0, 0)));
}

fn transfer_checks_funds_before_the_receivers_overflow(bank: &dyn Bank) {
    set_up(bank);
    bank.open_account(3).unwrap();
    bank.deposit(3, i64::MAX).unwrap();
    assert!(matches!(
        bank.transfer(1, 3, 1_001),
        Err(Reject::InsufficientFunds { .. })
    ));
    assert_eq!(
        bank.transfer(1, 3, 1),
        Err(Reject::Overflow("the receiving balance"))
    );
    assert_eq!(bank.balance(1), Ok((1_000, 0)));
    assert_eq!(bank.balance(3), Ok((i64::MAX, 0)));
}

fn transfer_to_the_same_account_is_a_checked_no_op(bank: &dyn Bank) {
    set_up(bank);
    assert_eq!(bank.transfer(1, 1, 1_000), Ok(()));
    assert!(matches!(
        bank.transfer(1, 1, 1_001),
        Err(Reject::InsufficientFunds { .. })
    ));
    assert_eq!(bank.balance(1), Ok((1_000, 0)));
}

fn accounts_beyond_the_table_overflow(bank: &dyn Bank) {
    // Ids past the direct table go through the sparse map but still take a slot.
    bank.open_account(u64::MAX).unwrap();
    bank.deposit(u64::MAX, 5).unwrap();
    for id in 0..7 {
        bank.open_account(id).unwrap();
    }
    assert_eq!(
        bank.open_account(100),
        Err(Reject::Overflow("the number of accounts"))
    );
    assert_eq!(bank.balance(u64::MAX), Ok((5, 0)));
    assert_eq!(bank.balance(100), Err(Reject::UnknownAccount(100)));
}

fn listing_checks_symbol_supply_price_and_room(bank: &dyn Bank) {
    assert_eq!(bank.list_instrument(sym("A"), 1, 1), Ok(InstrumentId(0)));
    assert_eq!(
        bank.list_instrument(sym("A"), 0, 0),
        Err(Reject::InstrumentExists(sym("A")))
    );
    assert!(matches!(
        bank.list_instrument(sym("B"), 0, 1),
        Err(Reject::InvalidAmount(_))
    ));
    assert!(matches!(
        bank.list_instrument(sym("B"), 1, 0),
        Err(Reject::InvalidAmount(_))
    ));
    assert_eq!(bank.list_instrument(sym("B"), 1, 1), Ok(InstrumentId(1)));
    assert_eq!(
        bank.list_instrument(sym("C"), 1, 1),
        Err(Reject::Overflow("the number of instruments"))
    );
    assert_eq!(
        bank.instrument(InstrumentId(2)),
        Err(Reject::UnknownInstrument(InstrumentId(2)))
    );
    let view = bank.instrument(InstrumentId(1)).unwrap();
    assert_eq!((view.symbol, view.supply, view.available), (sym("B"), 1, 1));
}

fn reserve_checks_in_the_ledgers_order(bank: &dyn Bank) {
    let acme = set_up(bank);
    assert_eq!(bank.reserve(1, 1, acme, 1, false), Ok(1));
    assert_eq!(
        bank.reserve(1, 9, InstrumentId(7), 0, false),
        Err(Reject::ReservationExists(1))
    );
    assert_eq!(
        bank.reserve(2, 9, InstrumentId(7), 0, false),
        Err(Reject::UnknownAccount(9))
    );
    assert_eq!(
        bank.reserve(2, 1, InstrumentId(7), 0, false),
        Err(Reject::UnknownInstrument(InstrumentId(7)))
    );
    assert!(matches!(
        bank.reserve(2, 1, acme, 0, false),
        Err(Reject::InvalidAmount(_))
    ));
    assert_eq!(
        bank.reserve(2, 1, acme, 10, false),
        Err(Reject::InsufficientShares {
            instrument: acme,
            available: 9,
            requested: 10
        })
    );
    // 4 more shares would cost 1000 with 750 available.
    assert_eq!(
        bank.reserve(2, 1, acme, 4, false),
        Err(Reject::InsufficientFunds {
            account: 1,
            available: 750,
            requested: 1_000
        })
    );
    // The refused ids were not taken.
    assert_eq!(bank.reserve(2, 1, acme, 3, false), Ok(3));
    let view = bank.instrument(acme).unwrap();
    assert_eq!((view.available, view.reserved, view.sold), (6, 4, 0));
    assert_eq!(bank.balance(1), Ok((1_000, 1_000)));
}

fn refused_for_funds_returns_the_shares(bank: &dyn Bank) {
    let acme = set_up(bank);
    assert!(matches!(
        bank.reserve(1, 1, acme, 5, false),
        Err(Reject::InsufficientFunds { .. })
    ));
    let view = bank.instrument(acme).unwrap();
    assert_eq!((view.available, view.reserved), (10, 0));
}

fn partial_reserve_takes_what_is_left(bank: &dyn Bank) {
    let acme = set_up(bank);
    bank.deposit(1, 10_000).unwrap();
    assert_eq!(bank.reserve(1, 1, acme, 8, false), Ok(8));
    assert_eq!(bank.reserve(2, 2, acme, 5, true), Ok(2));
    assert_eq!(bank.balance(2), Ok((1_000, 2 * PRICE)));
    assert_eq!(
        bank.reserve(3, 2, acme, 1, true),
        Err(Reject::InsufficientShares {
            instrument: acme,
            available: 0,
            requested: 1
        })
    );
}

fn reservation_cost_beyond_i64_overflows(bank: &dyn Bank) {
    bank.open_account(1).unwrap();
    let big = bank.list_instrument(sym("BIG"), u64::MAX, 2).unwrap();
    assert_eq!(
        bank.reserve(1, 1, big, u64::MAX / 2 + 1, false),
        Err(Reject::Overflow("the reservation's cost"))
    );
}

fn confirm_sells_the_shares_and_debits_the_cash(bank: &dyn Bank) {
    let acme = set_up(bank);
    bank.reserve(1, 1, acme, 2, false).unwrap();
    assert_eq!(bank.confirm(1), Ok(()));
    assert_eq!(bank.balance(1), Ok((500, 0)));
    let view = bank.instrument(acme).unwrap();
    assert_eq!((view.available, view.reserved, view.sold), (8, 0, 2));
    assert_eq!(
        bank.confirm(1),
        Err(Reject::UnknownReservation {
            reservation: 1,
            closed: Some(Closure::Confirmed)
        })
    );
    assert_eq!(
        bank.cancel(1),
        Err(Reject::UnknownReservation {
            reservation: 1,
            closed: Some(Closure::Confirmed)
        })
    );
    assert_eq!(
        bank.reserve(1, 1, acme, 1, false),
        Err(Reject::ReservationExists(1))
    );
}

fn cancel_returns_the_shares_and_the_cash(bank: &dyn Bank) {
    let acme = set_up(bank);
    bank.reserve(5, 2, acme, 4, false).unwrap();
    assert_eq!(bank.cancel(5), Ok(()));
    assert_eq!(bank.balance(2), Ok((1_000, 0)));
    let view = bank.instrument(acme).unwrap();
    assert_eq!((view.available, view.reserved, view.sold), (10, 0, 0));
    assert_eq!(
        bank.confirm(5),
        Err(Reject::UnknownReservation {
            reservation: 5,
            closed: Some(Closure::Cancelled)
        })
    );
    assert_eq!(
        bank.reserve(5, 2, acme, 1, false),
        Err(Reject::ReservationExists(5))
    );
}

fn unknown_reservation_is_refused(bank: &dyn Bank) {
    set_up(bank);
    let unknown = Err(Reject::UnknownReservation {
        reservation: 42,
        closed: None,
    });
    assert_eq!(bank.confirm(42), unknown);
    assert_eq!(bank.cancel(42), unknown);
}

macro_rules! for_each_bank {
    ($($rule:ident),* $(,)?) => {
        mod mutex_bank {
            use super::*;
            $(
                #[test]
                fn $rule() {
                    let bank = MutexBank::new(config(), None);
                    super::$rule(&bank);
                    bank.check_invariants().unwrap();
                    assert_eq!(bank.retries(), 0);
                }
            )*
        }
        mod optimistic_bank {
            use super::*;
            $(
                #[test]
                fn $rule() {
                    let bank = OptimisticBank::new(config(), None);
                    super::$rule(&bank);
                    bank.check_invariants().unwrap();
                    assert_eq!(bank.retries(), 0, "one thread never conflicts");
                }
            )*
        }
    };
}

for_each_bank!(
    opening_an_open_account_is_refused,
    unknown_account_is_refused_before_the_amount_is_checked,
    zero_or_negative_amounts_are_invalid,
    deposit_and_withdraw_answer_the_balance_after,
    withdraw_more_than_available_is_rejected,
    deposit_beyond_i64_overflows_and_changes_nothing,
    transfer_moves_money_between_two_wallets,
    transfer_checks_funds_before_the_receivers_overflow,
    transfer_to_the_same_account_is_a_checked_no_op,
    accounts_beyond_the_table_overflow,
    listing_checks_symbol_supply_price_and_room,
    reserve_checks_in_the_ledgers_order,
    refused_for_funds_returns_the_shares,
    partial_reserve_takes_what_is_left,
    reservation_cost_beyond_i64_overflows,
    confirm_sells_the_shares_and_debits_the_cash,
    cancel_returns_the_shares_and_the_cash,
    unknown_reservation_is_refused,
);
