//! Decoded public keys of recent authors, so verifying their next event skips point
//! decompression and the canonical and small-order checks of the key (spec §3, clauses 2
//! and 3 for A). A key that fails them is remembered as failing.

use std::collections::HashMap;
use std::sync::Mutex;

use crate::protocol::signature::{self, BatchVerifier, PreparedSigned, SignatureError, VerificationKey};
use crate::protocol::{Event, PublicKey};

/// Keys kept before the cache starts over (authors are allowlisted, so this is rarely hit).
const CAPACITY: usize = 4096;

/// A key's verdict under clauses 2 and 3: the decoded key, or why it is unusable.
type Decoded = Result<VerificationKey, SignatureError>;

/// A bounded map from public key bytes to the decoded key (or why it is unusable).
#[derive(Default)]
pub struct KeyCache {
    keys: Mutex<HashMap<PublicKey, Decoded>>,
}

impl KeyCache {
    /// The decoded key for `pubkey`, from the cache when it is there.
    pub fn prepare(&self, pubkey: &PublicKey) -> Decoded {
        if let Some(decoded) = self.with_keys(|keys| keys.get(pubkey).copied()) {
            return decoded;
        }
        let decoded = VerificationKey::from_bytes(pubkey);
        self.with_keys(|keys| {
            if keys.len() >= CAPACITY {
                keys.clear();
            }
            keys.insert(*pubkey, decoded);
        });
        decoded
    }

    fn with_keys<T>(&self, work: impl FnOnce(&mut HashMap<PublicKey, Decoded>) -> T) -> T {
        work(&mut crate::sync::lock(&self.keys))
    }

    /// Spec §3's signature rule for the event's signature over its id (the same verdict as
    /// [`Event::verify_signature`]); the error names the clause that failed.
    pub fn verify(&self, event: &Event) -> Result<(), SignatureError> {
        let key = self.prepare(&event.pubkey)?;
        signature::verify_prepared(&key, &event.id, &event.sig)
    }

    /// [`KeyCache::verify`] for each event, in batches through `verifier` (the same verdict
    /// for every event; see [`BatchVerifier`]).
    pub fn verify_batch(&self, verifier: &mut BatchVerifier, events: &[&Event]) -> Vec<Result<(), SignatureError>> {
        let keys: Vec<Decoded> = events.iter().map(|event| self.prepare(&event.pubkey)).collect();
        let mut verdicts: Vec<Result<(), SignatureError>> = vec![Ok(()); events.len()];
        let mut items = Vec::with_capacity(events.len());
        let mut positions = Vec::with_capacity(events.len());
        for (index, (event, key)) in events.iter().zip(&keys).enumerate() {
            match key {
                Ok(key) => {
                    items.push(PreparedSigned { key, message: &event.id, signature: &event.sig });
                    positions.push(index);
                }
                Err(error) => verdicts[index] = Err(*error),
            }
        }
        for (position, verdict) in positions.into_iter().zip(verifier.verify(&items)) {
            verdicts[position] = verdict;
        }
        verdicts
    }
}

#[cfg(test)]
mod tests {
    use ed25519_dalek::SigningKey;

    use super::*;

    #[test]
    fn agrees_with_uncached_verification() {
        let cache = KeyCache::default();
        let event = Event::sign(&SigningKey::from_bytes(&[3; 32]), 1, 1000, b"x".to_vec(), vec![]).expect("sign");
        assert!(cache.verify(&event).is_ok());
        assert!(cache.verify(&event).is_ok(), "from the cache");
        let mut forged = event.clone();
        forged.sig[32] ^= 1; // S stays below ℓ: only the equation fails
        assert!(forged.verify_signature().is_err());
        assert_eq!(cache.verify(&forged), Err(SignatureError::Equation));
        let mut not_a_point = event.clone();
        not_a_point.pubkey = [0xff; 32];
        assert_eq!(cache.verify(&not_a_point), Err(SignatureError::NonCanonicalKey));
        let mut small_order = forged.clone();
        small_order.pubkey = [0; 32];
        small_order.pubkey[0] = 1;
        assert_eq!(cache.verify(&small_order), Err(SignatureError::SmallOrderKey));
        assert_eq!(cache.prepare(&small_order.pubkey).err(), Some(SignatureError::SmallOrderKey), "remembered");
        let mut verifier = BatchVerifier::new();
        let events = [&event, &forged, &not_a_point, &small_order, &event];
        let verdicts = cache.verify_batch(&mut verifier, &events);
        let singles: Vec<_> = events.iter().map(|event| cache.verify(event)).collect();
        assert_eq!(verdicts, singles);
        assert_eq!(verdicts.iter().filter(|verdict| verdict.is_ok()).count(), 2);
    }
}
