//! The signature rule of spec §3 (amended 2026-12-01), one by one and in batches.
//!
//! With `sig = R || S`, `A` the public key's point and `k = SHA-512(R || A || message) mod ℓ`
//! over the *received* bytes of R and A, a signature is valid if and only if:
//!
//! 1. S < ℓ;
//! 2. A and R are canonical encodings (y < p; x = 0 with the sign bit set is not);
//! 3. neither A nor R is of small order;
//! 4. the cofactored equation holds: `[8]([S]B − R − [k]A) = identity`.
//!
//! [`verify_single`] (and [`verify_prepared`], with the key already decoded) is the rule
//! itself. [`verify_batch`], [`verify_batch_prepared`] and [`BatchVerifier`] reach the same
//! verdict for every signature: clauses 1–3 per signature, then one random linear
//! combination of equation 4 for up to [`MAX_BATCH`] signatures, and single checks to find
//! the bad ones when that fails. Because equation 4 is cofactored, a batch of valid
//! signatures always passes (a torsion component of R is cleared by the `[8]` in every
//! term), and a batch with an invalid one fails except with probability about 2^-128.
//!
//! Verification uses `curve25519-dalek` directly (decompression, `is_small_order`,
//! `vartime_double_scalar_mul_basepoint`, `vartime_multiscalar_mul`); `ed25519-dalek` is
//! kept for keys and signing. See docs/protocol.md for why.

use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use curve25519_dalek::traits::{IsIdentity, VartimeMultiscalarMul};
use rand::RngCore;
use sha2::{Digest, Sha512};

/// The most signatures one random linear combination covers. A failed batch costs its
/// combination and then a single check per signature; the bound keeps that extra work
/// small and, with the probe and back-off of [`BatchVerifier`], keeps an attacker who
/// sends bad signatures from making verification slower per event than single checks.
pub const MAX_BATCH: usize = 64;

/// Single checks [`BatchVerifier`] runs after a failed batch before it tries a batch again,
/// at first and at most (the count doubles with every failure in a row).
const MIN_BACKOFF: usize = MAX_BATCH;
const MAX_BACKOFF: usize = 64 * MAX_BATCH;

/// Why a signature is invalid under spec §3's rule: the first clause it breaks, checked in
/// the order S, A, R, equation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum SignatureError {
    /// Clause 1: S ≥ ℓ.
    #[error("S is not below the group order")]
    NonCanonicalS,
    /// Clause 2: the public key is not a canonical encoding of a curve point.
    #[error("the public key is not a canonical point encoding")]
    NonCanonicalKey,
    /// Clause 3: the public key is a point of small order.
    #[error("the public key is of small order")]
    SmallOrderKey,
    /// Clause 2: R is not a canonical encoding of a curve point.
    #[error("R is not a canonical point encoding")]
    NonCanonicalR,
    /// Clause 3: R is a point of small order.
    #[error("R is of small order")]
    SmallOrderR,
    /// Clause 4: the cofactored equation does not hold.
    #[error("the signature equation does not hold")]
    Equation,
}

/// A public key that passed clauses 2 and 3: its received bytes (hashed into k) and its
/// point, negated once so every check computes `[S]B + [k](−A)`. Worth caching per author.
#[derive(Debug, Clone, Copy)]
pub struct VerificationKey {
    bytes: [u8; 32],
    minus_a: EdwardsPoint,
}

impl VerificationKey {
    /// Decodes a public key: a canonical encoding (clause 2) of a point that is not of
    /// small order (clause 3).
    pub fn from_bytes(bytes: &[u8; 32]) -> Result<VerificationKey, SignatureError> {
        let point = decode_canonical(bytes).ok_or(SignatureError::NonCanonicalKey)?;
        if point.is_small_order() {
            return Err(SignatureError::SmallOrderKey);
        }
        Ok(VerificationKey { bytes: *bytes, minus_a: -point })
    }

    /// The key's bytes as received.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.bytes
    }
}

/// Whether `bytes` is a canonical encoding, from the bytes alone: y < p = 2^255 − 19, and
/// not x = 0 with the sign bit set. x = 0 exactly when y = ±1 (x² = (y² − 1)/(dy² + 1),
/// and the denominator is never 0), so both cases are byte comparisons. Equivalent to
/// "decompresses and compresses back to the same bytes" (checked in the tests), without
/// the field inversion that compressing costs.
pub fn is_canonical_encoding(bytes: &[u8; 32]) -> bool {
    let high = bytes[31] & 0x7f;
    let sign = bytes[31] >> 7 == 1;
    let middle_all_ff = bytes[1..31].iter().all(|&byte| byte == 0xff);
    let middle_all_zero = bytes[1..31].iter().all(|&byte| byte == 0);
    // y ≥ p: y is 2^255 − 19 + j for j in 0..19, i.e. ed..ff ff..ff 7f.
    if high == 0x7f && middle_all_ff && bytes[0] >= 0xed {
        return false;
    }
    let y_is_one = high == 0 && middle_all_zero && bytes[0] == 1;
    let y_is_minus_one = high == 0x7f && middle_all_ff && bytes[0] == 0xec;
    !(sign && (y_is_one || y_is_minus_one))
}

/// The point `bytes` encodes, if it is a canonical encoding of a curve point.
fn decode_canonical(bytes: &[u8; 32]) -> Option<EdwardsPoint> {
    if !is_canonical_encoding(bytes) {
        return None;
    }
    CompressedEdwardsY(*bytes).decompress()
}

/// `k = SHA-512(R || A || message) mod ℓ` over the received bytes.
pub(crate) fn challenge(r: &[u8], a: &[u8; 32], message: &[u8]) -> Scalar {
    let mut hasher = Sha512::new();
    hasher.update(r);
    hasher.update(a);
    hasher.update(message);
    Scalar::from_bytes_mod_order_wide(&hasher.finalize().into())
}

/// A signature past clauses 1–3, with what equation 4 needs.
struct Parsed {
    s: Scalar,
    r: EdwardsPoint,
    k: Scalar,
    minus_a: EdwardsPoint,
    /// The key's bytes: signatures by one author share one `−A` term in a batch.
    author: [u8; 32],
}

impl Parsed {
    /// Clauses 1–3 (S, then A, then R) and the challenge.
    fn new(
        key: Result<&VerificationKey, SignatureError>,
        message: &[u8],
        signature: &[u8; 64],
    ) -> Result<Parsed, SignatureError> {
        let (r_bytes, s_bytes) = signature.split_at(32);
        let mut s = [0u8; 32];
        s.copy_from_slice(s_bytes);
        let s = Option::<Scalar>::from(Scalar::from_canonical_bytes(s)).ok_or(SignatureError::NonCanonicalS)?;
        let key = key?;
        let mut r_encoding = [0u8; 32];
        r_encoding.copy_from_slice(r_bytes);
        let r = decode_canonical(&r_encoding).ok_or(SignatureError::NonCanonicalR)?;
        if r.is_small_order() {
            return Err(SignatureError::SmallOrderR);
        }
        Ok(Parsed { s, r, k: challenge(r_bytes, &key.bytes, message), minus_a: key.minus_a, author: key.bytes })
    }

    /// Equation 4: `[8]([S]B + [k](−A) − R) = identity`.
    fn equation_holds(&self) -> bool {
        let sb_minus_ka = EdwardsPoint::vartime_double_scalar_mul_basepoint(&self.k, &self.minus_a, &self.s);
        (sb_minus_ka - self.r).mul_by_cofactor().is_identity()
    }

    fn verdict(&self) -> Result<(), SignatureError> {
        if self.equation_holds() {
            Ok(())
        } else {
            Err(SignatureError::Equation)
        }
    }
}

/// Equation 4 for all of `batch` at once, with independent random 128-bit z_i:
/// `[8]([Σ z_i S_i]B + Σ [z_i k_i](−A_i) + Σ [z_i](−R_i)) = identity`, one multiscalar
/// multiplication. Signatures by one author share its `−A` term (their `z_i k_i` are
/// summed, the same sum), so a batch of n signatures by m authors multiplies n + m + 1
/// points, not 2n + 1: a relay's bursts come from few authors (one per connection).
fn batch_equation_holds(batch: &[&Parsed], rng: &mut impl RngCore) -> bool {
    let mut scalars = Vec::with_capacity(2 * batch.len() + 1);
    let mut points = Vec::with_capacity(2 * batch.len() + 1);
    // Each author seen so far and the index of its `−A` term.
    let mut authors: Vec<(&[u8; 32], usize)> = Vec::new();
    let mut b_coefficient = Scalar::ZERO;
    for parsed in batch {
        let mut z_bytes = [0u8; 32];
        rng.fill_bytes(&mut z_bytes[..16]);
        let z = Scalar::from_bytes_mod_order(z_bytes);
        b_coefficient += z * parsed.s;
        let zk = z * parsed.k;
        match authors.iter().find(|(author, _)| **author == parsed.author) {
            Some(&(_, term)) => scalars[term] += zk,
            None => {
                authors.push((&parsed.author, scalars.len()));
                scalars.push(zk);
                points.push(parsed.minus_a);
            }
        }
        scalars.push(z);
        points.push(-parsed.r);
    }
    scalars.push(b_coefficient);
    points.push(curve25519_dalek::constants::ED25519_BASEPOINT_POINT);
    EdwardsPoint::vartime_multiscalar_mul(&scalars, &points).mul_by_cofactor().is_identity()
}

/// Spec §3's signature rule for one signature by `pubkey` over `message`.
pub fn verify_single(pubkey: &[u8; 32], message: &[u8], signature: &[u8; 64]) -> Result<(), SignatureError> {
    let key = VerificationKey::from_bytes(pubkey);
    Parsed::new(key.as_ref().map_err(|error| *error), message, signature)?.verdict()
}

/// [`verify_single`] with the public key already decoded (e.g. from a per-author cache).
pub fn verify_prepared(key: &VerificationKey, message: &[u8], signature: &[u8; 64]) -> Result<(), SignatureError> {
    Parsed::new(Ok(key), message, signature)?.verdict()
}

/// One signature to verify, by the public key's bytes.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// The public key as received.
    pub pubkey: &'a [u8; 32],
    /// The signed message (for events, the 32-byte id).
    pub message: &'a [u8],
    /// `R || S`.
    pub signature: &'a [u8; 64],
}

/// One signature to verify, by a decoded public key.
#[derive(Debug, Clone, Copy)]
pub struct PreparedSigned<'a> {
    /// The decoded public key.
    pub key: &'a VerificationKey,
    /// The signed message (for events, the 32-byte id).
    pub message: &'a [u8],
    /// `R || S`.
    pub signature: &'a [u8; 64],
}

/// Verifies every signature in `items` in batches; the verdict for each equals
/// [`verify_single`]'s (up to a 2^-128 chance per failed batch of missing a bad one).
pub fn verify_batch(items: &[Signed<'_>]) -> Vec<Result<(), SignatureError>> {
    let keys: Vec<Result<VerificationKey, SignatureError>> =
        items.iter().map(|item| VerificationKey::from_bytes(item.pubkey)).collect();
    let mut verifier = BatchVerifier::new();
    verifier.verify_each(
        items.iter().zip(&keys).map(|(item, key)| (key.as_ref().map_err(|error| *error), item.message, item.signature)),
        items.len(),
    )
}

/// [`verify_batch`] with the public keys already decoded.
pub fn verify_batch_prepared(items: &[PreparedSigned<'_>]) -> Vec<Result<(), SignatureError>> {
    BatchVerifier::new().verify(items)
}

/// A batch verifier that remembers failures: after a batch fails it checks
/// signatures singly for a while — [`MAX_BATCH`] of them at first, twice as many after
/// every further failure in a row, up to 64 × [`MAX_BATCH`] — so a stream where bad
/// signatures keep spoiling batches costs about what single checks cost. Once a batch has
/// failed, each batch starts with a single check of its first signature (the probe): if it
/// is bad the rest of the batch is checked singly too and the back-off stays as long, so a
/// stream of only bad signatures pays for one combination at its start and none after. A
/// successful batch halves the back-off; while it is 0 (no failure lately) batches are not
/// probed, so valid traffic pays for no single check. Keep one per verifying thread.
#[derive(Debug, Clone, Default)]
pub struct BatchVerifier {
    /// Single checks left before the next batch is tried.
    singles_left: usize,
    /// The length of the next back-off; 0 while batches succeed.
    backoff: usize,
}

impl BatchVerifier {
    /// A verifier that starts out batching.
    pub fn new() -> BatchVerifier {
        BatchVerifier::default()
    }

    /// Verifies every signature in `items`; the verdicts are in the same order and equal
    /// [`verify_prepared`]'s.
    pub fn verify(&mut self, items: &[PreparedSigned<'_>]) -> Vec<Result<(), SignatureError>> {
        self.verify_each(items.iter().map(|item| (Ok(item.key), item.message, item.signature)), items.len())
    }

    /// Whether the verifier is backing off (checking singly) after a failed batch.
    pub fn is_backing_off(&self) -> bool {
        self.singles_left > 0
    }

    fn verify_each<'a>(
        &mut self,
        items: impl Iterator<Item = (Result<&'a VerificationKey, SignatureError>, &'a [u8], &'a [u8; 64])>,
        len: usize,
    ) -> Vec<Result<(), SignatureError>> {
        let mut verdicts: Vec<Result<(), SignatureError>> = Vec::with_capacity(len);
        // Signatures past clauses 1–3 waiting for equation 4, with their index.
        let mut pending: Vec<(usize, Parsed)> = Vec::with_capacity(len.min(MAX_BATCH));
        let mut rng = rand::thread_rng();
        for (index, (key, message, signature)) in items.enumerate() {
            match Parsed::new(key, message, signature) {
                Err(error) => verdicts.push(Err(error)),
                Ok(parsed) if self.singles_left > 0 => {
                    self.singles_left -= 1;
                    verdicts.push(parsed.verdict());
                }
                Ok(parsed) => {
                    verdicts.push(Ok(()));
                    pending.push((index, parsed));
                    if pending.len() == MAX_BATCH {
                        self.settle(&mut pending, &mut verdicts, &mut rng);
                    }
                }
            }
        }
        self.settle(&mut pending, &mut verdicts, &mut rng);
        verdicts
    }

    /// Decides equation 4 for `pending` (at most [`MAX_BATCH`]): probe, batch, and single
    /// checks after a failure.
    fn settle(
        &mut self,
        pending: &mut Vec<(usize, Parsed)>,
        verdicts: &mut [Result<(), SignatureError>],
        rng: &mut impl RngCore,
    ) {
        let mut set = |index: usize, verdict: Result<(), SignatureError>| {
            if let Some(slot) = verdicts.get_mut(index) {
                *slot = verdict;
            }
        };
        let Some(((probe_index, probe), rest)) = pending.split_first() else {
            // Nothing was batched (e.g. every signature was checked singly while backing
            // off): no news for the back-off either way.
            return;
        };
        // Probe only after failures (valid traffic pays for no single check), or when the
        // "batch" is one signature, which a single check settles more cheaply.
        let mut outcome = Outcome::Passed;
        let mut unchecked: &[(usize, Parsed)] = pending;
        if self.backoff > 0 || rest.is_empty() {
            let verdict = probe.verdict();
            let passed = verdict.is_ok();
            set(*probe_index, verdict);
            unchecked = rest;
            if !passed {
                for (index, parsed) in rest {
                    set(*index, parsed.verdict());
                }
                unchecked = &[];
                outcome = Outcome::ProbeFailed;
            }
        }
        if !unchecked.is_empty() {
            let batch: Vec<&Parsed> = unchecked.iter().map(|(_, parsed)| parsed).collect();
            if !batch_equation_holds(&batch, rng) {
                for (index, parsed) in unchecked {
                    set(*index, parsed.verdict());
                }
                outcome = Outcome::Wasted;
            }
        }
        pending.clear();
        match outcome {
            Outcome::Wasted => {
                self.backoff = (self.backoff * 2).clamp(MIN_BACKOFF, MAX_BACKOFF);
                self.singles_left = self.backoff;
            }
            Outcome::Passed => self.backoff /= 2,
            Outcome::ProbeFailed => {}
        }
    }
}

/// What settling a batch told the back-off.
enum Outcome {
    /// Every signature passed.
    Passed,
    /// A probe (or a lone signature) failed: bad signatures, found without a combination.
    ProbeFailed,
    /// A combination was computed and failed: work single checks could have saved.
    Wasted,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn y_above_p(j: u8) -> [u8; 32] {
        let mut bytes = [0xff; 32];
        bytes[0] = 0xed + j;
        bytes[31] = 0x7f;
        bytes
    }

    /// Canonical means "decompresses and compresses back to the same bytes".
    fn canonical_by_roundtrip(bytes: &[u8; 32]) -> Option<bool> {
        CompressedEdwardsY(*bytes).decompress().map(|point| point.compress().0 == *bytes)
    }

    #[test]
    fn byte_canonicity_check_equals_the_roundtrip() {
        let mut encodings = Vec::new();
        for j in 0..19 {
            encodings.push(y_above_p(j));
        }
        let mut one = [0u8; 32];
        one[0] = 1;
        let mut minus_one = y_above_p(0);
        minus_one[0] = 0xec;
        encodings.extend([one, minus_one, [0u8; 32]]);
        for seed in 0..64u8 {
            let key = ed25519_dalek::SigningKey::from_bytes(&[seed; 32]);
            encodings.push(key.verifying_key().to_bytes());
            let mut small_y = [0u8; 32];
            small_y[0] = seed;
            encodings.push(small_y);
        }
        let mut decoded = 0;
        for encoding in encodings {
            for sign in [0u8, 0x80] {
                let mut bytes = encoding;
                bytes[31] = (bytes[31] & 0x7f) | sign;
                if let Some(canonical) = canonical_by_roundtrip(&bytes) {
                    decoded += 1;
                    assert_eq!(is_canonical_encoding(&bytes), canonical, "{}", hex::encode(bytes));
                    assert_eq!(decode_canonical(&bytes).is_some(), canonical);
                }
            }
        }
        assert!(decoded > 100);
    }

    #[test]
    fn dalek_decompress_accepts_the_non_canonical_encodings_we_reject() {
        let accepted_above_p = (0..19).filter(|&j| CompressedEdwardsY(y_above_p(j)).decompress().is_some()).count();
        assert!(accepted_above_p > 2, "some y ≥ p encodings decode in dalek");
        let mut identity_with_sign = [0u8; 32];
        identity_with_sign[0] = 1;
        identity_with_sign[31] = 0x80;
        assert!(CompressedEdwardsY(identity_with_sign).decompress().is_some());
        assert!(!is_canonical_encoding(&identity_with_sign));
    }

    #[test]
    fn ordinary_signatures_verify_singly_and_in_batches() {
        let keys: Vec<ed25519_dalek::SigningKey> =
            (0..70u8).map(|seed| ed25519_dalek::SigningKey::from_bytes(&[seed; 32])).collect();
        let messages: Vec<[u8; 32]> = (0..70u8).map(|index| [index; 32]).collect();
        let sigs: Vec<[u8; 64]> = keys
            .iter()
            .zip(&messages)
            .map(|(key, message)| ed25519_dalek::Signer::sign(key, message).to_bytes())
            .collect();
        let pubkeys: Vec<[u8; 32]> = keys.iter().map(|key| key.verifying_key().to_bytes()).collect();
        let mut items: Vec<Signed> = (0..70)
            .map(|index| Signed { pubkey: &pubkeys[index], message: &messages[index], signature: &sigs[index] })
            .collect();
        for item in &items {
            assert_eq!(verify_single(item.pubkey, item.message, item.signature), Ok(()));
        }
        assert!(verify_batch(&items).iter().all(Result::is_ok));
        let wrong = [9u8; 32];
        items[40].message = &wrong;
        let verdicts = verify_batch(&items);
        for (index, verdict) in verdicts.iter().enumerate() {
            assert_eq!(verdict.is_ok(), index != 40, "{index}");
        }
    }

    #[test]
    fn backoff_after_a_failed_batch_then_recovery() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let prepared = VerificationKey::from_bytes(&key.verifying_key().to_bytes()).expect("key");
        let message = [5u8; 32];
        let good = ed25519_dalek::Signer::sign(&key, &message).to_bytes();
        let mut bad = good;
        bad[40] ^= 1;
        let mut items = vec![PreparedSigned { key: &prepared, message: &message, signature: &good }; MAX_BATCH];
        items[10].signature = &bad;
        let mut verifier = BatchVerifier::new();
        let verdicts = verifier.verify(&items);
        assert_eq!(verdicts.iter().filter(|verdict| verdict.is_err()).count(), 1);
        assert!(verifier.is_backing_off());
        // 64 single checks end the first back-off; the next failed batch doubles it.
        assert_eq!(verifier.verify(&items).iter().filter(|verdict| verdict.is_err()).count(), 1);
        assert!(!verifier.is_backing_off());
        assert_eq!(verifier.verify(&items).iter().filter(|verdict| verdict.is_err()).count(), 1);
        assert_eq!(verifier.verify(&items).iter().filter(|verdict| verdict.is_err()).count(), 1);
        assert!(verifier.is_backing_off(), "128 single checks after the second failure");
        let all_good = vec![PreparedSigned { key: &prepared, message: &message, signature: &good }; 2 * MAX_BATCH];
        assert!(verifier.verify(&all_good).iter().all(Result::is_ok));
        assert!(!verifier.is_backing_off());
    }
}
