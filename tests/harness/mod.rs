//! What every end-to-end test of the binary needs, a module per thing it starts or reads: the
//! real `tollgate run` (`gateway`), under a supervisor that outlives no test (`process`); Redis,
//! private or shared (`redis`); the ledger read back (`ledger`); a scripted mock upstream that
//! records every request (`mock`); `/metrics` parsed and checked by `promtool` (`metrics`); raw HTTP/1.1 requests, so the bytes on the wire are exactly
//! what the test says (`client`); headless Chromium driven over WebDriver (`browser`); the keys
//! the tests hand out (`keys`); the official Python SDKs run against the gateway (`sdk`); a real
//! SMTP server that keeps what it is sent (`smtp`). Everything is re-exported here, as
//! `harness::…`.

// Each area is a test crate of its own that uses a different part of the harness: what one
// leaves unused is neither dead code nor an unused re-export.
#![allow(dead_code)]

mod browser;
mod client;
mod gateway;
mod keys;
mod ledger;
mod metrics;
mod mock;
mod process;
mod redis;
mod sdk;
mod smtp;

#[allow(unused_imports)]
pub use self::{
    browser::Browser,
    client::{
        Response, admin_json, at_once, dechunk, parse_response, post_json, post_json_chunked,
        request, send_raw,
    },
    gateway::Gateway,
    keys::{assert_key_swapped, client_key, key_entry, provider_key},
    ledger::{
        UsageLog, all_rows, ledger_alerts, ledger_mail_states, ledger_rows, refused_rows,
        reopen_ledger, wait_rows,
    },
    metrics::{Sample, parse_samples, promtool_check, sample_value},
    mock::{Mock, Reply, Seen, fixture},
    process::{free_port, well_inside_a_minute},
    redis::{RedisServer, redis_cleanup, redis_url},
    sdk::{run_sdk_script, sdk_python},
    smtp::{Mail, ServerCertificate, SmtpServer, SmtpTlsMode, SmtpTlsOptions, TestCa},
};
