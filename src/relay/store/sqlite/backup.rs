//! A consistent online copy of a SQLite event log, also of one a running relay is writing.
//!
//! The copy uses SQLite's backup API inside one read transaction on the source, so it is
//! a single snapshot (WAL mode lets the relay keep committing meanwhile) and the backup
//! never restarts because of concurrent writes. The copy is then switched to a
//! self-contained rollback journal and checked with `PRAGMA integrity_check`.

use std::path::Path;
use std::time::Duration;

use rusqlite::backup::{Backup, StepResult};
use rusqlite::{Connection, OpenFlags};

use super::{BackupProgress, BackupReport, StoreError};

/// Pages copied per backup step (between progress reports).
const PAGES_PER_STEP: i32 = 1024;

/// Copies the database at `source` (which must exist: it is never created) to
/// `destination`, reporting progress in pages; checks the copy before returning.
pub fn backup_file(
    source: &Path,
    destination: &Path,
    progress: &mut dyn FnMut(BackupProgress),
) -> Result<BackupReport, StoreError> {
    let failed = |what: &str, path: &Path, error: rusqlite::Error| {
        let class = StoreError::from(error);
        retag(class, format!("{what} {}", path.display()))
    };
    let source_db =
        Connection::open_with_flags(source, OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX)
            .map_err(|error| failed("cannot open", source, error))?;
    source_db.busy_timeout(Duration::from_secs(10))?;
    // One read transaction for the whole copy: a single consistent snapshot.
    source_db.execute_batch("BEGIN DEFERRED").map_err(|error| failed("cannot read", source, error))?;
    source_db
        .query_row("SELECT count(*) FROM sqlite_schema", [], |row| row.get::<_, i64>(0))
        .map_err(|error| failed("not a readable SQLite database:", source, error))?;
    let mut copy = Connection::open(destination).map_err(|error| failed("cannot create", destination, error))?;
    let copied = copy_pages(&source_db, &mut copy, progress);
    let _ = source_db.execute_batch("COMMIT");
    drop(source_db);
    let pages = copied.map_err(|error| retag(error, format!("backup of {} failed", source.display())))?;
    // A self-contained file: no -wal/-shm beside it.
    copy.pragma_update(None, "journal_mode", "DELETE").map_err(|error| failed("cannot finish", destination, error))?;
    integrity_check(&copy)
        .map_err(|error| retag(error, format!("the backup in {} is damaged", destination.display())))?;
    let events = copy
        .query_row("SELECT count(*), coalesce(max(seq), 0) FROM events", [], |row| {
            Ok((row.get::<_, i64>(0)? as u64, row.get::<_, i64>(1)? as u64))
        })
        .ok();
    Ok(BackupReport { pages, events })
}

/// The same class of error, with `context` in front of its text.
fn retag(error: StoreError, context: String) -> StoreError {
    match error {
        StoreError::Full(text) => StoreError::Full(format!("{context}: {text}")),
        StoreError::Corrupt(text) => StoreError::Corrupt(format!("{context}: {text}")),
        StoreError::Busy(text) => StoreError::Busy(format!("{context}: {text}")),
        StoreError::Storage(text) => StoreError::Storage(format!("{context}: {text}")),
        other => StoreError::Storage(format!("{context}: {other}")),
    }
}

/// Copies every page of `source` into `destination`; returns the page count.
fn copy_pages(
    source: &Connection,
    destination: &mut Connection,
    progress: &mut dyn FnMut(BackupProgress),
) -> Result<u64, StoreError> {
    let backup = Backup::new(source, destination)?;
    loop {
        let step = backup.step(PAGES_PER_STEP)?;
        let state = backup.progress();
        let total = state.pagecount.max(0) as u64;
        progress(BackupProgress { done: (state.pagecount - state.remaining).max(0) as u64, total });
        match step {
            StepResult::Done => return Ok(total),
            StepResult::More => {}
            // The relay holds a lock for a moment (a checkpoint): wait and go on.
            _ => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// `PRAGMA integrity_check`: `Ok(())` when it answers exactly "ok".
fn integrity_check(connection: &Connection) -> Result<(), StoreError> {
    let mut statement = connection.prepare("PRAGMA integrity_check")?;
    let rows = statement.query_map([], |row| row.get::<_, String>(0))?;
    let problems = rows.collect::<Result<Vec<String>, _>>()?;
    if problems == ["ok"] {
        Ok(())
    } else {
        Err(StoreError::Corrupt(format!("integrity_check: {}", problems.join("; "))))
    }
}
