"""Simulcast: the RID header extensions in aiortc's negotiation.

aiortc 1.14-1.16 negotiates only the RTP header extensions listed in the module global
``aiortc.codecs.HEADER_EXTENSIONS`` (``RTCPeerConnection.setRemoteDescription`` keeps the
remote extensions found there, ``createOffer`` offers them): for video, ``sdes:mid`` and
``abs-send-time``. Its RTP parser (``aiortc.rtp.HeaderExtensionsMap``) does read
``rtp-stream-id`` and ``repaired-rtp-stream-id`` once they are negotiated, but they never are,
so a simulcast layer cannot be told apart by its RID, and an answer never names them (a
browser then cannot send simulcast). :func:`negotiate_rid_extensions` appends both to the
video list, once per process: every aiortc connection of the process then offers and accepts
them. aiortc itself never writes them, and a browser sends them only on simulcast m-lines
(which need ``a=simulcast`` lines that aiortc never writes either: see
:mod:`rtckit.peer.simulcast`).

Relies on ``aiortc.codecs.HEADER_EXTENSIONS`` being the very dict that
``aiortc.rtcpeerconnection`` reads at each negotiation (imported by name, mutated in place).
"""

from __future__ import annotations

from typing import Final

import aiortc.codecs
import aiortc.rtcpeerconnection
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters

from rtckit._aiortc.versions import missing_internal

__all__ = ["RID_EXTENSION_URIS", "negotiate_rid_extensions"]

#: RFC 8852's ``rtp-stream-id`` and ``repaired-rtp-stream-id``, with the ids aiortc's own
#: offers give them (Chrome's numbers; an offer made after a negotiation renumbers them to
#: the session's, see :func:`rtckit._aiortc.create_stable_offer`)
RID_EXTENSION_URIS: Final = {
    "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id": 10,
    "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id": 11,
}


def negotiate_rid_extensions() -> None:
    """Make aiortc negotiate the RID header extensions on video m-lines (idempotent)."""
    table = getattr(aiortc.codecs, "HEADER_EXTENSIONS", None)
    read = getattr(aiortc.rtcpeerconnection, "HEADER_EXTENSIONS", None)
    if read is not table or not isinstance(table, dict) or not isinstance(table.get("video"), list):
        raise missing_internal("the negotiated header extensions (aiortc.codecs.HEADER_EXTENSIONS)")
    video: list[RTCRtpHeaderExtensionParameters] = table["video"]
    known = {extension.uri for extension in video}
    used = {extension.id for extension in video}
    for uri, x_id in RID_EXTENSION_URIS.items():
        if uri not in known and x_id not in used:
            video.append(RTCRtpHeaderExtensionParameters(id=x_id, uri=uri))
