//! An async Axon client: connect + AUTH, publish (awaiting OK), subscribe (a stream of
//! events with an EOSE marker), unsubscribe. Used by the CLI, the tests and the benchmark.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use ed25519_dalek::{Signer, SigningKey};
use futures_util::stream::SplitStream;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::protocol::auth::auth_digest;
use crate::protocol::frame::{
    encode_publish_ack_frame, Auth, ErrorMessage, EventMessage, Extend, JobRef, Lease, Nack, QueueSubscribe, Subscribe,
};
use crate::protocol::{Event, EventId, Filter, Frame, PublicKey, RawEvent};

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// What can go wrong talking to a relay.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ClientError {
    /// The WebSocket could not be opened.
    #[error("cannot connect to {url}: {reason}")]
    Connect {
        /// Where.
        url: String,
        /// Why.
        reason: String,
    },
    /// The relay answered with an ERROR (AUTH refused, publish rejected, ...).
    #[error("relay error {code}: {message}")]
    Rejected {
        /// The error code (spec §8).
        code: u16,
        /// The relay's message.
        message: String,
        /// The relay's retry hint (spec §15), if it gave one.
        retry_after_ms: Option<u64>,
    },
    /// The connection closed before an answer arrived.
    #[error("connection closed")]
    Closed,
    /// The relay sent something that is not valid Axon.
    #[error("protocol error: {0}")]
    Protocol(String),
}

impl ClientError {
    /// The relay's error code, if this is a rejection.
    pub fn code(&self) -> Option<u16> {
        match self {
            ClientError::Rejected { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// The relay's retry hint (spec §15), if this is a rejection that carried one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ClientError::Rejected { retry_after_ms, .. } => retry_after_ms.map(Duration::from_millis),
            _ => None,
        }
    }
}

impl From<ErrorMessage> for ClientError {
    fn from(error: ErrorMessage) -> Self {
        ClientError::Rejected { code: error.code, message: error.message, retry_after_ms: error.retry_after_ms }
    }
}

/// One item of a subscription's stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SubItem {
    /// A matching event.
    Event {
        /// Decoded.
        event: Box<Event>,
        /// As sent by the relay.
        raw: RawEvent,
        /// Its seq (0 for ephemeral).
        seq: u64,
    },
    /// End of stored events.
    Eose,
    /// The relay ended the subscription (e.g. 503 overflow with a resume `seq`).
    Ended(ErrorMessage),
}

/// One item of a queue subscription's stream (spec §14).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueueItem {
    /// A job offered under a lease: work on it, then [`Client::publish_ack`] a result, or
    /// [`Client::ack`] / [`Client::nack`] it.
    Job {
        /// Decoded job request.
        event: Box<Event>,
        /// Its seq.
        seq: u64,
        /// Until when, and which attempt.
        lease: Lease,
    },
    /// The relay ended the queue subscription.
    Ended(ErrorMessage),
}

/// A queue subscription's stream of offers.
pub struct JobStream {
    /// The id it was opened with.
    pub sub_id: String,
    items: mpsc::UnboundedReceiver<QueueItem>,
}

impl JobStream {
    /// The next offer; `None` once the connection is gone.
    pub async fn next(&mut self) -> Option<QueueItem> {
        self.items.recv().await
    }
}

type PublishReply = oneshot::Sender<Result<Option<u64>, ClientError>>;

#[derive(Default)]
struct Routes {
    publishes: HashMap<EventId, PublishReply>,
    subscriptions: HashMap<String, mpsc::UnboundedSender<SubItem>>,
    queues: HashMap<String, mpsc::UnboundedSender<QueueItem>>,
    /// The read loop has ended: nothing more will be answered.
    closed: bool,
}

/// A connected, authenticated client.
pub struct Client {
    pubkey: PublicKey,
    sender: mpsc::Sender<Message>,
    routes: Arc<Mutex<Routes>>,
    errors: tokio::sync::Mutex<mpsc::UnboundedReceiver<ErrorMessage>>,
}

/// A live subscription's stream of items.
pub struct Subscription {
    /// The id it was opened with.
    pub sub_id: String,
    items: mpsc::UnboundedReceiver<SubItem>,
}

impl Subscription {
    /// The next item; `None` once the connection is gone.
    pub async fn next(&mut self) -> Option<SubItem> {
        self.items.recv().await
    }

    /// Collects events until EOSE; fails if the subscription ends first.
    pub async fn stored(&mut self) -> Result<Vec<(Event, u64)>, ClientError> {
        let mut events = Vec::new();
        loop {
            match self.next().await {
                Some(SubItem::Event { event, seq, .. }) => events.push((*event, seq)),
                Some(SubItem::Eose) => return Ok(events),
                Some(SubItem::Ended(error)) => return Err(error.into()),
                None => return Err(ClientError::Closed),
            }
        }
    }
}

fn lock(routes: &Mutex<Routes>) -> MutexGuard<'_, Routes> {
    crate::sync::lock(routes)
}

/// The AUTH signature (spec §7): Ed25519 over SHA-256(nonce || relay_url).
pub fn auth_frame(key: &SigningKey, nonce: &[u8; 32], relay_url: &str) -> Frame {
    let digest = auth_digest(nonce, relay_url);
    Frame::Auth(Auth { pubkey: key.verifying_key().to_bytes(), sig: key.sign(&digest).to_bytes() })
}

async fn next_frame(reader: &mut SplitStream<Socket>) -> Result<Frame, ClientError> {
    loop {
        match reader.next().await {
            None | Some(Err(_)) | Some(Ok(Message::Close(_))) => return Err(ClientError::Closed),
            Some(Ok(Message::Binary(bytes))) => {
                return Frame::decode(&Bytes::from(bytes)).map_err(|error| ClientError::Protocol(error.to_string()));
            }
            Some(Ok(_)) => continue,
        }
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client").field("pubkey", &hex::encode(self.pubkey)).finish_non_exhaustive()
    }
}

impl Client {
    /// Connects to `url` and authenticates with `key`, signing `relay_url` (the string
    /// the relay is configured with; usually the same as `url`).
    pub async fn connect(url: &str, relay_url: &str, key: &SigningKey) -> Result<Client, ClientError> {
        // Nagle off: a publish is one small message, and waiting to coalesce it with the
        // next one only adds latency.
        let (socket, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .map_err(|error| ClientError::Connect { url: url.into(), reason: error.to_string() })?;
        let (mut sink, mut reader) = socket.split();
        let nonce = match next_frame(&mut reader).await? {
            Frame::Challenge { nonce } => nonce,
            // Refused before the handshake (connection cap: 503 with a retry hint).
            Frame::Error(error) => return Err(error.into()),
            other => {
                return Err(ClientError::Protocol(format!("expected CHALLENGE, got frame type {}", other.frame_type())))
            }
        };
        sink.send(Message::Binary(auth_frame(key, &nonce, relay_url).encode()))
            .await
            .map_err(|_| ClientError::Closed)?;
        match next_frame(&mut reader).await? {
            Frame::Ok(_) => {}
            Frame::Error(error) => return Err(error.into()),
            other => return Err(ClientError::Protocol(format!("expected OK, got frame type {}", other.frame_type()))),
        }
        let (sender, mut outgoing) = mpsc::channel::<Message>(1024);
        tokio::spawn(async move {
            while let Some(message) = outgoing.recv().await {
                let flush = outgoing.is_empty();
                let sent = if flush { sink.send(message).await } else { sink.feed(message).await };
                if sent.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let routes = Arc::new(Mutex::new(Routes::default()));
        let (error_sender, errors) = mpsc::unbounded_channel();
        tokio::spawn(read_loop(reader, routes.clone(), error_sender));
        Ok(Client { pubkey: key.verifying_key().to_bytes(), sender, routes, errors: tokio::sync::Mutex::new(errors) })
    }

    /// The authenticated key.
    pub fn pubkey(&self) -> PublicKey {
        self.pubkey
    }

    async fn send(&self, frame: &Frame) -> Result<(), ClientError> {
        self.sender.send(Message::Binary(frame.encode())).await.map_err(|_| ClientError::Closed)
    }

    /// Publishes and waits for the answer: `Ok(Some(seq))` for a stored event,
    /// `Ok(None)` for an ephemeral one.
    pub async fn publish(&self, event: &Event) -> Result<Option<u64>, ClientError> {
        self.publish_raw(event.id, RawEvent::encode(event)).await
    }

    /// Publishes already-encoded event bytes; `id` routes the answer.
    pub async fn publish_raw(&self, id: EventId, raw: RawEvent) -> Result<Option<u64>, ClientError> {
        let (reply, answer) = oneshot::channel();
        {
            let mut routes = lock(&self.routes);
            if routes.closed {
                return Err(ClientError::Closed);
            }
            routes.publishes.insert(id, reply);
        }
        self.send(&Frame::Publish { event: raw }).await?;
        answer.await.map_err(|_| ClientError::Closed)?
    }

    /// Opens (or replaces) subscription `sub_id`.
    pub async fn subscribe(
        &self,
        sub_id: &str,
        filters: Vec<Filter>,
        after_seq: Option<u64>,
    ) -> Result<Subscription, ClientError> {
        let (sender, items) = mpsc::unbounded_channel();
        {
            let mut routes = lock(&self.routes);
            if routes.closed {
                return Err(ClientError::Closed);
            }
            routes.subscriptions.insert(sub_id.to_owned(), sender);
        }
        self.send(&Frame::Subscribe(Subscribe { sub_id: sub_id.to_owned(), filters, after_seq })).await?;
        Ok(Subscription { sub_id: sub_id.to_owned(), items })
    }

    /// Joins job queue `group` (spec §14) as subscription `sub_id`: its stream yields
    /// [`QueueItem::Job`] offers. Every filter must limit `kinds` to 5000–5999.
    pub async fn subscribe_queue(
        &self,
        sub_id: &str,
        group: &str,
        filters: Vec<Filter>,
        lease_secs: u64,
        max_in_flight: u64,
    ) -> Result<JobStream, ClientError> {
        self.subscribe_queue_after(sub_id, group, filters, lease_secs, max_in_flight, None).await
    }

    /// [`Client::subscribe_queue`] with `after_seq`: a group this creates holds only the
    /// jobs with seq > `after_seq` (ignored for an existing group, spec §14).
    pub async fn subscribe_queue_after(
        &self,
        sub_id: &str,
        group: &str,
        filters: Vec<Filter>,
        lease_secs: u64,
        max_in_flight: u64,
        after_seq: Option<u64>,
    ) -> Result<JobStream, ClientError> {
        let (sender, items) = mpsc::unbounded_channel();
        {
            let mut routes = lock(&self.routes);
            if routes.closed {
                return Err(ClientError::Closed);
            }
            routes.queues.insert(sub_id.to_owned(), sender);
        }
        let subscribe = Subscribe { sub_id: sub_id.to_owned(), filters, after_seq };
        let queue = QueueSubscribe { subscribe, group: group.to_owned(), lease_secs, max_in_flight };
        self.send(&Frame::QueueSubscribe(queue)).await?;
        Ok(JobStream { sub_id: sub_id.to_owned(), items })
    }

    /// Sends `bytes` and waits for the OK or ERROR that names `id`.
    async fn request(&self, id: EventId, bytes: Vec<u8>) -> Result<Option<u64>, ClientError> {
        let (reply, answer) = oneshot::channel();
        {
            let mut routes = lock(&self.routes);
            if routes.closed {
                return Err(ClientError::Closed);
            }
            routes.publishes.insert(id, reply);
        }
        self.send_raw(bytes).await?;
        answer.await.map_err(|_| ClientError::Closed)?
    }

    /// ACK: job `job` held by queue subscription `sub_id` is done (412 if the lease was lost).
    pub async fn ack(&self, sub_id: &str, job: EventId) -> Result<(), ClientError> {
        let frame = Frame::Ack(JobRef { sub_id: sub_id.to_owned(), job });
        self.request(job, frame.encode()).await.map(|_| ())
    }

    /// NACK: gives the job back, to be offered again after `delay_secs`.
    pub async fn nack(&self, sub_id: &str, job: EventId, delay_secs: Option<u64>) -> Result<(), ClientError> {
        let frame = Frame::Nack(Nack { job: JobRef { sub_id: sub_id.to_owned(), job }, delay_secs });
        self.request(job, frame.encode()).await.map(|_| ())
    }

    /// EXTEND: renews the lease from now; returns its new end (unix ms).
    pub async fn extend(&self, sub_id: &str, job: EventId, lease_secs: Option<u64>) -> Result<u64, ClientError> {
        let frame = Frame::Extend(Extend { job: JobRef { sub_id: sub_id.to_owned(), job }, lease_secs });
        let until = self.request(job, frame.encode()).await?;
        until.ok_or_else(|| ClientError::Protocol("EXTEND answered without until_ms".into()))
    }

    /// Publishes a result that completes job `job` in the same transaction (PUBLISH with
    /// `ack`); `Ok(Some(seq))` once both are committed. 409 on a retry means success.
    pub async fn publish_ack(&self, event: &Event, sub_id: &str, job: EventId) -> Result<Option<u64>, ClientError> {
        let ack = JobRef { sub_id: sub_id.to_owned(), job };
        self.request(event.id, encode_publish_ack_frame(&event.encode(), &ack)).await
    }

    /// Closes subscription `sub_id`.
    pub async fn unsubscribe(&self, sub_id: &str) -> Result<(), ClientError> {
        {
            let mut routes = lock(&self.routes);
            routes.subscriptions.remove(sub_id);
            routes.queues.remove(sub_id);
        }
        self.send(&Frame::Unsubscribe { sub_id: sub_id.to_owned() }).await
    }

    /// Sends a raw binary message (for tools and tests that speak the protocol directly).
    pub async fn send_raw(&self, bytes: Vec<u8>) -> Result<(), ClientError> {
        self.sender.send(Message::Binary(bytes)).await.map_err(|_| ClientError::Closed)
    }

    /// The next ERROR that named no event and no subscription; `None` once closed.
    pub async fn next_error(&self) -> Option<ErrorMessage> {
        self.errors.lock().await.recv().await
    }
}

async fn read_loop(
    mut reader: SplitStream<Socket>,
    routes: Arc<Mutex<Routes>>,
    errors: mpsc::UnboundedSender<ErrorMessage>,
) {
    while let Ok(frame) = next_frame(&mut reader).await {
        match frame {
            Frame::Event(EventMessage { sub_id, event, seq }) => {
                let item = match event.decode() {
                    Ok(decoded) => SubItem::Event { event: Box::new(decoded), raw: event, seq },
                    Err(error) => SubItem::Ended(ErrorMessage {
                        code: 0,
                        message: format!("relay sent an undecodable event: {error}"),
                        id: None,
                        sub_id: Some(sub_id.clone()),
                        seq: None,
                        retry_after_ms: None,
                    }),
                };
                if let Some(sender) = lock(&routes).subscriptions.get(&sub_id) {
                    let _ = sender.send(item);
                }
            }
            Frame::Offer(offer) => {
                let EventMessage { sub_id, event, seq } = offer.message;
                if let Ok(decoded) = event.decode() {
                    let item = QueueItem::Job { event: Box::new(decoded), seq, lease: offer.lease };
                    if let Some(sender) = lock(&routes).queues.get(&sub_id) {
                        let _ = sender.send(item);
                    }
                }
            }
            Frame::OkLease(ok) => {
                if let Some(reply) = lock(&routes).publishes.remove(&ok.id) {
                    let _ = reply.send(Ok(Some(ok.until_ms)));
                }
            }
            Frame::Eose { sub_id } => {
                if let Some(sender) = lock(&routes).subscriptions.get(&sub_id) {
                    let _ = sender.send(SubItem::Eose);
                }
            }
            Frame::Ok(ok) => {
                if let Some(reply) = lock(&routes).publishes.remove(&ok.id) {
                    let _ = reply.send(Ok(ok.seq));
                }
            }
            Frame::Error(error) => route_error(&routes, &errors, error),
            _ => {}
        }
    }
    // Dropping the routes fails every waiter with Closed.
    let mut routes = lock(&routes);
    routes.closed = true;
    routes.publishes.clear();
    routes.subscriptions.clear();
    routes.queues.clear();
}

fn route_error(routes: &Mutex<Routes>, errors: &mpsc::UnboundedSender<ErrorMessage>, error: ErrorMessage) {
    let mut routes = lock(routes);
    if let Some(reply) = error.id.and_then(|id| routes.publishes.remove(&id)) {
        let _ = reply.send(Err(error.into()));
        return;
    }
    // A lease-lost or expired answer nobody waits for does not end the queue subscription.
    if error.code == 412 || error.code == 410 {
        let _ = errors.send(error);
        return;
    }
    if let Some(sender) = error.sub_id.as_ref().and_then(|sub_id| routes.subscriptions.remove(sub_id)) {
        let _ = sender.send(SubItem::Ended(error));
        return;
    }
    if let Some(sender) = error.sub_id.as_ref().and_then(|sub_id| routes.queues.remove(sub_id)) {
        let _ = sender.send(QueueItem::Ended(error));
        return;
    }
    let _ = errors.send(error);
}

/// How long to wait before retrying (spec §15): the relay's hint when it gave one (the
/// earliest moment a retry can succeed), else `backoff` with up to ±25 % jitter so that
/// many clients refused together do not come back together.
pub fn retry_delay(hint: Option<Duration>, backoff: Duration) -> Duration {
    if let Some(hint) = hint {
        return hint;
    }
    let spread = rand::random::<f64>() * 0.5 + 0.75;
    backoff.mul_f64(spread)
}
