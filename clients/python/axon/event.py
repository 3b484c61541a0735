"""Events: canonical signing payload, id, signature, strict MessagePack encoding and
decoding, and validation in spec §3's order (decode 400 → sizes 413/400 → duplicate
tags 400 → id 400 → signature 400)."""

from __future__ import annotations

import hashlib
import struct
import time
from dataclasses import dataclass, field, replace
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import msgpack

from . import _ed25519
from .errors import InvalidError, TooLargeError
from .keys import Key

__all__ = [
    "Event",
    "Limits",
    "Tag",
    "TagsInput",
    "canonical_tags",
    "tags_hash",
    "canonical_payload",
    "verify_signature",
    "normalize_tags",
    "MAX_TAG_NAME_BYTES",
]

Tag = Tuple[str, ...]
"""A tag: ``(name, value1, value2, ...)``; a tag may have no values."""

TagsInput = Iterable[Sequence[str]]

MAX_TAG_NAME_BYTES = 64
MAX_CREATED_AT = 2**63 - 1
_EVENT_KEYS = ("id", "pubkey", "created_at", "kind", "content", "sig", "tags")
_EVENT_KEY_SET = frozenset(_EVENT_KEYS)


@dataclass(frozen=True)
class Limits:
    """The relay's size bounds (spec §2, §6, §9.1; defaults shown). :func:`axon.connect`
    reads the relay's own from its info document."""

    max_content_bytes: int = 65536
    max_tags: int = 256
    max_tag_values: int = 16
    max_tag_value_bytes: int = 1024
    max_frame_bytes: int = 131072
    max_filters: int = 16
    max_filter_items: int = 256
    max_subscriptions: int = 32

    @classmethod
    def from_info(cls, info: Dict[str, Any]) -> "Limits":
        """Limits from an info document's ``limits`` object (missing keys keep defaults)."""
        values = info.get("limits") or {}
        kwargs = {name: values[name] for name in cls.__dataclass_fields__ if isinstance(values.get(name), int)}
        return cls(**kwargs)


DEFAULT_LIMITS = Limits()


def _u16(value: int) -> bytes:
    return struct.pack(">H", value)


def _u32(value: int) -> bytes:
    return struct.pack(">I", value)


def _sort_key(tag: Tag) -> Tuple[bytes, int, bytes]:
    if len(tag) == 1:
        return (tag[0].encode(), 0, b"")
    return (tag[0].encode(), 1, tag[1].encode())


def canonical_order(tags: Sequence[Tag]) -> List[Tag]:
    """Tags in canonical order (name, value-less first, first value; all byte-wise).

    Raises :class:`InvalidError` for duplicate tags (same name and first value, or same
    name and both without values)."""
    keyed = sorted(((_sort_key(tag), tag) for tag in tags), key=lambda item: item[0])
    for (a, tag), (b, _) in zip(keyed, keyed[1:]):
        if a == b:
            raise InvalidError(f"duplicate tags: two tags {tag[0]!r} with the same first value", local=True)
    return [tag for _, tag in keyed]


def canonical_tags(tags: Sequence[Tag]) -> bytes:
    """``canonical_tags`` of spec §3."""
    parts = [_u16(len(tags))]
    for tag in canonical_order(tags):
        name = tag[0].encode()
        parts.append(_u16(len(name)))
        parts.append(name)
        parts.append(_u16(len(tag) - 1))
        for value in tag[1:]:
            data = value.encode()
            parts.append(_u32(len(data)))
            parts.append(data)
    return b"".join(parts)


def tags_hash(tags: Sequence[Tag]) -> bytes:
    """SHA-256 of :func:`canonical_tags`."""
    return hashlib.sha256(canonical_tags(tags)).digest()


def canonical_payload(pubkey: bytes, created_at: int, kind: int, content: bytes, tags: Sequence[Tag]) -> bytes:
    """``canonical_payload`` of spec §3; the event id is its SHA-256."""
    return b"".join(
        (
            b"\x00\x20",
            pubkey,
            struct.pack(">QHI", created_at, kind, len(content)),
            content,
            tags_hash(tags),
        )
    )


def verify_signature(pubkey: bytes, message: bytes, sig: bytes) -> bool:
    """True iff ``sig`` is valid by spec §3's signature rule (as amended): S < ℓ,
    canonical and non-small-order A and R, cofactored equation."""
    return _ed25519.check(pubkey, message, sig)


def normalize_tags(tags: Optional[TagsInput]) -> List[Tag]:
    """Checks and converts tags given as sequences of str (``("topic", "hello")``) to
    tuples. Raises ``TypeError`` for wrong types."""
    if tags is None:
        return []
    if isinstance(tags, (str, bytes)):
        raise TypeError("tags must be a list of (name, value, ...) sequences, not a string")
    result: List[Tag] = []
    for tag in tags:
        if type(tag) is tuple and tag and all(type(item) is str for item in tag):
            result.append(tag)  # the common case, checked cheaply
            continue
        if isinstance(tag, (str, bytes)) or not isinstance(tag, Sequence):
            raise TypeError(f"each tag must be a sequence (name, value, ...), got {tag!r}")
        if len(tag) == 0:
            raise InvalidError("a tag needs at least a name", local=True)
        for item in tag:
            if not isinstance(item, str):
                raise TypeError(f"tag names and values must be str, got {type(item).__name__} in {tag!r}")
        result.append(tuple(tag))
    return result


def _check_int(value: Any, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise InvalidError(f"{what} must be an integer", local=True)
    return value


@dataclass(frozen=True)
class Event:
    """A signed event (spec §2). ``seq`` is the relay's sequence number when the event
    came from a relay (0 for ephemeral events), else None."""

    id: bytes
    pubkey: bytes
    created_at: int
    kind: int
    content: bytes
    sig: bytes
    tags: Tuple[Tag, ...] = ()
    seq: Optional[int] = field(default=None, compare=False)

    # -- building -------------------------------------------------------------------

    @classmethod
    def sign(
        cls,
        key: Key,
        *,
        kind: int,
        content: Union[bytes, str] = b"",
        tags: Optional[TagsInput] = None,
        created_at: Optional[int] = None,
        limits: Optional[Limits] = None,
    ) -> "Event":
        """Builds and signs an event. Checks every field rule first (against ``limits``,
        default the spec's defaults) and raises :class:`InvalidError` (400) or
        :class:`TooLargeError` (413), or ``TypeError`` for wrong types."""
        if not isinstance(key, Key):
            raise TypeError(f"key must be an axon.Key, got {type(key).__name__}")
        if isinstance(content, str):
            content = content.encode()
        elif isinstance(content, (bytearray, memoryview)):
            content = bytes(content)
        elif not isinstance(content, bytes):
            raise TypeError(f"content must be bytes or str, got {type(content).__name__}")
        kind = _check_int(kind, "kind")
        if not 0 <= kind <= 65535:
            raise InvalidError(f"kind must be 0..=65535, got {kind}", local=True)
        if created_at is None:
            created_at = int(time.time())
        created_at = _check_int(created_at, "created_at")
        if not 0 <= created_at <= MAX_CREATED_AT:
            raise InvalidError("created_at must be >= 0 and < 2^63", local=True)
        tag_list = tuple(normalize_tags(tags))
        check_fields(content, tag_list, limits or DEFAULT_LIMITS)
        pubkey = key.public_key
        event_id = hashlib.sha256(canonical_payload(pubkey, created_at, kind, content, tag_list)).digest()
        return cls(event_id, pubkey, created_at, kind, content, key.sign(event_id), tag_list)

    # -- hex helpers ----------------------------------------------------------------

    @property
    def id_hex(self) -> str:
        """The id as lowercase hex."""
        return self.id.hex()

    @property
    def pubkey_hex(self) -> str:
        """The author's public key as lowercase hex."""
        return self.pubkey.hex()

    @property
    def sig_hex(self) -> str:
        """The signature as lowercase hex."""
        return self.sig.hex()

    def tag(self, name: str) -> Optional[str]:
        """The first value of the first tag named ``name`` (None if absent or value-less)."""
        for tag in self.tags:
            if tag[0] == name and len(tag) > 1:
                return tag[1]
        return None

    def tag_values(self, name: str) -> Iterator[str]:
        """The first value of every tag named ``name``, in wire order."""
        return (tag[1] for tag in self.tags if tag[0] == name and len(tag) > 1)

    @property
    def expires_at(self) -> Optional[int]:
        """The earliest well-formed ``expires_at`` time, if any."""
        times = [int(v) for v in self.tag_values("expires_at") if v.isascii() and v.isdigit()]
        return min(times) if times else None

    def with_seq(self, seq: Optional[int]) -> "Event":
        """A copy with ``seq`` set."""
        return replace(self, seq=seq)

    # -- canonical form, id, signature ------------------------------------------------

    def canonical_payload(self) -> bytes:
        """``canonical_payload`` of spec §3."""
        return canonical_payload(self.pubkey, self.created_at, self.kind, self.content, self.tags)

    def compute_id(self) -> bytes:
        """SHA-256 of the canonical payload (raises InvalidError for duplicate tags)."""
        return hashlib.sha256(self.canonical_payload()).digest()

    def verify(self) -> bool:
        """True iff the id matches and the signature is valid by the spec's rule."""
        try:
            self.validate(limits=None)
        except (InvalidError, TooLargeError):
            return False
        return True

    def validate(self, limits: Optional[Limits] = DEFAULT_LIMITS) -> None:
        """Runs spec §3's validation after decoding, in order: field rules (413 for the
        content, else 400; skipped when ``limits`` is None) → duplicate tags → id →
        signature. Raises :class:`InvalidError` or :class:`TooLargeError`."""
        if limits is not None:
            check_fields(self.content, self.tags, limits)
        if self.compute_id() != self.id:
            raise InvalidError("id does not match the canonical payload", local=True)
        if not verify_signature(self.pubkey, self.id, self.sig):
            raise InvalidError("bad signature", local=True)

    # -- MessagePack ----------------------------------------------------------------

    def to_wire(self) -> Dict[str, Any]:
        """The Event map (spec §2) with keys in the writer's order."""
        return {
            "id": self.id,
            "pubkey": self.pubkey,
            "created_at": self.created_at,
            "kind": self.kind,
            "content": self.content,
            "sig": self.sig,
            "tags": [{"name": tag[0], "values": list(tag[1:])} for tag in self.tags],
        }

    def encode(self) -> bytes:
        """The event as MessagePack, exactly as the Rust implementation writes it."""
        data: bytes = msgpack.packb(self.to_wire(), use_bin_type=True)
        return data

    @classmethod
    def decode(cls, data: bytes) -> "Event":
        """Decodes an Event map strictly (spec §2; 400 on any deviation). Field sizes,
        the id and the signature are checked by :meth:`validate`."""
        try:
            value = msgpack.unpackb(
                data, raw=False, use_list=True, object_pairs_hook=_pairs, strict_map_key=False, timestamp=0
            )
        except (ValueError, TypeError, msgpack.UnpackException) as error:
            raise InvalidError(f"event does not decode: {error}", local=True) from None
        return cls.from_wire(value)

    @classmethod
    def from_wire(cls, value: Any, seq: Optional[int] = None) -> "Event":
        """An Event from a map decoded with :func:`_pairs` (strict, 400 on deviation)."""
        event = _strict_map(value, "event", _EVENT_KEY_SET, required=_EVENT_KEY_SET)
        event_id = _fixed_bin(event["id"], 32, "id")
        pubkey = _fixed_bin(event["pubkey"], 32, "pubkey")
        sig = _fixed_bin(event["sig"], 64, "sig")
        created_at = event["created_at"]
        if isinstance(created_at, bool) or not isinstance(created_at, int):
            raise InvalidError("created_at must be an integer", local=True)
        if not 0 <= created_at <= MAX_CREATED_AT:
            raise InvalidError("created_at must be >= 0 and < 2^63", local=True)
        kind = event["kind"]
        if isinstance(kind, bool) or not isinstance(kind, int) or not 0 <= kind <= 65535:
            raise InvalidError("kind must be an integer 0..=65535", local=True)
        content = event["content"]
        if not isinstance(content, bytes):
            raise InvalidError("content must be bin", local=True)
        raw_tags = event["tags"]
        if not isinstance(raw_tags, list):
            raise InvalidError("tags must be an array", local=True)
        tags: List[Tag] = []
        for raw in raw_tags:
            tag = _strict_map(raw, "tag", _TAG_KEYS, required=_TAG_KEYS)
            name, values = tag["name"], tag["values"]
            if not isinstance(name, str):
                raise InvalidError("tag name must be str", local=True)
            if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
                raise InvalidError("tag values must be an array of str", local=True)
            tags.append((name, *values))
        return cls(event_id, pubkey, created_at, kind, content, sig, tuple(tags), seq)

    @classmethod
    def decode_and_validate(cls, data: bytes, limits: Limits = DEFAULT_LIMITS) -> "Event":
        """:meth:`decode` then :meth:`validate`: the relay's full check (spec §3)."""
        event = cls.decode(data)
        event.validate(limits)
        return event

    def to_json(self) -> Dict[str, Any]:
        """A JSON-friendly dict (hex for bytes; content as hex)."""
        return {
            "id": self.id_hex,
            "pubkey": self.pubkey_hex,
            "created_at": self.created_at,
            "kind": self.kind,
            "content": self.content.hex(),
            "sig": self.sig_hex,
            "tags": [list(tag) for tag in self.tags],
            "seq": self.seq,
        }

    def __repr__(self) -> str:
        return (
            f"Event(id={self.id_hex[:16]}…, kind={self.kind}, pubkey={self.pubkey_hex[:16]}…, "
            f"created_at={self.created_at}, content={self.content[:40]!r}, tags={list(self.tags)!r}, seq={self.seq})"
        )


_TAG_KEYS = frozenset(("name", "values"))


class _Pairs(list):  # type: ignore[type-arg]
    """A decoded MessagePack map, kept as its list of (key, value) pairs so that repeated
    keys can be detected."""

    __slots__ = ()


def _pairs(pairs: List[Tuple[Any, Any]]) -> _Pairs:
    return _Pairs(pairs)


def _strict_map(value: Any, what: str, allowed: frozenset, required: frozenset) -> Dict[str, Any]:  # type: ignore[type-arg]
    if not isinstance(value, _Pairs):
        raise InvalidError(f"{what} must be a map", local=True)
    result: Dict[str, Any] = {}
    for key, item in value:
        if not isinstance(key, str):
            raise InvalidError(f"{what} keys must be str", local=True)
        if key not in allowed:
            raise InvalidError(f"unknown {what} key {key!r}", local=True)
        if key in result:
            raise InvalidError(f"repeated {what} key {key!r}", local=True)
        result[key] = item
    missing = required - result.keys()
    if missing:
        raise InvalidError(f"{what} is missing {sorted(missing)}", local=True)
    return result


def _fixed_bin(value: Any, length: int, what: str) -> bytes:
    if not isinstance(value, bytes):
        raise InvalidError(f"{what} must be bin", local=True)
    if len(value) != length:
        raise InvalidError(f"{what} must be {length} bytes, got {len(value)}", local=True)
    return value


def check_fields(content: bytes, tags: Sequence[Tag], limits: Limits) -> None:
    """Field rules in the relay's order: content size (413), number of tags, then per
    tag in wire order its name length, number of values, value sizes (400)."""
    if len(content) > limits.max_content_bytes:
        raise TooLargeError(
            f"content is {len(content)} bytes, the limit is {limits.max_content_bytes}", local=True
        )
    if len(tags) > limits.max_tags:
        raise InvalidError(f"{len(tags)} tags, the limit is {limits.max_tags}", local=True)
    for tag in tags:
        name_len = len(tag[0].encode())
        if not 1 <= name_len <= MAX_TAG_NAME_BYTES:
            raise InvalidError(f"tag name must be 1..={MAX_TAG_NAME_BYTES} bytes", local=True)
        if len(tag) - 1 > limits.max_tag_values:
            raise InvalidError(
                f"tag {tag[0]!r} has {len(tag) - 1} values, the limit is {limits.max_tag_values}", local=True
            )
        for value in tag[1:]:
            if len(value.encode()) > limits.max_tag_value_bytes:
                raise InvalidError(
                    f"a value of tag {tag[0]!r} is {len(value.encode())} bytes, the limit is "
                    f"{limits.max_tag_value_bytes}",
                    local=True,
                )
    canonical_order(tags)
