//! `tollgate check` as an operator runs it: on the shipped files, and on a copy with mistakes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn check(config: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tollgate-e2e"))
        .args(["check", "--config"])
        .arg(config)
        .output()
        .expect("run tollgate check")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
    }
}

#[test]
fn shipped_files_are_clean() {
    let out = check(&repo_root().join("gateway.toml"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(!stderr.contains("error"), "{stderr}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("ok — 9 providers, 4 plans"), "{stdout}");
}

#[test]
fn three_mistakes_are_all_named_with_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let root = repo_root();
    copy_dir(&root.join("pricing"), &dir.path().join("pricing"));

    // 1. An unknown provider in a plan.
    let gateway = std::fs::read_to_string(root.join("gateway.toml"))
        .unwrap()
        .replace(
            "openai = { calls = 500, tokens = 500000 }",
            "openia = { calls = 500, tokens = 500000 }",
        );
    // 2. A negative limit.
    let gateway = gateway.replace(
        "stability = { calls = 200 }",
        "stability = { calls = -200 }",
    );
    std::fs::write(dir.path().join("gateway.toml"), &gateway).unwrap();
    // 3. A model with no price.
    let openai = dir.path().join("pricing/openai.toml");
    let mut prices = std::fs::read_to_string(&openai).unwrap();
    prices.push_str("\n[models.\"gpt-unpriced\"]\nmax_output_tokens = 100\n");
    std::fs::write(&openai, &prices).unwrap();

    let line_of =
        |text: &str, needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let out = check(&dir.path().join("gateway.toml"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let expect = [
        format!(
            "gateway.toml:{}: error: plans.basic.providers.openia: unknown provider \"openia\"",
            line_of(&gateway, "openia =")
        ),
        format!(
            "gateway.toml:{}: error: plans.pro.providers.stability.calls: -200 is negative",
            line_of(&gateway, "calls = -200")
        ),
        format!(
            "openai.toml:{}: error: models.gpt-unpriced: model \"gpt-unpriced\" has no price",
            line_of(&prices, "[models.\"gpt-unpriced\"]")
        ),
    ];
    for e in &expect {
        assert!(stderr.contains(e.as_str()), "missing {e:?} in:\n{stderr}");
    }
    assert!(stderr.contains("3 error(s)"), "{stderr}");
}

#[test]
fn email_settings_are_checked_with_their_lines() {
    let dir = tempfile::tempdir().unwrap();
    let root = repo_root();
    copy_dir(&root.join("pricing"), &dir.path().join("pricing"));
    let mut gateway = std::fs::read_to_string(root.join("gateway.toml")).unwrap();
    gateway.push_str(
        r#"
[alerts.email]
smtp_host = "smtp.example.com"
tls = "ssl"
from = "alerts"
username_env = "TG_CHECK_SMTP_USER_NEVER_SET"
password_env = "TG_CHECK_SMTP_PASSWORD_NEVER_SET"
operator_addresses = ["ops@example.com"]
dashboard_url = "gateway.example.com/dashboard"
ca_file = "no-such-ca.pem"
"#,
    );
    std::fs::write(dir.path().join("gateway.toml"), &gateway).unwrap();
    // The last match: the shipped file carries a commented-out example of the table.
    let line_of = |needle: &str| {
        let lines: Vec<&str> = gateway.lines().collect();
        lines.iter().rposition(|l| l.contains(needle)).unwrap() + 1
    };
    let out = check(&dir.path().join("gateway.toml"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    for e in [
        format!(
            "gateway.toml:{}: error: alerts.email.tls: \"ssl\" is not a TLS mode",
            line_of("tls = \"ssl\"")
        ),
        format!(
            "gateway.toml:{}: error: alerts.email.from: \"alerts\" is not a mailbox",
            line_of("from = \"alerts\"")
        ),
        format!(
            "gateway.toml:{}: error: alerts.email.password_env: environment variable \
             TG_CHECK_SMTP_PASSWORD_NEVER_SET is not set",
            line_of("password_env =")
        ),
        format!(
            "gateway.toml:{}: error: alerts.email.dashboard_url: \"gateway.example.com/dashboard\" \
             is not an http:// or https:// URL",
            line_of("dashboard_url =")
        ),
        format!(
            "gateway.toml:{}: error: alerts.email.ca_file: cannot read {}",
            line_of("ca_file ="),
            dir.path().join("no-such-ca.pem").display()
        ),
    ] {
        assert!(stderr.contains(e.as_str()), "missing {e:?} in:\n{stderr}");
    }
    assert!(stderr.contains("6 error(s)"), "{stderr}");
}

#[test]
fn usage_data_stored_unencrypted_is_a_warning_and_a_key_silences_it() {
    let warning = "warning: ledger.database_key_env: usage data is stored unencrypted";
    let shipped = check(&repo_root().join("gateway.toml"));
    let stderr = String::from_utf8_lossy(&shipped.stderr);
    assert!(shipped.status.success(), "{stderr}");
    assert!(stderr.contains(warning), "{stderr}");
    assert!(
        String::from_utf8_lossy(&shipped.stdout).contains("warning(s)"),
        "counted like the configuration's own warnings"
    );

    let dir = tempfile::tempdir().unwrap();
    let root = repo_root();
    copy_dir(&root.join("pricing"), &dir.path().join("pricing"));
    let gateway = std::fs::read_to_string(root.join("gateway.toml"))
        .unwrap()
        .replace("# database_key_env =", "database_key_env =");
    std::fs::write(dir.path().join("gateway.toml"), &gateway).unwrap();
    let run = |key: &str| {
        Command::new(env!("CARGO_BIN_EXE_tollgate-e2e"))
            .args(["check", "--config"])
            .arg(dir.path().join("gateway.toml"))
            .env("TOLLGATE_LEDGER_KEY", key)
            .output()
            .unwrap()
    };
    let keyed = run(&"7e".repeat(32));
    let stderr = String::from_utf8_lossy(&keyed.stderr);
    assert!(keyed.status.success(), "{stderr}");
    assert!(!stderr.contains("unencrypted"), "{stderr}");
    let short = run("7e7e");
    let stderr = String::from_utf8_lossy(&short.stderr);
    assert!(!short.status.success(), "{stderr}");
    assert!(
        stderr.contains("error: ledger.database_key_env: the ledger key must be 64 hex digits"),
        "{stderr}"
    );
}
