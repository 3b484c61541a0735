//! Connection lifecycle and authentication (spec §7, with §6 for frames before AUTH),
//! checked byte by byte over real sockets.

mod common;

use std::time::{Duration, Instant};

use axon_relay::client::auth_frame;
use axon_relay::protocol::frame::{encode_publish_frame, Auth, Subscribe};
use axon_relay::protocol::{Filter, Frame};
use common::*;
use ed25519_dalek::Signer;
use futures_util::SinkExt;
use sha2::Digest;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

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

/// Sends AUTH and expects ERROR `code` (naming no event), then close 1008.
async fn expect_auth_refused(socket: &mut Raw, code: u16) {
    let error = expect_error(socket, code).await;
    assert_eq!(error.id, None, "an AUTH error names no event");
    expect_close(socket, 1008).await;
}

/// `[1, {"pubkey": bin(pubkey), "sig": bin(sig)}]` with arbitrary lengths.
fn auth_bytes(pubkey: &[u8], sig: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    rmp::encode::write_array_len(&mut out, 2).unwrap();
    rmp::encode::write_uint(&mut out, 1).unwrap();
    rmp::encode::write_map_len(&mut out, 2).unwrap();
    rmp::encode::write_str(&mut out, "pubkey").unwrap();
    rmp::encode::write_bin(&mut out, pubkey).unwrap();
    rmp::encode::write_str(&mut out, "sig").unwrap();
    rmp::encode::write_bin(&mut out, sig).unwrap();
    out
}

#[tokio::test]
async fn challenge_comes_first_with_32_fresh_bytes() {
    let relay = TestRelay::start().await;
    // raw_connect fails unless the first message is a CHALLENGE whose nonce is bin 32.
    let (_first, nonce_a) = raw_connect(&relay).await;
    let (_second, nonce_b) = raw_connect(&relay).await;
    assert_eq!(nonce_a.len(), 32);
    assert_ne!(nonce_a, [0u8; 32], "nonce is random");
    assert_ne!(nonce_a, nonce_b, "each connection gets a fresh nonce");
}

#[tokio::test]
async fn challenge_is_exactly_the_spec_bytes() {
    let relay = TestRelay::start().await;
    let (mut socket, _) = tokio_tungstenite::connect_async(&relay.url).await.expect("ws connect");
    let message = tokio::time::timeout(Duration::from_secs(5), futures_util::StreamExt::next(&mut socket))
        .await
        .expect("challenge within 5 s")
        .expect("open")
        .expect("message");
    let Message::Binary(bytes) = message else { panic!("CHALLENGE must be a binary message, got {message:?}") };
    // [10, {"nonce": bin8(32)}]
    let mut prefix = vec![0x92, 0x0a, 0x81, 0xa5];
    prefix.extend_from_slice(b"nonce");
    prefix.extend_from_slice(&[0xc4, 0x20]);
    assert_eq!(bytes.len(), prefix.len() + 32);
    assert_eq!(&bytes[..prefix.len()], &prefix[..]);
}

#[tokio::test]
async fn auth_over_wrong_relay_url_is_401_then_close() {
    let relay = TestRelay::start().await;
    let (mut socket, nonce) = raw_connect(&relay).await;
    let wrong = auth_frame(&alice(), &nonce, "ws://axon.test/relay/");
    send_raw(&mut socket, wrong.encode()).await;
    expect_auth_refused(&mut socket, 401).await;
}

#[tokio::test]
async fn auth_signed_by_another_key_is_401_then_close() {
    let relay = TestRelay::start().await;
    let (mut socket, nonce) = raw_connect(&relay).await;
    let Frame::Auth(by_bob) = auth_frame(&bob(), &nonce, RELAY_URL) else { unreachable!() };
    let forged = Frame::Auth(Auth { pubkey: alice().verifying_key().to_bytes(), sig: by_bob.sig });
    send_raw(&mut socket, forged.encode()).await;
    expect_auth_refused(&mut socket, 401).await;
}

#[tokio::test]
async fn auth_by_key_not_allowed_is_403_then_close() {
    let relay = TestRelay::start().await;
    let (mut socket, nonce) = raw_connect(&relay).await;
    send_raw(&mut socket, auth_frame(&mallory(), &nonce, RELAY_URL).encode()).await;
    expect_auth_refused(&mut socket, 403).await;
}

#[tokio::test]
async fn auth_success_is_ok_with_the_pubkey() {
    let relay = TestRelay::start().await;
    for key in [alice(), bob(), admin()] {
        let (mut socket, nonce) = raw_connect(&relay).await;
        send_raw(&mut socket, auth_frame(&key, &nonce, RELAY_URL).encode()).await;
        match next_frame(&mut socket).await {
            Frame::Ok(ok) => {
                assert_eq!(ok.id, key.verifying_key().to_bytes(), "OK id is the authenticated pubkey");
                assert_eq!(ok.seq, None, "an AUTH OK carries no seq");
            }
            other => panic!("expected OK, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn nonce_from_another_connection_is_401() {
    let relay = TestRelay::start().await;
    let (_first, nonce_a) = raw_connect(&relay).await;
    let (mut second, _nonce_b) = raw_connect(&relay).await;
    send_raw(&mut second, auth_frame(&alice(), &nonce_a, RELAY_URL).encode()).await;
    expect_auth_refused(&mut second, 401).await;
}

#[tokio::test]
async fn subscribe_before_auth_is_401_then_close() {
    let relay = TestRelay::start().await;
    let (mut socket, _) = raw_connect(&relay).await;
    let subscribe =
        Frame::Subscribe(Subscribe { sub_id: "s".into(), filters: vec![Filter::default()], after_seq: None });
    send_raw(&mut socket, subscribe.encode()).await;
    expect_auth_refused(&mut socket, 401).await;
}

#[tokio::test]
async fn publish_before_auth_is_401_then_close() {
    let relay = TestRelay::start().await;
    let (mut socket, _) = raw_connect(&relay).await;
    send_raw(&mut socket, encode_publish_frame(&event(&alice(), 1000, "early", vec![]).encode())).await;
    expect_auth_refused(&mut socket, 401).await;
}

#[tokio::test]
async fn text_before_auth_is_401_then_close() {
    let relay = TestRelay::start().await;
    let (mut socket, _) = raw_connect(&relay).await;
    socket.send(Message::Text("hello".into())).await.expect("send text");
    expect_auth_refused(&mut socket, 401).await;
}

#[tokio::test]
async fn undecodable_bytes_before_auth_are_401_then_close() {
    let relay = TestRelay::start().await;
    let (mut socket, _) = raw_connect(&relay).await;
    send_raw(&mut socket, vec![0xc1, 0xff, 0x00, 0x13]).await;
    expect_auth_refused(&mut socket, 401).await;
}

#[tokio::test]
async fn auth_with_31_byte_pubkey_is_401_then_close() {
    let relay = TestRelay::start().await;
    let (mut socket, nonce) = raw_connect(&relay).await;
    let Frame::Auth(good) = auth_frame(&alice(), &nonce, RELAY_URL) else { unreachable!() };
    send_raw(&mut socket, auth_bytes(&good.pubkey[..31], &good.sig)).await;
    expect_auth_refused(&mut socket, 401).await;
}

#[tokio::test]
async fn auth_with_63_byte_sig_is_401_then_close() {
    let relay = TestRelay::start().await;
    let (mut socket, nonce) = raw_connect(&relay).await;
    let Frame::Auth(good) = auth_frame(&alice(), &nonce, RELAY_URL) else { unreachable!() };
    send_raw(&mut socket, auth_bytes(&good.pubkey, &good.sig[..63])).await;
    expect_auth_refused(&mut socket, 401).await;
}

#[tokio::test]
async fn auth_signature_over_raw_nonce_without_hash_is_401() {
    // The signed message is SHA-256(nonce || relay_url), not the concatenation itself.
    let relay = TestRelay::start().await;
    let (mut socket, nonce) = raw_connect(&relay).await;
    let mut message = nonce.to_vec();
    message.extend_from_slice(RELAY_URL.as_bytes());
    let key = alice();
    let frame = Frame::Auth(Auth { pubkey: key.verifying_key().to_bytes(), sig: key.sign(&message).to_bytes() });
    send_raw(&mut socket, frame.encode()).await;
    expect_auth_refused(&mut socket, 401).await;
    // Sanity: the hashed form is what the relay accepts.
    let (mut socket, nonce) = raw_connect(&relay).await;
    let digest: [u8; 32] = sha2::Sha256::new().chain_update(nonce).chain_update(RELAY_URL).finalize().into();
    let frame = Frame::Auth(Auth { pubkey: key.verifying_key().to_bytes(), sig: key.sign(&digest).to_bytes() });
    send_raw(&mut socket, frame.encode()).await;
    assert!(matches!(next_frame(&mut socket).await, Frame::Ok(_)));
}

#[tokio::test]
async fn no_auth_within_timeout_closes_1008() {
    let relay = TestRelay::start_with(|config| config.limits.auth_timeout_secs = 1).await;
    let (mut socket, _) = raw_connect(&relay).await;
    let started = Instant::now();
    expect_close(&mut socket, 1008).await;
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(700), "closed too early: {waited:?}");
    assert!(waited < Duration::from_secs(3), "closed too late: {waited:?}");
}

#[tokio::test]
async fn second_auth_is_400_and_connection_stays_usable() {
    let relay = TestRelay::start().await;
    let (mut socket, nonce) = raw_connect(&relay).await;
    let auth = auth_frame(&alice(), &nonce, RELAY_URL).encode();
    send_raw(&mut socket, auth.clone()).await;
    assert!(matches!(next_frame(&mut socket).await, Frame::Ok(_)));
    send_raw(&mut socket, auth).await;
    let error = expect_error(&mut socket, 400).await;
    assert_eq!(error.id, None);
    let published = event(&alice(), 1000, "still here", vec![]);
    send_raw(&mut socket, encode_publish_frame(&published.encode())).await;
    match next_frame(&mut socket).await {
        Frame::Ok(ok) => {
            assert_eq!(ok.id, published.id);
            assert!(ok.seq.is_some_and(|seq| seq > 0));
        }
        other => panic!("expected OK after the refused second AUTH, got {other:?}"),
    }
}

#[tokio::test]
async fn subprotocol_is_echoed_when_offered() {
    let relay = TestRelay::start().await;
    let mut request = relay.url.as_str().into_client_request().expect("request");
    request.headers_mut().insert("Sec-WebSocket-Protocol", HeaderValue::from_static("axon.v1"));
    let (mut socket, response) = tokio_tungstenite::connect_async(request).await.expect("ws connect with axon.v1");
    assert_eq!(response.headers().get("sec-websocket-protocol").and_then(|value| value.to_str().ok()), Some("axon.v1"));
    assert!(matches!(next_frame(&mut socket).await, Frame::Challenge { .. }));

    // Not offered: nothing echoed.
    let (_socket, response) = tokio_tungstenite::connect_async(&relay.url).await.expect("ws connect");
    assert!(response.headers().get("sec-websocket-protocol").is_none());
}

#[tokio::test]
async fn connection_over_max_connections_gets_503_and_close_1013() {
    let relay = TestRelay::start_with(|config| config.limits.max_connections = 2).await;
    let first = relay.connect(&alice()).await;
    let _second = relay.connect(&bob()).await;
    let (mut third, _) = tokio_tungstenite::connect_async(&relay.url).await.expect("handshake still completes");
    let error = expect_error(&mut third, 503).await;
    assert_eq!(error.id, None);
    expect_close(&mut third, 1013).await;

    // A slot frees up once a connection goes away.
    drop(first);
    let deadline = Instant::now() + Duration::from_secs(3);
    loop {
        match relay.try_connect(&alice()).await {
            Ok(_) => break,
            Err(error) if Instant::now() < deadline => {
                let _ = error;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(error) => panic!("no slot freed after a disconnect: {error}"),
        }
    }
}

#[tokio::test]
async fn oversized_message_before_auth_closes_1009() {
    let relay = TestRelay::start_with(|config| config.limits.max_frame_bytes = 4096).await;
    let (mut socket, _) = raw_connect(&relay).await;
    send_raw(&mut socket, vec![0u8; 5000]).await;
    expect_close(&mut socket, 1009).await;
}
