"""What the Redis backplane's hot path writes and reads, as bytes (sans-I/O).

Two formats:

* **A batch of posts**, the message ``PUBLISH``\\ ed on a node's channel: the posts one node
  sends another within one turn of its event loop, in order, each as a 4-byte big-endian
  length then the payload::

      <header> | len (4 bytes) | payload | len (4 bytes) | payload | ...

  (the header, ``<version>:<sender>:``, is :mod:`rtckit.backplane.redis`'s). One ``PUBLISH``
  per batch rather than per post: fewer commands to write, fewer replies to read and fewer
  wake-ups of redis-server and of the receiving node. :func:`split` refuses a batch whose
  lengths do not add up (:class:`ValueError`), so a damaged one is dropped whole rather than
  misread.
* **RESP**, Redis' protocol, the subset these connections carry: :func:`publish` packs one
  ``PUBLISH`` command; :class:`RespReader` reads replies and pushes (RESP2 and RESP3:
  integers, strings, errors, nulls, arrays and pushes) incrementally from the bytes as they
  come. redis-py opens and authenticates the connections; the backplane reads and writes
  their streams itself because redis-py's pure-Python path (a timeout context per read, a
  line-by-line parser, a pipeline object per batch) cost about as much CPU as writing the
  ``PUBLISH`` (docs/topics/cluster-benchmark.rst).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

__all__ = ["Reply", "RespError", "RespReader", "command", "join", "publish", "split"]

_LENGTH = struct.Struct(">I")


def join(header: bytes, payloads: Sequence[bytes]) -> bytes:
    """*header* then each of *payloads* framed by its length."""
    parts = [header]
    for payload in payloads:
        parts.append(_LENGTH.pack(len(payload)))
        parts.append(payload)
    return b"".join(parts)


def split(data: bytes, start: int = 0) -> list[bytes]:
    """The payloads framed in *data* from *start* on; :class:`ValueError` if the lengths do
    not add up to its end exactly."""
    out: list[bytes] = []
    end = len(data)
    size = _LENGTH.size
    position = start
    while position < end:
        if position + size > end:
            raise ValueError(f"a batch of posts cut inside a length at byte {position}")
        (length,) = _LENGTH.unpack_from(data, position)
        position += size
        if position + length > end:
            raise ValueError(
                f"a post of {length} bytes at byte {position} of a batch of {end} bytes"
            )
        out.append(data[position : position + length])
        position += length
    return out


def publish(channel: bytes, message: bytes) -> bytes:
    """The RESP encoding of ``PUBLISH channel message``."""
    return b"*3\r\n$7\r\nPUBLISH\r\n$%d\r\n%b\r\n$%d\r\n%b\r\n" % (
        len(channel),
        channel,
        len(message),
        message,
    )


def command(*parts: bytes | str | int) -> bytes:
    """The RESP encoding of the command *parts* (strings are UTF-8, integers in decimal)."""
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part if isinstance(part, bytes) else str(part).encode()
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
    return b"".join(out)


class RespError(Exception):
    """Redis answered a command with an error (``-ERR ...``): its text."""


class _MalformedError(ValueError):
    pass


#: What :meth:`RespReader.feed` yields: an int, bytes (a string; ``None`` for null), a
#: :class:`RespError`, or a list of these (an array, or a RESP3 push).
Reply = int | bytes | None | RespError | list["Reply"]


class RespReader:
    """Reads RESP replies from bytes fed in any pieces.

    :meth:`feed` raises :class:`ValueError` on bytes that are not RESP (the connection is
    then beyond repair). Keeps at most one incomplete reply between calls.
    """

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[Reply]:
        """The replies completed by *data*, in order."""
        buffer = self._buffer + data if self._buffer else data
        out: list[Reply] = []
        position = 0
        end = len(buffer)
        while position < end:
            parsed = self._parse(buffer, position)
            if parsed is None:
                break
            value, position = parsed
            out.append(value)
        self._buffer = buffer[position:]
        return out

    def _parse(self, buffer: bytes, position: int) -> tuple[Reply, int] | None:
        line_end = buffer.find(b"\r\n", position)
        if line_end < 0:
            return None
        kind = buffer[position : position + 1]
        head = buffer[position + 1 : line_end]
        after = line_end + 2
        if kind == b"$" or kind == b"!":
            length = _integer(head)
            if length < 0:
                return None, after
            if after + length + 2 > len(buffer):
                return None
            text = buffer[after : after + length]
            if buffer[after + length : after + length + 2] != b"\r\n":
                raise _MalformedError("a RESP string not followed by CRLF")
            if kind == b"!":
                return RespError(text.decode(errors="replace")), after + length + 2
            return text, after + length + 2
        if kind == b":":
            return _integer(head), after
        if kind == b"*" or kind == b">":
            count = _integer(head)
            if count < 0:
                return None, after
            items: list[Reply] = []
            for _ in range(count):
                parsed = self._parse(buffer, after)
                if parsed is None:
                    return None
                item, after = parsed
                items.append(item)
            return items, after
        if kind == b"+":
            return head, after
        if kind == b"-":
            return RespError(head.decode(errors="replace")), after
        if kind == b"_":
            return None, after
        raise _MalformedError(f"a RESP reply of an unexpected type {kind!r}")


def _integer(text: bytes) -> int:
    try:
        return int(text)
    except ValueError:
        raise _MalformedError(f"a RESP length or integer that is not one: {text[:20]!r}") from None
