"""Shared pytest configuration."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from markerfolders import misplaced

# Property tests judge correctness, not speed: on a shared 2-core machine a single example can
# take longer than Hypothesis' default 200 ms deadline, which would fail a correct test.
settings.register_profile(
    "rtckit", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("rtckit")

TESTS = Path(__file__).resolve().parent


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Stop the run if a browser or integration test sits outside its folder (or the reverse):
    checked before ``-m`` deselects, so every selection sees a misplaced test."""
    errors = misplaced(
        TESTS, ((item.nodeid, item.path, {m.name for m in item.iter_markers()}) for item in items)
    )
    if errors:
        message = "\n".join(["tests in the wrong folder:", *errors])
        pytest.exit(message, returncode=pytest.ExitCode.USAGE_ERROR)
