"""The examples run as the README says (``--demo`` starts its own local relay)."""

from __future__ import annotations

import os
import signal
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
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / script), "--demo"],
        env={**os.environ, "AXON_BIN": axon_bin()},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,  # so that a hung example and its relay can be killed together
    )
    try:
        stdout, stderr = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr
    assert expected in stdout
