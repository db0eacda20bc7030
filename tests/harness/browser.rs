//! Headless Chromium driven through chromedriver's WebDriver HTTP API (W3C WebDriver), with
//! the harness's raw HTTP client: enough to load a page, type, click, wait for what the page
//! shows and take screenshots. Debian's `chromium` and `chromium-driver` packages; `./dev test`
//! installs them and sets `TOLLGATE_REQUIRE_BROWSER=1`, with which a missing browser fails the
//! test instead of skipping it.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use super::client::{Response, parse_response};
use super::process::{Supervised, free_port};

/// The key WebDriver names an element by in its answers.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long [`Browser::wait_for`] waits for the page by default.
const WAIT: Duration = Duration::from_secs(15);

/// A program on `PATH`, if it is there.
fn on_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|p| p.is_file())
    })
}

/// A headless Chromium under a chromedriver of its own, both ended when dropped.
pub struct Browser {
    driver: Supervised,
    port: u16,
    session: String,
    _dir: tempfile::TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium `width` pixels wide; `None` (the test then
    /// skips) when they are not installed, unless `TOLLGATE_REQUIRE_BROWSER=1`.
    pub fn start(width: u32, height: u32) -> Option<Browser> {
        let (chromium, driver) = match (on_path("chromium"), on_path("chromedriver")) {
            (Some(chromium), Some(driver)) => (chromium, driver),
            _ if std::env::var("TOLLGATE_REQUIRE_BROWSER").as_deref() == Ok("1") => panic!(
                "chromium and chromedriver are needed (TOLLGATE_REQUIRE_BROWSER=1): install \
                 Debian's chromium and chromium-driver, as `./dev test` does"
            ),
            _ => {
                eprintln!(
                    "skipped: chromium or chromedriver is not installed (./dev test installs them)"
                );
                return None;
            }
        };
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let port_arg = format!("--port={port}");
        let mut driver = Supervised::spawn_with_stderr(
            &driver,
            &[&port_arg, "--allowed-ips=127.0.0.1"],
            &[("LANG", "en_US.UTF-8"), ("TZ", "UTC")],
            "TERM",
            dir.path(),
            std::process::Stdio::null(),
        );
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            if let Some(status) = driver.exit_status() {
                panic!("chromedriver exited: {status}");
            }
            assert!(Instant::now() < deadline, "chromedriver did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        let profile = dir.path().join("profile");
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium.display().to_string(),
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--no-first-run", "--disable-extensions", "--lang=en-US",
                    "--hide-scrollbars", format!("--user-data-dir={}", profile.display()),
                    format!("--window-size={width},{height}"),
                ],
            },
        }}});
        let answer = call(port, "POST", "/session", Some(&capabilities));
        let session = answer["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no WebDriver session: {answer}"))
            .to_owned();
        let browser = Browser {
            driver,
            port,
            session,
            _dir: dir,
        };
        browser.resize(width, height);
        Some(browser)
    }

    fn command(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        call(
            self.port,
            method,
            &format!("/session/{}{path}", self.session),
            body,
        )
    }

    pub fn goto(&self, url: &str) {
        self.command("POST", "/url", Some(&json!({ "url": url })));
    }

    /// Sets the window's outer size.
    pub fn resize(&self, width: u32, height: u32) {
        self.command(
            "POST",
            "/window/rect",
            Some(&json!({"width": width, "height": height})),
        );
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page; its result.
    pub fn js(&self, script: &str, args: &[Value]) -> Value {
        self.command(
            "POST",
            "/execute/sync",
            Some(&json!({ "script": script, "args": args })),
        )
    }

    /// The first element matching the CSS `selector`.
    fn find(&self, selector: &str) -> String {
        let found = self.command(
            "POST",
            "/element",
            Some(&json!({"using": "css selector", "value": selector})),
        );
        found[ELEMENT_KEY]
            .as_str()
            .unwrap_or_else(|| panic!("no element {selector}: {found}"))
            .to_owned()
    }

    /// Clicks the element as a user would (it must be visible and not covered).
    pub fn click(&self, selector: &str) {
        let element = self.find(selector);
        self.command(
            "POST",
            &format!("/element/{element}/click"),
            Some(&json!({})),
        );
    }

    /// Types `text` into the element, after what it holds.
    pub fn type_into(&self, selector: &str, text: &str) {
        let element = self.find(selector);
        self.command(
            "POST",
            &format!("/element/{element}/value"),
            Some(&json!({ "text": text })),
        );
    }

    /// Chooses the option of a `<select>` whose value is `value`, as a user would.
    pub fn choose(&self, select: &str, value: &str) {
        self.click(&format!("{select} option[value=\"{value}\"]"));
    }

    /// The element's rendered text (what a person reads).
    pub fn text(&self, selector: &str) -> String {
        let element = self.find(selector);
        let answer = self.command("GET", &format!("/element/{element}/text"), None);
        answer.as_str().unwrap_or_default().to_owned()
    }

    /// Waits until `condition` (a JavaScript expression) is truthy in the page; fails with
    /// `what` and the page's error line if it does not become so.
    pub fn wait_for(&self, condition: &str, what: &str) {
        let deadline = Instant::now() + WAIT;
        let script = format!("return !!({condition});");
        loop {
            if self.js(&script, &[]) == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                let error = self.js(
                    "const e = document.getElementById('error'); return e ? e.textContent : '';",
                    &[],
                );
                panic!("timed out waiting for {what} ({condition}); page error: {error}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// A PNG of the whole page at the window's width, written to `path`.
    pub fn screenshot(&self, path: &Path, width: u32) {
        let height = self
            .js("return document.documentElement.scrollHeight;", &[])
            .as_u64()
            .unwrap_or(900)
            .clamp(600, 8000);
        self.resize(width, u32::try_from(height).unwrap_or(900) + 140);
        std::thread::sleep(Duration::from_millis(300));
        let png = self.command("GET", "/screenshot", None);
        let bytes = decode_base64(png.as_str().expect("a screenshot"));
        std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        self.resize(width, 900);
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = request(
            self.port,
            "DELETE",
            &format!("/session/{}", self.session),
            &[],
            b"",
        );
        // chromedriver ends with SIGTERM's status, which `stop` would take for a crash.
        self.driver.signal("TERM");
        let _ = self.driver.wait_exit(Duration::from_secs(10));
    }
}

/// One WebDriver command; its `value`, or a failure with WebDriver's error.
fn call(port: u16, method: &str, path: &str, body: Option<&Value>) -> Value {
    let body = body.map(Value::to_string).unwrap_or_default();
    let headers: &[(&str, &str)] = if body.is_empty() {
        &[]
    } else {
        &[("content-type", "application/json")]
    };
    let response = request(port, method, path, headers, body.as_bytes());
    let answer: Value = serde_json::from_slice(&response.body).unwrap_or_else(|e| {
        panic!(
            "WebDriver {method} {path}: not JSON ({e}): {}",
            response.text()
        )
    });
    assert_eq!(
        response.status, 200,
        "WebDriver {method} {path} failed: {answer}"
    );
    answer["value"].clone()
}

/// Standard base64 (WebDriver's screenshots), without a dependency for it.
fn decode_base64(text: &str) -> Vec<u8> {
    let value = |c: u8| match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    };
    let sextets: Vec<u8> = text.bytes().filter_map(value).collect();
    let mut out = Vec::with_capacity(sextets.len() * 3 / 4);
    for chunk in sextets.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &s)| n | u32::from(s) << (18 - 6 * i));
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

/// One request to chromedriver, its answer read as far as its `content-length`: chromedriver
/// keeps the connection open whatever the request says, so reading until it closes (as the
/// harness's client does with the gateway) would wait for the read timeout on every command.
fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Response {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    let mut head = format!(
        "{method} {path} HTTP/1.1\r\nhost: 127.0.0.1\r\ncontent-length: {}\r\n",
        body.len()
    );
    for (name, value) in headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str("\r\n");
    stream.write_all(head.as_bytes()).unwrap();
    stream.write_all(body).unwrap();
    let mut raw = Vec::new();
    let mut buf = [0u8; 64 * 1024];
    loop {
        if let Some(end) = raw.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&raw[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            if let Some(length) = length
                && raw.len() >= end + 4 + length
            {
                raw.truncate(end + 4 + length);
                break;
            }
        }
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
        }
    }
    parse_response(&raw)
}
