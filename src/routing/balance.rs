//! The order in which the services of one priority tier are tried (SPEC 9.2).
//! Balancing only orders; eligibility (model, limits, cool-downs, health) is
//! decided afterwards by the failover loop, for each service in this order.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use tokio::time::Instant;

use super::service::Service;
use crate::config::Balancing;

/// Tiers and per-tier rotation counters.
#[derive(Debug)]
pub struct Balancer {
    strategy: Balancing,
    /// Index ranges of equal priority in the (priority-sorted) service list.
    tiers: Vec<Range<usize>>,
    /// Round-robin position of each tier.
    next: Vec<AtomicUsize>,
}

impl Balancer {
    pub fn new(strategy: Balancing, services: &[Arc<Service>]) -> Self {
        let mut tiers: Vec<Range<usize>> = Vec::new();
        for (i, s) in services.iter().enumerate() {
            match tiers.last_mut() {
                Some(t) if services[t.start].config.priority == s.config.priority => t.end = i + 1,
                _ => tiers.push(i..i + 1),
            }
        }
        let next = tiers.iter().map(|_| AtomicUsize::new(0)).collect();
        Self {
            strategy,
            tiers,
            next,
        }
    }

    pub fn strategy(&self) -> Balancing {
        self.strategy
    }

    /// Service indexes in the order to try them; `None` for `ordered`, which is
    /// the configuration order and needs no list.
    pub fn order(&self, services: &[Arc<Service>], now: Instant) -> Option<Vec<usize>> {
        if self.strategy == Balancing::Ordered {
            return None;
        }
        let mut out = Vec::with_capacity(services.len());
        for (t, tier) in self.tiers.iter().enumerate() {
            let len = tier.len();
            if len == 1 {
                out.push(tier.start);
                continue;
            }
            match self.strategy {
                Balancing::Ordered => out.extend(tier.clone()),
                Balancing::RoundRobin => {
                    let start = self.next[t].fetch_add(1, Relaxed) % len;
                    out.extend((start..len).chain(0..start).map(|i| tier.start + i));
                }
                Balancing::Weighted => {
                    let mut pool: Vec<usize> = tier.clone().collect();
                    while !pool.is_empty() {
                        let total: f64 = pool.iter().map(|&i| services[i].config.weight).sum();
                        let mut draw = fastrand::f64() * total;
                        let mut pick = pool.len() - 1;
                        for (k, &i) in pool.iter().enumerate() {
                            draw -= services[i].config.weight;
                            if draw < 0.0 {
                                pick = k;
                                break;
                            }
                        }
                        out.push(pool.remove(pick));
                    }
                }
                Balancing::LeastBusy => {
                    let mut tier_order: Vec<usize> = tier.clone().collect();
                    // Stable: ties keep configuration order.
                    tier_order.sort_by_key(|&i| services[i].in_flight());
                    out.extend(tier_order);
                }
                Balancing::Latency => {
                    let ewma = |i: usize| services[i].latency_ms(now);
                    // Power of two choices for the first; the rest fastest first.
                    let a = tier.start + fastrand::usize(..len);
                    let b = tier.start + (a - tier.start + 1 + fastrand::usize(..len - 1)) % len;
                    let first = if ewma(b) < ewma(a) { b } else { a };
                    let mut rest: Vec<usize> = tier.clone().filter(|&i| i != first).collect();
                    rest.sort_by(|&x, &y| ewma(x).total_cmp(&ewma(y)));
                    out.push(first);
                    out.extend(rest);
                }
            }
        }
        Some(out)
    }
}
