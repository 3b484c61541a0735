//! Prometheus metrics served at `GET /metrics` (spec §11). One registry per relay, so
//! several relays in one process (tests) do not share counters.

use std::path::Path;

use crate::protocol::ErrorCode;
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Every metric the relay exports.
pub struct Metrics {
    registry: Registry,
    /// Open WebSocket connections.
    pub connections: IntGauge,
    /// Connections that completed AUTH.
    pub authenticated: IntGauge,
    /// Live subscriptions (set at scrape time).
    pub subscriptions: IntGauge,
    /// Events acknowledged with OK.
    pub events_accepted: IntCounter,
    /// Events rejected, by error code.
    pub events_rejected: IntCounterVec,
    /// EVENT frames queued to live subscriptions.
    pub deliveries: IntCounter,
    /// Subscriptions ended by overflow.
    pub overflows: IntCounter,
    /// Events per write transaction.
    pub write_batch_size: Histogram,
    /// Signatures per verifier pass (1 = checked singly).
    pub verify_batch_size: Histogram,
    /// Time to insert and commit one write transaction.
    pub commit_seconds: Histogram,
    /// Time to run one stored query (a subscription's stored phase or a replay page).
    pub query_seconds: Histogram,
    /// Size of the database file plus its WAL (set at scrape time).
    pub database_bytes: IntGauge,
    /// 1 while the relay is unhealthy for the labelled reason (`storage`: writes fail).
    pub health_failing: IntGaugeVec,
    /// Bytes waiting in outbound queues over all connections (set at scrape time).
    pub outbound_bytes: IntGauge,
    /// Per-upstream mirror state (spec §17).
    pub mirrors: super::mirror::MirrorMetrics,
    /// Job queues per group and state (pending, leased, done, dead, redeliveries).
    pub jobs: IntGaugeVec,
    /// Job requests held in memory (those some group may still offer).
    pub job_requests_held: IntGauge,
    /// A cluster node's log state (spec §16).
    pub cluster: super::cluster::ClusterMetrics,
}

fn register<T: prometheus::core::Collector + Clone + 'static>(registry: &Registry, metric: T) -> T {
    // Names are unique constants below, so registration cannot collide.
    let _ = registry.register(Box::new(metric.clone()));
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    register(registry, IntGauge::new(name, help).unwrap_or_else(|_| unreachable!("valid metric name {name}")))
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    register(registry, IntCounter::new(name, help).unwrap_or_else(|_| unreachable!("valid metric name {name}")))
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let opts = HistogramOpts::new(name, help).buckets(buckets);
    register(registry, Histogram::with_opts(opts).unwrap_or_else(|_| unreachable!("valid metric name {name}")))
}

/// Latency buckets from 50 µs to 5 s.
fn latency_buckets() -> Vec<f64> {
    vec![0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0]
}

impl Metrics {
    /// A fresh registry with every metric at zero.
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let rejected =
            IntCounterVec::new(Opts::new("axon_events_rejected_total", "Events rejected, by error code"), &["code"])
                .unwrap_or_else(|_| unreachable!("valid metric"));
        Metrics {
            connections: gauge(&registry, "axon_connections", "Open WebSocket connections"),
            authenticated: gauge(&registry, "axon_authenticated_connections", "Connections that completed AUTH"),
            subscriptions: gauge(&registry, "axon_subscriptions", "Live subscriptions"),
            events_accepted: counter(&registry, "axon_events_accepted_total", "Events acknowledged with OK"),
            events_rejected: register(&registry, zeroed_by_code(rejected)),
            deliveries: counter(&registry, "axon_fanout_deliveries_total", "EVENT frames queued to live subscriptions"),
            overflows: counter(&registry, "axon_subscription_overflows_total", "Subscriptions ended by overflow"),
            write_batch_size: histogram(
                &registry,
                "axon_write_batch_events",
                "Events per write transaction",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0],
            ),
            verify_batch_size: histogram(
                &registry,
                "axon_verify_batch_events",
                "Signatures per verifier pass (1 = checked singly)",
                vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0],
            ),
            commit_seconds: histogram(
                &registry,
                "axon_commit_seconds",
                "Insert and commit time of one write transaction",
                latency_buckets(),
            ),
            query_seconds: histogram(&registry, "axon_query_seconds", "Stored query time", latency_buckets()),
            database_bytes: gauge(&registry, "axon_database_bytes", "Database file plus WAL, in bytes"),
            health_failing: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new(
                        "axon_health_failing",
                        "1 while /health answers 503 for this reason (storage: writes fail)",
                    ),
                    &["reason"],
                )
                .unwrap_or_else(|_| unreachable!("valid metric")),
            ),
            outbound_bytes: gauge(&registry, "axon_outbound_bytes", "Bytes queued in outbound queues, all connections"),
            mirrors: super::mirror::MirrorMetrics::new(&registry),
            cluster: super::cluster::ClusterMetrics::new(&registry),
            jobs: register(
                &registry,
                IntGaugeVec::new(
                    Opts::new("axon_jobs", "Job queues (spec 14): jobs per group and state; redeliveries since start"),
                    &["group", "state"],
                )
                .unwrap_or_else(|_| unreachable!("valid metric")),
            ),
            job_requests_held: gauge(
                &registry,
                "axon_job_requests_held",
                "Job requests held in memory for the queues (those some group may still offer)",
            ),
            registry,
        }
    }

    /// Counts a rejected event.
    pub fn rejected(&self, code: ErrorCode) {
        self.events_rejected.with_label_values(&[&code.as_u16().to_string()]).inc();
    }

    /// Sets one job group's gauges.
    pub fn job_counts(&self, group: &str, counts: &crate::relay::jobs::queue::GroupCounts) {
        let values = [
            ("pending", counts.pending),
            ("leased", counts.leased),
            ("done", counts.done),
            ("dead", counts.dead),
            ("redeliveries", counts.redeliveries),
        ];
        for (state, value) in values {
            self.jobs.with_label_values(&[group, state]).set(value as i64);
        }
    }

    /// The Prometheus text exposition, with scrape-time gauges refreshed.
    pub fn render(&self, database: &Path, subscriptions: usize) -> String {
        let size = |path: &Path| std::fs::metadata(path).map(|meta| meta.len()).unwrap_or(0);
        let mut wal = database.as_os_str().to_owned();
        wal.push("-wal");
        self.database_bytes.set((size(database) + size(Path::new(&wal))) as i64);
        self.subscriptions.set(subscriptions as i64);
        let mut buffer = Vec::new();
        if TextEncoder::new().encode(&self.registry.gather(), &mut buffer).is_err() {
            return String::new();
        }
        String::from_utf8(buffer).unwrap_or_default()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// Creates every code's series at 0, so each appears in `/metrics` from the start
/// (Prometheus convention: a rate over a series that appears late misses its first step).
fn zeroed_by_code(counters: IntCounterVec) -> IntCounterVec {
    for code in ErrorCode::ALL {
        counters.with_label_values(&[&code.as_u16().to_string()]);
    }
    counters
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejection_code_is_exported_at_zero_from_the_start() {
        let text = Metrics::new().render(Path::new("/nonexistent/axon.db"), 0);
        for code in ErrorCode::ALL {
            let line = format!("axon_events_rejected_total{{code=\"{}\"}} 0", code.as_u16());
            assert!(text.contains(&line), "{line} missing");
        }
    }
}
