"""A Redis backplane node in a process of its own, for tests that kill or pause it.

``python backplane_node.py URL NODE_ID NODE_TTL`` prints ``ready`` once registered, then one
line per handler call (``message SENDER PAYLOAD``, ``down NODE``, ``unreachable NODE``,
``state up|down``), and runs until killed.
"""

from __future__ import annotations

import asyncio
import sys

from rtckit.backplane.base import NodeId
from rtckit.backplane.redis import RedisBackplane, RedisBackplaneConfig


def _say(line: str) -> None:
    print(line, flush=True)


class _Printer:
    def on_message(self, sender: NodeId, payload: bytes) -> None:
        _say(f"message {sender} {payload.decode()}")

    def on_node_down(self, node: NodeId) -> None:
        _say(f"down {node}")

    def on_unreachable(self, node: NodeId) -> None:
        _say(f"unreachable {node}")

    def on_state(self, up: bool) -> None:
        _say(f"state {'up' if up else 'down'}")


async def main(url: str, node_id: str, node_ttl: float) -> None:
    config = RedisBackplaneConfig(url=url, node_id=node_id, node_ttl=node_ttl)
    async with RedisBackplane(config) as backplane:
        await backplane.start(_Printer())
        _say("ready")
        await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], float(sys.argv[3])))
