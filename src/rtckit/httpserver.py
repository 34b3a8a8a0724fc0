"""Limits on the HTTP connections of rtckit's aiohttp servers, and one-line logs for bad requests.

Every server rtckit runs (the app of ``rtckit serve``/``rtckit demo`` with its HTTP redirect
port, ``rtckit signaling``, :class:`~rtckit.https.RedirectServer`) listens through
:class:`LimitedSite` with the options of :func:`runner_options`:

* **Idle and header timeout.** aiohttp's keep-alive timer is armed when a connection opens
  (after the TLS handshake) and again when a response ends; when it fires while the connection
  still waits for a complete request, the connection is closed without an answer. So
  :attr:`HttpLimits.idle_timeout` bounds, with one number, a connection that never sends a
  request, request headers sent too slowly (slowloris; a WebSocket upgrade trickled byte by
  byte is closed before it completes), and an idle keep-alive connection. aiohttp's own
  default is 3630 s. Once a WebSocket is upgraded the signaling handshake timeout takes over.
* **TLS handshake timeout.** asyncio waits 60 s for a TLS handshake by default;
  :attr:`HttpLimits.tls_handshake_timeout` bounds a client that opens the TLS port and never
  finishes its handshake. :class:`LimitedSite` passes it to ``loop.create_server``, which
  aiohttp's own ``TCPSite`` does not.
* **Header sizes.** A request line or header line over :attr:`HttpLimits.max_line_size` /
  :attr:`HttpLimits.max_field_size` bytes, or more than :attr:`HttpLimits.max_headers` headers,
  is answered 400 and the connection closed (by aiohttp's parser).

A request a client botched is the client's fault, not the server's: aiohttp logs it as
"Error handling request" with a traceback. :data:`HTTP_LOGGER` (``rtckit.http``), which the
servers hand to aiohttp, turns each such record into one line at ``info`` level (``debug`` when
aiohttp chose ``debug``), with the fields ``remote``, ``status`` and ``error`` and no
traceback. Errors of the server itself (a handler that raised) keep their traceback.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from typing import Any

import attrs
from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

__all__ = ["HTTP_LOGGER", "HttpLimits", "LimitedSite", "runner_options"]

_positive_time = attrs.validators.gt(0.0)


@attrs.frozen(kw_only=True)
class HttpLimits:
    """Timeouts (seconds) and header limits of an rtckit HTTP server's connections."""

    #: A connection is closed, without an answer, when it has not sent a complete request (the
    #: request line and every header) this long after it opened (after the TLS handshake) or
    #: after the previous response ended. Covers idle connections, slow headers (slowloris,
    #: a trickled WebSocket upgrade) and idle keep-alive connections.
    idle_timeout: float = attrs.field(default=10.0, validator=_positive_time)
    #: A client on the TLS port must finish its TLS handshake within this.
    tls_handshake_timeout: float = attrs.field(default=10.0, validator=_positive_time)
    #: Longest request line (method, URL, version) in bytes; a longer one gets 400.
    max_line_size: int = attrs.field(default=8190, validator=attrs.validators.ge(256))
    #: Longest header line in bytes; a longer one gets 400.
    max_field_size: int = attrs.field(default=8190, validator=attrs.validators.ge(256))
    #: Most headers in one request; a request with more gets 400.
    max_headers: int = attrs.field(default=128, validator=attrs.validators.ge(8))


class _ClientErrorFilter(logging.Filter):
    """Rewrites aiohttp's "Error handling request" records for malformed requests (a client's
    fault: an :class:`~aiohttp.http_exceptions.HttpProcessingError`) into one traceback-free
    line; other records pass unchanged."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if not isinstance(exc, HttpProcessingError):
            return True
        args = record.args if isinstance(record.args, tuple) else ()
        remote = str(args[0]) if args else "?"
        # the parser's message may quote the offending bytes over several lines
        error = " ".join(str(exc.message).split())[:200]
        level = min(record.levelno, logging.INFO)
        record.levelno = level
        record.levelname = logging.getLevelName(level)
        record.msg = "bad request from %s: %s %s"
        record.args = (remote, exc.code, error)
        record.exc_info = None
        record.exc_text = None
        record.remote = remote
        record.status = exc.code
        record.error = type(exc).__name__
        return logging.getLogger(record.name).isEnabledFor(level)


#: The logger rtckit's servers give aiohttp for its server errors (``rtckit.http``).
HTTP_LOGGER = logging.getLogger("rtckit.http")
HTTP_LOGGER.addFilter(_ClientErrorFilter())


def runner_options(limits: HttpLimits) -> dict[str, Any]:
    """Keyword arguments for :class:`aiohttp.web.AppRunner` applying *limits* (and the
    one-line logging of bad requests) to each connection's request handler."""
    return {
        "keepalive_timeout": limits.idle_timeout,
        "max_line_size": limits.max_line_size,
        "max_field_size": limits.max_field_size,
        "max_headers": limits.max_headers,
        "logger": HTTP_LOGGER,
    }


class LimitedSite(web.BaseSite):
    """A TCP site like :class:`aiohttp.web.TCPSite` whose TLS handshakes are bounded by
    *tls_handshake_timeout* (``TCPSite`` leaves asyncio's 60 s). *reuse_port*: bind with
    ``SO_REUSEPORT`` (several processes sharing the port)."""

    def __init__(
        self,
        runner: web.BaseRunner,
        host: str | None,
        port: int,
        *,
        ssl_context: ssl.SSLContext | None = None,
        tls_handshake_timeout: float = HttpLimits().tls_handshake_timeout,
        backlog: int = 128,
        reuse_port: bool = False,
    ) -> None:
        super().__init__(runner, ssl_context=ssl_context, backlog=backlog)
        self._host = host
        self._port = port
        self._reuse_port = reuse_port
        self._tls_handshake_timeout = tls_handshake_timeout

    @property
    def name(self) -> str:
        scheme = "https" if self._ssl_context else "http"
        host = self._host or "0.0.0.0"  # noqa: S104 - what None binds, for display
        return f"{scheme}://{host}:{self._port}"

    async def start(self) -> None:
        await super().start()
        server = self._runner.server
        assert server is not None
        self._server = await asyncio.get_running_loop().create_server(
            server,
            self._host,
            self._port,
            ssl=self._ssl_context,
            ssl_handshake_timeout=self._tls_handshake_timeout if self._ssl_context else None,
            backlog=self._backlog,
            reuse_port=self._reuse_port or None,
        )
