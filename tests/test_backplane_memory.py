"""MemoryBroker/MemoryBackplane keep every point of the Backplane contract (base.py)."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable

import pytest

from rtckit.backplane.base import Backplane, NodeId
from rtckit.backplane.memory import MemoryBackplane, MemoryBroker
from rtckit.errors import BackplaneError, ConfigurationError


class Recorder:
    """A BackplaneHandler noting every call."""

    def __init__(self) -> None:
        self.messages: list[tuple[NodeId, bytes]] = []
        self.down: list[NodeId] = []
        self.unreachable: list[NodeId] = []
        self.states: list[bool] = []
        self.changed = asyncio.Event()

    def on_message(self, sender: NodeId, payload: bytes) -> None:
        self.messages.append((sender, payload))
        self.changed.set()

    def on_node_down(self, node: NodeId) -> None:
        self.down.append(node)
        self.changed.set()

    def on_unreachable(self, node: NodeId) -> None:
        self.unreachable.append(node)
        self.changed.set()

    def on_state(self, up: bool) -> None:
        self.states.append(up)
        self.changed.set()


async def until(predicate: Callable[[], bool], limit: float = 5.0) -> None:
    async with asyncio.timeout(limit):
        while not predicate():  # noqa: ASYNC110 - bounded by the timeout
            await asyncio.sleep(0.005)


Pair = tuple[MemoryBroker, MemoryBackplane, MemoryBackplane]


@pytest.fixture
async def pair() -> AsyncIterator[Pair]:
    broker = MemoryBroker(node_ttl=0.3, max_queue=50)
    async with MemoryBackplane(broker, "a") as a, MemoryBackplane(broker, "b") as b:
        yield broker, a, b


async def started(pair: Pair) -> tuple[Recorder, Recorder]:
    _, a, b = pair
    ra, rb = Recorder(), Recorder()
    await a.start(ra)
    await b.start(rb)
    return ra, rb


def test_it_is_a_backplane() -> None:
    backplane: Backplane = MemoryBackplane(MemoryBroker(), "n1")
    assert backplane.node_id == "n1"
    with pytest.raises(ConfigurationError):
        MemoryBackplane(MemoryBroker(), "a:b")
    with pytest.raises(ConfigurationError):
        MemoryBroker(node_ttl=0)


async def test_posts_arrive_in_order_later_never_inside_post(pair: Pair) -> None:
    _, a, _b = pair
    _ra, rb = await started(pair)
    for i in range(40):
        a.post("b", b"%d" % i)
    assert rb.messages == []  # not delivered synchronously
    await until(lambda: len(rb.messages) == 40)
    assert rb.messages == [("a", b"%d" % i) for i in range(40)]


async def test_post_to_nobody_or_over_the_bound_is_unreachable(pair: Pair) -> None:
    _, a, _b = pair
    ra, rb = await started(pair)
    a.post("nobody", b"x")
    assert ra.unreachable == []
    await until(lambda: ra.unreachable == ["nobody"])
    for i in range(60):  # the queue holds 50
        a.post("b", b"%d" % i)
    await until(lambda: "b" in ra.unreachable)
    await until(lambda: len(rb.messages) == 50)
    assert rb.messages[-1] == ("a", b"49")


async def test_a_killed_node_is_reported_down_after_the_ttl_once(pair: Pair) -> None:
    broker, a, _b = pair
    ra, rb = await started(pair)
    loop = asyncio.get_running_loop()
    killed_at = loop.time()
    broker.kill("b")
    await until(lambda: ra.down == ["b"])
    assert loop.time() - killed_at >= 0.3 - 0.05
    assert loop.time() - killed_at < 0.3 + 1.0  # a third of the TTL, plus a loaded machine
    a.post("b", b"lost")
    await until(lambda: ra.unreachable == ["b"])
    await asyncio.sleep(0.5)
    assert ra.down == ["b"]  # once per lapse
    assert rb.messages == []


async def test_aclose_reports_down_at_once_and_releases_leases(pair: Pair) -> None:
    broker, a, b = pair
    ra, _rb = await started(pair)
    lease = await b.acquire("room:x", 10)
    assert lease.node == "b"
    await b.aclose()
    await b.aclose()  # idempotent
    await until(lambda: ra.down == ["b"], limit=0.2)
    assert await a.holder("room:x") is None
    assert broker.leases() == []


async def test_leases_epochs_ttl_and_fencing(pair: Pair) -> None:
    _, a, b = pair
    await started(pair)
    first = await a.acquire("room:a*", 0.2)
    assert (first.node, first.epoch) == ("a", 1)
    assert await b.acquire("room:a*", 0.2) == first  # held: the holder's lease, unchanged
    assert await a.renew(first, 0.2)
    assert not await b.renew(first, 0.2)  # not b's
    await asyncio.sleep(0.3)
    assert await a.holder("room:a*") is None  # expired
    assert not await a.renew(first, 0.2)
    second = await b.acquire("room:a*", 5)
    assert (second.node, second.epoch) == ("b", 2)
    assert not await a.release(first)  # compare-and-delete: an old epoch deletes nothing
    assert await b.holder("room:a*") == second
    assert await b.release(second)
    assert not await b.release(second)
    third = await a.acquire("room:a*", 5)
    assert third.epoch == 3
    assert (await a.acquire("room:a:b", 5)).epoch == 1  # keys are opaque strings


async def test_outage_refuses_posts_and_leases_and_reports_state(pair: Pair) -> None:
    broker, a, b = pair
    ra, rb = await started(pair)
    lease = await a.acquire("room:x", 10)
    broker.set_up(False)
    assert not b.up
    await until(lambda: ra.states == [False] and rb.states == [False])
    a.post("b", b"x")
    await until(lambda: ra.unreachable == ["b"])
    for call in (
        a.acquire("room:y", 1),
        a.renew(lease, 1),
        a.release(lease),
        a.holder("room:x"),
        a.live_nodes(),
    ):
        with pytest.raises(BackplaneError):
            await call
    await asyncio.sleep(0.5)  # longer than the node TTL
    broker.set_up(True)
    await until(lambda: ra.states == [False, True] and rb.states == [False, True])
    assert a.up
    await asyncio.sleep(0.4)
    assert ra.down == []  # everyone came back together: nobody lapsed
    assert rb.down == []
    a.post("b", b"after")
    await until(lambda: rb.messages == [("a", b"after")])
    assert set(await b.live_nodes()) == {"a", "b"}


async def test_load_is_published_with_liveness(pair: Pair) -> None:
    _, a, b = pair
    await started(pair)
    a.set_load(7)
    await asyncio.sleep(0.15)
    assert (await b.live_nodes())["a"] == 7.0
    a.set_load(math.inf)  # draining
    await asyncio.sleep(0.15)
    assert (await b.live_nodes())["a"] == math.inf
    with pytest.raises(ValueError, match="load"):
        a.set_load(math.nan)


async def test_public_url_is_published_with_liveness(pair: Pair) -> None:
    broker, a, b = pair
    await started(pair)
    assert await b.public_url("a") is None
    a.set_public_url("https://a.example.org:8443")
    assert await b.public_url("a") == "https://a.example.org:8443"
    assert await b.public_url("nobody") is None
    with pytest.raises(ValueError, match="public URL"):
        a.set_public_url("https://a.example.org/\n")
    broker.kill("a")
    await until(lambda: "a" not in broker._live())
    assert await b.public_url("a") is None  # not live


async def test_a_node_id_is_live_once(pair: Pair) -> None:
    broker, _a, _b = pair
    await started(pair)
    twin = MemoryBackplane(broker, "a")
    with pytest.raises(BackplaneError):
        await twin.start(Recorder())
    broker.set_up(False)
    late = MemoryBackplane(broker, "c")
    with pytest.raises(BackplaneError):
        await late.start(Recorder())


async def test_a_failing_handler_does_not_stop_delivery(pair: Pair) -> None:
    _, a, b = pair
    ra = Recorder()
    seen: list[bytes] = []

    class Failing(Recorder):
        def on_message(self, sender: NodeId, payload: bytes) -> None:
            seen.append(payload)
            raise RuntimeError("bug")

    await a.start(ra)
    await b.start(Failing())
    a.post("b", b"1")
    a.post("b", b"2")
    await until(lambda: seen == [b"1", b"2"])


async def test_one_node_cut_off(pair: Pair) -> None:
    broker, a, b = pair
    ra, rb = await started(pair)
    lease = await a.acquire("room:x", 0.4)
    broker.set_up(False, node="a")
    await until(lambda: ra.states == [False])
    assert rb.states == []
    assert not a.up
    assert b.up
    b.post("a", b"lost")
    await until(lambda: rb.unreachable == ["a"])
    with pytest.raises(BackplaneError):
        await a.renew(lease, 0.4)
    await until(lambda: rb.down == ["a"])  # its liveness lapsed for the others
    await asyncio.sleep(0.3)
    taken = await b.acquire("room:x", 5)  # its lease expired: b takes the key over
    assert (taken.node, taken.epoch) == ("b", 2)
    broker.set_up(True, node="a")
    await until(lambda: ra.states == [False, True])
    assert not await a.renew(lease, 0.4)  # fenced out
    assert await a.holder("room:x") == taken
    a.post("b", b"back")
    await until(lambda: rb.messages == [("a", b"back")])
    assert ra.down == []


async def test_an_outage_that_ends_empty(pair: Pair) -> None:
    """As a redis-server restarted without persistence: leases, epochs and liveness are
    gone; a node still cut off is reported down, and is live again once it returns."""
    broker, a, b = pair
    ra, rb = await started(pair)
    await a.acquire("room:x", 5)
    broker.set_up(False)
    broker.set_up(False, node="a")
    broker.set_up(True, empty=True)
    await until(lambda: rb.states == [False, True])
    assert broker.leases() == []
    assert await b.holder("room:x") is None
    assert await b.live_nodes() == {"b": 0.0}
    await until(lambda: rb.down == ["a"])
    taken = await b.acquire("room:x", 5)
    assert (taken.node, taken.epoch) == ("b", 1)  # the epochs were lost too
    assert ra.states == [False]
    broker.set_up(True, node="a")
    await until(lambda: ra.states == [False, True])
    assert set(await b.live_nodes()) == {"a", "b"}
