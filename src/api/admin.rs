//! Information, statistics and health endpoints, with the Python router's field
//! names (SPEC 5).

use std::sync::Arc;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, header};
use serde_json::{Map, Value, json};
use tokio::time::Instant;

use super::{AppState, schema};
use crate::metrics::{ServiceLabels, StatusLabels};
use crate::routing::Service;
use crate::shared::ClusterView;
use crate::stats::percent;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `GET /health`: liveness, open to everyone.
#[utoipa::path(get, path = "/health", tag = "router", 
    responses((status = 200, description = "Alive (liveness); needs no key", body = schema::Status)))]
pub async fn health() -> Json<Value> {
    Json(json!({ "status": "healthy", "version": VERSION }))
}

/// `GET /ready`: readiness for load balancers. Deliberately independent of
/// upstream health and rate limits (SPEC 5): every replica sees the same
/// providers, and turning all of them unready would turn an outage into a total one.
#[utoipa::path(get, path = "/ready", tag = "router", 
    responses((status = 200, description = "Ready for traffic; needs no key", body = schema::Status), (status = 503, description = "Starting up or shutting down", body = schema::ErrorResponse)))]
pub async fn ready(State(state): State<Arc<AppState>>) -> Result<Json<Value>, crate::error::Error> {
    if state.ready.load(Relaxed) {
        Ok(Json(json!({ "status": "ready" })))
    } else {
        Err(crate::error::Error::ServiceUnavailable(
            "The router is starting up or shutting down".to_owned(),
        ))
    }
}

/// `GET /metrics`: Prometheus exposition. State gauges are computed here, at
/// scrape time, not maintained on the request path.
#[utoipa::path(get, path = "/metrics", tag = "router", security(("bearer" = []), ()),
    description = "Prometheus exposition; needs a key unless METRICS_PUBLIC=true.",
    responses((status = 200, description = "Metrics", content_type = "text/plain", body = String),
        (status = 401, description = "Missing or invalid client key", body = schema::ErrorResponse)))]
pub async fn metrics(State(state): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    let m = &state.dispatcher.metrics;
    let now = Instant::now();
    for s in &state.dispatcher.services {
        let service = Arc::clone(&s.label);
        if let Some(limiter) = &s.limiter {
            let remaining = i64::from(limiter.state(now).await.remaining());
            m.rate_limit_remaining
                .get_or_create(&ServiceLabels {
                    service: Arc::clone(&service),
                })
                .set(remaining);
        }
        let current = s.health.status(now);
        m.service_in_flight
            .get_or_create(&ServiceLabels {
                service: Arc::clone(&service),
            })
            .set(i64::try_from(s.in_flight()).unwrap_or(i64::MAX));
        for status in ["healthy", "degraded", "unhealthy"] {
            let value = i64::from(status == current);
            m.service_status
                .get_or_create(&StatusLabels {
                    service: Arc::clone(&service),
                    status,
                })
                .set(value);
        }
    }
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let content_type = if openmetrics {
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    } else {
        "text/plain; version=0.0.4; charset=utf-8"
    };
    ([(header::CONTENT_TYPE, content_type)], m.render()).into_response()
}

/// `GET /`.
#[utoipa::path(get, path = "/", tag = "router", security(("bearer" = [])),
    responses((status = 200, description = "Name, version, mode and services", body = schema::RootInfo), (status = 401, description = "Missing or invalid client key", body = schema::ErrorResponse)))]
pub async fn root(State(state): State<Arc<AppState>>) -> Json<Value> {
    let services: Vec<Value> = state
        .dispatcher
        .services
        .iter()
        .map(|s| json!({ "name": s.name(), "type": s.config.backend_type.as_str(), "priority": s.config.priority }))
        .collect();
    Json(json!({
        "message": "LLM Router: an OpenAI-compatible gateway",
        "version": VERSION,
        "docs": "/docs",
        "mode": state.config.mode(),
        "services": services,
    }))
}

/// `GET /backend/info`: per-service configuration, keys masked.
#[utoipa::path(get, path = "/backend/info", tag = "router", security(("bearer" = [])),
    responses((status = 200, description = "Per-service configuration, keys masked", body = schema::BackendInfo), (status = 401, description = "Missing or invalid client key", body = schema::ErrorResponse)))]
pub async fn backend_info(State(state): State<Arc<AppState>>) -> Json<Value> {
    let services: Vec<Value> = state
        .dispatcher
        .services
        .iter()
        .map(|s| {
            let c = &s.config;
            let models = s
                .models
                .load()
                .as_ref()
                .map(|cat| cat.models.iter().map(|m| m.id.clone()).collect::<Vec<_>>());
            json!({
                "name": c.name,
                "backend_type": c.backend_type.as_str(),
                "base_url": c.base_url_str(),
                "priority": c.priority,
                "timeout": c.timeout.as_secs_f64(),
                "has_api_key": c.api_key.is_some(),
                "api_key": c.api_key.as_ref().map(|k| k.masked()),
                "rate_limit_config": rate_limit_config(s),
                "models": models,
            })
        })
        .collect();
    Json(json!({
        "mode": state.config.mode(),
        "version": VERSION,
        "configured_services": services.len(),
        "services": services,
    }))
}

/// `GET /router/stats`.
#[utoipa::path(get, path = "/router/stats", tag = "router", security(("bearer" = [])),
    responses((status = 200, description = "Totals and per-service counters", body = schema::RouterStats), (status = 401, description = "Missing or invalid client key", body = schema::ErrorResponse)))]
pub async fn router_stats(State(state): State<Arc<AppState>>) -> Json<Value> {
    let d = &state.dispatcher;
    let total = d.stats.total_requests.load(Relaxed);
    let failovers = d.stats.total_failovers.load(Relaxed);
    let skips = d.stats.total_rate_limit_skips.load(Relaxed);
    let now = Instant::now();
    let mut per_service = Map::new();
    let (mut calls, mut failures) = (0, 0);
    for s in &d.services {
        let c = s.stats.counts();
        calls += c.requests;
        failures += c.failures;
        per_service.insert(
            s.name().to_owned(),
            json!({
                "requests": c.requests,
                "failures": c.failures,
                "rate_limited": c.rate_limited,
                "failure_rate": c.failure_rate(),
                "ejection_skips": c.ejection_skips,
                "in_flight": s.in_flight(),
                "latency_ewma_ms": (s.latency_ms(now) * 100.0).round() / 100.0,
            }),
        );
    }
    let ejection_skips = d.stats.total_ejection_skips.load(Relaxed);
    // Without Redis the cluster is this replica; with it, the live replicas' totals
    // from the last heartbeat (at most about a second old).
    let cluster = match &d.shared {
        Some(shared) => shared.cluster(),
        None => ClusterView {
            replicas: 1,
            total_requests: total,
            total_failovers: failovers,
            total_rate_limit_skips: skips,
            total_ejection_skips: ejection_skips,
        },
    };
    Json(json!({
        "total_requests": total,
        "total_ejection_skips": ejection_skips,
        "replicas": cluster.replicas,
        "cluster": {
            "total_requests": cluster.total_requests,
            "total_failovers": cluster.total_failovers,
            "total_rate_limit_skips": cluster.total_rate_limit_skips,
            "total_ejection_skips": cluster.total_ejection_skips,
        },
        "load_balancing": d.balancing().as_str(),
        "total_failovers": failovers,
        "total_rate_limit_skips": skips,
        "failover_rate": percent(failovers, total),
        "rate_limit_skip_rate": percent(skips, total),
        "failure_rate": percent(failures, calls),
        "configured_services": d.services.len(),
        "service_order": d.services.iter().map(|s| s.name()).collect::<Vec<_>>(),
        "service_stats": per_service,
        "rate_limiting": rate_limiting(&state).await,
    }))
}

/// `GET /router/rate-limits`.
#[utoipa::path(get, path = "/router/rate-limits", tag = "router", security(("bearer" = [])),
    responses((status = 200, description = "Per-service window state", body = schema::RateLimits), (status = 401, description = "Missing or invalid client key", body = schema::ErrorResponse)))]
pub async fn rate_limits(State(state): State<Arc<AppState>>) -> Json<Value> {
    let d = &state.dispatcher;
    let total = d.stats.total_requests.load(Relaxed);
    let skips = d.stats.total_rate_limit_skips.load(Relaxed);
    Json(json!({
        "rate_limiting": rate_limiting(&state).await,
        "total_rate_limit_skips": skips,
        "rate_limit_skip_rate": percent(skips, total),
    }))
}

/// `GET /router/health`.
#[utoipa::path(get, path = "/router/health", tag = "router", security(("bearer" = [])),
    responses((status = 200, description = "Per-service health", body = schema::RouterHealth), (status = 401, description = "Missing or invalid client key", body = schema::ErrorResponse)))]
pub async fn router_health(State(state): State<Arc<AppState>>) -> Json<Value> {
    let now = Instant::now();
    let mut services = Map::new();
    let mut healthy = 0;
    for s in &state.dispatcher.services {
        let c = s.stats.counts();
        let limited = s.is_rate_limited(now).await;
        let status = s.health.status(now);
        let ejected_until = s.health.ejected_for(now).map(|left| {
            humantime::format_rfc3339_millis(std::time::SystemTime::now() + left).to_string()
        });
        healthy += usize::from(status == "healthy");
        services.insert(
            s.name().to_owned(),
            json!({
                "status": status,
                "backend_type": s.config.backend_type.as_str(),
                "base_url": s.config.base_url_str(),
                "has_api_key": s.config.api_key.is_some(),
                "requests": c.requests,
                "failures": c.failures,
                "failure_rate": c.failure_rate(),
                "rate_limited_events": c.rate_limited,
                "is_currently_rate_limited": limited,
                "rate_limit_config": rate_limit_config(s),
                "consecutive_failures": s.health.consecutive_failures(),
                "ejections": s.health.ejections(),
                "ejected_until": ejected_until,
            }),
        );
    }
    let count = state.dispatcher.services.len();
    let overall = if healthy == count {
        "healthy"
    } else if healthy == 0 {
        "unhealthy"
    } else {
        "degraded"
    };
    let (replicas, backend) = match &state.dispatcher.shared {
        Some(shared) => (
            shared.cluster().replicas,
            json!({
                "type": "redis",
                "status": if shared.is_degraded() { "degraded" } else { "ok" },
                "url": shared.config().display_url(),
                "failure_mode": shared.config().failure_mode.as_str(),
            }),
        ),
        None => (1, json!({ "type": "memory", "status": "ok" })),
    };
    Json(
        json!({ "overall_status": overall, "services": services, "replicas": replicas, "state_backend": backend }),
    )
}

/// `POST /router/reset-stats`.
#[utoipa::path(post, path = "/router/reset-stats", tag = "router", security(("bearer" = [])),
    description = "Zeroes the counters. Needs the admin key when ADMIN_KEY is set.",
    responses((status = 200, description = "Reset", body = schema::Done), (status = 401, description = "Missing or invalid client key", body = schema::ErrorResponse),
        (status = 403, description = "Not the admin key", body = schema::ErrorResponse)))]
pub async fn reset_stats(State(state): State<Arc<AppState>>) -> Json<Value> {
    state.dispatcher.reset_stats();
    tracing::info!("router statistics reset");
    Json(json!({ "status": "ok", "message": "Router statistics reset" }))
}

async fn rate_limiting(state: &AppState) -> Value {
    let now = Instant::now();
    let mut out = Map::new();
    for s in &state.dispatcher.services {
        let cooldown = s.cooldown.remaining(now);
        let entry = match &s.limiter {
            Some(limiter) => {
                let w = limiter.state(now).await;
                json!({
                    "rate_limit": format!("{}/{}s", w.limit, seconds_text(w.window)),
                    "current_requests": w.current,
                    "remaining_quota": w.remaining(),
                    "is_rate_limited": w.is_full() || cooldown.is_some(),
                    "window_reset_in": round2(w.reset_in),
                    "cooldown_remaining": cooldown.map(round2),
                })
            }
            None => json!({
                "rate_limit": "unlimited",
                "current_requests": null,
                "remaining_quota": null,
                "is_rate_limited": cooldown.is_some(),
                "window_reset_in": 0,
                "cooldown_remaining": cooldown.map(round2),
            }),
        };
        out.insert(s.name().to_owned(), entry);
    }
    Value::Object(out)
}

fn rate_limit_config(s: &Service) -> Value {
    match s.config.rate_limit {
        Some(rl) => {
            json!({ "max_requests": rl.requests.get(), "window_seconds": seconds_number(rl.window) })
        }
        None => Value::Null,
    }
}

/// Whole seconds as an integer, fractional ones as a float.
fn seconds_number(d: Duration) -> Value {
    if d.subsec_nanos() == 0 {
        json!(d.as_secs())
    } else {
        json!(d.as_secs_f64())
    }
}

fn seconds_text(d: Duration) -> String {
    seconds_number(d).to_string()
}

fn round2(d: Duration) -> f64 {
    (d.as_secs_f64() * 100.0).round() / 100.0
}
