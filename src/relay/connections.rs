//! Open connections: counted for the connection cap, findable by key so a revoke can
//! close them at once (spec §7.6).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::outbound::{OutFrame, Outbound};
use crate::protocol::close;
use crate::protocol::frame::{ErrorMessage, Frame};
use crate::protocol::{ErrorCode, ProtocolError, PublicKey};

/// Identifies one connection.
pub type ConnId = u64;

struct Entry {
    ip: IpAddr,
    pubkey: Option<PublicKey>,
    outbound: Arc<Outbound>,
    kick: Arc<Notify>,
}

/// Every open WebSocket connection.
#[derive(Default)]
pub struct Connections {
    entries: Mutex<HashMap<ConnId, Entry>>,
}

impl Connections {
    fn lock(&self) -> MutexGuard<'_, HashMap<ConnId, Entry>> {
        crate::sync::lock(&self.entries)
    }

    /// Registers a connection unless `max` are already open; returns its kick signal.
    pub fn register(&self, conn: ConnId, ip: IpAddr, outbound: Arc<Outbound>, max: usize) -> Option<Arc<Notify>> {
        let mut entries = self.lock();
        if entries.len() >= max {
            return None;
        }
        let kick = Arc::new(Notify::new());
        entries.insert(conn, Entry { ip, pubkey: None, outbound, kick: kick.clone() });
        Some(kick)
    }

    /// Open connections from `ip`.
    pub fn count_for_ip(&self, ip: IpAddr) -> usize {
        self.lock().values().filter(|entry| entry.ip == ip).count()
    }

    /// Connections authenticated as `key`.
    pub fn count_for_key(&self, key: &PublicKey) -> usize {
        self.lock().values().filter(|entry| entry.pubkey.as_ref() == Some(key)).count()
    }

    /// Authenticated keys of every open connection, each once.
    pub fn keys(&self) -> Vec<PublicKey> {
        let mut keys: Vec<PublicKey> = self.lock().values().filter_map(|entry| entry.pubkey).collect();
        keys.sort_unstable();
        keys.dedup();
        keys
    }

    /// Records the key a connection authenticated as.
    pub fn authenticated(&self, conn: ConnId, pubkey: PublicKey) {
        if let Some(entry) = self.lock().get_mut(&conn) {
            entry.pubkey = Some(pubkey);
        }
    }

    /// Forgets a closed connection.
    pub fn unregister(&self, conn: ConnId) {
        self.lock().remove(&conn);
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// True if none are open.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes (403, then a policy close) every connection whose key `still_allowed` rejects.
    pub fn kick_disallowed(&self, still_allowed: impl Fn(&PublicKey) -> bool) {
        let disallowed: Vec<PublicKey> = self.keys().into_iter().filter(|key| !still_allowed(key)).collect();
        self.kick(&disallowed);
    }

    /// Sends ERROR 403 and a policy close ([`close::POLICY`]) to every connection authenticated as one of `keys`.
    pub fn kick(&self, keys: &[PublicKey]) {
        if keys.is_empty() {
            return;
        }
        for entry in self.lock().values() {
            if entry.pubkey.is_some_and(|key| keys.contains(&key)) {
                let error = ProtocolError::new(ErrorCode::Restricted, "this key was revoked");
                let error = ErrorMessage::from_error(&error, None);
                entry.outbound.push_always(OutFrame::Binary(Frame::Error(error).encode()));
                entry.outbound.push_always(OutFrame::Close(close::POLICY, "revoked".into()));
                entry.kick.notify_one();
            }
        }
    }
}
