//! A streaming load client for the benchmark (`bench/run`, docs/benchmarks.md).
//!
//! Keeps `--concurrency` streams (`"stream": true` chat requests) open at once,
//! each worker starting its next stream when the previous one ends, until
//! `--requests` streams have been started or `--duration` seconds have passed.
//! For every stream it records the time to the first SSE data event, every gap
//! between consecutive data events, the exact number of events and any error, and
//! prints one JSON summary on stdout.
//!
//! ```text
//! cargo run --release --example bench_stream_client -- --url http://127.0.0.1:8000/v1/chat/completions \
//!     [--concurrency 64] [--requests N] [--duration 10] [--chunks 20] [--interval-ms 10]
//!     [--ramp-ms 0] [--prime-url URL] [--timeout 60] [--auth KEY] [--body-file FILE]
//! ```
//!
//! `--ramp-ms` spreads the workers' first streams over that time; as every stream
//! lasts as long, a ramp of one stream's length keeps their starts spread, as
//! independent clients' would be, instead of all arriving at once. `--prime-url`
//! opens one connection per worker with a GET of that URL before the clock starts,
//! so no measured stream waits for a TCP handshake.
//!
//! An event is a block ending in a blank line. A stream is correct when it answers
//! 200 with exactly `--chunks` data events followed by `data: [DONE]`, and carries
//! no `"error"` event. A stall is a gap of at least `--interval-ms + 25` ms (35 ms
//! for 10 ms chunks: the signature of a Nagle / delayed-ACK wait).
//!
//! Raise the descriptor limit (`ulimit -n`) before asking for thousands of streams.

// A benchmark tool, not the router: worker tasks are plain spawns.
#![allow(clippy::disallowed_methods)]

use std::error::Error;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;

type BoxError = Box<dyn Error + Send + Sync>;

const DEFAULT_BODY: &str = r#"{"model":"bench-model","stream":true,"temperature":0.2,"max_tokens":256,"messages":[{"role":"system","content":"You are a concise assistant for a travel company. Answer in plain English."},{"role":"user","content":"What is the capital of France?"},{"role":"assistant","content":"Paris."},{"role":"user","content":"And what should I see there in one day?"}]}"#;

#[derive(Debug, Clone)]
struct Options {
    url: String,
    concurrency: usize,
    requests: Option<u64>,
    duration: Option<Duration>,
    chunks: u64,
    interval_ms: f64,
    ramp: Duration,
    prime_url: Option<String>,
    timeout: Duration,
    auth: Option<String>,
    body: String,
}

fn usage() -> &'static str {
    "usage: bench_stream_client --url URL [--concurrency N] [--requests N] [--duration SECS] \
     [--chunks N] [--interval-ms MS] [--ramp-ms MS] [--prime-url URL] [--timeout SECS] [--auth KEY] \
     [--body-file FILE]"
}

fn parse_args() -> Result<Options, String> {
    let mut o = Options {
        url: String::new(),
        concurrency: 1,
        requests: None,
        duration: None,
        chunks: 20,
        interval_ms: 10.0,
        ramp: Duration::ZERO,
        prime_url: None,
        timeout: Duration::from_secs(60),
        auth: None,
        body: DEFAULT_BODY.to_owned(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        if flag == "-h" || flag == "--help" {
            println!("{}", usage());
            std::process::exit(0);
        }
        let value = args
            .next()
            .ok_or_else(|| format!("{flag} needs a value\n{}", usage()))?;
        let num = |v: &str| -> Result<f64, String> {
            v.parse::<f64>()
                .ok()
                .filter(|x| x.is_finite() && *x >= 0.0)
                .ok_or_else(|| format!("{flag} needs a non-negative number, not {v:?}"))
        };
        match flag.as_str() {
            "--url" => o.url = value,
            "--concurrency" | "-c" => o.concurrency = (num(&value)? as usize).max(1),
            "--requests" | "-n" => o.requests = Some(num(&value)? as u64),
            "--duration" | "-d" => o.duration = Some(Duration::from_secs_f64(num(&value)?)),
            "--chunks" => o.chunks = num(&value)? as u64,
            "--interval-ms" => o.interval_ms = num(&value)?,
            "--ramp-ms" => o.ramp = Duration::from_secs_f64(num(&value)? / 1000.0),
            "--prime-url" => o.prime_url = Some(value),
            "--timeout" => o.timeout = Duration::from_secs_f64(num(&value)?.max(0.001)),
            "--auth" => o.auth = Some(value),
            "--body-file" => {
                o.body = std::fs::read_to_string(&value)
                    .map_err(|e| format!("cannot read {value}: {e}"))?;
            }
            other => return Err(format!("unknown argument {other}\n{}", usage())),
        }
    }
    if o.url.is_empty() {
        return Err(format!("--url is required\n{}", usage()));
    }
    if o.requests.is_none() && o.duration.is_none() {
        o.requests = Some(o.concurrency as u64);
    }
    Ok(o)
}

/// What one stream looked like.
#[derive(Debug, Default)]
struct StreamRecord {
    first_event_us: Option<u64>,
    gaps_us: Vec<u64>,
    data_events: u64,
    saw_done: bool,
    error: Option<String>,
}

/// Splits SSE bytes into events (a blank line ends one) across chunk borders.
#[derive(Default)]
struct EventSplitter {
    buf: Vec<u8>,
}

impl EventSplitter {
    /// Appends `chunk` and returns the complete events it finished.
    fn push(&mut self, chunk: &[u8]) -> Vec<Vec<u8>> {
        self.buf.extend_from_slice(chunk);
        let mut out = Vec::new();
        while let Some((end, sep)) = find_boundary(&self.buf) {
            let event: Vec<u8> = self.buf.drain(..end + sep).take(end).collect();
            out.push(event);
        }
        out
    }
}

/// The first blank line in `buf`: (event length, separator length).
fn find_boundary(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf.windows(2).position(|w| w == b"\n\n").map(|i| (i, 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

async fn one_stream(client: &reqwest::Client, opts: &Options) -> StreamRecord {
    let mut rec = StreamRecord::default();
    let started = Instant::now();
    let run = async {
        let mut req = client
            .post(&opts.url)
            .header("content-type", "application/json")
            .header("accept", "text/event-stream")
            .body(opts.body.clone());
        if let Some(key) = &opts.auth {
            req = req.bearer_auth(key);
        }
        let resp = req.send().await.map_err(|e| describe(&e))?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.text().await.unwrap_or_default();
            return Err(format!(
                "HTTP {}: {}",
                status.as_u16(),
                body.chars().take(200).collect::<String>()
            ));
        }
        let mut body = resp.bytes_stream();
        let mut splitter = EventSplitter::default();
        let mut last: Option<Instant> = None;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| describe(&e))?;
            let now = Instant::now();
            for event in splitter.push(&chunk) {
                let data = event_data(&event);
                if data.as_deref() == Some("[DONE]") {
                    rec.saw_done = true;
                } else if let Some(d) = data {
                    if rec.saw_done {
                        return Err("data event after [DONE]".to_owned());
                    }
                    if d.starts_with("{\"error\"") {
                        return Err(format!(
                            "error event: {}",
                            d.chars().take(200).collect::<String>()
                        ));
                    }
                    rec.data_events += 1;
                    // Timings are between data events; `[DONE]` follows the last at once.
                    match last {
                        None => rec.first_event_us = Some(micros(now - started)),
                        Some(prev) => rec.gaps_us.push(micros(now - prev)),
                    }
                    last = Some(now);
                }
            }
        }
        if !rec.saw_done {
            return Err("stream ended without data: [DONE]".to_owned());
        }
        Ok(())
    };
    match tokio::time::timeout(opts.timeout, run).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => rec.error = Some(e),
        Err(_) => rec.error = Some(format!("timed out after {:?}", opts.timeout)),
    }
    rec
}

/// Opens `--concurrency` connections, one GET of `url` on each. Every answer is
/// held until all have arrived, so that no GET finds another's connection idle
/// and reuses it; the connections then wait in the client's pool.
async fn open_connections(
    client: &reqwest::Client,
    url: &str,
    opts: &Options,
) -> Result<(), BoxError> {
    let barrier = Arc::new(tokio::sync::Barrier::new(opts.concurrency));
    let mut gets = tokio::task::JoinSet::new();
    for _ in 0..opts.concurrency {
        let mut req = client.get(url);
        if let Some(key) = &opts.auth {
            req = req.bearer_auth(key);
        }
        let barrier = Arc::clone(&barrier);
        gets.spawn(async move {
            let answer = req.send().await;
            // Every worker reaches the barrier, failed or not, so none waits forever.
            barrier.wait().await;
            let resp = answer.map_err(|e| describe(&e))?;
            let status = resp.status();
            resp.bytes().await.map_err(|e| describe(&e))?;
            if status.is_success() {
                Ok(())
            } else {
                Err(format!("HTTP {}", status.as_u16()))
            }
        });
    }
    while let Some(done) = gets.join_next().await {
        done?.map_err(|e| format!("--prime-url {url}: {e}"))?;
    }
    Ok(())
}

/// The joined `data:` lines of one event, if it has any.
fn event_data(event: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(event);
    let mut data: Option<String> = None;
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if let Some(v) = line.strip_prefix("data:") {
            let v = v.strip_prefix(' ').unwrap_or(v);
            match &mut data {
                Some(d) => {
                    d.push('\n');
                    d.push_str(v);
                }
                None => data = Some(v.to_owned()),
            }
        }
    }
    data
}

fn describe(e: &reqwest::Error) -> String {
    let mut source: &dyn Error = e;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// Nearest-rank percentile of sorted values, in milliseconds.
fn pct_ms(sorted: &[u64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    let i = rank.clamp(1, sorted.len()) - 1;
    Some(sorted[i] as f64 / 1000.0)
}

#[derive(Default)]
struct Totals {
    streams: u64,
    ok: u64,
    errors: u64,
    mismatches: u64,
    first: Vec<u64>,
    gaps: Vec<u64>,
    error_samples: Vec<String>,
}

async fn run(opts: Options) -> Result<serde_json::Value, BoxError> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = reqwest::Client::builder()
        .tcp_nodelay(true)
        .pool_max_idle_per_host(opts.concurrency)
        .pool_idle_timeout(Duration::from_secs(90))
        .connect_timeout(Duration::from_secs(10))
        .build()?;
    if let Some(url) = &opts.prime_url {
        open_connections(&client, url, &opts).await?;
    }
    let opts = Arc::new(opts);
    let started_count = Arc::new(AtomicU64::new(0));
    let deadline = opts.duration.map(|d| Instant::now() + d);
    let t0 = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..opts.concurrency {
        let client = client.clone();
        let opts = Arc::clone(&opts);
        let started_count = Arc::clone(&started_count);
        let delay = if opts.concurrency > 1 {
            opts.ramp.mul_f64(w as f64 / opts.concurrency as f64)
        } else {
            Duration::ZERO
        };
        workers.spawn(async move {
            tokio::time::sleep(delay).await;
            let mut records = Vec::new();
            loop {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let n = started_count.fetch_add(1, Ordering::Relaxed);
                if opts.requests.is_some_and(|max| n >= max) {
                    break;
                }
                records.push(one_stream(&client, &opts).await);
            }
            records
        });
    }
    let mut t = Totals::default();
    while let Some(done) = workers.join_next().await {
        for rec in done? {
            t.streams += 1;
            match rec.error {
                Some(e) => {
                    t.errors += 1;
                    if t.error_samples.len() < 5 {
                        t.error_samples.push(e);
                    }
                }
                None => {
                    t.ok += 1;
                    if rec.data_events != opts.chunks {
                        t.mismatches += 1;
                        if t.error_samples.len() < 5 {
                            t.error_samples.push(format!(
                                "event count {} (expected {})",
                                rec.data_events, opts.chunks
                            ));
                        }
                    }
                }
            }
            t.first.extend(rec.first_event_us);
            t.gaps.extend(rec.gaps_us);
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    t.first.sort_unstable();
    t.gaps.sort_unstable();
    let stall_us = ((opts.interval_ms + 25.0) * 1000.0) as u64;
    let stalls = t.gaps.iter().filter(|&&g| g >= stall_us).count();
    let ge_35 = t.gaps.iter().filter(|&&g| g >= 35_000).count();
    Ok(serde_json::json!({
        "tool": "bench_stream_client",
        "url": opts.url,
        "concurrency": opts.concurrency,
        "expected_chunks": opts.chunks,
        "interval_ms": opts.interval_ms,
        "elapsed_s": elapsed,
        "streams": t.streams,
        "streams_ok": t.ok,
        "streams_per_s": if elapsed > 0.0 { t.streams as f64 / elapsed } else { 0.0 },
        "errors": t.errors,
        "event_count_mismatches": t.mismatches,
        "first_event_ms": {
            "p50": pct_ms(&t.first, 50.0),
            "p99": pct_ms(&t.first, 99.0),
            "max": pct_ms(&t.first, 100.0),
        },
        "gap_ms": {
            "p50": pct_ms(&t.gaps, 50.0),
            "p99": pct_ms(&t.gaps, 99.0),
            "max": pct_ms(&t.gaps, 100.0),
        },
        "max_gap_ms": pct_ms(&t.gaps, 100.0),
        "gaps": t.gaps.len(),
        "gaps_ge_35ms": ge_35,
        "stall_threshold_ms": stall_us as f64 / 1000.0,
        "stalls": stalls,
        "error_samples": t.error_samples,
    }))
}

fn main() -> std::process::ExitCode {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench_stream_client: {e}");
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
            eprintln!("bench_stream_client: cannot start the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(opts)) {
        Ok(summary) => {
            println!("{summary}");
            std::process::ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("bench_stream_client: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_are_split_across_chunk_borders() {
        let mut s = EventSplitter::default();
        assert!(s.push(b"data: a\n").is_empty());
        let ev = s.push(b"\ndata: b\n\ndata: [DO");
        assert_eq!(ev, vec![b"data: a".to_vec(), b"data: b".to_vec()]);
        let ev = s.push(b"NE]\r\n\r\n");
        assert_eq!(ev, vec![b"data: [DONE]".to_vec()]);
        assert_eq!(event_data(&ev[0]).as_deref(), Some("[DONE]"));
    }

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let v: Vec<u64> = (1..=100).map(|x| x * 1000).collect();
        assert_eq!(pct_ms(&v, 50.0), Some(50.0));
        assert_eq!(pct_ms(&v, 99.0), Some(99.0));
        assert_eq!(pct_ms(&v, 100.0), Some(100.0));
        assert_eq!(pct_ms(&[], 50.0), None);
    }
}
