//! Live subscriptions: an index of filters, delivery into bounded per-connection queues,
//! and overflow with a resume point (spec §9.2–§9.4).
//!
//! Exactly once across EOSE: a subscription is registered (under the registry lock) at
//! the highest seq committed so far, its *snapshot* ([`Fanout::mark_committed`], which
//! the writer's commit hook calls before it hands the commit's events to the fan-out
//! stage, [`super::delivery`]). Stored queries return only events with seq ≤ snapshot;
//! [`Fanout::dispatch_committed`] runs on the fan-out stage's thread, in seq order, under
//! the same lock, and skips events with seq ≤ a subscription's snapshot. An event
//! committed before the registration is thus in the stored phase (it is in the database
//! and ≤ snapshot), one committed after it is delivered live (it is dispatched after the
//! registration, being marked committed only after the snapshot was read), never both.
//! Because the mark comes before OK, a client that subscribes after an OK finds that
//! event in the stored phase. Until the subscription has sent EOSE, live events are held
//! in its pending buffer.
//!
//! A live subscription whose connection queue is full is not ended at once by the fan-out
//! stage: a commit can hold many events, which the stage queues faster than the socket
//! writer drains them. While the connection's socket still takes bytes, the stage waits
//! (without the registry lock, at most [`PATIENCE`]) for the writer to make room; a
//! subscriber that cannot keep up, whose socket's send buffer is full, is ended with the
//! overflow ERROR as before ([`Outbound::wait_for_room`]). Deliveries to every
//! subscription stay in seq order: the stage finishes an event before the next.

use std::collections::hash_map::RandomState;
use std::collections::HashMap;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::compact::{filter_items, CompactFilter};
use super::connections::ConnId;
use super::metrics::Metrics;
use super::outbound::{OutFrame, Outbound};
use super::store::Committed;
use crate::protocol::frame::{encode_event_frame, ErrorMessage, Frame, Subscribe};
use crate::protocol::{visible, ErrorCode, Event, Filter, ProtocolError, Viewer};

type SubKey = u64;

/// How long the fan-out stage waits for one event's full queues to make room while their
/// sockets still take bytes, before it ends those subscriptions anyway.
pub const PATIENCE: Duration = Duration::from_millis(500);

/// A live delivery that found its connection's queue full while the socket still took
/// bytes: the fan-out stage waits for room before it gives up on the subscription.
struct Stuck {
    key: SubKey,
    seq: u64,
    frame: OutFrame,
    outbound: Arc<Outbound>,
}

/// Where a subscription is in its life.
enum Phase {
    /// Sending stored events; live ones wait here until EOSE.
    /// `pending_bytes` sums the held events' sizes, bounded like the outbound queue.
    Stored { pending: Vec<(u64, Bytes)>, pending_bytes: usize, overflowed: bool },
    /// Receiving live events directly.
    Live,
}

struct Subscription {
    conn: ConnId,
    sub_id: Arc<str>,
    filters: Box<[CompactFilter]>,
    /// Its filter items, counted against the connection's total.
    items: usize,
    viewer: Viewer,
    outbound: Arc<Outbound>,
    phase: Phase,
    /// §9.4's *start*: `after_seq`, or the snapshot.
    start: u64,
    /// Events up to this seq are the stored phase's; live delivery skips them.
    snapshot: u64,
    /// Highest seq such that every matching stored event in (start, it] was delivered.
    delivered_through: u64,
    /// Most live events held before EOSE.
    pending_capacity: usize,
    slots: Vec<Slot>,
}

/// One entry point into the index. A slot may be shared by filters that cannot match the
/// same events (tag slots are hashes): candidates are always checked with the matcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
enum Slot {
    /// A keyed hash of a tag's name and first value (16 bytes instead of two Strings).
    Tag(u64),
    AuthorByte(u8),
    Kind(u16),
    IdByte(u8),
    Everything,
}

/// The slot of a tag with `name` whose first value is `value`.
fn tag_slot(name: &str, value: &str) -> Slot {
    static KEYS: OnceLock<RandomState> = OnceLock::new();
    let mut hasher = KEYS.get_or_init(RandomState::new).build_hasher();
    name.hash(&mut hasher);
    value.hash(&mut hasher);
    Slot::Tag(hasher.finish())
}

/// Which slots a filter is reachable from: its most selective field, all its values.
/// A filter with an empty list can match nothing and gets no slot.
fn slots_for(filter: &Filter) -> Vec<Slot> {
    if let Some(condition) = filter.tags.as_ref().and_then(|tags| tags.first()) {
        return condition.values.iter().map(|value| tag_slot(&condition.name, value)).collect();
    }
    if let Some(authors) = &filter.authors {
        return authors.iter().filter_map(|prefix| prefix.first()).map(|byte| Slot::AuthorByte(*byte)).collect();
    }
    if let Some(kinds) = &filter.kinds {
        return kinds.iter().map(|kind| Slot::Kind(*kind)).collect();
    }
    if let Some(ids) = &filter.ids {
        return ids.iter().filter_map(|prefix| prefix.first()).map(|byte| Slot::IdByte(*byte)).collect();
    }
    vec![Slot::Everything]
}

/// The slots an event can be found under.
fn slots_of(event: &Event) -> impl Iterator<Item = Slot> + '_ {
    let tags = event.tags.iter().filter_map(|tag| tag.first_value().map(|value| tag_slot(&tag.name, value)));
    [Slot::AuthorByte(event.pubkey[0]), Slot::Kind(event.kind), Slot::IdByte(event.id[0]), Slot::Everything]
        .into_iter()
        .chain(tags)
}

#[derive(Default)]
struct Registry {
    subscriptions: HashMap<SubKey, Subscription>,
    by_name: HashMap<(ConnId, Arc<str>), SubKey>,
    index: HashMap<Slot, Vec<SubKey>>,
    /// Filter items held per connection, over all its subscriptions.
    items: HashMap<ConnId, usize>,
    next_key: SubKey,
}

/// A subscription just registered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registered {
    /// Stored queries must stop at this seq.
    pub snapshot: u64,
}

/// A subscription ended because its events could not be queued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Overflowed {
    /// Resubscribe with `after_seq` = this to miss nothing.
    pub resume: u64,
}

/// Every live subscription of the relay.
pub struct Fanout {
    registry: Mutex<Registry>,
    /// Highest seq committed (marked by the commit hook before any OK of it).
    committed_through: AtomicU64,
    metrics: Arc<Metrics>,
}

/// The ERROR frame that ends an overflowing subscription.
pub fn overflow_frame(sub_id: &str, resume: u64) -> OutFrame {
    OutFrame::Binary(
        Frame::Error(ErrorMessage {
            code: ErrorCode::Unavailable.as_u16(),
            message: "overflow: subscription could not keep up; resubscribe with after_seq".into(),
            id: None,
            sub_id: Some(sub_id.to_owned()),
            seq: Some(resume),
            retry_after_ms: None,
        })
        .encode(),
    )
}

impl Registry {
    fn remove(&mut self, key: SubKey) -> Option<Subscription> {
        let subscription = self.subscriptions.remove(&key)?;
        self.by_name.remove(&(subscription.conn, subscription.sub_id.clone()));
        if let Some(held) = self.items.get_mut(&subscription.conn) {
            *held = held.saturating_sub(subscription.items);
            if *held == 0 {
                self.items.remove(&subscription.conn);
            }
        }
        for slot in &subscription.slots {
            if let Some(keys) = self.index.get_mut(slot) {
                if let Some(position) = keys.iter().position(|candidate| *candidate == key) {
                    keys.swap_remove(position);
                }
                if keys.is_empty() {
                    self.index.remove(slot);
                }
            }
        }
        Some(subscription)
    }

    /// Subscriptions that could match `event`, each once.
    fn candidates(&self, event: &Event) -> Vec<SubKey> {
        let mut keys: Vec<SubKey> =
            slots_of(event).filter_map(|slot| self.index.get(&slot)).flatten().copied().collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Delivers to every matching subscription. With `stuck`, a live subscription whose
    /// queue is full while its socket still takes bytes is put there instead of ended.
    fn deliver(&mut self, event: &Event, raw: &Bytes, seq: u64, metrics: &Metrics, mut stuck: Option<&mut Vec<Stuck>>) {
        let mut overflowed = Vec::new();
        for key in self.candidates(event) {
            let Some(subscription) = self.subscriptions.get_mut(&key) else {
                continue;
            };
            if seq != 0 && seq <= subscription.snapshot {
                continue; // committed before it registered: its stored phase has it
            }
            if !subscription.filters.iter().any(|filter| filter.matches(event)) || !visible(&subscription.viewer, event)
            {
                continue;
            }
            match &mut subscription.phase {
                Phase::Stored { pending, pending_bytes, overflowed: full } => {
                    let too_many_bytes = !pending.is_empty()
                        && pending_bytes.saturating_add(raw.len()) > subscription.outbound.byte_capacity();
                    if pending.len() >= subscription.pending_capacity || too_many_bytes {
                        *full = true;
                    } else if !*full {
                        pending.push((seq, raw.clone()));
                        *pending_bytes += raw.len();
                    }
                }
                Phase::Live => {
                    let frame = OutFrame::Binary(encode_event_frame(&subscription.sub_id, seq, raw));
                    match subscription.outbound.try_offer(frame) {
                        Ok(()) => {
                            subscription.delivered_through = subscription.delivered_through.max(seq);
                            metrics.deliveries.inc();
                        }
                        Err(frame) => match stuck.as_deref_mut() {
                            Some(stuck) if subscription.outbound.can_catch_up() => {
                                stuck.push(Stuck { key, seq, frame, outbound: subscription.outbound.clone() })
                            }
                            _ => overflowed.push((key, resume_point(subscription, seq))),
                        },
                    }
                }
            }
        }
        for (key, resume) in overflowed {
            self.end_with_overflow(key, resume);
            metrics.overflows.inc();
        }
    }

    fn end_with_overflow(&mut self, key: SubKey, resume: u64) {
        if let Some(subscription) = self.remove(key) {
            subscription.outbound.push_always(overflow_frame(&subscription.sub_id, resume));
        }
    }
}

/// §9.4's resume point when the event with `seq` (0 = ephemeral) could not be queued.
fn resume_point(subscription: &Subscription, seq: u64) -> u64 {
    let through = if seq > 0 { seq - 1 } else { subscription.delivered_through };
    through.max(subscription.start)
}

/// Queues held events in order; on the first that does not fit, its resume point.
fn flush_pending(subscription: &mut Subscription, pending: Vec<(u64, Bytes)>) -> Option<u64> {
    for (seq, raw) in pending {
        let frame = OutFrame::Binary(encode_event_frame(&subscription.sub_id, seq, &raw));
        if subscription.outbound.try_push(frame).is_err() {
            return Some(resume_point(subscription, seq));
        }
        subscription.delivered_through = subscription.delivered_through.max(seq);
    }
    None
}

impl Fanout {
    /// An empty registry reporting into `metrics`.
    pub fn new(metrics: Arc<Metrics>) -> Fanout {
        Fanout { registry: Mutex::new(Registry::default()), committed_through: AtomicU64::new(0), metrics }
    }

    fn lock(&self) -> MutexGuard<'_, Registry> {
        crate::sync::lock(&self.registry)
    }

    /// Records that every event up to `seq` is committed: subscriptions registered from
    /// now on find them in their stored phase. Called at startup and by the commit hook,
    /// before it hands those events to [`Fanout::dispatch_committed`] and before any OK.
    pub fn mark_committed(&self, seq: u64) {
        self.committed_through.fetch_max(seq, Ordering::SeqCst);
    }

    /// Refuses (400) a SUBSCRIBE that would take the connection's filter items, over all
    /// its subscriptions (one it replaces not counted), past `max_items`.
    pub fn check_filter_items(
        &self,
        conn: ConnId,
        subscribe: &Subscribe,
        max_items: usize,
    ) -> Result<(), ProtocolError> {
        let wanted = filter_items(&subscribe.filters);
        let registry = self.lock();
        let held = registry.items.get(&conn).copied().unwrap_or(0);
        let replaced = registry
            .by_name
            .get(&(conn, Arc::from(subscribe.sub_id.as_str())))
            .and_then(|key| registry.subscriptions.get(key))
            .map_or(0, |subscription| subscription.items);
        let total = held.saturating_sub(replaced).saturating_add(wanted);
        if total > max_items {
            return Err(ProtocolError::invalid(format!(
                "a connection holds at most {max_items} filter items over all its subscriptions; \
                 this one has {wanted}, the others {}",
                held.saturating_sub(replaced)
            )));
        }
        Ok(())
    }

    /// Registers (or replaces) a subscription in its stored phase.
    #[allow(clippy::too_many_arguments)]
    pub fn subscribe(
        &self,
        conn: ConnId,
        sub_id: &str,
        filters: Vec<Filter>,
        viewer: Viewer,
        outbound: Arc<Outbound>,
        after_seq: Option<u64>,
        pending_capacity: usize,
    ) -> Registered {
        let mut registry = self.lock();
        let sub_id: Arc<str> = Arc::from(sub_id);
        if let Some(old) = registry.by_name.get(&(conn, sub_id.clone())).copied() {
            registry.remove(old);
        }
        // Read under the registry lock: see the module docs.
        let snapshot = self.committed_through.load(Ordering::SeqCst);
        // An after_seq beyond the end of the log resumes from the end: nothing stored to
        // send, then live events, and overflow resume points stay meaningful.
        let start = after_seq.map_or(snapshot, |after| after.min(snapshot));
        let key = registry.next_key;
        registry.next_key += 1;
        let mut slots: Vec<Slot> = filters.iter().flat_map(slots_for).collect();
        slots.sort();
        slots.dedup();
        for slot in &slots {
            registry.index.entry(*slot).or_default().push(key);
        }
        registry.by_name.insert((conn, sub_id.clone()), key);
        let items = filter_items(&filters);
        *registry.items.entry(conn).or_default() += items;
        registry.subscriptions.insert(
            key,
            Subscription {
                conn,
                sub_id,
                filters: filters.iter().map(CompactFilter::new).collect(),
                items,
                viewer,
                outbound,
                phase: Phase::Stored { pending: Vec::new(), pending_bytes: 0, overflowed: false },
                start,
                snapshot,
                delivered_through: start.max(snapshot),
                pending_capacity,
                slots,
            },
        );
        Registered { snapshot }
    }

    /// After EOSE: flushes the held live events and switches to live delivery.
    /// Returns the overflow if the subscription ended instead (its ERROR is queued).
    pub fn go_live(&self, conn: ConnId, sub_id: &str) -> Result<(), Overflowed> {
        let mut registry = self.lock();
        let Some(key) = registry.by_name.get(&(conn, Arc::from(sub_id))).copied() else {
            return Ok(());
        };
        let Some(subscription) = registry.subscriptions.get_mut(&key) else {
            return Ok(());
        };
        let Phase::Stored { pending, overflowed, .. } = std::mem::replace(&mut subscription.phase, Phase::Live) else {
            return Ok(());
        };
        let resume =
            if overflowed { Some(subscription.delivered_through) } else { flush_pending(subscription, pending) };
        match resume {
            None => Ok(()),
            Some(resume) => {
                registry.end_with_overflow(key, resume);
                self.metrics.overflows.inc();
                Err(Overflowed { resume })
            }
        }
    }

    /// Removes one subscription; unknown names are a no-op.
    pub fn unsubscribe(&self, conn: ConnId, sub_id: &str) {
        let mut registry = self.lock();
        if let Some(key) = registry.by_name.get(&(conn, Arc::from(sub_id))).copied() {
            registry.remove(key);
        }
    }

    /// True if the subscription is registered.
    pub fn contains(&self, conn: ConnId, sub_id: &str) -> bool {
        self.lock().by_name.contains_key(&(conn, Arc::from(sub_id)))
    }

    /// Removes every subscription of a connection.
    pub fn remove_connection(&self, conn: ConnId) {
        let mut registry = self.lock();
        let keys: Vec<SubKey> =
            registry.subscriptions.iter().filter(|(_, sub)| sub.conn == conn).map(|(key, _)| *key).collect();
        for key in keys {
            registry.remove(key);
        }
    }

    /// Delivers committed events, in seq order, to the subscriptions registered before
    /// they were marked committed (called by the fan-out stage, [`super::delivery`]).
    pub fn dispatch_committed(&self, events: &[Committed]) {
        if let Some(last) = events.last() {
            self.mark_committed(last.seq); // already marked by the hook; kept for direct callers
        }
        let mut registry = self.lock();
        let mut stuck = Vec::new();
        for committed in events {
            let (event, raw) = (&committed.accepted.event, &committed.accepted.raw);
            registry.deliver(event, raw, committed.seq, &self.metrics, Some(&mut stuck));
            if !stuck.is_empty() {
                registry = self.catch_up(registry, &mut stuck);
            }
        }
    }

    /// Waits, without the registry lock, for the queues of `stuck` to make room, then
    /// queues their frames; ends a subscription whose socket stopped taking bytes, whose
    /// connection closed, or that found no room within [`PATIENCE`]. Only the fan-out
    /// stage's thread calls this (it blocks).
    fn catch_up<'a>(
        &'a self,
        mut registry: MutexGuard<'a, Registry>,
        stuck: &mut Vec<Stuck>,
    ) -> MutexGuard<'a, Registry> {
        let deadline = Instant::now() + PATIENCE;
        while !stuck.is_empty() {
            drop(registry);
            for waiting in stuck.iter() {
                waiting.outbound.wait_for_room(waiting.frame.weight(), deadline);
            }
            registry = self.lock();
            for Stuck { key, seq, frame, outbound } in std::mem::take(stuck) {
                let Some(subscription) = registry.subscriptions.get_mut(&key) else {
                    continue; // ended (or replaced) while the stage waited
                };
                match subscription.outbound.try_offer(frame) {
                    Ok(()) => {
                        subscription.delivered_through = subscription.delivered_through.max(seq);
                        self.metrics.deliveries.inc();
                    }
                    Err(frame) if outbound.can_catch_up() && Instant::now() < deadline => {
                        stuck.push(Stuck { key, seq, frame, outbound })
                    }
                    Err(_) => {
                        let resume = resume_point(subscription, seq);
                        registry.end_with_overflow(key, resume);
                        self.metrics.overflows.inc();
                    }
                }
            }
        }
        registry
    }

    /// Delivers an ephemeral event (seq 0) to live subscriptions.
    pub fn dispatch_ephemeral(&self, event: &Event, raw: &Bytes) {
        self.lock().deliver(event, raw, 0, &self.metrics, None);
    }

    /// Number of live subscriptions.
    pub fn len(&self) -> usize {
        self.lock().subscriptions.len()
    }

    /// True if there are none.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::store::Accepted;

    /// Live events held during the stored phase were bounded in frames only: 4096 held
    /// 64 KiB events per stuck subscription. They are bounded by the queue's bytes too, and
    /// past that the subscription overflows at EOSE with the snapshot as resume point.
    #[test]
    fn events_held_before_eose_are_bounded_in_bytes() {
        let fanout = Fanout::new(Arc::new(Metrics::new()));
        let outbound = Arc::new(Outbound::bounded(4096, 100_000, None));
        let viewer = Viewer { pubkey: [1; 32], is_admin: false };
        let registered = fanout.subscribe(1, "s", vec![Filter::default()], viewer, outbound, None, 4096);
        let key = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let committed: Vec<Committed> = (1..=10u64)
            .map(|seq| {
                let event = Event::sign(&key, seq, 1000, vec![seq as u8; 20_000], Vec::new()).expect("sign");
                let accepted = Accepted { raw: event.encode().into(), event, expires_at: None };
                Committed { seq, accepted: Arc::new(accepted) }
            })
            .collect();
        fanout.dispatch_committed(&committed);
        assert_eq!(fanout.go_live(1, "s"), Err(Overflowed { resume: registered.snapshot }));
    }
}
