"""Perfect negotiation as a pure state machine (no asyncio, no aiortc).

This is the W3C "perfect negotiation" pattern
(https://w3c.github.io/webrtc-pc/#perfect-negotiation-example) with its flags
``makingOffer``, ``ignoreOffer`` and ``isSettingRemoteAnswerPending``, written so that every
decision is returned as data. The asyncio layer (:class:`rtckit.peer.session.PeerSession`)
feeds it what happened and performs what it returns, one step at a time.

Two differences from the browser version, both forced by aiortc:

* aiortc has no ``negotiationneeded`` event, so local changes are counted:
  :meth:`Negotiator.local_change` bumps a change counter, an offer records the counter it
  covers, and the machine offers again after reaching ``stable`` while changes remain.
* aiortc has no implicit rollback. When the polite side meets a colliding offer the machine
  says so explicitly (``ApplyRemoteDescription(rollback=True)``), and the session rolls back.
  aiortc cannot roll back its very first offer (its ICE role is fixed by then), so on a fresh
  connection the polite side never offers first: it waits for the impolite side's offer,
  which always comes because the impolite side has at least one change to offer.

Transitions (``signaling state``: event -> decision):

.. code-block:: text

    stable            local_change         -> MakeOffer (or Wait while polite and new)
    stable            offer_made           -> have-local-offer, SendDescription
    have-local-offer  remote answer        -> ApplyRemoteDescription -> stable
    stable            remote offer         -> ApplyRemoteDescription -> have-remote-offer
    have-local-offer  remote offer, polite -> ApplyRemoteDescription(rollback=True)
    have-local-offer  remote offer, impolite -> IgnoreOffer
    have-remote-offer answer_made          -> stable, SendDescription
"""

from __future__ import annotations

import enum

import attrs

from rtckit._deprecated import renamed
from rtckit.errors import NegotiationError

__all__ = [
    "ApplyRemoteDescription",
    "Decision",
    "DropDescription",
    "IgnoreOffer",
    "MakeAnswer",
    "MakeOffer",
    "NegotiationState",
    "Negotiator",
    "Nothing",
    "SendDescription",
    "Wait",
    "polite_for",
]


class NegotiationState(enum.StrEnum):
    """The signaling states the machine mirrors (``RTCSignalingState`` without pranswer)."""

    STABLE = "stable"
    HAVE_LOCAL_OFFER = "have-local-offer"
    HAVE_REMOTE_OFFER = "have-remote-offer"


# Deprecated name: rtckit.signaling.state.SignalingState is the signaling server's machine.
__getattr__ = renamed(
    __name__, {"SignalingState": ("rtckit.peer.negotiation.NegotiationState", NegotiationState)}
)


@attrs.frozen
class Nothing:
    """Nothing to do."""


@attrs.frozen(kw_only=True)
class Wait:
    """A negotiation is needed but must wait (*reason* says why)."""

    reason: str


@attrs.frozen
class MakeOffer:
    """Create an offer and set it as local description, then call ``offer_made``."""


@attrs.frozen
class MakeAnswer:
    """Create an answer and set it as local description, then call ``answer_made``."""


@attrs.frozen(kw_only=True)
class SendDescription:
    """Send the local description (offer or answer) that was just set."""

    type: str


@attrs.frozen(kw_only=True)
class ApplyRemoteDescription:
    """Set the remote description; first roll back the local offer if *rollback*."""

    type: str
    rollback: bool = False


@attrs.frozen
class IgnoreOffer:
    """The impolite side ignores a colliding offer (the remote side will roll back)."""


@attrs.frozen(kw_only=True)
class DropDescription:
    """A description that makes no sense in this state (e.g. a stale answer) is dropped."""

    reason: str


Decision = (
    Nothing
    | Wait
    | MakeOffer
    | MakeAnswer
    | SendDescription
    | ApplyRemoteDescription
    | IgnoreOffer
    | DropDescription
)


def polite_for(local_id: str, remote_id: str) -> bool:
    """Deterministic roles: the side with the smaller id is polite, the other impolite."""
    if local_id == remote_id:
        raise NegotiationError(f"both sides have the id {local_id!r}")
    return local_id < remote_id


@attrs.define(kw_only=True)
class Negotiator:
    """The perfect-negotiation state of one side of one peer connection."""

    polite: bool
    state: NegotiationState = NegotiationState.STABLE
    making_offer: bool = False
    ignore_offer: bool = False
    is_setting_remote_answer_pending: bool = False
    #: At least one offer/answer exchange completed on this connection.
    established: bool = False
    #: Local changes requested so far, and the number covered by a completed negotiation.
    changes: int = 0
    negotiated: int = 0
    #: The change count covered by the offer in flight.
    offering: int | None = None

    # -- local side -------------------------------------------------------------------------

    def local_change(self) -> Decision:
        """A track or data channel was added/removed: negotiation is needed."""
        self.changes += 1
        return self.next_step()

    def next_step(self) -> Decision:
        """What to do now, if anything (call whenever the state settles)."""
        if self.negotiated >= self.changes:
            return Nothing()
        if self.making_offer:
            return Wait(reason="an offer is being made")
        if self.state is not NegotiationState.STABLE:
            return Wait(reason=f"signaling state is {self.state.value}")
        if self.polite and not self.established:
            return Wait(reason="the polite side waits for the first offer")
        self.making_offer = True
        self.offering = self.changes
        return MakeOffer()

    def offer_made(self) -> Decision:
        """The local offer is set (``have-local-offer``): send it."""
        if not self.making_offer:
            raise NegotiationError("offer_made() without a MakeOffer decision")
        self.making_offer = False
        self.state = NegotiationState.HAVE_LOCAL_OFFER
        return SendDescription(type="offer")

    def offer_failed(self) -> Decision:
        """Making the offer failed; the changes stay pending."""
        self.making_offer = False
        self.offering = None
        return Nothing()

    # -- remote side ------------------------------------------------------------------------

    def remote_description(self, type_: str) -> Decision:
        """A remote description of *type_* (``"offer"`` or ``"answer"``) arrived."""
        if type_ not in ("offer", "answer"):
            raise NegotiationError(f"unsupported description type {type_!r}")
        ready_for_offer = not self.making_offer and (
            self.state is NegotiationState.STABLE or self.is_setting_remote_answer_pending
        )
        collision = type_ == "offer" and not ready_for_offer
        self.ignore_offer = not self.polite and collision
        if self.ignore_offer:
            return IgnoreOffer()
        if type_ == "answer":
            if self.state is not NegotiationState.HAVE_LOCAL_OFFER:
                return DropDescription(reason=f"answer in state {self.state.value}")
            self.is_setting_remote_answer_pending = True
            return ApplyRemoteDescription(type="answer")
        if collision and self.making_offer:
            # Cannot happen with a serialized session: the offer step runs to its end first.
            return DropDescription(reason="offer while making an offer")
        return ApplyRemoteDescription(type="offer", rollback=collision)

    def rolled_back(self) -> None:
        """The local offer was rolled back (polite side, offer collision)."""
        self.state = NegotiationState.STABLE
        self.offering = None

    def remote_applied(self, type_: str) -> Decision:
        """The remote description of *type_* is set."""
        if type_ == "answer":
            self.is_setting_remote_answer_pending = False
            self.state = NegotiationState.STABLE
            if self.offering is not None:
                self.negotiated = max(self.negotiated, self.offering)
            self.offering = None
            self.established = True
            return self.next_step()
        self.state = NegotiationState.HAVE_REMOTE_OFFER
        return MakeAnswer()

    def remote_failed(self, type_: str) -> Decision:
        """Setting the remote description failed: the state is unchanged."""
        if type_ == "answer":
            self.is_setting_remote_answer_pending = False
        return Nothing()

    def answer_made(self) -> Decision:
        """The local answer is set (back to ``stable``): send it, then offer pending changes."""
        if self.state is not NegotiationState.HAVE_REMOTE_OFFER:
            raise NegotiationError("answer_made() without a remote offer")
        self.state = NegotiationState.STABLE
        self.established = True
        return SendDescription(type="answer")

    def accept_candidate_errors(self) -> bool:
        """Whether a failure to add a remote candidate is expected (from an ignored offer)."""
        return self.ignore_offer
