//! Bytes waiting in outbound queues, and giving memory back once they have drained.
//!
//! Every connection's [`Outbound`](super::outbound::Outbound) adds the bytes of the frames
//! it queues and subtracts them when they are written or dropped. glibc's allocator keeps
//! freed memory in its per-thread arenas: after a burst of queued 64 KiB events (several
//! hundred MB for a few never-reading subscribers) most of it stayed in the process. So a
//! background task ([`trim_task`]) asks the allocator to return free pages to the OS once
//! a large backlog has drained, or once many connections (each with its socket buffers)
//! have closed.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// A backlog at least this large is worth trimming after (smaller ones are noise).
pub const TRIM_AFTER_BYTES: usize = 32 * 1024 * 1024;
/// How often the trim task looks.
const TRIM_CHECK: Duration = Duration::from_secs(1);
/// At least this many connections closing (and half of the peak) is worth a trim too.
pub const TRIM_AFTER_CLOSED: i64 = 500;

/// Bytes queued in every connection's outbound queue.
#[derive(Debug, Default)]
pub struct OutboundBytes {
    queued: AtomicUsize,
    /// Highest `queued` since the last trim.
    peak: AtomicUsize,
}

impl OutboundBytes {
    /// Frames of `bytes` were queued.
    pub fn add(&self, bytes: usize) {
        let now = self.queued.fetch_add(bytes, Ordering::Relaxed) + bytes;
        self.peak.fetch_max(now, Ordering::Relaxed);
    }

    /// Frames of `bytes` were written or dropped.
    pub fn sub(&self, bytes: usize) {
        self.queued.fetch_sub(bytes, Ordering::Relaxed);
    }

    /// Bytes queued right now, over all connections.
    pub fn queued(&self) -> usize {
        self.queued.load(Ordering::Relaxed)
    }

    /// True when a backlog of at least [`TRIM_AFTER_BYTES`] has shrunk to under a quarter
    /// of its peak since the last trim; resets the peak when it answers true.
    pub fn drained_since_peak(&self) -> bool {
        let peak = self.peak.load(Ordering::Relaxed);
        let queued = self.queued();
        if peak < TRIM_AFTER_BYTES || queued > peak / 4 {
            return false;
        }
        self.peak.store(queued, Ordering::Relaxed);
        true
    }
}

/// Returns free heap memory to the operating system, where the allocator supports it
/// (glibc's `malloc_trim`; elsewhere a no-op). Returns true if memory was released.
pub fn release_free_memory() -> bool {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        extern "C" {
            fn malloc_trim(pad: usize) -> std::os::raw::c_int;
        }
        // SAFETY: malloc_trim takes no pointers and is thread-safe (it locks each arena);
        // it only releases memory that is already free.
        unsafe { malloc_trim(0) != 0 }
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    {
        false
    }
}

/// Runs until aborted: after a large outbound backlog drains, or after at least
/// [`TRIM_AFTER_CLOSED`] connections (half of the peak) closed, releases free memory.
/// `connections` is the open-connections gauge.
pub async fn trim_task(bytes: Arc<OutboundBytes>, connections: prometheus::IntGauge) {
    let mut interval = tokio::time::interval(TRIM_CHECK);
    let mut connections_peak = 0;
    loop {
        interval.tick().await;
        let open = connections.get();
        connections_peak = connections_peak.max(open);
        let closed = connections_peak - open;
        let many_closed = closed >= TRIM_AFTER_CLOSED && open <= connections_peak / 2;
        if bytes.drained_since_peak() || many_closed {
            connections_peak = open;
            let released = tokio::task::spawn_blocking(release_free_memory).await.unwrap_or(false);
            tracing::debug!(released, queued = bytes.queued(), "outbound backlog drained; trimmed the heap");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_large_backlog_that_drained_asks_for_one_trim() {
        let bytes = OutboundBytes::default();
        bytes.add(TRIM_AFTER_BYTES / 2);
        bytes.sub(TRIM_AFTER_BYTES / 2);
        assert!(!bytes.drained_since_peak(), "a small backlog is not worth a trim");
        bytes.add(TRIM_AFTER_BYTES * 2);
        assert!(!bytes.drained_since_peak(), "still queued");
        bytes.sub(TRIM_AFTER_BYTES * 2 - TRIM_AFTER_BYTES / 4);
        assert_eq!(bytes.queued(), TRIM_AFTER_BYTES / 4);
        assert!(bytes.drained_since_peak(), "drained to an eighth of the peak");
        assert!(!bytes.drained_since_peak(), "one trim per backlog");
    }
}
