"""ICE and TURN: aioice connections, the relay policy, STUN errors and timeouts."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from ssl import SSLContext
from typing import TYPE_CHECKING, Any, TypeVar

import aioice.stun

from rtckit.errors import ConfigurationError, IceError, InternalsError, TurnAuthError

if TYPE_CHECKING:
    import aioice
    from aioice import Candidate, Connection
    from aioice.turn import TurnTransport
    from aiortc import RTCIceGatherer, RTCIceTransport

if TYPE_CHECKING:
    pass
from rtckit._aiortc.versions import missing_internal


def ice_connection(transport: RTCIceGatherer | RTCIceTransport) -> Connection:
    """Return the :class:`aioice.Connection` behind an aiortc ICE gatherer or transport.

    Relies on: ``RTCIceGatherer._connection`` and ``RTCIceTransport._connection`` (the aioice
    connection, set in their ``__init__``).
    """
    from aioice import Connection

    connection = getattr(transport, "_connection", None)
    if not isinstance(connection, Connection):
        raise missing_internal(
            f"{type(transport).__name__}._connection is not an aioice.Connection"
        )
    return connection


def force_relay_policy(gatherer: RTCIceGatherer) -> None:
    """Make *gatherer* gather relayed candidates only, as ``iceTransportPolicy: "relay"``.

    For aiortc < 1.16, whose ``RTCConfiguration`` has no ``iceTransportPolicy``. Must be
    called before the gatherer starts gathering (its ``state`` is ``"new"``).

    Relies on: ``RTCIceGatherer._connection`` and ``aioice.Connection._transport_policy``
    (read by ``gather_candidates``, compared with ``aioice.TransportPolicy.RELAY``).
    """
    from aioice import TransportPolicy

    connection = ice_connection(gatherer)
    if not hasattr(connection, "_transport_policy"):
        raise missing_internal("aioice.Connection has no _transport_policy")
    if gatherer.state != "new":
        raise IceError(
            "cannot switch an ICE gatherer to relay-only after gathering started "
            f"(state {gatherer.state!r})"
        )
    connection._transport_policy = TransportPolicy.RELAY


def nominated_pairs(transport: RTCIceTransport) -> list[tuple[Candidate, Candidate]]:
    """Return the ``(local, remote)`` candidates of each nominated (selected) pair.

    aiortc's ``getStats()`` has no candidate-pair statistics, so this is the way to tell
    whether a connection goes through a relay. Empty before ICE completes.

    Relies on: ``aioice.Connection._nominated`` (a dict component -> ``CandidatePair``) and
    ``CandidatePair.local_candidate`` / ``remote_candidate``.
    """
    nominated: Any = getattr(ice_connection(transport), "_nominated", None)
    if not isinstance(nominated, dict):
        raise missing_internal("aioice.Connection._nominated is not a dict")
    try:
        return [
            (pair.local_candidate, pair.remote_candidate)
            for _component, pair in sorted(nominated.items())
        ]
    except AttributeError as exc:
        raise missing_internal(
            "aioice.CandidatePair has no local_candidate/remote_candidate", exc
        ) from exc


def stun_error(exc: BaseException) -> tuple[int, str] | None:
    """The ``(code, reason)`` of a STUN/TURN error response aioice raised, else ``None``.

    Relies on: ``aioice.stun.TransactionFailed`` and its
    ``response.attributes["ERROR-CODE"]`` (a ``(code, reason)`` tuple).
    """
    if not isinstance(exc, aioice.stun.TransactionFailed):
        return None
    code, reason = exc.response.attributes.get("ERROR-CODE", (0, "no error code"))
    return int(code), str(reason)


def is_stun_timeout(exc: BaseException) -> bool:
    """Whether *exc* is aioice giving up on an unanswered STUN/TURN transaction.

    Relies on: ``aioice.stun.TransactionTimeout``.
    """
    return isinstance(exc, aioice.stun.TransactionTimeout)


_P = TypeVar("_P", bound=asyncio.DatagramProtocol)


@contextlib.asynccontextmanager
async def turn_endpoint(
    protocol_factory: Callable[[], _P],
    *,
    server: tuple[str, int],
    username: str,
    password: str,
    transport: str = "udp",
    ssl: bool | SSLContext = False,
) -> AsyncIterator[tuple[TurnTransport, _P]]:
    """Hold a TURN allocation on *server* for the ``async with`` block, with aioice's client.

    Yields the relay transport (``get_extra_info("sockname")``: the relayed address,
    ``get_extra_info("related_address")``: the client's reflexive address; ``sendto`` asks
    the server to relay) and the protocol receiving what the relay hands over. Failures are
    aioice's own exceptions (see :func:`stun_error`, :func:`is_stun_timeout`) or
    :class:`OSError`/:class:`ssl.SSLError`. The allocation is released on exit.

    Relies on: ``aioice.turn.create_turn_endpoint`` (undocumented submodule; its signature
    ``(protocol_factory, server_addr, username, password, ..., ssl, transport)``).
    """
    try:
        from aioice import turn
    except ImportError as exc:  # pragma: no cover - depends on the installed aioice
        raise missing_internal("aioice.turn cannot be imported", exc) from exc
    relay, protocol = await turn.create_turn_endpoint(
        protocol_factory,
        server_addr=server,
        username=username,
        password=password,
        ssl=ssl,
        transport=transport,
    )
    try:
        yield relay, protocol
    finally:
        relay.close()


class _ProbeProtocol(asyncio.DatagramProtocol):
    """Receives nothing; tells when the TURN allocation is gone."""

    def __init__(self) -> None:
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.closed.done():
            self.closed.set_result(None)


async def allocate_turn(
    *,
    server: tuple[str, int],
    username: str,
    password: str,
    transport: str = "udp",
    ssl: bool = False,
    timeout: float = 5.0,  # noqa: ASYNC109 - a bound on a probe of several round trips
) -> tuple[str, int]:
    """Create a TURN allocation on *server*, delete it, and return the relayed address.

    Raises :class:`~rtckit.errors.TurnAuthError` if the server answers 401 (wrong, forged or expired
    credentials) and :class:`~rtckit.errors.IceError` for any other failure or after *timeout*.

    Relies on what :func:`turn_endpoint` and :func:`stun_error` rely on.
    """
    name = f"turn{'s' if ssl else ''}:{server[0]}:{server[1]}?transport={transport}"
    try:
        async with asyncio.timeout(timeout):
            endpoint = turn_endpoint(
                _ProbeProtocol,
                server=server,
                username=username,
                password=password,
                ssl=ssl,
                transport=transport,
            )
            async with endpoint as (relay, protocol):
                relayed: tuple[str, int] = relay.get_extra_info("sockname")
            await protocol.closed
    except TimeoutError as exc:
        raise IceError(f"TURN server {name} did not answer within {timeout} s") from exc
    except (aioice.stun.TransactionError, OSError) as exc:
        error = stun_error(exc)
        if error is None:
            raise IceError(f"TURN server {name} cannot be used: {exc}") from exc
        code, reason = error
        if code == 401:
            raise TurnAuthError(
                f"TURN server {name} refused the credentials for {username!r}: "
                f"401 {reason} (wrong, forged or expired)"
            ) from exc
        raise IceError(f"TURN server {name} refused the allocation: {code} {reason}") from exc
    return relayed


# --- STUN retransmissions and timeouts ---


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
