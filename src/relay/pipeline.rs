//! A connection's publishes in flight, kept in the order they arrived: every PUBLISH gets
//! exactly one reply (spec §8), and the replies on a connection follow the order of its
//! publishes, whichever were refused at once and whichever waited for a commit.
//!
//! Two ordered stages:
//! 1. **checking**: waiting for the verifier's verdict ([`super::verifier`]), or already
//!    refused before it (decode, fields, id). The connection takes events out of this
//!    stage in order, runs the rules after validation and queues the valid ones for the
//!    writer in that order, so their seqs follow the order of the publishes.
//! 2. **replies**: waiting for the commit, or already answered. The connection sends them
//!    in order.

use futures_util::future::{ready, BoxFuture, FutureExt};
use futures_util::stream::FuturesOrdered;

use super::ingest::{check_signature, Rejection};
use super::outbound::OutFrame;
use super::verifier::PendingVerdict;
use crate::protocol::frame::JobRef;
use crate::protocol::{ErrorCode, Event, EventId, ProtocolError, RawEvent};

/// Publishes a connection may have in flight before it stops reading its socket
/// (backpressure on a client that sends faster than the relay answers).
pub const MAX_IN_FLIGHT: usize = 1024;

/// A publish out of the checking stage.
pub enum Checked {
    /// Refused by validation (spec §3), or the verifier stopped; the reply is ready.
    Refused(Rejection),
    /// Valid under spec §3, signature included: the rules after validation come next.
    Valid {
        /// The decoded event.
        event: Event,
        /// Its bytes as received.
        raw: RawEvent,
        /// The job it completes (PUBLISH with `ack`, spec §14).
        ack: Option<JobRef>,
    },
}

/// The two ordered stages of one connection's publishes.
#[derive(Default)]
pub struct Pipeline {
    /// Stage 1: waiting for a signature verdict (or refused before one).
    pub checking: FuturesOrdered<BoxFuture<'static, Checked>>,
    /// Stage 2: waiting for a commit (or answered).
    pub replies: FuturesOrdered<BoxFuture<'static, OutFrame>>,
}

impl Pipeline {
    /// True when no more publishes should be read until some are answered.
    pub fn is_full(&self) -> bool {
        self.checking.len() + self.replies.len() >= MAX_IN_FLIGHT
    }

    /// A publish refused before its signature was checked (in order with the others).
    pub fn refuse(&mut self, rejection: Rejection) {
        self.checking.push_back(ready(Checked::Refused(rejection)).boxed());
    }

    /// A publish whose signature the verifier is checking.
    pub fn verify(&mut self, verdict: PendingVerdict, id: EventId, raw: RawEvent, ack: Option<JobRef>) {
        self.checking.push_back(
            async move {
                let checked = match verdict.wait().await {
                    Ok((event, verdict)) => check_signature(event, verdict),
                    Err(_) => Err(Rejection { error: stopping(), id: Some(id) }),
                };
                match checked {
                    Ok(event) => Checked::Valid { event, raw, ack },
                    Err(rejection) => Checked::Refused(rejection),
                }
            }
            .boxed(),
        );
    }

    /// A reply that is ready, sent after the replies before it.
    pub fn reply_now(&mut self, frame: OutFrame) {
        self.replies.push_back(ready(frame).boxed());
    }

    /// A reply still to come (a commit), sent after the replies before it.
    pub fn reply_later(&mut self, reply: BoxFuture<'static, OutFrame>) {
        self.replies.push_back(reply);
    }
}

/// The refusal when the verifier has stopped: the relay is shutting down.
pub fn stopping() -> ProtocolError {
    ProtocolError::new(ErrorCode::Unavailable, "the relay is shutting down; publish again later")
        .retry_after(super::retry::DRAIN)
}
