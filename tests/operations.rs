//! Running the gateway: `tollgate check`, the access log, live configuration, `/metrics`, and
//! upgrades without a closed port.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod harness;

#[path = "operations/access_log.rs"]
mod access_log;
#[path = "operations/check.rs"]
mod check;
#[path = "operations/encryption.rs"]
mod encryption;
#[path = "operations/live_config.rs"]
mod live_config;
#[path = "operations/metrics.rs"]
mod metrics;
#[path = "operations/upgrade.rs"]
mod upgrade;
