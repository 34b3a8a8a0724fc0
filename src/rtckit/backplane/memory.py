"""Several nodes of a deployment inside one process: :class:`MemoryBroker` and its
:class:`MemoryBackplane` (tests, examples, documentation).

.. code-block:: python

    from rtckit.backplane.memory import MemoryBackplane, MemoryBroker
    from rtckit.signaling import OpenAuth, SignalingConfig, SignalingServer

    broker = MemoryBroker(node_ttl=3.0)
    config = SignalingConfig(auth=OpenAuth())
    async with (
        SignalingServer(config, MemoryBackplane(broker, "a")) as a,
        SignalingServer(config, MemoryBackplane(broker, "b")) as b,
    ):
        await a.listen("127.0.0.1", 0)
        await b.listen("127.0.0.1", 0)
        # clients of a and b share every room (see the cluster topic page)

The broker keeps what a real backplane server keeps (who is live, the leases and their epochs)
and delivers posts through one bounded queue per receiving node, drained by that node's task:
a post returns at once and the handler runs later, never inside the caller (as over a socket).
Time is the event loop's clock (``loop.time()``).

Failures to test with: :meth:`MemoryBroker.kill` makes a node die at once (it stops
delivering, refreshing its liveness and answering; its leases lapse after their TTL; the
others get ``on_node_down`` once its liveness lapses, after ``node_ttl``);
:meth:`MemoryBroker.set_up` switches the whole backplane off and on (an outage: every node gets
``on_state(False)``, posts are refused with ``on_unreachable``, lease calls raise
:class:`~rtckit.errors.BackplaneError`), or one node's access to it (that node alone is cut
off; the others see its liveness lapse, and its leases expire); ``set_up(True, empty=True)``
ends an outage as a redis-server restarted without persistence does, with nothing kept
(nodes cut off alone meanwhile come back later, each with its own ``set_up(True, node=...)``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Sequence
from types import TracebackType

import attrs

from rtckit.backplane.base import BackplaneHandler, Lease, NodeId, check_public_url
from rtckit.backplane.journal import JournalImage, Record, RoomSnapshot
from rtckit.errors import BackplaneError, ConfigurationError

__all__ = ["MemoryBackplane", "MemoryBroker", "MemoryJournal"]

logger = logging.getLogger(__name__)


def _now() -> float:
    return asyncio.get_running_loop().time()


@attrs.define(eq=False)
class _LeaseEntry:
    lease: Lease
    expires: float


class MemoryBroker:
    """What the nodes of one in-process deployment share.

    *node_ttl*: seconds after which a node that stopped refreshing its liveness is reported
    down to the others (it refreshes every third of it). *max_queue*: payloads waiting for one
    receiving node at most; a post beyond it is refused (``on_unreachable``).
    """

    def __init__(self, *, node_ttl: float = 3.0, max_queue: int = 10_000) -> None:
        if node_ttl <= 0:
            raise ConfigurationError("node_ttl must be positive")
        if max_queue < 1:
            raise ConfigurationError("max_queue must be at least 1")
        self.node_ttl = node_ttl
        self.max_queue = max_queue
        self._up = True
        self._cut: set[NodeId] = set()  # nodes cut off from the backplane (set_up(node=...))
        self._nodes: dict[NodeId, MemoryBackplane] = {}
        self._alive: dict[NodeId, tuple[float, float]] = {}  # node -> (refreshed at, load)
        self._leases: dict[str, _LeaseEntry] = {}
        # the rooms' session journals: room -> (its lease key, the journal, expires at)
        self.journals: dict[str, tuple[str, JournalImage, float]] = {}
        self._epochs: dict[str, int] = {}

    @property
    def up(self) -> bool:
        """Whether the backplane is reachable (see :meth:`set_up`)."""
        return self._up

    def set_up(self, up: bool, *, node: NodeId | None = None, empty: bool = False) -> None:
        """Start (``False``) or end (``True``) an outage of the whole backplane, or with
        *node* of that node's access to it alone.

        Every node concerned gets ``on_state(up)`` (from its own task). When an outage ends,
        every node it ends for refreshes its liveness before any looks at the others', so an
        outage shorter than ``node_ttl`` reports no node down. *empty*, when an outage of the
        whole backplane ends: the backplane comes back having lost the liveness records,
        leases and epochs it kept (a redis-server restarted without persistence); the nodes
        still cut off are reported down to the others.
        """
        if node is not None:
            if up == (node not in self._cut):
                return
            if up:
                self._cut.discard(node)
            else:
                self._cut.add(node)
            backplane = self._nodes.get(node)
            if backplane is not None:
                if up and self._up and backplane.listening:
                    self._alive[node] = (_now(), backplane.load)
                if self._up:
                    backplane.state_changed(up)
            return
        if up == self._up:
            return
        self._up = up
        if up and empty:
            self._alive.clear()
            self._leases.clear()
            self._epochs.clear()
            self.journals.clear()
        if up:
            now = _now()
            for name, backplane in self._nodes.items():
                if backplane.listening and name not in self._cut:
                    self._alive[name] = (now, backplane.load)
        for name, backplane in list(self._nodes.items()):
            if name not in self._cut:
                backplane.state_changed(up)

    def reachable(self, node: NodeId) -> bool:
        """Whether *node* can reach the backplane now (see :meth:`set_up`)."""
        return self._up and node not in self._cut

    def kill(self, node: NodeId) -> None:
        """Node *node* dies now (as with ``kill -9``): see the module's docstring."""
        backplane = self._nodes.get(node)
        if backplane is not None:
            backplane.die()

    def leases(self) -> list[Lease]:
        """The leases held now (expired ones excluded)."""
        now = _now()
        return [entry.lease for entry in self._leases.values() if entry.expires > now]

    # --- for MemoryBackplane ---------------------------------------------------------------

    def _join(self, backplane: MemoryBackplane) -> None:
        node = backplane.node_id
        current = self._nodes.get(node)
        if current is not None and current.listening:
            raise BackplaneError(f"node {node!r} is already live on this broker")
        if not self.reachable(node):
            raise BackplaneError("the backplane is down")
        self._nodes[node] = backplane
        self._alive[node] = (_now(), backplane.load)
        for other in self._nodes.values():
            if other.listening:
                other.node_seen(node)

    def _leave(self, backplane: MemoryBackplane) -> None:
        node = backplane.node_id
        if self._nodes.get(node) is not backplane:
            return
        del self._nodes[node]
        self._alive.pop(node, None)
        for key, entry in list(self._leases.items()):
            if entry.lease.node == node:
                del self._leases[key]
        for other in self._nodes.values():
            other.node_left(node)

    def _refresh(self, backplane: MemoryBackplane) -> None:
        if self.reachable(backplane.node_id) and self._nodes.get(backplane.node_id) is backplane:
            self._alive[backplane.node_id] = (_now(), backplane.load)

    def _live(self) -> dict[NodeId, float]:
        limit = _now() - self.node_ttl
        return {node: load for node, (at, load) in self._alive.items() if at > limit}

    def _check(self, backplane: MemoryBackplane) -> None:
        if not self.reachable(backplane.node_id):
            raise BackplaneError("the backplane is down")
        if not backplane.listening:
            raise BackplaneError(f"node {backplane.node_id!r} is not connected")

    def _acquire(self, backplane: MemoryBackplane, key: str, ttl: float) -> Lease:
        self._check(backplane)
        now = _now()
        entry = self._leases.get(key)
        if entry is not None and entry.expires > now:
            return entry.lease
        epoch = self._epochs[key] = self._epochs.get(key, 0) + 1
        lease = Lease(key=key, node=backplane.node_id, epoch=epoch)
        self._leases[key] = _LeaseEntry(lease, now + ttl)
        return lease

    def _held(self, backplane: MemoryBackplane, lease: Lease) -> _LeaseEntry | None:
        self._check(backplane)
        entry = self._leases.get(lease.key)
        if (
            entry is None
            or entry.lease != lease
            or entry.expires <= _now()
            or lease.node != backplane.node_id
        ):
            return None
        return entry

    def _renew(self, backplane: MemoryBackplane, lease: Lease, ttl: float) -> bool:
        entry = self._held(backplane, lease)
        if entry is None:
            return False
        entry.expires = _now() + ttl
        return True

    def _release(self, backplane: MemoryBackplane, lease: Lease) -> bool:
        if self._held(backplane, lease) is None:
            return False
        del self._leases[lease.key]
        return True

    def _holder(self, backplane: MemoryBackplane, key: str) -> Lease | None:
        self._check(backplane)
        entry = self._leases.get(key)
        return None if entry is None or entry.expires <= _now() else entry.lease

    def _holds(self, lease: Lease) -> bool:
        entry = self._leases.get(lease.key)
        return entry is not None and entry.lease == lease and entry.expires > _now()

    def _journal(self, room: str) -> JournalImage | None:
        found = self.journals.get(room)
        if found is None:
            return None
        if found[2] <= _now():
            del self.journals[room]
            return None
        return found[1]

    def _deliver(self, sender: MemoryBackplane, node: NodeId, payload: bytes) -> bool:
        if not self.reachable(sender.node_id) or not self.reachable(node):
            return False
        target = self._nodes.get(node)
        if target is None or not target.listening:
            return False
        return target.enqueue(sender.node_id, payload)


class MemoryBackplane:
    """One node of a :class:`MemoryBroker`: a :class:`~rtckit.backplane.base.Backplane`.

    An async context manager; give :meth:`start` the handler (the signaling router does)."""

    def __init__(self, broker: MemoryBroker, node_id: NodeId) -> None:
        if not node_id or ":" in node_id or not node_id.isprintable() or not node_id.isascii():
            raise ConfigurationError(f"bad node id {node_id!r}: printable ASCII without ':'")
        self._broker = broker
        self._node_id = node_id
        self._handler: BackplaneHandler | None = None
        self._inbox: deque[tuple[NodeId, bytes]] = deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._listening = False
        self._dead = False
        self._closed = False
        self._seen: set[NodeId] = set()
        self.load = 0.0
        self.url = ""

    # --- Backplane -------------------------------------------------------------------------

    @property
    def node_id(self) -> NodeId:
        """This node's id."""
        return self._node_id

    @property
    def up(self) -> bool:
        """Whether the backplane is reachable for this node."""
        return self._listening and self._broker.reachable(self._node_id)

    @property
    def listening(self) -> bool:
        """Started, not closed, not killed."""
        return self._listening

    async def __aenter__(self) -> MemoryBackplane:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self, handler: BackplaneHandler) -> None:
        """Join the broker and deliver to *handler*."""
        if self._closed or self._dead:
            raise BackplaneError("this backplane is closed")
        if self._handler is not None:
            raise RuntimeError("already started")
        self._broker._join(self)
        self._handler = handler
        self._listening = True
        self._seen = set(self._broker._live())
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self._deliver_loop(), name=f"rtckit-memory-bp-{self._node_id}"),
            loop.create_task(self._live_loop(), name=f"rtckit-memory-bp-live-{self._node_id}"),
        ]

    async def aclose(self) -> None:
        """Leave the broker (the others get ``on_node_down`` at once). Idempotent."""
        if self._closed:
            return
        self._closed = True
        listening, self._listening = self._listening, False
        if listening:
            self._broker._leave(self)
        await self._stop_tasks()

    def post(self, node: NodeId, payload: bytes) -> None:
        """Queue *payload* for *node* (see :meth:`Backplane.post
        <rtckit.backplane.base.Backplane.post>`)."""
        if not self._listening:
            return  # dead or closed: nobody to tell
        if not self._broker._deliver(self, node, payload):
            asyncio.get_running_loop().call_soon(self._unreachable, node)

    def set_load(self, load: float) -> None:
        """Publish this node's *load* with its next liveness refresh (``inf``: draining)."""
        if not load >= 0:
            raise ValueError(f"load must be a non-negative number or inf, not {load}")
        self.load = float(load)

    async def live_nodes(self) -> dict[NodeId, float]:
        """The live nodes and their loads."""
        await asyncio.sleep(0)
        self._broker._check(self)
        return self._broker._live()

    def set_public_url(self, url: str) -> None:
        """Publish this node's public base URL (``""``: none)."""
        self.url = check_public_url(url)

    async def public_url(self, node: NodeId) -> str | None:
        """The public base URL of live node *node*, if it published one."""
        await asyncio.sleep(0)
        self._broker._check(self)
        backplane = self._broker._nodes.get(node)
        if backplane is None or node not in self._broker._live():
            return None
        return backplane.url or None

    async def acquire(self, key: str, ttl: float) -> Lease:
        """See :meth:`Backplane.acquire <rtckit.backplane.base.Backplane.acquire>`."""
        await asyncio.sleep(0)
        return self._broker._acquire(self, key, ttl)

    async def renew(self, lease: Lease, ttl: float) -> bool:
        """See :meth:`Backplane.renew <rtckit.backplane.base.Backplane.renew>`."""
        await asyncio.sleep(0)
        return self._broker._renew(self, lease, ttl)

    async def release(self, lease: Lease) -> bool:
        """See :meth:`Backplane.release <rtckit.backplane.base.Backplane.release>`."""
        await asyncio.sleep(0)
        return self._broker._release(self, lease)

    async def holder(self, key: str) -> Lease | None:
        """See :meth:`Backplane.holder <rtckit.backplane.base.Backplane.holder>`."""
        await asyncio.sleep(0)
        return self._broker._holder(self, key)

    def journal(self, ttl: float = 60.0) -> MemoryJournal:
        """The broker's session journals, as this node writes them (see
        :class:`~rtckit.backplane.journal.JournalStore`); a journal not refreshed for *ttl*
        seconds is forgotten."""
        return MemoryJournal(self._broker, self, ttl)

    # --- for MemoryBroker ------------------------------------------------------------------

    def enqueue(self, sender: NodeId, payload: bytes) -> bool:
        """Queue a payload from *sender*; False if the queue is full."""
        if len(self._inbox) >= self._broker.max_queue:
            return False
        self._inbox.append((sender, payload))
        self._wake.set()
        return True

    def state_changed(self, up: bool) -> None:
        """The broker's outage switch moved."""
        if self._listening:
            asyncio.get_running_loop().call_soon(self._state, up)

    def node_seen(self, node: NodeId) -> None:
        """*node* joined the broker."""
        self._seen.add(node)

    def node_left(self, node: NodeId) -> None:
        """*node* left the broker cleanly."""
        if self._listening and node in self._seen:
            self._seen.discard(node)
            asyncio.get_running_loop().call_soon(self._node_down, node)

    def die(self) -> None:
        """Stop at once, as a killed process does (nothing is withdrawn)."""
        if not self._listening:
            return
        self._listening = False
        self._dead = True
        self._inbox.clear()
        for task in self._tasks:
            task.cancel()

    # --- internals -------------------------------------------------------------------------

    async def _stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def _call(self, name: str, *args: object) -> None:
        handler = self._handler
        if handler is None or not self._listening:
            return
        try:
            getattr(handler, name)(*args)
        except Exception:  # a bug in the handler: keep the backplane's tasks alive
            logger.exception("backplane handler %s failed", name)

    def _unreachable(self, node: NodeId) -> None:
        self._call("on_unreachable", node)

    def _state(self, up: bool) -> None:
        self._call("on_state", up)

    def _node_down(self, node: NodeId) -> None:
        self._call("on_node_down", node)

    async def _deliver_loop(self) -> None:
        inbox, wake = self._inbox, self._wake
        while True:
            await wake.wait()
            wake.clear()
            handler = self._handler
            while inbox and handler is not None and self._listening:
                sender, payload = inbox.popleft()
                try:
                    handler.on_message(sender, payload)
                except Exception:  # a bug in the handler: keep delivering
                    logger.exception("backplane handler failed on a payload from %r", sender)

    async def _live_loop(self) -> None:
        broker = self._broker
        while True:
            await asyncio.sleep(broker.node_ttl / 3)
            if not broker.reachable(self._node_id):
                continue
            broker._refresh(self)
            live = set(broker._live())
            for node in sorted(self._seen - live):
                self._node_down(node)
            self._seen = live


class MemoryJournal:
    """The session journals of a :class:`MemoryBroker`'s rooms, as one node uses them: a
    :class:`~rtckit.backplane.journal.JournalStore` (from :meth:`MemoryBackplane.journal`)."""

    def __init__(self, broker: MemoryBroker, backplane: MemoryBackplane, ttl: float) -> None:
        self._broker = broker
        self._backplane = backplane
        self._ttl = ttl

    async def write(self, batches: Sequence[tuple[str, Lease, Sequence[Record]]]) -> set[str]:
        """See :meth:`JournalStore.write <rtckit.backplane.journal.JournalStore.write>`."""
        await asyncio.sleep(0)
        broker = self._broker
        broker._check(self._backplane)
        fenced: set[str] = set()
        for room, lease, records in batches:
            if not broker._holds(lease):
                fenced.add(room)
                continue
            image = broker._journal(room) or JournalImage(room)
            try:  # all or nothing, as a script on Redis
                current = image.snapshot()
                trial = JournalImage(room) if current is None else JournalImage.of(current)
                trial.apply(records)
            except ValueError as exc:  # out of step (the journal was lost): none applied
                raise BackplaneError(f"room {room!r}: {exc}") from exc
            image = trial
            if image.data:
                broker.journals[room] = (lease.key, image, _now() + self._ttl)
            else:
                broker.journals.pop(room, None)
        return fenced

    async def load(self, room: str) -> RoomSnapshot | None:
        """See :meth:`JournalStore.load <rtckit.backplane.journal.JournalStore.load>`."""
        await asyncio.sleep(0)
        self._broker._check(self._backplane)
        image = self._broker._journal(room)
        return None if image is None else image.snapshot()

    async def refresh(self, room: str, lease: Lease, ttl: float) -> bool:
        """See :meth:`JournalStore.refresh <rtckit.backplane.journal.JournalStore.refresh>`."""
        await asyncio.sleep(0)
        broker = self._broker
        broker._check(self._backplane)
        image = broker._journal(room)
        if image is None or not broker._holds(lease):
            return False
        broker.journals[room] = (lease.key, image, _now() + max(ttl, self._ttl))
        return True

    async def replace(self, room: str, lease: Lease, snapshot: RoomSnapshot | None) -> bool:
        """See :meth:`JournalStore.replace <rtckit.backplane.journal.JournalStore.replace>`."""
        await asyncio.sleep(0)
        broker = self._broker
        broker._check(self._backplane)
        if not broker._holds(lease):
            return False
        if snapshot is None:
            broker.journals.pop(room, None)
        else:
            image = JournalImage.of(snapshot)
            broker.journals[room] = (lease.key, image, _now() + self._ttl)
        return True

    async def orphans(self, limit: int) -> list[str]:
        """See :meth:`JournalStore.orphans <rtckit.backplane.journal.JournalStore.orphans>`."""
        await asyncio.sleep(0)
        broker = self._broker
        broker._check(self._backplane)
        now = _now()
        found = []
        for room, (key, _image, _expires) in list(broker.journals.items()):
            entry = broker._leases.get(key)
            if broker._journal(room) is not None and (entry is None or entry.expires <= now):
                found.append(room)
                if len(found) >= limit:
                    break
        return found
