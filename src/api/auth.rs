//! The `/auth/*` endpoints, with the Python router's field names.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::{AppState, schema};
use crate::error::Error;

/// `GET /auth/status`.
#[utoipa::path(get, path = "/auth/status", tag = "auth", security(("bearer" = [])),
    responses((status = 200, description = "Whether keys are checked, the header, the key count", body = schema::AuthStatus), (status = 401, description = "Missing or invalid client key", body = schema::ErrorResponse)))]
pub async fn status(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(state.auth.status_json())
}

/// `GET /auth/metrics`: per-key counters keyed by the masked key.
#[utoipa::path(get, path = "/auth/metrics", tag = "auth", operation_id = "auth_metrics", security(("bearer" = [])),
    responses((status = 200, description = "Per-key counters, keys masked", body = schema::AuthMetrics), (status = 401, description = "Missing or invalid client key", body = schema::ErrorResponse)))]
pub async fn metrics(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(state.auth.metrics_json())
}

/// `POST /auth/reload-keys`.
#[utoipa::path(post, path = "/auth/reload-keys", tag = "auth", security(("bearer" = [])),
    description = "Re-reads .env, the keys file and the config file. Needs the admin key when ADMIN_KEY is set.",
    responses((status = 200, description = "The new key set is in use", body = schema::Reloaded), (status = 401, description = "Missing or invalid client key", body = schema::ErrorResponse),
        (status = 403, description = "Not the admin key", body = schema::ErrorResponse),
        (status = 409, description = "Refused (no key would be left, or the configuration no longer loads); the old keys stay", body = schema::ErrorResponse)))]
pub async fn reload_keys(State(state): State<Arc<AppState>>) -> Result<Json<Value>, Error> {
    let count = state.auth.reload_off_runtime().await?;
    Ok(Json(
        json!({ "status": "ok", "message": "Client keys reloaded", "valid_keys_count": count }),
    ))
}

/// `POST /auth/reset-metrics`.
#[utoipa::path(post, path = "/auth/reset-metrics", tag = "auth", security(("bearer" = [])),
    description = "Zeroes the per-key counters. Needs the admin key when ADMIN_KEY is set.",
    responses((status = 200, description = "Reset", body = schema::Done), (status = 401, description = "Missing or invalid client key", body = schema::ErrorResponse),
        (status = 403, description = "Not the admin key", body = schema::ErrorResponse)))]
pub async fn reset_metrics(State(state): State<Arc<AppState>>) -> Json<Value> {
    state.auth.reset_metrics();
    tracing::info!("per-key metrics reset");
    Json(json!({ "status": "ok", "message": "Authentication metrics reset" }))
}
