//! Mirrors (spec §17): this relay copies events from other Axon relays. One task per
//! upstream ([`upstream::Upstream`]); [`Mirrors`] starts, stops and replaces them as
//! the configuration says (at startup and on SIGHUP).

pub mod backoff;
pub mod config;
pub mod copy;
pub mod info;
pub mod metrics;
pub mod upstream;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock, Weak};

use ed25519_dalek::SigningKey;
use serde_json::json;
use tokio::sync::watch;

pub use config::MirrorConfig;
pub use metrics::MirrorMetrics;

use super::config::ConfigError;
use super::RelayState;
use crate::protocol::Filter;

/// A mirror entry checked and ready to run: its key read and its filters decoded.
pub struct Prepared {
    config: MirrorConfig,
    key: SigningKey,
    filters: Vec<Filter>,
}

/// Reads every mirror's key file and decodes its filters; errors name the key
/// (`mirrors[i].key`), so a bad entry refuses the whole configuration.
pub fn prepare(mirrors: &[MirrorConfig]) -> Result<Vec<Prepared>, ConfigError> {
    mirrors
        .iter()
        .enumerate()
        .map(|(index, mirror)| {
            let name = format!("mirrors[{index}]");
            Ok(Prepared {
                config: mirror.clone(),
                key: mirror.signing_key(&name)?,
                filters: mirror.wire_filters(&name)?,
            })
        })
        .collect()
}

struct Running {
    config: MirrorConfig,
    /// The public half of the key it runs with (a rewritten key file restarts it).
    public: [u8; 32],
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

/// The running mirrors, by upstream url.
#[derive(Default)]
pub struct Mirrors {
    state: OnceLock<Weak<RelayState>>,
    running: Mutex<HashMap<String, Running>>,
}

impl Mirrors {
    /// Binds to the relay (once, right after it is built).
    pub fn bind(&self, state: &Arc<RelayState>) {
        let _ = self.state.set(Arc::downgrade(state));
    }

    /// Starts new mirrors, stops removed ones and restarts changed ones; unchanged ones
    /// keep their connection.
    pub fn apply(&self, prepared: Vec<Prepared>) {
        let Some(state) = self.state.get().and_then(Weak::upgrade) else { return };
        let mut running = crate::sync::lock(&self.running);
        let wanted: HashMap<String, Prepared> =
            prepared.into_iter().map(|entry| (entry.config.url.clone(), entry)).collect();
        running.retain(|url, mirror| {
            let keep = wanted.get(url).is_some_and(|entry| {
                entry.config == mirror.config && entry.key.verifying_key().to_bytes() == mirror.public
            });
            if !keep {
                let _ = mirror.stop.send(true);
                if wanted.contains_key(url) {
                    // Changed: its replacement reports its own connection.
                    state.metrics.mirrors.connected.with_label_values(&[url]).set(0);
                } else {
                    state.metrics.mirrors.forget(url);
                }
                tracing::info!(upstream = %url, "mirror stopped");
            }
            keep
        });
        for (url, entry) in wanted {
            if running.contains_key(&url) {
                continue;
            }
            let (stop, stopped) = watch::channel(false);
            let public = entry.key.verifying_key().to_bytes();
            let upstream = upstream::Upstream {
                config: entry.config.clone(),
                key: entry.key,
                filters: entry.filters,
                state: state.clone(),
                stop: stopped,
            };
            let task = tokio::spawn(upstream.run());
            tracing::info!(upstream = %url, "mirror started");
            running.insert(url, Running { config: entry.config, public, stop, task });
        }
    }

    /// Stops every mirror and waits for its task to end.
    pub async fn stop_all(&self) {
        let tasks: Vec<_> = crate::sync::lock(&self.running)
            .drain()
            .map(|(_, mirror)| {
                let _ = mirror.stop.send(true);
                mirror.task
            })
            .collect();
        for task in tasks {
            let _ = task.await;
        }
    }

    /// Each upstream's url and state, for the info document (keys are never shown).
    pub fn info(&self, metrics: &MirrorMetrics) -> serde_json::Value {
        let running = crate::sync::lock(&self.running);
        let mut urls: Vec<&String> = running.keys().collect();
        urls.sort();
        let upstreams: Vec<_> = urls
            .into_iter()
            .map(|url| {
                let labels = [url.as_str()];
                json!({
                    "url": url,
                    "connected": metrics.connected.with_label_values(&labels).get() == 1,
                    "last_seq": metrics.last_seq.with_label_values(&labels).get(),
                    "lag_events": metrics.lag_events.with_label_values(&labels).get(),
                    "lag_seconds": metrics.lag_seconds.with_label_values(&labels).get(),
                    "events_copied": metrics.copied.with_label_values(&labels).get(),
                    "connect_attempts": metrics.attempts.with_label_values(&labels).get(),
                    "skipped": by_label(&metrics.skipped, url, "reason"),
                    "errors": by_label(&metrics.errors, url, "code"),
                })
            })
            .collect();
        json!(upstreams)
    }
}

/// One upstream's counts in `vec`, keyed by the value of its label `label`.
fn by_label(vec: &prometheus::IntCounterVec, upstream: &str, label: &str) -> serde_json::Value {
    use prometheus::core::Collector;
    let mut counts = serde_json::Map::new();
    for family in vec.collect() {
        for metric in family.get_metric() {
            let value = |name: &str| {
                metric.get_label().iter().find(|pair| pair.name() == name).map(|pair| pair.value().to_owned())
            };
            if value("upstream").as_deref() == Some(upstream) {
                if let Some(key) = value(label) {
                    counts.insert(key, json!(metric.get_counter().get_value() as u64));
                }
            }
        }
    }
    serde_json::Value::Object(counts)
}
