//! Limits through the real binary: plan limits exact under concurrency and across instances,
//! budgets that clamp, true upper bounds for per-call providers, alerts at each threshold, what
//! operators set on users and keys, keys' own budgets and per-minute windows.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod harness;

#[path = "limits/alerts.rs"]
mod alerts;
#[path = "limits/bounds.rs"]
mod bounds;
#[path = "limits/budgets.rs"]
mod budgets;
#[path = "limits/key_budgets.rs"]
mod key_budgets;
#[path = "limits/key_controls.rs"]
mod key_controls;
#[path = "limits/plan_limits.rs"]
mod plan_limits;
