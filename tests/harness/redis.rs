//! Redis for the tests: a private `redis-server` a test may kill and restart (Redis crashing
//! and coming back empty), and the shared Redis (`REDIS_URL`, else 127.0.0.1:6379), which a
//! test never stops or flushes: it deletes only its own user's keys, which are hash-tagged by
//! user.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::process::{Supervised, free_port};

/// A `redis-server` of the test's own on a free port, with no persistence: killing it and
/// starting it again on the same port is Redis coming back empty. Killed when dropped. (The
/// shared Redis is never stopped or flushed by a test.)
pub struct RedisServer {
    pub port: u16,
    dir: tempfile::TempDir,
    server: Option<Supervised>,
}

impl RedisServer {
    pub fn start() -> RedisServer {
        let mut redis = RedisServer {
            port: free_port(),
            dir: tempfile::tempdir().unwrap(),
            server: None,
        };
        redis.restart();
        redis
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL: the server vanishes with its data, as in a crash.
    pub fn kill(&mut self) {
        if let Some(mut server) = self.server.take() {
            server.kill();
        }
    }

    /// Starts the server (again) on the same port, empty, and waits until it answers.
    pub fn restart(&mut self) {
        assert!(self.server.is_none(), "redis-server is already running");
        let port = self.port.to_string();
        let dir = self.dir.path().display().to_string();
        let args = [
            "--port",
            port.as_str(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            dir.as_str(),
            "--loglevel",
            "warning",
        ];
        self.server = Some(Supervised::spawn(
            Path::new("redis-server"),
            &args,
            &[],
            "KILL",
            self.dir.path(),
        ));
        let deadline = Instant::now() + Duration::from_secs(10);
        while self.cli(&["PING"]).trim() != "PONG" {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// `redis-cli` against this server; its standard output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .args(["-h", "127.0.0.1", "-p", &self.port.to_string()])
            .args(args)
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Every field of a hash.
    pub fn hash(&self, key: &str) -> HashMap<String, String> {
        // Not a terminal: one element a line.
        let raw = self.cli(&["HGETALL", key]);
        let lines: Vec<&str> = raw.lines().collect();
        lines
            .chunks(2)
            .filter(|pair| pair.len() == 2)
            .map(|pair| (pair[0].to_owned(), pair[1].to_owned()))
            .collect()
    }

    /// The keys matching `pattern`.
    pub fn keys(&self, pattern: &str) -> Vec<String> {
        self.cli(&["--scan", "--pattern", pattern])
            .lines()
            .map(str::to_owned)
            .collect()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The shared Redis the tests use: `REDIS_URL`, or the local default.
pub fn redis_url() -> String {
    std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// Deletes `user`'s keys (hash-tagged by user) from the shared Redis.
pub fn redis_cleanup(user: &str) {
    let url = redis_url();
    let keys = Command::new("redis-cli")
        .args([
            "-u",
            &url,
            "--scan",
            "--pattern",
            &format!("*{{u:{user}}}*"),
        ])
        .output()
        .unwrap();
    for key in String::from_utf8_lossy(&keys.stdout).lines() {
        Command::new("redis-cli")
            .args(["-u", &url, "del", key])
            .output()
            .unwrap();
    }
}
