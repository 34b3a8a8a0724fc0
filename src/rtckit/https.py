"""Send plain-HTTP visitors to the HTTPS site: a 308 redirect for aiohttp.

People type ``192.168.1.20:8080`` into a phone and get ``http://``; the camera then stays off
because the origin is not secure. :func:`redirect_app` (or :class:`RedirectServer`, which runs
it) answers every request with **308 Permanent Redirect** to
``https://<host>:<https_port><path>?<query>``: same host as the request's ``Host`` header, same
path and query, the HTTPS port (left out when it is 443). 308 rather than 301 keeps the method
and body of a ``POST``. A missing or malformed ``Host`` header gets **400**.
:func:`https_redirect_middleware` does the same inside an app that also serves HTTPS.

:func:`redirect_location` is the pure function behind them.
"""

from __future__ import annotations

import ipaddress
import re
from types import TracebackType
from typing import Self
from urllib.parse import urlsplit

from aiohttp import web
from aiohttp.typedefs import Handler, Middleware

from rtckit.errors import ConfigurationError
from rtckit.httpserver import HttpLimits, LimitedSite, runner_options

__all__ = [
    "RedirectServer",
    "https_redirect_middleware",
    "redirect_app",
    "redirect_location",
    "redirect_response",
]

_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_REG_NAME = re.compile(rf"{_LABEL}(?:\.{_LABEL})*\.?")
_PORT = re.compile(r"[0-9]{0,5}")
_TARGET = re.compile(r"/[\x21-\x7e]*")  # origin-form: visible ASCII, no spaces or controls


def _check_port(name: str, port: int) -> int:
    if type(port) is not int or not 0 < port < 65536:
        raise ConfigurationError(f"{name} must be a TCP port from 1 to 65535, not {port!r}")
    return port


def _host_for_url(authority: str) -> str | None:
    """Return the host part of a ``Host`` header, ready for a URL; None if malformed."""
    text = authority.strip(" \t")
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            return None
        literal, rest = text[1:end], text[end + 1 :]
        try:
            address = ipaddress.IPv6Address(literal)
        except ValueError:
            return None
        if address.scope_id is not None:
            return None
        host = f"[{address.compressed}]"
    else:
        name, colon, rest = text.partition(":")
        rest = colon + rest
        if not _REG_NAME.fullmatch(name):
            return None
        host = name.lower()
    if rest:
        if not rest.startswith(":") or not _PORT.fullmatch(rest[1:]):
            return None
        if rest[1:] and not 0 < int(rest[1:]) < 65536:
            return None
    return host


def redirect_location(host: str | None, target: str, https_port: int) -> str | None:
    """Return the HTTPS URL for a plain-HTTP request, or None if the request is malformed.

    *host* is the ``Host`` header (None if absent), *target* the request target as sent
    (``/path?query``, or an absolute ``http://host/path`` which then wins over *host*, as
    RFC 9112 says). The path and query are kept byte for byte; the port becomes *https_port*,
    omitted when 443.

    >>> redirect_location("example.test:8080", "/room?id=7", 8443)
    'https://example.test:8443/room?id=7'
    >>> redirect_location("[::1]:80", "/", 443)
    'https://[::1]/'
    """
    _check_port("https_port", https_port)
    if not target.startswith("/"):
        parts = urlsplit(target)
        if parts.scheme.lower() not in ("http", "https") or not parts.netloc:
            return None
        host = parts.netloc
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
    if host is None or "@" in host or not _TARGET.fullmatch(target):
        return None
    url_host = _host_for_url(host)
    if url_host is None:
        return None
    port = "" if https_port == 443 else f":{https_port}"
    return f"https://{url_host}{port}{target}"


def redirect_response(request: web.BaseRequest, https_port: int) -> web.Response:
    """Return the 308 response sending *request* to HTTPS (400 if its Host is malformed)."""
    hosts = request.headers.getall("Host", [])
    host = hosts[0] if len(hosts) == 1 else None  # two Host headers: malformed (RFC 9112)
    location = redirect_location(host, request.raw_path, https_port)
    if location is None:
        return web.Response(status=400, text="400 Bad Request: missing or malformed Host\n")
    return web.Response(
        status=308,
        headers={"Location": location, "Cache-Control": "no-store"},
        text=f"308 Permanent Redirect: {location}\n",
    )


def redirect_app(https_port: int) -> web.Application:
    """Return an aiohttp app answering every request with a redirect to *https_port*.

    Every method and every target is redirected (no routing), including ones the router
    would refuse; an asterisk-form target (``OPTIONS *``) gets 400.
    """
    _check_port("https_port", https_port)

    @web.middleware
    async def redirect(request: web.Request, handler: Handler) -> web.StreamResponse:
        return redirect_response(request, https_port)

    return web.Application(middlewares=[redirect])


def https_redirect_middleware(https_port: int) -> Middleware:
    """Return an aiohttp middleware that redirects plain-HTTP requests to *https_port*.

    Requests that arrived over TLS (``request.secure``) go to the app's handlers as usual.
    Add it to an app that listens on both an HTTP and an HTTPS site.
    """
    _check_port("https_port", https_port)

    @web.middleware
    async def middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
        if request.secure:
            return await handler(request)
        return redirect_response(request, https_port)

    return middleware


class RedirectServer:
    """Runs :func:`redirect_app` on *host*:*port*; use it as an async context manager.

    *host* None listens on every interface; *port* 0 picks a free port (see :attr:`port`).
    *shutdown_timeout* bounds how long :meth:`aclose` waits for requests in progress; *limits*
    bounds idle and slow connections and header sizes (:class:`~rtckit.httpserver.HttpLimits`).

    .. code-block:: python

        async with RedirectServer(https_port=8443, host="127.0.0.1", port=8080):
            ...  # http://127.0.0.1:8080/x -> https://127.0.0.1:8443/x
    """

    def __init__(
        self,
        *,
        https_port: int,
        host: str | None = None,
        port: int = 80,
        shutdown_timeout: float = 5.0,
        limits: HttpLimits | None = None,
    ) -> None:
        self._https_port = _check_port("https_port", https_port)
        if type(port) is not int or not 0 <= port < 65536:
            raise ConfigurationError(f"port must be from 0 (any free port) to 65535, not {port!r}")
        if shutdown_timeout < 0:
            raise ConfigurationError(f"shutdown_timeout cannot be negative: {shutdown_timeout!r}")
        self._host = host
        self._port = port
        self._shutdown_timeout = shutdown_timeout
        self._limits = limits or HttpLimits()
        self._runner: web.AppRunner | None = None
        self._addresses: list[tuple[str, int]] = []

    async def start(self) -> None:
        """Start listening (done by ``async with``)."""
        if self._runner is not None:
            return
        runner = web.AppRunner(
            redirect_app(self._https_port),
            shutdown_timeout=self._shutdown_timeout,
            **runner_options(self._limits),
        )
        await runner.setup()
        try:
            site = LimitedSite(runner, self._host, self._port)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._addresses = [(str(a[0]), int(a[1])) for a in runner.addresses]

    @property
    def addresses(self) -> list[tuple[str, int]]:
        """The (host, port) pairs it listens on; empty before :meth:`start`."""
        return list(self._addresses)

    @property
    def port(self) -> int:
        """The port it listens on (the chosen one when *port* was 0)."""
        if not self._addresses:
            raise RuntimeError("the redirect server is not started")
        return self._addresses[0][1]

    async def aclose(self) -> None:
        """Stop listening and close connections; safe to call twice."""
        runner, self._runner = self._runner, None
        self._addresses = []
        if runner is not None:
            await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
