//! Client authentication: the key set (swapped whole on reload), constant-time
//! key checks, the admin role, per-key limits and per-key counters.
//!
//! The middleware here is attached to client routes in `server.rs` and nowhere
//! else. Keys never leave this module unmasked: counters are keyed by the masked
//! form, errors never repeat a presented key, and nothing here logs one.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::Response;
use http::{HeaderMap, HeaderName, StatusCode};
use serde_json::{Map, Value, json};
use subtle::ConstantTimeEq;
use tokio::time::Instant;

use crate::body::reject;
use crate::config::{self, AuthConfig, EnvMap, Overrides, RateLimit, Secret};
use crate::error::Error;
use crate::ratelimit::{Admission, RateLimiter};
use crate::shared::RedisBackend;
use crate::stats::percent;

/// Where a reload reads the environment from (the process environment over the
/// working directory's `.env` in production; a fixed map in tests).
pub type EnvSource = Arc<dyn Fn() -> Result<EnvMap, String> + Send + Sync>;

/// Counters and limiter of one key; survives reloads that keep the key.
#[derive(Debug, Default)]
pub struct KeyState {
    requests: AtomicU64,
    success: AtomicU64,
    errors: AtomicU64,
    /// Unix milliseconds; 0 = never.
    first_ms: AtomicU64,
    last_ms: AtomicU64,
    limiter: Option<RateLimiter>,
}

impl KeyState {
    fn new(key: &Secret, limit: Option<RateLimit>, shared: Option<&Arc<RedisBackend>>) -> Self {
        Self {
            limiter: limit.map(|limit| RateLimiter::for_client_key(key, limit, shared)),
            ..Self::default()
        }
    }

    fn record(&self, status: StatusCode) {
        let now = u64::try_from(
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_millis(),
        )
        .unwrap_or(u64::MAX);
        self.requests.fetch_add(1, Relaxed);
        if status.is_client_error() || status.is_server_error() {
            self.errors.fetch_add(1, Relaxed);
        } else {
            self.success.fetch_add(1, Relaxed);
        }
        let _ = self.first_ms.compare_exchange(0, now, Relaxed, Relaxed);
        self.last_ms.store(now, Relaxed);
    }

    fn reset(&self) {
        for c in [
            &self.requests,
            &self.success,
            &self.errors,
            &self.first_ms,
            &self.last_ms,
        ] {
            c.store(0, Relaxed);
        }
    }
}

struct ClientKey {
    secret: Secret,
    /// The masked key, made unique within the set; the metrics key.
    label: String,
    state: Arc<KeyState>,
}

/// The accepted keys at one moment; replaced whole by a reload.
struct KeySet {
    keys: Vec<ClientKey>,
    admin: Option<ClientKey>,
}

impl KeySet {
    fn build(
        cfg: &AuthConfig,
        limit: Option<RateLimit>,
        shared: Option<&Arc<RedisBackend>>,
        previous: Option<&KeySet>,
    ) -> Self {
        let mut old: HashMap<&str, &Arc<KeyState>> = HashMap::new();
        if let Some(prev) = previous {
            for k in prev.keys.iter().chain(prev.admin.as_ref()) {
                old.insert(k.secret.expose(), &k.state);
            }
        }
        let mut labels: HashMap<String, usize> = HashMap::new();
        let mut make = |secret: &Secret, prefix: &str| {
            let base = format!("{prefix}{}", secret.masked());
            let n = labels.entry(base.clone()).or_insert(0);
            *n += 1;
            let label = if *n == 1 { base } else { format!("{base}#{n}") };
            let state = old.get(secret.expose()).map_or_else(
                || Arc::new(KeyState::new(secret, limit, shared)),
                |s| Arc::clone(s),
            );
            ClientKey {
                secret: secret.clone(),
                label,
                state,
            }
        };
        let keys = cfg.keys.iter().map(|k| make(k, "")).collect();
        let admin = cfg.admin_key.as_ref().map(|k| make(k, "admin:"));
        Self { keys, admin }
    }

    fn is_empty(&self) -> bool {
        self.keys.is_empty() && self.admin.is_none()
    }

    /// Constant time in the key values: every key is compared, no early exit.
    fn find(&self, candidate: &[u8]) -> Option<(&ClientKey, bool)> {
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.secret.expose().as_bytes().ct_eq(candidate)) && found.is_none() {
                found = Some((key, false));
            }
        }
        if let Some(admin) = &self.admin
            && bool::from(admin.secret.expose().as_bytes().ct_eq(candidate))
        {
            found = Some((admin, true));
        }
        found
    }
}

/// Who a request authenticated as; put in the request extensions.
#[derive(Clone)]
pub struct Identity {
    state: Arc<KeyState>,
    is_admin: bool,
}

/// The authentication state of a running router.
pub struct Auth {
    /// `ENABLE_AUTH`. Keys are checked when this is on and the current set has
    /// at least one key (the Python router's auth was optional without keys).
    enabled: bool,
    header: HeaderName,
    key_limit: Option<RateLimit>,
    /// Swapped whole by a reload; requests in flight keep the set they loaded.
    set: ArcSwap<KeySet>,
    /// Where keys' limits live when several replicas share Redis (SPEC 8).
    shared: Option<Arc<RedisBackend>>,
    env_source: EnvSource,
    config_file: Option<PathBuf>,
}

impl Auth {
    pub fn new(
        cfg: &AuthConfig,
        config_file: Option<PathBuf>,
        env_source: EnvSource,
        shared: Option<Arc<RedisBackend>>,
    ) -> Self {
        let set = KeySet::build(cfg, cfg.key_rate_limit, shared.as_ref(), None);
        Self {
            enabled: cfg.enabled,
            header: cfg.header_name.clone(),
            key_limit: cfg.key_rate_limit,
            set: ArcSwap::from_pointee(set),
            shared,
            env_source,
            config_file,
        }
    }

    /// Whether client keys are checked now (a reload that adds the first key turns it on).
    pub fn enforced(&self) -> bool {
        self.enabled && !self.set.load().is_empty()
    }

    pub fn has_admin(&self) -> bool {
        self.set.load().admin.is_some()
    }

    pub fn valid_keys_count(&self) -> usize {
        self.set.load().keys.len()
    }

    /// The identity behind the request's key, or why there is none.
    fn identify(&self, headers: &HeaderMap) -> Result<Identity, Error> {
        let missing = || Error::MissingApiKey {
            header: header_display(&self.header),
        };
        let raw = headers.get(&self.header).ok_or_else(missing)?.as_bytes();
        let candidate = strip_bearer(raw);
        if candidate.is_empty() {
            return Err(missing());
        }
        let set = self.set.load();
        let (key, is_admin) = set.find(candidate).ok_or(Error::InvalidApiKey)?;
        Ok(Identity {
            state: Arc::clone(&key.state),
            is_admin,
        })
    }

    /// Re-reads `.env`, the keys file and the config file (the process environment
    /// still wins) and swaps the key set in one step; returns the new key count.
    pub fn reload(&self) -> Result<usize, Error> {
        let env = (self.env_source)().map_err(Error::ReloadRefused)?;
        let overrides = Overrides {
            config_file: self.config_file.clone(),
            ..Overrides::default()
        };
        let cfg =
            config::load(&overrides, &env).map_err(|e| Error::ReloadRefused(e.to_string()))?;
        let auth = cfg.auth;
        if self.enforced() && auth.keys.is_empty() && auth.admin_key.is_none() {
            return Err(Error::ReloadRefused(
                "the new configuration has no client key while authentication is enabled; keeping the current keys".to_owned(),
            ));
        }
        let current = self.set.load();
        let next = KeySet::build(&auth, self.key_limit, self.shared.as_ref(), Some(&current));
        let count = next.keys.len();
        self.set.store(Arc::new(next));
        tracing::info!(
            valid_keys = count,
            admin_key = auth.admin_key.is_some(),
            "client keys reloaded"
        );
        Ok(count)
    }

    /// [`Auth::reload`] on tokio's blocking pool: it reads files (`.env`, the keys
    /// file, the config file, a Redis CA), and with one worker thread a slow read
    /// (a network file system) would stall every request meanwhile. The caller's
    /// span goes along, so its log line keeps the request id.
    pub async fn reload_off_runtime(self: &Arc<Self>) -> Result<usize, Error> {
        let (auth, span) = (Arc::clone(self), tracing::Span::current());
        tokio::task::spawn_blocking(move || span.in_scope(|| auth.reload()))
            .await
            .map_err(|e| Error::Internal(format!("the key reload did not finish: {e}")))?
    }

    pub fn reset_metrics(&self) {
        let set = self.set.load();
        for k in set.keys.iter().chain(set.admin.as_ref()) {
            k.state.reset();
        }
    }

    pub fn status_json(&self) -> Value {
        json!({
            "enabled": self.enforced(),
            "auth_header": header_display(&self.header),
            "valid_keys_count": self.valid_keys_count(),
            "admin_key_configured": self.has_admin(),
            "key_rate_limit": self.key_limit.map(|r| format!("{}/{}s", r.requests, r.window.as_secs_f64())),
        })
    }

    pub fn metrics_json(&self) -> Value {
        let set = self.set.load();
        let mut per_key = Map::new();
        let (mut total, mut success, mut errors, mut active) = (0, 0, 0, 0);
        for k in set.keys.iter().chain(set.admin.as_ref()) {
            let s = &k.state;
            let (r, ok, err) = (
                s.requests.load(Relaxed),
                s.success.load(Relaxed),
                s.errors.load(Relaxed),
            );
            total += r;
            success += ok;
            errors += err;
            active += usize::from(r > 0);
            per_key.insert(
                k.label.clone(),
                json!({
                    "requests_count": r,
                    "success_count": ok,
                    "error_count": err,
                    "first_request": timestamp(s.first_ms.load(Relaxed)),
                    "last_request": timestamp(s.last_ms.load(Relaxed)),
                    "success_rate": percent(ok, r),
                }),
            );
        }
        json!({
            "enabled": self.enforced(),
            "valid_keys_count": set.keys.len(),
            "total_requests": total,
            "total_success": success,
            "total_errors": errors,
            "success_rate": percent(success, total),
            "active_keys": active,
            "keys_metrics": per_key,
        })
    }
}

/// `Bearer KEY` (any case) or a bare `KEY`, trimmed.
fn strip_bearer(raw: &[u8]) -> &[u8] {
    let trimmed = raw.trim_ascii();
    if trimmed.eq_ignore_ascii_case(b"bearer") {
        return b"";
    }
    match trimmed.get(..7) {
        Some(prefix) if prefix.eq_ignore_ascii_case(b"bearer ") => trimmed[7..].trim_ascii(),
        _ => trimmed,
    }
}

/// `Authorization`, not `authorization`, as the Python router reported it.
pub fn header_display(h: &HeaderName) -> String {
    h.as_str()
        .split('-')
        .map(|part| {
            let mut c = part.chars();
            c.next().map_or_else(String::new, |f| {
                f.to_ascii_uppercase().to_string() + c.as_str()
            })
        })
        .collect::<Vec<_>>()
        .join("-")
}

fn timestamp(ms: u64) -> Value {
    if ms == 0 {
        return Value::Null;
    }
    json!(humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string())
}

/// Client routes without a cost: a valid key or a 401. Counts the outcome per key.
pub async fn require_client_key(
    State(auth): State<Arc<Auth>>,
    request: Request,
    next: Next,
) -> Response {
    check_client_key(&auth, request, Check::Key, |request| next.run(request)).await
}

/// What [`check_client_key`] asks of a request beyond a valid key.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Check {
    /// A valid key; its identity goes into the request extensions (`require_admin` reads it).
    Key,
    /// Routed endpoints: a valid key, then the key's own requests-per-window
    /// allowance, checked before any upstream is chosen.
    KeyWithinLimit,
}

/// Runs `then` if the request carries a valid key (and, for
/// [`Check::KeyWithinLimit`], the key has room in its window), or answers 401 /
/// 429 itself; counts the outcome per key.
///
/// The routed handlers call this themselves rather than through a `from_fn`
/// route layer: each such layer costs a boxed future and a service clone per
/// request (docs/benchmarks.md, profile).
pub async fn check_client_key<F, Fut>(
    auth: &Auth,
    mut request: Request,
    check: Check,
    then: F,
) -> Response
where
    F: FnOnce(Request) -> Fut,
    Fut: Future<Output = Response>,
{
    if !auth.enforced() {
        return then(request).await;
    }
    let identity = match auth.identify(request.headers()) {
        Ok(identity) => identity,
        Err(e) => {
            tracing::info!(
                reason = e.code().unwrap_or("unknown"),
                "client authentication failed"
            );
            return reject(request, e).await;
        }
    };
    let response = if check == Check::KeyWithinLimit
        && let Some(limiter) = identity.state.limiter.as_ref()
        && let Admission::Full { retry_after } = limiter.admit(Instant::now()).await
    {
        let retry_after_secs = Error::retry_after_secs(retry_after);
        reject(request, Error::KeyRateLimited { retry_after_secs }).await
    } else {
        if check == Check::Key {
            request.extensions_mut().insert(identity.clone());
        }
        then(request).await
    };
    identity.state.record(response.status());
    response
}

/// Mutating admin routes: when an admin key is configured, only it passes,
/// even with client authentication off.
pub async fn require_admin(
    State(auth): State<Arc<Auth>>,
    request: Request,
    next: Next,
) -> Response {
    if auth.has_admin() {
        let is_admin = match request.extensions().get::<Identity>() {
            Some(identity) => identity.is_admin,
            // Authentication is off: the admin key is checked here alone.
            None => match auth.identify(request.headers()) {
                Ok(identity) => identity.is_admin,
                Err(e @ Error::MissingApiKey { .. }) => return reject(request, e).await,
                Err(_) => false,
            },
        };
        if !is_admin {
            tracing::info!("admin endpoint refused to a non-admin key");
            return reject(request, Error::AdminRequired).await;
        }
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_prefix_is_optional_and_case_insensitive() {
        assert_eq!(strip_bearer(b"Bearer sk-1"), b"sk-1");
        assert_eq!(strip_bearer(b"bearer   sk-1 "), b"sk-1");
        assert_eq!(strip_bearer(b"sk-1"), b"sk-1");
        assert_eq!(strip_bearer(b"Bearer "), b"");
    }

    #[test]
    fn header_names_are_shown_in_their_usual_case() {
        assert_eq!(
            header_display(&http::header::AUTHORIZATION),
            "Authorization"
        );
        assert_eq!(
            header_display(&HeaderName::from_static("x-api-key")),
            "X-Api-Key"
        );
    }

    #[test]
    fn equal_masks_get_distinct_labels() {
        let cfg = AuthConfig {
            enabled: true,
            header_name: http::header::AUTHORIZATION,
            keys: vec![
                Secret::new("sk-aaaa-1111111-wxyz"),
                Secret::new("sk-aaaa-2222222-wxyz"),
            ],
            keys_file: None,
            admin_key: None,
            metrics_public: false,
            key_rate_limit: None,
        };
        let set = KeySet::build(&cfg, None, None, None);
        assert_eq!(set.keys[0].label, "sk-a...wxyz");
        assert_eq!(set.keys[1].label, "sk-a...wxyz#2");
        assert!(
            set.find(b"sk-aaaa-2222222-wxyz")
                .is_some_and(|(k, admin)| k.label.ends_with("#2") && !admin)
        );
        assert!(set.find(b"sk-aaaa-3333333-wxyz").is_none());
    }
}
