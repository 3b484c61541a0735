//! The writer thread: owns the only write connection, commits many events per
//! transaction, runs the commit hook (admin changes, fan-out) in seq order, then answers.

use std::sync::Arc;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::{mpsc, oneshot};

use super::{
    Accepted, BatchStats, CommitHook, Committed, JobRow, Prune, StoreError, UpstreamCursor, WriteRequest, MAX_BATCH,
};
use crate::protocol::visibility::admin_kinds;

/// Starts the writer thread.
pub fn spawn(
    connection: Connection,
    receiver: mpsc::Receiver<WriteRequest>,
    hook: Box<dyn CommitHook>,
) -> Result<(), StoreError> {
    std::thread::Builder::new()
        .name("axon-writer".into())
        .spawn(move || run(connection, receiver, hook))
        .map(|_| ())
        .map_err(|error| StoreError::Storage(format!("cannot start the writer thread: {error}")))
}

type Reply = oneshot::Sender<Result<u64, StoreError>>;

/// Mirror cursors (spec §17) gathered for the batch, each with the answer to send once
/// the transaction holding it committed.
type Cursors = Vec<(UpstreamCursor, oneshot::Sender<Result<(), StoreError>>)>;

/// An event to insert, its answer, and the job it completes (if any).
type Insert = (Arc<Accepted>, Reply, Option<JobRow>);

fn run(mut connection: Connection, mut receiver: mpsc::Receiver<WriteRequest>, mut hook: Box<dyn CommitHook>) {
    let mut inserts: Vec<Insert> = Vec::with_capacity(MAX_BATCH);
    let mut cursors: Cursors = Vec::new();
    while let Some(request) = receiver.blocking_recv() {
        let mut next = Some(request);
        while let Some(request) = next.take() {
            match request {
                WriteRequest::Insert { accepted, reply, done } => inserts.push((accepted, reply, done)),
                WriteRequest::Mirror { events, cursor, reply } => {
                    // One unit: the events and their cursor land in the same transaction.
                    inserts.extend(events.into_iter().map(|(accepted, reply)| (accepted, reply, None)));
                    cursors.push((cursor, reply));
                }
                WriteRequest::Jobs { writes, reply } => {
                    commit_batch(&mut connection, &mut inserts, &mut cursors, hook.as_mut());
                    let _ = reply.send(super::jobs::write(&mut connection, &writes));
                }
                WriteRequest::Log { batch, reply } => {
                    commit_batch(&mut connection, &mut inserts, &mut cursors, hook.as_mut());
                    super::apply::commit(&mut connection, batch, reply, hook.as_mut());
                }
                WriteRequest::Prune { rule, limit, reply } => {
                    // Commit what is gathered first so order is kept.
                    commit_batch(&mut connection, &mut inserts, &mut cursors, hook.as_mut());
                    let _ = reply.send(prune(&mut connection, rule, limit));
                }
            }
            if inserts.len() < MAX_BATCH {
                next = receiver.try_recv().ok();
            }
        }
        commit_batch(&mut connection, &mut inserts, &mut cursors, hook.as_mut());
    }
}

/// Inserts, commits, runs the hook, then answers every request of the batch.
fn commit_batch(
    connection: &mut Connection,
    inserts: &mut Vec<Insert>,
    cursors: &mut Cursors,
    hook: &mut dyn CommitHook,
) {
    if inserts.is_empty() && cursors.is_empty() {
        return;
    }
    let started = std::time::Instant::now();
    match insert_all(connection, inserts, cursors) {
        Ok(outcomes) => {
            let stats = BatchStats { requests: inserts.len(), elapsed: started.elapsed() };
            let committed: Vec<Committed> = inserts
                .iter()
                .zip(&outcomes)
                .filter_map(|((accepted, _, _), outcome)| {
                    outcome.map(|seq| Committed { seq, accepted: accepted.clone() })
                })
                .collect();
            hook.committed(&committed, stats);
            for ((_, reply, _), outcome) in inserts.drain(..).zip(outcomes) {
                let _ = reply.send(outcome.ok_or(StoreError::Duplicate));
            }
            for (_, reply) in cursors.drain(..) {
                let _ = reply.send(Ok(()));
            }
        }
        Err(error) => {
            tracing::error!(%error, class = error.class(), events = inserts.len(), "write batch failed; nothing of it was stored");
            hook.failed(&error);
            for (_, reply, _) in inserts.drain(..) {
                let _ = reply.send(Err(error.clone()));
            }
            for (_, reply) in cursors.drain(..) {
                let _ = reply.send(Err(error.clone()));
            }
        }
    }
}

/// One transaction for the batch (events, then mirror cursors); `None` marks a duplicate id.
fn insert_all(
    connection: &mut Connection,
    inserts: &[Insert],
    cursors: &Cursors,
) -> Result<Vec<Option<u64>>, StoreError> {
    let transaction = connection.transaction()?;
    let mut outcomes = Vec::with_capacity(inserts.len());
    {
        let mut insert_event = transaction.prepare_cached(
            "INSERT INTO events (id, pubkey, created_at, kind, expires_at, raw) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT (id) DO NOTHING RETURNING seq",
        )?;
        let mut insert_tag = transaction
            .prepare_cached("INSERT INTO tags (name, value, kind, created_at, seq) VALUES (?1, ?2, ?3, ?4, ?5)")?;
        for (accepted, _, done) in inserts {
            let event = &accepted.event;
            // Admission bounds created_at (future skew), so this never saturates in practice.
            let created_at = event.created_at.min(i64::MAX as u64) as i64;
            let expires_at = accepted.expires_at.map(|time| time.min(i64::MAX as u64) as i64);
            let seq: Option<i64> = insert_event
                .query_row(
                    params![&event.id[..], &event.pubkey[..], created_at, event.kind, expires_at, &accepted.raw[..]],
                    |row| row.get(0),
                )
                .optional()?;
            if let Some(seq) = seq {
                for tag in &event.tags {
                    if let Some(value) = tag.first_value() {
                        insert_tag.execute(params![tag.name, value, event.kind, created_at, seq])?;
                    }
                }
                if let Some(done) = done {
                    super::jobs::write_state(&transaction, done)?;
                }
            }
            outcomes.push(seq.map(|seq| seq as u64));
        }
    }
    store_cursors(&transaction, cursors)?;
    transaction.commit()?;
    Ok(outcomes)
}

/// Writes mirror cursors (spec §17); a cursor never moves back.
fn store_cursors(transaction: &rusqlite::Transaction<'_>, cursors: &Cursors) -> Result<(), StoreError> {
    if cursors.is_empty() {
        return Ok(());
    }
    let mut upsert = transaction.prepare_cached(
        "INSERT INTO mirror_state (upstream, last_seq) VALUES (?1, ?2)
         ON CONFLICT (upstream) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
    )?;
    for (cursor, _) in cursors {
        upsert.execute(params![cursor.upstream, cursor.last_seq.min(i64::MAX as u64) as i64])?;
    }
    Ok(())
}

/// Deletes up to `limit` events selected by `rule` (and their tag rows) in one transaction.
fn prune(connection: &mut Connection, rule: Prune, limit: usize) -> Result<usize, StoreError> {
    let admin = admin_kinds();
    let not_admin = format!("kind NOT BETWEEN {} AND {}", admin.start(), admin.end());
    let clamp = |value: u64| value.min(i64::MAX as u64) as i64;
    let transaction = connection.transaction()?;
    let (condition, params): (String, Vec<i64>) = match rule {
        Prune::Expired { now } => ("expires_at IS NOT NULL AND expires_at <= ?1".into(), vec![clamp(now)]),
        Prune::OlderThan { first, last, before } => (
            format!("kind BETWEEN ?1 AND ?2 AND created_at < ?3 AND {not_admin}"),
            vec![first as i64, last as i64, clamp(before)],
        ),
        Prune::Beyond { keep } => {
            let count: i64 =
                transaction
                    .query_row(&format!("SELECT COUNT(*) FROM events WHERE {not_admin}"), [], |row| row.get(0))?;
            let excess = (count - clamp(keep)).max(0);
            (
                format!("{not_admin} AND seq IN (SELECT seq FROM events WHERE {not_admin} ORDER BY seq LIMIT ?1)"),
                vec![excess],
            )
        }
    };
    let selection = format!("SELECT seq FROM events WHERE {condition} ORDER BY seq LIMIT {limit}");
    let params = rusqlite::params_from_iter(params.iter());
    transaction.execute("CREATE TEMP TABLE IF NOT EXISTS doomed (seq INTEGER PRIMARY KEY)", [])?;
    transaction.execute("DELETE FROM doomed", [])?;
    transaction.execute(&format!("INSERT INTO doomed {selection}"), params)?;
    transaction.execute("DELETE FROM tags WHERE seq IN (SELECT seq FROM doomed)", [])?;
    let deleted = transaction.execute("DELETE FROM events WHERE seq IN (SELECT seq FROM doomed)", [])?;
    transaction.commit()?;
    Ok(deleted)
}
