"""The room example the how-tos include runs in every topology with the same participant code."""

from __future__ import annotations

import ast
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rtckit.topology.mcu import MCU_PEER_ID

ROOT = Path(__file__).resolve().parent.parent


def _run(topology: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    example = str(ROOT / "examples" / "room_call.py")
    args = ["--topology", topology, "--peers", "3", "--seconds", "5"]
    result = subprocess.run(
        [sys.executable, example, *args],
        capture_output=True,
        text=True,
        timeout=90,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "open http://127.0.0.1:" in result.stdout
    # nothing went wrong on the way, not even while everyone left at once
    assert "Traceback" not in result.stderr, result.stderr
    # every peer greets every other once its connection toward them is up: none is lost
    for receiver in range(3):
        for sender in set(range(3)) - {receiver}:
            greeting = rf"^py{receiver} <- \S+: 'hello from py{sender}'$"
            assert len(re.findall(greeting, result.stdout, flags=re.M)) == 1, result.stdout
    return result.stdout


def _decoded(stdout: str, topology: str) -> list[dict[str, int]]:
    counts = re.findall(rf", {topology}\) decoded frames: (\{{.*\}})", stdout)
    assert len(counts) == 3, stdout
    return [ast.literal_eval(text) for text in counts]


@pytest.mark.parametrize("topology", ["mesh", "sfu"])
def test_every_peer_decodes_every_other(topology: str) -> None:
    stdout = _run(topology)
    for frames in _decoded(stdout, topology):
        assert len(frames) == 2
        assert all(count > 0 for count in frames.values())
    if topology == "sfu":  # forwarded, never decoded or encoded by the server
        assert re.search(r"SFU: [1-9]\d* packets forwarded .*, 0 decoders, 0 encoders", stdout)


def test_every_peer_decodes_the_mcu_composite_encoded_once() -> None:
    stdout = _run("mcu")
    for frames in _decoded(stdout, "mcu"):
        assert list(frames) == [MCU_PEER_ID]  # one video stream: the composite
        assert frames[MCU_PEER_ID] > 0
    stats = re.search(r"MCU: 3 participants, (\d+) composites, (\d+) encodes", stdout)
    assert stats is not None, stdout
    assert stats[1] == stats[2]  # encoded once per composite, for the three viewers
