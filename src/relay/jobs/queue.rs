//! The job-queue state machine (spec §14), free of I/O: groups, members, leases,
//! attempts. Every change that must be committed comes back as [`JobWrite`]s; the caller
//! commits them before it answers.
//!
//! Per group, the jobs that may be offered now are a `BTreeSet` of seqs (oldest first),
//! leases expire through a `BTreeSet` ordered by deadline, and members form a ring served
//! round-robin: an offer costs O(log n) in the pending jobs plus a walk of the ring.
//!
//! Only job requests some group may still offer are held in memory: a request that is
//! done or dead in every group (or before every group's start, or with no group at all)
//! is *settled* and dropped; the caller loads requests from the store again when a new
//! group starts before them or a dead one is re-queued.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound;
use std::sync::Arc;

use bytes::Bytes;

use super::super::compact::CompactFilter;
use super::super::store::{JobRow, JobWrite};
use crate::protocol::frame::Lease;
use crate::protocol::{Event, EventId};

/// Identifies one queue subscription.
pub type MemberId = u64;

/// The holder of a lease another node of a cluster gave (never a local member).
pub const REMOTE: MemberId = 0;

/// A stored job request.
#[derive(Debug)]
pub struct Job {
    /// Its seq.
    pub seq: u64,
    /// The decoded event (for filter matching).
    pub event: Event,
    /// Its bytes as stored.
    pub raw: Bytes,
    /// From its `expires_at` tag (unix seconds).
    pub expires_at: Option<u64>,
}

impl Job {
    /// True once `expires_at` ≤ now.
    fn expired(&self, now_ms: u64) -> bool {
        self.expires_at.is_some_and(|at| at.saturating_mul(1000) <= now_ms)
    }
}

/// Why an ACK, NACK, EXTEND or completing PUBLISH is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 412: the subscription does not hold the job's current lease.
    LeaseLost,
    /// 410: the job request has expired (the lease ended).
    Expired,
}

/// Why a REQUEUE (kind 9002) is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequeueRefusal {
    /// 409: the job is not dead in the group (pending, leased, done, unknown), or there
    /// is no such group: nothing to re-queue.
    NotDead,
    /// 410: the job request has expired.
    Expired,
}

/// A lease given to a member, to be sent as an EVENT with `lease`.
pub struct OfferOut<H> {
    /// The member's handle.
    pub handle: H,
    /// The member.
    pub member: MemberId,
    /// The job.
    pub job: Arc<Job>,
    /// Its lease.
    pub lease: Lease,
}

/// A lease reserved for completion: commit it, then [`Engine::finish`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Completion {
    /// The group.
    pub group: String,
    /// The member completing.
    pub member: MemberId,
    /// The job's seq.
    pub job_seq: u64,
    /// The row to commit (done).
    pub row: JobRow,
}

/// One job's state in one group (see [`Engine::snapshot`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobSnapshot {
    /// Attempts, done, dead, delay.
    pub row: JobRow,
    /// The request's id, if held.
    pub id: Option<EventId>,
    /// The current lease: holder ([`REMOTE`] or a member) and end.
    pub lease: Option<(MemberId, u64)>,
}

impl JobSnapshot {
    /// True if `member` holds the current lease.
    pub fn leased_to(&self, member: MemberId) -> bool {
        self.lease.is_some_and(|(holder, _)| holder == member)
    }
}

/// One group's counts, for metrics and the operator view.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupCounts {
    /// Waiting to be offered (including delayed and lapsed leases).
    pub pending: u64,
    /// Held under an unexpired lease.
    pub leased: u64,
    /// Completed.
    pub done: u64,
    /// Given up.
    pub dead: u64,
    /// Offers after the first.
    pub redeliveries: u64,
}

#[derive(Debug, Clone)]
struct LeaseState {
    member: MemberId,
    until_ms: u64,
    /// Expired, still current until the job is offered again.
    lapsed: bool,
    /// Reserved by an ACK or completing PUBLISH whose commit is under way.
    completing: bool,
}

struct Member<H> {
    handle: H,
    filters: Vec<CompactFilter>,
    lease_ms: u64,
    max_in_flight: usize,
    in_flight: usize,
}

impl<H> Member<H> {
    fn free(&self) -> bool {
        self.in_flight < self.max_in_flight
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Finished {
    Done,
    Dead,
}

struct Group<H> {
    name: String,
    start: u64,
    ready: BTreeSet<u64>,
    delayed: BTreeSet<(u64, u64)>,
    not_before: HashMap<u64, u64>,
    leases: HashMap<u64, LeaseState>,
    expiries: BTreeSet<(u64, u64)>,
    attempts: HashMap<u64, u64>,
    finished: HashMap<u64, Finished>,
    /// Jobs finished since the last [`Engine::drop_settled`]: maybe settled now.
    newly_finished: Vec<u64>,
    members: BTreeMap<MemberId, Member<H>>,
    cursor: MemberId,
    done: u64,
    dead: u64,
    redeliveries: u64,
}

impl<H: Clone> Group<H> {
    fn new(name: &str, start: u64) -> Group<H> {
        Group {
            name: name.to_owned(),
            start,
            ready: BTreeSet::new(),
            delayed: BTreeSet::new(),
            not_before: HashMap::new(),
            leases: HashMap::new(),
            expiries: BTreeSet::new(),
            attempts: HashMap::new(),
            finished: HashMap::new(),
            newly_finished: Vec::new(),
            members: BTreeMap::new(),
            cursor: 0,
            done: 0,
            dead: 0,
            redeliveries: 0,
        }
    }

    fn row(&self, seq: u64) -> JobRow {
        JobRow {
            group: self.name.clone(),
            job_seq: seq,
            attempts: self.attempts.get(&seq).copied().unwrap_or(0),
            done: self.finished.get(&seq) == Some(&Finished::Done),
            dead: self.finished.get(&seq) == Some(&Finished::Dead),
            not_before_ms: self.not_before.get(&seq).copied().unwrap_or(0),
        }
    }

    /// A job enters the queue (unless it is before the start or finished).
    fn add(&mut self, seq: u64, now_ms: u64) {
        if seq <= self.start || self.finished.contains_key(&seq) || self.leases.contains_key(&seq) {
            return;
        }
        match self.not_before.get(&seq) {
            Some(&at) if at > now_ms => {
                self.delayed.insert((at, seq));
            }
            _ => {
                self.ready.insert(seq);
            }
        }
    }

    fn mark_dead(&mut self, seq: u64) -> JobWrite {
        self.ready.remove(&seq);
        self.finished.insert(seq, Finished::Dead);
        self.newly_finished.push(seq);
        self.dead += 1;
        JobWrite::State(self.row(seq))
    }

    /// Removes a lease and frees its holder's slot (if the lease still counted).
    fn drop_lease(&mut self, seq: u64) -> Option<LeaseState> {
        let lease = self.leases.remove(&seq)?;
        if !lease.lapsed {
            self.expiries.remove(&(lease.until_ms, seq));
            if let Some(member) = self.members.get_mut(&lease.member) {
                member.in_flight = member.in_flight.saturating_sub(1);
            }
        }
        Some(lease)
    }

    /// An attempt ended without completion: dead after `max_attempts`, else pending again.
    fn attempt_ended(&mut self, seq: u64, max_attempts: u64, now_ms: u64, writes: &mut Vec<JobWrite>) {
        if self.attempts.get(&seq).copied().unwrap_or(0) >= max_attempts {
            writes.push(self.mark_dead(seq));
        } else {
            self.add(seq, now_ms);
        }
    }

    /// The next member in ring order with free capacity whose filters match `job`,
    /// preferring anyone but `avoid`.
    fn pick(&self, job: &Job, avoid: Option<MemberId>) -> Option<MemberId> {
        let after = (Bound::Excluded(self.cursor), Bound::Unbounded);
        let ring = self.members.range(after).chain(self.members.range(..=self.cursor));
        let mut fallback = None;
        for (id, member) in ring {
            if !member.free() || !member.filters.iter().any(|filter| filter.matches(&job.event)) {
                continue;
            }
            if Some(*id) != avoid {
                return Some(*id);
            }
            fallback = Some(*id);
        }
        fallback
    }

    fn any_free(&self) -> bool {
        self.members.values().any(Member::free)
    }

    /// True once the group will never offer `seq` (before its start, done or dead).
    fn settled(&self, seq: u64) -> bool {
        seq <= self.start || self.finished.contains_key(&seq)
    }
}

/// Every group, every member, every lease.
pub struct Engine<H> {
    max_attempts: u64,
    /// The job requests some group may still offer (see the module doc).
    jobs: BTreeMap<u64, Arc<Job>>,
    /// Group creations in progress ([`Self::begin_loading`]): settled jobs are kept.
    loading: usize,
    /// Jobs kept while a creation was in progress: maybe settled afterwards.
    kept_while_loading: Vec<u64>,
    by_id: HashMap<EventId, u64>,
    groups: HashMap<String, Group<H>>,
    member_group: HashMap<MemberId, String>,
    next_member: MemberId,
}

/// What a new member asks for.
pub struct MemberSpec<H> {
    /// Returned with its offers.
    pub handle: H,
    /// Its filters (all limited to job kinds).
    pub filters: Vec<CompactFilter>,
    /// Lease length.
    pub lease_ms: u64,
    /// Most unfinished leases at once.
    pub max_in_flight: usize,
}

impl<H: Clone> Engine<H> {
    /// No groups, no jobs.
    pub fn new(max_attempts: u64) -> Engine<H> {
        Engine {
            max_attempts: max_attempts.max(1),
            jobs: BTreeMap::new(),
            loading: 0,
            kept_while_loading: Vec::new(),
            by_id: HashMap::new(),
            groups: HashMap::new(),
            member_group: HashMap::new(),
            next_member: 1,
        }
    }

    /// Restores a group and its committed job states (startup). Returns writes for jobs
    /// whose last allowed attempt was cut short by the restart (they are now dead).
    pub fn restore_group(&mut self, name: &str, start: u64, rows: Vec<JobRow>, now_ms: u64) -> Vec<JobWrite> {
        let mut group = Group::new(name, start);
        let mut writes = Vec::new();
        for row in rows {
            group.attempts.insert(row.job_seq, row.attempts);
            if row.not_before_ms > 0 {
                group.not_before.insert(row.job_seq, row.not_before_ms);
            }
            if row.done {
                group.finished.insert(row.job_seq, Finished::Done);
                group.done += 1;
            } else if row.dead {
                group.finished.insert(row.job_seq, Finished::Dead);
                group.dead += 1;
            } else if row.attempts >= self.max_attempts {
                writes.push(group.mark_dead(row.job_seq));
            }
        }
        for seq in self.jobs.range(start + 1..).map(|(seq, _)| *seq) {
            group.add(seq, now_ms);
        }
        self.groups.insert(name.to_owned(), group);
        writes
    }

    /// A job request was committed: it enters every group it is after the start of (and
    /// is not held at all if no group can offer it).
    pub fn add_job(&mut self, job: Job, now_ms: u64) {
        let seq = job.seq;
        self.insert_job(job);
        for group in self.groups.values_mut() {
            group.add(seq, now_ms);
        }
        self.drop_if_settled(seq);
    }

    /// Holds a stored job request (loaded at startup, for a new group or a re-queue)
    /// without adding it to any queue.
    pub fn insert_job(&mut self, job: Job) {
        self.by_id.insert(job.event.id, job.seq);
        self.jobs.insert(job.seq, Arc::new(job));
    }

    /// True if the request with `id` is held in memory.
    pub fn holds_job(&self, id: &EventId) -> bool {
        self.by_id.contains_key(id)
    }

    /// True if the group exists.
    pub fn has_group(&self, name: &str) -> bool {
        self.groups.contains_key(name)
    }

    /// A group creation starts loading requests from the store: until
    /// [`Self::end_loading`], jobs committed meanwhile are kept even if settled.
    pub fn begin_loading(&mut self) {
        self.loading += 1;
    }

    /// The end of [`Self::begin_loading`] (whether the group was created or not).
    pub fn end_loading(&mut self) {
        self.loading = self.loading.saturating_sub(1);
        if self.loading == 0 {
            for seq in std::mem::take(&mut self.kept_while_loading) {
                self.drop_if_settled(seq);
            }
        }
    }

    /// Drops `seq` from memory if no group can offer it; while a group creation is
    /// loading, decides when it ends.
    pub fn drop_if_settled(&mut self, seq: u64) {
        if self.loading > 0 {
            self.kept_while_loading.push(seq);
            return;
        }
        if !self.groups.values().all(|group| group.settled(seq)) {
            return;
        }
        if let Some(job) = self.jobs.remove(&seq) {
            self.by_id.remove(&job.event.id);
        }
    }

    /// [`Self::drop_if_settled`] by id.
    pub fn drop_settled_id(&mut self, id: &EventId) {
        if let Some(seq) = self.by_id.get(id).copied() {
            self.drop_if_settled(seq);
        }
    }

    /// Drops the jobs finished since the last call that are now settled in every group.
    pub fn drop_settled(&mut self) {
        let finished: Vec<u64> =
            self.groups.values_mut().flat_map(|group| std::mem::take(&mut group.newly_finished)).collect();
        for seq in finished {
            self.drop_if_settled(seq);
        }
    }

    /// How many job requests are held in memory.
    pub fn held_jobs(&self) -> usize {
        self.jobs.len()
    }

    /// Forgets every job request `stored` says is gone (deleted by retention or expiry):
    /// it leaves every queue, and a lease on it ends.
    pub fn retain_jobs(&mut self, stored: impl Fn(u64) -> bool) {
        let gone: BTreeSet<u64> = self.jobs.keys().copied().filter(|seq| !stored(*seq)).collect();
        if gone.is_empty() {
            return;
        }
        for seq in &gone {
            if let Some(job) = self.jobs.remove(seq) {
                self.by_id.remove(&job.event.id);
            }
        }
        for group in self.groups.values_mut() {
            group.ready.retain(|seq| !gone.contains(seq));
            group.delayed.retain(|(_, seq)| !gone.contains(seq));
            for seq in &gone {
                group.drop_lease(*seq);
            }
        }
    }

    /// Adds a member, creating its group (queue after `start`) if new.
    pub fn join(&mut self, group: &str, start: u64, spec: MemberSpec<H>, now_ms: u64) -> (MemberId, Vec<JobWrite>) {
        let mut writes = Vec::new();
        if !self.groups.contains_key(group) {
            writes.push(JobWrite::Group { name: group.to_owned(), start_seq: start });
            self.restore_group(group, start, Vec::new(), now_ms);
        }
        let id = self.next_member;
        self.next_member += 1;
        let member = Member {
            handle: spec.handle,
            filters: spec.filters,
            lease_ms: spec.lease_ms,
            max_in_flight: spec.max_in_flight,
            in_flight: 0,
        };
        if let Some(entry) = self.groups.get_mut(group) {
            entry.members.insert(id, member);
        }
        self.member_group.insert(id, group.to_owned());
        (id, writes)
    }

    /// Removes a member; its leases end (except one whose completion is being committed).
    pub fn leave(&mut self, member: MemberId, now_ms: u64) -> Vec<JobWrite> {
        let mut writes = Vec::new();
        let Some(name) = self.member_group.remove(&member) else { return writes };
        let max_attempts = self.max_attempts;
        let Some(group) = self.groups.get_mut(&name) else { return writes };
        let held: Vec<u64> = group
            .leases
            .iter()
            .filter(|(_, lease)| lease.member == member && !lease.completing)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in held {
            group.drop_lease(seq);
            group.ready.remove(&seq);
            group.attempt_ended(seq, max_attempts, now_ms, &mut writes);
        }
        group.members.remove(&member);
        writes
    }

    /// Lapses expired leases and wakes delayed jobs. Returns the writes (dead jobs).
    pub fn tick(&mut self, now_ms: u64) -> Vec<JobWrite> {
        let mut writes = Vec::new();
        let max_attempts = self.max_attempts;
        for group in self.groups.values_mut() {
            while let Some(&(until, seq)) = group.expiries.first() {
                if until > now_ms {
                    break;
                }
                group.expiries.remove(&(until, seq));
                let Some(lease) = group.leases.get_mut(&seq) else { continue };
                lease.lapsed = true;
                let (holder, completing) = (lease.member, lease.completing);
                if let Some(member) = group.members.get_mut(&holder) {
                    member.in_flight = member.in_flight.saturating_sub(1);
                }
                if completing {
                    continue; // decided by `finish`
                }
                if group.attempts.get(&seq).copied().unwrap_or(0) >= max_attempts {
                    group.leases.remove(&seq);
                    writes.push(group.mark_dead(seq));
                } else {
                    group.ready.insert(seq);
                }
            }
            while let Some(&(at, seq)) = group.delayed.first() {
                if at > now_ms {
                    break;
                }
                group.delayed.remove(&(at, seq));
                group.ready.insert(seq);
            }
        }
        writes
    }

    /// Makes every offer possible now: oldest job first, each to one free matching member.
    /// The writes (attempt counts) must be committed before the offers are sent.
    pub fn offers(&mut self, now_ms: u64) -> (Vec<OfferOut<H>>, Vec<JobWrite>) {
        let (mut offers, mut writes) = (Vec::new(), Vec::new());
        for group in self.groups.values_mut() {
            offer_group(group, &self.jobs, now_ms, &mut offers, &mut writes);
        }
        (offers, writes)
    }

    /// Undoes an offer that could not be committed or delivered: the lease ends and the
    /// attempt is not counted.
    pub fn withdraw(&mut self, member: MemberId, job_seq: u64, now_ms: u64) {
        let Some(group) = self.member_group.get(&member).and_then(|name| self.groups.get_mut(name)) else {
            return;
        };
        if group.leases.get(&job_seq).is_some_and(|lease| lease.member == member && !lease.completing) {
            group.drop_lease(job_seq);
            if let Some(attempts) = group.attempts.get_mut(&job_seq) {
                *attempts = attempts.saturating_sub(1);
            }
            group.add(job_seq, now_ms);
        }
    }

    /// Finds the lease `member` holds on job `id`, applying the job's expiry (410 ends it).
    fn held(&mut self, member: MemberId, id: &EventId, now_ms: u64) -> Result<(&mut Group<H>, u64), Refusal> {
        let seq = *self.by_id.get(id).ok_or(Refusal::LeaseLost)?;
        let name = self.member_group.get(&member).ok_or(Refusal::LeaseLost)?;
        let group = self.groups.get_mut(name).ok_or(Refusal::LeaseLost)?;
        let holds = group.leases.get(&seq).is_some_and(|lease| lease.member == member && !lease.completing);
        if !holds {
            return Err(Refusal::LeaseLost);
        }
        if self.jobs.get(&seq).is_none_or(|job| job.expired(now_ms)) {
            group.drop_lease(seq);
            group.ready.remove(&seq);
            return Err(Refusal::Expired);
        }
        Ok((group, seq))
    }

    /// ACK or completing PUBLISH: reserves the lease; commit the row, then [`Self::finish`].
    pub fn complete(&mut self, member: MemberId, id: &EventId, now_ms: u64) -> Result<Completion, Refusal> {
        let (group, seq) = self.held(member, id, now_ms)?;
        if let Some(lease) = group.leases.get_mut(&seq) {
            lease.completing = true;
        }
        let mut row = group.row(seq);
        row.done = true;
        Ok(Completion { group: group.name.clone(), member, job_seq: seq, row })
    }

    /// After the commit of a [`Completion`]: done if `committed`, else the lease goes on
    /// (or ends, if its holder left or it lapsed meanwhile).
    pub fn finish(&mut self, completion: &Completion, committed: bool, now_ms: u64) -> Vec<JobWrite> {
        let mut writes = Vec::new();
        let max_attempts = self.max_attempts;
        let Some(group) = self.groups.get_mut(&completion.group) else { return writes };
        let seq = completion.job_seq;
        if committed {
            group.drop_lease(seq);
            group.ready.remove(&seq);
            if group.finished.insert(seq, Finished::Done).is_none() {
                group.done += 1;
                group.newly_finished.push(seq);
            }
            return writes;
        }
        let Some(lease) = group.leases.get_mut(&seq) else { return writes };
        if lease.member != completion.member {
            return writes; // superseded meanwhile (a cluster's other node re-offered it)
        }
        lease.completing = false;
        let (holder, lapsed) = (lease.member, lease.lapsed);
        if !group.members.contains_key(&holder) {
            group.drop_lease(seq);
            group.attempt_ended(seq, max_attempts, now_ms, &mut writes);
        } else if lapsed {
            // It lapsed while the commit ran: as `tick` would have done.
            if group.attempts.get(&seq).copied().unwrap_or(0) >= max_attempts {
                group.leases.remove(&seq);
                writes.push(group.mark_dead(seq));
            } else {
                group.ready.insert(seq);
            }
        }
        writes
    }

    /// NACK: the lease ends; the job is offered again after `delay_ms` (or is dead).
    pub fn nack(
        &mut self,
        member: MemberId,
        id: &EventId,
        delay_ms: u64,
        now_ms: u64,
    ) -> Result<Vec<JobWrite>, Refusal> {
        let max_attempts = self.max_attempts;
        let (group, seq) = self.held(member, id, now_ms)?;
        group.drop_lease(seq);
        group.ready.remove(&seq);
        let mut writes = Vec::new();
        if group.attempts.get(&seq).copied().unwrap_or(0) >= max_attempts {
            writes.push(group.mark_dead(seq));
            return Ok(writes);
        }
        if delay_ms > 0 {
            group.not_before.insert(seq, now_ms.saturating_add(delay_ms));
            writes.push(JobWrite::State(group.row(seq)));
        } else if group.not_before.remove(&seq).is_some() {
            writes.push(JobWrite::State(group.row(seq)));
        }
        group.add(seq, now_ms);
        Ok(writes)
    }

    /// EXTEND: renews the lease from now for `lease_ms` (default: the member's). Returns
    /// the new end.
    pub fn extend(
        &mut self,
        member: MemberId,
        id: &EventId,
        lease_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<u64, Refusal> {
        let (group, seq) = self.held(member, id, now_ms)?;
        let default = group.members.get(&member).map_or(0, |holder| holder.lease_ms);
        let until = now_ms.saturating_add(lease_ms.unwrap_or(default));
        let Some(lease) = group.leases.get_mut(&seq) else { return Err(Refusal::LeaseLost) };
        let was_lapsed = std::mem::replace(&mut lease.lapsed, false);
        let old = std::mem::replace(&mut lease.until_ms, until);
        if was_lapsed {
            group.ready.remove(&seq);
            if let Some(holder) = group.members.get_mut(&member) {
                holder.in_flight += 1;
            }
        } else {
            group.expiries.remove(&(old, seq));
        }
        group.expiries.insert((until, seq));
        Ok(until)
    }

    /// The earliest moment something changes by itself (a lease lapses, a delay ends).
    pub fn next_deadline(&self) -> Option<u64> {
        self.groups
            .values()
            .flat_map(|group| [group.expiries.first().map(|e| e.0), group.delayed.first().map(|d| d.0)])
            .flatten()
            .min()
    }

    /// Counts per group, by name.
    pub fn counts(&self) -> Vec<(String, GroupCounts)> {
        let mut counts: Vec<(String, GroupCounts)> = self
            .groups
            .values()
            .map(|group| {
                let leased = group.leases.values().filter(|lease| !lease.lapsed).count() as u64;
                let pending = (group.ready.len() + group.delayed.len()) as u64;
                let counts = GroupCounts {
                    pending,
                    leased,
                    done: group.done,
                    dead: group.dead,
                    redeliveries: group.redeliveries,
                };
                (group.name.clone(), counts)
            })
            .collect();
        counts.sort_by(|a, b| a.0.cmp(&b.0));
        counts
    }

    /// REQUEUE: checks that job `id` is dead in `group` and not expired; returns the row
    /// to commit (no attempts, pending). Apply it after the commit with [`Self::requeued`].
    pub fn requeue_row(&self, group: &str, id: &EventId, now_ms: u64) -> Result<JobRow, RequeueRefusal> {
        let group = self.groups.get(group).ok_or(RequeueRefusal::NotDead)?;
        let seq = *self.by_id.get(id).ok_or(RequeueRefusal::NotDead)?;
        if group.finished.get(&seq) != Some(&Finished::Dead) {
            return Err(RequeueRefusal::NotDead);
        }
        if self.jobs.get(&seq).is_some_and(|job| job.expired(now_ms)) {
            return Err(RequeueRefusal::Expired);
        }
        Ok(JobRow { group: group.name.clone(), job_seq: seq, attempts: 0, done: false, dead: false, not_before_ms: 0 })
    }

    /// A committed REQUEUE: the dead job starts over with no attempts, offered as usual.
    pub fn requeued(&mut self, group: &str, job_seq: u64, now_ms: u64) {
        let Some(group) = self.groups.get_mut(group) else { return };
        if group.finished.get(&job_seq) != Some(&Finished::Dead) {
            return;
        }
        group.finished.remove(&job_seq);
        group.dead = group.dead.saturating_sub(1);
        group.attempts.remove(&job_seq);
        group.not_before.remove(&job_seq);
        if self.jobs.contains_key(&job_seq) {
            group.add(job_seq, now_ms);
        }
    }

    /// True if `member` is a member.
    pub fn is_member(&self, member: MemberId) -> bool {
        self.member_group.contains_key(&member)
    }

    /// The group `member` belongs to.
    pub fn group_of(&self, member: MemberId) -> Option<&str> {
        self.member_group.get(&member).map(String::as_str)
    }

    /// The seq of the held request with id `id`.
    pub fn job_seq(&self, id: &EventId) -> Option<u64> {
        self.by_id.get(id).copied()
    }

    /// Puts held job `seq` into `group`'s queue (if the group may offer it).
    pub fn add_to_group(&mut self, group: &str, seq: u64, now_ms: u64) {
        if let Some(group) = self.groups.get_mut(group) {
            group.add(seq, now_ms);
        }
    }

    /// True if the request with seq `seq` is held in memory.
    pub fn holds_seq(&self, seq: u64) -> bool {
        self.jobs.contains_key(&seq)
    }

    /// Creates group `name` (queue after `start`) unless it exists; true if created.
    pub fn ensure_group(&mut self, name: &str, start: u64, now_ms: u64) -> bool {
        if self.groups.contains_key(name) {
            return false;
        }
        self.restore_group(name, start, Vec::new(), now_ms);
        true
    }

    /// The jobs `member` holds a lease on, by group and seq.
    pub fn leases_of(&self, member: MemberId) -> Vec<(String, u64)> {
        let Some(group) = self.member_group.get(&member).and_then(|name| self.groups.get(name)) else {
            return Vec::new();
        };
        group
            .leases
            .iter()
            .filter(|(_, lease)| lease.member == member)
            .map(|(seq, _)| (group.name.clone(), *seq))
            .collect()
    }

    /// Job `seq`'s state in `group`, as a cluster's record carries it.
    pub fn snapshot(&self, group: &str, seq: u64) -> Option<JobSnapshot> {
        let group = self.groups.get(group)?;
        let lease = group.leases.get(&seq).map(|lease| (lease.member, lease.until_ms));
        Some(JobSnapshot { row: group.row(seq), id: self.jobs.get(&seq).map(|job| job.event.id), lease })
    }

    /// Sets job `row.job_seq`'s whole state in `row.group` as another node decided it (a
    /// cluster's record): attempts, done or dead, delay, and the lease (`REMOTE` or a
    /// local member, until when), replacing what this engine thought.
    pub fn set_job_state(&mut self, row: &JobRow, lease: Option<(MemberId, u64)>, now_ms: u64) {
        let Some(group) = self.groups.get_mut(&row.group) else { return };
        let seq = row.job_seq;
        group.drop_lease(seq);
        group.ready.remove(&seq);
        if let Some(at) = group.not_before.remove(&seq) {
            group.delayed.remove(&(at, seq));
        }
        let before = group.attempts.insert(seq, row.attempts).unwrap_or(0);
        if row.attempts > before.max(1) {
            group.redeliveries += row.attempts - before.max(1);
        }
        if row.not_before_ms > 0 {
            group.not_before.insert(seq, row.not_before_ms);
        }
        match group.finished.remove(&seq) {
            Some(Finished::Done) => group.done = group.done.saturating_sub(1),
            Some(Finished::Dead) => group.dead = group.dead.saturating_sub(1),
            None => {}
        }
        let finished = if row.done {
            Some(Finished::Done)
        } else if row.dead {
            Some(Finished::Dead)
        } else {
            None
        };
        if let Some(finished) = finished {
            match finished {
                Finished::Done => group.done += 1,
                Finished::Dead => group.dead += 1,
            }
            group.finished.insert(seq, finished);
            group.newly_finished.push(seq);
            return;
        }
        match lease {
            Some((member, until_ms)) => {
                group.leases.insert(seq, LeaseState { member, until_ms, lapsed: false, completing: false });
                group.expiries.insert((until_ms, seq));
                if let Some(holder) = group.members.get_mut(&member) {
                    holder.in_flight += 1;
                }
            }
            None => group.add(seq, now_ms),
        }
    }
}

fn offer_group<H: Clone>(
    group: &mut Group<H>,
    jobs: &BTreeMap<u64, Arc<Job>>,
    now_ms: u64,
    offers: &mut Vec<OfferOut<H>>,
    writes: &mut Vec<JobWrite>,
) {
    let mut after = Bound::Unbounded;
    let mut stale = Vec::new();
    while group.any_free() {
        let mut chosen = None;
        for &seq in group.ready.range((after, Bound::Unbounded)) {
            after = Bound::Excluded(seq);
            let Some(job) = jobs.get(&seq) else {
                stale.push(seq);
                continue;
            };
            if job.expired(now_ms) {
                stale.push(seq);
                continue;
            }
            let lease = group.leases.get(&seq);
            if lease.is_some_and(|lease| lease.completing) {
                continue;
            }
            if let Some(member) = group.pick(job, lease.map(|lease| lease.member)) {
                chosen = Some((seq, member, job.clone()));
                break;
            }
        }
        let Some((seq, member, job)) = chosen else { break };
        group.ready.remove(&seq);
        group.drop_lease(seq);
        let attempt = group.attempts.get(&seq).copied().unwrap_or(0) + 1;
        group.attempts.insert(seq, attempt);
        if attempt > 1 {
            group.redeliveries += 1;
        }
        let Some(holder) = group.members.get_mut(&member) else { break };
        holder.in_flight += 1;
        let until_ms = now_ms.saturating_add(holder.lease_ms);
        let handle = holder.handle.clone();
        group.leases.insert(seq, LeaseState { member, until_ms, lapsed: false, completing: false });
        group.expiries.insert((until_ms, seq));
        group.cursor = member;
        writes.push(JobWrite::State(group.row(seq)));
        offers.push(OfferOut { handle, member, job, lease: Lease { until_ms, attempt } });
    }
    for seq in stale {
        group.ready.remove(&seq);
        group.drop_lease(seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Filter;

    fn job(seq: u64) -> Job {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]);
        let event = Event::sign(&key, seq, 5000, seq.to_be_bytes().to_vec(), Vec::new()).expect("sign");
        Job { seq, raw: event.encode().into(), event, expires_at: None }
    }

    fn spec(name: &'static str, max_in_flight: usize) -> MemberSpec<&'static str> {
        let filter = Filter { kinds: Some(vec![5000]), ..Filter::default() };
        MemberSpec { handle: name, filters: vec![CompactFilter::new(&filter)], lease_ms: 1000, max_in_flight }
    }

    /// Jobs 1..=`jobs` stored before any group exists (a group's creation holds them).
    fn engine(jobs: u64) -> Engine<&'static str> {
        let mut engine = Engine::new(3);
        for seq in 1..=jobs {
            engine.insert_job(job(seq));
        }
        engine
    }

    fn offered(offers: &[OfferOut<&'static str>]) -> Vec<(&'static str, u64, u64)> {
        offers.iter().map(|offer| (offer.handle, offer.job.seq, offer.lease.attempt)).collect()
    }

    #[test]
    fn offers_go_oldest_first_round_robin_within_capacity() {
        let mut engine = engine(5);
        engine.join("g", 0, spec("a", 2), 0);
        engine.join("g", 0, spec("b", 1), 0);
        let (offers, writes) = engine.offers(0);
        assert_eq!(offered(&offers), vec![("a", 1, 1), ("b", 2, 1), ("a", 3, 1)]);
        assert_eq!(writes.len(), 3, "each attempt is committed");
        assert!(engine.offers(0).0.is_empty(), "everyone is full");
    }

    #[test]
    fn a_late_holder_completes_before_the_reoffer_but_not_after() {
        let mut engine = engine(2);
        let (a, _) = engine.join("g", 0, spec("a", 1), 0);
        let (offers, _) = engine.offers(0);
        let first = offers[0].job.event.id;
        engine.tick(1000); // lapsed, not yet offered again
        let completion = engine.complete(a, &first, 1001).expect("still current");
        engine.finish(&completion, true, 1001);
        assert_eq!(engine.counts()[0].1.done, 1);
        // Now the same with a re-offer in between: the late holder loses.
        let (b, _) = engine.join("g", 0, spec("b", 1), 1001);
        let (offers, _) = engine.offers(1001);
        let holder = offers[0].member;
        let second = offers[0].job.event.id;
        engine.tick(3000);
        let (offers, _) = engine.offers(3000);
        assert_eq!(offers[0].lease.attempt, 2);
        assert_ne!(offers[0].member, holder, "other members before the last holder");
        assert!(matches!(engine.complete(holder, &second, 3001), Err(Refusal::LeaseLost)));
        let _ = (a, b);
    }

    #[test]
    fn the_last_attempt_ending_makes_the_job_dead() {
        let mut engine = engine(1);
        let (a, _) = engine.join("g", 0, spec("a", 1), 0);
        for attempt in 1..=3 {
            let (offers, _) = engine.offers(attempt * 10);
            assert_eq!(offers[0].lease.attempt, attempt);
            let writes = engine.nack(a, &offers[0].job.event.id, 0, attempt * 10).expect("held");
            if attempt == 3 {
                assert!(matches!(&writes[0], JobWrite::State(row) if row.dead && row.attempts == 3));
            }
        }
        assert!(engine.offers(100).0.is_empty());
        assert_eq!(engine.counts()[0].1.dead, 1);
    }

    #[test]
    fn a_requeued_dead_job_starts_over_and_only_a_dead_job_can_be() {
        let mut engine = engine(2);
        let (a, _) = engine.join("g", 0, spec("a", 1), 0);
        let (offers, _) = engine.offers(0);
        let dying = offers[0].job.event.id;
        assert_eq!(engine.requeue_row("g", &dying, 1), Err(RequeueRefusal::NotDead), "leased");
        for attempt in 1..=3 {
            if attempt > 1 {
                engine.offers(attempt * 10);
            }
            engine.nack(a, &dying, 0, attempt * 10).expect("held");
        }
        assert_eq!(engine.counts()[0].1.dead, 1);
        assert_eq!(engine.requeue_row("h", &dying, 40), Err(RequeueRefusal::NotDead), "no such group");
        assert_eq!(engine.requeue_row("g", &[9; 32], 40), Err(RequeueRefusal::NotDead), "no such job");
        let row = engine.requeue_row("g", &dying, 40).expect("dead");
        assert_eq!((row.job_seq, row.attempts, row.done, row.dead), (1, 0, false, false));
        engine.requeued("g", row.job_seq, 40);
        assert_eq!(engine.counts()[0].1.dead, 0);
        let (offers, _) = engine.offers(50);
        assert_eq!(offered(&offers), vec![("a", 1, 1)], "oldest first again, attempts from 1");
        assert_eq!(engine.requeue_row("g", &dying, 51), Err(RequeueRefusal::NotDead), "no longer dead");
    }

    #[test]
    fn only_jobs_some_group_may_offer_are_held() {
        let mut engine: Engine<&'static str> = Engine::new(3);
        engine.add_job(job(1), 0);
        assert_eq!(engine.held_jobs(), 0, "no group: nothing to hold");
        engine.begin_loading();
        engine.insert_job(job(1));
        engine.add_job(job(2), 0);
        let (a, _) = engine.join("g", 0, spec("a", 1), 0);
        engine.end_loading();
        assert_eq!(engine.held_jobs(), 2, "both pending in the new group");
        let (offers, _) = engine.offers(0);
        let completion = engine.complete(a, &offers[0].job.event.id, 1).expect("held");
        engine.finish(&completion, true, 1);
        engine.drop_settled();
        assert_eq!(engine.held_jobs(), 1, "done in the only group");
        engine.join("late", 5, spec("b", 1), 1);
        engine.add_job(job(3), 1);
        engine.drop_settled();
        assert_eq!(engine.held_jobs(), 2, "jobs 2 and 3 are pending in g (before late's start)");
        engine.add_job(job(6), 1);
        assert_eq!(engine.held_jobs(), 3);
    }

    #[test]
    fn another_nodes_state_replaces_this_engines_view() {
        let mut engine = engine(2);
        let (a, _) = engine.join("g", 0, spec("a", 1), 0);
        let (offers, _) = engine.offers(0);
        assert_eq!(offered(&offers), vec![("a", 1, 1)]);
        let row = |job_seq, attempts, done| JobRow {
            group: "g".into(),
            job_seq,
            attempts,
            done,
            dead: false,
            not_before_ms: 0,
        };
        // Another node re-offered job 1 (its lease, until 5000): `a` no longer holds it
        // and is free for job 2.
        engine.set_job_state(&row(1, 2, false), Some((REMOTE, 5000)), 10);
        let id = offers[0].job.event.id;
        assert!(matches!(engine.complete(a, &id, 11), Err(Refusal::LeaseLost)));
        let (offers, _) = engine.offers(12);
        assert_eq!(offered(&offers), vec![("a", 2, 1)]);
        assert_eq!(engine.counts()[0].1.leased, 2, "one lease here, one on the other node");
        assert!(engine.offers(13).0.is_empty(), "job 1 is leased elsewhere, a holds job 2");
        // The other node completed job 1: done here too, never offered again.
        engine.set_job_state(&row(1, 2, true), None, 14);
        let counts = &engine.counts()[0].1;
        assert_eq!((counts.done, counts.pending, counts.leased, counts.redeliveries), (1, 0, 1, 1));
        assert_eq!(engine.snapshot("g", 1).map(|snapshot| snapshot.row.done), Some(true));
        assert!(engine.snapshot("g", 2).is_some_and(|snapshot| snapshot.leased_to(a)));
    }

    #[test]
    fn a_failed_completion_commit_keeps_the_lease() {
        let mut engine = engine(1);
        let (a, _) = engine.join("g", 0, spec("a", 1), 0);
        let (offers, _) = engine.offers(0);
        let id = offers[0].job.event.id;
        let completion = engine.complete(a, &id, 1).expect("held");
        assert!(matches!(engine.complete(a, &id, 1), Err(Refusal::LeaseLost)), "reserved meanwhile");
        engine.finish(&completion, false, 2);
        engine.complete(a, &id, 3).expect("held again after the failed commit");
    }

    #[test]
    fn a_last_attempt_that_lapses_during_a_failed_commit_is_dead() {
        let mut engine = engine(1);
        let (a, _) = engine.join("g", 0, spec("a", 1), 0);
        for attempt in 1..=2 {
            let (offers, _) = engine.offers(attempt * 10);
            engine.nack(a, &offers[0].job.event.id, 0, attempt * 10).expect("held");
        }
        let (offers, _) = engine.offers(100);
        let id = offers[0].job.event.id;
        let completion = engine.complete(a, &id, 101).expect("held");
        assert!(engine.tick(5000).is_empty(), "decided by finish");
        let writes = engine.finish(&completion, false, 5001);
        assert!(matches!(&writes[..], [JobWrite::State(row)] if row.dead));
        assert!(engine.offers(5002).0.is_empty());
    }

    #[test]
    fn deleted_job_requests_leave_the_queues_and_free_their_leases() {
        let mut engine = engine(3);
        let (a, _) = engine.join("g", 0, spec("a", 1), 0);
        let (offers, _) = engine.offers(0);
        let held = offers[0].job.event.id;
        engine.retain_jobs(|seq| seq == 3);
        assert!(matches!(engine.complete(a, &held, 1), Err(Refusal::LeaseLost)));
        let (offers, _) = engine.offers(1);
        assert_eq!(offered(&offers), vec![("a", 3, 1)], "the slot is free again; only job 3 is left");
    }

    /// 10,000 pending jobs and 100 members: every completion frees exactly one slot and
    /// gets exactly one new offer (speed is measured by `axon bench jobs`, not here).
    #[test]
    fn each_completion_brings_one_offer_with_10000_pending_jobs_and_100_members() {
        let mut engine = engine(10_000);
        let members: Vec<MemberId> = (0..100).map(|_| engine.join("g", 0, spec("m", 1), 0).0).collect();
        let (offers, _) = engine.offers(0);
        assert_eq!(offers.len(), 100);
        let rounds = 2000;
        for round in 0..rounds {
            let member = members[round % 100];
            let held = engine.groups["g"].leases.iter().find(|(_, lease)| lease.member == member).map(|(seq, _)| *seq);
            let id = engine.jobs[&held.expect("holds one")].event.id;
            let completion = engine.complete(member, &id, 1).expect("held");
            engine.finish(&completion, true, 1);
            assert_eq!(engine.offers(1).0.len(), 1);
        }
    }
}
