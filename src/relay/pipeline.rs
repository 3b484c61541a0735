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
//!
//! Publishes for the verifier are first *gathered* ([`Pipeline::verify`]): the connection
//! reads on while more messages are already there, then hands them over as one job
//! ([`Pipeline::hand_over`]), at most [`GATHER`] at a time. A lone publish is handed
//! over at once.

use std::sync::{Arc, Mutex};

use futures_util::future::{ready, BoxFuture, FutureExt, Shared};
use futures_util::stream::FuturesOrdered;
use tokio::sync::oneshot;

use super::ingest::{check_signature, Rejection};
use super::outbound::OutFrame;
use super::verifier::{Verified, Verifier};
use crate::protocol::frame::JobRef;
use crate::protocol::{ErrorCode, Event, ProtocolError, RawEvent};

/// The most publishes handed to the verifier as one job. A job goes to one verifier
/// thread, and bad signatures are checked one by one: jobs of a few events let the threads
/// share one connection's burst (a thread combines jobs into batches of up to
/// [`crate::protocol::signature::MAX_BATCH`] good signatures).
pub const GATHER: usize = 16;

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

/// A gathered job's verdicts, once answered: each publish takes its own.
type Slots = Arc<Mutex<Vec<Option<Verified>>>>;

/// Publishes gathered for the verifier, not handed over yet.
struct Gathering {
    events: Vec<Event>,
    reply: oneshot::Sender<Vec<Verified>>,
    /// The job's verdicts (`None` if the verifier stopped), awaited by each publish.
    verdicts: Shared<BoxFuture<'static, Option<Slots>>>,
}

impl Gathering {
    fn new() -> Gathering {
        let (reply, answer) = oneshot::channel::<Vec<Verified>>();
        let verdicts = answer
            .map(|answer| answer.ok().map(|verdicts| Arc::new(Mutex::new(verdicts.into_iter().map(Some).collect()))))
            .boxed()
            .shared();
        Gathering { events: Vec::new(), reply, verdicts }
    }
}

/// The two ordered stages of one connection's publishes.
#[derive(Default)]
pub struct Pipeline {
    /// Stage 1: waiting for a signature verdict (or refused before one).
    pub checking: FuturesOrdered<BoxFuture<'static, Checked>>,
    /// Stage 2: waiting for a commit (or answered).
    pub replies: FuturesOrdered<BoxFuture<'static, OutFrame>>,
    /// Publishes gathered for the verifier (already in `checking`).
    gathering: Option<Gathering>,
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

    /// A publish whose signature the verifier will check, gathered with the others read in
    /// one go until [`Pipeline::hand_over`].
    pub fn verify(&mut self, event: Event, raw: RawEvent, ack: Option<JobRef>) {
        let id = event.id;
        let gathering = self.gathering.get_or_insert_with(Gathering::new);
        let index = gathering.events.len();
        gathering.events.push(event);
        let verdicts = gathering.verdicts.clone();
        self.checking.push_back(
            async move {
                let verdict = verdicts.await.and_then(|slots| crate::sync::lock(&slots).get_mut(index)?.take());
                let checked = match verdict {
                    Some((event, verdict)) => check_signature(event, verdict),
                    None => Err(Rejection { error: stopping(), id: Some(id) }),
                };
                match checked {
                    Ok(event) => Checked::Valid { event, raw, ack },
                    Err(rejection) => Checked::Refused(rejection),
                }
            }
            .boxed(),
        );
    }

    /// True when publishes are gathered and more may join them before the hand-over.
    pub fn gathering(&self) -> bool {
        self.gathering.as_ref().is_some_and(|gathering| gathering.events.len() < GATHER) && !self.is_full()
    }

    /// True when publishes are gathered, not yet handed over.
    pub fn has_gathered(&self) -> bool {
        self.gathering.is_some()
    }

    /// Hands the gathered publishes to the verifier as one job (waiting for room). If it has
    /// stopped, they are refused with 503 ([`stopping`]).
    pub async fn hand_over(&mut self, verifier: &Verifier) {
        if let Some(Gathering { events, reply, .. }) = self.gathering.take() {
            // On failure the reply is dropped, and each publish sees the verifier stopped.
            let _ = verifier.submit_all(events, reply).await;
        }
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
