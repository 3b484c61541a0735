//! Shared test harness: a real relay on an ephemeral port with a temporary SQLite file,
//! driven over real sockets.
#![allow(dead_code)]

use std::time::Duration;

use axon_relay::client::{Client, ClientError, SubItem, Subscription};
use axon_relay::protocol::{Event, Frame, Tag};
use axon_relay::relay::config::RelayConfig;
use axon_relay::relay::{start, unix_now, RelayHandle};
use bytes::Bytes;
use ed25519_dalek::SigningKey;
use futures_util::{SinkExt, StreamExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

/// The relay_url every test relay is configured with (deliberately not its address).
pub const RELAY_URL: &str = "ws://axon.test/relay";

/// Deterministic keys by name.
pub fn key(name: &str) -> SigningKey {
    use sha2::Digest;
    SigningKey::from_bytes(&sha2::Sha256::digest(name.as_bytes()).into())
}

pub fn admin() -> SigningKey {
    key("admin")
}
pub fn alice() -> SigningKey {
    key("alice")
}
pub fn bob() -> SigningKey {
    key("bob")
}
/// Not on any list.
pub fn mallory() -> SigningKey {
    key("mallory")
}

pub fn hex_of(key: &SigningKey) -> String {
    hex::encode(key.verifying_key().to_bytes())
}

/// A running relay and its temporary directory.
pub struct TestRelay {
    pub handle: Option<RelayHandle>,
    pub dir: tempfile::TempDir,
    pub url: String,
    pub config: RelayConfig,
}

pub fn base_config(dir: &tempfile::TempDir) -> RelayConfig {
    RelayConfig {
        addr: "127.0.0.1:0".into(),
        db: dir.path().join("axon.db"),
        relay_url: RELAY_URL.into(),
        admins: vec![hex_of(&admin())],
        allowlist: vec![hex_of(&alice()), hex_of(&bob())],
        ..RelayConfig::default()
    }
}

impl TestRelay {
    pub async fn start() -> TestRelay {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(customize: impl FnOnce(&mut RelayConfig)) -> TestRelay {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut config = base_config(&dir);
        customize(&mut config);
        Self::start_in(dir, config).await
    }

    pub async fn start_in(dir: tempfile::TempDir, config: RelayConfig) -> TestRelay {
        let handle = start(config.clone()).await.expect("relay starts");
        let url = format!("ws://{}", handle.local_addr);
        TestRelay { handle: Some(handle), dir, url, config }
    }

    pub fn http_base(&self) -> String {
        self.url.replace("ws://", "http://")
    }

    pub async fn connect(&self, key: &SigningKey) -> Client {
        Client::connect(&self.url, RELAY_URL, key).await.expect("connect + auth")
    }

    pub async fn try_connect(&self, key: &SigningKey) -> Result<Client, ClientError> {
        Client::connect(&self.url, RELAY_URL, key).await
    }

    /// Stops the relay gracefully, keeping the directory.
    pub async fn stop(&mut self) {
        if let Some(handle) = self.handle.take() {
            handle.shutdown().await;
        }
    }

    /// Stops and starts again on the same database (new port).
    pub async fn restart(mut self) -> TestRelay {
        self.stop().await;
        let mut config = self.config.clone();
        config.addr = "127.0.0.1:0".into();
        Self::start_in(self.dir, config).await
    }
}

/// Signs an event now with the given kind, content and tags.
pub fn event(key: &SigningKey, kind: u16, content: &str, tags: Vec<Tag>) -> Event {
    Event::sign(key, unix_now(), kind, content.as_bytes().to_vec(), tags).expect("sign")
}

pub fn event_at(key: &SigningKey, kind: u16, created_at: u64, content: &str, tags: Vec<Tag>) -> Event {
    Event::sign(key, created_at, kind, content.as_bytes().to_vec(), tags).expect("sign")
}

pub fn tag(name: &str, value: &str) -> Tag {
    Tag::new(name, [value])
}

/// Waits (bounded) for the next subscription item.
pub async fn next_item(subscription: &mut Subscription) -> SubItem {
    tokio::time::timeout(Duration::from_secs(10), subscription.next())
        .await
        .expect("subscription item within 10 s")
        .expect("subscription open")
}

/// Next item must be an event; returns it and its seq.
pub async fn next_event(subscription: &mut Subscription) -> (Event, u64) {
    match next_item(subscription).await {
        SubItem::Event { event, seq, .. } => (*event, seq),
        other => panic!("expected an event, got {other:?}"),
    }
}

/// Asserts nothing arrives on the subscription for a short while.
pub async fn assert_quiet(subscription: &mut Subscription) {
    if let Ok(item) = tokio::time::timeout(Duration::from_millis(300), subscription.next()).await {
        panic!("expected nothing, got {item:?}");
    }
}

/// A bare WebSocket for tests that speak the protocol byte by byte.
pub type Raw = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub async fn raw_connect(relay: &TestRelay) -> (Raw, [u8; 32]) {
    let (mut socket, _) = tokio_tungstenite::connect_async(&relay.url).await.expect("ws connect");
    let nonce = match raw_frame(&mut socket).await {
        RawItem::Frame(Frame::Challenge { nonce }) => nonce,
        other => panic!("expected CHALLENGE, got {other:?}"),
    };
    (socket, nonce)
}

/// Connects and authenticates as `key`.
pub async fn raw_authed(relay: &TestRelay, key: &SigningKey) -> Raw {
    let (mut socket, nonce) = raw_connect(relay).await;
    let auth = axon_relay::client::auth_frame(key, &nonce, RELAY_URL);
    socket.send(Message::Binary(auth.encode())).await.expect("send auth");
    match raw_frame(&mut socket).await {
        RawItem::Frame(Frame::Ok(_)) => socket,
        other => panic!("expected OK, got {other:?}"),
    }
}

#[derive(Debug)]
pub enum RawItem {
    Frame(Frame),
    Close(Option<u16>),
    Ping,
    Gone,
}

/// The next frame, close or ping (bounded wait).
pub async fn raw_frame(socket: &mut Raw) -> RawItem {
    let message = tokio::time::timeout(Duration::from_secs(10), socket.next()).await.expect("a message within 10 s");
    match message {
        Some(Ok(Message::Binary(bytes))) => {
            RawItem::Frame(Frame::decode(&Bytes::from(bytes)).expect("relay frames decode"))
        }
        Some(Ok(Message::Close(frame))) => RawItem::Close(frame.map(|frame| u16::from(frame.code))),
        Some(Ok(Message::Ping(_))) => RawItem::Ping,
        Some(Ok(other)) => panic!("unexpected message {other:?}"),
        None | Some(Err(_)) => RawItem::Gone,
    }
}

/// Expects an ERROR with `code`, then returns it.
pub async fn expect_error(socket: &mut Raw, code: u16) -> axon_relay::protocol::frame::ErrorMessage {
    match raw_frame(socket).await {
        RawItem::Frame(Frame::Error(error)) if error.code == code => error,
        other => panic!("expected ERROR {code}, got {other:?}"),
    }
}

/// Expects the relay to close with `code`.
pub async fn expect_close(socket: &mut Raw, code: u16) {
    loop {
        match raw_frame(socket).await {
            RawItem::Close(Some(actual)) => {
                assert_eq!(actual, code, "close code");
                return;
            }
            RawItem::Ping => continue,
            other => panic!("expected close {code}, got {other:?}"),
        }
    }
}

pub async fn send_raw(socket: &mut Raw, bytes: Vec<u8>) {
    socket.send(Message::Binary(bytes)).await.expect("send");
}

pub async fn http_get(relay: &TestRelay, path: &str, accept: Option<&str>) -> (u16, String) {
    http_get_url(&relay.url, path, accept).await
}

/// `GET path` on the port of the relay at `ws_url`: (status, body).
pub async fn http_get_url(ws_url: &str, path: &str, accept: Option<&str>) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = ws_url.trim_start_matches("ws://");
    let mut stream = TcpStream::connect(addr).await.expect("tcp");
    let accept = accept.map(|value| format!("Accept: {value}\r\n")).unwrap_or_default();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{accept}Connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("read");
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).expect("status");
    let body = response.split_once("\r\n\r\n").map(|(_, body)| body.to_owned()).unwrap_or_default();
    (status, body)
}

pub fn now() -> u64 {
    unix_now()
}

pub fn bytes(data: &[u8]) -> Bytes {
    Bytes::copy_from_slice(data)
}

/// A relay running as a child process of the real `axon` binary.
pub struct ChildRelay {
    pub child: std::process::Child,
    pub url: String,
    pub config_path: std::path::PathBuf,
}

impl ChildRelay {
    /// Writes `yaml` to `dir/relay.yaml` and starts `axon relay` on it; the config must
    /// use `addr: 127.0.0.1:0`. Reads the bound address from the first stdout line.
    pub fn spawn(dir: &std::path::Path, yaml: &str) -> ChildRelay {
        use std::io::{BufRead, BufReader};
        let config_path = dir.join("relay.yaml");
        std::fs::write(&config_path, yaml).expect("write config");
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_axon"))
            .args(["relay", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "warn")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("spawn relay");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout).read_line(&mut line).expect("read listening line");
        let addr =
            line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("unexpected first line {line:?}"));
        let url = format!("ws://{addr}");
        ChildRelay { child, url, config_path }
    }

    /// Sends a signal by name (e.g. "HUP", "TERM").
    pub fn signal(&self, name: &str) {
        let status = std::process::Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill");
        assert!(status.success(), "kill -{name}");
    }

    pub async fn connect(&self, key: &SigningKey) -> Result<Client, ClientError> {
        Client::connect(&self.url, RELAY_URL, key).await
    }
}

impl Drop for ChildRelay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A relay.yaml for child relays: ephemeral port, `db` in `dir`, the given key lists.
pub fn child_yaml(dir: &std::path::Path, admins: &[&SigningKey], allowlist: &[&SigningKey], extra: &str) -> String {
    let list =
        |keys: &[&SigningKey]| keys.iter().map(|key| format!("\"{}\"", hex_of(key))).collect::<Vec<_>>().join(", ");
    format!(
        "addr: \"127.0.0.1:0\"\ndb: \"{}\"\nrelay_url: \"{RELAY_URL}\"\nadmins: [{}]\nallowlist: [{}]\n{extra}",
        dir.join("axon.db").display(),
        list(admins),
        list(allowlist)
    )
}
