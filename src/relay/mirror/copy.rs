//! What a mirror does with one event from upstream (spec §17): verify it (§3, as ingest
//! does), then store it, fan it out live (ephemeral kinds), or skip it with a reason.

use std::sync::Arc;

use crate::protocol::kind::{is_admin, is_ephemeral};
use crate::protocol::tags::expires_at;
use crate::protocol::RawEvent;
use crate::relay::ingest::validate;
use crate::relay::store::Accepted;
use crate::relay::RelayState;

/// Why a copied event is not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    /// Fails validation (§3) or has a malformed `expires_at`.
    Invalid,
    /// An admin kind (9000–9099): authority over a relay stays local.
    Admin,
    /// Its author is not allowed here and the mirror does not say `any_author`.
    Author,
    /// Its `expires_at` has passed.
    Expired,
}

impl Skip {
    /// The metric label.
    pub fn label(self) -> &'static str {
        match self {
            Skip::Invalid => "invalid",
            Skip::Admin => "admin",
            Skip::Author => "author",
            Skip::Expired => "expired",
        }
    }
}

/// The decision for one event.
#[derive(Debug)]
pub enum Verdict {
    /// Store (and fan out after the commit).
    Store(Arc<Accepted>),
    /// Fan out now, never store.
    Ephemeral(Arc<Accepted>),
    /// Do not copy.
    Skip(Skip),
}

/// Decides what to do with `raw` as this relay is configured now.
pub fn classify(raw: &RawEvent, state: &RelayState, any_author: bool, now: u64) -> Verdict {
    let config = state.config();
    let Ok(event) = validate(raw, &config.limits, &state.author_keys) else {
        return Verdict::Skip(Skip::Invalid);
    };
    if is_admin(event.kind) {
        return Verdict::Skip(Skip::Admin);
    }
    if !any_author && !state.access.is_allowed(&event.pubkey) {
        return Verdict::Skip(Skip::Author);
    }
    let expiry = match expires_at(&event) {
        Ok(expiry) => expiry,
        Err(_) => return Verdict::Skip(Skip::Invalid),
    };
    if expiry.is_some_and(|time| time <= now) {
        return Verdict::Skip(Skip::Expired);
    }
    let ephemeral = is_ephemeral(event.kind);
    let accepted = Arc::new(Accepted { event, raw: raw.0.clone(), expires_at: expiry });
    if ephemeral {
        Verdict::Ephemeral(accepted)
    } else {
        Verdict::Store(accepted)
    }
}
