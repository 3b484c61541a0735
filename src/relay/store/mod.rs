//! The event log behind the relay: a storage seam ([`EventStore`]) and the handle the
//! relay holds ([`Store`]). SQLite ([`sqlite::SqliteStore`]) is one implementation.
//!
//! # The contract every [`EventStore`] keeps
//!
//! - **Seq.** Each stored event gets a `seq`, strictly increasing in commit order and never
//!   reused, also after deletions ([`EventStore::last_seq`] counts deleted events too).
//! - **Commit hook.** After each commit the backend calls [`CommitHook::committed`] once
//!   with that commit's events in seq order, on one thread, before it answers any of their
//!   [`PendingCommit`]s — so an OK is never sent before the hook (admin changes, the
//!   hand-over to fan-out) has seen its event, and the hook sees every commit exactly
//!   once, in order.
//! - **Durability.** A [`PendingCommit`] resolves `Ok(seq)` only once the event survives
//!   a crash of the relay process. A failed batch stores nothing of it.
//! - **Order.** Events submitted one after another (each `submit` awaited before the next)
//!   get increasing seqs.
//! - **Duplicates.** An id already stored resolves [`StoreError::Duplicate`] and changes
//!   nothing.
//! - **Queries** apply visibility (spec §9.3, [`crate::protocol::visibility`]), expiry
//!   (spec §4) and the seq window they are given. Query methods block: call them from a
//!   blocking thread ([`Store`] does).

pub mod sqlite;

use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::future::BoxFuture;
use tokio::sync::oneshot;

use crate::protocol::{Event, Filter};

pub use crate::protocol::Viewer;
pub use sqlite::SqliteStore;

/// Rows deleted per pruning transaction.
pub const PRUNE_BATCH: usize = 1000;

/// Which stored events to delete. Admin events are only ever deleted by `Expired`: they
/// are the allowlist's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Prune {
    /// `expires_at` ≤ `now`.
    Expired {
        /// Unix seconds.
        now: u64,
    },
    /// Kinds `first..=last` with `created_at` < `before`.
    OlderThan {
        /// First kind of the range.
        first: u16,
        /// Last kind of the range.
        last: u16,
        /// Unix seconds.
        before: u64,
    },
    /// The oldest (lowest seq) events beyond the newest `keep`.
    Beyond {
        /// How many to keep.
        keep: u64,
    },
}

/// Why storage could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// An event with this id is already stored.
    #[error("an event with this id is already stored")]
    Duplicate,
    /// The disk (or the database's size limit) is full; nothing of the batch was stored.
    #[error("disk full: {0}")]
    Full(String),
    /// The database file is damaged or is not a database.
    #[error("database corrupt: {0}")]
    Corrupt(String),
    /// Another process held the database locked for longer than the busy timeout.
    #[error("database busy: {0}")]
    Busy(String),
    /// Any other storage failure; nothing of the batch was stored.
    #[error("storage failure: {0}")]
    Storage(String),
    /// The writer has stopped (shutting down).
    #[error("storage is shutting down")]
    Closed,
    /// A cluster's log (spec §16) cannot be reached or has not answered in time, or this
    /// node has not yet applied what was asked; nothing was acknowledged. Try again.
    #[error("cluster log unavailable: {0}")]
    Unavailable(String),
}

impl StoreError {
    /// A short name of the failure class, for the operator log and metrics.
    pub fn class(&self) -> &'static str {
        match self {
            StoreError::Duplicate => "duplicate",
            StoreError::Full(_) => "disk-full",
            StoreError::Corrupt(_) => "corrupt",
            StoreError::Busy(_) => "busy",
            StoreError::Storage(_) => "storage",
            StoreError::Closed => "closed",
            StoreError::Unavailable(_) => "log-unavailable",
        }
    }
}

/// An event that passed every check and is ready to be stored and fanned out.
#[derive(Debug)]
pub struct Accepted {
    /// The decoded event.
    pub event: Event,
    /// Its bytes as received; stored and served back unchanged.
    pub raw: Bytes,
    /// From the `expires_at` tag.
    pub expires_at: Option<u64>,
}

/// A job's committed state in one group (spec §14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobRow {
    /// The group.
    pub group: String,
    /// The job request's seq.
    pub job_seq: u64,
    /// Offers made so far.
    pub attempts: u64,
    /// Completed in the group.
    pub done: bool,
    /// Given up after `max_attempts`.
    pub dead: bool,
    /// Unix milliseconds before which it is not offered again (a NACK's delay).
    pub not_before_ms: u64,
}

/// A change to the job queues' committed state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JobWrite {
    /// A new group whose queue starts after `start_seq`.
    Group {
        /// Its name.
        name: String,
        /// Its queue holds jobs with seq > this.
        start_seq: u64,
    },
    /// A job's state in a group (insert or replace).
    State(JobRow),
}

/// What the job queues load at startup.
#[derive(Debug, Clone, Default)]
pub struct JobsSnapshot {
    /// Every group and its start.
    pub groups: Vec<(String, u64)>,
    /// Every recorded job state.
    pub states: Vec<JobRow>,
    /// Every stored, unexpired job request (kinds 5000–5999) that some group may still
    /// offer (after its start, neither done nor dead in it), oldest first.
    pub requests: Vec<StoredRow>,
}

/// Which stored job requests to load ([`EventStore::job_requests`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobRequests {
    /// Every unexpired one with seq > this (a new group's queue).
    After(u64),
    /// The one with this id, if stored, expired or not (a re-queued job: 410 if expired).
    Id([u8; 32]),
}

/// A committed event with its seq.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Relay-assigned, strictly increasing in commit order.
    pub seq: u64,
    /// The event.
    pub accepted: Arc<Accepted>,
}

/// An upstream's position (spec §17): the highest upstream seq a mirror has handled,
/// stored in the same transaction as the events it copied up to there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamCursor {
    /// The upstream, as configured (its `url`).
    pub upstream: String,
    /// The upstream seq every event up to which has been stored or deliberately skipped.
    pub last_seq: u64,
}

/// Events copied from an upstream, to be committed atomically with its new cursor: all of
/// them and the cursor, or nothing. `events` may be empty (the cursor alone advances
/// past events the mirror skipped).
#[derive(Debug)]
pub struct MirrorBatch {
    /// Events to store, in upstream seq order; duplicates by id are dropped.
    pub events: Vec<Arc<Accepted>>,
    /// The cursor to store with them.
    pub cursor: UpstreamCursor,
}

/// The backend's answer to a [`MirrorBatch`], still to come.
pub struct PendingMirror {
    /// One answer per event, as for [`EventStore::submit`].
    pub events: Vec<PendingCommit>,
    /// Resolves once the transaction holding the events and the cursor committed.
    pub done: oneshot::Receiver<Result<(), StoreError>>,
}

impl PendingMirror {
    /// Waits for the commit; then each event's answer: `Some(seq)` stored, `None` a
    /// duplicate.
    pub async fn wait(self) -> Result<Vec<Option<u64>>, StoreError> {
        self.done.await.unwrap_or(Err(StoreError::Closed))?;
        let mut outcomes = Vec::with_capacity(self.events.len());
        for pending in self.events {
            match pending.await {
                Ok(seq) => outcomes.push(Some(seq)),
                Err(StoreError::Duplicate) => outcomes.push(None),
                Err(error) => return Err(error),
            }
        }
        Ok(outcomes)
    }
}

/// A stored event as returned by a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    /// Its seq.
    pub seq: u64,
    /// Its bytes as received.
    pub raw: Bytes,
}

/// Called after a commit, with the batch's events in seq order, before any of them is
/// acknowledged (see the contract above).
pub trait CommitHook: Send + 'static {
    /// The events just committed, and the transaction's size and time.
    fn committed(&mut self, events: &[Committed], stats: BatchStats);

    /// Right after [`CommitHook::committed`], the batch's answers: sends them (the
    /// default), or hands them on so they go out after work the hook started elsewhere
    /// (the relay: after its fan-out stage delivered the events, so a subscriber on the
    /// publisher's own connection gets the EVENT before the OK). A hook that holds them
    /// must run every batch's answers exactly once, in commit order.
    fn answer(&mut self, answers: Answers) {
        answers();
    }

    /// A write batch failed; nothing of it was stored and every request gets `error`.
    fn failed(&mut self, _error: &StoreError) {}
}

/// Sends the answers of one committed batch (see [`CommitHook::answer`]).
pub type Answers = Box<dyn FnOnce() + Send>;

/// What one write transaction did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchStats {
    /// Insert requests in the transaction (duplicates included).
    pub requests: usize,
    /// Time from BEGIN to the end of COMMIT.
    pub elapsed: std::time::Duration,
}

/// The sending half of a [`PendingCommit`], kept by the backend until it answers.
pub type CommitReply = oneshot::Sender<Result<u64, StoreError>>;

/// The backend's answer to a submitted event, still to come.
pub struct PendingCommit(oneshot::Receiver<Result<u64, StoreError>>);

impl PendingCommit {
    /// A pending answer and the reply the backend sends it through.
    pub fn channel() -> (CommitReply, PendingCommit) {
        let (reply, receiver) = oneshot::channel();
        (reply, PendingCommit(receiver))
    }
}

impl std::future::Future for PendingCommit {
    type Output = Result<u64, StoreError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, context: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(context).map(|answer| answer.unwrap_or(Err(StoreError::Closed)))
    }
}

/// Progress of a backup: units (pages for SQLite) copied of the total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupProgress {
    /// Copied so far.
    pub done: u64,
    /// In all.
    pub total: u64,
}

/// What a finished backup holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BackupReport {
    /// Units (pages for SQLite) copied.
    pub pages: u64,
    /// Events in the copy and the highest seq among them; `None` if the copy has no
    /// event log (not an Axon database).
    pub events: Option<(u64, u64)>,
}

/// A stored-phase query (spec §9.2): which filters, who asks, the seq window and the
/// clock for expiry.
#[derive(Debug, Clone, Copy)]
pub struct Window<'a> {
    /// The subscription's filters.
    pub filters: &'a [Filter],
    /// Who asks (visibility, spec §9.3).
    pub viewer: &'a Viewer,
    /// Only events with seq > `after`.
    pub after: u64,
    /// Only events with seq ≤ `snapshot`.
    pub snapshot: u64,
    /// Unix seconds: events with `expires_at` ≤ `now` are left out.
    pub now: u64,
}

/// The storage seam: what the relay needs from an event log (see the module docs for the
/// contract). Methods returning a future run on the backend's writer; the others block.
pub trait EventStore: Send + Sync + 'static {
    /// Queues an event for the writer, waiting for room (backpressure), and returns the
    /// pending answer: `Ok(seq)` once committed and the hook has run.
    fn submit(&self, accepted: Arc<Accepted>) -> BoxFuture<'_, Result<PendingCommit, StoreError>>;

    /// Queues copied events and their upstream's cursor (spec §17) as one unit: they are
    /// committed in one transaction, never split across two. Backends without mirror
    /// support refuse.
    fn submit_mirrored(&self, batch: MirrorBatch) -> BoxFuture<'_, Result<PendingMirror, StoreError>> {
        let _ = batch;
        Box::pin(async { Err(StoreError::Storage("this storage backend does not support mirrors".into())) })
    }

    /// The stored cursor of `upstream` (0 when nothing was copied from it yet).
    fn upstream_cursor(&self, upstream: &str) -> Result<u64, StoreError> {
        let _ = upstream;
        Err(StoreError::Storage("this storage backend does not support mirrors".into()))
    }

    /// Like [`EventStore::submit`], and in the same transaction records `done`, the job
    /// state this event sets (a job it completes, spec §14, or re-queues, kind 9002) —
    /// only if the event is stored.
    fn submit_completing(
        &self,
        accepted: Arc<Accepted>,
        done: JobRow,
    ) -> BoxFuture<'_, Result<PendingCommit, StoreError>>;

    /// Commits job-queue changes in one transaction, ordered with the inserts around it.
    fn write_jobs(&self, writes: Vec<JobWrite>) -> BoxFuture<'_, Result<(), StoreError>>;

    /// The job queues' committed state and the unexpired job requests (blocking).
    fn load_jobs(&self, now: u64) -> Result<JobsSnapshot, StoreError>;

    /// Stored job requests (kinds 5000–5999), oldest first (blocking).
    fn job_requests(&self, which: JobRequests, now: u64) -> Result<Vec<StoredRow>, StoreError>;

    /// True if an event with this id is stored (blocking).
    fn contains(&self, id: &[u8; 32]) -> Result<bool, StoreError>;

    /// The seqs of every stored job request (kinds 5000–5999), ascending (blocking).
    fn job_request_seqs(&self) -> Result<Vec<u64>, StoreError>;

    /// Deletes up to `limit` events `rule` selects, in one short transaction ordered with
    /// the inserts around it; returns how many.
    fn prune_batch(&self, rule: Prune, limit: usize) -> BoxFuture<'_, Result<usize, StoreError>>;

    /// Each filter's newest `limit` events (at most `max_limit`) in the window, merged
    /// without duplicates, newest first (created_at, then seq, descending).
    fn newest(&self, window: &Window<'_>, max_limit: u64) -> Result<Vec<StoredRow>, StoreError>;

    /// Up to `page` events matching any filter in the window, oldest first by seq.
    fn replay_page(&self, window: &Window<'_>, page: usize) -> Result<Vec<StoredRow>, StoreError>;

    /// Resolves once the events with seq ≤ `after` that the log holds are queryable here
    /// (spec §16: a resume from a seq in the log but not yet applied on this node waits,
    /// bounded). A single log always is: the default resolves at once.
    fn caught_up_to(&self, after: u64) -> BoxFuture<'_, Result<(), StoreError>> {
        let _ = after;
        Box::pin(async { Ok(()) })
    }

    /// The highest seq ever assigned (0 for an empty log), deleted events included.
    fn last_seq(&self) -> Result<u64, StoreError>;

    /// Every stored admin event in seq order (replayed at startup, spec §10).
    fn admin_log(&self) -> Result<Vec<StoredRow>, StoreError>;

    /// Writes a consistent copy of the whole log to `destination` while writes go on.
    fn backup(&self, destination: &Path, progress: &mut dyn FnMut(BackupProgress)) -> Result<BackupReport, StoreError>;

    /// Makes the on-disk state self-contained (SQLite: folds the WAL into the file).
    fn flush(&self) -> Result<(), StoreError>;
}

/// The relay's handle to its event log: cheap to clone, async where the relay needs it.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn EventStore>,
}

impl Store {
    /// Wraps a backend.
    pub fn new(backend: Arc<dyn EventStore>) -> Store {
        Store { backend }
    }

    /// Opens (creating and migrating) a SQLite database; `hook` runs after each commit.
    pub fn open_sqlite(path: &Path, hook: Box<dyn CommitHook>) -> Result<Store, StoreError> {
        Ok(Store::new(Arc::new(SqliteStore::open(path, hook)?)))
    }

    /// The highest seq ever assigned (0 for an empty log). Blocking.
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        self.backend.last_seq()
    }

    /// Waits (bounded) until every event with seq ≤ `after` in the log is queryable here;
    /// [`StoreError::Unavailable`] if that does not happen in time.
    pub async fn caught_up_to(&self, after: u64) -> Result<(), StoreError> {
        self.backend.caught_up_to(after).await
    }

    /// Stores an event; resolves once it is committed (Ok(seq)) or refused.
    pub async fn insert(&self, accepted: Arc<Accepted>) -> Result<u64, StoreError> {
        self.submit(accepted).await?.await
    }

    /// Queues an event for the writer (waiting for room in the queue) and returns the
    /// pending answer. Events submitted one after another get increasing seqs.
    pub async fn submit(&self, accepted: Arc<Accepted>) -> Result<PendingCommit, StoreError> {
        self.backend.submit(accepted).await
    }

    /// Queues copied events with their upstream's new cursor, committed together.
    pub async fn submit_mirrored(&self, batch: MirrorBatch) -> Result<PendingMirror, StoreError> {
        self.backend.submit_mirrored(batch).await
    }

    /// The stored cursor of `upstream` (0 if none).
    pub async fn upstream_cursor(&self, upstream: &str) -> Result<u64, StoreError> {
        let backend = self.backend.clone();
        let upstream = upstream.to_owned();
        blocking(move || backend.upstream_cursor(&upstream)).await
    }

    /// Queues an event that completes (spec §14) or re-queues a job: the event and the
    /// job's new state commit in one transaction.
    pub async fn submit_completing(&self, accepted: Arc<Accepted>, done: JobRow) -> Result<PendingCommit, StoreError> {
        self.backend.submit_completing(accepted, done).await
    }

    /// Commits job-queue changes in one transaction.
    pub async fn write_jobs(&self, writes: Vec<JobWrite>) -> Result<(), StoreError> {
        if writes.is_empty() {
            return Ok(());
        }
        self.backend.write_jobs(writes).await
    }

    /// The job queues' committed state (blocking).
    pub fn load_jobs(&self, now: u64) -> Result<JobsSnapshot, StoreError> {
        self.backend.load_jobs(now)
    }

    /// True if an event with this id is stored.
    pub async fn contains(&self, id: [u8; 32]) -> Result<bool, StoreError> {
        let backend = self.backend.clone();
        blocking(move || backend.contains(&id)).await
    }

    /// Stored job requests, oldest first.
    pub async fn job_requests(&self, which: JobRequests) -> Result<Vec<StoredRow>, StoreError> {
        let backend = self.backend.clone();
        blocking(move || backend.job_requests(which, crate::clock::unix_now())).await
    }

    /// The seqs of every stored job request, ascending.
    pub async fn job_request_seqs(&self) -> Result<Vec<u64>, StoreError> {
        let backend = self.backend.clone();
        blocking(move || backend.job_request_seqs()).await
    }

    /// Deletes events whose `expires_at` is ≤ `now`; returns how many.
    pub async fn delete_expired(&self, now: u64) -> Result<usize, StoreError> {
        self.prune(Prune::Expired { now }).await
    }

    /// Deletes every event `rule` selects, in batches of [`PRUNE_BATCH`] rows, each its own
    /// short transaction on the writer, so publishes interleave. Returns how many.
    pub async fn prune(&self, rule: Prune) -> Result<usize, StoreError> {
        let mut total = 0;
        loop {
            let deleted = self.backend.prune_batch(rule, PRUNE_BATCH).await?;
            total += deleted;
            if deleted < PRUNE_BATCH {
                return Ok(total);
            }
        }
    }

    /// Makes the on-disk state self-contained (blocking).
    pub fn checkpoint_truncate(&self) -> Result<(), StoreError> {
        self.backend.flush()
    }

    /// Stored phase without `after_seq` (spec §9.2): each filter's newest `limit` events
    /// with seq ≤ `snapshot`, merged without duplicates, newest first.
    pub async fn query_newest(
        &self,
        filters: Vec<Filter>,
        viewer: Viewer,
        snapshot: u64,
        now: u64,
        max_limit: u64,
    ) -> Result<Vec<StoredRow>, StoreError> {
        let backend = self.backend.clone();
        blocking(move || {
            let window = Window { filters: &filters, viewer: &viewer, after: 0, snapshot, now };
            backend.newest(&window, max_limit)
        })
        .await
    }

    /// Replay (spec §9.2): up to `page` matching events with `after < seq ≤ snapshot`,
    /// oldest first.
    pub async fn query_replay_page(
        &self,
        filters: Arc<Vec<Filter>>,
        viewer: Viewer,
        after: u64,
        snapshot: u64,
        now: u64,
        page: usize,
    ) -> Result<Vec<StoredRow>, StoreError> {
        let backend = self.backend.clone();
        blocking(move || {
            let window = Window { filters: &filters, viewer: &viewer, after, snapshot, now };
            backend.replay_page(&window, page)
        })
        .await
    }

    /// Every stored admin event in seq order, for replay at startup. Blocking.
    pub fn admin_log(&self) -> Result<Vec<StoredRow>, StoreError> {
        self.backend.admin_log()
    }

    /// A consistent copy of the log at `destination` (blocking).
    pub fn backup(
        &self,
        destination: &Path,
        progress: &mut dyn FnMut(BackupProgress),
    ) -> Result<BackupReport, StoreError> {
        self.backend.backup(destination, progress)
    }
}

/// Runs blocking storage work off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| StoreError::Storage(format!("query task failed: {error}")))?
}
