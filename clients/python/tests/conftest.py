"""Fixtures that run the real relay binary (``axon relay``) on a free port with a
temporary relay.yaml and database. The binary is ``$AXON_BIN`` if set, else
``<repo>/target/debug/axon`` (built by ``cargo build`` / ``cargo test``)."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional

import pytest

import axon

REPO = Path(__file__).resolve().parents[3]


def axon_bin() -> str:
    path = os.environ.get("AXON_BIN") or str(REPO / "target" / "debug" / "axon")
    if not Path(path).is_file():
        pytest.fail(f"relay binary not found at {path}: run `cargo build` or set AXON_BIN")
    return path


class RelayProcess:
    """One relay process; ``restart()`` keeps the port and the database."""

    def __init__(self, directory: Path, admins: List[str], allowlist: List[str], limits: Dict[str, Any]) -> None:
        self.directory = directory
        self.admins = admins
        self.allowlist = allowlist
        self.limits = limits
        self.relay_url = "ws://axon-test.invalid/"  # what AUTH signs: read from GET /info
        self.port = 0
        self.proc: Optional["subprocess.Popen[bytes]"] = None
        self.log = directory / "relay.log"
        self.config = directory / "relay.yaml"

    def _write_config(self) -> None:
        lines = [
            f'addr: "127.0.0.1:{self.port}"',
            f'db: "{self.directory / "axon.db"}"',
            f'relay_url: "{self.relay_url}"',
            "admins: [" + ", ".join(f'"{k}"' for k in self.admins) + "]",
            "allowlist: [" + ", ".join(f'"{k}"' for k in self.allowlist) + "]",
            "limits:",
        ]
        lines += [f"  {name}: {value}" for name, value in self.limits.items()]
        if not self.limits:
            lines[-1] = "limits: {}"
        self.config.write_text("\n".join(lines) + "\n")

    def start(self) -> None:
        self._write_config()
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [axon_bin(), "relay", "--config", str(self.config)],
                stdout=subprocess.PIPE,
                stderr=log,
                env={**os.environ, "NO_COLOR": "1", "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
            )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + 15
        line = b""
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if ready:
                line = self.proc.stdout.readline()
                break
            if self.proc.poll() is not None:
                break
        text = line.decode().strip()
        if not text.startswith("listening on "):
            self.stop()
            pytest.fail(f"the relay did not start ({text!r}); log:\n{self.log.read_text()}")
        self.port = int(text.rsplit(":", 1)[1])

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}"

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    def kill(self) -> None:
        self.stop(signal.SIGKILL)

    def restart(self) -> None:
        self.stop()
        self.start()


class RelayFactory:
    def __init__(self, tmp_path: Path) -> None:
        self.tmp_path = tmp_path
        self.relays: List[RelayProcess] = []

    def __call__(
        self,
        admins: Optional[List[axon.Key]] = None,
        allow: Optional[List[axon.Key]] = None,
        **limits: Any,
    ) -> RelayProcess:
        directory = self.tmp_path / f"relay{len(self.relays)}"
        directory.mkdir()
        relay = RelayProcess(
            directory,
            [k.public_hex for k in admins or []],
            [k.public_hex for k in allow or []],
            limits,
        )
        relay.start()
        self.relays.append(relay)
        return relay

    def close(self) -> None:
        for relay in self.relays:
            relay.stop()


@pytest.fixture
def start_relay(tmp_path: Path) -> Iterator[RelayFactory]:
    factory = RelayFactory(tmp_path)
    yield factory
    factory.close()


@pytest.fixture
def admin_key() -> axon.Key:
    return axon.Key.generate()


@pytest.fixture
def user_key() -> axon.Key:
    return axon.Key.generate()


@pytest.fixture
def relay(start_relay: RelayFactory, admin_key: axon.Key, user_key: axon.Key) -> RelayProcess:
    """A relay with ``admin_key`` as admin and ``user_key`` allowed."""
    return start_relay(admins=[admin_key], allow=[user_key])
