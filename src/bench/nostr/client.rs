//! Talking NIP-01 to a Nostr relay: a pipelining publisher ([`NostrClient`]) and a lean
//! reader/writer of whole text messages for subscribers and queries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use futures_util::{SinkExt, StreamExt};
use serde::de::IgnoredAny;
use serde::Deserialize;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use super::event::{content_index, NostrPrepared};
use crate::cli::CliResult;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

async fn open(url: &str, disable_nagle: bool) -> CliResult<Socket> {
    let (socket, _) = tokio_tungstenite::connect_async_with_config(url, None, disable_nagle)
        .await
        .map_err(|error| format!("cannot connect to {url}: {error}"))?;
    Ok(socket)
}

type Routes = Arc<Mutex<HashMap<String, oneshot::Sender<Result<(), String>>>>>;

fn routes_lock(routes: &Routes) -> std::sync::MutexGuard<'_, HashMap<String, oneshot::Sender<Result<(), String>>>> {
    crate::sync::lock(routes)
}

/// A pipelining publisher: like [`crate::client::Client`], many EVENTs in flight, each
/// resolved by its OK.
pub struct NostrClient {
    sender: mpsc::Sender<Message>,
    routes: Routes,
}

#[derive(Deserialize)]
struct OkMessage(IgnoredAny, String, bool, #[serde(default)] String);

impl NostrClient {
    /// Connects (Nagle as the Axon client: on).
    pub async fn connect(url: &str) -> CliResult<NostrClient> {
        let (mut sink, mut stream) = open(url, false).await?.split();
        let (sender, mut outgoing) = mpsc::channel::<Message>(1024);
        tokio::spawn(async move {
            while let Some(message) = outgoing.recv().await {
                let sent = if outgoing.is_empty() { sink.send(message).await } else { sink.feed(message).await };
                if sent.is_err() {
                    break;
                }
            }
            let _ = sink.close().await;
        });
        let routes: Routes = Arc::new(Mutex::new(HashMap::new()));
        let reader_routes = routes.clone();
        tokio::spawn(async move {
            while let Some(Ok(message)) = stream.next().await {
                let Message::Text(text) = message else { continue };
                if !text.starts_with("[\"OK\"") {
                    continue;
                }
                if let Ok(OkMessage(_, id, accepted, reason)) = serde_json::from_str::<OkMessage>(&text) {
                    if let Some(reply) = routes_lock(&reader_routes).remove(&id) {
                        let _ = reply.send(if accepted { Ok(()) } else { Err(reason) });
                    }
                }
            }
            routes_lock(&reader_routes).clear();
        });
        Ok(NostrClient { sender, routes })
    }

    /// Sends an EVENT and waits for its OK.
    pub async fn publish(&self, event: &NostrPrepared) -> Result<(), String> {
        let (reply, answer) = oneshot::channel();
        routes_lock(&self.routes).insert(event.id.clone(), reply);
        self.sender.send(Message::Text(event.frame.clone())).await.map_err(|_| "closed".to_owned())?;
        answer.await.map_err(|_| "closed".to_owned())?
    }
}

/// A lean reader/writer of whole text messages.
pub(super) struct NostrLean {
    socket: Socket,
}

#[derive(Deserialize)]
struct EventMessage<'a>(IgnoredAny, IgnoredAny, #[serde(borrow)] LiteEvent<'a>);

#[derive(Deserialize)]
struct LiteEvent<'a> {
    #[serde(borrow)]
    content: std::borrow::Cow<'a, str>,
}

/// What a relay message is, as far as the benchmark cares.
pub(super) enum Incoming {
    Event(Option<u64>),
    Eose(String),
    Closed(String, String),
    Notice(String),
    Other,
}

fn classify(text: &str) -> Incoming {
    if text.starts_with("[\"EVENT\"") {
        let index = serde_json::from_str::<EventMessage>(text)
            .ok()
            .and_then(|EventMessage(_, _, event)| content_index(&event.content));
        return Incoming::Event(index);
    }
    match serde_json::from_str::<Vec<serde_json::Value>>(text) {
        Ok(items) => match items.first().and_then(|kind| kind.as_str()) {
            Some("EOSE") => Incoming::Eose(items.get(1).and_then(|id| id.as_str()).unwrap_or("").to_owned()),
            Some("CLOSED") => Incoming::Closed(
                items.get(1).and_then(|id| id.as_str()).unwrap_or("").to_owned(),
                items.get(2).and_then(|reason| reason.as_str()).unwrap_or("").to_owned(),
            ),
            Some("NOTICE") => Incoming::Notice(items.get(1).map(|notice| notice.to_string()).unwrap_or_default()),
            _ => Incoming::Other,
        },
        Err(_) => Incoming::Other,
    }
}

impl NostrLean {
    pub(super) async fn connect(url: &str) -> CliResult<NostrLean> {
        Ok(NostrLean { socket: open(url, true).await? })
    }

    pub(super) async fn send(&mut self, text: String) -> CliResult<()> {
        self.socket.send(Message::Text(text)).await.map_err(|error| format!("send failed: {error}").into())
    }

    pub(super) async fn next(&mut self) -> CliResult<Option<Incoming>> {
        loop {
            match self.socket.next().await {
                None | Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Err(error)) => return Err(format!("receive failed: {error}").into()),
                Some(Ok(Message::Text(text))) => return Ok(Some(classify(&text))),
                Some(Ok(_)) => continue,
            }
        }
    }

    pub(super) async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies_relay_messages() {
        let text = r#"["EVENT","s",{"id":"x","content":"00000000000000050000000000000000abc","kind":1}]"#;
        assert!(matches!(classify(text), Incoming::Event(Some(5))));
        assert!(matches!(classify(r#"["EOSE","s"]"#), Incoming::Eose(id) if id == "s"));
        assert!(matches!(classify(r#"["NOTICE","hi"]"#), Incoming::Notice(_)));
        assert!(matches!(classify(r#"["AUTH","x"]"#), Incoming::Other));
    }
}
