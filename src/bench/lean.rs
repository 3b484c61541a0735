//! A lean Axon connection for the receiving side of the benchmark (fan-out subscribers,
//! stored queries): frames are decoded strictly (spec §6), but events are only sliced, not
//! decoded, so the harness spends as little as possible per delivered event.

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

use crate::client::auth_frame;
use crate::protocol::msgpack::Reader;
use crate::protocol::Frame;

use super::CliResult;

type Socket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An authenticated connection that sends and receives whole frames.
pub struct LeanConn {
    socket: Socket,
}

impl LeanConn {
    /// Connects and authenticates (CHALLENGE → AUTH → OK).
    pub async fn connect(url: &str, relay_url: &str, key: &SigningKey) -> CliResult<LeanConn> {
        // Nagle off: a query's UNSUBSCRIBE followed by the next SUBSCRIBE would otherwise
        // wait for the relay's delayed ACK (~40 ms).
        let (socket, _) = tokio_tungstenite::connect_async_with_config(url, None, true)
            .await
            .map_err(|error| format!("cannot connect to {url}: {error}"))?;
        let mut conn = LeanConn { socket };
        let nonce = match conn.next_frame().await? {
            Some(Frame::Challenge { nonce }) => nonce,
            other => return Err(format!("expected CHALLENGE, got {other:?}").into()),
        };
        conn.send(&auth_frame(key, &nonce, relay_url)).await?;
        match conn.next_frame().await? {
            Some(Frame::Ok(_)) => Ok(conn),
            Some(Frame::Error(error)) => Err(format!("AUTH refused: {} {}", error.code, error.message).into()),
            other => Err(format!("expected OK to AUTH, got {other:?}").into()),
        }
    }

    /// Sends one frame (flushed).
    pub async fn send(&mut self, frame: &Frame) -> CliResult<()> {
        self.socket.send(Message::Binary(frame.encode())).await.map_err(|error| format!("send failed: {error}").into())
    }

    /// Queues one frame without flushing.
    pub async fn feed(&mut self, frame: &Frame) -> CliResult<()> {
        self.socket.feed(Message::Binary(frame.encode())).await.map_err(|error| format!("send failed: {error}").into())
    }

    /// Flushes queued frames.
    pub async fn flush(&mut self) -> CliResult<()> {
        self.socket.flush().await.map_err(|error| format!("send failed: {error}").into())
    }

    /// The next frame; `None` once the connection is closed.
    pub async fn next_frame(&mut self) -> CliResult<Option<Frame>> {
        loop {
            match self.socket.next().await {
                None | Some(Ok(Message::Close(_))) => return Ok(None),
                Some(Err(error)) => return Err(format!("receive failed: {error}").into()),
                Some(Ok(Message::Binary(bytes))) => {
                    return Frame::decode(&Bytes::from(bytes))
                        .map(Some)
                        .map_err(|error| format!("relay sent an invalid frame: {error}").into())
                }
                Some(Ok(_)) => continue,
            }
        }
    }

    /// Closes the connection politely.
    pub async fn close(mut self) {
        let _ = self.socket.close(None).await;
    }
}

/// The `content` bytes of a raw event map, without decoding the rest.
pub fn raw_content(raw: &[u8]) -> Option<&[u8]> {
    let mut reader = Reader::new(raw);
    let entries = reader.read_map_len("event").ok()?;
    for _ in 0..entries {
        if reader.read_str("key").ok()? == "content" {
            return reader.read_bin("content").ok();
        }
        reader.skip_value().ok()?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::Event;

    #[test]
    fn finds_content_in_raw_events() {
        let key = SigningKey::from_bytes(&[7; 32]);
        let event = Event::sign(&key, 1, 1000, b"hello".to_vec(), vec![]).expect("sign");
        assert_eq!(raw_content(&event.encode()), Some(&b"hello"[..]));
        assert_eq!(raw_content(b"\x90"), None);
    }
}
