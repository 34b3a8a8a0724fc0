"""Every test of this folder carries the ``integration`` marker (tests/conftest.py checks it)."""

from __future__ import annotations

import pytest


def pytest_itemcollected(item: pytest.Item) -> None:
    """A conftest's item hooks see only the tests under its own folder."""
    item.add_marker(pytest.mark.integration)
