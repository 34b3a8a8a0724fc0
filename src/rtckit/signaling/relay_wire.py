"""The envelope of what the signaling router's nodes post each other (sans-I/O).

One payload is one :class:`Envelope`: a 10-byte header, then the data, as is::

    version (1 byte) | kind (1 byte) | connection key (8 bytes, big-endian) | data

*version* is :data:`RELAY_VERSION`; a node refuses a payload of another version with
:class:`~rtckit.errors.RemoteProtocolError` (the router then logs it once for the sending
node and closes that node's connections: mixed versions refuse clearly, they never
misread). The *connection key* names one client connection, chosen by the node holding its
WebSocket (its *edge*); with the edge's node id it is unique in the deployment. What *data*
holds depends on the *kind* (:class:`Kind`):

=========  ===============  ===================================================================
kind       direction        data
=========  ===============  ===================================================================
OPEN       edge -> home     the frame (``join`` or ``resume``) that made the edge hand over
FRAME      edge -> home     one text frame the client sent
TOUCH      edge -> home     (empty) the client answered a WebSocket ping
LOST       edge -> home     (empty) the client's connection is gone
SEND       home -> edge     one text frame for the client
CLOSE      home -> edge     close code (2 bytes, big-endian) then the reason (UTF-8)
PING       home -> edge     (empty) send the client a WebSocket ping
HANDBACK   home -> edge     a ``join``/``resume`` frame for a room the home does not serve:
                            the edge serves the connection again and routes the frame afresh
=========  ===============  ===================================================================

Frames travel as the client's bytes (UTF-8 text): the home decodes them with the protocol
codec exactly as for a local client, and the edge never decodes what a home sends.
"""

from __future__ import annotations

import enum
import struct

import attrs

from rtckit.errors import RemoteProtocolError

__all__ = ["RELAY_VERSION", "Envelope", "Kind", "decode_close", "encode_close", "pack", "unpack"]

#: The version of this envelope; a node refuses payloads of any other.
RELAY_VERSION = 1

_HEADER = struct.Struct(">BBQ")
_CODE = struct.Struct(">H")


class Kind(enum.IntEnum):
    """What an envelope carries (see the module's table)."""

    OPEN = 1
    FRAME = 2
    TOUCH = 3
    LOST = 4
    SEND = 5
    CLOSE = 6
    PING = 7
    HANDBACK = 8


@attrs.frozen
class Envelope:
    """One decoded payload."""

    kind: Kind
    key: int
    data: bytes = b""


def pack(kind: Kind, key: int, data: bytes = b"") -> bytes:
    """Encode one payload."""
    return _HEADER.pack(RELAY_VERSION, kind, key) + data


def unpack(payload: bytes) -> Envelope:
    """Decode one payload; :class:`~rtckit.errors.RemoteProtocolError` if it is of another
    version, shorter than its header, or of an unknown kind."""
    if len(payload) < _HEADER.size:
        raise RemoteProtocolError(f"relay payload of {len(payload)} bytes: shorter than a header")
    version, kind, key = _HEADER.unpack_from(payload)
    if version != RELAY_VERSION:
        raise RemoteProtocolError(
            f"relay envelope version {version} (this node speaks {RELAY_VERSION})"
        )
    try:
        known = Kind(kind)
    except ValueError:
        raise RemoteProtocolError(f"unknown relay envelope kind {kind}") from None
    return Envelope(known, key, payload[_HEADER.size :])


def encode_close(code: int, reason: str) -> bytes:
    """The data of a CLOSE envelope."""
    return _CODE.pack(code) + reason.encode()


def decode_close(data: bytes) -> tuple[int, str]:
    """Read the data of a CLOSE envelope (a malformed one gives 1011, internal error)."""
    if len(data) < _CODE.size:
        return 1011, "bad relay close"
    return _CODE.unpack_from(data)[0], data[_CODE.size :].decode(errors="replace")
