//! The cluster's log on NATS JetStream: one connection (reconnecting by itself), the
//! stream, publishing an event with its id as message id, and reading from a seq on.

use std::time::Duration;

use async_nats::jetstream::{self, consumer, stream};
use bytes::Bytes;

use super::config::{ClusterConfig, DUPLICATE_WINDOW};
use super::ClusterError;

/// How long a JetStream request (stream info, a publish's ack) may take before the
/// publish is answered 503 (spec §15) instead.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// How long connecting at startup may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The JetStream stream the nodes share.
pub struct Log {
    client: async_nats::Client,
    jetstream: jetstream::Context,
    stream: String,
    subject: String,
}

/// What a publish came to: the event's seq in the log, and whether the log already held
/// it (published before within [`DUPLICATE_WINDOW`], by this node or another).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Appended {
    /// The log seq (the first copy's when `duplicate`).
    pub seq: u64,
    /// The log already held this event id.
    pub duplicate: bool,
}

/// A publish on its way: await [`Pending::confirmed`] for the log's ack.
pub struct Pending(jetstream::context::PublishAckFuture);

impl Pending {
    /// The log's answer (bounded by [`REQUEST_TIMEOUT`]).
    pub async fn confirmed(self) -> Result<Appended, ClusterError> {
        let ack = self.0.await.map_err(|error| ClusterError::Publish(error.to_string()))?;
        Ok(Appended { seq: ack.sequence, duplicate: ack.duplicate })
    }
}

impl Log {
    /// Connects (failing if no server answers within [`CONNECT_TIMEOUT`]) and creates the
    /// stream if it does not exist yet. Later disconnects are retried forever.
    pub async fn connect(config: &ClusterConfig) -> Result<Log, ClusterError> {
        let servers = config.servers().map_err(|error| ClusterError::Connect(error.to_string()))?;
        let options = async_nats::ConnectOptions::new()
            .name("axon-relay")
            .connection_timeout(CONNECT_TIMEOUT)
            .max_reconnects(None)
            .event_callback(|event| async move { tracing::info!(%event, "NATS connection") });
        let client = tokio::time::timeout(CONNECT_TIMEOUT, async_nats::connect_with_options(servers, options))
            .await
            .map_err(|_| ClusterError::Connect(format!("no NATS server answered within {CONNECT_TIMEOUT:?}")))?
            .map_err(|error| ClusterError::Connect(error.to_string()))?;
        let jetstream = jetstream::context::ContextBuilder::new().timeout(REQUEST_TIMEOUT).build(client.clone());
        let log = Log { client, jetstream, stream: config.stream.clone(), subject: config.subject() };
        log.ensure_stream(config.replicas).await?;
        Ok(log)
    }

    async fn ensure_stream(&self, replicas: usize) -> Result<(), ClusterError> {
        let config = stream::Config {
            name: self.stream.clone(),
            subjects: vec![self.subject.clone()],
            num_replicas: replicas,
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        };
        self.jetstream
            .get_or_create_stream(config)
            .await
            .map(|_| ())
            .map_err(|error| ClusterError::Stream(format!("stream {}: {error}", self.stream)))
    }

    /// Sends `raw` (event `id`) to the log; the returned [`Pending`] resolves with its seq.
    /// Publishes sent one after another on this connection get increasing seqs.
    pub async fn publish(&self, id: &[u8; 32], raw: Bytes) -> Result<Pending, ClusterError> {
        let message = jetstream::message::PublishMessage::build().payload(raw).message_id(hex::encode(id));
        self.jetstream
            .send_publish(self.subject.clone(), message)
            .await
            .map(Pending)
            .map_err(|error| ClusterError::Publish(error.to_string()))
    }

    /// The highest seq in the log (0 when empty).
    pub async fn last_seq(&self) -> Result<u64, ClusterError> {
        let mut stream = self
            .jetstream
            .get_stream(&self.stream)
            .await
            .map_err(|error| ClusterError::Stream(format!("stream {}: {error}", self.stream)))?;
        let info = stream.info().await.map_err(|error| ClusterError::Stream(error.to_string()))?;
        Ok(info.state.last_sequence)
    }

    /// Every message from seq `start` on, in log order; the consumer recreates itself
    /// after a gap or a reconnect.
    pub async fn read_from(&self, start: u64) -> Result<consumer::pull::Ordered, ClusterError> {
        let stream = self
            .jetstream
            .get_stream(&self.stream)
            .await
            .map_err(|error| ClusterError::Stream(format!("stream {}: {error}", self.stream)))?;
        let config = consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence { start_sequence: start.max(1) },
            filter_subject: self.subject.clone(),
            ..Default::default()
        };
        let consumer =
            stream.create_consumer(config).await.map_err(|error| ClusterError::Consumer(error.to_string()))?;
        consumer.messages().await.map_err(|error| ClusterError::Consumer(error.to_string()))
    }

    /// The NATS connection (shared).
    pub fn client(&self) -> async_nats::Client {
        self.client.clone()
    }

    /// True while connected to a NATS server.
    pub fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }
}
