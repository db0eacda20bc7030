//! Billing periods: a calendar month in UTC, keyed `YYYY-MM` as in the seed, optionally
//! starting on a subscription's own anchor day.
//!
//! A period with anchor day `d` runs from day `d` of its month, 00:00 UTC, to day `d` of the next
//! month. Months shorter than `d` days start on their last day instead (an anchor of 31 starts
//! February's period on the 28th or 29th). The key is the year and month the period starts in,
//! so consecutive periods always have distinct keys and limits reset at the boundary with no job.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Datelike, NaiveDate, TimeZone, Utc};
use serde::{Deserialize, Serialize};

/// The day of the month a subscription's periods start on (1 to 31; 1 is the calendar month).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u8", into = "u8")]
pub struct AnchorDay(u8);

impl AnchorDay {
    pub const CALENDAR_MONTH: AnchorDay = AnchorDay(1);

    pub fn new(day: u8) -> Result<AnchorDay, PeriodError> {
        if (1..=31).contains(&day) {
            Ok(AnchorDay(day))
        } else {
            Err(PeriodError::AnchorDay(day))
        }
    }

    pub fn get(self) -> u8 {
        self.0
    }
}

impl Default for AnchorDay {
    fn default() -> Self {
        AnchorDay::CALENDAR_MONTH
    }
}

impl TryFrom<u8> for AnchorDay {
    type Error = PeriodError;
    fn try_from(day: u8) -> Result<Self, Self::Error> {
        AnchorDay::new(day)
    }
}

impl From<AnchorDay> for u8 {
    fn from(day: AnchorDay) -> u8 {
        day.0
    }
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PeriodError {
    #[error("anchor day {0} is not a day of the month (expected 1 to 31)")]
    AnchorDay(u8),
    #[error("{0:?} is not a billing period (expected YYYY-MM, e.g. 2026-11)")]
    Key(String),
}

/// One billing period of a subscription.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct BillingPeriod {
    year: i32,
    /// 1 to 12.
    month: u32,
    anchor: AnchorDay,
}

impl BillingPeriod {
    /// The period that contains the instant `at`.
    pub fn containing(at: DateTime<Utc>, anchor: AnchorDay) -> BillingPeriod {
        let this_month = BillingPeriod {
            year: at.year(),
            month: at.month(),
            anchor,
        };
        if at.day() >= this_month.start_day() {
            this_month
        } else {
            this_month.previous()
        }
    }

    /// The calendar-month period with the given key.
    pub fn from_key(key: &str, anchor: AnchorDay) -> Result<BillingPeriod, PeriodError> {
        let bad = || PeriodError::Key(key.to_owned());
        let (year, month) = key.split_once('-').ok_or_else(bad)?;
        if year.len() != 4 || month.len() != 2 {
            return Err(bad());
        }
        let year: i32 = year.parse().map_err(|_| bad())?;
        let month: u32 = month.parse().map_err(|_| bad())?;
        if !(1..=12).contains(&month) {
            return Err(bad());
        }
        Ok(BillingPeriod {
            year,
            month,
            anchor,
        })
    }

    pub fn year(self) -> i32 {
        self.year
    }

    pub fn month(self) -> u32 {
        self.month
    }

    pub fn anchor(self) -> AnchorDay {
        self.anchor
    }

    /// `YYYY-MM` of the month the period starts in.
    pub fn key(self) -> String {
        self.to_string()
    }

    pub fn next(self) -> BillingPeriod {
        let (year, month) = if self.month == 12 {
            (self.year + 1, 1)
        } else {
            (self.year, self.month + 1)
        };
        BillingPeriod {
            year,
            month,
            anchor: self.anchor,
        }
    }

    pub fn previous(self) -> BillingPeriod {
        let (year, month) = if self.month == 1 {
            (self.year - 1, 12)
        } else {
            (self.year, self.month - 1)
        };
        BillingPeriod {
            year,
            month,
            anchor: self.anchor,
        }
    }

    /// The first instant of the period.
    pub fn start(self) -> DateTime<Utc> {
        midnight_utc(self.year, self.month, self.start_day())
    }

    /// The first instant after the period, i.e. the start of the next one.
    pub fn end(self) -> DateTime<Utc> {
        self.next().start()
    }

    /// Whole days in the period (28 to 31), for projections.
    pub fn days(self) -> u32 {
        let seconds = (self.end() - self.start()).num_seconds();
        u32::try_from(seconds / 86_400).unwrap_or(30)
    }

    /// Seconds from `now` until the period ends and its limits reset, rounded up so that a
    /// client told to retry after this many seconds lands in the next period; 0 once it has ended.
    pub fn seconds_until_reset(self, now: DateTime<Utc>) -> u64 {
        let remaining = self.end() - now;
        let millis = remaining.num_milliseconds();
        if millis <= 0 {
            0
        } else {
            u64::try_from(millis).unwrap_or(0).div_ceil(1000)
        }
    }

    /// The `n` periods ending with this one, oldest first: consecutive months, none skipped or
    /// repeated.
    pub fn last_n(self, n: usize) -> Vec<BillingPeriod> {
        let mut periods = Vec::with_capacity(n);
        let mut p = self;
        for _ in 0..n {
            periods.push(p);
            p = p.previous();
        }
        periods.reverse();
        periods
    }

    fn start_day(self) -> u32 {
        u32::from(self.anchor.0).min(days_in_month(self.year, self.month))
    }
}

impl fmt::Display for BillingPeriod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:04}-{:02}", self.year, self.month)
    }
}

impl FromStr for BillingPeriod {
    type Err = PeriodError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        BillingPeriod::from_key(s, AnchorDay::CALENDAR_MONTH)
    }
}

fn days_in_month(year: i32, month: u32) -> u32 {
    let (next_year, next_month) = if month == 12 {
        (year + 1, 1)
    } else {
        (year, month + 1)
    };
    match (
        NaiveDate::from_ymd_opt(year, month, 1),
        NaiveDate::from_ymd_opt(next_year, next_month, 1),
    ) {
        (Some(first), Some(next_first)) => {
            u32::try_from((next_first - first).num_days()).unwrap_or(28)
        }
        _ => 28,
    }
}

fn midnight_utc(year: i32, month: u32, day: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(year, month, day, 0, 0, 0)
        .single()
        // Unreachable for the dates this module builds (day ≤ days in month); the epoch keeps
        // this total without a panic.
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn calendar_month_bounds_and_key() {
        let p = BillingPeriod::containing(at("2026-11-28T03:29:00Z"), AnchorDay::default());
        assert_eq!(p.key(), "2026-11");
        assert_eq!(p.start(), at("2026-11-01T00:00:00Z"));
        assert_eq!(p.end(), at("2026-12-01T00:00:00Z"));
        assert_eq!(p.days(), 30);
        assert_eq!(
            p.seconds_until_reset(at("2026-11-30T23:59:59Z")),
            1,
            "one second before the boundary"
        );
        assert_eq!(p.seconds_until_reset(at("2026-11-30T23:59:59.5Z")), 1);
        assert_eq!(p.seconds_until_reset(at("2026-12-01T00:00:00Z")), 0);
    }

    #[test]
    fn december_rolls_into_next_year() {
        let p: BillingPeriod = "2026-12".parse().unwrap();
        assert_eq!(p.end(), at("2027-01-01T00:00:00Z"));
        assert_eq!(p.next().key(), "2027-01");
        assert_eq!(p.next().previous(), p);
    }

    #[test]
    fn anchor_day_31_starts_february_on_its_last_day() {
        let a = AnchorDay::new(31).unwrap();
        let p = BillingPeriod::containing(at("2028-02-29T12:00:00Z"), a);
        assert_eq!(p.key(), "2028-02");
        assert_eq!(p.start(), at("2028-02-29T00:00:00Z"));
        assert_eq!(p.end(), at("2028-03-31T00:00:00Z"));
        let before = BillingPeriod::containing(at("2028-02-28T23:00:00Z"), a);
        assert_eq!(before.key(), "2028-01");
        assert_eq!(before.end(), at("2028-02-29T00:00:00Z"));
    }

    #[test]
    fn anchor_day_15_period_spans_two_months() {
        let a = AnchorDay::new(15).unwrap();
        let p = BillingPeriod::containing(at("2026-01-03T00:00:00Z"), a);
        assert_eq!(p.key(), "2025-12");
        assert_eq!(p.start(), at("2025-12-15T00:00:00Z"));
        assert_eq!(p.end(), at("2026-01-15T00:00:00Z"));
    }

    #[test]
    fn trends_list_real_consecutive_months() {
        // The seed's `now - 30·i days` skipped February and repeated March on 2025-03-31.
        let p = BillingPeriod::containing(at("2025-03-31T10:00:00Z"), AnchorDay::default());
        let keys: Vec<String> = p.last_n(6).into_iter().map(BillingPeriod::key).collect();
        assert_eq!(
            keys,
            [
                "2024-10", "2024-11", "2024-12", "2025-01", "2025-02", "2025-03"
            ]
        );
    }

    #[test]
    fn bad_keys_and_anchors_are_refused() {
        for bad in ["2026-13", "2026-00", "26-01", "2026/01", "2026-1", "x"] {
            assert!(bad.parse::<BillingPeriod>().is_err(), "{bad}");
        }
        assert!(AnchorDay::new(0).is_err());
        assert!(AnchorDay::new(32).is_err());
    }

    proptest! {
        #[test]
        fn every_instant_is_inside_its_period(
            secs in 946_684_800i64..4_102_444_800, // 2000 to 2100
            anchor in 1u8..=31,
        ) {
            let now = DateTime::from_timestamp(secs, 0).unwrap();
            let p = BillingPeriod::containing(now, AnchorDay::new(anchor).unwrap());
            prop_assert!(p.start() <= now && now < p.end());
            prop_assert!((28..=31).contains(&p.days()));
            prop_assert_eq!(p.next().start(), p.end());
            prop_assert!(p.seconds_until_reset(now) > 0);
            prop_assert!(p.seconds_until_reset(now) <= 31 * 86_400);
            prop_assert_eq!(p.key().parse::<BillingPeriod>().unwrap().key(), p.key());
        }
    }
}
