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


Labelled = List[Tuple[str, Dict[str, Any]]]


def _load() -> Tuple[Labelled, Labelled, Labelled]:
    valid: Labelled = []
    invalid: Labelled = []
    signatures: Labelled = []
    for path in sorted(VECTORS_DIR.glob("*.json")):
        doc = json.loads(path.read_text())
        for vector in doc.get("vectors", []):
            label = f"{path.name}:{vector['name']}"
            if "code" in vector:
                invalid.append((label, vector))
            elif "valid" in vector:
                signatures.append((label, vector))
            elif "seed" in vector or "sig" in vector:
                valid.append((label, vector))
    return valid, invalid, signatures


VALID, INVALID, SIGNATURES = _load()


def test_vector_files_present() -> None:
    assert (VECTORS_DIR / "valid.json").exists(), VECTORS_DIR
    assert (VECTORS_DIR / "invalid.json").exists(), VECTORS_DIR
    assert len(VALID) >= 14 and len(INVALID) >= 21
    assert (VECTORS_DIR / "signatures.json").exists() and len(SIGNATURES) >= 6


@pytest.mark.parametrize("label,vector", SIGNATURES, ids=[label for label, _ in SIGNATURES])
def test_signature_vector(label: str, vector: Dict[str, Any]) -> None:
    """signatures.json: the verdict of the §3 signature rule, alone and inside an event."""
    pubkey = bytes.fromhex(vector["pubkey"])
    message = bytes.fromhex(vector["message"])
    sig = bytes.fromhex(vector["sig"])
    assert axon.verify_signature(pubkey, message, sig) is vector["valid"]
    raw = bytes.fromhex(vector["msgpack"])
    if vector["valid"]:
        assert axon.Event.decode_and_validate(raw).sig == sig
    else:
        with pytest.raises(axon.AxonError) as caught:
            axon.Event.decode_and_validate(raw)
        assert caught.value.code == 400, caught.value


@pytest.mark.parametrize("label,vector", VALID, ids=[label for label, _ in VALID])
def test_valid_vector(label: str, vector: Dict[str, Any]) -> None:
    tags = [tuple(tag) for tag in vector["tags"]]
    content = bytes.fromhex(vector["content"])
    pubkey = bytes.fromhex(vector["pubkey"])
    if "seed" in vector:
        key = axon.Key.from_hex(vector["seed"])
        assert key.public_hex == vector["pubkey"]
    assert axon.canonical_tags(tags).hex() == vector["canonical_tags"]
    assert axon.tags_hash(tags).hex() == vector["tags_hash"]
    payload = axon.canonical_payload(pubkey, vector["created_at"], vector["kind"], content, tags)
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


@pytest.mark.parametrize("label,vector", INVALID, ids=[label for label, _ in INVALID])
def test_invalid_vector(label: str, vector: Dict[str, Any]) -> None:
    with pytest.raises(axon.AxonError) as caught:
        axon.Event.decode_and_validate(bytes.fromhex(vector["msgpack"]))
    assert caught.value.code == vector["code"], caught.value
