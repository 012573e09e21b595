//! Lock-free request counters and the percentages the admin endpoints report.
//!
//! Relaxed atomics: each counter is independent and only ever read for reporting,
//! so no ordering between them is needed and the request path never waits.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

/// Router-wide totals.
#[derive(Debug, Default)]
pub struct RouterStats {
    /// Client requests that reached routing.
    pub total_requests: AtomicU64,
    /// Moves to a next service after a failed call.
    pub total_failovers: AtomicU64,
    /// Services skipped because their window was full or they were cooling down.
    pub total_rate_limit_skips: AtomicU64,
    /// Services skipped because they were ejected (SPEC 9.1).
    pub total_ejection_skips: AtomicU64,
}

/// Counters of one service.
#[derive(Debug, Default)]
pub struct ServiceStats {
    /// Calls made to the service.
    pub requests: AtomicU64,
    /// Calls that failed (connection error, timeout, failover status, mid-stream drop).
    pub failures: AtomicU64,
    /// Times the service was skipped for its rate limit or cool-down.
    pub rate_limited: AtomicU64,
    /// Times the service was skipped because it was ejected.
    pub ejection_skips: AtomicU64,
}

/// A plain copy of [`ServiceStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ServiceCounts {
    pub requests: u64,
    pub failures: u64,
    pub rate_limited: u64,
    pub ejection_skips: u64,
}

impl ServiceCounts {
    pub fn failure_rate(&self) -> f64 {
        percent(self.failures, self.requests)
    }
}

impl RouterStats {
    pub fn reset(&self) {
        self.total_requests.store(0, Relaxed);
        self.total_failovers.store(0, Relaxed);
        self.total_rate_limit_skips.store(0, Relaxed);
        self.total_ejection_skips.store(0, Relaxed);
    }
}

impl ServiceStats {
    pub fn counts(&self) -> ServiceCounts {
        ServiceCounts {
            requests: self.requests.load(Relaxed),
            failures: self.failures.load(Relaxed),
            rate_limited: self.rate_limited.load(Relaxed),
            ejection_skips: self.ejection_skips.load(Relaxed),
        }
    }

    pub fn reset(&self) {
        self.requests.store(0, Relaxed);
        self.failures.store(0, Relaxed);
        self.rate_limited.store(0, Relaxed);
        self.ejection_skips.store(0, Relaxed);
    }
}

/// `part / whole` as a percentage rounded to two decimals; 0 when `whole` is 0.
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        return 0.0;
    }
    (part as f64 * 10_000.0 / whole as f64).round() / 100.0
}

pub fn bump(counter: &AtomicU64) {
    counter.fetch_add(1, Relaxed);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_are_rounded_and_safe_on_zero() {
        assert_eq!(percent(1, 3), 33.33);
        assert_eq!(percent(1, 4), 25.0);
        assert_eq!(percent(5, 0), 0.0);
    }
}
