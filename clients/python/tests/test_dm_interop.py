"""DM interoperability with the Rust implementation (src/protocol/dm.rs), through the
`axon dm seal` / `axon dm open` subcommands and through the relay (`axon req`)."""

from __future__ import annotations

import base64
import json
import subprocess
from pathlib import Path

import axon
from conftest import RelayProcess, axon_bin


def run(*args: str, stdin: bytes = b"") -> bytes:
    done = subprocess.run([axon_bin(), *args], input=stdin, capture_output=True, timeout=30)
    assert done.returncode == 0, done.stderr.decode()
    return done.stdout


def test_python_opens_a_dm_sealed_by_rust(tmp_path: Path) -> None:
    alice, bob = axon.Key.generate(), axon.Key.generate()
    alice.save(tmp_path / "alice.key")
    plaintext = "grüße from rust \x00\xff".encode()
    content = bytes.fromhex(
        run("dm", "seal", "--key", str(tmp_path / "alice.key"), "--to", bob.public_hex, "-", stdin=plaintext)
        .decode()
        .strip()
    )
    assert axon.open_content(bob, alice.public_key, bob.public_key, content) == plaintext
    assert axon.open_content(alice, alice.public_key, bob.public_key, content) == plaintext


def test_rust_opens_a_dm_sealed_by_python(tmp_path: Path) -> None:
    alice, bob = axon.Key.generate(), axon.Key.generate()
    bob.save(tmp_path / "bob.key")
    alice.save(tmp_path / "alice.key")
    plaintext = b"sealed in python \x01\x02"
    content = axon.seal(alice, bob.public_hex, plaintext)
    for key in ("bob.key", "alice.key"):  # the recipient and the sender
        opened = run(
            "dm", "open", "--key", str(tmp_path / key), "--from", alice.public_hex, "--to", bob.public_hex,
            content.hex(),
        )
        assert opened == plaintext
    tampered = bytearray(content)
    tampered[-1] ^= 1
    done = subprocess.run(
        [axon_bin(), "dm", "open", "--key", str(tmp_path / "bob.key"), "--from", alice.public_hex,
         "--to", bob.public_hex, bytes(tampered).hex()],
        capture_output=True,
    )
    assert done.returncode != 0


async def test_dm_through_the_relay_opened_by_rust(
    relay: RelayProcess, admin_key: axon.Key, user_key: axon.Key, tmp_path: Path
) -> None:
    bob = axon.Key.generate()
    bob.save(tmp_path / "bob.key")
    async with axon.connect(relay.url, admin_key) as admin:
        await admin.allow(bob)
    async with axon.connect(relay.url, user_key) as alice:
        sent = await alice.send_dm(bob.public_hex, b"over the relay")
    lines = run(
        "req", "--url", relay.url, "--relay-url", relay.relay_url, "--key", str(tmp_path / "bob.key"),
        "--kind", "2000",
    ).decode().splitlines()
    events = [json.loads(line) for line in lines]
    assert [e["id"] for e in events] == [sent.id_hex]
    raw = events[0]["content"]
    content = base64.b64decode(raw) if events[0]["content_encoding"] == "base64" else raw.encode()
    opened = run(
        "dm", "open", "--key", str(tmp_path / "bob.key"), "--from", user_key.public_hex, "--to", bob.public_hex,
        content.hex(),
    )
    assert opened == b"over the relay"
