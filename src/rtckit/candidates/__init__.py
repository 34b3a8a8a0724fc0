"""Deprecated: the names of ``rtckit.candidates`` moved to :mod:`rtckit.ice.candidates`.

Each old name still imports from here, with a :class:`DeprecationWarning` that names its new
path.
"""

from __future__ import annotations

from rtckit._deprecated import renamed
from rtckit.ice import candidates as _ice_candidates

__all__: list[str] = []

__getattr__ = renamed(
    __name__,
    {
        "CandidatePolicy": (
            "rtckit.ice.candidates.CandidatePolicy",
            _ice_candidates.CandidatePolicy,
        ),
        "filter_sdp_candidates": (
            "rtckit.ice.candidates.filter_sdp_candidates",
            _ice_candidates.filter_sdp_candidates,
        ),
        "IceCandidate": ("rtckit.ice.candidates.IceCandidate", _ice_candidates.IceCandidate),
        "METADATA_ADDRESSES": (
            "rtckit.ice.candidates.METADATA_ADDRESSES",
            _ice_candidates.METADATA_ADDRESSES,
        ),
        "parse_candidate": (
            "rtckit.ice.candidates.parse_candidate",
            _ice_candidates.parse_candidate,
        ),
    },
)
