//! Shared by the Redis tests: requests, random key prefixes that are deleted afterwards, and
//! private redis-server processes (single or a three-node cluster) on random ports.

#![allow(dead_code)]

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use tempfile::TempDir;
use tollgate_counters::{RedisConfig, RedisStore, ReserveRequest};
use tollgate_domain::{Amount, AnchorDay, BillingPeriod, Limit, Provider};

pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

pub fn random() -> u64 {
    RandomState::new().hash_one(Instant::now())
}

pub fn now() -> DateTime<Utc> {
    Utc::now()
}

pub fn period_at(at: DateTime<Utc>) -> BillingPeriod {
    BillingPeriod::containing(at, AnchorDay::default())
}

pub fn request<'a>(
    user: &'a str,
    limits: &'a [Limit],
    amount: Amount,
    at: DateTime<Utc>,
) -> ReserveRequest<'a> {
    ReserveRequest {
        user,
        key: "",
        period: period_at(at),
        provider: Provider::OpenAi,
        limits,
        amount,
        now: at,
        expires_at: at + chrono::Duration::seconds(60),
    }
}

pub fn calls(n: u64) -> Amount {
    Amount {
        calls: n,
        ..Amount::default()
    }
}

/// A key prefix of its own, whose keys are deleted when it is dropped.
pub struct Prefix {
    pub prefix: String,
    url: String,
}

impl Prefix {
    pub fn new(url: &str) -> Prefix {
        Prefix {
            prefix: format!("tgtest:{:016x}:", random()),
            url: url.to_owned(),
        }
    }

    pub fn config(&self, timeout_ms: u64) -> RedisConfig {
        let mut config = RedisConfig::new(self.url.clone(), timeout_ms);
        config.key_prefix = self.prefix.clone();
        config
    }

    pub fn store(&self, timeout_ms: u64) -> RedisStore {
        RedisStore::new(self.config(timeout_ms)).unwrap()
    }

    /// Deletes every key under the prefix, as if Redis had lost them.
    pub fn delete_keys(&self) {
        let Ok(client) = redis::Client::open(self.url.as_str()) else {
            return;
        };
        let Ok(mut con) = client.get_connection_with_timeout(Duration::from_secs(2)) else {
            return;
        };
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut con)
            .unwrap_or_default();
        if !keys.is_empty() {
            let _: Result<(), _> = redis::cmd("DEL").arg(&keys).query(&mut con);
        }
    }

    pub fn key_count(&self) -> usize {
        let client = redis::Client::open(self.url.as_str()).unwrap();
        let mut con = client.get_connection().unwrap();
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}*", self.prefix))
            .query(&mut con)
            .unwrap();
        keys.len()
    }
}

impl Drop for Prefix {
    fn drop(&mut self) {
        self.delete_keys();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A redis-server of this test's own, without persistence: restarting it loses its data.
pub struct Server {
    pub port: u16,
    extra: Vec<String>,
    dir: TempDir,
    child: Option<Child>,
}

impl Server {
    pub fn start() -> Server {
        Server::start_with(Vec::new())
    }

    pub fn start_with(extra: Vec<String>) -> Server {
        let mut server = Server {
            port: free_port(),
            extra,
            dir: tempfile::tempdir().unwrap(),
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts (again) on the same port, empty, and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .args(&self.extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server must be installed");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if self.ping() {
                return;
            }
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn ping(&self) -> bool {
        let Ok(client) = redis::Client::open(self.url()) else {
            return false;
        };
        let Ok(mut con) = client.get_connection_with_timeout(Duration::from_millis(200)) else {
            return false;
        };
        redis::cmd("PING").query::<String>(&mut con).is_ok()
    }

    pub fn command(&self, args: &[&str]) -> redis::Value {
        let client = redis::Client::open(self.url()).unwrap();
        let mut con = client.get_connection().unwrap();
        let mut cmd = redis::cmd(args[0]);
        for a in &args[1..] {
            cmd.arg(*a);
        }
        cmd.query(&mut con).unwrap()
    }

    /// Kills the process (SIGKILL): no goodbye to clients.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Three cluster-enabled redis-servers joined into one cluster (no replicas).
pub struct Cluster {
    pub nodes: Vec<Server>,
}

impl Cluster {
    pub fn start() -> Cluster {
        let nodes: Vec<Server> = (0..3)
            .map(|_| {
                Server::start_with(
                    [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "5000",
                        "--cluster-port",
                        &free_port().to_string(),
                    ]
                    .iter()
                    .map(|s| (*s).to_owned())
                    .collect(),
                )
            })
            .collect();
        let addresses: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let status = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "redis-cli --cluster create failed");
        let cluster = Cluster { nodes };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !cluster.ok() {
            assert!(Instant::now() < deadline, "cluster_state never became ok");
            std::thread::sleep(Duration::from_millis(100));
        }
        cluster
    }

    fn ok(&self) -> bool {
        self.nodes.iter().all(|n| {
            let info = n.command(&["CLUSTER", "INFO"]);
            let text = match info {
                redis::Value::BulkString(bytes) => String::from_utf8_lossy(&bytes).into_owned(),
                redis::Value::VerbatimString { text, .. } => text,
                other => format!("{other:?}"),
            };
            text.contains("cluster_state:ok")
        })
    }

    /// The nodes as one comma-separated URL list: what `storage.redis_url` takes for a cluster.
    pub fn url(&self) -> String {
        self.nodes
            .iter()
            .map(Server::url)
            .collect::<Vec<_>>()
            .join(",")
    }
}
