"""WHIP (RFC 9725) ingest into rtckit rooms and WHEP egress from them:
:mod:`rtckit.whip.protocol` is the protocol core (no I/O), :mod:`rtckit.whip.server` the WHIP
endpoints and :mod:`rtckit.whip.whep` the WHEP endpoints, on aiohttp (see :doc:`/howto/whip`
and :doc:`/howto/whep`); :mod:`rtckit.whip.client` the WHIP and WHEP clients,
:mod:`rtckit.whip.recording` their recorder that does not transcode."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rtckit._lazy import lazy_exports

if TYPE_CHECKING:
    from rtckit.whip.client import WhepClient, WhipClient, WhipClientConfig
    from rtckit.whip.protocol import WhepConfig, WhipConfig
    from rtckit.whip.recording import EncodedRecorder
    from rtckit.whip.server import WhipEndpoint, WhipSession
    from rtckit.whip.whep import WhepEndpoint, WhepSession

__all__ = [
    "EncodedRecorder",
    "WhepClient",
    "WhepConfig",
    "WhepEndpoint",
    "WhepSession",
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
            "rtckit.whip.protocol": ["WhepConfig", "WhipConfig"],
            "rtckit.whip.recording": ["EncodedRecorder"],
            "rtckit.whip.server": ["WhipEndpoint", "WhipSession"],
            "rtckit.whip.whep": ["WhepEndpoint", "WhepSession"],
        },
    )
