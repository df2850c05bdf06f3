//! Money at the edges: text or `Decimal` in, `Decimal` or text out, integer
//! minor units inside.
//!
//! The Ledger adds and compares `i64` minor units because Decimal arithmetic on
//! the hot path costs about twice as much per request. This module is the only
//! place that converts, so the rules (one textual form, `> 0`, at most `scale`
//! decimals, fits in an `i64`) are enforced once, before a request is ever
//! sequenced. Conversion is exact: text is read digit by digit into minor
//! units with checked arithmetic, never through a type that could round, so
//! an amount is never turned into one the client did not send.

use std::fmt;

use rust_decimal::Decimal;

/// Money in integer minor units at the ledger's scale (cents at scale 2).
pub type Units = i64;

/// The largest scale we accept: 10^18 still fits in an `i64`.
pub const SCALE_MAX: u32 = 18;

/// How much of a refused input a message quotes; a longer input is cut
/// there and marked with `…`, so one bad line cannot make a huge answer.
const QUOTED_CHARS_MAX: usize = 40;

/// Why an amount given at the edge was refused. Each message quotes the
/// input as given (escaped, cut after 40 characters).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AmountError {
    /// Not of the form `DIGITS` or `DIGITS.DIGITS`, zero, or more decimals
    /// than the scale allows.
    Invalid(String),
    /// A well-formed amount too large to hold in minor units.
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

/// `text` as a quoted, escaped string literal, cut after
/// [`QUOTED_CHARS_MAX`] characters: how messages show what a client sent.
pub(crate) fn quote(text: &str) -> String {
    match text.char_indices().nth(QUOTED_CHARS_MAX) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
    }
}

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

    /// Converts a positive amount with at most `places` significant decimals
    /// to minor units, exactly (`1.500` is 150 at scale 2: a `Decimal`'s
    /// trailing zeros carry no value). For library callers that hold a
    /// `Decimal`; text from outside goes through [`Scale::parse`].
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
        // mantissa × 10^(places − scale) is the amount in minor units exactly.
        10i128
            .checked_pow(self.places - normalized.scale())
            .and_then(|shift| normalized.mantissa().checked_mul(shift))
            .and_then(|units| Units::try_from(units).ok())
            .ok_or_else(|| {
                AmountError::Overflow(format!("amount {amount} is too large for this ledger"))
            })
    }

    /// Parses an amount in its one accepted form: `DIGITS` or
    /// `DIGITS.DIGITS` with 1 to `places` fraction digits (ASCII digits only;
    /// no sign, exponent, underscore, whitespace, or leading or trailing dot).
    /// Anything else, zero, or more fraction digits than `places` (even
    /// zeros) is [`AmountError::Invalid`]; a well-formed amount beyond `i64`
    /// minor units, however many digits it has, is [`AmountError::Overflow`].
    pub fn parse(self, text: &str) -> Result<Units, AmountError> {
        let (whole, fraction) = match text.split_once('.') {
            Some((whole, fraction)) => (whole, Some(fraction)),
            None => (text, None),
        };
        let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        if !digits(whole) || !fraction.is_none_or(digits) {
            let form = match self.places {
                0 => "digits only (this ledger has no decimal places)".to_string(),
                1 => "digits, optionally a dot and 1 decimal place".to_string(),
                n => format!("digits, optionally a dot and 1 to {n} decimal places"),
            };
            return Err(AmountError::Invalid(format!(
                "amount {} is not a plain decimal such as \"{}\": {form} (no sign, exponent, underscore or spaces)",
                quote(text),
                self.format(self.unit + self.unit / 2)
            )));
        }
        let fraction = fraction.unwrap_or("");
        if fraction.len() > self.places as usize {
            return Err(AmountError::Invalid(format!(
                "amount {} has more than {} decimal places",
                quote(text),
                self.places
            )));
        }
        // Every digit shifts the units left once; the fraction is padded
        // with zeros up to `places` digits.
        let padding = std::iter::repeat_n(b'0', self.places as usize - fraction.len());
        let units = whole
            .bytes()
            .chain(fraction.bytes())
            .chain(padding)
            .try_fold(0 as Units, |units, digit| {
                units
                    .checked_mul(10)?
                    .checked_add(Units::from(digit - b'0'))
            })
            .ok_or_else(|| {
                AmountError::Overflow(format!(
                    "amount {} is too large for this ledger (at most {})",
                    quote(text),
                    self.format(Units::MAX)
                ))
            })?;
        if units == 0 {
            return Err(AmountError::Invalid(format!(
                "amount {} must be greater than zero",
                quote(text)
            )));
        }
        Ok(units)
    }

    /// Minor units back to a Decimal with exactly `places` decimals.
    pub fn to_decimal(self, units: Units) -> Decimal {
        Decimal::new(units, self.places)
    }

    /// Minor units as text with exactly `places` decimals (`"10.50"`), as
    /// [`Scale::to_decimal`] prints, in integer arithmetic: `run` formats a
    /// balance in every answer.
    pub fn format(self, units: Units) -> String {
        let sign = if units < 0 { "-" } else { "" };
        let magnitude = units.unsigned_abs();
        let unit = self.unit as u64;
        let (whole, fraction) = (magnitude / unit, magnitude % unit);
        match self.places {
            0 => format!("{sign}{whole}"),
            places => format!("{sign}{whole}.{fraction:0width$}", width = places as usize),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dec(s: &str) -> Decimal {
        Decimal::from_str_exact(s).unwrap()
    }

    #[test]
    fn format_prints_what_the_decimal_prints_at_every_scale() {
        for places in 0..=SCALE_MAX {
            let scale = Scale::new(places).unwrap();
            let mut units: Vec<Units> = vec![0, 1, -1, 7, -7, 10, 99, 100, 101, -100, 123_456];
            units.extend([Units::MAX, Units::MIN, Units::MAX - 1, Units::MIN + 1]);
            units.extend(
                (0..19)
                    .map(|e| 10i64.pow(e))
                    .flat_map(|p| [p - 1, p, p + 1, -p]),
            );
            for units in units {
                assert_eq!(
                    scale.format(units),
                    scale.to_decimal(units).to_string(),
                    "{units} at {places} places"
                );
            }
        }
    }

    #[test]
    fn two_decimal_amount_converts_to_cents() {
        let scale = Scale::default();
        assert_eq!(scale.to_units(dec("10.50")), Ok(1050));
        assert_eq!(scale.parse("0.01"), Ok(1));
        assert_eq!(scale.parse("7"), Ok(700));
    }

    /// DESIGN: more fraction digits than the scale is `invalid_amount`, even
    /// when the extra digits are zeros (one accepted form per amount).
    #[test]
    fn fraction_digits_beyond_the_scale_are_invalid_even_when_zero() {
        let scale = Scale::default();
        assert!(matches!(scale.parse("1.500"), Err(AmountError::Invalid(_))));
        assert_eq!(scale.parse("1.50"), Ok(150));
        assert_eq!(scale.parse("1.5"), Ok(150));
        assert!(matches!(
            Scale::new(0).unwrap().parse("1.0"),
            Err(AmountError::Invalid(_))
        ));
    }

    /// Every input issue 9 found accepted (or rounded) must be refused.
    #[test]
    fn anything_but_digits_with_an_optional_short_fraction_is_invalid() {
        let scale = Scale::default();
        for bad in [
            "0.010000000000000000000000000000001",
            "1.00999999999999999999999999999",
            "0.01000000000000000000000000001",
            "1.004999999999999999999999999999",
            "1e5",
            "1E2",
            "1.5e1",
            "1e-2",
            "1_000",
            "1__0",
            "1.0_1",
            " 10",
            "10 ",
            "\t10",
            "10\n",
            "+10",
            "-10",
            ".5",
            "5.",
            ".",
            "1.005",
            "1..0",
            "1.0.0",
            "0x10",
            "１０",
            "٣",
            "NaN",
            "inf",
        ] {
            assert!(
                matches!(scale.parse(bad), Err(AmountError::Invalid(_))),
                "{bad:?} should be invalid_amount, got {:?}",
                scale.parse(bad)
            );
        }
    }

    #[test]
    fn leading_zeros_and_short_fractions_are_exact() {
        let scale = Scale::default();
        assert_eq!(scale.parse("007.5"), Ok(750));
        assert_eq!(scale.parse("0.1"), Ok(10));
        assert_eq!(
            scale.parse("00000000000000000000000000000000000001"),
            Ok(100)
        );
        let fine = Scale::new(18).unwrap();
        assert_eq!(fine.parse("9.223372036854775807"), Ok(i64::MAX));
        assert_eq!(fine.parse("0.000000000000000001"), Ok(1));
    }

    /// One code per cause: a well-formed amount too large is `overflow`
    /// however many digits it has.
    #[test]
    fn long_well_formed_amounts_overflow_rather_than_fail_to_parse() {
        let scale = Scale::default();
        for big in [
            "9".repeat(19),
            "9".repeat(32),
            "9".repeat(500),
            format!("{}.99", "9".repeat(40)),
        ] {
            assert!(
                matches!(scale.parse(&big), Err(AmountError::Overflow(_))),
                "{big} should overflow, got {:?}",
                scale.parse(&big)
            );
        }
    }

    #[test]
    fn messages_quote_the_input_as_given_and_cut_long_ones() {
        let scale = Scale::default();
        let message = scale
            .parse("1.004999999999999999999999999999")
            .unwrap_err()
            .to_string();
        assert!(
            message.contains("\"1.004999999999999999999999999999\""),
            "{message}"
        );
        let message = scale.parse("\t10").unwrap_err().to_string();
        assert!(message.contains(r#""\t10""#), "{message}");
        let long = "7".repeat(1000);
        let message = scale.parse(&long).unwrap_err().to_string();
        assert!(message.len() < 200, "{message}");
        assert!(
            message.contains(&format!("\"{}\"…", "7".repeat(40))),
            "{message}"
        );
    }

    #[test]
    fn to_units_is_exact_and_never_rounds() {
        let scale = Scale::default();
        assert_eq!(scale.to_units(dec("1.500")), Ok(150));
        for bad in ["1.0099999999999999999999999999", "0.001", "-1", "0"] {
            assert!(
                matches!(scale.to_units(dec(bad)), Err(AmountError::Invalid(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            scale.to_units(dec("92233720368547758.08")),
            Err(AmountError::Overflow(_))
        ));
        assert!(matches!(
            scale.to_units(Decimal::MAX),
            Err(AmountError::Overflow(_))
        ));
        assert_eq!(scale.to_units(dec("92233720368547758.07")), Ok(i64::MAX));
    }

    proptest::proptest! {
        #[test]
        fn formatted_units_parse_back_exactly(units in 1..=i64::MAX, places in 0..=SCALE_MAX) {
            let scale = Scale::new(places).unwrap();
            let text = scale.format(units);
            proptest::prop_assert_eq!(scale.parse(&text), Ok(units), "{}", text);
            proptest::prop_assert_eq!(scale.to_units(scale.to_decimal(units)), Ok(units));
        }

        #[test]
        fn any_text_is_accepted_exactly_or_refused(
            text in "[0-9._eE+ -]{0,30}|[0-9]{0,25}(\\.[0-9]{0,4})?|\\PC{0,12}",
            places in 0..=SCALE_MAX,
        ) {
            let scale = Scale::new(places).unwrap();
            match scale.parse(&text) {
                Ok(units) => {
                    // Accepted only in the one form, and it means exactly the text.
                    let (whole, fraction) = text.split_once('.').unwrap_or((&text, ""));
                    proptest::prop_assert!(units > 0);
                    proptest::prop_assert!(!whole.is_empty() && whole.bytes().all(|b| b.is_ascii_digit()));
                    proptest::prop_assert!(fraction.len() <= places as usize);
                    let expected = format!(
                        "{}{fraction:0<width$}",
                        whole.trim_start_matches('0'),
                        width = places as usize
                    );
                    proptest::prop_assert_eq!(
                        expected.trim_start_matches('0'),
                        units.to_string()
                    );
                }
                Err(AmountError::Overflow(_)) => {
                    let whole = text.split_once('.').map_or(text.as_str(), |(w, _)| w);
                    let significant = whole.trim_start_matches('0').len();
                    proptest::prop_assert!(significant + places as usize >= 19, "{} overflowed", text);
                }
                Err(AmountError::Invalid(_)) => {}
            }
        }
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
