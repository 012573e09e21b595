//! Prometheus metrics: typed label sets, registered once, rendered on scrape.
//!
//! Counters and histograms are updated where things happen (the access layer
//! for requests, the failover loop for upstream calls); gauges that describe
//! state (rate-limit quota, service status) are computed at scrape time, so the
//! request path never maintains them. Label values are bounded: routes come
//! from the route table, services from the configuration, models only from
//! discovered lists (anything else is `other`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::{MetricType, TypedMetric};
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
const LATENCY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0,
];

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

/// A latency histogram that observes with two relaxed atomic adds.
///
/// prometheus-client's `Histogram` takes a write lock per observation: every
/// request to one service would queue on it, on every core. Here each bucket
/// and the sum are atomics of their own; a scrape reads them one by one, so it
/// may see an observation in its bucket before it sees it in the sum (the
/// count is the buckets' total, so the two always agree with each other).
#[derive(Clone, Debug)]
pub struct Histogram(Arc<HistogramCells>);

#[derive(Debug)]
struct HistogramCells {
    /// Upper bounds in seconds, ascending; the last bucket (`+Inf`) has none.
    bounds: &'static [f64],
    /// One more than `bounds`.
    counts: Box<[AtomicU64]>,
    /// Nanoseconds: an integer add, where an `f64` sum would need a CAS loop.
    sum_nanos: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Self(Arc::new(HistogramCells {
            bounds,
            counts: (0..=bounds.len()).map(|_| AtomicU64::new(0)).collect(),
            sum_nanos: AtomicU64::new(0),
        }))
    }

    pub fn observe(&self, elapsed: Duration) {
        let cells = &*self.0;
        let secs = elapsed.as_secs_f64();
        let bucket = cells.bounds.partition_point(|&le| le < secs);
        if let Some(count) = cells.counts.get(bucket) {
            count.fetch_add(1, Relaxed);
        }
        let nanos = u64::try_from(elapsed.as_nanos()).unwrap_or(u64::MAX);
        cells.sum_nanos.fetch_add(nanos, Relaxed);
    }

    /// (sum in seconds, count, buckets with their upper bounds, `f64::MAX` for `+Inf`).
    fn snapshot(&self) -> (f64, u64, Vec<(f64, u64)>) {
        let cells = &*self.0;
        let buckets: Vec<(f64, u64)> = cells
            .bounds
            .iter()
            .copied()
            .chain(std::iter::once(f64::MAX))
            .zip(cells.counts.iter().map(|c| c.load(Relaxed)))
            .collect();
        let count = buckets.iter().map(|&(_, n)| n).sum();
        let sum = Duration::from_nanos(cells.sum_nanos.load(Relaxed)).as_secs_f64();
        (sum, count, buckets)
    }
}

impl TypedMetric for Histogram {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Histogram {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let (sum, count, buckets) = self.snapshot();
        encoder.encode_histogram::<NoLabelSet>(sum, count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
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
        self.ttfb.observe(elapsed);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn render_one(
        name: &str,
        metric: impl EncodeMetric + Send + Sync + std::fmt::Debug + 'static,
    ) -> String {
        let mut registry = Registry::default();
        registry.register_with_unit(name, "help", Unit::Seconds, metric);
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &registry).unwrap();
        out
    }

    /// The same observations render exactly as prometheus-client's own
    /// histogram renders them (bounds chosen so both sums are exact).
    #[test]
    fn renders_like_prometheus_clients_histogram() {
        let ours = Histogram::new(LATENCY_BUCKETS);
        let theirs =
            prometheus_client::metrics::histogram::Histogram::new(LATENCY_BUCKETS.iter().copied());
        for secs in [0.0, 0.005, 0.0078125, 0.25, 0.5, 0.5, 2.0, 120.0, 256.0] {
            ours.observe(Duration::from_secs_f64(secs));
            theirs.observe(secs);
        }
        let rendered = render_one("latency", ours.clone());
        assert_eq!(rendered, render_one("latency", theirs));
        for line in [
            "latency_seconds_count 9",
            "latency_seconds_sum 379.2628125",
            r#"latency_seconds_bucket{le="0.005"} 2"#,
            r#"latency_seconds_bucket{le="0.01"} 3"#,
            r#"latency_seconds_bucket{le="0.5"} 6"#,
            r#"latency_seconds_bucket{le="120.0"} 8"#,
            r#"latency_seconds_bucket{le="+Inf"} 9"#,
        ] {
            assert!(rendered.contains(line), "{line} not in:\n{rendered}");
        }
    }

    #[test]
    fn observations_from_many_threads_are_all_counted() {
        let h = Histogram::new(LATENCY_BUCKETS);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..10_000 {
                        h.observe(Duration::from_millis(1));
                    }
                });
            }
        });
        let (sum, count, buckets) = h.snapshot();
        assert_eq!(count, 40_000);
        assert_eq!(buckets[0], (0.005, 40_000));
        assert!((sum - 40.0).abs() < 1e-9, "{sum}");
    }
}
