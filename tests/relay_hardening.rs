//! Issue 9: what a black-box probe of the relay found — over real sockets and a real
//! SQLite file. Each test here failed before its fix.

mod common;

use std::time::Duration;

use axon_relay::protocol::Filter;
use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn kinds(list: &[u16]) -> Filter {
    Filter { kinds: Some(list.to_vec()), ..Filter::default() }
}

/// An `after_seq` of 2^63 or more once wrapped to a negative SQLite bound and replayed
/// every stored event. Beyond the end of the log it replays nothing: EOSE, then live events.
#[tokio::test]
async fn after_seq_beyond_the_log_replays_nothing_then_goes_live() {
    let relay = TestRelay::start().await;
    let client = relay.connect(&alice()).await;
    let mut last = 0;
    for index in 0..3 {
        last =
            client.publish(&event(&alice(), 1000, &format!("stored {index}"), vec![])).await.expect("ok").expect("seq");
    }
    let huge = [1u64 << 63, u64::MAX - 1, u64::MAX, i64::MAX as u64, last + 1, last + 1000];
    let mut subscriptions = Vec::new();
    for (index, after) in huge.into_iter().enumerate() {
        let mut subscription =
            client.subscribe(&format!("far{index}"), vec![kinds(&[1000])], Some(after)).await.expect("subscribe");
        let stored = subscription.stored().await.expect("EOSE");
        assert!(stored.is_empty(), "after_seq {after} replayed {} stored events", stored.len());
        subscriptions.push(subscription);
    }
    // Live events still arrive, with seqs above the end of the log as it was.
    let live = client.publish(&event(&alice(), 1000, "live", vec![])).await.expect("ok").expect("seq");
    for subscription in &mut subscriptions {
        let (_, seq) = next_event(subscription).await;
        assert_eq!(seq, live);
    }
    // An after_seq inside the log still replays exactly what follows it.
    let mut subscription = client.subscribe("inside", vec![kinds(&[1000])], Some(last - 1)).await.expect("sub");
    let seqs: Vec<u64> = subscription.stored().await.expect("EOSE").into_iter().map(|(_, seq)| seq).collect();
    assert_eq!(seqs, vec![last, live]);
}

/// Sends `request` on a fresh TCP connection, half-closes, and reads the whole answer.
/// Fails (instead of returning) if the relay resets the connection.
async fn raw_http(relay: &TestRelay, request: &[u8]) -> (u16, String) {
    let addr = relay.url.trim_start_matches("ws://");
    let mut stream = TcpStream::connect(addr).await.expect("tcp");
    stream.write_all(request).await.expect("the relay reads the whole request");
    stream.shutdown().await.expect("half-close");
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("an answer within 10 s")
        .expect("an answer, not a reset");
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response.split(' ').nth(1).and_then(|code| code.parse().ok()).unwrap_or(0);
    (status, response)
}

#[tokio::test]
async fn an_over_long_url_gets_414_and_a_clean_close() {
    let relay = TestRelay::start().await;
    let request = format!("GET /{} HTTP/1.1\r\nHost: axon.test\r\n\r\n", "a".repeat(40 * 1024));
    let (status, response) = raw_http(&relay, request.as_bytes()).await;
    assert_eq!(status, 414, "{response}");
    assert!(response.to_ascii_lowercase().contains("connection: close"), "{response}");
}

#[tokio::test]
async fn an_over_long_request_head_gets_431_and_a_clean_close() {
    let relay = TestRelay::start().await;
    let mut request = String::from("GET /health HTTP/1.1\r\nHost: axon.test\r\n");
    for index in 0..1500 {
        request.push_str(&format!("X-Padding-{index}: {}\r\n", "p".repeat(20)));
    }
    request.push_str("\r\n");
    assert!(request.len() >= 32 * 1024);
    let (status, response) = raw_http(&relay, request.as_bytes()).await;
    assert_eq!(status, 431, "{response}");
}

#[tokio::test]
async fn garbage_followed_by_a_blank_line_gets_400() {
    let relay = TestRelay::start().await;
    for garbage in [&b"\x16\x03\x01garbage\r\n\r\n"[..], b"HELLO\r\n\r\n", b"\xff\xfe\r\n\r\n", b"GET\r\n\r\n"] {
        let (status, response) = raw_http(&relay, garbage).await;
        assert_eq!(status, 400, "{garbage:?}: {response}");
    }
    // Well-formed requests are unaffected.
    assert_eq!(http_get(&relay, "/health", None).await.0, 200);
}

/// Makes every insert into `events` fail on the relay's own database file, as a full disk
/// or a read-only database would (a trigger: the relay's writer sees a real SQLite error).
fn break_writes(relay: &TestRelay, broken: bool) {
    let connection = rusqlite::Connection::open(&relay.config.db).expect("open the relay's database");
    connection.busy_timeout(Duration::from_secs(5)).expect("busy timeout");
    let sql = if broken {
        "CREATE TRIGGER probe_fail BEFORE INSERT ON events BEGIN SELECT RAISE(FAIL, 'database or disk is full'); END"
    } else {
        "DROP TRIGGER probe_fail"
    };
    connection.execute_batch(sql).expect("toggle the failing trigger");
}

fn health_metric(metrics: &str) -> Option<&str> {
    metrics.lines().find(|line| line.starts_with("axon_health_failing{")).and_then(|line| line.split(' ').nth(1))
}

#[tokio::test]
async fn health_is_503_with_the_reason_while_writes_fail_and_recovers() {
    let relay = TestRelay::start().await;
    let client = relay.connect(&alice()).await;
    client.publish(&event(&alice(), 1000, "fine", vec![])).await.expect("ok");
    assert_eq!(http_get(&relay, "/health", None).await, (200, "ok".to_owned()));

    break_writes(&relay, true);
    let error = client.publish(&event(&alice(), 1000, "lost", vec![])).await.expect_err("the write fails");
    assert_eq!(error.code(), Some(500), "{error}");
    let (status, body) = http_get(&relay, "/health", None).await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("writes are failing") && body.contains("database or disk is full"), "{body}");
    let (_, metrics) = http_get(&relay, "/metrics", None).await;
    assert_eq!(health_metric(&metrics), Some("1"), "{metrics}");

    break_writes(&relay, false);
    client.publish(&event(&alice(), 1000, "again", vec![])).await.expect("writes succeed again").expect("seq");
    assert_eq!(http_get(&relay, "/health", None).await, (200, "ok".to_owned()));
    let (_, metrics) = http_get(&relay, "/metrics", None).await;
    assert_eq!(health_metric(&metrics), Some("0"), "{metrics}");
}

/// Frames of a never-reading subscriber were bounded only by count: 4096 frames of 64 KiB
/// events is 270 MB per connection. With `outbound_bytes` the queue stays within its bytes
/// and the subscription overflows (503 with a resume seq) instead.
#[tokio::test]
async fn a_never_reading_subscriber_is_bounded_in_bytes() {
    const BOUND: usize = 512 * 1024;
    let relay = TestRelay::start_with(|config| config.limits.outbound_bytes = BOUND).await;
    let state = relay.handle.as_ref().expect("running").state.clone();
    let mut slow = raw_authed(&relay, &bob()).await;
    let subscribe = axon_relay::protocol::frame::Subscribe {
        sub_id: "slow".into(),
        filters: vec![Filter { limit: Some(0), ..kinds(&[1000]) }],
        after_seq: None,
    };
    send_raw(&mut slow, axon_relay::protocol::Frame::Subscribe(subscribe).encode()).await;
    assert!(matches!(raw_frame(&mut slow).await, RawItem::Frame(axon_relay::protocol::Frame::Eose { .. })));
    // 300 events of 60 KB (18 MB) while `slow` reads nothing: more than the socket buffers
    // take, far less than 4096 frames.
    let publisher = relay.connect(&alice()).await;
    let big = "x".repeat(60_000);
    let mut most_queued = 0;
    for index in 0..300 {
        publisher.publish(&event(&alice(), 1000, &format!("{index}{big}"), vec![])).await.expect("ok");
        most_queued = most_queued.max(state.outbound_bytes.queued());
    }
    // The bound plus the overflow ERROR and the publisher's OKs, never 4096 frames' worth.
    assert!(most_queued <= BOUND + 64 * 1024, "{most_queued} bytes queued, bound {BOUND}");
    let (_, metrics) = http_get(&relay, "/metrics", None).await;
    assert!(metrics.contains("axon_outbound_bytes"), "{metrics}");
    let resume = loop {
        match raw_frame(&mut slow).await {
            RawItem::Frame(axon_relay::protocol::Frame::Event(_)) | RawItem::Ping => {}
            RawItem::Frame(axon_relay::protocol::Frame::Error(error)) => {
                assert_eq!((error.code, error.sub_id.as_deref()), (503, Some("slow")), "{}", error.message);
                break error.seq.expect("resume seq");
            }
            other => panic!("expected events, then the overflow ERROR: {other:?}"),
        }
    };
    assert!(resume > 0);
    // Everything queued for the slow connection is gone once it has been read.
    drop(slow);
    for _ in 0..100 {
        if state.outbound_bytes.queued() < 4096 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(state.outbound_bytes.queued() < 4096, "{} bytes still queued", state.outbound_bytes.queued());
}

fn authors_filter(seed: usize, count: usize) -> Filter {
    let authors = (0..count)
        .map(|index| {
            let mut author = vec![0u8; 32];
            author[..8].copy_from_slice(&((seed * 1000 + index) as u64).to_be_bytes());
            author
        })
        .collect();
    Filter { authors: Some(authors), ..Filter::default() }
}

/// 32 subscriptions × 15 filters × 240 authors fitted within the per-list caps and held
/// ~14 MB per connection; the connection's total of filter items is capped now.
#[tokio::test]
async fn filter_items_are_capped_per_connection() {
    let relay = TestRelay::start().await;
    let cap = relay.config.limits.max_filter_items_per_connection;
    assert_eq!(cap, 4096);
    let mut socket = raw_authed(&relay, &alice()).await;
    let subscribe = |sub_id: &str, filters: Vec<Filter>| {
        axon_relay::protocol::Frame::Subscribe(axon_relay::protocol::frame::Subscribe {
            sub_id: sub_id.into(),
            filters,
            after_seq: None,
        })
        .encode()
    };
    let eose = |item: RawItem| matches!(item, RawItem::Frame(axon_relay::protocol::Frame::Eose { .. }));
    // 16 × 240 = 3840 items: within the cap.
    send_raw(&mut socket, subscribe("big", (0..16).map(|seed| authors_filter(seed, 240)).collect())).await;
    assert!(eose(raw_frame(&mut socket).await));
    // 3840 + 257 > 4096: refused, naming the subscription.
    send_raw(&mut socket, subscribe("more", (0..2).map(|seed| authors_filter(100 + seed, 200)).collect())).await;
    let error = expect_error(&mut socket, 400).await;
    assert_eq!(error.sub_id.as_deref(), Some("more"));
    assert!(error.message.contains("filter items"), "{}", error.message);
    // 3840 + 256 = 4096: exactly the cap fits.
    send_raw(&mut socket, subscribe("fits", vec![authors_filter(200, 256)])).await;
    assert!(eose(raw_frame(&mut socket).await));
    // Replacing "big" (3840 held) with 3840 new items: only the new ones count, 3840 + 256.
    send_raw(&mut socket, subscribe("big", (0..15).map(|seed| authors_filter(seed, 256)).collect())).await;
    assert!(eose(raw_frame(&mut socket).await));
    // Unsubscribing gives the items back.
    send_raw(&mut socket, axon_relay::protocol::Frame::Unsubscribe { sub_id: "big".into() }.encode()).await;
    send_raw(&mut socket, subscribe("more", (0..2).map(|seed| authors_filter(100 + seed, 200)).collect())).await;
    assert!(eose(raw_frame(&mut socket).await));
}

/// Malformed frames of every shape the probe used: random bytes, valid frames mutated,
/// and hand-made nasties (deep nesting, lengths past the end, wrong types, invalid UTF-8).
fn malformed_frames(rng: &mut rand::rngs::StdRng, count: usize) -> Vec<Vec<u8>> {
    use axon_relay::protocol::frame::{encode_publish_frame, Subscribe};
    use axon_relay::protocol::Frame;
    use rand::Rng;
    let valid = [
        encode_publish_frame(&event(&alice(), 1000, "seed", vec![tag("t", "x")]).encode()),
        Frame::Subscribe(Subscribe { sub_id: "s".into(), filters: vec![kinds(&[1])], after_seq: Some(1) }).encode(),
        Frame::Unsubscribe { sub_id: "s".into() }.encode(),
    ];
    let mut deep = vec![0x92, 0x02];
    deep.extend(std::iter::repeat_n(0x91, 100_000));
    let nasties: Vec<Vec<u8>> = vec![
        deep,
        vec![0x92, 0x02, 0xdf, 0xff, 0xff, 0xff, 0xff], // map32 of 2^32-1 entries, no data
        vec![0x92, 0x04, 0x81, 0xa5, b'e', b'v', b'e', b'n', b't', 0xdb, 0xff, 0xff, 0xff, 0xff], // str32 past the end
        vec![0xdd, 0xff, 0xff, 0xff, 0xff],             // array32 of 2^32-1 elements
        vec![0x92, 0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x80], // type 2^64-1
        vec![0x92, 0x03, 0x81, 0xa6, b's', b'u', b'b', b'_', b'i', b'd', 0xa2, 0xc3, 0x28], // invalid UTF-8
        vec![
            0x92, 0x02, 0x83, 0xa6, b's', b'u', b'b', b'_', b'i', b'd', 0xa1, b'a', 0xa7, b'f', b'i', b'l', b't', b'e',
            b'r', b's', 0x91, 0x80, 0xa9, b'a', b'f', b't', b'e', b'r', b'_', b's', b'e', b'q', 0xff,
        ], // after_seq -1
        vec![0x92, 0x02, 0xc7, 0x01, 0x05, 0x00],       // ext payload
        vec![0xc1],
    ];
    (0..count)
        .map(|index| match index % 4 {
            0 => nasties[index / 4 % nasties.len()].clone(),
            1 => (0..rng.gen_range(0..200)).map(|_| rng.gen()).collect(),
            _ => {
                let mut bytes = valid[index % valid.len()].clone();
                match rng.gen_range(0..3) {
                    0 => bytes.truncate(rng.gen_range(0..bytes.len())),
                    1 => {
                        for _ in 0..rng.gen_range(1..6) {
                            let at = rng.gen_range(0..bytes.len());
                            bytes[at] = rng.gen();
                        }
                    }
                    _ => {
                        let at = rng.gen_range(0..bytes.len());
                        bytes.insert(at, rng.gen());
                    }
                }
                bytes
            }
        })
        .collect()
}

/// A fuzz smoke test: a few thousand malformed frames, pipelined, from authenticated and
/// unauthenticated connections; the relay answers each with at most one ERROR, keeps the
/// connections that sent them, and a good client's publish and subscription round trip.
#[tokio::test]
async fn thousands_of_malformed_frames_leave_the_relay_serving() {
    use axon_relay::protocol::frame::encode_publish_frame;
    use axon_relay::protocol::Frame;
    use futures_util::{SinkExt, StreamExt};
    use rand::SeedableRng;
    use tokio_tungstenite::tungstenite::Message;
    let relay = TestRelay::start().await;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x0159);
    let frames = malformed_frames(&mut rng, 3000);
    // Before AUTH: one malformed frame each → 401 and close 1008.
    for bytes in frames.iter().take(20) {
        let (mut socket, _) = raw_connect(&relay).await;
        send_raw(&mut socket, bytes.clone()).await;
        expect_error(&mut socket, 401).await;
        expect_close(&mut socket, 1008).await;
    }
    // After AUTH: all of them pipelined, then a probe publish; read everything up to its OK.
    let socket = raw_authed(&relay, &alice()).await;
    let (mut sink, mut stream) = socket.split();
    let probe = event(&alice(), 1000, "probe after the fuzz", vec![]);
    let sending = {
        let frames = frames.clone();
        let probe = encode_publish_frame(&probe.encode());
        tokio::spawn(async move {
            for bytes in frames.into_iter().chain([probe]) {
                sink.send(Message::Binary(bytes)).await.expect("the relay keeps reading");
            }
            sink
        })
    };
    let mut errors = 0;
    loop {
        let message = tokio::time::timeout(Duration::from_secs(30), stream.next()).await.expect("replies keep coming");
        let Some(Ok(Message::Binary(bytes))) = message else {
            match message {
                Some(Ok(Message::Ping(_))) => continue,
                other => panic!("the connection broke after {errors} errors: {other:?}"),
            }
        };
        match Frame::decode(&bytes.into()).expect("relay frames decode") {
            Frame::Ok(ok) if ok.id == probe.id => break,
            Frame::Error(error) => {
                assert!([400, 403, 409, 410, 413].contains(&error.code), "code {}: {}", error.code, error.message);
                errors += 1;
            }
            _ => {}
        }
    }
    let _sink = sending.await.expect("sender");
    assert!(errors <= frames.len() && errors > frames.len() / 2, "{errors} errors for {} frames", frames.len());
    // A good client: publish, then see it stored and live.
    let client = relay.connect(&bob()).await;
    let mut live =
        client.subscribe("live", vec![Filter { limit: Some(0), ..kinds(&[1001]) }], None).await.expect("sub");
    assert!(live.stored().await.expect("EOSE").is_empty());
    let good = event(&bob(), 1001, "still fine", vec![]);
    let seq = client.publish(&good).await.expect("publish").expect("seq");
    let (delivered, delivered_seq) = next_event(&mut live).await;
    assert_eq!((delivered.id, delivered_seq), (good.id, seq));
    let mut stored = client.subscribe("stored", vec![kinds(&[1001])], None).await.expect("sub");
    assert_eq!(
        stored.stored().await.expect("EOSE").into_iter().map(|(event, _)| event.id).collect::<Vec<_>>(),
        vec![good.id]
    );
}
