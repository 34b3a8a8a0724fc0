"""rtckit's STUN server answers coturn's own STUN client (the rest of the server's tests are in
tests/test_stunserver.py, whose ``server`` fixture this module shares)."""

from __future__ import annotations

import asyncio

from rtckit.stun.server import StunServer
from rtckit.testing import require_executable
from test_stunserver import server as server


async def test_coturn_stunclient(server: StunServer) -> None:
    """coturn's turnutils_stunclient (UDP) reads the reflexive address."""
    client = require_executable("turnutils_stunclient", hint="apt-get install coturn")
    host, port = server.udp_addresses[0]
    process = await asyncio.create_subprocess_exec(
        client,
        "-p",
        str(port),
        host,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        async with asyncio.timeout(20):
            output, _ = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    assert "UDP reflexive addr: 127.0.0.1:" in text, text
    assert server.stats.success_responses >= 1
    assert server.stats.malformed == 0
