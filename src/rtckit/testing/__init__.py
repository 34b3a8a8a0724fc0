"""Testing kit for rtckit and for applications built on it.

Public API, as ``trio.testing`` is for trio: helpers that tests of rtckit itself and tests of
user applications both use (system-component checks, browser launching, the NAT lab, the
signaling transport conformance suite).
"""

from __future__ import annotations

from rtckit.testing._peer import DirectSignaller, peer_pair
from rtckit.testing._system import (
    REQUIRE_SYSTEM_ENV,
    require_executable,
    require_root,
    system_required,
)

__all__ = [
    "REQUIRE_SYSTEM_ENV",
    "DirectSignaller",
    "peer_pair",
    "require_executable",
    "require_root",
    "system_required",
]
