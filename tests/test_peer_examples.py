"""The mesh example the how-to includes runs, and every peer decodes every other peer."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_mesh_call_example_decodes_everyone() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "mesh_call.py"), "--peers", "3", "--seconds", "4"],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "open http://127.0.0.1:" in result.stdout
    counts = re.findall(r"decoded frames: (\{.*\})", result.stdout)
    assert len(counts) == 3, result.stdout
    for text in counts:
        frames = ast.literal_eval(text)
        assert len(frames) == 2
        assert all(count > 0 for count in frames.values())
