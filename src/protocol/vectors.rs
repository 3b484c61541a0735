//! Test vectors of spec §13, generated from fixed seeds (Ed25519 is deterministic), so
//! `testvectors/*.json` can be regenerated and compared byte for byte.

use ed25519_dalek::{Signer, SigningKey};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::event::{canonical_tags, tags_hash, Event, Tag};

/// One valid vector: inputs and every derived field, hex-encoded.
#[derive(Serialize)]
pub struct ValidVector {
    name: &'static str,
    description: &'static str,
    seed: String,
    pubkey: String,
    created_at: u64,
    kind: u16,
    content: String,
    tags: Vec<Vec<String>>,
    canonical_tags: String,
    tags_hash: String,
    canonical_payload: String,
    id: String,
    sig: String,
    msgpack: String,
}

/// One invalid vector: event bytes and the code a relay must answer.
#[derive(Serialize)]
pub struct InvalidVector {
    name: &'static str,
    description: &'static str,
    msgpack: String,
    code: u16,
}

#[derive(Serialize)]
struct VectorFile<T> {
    version: u32,
    vectors: Vec<T>,
}

/// The inputs of a valid vector.
struct Input {
    name: &'static str,
    description: &'static str,
    created_at: u64,
    kind: u16,
    content: Vec<u8>,
    tags: Vec<Tag>,
}

fn seed_for(name: &str) -> [u8; 32] {
    Sha256::digest(format!("axon test vector seed: {name}")).into()
}

fn tag(name: &str, values: &[&str]) -> Tag {
    Tag::new(name, values.iter().copied())
}

fn inputs() -> Vec<Input> {
    let input = |name, description, created_at, kind, content: &[u8], tags| Input {
        name,
        description,
        created_at,
        kind,
        content: content.to_vec(),
        tags,
    };
    let big: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
    let p = hex::encode(SigningKey::from_bytes(&seed_for("recipient")).verifying_key().to_bytes());
    vec![
        input("no-tags", "a plain message without tags", 1_700_000_000, 1000, b"hello, axon", vec![]),
        input(
            "unicode",
            "unicode tag names and values",
            1_700_000_001,
            1000,
            "héllo wörld".as_bytes(),
            vec![tag("ключ", &["значение"]), tag("名前", &["値 🚀", "ü"])],
        ),
        input(
            "tag-without-values",
            "a tag with no values sorts before one of the same name with values",
            1_700_000_002,
            1000,
            b"x",
            vec![tag("t", &["a"]), tag("t", &[])],
        ),
        input(
            "non-canonical-wire-order",
            "tags on the wire in non-canonical order; the id uses canonical order",
            1_700_000_003,
            1000,
            b"order",
            vec![tag("z", &["1"]), tag("a", &["2"]), tag("m", &[]), tag("a", &["1"]), tag("aa", &["0"])],
        ),
        input(
            "several-values",
            "several values per tag, including an empty value, kept in the tag's own order",
            1_700_000_004,
            1000,
            b"values",
            vec![tag("e", &["v3", "v1", "v2"]), tag("r", &["", "x"])],
        ),
        input(
            "binary-content",
            "content with 0x00 bytes and invalid UTF-8",
            1_700_000_005,
            1000,
            &[0x00, 0xff, 0xfe, 0x80, 0xc3, 0x28, 0x00],
            vec![],
        ),
        input("empty-content", "zero-length content", 1_700_000_006, 1000, b"", vec![tag("t", &["empty"])]),
        input("content-65536", "content of exactly 65536 bytes (the default limit)", 1_700_000_007, 1000, &big, vec![]),
        input("created-at-zero-kind-0", "created_at 0 and kind 0 (profile)", 0, 0, b"{\"name\":\"agent\"}", vec![]),
        input(
            "created-at-2-40-kind-2999",
            "created_at 2^40 and the last DM kind",
            1 << 40,
            2999,
            b"\x01\x02",
            vec![tag("p", &[&p])],
        ),
        input(
            "kind-3000-ephemeral",
            "first ephemeral kind",
            1_700_000_008,
            3000,
            b"50%",
            vec![tag("progress", &["50"])],
        ),
        input(
            "kind-5000-job-request",
            "job request with an expires_at tag",
            1_700_000_009,
            5000,
            b"summarise",
            vec![tag("expires_at", &["1700003600"]), tag("model", &["small"])],
        ),
        input(
            "kind-9000-admin-allow",
            "admin ALLOW naming a key in a p tag",
            1_700_000_010,
            9000,
            b"",
            vec![tag("p", &[&p])],
        ),
        input("kind-65535", "the largest kind", 1_700_000_011, 65535, b"max", vec![]),
    ]
}

fn valid_vector(input: Input) -> ValidVector {
    let seed = seed_for(input.name);
    let key = SigningKey::from_bytes(&seed);
    let event = match Event::sign(&key, input.created_at, input.kind, input.content, input.tags) {
        Ok(event) => event,
        Err(error) => unreachable!("valid vector {} has bad tags: {error}", input.name),
    };
    let tags_bytes = canonical_tags(&event.tags).unwrap_or_default();
    let payload = event.unsigned().canonical_payload().unwrap_or_default();
    ValidVector {
        name: input.name,
        description: input.description,
        seed: hex::encode(seed),
        pubkey: hex::encode(event.pubkey),
        created_at: event.created_at,
        kind: event.kind,
        content: hex::encode(&event.content),
        tags: event
            .tags
            .iter()
            .map(|tag| std::iter::once(tag.name.clone()).chain(tag.values.iter().cloned()).collect())
            .collect(),
        canonical_tags: hex::encode(tags_bytes),
        tags_hash: hex::encode(tags_hash(&event.tags).unwrap_or_default()),
        canonical_payload: hex::encode(payload),
        id: hex::encode(event.id),
        sig: hex::encode(event.sig),
        msgpack: hex::encode(event.encode()),
    }
}

/// Builds a MessagePack map from keys and already-encoded values, in the given order.
fn raw_map(entries: &[(&str, Vec<u8>)]) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = rmp::encode::write_map_len(&mut out, entries.len() as u32);
    for (key, value) in entries {
        let _ = rmp::encode::write_str(&mut out, key);
        out.extend_from_slice(value);
    }
    out
}

fn bin(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    let _ = rmp::encode::write_bin(&mut out, bytes);
    out
}

fn msgpack_of<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(value).unwrap_or_default()
}

/// An event's fields as (key, encoded value) pairs in canonical key order.
fn entries(event: &Event) -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("id", bin(&event.id)),
        ("pubkey", bin(&event.pubkey)),
        ("created_at", msgpack_of(&event.created_at)),
        ("kind", msgpack_of(&event.kind)),
        ("content", bin(&event.content)),
        ("sig", bin(&event.sig)),
        ("tags", msgpack_of(&event.tags)),
    ]
}

fn with_entry(mut fields: Vec<(&'static str, Vec<u8>)>, key: &'static str, value: Vec<u8>) -> Vec<u8> {
    match fields.iter_mut().find(|(name, _)| *name == key) {
        Some(entry) => entry.1 = value,
        None => fields.push((key, value)),
    }
    raw_map(&fields)
}

fn signed(name: &str, kind: u16, content: Vec<u8>, tags: Vec<Tag>) -> (SigningKey, Event) {
    let key = SigningKey::from_bytes(&seed_for(name));
    match Event::sign(&key, 1_700_000_000, kind, content, tags) {
        Ok(event) => (key, event),
        Err(error) => unreachable!("invalid vector {name} base event failed: {error}"),
    }
}

/// An event whose tags are duplicates, so no id exists for it: id and sig are zero, and
/// the duplicate check (before the id check) must reject it.
fn with_duplicate_tags(tags: Vec<Tag>) -> Vec<u8> {
    let (_, base) = signed("bad-tags", 1000, b"x".to_vec(), vec![]);
    with_entry(entries(&base), "tags", msgpack_of(&tags))
}

/// A correctly signed event that breaks one size or range rule, so only that rule can
/// reject it.
fn signed_breaking(name: &str, created_at: u64, tags: Vec<Tag>) -> Vec<u8> {
    let key = SigningKey::from_bytes(&seed_for(name));
    match Event::sign(&key, created_at, 1000, b"x".to_vec(), tags) {
        Ok(event) => event.encode(),
        Err(error) => unreachable!("invalid vector {name} failed to sign: {error}"),
    }
}

/// A small-order public key (the identity point) with a signature every non-strict
/// verifier accepts: R = identity, S = 0, and a correct id.
fn small_order_key_event() -> Vec<u8> {
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut event = Event {
        id: [0; 32],
        pubkey: identity,
        created_at: 1_700_000_000,
        kind: 1000,
        content: b"weak".to_vec(),
        sig: [0; 64],
        tags: vec![],
    };
    event.id = event.compute_id().unwrap_or_default();
    event.sig[0] = 1;
    event.encode()
}

/// The signature with `S` replaced by `S + L` (non-canonical).
fn non_canonical_s(event: &Event) -> [u8; 64] {
    const L: [u8; 32] = [
        0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0,
        0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
    ];
    let mut sig = event.sig;
    let mut carry = 0u16;
    for (byte, l) in sig[32..].iter_mut().zip(L) {
        let sum = *byte as u16 + l as u16 + carry;
        *byte = sum as u8;
        carry = sum >> 8;
    }
    sig
}

fn invalid_vectors() -> Vec<InvalidVector> {
    let vector = |name, description, msgpack: Vec<u8>, code| InvalidVector {
        name,
        description,
        msgpack: hex::encode(msgpack),
        code,
    };
    let (key, base) = signed("invalid-base", 1000, b"hello".to_vec(), vec![tag("t", &["a"])]);
    let fields = || entries(&base);
    let mut wrong_id = base.id;
    wrong_id[31] ^= 1;
    let payload = base.unsigned().canonical_payload().unwrap_or_default();
    let (_, too_big) = signed("too-big", 1000, vec![0x61; 65537], vec![]);
    let mut too_many_tags = Vec::new();
    for index in 0..257 {
        too_many_tags.push(tag("n", &[&index.to_string()]));
    }
    let mut int_key = fields();
    int_key.retain(|(name, _)| *name != "kind");
    let mut int_key_map = raw_map(&int_key);
    int_key_map[0] = 0x87; // still seven entries
    int_key_map.extend_from_slice(&[0x03, 0xcd, 0x03, 0xe8]); // 3 => 1000
    let mut missing_sig = fields();
    missing_sig.retain(|(name, _)| *name != "sig");
    vec![
        vector("wrong-id", "id does not match the canonical payload", with_entry(fields(), "id", bin(&wrong_id)), 400),
        vector(
            "sig-over-payload",
            "signature over the canonical payload instead of the id",
            with_entry(fields(), "sig", bin(&key.sign(&payload).to_bytes())),
            400,
        ),
        vector("zeroed-sig", "a signature of 64 zero bytes", with_entry(fields(), "sig", bin(&[0; 64])), 400),
        vector(
            "non-canonical-s",
            "signature S not reduced modulo the group order (strict mode)",
            with_entry(fields(), "sig", bin(&non_canonical_s(&base))),
            400,
        ),
        vector(
            "small-order-pubkey",
            "small-order public key with a signature a non-strict verifier accepts",
            small_order_key_event(),
            400,
        ),
        vector(
            "duplicate-tags",
            "two tags with the same name and first value",
            with_duplicate_tags(vec![tag("e", &["x"]), tag("e", &["x", "y"])]),
            400,
        ),
        vector(
            "duplicate-valueless-tags",
            "two value-less tags with the same name",
            with_duplicate_tags(vec![tag("t", &[]), tag("t", &[])]),
            400,
        ),
        vector("missing-key", "the sig key is missing", raw_map(&missing_sig), 400),
        vector("unknown-key", "an eighth, unknown key", with_entry(fields(), "extra", msgpack_of(&1u8)), 400),
        vector("integer-key", "a map key given as an integer instead of str", int_key_map, 400),
        vector(
            "content-as-str",
            "content given as str instead of bin",
            with_entry(fields(), "content", msgpack_of("hello")),
            400,
        ),
        vector("pubkey-31-bytes", "a 31-byte public key", with_entry(fields(), "pubkey", bin(&base.pubkey[..31])), 400),
        vector("negative-created-at", "created_at of -1", with_entry(fields(), "created_at", msgpack_of(&-1i64)), 400),
        vector(
            "created-at-2-63",
            "created_at of 2^63, correctly signed",
            signed_breaking("created-at-2-63", 1 << 63, vec![]),
            400,
        ),
        vector("kind-65536", "kind above 65535", with_entry(fields(), "kind", msgpack_of(&65536u32)), 400),
        vector(
            "tag-as-array",
            "a tag given as an array instead of a map",
            with_entry(fields(), "tags", msgpack_of(&vec![vec!["t", "a"]])),
            400,
        ),
        vector(
            "empty-tag-name",
            "a tag with an empty name",
            signed_breaking("empty-tag-name", 1_700_000_000, vec![tag("", &["a"])]),
            400,
        ),
        vector(
            "too-many-tag-values",
            "a tag with 17 values",
            signed_breaking("too-many-tag-values", 1_700_000_000, vec![tag("t", &["a"; 17])]),
            400,
        ),
        vector(
            "tag-value-1025-bytes",
            "a tag value of 1025 bytes",
            signed_breaking("tag-value-1025-bytes", 1_700_000_000, vec![tag("t", &[&"v".repeat(1025)])]),
            400,
        ),
        vector("too-many-tags", "257 tags", signed_breaking("too-many-tags", 1_700_000_000, too_many_tags), 400),
        vector("content-65537", "content of 65537 bytes, correctly signed", too_big.encode(), 413),
    ]
}

fn to_json<T: Serialize>(vectors: Vec<T>) -> String {
    let file = VectorFile { version: 1, vectors };
    let mut text = serde_json::to_string_pretty(&file).unwrap_or_default();
    text.push('\n');
    text
}

/// The contents of `testvectors/valid.json`.
pub fn valid_json() -> String {
    to_json(inputs().into_iter().map(valid_vector).collect())
}

/// The contents of `testvectors/invalid.json`.
pub fn invalid_json() -> String {
    to_json(invalid_vectors())
}
