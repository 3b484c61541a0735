//! Job queues shared by the nodes of a cluster (spec §14, §16: a job is leased to one
//! member of a group across all nodes).
//!
//! Each node keeps its own [`super::queue::Engine`] for its own members; what every node
//! must agree on goes through the cluster's log as **records**, one history per job and
//! group, each record the job's whole state (attempts, done, dead, delay, and the
//! current lease with the node and member holding it). A node appends a record only if
//! the last record of that job is still the one its decision was based on (JetStream's
//! expected-last-subject-sequence), so two nodes can never both offer a job, both finish
//! it, or one finish a job another has re-offered: the loser's append fails, it reads the
//! job's last record and applies it. Every node applies every record in log order (its
//! local index stores the state; its engine follows), so a node that did not decide
//! learns the outcome. A group is a record of its own, created once (first append wins).
//!
//! A completion that stores an event (PUBLISH with `ack`, a REQUEUE) carries the event in
//! its record: the event and the job's new state are one log entry, applied in one
//! transaction, so a group never accepts two results for one job.

use std::sync::Arc;

use futures_util::future::BoxFuture;
use serde::{Deserialize, Serialize};

use super::super::store::{Accepted, JobRow, StoreError};

/// The lease in a [`JobRecord`]: who holds the job, until when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The holding node's instance (random per process start).
    pub node: String,
    /// The member on that node.
    pub member: u64,
    /// Unix milliseconds.
    pub until_ms: u64,
}

/// One job's whole state in one group, as the log carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobRecord {
    /// The group.
    pub group: String,
    /// The job request's seq.
    pub job_seq: u64,
    /// The job request's id.
    #[serde(with = "serde_bytes")]
    pub job: Vec<u8>,
    /// Offers made so far.
    pub attempts: u64,
    /// Completed in the group.
    pub done: bool,
    /// Given up after `max_attempts`.
    pub dead: bool,
    /// Unix milliseconds before which it is not offered again.
    pub not_before_ms: u64,
    /// The current lease, if any.
    pub lease: Option<LeaseRecord>,
    /// The event stored with this state (a result completing the job, a REQUEUE).
    #[serde(default)]
    pub event: Option<serde_bytes::ByteBuf>,
}

impl JobRecord {
    /// The row the local index stores.
    pub fn row(&self) -> JobRow {
        JobRow {
            group: self.group.clone(),
            job_seq: self.job_seq,
            attempts: self.attempts,
            done: self.done,
            dead: self.dead,
            not_before_ms: self.not_before_ms,
        }
    }

    /// MessagePack, fields by name.
    pub fn encode(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        rmp_serde::to_vec_named(self)
    }

    /// From [`JobRecord::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<JobRecord, rmp_serde::decode::Error> {
        rmp_serde::from_slice(bytes)
    }
}

/// A group's creation, as the log carries it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GroupRecord {
    /// The group's name.
    pub name: String,
    /// Its queue holds jobs with seq > this.
    pub start: u64,
}

impl GroupRecord {
    /// MessagePack, fields by name.
    pub fn encode(&self) -> Result<Vec<u8>, rmp_serde::encode::Error> {
        rmp_serde::to_vec_named(self)
    }

    /// From [`GroupRecord::encode`]'s bytes.
    pub fn decode(bytes: &[u8]) -> Result<GroupRecord, rmp_serde::decode::Error> {
        rmp_serde::from_slice(bytes)
    }
}

/// A record the log holds, with its log seq.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A group was created.
    Group {
        /// The record's log seq.
        seq: u64,
        /// The group.
        record: GroupRecord,
    },
    /// A job's state changed.
    Job {
        /// The record's log seq.
        seq: u64,
        /// The new state.
        record: JobRecord,
    },
}

/// Why an append did not happen.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// The job's last record is not the one the decision was based on.
    #[error("the job changed meanwhile")]
    Conflict,
    /// The log already holds the record's event (its id): a retry.
    #[error("the event is already in the log")]
    Duplicate,
    /// The log could not be reached or did not answer in time.
    #[error("{0}")]
    Unavailable(String),
}

impl AppendError {
    /// As a storage error (a conflict is not one: callers map it first).
    pub fn store_error(&self) -> StoreError {
        match self {
            AppendError::Duplicate => StoreError::Duplicate,
            other => StoreError::Unavailable(other.to_string()),
        }
    }
}

/// The cluster's log as the job queues use it.
pub trait JobLog: Send + Sync + 'static {
    /// This node's instance (named in the leases it records).
    fn node(&self) -> &str;

    /// Creates group `name` with queue start `start` unless it exists; returns the log seq
    /// of the group's record (the first one appended wins, with its start).
    fn create_group<'a>(&'a self, name: &'a str, start: u64) -> BoxFuture<'a, Result<u64, AppendError>>;

    /// Appends `record` if the job's last record is the one at `expected` (0: none);
    /// `event` is the stored event the record carries (its id deduplicates). Returns the
    /// record's log seq once the log holds it.
    fn append(
        &self,
        record: JobRecord,
        expected: u64,
        event: Option<Arc<Accepted>>,
    ) -> BoxFuture<'_, Result<u64, AppendError>>;

    /// The job's last record and its log seq, if any.
    fn latest<'a>(&'a self, group: &'a str, job_seq: u64) -> BoxFuture<'a, Result<Option<Applied>, AppendError>>;

    /// Resolves once this node applied log seq `seq` (bounded; else unavailable). Also
    /// fails with [`StoreError::Duplicate`] if the entry's event was stored before.
    fn applied(&self, seq: u64) -> BoxFuture<'_, Result<(), StoreError>>;
}

/// What the applier calls after committing records (in log order) to the local index.
pub trait AppliedJobs: Send + Sync + 'static {
    /// The records just committed.
    fn applied(&self, records: Vec<Applied>) -> BoxFuture<'_, ()>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_through_messagepack() {
        let record = JobRecord {
            group: "render".into(),
            job_seq: 42,
            job: vec![7; 32],
            attempts: 2,
            done: false,
            dead: false,
            not_before_ms: 5,
            lease: Some(LeaseRecord { node: "n1".into(), member: 3, until_ms: 99 }),
            event: Some(serde_bytes::ByteBuf::from(vec![1, 2, 3])),
        };
        let bytes = record.encode().expect("encode");
        assert_eq!(JobRecord::decode(&bytes).expect("decode"), record);
        assert_eq!(record.row().attempts, 2);
        let group = GroupRecord { name: "render".into(), start: 10 };
        assert_eq!(GroupRecord::decode(&group.encode().expect("encode")).expect("decode"), group);
        assert!(JobRecord::decode(b"not a record").is_err());
    }
}
