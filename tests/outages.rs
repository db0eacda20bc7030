//! Nothing lost, nothing leaked: shutdown, `kill -9`, and every error path searched for secrets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod harness;

#[path = "outages/canary.rs"]
mod canary;
#[path = "outages/kill9.rs"]
mod kill9;
#[path = "outages/shutdown.rs"]
mod shutdown;
