//! The OpenAI-compatible endpoints: routed POSTs and the model listing.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use serde_json::{Value, json};

use super::extract::{PeekedBody, read_body};
use super::{AppState, schema};
use crate::auth::{self, Check};
use crate::error::Error;
use crate::metrics::{Label, Metrics, StreamGuard};
use crate::request_id::RequestId;
use crate::routing::{Endpoint, Routed, RoutedRequest, Service};
use crate::stats::bump;
use crate::upstream::{PassHeaders, Reply, sse};

/// `HeaderName`s, not `&str`s: a string name is parsed again at every insert.
pub const SERVICE_HEADER: HeaderName = HeaderName::from_static("x-llm-router-service");
pub const ATTEMPTS_HEADER: HeaderName = HeaderName::from_static("x-llm-router-attempts");
const ACCEL_BUFFERING: HeaderName = HeaderName::from_static("x-accel-buffering");

/// What the access layer logs and counts about a routed request (a response extension).
#[derive(Clone, Debug)]
pub struct RouteInfo {
    pub service: Option<Label>,
    /// A discovered model id, or `None` (labelled `other`).
    pub model: Option<Label>,
    pub attempts: u32,
}

#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai", request_body = schema::ChatCompletionRequest,
    description = "Routed to the first eligible service; fails over before the first byte.",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The upstream's answer, unchanged (JSON; with `stream: true`, server-sent events)",
            headers(("x-llm-router-service" = String, description = "The service that answered"),
                    ("x-llm-router-attempts" = u32, description = "Upstream calls made")),
            content((schema::UpstreamAnswer = "application/json"), (String = "text/event-stream"))),
        schema::RoutedErrors,
    ))]
pub async fn chat_completions(
    State(state): State<Arc<AppState>>,
    request_id: Option<Extension<RequestId>>,
    request: Request,
) -> Response {
    routed(&state, Endpoint::ChatCompletions, request_id, request).await
}

#[utoipa::path(post, path = "/v1/completions", tag = "openai", request_body = schema::CompletionRequest,
    description = "Legacy completions, routed like chat.",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The upstream's answer, unchanged (JSON; with `stream: true`, server-sent events)",
            headers(("x-llm-router-service" = String, description = "The service that answered"),
                    ("x-llm-router-attempts" = u32, description = "Upstream calls made")),
            content((schema::UpstreamAnswer = "application/json"), (String = "text/event-stream"))),
        schema::RoutedErrors,
    ))]
pub async fn completions(
    State(state): State<Arc<AppState>>,
    request_id: Option<Extension<RequestId>>,
    request: Request,
) -> Response {
    routed(&state, Endpoint::Completions, request_id, request).await
}

#[utoipa::path(post, path = "/v1/embeddings", tag = "openai", request_body = schema::EmbeddingRequest,
    description = "Embeddings, routed like chat.",
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The upstream's answer, unchanged (JSON; with `stream: true`, server-sent events)",
            headers(("x-llm-router-service" = String, description = "The service that answered"),
                    ("x-llm-router-attempts" = u32, description = "Upstream calls made")),
            content((schema::UpstreamAnswer = "application/json"), (String = "text/event-stream"))),
        schema::RoutedErrors,
    ))]
pub async fn embeddings(
    State(state): State<Arc<AppState>>,
    request_id: Option<Extension<RequestId>>,
    request: Request,
) -> Response {
    routed(&state, Endpoint::Embeddings, request_id, request).await
}

/// What [`serve_routed`] returns: the routed handler's future, boxed as axum
/// boxes a handler's.
pub type RoutedFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// A routed POST served without axum's router (server.rs, `Routes`): the same
/// handler as the `/v1/...` routes, with the request id the access layer set.
pub fn serve_routed(state: Arc<AppState>, endpoint: Endpoint, request: Request) -> RoutedFuture {
    let request_id = request
        .extensions()
        .get::<RequestId>()
        .cloned()
        .map(Extension);
    Box::pin(async move { Ok(routed(&state, endpoint, request_id, request).await) })
}

/// A routed call: the client's key (and its limit), then the body within the
/// size limit, then the dispatcher.
async fn routed(
    state: &AppState,
    endpoint: Endpoint,
    request_id: Option<Extension<RequestId>>,
    request: Request,
) -> Response {
    auth::check_client_key(
        &state.auth,
        request,
        Check::KeyWithinLimit,
        |request| async move {
            match read_body(request, state.config.max_request_body_bytes).await {
                Ok(body) => proxy(state, endpoint, request_id, body).await,
                Err(e) => e.into_response(),
            }
        },
    )
    .await
}

async fn proxy(
    state: &AppState,
    endpoint: Endpoint,
    request_id: Option<Extension<RequestId>>,
    body: Bytes,
) -> Response {
    let peeked = match PeekedBody::parse(body, endpoint) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    let request_id = request_id.map(|Extension(RequestId(id))| id);
    let outcome = state
        .dispatcher
        .dispatch(RoutedRequest {
            endpoint,
            body: peeked.body,
            model: &peeked.model,
            model_span: peeked.model_span,
            stream: peeked.stream,
            request_id: request_id.as_ref(),
        })
        .await;
    let model = state.dispatcher.model_label(&peeked.model);
    let (mut response, service) = match outcome.result {
        Ok(routed) => {
            let service = Arc::clone(&routed.service.label);
            (
                respond(
                    routed,
                    outcome.attempts,
                    &state.dispatcher.metrics,
                    request_id,
                ),
                Some(service),
            )
        }
        Err(e) => (e.into_response(), None),
    };
    response.extensions_mut().insert(RouteInfo {
        service,
        model,
        attempts: outcome.attempts,
    });
    response
}

fn respond(
    routed: Routed,
    attempts: u32,
    metrics: &Metrics,
    request_id: Option<HeaderValue>,
) -> Response {
    let Routed {
        service,
        reply,
        in_flight,
    } = routed;
    let mut response = match reply {
        Reply::Complete(c) => {
            let mut r = (c.status, c.body).into_response();
            pass_headers(r.headers_mut(), c.headers, "application/json");
            r
        }
        Reply::Streaming(s) => {
            let failed = Arc::clone(&service);
            // Held by the relay: the open-streams gauge counts this stream until it ends.
            let guard = (StreamGuard::new(metrics), in_flight);
            let on_failure = move |failure: &sse::MidStreamFailure| {
                let _open = guard;
                bump(&failed.stats.failures);
                failed.metrics.stream_failures.inc();
                tracing::warn!(
                    service = failed.name(),
                    request_id = request_id
                        .as_ref()
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("-"),
                    ?failure,
                    "stream failed after its first event; ended with an error event"
                );
            };
            let body = sse::relay(
                s.head,
                s.ready,
                s.framer,
                s.rest,
                s.idle_timeout,
                on_failure,
            );
            let mut r = (s.status, Body::from_stream(body)).into_response();
            let headers = r.headers_mut();
            pass_headers(headers, s.headers, "text/event-stream");
            headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            // Tells nginx (and ingresses built on it) not to buffer the stream.
            headers.insert(ACCEL_BUFFERING, HeaderValue::from_static("no"));
            r
        }
    };
    let headers = response.headers_mut();
    headers.insert(SERVICE_HEADER, service.name_header().clone());
    headers.insert(ATTEMPTS_HEADER, attempts_header(attempts));
    response
}

/// Almost every request takes one to a few attempts: those values are static.
fn attempts_header(attempts: u32) -> HeaderValue {
    const SMALL: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];
    match SMALL.get(attempts as usize) {
        Some(s) => HeaderValue::from_static(s),
        None => HeaderValue::from(attempts),
    }
}

fn pass_headers(headers: &mut HeaderMap, pass: PassHeaders, default_type: &'static str) {
    headers.insert(
        header::CONTENT_TYPE,
        pass.content_type
            .unwrap_or_else(|| HeaderValue::from_static(default_type)),
    );
    if let Some(encoding) = pass.content_encoding {
        headers.insert(header::CONTENT_ENCODING, encoding);
    }
}

/// `GET /v1/models`: the union of every service's discovered models, first
/// service in routing order winning for a model several serve.
#[utoipa::path(get, path = "/v1/models", tag = "openai", security(("bearer" = [])),
    responses((status = 200, description = "The union of every service's discovered models", body = schema::ModelList), (status = 401, description = "Missing or invalid client key", body = schema::ErrorResponse)))]
pub async fn list_models(State(state): State<Arc<AppState>>) -> Response {
    let mut seen = std::collections::HashSet::new();
    let mut data = Vec::new();
    for service in &state.dispatcher.services {
        if let Some(catalog) = &*service.models.load() {
            for m in &catalog.models {
                if seen.insert(m.id.as_str().to_owned()) {
                    data.push(model_json(service, m));
                }
            }
        }
    }
    axum::Json(json!({ "object": "list", "data": data })).into_response()
}

/// `GET /v1/models/{id}`; ids may contain `/`.
#[utoipa::path(get, path = "/v1/models/{model_id}", tag = "openai", security(("bearer" = [])),
    params(("model_id" = String, Path, description = "A model id; may contain `/` (send it as %2F)")),
    responses((status = 200, description = "The model", body = schema::Model),
        (status = 401, description = "Missing or invalid client key", body = schema::ErrorResponse),
        (status = 404, description = "No service lists it", body = schema::ErrorResponse)))]
pub async fn get_model(
    State(state): State<Arc<AppState>>,
    Path(id): Path<String>,
) -> Result<Response, Error> {
    for service in &state.dispatcher.services {
        if let Some(catalog) = &*service.models.load()
            && let Some(m) = catalog.models.iter().find(|m| m.id == id)
        {
            return Ok(axum::Json(model_json(service, m)).into_response());
        }
    }
    Err(Error::ModelNotFound(id))
}

fn model_json(service: &Service, m: &crate::routing::models::ModelInfo) -> Value {
    json!({
        "id": m.id,
        "object": "model",
        "created": m.created,
        "owned_by": m.owned_by,
        "service": service.name(),
        "backend_type": service.config.backend_type.as_str(),
    })
}
