//! SQLite storage: one writer thread that commits in groups, a pool of readers, and a
//! checkpoint thread. The only module that knows SQLite; the relay sees [`EventStore`].

mod apply;
mod backup;
mod checkpoint;
mod jobs;
mod page_cache;
mod query;
mod schema;
mod wal_writes;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use futures_util::future::BoxFuture;
use rusqlite::{Connection, OpenFlags};
use tokio::sync::{mpsc, oneshot};

use super::{
    Accepted, BackupProgress, BackupReport, BatchStats, CommitHook, CommitReply, Committed, EventStore, JobRequests,
    JobRow, JobWrite, JobsSnapshot, MirrorBatch, PendingCommit, PendingMirror, Prune, StoreError, StoredRow,
    UpstreamCursor, Window,
};

pub use apply::{LogBatch, LogReply};
pub use backup::backup_file;
pub use jobs::{report as jobs_report, DeadJob, GroupReport};
pub use page_cache::{install as install_page_cache, skipped_truncations};
pub use wal_writes::{vfs_name as wal_vfs_name, wal_write_counts, WalWriteCounts};

/// Events the writer takes per transaction at most.
pub const MAX_BATCH: usize = 1024;

/// Capacity of the writer's queue: publishers wait (backpressure) when it is full.
const WRITE_QUEUE: usize = 8192;

impl From<rusqlite::Error> for StoreError {
    /// Tells a full disk, a corrupt database and a busy database apart from the rest.
    fn from(error: rusqlite::Error) -> Self {
        use rusqlite::ffi::ErrorCode;
        let text = error.to_string();
        match error.sqlite_error_code() {
            Some(ErrorCode::DiskFull) => StoreError::Full(text),
            Some(ErrorCode::DatabaseCorrupt | ErrorCode::NotADatabase) => StoreError::Corrupt(text),
            Some(ErrorCode::DatabaseBusy | ErrorCode::DatabaseLocked) => StoreError::Busy(text),
            _ => StoreError::Storage(text),
        }
    }
}

enum WriteRequest {
    Insert {
        accepted: Arc<Accepted>,
        reply: CommitReply,
        done: Option<JobRow>,
    },
    Jobs {
        writes: Vec<JobWrite>,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    Prune {
        rule: Prune,
        limit: usize,
        reply: oneshot::Sender<Result<usize, StoreError>>,
    },
    /// Copied events and their upstream's cursor: one unit, never split across batches.
    Mirror {
        events: Vec<(Arc<Accepted>, CommitReply)>,
        cursor: UpstreamCursor,
        reply: oneshot::Sender<Result<(), StoreError>>,
    },
    /// Events from a cluster log with their log seqs and the log cursor (spec §16).
    Log {
        batch: LogBatch,
        reply: LogReply,
    },
}

/// A SQLite event log: cheap to share behind an `Arc`.
pub struct SqliteStore {
    path: PathBuf,
    writes: mpsc::Sender<WriteRequest>,
    readers: Mutex<Vec<Connection>>,
    /// Dropped with the store, which stops the checkpoint thread.
    _checkpoints: std::sync::mpsc::Sender<()>,
}

/// How every connection opens the database file.
const OPEN_FLAGS: OpenFlags =
    OpenFlags::SQLITE_OPEN_READ_WRITE.union(OpenFlags::SQLITE_OPEN_CREATE).union(OpenFlags::SQLITE_OPEN_NO_MUTEX);

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    configured(Connection::open_with_flags(path, OPEN_FLAGS)?)
}

/// The writer's connection: through [`wal_writes`] (a transaction's WAL frames reach the
/// kernel in a few large writes) when SQLite accepted that VFS.
fn open_writer_connection(path: &Path) -> Result<Connection, StoreError> {
    match wal_writes::vfs_name() {
        Some(vfs) => configured(Connection::open_with_flags_and_vfs(path, OPEN_FLAGS, vfs)?),
        None => open_connection(path),
    }
}

fn configured(connection: Connection) -> Result<Connection, StoreError> {
    schema::configure(&connection)?;
    Ok(connection)
}

impl SqliteStore {
    /// Opens (creating and migrating) the database and starts the writer thread.
    /// `hook` runs on the writer thread after each commit, in seq order, before any OK.
    pub fn open(path: &Path, hook: Box<dyn CommitHook>) -> Result<SqliteStore, StoreError> {
        let mut connection = open_writer_connection(path)?;
        schema::migrate(&mut connection)?;
        connection.pragma_update(None, "wal_autocheckpoint", 0)?;
        connection.pragma_update(None, "cache_size", -schema::WRITER_CACHE_KIB)?;
        let (writes, receiver) = mpsc::channel(WRITE_QUEUE);
        writer::spawn(connection, receiver, hook)?;
        let (stop_checkpoints, stop) = std::sync::mpsc::channel();
        checkpoint::spawn(path, stop)?;
        Ok(SqliteStore {
            path: path.to_path_buf(),
            writes,
            readers: Mutex::new(Vec::new()),
            _checkpoints: stop_checkpoints,
        })
    }

    /// Commits events taken from a cluster log (spec §16) with the seqs the log gave them
    /// and the log cursor, in one transaction; the commit hook runs as for any commit.
    /// Returns per event whether it was inserted (false: its id was already stored).
    pub async fn apply_log(&self, batch: LogBatch) -> Result<Vec<bool>, StoreError> {
        let (reply, receiver) = oneshot::channel();
        self.writes.send(WriteRequest::Log { batch, reply }).await.map_err(|_| StoreError::Closed)?;
        receiver.await.map_err(|_| StoreError::Closed)?
    }

    /// The highest seq stored or deleted (SQLite's own counter), whatever its origin.
    pub fn local_last_seq(&self) -> Result<u64, StoreError> {
        self.read(query::last_seq)
    }

    /// Runs `work` on a pooled read connection (blocking: call from a blocking thread).
    fn read<T>(&self, work: impl FnOnce(&Connection) -> Result<T, StoreError>) -> Result<T, StoreError> {
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
}

impl EventStore for SqliteStore {
    fn submit(&self, accepted: Arc<Accepted>) -> BoxFuture<'_, Result<PendingCommit, StoreError>> {
        Box::pin(async move {
            let (reply, pending) = PendingCommit::channel();
            self.writes
                .send(WriteRequest::Insert { accepted, reply, done: None })
                .await
                .map_err(|_| StoreError::Closed)?;
            Ok(pending)
        })
    }

    fn submit_mirrored(&self, batch: MirrorBatch) -> BoxFuture<'_, Result<PendingMirror, StoreError>> {
        Box::pin(async move {
            let (events, pending): (Vec<_>, Vec<_>) = batch
                .events
                .into_iter()
                .map(|accepted| {
                    let (reply, pending) = PendingCommit::channel();
                    ((accepted, reply), pending)
                })
                .unzip();
            let (reply, done) = oneshot::channel();
            self.writes
                .send(WriteRequest::Mirror { events, cursor: batch.cursor, reply })
                .await
                .map_err(|_| StoreError::Closed)?;
            Ok(PendingMirror { events: pending, done })
        })
    }

    fn upstream_cursor(&self, upstream: &str) -> Result<u64, StoreError> {
        self.read(|connection| query::upstream_cursor(connection, upstream))
    }

    fn submit_completing(
        &self,
        accepted: Arc<Accepted>,
        done: JobRow,
    ) -> BoxFuture<'_, Result<PendingCommit, StoreError>> {
        Box::pin(async move {
            let (reply, pending) = PendingCommit::channel();
            let request = WriteRequest::Insert { accepted, reply, done: Some(done) };
            self.writes.send(request).await.map_err(|_| StoreError::Closed)?;
            Ok(pending)
        })
    }

    fn write_jobs(&self, writes: Vec<JobWrite>) -> BoxFuture<'_, Result<(), StoreError>> {
        Box::pin(async move {
            let (reply, receiver) = oneshot::channel();
            self.writes.send(WriteRequest::Jobs { writes, reply }).await.map_err(|_| StoreError::Closed)?;
            receiver.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn load_jobs(&self, now: u64) -> Result<JobsSnapshot, StoreError> {
        self.read(|connection| jobs::load(connection, now))
    }

    fn job_requests(&self, which: JobRequests, now: u64) -> Result<Vec<StoredRow>, StoreError> {
        self.read(|connection| jobs::requests(connection, which, now))
    }

    fn contains(&self, id: &[u8; 32]) -> Result<bool, StoreError> {
        self.read(|connection| jobs::contains(connection, id))
    }

    fn job_request_seqs(&self) -> Result<Vec<u64>, StoreError> {
        self.read(jobs::request_seqs)
    }

    fn prune_batch(&self, rule: Prune, limit: usize) -> BoxFuture<'_, Result<usize, StoreError>> {
        Box::pin(async move {
            let (reply, receiver) = oneshot::channel();
            self.writes.send(WriteRequest::Prune { rule, limit, reply }).await.map_err(|_| StoreError::Closed)?;
            receiver.await.map_err(|_| StoreError::Closed)?
        })
    }

    fn newest(&self, window: &Window<'_>, max_limit: u64) -> Result<Vec<StoredRow>, StoreError> {
        self.read(|connection| {
            query::newest(connection, window.filters, window.viewer, window.snapshot, window.now, max_limit)
        })
    }

    fn replay_page(&self, window: &Window<'_>, page: usize) -> Result<Vec<StoredRow>, StoreError> {
        self.read(|connection| {
            query::replay_page(
                connection,
                window.filters,
                window.viewer,
                window.after,
                window.snapshot,
                window.now,
                page,
            )
        })
    }

    fn last_seq(&self) -> Result<u64, StoreError> {
        self.read(query::last_seq)
    }

    fn admin_log(&self) -> Result<Vec<StoredRow>, StoreError> {
        self.read(query::admin_log)
    }

    fn backup(&self, destination: &Path, progress: &mut dyn FnMut(BackupProgress)) -> Result<BackupReport, StoreError> {
        backup_file(&self.path, destination, progress)
    }

    fn flush(&self) -> Result<(), StoreError> {
        self.read(|connection| {
            connection.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))?;
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_database_is_told_apart_from_other_failures() {
        let dir = tempfile::tempdir().expect("tempdir");
        let connection = open_connection(&dir.path().join("full.db")).expect("open");
        connection.execute_batch("CREATE TABLE filler (data BLOB); PRAGMA max_page_count = 8;").expect("setup");
        let full = (0..64)
            .map(|_| connection.execute("INSERT INTO filler VALUES (zeroblob(4096))", []))
            .find_map(Result::err)
            .expect("the size limit is reached");
        assert!(matches!(StoreError::from(full), StoreError::Full(_)));
        let other = connection.execute("INSERT INTO missing VALUES (1)", []).expect_err("no such table");
        assert!(matches!(StoreError::from(other), StoreError::Storage(_)));
    }

    #[test]
    fn a_file_that_is_not_a_database_is_corrupt() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("garbage.db");
        std::fs::write(&path, vec![0x5a; 8192]).expect("write");
        let error = open_connection(&path)
            .and_then(|connection| Ok(connection.query_row("SELECT count(*) FROM sqlite_schema", [], |_| Ok(()))?))
            .expect_err("not a database");
        assert!(matches!(error, StoreError::Corrupt(_)), "{error:?}");
    }
}
