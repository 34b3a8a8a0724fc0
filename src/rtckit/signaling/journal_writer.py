"""Write a hub's session records to a :class:`~rtckit.backplane.journal.JournalStore` before
its sends go out (the asyncio side of :mod:`rtckit.backplane.journal`).

The hub hands every output to :meth:`JournalWriter.defer`. An output with records, and every
output after it until the queue is empty again (their order must hold), is bound to its
connections and queued; a task writes the queued records, room by room, in one call to the
store, then performs the outputs in order. So a client only ever sees a ``seq`` (or an
``ack`` of its own messages) that its room's journal holds, and a node that takes the room
over resumes each session where its client is.

When the store cannot be reached (the backplane is down, or a write takes longer than
*timeout*), the outputs are performed anyway: rooms keep working, and the journal of each room
whose records were lost is rewritten whole (from the state machine's snapshot of the room, at
a point between two batches) at the first write that succeeds after that.
A room whose write is refused because its lease moved on (fencing) is reported to
*on_fenced*, and its members' sends of that batch are dropped: the room's new home holds its
journal without them.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from rtckit.errors import BackplaneError

if TYPE_CHECKING:
    from rtckit.backplane.base import Lease
    from rtckit.backplane.journal import JournalStore, Record
    from rtckit.signaling.hub import DeferredOutput, SignalingHub
    from rtckit.signaling.state import Output

__all__ = ["LAZY_DELAY", "JournalWriter"]

#: Seconds an acknowledgement's record may wait for the next write (see
#: :meth:`JournalWriter.defer`).
LAZY_DELAY = 0.2

logger = logging.getLogger(__name__)


class JournalWriter:
    """Store a hub's records before performing its outputs (see the module)."""

    def __init__(
        self,
        hub: SignalingHub,
        store: JournalStore,
        *,
        lease_of: Callable[[str], Lease | None],
        available: Callable[[], bool],
        on_fenced: Callable[[str], None],
        timeout: float,
    ) -> None:
        self.hub = hub
        self.store = store
        self._lease_of = lease_of
        self._available = available
        self._on_fenced = on_fenced
        self._rewrite: set[str] = set()  # rooms whose journal must be written whole
        # acknowledgements not written yet: nothing waits for them (see defer)
        self._lazy: list[Record] = []
        self._lazy_timer: asyncio.TimerHandle | None = None
        self._lazy_due_now = False  # LAZY_DELAY passed: write them even alone
        self._timeout = timeout
        self._queue: list[DeferredOutput] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        #: Batches written, and records in them (for tests and metrics).
        self.writes = 0
        self.records = 0

    def start(self) -> None:
        """Take the hub's outputs from now on."""
        if self._task is None:
            self.hub.defer = self.defer
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="rtckit-journal-writer"
            )

    async def aclose(self) -> None:
        """Write and perform what is queued, then give the hub its outputs back."""
        if self._task is None:
            return
        await self.flush()
        if self.hub.defer == self.defer:
            self.hub.defer = None
        if self._lazy_timer is not None:
            self._lazy_timer.cancel()
            self._lazy_timer = None
        task, self._task = self._task, None
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        self._drain_now()

    async def flush(self) -> None:
        """Wait until every queued output (and acknowledgement) is written and performed."""
        if self._lazy:
            self._lazy_due_now = True
            self.poke()
        while self._queue or not self._idle.is_set():
            await self._idle.wait()
            if self._queue:
                await asyncio.sleep(0)

    def rewrite(self, room: str) -> None:
        """Write *room*'s journal whole at the next write (its lease changed hands)."""
        self._rewrite.add(room)
        self.poke()

    def poke(self) -> None:
        """Try again what waits (the backplane is back)."""
        self._idle.clear()
        self._wake.set()

    def defer(self, out: Output) -> bool:
        """The hub's hook: queue *out* (True) if it has records or others wait.

        An output whose records are all acknowledgements (``A``) waits for nothing: it is
        performed now, and its records go with the next write (at most
        :data:`LAZY_DELAY` later). An acknowledgement the journal misses only leaves
        acknowledged messages in a restored outbox, which the client's ``resume`` (its
        ``ack``) trims again: none is delivered twice.
        """
        records = out.records
        if records is None:
            if not self._queue:
                return False
        elif not self._queue and all(record.op == "A" for record in records):
            self._lazy.extend(records)
            if self._lazy_timer is None:
                self._lazy_timer = asyncio.get_running_loop().call_later(LAZY_DELAY, self._lazy_due)
            return False
        self._queue.append(self.hub.bind(out))
        self._idle.clear()
        self._wake.set()
        return True

    def _lazy_due(self) -> None:
        self._lazy_timer = None
        if self._lazy:
            self._lazy_due_now = True
            self.poke()

    async def _run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._queue or (
                (self._rewrite or (self._lazy_due_now and self._lazy)) and self._available()
            ):
                batch, self._queue = self._queue, []
                try:
                    written = await self._write(batch)
                except asyncio.CancelledError:
                    self._queue[:0] = batch
                    raise
                except Exception:  # pragma: no cover - a bug; the outputs still go out
                    logger.exception("writing the session journal failed")
                    for deferred in batch:
                        self.hub.perform(deferred)
                    written = False
                if not written and not self._queue:
                    break  # the rewrites wait for the next poke or output
            self._idle.set()

    async def _write(self, batch: list[DeferredOutput]) -> bool:
        """Write *batch*'s records (and the rooms to write whole), then perform it; False if
        the store could not be reached."""
        by_room: dict[str, list[Record]] = {}
        lazy, self._lazy = self._lazy, []
        self._lazy_due_now = False
        for record in lazy:  # they came before the batch's
            by_room.setdefault(record.room, []).append(record)
        for deferred in batch:
            for record in deferred.records or ():
                by_room.setdefault(record.room, []).append(record)
        # the rooms to write whole: their snapshot now is the state after this batch
        state = self.hub.state
        rewrite, self._rewrite = self._rewrite, set()
        whole = {room: state.snapshot_room(room) for room in rewrite if self._lease_of(room)}
        writes: list[tuple[str, Lease, list[Record]]] = []
        for room, records in by_room.items():
            lease = self._lease_of(room)
            if lease is not None and room not in whole:
                writes.append((room, lease, records))
            # else: not (or no longer) homed here, nothing to keep; or written whole
        fenced: set[str] = set()
        failed = False
        if writes or whole:
            if not self._available():
                failed = True
            else:
                try:
                    async with asyncio.timeout(self._timeout):
                        for room, snapshot in whole.items():
                            lease = self._lease_of(room)
                            if lease is not None and not await self.store.replace(
                                room, lease, snapshot
                            ):
                                fenced.add(room)
                        if writes:
                            fenced |= await self.store.write(writes)
                    self.writes += 1
                    self.records += sum(len(records) for _room, _lease, records in writes)
                except (BackplaneError, TimeoutError) as exc:
                    logger.warning("session journal not written (%s): rooms keep working", exc)
                    failed = True
        if failed:
            self._rewrite |= whole.keys() | {room for room, _lease, _records in writes}
        skip = frozenset(fenced)
        for deferred in batch:
            self.hub.perform(deferred, skip)
        for room in fenced:
            self._on_fenced(room)
        return not failed

    def _drain_now(self) -> None:
        """Perform what is left without writing it (the writer is closing)."""
        batch, self._queue = self._queue, []
        for deferred in batch:
            self.hub.perform(deferred)
        self._idle.set()
