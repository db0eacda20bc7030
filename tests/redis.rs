//! Counters shared through Redis when Redis misbehaves: clients hanging up leave nothing held,
//! and Redis killed under load.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod harness;

#[path = "redis/hangups.rs"]
mod hangups;
#[path = "redis/outage.rs"]
mod outage;
