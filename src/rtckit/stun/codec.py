"""STUN messages (RFC 8489): a pure codec and a pure Binding responder.

No I/O here: bytes in, bytes out. :mod:`rtckit.stun.server` wires :func:`handle_request` to
UDP and TCP sockets; :mod:`rtckit.coturn` uses :func:`binding_request` to see whether coturn
answers.

A STUN message is a 20-byte header (two zero bits, the 14-bit message type, the body length,
the magic cookie ``0x2112A442`` and a 96-bit transaction id) followed by attributes, each a
type, a length and a value padded to a multiple of four bytes:

.. code-block:: text

     0                   1                   2                   3
     0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |0 0|     STUN Message Type     |         Message Length        |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                         Magic Cookie                          |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
    |                     Transaction ID (96 bits)                  |
    +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+

:func:`parse_message` accepts only what RFC 8489 allows (so RFC 3489 messages without the magic
cookie are refused) and checks FINGERPRINT when present. Attribute values stay raw bytes in
:class:`Attribute`; the ``encode_*``/``decode_*`` functions convert the common ones.
"""

from __future__ import annotations

import binascii
import enum
import hashlib
import hmac
import ipaddress
import secrets
import socket
import struct
from collections.abc import Iterable, Sequence
from typing import Any

import attrs

from rtckit.errors import ConfigurationError, StunFormatError

__all__ = [
    "DEFAULT_SOFTWARE",
    "FINGERPRINT_XOR",
    "HEADER_LENGTH",
    "MAGIC_COOKIE",
    "Attribute",
    "AttributeType",
    "MessageClass",
    "Method",
    "RateLimit",
    "SourceRateLimiter",
    "StunMessage",
    "StunStats",
    "TransportAddress",
    "binding_request",
    "decode_address",
    "decode_error_code",
    "decode_text",
    "decode_unknown_attributes",
    "decode_xor_address",
    "encode_address",
    "encode_error_code",
    "encode_text",
    "encode_unknown_attributes",
    "encode_xor_address",
    "format_transport_address",
    "handle_request",
    "is_stun_header",
    "message_length",
    "message_type",
    "new_transaction_id",
    "parse_message",
    "serialize_message",
    "source_key",
    "verify_message_integrity",
]

MAGIC_COOKIE = 0x2112A442
"""The fixed value of bytes 4 to 7 of every RFC 5389/8489 message."""

HEADER_LENGTH = 20
"""Bytes in a STUN header."""

FINGERPRINT_XOR = 0x5354554E
"""FINGERPRINT is the CRC-32 of the message XOR this value (ASCII ``STUN``)."""

DEFAULT_SOFTWARE = "rtckit"
"""A SOFTWARE value for rtckit's STUN server. It is not sent unless asked for
(:attr:`rtckit.stun.server.StunServerConfig.software`): it makes every response 12 bytes
longer and tells the world which software answers."""

TransportAddress = tuple[str, int]
"""An ``(ip, port)`` pair; IPv6 addresses without brackets or zone."""

_FAMILY_IPV4 = 0x01
_FAMILY_IPV6 = 0x02
_INTEGRITY_LENGTH = 20
_FINGERPRINT_LENGTH = 4
_MAX_TEXT_CHARS = 128
_MAX_BODY_LENGTH = 0xFFFF - 3  # the largest multiple of 4 a 16-bit length field holds


class MessageClass(enum.IntEnum):
    """The two class bits of a message type."""

    REQUEST = 0b00
    INDICATION = 0b01
    SUCCESS_RESPONSE = 0b10
    ERROR_RESPONSE = 0b11


class Method(enum.IntEnum):
    """STUN methods rtckit knows by name (RFC 8489, RFC 8656). Others stay plain ``int``."""

    BINDING = 0x001
    ALLOCATE = 0x003
    REFRESH = 0x004
    SEND = 0x006
    DATA = 0x007
    CREATE_PERMISSION = 0x008
    CHANNEL_BIND = 0x009


class AttributeType(enum.IntEnum):
    """Attribute types rtckit knows by name. Types below ``0x8000`` are comprehension-required."""

    MAPPED_ADDRESS = 0x0001
    CHANGE_REQUEST = 0x0003
    USERNAME = 0x0006
    MESSAGE_INTEGRITY = 0x0008
    ERROR_CODE = 0x0009
    UNKNOWN_ATTRIBUTES = 0x000A
    REALM = 0x0014
    NONCE = 0x0015
    MESSAGE_INTEGRITY_SHA256 = 0x001C
    PASSWORD_ALGORITHM = 0x001D
    USERHASH = 0x001E
    XOR_MAPPED_ADDRESS = 0x0020
    PRIORITY = 0x0024
    USE_CANDIDATE = 0x0025
    PASSWORD_ALGORITHMS = 0x8002
    ALTERNATE_DOMAIN = 0x8003
    SOFTWARE = 0x8022
    ALTERNATE_SERVER = 0x8023
    FINGERPRINT = 0x8028
    ICE_CONTROLLED = 0x8029
    ICE_CONTROLLING = 0x802A
    RESPONSE_ORIGIN = 0x802B
    OTHER_ADDRESS = 0x802C


# Comprehension-required attributes a Binding request may carry without a 420 from
# handle_request: RFC 8489's own and the ICE ones (RFC 8445), which a client may send to a
# STUN server too. CHANGE-REQUEST (RFC 5780) is deliberately absent: a server that does not
# implement NAT behaviour discovery answers it with 420, which is how clients detect that.
_BINDING_UNDERSTOOD = frozenset(
    {
        AttributeType.MAPPED_ADDRESS,
        AttributeType.USERNAME,
        AttributeType.MESSAGE_INTEGRITY,
        AttributeType.ERROR_CODE,
        AttributeType.UNKNOWN_ATTRIBUTES,
        AttributeType.REALM,
        AttributeType.NONCE,
        AttributeType.MESSAGE_INTEGRITY_SHA256,
        AttributeType.PASSWORD_ALGORITHM,
        AttributeType.USERHASH,
        AttributeType.XOR_MAPPED_ADDRESS,
        AttributeType.PRIORITY,
        AttributeType.USE_CANDIDATE,
    }
)

_REASONS = {400: "Bad Request", 420: "Unknown Attribute"}


def _check_transaction_id(_instance: object, _attribute: object, value: bytes) -> None:
    if len(value) != 12:
        raise ConfigurationError("a STUN transaction id is exactly 12 bytes")


def _check_method(_instance: object, _attribute: object, value: int) -> None:
    if not 0 <= value <= 0xFFF:
        raise ConfigurationError(f"a STUN method is a 12-bit number, not {value!r}")


def _check_attribute_type(_instance: object, _attribute: object, value: int) -> None:
    if not 0 <= value <= 0xFFFF:
        raise ConfigurationError(f"a STUN attribute type is a 16-bit number, not {value!r}")


def _check_attribute_value(_instance: object, _attribute: object, value: bytes) -> None:
    if len(value) > 0xFFFF:
        raise ConfigurationError("a STUN attribute value is at most 65535 bytes")


@attrs.frozen
class Attribute:
    """One attribute: its type and its raw value (without padding)."""

    type: int = attrs.field(validator=_check_attribute_type)
    value: bytes = attrs.field(validator=_check_attribute_value)

    @property
    def comprehension_required(self) -> bool:
        """Whether an agent that does not know this type must refuse the message."""
        return self.type < 0x8000


def _to_attributes(value: Iterable[Attribute]) -> tuple[Attribute, ...]:
    return tuple(value)


@attrs.frozen(kw_only=True)
class StunMessage:
    """A STUN message: method, class, transaction id and attributes in wire order."""

    method: int = attrs.field(validator=_check_method)
    message_class: MessageClass = attrs.field(converter=MessageClass)
    transaction_id: bytes = attrs.field(validator=_check_transaction_id)
    attributes: tuple[Attribute, ...] = attrs.field(default=(), converter=_to_attributes)

    def get(self, attribute_type: int) -> bytes | None:
        """Return the value of the first attribute of *attribute_type*, or ``None``."""
        for attribute in self.attributes:
            if attribute.type == attribute_type:
                return attribute.value
        return None

    def authenticated_attributes(self) -> tuple[Attribute, ...]:
        """The attributes an agent may act on: none after MESSAGE-INTEGRITY(-SHA256).

        RFC 8489 section 14.5: attributes after MESSAGE-INTEGRITY are ignored, except
        MESSAGE-INTEGRITY-SHA256 and FINGERPRINT.
        """
        kept: list[Attribute] = []
        integrity_seen = False
        for attribute in self.attributes:
            if integrity_seen and attribute.type not in (
                AttributeType.MESSAGE_INTEGRITY_SHA256,
                AttributeType.FINGERPRINT,
            ):
                continue
            kept.append(attribute)
            if attribute.type in (
                AttributeType.MESSAGE_INTEGRITY,
                AttributeType.MESSAGE_INTEGRITY_SHA256,
            ):
                integrity_seen = True
        return tuple(kept)

    def mapped_address(self) -> TransportAddress | None:
        """The reflexive address: XOR-MAPPED-ADDRESS, else MAPPED-ADDRESS, else ``None``.

        Raises :class:`~rtckit.errors.StunFormatError` if the attribute is malformed.
        """
        xor_value = self.get(AttributeType.XOR_MAPPED_ADDRESS)
        if xor_value is not None:
            return decode_xor_address(xor_value, self.transaction_id)
        value = self.get(AttributeType.MAPPED_ADDRESS)
        if value is not None:
            return decode_address(value)
        return None

    def error_code(self) -> tuple[int, str] | None:
        """The ``(code, reason)`` of ERROR-CODE, or ``None`` if absent."""
        value = self.get(AttributeType.ERROR_CODE)
        return None if value is None else decode_error_code(value)

    def software(self) -> str | None:
        """The text of SOFTWARE, or ``None`` if absent."""
        value = self.get(AttributeType.SOFTWARE)
        return None if value is None else decode_text(value)


@attrs.define
class StunStats:
    """Counters kept by :func:`handle_request` (and the servers built on it).

    Every datagram or framed message handed to :func:`handle_request` adds one to
    :attr:`received` and to exactly one of :attr:`malformed`, :attr:`ignored`,
    :attr:`indications`, :attr:`rate_limited`, :attr:`success_responses` or
    :attr:`error_responses`.
    """

    received: int = 0
    """Messages handed in."""
    requests: int = 0
    """Well-formed requests (of any method)."""
    success_responses: int = 0
    """Binding success responses produced."""
    error_responses: int = 0
    """Error responses produced (400, 420)."""
    indications: int = 0
    """Binding indications (keep-alives), which get no answer."""
    malformed: int = 0
    """Dropped as not a well-formed RFC 8489 message (header, length, attribute, FINGERPRINT)."""
    ignored: int = 0
    """Dropped although well formed (responses, and indications other than Binding)."""
    rate_limited: int = 0
    """Requests left unanswered because their source was over its rate limit."""
    tcp_refused: int = 0
    """TCP connections closed at once, over the total or the per-source limit."""
    tcp_timeouts: int = 0
    """TCP connections closed because a message did not arrive whole in time."""
    internal_errors: int = 0
    """Bugs caught by a server layer instead of crashing it (should stay 0)."""

    @property
    def responses(self) -> int:
        """Every response produced, success or error."""
        return self.success_responses + self.error_responses

    def as_dict(self) -> dict[str, int]:
        """The counters as a plain dictionary (for logs, metrics and the CLI)."""
        counters = attrs.asdict(self)
        counters["responses"] = self.responses
        return counters


def _padding(length: int) -> int:
    return -length % 4


def message_type(method: int, message_class: MessageClass) -> int:
    """Interleave a 12-bit method and the 2 class bits into the 14-bit message type."""
    return (
        (method & 0x00F)
        | ((method & 0x070) << 1)
        | ((method & 0xF80) << 2)
        | ((message_class & 0b01) << 4)
        | ((message_class & 0b10) << 7)
    )


def _split_type(value: int) -> tuple[int, MessageClass]:
    method = (value & 0x000F) | ((value & 0x00E0) >> 1) | ((value & 0x3E00) >> 2)
    message_class = MessageClass(((value >> 4) & 0b01) | ((value >> 7) & 0b10))
    return method, message_class


def _with_length(data: bytes, length: int) -> bytes:
    return data[:2] + struct.pack("!H", length) + data[4:]


def _fingerprint(data: bytes) -> bytes:
    """FINGERPRINT value of *data*, the message up to (not including) the attribute."""
    covered = _with_length(data, len(data) - HEADER_LENGTH + 4 + _FINGERPRINT_LENGTH)
    return struct.pack("!I", binascii.crc32(covered) ^ FINGERPRINT_XOR)


def _integrity(data: bytes, key: bytes) -> bytes:
    """MESSAGE-INTEGRITY value of *data*, the message up to (not including) the attribute."""
    covered = _with_length(data, len(data) - HEADER_LENGTH + 4 + _INTEGRITY_LENGTH)
    return hmac.new(key, covered, hashlib.sha1).digest()


def is_stun_header(header: bytes) -> bool:
    """Whether the first 20 bytes of *header* can start an RFC 8489 message.

    Checks the two zero bits, the magic cookie and a body length that is a multiple of 4:
    enough to frame STUN over TCP and to tell STUN from other traffic on a shared port.
    """
    if len(header) < HEADER_LENGTH:
        return False
    first: int
    length: int
    cookie: int
    first, length, cookie = struct.unpack_from("!HHI", header)
    return first & 0xC000 == 0 and cookie == MAGIC_COOKIE and length % 4 == 0


def message_length(header: bytes) -> int:
    """Total length (header included) of the message that *header* starts."""
    if len(header) < HEADER_LENGTH:
        raise StunFormatError("shorter than the 20-byte STUN header")
    body: int = struct.unpack_from("!H", header, 2)[0]
    return HEADER_LENGTH + body


def _walk(data: bytes) -> list[tuple[int, int, bytes]]:
    """Check the framing of *data*; return ``(offset, type, value)`` of each attribute."""
    if len(data) < HEADER_LENGTH:
        raise StunFormatError(f"{len(data)} bytes is shorter than the 20-byte STUN header")
    first, length, cookie = struct.unpack_from("!HHI", data)
    if first & 0xC000:
        raise StunFormatError("the two most significant bits of a STUN message must be zero")
    if cookie != MAGIC_COOKIE:
        raise StunFormatError(f"magic cookie is {cookie:#010x}, not {MAGIC_COOKIE:#010x}")
    if length % 4:
        raise StunFormatError(f"message length {length} is not a multiple of 4")
    if HEADER_LENGTH + length != len(data):
        raise StunFormatError(
            f"header says {length} body bytes, the message has {len(data) - HEADER_LENGTH}"
        )
    found: list[tuple[int, int, bytes]] = []
    pos = HEADER_LENGTH
    while pos < len(data):
        if found and found[-1][1] == AttributeType.FINGERPRINT:
            raise StunFormatError("an attribute follows FINGERPRINT, which must be last")
        attribute_type, attribute_length = struct.unpack_from("!HH", data, pos)
        end = pos + 4 + attribute_length
        if end + _padding(attribute_length) > len(data):
            raise StunFormatError(
                f"attribute {attribute_type:#06x} of {attribute_length} bytes at offset {pos}"
                " overruns the message"
            )
        found.append((pos, attribute_type, data[pos + 4 : end]))
        pos = end + _padding(attribute_length)
    return found


def parse_message(data: bytes) -> StunMessage:
    """Parse one STUN message; check its framing and its FINGERPRINT if it has one.

    MESSAGE-INTEGRITY is checked separately by :func:`verify_message_integrity` (the key
    depends on the usage). Raises :class:`~rtckit.errors.StunFormatError` on malformed input.
    """
    found = _walk(data)
    for offset, attribute_type, value in found:
        if attribute_type == AttributeType.FINGERPRINT:
            if len(value) != _FINGERPRINT_LENGTH:
                raise StunFormatError(f"FINGERPRINT has {len(value)} bytes, not 4")
            if not hmac.compare_digest(value, _fingerprint(data[:offset])):
                raise StunFormatError("FINGERPRINT does not match the message")
    first: int = struct.unpack_from("!H", data)[0]
    method, message_class = _split_type(first)
    return StunMessage(
        method=method,
        message_class=message_class,
        transaction_id=data[8:20],
        attributes=tuple(Attribute(kind, value) for _, kind, value in found),
    )


def verify_message_integrity(data: bytes, key: bytes) -> bool:
    """Whether the first MESSAGE-INTEGRITY of raw message *data* is right for *key*.

    *key* is the short-term password, or the long-term key (MD5 of
    ``username:realm:password``). A message without MESSAGE-INTEGRITY fails.
    Raises :class:`~rtckit.errors.StunFormatError` if *data* is not a STUN message.
    """
    for offset, attribute_type, value in _walk(data):
        if attribute_type == AttributeType.MESSAGE_INTEGRITY:
            if len(value) != _INTEGRITY_LENGTH:
                return False
            return hmac.compare_digest(value, _integrity(data[:offset], key))
    return False


def _append(buffer: bytearray, attribute_type: int, value: bytes, padding: bytes) -> None:
    buffer += struct.pack("!HH", attribute_type, len(value)) + value
    buffer += padding * _padding(len(value))


def serialize_message(
    message: StunMessage,
    *,
    integrity_key: bytes | None = None,
    fingerprint: bool = False,
    padding: bytes = b"\x00",
) -> bytes:
    """Serialize *message*; append MESSAGE-INTEGRITY (if *integrity_key*) and FINGERPRINT.

    *padding* is the byte that fills attribute values to a multiple of four; RFC 8489 lets
    it be anything (RFC 5769's test vectors use spaces), receivers ignore it.
    """
    if len(padding) != 1:
        raise ConfigurationError("padding is a single byte")
    if any(
        attribute.type in (AttributeType.MESSAGE_INTEGRITY, AttributeType.FINGERPRINT)
        for attribute in message.attributes
    ) and (integrity_key is not None or fingerprint):
        raise ConfigurationError(
            "the message already has MESSAGE-INTEGRITY or FINGERPRINT; do not add them twice"
        )
    body = bytearray()
    for attribute in message.attributes:
        _append(body, attribute.type, attribute.value, padding)
    header = struct.pack(
        "!HHI12s",
        message_type(message.method, message.message_class),
        len(body),
        MAGIC_COOKIE,
        message.transaction_id,
    )
    data = header + bytes(body)
    if integrity_key is not None:
        mac = _integrity(data, integrity_key)
        data = _with_length(data, len(data) - HEADER_LENGTH + 4 + _INTEGRITY_LENGTH)
        data += struct.pack("!HH", AttributeType.MESSAGE_INTEGRITY, _INTEGRITY_LENGTH) + mac
    if fingerprint:
        crc = _fingerprint(data)
        data = _with_length(data, len(data) - HEADER_LENGTH + 4 + _FINGERPRINT_LENGTH)
        data += struct.pack("!HH", AttributeType.FINGERPRINT, _FINGERPRINT_LENGTH) + crc
    if len(data) - HEADER_LENGTH > _MAX_BODY_LENGTH:
        raise ConfigurationError("the message is longer than a STUN length field can say")
    return data


def new_transaction_id() -> bytes:
    """A fresh random 96-bit transaction id (RFC 8489 requires it to be unpredictable)."""
    return secrets.token_bytes(12)


def binding_request(
    transaction_id: bytes | None = None,
    *,
    software: str | None = None,
    fingerprint: bool = True,
) -> bytes:
    """A serialized Binding request, as a client sends to a STUN server."""
    attributes: list[Attribute] = []
    if software is not None:
        attributes.append(Attribute(AttributeType.SOFTWARE, encode_text(software)))
    message = StunMessage(
        method=Method.BINDING,
        message_class=MessageClass.REQUEST,
        transaction_id=transaction_id if transaction_id is not None else new_transaction_id(),
        attributes=tuple(attributes),
    )
    return serialize_message(message, fingerprint=fingerprint)


# --- attribute values ------------------------------------------------------------------------


_IPV4_MAPPED_PREFIX = bytes(10) + b"\xff\xff"


def _packed_ip(host: str) -> bytes:
    """The 4 or 16 bytes of IP literal *host*; IPv6 zones dropped, IPv4-mapped as IPv4."""
    text = host.partition("%")[0]
    try:
        return socket.inet_pton(socket.AF_INET, text)
    except OSError:
        pass
    try:
        packed = socket.inet_pton(socket.AF_INET6, text)
    except OSError:
        raise ConfigurationError(f"{host!r} is not an IP address") from None
    return packed[12:] if packed[:12] == _IPV4_MAPPED_PREFIX else packed


def _check_port(port: int) -> None:
    if not 0 <= port <= 0xFFFF:
        raise ConfigurationError(f"{port!r} is not a port number")


def encode_address(host: str, port: int) -> bytes:
    """MAPPED-ADDRESS value (also ALTERNATE-SERVER, RESPONSE-ORIGIN, OTHER-ADDRESS).

    An IPv4-mapped IPv6 address (``::ffff:a.b.c.d``) is encoded as the IPv4 address.
    """
    packed = _packed_ip(host)
    _check_port(port)
    family = _FAMILY_IPV4 if len(packed) == 4 else _FAMILY_IPV6
    return struct.pack("!BBH", 0, family, port) + packed


def decode_address(value: bytes) -> TransportAddress:
    """Decode a MAPPED-ADDRESS value to ``(ip, port)``."""
    if len(value) < 4:
        raise StunFormatError(f"an address attribute of {len(value)} bytes is too short")
    _, family, port = struct.unpack_from("!BBH", value)
    raw = value[4:]
    if family == _FAMILY_IPV4 and len(raw) == 4:
        return str(ipaddress.IPv4Address(raw)), port
    if family == _FAMILY_IPV6 and len(raw) == 16:
        return str(ipaddress.IPv6Address(raw)), port
    raise StunFormatError(f"address family {family:#04x} with {len(raw)} address bytes")


def _xor_pad(transaction_id: bytes) -> bytes:
    return struct.pack("!I", MAGIC_COOKIE) + transaction_id


def _xor(value: bytes, pad: bytes) -> bytes:
    mask = int.from_bytes(pad[: len(value)], "big")
    return (int.from_bytes(value, "big") ^ mask).to_bytes(len(value), "big")


def encode_xor_address(host: str, port: int, transaction_id: bytes) -> bytes:
    """XOR-MAPPED-ADDRESS value: port XOR the cookie's high half, address XOR cookie+id."""
    plain = encode_address(host, port)
    pad = _xor_pad(transaction_id)
    return plain[:2] + _xor(plain[2:4], pad[:2]) + _xor(plain[4:], pad)


def decode_xor_address(value: bytes, transaction_id: bytes) -> TransportAddress:
    """Decode an XOR-MAPPED-ADDRESS (or XOR-PEER/RELAYED-ADDRESS) value to ``(ip, port)``."""
    if len(value) < 4:
        raise StunFormatError(f"an address attribute of {len(value)} bytes is too short")
    pad = _xor_pad(transaction_id)
    return decode_address(value[:2] + _xor(value[2:4], pad[:2]) + _xor(value[4:], pad))


def encode_text(text: str, *, max_chars: int = _MAX_TEXT_CHARS) -> bytes:
    """UTF-8 value of a text attribute (SOFTWARE, REALM, reason phrases): < 128 characters."""
    if len(text) >= max_chars:
        raise ConfigurationError(f"STUN text attributes are shorter than {max_chars} characters")
    return text.encode("utf-8")


def decode_text(value: bytes) -> str:
    """Decode a UTF-8 text attribute."""
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise StunFormatError(f"text attribute is not UTF-8: {exc}") from None


def encode_error_code(code: int, reason: str | None = None) -> bytes:
    """ERROR-CODE value: class (hundreds) and number, then a UTF-8 reason phrase."""
    if not 300 <= code <= 699:
        raise ConfigurationError(f"STUN error codes are 300 to 699, not {code}")
    phrase = reason if reason is not None else _REASONS.get(code, "")
    return struct.pack("!HBB", 0, code // 100, code % 100) + encode_text(phrase)


def decode_error_code(value: bytes) -> tuple[int, str]:
    """Decode an ERROR-CODE value to ``(code, reason)``."""
    if len(value) < 4:
        raise StunFormatError(f"ERROR-CODE of {len(value)} bytes is too short")
    _, error_class, number = struct.unpack_from("!HBB", value)
    error_class &= 0x07
    if not 3 <= error_class <= 6 or number > 99:
        raise StunFormatError(f"ERROR-CODE class {error_class} number {number} is out of range")
    return error_class * 100 + number, decode_text(value[4:])


def encode_unknown_attributes(types: Iterable[int]) -> bytes:
    """UNKNOWN-ATTRIBUTES value: the 16-bit types, in order."""
    return b"".join(struct.pack("!H", kind) for kind in types)


def decode_unknown_attributes(value: bytes) -> tuple[int, ...]:
    """Decode an UNKNOWN-ATTRIBUTES value."""
    if len(value) % 2:
        raise StunFormatError("UNKNOWN-ATTRIBUTES has an odd number of bytes")
    return tuple(kind for (kind,) in struct.iter_unpack("!H", value))


# --- the Binding responder -------------------------------------------------------------------


def format_transport_address(host: str, port: int) -> str:
    """``host:port`` for IPv4 (``127.0.0.1:3478``), ``[host]:port`` for IPv6 (``[::1]:3478``)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def source_key(host: str) -> str:
    """The source a limit counts *host* under: an IPv4 address, or an IPv6 /64 prefix.

    One IPv6 host usually holds a whole /64, so counting its addresses one by one would give
    it 2**64 allowances. An IPv4-mapped IPv6 address counts as its IPv4 address; text that is
    not an IP address counts as itself.
    """
    try:
        address = ipaddress.ip_address(host.partition("%")[0])
    except ValueError:
        return host
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def _check_rate(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ConfigurationError(f"{attribute.name} must be positive, not {value!r}")


@attrs.frozen(kw_only=True)
class RateLimit:
    """A token bucket per source (:func:`source_key`): how many responses a source may get.

    A STUN response goes to the source address of its request, which over UDP nobody
    checked: a flood of requests with a forged source turns the server into a reflector
    aimed at that address. The limit bounds what any one address can be sent.
    """

    rate: float = attrs.field(default=50.0, validator=_check_rate)
    """Responses per second a source earns (an ICE agent sends a few per gathering)."""
    burst: float = attrs.field(default=100.0, validator=_check_rate)
    """Responses a source may get at once (the bucket's size; at least 1)."""
    max_sources: int = attrs.field(default=10_000, validator=_check_rate)
    """Sources tracked at once; beyond, the least recently seen is forgotten (bounded
    memory under a flood of forged sources)."""

    def __attrs_post_init__(self) -> None:
        if self.burst < 1:
            raise ConfigurationError(f"burst must be at least 1, not {self.burst!r}")


class SourceRateLimiter:
    """Token buckets per source, with time as an input (no clock, no I/O).

    ``allow(host, now)`` takes one token from the bucket of *host*'s source and says whether
    there was one. *now* is any monotonic clock in seconds (``loop.time()``).
    """

    def __init__(self, limit: RateLimit | None = None) -> None:
        self.limit = limit if limit is not None else RateLimit()
        # source -> (tokens, time of the last update); insertion order = least recent first
        self._buckets: dict[str, tuple[float, float]] = {}

    def __len__(self) -> int:
        """Sources tracked now."""
        return len(self._buckets)

    def allow(self, host: str, now: float) -> bool:
        """Whether *host* may get one more response at *now* (and count it if so)."""
        limit = self.limit
        key = source_key(host)
        tokens, then = self._buckets.pop(key, (limit.burst, now))
        tokens = min(limit.burst, tokens + max(0.0, now - then) * limit.rate)
        allowed = tokens >= 1.0
        if allowed:
            tokens -= 1.0
        while len(self._buckets) >= limit.max_sources:
            del self._buckets[next(iter(self._buckets))]
        self._buckets[key] = (tokens, now)
        return allowed


def _respond(
    request: StunMessage,
    message_class: MessageClass,
    attributes: list[Attribute],
    software: str | None,
) -> bytes:
    if software is not None:
        attributes.append(Attribute(AttributeType.SOFTWARE, encode_text(software)))
    response = StunMessage(
        method=request.method,
        message_class=message_class,
        transaction_id=request.transaction_id,
        attributes=tuple(attributes),
    )
    fingerprint = request.get(AttributeType.FINGERPRINT) is not None
    return serialize_message(response, fingerprint=fingerprint)


def handle_request(
    data: bytes,
    source_addr: Sequence[Any],
    *,
    stats: StunStats | None = None,
    software: str | None = None,
    limiter: SourceRateLimiter | None = None,
    now: float | None = None,
) -> bytes | None:
    """Answer one message received from *source_addr*, as a plain STUN server does.

    Returns the bytes to send back to *source_addr*, or ``None`` when nothing is due:

    * not an RFC 8489 message (short, no magic cookie, bad length, an attribute overrunning
      the message, a wrong FINGERPRINT): dropped silently, counted as ``malformed``;
    * a response or error response (a server sends no requests), or an indication: dropped,
      counted as ``ignored`` (Binding indications, keep-alives, count as ``indications``);
    * with a *limiter*, a request from a source over its :class:`RateLimit` (at *now*):
      dropped, counted as ``rate_limited``; only requests that get an answer take a token;
    * a request for another method than Binding: error 400 (Bad Request);
    * a Binding request with comprehension-required attributes it does not understand
      (e.g. CHANGE-REQUEST, since NAT behaviour discovery is not offered): error 420
      (Unknown Attribute) listing them in UNKNOWN-ATTRIBUTES;
    * any other Binding request: a success response with XOR-MAPPED-ADDRESS set to
      *source_addr*.

    Responses carry no more than needed: FINGERPRINT only if the request had one, error
    responses an empty reason phrase, SOFTWARE only if *software* is given. A response is
    therefore at most 2.2 times its request (a 20-byte Binding request from IPv6: 44 bytes;
    see :doc:`/reference/stun` for every size). The server does not authenticate: USERNAME
    and MESSAGE-INTEGRITY are accepted and ignored. *stats*, if given, is updated. Never
    raises for any *data*.
    """
    if limiter is not None and now is None:
        raise ConfigurationError("a rate limiter needs the time: pass now=")
    counters = stats if stats is not None else StunStats()
    counters.received += 1
    try:
        request = parse_message(data)
    except StunFormatError:
        counters.malformed += 1
        return None
    if request.message_class is MessageClass.INDICATION and request.method == Method.BINDING:
        counters.indications += 1
        return None
    if request.message_class is not MessageClass.REQUEST:
        counters.ignored += 1
        return None
    counters.requests += 1
    if limiter is not None and now is not None and not limiter.allow(str(source_addr[0]), now):
        counters.rate_limited += 1
        return None
    if request.method != Method.BINDING:
        counters.error_responses += 1
        error = Attribute(AttributeType.ERROR_CODE, encode_error_code(400, ""))
        return _respond(request, MessageClass.ERROR_RESPONSE, [error], software)
    # A dict keeps their order and finds repeats at once (a list took 0.9 s for the 16,000
    # distinct types one 64 KiB datagram holds, stalling the server).
    unknown: dict[int, None] = {}
    for attribute in request.authenticated_attributes():
        if attribute.comprehension_required and attribute.type not in _BINDING_UNDERSTOOD:
            unknown[attribute.type] = None
    if unknown:
        counters.error_responses += 1
        attributes = [
            Attribute(AttributeType.ERROR_CODE, encode_error_code(420, "")),
            Attribute(AttributeType.UNKNOWN_ATTRIBUTES, encode_unknown_attributes(unknown)),
        ]
        return _respond(request, MessageClass.ERROR_RESPONSE, attributes, software)
    # A socket address: (host, port), or (host, port, flowinfo, scope_id) for IPv6.
    mapped = encode_xor_address(str(source_addr[0]), int(source_addr[1]), request.transaction_id)
    counters.success_responses += 1
    return _respond(
        request,
        MessageClass.SUCCESS_RESPONSE,
        [Attribute(AttributeType.XOR_MAPPED_ADDRESS, mapped)],
        software,
    )
