//! Events: the wire shape, canonical signing payload, id, signing and strict validation
//! (spec §2–§3). The signature rule itself is in [`super::signature`].

use std::cmp::Ordering;

use ed25519_dalek::{Signer, SigningKey, VerifyingKey};
use serde::ser::{Serialize, SerializeStruct, Serializer};
use sha2::{Digest, Sha256};

use super::error::{ErrorCode, ProtocolError};
use super::limits::{Limits, MAX_TAG_NAME_BYTES};
use super::msgpack::{Reader, SeenKeys};
use super::signature::{self, SignatureError};

/// A 32-byte event id: SHA-256 of the canonical payload.
pub type EventId = [u8; 32];
/// A 32-byte Ed25519 public key: an identity.
pub type PublicKey = [u8; 32];

/// `created_at` must be below 2^63.
const MAX_CREATED_AT: u64 = (1 << 63) - 1;

/// A tag: a name and its values, in the tag's own order.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Tag {
    /// 1..=64 bytes of UTF-8.
    pub name: String,
    /// 0..=16 values (by default), each 0..=1024 bytes.
    pub values: Vec<String>,
}

impl Tag {
    /// Builds a tag from a name and values.
    pub fn new<N: Into<String>, V: Into<String>>(name: N, values: impl IntoIterator<Item = V>) -> Self {
        Tag { name: name.into(), values: values.into_iter().map(Into::into).collect() }
    }

    /// The first value, if any.
    pub fn first_value(&self) -> Option<&str> {
        self.values.first().map(String::as_str)
    }

    /// The canonical sort key: name, then first value, value-less first (spec §3).
    fn canonical_cmp(&self, other: &Tag) -> Ordering {
        self.name
            .as_bytes()
            .cmp(other.name.as_bytes())
            .then_with(|| self.first_value().map(str::as_bytes).cmp(&other.first_value().map(str::as_bytes)))
    }
}

impl Serialize for Tag {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_struct("Tag", 2)?;
        map.serialize_field("name", &self.name)?;
        map.serialize_field("values", &self.values)?;
        map.end()
    }
}

/// A signed event as it travels on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// SHA-256 of the canonical payload.
    pub id: EventId,
    /// The author's Ed25519 public key.
    pub pubkey: PublicKey,
    /// Unix seconds chosen by the author, 0..2^63.
    pub created_at: u64,
    /// See spec §5.
    pub kind: u16,
    /// Opaque bytes.
    pub content: Vec<u8>,
    /// Ed25519 signature over `id`.
    pub sig: [u8; 64],
    /// Tags in wire order.
    pub tags: Vec<Tag>,
}

impl Serialize for Event {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_struct("Event", 7)?;
        map.serialize_field("id", serde_bytes::Bytes::new(&self.id))?;
        map.serialize_field("pubkey", serde_bytes::Bytes::new(&self.pubkey))?;
        map.serialize_field("created_at", &self.created_at)?;
        map.serialize_field("kind", &self.kind)?;
        map.serialize_field("content", serde_bytes::Bytes::new(&self.content))?;
        map.serialize_field("sig", serde_bytes::Bytes::new(&self.sig))?;
        map.serialize_field("tags", &self.tags)?;
        map.end()
    }
}

/// Where canonical bytes go: a buffer (to show them) or a hasher (to hash them).
trait Sink {
    fn put(&mut self, bytes: &[u8]);
}

impl Sink for Vec<u8> {
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

impl Sink for Sha256 {
    fn put(&mut self, bytes: &[u8]) {
        self.update(bytes);
    }
}

/// Tags sorted into canonical order; fails with 400 on duplicate tags (spec §3).
pub fn canonical_order(tags: &[Tag]) -> Result<Vec<&Tag>, ProtocolError> {
    check_encodable(tags)?;
    let mut sorted: Vec<&Tag> = tags.iter().collect();
    sorted.sort_by(|a, b| a.canonical_cmp(b));
    if let Some(pair) = sorted.windows(2).find(|pair| pair[0].canonical_cmp(pair[1]) == Ordering::Equal) {
        return Err(ProtocolError::invalid(match pair[0].first_value() {
            Some(value) => format!("duplicate tag {:?} with first value {value:?}", pair[0].name),
            None => format!("duplicate value-less tag {:?}", pair[0].name),
        }));
    }
    Ok(sorted)
}

/// The canonical form stores counts in uint16 and value lengths in uint32 (spec §3):
/// larger inputs cannot be signed and are 400, never silently truncated.
fn check_encodable(tags: &[Tag]) -> Result<(), ProtocolError> {
    let too_many = |count: usize| count > u16::MAX as usize;
    if too_many(tags.len()) {
        return Err(ProtocolError::invalid("more than 65535 tags cannot be encoded"));
    }
    for tag in tags {
        if too_many(tag.name.len()) || too_many(tag.values.len()) {
            return Err(ProtocolError::invalid("a tag name or value count above 65535 cannot be encoded"));
        }
        if tag.values.iter().any(|value| value.len() > u32::MAX as usize) {
            return Err(ProtocolError::invalid("a tag value above 4 GiB cannot be encoded"));
        }
    }
    Ok(())
}

fn write_canonical_tags(sorted: &[&Tag], sink: &mut impl Sink) {
    sink.put(&(sorted.len() as u16).to_be_bytes());
    for tag in sorted {
        sink.put(&(tag.name.len() as u16).to_be_bytes());
        sink.put(tag.name.as_bytes());
        sink.put(&(tag.values.len() as u16).to_be_bytes());
        for value in &tag.values {
            sink.put(&(value.len() as u32).to_be_bytes());
            sink.put(value.as_bytes());
        }
    }
}

/// The `canonical_tags` byte string of spec §3.
pub fn canonical_tags(tags: &[Tag]) -> Result<Vec<u8>, ProtocolError> {
    let mut out = Vec::new();
    write_canonical_tags(&canonical_order(tags)?, &mut out);
    Ok(out)
}

/// SHA-256 of `canonical_tags`.
pub fn tags_hash(tags: &[Tag]) -> Result<[u8; 32], ProtocolError> {
    let mut hasher = Sha256::new();
    write_canonical_tags(&canonical_order(tags)?, &mut hasher);
    Ok(hasher.finalize().into())
}

/// The fields that are signed: everything but `id` and `sig`.
#[derive(Debug, Clone, Copy)]
pub struct Unsigned<'a> {
    /// Author.
    pub pubkey: &'a PublicKey,
    /// Unix seconds.
    pub created_at: u64,
    /// Kind.
    pub kind: u16,
    /// Content bytes.
    pub content: &'a [u8],
    /// Tags in any order.
    pub tags: &'a [Tag],
}

impl Unsigned<'_> {
    fn write_payload(&self, tags_hash: &[u8; 32], sink: &mut impl Sink) {
        sink.put(&32u16.to_be_bytes());
        sink.put(self.pubkey);
        sink.put(&self.created_at.to_be_bytes());
        sink.put(&self.kind.to_be_bytes());
        sink.put(&(self.content.len() as u32).to_be_bytes());
        sink.put(self.content);
        sink.put(tags_hash);
    }

    /// The tags hash, after checking the content length fits its uint32 field.
    fn encodable_tags_hash(&self) -> Result<[u8; 32], ProtocolError> {
        if self.content.len() > u32::MAX as usize {
            return Err(ProtocolError::invalid("content above 4 GiB cannot be encoded"));
        }
        tags_hash(self.tags)
    }

    /// The `canonical_payload` byte string of spec §3.
    pub fn canonical_payload(&self) -> Result<Vec<u8>, ProtocolError> {
        let mut out = Vec::with_capacity(80 + self.content.len());
        self.write_payload(&self.encodable_tags_hash()?, &mut out);
        Ok(out)
    }

    /// The event id: SHA-256 of the canonical payload, hashed without building it.
    pub fn id(&self) -> Result<EventId, ProtocolError> {
        let mut hasher = Sha256::new();
        self.write_payload(&self.encodable_tags_hash()?, &mut hasher);
        Ok(hasher.finalize().into())
    }
}

impl Event {
    /// Builds and signs an event; fails (400) only if the tags contain duplicates.
    pub fn sign(
        key: &SigningKey,
        created_at: u64,
        kind: u16,
        content: Vec<u8>,
        tags: Vec<Tag>,
    ) -> Result<Event, ProtocolError> {
        let pubkey = key.verifying_key().to_bytes();
        let id = Unsigned { pubkey: &pubkey, created_at, kind, content: &content, tags: &tags }.id()?;
        let sig = key.sign(&id).to_bytes();
        Ok(Event { id, pubkey, created_at, kind, content, sig, tags })
    }

    /// The signed fields of this event.
    pub fn unsigned(&self) -> Unsigned<'_> {
        Unsigned {
            pubkey: &self.pubkey,
            created_at: self.created_at,
            kind: self.kind,
            content: &self.content,
            tags: &self.tags,
        }
    }

    /// Recomputes the id from the fields (400 on duplicate tags).
    pub fn compute_id(&self) -> Result<EventId, ProtocolError> {
        self.unsigned().id()
    }

    /// Canonical MessagePack encoding (key order of spec §2, shortest integers).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(160 + self.content.len());
        self.encode_into(&mut out);
        out
    }

    /// Appends the canonical encoding to `out`.
    pub fn encode_into(&self, out: &mut Vec<u8>) {
        // Writing to a Vec cannot fail and every field is serializable.
        if let Err(error) = rmp_serde::encode::write_named(out, self) {
            unreachable!("encoding an Event into a Vec failed: {error}");
        }
    }

    /// Decodes an Event map strictly (spec §2): exactly the seven keys, right types and
    /// lengths. Field rules (sizes, ranges) are checked by [`Event::validate`].
    pub fn decode(bytes: &[u8]) -> Result<Event, ProtocolError> {
        let mut reader = Reader::new(bytes);
        let event = Self::read(&mut reader)?;
        reader.expect_end()?;
        Ok(event)
    }

    /// Reads one Event map from `reader`.
    pub fn read(reader: &mut Reader<'_>) -> Result<Event, ProtocolError> {
        const KEYS: [&str; 7] = ["id", "pubkey", "created_at", "kind", "content", "sig", "tags"];
        let entries = reader.read_map_len("event")?;
        if entries != KEYS.len() {
            return Err(ProtocolError::invalid(format!("event must have exactly 7 keys, got {entries}")));
        }
        let mut seen = SeenKeys::new();
        let mut event = Event {
            id: [0; 32],
            pubkey: [0; 32],
            created_at: 0,
            kind: 0,
            content: Vec::new(),
            sig: [0; 64],
            tags: Vec::new(),
        };
        for _ in 0..entries {
            let key = reader.read_str("event key")?;
            let index = KEYS
                .iter()
                .position(|known| *known == key)
                .ok_or_else(|| ProtocolError::invalid(format!("unknown event key {key:?}")))?;
            seen.mark(index as u32, key)?;
            match index {
                0 => event.id = reader.read_bin_fixed("id")?,
                1 => event.pubkey = reader.read_bin_fixed("pubkey")?,
                2 => event.created_at = read_created_at(reader)?,
                3 => event.kind = read_kind(reader)?,
                4 => event.content = reader.read_bin("content")?.to_vec(),
                5 => event.sig = reader.read_bin_fixed("sig")?,
                _ => event.tags = read_tags(reader)?,
            }
        }
        Ok(event)
    }

    /// Field rules of spec §2 against `limits`: 413 for oversized content, else 400.
    pub fn check_fields(&self, limits: &Limits) -> Result<(), ProtocolError> {
        if self.content.len() > limits.max_content_bytes {
            return Err(ProtocolError::new(
                ErrorCode::TooLarge,
                format!("content is {} bytes, the limit is {}", self.content.len(), limits.max_content_bytes),
            ));
        }
        if self.tags.len() > limits.max_tags {
            return Err(ProtocolError::invalid(format!("{} tags, the limit is {}", self.tags.len(), limits.max_tags)));
        }
        self.tags.iter().try_for_each(|tag| check_tag(tag, limits))
    }

    /// Runs spec §3's validation after decoding, in order: field rules → duplicate tags →
    /// id → signature rule.
    pub fn validate(&self, limits: &Limits) -> Result<(), ProtocolError> {
        self.check_fields(limits)?;
        self.check_id()?;
        self.verify_signature()
    }

    /// Duplicate tags (400), then the recomputed id must equal `id` (400).
    pub fn check_id(&self) -> Result<(), ProtocolError> {
        if self.compute_id()? != self.id {
            return Err(ProtocolError::invalid("id does not match the canonical payload"));
        }
        Ok(())
    }

    /// Spec §3's signature rule for `sig` by `pubkey` over `id`
    /// ([`signature::verify_single`]); 400 naming the clause that failed.
    pub fn verify_signature(&self) -> Result<(), ProtocolError> {
        signature::verify_single(&self.pubkey, &self.id, &self.sig).map_err(ProtocolError::from)
    }

    /// The first value of every tag named `name`, in wire order.
    pub fn tag_values<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.tags.iter().filter(move |tag| tag.name == name).filter_map(Tag::first_value)
    }
}

/// A signature is invalid under spec §3's signature rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("bad signature")]
pub struct BadSignature;

impl From<BadSignature> for ProtocolError {
    fn from(_: BadSignature) -> ProtocolError {
        ProtocolError::invalid("bad signature")
    }
}

impl From<SignatureError> for BadSignature {
    fn from(_: SignatureError) -> BadSignature {
        BadSignature
    }
}

impl From<SignatureError> for ProtocolError {
    fn from(error: SignatureError) -> ProtocolError {
        ProtocolError::invalid(format!("bad signature: {error}"))
    }
}

/// Spec §3's signature rule for `sig` by `pubkey` over `message`. The name is historical:
/// this is no longer ed25519-dalek's `verify_strict` (which is cofactorless and rejects a
/// torsion component in R) but [`signature::verify_single`]; the relay's AUTH check uses it.
pub fn verify_strict(pubkey: &[u8; 32], message: &[u8], sig: &[u8; 64]) -> Result<(), BadSignature> {
    signature::verify_single(pubkey, message, sig).map_err(BadSignature::from)
}

/// [`verify_strict`] for an ed25519-dalek key; prefer [`signature::verify_prepared`] with a
/// cached [`signature::VerificationKey`], which skips decoding the key again.
pub fn verify_strict_with(key: &VerifyingKey, message: &[u8], sig: &[u8; 64]) -> Result<(), BadSignature> {
    verify_strict(key.as_bytes(), message, sig)
}

fn read_created_at(reader: &mut Reader<'_>) -> Result<u64, ProtocolError> {
    match reader.read_int("created_at")? {
        super::msgpack::Int::Unsigned(value) if value <= MAX_CREATED_AT => Ok(value),
        super::msgpack::Int::Unsigned(_) => Err(ProtocolError::invalid("created_at must be below 2^63")),
        super::msgpack::Int::Negative(_) => Err(ProtocolError::invalid("created_at must not be negative")),
    }
}

fn read_kind(reader: &mut Reader<'_>) -> Result<u16, ProtocolError> {
    let kind = reader.read_uint("kind")?;
    u16::try_from(kind).map_err(|_| ProtocolError::invalid(format!("kind {kind} is above 65535")))
}

fn read_tags(reader: &mut Reader<'_>) -> Result<Vec<Tag>, ProtocolError> {
    let count = reader.read_array_len("tags")?;
    let mut tags = Vec::with_capacity(count.min(256));
    for _ in 0..count {
        tags.push(read_tag(reader)?);
    }
    Ok(tags)
}

/// Reads one strict Tag map `{"name": str, "values": [str...]}`.
pub fn read_tag(reader: &mut Reader<'_>) -> Result<Tag, ProtocolError> {
    let entries = reader.read_map_len("tag")?;
    if entries != 2 {
        return Err(ProtocolError::invalid(format!("tag must have exactly 2 keys, got {entries}")));
    }
    let mut seen = SeenKeys::new();
    let mut tag = Tag { name: String::new(), values: Vec::new() };
    for _ in 0..entries {
        match reader.read_str("tag key")? {
            "name" => {
                seen.mark(0, "name")?;
                tag.name = reader.read_str("tag name")?.to_owned();
            }
            "values" => {
                seen.mark(1, "values")?;
                tag.values = reader.read_str_list("tag values", "tag value")?;
            }
            other => return Err(ProtocolError::invalid(format!("unknown tag key {other:?}"))),
        }
    }
    Ok(tag)
}

fn check_tag(tag: &Tag, limits: &Limits) -> Result<(), ProtocolError> {
    if tag.name.is_empty() || tag.name.len() > MAX_TAG_NAME_BYTES {
        return Err(ProtocolError::invalid(format!("tag name must be 1..={MAX_TAG_NAME_BYTES} bytes")));
    }
    if tag.values.len() > limits.max_tag_values {
        return Err(ProtocolError::invalid(format!(
            "tag {:?} has {} values, the limit is {}",
            tag.name,
            tag.values.len(),
            limits.max_tag_values
        )));
    }
    match tag.values.iter().find(|value| value.len() > limits.max_tag_value_bytes) {
        Some(value) => Err(ProtocolError::invalid(format!(
            "a value of tag {:?} is {} bytes, the limit is {}",
            tag.name,
            value.len(),
            limits.max_tag_value_bytes
        ))),
        None => Ok(()),
    }
}

/// Decodes and fully validates event bytes (spec §3, in order).
pub fn decode_and_validate(bytes: &[u8], limits: &Limits) -> Result<Event, ProtocolError> {
    let event = Event::decode(bytes)?;
    event.validate(limits)?;
    Ok(event)
}
