//! WAL checkpoints off the writer thread.
//!
//! SQLite's automatic checkpoint runs inside the COMMIT that crosses the threshold, on the
//! writer, and it is the one step that syncs the database file. The writer turns it off;
//! this thread checkpoints on its own connection instead:
//!
//! - every [`INTERVAL`] a PASSIVE checkpoint copies what it can without blocking anyone;
//! - under a steady stream of commits a PASSIVE checkpoint never catches up with the end
//!   of the log, so SQLite never starts the WAL over and the file grows without bound
//!   (2.6 GB for a 226 MB database after 150,000 events), every append landing on fresh
//!   file pages the kernel must zero first (23 % of the relay's CPU in that profile).
//!   Once the log holds more than [`RESTART_FRAMES`], a RESTART checkpoint copies the few
//!   frames the PASSIVE one left, briefly holding off the writer, so the next commit
//!   writes from the start of the file again. It waits at most [`RESTART_WAIT`] for
//!   readers; a reader holding an old snapshot makes it fall back to PASSIVE until the
//!   next round, so a long query never stalls publishing.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use rusqlite::Connection;

use super::StoreError;

/// How often the WAL is checkpointed.
const INTERVAL: Duration = Duration::from_millis(100);

/// WAL frames (a page each, 4 KiB by default) past which the log is started over.
const RESTART_FRAMES: i64 = 16384;

/// How long a RESTART checkpoint waits for the writer and readers before giving up.
const RESTART_WAIT: Duration = Duration::from_millis(50);

/// The largest WAL file kept on disk after the log starts over (bytes).
pub const WAL_SIZE_LIMIT: i64 = 256 * 1024 * 1024;

/// Starts the checkpointer; it stops once every sender of `stop` is dropped.
pub fn spawn(path: &Path, stop: Receiver<()>) -> Result<(), StoreError> {
    let connection = super::open_connection(path)?;
    connection.busy_timeout(RESTART_WAIT)?;
    let path: PathBuf = path.to_path_buf();
    std::thread::Builder::new()
        .name("axon-checkpoint".into())
        .spawn(move || loop {
            match stop.recv_timeout(INTERVAL) {
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(error) = checkpoint(&connection) {
                        tracing::warn!(%error, db = %path.display(), "WAL checkpoint failed");
                    }
                }
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
        })
        .map(|_| ())
        .map_err(|error| StoreError::Storage(format!("cannot start the checkpoint thread: {error}")))
}

/// One round: PASSIVE, then RESTART if the log has grown past [`RESTART_FRAMES`].
fn checkpoint(connection: &Connection) -> rusqlite::Result<()> {
    let log_frames = run(connection, "PASSIVE")?;
    if log_frames > RESTART_FRAMES {
        run(connection, "RESTART")?;
    }
    Ok(())
}

/// Runs `PRAGMA wal_checkpoint(mode)`; returns the frames in the log (-1 if not WAL).
fn run(connection: &Connection, mode: &str) -> rusqlite::Result<i64> {
    connection.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| row.get(1))
}
