//! Debian's Prometheus run as a process of the test's own: the shipped scrape configuration
//! (`deploy/compose/prometheus.yml`) rewritten to scrape gateways on loopback every second and
//! to load the shipped alert rules, a temporary storage directory, and its HTTP API read back.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{deploy_dir, replace_once};

/// How often the test's Prometheus scrapes and evaluates rules.
pub const INTERVAL: &str = "1s";

/// A running `prometheus`; killed when dropped.
pub struct Prometheus {
    child: Child,
    pub port: u16,
    _dir: tempfile::TempDir,
}

impl Prometheus {
    /// Starts `binary` on the shipped configuration, its two compose targets replaced by
    /// `targets` (`host:port` of each gateway's admin listener), and waits until it is ready.
    pub fn start(binary: &Path, targets: [&str; 2], port: u16) -> Prometheus {
        let dir = tempfile::tempdir().unwrap();
        let config = scrape_config(targets);
        let config_path = dir.path().join("prometheus.yml");
        std::fs::write(&config_path, config).unwrap();
        let storage = dir.path().join("data");
        let child = Command::new(binary)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!("--storage.tsdb.path={}", storage.display()))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let prometheus = Prometheus {
            child,
            port,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while get(port, "/-/ready").map(|(status, _)| status) != Some(200) {
            assert!(Instant::now() < deadline, "prometheus did not become ready");
            std::thread::sleep(Duration::from_millis(100));
        }
        prometheus
    }

    /// `GET path` on the HTTP API; its `data`, after checking `status` is `success`.
    pub fn api(&self, path: &str) -> serde_json::Value {
        let (status, body) = get(self.port, path).expect("prometheus answers");
        let json: serde_json::Value = serde_json::from_str(&body)
            .unwrap_or_else(|e| panic!("{path}: not JSON ({e}): {body}"));
        assert_eq!(status, 200, "{path}: {body}");
        assert_eq!(json["status"], "success", "{path}: {body}");
        json["data"].clone()
    }

    /// An instant query (PromQL `query`); the result vector. Fails on any query error.
    pub fn query(&self, query: &str) -> Vec<serde_json::Value> {
        let data = self.api(&format!("/api/v1/query?query={}", encode(query)));
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// A range query over the last `seconds`, one step a second; its result series.
    pub fn query_range(&self, query: &str, seconds: u64) -> Vec<serde_json::Value> {
        let end = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let path = format!(
            "/api/v1/query_range?query={}&start={}&end={end}&step=1",
            encode(query),
            end - seconds
        );
        self.api(&path)["result"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The single value of a query that sums to one number, if there is one yet.
    pub fn scalar(&self, query: &str) -> Option<f64> {
        let result = self.query(query);
        let value = result.first()?["value"][1].as_str()?.to_owned();
        value.parse().ok()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The shipped `deploy/compose/prometheus.yml`, rewritten to scrape `targets` every
/// [`INTERVAL`] and to load `deploy/monitoring/alerts.yml` from the repository.
pub fn scrape_config(targets: [&str; 2]) -> String {
    let shipped = std::fs::read_to_string(deploy_dir().join("compose/prometheus.yml")).unwrap();
    let rules = deploy_dir().join("monitoring/alerts.yml");
    let config = replace_once(&shipped, "scrape_interval: 15s", "scrape_interval: 1s");
    let config = replace_once(
        &config,
        "evaluation_interval: 15s",
        "evaluation_interval: 1s",
    );
    let config = replace_once(
        &config,
        "/etc/prometheus/rules/*.yml",
        &rules.display().to_string(),
    );
    let config = replace_once(&config, "gateway-1:9090", targets[0]);
    replace_once(&config, "gateway-2:9090", targets[1])
}

/// Percent-encodes a query parameter's value.
fn encode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A plain HTTP/1.0 GET (Prometheus answers with a length or closes); status and body.
fn get(port: u16, path: &str) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .ok()?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut raw = String::new();
    stream.read_to_string(&mut raw).ok()?;
    let (head, body) = raw.split_once("\r\n\r\n")?;
    let status = head.split(' ').nth(1)?.parse().ok()?;
    Some((status, body.to_owned()))
}
