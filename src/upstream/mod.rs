//! The client side: one pooled HTTP client for every upstream, the request we
//! send, and the classification of every outcome into a success, a client error
//! to pass through, or a [`Failure`] that routing may fail over.
//!
//! hyper's error types stop here: everything above sees our own enums.

pub mod sse;

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::StreamExt;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, StatusCode, Uri, header};
use http_body_util::{BodyDataStream, BodyExt, Collected, Full};
use hyper::body::Incoming;
use hyper_rustls::{HttpsConnector, HttpsConnectorBuilder};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::Secret;
use crate::error::StartupError;
use sse::{ChunkStream, SseFramer, has_data_field};

/// How long a TCP (and TLS) connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Sent on every upstream call.
const USER_AGENT: &str = concat!("llm-router/", env!("CARGO_PKG_VERSION"));
/// Largest upstream error body kept for its message.
const MAX_ERROR_BODY: usize = 64 * 1024;

/// One call's failure, as routing needs to know it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// Could not connect, or the connection broke before a complete answer.
    Connect(String),
    /// No complete answer within the service's timeout.
    Timeout(String),
    /// An HTTP status that means "try another service" (401, 403, 404, 408, 429, 3xx, 5xx).
    Status {
        status: StatusCode,
        message: Option<String>,
        retry_after: Option<Duration>,
    },
}

impl Failure {
    /// A one-line description for logs and the client's error message.
    pub fn describe(&self) -> String {
        match self {
            Failure::Connect(why) => format!("connection failed: {why}"),
            Failure::Timeout(why) => format!("timed out: {why}"),
            Failure::Status {
                status,
                message: Some(m),
                ..
            } => format!("HTTP {}: {m}", status.as_u16()),
            Failure::Status {
                status,
                message: None,
                ..
            } => format!("HTTP {}", status.as_u16()),
        }
    }
}

/// The headers of an upstream answer that travel back to the client with its body.
#[derive(Debug, Clone, Default)]
pub struct PassHeaders {
    pub content_type: Option<HeaderValue>,
    /// Passed with the body it describes: we never decode, so the two stay consistent.
    pub content_encoding: Option<HeaderValue>,
}

impl PassHeaders {
    fn from(headers: &HeaderMap) -> Self {
        Self {
            content_type: headers.get(header::CONTENT_TYPE).cloned(),
            content_encoding: headers.get(header::CONTENT_ENCODING).cloned(),
        }
    }
}

/// A complete, buffered answer: a success, or a client error passed through as is.
#[derive(Debug)]
pub struct Complete {
    pub status: StatusCode,
    pub headers: PassHeaders,
    pub body: Bytes,
}

/// A stream whose first event has arrived; the rest follows through [`sse::relay`].
pub struct Streaming {
    pub status: StatusCode,
    pub headers: PassHeaders,
    /// Bytes read so far: complete events (`ready` bytes) then a partial tail.
    pub head: BytesMut,
    pub ready: usize,
    pub framer: SseFramer,
    pub rest: ChunkStream,
    pub idle_timeout: Duration,
}

/// An answer the client will get (success or pass-through client error).
pub enum Reply {
    Complete(Complete),
    Streaming(Streaming),
}

impl Reply {
    pub fn status(&self) -> StatusCode {
        match self {
            Reply::Complete(c) => c.status,
            Reply::Streaming(s) => s.status,
        }
    }
}

/// What to send: one routed request to one service.
pub struct Call<'a> {
    pub uri: &'a Uri,
    pub headers: &'a ServiceHeaders,
    pub body: Bytes,
    pub stream: bool,
    pub timeout: Duration,
    pub request_id: Option<&'a HeaderValue>,
}

type Connector = HttpsConnector<HttpConnector>;

/// The pooled client shared by every request and by model discovery.
///
/// hyper-util's pooled client used directly (not reqwest): the request path builds
/// a `Request` from a URI parsed at start-up and a handful of prebuilt header
/// values, with no per-request URL parsing, redirect policy or extra boxing.
#[derive(Clone)]
pub struct UpstreamClient {
    http: Client<Connector, Full<Bytes>>,
}

/// The headers every call to one service carries, built once at start-up so that
/// a request formats none of them (hyper-util would format `Host` per request).
#[derive(Debug, Clone)]
pub struct ServiceHeaders {
    /// Only for `http://` services, which always speak HTTP/1.1. Over TLS the
    /// protocol is chosen by ALPN, and an h2 request carries `:authority`
    /// instead: hyper-util sets `Host` there for HTTP/1.1 only.
    host: Option<HeaderValue>,
    /// `Bearer <key>`, marked sensitive so that hyper (HPACK) and any `Debug`
    /// output never show it.
    authorization: Option<HeaderValue>,
}

impl ServiceHeaders {
    /// `base` is any URI of the service (they share scheme, host and port).
    pub fn new(base: &Uri, key: Option<&Secret>) -> Result<Self, String> {
        let host = match (base.scheme_str(), base.host(), base.port_u16()) {
            (_, None, _) => return Err(format!("{base} has no host")),
            (Some("http"), Some(h), Some(p)) if p != 80 => Some(format!("{h}:{p}")),
            (Some("http"), Some(h), _) => Some(h.to_owned()),
            _ => None,
        };
        let host = host
            .map(HeaderValue::try_from)
            .transpose()
            .map_err(|_| format!("{base}: bad host"))?;
        let authorization = match key {
            Some(key) => {
                let mut value =
                    HeaderValue::try_from(format!("Bearer {}", key.expose())).map_err(|_| {
                        "the API key contains characters not allowed in an HTTP header".to_owned()
                    })?;
                value.set_sensitive(true);
                Some(value)
            }
            None => None,
        };
        Ok(Self {
            host,
            authorization,
        })
    }
}

impl UpstreamClient {
    pub fn new() -> Result<Self, StartupError> {
        let mut http = HttpConnector::new();
        // Small SSE chunks would otherwise wait ~40 ms for Nagle + delayed ACK.
        http.set_nodelay(true);
        http.set_connect_timeout(Some(CONNECT_TIMEOUT));
        // The scheme is checked by the TLS layer above: https gets TLS, http does not.
        http.enforce_http(false);
        // rustls with ring (no OpenSSL), trusting what the platform trusts.
        let tls = HttpsConnectorBuilder::new()
            .with_provider_and_platform_verifier(rustls::crypto::ring::default_provider())
            .map_err(|e| StartupError::Client(format!("TLS set-up: {e}")))?
            .https_or_http()
            .enable_http1()
            .enable_http2()
            .wrap_connector(http);
        let http = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(tls);
        Ok(Self { http })
    }

    fn request(
        uri: &Uri,
        method: Method,
        accept: &'static str,
        service: &ServiceHeaders,
        body: Bytes,
    ) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(body));
        *req.method_mut() = method;
        *req.uri_mut() = uri.clone();
        let headers = req.headers_mut();
        headers.reserve(6);
        if let Some(host) = &service.host {
            headers.insert(header::HOST, host.clone());
        }
        headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
        headers.insert(header::ACCEPT, HeaderValue::from_static(accept));
        if let Some(value) = &service.authorization {
            headers.insert(header::AUTHORIZATION, value.clone());
        }
        req
    }

    /// Sends one routed call and classifies the outcome. No redirect is followed:
    /// a POST must never silently become a GET on another host.
    pub async fn call(&self, call: Call<'_>) -> Result<Reply, Failure> {
        let accept = if call.stream {
            "text/event-stream"
        } else {
            "application/json"
        };
        let mut req = Self::request(call.uri, Method::POST, accept, call.headers, call.body);
        let headers = req.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(id) = call.request_id {
            headers.insert(crate::request_id::HEADER, id.clone());
        }
        if call.stream {
            self.call_stream(req, call.timeout).await
        } else {
            match tokio::time::timeout(call.timeout, self.call_complete(req)).await {
                Ok(result) => result,
                Err(_) => Err(timed_out("no complete answer", call.timeout)),
            }
        }
    }

    async fn call_complete(&self, req: Request<Full<Bytes>>) -> Result<Reply, Failure> {
        let resp = self.http.request(req).await.map_err(|e| failed(&e))?;
        let status = resp.status();
        let headers = PassHeaders::from(resp.headers());
        // Only a refusal's Retry-After means anything (`decide`).
        let retry_after = if status.is_success() {
            None
        } else {
            retry_after(resp.headers())
        };
        let body = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| Failure::Connect(describe(&e)))?
            .to_bytes();
        decide(status, headers, body, retry_after).map(Reply::Complete)
    }

    async fn call_stream(
        &self,
        req: Request<Full<Bytes>>,
        timeout: Duration,
    ) -> Result<Reply, Failure> {
        let resp = match tokio::time::timeout(timeout, self.http.request(req)).await {
            Ok(r) => r.map_err(|e| failed(&e))?,
            Err(_) => return Err(timed_out("no response headers", timeout)),
        };
        let status = resp.status();
        let headers = PassHeaders::from(resp.headers());
        if !status.is_success() {
            let retry_after = retry_after(resp.headers());
            let body = match tokio::time::timeout(timeout, read_limited(resp.into_body())).await {
                Ok(body) => body,
                Err(_) => Bytes::new(),
            };
            return decide(status, headers, body, retry_after).map(Reply::Complete);
        }
        if !is_event_stream(&headers) {
            // The upstream ignored `stream: true` and answered in one piece: relay it as such.
            let body = match tokio::time::timeout(timeout, resp.into_body().collect()).await {
                Ok(body) => body.map_err(|e| Failure::Connect(describe(&e)))?.to_bytes(),
                Err(_) => return Err(timed_out("no complete answer", timeout)),
            };
            return Ok(Reply::Complete(Complete {
                status,
                headers,
                body,
            }));
        }
        let mut rest: ChunkStream =
            Box::pin(BodyDataStream::new(resp.into_body()).map(|r| r.map_err(|e| describe(&e))));
        // Nothing goes to the client before the first complete event with data: until
        // then a failure is failed over like any other (the response head is sent
        // together with that event).
        let mut head = BytesMut::new();
        let mut framer = SseFramer::default();
        loop {
            let ready = match tokio::time::timeout(timeout, rest.next()).await {
                Err(_) => return Err(timed_out("no first event", timeout)),
                Ok(Some(Err(why))) => return Err(Failure::Connect(why)),
                Ok(None) if !has_data_field(&head) => {
                    let what = if head.is_empty() {
                        "any event"
                    } else {
                        "any data event"
                    };
                    return Err(Failure::Connect(format!("stream closed before {what}")));
                }
                // A complete (if unframed) answer: relay it as is.
                Ok(None) => head.len(),
                Ok(Some(Ok(chunk))) => {
                    let before = head.len();
                    head.extend_from_slice(&chunk);
                    match framer.feed(&chunk) {
                        Some(n) if has_data_field(&head[..before + n]) => before + n,
                        _ => continue,
                    }
                }
            };
            return Ok(Reply::Streaming(Streaming {
                status,
                headers,
                head,
                ready,
                framer,
                rest,
                idle_timeout: timeout,
            }));
        }
    }

    /// `GET {base_url}/models` for discovery: the JSON body, or why not.
    pub async fn get_models(
        &self,
        uri: &Uri,
        headers: &ServiceHeaders,
        timeout: Duration,
    ) -> Result<Bytes, String> {
        let req = Self::request(uri, Method::GET, "application/json", headers, Bytes::new());
        let fetch = async {
            let resp = self.http.request(req).await.map_err(|e| describe(&e))?;
            let status = resp.status();
            if !status.is_success() {
                return Err(format!("HTTP {}", status.as_u16()));
            }
            resp.into_body()
                .collect()
                .await
                .map(Collected::to_bytes)
                .map_err(|e| describe(&e))
        };
        match tokio::time::timeout(timeout, fetch).await {
            Ok(result) => result,
            Err(_) => Err(format!("timed out after {:.1} s", timeout.as_secs_f64())),
        }
    }
}

fn is_event_stream(headers: &PassHeaders) -> bool {
    headers
        .content_type
        .as_ref()
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim_start()
                .to_ascii_lowercase()
                .starts_with("text/event-stream")
        })
}

/// Success, pass-through client error, or failure, by status.
fn decide(
    status: StatusCode,
    headers: PassHeaders,
    body: Bytes,
    retry_after: Option<Duration>,
) -> Result<Complete, Failure> {
    if is_failover_status(status) {
        return Err(Failure::Status {
            status,
            message: error_message(&body),
            retry_after,
        });
    }
    Ok(Complete {
        status,
        headers,
        body,
    })
}

/// Statuses that say "this service cannot serve this now", so another may.
/// 400, 413, 422 (and other 4xx) are the client's fault and go back as they are.
pub fn is_failover_status(status: StatusCode) -> bool {
    status.is_server_error()
        || status.is_redirection()
        || matches!(status.as_u16(), 401 | 403 | 404 | 408 | 429)
        || status.is_informational()
}

async fn read_limited(body: Incoming) -> Bytes {
    let mut out = BytesMut::new();
    let mut body = BodyDataStream::new(body);
    while let Some(Ok(chunk)) = body.next().await {
        out.extend_from_slice(&chunk);
        if out.len() >= MAX_ERROR_BODY {
            break;
        }
    }
    out.freeze()
}

/// The human message of an upstream error body, if it is an OpenAI-like JSON
/// error (`{"error": {"message"}}`, `{"error": "..."}`, `{"message"}`, `{"detail"}`).
/// HTML or other bodies give `None`: they never reach the client.
pub fn error_message(body: &[u8]) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Envelope {
        error: Option<serde_json::Value>,
        message: Option<String>,
        detail: Option<serde_json::Value>,
    }
    let env: Envelope = serde_json::from_slice(body).ok()?;
    let text = match env.error {
        Some(serde_json::Value::Object(map)) => map
            .get("message")
            .and_then(|m| m.as_str())
            .map(str::to_owned),
        Some(serde_json::Value::String(s)) => Some(s),
        _ => None,
    }
    .or(env.message)
    .or_else(|| {
        env.detail.map(|d| {
            d.as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| d.to_string())
        })
    })?;
    let text: String = text.chars().take(1000).collect();
    (!text.is_empty()).then_some(text)
}

/// `retry-after-ms` (OpenAI), or `retry-after` in seconds or as an HTTP date.
/// Capped at a day: a bogus header must not bench a service for ever.
const RETRY_AFTER_MS: HeaderName = HeaderName::from_static("retry-after-ms");

fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let parse = |name: &HeaderName| {
        headers
            .get(name)?
            .to_str()
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite() && *v >= 0.0)
    };
    if let Some(ms) = parse(&RETRY_AFTER_MS) {
        return Some(Duration::from_secs_f64((ms / 1000.0).min(86_400.0)));
    }
    if let Some(secs) = parse(&header::RETRY_AFTER) {
        return Some(Duration::from_secs_f64(secs.min(86_400.0)));
    }
    let date = httpdate::parse_http_date(headers.get(header::RETRY_AFTER)?.to_str().ok()?).ok()?;
    let wait = date
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    Some(wait.min(Duration::from_secs(86_400)))
}

fn timed_out(what: &str, timeout: Duration) -> Failure {
    Failure::Timeout(format!("{what} within {:.1} s", timeout.as_secs_f64()))
}

/// A request that got no usable answer: could not connect, or the connection
/// broke before the response head.
fn failed(e: &hyper_util::client::legacy::Error) -> Failure {
    let root = describe(e);
    Failure::Connect(if e.is_connect() {
        format!("cannot connect: {root}")
    } else {
        root
    })
}

/// A short description of a transport error: its innermost cause, which names
/// what happened (refused, reset, closed) without repeating the URL.
fn describe(e: &(dyn std::error::Error + 'static)) -> String {
    let mut source = e;
    while let Some(next) = source.source() {
        source = next;
    }
    source.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failover_statuses_follow_the_spec() {
        for s in [401, 403, 404, 429, 500, 502, 503, 504] {
            assert!(is_failover_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
        for s in [200, 400, 413, 422] {
            assert!(!is_failover_status(StatusCode::from_u16(s).unwrap()), "{s}");
        }
    }

    #[test]
    fn error_messages_are_found_in_common_shapes_and_html_is_ignored() {
        assert_eq!(
            error_message(br#"{"error":{"message":"boom","type":"x"}}"#).as_deref(),
            Some("boom")
        );
        assert_eq!(
            error_message(br#"{"error":"flat"}"#).as_deref(),
            Some("flat")
        );
        assert_eq!(
            error_message(br#"{"detail":"fastapi"}"#).as_deref(),
            Some("fastapi")
        );
        assert_eq!(
            error_message(b"<html><body>502 Bad Gateway</body></html>"),
            None
        );
    }

    #[test]
    fn service_headers_carry_a_sensitive_bearer_and_refuse_what_http_cannot_carry() {
        let uri = Uri::from_static("http://127.0.0.1:8080/v1/chat/completions");
        let h = ServiceHeaders::new(&uri, Some(&Secret::new("sk-abc"))).unwrap();
        let value = h.authorization.clone().unwrap();
        assert_eq!(value, "Bearer sk-abc");
        assert!(value.is_sensitive());
        assert!(!format!("{h:?}").contains("sk-abc"));
        assert!(ServiceHeaders::new(&uri, Some(&Secret::new("sk\nabc"))).is_err());
        assert!(
            ServiceHeaders::new(&uri, None)
                .unwrap()
                .authorization
                .is_none()
        );
    }

    #[test]
    fn host_header_is_prebuilt_for_plain_http_with_the_port_only_when_needed() {
        let host = |u: &'static str| {
            ServiceHeaders::new(&Uri::from_static(u), None)
                .unwrap()
                .host
        };
        assert_eq!(
            host("http://127.0.0.1:8080/v1/models").unwrap(),
            "127.0.0.1:8080"
        );
        assert_eq!(host("http://localhost:80/v1/models").unwrap(), "localhost");
        assert_eq!(host("http://[::1]:11434/v1/models").unwrap(), "[::1]:11434");
        // TLS: HTTP/1.1 or h2 by ALPN; hyper-util adds Host for HTTP/1.1 itself.
        assert_eq!(host("https://api.openai.com/v1/models"), None);
        assert_eq!(host("https://api.example.com:8443/v1"), None);
    }

    #[test]
    fn retry_after_prefers_milliseconds() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", HeaderValue::from_static("3"));
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after-ms", HeaderValue::from_static("1500"));
        assert_eq!(retry_after(&h), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn retry_after_accepts_an_http_date() {
        let mut h = HeaderMap::new();
        let at = std::time::SystemTime::now() + Duration::from_secs(120);
        h.insert(
            "retry-after",
            HeaderValue::from_str(&httpdate::fmt_http_date(at)).unwrap(),
        );
        let wait = retry_after(&h).unwrap();
        assert!(
            wait > Duration::from_secs(115) && wait <= Duration::from_secs(120),
            "{wait:?}"
        );
        h.insert(
            "retry-after",
            HeaderValue::from_static("Wed, 21 Oct 2015 07:28:00 GMT"),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO));
    }
}
