//! WAL checkpoints off the writer thread.
//!
//! SQLite's automatic checkpoint runs inside the COMMIT that crosses the threshold, on the
//! writer, and it is the one step that syncs the database file. The writer turns it off;
//! this thread runs PASSIVE checkpoints (which never block the writer or readers) on its
//! own connection instead.

use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Duration;

use super::StoreError;

/// How often the WAL is checkpointed.
const INTERVAL: Duration = Duration::from_millis(500);

/// Starts the checkpointer; it stops once every sender of `stop` is dropped.
pub fn spawn(path: &Path, stop: Receiver<()>) -> Result<(), StoreError> {
    let connection = super::open_connection(path)?;
    let path: PathBuf = path.to_path_buf();
    std::thread::Builder::new()
        .name("axon-checkpoint".into())
        .spawn(move || loop {
            match stop.recv_timeout(INTERVAL) {
                Err(RecvTimeoutError::Timeout) => {
                    if let Err(error) = connection.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
                        tracing::warn!(%error, db = %path.display(), "WAL checkpoint failed");
                    }
                }
                Ok(()) | Err(RecvTimeoutError::Disconnected) => return,
            }
        })
        .map(|_| ())
        .map_err(|error| StoreError::Storage(format!("cannot start the checkpoint thread: {error}")))
}
