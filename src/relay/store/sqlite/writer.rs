//! The writer thread: owns the only write connection, commits many events per
//! transaction, runs the commit hook (admin changes, job queues, the hand-over to the
//! fan-out stage) in seq order, then gives the hook the answers to send
//! ([`CommitHook::answer`]).

use std::sync::Arc;

use rusqlite::{params, Connection};
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

/// Inserts, commits, runs the hook, then hands it the answers to every request of the batch.
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
            let replies: Vec<(Reply, Option<u64>)> =
                inserts.drain(..).zip(outcomes).map(|((_, reply, _), outcome)| (reply, outcome)).collect();
            let cursor_replies: Vec<_> = cursors.drain(..).map(|(_, reply)| reply).collect();
            hook.answer(Box::new(move || {
                for (reply, outcome) in replies {
                    let _ = reply.send(outcome.ok_or(StoreError::Duplicate));
                }
                for reply in cursor_replies {
                    let _ = reply.send(Ok(()));
                }
            }));
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
        // OR IGNORE, not ON CONFLICT ... RETURNING: RETURNING runs as a trigger, which
        // makes SQLite keep a statement journal (a copy of every page the insert touches,
        // one of the writer's larger costs). A row not inserted is a duplicate id (the
        // only constraint the relay's values can break).
        let mut insert_event = transaction.prepare_cached(
            "INSERT OR IGNORE INTO events (id, pubkey, created_at, kind, expires_at, raw)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        )?;
        for (accepted, _, done) in inserts {
            let event = &accepted.event;
            // Admission bounds created_at (future skew), so this never saturates in practice.
            let created_at = event.created_at.min(i64::MAX as u64) as i64;
            let expires_at = accepted.expires_at.map(|time| time.min(i64::MAX as u64) as i64);
            let inserted = insert_event.execute(params![
                &event.id[..],
                &event.pubkey[..],
                created_at,
                event.kind,
                expires_at,
                &accepted.raw[..]
            ])?;
            let seq = (inserted == 1).then(|| transaction.last_insert_rowid());
            if let Some(seq) = seq {
                insert_tags(&transaction, event, created_at, seq)?;
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

/// The event's tag rows (name, first value; tags without a value are not indexed). A
/// second tag with the same name and first value adds no row. One single-row statement
/// per tag: a multi-row VALUES list is run as a subquery, which makes SQLite keep a
/// statement journal (a copy of every page the statement touches).
pub(super) fn insert_tags(
    transaction: &rusqlite::Transaction<'_>,
    event: &crate::protocol::Event,
    created_at: i64,
    seq: i64,
) -> Result<(), StoreError> {
    let mut insert = transaction.prepare_cached(
        "INSERT OR IGNORE INTO tags (name, value, created_at, seq, kind) VALUES (?1, ?2, ?3, ?4, ?5)",
    )?;
    for tag in &event.tags {
        if let Some(value) = tag.first_value() {
            insert.execute(params![tag.name, value, created_at, seq, event.kind])?;
        }
    }
    Ok(())
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

/// Deletes the tag rows of the events in `doomed`. Tag rows are keyed by name, value,
/// created_at and seq, so each event's are found from its own tags; an event whose bytes
/// no longer decode (never expected: every stored event was validated) costs a scan.
fn delete_tags(transaction: &rusqlite::Transaction<'_>) -> Result<(), StoreError> {
    let mut doomed =
        transaction.prepare("SELECT e.seq, e.created_at, e.raw FROM doomed AS d JOIN events AS e ON e.seq = d.seq")?;
    let mut delete = transaction
        .prepare_cached("DELETE FROM tags WHERE name = ?1 AND value = ?2 AND created_at = ?3 AND seq = ?4")?;
    let mut rows = doomed.query([])?;
    while let Some(row) = rows.next()? {
        let (seq, created_at): (i64, i64) = (row.get(0)?, row.get(1)?);
        let raw: Vec<u8> = row.get(2)?;
        match crate::protocol::Event::decode(&raw) {
            Ok(event) => {
                for tag in &event.tags {
                    if let Some(value) = tag.first_value() {
                        delete.execute(params![tag.name, value, created_at, seq])?;
                    }
                }
            }
            Err(_) => {
                transaction.execute("DELETE FROM tags WHERE seq = ?1", [seq])?;
            }
        }
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
    delete_tags(&transaction)?;
    let deleted = transaction.execute("DELETE FROM events WHERE seq IN (SELECT seq FROM doomed)", [])?;
    transaction.commit()?;
    Ok(deleted)
}
