"""The session journal on a real redis-server (RedisJournal): the same journal as the
in-memory model for the records a state machine writes, fencing, expiry, orphans."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest
import redis.asyncio as aioredis

from backplanes import Recorder
from rtckit.backplane.base import Lease
from rtckit.backplane.journal import Record, RoomSnapshot, SessionSnapshot
from rtckit.backplane.redis import RedisBackplane, RedisBackplaneConfig
from rtckit.errors import BackplaneError
from rtckit.signaling.protocol import Ack, AppMessage, Bye
from rtckit.testing.redisserver import RedisServer
from test_signaling_journal import Journaled

pytestmark = pytest.mark.integration


@contextlib.asynccontextmanager
async def _node(server: RedisServer, node_id: str) -> AsyncIterator[RedisBackplane]:
    config = RedisBackplaneConfig(url=server.url, node_id=node_id)
    async with RedisBackplane(config) as backplane:
        await backplane.start(Recorder())
        yield backplane


def _sessions(snapshot: RoomSnapshot | None) -> list[SessionSnapshot]:
    assert snapshot is not None
    return sorted(snapshot.sessions, key=lambda session: session.peer_id)


def _room_records(h: Journaled, room: str) -> list[Record]:
    return [record for record in h.records if record.room == room]


@pytest.mark.parametrize("room", ["r", "a*", "a:b", "é {x}"])
async def test_redis_holds_what_the_model_holds(redis_server: RedisServer, room: str) -> None:
    h = Journaled(max_pending=1000)
    a, wa = h.join(room)
    b, wb = h.join(room)
    c, _ = h.join(room)
    for i in range(1, 30):
        h.send(a, AppMessage(to=wb.peer_id, payload={"i": i, "t": 'ü\n"'}, seq=i))
        if i % 7 == 0:
            h.send(b, Ack(ack=i))
    h.send(c, Bye())
    async with _node(redis_server, "a") as node:
        journal = node.journal(30.0)
        lease = await node.acquire(f"room:{room}", 10.0)
        records = _room_records(h, room)
        # in several writes, as a busy home would
        for start in range(0, len(records), 17):
            assert await journal.write([(room, lease, records[start : start + 17])]) == set()
        expected = h.journals[room].snapshot()
        assert expected is not None
        assert _sessions(await journal.load(room)) == _sessions(expected)
        # written whole again (after an outage): the same journal
        assert await journal.replace(room, lease, expected)
        assert _sessions(await journal.load(room)) == _sessions(expected)
        assert await journal.orphans(10) == []
        # the last session leaves: nothing of the room is left in Redis
        for peer in (wa.peer_id, wb.peer_id):
            await journal.write([(room, lease, [Record("L", room, peer)])])
        assert await journal.load(room) is None
        client = aioredis.Redis.from_url(redis_server.url)
        try:
            assert await client.keys("rtckit:journal*") == []
        finally:
            await client.aclose()


async def test_fencing_expiry_and_orphans(redis_server: RedisServer) -> None:
    h = Journaled()
    h.join("f")
    h.join("f")
    async with _node(redis_server, "a") as a, _node(redis_server, "b") as b:
        ja, jb = a.journal(0.5), b.journal(30.0)
        lease = await a.acquire("room:f", 0.4)
        assert await ja.write([("f", lease, _room_records(h, "f"))]) == set()
        await asyncio.sleep(0.6)  # a's lease lapses; the journal outlives it (refreshed)
        assert await jb.orphans(10) == []  # expired with its TTL (0.5 s): no orphan left
        assert await jb.load("f") is None
        lease = await a.acquire("room:f", 0.4)
        assert await ja.write([("f", lease, _room_records(h, "f"))]) == set()
        assert await ja.refresh("f", lease, 30.0)
        await asyncio.sleep(0.5)  # the lease lapses, the journal stays: an orphan
        assert await jb.orphans(10) == ["f"]
        taken = await b.acquire("room:f", 10.0)
        assert taken.node == "b"
        assert await jb.orphans(10) == []
        # the former home is fenced out: nothing of its write is applied
        stale = Record("O", "f", h.records[0].peer, (99, "x", "app", None, None))
        assert await ja.write([("f", lease, [stale])]) == {"f"}
        assert not await ja.refresh("f", lease, 30.0)
        assert not await ja.replace("f", lease, None)
        snapshot = await jb.load("f")
        assert snapshot is not None
        assert len(snapshot.sessions) == 2
        # a record out of order is refused by Redis (a bug, reported as an error)
        with pytest.raises(BackplaneError, match="seq 99 after"):
            await jb.write([("f", taken, [stale])])
        # all or nothing: a good record before a bad one is not applied either
        peer = h.records[0].peer
        good = Record("I", "f", peer, (7,))
        with pytest.raises(BackplaneError, match="a session it lacks"):
            await jb.write([("f", taken, [good, Record("A", "f", "nobody", (1,))])])
        kept = await jb.load("f")
        assert kept is not None
        assert {s.peer_id: s.in_seq for s in kept.sessions}[peer] == 0
        other = Lease(key="room:f", node="b", epoch=taken.epoch + 1)
        assert await jb.write([("f", other, [stale])]) == {"f"}
