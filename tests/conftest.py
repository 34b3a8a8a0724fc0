"""Shared pytest configuration."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

# Property tests judge correctness, not speed: on a shared 2-core machine a single example can
# take longer than Hypothesis' default 200 ms deadline, which would fail a correct test.
settings.register_profile(
    "rtckit", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("rtckit")
