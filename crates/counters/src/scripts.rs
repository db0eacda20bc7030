//! The counter scripts (`scripts/*.lua`) and the translation between Rust values and their
//! keys, arguments and replies. Pure: no I/O here, so the encoding is unit-tested without Redis.
//!
//! Every operation checks and updates all the counters of one user-period atomically, in a
//! script; nothing is read in Rust and written back. Reserves and settles share one script, so
//! that an instance can send several in one call. Both keys of a user-period carry the
//! hash tag `{u:<user>}`, so on Redis Cluster they live in one slot and the scripts run there.

use chrono::{DateTime, Utc};
use tollgate_domain::{Amount, BillingPeriod, LimitKey, Provider, Standing, minute_window};

use crate::{CounterError, KeyTotals, ReserveRequest, SettledUse, Standings, counted};

/// Largest amount written to a counter, 2^53 − 1: the scripts compare amounts as Lua doubles,
/// exact up to here (9 million USD in nano-USD, 9·10^15 tokens), and a single call never needs
/// more.
pub(crate) const MAX_EXACT: u64 = (1 << 53) - 1;

/// One script: its source (the shared prelude followed by the operation) and its SHA-1, by
/// which it is called.
#[derive(Debug)]
pub(crate) struct Script {
    pub name: &'static str,
    pub source: &'static str,
    pub sha1: String,
}

impl Script {
    fn new(name: &'static str, source: &'static str) -> Script {
        let sha1 = redis::Script::new(source).get_hash().to_owned();
        Script { name, source, sha1 }
    }
}

/// The scripts, hashed once per store.
#[derive(Debug)]
pub(crate) struct Scripts {
    /// Reserves and settles, one or several in one call ([`ops_args`]).
    pub ops: Script,
    pub release: Script,
    pub seed: Script,
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts {
            ops: Script::new(
                "reserve/settle",
                concat!(
                    include_str!("scripts/common.lua"),
                    include_str!("scripts/reserve.lua"),
                    include_str!("scripts/settle.lua"),
                    include_str!("scripts/ops.lua")
                ),
            ),
            release: Script::new(
                "release",
                concat!(
                    include_str!("scripts/common.lua"),
                    include_str!("scripts/release.lua")
                ),
            ),
            seed: Script::new(
                "seed",
                concat!(
                    include_str!("scripts/common.lua"),
                    include_str!("scripts/seed.lua")
                ),
            ),
        }
    }
}

/// The keys of a user-period: its counter hash, its set of reservation ids by expiry, and the
/// user's counters of the open minute window.
pub(crate) fn keys(prefix: &str, user: &str, period: BillingPeriod) -> [String; 3] {
    let hash = format!("{prefix}{{u:{user}}}:{period}");
    let expiry = format!("{hash}:exp");
    let minute = format!("{prefix}{{u:{user}}}:m");
    [hash, expiry, minute]
}

/// A counter's name in the scripts: `<limit>`, `k:<key id>:<limit>` for one of a key's own,
/// each with `m<window>:` before it for a per-minute counter (`m:` while the window is the
/// reserve script's to choose).
pub(crate) fn counter_name(key: LimitKey, key_id: &str, window: Option<i64>) -> String {
    let limit = key.name();
    let owner = if key.is_keys() {
        format!("k:{key_id}:{limit}")
    } else {
        limit
    };
    match (key.is_per_minute(), window) {
        (false, _) => owner,
        (true, Some(window)) => format!("m{window}:{owner}"),
        (true, None) => format!("m:{owner}"),
    }
}

/// When a user-period's keys expire: the end of the period plus a grace for late settles.
pub(crate) fn keep_until_secs(period: BillingPeriod, grace_secs: u64) -> i64 {
    period
        .end()
        .timestamp()
        .saturating_add(i64::try_from(grace_secs).unwrap_or(i64::MAX / 2))
}

fn exact(amount: u64) -> String {
    amount.min(MAX_EXACT).to_string()
}

/// Appends `n, (counter, amount) * n` for the counters `counted` of a call by `key_id`.
fn push_counted(
    args: &mut Vec<String>,
    counted: impl Iterator<Item = LimitKey> + Clone,
    key_id: &str,
    window: Option<i64>,
    amount: Amount,
) {
    args.push(counted.clone().count().to_string());
    for key in counted {
        args.push(counter_name(key, key_id, window));
        args.push(exact(amount.of(key.measure())));
    }
}

pub(crate) fn reserve_args(request: &ReserveRequest<'_>, id: u64, keep_until: i64) -> Vec<String> {
    let mut args = Vec::with_capacity(9 + 2 * 13 + 3 * request.limits.len());
    args.push(millis(request.now).to_string());
    args.push(millis(request.expires_at).to_string());
    args.push(keep_until.to_string());
    args.push(id.to_string());
    args.push(if request.counts_minutes() {
        minute_window(request.now).to_string()
    } else {
        String::new()
    });
    push_counted(
        &mut args,
        request.counted(),
        request.key,
        None,
        request.amount,
    );
    args.push(request.limits.len().to_string());
    for limit in request.limits {
        args.push(counter_name(limit.key, request.key, None));
        args.push(limit.max.to_string());
        args.push(exact(request.amount.of(limit.key.measure())));
    }
    args
}

/// How long a settled reservation is remembered at least, so that a settle sent again after a
/// timeout is not counted twice.
pub(crate) const TOMBSTONE_MIN_SECS: i64 = 15 * 60;

/// Arguments of one settle in the settle script (see [`batch_args`]); `held` is the
/// reservation's id and expiry, `None` for use that was never held in Redis.
pub(crate) fn settle_args(
    keep_until: i64,
    held: Option<(u64, DateTime<Utc>)>,
    now: DateTime<Utc>,
    counter: &Counted<'_>,
    actual: Amount,
) -> Vec<String> {
    let mut args = Vec::with_capacity(4 + 2 * 13);
    args.push(keep_until.to_string());
    match held {
        Some((id, expires_at)) => {
            let until = expires_at.max(now + chrono::Duration::seconds(TOMBSTONE_MIN_SECS));
            args.push(id.to_string());
            args.push(millis(until).to_string());
        }
        None => {
            args.push(String::new());
            args.push("0".to_owned());
        }
    }
    push_counted(
        &mut args,
        counter.keys(),
        counter.key,
        counter.window,
        actual,
    );
    args
}

/// An operation of the `ops` script.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Op {
    Reserve,
    Settle,
}

impl Op {
    fn marker(self) -> &'static str {
        match self {
            Op::Reserve => "r",
            Op::Settle => "s",
        }
    }
}

/// Arguments of one call of the `ops` script that makes `ops` (each with its arguments from
/// [`reserve_args`] or [`settle_args`]), in order.
pub(crate) fn ops_args(ops: impl IntoIterator<Item = (Op, Vec<String>)>) -> Vec<String> {
    let mut args = vec![String::new()];
    let mut n = 0;
    for (op, op_args) in ops {
        args.push(op.marker().to_owned());
        args.extend(op_args);
        n += 1;
    }
    args[0] = n.to_string();
    args
}

/// What a settle counts: the counters of a call to `provider` by key `key` (empty: none), with
/// per-minute counters in `window` (`None`: none).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Counted<'a> {
    pub provider: Provider,
    pub key: &'a str,
    pub window: Option<i64>,
}

impl Counted<'_> {
    pub fn keys(&self) -> impl Iterator<Item = LimitKey> + Clone + use<> {
        counted(self.provider, !self.key.is_empty(), self.window.is_some())
    }
}

pub(crate) fn seed_args(
    keep_until: i64,
    totals: &[(LimitKey, u64)],
    keys: &KeyTotals,
) -> Vec<String> {
    let n = totals.len() + 2 * keys.len();
    let mut args = Vec::with_capacity(2 + 2 * n);
    args.push(keep_until.to_string());
    args.push(n.to_string());
    for (key, used) in totals {
        args.push(key.name());
        args.push(exact(*used));
    }
    for (key_id, used) in keys {
        for key in [LimitKey::KeyTokens, LimitKey::KeyCost] {
            args.push(counter_name(key, key_id, None));
            args.push(exact(used.of(key.measure())));
        }
    }
    args
}

fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

/// What the reserve script answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum ReserveReply {
    /// The user-period has no `init` marker: seed it and retry.
    Uninitialised,
    /// Admitted, counting per-minute counters in `window` (`None`: the call has none).
    Admitted {
        window: Option<i64>,
        seen: Standings,
    },
    /// Refused by `request.limits[limit]`, which stood at `standing`.
    Denied {
        limit: usize,
        standing: Standing,
        seen: Standings,
    },
}

/// Reads the reserve script's reply (see `scripts/reserve.lua`) to a call that moves the
/// counters `counted`.
pub(crate) fn parse_reserve(
    reply: &[i64],
    counted: impl Iterator<Item = LimitKey>,
) -> Result<ReserveReply, CounterError> {
    let count = |v: i64| u64::try_from(v).unwrap_or(0);
    let bad = |problem| CounterError::BadReply {
        script: "reserve",
        problem,
    };
    match reply {
        [0] => Ok(ReserveReply::Uninitialised),
        [status @ (1 | 2), denied, used, reserved, window, rest @ ..] => {
            let keys: Vec<LimitKey> = counted.collect();
            if rest.len() != 2 * keys.len() {
                return Err(bad(format!(
                    "{} standings for {} counters",
                    rest.len() / 2,
                    keys.len()
                )));
            }
            let seen = keys
                .into_iter()
                .zip(rest.chunks_exact(2))
                .map(|(key, s)| {
                    (
                        key,
                        Standing {
                            used: count(s[0]),
                            reserved: count(s[1]),
                        },
                    )
                })
                .collect();
            if *status == 1 {
                return Ok(ReserveReply::Admitted {
                    window: (*window > 0).then_some(*window),
                    seen,
                });
            }
            let limit = usize::try_from(*denied)
                .ok()
                .and_then(|n| n.checked_sub(1))
                .ok_or_else(|| bad(format!("a denial by limit {denied}")))?;
            Ok(ReserveReply::Denied {
                limit,
                standing: Standing {
                    used: count(*used),
                    reserved: count(*reserved),
                },
                seen,
            })
        }
        other => Err(bad(format!("an unexpected reply {other:?}"))),
    }
}

/// What the settle script answered.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SettleReply {
    /// The user-period has no `init` marker: nothing was written.
    Uninitialised,
    /// Counted; `held` says whether the reservation's hold was still there to give back.
    Counted { held: bool, used: SettledUse },
    /// This reservation was settled already: nothing was done.
    Duplicate,
}

/// Reads the settle script's reply (see `scripts/settle.lua`) to a settle of `counter`.
pub(crate) fn parse_settle(
    reply: &[i64],
    counter: &Counted<'_>,
) -> Result<SettleReply, CounterError> {
    let provider = counter.provider;
    let bad = |problem| CounterError::BadReply {
        script: "settle",
        problem,
    };
    match reply {
        [0] => Ok(SettleReply::Uninitialised),
        [3] => Ok(SettleReply::Duplicate),
        [status @ (1 | 2), used @ ..] => {
            let expected = counter.keys().count();
            if used.len() != expected {
                return Err(bad(format!("{} counters for {expected}", used.len())));
            }
            let mut values = used.iter().map(|v| u64::try_from(*v).unwrap_or(0));
            Ok(SettleReply::Counted {
                held: *status == 2,
                used: SettledUse::new(provider, |_| values.next().unwrap_or(0)),
            })
        }
        other => Err(bad(format!("an unexpected reply {other:?}"))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_domain::{AnchorDay, Limit};

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    #[test]
    fn keys_share_the_users_hash_tag() {
        let period = BillingPeriod::containing(at("2026-11-28T00:00:00Z"), AnchorDay::default());
        let [hash, expiry, minute] = keys("tg:", "alice", period);
        assert_eq!(hash, "tg:{u:alice}:2026-11");
        assert_eq!(expiry, "tg:{u:alice}:2026-11:exp");
        assert_eq!(minute, "tg:{u:alice}:m");
        assert_eq!(
            keep_until_secs(period, 3600),
            at("2026-12-01T01:00:00Z").timestamp()
        );
    }

    #[test]
    fn reserve_arguments_list_counters_then_limits() {
        let period = BillingPeriod::containing(at("2026-11-28T00:00:00Z"), AnchorDay::default());
        let limits = [Limit {
            key: LimitKey::Cost,
            max: 5_000,
        }];
        let request = ReserveRequest {
            user: "u",
            key: "",
            period,
            provider: Provider::Tavily,
            limits: &limits,
            amount: Amount {
                calls: 1,
                tokens: 0,
                cost_nanousd: u64::MAX,
            },
            now: at("2026-11-28T00:00:00Z"),
            expires_at: at("2026-11-28T00:00:01Z"),
        };
        let args = reserve_args(&request, 42, 99);
        let now_ms = at("2026-11-28T00:00:00Z").timestamp_millis();
        let expected: Vec<String> = [
            now_ms.to_string().as_str(),
            (now_ms + 1000).to_string().as_str(),
            "99",
            "42",
            // No per-minute limit: no window.
            "",
            // Tavily bills per call: no provider token counter.
            "4",
            "tavily_calls",
            "1",
            "total_calls",
            "1",
            "total_tokens",
            "0",
            "monthly_cost",
            "9007199254740991",
            "1",
            "monthly_cost",
            "5000",
            "9007199254740991",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        assert_eq!(args, expected);
    }

    fn serper() -> impl Iterator<Item = LimitKey> + Clone {
        counted(Provider::Serper, false, false)
    }

    fn plan_only(provider: Provider) -> Counted<'static> {
        Counted {
            provider,
            key: "",
            window: None,
        }
    }

    #[test]
    fn counters_are_named_for_their_key_and_window() {
        assert_eq!(counter_name(LimitKey::Cost, "k1", None), "monthly_cost");
        assert_eq!(counter_name(LimitKey::KeyCost, "k1", None), "k:k1:key_cost");
        assert_eq!(
            counter_name(LimitKey::CallsPerMinute(None), "k1", None),
            "m:calls_per_minute"
        );
        assert_eq!(
            counter_name(LimitKey::KeyTokensPerMinute, "k1", Some(7)),
            "m7:k:k1:key_tokens_per_minute"
        );
        // A call by a key with a per-minute limit moves every counter it could be limited by.
        let names: Vec<String> = counted(Provider::OpenAi, true, true)
            .map(|k| counter_name(k, "k1", Some(7)))
            .collect();
        assert_eq!(
            names,
            [
                "openai_calls",
                "openai_tokens",
                "total_calls",
                "total_tokens",
                "monthly_cost",
                "k:k1:key_tokens",
                "k:k1:key_cost",
                "m7:openai_calls_per_minute",
                "m7:openai_tokens_per_minute",
                "m7:calls_per_minute",
                "m7:tokens_per_minute",
                "m7:k:k1:key_calls_per_minute",
                "m7:k:k1:key_tokens_per_minute",
            ]
        );
    }

    #[test]
    fn settle_without_a_hold_sends_an_empty_id() {
        let now = at("2026-11-28T00:00:00Z");
        let args = settle_args(
            7,
            None,
            now,
            &plan_only(Provider::OpenAi),
            Amount::default(),
        );
        assert_eq!(args[..4], ["7", "", "0", "5"]);
        // The tombstone outlives both the reservation and a settle retried minutes later.
        let soon = now + chrono::Duration::seconds(1);
        let args = settle_args(
            7,
            Some((3, soon)),
            now,
            &plan_only(Provider::OpenAi),
            Amount::default(),
        );
        assert_eq!(args[1], "3");
        assert_eq!(args[2], (now.timestamp_millis() + 900_000).to_string());
    }

    #[test]
    fn reserve_replies_are_read_counter_by_counter() {
        assert_eq!(
            parse_reserve(&[0], serper()),
            Ok(ReserveReply::Uninitialised)
        );
        let reply = [2, 1, 3, 4, 0, 3, 4, 5, 6, 7, 8, 9, 10];
        let Ok(ReserveReply::Denied {
            limit,
            standing,
            seen,
        }) = parse_reserve(&reply, serper())
        else {
            panic!("a denial");
        };
        assert_eq!(limit, 0);
        assert_eq!(
            standing,
            Standing {
                used: 3,
                reserved: 4
            }
        );
        assert_eq!(seen.len(), 4);
        assert_eq!(
            seen[3],
            (
                LimitKey::Cost,
                Standing {
                    used: 9,
                    reserved: 10
                }
            )
        );
        assert!(parse_reserve(&[1, 0, 0, 0, 0, 1], serper()).is_err());
        assert!(parse_reserve(&[2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], serper()).is_err());
        // Admitted in a minute window.
        let Ok(ReserveReply::Admitted { window, seen }) =
            parse_reserve(&[1, 0, 0, 0, 29_500_000, 1, 0, 1, 0, 0, 0, 5, 0], serper())
        else {
            panic!("admitted");
        };
        assert_eq!((window, seen.len()), (Some(29_500_000), 4));
    }

    #[test]
    fn settle_replies_carry_the_settled_use_counter_by_counter() {
        assert_eq!(
            parse_settle(&[0], &plan_only(Provider::OpenAi)),
            Ok(SettleReply::Uninitialised)
        );
        assert_eq!(
            parse_settle(&[3], &plan_only(Provider::OpenAi)),
            Ok(SettleReply::Duplicate)
        );
        let Ok(SettleReply::Counted { held, used }) =
            parse_settle(&[2, 7, 70, 8, 80, 900], &plan_only(Provider::OpenAi))
        else {
            panic!("counted");
        };
        assert!(held);
        assert_eq!(
            used.used(LimitKey::ProviderCalls(Provider::OpenAi)),
            Some(7)
        );
        assert_eq!(
            used.used(LimitKey::ProviderTokens(Provider::OpenAi)),
            Some(70)
        );
        assert_eq!(used.used(LimitKey::TotalTokens), Some(80));
        assert_eq!(used.used(LimitKey::Cost), Some(900));
        assert_eq!(used.used(LimitKey::ProviderCalls(Provider::Tavily)), None);
        // Tavily bills per call: four counters, no provider tokens.
        let Ok(SettleReply::Counted { held, used }) =
            parse_settle(&[1, 3, 3, 0, 50], &plan_only(Provider::Tavily))
        else {
            panic!("counted");
        };
        assert!(!held);
        assert_eq!(used.used(LimitKey::ProviderTokens(Provider::Tavily)), None);
        assert_eq!(used.used(LimitKey::Cost), Some(50));
        assert_eq!(
            parse_settle(&[1, 3, 3], &plan_only(Provider::Tavily))
                .unwrap_err()
                .to_string(),
            "the counter store's settle script answered 2 counters for 4"
        );
        assert!(parse_settle(&[4], &plan_only(Provider::Tavily)).is_err());
    }

    #[test]
    fn script_sources_include_the_prelude() {
        let scripts = Scripts::new();
        for s in [&scripts.ops, &scripts.release, &scripts.seed] {
            assert!(s.source.contains("local function give_back"), "{}", s.name);
            assert_eq!(s.sha1.len(), 40);
        }
        assert_ne!(scripts.ops.sha1, scripts.release.sha1);
    }

    #[test]
    fn operations_are_sent_in_order_each_after_its_kind() {
        let args = ops_args([
            (Op::Settle, vec!["a".to_owned(), "b".to_owned()]),
            (Op::Reserve, vec!["c".to_owned()]),
        ]);
        assert_eq!(args, ["2", "s", "a", "b", "r", "c"]);
    }
}
