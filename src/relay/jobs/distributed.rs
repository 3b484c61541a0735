//! The job queues' glue on a cluster (see [`super::shared`] for the scheme): every
//! change of a job's state is decided on this node's engine, appended to the log as a
//! record conditional on the job's last record, and applied here once the log took it;
//! a refused append reads the job's last record and applies that instead.

use std::sync::Arc;

use futures_util::future::{join_all, BoxFuture};

use super::queue::{Completion, MemberId, Refusal, REMOTE};
use super::shared::{AppendError, Applied, AppliedJobs, JobLog, JobRecord, LeaseRecord};
use super::{hold_rows, job_error_frame, now_ms, refusal_error, Handle, Inner, Jobs};
use crate::protocol::admin::Requeue;
use crate::protocol::frame::{encode_offer_frame, Extend, JobRef, Nack, OkLease};
use crate::protocol::{ErrorCode, Frame, ProtocolError};
use crate::relay::connections::ConnId;
use crate::relay::fanout::overflow_frame;
use crate::relay::outbound::OutFrame;
use crate::relay::reply::{error_frame, ok_frame, store_error};
use crate::relay::store::{Accepted, JobRequests, JobRow, JobWrite, Store, StoreError};

/// The record of job `seq` in `group` as this engine sees it now, and the log seq of the
/// last record it is based on (0: none known).
fn record_of(inner: &Inner, node: &str, group: &str, seq: u64) -> Option<(JobRecord, u64)> {
    let super::queue::JobSnapshot { row, id, lease } = inner.engine.snapshot(group, seq)?;
    let key = (group.to_owned(), seq);
    let lease = match lease {
        Some((REMOTE, _)) => inner.remote_leases.get(&key).cloned(),
        Some((member, until_ms)) => Some(LeaseRecord { node: node.to_owned(), member, until_ms }),
        None => None,
    };
    let record = JobRecord {
        group: row.group.clone(),
        job_seq: seq,
        job: id?.to_vec(),
        attempts: row.attempts,
        done: row.done,
        dead: row.dead,
        not_before_ms: row.not_before_ms,
        lease,
        event: None,
    };
    Some((record, inner.positions.get(&key).copied().unwrap_or(0)))
}

/// Applies a record the log holds at `seq`, unless a later record of the job was applied
/// already, or (`from_applier` false: an append's answer, a read of the job's last
/// record) the applier already went past `seq`. Returns true if applied.
fn apply_record(inner: &mut Inner, node: &str, seq: u64, record: &JobRecord, from_applier: bool) -> bool {
    if from_applier {
        inner.applied_through = inner.applied_through.max(seq);
    } else if seq <= inner.applied_through {
        return false; // applied in log order already (and a done job's position dropped)
    }
    let key = (record.group.clone(), record.job_seq);
    let known = inner.positions.entry(key.clone()).or_insert(0);
    if *known >= seq {
        return false;
    }
    *known = seq;
    let lease = record.lease.as_ref().map(|lease| {
        let local = lease.node == node && inner.engine.group_of(lease.member) == Some(record.group.as_str());
        (if local { lease.member } else { REMOTE }, lease.until_ms)
    });
    match (&record.lease, lease) {
        (Some(holder), Some((REMOTE, _))) => {
            inner.remote_leases.insert(key, holder.clone());
        }
        _ => {
            inner.remote_leases.remove(&key);
        }
    }
    inner.engine.set_job_state(&record.row(), lease, now_ms());
    true
}

/// The jobs a list of writes changed.
fn keys_of(writes: &[JobWrite]) -> Vec<(String, u64)> {
    writes
        .iter()
        .filter_map(|write| match write {
            JobWrite::State(row) => Some((row.group.clone(), row.job_seq)),
            JobWrite::Group { .. } => None,
        })
        .collect()
}

/// An error frame for a failed append of a job frame's record.
fn append_error_frame(error: &AppendError, job: &JobRef) -> OutFrame {
    match error {
        AppendError::Conflict | AppendError::Duplicate => {
            job_error_frame(&refusal_error(Refusal::LeaseLost), job.job, &job.sub_id)
        }
        AppendError::Unavailable(_) => error_frame(&store_error(&error.store_error()), Some(job.job)),
    }
}

impl Jobs {
    /// The cluster's log, when job states are shared through it.
    pub(super) fn shared_log(&self) -> Option<Arc<dyn JobLog>> {
        self.log.get().cloned()
    }

    /// Reads job `seq`'s last record in `group` from the log and applies it.
    async fn refresh(&self, log: &Arc<dyn JobLog>, group: &str, seq: u64) {
        match log.latest(group, seq).await {
            Ok(Some(Applied::Job { seq: at, record })) => {
                apply_record(&mut self.lock(), log.node(), at, &record, false);
                self.wake.notify_one();
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(group, seq, %error, "reading a job's last record from the cluster log failed"),
        }
    }

    /// Appends the current state of each job in `keys` (each conditional on the record it
    /// is based on); a refused append refreshes the job from the log.
    pub(super) async fn append_keys(&self, log: &Arc<dyn JobLog>, keys: Vec<(String, u64)>) {
        let records: Vec<(JobRecord, u64)> = {
            let mut inner = self.lock();
            let records: Vec<_> =
                keys.iter().filter_map(|(group, seq)| record_of(&inner, log.node(), group, *seq)).collect();
            inner.busy.extend(keys);
            records
        };
        let appends = records.into_iter().map(|(record, expected)| async move {
            let key = (record.group.clone(), record.job_seq);
            (key, self.append_own(log, record, expected, None).await)
        });
        for ((group, job_seq), outcome) in join_all(appends).await {
            if let Err(AppendError::Unavailable(error)) = outcome {
                tracing::warn!(%group, job_seq, %error, "recording a job state failed");
            }
        }
    }

    /// [`Jobs::append_keys`] in a task of its own.
    pub(super) fn append_later(self: &Arc<Self>, log: Arc<dyn JobLog>, keys: Vec<(String, u64)>) {
        if keys.is_empty() {
            return;
        }
        let jobs = self.clone();
        if let Ok(runtime) = tokio::runtime::Handle::try_current() {
            runtime.spawn(async move { jobs.append_keys(&log, keys).await });
        }
    }

    /// Ends members (their leases end, recorded in the log), except leases whose
    /// completion is under way.
    pub(super) fn leave_shared(self: &Arc<Self>, log: Arc<dyn JobLog>, members: Vec<MemberId>) {
        if members.is_empty() {
            return; // nothing changes (and the dispatcher must not wake itself for nothing)
        }
        let now = now_ms();
        let keys = {
            let mut inner = self.lock();
            let mut keys = Vec::new();
            for member in members {
                let held = inner.engine.leases_of(member);
                inner.engine.leave(member, now);
                // A lease still there after leaving is being completed: its completion
                // records it.
                keys.extend(held.into_iter().filter(|(group, seq)| {
                    inner.engine.snapshot(group, *seq).is_none_or(|snapshot| !snapshot.leased_to(member))
                }));
            }
            keys
        };
        self.append_later(log, keys);
        self.wake.notify_one();
    }

    /// Creates group `name` (queue after `start`) here unless it exists, holding the
    /// stored requests after its start.
    async fn create_group_loaded(&self, store: &Store, name: &str, start: u64) -> Result<(), StoreError> {
        if self.lock().engine.has_group(name) {
            return Ok(());
        }
        self.lock().engine.begin_loading();
        let loaded = store.job_requests(JobRequests::After(start)).await;
        let mut inner = self.lock();
        let rows = match loaded {
            Ok(rows) => rows,
            Err(error) => {
                inner.engine.end_loading();
                return Err(error);
            }
        };
        let seqs = hold_rows(&mut inner.engine, rows);
        inner.engine.ensure_group(name, start, now_ms());
        inner.engine.end_loading();
        for seq in seqs {
            inner.engine.drop_if_settled(seq);
        }
        Ok(())
    }

    /// Queue SUBSCRIBE on a cluster: the group is created through the log (first creation
    /// wins, with its start) and applied here before the member joins.
    pub(super) async fn join_shared(
        self: &Arc<Self>,
        log: Arc<dyn JobLog>,
        conn: ConnId,
        sub_id: Arc<str>,
        spec: super::queue::MemberSpec<Handle>,
        group: &str,
        start: u64,
    ) -> Result<(), ProtocolError> {
        if !self.lock().engine.has_group(group) {
            let seq = log.create_group(group, start).await.map_err(|error| store_error(&error.store_error()))?;
            log.applied(seq).await.map_err(|error| store_error(&error))?;
        }
        let now = now_ms();
        let replaced = {
            let mut inner = self.lock();
            let replaced = inner.members.remove(&(conn, sub_id.clone()));
            let (member, _) = inner.engine.join(group, start, spec, now);
            inner.members.insert((conn, sub_id), member);
            replaced
        };
        if let Some(old) = replaced {
            self.leave_shared(log, vec![old]);
        }
        self.wake.notify_one();
        Ok(())
    }

    /// The group and seq of job `job` held by the member `sub_id` of `conn` names.
    fn key_of(&self, conn: ConnId, job: &JobRef) -> Option<(String, u64)> {
        let inner = self.lock();
        let member = inner.members.get(&(conn, Arc::from(job.sub_id.as_str())))?;
        let group = inner.engine.group_of(*member)?.to_owned();
        let seq = inner.engine.job_seq(&job.job)?;
        Some((group, seq))
    }

    /// After a refusal: a 410 ended the lease here, which the log must say too.
    fn record_refusal(self: &Arc<Self>, log: &Arc<dyn JobLog>, refusal: Refusal, key: Option<(String, u64)>) {
        if let (Refusal::Expired, Some(key)) = (refusal, key) {
            self.append_later(log.clone(), vec![key]);
        }
    }

    /// Appends `record` (based on `expected`) and applies it here; the log seq.
    async fn append_own(
        &self,
        log: &Arc<dyn JobLog>,
        record: JobRecord,
        expected: u64,
        event: Option<Arc<Accepted>>,
    ) -> Result<u64, AppendError> {
        let outcome = log.append(record.clone(), expected, event).await;
        self.lock().busy.remove(&(record.group.clone(), record.job_seq));
        match &outcome {
            Ok(seq) => {
                apply_record(&mut self.lock(), log.node(), *seq, &record, false);
            }
            Err(AppendError::Unavailable(_)) => {}
            Err(_) => self.refresh(log, &record.group, record.job_seq).await,
        }
        self.wake.notify_one();
        outcome
    }

    /// Reserves the completion of `job` for the member holding it and builds the record
    /// that completes it (with the log seq it is based on). A 410 ends the lease, which
    /// the log is told; a job whose record is unknown here is refused as lost.
    fn reserve_shared(
        self: &Arc<Self>,
        log: &Arc<dyn JobLog>,
        conn: ConnId,
        job: &JobRef,
    ) -> Result<(Completion, JobRecord, u64), ProtocolError> {
        let key = self.key_of(conn, job);
        let completion = self.reserve(conn, job).inspect_err(|error| {
            if error.code == ErrorCode::Expired {
                self.record_refusal(log, Refusal::Expired, key);
            }
        })?;
        match self.completion_record(log, &completion.row) {
            Some((record, expected)) => Ok((completion, record, expected)),
            None => {
                self.lock().engine.finish(&completion, false, now_ms());
                Err(refusal_error(Refusal::LeaseLost))
            }
        }
    }

    /// ACK on a cluster: the job's done record, then OK.
    pub(super) async fn ack_shared(self: &Arc<Self>, log: Arc<dyn JobLog>, conn: ConnId, job: JobRef) -> OutFrame {
        let (completion, record, expected) = match self.reserve_shared(&log, conn, &job) {
            Ok(reserved) => reserved,
            Err(error) => return job_error_frame(&error, job.job, &job.sub_id),
        };
        match self.append_own(&log, record, expected, None).await {
            Ok(_) => ok_frame(job.job, None),
            Err(error) => {
                self.lock().engine.finish(&completion, false, now_ms());
                append_error_frame(&error, &job)
            }
        }
    }

    /// The record that sets `row` (done, or re-queued) and ends the lease.
    fn completion_record(&self, log: &Arc<dyn JobLog>, row: &JobRow) -> Option<(JobRecord, u64)> {
        let inner = self.lock();
        let (mut record, expected) = record_of(&inner, log.node(), &row.group, row.job_seq)?;
        record.attempts = row.attempts;
        record.done = row.done;
        record.dead = row.dead;
        record.not_before_ms = row.not_before_ms;
        record.lease = None;
        Some((record, expected))
    }

    /// PUBLISH with `ack` on a cluster: the event travels in the job's done record, so
    /// it is stored exactly when the job is done; OK once applied here.
    pub(super) async fn store_completing_shared(
        self: &Arc<Self>,
        log: Arc<dyn JobLog>,
        store: &Store,
        conn: ConnId,
        accepted: Arc<Accepted>,
        ack: &JobRef,
    ) -> Result<u64, ProtocolError> {
        if store.contains(accepted.event.id).await.map_err(|error| store_error(&error))? {
            return Err(store_error(&StoreError::Duplicate));
        }
        let (completion, mut record, expected) = self.reserve_shared(&log, conn, ack)?;
        record.event = Some(serde_bytes::ByteBuf::from(accepted.raw.to_vec()));
        match self.append_own(&log, record, expected, Some(accepted)).await {
            Ok(seq) => {
                log.applied(seq).await.map_err(|error| store_error(&error))?;
                Ok(seq)
            }
            Err(error) => {
                self.lock().engine.finish(&completion, false, now_ms());
                Err(match error {
                    AppendError::Conflict => refusal_error(Refusal::LeaseLost),
                    other => store_error(&other.store_error()),
                })
            }
        }
    }

    /// NACK on a cluster: the record ending the lease (with the delay), then OK.
    pub(super) async fn nack_shared(self: &Arc<Self>, log: Arc<dyn JobLog>, conn: ConnId, nack: Nack) -> OutFrame {
        let Nack { job, delay_secs } = nack;
        let delay_ms = delay_secs.unwrap_or(0).saturating_mul(1000);
        let key = self.key_of(conn, &job);
        let outcome = match self.member(conn, &job.sub_id) {
            None => Err(Refusal::LeaseLost),
            Some(member) => {
                let mut inner = self.lock();
                let outcome = inner.engine.nack(member, &job.job, delay_ms, now_ms());
                // Not offered again before the log has the NACK.
                if let (Ok(_), Some(key)) = (&outcome, &key) {
                    inner.busy.insert(key.clone());
                }
                outcome
            }
        };
        if let Err(refusal) = outcome {
            self.record_refusal(&log, refusal, key);
            return job_error_frame(&refusal_error(refusal), job.job, &job.sub_id);
        }
        let record = key.as_ref().and_then(|(group, seq)| record_of(&self.lock(), log.node(), group, *seq));
        let Some((record, expected)) = record else {
            if let Some(key) = &key {
                self.lock().busy.remove(key);
            }
            return ok_frame(job.job, None);
        };
        match self.append_own(&log, record, expected, None).await {
            Ok(_) => ok_frame(job.job, None),
            Err(error) => append_error_frame(&error, &job),
        }
    }

    /// EXTEND on a cluster: the record with the lease's new end, then OK.
    pub(super) async fn extend_shared(
        self: &Arc<Self>,
        log: Arc<dyn JobLog>,
        conn: ConnId,
        extend: Extend,
    ) -> OutFrame {
        let Extend { job, lease_secs } = extend;
        let lease_ms = lease_secs.map(|secs| secs.saturating_mul(1000));
        let key = self.key_of(conn, &job);
        let outcome = match self.member(conn, &job.sub_id) {
            None => Err(Refusal::LeaseLost),
            Some(member) => self.lock().engine.extend(member, &job.job, lease_ms, now_ms()),
        };
        let until_ms = match outcome {
            Ok(until_ms) => until_ms,
            Err(refusal) => {
                self.record_refusal(&log, refusal, key);
                return job_error_frame(&refusal_error(refusal), job.job, &job.sub_id);
            }
        };
        let record = key.and_then(|(group, seq)| record_of(&self.lock(), log.node(), &group, seq));
        let Some((record, expected)) = record else {
            return job_error_frame(&refusal_error(Refusal::LeaseLost), job.job, &job.sub_id);
        };
        match self.append_own(&log, record, expected, None).await {
            Ok(_) => OutFrame::Binary(Frame::OkLease(OkLease { id: job.job, until_ms }).encode()),
            Err(error) => append_error_frame(&error, &job),
        }
    }

    /// REQUEUE on a cluster: the event travels in the record that starts the dead job
    /// over; OK once applied here.
    pub(super) async fn store_requeue_shared(
        &self,
        log: Arc<dyn JobLog>,
        store: &Store,
        accepted: Arc<Accepted>,
        requeue: &Requeue,
    ) -> Result<u64, ProtocolError> {
        let _one_at_a_time = self.requeues.lock().await;
        // Judge the job on everything the log holds, not only what reached this node.
        store.caught_up_to(u64::MAX).await.map_err(|error| store_error(&error))?;
        if store.contains(accepted.event.id).await.map_err(|error| store_error(&error))? {
            return Err(store_error(&StoreError::Duplicate));
        }
        if !self.lock().engine.holds_job(&requeue.job) {
            let rows = store.job_requests(JobRequests::Id(requeue.job)).await.map_err(|error| store_error(&error))?;
            hold_rows(&mut self.lock().engine, rows);
        }
        // A refused append read the job's last record: judge again once (this node may
        // not have known the job's last record, e.g. after a restart).
        for _ in 0..2 {
            let checked = self.lock().engine.requeue_row(&requeue.group, &requeue.job, now_ms());
            let row = match checked {
                Ok(row) => row,
                Err(refusal) => {
                    self.lock().engine.drop_settled_id(&requeue.job);
                    return Err(super::requeue_error(refusal, requeue));
                }
            };
            let Some((mut record, expected)) = self.completion_record(&log, &row) else { break };
            record.event = Some(serde_bytes::ByteBuf::from(accepted.raw.to_vec()));
            match self.append_own(&log, record, expected, Some(accepted.clone())).await {
                Ok(seq) => {
                    log.applied(seq).await.map_err(|error| store_error(&error))?;
                    return Ok(seq);
                }
                Err(AppendError::Conflict) => continue,
                Err(error) => return Err(store_error(&error.store_error())),
            }
        }
        Err(super::requeue_error(super::queue::RequeueRefusal::NotDead, requeue))
    }

    /// One dispatcher round on a cluster: lapse leases, make every offer possible, append
    /// each offer's record (an offer whose append is refused is withdrawn), then send the
    /// offers the log took. Returns when to run again at the latest.
    pub(super) async fn dispatch_shared(self: &Arc<Self>, log: Arc<dyn JobLog>) -> Option<u64> {
        let now = now_ms();
        let (offers, claims, dead) = {
            let mut inner = self.lock();
            let lapsed = inner.engine.tick(now);
            inner.engine.drop_settled();
            let (offers, _) = inner.engine.offers(now);
            // A job whose record this node is appending waits for it (withdrawn now,
            // offered in the round its append wakes).
            let (waiting, offers): (Vec<_>, Vec<_>) = offers.into_iter().partition(|offer| {
                inner
                    .engine
                    .group_of(offer.member)
                    .is_some_and(|group| inner.busy.contains(&(group.to_owned(), offer.job.seq)))
            });
            for offer in waiting {
                inner.engine.withdraw(offer.member, offer.job.seq, now);
            }
            let claims: Vec<Option<(JobRecord, u64)>> = offers
                .iter()
                .map(|offer| {
                    let group = inner.engine.group_of(offer.member)?.to_owned();
                    record_of(&inner, log.node(), &group, offer.job.seq)
                })
                .collect();
            (offers, claims, keys_of(&lapsed))
        };
        self.append_later(log.clone(), dead);
        let appends = claims.into_iter().map(|claim| {
            let log = log.clone();
            async move {
                match claim {
                    Some((record, expected)) => {
                        let outcome = log.append(record.clone(), expected, None).await;
                        Some((record, outcome))
                    }
                    None => None,
                }
            }
        });
        let outcomes = join_all(appends).await;
        let mut overflowed = Vec::new();
        let mut refresh = Vec::new();
        let mut unavailable = false;
        {
            let mut inner = self.lock();
            for (offer, outcome) in offers.into_iter().zip(outcomes) {
                let (member, seq) = (offer.member, offer.job.seq);
                match outcome {
                    Some((record, Ok(at))) => {
                        apply_record(&mut inner, log.node(), at, &record, false);
                    }
                    Some((record, Err(error))) => {
                        inner.engine.withdraw(member, seq, now);
                        match error {
                            AppendError::Unavailable(_) => unavailable = true,
                            _ => refresh.push((record.group, record.job_seq)),
                        }
                        continue;
                    }
                    None => {
                        inner.engine.withdraw(member, seq, now);
                        continue;
                    }
                }
                let Some(group) = inner.engine.group_of(member).map(str::to_owned) else { continue };
                let still_held = inner.engine.snapshot(&group, seq).is_some_and(|snapshot| snapshot.leased_to(member));
                if !still_held {
                    continue;
                }
                let frame = encode_offer_frame(&offer.handle.sub_id, seq, &offer.job.raw, offer.lease);
                if offer.handle.outbound.try_push(OutFrame::Binary(frame)).is_err() {
                    overflowed.push(offer.handle);
                }
            }
        }
        for (group, seq) in refresh {
            self.refresh(&log, &group, seq).await;
        }
        let mut left = Vec::new();
        {
            let mut inner = self.lock();
            for handle in overflowed {
                if let Some(member) = inner.members.remove(&(handle.conn, handle.sub_id.clone())) {
                    left.push(member);
                    handle.outbound.push_always(overflow_frame(&handle.sub_id, 0));
                }
            }
        }
        self.leave_shared(log, left);
        let deadline = self.lock().engine.next_deadline();
        if unavailable {
            return Some(now + 1000);
        }
        deadline
    }

    /// Startup on a cluster: the jobs a restart cut short on their last attempt are
    /// recorded dead (unless another node's record says otherwise).
    pub(super) async fn record_restored(&self, log: &Arc<dyn JobLog>, writes: Vec<JobWrite>) {
        self.append_keys(log, keys_of(&writes)).await;
    }
}

/// Applies the records the cluster's applier committed to this node's job queues.
pub struct AppliedRecords {
    /// The job queues.
    pub jobs: Arc<Jobs>,
    /// The local index (to load requests a new group or a re-queue needs).
    pub store: Store,
}

impl AppliedRecords {
    async fn apply(&self, records: Vec<Applied>) {
        let Some(log) = self.jobs.shared_log() else { return };
        let mut missing = Vec::new();
        for applied in records {
            match applied {
                Applied::Group { record, .. } => {
                    if let Err(error) = self.jobs.create_group_loaded(&self.store, &record.name, record.start).await {
                        tracing::error!(group = %record.name, %error, "loading a new group's jobs failed");
                    }
                }
                Applied::Job { seq, record } => {
                    let mut inner = self.jobs.lock();
                    let applied = apply_record(&mut inner, log.node(), seq, &record, true);
                    let key = (record.group.clone(), record.job_seq);
                    if record.done {
                        // The log is applied in order: no older record of it can follow.
                        if inner.positions.get(&key).is_some_and(|known| *known <= seq) {
                            inner.positions.remove(&key);
                        }
                    } else if applied && !record.dead && !inner.engine.holds_seq(record.job_seq) {
                        missing.push((key, record.job.clone()));
                    }
                }
            }
        }
        for ((group, seq), id) in missing {
            let Ok(id) = <[u8; 32]>::try_from(id.as_slice()) else { continue };
            match self.store.job_requests(JobRequests::Id(id)).await {
                Ok(rows) => {
                    let mut inner = self.jobs.lock();
                    hold_rows(&mut inner.engine, rows);
                    inner.engine.add_to_group(&group, seq, now_ms());
                }
                Err(error) => tracing::error!(group, seq, %error, "loading a re-queued job failed"),
            }
        }
        self.jobs.wake.notify_one();
    }
}

impl AppliedJobs for AppliedRecords {
    fn applied(&self, records: Vec<Applied>) -> BoxFuture<'_, ()> {
        Box::pin(self.apply(records))
    }
}
