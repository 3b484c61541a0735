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
