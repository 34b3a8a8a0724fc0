"""Simulcast on a real shaped link: how a constrained Chromium subscriber fares, round by round.

Three Chromium browsers, each in a network namespace of a
:class:`~rtckit.testing.natlab.NatLab` (no NAT), and the ``rtckit`` server (signaling and
SFU) in this process with its sockets in the lab's public namespace
(:class:`~rtckit.testing.labroom.LabRoom`, the scene of
``tests/browser/test_sfu_simulcast_netns.py``):

* ``camera`` publishes Chromium's fake camera, 640x360 at 15 fps, in three layers q/h/f
  (160, 320, 640 pixels wide);
* ``free`` subscribes on an unthrottled link: the baseline, measured in the same windows;
* ``slow`` subscribes on a link that each round shapes for ``--shaped`` seconds with a ``tc``
  token bucket (a 200 ms queue) on the bridge port toward it, set between the bottom and the
  middle layer's bitrate as the SFU measures them at the start of the round, then lifts.

Measured per round: the time from the shaping to the SFU forwarding a lower layer to
``slow`` and to its page decoding narrower frames (goal: 2 s); from the lift to the SFU
forwarding the top layer again and to the page decoding 640-pixel frames (goal: 10 s);
while shaped, the share of time frozen by Chromium's ``inbound-rtp`` ``totalFreezesDuration``
(and its ``freezeCount``) of both subscribers (goal for ``slow``: under 1%) and the frames
decoded per second; the share of the shaped time the SFU forwarded each layer.

Run (root, ``ip``, ``tc``, the system Chromium): ``python benchmarks/simulcast_link.py``
(three rounds, about three minutes); ``--quick`` makes one short round. Results go to
``docs/topics/simulcast-link-benchmark.rst`` unless ``--no-write``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "src"))

from rtckit.testing.labroom import LabRoom, steady_rates  # noqa: E402
from rtckit.testing.natlab import NatLab  # noqa: E402

PAGE = ROOT / "docs" / "topics" / "simulcast-link-benchmark.rst"
TOP, BOTTOM = 640, 160
#: the shaped link's queue, in seconds at its rate
QUEUE = 0.2
#: how often the shaped subscriber's layer and page are read
STEP = 0.2


@dataclass
class Window:
    """One subscriber's Chromium counters over a window: frozen share, freezes, frames/s."""

    seconds: float
    frozen: float
    freezes: int
    fps: float

    @property
    def frozen_share(self) -> float:
        return self.frozen / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Round:
    """What one round measured; a time is None when it did not happen within its bound."""

    rates: tuple[float, float, float]
    link: int
    sfu_down: float | None
    page_down: float | None
    sfu_up: float | None
    page_up: float | None
    slow: Window
    free: Window
    #: ``slow`` from its first narrower frame to the lift (None: no narrower frame)
    settled: Window | None
    #: share of the shaped samples on each layer the SFU forwarded (q, h, f, none)
    layers: dict[str, float] = field(default_factory=dict)
    queue_drops: int = 0


def window(before: dict[str, Any], after: dict[str, Any], seconds: float) -> Window:
    return Window(
        seconds=seconds,
        frozen=float(after["frozen"]) - float(before["frozen"]),
        freezes=int(after["freezes"]) - int(before["freezes"]),
        fps=(int(after["decoded"]) - int(before["decoded"])) / seconds,
    )


async def stats(room: LabRoom, name: str, publisher: str) -> dict[str, Any]:
    found = await room.inbound(name, publisher)
    if found is None:
        raise RuntimeError(f"{name!r} receives no video from the publisher")
    return found


async def one_round(
    room: LabRoom, lab: NatLab, camera: str, slow_id: str, args: argparse.Namespace
) -> Round:
    """Shape ``slow``'s downlink for ``args.shaped`` seconds, lift it, wait for 640 px."""
    sub = room.video_subscription(slow_id, camera)
    await room.wait_width("slow", camera, TOP, args.climb_limit)
    q, h, f = await steady_rates(room.video_publication(camera))
    link = int((q + h) / 2)
    print(
        f"layers {q / 1000:.0f}/{h / 1000:.0f}/{f / 1000:.0f} kbit/s,"
        f" link {link / 1000:.0f} kbit/s",
        flush=True,
    )
    before = {name: await stats(room, name, camera) for name in ("slow", "free")}
    await lab.shape_downlink("slow", link, queue=QUEUE)
    shaped = time.monotonic()
    sfu_down = page_down = None
    down: dict[str, Any] = {}
    seen: list[str] = []
    while (now := time.monotonic()) < shaped + args.shaped:
        seen.append(sub.layer or "none")
        if sfu_down is None and sub.layer != "f":
            sfu_down = now - shaped
        if page_down is None and (down := await stats(room, "slow", camera))["width"] < TOP:
            page_down = time.monotonic() - shaped
        await asyncio.sleep(STEP)
    after = {name: await stats(room, name, camera) for name in ("slow", "free")}
    queue = await lab.shaping_stats("slow")
    seconds = time.monotonic() - shaped
    settled = None
    if page_down is not None and seconds > page_down:
        settled = window(down, after["slow"], seconds - page_down)
    await lab.shape_downlink("slow", None)
    lifted = time.monotonic()
    sfu_up = page_up = None
    while (now := time.monotonic()) < lifted + args.climb_limit:
        if sfu_up is None and sub.layer == "f":
            sfu_up = now - lifted
        if page_up is None and (await stats(room, "slow", camera))["width"] == TOP:
            page_up = time.monotonic() - lifted
        if sfu_up is not None and page_up is not None:
            break
        await asyncio.sleep(STEP)
    return Round(
        rates=(q, h, f),
        link=link,
        sfu_down=sfu_down,
        page_down=page_down,
        sfu_up=sfu_up,
        page_up=page_up,
        slow=window(before["slow"], after["slow"], seconds),
        free=window(before["free"], after["free"], seconds),
        settled=settled,
        layers={layer: seen.count(layer) / len(seen) for layer in ("q", "h", "f", "none")},
        queue_drops=0 if queue is None else queue.dropped,
    )


async def measure(args: argparse.Namespace) -> list[Round]:
    rounds = []
    with tempfile.TemporaryDirectory(prefix="simulcast-link-") as directory:
        async with (
            NatLab() as lab,
            LabRoom(lab, ("camera", "free", "slow"), Path(directory)) as room,
        ):
            camera = await room.join("camera", publish=True)
            await room.join("free", publisher=camera)
            slow = await room.join("slow", publisher=camera)
            for name in ("free", "slow"):
                await room.wait_width(name, camera, TOP, 30)
            for index in range(args.rounds):
                await asyncio.sleep(args.rest)  # on the top layer a while before the shaping
                rounds.append(await one_round(room, lab, camera, slow, args))
                print(f"round {index + 1}: {describe(rounds[-1])}", flush=True)
    return rounds


# --- figures -------------------------------------------------------------------------------


def seconds(value: float | None, bound: float) -> str:
    return f"> {bound:g}" if value is None else f"{value:.1f}"


def median_of(values: Sequence[float | None], bound: float) -> str:
    """The median of the values that happened, and how many did not (within *bound*)."""
    found = [v for v in values if v is not None]
    missed = len(values) - len(found)
    text = f"{statistics.median(found):.1f}" if found else "-"
    return text + (f" ({missed} > {bound:g})" if missed else "")


def describe(r: Round) -> str:
    return (
        f"down SFU {seconds(r.sfu_down, 0)} s page {seconds(r.page_down, 0)} s;"
        f" up SFU {seconds(r.sfu_up, 0)} s page {seconds(r.page_up, 0)} s;"
        f" frozen slow {r.slow.frozen_share:.1%} ({r.slow.freezes}) free"
        f" {r.free.frozen_share:.1%} ({r.free.freezes}), slow after its switch"
        f" {settled(r)}; fps {r.slow.fps:.1f}/{r.free.fps:.1f};"
        f" layers {', '.join(f'{k} {v:.0%}' for k, v in r.layers.items() if v)};"
        f" queue drops {r.queue_drops}"
    )


def settled(r: Round) -> str:
    if r.settled is None:
        return "-"
    return f"{r.settled.frozen_share:.1%} ({r.settled.freezes})"


def median_share(windows: Sequence[Window | None]) -> str:
    found = [w.frozen_share for w in windows if w is not None]
    return f"{statistics.median(found):.1%}" if found else "-"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b > 0 else "-"


def table(rounds: Sequence[Round], args: argparse.Namespace) -> list[str]:
    """The rST list-table of the rounds and their medians."""
    header = [
        "round",
        "link kbit/s (layers q/h/f)",
        "to a lower layer: SFU / page (s)",
        "to 640 px after the lift: SFU / page (s)",
        "frozen while shaped: slow / free (freezes)",
        "slow frozen after its first narrower frame (freezes)",
        "frames/s: slow / free (ratio)",
        "SFU forwarded q / h / f",
    ]
    rows: list[list[str]] = []
    for index, r in enumerate(rounds):
        rows.append(
            [
                str(index + 1),
                f"{r.link / 1000:.0f} ({'/'.join(f'{x / 1000:.0f}' for x in r.rates)})",
                f"{seconds(r.sfu_down, args.shaped)} / {seconds(r.page_down, args.shaped)}",
                f"{seconds(r.sfu_up, args.climb_limit)} / {seconds(r.page_up, args.climb_limit)}",
                f"{r.slow.frozen_share:.1%} ({r.slow.freezes}) / {r.free.frozen_share:.1%}"
                f" ({r.free.freezes})",
                settled(r),
                f"{r.slow.fps:.1f} / {r.free.fps:.1f} ({ratio(r.slow.fps, r.free.fps)})",
                " / ".join(f"{r.layers.get(k, 0):.0%}" for k in "qhf"),
            ]
        )

    def med(get: Callable[[Round], float]) -> float:
        return statistics.median(get(r) for r in rounds)

    rows.append(
        [
            "median",
            f"{med(lambda r: r.link) / 1000:.0f}",
            f"{median_of([r.sfu_down for r in rounds], args.shaped)} /"
            f" {median_of([r.page_down for r in rounds], args.shaped)}",
            f"{median_of([r.sfu_up for r in rounds], args.climb_limit)} /"
            f" {median_of([r.page_up for r in rounds], args.climb_limit)}",
            f"{med(lambda r: r.slow.frozen_share):.1%} / {med(lambda r: r.free.frozen_share):.1%}",
            median_share([r.settled for r in rounds]),
            f"{med(lambda r: r.slow.fps):.1f} / {med(lambda r: r.free.fps):.1f}"
            f" ({ratio(med(lambda r: r.slow.fps), med(lambda r: r.free.fps))})",
            " / ".join(
                f"{statistics.median(r.layers.get(k, 0) for r in rounds):.0%}" for k in "qhf"
            ),
        ]
    )
    lines = [
        f".. list-table:: {len(rounds)} round{'s' if len(rounds) > 1 else ''} of"
        f" {args.shaped:g} s shaped",
        "   :header-rows: 1",
        "",
    ]
    for row in [header, *rows]:
        lines += [f"   {'*' if i == 0 else ' '} - {cell}" for i, cell in enumerate(row)]
    return lines


def goals(rounds: Sequence[Round], args: argparse.Namespace) -> list[str]:
    """The medians against the issue's goals, one sentence."""

    def against(values: Sequence[float | None], goal: float, bound: float) -> str:
        found = [v for v in values if v is not None]
        if not found:
            return f"never within {bound:g} s (goal: {goal:g} s)"
        value = statistics.median(found)
        missed = len(values) - len(found)
        return (
            f"{value:.1f} s ({'met' if value <= goal and not missed else 'not met'}:"
            f" goal {goal:g} s{f'; {missed} round(s) beyond {bound:g} s' if missed else ''})"
        )

    frozen = statistics.median(r.slow.frozen_share for r in rounds)
    free = statistics.median(r.free.frozen_share for r in rounds)
    return textwrap.wrap(
        f"Medians against the goals: the page decodes a lower layer"
        f" {against([r.page_down for r in rounds], 2.0, args.shaped)} after the shaping and"
        f" 640-pixel frames again {against([r.page_up for r in rounds], 10.0, args.climb_limit)}"
        f" after the lift; the shaped subscriber is frozen {frozen:.1%} of its shaped time"
        f" ({'met' if frozen < 0.01 else 'not met'}: goal under 1%), the free one {free:.1%}.",
        92,
    )


def machine() -> str:
    """Cores, Python, Chromium and the load, for the page."""
    try:
        chromium = subprocess.run(
            ["chromium", "--version"], capture_output=True, text=True, timeout=30, check=False
        ).stdout.strip()
    except OSError:
        chromium = "Chromium (version unknown)"
    return (
        f"{os.cpu_count()} cores shared with other work (load average"
        f" {os.getloadavg()[0]:.1f} at the end of the run), Python {sys.version.split()[0]},"
        f" {chromium or 'Chromium'}"
    )


def sfu_commit() -> str:
    """Which SFU code ran: main's at its present commit, or not, and its last change."""

    def git(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["git", "-C", str(ROOT), *argv], capture_output=True, text=True, check=False
        )

    main = git("rev-parse", "--short", "main").stdout.strip() or "unknown"
    last = git("log", "-1", "--format=%h, %cs", "main", "--", "src/rtckit/sfu").stdout.strip()
    # the working tree against main: uncommitted changes count
    same = git("diff", "--quiet", "main", "--", "src/rtckit/sfu").returncode == 0
    return (
        f"The SFU's code (``src/rtckit/sfu``) is {'' if same else 'not '}main's at commit"
        f" {main} (where it last changed in {last or 'an unknown commit'})"
    )


def page(rounds: Sequence[Round], args: argparse.Namespace) -> str:
    lines = [
        ".. This page is written by benchmarks/simulcast_link.py; do not edit it by hand.",
        "",
        "Simulcast benchmark on a shaped link",
        "====================================",
        "",
        "``python benchmarks/simulcast_link.py`` measures a constrained simulcast subscriber on",
        "a real link (:doc:`sfu-forwarding`, section Simulcast; the loopback benchmark with a",
        "policer on the SFU's send path is :doc:`simulcast-benchmark`). Three headless",
        "Chromium browsers, each in a network namespace of a",
        ":class:`~rtckit.testing.natlab.NatLab`, and the ``rtckit`` server (signaling and SFU)",
        "with its sockets in the lab's public namespace",
        "(:class:`~rtckit.testing.labroom.LabRoom`): one publishes its fake camera (640x360,",
        "15 fps) in the three layers q/h/f (160, 320, 640 pixels wide), two subscribe. The",
        "``free`` one keeps an unthrottled link: it is the baseline, measured over the same",
        f"windows. Each round, the ``slow`` one's downlink is shaped for {args.shaped:g} s by a",
        f"``tc`` token bucket with a {QUEUE * 1000:.0f} ms queue",
        "(:meth:`~rtckit.testing.natlab.NatLab.shape_downlink`), at the mean of the bottom and",
        "the middle layer's bitrates as the SFU measures them at the start of the round, then",
        "lifted.",
        "",
        *textwrap.wrap(f"Machine: {machine()}. {sfu_commit()}.", 92),
        "",
        *table(rounds, args),
        "",
        *goals(rounds, args),
        "",
        "How each figure is taken (the SFU's layer and the page's ``inbound-rtp`` statistics",
        f"are read every {STEP:g} s or so):",
        "",
        "* to a lower layer: from the shaping to the SFU forwarding another layer than f",
        "  (``Subscription.layer``), and to the page's ``frameWidth`` narrower than 640 pixels"
        " (goal: 2 s);",
        "* to 640 px after the lift: from the lift to the SFU forwarding f again, and to the",
        f"  page's ``frameWidth`` at 640 (goal: 10 s; not waited for beyond"
        f" {args.climb_limit:g} s);",
        "* frozen while shaped: Chromium's ``totalFreezesDuration`` gained over the shaped",
        "  window, divided by the window (goal for ``slow``: under 1%), with the ``freezeCount``",
        "  gained; Chromium counts a freeze when it ends, so one still going at the lift counts",
        "  after it, not here;",
        "* slow frozen after its first narrower frame: the same, from the page's first frame",
        "  narrower than 640 pixels to the lift (the layer switch's own freeze left out);",
        "* frames/s: ``framesDecoded`` gained over the shaped window; the ratio is slow / free;",
        "* SFU forwarded: the share of the shaped window's readings on each layer.",
        "",
    ]
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    made = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    made.add_argument("--rounds", type=int, default=3, help="rounds of shaping (medians)")
    made.add_argument("--shaped", type=float, default=20.0, help="seconds shaped per round")
    made.add_argument(
        "--climb-limit", type=float, default=30.0, help="seconds waited for 640 px after the lift"
    )
    made.add_argument("--rest", type=float, default=3.0, help="seconds on 640 px before a round")
    made.add_argument("--quick", action="store_true", help="one round of 8 s shaped")
    made.add_argument("--no-write", action="store_true", help="do not update the docs page")
    return made


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = parser().parse_args(argv)
    if args.quick:
        args.rounds, args.shaped = 1, min(args.shaped, 8.0)
    if args.rounds < 1 or args.shaped <= 0 or args.climb_limit <= 0 or args.rest < 0:
        parser().error("--rounds >= 1, --shaped > 0, --climb-limit > 0 and --rest >= 0")
    return args


async def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    missing = [name for name in ("ip", "tc", "chromium") if shutil.which(name) is None]
    if os.geteuid() != 0 or missing:
        print(f"needs root and ip, tc, chromium (missing: {missing or 'root'})", file=sys.stderr)
        return 2
    t0 = time.monotonic()
    rounds = await measure(args)
    print("\n".join(table(rounds, args)))
    if not args.no_write:
        PAGE.write_text(page(rounds, args))
    print(f"total {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
