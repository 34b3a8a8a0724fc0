"""Fixtures of the hostile-input suite: one server per factory for the whole package, and its
canary; the suite's runtime budget."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from hostile.harness import Canary
from hostile.targets import FACTORIES, TLS_FACTORIES, Target

#: The whole suite (every case on every target, with server start-up) must finish within this
#: many seconds; a slower run fails after its last case (the fixture is package-scoped: a
#: session-scoped one measured every test run after the suite too).
SUITE_BUDGET = 600.0


@pytest.fixture(scope="package")  # package: its teardown follows the suite's last case, not
def _suite_budget() -> Iterator[None]:
    start = time.monotonic()
    yield
    took = time.monotonic() - start
    if took > SUITE_BUDGET:
        pytest.fail(f"the hostile-input suite took {took:.0f} s, over its {SUITE_BUDGET:.0f} s")


@pytest.fixture(scope="package", params=sorted(FACTORIES))
def target(
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
    _suite_budget: None,
) -> Iterator[Target]:
    name: str = request.param  # a case may name TLS_FACTORIES' targets too (indirect)
    server = {**FACTORIES, **TLS_FACTORIES}[name](tmp_path_factory.mktemp(f"hostile-{name}"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="package")
def canary(target: Target) -> Iterator[Canary]:
    bird = Canary(target)
    bird.start()
    target.rss_start = target.rss()
    try:
        yield bird
    finally:
        bird.stop()
