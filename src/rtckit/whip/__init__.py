"""WHIP (RFC 9725) ingest into rtckit rooms and WHEP egress from them:
:mod:`rtckit.whip.protocol` is the protocol core (no I/O), :mod:`rtckit.whip.server` the WHIP
endpoints and :mod:`rtckit.whip.whep` the WHEP endpoints, on aiohttp (see :doc:`/howto/whip`
and :doc:`/howto/whep`)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rtckit._lazy import lazy_exports

if TYPE_CHECKING:
    from rtckit.whip.protocol import WhepConfig, WhipConfig
    from rtckit.whip.server import WhipEndpoint, WhipSession
    from rtckit.whip.whep import WhepEndpoint, WhepSession

__all__ = [
    "WhepConfig",
    "WhepEndpoint",
    "WhepSession",
    "WhipConfig",
    "WhipEndpoint",
    "WhipSession",
]

if not TYPE_CHECKING:
    __getattr__, __dir__ = lazy_exports(
        __name__,
        {
            "rtckit.whip.protocol": ["WhepConfig", "WhipConfig"],
            "rtckit.whip.server": ["WhipEndpoint", "WhipSession"],
            "rtckit.whip.whep": ["WhepEndpoint", "WhepSession"],
        },
    )
