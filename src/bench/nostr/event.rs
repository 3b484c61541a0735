//! NIP-01 events for the Nostr side: keys, signing (BIP-340 Schnorr, k256), verification,
//! and the benchmark's content and tag shape.

use k256::schnorr::SigningKey;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::bench::gen::cores;
use crate::cli::CliResult;

/// A signed NIP-01 event.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NostrEvent {
    /// Hex SHA-256 of the serialized event.
    pub id: String,
    /// Hex x-only public key.
    pub pubkey: String,
    /// Unix seconds.
    pub created_at: u64,
    /// Kind.
    pub kind: u16,
    /// Tags as arrays of strings.
    pub tags: Vec<Vec<String>>,
    /// Content.
    pub content: String,
    /// Hex BIP-340 signature over the id.
    pub sig: String,
}

/// A Nostr key: the secret key and its hex x-only public key.
#[derive(Clone)]
pub struct NostrKey {
    secret: SigningKey,
    /// Hex x-only public key.
    pub pubkey: String,
}

impl NostrKey {
    /// A fresh random key.
    pub fn random() -> NostrKey {
        let secret = SigningKey::random(&mut rand::rngs::OsRng);
        let pubkey = hex::encode(secret.verifying_key().to_bytes());
        NostrKey { secret, pubkey }
    }
}

/// What to sign.
pub struct NostrDraft {
    /// Index into the key list.
    pub key: usize,
    /// Unix seconds.
    pub created_at: u64,
    /// Kind.
    pub kind: u16,
    /// Tags.
    pub tags: Vec<Vec<String>>,
    /// Content.
    pub content: String,
}

/// Signs an event (NIP-01 id, BIP-340 signature).
pub fn sign(key: &NostrKey, draft: NostrDraft) -> CliResult<NostrEvent> {
    let serialized =
        serde_json::to_string(&(0, &key.pubkey, draft.created_at, draft.kind, &draft.tags, &draft.content))?;
    let id: [u8; 32] = Sha256::digest(serialized.as_bytes()).into();
    let aux: [u8; 32] = rand::random();
    let sig = key.secret.sign_raw(&id, &aux).map_err(|error| format!("BIP-340 signing failed: {error}"))?;
    Ok(NostrEvent {
        id: hex::encode(id),
        pubkey: key.pubkey.clone(),
        created_at: draft.created_at,
        kind: draft.kind,
        tags: draft.tags,
        content: draft.content,
        sig: hex::encode(sig.to_bytes()),
    })
}

/// Checks an event's id and signature (for tests and the ceiling of this side).
pub fn verify(event: &NostrEvent) -> CliResult<()> {
    let serialized =
        serde_json::to_string(&(0, &event.pubkey, event.created_at, event.kind, &event.tags, &event.content))?;
    let id: [u8; 32] = Sha256::digest(serialized.as_bytes()).into();
    if hex::encode(id) != event.id {
        return Err("id mismatch".into());
    }
    let mut pubkey = [0u8; 32];
    hex::decode_to_slice(&event.pubkey, &mut pubkey)?;
    let mut sig = [0u8; 64];
    hex::decode_to_slice(&event.sig, &mut sig)?;
    let key = k256::schnorr::VerifyingKey::from_bytes(&pubkey).map_err(|error| format!("bad pubkey: {error}"))?;
    let sig = k256::schnorr::Signature::try_from(&sig[..]).map_err(|error| format!("bad signature: {error}"))?;
    key.verify_raw(&id, &sig).map_err(|error| format!("signature does not verify: {error}"))?;
    Ok(())
}

/// An event ready to send: its id and the whole `["EVENT", {...}]` text.
#[derive(Debug, Clone)]
pub struct NostrPrepared {
    /// Hex id (routes the OK).
    pub id: String,
    /// The client message.
    pub frame: String,
}

/// Signs `count` drafts on every core, in index order, and builds the EVENT messages.
pub fn prepare_all<F>(count: usize, keys: &[NostrKey], draft: F) -> CliResult<Vec<NostrPrepared>>
where
    F: Fn(usize) -> NostrDraft + Sync,
{
    let threads = cores().min(count.max(1));
    let chunk = count.div_ceil(threads).max(1);
    let draft = &draft;
    let parts: Vec<CliResult<Vec<NostrPrepared>>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|thread| {
                scope.spawn(move || -> CliResult<Vec<NostrPrepared>> {
                    let range = (thread * chunk).min(count)..((thread + 1) * chunk).min(count);
                    let mut out = Vec::with_capacity(range.len());
                    for index in range {
                        let draft = draft(index);
                        let key = keys.get(draft.key).ok_or("draft names a key that does not exist")?;
                        let event = sign(key, draft)?;
                        out.push(NostrPrepared { frame: serde_json::to_string(&("EVENT", &event))?, id: event.id });
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|handle| handle.join().unwrap_or_else(|_| Err("a signing thread panicked".into())))
            .collect()
    });
    let mut all = Vec::with_capacity(count);
    for part in parts {
        all.extend(part?);
    }
    Ok(all)
}

/// Content of `size` characters (at least 32): `head` and `second` as 16 hex digits each,
/// then the same printable filler as the Axon side.
pub fn content(size: usize, head: u64, second: u64) -> String {
    let mut out = format!("{head:016x}{second:016x}");
    out.extend((32..size).map(|index| (b'a' + (index % 26) as u8) as char));
    out
}

pub(super) fn content_index(content: &str) -> Option<u64> {
    u64::from_str_radix(content.get(0..16)?, 16).ok()
}

/// The benchmark's tag shape as Nostr tags.
pub fn tags(topic: &str, p: &str, e: &[u8; 32]) -> Vec<Vec<String>> {
    vec![vec!["t".into(), topic.into()], vec!["p".into(), p.into()], vec!["e".into(), hex::encode(e)]]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_events_verify() {
        let key = NostrKey::random();
        let event = sign(
            &key,
            NostrDraft {
                key: 0,
                created_at: 1_700_000_000,
                kind: 1000,
                tags: tags("topic", &key.pubkey, &[3; 32]),
                content: content(200, 7, 9),
            },
        )
        .expect("sign");
        assert_eq!(event.content.len(), 200);
        assert_eq!(content_index(&event.content), Some(7));
        assert!(verify(&event).is_ok());
        let mut forged = event.clone();
        forged.content.push('x');
        assert!(verify(&forged).is_err());
    }
}
