//! The page cache layer (`relay::store::sqlite::install_page_cache`) skips the truncations
//! that have nothing to drop, and only those: commits that split index pages skip theirs,
//! a rolled-back transaction that grew the file still drops its pages, and the database
//! stays whole and holds exactly what was committed.
//!
//! Its own test binary: the layer must be installed before SQLite's first use in the
//! process.
#![cfg(feature = "relay")]

use std::collections::BTreeMap;

use axon_relay::relay::store::sqlite::{install_page_cache, skipped_truncations};
use rusqlite::{params, Connection};
use sha2::{Digest, Sha256};

/// A pseudo-random 32-byte key: inserts land all over the index and split its pages.
fn key(counter: u64) -> Vec<u8> {
    Sha256::digest(counter.to_le_bytes()).to_vec()
}

fn page_count(connection: &Connection) -> i64 {
    connection.pragma_query_value(None, "page_count", |row| row.get(0)).expect("page_count")
}

#[test]
fn skips_only_truncations_with_nothing_to_drop() {
    assert!(install_page_cache(), "installed before SQLite's first use");
    assert!(!install_page_cache(), "a second install is refused");

    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("cache.db");
    let mut writer = Connection::open(&path).expect("open");
    writer.pragma_update(None, "journal_mode", "WAL").expect("wal");
    writer.pragma_update(None, "cache_size", -8192).expect("cache size");
    writer
        .execute_batch(
            "CREATE TABLE rows (k BLOB PRIMARY KEY, v INTEGER NOT NULL) WITHOUT ROWID; CREATE INDEX by_v ON rows (v);",
        )
        .expect("schema");
    let reader = Connection::open(&path).expect("reader");

    let mut model = BTreeMap::new();
    let mut counter = 0u64;
    for round in 0..40 {
        let skipped = skipped_truncations();
        let transaction = writer.transaction().expect("begin");
        for _ in 0..300 {
            counter += 1;
            transaction
                .execute("INSERT INTO rows (k, v) VALUES (?1, ?2)", params![key(counter), counter as i64])
                .expect("insert");
            model.insert(key(counter), counter as i64);
        }
        transaction.commit().expect("commit");
        assert!(skipped_truncations() > skipped, "round {round}: the commit's truncation was skipped");

        if round % 4 == 3 {
            // Grow the file by thousands of pages, then roll back: those pages must go.
            let pages = page_count(&writer);
            let skipped = skipped_truncations();
            let transaction = writer.transaction().expect("begin");
            for extra in 0..3000u64 {
                let k = key(u64::MAX - extra - 10_000 * round);
                transaction.execute("INSERT INTO rows (k, v) VALUES (?1, -1)", params![k]).expect("insert");
            }
            assert!(page_count(&transaction) > pages, "the rolled-back transaction grew the file");
            transaction.rollback().expect("rollback");
            assert_eq!(skipped_truncations(), skipped, "a rollback that grew the file truncates");
            assert_eq!(page_count(&writer), pages);
        }
        let rows: i64 = reader.query_row("SELECT COUNT(*) FROM rows", [], |row| row.get(0)).expect("count");
        assert_eq!(rows as usize, model.len(), "a reader sees every committed row and no rolled-back one");
    }

    let integrity: String = writer.query_row("PRAGMA integrity_check", [], |row| row.get(0)).expect("integrity");
    assert_eq!(integrity, "ok");
    let stored: BTreeMap<Vec<u8>, i64> = writer
        .prepare("SELECT k, v FROM rows")
        .expect("select")
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .expect("rows")
        .collect::<Result<_, _>>()
        .expect("read");
    assert_eq!(stored, model);
}
