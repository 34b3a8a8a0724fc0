"""A GStreamer ``webrtcbin`` peer driven over stdin/stdout: an independent WebRTC stack for tests.

Run it with a Python that has PyGObject and GStreamer's introspection data (Debian:
``/usr/bin/python3`` with ``python3-gi``, ``python3-gst-1.0``, ``gir1.2-gst-plugins-bad-1.0``,
``gstreamer1.0-nice`` and ``gstreamer1.0-plugins-{base,good,bad}``); it imports neither rtckit
nor aiortc, only the standard library and ``gi``. :class:`rtckit.testing._webrtcbin.WebrtcbinPeer`
starts it and speaks to it::

    /usr/bin/python3 _webrtcbin_peer.py --role offer --send-video --heartbeat

Lines on stdin and stdout are JSON objects. Peer messages use rtckit's own shape
(:func:`rtckit.peer.signaller.message_to_dict`: ``{"kind": "description", "type": "offer",
"sdp": ...}``, ``{"kind": "candidate", "candidate": ..., "sdpMLineIndex": 0}``), so they can be
fed to a :class:`~rtckit.peer.session.PeerSession` as they are. Besides them, the driver reads
``{"kind": "publish"}`` (start sending video now, renegotiating as the offerer) and
``{"kind": "quit"}``, and writes ``{"kind": "status", ...}`` reports: ``ready``, ``dtls`` (its
own and the remote certificate in PEM, whether webrtcbin was the DTLS client of the handshake),
``state`` (the connection state), ``frames`` (decoded video frames received so far) and
``error`` (then it exits 1).

Only what a test on one machine needs: no STUN server is ever set (``stun-server`` stays
unset), so ICE gathers host candidates, and relayed ones only from a TURN server given with
``--turn-server turn://user:password@127.0.0.1:port`` (webrtcbin's ``turn-server`` property;
the user and password percent-encoded); ``--relay-only`` sets ``ice-transport-policy`` to
``relay``. Video is ``videotestsrc`` encoded to VP8 with ``vp8enc``, or with ``--video-codec
h264`` to H.264 with ``x264enc`` as OBS sends it (``tune=zerolatency``, constrained baseline,
no B-frames, a keyframe every second); ``--send-audio`` adds ``audiotestsrc`` encoded to Opus.
webrtcbin trickles its candidates; with ``--no-trickle`` an offer is sent only once gathering is
complete, with every candidate in it, and no candidate message follows (a WHIP client without
trickle). ``--answer-setup passive`` rewrites the
``a=setup`` attribute of the local answer, so that webrtcbin takes the DTLS server role and the
offerer is the DTLS client (webrtcbin itself always answers ``active``). With
``--keep-dtls-role`` its later answers and offers keep the role of the first exchange, as
a browser does; webrtcbin 1.22 by itself answers every re-offer ``active``, so a re-offer that
arrives before the handshake starts flips the roles. ``--heartbeat`` opens
rtckit's pre-negotiated heartbeat channel (label ``rtckit-heartbeat``, id 1000) and sends on
it every half second, as any peer of a :class:`~rtckit.peer.session.PeerSession` must.
"""

# This file runs under the system Python with PyGObject, not in rtckit's environment: gi has
# no type stubs there, so everything from it is Any.
from __future__ import annotations

import argparse
import json
import re
import sys
import threading
from typing import Any

import gi  # type: ignore[import-not-found, unused-ignore]

gi.require_version("Gst", "1.0")
gi.require_version("GstWebRTC", "1.0")
gi.require_version("GstSdp", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # type: ignore[import-not-found, unused-ignore]  # noqa: E402

_HEARTBEAT_LABEL = "rtckit-heartbeat"
_HEARTBEAT_ID = 1000
_VP8_RTPMAP = re.compile(r"^a=rtpmap:(\d+) VP8/90000", re.MULTILINE | re.IGNORECASE)
_OPUS_PT = 111
#: The H.264 an OBS (x264 with its WHIP defaults) sends: what the RTP caps announce.
_H264_FMTP = "packetization-mode=(string)1"
_SETUP = re.compile(r"^a=setup:\w+", re.MULTILINE)

_out_lock = threading.Lock()


def _setup_of(sdp: str) -> str:
    """The ``a=setup`` value of *sdp* (the first one: every m-line is bundled)."""
    match = _SETUP.search(sdp)
    if match is None:
        raise ValueError("an SDP without a=setup")
    return match.group().split(":", 1)[1]


def emit(kind: str, **fields: Any) -> None:
    """Write one JSON line on stdout (called from GStreamer's threads too)."""
    line = json.dumps({"kind": kind, **fields})
    with _out_lock:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


def status(event: str, **fields: Any) -> None:
    emit("status", event=event, **fields)


class Peer:
    """One webrtcbin in a pipeline, negotiated with the JSON lines protocol."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.loop = GLib.MainLoop()
        self.pipeline = Gst.Pipeline.new("peer")
        self.webrtc = Gst.ElementFactory.make("webrtcbin", "webrtc")
        self.webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
        if args.turn_server:
            self.webrtc.set_property("turn-server", args.turn_server)
        if args.relay_only:
            self.webrtc.set_property(
                "ice-transport-policy", GstWebRTC.WebRTCICETransportPolicy.RELAY
            )
        self.pipeline.add(self.webrtc)
        self.webrtc.connect("on-negotiation-needed", self._on_negotiation_needed)
        self.webrtc.connect("on-ice-candidate", self._on_ice_candidate)
        self.webrtc.connect("pad-added", self._on_pad_added)
        self.webrtc.connect("notify::connection-state", self._on_connection_state)
        self.webrtc.connect("notify::ice-gathering-state", self._on_gathering_state)
        bus = self.pipeline.get_bus()
        bus.add_signal_watch()
        bus.connect("message::error", self._on_bus_error)
        self.payload_type = 96
        self.sending = False
        self.frames = 0
        self.channel: Any = None
        self.negotiating = False
        self.offered = False
        self.offer_pending = False
        #: "active" (DTLS client) or "passive" (server), once the first exchange settled it.
        self.dtls_role: str | None = None
        self.dtls_reported = False
        self.dtls_watched: set[str] = set()
        self.dtls_client: bool | None = None
        #: (type, text) of a local description held until gathering completes (--no-trickle)
        self.held: tuple[str, str] | None = None

    # -- set-up ----------------------------------------------------------------------------

    def start(self) -> None:
        if self.args.heartbeat:
            options = Gst.Structure.new_from_string(
                f"options,negotiated=true,id={_HEARTBEAT_ID},ordered=false,max-retransmits=0"
            )
            self.pipeline.set_state(Gst.State.READY)
            self.channel = self.webrtc.emit("create-data-channel", _HEARTBEAT_LABEL, options)
            if self.channel is None:
                self.fail("webrtcbin refused to create the heartbeat data channel")
                return
            self.channel.connect("on-open", self._on_channel_open)
        if self.args.send_video and self.args.role == "offer":
            self.add_video_source()
        self.pipeline.set_state(Gst.State.PLAYING)
        status("ready")

    def add_video_source(self) -> None:
        """videotestsrc ! encoder ! payloader ! webrtcbin (payload type ``self.payload_type``),
        then the Opus branch with ``--send-audio``."""
        if self.sending:
            return
        self.sending = True
        pt = self.payload_type
        if self.args.video_codec == "h264":
            # OBS's x264 settings for WHIP: zerolatency, no B-frames, constrained baseline
            encoder = (
                "x264enc tune=zerolatency speed-preset=ultrafast bframes=0 key-int-max=30 "
                "bitrate=600 ! video/x-h264,profile=constrained-baseline ! "
                f"rtph264pay pt={pt} config-interval=-1 aggregate-mode=zero-latency"
            )
            caps = f"application/x-rtp,media=video,encoding-name=H264,payload={pt},{_H264_FMTP}"
        else:
            encoder = (
                f"vp8enc deadline=1 keyframe-max-dist=30 target-bitrate=300000 ! rtpvp8pay pt={pt}"
            )
            caps = f"application/x-rtp,media=video,encoding-name=VP8,payload={pt}"
        self.add_branch(
            "videotestsrc is-live=true pattern=ball ! "
            "video/x-raw,width=320,height=240,framerate=30/1 ! "
            f'{encoder} ! capsfilter caps="{caps}"'
        )
        if self.args.send_audio:
            caps = f"application/x-rtp,media=audio,encoding-name=OPUS,payload={_OPUS_PT}"
            self.add_branch(
                "audiotestsrc is-live=true wave=sine freq=440 ! audioconvert ! audioresample ! "
                f'opusenc ! rtpopuspay pt={_OPUS_PT} ! capsfilter caps="{caps}"'
            )

    def add_branch(self, description: str) -> None:
        """A source bin from *description*, linked to a new sink pad of webrtcbin."""
        branch = Gst.parse_bin_from_description(description, True)
        self.pipeline.add(branch)
        branch.link(self.webrtc)
        branch.sync_state_with_parent()

    # -- negotiation -----------------------------------------------------------------------

    def _on_negotiation_needed(self, _element: Any) -> None:
        # One offer per reason to offer: webrtcbin signals again after each renegotiation.
        first = self.args.role == "offer" and not self.offered
        if (first or self.negotiating) and not self.offer_pending:
            self.offered = self.offer_pending = True
            GLib.idle_add(self.make_offer)

    def make_offer(self) -> bool:
        promise = Gst.Promise.new_with_change_func(self._on_created, "offer")
        self.webrtc.emit("create-offer", None, promise)
        return False

    def _on_created(self, promise: Any, kind: str) -> None:
        """An offer or answer (*kind*) was created: set it locally and send it."""
        reply = promise.get_reply()
        created = reply.get_value(kind) if reply is not None else None
        if created is None:
            self.fail(f"create-{kind} failed: {reply}")
            return
        text = created.sdp.as_text()
        if self.dtls_role is not None:
            setup = self.dtls_role if self.args.keep_dtls_role else None
        else:
            setup = self.args.answer_setup if kind == "answer" else None
        if setup is not None:
            text = _SETUP.sub(f"a=setup:{setup}", text)
            created = self.description(created.type, text)
        if kind == "answer" and self.dtls_role is None:
            self.dtls_role = _setup_of(text)
        self.webrtc.emit("set-local-description", created, Gst.Promise.new())
        GLib.idle_add(self.watch_dtls)
        if self.args.no_trickle:
            self.held = (kind, text)
            GLib.idle_add(self.send_when_gathered)
            return
        emit("description", type=kind, sdp=text, generation=0)

    def _on_gathering_state(self, _element: Any, _spec: Any) -> None:
        GLib.idle_add(self.send_when_gathered)

    def send_when_gathered(self) -> bool:
        """--no-trickle: send the held description once gathering is complete, as webrtcbin's
        local description then is (every candidate in it)."""
        state = self.webrtc.get_property("ice-gathering-state")
        if self.held is None or state != GstWebRTC.WebRTCICEGatheringState.COMPLETE:
            return False
        kind, _text = self.held
        self.held = None
        local = self.webrtc.get_property("local-description")
        emit("description", type=kind, sdp=local.sdp.as_text(), generation=0)
        return False

    def description(self, sdp_type: Any, text: str) -> Any:
        result, message = GstSdp.SDPMessage.new_from_text(text)
        if result != GstSdp.SDPResult.OK:
            raise ValueError(f"unparsable SDP ({result})")
        return GstWebRTC.WebRTCSessionDescription.new(sdp_type, message)

    def on_description(self, data: dict[str, Any]) -> None:
        text = str(data["sdp"])
        if data["type"] == "offer":
            match = _VP8_RTPMAP.search(text)
            if match is not None:
                self.payload_type = int(match.group(1))
            if self.args.send_video:
                self.add_video_source()
            offer = self.description(GstWebRTC.WebRTCSDPType.OFFER, text)
            promise = Gst.Promise.new_with_change_func(self._on_offer_set, None)
            self.webrtc.emit("set-remote-description", offer, promise)
        else:
            answer = self.description(GstWebRTC.WebRTCSDPType.ANSWER, text)
            self.webrtc.emit("set-remote-description", answer, Gst.Promise.new())
            self.negotiating = self.offer_pending = False
            if self.dtls_role is None:  # the answerer's role decides ours
                self.dtls_role = {"active": "passive", "passive": "active"}[_setup_of(text)]

    def _on_offer_set(self, _promise: Any, _data: Any) -> None:
        promise = Gst.Promise.new_with_change_func(self._on_created, "answer")
        self.webrtc.emit("create-answer", None, promise)

    def publish(self) -> None:
        """Start sending video: webrtcbin asks for a renegotiation, and this side offers."""
        self.negotiating = True
        self.add_video_source()

    def _on_ice_candidate(self, _element: Any, mline: int, candidate: str) -> None:
        if self.args.no_trickle:
            return
        emit("candidate", candidate=candidate, sdpMid=None, sdpMLineIndex=mline, generation=0)

    def on_candidate(self, data: dict[str, Any]) -> None:
        text = data.get("candidate") or ""
        index = data.get("sdpMLineIndex")
        if text and isinstance(index, int):
            self.webrtc.emit("add-ice-candidate", index, text)

    # -- media and state -------------------------------------------------------------------

    def _on_pad_added(self, _element: Any, pad: Any) -> None:
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        sink = Gst.parse_bin_from_description(
            "rtpvp8depay ! vp8dec ! fakesink name=frames sync=false", True
        )
        self.pipeline.add(sink)
        sink.sync_state_with_parent()
        pad.link(sink.get_static_pad("sink"))
        target = sink.get_by_name("frames").get_static_pad("sink")
        target.add_probe(Gst.PadProbeType.BUFFER, self._count_frame)

    def _count_frame(self, _pad: Any, _info: Any) -> Any:
        self.frames += 1
        if self.frames % 30 == 1:
            status("frames", frames=self.frames)
        return Gst.PadProbeReturn.OK

    def _on_connection_state(self, element: Any, _spec: Any) -> None:
        state = element.get_property("connection-state").value_nick
        status("state", state=state)
        GLib.idle_add(self.watch_dtls)

    def dtls_elements(self, factory: str) -> list[Any]:
        """webrtcbin's inner elements made by *factory* (one each: every m-line is bundled)."""
        for _ in range(10):  # the bin may change while it is walked: then walk it again
            found = []
            try:
                for element in self.webrtc.iterate_recurse():
                    element_factory = element.get_factory()
                    if element_factory is not None and element_factory.get_name() == factory:
                        found.append(element)
            except Exception:  # noqa: BLE001, S112 - Gst.IteratorError (resync); gi-defined
                continue
            return found
        return []

    def watch_dtls(self) -> bool:
        """Note webrtcbin's DTLS role when its handshake starts (a renegotiation may change
        the ``is-client`` property later, without a new handshake)."""
        for encoder in self.dtls_elements("dtlssrtpenc"):
            name = encoder.get_name()
            if name not in self.dtls_watched:
                self.dtls_watched.add(name)
                encoder.connect("notify::connection-state", self._on_dtls_state)
                self._on_dtls_state(encoder, None)
        return False

    def _on_dtls_state(self, encoder: Any, _spec: Any) -> None:
        state = encoder.get_property("connection-state").value_nick
        if state in ("connecting", "connected") and self.dtls_client is None:
            self.dtls_client = bool(encoder.get_property("is-client"))
        if state == "connected" and not self.dtls_reported:
            self.dtls_reported = True
            GLib.idle_add(self.report_dtls)

    def report_dtls(self) -> bool:
        decoders = self.dtls_elements("dtlssrtpdec")
        if not decoders:
            self.fail("webrtcbin has a DTLS encoder but no decoder")
            return False
        status(
            "dtls",
            client=self.dtls_client,
            certificate=decoders[0].get_property("pem"),
            remote_certificate=decoders[0].get_property("peer-pem"),
        )
        return False

    def _on_channel_open(self, channel: Any) -> None:
        status("channel", label=channel.get_property("label"))
        GLib.timeout_add(500, self._heartbeat)

    def _heartbeat(self) -> bool:
        channel = self.channel
        if channel is None or channel.get_property("ready-state").value_nick != "open":
            return False
        channel.emit("send-string", "rtckit-heartbeat")
        return True

    # -- plumbing --------------------------------------------------------------------------

    def _on_bus_error(self, _bus: Any, message: Any) -> None:
        error, debug = message.parse_error()
        self.fail(f"{error.message} ({debug})")

    def fail(self, reason: str) -> None:
        status("error", reason=reason)
        self.exit_code = 1
        self.loop.quit()

    def on_line(self, line: str) -> bool:
        try:
            data = json.loads(line)
            kind = data.get("kind")
            if kind == "description":
                self.on_description(data)
            elif kind == "candidate":
                self.on_candidate(data)
            elif kind == "publish":
                self.publish()
            elif kind == "quit":
                self.loop.quit()
            elif kind == "restart":
                self.fail("this webrtcbin peer cannot replace its connection (restart)")
        except Exception as exc:  # noqa: BLE001 - report anything to the test, then stop
            self.fail(f"{type(exc).__name__}: {exc}")
        return False

    def read_stdin(self) -> None:
        for line in sys.stdin:
            if line.strip():
                GLib.idle_add(self.on_line, line)
        GLib.idle_add(self.loop.quit)

    def run(self) -> int:
        self.exit_code = 0
        threading.Thread(target=self.read_stdin, daemon=True).start()
        GLib.idle_add(self._start_once)
        try:
            self.loop.run()
        finally:
            self.pipeline.set_state(Gst.State.NULL)
        return self.exit_code

    def _start_once(self) -> bool:
        try:
            self.start()
        except Exception as exc:  # noqa: BLE001 - report anything to the test, then stop
            self.fail(f"{type(exc).__name__}: {exc}")
        return False


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--role", choices=("offer", "answer"), required=True)
    parser.add_argument("--send-video", action="store_true")
    parser.add_argument("--heartbeat", action="store_true")
    parser.add_argument("--answer-setup", choices=("active", "passive"))
    parser.add_argument("--keep-dtls-role", action="store_true")
    parser.add_argument("--video-codec", choices=("vp8", "h264"), default="vp8")
    parser.add_argument("--send-audio", action="store_true")
    parser.add_argument("--no-trickle", action="store_true")
    parser.add_argument("--turn-server")
    parser.add_argument("--relay-only", action="store_true")
    args = parser.parse_args(argv)
    Gst.init(None)
    if Gst.ElementFactory.find("webrtcbin") is None:
        status("error", reason="GStreamer has no webrtcbin element")
        return 1
    return Peer(args).run()


if __name__ == "__main__":
    sys.exit(main())
