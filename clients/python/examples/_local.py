"""Starts a throw-away local relay for the examples' --demo mode (not part of the library).

The relay binary is $AXON_BIN, else `axon` on PATH, else <repo>/target/{release,debug}/axon."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator, List

import axon

REPO = Path(__file__).resolve().parents[3]


def relay_binary() -> str:
    for candidate in (
        os.environ.get("AXON_BIN"),
        shutil.which("axon"),
        str(REPO / "target" / "release" / "axon"),
        str(REPO / "target" / "debug" / "axon"),
    ):
        if candidate and Path(candidate).is_file():
            return candidate
    raise SystemExit("no relay binary: build it with `cargo build` or set AXON_BIN")


@contextlib.contextmanager
def local_relay(allow: List[axon.Key]) -> Iterator[str]:
    """Runs `axon relay` on a free port with a temporary database; yields its URL."""
    with tempfile.TemporaryDirectory() as directory:
        args = [relay_binary(), "relay", "--addr", "127.0.0.1:0", "--db", f"{directory}/axon.db",
                "--relay-url", "ws://127.0.0.1/demo"]
        for key in allow:
            args += ["--allow", key.public_hex]
        proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().decode().strip()
            if not line.startswith("listening on "):
                raise SystemExit(f"the relay did not start: {line!r}")
            yield "ws://" + line.split()[-1]
        finally:
            proc.terminate()
            proc.wait(10)
