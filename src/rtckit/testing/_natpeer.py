"""One aiortc peer of a NAT lab scenario, run as its own process inside a lab namespace.

Usage (the NAT lab tests build this command line)::

    python -m rtckit.testing._natpeer --role offer --signal-dir DIR \\
        --ice-server '{"urls": "turn:198.51.100.1:3478", "username": "u", "credential": "p"}'

Signaling goes through files in ``--signal-dir`` (every namespace shares the filesystem):
the offerer writes ``offer.json``, the answerer ``answer.json``, each written atomically; a
peer that cannot go on writes ``{"abort": reason}`` instead so the other side stops at once.
Once connected, the offerer sends ``ping`` on a data channel and waits for ``pong``.

The peer prints one JSON object on stdout and exits 0 (exit 2 only for a usage error)::

    {"role": "offer", "connected": true, "state": "connected",
     "local_candidate_type": "relay", "remote_candidate_type": "srflx", ...,
     "gather_seconds": 0.1, "connect_seconds": 0.4, "error": null, "error_type": null}

There is never an implicit ICE server: only the ``--ice-server`` options given (aiortc would
otherwise use Google's public STUN server).
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

from aiortc import RTCConfiguration, RTCIceServer, RTCPeerConnection, RTCSessionDescription

from rtckit import _aiortc
from rtckit.candidates import parse_candidate
from rtckit.doctor import DoctorConfig, probe_server

__all__ = ["main"]

_POLL = 0.02


def _ice_servers(specs: list[str]) -> list[RTCIceServer]:
    servers = []
    for spec in specs:
        data = json.loads(spec)
        servers.append(
            RTCIceServer(
                urls=data["urls"], username=data.get("username"), credential=data.get("credential")
            )
        )
    return servers


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


async def _turn_diagnosis(servers: list[RTCIceServer]) -> tuple[str, str] | None:
    """If a TURN server is configured, say why it gave no relay candidate."""
    for server in servers:
        urls = [server.urls] if isinstance(server.urls, str) else list(server.urls)
        for url in urls:
            if not url.startswith(("turn:", "turns:")):
                continue
            config = DoctorConfig(
                timeout=3.0, username=server.username, credential=server.credential
            )
            result = await probe_server(url, config)
            if result.error_code == 401:
                return "TurnAuthError", f"TURN server {url} refused the credentials: {result.cause}"
            cause = result.cause or "the allocation worked when probed again"
            return "IceError", f"TURN server {url} gave no relay candidate: {cause}"
    return None


class _Peer:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.role: str = args.role
        self.signal_dir = Path(args.signal_dir)
        self.servers = _ice_servers(args.ice_server)
        self.pc = RTCPeerConnection(RTCConfiguration(iceServers=self.servers))
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
        """Create and set the local description; False (and abort) if TURN gave nothing."""
        started = time.monotonic()
        description = await (self.pc.createOffer() if make == "offer" else self.pc.createAnswer())
        await self.pc.setLocalDescription(description)
        self.result["gather_seconds"] = round(time.monotonic() - started, 4)
        types = _candidate_types(self.pc.localDescription.sdp)
        self.result["local_candidate_types"] = types
        wants_turn = any(
            u.startswith(("turn:", "turns:"))
            for s in self.servers
            for u in ([s.urls] if isinstance(s.urls, str) else s.urls)
        )
        if wants_turn and "relay" not in types:
            diagnosis = await _turn_diagnosis(self.servers)
            error_type, message = diagnosis or ("IceError", "no relay candidate")
            self.fail(error_type, message)
            self.result["state"] = "failed"
            return False
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
        pair = _aiortc.selected_transport_pair(sctp.transport.transport)
        if pair is None:
            return
        local, remote = pair
        self.result["local_candidate_type"] = local.type
        self.result["remote_candidate_type"] = remote.type
        self.result["local_candidate"] = f"{local.host}:{local.port}"
        self.result["remote_candidate"] = f"{remote.host}:{remote.port}"

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
        answer = await _wait_file(self.signal_dir / "answer.json", deadline)
        if answer is None:
            self.fail("SignalingError", "no answer from the other peer")
            return
        if "abort" in answer:
            self.fail("IceError", f"the other peer gave up: {answer['abort']}")
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
        offer = await _wait_file(self.signal_dir / "offer.json", deadline)
        if offer is None:
            self.fail("SignalingError", "no offer from the other peer")
            return
        if "abort" in offer:
            self.fail("IceError", f"the other peer gave up: {offer['abort']}")
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
        "--ice-server",
        action="append",
        default=[],
        help='JSON {"urls": ..., "username": ..., "credential": ...}; repeatable',
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
