//! Events from a cluster log (spec §16) inserted with the seqs the log gave them, in one
//! transaction with the log cursor, on the writer thread; then the commit hook.

use std::sync::Arc;

use rusqlite::{params, Connection};
use tokio::sync::oneshot;

use super::{Accepted, BatchStats, CommitHook, Committed, JobWrite, StoreError, UpstreamCursor};

/// Events taken from the log in log order, each with its log seq, and the cursor (the
/// highest log seq handled, events skipped included) stored with them.
#[derive(Debug)]
pub struct LogBatch {
    /// `(seq, event)`, seqs strictly increasing and above every stored seq.
    pub events: Vec<(u64, Arc<Accepted>)>,
    /// Job-queue changes the log holds among them (a cluster's job records).
    pub jobs: Vec<JobWrite>,
    /// The log's position after this batch.
    pub cursor: UpstreamCursor,
}

/// The answer to a [`LogBatch`]: per event, true if inserted, false if its id was
/// already stored (a copy that got into the log twice).
pub type LogReply = oneshot::Sender<Result<Vec<bool>, StoreError>>;

/// Inserts the batch, commits, runs the hook with what was inserted, then answers.
pub fn commit(connection: &mut Connection, batch: LogBatch, reply: LogReply, hook: &mut dyn CommitHook) {
    let started = std::time::Instant::now();
    match insert(connection, &batch) {
        Ok(inserted) => {
            let stats = BatchStats { requests: batch.events.len(), elapsed: started.elapsed() };
            let committed: Vec<Committed> = batch
                .events
                .iter()
                .zip(&inserted)
                .filter(|(_, inserted)| **inserted)
                .map(|((seq, accepted), _)| Committed { seq: *seq, accepted: accepted.clone() })
                .collect();
            hook.committed(&committed, stats);
            // As for every commit: answered after the hook's fan-out delivered the events.
            hook.answer(Box::new(move || {
                let _ = reply.send(Ok(inserted));
            }));
        }
        Err(error) => {
            tracing::error!(%error, class = error.class(), events = batch.events.len(), "applying the cluster log failed; nothing of the batch was stored");
            hook.failed(&error);
            let _ = reply.send(Err(error));
        }
    }
}

fn insert(connection: &mut Connection, batch: &LogBatch) -> Result<Vec<bool>, StoreError> {
    let transaction = connection.transaction()?;
    let mut inserted = Vec::with_capacity(batch.events.len());
    {
        // OR IGNORE (see the writer): a known id (or, never expected, a taken seq) is
        // skipped.
        let mut insert_event = transaction.prepare_cached(
            "INSERT OR IGNORE INTO events (seq, id, pubkey, created_at, kind, expires_at, raw)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        )?;
        for (seq, accepted) in &batch.events {
            let event = &accepted.event;
            let seq = (*seq).min(i64::MAX as u64) as i64;
            let created_at = event.created_at.min(i64::MAX as u64) as i64;
            let expires_at = accepted.expires_at.map(|time| time.min(i64::MAX as u64) as i64);
            let stored = insert_event.execute(params![
                seq,
                &event.id[..],
                &event.pubkey[..],
                created_at,
                event.kind,
                expires_at,
                &accepted.raw[..]
            ])? == 1;
            if stored {
                super::writer::insert_tags(&transaction, event, created_at, seq)?;
            }
            inserted.push(stored);
        }
        for write in &batch.jobs {
            super::jobs::write_one(&transaction, write)?;
        }
        transaction
            .prepare_cached(
                "INSERT INTO mirror_state (upstream, last_seq) VALUES (?1, ?2)
                 ON CONFLICT (upstream) DO UPDATE SET last_seq = max(last_seq, excluded.last_seq)",
            )?
            .execute(params![batch.cursor.upstream, batch.cursor.last_seq.min(i64::MAX as u64) as i64])?;
    }
    transaction.commit()?;
    Ok(inserted)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::relay::store::{EventStore, SqliteStore};

    /// Records the seqs each commit hands to the hook.
    struct Recorder(Arc<Mutex<Vec<Vec<u64>>>>);

    impl CommitHook for Recorder {
        fn committed(&mut self, events: &[Committed], _: BatchStats) {
            crate::sync::lock(&self.0).push(events.iter().map(|committed| committed.seq).collect());
        }
    }

    /// A kind 1000 event with a `t` tag (its tag row is what the replay below finds).
    fn accepted(content: &str) -> Arc<Accepted> {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let tags = vec![crate::protocol::Tag::new("t", ["x"])];
        let event =
            crate::protocol::Event::sign(&key, 1_700_000_000, 1000, content.as_bytes().to_vec(), tags).expect("sign");
        let raw = bytes::Bytes::from(event.encode());
        Arc::new(Accepted { event, raw, expires_at: None })
    }

    fn cursor(last_seq: u64) -> UpstreamCursor {
        UpstreamCursor { upstream: "log".into(), last_seq }
    }

    #[tokio::test]
    async fn log_seqs_are_kept_known_ids_skipped_and_the_cursor_stored_with_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let hooked = Arc::new(Mutex::new(Vec::new()));
        let store = SqliteStore::open(&dir.path().join("index.db"), Box::new(Recorder(hooked.clone()))).expect("open");
        let (first, second) = (accepted("first"), accepted("second"));
        let batch = LogBatch { events: vec![(3, first.clone()), (7, second)], jobs: Vec::new(), cursor: cursor(8) };
        assert_eq!(store.apply_log(batch).await.expect("apply"), vec![true, true]);
        // The same event again under a later log seq: skipped, the cursor still moves.
        let batch =
            LogBatch { events: vec![(9, first), (10, accepted("third"))], jobs: Vec::new(), cursor: cursor(10) };
        assert_eq!(store.apply_log(batch).await.expect("apply"), vec![false, true]);
        assert_eq!(*crate::sync::lock(&hooked), vec![vec![3, 7], vec![10]], "the hook sees what was inserted");
        assert_eq!(store.upstream_cursor("log").expect("cursor"), 10);
        assert_eq!(store.local_last_seq().expect("last"), 10);
        let seqs: Vec<u64> = store
            .replay_page(
                &crate::relay::store::Window {
                    filters: &[crate::protocol::Filter {
                        tags: Some(vec![crate::protocol::filter::TagFilter {
                            name: "t".into(),
                            values: vec!["x".into()],
                        }]),
                        ..crate::protocol::Filter::default()
                    }],
                    viewer: &crate::protocol::Viewer { pubkey: [0; 32], is_admin: false },
                    after: 0,
                    snapshot: 100,
                    now: 1_700_000_000,
                },
                100,
            )
            .expect("replay")
            .into_iter()
            .map(|row| row.seq)
            .collect();
        assert_eq!(seqs, vec![3, 7, 10]);
    }
}
