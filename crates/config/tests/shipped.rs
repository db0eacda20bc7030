//! The shipped `gateway.toml` and `pricing/`, and the validator's messages on broken copies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::{Path, PathBuf};

use tollgate_config::{CounterStore, Durability, LogFormat, UnpricedPolicy, load_with_env};
use tollgate_domain::{LimitKey, Provider, Tier, cost};

fn shipped() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../gateway.toml")
}

fn every_key(_: &str) -> Option<String> {
    Some("k".to_owned())
}

#[test]
fn shipped_configuration_loads_without_a_single_problem() {
    let loaded = load_with_env(&shipped(), &every_key).unwrap();
    assert!(loaded.warnings.problems.is_empty(), "{}", loaded.warnings);
    let c = loaded.config;
    assert_eq!(c.providers.len(), 9);
    assert_eq!(c.storage.counters, CounterStore::Memory);
    assert!(c.storage.database_url.starts_with("sqlite://"));
    assert_eq!(c.pricing.unpriced, UnpricedPolicy::Reject);
    assert_eq!(c.alert_thresholds, [80, 90, 100]);
    assert_eq!(c.default_plan.as_deref(), Some("free"));
    for provider in Provider::ALL {
        assert!(
            c.prices.providers.contains_key(&provider),
            "{provider} is priced"
        );
    }
}

#[test]
fn the_seed_plans_as_the_product_presents_them() {
    let c = load_with_env(&shipped(), &every_key).unwrap().config;
    let free = &c.plans["free"];
    assert_eq!(free.tier, Tier::Free);
    assert!(!free.includes(Provider::OpenAi));
    assert!(!free.includes(Provider::Anthropic));
    assert!(free.includes(Provider::Gemini));
    assert_eq!(free.cost_cap_nanousd, Some(2_000_000_000));
    let gemini: Vec<_> = free.limits_for(Provider::Gemini).unwrap();
    assert_eq!(gemini[0].key, LimitKey::ProviderCalls(Provider::Gemini));
    assert_eq!(gemini[0].max, 100);
    assert_eq!(gemini[1].max, 100_000);

    let pro = &c.plans["pro"];
    assert_eq!(pro.price_monthly_nanousd, 79_000_000_000);
    assert_eq!(
        pro.provider_limits(Provider::OpenAi).tokens,
        Some(2_500_000)
    );
    assert_eq!(pro.cost_cap_nanousd, Some(150_000_000_000));

    let enterprise = &c.plans["enterprise"];
    for provider in Provider::ALL {
        let limits = enterprise.limits_for(provider).unwrap();
        assert_eq!(limits.len(), 1, "only the cost cap applies to {provider}");
    }
}

#[test]
fn shipped_prices_cover_the_common_calls() {
    let c = load_with_env(&shipped(), &every_key).unwrap().config;
    let book = &c.prices;
    for (provider, model) in [
        (Provider::OpenAi, "gpt-4o-2024-08-06"),
        (Provider::OpenAi, "gpt-4o-mini"),
        (Provider::Anthropic, "claude-sonnet-4-20250514"),
        (Provider::Gemini, "models/gemini-2.5-pro"),
        (Provider::Gemini, "gemini-2.5-flash"),
        (Provider::Mistral, "mistral-large-latest"),
        (Provider::Tavily, "search"),
        (Provider::Serper, "search"),
        (Provider::Exa, "search"),
        (Provider::Firecrawl, "scrape"),
        (Provider::Stability, "stable-image-core"),
    ] {
        assert!(book.lookup(provider, model).is_some(), "{provider}/{model}");
    }
    // gpt-4o as published: $2.50 / $1.25 cached / $10.00 per million.
    let gpt_4o = book.lookup(Provider::OpenAi, "gpt-4o").unwrap();
    let usage = tollgate_domain::Usage {
        input_tokens: 1_337,
        cached_input_tokens: 1_152,
        output_tokens: 211,
        ..Default::default()
    };
    assert_eq!(cost(gpt_4o.price, &usage).total_nanousd, 4_012_500);
    // Gemini 2.5 Pro's long-context tier is in the shipped file.
    let pro = book.lookup(Provider::Gemini, "gemini-2.5-pro").unwrap();
    assert_eq!(pro.price.tiers[0].above_input_tokens, 200_000);
}

#[test]
fn every_gateway_mistake_is_reported_at_once() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("pricing")).unwrap();
    let text = r#"default_plan = "gold"
[proxy]
listen = "nowhere"
threads = -1
[storage]
counters = "etcd"
database_url = "mysql://x"
[alerts]
thresholds = [90, 80]
[providers.openia]
base_url = "https://x"
[providers.openai]
base_url = "ftp://x"
[plans.a]
name = "A"
tier = "platinum"
cost_cap = "-1"
colour = "red"
[plans.a.providers]
tavily = { calls = 5, tokens = 10 }
[[keys]]
user = "u"
plan = "b"
sha256 = "abc"
anchor_day = 40
"#;
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let report = load_with_env(&path, &every_key).unwrap_err().to_string();
    for expected in [
        ":1: error: default_plan: plan \"gold\" is not defined (defined: a)",
        ":3: error: proxy.listen: \"nowhere\" is not an address",
        ":4: error: proxy.threads: -1 is out of range",
        ":6: error: storage.counters: unknown counter store \"etcd\"",
        ":7: error: storage.database_url: \"mysql://x\" is neither",
        ":9: error: alerts.thresholds.1: 80 is not a percentage above the previous one",
        ":10: error: providers.openia: unknown provider \"openia\"",
        ":13: error: providers.openai.base_url: \"ftp://x\" is not an http",
        ":16: error: plans.a.tier: unknown tier \"platinum\"",
        ":17: error: plans.a.cost_cap: \"-1\" is negative",
        ":18: error: plans.a.colour: unknown key \"colour\"",
        ":20: error: plans.a.providers.tavily.tokens: tavily bills per call",
        ":23: error: keys.0.plan: plan \"b\" is not defined",
        ":24: error: keys.0.sha256: expected the key's SHA-256",
        ":25: error: keys.0.anchor_day: 40 is not a day of the month",
        "error: providers.openai: no pricing/openai.toml",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in:\n{report}"
        );
    }
}

#[test]
fn per_minute_limits_are_counts_of_at_least_one_on_the_right_providers() {
    let dir = tempfile::tempdir().unwrap();
    let pricing = shipped().parent().unwrap().join("pricing");
    let text = format!(
        r#"[pricing]
dir = "{}"
[plans.a]
name = "A"
tier = "pro"
calls_per_minute = 0
tokens_per_minute = 1000
[plans.a.providers]
openai = {{ calls_per_minute = 60, tokens_per_minute = 90000 }}
tavily = {{ calls_per_minute = -2, tokens_per_minute = 3 }}
"#,
        pricing.display()
    );
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, text).unwrap();
    let report = load_with_env(&path, &every_key).unwrap_err().to_string();
    for expected in [
        ":6: error: plans.a.calls_per_minute: a per-minute limit of 0 refuses every call",
        ":10: error: plans.a.providers.tavily.calls_per_minute: -2 is negative",
        ":10: error: plans.a.providers.tavily.tokens_per_minute: tavily bills per call",
    ] {
        assert!(
            report.contains(expected),
            "missing {expected:?} in:\n{report}"
        );
    }
    assert!(!report.contains("plans.a.tokens_per_minute"), "{report}");
    assert!(!report.contains("providers.openai"), "{report}");

    // Read into the plan, in the order a refusal names them: the period's limits first.
    let ok = std::fs::read_to_string(&path)
        .unwrap()
        .replace("calls_per_minute = 0\n", "")
        .replace(
            "tavily = { calls_per_minute = -2, tokens_per_minute = 3 }\n",
            "",
        );
    std::fs::write(&path, ok).unwrap();
    let config = load_with_env(&path, &every_key).unwrap().config;
    let keys: Vec<String> = config.plans["a"]
        .limits_for(tollgate_domain::Provider::OpenAi)
        .unwrap()
        .iter()
        .map(|l| format!("{}={}", l.key, l.max))
        .collect();
    assert_eq!(
        keys,
        [
            "openai_calls_per_minute=60",
            "openai_tokens_per_minute=90000",
            "tokens_per_minute=1000"
        ]
    );
}

#[test]
fn a_syntax_error_names_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, "[proxy]\nlisten = \"0.0.0.0:8080\"\nthreads = = 2\n").unwrap();
    let report = load_with_env(&path, &every_key).unwrap_err().to_string();
    assert!(
        report.starts_with(&format!("{}:3: error: ", path.display())),
        "{report}"
    );
}

#[test]
fn redis_counters_take_a_url_a_timeout_a_prefix_and_cluster_mode() {
    let dir = tempfile::tempdir().unwrap();
    let pricing = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pricing");
    let path = dir.path().join("gateway.toml");
    let with = |storage: &str| {
        let text = format!(
            "[pricing]\ndir = {:?}\n[storage]\ncounters = \"redis\"\n{storage}",
            pricing.display().to_string()
        );
        std::fs::write(&path, text).unwrap();
        load_with_env(&path, &every_key)
    };
    let c = with("redis_url = \"redis://10.0.0.5:6379\"\nredis_key_prefix = \"acme:\"\nredis_cluster = true\n")
        .unwrap()
        .config;
    assert_eq!(
        c.storage.counters,
        CounterStore::Redis {
            url: "redis://10.0.0.5:6379".to_owned(),
            timeout_ms: 50,
            key_prefix: "acme:".to_owned(),
            cluster: true,
        }
    );
    let c = with("").unwrap().config;
    assert!(matches!(
        c.storage.counters,
        CounterStore::Redis { ref key_prefix, cluster: false, .. } if key_prefix == "tollgate:"
    ));
    let report = with("redis_key_prefix = \"{acme}:\"\n")
        .unwrap_err()
        .to_string();
    assert!(
        report.contains(":5: error: storage.redis_key_prefix: \"{acme}:\" contains a brace"),
        "{report}"
    );
}

#[test]
fn the_log_format_is_text_json_or_reported() {
    let dir = tempfile::tempdir().unwrap();
    let pricing = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pricing");
    let path = dir.path().join("gateway.toml");
    let with = |log: &str| {
        let text = format!(
            "[pricing]\ndir = {:?}\n{log}",
            pricing.display().to_string()
        );
        std::fs::write(&path, text).unwrap();
        load_with_env(&path, &every_key)
    };
    assert_eq!(with("").unwrap().config.log.format, LogFormat::Text);
    let json = with("[log]\nformat = \"json\"\n").unwrap().config;
    assert_eq!(json.log.format, LogFormat::Json);
    let report = with("[log]\nformat = \"xml\"\n").unwrap_err().to_string();
    assert!(
        report.contains(
            ":4: error: log.format: unknown log format \"xml\" (expected \"text\" or \"json\")"
        ),
        "{report}"
    );
}

/// The shipped prices with a `[ledger]` section of `ledger` (it starts on line 4), loaded.
fn with_ledger(
    dir: &Path,
    ledger: &str,
) -> Result<tollgate_config::Loaded, tollgate_config::Report> {
    let pricing = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pricing");
    let path = dir.join("gateway.toml");
    let text = format!(
        "[pricing]\ndir = {:?}\n[ledger]\n{ledger}",
        pricing.display().to_string()
    );
    std::fs::write(&path, text).unwrap();
    load_with_env(&path, &every_key)
}

#[test]
fn ledger_durability_is_batched_sync_or_reported() {
    let dir = tempfile::tempdir().unwrap();
    let with = |ledger: &str| with_ledger(dir.path(), ledger);
    let batched = with("").unwrap().config.ledger;
    assert_eq!(
        (batched.durability, batched.group_commit_ms),
        (Durability::Batched, 1)
    );
    let sync = with("durability = \"sync\"\ngroup_commit_ms = 0\n")
        .unwrap()
        .config
        .ledger;
    assert_eq!(
        (sync.durability, sync.group_commit_ms),
        (Durability::Sync, 0)
    );
    let report = with("durability = \"fsync\"\ngroup_commit_ms = -1\n")
        .unwrap_err()
        .to_string();
    assert!(
        report.contains(
            ":4: error: ledger.durability: unknown durability \"fsync\" (expected \"batched\" or \"sync\")"
        ),
        "{report}"
    );
    assert!(
        report.contains(":5: error: ledger.group_commit_ms: -1 is out of range"),
        "{report}"
    );
}

#[test]
fn usage_log_retention_is_whole_months_or_reported() {
    let dir = tempfile::tempdir().unwrap();
    let with = |ledger: &str| with_ledger(dir.path(), ledger);
    let kept = with("").unwrap().config.ledger;
    assert_eq!(
        kept.retain_usage_logs_months, None,
        "absent keeps every row"
    );
    let two_years = with("retain_usage_logs_months = 24\n")
        .unwrap()
        .config
        .ledger;
    assert_eq!(
        two_years.retain_usage_logs_months.map(|m| m.get()),
        Some(24)
    );
    for (value, shown) in [("0", "0"), ("-3", "-3"), ("1201", "1201")] {
        let report = with(&format!("retain_usage_logs_months = {value}\n"))
            .unwrap_err()
            .to_string();
        assert!(
            report.contains(&format!(
                ":4: error: ledger.retain_usage_logs_months: {shown} is out of range (expected 1 to 1200 months"
            )),
            "{report}"
        );
    }
    let report = with("retain_usage_logs_months = \"12\"\n")
        .unwrap_err()
        .to_string();
    assert!(report.contains(":4:"), "{report}");
}

#[test]
fn the_ledger_key_comes_from_one_place_as_64_hex_digits_or_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let pricing = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../pricing");
    let key = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";
    let env = |name: &str| match name {
        "LEDGER_KEY" => Some(key.to_owned()),
        "SHORT_KEY" => Some("abc".to_owned()),
        _ => None,
    };
    let load = |ledger: &str| {
        let path = dir.path().join("gateway.toml");
        let text = format!(
            "[pricing]\ndir = {:?}\n[ledger]\n{ledger}",
            pricing.display().to_string()
        );
        std::fs::write(&path, text).unwrap();
        load_with_env(&path, &env)
    };
    let none = load("").unwrap().config.ledger;
    assert!(none.database_key.is_none(), "no key: stored unencrypted");
    let from_env = load("database_key_env = \"LEDGER_KEY\"\n")
        .unwrap()
        .config
        .ledger;
    assert_eq!(from_env.database_key.as_ref().unwrap().expose(), key);
    std::fs::write(dir.path().join("ledger.key"), format!("{key}\n")).unwrap();
    let from_file = load("database_key_file = \"ledger.key\"\n")
        .unwrap()
        .config
        .ledger;
    assert_eq!(from_file.database_key.unwrap().expose(), key);
    assert!(
        !format!("{from_env:?}").contains(key),
        "the key never prints"
    );

    for (ledger, expected) in [
        (
            "database_key_env = \"UNSET_KEY\"\n",
            ":4: error: ledger.database_key_env: environment variable UNSET_KEY is not set",
        ),
        (
            "database_key_env = \"SHORT_KEY\"\n",
            ":4: error: ledger.database_key_env: the ledger key must be 64 hex digits",
        ),
        (
            "database_key_file = \"missing.key\"\n",
            ":4: error: ledger.database_key_file: cannot read",
        ),
        (
            "database_key_env = \"LEDGER_KEY\"\ndatabase_key_file = \"ledger.key\"\n",
            ":5: error: ledger.database_key_file: set database_key_env or database_key_file, not both",
        ),
    ] {
        let report = load(ledger).unwrap_err().to_string();
        assert!(report.contains(expected), "{ledger}: {report}");
        assert!(!report.contains(key), "{report}");
    }
}
