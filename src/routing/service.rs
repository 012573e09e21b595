//! One upstream service at run time: its configuration, precomputed endpoint
//! URLs, rate limiter, cool-down, discovered models and counters.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwapOption;
use http::{HeaderValue, Uri};
use tokio::time::Instant;

use super::health::Health;
use super::models::Catalog;
use crate::config::{HealthConfig, ServiceConfig};
use crate::error::StartupError;
use crate::metrics::{Label, Metrics, ServiceMetrics};
use crate::ratelimit::RateLimiter;
use crate::shared::RedisBackend;
use crate::stats::ServiceStats;
use crate::upstream::ServiceHeaders;

/// The routed endpoints, each a path under the service's `base_url`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Endpoint {
    ChatCompletions,
    Completions,
    Embeddings,
}

impl Endpoint {
    pub fn path(self) -> &'static str {
        match self {
            Endpoint::ChatCompletions => "/chat/completions",
            Endpoint::Completions => "/completions",
            Endpoint::Embeddings => "/embeddings",
        }
    }
}

/// Endpoint URIs, parsed once at start-up instead of on every request.
#[derive(Debug)]
struct Urls {
    chat: Uri,
    completions: Uri,
    embeddings: Uri,
    models: Uri,
}

/// A cool-down deadline learned from an upstream `429` + `Retry-After`.
/// One atomic (nanoseconds after `epoch`), so the request path reads it lock-free.
#[derive(Debug)]
pub struct Cooldown {
    epoch: Instant,
    until_nanos: AtomicU64,
}

impl Cooldown {
    fn new(epoch: Instant) -> Self {
        Self {
            epoch,
            until_nanos: AtomicU64::new(0),
        }
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// Time left, or `None` when the service is not cooling down.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        let until = self.until_nanos.load(Ordering::Relaxed);
        let now = self.nanos(now);
        (until > now).then(|| Duration::from_nanos(until - now))
    }

    /// Cools down until `now + for_`, unless already cooling down for longer.
    pub fn extend(&self, now: Instant, for_: Duration) {
        let until = self
            .nanos(now)
            .saturating_add(u64::try_from(for_.as_nanos()).unwrap_or(u64::MAX));
        self.until_nanos.fetch_max(until, Ordering::Relaxed);
    }
}

/// A configured service and its live state.
#[derive(Debug)]
pub struct Service {
    pub config: ServiceConfig,
    urls: Urls,
    /// `Host` and `Authorization`, built once.
    headers: ServiceHeaders,
    /// The name as the `x-llm-router-service` response header, built once.
    name_header: HeaderValue,
    /// `None` for a service without a limit: it never takes a lock or calls Redis.
    pub limiter: Option<RateLimiter>,
    pub cooldown: Cooldown,
    /// Discovered model list; `None` until a discovery succeeds (then: assumed to
    /// support every model). Swapped whole by the background discovery task.
    pub models: ArcSwapOption<Catalog>,
    pub stats: ServiceStats,
    /// The name as a metrics label, allocated once.
    pub label: Label,
    /// This service's metric series, resolved at start-up.
    pub metrics: ServiceMetrics,
    pub health: Health,
    /// Calls in progress (streams until they end), for `least_busy`.
    in_flight: AtomicU64,
    /// EWMA of time to first byte over successful calls, ms, as f64 bits; and
    /// when it was last updated (ns after `epoch`; 0 = no figure yet).
    latency_bits: AtomicU64,
    latency_at: AtomicU64,
    epoch: Instant,
}

/// Counts a call in flight until dropped (held by the relay for streams).
#[derive(Debug)]
pub struct InFlight(Arc<Service>);

impl InFlight {
    pub fn new(service: &Arc<Service>) -> Self {
        service.in_flight.fetch_add(1, Ordering::Relaxed);
        Self(Arc::clone(service))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// How fast a latency figure decays toward zero without traffic (SPEC 9.2).
const LATENCY_DECAY_SECS: f64 = 10.0;
/// Weight of a new sample in the moving average.
const LATENCY_ALPHA: f64 = 0.3;

impl Service {
    pub fn new(
        config: ServiceConfig,
        health: HealthConfig,
        epoch: Instant,
        shared: Option<&Arc<RedisBackend>>,
        metrics: &Metrics,
    ) -> Result<Self, StartupError> {
        let base = config.base_url_str().to_owned();
        let join = |path: &str| {
            Uri::try_from(format!("{base}{path}")).map_err(|e| {
                StartupError::Client(format!(
                    "service {}: bad URL {base}{path}: {e}",
                    config.name
                ))
            })
        };
        let urls = Urls {
            chat: join(Endpoint::ChatCompletions.path())?,
            completions: join(Endpoint::Completions.path())?,
            embeddings: join(Endpoint::Embeddings.path())?,
            models: join("/models")?,
        };
        let headers = ServiceHeaders::new(&urls.chat, config.api_key.as_ref())
            .map_err(|why| StartupError::Client(format!("service {}: {why}", config.name)))?;
        let config_name = config.name.clone();
        let label = Label::from(config_name.as_str());
        let service_metrics = metrics.for_service(&label);
        Ok(Self {
            limiter: config
                .rate_limit
                .map(|rl| RateLimiter::for_service(&config.name, rl, shared)),
            config,
            urls,
            headers,
            name_header: HeaderValue::from_str(&config_name)
                .unwrap_or_else(|_| HeaderValue::from_static("unprintable-service-name")),
            cooldown: Cooldown::new(epoch),
            models: ArcSwapOption::empty(),
            stats: ServiceStats::default(),
            label,
            metrics: service_metrics,
            health: Health::new(health, epoch),
            in_flight: AtomicU64::new(0),
            latency_bits: AtomicU64::new(0),
            latency_at: AtomicU64::new(0),
            epoch,
        })
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    pub fn url(&self, endpoint: Endpoint) -> &Uri {
        match endpoint {
            Endpoint::ChatCompletions => &self.urls.chat,
            Endpoint::Completions => &self.urls.completions,
            Endpoint::Embeddings => &self.urls.embeddings,
        }
    }

    pub fn models_url(&self) -> &Uri {
        &self.urls.models
    }

    /// The service's name as a response header value.
    pub fn name_header(&self) -> &HeaderValue {
        &self.name_header
    }

    /// The headers every call to this service carries.
    pub fn headers(&self) -> &ServiceHeaders {
        &self.headers
    }

    /// The first of the `|`-separated alternatives this service supports; with an
    /// unknown model list, the first alternative. `None`: skip this service.
    pub fn pick_model<'a>(&self, requested: &'a str) -> Option<&'a str> {
        let mut alternatives = requested
            .split('|')
            .map(str::trim)
            .filter(|m| !m.is_empty());
        match &*self.models.load() {
            None => alternatives.next(),
            Some(catalog) => alternatives.find(|m| catalog.contains(m)),
        }
    }

    pub fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// The latency figure at `now` (decayed toward zero since its last update;
    /// 0 when there is none yet, so an unmeasured service counts as fastest).
    pub fn latency_ms(&self, now: Instant) -> f64 {
        let at = self.latency_at.load(Ordering::Relaxed);
        if at == 0 {
            return 0.0;
        }
        let value = f64::from_bits(self.latency_bits.load(Ordering::Relaxed));
        let age = now.saturating_duration_since(self.epoch).as_secs_f64()
            - Duration::from_nanos(at).as_secs_f64();
        value * (-age.max(0.0) / LATENCY_DECAY_SECS).exp()
    }

    /// Folds a successful call's time to first byte into the figure.
    pub fn record_latency(&self, ttfb: Duration, now: Instant) {
        let sample = ttfb.as_secs_f64() * 1000.0;
        let next = if self.latency_at.load(Ordering::Relaxed) == 0 {
            sample
        } else {
            self.latency_ms(now) * (1.0 - LATENCY_ALPHA) + sample * LATENCY_ALPHA
        };
        // Two racing updates may lose one sample: harmless for a moving average.
        self.latency_bits.store(next.to_bits(), Ordering::Relaxed);
        let at = u64::try_from(now.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1);
        self.latency_at.store(at, Ordering::Relaxed);
    }

    /// Whether the window is full or the service cools down, at `now`.
    pub async fn is_rate_limited(&self, now: Instant) -> bool {
        if self.cooldown.remaining(now).is_some() {
            return true;
        }
        match &self.limiter {
            Some(l) => l.state(now).await.is_full(),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::BackendType;
    use url::Url;

    fn service() -> Service {
        let cfg = ServiceConfig {
            name: "s".into(),
            backend_type: BackendType::Custom,
            base_url: Url::parse("http://127.0.0.1:1/v1/").unwrap(),
            api_key: None,
            timeout: Duration::from_secs(1),
            priority: 0,
            rate_limit: None,
            weight: 1.0,
        };
        Service::new(
            cfg,
            HealthConfig::default(),
            Instant::now(),
            None,
            &Metrics::new(),
        )
        .unwrap()
    }

    #[test]
    fn urls_are_joined_without_double_slashes() {
        let s = service();
        assert_eq!(
            s.url(Endpoint::ChatCompletions).to_string(),
            "http://127.0.0.1:1/v1/chat/completions"
        );
        assert_eq!(s.models_url().to_string(), "http://127.0.0.1:1/v1/models");
    }

    #[test]
    fn model_fallback_picks_the_first_supported_alternative() {
        let s = service();
        assert_eq!(s.pick_model("a | b|c"), Some("a")); // unknown list: first
        s.models
            .store(Some(std::sync::Arc::new(Catalog::from_ids(["b", "c"]))));
        assert_eq!(s.pick_model("a|b|c"), Some("b"));
        assert_eq!(s.pick_model("x|y"), None);
    }

    #[tokio::test(start_paused = true)]
    async fn cooldown_expires_and_never_shrinks() {
        let s = service();
        let now = Instant::now();
        s.cooldown.extend(now, Duration::from_secs(5));
        s.cooldown.extend(now, Duration::from_secs(1));
        assert_eq!(s.cooldown.remaining(now), Some(Duration::from_secs(5)));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(s.cooldown.remaining(Instant::now()), None);
    }
}
