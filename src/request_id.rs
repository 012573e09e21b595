//! Request ids: taken from the client's `x-request-id` when it is sane, made
//! up otherwise; returned on every response, sent upstream, and attached (as a
//! tracing span) to every log line of the request.

use std::hash::{BuildHasher, RandomState};
use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};

use axum::extract::Request;
use http::{HeaderName, HeaderValue};

/// A `HeaderName`, not a `&str`: a string name is parsed again at every use.
pub const HEADER: HeaderName = HeaderName::from_static("x-request-id");

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
    // 16 hex digits of prefix, 8 of counter, written in place (no formatter on the
    // request path).
    let digits = (*PREFIX as u128) << 32 | u128::from(n & 0xffff_ffff);
    let mut id = [0u8; 24];
    for (i, byte) in id.iter_mut().enumerate() {
        *byte = b"0123456789abcdef"[(digits >> (4 * (23 - i)) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&id).unwrap_or_else(|_| HeaderValue::from_static("unknown"))
}

/// A client id is kept if it is 1..=128 visible ASCII characters (it goes into
/// logs and upstream headers, so nothing else is trusted).
fn acceptable(v: &HeaderValue) -> bool {
    let b = v.as_bytes();
    !b.is_empty() && b.len() <= 128 && b.iter().all(|c| c.is_ascii_graphic())
}

/// Gives the request its id (kept from the client or made up) as an extension,
/// and returns it for the response header and the request's span. Called by the
/// outermost layer (`access::AccessLayer`).
pub fn assign(request: &mut Request) -> HeaderValue {
    let id = match request.headers().get(&HEADER) {
        Some(v) if acceptable(v) => v.clone(),
        _ => generate(),
    };
    request.extensions_mut().insert(RequestId(id.clone()));
    id
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
        assert_eq!(
            a.as_bytes()[..16],
            *format!("{:016x}", *PREFIX).as_bytes(),
            "the prefix is the process's"
        );
        let counters = [&a, &b].map(|v| {
            u64::from_str_radix(std::str::from_utf8(&v.as_bytes()[16..]).unwrap(), 16).unwrap()
        });
        assert_eq!(counters[1], counters[0] + 1);
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
