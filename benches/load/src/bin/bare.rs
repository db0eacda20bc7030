//! A bare Pingora pass-through proxy for the load harness: the same Pingora as the gateway, the
//! same number of worker threads, and nothing else (no routing, keys, metering or logging), so
//! that the gateway's cost can be read as the difference from this one.

use std::net::SocketAddr;

use async_trait::async_trait;
use clap::Parser;
use pingora::listeners::ListenerConfig;
use pingora::prelude::HttpPeer;
use pingora::protocols::l4::stream::L4BufferSettings;
use pingora::proxy::{ProxyHttp, Session};
use pingora::server::configuration::ServerConf;
use pingora::server::{RunArgs, Server};

#[derive(Debug, Parser)]
#[command(about = "A bare Pingora proxy forwarding every request to one upstream")]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: String,
    /// The upstream, as ip:port (plain HTTP).
    #[arg(long)]
    upstream: SocketAddr,
    /// Worker threads of the proxy service; 0 (the gateway's default): one per CPU the process
    /// may run on.
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Pingora's work stealing between the worker threads (its default, and the gateway's).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    work_stealing: bool,
    /// The read buffer of each client connection, in bytes (0: none); Pingora's default
    /// (64 KiB) when not given. For seeing what that buffer costs per open stream.
    #[arg(long)]
    read_buffer_bytes: Option<usize>,
}

/// Every request goes to the one upstream, unchanged.
#[derive(Debug)]
struct PassThrough {
    upstream: SocketAddr,
}

#[async_trait]
impl ProxyHttp for PassThrough {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.upstream, false, String::new())))
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let conf = ServerConf {
        threads: match args.threads {
            0 => std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get),
            n => n,
        },
        work_stealing: args.work_stealing,
        grace_period_seconds: Some(0),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(None, conf);
    server.bootstrap();
    let mut proxy = pingora::proxy::http_proxy_service_with_name(
        &server.configuration,
        PassThrough {
            upstream: args.upstream,
        },
        "bare proxy",
    );
    match args.read_buffer_bytes {
        None => proxy.add_tcp(&args.listen),
        Some(bytes) => proxy.add_listener(
            ListenerConfig::tcp(args.listen.as_str())
                .l4_buffer(L4BufferSettings::default().read(bytes)),
        ),
    }
    server.add_service(proxy);
    println!("listening on {}", args.listen);
    server.run(RunArgs::default());
    Ok(())
}
