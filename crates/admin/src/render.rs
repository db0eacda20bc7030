//! How numbers and times go out on the wire: dollars computed once from integer nano-USD,
//! percentages from integers, and ISO 8601 UTC timestamps with a `Z`.
//!
//! A dollar amount is `nanousd / 1e9` in one correctly rounded division, and JSON prints the
//! shortest decimal that reads back as that double — which is the exact decimal whenever it
//! has at most nine places, so `19_000_000` goes out as `0.019`, never `0.01900000000000001`.

use chrono::{DateTime, SecondsFormat, Utc};
use tollgate_domain::money::nanousd_to_usd_f64;
use tollgate_domain::round_div;

/// Nano-USD as dollars.
pub fn dollars(nanousd: u64) -> f64 {
    nanousd_to_usd_f64(nanousd)
}

/// [`dollars`] of an amount as the ledger stores it (a signed column; never negative).
pub fn stored_dollars(nanousd: i64) -> f64 {
    dollars(u64::try_from(nanousd).unwrap_or(0))
}

/// Nano-USD rounded half up to whole cents, as dollars (the seed's 2-decimal projections).
pub fn dollars_to_cents(nanousd: u128) -> f64 {
    let cents = round_div(nanousd, 10_000_000);
    cents as f64 / 100.0
}

/// Femto-USD per unit (a [`tollgate_domain::Rate`]) as dollars per unit.
pub fn dollars_per_unit(femtousd: u64) -> f64 {
    femtousd as f64 / 1e15
}

/// `used / max × 100` with two decimals, computed in integers; 0 when there is no limit.
pub fn percent(used: u64, max: u64) -> f64 {
    if max == 0 {
        return 0.0;
    }
    let hundredths = round_div(u128::from(used) * 10_000, u128::from(max));
    hundredths as f64 / 100.0
}

/// A timestamp as ISO 8601 in UTC with a `Z` (JavaScript reads it as UTC, unlike the seed's).
pub fn iso(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// Milliseconds as seconds (the seed's `response_time` unit).
pub fn seconds(ms: f64) -> f64 {
    ms.round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn money_has_no_float_noise() {
        for (nanos, text) in [
            (19_000_000u64, "0.019"),
            (15_750_000_000, "15.75"),
            (1, "1e-9"),
            (813_000, "0.000813"),
            (2_000_000_000, "2.0"),
            (0, "0.0"),
        ] {
            assert_eq!(serde_json::to_string(&dollars(nanos)).unwrap(), text);
        }
        assert_eq!(
            serde_json::to_string(&dollars_to_cents(47_254_999_999)).unwrap(),
            "47.25"
        );
        assert_eq!(
            serde_json::to_string(&dollars_per_unit(3_000_000_000)).unwrap(),
            "3e-6"
        );
    }

    #[test]
    fn percentages_are_exact_to_two_places() {
        assert_eq!(percent(1, 3), 33.33);
        assert_eq!(percent(2, 3), 66.67);
        assert_eq!(percent(16, 20), 80.0);
        assert_eq!(percent(5, 0), 0.0);
        assert_eq!(percent(30, 20), 150.0);
    }

    #[test]
    fn timestamps_are_utc_with_z() {
        let at: DateTime<Utc> = "2026-11-28T02:15:20.346904Z".parse().unwrap();
        assert_eq!(iso(at), "2026-11-28T02:15:20.346Z");
    }
}
