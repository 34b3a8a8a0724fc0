"""Encoded frames of a receiver, before aiortc's decoder (recording without transcoding).

aiortc's ``RTCRtpReceiver`` reassembles each encoded frame in its jitter buffer and always
hands it to a decoder thread (see :mod:`rtckit._aiortc.sfu`); there is no public way to read
the encoded frame. :func:`tap_encoded_frames` relies on:

* ``RTCRtpReceiver.__decoder_queue`` (name-mangled ``_RTCRtpReceiver__decoder_queue``): a
  :class:`queue.Queue` created in ``__init__``, into which ``_handle_rtp_packet`` puts
  ``(codec, JitterFrame)`` for each reassembled frame (``JitterFrame.data`` the depayloaded
  frame, ``.timestamp`` its RTP timestamp re-based to start at 0), and ``stop()`` puts
  ``None``; ``receive()`` hands that queue object to the decoder thread it starts, so the
  queue must be replaced before ``receive()`` runs;
* ``RTCRtpReceiver.__decoder_thread`` (``_RTCRtpReceiver__decoder_thread``): ``None`` until
  ``receive()``.
"""

from __future__ import annotations

import queue
from collections.abc import Callable
from typing import Any

from aiortc import RTCRtpCodecParameters, RTCRtpReceiver

from rtckit._aiortc.versions import get_internal, missing_internal

__all__ = ["EncodedFrameCallback", "tap_encoded_frames"]

#: ``callback(codec, data, timestamp)``: one reassembled encoded frame (called in the event
#: loop's thread, from aiortc's RTP handling: it must not block).
EncodedFrameCallback = Callable[[RTCRtpCodecParameters, bytes, int], None]


class _TapQueue(queue.Queue[Any]):
    def __init__(self, callback: EncodedFrameCallback, *, decode: bool) -> None:
        super().__init__()
        self.callback = callback
        self.decode = decode

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        if item is not None:
            codec, frame = item
            self.callback(codec, bytes(frame.data), int(frame.timestamp))
            if not self.decode:
                return
        super().put(item, block, timeout)


def tap_encoded_frames(
    receiver: RTCRtpReceiver, callback: EncodedFrameCallback, *, decode: bool = True
) -> None:
    """Call *callback* with each encoded frame *receiver* reassembles, before decoding.

    With *decode* False the frames are not decoded at all (the decoder thread idles, the
    receiver's track yields no frame until it ends): a recorder or a frame counter that needs
    no pixels costs no decoding. Call it before the receiver starts (before the remote
    description that starts it is applied); raises :class:`~rtckit.errors.InternalsError` if
    aiortc moved the queue, :class:`RuntimeError` if the receiver already started.
    """
    name = "_RTCRtpReceiver__decoder_queue"
    current = get_internal(receiver, name)
    if not isinstance(current, queue.Queue):
        raise missing_internal(f"RTCRtpReceiver.__decoder_queue is a {type(current).__name__}")
    if get_internal(receiver, "_RTCRtpReceiver__decoder_thread") is not None:
        raise RuntimeError("tap_encoded_frames must be called before the receiver starts")
    setattr(receiver, name, _TapQueue(callback, decode=decode))
