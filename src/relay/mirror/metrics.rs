//! Per-upstream mirror metrics (spec §17), labelled `upstream` = the configured url.

use prometheus::{IntCounterVec, IntGaugeVec, Opts, Registry};

/// Every mirror metric, one series per upstream (and reason or code).
#[derive(Clone)]
pub struct MirrorMetrics {
    /// 1 while connected and subscribed.
    pub connected: IntGaugeVec,
    /// The last upstream seq stored (the durable cursor).
    pub last_seq: IntGaugeVec,
    /// Highest upstream seq known minus `last_seq`.
    pub lag_events: IntGaugeVec,
    /// Seconds the copy is behind (see docs/operations.md).
    pub lag_seconds: IntGaugeVec,
    /// Events stored locally.
    pub copied: IntCounterVec,
    /// Events not stored, by reason.
    pub skipped: IntCounterVec,
    /// Connection and session errors, by code.
    pub errors: IntCounterVec,
    /// Connection attempts.
    pub attempts: IntCounterVec,
}

fn gauges(registry: &Registry, name: &str, help: &str) -> IntGaugeVec {
    let vec = IntGaugeVec::new(Opts::new(name, help), &["upstream"]).unwrap_or_else(|_| unreachable!("valid {name}"));
    let _ = registry.register(Box::new(vec.clone()));
    vec
}

fn counters(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let vec = IntCounterVec::new(Opts::new(name, help), labels).unwrap_or_else(|_| unreachable!("valid {name}"));
    let _ = registry.register(Box::new(vec.clone()));
    vec
}

impl MirrorMetrics {
    /// Registers the mirror metrics in `registry`.
    pub fn new(registry: &Registry) -> MirrorMetrics {
        MirrorMetrics {
            connected: gauges(registry, "axon_mirror_connected", "1 while the mirror is connected to the upstream"),
            last_seq: gauges(registry, "axon_mirror_last_seq", "Last upstream seq stored for the upstream"),
            lag_events: gauges(registry, "axon_mirror_lag_events", "Upstream seqs known but not yet copied"),
            lag_seconds: gauges(registry, "axon_mirror_lag_seconds", "How far behind the copy is, in seconds"),
            copied: counters(registry, "axon_mirror_events_copied_total", "Events copied and stored", &["upstream"]),
            skipped: counters(
                registry,
                "axon_mirror_events_skipped_total",
                "Events not copied, by reason",
                &["upstream", "reason"],
            ),
            errors: counters(registry, "axon_mirror_errors_total", "Mirror errors, by code", &["upstream", "code"]),
            attempts: counters(registry, "axon_mirror_connect_attempts_total", "Connection attempts", &["upstream"]),
        }
    }

    /// Drops every series of `upstream` (a mirror removed on reload).
    pub fn forget(&self, upstream: &str) {
        for vec in [&self.connected, &self.last_seq, &self.lag_events, &self.lag_seconds] {
            let _ = vec.remove_label_values(&[upstream]);
        }
        let _ = self.copied.remove_label_values(&[upstream]);
        let _ = self.attempts.remove_label_values(&[upstream]);
        // Reason and code series are left: prometheus cannot remove by a partial label set.
    }
}

impl Default for MirrorMetrics {
    fn default() -> Self {
        Self::new(&Registry::new())
    }
}
