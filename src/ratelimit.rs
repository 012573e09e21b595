//! Sliding-window rate limits, for services and for client keys.
//!
//! The window is an exact log of admission times: a request is admitted when fewer
//! than N admissions happened in the last `window`, and the check and the record
//! are one step under the service's own lock, so no burst of concurrent requests
//! can ever get more than N through in any interval of the window's length (the
//! Python router checked and recorded separately and over-admitted under load).
//! The lock is per service and held for a few nanoseconds; services without a
//! limit have no limiter and never touch it.
//!
//! Time is `tokio::time::Instant`, so tests pause and advance the clock.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use crate::config::{RateLimit, Secret};
use crate::shared::{RedisBackend, SharedWindow};

/// The outcome of one admission attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// The window is full; the first slot frees after `retry_after`.
    Full {
        retry_after: Duration,
    },
}

/// A snapshot for `/router/rate-limits`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowState {
    pub limit: u32,
    pub window: Duration,
    pub current: u32,
    /// Time until the oldest admission leaves the window (zero when empty).
    pub reset_in: Duration,
}

impl WindowState {
    pub fn remaining(&self) -> u32 {
        self.limit.saturating_sub(self.current)
    }

    pub fn is_full(&self) -> bool {
        self.current >= self.limit
    }
}

/// The limiter of one service or one client key, on whichever backend was chosen
/// at start-up: memory (one replica) or Redis (every replica, SPEC 8).
#[derive(Debug)]
pub enum RateLimiter {
    Memory(SlidingWindow),
    Shared(SharedWindow),
}

impl RateLimiter {
    /// A service's limiter.
    pub fn for_service(name: &str, limit: RateLimit, shared: Option<&Arc<RedisBackend>>) -> Self {
        Self::on(shared, limit, |backend| backend.window_key(name))
    }

    /// A client key's limiter. In Redis the window is named by a digest of the
    /// key, never the key itself.
    pub fn for_client_key(
        key: &Secret,
        limit: RateLimit,
        shared: Option<&Arc<RedisBackend>>,
    ) -> Self {
        Self::on(shared, limit, |backend| backend.client_key_window_key(key))
    }

    /// In Redis under the key `name` gives, when there is a shared backend.
    fn on(
        shared: Option<&Arc<RedisBackend>>,
        limit: RateLimit,
        name: impl FnOnce(&RedisBackend) -> String,
    ) -> Self {
        match shared {
            Some(backend) => {
                RateLimiter::Shared(SharedWindow::new(Arc::clone(backend), name(backend), limit))
            }
            None => RateLimiter::Memory(SlidingWindow::new(limit.requests.get(), limit.window)),
        }
    }

    /// Check-and-admit, one atomic step on whichever backend holds the window.
    pub async fn admit(&self, now: Instant) -> Admission {
        match self {
            RateLimiter::Memory(w) => w.try_admit(now),
            RateLimiter::Shared(w) => w.admit(now).await,
        }
    }

    pub async fn state(&self, now: Instant) -> WindowState {
        match self {
            RateLimiter::Memory(w) => w.state(now),
            RateLimiter::Shared(w) => w.state(now).await,
        }
    }
}

/// An exact sliding-window log in memory.
#[derive(Debug)]
pub struct SlidingWindow {
    limit: u32,
    window: Duration,
    /// Admission times, oldest first; never longer than `limit`. A mutex, not
    /// atomics: check-and-admit must be one indivisible step over the whole log.
    log: Mutex<VecDeque<Instant>>,
}

impl SlidingWindow {
    pub fn new(limit: u32, window: Duration) -> Self {
        let capacity = usize::try_from(limit).unwrap_or(usize::MAX).min(4096);
        Self {
            limit,
            window,
            log: Mutex::new(VecDeque::with_capacity(capacity)),
        }
    }

    fn lock(&self) -> MutexGuard<'_, VecDeque<Instant>> {
        // The critical sections below cannot panic, so a poisoned lock still holds
        // a consistent log: keep using it rather than failing every request.
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn evict(&self, log: &mut VecDeque<Instant>, now: Instant) {
        while let Some(&oldest) = log.front() {
            if now.saturating_duration_since(oldest) >= self.window {
                log.pop_front();
            } else {
                break;
            }
        }
    }

    /// Admits and records `now` if the window has room, atomically.
    pub fn try_admit(&self, now: Instant) -> Admission {
        self.try_admit_within(now, self.limit)
    }

    /// Like [`SlidingWindow::try_admit`] with a lower limit for this call (the
    /// per-replica share while a shared backend is unreachable).
    pub fn try_admit_within(&self, now: Instant, limit: u32) -> Admission {
        let mut log = self.lock();
        self.evict(&mut log, now);
        if (log.len() as u64) < u64::from(limit.min(self.limit)) {
            log.push_back(now);
            return Admission::Admitted;
        }
        let retry_after = log
            .front()
            .map(|&oldest| (oldest + self.window).saturating_duration_since(now))
            .unwrap_or(self.window);
        Admission::Full { retry_after }
    }

    pub fn state(&self, now: Instant) -> WindowState {
        let mut log = self.lock();
        self.evict(&mut log, now);
        let reset_in = log
            .front()
            .map(|&oldest| (oldest + self.window).saturating_duration_since(now))
            .unwrap_or_default();
        WindowState {
            limit: self.limit,
            window: self.window,
            current: u32::try_from(log.len()).unwrap_or(u32::MAX),
            reset_in,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::Arc;

    #[tokio::test(start_paused = true)]
    async fn admits_up_to_the_limit_then_reports_when_a_slot_frees() {
        let w = SlidingWindow::new(2, Duration::from_secs(10));
        let t0 = Instant::now();
        assert_eq!(w.try_admit(t0), Admission::Admitted);
        tokio::time::advance(Duration::from_secs(3)).await;
        assert_eq!(w.try_admit(Instant::now()), Admission::Admitted);
        assert_eq!(
            w.try_admit(Instant::now()),
            Admission::Full {
                retry_after: Duration::from_secs(7)
            }
        );
        let s = w.state(Instant::now());
        assert_eq!(
            (s.current, s.remaining(), s.reset_in),
            (2, 0, Duration::from_secs(7))
        );
    }

    #[tokio::test(start_paused = true)]
    async fn window_slides_continuously_without_fixed_resets() {
        let w = SlidingWindow::new(2, Duration::from_secs(10));
        w.try_admit(Instant::now());
        tokio::time::advance(Duration::from_secs(6)).await;
        w.try_admit(Instant::now());
        tokio::time::advance(Duration::from_secs(4)).await; // t = 10: the first has left
        assert_eq!(w.try_admit(Instant::now()), Admission::Admitted);
        assert!(matches!(
            w.try_admit(Instant::now()),
            Admission::Full { .. }
        ));
        tokio::time::advance(Duration::from_secs(6)).await; // t = 16: the second has left
        assert_eq!(w.state(Instant::now()).current, 1);
    }

    #[test]
    fn concurrent_admissions_never_exceed_the_limit() {
        let w = Arc::new(SlidingWindow::new(10, Duration::from_secs(60)));
        let now = Instant::now();
        let admitted: usize = std::thread::scope(|s| {
            let handles: Vec<_> = (0..16)
                .map(|_| {
                    let w = Arc::clone(&w);
                    s.spawn(move || {
                        (0..50)
                            .filter(|_| w.try_admit(now) == Admission::Admitted)
                            .count()
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).sum()
        });
        assert_eq!(admitted, 10);
    }

    proptest! {
        /// For any arrival pattern, no interval of the window's length ever holds
        /// more than `limit` admissions.
        #[test]
        fn never_more_than_limit_in_any_window(
            limit in 1u32..8,
            window_ms in 1u64..500,
            gaps in proptest::collection::vec(0u64..200, 1..300),
        ) {
            let window = Duration::from_millis(window_ms);
            let w = SlidingWindow::new(limit, window);
            let start = Instant::now();
            let mut t = start;
            let mut admitted = Vec::new();
            for gap in gaps {
                t += Duration::from_millis(gap);
                if w.try_admit(t) == Admission::Admitted {
                    admitted.push(t);
                }
            }
            for (i, &a) in admitted.iter().enumerate() {
                let in_window = admitted[i..].iter().take_while(|&&b| b.duration_since(a) < window).count();
                prop_assert!(in_window <= limit as usize);
            }
        }
    }
}
