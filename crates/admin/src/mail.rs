//! Delivery of raised alerts by e-mail (`[alerts.email]`), once each, whatever the number of
//! gateway instances.
//!
//! A [`Mailer`] works like the webhook [`Deliverer`](crate::Deliverer) beside it, on a delivery
//! state of its own in the ledger: every `delivery_interval_ms` it claims alerts not yet mailed
//! (one per claim, under a lease), sends each as one message — to the user whose limit it is,
//! when the ledger has their address, and to the operators in `Bcc` — and records it mailed,
//! or gives it back with the time of the next try (the same doubling back-off as webhooks).
//! It runs on the admin runtime, never on a call's path, so a mail server that is slow or down
//! delays nothing but mail.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};
use tollgate_config::{AlertDelivery, EmailSettings, SmtpTls};
use tollgate_domain::{BillingPeriod, Limit, amount};
use tollgate_ledger::{Alert, ClaimedAlert, Ledger};
use tracing::{debug, warn};

use crate::account;
use crate::deliver::{Round, retry_at};
use crate::error::{AdminError, Result};
use crate::state::ConfigSource;

/// Alerts claimed (one at a time) per round at most.
const BATCH: u32 = 50;

/// A message about one alert, before addressing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AlertMail {
    pub subject: String,
    pub body: String,
}

/// What an alert's message says: the alert's own sentence (the amount used and the limit), the
/// threshold, the limit as the plan sets it now, when the period resets, and the dashboard.
pub fn compose(
    alert: &Alert,
    limit: Option<Limit>,
    resets_at: Option<DateTime<Utc>>,
    dashboard_url: &str,
) -> AlertMail {
    let mut body = format!("{}\n\n{}\n\n", alert.title, alert.message);
    body.push_str(&format!(
        "Limit:      {}\nThreshold:  {}% of the limit\n",
        alert.limit_key, alert.threshold_percentage
    ));
    if let Some(limit) = limit {
        body.push_str(&format!(
            "Allowed:    {} per billing period\n",
            amount(limit.key, limit.max)
        ));
    }
    body.push_str(&format!("Period:     {}\n", alert.billing_period));
    if let Some(at) = resets_at {
        body.push_str(&format!(
            "Resets:     {}\n",
            at.format("%Y-%m-%d %H:%M UTC")
        ));
    }
    body.push_str(&format!(
        "\nSee your usage: {dashboard_url}\n\n-- \nTollgate usage alerts for user {}\n",
        alert.user_id
    ));
    AlertMail {
        subject: format!("[Tollgate] {}", alert.title),
        body,
    }
}

/// Who gets an alert's message: the user (when they have an address and users are mailed) and
/// the operators.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Recipients {
    user: Option<String>,
    operators: Vec<String>,
}

impl Recipients {
    fn is_empty(&self) -> bool {
        self.user.is_none() && self.operators.is_empty()
    }
}

/// Mails alerts from one instance.
#[derive(Clone)]
pub struct Mailer {
    ledger: Ledger,
    config: ConfigSource,
    owner: String,
}

impl std::fmt::Debug for Mailer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mailer")
            .field("owner", &self.owner)
            .finish_non_exhaustive()
    }
}

impl Mailer {
    pub fn new(ledger: Ledger, config: ConfigSource) -> Mailer {
        Mailer {
            ledger,
            config,
            owner: format!("mailer-{}", uuid::Uuid::now_v7().simple()),
        }
    }

    fn settings(&self) -> AlertDelivery {
        (self.config)().alert_delivery.clone()
    }

    /// Claims what is due and mails it. Does nothing without `[alerts.email]`.
    pub async fn mail_once(&self) -> Result<Round> {
        let delivery = self.settings();
        let Some(email) = &delivery.email else {
            return Ok(Round::default());
        };
        let mut round = Round::default();
        while round.claimed < BATCH as usize {
            let claimed = self
                .ledger
                .claim_unmailed_alerts(&self.owner, Utc::now(), delivery.delivery_lease_ms, 1)
                .await?;
            let Some(alert) = claimed.into_iter().next() else {
                break;
            };
            round.claimed += 1;
            match self.mail(email, &alert).await {
                Ok(()) => {
                    if self
                        .ledger
                        .mark_alert_mailed(alert.alert.id, &self.owner)
                        .await?
                    {
                        round.delivered += 1;
                    }
                }
                Err(error) => {
                    let error = error.to_string();
                    round.failed += 1;
                    let retry_at = retry_at(&delivery, alert.attempt, Utc::now());
                    warn!(alert = alert.alert.id, attempt = alert.attempt, %error, %retry_at,
                        "alert e-mail failed; will retry");
                    self.ledger
                        .release_alert_mail_claim(alert.alert.id, &self.owner, retry_at, &error)
                        .await?;
                }
            }
        }
        Ok(round)
    }

    /// Sends one alert's message; an alert no one is to receive counts as mailed.
    async fn mail(&self, email: &EmailSettings, claimed: &ClaimedAlert) -> Result<()> {
        let alert = &claimed.alert;
        let config = (self.config)();
        let account = account::load(&self.ledger, &config, &alert.user_id)
            .await
            .ok();
        let recipients = Recipients {
            user: account
                .as_ref()
                .and_then(|a| a.user.as_ref())
                .and_then(|u| u.email.clone())
                .filter(|_| email.send_to_users),
            operators: email.operator_addresses.clone(),
        };
        if recipients.is_empty() {
            debug!(alert = alert.id, "alert has no e-mail recipient");
            return Ok(());
        }
        let limit = account.as_ref().and_then(|a| {
            a.plan
                .all_limits()
                .into_iter()
                .find(|l| l.key.name() == alert.limit_key)
        });
        let resets_at = account
            .as_ref()
            .and_then(|a| BillingPeriod::from_key(&alert.billing_period, a.anchor).ok())
            .map(BillingPeriod::end);
        let mail = compose(alert, limit, resets_at, &email.dashboard_url);
        let message = message(email, &recipients, mail, alert.id)?;
        let unsent = |problem: String| AdminError::MailUnsent {
            server: format!("{}:{}", email.smtp_host, email.smtp_port),
            problem,
        };
        // lettre's own timeout bounds the TCP connect and each command's answer, but not the
        // greeting, the TLS handshake or a server that trickles its replies: a server that
        // accepts and never speaks would hold this alert, and every alert after it, for good.
        // The whole conversation is bounded here instead.
        let timeout = Duration::from_millis(email.timeout_ms);
        match tokio::time::timeout(timeout, transport(email)?.send(message)).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(unsent(e.to_string())),
            Err(_) => {
                return Err(unsent(format!(
                    "no complete answer within timeout_ms ({} ms)",
                    email.timeout_ms
                )));
            }
        }
        debug!(alert = alert.id, "alert mailed");
        Ok(())
    }

    /// Runs rounds every `delivery_interval_ms` until `shutdown` completes.
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            if let Err(e) = self.mail_once().await {
                warn!(error = %e, "alert e-mail round failed");
            }
            let wait = Duration::from_millis(self.settings().delivery_interval_ms);
            tokio::select! {
                () = &mut shutdown => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

fn message(
    email: &EmailSettings,
    recipients: &Recipients,
    mail: AlertMail,
    alert_id: i64,
) -> Result<Message> {
    let mailbox = |text: &str| {
        text.parse::<Mailbox>()
            .map_err(|e| AdminError::Internal(format!("alert {alert_id}: address {text:?}: {e}")))
    };
    let mut builder = Message::builder()
        .from(mailbox(&email.from)?)
        .subject(mail.subject)
        .header(ContentType::TEXT_PLAIN);
    // Operators go in Bcc (which is not sent with the message) so that the user does not see
    // their addresses; without a user the first operator is the visible recipient.
    let mut operators = recipients.operators.iter();
    match &recipients.user {
        Some(user) => builder = builder.to(mailbox(user)?),
        None => {
            if let Some(first) = operators.next() {
                builder = builder.to(mailbox(first)?);
            }
        }
    }
    for operator in operators {
        builder = builder.bcc(mailbox(operator)?);
    }
    builder
        .body(mail.body)
        .map_err(|e| AdminError::Internal(format!("alert {alert_id}: building the message: {e}")))
}

fn transport(email: &EmailSettings) -> Result<AsyncSmtpTransport<Tokio1Executor>> {
    // The server's certificate must chain to the public roots, or to the operator's own CA
    // (`ca_file`), which is trusted beside them.
    let tls = |host: &str| {
        let problem = |e: lettre::transport::smtp::Error| {
            AdminError::Internal(format!("TLS for SMTP host {host}: {e}"))
        };
        let mut builder = TlsParameters::builder(host.to_owned());
        if let Some(ca) = &email.ca_file {
            let roots = Certificate::from_pem(&ca.pem)
                .map_err(|e| AdminError::Internal(format!("ca_file {}: {e}", ca.path.display())))?;
            builder = builder.add_root_certificate(roots);
        }
        builder.build_rustls().map_err(problem)
    };
    let host = email.smtp_host.as_str();
    let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
        .port(email.smtp_port)
        .timeout(Some(Duration::from_millis(email.timeout_ms)))
        .tls(match email.tls {
            SmtpTls::Starttls => Tls::Required(tls(host)?),
            SmtpTls::Implicit => Tls::Wrapper(tls(host)?),
            SmtpTls::None => Tls::None,
        });
    let builder = match &email.credentials {
        Some(c) => builder.credentials(Credentials::new(
            c.username.expose().to_owned(),
            c.password.expose().to_owned(),
        )),
        None => builder,
    };
    Ok(builder.build())
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use tollgate_domain::LimitKey;

    use super::*;

    fn alert() -> Alert {
        Alert {
            id: 7,
            user_id: "alice".to_owned(),
            billing_period: "2026-12".to_owned(),
            limit_key: "monthly_cost".to_owned(),
            threshold_percentage: 90,
            alert_type: "usage_warning".to_owned(),
            provider: None,
            title: "Usage Warning - Monthly Cost".to_owned(),
            message: "You have used $1.80 of $2.00 monthly cost (90% of your limit; alert \
                      threshold 90%)."
                .to_owned(),
            severity: "warning".to_owned(),
            is_sent: false,
            sent_at: None,
            is_read: false,
            read_at: None,
            created_at: Utc.with_ymd_and_hms(2026, 12, 6, 12, 0, 0).unwrap(),
        }
    }

    #[test]
    fn the_message_names_limit_percentage_amounts_reset_and_dashboard() {
        let limit = Limit {
            key: LimitKey::Cost,
            max: 2_000_000_000,
        };
        let reset = Utc.with_ymd_and_hms(2027, 1, 1, 0, 0, 0).unwrap();
        let mail = compose(
            &alert(),
            Some(limit),
            Some(reset),
            "https://gw.example/dashboard",
        );
        assert_eq!(mail.subject, "[Tollgate] Usage Warning - Monthly Cost");
        for part in [
            "You have used $1.80 of $2.00 monthly cost",
            "Limit:      monthly_cost",
            "Threshold:  90% of the limit",
            "Allowed:    $2.00 per billing period",
            "Resets:     2027-01-01 00:00 UTC",
            "https://gw.example/dashboard",
        ] {
            assert!(
                mail.body.contains(part),
                "{part:?} missing from:\n{}",
                mail.body
            );
        }
    }
}
