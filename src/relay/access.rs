//! Who may connect and publish: admins and the allowlist from relay.yaml, plus keys
//! admins allow or revoke at run time (spec §10).

use std::collections::HashSet;
use std::sync::RwLock;

use crate::protocol::kind::{KIND_ALLOW, KIND_REVOKE};
use crate::protocol::tags::{parse_p_value, P};
use crate::protocol::{ErrorCode, Event, ProtocolError, PublicKey};

#[derive(Default)]
struct Lists {
    admins: HashSet<PublicKey>,
    static_allowed: HashSet<PublicKey>,
    dynamic_allowed: HashSet<PublicKey>,
}

/// The effective access lists, shared by every connection.
#[derive(Default)]
pub struct Access {
    lists: RwLock<Lists>,
}

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

impl Access {
    /// Access with the given relay.yaml lists and nothing allowed at run time.
    pub fn new(admins: Vec<PublicKey>, allowlist: Vec<PublicKey>) -> Access {
        let access = Access::default();
        access.set_static(admins, allowlist);
        access
    }

    /// Replaces the relay.yaml lists (startup and SIGHUP); run-time changes stay.
    pub fn set_static(&self, admins: Vec<PublicKey>, allowlist: Vec<PublicKey>) {
        if let Ok(mut lists) = self.lists.write() {
            lists.admins = admins.into_iter().collect();
            lists.static_allowed = allowlist.into_iter().collect();
        }
    }

    /// True if `key` is an admin.
    pub fn is_admin(&self, key: &PublicKey) -> bool {
        self.lists.read().map(|lists| lists.admins.contains(key)).unwrap_or(false)
    }

    /// True if `key` may connect and author events.
    pub fn is_allowed(&self, key: &PublicKey) -> bool {
        self.lists
            .read()
            .map(|lists| {
                lists.admins.contains(key) || lists.static_allowed.contains(key) || lists.dynamic_allowed.contains(key)
            })
            .unwrap_or(false)
    }

    /// Checks an admin event's content rules: `p` values must be 64 lowercase hex (400);
    /// a REVOKE naming an admin or a relay.yaml key is 409 and changes nothing.
    pub fn check_admin_event(&self, event: &Event) -> Result<AdminChange, ProtocolError> {
        if event.kind != KIND_ALLOW && event.kind != KIND_REVOKE {
            return Ok(AdminChange::None);
        }
        let mut keys = Vec::new();
        for tag in event.tags.iter().filter(|tag| tag.name == P) {
            let value = tag.first_value().unwrap_or_default();
            keys.push(parse_p_value(value).ok_or_else(|| {
                ProtocolError::invalid(format!("p value {value:?} is not 64 lowercase hex characters"))
            })?);
        }
        if keys.is_empty() {
            return Err(ProtocolError::invalid("an admin event needs at least one p tag"));
        }
        // An expiring ALLOW/REVOKE would be deleted from the log and so undone at the next
        // restart while still applied until then: refuse it instead.
        if event.tags.iter().any(|tag| tag.name == crate::protocol::tags::EXPIRES_AT) {
            return Err(ProtocolError::invalid("ALLOW and REVOKE events cannot carry expires_at"));
        }
        if event.kind == KIND_ALLOW {
            return Ok(AdminChange::Allow(keys));
        }
        let lists =
            self.lists.read().map_err(|_| ProtocolError::new(ErrorCode::Internal, "access lists unavailable"))?;
        if let Some(fixed) = keys.iter().find(|key| lists.admins.contains(*key) || lists.static_allowed.contains(*key))
        {
            return Err(ProtocolError::new(
                ErrorCode::Duplicate,
                format!("{} is an admin or listed in relay.yaml and cannot be revoked", hex::encode(fixed)),
            ));
        }
        Ok(AdminChange::Revoke(keys))
    }

    /// Applies a change; returns the keys that stopped being allowed.
    pub fn apply(&self, change: &AdminChange) -> Vec<PublicKey> {
        let Ok(mut lists) = self.lists.write() else {
            return Vec::new();
        };
        match change {
            AdminChange::Allow(keys) => {
                lists.dynamic_allowed.extend(keys.iter().copied());
                Vec::new()
            }
            AdminChange::Revoke(keys) => {
                let lists = &mut *lists;
                keys.iter()
                    .filter(|key| lists.dynamic_allowed.remove(*key))
                    .filter(|key| !lists.admins.contains(*key) && !lists.static_allowed.contains(*key))
                    .copied()
                    .collect()
            }
            AdminChange::None => Vec::new(),
        }
    }

    /// Every key allowed right now (admins, relay.yaml and run-time), sorted.
    pub fn effective(&self) -> Vec<PublicKey> {
        let Ok(lists) = self.lists.read() else {
            return Vec::new();
        };
        let mut keys: Vec<PublicKey> =
            lists.admins.iter().chain(&lists.static_allowed).chain(&lists.dynamic_allowed).copied().collect();
        keys.sort();
        keys.dedup();
        keys
    }
}
