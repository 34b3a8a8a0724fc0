"""The Python signaling client: join a room, send and receive typed messages, survive drops.

.. code-block:: python

    async with SignalingClient.connect("ws://127.0.0.1:8765/ws", room="lobby") as client:
        print("I am", client.peer_id, "with", list(client.peers))
        await client.send_app(None, {"hello": "everyone"})
        async for event in client:
            if isinstance(event, Offer):
                await client.send_answer(event.sender, answer_sdp)

Events are the protocol's own classes (:class:`~rtckit.signaling.protocol.PeerJoined`,
:class:`~rtckit.signaling.protocol.Offer`, ...) plus :class:`Disconnected` and
:class:`Reconnected`. When the connection drops the client reconnects with exponential backoff
and jitter and resumes its session: nothing sent to it or by it is lost or duplicated. If the
server has forgotten the session (its resume window passed), the client joins again as a new
peer, reports each of its own unacknowledged messages as an ``undeliverable``
:class:`~rtckit.signaling.protocol.Error` event, and emits ``Reconnected(resumed=False)``.

The client acknowledges a server message once the application has taken its event (``async
for``, :meth:`SignalingClient.next_event`), not when it arrives: a consumer that falls behind
makes the server refuse further messages to it (``backlog_full`` to their senders, beyond
:attr:`~rtckit.signaling.config.SignalingConfig.max_pending`) instead of queueing them here.
The server closes a connection with 4004 when it holds too much for the client
(:attr:`~rtckit.signaling.protocol.CloseCode.SLOW_CONSUMER`); the client then reconnects and
resumes like after any drop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import ssl
from collections import deque
from collections.abc import AsyncIterator, Generator
from types import TracebackType
from typing import Any, TypeAlias

import attrs

from rtckit.errors import (
    AuthError,
    ConfigurationError,
    ConnectionClosedError,
    ProtocolError,
    RemoteProtocolError,
    RoomError,
    SignalingError,
)
from rtckit.signaling.protocol import (
    PROTOCOL_VERSION,
    Ack,
    Answer,
    AppMessage,
    Bye,
    Candidate,
    CloseCode,
    EndOfCandidates,
    Error,
    ErrorCode,
    Hello,
    Join,
    JsonValue,
    Message,
    Offer,
    PeerInfo,
    PeerJoined,
    PeerLeft,
    Ping,
    Pong,
    Relayed,
    Restart,
    Resume,
    Resumed,
    Welcome,
    decode,
    encode,
)
from rtckit.signaling.transport import ClientTransport

__all__ = [
    "CLIENT_AGENT",
    "ClientEvent",
    "Disconnected",
    "ReconnectPolicy",
    "Reconnected",
    "SignalingClient",
    "error_for",
]

logger = logging.getLogger(__name__)

CLIENT_AGENT = "rtckit-py/1"

# Close codes after which reconnecting is pointless.
_FINAL_CLOSE_CODES = frozenset(
    {CloseCode.POLICY_VIOLATION, CloseCode.UNSUPPORTED_VERSION, CloseCode.SESSION_REPLACED}
)
_ROOM_CODES = frozenset(
    {
        ErrorCode.UNKNOWN_ROOM,
        ErrorCode.ROOM_FULL,
        ErrorCode.PEER_ID_TAKEN,
        ErrorCode.UNKNOWN_PEER,
        ErrorCode.NOT_JOINED,
        ErrorCode.ALREADY_JOINED,
        ErrorCode.UNAVAILABLE,
    }
)


def error_for(error: Error) -> SignalingError:
    """Return the exception matching a server :class:`~rtckit.signaling.protocol.Error`.

    ``auth_*`` codes give :class:`~rtckit.errors.AuthError`, room codes
    :class:`~rtckit.errors.RoomError`, others :class:`~rtckit.errors.ProtocolError` (the base
    class itself: the server's verdict on what the client sent, neither a
    :class:`~rtckit.errors.LocalProtocolError` nor a :class:`~rtckit.errors.RemoteProtocolError`).
    """
    text = f"{error.code}: {error.message}"
    if error.code.startswith("auth_"):
        return AuthError(text, code=error.code)
    if error.code in _ROOM_CODES:
        return RoomError(text, code=error.code)
    return ProtocolError(text, code=error.code)


@attrs.frozen(kw_only=True)
class Disconnected:
    """The connection dropped; the client is reconnecting (*code*: close code if known)."""

    code: int | None
    reason: str


@attrs.frozen(kw_only=True)
class Reconnected:
    """The client is connected again.

    ``resumed=True``: same session, nothing lost. ``resumed=False``: the old session had
    expired; *welcome* describes the new one (new peer id, current peers).
    """

    resumed: bool
    welcome: Welcome | None = None


ClientEvent: TypeAlias = (
    PeerJoined
    | PeerLeft
    | Offer
    | Answer
    | Candidate
    | EndOfCandidates
    | Restart
    | AppMessage
    | Error
    | Bye
    | Disconnected
    | Reconnected
)


@attrs.frozen(kw_only=True)
class ReconnectPolicy:
    """How the client reconnects: delay ``initial_delay * factor**attempt`` capped at
    ``max_delay``, minus up to ``jitter`` of it at random; ``max_attempts=None``: no limit
    (the client still stops when the server refuses to resume and rejoin fails)."""

    enabled: bool = True
    initial_delay: float = attrs.field(default=0.05, validator=attrs.validators.ge(0.0))
    max_delay: float = attrs.field(default=5.0, validator=attrs.validators.ge(0.0))
    factor: float = attrs.field(default=2.0, validator=attrs.validators.ge(1.0))
    jitter: float = attrs.field(
        default=0.5, validator=[attrs.validators.ge(0.0), attrs.validators.le(1.0)]
    )
    max_attempts: int | None = None
    #: Seconds allowed for one connection attempt including hello and join/resume.
    connect_timeout: float = attrs.field(default=10.0, validator=attrs.validators.gt(0.0))

    def delay(self, attempt: int) -> float:
        """Seconds to wait before attempt number *attempt* (0 for the first)."""
        base = min(self.max_delay, self.initial_delay * self.factor**attempt)
        return base * (1.0 - self.jitter * random.random())


_CLOSED = object()


class _Connect:
    """What :meth:`SignalingClient.connect` returns: await it, or use it with ``async with``."""

    def __init__(self, client: SignalingClient) -> None:
        self._client = client

    def __await__(self) -> Generator[Any, None, SignalingClient]:
        return self._start().__await__()

    async def _start(self) -> SignalingClient:
        await self._client.start()
        return self._client

    async def __aenter__(self) -> SignalingClient:
        return await self._start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._client.aclose()


class SignalingClient:
    """A peer in one room of a signaling server. Create it with :meth:`connect`."""

    #: The other peers of the room by peer id, kept up to date from the events.
    peers: dict[str, PeerInfo]

    def __init__(
        self,
        transport: ClientTransport,
        *,
        room: str,
        token: str | None = None,
        metadata: dict[str, JsonValue] | None = None,
        peer_id: str | None = None,
        reconnect: ReconnectPolicy | None = None,
        ack_every: int = 16,
        ack_delay: float = 1.0,
    ) -> None:
        if not isinstance(transport, ClientTransport):
            raise ConfigurationError("transport must implement ClientTransport")
        self.transport = transport
        self.room = room
        self._token = token
        self._metadata = metadata
        self._requested_peer_id = peer_id
        self.reconnect_policy = reconnect or ReconnectPolicy()
        self._ack_every = ack_every
        self._ack_delay = ack_delay
        self._welcome: Welcome | None = None
        self.peers: dict[str, PeerInfo] = {}
        # (session generation, event), or _CLOSED. Bounded by the server: it holds at most
        # max_pending messages this client has not acknowledged, and the client acknowledges
        # an event once the application took it (see __anext__).
        self._events: asyncio.Queue[Any] = asyncio.Queue()
        self._out_seq = 0
        self._unacked: deque[Relayed] = deque()
        self._in_seq = 0  # highest server seq received
        self._processed = 0  # highest server seq the application took from the events
        self._acked_in = 0
        self._generation = 0  # counts sessions: seqs restart at 1 in a new one
        self._ack_wanted = asyncio.Event()
        self._connected = False
        self._closing = False
        self._removed = False
        self._closed = False
        self._failure: SignalingError | None = None
        self._reader: asyncio.Task[None] | None = None
        self._housekeeper: asyncio.Task[None] | None = None
        self._last_recv = 0.0
        self._started = False

    @classmethod
    def connect(
        cls,
        target: str | ClientTransport,
        *,
        room: str,
        token: str | None = None,
        metadata: dict[str, JsonValue] | None = None,
        peer_id: str | None = None,
        reconnect: ReconnectPolicy | None = None,
        headers: dict[str, str] | None = None,
        ssl: ssl.SSLContext | None = None,
    ) -> _Connect:
        """Connect to *target* (a ``ws://``/``wss://`` URL or a transport) and join *room*.

        *headers* and *ssl* (the TLS context of a ``wss://`` URL) go to the
        :class:`~rtckit.signaling.websocket.WebSocketTransport` made for a URL.

        Use as ``async with SignalingClient.connect(...) as client`` or
        ``client = await SignalingClient.connect(...)`` (then ``await client.aclose()``).
        Raises :class:`~rtckit.errors.AuthError`, :class:`~rtckit.errors.RoomError` or
        :class:`~rtckit.errors.ProtocolError` if the server refuses the join.
        """
        if isinstance(target, str):
            from rtckit.signaling.websocket import WebSocketTransport

            transport: ClientTransport = WebSocketTransport(target, headers=headers, ssl=ssl)
        else:
            transport = target
        client = cls(
            transport,
            room=room,
            token=token,
            metadata=metadata,
            peer_id=peer_id,
            reconnect=reconnect,
        )
        return _Connect(client)

    # --- state ---------------------------------------------------------------------------

    @property
    def welcome(self) -> Welcome:
        """The server's :class:`~rtckit.signaling.protocol.Welcome` for the current session."""
        if self._welcome is None:
            raise ConnectionClosedError("not joined yet")
        return self._welcome

    @property
    def peer_id(self) -> str:
        """This client's peer id in the room."""
        return self.welcome.peer_id

    @property
    def identity(self) -> str | None:
        """The identity from the room token, if any."""
        return self.welcome.identity

    @property
    def topology(self) -> str:
        """The room's topology (``mesh``, ``sfu`` or ``mcu``)."""
        return self.welcome.topology

    @property
    def ice_servers(self) -> JsonValue:
        """The ICE servers the server gave (JSON list of ``RTCIceServer``), or ``None``."""
        return self.welcome.ice_servers

    @property
    def connected(self) -> bool:
        """Whether the connection is up right now (False while reconnecting)."""
        return self._connected

    @property
    def closed(self) -> bool:
        """Whether :meth:`aclose` was called or the client gave up."""
        return self._closed

    # --- life cycle ----------------------------------------------------------------------

    async def start(self) -> None:
        """Connect and join (what awaiting :meth:`connect` does)."""
        if self._started:
            return
        self._started = True
        try:
            async with asyncio.timeout(self.reconnect_policy.connect_timeout):
                await self.transport.connect()
                welcome = await self._handshake_join()
        except BaseException:
            self._closed = True
            await self.transport.close()
            raise
        self._set_welcome(welcome)
        self._connected = True
        loop = asyncio.get_running_loop()
        self._last_recv = loop.time()
        self._reader = loop.create_task(self._read_loop(), name="rtckit-signaling-reader")
        self._housekeeper = loop.create_task(
            self._housekeeping(), name="rtckit-signaling-housekeeping"
        )

    async def aclose(self) -> None:
        """Leave the room (``bye``) and close. Idempotent; ends ``async for`` iteration."""
        if self._closing:
            return
        self._closing = True
        if self._connected and not self._removed:
            with contextlib.suppress(ConnectionClosedError, OSError):
                await self._send_ack()
                await self.transport.send(encode(Bye(reason="closed")))
        self._connected = False
        await self.transport.close()
        for task in (self._reader, self._housekeeper):
            if task is not None and task is not asyncio.current_task():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._finish(None)

    close = aclose

    async def __aenter__(self) -> SignalingClient:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- events --------------------------------------------------------------------------

    def __aiter__(self) -> AsyncIterator[ClientEvent]:
        return self

    async def __anext__(self) -> ClientEvent:
        item = await self._events.get()
        if item is _CLOSED:
            self._events.put_nowait(_CLOSED)
            if self._failure is not None:
                raise self._failure
            raise StopAsyncIteration
        generation, event = item
        seq = getattr(event, "seq", None)
        if seq is not None and generation == self._generation and seq > self._processed:
            # Acknowledge what the application consumed, not what arrived: so the server's
            # max_pending bounds what waits here for a slow consumer.
            self._processed = seq
            if seq - self._acked_in >= self._ack_every:
                self._ack_wanted.set()
        return event  # type: ignore[no-any-return]

    def _emit(self, event: ClientEvent) -> None:
        self._events.put_nowait((self._generation, event))

    async def next_event(self) -> ClientEvent:
        """Return the next event; raise :class:`~rtckit.errors.ConnectionClosedError` once closed.

        Bound the wait with ``asyncio.timeout()`` if needed.
        """
        try:
            return await self.__anext__()
        except StopAsyncIteration:
            raise ConnectionClosedError("the signaling client is closed") from None

    # --- sending -------------------------------------------------------------------------

    async def send(self, message: Relayed) -> int:
        """Send a relayed message (its ``seq`` and ``sender`` are set here); return its seq.

        The message is kept until the server acknowledges it and resent after a reconnect; if
        its target leaves first, an ``undeliverable``
        :class:`~rtckit.signaling.protocol.Error` event names this seq.
        """
        if self._closing or self._closed:
            raise ConnectionClosedError("the signaling client is closed")
        self._out_seq += 1
        message = attrs.evolve(message, seq=self._out_seq, sender=None)  # type: ignore[misc]
        self._unacked.append(message)
        if self._connected:
            # On failure the reader notices, reconnects and resends the message.
            with contextlib.suppress(ConnectionClosedError):
                await self.transport.send(encode(message))
        return self._out_seq

    async def send_offer(self, to: str, sdp: str, *, session: str | None = None) -> int:
        """Send an SDP offer to peer *to*."""
        return await self.send(Offer(to=to, sdp=sdp, session=session))

    async def send_answer(self, to: str, sdp: str, *, session: str | None = None) -> int:
        """Send an SDP answer to peer *to*."""
        return await self.send(Answer(to=to, sdp=sdp, session=session))

    async def send_candidate(
        self,
        to: str,
        candidate: str,
        *,
        sdp_mid: str | None = None,
        sdp_mline_index: int | None = None,
        session: str | None = None,
    ) -> int:
        """Send one ICE candidate (``candidate:...`` line) to peer *to*."""
        return await self.send(
            Candidate(
                to=to,
                candidate=candidate,
                sdp_mid=sdp_mid,
                sdp_mline_index=sdp_mline_index,
                session=session,
            )
        )

    async def send_end_of_candidates(self, to: str, *, session: str | None = None) -> int:
        """Tell peer *to* there are no more candidates."""
        return await self.send(EndOfCandidates(to=to, session=session))

    async def send_restart(self, to: str, *, session: str | None = None) -> int:
        """Ask peer *to* to restart ICE."""
        return await self.send(Restart(to=to, session=session))

    async def send_app(self, to: str | None, payload: JsonValue) -> int:
        """Send application JSON *payload* to peer *to*, or to every other peer if ``None``."""
        return await self.send(AppMessage(to=to, payload=payload))

    # --- internals -----------------------------------------------------------------------

    async def _receive_message(self) -> Message:
        while True:
            text = await self.transport.receive()
            try:
                return decode(text, max_size=1 << 24, max_depth=64)
            except ProtocolError:
                logger.warning("ignoring an invalid message from the server: %.100r", text)

    async def _expect(self, *types: type[Message]) -> Message:
        message = await self._receive_message()
        if isinstance(message, Error) and message.seq is None:
            raise error_for(message)
        if not isinstance(message, types):
            raise RemoteProtocolError(f"expected {[t.type for t in types]}, got {message.type!r}")
        return message

    async def _handshake_join(self) -> Welcome:
        await self.transport.send(encode(Hello(version=PROTOCOL_VERSION, agent=CLIENT_AGENT)))
        await self.transport.send(
            encode(
                Join(
                    room=self.room,
                    token=self._token,
                    metadata=self._metadata,
                    peer_id=self._requested_peer_id,
                )
            )
        )
        await self._expect(Hello)
        welcome = await self._expect(Welcome)
        assert isinstance(welcome, Welcome)
        return welcome

    def _set_welcome(self, welcome: Welcome) -> None:
        self._welcome = welcome
        self.peers = {peer.id: peer for peer in welcome.peers}

    async def _send_ack(self) -> None:
        processed = self._processed
        if processed > self._acked_in:
            self._acked_in = processed
            await self.transport.send(encode(Ack(ack=processed)))

    async def _read_loop(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while True:
                try:
                    message = await self._receive_message()
                except ConnectionClosedError as exc:
                    if self._closing or self._removed:
                        self._finish(None)
                        return
                    await self._recover(exc)
                    continue
                self._last_recv = loop.time()
                try:
                    await self._handle(message)
                except ConnectionClosedError:
                    continue  # the next receive fails too and recovers
        except SignalingError as exc:
            self._finish(exc)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # pragma: no cover - a bug: end the client loudly
            logger.exception("signaling client reader failed")
            self._finish(ConnectionClosedError(f"signaling client failed: {exc!r}"))

    async def _handle(self, message: Message) -> None:
        if isinstance(message, Ping):
            await self.transport.send(encode(Pong(nonce=message.nonce)))
            return
        if isinstance(message, Ack):
            unacked = self._unacked
            while unacked and (unacked[0].seq or 0) <= message.ack:
                unacked.popleft()
            return
        if isinstance(message, Pong | Hello | Welcome | Resumed):
            return
        seq = getattr(message, "seq", None)
        if seq is not None:
            if seq <= self._in_seq:
                return  # already delivered before a reconnect
            self._in_seq = seq
        if isinstance(message, PeerJoined):
            self.peers[message.peer.id] = message.peer
        elif isinstance(message, PeerLeft):
            self.peers.pop(message.peer_id, None)
        elif isinstance(message, Bye):
            self._removed = True  # the server removed us: do not reconnect
        # Queue the event before any await: once _in_seq moved, the message must be delivered.
        self._emit(message)  # type: ignore[arg-type]

    async def _housekeeping(self) -> None:
        loop = asyncio.get_running_loop()
        wanted = self._ack_wanted
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._ack_delay):
                    await wanted.wait()
            wanted.clear()
            if not self._connected:
                continue
            try:
                await self._send_ack()
                interval = self.welcome.heartbeat_interval
                idle = loop.time() - self._last_recv
                if idle > 3 * interval + 1.0:
                    logger.info("signaling server silent for %.1f s: reconnecting", idle)
                    self._connected = False
                    await self.transport.close()
                elif idle > 2 * interval:  # the server pings first; this is a fallback
                    await self.transport.send(encode(Ping()))
            except ConnectionClosedError:
                pass

    async def _recover(self, cause: ConnectionClosedError) -> None:
        """Reconnect after *cause*: resume the session, or join again if it expired."""
        self._connected = False
        code = cause.code if isinstance(cause.code, int) else None
        policy = self.reconnect_policy
        if not policy.enabled or code in _FINAL_CLOSE_CODES or self._closing:
            raise ConnectionClosedError(str(cause), code=code)
        self._emit(Disconnected(code=code, reason=str(cause)))
        attempt = 0
        while not self._closing:
            if policy.max_attempts is not None and attempt >= policy.max_attempts:
                raise ConnectionClosedError(
                    f"gave up reconnecting after {attempt} attempts", code=code
                )
            await asyncio.sleep(policy.delay(attempt))
            attempt += 1
            try:
                async with asyncio.timeout(policy.connect_timeout):
                    await self.transport.connect()
                    event = await self._resume_or_rejoin()
            except AuthError:
                # The server re-checks the room token on resume (and rejoin): once it has
                # expired, trying again cannot succeed. (AuthError is an OSError too.)
                await self.transport.close()
                raise
            except RoomError as exc:
                if exc.code != ErrorCode.UNAVAILABLE:
                    raise
                # A node of a cluster cannot reach the room's node now: try again later.
                await self.transport.close()
                logger.info("signaling reconnect attempt %d: room unavailable", attempt)
                continue
            except (ConnectionClosedError, OSError, TimeoutError) as exc:
                logger.info("signaling reconnect attempt %d failed: %r", attempt, exc)
                continue
            self._last_recv = asyncio.get_running_loop().time()
            self._emit(event)
            return

    async def _resume_or_rejoin(self) -> Reconnected:
        transport = self.transport
        await transport.send(encode(Hello(version=PROTOCOL_VERSION, agent=CLIENT_AGENT)))
        await transport.send(
            encode(Resume(resume_token=self.welcome.resume_token, ack=self._in_seq))
        )
        await self._expect(Hello)
        try:
            resumed = await self._expect(Resumed)
        except ProtocolError as exc:
            if exc.code != ErrorCode.RESUME_FAILED:
                raise
            return await self._rejoin()
        assert isinstance(resumed, Resumed)
        unacked = self._unacked
        while unacked and (unacked[0].seq or 0) <= resumed.ack:
            unacked.popleft()
        self._acked_in = self._in_seq
        index = 0
        while index < len(unacked):  # send() appends while we await: resend those too
            await transport.send(encode(unacked[index]))
            index += 1
        self._connected = True
        return Reconnected(resumed=True)

    async def _rejoin(self) -> Reconnected:
        welcome = await self._handshake_join_after_hello()
        for message in self._unacked:
            self._emit(
                Error(
                    code=ErrorCode.UNDELIVERABLE,
                    message="the session expired before the server acknowledged this message",
                    ref=message.seq,
                )
            )
        self._unacked.clear()
        self._in_seq = self._processed = self._acked_in = 0
        self._generation += 1
        self._set_welcome(welcome)
        self._connected = True
        return Reconnected(resumed=False, welcome=welcome)

    async def _handshake_join_after_hello(self) -> Welcome:
        await self.transport.send(
            encode(
                Join(
                    room=self.room,
                    token=self._token,
                    metadata=self._metadata,
                    peer_id=self._requested_peer_id,
                )
            )
        )
        welcome = await self._expect(Welcome)
        assert isinstance(welcome, Welcome)
        return welcome

    def _finish(self, failure: SignalingError | None) -> None:
        if self._closed:
            return
        self._closed = True
        self._connected = False
        self._failure = failure
        self._events.put_nowait(_CLOSED)
