//! Rebates: every deposit earns one, computed off the business thread.
//!
//! The Ledger records a [`RebateJob`] for each deposit and keeps it pending
//! until a `CreditRebate` for that deposit's sequence number arrives; the
//! computation itself (a [`RebatePolicy`]) runs on the side thread, so a slow
//! or elaborate policy never delays the sequenced path.

use bincode::{Decode, Encode};
use rust_decimal::prelude::ToPrimitive;
use rust_decimal::Decimal;

use crate::money::Units;
use crate::request::AccountId;

/// A deposit whose rebate is still owed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Encode, Decode)]
pub struct RebateJob {
    /// The deposit's sequence number: the rebate's identity, so a credit can
    /// be matched (and a repeated one ignored) even across a restart.
    pub deposit_seq: u64,
    pub account: AccountId,
    /// The deposited amount, in minor units.
    pub amount: Units,
}

/// Computes the rebate for a deposit. Runs on the rebate side thread.
///
/// Must return a value in `0..=deposit` (minor units at the ledger's scale);
/// anything else is treated as zero by the side thread.
pub trait RebatePolicy: Send + 'static {
    fn rebate(&self, job: &RebateJob) -> Units;
}

/// `rate × deposit`, rounded toward zero to the money scale (the default is 1%).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RateRebate {
    rate: Decimal,
}

impl RateRebate {
    /// A rate between 0 and 1 inclusive (`0.01` for 1%).
    pub fn new(rate: Decimal) -> Result<RateRebate, String> {
        if rate < Decimal::ZERO || rate > Decimal::ONE {
            return Err(format!("rebate rate {rate} must be between 0 and 1"));
        }
        Ok(RateRebate { rate })
    }

    pub fn rate(&self) -> Decimal {
        self.rate
    }
}

impl Default for RateRebate {
    fn default() -> Self {
        RateRebate {
            rate: Decimal::new(1, 2),
        }
    }
}

impl RebatePolicy for RateRebate {
    fn rebate(&self, job: &RebateJob) -> Units {
        // Minor units are already at the money scale, so truncating the
        // product rounds toward zero at that scale. A rate ≤ 1 cannot exceed
        // the deposit, so the product always fits.
        (Decimal::from(job.amount) * self.rate)
            .trunc()
            .to_i64()
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::str::FromStr;

    fn job(amount: Units) -> RebateJob {
        RebateJob {
            deposit_seq: 1,
            account: 1,
            amount,
        }
    }

    #[test]
    fn default_rebate_is_one_percent_rounded_toward_zero() {
        let policy = RateRebate::default();
        assert_eq!(policy.rebate(&job(10_000)), 100); // 100.00 → 1.00
        assert_eq!(policy.rebate(&job(1_099)), 10); // 10.99 → 0.1099 → 0.10
        assert_eq!(policy.rebate(&job(99)), 0); // 0.99 → 0.0099 → 0.00
    }

    #[test]
    fn rebate_of_the_largest_deposit_fits() {
        assert_eq!(
            RateRebate::new(Decimal::ONE)
                .unwrap()
                .rebate(&job(i64::MAX)),
            i64::MAX
        );
    }

    #[test]
    fn rate_outside_zero_to_one_is_refused() {
        assert!(RateRebate::new(Decimal::from_str("-0.01").unwrap()).is_err());
        assert!(RateRebate::new(Decimal::from_str("1.5").unwrap()).is_err());
        assert!(RateRebate::new(Decimal::ZERO).is_ok());
    }
}
