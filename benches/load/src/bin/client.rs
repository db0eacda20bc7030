//! The load harness's own client, for the two measurements wrk cannot make.
//!
//! `open`: an open-loop run. Requests are due at a constant rate whatever the answers do, and
//! each latency is measured from the time its request was due, so a request that waited (for a
//! free connection behind a slow answer, or in the target's queue) counts the wait. A
//! closed-loop client such as wrk sends the next request only when an answer came back, so a
//! stall delays the requests it would have sent and they are never measured (coordinated
//! omission); here they are.
//!
//! `streams`: many slow streams held open at once, for reading a gateway's memory per stream.
//! Prints `OPEN <n> <ms>` once all of them are open at the same time.
//!
//! Each mode prints one `RESULT {json}` line at the end.

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::{Parser, Subcommand};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{Mutex, Semaphore, mpsc};
use tokio::task::JoinSet;
use tollgate_loadbench::framing::{ResponseFramed, frame_response};

#[derive(Debug, Parser)]
#[command(about = "Open-loop and many-stream load for the load harness")]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Requests at a constant rate, latencies from each request's intended send time.
    Open(OpenArgs),
    /// Many slow streams at once.
    Streams(StreamsArgs),
}

#[derive(Debug, clap::Args)]
struct Request {
    /// The target, as ip:port.
    #[arg(long)]
    addr: String,
    /// The request path.
    #[arg(long)]
    path: String,
    /// The JSON body of every request.
    #[arg(long)]
    body: String,
    /// A request header, `Name: value`; repeatable.
    #[arg(long = "header")]
    headers: Vec<String>,
}

impl Request {
    /// The request on the wire, rendered once.
    fn render(&self) -> Vec<u8> {
        let mut head = format!(
            "POST {} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n",
            self.path,
            self.addr,
            self.body.len()
        );
        for header in &self.headers {
            head.push_str(header);
            head.push_str("\r\n");
        }
        head.push_str("\r\n");
        let mut wire = head.into_bytes();
        wire.extend_from_slice(self.body.as_bytes());
        wire
    }
}

#[derive(Debug, clap::Args)]
struct OpenArgs {
    #[command(flatten)]
    request: Request,
    /// Requests per second.
    #[arg(long)]
    rate: f64,
    /// Seconds of sending.
    #[arg(long)]
    seconds: f64,
    /// Keep-alive connections, opened before the first request; a request due while all are
    /// busy waits for one, and the wait is part of its latency.
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// A request without its whole response this long after it was due is a timeout.
    #[arg(long, default_value_t = 10)]
    timeout_secs: u64,
}

#[derive(Debug, clap::Args)]
struct StreamsArgs {
    #[command(flatten)]
    request: Request,
    /// Streams to hold open at once, one connection each.
    #[arg(long)]
    streams: usize,
    /// Connections being opened at the same time.
    #[arg(long, default_value_t = 128)]
    parallel: usize,
    /// A stream not ended this long after it began is a timeout.
    #[arg(long, default_value_t = 300)]
    timeout_secs: u64,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    // One thread, as wrk runs: it leaves the rest of its core to the mock.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    match cli.mode {
        Mode::Open(args) => runtime.block_on(open_loop(args)),
        Mode::Streams(args) => runtime.block_on(streams(args)),
    }
}

/// A keep-alive connection and what it has read beyond the last response.
struct Connection {
    socket: TcpStream,
    buf: Vec<u8>,
}

impl Connection {
    async fn open(addr: &str) -> std::io::Result<Connection> {
        let socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        Ok(Connection {
            socket,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends a request and reads its whole response: its status.
    async fn exchange(&mut self, request: &[u8]) -> std::io::Result<u16> {
        self.socket.write_all(request).await?;
        self.read_response().await
    }

    async fn read_response(&mut self) -> std::io::Result<u16> {
        loop {
            match frame_response(&self.buf) {
                ResponseFramed::Complete { len_bytes, status } => {
                    self.buf.drain(..len_bytes);
                    return Ok(status);
                }
                ResponseFramed::Invalid => {
                    return Err(std::io::Error::new(
                        ErrorKind::InvalidData,
                        "a response without a length",
                    ));
                }
                ResponseFramed::Incomplete => self.read_more().await?,
            }
        }
    }

    /// Reads until the response's head and the first bytes of its body have arrived.
    async fn read_first_body_bytes(&mut self) -> std::io::Result<()> {
        loop {
            if let Some(end) = memchr::memmem::find(&self.buf, b"\r\n\r\n")
                && self.buf.len() > end + 4
            {
                return Ok(());
            }
            self.read_more().await?;
        }
    }

    async fn read_more(&mut self) -> std::io::Result<()> {
        self.buf.reserve(4096);
        if self.socket.read_buf(&mut self.buf).await? == 0 {
            return Err(ErrorKind::UnexpectedEof.into());
        }
        Ok(())
    }
}

/// Sends `request` on `connection`, opening one if there is none. A kept-alive connection the
/// server closed while it was idle gets one fresh try, as any HTTP client gives it.
async fn send(
    connection: &mut Option<Connection>,
    addr: &str,
    request: &[u8],
) -> std::io::Result<u16> {
    if let Some(open) = connection.as_mut() {
        match open.exchange(request).await {
            Ok(status) => return Ok(status),
            Err(e)
                if open.buf.is_empty()
                    && matches!(
                        e.kind(),
                        ErrorKind::UnexpectedEof
                            | ErrorKind::BrokenPipe
                            | ErrorKind::ConnectionReset
                    ) => {}
            Err(e) => return Err(e),
        }
    }
    let fresh = connection.insert(Connection::open(addr).await?);
    fresh.exchange(request).await
}

/// What an open-loop run counted.
#[derive(Debug, Default)]
struct Counts {
    /// Latencies of the 2xx answers, from the time each request was due, in µs.
    latencies_us: Vec<u64>,
    status: u64,
    io: u64,
    timeout: u64,
}

/// An open-loop run's outcome.
#[derive(Debug)]
struct OpenRun {
    /// Requests due in the run.
    sent: u64,
    counts: Counts,
    /// From the first request's due time to the last answer.
    wall: Duration,
    /// How late the pacing thread handed out due times, in all.
    late: Duration,
}

async fn open_loop(args: OpenArgs) -> anyhow::Result<()> {
    let mut run = run_open(&args).await?;
    run.counts.latencies_us.sort_unstable();
    let lat = &run.counts.latencies_us;
    println!(
        "RESULT {{\"sent\":{},\"ok\":{},\"duration_us\":{},\"p50_us\":{},\"p90_us\":{},\
         \"p99_us\":{},\"p999_us\":{},\"max_us\":{},\"status\":{},\"io\":{},\"timeout\":{},\
         \"late_mean_us\":{:.1}}}",
        run.sent,
        lat.len(),
        run.wall.as_micros(),
        percentile(lat, 50.0),
        percentile(lat, 90.0),
        percentile(lat, 99.0),
        percentile(lat, 99.9),
        lat.last().copied().unwrap_or(0),
        run.counts.status,
        run.counts.io,
        run.counts.timeout,
        run.late.as_secs_f64() * 1e6 / run.sent.max(1) as f64,
    );
    Ok(())
}

async fn run_open(args: &OpenArgs) -> anyhow::Result<OpenRun> {
    anyhow::ensure!(
        args.rate > 0.0 && args.seconds > 0.0,
        "--rate and --seconds must be positive"
    );
    let addr = Arc::new(args.request.addr.clone());
    let request = Arc::new(args.request.render());
    // Every connection is open before the first request is due: no measured request pays
    // for a handshake.
    let mut connections = Vec::with_capacity(args.connections);
    for _ in 0..args.connections.max(1) {
        let connection = Connection::open(&addr)
            .await
            .with_context(|| format!("connecting to {addr}"))?;
        connections.push(connection);
    }
    let (due_tx, due_rx) = mpsc::unbounded_channel();
    let due_rx = Arc::new(Mutex::new(due_rx));
    let counts = Arc::new(std::sync::Mutex::new(Counts::default()));
    let timeout = Duration::from_secs(args.timeout_secs);
    let start = Instant::now() + Duration::from_millis(20);
    let sent = (args.rate * args.seconds).round() as u64;
    let rate = args.rate;
    let pacer = std::thread::spawn(move || pace(&due_tx, start, rate, sent));

    let mut workers = JoinSet::new();
    for connection in connections {
        let (addr, request) = (Arc::clone(&addr), Arc::clone(&request));
        let (due_rx, counts) = (Arc::clone(&due_rx), Arc::clone(&counts));
        workers.spawn(async move {
            let mut connection = Some(connection);
            loop {
                let due = due_rx.lock().await.recv().await;
                let Some(due) = due else { break };
                let left = timeout.saturating_sub(due.elapsed());
                let outcome =
                    tokio::time::timeout(left, send(&mut connection, &addr, &request)).await;
                let latency = due.elapsed();
                let mut counts = counts.lock().unwrap_or_else(PoisonError::into_inner);
                match outcome {
                    Ok(Ok(status)) if (200..300).contains(&status) => {
                        counts.latencies_us.push(latency.as_micros() as u64);
                    }
                    Ok(Ok(_)) => counts.status += 1,
                    Ok(Err(_)) => {
                        counts.io += 1;
                        connection = None;
                    }
                    Err(_) => {
                        counts.timeout += 1;
                        connection = None;
                    }
                }
            }
        });
    }
    while workers.join_next().await.is_some() {}
    let wall = start.elapsed();
    let late = pacer
        .join()
        .map_err(|_| anyhow::anyhow!("the pacing thread panicked"))?;
    let counts = std::mem::take(&mut *counts.lock().unwrap_or_else(PoisonError::into_inner));
    Ok(OpenRun {
        sent,
        counts,
        wall,
        late,
    })
}

/// Hands out each request's due time when it comes: `start + i / rate`. A thread of its own,
/// sleeping between requests: it wakes within tens of microseconds of the time asked, where the
/// runtime's timer rounds to a millisecond. Answers how late it handed them out, in all.
fn pace(
    due_tx: &mpsc::UnboundedSender<Instant>,
    start: Instant,
    rate: f64,
    total: u64,
) -> Duration {
    let mut late = Duration::ZERO;
    for i in 0..total {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        late += Instant::now().saturating_duration_since(due);
        if due_tx.send(due).is_err() {
            break;
        }
    }
    late
}

/// The nearest-rank percentile of sorted values (0 for none).
fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// What a many-stream run counted.
#[derive(Debug, Default)]
struct StreamCounts {
    /// Streams open now: head and first event received, end not yet.
    open: AtomicUsize,
    peak_open: AtomicUsize,
    /// Streams begun and ended, however.
    ended: AtomicUsize,
}

async fn streams(args: StreamsArgs) -> anyhow::Result<()> {
    let addr = Arc::new(args.request.addr.clone());
    let request = Arc::new(args.request.render());
    let opening = Arc::new(Semaphore::new(args.parallel.max(1)));
    let counts = Arc::new(StreamCounts::default());
    let timeout = Duration::from_secs(args.timeout_secs);
    let started = Instant::now();
    let mut streams = JoinSet::new();
    for _ in 0..args.streams {
        let (addr, request) = (Arc::clone(&addr), Arc::clone(&request));
        let (opening, counts) = (Arc::clone(&opening), Arc::clone(&counts));
        streams.spawn(async move {
            let outcome =
                tokio::time::timeout(timeout, one_stream(&addr, &request, &opening, &counts)).await;
            counts.ended.fetch_add(1, Ordering::Relaxed);
            outcome
        });
    }

    // Says when every stream is open at once, for whoever reads the process's memory then.
    let mut all_open_ms = None;
    while counts.ended.load(Ordering::Relaxed) < args.streams {
        if all_open_ms.is_none() && counts.open.load(Ordering::Relaxed) >= args.streams {
            let ms = started.elapsed().as_millis();
            println!("OPEN {} {ms}", args.streams);
            std::io::stdout().flush()?;
            all_open_ms = Some(ms);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    let (mut ok, mut status, mut io, mut timed_out) = (0u64, 0u64, 0u64, 0u64);
    while let Some(joined) = streams.join_next().await {
        match joined {
            Ok(Ok(Ok(code))) if (200..300).contains(&code) => ok += 1,
            Ok(Ok(Ok(_))) => status += 1,
            Ok(Ok(Err(_))) | Err(_) => io += 1,
            Ok(Err(_)) => timed_out += 1,
        }
    }
    println!(
        "RESULT {{\"streams\":{},\"peak_open\":{},\"all_open_ms\":{},\"duration_us\":{},\
         \"ok\":{ok},\"status\":{status},\"io\":{io},\"timeout\":{timed_out}}}",
        args.streams,
        counts.peak_open.load(Ordering::Relaxed),
        all_open_ms.map_or_else(|| "null".to_owned(), |ms| ms.to_string()),
        started.elapsed().as_micros(),
    );
    Ok(())
}

/// One slow stream: opened when a place among the connections being opened is free (which it
/// gives back once its first event has arrived), then read to its end: its status.
async fn one_stream(
    addr: &str,
    request: &[u8],
    opening: &Semaphore,
    counts: &StreamCounts,
) -> std::io::Result<u16> {
    let permit = opening
        .acquire()
        .await
        .map_err(|_| std::io::Error::other("the opening gate closed"))?;
    let mut connection = Connection::open(addr).await?;
    connection.socket.write_all(request).await?;
    connection.read_first_body_bytes().await?;
    drop(permit);
    let now_open = counts.open.fetch_add(1, Ordering::Relaxed) + 1;
    counts.peak_open.fetch_max(now_open, Ordering::Relaxed);
    let status = connection.read_response().await;
    counts.open.fetch_sub(1, Ordering::Relaxed);
    status
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<u64> = (1..=100).collect();
        assert_eq!(percentile(&values, 50.0), 50);
        assert_eq!(percentile(&values, 99.0), 99);
        assert_eq!(percentile(&values, 99.9), 100);
        assert_eq!(percentile(&[7], 99.0), 7);
        assert_eq!(percentile(&[], 50.0), 0);
    }

    #[test]
    fn request_carries_its_headers_and_length() {
        let request = Request {
            addr: "127.0.0.1:1".to_owned(),
            path: "/v1/chat/completions".to_owned(),
            body: "{}".to_owned(),
            headers: vec!["Authorization: Bearer k".to_owned()],
        };
        let wire = String::from_utf8(request.render()).unwrap();
        assert!(wire.starts_with("POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:1\r\n"));
        assert!(wire.contains("Content-Length: 2\r\nAuthorization: Bearer k\r\n\r\n{}"));
    }

    /// An open-loop run against a server that answers its first request 200 ms late, on one
    /// connection: the requests due meanwhile are measured from when they were due, so the
    /// stall shows in every one of them, where a closed-loop client would have measured it once.
    #[tokio::test]
    async fn a_stall_counts_for_every_request_due_during_it() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        tokio::spawn(async move {
            let (mut socket, _) = listener.accept().await.unwrap();
            let mut buf = Vec::new();
            let mut answered = 0;
            loop {
                match tollgate_loadbench::framing::frame(&buf) {
                    tollgate_loadbench::framing::Framed::Complete { len_bytes, .. } => {
                        buf.drain(..len_bytes);
                        if answered == 0 {
                            tokio::time::sleep(Duration::from_millis(200)).await;
                        }
                        answered += 1;
                        let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}";
                        socket.write_all(ok).await.unwrap();
                    }
                    _ => {
                        if socket.read_buf(&mut buf).await.unwrap() == 0 {
                            return;
                        }
                    }
                }
            }
        });
        // 20 requests due 20 ms apart.
        let args = OpenArgs {
            request: Request {
                addr,
                path: "/".to_owned(),
                body: "{}".to_owned(),
                headers: vec![],
            },
            rate: 50.0,
            seconds: 0.4,
            connections: 1,
            timeout_secs: 5,
        };
        let run = run_open(&args).await.unwrap();
        assert_eq!(run.sent, 20);
        let lat = &run.counts.latencies_us;
        assert_eq!(lat.len(), 20, "{:?}", run.counts);
        // Due at 0, 20, …, 100 ms, all answered at about 200 ms: at least 100 ms each.
        let stalled = lat.iter().filter(|&&us| us >= 95_000).count();
        assert!(stalled >= 6, "{lat:?}");
        // The queue drains well before the end: the last ones are quick again.
        assert!(lat[19] < 100_000, "{lat:?}");
    }
}
