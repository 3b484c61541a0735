//! Spec §3's signature rule (amended) end to end: the relay accepts a signature whose R
//! carries a torsion component, for events and for AUTH (which uses the same rule), and
//! rejects each invalid signature vector with 400 naming the clause.

mod common;

use axon_relay::protocol::frame::{encode_publish_frame, Auth};
use axon_relay::protocol::{Event, Frame};
use common::*;
use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::CompressedEdwardsY;
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::SigningKey;
use futures_util::SinkExt;
use serde_json::Value;
use sha2::{Digest, Sha256, Sha512};
use tokio_tungstenite::tungstenite::Message;

/// A point of order 8.
const ORDER_8: &str = "26e8958fc2b227b045c3f489f2ef98f0d5dfac05d3c63339b13802886d53fc05";

/// Signs `message` with R = [r]B + T (T of order 8): valid by the cofactored rule only.
fn torsion_sign(key: &SigningKey, message: &[u8]) -> [u8; 64] {
    let r = Scalar::from_bytes_mod_order_wide(
        &Sha512::new().chain_update(b"nonce").chain_update(message).finalize().into(),
    );
    let torsion: [u8; 32] = hex::decode(ORDER_8).expect("hex").try_into().expect("32 bytes");
    let torsion = CompressedEdwardsY(torsion).decompress().expect("a point");
    let r_bytes = (ED25519_BASEPOINT_POINT * r + torsion).compress().0;
    let pubkey = key.verifying_key().to_bytes();
    let hash = Sha512::new().chain_update(r_bytes).chain_update(pubkey).chain_update(message).finalize();
    let s = r + Scalar::from_bytes_mod_order_wide(&hash.into()) * key.to_scalar();
    let mut sig = [0u8; 64];
    sig[..32].copy_from_slice(&r_bytes);
    sig[32..].copy_from_slice(&s.to_bytes());
    sig
}

async fn next_frame(socket: &mut Raw) -> Frame {
    loop {
        match raw_frame(socket).await {
            RawItem::Frame(frame) => return frame,
            RawItem::Ping => continue,
            other => panic!("expected a frame, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn torsion_component_signatures_are_accepted_for_events_and_auth() {
    let relay = TestRelay::start().await;
    let (mut socket, nonce) = raw_connect(&relay).await;
    let digest: [u8; 32] = Sha256::new().chain_update(nonce).chain_update(RELAY_URL.as_bytes()).finalize().into();
    let auth = Frame::Auth(Auth { pubkey: alice().verifying_key().to_bytes(), sig: torsion_sign(&alice(), &digest) });
    socket.send(Message::Binary(auth.encode())).await.expect("send auth");
    assert!(matches!(next_frame(&mut socket).await, Frame::Ok(_)), "AUTH with a torsion-component R");

    let mut event = event(&alice(), 1000, "torsion", vec![]);
    event.sig = torsion_sign(&alice(), &event.id);
    let key = ed25519_dalek::VerifyingKey::from_bytes(&event.pubkey).expect("key");
    assert!(key.verify_strict(&event.id, &ed25519_dalek::Signature::from_bytes(&event.sig)).is_err());
    send_raw(&mut socket, encode_publish_frame(&event.encode())).await;
    match next_frame(&mut socket).await {
        Frame::Ok(ok) => assert_eq!(ok.id, event.id),
        other => panic!("expected OK, got {other:?}"),
    }
}

#[tokio::test]
async fn invalid_signature_vectors_are_400_naming_the_clause() {
    let relay = TestRelay::start().await;
    let mut socket = raw_authed(&relay, &alice()).await;
    let path = format!("{}/testvectors/signatures.json", env!("CARGO_MANIFEST_DIR"));
    let file: Value = serde_json::from_str(&std::fs::read_to_string(path).expect("read")).expect("json");
    let mut rejected = 0;
    for vector in file["vectors"].as_array().expect("vectors") {
        if vector["valid"].as_bool().expect("valid") {
            continue;
        }
        let name = vector["name"].as_str().expect("name");
        let bytes = hex::decode(vector["msgpack"].as_str().expect("msgpack")).expect("hex");
        let event = Event::decode(&bytes).expect("decodes");
        send_raw(&mut socket, encode_publish_frame(&bytes)).await;
        let error = expect_error(&mut socket, 400).await;
        assert_eq!(error.id, Some(event.id), "{name}");
        assert!(error.message.starts_with("invalid: bad signature: "), "{name}: {}", error.message);
        rejected += 1;
    }
    assert!(rejected >= 6);
}
