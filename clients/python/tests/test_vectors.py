"""Every committed test vector in testvectors/*.json (spec §13): valid vectors are
reproduced field by field, invalid ones rejected with their code. Files are loaded by
what they hold, so new vector files (e.g. the signature-rule vectors) are checked too."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Tuple

import pytest

import axon
from axon import _ed25519

VECTORS_DIR = Path(__file__).resolve().parents[3] / "testvectors"


def _load() -> Tuple[
    List[Tuple[str, Dict[str, Any]]], List[Tuple[str, Dict[str, Any]]], List[Tuple[str, Dict[str, Any]]]
]:
    """Every vector of every JSON file, sorted by shape: valid events, invalid events
    (with the code to answer), and bare signature checks (pubkey, message/id, sig and a
    verdict). A vector of another shape is reported as a failure, never ignored."""
    valid: List[Tuple[str, Dict[str, Any]]] = []
    invalid: List[Tuple[str, Dict[str, Any]]] = []
    other: List[Tuple[str, Dict[str, Any]]] = []
    for path in sorted(VECTORS_DIR.glob("*.json")):
        doc = json.loads(path.read_text())
        for vector in doc.get("vectors", []):
            label = f"{path.name}:{vector.get('name')}"
            if "code" in vector and "msgpack" in vector:
                invalid.append((label, vector))
            elif "msgpack" in vector and "id" in vector and "sig" in vector:
                valid.append((label, vector))
            else:
                other.append((label, vector))
    return valid, invalid, other


VALID, INVALID, OTHER = _load()


def test_vector_files_present() -> None:
    assert (VECTORS_DIR / "valid.json").exists(), VECTORS_DIR
    assert (VECTORS_DIR / "invalid.json").exists(), VECTORS_DIR
    assert len(VALID) >= 14 and len(INVALID) >= 21


@pytest.mark.parametrize("label,vector", VALID, ids=[label for label, _ in VALID])
def test_valid_vector(label: str, vector: Dict[str, Any]) -> None:
    tags = [tuple(tag) for tag in vector["tags"]]
    content = bytes.fromhex(vector["content"])
    pubkey = bytes.fromhex(vector["pubkey"])
    if "seed" in vector:
        key = axon.Key.from_hex(vector["seed"])
        assert key.public_hex == vector["pubkey"]
    if "canonical_tags" in vector:
        assert axon.canonical_tags(tags).hex() == vector["canonical_tags"]
    if "tags_hash" in vector:
        assert axon.tags_hash(tags).hex() == vector["tags_hash"]
    payload = axon.canonical_payload(pubkey, vector["created_at"], vector["kind"], content, tags)
    if "canonical_payload" in vector:
        assert payload.hex() == vector["canonical_payload"]
    expected = axon.Event(
        id=bytes.fromhex(vector["id"]),
        pubkey=pubkey,
        created_at=vector["created_at"],
        kind=vector["kind"],
        content=content,
        sig=bytes.fromhex(vector["sig"]),
        tags=tuple(tags),
    )
    assert expected.compute_id().hex() == vector["id"]
    if "seed" in vector:
        signed = axon.Event.sign(key, kind=vector["kind"], content=content, tags=tags, created_at=vector["created_at"])
        assert signed.id == expected.id
        if signed.sig != expected.sig:
            # Not the deterministic RFC 8032 signature (e.g. a signature whose R carries a
            # torsion component): it must still be valid by the rule.
            assert _ed25519.rule_violation(pubkey, expected.id, expected.sig) is None
    assert expected.encode().hex() == vector["msgpack"]
    decoded = axon.Event.decode_and_validate(bytes.fromhex(vector["msgpack"]))
    assert decoded == expected
    assert axon.verify_signature(pubkey, expected.id, expected.sig)


def _signature_vector(label: str, vector: Dict[str, Any]) -> None:
    """A bare signature vector: pubkey, the signed message (id or message) and sig, with
    a verdict (valid: bool, or code: 400 for invalid)."""
    message_hex = vector.get("id", vector.get("message", vector.get("msg")))
    assert {"pubkey", "sig"} <= vector.keys() and message_hex is not None, f"unknown vector shape: {sorted(vector)}"
    expected_valid = vector["valid"] if "valid" in vector else "code" not in vector
    verdict = axon.verify_signature(bytes.fromhex(vector["pubkey"]), bytes.fromhex(message_hex), bytes.fromhex(vector["sig"]))
    assert verdict == expected_valid


if OTHER:  # only when such files exist (an empty parametrisation would count as a skip)
    test_signature_vector = pytest.mark.parametrize("label,vector", OTHER, ids=[label for label, _ in OTHER])(
        _signature_vector
    )


@pytest.mark.parametrize("label,vector", INVALID, ids=[label for label, _ in INVALID])
def test_invalid_vector(label: str, vector: Dict[str, Any]) -> None:
    with pytest.raises(axon.AxonError) as caught:
        axon.Event.decode_and_validate(bytes.fromhex(vector["msgpack"]))
    assert caught.value.code == vector["code"], caught.value
