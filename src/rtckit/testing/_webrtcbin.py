"""Drive GStreamer's ``webrtcbin`` from an asyncio test: an independent WebRTC stack on loopback.

:class:`WebrtcbinPeer` runs :mod:`rtckit.testing._webrtcbin_peer` under the system Python
(PyGObject has no wheel in rtckit's environment; Debian's ``/usr/bin/python3`` has it) and
exchanges rtckit peer messages with it as JSON lines. It is a
:class:`~rtckit.peer.signaller.Signaller`: give it to nothing, but pass what a
:class:`~rtckit.peer.session.PeerSession` sends to :meth:`WebrtcbinPeer.send`, and feed what
:meth:`WebrtcbinPeer.messages` yields to the session.

:func:`require_webrtcbin` skips the calling test when GStreamer's WebRTC stack is missing
(and fails it under ``RTCKIT_REQUIRE_SYSTEM=1``), naming the Debian packages to install.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import json
import os
import subprocess
import urllib.parse
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from rtckit.peer.signaller import PeerMessage, message_from_dict, message_to_dict
from rtckit.testing._system import _missing

__all__ = [
    "ELEMENT_PACKAGES",
    "GST_PACKAGES",
    "GST_PYTHON_ENV",
    "WebrtcbinPeer",
    "require_webrtcbin",
    "turn_server_url",
]

#: The Debian packages that give ``/usr/bin/python3`` a working ``webrtcbin``.
GST_PACKAGES = (
    "python3-gi python3-gst-1.0 gir1.2-gst-plugins-bad-1.0 gstreamer1.0-nice "
    "gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-bad"
)
#: Environment variable naming the Python with PyGObject (default ``/usr/bin/python3``).
GST_PYTHON_ENV = "RTCKIT_GST_PYTHON"
_DRIVER = Path(__file__).with_name("_webrtcbin_peer.py")
_ELEMENTS = (
    *("webrtcbin", "nicesrc", "dtlsenc", "sctpenc", "vp8enc", "vp8dec", "videotestsrc"),
    *("audiotestsrc", "opusenc", "rtpopuspay", "rtph264pay"),
)
#: The Debian package of each element a test may need beyond :data:`GST_PACKAGES`' own.
ELEMENT_PACKAGES = {"x264enc": "gstreamer1.0-plugins-ugly"}
_CHECK = """
import sys
import gi
gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import Gst, GstSdp, GstWebRTC
Gst.init(None)
missing = [e for e in sys.argv[1:] if Gst.ElementFactory.find(e) is None]
print(" ".join(missing))
"""


def turn_server_url(url: str, username: str, credential: str) -> str:
    """webrtcbin's ``turn-server`` form of the ``RTCIceServer`` (*url*, *username*,
    *credential*): ``turn://user:password@host:port``, the user and password percent-encoded
    (a TURN REST user name has a ``:``, its password may have ``/``, ``+`` and ``=``).

    Raises :class:`ValueError` for a URL that is not ``turn:host:port`` (``turns:`` and
    ``?transport=`` are not handled here: the tests use plain UDP TURN).
    """
    scheme, _, rest = url.partition(":")
    if scheme != "turn" or not rest or "?" in rest or rest.startswith("//"):
        raise ValueError(f"not a turn:host:port URL: {url!r}")
    user, password = (urllib.parse.quote(text, safe="") for text in (username, credential))
    return f"turn://{user}:{password}@{rest}"


def _python() -> str:
    return os.environ.get(GST_PYTHON_ENV, "/usr/bin/python3")


def _child_env() -> dict[str, str]:
    """This process's environment without what points a Python at rtckit's environment."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"}
    return {key: value for key, value in os.environ.items() if key not in drop}


@functools.cache
def _webrtcbin_problem(python: str, elements: tuple[str, ...] = _ELEMENTS) -> str | None:
    if not Path(python).exists():
        return f"{python} does not exist"
    try:
        result = subprocess.run(
            [python, "-c", _CHECK, *elements],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            env=_child_env(),
        )
    except subprocess.TimeoutExpired:
        return f"{python} took over 60 s to load GStreamer"
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["no error output"])[-1]
        return f"{python} cannot load GStreamer's WebRTC bindings ({last})"
    if missing := result.stdout.split():
        return f"GStreamer lacks the elements {', '.join(missing)}"
    return None


def require_webrtcbin(*elements: str) -> str:
    """Return the Python that can run ``webrtcbin`` (and the GStreamer *elements*, one of
    :data:`ELEMENT_PACKAGES`), or skip/fail the calling test."""
    problem = _webrtcbin_problem(_python(), (*_ELEMENTS, *elements))
    if problem is not None:
        packages = " ".join([GST_PACKAGES, *(ELEMENT_PACKAGES[e] for e in elements)])
        _missing(f"GStreamer's webrtcbin is not usable: {problem}: apt-get install {packages}")
    return _python()


class WebrtcbinPeer:
    """One ``webrtcbin`` peer in a child process; an async context manager.

    *role* ``"offer"``: it offers as soon as it has something to negotiate (its video with
    *send_video*, its heartbeat channel with *heartbeat*); ``"answer"``: it answers offers, and
    offers only after :meth:`publish`. *answer_setup* (``"passive"``) rewrites the ``a=setup``
    of its first answer (webrtcbin itself always answers ``active``, i.e. as the DTLS client).
    With *keep_dtls_role*, its later answers and offers keep the DTLS role of the first
    exchange, as a browser does (webrtcbin 1.22 answers every re-offer ``active``).

    A publisher's media: *video_codec* ``"vp8"`` (``vp8enc``) or ``"h264"`` (``x264enc`` as
    OBS sets it up for WHIP; Debian's ``gstreamer1.0-plugins-ugly``: without it the calling
    test is skipped, as by :func:`require_webrtcbin`), and with *send_audio* an Opus tone.
    *trickle* false: the offer waits for gathering to complete and carries every candidate
    (no candidate message follows). *turn_server*: a ``turn://user:password@host:port`` URL (see
    :func:`turn_server_url`); *relay_only*: ICE transport policy ``relay``.
    """

    def __init__(
        self,
        *,
        role: str,
        send_video: bool = False,
        heartbeat: bool = False,
        answer_setup: str | None = None,
        keep_dtls_role: bool = False,
        video_codec: str = "vp8",
        send_audio: bool = False,
        trickle: bool = True,
        turn_server: str | None = None,
        relay_only: bool = False,
        python: str | None = None,
    ) -> None:
        self.args = ["--role", role]
        if send_video:
            self.args.append("--send-video")
        if heartbeat:
            self.args.append("--heartbeat")
        if answer_setup is not None:
            self.args += ["--answer-setup", answer_setup]
        if keep_dtls_role:
            self.args.append("--keep-dtls-role")
        if video_codec != "vp8":
            self.args += ["--video-codec", video_codec]
        if send_audio:
            self.args.append("--send-audio")
        if not trickle:
            self.args.append("--no-trickle")
        if turn_server is not None:
            self.args += ["--turn-server", turn_server]
        if relay_only:
            self.args.append("--relay-only")
        if python is None:
            python = require_webrtcbin(*(["x264enc"] if video_codec == "h264" else []))
        self.python = python
        self._process: asyncio.subprocess.Process | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._messages: asyncio.Queue[PeerMessage | None] = asyncio.Queue()
        self._changed = asyncio.Condition()
        #: Every status report, in order (``{"event": "state", "state": "connected"}``...).
        self.reports: list[dict[str, Any]] = []
        #: The descriptions webrtcbin sent, in order.
        self.descriptions: list[dict[str, Any]] = []
        self.stderr: collections.deque[str] = collections.deque(maxlen=40)

    async def __aenter__(self) -> WebrtcbinPeer:
        self._process = await asyncio.create_subprocess_exec(
            self.python,
            str(_DRIVER),
            *self.args,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            limit=1 << 20,
            env=_child_env(),
        )
        self._tasks = [
            asyncio.create_task(self._read_stdout(), name="webrtcbin-stdout"),
            asyncio.create_task(self._read_stderr(), name="webrtcbin-stderr"),
        ]
        await self.wait_for(lambda reports: any(r["event"] == "ready" for r in reports), 30)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Ask the child to quit, kill it after 5 s, and stop the readers. Idempotent."""
        process = self._process
        if process is not None and process.returncode is None:
            with contextlib.suppress(ConnectionError):
                await self._write({"kind": "quit"})
            try:
                await asyncio.wait_for(process.wait(), 5)
            except TimeoutError:
                process.kill()
                await process.wait()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks = []

    def kill(self) -> None:
        """Kill the child now (SIGKILL): it sends nothing more, not even a DTLS close, as a
        crashed encoder. :meth:`aclose` still reaps it."""
        process = self._process
        if process is not None and process.returncode is None:
            process.kill()

    # -- the Signaller protocol ------------------------------------------------------------

    @property
    def connected(self) -> bool:
        """Whether the child runs (messages can reach it)."""
        return self._process is not None and self._process.returncode is None

    async def send(self, message: PeerMessage) -> None:
        """Hand *message* (from a session) to webrtcbin."""
        await self._write(message_to_dict(message))

    # -- what webrtcbin says ---------------------------------------------------------------

    async def messages(self) -> AsyncIterator[PeerMessage]:
        """The peer messages webrtcbin sends, until it exits."""
        while (message := await self._messages.get()) is not None:
            yield message

    async def publish(self) -> None:
        """Start sending video (webrtcbin renegotiates, offering)."""
        await self._write({"kind": "publish"})

    async def wait_for(
        self,
        predicate: Callable[[list[dict[str, Any]]], Any],
        timeout: float,  # noqa: ASYNC109 - every wait of a test is bounded
    ) -> Any:
        """Wait until *predicate* (of :attr:`reports`) is true; raise if the child fails."""
        async with asyncio.timeout(timeout), self._changed:
            while not (result := predicate(self.reports)):
                errors = [r for r in self.reports if r["event"] == "error"]
                if errors or not self.connected:
                    raise AssertionError(
                        f"webrtcbin peer failed: {errors or 'it exited'}; stderr: "
                        + " | ".join(self.stderr)
                    )
                await self._changed.wait()
            return result

    def report(self, event: str) -> dict[str, Any] | None:
        """The last status report of kind *event*, if any."""
        for report in reversed(self.reports):
            if report["event"] == event:
                found: dict[str, Any] = report
                return found
        return None

    @property
    def frames(self) -> int:
        """Video frames webrtcbin decoded so far (reported every 30 frames)."""
        report = self.report("frames")
        return int(report["frames"]) if report is not None else 0

    # -- plumbing --------------------------------------------------------------------------

    async def _write(self, data: dict[str, Any]) -> None:
        process = self._process
        if process is None or process.stdin is None or process.returncode is not None:
            raise ConnectionError("the webrtcbin peer is not running")
        process.stdin.write(json.dumps(data).encode() + b"\n")
        await process.stdin.drain()

    async def _read_stdout(self) -> None:
        process = self._process
        assert process is not None
        assert process.stdout is not None
        try:
            while line := await process.stdout.readline():
                data = json.loads(line)
                if data.get("kind") == "status":
                    async with self._changed:
                        self.reports.append(data)
                        self._changed.notify_all()
                    continue
                if data.get("kind") == "description":
                    self.descriptions.append(data)
                self._messages.put_nowait(message_from_dict(data))
        finally:
            await process.wait()
            self._messages.put_nowait(None)
            async with self._changed:
                self._changed.notify_all()

    async def _read_stderr(self) -> None:
        process = self._process
        assert process is not None
        assert process.stderr is not None
        while line := await process.stderr.readline():
            self.stderr.append(line.decode(errors="replace").rstrip())
