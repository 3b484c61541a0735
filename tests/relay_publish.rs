//! Publishing (spec §8) with validation (§3), meaningful tags (§4), kinds (§5) and
//! frame handling after AUTH (§6), checked over real sockets.

mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use axon_relay::client::SubItem;
use axon_relay::protocol::frame::{encode_publish_frame, ErrorMessage};
use axon_relay::protocol::{Event, Filter, Frame, Tag};
use common::*;
use ed25519_dalek::{Signer, SigningKey};
use futures_util::SinkExt;
use tokio_tungstenite::tungstenite::Message;

// ---------------------------------------------------------------- helpers

/// The next frame, skipping keep-alive pings; panics on close or disconnect.
async fn next_frame(socket: &mut Raw) -> Frame {
    loop {
        match raw_frame(socket).await {
            RawItem::Frame(frame) => return frame,
            RawItem::Ping => continue,
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

async fn publish(socket: &mut Raw, event: &Event) {
    publish_bytes(socket, &event.encode()).await;
}

async fn publish_bytes(socket: &mut Raw, raw_event: &[u8]) {
    send_raw(socket, encode_publish_frame(raw_event)).await;
}

/// Expects OK for `id`; returns its seq.
async fn expect_ok(socket: &mut Raw, id: [u8; 32]) -> Option<u64> {
    match next_frame(socket).await {
        Frame::Ok(ok) => {
            assert_eq!(hex::encode(ok.id), hex::encode(id), "OK names the published event");
            ok.seq
        }
        other => panic!("expected OK, got {other:?}"),
    }
}

/// Expects ERROR `code` naming `id` (or naming no event when `id` is None).
async fn expect_rejected(socket: &mut Raw, code: u16, id: Option<[u8; 32]>) -> ErrorMessage {
    let error = expect_error(socket, code).await;
    assert_eq!(error.id.map(hex::encode), id.map(hex::encode), "ERROR id ({})", error.message);
    error
}

/// Publishes `event` and expects ERROR `code` naming it.
async fn publish_rejected(socket: &mut Raw, event: &Event, code: u16) -> ErrorMessage {
    publish(socket, event).await;
    expect_rejected(socket, code, Some(event.id)).await
}

/// Publishes `event` and expects OK; returns its seq.
async fn publish_ok(socket: &mut Raw, event: &Event) -> Option<u64> {
    publish(socket, event).await;
    expect_ok(socket, event.id).await
}

/// Checks the connection still works: a fresh event gets OK with a seq.
async fn assert_usable(socket: &mut Raw) {
    let probe = event(&alice(), 1000, &format!("probe {}", rand_suffix()), vec![]);
    let seq = publish_ok(socket, &probe).await;
    assert!(seq.is_some_and(|seq| seq > 0), "stored event OK carries a seq");
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static NEXT: AtomicU64 = AtomicU64::new(0);
    NEXT.fetch_add(1, Ordering::Relaxed)
}

/// A MessagePack value for hand-built event maps.
enum V<'a> {
    Bin(&'a [u8]),
    Str(&'a str),
    Uint(u64),
    Tags(&'a [Tag]),
}

fn write_value(out: &mut Vec<u8>, value: &V<'_>) {
    match value {
        V::Bin(bytes) => {
            rmp::encode::write_bin(out, bytes).unwrap();
        }
        V::Str(text) => rmp::encode::write_str(out, text).unwrap(),
        V::Uint(number) => {
            rmp::encode::write_uint(out, *number).unwrap();
        }
        V::Tags(tags) => {
            rmp::encode::write_array_len(out, tags.len() as u32).unwrap();
            for tag in tags.iter() {
                rmp::encode::write_map_len(out, 2).unwrap();
                rmp::encode::write_str(out, "name").unwrap();
                rmp::encode::write_str(out, &tag.name).unwrap();
                rmp::encode::write_str(out, "values").unwrap();
                rmp::encode::write_array_len(out, tag.values.len() as u32).unwrap();
                for value in &tag.values {
                    rmp::encode::write_str(out, value).unwrap();
                }
            }
        }
    }
}

/// A MessagePack map from (key, value) pairs, in the given order.
fn map(entries: &[(&str, V<'_>)]) -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_map_len(&mut out, entries.len() as u32).unwrap();
    for (key, value) in entries {
        rmp::encode::write_str(&mut out, key).unwrap();
        write_value(&mut out, value);
    }
    out
}

/// `[type, payload]` with an already-encoded payload.
fn frame_bytes(frame_type: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_array_len(&mut out, 2).unwrap();
    rmp::encode::write_uint(&mut out, frame_type).unwrap();
    out.extend_from_slice(payload);
    out
}

/// An event with the given (unchecked) fields: `id` and `sig` as given.
fn forged(key: &SigningKey, id: [u8; 32], sig: [u8; 64], created_at: u64, kind: u16, tags: Vec<Tag>) -> Event {
    Event { id, pubkey: key.verifying_key().to_bytes(), created_at, kind, content: b"forged".to_vec(), sig, tags }
}

fn stored_filter() -> Vec<Filter> {
    vec![Filter::default()]
}

// ---------------------------------------------------------------- validation (§3)

#[tokio::test]
async fn malformed_event_is_400_naming_the_id_when_readable() {
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    let good = event(&alice(), 1000, "x", vec![]);
    let now = good.created_at;
    // `content` as str instead of bin; `id` deliberately last so it is found after a skip.
    let bytes = map(&[
        ("pubkey", V::Bin(&good.pubkey)),
        ("created_at", V::Uint(now)),
        ("kind", V::Uint(1000)),
        ("content", V::Str("x")),
        ("sig", V::Bin(&good.sig)),
        ("tags", V::Tags(&[])),
        ("id", V::Bin(&good.id)),
    ]);
    publish_bytes(&mut socket, &bytes).await;
    expect_rejected(&mut socket, 400, Some(good.id)).await;

    // A missing key (no tags).
    let bytes = map(&[
        ("id", V::Bin(&good.id)),
        ("pubkey", V::Bin(&good.pubkey)),
        ("created_at", V::Uint(now)),
        ("kind", V::Uint(1000)),
        ("content", V::Bin(b"x")),
        ("sig", V::Bin(&good.sig)),
    ]);
    publish_bytes(&mut socket, &bytes).await;
    expect_rejected(&mut socket, 400, Some(good.id)).await;

    // An unknown eighth key.
    let bytes = map(&[
        ("id", V::Bin(&good.id)),
        ("pubkey", V::Bin(&good.pubkey)),
        ("created_at", V::Uint(now)),
        ("kind", V::Uint(1000)),
        ("content", V::Bin(b"x")),
        ("sig", V::Bin(&good.sig)),
        ("tags", V::Tags(&[])),
        ("extra", V::Uint(1)),
    ]);
    publish_bytes(&mut socket, &bytes).await;
    expect_rejected(&mut socket, 400, Some(good.id)).await;

    // A 31-byte pubkey.
    let bytes = map(&[
        ("id", V::Bin(&good.id)),
        ("pubkey", V::Bin(&good.pubkey[..31])),
        ("created_at", V::Uint(now)),
        ("kind", V::Uint(1000)),
        ("content", V::Bin(b"x")),
        ("sig", V::Bin(&good.sig)),
        ("tags", V::Tags(&[])),
    ]);
    publish_bytes(&mut socket, &bytes).await;
    expect_rejected(&mut socket, 400, Some(good.id)).await;

    // Not a map at all: no id can be read.
    let mut not_a_map = Vec::new();
    rmp::encode::write_uint(&mut not_a_map, 5).unwrap();
    publish_bytes(&mut socket, &not_a_map).await;
    expect_rejected(&mut socket, 400, None).await;

    // The same event, well formed, is still accepted afterwards.
    publish_ok(&mut socket, &good).await;
}

#[tokio::test]
async fn wrong_id_is_400() {
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    let good = event(&alice(), 1000, "x", vec![]);
    let mut wrong_id = good.id;
    wrong_id[0] ^= 1;
    // Signed correctly over the wrong id, so only the id rule is broken.
    let bad = Event { id: wrong_id, sig: alice().sign(&wrong_id).to_bytes(), ..good };
    publish_rejected(&mut socket, &bad, 400).await;
    assert_usable(&mut socket).await;
}

#[tokio::test]
async fn bad_signature_is_400() {
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    let good = event(&alice(), 1000, "x", vec![]);
    let by_bob = Event { sig: bob().sign(&good.id).to_bytes(), ..good.clone() };
    publish_rejected(&mut socket, &by_bob, 400).await;
    let mut flipped = good.clone();
    flipped.sig[63] ^= 0x40;
    publish_rejected(&mut socket, &flipped, 400).await;
    publish_ok(&mut socket, &good).await;
}

#[tokio::test]
async fn content_over_limit_is_413() {
    let relay = TestRelay::start_with(|config| config.limits.max_content_bytes = 1024).await;
    let mut socket = raw_authed(&relay, &alice()).await;
    let over = Event::sign(&alice(), now(), 1000, vec![b'a'; 1025], vec![]).unwrap();
    publish_rejected(&mut socket, &over, 413).await;
    let at_limit = Event::sign(&alice(), now(), 1000, vec![b'a'; 1024], vec![]).unwrap();
    publish_ok(&mut socket, &at_limit).await;
}

#[tokio::test]
async fn duplicate_tags_are_400() {
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    let cases = [
        vec![Tag::new("t", ["1"]), Tag::new("t", ["1", "other"])],
        vec![Tag::new::<_, String>("t", []), Tag::new::<_, String>("t", [])],
    ];
    for tags in cases {
        // The id cannot be computed for such tags; sign some id so only duplicates are wrong.
        let id = [0x5a; 32];
        let bad = forged(&alice(), id, alice().sign(&id).to_bytes(), now(), 1000, tags);
        publish_rejected(&mut socket, &bad, 400).await;
    }
    // Same name, different first values, and a value-less one: legal.
    let fine = event(&alice(), 1000, "x", vec![tag("t", "1"), tag("t", "2"), Tag::new::<_, String>("t", [])]);
    publish_ok(&mut socket, &fine).await;
}

// ---------------------------------------------------------------- author and kind (§8, §5)

#[tokio::test]
async fn event_by_author_not_allowed_is_403() {
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    let by_mallory = event(&mallory(), 1000, "let me in", vec![]);
    publish_rejected(&mut socket, &by_mallory, 403).await;
    assert_usable(&mut socket).await;
}

#[tokio::test]
async fn event_by_another_allowed_author_is_accepted() {
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    let by_bob = event(&bob(), 1000, "relayed for bob", vec![]);
    assert!(publish_ok(&mut socket, &by_bob).await.is_some());
    let by_admin = event(&admin(), 1000, "relayed for admin", vec![]);
    assert!(publish_ok(&mut socket, &by_admin).await.is_some());
}

#[tokio::test]
async fn admin_kind_needs_an_admin_author() {
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    for kind in [9000, 9050, 9099] {
        let by_alice = event(&alice(), kind, "", vec![tag("p", &hex_of(&bob()))]);
        publish_rejected(&mut socket, &by_alice, 403).await;
    }
    // 9100 is outside the admin range.
    assert!(publish_ok(&mut socket, &event(&alice(), 9100, "", vec![])).await.is_some());
    // An admin-authored admin event is accepted, even from a non-admin connection.
    let by_admin = event(&admin(), 9050, "note", vec![]);
    assert!(publish_ok(&mut socket, &by_admin).await.is_some());
    let mut admin_socket = raw_authed(&relay, &admin()).await;
    let by_admin = event(&admin(), 9050, "note 2", vec![]);
    assert!(publish_ok(&mut admin_socket, &by_admin).await.is_some());
}

// ---------------------------------------------------------------- expires_at and skew (§4, §8)

#[tokio::test]
async fn malformed_expires_at_is_400() {
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    let future = (now() + 3600).to_string();
    for bad in ["abc", "+5", "-5", "", " 5", "5.0", "1e9", &format!("+{future}")] {
        let bad_event = event(&alice(), 1000, bad, vec![tag("expires_at", bad)]);
        let error = publish_rejected(&mut socket, &bad_event, 400).await;
        assert!(!error.message.is_empty(), "{bad:?}");
    }
    let no_value = event(&alice(), 5000, "no value", vec![Tag::new::<_, String>("expires_at", [])]);
    publish_rejected(&mut socket, &no_value, 400).await;
}

#[tokio::test]
async fn expires_at_in_the_past_is_410() {
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    for kind in [1000, 5000] {
        let past = event(&alice(), kind, "old", vec![tag("expires_at", &(now() - 10).to_string())]);
        publish_rejected(&mut socket, &past, 410).await;
        // ≤ the relay's clock is expired: the relay's clock is never behind ours.
        let at_now = event(&alice(), kind, "now", vec![tag("expires_at", &now().to_string())]);
        publish_rejected(&mut socket, &at_now, 410).await;
    }
}

#[tokio::test]
async fn expires_at_in_the_future_is_accepted() {
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    for kind in [1000, 5000] {
        let future = event(&alice(), kind, "later", vec![tag("expires_at", &(now() + 3600).to_string())]);
        assert!(publish_ok(&mut socket, &future).await.is_some());
    }
}

#[tokio::test]
async fn created_at_too_far_in_the_future_is_400() {
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    let skew = relay.config.limits.max_future_skew_secs;
    assert_eq!(skew, 900, "spec default");
    let far = event_at(&alice(), 1000, now() + skew + 60, "far", vec![]);
    publish_rejected(&mut socket, &far, 400).await;
}

#[tokio::test]
async fn created_at_within_skew_is_accepted() {
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    let soon = event_at(&alice(), 1000, now() + 60, "soon", vec![]);
    assert!(publish_ok(&mut socket, &soon).await.is_some());
    // Exactly at the allowed skew: not *more* than the skew (the relay's clock is never behind ours).
    let edge = event_at(&alice(), 1000, now() + 900, "edge", vec![]);
    assert!(publish_ok(&mut socket, &edge).await.is_some());
    // The past is always fine.
    let old = event_at(&alice(), 1000, 1, "old", vec![]);
    assert!(publish_ok(&mut socket, &old).await.is_some());
}

#[tokio::test]
async fn configured_skew_is_honoured() {
    let relay = TestRelay::start_with(|config| config.limits.max_future_skew_secs = 10).await;
    let mut socket = raw_authed(&relay, &alice()).await;
    publish_rejected(&mut socket, &event_at(&alice(), 1000, now() + 60, "x", vec![]), 400).await;
    assert!(publish_ok(&mut socket, &event_at(&alice(), 1000, now() + 5, "y", vec![])).await.is_some());
}

// ---------------------------------------------------------------- storage (§8)

#[tokio::test]
async fn duplicate_publish_is_409() {
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    let once = event(&alice(), 1000, "once", vec![]);
    assert!(publish_ok(&mut socket, &once).await.is_some());
    publish_rejected(&mut socket, &once, 409).await;
    // Also from another connection.
    let mut other = raw_authed(&relay, &bob()).await;
    publish_rejected(&mut other, &once, 409).await;
    // Stored exactly once.
    let client = relay.connect(&bob()).await;
    let mut subscription = client.subscribe("s", stored_filter(), None).await.unwrap();
    let stored = subscription.stored().await.unwrap();
    assert_eq!(stored.iter().filter(|(event, _)| event.id == once.id).count(), 1);
}

#[tokio::test]
async fn ephemeral_event_is_fanned_out_not_stored() {
    let relay = TestRelay::start().await;
    let listener = relay.connect(&bob()).await;
    let filter = vec![Filter { kinds: Some(vec![3000]), ..Filter::default() }];
    let mut live = listener.subscribe("live", filter.clone(), None).await.unwrap();
    assert_eq!(live.stored().await.unwrap(), vec![]);

    let mut socket = raw_authed(&relay, &alice()).await;
    let progress = event(&alice(), 3000, "50%", vec![]);
    let seq = publish_ok(&mut socket, &progress).await;
    assert!(matches!(seq, None | Some(0)), "ephemeral OK has no seq (or 0), got {seq:?}");
    let (received, received_seq) = next_event(&mut live).await;
    assert_eq!(received, progress);
    assert_eq!(received_seq, 0);

    // A later subscription's stored phase does not return it, in either mode.
    let mut later = listener.subscribe("later", filter.clone(), None).await.unwrap();
    assert_eq!(later.stored().await.unwrap(), vec![]);
    let mut replay = listener.subscribe("replay", filter, Some(0)).await.unwrap();
    assert_eq!(replay.stored().await.unwrap(), vec![]);
    // Ephemeral events are never stored, so publishing it again is not a duplicate.
    let again = publish_ok(&mut socket, &progress).await;
    assert!(matches!(again, None | Some(0)));
}

#[tokio::test]
async fn ok_seq_strictly_increases() {
    let relay = TestRelay::start().await;
    let mut alice_socket = raw_authed(&relay, &alice()).await;
    let mut bob_socket = raw_authed(&relay, &bob()).await;
    let mut last = 0;
    for i in 0..10 {
        let socket = if i % 2 == 0 { &mut alice_socket } else { &mut bob_socket };
        let published = event(&alice(), 1000, &format!("n{i}"), vec![]);
        let seq = publish_ok(socket, &published).await.expect("a stored event's OK carries a seq");
        assert!(seq > last, "seq {seq} after {last}");
        last = seq;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_pipelined_publish_gets_exactly_one_reply() {
    const N: usize = 200;
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    let events: Vec<Event> = (0..N).map(|i| event(&alice(), 1000, &format!("pipelined {i}"), vec![])).collect();
    // A few of them are bad, interleaved, so errors and OKs mix.
    let rejected: Vec<Event> = (0..10).map(|i| event(&mallory(), 1000, &format!("bad {i}"), vec![])).collect();
    for (i, published) in events.iter().enumerate() {
        socket.feed(Message::Binary(encode_publish_frame(&published.encode()))).await.unwrap();
        if i % 20 == 0 {
            let bad = &rejected[i / 20];
            socket.feed(Message::Binary(encode_publish_frame(&bad.encode()))).await.unwrap();
        }
    }
    socket.flush().await.unwrap();

    let mut oks: HashMap<[u8; 32], u64> = HashMap::new();
    let mut errors: HashSet<[u8; 32]> = HashSet::new();
    for _ in 0..N + rejected.len() {
        match next_frame(&mut socket).await {
            Frame::Ok(ok) => {
                let seq = ok.seq.expect("seq");
                assert!(oks.insert(ok.id, seq).is_none(), "two OKs for one event");
            }
            Frame::Error(error) => {
                assert_eq!(error.code, 403);
                assert!(errors.insert(error.id.expect("id")), "two ERRORs for one event");
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    let expected: HashSet<[u8; 32]> = events.iter().map(|event| event.id).collect();
    assert_eq!(oks.keys().copied().collect::<HashSet<_>>(), expected);
    assert_eq!(errors, rejected.iter().map(|event| event.id).collect());
    let seqs: HashSet<u64> = oks.values().copied().collect();
    assert_eq!(seqs.len(), N, "distinct seqs");
    // Nothing else is pending: the next reply is the sentinel's.
    let sentinel = event(&alice(), 1000, "sentinel", vec![]);
    let sentinel_seq = publish_ok(&mut socket, &sentinel).await.unwrap();
    assert!(seqs.iter().all(|seq| *seq < sentinel_seq));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_client_publishes_get_distinct_seqs() {
    let relay = TestRelay::start().await;
    let client = relay.connect(&alice()).await;
    let events: Vec<Event> = (0..100).map(|i| event(&alice(), 1000, &format!("c{i}"), vec![])).collect();
    let replies = futures_util::future::join_all(events.iter().map(|event| client.publish(event))).await;
    let seqs: HashSet<u64> = replies.into_iter().map(|reply| reply.expect("OK").expect("seq")).collect();
    assert_eq!(seqs.len(), events.len());
}

// ---------------------------------------------------------------- frames after AUTH (§6)

#[tokio::test]
async fn garbage_frame_after_auth_is_400_and_connection_stays_open() {
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    send_raw(&mut socket, vec![0xc1, 0xff, 0x00, 0x13]).await;
    expect_rejected(&mut socket, 400, None).await;
    send_raw(&mut socket, vec![]).await;
    expect_rejected(&mut socket, 400, None).await;
    assert_usable(&mut socket).await;
}

#[tokio::test]
async fn text_message_after_auth_is_400_and_connection_stays_open() {
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    socket.send(Message::Text("[4, {}]".into())).await.unwrap();
    expect_rejected(&mut socket, 400, None).await;
    assert_usable(&mut socket).await;
}

#[tokio::test]
async fn unknown_frame_type_is_400() {
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    for frame_type in [0, 5, 9, 15, 99, 300] {
        send_raw(&mut socket, frame_bytes(frame_type, &map(&[]))).await;
        expect_rejected(&mut socket, 400, None).await;
    }
    assert_usable(&mut socket).await;
}

#[tokio::test]
async fn relay_frame_type_sent_by_client_is_400() {
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    let frames = [
        Frame::Eose { sub_id: "s".into() }.encode(),
        Frame::Challenge { nonce: [1; 32] }.encode(),
        frame_bytes(13, &map(&[("id", V::Bin(&[2; 32]))])),
        frame_bytes(14, &map(&[("code", V::Uint(400)), ("message", V::Str("x"))])),
    ];
    for bytes in frames {
        send_raw(&mut socket, bytes).await;
        expect_rejected(&mut socket, 400, None).await;
    }
    assert_usable(&mut socket).await;
}

#[tokio::test]
async fn payload_of_wrong_shape_is_400() {
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    let frames = [
        frame_bytes(4, &map(&[])),                        // PUBLISH without event
        frame_bytes(3, &map(&[("sub_id", V::Uint(5))])),  // sub_id not a str
        frame_bytes(2, &map(&[("sub_id", V::Str("s"))])), // SUBSCRIBE without filters
        frame_bytes(4, &[0x90]),                          // payload not a map
    ];
    for bytes in frames {
        send_raw(&mut socket, bytes).await;
        let error = expect_error(&mut socket, 400).await;
        assert_eq!(error.id, None);
    }
    assert_usable(&mut socket).await;
}

#[tokio::test]
async fn message_over_frame_limit_closes_1009() {
    let relay = TestRelay::start_with(|config| config.limits.max_frame_bytes = 4096).await;
    let mut socket = raw_authed(&relay, &alice()).await;
    // Just under the limit is fine.
    let fits = Event::sign(&alice(), now(), 1000, vec![b'a'; 3800], vec![]).unwrap();
    let frame = encode_publish_frame(&fits.encode());
    assert!(frame.len() <= 4096, "{}", frame.len());
    send_raw(&mut socket, frame).await;
    expect_ok(&mut socket, fits.id).await;
    // Over it closes the connection.
    let too_big = Event::sign(&alice(), now(), 1000, vec![b'a'; 5000], vec![]).unwrap();
    publish(&mut socket, &too_big).await;
    expect_close(&mut socket, 1009).await;
}

// ---------------------------------------------------------------- validation order (§3, §8)

#[tokio::test]
async fn bad_signature_wins_over_unauthorised_author() {
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    let good = event(&mallory(), 1000, "x", vec![]);
    let mut bad = good.clone();
    bad.sig[0] ^= 1;
    publish_rejected(&mut socket, &bad, 400).await;
}

#[tokio::test]
async fn expired_wins_over_future_created_at() {
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    let both = event_at(&alice(), 1000, now() + 100_000, "x", vec![tag("expires_at", &(now() - 10).to_string())]);
    publish_rejected(&mut socket, &both, 410).await;
}

#[tokio::test]
async fn content_size_wins_over_bad_signature() {
    let relay = TestRelay::start_with(|config| config.limits.max_content_bytes = 1024).await;
    let mut socket = raw_authed(&relay, &alice()).await;
    let mut both = Event::sign(&alice(), now(), 1000, vec![b'a'; 2000], vec![]).unwrap();
    both.sig[0] ^= 1;
    publish_rejected(&mut socket, &both, 413).await;
}

#[tokio::test]
async fn duplicate_tags_win_over_wrong_id() {
    // Both break §3; duplicate tags are checked first, but both are 400 — this pins the code.
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    let id = [7; 32];
    let bad = forged(&alice(), id, [0; 64], now(), 1000, vec![tag("a", "1"), tag("a", "1")]);
    publish_rejected(&mut socket, &bad, 400).await;
}

#[tokio::test]
async fn author_then_kind_then_expiry_order() {
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    let past = (now() - 10).to_string();
    let mallory_admin = event(&mallory(), 9050, "x", vec![tag("expires_at", &past)]);
    publish_rejected(&mut socket, &mallory_admin, 403).await;
    // Kind rule (403) before expires_at (410).
    let alice_admin = event(&alice(), 9050, "x", vec![tag("expires_at", &past)]);
    publish_rejected(&mut socket, &alice_admin, 403).await;
    // Kind rule (403) before a malformed expires_at (400).
    let alice_admin_bad_expiry = event(&alice(), 9050, "y", vec![tag("expires_at", "soon")]);
    publish_rejected(&mut socket, &alice_admin_bad_expiry, 403).await;
    // For an admin author the expiry rules then apply.
    publish_rejected(&mut socket, &event(&admin(), 9050, "z", vec![tag("expires_at", "soon")]), 400).await;
    publish_rejected(&mut socket, &event(&admin(), 9050, "z", vec![tag("expires_at", &past)]), 410).await;
}

#[tokio::test]
async fn expired_duplicate_is_410_not_409() {
    // expires_at (410) is checked before the duplicate check (409): re-publishing a stored
    // event that has since expired gets 410.
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    let expires = now() + 2;
    let short = event(&alice(), 1000, "short-lived", vec![tag("expires_at", &expires.to_string())]);
    assert!(publish_ok(&mut socket, &short).await.is_some());
    while now() < expires {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    publish_rejected(&mut socket, &short, 410).await;
}

#[tokio::test]
async fn live_subscriber_gets_every_accepted_event_and_no_rejected_one() {
    let relay = TestRelay::start().await;
    let listener = relay.connect(&bob()).await;
    let mut subscription = listener.subscribe("all", stored_filter(), None).await.unwrap();
    assert_eq!(subscription.stored().await.unwrap(), vec![]);
    let mut socket = raw_authed(&relay, &alice()).await;
    publish_rejected(&mut socket, &event(&mallory(), 1000, "no", vec![]), 403).await;
    let accepted = event(&alice(), 1000, "yes", vec![]);
    let seq = publish_ok(&mut socket, &accepted).await.unwrap();
    assert_eq!(next_event(&mut subscription).await, (accepted, seq));
    match tokio::time::timeout(Duration::from_millis(300), subscription.next()).await {
        Err(_) => {}
        Ok(Some(SubItem::Event { event, .. })) => panic!("unexpected event {event:?}"),
        Ok(other) => panic!("unexpected {other:?}"),
    }
}
