"""Every touch of aiortc's and aioice's private internals, in one place.

Each touch is a small named function whose docstring says what it relies on; each has a test
in ``tests/test_aiortc_internals.py`` that fails loudly when an aiortc upgrade moves it.
Helpers append their own section under a ``# --- <topic> ---`` header.
"""

from __future__ import annotations

from collections.abc import Callable

from aiortc import RTCRtpSender

from rtckit.errors import InternalsError

__all__ = ["on_keyframe_request"]

# --- mcu ---


def on_keyframe_request(sender: RTCRtpSender, callback: Callable[[], None]) -> None:
    """Call ``callback()`` whenever the remote side asks ``sender`` for a keyframe.

    Relies on ``RTCRtpSender._handle_rtcp_packet`` calling ``self._send_keyframe()`` when an
    RTCP PLI or FIR arrives (aiortc 1.9-1.16). On the pre-encoded packet path that call only
    sets a flag nobody reads, so the MCU wraps the method on this one instance: the original
    still runs, then ``callback``. Raises :class:`~rtckit.errors.InternalsError` if the method
    is gone.
    """
    original = getattr(sender, "_send_keyframe", None)
    if not callable(original):
        raise InternalsError("aiortc RTCRtpSender has no _send_keyframe() any more")

    def hook() -> None:
        original()
        callback()

    setattr(sender, "_send_keyframe", hook)  # noqa: B010 - instance override is the point
