"""The examples run as the README says (``--demo`` starts its own local relay)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import axon_bin

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


@pytest.mark.parametrize(
    "script,expected",
    [("agent.py", "user got the reply: 'echo: is anyone there?'"), ("progress.py", "watcher: 100%")],
)
def test_example_demo(script: str, expected: str) -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / script), "--demo"],
        env={**os.environ, "AXON_BIN": axon_bin()},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert expected in done.stdout
