//! Money at the edges: `Decimal` in, `Decimal` out, integer minor units inside.
//!
//! The Ledger adds and compares `i64` minor units because Decimal arithmetic on
//! the hot path costs about twice as much per request. This module is the only
//! place that converts, so the rules (`> 0`, at most `scale` decimals, fits in
//! an `i64`) are enforced once, before a request is ever sequenced.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;

/// Money in integer minor units at the ledger's scale (cents at scale 2).
pub type Units = i64;

/// The largest scale we accept: 10^18 still fits in an `i64`.
pub const SCALE_MAX: u32 = 18;

/// Why an amount given at the edge was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AmountError {
    /// Not a number, zero, negative, or more decimals than the scale allows.
    Invalid(String),
    /// A valid amount too large to hold in minor units.
    Overflow(String),
}

impl fmt::Display for AmountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AmountError::Invalid(m) | AmountError::Overflow(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for AmountError {}

/// The number of decimal places money carries, and the conversions at that scale.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Scale {
    places: u32,
    unit: i64,
}

impl Default for Scale {
    fn default() -> Self {
        Scale::new(2).expect("2 is a valid scale")
    }
}

impl Scale {
    /// A scale of `places` decimals (0 to [`SCALE_MAX`]).
    pub fn new(places: u32) -> Result<Scale, String> {
        if places > SCALE_MAX {
            return Err(format!(
                "scale {places} is too large: at most {SCALE_MAX} decimal places fit in 64-bit minor units"
            ));
        }
        Ok(Scale {
            places,
            unit: 10i64.pow(places),
        })
    }

    /// Decimal places.
    pub fn places(self) -> u32 {
        self.places
    }

    /// Minor units in one whole unit of money (100 at scale 2).
    pub fn unit(self) -> i64 {
        self.unit
    }

    /// Converts a positive amount with at most `places` decimals to minor units.
    pub fn to_units(self, amount: Decimal) -> Result<Units, AmountError> {
        if amount <= Decimal::ZERO {
            return Err(AmountError::Invalid(format!(
                "amount {amount} must be greater than zero"
            )));
        }
        let normalized = amount.normalize();
        if normalized.scale() > self.places {
            return Err(AmountError::Invalid(format!(
                "amount {amount} has more than {} decimal places",
                self.places
            )));
        }
        let units = normalized
            .checked_mul(Decimal::from(self.unit))
            .and_then(|d| i64::try_from(d).ok());
        units.ok_or_else(|| {
            AmountError::Overflow(format!("amount {amount} is too large for this ledger"))
        })
    }

    /// Parses text such as `"10.50"` and converts it like [`Scale::to_units`].
    pub fn parse(self, text: &str) -> Result<Units, AmountError> {
        let amount = Decimal::from_str(text.trim()).map_err(|_| {
            AmountError::Invalid(format!("amount {text:?} is not a decimal number"))
        })?;
        self.to_units(amount)
    }

    /// Minor units back to a Decimal with exactly `places` decimals.
    pub fn to_decimal(self, units: Units) -> Decimal {
        Decimal::new(units, self.places)
    }

    /// Minor units as text with exactly `places` decimals (`"10.50"`).
    pub fn format(self, units: Units) -> String {
        self.to_decimal(units).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str(s).unwrap()
    }

    #[test]
    fn two_decimal_amount_converts_to_cents() {
        let scale = Scale::default();
        assert_eq!(scale.to_units(dec("10.50")), Ok(1050));
        assert_eq!(scale.parse("0.01"), Ok(1));
        assert_eq!(scale.parse("7"), Ok(700));
    }

    #[test]
    fn trailing_zeros_are_not_extra_precision() {
        assert_eq!(Scale::default().parse("1.500"), Ok(150));
    }

    #[test]
    fn zero_negative_and_too_precise_amounts_are_invalid() {
        let scale = Scale::default();
        for bad in ["0", "0.00", "-1", "1.005", "abc", ""] {
            assert!(
                matches!(scale.parse(bad), Err(AmountError::Invalid(_))),
                "{bad} should be invalid"
            );
        }
    }

    #[test]
    fn amount_beyond_i64_minor_units_overflows() {
        assert!(matches!(
            Scale::default().parse("92233720368547758.08"),
            Err(AmountError::Overflow(_))
        ));
        assert_eq!(Scale::default().parse("92233720368547758.07"), Ok(i64::MAX));
    }

    #[test]
    fn units_format_with_exactly_scale_places() {
        let scale = Scale::default();
        assert_eq!(scale.format(1050), "10.50");
        assert_eq!(scale.format(5), "0.05");
        assert_eq!(Scale::new(0).unwrap().format(12), "12");
    }

    #[test]
    fn scale_above_eighteen_is_refused() {
        assert!(Scale::new(19).is_err());
        assert_eq!(Scale::new(18).unwrap().unit(), 1_000_000_000_000_000_000);
    }
}
