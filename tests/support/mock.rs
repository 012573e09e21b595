//! A scriptable fake OpenAI-compatible provider on a raw TCP socket, so tests
//! control every byte: JSON and SSE bodies, any status, `Retry-After`, hangs,
//! closes without an answer, drops mid-stream, slow chunks, split writes.
//! Every request is recorded, and so is whether the router went away early.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the mock does with one routed POST.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A chat/completions/embeddings success naming the upstream (the default).
    Ok,
    /// Any status and JSON body, with extra headers and a delay before answering.
    Json {
        status: u16,
        body: String,
        headers: Vec<(String, String)>,
        delay: Duration,
    },
    /// Any status, content type and raw body (e.g. an HTML error page).
    Raw {
        status: u16,
        content_type: String,
        body: String,
    },
    /// An SSE answer: each piece written separately (flushed), `gap` between
    /// pieces; with `drop_after: Some(n)` the connection is cut after n pieces.
    Sse {
        pieces: Vec<Vec<u8>>,
        gap: Duration,
        first_delay: Duration,
        drop_after: Option<usize>,
    },
    /// Read the request, never answer (until the router hangs up).
    Hang,
    /// Read the request and close the connection without a byte.
    Close,
}

/// `{"error": {...}}` with `status`.
pub fn error(status: u16, message: &str) -> Reply {
    let kind = if status >= 500 {
        "server_error"
    } else {
        "invalid_request_error"
    };
    Reply::Json {
        status,
        body: json!({"error": {"message": message, "type": kind, "code": null, "param": null}})
            .to_string(),
        headers: vec![],
        delay: Duration::ZERO,
    }
}

/// 429 with `Retry-After: secs`.
pub fn rate_limited(secs: u64) -> Reply {
    Reply::Json {
        status: 429,
        body: json!({"error": {"message": "slow down", "type": "rate_limit_error", "code": "rate_limit_exceeded", "param": null}})
            .to_string(),
        headers: vec![("Retry-After".into(), secs.to_string())],
        delay: Duration::ZERO,
    }
}

/// A JSON success with a custom body.
pub fn json_ok(body: Value) -> Reply {
    Reply::Json {
        status: 200,
        body: body.to_string(),
        headers: vec![],
        delay: Duration::ZERO,
    }
}

/// A success after `delay`.
pub fn slow_ok(name: &str, delay: Duration) -> Reply {
    Reply::Json {
        status: 200,
        body: chat_body(name, "m").to_string(),
        headers: vec![],
        delay,
    }
}

/// A chat chunk event carrying `content`.
pub fn chunk_event(content: &str) -> String {
    let obj = json!({"id": "chatcmpl-s", "object": "chat.completion.chunk", "created": 1, "model": "m",
                     "choices": [{"index": 0, "delta": {"content": content}, "finish_reason": null}]});
    format!("data: {obj}\n\n")
}

/// `n` content events then `[DONE]`, `gap` apart.
pub fn sse_chat(prefix: &str, n: usize, gap: Duration) -> Reply {
    let mut pieces: Vec<String> = (0..n)
        .map(|i| chunk_event(&format!("{prefix}{i} ")))
        .collect();
    pieces.push("data: [DONE]\n\n".into());
    sse_pieces(pieces, gap)
}

/// An SSE answer written as exactly these pieces, `gap` apart.
pub fn sse_pieces<P: Into<Vec<u8>>>(pieces: impl IntoIterator<Item = P>, gap: Duration) -> Reply {
    Reply::Sse {
        pieces: pieces.into_iter().map(Into::into).collect(),
        gap,
        first_delay: Duration::ZERO,
        drop_after: None,
    }
}

pub fn chat_body(name: &str, model: &str) -> Value {
    json!({
        "id": format!("chatcmpl-{name}"), "object": "chat.completion", "created": 1, "model": model,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": format!("reply from {name}")},
                     "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
    })
}

/// One request the mock received.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub headers: HashMap<String, String>,
    pub body: Vec<u8>,
    pub at: Instant,
    /// Times each SSE piece was written.
    pub piece_times: Vec<Instant>,
    /// The router closed the connection before the answer was complete.
    pub cancelled_at: Option<Instant>,
}

impl Recorded {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

#[derive(Default)]
struct Script {
    default: Option<Reply>,
    queue: VecDeque<Reply>,
    models: Option<Vec<String>>,
    requests: Vec<Recorded>,
}

/// A running fake provider; stops when dropped.
pub struct MockUpstream {
    pub name: String,
    pub port: u16,
    script: Arc<Mutex<Script>>,
    connections: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for MockUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl MockUpstream {
    /// Starts a provider serving `["test-model"]`.
    pub async fn start(name: &str) -> Self {
        Self::with_models(name, Some(&["test-model"])).await
    }

    /// `models: None` makes `GET /models` fail with 500 (list unknown).
    pub async fn with_models(name: &str, models: Option<&[&str]>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let script = Arc::new(Mutex::new(Script {
            models: models.map(|m| m.iter().map(|s| s.to_string()).collect()),
            ..Script::default()
        }));
        let connections = Arc::new(AtomicUsize::new(0));
        let (s, c, n) = (script.clone(), connections.clone(), name.to_owned());
        let task = tokio::spawn(async move {
            loop {
                let Ok((sock, _)) = listener.accept().await else {
                    return;
                };
                c.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve_connection(sock, s.clone(), n.clone()));
            }
        });
        Self {
            name: name.to_owned(),
            port,
            script,
            connections,
            task,
        }
    }

    /// The OpenAI base URL, `http://127.0.0.1:PORT/v1`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// The reply for every routed POST from now on.
    pub fn set(&self, reply: Reply) -> &Self {
        self.script.lock().unwrap().default = Some(reply);
        self
    }

    /// One-off replies consumed by the next routed POSTs, in order.
    pub fn then(&self, reply: Reply) -> &Self {
        self.script.lock().unwrap().queue.push_back(reply);
        self
    }

    /// Changes what `GET /models` answers (`None`: HTTP 500).
    pub fn set_models(&self, models: Option<&[&str]>) {
        self.script.lock().unwrap().models =
            models.map(|m| m.iter().map(|s| s.to_string()).collect());
    }

    pub fn requests(&self) -> Vec<Recorded> {
        self.script.lock().unwrap().requests.clone()
    }

    /// Routed POSTs received (chat, completions, embeddings).
    pub fn posts(&self) -> Vec<Recorded> {
        self.requests()
            .into_iter()
            .filter(|r| r.method == "POST")
            .collect()
    }

    pub fn post_count(&self) -> usize {
        self.posts().len()
    }

    pub fn last_post(&self) -> Recorded {
        self.posts().pop().expect("no POST received")
    }

    pub fn model_list_calls(&self) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == "GET" && r.path.ends_with("/models"))
            .count()
    }

    /// TCP connections accepted so far.
    pub fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn read_request(
    sock: &mut TcpStream,
    buf: &mut Vec<u8>,
) -> Option<(String, String, HashMap<String, String>, Vec<u8>)> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let mut tmp = [0u8; 8192];
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.split("\r\n");
    let mut first = lines.next()?.split(' ');
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    while buf.len() < head_end + len {
        let mut tmp = [0u8; 65536];
        let n = sock.read(&mut tmp).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&tmp[..n]);
    }
    let body = buf[head_end..head_end + len].to_vec();
    buf.drain(..head_end + len);
    Some((method, path, headers, body))
}

/// Waits `d`, or returns false early if the peer closed the connection.
async fn wait_or_peer_gone(sock: &mut TcpStream, d: Duration) -> bool {
    let mut probe = [0u8; 1];
    tokio::select! {
        () = tokio::time::sleep(d) => true,
        r = sock.read(&mut probe) => !matches!(r, Ok(0) | Err(_)),
    }
}

fn status_text(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        413 => "Payload Too Large",
        422 => "Unprocessable Entity",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    }
}

async fn write_full(
    sock: &mut TcpStream,
    status: u16,
    content_type: &str,
    extra: &[(String, String)],
    body: &[u8],
) -> bool {
    let mut head = format!(
        "HTTP/1.1 {status} {}\r\ncontent-type: {content_type}\r\ncontent-length: {}\r\n",
        status_text(status),
        body.len()
    );
    for (k, v) in extra {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    head.push_str("\r\n");
    sock.write_all(head.as_bytes()).await.is_ok() && sock.write_all(body).await.is_ok()
}

async fn serve_connection(mut sock: TcpStream, script: Arc<Mutex<Script>>, name: String) {
    let _ = sock.set_nodelay(true);
    let mut buf = Vec::new();
    while let Some((method, path, headers, body)) = read_request(&mut sock, &mut buf).await {
        let at = Instant::now();
        let index = {
            let mut s = script.lock().unwrap();
            s.requests.push(Recorded {
                method: method.clone(),
                path: path.clone(),
                headers,
                body: body.clone(),
                at,
                piece_times: vec![],
                cancelled_at: None,
            });
            s.requests.len() - 1
        };
        let mark_cancelled = |script: &Arc<Mutex<Script>>| {
            script.lock().unwrap().requests[index].cancelled_at = Some(Instant::now());
        };
        if method == "GET" && path.ends_with("/models") {
            let models = script.lock().unwrap().models.clone();
            let ok = match models {
                Some(list) => {
                    let data: Vec<Value> = list
                        .iter()
                        .map(
                            |m| json!({"id": m, "object": "model", "created": 7, "owned_by": name}),
                        )
                        .collect();
                    write_full(
                        &mut sock,
                        200,
                        "application/json",
                        &[],
                        json!({"object": "list", "data": data})
                            .to_string()
                            .as_bytes(),
                    )
                    .await
                }
                None => {
                    write_full(
                        &mut sock,
                        500,
                        "application/json",
                        &[],
                        br#"{"error":{"message":"no list"}}"#,
                    )
                    .await
                }
            };
            if !ok {
                return;
            }
            continue;
        }
        let reply = {
            let mut s = script.lock().unwrap();
            s.queue
                .pop_front()
                .or_else(|| s.default.clone())
                .unwrap_or(Reply::Ok)
        };
        match reply {
            Reply::Ok => {
                let model = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|v| v["model"].as_str().map(str::to_owned))
                    .unwrap_or_default();
                let payload = if path.ends_with("/embeddings") {
                    json!({"object": "list", "model": model, "data": [{"object": "embedding", "index": 0, "embedding": [0.5, name.len() as f64]}], "x_upstream": name})
                } else {
                    chat_body(&name, &model)
                };
                if !write_full(
                    &mut sock,
                    200,
                    "application/json",
                    &[],
                    payload.to_string().as_bytes(),
                )
                .await
                {
                    return;
                }
            }
            Reply::Json {
                status,
                body,
                headers,
                delay,
            } => {
                if !delay.is_zero() && !wait_or_peer_gone(&mut sock, delay).await {
                    mark_cancelled(&script);
                    return;
                }
                if !write_full(
                    &mut sock,
                    status,
                    "application/json",
                    &headers,
                    body.as_bytes(),
                )
                .await
                {
                    return;
                }
            }
            Reply::Raw {
                status,
                content_type,
                body,
            } => {
                if !write_full(&mut sock, status, &content_type, &[], body.as_bytes()).await {
                    return;
                }
            }
            Reply::Hang => {
                let mut probe = [0u8; 1];
                let _ = tokio::time::timeout(Duration::from_secs(120), sock.read(&mut probe)).await;
                mark_cancelled(&script);
                return;
            }
            Reply::Close => return,
            Reply::Sse {
                pieces,
                gap,
                first_delay,
                drop_after,
            } => {
                if !first_delay.is_zero() && !wait_or_peer_gone(&mut sock, first_delay).await {
                    mark_cancelled(&script);
                    return;
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";
                if sock.write_all(head.as_bytes()).await.is_err() {
                    return;
                }
                for (i, piece) in pieces.iter().enumerate() {
                    if drop_after == Some(i) {
                        return; // cut the connection mid-stream
                    }
                    if i > 0 && !gap.is_zero() && !wait_or_peer_gone(&mut sock, gap).await {
                        mark_cancelled(&script);
                        return;
                    }
                    let mut frame = format!("{:x}\r\n", piece.len()).into_bytes();
                    frame.extend_from_slice(piece);
                    frame.extend_from_slice(b"\r\n");
                    if sock.write_all(&frame).await.is_err() {
                        mark_cancelled(&script);
                        return;
                    }
                    script.lock().unwrap().requests[index]
                        .piece_times
                        .push(Instant::now());
                }
                if drop_after.is_some_and(|n| n >= pieces.len()) {
                    return;
                }
                if sock.write_all(b"0\r\n\r\n").await.is_err() {
                    return;
                }
            }
        }
    }
}
