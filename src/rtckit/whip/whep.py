"""WHEP egress endpoints for aiohttp: play the SFU and MCU rooms of a signaling hub.

:class:`WhepEndpoint` mounts, under :attr:`WhepConfig.prefix <rtckit.whip.protocol.WhepConfig>`
(``/whep``):

* ``POST /whep/<room>`` and ``POST /whep/<room>/<participant>`` (and their ``OPTIONS``): a
  receive-only offer (one audio and/or one video m-line) is answered with ``201``;
* ``PATCH``, ``DELETE`` and ``OPTIONS /whep/<room>/~/<id>`` (a session resource: three
  segments, so that it never reads as a participant's name).

The HTTP exchange is the one of WHIP (the code is shared with
:class:`~rtckit.whip.server.WhipEndpoint`): bearer tokens, which need the ``subscribe``
permission, ``Link`` ICE servers, trickle ``PATCH``, ICE restart refused with 422, limits,
problem bodies. What a viewer plays:

* **SFU rooms**: ``/whep/<room>/<participant>`` plays the audio and video of the participant
  with that name: the identity of its room token (``sub``; a WHIP publisher's is its WHIP
  token's), else the string ``name`` of its signaling metadata, else its peer id
  (:meth:`~rtckit.topology.sfu.SfuServerStrategy.name_of`). ``/whep/<room>`` plays the room's
  first publisher of video, in order of publication, and when it stops publishing the next
  one. The tracks are forwarded by the room's router, never decoded
  (:meth:`~rtckit.topology.sfu.SfuServerStrategy.add_viewer`). When the participant played
  leaves, or joins again under the same name with a new peer id, the viewer's session stays:
  it gets no media meanwhile, and its stream continues (same SSRC, continuous sequence
  numbers and timestamps) from the next keyframe of the participant's new publication.
* **MCU rooms**: ``/whep/<room>`` plays the room's full mix: the composite video and every
  participant's audio mixed (not a mix-minus), the packets the room's engine encodes once
  for everyone (:meth:`~rtckit.topology.mcu.McuServerStrategy.add_viewer`).
  ``/whep/<room>/<participant>`` is refused with 409: an MCU room sends no participant's
  tracks on their own.
* **Mesh rooms** have no media server: refused with 409.

A viewer is not a participant: it does not join the room's signaling, nobody sees it, it
counts in no room limit (only in ``max_sessions``), and it does not keep a room open. A
``POST`` to a room nobody is in is refused with 404 (there is nothing to play); when the
room's last participant leaves, its media server stops and every viewer's session ends (its
resource answers 404). A session also ends on ``DELETE``, when its connection fails (ICE
consent lost) or closes, and when it has not connected within ``connect_timeout``.
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING

from aiohttp import web

from rtckit.errors import NegotiationError, TopologyError
from rtckit.topology.base import Topology
from rtckit.topology.sfu import SfuServerStrategy, SfuViewer
from rtckit.whip import protocol as wp
from rtckit.whip._endpoint import HttpEndpoint, HttpSession, PostedOffer
from rtckit.whip.protocol import WhepConfig

if TYPE_CHECKING:
    from rtckit.topology.mcu import McuViewer

__all__ = ["WhepEndpoint", "WhepSession"]


class WhepSession(HttpSession):
    """One WHEP viewer: its resource and its connection (:attr:`viewer`)."""

    def __init__(
        self,
        *,
        resource_id: str,
        room: str,
        token: str | None,
        viewer: SfuViewer | McuViewer,
        participant: str | None,
        ufrag: str | None,
    ) -> None:
        super().__init__(resource_id=resource_id, room=room, token=token, peer=viewer, ufrag=ufrag)
        #: the receive-only member of the room
        self.viewer = viewer
        #: the participant name of the URL (``None``: the room's default)
        self.participant = participant


class WhepEndpoint(HttpEndpoint[WhepSession]):
    """WHEP egress from the SFU and MCU rooms of *hub*, run by *rooms* (see the module
    documentation).

    *ice_servers* returns the ``RTCIceServer`` dicts a client gets as ``Link`` headers (called
    for each answer, so TURN REST credentials are minted per session); ``None``: none.
    """

    kind = "WHEP"
    permission = "subscribe"
    resource_route = "/{room}/~/{resource}"
    late_delete = True  # browser WHEP clients (npm whip-whep) close first, then DELETE
    default_config = WhepConfig
    places_rooms = False

    def add_routes(self, app: web.Application) -> None:
        """Mount the endpoints and the session resources on *app*."""
        super().add_routes(app)
        app.router.add_route("*", self.config.prefix + "/{room}/{participant}", self._endpoint)

    def _parse(self, offer: str) -> wp.OfferSummary:
        return wp.parse_whep_offer(offer)

    def _check_topology(self, room: str) -> None:
        self._refuse_mesh(room, "to play it from (WHEP plays SFU and MCU rooms)")

    async def _open(self, offer: PostedOffer) -> WhepSession:
        room, summary = offer.room, offer.summary
        participant = offer.request.match_info.get("participant")
        strategy = self.rooms.running.get(room)
        viewer_id = f"whep-{secrets.token_hex(4)}"
        timeout = self.config.connect_timeout
        try:
            if isinstance(strategy, SfuServerStrategy):
                viewer: SfuViewer | McuViewer = await strategy.add_viewer(
                    viewer_id, offer.sdp, participant=participant, connect_timeout=timeout
                )
            elif strategy is not None and strategy.topology is Topology.MCU:
                # imported when used: MCU rooms need the mcu extra (PyAV, numpy)
                from rtckit.topology.mcu import McuServerStrategy

                assert isinstance(strategy, McuServerStrategy)
                if participant is not None:
                    raise wp.problem(
                        409,
                        f"room {room!r} is an MCU room: it plays as one mix, at "
                        f"{self.config.prefix}/{room}, not participant by participant",
                    )
                viewer = await strategy.add_viewer(
                    viewer_id, offer.sdp, kinds=summary.kinds, connect_timeout=timeout
                )
            else:
                raise wp.problem(404, f"nobody is in room {room!r}: there is nothing to play (yet)")
        except NegotiationError as exc:
            raise wp.problem(400, f"the offer cannot be answered: {exc}") from None
        except TopologyError as exc:
            raise wp.problem(404, f"room {room!r} cannot be played: {exc}") from None
        session = WhepSession(
            resource_id=wp.new_resource_id(),
            room=room,
            token=offer.token,
            viewer=viewer,
            participant=participant,
            ufrag=summary.ufrag,
        )
        session.mids = summary.mids
        self._register(session)
        return session
