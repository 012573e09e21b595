//! Passive health of one service (SPEC 9.1): consecutive failures eject it for
//! a while (doubling per consecutive ejection, up to a cap); when a background
//! probe succeeds or the time is up it is half-open and one request at a time
//! may try it; that call's outcome closes it or ejects it again.
//!
//! ```text
//!            N consecutive failures                time up / probe ok
//!  Healthy ──────────────────────────▶ Ejected ───────────────────────▶ HalfOpen
//!     ▲                                   ▲                                │
//!     │            trial call fails (ejection doubles)                     │
//!     │                                   └────────────────────────────────┤
//!     └────────────────────────────────────────────────────────────────────┘
//!                              trial call succeeds
//! ```
//!
//! All state is atomics: the request path reads one word in the common
//! (healthy) case and never takes a lock.

use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU32, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::HealthConfig;

const HEALTHY: u8 = 0;
const EJECTED: u8 = 1;
const HALF_OPEN: u8 = 2;

/// What a call's outcome means for health.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Success,
    /// Connection error, timeout, 5xx.
    Failure,
    /// 4xx (429 included): says nothing about health.
    Neutral,
}

/// Whether a request may call the service now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Gate {
    Open,
    /// The half-open service's single trial slot, taken by this request.
    Trial,
    /// Ejected, or half-open with its trial taken by another request.
    Closed,
}

/// A change worth logging and counting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Ejected { for_: Duration },
    HalfOpen,
    Recovered,
}

#[derive(Debug)]
pub struct Health {
    config: HealthConfig,
    epoch: Instant,
    state: AtomicU8,
    consecutive_failures: AtomicU32,
    /// Consecutive ejections without a recovery in between (the doubling exponent).
    level: AtomicU32,
    ejections: AtomicU64,
    /// Nanoseconds after `epoch`.
    ejected_until: AtomicU64,
    trial_taken: AtomicBool,
}

impl Health {
    pub fn new(config: HealthConfig, epoch: Instant) -> Self {
        Self {
            config,
            epoch,
            state: AtomicU8::new(HEALTHY),
            consecutive_failures: AtomicU32::new(0),
            level: AtomicU32::new(0),
            ejections: AtomicU64::new(0),
            ejected_until: AtomicU64::new(0),
            trial_taken: AtomicBool::new(false),
        }
    }

    fn nanos(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.epoch).as_nanos()).unwrap_or(u64::MAX)
    }

    /// May a request call the service at `now`? Moves an ejection whose time is
    /// up to half-open.
    pub fn gate(&self, now: Instant) -> (Gate, Option<Transition>) {
        let mut transition = None;
        match self.state.load(Relaxed) {
            HEALTHY => return (Gate::Open, None),
            EJECTED => {
                if self.nanos(now) < self.ejected_until.load(Relaxed) {
                    return (Gate::Closed, None);
                }
                if self
                    .state
                    .compare_exchange(EJECTED, HALF_OPEN, Relaxed, Relaxed)
                    .is_ok()
                {
                    transition = Some(Transition::HalfOpen);
                }
            }
            _ => {}
        }
        // Half-open: exactly one request at a time.
        if self
            .trial_taken
            .compare_exchange(false, true, Relaxed, Relaxed)
            .is_ok()
        {
            (Gate::Trial, transition)
        } else {
            (Gate::Closed, transition)
        }
    }

    /// A call that must be made even though the service is ejected (every
    /// eligible service is): it counts like a half-open trial.
    pub fn force_trial(&self) {
        self.trial_taken.store(true, Relaxed);
    }

    /// Records a call's outcome. `trial`: the call held the half-open slot (or
    /// was forced).
    pub fn record(&self, verdict: Verdict, trial: bool, now: Instant) -> Option<Transition> {
        let transition = match verdict {
            Verdict::Neutral => None,
            Verdict::Success => {
                if self.consecutive_failures.load(Relaxed) != 0 {
                    self.consecutive_failures.store(0, Relaxed);
                }
                if trial || self.state.load(Relaxed) != HEALTHY {
                    let was = self.state.swap(HEALTHY, Relaxed);
                    self.level.store(0, Relaxed);
                    (was != HEALTHY).then_some(Transition::Recovered)
                } else {
                    None
                }
            }
            Verdict::Failure if trial || self.state.load(Relaxed) != HEALTHY => {
                Some(self.eject(now, true))
            }
            Verdict::Failure => {
                let n = self.consecutive_failures.fetch_add(1, Relaxed) + 1;
                let threshold = self.config.failure_threshold;
                if threshold > 0
                    && n >= threshold
                    && self
                        .state
                        .compare_exchange(HEALTHY, EJECTED, Relaxed, Relaxed)
                        .is_ok()
                {
                    Some(self.eject(now, false))
                } else {
                    None
                }
            }
        };
        if trial {
            self.trial_taken.store(false, Relaxed);
        }
        transition
    }

    /// Ejects from `now`: base length, doubled per consecutive ejection, capped.
    fn eject(&self, now: Instant, again: bool) -> Transition {
        let level = if again {
            self.level.fetch_add(1, Relaxed) + 1
        } else {
            self.level.load(Relaxed)
        };
        let factor = 2f64.powi(i32::try_from(level.min(30)).unwrap_or(30));
        let length = self.config.eject.mul_f64(factor).min(self.config.eject_max);
        let until = self
            .nanos(now)
            .saturating_add(u64::try_from(length.as_nanos()).unwrap_or(u64::MAX));
        self.ejected_until.store(until, Relaxed);
        self.state.store(EJECTED, Relaxed);
        self.consecutive_failures.store(0, Relaxed);
        self.ejections.fetch_add(1, Relaxed);
        Transition::Ejected { for_: length }
    }

    /// A background probe answered: an ejected service becomes half-open.
    pub fn probe_succeeded(&self) -> Option<Transition> {
        self.state
            .compare_exchange(EJECTED, HALF_OPEN, Relaxed, Relaxed)
            .is_ok()
            .then_some(Transition::HalfOpen)
    }

    pub fn is_ejected(&self) -> bool {
        self.state.load(Relaxed) == EJECTED
    }

    /// `healthy`, `degraded` (half-open, or failures below the threshold) or
    /// `unhealthy` (ejected), as `/router/health` reports it.
    pub fn status(&self, now: Instant) -> &'static str {
        match self.state.load(Relaxed) {
            // The ejection is over but no request or probe has looked yet: it is
            // effectively half-open.
            EJECTED if self.nanos(now) >= self.ejected_until.load(Relaxed) => "degraded",
            EJECTED => "unhealthy",
            HALF_OPEN => "degraded",
            _ if self.consecutive_failures.load(Relaxed) > 0 => "degraded",
            _ => "healthy",
        }
    }

    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Relaxed)
    }

    pub fn ejections(&self) -> u64 {
        self.ejections.load(Relaxed)
    }

    /// Time left in the current ejection, if ejected.
    pub fn ejected_for(&self, now: Instant) -> Option<Duration> {
        if !self.is_ejected() {
            return None;
        }
        let until = self.ejected_until.load(Relaxed);
        let now = self.nanos(now);
        (until > now).then(|| Duration::from_nanos(until - now))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn health(threshold: u32) -> Health {
        let cfg = HealthConfig {
            failure_threshold: threshold,
            eject: Duration::from_secs(10),
            eject_max: Duration::from_secs(25),
            probe_interval: Duration::from_secs(5),
        };
        Health::new(cfg, Instant::now())
    }

    #[tokio::test(start_paused = true)]
    async fn consecutive_failures_eject_and_neutral_answers_do_not_count_or_reset() {
        let h = health(3);
        let now = Instant::now();
        assert_eq!(h.record(Verdict::Failure, false, now), None);
        assert_eq!(h.record(Verdict::Neutral, false, now), None);
        assert_eq!(h.record(Verdict::Failure, false, now), None);
        assert_eq!(h.status(Instant::now()), "degraded");
        assert_eq!(
            h.record(Verdict::Failure, false, now),
            Some(Transition::Ejected {
                for_: Duration::from_secs(10)
            })
        );
        assert_eq!(h.status(Instant::now()), "unhealthy");
        assert_eq!(h.gate(now).0, Gate::Closed);
        assert_eq!(h.ejected_for(now), Some(Duration::from_secs(10)));
    }

    #[tokio::test(start_paused = true)]
    async fn a_success_resets_the_count() {
        let h = health(2);
        let now = Instant::now();
        h.record(Verdict::Failure, false, now);
        h.record(Verdict::Success, false, now);
        assert_eq!(h.record(Verdict::Failure, false, now), None);
        assert_eq!(h.status(Instant::now()), "degraded");
    }

    #[tokio::test(start_paused = true)]
    async fn half_open_admits_one_trial_and_a_failed_trial_doubles_up_to_the_cap() {
        let h = health(1);
        h.record(Verdict::Failure, false, Instant::now());
        tokio::time::advance(Duration::from_secs(10)).await;
        let now = Instant::now();
        assert_eq!(h.gate(now), (Gate::Trial, Some(Transition::HalfOpen)));
        assert_eq!(
            h.gate(now),
            (Gate::Closed, None),
            "a second request while the trial runs"
        );
        assert_eq!(
            h.record(Verdict::Failure, true, now),
            Some(Transition::Ejected {
                for_: Duration::from_secs(20)
            })
        );
        tokio::time::advance(Duration::from_secs(20)).await;
        assert_eq!(h.gate(Instant::now()).0, Gate::Trial);
        assert_eq!(
            h.record(Verdict::Failure, true, Instant::now()),
            Some(Transition::Ejected {
                for_: Duration::from_secs(25)
            })
        );
        assert_eq!(h.ejections(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_successful_trial_recovers_and_the_next_ejection_starts_from_the_base() {
        let h = health(1);
        h.record(Verdict::Failure, false, Instant::now());
        assert_eq!(h.probe_succeeded(), Some(Transition::HalfOpen));
        let now = Instant::now();
        assert_eq!(h.gate(now).0, Gate::Trial);
        assert_eq!(
            h.record(Verdict::Success, true, now),
            Some(Transition::Recovered)
        );
        assert_eq!((h.status(now), h.gate(now).0), ("healthy", Gate::Open));
        assert_eq!(
            h.record(Verdict::Failure, false, now),
            Some(Transition::Ejected {
                for_: Duration::from_secs(10)
            })
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_ejection_that_ran_out_reads_as_degraded_before_anyone_looks() {
        let h = health(1);
        h.record(Verdict::Failure, false, Instant::now());
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(h.status(Instant::now()), "degraded");
        assert_eq!(h.ejected_for(Instant::now()), None);
    }

    #[tokio::test(start_paused = true)]
    async fn threshold_zero_never_ejects() {
        let h = health(0);
        for _ in 0..10 {
            assert_eq!(h.record(Verdict::Failure, false, Instant::now()), None);
        }
        assert_eq!(h.gate(Instant::now()).0, Gate::Open);
    }
}
