//! A cluster of relays on one NATS JetStream log (spec §16).
//!
//! [`ClusterStore`] is an [`EventStore`]: an accepted event is published to the stream
//! (message id = event id, so JetStream deduplicates), its stream seq becomes its `seq`,
//! and the OK waits until this node's applier has put that seq into the local SQLite
//! index. Every node applies the stream in order ([`applier`]) and runs the commit hook
//! (admin changes, fan-out) from what it applied, so every node sees the same events in
//! the same seq order. The local file is derived: deleted, it is rebuilt from the log.

mod applier;
mod config;
mod ephemeral;
mod log;
mod metrics;
mod progress;

use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use futures_util::future::BoxFuture;

use super::jobs::shared::{AppendError, Applied, AppliedJobs, GroupRecord, JobLog, JobRecord};
use super::metrics::Metrics;
use super::store::{
    blocking, Accepted, BackupProgress, BackupReport, CommitHook, EventStore, JobRequests, JobRow, JobWrite,
    JobsSnapshot, PendingCommit, Prune, SqliteStore, StoreError, StoredRow, Window,
};
use applier::Applier;
use ephemeral::Ephemerals;
use log::Log;
use progress::Progress;

pub use config::ClusterConfig;
pub use metrics::ClusterMetrics;

/// How long an OK may wait for the local apply of an event the log acknowledged; past
/// it the publish is answered 503 (a retry is answered 409: the log holds the event).
const APPLY_WAIT: Duration = Duration::from_secs(10);

/// How long a resume (`after_seq`) waits for a seq in the log that is not applied here.
const RESUME_WAIT: Duration = Duration::from_secs(3);

/// Why the cluster's log could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    /// No NATS server could be reached.
    #[error("cannot connect to NATS: {0}")]
    Connect(String),
    /// The stream could not be created or read.
    #[error("JetStream stream: {0}")]
    Stream(String),
    /// A publish failed or was not acknowledged in time.
    #[error("publish to the cluster log: {0}")]
    Publish(String),
    /// Reading the stream failed.
    #[error("reading the cluster log: {0}")]
    Consumer(String),
    /// The local index could not take what was read.
    #[error("applying the cluster log: {0}")]
    Apply(StoreError),
    /// The local index does not derive from this log.
    #[error("{0}")]
    Mismatch(String),
}

impl From<ClusterError> for StoreError {
    fn from(error: ClusterError) -> Self {
        match error {
            ClusterError::Apply(error) => error,
            ClusterError::Mismatch(reason) => StoreError::Storage(reason),
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// A node's view of the cluster, for `/health`, `/info` and `axon cluster status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct ClusterStatus {
    /// Connected to a NATS server.
    pub connected: bool,
    /// The highest log seq applied to the local index.
    pub applied_seq: u64,
    /// The highest log seq this node has seen.
    pub log_seq: u64,
    /// `log_seq - applied_seq`.
    pub lag: u64,
}

/// The storage seam on a cluster's log (see the module docs).
pub struct ClusterStore {
    local: Arc<SqliteStore>,
    log: Arc<Log>,
    progress: Arc<Progress>,
    config: ClusterConfig,
    metrics: Arc<Metrics>,
    ephemerals: Arc<Ephemerals>,
    /// Taken by [`ClusterStore::start_applying`].
    pending_start: Mutex<Option<Applier>>,
    /// This process's name in the leases it records (random per start).
    node: String,
    /// The job queues the applier tells of each record (see [`ClusterStore::attach_jobs`]).
    jobs: Arc<OnceLock<Arc<dyn AppliedJobs>>>,
}

impl ClusterStore {
    /// Opens the local index at `path` (`hook` runs after each applied batch), connects to
    /// NATS and creates the stream if needed. Refuses an index that holds events not from
    /// this log, or that is ahead of it (the stream was recreated): delete the file and
    /// the node rebuilds it from the log.
    pub async fn open(
        path: &Path,
        config: &ClusterConfig,
        hook: Box<dyn CommitHook>,
        metrics: Arc<Metrics>,
    ) -> Result<ClusterStore, ClusterError> {
        let local = Arc::new(SqliteStore::open(path, hook).map_err(ClusterError::Apply)?);
        let cursor = local.upstream_cursor(&config.cursor_name()).map_err(ClusterError::Apply)?;
        let stored = local.local_last_seq().map_err(ClusterError::Apply)?;
        if stored > cursor {
            return Err(ClusterError::Mismatch(format!(
                "{} holds events (up to seq {stored}) that are not from the cluster log (applied through {cursor}); \
                 move it away and the node rebuilds its index from the log",
                path.display()
            )));
        }
        let log = Arc::new(Log::connect(config).await?);
        let log_last = log.last_seq().await?;
        if cursor > log_last {
            return Err(ClusterError::Mismatch(format!(
                "{} applied the log through seq {cursor} but stream {} ends at {log_last} (recreated?); \
                 move the file away and the node rebuilds its index from the log",
                path.display(),
                config.stream
            )));
        }
        let ephemerals = Arc::new(Ephemerals::new(log.client(), &config.stream));
        let progress = Arc::new(Progress::new(cursor));
        progress.saw_log_seq(log_last);
        let jobs = Arc::new(OnceLock::new());
        let applier = Applier {
            log: log.clone(),
            local: local.clone(),
            cursor: config.cursor_name(),
            progress: progress.clone(),
            stream: config.stream.clone(),
            jobs: jobs.clone(),
        };
        Ok(ClusterStore {
            local,
            log,
            progress,
            config: config.clone(),
            metrics,
            ephemerals,
            pending_start: Mutex::new(Some(applier)),
            node: format!("{:016x}", rand::random::<u64>()),
            jobs,
        })
    }

    /// Tells `jobs` of every job and group record applied from now on (call before
    /// [`ClusterStore::start_applying`]).
    pub fn attach_jobs(&self, jobs: Arc<dyn AppliedJobs>) {
        let _ = self.jobs.set(jobs);
    }

    /// Delivers the ephemeral events other nodes accepted to this node's live
    /// subscriptions (spec §5, §16), in a background task.
    pub async fn receive_ephemerals(&self, fanout: Arc<super::fanout::Fanout>) -> Result<(), ClusterError> {
        let messages = self.ephemerals.subscribe().await?;
        tokio::spawn(self.ephemerals.clone().deliver(messages, fanout));
        Ok(())
    }

    /// Sends an ephemeral event this node accepted (and delivered itself) to the others.
    pub async fn send_ephemeral(&self, raw: bytes::Bytes) {
        self.ephemerals.send(raw).await;
    }

    /// Starts applying the log and waits until this node has applied what the log held
    /// when it opened (a new or deleted index is rebuilt here). Call once the relay is
    /// ready for commits (admin log replayed, fan-out set).
    pub async fn start_applying(&self) {
        let Some(applier) = crate::sync::lock(&self.pending_start).take() else {
            return;
        };
        let target = self.progress.log_last();
        tokio::spawn(applier.run());
        let started = Instant::now();
        while !self.progress.wait_applied(target, Duration::from_secs(5)).await {
            tracing::info!(
                applied = self.progress.applied(),
                target,
                elapsed_secs = started.elapsed().as_secs(),
                "catching up with the cluster log"
            );
        }
        tracing::info!(applied = self.progress.applied(), stream = %self.config.stream, "caught up with the cluster log");
    }

    /// This node's view of the cluster (also refreshes the cluster metrics).
    pub fn status(&self) -> ClusterStatus {
        let status = ClusterStatus {
            connected: self.log.connected(),
            applied_seq: self.progress.applied(),
            log_seq: self.progress.log_last(),
            lag: self.progress.lag(),
        };
        let metrics = &self.metrics.cluster;
        metrics.connected.set(i64::from(status.connected));
        metrics.applied_seq.set(status.applied_seq.min(i64::MAX as u64) as i64);
        metrics.apply_lag.set(status.lag.min(i64::MAX as u64) as i64);
        status
    }

    /// `/info`'s `cluster` object: the stream and this node's status.
    pub fn info(&self) -> serde_json::Value {
        let status = self.status();
        serde_json::json!({
            "stream": self.config.stream,
            "replicas": self.config.replicas,
            "nats_connected": status.connected,
            "applied_seq": status.applied_seq,
            "log_seq": status.log_seq,
            "lag": status.lag,
        })
    }

    /// Publishes an event to the log and returns the pending OK: the seq once applied
    /// here, [`StoreError::Duplicate`] if the log or the index already held it.
    async fn publish(&self, accepted: Arc<Accepted>) -> Result<PendingCommit, StoreError> {
        let id = accepted.event.id;
        let local = self.local.clone();
        if blocking(move || local.contains(&id)).await? {
            return Ok(answered(Err(StoreError::Duplicate)));
        }
        let started = Instant::now();
        let sent = self.log.publish(&id, accepted.raw.clone()).await?;
        let (reply, pending) = PendingCommit::channel();
        let progress = self.progress.clone();
        let metrics = self.metrics.clone();
        tokio::spawn(async move {
            let outcome = confirm(sent, &progress, started, &metrics).await;
            let _ = reply.send(outcome);
        });
        Ok(pending)
    }
}

/// The log's failure as the job queues see it.
fn append_failure(failure: log::AppendFailure) -> AppendError {
    match failure {
        log::AppendFailure::Conflict => AppendError::Conflict,
        log::AppendFailure::Unavailable(reason) => AppendError::Unavailable(reason),
    }
}

fn encoding_failure(error: rmp_serde::encode::Error) -> AppendError {
    AppendError::Unavailable(format!("encoding a job record: {error}"))
}

impl JobLog for ClusterStore {
    fn node(&self) -> &str {
        &self.node
    }

    fn create_group<'a>(&'a self, name: &'a str, start: u64) -> BoxFuture<'a, Result<u64, AppendError>> {
        Box::pin(async move {
            let subject = self.config.group_subject(name);
            let record = GroupRecord { name: name.to_owned(), start };
            let payload = record.encode().map_err(encoding_failure)?;
            match self.log.append(subject.clone(), payload.into(), 0, None).await {
                Ok(appended) => {
                    self.progress.saw_log_seq(appended.seq);
                    Ok(appended.seq)
                }
                // Created by another node (or SUBSCRIBE) first: its record stands.
                Err(log::AppendFailure::Conflict) => match self.log.last_on(&subject).await {
                    Ok(Some((seq, _))) => Ok(seq),
                    Ok(None) => Err(AppendError::Unavailable(format!("group record on {subject} vanished"))),
                    Err(error) => Err(AppendError::Unavailable(error.to_string())),
                },
                Err(failure) => Err(append_failure(failure)),
            }
        })
    }

    fn append(
        &self,
        record: JobRecord,
        expected: u64,
        event: Option<Arc<Accepted>>,
    ) -> BoxFuture<'_, Result<u64, AppendError>> {
        Box::pin(async move {
            let subject = self.config.job_subject(&record.group, record.job_seq);
            let payload = record.encode().map_err(encoding_failure)?;
            let message_id = event.map(|accepted| hex::encode(accepted.event.id));
            let started = Instant::now();
            let appended =
                self.log.append(subject, payload.into(), expected, message_id).await.map_err(append_failure)?;
            self.metrics.cluster.publish_seconds.observe(started.elapsed().as_secs_f64());
            self.progress.saw_log_seq(appended.seq);
            if appended.duplicate {
                return Err(AppendError::Duplicate);
            }
            Ok(appended.seq)
        })
    }

    fn latest<'a>(&'a self, group: &'a str, job_seq: u64) -> BoxFuture<'a, Result<Option<Applied>, AppendError>> {
        Box::pin(async move {
            let subject = self.config.job_subject(group, job_seq);
            let last = self.log.last_on(&subject).await.map_err(|error| AppendError::Unavailable(error.to_string()))?;
            let Some((seq, payload)) = last else { return Ok(None) };
            let record = JobRecord::decode(&payload)
                .map_err(|error| AppendError::Unavailable(format!("job record at seq {seq}: {error}")))?;
            Ok(Some(Applied::Job { seq, record }))
        })
    }

    fn applied(&self, seq: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if !self.progress.wait_applied(seq, APPLY_WAIT).await {
                return Err(StoreError::Unavailable(format!(
                    "seq {seq} is in the cluster log but not yet applied on this node"
                )));
            }
            if self.progress.was_duplicate(seq) {
                return Err(StoreError::Duplicate);
            }
            Ok(())
        })
    }
}

/// `/health` of a cluster node whose storage is fine: 200 while connected to NATS, else
/// 503 (it cannot acknowledge anything); the body names the applied seq and the lag.
pub fn health(status: &ClusterStatus) -> (u16, String) {
    let details = format!(
        "nats: {}\napplied_seq: {}\nlog_seq: {}\nlag: {}\n",
        if status.connected { "connected" } else { "disconnected" },
        status.applied_seq,
        status.log_seq,
        status.lag
    );
    if status.connected {
        (200, format!("ok\n{details}"))
    } else {
        (503, format!("unavailable: not connected to the cluster log (NATS)\n{details}"))
    }
}

/// The log's ack, then the local apply, then the answer.
async fn confirm(
    sent: log::Pending,
    progress: &Progress,
    started: Instant,
    metrics: &Metrics,
) -> Result<u64, StoreError> {
    let appended = sent.confirmed().await?;
    metrics.cluster.publish_seconds.observe(started.elapsed().as_secs_f64());
    progress.saw_log_seq(appended.seq);
    if appended.duplicate {
        return Err(StoreError::Duplicate);
    }
    if !progress.wait_applied(appended.seq, APPLY_WAIT).await {
        return Err(StoreError::Unavailable(format!(
            "the event is in the cluster log (seq {}) but not yet applied on this node",
            appended.seq
        )));
    }
    if progress.was_duplicate(appended.seq) {
        return Err(StoreError::Duplicate);
    }
    Ok(appended.seq)
}

/// A pending answer that is already known.
fn answered(outcome: Result<u64, StoreError>) -> PendingCommit {
    let (reply, pending) = PendingCommit::channel();
    let _ = reply.send(outcome);
    pending
}

impl EventStore for ClusterStore {
    fn submit(&self, accepted: Arc<Accepted>) -> BoxFuture<'_, Result<PendingCommit, StoreError>> {
        Box::pin(self.publish(accepted))
    }

    fn submit_completing(
        &self,
        accepted: Arc<Accepted>,
        done: JobRow,
    ) -> BoxFuture<'_, Result<PendingCommit, StoreError>> {
        let _ = (accepted, done);
        Box::pin(async {
            Err(StoreError::Storage("on a cluster, job states go through the log's job records (JobLog)".into()))
        })
    }

    fn write_jobs(&self, writes: Vec<JobWrite>) -> BoxFuture<'_, Result<(), StoreError>> {
        self.local.write_jobs(writes)
    }

    fn load_jobs(&self, now: u64) -> Result<JobsSnapshot, StoreError> {
        self.local.load_jobs(now)
    }

    fn job_requests(&self, which: JobRequests, now: u64) -> Result<Vec<StoredRow>, StoreError> {
        self.local.job_requests(which, now)
    }

    fn contains(&self, id: &[u8; 32]) -> Result<bool, StoreError> {
        self.local.contains(id)
    }

    fn job_request_seqs(&self) -> Result<Vec<u64>, StoreError> {
        self.local.job_request_seqs()
    }

    fn prune_batch(&self, rule: Prune, limit: usize) -> BoxFuture<'_, Result<usize, StoreError>> {
        self.local.prune_batch(rule, limit)
    }

    fn newest(&self, window: &Window<'_>, max_limit: u64) -> Result<Vec<StoredRow>, StoreError> {
        self.local.newest(window, max_limit)
    }

    fn replay_page(&self, window: &Window<'_>, page: usize) -> Result<Vec<StoredRow>, StoreError> {
        self.local.replay_page(window, page)
    }

    fn caught_up_to(&self, after: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            if after <= self.progress.applied() {
                return Ok(());
            }
            // Only the log knows whether `after` is in it (wait) or beyond its end (as on
            // one relay: nothing stored to send, then live events).
            let log_last = self.log.last_seq().await?;
            self.progress.saw_log_seq(log_last);
            let target = after.min(log_last);
            if self.progress.wait_applied(target, RESUME_WAIT).await {
                return Ok(());
            }
            Err(StoreError::Unavailable(format!(
                "seq {target} is in the cluster log but this node has applied only through {}",
                self.progress.applied()
            )))
        })
    }

    fn last_seq(&self) -> Result<u64, StoreError> {
        Ok(self.progress.applied())
    }

    fn admin_log(&self) -> Result<Vec<StoredRow>, StoreError> {
        self.local.admin_log()
    }

    fn backup(&self, destination: &Path, progress: &mut dyn FnMut(BackupProgress)) -> Result<BackupReport, StoreError> {
        self.local.backup(destination, progress)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.local.flush()
    }
}
