//! The routing decision and the failover loop: which services, in what order,
//! with which model name, and what the client gets when none of them answers.
//!
//! No HTTP server types live here: handlers hand in bytes and get back an
//! upstream [`Reply`] or a request [`Error`].

pub mod balance;
pub mod health;
pub mod models;
pub mod service;

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use crate::config::{Balancing, Config};
use crate::error::{Error, StartupError};
use crate::metrics::{Label, Metrics};
use crate::ratelimit::Admission;
use crate::shared::RedisBackend;
use crate::stats::{RouterStats, bump};
use crate::upstream::{Call, Failure, Reply, UpstreamClient};
use balance::Balancer;
use health::{Gate, Transition, Verdict};
use http::HeaderValue;
pub use service::{Endpoint, InFlight, Service};

/// A client request, parsed only as far as routing needs.
pub struct RoutedRequest<'a> {
    pub endpoint: Endpoint,
    /// The body exactly as received.
    pub body: Bytes,
    /// The requested model, possibly `a|b|c`.
    pub model: &'a str,
    /// Byte range of the `model` JSON value (with its quotes) within `body`.
    pub model_span: Range<usize>,
    pub stream: bool,
    /// Sent upstream as `x-request-id`.
    pub request_id: Option<&'a HeaderValue>,
}

/// A request some service answered.
pub struct Routed {
    pub service: Arc<Service>,
    pub reply: Reply,
    /// Keeps the call counted as in flight (a stream holds it until it ends).
    pub in_flight: InFlight,
}

/// What became of one routed request.
pub struct Outcome {
    /// Upstream calls made (rate-limit and ejection skips are not calls).
    pub attempts: u32,
    pub result: Result<Routed, Error>,
}

/// The services in routing order and everything shared across requests.
pub struct Dispatcher {
    /// Priority ascending, ties in configuration order.
    pub services: Vec<Arc<Service>>,
    pub stats: RouterStats,
    pub client: UpstreamClient,
    pub metrics: Arc<Metrics>,
    /// Shared state for several replicas, when `REDIS_URL` is set.
    pub shared: Option<Arc<RedisBackend>>,
    balancer: Balancer,
}

/// The failover loop's running state for one request.
struct Attempts<'s> {
    count: u32,
    supported: bool,
    soonest_slot: Option<Duration>,
    failures: Vec<(&'s Service, Failure)>,
    /// Ejected services passed over, with the model each would get, and
    /// whether "never fail without trying" called them after all.
    ejected: Vec<(&'s Arc<Service>, &'s str, bool)>,
}

impl Dispatcher {
    pub fn new(
        config: &Config,
        client: UpstreamClient,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StartupError> {
        let epoch = Instant::now();
        let shared = match &config.redis {
            Some(redis) => Some(Arc::new(RedisBackend::new(
                redis.clone(),
                Arc::clone(&metrics),
            )?)),
            None => None,
        };
        let services: Vec<Arc<Service>> = config
            .services
            .iter()
            .map(|c| {
                Service::new(c.clone(), config.health, epoch, shared.as_ref(), &metrics)
                    .map(Arc::new)
            })
            .collect::<Result<_, _>>()?;
        let balancer = Balancer::new(config.balancing, &services);
        Ok(Self {
            services,
            stats: RouterStats::default(),
            client,
            metrics,
            shared,
            balancer,
        })
    }

    /// Tries eligible services until one answers (SPEC 4, 9): tiers by priority,
    /// ordered within a tier by the balancing strategy; model support,
    /// cool-downs, health and rate limits decide eligibility, in that order.
    pub async fn dispatch<'s>(&'s self, req: RoutedRequest<'s>) -> Outcome {
        bump(&self.stats.total_requests);
        let order = self.balancer.order(&self.services, Instant::now());
        let mut run = Attempts {
            count: 0,
            supported: false,
            soonest_slot: None,
            failures: Vec::new(),
            ejected: Vec::new(),
        };

        for pos in 0..self.services.len() {
            let service = &self.services[order.as_ref().map_or(pos, |o| o[pos])];
            let Some(model) = service.pick_model(req.model) else {
                continue; // its known model list lacks every alternative
            };
            run.supported = true;
            let now = Instant::now();
            if let Some(left) = service.cooldown.remaining(now) {
                self.rate_limit_skip(service, left, &mut run);
                continue;
            }
            let (gate, transition) = service.health.gate(now);
            self.note(service, transition);
            if gate == Gate::Closed {
                run.ejected.push((service, model, false));
                continue;
            }
            if let Admission::Full { retry_after } = admit(service, now).await {
                if gate == Gate::Trial {
                    service.health.record(Verdict::Neutral, true, now); // give the trial slot back
                }
                self.rate_limit_skip(service, retry_after, &mut run);
                continue;
            }
            if let Some(routed) = self
                .call(service, model, &req, gate == Gate::Trial, &mut run)
                .await
            {
                return self.finish(run, Ok(routed));
            }
        }

        // Never fail without trying: every eligible service is ejected.
        if run.count == 0 {
            for k in 0..run.ejected.len() {
                let (service, model, _) = run.ejected[k];
                let now = Instant::now();
                if let Admission::Full { retry_after } = admit(service, now).await {
                    self.rate_limit_skip(service, retry_after, &mut run);
                    continue;
                }
                run.ejected[k].2 = true;
                service.health.force_trial();
                if let Some(routed) = self.call(service, model, &req, true, &mut run).await {
                    return self.finish(run, Ok(routed));
                }
            }
        }

        let error = if !run.supported {
            Error::ModelNotFound(req.model.to_owned())
        } else {
            match run.failures.last() {
                None => {
                    let wait = run.soonest_slot.unwrap_or(Duration::from_secs(1));
                    Error::RateLimited {
                        retry_after_secs: Error::retry_after_secs(wait),
                    }
                }
                Some((last_service, last)) => all_failed(&run.failures, last_service.name(), last),
            }
        };
        self.finish(run, Err(error))
    }

    /// One upstream call, with its counters, health verdict and latency.
    async fn call<'s>(
        &'s self,
        service: &'s Arc<Service>,
        model: &str,
        req: &RoutedRequest<'_>,
        trial: bool,
        run: &mut Attempts<'s>,
    ) -> Option<Routed> {
        if let Some((failed, _)) = run.failures.last() {
            bump(&self.stats.total_failovers);
            failed.metrics.failovers.inc();
        }
        run.count += 1;
        bump(&service.stats.requests);
        let in_flight = InFlight::new(service);
        let call = Call {
            uri: service.url(req.endpoint),
            headers: service.headers(),
            body: with_model(req, model),
            stream: req.stream,
            timeout: service.config.timeout,
            request_id: req.request_id,
        };
        let started = Instant::now();
        let result = self.client.call(call).await;
        let now = Instant::now();
        match result {
            Ok(reply) => {
                let elapsed = now.saturating_duration_since(started);
                service.metrics.observe_ttfb(elapsed);
                let verdict = if reply.status().is_success() {
                    service.record_latency(elapsed, now);
                    service.metrics.success.inc();
                    Verdict::Success
                } else {
                    service.metrics.client_error.inc();
                    Verdict::Neutral
                };
                let transition = service.health.record(verdict, trial, now);
                self.note(service, transition);
                Some(Routed {
                    service: Arc::clone(service),
                    reply,
                    in_flight,
                })
            }
            Err(failure) => {
                bump(&service.stats.failures);
                service.metrics.failure.inc();
                let verdict = match &failure {
                    Failure::Connect(_) | Failure::Timeout(_) => Verdict::Failure,
                    Failure::Status {
                        status,
                        retry_after,
                        ..
                    } => {
                        service
                            .metrics
                            .observe_ttfb(now.saturating_duration_since(started));
                        if let (429, Some(after)) = (status.as_u16(), retry_after) {
                            service.cooldown.extend(now, *after);
                            if let Some(shared) = &self.shared {
                                shared.share_cooldown(service.name(), *after);
                            }
                        }
                        if status.is_server_error() {
                            Verdict::Failure
                        } else {
                            Verdict::Neutral
                        }
                    }
                };
                let transition = service.health.record(verdict, trial, now);
                tracing::info!(service = service.name(), reason = %failure.describe(), "upstream call failed");
                self.note(service, transition);
                run.failures.push((service, failure));
                None
            }
        }
    }

    fn rate_limit_skip(&self, service: &Service, wait: Duration, run: &mut Attempts<'_>) {
        bump(&service.stats.rate_limited);
        bump(&self.stats.total_rate_limit_skips);
        service.metrics.rate_limit_skips.inc();
        run.soonest_slot = Some(run.soonest_slot.map_or(wait, |s| s.min(wait)));
        tracing::info!(
            service = service.name(),
            wait_s = wait.as_secs_f64(),
            "rate-limit skip: window full or cooling down"
        );
    }

    /// Counts the ejection skips (ejected services that were not called after all).
    fn finish(&self, run: Attempts<'_>, result: Result<Routed, Error>) -> Outcome {
        for (service, _, called) in &run.ejected {
            if !called {
                bump(&service.stats.ejection_skips);
                bump(&self.stats.total_ejection_skips);
                service.metrics.ejection_skips.inc();
            }
        }
        Outcome {
            attempts: run.count,
            result,
        }
    }

    /// Logs and counts a health state change.
    pub fn note(&self, service: &Service, transition: Option<Transition>) {
        match transition {
            None => {}
            Some(Transition::Ejected { for_ }) => {
                service.metrics.ejections.inc();
                tracing::info!(
                    service = service.name(),
                    eject_s = for_.as_secs_f64(),
                    "service ejected after consecutive failures"
                );
            }
            Some(Transition::HalfOpen) => tracing::info!(
                service = service.name(),
                "service half-open: one trial request at a time"
            ),
            Some(Transition::Recovered) => {
                tracing::info!(service = service.name(), "service recovered")
            }
        }
    }

    /// Probes every ejected service once (`GET {base_url}/models`); a success
    /// makes it half-open. Probes do not count against rate limits.
    pub async fn probe_ejected(&self) {
        let probes = self
            .services
            .iter()
            .filter(|s| s.health.is_ejected())
            .map(|s| async move {
                let timeout = s.config.timeout.min(Duration::from_secs(10));
                if self
                    .client
                    .get_models(s.models_url(), s.headers(), timeout)
                    .await
                    .is_ok()
                {
                    let transition = s.health.probe_succeeded();
                    self.note(s, transition);
                }
            });
        futures_util::future::join_all(probes).await;
    }

    pub fn balancing(&self) -> Balancing {
        self.balancer.strategy()
    }

    /// The metrics label for a requested model: the first alternative some
    /// service lists, else `None` (label cardinality stays bounded).
    pub fn model_label(&self, requested: &str) -> Option<Label> {
        requested.split('|').map(str::trim).find_map(|m| {
            self.services
                .iter()
                .find_map(|s| s.models.load().as_ref().and_then(|c| c.label(m)))
        })
    }

    pub fn reset_stats(&self) {
        self.stats.reset();
        for s in &self.services {
            s.stats.reset();
        }
    }
}

/// Check-and-admit on the service's window; services without a limit pass.
async fn admit(service: &Service, now: Instant) -> Admission {
    match &service.limiter {
        Some(limiter) => limiter.admit(now).await,
        None => Admission::Admitted,
    }
}

/// 502 if every failure was a connection error, 504 if every one timed out,
/// 503 otherwise; the last upstream's message is kept.
fn all_failed(failures: &[(&Service, Failure)], last_name: &str, last: &Failure) -> Error {
    let message = format!(
        "All {} attempted service(s) failed; last error from {last_name}: {}",
        failures.len(),
        last.describe()
    );
    if failures
        .iter()
        .all(|(_, f)| matches!(f, Failure::Connect(_)))
    {
        Error::UpstreamUnreachable(message)
    } else if failures
        .iter()
        .all(|(_, f)| matches!(f, Failure::Timeout(_)))
    {
        Error::UpstreamTimeout(message)
    } else {
        Error::ServiceUnavailable(message)
    }
}

/// The body to send: unchanged, or with `model` replaced by the chosen
/// alternative, splicing bytes rather than re-serialising the whole body.
fn with_model(req: &RoutedRequest<'_>, chosen: &str) -> Bytes {
    if chosen == req.model || !req.model.contains('|') {
        return req.body.clone();
    }
    let encoded = serde_json::to_string(chosen).unwrap_or_else(|_| format!("\"{chosen}\""));
    let mut out = BytesMut::with_capacity(req.body.len() + encoded.len());
    out.extend_from_slice(&req.body[..req.model_span.start]);
    out.extend_from_slice(encoded.as_bytes());
    out.extend_from_slice(&req.body[req.model_span.end..]);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_rewrite_splices_only_the_model_value() {
        let body = Bytes::from_static(br#"{"x": 1.50, "model" : "a|b", "y": "model"}"#);
        let start = body.windows(5).position(|w| w == br#""a|b""#).unwrap();
        let req = RoutedRequest {
            endpoint: Endpoint::ChatCompletions,
            body: body.clone(),
            model: "a|b",
            model_span: start..start + 5,
            stream: false,
            request_id: None,
        };
        assert_eq!(
            &with_model(&req, "b")[..],
            br#"{"x": 1.50, "model" : "b", "y": "model"}"#
        );
        let single = RoutedRequest {
            model: "a|b",
            ..req
        };
        assert_eq!(with_model(&single, "a|b"), body);
    }
}
