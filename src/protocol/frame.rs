//! Wire frames (spec §6): `[type: uint, payload: map]`, one per binary WebSocket message.
//!
//! Payload maps are lenient (unknown keys are skipped); Event, Tag and Filter maps inside
//! them are strict. Events travel as [`RawEvent`]: the exact bytes received, so the relay
//! can store and forward them without re-encoding.

use bytes::Bytes;
use serde::Serialize;

use super::error::ProtocolError;
use super::event::{Event, EventId, PublicKey};
use super::filter::Filter;
use super::limits::{Limits, MAX_SUB_ID_BYTES};
use super::msgpack::{Reader, SeenKeys};

/// Frame type numbers (spec §6).
pub mod frame_type {
    /// Client → relay: authenticate.
    pub const AUTH: u8 = 1;
    /// Client → relay: open or replace a subscription.
    pub const SUBSCRIBE: u8 = 2;
    /// Client → relay: close a subscription.
    pub const UNSUBSCRIBE: u8 = 3;
    /// Client → relay: publish an event.
    pub const PUBLISH: u8 = 4;
    /// Client → relay: a job is done (spec §14).
    pub const ACK: u8 = 5;
    /// Client → relay: give a job back, optionally after a delay (spec §14).
    pub const NACK: u8 = 6;
    /// Client → relay: renew a job's lease (spec §14).
    pub const EXTEND: u8 = 7;
    /// Relay → client: the auth nonce.
    pub const CHALLENGE: u8 = 10;
    /// Relay → client: an event for a subscription.
    pub const EVENT: u8 = 11;
    /// Relay → client: end of stored events.
    pub const EOSE: u8 = 12;
    /// Relay → client: success.
    pub const OK: u8 = 13;
    /// Relay → client: failure.
    pub const ERROR: u8 = 14;
}

/// The MessagePack bytes of one Event map, exactly as received or encoded.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RawEvent(pub Bytes);

impl RawEvent {
    /// Encodes an event canonically.
    pub fn encode(event: &Event) -> RawEvent {
        RawEvent(Bytes::from(event.encode()))
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Decodes the event strictly (spec §2).
    pub fn decode(&self) -> Result<Event, ProtocolError> {
        Event::decode(&self.0)
    }

    /// The `id` field if it can be found, even when the rest of the event is malformed,
    /// so an ERROR can name the event it rejects.
    pub fn best_effort_id(&self) -> Option<EventId> {
        let mut reader = Reader::new(&self.0);
        let entries = reader.read_map_len("event").ok()?;
        for _ in 0..entries {
            let key = reader.read_str("key").ok()?;
            if key == "id" {
                return reader.read_bin_fixed::<32>("id").ok();
            }
            reader.skip_value().ok()?;
        }
        None
    }
}

/// AUTH payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Auth {
    /// The key authenticating.
    pub pubkey: PublicKey,
    /// Ed25519 signature over SHA-256(nonce || relay_url).
    pub sig: [u8; 64],
}

/// SUBSCRIBE payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Subscribe {
    /// 1..=64 bytes, chosen by the client.
    pub sub_id: String,
    /// Any of these may match.
    pub filters: Vec<Filter>,
    /// Replay mode: every match with `seq > after_seq`, oldest first.
    pub after_seq: Option<u64>,
}

impl Subscribe {
    /// Checks the configurable bounds of spec §9.1 (400 on any breach).
    pub fn check_bounds(&self, limits: &Limits) -> Result<(), ProtocolError> {
        if self.filters.is_empty() {
            return Err(ProtocolError::invalid("a subscription needs at least one filter"));
        }
        if self.filters.len() > limits.max_filters {
            return Err(ProtocolError::invalid(format!(
                "{} filters, the limit is {}",
                self.filters.len(),
                limits.max_filters
            )));
        }
        self.filters.iter().try_for_each(|filter| filter.check_bounds(limits))
    }
}

/// Allowed `lease_secs` (spec §14).
pub const LEASE_SECS: std::ops::RangeInclusive<u64> = 1..=3600;
/// Allowed `max_in_flight` (spec §14).
pub const MAX_IN_FLIGHT: std::ops::RangeInclusive<u64> = 1..=256;
/// Default `lease_secs` of a queue subscription.
pub const DEFAULT_LEASE_SECS: u64 = 60;
/// Default `max_in_flight` of a queue subscription.
pub const DEFAULT_MAX_IN_FLIGHT: u64 = 1;
/// Longest group name in bytes.
pub const MAX_GROUP_BYTES: usize = 64;

/// A SUBSCRIBE that names a `group`: a queue subscription (spec §14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueSubscribe {
    /// `sub_id`, `filters` and `after_seq` (the start of a new group).
    pub subscribe: Subscribe,
    /// The queue's name, 1..=64 bytes.
    pub group: String,
    /// Lease length for jobs given to this member, 1..=3600.
    pub lease_secs: u64,
    /// Most unfinished leases at once, 1..=256.
    pub max_in_flight: u64,
}

/// Names a job held by a queue subscription: ACK's payload and PUBLISH's `ack`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobRef {
    /// The queue subscription holding the lease.
    pub sub_id: String,
    /// The job request's event id.
    #[serde(with = "serde_bytes")]
    pub job: [u8; 32],
}

/// NACK payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Nack {
    /// The job given back.
    #[serde(flatten)]
    pub job: JobRef,
    /// Offer it again after this many seconds (default 0).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub delay_secs: Option<u64>,
}

/// EXTEND payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Extend {
    /// The job whose lease is renewed.
    #[serde(flatten)]
    pub job: JobRef,
    /// New lease length from now (default: the subscription's `lease_secs`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lease_secs: Option<u64>,
}

/// The `lease` of an offered job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Lease {
    /// Unix time in milliseconds when the lease expires.
    pub until_ms: u64,
    /// Which offer of the job this is, from 1.
    pub attempt: u64,
}

/// A relay → client EVENT with `lease`: a job offered to a queue subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The EVENT fields.
    pub message: EventMessage,
    /// The lease.
    pub lease: Lease,
}

/// OK answering EXTEND: the job and the new lease end.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct OkLease {
    /// The job.
    #[serde(with = "serde_bytes")]
    pub id: [u8; 32],
    /// Unix time in milliseconds when the renewed lease expires.
    pub until_ms: u64,
}

/// A relay → client EVENT: an event delivered to a subscription.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventMessage {
    /// The subscription it is for.
    pub sub_id: String,
    /// The event's bytes as stored.
    pub event: RawEvent,
    /// The event's seq (0 for ephemeral events).
    pub seq: u64,
}

/// OK payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OkMessage {
    /// The event id, or the authenticated pubkey after AUTH.
    #[serde(with = "serde_bytes")]
    pub id: [u8; 32],
    /// The stored event's seq; absent for AUTH and ephemeral events.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
}

/// ERROR payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ErrorMessage {
    /// What programs act on (spec §8).
    pub code: u16,
    /// `word: human text`.
    pub message: String,
    /// The event this error answers, when known.
    #[serde(skip_serializing_if = "Option::is_none", with = "opt_bin32")]
    pub id: Option<[u8; 32]>,
    /// The subscription this error ends, when any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sub_id: Option<String>,
    /// The resume point of an overflow (spec §9.4).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub seq: Option<u64>,
    /// Wait at least this long before retrying (spec §15).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
}

impl ErrorMessage {
    /// An ERROR for a protocol error, optionally naming an event.
    pub fn from_error(error: &ProtocolError, id: Option<EventId>) -> Self {
        ErrorMessage {
            code: error.code.as_u16(),
            message: error.message(),
            id,
            sub_id: None,
            seq: None,
            retry_after_ms: error.retry_after_ms,
        }
    }
}

mod opt_bin32 {
    use serde::Serializer;

    pub fn serialize<S: Serializer>(value: &Option<[u8; 32]>, serializer: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(bytes) => serializer.serialize_bytes(bytes),
            None => serializer.serialize_none(),
        }
    }
}

/// Every message of spec §6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// 1: client authenticates.
    Auth(Auth),
    /// 2: client subscribes.
    Subscribe(Subscribe),
    /// 3: client unsubscribes `sub_id`.
    Unsubscribe {
        /// The subscription to close.
        sub_id: String,
    },
    /// 4: client publishes an event.
    Publish {
        /// The event, as sent.
        event: RawEvent,
    },
    /// 10: relay's auth nonce.
    Challenge {
        /// 32 fresh random bytes.
        nonce: [u8; 32],
    },
    /// 11: an event for a subscription.
    Event(EventMessage),
    /// 12: end of stored events for `sub_id`.
    Eose {
        /// The subscription.
        sub_id: String,
    },
    /// 13: success.
    Ok(OkMessage),
    /// 14: failure.
    Error(ErrorMessage),
    /// 2 with `group`: a queue subscription (spec §14).
    QueueSubscribe(QueueSubscribe),
    /// 4 with `ack`: publish a result and complete a job in one step (spec §14).
    PublishAck {
        /// The event, as sent.
        event: RawEvent,
        /// The job it completes.
        ack: JobRef,
    },
    /// 5: the job is done.
    Ack(JobRef),
    /// 6: give the job back.
    Nack(Nack),
    /// 7: renew the lease.
    Extend(Extend),
    /// 11 with `lease`: a job offered to a queue subscription.
    Offer(Offer),
    /// 13 with `until_ms`: the answer to EXTEND.
    OkLease(OkLease),
}

#[derive(Serialize)]
struct SubscribePayload<'a> {
    sub_id: &'a str,
    filters: &'a [Filter],
    #[serde(skip_serializing_if = "Option::is_none")]
    after_seq: Option<u64>,
}

#[derive(Serialize)]
struct QueueSubscribePayload<'a> {
    sub_id: &'a str,
    filters: &'a [Filter],
    #[serde(skip_serializing_if = "Option::is_none")]
    after_seq: Option<u64>,
    group: &'a str,
    lease_secs: u64,
    max_in_flight: u64,
}

#[derive(Serialize)]
struct AuthPayload<'a> {
    #[serde(with = "serde_bytes")]
    pubkey: &'a [u8; 32],
    #[serde(with = "serde_bytes")]
    sig: &'a [u8; 64],
}

#[derive(Serialize)]
struct SubIdPayload<'a> {
    sub_id: &'a str,
}

#[derive(Serialize)]
struct ChallengePayload<'a> {
    #[serde(with = "serde_bytes")]
    nonce: &'a [u8; 32],
}

impl Frame {
    /// The frame's type number.
    pub fn frame_type(&self) -> u8 {
        match self {
            Frame::Auth(_) => frame_type::AUTH,
            Frame::Subscribe(_) => frame_type::SUBSCRIBE,
            Frame::Unsubscribe { .. } => frame_type::UNSUBSCRIBE,
            Frame::Publish { .. } => frame_type::PUBLISH,
            Frame::Challenge { .. } => frame_type::CHALLENGE,
            Frame::Event(_) => frame_type::EVENT,
            Frame::Eose { .. } => frame_type::EOSE,
            Frame::Ok(_) => frame_type::OK,
            Frame::Error(_) => frame_type::ERROR,
            Frame::QueueSubscribe(_) => frame_type::SUBSCRIBE,
            Frame::PublishAck { .. } => frame_type::PUBLISH,
            Frame::Ack(_) => frame_type::ACK,
            Frame::Nack(_) => frame_type::NACK,
            Frame::Extend(_) => frame_type::EXTEND,
            Frame::Offer(_) => frame_type::EVENT,
            Frame::OkLease(_) => frame_type::OK,
        }
    }

    /// Encodes the frame (payload keys in the order of spec §6, shortest integers).
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Frame::Publish { event } => encode_publish_frame(event.as_bytes()),
            Frame::Event(message) => encode_event_frame(&message.sub_id, message.seq, message.event.as_bytes()),
            Frame::Auth(auth) => {
                encode_with_payload(self.frame_type(), &AuthPayload { pubkey: &auth.pubkey, sig: &auth.sig })
            }
            Frame::Subscribe(subscribe) => encode_with_payload(
                self.frame_type(),
                &SubscribePayload {
                    sub_id: &subscribe.sub_id,
                    filters: &subscribe.filters,
                    after_seq: subscribe.after_seq,
                },
            ),
            Frame::Unsubscribe { sub_id } | Frame::Eose { sub_id } => {
                encode_with_payload(self.frame_type(), &SubIdPayload { sub_id })
            }
            Frame::Challenge { nonce } => encode_with_payload(self.frame_type(), &ChallengePayload { nonce }),
            Frame::Ok(ok) => encode_with_payload(self.frame_type(), ok),
            Frame::Error(error) => encode_with_payload(self.frame_type(), error),
            Frame::QueueSubscribe(queue) => encode_with_payload(
                self.frame_type(),
                &QueueSubscribePayload {
                    sub_id: &queue.subscribe.sub_id,
                    filters: &queue.subscribe.filters,
                    after_seq: queue.subscribe.after_seq,
                    group: &queue.group,
                    lease_secs: queue.lease_secs,
                    max_in_flight: queue.max_in_flight,
                },
            ),
            Frame::PublishAck { event, ack } => encode_publish_ack_frame(event.as_bytes(), ack),
            Frame::Ack(job) => encode_with_payload(self.frame_type(), job),
            Frame::Nack(nack) => encode_with_payload(self.frame_type(), nack),
            Frame::Extend(extend) => encode_with_payload(self.frame_type(), extend),
            Frame::Offer(offer) => encode_offer_frame(
                &offer.message.sub_id,
                offer.message.seq,
                offer.message.event.as_bytes(),
                offer.lease,
            ),
            Frame::OkLease(ok) => encode_with_payload(self.frame_type(), ok),
        }
    }

    /// Decodes one frame from a binary message. Never panics; any failure is a 400.
    ///
    /// Raw events are slices of `message`, not copies.
    pub fn decode(message: &Bytes) -> Result<Frame, ProtocolError> {
        let mut reader = Reader::new(message);
        let len = reader.read_array_len("frame")?;
        if len != 2 {
            return Err(ProtocolError::invalid(format!("frame must be an array of 2 elements, got {len}")));
        }
        let frame_type = reader.read_uint("frame type")?;
        let frame = match u8::try_from(frame_type).unwrap_or(u8::MAX) {
            frame_type::AUTH => read_auth(&mut reader)?,
            frame_type::SUBSCRIBE => read_subscribe(&mut reader)?,
            frame_type::UNSUBSCRIBE => Frame::Unsubscribe { sub_id: read_sub_id_payload(&mut reader)? },
            frame_type::PUBLISH => read_publish(&mut reader, message)?,
            frame_type::ACK => Frame::Ack(read_job_payload(&mut reader, None)?.0),
            frame_type::NACK => {
                let (job, delay_secs) = read_job_payload(&mut reader, Some("delay_secs"))?;
                Frame::Nack(Nack { job, delay_secs })
            }
            frame_type::EXTEND => {
                let (job, lease_secs) = read_job_payload(&mut reader, Some("lease_secs"))?;
                if lease_secs.is_some_and(|secs| !LEASE_SECS.contains(&secs)) {
                    return Err(ProtocolError::invalid("lease_secs must be 1..=3600"));
                }
                Frame::Extend(Extend { job, lease_secs })
            }
            frame_type::CHALLENGE => read_challenge(&mut reader)?,
            frame_type::EVENT => read_event_message(&mut reader, message)?,
            frame_type::EOSE => Frame::Eose { sub_id: read_sub_id_payload(&mut reader)? },
            frame_type::OK => read_ok(&mut reader)?,
            frame_type::ERROR => read_error(&mut reader)?,
            _ => return Err(ProtocolError::invalid(format!("unknown frame type {frame_type}"))),
        };
        reader.expect_end()?;
        Ok(frame)
    }

    /// Decodes from a plain slice (copies it first).
    pub fn decode_slice(message: &[u8]) -> Result<Frame, ProtocolError> {
        Self::decode(&Bytes::copy_from_slice(message))
    }
}

fn write_header(out: &mut Vec<u8>, frame_type: u8) {
    // Writes into a Vec never fail.
    let _ = rmp::encode::write_array_len(out, 2);
    let _ = rmp::encode::write_uint(out, frame_type as u64);
}

fn encode_with_payload<T: Serialize>(frame_type: u8, payload: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    write_header(&mut out, frame_type);
    if let Err(error) = rmp_serde::encode::write_named(&mut out, payload) {
        unreachable!("encoding a frame payload into a Vec failed: {error}");
    }
    out
}

/// Builds `[4, {"event": <raw>}]` around an already-encoded event.
pub fn encode_publish_frame(raw_event: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + raw_event.len());
    write_header(&mut out, frame_type::PUBLISH);
    let _ = rmp::encode::write_map_len(&mut out, 1);
    let _ = rmp::encode::write_str(&mut out, "event");
    out.extend_from_slice(raw_event);
    out
}

/// Builds `[11, {"sub_id": s, "event": <raw>, "seq": n}]` around an already-encoded event.
pub fn encode_event_frame(sub_id: &str, seq: u64, raw_event: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(32 + sub_id.len() + raw_event.len());
    write_header(&mut out, frame_type::EVENT);
    let _ = rmp::encode::write_map_len(&mut out, 3);
    let _ = rmp::encode::write_str(&mut out, "sub_id");
    let _ = rmp::encode::write_str(&mut out, sub_id);
    let _ = rmp::encode::write_str(&mut out, "event");
    out.extend_from_slice(raw_event);
    let _ = rmp::encode::write_str(&mut out, "seq");
    let _ = rmp::encode::write_uint(&mut out, seq);
    out
}

/// Builds `[4, {"event": <raw>, "ack": {"sub_id": s, "job": id}}]`.
pub fn encode_publish_ack_frame(raw_event: &[u8], ack: &JobRef) -> Vec<u8> {
    let mut out = Vec::with_capacity(96 + raw_event.len());
    write_header(&mut out, frame_type::PUBLISH);
    let _ = rmp::encode::write_map_len(&mut out, 2);
    let _ = rmp::encode::write_str(&mut out, "event");
    out.extend_from_slice(raw_event);
    let _ = rmp::encode::write_str(&mut out, "ack");
    if let Err(error) = rmp_serde::encode::write_named(&mut out, ack) {
        unreachable!("encoding an ack into a Vec failed: {error}");
    }
    out
}

/// Builds `[11, {"sub_id", "event", "seq", "lease": {"until_ms", "attempt"}}]`.
pub fn encode_offer_frame(sub_id: &str, seq: u64, raw_event: &[u8], lease: Lease) -> Vec<u8> {
    let mut out = Vec::with_capacity(64 + sub_id.len() + raw_event.len());
    write_header(&mut out, frame_type::EVENT);
    let _ = rmp::encode::write_map_len(&mut out, 4);
    let _ = rmp::encode::write_str(&mut out, "sub_id");
    let _ = rmp::encode::write_str(&mut out, sub_id);
    let _ = rmp::encode::write_str(&mut out, "event");
    out.extend_from_slice(raw_event);
    let _ = rmp::encode::write_str(&mut out, "seq");
    let _ = rmp::encode::write_uint(&mut out, seq);
    let _ = rmp::encode::write_str(&mut out, "lease");
    let _ = rmp::encode::write_map_len(&mut out, 2);
    let _ = rmp::encode::write_str(&mut out, "until_ms");
    let _ = rmp::encode::write_uint(&mut out, lease.until_ms);
    let _ = rmp::encode::write_str(&mut out, "attempt");
    let _ = rmp::encode::write_uint(&mut out, lease.attempt);
    out
}

/// Walks a lenient payload map: calls `field` for each key; `field` returns false for
/// unknown keys, whose values are then skipped. Known keys may appear once.
fn read_payload<'a>(
    reader: &mut Reader<'a>,
    known: &[&str],
    mut field: impl FnMut(&mut Reader<'a>, usize) -> Result<(), ProtocolError>,
) -> Result<SeenKeys, ProtocolError> {
    let entries = reader.read_map_len("payload")?;
    let mut seen = SeenKeys::new();
    for _ in 0..entries {
        let key = reader.read_str("payload key")?;
        match known.iter().position(|candidate| *candidate == key) {
            Some(index) => {
                seen.mark(index as u32, key)?;
                field(reader, index)?;
            }
            None => {
                reader.skip_value()?;
            }
        }
    }
    Ok(seen)
}

fn missing(key: &str) -> ProtocolError {
    ProtocolError::invalid(format!("payload is missing {key:?}"))
}

fn required<T>(value: Option<T>, key: &str) -> Result<T, ProtocolError> {
    value.ok_or_else(|| missing(key))
}

/// Reads an optional uint where `nil` also means absent.
fn read_optional_uint(reader: &mut Reader<'_>, what: &str) -> Result<Option<u64>, ProtocolError> {
    if reader.next_is_nil() {
        reader.skip_value()?;
        return Ok(None);
    }
    reader.read_uint(what).map(Some)
}

fn read_sub_id(reader: &mut Reader<'_>) -> Result<String, ProtocolError> {
    read_name(reader, "sub_id", MAX_SUB_ID_BYTES)
}

/// Reads a str of 1..=`max` bytes (a `sub_id` or a `group`).
fn read_name(reader: &mut Reader<'_>, what: &str, max: usize) -> Result<String, ProtocolError> {
    let name = reader.read_str(what)?;
    if name.is_empty() || name.len() > max {
        return Err(ProtocolError::invalid(format!("{what} must be 1..={max} bytes")));
    }
    Ok(name.to_owned())
}

fn read_auth(reader: &mut Reader<'_>) -> Result<Frame, ProtocolError> {
    let (mut pubkey, mut sig) = (None, None);
    read_payload(reader, &["pubkey", "sig"], |reader, index| {
        match index {
            0 => pubkey = Some(reader.read_bin_fixed("pubkey")?),
            _ => sig = Some(reader.read_bin_fixed("sig")?),
        }
        Ok(())
    })?;
    Ok(Frame::Auth(Auth { pubkey: required(pubkey, "pubkey")?, sig: required(sig, "sig")? }))
}

fn read_subscribe(reader: &mut Reader<'_>) -> Result<Frame, ProtocolError> {
    let (mut sub_id, mut filters, mut after_seq) = (None, None, None);
    let (mut group, mut lease_secs, mut max_in_flight) = (None, None, None);
    let keys = ["sub_id", "filters", "after_seq", "group", "lease_secs", "max_in_flight"];
    read_payload(reader, &keys, |reader, index| {
        match index {
            0 => sub_id = Some(read_sub_id(reader)?),
            1 => {
                let count = reader.read_array_len("filters")?;
                let mut list = Vec::with_capacity(count.min(16));
                for _ in 0..count {
                    list.push(Filter::read(reader)?);
                }
                filters = Some(list);
            }
            2 => after_seq = read_optional_uint(reader, "after_seq")?,
            3 => group = Some(read_group(reader)?),
            4 => lease_secs = read_optional_uint(reader, "lease_secs")?,
            _ => max_in_flight = read_optional_uint(reader, "max_in_flight")?,
        }
        Ok(())
    })?;
    let subscribe =
        Subscribe { sub_id: required(sub_id, "sub_id")?, filters: required(filters, "filters")?, after_seq };
    let Some(group) = group else {
        if lease_secs.is_some() || max_in_flight.is_some() {
            return Err(ProtocolError::invalid("lease_secs and max_in_flight need a group"));
        }
        return Ok(Frame::Subscribe(subscribe));
    };
    let lease_secs = lease_secs.unwrap_or(DEFAULT_LEASE_SECS);
    if !LEASE_SECS.contains(&lease_secs) {
        return Err(ProtocolError::invalid("lease_secs must be 1..=3600"));
    }
    let max_in_flight = max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT);
    if !MAX_IN_FLIGHT.contains(&max_in_flight) {
        return Err(ProtocolError::invalid("max_in_flight must be 1..=256"));
    }
    Ok(Frame::QueueSubscribe(QueueSubscribe { subscribe, group, lease_secs, max_in_flight }))
}

fn read_group(reader: &mut Reader<'_>) -> Result<String, ProtocolError> {
    read_name(reader, "group", MAX_GROUP_BYTES)
}

/// Reads a `{"sub_id": str, "job": bin32}` map (PUBLISH's `ack`).
fn read_job_ref(reader: &mut Reader<'_>) -> Result<JobRef, ProtocolError> {
    Ok(read_job_fields(reader, None)?.0)
}

/// Reads an ACK/NACK/EXTEND payload: `sub_id`, `job` and an optional uint named `extra`.
fn read_job_payload(reader: &mut Reader<'_>, extra: Option<&str>) -> Result<(JobRef, Option<u64>), ProtocolError> {
    read_job_fields(reader, extra)
}

fn read_job_fields(reader: &mut Reader<'_>, extra: Option<&str>) -> Result<(JobRef, Option<u64>), ProtocolError> {
    let (mut sub_id, mut job, mut value) = (None, None, None);
    let extra_key = extra.unwrap_or("");
    let keys: &[&str] = if extra.is_some() { &["sub_id", "job", extra_key] } else { &["sub_id", "job"] };
    read_payload(reader, keys, |reader, index| {
        match index {
            0 => sub_id = Some(read_sub_id(reader)?),
            1 => job = Some(reader.read_bin_fixed("job")?),
            _ => value = read_optional_uint(reader, extra_key)?,
        }
        Ok(())
    })?;
    Ok((JobRef { sub_id: required(sub_id, "sub_id")?, job: required(job, "job")? }, value))
}

fn read_sub_id_payload(reader: &mut Reader<'_>) -> Result<String, ProtocolError> {
    let mut sub_id = None;
    read_payload(reader, &["sub_id"], |reader, _| {
        sub_id = Some(read_sub_id(reader)?);
        Ok(())
    })?;
    required(sub_id, "sub_id")
}

/// Slices the raw bytes of the value at `reader` out of `message` without copying.
///
/// `reader` walks `message` from its first byte, so its positions index `message`.
fn read_raw_event(reader: &mut Reader<'_>, message: &Bytes) -> Result<RawEvent, ProtocolError> {
    let start = reader.position();
    let len = reader.skip_value()?.len();
    Ok(RawEvent(message.slice(start..start + len)))
}

fn read_publish(reader: &mut Reader<'_>, message: &Bytes) -> Result<Frame, ProtocolError> {
    let (mut event, mut ack) = (None, None);
    read_payload(reader, &["event", "ack"], |reader, index| {
        match index {
            0 => event = Some(read_raw_event(reader, message)?),
            _ => ack = Some(read_job_ref(reader)?),
        }
        Ok(())
    })?;
    let event = required(event, "event")?;
    Ok(match ack {
        Some(ack) => Frame::PublishAck { event, ack },
        None => Frame::Publish { event },
    })
}

fn read_challenge(reader: &mut Reader<'_>) -> Result<Frame, ProtocolError> {
    let mut nonce = None;
    read_payload(reader, &["nonce"], |reader, _| {
        nonce = Some(reader.read_bin_fixed("nonce")?);
        Ok(())
    })?;
    Ok(Frame::Challenge { nonce: required(nonce, "nonce")? })
}

fn read_event_message(reader: &mut Reader<'_>, message: &Bytes) -> Result<Frame, ProtocolError> {
    let (mut sub_id, mut event, mut seq, mut lease) = (None, None, None, None);
    read_payload(reader, &["sub_id", "event", "seq", "lease"], |reader, index| {
        match index {
            0 => sub_id = Some(read_sub_id(reader)?),
            1 => event = Some(read_raw_event(reader, message)?),
            2 => seq = Some(reader.read_uint("seq")?),
            _ => lease = Some(read_lease(reader)?),
        }
        Ok(())
    })?;
    let message = EventMessage {
        sub_id: required(sub_id, "sub_id")?,
        event: required(event, "event")?,
        seq: required(seq, "seq")?,
    };
    Ok(match lease {
        Some(lease) => Frame::Offer(Offer { message, lease }),
        None => Frame::Event(message),
    })
}

fn read_lease(reader: &mut Reader<'_>) -> Result<Lease, ProtocolError> {
    let (mut until_ms, mut attempt) = (None, None);
    read_payload(reader, &["until_ms", "attempt"], |reader, index| {
        match index {
            0 => until_ms = Some(reader.read_uint("until_ms")?),
            _ => attempt = Some(reader.read_uint("attempt")?),
        }
        Ok(())
    })?;
    Ok(Lease { until_ms: required(until_ms, "until_ms")?, attempt: required(attempt, "attempt")? })
}

fn read_ok(reader: &mut Reader<'_>) -> Result<Frame, ProtocolError> {
    let (mut id, mut seq, mut until_ms) = (None, None, None);
    read_payload(reader, &["id", "seq", "until_ms"], |reader, index| {
        match index {
            0 => id = Some(reader.read_bin_fixed("id")?),
            1 => seq = read_optional_uint(reader, "seq")?,
            _ => until_ms = read_optional_uint(reader, "until_ms")?,
        }
        Ok(())
    })?;
    let id = required(id, "id")?;
    Ok(match until_ms {
        Some(until_ms) => Frame::OkLease(OkLease { id, until_ms }),
        None => Frame::Ok(OkMessage { id, seq }),
    })
}

fn read_error(reader: &mut Reader<'_>) -> Result<Frame, ProtocolError> {
    let mut error =
        ErrorMessage { code: 0, message: String::new(), id: None, sub_id: None, seq: None, retry_after_ms: None };
    let keys = ["code", "message", "id", "sub_id", "seq", "retry_after_ms"];
    let seen = read_payload(reader, &keys, |reader, index| {
        match index {
            0 => {
                let code = reader.read_uint("code")?;
                error.code = u16::try_from(code).map_err(|_| ProtocolError::invalid("error code out of range"))?;
            }
            1 => error.message = reader.read_str("message")?.to_owned(),
            2 if reader.next_is_nil() => {
                reader.skip_value()?;
            }
            2 => error.id = Some(reader.read_bin_fixed("id")?),
            3 if reader.next_is_nil() => {
                reader.skip_value()?;
            }
            3 => error.sub_id = Some(reader.read_str("sub_id")?.to_owned()),
            4 => error.seq = read_optional_uint(reader, "seq")?,
            _ => error.retry_after_ms = read_optional_uint(reader, "retry_after_ms")?,
        }
        Ok(())
    })?;
    if !seen.has(0) {
        return Err(missing("code"));
    }
    if !seen.has(1) {
        return Err(missing("message"));
    }
    Ok(Frame::Error(error))
}
