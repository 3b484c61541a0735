//! Job queues (spec §14): queue subscriptions, offers under a lease, ACK / NACK /
//! EXTEND, completion by PUBLISH with `ack`, lease expiry and re-offer.
//!
//! [`queue`] is the state machine; this module is the glue: one lock around it, the
//! commits it asks for (made before any answer or offer that reports them), and the
//! dispatcher task that sends offers and wakes on commits, lapses and delays.

mod distributed;
pub mod queue;
pub mod shared;

pub use distributed::AppliedRecords;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::future::BoxFuture;
use tokio::sync::{watch, Notify};

use super::compact::CompactFilter;
use super::connections::ConnId;
use super::fanout::overflow_frame;
use super::metrics::Metrics;
use super::outbound::{OutFrame, Outbound};
use super::reply::{error_frame, ok_frame, store_error};
use super::store::{Accepted, Committed, JobRequests, JobWrite, Store, StoreError, StoredRow};
use crate::protocol::admin::Requeue;
use crate::protocol::frame::{encode_offer_frame, Extend, JobRef, Nack, OkLease, QueueSubscribe};
use crate::protocol::kind::{is_job_request, JOB_REQUESTS};
use crate::protocol::tags::expires_at;
use crate::protocol::{ErrorCode, Event, Frame, ProtocolError};
use queue::{Completion, Engine, Job, MemberId, MemberSpec, Refusal, RequeueRefusal};

/// Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|elapsed| elapsed.as_millis() as u64).unwrap_or(0)
}

/// Where a member's offers go.
#[derive(Clone)]
pub struct Handle {
    conn: ConnId,
    sub_id: Arc<str>,
    outbound: Arc<Outbound>,
}

struct Inner {
    engine: Engine<Handle>,
    members: HashMap<(ConnId, Arc<str>), MemberId>,
    /// On a cluster: per group and job, the log seq of the last record applied here.
    positions: HashMap<(String, u64), u64>,
    /// On a cluster: the leases other nodes hold, as their records name them.
    remote_leases: HashMap<(String, u64), shared::LeaseRecord>,
    /// On a cluster: jobs whose record this node is appending (not offered meanwhile).
    busy: std::collections::HashSet<(String, u64)>,
    /// On a cluster: the highest log seq of a record the applier applied here.
    applied_through: u64,
}

/// The relay's job queues.
pub struct Jobs {
    inner: Mutex<Inner>,
    wake: Notify,
    /// Held from a REQUEUE's check to its apply, so two re-queues of one job cannot both
    /// commit a fresh start.
    requeues: tokio::sync::Mutex<()>,
    /// On a cluster: the log the nodes share job states through ([`shared`]).
    log: std::sync::OnceLock<Arc<dyn shared::JobLog>>,
}

/// The ERROR 412 `lease-lost:` (or 410) for a refused job frame.
fn refusal_error(refusal: Refusal) -> ProtocolError {
    match refusal {
        Refusal::LeaseLost => {
            ProtocolError::new(ErrorCode::LeaseLost, "this subscription does not hold the job's current lease")
        }
        Refusal::Expired => ProtocolError::new(ErrorCode::Expired, "the job request has expired; the lease ended"),
    }
}

/// The ERROR 409 or 410 for a refused REQUEUE.
fn requeue_error(refusal: RequeueRefusal, requeue: &Requeue) -> ProtocolError {
    match refusal {
        RequeueRefusal::NotDead => ProtocolError::new(
            ErrorCode::Duplicate,
            format!("job {} is not dead in group {:?}: nothing to re-queue", hex::encode(requeue.job), requeue.group),
        ),
        RequeueRefusal::Expired => ProtocolError::new(ErrorCode::Expired, "the job request has expired"),
    }
}

/// The reply to a PUBLISH whose storing the job queues decided: OK with the seq, or the
/// error (naming `sub_id` for 412 and 410 when the publish completed a job).
fn stored_reply(metrics: &Metrics, id: [u8; 32], answer: Result<u64, ProtocolError>, sub_id: Option<&str>) -> OutFrame {
    match answer {
        Ok(seq) => {
            metrics.events_accepted.inc();
            ok_frame(id, Some(seq))
        }
        Err(error) => {
            metrics.rejected(error.code);
            match sub_id {
                Some(sub_id) if error.code == ErrorCode::LeaseLost || error.code == ErrorCode::Expired => {
                    job_error_frame(&error, id, sub_id)
                }
                _ => error_frame(&error, Some(id)),
            }
        }
    }
}

/// ERROR naming `id` and `sub_id`.
fn job_error_frame(error: &ProtocolError, id: [u8; 32], sub_id: &str) -> OutFrame {
    let mut message = crate::protocol::frame::ErrorMessage::from_error(error, Some(id));
    message.sub_id = Some(sub_id.to_owned());
    OutFrame::Binary(Frame::Error(message).encode())
}

/// Every filter of a queue subscription must limit `kinds` to 5000–5999 (else 400).
pub fn check_queue_filters(queue: &QueueSubscribe) -> Result<(), ProtocolError> {
    let limited = queue
        .subscribe
        .filters
        .iter()
        .all(|filter| filter.kinds.as_ref().is_some_and(|kinds| kinds.iter().all(|kind| is_job_request(*kind))));
    if !limited {
        return Err(ProtocolError::invalid(format!(
            "every filter of a queue subscription must limit kinds to {}-{}",
            JOB_REQUESTS.start(),
            JOB_REQUESTS.end()
        )));
    }
    Ok(())
}

/// What a queue SUBSCRIBE asks of its group.
fn member_spec(queue: &QueueSubscribe, conn: ConnId, sub_id: Arc<str>, outbound: Arc<Outbound>) -> MemberSpec<Handle> {
    MemberSpec {
        handle: Handle { conn, sub_id, outbound },
        filters: queue.subscribe.filters.iter().map(CompactFilter::new).collect(),
        lease_ms: queue.lease_secs.saturating_mul(1000),
        max_in_flight: queue.max_in_flight as usize,
    }
}

/// Decodes a stored job request.
fn job_of(seq: u64, raw: bytes::Bytes, event: Event) -> Job {
    let expires_at = expires_at(&event).ok().flatten();
    Job { seq, event, raw, expires_at }
}

/// Holds stored job requests in memory (no queue yet); returns their seqs.
fn hold_rows(engine: &mut Engine<Handle>, rows: Vec<StoredRow>) -> Vec<u64> {
    let mut held = Vec::with_capacity(rows.len());
    for row in rows {
        match Event::decode(&row.raw) {
            Ok(event) => {
                held.push(row.seq);
                engine.insert_job(job_of(row.seq, row.raw, event));
            }
            Err(error) => tracing::error!(seq = row.seq, %error, "stored job request does not decode"),
        }
    }
    held
}

impl Jobs {
    /// No groups yet; jobs die after `max_attempts` offers.
    pub fn new(max_attempts: u64) -> Jobs {
        Jobs {
            inner: Mutex::new(Inner {
                engine: Engine::new(max_attempts),
                members: HashMap::new(),
                positions: HashMap::new(),
                remote_leases: HashMap::new(),
                busy: std::collections::HashSet::new(),
                applied_through: 0,
            }),
            wake: Notify::new(),
            requeues: tokio::sync::Mutex::new(()),
            log: std::sync::OnceLock::new(),
        }
    }

    /// On a cluster: job states go through `log` (call before [`Jobs::load`]).
    pub fn share(&self, log: Arc<dyn shared::JobLog>) {
        let _ = self.log.set(log);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        crate::sync::lock(&self.inner)
    }

    /// Loads groups, job states and pending job requests (startup), committing the jobs
    /// a restart cut short on their last attempt as dead.
    pub async fn load(&self, store: &Store) -> Result<(), StoreError> {
        let snapshot = store.load_jobs(crate::clock::unix_now())?;
        let now = now_ms();
        let mut writes = Vec::new();
        {
            let mut inner = self.lock();
            hold_rows(&mut inner.engine, snapshot.requests);
            let mut by_group: HashMap<String, Vec<_>> = HashMap::new();
            for state in snapshot.states {
                by_group.entry(state.group.clone()).or_default().push(state);
            }
            for (name, start) in snapshot.groups {
                let rows = by_group.remove(&name).unwrap_or_default();
                writes.extend(inner.engine.restore_group(&name, start, rows, now));
            }
        }
        match self.shared_log() {
            Some(log) => {
                self.record_restored(&log, writes).await;
                Ok(())
            }
            None => store.write_jobs(writes).await,
        }
    }

    /// Commit hook: new job requests enter the queues and waiting members are woken.
    pub fn committed(&self, events: &[Committed]) {
        let mut added = false;
        let now = now_ms();
        {
            let mut inner = self.lock();
            for committed in events.iter().filter(|committed| is_job_request(committed.accepted.event.kind)) {
                let accepted: &Accepted = &committed.accepted;
                let job = Job {
                    seq: committed.seq,
                    event: accepted.event.clone(),
                    raw: accepted.raw.clone(),
                    expires_at: accepted.expires_at,
                };
                inner.engine.add_job(job, now);
                added = true;
            }
        }
        if added {
            self.wake.notify_one();
        }
    }

    /// Queue SUBSCRIBE (bounds already checked): joins the group (creating it, committed,
    /// if new); a subscription with the same `sub_id` is replaced.
    pub async fn subscribe(
        self: &Arc<Self>,
        store: &Store,
        conn: ConnId,
        queue: QueueSubscribe,
        outbound: Arc<Outbound>,
    ) -> Result<(), ProtocolError> {
        check_queue_filters(&queue)?;
        let sub_id: Arc<str> = Arc::from(queue.subscribe.sub_id.as_str());
        let start = queue.subscribe.after_seq.unwrap_or(0);
        if let Some(log) = self.shared_log() {
            let spec = member_spec(&queue, conn, sub_id.clone(), outbound);
            return self.join_shared(log, conn, sub_id, spec, &queue.group, start).await;
        }
        // A new group's queue holds every stored request after its start: load those
        // memory no longer holds (settled in the other groups) first.
        let creating = !self.lock().engine.has_group(&queue.group);
        let mut loaded_seqs = Vec::new();
        if creating {
            self.lock().engine.begin_loading();
            let loaded = store.job_requests(JobRequests::After(start)).await;
            let mut inner = self.lock();
            match loaded {
                Ok(rows) => loaded_seqs = hold_rows(&mut inner.engine, rows),
                Err(error) => {
                    inner.engine.end_loading();
                    return Err(store_error(&error));
                }
            }
        }
        let now = now_ms();
        let writes = {
            let mut inner = self.lock();
            let mut writes = match inner.members.remove(&(conn, sub_id.clone())) {
                Some(old) => inner.engine.leave(old, now),
                None => Vec::new(),
            };
            let spec = member_spec(&queue, conn, sub_id.clone(), outbound);
            let (member, joined) = inner.engine.join(&queue.group, start, spec, now);
            inner.members.insert((conn, sub_id), member);
            if creating {
                inner.engine.end_loading();
                // Another SUBSCRIBE may have created the group meanwhile (with another
                // start): drop what no group needs after all.
                for seq in loaded_seqs {
                    inner.engine.drop_if_settled(seq);
                }
            }
            writes.extend(joined);
            writes
        };
        let written = store.write_jobs(writes).await;
        self.wake.notify_one();
        written.map_err(|error| store_error(&error))
    }

    /// True if `sub_id` is a queue subscription of `conn`.
    pub fn is_queue(&self, conn: ConnId, sub_id: &str) -> bool {
        self.lock().members.contains_key(&(conn, Arc::from(sub_id)))
    }

    /// Ends one queue subscription (unknown ids are a no-op); its leases end.
    pub fn unsubscribe(self: &Arc<Self>, store: &Store, conn: ConnId, sub_id: &str) {
        let member = self.lock().members.remove(&(conn, Arc::from(sub_id)));
        self.end_members(store, member.into_iter().collect());
    }

    /// Ends every queue subscription of a closed connection.
    pub fn remove_connection(self: &Arc<Self>, store: &Store, conn: ConnId) {
        let members = {
            let mut inner = self.lock();
            let ended: Vec<(ConnId, Arc<str>)> =
                inner.members.keys().filter(|(owner, _)| *owner == conn).cloned().collect();
            ended.into_iter().filter_map(|key| inner.members.remove(&key)).collect()
        };
        self.end_members(store, members);
    }

    /// Members leave their groups; their leases end (recorded in the store, or on a
    /// cluster in the log).
    fn end_members(self: &Arc<Self>, store: &Store, members: Vec<MemberId>) {
        if members.is_empty() {
            return;
        }
        if let Some(log) = self.shared_log() {
            self.leave_shared(log, members);
            return;
        }
        let now = now_ms();
        let writes: Vec<JobWrite> = {
            let mut inner = self.lock();
            members.into_iter().flat_map(|member| inner.engine.leave(member, now)).collect()
        };
        self.persist_later(store, writes);
        self.wake.notify_one();
    }

    fn persist_later(&self, store: &Store, writes: Vec<JobWrite>) {
        if writes.is_empty() {
            return;
        }
        let store = store.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move {
                if let Err(error) = store.write_jobs(writes).await {
                    tracing::error!(%error, "committing job states failed");
                }
            });
        }
    }

    fn member(&self, conn: ConnId, sub_id: &str) -> Option<MemberId> {
        self.lock().members.get(&(conn, Arc::from(sub_id))).copied()
    }

    /// Checks the lease for a completion and reserves it (ACK, PUBLISH with `ack`).
    pub fn reserve(&self, conn: ConnId, job: &JobRef) -> Result<Completion, ProtocolError> {
        let member = self.member(conn, &job.sub_id).ok_or_else(|| refusal_error(Refusal::LeaseLost))?;
        let result = self.lock().engine.complete(member, &job.job, now_ms());
        result.map_err(refusal_error)
    }

    /// After a reserved completion's commit: done, or the lease goes on.
    pub fn finish(&self, store: &Store, completion: &Completion, committed: bool) {
        let writes = self.lock().engine.finish(completion, committed, now_ms());
        self.persist_later(store, writes);
        self.wake.notify_one();
    }

    /// ACK: commits the job done, then OK `{id: job}`.
    pub async fn ack(self: &Arc<Self>, store: &Store, conn: ConnId, job: JobRef) -> OutFrame {
        if let Some(log) = self.shared_log() {
            return self.ack_shared(log, conn, job).await;
        }
        let completion = match self.reserve(conn, &job) {
            Ok(completion) => completion,
            Err(error) => return job_error_frame(&error, job.job, &job.sub_id),
        };
        let (jobs, store) = (self.clone(), store.clone());
        // A task of its own: the commit and its bookkeeping finish even if the
        // connection goes away meanwhile.
        let task = tokio::spawn(async move {
            let written = store.write_jobs(vec![JobWrite::State(completion.row.clone())]).await;
            jobs.finish(&store, &completion, written.is_ok());
            written
        });
        match task.await {
            Ok(Ok(())) => ok_frame(job.job, None),
            Ok(Err(error)) => error_frame(&store_error(&error), Some(job.job)),
            Err(_) => error_frame(&store_error(&StoreError::Closed), Some(job.job)),
        }
    }

    /// PUBLISH with `ack` (after §8's checks before storage): duplicate (409) → lease
    /// (412) → job expiry (410) → store the event and complete the job in one
    /// transaction. Runs as a task of its own; resolves to the reply.
    pub fn publish_completing(
        self: &Arc<Self>,
        store: &Store,
        metrics: Arc<Metrics>,
        conn: ConnId,
        accepted: Arc<Accepted>,
        ack: JobRef,
    ) -> BoxFuture<'static, OutFrame> {
        let (jobs, store) = (self.clone(), store.clone());
        let id = accepted.event.id;
        let task = tokio::spawn(async move {
            let answer = jobs.store_completing(&store, conn, accepted, &ack).await;
            stored_reply(&metrics, id, answer, Some(&ack.sub_id))
        });
        Box::pin(async move { task.await.unwrap_or_else(|_| error_frame(&store_error(&StoreError::Closed), Some(id))) })
    }

    /// REQUEUE (kind 9002, admin checks done): duplicate (409) → the job is dead in the
    /// group (else 409) → not expired (410) → store the event and reset the job (no
    /// attempts, pending) in one transaction, then offer it as usual.
    pub fn publish_requeue(
        self: &Arc<Self>,
        store: &Store,
        metrics: Arc<Metrics>,
        accepted: Arc<Accepted>,
        requeue: Requeue,
    ) -> BoxFuture<'static, OutFrame> {
        let (jobs, store) = (self.clone(), store.clone());
        let id = accepted.event.id;
        let task = tokio::spawn(async move {
            let answer = jobs.store_requeue(&store, accepted, &requeue).await;
            stored_reply(&metrics, id, answer, None)
        });
        Box::pin(async move { task.await.unwrap_or_else(|_| error_frame(&store_error(&StoreError::Closed), Some(id))) })
    }

    async fn store_requeue(
        &self,
        store: &Store,
        accepted: Arc<Accepted>,
        requeue: &Requeue,
    ) -> Result<u64, ProtocolError> {
        if let Some(log) = self.shared_log() {
            return self.store_requeue_shared(log, store, accepted, requeue).await;
        }
        let _one_at_a_time = self.requeues.lock().await;
        if store.contains(accepted.event.id).await.map_err(|error| store_error(&error))? {
            return Err(store_error(&StoreError::Duplicate));
        }
        if !self.lock().engine.holds_job(&requeue.job) {
            // Dead everywhere, so no longer held: load it again (if still stored).
            let rows = store.job_requests(JobRequests::Id(requeue.job)).await.map_err(|error| store_error(&error))?;
            hold_rows(&mut self.lock().engine, rows);
        }
        let checked = self.lock().engine.requeue_row(&requeue.group, &requeue.job, now_ms());
        let row = match checked {
            Ok(row) => row,
            Err(refusal) => {
                self.lock().engine.drop_settled_id(&requeue.job);
                return Err(requeue_error(refusal, requeue));
            }
        };
        let answer = match store.submit_completing(accepted, row.clone()).await {
            Ok(pending) => pending.await,
            Err(error) => Err(error),
        };
        let mut inner = self.lock();
        if answer.is_ok() {
            inner.engine.requeued(&row.group, row.job_seq, now_ms());
            self.wake.notify_one();
        } else {
            inner.engine.drop_if_settled(row.job_seq);
        }
        drop(inner);
        answer.map_err(|error| store_error(&error))
    }

    async fn store_completing(
        self: &Arc<Self>,
        store: &Store,
        conn: ConnId,
        accepted: Arc<Accepted>,
        ack: &JobRef,
    ) -> Result<u64, ProtocolError> {
        if let Some(log) = self.shared_log() {
            return self.store_completing_shared(log, store, conn, accepted, ack).await;
        }
        if store.contains(accepted.event.id).await.map_err(|error| store_error(&error))? {
            return Err(store_error(&StoreError::Duplicate));
        }
        let completion = self.reserve(conn, ack)?;
        let pending = store.submit_completing(accepted, completion.row.clone()).await;
        let answer = match pending {
            Ok(pending) => pending.await,
            Err(error) => Err(error),
        };
        self.finish(store, &completion, answer.is_ok());
        answer.map_err(|error| store_error(&error))
    }

    /// NACK: the lease ends (committed), the job is offered again after the delay.
    pub async fn nack(self: &Arc<Self>, store: &Store, conn: ConnId, nack: Nack) -> OutFrame {
        if let Some(log) = self.shared_log() {
            return self.nack_shared(log, conn, nack).await;
        }
        let Nack { job, delay_secs } = nack;
        let delay_ms = delay_secs.unwrap_or(0).saturating_mul(1000);
        let outcome = match self.member(conn, &job.sub_id) {
            None => Err(Refusal::LeaseLost),
            Some(member) => self.lock().engine.nack(member, &job.job, delay_ms, now_ms()),
        };
        let writes = match outcome {
            Ok(writes) => writes,
            Err(refusal) => return job_error_frame(&refusal_error(refusal), job.job, &job.sub_id),
        };
        let written = store.write_jobs(writes).await;
        self.wake.notify_one();
        match written {
            Ok(()) => ok_frame(job.job, None),
            Err(error) => error_frame(&store_error(&error), Some(job.job)),
        }
    }

    /// EXTEND: renews the lease; OK `{id: job, until_ms}`.
    pub async fn extend(self: &Arc<Self>, conn: ConnId, extend: Extend) -> OutFrame {
        if let Some(log) = self.shared_log() {
            return self.extend_shared(log, conn, extend).await;
        }
        let Extend { job, lease_secs } = extend;
        let lease_ms = lease_secs.map(|secs| secs.saturating_mul(1000));
        let outcome = match self.member(conn, &job.sub_id) {
            None => Err(Refusal::LeaseLost),
            Some(member) => self.lock().engine.extend(member, &job.job, lease_ms, now_ms()),
        };
        self.wake.notify_one();
        match outcome {
            Ok(until_ms) => OutFrame::Binary(Frame::OkLease(OkLease { id: job.job, until_ms }).encode()),
            Err(refusal) => job_error_frame(&refusal_error(refusal), job.job, &job.sub_id),
        }
    }

    /// After retention deleted events: forgets the job requests no longer stored.
    pub async fn forget_deleted(&self, store: &Store) -> Result<(), StoreError> {
        let stored: std::collections::HashSet<u64> = store.job_request_seqs().await?.into_iter().collect();
        self.lock().engine.retain_jobs(|seq| stored.contains(&seq));
        self.wake.notify_one();
        Ok(())
    }

    /// Sets the per-group gauges and the held-requests gauge (at scrape time).
    pub fn export(&self, metrics: &Metrics) {
        let inner = self.lock();
        for (group, counts) in inner.engine.counts() {
            metrics.job_counts(&group, &counts);
        }
        metrics.job_requests_held.set(inner.engine.held_jobs() as i64);
    }

    /// Per-group counts (operator view).
    pub fn counts(&self) -> Vec<(String, queue::GroupCounts)> {
        self.lock().engine.counts()
    }

    /// One round: lapse leases, wake delayed jobs, make every offer possible, commit the
    /// attempts, then send the offers. Returns when to run again at the latest.
    async fn dispatch(self: &Arc<Self>, store: &Store) -> Option<u64> {
        let now = now_ms();
        let (offers, mut writes) = {
            let mut inner = self.lock();
            let lapsed = inner.engine.tick(now);
            inner.engine.drop_settled();
            let (offers, writes) = inner.engine.offers(now);
            (offers, [lapsed, writes].concat())
        };
        let committed = store.write_jobs(std::mem::take(&mut writes)).await;
        let mut overflowed = Vec::new();
        {
            let mut inner = self.lock();
            for offer in offers {
                let member = offer.member;
                let seq = offer.job.seq;
                if committed.is_err() || !inner.engine.is_member(member) {
                    inner.engine.withdraw(member, seq, now);
                    continue;
                }
                let frame = encode_offer_frame(&offer.handle.sub_id, seq, &offer.job.raw, offer.lease);
                if offer.handle.outbound.try_push(OutFrame::Binary(frame)).is_err() {
                    inner.engine.withdraw(member, seq, now);
                    overflowed.push(offer.handle);
                }
            }
            for handle in overflowed {
                if let Some(member) = inner.members.remove(&(handle.conn, handle.sub_id.clone())) {
                    writes.extend(inner.engine.leave(member, now));
                    handle.outbound.push_always(overflow_frame(&handle.sub_id, 0));
                }
            }
        }
        if let Err(error) = &committed {
            tracing::error!(%error, "committing job offers failed; offers withdrawn");
        }
        self.persist_later(store, writes);
        let deadline = self.lock().engine.next_deadline();
        if committed.is_err() {
            return Some(now + 1000);
        }
        deadline
    }

    /// The dispatcher: runs a round whenever woken (commit, member change, ACK/NACK) or
    /// when a lease lapses or a delay ends, until shutdown.
    pub async fn run(self: Arc<Self>, store: Store, mut shutdown: watch::Receiver<bool>) {
        loop {
            let deadline = match self.shared_log() {
                Some(log) => self.dispatch_shared(log).await,
                None => self.dispatch(&store).await,
            };
            let wait =
                deadline.map_or(Duration::from_secs(3600), |at| Duration::from_millis(at.saturating_sub(now_ms())));
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
                _ = shutdown.changed() => return,
            }
            if *shutdown.borrow() {
                return;
            }
        }
    }
}
