"""Tests that drive Debian's headless Chromium through Playwright (``nox -s browser``).

A package, so that its modules are ``browser.test_*`` and may share a basename with a unit-test
module of ``tests/``. ``conftest.py`` gives every test here the ``browser`` marker.
"""
