//! Shared test set-up: a real ledger (a SQLite file in a temp dir, or a fresh PostgreSQL
//! database that is dropped afterwards), a configuration loaded from a gateway.toml written
//! for the test, and the admin API served on 127.0.0.1:0.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::oneshot;
use tollgate_admin::{AdminState, AdminTokens};
use tollgate_config::Config;
use tollgate_domain::{Cost, Provider, Usage};
use tollgate_ledger::test_database::TestDatabase;
use tollgate_ledger::{DbOptions, Ledger, UsageEvent};

pub const ADMIN_TOKEN: &str = "admin-token-for-tests";
pub const STATIC_KEY: &str = "tg_static_carol_key";
pub const WEBHOOK_SECRET: &str = "whsec_test_secret";

/// A database for one test, removed when dropped.
pub struct TestDb {
    pub url: String,
    pub dir: tempfile::TempDir,
    _pg: Option<TestDatabase>,
}

impl TestDb {
    pub fn sqlite() -> TestDb {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}", dir.path().join("ledger.db").display());
        TestDb {
            url,
            dir,
            _pg: None,
        }
    }

    pub async fn postgres() -> TestDb {
        let pg = TestDatabase::create("admin");
        TestDb {
            url: pg.url.clone(),
            dir: tempfile::tempdir().unwrap(),
            _pg: Some(pg),
        }
    }

    pub async fn connect(&self) -> Ledger {
        Ledger::connect(&self.url, DbOptions::default())
            .await
            .unwrap()
    }
}

pub fn sha256_hex(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// A gateway.toml for tests: small limits, the repository's pricing, a static key for
/// `carol`, and the given extra `[alerts]` lines.
pub fn gateway_toml(alerts: &str) -> String {
    let pricing = concat!(env!("CARGO_MANIFEST_DIR"), "/../../pricing");
    let carol = sha256_hex(STATIC_KEY);
    format!(
        r#"
default_plan = "free"

[admin]
cors_allowed_origins = ["https://app.example.com"]

[pricing]
dir = "{pricing}"

[alerts]
thresholds = [80, 90, 100]
{alerts}

[plans.free]
name = "Free"
tier = "free"
price_monthly = "0"
description = "Free"
features = ["basic_content_generation", "limited_research"]
cost_cap = "2.00"

[plans.free.providers]
gemini = {{ calls = 100, tokens = 100000 }}
openai = {{ calls = 0 }}
anthropic = {{ calls = 0 }}
mistral = {{ calls = 50 }}
tavily = {{ calls = 20 }}
serper = {{ calls = 20 }}
exa = {{ calls = 10 }}
firecrawl = {{ calls = 10 }}
stability = {{ calls = 5 }}

[plans.pro]
name = "Pro"
tier = "pro"
price_monthly = "79"
price_yearly = "790"
description = "Pro"
features = ["premium_research"]
cost_cap = "150.00"
total_calls = 100000

[plans.pro.providers]
gemini = {{ calls = 5000, tokens = 5000000 }}
openai = {{ calls = 2500, tokens = 2500000 }}
tavily = {{ calls = 1000 }}

[[keys]]
user = "carol"
plan = "pro"
sha256 = "{carol}"
name = "carol's static key"
"#
    )
}

pub fn load_config(dir: &std::path::Path, alerts: &str) -> Arc<Config> {
    let path = dir.join("gateway.toml");
    std::fs::write(&path, gateway_toml(alerts)).unwrap();
    let env = |name: &str| match name {
        "TOLLGATE_WEBHOOK_SECRET" => Some(WEBHOOK_SECRET.to_owned()),
        // The providers' keys: `/status` says whether a call could be made, which needs a key.
        _ if name.ends_with("_API_KEY") => Some("sk-test".to_owned()),
        _ => None,
    };
    match tollgate_config::load_with_env(&path, &env) {
        Ok(loaded) => Arc::new(loaded.config),
        Err(report) => panic!("test config does not load:\n{report}"),
    }
}

/// The admin API served on a free port, stopped when dropped.
pub struct Server {
    pub addr: SocketAddr,
    pub ledger: Ledger,
    pub config: Arc<Config>,
    pub client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
}

impl Server {
    pub async fn start(ledger: Ledger, config: Arc<Config>) -> Server {
        Server::start_with(ledger, config, |state| state).await
    }

    /// [`Server::start`], with the state changed by `adjust` first.
    pub async fn start_with(
        ledger: Ledger,
        config: Arc<Config>,
        adjust: impl FnOnce(AdminState) -> AdminState,
    ) -> Server {
        let state = AdminState::with_fixed_config(
            ledger.clone(),
            Arc::clone(&config),
            AdminTokens::new([ADMIN_TOKEN]),
        )
        .with_metrics(Arc::new(|| {
            "# TYPE tollgate_test_metric counter\ntollgate_test_metric 1\n".to_owned()
        }));
        let state = adjust(state);
        let (listener, addr) = tollgate_admin::bind("127.0.0.1:0".parse().unwrap())
            .await
            .unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        tokio::spawn(tollgate_admin::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        Server {
            addr,
            ledger,
            config,
            client: reqwest::Client::new(),
            stop: Some(stop),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A request with `token` as bearer (none when empty).
    pub fn request(&self, method: &str, path: &str, token: &str) -> reqwest::RequestBuilder {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let rb = self.client.request(method, self.url(path));
        if token.is_empty() {
            rb
        } else {
            rb.bearer_auth(token)
        }
    }

    /// GET as admin; status and JSON body.
    pub async fn get(&self, path: &str, token: &str) -> (u16, serde_json::Value) {
        let r = self.request("GET", path, token).send().await.unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }

    pub async fn send_json(
        &self,
        method: &str,
        path: &str,
        token: &str,
        body: serde_json::Value,
    ) -> (u16, serde_json::Value) {
        let r = self
            .request(method, path, token)
            .json(&body)
            .send()
            .await
            .unwrap();
        let status = r.status().as_u16();
        (status, r.json().await.unwrap_or(serde_json::Value::Null))
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A settled call of `user` to `provider` now, with `tokens` input tokens costing `cost_nanousd`.
pub fn call(
    user: &str,
    provider: Provider,
    tokens: u64,
    cost_nanousd: u64,
    status: u16,
    at: DateTime<Utc>,
) -> UsageEvent {
    UsageEvent {
        event_id: UsageEvent::new_id(),
        user_id: user.to_owned(),
        key_id: Some("key-test".into()),
        provider,
        model: "gemini-2.5-flash".into(),
        endpoint: "/v1beta/models/gemini-2.5-flash:generateContent".into(),
        method: "POST".into(),
        status,
        usage: Usage {
            input_tokens: tokens,
            ..Usage::default()
        },
        cost: Cost {
            input_nanousd: cost_nanousd,
            output_nanousd: 0,
            other_nanousd: 0,
            total_nanousd: cost_nanousd,
        },
        price_version: "test".into(),
        estimated: false,
        latency_ms: 120,
        request_bytes: 100,
        response_bytes: 200,
        billing_period: UsageEvent::calendar_period(at),
        occurred_at: at,
        error_message: (status >= 400).then(|| "upstream said no".to_owned()),
        request_id: Some("req-admin-test".to_owned()),
        refusal_reason: None,
    }
}
