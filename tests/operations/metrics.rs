//! `/metrics` after a call through every provider, read as Prometheus reads it: `promtool`
//! accepts the exposition, every metric in docs/metrics.md is there with its documented type
//! (and nothing undocumented), and the counts are what was sent: requests by provider and
//! status, refusals by limit, and tokens and cost equal to what the ledger recorded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use crate::harness;

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use harness::{Gateway, Mock, Reply, Sample, UsageLog, client_key, fixture, provider_key};

/// Each provider, the call made to it (method, path after `/<provider>`, auth header and its
/// prefix, body, content type) and the recorded response its mock answers with.
struct Call {
    provider: &'static str,
    method: &'static str,
    path: &'static str,
    auth: (&'static str, &'static str),
    body: &'static str,
    content_type: &'static str,
    fixture: &'static str,
}

const JSON: &str = "application/json";
const FORM: &str = "multipart/form-data; boundary=b";
const FORM_BODY: &str =
    "--b\r\ncontent-disposition: form-data; name=\"prompt\"\r\n\r\na lighthouse\r\n--b--\r\n";

const CALLS: [Call; 9] = [
    Call {
        provider: "openai",
        method: "POST",
        path: "/v1/chat/completions",
        auth: ("authorization", "Bearer "),
        body: r#"{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}]}"#,
        content_type: JSON,
        fixture: "openai-chat.json",
    },
    Call {
        provider: "anthropic",
        method: "POST",
        path: "/v1/messages",
        auth: ("x-api-key", ""),
        body: r#"{"model":"claude-sonnet-4-20250514","max_tokens":1024,"messages":[{"role":"user","content":"hi"}]}"#,
        content_type: JSON,
        fixture: "anthropic-messages.json",
    },
    Call {
        provider: "gemini",
        method: "POST",
        path: "/v1beta/models/gemini-2.5-pro:generateContent",
        auth: ("x-goog-api-key", ""),
        body: r#"{"contents":[{"parts":[{"text":"hi"}]}]}"#,
        content_type: JSON,
        fixture: "gemini-generate.json",
    },
    Call {
        provider: "mistral",
        method: "POST",
        path: "/v1/chat/completions",
        auth: ("authorization", "Bearer "),
        body: r#"{"model":"mistral-small-latest","messages":[{"role":"user","content":"Bonjour"}]}"#,
        content_type: JSON,
        fixture: "mistral-chat.json",
    },
    Call {
        provider: "tavily",
        method: "POST",
        path: "/search",
        auth: ("authorization", "Bearer "),
        body: r#"{"query":"Who is Leo Messi?","search_depth":"advanced"}"#,
        content_type: JSON,
        fixture: "tavily-search.json",
    },
    Call {
        provider: "serper",
        method: "POST",
        path: "/search",
        auth: ("x-api-key", ""),
        body: r#"{"q":"apple inc"}"#,
        content_type: JSON,
        fixture: "serper-search.json",
    },
    Call {
        provider: "exa",
        method: "POST",
        path: "/search",
        auth: ("x-api-key", ""),
        body: r#"{"query":"large language models"}"#,
        content_type: JSON,
        fixture: "exa-search.json",
    },
    Call {
        provider: "firecrawl",
        method: "POST",
        path: "/v2/scrape",
        auth: ("authorization", "Bearer "),
        body: r#"{"url":"https://firecrawl.dev","formats":["markdown"]}"#,
        content_type: JSON,
        fixture: "firecrawl-scrape.json",
    },
    Call {
        provider: "stability",
        method: "POST",
        path: "/v2beta/stable-image/generate/core",
        auth: ("authorization", "Bearer "),
        body: FORM_BODY,
        content_type: FORM,
        fixture: "stability-core.json",
    },
];

/// Calls per provider: enough that a count of one by accident cannot pass.
const ROUNDS: usize = 3;
const USER: &str = "metrics-user";
/// On a plan allowing one OpenAI call: the second is refused.
const LIMITED_USER: &str = "metrics-limited-user";

/// One metric as docs/metrics.md lists it.
#[derive(Debug)]
struct Documented {
    name: String,
    kind: String,
    deprecated: bool,
}

/// The rows of docs/metrics.md's tables: `| `name` | type | labels | meaning | … |`.
fn documented() -> Vec<Documented> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/metrics.md");
    let doc = std::fs::read_to_string(path).unwrap();
    let rows: Vec<Documented> = doc
        .lines()
        .filter(|line| line.starts_with("| `"))
        .map(|line| {
            let cells: Vec<&str> = line.split('|').map(str::trim).collect();
            Documented {
                name: cells[1].trim_matches('`').to_owned(),
                kind: cells[2].to_owned(),
                deprecated: cells[4].starts_with("Deprecated"),
            }
        })
        .collect();
    assert!(
        rows.len() > 30,
        "docs/metrics.md lists the metrics: {rows:#?}"
    );
    rows
}

/// Each metric family of the exposition and its `# TYPE`.
fn types(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .map(|rest| {
            let (name, kind) = rest.split_once(' ').unwrap();
            (name.to_owned(), kind.to_owned())
        })
        .collect()
}

fn start() -> (Gateway, HashMap<&'static str, Mock>) {
    let mut mocks = HashMap::new();
    let mut rest = String::new();
    let mut env = Vec::new();
    for call in &CALLS {
        let mock = Mock::start();
        mock.script(call.path, Reply::json(fixture(call.fixture)));
        let var = format!("TG_METRICS_{}_KEY", call.provider.to_ascii_uppercase());
        rest.push_str(&format!(
            "[providers.{}]\nbase_url = \"http://127.0.0.1:{}\"\nkey_env = \"{var}\"\n",
            call.provider, mock.port,
        ));
        env.push((var, provider_key(call.provider)));
        mocks.insert(call.provider, mock);
    }
    rest.push_str("[plans.all]\nname = \"All\"\ntier = \"pro\"\n[plans.all.providers]\n");
    for call in &CALLS {
        rest.push_str(&format!("{} = {{ calls = 100 }}\n", call.provider));
    }
    rest.push_str("[plans.one]\nname = \"One\"\ntier = \"free\"\n[plans.one.providers]\n");
    rest.push_str("openai = { calls = 1 }\n");
    rest.push_str(&harness::key_entry(USER, "all", &client_key(USER)));
    rest.push_str(&harness::key_entry(
        LIMITED_USER,
        "one",
        &client_key(LIMITED_USER),
    ));
    let env: Vec<(&str, &str)> = env.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    // Per-plan series on, so that they are checked like the others.
    let admin = "metrics_per_plan = true";
    (Gateway::start_with_admin(admin, &rest, &env), mocks)
}

fn send(gw: &Gateway, call: &Call, user: &str) -> u16 {
    let auth = format!("{}{}", call.auth.1, client_key(user));
    let path = format!("/{}{}", call.provider, call.path);
    let headers = [
        (call.auth.0, auth.as_str()),
        ("content-type", call.content_type),
        ("anthropic-version", "2023-06-01"),
    ];
    harness::request(gw.port, call.method, &path, &headers, call.body.as_bytes()).status
}

/// The sum of one ledger column over `provider`'s rows.
fn ledger_sum(rows: &[UsageLog], provider: &str, column: fn(&UsageLog) -> i64) -> f64 {
    rows.iter()
        .filter(|r| r.provider == provider)
        .map(column)
        .sum::<i64>() as f64
}

fn value(samples: &[Sample], series: &str) -> f64 {
    harness::sample_value(samples, series).unwrap_or_else(|| panic!("no {series}"))
}

#[test]
fn every_documented_metric_is_exposed_valid_and_counts_what_was_sent() {
    let (gw, _mocks) = start();
    for _ in 0..ROUNDS {
        for call in &CALLS {
            assert_eq!(send(&gw, call, USER), 200, "{}", call.provider);
        }
    }
    assert_eq!(send(&gw, &CALLS[0], LIMITED_USER), 200);
    assert_eq!(send(&gw, &CALLS[0], LIMITED_USER), 429);
    assert_eq!(
        harness::request(gw.port, "GET", "/nowhere", &[], b"").status,
        404
    );
    let rows = harness::wait_rows(&gw.ledger_url(), USER, ROUNDS * CALLS.len());
    // The ledger's own metrics are read from its counters: let its writer catch up too.
    harness::wait_rows(&gw.ledger_url(), LIMITED_USER, 1);

    let text = gw.scrape();
    let lint = harness::promtool_check(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    let docs = documented();
    // promtool's naming advice holds for every metric but those kept under an old name.
    let unexpected: Vec<&String> = lint
        .iter()
        .filter(|finding| {
            let name = finding.split_whitespace().next().unwrap_or_default();
            !docs.iter().any(|d| d.name == name && d.deprecated)
        })
        .collect();
    assert!(unexpected.is_empty(), "promtool: {unexpected:#?}");
    let exposed = types(&text);
    for doc in &docs {
        assert_eq!(
            exposed.get(&doc.name),
            Some(&doc.kind),
            "{doc:?} in\n{text}"
        );
    }
    for name in exposed.keys() {
        assert!(
            docs.iter().any(|d| &d.name == name),
            "{name} is not in docs/metrics.md"
        );
    }

    let samples = harness::parse_samples(&text);
    for call in &CALLS {
        let p = call.provider;
        let ok = if p == "openai" { ROUNDS + 1 } else { ROUNDS };
        let requests = format!("tollgate_requests_total{{status=\"200\",provider=\"{p}\"}}");
        assert_eq!(value(&samples, &requests), ok as f64, "{requests}");
        let latency = format!("tollgate_upstream_latency_seconds_count{{provider=\"{p}\"}}");
        assert_eq!(value(&samples, &latency), ok as f64, "{latency}");
        // Tokens and cost equal what the ledger recorded for the same calls (the limited
        // user's one OpenAI call included).
        let mut calls: Vec<UsageLog> = rows.clone();
        calls.extend(harness::ledger_rows(&gw.ledger_url(), LIMITED_USER));
        let cost = format!("tollgate_cost_nanousd_total{{provider=\"{p}\"}}");
        let billed = ledger_sum(&calls, p, |r| r.cost_total_nanousd);
        assert!(billed > 0.0, "{p} billed nothing");
        assert_eq!(value(&samples, &cost), billed, "{cost}");
        for (kind, column) in [
            (
                "input",
                (|r: &UsageLog| r.input_tokens) as fn(&UsageLog) -> i64,
            ),
            ("output", |r| r.output_tokens),
            ("cached_input", |r| r.cached_input_tokens),
        ] {
            let series = format!("tollgate_tokens_total{{provider=\"{p}\",kind=\"{kind}\"}}");
            let metered = ledger_sum(&calls, p, column);
            let shown = harness::sample_value(&samples, &series).unwrap_or(0.0);
            assert_eq!(shown, metered, "{series}");
        }
        let estimated = format!("tollgate_estimated_usage_events_total{{provider=\"{p}\"}}");
        let ledger_estimated = ledger_sum(&calls, p, |r| i64::from(r.estimated));
        assert_eq!(value(&samples, &estimated), ledger_estimated, "{estimated}");
    }
    // Per plan: the same requests, tokens and cost, under the plan of the key that made them.
    for call in &CALLS {
        let p = call.provider;
        let (all, one) = if p == "openai" {
            (ROUNDS, 1)
        } else {
            (ROUNDS, 0)
        };
        let series = |plan: &str, class: &str| {
            format!(
                "tollgate_plan_requests_total{{plan=\"{plan}\",provider=\"{p}\",status_class=\"{class}\"}}"
            )
        };
        assert_eq!(value(&samples, &series("all", "2xx")), all as f64);
        if one > 0 {
            assert_eq!(value(&samples, &series("one", "2xx")), 1.0);
            assert_eq!(value(&samples, &series("one", "4xx")), 1.0);
        }
        let mut calls: Vec<UsageLog> = rows.clone();
        calls.extend(harness::ledger_rows(&gw.ledger_url(), LIMITED_USER));
        let plan_cost: f64 = ["all", "one"]
            .iter()
            .filter_map(|plan| {
                harness::sample_value(
                    &samples,
                    &format!(
                        "tollgate_plan_cost_nanousd_total{{plan=\"{plan}\",provider=\"{p}\"}}"
                    ),
                )
            })
            .sum();
        assert_eq!(
            plan_cost,
            ledger_sum(&calls, p, |r| r.cost_total_nanousd),
            "{p}"
        );
        let plan_tokens: f64 = ["all", "one"]
            .iter()
            .filter_map(|plan| {
                harness::sample_value(
                    &samples,
                    &format!("tollgate_plan_tokens_total{{plan=\"{plan}\",provider=\"{p}\"}}"),
                )
            })
            .sum();
        let tokens = ledger_sum(&calls, p, |r| r.input_tokens + r.output_tokens);
        assert_eq!(plan_tokens, tokens, "{p}");
    }
    let refused = r#"tollgate_requests_total{provider="openai",status="429"}"#;
    assert_eq!(value(&samples, refused), 1.0);
    assert_eq!(
        value(
            &samples,
            r#"tollgate_limit_refusals_total{limit="openai_calls"}"#
        ),
        1.0
    );
    assert_eq!(
        value(
            &samples,
            r#"tollgate_limit_refusals_total{limit="total_calls"}"#
        ),
        0.0
    );
    let unrouted = r#"tollgate_requests_total{provider="none",status="404"}"#;
    assert_eq!(value(&samples, unrouted), 1.0);
    let admitted = (ROUNDS * CALLS.len() + 1) as f64;
    // The ledger also took the refused call's row (refusals are recorded, counted nowhere).
    assert_eq!(
        value(&samples, "tollgate_ledger_accepted_total"),
        admitted + 1.0
    );
    assert_eq!(value(&samples, "tollgate_ledger_dropped_total"), 0.0);
    assert_eq!(value(&samples, "tollgate_requests_in_flight"), 0.0);
    assert_eq!(
        value(&samples, "tollgate_gateway_overhead_seconds_count"),
        admitted + 2.0,
        "every request the gateway answered, refused and unrouted ones too"
    );
    assert!(value(&samples, "process_resident_memory_bytes") > 0.0);
    assert!(value(&samples, "process_open_fds") > 0.0);
    let build = samples
        .iter()
        .find(|s| s.name == "tollgate_build_info")
        .unwrap();
    assert_eq!(build.value, 1.0);
    assert_eq!(build.labels["version"], env!("CARGO_PKG_VERSION"));
    assert!(build.labels["rustc"].starts_with("1."), "{build:?}");
    assert!(!build.labels["git_sha"].is_empty(), "{build:?}");
    gw.stop();
}
