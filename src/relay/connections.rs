//! Open connections: counted for the connection cap, findable by key so a revoke can
//! close them at once (spec §7.6).

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::Notify;

use super::fanout::ConnId;
use super::outbound::{OutFrame, Outbound};
use crate::protocol::frame::{ErrorMessage, Frame};
use crate::protocol::PublicKey;

struct Entry {
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
        match self.entries.lock() {
            Ok(guard) => guard,
            Err(poisoned) => poisoned.into_inner(),
        }
    }

    /// Registers a connection unless `max` are already open; returns its kick signal.
    pub fn register(&self, conn: ConnId, outbound: Arc<Outbound>, max: usize) -> Option<Arc<Notify>> {
        let mut entries = self.lock();
        if entries.len() >= max {
            return None;
        }
        let kick = Arc::new(Notify::new());
        entries.insert(
            conn,
            Entry {
                pubkey: None,
                outbound,
                kick: kick.clone(),
            },
        );
        Some(kick)
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

    /// Sends ERROR 403 and close 1008 to every connection authenticated as one of `keys`.
    pub fn kick(&self, keys: &[PublicKey]) {
        if keys.is_empty() {
            return;
        }
        for entry in self.lock().values() {
            if entry.pubkey.is_some_and(|key| keys.contains(&key)) {
                let error = ErrorMessage {
                    code: 403,
                    message: "restricted: this key was revoked".into(),
                    id: None,
                    sub_id: None,
                    seq: None,
                };
                entry
                    .outbound
                    .push_always(OutFrame::Binary(Frame::Error(error).encode()));
                entry.outbound.push_always(OutFrame::Close(1008, "revoked".into()));
                entry.kick.notify_one();
            }
        }
    }
}
