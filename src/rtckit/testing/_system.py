"""Checks for system components that some tests need (coturn, chromium, root...).

On a developer laptop a missing component skips the test with a clear reason. When the
environment variable ``RTCKIT_REQUIRE_SYSTEM=1`` is set (CI sets it), a missing component
fails the test instead: CI must never pass by skipping.
"""

from __future__ import annotations

import os
import shutil
from typing import NoReturn

__all__ = ["REQUIRE_SYSTEM_ENV", "require_executable", "require_root", "system_required"]

REQUIRE_SYSTEM_ENV = "RTCKIT_REQUIRE_SYSTEM"


def system_required() -> bool:
    """Whether missing system components must fail tests (``RTCKIT_REQUIRE_SYSTEM=1``)."""
    return os.environ.get(REQUIRE_SYSTEM_ENV, "") not in ("", "0", "false", "no")


def _missing(reason: str) -> NoReturn:
    import pytest  # only needed when a test asks

    if system_required():
        pytest.fail(f"{reason} ({REQUIRE_SYSTEM_ENV} is set, so this is a failure)", pytrace=False)
    pytest.skip(reason)


def require_executable(name: str, *, hint: str = "") -> str:
    """Return the path of executable *name*, or skip/fail the calling test if it is missing.

    *hint* names how to install it, e.g. ``"apt-get install coturn"``.
    """
    search = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
    path = shutil.which(name, path=search)
    if path is None:
        _missing(f"{name} is not installed" + (f": {hint}" if hint else ""))
    return path


def require_root(what: str) -> None:
    """Skip/fail the calling test unless it runs as root (needed for *what*)."""
    if os.geteuid() != 0:
        _missing(f"{what} needs root")
