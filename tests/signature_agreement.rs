//! The single and the batch paths of spec §3's signature rule give every signature the
//! same verdict, for random mixes of valid, torsion-component and invalid signatures of
//! every kind.

use axon_relay::protocol::signature::{
    self, BatchVerifier, PreparedSigned, SignatureError, Signed, VerificationKey, MAX_BATCH,
};
use curve25519_dalek::constants::ED25519_BASEPOINT_POINT;
use curve25519_dalek::edwards::{CompressedEdwardsY, EdwardsPoint};
use curve25519_dalek::scalar::Scalar;
use ed25519_dalek::{Signer, SigningKey};
use proptest::prelude::*;
use sha2::{Digest, Sha512};

/// What to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Valid,
    TorsionR,
    WrongMessage,
    SPlusL,
    SEqualsL,
    SmallOrderR,
    NonCanonicalRSignBit,
    NonCanonicalRAboveP,
    RNotAPoint,
    SmallOrderA,
    NonCanonicalA,
    AAboveP,
    ANotAPoint,
}

const KINDS: [Kind; 13] = [
    Kind::Valid,
    Kind::TorsionR,
    Kind::WrongMessage,
    Kind::SPlusL,
    Kind::SEqualsL,
    Kind::SmallOrderR,
    Kind::NonCanonicalRSignBit,
    Kind::NonCanonicalRAboveP,
    Kind::RNotAPoint,
    Kind::SmallOrderA,
    Kind::NonCanonicalA,
    Kind::AAboveP,
    Kind::ANotAPoint,
];

const L: [u8; 32] = [
    0xed, 0xd3, 0xf5, 0x5c, 0x1a, 0x63, 0x12, 0x58, 0xd6, 0x9c, 0xf7, 0xa2, 0xde, 0xf9, 0xde, 0x14, 0, 0, 0, 0, 0, 0,
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0x10,
];
/// Points of order 8 and 4 (canonical encodings).
const ORDER_8: [u8; 32] = [
    0x26, 0xe8, 0x95, 0x8f, 0xc2, 0xb2, 0x27, 0xb0, 0x45, 0xc3, 0xf4, 0x89, 0xf2, 0xef, 0x98, 0xf0, 0xd5, 0xdf, 0xac,
    0x05, 0xd3, 0xc6, 0x33, 0x39, 0xb1, 0x38, 0x02, 0x88, 0x6d, 0x53, 0xfc, 0x05,
];
const ORDER_4: [u8; 32] = [0; 32];

fn y_above_p(j: u8) -> [u8; 32] {
    let mut bytes = [0xff; 32];
    bytes[0] = 0xed + j;
    bytes[31] = 0x7f;
    bytes
}

fn point(bytes: &[u8; 32]) -> EdwardsPoint {
    CompressedEdwardsY(*bytes).decompress().expect("a point")
}

fn k(r: &[u8], a: &[u8; 32], message: &[u8]) -> Scalar {
    let hash = Sha512::new().chain_update(r).chain_update(a).chain_update(message);
    Scalar::from_bytes_mod_order_wide(&hash.finalize().into())
}

/// A signature case: public key bytes, message, signature.
struct Case {
    pubkey: [u8; 32],
    message: [u8; 32],
    sig: [u8; 64],
}

fn make(kind: Kind, seed: u64) -> Case {
    let mut seed_bytes = [0x5au8; 32];
    seed_bytes[..8].copy_from_slice(&seed.to_le_bytes());
    let key = SigningKey::from_bytes(&seed_bytes);
    let a = key.to_scalar();
    let pubkey = key.verifying_key().to_bytes();
    let mut message = [0u8; 32];
    message[..8].copy_from_slice(&seed.to_be_bytes());
    message[8] = kind as u8;
    let r = Scalar::from_bytes_mod_order_wide(&Sha512::digest(message).into());
    let rb = (ED25519_BASEPOINT_POINT * r).compress().0;
    // S = r + k·a with R given as bytes.
    let signed = |r_bytes: [u8; 32], r: Scalar, pubkey: [u8; 32], a: Scalar| {
        let s = r + k(&r_bytes, &pubkey, &message) * a;
        let mut sig = [0u8; 64];
        sig[..32].copy_from_slice(&r_bytes);
        sig[32..].copy_from_slice(&s.to_bytes());
        Case { pubkey, message, sig }
    };
    let mut identity = [0u8; 32];
    identity[0] = 1;
    let mut identity_sign = identity;
    identity_sign[31] = 0x80;
    match kind {
        Kind::Valid => Case { pubkey, message, sig: key.sign(&message).to_bytes() },
        Kind::TorsionR => signed((ED25519_BASEPOINT_POINT * r + point(&ORDER_8)).compress().0, r, pubkey, a),
        Kind::WrongMessage => {
            let mut case = Case { pubkey, message, sig: key.sign(&message).to_bytes() };
            case.message[31] ^= 1;
            case
        }
        Kind::SPlusL => {
            let mut case = Case { pubkey, message, sig: key.sign(&message).to_bytes() };
            let mut carry = 0u16;
            for (byte, l) in case.sig[32..].iter_mut().zip(L) {
                let sum = *byte as u16 + l as u16 + carry;
                *byte = sum as u8;
                carry = sum >> 8;
            }
            case
        }
        Kind::SEqualsL => {
            let mut case = signed(rb, r, pubkey, a);
            case.sig[32..].copy_from_slice(&L);
            case
        }
        Kind::SmallOrderR => signed(if seed.is_multiple_of(2) { ORDER_8 } else { ORDER_4 }, Scalar::ZERO, pubkey, a),
        Kind::NonCanonicalRSignBit => signed(identity_sign, Scalar::ZERO, pubkey, a),
        Kind::NonCanonicalRAboveP => signed(y_above_p(3), r, pubkey, a),
        // y = 2 is canonical but not on the curve ((y² − 1)/(dy² + 1) is not a square).
        Kind::RNotAPoint => {
            let mut not_a_point = [0u8; 32];
            not_a_point[0] = 2;
            signed(not_a_point, r, pubkey, a)
        }
        // A of small order with R = [r]B, S = r: the cofactored equation holds.
        Kind::SmallOrderA => signed(rb, r, if seed.is_multiple_of(2) { ORDER_8 } else { identity }, Scalar::ZERO),
        Kind::NonCanonicalA => {
            signed(rb, r, if seed.is_multiple_of(2) { identity_sign } else { y_above_p(1) }, Scalar::ZERO)
        }
        Kind::AAboveP => signed(rb, r, y_above_p(3), a),
        Kind::ANotAPoint => signed(rb, r, [0xff; 32], a),
    }
}

fn kinds() -> impl Strategy<Value = Vec<(Kind, u64)>> {
    // Mostly valid, so batches of every outcome occur; sizes span several MAX_BATCH chunks.
    let kind = prop_oneof![
        6 => Just(Kind::Valid),
        2 => Just(Kind::TorsionR),
        1 => proptest::sample::select(KINDS.to_vec()),
    ];
    proptest::collection::vec((kind, 0u64..32), 0..(2 * MAX_BATCH + 10))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn single_and_batch_verdicts_agree(mix in kinds()) {
        let cases: Vec<Case> = mix.iter().map(|&(kind, seed)| make(kind, seed)).collect();
        let singles: Vec<Result<(), SignatureError>> =
            cases.iter().map(|case| signature::verify_single(&case.pubkey, &case.message, &case.sig)).collect();
        for (&(kind, _), verdict) in mix.iter().zip(&singles) {
            prop_assert_eq!(*verdict, expected(kind), "{:?}", kind);
        }
        let items: Vec<Signed> = cases
            .iter()
            .map(|case| Signed { pubkey: &case.pubkey, message: &case.message, signature: &case.sig })
            .collect();
        prop_assert_eq!(&signature::verify_batch(&items), &singles);

        // The prepared path, with one verifier across calls (its back-off state carries over).
        let keys: Vec<Result<VerificationKey, SignatureError>> =
            cases.iter().map(|case| VerificationKey::from_bytes(&case.pubkey)).collect();
        let prepared: Vec<(usize, PreparedSigned)> = cases
            .iter()
            .zip(&keys)
            .enumerate()
            .filter_map(|(index, (case, key))| {
                key.as_ref().ok().map(|key| (index, PreparedSigned { key, message: &case.message, signature: &case.sig }))
            })
            .collect();
        let mut verifier = BatchVerifier::new();
        let items: Vec<PreparedSigned> = prepared.iter().map(|(_, item)| *item).collect();
        let (first, second) = items.split_at(items.len() / 3);
        let mut verdicts = verifier.verify(first);
        verdicts.extend(verifier.verify(second));
        for ((index, _), verdict) in prepared.iter().zip(verdicts) {
            prop_assert_eq!(verdict, singles[*index]);
        }
    }
}

fn expected(kind: Kind) -> Result<(), SignatureError> {
    match kind {
        Kind::Valid | Kind::TorsionR => Ok(()),
        Kind::WrongMessage => Err(SignatureError::Equation),
        Kind::SPlusL | Kind::SEqualsL => Err(SignatureError::NonCanonicalS),
        Kind::SmallOrderR => Err(SignatureError::SmallOrderR),
        Kind::NonCanonicalRSignBit | Kind::NonCanonicalRAboveP | Kind::RNotAPoint => Err(SignatureError::NonCanonicalR),
        Kind::SmallOrderA => Err(SignatureError::SmallOrderKey),
        Kind::NonCanonicalA | Kind::AAboveP | Kind::ANotAPoint => Err(SignatureError::NonCanonicalKey),
    }
}

#[test]
fn every_kind_gets_its_verdict() {
    for kind in KINDS {
        for seed in 0..2 {
            let case = make(kind, seed);
            let verdict = signature::verify_single(&case.pubkey, &case.message, &case.sig);
            assert_eq!(verdict, expected(kind), "{kind:?} {seed}");
        }
    }
    // The torsion case is valid only because the equation is cofactored.
    let case = make(Kind::TorsionR, 0);
    let key = ed25519_dalek::VerifyingKey::from_bytes(&case.pubkey).expect("key");
    assert!(key.verify_strict(&case.message, &ed25519_dalek::Signature::from_bytes(&case.sig)).is_err());
}
