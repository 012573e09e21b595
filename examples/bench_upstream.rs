//! A fast mock OpenAI upstream for the benchmark (`bench/run`, docs/benchmarks.md).
//!
//! - `POST /v1/chat/completions`: a ~600-byte `chat.completion` JSON after a fixed
//!   latency; or, when the body contains `"stream": true`, an SSE stream of
//!   `--chunks` `chat.completion.chunk` events, the first after the latency and the
//!   others `--interval-ms` apart, then `data: [DONE]`.
//! - `GET /v1/models`: lists `bench-model`.
//!
//! hyper 1 with the hyper-util auto server, `TCP_NODELAY` and keep-alive; it listens
//! on 127.0.0.1 only and prints `listening on 127.0.0.1:PORT` once bound.
//!
//! ```text
//! cargo run --release --example bench_upstream -- [--port 0] [--latency-ms 0]
//!     [--chunks 20] [--interval-ms 10] [--max-seconds 0]
//! ```
//!
//! Every flag can also be given as an environment variable (`BENCH_PORT`,
//! `BENCH_LATENCY_MS`, `BENCH_CHUNKS`, `BENCH_INTERVAL_MS`, `BENCH_MAX_SECONDS`);
//! the flag wins. `--max-seconds N` (N > 0) makes the process exit by itself after
//! N seconds, so a benchmark run is bounded even if its runner dies.

// A benchmark tool, not the router: connection tasks are plain spawns.
#![allow(clippy::disallowed_methods)]

use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::BinaryHeap;
use std::collections::binary_heap::PeekMut;
use std::convert::Infallible;
use std::error::Error;
use std::io::Write;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode, header};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

type Body = BoxBody<Bytes, Infallible>;
type BoxError = Box<dyn Error + Send + Sync>;

#[derive(Debug, Clone)]
struct Options {
    port: u16,
    latency: Duration,
    chunks: u32,
    interval: Duration,
    max_seconds: u64,
}

fn usage() -> &'static str {
    "usage: bench_upstream [--port N] [--latency-ms N] [--chunks N] [--interval-ms N] [--max-seconds N]"
}

fn parse_args() -> Result<Options, String> {
    fn env_or(name: &str, default: u64) -> Result<u64, String> {
        match std::env::var_os(name) {
            Some(v) => v
                .to_str()
                .and_then(|s| s.trim().parse().ok())
                .ok_or_else(|| format!("{name} must be a non-negative integer")),
            None => Ok(default),
        }
    }
    let mut port = env_or("BENCH_PORT", 0)?;
    let mut latency_ms = env_or("BENCH_LATENCY_MS", 0)?;
    let mut chunks = env_or("BENCH_CHUNKS", 20)?;
    let mut interval_ms = env_or("BENCH_INTERVAL_MS", 10)?;
    let mut max_seconds = env_or("BENCH_MAX_SECONDS", 0)?;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{}", usage());
            std::process::exit(0);
        }
        let slot = match flag.as_str() {
            "--port" => &mut port,
            "--latency-ms" => &mut latency_ms,
            "--chunks" => &mut chunks,
            "--interval-ms" => &mut interval_ms,
            "--max-seconds" => &mut max_seconds,
            other => return Err(format!("unknown argument {other}\n{}", usage())),
        };
        *slot = args
            .next()
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("{flag} needs a non-negative integer"))?;
    }
    Ok(Options {
        port: u16::try_from(port).map_err(|_| "--port must be at most 65535".to_owned())?,
        latency: Duration::from_millis(latency_ms),
        chunks: u32::try_from(chunks.max(1)).map_err(|_| "--chunks is too large".to_owned())?,
        interval: Duration::from_millis(interval_ms),
        max_seconds,
    })
}

/// What every response is built from, prepared once.
struct Canned {
    completion: Bytes,
    models: Bytes,
    /// `chunks - 1` content events, then the one with `finish_reason`, then `[DONE]`.
    content_event: Bytes,
    final_event: Bytes,
    done_event: Bytes,
    not_found: Bytes,
}

impl Canned {
    fn new() -> Self {
        let created = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(1_700_000_000, |d| d.as_secs());
        let completion = serde_json::json!({
            "id": "chatcmpl-bench-8f2a4c1e9d7b4a6f",
            "object": "chat.completion",
            "created": created,
            "model": "bench-model",
            "system_fingerprint": "fp_bench_0001",
            "choices": [{
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "The capital of France is Paris. It has been the country's capital since \
                                the 10th century and is known for the Eiffel Tower, the Louvre and its \
                                cafes. Would you like travel tips as well?",
                    "refusal": null
                },
                "logprobs": null,
                "finish_reason": "stop"
            }],
            "usage": {
                "prompt_tokens": 212,
                "completion_tokens": 41,
                "total_tokens": 253,
                "prompt_tokens_details": {"cached_tokens": 0},
                "completion_tokens_details": {"reasoning_tokens": 0}
            }
        });
        let chunk = |delta: serde_json::Value, finish: Option<&str>| {
            let v = serde_json::json!({
                "id": "chatcmpl-bench-8f2a4c1e9d7b4a6f",
                "object": "chat.completion.chunk",
                "created": created,
                "model": "bench-model",
                "system_fingerprint": "fp_bench_0001",
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]
            });
            Bytes::from(format!("data: {v}\n\n"))
        };
        let models = serde_json::json!({
            "object": "list",
            "data": [{"id": "bench-model", "object": "model", "created": created, "owned_by": "bench"}]
        });
        Self {
            completion: Bytes::from(completion.to_string()),
            models: Bytes::from(models.to_string()),
            content_event: chunk(serde_json::json!({"content": " token"}), None),
            final_event: chunk(serde_json::json!({}), Some("stop")),
            done_event: Bytes::from_static(b"data: [DONE]\n\n"),
            not_found: Bytes::from_static(
                br#"{"error":{"message":"not found","type":"invalid_request_error","code":null,"param":null}}"#,
            ),
        }
    }
}

/// Wakes tasks at their deadlines to within tens of microseconds.
///
/// tokio's timer has 1 ms ticks, rounds every deadline up to the next one and
/// parks with a millisecond `epoll_wait` timeout: a 50 ms sleep took 51-52 ms
/// unloaded, and answers at 512 connections came 53-54 ms after the request.
/// This thread keeps the deadlines in a heap and sleeps on its channel with a
/// nanosecond timeout (a futex wait), so "50 ms" means 50 ms.
struct PreciseTimer {
    tx: mpsc::Sender<Wake>,
}

struct Wake {
    at: Instant,
    tx: oneshot::Sender<()>,
}

impl PartialEq for Wake {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == CmpOrdering::Equal
    }
}
impl Eq for Wake {}
impl PartialOrd for Wake {
    fn partial_cmp(&self, other: &Self) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}
impl Ord for Wake {
    fn cmp(&self, other: &Self) -> CmpOrdering {
        self.at.cmp(&other.at)
    }
}

impl PreciseTimer {
    fn start() -> std::io::Result<Self> {
        let (tx, rx) = mpsc::channel::<Wake>();
        std::thread::Builder::new()
            .name("precise-timer".into())
            .spawn(move || {
                let mut due = BinaryHeap::<Reverse<Wake>>::new();
                loop {
                    let now = Instant::now();
                    while let Some(top) = due.peek_mut() {
                        if top.0.at > now {
                            break;
                        }
                        let _ = PeekMut::pop(top).0.tx.send(());
                    }
                    let next = match due.peek() {
                        Some(Reverse(w)) => match rx.recv_timeout(w.at - now) {
                            Ok(wake) => wake,
                            Err(mpsc::RecvTimeoutError::Timeout) => continue,
                            Err(mpsc::RecvTimeoutError::Disconnected) => return,
                        },
                        None => match rx.recv() {
                            Ok(wake) => wake,
                            Err(_) => return,
                        },
                    };
                    due.push(Reverse(next));
                }
            })?;
        Ok(Self { tx })
    }

    /// Returns at `at` (or at once if the timer thread is gone).
    async fn sleep_until(&self, at: Instant) {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(Wake { at, tx }).is_ok() {
            let _ = rx.await;
        }
    }
}

struct State {
    opts: Options,
    timer: PreciseTimer,
    canned: Canned,
    requests: AtomicU64,
}

/// True when the JSON body has `"stream"` followed by `: true` (any spacing).
fn wants_stream(body: &[u8]) -> bool {
    const KEY: &[u8] = b"\"stream\"";
    let mut from = 0;
    while let Some(pos) = body[from..].windows(KEY.len()).position(|w| w == KEY) {
        let rest = &body[from + pos + KEY.len()..];
        let rest = rest.trim_ascii_start();
        if let Some(after) = rest.strip_prefix(b":")
            && after.trim_ascii_start().starts_with(b"true")
        {
            return true;
        }
        from += pos + KEY.len();
    }
    false
}

fn full(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Body> {
    let mut resp = Response::new(Full::new(body).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    resp
}

/// An SSE answer whose first event is due at `start`.
fn sse(state: Arc<State>, start: Instant) -> Response<Body> {
    let total = state.opts.chunks;
    // Event k (0-based) is due at start + k * interval; [DONE] goes right after the last.
    let events = futures_util::stream::unfold(0u32, move |k| {
        let state = Arc::clone(&state);
        async move {
            if k > total {
                return None;
            }
            let bytes = if k == total {
                state.canned.done_event.clone()
            } else {
                state
                    .timer
                    .sleep_until(start + state.opts.interval * k)
                    .await;
                if k + 1 == total {
                    state.canned.final_event.clone()
                } else {
                    state.canned.content_event.clone()
                }
            };
            Some((Ok::<_, Infallible>(Frame::data(bytes)), k + 1))
        }
    });
    let mut resp = Response::new(BodyExt::boxed(StreamBody::new(events)));
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/event-stream"),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-cache"),
    );
    resp
}

async fn handle(state: Arc<State>, req: Request<Incoming>) -> Result<Response<Body>, BoxError> {
    state.requests.fetch_add(1, Ordering::Relaxed);
    // The latency counts from the request's arrival, for answers and streams alike.
    let due = Instant::now() + state.opts.latency;
    let path = req.uri().path();
    match (req.method(), path) {
        (&Method::POST, "/v1/chat/completions") => {
            let body = req.into_body().collect().await?.to_bytes();
            if wants_stream(&body) {
                return Ok(sse(state, due));
            }
            if !state.opts.latency.is_zero() {
                state.timer.sleep_until(due).await;
            }
            Ok(full(
                StatusCode::OK,
                "application/json",
                state.canned.completion.clone(),
            ))
        }
        (&Method::GET, "/v1/models") => Ok(full(
            StatusCode::OK,
            "application/json",
            state.canned.models.clone(),
        )),
        _ => {
            // Read the body so the connection stays usable.
            let _ = req.into_body().collect().await;
            Ok(full(
                StatusCode::NOT_FOUND,
                "application/json",
                state.canned.not_found.clone(),
            ))
        }
    }
}

async fn serve(opts: Options) -> Result<(), BoxError> {
    let listener = TcpListener::bind(("127.0.0.1", opts.port)).await?;
    let addr = listener.local_addr()?;
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "listening on {addr}")?;
        out.flush()?;
    }
    let max_seconds = opts.max_seconds;
    let state = Arc::new(State {
        opts,
        timer: PreciseTimer::start()?,
        canned: Canned::new(),
        requests: AtomicU64::new(0),
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder.http1().keep_alive(true).timer(TokioTimer::new());
    let builder = Arc::new(builder);
    let deadline = async move {
        if max_seconds == 0 {
            std::future::pending::<()>().await;
        } else {
            tokio::time::sleep(Duration::from_secs(max_seconds)).await;
        }
    };
    let mut deadline = std::pin::pin!(deadline);
    loop {
        let (tcp, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    eprintln!("bench_upstream: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut deadline => break,
            _ = tokio::signal::ctrl_c() => break,
        };
        let _ = tcp.set_nodelay(true);
        let state = Arc::clone(&state);
        let builder = Arc::clone(&builder);
        tokio::spawn(async move {
            let service = service_fn(move |req| handle(Arc::clone(&state), req));
            // Errors here are clients going away mid-request: nothing to report.
            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
        });
    }
    eprintln!(
        "bench_upstream: stopping after {} request(s)",
        state.requests.load(Ordering::Relaxed)
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench_upstream: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    // Worker threads: one per CPU this process may run on (taskset narrows it).
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("bench_upstream: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(opts)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("bench_upstream: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_flag_is_found_with_any_spacing() {
        assert!(wants_stream(br#"{"model":"m","stream":true}"#));
        assert!(wants_stream(br#"{"model":"m", "stream" :  true }"#));
        assert!(!wants_stream(br#"{"model":"m","stream":false}"#));
        assert!(!wants_stream(br#"{"model":"m","content":"stream"}"#));
        assert!(!wants_stream(br#"{"model":"m"}"#));
    }

    #[test]
    fn the_timer_wakes_each_sleeper_at_its_deadline_never_before() {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
            panic!("no runtime");
        };
        rt.block_on(async {
            let Ok(timer) = PreciseTimer::start() else {
                panic!("no timer thread");
            };
            let timer = Arc::new(timer);
            let t0 = Instant::now();
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            for ms in [30u64, 10, 20] {
                let (timer, tx) = (Arc::clone(&timer), tx.clone());
                tokio::spawn(async move {
                    let due = t0 + Duration::from_millis(ms);
                    timer.sleep_until(due).await;
                    let _ = tx.send((ms, Instant::now() >= due));
                });
            }
            drop(tx);
            let mut woken = Vec::new();
            while let Some(w) = rx.recv().await {
                woken.push(w);
            }
            assert_eq!(woken, [(10, true), (20, true), (30, true)]);
        });
    }

    #[test]
    fn the_completion_is_about_600_bytes() {
        let c = Canned::new();
        assert!(
            (500..=750).contains(&c.completion.len()),
            "{}",
            c.completion.len()
        );
    }
}
