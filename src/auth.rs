//! Client authentication. Until the authentication issue lands, the router
//! behaves as with `ENABLE_AUTH=false`; this layer is where keys will be checked,
//! and the only place: it is attached to every client route in `server.rs`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;

use crate::api::AppState;

/// Lets every request through (authentication is not implemented yet).
pub async fn require_client_key(
    State(_state): State<Arc<AppState>>,
    request: Request,
    next: Next,
) -> Response {
    next.run(request).await
}
