//! Schema and migrations, keyed on `PRAGMA user_version`.

use rusqlite::Connection;

/// Each entry migrates from version `index` to `index + 1`.
const MIGRATIONS: &[&str] = &[
    // 0 → 1: the event log and its tag index.
    "
    CREATE TABLE events (
        seq        INTEGER PRIMARY KEY AUTOINCREMENT,
        id         BLOB    NOT NULL UNIQUE,
        pubkey     BLOB    NOT NULL,
        created_at INTEGER NOT NULL,
        kind       INTEGER NOT NULL,
        expires_at INTEGER,
        raw        BLOB    NOT NULL
    ) STRICT;
    CREATE INDEX events_by_time   ON events (created_at DESC, seq DESC);
    CREATE INDEX events_by_author ON events (pubkey, kind, created_at DESC, seq DESC);
    CREATE INDEX events_by_kind   ON events (kind, created_at DESC, seq DESC);
    CREATE INDEX events_expiring  ON events (expires_at) WHERE expires_at IS NOT NULL;
    CREATE TABLE tags (
        name       TEXT    NOT NULL,
        value      TEXT    NOT NULL,
        kind       INTEGER NOT NULL,
        created_at INTEGER NOT NULL,
        seq        INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX tags_by_value ON tags (name, value, created_at DESC, seq DESC, kind);
    CREATE INDEX tags_by_seq   ON tags (seq);
    ",
    // 1 → 2: mirrors (spec §17): per upstream, the last upstream seq handled, written in
    // the same transaction as the copied events.
    "
    CREATE TABLE mirror_state (
        upstream TEXT    PRIMARY KEY,
        last_seq INTEGER NOT NULL
    ) STRICT;
    ",
    // 2 → 3: job queues (spec §14): groups and each job's state per group.
    "
    CREATE TABLE job_groups (
        name      TEXT    PRIMARY KEY,
        start_seq INTEGER NOT NULL
    ) STRICT;
    CREATE TABLE job_state (
        grp         TEXT    NOT NULL,
        job_seq     INTEGER NOT NULL,
        attempts    INTEGER NOT NULL,
        done        INTEGER NOT NULL,
        dead        INTEGER NOT NULL,
        not_before  INTEGER NOT NULL,
        PRIMARY KEY (grp, job_seq)
    ) STRICT;
    ",
    // 3 → 4: a cheaper tag index (issue 12). The tag rows were a rowid table plus two
    // indexes, three B-tree inserts per tag; now the table is its own index (WITHOUT
    // ROWID, keyed as tags_by_value was), one insert per tag. tags_by_seq, which only
    // pruning used, is gone: pruning finds an event's tag rows from its tags. Two tags of
    // one event with the same name and first value are one row (queries only ask whether
    // such a tag exists).
    "
    CREATE TABLE tags_v4 (
        name       TEXT    NOT NULL,
        value      TEXT    NOT NULL,
        created_at INTEGER NOT NULL,
        seq        INTEGER NOT NULL,
        kind       INTEGER NOT NULL,
        PRIMARY KEY (name, value, created_at DESC, seq DESC)
    ) STRICT, WITHOUT ROWID;
    INSERT OR IGNORE INTO tags_v4 (name, value, created_at, seq, kind)
        SELECT name, value, created_at, seq, kind FROM tags;
    DROP TABLE tags;
    ALTER TABLE tags_v4 RENAME TO tags;
    ",
];

/// The schema version this build writes.
pub const SCHEMA_VERSION: usize = MIGRATIONS.len();

/// Connection settings every connection gets.
pub fn configure(connection: &Connection) -> rusqlite::Result<()> {
    connection.busy_timeout(std::time::Duration::from_secs(10))?;
    connection.pragma_update(None, "journal_mode", "WAL")?;
    // In WAL mode NORMAL is durable against a crash of the relay process (the OS keeps
    // what was written); only a power loss can take the last commits.
    connection.pragma_update(None, "synchronous", "NORMAL")?;
    connection.pragma_update(None, "temp_store", "MEMORY")?;
    // When the WAL starts over, a file that grew past this is cut back (bytes).
    connection.pragma_update(None, "journal_size_limit", super::checkpoint::WAL_SIZE_LIMIT)?;
    Ok(())
}

/// Page cache of the writer's connection (KiB). Inserts land on random pages of the id
/// index and the tag index; with SQLite's default 2 MiB most of them miss the cache and
/// are read back from the file for every batch.
pub const WRITER_CACHE_KIB: i64 = 32 * 1024;

/// Brings the database to [`SCHEMA_VERSION`], one transaction per step.
pub fn migrate(connection: &mut Connection) -> Result<(), super::StoreError> {
    let current: usize = connection.pragma_query_value(None, "user_version", |row| row.get(0))?;
    if current > SCHEMA_VERSION {
        return Err(super::StoreError::Storage(format!(
            "database schema version {current} is newer than this relay ({SCHEMA_VERSION}); upgrade the relay"
        )));
    }
    for (version, sql) in MIGRATIONS.iter().enumerate().skip(current) {
        let transaction = connection.transaction()?;
        transaction.execute_batch(sql)?;
        transaction.pragma_update(None, "user_version", version + 1)?;
        transaction.commit()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A version 3 database (tags as a rowid table with two indexes) keeps its tag rows
    /// through the 3 → 4 step, one row per (name, value, created_at, seq).
    #[test]
    fn tags_survive_the_move_to_a_keyed_table() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut connection = Connection::open(dir.path().join("v3.db")).expect("open");
        for sql in &MIGRATIONS[..3] {
            connection.execute_batch(sql).expect("old schema");
        }
        connection.pragma_update(None, "user_version", 3).expect("version 3");
        connection
            .execute_batch(
                "INSERT INTO tags (name, value, kind, created_at, seq) VALUES
                    ('t', 'a', 1000, 10, 1), ('t', 'a', 1000, 10, 1), ('p', 'b', 1000, 10, 1),
                    ('t', 'a', 1001, 20, 2);",
            )
            .expect("old rows");
        migrate(&mut connection).expect("migrate");
        let version: usize = connection.pragma_query_value(None, "user_version", |row| row.get(0)).expect("version");
        assert_eq!(version, SCHEMA_VERSION);
        let rows: Vec<(String, String, i64, i64, i64)> = connection
            .prepare("SELECT name, value, created_at, seq, kind FROM tags ORDER BY name, value, created_at DESC")
            .expect("select")
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?)))
            .expect("rows")
            .collect::<Result<_, _>>()
            .expect("read");
        let expected = [("p", "b", 10, 1, 1000), ("t", "a", 20, 2, 1001), ("t", "a", 10, 1, 1000)];
        let expected: Vec<_> = expected
            .iter()
            .map(|(name, value, created_at, seq, kind)| (name.to_string(), value.to_string(), *created_at, *seq, *kind))
            .collect();
        assert_eq!(rows, expected);
        let old_index: i64 = connection
            .query_row("SELECT count(*) FROM sqlite_schema WHERE name IN ('tags_by_seq', 'tags_by_value')", [], |row| {
                row.get(0)
            })
            .expect("schema");
        assert_eq!(old_index, 0, "the tag rows are their own index now");
    }
}
