//! The access layer, outermost: the request id and the request's span, then one
//! log line and one set of metric updates per request, written after the response
//! head from what the handlers left in the response extensions (service, model,
//! attempts, error label).
//!
//! Request id and access log share one layer: each `from_fn` layer costs a boxed
//! future and a service clone per request (docs/benchmarks.md, profile).

use std::sync::{Arc, LazyLock};
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use prometheus_client::metrics::gauge::Gauge;
use tracing::Instrument;

use crate::api::AppState;
use crate::api::openai::RouteInfo;
use crate::error::ErrorLabel;
use crate::metrics::{Label, ReasonLabels, RequestLabels, RouteServiceLabels, status_class};
use crate::request_id;

static NONE: LazyLock<Label> = LazyLock::new(|| Label::from("none"));
static OTHER: LazyLock<Label> = LazyLock::new(|| Label::from("other"));

/// Every route the router serves (the OpenAPI test checks the document covers
/// them). Route labels come from this table, so a scan of random paths cannot
/// grow the label set.
pub const ROUTES: &[&str] = &[
    "/v1/chat/completions",
    "/v1/completions",
    "/v1/embeddings",
    "/v1/models",
    "/v1/models/{*model_id}",
    "/",
    "/health",
    "/ready",
    "/metrics",
    "/backend/info",
    "/router/stats",
    "/router/health",
    "/router/rate-limits",
    "/router/reset-stats",
    "/auth/status",
    "/auth/metrics",
    "/auth/reload-keys",
    "/auth/reset-metrics",
    "/openapi.json",
    "/docs",
    "/docs/swagger-ui.css",
    "/docs/swagger-ui-bundle.js",
    "/redoc",
    "/redoc/redoc.standalone.js",
];

fn route_label(matched: Option<&MatchedPath>) -> &'static str {
    matched
        .and_then(|m| ROUTES.iter().find(|r| **r == m.as_str()).copied())
        .unwrap_or("unmatched")
}

/// Decrements the in-flight gauge however the request ends (even by panic).
struct InFlight(Gauge);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.dec();
    }
}

pub async fn layer(
    State(state): State<Arc<AppState>>,
    mut request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id = request_id::assign(&mut request);
    let span = tracing::info_span!("request", request_id = id.to_str().unwrap_or("-"));
    let mut response = access(&state, started, request, next)
        .instrument(span)
        .await;
    response.headers_mut().insert(request_id::HEADER, id);
    response
}

async fn access(state: &AppState, started: Instant, request: Request, next: Next) -> Response {
    let metrics = &state.dispatcher.metrics;
    metrics.in_flight.inc();
    let _in_flight = InFlight(metrics.in_flight.clone());
    let method = request.method().clone();
    // A cheap clone (shared bytes); only its path is logged: a query string may carry a key.
    let uri = request.uri().clone();
    let route = route_label(request.extensions().get::<MatchedPath>());

    let response = next.run(request).await;

    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    let info = response.extensions().get::<RouteInfo>();
    let service = info
        .and_then(|i| i.service.clone())
        .unwrap_or_else(|| NONE.clone());
    let model = match info {
        Some(i) => i.model.clone().unwrap_or_else(|| OTHER.clone()),
        None => NONE.clone(),
    };
    let error = response.extensions().get::<ErrorLabel>().map(|e| e.0);
    if let Some(reason) = error.filter(|e| ErrorLabel::is_auth(e)) {
        metrics
            .auth_failures
            .get_or_create(&ReasonLabels { reason })
            .inc();
    }
    tracing::info!(
        %method,
        path = uri.path(),
        status,
        service = &*service,
        model = &*model,
        attempts = info.map_or(0, |i| i.attempts),
        latency_ms = elapsed.as_secs_f64() * 1000.0,
        error = error.unwrap_or("-"),
        "request"
    );
    metrics
        .request_duration
        .get_or_create(&RouteServiceLabels {
            route,
            service: Arc::clone(&service),
        })
        .observe(elapsed.as_secs_f64());
    metrics
        .requests
        .get_or_create(&RequestLabels {
            route,
            service,
            model,
            status_class: status_class(status),
        })
        .inc();
    response
}
