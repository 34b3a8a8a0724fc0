"""One aiortc peer of a NAT lab scenario, run as its own process inside a lab namespace.

Usage (the NAT lab tests build this command line)::

    python -m rtckit.testing._natpeer --role offer --signal-dir DIR \\
        --ice-config '{"iceServers": [{"urls": "turn:198.51.100.1", "username": "u",
                       "credential": "p"}], "iceTransportPolicy": "relay"}'

The peer connection comes from :func:`rtckit.peer.connection.create_peer_connection`: the relay
policy is honoured and a TURN server that refuses the credential is a ``TurnAuthError``
naming it (aiortc alone would offer no relay candidate and wait forever).

Signaling goes through files in ``--signal-dir`` (every namespace shares the filesystem):
the offerer writes ``offer.json``, the answerer ``answer.json``, each written atomically; a
peer that cannot go on writes ``{"abort": reason}`` instead so the other side stops at once.
Once connected, the offerer sends ``ping`` on a data channel and waits for ``pong``.

The peer prints one JSON object on stdout and exits 0 (exit 2 only for a usage error)::

    {"role": "offer", "connected": true, "state": "connected",
     "local_candidate_type": "relay", "remote_candidate_type": "srflx", ...,
     "gather_seconds": 0.1, "connect_seconds": 0.4, "error": null, "error_type": null}

There is never an implicit ICE server: only the ``--ice-config`` given (none: host candidates
only; aiortc would otherwise use Google's public STUN server).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from aiortc import RTCSessionDescription

from rtckit import _aiortc
from rtckit.errors import IceError
from rtckit.ice import IceConfig
from rtckit.ice.candidates import parse_candidate
from rtckit.peer.connection import create_peer_connection

__all__ = ["main"]

_POLL = 0.02


def _write(path: Path, data: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data))
    tmp.replace(path)


def _read_if_there(path: Path) -> dict[str, Any] | None:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    return data


async def _wait_file(path: Path, deadline: float) -> dict[str, Any] | None:
    while time.monotonic() < deadline:
        data = _read_if_there(path)
        if data is not None:
            return data
        await asyncio.sleep(_POLL)
    return None


def _candidate_types(sdp: str) -> list[str]:
    return [
        parse_candidate(line).type for line in sdp.splitlines() if line.startswith("a=candidate:")
    ]


class _Peer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.role: str = args.role
        self.signal_dir = Path(args.signal_dir)
        self.ice_config = IceConfig.from_json(args.ice_config)
        self.pc = create_peer_connection(self.ice_config)
        self.result: dict[str, Any] = {
            "role": self.role,
            "label": args.label,
            "connected": False,
            "state": "new",
            "local_candidate_types": [],
            "local_candidate_type": None,
            "remote_candidate_type": None,
            "local_candidate": None,
            "remote_candidate": None,
            "gather_seconds": None,
            "connect_seconds": None,
            "data_seconds": None,
            "error": None,
            "error_type": None,
        }
        self.state_changed = asyncio.Event()
        self.pong = asyncio.Event()
        self.pc.on("connectionstatechange", self.state_changed.set)

    def fail(self, error_type: str, message: str) -> None:
        if self.result["error"] is None:
            self.result["error_type"] = error_type
            self.result["error"] = message

    async def gather(self, make: str) -> bool:
        """Create and set the local description; False (and abort) if TURN refused us."""
        started = time.monotonic()
        description = await (self.pc.createOffer() if make == "offer" else self.pc.createAnswer())
        try:
            await self.pc.setLocalDescription(description)
        except IceError as exc:  # TurnAuthError: the server refused the credential
            self.fail(type(exc).__name__, str(exc))
            self.result["state"] = "failed"
            return False
        finally:
            self.result["gather_seconds"] = round(time.monotonic() - started, 4)
        self.result["local_candidate_types"] = _candidate_types(self.pc.localDescription.sdp)
        return True

    async def wait_connected(self, started: float, deadline: float) -> None:
        while self.pc.connectionState not in ("connected", "failed", "closed"):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            self.state_changed.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await self.state_changed.wait()
        state = self.pc.connectionState
        self.result["state"] = state
        if state == "connected":
            self.result["connect_seconds"] = round(time.monotonic() - started, 4)
            self.record_pair()
        elif state == "failed":
            self.fail("IceError", "ICE failed: no candidate pair worked")
        else:
            self.fail(
                "IceError",
                f"ICE did not complete within {self.args.ice_timeout:g} s (state {state})",
            )

    def record_pair(self) -> None:
        sctp = self.pc.sctp
        if sctp is None:
            return
        pairs = _aiortc.nominated_pairs(sctp.transport.transport)
        if not pairs:
            return
        local, remote = pairs[0]
        self.result["local_candidate_type"] = local.type
        self.result["remote_candidate_type"] = remote.type
        self.result["local_candidate"] = f"{local.host}:{local.port}"
        self.result["remote_candidate"] = f"{remote.host}:{remote.port}"

    async def remote_description(self, kind: str, deadline: float) -> dict[str, Any] | None:
        """The other peer's *kind* (offer/answer) description, or None (failure recorded)."""
        description = await _wait_file(self.signal_dir / f"{kind}.json", deadline)
        if description is None:
            self.fail("SignalingError", f"no {kind} from the other peer")
            return None
        if "abort" in description:
            self.fail("IceError", f"the other peer gave up: {description['abort']}")
            return None
        return description

    async def run_offer(self, deadline: float) -> None:
        channel = self.pc.createDataChannel("natlab")
        channel.on("open", lambda: channel.send("ping"))
        channel.on("message", lambda m: self.pong.set() if m == "pong" else None)
        offer_path = self.signal_dir / "offer.json"
        if not await self.gather("offer"):
            _write(offer_path, {"abort": self.result["error"]})
            return
        sdp = self.pc.localDescription
        _write(offer_path, {"type": sdp.type, "sdp": sdp.sdp})
        answer = await self.remote_description("answer", deadline)
        if answer is None:
            return
        started = time.monotonic()
        await self.pc.setRemoteDescription(RTCSessionDescription(answer["sdp"], answer["type"]))
        ice_deadline = min(deadline, started + self.args.ice_timeout)
        await self.wait_connected(started, ice_deadline)
        if self.pc.connectionState != "connected":
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                await self.pong.wait()
        if self.pong.is_set():
            self.result["connected"] = True
            self.result["data_seconds"] = round(time.monotonic() - started, 4)
        else:
            self.fail("IceError", "ICE connected but the data channel carried nothing")
        _write(self.signal_dir / "done.json", {"ok": self.pong.is_set()})

    async def run_answer(self, deadline: float) -> None:
        got_ping = asyncio.Event()

        def on_channel(channel: Any) -> None:
            def on_message(message: object) -> None:
                if message == "ping":
                    channel.send("pong")
                    got_ping.set()

            channel.on("message", on_message)

        self.pc.on("datachannel", on_channel)
        offer = await self.remote_description("offer", deadline)
        if offer is None:
            return
        await self.pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], offer["type"]))
        answer_path = self.signal_dir / "answer.json"
        if not await self.gather("answer"):
            _write(answer_path, {"abort": self.result["error"]})
            return
        started = time.monotonic()
        sdp = self.pc.localDescription
        _write(answer_path, {"type": sdp.type, "sdp": sdp.sdp})
        ice_deadline = min(deadline, started + self.args.ice_timeout)
        await self.wait_connected(started, ice_deadline)
        if self.pc.connectionState != "connected":
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(max(0.1, deadline - time.monotonic())):
                await got_ping.wait()
        if got_ping.is_set():
            self.result["connected"] = True
            self.result["data_seconds"] = round(time.monotonic() - started, 4)
            # Stay until the offerer has read the pong (or the deadline).
            await _wait_file(self.signal_dir / "done.json", min(deadline, time.monotonic() + 5))
        else:
            self.fail("IceError", "ICE connected but no data channel message arrived")

    async def run(self) -> dict[str, Any]:
        deadline = time.monotonic() + self.args.timeout
        try:
            if self.role == "offer":
                await self.run_offer(deadline)
            else:
                await self.run_answer(deadline)
        except Exception as exc:  # noqa: BLE001 - reported in the JSON result
            self.fail(type(exc).__name__, str(exc))
        finally:
            await self.pc.close()
        return self.result


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m rtckit.testing._natpeer")
    parser.add_argument("--role", choices=("offer", "answer"), required=True)
    parser.add_argument("--signal-dir", required=True)
    parser.add_argument("--label", default="")
    parser.add_argument(
        "--ice-config",
        default="[]",
        help="the browser RTCConfiguration as JSON (rtckit.ice.IceConfig.to_json())",
    )
    parser.add_argument("--timeout", type=float, default=30.0, help="whole run, seconds")
    parser.add_argument(
        "--ice-timeout", type=float, default=15.0, help="ICE failure deadline, seconds"
    )
    parser.add_argument(
        "--stun-retries",
        type=int,
        default=None,
        help="aioice STUN retransmissions (default: aioice's own, 6 = 63.5 s per check)",
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one peer; print its JSON result."""
    args = _parser().parse_args(argv)
    if args.stun_retries is not None:
        _aiortc.set_stun_retransmissions(args.stun_retries)
    result = asyncio.run(_Peer(args).run())
    result["pid"] = os.getpid()
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
