"""Direct-message encryption (spec §12), byte-compatible with the Rust implementation
(``src/protocol/dm.rs``).

Ed25519 keys become X25519 keys (secret: clamped SHA-512 of the seed; public: the
birational map), ``shared = X25519(own secret, peer public)``,
``key = HKDF-SHA256(shared, salt = empty, info = "axon-dm-v1", 32)`` and
``content = nonce (12 random bytes) || ChaCha20-Poly1305(key, nonce, plaintext,
aad = sender pubkey || recipient pubkey)``.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from typing import Union

import nacl.bindings
import nacl.exceptions

from .errors import AxonError, InvalidError
from .event import Event
from .keys import Key, parse_pubkey

__all__ = ["DmError", "seal", "open_content", "open_dm", "KIND_DM", "recipient_of"]

KIND_DM = 2000
NONCE_BYTES = 12
TAG_BYTES = 16
HKDF_INFO = b"axon-dm-v1"


class DmError(AxonError, ValueError):
    """A direct message could not be sealed or opened (wrong key, tampered bytes, a
    small-order key, or content too short)."""


def _hkdf_sha256(ikm: bytes, info: bytes, length: int = 32) -> bytes:
    prk = hmac.new(b"\x00" * 32, ikm, hashlib.sha256).digest()
    out = b""
    block = b""
    counter = 1
    while len(out) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
        counter += 1
    return out[:length]


def _shared_key(own: Key, peer: bytes) -> bytes:
    try:
        peer_x = nacl.bindings.crypto_sign_ed25519_pk_to_curve25519(peer)
        own_x = nacl.bindings.crypto_sign_ed25519_sk_to_curve25519(own.secret_key)
        shared = nacl.bindings.crypto_scalarmult(own_x, peer_x)
    except (nacl.exceptions.RuntimeError, nacl.exceptions.ValueError, nacl.exceptions.TypeError, RuntimeError) as error:
        raise DmError(f"key agreement failed: invalid or small-order peer key ({error})") from None
    if shared == b"\x00" * 32:
        raise DmError("key agreement failed: small-order peer key")
    return _hkdf_sha256(shared, HKDF_INFO)


def seal(sender: Key, recipient: Union[str, bytes, Key], plaintext: bytes) -> bytes:
    """Encrypts ``plaintext`` from ``sender`` to ``recipient``: the DM event content."""
    if not isinstance(sender, Key):
        raise TypeError(f"sender must be an axon.Key, got {type(sender).__name__}")
    if isinstance(plaintext, str):
        raise TypeError("plaintext must be bytes (encode text first)")
    recipient_key = parse_pubkey(recipient, "recipient")
    key = _shared_key(sender, recipient_key)
    nonce = os.urandom(NONCE_BYTES)
    aad = sender.public_key + recipient_key
    return nonce + nacl.bindings.crypto_aead_chacha20poly1305_ietf_encrypt(bytes(plaintext), aad, nonce, key)


def open_content(own: Key, sender: Union[str, bytes], recipient: Union[str, bytes], content: bytes) -> bytes:
    """Decrypts DM ``content`` sent by ``sender`` to ``recipient``; ``own`` is either
    party's key."""
    if not isinstance(own, Key):
        raise TypeError(f"own must be an axon.Key, got {type(own).__name__}")
    sender_key = parse_pubkey(sender, "sender")
    recipient_key = parse_pubkey(recipient, "recipient")
    if len(content) < NONCE_BYTES + TAG_BYTES:
        raise DmError("content too short to be a sealed message")
    peer = recipient_key if own.public_key == sender_key else sender_key
    key = _shared_key(own, peer)
    nonce, ciphertext = bytes(content[:NONCE_BYTES]), bytes(content[NONCE_BYTES:])
    try:
        return nacl.bindings.crypto_aead_chacha20poly1305_ietf_decrypt(
            ciphertext, sender_key + recipient_key, nonce, key
        )
    except nacl.exceptions.CryptoError:
        raise DmError("decryption failed (wrong key, wrong sender/recipient, or tampered bytes)") from None


def recipient_of(key: Key, event: Event) -> bytes:
    """The recipient to open ``event`` with: ``key`` itself when it is not the author,
    else the first well-formed ``p`` tag."""
    if event.pubkey != key.public_key:
        return key.public_key
    for value in event.tag_values("p"):
        if len(value) == 64 and all(c in "0123456789abcdef" for c in value):
            return bytes.fromhex(value)
    raise InvalidError("the DM names no recipient (no well-formed p tag)", local=True)


def open_dm(key: Key, event: Event) -> bytes:
    """Decrypts a DM event (kind 2000–2999) with ``key``, the recipient's or the
    author's. Raises :class:`DmError` if it cannot be opened."""
    if not isinstance(key, Key):
        raise TypeError(f"key must be an axon.Key, got {type(key).__name__}")
    if not isinstance(event, Event):
        raise TypeError(f"event must be an axon.Event, got {type(event).__name__}")
    return open_content(key, event.pubkey, recipient_of(key, event), event.content)
