//! The floor of the router's own stack, for the benchmark (docs/benchmarks.md,
//! "What is left"): a bare reverse proxy on the same crates and settings as the
//! router, doing none of its work.
//!
//! hyper's HTTP/1.1 server with `TCP_NODELAY`, one pooled hyper-util client with
//! keep-alive, tokio's current-thread scheduler and jemalloc, as the router runs
//! on one core. Every request goes to `--upstream` with its method, path, headers
//! and body unchanged (bodies streamed both ways, never collected), and the answer
//! comes back unchanged. No routing, no auth, no logs, no metrics, no request id.
//! It listens on 127.0.0.1 only and prints `listening on 127.0.0.1:PORT` once
//! bound.
//!
//! ```text
//! cargo run --release --example bench_hyper_proxy -- --upstream http://127.0.0.1:PORT [--port 0]
//! ```

// A benchmark tool, not the router: connection tasks are plain spawns.
#![allow(clippy::disallowed_methods)]

use std::error::Error;
use std::io::Write;

use http::uri::{Authority, Scheme};
use http::{HeaderValue, Request, Uri, header};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

type BoxError = Box<dyn Error + Send + Sync>;

fn usage() -> &'static str {
    "usage: bench_hyper_proxy --upstream http://HOST:PORT [--port N]"
}

fn parse_args() -> Result<(u16, Uri), String> {
    let mut port = 0u16;
    let mut upstream = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--port" => port = value.parse().map_err(|_| format!("bad port {value}"))?,
            "--upstream" => {
                upstream = Some(
                    value
                        .parse::<Uri>()
                        .map_err(|e| format!("bad upstream {value}: {e}"))?,
                )
            }
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    let upstream = upstream.ok_or("--upstream is required")?;
    if upstream.scheme() != Some(&Scheme::HTTP) || upstream.authority().is_none() {
        return Err("--upstream must be http://HOST:PORT".to_owned());
    }
    Ok((port, upstream))
}

fn main() -> Result<(), BoxError> {
    let (port, upstream) = parse_args().map_err(|e| format!("{e}\n{}", usage()))?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(serve(port, upstream))
}

async fn serve(port: u16, upstream: Uri) -> Result<(), BoxError> {
    let authority: Authority = upstream.authority().cloned().ok_or("no authority")?;
    let host = HeaderValue::from_str(authority.as_str())?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_max_idle_per_host(1024)
        .build(connector);
    let listener = TcpListener::bind(("127.0.0.1", port)).await?;
    println!("listening on {}", listener.local_addr()?);
    std::io::stdout().flush()?;
    loop {
        let (tcp, _) = listener.accept().await?;
        tcp.set_nodelay(true)?;
        let (client, authority, host) = (client.clone(), authority.clone(), host.clone());
        tokio::spawn(async move {
            let service = service_fn(move |req: Request<Incoming>| {
                let (client, authority, host) = (client.clone(), authority.clone(), host.clone());
                async move {
                    let (mut parts, body) = req.into_parts();
                    let mut uri = parts.uri.into_parts();
                    uri.scheme = Some(Scheme::HTTP);
                    uri.authority = Some(authority);
                    parts.uri = Uri::from_parts(uri).map_err(std::io::Error::other)?;
                    parts.headers.insert(header::HOST, host);
                    client
                        .request(Request::from_parts(parts, body))
                        .await
                        .map_err(std::io::Error::other)
                }
            });
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(tcp), service)
                .await;
        });
    }
}
