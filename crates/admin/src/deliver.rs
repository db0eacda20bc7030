//! Delivery of raised alerts to the webhooks of `[alerts] webhook_urls`, once each, whatever
//! the number of gateway instances.
//!
//! Each instance runs a [`Deliverer`]. Every `delivery_interval_ms` it claims unsent alerts in
//! the ledger one by one (an atomic claim with a lease, so no two instances hold the same
//! alert), POSTs each as JSON to every URL, and records `is_sent`/`sent_at` — or, when a POST
//! fails, gives the alert back with the time of the next try, doubling the wait each time
//! (from `retry_backoff_initial_ms` up to `retry_backoff_max_ms`). The back-off lives in the
//! database, so it survives restarts and another instance may make the next try.
//!
//! Each POST carries `X-Tollgate-Timestamp` (Unix seconds) and
//! `X-Tollgate-Signature: sha256=<hex>`, the HMAC-SHA256 with the configured secret of
//! `<timestamp>.<raw body>`: a receiver recomputes it over the bytes it received, compares in
//! constant time and refuses an old timestamp, so a captured delivery cannot be replayed
//! later. `X-Tollgate-Delivery` names the alert, for receivers that deduplicate: an instance
//! that dies between a successful POST and recording it lets the lease expire, and the alert
//! is delivered again (at least once, exactly once in the absence of such crashes). With
//! several URLs, a retry goes to all of them again.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tollgate_config::AlertDelivery;
use tollgate_ledger::{ClaimedAlert, Ledger};
use tracing::{debug, warn};

use crate::error::{AdminError, Result};
use crate::model::AlertOut;
use crate::render::iso;
use crate::state::ConfigSource;
use crate::stats::alert_out;

/// Alerts claimed (one at a time) per round at most.
const BATCH: u32 = 50;

/// Signs webhook bodies with the shared secret.
#[derive(Clone)]
pub struct WebhookSigner {
    secret: Option<Vec<u8>>,
}

impl std::fmt::Debug for WebhookSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WebhookSigner(***)")
    }
}

impl WebhookSigner {
    pub fn new(secret: Option<&str>) -> WebhookSigner {
        WebhookSigner {
            secret: secret.map(|s| s.as_bytes().to_vec()),
        }
    }

    /// `sha256=<hex>` of `<timestamp>.<body>`, or `None` without a secret.
    pub fn sign(&self, timestamp: i64, body: &[u8]) -> Option<String> {
        let secret = self.secret.as_ref()?;
        let mut mac = Hmac::<Sha256>::new_from_slice(secret).ok()?;
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        Some(format!(
            "sha256={}",
            hex::encode(mac.finalize().into_bytes())
        ))
    }

    /// Whether `signature` is this signer's for `<timestamp>.<body>` (constant time).
    pub fn verify(&self, timestamp: i64, body: &[u8], signature: &str) -> bool {
        let (Some(secret), Some(hex_sig)) = (&self.secret, signature.strip_prefix("sha256="))
        else {
            return false;
        };
        let (Ok(expected), Ok(mut mac)) =
            (hex::decode(hex_sig), Hmac::<Sha256>::new_from_slice(secret))
        else {
            return false;
        };
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        mac.verify_slice(&expected).is_ok()
    }
}

/// The JSON body of a delivery.
#[derive(Debug, Serialize)]
pub struct WebhookPayload {
    /// Always `usage_alert`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// Stable across retries: `alert-<id>`.
    pub delivery_id: String,
    pub attempt: u32,
    pub sent_at: String,
    pub alert: AlertOut,
}

/// What one round did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Round {
    pub claimed: usize,
    pub delivered: usize,
    pub failed: usize,
}

/// Delivers alerts from one instance.
#[derive(Clone)]
pub struct Deliverer {
    ledger: Ledger,
    config: ConfigSource,
    owner: String,
    client: reqwest::Client,
}

impl std::fmt::Debug for Deliverer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deliverer")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl Deliverer {
    pub fn new(ledger: Ledger, config: ConfigSource) -> Result<Deliverer> {
        let client = reqwest::Client::builder()
            .user_agent(concat!("tollgate/", env!("CARGO_PKG_VERSION")))
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .map_err(|e| AdminError::Internal(format!("building the webhook client: {e}")))?;
        Ok(Deliverer {
            ledger,
            config,
            owner: format!("deliverer-{}", uuid::Uuid::now_v7().simple()),
            client,
        })
    }

    /// This instance's name in claims.
    pub fn owner(&self) -> &str {
        &self.owner
    }

    fn settings(&self) -> AlertDelivery {
        (self.config)().alert_delivery.clone()
    }

    /// Claims what is due and delivers it. Does nothing without webhook URLs.
    pub async fn deliver_once(&self) -> Result<Round> {
        let settings = self.settings();
        if settings.webhook_urls.is_empty() {
            return Ok(Round::default());
        }
        let mut round = Round::default();
        // One alert per claim: its lease then covers one attempt (which validation holds it
        // to), however slow the receiver. A batch claimed under one lease could see its last
        // alerts' leases run out while the first were delivered, and another instance deliver
        // them a second time.
        while round.claimed < BATCH as usize {
            let claimed = self
                .ledger
                .claim_unsent_alerts(&self.owner, Utc::now(), settings.delivery_lease_ms, 1)
                .await?;
            let Some(alert) = claimed.into_iter().next() else {
                break;
            };
            round.claimed += 1;
            match self.deliver(&settings, &alert).await {
                Ok(()) => {
                    if self
                        .ledger
                        .mark_alert_delivered(alert.alert.id, &self.owner)
                        .await?
                    {
                        round.delivered += 1;
                    }
                }
                Err(error) => {
                    let error = error.to_string();
                    round.failed += 1;
                    let retry_at = retry_at(&settings, alert.attempt, Utc::now());
                    warn!(alert = alert.alert.id, attempt = alert.attempt, %error, %retry_at,
                        "alert delivery failed; will retry");
                    self.ledger
                        .release_alert_claim(alert.alert.id, &self.owner, retry_at, &error)
                        .await?;
                }
            }
        }
        Ok(round)
    }

    /// POSTs the alert to every URL; the first failure fails the attempt.
    async fn deliver(&self, settings: &AlertDelivery, claimed: &ClaimedAlert) -> Result<()> {
        let payload = WebhookPayload {
            kind: "usage_alert",
            delivery_id: format!("alert-{}", claimed.alert.id),
            attempt: claimed.attempt,
            sent_at: iso(Utc::now()),
            alert: alert_out(&claimed.alert),
        };
        let body = serde_json::to_vec(&payload).map_err(|e| {
            AdminError::Internal(format!(
                "alert {}: encoding the webhook body: {e}",
                claimed.alert.id
            ))
        })?;
        let signer = WebhookSigner::new(settings.webhook_secret.as_ref().map(|s| s.expose()));
        for url in &settings.webhook_urls {
            let timestamp = Utc::now().timestamp();
            let mut request = self
                .client
                .post(url)
                .timeout(Duration::from_millis(settings.webhook_timeout_ms))
                .header("content-type", "application/json")
                .header("x-tollgate-event", "usage_alert")
                .header("x-tollgate-delivery", &payload.delivery_id)
                .header("x-tollgate-timestamp", timestamp.to_string());
            if let Some(signature) = signer.sign(timestamp, &body) {
                request = request.header("x-tollgate-signature", signature);
            }
            let response =
                request
                    .body(body.clone())
                    .send()
                    .await
                    .map_err(|e| AdminError::WebhookUnsent {
                        url: url.clone(),
                        problem: without_url(&e),
                    })?;
            let status = response.status();
            if !status.is_success() {
                return Err(AdminError::WebhookRefused {
                    url: url.clone(),
                    status,
                });
            }
            debug!(alert = claimed.alert.id, %url, "alert delivered");
        }
        Ok(())
    }

    /// Runs rounds every `delivery_interval_ms` until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            if let Err(e) = self.deliver_once().await {
                warn!(error = %e, "alert delivery round failed");
            }
            let wait = Duration::from_millis(self.settings().delivery_interval_ms);
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

/// When to try again after failed attempt number `attempt` (1-based): the initial back-off,
/// doubled per earlier attempt, capped.
pub fn retry_at(settings: &AlertDelivery, attempt: u32, now: DateTime<Utc>) -> DateTime<Utc> {
    let doublings = attempt.saturating_sub(1).min(32);
    let delay_ms = settings
        .retry_backoff_initial_ms
        .saturating_mul(1u64 << doublings)
        .min(settings.retry_backoff_max_ms);
    now + chrono::Duration::milliseconds(i64::try_from(delay_ms).unwrap_or(i64::MAX / 2))
}

/// What went wrong with a POST, without reqwest's text (which repeats the URL, and a URL may
/// carry a token in its query).
fn without_url(e: &reqwest::Error) -> &'static str {
    if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection failed"
    } else {
        "request failed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_verify_only_with_the_same_secret_body_and_time() {
        let signer = WebhookSigner::new(Some("whsec"));
        let sig = signer.sign(1_700_000_000, b"{\"a\":1}").unwrap();
        assert!(sig.starts_with("sha256=") && sig.len() == 7 + 64);
        assert!(signer.verify(1_700_000_000, b"{\"a\":1}", &sig));
        assert!(!signer.verify(1_700_000_001, b"{\"a\":1}", &sig));
        assert!(!signer.verify(1_700_000_000, b"{\"a\":2}", &sig));
        assert!(!WebhookSigner::new(Some("other")).verify(1_700_000_000, b"{\"a\":1}", &sig));
        assert!(WebhookSigner::new(None).sign(1, b"x").is_none());
    }
}
