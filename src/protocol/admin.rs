//! Relay administration (spec §10): what an ALLOW or REVOKE event asks for, and the
//! run-time allowlist a log of them produces when replayed in seq order. The relay (at
//! startup and on every admin event) and `axon allowlist` both replay through
//! [`AllowLog`].

use std::collections::HashMap;

use super::error::ProtocolError;
use super::event::{Event, PublicKey};
use super::kind::{KIND_ALLOW, KIND_REVOKE};
use super::tags::{parse_p_value, EXPIRES_AT, P};

/// An admin change, checked and ready to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminChange {
    /// Kind 9000: allow these keys.
    Allow(Vec<PublicKey>),
    /// Kind 9001: revoke these keys.
    Revoke(Vec<PublicKey>),
    /// Another admin kind (9002–9099): stored, no effect on access.
    None,
}

/// Reads what an admin event asks for: every `p` value must be 64 lowercase hex, at least
/// one `p` tag, no `expires_at` (400 otherwise). Other kinds ask for nothing.
pub fn admin_change(event: &Event) -> Result<AdminChange, ProtocolError> {
    if event.kind != KIND_ALLOW && event.kind != KIND_REVOKE {
        return Ok(AdminChange::None);
    }
    let mut keys = Vec::new();
    for tag in event.tags.iter().filter(|tag| tag.name == P) {
        let value = tag.first_value().unwrap_or_default();
        keys.push(
            parse_p_value(value).ok_or_else(|| {
                ProtocolError::invalid(format!("p value {value:?} is not 64 lowercase hex characters"))
            })?,
        );
    }
    if keys.is_empty() {
        return Err(ProtocolError::invalid("an admin event needs at least one p tag"));
    }
    // An expiring ALLOW/REVOKE would be deleted from the log and so undone at the next
    // restart while still applied until then: refuse it instead.
    if event.tags.iter().any(|tag| tag.name == EXPIRES_AT) {
        return Err(ProtocolError::invalid("ALLOW and REVOKE events cannot carry expires_at"));
    }
    Ok(if event.kind == KIND_ALLOW { AdminChange::Allow(keys) } else { AdminChange::Revoke(keys) })
}

/// The keys allowed at run time: ALLOW adds, REVOKE removes, applied in seq order.
#[derive(Debug, Clone, Default)]
pub struct AllowLog {
    /// Each allowed key and when it was (first) allowed, for listing in that order.
    allowed: HashMap<PublicKey, u64>,
    next: u64,
}

impl AllowLog {
    /// Applies one change; returns the keys it stopped allowing.
    pub fn apply(&mut self, change: &AdminChange) -> Vec<PublicKey> {
        match change {
            AdminChange::Allow(keys) => {
                for key in keys {
                    if !self.allowed.contains_key(key) {
                        self.allowed.insert(*key, self.next);
                        self.next += 1;
                    }
                }
                Vec::new()
            }
            AdminChange::Revoke(keys) => {
                keys.iter().filter(|key| self.allowed.remove(*key).is_some()).copied().collect()
            }
            AdminChange::None => Vec::new(),
        }
    }

    /// Replays admin events given in seq order; events that ask for nothing valid are
    /// skipped (each is returned with its error, for the caller to report).
    pub fn replay<'a>(&mut self, events: impl IntoIterator<Item = &'a Event>) -> Vec<(&'a Event, ProtocolError)> {
        let mut skipped = Vec::new();
        for event in events {
            match admin_change(event) {
                Ok(change) => {
                    self.apply(&change);
                }
                Err(error) => skipped.push((event, error)),
            }
        }
        skipped
    }

    /// True if `key` is allowed at run time.
    pub fn contains(&self, key: &PublicKey) -> bool {
        self.allowed.contains_key(key)
    }

    /// The keys allowed, in the order they were allowed (by seq, then position).
    pub fn keys(&self) -> Vec<PublicKey> {
        let mut keys: Vec<(u64, PublicKey)> = self.allowed.iter().map(|(key, order)| (*order, *key)).collect();
        keys.sort();
        keys.into_iter().map(|(_, key)| key).collect()
    }
}
