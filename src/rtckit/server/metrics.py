"""Prometheus metrics of an rtckit server (needs the ``metrics`` extra: prometheus-client).

Every server owns its own :class:`Metrics` (its own registry), so two servers in one process,
as in tests, never share counters.
"""

from __future__ import annotations

from collections.abc import Callable

from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["Metrics"]


class Metrics:
    """The server's metrics, and an aiohttp handler that exposes them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.rooms = Gauge("rtckit_rooms", "Rooms with at least one peer.", registry=self.registry)
        self.peers = Gauge(
            "rtckit_peers",
            "Connected peers, by room topology.",
            ["topology"],
            registry=self.registry,
        )
        self.messages = Counter(
            "rtckit_signaling_messages",
            "Signaling messages received, by type.",
            ["type"],
            registry=self.registry,
        )
        self.errors = Counter(
            "rtckit_errors",
            "Errors sent to peers, by error code.",
            ["code"],
            registry=self.registry,
        )
        self.forwarded_packets = Counter(
            "rtckit_forwarded_packets",
            "RTP packets forwarded by SFU rooms.",
            registry=self.registry,
        )
        self.connections = Counter(
            "rtckit_connections", "Signaling connections accepted.", registry=self.registry
        )

    def track_backplane(self, is_up: Callable[[], bool]) -> None:
        """Export ``rtckit_backplane_up`` (1 while *is_up*; read at each scrape): a node of
        a cluster reports whether it reaches the backplane (Redis)."""
        gauge = Gauge(
            "rtckit_backplane_up",
            "1 while this node reaches the cluster backplane (Redis), else 0.",
            registry=self.registry,
        )
        gauge.set_function(lambda: 1.0 if is_up() else 0.0)

    def render(self) -> bytes:
        """The metrics in Prometheus' text exposition format."""
        return generate_latest(self.registry)

    async def handle(self, request: web.Request) -> web.Response:
        """aiohttp handler for the metrics endpoint."""
        del request
        response = web.Response(body=self.render())
        response.content_type = CONTENT_TYPE_LATEST.split(";")[0]
        response.charset = "utf-8"
        return response
