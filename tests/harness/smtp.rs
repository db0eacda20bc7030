//! A real SMTP server for the e-mail alert tests: Python's `aiosmtpd` (from
//! `TOLLGATE_SMTP_PYTHON`, which `./dev test` prepares) running `tests/harness/python/smtp_capture.py`, which
//! writes every message it accepts to a directory the test reads. It speaks plain SMTP,
//! STARTTLS or implicit TLS with a certificate from a throwaway CA made here with the `openssl`
//! command ([`TestCa`]), and may require a login.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use super::process::{Supervised, free_port};

/// One accepted message: the SMTP envelope and the message as sent.
#[derive(Clone, Debug, serde::Deserialize)]
pub struct Mail {
    pub mail_from: String,
    pub rcpt_tos: Vec<String>,
    pub data: String,
    /// Whether the message came over TLS (STARTTLS or implicit).
    pub tls: bool,
    /// The user name the client logged in with, if it did.
    pub login: Option<String>,
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

/// How the server protects the conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SmtpTlsMode {
    /// Plain, upgraded with STARTTLS, which the server requires before anything else.
    Starttls,
    /// TLS from the first byte.
    Implicit,
}

/// What a TLS server presents and requires.
pub struct SmtpTlsOptions<'a> {
    pub mode: SmtpTlsMode,
    pub certificate: &'a ServerCertificate,
    /// A user name and password the server requires before it takes mail.
    pub login: Option<(&'a str, &'a str)>,
}

impl SmtpServer {
    /// Starts the server on a free port.
    pub fn start() -> SmtpServer {
        SmtpServer::start_on(free_port())
    }

    /// Starts the server on `port` and waits until it listens.
    pub fn start_on(port: u16) -> SmtpServer {
        SmtpServer::launch(port, Vec::new())
    }

    /// Starts a server on a free port that speaks TLS as `options` say.
    pub fn start_tls(options: &SmtpTlsOptions<'_>) -> SmtpServer {
        let mode = match options.mode {
            SmtpTlsMode::Starttls => "starttls",
            SmtpTlsMode::Implicit => "implicit",
        };
        let mut args = vec![
            "--tls".to_owned(),
            mode.to_owned(),
            "--cert".to_owned(),
            options.certificate.cert.display().to_string(),
            "--key".to_owned(),
            options.certificate.key.display().to_string(),
        ];
        if let Some((user, password)) = options.login {
            args.extend(["--login".to_owned(), format!("{user}:{password}")]);
        }
        SmtpServer::launch(free_port(), args)
    }

    fn launch(port: u16, options: Vec<String>) -> SmtpServer {
        let dir = tempfile::tempdir().unwrap();
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("harness/python/smtp_capture.py");
        let mut args = vec![
            "-I".to_owned(),
            "-B".to_owned(),
            script.display().to_string(),
            port.to_string(),
            dir.path().display().to_string(),
        ];
        args.extend(options);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut process = Supervised::spawn(&smtp_python(), &args, &[], "KILL", dir.path());
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

/// A throwaway certificate authority, made with the `openssl` command in a temporary directory.
pub struct TestCa {
    dir: tempfile::TempDir,
    /// The CA's certificate (PEM), what a client trusts.
    pub cert: PathBuf,
    key: PathBuf,
}

/// A server certificate and its key (PEM files).
pub struct ServerCertificate {
    pub cert: PathBuf,
    pub key: PathBuf,
}

fn openssl(args: &[&str], dir: &Path) {
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!("running openssl (the TLS mail tests make certificates with it): {e}")
        });
    assert!(
        out.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl TestCa {
    /// A new CA called `name`, valid for two days.
    pub fn new(name: &str) -> TestCa {
        let dir = tempfile::tempdir().unwrap();
        openssl(
            &[
                "req",
                "-x509",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "ca.key",
                "-out",
                "ca.pem",
                "-days",
                "2",
                "-subj",
                &format!("/CN={name}"),
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
            dir.path(),
        );
        TestCa {
            cert: dir.path().join("ca.pem"),
            key: dir.path().join("ca.key"),
            dir,
        }
    }

    /// A certificate this CA signs for a server at 127.0.0.1 (the name the gateway dials).
    pub fn issue_for_localhost(&self) -> ServerCertificate {
        let dir = self.dir.path();
        std::fs::write(
            dir.join("server.ext"),
            "subjectAltName=IP:127.0.0.1\nbasicConstraints=critical,CA:FALSE\n\
             keyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n",
        )
        .unwrap();
        openssl(
            &[
                "req",
                "-new",
                "-newkey",
                "ec",
                "-pkeyopt",
                "ec_paramgen_curve:prime256v1",
                "-nodes",
                "-keyout",
                "server.key",
                "-out",
                "server.csr",
                "-subj",
                "/CN=127.0.0.1",
            ],
            dir,
        );
        openssl(
            &[
                "x509",
                "-req",
                "-in",
                "server.csr",
                "-CA",
                &self.cert.display().to_string(),
                "-CAkey",
                &self.key.display().to_string(),
                "-CAcreateserial",
                "-out",
                "server.pem",
                "-days",
                "2",
                "-extfile",
                "server.ext",
            ],
            dir,
        );
        ServerCertificate {
            cert: dir.join("server.pem"),
            key: dir.join("server.key"),
        }
    }
}
