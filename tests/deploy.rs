//! `deploy/`: what it ships, checked with the tools operators use, and its compose topology run as
//! processes on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod harness;
#[path = "deploy/support/mod.rs"]
mod support;

#[path = "deploy/shipped.rs"]
mod shipped;
#[path = "deploy/topology.rs"]
mod topology;
