"""WHIP (RFC 9725) ingest into rtckit rooms: :mod:`rtckit.whip.protocol` is the protocol core
(no I/O), :mod:`rtckit.whip.server` its aiohttp endpoints (see :doc:`/howto/whip`);
:mod:`rtckit.whip.client` the WHIP and WHEP clients, :mod:`rtckit.whip.recording` their
recorder that does not transcode."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rtckit._lazy import lazy_exports

if TYPE_CHECKING:
    from rtckit.whip.client import WhepClient, WhipClient, WhipClientConfig
    from rtckit.whip.protocol import WhipConfig
    from rtckit.whip.recording import EncodedRecorder
    from rtckit.whip.server import WhipEndpoint, WhipSession

__all__ = [
    "EncodedRecorder",
    "WhepClient",
    "WhipClient",
    "WhipClientConfig",
    "WhipConfig",
    "WhipEndpoint",
    "WhipSession",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "rtckit.whip.client": ["WhepClient", "WhipClient", "WhipClientConfig"],
            "rtckit.whip.protocol": ["WhipConfig"],
            "rtckit.whip.recording": ["EncodedRecorder"],
            "rtckit.whip.server": ["WhipEndpoint", "WhipSession"],
        },
    )
