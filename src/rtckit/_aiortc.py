"""Every touch of aiortc/aioice private internals, each a small named function.

Each function says in its docstring what it relies on; ``tests/test_aiortc_internals.py`` checks
each reliance so that an aiortc/aioice upgrade that moves one fails loudly there. Helpers append
their own section under a ``# --- <topic> ---`` header.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aioice.stun

from rtckit.errors import ConfigurationError, InternalsError

if TYPE_CHECKING:
    import aioice
    from aiortc import RTCIceTransport

__all__ = [
    "selected_candidate_pair",
    "set_stun_retransmissions",
    "stun_transaction_timeout",
]


# --- natlab / ice timeouts ---


def set_stun_retransmissions(count: int) -> int:
    """Set how many times aioice retransmits a STUN request; return the previous count.

    Relies on the module global ``aioice.stun.RETRY_MAX`` (default 6), which
    ``aioice.stun.Transaction.__init__`` reads whenever no explicit ``retransmissions`` is
    given: every ICE connectivity check, STUN binding and TURN request of the process.
    With the default, one unanswered check gives up after 63.5 s, so a hopeless ICE attempt
    (symmetric NAT on both sides, no TURN) takes about a minute to be declared failed;
    ``set_stun_retransmissions(2)`` makes that 3.5 s. This is process-wide: set it once at
    start-up (the NAT lab's peer processes do), not per connection.
    """
    if not 0 <= count <= 10:
        raise ConfigurationError(f"STUN retransmissions must be 0..10, not {count}")
    previous = getattr(aioice.stun, "RETRY_MAX", None)
    if not isinstance(previous, int):
        raise InternalsError("aioice.stun.RETRY_MAX is gone: cannot bound ICE check timeouts")
    aioice.stun.RETRY_MAX = count
    return previous


def stun_transaction_timeout(retransmissions: int | None = None) -> float:
    """Seconds after which one unanswered aioice STUN transaction gives up.

    Relies on ``aioice.stun.RETRY_RTO`` (initial timeout, doubled at each try) and
    ``aioice.stun.RETRY_MAX`` (used when *retransmissions* is ``None``).
    """
    rto = getattr(aioice.stun, "RETRY_RTO", None)
    count: int = retransmissions if retransmissions is not None else aioice.stun.RETRY_MAX
    if not isinstance(rto, int | float):
        raise InternalsError("aioice.stun.RETRY_RTO is gone")
    return float(rto) * float(2 ** (count + 1) - 1)


def selected_candidate_pair(
    ice_transport: RTCIceTransport,
) -> tuple[aioice.Candidate, aioice.Candidate] | None:
    """The (local, remote) candidates of the nominated pair of component 1, if any.

    aiortc's ``getStats()`` has no candidate-pair stats. Relies on
    ``RTCIceTransport._connection`` (the ``aioice.Connection``), its ``_nominated`` dict
    (component -> ``CandidatePair``) and ``CandidatePair.local_candidate`` /
    ``remote_candidate``.
    """
    connection = getattr(ice_transport, "_connection", None)
    nominated = getattr(connection, "_nominated", None)
    if not isinstance(nominated, dict):
        raise InternalsError("RTCIceTransport._connection._nominated is gone")
    pair = nominated.get(1)
    if pair is None:
        return None
    return pair.local_candidate, pair.remote_candidate
