//! Test vectors of spec §13, generated from fixed seeds (Ed25519 is deterministic), so
//! `testvectors/*.json` can be regenerated and compared byte for byte.

use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::{Signer, SigningKey};
use serde::Serialize;
use sha2::{Digest, Sha256, Sha512};

use super::event::{canonical_tags, tags_hash, Event, Tag};
use super::signature::challenge;

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

/// One signature-rule vector (spec §3): the signature's inputs, the verdict, and the
/// event (with a correct id) that carries it.
#[derive(Serialize)]
pub struct SignatureVector {
    name: &'static str,
    description: &'static str,
    pubkey: String,
    message: String,
    sig: String,
    valid: bool,
    msgpack: String,
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
            "S + ℓ for a valid S: the equation holds mod ℓ, clause 1 (S < ℓ) fails",
            with_entry(fields(), "sig", bin(&non_canonical_s(&base))),
            400,
        ),
        vector(
            "small-order-pubkey",
            "small-order public key (the identity) with a signature a lenient verifier accepts: clause 3 fails",
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

/// A point of order 8 (its canonical encoding, from the list of the 8 small-order points).
const ORDER_8_POINT: [u8; 32] = [
    0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98, 0xf0, 0xd5, 0xdf, 0xac,
    0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x05,
];

/// The identity (x = 0, y = 1) encoded with the sign bit set: x = 0 makes it non-canonical.
const IDENTITY_WITH_SIGN_BIT: [u8; 32] = {
    let mut bytes = [0u8; 32];
    bytes[0] = 1;
    bytes[31] = 0x80;
    bytes
};

/// The identity encoded with y = p + 1 (y ≥ p: non-canonical).
const IDENTITY_Y_ABOVE_P: [u8; 32] = y_above_p(1);

/// The encoding of y = p + j (2^255 − 19 + j, for j < 19), sign bit clear.
const fn y_above_p(j: u8) -> [u8; 32] {
    let mut bytes = [0xff; 32];
    bytes[0] = 0xed + j;
    bytes[31] = 0x7f;
    bytes
}

/// The first y ≥ p encoding of a point that is not of small order (y = p + 3 here): a
/// non-canonical encoding that a decoder reducing y mod p accepts.
fn mixed_order_y_above_p() -> [u8; 32] {
    (0..19u8)
        .map(y_above_p)
        .find(|bytes| CompressedEdwardsY(*bytes).decompress().is_some_and(|point| !point.is_small_order()))
        .unwrap_or_else(|| unreachable!("y = p + 3 encodes a point of order 8ℓ"))
}

fn decompress(bytes: &[u8; 32]) -> EdwardsPoint {
    CompressedEdwardsY(*bytes).decompress().unwrap_or_else(|| unreachable!("a fixed point encoding"))
}

/// A deterministic nonce for a vector.
fn nonce(name: &str) -> Scalar {
    Scalar::from_bytes_mod_order_wide(&Sha512::digest(format!("axon signature vector nonce: {name}")).into())
}

/// An event by `pubkey` (which may be any bytes) with a correct id and a zero signature.
fn unsigned_event(name: &str, pubkey: [u8; 32]) -> Event {
    let mut event = Event {
        id: [0; 32],
        pubkey,
        created_at: 1_700_000_000,
        kind: 1000,
        content: format!("signature rule: {name}").into_bytes(),
        sig: [0; 64],
        tags: vec![],
    };
    event.id = event.compute_id().unwrap_or_default();
    event
}

fn with_signature(mut event: Event, r: [u8; 32], s: [u8; 32]) -> Event {
    event.sig[..32].copy_from_slice(&r);
    event.sig[32..].copy_from_slice(&s);
    event
}

/// Signs with R given as `r_bytes` (an encoding of [r]B plus whatever the case adds):
/// S = r + k·a with k over those bytes.
fn sign_with_r(key: &SigningKey, event: Event, r: Scalar, r_bytes: [u8; 32]) -> Event {
    let k = challenge(&r_bytes, &event.pubkey, &event.id);
    let s = r + k * key.to_scalar();
    with_signature(event, r_bytes, s.to_bytes())
}

/// The group order ℓ, little-endian.
const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];

/// One case of spec §3's signature rule.
struct SignatureCase {
    name: &'static str,
    description: &'static str,
    event: Event,
    valid: bool,
}

fn signature_cases() -> Vec<SignatureCase> {
    let key_for = |name: &str| SigningKey::from_bytes(&seed_for(name));
    let keyed = |name: &str| {
        let key = key_for(name);
        let event = unsigned_event(name, key.verifying_key().to_bytes());
        (key, event)
    };
    let case = |name, description, event, valid| SignatureCase { name, description, event, valid };

    let (key, mut plain) = keyed("rfc8032");
    plain.sig = key.sign(&plain.id).to_bytes();

    let (key, event) = keyed("torsion-r");
    let r = nonce("torsion-r");
    let torsion_r = (ED25519_BASEPOINT_POINT * r + decompress(&ORDER_8_POINT)).compress().0;
    let torsion = sign_with_r(&key, event, r, torsion_r);

    // R of small order: [8]R vanishes, so S = k·a satisfies the cofactored equation.
    let (key, event) = keyed("small-order-r");
    let small_order_r = sign_with_r(&key, event, Scalar::ZERO, ORDER_8_POINT);

    let (key, event) = keyed("non-canonical-r");
    let non_canonical_r = sign_with_r(&key, event, Scalar::ZERO, IDENTITY_WITH_SIGN_BIT);

    let (key, event) = keyed("non-canonical-r-y-above-p");
    let non_canonical_r_mixed = sign_with_r(&key, event, nonce("non-canonical-r-y-above-p"), mixed_order_y_above_p());

    // A = identity (y = p + 1): [k]A vanishes, so R = [r]B, S = r satisfies the equation.
    let r = nonce("non-canonical-a");
    let event = unsigned_event("non-canonical-a", IDENTITY_Y_ABOVE_P);
    let non_canonical_a = with_signature(event, (ED25519_BASEPOINT_POINT * r).compress().0, r.to_bytes());

    let r = nonce("non-canonical-a-y-above-p");
    let event = unsigned_event("non-canonical-a-y-above-p", mixed_order_y_above_p());
    let non_canonical_a_mixed = with_signature(event, (ED25519_BASEPOINT_POINT * r).compress().0, r.to_bytes());

    let (_, event) = keyed("s-equals-l");
    let r = nonce("s-equals-l");
    let s_equals_l = with_signature(event, (ED25519_BASEPOINT_POINT * r).compress().0, L);

    vec![
        case("rfc8032", "an ordinary RFC 8032 signature", plain, true),
        case(
            "torsion-r",
            "valid: R = [r]B + T with T of order 8 and S = r + k·a; the cofactored equation holds, the \
             cofactorless one (RFC 8032 without [8], ed25519-dalek verify_strict) does not",
            torsion,
            true,
        ),
        case(
            "small-order-r",
            "R is the canonical encoding of a point of order 8 and S = k·a: clauses 1, 2 and 4 hold, \
             clause 3 (R not of small order) fails",
            small_order_r,
            false,
        ),
        case(
            "non-canonical-r",
            "R = 0100..0080, the identity with x = 0 and the sign bit set, and S = k·a: the cofactored \
             equation holds over the decoded R; clause 2 fails (and, necessarily, clause 3)",
            non_canonical_r,
            false,
        ),
        case(
            "non-canonical-r-y-above-p",
            "R encodes y = p + 3 (y ≥ p), a point not of small order: clause 2 fails; clause 4 fails \
             too, as it must for any R whose discrete log nobody knows",
            non_canonical_r_mixed,
            false,
        ),
        case(
            "non-canonical-a",
            "the public key encodes y = p + 1 (the identity, y ≥ p), with R = [r]B and S = r: the \
             cofactored equation holds over the decoded A; clause 2 fails (and, necessarily, clause 3)",
            non_canonical_a,
            false,
        ),
        case(
            "non-canonical-a-y-above-p",
            "the public key encodes y = p + 3 (y ≥ p), a point not of small order: clause 2 fails; \
             clause 4 fails too, as it must for a key whose discrete log nobody knows",
            non_canonical_a_mixed,
            false,
        ),
        case(
            "s-equals-l",
            "S = ℓ exactly, the smallest non-canonical S: clause 1 fails (S ≡ 0 cannot also satisfy \
             the equation without a forgery; non-canonical-s in invalid.json has S + ℓ for a valid S)",
            s_equals_l,
            false,
        ),
    ]
}

fn signature_vector(case: SignatureCase) -> SignatureVector {
    SignatureVector {
        name: case.name,
        description: case.description,
        pubkey: hex::encode(case.event.pubkey),
        message: hex::encode(case.event.id),
        sig: hex::encode(case.event.sig),
        valid: case.valid,
        msgpack: hex::encode(case.event.encode()),
    }
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
    let mut vectors = invalid_vectors();
    vectors.extend(signature_cases().into_iter().filter(|case| !case.valid).map(|case| InvalidVector {
        name: case.name,
        description: case.description,
        msgpack: hex::encode(case.event.encode()),
        code: 400,
    }));
    to_json(vectors)
}

/// The contents of `testvectors/signatures.json`: the signature rule's own vectors.
pub fn signatures_json() -> String {
    to_json(signature_cases().into_iter().map(signature_vector).collect())
}
