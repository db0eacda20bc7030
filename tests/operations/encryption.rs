//! Usage data encrypted at rest, through the real gateway: with `[ledger] database_key_env` a
//! call's row is in the ledger but nothing of it is readable in the files, and a start with
//! another key is refused with a message saying so.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use crate::harness;

use std::path::Path;
use std::process::Command;

use harness::{Gateway, Mock, Reply, key_entry, post_json};

const CLIENT_KEY: &str = "tg_canary_client_0123456789";
const LEDGER_KEY: &str = "5e0f9d8c7b6a59483726150f1e2d3c4b5a69788796a5b4c3d2e1f00112233445";
const OTHER_KEY: &str = "1111111111111111111111111111111111111111111111111111111111111111";
/// A dated model name, priced, that no other file of the gateway's directory holds.
const MODEL: &str = "gpt-4o-2024-08-06";

fn start(upstream_port: u16) -> Gateway {
    let rest = format!(
        r#"
[providers.openai]
base_url = "http://127.0.0.1:{upstream_port}"
key_env = "TG_TEST_PROVIDER_KEY"
[plans.test]
name = "Test"
tier = "pro"
[plans.test.providers]
openai = {{ calls = 100 }}
{key}"#,
        key = key_entry("canary-user-7", "test", CLIENT_KEY),
    );
    Gateway::start_with_ledger(
        "sqlite://ledger.db",
        "database_key_env = \"TG_TEST_LEDGER_KEY\"",
        &rest,
        &[
            ("TG_TEST_PROVIDER_KEY", "sk-upstream"),
            ("TG_TEST_LEDGER_KEY", LEDGER_KEY),
        ],
    )
}

fn files_holding(dir: &Path, needle: &str, out: &mut Vec<String>) {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // A directory the gateway removed since its parent was listed.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            files_holding(&path, needle, out);
        } else if path.file_name().is_some_and(|n| n != "gateway.toml") {
            // A file the running gateway removed since the listing (a rotated or drained
            // one) holds nothing any more.
            let bytes = match std::fs::read(&path) {
                Ok(bytes) => bytes,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => panic!("{}: {e}", path.display()),
            };
            if bytes.windows(needle.len()).any(|w| w == needle.as_bytes()) {
                out.push(path.display().to_string());
            }
        }
    }
}

#[test]
fn a_call_recorded_with_a_key_leaves_nothing_readable_and_another_key_is_refused() {
    let mock = Mock::with_handler(|_| {
        Reply::json(format!(
            r#"{{"id":"c1","object":"chat.completion","model":"{MODEL}","choices":[{{"index":0,"message":{{"role":"assistant","content":"Hi"}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":7,"completion_tokens":3,"total_tokens":10}}}}"#
        ))
    });
    let gw = start(mock.port);
    let body = format!(r#"{{"model":"{MODEL}","messages":[{{"role":"user","content":"Hi"}}]}}"#);
    let auth = format!("Bearer {CLIENT_KEY}");
    for _ in 0..3 {
        let made = post_json(
            gw.port,
            "/openai/v1/chat/completions",
            &[("authorization", &auth)],
            &body,
        );
        assert_eq!(made.status, 200, "{}", made.text());
    }
    let config = gw.config_path();
    let url = gw.ledger_url();
    let dir = gw.stop();

    // The rows are there, read with the key...
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let rows = runtime.block_on(async {
        let options = tollgate_ledger::DbOptions {
            key: Some(tollgate_ledger::LedgerKey::from_hex(LEDGER_KEY).unwrap()),
            ..tollgate_ledger::DbOptions::default()
        };
        let ledger = tollgate_ledger::Ledger::connect(&url, options)
            .await
            .unwrap();
        let page = ledger
            .usage_logs(
                &tollgate_ledger::LogFilter {
                    user_id: Some("canary-user-7".into()),
                    ..Default::default()
                },
                10,
                0,
            )
            .await
            .unwrap()
            .rows;
        ledger.close().await;
        page
    });
    assert_eq!(rows.len(), 3);
    assert!(rows.iter().all(|r| r.model == MODEL));
    // ...and neither the user nor the model is in any file of the gateway's directory.
    for needle in ["canary-user-7", MODEL] {
        let mut found = Vec::new();
        files_holding(dir.path(), needle, &mut found);
        assert!(found.is_empty(), "{needle} readable in {found:?}");
    }

    // Another key: refused at start, with the reason.
    let out = Command::new(env!("CARGO_BIN_EXE_tollgate-e2e"))
        .args(["run", "--config"])
        .arg(&config)
        .env("TG_TEST_PROVIDER_KEY", "sk-upstream")
        .env("TG_TEST_LEDGER_KEY", OTHER_KEY)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("cannot be opened with the configured key"),
        "{stderr}"
    );
    assert!(!stderr.contains(OTHER_KEY) && !stderr.contains(LEDGER_KEY));
}
