//! Cluster metrics (spec §16), served at `/metrics` with the rest.

use prometheus::{Histogram, HistogramOpts, IntGauge, Registry};

/// What a node of a cluster exports about the log.
pub struct ClusterMetrics {
    /// 1 while connected to a NATS server.
    pub connected: IntGauge,
    /// The highest log seq applied to the local index.
    pub applied_seq: IntGauge,
    /// Log seqs known but not yet applied here.
    pub apply_lag: IntGauge,
    /// Time from sending an event to the log to its ack.
    pub publish_seconds: Histogram,
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let gauge = IntGauge::new(name, help).unwrap_or_else(|_| unreachable!("valid metric name {name}"));
    let _ = registry.register(Box::new(gauge.clone()));
    gauge
}

impl ClusterMetrics {
    /// Registers the cluster metrics in `registry` (all zero on a single relay).
    pub fn new(registry: &Registry) -> ClusterMetrics {
        let buckets =
            vec![0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];
        let opts =
            HistogramOpts::new("axon_cluster_publish_seconds", "Time from sending an event to the log to its ack")
                .buckets(buckets);
        let publish_seconds = Histogram::with_opts(opts).unwrap_or_else(|_| unreachable!("valid metric"));
        let _ = registry.register(Box::new(publish_seconds.clone()));
        ClusterMetrics {
            connected: gauge(registry, "axon_cluster_nats_connected", "1 while connected to a NATS server"),
            applied_seq: gauge(registry, "axon_cluster_applied_seq", "Highest log seq applied to the local index"),
            apply_lag: gauge(registry, "axon_cluster_apply_lag", "Log seqs known but not yet applied on this node"),
            publish_seconds,
        }
    }
}
