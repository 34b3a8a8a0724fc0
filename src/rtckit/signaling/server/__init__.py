"""Deprecated: ``rtckit.signaling.server`` is now :mod:`rtckit.signaling.wsserver`.

Each old name still imports from here, with a :class:`DeprecationWarning` that names its new
path.
"""

from __future__ import annotations

from rtckit._deprecated import renamed
from rtckit.signaling import wsserver as _signaling_wsserver

__all__: list[str] = []

__getattr__ = renamed(
    __name__,
    {
        "CLIENT_SCRIPT": (
            "rtckit.signaling.wsserver.CLIENT_SCRIPT",
            _signaling_wsserver.CLIENT_SCRIPT,
        ),
        "client_modules": (
            "rtckit.signaling.wsserver.client_modules",
            _signaling_wsserver.client_modules,
        ),
        "client_script": (
            "rtckit.signaling.wsserver.client_script",
            _signaling_wsserver.client_script,
        ),
        "SignalingServer": (
            "rtckit.signaling.wsserver.SignalingServer",
            _signaling_wsserver.SignalingServer,
        ),
    },
)
