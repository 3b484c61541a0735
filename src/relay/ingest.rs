//! The publish pipeline (spec §8), one step per rule, in spec order. Storage (duplicate
//! check, commit) and fan-out follow in the connection and the writer.

use std::sync::Arc;
use std::time::Instant;

use super::access::Access;
use super::config::LimitsConfig;
use super::keys::KeyCache;
use super::rate::RateLimiter;
use super::store::Accepted;
use crate::protocol::kind::{is_admin, is_ephemeral};
use crate::protocol::signature::SignatureError;
use crate::protocol::tags::expires_at;
use crate::protocol::{ErrorCode, Event, EventId, ProtocolError, PublicKey, RawEvent};

/// A refused publish: the error and the event id when it could be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Why.
    pub error: ProtocolError,
    /// Which event.
    pub id: Option<EventId>,
}

/// What to do with an event that passed every check before storage.
#[derive(Debug)]
pub enum Admitted {
    /// Fan out and acknowledge without a seq.
    Ephemeral(Arc<Accepted>),
    /// Store, then fan out and acknowledge with the seq.
    Store(Arc<Accepted>),
}

/// The connection publishing: its authenticated key and the relay's publish buckets.
pub struct Publisher<'a> {
    /// The key the connection authenticated as (rate limits are per connection key).
    pub key: PublicKey,
    /// Token buckets per key.
    pub limiter: &'a RateLimiter<PublicKey>,
    /// Decompressed author keys.
    pub keys: &'a KeyCache,
}

/// Validation (spec §3): the event decodes, its fields are within the limits, its id is
/// the hash of its canonical payload and its signature verifies. Also used for events a
/// mirror copies (spec §17).
pub fn validate(raw: &RawEvent, limits: &LimitsConfig, keys: &KeyCache) -> Result<crate::protocol::Event, Rejection> {
    let event = check_unsigned(raw, limits)?;
    let verdict = keys.verify(&event);
    check_signature(event, verdict)
}

/// Validation (spec §3) up to the signature: the event decodes, its fields are within the
/// limits and its id is the hash of its canonical payload. The signature is the verifier
/// stage's ([`super::verifier`]); [`check_signature`] applies its verdict.
pub fn check_unsigned(raw: &RawEvent, limits: &LimitsConfig) -> Result<Event, Rejection> {
    let event = raw.decode().map_err(|error| Rejection { error, id: raw.best_effort_id() })?;
    let reject = |error| Rejection { error, id: Some(event.id) };
    event.check_fields(&limits.protocol()).map_err(reject)?;
    event.check_id().map_err(reject)?;
    Ok(event)
}

/// The last step of validation: the event if its signature verdict is Ok, else 400 naming
/// the clause that failed.
pub fn check_signature(event: Event, verdict: Result<(), SignatureError>) -> Result<Event, Rejection> {
    match verdict {
        Ok(()) => Ok(event),
        Err(bad) => Err(Rejection { error: bad.into(), id: Some(event.id) }),
    }
}

/// Runs every rule before storage: validation (§3) → author allowed → kind rules →
/// expires_at → created_at skew → rate limit → admin event content.
pub fn admit(
    raw: RawEvent,
    access: &Access,
    limits: &LimitsConfig,
    publisher: &Publisher<'_>,
    now: u64,
) -> Result<Admitted, Rejection> {
    let event = validate(&raw, limits, publisher.keys)?;
    admit_valid(event, raw, access, limits, publisher, now)
}

/// The rules after validation, for an event that passed it (spec §8): author allowed →
/// kind rules → expires_at → created_at skew → rate limit → admin event content.
pub fn admit_valid(
    event: Event,
    raw: RawEvent,
    access: &Access,
    limits: &LimitsConfig,
    publisher: &Publisher<'_>,
    now: u64,
) -> Result<Admitted, Rejection> {
    let id = Some(event.id);
    let reject = |error| Rejection { error, id };
    if !access.is_allowed(&event.pubkey) {
        return Err(reject(ProtocolError::new(ErrorCode::Restricted, "the event's author is not on the allowlist")));
    }
    if is_admin(event.kind) && !access.is_admin(&event.pubkey) {
        return Err(reject(ProtocolError::new(ErrorCode::Restricted, "admin kinds must be authored by an admin")));
    }
    let expiry = expires_at(&event).map_err(reject)?;
    if expiry.is_some_and(|time| time <= now) {
        return Err(reject(ProtocolError::new(ErrorCode::Expired, "expires_at is already past")));
    }
    if event.created_at > now.saturating_add(limits.max_future_skew_secs) {
        return Err(reject(ProtocolError::invalid(format!(
            "created_at is more than {} s in the future",
            limits.max_future_skew_secs
        ))));
    }
    if let Err(wait) =
        publisher.limiter.try_take(publisher.key, limits.publish_per_second, limits.publish_burst, Instant::now())
    {
        return Err(reject(
            ProtocolError::new(
                ErrorCode::RateLimited,
                format!("at most {} events per second per key", limits.publish_per_second),
            )
            .retry_after(wait),
        ));
    }
    if is_admin(event.kind) {
        access.check_admin_event(&event).map_err(reject)?;
    }
    let accepted = Arc::new(Accepted { event, raw: raw.0, expires_at: expiry });
    if is_ephemeral(accepted.event.kind) {
        return Ok(Admitted::Ephemeral(accepted));
    }
    Ok(Admitted::Store(accepted))
}
