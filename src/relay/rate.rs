//! Token buckets keyed by pubkey (publishes) or IP (handshakes).
//!
//! Rate and burst are passed on every call, so a SIGHUP reload changes them at once.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Buckets beyond this many trigger a sweep of the idle (full) ones.
const SWEEP_AT: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// One token bucket per key.
pub struct RateLimiter<K> {
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Copy> Default for RateLimiter<K> {
    fn default() -> Self {
        RateLimiter { buckets: Mutex::new(HashMap::new()) }
    }
}

impl<K: Hash + Eq + Copy> RateLimiter<K> {
    /// Takes one token for `key` if there is one. `per_second` 0 means unlimited;
    /// `burst` 0 means a burst of one second's worth.
    pub fn allow(&self, key: K, per_second: u32, burst: u32, now: Instant) -> bool {
        self.try_take(key, per_second, burst, now).is_ok()
    }

    /// Like [`RateLimiter::allow`], but a refusal says how long until the bucket holds
    /// the next token (the retry hint of spec §15).
    pub fn try_take(&self, key: K, per_second: u32, burst: u32, now: Instant) -> Result<(), Duration> {
        if per_second == 0 {
            return Ok(());
        }
        let capacity = if burst == 0 { per_second } else { burst } as f64;
        let rate = per_second as f64;
        let mut buckets = crate::sync::lock(&self.buckets);
        if buckets.len() >= SWEEP_AT {
            buckets
                .retain(|_, bucket| bucket.tokens + rate * now.duration_since(bucket.updated).as_secs_f64() < capacity);
        }
        let bucket = buckets.entry(key).or_insert(Bucket { tokens: capacity, updated: now });
        let refilled = bucket.tokens + rate * now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = refilled.min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let limiter = RateLimiter::default();
        let start = Instant::now();
        assert!((0..5).all(|_| limiter.allow(1u8, 2, 5, start)));
        assert!(!limiter.allow(1u8, 2, 5, start), "burst spent");
        assert!(limiter.allow(2u8, 2, 5, start), "keys are independent");
        assert!(!limiter.allow(1u8, 2, 5, start + Duration::from_millis(400)));
        assert!(limiter.allow(1u8, 2, 5, start + Duration::from_millis(500)), "one token after 0.5 s at 2/s");
    }

    #[test]
    fn refusal_says_when_the_next_token_comes() {
        let limiter = RateLimiter::default();
        let start = Instant::now();
        assert_eq!(limiter.try_take(1u8, 4, 1, start), Ok(()));
        let wait = limiter.try_take(1u8, 4, 1, start).expect_err("bucket empty");
        assert!((wait.as_secs_f64() - 0.25).abs() < 1e-6, "{wait:?}");
        let later = start + Duration::from_millis(100);
        let wait = limiter.try_take(1u8, 4, 1, later).expect_err("still empty");
        assert!((wait.as_secs_f64() - 0.15).abs() < 1e-6, "{wait:?}");
        assert_eq!(limiter.try_take(1u8, 4, 1, start + Duration::from_millis(250)), Ok(()));
    }

    #[test]
    fn zero_rate_is_unlimited() {
        let limiter = RateLimiter::default();
        assert!((0..10_000).all(|_| limiter.allow(1u8, 0, 0, Instant::now())));
    }
}
