//! Request bodies a handler will not use. hyper closes a keep-alive connection
//! whose request body was left unread, and a client that already reused it sees
//! its next request fail; answers that ignore the body drain it here first.

use std::time::Duration;

use axum::body::Body;
use axum::extract::Request;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use http::{HeaderValue, header};

use crate::error::Error;

/// Most an answer reads of a body it does not use.
const DISCARD_LIMIT: usize = 64 * 1024;
/// Longest it waits for that body.
const DISCARD_TIMEOUT: Duration = Duration::from_secs(1);

/// Reads and drops `body`. `false`: too large or too slow to drain.
pub async fn discard_body(body: Body) -> bool {
    let drain = axum::body::to_bytes(body, DISCARD_LIMIT);
    matches!(
        tokio::time::timeout(DISCARD_TIMEOUT, drain).await,
        Ok(Ok(_))
    )
}

/// Tells the client this connection ends with the response (its request body
/// was not read to the end).
pub fn close_connection(response: &mut Response) {
    response
        .headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
}

/// Layer for endpoints that take no body: drain it before the handler runs.
pub async fn discard_unused_body(request: Request, next: Next) -> Response {
    let (parts, body) = request.into_parts();
    let drained = discard_body(body).await;
    let mut response = next.run(Request::from_parts(parts, Body::empty())).await;
    if !drained {
        close_connection(&mut response);
    }
    response
}

/// A rejection sent before the request body was used: drain it first.
pub async fn reject(request: Request, error: Error) -> Response {
    let drained = discard_body(request.into_body()).await;
    let mut response = error.into_response();
    if !drained {
        close_connection(&mut response);
    }
    response
}
