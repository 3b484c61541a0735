//! The writer's WAL VFS (`relay::store::sqlite::wal_vfs_name`): a transaction's frames
//! reach the file in a few writes, every commit is on the file when SQLite returns from it
//! (another connection, on SQLite's own VFS, sees exactly the committed rows), and
//! spills, rewrites of frames, rollbacks, checkpoints that start the WAL over, and a WAL
//! left by an earlier connection all leave the database whole.
//!
//! Its own test binary: the counts it checks are the process's.
#![cfg(feature = "relay")]

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Mutex;

use axon_relay::relay::store::sqlite::{wal_vfs_name, wal_write_counts};
use rusqlite::{params, Connection, OpenFlags};
use sha2::{Digest, Sha256};

/// The tests run one at a time: the counts are the process's.
static ONE_AT_A_TIME: Mutex<()> = Mutex::new(());

/// A pseudo-random 32-byte key: inserts land all over the table and dirty many pages.
fn key(counter: u64) -> Vec<u8> {
    Sha256::digest(counter.to_le_bytes()).to_vec()
}

/// A connection through the VFS, as the relay's writer opens it, with `cache_pages` pages
/// of cache.
fn open_writer(path: &Path, cache_pages: i64) -> Connection {
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_CREATE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let connection = Connection::open_with_flags_and_vfs(path, flags, wal_vfs_name().expect("the VFS registers"))
        .expect("open through the VFS");
    connection.pragma_update(None, "journal_mode", "WAL").expect("wal");
    connection.pragma_update(None, "synchronous", "NORMAL").expect("normal");
    connection.pragma_update(None, "wal_autocheckpoint", 0).expect("no autocheckpoint");
    connection.pragma_update(None, "cache_size", cache_pages).expect("cache size");
    connection
}

/// What another connection (SQLite's default VFS, its own file descriptors) sees.
fn rows_seen(reader: &Connection) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let mut statement = reader.prepare_cached("SELECT k, v FROM rows").expect("select");
    let rows = statement.query_map([], |row| Ok((row.get(0)?, row.get(1)?))).expect("query");
    rows.collect::<Result<_, _>>().expect("read")
}

fn integrity(connection: &Connection) -> String {
    connection.query_row("PRAGMA integrity_check", [], |row| row.get(0)).expect("integrity_check")
}

/// Inserts `count` rows (values of `size` bytes) and updates `updates` earlier ones, in
/// the model too; the caller commits or rolls back.
fn write_rows(
    transaction: &rusqlite::Transaction<'_>,
    model: &mut BTreeMap<Vec<u8>, Vec<u8>>,
    counter: &mut u64,
    count: usize,
    size: usize,
) {
    for _ in 0..count {
        *counter += 1;
        let value = vec![(*counter % 251) as u8; size];
        transaction.execute("INSERT INTO rows (k, v) VALUES (?1, ?2)", params![key(*counter), value]).expect("insert");
        model.insert(key(*counter), value);
    }
}

#[test]
fn commits_reach_the_file_in_a_few_writes_and_are_seen_at_once() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("gather.db");
    let mut writer = open_writer(&path, -32 * 1024);
    writer.execute_batch("CREATE TABLE rows (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID").expect("schema");
    let reader = Connection::open(&path).expect("reader");
    let before = wal_write_counts();
    let (mut model, mut counter) = (BTreeMap::new(), 0);
    // One row, a few dozen, and a few thousand (several MiB: past the flush threshold
    // and the wrapped VFS's per-write limit).
    for (round, count) in [1, 40, 3000, 1, 200, 5000, 7].into_iter().enumerate() {
        let transaction = writer.transaction().expect("begin");
        write_rows(&transaction, &mut model, &mut counter, count, 700);
        transaction.commit().expect("commit");
        assert_eq!(rows_seen(&reader), model, "round {round}: the commit is on the file");
        if round == 3 {
            // A full checkpoint by another connection: the writer starts the WAL over.
            let busy: i64 = reader.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |row| row.get(0)).expect("ckpt");
            assert_eq!(busy, 0, "the checkpoint completed");
        }
    }
    let after = wal_write_counts();
    assert_eq!(after.commits - before.commits, 7, "each commit's frames went on with its commit frame");
    assert_eq!(after.late, before.late, "no other call found frames still gathered");
    let (received, passed_on) = (after.received - before.received, after.passed_on - before.passed_on);
    assert!(received > 4000, "SQLite wrote the frames through the VFS ({received} writes)");
    println!("{received} WAL writes reached the kernel as {passed_on}");
    assert!(passed_on * 20 < received, "{received} writes reached the kernel as {passed_on}");
    assert_eq!(integrity(&writer), "ok");
    assert_eq!(integrity(&reader), "ok");
}

#[test]
fn spills_rewrites_rollbacks_and_a_left_wal_keep_the_database_whole() {
    let _alone = ONE_AT_A_TIME.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("spill.db");
    // A cache of 16 pages: a transaction of a few hundred rows spills frames to the WAL
    // before its commit, then dirties and writes some of those pages again.
    let mut writer = open_writer(&path, 16);
    writer.execute_batch("CREATE TABLE rows (k BLOB PRIMARY KEY, v BLOB NOT NULL) WITHOUT ROWID").expect("schema");
    let reader = Connection::open(&path).expect("reader");
    let rewrites_before = wal_write_counts().rewrites;
    let (mut model, mut counter) = (BTreeMap::new(), 0);
    for round in 0..24 {
        let mut attempt = model.clone();
        let transaction = writer.transaction().expect("begin");
        write_rows(&transaction, &mut attempt, &mut counter, 400, 300);
        // Touch rows written early in this transaction again: their pages were spilled.
        for earlier in (counter - 399..=counter).step_by(7) {
            let value = vec![0xEE; 280];
            transaction.execute("UPDATE rows SET v = ?2 WHERE k = ?1", params![key(earlier), value]).expect("update");
            attempt.insert(key(earlier), value);
        }
        if round % 4 == 1 {
            transaction.rollback().expect("rollback");
        } else {
            transaction.commit().expect("commit");
            model = attempt;
        }
        assert_eq!(rows_seen(&reader), model, "round {round}");
        if round % 6 == 5 {
            let mode = if round % 12 == 5 { "RESTART" } else { "PASSIVE" };
            reader.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |_| Ok(())).expect("checkpoint");
        }
    }
    assert!(wal_write_counts().rewrites > rewrites_before, "the transactions rewrote frames they had spilled");
    assert_eq!(integrity(&writer), "ok");

    // The writer goes away while the reader keeps the WAL (it is not checkpointed away);
    // a new writer appends to a WAL it did not start.
    drop(writer);
    let mut writer = open_writer(&path, 16);
    for round in 0..3 {
        let transaction = writer.transaction().expect("begin");
        write_rows(&transaction, &mut model, &mut counter, 300, 300);
        transaction.commit().expect("commit");
        assert_eq!(rows_seen(&reader), model, "after reopening, round {round}");
    }
    drop(writer);
    drop(reader);
    let fresh = Connection::open(&path).expect("reopen");
    assert_eq!(rows_seen(&fresh), model, "everything committed survived closing");
    assert_eq!(integrity(&fresh), "ok");
}
