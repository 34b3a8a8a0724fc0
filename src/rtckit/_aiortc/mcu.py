"""MCU: keyframe requests from the receivers of the mixed streams."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from aiortc import (
    RTCRtpSender,
)

from rtckit.errors import InternalsError

if TYPE_CHECKING:
    pass

if TYPE_CHECKING:
    pass


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
