//! Refusals: what the gateway must refuse, in each provider's own shape, and the row each
//! refused call leaves in the ledger.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod harness;

#[path = "refusals/edges.rs"]
mod edges;
#[path = "refusals/recorded.rs"]
mod recorded;
