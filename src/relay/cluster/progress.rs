//! How far this node applied the log, shared by the applier (which advances it) and the
//! publishes and resumes waiting for it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use tokio::sync::watch;

/// How long a log seq applied as a duplicate is remembered for the publish waiting on it.
const DUPLICATE_MEMORY: Duration = Duration::from_secs(60);

/// The applied seq (a watch, so waiters wake), the log's last seq as last seen, and the
/// recent seqs whose event was already stored (a copy that got into the log twice).
pub struct Progress {
    applied: watch::Sender<u64>,
    log_last: AtomicU64,
    duplicates: Mutex<VecDeque<(u64, Instant)>>,
}

impl Progress {
    /// Applied through `applied` (the stored cursor).
    pub fn new(applied: u64) -> Progress {
        Progress {
            applied: watch::Sender::new(applied),
            log_last: AtomicU64::new(applied),
            duplicates: Mutex::new(VecDeque::new()),
        }
    }

    /// The highest log seq applied to the local index.
    pub fn applied(&self) -> u64 {
        *self.applied.borrow()
    }

    /// The highest log seq seen so far (at least the applied one).
    pub fn log_last(&self) -> u64 {
        self.log_last.load(Ordering::Relaxed).max(self.applied())
    }

    /// The log holds at least `seq`.
    pub fn saw_log_seq(&self, seq: u64) {
        self.log_last.fetch_max(seq, Ordering::Relaxed);
    }

    /// Log seqs known but not applied here.
    pub fn lag(&self) -> u64 {
        self.log_last().saturating_sub(self.applied())
    }

    /// Everything through `seq` is applied; `duplicates` were not inserted (known ids).
    pub fn advance(&self, seq: u64, duplicates: impl Iterator<Item = u64>) {
        let now = Instant::now();
        {
            let mut remembered = crate::sync::lock(&self.duplicates);
            while remembered.front().is_some_and(|(_, at)| now.duration_since(*at) > DUPLICATE_MEMORY) {
                remembered.pop_front();
            }
            remembered.extend(duplicates.map(|seq| (seq, now)));
        }
        self.saw_log_seq(seq);
        self.applied.send_modify(|applied| *applied = (*applied).max(seq));
    }

    /// True if the event at log seq `seq` was applied as a duplicate (within the last
    /// minute).
    pub fn was_duplicate(&self, seq: u64) -> bool {
        crate::sync::lock(&self.duplicates).iter().any(|(duplicate, _)| *duplicate == seq)
    }

    /// Waits until `seq` is applied, at most `timeout`; true if it is.
    pub async fn wait_applied(&self, seq: u64, timeout: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        let reached = tokio::time::timeout(timeout, applied.wait_for(|applied| *applied >= seq)).await;
        matches!(reached, Ok(Ok(_)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn waiters_wake_when_their_seq_is_applied_and_duplicates_are_remembered() {
        let progress = std::sync::Arc::new(Progress::new(3));
        assert!(progress.wait_applied(3, Duration::ZERO).await);
        let waiter = tokio::spawn({
            let progress = progress.clone();
            async move { progress.wait_applied(7, Duration::from_secs(30)).await }
        });
        progress.saw_log_seq(9);
        assert_eq!(progress.lag(), 6);
        progress.advance(7, [5].into_iter());
        assert!(waiter.await.expect("waiter"));
        assert!(progress.was_duplicate(5) && !progress.was_duplicate(6));
        assert_eq!((progress.applied(), progress.lag()), (7, 2));
        assert!(!progress.wait_applied(8, Duration::from_millis(1)).await);
    }
}
