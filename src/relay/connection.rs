//! One connection's life: CHALLENGE → AUTH → requests → close (spec §6–§9).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use rand::RngCore;
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::error::CapacityError;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{Error as WsError, Message};
use tokio_tungstenite::WebSocketStream;

use super::connections::ConnId;
use super::ingest::{admit_valid, check_unsigned, Admitted, Publisher, Rejection};
use super::outbound::{OutFrame, Outbound};
use super::pipeline::{Checked, Pipeline};
use super::reply::{error_frame, ok_frame, store_error};
use super::retry;
use super::rewind::Rewind;
use super::store::Accepted;
use super::subscriptions::Subscriptions;
use super::RelayState;
use crate::clock::unix_now;
use crate::protocol::admin::requeue_request;
use crate::protocol::auth::auth_digest;
use crate::protocol::close;
use crate::protocol::event::verify_strict;
use crate::protocol::frame::{Auth, JobRef};
use crate::protocol::kind::KIND_REQUEUE;
use crate::protocol::{ErrorCode, Frame, ProtocolError, PublicKey, RawEvent, Viewer};

type Socket = WebSocketStream<Rewind>;
type Reader = SplitStream<Socket>;

/// Undoes a connection's registrations when it ends, however it ends (also when the
/// task is aborted at the drain timeout).
struct ConnectionGuard {
    state: Arc<RelayState>,
    conn: ConnId,
    registered: bool,
    authenticated: bool,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        if self.authenticated {
            self.state.fanout.remove_connection(self.conn);
            self.state.jobs.remove_connection(&self.state.store, self.conn);
            self.state.metrics.authenticated.dec();
        }
        if self.registered {
            self.state.connections.unregister(self.conn);
        }
        self.state.metrics.connections.dec();
    }
}

/// Serves one WebSocket connection until it closes. The socket writer runs inside this
/// task, so aborting the task releases the socket.
pub async fn serve(socket: Socket, state: Arc<RelayState>, peer: SocketAddr) {
    let limits = state.config().limits.clone();
    let outbound = Arc::new(
        Outbound::bounded(limits.outbound_queue, limits.outbound_bytes, Some(state.outbound_bytes.clone()))
            .watching_socket(socket.get_ref().write_blocked()),
    );
    let (sink, reader) = socket.split();
    let talking = async {
        converse(reader, state.clone(), outbound.clone(), peer).await;
        outbound.close();
    };
    tokio::join!(write_loop(sink, outbound.clone()), talking);
}

/// Registers, authenticates, then runs the session.
async fn converse(mut reader: Reader, state: Arc<RelayState>, outbound: Arc<Outbound>, peer: SocketAddr) {
    let conn = state.next_conn_id();
    state.metrics.connections.inc();
    let mut guard = ConnectionGuard { state: state.clone(), conn, registered: false, authenticated: false };
    let max = state.config().limits.max_connections;
    let Some(kick) = state.connections.register(conn, peer.ip(), outbound.clone(), max) else {
        let error = ProtocolError::new(ErrorCode::Unavailable, "too many connections").retry_after(retry::OVERLOAD);
        outbound.push_always(error_frame(&error, None));
        outbound.push_always(OutFrame::Close(close::TRY_LATER, "too many connections".into()));
        return;
    };
    guard.registered = true;
    let Some(pubkey) = authenticate(&mut reader, &state, &outbound).await else { return };
    state.connections.authenticated(conn, pubkey);
    state.metrics.authenticated.inc();
    guard.authenticated = true;
    tracing::debug!(%peer, conn, key = %hex::encode(pubkey), "authenticated");
    let viewer = Viewer { pubkey, is_admin: state.access.is_admin(&pubkey) };
    let subscriptions = Subscriptions::new(conn, viewer, state.clone(), outbound.clone());
    let mut session = Session { conn, viewer, state, outbound, subscriptions };
    session.run(reader, kick).await;
}

/// Writes queued frames to the socket; stops after a close or when the queue closes.
async fn write_loop(mut sink: SplitSink<Socket, Message>, outbound: Arc<Outbound>) {
    while let Some(frame) = outbound.pop().await {
        let (message, last) = match frame {
            OutFrame::Binary(bytes) => (Message::Binary(bytes), false),
            OutFrame::Ping => (Message::Ping(Vec::new()), false),
            OutFrame::Close(code, reason) => {
                (Message::Close(Some(CloseFrame { code: CloseCode::from(code), reason: reason.into() })), true)
            }
        };
        let sent = if outbound.is_empty() || last { sink.send(message).await } else { sink.feed(message).await };
        if sent.is_err() || last {
            break;
        }
    }
    outbound.close();
    let _ = sink.close().await;
}

/// CHALLENGE, then exactly one well-formed AUTH within the timeout (spec §7).
/// Returns the authenticated key, or `None` after queueing the error and close.
async fn authenticate(reader: &mut Reader, state: &RelayState, outbound: &Outbound) -> Option<PublicKey> {
    let config = state.config();
    let mut nonce = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    outbound.push_always(OutFrame::Binary(Frame::Challenge { nonce }.encode()));
    let timeout = Duration::from_secs(config.limits.auth_timeout_secs);
    let mut shutdown = state.shutdown_signal();
    let outcome = tokio::select! {
        outcome = tokio::time::timeout(timeout, next_auth(reader)) => match outcome {
            Ok(outcome) => outcome,
            Err(_) => Err(AuthFailure::Close(close::POLICY, "auth timeout")),
        },
        _ = shutdown.wait_for(|stopping| *stopping) => Err(AuthFailure::Close(close::GOING_AWAY, "relay shutting down")),
    };
    let failure = match outcome {
        Ok(auth) => match check_auth(&auth, &nonce, &config.relay_url, state) {
            Ok(()) => {
                outbound.push_always(ok_frame(auth.pubkey, None));
                return Some(auth.pubkey);
            }
            Err(error) => AuthFailure::Error(error),
        },
        Err(failure) => failure,
    };
    match failure {
        AuthFailure::Error(error) => {
            outbound.push_always(error_frame(&error, None));
            outbound.push_always(OutFrame::Close(close::POLICY, error.code.prefix().into()));
        }
        AuthFailure::Close(code, reason) => outbound.push_always(OutFrame::Close(code, reason.into())),
        AuthFailure::Gone => {}
    }
    None
}

enum AuthFailure {
    /// Send this ERROR, then close [`close::POLICY`].
    Error(ProtocolError),
    /// Close with this code, no ERROR.
    Close(u16, &'static str),
    /// The peer went away.
    Gone,
}

fn auth_required(reason: &str) -> AuthFailure {
    AuthFailure::Error(ProtocolError::new(ErrorCode::AuthRequired, reason))
}

/// Reads until the first data message, which must be an AUTH frame.
async fn next_auth(reader: &mut Reader) -> Result<Auth, AuthFailure> {
    loop {
        let message = match reader.next().await {
            None | Some(Ok(Message::Close(_))) => return Err(AuthFailure::Gone),
            Some(Err(error)) => return Err(read_failure(&error)),
            Some(Ok(message)) => message,
        };
        match message {
            Message::Binary(bytes) => {
                return match Frame::decode(&Bytes::from(bytes)) {
                    Ok(Frame::Auth(auth)) => Ok(auth),
                    Ok(_) => Err(auth_required("authenticate first: the only acceptable frame is AUTH")),
                    Err(error) => Err(auth_required(&format!("malformed AUTH: {}", error.reason))),
                };
            }
            Message::Text(_) => {
                return Err(auth_required("text messages are not part of the protocol; authenticate first"))
            }
            _ => continue,
        }
    }
}

fn read_failure(error: &WsError) -> AuthFailure {
    match error {
        WsError::Capacity(CapacityError::MessageTooLong { .. }) => {
            AuthFailure::Close(close::TOO_BIG, "message too big")
        }
        _ => AuthFailure::Gone,
    }
}

/// The AUTH signature is over SHA-256(nonce || relay_url); then the key must be allowed.
fn check_auth(auth: &Auth, nonce: &[u8; 32], relay_url: &str, state: &RelayState) -> Result<(), ProtocolError> {
    verify_strict(&auth.pubkey, &auth_digest(nonce, relay_url), &auth.sig)
        .map_err(|_| ProtocolError::new(ErrorCode::AuthRequired, "bad AUTH signature"))?;
    if !state.access.is_allowed(&auth.pubkey) {
        return Err(ProtocolError::new(ErrorCode::Restricted, "this key is not on the allowlist"));
    }
    let per_key = state.config().limits.max_connections_per_key;
    if per_key > 0 && state.connections.count_for_key(&auth.pubkey) >= per_key {
        return Err(ProtocolError::new(ErrorCode::RateLimited, format!("at most {per_key} connections per key"))
            .retry_after(retry::OVERLOAD));
    }
    Ok(())
}

/// An authenticated connection's state.
struct Session {
    conn: ConnId,
    viewer: Viewer,
    state: Arc<RelayState>,
    outbound: Arc<Outbound>,
    subscriptions: Subscriptions,
}

/// Why the read loop ended.
enum Ending {
    /// The peer closed or the socket failed.
    Gone,
    /// Already handled (close queued).
    Closed,
    /// Shutdown: finish in-flight publishes, then close [`close::GOING_AWAY`].
    Shutdown,
}

impl Session {
    async fn run(&mut self, mut reader: Reader, kick: Arc<Notify>) {
        let config = self.state.config();
        let period = Duration::from_secs(config.limits.ping_interval_secs);
        let mut pings = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        let mut unanswered = 0u32;
        let mut pipeline = Pipeline::default();
        let mut shutdown = self.state.shutdown_signal();
        let ending = loop {
            if *shutdown.borrow() {
                break Ending::Shutdown;
            }
            if pipeline.has_gathered() {
                // Read on while messages are already here; then hand the gathered
                // publishes to the verifier as one job.
                if pipeline.gathering() {
                    if let Some(message) = reader.next().now_or_never() {
                        match self.on_message(message, &mut pipeline, &mut unanswered).await {
                            Some(ending) => break ending,
                            None => continue,
                        }
                    }
                }
                pipeline.hand_over(&self.state.verifier).await;
            }
            tokio::select! {
                message = reader.next(), if !pipeline.is_full() => {
                    if let Some(ending) = self.on_message(message, &mut pipeline, &mut unanswered).await {
                        break ending;
                    }
                }
                Some(checked) = pipeline.checking.next(), if !pipeline.checking.is_empty() => {
                    self.admit_checked(checked, &mut pipeline).await;
                }
                Some(reply) = pipeline.replies.next(), if !pipeline.replies.is_empty() => {
                    self.outbound.push(reply).await;
                }
                _ = pings.tick() => {
                    if unanswered >= 2 {
                        self.outbound.push_always(OutFrame::Close(close::POLICY, "keep-alive: two pings unanswered".into()));
                        break Ending::Closed;
                    }
                    unanswered += 1;
                    self.outbound.push_always(OutFrame::Ping);
                }
                _ = kick.notified() => break Ending::Closed,
                _ = shutdown.changed() => break Ending::Shutdown,
            }
        };
        pipeline.hand_over(&self.state.verifier).await;
        if let Ending::Shutdown = ending {
            self.finish(&mut pipeline, true).await;
            self.refuse_buffered(&mut reader).await;
            self.outbound.push_always(OutFrame::Close(close::GOING_AWAY, "relay shutting down".into()));
        } else {
            // Publishes already read still commit; only their replies are dropped.
            self.finish(&mut pipeline, false).await;
        }
    }

    /// One message from the socket; `Some` when the connection ends.
    async fn on_message(
        &mut self,
        message: Option<Result<Message, WsError>>,
        pipeline: &mut Pipeline,
        unanswered: &mut u32,
    ) -> Option<Ending> {
        match message {
            None | Some(Ok(Message::Close(_))) => return Some(Ending::Gone),
            Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                self.outbound.push_always(OutFrame::Close(close::TOO_BIG, "message too big".into()));
                return Some(Ending::Closed);
            }
            Some(Err(_)) => return Some(Ending::Gone),
            Some(Ok(Message::Binary(bytes))) => self.handle_frame(Bytes::from(bytes), pipeline).await,
            Some(Ok(Message::Text(_))) => {
                let error =
                    ProtocolError::invalid("text messages are not part of the protocol; send binary MessagePack");
                self.outbound.push(error_frame(&error, None)).await;
            }
            Some(Ok(Message::Pong(_))) => *unanswered = 0,
            Some(Ok(_)) => {}
        }
        None
    }

    /// Takes every publish in flight through both stages (they are stored as if the
    /// connection went on); queues the replies if `reply`.
    async fn finish(&mut self, pipeline: &mut Pipeline, reply: bool) {
        while let Some(checked) = pipeline.checking.next().await {
            self.admit_checked(checked, pipeline).await;
        }
        while let Some(frame) = pipeline.replies.next().await {
            if reply {
                self.outbound.push(frame).await;
            }
        }
    }

    /// At shutdown: every PUBLISH still arriving gets 503, so each publish sent before the
    /// close gets exactly one reply. Reads until the peer is quiet for [`QUIET`], at most
    /// half the drain timeout.
    async fn refuse_buffered(&self, reader: &mut Reader) {
        const QUIET: Duration = Duration::from_millis(100);
        let shutting_down =
            ProtocolError::new(ErrorCode::Unavailable, "the relay is shutting down; publish again later")
                .retry_after(retry::DRAIN);
        let budget = Duration::from_secs(self.state.config().limits.drain_timeout_secs) / 2;
        let deadline = tokio::time::Instant::now() + budget;
        while let Ok(Some(Ok(message))) = tokio::time::timeout(QUIET, reader.next()).await {
            if tokio::time::Instant::now() > deadline {
                break;
            }
            let Message::Binary(bytes) = message else { continue };
            if let Ok(Frame::Publish { event } | Frame::PublishAck { event, .. }) = Frame::decode(&Bytes::from(bytes)) {
                self.outbound.push(error_frame(&shutting_down, event.best_effort_id())).await;
            }
        }
    }

    async fn handle_frame(&mut self, bytes: Bytes, pipeline: &mut Pipeline) {
        let frame = match Frame::decode(&bytes) {
            Ok(frame) => frame,
            Err(error) => {
                self.outbound.push(error_frame(&error, None)).await;
                return;
            }
        };
        match frame {
            Frame::Publish { event } => self.check(event, None, pipeline),
            Frame::PublishAck { event, ack } => self.check(event, Some(ack), pipeline),
            Frame::Subscribe(subscribe) => self.subscriptions.subscribe(subscribe).await,
            Frame::QueueSubscribe(queue) => self.subscriptions.queue_subscribe(queue).await,
            Frame::Ack(job) => {
                let reply = self.state.jobs.ack(&self.state.store, self.conn, job).await;
                self.outbound.push(reply).await;
            }
            Frame::Nack(nack) => {
                let reply = self.state.jobs.nack(&self.state.store, self.conn, nack).await;
                self.outbound.push(reply).await;
            }
            Frame::Extend(extend) => {
                let reply = self.state.jobs.extend(self.conn, extend).await;
                self.outbound.push(reply).await;
            }
            Frame::Unsubscribe { sub_id } => self.subscriptions.unsubscribe(&sub_id),
            Frame::Auth(_) => {
                self.outbound.push(error_frame(&ProtocolError::invalid("already authenticated"), None)).await;
            }
            other => {
                let error = ProtocolError::invalid(format!(
                    "frame type {} is sent by the relay, not to it",
                    other.frame_type()
                ));
                self.outbound.push(error_frame(&error, None)).await;
            }
        }
    }

    /// PUBLISH (with or without `ack`): validation up to the signature here, then the
    /// signature in the verifier stage; the publish joins the pipeline either way.
    fn check(&self, raw: RawEvent, ack: Option<JobRef>, pipeline: &mut Pipeline) {
        let config = self.state.config();
        match check_unsigned(&raw, &config.limits) {
            Ok(event) => pipeline.verify(event, raw, ack),
            Err(rejection) => pipeline.refuse(rejection),
        }
    }

    /// REQUEUE (kind 9002, checked by `admit_valid`): stored together with the job's fresh
    /// start, or refused (409 not dead, 410 expired; 400 with `ack`).
    fn requeue(&self, accepted: Arc<Accepted>, ack: Option<JobRef>, pipeline: &mut Pipeline) {
        let id = Some(accepted.event.id);
        let requeue = match (ack, requeue_request(&accepted.event)) {
            (Some(_), _) => Err(ProtocolError::invalid("a REQUEUE event cannot complete a job")),
            (None, requeue) => requeue,
        };
        match requeue {
            Ok(requeue) => {
                let metrics = self.state.metrics.clone();
                pipeline.reply_later(self.state.jobs.publish_requeue(&self.state.store, metrics, accepted, requeue));
            }
            Err(error) => pipeline.reply_now(self.refusal(Rejection { error, id })),
        }
    }

    /// A publish out of the checking stage, in arrival order: §8's rules after
    /// validation, then the writer (spec §14: with the job's lease for PUBLISH with `ack`).
    async fn admit_checked(&mut self, checked: Checked, pipeline: &mut Pipeline) {
        let (event, raw, ack) = match checked {
            Checked::Refused(rejection) => return pipeline.reply_now(self.refusal(rejection)),
            Checked::Valid { event, raw, ack } => (event, raw, ack),
        };
        let config = self.state.config();
        let publisher =
            Publisher { key: self.viewer.pubkey, limiter: &self.state.publish_rate, keys: &self.state.author_keys };
        let accepted = match admit_valid(event, raw, &self.state.access, &config.limits, &publisher, unix_now()) {
            Err(rejection) => return pipeline.reply_now(self.refusal(rejection)),
            Ok(Admitted::Ephemeral(accepted)) if ack.is_some() => {
                let error = ProtocolError::invalid("an event that completes a job must be of a stored kind");
                return pipeline.reply_now(self.refusal(Rejection { error, id: Some(accepted.event.id) }));
            }
            Ok(Admitted::Ephemeral(accepted)) => {
                self.state.fanout.dispatch_ephemeral(&accepted.event, &accepted.raw);
                if let Some(cluster) = &self.state.cluster {
                    cluster.send_ephemeral(accepted.raw.clone()).await; // to the other nodes (spec §16)
                }
                self.state.metrics.events_accepted.inc();
                return pipeline.reply_now(ok_frame(accepted.event.id, None));
            }
            Ok(Admitted::Store(accepted)) => accepted,
        };
        let metrics = self.state.metrics.clone();
        if accepted.event.kind == KIND_REQUEUE {
            return self.requeue(accepted, ack, pipeline);
        }
        if let Some(ack) = ack {
            let completing = self.state.jobs.publish_completing(&self.state.store, metrics, self.conn, accepted, ack);
            return pipeline.reply_later(completing);
        }
        // Queued for the writer here, in the order the publishes arrived; only the wait
        // for the commit runs concurrently.
        let id = accepted.event.id;
        let pending = self.state.store.submit(accepted).await;
        pipeline.reply_later(Box::pin(async move {
            let answer = match pending {
                Ok(pending) => pending.await,
                Err(error) => Err(error),
            };
            match answer {
                Ok(seq) => {
                    metrics.events_accepted.inc();
                    ok_frame(id, Some(seq))
                }
                Err(error) => {
                    let error = store_error(&error);
                    metrics.rejected(error.code);
                    error_frame(&error, Some(id))
                }
            }
        }));
    }

    /// The ERROR for a refused publish, counted.
    fn refusal(&self, rejection: Rejection) -> OutFrame {
        self.state.metrics.rejected(rejection.error.code);
        error_frame(&rejection.error, rejection.id)
    }
}
