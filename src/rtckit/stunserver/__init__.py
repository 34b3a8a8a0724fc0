"""Deprecated: the names of ``rtckit.stunserver`` moved to :mod:`rtckit.stun.server`.

Each old name still imports from here, with a :class:`DeprecationWarning` that names its new
path.
"""

from __future__ import annotations

from rtckit._deprecated import renamed
from rtckit.stun import server as _stun_server

__all__: list[str] = []

__getattr__ = renamed(
    __name__,
    {
        "DEFAULT_PORT": ("rtckit.stun.server.DEFAULT_PORT", _stun_server.DEFAULT_PORT),
        "SocketFactory": ("rtckit.stun.server.SocketFactory", _stun_server.SocketFactory),
        "stun_binding": ("rtckit.stun.server.stun_binding", _stun_server.stun_binding),
        "StunServer": ("rtckit.stun.server.StunServer", _stun_server.StunServer),
        "StunServerConfig": ("rtckit.stun.server.StunServerConfig", _stun_server.StunServerConfig),
    },
)
