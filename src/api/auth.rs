//! The `/auth/*` endpoints, with the Python router's field names.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

use super::AppState;
use crate::error::Error;

/// `GET /auth/status`.
pub async fn status(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(state.auth.status_json())
}

/// `GET /auth/metrics`: per-key counters keyed by the masked key.
pub async fn metrics(State(state): State<Arc<AppState>>) -> Json<Value> {
    Json(state.auth.metrics_json())
}

/// `POST /auth/reload-keys`.
pub async fn reload_keys(State(state): State<Arc<AppState>>) -> Result<Json<Value>, Error> {
    let count = state.auth.reload()?;
    Ok(Json(
        json!({ "status": "ok", "message": "Client keys reloaded", "valid_keys_count": count }),
    ))
}

/// `POST /auth/reset-metrics`.
pub async fn reset_metrics(State(state): State<Arc<AppState>>) -> Json<Value> {
    state.auth.reset_metrics();
    tracing::info!("per-key metrics reset");
    Json(json!({ "status": "ok", "message": "Authentication metrics reset" }))
}
