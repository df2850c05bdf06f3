//! The baselines under real contention: many threads on one wallet, many
//! buyers on one small share sale, random transfers and reservations among a
//! few accounts. Only outcomes are asserted, never timing; every run ends
//! with the bank's invariant check at quiescence.

use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;

use ringledger::baseline::{Bank, BankConfig, MutexBank, OptimisticBank};
use ringledger::{Reject, Symbol};

const THREADS: u64 = 8;

/// A small deterministic generator (xorshift64*), one per thread.
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n
    }
}

fn config() -> BankConfig {
    BankConfig {
        accounts_max: 2_048,
        instruments_max: 4,
        reservation_shards: 64,
        rebates: None,
    }
}

fn one_wallet_keeps_exactly_the_accepted_operations(bank: &dyn Bank) {
    const OPS: u64 = 10_000;
    bank.open_account(0).unwrap();
    let accepted_net: i64 = thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                scope.spawn(move || {
                    let mut rng = Rng::new(t + 1);
                    let mut net = 0i64;
                    for _ in 0..OPS {
                        let amount = 1 + rng.below(100) as i64;
                        if rng.below(2) == 0 {
                            let balance = bank.deposit(0, amount).unwrap();
                            assert!(balance >= amount);
                            net += amount;
                        } else {
                            match bank.withdraw(0, amount) {
                                Ok(balance) => {
                                    assert!(balance >= 0, "balance went negative: {balance}");
                                    net -= amount;
                                }
                                Err(Reject::InsufficientFunds { available, .. }) => {
                                    assert!(available < amount)
                                }
                                Err(other) => panic!("unexpected refusal {other:?}"),
                            }
                        }
                    }
                    net
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert_eq!(bank.balance(0), Ok((accepted_net, 0)));
    bank.check_invariants().unwrap();
}

fn a_hundred_shares_go_to_exactly_a_hundred_asks(bank: &dyn Bank) {
    const BUYERS: u64 = 1_000;
    const SUPPLY: u64 = 100;
    const PRICE: i64 = 700;
    bank.open_funded(0..BUYERS, 10 * PRICE).unwrap();
    let sale = bank
        .list_instrument(Symbol::new("HOT").unwrap(), SUPPLY, PRICE)
        .unwrap();
    let taken_total: u64 = thread::scope(|scope| {
        let workers: Vec<_> = (0..THREADS)
            .map(|t| {
                scope.spawn(move || {
                    let mut rng = Rng::new(t + 100);
                    let mut taken_total = 0;
                    for buyer in (t..BUYERS).step_by(THREADS as usize) {
                        let asked = 1 + rng.below(3);
                        let partial = rng.below(2) == 0;
                        match bank.reserve(buyer, buyer, sale, asked, partial) {
                            Ok(taken) => {
                                assert!(taken >= 1 && taken <= asked, "took {taken} of {asked}");
                                assert!(partial || taken == asked);
                                assert_eq!(
                                    bank.balance(buyer),
                                    Ok((10 * PRICE, taken as i64 * PRICE))
                                );
                                taken_total += taken;
                            }
                            Err(Reject::InsufficientShares { requested, .. }) => {
                                assert_eq!(requested, asked);
                                assert_eq!(bank.balance(buyer), Ok((10 * PRICE, 0)));
                            }
                            Err(other) => panic!("unexpected refusal {other:?}"),
                        }
                    }
                    taken_total
                })
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap()).sum()
    });
    assert_eq!(taken_total, SUPPLY);
    let view = bank.instrument(sale).unwrap();
    assert_eq!((view.available, view.reserved, view.sold), (0, SUPPLY, 0));
    let held: i64 = (0..BUYERS).map(|b| bank.balance(b).unwrap().1).sum();
    assert_eq!(held, SUPPLY as i64 * PRICE);
    bank.check_invariants().unwrap();
}

fn random_transfers_conserve_money(bank: &dyn Bank) {
    const ACCOUNTS: u64 = 16;
    const OPS: u64 = 20_000;
    const START: i64 = 10_000;
    bank.open_funded(0..ACCOUNTS, START).unwrap();
    let refused = AtomicU64::new(0);
    thread::scope(|scope| {
        for t in 0..THREADS {
            let refused = &refused;
            scope.spawn(move || {
                let mut rng = Rng::new(t + 1_000);
                for _ in 0..OPS {
                    let from = rng.below(ACCOUNTS);
                    let to = rng.below(ACCOUNTS);
                    let amount = 1 + rng.below(3 * START as u64) as i64;
                    match bank.transfer(from, to, amount) {
                        Ok(()) => {}
                        Err(Reject::InsufficientFunds { .. }) => {
                            refused.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(other) => panic!("unexpected refusal {other:?}"),
                    }
                }
            });
        }
    });
    assert!(
        refused.load(Ordering::Relaxed) > 0,
        "the workload never ran dry"
    );
    let total: i64 = (0..ACCOUNTS)
        .map(|a| {
            let (balance, held) = bank.balance(a).unwrap();
            assert!(balance >= 0);
            assert_eq!(held, 0);
            balance
        })
        .sum();
    assert_eq!(total, ACCOUNTS as i64 * START);
    bank.check_invariants().unwrap();
}

/// Reservations, confirmations, cancellations and transfers all at once,
/// each thread settling the reservations it made.
fn mixed_sale_and_transfers_keep_every_invariant(bank: &dyn Bank) {
    const ACCOUNTS: u64 = 32;
    const OPS: u64 = 5_000;
    bank.open_funded(0..ACCOUNTS, 5_000).unwrap();
    let sale = bank
        .list_instrument(Symbol::new("MIX").unwrap(), 500, 30)
        .unwrap();
    thread::scope(|scope| {
        for t in 0..THREADS {
            scope.spawn(move || {
                let mut rng = Rng::new(t + 5_000);
                let mut open = Vec::new();
                for i in 0..OPS {
                    let account = rng.below(ACCOUNTS);
                    match rng.below(4) {
                        0 => {
                            let id = t * OPS + i;
                            let partial = rng.below(2) == 0;
                            if bank
                                .reserve(id, account, sale, 1 + rng.below(20), partial)
                                .is_ok()
                            {
                                open.push(id);
                            }
                        }
                        1 if !open.is_empty() => {
                            let id = open.swap_remove(rng.below(open.len() as u64) as usize);
                            if rng.below(2) == 0 {
                                bank.confirm(id).unwrap();
                            } else {
                                bank.cancel(id).unwrap();
                            }
                        }
                        2 => {
                            let _ = bank.transfer(
                                account,
                                rng.below(ACCOUNTS),
                                1 + rng.below(500) as i64,
                            );
                        }
                        _ => {
                            bank.deposit(account, 1 + rng.below(100) as i64).unwrap();
                        }
                    }
                }
            });
        }
    });
    let view = bank.instrument(sale).unwrap();
    assert_eq!(view.available + view.reserved + view.sold, 500);
    bank.check_invariants().unwrap();
}

macro_rules! for_each_bank {
    ($($scenario:ident),* $(,)?) => {
        mod mutex_bank {
            use super::*;
            $(
                #[test]
                fn $scenario() {
                    let bank = MutexBank::new(config(), None);
                    super::$scenario(&bank);
                    assert_eq!(bank.retries(), 0);
                }
            )*
        }
        mod optimistic_bank {
            use super::*;
            $(
                #[test]
                fn $scenario() {
                    super::$scenario(&OptimisticBank::new(config(), None));
                }
            )*
        }
    };
}

for_each_bank!(
    one_wallet_keeps_exactly_the_accepted_operations,
    a_hundred_shares_go_to_exactly_a_hundred_asks,
    random_transfers_conserve_money,
    mixed_sale_and_transfers_keep_every_invariant,
);
