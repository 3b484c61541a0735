//! Keep-alive (spec §7.5), graceful shutdown (§7.7, §8 durability) and /health (§11).

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use axon_relay::protocol::frame::encode_publish_frame;
use axon_relay::protocol::{Event, Filter, Frame};
use common::*;
use futures_util::{SinkExt, StreamExt};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::MaybeTlsStream;

/// One WebSocket frame as the relay wrote it (server frames are never masked).
#[derive(Debug, PartialEq, Eq)]
enum WireFrame {
    Ping,
    Close(Option<u16>),
    Other(u8),
}

/// Parses unmasked server frames from raw bytes.
fn parse_frames(mut bytes: &[u8]) -> Vec<WireFrame> {
    let mut frames = Vec::new();
    while bytes.len() >= 2 {
        let opcode = bytes[0] & 0x0f;
        assert_eq!(bytes[1] & 0x80, 0, "server frames are not masked");
        let (len, header) = match bytes[1] & 0x7f {
            126 => (u16::from_be_bytes([bytes[2], bytes[3]]) as usize, 4),
            127 => (u64::from_be_bytes(bytes[2..10].try_into().unwrap()) as usize, 10),
            small => (small as usize, 2),
        };
        let payload = &bytes[header..header + len];
        frames.push(match opcode {
            0x9 => WireFrame::Ping,
            0x8 => WireFrame::Close((payload.len() >= 2).then(|| u16::from_be_bytes([payload[0], payload[1]]))),
            other => WireFrame::Other(other),
        });
        bytes = &bytes[header + len..];
    }
    assert!(bytes.is_empty(), "trailing partial frame");
    frames
}

#[tokio::test]
async fn client_that_never_answers_pings_is_closed_1008() {
    let relay = TestRelay::start_with(|config| config.limits.ping_interval_secs = 1).await;
    let mut socket = raw_authed(&relay, &alice()).await;
    // Never read through the WebSocket layer again, so no Pong is ever sent.
    let MaybeTlsStream::Plain(tcp) = socket.get_mut() else { panic!("plain TCP expected") };
    tokio::time::sleep(Duration::from_millis(3500)).await;
    let mut bytes = Vec::new();
    tokio::time::timeout(Duration::from_secs(2), tcp.read_to_end(&mut bytes))
        .await
        .expect("the relay closes the TCP connection by now")
        .expect("read");
    let frames = parse_frames(&bytes);
    let pings = frames.iter().filter(|frame| **frame == WireFrame::Ping).count();
    assert!(pings >= 2, "at least two pings before giving up: {frames:?}");
    assert_eq!(frames.last(), Some(&WireFrame::Close(Some(1008))), "{frames:?}");
    assert!(frames.iter().all(|frame| matches!(frame, WireFrame::Ping | WireFrame::Close(_))), "{frames:?}");
}

#[tokio::test]
async fn client_that_answers_pings_stays_connected() {
    let relay = TestRelay::start_with(|config| config.limits.ping_interval_secs = 1).await;
    let mut socket = raw_authed(&relay, &alice()).await;
    let deadline = tokio::time::Instant::now() + Duration::from_millis(3500);
    let mut pings = 0;
    // Reading lets tokio-tungstenite answer each Ping with a Pong.
    loop {
        match tokio::time::timeout_at(deadline, socket.next()).await {
            Err(_) => break,
            Ok(Some(Ok(Message::Ping(_)))) => pings += 1,
            Ok(other) => panic!("expected only pings while idle, got {other:?}"),
        }
    }
    assert!(pings >= 3, "the relay pings every second, saw {pings}");
    let published = event(&alice(), 1000, "still alive", vec![]);
    send_raw(&mut socket, encode_publish_frame(&published.encode())).await;
    loop {
        match raw_frame(&mut socket).await {
            RawItem::Ping => continue,
            RawItem::Frame(Frame::Ok(ok)) => {
                assert_eq!(ok.id, published.id);
                break;
            }
            other => panic!("expected OK, got {other:?}"),
        }
    }
}

/// What a reader saw until the connection ended.
struct Seen {
    oks: HashMap<[u8; 32], Vec<u64>>,
    errors: HashMap<[u8; 32], Vec<u16>>,
    other: Vec<String>,
    close: Option<Option<u16>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_in_flight_publishes_then_closes_1001() {
    const N: usize = 2000;
    let mut relay = TestRelay::start_with(|config| config.limits.drain_timeout_secs = 3).await;
    let socket = raw_authed(&relay, &alice()).await;
    let (mut sink, mut stream) = socket.split();
    let events: Vec<Event> = (0..N).map(|i| event(&alice(), 1000, &format!("in flight {i}"), vec![])).collect();

    let (first_reply, first_reply_seen) = tokio::sync::oneshot::channel::<()>();
    let reader = tokio::spawn(async move {
        let mut seen = Seen { oks: HashMap::new(), errors: HashMap::new(), other: Vec::new(), close: None };
        let mut first_reply = Some(first_reply);
        loop {
            let message = match tokio::time::timeout(Duration::from_secs(8), stream.next()).await {
                Ok(message) => message,
                Err(_) => {
                    seen.other.push("no close within 8 s".into());
                    break;
                }
            };
            match message {
                Some(Ok(Message::Binary(bytes))) => {
                    if let Some(signal) = first_reply.take() {
                        let _ = signal.send(());
                    }
                    match Frame::decode_slice(&bytes) {
                        Ok(Frame::Ok(ok)) => seen.oks.entry(ok.id).or_default().push(ok.seq.unwrap_or(0)),
                        Ok(Frame::Error(error)) => match error.id {
                            Some(id) => seen.errors.entry(id).or_default().push(error.code),
                            None => seen.other.push(format!("{error:?}")),
                        },
                        other => seen.other.push(format!("{other:?}")),
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    seen.close = Some(frame.map(|frame| u16::from(frame.code)));
                    break;
                }
                Some(Ok(_)) => {}
                Some(Err(_)) | None => break,
            }
        }
        seen
    });

    for published in &events {
        sink.feed(Message::Binary(encode_publish_frame(&published.encode()))).await.unwrap();
    }
    sink.flush().await.unwrap();
    // Shut down while the relay is working through them.
    tokio::time::timeout(Duration::from_secs(5), first_reply_seen).await.expect("a first reply").unwrap();
    let stopping = Instant::now();
    relay.stop().await;
    assert!(stopping.elapsed() < Duration::from_secs(4), "shutdown within the drain timeout");
    let seen = reader.await.unwrap();

    assert_eq!(seen.close, Some(Some(1001)), "close 1001 after the replies; other: {:?}", seen.other);
    assert!(seen.other.is_empty(), "unexpected frames: {:?}", seen.other);
    let mut missing = 0;
    for published in &events {
        let oks = seen.oks.get(&published.id).map_or(0, Vec::len);
        let errors = seen.errors.get(&published.id).cloned().unwrap_or_default();
        assert!(oks + errors.len() <= 1, "more than one reply for one publish");
        assert!(errors.iter().all(|code| *code == 503), "only 503 is acceptable during shutdown: {errors:?}");
        if oks + errors.len() == 0 {
            missing += 1;
        }
    }
    assert_eq!(
        missing,
        0,
        "every PUBLISH sent before shutdown gets exactly one reply: {missing} of {N} got none ({} OK, {} ERROR)",
        seen.oks.len(),
        seen.errors.len()
    );

    // No longer accepting.
    assert!(tokio_tungstenite::connect_async(&relay.url).await.is_err(), "a new connection is refused");

    // Everything acknowledged survived.
    let relay = relay.restart().await;
    let client = relay.connect(&bob()).await;
    let mut subscription = client.subscribe("all", vec![Filter::default()], Some(0)).await.unwrap();
    let stored: HashMap<[u8; 32], u64> =
        subscription.stored().await.unwrap().into_iter().map(|(event, seq)| (event.id, seq)).collect();
    for (id, seqs) in &seen.oks {
        assert_eq!(stored.get(id), Some(&seqs[0]), "acknowledged event {} is stored with its seq", hex::encode(id));
    }
}

#[tokio::test]
async fn shutdown_closes_idle_connections_1001_and_refuses_new_ones() {
    let mut relay = TestRelay::start_with(|config| config.limits.drain_timeout_secs = 3).await;
    let mut authed = raw_authed(&relay, &alice()).await;
    let published = event(&alice(), 1000, "before shutdown", vec![]);
    let seq = relay.connect(&bob()).await.publish(&published).await.unwrap().unwrap();
    let started = Instant::now();
    relay.stop().await;
    assert!(started.elapsed() < Duration::from_secs(2), "nothing to drain: {:?}", started.elapsed());
    expect_close(&mut authed, 1001).await;
    assert!(tokio_tungstenite::connect_async(&relay.url).await.is_err(), "a new connection is refused");
    let relay = relay.restart().await;
    let client = relay.connect(&alice()).await;
    let mut subscription = client.subscribe("s", vec![Filter::default()], None).await.unwrap();
    assert_eq!(subscription.stored().await.unwrap(), vec![(published, seq)]);
}

#[tokio::test]
async fn shutdown_closes_unauthenticated_connections_1001_promptly() {
    // §7.7: close 1001 goes to *every* connection, including one still waiting to AUTH,
    // and the relay is done within the drain timeout.
    let mut relay = TestRelay::start_with(|config| config.limits.drain_timeout_secs = 1).await;
    let (mut unauthed, _) = raw_connect(&relay).await;
    let started = Instant::now();
    relay.stop().await;
    let took = started.elapsed();
    let ending = match tokio::time::timeout(Duration::from_millis(1500), unauthed.next()).await {
        Err(_) => "nothing: the TCP connection is still open after shutdown returned".to_string(),
        Ok(Some(Ok(Message::Close(Some(frame))))) if u16::from(frame.code) == 1001 => "close 1001".to_string(),
        Ok(other) => format!("{other:?}"),
    };
    assert_eq!(ending, "close 1001", "unauthenticated connection at shutdown (shutdown took {took:?})");
    assert!(took < Duration::from_millis(900), "shutdown waited for the unauthenticated connection: {took:?}");
}

#[tokio::test]
async fn health_is_ok_while_serving() {
    let relay = TestRelay::start().await;
    assert_eq!(http_get(&relay, "/health", None).await, (200, "ok".to_string()));
    // Still ok with connections open and after traffic.
    let client = relay.connect(&alice()).await;
    client.publish(&event(&alice(), 1000, "x", vec![])).await.unwrap();
    assert_eq!(http_get(&relay, "/health", None).await, (200, "ok".to_string()));
}

#[tokio::test]
async fn a_clean_shutdown_leaves_a_complete_database_file() {
    let mut relay = TestRelay::start().await;
    let client = relay.connect(&alice()).await;
    let published = event(&alice(), 1000, "folded into the .db file", vec![]);
    client.publish(&published).await.expect("publish");
    drop(client);
    relay.stop().await;
    let mut wal = relay.config.db.as_os_str().to_owned();
    wal.push("-wal");
    let wal_bytes = std::fs::metadata(std::path::Path::new(&wal)).map(|meta| meta.len()).unwrap_or(0);
    assert_eq!(wal_bytes, 0, "the WAL was checkpointed and truncated");
    // A copy of the .db file alone holds the event.
    let copy = relay.dir.path().join("copy.db");
    std::fs::copy(&relay.config.db, &copy).expect("copy");
    let count: i64 = rusqlite::Connection::open(&copy)
        .expect("open")
        .query_row("SELECT COUNT(*) FROM events", [], |row| row.get(0))
        .expect("count");
    assert_eq!(count, 1);
}
