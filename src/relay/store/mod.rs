//! SQLite storage: one writer thread that commits in groups, and a pool of readers.

#[path = "sqlite/checkpoint.rs"]
mod checkpoint;
#[path = "sqlite/query.rs"]
mod query;
#[path = "sqlite/schema.rs"]
mod schema;
#[path = "sqlite/writer.rs"]
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use crate::protocol::{Event, Filter};

pub use query::Viewer;
pub use writer::{BatchStats, CommitHook};

/// Events the writer takes per transaction at most.
pub const MAX_BATCH: usize = 1024;
/// Rows deleted per pruning transaction.
pub const PRUNE_BATCH: usize = 1000;

/// Which stored events to delete. Admin events (9000–9099) are only ever deleted by
/// `Expired`: they are the allowlist's log.
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

/// Capacity of the writer's queue: publishers wait (backpressure) when it is full.
const WRITE_QUEUE: usize = 8192;

/// Why storage could not do what was asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// An event with this id is already stored.
    #[error("an event with this id is already stored")]
    Duplicate,
    /// SQLite failed; nothing of the batch was stored.
    #[error("storage failure: {0}")]
    Storage(String),
    /// The writer has stopped (shutting down).
    #[error("storage is shutting down")]
    Closed,
}

impl From<rusqlite::Error> for StoreError {
    fn from(error: rusqlite::Error) -> Self {
        StoreError::Storage(error.to_string())
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

/// A committed event with its seq.
#[derive(Debug, Clone)]
pub struct Committed {
    /// Relay-assigned, strictly increasing in commit order.
    pub seq: u64,
    /// The event.
    pub accepted: Arc<Accepted>,
}

/// A stored event as returned by a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    /// Its seq.
    pub seq: u64,
    /// Its bytes as received.
    pub raw: Bytes,
}

enum WriteRequest {
    Insert { accepted: Arc<Accepted>, reply: oneshot::Sender<Result<u64, StoreError>> },
    Prune { rule: Prune, limit: usize, reply: oneshot::Sender<Result<usize, StoreError>> },
}

/// The writer's answer to a submitted event, still to come.
pub struct PendingCommit(oneshot::Receiver<Result<u64, StoreError>>);

impl std::future::Future for PendingCommit {
    type Output = Result<u64, StoreError>;

    fn poll(mut self: std::pin::Pin<&mut Self>, context: &mut std::task::Context<'_>) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0).poll(context).map(|answer| answer.unwrap_or(Err(StoreError::Closed)))
    }
}

/// Handle to the database: cheap to clone.
#[derive(Clone)]
pub struct Store {
    path: PathBuf,
    writes: mpsc::Sender<WriteRequest>,
    readers: Arc<Mutex<Vec<Connection>>>,
    /// Dropped with the last clone, which stops the checkpoint thread.
    _checkpoints: Arc<std::sync::mpsc::Sender<()>>,
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let connection = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    schema::configure(&connection)?;
    Ok(connection)
}

impl Store {
    /// Opens (creating and migrating) the database and starts the writer thread.
    /// `hook` runs on the writer thread after each commit, in seq order, before any OK.
    pub fn open(path: &Path, hook: Box<dyn CommitHook>) -> Result<Store, StoreError> {
        let mut connection = open_connection(path)?;
        schema::migrate(&mut connection)?;
        connection.pragma_update(None, "wal_autocheckpoint", 0)?;
        let (writes, receiver) = mpsc::channel(WRITE_QUEUE);
        writer::spawn(connection, receiver, hook)?;
        let (stop_checkpoints, stop) = std::sync::mpsc::channel();
        checkpoint::spawn(path, stop)?;
        Ok(Store {
            path: path.to_path_buf(),
            writes,
            readers: Arc::new(Mutex::new(Vec::new())),
            _checkpoints: Arc::new(stop_checkpoints),
        })
    }

    /// The highest seq ever assigned (0 for an empty log).
    pub fn last_seq(&self) -> Result<u64, StoreError> {
        self.read(query::last_seq)
    }

    /// Stores an event; resolves once it is committed (Ok(seq)) or refused.
    pub async fn insert(&self, accepted: Arc<Accepted>) -> Result<u64, StoreError> {
        self.submit(accepted).await?.await
    }

    /// Queues an event for the writer (waiting for room in the queue) and returns the
    /// pending answer. Events submitted one after another get increasing seqs.
    pub async fn submit(&self, accepted: Arc<Accepted>) -> Result<PendingCommit, StoreError> {
        let (reply, receiver) = oneshot::channel();
        self.writes.send(WriteRequest::Insert { accepted, reply }).await.map_err(|_| StoreError::Closed)?;
        Ok(PendingCommit(receiver))
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
            let (reply, receiver) = oneshot::channel();
            let request = WriteRequest::Prune { rule, limit: PRUNE_BATCH, reply };
            self.writes.send(request).await.map_err(|_| StoreError::Closed)?;
            let deleted = receiver.await.map_err(|_| StoreError::Closed)??;
            total += deleted;
            if deleted < PRUNE_BATCH {
                return Ok(total);
            }
        }
    }

    /// Copies the whole WAL into the database file and empties it (blocking).
    pub fn checkpoint_truncate(&self) -> Result<(), StoreError> {
        self.read(|connection| {
            connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
    }

    /// Runs `work` on a pooled read connection (blocking: call from a blocking thread).
    pub fn read<T>(&self, work: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
        let pooled = self.readers.lock().map_err(|_| StoreError::Storage("reader pool poisoned".into()))?.pop();
        let connection = match pooled {
            Some(connection) => connection,
            None => open_connection(&self.path)?,
        };
        let result = work(&connection);
        if let Ok(mut pool) = self.readers.lock() {
            pool.push(connection);
        }
        result
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
        let store = self.clone();
        blocking(move || {
            store.read(|connection| query::newest(connection, &filters, &viewer, snapshot, now, max_limit))
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
        let store = self.clone();
        blocking(move || {
            store.read(|connection| query::replay_page(connection, &filters, &viewer, after, snapshot, now, page))
        })
        .await
    }

    /// Every stored admin event (kinds 9000–9099) in seq order, for replay at startup.
    pub fn admin_log(&self) -> Result<Vec<StoredRow>, StoreError> {
        self.read(query::admin_log)
    }
}

async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, StoreError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|error| StoreError::Storage(format!("query task failed: {error}")))?
}
