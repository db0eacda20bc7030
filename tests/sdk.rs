//! The official Python SDKs against the real binary: byte-identical answers, and refusals the
//! SDKs treat at their default settings as they would the provider's own.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod harness;

#[path = "sdk/official.rs"]
mod official;
