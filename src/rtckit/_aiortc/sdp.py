"""aiortc's SDP parser, ``aiortc.sdp``: a module aiortc uses internally and does not document.

rtckit reads offers and answers with it (media sections, codecs, candidates) instead of
keeping a parser of its own. ``tests/test_aiortc_internals.py`` checks the two names.
"""

from __future__ import annotations

from aiortc.sdp import SessionDescription as SdpDescription
from aiortc.sdp import candidate_from_sdp

__all__ = ["SdpDescription", "candidate_from_sdp"]
