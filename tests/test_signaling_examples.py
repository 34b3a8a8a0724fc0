"""The signaling examples the tutorial includes run and print what it says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("signaling_memory.py", ["bob got an offer from", "alice got {'chat': 'hi everyone'}"]),
        ("signaling_websocket.py", ["serving ws://127.0.0.1:", "bob got {'ping': 1}"]),
    ],
)
def test_example_runs(name: str, expected: list[str]) -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / name)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    for text in expected:
        assert text in result.stdout
