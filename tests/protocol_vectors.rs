//! The committed test vectors equal what the code generates, and the validator gives
//! every vector its expected outcome.

use axon_relay::protocol::event::{canonical_tags, decode_and_validate, tags_hash};
use axon_relay::protocol::{signature, vectors, Event, Limits, Tag};
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

fn signature_vectors() -> Vec<Value> {
    let file: Value = serde_json::from_str(&committed("signatures.json")).expect("json");
    file["vectors"].as_array().expect("vectors").clone()
}

fn signature_vector(name: &str) -> Event {
    let vector = signature_vectors().into_iter().find(|v| v["name"] == name).expect("present");
    Event::decode(&hex_field(&vector, "msgpack")).expect("decodes")
}

#[test]
fn committed_signature_vectors_match_the_generator() {
    assert!(
        committed("signatures.json") == vectors::signatures_json(),
        "testvectors/signatures.json is stale: run `axon vectors testvectors`"
    );
}

#[test]
fn signature_vectors_get_their_verdicts_singly_and_in_a_batch() {
    let list = signature_vectors();
    assert!(list.len() >= 8);
    let invalid: Value = serde_json::from_str(&committed("invalid.json")).expect("json");
    let mut events = Vec::new();
    for vector in &list {
        let name = vector["name"].as_str().unwrap_or_default();
        let event = Event::decode(&hex_field(vector, "msgpack")).expect(name);
        assert_eq!(event.pubkey.to_vec(), hex_field(vector, "pubkey"), "{name}");
        assert_eq!(event.id.to_vec(), hex_field(vector, "message"), "{name}");
        assert_eq!(event.sig.to_vec(), hex_field(vector, "sig"), "{name}");
        // The id is correct, so only the signature rule can decide.
        event.check_fields(&Limits::default()).expect(name);
        event.check_id().expect(name);
        let valid = vector["valid"].as_bool().expect("valid");
        assert_eq!(event.verify_signature().is_ok(), valid, "{name}: {:?}", event.verify_signature());
        assert_eq!(signature::verify_single(&event.pubkey, &event.id, &event.sig).is_ok(), valid, "{name}");
        let in_invalid = invalid["vectors"].as_array().expect("vectors").iter().any(|v| v["name"] == name);
        assert_eq!(in_invalid, !valid, "{name}: every invalid signature vector is also in invalid.json");
        events.push((event, valid));
    }
    let items: Vec<signature::Signed> = events
        .iter()
        .map(|(event, _)| signature::Signed { pubkey: &event.pubkey, message: &event.id, signature: &event.sig })
        .collect();
    let verdicts = signature::verify_batch(&items);
    for ((event, valid), verdict) in events.iter().zip(verdicts) {
        assert_eq!(verdict.is_ok(), *valid, "{}", String::from_utf8_lossy(&event.content));
    }
}

#[test]
fn torsion_vector_fails_the_cofactorless_check() {
    use ed25519_dalek::Verifier;
    let event = signature_vector("torsion-r");
    assert!(event.verify_signature().is_ok());
    let key = ed25519_dalek::VerifyingKey::from_bytes(&event.pubkey).expect("point");
    let sig = ed25519_dalek::Signature::from_bytes(&event.sig);
    assert!(key.verify_strict(&event.id, &sig).is_err(), "dalek verify_strict (cofactorless) rejects it");
    assert!(key.verify(&event.id, &sig).is_err(), "dalek verify (cofactorless) rejects it");
}

/// The cofactored equation over leniently decoded points (dalek's decompress reduces y mod p
/// and ignores the sign of x = 0) and S reduced mod ℓ.
fn lenient_cofactored_equation_holds(event: &Event) -> bool {
    use curve25519_dalek::edwards::CompressedEdwardsY;
    use curve25519_dalek::scalar::Scalar;
    use curve25519_dalek::traits::IsIdentity;
    use sha2::Digest;
    let decode = |bytes: &[u8]| CompressedEdwardsY(bytes.try_into().expect("32 bytes")).decompress().expect("decodes");
    let a = decode(&event.pubkey);
    let r = decode(&event.sig[..32]);
    let s = Scalar::from_bytes_mod_order(event.sig[32..].try_into().expect("32 bytes"));
    let hash = sha2::Sha512::new().chain_update(&event.sig[..32]).chain_update(event.pubkey).chain_update(event.id);
    let k = Scalar::from_bytes_mod_order_wide(&hash.finalize().into());
    (curve25519_dalek::constants::ED25519_BASEPOINT_POINT * s - r - a * k).mul_by_cofactor().is_identity()
}

#[test]
fn invalid_signature_vectors_break_only_the_clauses_they_name() {
    // These satisfy the cofactored equation over the decoded points: a lenient (ZIP-215
    // style) verifier accepts them, so each is rejected for its encoding or small order.
    for name in ["small-order-r", "non-canonical-r", "non-canonical-a"] {
        let event = signature_vector(name);
        assert!(lenient_cofactored_equation_holds(&event), "{name}");
        assert!(event.verify_signature().is_err(), "{name}");
    }
    let file: Value = serde_json::from_str(&committed("invalid.json")).expect("json");
    let vector = file["vectors"].as_array().expect("vectors").iter().find(|v| v["name"] == "non-canonical-s").cloned();
    let event = Event::decode(&hex_field(&vector.expect("present"), "msgpack")).expect("decodes");
    assert!(lenient_cofactored_equation_holds(&event), "S + ℓ reduces to a valid S");
    // The remaining ones cannot satisfy the equation (that would take a discrete log).
    for name in ["non-canonical-r-y-above-p", "non-canonical-a-y-above-p", "s-equals-l"] {
        let event = signature_vector(name);
        assert!(!lenient_cofactored_equation_holds(&event), "{name}");
        assert!(event.verify_signature().is_err(), "{name}");
    }
}
