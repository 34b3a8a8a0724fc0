"""A backplane handler that records what it is told, for the backplane tests."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from rtckit.backplane.base import NodeId


class Recorder:
    """A :class:`~rtckit.backplane.base.BackplaneHandler` that keeps every call."""

    def __init__(self) -> None:
        self.messages: list[tuple[NodeId, bytes]] = []
        self.down: list[NodeId] = []
        self.unreachable: list[NodeId] = []
        self.states: list[bool] = []
        self.down_at: dict[NodeId, float] = {}

    def on_message(self, sender: NodeId, payload: bytes) -> None:
        self.messages.append((sender, payload))

    def on_node_down(self, node: NodeId) -> None:
        self.down.append(node)
        self.down_at[node] = asyncio.get_running_loop().time()

    def on_unreachable(self, node: NodeId) -> None:
        self.unreachable.append(node)

    def on_state(self, up: bool) -> None:
        self.states.append(up)


async def wait_for(condition: Callable[[], bool], seconds: float, what: str) -> None:
    """Poll *condition* until it holds; fail with *what* after *seconds*."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        if loop.time() > deadline:
            raise AssertionError(f"not within {seconds} s: {what}")
        await asyncio.sleep(0.02)
