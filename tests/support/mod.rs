//! Test harness: the real server on an ephemeral port (through the same
//! `App::build` + `server::run` seam as the binary) in front of mock upstreams.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::disallowed_methods
)]

pub mod mock;
pub mod redis;

use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use mock::*;
use serde_json::{Value, json};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use llm_router::api::AppState;
use llm_router::config::{self, EnvMap, Overrides};

/// A `ROUTER_SERVICES` element for a mock upstream.
pub fn svc(up: &MockUpstream) -> Value {
    json!({"name": up.name, "backend_type": "custom", "base_url": up.url(), "api_key": format!("upstream-key-{}", up.name)})
}

/// `svc(up)` with extra fields.
pub fn svc_with(up: &MockUpstream, extra: Value) -> Value {
    let mut v = svc(up);
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    v
}

/// A running router.
pub struct TestRouter {
    pub url: String,
    /// The variables a key reload reads (change them with [`TestRouter::set_env`]).
    env: Arc<Mutex<Vec<(String, String)>>>,
    pub state: Arc<AppState>,
    pub http: reqwest::Client,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<()>>,
}

impl TestRouter {
    pub async fn start(services: Vec<Value>) -> Self {
        Self::start_with(services, &[]).await
    }

    /// Starts with `ROUTER_SERVICES = services` and extra variables.
    pub async fn start_with(services: Vec<Value>, env: &[(&str, &str)]) -> Self {
        let mut pairs: Vec<(String, String)> = vec![
            ("ROUTER_SERVICES".into(), Value::Array(services).to_string()),
            ("ENABLE_AUTH".into(), "false".into()),
            ("REQUEST_TIMEOUT".into(), "10".into()),
            ("SHUTDOWN_GRACE_PERIOD".into(), "5".into()),
        ];
        pairs.extend(env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let cfg = config::load(&Overrides::default(), &EnvMap::from_pairs(pairs.clone()))
            .expect("valid test configuration");
        let env = Arc::new(Mutex::new(pairs));
        let source_env = Arc::clone(&env);
        let source: llm_router::auth::EnvSource =
            Arc::new(move || Ok(EnvMap::from_pairs(source_env.lock().unwrap().clone())));
        let app = llm_router::App::build_with_env_source(cfg, source)
            .await
            .expect("app builds");
        let state = Arc::clone(app.state());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            llm_router::run(listener, app, async {
                let _ = rx.await;
            })
            .await
            .expect("server runs");
        });
        let http = http_client();
        Self {
            url,
            env,
            state,
            http,
            shutdown: Some(tx),
            handle: Some(handle),
        }
    }

    /// Sets (or, with `None`, removes) a variable for the next key reload.
    pub fn set_env(&self, name: &str, value: Option<&str>) {
        let mut env = self.env.lock().unwrap();
        env.retain(|(k, _)| !k.eq_ignore_ascii_case(name));
        if let Some(v) = value {
            env.push((name.to_owned(), v.to_owned()));
        }
    }

    /// A request builder for `path`.
    pub fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http.request(method, format!("{}{path}", self.url))
    }

    /// `GET path` with `Authorization: Bearer key`.
    pub async fn get_with_key(&self, path: &str, key: &str) -> reqwest::Response {
        self.request(reqwest::Method::GET, path)
            .bearer_auth(key)
            .send()
            .await
            .unwrap()
    }

    /// `POST path` (JSON body) with `Authorization: Bearer key`.
    pub async fn post_with_key(&self, path: &str, body: &Value, key: &str) -> reqwest::Response {
        self.request(reqwest::Method::POST, path)
            .bearer_auth(key)
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post(&self, path: &str, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> reqwest::Response {
        self.http
            .post(format!("{}{path}", self.url))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap()
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.http
            .get(format!("{}{path}", self.url))
            .send()
            .await
            .unwrap()
    }

    pub async fn get_json(&self, path: &str) -> Value {
        let r = self.get(path).await;
        assert_eq!(r.status(), 200, "GET {path}");
        r.json().await.unwrap()
    }

    /// A chat completion for `model` with extra body fields.
    pub async fn chat(&self, model: &str, extra: Value) -> reqwest::Response {
        self.post("/v1/chat/completions", &chat_request(model, extra))
            .await
    }

    pub async fn stats(&self) -> Value {
        self.get_json("/router/stats").await
    }

    /// Signals shutdown and waits for the server to finish.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(10), h)
                .await
                .expect("server stops")
                .unwrap();
        }
    }
}

impl Drop for TestRouter {
    fn drop(&mut self) {
        if let Some(h) = self.handle.take() {
            h.abort();
        }
    }
}

/// A plain client for loopback tests (no proxy from the environment).
pub fn http_client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder().no_proxy().build().unwrap()
}

pub fn chat_request(model: &str, extra: Value) -> Value {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    body
}

/// The content of a chat completion answer.
pub async fn content(r: reqwest::Response) -> String {
    let status = r.status();
    let text = r.text().await.unwrap();
    assert_eq!(status, 200, "{text}");
    let v: Value = serde_json::from_str(&text).unwrap();
    v["choices"][0]["message"]["content"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// Asserts status and the OpenAI error shape; returns the `error` object.
pub async fn assert_error(r: reqwest::Response, status: u16, kind: &str) -> Value {
    let got = r.status().as_u16();
    let text = r.text().await.unwrap();
    assert_eq!(got, status, "body: {text}");
    let v: Value =
        serde_json::from_str(&text).unwrap_or_else(|_| panic!("error body is not JSON: {text}"));
    let e = v["error"].clone();
    for key in ["message", "type", "code", "param"] {
        assert!(e.get(key).is_some(), "error.{key} missing: {text}");
    }
    assert!(
        e["type"] == kind || e["code"] == kind,
        "expected {kind}, got {text}"
    );
    e
}

/// The `data:` payloads of an SSE body, in order.
pub fn sse_data(text: &str) -> Vec<String> {
    let mut events = Vec::new();
    let mut data: Vec<String> = Vec::new();
    for line in text.replace("\r\n", "\n").split('\n') {
        if line.is_empty() {
            if !data.is_empty() {
                events.push(data.join("\n"));
                data.clear();
            }
        } else if let Some(rest) = line.strip_prefix("data:") {
            data.push(rest.strip_prefix(' ').unwrap_or(rest).to_owned());
        }
    }
    if !data.is_empty() {
        events.push(data.join("\n"));
    }
    events
}

/// Polls `cond` until true or `timeout` passes.
pub async fn wait_for(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::time::Instant::now() < deadline {
        if cond() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    cond()
}
