"""Sphinx configuration for rtckit's documentation."""

from __future__ import annotations

import rtckit

project = "rtckit"
author = "rtckit developers"
copyright = "2026, rtckit developers"
release = rtckit.__version__
version = release

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

html_theme = "furo"
html_title = f"rtckit {release}"
html_static_path = ["_static"]

nitpicky = True
nitpick_ignore_regex = [
    # Third-party classes whose docs have no intersphinx inventory reachable offline.
    (r"py:class", r"(aiortc|aioice|av|aiohttp|attr|attrs|jwt|redis|numpy|pylibsrtp)\..*"),
    (r"py:class", r"(_io|ssl|asyncio|collections\.abc|typing|typing_extensions|argparse)\..*"),
    (r"py:class", r"socket\..*"),
    (r"py:class", r"(Path|SSLContext|datetime\.datetime|datetime\.timedelta|ipaddress\..*)"),
    (r"py:class", r"(NDArray|np\..*|npt\..*)"),
    (r"py:class", r"(enum|pathlib)\..*"),
    # signaling: enum bases, and Playwright's Browser (an optional dependency).
    (r"py:class", r"(enum\..*|playwright\..*|Browser)"),
    (r"py:(class|data|obj)", r"rtckit\..*\._.*"),
    # the private connection class of WHIP publishers and WHEP viewers, named bare in the
    # signatures that import it for type checking only
    (r"py:class", r"HttpPeer"),
    # certs: cryptography's classes and stdlib types of its signatures (no inventory offline).
    (r"py:(class|mod)", r"(cryptography|pathlib|os|enum|ssl)(\..*)?"),
    # sfu: aiortc classes named bare in autodoc type descriptions
    (r"py:class", r"(RTC\w+|MediaStreamTrack|MediaPlayer)"),
    # signaling: type aliases and journal types named bare in autodoc type descriptions
    (r"py:class", r"(Action|ServerEvent|Record|RoomSnapshot|Pending)"),
    # server: aiohttp's ``web`` as imported, and the stdlib logging classes.
    (r"py:class", r"(web|logging)\..*"),
]

autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}

# The build machine has no internet: no intersphinx inventories are fetched.
intersphinx_mapping: dict[str, tuple[str, str | None]] = {}

exclude_patterns = ["_build"]
