//! The relay server: sockets, storage, fan-out (spec §6–§11).

pub mod access;
pub mod cluster;
pub mod compact;
pub mod config;
pub mod connection;
pub mod connections;
pub mod console;
pub mod delivery;
pub mod fanout;
pub mod health;
pub mod http;
pub mod ingest;
pub mod jobs;
pub mod keys;
pub mod memory;
pub mod metrics;
pub mod mirror;
pub mod outbound;
pub mod pipeline;
pub mod rate;
pub mod reply;
pub mod retry;
pub mod rewind;
pub mod server;
pub mod store;
pub mod subscriptions;
#[cfg(test)]
mod tests;
pub mod verifier;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use access::Access;
use config::{ConfigError, RelayConfig};
use connections::Connections;
use fanout::Fanout;
use health::Health;
use memory::OutboundBytes;
use metrics::Metrics;
use store::{Answers, BatchStats, CommitHook, Committed, Store, StoreError};

use crate::protocol::kind::is_admin;
use crate::protocol::Event;

/// Why the relay could not start.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The database could not be opened or migrated.
    #[error("database: {0}")]
    Store(#[from] StoreError),
    /// The cluster's log (spec §16) could not be used.
    #[error("cluster: {0}")]
    Cluster(#[from] cluster::ClusterError),
    /// A relay thread (verifier, fan-out) could not be started.
    #[error("cannot start a relay thread: {0}")]
    Thread(#[from] std::io::Error),
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: String,
        /// Why.
        source: std::io::Error,
    },
}

/// Everything the connections share.
pub struct RelayState {
    config: RwLock<Arc<RelayConfig>>,
    /// Admins and allowlist.
    pub access: Arc<Access>,
    /// The database.
    pub store: Store,
    /// Live subscriptions.
    pub fanout: Arc<Fanout>,
    /// Job queues (spec §14).
    pub jobs: Arc<jobs::Jobs>,
    /// Open connections.
    pub connections: Arc<Connections>,
    /// Prometheus metrics.
    pub metrics: Arc<Metrics>,
    /// Publish token buckets per authenticated key.
    pub publish_rate: rate::RateLimiter<crate::protocol::PublicKey>,
    /// Decoded keys of recent authors (verification without decompression).
    pub author_keys: Arc<keys::KeyCache>,
    /// The verifier stage: signatures of published events, batched in bursts.
    pub verifier: verifier::Verifier,
    /// Handshake token buckets per IP.
    pub handshake_rate: rate::RateLimiter<std::net::IpAddr>,
    /// Whether writes succeed (for `/health`).
    pub health: Arc<Health>,
    /// Bytes queued in every connection's outbound queue.
    pub outbound_bytes: Arc<OutboundBytes>,
    /// Upstreams this relay copies from (spec §17).
    pub mirrors: mirror::Mirrors,
    /// The cluster's log behind the store, when this relay is a cluster node (spec §16).
    pub cluster: Option<Arc<cluster::ClusterStore>>,
    serving: AtomicBool,
    next_conn: AtomicU64,
    shutdown: watch::Receiver<bool>,
}

impl RelayState {
    /// The configuration in force.
    pub fn config(&self) -> Arc<RelayConfig> {
        crate::sync::read(&self.config).clone()
    }

    /// A fresh connection id.
    pub fn next_conn_id(&self) -> u64 {
        self.next_conn.fetch_add(1, Ordering::Relaxed)
    }

    /// True while accepting and serving (false while starting or draining).
    pub fn is_serving(&self) -> bool {
        self.serving.load(Ordering::Relaxed)
    }

    /// See [`RelayHandle::reload`].
    pub fn reload(&self, config: RelayConfig) -> Result<(), ConfigError> {
        config.validate()?;
        let current = self.config();
        for (key, changed) in [
            ("addr", config.addr != current.addr),
            ("db", config.db != current.db),
            ("cluster", config.cluster != current.cluster),
        ] {
            if changed {
                return Err(ConfigError::Invalid {
                    key: key.into(),
                    reason: "cannot change while running; restart the relay".into(),
                });
            }
        }
        let mirrors = mirror::prepare(&config.mirrors)?;
        self.access.set_static(config.admin_keys()?, config.allowlist_keys()?);
        *crate::sync::write(&self.config) = Arc::new(config);
        self.connections.kick_disallowed(|key| self.access.is_allowed(key));
        self.mirrors.apply(mirrors);
        Ok(())
    }

    /// A receiver that turns true when shutdown begins.
    pub fn shutdown_signal(&self) -> watch::Receiver<bool> {
        self.shutdown.clone()
    }
}

pub use crate::clock::unix_now;

/// Runs after each commit on the writer thread: admin changes, revokes, job queues, and
/// the hand-over to the fan-out stage (delivery itself runs on that stage's thread).
struct RelayHook {
    access: Arc<Access>,
    delivery: delivery::Delivery,
    jobs: Arc<jobs::Jobs>,
    connections: Arc<Connections>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
}

impl CommitHook for RelayHook {
    fn failed(&mut self, error: &StoreError) {
        self.health.write_failed(error);
    }

    fn committed(&mut self, events: &[Committed], stats: BatchStats) {
        self.health.write_succeeded();
        self.metrics.write_batch_size.observe(stats.requests as f64);
        self.metrics.commit_seconds.observe(stats.elapsed.as_secs_f64());
        for committed in events.iter().filter(|committed| is_admin(committed.accepted.event.kind)) {
            apply_admin_event(&self.access, &self.connections, &committed.accepted.event);
        }
        self.delivery.committed(events);
        self.jobs.committed(events);
    }

    fn answer(&mut self, answers: Answers) {
        // After the fan-out stage delivered the batch: a live subscription on the
        // publisher's own connection gets the EVENT before the OK, as when fan-out ran here.
        self.delivery.answer(answers);
    }
}

/// Applies an ALLOW/REVOKE (already checked at admission) and closes revoked keys.
fn apply_admin_event(access: &Access, connections: &Connections, event: &Event) {
    match access.check_admin_event(event) {
        Ok(change) => connections.kick(&access.apply(&change)),
        Err(error) => tracing::warn!(id = %hex::encode(event.id), %error, "admin event skipped"),
    }
}

/// A running relay.
pub struct RelayHandle {
    /// The bound address (useful with port 0).
    pub local_addr: SocketAddr,
    /// Shared state, for tests and tools.
    pub state: Arc<RelayState>,
    shutdown: watch::Sender<bool>,
    server: tokio::task::JoinHandle<()>,
}

impl RelayHandle {
    /// Deletes expired events and applies the retention rules now (the background task
    /// does this every 30 s). Returns how many events were deleted.
    pub async fn enforce_retention(&self) -> Result<usize, StoreError> {
        server::enforce_retention(&self.state).await
    }

    /// Applies a new configuration (SIGHUP): admins, allowlist, limits and retention take
    /// effect at once; connections of keys no longer allowed are closed (403, then a policy close), all
    /// others stay. `addr` and `db` cannot change while running: a change is refused.
    pub fn reload(&self, config: RelayConfig) -> Result<(), ConfigError> {
        self.state.reload(config)
    }

    /// Begins a graceful shutdown and waits for it to finish (bounded by the drain timeout).
    pub async fn shutdown(self) {
        let _ = self.shutdown.send(true);
        self.state.mirrors.stop_all().await;
        let _ = self.server.await;
        // Fold the WAL into the database file, so the .db file alone is complete.
        let store = self.state.store.clone();
        let folded = tokio::task::spawn_blocking(move || store.checkpoint_truncate()).await;
        if let Ok(Err(error)) = folded {
            tracing::warn!(%error, "final WAL checkpoint failed");
        }
    }
}

/// Opens the database, replays the admin log, binds, and starts serving.
pub async fn start(config: RelayConfig) -> Result<RelayHandle, RelayError> {
    config.validate()?;
    let mirrors = mirror::prepare(&config.mirrors)?;
    let access = Arc::new(Access::new(config.admin_keys()?, config.allowlist_keys()?));
    let metrics = Arc::new(Metrics::new());
    let fanout = Arc::new(Fanout::new(metrics.clone()));
    let connections = Arc::new(Connections::default());
    let health = Arc::new(Health::new(metrics.health_failing.clone()));
    let jobs = Arc::new(jobs::Jobs::new(config.jobs.max_attempts));
    let hook = RelayHook {
        access: access.clone(),
        delivery: delivery::Delivery::start(fanout.clone())?,
        jobs: jobs.clone(),
        connections: connections.clone(),
        metrics: metrics.clone(),
        health: health.clone(),
    };
    let (store, cluster) = open_store(&config, Box::new(hook), metrics.clone()).await?;
    replay_admin_log(&store, &access)?;
    fanout.mark_committed(store.last_seq()?);
    let author_keys = Arc::new(keys::KeyCache::default());
    let verifier = verifier::Verifier::start(author_keys.clone(), metrics.clone())?;
    if let Some(cluster) = &cluster {
        jobs.share(cluster.clone());
        cluster.attach_jobs(Arc::new(jobs::AppliedRecords { jobs: jobs.clone(), store: store.clone() }));
    }
    jobs.load(&store).await?;
    if let Some(cluster) = &cluster {
        cluster.start_applying().await;
        cluster.receive_ephemerals(fanout.clone()).await?;
    }
    let addr = config.addr.clone();
    let listener = tokio::net::TcpListener::bind(&addr).await.map_err(|source| RelayError::Bind { addr, source })?;
    let local_addr = listener.local_addr().map_err(|source| RelayError::Bind { addr: config.addr.clone(), source })?;
    let (shutdown, shutdown_receiver) = watch::channel(false);
    let state = Arc::new(RelayState {
        config: RwLock::new(Arc::new(config)),
        access,
        store: store.clone(),
        fanout,
        jobs: jobs.clone(),
        connections,
        metrics,
        publish_rate: rate::RateLimiter::default(),
        author_keys,
        verifier,
        handshake_rate: rate::RateLimiter::default(),
        health,
        outbound_bytes: Arc::new(OutboundBytes::default()),
        mirrors: mirror::Mirrors::default(),
        cluster,
        serving: AtomicBool::new(true),
        next_conn: AtomicU64::new(1),
        shutdown: shutdown_receiver,
    });
    tokio::spawn(jobs.run(store, state.shutdown_signal()));
    let server = tokio::spawn(server::run(listener, state.clone()));
    state.mirrors.bind(&state);
    state.mirrors.apply(mirrors);
    Ok(RelayHandle { local_addr, state, shutdown, server })
}

/// The event log: the SQLite file, or with `cluster:` the cluster's log in front of it.
async fn open_store(
    config: &RelayConfig,
    hook: Box<dyn CommitHook>,
    metrics: Arc<Metrics>,
) -> Result<(Store, Option<Arc<cluster::ClusterStore>>), RelayError> {
    match &config.cluster {
        None => Ok((Store::open_sqlite(&config.db, hook)?, None)),
        Some(settings) => {
            let cluster = Arc::new(cluster::ClusterStore::open(&config.db, settings, hook, metrics).await?);
            Ok((Store::new(cluster.clone()), Some(cluster)))
        }
    }
}

/// Re-applies every stored ALLOW/REVOKE in seq order.
fn replay_admin_log(store: &Store, access: &Access) -> Result<(), StoreError> {
    for row in store.admin_log()? {
        match Event::decode(&row.raw) {
            Ok(event) => match access.check_admin_event(&event) {
                Ok(change) => {
                    access.apply(&change);
                }
                Err(error) => tracing::warn!(seq = row.seq, %error, "stored admin event no longer applies; skipped"),
            },
            Err(error) => tracing::error!(seq = row.seq, %error, "stored admin event does not decode"),
        }
    }
    Ok(())
}
