"""STUN (:rfc:`8489`): a pure codec and responder, and the server that puts it on sockets.

* :mod:`~rtckit.stun.codec` -- messages, attributes, the request handler, rate limits
  (pure, no I/O);
* :mod:`~rtckit.stun.server` -- :class:`~rtckit.stun.server.StunServer` on UDP and TCP
  sockets, and the :func:`~rtckit.stun.server.stun_binding` client.

The codec's names are importable from ``rtckit.stun`` too.
"""

from __future__ import annotations

from rtckit.stun.codec import (
    DEFAULT_SOFTWARE,
    FINGERPRINT_XOR,
    HEADER_LENGTH,
    MAGIC_COOKIE,
    Attribute,
    AttributeType,
    MessageClass,
    Method,
    RateLimit,
    SourceRateLimiter,
    StunMessage,
    StunStats,
    TransportAddress,
    binding_request,
    decode_address,
    decode_error_code,
    decode_text,
    decode_unknown_attributes,
    decode_xor_address,
    encode_address,
    encode_error_code,
    encode_text,
    encode_unknown_attributes,
    encode_xor_address,
    format_transport_address,
    handle_request,
    is_stun_header,
    message_length,
    message_type,
    new_transaction_id,
    parse_message,
    serialize_message,
    source_key,
    verify_message_integrity,
)

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
