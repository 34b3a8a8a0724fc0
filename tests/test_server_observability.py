"""Metrics endpoint and structured logs of the rtckit server."""

from __future__ import annotations

import io
import json
import logging

from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from rtckit.server.logs import configure_logging
from rtckit.server.metrics import Metrics


async def test_metrics_endpoint_exposes_counters() -> None:
    metrics = Metrics()
    metrics.peers.labels(topology="sfu").inc(3)
    metrics.messages.labels(type="offer").inc()
    metrics.forwarded_packets.inc(42)
    app = web.Application()
    app.router.add_get("/metrics", metrics.handle)
    async with TestClient(TestServer(app)) as client:
        response = await client.get("/metrics")
        assert response.status == 200
        assert response.content_type == "text/plain"
        body = await response.text()
    assert 'rtckit_peers{topology="sfu"} 3.0' in body
    assert 'rtckit_signaling_messages_total{type="offer"} 1.0' in body
    assert "rtckit_forwarded_packets_total 42.0" in body


def test_two_servers_do_not_share_metrics() -> None:
    first, second = Metrics(), Metrics()
    first.connections.inc()
    assert b"rtckit_connections_total 1.0" in first.render()
    assert b"rtckit_connections_total 0.0" in second.render()


def test_json_logs_carry_extra_fields() -> None:
    stream = io.StringIO()
    handler = configure_logging("debug", "json", stream)
    try:
        logging.getLogger("rtckit.test").info("peer %s joined", "p1", extra={"room": "lobby"})
    finally:
        logging.getLogger("rtckit").removeHandler(handler)
    entry = json.loads(stream.getvalue())
    assert entry["message"] == "peer p1 joined"
    assert entry["room"] == "lobby"
    assert entry["level"] == "info"
    assert entry["logger"] == "rtckit.test"


def test_text_logs() -> None:
    stream = io.StringIO()
    handler = configure_logging("warning", "text", stream)
    try:
        logging.getLogger("rtckit.test").info("hidden")
        logging.getLogger("rtckit.test").warning("shown")
    finally:
        logging.getLogger("rtckit").removeHandler(handler)
    assert "hidden" not in stream.getvalue()
    assert "WARNING rtckit.test: shown" in stream.getvalue()
