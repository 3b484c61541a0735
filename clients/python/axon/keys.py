"""Ed25519 identities and key files in exactly the format ``axon keygen`` writes: the
32-byte seed as 64 lowercase hex characters and a newline, mode 0600."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Union

import nacl.bindings

from .errors import InvalidError

__all__ = ["Key", "to_hex", "from_hex", "parse_pubkey"]

PathLike = Union[str, "os.PathLike[str]"]


def to_hex(data: bytes) -> str:
    """Lowercase hex of ``data``."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise TypeError(f"expected bytes, got {type(data).__name__}")
    return bytes(data).hex()


def from_hex(text: str, length: "int | None" = None, what: str = "value") -> bytes:
    """Bytes from hex (either case); ``length`` checks the byte length.

    Raises :class:`axon.InvalidError` (a ``ValueError``) for anything else."""
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a hex str, got {type(text).__name__}")
    try:
        data = bytes.fromhex(text.strip())
    except ValueError:
        raise InvalidError(f"{what} is not hex: {text!r}", local=True) from None
    if length is not None and len(data) != length:
        raise InvalidError(f"{what} must be {length} bytes ({2 * length} hex characters), got {len(data)}", local=True)
    return data


def parse_pubkey(value: "str | bytes | Key", what: str = "public key") -> bytes:
    """A 32-byte public key from 64 hex characters, 32 bytes, or a :class:`Key`."""
    if isinstance(value, Key):
        return value.public_key
    if isinstance(value, (bytes, bytearray, memoryview)):
        if len(value) != 32:
            raise InvalidError(f"{what} must be 32 bytes, got {len(value)}", local=True)
        return bytes(value)
    if isinstance(value, str):
        return from_hex(value, 32, what)
    raise TypeError(f"{what} must be 64 hex characters, 32 bytes or an axon.Key, got {type(value).__name__}")


class Key:
    """An Ed25519 key pair (RFC 8032); the 32-byte public key is the identity."""

    __slots__ = ("_seed", "_secret", "_public")

    def __init__(self, seed: bytes) -> None:
        if not isinstance(seed, (bytes, bytearray)):
            raise TypeError(f"a Key is made from a 32-byte seed, got {type(seed).__name__}")
        if len(seed) != 32:
            raise InvalidError(f"a seed must be 32 bytes, got {len(seed)}", local=True)
        public, secret = nacl.bindings.crypto_sign_seed_keypair(bytes(seed))
        self._seed: bytes = bytes(seed)
        self._secret: bytes = secret
        self._public: bytes = public

    @classmethod
    def generate(cls) -> "Key":
        """A new random key."""
        return cls(os.urandom(32))

    @classmethod
    def from_seed(cls, seed: bytes) -> "Key":
        """The key for a 32-byte seed."""
        return cls(seed)

    @classmethod
    def from_hex(cls, seed_hex: str) -> "Key":
        """The key for a seed given as 64 hex characters."""
        return cls(from_hex(seed_hex, 32, "seed"))

    @classmethod
    def load(cls, path: PathLike) -> "Key":
        """Reads a key file written by :meth:`save` or ``axon keygen``."""
        try:
            text = Path(path).read_text(encoding="ascii")
        except UnicodeDecodeError:
            raise InvalidError(f"key file {path} must hold 64 hex characters", local=True) from None
        try:
            seed = bytes.fromhex(text.strip())
        except ValueError:
            seed = b""
        if len(seed) != 32:
            raise InvalidError(f"key file {path} must hold 64 hex characters", local=True)
        return cls(seed)

    def save(self, path: PathLike, *, overwrite: bool = False) -> None:
        """Writes the seed as hex and a newline to a new file with mode 0600.

        Refuses to overwrite an existing file (like ``axon keygen``) unless ``overwrite``."""
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
        fd = os.open(os.fspath(path), flags, 0o600)
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, (self._seed.hex() + "\n").encode("ascii"))
        finally:
            os.close(fd)

    @property
    def seed(self) -> bytes:
        """The 32-byte secret seed."""
        return self._seed

    @property
    def public_key(self) -> bytes:
        """The 32-byte public key."""
        return self._public

    @property
    def public_hex(self) -> str:
        """The public key as 64 lowercase hex characters."""
        return self._public.hex()

    @property
    def secret_key(self) -> bytes:
        """libsodium's 64-byte secret key (seed || public key)."""
        return self._secret

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message`` (deterministic)."""
        return nacl.bindings.crypto_sign(bytes(message), self._secret)[:64]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Key) and other._seed == self._seed

    def __hash__(self) -> int:
        return hash(self._public)

    def __repr__(self) -> str:
        return f"axon.Key(public_hex={self.public_hex!r})"
