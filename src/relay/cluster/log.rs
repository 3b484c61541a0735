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
    subjects: Vec<String>,
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

/// Why a conditional append did not happen.
#[derive(Debug)]
pub enum AppendFailure {
    /// The subject's last message is not the expected one.
    Conflict,
    /// No answer, or another error.
    Unavailable(String),
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
        let log = Log {
            client,
            jetstream,
            stream: config.stream.clone(),
            subject: config.subject(),
            subjects: config.subjects(),
        };
        log.ensure_stream(config.replicas).await?;
        Ok(log)
    }

    async fn ensure_stream(&self, replicas: usize) -> Result<(), ClusterError> {
        let config = stream::Config {
            name: self.stream.clone(),
            subjects: self.subjects.clone(),
            num_replicas: replicas,
            storage: stream::StorageType::File,
            duplicate_window: DUPLICATE_WINDOW,
            ..Default::default()
        };
        let failed = |error: String| ClusterError::Stream(format!("stream {}: {error}", self.stream));
        let mut stream =
            self.jetstream.get_or_create_stream(config).await.map_err(|error| failed(error.to_string()))?;
        let info = stream.info().await.map_err(|error| failed(error.to_string()))?;
        if self.subjects.iter().all(|subject| info.config.subjects.contains(subject)) {
            return Ok(());
        }
        // A stream made by an older relay holds events only: add the job queues' subjects.
        let mut updated = info.config.clone();
        for subject in &self.subjects {
            if !updated.subjects.contains(subject) {
                updated.subjects.push(subject.clone());
            }
        }
        self.jetstream.update_stream(updated).await.map(|_| ()).map_err(|error| failed(error.to_string()))
    }

    /// Appends `payload` to `subject` only if the subject's last message is at seq
    /// `expected` (0: the subject has none); `message_id` deduplicates as for events.
    pub async fn append(
        &self,
        subject: String,
        payload: Bytes,
        expected: u64,
        message_id: Option<String>,
    ) -> Result<Appended, AppendFailure> {
        let mut message =
            jetstream::message::PublishMessage::build().payload(payload).expected_last_subject_sequence(expected);
        if let Some(id) = message_id {
            message = message.message_id(id);
        }
        let sent = self
            .jetstream
            .send_publish(subject, message)
            .await
            .map_err(|error| AppendFailure::Unavailable(error.to_string()))?;
        match sent.await {
            Ok(ack) => Ok(Appended { seq: ack.sequence, duplicate: ack.duplicate }),
            Err(error) if error.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                Err(AppendFailure::Conflict)
            }
            Err(error) => Err(AppendFailure::Unavailable(error.to_string())),
        }
    }

    /// The last message on `subject` (its seq and payload), if any.
    pub async fn last_on(&self, subject: &str) -> Result<Option<(u64, Bytes)>, ClusterError> {
        let stream = self
            .jetstream
            .get_stream_no_info(&self.stream)
            .await
            .map_err(|error| ClusterError::Stream(format!("stream {}: {error}", self.stream)))?;
        match stream.get_last_raw_message_by_subject(subject).await {
            Ok(message) => Ok(Some((message.sequence, message.payload))),
            Err(error) if error.kind() == stream::LastRawMessageErrorKind::NoMessageFound => Ok(None),
            Err(error) => Err(ClusterError::Stream(error.to_string())),
        }
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
