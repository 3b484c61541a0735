//! Ephemeral events (kinds 3000–3999: never stored, no seq) across the cluster: the node
//! that accepted one sends it on a plain NATS subject beside the stream, and every other
//! node delivers it to its live subscriptions. At most once, like on one relay: a node
//! disconnected from NATS at that moment does not get it.

use std::sync::Arc;

use async_nats::HeaderMap;
use bytes::Bytes;
use futures_util::StreamExt;

use super::ClusterError;
use crate::protocol::Event;
use crate::relay::fanout::Fanout;

/// The header naming the node that sent an ephemeral event (it delivered it itself).
const ORIGIN: &str = "Axon-Node";

/// Sends and receives the cluster's ephemeral events.
pub struct Ephemerals {
    client: async_nats::Client,
    subject: String,
    /// Random per process: tells this node's own messages apart.
    node: String,
}

impl Ephemerals {
    /// On `client`, subject `<stream>.ephemeral`.
    pub fn new(client: async_nats::Client, stream: &str) -> Ephemerals {
        Ephemerals { client, subject: format!("{stream}.ephemeral"), node: format!("{:016x}", rand::random::<u64>()) }
    }

    /// Sends an ephemeral event this node accepted (and delivered locally) to the others.
    pub async fn send(&self, raw: Bytes) {
        let mut headers = HeaderMap::new();
        headers.insert(ORIGIN, self.node.as_str());
        if let Err(error) = self.client.publish_with_headers(self.subject.clone(), headers, raw).await {
            tracing::debug!(%error, "an ephemeral event was not sent to the other nodes");
        }
    }

    /// Subscribes to the other nodes' ephemeral events (the subscription survives
    /// reconnects); [`Ephemerals::deliver`] hands them to the fan-out.
    pub async fn subscribe(&self) -> Result<async_nats::Subscriber, ClusterError> {
        self.client.subscribe(self.subject.clone()).await.map_err(|error| ClusterError::Consumer(error.to_string()))
    }

    /// Delivers what `messages` receives to `fanout` (this node's own messages skipped).
    pub async fn deliver(self: Arc<Self>, mut messages: async_nats::Subscriber, fanout: Arc<Fanout>) {
        while let Some(message) = messages.next().await {
            let origin = message.headers.as_ref().and_then(|headers| headers.get(ORIGIN)).map(|value| value.as_str());
            if origin == Some(self.node.as_str()) {
                continue;
            }
            match Event::decode(&message.payload) {
                Ok(event) => fanout.dispatch_ephemeral(&event, &message.payload),
                Err(error) => tracing::warn!(%error, "an ephemeral message from the cluster is not an event; dropped"),
            }
        }
    }
}
