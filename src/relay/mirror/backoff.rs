//! Reconnect delays (spec §15, §17): exponential with jitter, the upstream's retry hint
//! when it gave one, and a slow retry after 401/403.

use std::time::Duration;

use crate::client::retry_delay;

/// The delay before the next attempt.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

/// What the last attempt ended with, as far as the delay is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failure {
    /// Refused by policy (401/403): retried slowly, at the longest delay.
    Refused,
    /// The upstream said when to come back (429/503 `retry_after_ms`).
    Hinted(Duration),
    /// Anything else: the exponential delay.
    Other,
}

impl Backoff {
    /// Starts at `min`, doubling to `max`.
    pub fn new(min: Duration, max: Duration) -> Backoff {
        Backoff { min, max, next: min }
    }

    /// A healthy session: the next failure starts over at `min`.
    pub fn reset(&mut self) {
        self.next = self.min;
    }

    /// The delay after `failure`; the exponential delay doubles.
    pub fn delay(&mut self, failure: Failure) -> Duration {
        let exponential = self.next;
        self.next = (self.next * 2).min(self.max);
        match failure {
            Failure::Refused => retry_delay(None, self.max),
            // At least the hint: never earlier than the upstream asked.
            Failure::Hinted(hint) => hint,
            Failure::Other => retry_delay(None, exponential),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doubles_with_jitter_up_to_the_cap_and_honours_hints() {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));
        let first = backoff.delay(Failure::Other);
        assert!(first >= Duration::from_millis(750) && first <= Duration::from_millis(1250), "{first:?}");
        let second = backoff.delay(Failure::Other);
        assert!(second >= Duration::from_millis(1500) && second <= Duration::from_millis(2500), "{second:?}");
        for _ in 0..20 {
            assert!(backoff.delay(Failure::Other) <= Duration::from_secs(375));
        }
        assert_eq!(backoff.delay(Failure::Hinted(Duration::from_millis(1234))), Duration::from_millis(1234));
        assert!(backoff.delay(Failure::Refused) >= Duration::from_secs(225));
        backoff.reset();
        assert!(backoff.delay(Failure::Other) <= Duration::from_millis(1250));
    }
}
