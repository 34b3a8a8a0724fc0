// rtckit/peer.js: PeerSession, the browser side of rtckit.peer (same behaviour and messages).
//
//   PeerSession  one RTCPeerConnection at a time, W3C perfect negotiation (polite/impolite),
//                trickle ICE, heartbeat channel (negotiated id 1000), connection replacement
//                (rtckit's ICE restart, compatible with aiortc peers), typed events.
//   toSignaling / fromSignaling  the adapter between peer messages and signaling messages:
//                peer messages ({kind: "description" | "candidate" | "restart", ...,
//                generation}) map to the protocol's offer/answer/candidate/end-of-candidates/
//                restart with session "g<generation>".
//
// The rooms (rtckit/rooms.js) build on it. Import it through the entry, rtckit.js.

import { HEARTBEAT_CHANNEL_ID, HEARTBEAT_LABEL, HEARTBEAT_PAYLOAD } from "./constants.js";

/** Dispatch a CustomEvent `type` with `detail` on `target` (the rooms use it too). */
export const emit = (target, type, detail) => target.dispatchEvent(new CustomEvent(type, { detail }));

export function politeFor(localId, remoteId) {
  if (localId === remoteId) throw new Error(`both sides have the id ${localId}`);
  return localId < remoteId;
}

export class PeerSession extends EventTarget {
  constructor(signaller, {
    polite, iceServers = [], iceTransportPolicy = "all", heartbeatInterval = 1000,
    disconnectedAfter = 3000, restartAfter = 4000, deadPeerTimeout = 30000, autoRestart = true,
    heartbeatOpenTimeout = 10000, name = "", ownTransceivers = false, simulcast = null,
  } = {}) {
    super();
    if (typeof polite !== "boolean") throw new Error("polite must be true or false");
    this.signaller = signaller;
    this.polite = polite;
    this.config = { iceServers, iceTransportPolicy, heartbeatInterval, disconnectedAfter,
      restartAfter, deadPeerTimeout, autoRestart, heartbeatOpenTimeout };
    this.name = name;
    this.ownTransceivers = ownTransceivers;
    // sendEncodings of each local video track (ownTransceivers only), or null: one encoding
    this.simulcast = simulcast;
    this.generation = 0;
    this.state = "new";
    this.closed = false;
    this.localTracks = [];          // [{track, stream}]
    this.channels = new Map();      // label -> {options, channel, buffer}
    this.remoteTracks = new Map();  // mid -> track
    this.replacements = 0;
    this.setupTime = null;
    this.recoveryTime = null;
    this._queue = Promise.resolve();
    this._lastAlive = performance.now();
    this._lastReplacement = performance.now();
    this._timer = null;
  }

  start() {
    if (this.pc) return;
    this._newConnection();
    this._timer = setInterval(() => this._watchdog(), this.config.heartbeatInterval);
  }

  // Serialize every operation on the connection, as the Python session does.
  _run(fn) {
    const next = this._queue.then(fn).catch((err) => {
      if (!this.closed) console.warn(`rtckit ${this.name}:`, err);
    });
    this._queue = next;
    return next;
  }

  _setState(state) {
    if (state === this.state) return;
    this.state = state;
    emit(this, "statechange", { state, generation: this.generation });
  }

  _newConnection() {
    const pc = new RTCPeerConnection({
      iceServers: this.config.iceServers,
      iceTransportPolicy: this.config.iceTransportPolicy,
      bundlePolicy: "max-bundle",
    });
    this.pc = pc;
    const generation = this.generation;
    this.makingOffer = false;
    this.ignoreOffer = false;
    this.isSettingRemoteAnswerPending = false;
    this._offerStarted = null;
    const heartbeat = pc.createDataChannel(HEARTBEAT_LABEL, {
      negotiated: true, id: HEARTBEAT_CHANNEL_ID, ordered: false, maxRetransmits: 0,
    });
    heartbeat.onmessage = () => this._alive();
    // Like the Python session: heartbeats flow only once SCTP is up (after DTLS, seconds later
    // on a loaded machine); the channel opening is a sign of life, and until it opens a
    // connected session waits heartbeatOpenTimeout rather than disconnectedAfter.
    heartbeat.onopen = () => { if (this.pc === pc && !this.closed) this._alive(); };
    this.heartbeat = heartbeat;
    for (const { track, stream } of this.localTracks) this._sendTrack(pc, track, stream);
    for (const [label, entry] of this.channels) {
      if (entry.local) this._openChannel(pc, label, entry);
    }
    const current = () => this.pc === pc && !this.closed;
    // Like the Python session: on a fresh connection the polite side waits for the first
    // offer (aiortc cannot roll back a first offer), then offers what is still to negotiate.
    // No blind re-offer: the browser fires negotiationneeded again when the connection is
    // back to stable and something is still to negotiate (its tracks may have been taken by
    // the remote offer's m-lines). A needless offer invites glare, and Chromium's rollback of
    // a local offer (the polite side's answer to glare) leaves the video receivers of
    // sendrecv m-lines decoding into nothing (docs/topics/browser-quirks.rst).
    this.established = false;
    pc.onnegotiationneeded = () => {
      if (!current() || (this.polite && !this.established)) return;
      this._run(() => this._makeOffer(pc));
    };
    pc.onicecandidate = ({ candidate }) => {
      if (!current()) return;
      const message = candidate
        ? { kind: "candidate", candidate: candidate.candidate, sdpMid: candidate.sdpMid,
            sdpMLineIndex: candidate.sdpMLineIndex, generation }
        : { kind: "candidate", candidate: "", sdpMid: null, sdpMLineIndex: null, generation };
      this._send(message);
    };
    pc.ondatachannel = ({ channel }) => {
      if (!current()) return;
      let entry = this.channels.get(channel.label);
      if (!entry) {
        entry = { local: false, options: {}, channel: null, buffer: [] };
        this.channels.set(channel.label, entry);
        this._bind(entry, channel);
        emit(this, "datachannel", { label: channel.label });
      } else {
        this._bind(entry, channel);
      }
    };
    pc.ontrack = () => current() && this._updateRemoteTracks();
    pc.onconnectionstatechange = () => {
      if (!current()) return;
      const state = pc.connectionState;
      if (state === "connected") {
        const now = performance.now();
        this._lastAlive = now;
        if (this._offerStarted !== null && this.setupTime === null) {
          this.setupTime = (now - this._offerStarted) / 1000;
        }
        if (this._restartStarted) {
          this.recoveryTime = (now - this._restartStarted) / 1000;
          this._restartStarted = null;
        }
        this._setState("connected");
      } else if (state === "connecting") {
        this._setState("connecting");
      } else if (state === "failed") {
        this._setState("failed");
        if (this.config.autoRestart && this.signaller.connected) {
          this._run(() => generation === this.generation && this._replace("failed"));
        }
      }
    };
  }

  _openChannel(pc, label, entry) {
    const { negotiatedId, ordered = true, maxRetransmits } = entry.options;
    const init = { ordered };
    if (maxRetransmits !== undefined && maxRetransmits !== null) init.maxRetransmits = maxRetransmits;
    if (negotiatedId !== undefined && negotiatedId !== null) {
      init.negotiated = true;
      init.id = negotiatedId;
    }
    this._bind(entry, pc.createDataChannel(label, init));
  }

  _bind(entry, channel) {
    entry.channel = channel;
    const label = channel.label;
    channel.onmessage = ({ data }) => {
      if (entry.channel === channel && !this.closed) emit(this, "message", { label, data });
    };
    const flush = () => {
      if (entry.channel !== channel) return;
      const buffered = entry.buffer.splice(0);
      for (const item of buffered) channel.send(item);
    };
    if (channel.readyState === "open") flush();
    else channel.addEventListener("open", flush);
  }

  addTrack(track, stream) {
    if (this.localTracks.some((t) => t.track === track)) throw new Error("track already added");
    stream = stream || new MediaStream([track]);
    this.localTracks.push({ track, stream });
    if (this.pc) this._run(() => { if (!this.pc.getSenders().some((s) => s.track === track)) this._sendTrack(this.pc, track, stream); });
  }

  // ownTransceivers (SFU and MCU rooms): every local track is sent on an m-line of its own.
  // addTrack would reuse an m-line the server offered to send this page another participant's
  // video; Chromium then decodes that video (framesDecoded grows) but its track renders
  // nothing (a <video> of it stays at readyState 0; seen with Chromium 156 and an aiortc
  // server: a page joining an SFU room whose publisher was there first saw a black tile).
  _sendTrack(pc, track, stream) {
    if (this.ownTransceivers) {
      const init = { direction: "sendrecv", streams: [stream] };
      if (track.kind === "video" && this.simulcast) init.sendEncodings = this.simulcast.map((e) => ({ ...e }));
      pc.addTransceiver(track, init);
    } else {
      pc.addTrack(track, stream);
    }
  }

  removeTrack(track) {
    const index = this.localTracks.findIndex((t) => t.track === track);
    if (index < 0) throw new Error("track was not added");
    this.localTracks.splice(index, 1);
    if (this.pc) {
      this._run(() => {
        for (const sender of this.pc.getSenders()) {
          if (sender.track === track) this.pc.removeTrack(sender);
        }
      });
    }
  }

  createDataChannel(label, options = {}) {
    if (label === HEARTBEAT_LABEL || this.channels.has(label)) {
      throw new Error(`data channel label ${label} is already used`);
    }
    const entry = { local: true, options, channel: null, buffer: [] };
    this.channels.set(label, entry);
    if (this.pc) this._run(() => { if (!entry.channel) this._openChannel(this.pc, label, entry); });
    return entry;
  }

  send(label, data) {
    const entry = this.channels.get(label);
    if (!entry) throw new Error(`no data channel ${label}`);
    if (entry.channel && entry.channel.readyState === "open") entry.channel.send(data);
    else entry.buffer.push(data);
  }

  receive(message) {
    if (this.closed) return Promise.resolve();
    return this._run(() => this._onRemote(message));
  }

  restart() {
    return this._run(() => this._replace("requested"));
  }

  async _send(message) {
    try {
      await this.signaller.send(message);
    } catch (err) {
      console.warn(`rtckit ${this.name}: cannot send ${message.kind}:`, err);
    }
  }

  async _makeOffer(pc) {
    if (pc !== this.pc || this.closed) return;
    // not stable: negotiationneeded fires again once it is (if still needed)
    if (pc.signalingState !== "stable") return;
    try {
      this.makingOffer = true;
      if (this._offerStarted === null) this._offerStarted = performance.now();
      await pc.setLocalDescription();
      await this._send({ kind: "description", type: pc.localDescription.type,
        sdp: pc.localDescription.sdp, generation: this.generation });
    } finally {
      this.makingOffer = false;
    }
  }

  async _onRemote(message) {
    const generation = message.generation || 0;
    if (generation < this.generation) return;
    if (generation > this.generation) await this._replace("remote", generation);
    if (message.kind === "restart") return;
    const pc = this.pc;
    if (message.kind === "candidate") {
      try {
        if (message.candidate) {
          await pc.addIceCandidate({ candidate: message.candidate, sdpMid: message.sdpMid,
            sdpMLineIndex: message.sdpMLineIndex });
        } else {
          await pc.addIceCandidate();
        }
      } catch (err) {
        if (!this.ignoreOffer) console.warn(`rtckit ${this.name}: bad candidate`, err);
      }
      return;
    }
    // W3C perfect negotiation
    const readyForOffer = !this.makingOffer &&
      (pc.signalingState === "stable" || this.isSettingRemoteAnswerPending);
    const offerCollision = message.type === "offer" && !readyForOffer;
    this.ignoreOffer = !this.polite && offerCollision;
    if (this.ignoreOffer) return;
    if (message.type === "answer" && pc.signalingState !== "have-local-offer") return;
    this.isSettingRemoteAnswerPending = message.type === "answer";
    try {
      await pc.setRemoteDescription({ type: message.type, sdp: message.sdp });  // rolls back
    } finally {
      this.isSettingRemoteAnswerPending = false;
    }
    this._updateRemoteTracks();
    if (message.type === "offer") {
      await pc.setLocalDescription();
      // before the negotiationneeded the browser may fire now that it is stable again
      this.established = true;
      // currentDirection is known only once the answer is set
      this._updateRemoteTracks();
      await this._send({ kind: "description", type: pc.localDescription.type,
        sdp: pc.localDescription.sdp, generation: this.generation });
    }
    this.established = true;
  }

  _updateRemoteTracks() {
    const pc = this.pc;
    const sending = new Map();
    for (const transceiver of pc.getTransceivers()) {
      const direction = transceiver.currentDirection;
      if (transceiver.mid !== null && (direction === "sendrecv" || direction === "recvonly")) {
        sending.set(transceiver.mid, transceiver.receiver.track);
      }
    }
    for (const [mid, track] of [...this.remoteTracks]) {
      if (!sending.has(mid)) {
        this.remoteTracks.delete(mid);
        emit(this, "trackremoved", { track, kind: track.kind, mid, generation: this.generation });
      }
    }
    for (const [mid, track] of sending) {
      if (!this.remoteTracks.has(mid)) {
        this.remoteTracks.set(mid, track);
        emit(this, "track", { track, kind: track.kind, mid, generation: this.generation });
      }
    }
  }

  async _replace(reason, generation) {
    const old = this.pc;
    this.generation = generation !== undefined ? generation : this.generation + 1;
    this._lastReplacement = this._restartStarted = performance.now();
    this.replacements += 1;
    this._setState("restarting");
    for (const [mid, track] of this.remoteTracks) {
      emit(this, "trackremoved", { track, kind: track.kind, mid, generation: this.generation });
    }
    this.remoteTracks.clear();
    if (reason !== "remote") await this._send({ kind: "restart", generation: this.generation });
    for (const entry of this.channels.values()) entry.channel = null;
    if (old) old.close();
    this._newConnection();
    emit(this, "replaced", { generation: this.generation, reason });
  }

  _alive() {
    this._lastAlive = performance.now();
    if (this.state === "disconnected") this._setState("connected");
  }

  _watchdog() {
    if (this.closed) return;
    const { heartbeatInterval, disconnectedAfter, restartAfter, deadPeerTimeout, autoRestart } =
      this.config;
    if (this.heartbeat && this.heartbeat.readyState === "open") {
      try { this.heartbeat.send(HEARTBEAT_PAYLOAD); } catch (err) { /* closing */ }
    }
    const now = performance.now();
    const silent = now - this._lastAlive;
    if (silent >= deadPeerTimeout) {
      this._shutdown("peer-timeout");
      return;
    }
    const opening = this.heartbeat && this.heartbeat.readyState === "connecting";
    const limit = opening ? Math.max(disconnectedAfter, this.config.heartbeatOpenTimeout)
      : disconnectedAfter;
    if (this.state === "connected" && silent >= limit) this._setState("disconnected");
    const wait = restartAfter * (this.polite ? 2 : 1);
    if ((this.state === "disconnected" || this.state === "failed") && autoRestart &&
        silent >= wait && now - this._lastReplacement >= wait && this.signaller.connected) {
      this._lastReplacement = now;
      const generation = this.generation;
      this._run(() => generation === this.generation && this._replace("disconnected"));
    }
    void heartbeatInterval;
  }

  async stats() {
    const report = await this.pc.getStats();
    const out = { framesDecoded: 0, framesReceived: 0, bytesReceived: 0, bytesSent: 0,
      packetsLost: 0, roundTripTime: null, candidatePair: null };
    const candidates = new Map();
    report.forEach((s) => { if (s.type === "local-candidate" || s.type === "remote-candidate") candidates.set(s.id, s); });
    report.forEach((s) => {
      if (s.type === "inbound-rtp") {
        out.framesDecoded += s.framesDecoded || 0;
        out.framesReceived += s.framesReceived || 0;
        out.bytesReceived += s.bytesReceived || 0;
        out.packetsLost += s.packetsLost || 0;
      } else if (s.type === "outbound-rtp") {
        out.bytesSent += s.bytesSent || 0;
      } else if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded") {
        out.roundTripTime = s.currentRoundTripTime ?? null;
        const local = candidates.get(s.localCandidateId);
        const remote = candidates.get(s.remoteCandidateId);
        out.candidatePair = { localType: local && local.candidateType,
          remoteType: remote && remote.candidateType };
      }
    });
    return out;
  }

  _shutdown(reason) {
    if (this.closed) return;
    this.closed = true;
    clearInterval(this._timer);
    if (this.pc) this.pc.close();
    this._setState("closed");
    emit(this, "closed", { reason });
  }

  close() {
    this._shutdown("local");
  }
}

// -- signaling adapter ----------------------------------------------------------------------

function generationOf(session) {
  return session && /^g\d+$/.test(session) ? Number(session.slice(1)) : 0;
}

export function toSignaling(to, message) {
  const session = `g${message.generation || 0}`;
  if (message.kind === "description") return { type: message.type, to, sdp: message.sdp, session };
  if (message.kind === "restart") return { type: "restart", to, session };
  if (!message.candidate) return { type: "end-of-candidates", to, session };
  const out = { type: "candidate", to, candidate: message.candidate, session };
  if (message.sdpMid !== null && message.sdpMid !== undefined) out.sdp_mid = message.sdpMid;
  if (message.sdpMLineIndex !== null && message.sdpMLineIndex !== undefined) {
    out.sdp_mline_index = message.sdpMLineIndex;
  }
  return out;
}

export function fromSignaling(message) {
  const generation = generationOf(message.session);
  switch (message.type) {
    case "offer":
    case "answer":
      return { kind: "description", type: message.type, sdp: message.sdp, generation };
    case "candidate":
      return { kind: "candidate", candidate: message.candidate, sdpMid: message.sdp_mid ?? null,
        sdpMLineIndex: message.sdp_mline_index ?? null, generation };
    case "end-of-candidates":
      return { kind: "candidate", candidate: "", sdpMid: null, sdpMLineIndex: null, generation };
    case "restart":
      return { kind: "restart", generation };
    default:
      return null;
  }
}
