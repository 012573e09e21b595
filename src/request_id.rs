//! Request ids: taken from the client's `x-request-id` when it is sane, made
//! up otherwise; returned on every response, sent upstream, and attached (as a
//! tracing span) to every log line of the request.

use std::hash::{BuildHasher, RandomState};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;
use tracing::Instrument;

pub const HEADER: &str = "x-request-id";

/// The id of the current request (a request extension).
#[derive(Clone, Debug)]
pub struct RequestId(pub HeaderValue);

/// A random per-process prefix (from std's randomly keyed hasher) and a counter:
/// unique within the process, and across replicas with overwhelming odds,
/// without a random number generator on the request path.
static PREFIX: LazyLock<u64> = LazyLock::new(|| RandomState::new().hash_one(std::process::id()));
static COUNTER: AtomicU64 = AtomicU64::new(0);

fn generate() -> HeaderValue {
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let id = format!("{:016x}{:08x}", *PREFIX, n & 0xffff_ffff);
    HeaderValue::from_str(&id).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// A client id is kept if it is 1..=128 visible ASCII characters (it goes into
/// logs and upstream headers, so nothing else is trusted).
fn acceptable(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
}

/// Outermost layer: assigns the id, runs the request inside its span, and
/// returns the id on the response.
pub async fn layer(mut request: Request, next: Next) -> Response {
    let id = match request.headers().get(HEADER) {
        Some(v) if acceptable(v) => v.clone(),
        _ => generate(),
    };
    let span = tracing::info_span!("request", request_id = id.to_str().unwrap_or("-"));
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).instrument(span).await;
    response.headers_mut().insert(HEADER, id);
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_unique_and_acceptable() {
        let a = generate();
        let b = generate();
        assert_ne!(a, b);
        assert!(acceptable(&a) && a.len() == 24);
    }

    #[test]
    fn odd_client_ids_are_replaced() {
        assert!(acceptable(&HeaderValue::from_static("req-123_abc")));
        assert!(!acceptable(&HeaderValue::from_static("")));
        assert!(!acceptable(&HeaderValue::from_static("has space")));
        assert!(!acceptable(
            &HeaderValue::from_str(&"x".repeat(129)).unwrap()
        ));
    }
}
