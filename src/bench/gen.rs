//! Keys and events made before any timing starts: signed in parallel on every core,
//! encoded once, kept as the exact bytes the benchmark sends.

use bytes::Bytes;
use ed25519_dalek::SigningKey;
use sha2::{Digest, Sha256};

use crate::protocol::{Event, EventId, RawEvent, Tag};

use super::CliResult;

/// An event ready to send: its id (to route the answer) and its canonical bytes.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// The event id.
    pub id: EventId,
    /// The canonical MessagePack bytes.
    pub raw: RawEvent,
}

impl Prepared {
    /// Encodes a signed event.
    pub fn of(event: &Event) -> Prepared {
        Prepared { id: event.id, raw: RawEvent(Bytes::from(event.encode())) }
    }
}

/// What to sign for one event.
#[derive(Debug, Clone)]
pub struct Draft {
    /// Index into the key list.
    pub key: usize,
    /// Unix seconds.
    pub created_at: u64,
    /// Kind.
    pub kind: u16,
    /// Content bytes.
    pub content: Vec<u8>,
    /// Tags.
    pub tags: Vec<Tag>,
}

/// Fresh random keys.
pub fn random_keys(count: usize) -> Vec<SigningKey> {
    (0..count).map(|_| SigningKey::generate(&mut rand::rngs::OsRng)).collect()
}

/// 8 random bytes as 16 hex characters: keeps runs against one relay apart.
pub fn run_nonce() -> String {
    hex::encode(rand::random::<[u8; 8]>())
}

/// Content of `size` bytes (at least 16): `head` (8 bytes, big-endian), `second` (8 bytes,
/// big-endian), then printable filler.
pub fn content(size: usize, head: u64, second: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(size.max(16));
    out.extend_from_slice(&head.to_be_bytes());
    out.extend_from_slice(&second.to_be_bytes());
    out.extend((16..size).map(|index| b'a' + (index % 26) as u8));
    out
}

/// The first two big-endian u64 of a content written by [`content`].
pub fn content_head(content: &[u8]) -> Option<(u64, u64)> {
    let head = u64::from_be_bytes(content.get(0..8)?.try_into().ok()?);
    let second = u64::from_be_bytes(content.get(8..16)?.try_into().ok()?);
    Some((head, second))
}

/// A deterministic 32-byte value for an `e` tag.
pub fn pseudo_id(label: &str, index: u64) -> [u8; 32] {
    Sha256::new().chain_update(label.as_bytes()).chain_update(index.to_be_bytes()).finalize().into()
}

/// The benchmark's tag shape: `t` (a topic), `p` (a pubkey, hex) and `e` (an event id, hex).
pub fn standard_tags(topic: &str, p: &[u8; 32], e: &[u8; 32]) -> Vec<Tag> {
    vec![Tag::new("t", [topic]), Tag::new("p", [hex::encode(p)]), Tag::new("e", [hex::encode(e)])]
}

/// The worker threads for CPU-bound preparation: every core.
pub fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Signs `count` events built by `draft(index)` on every core; results in index order.
pub fn sign_all<F>(count: usize, keys: &[SigningKey], draft: F) -> CliResult<Vec<Event>>
where
    F: Fn(usize) -> Draft + Sync,
{
    let threads = cores().min(count.max(1));
    let chunk = count.div_ceil(threads).max(1);
    let draft = &draft;
    let parts: Vec<CliResult<Vec<Event>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                scope.spawn(move || -> CliResult<Vec<Event>> {
                    let range = (thread * chunk).min(count)..((thread + 1) * chunk).min(count);
                    let mut events = Vec::with_capacity(range.len());
                    for index in range {
                        let Draft { key, created_at, kind, content, tags } = draft(index);
                        let key = keys.get(key).ok_or("draft names a key that does not exist")?;
                        events.push(Event::sign(key, created_at, kind, content, tags)?);
                    }
                    Ok(events)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|_| Err("a signing thread panicked".into())))
            .collect()
    });
    let mut events = Vec::with_capacity(count);
    for part in parts {
        events.extend(part?);
    }
    Ok(events)
}

/// Signs and encodes; see [`sign_all`].
pub fn prepare_all<F>(count: usize, keys: &[SigningKey], draft: F) -> CliResult<Vec<Prepared>>
where
    F: Fn(usize) -> Draft + Sync,
{
    Ok(sign_all(count, keys, draft)?.iter().map(Prepared::of).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_carries_its_head() {
        let bytes = content(200, 42, 7);
        assert_eq!(bytes.len(), 200);
        assert_eq!(content_head(&bytes), Some((42, 7)));
        assert_eq!(content(3, 1, 2).len(), 16);
    }

    #[test]
    fn signing_keeps_order_and_validates() {
        let keys = random_keys(2);
        let events = sign_all(10, &keys, |index| Draft {
            key: index % 2,
            created_at: 1_700_000_000,
            kind: 1000,
            content: content(32, index as u64, 0),
            tags: standard_tags("topic", &[1; 32], &pseudo_id("e", index as u64)),
        })
        .expect("sign");
        assert_eq!(events.len(), 10);
        for (index, event) in events.iter().enumerate() {
            assert_eq!(content_head(&event.content).map(|(head, _)| head), Some(index as u64));
            assert!(event.validate(&crate::protocol::Limits::default()).is_ok());
        }
    }
}
