"""The browser origin check every signaling server applies to a WebSocket upgrade (pure)."""

from __future__ import annotations

from yarl import URL

from rtckit.signaling.config import SignalingConfig

__all__ = ["origin_allowed"]


def origin_allowed(config: SignalingConfig, origin: str | None, host: str) -> bool:
    """Whether a request with the ``Origin`` header *origin* (``None``: absent, not a browser)
    and the ``Host`` header *host* may open a WebSocket under *config*'s
    :attr:`~rtckit.signaling.config.SignalingConfig.allowed_origins`: listed, ``"*"``, or
    (with an empty list) the origin's authority is the server's own ``Host``."""
    if origin is None:
        return True  # not a browser
    allowed = config.allowed_origins
    if "*" in allowed or origin in allowed:
        return True
    if allowed:
        return False
    try:
        parsed = URL(origin)
    except ValueError:
        return False
    return parsed.host is not None and parsed.raw_authority == host
