"""The browser client, ``rtckit.js``, and how a server serves it.

``rtckit.js`` is an entry module that re-exports what the ES modules of the ``rtckit/``
folder beside it define (constants, signaling, peer session, rooms). They import one another
with relative paths (``./peer.js``), so a browser loads them from wherever the entry is
served, with no bundler, as long as the server serves the whole folder next to the entry:

=============================  =============================================================
``<dir>/rtckit.js``            the entry (what pages import)
``<dir>/rtckit/<name>.js``     the modules it imports, every one in :func:`client_modules`
=============================  =============================================================

:class:`~rtckit.signaling.wsserver.SignalingServer` serves them at ``<path>/rtckit.js`` and
``<path>/rtckit/...`` (``/ws/rtckit.js`` by default), the rtckit app also at ``/rtckit.js``.
To serve them from your own server, serve every item of :func:`client_modules` at its name
under one directory, as ``text/javascript``.
"""

from __future__ import annotations

import importlib.resources
from collections.abc import Mapping
from importlib.resources.abc import Traversable

from aiohttp import web

__all__ = [
    "CLIENT_MODULE_DIR",
    "CLIENT_SCRIPT",
    "client_module",
    "client_modules",
    "client_routes",
    "client_script",
    "serve_client_module",
]

#: File name of the entry module, served next to the WebSocket path.
CLIENT_SCRIPT = "rtckit.js"
#: The folder, beside the entry, of the modules the entry imports.
CLIENT_MODULE_DIR = "rtckit"

_CONTENT_TYPE = "text/javascript"
_HEADERS: Mapping[str, str] = {"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"}


def _static() -> Traversable:
    return importlib.resources.files("rtckit.signaling") / "static"


def _names() -> list[str]:
    folder = _static() / CLIENT_MODULE_DIR
    modules = sorted(
        f"{CLIENT_MODULE_DIR}/{item.name}"
        for item in folder.iterdir()
        if item.is_file() and item.name.endswith(".js")
    )
    return [CLIENT_SCRIPT, *modules]


def client_module(name: str) -> str | None:
    """The source of the browser client module *name* (a key of :func:`client_modules`,
    e.g. ``"rtckit.js"`` or ``"rtckit/peer.js"``), or ``None`` if there is no such module.

    Only the package's own modules are found: any other name (``..``, an absolute path, a
    file that is not one of them) gives ``None``.
    """
    if name not in _names():
        return None
    return (_static() / name).read_text(encoding="utf-8")


def client_modules() -> dict[str, str]:
    """Every module of the browser client, by its path relative to the entry's directory:
    ``"rtckit.js"`` (the entry, first) then ``"rtckit/<name>.js"``, to their sources.

    Serve each at its name under one directory and pages can import the entry from there.
    """
    return {name: (_static() / name).read_text(encoding="utf-8") for name in _names()}


def client_script() -> str:
    """Return the source of the entry module, ``rtckit.js`` (which imports the others)."""
    return (_static() / CLIENT_SCRIPT).read_text(encoding="utf-8")


def client_routes(directory: str) -> tuple[str, str]:
    """The two aiohttp route paths that serve the client under *directory* (e.g. ``"/ws"``,
    or ``"/"`` for the root), both for :func:`serve_client_module`: the entry, and
    ``.../rtckit/{module}`` for the modules it imports."""
    base = directory.rstrip("/")
    return f"{base}/{CLIENT_SCRIPT}", f"{base}/{CLIENT_MODULE_DIR}/{{module}}"


def serve_client_module(request: web.Request) -> web.Response:
    """The response for a request routed by :func:`client_routes`: the module's source as
    ``text/javascript``, or 404 for a name that is not a module of the client."""
    module = request.match_info.get("module")
    name = CLIENT_SCRIPT if module is None else f"{CLIENT_MODULE_DIR}/{module}"
    text = client_module(name)
    if text is None:
        raise web.HTTPNotFound(text="no such module")
    return web.Response(text=text, content_type=_CONTENT_TYPE, headers=_HEADERS)
