//! A fast mock OpenAI upstream for the load harness: HTTP/1.1 with keep-alive on plain tokio,
//! answering every request with a canned chat completion (JSON, or an SSE stream when the body
//! asks for `"stream": true`, or a gzip body that decodes to 60 MiB for a request with an
//! `x-heavy` header). A stream request with an `x-event-gap-ms` header is answered slowly, with
//! that long between two events (for holding many streams open at once). Prints
//! `listening on <addr>` once it accepts connections.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tollgate_loadbench::framing::{Framed, frame};
use tollgate_loadbench::responses::Responses;

/// A request head and body larger than this closes the connection.
const MAX_REQUEST_BYTES: usize = 1 << 20;

#[derive(Debug, Parser)]
#[command(about = "A mock OpenAI upstream answering canned chat completions")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Runtime worker threads (1: a single-threaded runtime).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Content deltas in a streamed completion (before the finish and usage chunks).
    #[arg(long, default_value_t = 20)]
    stream_events: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let runtime = if args.threads <= 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
    } else {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(args.threads)
            .enable_all()
            .build()?
    };
    runtime.block_on(serve(args))
}

async fn serve(args: Args) -> anyhow::Result<()> {
    let listener = TcpListener::bind(&args.listen)
        .await
        .with_context(|| format!("binding {}", args.listen))?;
    println!("listening on {}", listener.local_addr()?);
    let responses = Arc::new(Responses::new(args.stream_events));
    loop {
        let (socket, _) = listener.accept().await?;
        let responses = Arc::clone(&responses);
        tokio::spawn(async move {
            // A client that goes away mid-request is not an error worth reporting here.
            let _ = connection(socket, &responses).await;
        });
    }
}

async fn connection(mut socket: TcpStream, responses: &Responses) -> std::io::Result<()> {
    socket.set_nodelay(true)?;
    let mut buf: Vec<u8> = Vec::with_capacity(16 * 1024);
    loop {
        match frame(&buf) {
            Framed::Complete {
                len_bytes,
                stream,
                heavy,
                event_gap_ms,
            } => {
                buf.drain(..len_bytes);
                if heavy {
                    socket.write_all(&responses.heavy).await?;
                } else if stream {
                    // One write per event, as a provider flushes them.
                    for (i, part) in responses.stream.iter().enumerate() {
                        if i > 0 && event_gap_ms > 0 {
                            tokio::time::sleep(Duration::from_millis(event_gap_ms)).await;
                        }
                        socket.write_all(part).await?;
                    }
                } else {
                    socket.write_all(&responses.json).await?;
                }
            }
            Framed::Invalid => return Ok(()),
            Framed::Incomplete => {
                if buf.len() > MAX_REQUEST_BYTES {
                    return Ok(());
                }
                buf.reserve(8 * 1024);
                if socket.read_buf(&mut buf).await? == 0 {
                    return Ok(());
                }
            }
        }
    }
}
