"""The signaling wire protocol: typed messages and a strict JSON codec (sans-I/O).

Every message is one JSON object (one WebSocket text frame) with a ``type`` field naming its
class below. Field names are ``snake_case`` on the wire, except ``from`` (``sender`` in Python).
Optional fields may be omitted or ``null``; :func:`encode` omits them. Any other field is an
error: the codec is strict in both directions, so that implementations in other languages agree
on what is valid (see :doc:`/topics/signaling-protocol`).

This module does no I/O and imports neither asyncio nor aiohttp.

.. code-block:: python

    from rtckit.signaling.protocol import Offer, decode, encode

    text = encode(Offer(to="b7", sdp="v=0..."))
    assert decode(text) == Offer(to="b7", sdp="v=0...")
"""

from __future__ import annotations

import enum
import json
import json.encoder
import math
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, TypeAlias, Union

import attrs

from rtckit.errors import LocalProtocolError, ProtocolError, RemoteProtocolError

__all__ = [
    "DEFAULT_MAX_DEPTH",
    "DEFAULT_MAX_SIZE",
    "MAX_ID_LENGTH",
    "MAX_SEQ",
    "MESSAGE_TYPES",
    "PROTOCOL_VERSION",
    "RELAYED_TYPES",
    "Ack",
    "Answer",
    "AppMessage",
    "Bye",
    "Candidate",
    "CloseCode",
    "EndOfCandidates",
    "Error",
    "ErrorCode",
    "Hello",
    "Join",
    "JsonValue",
    "Message",
    "Offer",
    "PeerInfo",
    "PeerJoined",
    "PeerLeft",
    "Ping",
    "Pong",
    "Relayed",
    "Restart",
    "Resume",
    "Resumed",
    "Welcome",
    "as_dict",
    "decode",
    "decode_frame",
    "encode",
    "encode_relayed",
    "json_depth",
    "json_size",
    "with_seq",
]

#: The protocol version this module speaks (the ``version`` of :class:`Hello`).
PROTOCOL_VERSION = 1
#: Default maximum size of one message, in bytes of UTF-8.
DEFAULT_MAX_SIZE = 64 * 1024
#: Default maximum nesting depth of free-form JSON (``payload``, ``metadata``, ``ice_servers``).
DEFAULT_MAX_DEPTH = 16
#: Longest room name, peer id or identity accepted, in characters (tokens may be 8 times it).
MAX_ID_LENGTH = 128
#: Largest sequence number (``2**53 - 1``, exact in JavaScript numbers).
MAX_SEQ = 2**53 - 1

JsonValue: TypeAlias = Any
"""Any JSON value (``None``, bool, int, float, str, list, dict with str keys)."""


class ErrorCode(enum.StrEnum):
    """The ``code`` of an :class:`Error` message (and of :class:`~rtckit.errors.SignalingError`).

    Codes are stable strings; a client must treat an unknown code like ``internal``.
    """

    #: The frame is not JSON, or a JSON number is NaN/Infinity, or an object repeats a key.
    BAD_JSON = "bad_json"
    #: The frame is not valid UTF-8 (for example a truncated multi-byte sequence). In-process
    #: transports only: over WebSocket such a text frame closes the connection with 1007.
    BAD_ENCODING = "bad_encoding"
    #: The message is larger than the server's limit (over WebSocket, close 1009 instead).
    TOO_LARGE = "too_large"
    #: Free-form JSON nests deeper than allowed.
    TOO_DEEP = "too_deep"
    #: A field is missing, extra, or of the wrong type or range.
    BAD_MESSAGE = "bad_message"
    #: ``type`` names no message of this protocol version.
    UNKNOWN_TYPE = "unknown_type"
    #: The message is valid but not allowed now or from this side (e.g. a client sends
    #: ``welcome``, or ``join`` comes before ``hello``).
    UNEXPECTED = "unexpected"
    #: The ``hello`` asks for a protocol version the server does not speak.
    UNSUPPORTED_VERSION = "unsupported_version"
    #: A room message was sent before ``join``.
    NOT_JOINED = "not_joined"
    #: ``join`` on a connection that has already joined.
    ALREADY_JOINED = "already_joined"
    #: The room does not exist and the server does not create rooms on demand.
    UNKNOWN_ROOM = "unknown_room"
    #: The room has its maximum number of peers.
    ROOM_FULL = "room_full"
    #: ``to`` names no peer of the room.
    UNKNOWN_PEER = "unknown_peer"
    #: A requested ``peer_id`` is already used in the room.
    PEER_ID_TAKEN = "peer_id_taken"
    #: The peer lacks the permission for this message, or tried to speak as another peer.
    FORBIDDEN = "forbidden"
    #: A message was accepted but its target left before acknowledging it (``ref`` names it).
    UNDELIVERABLE = "undeliverable"
    #: The target's queue of unacknowledged messages is full (in messages or bytes), or the
    #: server's total across sessions is; the message was not relayed.
    BACKLOG_FULL = "backlog_full"
    #: An ``ack`` (or the ``ack`` of ``resume``) names a ``seq`` the server has not sent; it
    #: acknowledges nothing (and the ``resume`` is refused).
    BAD_ACK = "bad_ack"
    #: Too many messages per second; the connection is closed (1008) after this error.
    RATE_LIMITED = "rate_limited"
    #: ``resume`` with an unknown or expired token: join again.
    RESUME_FAILED = "resume_failed"
    #: ``join`` without a token on a server that requires one.
    AUTH_REQUIRED = "auth_required"
    #: The token is malformed, forged, unsigned (``alg: none``) or uses a refused algorithm.
    AUTH_INVALID = "auth_invalid"
    #: The token has expired (``exp``).
    AUTH_EXPIRED = "auth_expired"
    #: The token is not valid yet (``nbf``/``iat`` in the future).
    AUTH_NOT_YET_VALID = "auth_not_yet_valid"
    #: The token is for another room.
    AUTH_WRONG_ROOM = "auth_wrong_room"
    #: The room lives on another node of a cluster that this node cannot reach now (the
    #: backplane is down): try again later.
    UNAVAILABLE = "unavailable"
    #: Unexpected server failure.
    INTERNAL = "internal"


class CloseCode(enum.IntEnum):
    """WebSocket close codes the server uses."""

    #: Normal close (after ``bye``, or the client closed).
    NORMAL = 1000
    #: The server is shutting down, or (a node of a cluster) the node serving the room became
    #: unreachable or the room moved; clients reconnect and resume.
    GOING_AWAY = 1001
    #: Protocol violation that makes the connection unusable (e.g. a binary frame).
    PROTOCOL_ERROR = 1002
    #: A text frame that is not valid UTF-8 (RFC 6455 section 8.1; aiohttp closes with it).
    INVALID_DATA = 1007
    #: Policy violation, such as the rate limit exceeded.
    POLICY_VIOLATION = 1008
    #: A message exceeds the maximum size.
    MESSAGE_TOO_BIG = 1009
    #: Unexpected server failure.
    INTERNAL_ERROR = 1011
    #: No ``join``/``resume`` within the handshake timeout.
    HANDSHAKE_TIMEOUT = 4000
    #: Nothing received within the dead-peer timeout (no ``pong`` to ``ping``).
    HEARTBEAT_TIMEOUT = 4001
    #: The session was resumed on another connection.
    SESSION_REPLACED = 4002
    #: Unsupported protocol version in ``hello``.
    UNSUPPORTED_VERSION = 4003
    #: The client does not read or acknowledge fast enough, so what the server holds for it
    #: passed a limit. The session waits for ``resume``; reconnect and resume.
    SLOW_CONSUMER = 4004


# --- field kinds ---------------------------------------------------------------------------

_KIND = "rtckit.kind"
_WIRE = "rtckit.wire"


def _m(kind: str, optional: bool = False, wire: str | None = None) -> dict[str, Any]:
    """Field metadata for the codec: JSON kind, optional or not, wire name if not the same."""
    return {_KIND: (kind, optional), _WIRE: wire}


@attrs.frozen(kw_only=True)
class PeerInfo:
    """A room member as others see it (in :class:`Welcome` and :class:`PeerJoined`)."""

    #: Server-assigned peer id, unique in the room.
    id: str = attrs.field(metadata=_m("id"))
    #: The identity from the room token (``sub``), if any.
    identity: str | None = attrs.field(default=None, metadata=_m("id", True))
    #: Public JSON object the peer gave in :class:`Join`.
    metadata: dict[str, JsonValue] | None = attrs.field(default=None, metadata=_m("obj", True))
    #: Permissions granted by the token (e.g. ``publish``, ``subscribe``, ``admin``).
    permissions: tuple[str, ...] = attrs.field(default=(), metadata=_m("strs", True))


class Message:
    """Base of all message classes; ``type`` is the wire ``type`` string."""

    type: ClassVar[str]
    __slots__ = ()


@attrs.frozen(kw_only=True)
class Hello(Message):
    """First message on a connection, both ways: the client's, then the server's answer."""

    type: ClassVar[str] = "hello"
    version: int = attrs.field(default=PROTOCOL_VERSION, metadata=_m("int"))
    #: Free text naming the implementation (``rtckit-py/0.1``, ``rtckit-js/0.1``...).
    agent: str | None = attrs.field(default=None, metadata=_m("str", True))


@attrs.frozen(kw_only=True)
class Join(Message):
    """Client asks to join *room*; the server answers :class:`Welcome` or :class:`Error`."""

    type: ClassVar[str] = "join"
    room: str = attrs.field(metadata=_m("id"))
    #: Room token (JWT); optional on servers in open mode.
    token: str | None = attrs.field(default=None, metadata=_m("token", True))
    #: Public JSON object shown to other peers.
    metadata: dict[str, JsonValue] | None = attrs.field(default=None, metadata=_m("obj", True))
    #: Requested peer id; only in-process (trusted) connections or ``admin`` tokens may ask.
    peer_id: str | None = attrs.field(default=None, metadata=_m("id", True))


@attrs.frozen(kw_only=True)
class Welcome(Message):
    """Server's answer to :class:`Join`: who you are and who is there."""

    type: ClassVar[str] = "welcome"
    room: str = attrs.field(metadata=_m("id"))
    peer_id: str = attrs.field(metadata=_m("id"))
    identity: str | None = attrs.field(default=None, metadata=_m("id", True))
    #: The other members, in join order.
    peers: tuple[PeerInfo, ...] = attrs.field(metadata=_m("peers"))
    #: The room's topology, ``"mesh"``, ``"sfu"`` or ``"mcu"``.
    topology: str = attrs.field(metadata=_m("id"))
    #: ``RTCIceServer`` dictionaries (JSON list) for the client, if the server gives them.
    ice_servers: JsonValue = attrs.field(default=None, metadata=_m("json", True))
    permissions: tuple[str, ...] = attrs.field(metadata=_m("strs"))
    #: Secret to present in :class:`Resume` after a dropped connection.
    resume_token: str = attrs.field(metadata=_m("token"))
    #: Seconds the server keeps the session after its connection drops.
    resume_window: float = attrs.field(metadata=_m("num"))
    #: Seconds between the server's pings on an idle connection.
    heartbeat_interval: float = attrs.field(metadata=_m("num"))


@attrs.frozen(kw_only=True)
class Resume(Message):
    """Client resumes a session on a new connection (instead of :class:`Join`)."""

    type: ClassVar[str] = "resume"
    resume_token: str = attrs.field(metadata=_m("token"))
    #: Highest server ``seq`` the client has processed (0 if none).
    ack: int = attrs.field(metadata=_m("int"))


@attrs.frozen(kw_only=True)
class Resumed(Message):
    """Server's answer to :class:`Resume`; then it resends every message with ``seq > ack``."""

    type: ClassVar[str] = "resumed"
    room: str = attrs.field(metadata=_m("id"))
    peer_id: str = attrs.field(metadata=_m("id"))
    #: Highest client ``seq`` the server has processed; the client resends the later ones.
    ack: int = attrs.field(metadata=_m("int"))


@attrs.frozen(kw_only=True)
class PeerJoined(Message):
    """A peer joined the room."""

    type: ClassVar[str] = "peer-joined"
    peer: PeerInfo = attrs.field(metadata=_m("peer"))
    seq: int | None = attrs.field(default=None, metadata=_m("int", True))


@attrs.frozen(kw_only=True)
class PeerLeft(Message):
    """A peer left the room (``bye``, timeout after its resume window, or removed)."""

    type: ClassVar[str] = "peer-left"
    peer_id: str = attrs.field(metadata=_m("id"))
    #: ``"bye"``, ``"timeout"``, ``"closed"`` or ``"removed"``.
    reason: str | None = attrs.field(default=None, metadata=_m("str", True))
    seq: int | None = attrs.field(default=None, metadata=_m("int", True))


class Relayed(Message):
    """Base of messages the server relays from one peer to another.

    ``to`` is the target peer id (``None``: every other peer, only for :class:`AppMessage`);
    ``sender`` (``from`` on the wire) is stamped by the server, ``session`` lets two peers keep
    several peer connections apart (e.g. an SFU's publish and subscribe connections).
    """

    __slots__ = ()
    to: str | None
    sender: str | None
    seq: int | None


@attrs.frozen(kw_only=True)
class Offer(Relayed):
    """An SDP offer."""

    type: ClassVar[str] = "offer"
    to: str | None = attrs.field(metadata=_m("id"))
    sender: str | None = attrs.field(default=None, metadata=_m("id", True, "from"))
    sdp: str = attrs.field(metadata=_m("str"))
    session: str | None = attrs.field(default=None, metadata=_m("id", True))
    seq: int | None = attrs.field(default=None, metadata=_m("int", True))


@attrs.frozen(kw_only=True)
class Answer(Relayed):
    """An SDP answer."""

    type: ClassVar[str] = "answer"
    to: str | None = attrs.field(metadata=_m("id"))
    sender: str | None = attrs.field(default=None, metadata=_m("id", True, "from"))
    sdp: str = attrs.field(metadata=_m("str"))
    session: str | None = attrs.field(default=None, metadata=_m("id", True))
    seq: int | None = attrs.field(default=None, metadata=_m("int", True))


@attrs.frozen(kw_only=True)
class Candidate(Relayed):
    """A trickled ICE candidate (the ``candidate`` attribute line, without ``a=``)."""

    type: ClassVar[str] = "candidate"
    to: str | None = attrs.field(metadata=_m("id"))
    sender: str | None = attrs.field(default=None, metadata=_m("id", True, "from"))
    candidate: str = attrs.field(metadata=_m("str"))
    sdp_mid: str | None = attrs.field(default=None, metadata=_m("str", True))
    sdp_mline_index: int | None = attrs.field(default=None, metadata=_m("int", True))
    session: str | None = attrs.field(default=None, metadata=_m("id", True))
    seq: int | None = attrs.field(default=None, metadata=_m("int", True))


@attrs.frozen(kw_only=True)
class EndOfCandidates(Relayed):
    """The sender has no more candidates (for this ICE generation)."""

    type: ClassVar[str] = "end-of-candidates"
    to: str | None = attrs.field(metadata=_m("id"))
    sender: str | None = attrs.field(default=None, metadata=_m("id", True, "from"))
    session: str | None = attrs.field(default=None, metadata=_m("id", True))
    seq: int | None = attrs.field(default=None, metadata=_m("int", True))


@attrs.frozen(kw_only=True)
class Restart(Relayed):
    """Ask the target to restart ICE (send a new offer with fresh credentials)."""

    type: ClassVar[str] = "restart"
    to: str | None = attrs.field(metadata=_m("id"))
    sender: str | None = attrs.field(default=None, metadata=_m("id", True, "from"))
    session: str | None = attrs.field(default=None, metadata=_m("id", True))
    seq: int | None = attrs.field(default=None, metadata=_m("int", True))


@attrs.frozen(kw_only=True)
class AppMessage(Relayed):
    """Application data: any JSON *payload*, to one peer or (``to=None``) to all others."""

    type: ClassVar[str] = "app"
    to: str | None = attrs.field(default=None, metadata=_m("id", True))
    sender: str | None = attrs.field(default=None, metadata=_m("id", True, "from"))
    #: Any JSON value; ``null`` and a missing ``payload`` are the same.
    payload: JsonValue = attrs.field(default=None, metadata=_m("json", True))
    seq: int | None = attrs.field(default=None, metadata=_m("int", True))


@attrs.frozen(kw_only=True)
class Error(Message):
    """An error; ``ref`` is the ``seq`` of the client message it answers, if any."""

    type: ClassVar[str] = "error"
    code: str = attrs.field(metadata=_m("code"))
    message: str = attrs.field(metadata=_m("str"))
    ref: int | None = attrs.field(default=None, metadata=_m("int", True))
    seq: int | None = attrs.field(default=None, metadata=_m("int", True))


@attrs.frozen(kw_only=True)
class Bye(Message):
    """Client: leave the room and end the session. Server: you are being disconnected."""

    type: ClassVar[str] = "bye"
    reason: str | None = attrs.field(default=None, metadata=_m("str", True))


@attrs.frozen(kw_only=True)
class Ping(Message):
    """Liveness probe, both ways; answer with :class:`Pong` carrying the same *nonce*."""

    type: ClassVar[str] = "ping"
    nonce: int | None = attrs.field(default=None, metadata=_m("int", True))


@attrs.frozen(kw_only=True)
class Pong(Message):
    """Answer to :class:`Ping`."""

    type: ClassVar[str] = "pong"
    nonce: int | None = attrs.field(default=None, metadata=_m("int", True))


@attrs.frozen(kw_only=True)
class Ack(Message):
    """Cumulative acknowledgement: every message with ``seq <= ack`` was processed."""

    type: ClassVar[str] = "ack"
    ack: int = attrs.field(metadata=_m("int"))


_CLASSES: tuple[type[Message], ...] = (
    Hello,
    Join,
    Welcome,
    Resume,
    Resumed,
    PeerJoined,
    PeerLeft,
    Offer,
    Answer,
    Candidate,
    EndOfCandidates,
    Restart,
    AppMessage,
    Error,
    Bye,
    Ping,
    Pong,
    Ack,
)

#: Wire ``type`` string -> message class.
MESSAGE_TYPES: Mapping[str, type[Message]] = {cls.type: cls for cls in _CLASSES}
#: Message classes the server relays between peers.
RELAYED_TYPES: tuple[type[Relayed], ...] = (
    Offer,
    Answer,
    Candidate,
    EndOfCandidates,
    Restart,
    AppMessage,
)


# --- codec ---------------------------------------------------------------------------------


@attrs.frozen
class _Spec:
    name: str
    wire: str
    kind: str
    optional: bool


def _specs(cls: type[Any]) -> tuple[_Spec, ...]:
    specs = []
    for field in attrs.fields(cls):
        kind, optional = field.metadata[_KIND]
        specs.append(_Spec(field.name, field.metadata[_WIRE] or field.name, kind, optional))
    return tuple(specs)


_SPECS: dict[type[Any], tuple[_Spec, ...]] = {cls: _specs(cls) for cls in (*_CLASSES, PeerInfo)}
_WIRE_NAMES: dict[type[Any], frozenset[str]] = {
    cls: frozenset(spec.wire for spec in specs) | ({"type"} if cls is not PeerInfo else set())
    for cls, specs in _SPECS.items()
}


def _fail(code: ErrorCode, text: str) -> RemoteProtocolError:
    """The error of a received message that cannot be decoded."""
    return RemoteProtocolError(text, code=code)


def _unencodable(text: str, exc: BaseException) -> LocalProtocolError:
    """The error of a message (or value) rtckit was asked to encode that is not JSON."""
    return LocalProtocolError(f"{text}: {exc}", code=ErrorCode.BAD_MESSAGE)


def json_depth(value: JsonValue) -> int:
    """Return the nesting depth of a JSON value (scalars 0, ``[]`` 1, ``[[1]]`` 2...)."""
    depth = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict):
            level += 1
            stack.extend((child, level) for child in item.values())
        elif isinstance(item, list):
            level += 1
            stack.extend((child, level) for child in item)
        depth = max(depth, level)
    return depth


def _within_depth(value: Any, budget: int) -> bool:
    """Whether *value* nests at most *budget* levels (recursion bounded by *budget*)."""
    kind = type(value)
    if kind is dict:
        children: Any = value.values()
    elif kind is list:
        children = value
    else:
        return True
    if budget <= 0:
        return False
    budget -= 1
    for child in children:
        kind = type(child)
        if (kind is dict or kind is list) and not _within_depth(child, budget):
            return False
    return True


def _bad(
    where: str, wire: str, text: str, code: ErrorCode = ErrorCode.BAD_MESSAGE
) -> RemoteProtocolError:
    return _fail(code, f"{where}.{wire} {text}")


def _c_id(value: Any, where: str, wire: str, _depth: int) -> Any:
    if type(value) is not str or not 0 < len(value) <= MAX_ID_LENGTH:
        raise _bad(where, wire, f"must be a string of 1 to {MAX_ID_LENGTH} characters")
    return value


def _c_str(value: Any, where: str, wire: str, _depth: int) -> Any:
    if type(value) is not str:
        raise _bad(where, wire, "must be a string")
    return value


def _c_token(value: Any, where: str, wire: str, _depth: int) -> Any:
    if type(value) is not str or not 0 < len(value) <= 8 * MAX_ID_LENGTH:
        raise _bad(where, wire, f"must be a string of 1 to {8 * MAX_ID_LENGTH} characters")
    return value


def _c_code(value: Any, where: str, wire: str, _depth: int) -> Any:
    if type(value) is not str or not 0 < len(value) <= 64:
        raise _bad(where, wire, "must be a string of 1 to 64 characters")
    return value


def _c_int(value: Any, where: str, wire: str, _depth: int) -> Any:
    if type(value) is not int or not 0 <= value <= MAX_SEQ:
        raise _bad(where, wire, "must be an integer in [0, 2**53-1]")
    return value


def _c_num(value: Any, where: str, wire: str, _depth: int) -> Any:
    if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
        raise _bad(where, wire, "must be a finite number >= 0")
    return float(value)


def _c_json(value: Any, where: str, wire: str, max_depth: int) -> Any:
    if not _within_depth(value, max_depth):
        raise _bad(where, wire, f"nests deeper than {max_depth}", ErrorCode.TOO_DEEP)
    return value


def _c_obj(value: Any, where: str, wire: str, max_depth: int) -> Any:
    if type(value) is not dict:
        raise _bad(where, wire, "must be an object")
    return _c_json(value, where, wire, max_depth)


def _c_strs(value: Any, where: str, wire: str, depth: int) -> Any:
    if type(value) is not list:
        raise _bad(where, wire, "must be a list of strings")
    return tuple(_c_id(item, where, wire, depth) for item in value)


def _c_peer(value: Any, where: str, wire: str, max_depth: int) -> Any:
    return _build(PeerInfo, value, f"{where}.{wire}", max_depth)


def _c_peers(value: Any, where: str, wire: str, max_depth: int) -> Any:
    if type(value) is not list:
        raise _bad(where, wire, "must be a list of peers")
    return tuple(_build(PeerInfo, item, f"{where}.{wire}", max_depth) for item in value)


_CONVERTERS: dict[str, Callable[[Any, str, str, int], Any]] = {
    "id": _c_id,
    "str": _c_str,
    "token": _c_token,
    "code": _c_code,
    "int": _c_int,
    "num": _c_num,
    "json": _c_json,
    "obj": _c_obj,
    "strs": _c_strs,
    "peer": _c_peer,
    "peers": _c_peers,
}
_PLANS: dict[type[Any], tuple[tuple[str, str, bool, Callable[[Any, str, str, int], Any]], ...]] = {
    cls: tuple((spec.name, spec.wire, spec.optional, _CONVERTERS[spec.kind]) for spec in specs)
    for cls, specs in _SPECS.items()
}


def _build(cls: type[Any], obj: Any, where: str, max_depth: int) -> Any:
    if type(obj) is not dict:
        raise _fail(ErrorCode.BAD_MESSAGE, f"{where} must be a JSON object")
    if not obj.keys() <= _WIRE_NAMES[cls]:
        extra = sorted(obj.keys() - _WIRE_NAMES[cls])
        raise _fail(ErrorCode.BAD_MESSAGE, f"{where}: unknown field(s) {extra}")
    kwargs: dict[str, Any] = {}
    get = obj.get
    for name, wire, optional, convert in _PLANS[cls]:
        value = get(wire)
        if value is None:
            if optional:
                continue
            raise _fail(ErrorCode.BAD_MESSAGE, f"{where}: missing field {wire!r}")
        kwargs[name] = convert(value, where, wire, max_depth)
    return cls(**kwargs)


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    result = dict(pairs)
    if len(result) != len(pairs):
        raise _fail(ErrorCode.BAD_JSON, "an object repeats a key")
    return result


def _no_constant(name: str) -> Any:
    raise _fail(ErrorCode.BAD_JSON, f"{name} is not JSON")


_DECODER = json.JSONDecoder(object_pairs_hook=_pairs, parse_constant=_no_constant)
# The decoder's scanner (what JSONDecoder.decode calls after skipping whitespace), called
# directly for a message that starts with "{" and ends where the value does: the usual case.
# (JSONDecoder.__init__ sets scan_once; typeshed does not declare it.)
_SCAN: Callable[[str, int], tuple[Any, int]] = _DECODER.scan_once  # type: ignore[attr-defined]


def _parse(text: str) -> Any:
    """``_DECODER.decode(text)``, the same value and errors, with less overhead."""
    if text[:1] == "{":
        try:
            obj, end = _SCAN(text, 0)
        except StopIteration:  # pragma: no cover - "{" always starts a value
            pass
        else:
            if end == len(text):
                return obj
    return _DECODER.decode(text)  # whitespace around the value, or an error to report


# Levels a valid message may use above its free-form fields (message object, peers list, peer).
_STRUCTURAL_DEPTH = 4
_NESTING_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def _nests_deeper_than(text: str, limit: int, brackets: int) -> bool:
    """Whether *text*'s brackets (outside strings) nest deeper than *limit*.

    Checked before parsing, so that the verdict does not depend on the json module's
    recursion limits (they differ between Python versions). Free when the text holds
    *brackets* (its count of ``[`` and ``{``) or fewer, at most *limit*.
    """
    if brackets <= limit:
        return False
    depth = 0
    for token in _NESTING_TOKEN.finditer(text):
        char = token.group()
        if char in "[{":
            depth += 1
            if depth > limit:
                return True
        elif char in "]}":
            depth -= 1
    return False


def decode(
    data: str | bytes | bytearray | memoryview,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> Message:
    """Parse one message; raise :class:`~rtckit.errors.RemoteProtocolError` (with ``.code``) if
    invalid.

    *max_size* bounds the UTF-8 size in bytes, *max_depth* the nesting of free-form JSON fields.
    Never raises anything else, whatever *data* holds.
    """
    return decode_frame(data, max_size=max_size, max_depth=max_depth)[0]


def decode_frame(
    data: str | bytes | bytearray | memoryview,
    *,
    max_size: int = DEFAULT_MAX_SIZE,
    max_depth: int = DEFAULT_MAX_DEPTH,
) -> tuple[Message, bool]:
    """:func:`decode` *data*, and say whether the message holds plain JSON only.

    True when the typed decoder (msgspec, a dependency) produced the message: its
    values are then finite numbers, text without lone surrogates, lists and objects with
    string keys, which lets :func:`encode_relayed` write it faster (``plain=True``). The
    same message and the same errors as :func:`decode`.
    """
    if isinstance(data, str):
        if len(data) > max_size:
            raise _fail(ErrorCode.TOO_LARGE, f"message larger than {max_size} bytes")
        if data.isascii():
            size = len(data)
        else:
            try:
                size = len(data.encode("utf-8"))
            except UnicodeEncodeError:
                raise _fail(ErrorCode.BAD_ENCODING, "message holds a lone surrogate") from None
        if size > max_size:
            raise _fail(ErrorCode.TOO_LARGE, f"message larger than {max_size} bytes")
        text = data
    elif isinstance(data, bytes | bytearray | memoryview):
        raw = data if type(data) is bytes else bytes(data)
        if len(raw) > max_size:
            raise _fail(ErrorCode.TOO_LARGE, f"message larger than {max_size} bytes")
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise _fail(ErrorCode.BAD_ENCODING, "message is not valid UTF-8") from None
    else:
        raise _fail(ErrorCode.BAD_MESSAGE, f"cannot decode {type(data).__name__}")
    brackets = text.count("[") + text.count("{")
    if _nests_deeper_than(text, max_depth + _STRUCTURAL_DEPTH, brackets):
        raise _fail(ErrorCode.TOO_DEEP, "message nests too deeply")
    if _typed is not None:
        found = _typed(text, max_depth, brackets)
        if found is not None:
            return found, True
    return _decode_text(text, max_depth), False


def _decode_text(text: str, max_depth: int) -> Message:
    """Parse and check *text* (within the size and nesting limits) with the json module."""
    try:
        obj = _parse(text)
    except ProtocolError:
        raise
    except RecursionError:
        raise _fail(ErrorCode.TOO_DEEP, "message nests too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an integer with too many digits
        raise _fail(ErrorCode.BAD_JSON, f"not JSON: {exc}") from None
    if type(obj) is not dict:
        raise _fail(ErrorCode.BAD_MESSAGE, "a message must be a JSON object")
    kind = obj.get("type")
    if type(kind) is not str:
        raise _fail(ErrorCode.BAD_MESSAGE, "field 'type' must be a string")
    cls = MESSAGE_TYPES.get(kind)
    if cls is None:
        raise _fail(ErrorCode.UNKNOWN_TYPE, f"unknown message type {kind[:64]!r}")
    message: Message = _build(cls, obj, kind, max_depth)
    return message


def _make_typed() -> Callable[[str, int, int], Message | None] | None:
    """Return a decoder of the relayed messages and ``ack`` that checks while it parses.

    It uses msgspec (a dependency; ``None`` without it): one typed pass in C checks the
    JSON, the ``type``, the field names, types and ranges of the messages every client sends
    most. It answers ``None`` whenever it cannot vouch for the result, and :func:`decode`
    then does the full check with the json module, so every error (its code and text) is
    the json path's:

    * any message it does not know, any value msgspec refuses (including a few the json
      module takes, such as ``1e400``; the json path decides);
    * a key repeated in an object. msgspec keeps the last value silently, where the protocol
      requires ``bad_json``. Each key-value pair of a JSON text has one ``:`` outside its
      strings, so a text's colons are its pairs plus the colons inside its strings; msgspec
      writes the decoded message back with as many colons only if no pair was dropped (it
      escapes no ``:``). The same count sends an optional field given as ``null`` (written
      back without it) to the json path. An escape ``\\u003a`` is a colon the text does
      not show: a text holding ``\\u003`` takes the json path;
    * free-form JSON (``payload``) nested deeper than allowed: fewer brackets in the whole
      text than the limit vouch for it, else :func:`_within_depth` decides.
    """
    try:
        import msgspec
    except ImportError:  # pragma: no cover - a dependency; decode uses the json path alone
        return None
    kinds: dict[str, Any] = {
        "id": Annotated[str, msgspec.Meta(min_length=1, max_length=MAX_ID_LENGTH)],
        "str": str,
        "int": Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)],
        "json": Any,
    }
    # msgspec struct -> (message class, its free-form fields)
    plans: dict[type[Any], tuple[type[Message], tuple[str, ...]]] = {}
    classes: tuple[type[Message], ...] = (*RELAYED_TYPES, Ack)
    for cls in classes:
        fields = []
        for spec in _SPECS[cls]:
            kind = kinds[spec.kind]
            if spec.optional:
                field = msgspec.field(default=None, name=spec.wire)
                kind = kind | None
            else:
                field = msgspec.field(name=spec.wire)
            fields.append((spec.name, kind, field))
        struct = msgspec.defstruct(
            f"_Typed{cls.__name__}",
            fields,
            kw_only=True,
            omit_defaults=True,
            tag_field="type",
            tag=cls.type,
            forbid_unknown_fields=True,
        )
        free = [spec.name for spec in _SPECS[cls] if spec.kind == "json"]
        plans[struct] = (cls, tuple(free))
    parse = msgspec.json.Decoder(Union[tuple(plans)]).decode  # noqa: UP007 - a runtime union
    dump = msgspec.json.Encoder().encode
    as_kwargs = msgspec.structs.asdict
    error = msgspec.DecodeError

    def typed(text: str, max_depth: int, brackets: int) -> Message | None:
        if "\\u003" in text:
            return None
        try:
            struct = parse(text)
        except error:
            return None
        if dump(struct).count(b":") != text.count(":"):
            return None  # a repeated key, or an explicit null (omitted when written back)
        cls, free = plans[type(struct)]
        values = as_kwargs(struct)
        if brackets > max_depth:  # else no field can nest deeper than allowed
            for name in free:
                if not _within_depth(values[name], max_depth):
                    return None
        message: Message = cls(**values)
        return message

    return typed


_typed: Callable[[str, int, int], Message | None] | None = _make_typed()


def _dump(cls: type[Any], message: Any) -> dict[str, Any]:
    out: dict[str, Any] = {"type": cls.type} if cls is not PeerInfo else {}
    for spec in _SPECS[cls]:
        value = getattr(message, spec.name)
        if value is None:
            continue
        if spec.kind == "peer":
            value = _dump(PeerInfo, value)
        elif spec.kind == "peers":
            value = [_dump(PeerInfo, peer) for peer in value]
        elif spec.kind == "strs":
            if not value and spec.optional:
                continue
            value = list(value)
        out[spec.wire] = value
    return out


def as_dict(message: Message) -> dict[str, Any]:
    """Return the JSON object (a dict) that :func:`encode` serializes."""
    return _dump(type(message), message)


# ensure_ascii: non-ASCII text travels as \u escapes, so that a lone surrogate a peer put in a
# JSON string (valid JSON, not valid UTF-8) is relayed as it came instead of failing to encode.
_ENCODER = json.JSONEncoder(ensure_ascii=True, separators=(",", ":"), allow_nan=False)


def _make_dumps() -> Callable[[Any], str]:
    """Return a function serializing a dict as ``_ENCODER.encode`` does, with less overhead.

    ``JSONEncoder.encode`` builds a C encoder (``json.encoder.c_make_encoder``, with the same
    arguments since Python 2.7) on every call; this builds it once. Without circular-reference
    markers: a cyclic value exhausts the recursion limit instead (``RecursionError``, which
    :func:`encode` reports like the ``ValueError`` the markers would give). Falls back to
    ``_ENCODER.encode`` where the C accelerator is missing.
    """
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:  # pragma: no cover - CPython always has it
        return _ENCODER.encode
    iterencode = make(
        None,
        _ENCODER.default,
        json.encoder.encode_basestring_ascii,
        None,
        _ENCODER.key_separator,
        _ENCODER.item_separator,
        _ENCODER.sort_keys,
        _ENCODER.skipkeys,
        _ENCODER.allow_nan,
    )
    join = "".join

    def dumps(obj: Any) -> str:
        return join(iterencode(obj, 0))

    return dumps


_dumps: Callable[[Any], str] = _make_dumps()


def json_size(value: JsonValue) -> int:
    """Return the size in bytes of *value* as :func:`encode` writes it (compact, ASCII).

    Raises :class:`~rtckit.errors.LocalProtocolError` if *value* is not JSON (only a value built
    in-process can be: decoded JSON always encodes).
    """
    try:
        return len(_dumps(value))
    except (TypeError, ValueError, RecursionError) as exc:
        raise _unencodable(f"cannot encode {type(value).__name__}", exc) from exc


def encode(message: Message) -> str:
    """Serialize *message* to compact JSON text (one WebSocket text frame).

    Raises :class:`~rtckit.errors.LocalProtocolError` if a field holds something that is not
    JSON (a free-form field given a set, a NaN, a cycle...).
    """
    try:
        return _dumps(_dump(type(message), message))
    except (TypeError, ValueError, RecursionError) as exc:
        raise _unencodable(f"cannot encode {message.type}", exc) from exc


# For each relayed class: (attribute, wire name) of every field but ``seq``, in encoding order.
# Their field kinds need no conversion when dumped (checked by the tests).
_RELAY_PLANS: dict[type[Any], tuple[tuple[str, str], ...]] = {
    cls: tuple((spec.name, spec.wire) for spec in _SPECS[cls] if spec.name != "seq")
    for cls in RELAYED_TYPES
}


def _make_plain_dumps() -> Callable[[dict[str, Any]], str | None] | None:
    """Return a serializer of plain JSON without floats that uses msgspec.

    For the relayed messages without free-form fields (offer, answer, candidates, restart:
    strings and integers only, see :func:`decode_frame`). It answers ``None`` when its text
    could differ from the json module's (``_dumps``), which then writes it: msgspec writes
    non-ASCII text and DEL raw where the json module escapes them. Other than that, strings
    and integers come out the same (escapes, separators, key order). Floats do not: msgspec
    writes ``1e16`` and ``0.00001`` for ``1e+16`` and ``1e-05``, and finding them in a
    ``payload`` costs what msgspec saves, so ``app`` messages stay with the json module.
    """
    try:
        import msgspec
    except ImportError:  # pragma: no cover - a dependency; encode_relayed uses the json module
        return None
    encode = msgspec.json.Encoder().encode

    def plain_dumps(obj: dict[str, Any]) -> str | None:
        data = encode(obj)
        if not data.isascii() or b"\x7f" in data:
            return None
        return data.decode("ascii")

    return plain_dumps


_plain_dumps = _make_plain_dumps()
# The relayed classes with only strings and integers (no free-form field that may hold floats).
_PLAIN_TYPES = frozenset(
    cls for cls in RELAYED_TYPES if all(spec.kind in ("id", "str", "int") for spec in _SPECS[cls])
)


def encode_relayed(message: Relayed, sender: str, *, plain: bool = False) -> str:
    """Serialize a relayed *message* as the server forwards it: ``from`` is *sender*, no ``seq``.

    The same text as ``encode(attrs.evolve(message, sender=sender, seq=None))``, without the
    copy; :func:`with_seq` then numbers it for each recipient. This is the server's path for
    every relayed message: one serialization, whatever the number of recipients. *plain*:
    the message came from :func:`decode_frame` with plain JSON (its second value), and may
    be written faster (the same text).
    """
    cls = type(message)
    out: dict[str, Any] = {"type": cls.type}
    for name, wire in _RELAY_PLANS[cls]:
        value = sender if name == "sender" else getattr(message, name)
        if value is not None:
            out[wire] = value
    if plain and cls in _PLAIN_TYPES and _plain_dumps is not None:
        text = _plain_dumps(out)
        if text is not None:
            return text
    try:
        return _dumps(out)
    except (TypeError, ValueError, RecursionError) as exc:
        raise _unencodable(f"cannot encode {cls.type}", exc) from exc


def with_seq(text: str, seq: int) -> str:
    """Return *text* (the encoding of a message without ``seq``) with ``seq`` added.

    ``seq`` is the last field of every message class that has one, so the result is the same
    text as encoding the message with that ``seq``: the server serializes a message once and
    numbers it per recipient with a string operation.
    """
    return f'{text[:-1]},"seq":{seq}}}'
