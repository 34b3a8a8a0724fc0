"""The only package of rtckit that touches aiortc's and aioice's private internals.

Everything here relies on names that aiortc/aioice do not promise to keep (underscore
attributes, undocumented submodules, name-mangled fields). Each touch is one small function
whose docstring says exactly what it relies on, and ``tests/test_aiortc_internals.py`` has a
test per function that fails loudly when an upgrade moves it. Undocumented but public aiortc
modules (``aiortc.sdp``) are reached through here too.

Supported versions: ``aiortc>=1.14,<1.17`` and ``aioice>=0.10,<0.14``.
:func:`check_versions` raises :class:`~rtckit.errors.InternalsError` outside that range.

One module per area, each listing the internals it relies on:

* :mod:`~rtckit._aiortc.versions` -- the supported versions and the error for a moved internal;
* :mod:`~rtckit._aiortc.ice` -- aioice connections, the relay policy, STUN errors and timeouts;
* :mod:`~rtckit._aiortc.peer` -- rollback, bundling, restart, nominated pair, stable re-offers,
  trickled candidates;
* :mod:`~rtckit._aiortc.sfu` -- forwarding RTP without decoding;
* :mod:`~rtckit._aiortc.mcu` -- keyframe requests;
* :mod:`~rtckit._aiortc.media` -- encoded frames of a receiver before its decoder;
* :mod:`~rtckit._aiortc.rtp_routing` -- RTP routing by SSRC, MID and RID, RTX SSRCs;
* :mod:`~rtckit._aiortc.dtls` -- DTLS ciphers for peers with an RSA certificate;
* :mod:`~rtckit._aiortc.srtp` -- SRTP for RTP packets over 1356 bytes (other stacks' MTU);
* :mod:`~rtckit._aiortc.receive` -- no datagram from a stranger ends a DTLS receive loop;
* :mod:`~rtckit._aiortc.transports` -- hooks on every DTLS transport of a connection;
* :mod:`~rtckit._aiortc.sdp` -- aiortc's undocumented SDP parser;
* :mod:`~rtckit._aiortc.simulcast` -- the RID header extensions in the negotiation.

This package imports nothing else of rtckit but :mod:`rtckit.errors`: callers turn what it
returns into their own types.
"""

from __future__ import annotations

from rtckit._aiortc.dtls import DTLS_CIPHERS, widen_dtls_ciphers
from rtckit._aiortc.ice import (
    allocate_turn,
    force_relay_policy,
    ice_connection,
    is_stun_timeout,
    nominated_pairs,
    set_stun_retransmissions,
    stun_error,
    stun_transaction_timeout,
    turn_endpoint,
)
from rtckit._aiortc.mcu import on_keyframe_request
from rtckit._aiortc.media import EncodedFrameCallback, tap_encoded_frames
from rtckit._aiortc.peer import (
    add_trickled_candidate,
    bound_gathering,
    create_stable_offer,
    ice_transports,
    mark_sctp_bundled,
    resume_connect,
    rollback_local_offer,
    selected_pair,
    settle_unoffered_transceivers,
)
from rtckit._aiortc.receive import dropped_datagrams, guard_receive, guard_transport_receive
from rtckit._aiortc.rtp_routing import (
    RtpRouting,
    install_rtp_routing,
    install_rtp_routing_on_transport,
)
from rtckit._aiortc.sdp import SdpDescription, candidate_from_sdp
from rtckit._aiortc.sfu import (
    AIORTC_JITTER_SKIP,
    CodecCounters,
    sfu_codec_counters,
    sfu_fast_rtp_sender,
    sfu_install_rtp_tap,
    sfu_intercept_rtcp,
    sfu_negotiated_codecs,
    sfu_negotiated_header_extensions,
    sfu_receiver_decoding,
    sfu_release_receiver,
    sfu_send_function,
    sfu_sender_encoding,
    sfu_sender_ssrcs,
    sfu_silence_sender_reports,
    sfu_take_over_receiver,
    sfu_uninstall_rtp_tap,
    sfu_watch_codecs,
)
from rtckit._aiortc.simulcast import RID_EXTENSION_URIS, negotiate_rid_extensions
from rtckit._aiortc.srtp import SRTP_BUFFER_BYTES, widen_srtp, widen_transport_srtp
from rtckit._aiortc.versions import SUPPORTED_AIOICE, SUPPORTED_AIORTC, check_versions

__all__ = [
    "AIORTC_JITTER_SKIP",
    "DTLS_CIPHERS",
    "RID_EXTENSION_URIS",
    "SRTP_BUFFER_BYTES",
    "SUPPORTED_AIOICE",
    "SUPPORTED_AIORTC",
    "CodecCounters",
    "EncodedFrameCallback",
    "RtpRouting",
    "SdpDescription",
    "add_trickled_candidate",
    "allocate_turn",
    "bound_gathering",
    "candidate_from_sdp",
    "check_versions",
    "create_stable_offer",
    "dropped_datagrams",
    "force_relay_policy",
    "guard_receive",
    "guard_transport_receive",
    "ice_connection",
    "ice_transports",
    "install_rtp_routing",
    "install_rtp_routing_on_transport",
    "is_stun_timeout",
    "mark_sctp_bundled",
    "negotiate_rid_extensions",
    "nominated_pairs",
    "on_keyframe_request",
    "resume_connect",
    "rollback_local_offer",
    "selected_pair",
    "set_stun_retransmissions",
    "settle_unoffered_transceivers",
    "sfu_codec_counters",
    "sfu_fast_rtp_sender",
    "sfu_install_rtp_tap",
    "sfu_intercept_rtcp",
    "sfu_negotiated_codecs",
    "sfu_negotiated_header_extensions",
    "sfu_receiver_decoding",
    "sfu_release_receiver",
    "sfu_send_function",
    "sfu_sender_encoding",
    "sfu_sender_ssrcs",
    "sfu_silence_sender_reports",
    "sfu_take_over_receiver",
    "sfu_uninstall_rtp_tap",
    "sfu_watch_codecs",
    "stun_error",
    "stun_transaction_timeout",
    "tap_encoded_frames",
    "turn_endpoint",
    "widen_dtls_ciphers",
    "widen_srtp",
    "widen_transport_srtp",
]
