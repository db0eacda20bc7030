//! Every provider through the real binary: OpenAI's wire format in depth, each provider beyond it
//! against a mock that answers in its own format, and usage no call could have used.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

mod harness;

#[path = "providers/beyond_openai.rs"]
mod beyond_openai;
#[path = "providers/implausible_usage.rs"]
mod implausible_usage;
#[path = "providers/openai.rs"]
mod openai;
