//! What users and operators see: the dashboard in a real browser, recommendations, alerts
//! mailed through a real SMTP server, and a user's data exported and erased.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod harness;

#[path = "admin/dashboard.rs"]
mod dashboard;
#[path = "admin/email.rs"]
mod email;
#[path = "admin/privacy.rs"]
mod privacy;
#[path = "admin/recommendations.rs"]
mod recommendations;
