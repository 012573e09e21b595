//! `llm-router demo`: the router in front of simulated OpenAI-compatible
//! providers on loopback, so a newcomer sees routing, failover, streaming and
//! rate limits with no API key.
//!
//! Providers: `flaky` (priority 0, limited by the router to 5 requests per
//! 10 s; of every 8 calls it fails the 6th, 7th and 8th with 503, so three in a
//! row eject it and a probe later brings it back) and `steady` (priority 1,
//! also serves `demo-large`, which `flaky` does not, to show model-aware routing).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{StatusCode, header};
use serde_json::{Value, json};
use tokio::net::TcpListener;

use crate::config::{self, Env, EnvMap, Overrides};
use crate::error::StartupError;
use crate::supervisor::Supervisor;
use crate::{logging, server};

/// One simulated provider.
struct Provider {
    name: &'static str,
    models: &'static [&'static str],
    /// Calls fail in bursts: of every `cycle` calls, the last `burst` fail with 503.
    cycle: u64,
    burst: u64,
    calls: AtomicU64,
}

/// Runs the demo until Ctrl-C / SIGTERM.
pub async fn run(overrides: &Overrides, env: &EnvMap) -> Result<(), StartupError> {
    let providers = Supervisor::new();
    let flaky = start_provider(
        &providers,
        Provider {
            name: "flaky",
            models: &["demo-chat"],
            cycle: 8,
            burst: 3,
            calls: AtomicU64::new(0),
        },
    )
    .await?;
    let steady = start_provider(
        &providers,
        Provider {
            name: "steady",
            models: &["demo-chat", "demo-large"],
            cycle: 1,
            burst: 0,
            calls: AtomicU64::new(0),
        },
    )
    .await?;

    let services = json!([
        { "name": "flaky", "backend_type": "custom", "base_url": format!("http://{flaky}/v1"),
          "priority": 0, "rate_limit_requests": 5, "rate_limit_window": 10, "timeout": 10 },
        { "name": "steady", "backend_type": "custom", "base_url": format!("http://{steady}/v1"),
          "priority": 1, "timeout": 10 },
    ]);
    // The demo's services are its own. Listening, logging and authentication
    // settings come from the user's environment: with no key configured, client
    // authentication is off; with keys, the demo uses them.
    let mut demo_env = EnvMap::from_pairs([("ROUTER_SERVICES", services.to_string())]);
    demo_env.set("HOST", env.get("HOST").unwrap_or("127.0.0.1").to_owned());
    // Short ejections and frequent probes, so the recovery is visible within seconds.
    demo_env.set(
        "HEALTH_EJECT_SECONDS",
        env.get("HEALTH_EJECT_SECONDS").unwrap_or("5").to_owned(),
    );
    demo_env.set(
        "HEALTH_PROBE_INTERVAL",
        env.get("HEALTH_PROBE_INTERVAL").unwrap_or("2").to_owned(),
    );
    let numbered: Vec<String> = (1..=99).map(|i| format!("AUTH_KEY_{i:02}")).collect();
    let passed = [
        "PORT",
        "LOG_LEVEL",
        "LOG_FORMAT",
        "SHUTDOWN_GRACE_PERIOD",
        "ENABLE_AUTH",
        "AUTH_KEY",
        "AUTH_HEADER_NAME",
        "AUTH_KEYS_FILE",
        "ADMIN_KEY",
        "AUTH_KEY_RATE_LIMIT",
    ];
    for name in passed
        .iter()
        .copied()
        .chain(numbered.iter().map(String::as_str))
    {
        if let Some(v) = env.get(name) {
            demo_env.set(name, v.to_owned());
        }
    }
    let overrides = Overrides {
        config_file: None,
        ..overrides.clone()
    };
    let cfg = config::load(&overrides, &demo_env)?;
    logging::init(&cfg.log_level, config::rust_log(env), cfg.log_format);

    let (host, port) = (cfg.host.clone(), cfg.port);
    let app = server::App::build(cfg).await?;
    let listener = server::bind(&host, port).await?;
    let local = listener.local_addr().map_err(|source| StartupError::Bind {
        addr: format!("{host}:{port}"),
        source,
    })?;
    let auth = app
        .state()
        .auth
        .enforced()
        .then(|| crate::auth::header_display(&app.state().config.auth.header_name));
    println!("{}", banner(local, auth.as_deref()));
    let result = server::run(listener, app, server::shutdown_signal()).await;
    providers.shutdown().await;
    result
}

/// `auth_header`: `Some(header)` when client keys are enforced.
fn banner(addr: SocketAddr, auth_header: Option<&str>) -> String {
    let base = format!("http://{addr}");
    let (auth_line, h, api_key) = match auth_header {
        None => (
            "Client authentication is OFF in the demo: any api_key (or none) is accepted."
                .to_owned(),
            String::new(),
            "\"demo\"".to_owned(),
        ),
        Some(header) => (
            format!(
                "Client authentication is ON with your configured keys: send one in the {header} header \
                 (below, $AUTH_KEY stands for one of them)."
            ),
            format!(" -H \"{header}: Bearer $AUTH_KEY\""),
            "os.environ[\"AUTH_KEY\"]".to_owned(),
        ),
    };
    format!(
        r#"
llm-router demo is running on {base}
{auth_line}

Simulated providers on loopback:
  flaky   priority 0, limited to 5 requests per 10 s; fails 3 calls in a row out of
          every 8 (503): the router ejects it, probes it, and brings it back
  steady  priority 1, always answers; the only one serving "demo-large"

Try it:
  curl{h} {base}/v1/models
  curl{h} {base}/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{{"model": "demo-chat", "messages": [{{"role": "user", "content": "Hello!"}}]}}'
  curl{h} -N {base}/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{{"model": "demo-chat", "stream": true, "messages": [{{"role": "user", "content": "Stream please"}}]}}'
  # ten quick calls: watch failover and rate limiting pick the service
  for i in $(seq 10); do curl{h} -s -D - -o /dev/null {base}/v1/chat/completions -H 'Content-Type: application/json' \
    -d '{{"model": "demo-chat", "messages": [{{"role": "user", "content": "hi"}}]}}' | grep -i x-llm-router-service; done
  curl{h} {base}/router/stats
  curl{h} {base}/router/rate-limits
  # health: watch flaky turn unhealthy (ejected), then degraded (half-open), then healthy
  curl{h} {base}/router/health

Python (pip install openai):
  import os
  from openai import OpenAI
  client = OpenAI(base_url="{base}/v1", api_key={api_key})
  print(client.chat.completions.create(model="demo-chat", messages=[{{"role": "user", "content": "Hi"}}]).choices[0].message.content)

Press Ctrl-C to stop.
"#
    )
}

async fn start_provider(
    supervisor: &Supervisor,
    provider: Provider,
) -> Result<SocketAddr, StartupError> {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|source| StartupError::Bind {
            addr: "127.0.0.1:0".to_owned(),
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| StartupError::Bind {
        addr: "127.0.0.1:0".to_owned(),
        source,
    })?;
    let app = Router::new()
        .route("/v1/models", get(models))
        .route("/v1/chat/completions", post(chat))
        .route("/v1/completions", post(completion))
        .route("/v1/embeddings", post(embedding))
        .with_state(Arc::new(provider));
    supervisor.spawn("demo-provider", async move {
        if let Err(e) = axum::serve(listener, app).await {
            tracing::error!(error = %e, "demo provider stopped");
        }
    });
    Ok(addr)
}

async fn models(State(p): State<Arc<Provider>>) -> Response {
    let data: Vec<Value> = p
        .models
        .iter()
        .map(
            |m| json!({ "id": m, "object": "model", "created": 1_700_000_000, "owned_by": p.name }),
        )
        .collect();
    axum::Json(json!({ "object": "list", "data": data })).into_response()
}

/// Counts the call; `Some(error response)` when this one is meant to fail.
fn simulated_outage(p: &Provider) -> Option<Response> {
    let n = p.calls.fetch_add(1, Ordering::Relaxed) + 1;
    ((n - 1) % p.cycle >= p.cycle - p.burst).then(|| {
        let body = crate::error::error_body(
            &format!(
                "{}: simulated outage ({} of every {} calls fail)",
                p.name, p.burst, p.cycle
            ),
            "server_error",
            None,
            None,
        );
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            body,
        )
            .into_response()
    })
}

fn last_user_text(body: &Value) -> String {
    body["messages"]
        .as_array()
        .and_then(|msgs| msgs.iter().rev().find(|m| m["role"] == "user"))
        .and_then(|m| m["content"].as_str())
        .unwrap_or("")
        .chars()
        .take(200)
        .collect()
}

async fn chat(State(p): State<Arc<Provider>>, axum::Json(body): axum::Json<Value>) -> Response {
    if let Some(outage) = simulated_outage(&p) {
        return outage;
    }
    let model = body["model"].as_str().unwrap_or("demo-chat").to_owned();
    let reply = format!(
        "Hello from the {} provider! You said: {}",
        p.name,
        last_user_text(&body)
    );
    let id = format!("chatcmpl-demo-{}", p.calls.load(Ordering::Relaxed));
    if body["stream"].as_bool() == Some(true) {
        return stream_reply(id, model, reply);
    }
    axum::Json(json!({
        "id": id, "object": "chat.completion", "created": 1_700_000_000, "model": model,
        "choices": [{ "index": 0, "message": { "role": "assistant", "content": reply }, "finish_reason": "stop" }],
        "usage": { "prompt_tokens": 8, "completion_tokens": 12, "total_tokens": 20 },
    }))
    .into_response()
}

fn stream_reply(id: String, model: String, reply: String) -> Response {
    let words: Vec<String> = reply.split_inclusive(' ').map(str::to_owned).collect();
    let total = words.len();
    let events = futures_util::stream::unfold(0usize, move |i| {
        let (id, model) = (id.clone(), model.clone());
        let word = words.get(i).cloned();
        async move {
            let event = match i {
                i if i < total => {
                    if i > 0 {
                        tokio::time::sleep(Duration::from_millis(40)).await;
                    }
                    let delta = if i == 0 {
                        json!({ "role": "assistant", "content": word })
                    } else {
                        json!({ "content": word })
                    };
                    chunk(&id, &model, delta, Value::Null)
                }
                i if i == total => chunk(&id, &model, json!({}), json!("stop")),
                i if i == total + 1 => "data: [DONE]\n\n".to_owned(),
                _ => return None,
            };
            Some((Ok::<_, Infallible>(Bytes::from(event)), i + 1))
        }
    });
    (
        [(header::CONTENT_TYPE, "text/event-stream")],
        Body::from_stream(events),
    )
        .into_response()
}

fn chunk(id: &str, model: &str, delta: Value, finish: Value) -> String {
    let obj = json!({
        "id": id, "object": "chat.completion.chunk", "created": 1_700_000_000, "model": model,
        "choices": [{ "index": 0, "delta": delta, "finish_reason": finish }],
    });
    format!("data: {obj}\n\n")
}

async fn completion(
    State(p): State<Arc<Provider>>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Some(outage) = simulated_outage(&p) {
        return outage;
    }
    axum::Json(json!({
        "id": "cmpl-demo", "object": "text_completion", "created": 1_700_000_000,
        "model": body["model"], "choices": [{ "index": 0, "text": format!("Hello from the {} provider!", p.name), "finish_reason": "stop" }],
        "usage": { "prompt_tokens": 4, "completion_tokens": 6, "total_tokens": 10 },
    }))
    .into_response()
}

async fn embedding(
    State(p): State<Arc<Provider>>,
    axum::Json(body): axum::Json<Value>,
) -> Response {
    if let Some(outage) = simulated_outage(&p) {
        return outage;
    }
    axum::Json(json!({
        "object": "list", "model": body["model"],
        "data": [{ "object": "embedding", "index": 0, "embedding": [0.1, 0.2, 0.3] }],
        "usage": { "prompt_tokens": 3, "total_tokens": 3 },
    }))
    .into_response()
}
