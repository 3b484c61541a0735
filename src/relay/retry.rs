//! Retry hints (spec §15): how long a client is told to wait before trying again when the
//! relay answers 503. (429 hints come from the token bucket: [`super::rate`].)

use std::time::Duration;

/// Overload: the relay is at its connection cap, or the database stayed busy past its
/// timeout. Short: connections and locks come free within moments.
pub const OVERLOAD: Duration = Duration::from_millis(1000);

/// Shutdown (drain): the relay is going away. A client reconnects to a restarted relay or
/// another one; its reconnect backs off on its own if nothing listens yet.
pub const DRAIN: Duration = Duration::from_millis(1000);

/// Full disk: an operator must free space, which takes a while; retrying every second
/// would only flood the log.
pub const DISK_FULL: Duration = Duration::from_millis(5000);

/// A cluster's log (spec §16) is unreachable or this node has not yet applied the seq a
/// resume asked for: NATS reconnects and the applier catches up within moments.
pub const CLUSTER_LOG: Duration = Duration::from_millis(1000);
