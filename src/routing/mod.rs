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
use crate::ratelimit::Admission;
use crate::stats::{RouterStats, bump};
use crate::upstream::{Call, Failure, Reply, UpstreamClient};
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
}

/// A request some service answered.
pub struct Routed {
    pub service: Arc<Service>,
    /// Upstream calls made (rate-limit skips are not calls).
    pub attempts: u32,
    pub reply: Reply,
}

/// The services in routing order and everything shared across requests.
pub struct Dispatcher {
    /// Priority ascending, ties in configuration order.
    pub services: Vec<Arc<Service>>,
    pub stats: RouterStats,
    pub client: UpstreamClient,
}

impl Dispatcher {
    pub fn new(config: &Config, client: UpstreamClient) -> Result<Self, StartupError> {
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
        })
    }

    /// Tries eligible services in order until one answers (SPEC 4).
    pub async fn dispatch(&self, req: RoutedRequest<'_>) -> Result<Routed, Error> {
        bump(&self.stats.total_requests);
        let mut attempts = 0u32;
        let mut supported = false;
        let mut soonest_slot: Option<Duration> = None;
        let mut failures: Vec<(&str, Failure)> = Vec::new();

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
                soonest_slot = Some(soonest_slot.map_or(wait, |s| s.min(wait)));
                tracing::debug!(
                    service = service.name(),
                    wait_ms = wait.as_millis() as u64,
                    "rate-limit skip"
                );
                continue;
            }
            if !failures.is_empty() {
                bump(&self.stats.total_failovers);
            }
            attempts += 1;
            bump(&service.stats.requests);
            let call = Call {
                url: service.url(req.endpoint),
                api_key: service.config.api_key.as_ref(),
                body: with_model(&req, model),
                stream: req.stream,
                timeout: service.config.timeout,
            };
            match self.client.call(call).await {
                Ok(reply) => {
                    return Ok(Routed {
                        service: Arc::clone(service),
                        attempts,
                        reply,
                    });
                }
                Err(failure) => {
                    bump(&service.stats.failures);
                    if let Failure::Status {
                        status,
                        retry_after: Some(after),
                        ..
                    } = &failure
                    {
                        if status.as_u16() == 429 {
                            service.cooldown.extend(Instant::now(), *after);
                        }
                    }
                    tracing::info!(service = service.name(), reason = %failure.describe(), "upstream call failed; trying the next service");
                    failures.push((service.name(), failure));
                }
            }
        }

        if !supported {
            return Err(Error::ModelNotFound(req.model.to_owned()));
        }
        match failures.last() {
            None => {
                let wait = soonest_slot.unwrap_or(Duration::from_secs(1));
                Err(Error::RateLimited {
                    retry_after_secs: wait.as_secs_f64().ceil().max(1.0) as u64,
                })
            }
            Some((name, last)) => Err(all_failed(&failures, name, last)),
        }
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
fn all_failed(failures: &[(&str, Failure)], last_name: &str, last: &Failure) -> Error {
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
