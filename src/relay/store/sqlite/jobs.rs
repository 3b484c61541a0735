//! Job-queue tables (spec §14): groups and each job's committed state per group.

use rusqlite::{params, Connection, Transaction};

use super::{JobRequests, JobRow, JobWrite, JobsSnapshot, StoreError, StoredRow};
use crate::protocol::kind::JOB_REQUESTS;

fn clamp(value: u64) -> i64 {
    value.min(i64::MAX as u64) as i64
}

/// Writes one job state (insert or replace) inside `transaction`.
pub fn write_state(transaction: &Transaction<'_>, row: &JobRow) -> Result<(), StoreError> {
    let mut statement = transaction.prepare_cached(
        "INSERT INTO job_state (grp, job_seq, attempts, done, dead, not_before) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
         ON CONFLICT (grp, job_seq) DO UPDATE SET attempts = ?3, done = ?4, dead = ?5, not_before = ?6",
    )?;
    statement.execute(params![
        row.group,
        clamp(row.job_seq),
        clamp(row.attempts),
        row.done as i64,
        row.dead as i64,
        clamp(row.not_before_ms)
    ])?;
    Ok(())
}

/// Writes one change inside `transaction` (a group already there is left as it is).
pub fn write_one(transaction: &Transaction<'_>, write: &JobWrite) -> Result<(), StoreError> {
    match write {
        JobWrite::Group { name, start_seq } => {
            transaction.execute(
                "INSERT INTO job_groups (name, start_seq) VALUES (?1, ?2) ON CONFLICT (name) DO NOTHING",
                params![name, clamp(*start_seq)],
            )?;
        }
        JobWrite::State(row) => write_state(transaction, row)?,
    }
    Ok(())
}

/// Commits `writes` in one transaction.
pub fn write(connection: &mut Connection, writes: &[JobWrite]) -> Result<(), StoreError> {
    let transaction = connection.transaction()?;
    for write in writes {
        write_one(&transaction, write)?;
    }
    transaction.commit()?;
    Ok(())
}

/// Groups, states and the unexpired job requests.
pub fn load(connection: &Connection, now: u64) -> Result<JobsSnapshot, StoreError> {
    let mut groups = connection.prepare("SELECT name, start_seq FROM job_groups")?;
    let groups = groups
        .query_map([], |row| Ok((row.get::<_, String>(0)?, row.get::<_, i64>(1)?.max(0) as u64)))?
        .collect::<Result<Vec<_>, _>>()?;
    let mut states = connection.prepare("SELECT grp, job_seq, attempts, done, dead, not_before FROM job_state")?;
    let states = states
        .query_map([], |row| {
            Ok(JobRow {
                group: row.get(0)?,
                job_seq: row.get::<_, i64>(1)?.max(0) as u64,
                attempts: row.get::<_, i64>(2)?.max(0) as u64,
                done: row.get::<_, i64>(3)? != 0,
                dead: row.get::<_, i64>(4)? != 0,
                not_before_ms: row.get::<_, i64>(5)?.max(0) as u64,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    // Only requests some group may still offer: after its start, neither done nor dead.
    let mut requests = connection.prepare(
        "SELECT seq, raw FROM events e WHERE kind BETWEEN ?1 AND ?2 AND (expires_at IS NULL OR expires_at > ?3)
           AND EXISTS (SELECT 1 FROM job_groups g WHERE e.seq > g.start_seq AND NOT EXISTS
                (SELECT 1 FROM job_state s WHERE s.grp = g.name AND s.job_seq = e.seq AND (s.done = 1 OR s.dead = 1)))
         ORDER BY seq",
    )?;
    let requests = requests
        .query_map(params![*JOB_REQUESTS.start(), *JOB_REQUESTS.end(), clamp(now)], stored_row)?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(JobsSnapshot { groups, states, requests })
}

fn stored_row(row: &rusqlite::Row<'_>) -> rusqlite::Result<StoredRow> {
    Ok(StoredRow { seq: row.get::<_, i64>(0)?.max(0) as u64, raw: row.get::<_, Vec<u8>>(1)?.into() })
}

/// Stored job requests: the unexpired ones after a seq, or one by id.
pub fn requests(connection: &Connection, which: JobRequests, now: u64) -> Result<Vec<StoredRow>, StoreError> {
    let (kinds, now) = ((*JOB_REQUESTS.start(), *JOB_REQUESTS.end()), clamp(now));
    let rows = match which {
        JobRequests::After(after) => {
            let mut statement = connection.prepare(
                "SELECT seq, raw FROM events WHERE kind BETWEEN ?1 AND ?2
                   AND (expires_at IS NULL OR expires_at > ?3) AND seq > ?4 ORDER BY seq",
            )?;
            let rows = statement.query_map(params![kinds.0, kinds.1, now, clamp(after)], stored_row)?;
            rows.collect::<Result<Vec<_>, _>>()?
        }
        JobRequests::Id(id) => {
            let mut statement =
                connection.prepare("SELECT seq, raw FROM events WHERE id = ?1 AND kind BETWEEN ?2 AND ?3")?;
            let rows = statement.query_map(params![&id[..], kinds.0, kinds.1], stored_row)?;
            rows.collect::<Result<Vec<_>, _>>()?
        }
    };
    Ok(rows)
}

/// The seqs of every stored job request, ascending.
pub fn request_seqs(connection: &Connection) -> Result<Vec<u64>, StoreError> {
    let mut statement = connection.prepare("SELECT seq FROM events WHERE kind BETWEEN ?1 AND ?2 ORDER BY seq")?;
    let seqs = statement
        .query_map(params![*JOB_REQUESTS.start(), *JOB_REQUESTS.end()], |row| row.get::<_, i64>(0))?
        .map(|seq| seq.map(|seq| seq.max(0) as u64))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(seqs)
}

/// True if an event with `id` is stored.
pub fn contains(connection: &Connection, id: &[u8; 32]) -> Result<bool, StoreError> {
    let mut statement = connection.prepare_cached("SELECT 1 FROM events WHERE id = ?1")?;
    Ok(statement.exists(params![&id[..]])?)
}

/// One group in the operator view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupReport {
    /// Its name.
    pub name: String,
    /// Its queue starts after this seq.
    pub start_seq: u64,
    /// Jobs done.
    pub done: u64,
    /// Jobs dead.
    pub dead: u64,
}

/// A dead job in the operator view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadJob {
    /// Its group.
    pub group: String,
    /// The job request's seq.
    pub job_seq: u64,
    /// Its event id (None if the request was deleted since).
    pub id: Option<Vec<u8>>,
    /// Offers made.
    pub attempts: u64,
}

/// Groups with their done/dead counts, and every dead job, read from a database file
/// (read-only; safe while the relay runs).
pub fn report(path: &std::path::Path) -> Result<(Vec<GroupReport>, Vec<DeadJob>), StoreError> {
    let connection = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    connection.busy_timeout(std::time::Duration::from_secs(10))?;
    let mut groups = connection.prepare(
        "SELECT g.name, g.start_seq,
                (SELECT COUNT(*) FROM job_state s WHERE s.grp = g.name AND s.done = 1),
                (SELECT COUNT(*) FROM job_state s WHERE s.grp = g.name AND s.dead = 1)
         FROM job_groups g ORDER BY g.name",
    )?;
    let groups = groups
        .query_map([], |row| {
            Ok(GroupReport {
                name: row.get(0)?,
                start_seq: row.get::<_, i64>(1)?.max(0) as u64,
                done: row.get::<_, i64>(2)?.max(0) as u64,
                dead: row.get::<_, i64>(3)?.max(0) as u64,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    let mut dead = connection.prepare(
        "SELECT s.grp, s.job_seq, e.id, s.attempts FROM job_state s LEFT JOIN events e ON e.seq = s.job_seq
         WHERE s.dead = 1 ORDER BY s.grp, s.job_seq",
    )?;
    let dead = dead
        .query_map([], |row| {
            Ok(DeadJob {
                group: row.get(0)?,
                job_seq: row.get::<_, i64>(1)?.max(0) as u64,
                id: row.get(2)?,
                attempts: row.get::<_, i64>(3)?.max(0) as u64,
            })
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok((groups, dead))
}
