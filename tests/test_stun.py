"""The pure STUN codec and Binding responder (rtckit.stun.codec): RFC 5769 vectors, bad input."""

from __future__ import annotations

import ipaddress
import struct
import time
import zlib

import aioice.stun
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rtckit import ConfigurationError, StunFormatError
from rtckit.stun.codec import (
    DEFAULT_SOFTWARE,
    FINGERPRINT_XOR,
    MAGIC_COOKIE,
    Attribute,
    AttributeType,
    MessageClass,
    Method,
    RateLimit,
    SourceRateLimiter,
    StunMessage,
    StunStats,
    binding_request,
    decode_address,
    decode_error_code,
    decode_text,
    decode_unknown_attributes,
    decode_xor_address,
    encode_address,
    encode_error_code,
    encode_unknown_attributes,
    encode_xor_address,
    format_transport_address,
    handle_request,
    is_stun_header,
    message_length,
    message_type,
    parse_message,
    serialize_message,
    source_key,
    verify_message_integrity,
)


def unhex(text: str) -> bytes:
    return bytes.fromhex(" ".join(text.split()))


# RFC 5769 ("Test Vectors for STUN"), sections 2.1 to 2.3, byte for byte. SOFTWARE and USERNAME
# are padded with 0x20 there; the short-term password is "VOkJxbRl1RmTxUk/WvJxBt".
PASSWORD = b"VOkJxbRl1RmTxUk/WvJxBt"
TRANSACTION_ID = unhex("b7 e7 a7 01 bc 34 d6 86 fa 87 df ae")

RFC5769_REQUEST = unhex("""
    00 01 00 58 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 10 53 54 55 4e 20 74 65 73 74 20 63 6c 69 65 6e 74
    00 24 00 04 6e 00 01 ff
    80 29 00 08 93 2f f9 b1 51 26 3b 36
    00 06 00 09 65 76 74 6a 3a 68 36 76 59 20 20 20
    00 08 00 14 9a ea a7 0c bf d8 cb 56 78 1e f2 b5 b2 d3 f2 49 c1 b5 71 a2
    80 28 00 04 e5 7a 3b cf
""")

RFC5769_IPV4_RESPONSE = unhex("""
    01 01 00 3c 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 08 00 01 a1 47 e1 12 a6 43
    00 08 00 14 2b 91 f5 99 fd 9e 90 c3 8c 74 89 f9 2a f9 ba 53 f0 6b e7 d7
    80 28 00 04 c0 7d 4c 96
""")

RFC5769_IPV6_RESPONSE = unhex("""
    01 01 00 48 21 12 a4 42 b7 e7 a7 01 bc 34 d6 86 fa 87 df ae
    80 22 00 0b 74 65 73 74 20 76 65 63 74 6f 72 20
    00 20 00 14 00 02 a1 47 01 13 a9 fa a5 d3 f1 79 bc 25 f4 b5 be d2 b9 d9
    00 08 00 14 a3 82 95 4e 4b e6 7b f1 17 84 c9 7c 82 92 c2 75 bf e3 ed 41
    80 28 00 04 c8 fb 0b 4c
""")

IPV4_MAPPED = ("192.0.2.1", 32853)
IPV6_MAPPED = ("2001:db8:1234:5678:11:2233:4455:6677", 32853)


def crc_fingerprint(message: bytes) -> int:
    """FINGERPRINT of a message ending with its FINGERPRINT attribute, computed here."""
    return zlib.crc32(message[:-8]) ^ 0x5354554E


def attribute_values(data: bytes) -> dict[int, bytes]:
    """First value of each attribute type, walked independently of rtckit's parser."""
    values: dict[int, bytes] = {}
    pos = 20
    while pos < len(data):
        kind, length = struct.unpack_from("!HH", data, pos)
        values.setdefault(kind, data[pos + 4 : pos + 4 + length])
        pos += 4 + length + (-length % 4)
    return values


# --- RFC 5769 vectors ----------------------------------------------------------------------------


def test_rfc5769_request_parses_and_reserializes_byte_for_byte() -> None:
    message = parse_message(RFC5769_REQUEST)
    assert message.method == Method.BINDING
    assert message.message_class is MessageClass.REQUEST
    assert message.transaction_id == TRANSACTION_ID
    assert message.software() == "STUN test client"
    assert message.get(AttributeType.USERNAME) == b"evtj:h6vY"
    assert message.get(AttributeType.PRIORITY) == unhex("6e 00 01 ff")
    assert message.get(AttributeType.ICE_CONTROLLED) == unhex("93 2f f9 b1 51 26 3b 36")
    assert verify_message_integrity(RFC5769_REQUEST, PASSWORD)
    assert not verify_message_integrity(RFC5769_REQUEST, b"wrong")
    assert crc_fingerprint(RFC5769_REQUEST) == 0xE57A3BCF

    unsigned = StunMessage(
        method=Method.BINDING,
        message_class=MessageClass.REQUEST,
        transaction_id=TRANSACTION_ID,
        attributes=message.attributes[:4],  # up to MESSAGE-INTEGRITY
    )
    rebuilt = serialize_message(unsigned, integrity_key=PASSWORD, fingerprint=True, padding=b" ")
    assert rebuilt == RFC5769_REQUEST


@pytest.mark.parametrize(
    ("vector", "mapped"),
    [(RFC5769_IPV4_RESPONSE, IPV4_MAPPED), (RFC5769_IPV6_RESPONSE, IPV6_MAPPED)],
    ids=["ipv4", "ipv6"],
)
def test_rfc5769_responses(vector: bytes, mapped: tuple[str, int]) -> None:
    message = parse_message(vector)
    assert message.message_class is MessageClass.SUCCESS_RESPONSE
    assert message.method == Method.BINDING
    assert message.software() == "test vector"
    assert message.mapped_address() == mapped
    assert verify_message_integrity(vector, PASSWORD)
    assert crc_fingerprint(vector) == struct.unpack("!I", vector[-4:])[0]

    xor_value = attribute_values(vector)[AttributeType.XOR_MAPPED_ADDRESS]
    assert encode_xor_address(*mapped, TRANSACTION_ID) == xor_value
    assert decode_xor_address(xor_value, TRANSACTION_ID) == mapped

    unsigned = StunMessage(
        method=Method.BINDING,
        message_class=MessageClass.SUCCESS_RESPONSE,
        transaction_id=TRANSACTION_ID,
        attributes=[
            Attribute(AttributeType.SOFTWARE, b"test vector"),
            Attribute(
                AttributeType.XOR_MAPPED_ADDRESS, encode_xor_address(*mapped, TRANSACTION_ID)
            ),
        ],
    )
    rebuilt = serialize_message(unsigned, integrity_key=PASSWORD, fingerprint=True, padding=b" ")
    assert rebuilt == vector


@pytest.mark.parametrize("source", [IPV4_MAPPED, IPV6_MAPPED], ids=["ipv4", "ipv6"])
def test_server_answers_rfc5769_request_with_the_vector_xor_mapped_address(
    source: tuple[str, int],
) -> None:
    stats = StunStats()
    reply = handle_request(RFC5769_REQUEST, source, stats=stats)
    assert reply is not None
    # Checked without rtckit's parser: header, XOR-MAPPED-ADDRESS bytes, FINGERPRINT.
    kind, length, cookie = struct.unpack_from("!HHI", reply)
    assert (kind, cookie, len(reply)) == (0x0101, MAGIC_COOKIE, 20 + length)
    assert reply[8:20] == TRANSACTION_ID
    values = attribute_values(reply)
    vector = RFC5769_IPV4_RESPONSE if source == IPV4_MAPPED else RFC5769_IPV6_RESPONSE
    expected = attribute_values(vector)[AttributeType.XOR_MAPPED_ADDRESS]
    assert values[AttributeType.XOR_MAPPED_ADDRESS] == expected
    assert AttributeType.SOFTWARE not in values  # not by default
    assert reply[-8:-4] == unhex("80 28 00 04")
    assert crc_fingerprint(reply) == struct.unpack("!I", reply[-4:])[0]
    # aioice's parser, an independent implementation, reads the same.
    parsed = aioice.stun.parse_message(reply)
    assert parsed.attributes["XOR-MAPPED-ADDRESS"] == source
    assert stats.as_dict() == {
        "received": 1,
        "requests": 1,
        "success_responses": 1,
        "error_responses": 0,
        "indications": 0,
        "malformed": 0,
        "ignored": 0,
        "rate_limited": 0,
        "tcp_refused": 0,
        "tcp_timeouts": 0,
        "internal_errors": 0,
        "responses": 1,
    }


# --- codec details -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "message_class", "value"),
    [
        (Method.BINDING, MessageClass.REQUEST, 0x0001),
        (Method.BINDING, MessageClass.INDICATION, 0x0011),
        (Method.BINDING, MessageClass.SUCCESS_RESPONSE, 0x0101),
        (Method.BINDING, MessageClass.ERROR_RESPONSE, 0x0111),
        (Method.ALLOCATE, MessageClass.REQUEST, 0x0003),
        (Method.ALLOCATE, MessageClass.ERROR_RESPONSE, 0x0113),
        (0xFFF, MessageClass.REQUEST, 0x3EEF),
    ],
)
def test_message_type_interleaves_method_and_class(
    method: int, message_class: MessageClass, value: int
) -> None:
    assert message_type(method, message_class) == value
    message = StunMessage(method=method, message_class=message_class, transaction_id=bytes(12))
    parsed = parse_message(serialize_message(message))
    assert (parsed.method, parsed.message_class) == (method, message_class)


@given(
    method=st.integers(0, 0xFFF),
    message_class=st.sampled_from(MessageClass),
    transaction_id=st.binary(min_size=12, max_size=12),
    attributes=st.lists(
        st.builds(
            Attribute,
            st.integers(0, 0xFFFF).filter(lambda kind: kind not in (0x0008, 0x8028)),
            st.binary(max_size=40),
        ),
        max_size=6,
    ),
    fingerprint=st.booleans(),
)
def test_serialize_parse_round_trip(
    method: int,
    message_class: MessageClass,
    transaction_id: bytes,
    attributes: list[Attribute],
    fingerprint: bool,
) -> None:
    message = StunMessage(
        method=method,
        message_class=message_class,
        transaction_id=transaction_id,
        attributes=attributes,
    )
    data = serialize_message(message, fingerprint=fingerprint)
    assert len(data) % 4 == 0
    parsed = parse_message(data)
    expected = message.attributes
    if fingerprint:
        expected += (Attribute(AttributeType.FINGERPRINT, data[-4:]),)
    assert parsed == StunMessage(
        method=method,
        message_class=message_class,
        transaction_id=transaction_id,
        attributes=expected,
    )


@given(
    host=st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6)).map(str),
    port=st.integers(0, 0xFFFF),
    transaction_id=st.binary(min_size=12, max_size=12),
)
def test_addresses_round_trip_and_match_aioice(host: str, port: int, transaction_id: bytes) -> None:
    canonical = (host, port)
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        canonical = (str(address.ipv4_mapped), port)  # an IPv4-mapped address encodes as IPv4
    assert decode_address(encode_address(host, port)) == canonical
    assert decode_xor_address(encode_xor_address(host, port, transaction_id), transaction_id) == (
        canonical
    )
    assert encode_xor_address(*canonical, transaction_id) == aioice.stun.pack_xor_address(
        canonical, transaction_id
    )


def test_ipv4_mapped_and_scoped_sources_are_reported_plainly() -> None:
    reply = handle_request(binding_request(), ("::ffff:198.51.100.7", 4000, 0, 0))
    assert reply is not None
    assert parse_message(reply).mapped_address() == ("198.51.100.7", 4000)
    reply = handle_request(binding_request(), ("fe80::1%eth0", 4001, 0, 2))
    assert reply is not None
    assert parse_message(reply).mapped_address() == ("fe80::1", 4001)


def test_error_code_and_unknown_attributes_values() -> None:
    assert decode_error_code(encode_error_code(420)) == (420, "Unknown Attribute")
    assert decode_error_code(encode_error_code(401, "Unauthenticated")) == (401, "Unauthenticated")
    assert encode_error_code(438, "x")[:4] == b"\x00\x00\x04\x26"
    assert decode_unknown_attributes(encode_unknown_attributes([3, 0x7FFF])) == (3, 0x7FFF)
    with pytest.raises(ConfigurationError):
        encode_error_code(200)
    for bad in (b"\x00\x00\x02\x00", b"\x00\x00\x04\x64", b"\x00\x00\x04"):
        with pytest.raises(StunFormatError):
            decode_error_code(bad)
    with pytest.raises(StunFormatError):
        decode_error_code(b"\x00\x00\x04\x01\xff\xfe")  # reason is not UTF-8
    with pytest.raises(StunFormatError):
        decode_unknown_attributes(b"\x00\x03\x00")


@pytest.mark.parametrize(
    "value",
    [
        b"",
        b"\x00\x01\x00",
        b"\x00\x01\x00\x01\x01\x02\x03",
        b"\x00\x03\x00\x01" + bytes(4),
        b"\x00\x02\x00\x01" + bytes(4),
    ],
)
def test_decode_address_refuses_bad_values(value: bytes) -> None:
    with pytest.raises(StunFormatError):
        decode_address(value)


def test_text_must_be_utf8() -> None:
    assert decode_text("é".encode()) == "é"
    with pytest.raises(StunFormatError):
        decode_text(b"\xc3")


def test_misuse_raises_configuration_error() -> None:
    with pytest.raises(ConfigurationError):
        StunMessage(method=1, message_class=MessageClass.REQUEST, transaction_id=bytes(11))
    with pytest.raises(ConfigurationError):
        StunMessage(method=0x1000, message_class=MessageClass.REQUEST, transaction_id=bytes(12))
    with pytest.raises(ConfigurationError):
        encode_address("localhost", 1)
    with pytest.raises(ConfigurationError):
        encode_address("127.0.0.1", 70000)
    signed = parse_message(RFC5769_REQUEST)
    with pytest.raises(ConfigurationError):
        serialize_message(signed, fingerprint=True)
    with pytest.raises(ConfigurationError):
        binding_request(software="x" * 128)


def test_header_helpers() -> None:
    request = binding_request()
    assert is_stun_header(request)
    assert message_length(request) == len(request)
    assert not is_stun_header(request[:19])
    assert not is_stun_header(b"\x80" + request[1:])
    assert not is_stun_header(request[:4] + b"\x00\x00\x00\x00" + request[8:])
    with pytest.raises(StunFormatError):
        message_length(b"\x00")


# --- the responder: errors, indications, responses -----------------------------------------------


def _request(
    attributes: list[Attribute],
    *,
    method: int = Method.BINDING,
    message_class: MessageClass = MessageClass.REQUEST,
) -> bytes:
    message = StunMessage(
        method=method,
        message_class=message_class,
        transaction_id=bytes(range(12)),
        attributes=attributes,
    )
    return serialize_message(message, fingerprint=True)


def test_unknown_method_gets_400() -> None:
    stats = StunStats()
    reply = handle_request(_request([], method=Method.ALLOCATE), ("127.0.0.1", 5000), stats=stats)
    assert reply is not None
    response = parse_message(reply)
    assert response.message_class is MessageClass.ERROR_RESPONSE
    assert response.method == Method.ALLOCATE
    assert response.error_code() == (400, "")  # no reason phrase: as short as it can be
    assert response.transaction_id == bytes(range(12))
    assert (stats.requests, stats.error_responses, stats.success_responses) == (1, 1, 0)


def test_unknown_comprehension_required_attributes_get_420() -> None:
    stats = StunStats()
    attributes = [
        Attribute(AttributeType.CHANGE_REQUEST, bytes(4)),
        Attribute(0x7FFF, b"x"),
        Attribute(0x7FFF, b"again"),
        Attribute(0xC0DE, b"optional"),
    ]
    reply = handle_request(_request(attributes), ("127.0.0.1", 5000), stats=stats)
    assert reply is not None
    response = parse_message(reply)
    assert response.message_class is MessageClass.ERROR_RESPONSE
    assert response.error_code() == (420, "")
    unknown = response.get(AttributeType.UNKNOWN_ATTRIBUTES)
    assert unknown is not None
    assert decode_unknown_attributes(unknown) == (0x0003, 0x7FFF)
    assert stats.error_responses == 1
    # aioice sees a 420 too.
    assert aioice.stun.parse_message(reply).error_code == 420


def _fastest(data: bytes) -> float:
    """The shortest of three runs of ``handle_request(data)``, in seconds."""
    runs = []
    for _ in range(3):
        start = time.perf_counter()
        handle_request(data, ("127.0.0.1", 5000))
        runs.append(time.perf_counter() - start)
    return min(runs)


def test_many_unknown_attributes_take_linear_time() -> None:
    """The most distinct unknown comprehension-required attributes one datagram holds
    (16,000 empty ones, 64 KiB) get a 420 listing them all, as fast as a request with as
    many optional attributes gets its success (within a factor): finding repeats in a list
    made it quadratic, 0.9 s of a stalled server per datagram."""
    count = 16_000
    required = _request([Attribute(0x4000 + index, b"") for index in range(count)])
    optional = _request([Attribute(0x8100 + index % 0x7000, b"") for index in range(count)])
    reply = handle_request(required, ("127.0.0.1", 5000))
    assert reply is not None
    unknown = parse_message(reply).get(AttributeType.UNKNOWN_ATTRIBUTES)
    assert unknown is not None
    assert decode_unknown_attributes(unknown) == tuple(0x4000 + index for index in range(count))
    assert len(reply) < len(required)
    assert _fastest(required) < 10 * _fastest(optional)


def test_optional_and_ice_attributes_are_accepted() -> None:
    attributes = [
        Attribute(0xC0DE, b"optional"),
        Attribute(AttributeType.PRIORITY, bytes(4)),
        Attribute(AttributeType.USE_CANDIDATE, b""),
        Attribute(AttributeType.USERNAME, b"a:b"),
    ]
    reply = handle_request(_request(attributes), ("127.0.0.1", 5000))
    assert reply is not None
    assert parse_message(reply).message_class is MessageClass.SUCCESS_RESPONSE


def test_attributes_after_message_integrity_are_ignored() -> None:
    message = StunMessage(
        method=Method.BINDING,
        message_class=MessageClass.REQUEST,
        transaction_id=bytes(12),
        attributes=[Attribute(AttributeType.USERNAME, b"a:b")],
    )
    signed = serialize_message(message, integrity_key=b"key")
    # Append an unknown comprehension-required attribute after MESSAGE-INTEGRITY.
    extra = struct.pack("!HH", 0x7FFE, 4) + b"abcd"
    data = signed[:2] + struct.pack("!H", len(signed) - 20 + 8) + signed[4:] + extra
    assert verify_message_integrity(data, b"key")
    reply = handle_request(data, ("127.0.0.1", 5000))
    assert reply is not None
    assert parse_message(reply).message_class is MessageClass.SUCCESS_RESPONSE


def test_indications_and_responses_get_no_answer() -> None:
    stats = StunStats()
    source = ("127.0.0.1", 5000)
    assert (
        handle_request(_request([], message_class=MessageClass.INDICATION), source, stats=stats)
        is None
    )
    assert stats.indications == 1
    assert handle_request(RFC5769_IPV4_RESPONSE, source, stats=stats) is None
    error = _request([], message_class=MessageClass.ERROR_RESPONSE)
    assert handle_request(error, source, stats=stats) is None
    send = _request([], method=Method.SEND, message_class=MessageClass.INDICATION)
    assert handle_request(send, source, stats=stats) is None
    assert stats.ignored == 3
    assert (stats.requests, stats.responses, stats.received) == (0, 0, 4)


def test_software_only_when_asked() -> None:
    reply = handle_request(binding_request(), ("127.0.0.1", 5000))
    assert reply is not None
    assert parse_message(reply).software() is None
    reply = handle_request(binding_request(), ("127.0.0.1", 5000), software=DEFAULT_SOFTWARE)
    assert reply is not None
    assert parse_message(reply).software() == "rtckit"


# Sizes in bytes: (request, response). Requests are the smallest that get each answer.
UNKNOWN_EMPTY = Attribute(0x7FFE, b"")  # comprehension-required, unknown, no value
RESPONSE_SIZES = {
    "binding ipv4": (binding_request(fingerprint=False), ("192.0.2.1", 5000), 20, 32),
    "binding ipv6": (binding_request(fingerprint=False), ("2001:db8::1", 5000, 0, 0), 20, 44),
    "binding ipv4 + fingerprint": (binding_request(), ("192.0.2.1", 5000), 28, 40),
    "binding ipv6 + fingerprint": (binding_request(), ("2001:db8::1", 5000, 0, 0), 28, 52),
    "420": (
        serialize_message(
            StunMessage(
                method=Method.BINDING,
                message_class=MessageClass.REQUEST,
                transaction_id=bytes(12),
                attributes=(UNKNOWN_EMPTY,),
            )
        ),
        ("192.0.2.1", 5000),
        24,
        36,
    ),
    "420 change-request + fingerprint": (
        _request([Attribute(AttributeType.CHANGE_REQUEST, bytes(4))]),
        ("192.0.2.1", 5000),
        36,
        44,
    ),
    "400": (
        serialize_message(
            StunMessage(
                method=Method.ALLOCATE, message_class=MessageClass.REQUEST, transaction_id=bytes(12)
            )
        ),
        ("192.0.2.1", 5000),
        20,
        28,
    ),
}


@pytest.mark.parametrize("case", list(RESPONSE_SIZES))
def test_responses_are_as_short_as_they_can_be(case: str) -> None:
    """The numbers of docs/reference/stun.rst: at most 2.2 times the request."""
    request, source, request_size, response_size = RESPONSE_SIZES[case]
    reply = handle_request(request, source)
    assert reply is not None
    assert (len(request), len(reply)) == (request_size, response_size)
    assert len(reply) / len(request) <= 2.2
    attributes = {attribute.type for attribute in parse_message(reply).attributes}
    assert AttributeType.SOFTWARE not in attributes
    has_fingerprint = parse_message(request).get(AttributeType.FINGERPRINT) is not None
    assert (AttributeType.FINGERPRINT in attributes) is has_fingerprint


def test_rate_limit_per_source_with_injected_time() -> None:
    limiter = SourceRateLimiter(RateLimit(rate=10, burst=3))
    stats = StunStats()
    request = binding_request()

    def answered(host: str, now: float) -> bool:
        return (
            handle_request(request, (host, 5000), stats=stats, limiter=limiter, now=now) is not None
        )

    assert [answered("192.0.2.1", 0.0) for _ in range(5)] == [True, True, True, False, False]
    assert stats.rate_limited == 2
    assert answered("192.0.2.2", 0.0)  # another source has its own bucket
    assert not answered("192.0.2.1", 0.05)  # half a token earned
    assert answered("192.0.2.1", 0.1)  # one token
    assert not answered("192.0.2.1", 0.1)
    assert [answered("192.0.2.1", 100.0) for _ in range(4)] == [True, True, True, False]
    # an IPv6 /64 is one source; an IPv4-mapped address is its IPv4 address
    assert [answered(f"2001:db8::{i}", 0.0) for i in range(1, 5)] == [True, True, True, False]
    assert answered("2001:db8:0:1::1", 0.0)
    assert [answered("::ffff:192.0.2.2", 0.0) for _ in range(2)] == [True, True]
    assert not answered("192.0.2.2", 0.0)  # 1 + 2 of its 3 tokens
    # only answered requests take a token: indications and garbage never do
    indication = serialize_message(
        StunMessage(
            method=Method.BINDING, message_class=MessageClass.INDICATION, transaction_id=bytes(12)
        )
    )
    for _ in range(10):
        handle_request(indication, ("192.0.2.3", 1), stats=stats, limiter=limiter, now=0.0)
        handle_request(b"junk", ("192.0.2.3", 1), stats=stats, limiter=limiter, now=0.0)
    assert answered("192.0.2.3", 0.0)
    with pytest.raises(ConfigurationError, match="now"):
        handle_request(request, ("192.0.2.1", 1), limiter=limiter)


def test_rate_limiter_memory_is_bounded() -> None:
    limiter = SourceRateLimiter(RateLimit(rate=1, burst=1, max_sources=100))
    for i in range(10_000):
        limiter.allow(str(ipaddress.IPv4Address(0x0A000000 + i)), float(i))
    assert len(limiter) == 100


@pytest.mark.parametrize(
    "kwargs", [{"rate": 0}, {"burst": 0.5}, {"max_sources": 0}, {"rate": float("nan")}]
)
def test_rate_limit_is_validated(kwargs: dict[str, float]) -> None:
    with pytest.raises(ConfigurationError):
        RateLimit(**kwargs)  # type: ignore[arg-type]


def test_source_keys_and_addresses() -> None:
    assert source_key("192.0.2.1") == "192.0.2.1"
    assert source_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_key("2001:db8::1") == source_key("2001:db8::ffff:1") == "2001:db8::/64"
    assert source_key("fe80::1%eth0") == "fe80::/64"
    assert format_transport_address("127.0.0.1", 3478) == "127.0.0.1:3478"
    assert format_transport_address("::1", 3478) == "[::1]:3478"


def test_request_without_fingerprint_is_answered() -> None:
    reply = handle_request(binding_request(fingerprint=False), ("127.0.0.1", 5000))
    assert reply is not None


# --- malformed input -----------------------------------------------------------------------------


def _with_fingerprint_of(body_attributes: bytes) -> bytes:
    header = struct.pack("!HHI12s", 0x0001, len(body_attributes) + 8, MAGIC_COOKIE, bytes(12))
    data = header + body_attributes
    crc = zlib.crc32(data) ^ FINGERPRINT_XOR
    return data + struct.pack("!HHI", 0x8028, 4, crc)


GOOD = binding_request(bytes(12))  # 28 bytes: header + FINGERPRINT

MALFORMED: dict[str, bytes] = {
    "empty": b"",
    "truncated header": GOOD[:19],
    "truncated body": GOOD[:-4],
    "trailing byte": GOOD + b"\x00",
    "bad cookie": GOOD[:4] + b"\x21\x12\xa4\x43" + GOOD[8:],
    "rfc3489 no cookie": struct.pack("!HH16s", 0x0001, 0, bytes(16)),
    "top bits set": b"\x40" + GOOD[1:],
    "length not multiple of 4": struct.pack("!HHI12s", 1, 2, MAGIC_COOKIE, bytes(12)) + b"\x00\x00",
    "length larger than data": GOOD[:2] + struct.pack("!H", 12) + GOOD[4:],
    "length smaller than data": GOOD[:2] + struct.pack("!H", 4) + GOOD[4:],
    "attribute overruns": struct.pack("!HHI12s", 1, 8, MAGIC_COOKIE, bytes(12))
    + struct.pack("!HH", 0x8022, 100)
    + b"abcd",
    "attribute overruns by one byte": struct.pack("!HHI12s", 1, 8, MAGIC_COOKIE, bytes(12))
    + struct.pack("!HH", 0x8022, 5)
    + b"abcd",
    "bad fingerprint": GOOD[:-1] + bytes([GOOD[-1] ^ 1]),
    "fingerprint wrong size": struct.pack("!HHI12s", 1, 8, MAGIC_COOKIE, bytes(12))
    + struct.pack("!HH", 0x8028, 2)
    + b"\x00\x00\x00\x00",
    "attribute after fingerprint": _with_fingerprint_of(b"")[:2]
    + struct.pack("!H", 16)
    + _with_fingerprint_of(b"")[4:]
    + struct.pack("!HH", 0x8022, 4)
    + b"abcd",
    "fingerprint covers another message": _with_fingerprint_of(b"")[:8]
    + bytes(12)[:-1]
    + b"\x01"
    + _with_fingerprint_of(b"")[20:],
    "http": b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
    "dtls": bytes([22, 254, 253]) + bytes(30),
}


@pytest.mark.parametrize("data", MALFORMED.values(), ids=MALFORMED.keys())
def test_malformed_input_is_dropped_and_counted(data: bytes) -> None:
    with pytest.raises(StunFormatError):
        parse_message(data)
    stats = StunStats()
    assert handle_request(data, ("127.0.0.1", 5000), stats=stats) is None
    assert (stats.received, stats.malformed, stats.responses) == (1, 1, 0)


def test_good_sample_is_good() -> None:
    # The malformed samples above are built from these; make sure they were valid to begin with.
    assert handle_request(GOOD, ("127.0.0.1", 5000)) is not None
    assert handle_request(_with_fingerprint_of(b""), ("127.0.0.1", 5000)) is not None


# --- fuzzing -------------------------------------------------------------------------------------


def _check_reply(data: bytes, reply: bytes | None, stats: StunStats) -> None:
    assert stats.received == 1
    assert (
        stats.malformed
        + stats.ignored
        + stats.indications
        + stats.rate_limited
        + stats.success_responses
        + stats.error_responses
        == 1
    )
    if reply is not None:
        assert len(reply) <= 2.2 * len(data)  # the amplification bound of the docs
        response = parse_message(reply)
        assert response.message_class in (
            MessageClass.SUCCESS_RESPONSE,
            MessageClass.ERROR_RESPONSE,
        )
        assert response.transaction_id == data[8:20]


@settings(max_examples=400)
@given(data=st.binary(max_size=200))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    stats = StunStats()
    reply = handle_request(data, ("203.0.113.5", 40000), stats=stats)
    _check_reply(data, reply, stats)


@st.composite
def stun_like(draw: st.DrawFn) -> bytes:
    """Messages with a valid header and random attributes, sometimes slightly broken."""
    attributes = draw(
        st.lists(
            st.tuples(
                st.one_of(st.sampled_from(list(AttributeType)), st.integers(0, 0xFFFF)),
                st.binary(max_size=24),
            ),
            max_size=5,
        )
    )
    body = b"".join(
        struct.pack("!HH", kind, len(value)) + value + bytes(-len(value) % 4)
        for kind, value in attributes
    )
    method = draw(st.sampled_from([1, 1, 1, 3, draw(st.integers(0, 0xFFF))]))
    message_class = draw(st.sampled_from(MessageClass))
    header = struct.pack(
        "!HHI12s",
        message_type(method, message_class),
        len(body),
        MAGIC_COOKIE,
        draw(st.binary(min_size=12, max_size=12)),
    )
    data = header + body
    if draw(st.booleans()):
        data = data[:2] + struct.pack("!H", len(body) + 8) + data[4:]
        data += struct.pack("!HHI", 0x8028, 4, zlib.crc32(data) ^ FINGERPRINT_XOR)
    if draw(st.booleans()):  # flip one byte somewhere
        index = draw(st.integers(0, len(data) - 1))
        data = data[:index] + bytes([data[index] ^ draw(st.integers(1, 255))]) + data[index + 1 :]
    if draw(st.booleans()):  # cut or extend
        data = data[: draw(st.integers(0, len(data)))] + draw(st.binary(max_size=8))
    return data


@settings(max_examples=600)
@given(data=stun_like(), ipv6=st.booleans())
def test_fuzz_stun_like_messages(data: bytes, ipv6: bool) -> None:
    stats = StunStats()
    source = ("2001:db8::5", 40000, 0, 0) if ipv6 else ("203.0.113.5", 40000)
    reply = handle_request(data, source, stats=stats)
    _check_reply(data, reply, stats)
    if reply is not None and stats.success_responses:
        assert parse_message(reply).mapped_address() == source[:2]
