//! The routing decision and the failover loop: which services, in what order,
//! with which model name, and what the client gets when none of them answers.
//!
//! No HTTP server types live here: handlers hand in bytes and get back an
//! upstream [`Reply`] or a request [`Error`].

pub mod models;
pub mod service;

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::time::Instant;

use crate::config::Config;
use crate::error::{Error, StartupError};
use crate::metrics::{Label, Metrics};
use crate::ratelimit::Admission;
use crate::stats::{RouterStats, bump};
use crate::upstream::{Call, Failure, Reply, UpstreamClient};
use http::HeaderValue;
pub use service::{Endpoint, Service};

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
}

/// What became of one routed request.
pub struct Outcome {
    /// Upstream calls made (rate-limit skips are not calls).
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
}

impl Dispatcher {
    pub fn new(
        config: &Config,
        client: UpstreamClient,
        metrics: Arc<Metrics>,
    ) -> Result<Self, StartupError> {
        let epoch = Instant::now();
        let services = config
            .services
            .iter()
            .map(|c| Service::new(c.clone(), epoch).map(Arc::new))
            .collect::<Result<_, _>>()?;
        Ok(Self {
            services,
            stats: RouterStats::default(),
            client,
            metrics,
        })
    }

    /// Tries eligible services in order until one answers (SPEC 4).
    pub async fn dispatch(&self, req: RoutedRequest<'_>) -> Outcome {
        bump(&self.stats.total_requests);
        let mut attempts = 0u32;
        let mut supported = false;
        let mut soonest_slot: Option<Duration> = None;
        let mut failures: Vec<(&Service, Failure)> = Vec::new();

        for service in &self.services {
            let Some(model) = service.pick_model(req.model) else {
                continue; // its known model list lacks every alternative
            };
            supported = true;
            let now = Instant::now();
            let wait = match service.cooldown.remaining(now) {
                Some(left) => Some(left),
                None => match service.limiter.as_ref().map(|l| l.try_admit(now)) {
                    Some(Admission::Full { retry_after }) => Some(retry_after),
                    Some(Admission::Admitted) | None => None,
                },
            };
            if let Some(wait) = wait {
                bump(&service.stats.rate_limited);
                bump(&self.stats.total_rate_limit_skips);
                self.metrics.count_rate_limit_skip(&service.label);
                soonest_slot = Some(soonest_slot.map_or(wait, |s| s.min(wait)));
                tracing::info!(
                    service = service.name(),
                    wait_s = wait.as_secs_f64(),
                    "rate-limit skip: window full or cooling down"
                );
                continue;
            }
            if let Some((failed, _)) = failures.last() {
                bump(&self.stats.total_failovers);
                self.metrics.count_failover(&failed.label);
            }
            attempts += 1;
            bump(&service.stats.requests);
            let call = Call {
                url: service.url(req.endpoint),
                api_key: service.config.api_key.as_ref(),
                body: with_model(&req, model),
                stream: req.stream,
                timeout: service.config.timeout,
                request_id: req.request_id,
            };
            let started = Instant::now();
            let result = self.client.call(call).await;
            match result {
                Ok(reply) => {
                    self.metrics.observe_ttfb(&service.label, started.elapsed());
                    let outcome = if reply.status().is_success() {
                        "success"
                    } else {
                        "client_error"
                    };
                    self.metrics.count_attempt(&service.label, outcome);
                    let routed = Routed {
                        service: Arc::clone(service),
                        reply,
                    };
                    return Outcome {
                        attempts,
                        result: Ok(routed),
                    };
                }
                Err(failure) => {
                    bump(&service.stats.failures);
                    self.metrics.count_attempt(&service.label, "failure");
                    if let Failure::Status {
                        status,
                        retry_after,
                        ..
                    } = &failure
                    {
                        self.metrics.observe_ttfb(&service.label, started.elapsed());
                        if let (429, Some(after)) = (status.as_u16(), retry_after) {
                            service.cooldown.extend(Instant::now(), *after);
                        }
                    }
                    tracing::info!(service = service.name(), reason = %failure.describe(), "upstream call failed");
                    failures.push((service, failure));
                }
            }
        }

        let result = if !supported {
            Err(Error::ModelNotFound(req.model.to_owned()))
        } else {
            match failures.last() {
                None => {
                    let wait = soonest_slot.unwrap_or(Duration::from_secs(1));
                    Err(Error::RateLimited {
                        retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                    })
                }
                Some((last_service, last)) => Err(all_failed(&failures, last_service.name(), last)),
            }
        };
        Outcome { attempts, result }
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
