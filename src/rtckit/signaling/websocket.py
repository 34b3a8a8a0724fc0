"""WebSocket client transport (aiohttp) for :class:`~rtckit.signaling.client.SignalingClient`."""

from __future__ import annotations

import contextlib
import ssl

import aiohttp

from rtckit.errors import ConnectionClosedError
from rtckit.signaling.protocol import CloseCode

__all__ = ["WebSocketTransport"]

_CLOSED_TYPES = (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING, aiohttp.WSMsgType.CLOSED)


class WebSocketTransport:
    """A :class:`~rtckit.signaling.transport.ClientTransport` over one aiohttp WebSocket.

    *url* is ``ws://host:port/path`` or ``wss://...``; *headers* are sent with the upgrade
    request (e.g. ``Origin``); *session* is an aiohttp client session to use (else the transport
    makes and closes its own); *max_message_size* bounds frames from the server (bytes);
    *ssl* is the TLS context of a ``wss://`` connection (e.g.
    :meth:`LocalCA.client_ssl_context <rtckit.certs.ca.LocalCA.client_ssl_context>` for a
    server whose certificate the system does not trust; ``None``: the system's CAs).
    """

    def __init__(
        self,
        url: str,
        *,
        headers: dict[str, str] | None = None,
        session: aiohttp.ClientSession | None = None,
        max_message_size: int = 16 * 1024 * 1024,
        ssl: ssl.SSLContext | None = None,
    ) -> None:
        self.url = url
        self.ssl = ssl
        self.headers = dict(headers or {})
        self.max_message_size = max_message_size
        self._session = session
        self._own_session = session is None
        self._ws: aiohttp.ClientWebSocketResponse | None = None

    async def connect(self) -> None:
        """Open a new WebSocket (closing the previous one)."""
        await self._close_ws()
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        try:
            self._ws = await self._session.ws_connect(
                self.url,
                headers=self.headers,
                max_msg_size=self.max_message_size,
                autoping=True,
                compress=0,
                ssl=True if self.ssl is None else self.ssl,
            )
        except aiohttp.WSServerHandshakeError as exc:
            raise ConnectionClosedError(
                f"WebSocket upgrade refused: {exc.status} {exc.message}", code=None
            ) from exc
        except aiohttp.ClientError as exc:
            raise ConnectionClosedError(f"cannot connect to {self.url}: {exc}") from exc

    async def send(self, text: str) -> None:
        """Send one text frame."""
        ws = self._ws
        if ws is None or ws.closed:
            raise ConnectionClosedError(
                "WebSocket is closed", code=None if ws is None else ws.close_code
            )
        try:
            await ws.send_str(text)
        except (aiohttp.ClientError, ConnectionError, RuntimeError) as exc:
            raise ConnectionClosedError(f"WebSocket send failed: {exc}", code=None) from exc

    async def receive(self) -> str:
        """Return the next text frame."""
        ws = self._ws
        if ws is None:
            raise ConnectionClosedError("WebSocket is not connected")
        message = await ws.receive()
        if message.type == aiohttp.WSMsgType.TEXT:
            text: str = message.data
            return text
        if message.type == aiohttp.WSMsgType.BINARY:
            await ws.close(code=CloseCode.PROTOCOL_ERROR, message=b"binary frame")
            raise ConnectionClosedError("server sent a binary frame", code=1002)
        code = ws.close_code
        if message.type == aiohttp.WSMsgType.CLOSE and isinstance(message.data, int):
            code = message.data
        reason = message.extra if isinstance(message.extra, str) else ""
        raise ConnectionClosedError(f"WebSocket closed ({code} {reason})".strip(), code=code)

    async def close(self) -> None:
        """Close the WebSocket and the session this transport made. Idempotent."""
        await self._close_ws()
        if self._own_session and self._session is not None:
            await self._session.close()
            self._session = None

    async def _close_ws(self) -> None:
        ws, self._ws = self._ws, None
        if ws is not None and not ws.closed:
            with contextlib.suppress(aiohttp.ClientError, ConnectionError, RuntimeError):
                await ws.close()
