//! The applier: reads the log in order from the last applied seq and commits each batch,
//! with the seqs the log gave, into the local index; the commit hook (admin changes,
//! fan-out, job queues) runs from what was applied. Recreates its reader after any error.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_nats::jetstream;
use futures_util::{FutureExt, StreamExt};

use super::log::Log;
use super::progress::Progress;
use super::ClusterError;
use crate::protocol::tags::expires_at;
use crate::protocol::Event;
use crate::relay::jobs::shared::{Applied, AppliedJobs, GroupRecord, JobRecord};
use crate::relay::store::sqlite::LogBatch;
use crate::relay::store::{Accepted, JobWrite, SqliteStore, StoreError, UpstreamCursor};

/// Log entries applied per transaction at most.
const MAX_BATCH: usize = 1024;

/// Pause before reading the log again after an error.
const RETRY: Duration = Duration::from_millis(500);

/// Applies the log to one node's local index.
pub struct Applier {
    /// The log.
    pub log: Arc<Log>,
    /// The local index.
    pub local: Arc<SqliteStore>,
    /// The name the cursor is stored under.
    pub cursor: String,
    /// Shared with the publishes waiting for their seq.
    pub progress: Arc<Progress>,
    /// The stream's name (its subjects start with it).
    pub stream: String,
    /// The job queues, told of each record applied (set once the relay has them).
    pub jobs: Arc<OnceLock<Arc<dyn AppliedJobs>>>,
}

/// What one log entry holds, by its subject.
enum Entry {
    Event(Accepted),
    Job(JobRecord, Option<Accepted>),
    Group(GroupRecord),
}

impl Applier {
    /// Applies the log until the local index closes.
    pub async fn run(self) {
        loop {
            let start = self.progress.applied() + 1;
            let outcome = match self.log.read_from(start).await {
                Ok(messages) => self.apply_all(messages).await,
                Err(error) => Err(error),
            };
            match outcome {
                Err(ClusterError::Apply(StoreError::Closed)) => return,
                Err(error) => {
                    tracing::warn!(%error, applied = self.progress.applied(), "reading the cluster log; retrying")
                }
                Ok(()) => {}
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    /// Applies what `messages` yields, one batch at a time, until it fails.
    async fn apply_all(&self, mut messages: jetstream::consumer::pull::Ordered) -> Result<(), ClusterError> {
        loop {
            let first = match messages.next().await {
                Some(first) => first.map_err(|error| ClusterError::Consumer(error.to_string()))?,
                None => return Err(ClusterError::Consumer("the log's reader ended".into())),
            };
            let mut batch = vec![first];
            let mut failure = None;
            while batch.len() < MAX_BATCH {
                match messages.next().now_or_never() {
                    Some(Some(Ok(message))) => batch.push(message),
                    Some(Some(Err(error))) => {
                        failure = Some(ClusterError::Consumer(error.to_string()));
                        break;
                    }
                    Some(None) | None => break,
                }
            }
            self.apply(&batch).await?;
            if let Some(failure) = failure {
                return Err(failure);
            }
        }
    }

    /// Commits one batch of log entries (entries already applied are passed over).
    async fn apply(&self, messages: &[jetstream::Message]) -> Result<(), ClusterError> {
        let applied = self.progress.applied();
        let mut cursor = applied;
        let mut events = Vec::with_capacity(messages.len());
        let mut writes = Vec::new();
        let mut records = Vec::new();
        for message in messages {
            let info = match message.info() {
                Ok(info) => info,
                Err(error) => {
                    tracing::warn!(%error, "a log message without JetStream metadata; skipped");
                    continue;
                }
            };
            let seq = info.stream_sequence;
            self.progress.saw_log_seq(seq.saturating_add(info.pending));
            if seq <= cursor {
                continue;
            }
            cursor = seq;
            match self.entry(message.subject.as_str(), &message.payload) {
                Ok(Entry::Event(accepted)) => events.push((seq, Arc::new(accepted))),
                Ok(Entry::Job(record, event)) => {
                    if let Some(accepted) = event {
                        events.push((seq, Arc::new(accepted)));
                    }
                    writes.push(JobWrite::State(record.row()));
                    records.push(Applied::Job { seq, record });
                }
                Ok(Entry::Group(record)) => {
                    writes.push(JobWrite::Group { name: record.name.clone(), start_seq: record.start });
                    records.push(Applied::Group { seq, record });
                }
                Err(error) => tracing::error!(seq, %error, "a log entry Axon cannot read; skipped"),
            }
        }
        if cursor == applied {
            return Ok(());
        }
        let seqs: Vec<u64> = events.iter().map(|(seq, _)| *seq).collect();
        let cursor_row = UpstreamCursor { upstream: self.cursor.clone(), last_seq: cursor };
        let batch = LogBatch { events, jobs: writes, cursor: cursor_row };
        let inserted = self.local.apply_log(batch).await.map_err(ClusterError::Apply)?;
        if let (Some(jobs), false) = (self.jobs.get(), records.is_empty()) {
            jobs.applied(records).await;
        }
        let duplicates = seqs.into_iter().zip(inserted).filter(|(_, inserted)| !inserted).map(|(seq, _)| seq);
        self.progress.advance(cursor, duplicates);
        Ok(())
    }
}

impl Applier {
    /// Reads one log entry: an event, a job record (maybe with the event it stores) or
    /// a group record.
    fn entry(&self, subject: &str, payload: &bytes::Bytes) -> Result<Entry, String> {
        let kind = subject.strip_prefix(self.stream.as_str()).and_then(|rest| rest.strip_prefix('.'));
        match kind.and_then(|rest| rest.split('.').next()) {
            Some("jobs") => {
                let record = JobRecord::decode(payload).map_err(|error| error.to_string())?;
                let event = match &record.event {
                    Some(raw) => Some(decode(&bytes::Bytes::from(raw.to_vec())).map_err(|error| error.to_string())?),
                    None => None,
                };
                Ok(Entry::Job(record, event))
            }
            Some("groups") => GroupRecord::decode(payload).map(Entry::Group).map_err(|error| error.to_string()),
            _ => decode(payload).map(Entry::Event).map_err(|error| error.to_string()),
        }
    }
}

/// An event as the log holds it (checked by the node that published it).
fn decode(raw: &bytes::Bytes) -> Result<Accepted, crate::protocol::ProtocolError> {
    let event = Event::decode(raw)?;
    let expires_at = expires_at(&event)?;
    Ok(Accepted { event, raw: raw.clone(), expires_at })
}
