//! Money as integers, and prices parsed from decimal text without ever passing through a float.
//!
//! Amounts of money are `u64` nano-USD (1e-9 USD), always named `*_nanousd`. A [`Rate`] is the
//! price of one unit (a token, a credit, an image, a request) in femto-USD (1e-15 USD), which is
//! the same number as "nano-USD per million units": every price a provider publishes per million
//! tokens with up to nine decimals is exact. A cost is the sum of `quantity × rate` in femto-USD
//! (`u128`, cannot overflow for any realistic input), converted to nano-USD by [`round_div`],
//! the one rounding step of the whole system.

use std::fmt;

/// Nano-USD in one USD.
pub const NANOUSD_PER_USD: u64 = 1_000_000_000;
/// Femto-USD in one nano-USD.
pub const FEMTOUSD_PER_NANOUSD: u128 = 1_000_000;

/// Divides and rounds half up. The only rounding in Tollgate's money arithmetic: every cost is
/// computed exactly in femto-USD and rounded once, here, to nano-USD. Returns 0 for a zero
/// denominator rather than panicking.
pub fn round_div(numerator: u128, denominator: u128) -> u128 {
    if denominator == 0 {
        return 0;
    }
    let quotient = numerator / denominator;
    let remainder = numerator % denominator;
    // `remainder >= denominator - remainder` is `2 * remainder >= denominator` without overflow.
    if remainder >= denominator - remainder {
        quotient + 1
    } else {
        quotient
    }
}

/// Renders nano-USD as a decimal dollar string with no float noise, trimming trailing zeros but
/// keeping at least two decimals: `19_000_000` → `"0.019"`, `2_500_000_000` → `"2.50"`.
pub fn format_usd(nanousd: u64) -> String {
    let whole = nanousd / NANOUSD_PER_USD;
    let frac = nanousd % NANOUSD_PER_USD;
    let mut frac_text = format!("{frac:09}");
    while frac_text.len() > 2 && frac_text.ends_with('0') {
        frac_text.pop();
    }
    format!("{whole}.{frac_text}")
}

/// Nano-USD as a JSON-friendly `f64` in dollars, for APIs that must emit numbers. Computed from
/// the integer in one division, so `19_000_000` gives exactly the double nearest to `0.019`.
pub fn nanousd_to_usd_f64(nanousd: u64) -> f64 {
    // u64 → f64 loses precision only above 2^53 nano-USD (~9 million USD), far beyond any bill.
    nanousd as f64 / NANOUSD_PER_USD as f64
}

/// The price of one unit in femto-USD (= nano-USD per million units).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rate {
    femtousd_per_unit: u64,
}

impl Rate {
    pub const ZERO: Rate = Rate {
        femtousd_per_unit: 0,
    };

    pub const fn from_femtousd_per_unit(femtousd_per_unit: u64) -> Self {
        Rate { femtousd_per_unit }
    }

    pub const fn femtousd_per_unit(self) -> u64 {
        self.femtousd_per_unit
    }

    /// A rate published in USD per million units (how token prices are published), e.g. `"2.50"`.
    pub fn per_million_from_decimal(text: &str) -> Result<Rate, DecimalError> {
        // USD per million units × 1e9 = nano-USD per million units = femto-USD per unit.
        Decimal::parse(text)?
            .to_scaled_exact(9)
            .map(Rate::from_femtousd_per_unit)
    }

    /// A rate published in USD per single unit (credits, images, requests), e.g. `"0.008"`.
    pub fn per_unit_from_decimal(text: &str) -> Result<Rate, DecimalError> {
        Decimal::parse(text)?
            .to_scaled_exact(15)
            .map(Rate::from_femtousd_per_unit)
    }

    /// The femto-USD cost of `quantity` units.
    pub fn times(self, quantity: u64) -> u128 {
        u128::from(quantity) * u128::from(self.femtousd_per_unit)
    }

    /// The rate as a decimal string of USD per million units, trailing zeros trimmed.
    pub fn per_million_text(self) -> String {
        scaled_text(u128::from(self.femtousd_per_unit), 9)
    }

    /// The rate as a decimal string of USD per unit, trailing zeros trimmed.
    pub fn per_unit_text(self) -> String {
        scaled_text(u128::from(self.femtousd_per_unit), 15)
    }
}

fn scaled_text(value: u128, scale: u32) -> String {
    let divisor = 10u128.pow(scale);
    let whole = value / divisor;
    let frac = value % divisor;
    if frac == 0 {
        return whole.to_string();
    }
    let mut frac_text = format!("{frac:0width$}", width = scale as usize);
    while frac_text.ends_with('0') {
        frac_text.pop();
    }
    format!("{whole}.{frac_text}")
}

/// Why a decimal could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecimalError {
    #[error("{0:?} is not a decimal number (expected digits such as 2.50 or 1.5e-6)")]
    Syntax(String),
    #[error("{0:?} is negative; prices and limits cannot be")]
    Negative(String),
    #[error("{0:?} is too large")]
    Overflow(String),
    #[error("{text:?} has more precision than {smallest} can hold")]
    TooPrecise {
        text: String,
        smallest: &'static str,
    },
}

/// A non-negative decimal number read exactly from text: `mantissa × 10^exponent`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decimal {
    mantissa: u128,
    exponent: i32,
}

impl Decimal {
    /// Reads `2.50`, `0.075`, `1e-6`, `2.9999900000000002e-06`, `+3`. Rejects negatives, NaN,
    /// infinities, empty strings and anything else that is not a plain decimal.
    pub fn parse(text: &str) -> Result<Decimal, DecimalError> {
        let syntax = || DecimalError::Syntax(text.to_owned());
        let trimmed = text.trim();
        let unsigned = match trimmed.as_bytes().first() {
            Some(b'-') => {
                let rest = trimmed.get(1..).unwrap_or_default();
                // "-0" is zero, not a negative price.
                return match Decimal::parse(rest) {
                    Ok(d) if d.mantissa == 0 => Ok(d),
                    Ok(_) => Err(DecimalError::Negative(text.to_owned())),
                    Err(_) => Err(syntax()),
                };
            }
            Some(b'+') => trimmed.get(1..).unwrap_or_default(),
            _ => trimmed,
        };
        let (number, exponent_text) = match unsigned.find(['e', 'E']) {
            Some(at) => (
                unsigned.get(..at).unwrap_or_default(),
                unsigned.get(at + 1..),
            ),
            None => (unsigned, None),
        };
        let (int_part, frac_part) = match number.split_once('.') {
            Some((i, f)) => (i, f),
            None => (number, ""),
        };
        if int_part.is_empty() && frac_part.is_empty() {
            return Err(syntax());
        }
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if !all_digits(int_part) || !all_digits(frac_part) {
            return Err(syntax());
        }
        let mut exponent: i64 = match exponent_text {
            Some(e) => {
                let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                if digits.is_empty() || !all_digits(digits) || digits.len() > 6 {
                    return Err(syntax());
                }
                e.parse::<i64>().map_err(|_| syntax())?
            }
            None => 0,
        };
        let mut mantissa: u128 = 0;
        let frac_len = frac_part.len() as i64;
        for b in int_part.bytes().chain(frac_part.bytes()) {
            let digit = u128::from(b - b'0');
            match mantissa.checked_mul(10).and_then(|m| m.checked_add(digit)) {
                Some(m) if m < 10u128.pow(36) => mantissa = m,
                // More than 36 significant digits: keep the magnitude and drop the digit, a
                // change far below a femto-USD for any price.
                _ => exponent += 1,
            }
        }
        exponent -= frac_len;
        let exponent = i32::try_from(exponent).map_err(|_| syntax())?;
        Ok(Decimal { mantissa, exponent })
    }

    pub fn is_zero(self) -> bool {
        self.mantissa == 0
    }

    /// The value times `10^scale` as an integer, exactly; an error if that would need rounding
    /// or exceeds `u64`.
    pub fn to_scaled_exact(self, scale: u32) -> Result<u64, DecimalError> {
        let (value, exact) = self.to_scaled(scale)?;
        if exact {
            Ok(value)
        } else {
            Err(DecimalError::TooPrecise {
                text: self.to_string(),
                smallest: match scale {
                    9 => "a nano-USD per million units",
                    15 => "a femto-USD",
                    _ => "the smallest unit",
                },
            })
        }
    }

    /// The value times `10^scale`, rounded by [`round_div`] when it has more digits than that,
    /// with a flag saying whether it was exact. Used to import float-noisy price files.
    pub fn to_scaled(self, scale: u32) -> Result<(u64, bool), DecimalError> {
        let overflow = || DecimalError::Overflow(self.to_string());
        if self.mantissa == 0 {
            return Ok((0, true));
        }
        let shift = i64::from(self.exponent) + i64::from(scale);
        let value = if shift >= 0 {
            let factor = u32::try_from(shift)
                .ok()
                .and_then(|s| 10u128.checked_pow(s))
                .ok_or_else(overflow)?;
            (
                self.mantissa.checked_mul(factor).ok_or_else(overflow)?,
                true,
            )
        } else {
            let divisor = u32::try_from(-shift)
                .ok()
                .and_then(|s| 10u128.checked_pow(s));
            match divisor {
                Some(d) => (round_div(self.mantissa, d), self.mantissa.is_multiple_of(d)),
                // Smaller than anything we can represent.
                None => (0, false),
            }
        };
        let scaled = u64::try_from(value.0).map_err(|_| overflow())?;
        Ok((scaled, value.1))
    }
}

impl fmt::Display for Decimal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}e{}", self.mantissa, self.exponent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn round_div_rounds_half_up() {
        assert_eq!(round_div(14, 10), 1);
        assert_eq!(round_div(15, 10), 2);
        assert_eq!(round_div(25, 10), 3);
        assert_eq!(round_div(0, 10), 0);
        assert_eq!(round_div(7, 0), 0);
        assert_eq!(round_div(u128::MAX, u128::MAX), 1);
        assert_eq!(round_div(u128::MAX, 2), u128::MAX / 2 + 1);
    }

    #[test]
    fn published_prices_parse_exactly() {
        let r = Rate::per_million_from_decimal("2.50").unwrap();
        assert_eq!(r.femtousd_per_unit(), 2_500_000_000);
        let r = Rate::per_million_from_decimal("0.01875").unwrap();
        assert_eq!(r.femtousd_per_unit(), 18_750_000);
        let r = Rate::per_unit_from_decimal("0.008").unwrap();
        assert_eq!(r.femtousd_per_unit(), 8_000_000_000_000);
        assert_eq!(r.per_unit_text(), "0.008");
        assert_eq!(
            Rate::per_million_from_decimal("3.75")
                .unwrap()
                .per_million_text(),
            "3.75"
        );
    }

    #[test]
    fn litellm_float_noise_rounds_away_when_not_exact() {
        // 2.9999900000000002e-06 USD per token, expressed per unit at femto scale.
        let d = Decimal::parse("2.9999900000000002e-06").unwrap();
        assert_eq!(d.to_scaled(15).unwrap(), (2_999_990_000, false));
        assert!(d.to_scaled_exact(15).is_err());
        let d = Decimal::parse("1.25e-06").unwrap();
        assert_eq!(d.to_scaled(15).unwrap(), (1_250_000_000, true));
    }

    #[test]
    fn bad_decimals_are_named() {
        assert!(matches!(
            Decimal::parse("-1"),
            Err(DecimalError::Negative(_))
        ));
        assert_eq!(
            Decimal::parse("-0").unwrap().to_scaled(9).unwrap(),
            (0, true)
        );
        for bad in [
            "", ".", "abc", "1.2.3", "1e", "nan", "inf", "1e+", "--1", "1 000",
        ] {
            assert!(
                matches!(Decimal::parse(bad), Err(DecimalError::Syntax(_))),
                "{bad:?}"
            );
        }
        assert!(matches!(
            Decimal::parse("1e30").unwrap().to_scaled(9),
            Err(DecimalError::Overflow(_))
        ));
        assert!(Decimal::parse("1e-999999").is_ok());
    }

    #[test]
    fn usd_formatting_has_no_float_noise() {
        assert_eq!(format_usd(19_000_000), "0.019");
        assert_eq!(format_usd(2_500_000_000), "2.50");
        assert_eq!(format_usd(0), "0.00");
        assert_eq!(format_usd(1), "0.000000001");
        assert_eq!(nanousd_to_usd_f64(19_000_000), 0.019);
    }

    proptest! {
        #[test]
        fn decimal_text_round_trips(whole in 0u64..1_000_000, frac in 0u64..1_000_000_000) {
            let text = format!("{whole}.{frac:09}");
            let scaled = Decimal::parse(&text).unwrap().to_scaled_exact(9).unwrap();
            prop_assert_eq!(scaled, whole * 1_000_000_000 + frac);
        }

        #[test]
        fn round_div_is_within_half(n in any::<u64>(), d in 1u64..u64::MAX) {
            let q = round_div(u128::from(n), u128::from(d));
            let exact = n as f64 / d as f64;
            prop_assert!((q as f64 - exact).abs() <= 0.5 + exact * 1e-12);
        }
    }
}
