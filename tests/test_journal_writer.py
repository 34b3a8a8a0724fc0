"""JournalWriter: sends wait for their records, acknowledgements do not, a room closed while
its records are being written loses its waiting sends, an unreachable store lets rooms go on."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from rtckit.backplane.base import Lease
from rtckit.backplane.journal import Record, RoomSnapshot
from rtckit.backplane.memory import MemoryBackplane, MemoryBroker, MemoryJournal
from rtckit.errors import BackplaneError
from rtckit.signaling import OpenAuth, SignalingConfig
from rtckit.signaling.hub import SignalingHub
from rtckit.signaling.journal_writer import LAZY_DELAY, JournalWriter
from rtckit.signaling.protocol import Ack, AppMessage, Hello, Join, decode


class Wire:
    """A connection as the hub sees it: what was sent to it."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.closed: tuple[int, str] | None = None

    def send_text(self, text: str) -> None:
        self.sent.append(text)

    def close(self, code: int, reason: str) -> None:
        self.closed = (code, reason)

    def ping(self) -> None:
        pass


class GatedJournal:
    """A MemoryJournal whose writes wait for *gate* (a slow store), or fail (*down*)."""

    def __init__(self, journal: MemoryJournal) -> None:
        self.journal = journal
        self.gate = asyncio.Event()
        self.gate.set()
        self.down = False
        self.writes: list[list[Record]] = []

    async def write(self, batches: Sequence[tuple[str, Lease, Sequence[Record]]]) -> set[str]:
        await self.gate.wait()
        if self.down:
            raise BackplaneError("down")
        self.writes.append([record for _room, _lease, records in batches for record in records])
        return await self.journal.write(batches)

    async def load(self, room: str) -> RoomSnapshot | None:
        return await self.journal.load(room)

    async def refresh(self, room: str, lease: Lease, ttl: float) -> bool:
        return await self.journal.refresh(room, lease, ttl)

    async def replace(self, room: str, lease: Lease, snapshot: RoomSnapshot | None) -> bool:
        return await self.journal.replace(room, lease, snapshot)

    async def orphans(self, limit: int) -> list[str]:
        return await self.journal.orphans(limit)


async def _setup() -> tuple[SignalingHub, JournalWriter, GatedJournal, dict[str, Lease]]:
    broker = MemoryBroker()
    backplane = MemoryBackplane(broker, "a")

    class Handler:
        def on_message(self, sender: str, payload: bytes) -> None: ...
        def on_node_down(self, node: str) -> None: ...
        def on_unreachable(self, node: str) -> None: ...
        def on_state(self, up: bool) -> None: ...

    await backplane.start(Handler())
    leases = {"r": await backplane.acquire("room:r", 30.0)}
    hub = SignalingHub(SignalingConfig(auth=OpenAuth()))
    hub.state.journal = True
    store = GatedJournal(backplane.journal())
    writer = JournalWriter(
        hub,
        store,
        lease_of=leases.get,
        available=lambda: not store.down,
        on_fenced=lambda _room: None,
        timeout=1.0,
    )
    await hub.start()
    writer.start()
    return hub, writer, store, leases


def _join(hub: SignalingHub) -> tuple[int, Wire]:
    wire = Wire()
    conn = hub.open(wire)
    hub.feed_message(conn, Hello())
    hub.feed_message(conn, Join(room="r"))
    return conn, wire


def _apps(wire: Wire) -> list[object]:
    return [m.payload for m in map(decode, wire.sent) if isinstance(m, AppMessage)]


async def test_sends_wait_for_their_records_and_acks_do_not() -> None:
    hub, writer, store, _leases = await _setup()
    a, _wire_a = _join(hub)
    b, wire_b = _join(hub)
    await writer.flush()
    peer_b = hub.state.peers("r")[1].id
    store.gate.clear()  # the store is slow
    hub.feed_message(a, AppMessage(to=peer_b, payload=1, seq=1))
    await asyncio.sleep(0.05)
    assert _apps(wire_b) == []  # its record is not written yet: not sent
    store.gate.set()
    await writer.flush()
    assert _apps(wire_b) == [1]
    written = len(store.writes)
    seq = max(m.seq or 0 for m in map(decode, wire_b.sent) if hasattr(m, "seq"))
    hub.feed_message(b, Ack(ack=seq))  # an acknowledgement alone waits for nothing...
    assert len(store.writes) == written
    await asyncio.sleep(LAZY_DELAY + 0.1)  # ...and is written within LAZY_DELAY
    assert [r.op for r in store.writes[-1]] == ["A"]
    await writer.aclose()
    await hub.aclose()


async def test_a_room_dropped_while_its_records_are_written_loses_its_waiting_sends() -> None:
    hub, writer, store, leases = await _setup()
    a, _wire_a = _join(hub)
    _b, wire_b = _join(hub)
    await writer.flush()
    peer_b = hub.state.peers("r")[1].id
    store.gate.clear()
    hub.feed_message(a, AppMessage(to=peer_b, payload="late", seq=1))
    await asyncio.sleep(0.05)
    writer.drop("r")  # the room's lease lapsed meanwhile: it is closed here
    del leases["r"]
    hub.evict_room("r", 1001, "gone")
    store.gate.set()
    await writer.flush()
    assert _apps(wire_b) == []  # never sent: the room's next home does not have it
    assert wire_b.closed == (1001, "gone")
    await writer.aclose()
    await hub.aclose()


async def test_an_unreachable_store_lets_the_room_go_on_and_rewrites_it_whole() -> None:
    hub, writer, store, _leases = await _setup()
    a, _wire_a = _join(hub)
    _b, wire_b = _join(hub)
    await writer.flush()
    peer_b = hub.state.peers("r")[1].id
    store.down = True
    hub.feed_message(a, AppMessage(to=peer_b, payload="through", seq=1))
    await writer.flush()
    assert _apps(wire_b) == ["through"]  # sent all the same
    store.down = False
    writer.poke()
    await writer.flush()
    snapshot, state = await store.load("r"), hub.state.snapshot_room("r")
    assert snapshot is not None
    assert state is not None
    # the journal holds what the room went through while the store was away
    assert {x.peer_id: (x.out_seq, x.in_seq) for x in snapshot.sessions} == {
        x.peer_id: (x.out_seq, x.in_seq) for x in state.sessions
    }
    await writer.aclose()
    await hub.aclose()
