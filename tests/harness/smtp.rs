//! A real SMTP server for the e-mail alert tests: Python's `aiosmtpd` (from
//! `TOLLGATE_SMTP_PYTHON`, which `./dev test` prepares) running `tests/harness/python/smtp_capture.py`, which
//! writes every message it accepts to a directory the test reads.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::process::{Supervised, free_port};

/// One accepted message: the SMTP envelope and the message as sent.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Mail {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub data: String,
}

impl Mail {
    /// The message's text with quoted-printable soft line breaks and `=XX` escapes undone, so
    /// that a test can look for a sentence however the sender encoded it.
    pub fn text(&self) -> String {
        let joined = self.data.replace("=\r\n", "").replace("=\n", "");
        let bytes = joined.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match (bytes[i], hex) {
                (b'=', Some(b)) => {
                    out.push(b);
                    i += 3;
                }
                (b, _) => {
                    out.push(b);
                    i += 1;
                }
            }
        }
        String::from_utf8_lossy(&out).replace("\r\n", "\n")
    }
}

pub struct SmtpServer {
    _process: Supervised,
    pub port: u16,
    dir: tempfile::TempDir,
}

/// The interpreter with `aiosmtpd`, from `TOLLGATE_SMTP_PYTHON`; without it the e-mail tests
/// fail rather than pass having tested nothing.
pub fn smtp_python() -> PathBuf {
    match std::env::var_os("TOLLGATE_SMTP_PYTHON") {
        Some(python) if !python.is_empty() => PathBuf::from(python),
        _ => panic!(
            "TOLLGATE_SMTP_PYTHON is not set: the e-mail alert tests mail a real SMTP server \
             (aiosmtpd). Run `./dev test`, which installs it in a virtualenv and sets it, or \
             set TOLLGATE_SMTP_PYTHON to a Python that has the aiosmtpd pinned in ./dev."
        ),
    }
}

impl SmtpServer {
    /// Starts the server on a free port.
    pub fn start() -> SmtpServer {
        SmtpServer::start_on(free_port())
    }

    /// Starts the server on `port` and waits until it listens.
    pub fn start_on(port: u16) -> SmtpServer {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("harness/python/smtp_capture.py");
        let out = dir.path().display().to_string();
        let mut process = Supervised::spawn(
            &smtp_python(),
            &[
                "-I",
                "-B",
                &script.display().to_string(),
                &port.to_string(),
                &out,
            ],
            &[],
            "KILL",
            dir.path(),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while !dir.path().join("ready").exists() {
            if let Some(status) = process.exit_status() {
                panic!("the SMTP server exited before listening: {status}");
            }
            assert!(Instant::now() < deadline, "the SMTP server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        SmtpServer {
            _process: process,
            port,
            dir,
        }
    }

    /// Every message accepted so far, in the order received.
    pub fn mails(&self) -> Vec<Mail> {
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.dir.path())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        files.sort();
        files
            .iter()
            .map(|f| serde_json::from_str(&std::fs::read_to_string(f).unwrap()).unwrap())
            .collect()
    }

    /// Waits up to `within` for `count` messages, then a while longer to catch any extra one;
    /// answers all of them.
    pub fn wait_mails(&self, count: usize, within: Duration) -> Vec<Mail> {
        let deadline = Instant::now() + within;
        while self.mails().len() < count && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
        // Many delivery rounds.
        std::thread::sleep(Duration::from_millis(1500));
        self.mails()
    }
}
