"""WHIP ingest endpoints for aiohttp: publish into the SFU and MCU rooms of a signaling hub.

:class:`WhipEndpoint` mounts, under :attr:`WhipConfig.prefix <rtckit.whip.protocol.WhipConfig>`
(``/whip``):

* ``POST /whip/<room>`` and ``OPTIONS /whip/<room>`` (the endpoint);
* ``PATCH``, ``DELETE`` and ``OPTIONS /whip/<room>/<id>`` (a session resource).

Every decision is :mod:`rtckit.whip.protocol`'s; this layer reads requests, and wires a
session to the room:

1. the bearer token is checked with the hub's own authenticator (the room tokens of
   :class:`~rtckit.signaling.auth.TokenAuth`: ``publish`` permission required);
2. the publisher joins the room through signaling, in process, as a participant with the
   metadata ``{"rtckit_role": "whip"}`` (other members see it join and leave; a room is created
   on demand if the hub's configuration does so; it keeps the room running);
3. the room's media server (from the :class:`~rtckit.topology.strategies.RoomStrategies`
   that runs the hub's rooms) answers the offer: an SFU room forwards the publisher's media
   without decoding it (:meth:`~rtckit.topology.sfu.SfuServerStrategy.add_publisher`), an MCU
   room decodes and mixes it, a cell in the grid and its voice in every member's mix-minus
   (:meth:`~rtckit.topology.mcu.McuServerStrategy.add_publisher`); the answer carries all
   of the server's candidates (aiortc gathers before it answers), so the server never trickles;
4. when the session ends (``DELETE``, its connection failed, it never connected within
   ``connect_timeout``, the room stopped) the publisher leaves the room and its resource
   answers 404.

Mesh rooms (no media server) are refused with 409 and a problem body saying so.
One signaling event reader per session drains what the room tells the in-process participant,
so nothing accumulates.
"""

from __future__ import annotations

import contextlib
import logging
import secrets

from rtckit.errors import (
    AuthError,
    NegotiationError,
    RoomError,
    SignalingError,
    TopologyError,
)
from rtckit.signaling.client import SignalingClient
from rtckit.signaling.memory import MemoryTransport
from rtckit.signaling.protocol import ErrorCode
from rtckit.topology._http_peer import HttpPeer
from rtckit.topology.base import PUBLISHER_ROLE, PublishingStrategy
from rtckit.whip import protocol as wp
from rtckit.whip._endpoint import HttpEndpoint, HttpSession, PostedOffer

__all__ = ["WhipEndpoint", "WhipSession"]

logger = logging.getLogger(__name__)


class WhipSession(HttpSession):
    """One WHIP publisher: its resource, its participant in the room and its connection."""

    def __init__(
        self,
        *,
        resource_id: str,
        room: str,
        token: str | None,
        client: SignalingClient,
        publisher: HttpPeer,
        ufrag: str | None,
    ) -> None:
        super().__init__(
            resource_id=resource_id, room=room, token=token, peer=publisher, ufrag=ufrag
        )
        self.client = client
        self.publisher = publisher

    async def _release(self) -> None:
        await self.client.aclose()


class WhipEndpoint(HttpEndpoint[WhipSession]):
    """WHIP ingest into the SFU and MCU rooms of *hub*, run by *rooms* (see the module
    documentation).

    *ice_servers* returns the ``RTCIceServer`` dicts a client gets as ``Link`` headers (called
    for each answer, so TURN REST credentials are minted per session); ``None``: none.
    """

    kind = "WHIP"
    permission = "publish"
    late_delete = True  # browser WHIP clients (npm whip-whep) close first, then DELETE

    def _parse(self, offer: str) -> wp.OfferSummary:
        return wp.parse_offer(offer)

    async def _open(self, offer: PostedOffer) -> WhipSession:
        return await self._start(offer.room, offer.token, offer.sdp, offer.summary)

    def _check_topology(self, room: str) -> None:
        self._refuse_mesh(room, "to publish into (WHIP publishes into SFU and MCU rooms)")

    async def _start(
        self, room: str, token: str | None, offer: str, summary: wp.OfferSummary
    ) -> WhipSession:
        peer_id = f"whip-{secrets.token_hex(4)}"
        client = SignalingClient(
            MemoryTransport(self.hub, trusted=True),
            room=room,
            token=token,
            peer_id=peer_id,
            metadata={"rtckit_role": PUBLISHER_ROLE},
        )
        try:
            await client.start()
        except AuthError as exc:
            raise wp.problem(401, f"the token is refused: {exc}") from None
        except RoomError as exc:
            status = 503 if getattr(exc, "code", None) == ErrorCode.ROOM_FULL else 404
            raise wp.problem(status, f"room {room!r}: {exc}") from None
        except SignalingError as exc:
            raise wp.problem(400, f"cannot join room {room!r}: {exc}") from None
        try:
            publisher = await self._publish(room, peer_id, offer)
        except BaseException:
            await client.aclose()
            raise
        session = WhipSession(
            resource_id=wp.new_resource_id(),
            room=room,
            token=token,
            client=client,
            publisher=publisher,
            ufrag=summary.ufrag,
        )
        session.mids = summary.mids
        self._register(session, self._drain(session))
        logger.info(
            "WHIP publisher %s joined room %s (%s)",
            peer_id,
            room,
            "+".join(summary.kinds),
            extra={"room": room, "peer": peer_id},
        )
        return session

    async def _publish(self, room: str, peer_id: str, offer: str) -> HttpPeer:
        """The room's SFU or MCU answers *offer* from its new participant *peer_id*."""
        self._check_topology(room)  # a room created just now may have another topology
        strategy = self.rooms.running.get(room)
        if strategy is None:
            raise wp.problem(503, f"the media server of room {room!r} is not running")
        if not isinstance(strategy, PublishingStrategy):
            raise wp.problem(409, f"the media server of room {room!r} takes no WHIP publisher")
        try:
            return await strategy.add_publisher(
                peer_id, offer, connect_timeout=self.config.connect_timeout
            )
        except NegotiationError as exc:
            raise wp.problem(400, f"the offer cannot be answered: {exc}") from None
        except TopologyError as exc:
            raise wp.problem(503, str(exc)) from None

    # -- session life ----------------------------------------------------------------------

    async def _drain(self, session: WhipSession) -> None:
        """Read (and drop) what the room tells the publisher's participant; if the room
        removes it, end the session."""
        with contextlib.suppress(SignalingError):
            async for _event in session.client:
                pass
        await self._end(session)
