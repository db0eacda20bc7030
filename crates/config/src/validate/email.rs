//! `[alerts.email]`: the SMTP server alerts are mailed through, who receives them, and the
//! dashboard they link to. Credentials come from environment variables the file names, never
//! from the file; an operator's own CA comes from a PEM file it names.

use std::path::Path;

use crate::problem::FileProblems;
use crate::raw;
use crate::settings::{CaFile, EmailSettings, Secret, SmtpCredentials, SmtpTls};

use super::{Env, count};

pub(super) fn email(
    p: &mut FileProblems,
    raw: &raw::Email,
    base_dir: &Path,
    env: Env<'_>,
) -> EmailSettings {
    let at = |key| ["alerts", "email", key];
    let smtp_host = raw.smtp_host.clone().unwrap_or_default();
    if smtp_host.trim().is_empty() || smtp_host.contains(['/', ' ', ':']) {
        p.error(
            &at("smtp_host"),
            format!(
                "{smtp_host:?} is not a host name (expected e.g. \"smtp.example.com\", \
                 without scheme or port)"
            ),
        );
    }
    let tls = match raw.tls.as_deref() {
        None | Some("starttls") => SmtpTls::Starttls,
        Some("implicit") => SmtpTls::Implicit,
        Some("none") => SmtpTls::None,
        Some(other) => {
            p.error(
                &at("tls"),
                format!(
                    "{other:?} is not a TLS mode (expected \"starttls\", \"implicit\" or \"none\")"
                ),
            );
            SmtpTls::Starttls
        }
    };
    let smtp_port = match raw.smtp_port {
        None => tls.default_port(),
        Some(port) => u16::try_from(port)
            .ok()
            .filter(|&port| port > 0)
            .unwrap_or_else(|| {
                p.error(
                    &at("smtp_port"),
                    format!("{port} is not a TCP port (expected 1 to 65535)"),
                );
                tls.default_port()
            }),
    };
    let from = raw.from.clone().unwrap_or_default();
    if !is_mailbox(&from) {
        p.error(
            &at("from"),
            format!(
                "{from:?} is not a mailbox (expected \"alerts@example.com\" or \
                 \"Tollgate <alerts@example.com>\")"
            ),
        );
    }
    let operator_addresses = raw.operator_addresses.clone().unwrap_or_default();
    for (i, address) in operator_addresses.iter().enumerate() {
        if !is_address(address) {
            p.error(
                &["alerts", "email", "operator_addresses", &i.to_string()],
                format!("{address:?} is not an e-mail address (expected name@domain)"),
            );
        }
    }
    let send_to_users = raw.send_to_users.unwrap_or(true);
    if operator_addresses.is_empty() && !send_to_users {
        p.error(
            &at("send_to_users"),
            "with send_to_users = false and no operator_addresses no one would get a message; \
             name operator addresses or remove [alerts.email]",
        );
    }
    let dashboard_url = raw.dashboard_url.clone().unwrap_or_default();
    let host = dashboard_url
        .strip_prefix("https://")
        .or_else(|| dashboard_url.strip_prefix("http://"));
    if host.is_none_or(|h| h.is_empty() || h.starts_with('/')) {
        p.error(
            &at("dashboard_url"),
            format!(
                "{dashboard_url:?} is not an http:// or https:// URL with a host (the link in \
                 every message, e.g. \"https://gateway.example.com:9090/dashboard\")"
            ),
        );
    }
    EmailSettings {
        smtp_host,
        smtp_port,
        tls,
        credentials: credentials(p, raw, env),
        from,
        operator_addresses,
        send_to_users,
        dashboard_url,
        timeout_ms: count(p, &at("timeout_ms"), raw.timeout_ms, 10_000, 1),
        ca_file: raw
            .ca_file
            .as_deref()
            .and_then(|file| ca_file(p, base_dir, file, tls)),
    }
}

/// The CA certificates in `file` (relative to the configuration's directory), which must be
/// readable and hold at least one PEM `CERTIFICATE` block.
fn ca_file(p: &mut FileProblems, base_dir: &Path, file: &str, tls: SmtpTls) -> Option<CaFile> {
    let at = ["alerts", "email", "ca_file"];
    if tls == SmtpTls::None {
        p.error(
            &at,
            "a CA file with tls = \"none\" would never be used; set tls to \"starttls\" or \
             \"implicit\", or remove ca_file",
        );
        return None;
    }
    let path = base_dir.join(file);
    let pem = match std::fs::read(&path) {
        Ok(pem) => pem,
        Err(e) => {
            p.error(
                &at,
                format!(
                    "cannot read {}: {e} (expected a PEM file of the CA certificates that sign \
                     the SMTP server's certificate)",
                    path.display()
                ),
            );
            return None;
        }
    };
    if let Err(problem) = pem_certificates(&pem) {
        p.error(&at, format!("{}: {problem}", path.display()));
        return None;
    }
    Some(CaFile { path, pem })
}

/// Checks that `pem` is one or more well-formed `CERTIFICATE` blocks (anything between blocks,
/// such as the text `openssl x509 -text` prints, is ignored, as TLS libraries do); answers how
/// many.
fn pem_certificates(pem: &[u8]) -> Result<usize, String> {
    const BEGIN: &str = "-----BEGIN CERTIFICATE-----";
    const END: &str = "-----END CERTIFICATE-----";
    let text = std::str::from_utf8(pem).map_err(|_| "is not a PEM text file".to_owned())?;
    let mut count = 0;
    let mut lines = text.lines().map(str::trim);
    while let Some(line) = lines.next() {
        if line != BEGIN {
            continue;
        }
        let mut body = 0;
        loop {
            match lines.next() {
                Some(END) if body > 0 => break,
                Some(line)
                    if !line.is_empty()
                        && line
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b"+/=".contains(&b)) =>
                {
                    body += line.len();
                }
                _ => {
                    return Err(format!(
                        "certificate {} is not base64 between {BEGIN} and {END}",
                        count + 1
                    ));
                }
            }
        }
        count += 1;
    }
    if count == 0 {
        return Err(format!("holds no certificate (expected {BEGIN} blocks)"));
    }
    Ok(count)
}

/// The SMTP login, when the file names its variables: both must be named and set.
fn credentials(p: &mut FileProblems, raw: &raw::Email, env: Env<'_>) -> Option<SmtpCredentials> {
    let mut read = |key: &str, name: &Option<String>| -> Option<Secret> {
        let name = name.as_ref()?;
        match env(name).filter(|v| !v.is_empty()) {
            Some(value) => Some(Secret::new(value)),
            None => {
                p.error(
                    &["alerts", "email", key],
                    format!("environment variable {name} is not set; set it, or remove {key} to send without logging in"),
                );
                None
            }
        }
    };
    let username = read("username_env", &raw.username_env);
    let password = read("password_env", &raw.password_env);
    match (&raw.username_env, &raw.password_env) {
        (Some(_), None) => p.error(
            &["alerts", "email", "username_env"],
            "username_env without password_env: name the variable holding the password too",
        ),
        (None, Some(_)) => p.error(
            &["alerts", "email", "password_env"],
            "password_env without username_env: name the variable holding the user name too",
        ),
        _ => {}
    }
    Some(SmtpCredentials {
        username: username?,
        password: password?,
    })
}

/// `name@domain`, without spaces or angle brackets: what an SMTP envelope needs.
pub(crate) fn is_address(text: &str) -> bool {
    let Some((local, domain)) = text.rsplit_once('@') else {
        return false;
    };
    !local.is_empty()
        && !domain.is_empty()
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !text
            .chars()
            .any(|c| c.is_whitespace() || "<>,;\"".contains(c))
}

/// An address, or `Display Name <address>`.
fn is_mailbox(text: &str) -> bool {
    match text.trim_end().strip_suffix('>') {
        Some(rest) => rest
            .rsplit_once('<')
            .is_some_and(|(_, address)| is_address(address)),
        None => is_address(text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_and_mailboxes() {
        assert!(is_address("ops@example.com"));
        assert!(!is_address("ops@"));
        assert!(!is_address("example.com"));
        assert!(!is_address("a b@example.com"));
        assert!(!is_address("<ops@example.com>"));
        assert!(is_mailbox("Tollgate <alerts@example.com>"));
        assert!(is_mailbox("alerts@example.com"));
        assert!(!is_mailbox("Tollgate <alerts>"));
    }

    #[test]
    fn ca_files_hold_pem_certificates() {
        let one = "-----BEGIN CERTIFICATE-----\nMIIB\nAAE=\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_certificates(one.as_bytes()), Ok(1));
        let two = format!("Certificate:\n  Data: ...\n{one}{one}");
        assert_eq!(pem_certificates(two.as_bytes()), Ok(2));
        for bad in [
            "",
            "-----BEGIN PRIVATE KEY-----\nMIIB\n-----END PRIVATE KEY-----\n",
            "-----BEGIN CERTIFICATE-----\nMIIB\n",
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
            "-----BEGIN CERTIFICATE-----\n-----END CERTIFICATE-----\n",
        ] {
            assert!(pem_certificates(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(pem_certificates(&[0xff, 0xfe]).is_err());
    }
}
