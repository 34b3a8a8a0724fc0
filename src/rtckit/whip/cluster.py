"""WHIP and WHEP across the nodes of a cluster: the ``307`` to the node that homes a room.

In a cluster (:mod:`rtckit.signaling.cluster`) each room lives on one node, its *home*, which
runs its media server (SFU, MCU). A WHIP publisher is a participant that joins the room in
process, and a WHEP viewer a receive-only member of the room's media server, on the node that
answered its ``POST``: so that ``POST`` must be answered by the room's home.
:class:`ClusterRedirect` tells an endpoint (:class:`~rtckit.whip.server.WhipEndpoint`,
:class:`~rtckit.whip.whep.WhepEndpoint`) where:

* here, when this node homes the room;
* for WHIP, also when the room has no home and placement (the same as for a signaling
  ``join`` of a media room:
  :meth:`SignalingRouter.locate <rtckit.signaling.cluster.SignalingRouter.locate>`) picks
  this node, which then takes the room's lease before the publisher joins;
* for WHEP, also when the room has no home
  (:meth:`SignalingRouter.home <rtckit.signaling.cluster.SignalingRouter.home>`): a viewer
  creates no room, so nothing is placed and no lease taken; the endpoint answers ``404``
  (nobody is in the room), as on a single node;
* else at the same path on the home: the home's public URL (published on the backplane with
  its liveness, :meth:`Backplane.public_url <rtckit.backplane.base.Backplane.public_url>`)
  followed by the request's path and query, plus the marker :data:`REDIRECT_MARKER`. The
  endpoint answers ``307 Temporary Redirect`` with that ``Location`` and a problem body: a
  client sends the same ``POST`` (body and ``Authorization`` included) there.

No loop: a request carrying the marker was sent here by another node, and is never sent on
again. It is served here when the room is homed here or has no home (this node takes it,
without asking placement again: two nodes whose views of the loads differ would otherwise
send it back and forth); if yet another node took the room meanwhile, the answer is ``503``
and the client starts over at the URL it first used. A node never redirects to its own
public URL (``503``: workers that share one public URL must each advertise their own, see
:doc:`/topics/cluster`).

Session resources (``PATCH``, ``DELETE``) live on the node that created them: in a cluster
the ``Location`` of a ``201`` is absolute (:meth:`ClusterRedirect.absolute`), so that a client
that followed a redirect, or came through a load balancer, reaches that node again.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final
from urllib.parse import parse_qsl

from rtckit.errors import BackplaneError, ConnectionClosedError, WhipError
from rtckit.whip import protocol as wp

if TYPE_CHECKING:
    from rtckit.signaling.cluster import SignalingRouter

__all__ = ["REDIRECT_MARKER", "ClusterRedirect", "moved", "redirect_location", "was_redirected"]

#: The query parameter a node adds to the ``Location`` of a ``307``: the request was sent
#: here by another node, and is not sent on again.
REDIRECT_MARKER: Final = "rtckit-redirected"


def redirect_location(base_url: str, raw_path: str, raw_query: str) -> str:
    """The ``Location`` of a redirect to the node at *base_url*: *raw_path* and *raw_query*
    (as the request carried them, still percent-encoded) kept, :data:`REDIRECT_MARKER`
    added.

    .. code-block:: python

        from rtckit.whip.cluster import redirect_location

        assert redirect_location("https://b.example:8443/", "/whip/hall", "x=1") == (
            "https://b.example:8443/whip/hall?x=1&rtckit-redirected=1"
        )
    """
    query = f"{raw_query}&" if raw_query else ""
    return f"{base_url.rstrip('/')}{raw_path}?{query}{REDIRECT_MARKER}=1"


def was_redirected(raw_query: str) -> bool:
    """Whether a query string carries :data:`REDIRECT_MARKER`."""
    return any(name == REDIRECT_MARKER for name, _ in parse_qsl(raw_query, True))


def moved(location: str) -> WhipError:
    """The problem a ``307`` to *location* carries as its body."""
    return WhipError(
        f"this room is served by another node: send the same request to {location}",
        status=307,
        title="Temporary Redirect",
    )


class ClusterRedirect:
    """Where the ``POST`` of a WHIP or WHEP endpoint is served, in a cluster run by *router*
    (see the module documentation). *public_url* is this node's own public base URL (also
    published on the backplane by :meth:`set_public_url`)."""

    def __init__(self, router: SignalingRouter, public_url: str = "") -> None:
        self.router = router
        self.public_url = ""
        if public_url:
            self.set_public_url(public_url)

    def set_public_url(self, url: str) -> None:
        """Advertise *url* as this node's public base URL (``rtckit serve`` sets it once it
        has bound its port)."""
        self.router.backplane.set_public_url(url)
        self.public_url = url

    def absolute(self, path: str) -> str:
        """*path* (absolute, on this node) as an absolute URL on this node; *path* itself if
        this node has no public URL."""
        return f"{self.public_url.rstrip('/')}{path}" if self.public_url else path

    async def location(
        self, room: str, raw_path: str, raw_query: str, *, place: bool = True
    ) -> str | None:
        """Where the ``POST`` at *raw_path* ? *raw_query* for *room* goes: ``None`` to serve
        it here (the room's lease is then held here), else the absolute URL to redirect it to.
        With *place* false (a WHEP viewer, which creates no room), a room with no home is
        neither placed nor taken: it is served here (where nothing plays it).

        Raises :class:`~rtckit.errors.WhipError` 503 when the backplane cannot tell, the
        room moved on after a redirect, or its home published no URL (or this node's own).
        """
        redirected = was_redirected(raw_query)
        router = self.router
        try:
            if place:
                node = await router.locate(room, place=not redirected)
            else:
                home = await router.home(room)
                if home is None:
                    return None
                node = home
            if node == router.node_id:
                return None
            base = await router.backplane.public_url(node)
        except BackplaneError as exc:
            raise wp.problem(
                503, f"room {room!r}: the cluster cannot tell which node serves it ({exc})"
            ) from None
        except ConnectionClosedError:
            raise wp.problem(503, "the server is closing") from None
        if redirected:
            raise wp.problem(
                503,
                f"room {room!r} moved to node {node!r} after this request was redirected "
                "here: send it again to the URL first used",
            )
        if base is None:
            raise wp.problem(
                503, f"room {room!r} is served by node {node!r}, which published no public URL"
            )
        if base.rstrip("/") == self.public_url.rstrip("/"):
            raise wp.problem(
                503,
                f"room {room!r} is served by node {node!r}, which has this node's public URL "
                f"({base}): each node needs its own",
            )
        return redirect_location(base, raw_path, raw_query)
