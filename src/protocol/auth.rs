//! The AUTH digest (spec §7): what a client signs to authenticate and a relay verifies.

use sha2::{Digest, Sha256};

/// SHA-256(nonce || relay_url): the 32 bytes an AUTH signature is over. `relay_url` is the
/// exact string the relay is configured with; no normalisation.
pub fn auth_digest(nonce: &[u8; 32], relay_url: &str) -> [u8; 32] {
    Sha256::new().chain_update(nonce).chain_update(relay_url.as_bytes()).finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_binds_nonce_and_exact_url() {
        let nonce = [7; 32];
        let mut joined = nonce.to_vec();
        joined.extend_from_slice(b"ws://a/");
        let expected: [u8; 32] = Sha256::digest(&joined).into();
        assert_eq!(auth_digest(&nonce, "ws://a/"), expected);
        assert_ne!(auth_digest(&nonce, "ws://a"), expected, "no normalisation");
    }
}
