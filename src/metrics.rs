//! Prometheus metrics: typed label sets, registered once, rendered on scrape.
//!
//! Counters and histograms are updated where things happen (the access layer
//! for requests, the failover loop for upstream calls); gauges that describe
//! state (rate-limit quota, service status) are computed at scrape time, so the
//! request path never maintains them. Label values are bounded: routes come
//! from the route table, services from the configuration, models only from
//! discovered lists (anything else is `other`).

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

/// A label value shared without copying (service names, model ids).
pub type Label = Arc<str>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub route: &'static str,
    pub service: Label,
    pub model: Label,
    pub status_class: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RouteServiceLabels {
    pub route: &'static str,
    pub service: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub service: Label,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AttemptLabels {
    pub service: Label,
    /// `success`, `client_error` (passed back without failover) or `failure`.
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    pub service: Label,
    pub status: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabels {
    pub reason: &'static str,
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Request latency buckets, seconds: from a fast local call to a long completion.
fn latency_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
    ])
}

/// Every metric of the router.
pub struct Metrics {
    registry: Registry,
    pub requests: Family<RequestLabels, Counter>,
    pub request_duration: Histograms<RouteServiceLabels>,
    pub upstream_attempts: Family<AttemptLabels, Counter>,
    pub upstream_ttfb: Histograms<ServiceLabels>,
    pub failovers: Family<ServiceLabels, Counter>,
    pub rate_limit_skips: Family<ServiceLabels, Counter>,
    pub stream_failures: Family<ServiceLabels, Counter>,
    pub auth_failures: Family<ReasonLabels, Counter>,
    pub ejections: Family<ServiceLabels, Counter>,
    pub ejection_skips: Family<ServiceLabels, Counter>,
    pub service_in_flight: Family<ServiceLabels, Gauge>,
    pub in_flight: Gauge,
    pub open_streams: Gauge,
    /// 1 while the state backend answers (always 1 for memory).
    pub state_backend_up: Gauge,
    /// Limit decisions made by REDIS_FAILURE_MODE because Redis could not decide.
    pub state_fallbacks: Counter,
    pub rate_limit_remaining: Family<ServiceLabels, Gauge>,
    pub service_status: Family<StatusLabels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("llm_router");
        let m = Self {
            requests: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            upstream_attempts: Family::default(),
            upstream_ttfb: Family::new_with_constructor(latency_histogram),
            failovers: Family::default(),
            rate_limit_skips: Family::default(),
            stream_failures: Family::default(),
            auth_failures: Family::default(),
            ejections: Family::default(),
            ejection_skips: Family::default(),
            service_in_flight: Family::default(),
            in_flight: Gauge::default(),
            open_streams: Gauge::default(),
            state_backend_up: Gauge::default(),
            state_fallbacks: Counter::default(),
            rate_limit_remaining: Family::default(),
            service_status: Family::default(),
            registry: Registry::default(),
        };
        let r = &mut registry;
        r.register(
            "requests",
            "Client requests by route, answering service, model and status class",
            m.requests.clone(),
        );
        r.register_with_unit(
            "request_duration",
            "Time from request to response head (for streams: to the first event)",
            Unit::Seconds,
            m.request_duration.clone(),
        );
        r.register(
            "upstream_attempts",
            "Upstream calls by service and outcome",
            m.upstream_attempts.clone(),
        );
        r.register_with_unit(
            "upstream_ttfb",
            "Upstream time until the answer is usable: the whole body for JSON calls, the first event for streams, the error body for failed statuses",
            Unit::Seconds,
            m.upstream_ttfb.clone(),
        );
        r.register(
            "failovers",
            "Moves to another service after a failed call, by the failed service",
            m.failovers.clone(),
        );
        r.register(
            "rate_limit_skips",
            "Services skipped for a full window or a cool-down",
            m.rate_limit_skips.clone(),
        );
        r.register(
            "stream_failures",
            "Streams ended by an upstream failure after their first event",
            m.stream_failures.clone(),
        );
        r.register(
            "auth_failures",
            "Client requests refused by authentication, by reason",
            m.auth_failures.clone(),
        );
        r.register(
            "ejections",
            "Times a service was ejected for consecutive failures",
            m.ejections.clone(),
        );
        r.register(
            "ejection_skips",
            "Ejected services skipped without a call",
            m.ejection_skips.clone(),
        );
        r.register(
            "service_in_flight",
            "Upstream calls in progress per service (streams until they end)",
            m.service_in_flight.clone(),
        );
        r.register(
            "state_backend_up",
            "1 while the shared-state backend answers (memory: always 1)",
            m.state_backend_up.clone(),
        );
        r.register(
            "state_fallbacks",
            "Rate-limit decisions made by REDIS_FAILURE_MODE because Redis could not decide",
            m.state_fallbacks.clone(),
        );
        r.register(
            "in_flight_requests",
            "Requests being handled (until their response head)",
            m.in_flight.clone(),
        );
        r.register(
            "open_streams",
            "Streaming responses being relayed",
            m.open_streams.clone(),
        );
        r.register(
            "rate_limit_remaining",
            "Requests a limited service may still take in its current window",
            m.rate_limit_remaining.clone(),
        );
        r.register(
            "service_status",
            "1 for the current status of each service (healthy, degraded, unhealthy)",
            m.service_status.clone(),
        );
        m.state_backend_up.set(1);
        Self { registry, ..m }
    }

    /// The OpenMetrics text exposition (also accepted as Prometheus text).
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(8 * 1024);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// The per-service series, resolved once so the request path updates them
    /// without hashing labels or taking the families' locks.
    pub fn for_service(&self, service: &Label) -> ServiceMetrics {
        let s = ServiceLabels {
            service: Arc::clone(service),
        };
        let attempt = |outcome| {
            self.upstream_attempts
                .get_or_create(&AttemptLabels {
                    service: Arc::clone(service),
                    outcome,
                })
                .clone()
        };
        ServiceMetrics {
            success: attempt("success"),
            client_error: attempt("client_error"),
            failure: attempt("failure"),
            ttfb: self.upstream_ttfb.get_or_create(&s).clone(),
            failovers: self.failovers.get_or_create(&s).clone(),
            rate_limit_skips: self.rate_limit_skips.get_or_create(&s).clone(),
            ejection_skips: self.ejection_skips.get_or_create(&s).clone(),
            ejections: self.ejections.get_or_create(&s).clone(),
            stream_failures: self.stream_failures.get_or_create(&s).clone(),
        }
    }
}

/// One service's series (shared handles into the families above).
#[derive(Debug, Clone)]
pub struct ServiceMetrics {
    pub success: Counter,
    pub client_error: Counter,
    pub failure: Counter,
    pub ttfb: Histogram,
    pub failovers: Counter,
    pub rate_limit_skips: Counter,
    pub ejection_skips: Counter,
    pub ejections: Counter,
    pub stream_failures: Counter,
}

impl ServiceMetrics {
    pub fn observe_ttfb(&self, elapsed: Duration) {
        self.ttfb.observe(elapsed.as_secs_f64());
    }
}

/// Counts an open stream while alive (held by the relay).
pub struct StreamGuard(Gauge);

impl StreamGuard {
    pub fn new(metrics: &Metrics) -> Self {
        metrics.open_streams.inc();
        Self(metrics.open_streams.clone())
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

/// `2xx`, `4xx`, ... for a status code.
pub fn status_class(status: u16) -> &'static str {
    match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    }
}
