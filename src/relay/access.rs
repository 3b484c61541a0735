//! Who may connect and publish: admins and the allowlist from relay.yaml, plus keys
//! admins allow or revoke at run time (spec §10).

use std::collections::HashSet;
use std::sync::RwLock;

pub use crate::protocol::admin::AdminChange;
use crate::protocol::admin::{admin_change, AllowLog};
use crate::protocol::{ErrorCode, Event, ProtocolError, PublicKey};
use crate::sync::{read, write};

#[derive(Default)]
struct Lists {
    admins: HashSet<PublicKey>,
    static_allowed: HashSet<PublicKey>,
    dynamic_allowed: AllowLog,
}

/// The effective access lists, shared by every connection.
#[derive(Default)]
pub struct Access {
    lists: RwLock<Lists>,
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
        let mut lists = write(&self.lists);
        lists.admins = admins.into_iter().collect();
        lists.static_allowed = allowlist.into_iter().collect();
    }

    /// True if `key` is an admin.
    pub fn is_admin(&self, key: &PublicKey) -> bool {
        read(&self.lists).admins.contains(key)
    }

    /// True if `key` may connect and author events.
    pub fn is_allowed(&self, key: &PublicKey) -> bool {
        let lists = read(&self.lists);
        lists.admins.contains(key) || lists.static_allowed.contains(key) || lists.dynamic_allowed.contains(key)
    }

    /// Checks an admin event's content rules ([`admin_change`]: 400); a REVOKE naming an
    /// admin or a relay.yaml key is 409 and changes nothing.
    pub fn check_admin_event(&self, event: &Event) -> Result<AdminChange, ProtocolError> {
        let change = admin_change(event)?;
        let AdminChange::Revoke(keys) = &change else {
            return Ok(change);
        };
        let lists = read(&self.lists);
        if let Some(fixed) = keys.iter().find(|key| lists.admins.contains(*key) || lists.static_allowed.contains(*key))
        {
            return Err(ProtocolError::new(
                ErrorCode::Duplicate,
                format!("{} is an admin or listed in relay.yaml and cannot be revoked", hex::encode(fixed)),
            ));
        }
        Ok(change)
    }

    /// Applies a change; returns the keys that stopped being allowed.
    pub fn apply(&self, change: &AdminChange) -> Vec<PublicKey> {
        let mut lists = write(&self.lists);
        let removed = lists.dynamic_allowed.apply(change);
        removed.into_iter().filter(|key| !lists.admins.contains(key) && !lists.static_allowed.contains(key)).collect()
    }

    /// Every key allowed right now (admins, relay.yaml and run-time), sorted.
    pub fn effective(&self) -> Vec<PublicKey> {
        let lists = read(&self.lists);
        let dynamic = lists.dynamic_allowed.keys();
        let mut keys: Vec<PublicKey> =
            lists.admins.iter().chain(&lists.static_allowed).chain(&dynamic).copied().collect();
        keys.sort();
        keys.dedup();
        keys
    }
}
