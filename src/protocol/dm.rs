//! Direct-message encryption for clients (spec §12). The relay never decrypts.
//!
//! Ed25519 keys are converted to X25519 (secret: clamped SHA-512 of the seed; public: the
//! birational map), the shared secret goes through HKDF-SHA256 with info `axon-dm-v1`, and
//! the plaintext is sealed with ChaCha20-Poly1305 under a random 12-byte nonce, with
//! `sender pubkey || recipient pubkey` as associated data.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{ChaCha20Poly1305, Nonce};
use ed25519_dalek::{SigningKey, VerifyingKey};
use hkdf::Hkdf;
use rand::RngCore;
use sha2::Sha256;
use x25519_dalek::{PublicKey as X25519Public, StaticSecret};

use super::event::PublicKey;

const NONCE_BYTES: usize = 12;
const HKDF_INFO: &[u8] = b"axon-dm-v1";

/// Why a direct message could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DmError {
    /// A public key is not a valid Ed25519 point.
    #[error("invalid public key")]
    InvalidKey,
    /// The key agreement gave an all-zero secret (small-order peer key).
    #[error("key agreement failed: small-order peer key")]
    WeakKey,
    /// The content is shorter than a nonce plus a tag.
    #[error("content too short to be a sealed message")]
    TooShort,
    /// Authentication failed: wrong key, wrong sender/recipient, or tampered bytes.
    #[error("decryption failed")]
    Decrypt,
}

/// The 32-byte symmetric key shared by `own` and `peer`.
fn shared_key(own: &SigningKey, peer: &PublicKey) -> Result<[u8; 32], DmError> {
    let peer = VerifyingKey::from_bytes(peer).map_err(|_| DmError::InvalidKey)?;
    let secret = StaticSecret::from(own.to_scalar_bytes());
    let peer_x25519 = X25519Public::from(peer.to_montgomery().to_bytes());
    let shared = secret.diffie_hellman(&peer_x25519);
    if !shared.was_contributory() {
        return Err(DmError::WeakKey);
    }
    let mut key = [0u8; 32];
    Hkdf::<Sha256>::new(None, shared.as_bytes()).expand(HKDF_INFO, &mut key).map_err(|_| DmError::InvalidKey)?;
    Ok(key)
}

fn associated_data(sender: &PublicKey, recipient: &PublicKey) -> [u8; 64] {
    let mut aad = [0u8; 64];
    aad[..32].copy_from_slice(sender);
    aad[32..].copy_from_slice(recipient);
    aad
}

/// Encrypts `plaintext` from `sender` to `recipient`: returns the DM event content.
pub fn seal(sender: &SigningKey, recipient: &PublicKey, plaintext: &[u8]) -> Result<Vec<u8>, DmError> {
    let key = shared_key(sender, recipient)?;
    let mut nonce = [0u8; NONCE_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let aad = associated_data(&sender.verifying_key().to_bytes(), recipient);
    let ciphertext = ChaCha20Poly1305::new(&key.into())
        .encrypt(Nonce::from_slice(&nonce), Payload { msg: plaintext, aad: &aad })
        .map_err(|_| DmError::Decrypt)?;
    let mut content = nonce.to_vec();
    content.extend_from_slice(&ciphertext);
    Ok(content)
}

/// Decrypts DM `content` sent by `sender` to `recipient`; `own` is either party's key.
pub fn open(own: &SigningKey, sender: &PublicKey, recipient: &PublicKey, content: &[u8]) -> Result<Vec<u8>, DmError> {
    if content.len() < NONCE_BYTES + 16 {
        return Err(DmError::TooShort);
    }
    let own_public = own.verifying_key().to_bytes();
    let peer = if &own_public == sender { recipient } else { sender };
    let key = shared_key(own, peer)?;
    let (nonce, ciphertext) = content.split_at(NONCE_BYTES);
    let aad = associated_data(sender, recipient);
    ChaCha20Poly1305::new(&key.into())
        .decrypt(Nonce::from_slice(nonce), Payload { msg: ciphertext, aad: &aad })
        .map_err(|_| DmError::Decrypt)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> SigningKey {
        SigningKey::from_bytes(&[byte; 32])
    }

    #[test]
    fn recipient_and_sender_can_both_open() {
        let (alice, bob) = (key(1), key(2));
        let (alice_pub, bob_pub) = (alice.verifying_key().to_bytes(), bob.verifying_key().to_bytes());
        let content = seal(&alice, &bob_pub, b"hello bob").expect("seal");
        assert_eq!(open(&bob, &alice_pub, &bob_pub, &content), Ok(b"hello bob".to_vec()));
        assert_eq!(open(&alice, &alice_pub, &bob_pub, &content), Ok(b"hello bob".to_vec()));
    }

    #[test]
    fn tampered_ciphertext_fails() {
        let (alice, bob) = (key(1), key(2));
        let bob_pub = bob.verifying_key().to_bytes();
        let mut content = seal(&alice, &bob_pub, b"hello").expect("seal");
        let last = content.len() - 1;
        content[last] ^= 1;
        let alice_pub = alice.verifying_key().to_bytes();
        assert_eq!(open(&bob, &alice_pub, &bob_pub, &content), Err(DmError::Decrypt));
        content[last] ^= 1;
        content[0] ^= 1; // the nonce
        assert_eq!(open(&bob, &alice_pub, &bob_pub, &content), Err(DmError::Decrypt));
    }

    #[test]
    fn wrong_recipient_fails() {
        let (alice, bob, carol) = (key(1), key(2), key(3));
        let (alice_pub, bob_pub) = (alice.verifying_key().to_bytes(), bob.verifying_key().to_bytes());
        let content = seal(&alice, &bob_pub, b"for bob").expect("seal");
        assert_eq!(open(&carol, &alice_pub, &bob_pub, &content), Err(DmError::Decrypt));
        let carol_pub = carol.verifying_key().to_bytes();
        assert_eq!(open(&carol, &alice_pub, &carol_pub, &content), Err(DmError::Decrypt));
    }

    #[test]
    fn swapped_sender_fails() {
        let (alice, bob, carol) = (key(1), key(2), key(3));
        let (bob_pub, carol_pub) = (bob.verifying_key().to_bytes(), carol.verifying_key().to_bytes());
        let content = seal(&alice, &bob_pub, b"from alice").expect("seal");
        assert_eq!(open(&bob, &carol_pub, &bob_pub, &content), Err(DmError::Decrypt));
        // Same key pair, roles swapped in the associated data.
        let alice_pub = alice.verifying_key().to_bytes();
        assert_eq!(open(&bob, &bob_pub, &alice_pub, &content), Err(DmError::Decrypt));
    }

    #[test]
    fn short_content_fails() {
        let bob = key(2);
        let alice_pub = key(1).verifying_key().to_bytes();
        assert_eq!(open(&bob, &alice_pub, &bob.verifying_key().to_bytes(), &[0; 27]), Err(DmError::TooShort));
    }
}
