"""What the nodes of one rtckit deployment share: messages between nodes, node liveness and
leases (the contract every backplane keeps).

A *node* is one rtckit process (one ``rtckit serve`` worker, one machine's server). Nodes that
share a backplane see each other: each can post bytes to another by its id, learns when
another's liveness lapses, and can hold *leases* (a named thing, such as a room, held by one
node at a time, with an epoch that fences out a former holder).

:class:`Backplane` is the interface; ``rtckit.backplane.memory`` keeps several nodes in one
process (tests, examples) and ``rtckit.backplane.redis`` runs on redis-server. Nothing here
knows about signaling: the signaling router (``rtckit.signaling.cluster``) gives the bytes
their meaning.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import attrs

if TYPE_CHECKING:
    from rtckit.backplane.journal import JournalStore

__all__ = ["Backplane", "BackplaneHandler", "Lease", "NodeId", "check_public_url"]

#: A node's id: unique among the live nodes of a deployment, printable ASCII, no ``:``.
NodeId = str


@attrs.frozen
class Lease:
    """*key* is held by *node*; *epoch* grows by at least one each time *key* changes hands
    (fencing: work done under an older epoch is refused)."""

    key: str
    node: NodeId
    epoch: int


def check_public_url(url: str) -> str:
    """*url* if a backplane can publish it as a node's public URL (printable ASCII, no
    spaces; ``""`` for none), else a :exc:`ValueError`. Whether it is a usable HTTP URL is
    the configuration's business."""
    if url and not (url.isascii() and url.isprintable() and " " not in url):
        raise ValueError(f"a public URL is printable ASCII without spaces, not {url!r}")
    return url


class BackplaneHandler(Protocol):
    """What a backplane calls on the node using it (synchronously, from its own tasks; each
    call must not block)."""

    def on_message(self, sender: NodeId, payload: bytes) -> None:
        """*payload*, posted by node *sender* to this node. Payloads from one sender arrive
        in the order it posted them, each at most once."""
        ...

    def on_node_down(self, node: NodeId) -> None:
        """*node* left, or its liveness lapsed (it died, hangs, or lost the backplane): what
        this node holds for it must be dropped. Called once per lapse."""
        ...

    def on_unreachable(self, node: NodeId) -> None:
        """A payload posted to *node* may be lost (no node *node* listens, the backplane
        failed, or the queue towards it is full): nothing posted to it since the last call
        can be assumed delivered."""
        ...

    def on_state(self, up: bool) -> None:
        """The backplane became reachable (*up*) or unreachable. While down, posts are
        refused (:meth:`Backplane.post` calls :meth:`on_unreachable`), lease calls raise
        :class:`~rtckit.errors.BackplaneError`, and this node's liveness lapses for the
        others after the node TTL."""
        ...


class Backplane(Protocol):
    """The interface of a backplane, as the signaling router uses it. The router calls
    :meth:`start` with its handler; implementations are also async context managers whose
    exit calls :meth:`aclose` (entering does not start them: :meth:`start` needs the
    handler)."""

    @property
    def node_id(self) -> NodeId:
        """This node's id."""
        ...

    @property
    def up(self) -> bool:
        """Whether the backplane is reachable now."""
        ...

    async def start(self, handler: BackplaneHandler) -> None:
        """Connect, announce this node as live and start delivering to *handler*.

        Raises :class:`~rtckit.errors.BackplaneError` if the backplane cannot be reached at
        start (later outages are reported through :meth:`BackplaneHandler.on_state`).
        """
        ...

    async def aclose(self) -> None:
        """Leave: stop delivering, withdraw this node's liveness at once (others get
        :meth:`BackplaneHandler.on_node_down` without waiting for the TTL), release the leases
        it holds. Idempotent."""
        ...

    def post(self, node: NodeId, payload: bytes) -> None:
        """Queue *payload* for *node*; never blocks. Payloads to one node keep their order.
        What waits to be sent is bounded; over the bound, or when *node* is not listening,
        :meth:`BackplaneHandler.on_unreachable` is called for *node*."""
        ...

    def set_load(self, load: float) -> None:
        """This node's load (any non-negative figure, e.g. peers served), published with its
        liveness for placement (:meth:`live_nodes`). ``math.inf`` says that the node is
        draining: other nodes place no room on it. Not NaN (a :exc:`ValueError`)."""
        ...

    async def live_nodes(self) -> dict[NodeId, float]:
        """The live nodes (this one included) and the load each last published."""
        ...

    def set_public_url(self, url: str) -> None:
        """This node's public base URL (where HTTP clients reach it, e.g.
        ``https://node1.example.com:8443``), published with its liveness, so that another
        node can send a client here (:meth:`public_url`); ``""``: none. Printable ASCII
        without spaces, else a :exc:`ValueError`."""
        ...

    async def public_url(self, node: NodeId) -> str | None:
        """The public base URL live node *node* last published, or ``None`` (it is not live,
        or published none)."""
        ...

    async def acquire(self, key: str, ttl: float) -> Lease:
        """Take *key* for this node for *ttl* seconds if nobody holds it, and return the
        lease; if another node holds it, return that node's lease unchanged. Atomic."""
        ...

    async def renew(self, lease: Lease, ttl: float) -> bool:
        """Extend *lease* by *ttl* seconds if this node still holds it with that epoch;
        False if it was lost (expired, or taken over). Atomic."""
        ...

    async def release(self, lease: Lease) -> bool:
        """Give *lease* up if it is still held with its epoch (compare-and-delete); False if
        it was not. Atomic."""
        ...

    async def holder(self, key: str) -> Lease | None:
        """Who holds *key* now, or ``None``."""
        ...

    def journal(self, ttl: float) -> JournalStore:
        """Where the rooms' session journals are kept on this backplane (see
        :mod:`rtckit.backplane.journal`); a journal not refreshed for *ttl* seconds is
        forgotten."""
        ...
