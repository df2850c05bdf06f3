//! What each gateway asks, as a pure function of (scenario, gateway, index):
//! every engine sees exactly the same operations in the same per-gateway
//! order, and a run can be repeated. No randomness crate: a splitmix64 hash
//! of the position is uniform enough for picking accounts and amounts, and
//! costs a few nanoseconds, far below what is being measured.

use std::fmt;
use std::str::FromStr;

use crate::money::Units;
use crate::request::{AccountId, ReservationId};

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
}

impl Scenario {
    pub const ALL: [Scenario; 4] = [
        Scenario::Deposit,
        Scenario::Mixed,
        Scenario::HotWallet,
        Scenario::ShareSale,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Scenario::Deposit => "deposit",
            Scenario::Mixed => "mixed",
            Scenario::HotWallet => "hot-wallet",
            Scenario::ShareSale => "share-sale",
        }
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
                    "unknown scenario {text:?}: expected deposit, mixed, hot-wallet or share-sale"
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

    /// The `index`-th operation of gateway `gateway`.
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
        }
    }
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
        for scenario in Scenario::ALL {
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
}
