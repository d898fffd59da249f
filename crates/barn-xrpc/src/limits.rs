//! Per-address rate limiting: a token bucket per client IP.
//!
//! # Tricky bits
//!
//! - The table of buckets is bounded: when it grows past
//!   [`MAX_TRACKED`], buckets that have refilled completely (clients idle
//!   long enough to be indistinguishable from new ones) are dropped, and
//!   if that is not enough the table is cleared: a flood of addresses can
//!   reset limits, never exhaust memory.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::Instant;

/// Buckets kept before pruning.
const MAX_TRACKED: usize = 65_536;

/// Requests per second and burst for each client address.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Requests allowed at once after idling.
    pub burst: f64,
}

#[derive(Debug)]
pub(crate) struct RateLimiter {
    limit: RateLimit,
    buckets: Mutex<HashMap<IpAddr, (f64, Instant)>>,
}

impl RateLimiter {
    pub(crate) fn new(limit: RateLimit) -> RateLimiter {
        RateLimiter {
            limit,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token for `ip`, or says how many seconds until one is free.
    pub(crate) fn check(&self, ip: IpAddr, now: Instant) -> Result<(), u64> {
        let RateLimit { per_second, burst } = self.limit;
        let mut buckets = match self.buckets.lock() {
            Ok(b) => b,
            Err(poisoned) => poisoned.into_inner(),
        };
        if buckets.len() >= MAX_TRACKED && !buckets.contains_key(&ip) {
            buckets.retain(|_, (tokens, at)| {
                *tokens + now.duration_since(*at).as_secs_f64() * per_second < burst
            });
            if buckets.len() >= MAX_TRACKED {
                buckets.clear();
            }
        }
        let (tokens, at) = buckets.entry(ip).or_insert((burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * per_second).min(burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(((1.0 - *tokens) / per_second).ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use std::time::Duration;

    use super::*;

    #[test]
    fn a_burst_then_the_sustained_rate_per_address() {
        let l = RateLimiter::new(RateLimit {
            per_second: 2.0,
            burst: 3.0,
        });
        let a: IpAddr = "127.0.0.1".parse().unwrap();
        let b: IpAddr = "127.0.0.2".parse().unwrap();
        let t = Instant::now();
        for _ in 0..3 {
            l.check(a, t).unwrap();
        }
        assert_eq!(l.check(a, t), Err(1));
        // Another address has its own bucket.
        l.check(b, t).unwrap();
        // Half a second refills one token at 2/s.
        l.check(a, t + Duration::from_millis(500)).unwrap();
        assert!(l.check(a, t + Duration::from_millis(500)).is_err());
    }
}
