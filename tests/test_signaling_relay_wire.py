"""The signaling router's envelope between nodes (sans-I/O)."""

from __future__ import annotations

import pytest

from rtckit.errors import RemoteProtocolError
from rtckit.signaling.relay_wire import (
    RELAY_VERSION,
    Envelope,
    Kind,
    decode_close,
    encode_close,
    pack,
    unpack,
)


@pytest.mark.parametrize("kind", list(Kind))
def test_round_trip(kind: Kind) -> None:
    data = '{"type":"app","payload":"é"}'.encode()
    payload = pack(kind, 2**64 - 1, data)
    assert len(payload) == 10 + len(data)  # a compact header
    assert payload[0] == RELAY_VERSION
    assert unpack(payload) == Envelope(kind, 2**64 - 1, data)
    assert unpack(pack(kind, 1)) == Envelope(kind, 1, b"")


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (b"", "shorter than a header"),
        (b"\x01\x02", "shorter than a header"),
        (bytes([RELAY_VERSION + 1]) + pack(Kind.FRAME, 1)[1:], "version 2"),
        (bytes([0]) + pack(Kind.FRAME, 1)[1:], "version 0"),
        (
            pack(Kind.FRAME, 1)[:1] + b"\x63" + pack(Kind.FRAME, 1)[2:],
            "unknown relay envelope kind",
        ),
    ],
)
def test_foreign_payloads_are_refused_clearly(payload: bytes, match: str) -> None:
    with pytest.raises(RemoteProtocolError, match=match):
        unpack(payload)


def test_close_data() -> None:
    assert decode_close(encode_close(1001, "moved é")) == (1001, "moved é")
    assert decode_close(b"\x03") == (1011, "bad relay close")
    assert decode_close(encode_close(4004, "")) == (4004, "")
