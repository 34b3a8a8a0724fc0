"""Deprecated alias of :mod:`rtckit.ice.candidates`."""

from __future__ import annotations

from rtckit._moved import moved_names, same_names

__all__ = [
    "METADATA_ADDRESSES",
    "CandidatePolicy",
    "IceCandidate",
    "filter_sdp_candidates",
    "parse_candidate",
]

__getattr__ = moved_names(__name__, same_names("rtckit.ice.candidates", __all__))
