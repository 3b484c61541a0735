//! Relay administration (spec §10): what an ALLOW, REVOKE or REQUEUE event asks for, and
//! the run-time allowlist a log of them produces when replayed in seq order. The relay (at
//! startup and on every admin event) and `axon allowlist` both replay through
//! [`AllowLog`].

use std::collections::HashMap;

use super::error::ProtocolError;
use super::event::{Event, EventId, PublicKey};
use super::frame::MAX_GROUP_BYTES;
use super::kind::{KIND_ALLOW, KIND_REQUEUE, KIND_REVOKE};
use super::tags::{parse_p_value, E, EXPIRES_AT, GROUP, P};

/// An admin change, checked and ready to apply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AdminChange {
    /// Kind 9000: allow these keys.
    Allow(Vec<PublicKey>),
    /// Kind 9001: revoke these keys.
    Revoke(Vec<PublicKey>),
    /// Kind 9002: re-queue a dead job in a group (spec §14's operator tools; no effect on
    /// access).
    Requeue(Requeue),
    /// Another admin kind (9003–9099): stored, no effect.
    None,
}

/// What a REQUEUE event (kind 9002) names: one `group` tag and one `e` tag (the job).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Requeue {
    /// The group, 1..=64 bytes.
    pub group: String,
    /// The dead job's id.
    pub job: EventId,
}

/// The only value of the one tag named `name`, else 400.
fn single_tag_value<'a>(event: &'a Event, name: &str) -> Result<&'a str, ProtocolError> {
    let mut values = event.tags.iter().filter(|tag| tag.name == name);
    let (Some(tag), None) = (values.next(), values.next()) else {
        return Err(ProtocolError::invalid(format!("a REQUEUE event needs exactly one {name} tag")));
    };
    match tag.values.as_slice() {
        [value] => Ok(value),
        _ => Err(ProtocolError::invalid(format!("the {name} tag of a REQUEUE event takes exactly one value"))),
    }
}

/// Reads a REQUEUE event: exactly one `group` tag (1..=64 bytes) and one `e` tag (64
/// lowercase hex), each with one value (400 otherwise).
pub fn requeue_request(event: &Event) -> Result<Requeue, ProtocolError> {
    let group = single_tag_value(event, GROUP)?;
    if group.is_empty() || group.len() > MAX_GROUP_BYTES {
        return Err(ProtocolError::invalid(format!("group must be 1..={MAX_GROUP_BYTES} bytes")));
    }
    let job = single_tag_value(event, E)?;
    let job = parse_p_value(job)
        .ok_or_else(|| ProtocolError::invalid(format!("e value {job:?} is not 64 lowercase hex characters")))?;
    Ok(Requeue { group: group.to_owned(), job })
}

/// Reads what an admin event asks for. ALLOW/REVOKE: every `p` value must be 64 lowercase
/// hex, at least one `p` tag, no `expires_at`; REQUEUE: see [`requeue_request`] (400
/// otherwise). Other kinds ask for nothing.
pub fn admin_change(event: &Event) -> Result<AdminChange, ProtocolError> {
    if event.kind == KIND_REQUEUE {
        return requeue_request(event).map(AdminChange::Requeue);
    }
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
            AdminChange::Requeue(_) | AdminChange::None => Vec::new(),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Tag;
    use ed25519_dalek::SigningKey;

    fn requeue_event(tags: Vec<Tag>) -> Event {
        Event::sign(&SigningKey::from_bytes(&[3; 32]), 1, KIND_REQUEUE, Vec::new(), tags).expect("sign")
    }

    #[test]
    fn a_requeue_names_one_group_and_one_job() {
        let job = hex::encode([0xab; 32]);
        let event = requeue_event(vec![Tag::new(GROUP, ["workers"]), Tag::new(E, [job.as_str()])]);
        assert_eq!(
            admin_change(&event),
            Ok(AdminChange::Requeue(Requeue { group: "workers".into(), job: [0xab; 32] }))
        );
    }

    #[test]
    fn a_malformed_requeue_is_400() {
        let job = hex::encode([0xab; 32]);
        let long = "g".repeat(65);
        let cases = vec![
            vec![Tag::new(E, [job.as_str()])],
            vec![Tag::new(GROUP, ["g"])],
            vec![Tag::new(GROUP, [""]), Tag::new(E, [job.as_str()])],
            vec![Tag::new(GROUP, [long.as_str()]), Tag::new(E, [job.as_str()])],
            vec![Tag::new(GROUP, ["g"]), Tag::new(E, [job.to_uppercase().as_str()])],
            vec![Tag::new(GROUP, ["g"]), Tag::new(E, [&job[..62]])],
            vec![Tag::new(GROUP, ["g"]), Tag::new(E, [job.as_str(), "x"])],
            vec![Tag::new(GROUP, ["g"]), Tag::new(GROUP, ["h"]), Tag::new(E, [job.as_str()])],
            vec![Tag::new(GROUP, ["g"]), Tag::new(E, [job.as_str()]), Tag::new(E, [hex::encode([1; 32]).as_str()])],
        ];
        for tags in cases {
            let error = admin_change(&requeue_event(tags.clone())).expect_err("refused");
            assert_eq!(error.code, crate::protocol::ErrorCode::Invalid, "{tags:?}");
        }
    }
}
