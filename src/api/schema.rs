//! Types that describe the HTTP API in the OpenAPI document. The router
//! forwards bodies unchanged, so these name the fields it reads or writes and
//! leave every object open (`additionalProperties` allowed). Schemathesis
//! checks in CI that real responses conform to them, so they cannot drift.
#![allow(dead_code)] // described, never constructed

use std::collections::BTreeMap;

use serde_json::Value;
use utoipa::ToSchema;

/// `{"error": {...}}`: every error the router produces.
#[derive(ToSchema)]
pub struct ErrorResponse {
    pub error: ErrorObject,
}

#[derive(ToSchema)]
pub struct ErrorObject {
    pub message: String,
    #[schema(rename = "type")]
    pub r#type: String,
    pub code: Option<String>,
    pub param: Option<String>,
}

/// A chat completion request. Every other OpenAI field (tools, response_format,
/// stream_options, vendor extensions...) is forwarded unchanged.
#[derive(ToSchema)]
pub struct ChatCompletionRequest {
    /// A model id, or `a|b|c`: each service gets the first alternative it serves.
    #[schema(example = "gpt-4o-mini", min_length = 1, pattern = r"[^|\s]")]
    pub model: String,
    pub messages: Vec<Value>,
    /// `true`: the answer is a `text/event-stream` of chunks ending with `data: [DONE]`.
    pub stream: Option<bool>,
}

/// A legacy completion request, forwarded unchanged.
#[derive(ToSchema)]
pub struct CompletionRequest {
    #[schema(
        example = "gpt-3.5-turbo-instruct",
        min_length = 1,
        pattern = r"[^|\s]"
    )]
    pub model: String,
    pub prompt: Option<Value>,
    pub stream: Option<bool>,
}

/// An embeddings request, forwarded unchanged.
#[derive(ToSchema)]
pub struct EmbeddingRequest {
    #[schema(
        example = "text-embedding-3-small",
        min_length = 1,
        pattern = r"[^|\s]"
    )]
    pub model: String,
    pub input: Value,
}

/// The upstream's answer, returned unchanged (an OpenAI completion object).
#[derive(ToSchema)]
pub struct UpstreamAnswer {
    pub object: Option<String>,
}

/// One model of `/v1/models`.
#[derive(ToSchema)]
pub struct Model {
    pub id: String,
    pub object: String,
    pub created: i64,
    pub owned_by: String,
    /// The service the model was discovered on.
    pub service: String,
    pub backend_type: String,
}

#[derive(ToSchema)]
pub struct ModelList {
    pub object: String,
    pub data: Vec<Model>,
}

#[derive(ToSchema)]
pub struct Status {
    pub status: String,
}

#[derive(ToSchema)]
pub struct ServiceSummary {
    pub name: String,
    #[schema(rename = "type")]
    pub r#type: String,
    pub priority: i64,
}

/// `GET /`.
#[derive(ToSchema)]
pub struct RootInfo {
    pub message: String,
    pub version: String,
    pub docs: String,
    /// `single_service` or `router`.
    pub mode: String,
    pub services: Vec<ServiceSummary>,
}

/// `GET /backend/info`.
#[derive(ToSchema)]
pub struct BackendInfo {
    pub mode: String,
    pub version: String,
    pub configured_services: u64,
    pub services: Vec<Value>,
}

#[derive(ToSchema)]
pub struct ServiceCounters {
    pub requests: u64,
    pub failures: u64,
    pub rate_limited: u64,
    pub failure_rate: f64,
    pub ejection_skips: u64,
    pub in_flight: u64,
    pub latency_ewma_ms: f64,
}

/// Window state of one service.
#[derive(ToSchema)]
pub struct WindowState {
    /// `"100/60s"` or `"unlimited"`.
    pub rate_limit: String,
    pub current_requests: Option<u64>,
    pub remaining_quota: Option<u64>,
    pub is_rate_limited: bool,
    pub window_reset_in: f64,
    pub cooldown_remaining: Option<f64>,
}

/// `GET /router/stats`.
#[derive(ToSchema)]
pub struct RouterStats {
    pub total_requests: u64,
    pub total_failovers: u64,
    pub total_rate_limit_skips: u64,
    pub total_ejection_skips: u64,
    /// Percentages, 0-100 per request (a request may fail over more than once).
    pub failover_rate: f64,
    pub rate_limit_skip_rate: f64,
    pub failure_rate: f64,
    pub load_balancing: String,
    pub configured_services: u64,
    pub service_order: Vec<String>,
    pub service_stats: BTreeMap<String, ServiceCounters>,
    pub rate_limiting: BTreeMap<String, WindowState>,
}

/// `GET /router/rate-limits`.
#[derive(ToSchema)]
pub struct RateLimits {
    pub rate_limiting: BTreeMap<String, WindowState>,
    pub total_rate_limit_skips: u64,
    pub rate_limit_skip_rate: f64,
}

#[derive(ToSchema)]
pub struct ServiceHealth {
    /// `healthy`, `degraded` or `unhealthy`.
    pub status: String,
    pub backend_type: String,
    pub base_url: String,
    pub has_api_key: bool,
    pub requests: u64,
    pub failures: u64,
    pub failure_rate: f64,
    pub rate_limited_events: u64,
    pub is_currently_rate_limited: bool,
    pub rate_limit_config: Option<Value>,
    pub consecutive_failures: u64,
    pub ejections: u64,
    /// RFC 3339, or null when not ejected.
    pub ejected_until: Option<String>,
}

/// `GET /router/health`.
#[derive(ToSchema)]
pub struct RouterHealth {
    pub overall_status: String,
    pub services: BTreeMap<String, ServiceHealth>,
}

/// Result of a mutating admin call.
#[derive(ToSchema)]
pub struct Done {
    pub status: String,
    pub message: String,
}

/// `POST /auth/reload-keys`.
#[derive(ToSchema)]
pub struct Reloaded {
    pub status: String,
    pub message: String,
    pub valid_keys_count: u64,
}

/// `GET /auth/status`.
#[derive(ToSchema)]
pub struct AuthStatus {
    pub enabled: bool,
    pub auth_header: String,
    pub valid_keys_count: u64,
    pub admin_key_configured: bool,
    pub key_rate_limit: Option<String>,
}

#[derive(ToSchema)]
pub struct KeyMetrics {
    pub requests_count: u64,
    pub success_count: u64,
    pub error_count: u64,
    pub first_request: Option<String>,
    pub last_request: Option<String>,
    pub success_rate: f64,
}

/// `GET /auth/metrics`: counters keyed by the masked key (`abcd...wxyz`).
#[derive(ToSchema)]
pub struct AuthMetrics {
    pub enabled: bool,
    pub valid_keys_count: u64,
    pub total_requests: u64,
    pub total_success: u64,
    pub total_errors: u64,
    pub success_rate: f64,
    pub active_keys: u64,
    pub keys_metrics: BTreeMap<String, KeyMetrics>,
}

/// The error answers every routed endpoint may give (shared by their
/// `#[utoipa::path]` annotations).
#[derive(utoipa::IntoResponses)]
pub enum RoutedErrors {
    /// Malformed JSON, missing model or messages; or the upstream's own 400, unchanged
    #[response(status = 400)]
    BadRequest(ErrorResponse),
    /// Missing or invalid client key
    #[response(status = 401)]
    Unauthorized(ErrorResponse),
    /// No service serves the model (model_not_found)
    #[response(status = 404)]
    ModelNotFound(ErrorResponse),
    /// Body over MAX_REQUEST_BODY_BYTES
    #[response(status = 413)]
    TooLarge(ErrorResponse),
    /// Every eligible service is rate limited, or this key's own limit is used up
    #[response(status = 429, headers(("Retry-After" = u64, description = "Seconds until the first slot frees")))]
    RateLimited(ErrorResponse),
    /// Every attempted service was unreachable
    #[response(status = 502)]
    Unreachable(ErrorResponse),
    /// Every attempted service failed
    #[response(status = 503)]
    Unavailable(ErrorResponse),
    /// Every attempted service timed out
    #[response(status = 504)]
    TimedOut(ErrorResponse),
    /// Another upstream client error (such as 422), passed through unchanged
    #[response(status = "default")]
    PassedThrough(UpstreamAnswer),
}
