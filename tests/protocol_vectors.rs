//! The committed test vectors equal what the code generates, and the validator gives
//! every vector its expected outcome.

use axon_relay::protocol::event::{canonical_tags, decode_and_validate, tags_hash};
use axon_relay::protocol::{vectors, Event, Limits, Tag};
use ed25519_dalek::SigningKey;
use serde_json::Value;

fn committed(name: &str) -> String {
    let path = format!("{}/testvectors/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("cannot read {path}: {error}"))
}

fn hex_field(vector: &Value, key: &str) -> Vec<u8> {
    hex::decode(vector[key].as_str().unwrap_or_else(|| panic!("{key} missing"))).expect("hex")
}

#[test]
fn committed_valid_vectors_match_the_generator() {
    assert!(
        committed("valid.json") == vectors::valid_json(),
        "testvectors/valid.json is stale: run `axon vectors testvectors`"
    );
}

#[test]
fn committed_invalid_vectors_match_the_generator() {
    assert!(
        committed("invalid.json") == vectors::invalid_json(),
        "testvectors/invalid.json is stale: run `axon vectors testvectors`"
    );
}

#[test]
fn valid_vectors_recompute_and_validate() {
    let file: Value = serde_json::from_str(&committed("valid.json")).expect("json");
    let list = file["vectors"].as_array().expect("vectors");
    assert!(list.len() >= 12);
    for vector in list {
        let name = vector["name"].as_str().unwrap_or_default();
        let seed: [u8; 32] = hex_field(vector, "seed").try_into().expect("seed");
        let key = SigningKey::from_bytes(&seed);
        assert_eq!(key.verifying_key().to_bytes().to_vec(), hex_field(vector, "pubkey"), "{name}");
        let tags: Vec<Tag> = vector["tags"]
            .as_array()
            .expect("tags")
            .iter()
            .map(|tag| {
                let parts: Vec<String> =
                    tag.as_array().expect("tag").iter().map(|s| s.as_str().expect("str").to_owned()).collect();
                Tag::new(parts[0].clone(), parts[1..].to_vec())
            })
            .collect();
        let event = Event::sign(
            &key,
            vector["created_at"].as_u64().expect("created_at"),
            vector["kind"].as_u64().expect("kind") as u16,
            hex_field(vector, "content"),
            tags,
        )
        .expect("sign");
        assert_eq!(canonical_tags(&event.tags).expect("tags"), hex_field(vector, "canonical_tags"), "{name}");
        assert_eq!(tags_hash(&event.tags).expect("hash").to_vec(), hex_field(vector, "tags_hash"), "{name}");
        assert_eq!(
            event.unsigned().canonical_payload().expect("payload"),
            hex_field(vector, "canonical_payload"),
            "{name}"
        );
        assert_eq!(event.id.to_vec(), hex_field(vector, "id"), "{name}");
        assert_eq!(event.sig.to_vec(), hex_field(vector, "sig"), "{name}");
        assert_eq!(event.encode(), hex_field(vector, "msgpack"), "{name}");
        let decoded = decode_and_validate(&hex_field(vector, "msgpack"), &Limits::default()).expect(name);
        assert_eq!(decoded, event, "{name}");
    }
}

#[test]
fn invalid_vectors_are_rejected_with_their_codes() {
    let file: Value = serde_json::from_str(&committed("invalid.json")).expect("json");
    let list = file["vectors"].as_array().expect("vectors");
    assert!(list.len() >= 10);
    for vector in list {
        let name = vector["name"].as_str().unwrap_or_default();
        let error = decode_and_validate(&hex_field(vector, "msgpack"), &Limits::default()).expect_err(name);
        assert_eq!(error.code.as_u16() as u64, vector["code"].as_u64().expect("code"), "{name}: {error}");
    }
}

#[test]
fn small_order_vector_is_accepted_by_a_lenient_verifier() {
    // Guards the vector itself: it must fail only because verification is strict.
    let file: Value = serde_json::from_str(&committed("invalid.json")).expect("json");
    let vector = file["vectors"]
        .as_array()
        .expect("vectors")
        .iter()
        .find(|v| v["name"] == "small-order-pubkey")
        .expect("present");
    let event = Event::decode(&hex_field(vector, "msgpack")).expect("decodes");
    event.check_fields(&Limits::default()).expect("fields ok");
    event.check_id().expect("id ok");
    use ed25519_dalek::Verifier;
    let key = ed25519_dalek::VerifyingKey::from_bytes(&event.pubkey).expect("point");
    key.verify(&event.id, &ed25519_dalek::Signature::from_bytes(&event.sig)).expect("lenient verify accepts");
    assert!(event.verify_signature().is_err());
}
