"""Unit tests without a relay: keys, events, filters, DMs, errors."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

import axon
from axon.client import encode_filter


def test_key_file_roundtrip(tmp_path: Path) -> None:
    key = axon.Key.generate()
    path = tmp_path / "agent.key"
    key.save(path)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert path.read_text() == key.seed.hex() + "\n"
    assert axon.Key.load(path) == key
    assert len(key.public_hex) == 64 and key.public_hex == key.public_key.hex()
    with pytest.raises(FileExistsError):
        key.save(path)


def test_key_load_rejects_garbage(tmp_path: Path) -> None:
    path = tmp_path / "bad.key"
    path.write_text("zz" * 32)
    with pytest.raises(axon.InvalidError):
        axon.Key.load(path)
    path.write_text("ab" * 31)
    with pytest.raises(axon.InvalidError):
        axon.Key.load(path)


def test_key_wrong_types() -> None:
    with pytest.raises(TypeError):
        axon.Key("00" * 32)  # type: ignore[arg-type]
    with pytest.raises(axon.InvalidError):
        axon.Key(b"\x00" * 31)
    with pytest.raises(axon.InvalidError):
        axon.Key.from_hex("xyz")


def test_event_sign_and_roundtrip() -> None:
    key = axon.Key.generate()
    event = axon.Event.sign(key, kind=1000, content="héllo", tags=[("topic", "a"), ("t",)], created_at=5)
    assert event.content == "héllo".encode()
    decoded = axon.Event.decode_and_validate(event.encode())
    assert decoded == event
    assert decoded.tag("topic") == "a" and decoded.tag("t") is None
    assert event.verify()


def test_event_field_rules_raise_locally() -> None:
    key = axon.Key.generate()
    with pytest.raises(axon.TooLargeError) as caught:
        axon.Event.sign(key, kind=1000, content=b"x" * 65537)
    assert caught.value.code == 413 and caught.value.local
    with pytest.raises(axon.InvalidError):
        axon.Event.sign(key, kind=70000)
    with pytest.raises(axon.InvalidError):
        axon.Event.sign(key, kind=1000, tags=[("a", "1"), ("a", "1", "2")])  # duplicate tags
    with pytest.raises(axon.InvalidError):
        axon.Event.sign(key, kind=1000, tags=[("", "1")])
    with pytest.raises(TypeError):
        axon.Event.sign(key, kind=1000, tags=[("a", 1)])  # type: ignore[list-item]
    with pytest.raises(TypeError):
        axon.Event.sign("not a key", kind=1000)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        axon.Event.sign(key, kind=1000, content=12)  # type: ignore[arg-type]


def test_tampered_event_rejected() -> None:
    key = axon.Key.generate()
    event = axon.Event.sign(key, kind=1000, content=b"a")
    bad = axon.Event(event.id, event.pubkey, event.created_at, event.kind, b"b", event.sig, event.tags)
    with pytest.raises(axon.InvalidError):
        bad.validate()
    assert not bad.verify()


def test_filter_encoding() -> None:
    pub = axon.Key.generate().public_key
    wire = encode_filter(
        {"ids": ["abcd", b"\x01"], "authors": [pub.hex()[:8]], "kinds": [1000], "since": 1, "until": 2,
         "tags": {"topic": ["hello"]}, "limit": 5}
    )
    assert wire == {
        "ids": [b"\xab\xcd", b"\x01"], "authors": [pub[:4]], "kinds": [1000], "since": 1, "until": 2,
        "tags": [{"name": "topic", "values": ["hello"]}], "limit": 5,
    }
    with pytest.raises(axon.InvalidError):
        encode_filter({"ids": ["abc"]})  # odd hex
    with pytest.raises(axon.InvalidError):
        encode_filter({"ids": ["zz"]})
    with pytest.raises(axon.InvalidError):
        encode_filter({"kind": [1000]})  # mistyped key: never widen silently
    with pytest.raises(axon.InvalidError):
        encode_filter({"tags": {"topic": []}})
    with pytest.raises(axon.InvalidError):
        encode_filter({"authors": ["00" * 33]})


def test_dm_seal_open() -> None:
    alice, bob, carol = axon.Key.generate(), axon.Key.generate(), axon.Key.generate()
    content = axon.seal(alice, bob.public_hex, b"hello bob")
    assert len(content) == 12 + 9 + 16
    assert axon.open_content(bob, alice.public_key, bob.public_key, content) == b"hello bob"
    assert axon.open_content(alice, alice.public_key, bob.public_key, content) == b"hello bob"
    with pytest.raises(axon.DmError):
        axon.open_content(carol, alice.public_key, bob.public_key, content)
    with pytest.raises(axon.DmError):
        axon.open_content(bob, bob.public_key, alice.public_key, content)  # swapped aad
    event = axon.Event.sign(alice, kind=2000, content=content, tags=[("p", bob.public_hex)])
    assert axon.open_dm(bob, event) == b"hello bob"
    assert axon.open_dm(alice, event) == b"hello bob"
    with pytest.raises(axon.InvalidError):
        axon.seal(alice, "not hex", b"x")


def test_error_classes() -> None:
    error = axon.error_for_code(503, "overflow: slow", sub_id="s", seq=7, retry_after_ms=100)
    assert isinstance(error, axon.UnavailableError) and error.resume_seq == 7 and error.retry_after_ms == 100
    for code, cls in [(400, axon.InvalidError), (401, axon.AuthError), (403, axon.ForbiddenError),
                      (409, axon.DuplicateError), (410, axon.ExpiredError), (413, axon.TooLargeError),
                      (429, axon.RateLimitedError), (503, axon.UnavailableError)]:
        error = axon.error_for_code(code, "m")
        assert isinstance(error, cls) and isinstance(error, axon.AxonError) and error.code == code
    assert axon.error_for_code(418, "teapot").code == 418
