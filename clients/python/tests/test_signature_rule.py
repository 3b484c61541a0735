"""The amended signature rule of spec §3, clause by clause, with signatures built here:
a torsion-component R (valid, though libsodium rejects it), a small-order R, a
non-canonical R, a non-canonical A, and S = ℓ (each invalid)."""

from __future__ import annotations

import hashlib
import os

import nacl.bindings
import nacl.exceptions
import pytest

import axon
from axon import _ed25519 as ed
from axon._ed25519 import BASE, L, P

MESSAGE = hashlib.sha256(b"axon signature rule").digest()


def secret_scalar(key: axon.Key) -> int:
    digest = bytearray(hashlib.sha512(key.seed).digest()[:32])
    digest[0] &= 248
    digest[31] &= 127
    digest[31] |= 64
    return int.from_bytes(digest, "little")


def challenge(r_bytes: bytes, a_bytes: bytes, message: bytes) -> int:
    return int.from_bytes(hashlib.sha512(r_bytes + a_bytes + message).digest(), "little") % L


def order8_point() -> ed.Point:
    """A point of order exactly 8: [ℓ]Q for a curve point Q with a full torsion part."""
    y = 2
    while True:
        point, _ = ed.decode_point(y.to_bytes(32, "little"))
        if point is not None:
            torsion = ed.multiply(L, point)
            if not ed.is_identity(ed.multiply(4, torsion)):
                assert ed.is_identity(ed.multiply(8, torsion))
                return torsion
        y += 1


def libsodium_accepts(pubkey: bytes, sig: bytes) -> bool:
    try:
        nacl.bindings.crypto_sign_open(sig + MESSAGE, pubkey)
        return True
    except nacl.exceptions.BadSignatureError:
        return False


@pytest.fixture(scope="module")
def key() -> axon.Key:
    return axon.Key.from_seed(hashlib.sha256(b"signature rule key").digest())


def test_secret_scalar_matches_public_key(key: axon.Key) -> None:
    assert ed.encode_point(ed.multiply(secret_scalar(key), BASE)) == key.public_key


def test_ordinary_signature_valid(key: axon.Key) -> None:
    sig = key.sign(MESSAGE)
    assert ed.rule_violation(key.public_key, MESSAGE, sig) is None
    assert axon.verify_signature(key.public_key, MESSAGE, sig)


def test_torsion_component_r_is_valid(key: axon.Key) -> None:
    a = secret_scalar(key)
    r = int.from_bytes(os.urandom(64), "little") % L
    r_point = ed.add(ed.multiply(r, BASE), order8_point())
    r_bytes = ed.encode_point(r_point)
    s = (r + challenge(r_bytes, key.public_key, MESSAGE) * a) % L
    sig = r_bytes + s.to_bytes(32, "little")
    assert not libsodium_accepts(key.public_key, sig), "libsodium's cofactorless check rejects it"
    assert ed.rule_violation(key.public_key, MESSAGE, sig) is None
    assert axon.verify_signature(key.public_key, MESSAGE, sig)


def test_small_order_r_is_invalid(key: axon.Key) -> None:
    a = secret_scalar(key)
    torsion = order8_point()
    r_bytes = ed.encode_point(torsion)
    # S = k*a makes the cofactored equation hold: [8](SB - T - kA) = [8](-T) = 0.
    s = (challenge(r_bytes, key.public_key, MESSAGE) * a) % L
    sig = r_bytes + s.to_bytes(32, "little")
    assert ed.rule_violation(key.public_key, MESSAGE, sig) == "R: small order"
    assert not axon.verify_signature(key.public_key, MESSAGE, sig)
    identity = ed.encode_point(ed.IDENTITY)
    sig = identity + s.to_bytes(32, "little")
    assert not axon.verify_signature(key.public_key, MESSAGE, sig)


@pytest.mark.parametrize("y", [3, 4, 5, 6, 9, 10, 14, 15, 16, 18])
def test_non_canonical_r_is_invalid(key: axon.Key, y: int) -> None:
    point, _ = ed.decode_point(y.to_bytes(32, "little"))
    assert point is not None and not ed.is_small_order(point)
    r_bytes = (y + P).to_bytes(32, "little")  # the same point, y encoded as y + p
    sig = r_bytes + key.sign(MESSAGE)[32:]
    assert ed.rule_violation(key.public_key, MESSAGE, sig) == "R: non-canonical (y >= p)"
    assert not axon.verify_signature(key.public_key, MESSAGE, sig)


def test_r_with_x_zero_and_sign_bit_is_non_canonical(key: axon.Key) -> None:
    r_bytes = bytearray(ed.encode_point(ed.IDENTITY))
    r_bytes[31] |= 0x80
    sig = bytes(r_bytes) + key.sign(MESSAGE)[32:]
    assert ed.rule_violation(key.public_key, MESSAGE, sig) == "R: non-canonical (x = 0 with the sign bit set)"
    assert not axon.verify_signature(key.public_key, MESSAGE, sig)


@pytest.mark.parametrize("y", [3, 9, 18])
def test_non_canonical_a_is_invalid(key: axon.Key, y: int) -> None:
    pubkey = (y + P).to_bytes(32, "little")
    sig = key.sign(MESSAGE)
    assert ed.rule_violation(pubkey, MESSAGE, sig) == "public key: non-canonical (y >= p)"
    assert not axon.verify_signature(pubkey, MESSAGE, sig)


def test_small_order_a_is_invalid() -> None:
    identity = ed.encode_point(ed.IDENTITY)
    # With A and R the identity and S = 0 every equation holds; only clause 3 rejects.
    sig = identity + (0).to_bytes(32, "little")
    assert ed.rule_violation(identity, MESSAGE, sig) == "public key: small order"
    assert not axon.verify_signature(identity, MESSAGE, sig)


def test_s_equal_to_l_is_invalid(key: axon.Key) -> None:
    sig = key.sign(MESSAGE)
    s = int.from_bytes(sig[32:], "little")
    plus_l = sig[:32] + (s + L).to_bytes(32, "little")  # equation still holds: (S+ℓ)B = SB
    assert ed.rule_violation(key.public_key, MESSAGE, plus_l) == "S is not below the group order"
    assert not axon.verify_signature(key.public_key, MESSAGE, plus_l)
    exactly_l = sig[:32] + L.to_bytes(32, "little")
    assert ed.rule_violation(key.public_key, MESSAGE, exactly_l) == "S is not below the group order"
    assert not axon.verify_signature(key.public_key, MESSAGE, exactly_l)


def test_wrong_message_is_invalid(key: axon.Key) -> None:
    sig = key.sign(MESSAGE)
    assert ed.rule_violation(key.public_key, MESSAGE[::-1], sig) == "the cofactored equation does not hold"
    assert not axon.verify_signature(key.public_key, MESSAGE[::-1], sig)


def test_torsion_signed_event_validates(key: axon.Key) -> None:
    """An event whose signature has a torsion component passes Event.validate."""
    event = axon.Event.sign(key, kind=1000, content=b"torsion", created_at=1700000000)
    a = secret_scalar(key)
    r = int.from_bytes(os.urandom(64), "little") % L
    r_bytes = ed.encode_point(ed.add(ed.multiply(r, BASE), order8_point()))
    s = (r + challenge(r_bytes, key.public_key, event.id) * a) % L
    torsion_event = axon.Event(event.id, event.pubkey, event.created_at, event.kind, event.content,
                               r_bytes + s.to_bytes(32, "little"), event.tags)
    torsion_event.validate()
    decoded = axon.Event.decode_and_validate(torsion_event.encode())
    assert decoded == torsion_event
