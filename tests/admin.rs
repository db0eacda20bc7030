//! What users and operators see: the dashboard in a real browser, recommendations, and alerts
//! mailed through a real SMTP server.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod harness;

#[path = "admin/dashboard.rs"]
mod dashboard;
#[path = "admin/email.rs"]
mod email;
#[path = "admin/recommendations.rs"]
mod recommendations;
