"""SFU forwarding benchmark: rtckit's packet forwarder against aiortc's MediaRelay fan-out.

Two processes on loopback, so the SFU's CPU is measured alone:

* the *load* process holds one publisher that replays a real VP8 stream (640x480, 30 fps,
  ~1 Mbps, synthetic pictures encoded once ahead of time) and N light subscribers (aiortc
  connections whose receivers only decrypt and time the packets, no decoding), plus a direct
  publisher -> subscriber pair for the latency baseline;
* the *SFU* process holds the server-side aiortc connections and either rtckit's
  :class:`~rtckit.sfu.SfuRouter` (mode ``sfu``) or the stock decode + ``MediaRelay`` +
  re-encode fan-out (mode ``relay``).

Measured per subscriber count: SFU process CPU (all threads, ``time.process_time``) per
forwarded stream, packets forwarded per second per core, and latency from the publisher's
send to the subscriber's receive (p50/p99), minus the direct path's (added latency).

Run: ``python benchmarks/sfu.py`` (about five minutes; each figure is the median of
``--repeat`` windows); ``--profile`` prints where the SFU
process spends its time at the largest subscriber count. Results go to
``docs/topics/sfu-benchmark.rst`` and ``docs/_static/sfu-benchmark.svg``.

``python benchmarks/sfu.py --simulcast`` (under three minutes, needs Chromium) measures
simulcast instead: a headless Chromium page publishes its fake camera through ``rtckit.js``,
as one layer and then as three, into a server process (signaling and SFU) on loopback;
``--simulcast-subscribers`` aiortc participants subscribe, spread over the layers with
``SfuRoom.set_video_quality``. Measured: the server process's CPU per subscriber in both
phases, frozen frame intervals, explicit layer switches of one subscriber, and the automatic
selection's answer to a drop of one subscriber's downlink (a policer on the SFU's send path)
and its recovery. Results go to ``docs/topics/simulcast-benchmark.rst``.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import cProfile
import fractions
import io
import itertools
import multiprocessing
import multiprocessing.connection
import os
import pstats
import statistics
import struct
import sys
import time
from collections.abc import AsyncIterator, Iterable
from pathlib import Path
from typing import Any

import av
import numpy as np
from aiohttp import web
from aiortc import (
    MediaStreamTrack,
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
)
from aiortc.contrib.media import MediaRelay

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from rtckit import _aiortc  # noqa: E402
from rtckit.peer import SessionConfig  # noqa: E402
from rtckit.sfu import ForwardingTrack, SfuRouter, add_forwarding_transceiver  # noqa: E402
from rtckit.sfu.rtp import parse_rtp_header  # noqa: E402
from rtckit.signaling import OpenAuth, RoomConfig, SignalingClient, SignalingConfig  # noqa: E402
from rtckit.signaling.wsserver import SignalingServer  # noqa: E402
from rtckit.testing import require_executable  # noqa: E402
from rtckit.testing.browser import launch_chromium  # noqa: E402
from rtckit.testing.labroom import SIMULCAST_TRIAL  # noqa: E402
from rtckit.topology import TrackPublished, join_room  # noqa: E402
from rtckit.topology.sfu import SfuRoom, SfuServerStrategy  # noqa: E402
from rtckit.topology.strategies import RoomStrategies  # noqa: E402

WIDTH, HEIGHT, FPS, BITRATE = 640, 480, 30, 1_000_000
LOOP_FRAMES = 90
MTU_PAYLOAD = 1100


def cfg() -> RTCConfiguration:
    return RTCConfiguration(iceServers=[])


# --- the publisher's stream, encoded once --------------------------------------------------


def encode_stream() -> list[tuple[int, bool, list[bytes]]]:
    """VP8 frames of a moving noisy picture: ``(rtp timestamp, keyframe, payloads)``."""
    codec = av.CodecContext.create("libvpx", "w")
    codec.width, codec.height = WIDTH, HEIGHT
    codec.pix_fmt = "yuv420p"
    codec.bit_rate = BITRATE
    codec.framerate = fractions.Fraction(FPS, 1)
    codec.time_base = fractions.Fraction(1, FPS)
    codec.gop_size = FPS
    codec.options = {"deadline": "realtime", "cpu-used": "8", "lag-in-frames": "0"}
    rng = np.random.default_rng(1)
    coarse = rng.integers(0, 255, (HEIGHT // 16, WIDTH * 2 // 16, 3), dtype=np.uint8)
    texture = np.repeat(np.repeat(coarse, 16, axis=0), 16, axis=1)
    frames: list[tuple[int, bool, list[bytes]]] = []
    for n in range(LOOP_FRAMES):
        img = np.ascontiguousarray(texture[:, n * 4 % WIDTH : n * 4 % WIDTH + WIDTH])
        img[(n * 7) % HEIGHT :: 61, :, :] = rng.integers(0, 255, (3, 3), dtype=np.uint8)[0]
        frame = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuv420p")
        frame.pts = n
        for packet in codec.encode(frame):
            data = bytes(packet)
            chunks = [data[i : i + MTU_PAYLOAD] for i in range(0, len(data), MTU_PAYLOAD)]
            payloads = [bytes([0x10 if i == 0 else 0x00]) + c for i, c in enumerate(chunks)]
            frames.append((n * (90000 // FPS), packet.is_keyframe, payloads))
    return frames


# --- SFU process ---------------------------------------------------------------------------


def transceiver_of(pc: RTCPeerConnection, track: MediaStreamTrack) -> RTCRtpTransceiver:
    return next(t for t in pc.getTransceivers() if t.receiver.track is track)


async def sfu_main(conn: multiprocessing.connection.Connection, mode: str) -> None:
    loop = asyncio.get_running_loop()
    router = SfuRouter()
    relay = MediaRelay()
    pcs: list[RTCPeerConnection] = []
    pubs: list[Any] = []
    relay_tracks: list[MediaStreamTrack] = []
    counters = _aiortc.sfu_codec_counters()
    profiler: cProfile.Profile | None = None
    # SFU-internal latency: publication sink (packet in) -> each subscriber's send
    entered = [0.0]
    internal: list[float] = []

    def sink(data: bytes, header: Any, keyframe: bool) -> None:
        entered[0] = time.perf_counter()

    def keep(data: bytes) -> bool:
        if len(internal) < 200_000:
            internal.append(time.perf_counter() - entered[0])
        return True

    async def answer(pc: RTCPeerConnection, sdp: str) -> str:
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return pc.localDescription.sdp

    while True:
        msg = await loop.run_in_executor(None, conn.recv)
        cmd = msg["cmd"]
        if cmd == "publish":
            pc = RTCPeerConnection(cfg())
            pcs.append(pc)

            @pc.on("track")
            def on_track(track: MediaStreamTrack, pc: RTCPeerConnection = pc) -> None:
                if mode == "sfu":
                    pubs.append(router.publish("publisher", transceiver_of(pc, track)))
                    pubs[-1].sinks.append(sink)
                else:
                    relay_tracks.append(track)

            conn.send(await answer(pc, msg["sdp"]))
        elif cmd == "subscribe":
            offers = []
            new = []
            for _ in range(msg["count"]):
                pc = RTCPeerConnection(cfg())
                pcs.append(pc)
                if mode == "sfu":
                    t = add_forwarding_transceiver(pc, "video", mime_type="video/VP8")
                else:
                    t = pc.addTransceiver(relay.subscribe(relay_tracks[0]), direction="sendonly")
                    caps = RTCRtpSender.getCapabilities("video").codecs
                    t.setCodecPreferences([c for c in caps if c.mimeType == "video/VP8"])
                await pc.setLocalDescription(await pc.createOffer())
                offers.append(pc.localDescription.sdp)
                new.append((pc, t))
            conn.send(offers)
            answers = await loop.run_in_executor(None, conn.recv)
            for (pc, t), sdp in zip(new, answers, strict=True):
                await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="answer"))
                if mode == "sfu":
                    sub = router.subscribe(f"s{len(pcs)}", pubs[0].key, t)
                    if len(router.subscriptions()) <= 2:
                        sub.set_send_filter(keep)  # time the first two subscribers only
            conn.send("ok")
        elif cmd == "measure":
            stats0 = router.stats()
            if msg.get("profile"):
                profiler = cProfile.Profile()
                profiler.enable()
            internal.clear()
            cpu0, wall0 = time.process_time(), time.monotonic()
            await asyncio.sleep(msg["seconds"])
            cpu1, wall1 = time.process_time(), time.monotonic()
            profile_text = ""
            if profiler is not None:
                profiler.disable()
                out = io.StringIO()
                pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(18)
                profile_text = out.getvalue()
                profiler = None
            stats1 = router.stats()
            conn.send(
                {
                    "cpu": (cpu1 - cpu0) / (wall1 - wall0),
                    "packets_out": (stats1.packets_out - stats0.packets_out) / (wall1 - wall0),
                    "packets_in": (stats1.packets_in - stats0.packets_in) / (wall1 - wall0),
                    "decoders": counters.decoders,
                    "encoders": counters.encoders,
                    "sfu_decoders": stats1.decoders_created,
                    "sfu_encoders": stats1.encoders_created,
                    "profile": profile_text,
                    "internal_p50": percentile(internal, 0.5),
                    "internal_p99": percentile(internal, 0.99),
                }
            )
        elif cmd == "quit":
            break
    await router.aclose()
    for pc in pcs:
        await pc.close()
    conn.send("bye")
    conn.close()


def sfu_process(conn: multiprocessing.connection.Connection, mode: str) -> None:
    asyncio.run(sfu_main(conn, mode))


# --- load process (this one) ---------------------------------------------------------------


class Load:
    """Publisher replay, light subscribers, and latency bookkeeping."""

    def __init__(self, frames: list[tuple[int, bool, list[bytes]]]) -> None:
        self.frames = frames
        self.sent_at: dict[bytes, float] = {}
        self.samples: list[float] = []
        self.direct_samples: list[float] = []
        self.received = 0
        self.pcs: list[RTCPeerConnection] = []
        self.senders: list[tuple[Any, int, int]] = []  # (send function, ssrc, payload type)
        self.replay_task: asyncio.Task[None] | None = None

    async def publisher(self, offer_to: Any) -> None:
        """Connect one sending connection; ``offer_to(sdp) -> answer sdp``."""
        pc = RTCPeerConnection(cfg())
        self.pcs.append(pc)
        t = pc.addTransceiver(ForwardingTrack("video"), direction="sendonly")
        caps = RTCRtpSender.getCapabilities("video").codecs
        t.setCodecPreferences([c for c in caps if c.mimeType == "video/VP8"])
        await pc.setLocalDescription(await pc.createOffer())
        answer = await offer_to(pc.localDescription.sdp)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))
        await self._connected(pc)
        ssrc, _ = _aiortc.sfu_sender_ssrcs(t.sender)
        pt = _aiortc.sfu_negotiated_codecs(t)[0].payloadType
        assert pt is not None
        self.senders.append((_aiortc.sfu_send_function(t.sender.transport), ssrc, pt))

    async def subscriber(self, offer: str, *, direct: bool = False, timed: bool = True) -> str:
        """A light subscriber for ``offer``: decrypts and counts; ``timed`` ones time packets."""
        pc = RTCPeerConnection(cfg())
        self.pcs.append(pc)
        samples = self.direct_samples if direct else self.samples

        @pc.on("track")
        def on_track(track: MediaStreamTrack) -> None:
            t = transceiver_of(pc, track)

            async def on_rtp(data: bytes, arrival_ms: int) -> None:
                now = time.perf_counter()
                h = parse_rtp_header(data)
                sent = self.sent_at.get(data[h.payload_offset : h.payload_end])
                if sent is not None:
                    samples.append(now - sent)
                if not direct:
                    self.received += 1

            async def count(data: bytes, arrival_ms: int) -> None:
                self.received += 1

            _aiortc.sfu_take_over_receiver(t.receiver, lambda params: None)
            _aiortc.sfu_install_rtp_tap(
                t.receiver.transport, t.receiver, on_rtp if timed else count
            )

        await pc.setRemoteDescription(RTCSessionDescription(sdp=offer, type="offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        return pc.localDescription.sdp

    async def direct_pair(self) -> None:
        """A publisher connection straight to a light subscriber (latency baseline)."""

        async def offer_to(sdp: str) -> str:
            return await self.subscriber(sdp, direct=True)

        await self.publisher(offer_to)

    @staticmethod
    async def _connected(pc: RTCPeerConnection) -> None:
        async with asyncio.timeout(20):
            while pc.connectionState != "connected":  # noqa: ASYNC110 - aiortc sets it
                await asyncio.sleep(0.02)

    async def replay(self) -> None:
        seqs = [1000 * (i + 1) for i in range(len(self.senders))]
        start = time.monotonic()
        n = 0
        loop_ts = LOOP_FRAMES * (90000 // FPS)
        while True:
            delay = start + n / FPS - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            ts_base, _, payloads = self.frames[n % len(self.frames)]
            ts = (ts_base + (n // len(self.frames)) * loop_ts) & 0xFFFFFFFF
            for i, payload in enumerate(payloads):
                marker = 0x80 if i == len(payloads) - 1 else 0
                self.sent_at[payload] = time.perf_counter()
                for k, (send, ssrc, pt) in enumerate(self.senders):
                    header = struct.pack("!BBHII", 0x80, marker | pt, seqs[k] & 0xFFFF, ts, ssrc)
                    seqs[k] += 1
                    with contextlib.suppress(ConnectionError):
                        await send(header + payload)
                await asyncio.sleep(0)  # let receivers run: no artificial burst queueing
            n += 1

    async def close(self) -> None:
        if self.replay_task is not None:
            self.replay_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.replay_task
        for pc in self.pcs:
            await pc.close()


async def crowd_main(conn: multiprocessing.connection.Connection) -> None:
    """The many untimed subscribers, in their own process."""
    loop = asyncio.get_running_loop()
    load = Load([])
    while True:
        msg = await loop.run_in_executor(None, conn.recv)
        if msg["cmd"] == "answer":
            conn.send([await load.subscriber(sdp, timed=False) for sdp in msg["offers"]])
        elif msg["cmd"] == "count":
            conn.send({"received": load.received, "cpu": time.process_time()})
        else:
            break
    await load.close()
    conn.send("bye")


def crowd_process(conn: multiprocessing.connection.Connection) -> None:
    asyncio.run(crowd_main(conn))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(q * len(values)))]


async def run_mode(
    mode: str,
    counts: list[int],
    seconds: float,
    frames: Any,
    *,
    profile: bool,
    inproc: bool = False,
    repeat: int = 1,
) -> list[dict[str, Any]]:
    """One run; with ``inproc`` the SFU runs in this (probe) process: latency only."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc: Any
    if inproc:
        proc = asyncio.ensure_future(sfu_main(child, mode))
    else:
        proc = ctx.Process(target=sfu_process, args=(child, mode), daemon=True)
        proc.start()
    crowd_parent, crowd_child = ctx.Pipe()
    crowd = ctx.Process(target=crowd_process, args=(crowd_child,), daemon=True)
    crowd.start()
    loop = asyncio.get_running_loop()
    load = Load(frames)

    async def call(msg: Any) -> Any:
        parent.send(msg)
        return await loop.run_in_executor(None, parent.recv)

    async def call_crowd(msg: Any) -> Any:
        crowd_parent.send(msg)
        return await loop.run_in_executor(None, crowd_parent.recv)

    results: list[dict[str, Any]] = []
    try:
        await load.publisher(lambda sdp: call({"cmd": "publish", "sdp": sdp}))
        if mode == "sfu":
            await load.direct_pair()
        load.replay_task = asyncio.ensure_future(load.replay())
        await asyncio.sleep(1.0)
        idle = await call({"cmd": "measure", "seconds": min(seconds, 3.0)})
        have = 0
        for count in counts:
            while have < count:
                batch = min(8, count - have)
                offers = await call({"cmd": "subscribe", "count": batch})
                local = max(0, min(len(offers), 2 - have))  # the first two are timed here
                answers = [await load.subscriber(sdp) for sdp in offers[:local]]
                if offers[local:]:
                    answers += await call_crowd({"cmd": "answer", "offers": offers[local:]})
                await call(answers)
                have += batch
            await asyncio.sleep(2.5)  # connect, first keyframe
            load.samples.clear()
            load.direct_samples.clear()
            crowd0 = await call_crowd({"cmd": "count"})
            received0 = load.received
            t0, cpu0 = time.monotonic(), time.process_time()
            last = count == counts[-1]
            windows = [await call({"cmd": "measure", "seconds": seconds}) for _ in range(repeat)]
            # the median window by SFU CPU: robust to other work on a shared machine
            windows.sort(key=lambda w: w["cpu"])
            m = windows[len(windows) // 2]
            crowd1 = await call_crowd({"cmd": "count"})
            wall = time.monotonic() - t0
            probe_cpu = (time.process_time() - cpu0) / wall
            crowd_cpu = (crowd1["cpu"] - crowd0["cpu"]) / wall
            received = load.received - received0 + crowd1["received"] - crowd0["received"]
            rx_rate = received / wall
            result = {
                "mode": mode,
                "inproc": inproc,
                "subscribers": count,
                "cpu": m["cpu"],
                "cpu_idle": idle["cpu"],
                "cpu_per_sub": m["cpu"] / count,
                "cpu_per_sub_marginal": (m["cpu"] - idle["cpu"]) / count,
                "packets_out": m["packets_out"],
                "packets_in": m["packets_in"],
                "rx_rate": rx_rate,
                "lat_p50": percentile(load.samples, 0.5),
                "lat_p99": percentile(load.samples, 0.99),
                "direct_p50": percentile(load.direct_samples, 0.5),
                "direct_p99": percentile(load.direct_samples, 0.99),
                "internal_p50": m["internal_p50"],
                "internal_p99": m["internal_p99"],
                "sfu_decoders": m["sfu_decoders"],
                "sfu_encoders": m["sfu_encoders"],
                "process_decoders": m["decoders"],
                "process_encoders": m["encoders"],
                "profile": m["profile"],
                "probe_cpu": probe_cpu,
                "crowd_cpu": crowd_cpu,
            }
            if profile and last:
                # a separate window: cProfile slows the SFU down, so its numbers are not used
                profiled = await call({"cmd": "measure", "seconds": seconds, "profile": True})
                result["profile"] = profiled["profile"]
            results.append(result)
            label = mode + (" (in-process)" if inproc else "")
            print(
                f"{label:5} N={count:3d} cpu={m['cpu'] * 100:5.1f}% "
                f"per-sub={result['cpu_per_sub'] * 100:6.2f}% "
                f"(marginal {result['cpu_per_sub_marginal'] * 100:6.2f}%) "
                f"out={m['packets_out']:7.0f} pkt/s rx={rx_rate:7.0f} pkt/s "
                f"lat p50={result['lat_p50'] * 1e3:6.2f} ms p99={result['lat_p99'] * 1e3:6.2f} ms "
                f"direct p50={result['direct_p50'] * 1e3:5.2f} ms "
                f"in-SFU p50={m['internal_p50'] * 1e3:5.3f} p99={m['internal_p99'] * 1e3:5.3f} ms "
                f"dec={m['decoders']} enc={m['encoders']} "
                f"probe cpu={probe_cpu * 100:.0f}% crowd cpu={crowd_cpu * 100:.0f}%",
                flush=True,
            )
            if m["cpu"] > 0.97:
                print(f"{mode}: SFU process saturated, stopping here", flush=True)
                break
    finally:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(call({"cmd": "quit"}), 20)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(call_crowd({"cmd": "quit"}), 20)
        await load.close()
        crowd.join(10)
        if crowd.is_alive():
            crowd.kill()
        if inproc:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc, 10)
        else:
            proc.join(10)
            if proc.is_alive():
                proc.kill()
    return results


def write_results(
    sfu: list[dict[str, Any]],
    relay: list[dict[str, Any]],
    latency: list[dict[str, Any]],
    frames: Any,
) -> None:
    kbps = sum(len(p) for _, _, ps in frames for p in ps) * 8 * FPS / len(frames) / 1000
    pps = sum(len(ps) for _, _, ps in frames) * FPS / len(frames)
    relay_per_sub = statistics.mean(r["cpu_per_sub"] for r in relay) if relay else float("nan")
    best = max(sfu, key=lambda r: r["subscribers"])
    slope = (best["cpu"] - best["cpu_idle"]) / best["subscribers"]
    streams_per_core = 1 / slope if slope > 0 else float("inf")
    pkt_per_core = best["packets_out"] / best["cpu"] if best["cpu"] > 0 else float("inf")
    lines = [
        "SFU benchmark results",
        "=====================",
        "",
        "Latest run of ``python benchmarks/sfu.py`` (see :doc:`sfu-forwarding` for the",
        f"method). Machine: {os.cpu_count()} cores, Python {sys.version.split()[0]}.",
        f"Publisher stream: VP8 {WIDTH}x{HEIGHT} {FPS} fps, {kbps:.0f} kbit/s, "
        f"{pps:.0f} packets/s, encoded once and replayed.",
        "",
        ".. list-table:: SFU process, per subscriber count",
        "   :header-rows: 1",
        "",
        "   * - mode",
        "     - subscribers",
        "     - SFU CPU (% of a core)",
        "     - CPU per subscriber",
        "     - forwarded packets/s",
        "     - latency p50 / p99 (ms)",
        "     - direct path p50 (ms)",
        "     - decoders / encoders made",
    ]
    for r in sfu + relay:
        lat = (
            f"{r['lat_p50'] * 1e3:.2f} / {r['lat_p99'] * 1e3:.2f}"
            if r["lat_p50"] == r["lat_p50"]
            else "n/a (re-encoded)"
        )
        direct = f"{r['direct_p50'] * 1e3:.2f}" if r["direct_p50"] == r["direct_p50"] else "-"
        dec_enc = (
            f"{r['sfu_decoders']} / {r['sfu_encoders']}"
            if r["mode"] == "sfu"
            else f"{r['process_decoders']} / {r['process_encoders']}"
        )
        lines += [
            f"   * - {'rtckit SFU' if r['mode'] == 'sfu' else 'aiortc MediaRelay'}",
            f"     - {r['subscribers']}",
            f"     - {r['cpu'] * 100:.1f}",
            f"     - {r['cpu_per_sub'] * 100:.2f}%",
            f"     - {r['packets_out']:.0f}" if r["mode"] == "sfu" else "     - -",
            f"     - {lat}",
            f"     - {direct}",
            f"     - {dec_enc}",
        ]
    ratio = relay_per_sub / best["cpu_per_sub"] if best["cpu_per_sub"] > 0 else float("inf")
    marginal_ratio = relay_per_sub / slope if slope > 0 else float("inf")
    added = best["lat_p50"] - best["direct_p50"]
    if latency:
        lines += [
            "",
            ".. list-table:: Latency with the SFU inside the probe process (publisher, SFU and",
            "   two timed subscribers share one event loop; the other subscribers are in the",
            "   crowd process): no cross-process scheduling delay in the figures",
            "   :header-rows: 1",
            "",
            "   * - subscribers",
            "     - via SFU p50 / p99 (ms)",
            "     - direct p50 / p99 (ms)",
            "     - added p50 (ms)",
        ]
        for r in latency:
            lines += [
                f"   * - {r['subscribers']}",
                f"     - {r['lat_p50'] * 1e3:.2f} / {r['lat_p99'] * 1e3:.2f}",
                f"     - {r['direct_p50'] * 1e3:.2f} / {r['direct_p99'] * 1e3:.2f}",
                f"     - {(r['lat_p50'] - r['direct_p50']) * 1e3:.2f}",
            ]
    lines += [
        "",
        "Summary against the goals (largest subscriber count of the SFU run):",
        "",
        f"* CPU per subscriber: MediaRelay {relay_per_sub * 100:.1f}% of a core, rtckit "
        f"{best['cpu_per_sub'] * 100:.2f}% (all SFU process CPU / subscribers) or "
        f"{slope * 100:.3f}% (marginal): **{ratio:.0f}x** / **{marginal_ratio:.0f}x** less "
        "(goal: 20x).",
        f"* Forwarded {FPS} fps streams per core: **{streams_per_core:.0f}** (marginal cost); "
        f"{pkt_per_core:.0f} outgoing packets/s per core of SFU process CPU (goal: 250 streams).",
        "* Added latency p50 with the SFU in the probe process: "
        + ", ".join(
            f"**{(r['lat_p50'] - r['direct_p50']) * 1e3:.2f} ms** at {r['subscribers']} "
            f"subscriber{'s' if r['subscribers'] > 1 else ''}"
            for r in latency
        )
        + " (goal: 2 ms). Inside the SFU (packet handed to the forwarder to packet sent, "
        f"first two subscribers, {best['subscribers']} subscribers): p50 "
        f"{best['internal_p50'] * 1e3:.3f} ms, p99 {best['internal_p99'] * 1e3:.3f} ms. "
        f"Across processes at {best['subscribers']} subscribers: {added * 1e3:.2f} ms; "
        "cross-process figures include the operating system's scheduling of three busy "
        f"processes on {os.cpu_count()} cores shared with other work "
        f"(load average {os.getloadavg()[0]:.1f} at the end of the run).",
        "",
        ".. image:: /_static/sfu-benchmark.svg",
        "   :alt: SFU process CPU against subscriber count",
        "",
    ]
    profile = best.get("profile", "")
    if profile:
        lines += [
            "Profile of the SFU process at the largest subscriber count (cProfile, by own time):",
            "",
            ".. code-block:: text",
            "",
        ]
        body = [ln for ln in profile.splitlines() if ln.strip()]
        lines += ["   " + ln.rstrip()[:110] for ln in body[:30]]
        lines.append("")
    (ROOT / "docs" / "topics" / "sfu-benchmark.rst").write_text("\n".join(lines))
    write_svg(sfu, relay)


def write_svg(sfu: list[dict[str, Any]], relay: list[dict[str, Any]]) -> None:
    """A small log-x line chart of SFU process CPU against subscribers, no plotting library."""
    w, h, left, bottom = 560, 320, 60, 40
    max_n = max(r["subscribers"] for r in sfu + relay)
    max_cpu = max(100.0, max(r["cpu"] * 100 for r in sfu + relay))

    def xy(n: int, cpu: float) -> tuple[float, float]:
        import math

        x = left + (w - left - 20) * math.log2(n) / max(1.0, math.log2(max_n))
        y = h - bottom - (h - bottom - 20) * cpu / max_cpu
        return x, y

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{w}" height="{h}" fill="white"/>',
        f'<line x1="{left}" y1="{h - bottom}" x2="{w - 10}" y2="{h - bottom}" stroke="black"/>',
        f'<line x1="{left}" y1="10" x2="{left}" y2="{h - bottom}" stroke="black"/>',
        f'<text x="{w / 2}" y="{h - 8}" text-anchor="middle">subscribers (log scale)</text>',
        f'<text x="14" y="{h / 2}" transform="rotate(-90 14 {h / 2})" text-anchor="middle">'
        "SFU process CPU, % of a core</text>",
    ]
    for n in sorted({r["subscribers"] for r in sfu + relay}):
        x, _ = xy(n, 0)
        parts.append(f'<text x="{x}" y="{h - bottom + 15}" text-anchor="middle">{n}</text>')
    for pct in range(0, int(max_cpu) + 1, 25):
        _, y = xy(1, pct)
        parts.append(f'<text x="{left - 5}" y="{y + 4}" text-anchor="end">{pct}</text>')
    for rows, color, label in ((sfu, "#1f77b4", "rtckit SFU"), (relay, "#d62728", "MediaRelay")):
        if not rows:
            continue
        pts = " ".join(
            f"{x:.1f},{y:.1f}" for x, y in (xy(r["subscribers"], r["cpu"] * 100) for r in rows)
        )
        parts.append(f'<polyline points="{pts}" fill="none" stroke="{color}" stroke-width="2"/>')
        for r in rows:
            x, y = xy(r["subscribers"], r["cpu"] * 100)
            parts.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color}"/>')
        lx, ly = xy(rows[-1]["subscribers"], rows[-1]["cpu"] * 100)
        parts.append(
            f'<text x="{lx:.1f}" y="{ly - 8:.1f}" fill="{color}" text-anchor="end">{label}</text>'
        )
    parts.append("</svg>")
    out = ROOT / "docs" / "_static" / "sfu-benchmark.svg"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(parts) + "\n")


# --- simulcast: a Chromium publisher, aiortc subscribers spread over its layers ----------------

SIM_FPS = 15
QUALITY_WIDTH = {"low": 160, "medium": 320, "high": 640}
# the constrained subscriber's limit: this share of the top layer's rate
LIMIT_SHARE = 0.6
# a frame interval longer than this is a freeze (three frame intervals at SIM_FPS)
FREEZE = 3 / SIM_FPS

SIM_PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>rtckit simulcast</title>
<link rel="icon" href="data:,"></head>
<body><script type="module">
import * as rtc from "/ws/rtckit.js";
window.rtc = rtc;
window.ready = true;
</script></body></html>"""

SIM_JOIN = """async ([url, simulcast]) => {
  const sig = await window.rtc.connectSignaling(url, {room: "sfu"});
  const room = window.rtc.joinRoom(sig, simulcast ? {} : {simulcast: false});
  window.room = room;
  const stream = await navigator.mediaDevices.getUserMedia({video: {
    width: {exact: 640}, height: {exact: 360}, frameRate: {exact: 15}}});
  room.publish(stream.getVideoTracks()[0], stream);
  return sig.peerId;
}"""


@contextlib.asynccontextmanager
async def simulcast_site() -> AsyncIterator[tuple[str, str, RoomStrategies]]:
    """Signaling server, one SFU room and the page, on loopback."""
    server = SignalingServer(
        SignalingConfig(auth=OpenAuth(), rooms=[RoomConfig(name="sfu", topology="sfu")])
    )
    app = web.Application()
    server.add_routes(app, "/ws")

    async def index(_request: web.Request) -> web.Response:
        return web.Response(text=SIM_PAGE, content_type="text/html")

    app.router.add_get("/", index)
    runner = web.AppRunner(app, handle_signals=False, access_log=None, shutdown_timeout=1)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        async with RoomStrategies(server.hub) as strategies:
            port = runner.addresses[0][1]
            yield f"http://127.0.0.1:{port}/", f"ws://127.0.0.1:{port}/ws", strategies
    finally:
        await runner.cleanup()


async def simulcast_server_main(conn: multiprocessing.connection.Connection) -> None:
    """The server process (signaling and SFU): answers ``measure`` with its CPU use."""
    loop = asyncio.get_running_loop()
    async with simulcast_site() as (http_url, ws_url, strategies):
        conn.send((http_url, ws_url))
        while (msg := await loop.run_in_executor(None, conn.recv))["cmd"] in ("measure", "police"):
            strategy = strategies.running["sfu"]
            assert isinstance(strategy, SfuServerStrategy)
            assert strategy.router is not None
            if msg["cmd"] == "police":
                conn.send(await police(strategy.router, msg["subscriber"], msg["share"]))
                continue
            stats0 = strategy.router.stats()
            cpu0, wall0 = time.process_time(), time.monotonic()
            await asyncio.sleep(msg["seconds"])
            cpu1, wall1 = time.process_time(), time.monotonic()
            stats1 = strategy.router.stats()
            wall = wall1 - wall0
            layers = collections.Counter(
                s.layer or "no RID"
                for s in strategy.router.subscriptions()
                if s.transceiver.kind == "video"
            )
            conn.send(
                {
                    "cpu": (cpu1 - cpu0) / wall,
                    "packets_in": (stats1.packets_in - stats0.packets_in) / wall,
                    "packets_out": (stats1.packets_out - stats0.packets_out) / wall,
                    "kbps_in": (stats1.bytes_in - stats0.bytes_in) * 8 / wall / 1000,
                    "layers": dict(layers),
                    "decoders": stats1.decoders_created,
                    "encoders": stats1.encoders_created,
                }
            )
    conn.send("bye")


async def police(router: SfuRouter, subscriber: str, share: float | None) -> dict[str, Any]:
    """Limit what the SFU sends *subscriber* to *share* of its present rate (None: lift it).

    The rate is measured over two seconds on the subscription's send path, then a token
    bucket there (``Subscription.set_send_filter``, 500 ms deep) drops what exceeds the
    limit: a policer, the loss of an overflowing link without its queue. Returns the
    measured rate (bit/s) and the layer forwarded before the change.
    """
    (sub,) = [s for s in router.subscriptions(subscriber) if s.transceiver.kind == "video"]
    layer = sub.layer
    if share is None:
        sub.set_send_filter(None)
        return {"rate": 0.0, "layer": layer}
    sent = [0]

    def count(data: bytes) -> bool:
        sent[0] += len(data)
        return True

    sub.set_send_filter(count)
    await asyncio.sleep(2)
    measured = sent[0] * 8 / 2
    rate = measured * share
    burst = rate / 8 * 0.5
    tokens, last = burst, time.monotonic()

    def keep(data: bytes) -> bool:
        nonlocal tokens, last
        now = time.monotonic()
        tokens, last = min(burst, tokens + (now - last) * rate / 8), now
        if tokens < len(data):
            return False
        tokens -= len(data)
        return True

    sub.set_send_filter(keep)
    return {"rate": measured, "layer": layer}


def simulcast_server_process(conn: multiprocessing.connection.Connection) -> None:
    asyncio.run(simulcast_server_main(conn))


class Viewer:
    """An aiortc participant of the room that reads the publisher's frames and times them."""

    def __init__(self, room: SfuRoom, track: Any) -> None:
        self.room = room
        self.track = track
        self.times: list[float] = []
        self.widths: list[int] = []

    async def run(self) -> None:
        while True:
            frame = await self.track.recv()
            self.times.append(time.monotonic())
            self.widths.append(frame.width)

    async def width_reached(
        self, width: int, *, within: float = 20, below: bool = False, after: float = 0.0
    ) -> float:
        """Wait until 10 frames in a row that came after *after* are *width* wide (narrower
        with *below*); the arrival time of the first of them."""
        async with asyncio.timeout(within):
            while True:
                tail = self.widths[-10:]
                first = self.times[-10] if len(tail) == 10 else 0.0
                if first >= after and all(w < width if below else w == width for w in tail):
                    return first
                await asyncio.sleep(0.05)

    def frozen(self, start: float, end: float) -> tuple[float, float]:
        """(frozen seconds, longest frame interval) of the frames between *start* and *end*."""
        times = [start, *(t for t in self.times if start <= t <= end), end]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        return sum(g for g in gaps if g > FREEZE), max(gaps)


async def join_viewer(stack: contextlib.AsyncExitStack, ws_url: str, publisher: str) -> Viewer:
    client = await stack.enter_async_context(SignalingClient.connect(ws_url, room="sfu"))
    room = await stack.enter_async_context(join_room(client, session_config=SessionConfig()))
    assert isinstance(room, SfuRoom)
    found: asyncio.Future[Any] = asyncio.get_running_loop().create_future()

    async def events() -> None:
        async for event in room.events():
            if (
                isinstance(event, TrackPublished)
                and event.participant_id == publisher
                and event.kind == "video"
                and not found.done()
            ):
                found.set_result(event.track)

    tasks = [asyncio.create_task(events())]
    stack.callback(lambda: [t.cancel() for t in tasks])
    async with asyncio.timeout(30):
        viewer = Viewer(room, await found)
    tasks.append(asyncio.create_task(viewer.run()))
    return viewer


async def simulcast_phase(
    browser: Any, simulcast: bool, qualities: list[str], seconds: float, repeat: int
) -> dict[str, Any]:
    """One server process, one publishing page, then ``len(qualities)`` viewers."""
    ctx = multiprocessing.get_context("spawn")
    parent, child = ctx.Pipe()
    proc = ctx.Process(target=simulcast_server_process, args=(child,), daemon=True)
    proc.start()
    loop = asyncio.get_running_loop()
    http_url, ws_url = await loop.run_in_executor(None, parent.recv)

    async def measure() -> dict[str, Any]:
        windows = []
        for _ in range(repeat):
            parent.send({"cmd": "measure", "seconds": seconds})
            windows.append(await loop.run_in_executor(None, parent.recv))
        out = dict(windows[-1])
        for key in ("cpu", "packets_in", "packets_out", "kbps_in"):
            out[key] = statistics.median(w[key] for w in windows)
        return out

    result: dict[str, Any] = {"simulcast": simulcast, "subscribers": len(qualities)}
    page = await browser.new_page()
    try:
        async with contextlib.AsyncExitStack() as stack:
            await page.goto(http_url)
            await page.wait_for_function("window.ready === true")
            publisher = await page.evaluate(SIM_JOIN, [ws_url, simulcast])
            await asyncio.sleep(8)  # the publisher's encoders reach their bitrates
            result["idle"] = await measure()
            viewers = [await join_viewer(stack, ws_url, publisher) for _ in qualities]
            for viewer, quality in zip(viewers, qualities, strict=True):
                viewer.room.set_video_quality(publisher, quality)
            for viewer, quality in zip(viewers, qualities, strict=True):
                await viewer.width_reached(
                    QUALITY_WIDTH[quality if simulcast else "high"], within=30
                )
            start = time.monotonic()
            result["loaded"] = await measure()
            end = time.monotonic()
            frozen = [v.frozen(start, end) for v in viewers]
            result["steady_frozen"] = sum(f for f, _ in frozen) / (len(viewers) * (end - start))
            result["steady_gap"] = max(g for _, g in frozen)
            if simulcast:
                result["switches"] = await switches(viewers[-1], publisher)
                # every subscriber on the lowest layer: about the one layer's packet rate here
                for viewer in viewers:
                    viewer.room.set_video_quality(publisher, "low")
                for viewer in viewers:
                    await viewer.width_reached(QUALITY_WIDTH["low"], within=30)
                result["low"] = await measure()
                result["bandwidth"] = await bandwidth(parent, viewers[-1], publisher)
    finally:
        await page.close()
        parent.send({"cmd": "quit"})
        await loop.run_in_executor(None, parent.recv)
        proc.join(10)
    return result


async def switches(viewer: Viewer, publisher: str) -> list[dict[str, Any]]:
    """Explicit layer switches of one viewer: time to the new layer's frames, frozen share."""
    out = []
    for quality in ("low", "high", "medium", "high", "low", "high"):
        asked = time.monotonic()
        viewer.room.set_video_quality(publisher, quality)
        first = await viewer.width_reached(QUALITY_WIDTH[quality], after=asked)
        await asyncio.sleep(1)
        end = time.monotonic()
        frozen, gap = viewer.frozen(asked, end)
        out.append(
            {
                "quality": quality,
                "latency": first - asked,
                "frozen": frozen,
                "observed": end - asked,
                "gap": gap,
            }
        )
        print(f"switch to {quality}: {out[-1]}", flush=True)
    return out


async def bandwidth(
    conn: multiprocessing.connection.Connection, viewer: Viewer, publisher: str
) -> list[dict[str, Any]]:
    """Drops of one subscriber's downlink below the top layer, and recoveries."""
    loop = asyncio.get_running_loop()
    out = []
    viewer.room.set_video_quality(publisher, "high")
    await viewer.width_reached(QUALITY_WIDTH["high"], within=30)
    for _ in range(2):
        conn.send({"cmd": "police", "subscriber": viewer.room.local_id, "share": LIMIT_SHARE})
        rate = (await loop.run_in_executor(None, conn.recv))["rate"]
        dropped = time.monotonic()  # the limit is on (2 s of measuring before it)
        try:
            first = await viewer.width_reached(
                QUALITY_WIDTH["high"], within=15, below=True, after=dropped
            )
            down: float | None = first - dropped
        except TimeoutError:
            down = None
        await asyncio.sleep(10)
        constrained = time.monotonic()
        frozen, gap = viewer.frozen(dropped, constrained)
        conn.send({"cmd": "police", "subscriber": viewer.room.local_id, "share": None})
        limited_layer = (await loop.run_in_executor(None, conn.recv))["layer"]
        recovered = time.monotonic()
        try:
            up: float | None = (
                await viewer.width_reached(QUALITY_WIDTH["high"], within=30, after=recovered)
                - recovered
            )
        except TimeoutError:
            up = None
        out.append(
            {
                "rate": rate,
                "layer": limited_layer,
                "down": down,
                "up": up,
                "frozen": frozen,
                "constrained": constrained - dropped,
                "gap": gap,
            }
        )
        print(f"bandwidth: {out[-1]}", flush=True)
    return out


async def simulcast_main(args: argparse.Namespace) -> int:
    """The simulcast run: single-layer baseline, then three layers, in one run."""
    require_executable("chromium", hint="apt-get install chromium")
    n = args.simulcast_subscribers
    spread = [("low", "medium", "high")[i % 3] for i in range(n)]
    t0 = time.monotonic()
    async with launch_chromium(fps=SIM_FPS, extra_args=[SIMULCAST_TRIAL]) as browser:
        single = await simulcast_phase(browser, False, ["high"] * n, args.seconds, args.repeat)
        print(f"single layer: {single}", flush=True)
        multi = await simulcast_phase(browser, True, spread, args.seconds, args.repeat)
        print(f"simulcast: {multi}", flush=True)
    if not args.no_write:
        write_simulcast_results(single, multi)
    print(f"total {time.monotonic() - t0:.0f} s")
    return 0


def per_subscriber(phase: dict[str, Any], key: str = "loaded") -> float:
    """Marginal SFU process CPU per subscriber: (with subscribers - publisher only) / n."""
    cpu = float(phase[key]["cpu"]) - float(phase["idle"]["cpu"])
    return cpu / int(phase["subscribers"])


def per_packet(phase: dict[str, Any], key: str = "loaded") -> float:
    """Marginal SFU process CPU (microseconds) per forwarded packet."""
    packets = float(phase[key]["packets_out"])
    cpu = float(phase[key]["cpu"]) - float(phase["idle"]["cpu"])
    return cpu / packets * 1e6 if packets > 0 else float("nan")


def table_rows(rows: Iterable[list[str]]) -> list[str]:
    """The body lines of a reST list-table."""
    return [f"   {'*' if i == 0 else ' '} - {cell}" for row in rows for i, cell in enumerate(row)]


def write_simulcast_results(single: dict[str, Any], multi: dict[str, Any]) -> None:
    s_sub, m_sub = per_subscriber(single), per_subscriber(multi)
    ratio = m_sub / s_sub if s_sub > 0 else float("inf")
    s_pkt, m_pkt = per_packet(single), per_packet(multi)
    l_sub, l_pkt = per_subscriber(multi, "low"), per_packet(multi, "low")
    n = multi["subscribers"]
    lines = [
        "Simulcast benchmark results",
        "===========================",
        "",
        "Latest run of ``python benchmarks/sfu.py --simulcast`` (see :doc:`sfu-forwarding`,",
        f"section Simulcast). Machine: {os.cpu_count()} cores, Python {sys.version.split()[0]},",
        f"load average {os.getloadavg()[0]:.1f} at the end of the run (shared with other work).",
        "",
        "One headless Chromium page publishes its fake camera (640x360, 15 fps) through",
        "``rtckit.js`` into an SFU room: first as one layer (``joinRoom(sig, {simulcast:",
        "false})``), then as the three layers q/h/f (160, 320 and 640 pixels wide). Each phase",
        "has its own server process (signaling and SFU, nothing else), whose CPU",
        "(``time.process_time``, all threads) is measured, first with the publisher alone, then",
        f"with {n} aiortc participants subscribed (with three layers spread over",
        '"low", "medium" and "high" with ``SfuRoom.set_video_quality``). Each figure is the',
        "median of the run's measurement windows.",
        "",
        ".. list-table:: Server process, publisher alone and with subscribers",
        "   :header-rows: 1",
        "",
        "   * - publisher",
        "     - subscribers",
        "     - server CPU (% of a core)",
        "     - packets/s in",
        "     - kbit/s in",
        "     - packets/s out",
        "     - subscribers per layer",
    ]
    rows = [(single, "idle", "one layer"), (single, "loaded", "one layer")]
    rows += [(multi, "idle", "three layers"), (multi, "loaded", "three layers")]
    rows += [(multi, "low", 'three layers, all "low"')]
    lines += table_rows(
        [
            label,
            str(0 if key == "idle" else phase["subscribers"]),
            f"{phase[key]['cpu'] * 100:.1f}",
            f"{phase[key]['packets_in']:.0f}",
            f"{phase[key]['kbps_in']:.0f}",
            f"{phase[key]['packets_out']:.0f}",
            ", ".join(f"{k}: {v}" for k, v in sorted(phase[key]["layers"].items())) or "-",
        ]
        for phase, key, label in rows
    )
    lines += [
        "",
        "Summary against the goals:",
        "",
        f"* CPU per subscriber (server CPU with {n} subscribers minus the publisher alone, "
        f"divided by {n}): one layer {s_sub * 100:.2f}% of a core, three layers "
        f"{m_sub * 100:.2f}%: **{(ratio - 1) * 100:+.0f}%** (goal: within 15%). Total server "
        f"CPU with {n} subscribers: {single['loaded']['cpu'] * 100:.1f}% against "
        f"{multi['loaded']['cpu'] * 100:.1f}% (the three layers are also received, decrypted "
        "and cached).",
        "* The subscribers of the two phases do not receive the same packet rate (the one "
        f"layer came at {single['loaded']['kbps_in']:.0f} kbit/s, with the subscribers' "
        "REMB relayed; the three layers at "
        f"{multi['loaded']['kbps_in']:.0f} kbit/s in all, with the fixed "
        "``SfuConfig.simulcast_uplink_bitrate``), so per forwarded packet as well: one layer "
        f"{s_pkt:.0f} µs of server CPU, three layers {m_pkt:.0f} µs "
        f"(**{(m_pkt / s_pkt - 1) * 100:+.0f}%**). With every subscriber on the lowest layer "
        f"(a packet rate near the one layer's): {l_sub * 100:.2f}% of a core per subscriber "
        f"(**{(l_sub / s_sub - 1) * 100:+.0f}%**), {l_pkt:.0f} µs per packet. At these "
        "packet rates a subscriber's fixed cost (its connection's RTCP, SCTP and ICE "
        "traffic) is a large part of the figure. The server's CPU is a few percent of a core "
        "here: on this machine, shared with other work, the per-subscriber difference of the "
        "first item ranged from -22% to +28% over five runs, so the comparison is not "
        "resolved to 15% (a longer run with more subscribers would be needed).",
        f"* Frozen share in steady state (frame intervals over {FREEZE * 1000:.0f} ms, "
        f"over all subscribers): one layer {single['steady_frozen'] * 100:.2f}%, three layers "
        f"{multi['steady_frozen'] * 100:.2f}%; longest frame interval "
        f"{single['steady_gap'] * 1000:.0f} / {multi['steady_gap'] * 1000:.0f} ms.",
        "",
        ".. list-table:: Explicit switches of one subscriber (``set_video_quality``): time from",
        "   the call to the first frame of the new layer, frozen time from the call to one",
        "   second after ten frames of the new layer",
        "   :header-rows: 1",
        "",
        "   * - to",
        "     - first frame of the layer (s)",
        "     - longest frame interval (ms)",
        "     - frozen (ms) / observed (s)",
    ]
    lines += table_rows(
        [
            sw["quality"],
            f"{sw['latency']:.2f}",
            f"{sw['gap'] * 1000:.0f}",
            f"{sw['frozen'] * 1000:.0f} / {sw['observed']:.1f}",
        ]
        for sw in multi["switches"]
    )
    frozen = sum(sw["frozen"] for sw in multi["switches"])
    observed = sum(sw["observed"] for sw in multi["switches"])
    lines += [
        "",
        f"Frozen share across the switches: **{frozen / observed * 100:.2f}%** of "
        f"{observed:.1f} s (goal for a constrained subscriber: under 1%); worst switch "
        f"{max(sw['latency'] for sw in multi['switches']):.2f} s.",
        "",
        f'.. list-table:: One subscriber (preference "high") whose downlink drops to '
        f"{LIMIT_SHARE:.0%} of",
        "   the top layer's rate for 10 s, then recovers; the layer is the SFU's automatic",
        "   selection (``SfuConfig.layer_policy``)",
        "   :header-rows: 1",
        "",
        "   * - top layer (kbit/s)",
        "     - drop to a lower layer (s)",
        "     - recovery to the top layer (s)",
        "     - frozen while limited (ms / s)",
        "     - longest frame interval (ms)",
        "     - layer at the end of the limit",
    ]
    lines += table_rows(
        [
            f"{bw['rate'] / 1000:.0f}",
            "not within 15 s" if bw["down"] is None else f"{bw['down']:.2f}",
            "not within 30 s" if bw["up"] is None else f"{bw['up']:.2f}",
            f"{bw['frozen'] * 1000:.0f} / {bw['constrained']:.1f}",
            f"{bw['gap'] * 1000:.0f}",
            str(bw["layer"]),
        ]
        for bw in multi["bandwidth"]
    )
    frozen = sum(bw["frozen"] for bw in multi["bandwidth"])
    limited = sum(bw["constrained"] for bw in multi["bandwidth"])
    lines += [
        "",
        "The limit is a policer on the SFU's send path to that subscriber (a token bucket of",
        "500 ms that drops what exceeds the rate, through ``Subscription.set_send_filter``):",
        "the loss of an overflowing link, without the growing queue a real bottleneck adds",
        "first. The drop is measured from setting the limit to the first of ten frames in a",
        "row narrower than the top layer; the recovery from lifting it to the first of ten",
        "frames of the top layer (goals: drop within 2 s, recovery within 10 s). Frozen",
        f"share of the constrained subscriber while limited: **{frozen / limited * 100:.2f}%**",
        "(goal: under 1%).",
        "",
        "With the automatic selection the preference is a ceiling: a subscriber raising it",
        "gets the higher layer once the selector moves up (``LayerPolicy.up_hold``, or a",
        'probe), which is why a switch to "high" right after "low" takes longer than the',
        "others above.",
        "",
    ]
    (ROOT / "docs" / "topics" / "simulcast-benchmark.rst").write_text("\n".join(lines))


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--subscribers", default="1,4,16,32,64", help="SFU subscriber counts")
    parser.add_argument("--relay-subscribers", default="1,2,3", help="MediaRelay counts")
    parser.add_argument(
        "--latency-subscribers", default="1,16", help="counts for the in-process latency run"
    )
    parser.add_argument("--seconds", type=float, default=5.0, help="measurement window")
    parser.add_argument("--repeat", type=int, default=3, help="windows per count (median)")
    parser.add_argument("--profile", action="store_true", help="profile the largest SFU run")
    parser.add_argument("--no-write", action="store_true", help="do not update the docs")
    parser.add_argument(
        "--simulcast",
        action="store_true",
        help="the simulcast run instead (Chromium publisher, one layer then three)",
    )
    parser.add_argument(
        "--simulcast-subscribers", type=int, default=9, help="subscribers of the simulcast run"
    )
    args = parser.parse_args()
    if args.simulcast:
        return await simulcast_main(args)
    t0 = time.monotonic()
    frames = encode_stream()
    kbps = sum(len(p) for _, _, ps in frames for p in ps) * 8 * FPS / len(frames) / 1000
    pps = sum(len(ps) for _, _, ps in frames) * FPS / len(frames)
    print(
        f"encoded {len(frames)} frames in {time.monotonic() - t0:.1f} s: "
        f"{kbps:.0f} kbit/s, {pps:.0f} packets/s",
        flush=True,
    )
    sfu = await run_mode(
        "sfu",
        [int(x) for x in args.subscribers.split(",")],
        args.seconds,
        frames,
        profile=args.profile,
        repeat=args.repeat,
    )
    relay = await run_mode(
        "relay",
        [int(x) for x in args.relay_subscribers.split(",")],
        args.seconds,
        frames,
        profile=False,
        repeat=args.repeat,
    )
    latency = []
    if args.latency_subscribers:
        latency = await run_mode(
            "sfu",
            [int(x) for x in args.latency_subscribers.split(",")],
            args.seconds,
            frames,
            profile=False,
            inproc=True,
            repeat=args.repeat,
        )
    if args.profile and sfu and sfu[-1]["profile"]:
        print(sfu[-1]["profile"])
    if not args.no_write:
        write_results(sfu, relay, latency, frames)
    relay_per_sub = statistics.mean(r["cpu_per_sub"] for r in relay)
    best = sfu[-1]
    print(
        f"CPU per subscriber: relay {relay_per_sub * 100:.1f}% vs sfu "
        f"{best['cpu_per_sub'] * 100:.2f}% -> {relay_per_sub / best['cpu_per_sub']:.0f}x; "
        f"total {time.monotonic() - t0:.0f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
