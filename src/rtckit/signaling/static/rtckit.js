// rtckit.js: rtckit's browser client, one framework-free ES module.
//
// Served by rtckit's signaling server at `<path>/rtckit.js` (e.g. /ws/rtckit.js):
//
//   import { RtcKitSignaling } from "/ws/rtckit.js";
//   const sig = await RtcKitSignaling.connect("ws://127.0.0.1:8765/ws", { room: "lobby" });
//   sig.addEventListener("offer", (event) => console.log(event.detail.from, event.detail.sdp));
//   sig.sendApp(null, { hello: "everyone" });
//
// It speaks the protocol of docs/topics/signaling-protocol.rst with the same semantics as the
// Python SignalingClient: versioned hello, join/welcome, server-stamped `from`, per-session
// sequence numbers and acknowledgements, automatic reconnect with exponential backoff and
// jitter, and resume so that nothing sent to or by this peer is lost or duplicated.
//
// Layout: the SIGNALING part below is complete on its own. Peer-connection helpers (mesh,
// SFU/MCU clients) build on RtcKitSignaling in the PEERS part at the end of this file.

// ---------------------------------------------------------------------------------------
// SIGNALING
// ---------------------------------------------------------------------------------------

export const PROTOCOL_VERSION = 1;
export const CLIENT_AGENT = "rtckit-js/1";

/** Error codes of the protocol (the `code` of an `error` message). */
export const ErrorCode = Object.freeze({
  BAD_JSON: "bad_json",
  BAD_ENCODING: "bad_encoding",
  TOO_LARGE: "too_large",
  TOO_DEEP: "too_deep",
  BAD_MESSAGE: "bad_message",
  UNKNOWN_TYPE: "unknown_type",
  UNEXPECTED: "unexpected",
  UNSUPPORTED_VERSION: "unsupported_version",
  NOT_JOINED: "not_joined",
  ALREADY_JOINED: "already_joined",
  UNKNOWN_ROOM: "unknown_room",
  ROOM_FULL: "room_full",
  UNKNOWN_PEER: "unknown_peer",
  PEER_ID_TAKEN: "peer_id_taken",
  FORBIDDEN: "forbidden",
  UNDELIVERABLE: "undeliverable",
  BACKLOG_FULL: "backlog_full",
  BAD_ACK: "bad_ack",
  RATE_LIMITED: "rate_limited",
  RESUME_FAILED: "resume_failed",
  AUTH_REQUIRED: "auth_required",
  AUTH_INVALID: "auth_invalid",
  AUTH_EXPIRED: "auth_expired",
  AUTH_NOT_YET_VALID: "auth_not_yet_valid",
  AUTH_WRONG_ROOM: "auth_wrong_room",
  INTERNAL: "internal",
});

/**
 * WebSocket close codes after which reconnecting is pointless. Every other code reconnects
 * and resumes, including 4004 (slow consumer: the server held too much this client had not
 * read or acknowledged; the session waits for the resume).
 */
const FINAL_CLOSE_CODES = new Set([1008, 4002, 4003]);

/** Message types delivered to the application as events. */
const EVENT_TYPES = new Set([
  "peer-joined", "peer-left", "offer", "answer", "candidate", "end-of-candidates",
  "restart", "app", "error", "bye",
]);

/** A refused join, a protocol violation, or a closed connection. `code` as on the wire. */
export class SignalingError extends Error {
  constructor(code, message) {
    super(`${code}: ${message}`);
    this.name = "SignalingError";
    this.code = code;
  }
}

/**
 * A peer in one room of an rtckit signaling server.
 *
 * Events (all `CustomEvent`, `detail` is the wire message as a plain object, with `from`
 * stamped by the server): `peer-joined`, `peer-left`, `offer`, `answer`, `candidate`,
 * `end-of-candidates`, `restart`, `app`, `error`, `bye`, plus `disconnected`
 * (detail {code, reason}), `reconnected` (detail {resumed, welcome}) and `closed`
 * (detail {error}), and `message` for every one of the protocol events above.
 */
export class RtcKitSignaling extends EventTarget {
  /**
   * @param {string} url ws:// or wss:// URL of the signaling endpoint.
   * @param {object} options {room, token, metadata, peerId, reconnect: {initialDelay,
   *   maxDelay, factor, jitter, maxAttempts, connectTimeout}, ackEvery, ackDelay}
   */
  constructor(url, options = {}) {
    super();
    if (!options.room) throw new TypeError("options.room is required");
    this.url = url;
    this.room = options.room;
    this.token = options.token ?? null;
    this.metadata = options.metadata ?? null;
    this.requestedPeerId = options.peerId ?? null;
    this.reconnectPolicy = {
      enabled: true, initialDelay: 50, maxDelay: 5000, factor: 2, jitter: 0.5,
      maxAttempts: null, connectTimeout: 10000, ...(options.reconnect || {}),
    };
    this.ackEvery = options.ackEvery ?? 16;
    this.ackDelay = options.ackDelay ?? 1000;
    /** @type {Map<string, object>} the other peers, by id */
    this.peers = new Map();
    this.welcome = null;
    this.connected = false;
    this.closed = false;
    this._ws = null;
    this._outSeq = 0;
    this._unacked = [];
    this._inSeq = 0;
    this._ackedIn = 0;
    this._closing = false;
    this._lastRecv = 0;
    this._timer = null;
    this._waiters = [];
    this._queue = [];
  }

  /** Create a client, connect and join; resolves once welcomed. */
  static async connect(url, options) {
    const client = new RtcKitSignaling(url, options);
    await client.connect();
    return client;
  }

  get peerId() { return this.welcome ? this.welcome.peer_id : null; }
  get identity() { return this.welcome ? this.welcome.identity ?? null : null; }
  get topology() { return this.welcome ? this.welcome.topology : null; }
  /** ICE servers given by the server, ready for `new RTCPeerConnection({iceServers})`. */
  get iceServers() { return this.welcome ? this.welcome.ice_servers ?? [] : []; }

  /** Connect and join the room. Rejects with SignalingError if the server refuses. */
  async connect() {
    const welcome = await this._open("join");
    this._setWelcome(welcome);
    this.connected = true;
    this._startTimer();
    return welcome;
  }

  // --- sending ---------------------------------------------------------------------------

  /** Send a relayed message object ({type, to, ...}); returns its seq. */
  send(message) {
    if (this._closing || this.closed) throw new SignalingError("closed", "client is closed");
    const wire = { ...message, seq: ++this._outSeq };
    delete wire.from;
    for (const key of Object.keys(wire)) if (wire[key] === undefined) delete wire[key];
    this._unacked.push(wire);
    if (this.connected) this._write(wire);
    return wire.seq;
  }

  sendOffer(to, sdp, { session } = {}) {
    return this.send({ type: "offer", to, sdp: sdpOf(sdp), session });
  }

  sendAnswer(to, sdp, { session } = {}) {
    return this.send({ type: "answer", to, sdp: sdpOf(sdp), session });
  }

  /** `candidate` is an RTCIceCandidate (or its JSON), or a "candidate:..." string. */
  sendCandidate(to, candidate, { session, sdpMid, sdpMLineIndex } = {}) {
    if (candidate && typeof candidate === "object") {
      sdpMid = sdpMid ?? candidate.sdpMid ?? undefined;
      sdpMLineIndex = sdpMLineIndex ?? candidate.sdpMLineIndex ?? undefined;
      candidate = candidate.candidate;
    }
    if (!candidate) return this.sendEndOfCandidates(to, { session });
    return this.send({
      type: "candidate", to, candidate, sdp_mid: sdpMid ?? undefined,
      sdp_mline_index: sdpMLineIndex ?? undefined, session,
    });
  }

  sendEndOfCandidates(to, { session } = {}) {
    return this.send({ type: "end-of-candidates", to, session });
  }

  sendRestart(to, { session } = {}) {
    return this.send({ type: "restart", to, session });
  }

  /** Application JSON to peer `to`, or to every other peer when `to` is null. */
  sendApp(to, payload) {
    return this.send({ type: "app", to: to ?? undefined, payload });
  }

  // --- receiving as a stream ----------------------------------------------------------------

  /** Resolve with the next protocol event's detail (optionally of one `type`). */
  next(type = null) {
    const index = this._queue.findIndex((m) => type === null || m.type === type);
    if (index >= 0) return Promise.resolve(this._queue.splice(index, 1)[0]);
    if (this.closed) return Promise.reject(new SignalingError("closed", "client is closed"));
    return new Promise((resolve, reject) => this._waiters.push({ type, resolve, reject }));
  }

  async *[Symbol.asyncIterator]() {
    while (!this.closed || this._queue.length) yield await this.next();
  }

  /** Leave the room (bye) and close. Safe to call twice. */
  close() {
    if (this._closing) return;
    this._closing = true;
    if (this.connected && this._ws) {
      this._sendAck();
      this._write({ type: "bye", reason: "closed" });
    }
    if (this._ws) this._ws.close(1000, "bye");
    this._finish(null);
  }

  // --- internals -------------------------------------------------------------------------

  _write(message) {
    const ws = this._ws;
    if (ws && ws.readyState === WebSocket.OPEN) ws.send(JSON.stringify(message));
  }

  _sendAck() {
    if (this._inSeq > this._ackedIn) {
      this._ackedIn = this._inSeq;
      this._write({ type: "ack", ack: this._inSeq });
    }
  }

  _setWelcome(welcome) {
    this.welcome = welcome;
    this.peers = new Map(welcome.peers.map((p) => [p.id, p]));
  }

  _emit(name, detail) {
    this.dispatchEvent(new CustomEvent(name, { detail }));
  }

  _deliver(message) {
    this._emit(message.type, message);
    this._emit("message", message);
    const index = this._waiters.findIndex((w) => w.type === null || w.type === message.type);
    if (index >= 0) this._waiters.splice(index, 1)[0].resolve(message);
    else this._queue.push(message);
  }

  /**
   * Open a WebSocket and run the handshake: hello then join ("join") or resume ("resume").
   * Resolves with the welcome (join) or {resumed} / {welcome} (resume).
   */
  _open(mode) {
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new WebSocket(this.url);
      } catch (error) {
        reject(new SignalingError("connect_failed", String(error)));
        return;
      }
      this._ws = ws;
      let step = "hello";
      let settled = false;
      const timeout = setTimeout(() => fail("timeout", "handshake timed out"),
        this.reconnectPolicy.connectTimeout);
      const fail = (code, text) => {
        if (settled) return;
        settled = true;
        clearTimeout(timeout);
        try { ws.close(); } catch (_) { /* already closed */ }
        reject(new SignalingError(code, text));
      };
      const done = (value) => {
        settled = true;
        clearTimeout(timeout);
        ws.onmessage = (event) => this._onFrame(event.data);
        ws.onclose = (event) => this._onClose(ws, event.code, event.reason);
        resolve(value);
      };
      const join = () => ({
        type: "join", room: this.room, token: this.token ?? undefined,
        metadata: this.metadata ?? undefined, peer_id: this.requestedPeerId ?? undefined,
      });
      ws.onopen = () => {
        ws.send(JSON.stringify({ type: "hello", version: PROTOCOL_VERSION, agent: CLIENT_AGENT }));
        if (mode === "join") {
          ws.send(JSON.stringify(join()));
        } else {
          ws.send(JSON.stringify({
            type: "resume", resume_token: this.welcome.resume_token, ack: this._inSeq,
          }));
        }
      };
      ws.onerror = () => fail("connect_failed", `cannot connect to ${this.url}`);
      ws.onclose = (event) => fail("closed", `closed during handshake (${event.code})`);
      ws.onmessage = (event) => {
        let message;
        try {
          message = JSON.parse(event.data);
        } catch (_) {
          fail(ErrorCode.BAD_JSON, "server sent invalid JSON");
          return;
        }
        this._lastRecv = Date.now();
        if (step === "hello") {
          if (message.type === "hello") { step = mode; return; }
          if (message.type === "error") fail(message.code, message.message);
          else fail(ErrorCode.UNEXPECTED, `expected hello, got ${message.type}`);
          return;
        }
        if (message.type === "welcome") { done(mode === "join" ? message : { welcome: message }); return; }
        if (message.type === "resumed") { done({ resumed: message }); return; }
        if (message.type === "error" && message.seq == null) {
          if (mode === "resume" && message.code === ErrorCode.RESUME_FAILED) {
            mode = "rejoin";
            ws.send(JSON.stringify(join()));
            return;
          }
          fail(message.code, message.message);
          return;
        }
        fail(ErrorCode.UNEXPECTED, `unexpected ${message.type} during handshake`);
      };
    });
  }

  _onFrame(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch (_) {
      return; // the server never sends invalid JSON; ignore rather than die
    }
    this._lastRecv = Date.now();
    switch (message.type) {
      case "ping":
        this._write({ type: "pong", nonce: message.nonce ?? undefined });
        return;
      case "ack":
        while (this._unacked.length && this._unacked[0].seq <= message.ack) this._unacked.shift();
        return;
      case "pong": case "hello": case "welcome": case "resumed":
        return;
      default:
        break;
    }
    if (!EVENT_TYPES.has(message.type)) return;
    if (message.seq != null) {
      if (message.seq <= this._inSeq) return; // a duplicate resent after a reconnect
      this._inSeq = message.seq;
    }
    if (message.type === "peer-joined") this.peers.set(message.peer.id, message.peer);
    else if (message.type === "peer-left") this.peers.delete(message.peer_id);
    else if (message.type === "bye") this._closing = true; // removed by the server
    this._deliver(message);
    if (this._inSeq - this._ackedIn >= this.ackEvery) this._sendAck();
  }

  _onClose(ws, code, reason) {
    if (ws !== this._ws) return;
    this.connected = false;
    if (this._closing) { this._finish(null); return; }
    if (!this.reconnectPolicy.enabled || FINAL_CLOSE_CODES.has(code)) {
      this._finish(new SignalingError("closed", `connection closed (${code} ${reason})`));
      return;
    }
    this._emit("disconnected", { code, reason });
    this._reconnect(0);
  }

  _delay(attempt) {
    const p = this.reconnectPolicy;
    const base = Math.min(p.maxDelay, p.initialDelay * p.factor ** attempt);
    return base * (1 - p.jitter * Math.random());
  }

  _reconnect(attempt) {
    const p = this.reconnectPolicy;
    if (this._closing) return;
    if (p.maxAttempts != null && attempt >= p.maxAttempts) {
      this._finish(new SignalingError("closed", `gave up reconnecting after ${attempt} attempts`));
      return;
    }
    setTimeout(async () => {
      if (this._closing) return;
      let result;
      try {
        result = await this._open("resume");
      } catch (error) {
        // The server checks the room token again on resume: once it has expired, trying
        // again cannot succeed (joining needs a fresh token).
        if (String(error.code).startsWith("auth_")) {
          this._finish(error);
          return;
        }
        this._reconnect(attempt + 1);
        return;
      }
      if (result.resumed) {
        const ack = result.resumed.ack;
        while (this._unacked.length && this._unacked[0].seq <= ack) this._unacked.shift();
        this._ackedIn = this._inSeq;
        for (const message of this._unacked) this._write(message);
        this.connected = true;
        this._emit("reconnected", { resumed: true, welcome: null });
      } else {
        for (const message of this._unacked) {
          this._deliver({
            type: "error", code: ErrorCode.UNDELIVERABLE, ref: message.seq,
            message: "the session expired before the server acknowledged this message",
          });
        }
        this._unacked = [];
        this._inSeq = 0;
        this._ackedIn = 0;
        this._setWelcome(result.welcome);
        this.connected = true;
        this._emit("reconnected", { resumed: false, welcome: result.welcome });
      }
    }, this._delay(attempt));
  }

  _startTimer() {
    this._lastRecv = Date.now();
    this._timer = setInterval(() => {
      if (!this.connected) return;
      this._sendAck();
      const interval = (this.welcome.heartbeat_interval || 2) * 1000;
      const idle = Date.now() - this._lastRecv;
      if (idle > 3 * interval + 1000) {
        this._ws.close(4001, "server silent"); // triggers a reconnect
      } else if (idle > 2 * interval) { // the server pings first; this is a fallback
        this._write({ type: "ping" });
      }
    }, this.ackDelay);
  }

  _finish(error) {
    if (this.closed) return;
    this.closed = true;
    this.connected = false;
    clearInterval(this._timer);
    for (const waiter of this._waiters.splice(0)) {
      waiter.reject(error || new SignalingError("closed", "client is closed"));
    }
    this._emit("closed", { error });
  }
}

function sdpOf(description) {
  return typeof description === "string" ? description : description.sdp;
}

// ---------------------------------------------------------------------------------------
// PEERS (mesh / SFU / MCU clients build on RtcKitSignaling here)
// ---------------------------------------------------------------------------------------

// ---------------------------------------------------------------------------------------
// PEERS
// ---------------------------------------------------------------------------------------
// --- peer sessions and mesh rooms (peer helper) -------------------------------------------
//
// The browser side of rtckit.peer and rtckit.topology.mesh, same behaviour and message shapes:
//
//   PeerSession  one RTCPeerConnection at a time, W3C perfect negotiation (polite/impolite),
//                trickle ICE, heartbeat channel (negotiated id 1000), connection replacement
//                (rtckit's ICE restart, compatible with aiortc peers), typed events.
//   joinMesh     a mesh room over a signaling connection: one PeerSession per other peer,
//                the peer with the smaller id is polite; events participantjoined,
//                participantleft, track, trackremoved, message, connectionstate, closed.
//   connectSignaling  RtcKitSignaling.connect (the SIGNALING part above); any object with
//                the same members works (peerId, peers, topology, iceServers, connected,
//                send(msg), "message" and "reconnected" events).
//
// Peer messages ({kind: "description" | "candidate" | "restart", ..., generation}) map to the
// protocol's offer/answer/candidate/end-of-candidates/restart with session "g<generation>".

export const HEARTBEAT_LABEL = "rtckit-heartbeat";
export const HEARTBEAT_CHANNEL_ID = 1000;
export const ROOM_CHANNEL_LABEL = "rtckit-room";
export const ROOM_CHANNEL_ID = 1001;
const HEARTBEAT = "\u0000rtckit-hb";

const emit = (target, type, detail) => target.dispatchEvent(new CustomEvent(type, { detail }));

export function politeFor(localId, remoteId) {
  if (localId === remoteId) throw new Error(`both sides have the id ${localId}`);
  return localId < remoteId;
}

export class PeerSession extends EventTarget {
  constructor(signaller, {
    polite, iceServers = [], iceTransportPolicy = "all", heartbeatInterval = 1000,
    disconnectedAfter = 3000, restartAfter = 4000, deadPeerTimeout = 30000, autoRestart = true,
    heartbeatOpenTimeout = 10000, name = "",
  } = {}) {
    super();
    if (typeof polite !== "boolean") throw new Error("polite must be true or false");
    this.signaller = signaller;
    this.polite = polite;
    this.config = { iceServers, iceTransportPolicy, heartbeatInterval, disconnectedAfter,
      restartAfter, deadPeerTimeout, autoRestart, heartbeatOpenTimeout };
    this.name = name;
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
    for (const { track, stream } of this.localTracks) pc.addTrack(track, stream);
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
    if (this.pc) this._run(() => { if (!this.pc.getSenders().some((s) => s.track === track)) this.pc.addTrack(track, stream); });
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
      try { this.heartbeat.send(HEARTBEAT); } catch (err) { /* closing */ }
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

// -- signaling connection -----------------------------------------------------------------

/** Connect and join with the SIGNALING part's client (what joinRoom/joinMesh expect). */
export function connectSignaling(url, options) {
  return RtcKitSignaling.connect(url, options);
}

// -- mesh room ------------------------------------------------------------------------------

export class MeshRoom extends EventTarget {
  constructor(signaling, options = {}) {
    super();
    this.signaling = signaling;
    this.options = options;
    this.topology = "mesh";
    this.localId = signaling.peerId;
    this.participants = new Map();
    this.sessions = new Map();
    this.published = [];  // [{track, stream}]
    this.closed = false;
    this._onMessage = ({ detail }) => this._onSignaling(detail);
    this._onReconnected = ({ detail }) => { if (detail && !detail.resumed) this._rejoined(); };
  }

  // Our signaling session expired and the client joined again under a new id:
  // reconnect to everyone, as the Python MeshRoom does.
  _rejoined() {
    for (const peerId of [...this.sessions.keys()]) this._disconnect(peerId);
    for (const peerId of [...this.participants.keys()]) {
      if (!this.signaling.peers.has(peerId)) {
        this.participants.delete(peerId);
        emit(this, "participantleft", { participantId: peerId, reason: "rejoined" });
      }
    }
    this.localId = this.signaling.peerId;
    for (const [peerId, info] of this.signaling.peers) {
      if (!this.participants.has(peerId)) {
        emit(this, "participantjoined", { participantId: peerId, metadata: info.metadata ?? null });
      }
      this.participants.set(peerId, info.metadata ?? null);
      this._connect(peerId);
    }
  }

  start() {
    for (const [peerId, info] of this.signaling.peers) {
      this.participants.set(peerId, info.metadata ?? null);
      emit(this, "participantjoined", { participantId: peerId, metadata: info.metadata ?? null });
      this._connect(peerId);
    }
    this.signaling.addEventListener("message", this._onMessage);
    this.signaling.addEventListener("reconnected", this._onReconnected);
    return this;
  }

  publish(track, stream) {
    stream = stream || new MediaStream([track]);
    this.published.push({ track, stream });
    for (const session of this.sessions.values()) session.addTrack(track, stream);
  }

  unpublish(track) {
    this.published = this.published.filter((p) => p.track !== track);
    for (const session of this.sessions.values()) session.removeTrack(track);
  }

  send(data, { to } = {}) {
    const targets = to ? [this.sessions.get(to)] : [...this.sessions.values()];
    for (const session of targets) if (session && !session.closed) session.send(ROOM_CHANNEL_LABEL, data);
  }

  _connect(peerId) {
    if (this.sessions.has(peerId) || peerId === this.localId) return;
    const signaling = this.signaling;
    const signaller = {
      get connected() { return signaling.connected; },
      send: (message) => signaling.send(toSignaling(peerId, message)),
    };
    const iceServers = this.options.iceServers ?? signaling.iceServers ?? [];
    const session = new PeerSession(signaller, {
      ...this.options, iceServers, polite: politeFor(this.localId, peerId),
      name: `${this.localId}->${peerId}`,
    });
    this.sessions.set(peerId, session);
    for (const { track, stream } of this.published) session.addTrack(track, stream);
    session.createDataChannel(ROOM_CHANNEL_LABEL, { negotiatedId: ROOM_CHANNEL_ID });
    session.addEventListener("track", ({ detail }) =>
      emit(this, "track", { participantId: peerId, track: detail.track, kind: detail.kind }));
    session.addEventListener("trackremoved", ({ detail }) =>
      emit(this, "trackremoved", { participantId: peerId, track: detail.track, kind: detail.kind }));
    session.addEventListener("message", ({ detail }) => {
      if (detail.label === ROOM_CHANNEL_LABEL) {
        emit(this, "message", { participantId: peerId, data: detail.data });
      }
    });
    session.addEventListener("statechange", ({ detail }) =>
      emit(this, "connectionstate", { participantId: peerId, state: detail.state }));
    session.addEventListener("closed", ({ detail }) => {
      if (detail.reason === "peer-timeout" && this.sessions.get(peerId) === session) {
        this.sessions.delete(peerId);
      }
    });
    session.start();
  }

  _disconnect(peerId) {
    const session = this.sessions.get(peerId);
    if (!session) return;
    this.sessions.delete(peerId);
    session.close();
  }

  _onSignaling(message) {
    if (this.closed) return;
    if (message.type === "peer-joined") {
      const peerId = message.peer.id;
      if (peerId === this.localId) return;
      this.participants.set(peerId, message.peer.metadata ?? null);
      emit(this, "participantjoined", { participantId: peerId, metadata: message.peer.metadata ?? null });
      this._connect(peerId);
    } else if (message.type === "peer-left") {
      if (this.participants.delete(message.peer_id)) {
        this._disconnect(message.peer_id);
        emit(this, "participantleft", { participantId: message.peer_id, reason: message.reason ?? null });
      }
    } else {
      const peerMessage = fromSignaling(message);
      const sender = message.from;
      if (!peerMessage || !sender) return;
      if (!this.sessions.has(sender)) {
        if (!this.signaling.peers.has(sender)) return;
        this.participants.set(sender, this.signaling.peers.get(sender).metadata ?? null);
        this._connect(sender);
      }
      this.sessions.get(sender).receive(peerMessage);
    }
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.signaling.removeEventListener("message", this._onMessage);
    this.signaling.removeEventListener("reconnected", this._onReconnected);
    for (const peerId of [...this.sessions.keys()]) this._disconnect(peerId);
    emit(this, "closed", { reason: "left" });
  }
}

export function joinMesh(signaling, options = {}) {
  if (signaling.topology && signaling.topology !== "mesh") {
    throw new Error(`joinMesh in a ${signaling.topology} room`);
  }
  return new MeshRoom(signaling, options).start();
}

// -- SFU room -------------------------------------------------------------------------------
// One PeerSession to the server peer (SFU_PEER_ID); same events as MeshRoom. The publisher of
// each forwarded track is named by its m-line's msid track id, "<participant id>~<serial>".
// Room data messages carry an envelope: "<to>\u0000<data>" up, "<from>\u0000<data>" down.

export const SFU_PEER_ID = "rtckit-sfu";

export function participantOfMsid(msid) {
  if (!msid) return null;
  const parts = msid.trim().split(/\s+/);
  const trackId = parts[parts.length - 1];
  const at = trackId.lastIndexOf("~");
  if (at <= 0 || !/^\d+$/.test(trackId.slice(at + 1))) return null;
  return trackId.slice(0, at);
}

function msidOfMid(sdp, mid) {
  for (const section of sdp.split(/\r?\nm=/).slice(1)) {
    const lines = section.split(/\r?\n/);
    if (!lines.includes(`a=mid:${mid}`)) continue;
    const line = lines.find((l) => l.startsWith("a=msid:"));
    return line ? line.slice("a=msid:".length) : null;
  }
  return null;
}

export function sealEnvelope(peer, data) {
  if (typeof data === "string") return `${peer}\u0000${data}`;
  const head = new TextEncoder().encode(`${peer}\u0000`);
  const body = data instanceof ArrayBuffer ? new Uint8Array(data) : new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  const out = new Uint8Array(head.length + body.length);
  out.set(head);
  out.set(body, head.length);
  return out;
}

export function openEnvelope(message) {
  if (typeof message === "string") {
    const at = message.indexOf("\u0000");
    return at < 0 ? null : [message.slice(0, at), message.slice(at + 1)];
  }
  const bytes = new Uint8Array(message);
  const at = bytes.indexOf(0);
  if (at < 0) return null;
  return [new TextDecoder().decode(bytes.slice(0, at)), bytes.slice(at + 1).buffer];
}

export class SfuRoom extends EventTarget {
  constructor(signaling, options = {}) {
    super();
    this.signaling = signaling;
    this.options = options;
    this.topology = "sfu";
    this.serverId = SFU_PEER_ID;  // the server participant (McuRoom: MCU_PEER_ID)
    this.localId = signaling.peerId;
    this.participants = new Map();
    this.session = null;
    this.published = [];  // [{track, stream}]
    this.remote = new Map();  // mid -> {participantId, track}
    this.closed = false;
    this._onMessage = ({ detail }) => this._onSignaling(detail);
    this._onReconnected = ({ detail }) => { if (detail && !detail.resumed) this._rejoined(); };
  }

  get sessions() {  // the one session, under the server's id (like MeshRoom.sessions)
    return new Map(this.session ? [[this.serverId, this.session]] : []);
  }

  start() {
    for (const [peerId, info] of this.signaling.peers) {
      if (peerId === this.serverId) continue;
      this.participants.set(peerId, info.metadata ?? null);
      emit(this, "participantjoined", { participantId: peerId, metadata: info.metadata ?? null });
    }
    this.signaling.addEventListener("message", this._onMessage);
    this.signaling.addEventListener("reconnected", this._onReconnected);
    if (this.signaling.peers.has(this.serverId)) this._connect();
    return this;
  }

  publish(track, stream) {
    stream = stream || new MediaStream([track]);
    this.published.push({ track, stream });
    if (this.session) this.session.addTrack(track, stream);
  }

  unpublish(track) {
    this.published = this.published.filter((p) => p.track !== track);
    if (this.session) this.session.removeTrack(track);
  }

  send(data, { to } = {}) {
    if (this.session && !this.session.closed) {
      this.session.send(ROOM_CHANNEL_LABEL, sealEnvelope(to || "", data));
    }
  }

  // Who published a remote track: the SFU names the publisher in the m-line's msid.
  _publisherOf(session, detail) {
    const remote = session.pc && session.pc.remoteDescription;
    return participantOfMsid(remote ? msidOfMid(remote.sdp, detail.mid) : null);
  }

  _onData(participantId, data) {
    emit(this, "message", { participantId, data });
  }

  _endTrack(mid) {
    const entry = this.remote.get(mid);
    if (!entry) return;
    this.remote.delete(mid);
    emit(this, "trackremoved", { participantId: entry.participantId, track: entry.track,
      kind: entry.track.kind });
  }

  _connect() {
    if (this.session) return;
    const signaling = this.signaling;
    const signaller = {
      get connected() { return signaling.connected; },
      send: (message) => signaling.send(toSignaling(this.serverId, message)),
    };
    const iceServers = this.options.iceServers ?? signaling.iceServers ?? [];
    const session = new PeerSession(signaller, {
      ...this.options, iceServers, polite: true, name: `${this.localId}->${this.serverId}`,
    });
    this.session = session;
    for (const { track, stream } of this.published) session.addTrack(track, stream);
    session.createDataChannel(ROOM_CHANNEL_LABEL, { negotiatedId: ROOM_CHANNEL_ID });
    session.addEventListener("track", ({ detail }) => {
      const participantId = this._publisherOf(session, detail);
      if (!participantId) return;
      this._endTrack(detail.mid);
      this.remote.set(detail.mid, { participantId, track: detail.track });
      emit(this, "track", { participantId, track: detail.track, kind: detail.kind });
    });
    session.addEventListener("trackremoved", ({ detail }) => this._endTrack(detail.mid));
    session.addEventListener("message", ({ detail }) => {
      if (detail.label !== ROOM_CHANNEL_LABEL) return;
      const opened = openEnvelope(detail.data);
      if (opened) this._onData(opened[0], opened[1]);
    });
    session.addEventListener("statechange", ({ detail }) =>
      emit(this, "connectionstate", { participantId: this.serverId, state: detail.state }));
    session.start();
  }

  _disconnect() {
    for (const mid of [...this.remote.keys()]) this._endTrack(mid);
    const session = this.session;
    this.session = null;
    if (session) session.close();
  }

  _rejoined() {
    this._disconnect();
    for (const peerId of [...this.participants.keys()]) {
      if (!this.signaling.peers.has(peerId)) {
        this.participants.delete(peerId);
        emit(this, "participantleft", { participantId: peerId, reason: "rejoined" });
      }
    }
    this.localId = this.signaling.peerId;
    for (const [peerId, info] of this.signaling.peers) {
      if (peerId === this.serverId) continue;
      if (!this.participants.has(peerId)) {
        emit(this, "participantjoined", { participantId: peerId, metadata: info.metadata ?? null });
      }
      this.participants.set(peerId, info.metadata ?? null);
    }
    if (this.signaling.peers.has(this.serverId)) this._connect();
  }

  _onSignaling(message) {
    if (this.closed) return;
    if (message.type === "peer-joined") {
      const peerId = message.peer.id;
      if (peerId === this.serverId) {
        this._connect();
      } else if (peerId !== this.localId) {
        this.participants.set(peerId, message.peer.metadata ?? null);
        emit(this, "participantjoined", { participantId: peerId, metadata: message.peer.metadata ?? null });
      }
    } else if (message.type === "peer-left") {
      if (message.peer_id === this.serverId) {
        this._disconnect();
      } else if (this.participants.delete(message.peer_id)) {
        for (const [mid, entry] of [...this.remote]) {
          if (entry.participantId === message.peer_id) this._endTrack(mid);
        }
        emit(this, "participantleft", { participantId: message.peer_id, reason: message.reason ?? null });
      }
    } else if (message.from === this.serverId) {
      const peerMessage = fromSignaling(message);
      if (peerMessage && this.session) this.session.receive(peerMessage);
    }
  }

  close() {
    if (this.closed) return;
    this.closed = true;
    this.signaling.removeEventListener("message", this._onMessage);
    this.signaling.removeEventListener("reconnected", this._onReconnected);
    this._disconnect();
    emit(this, "closed", { reason: "left" });
  }
}

export function joinSfu(signaling, options = {}) {
  if (signaling.topology !== "sfu") throw new Error(`joinSfu in a ${signaling.topology} room`);
  return new SfuRoom(signaling, options).start();
}

// -- MCU room -------------------------------------------------------------------------------
// The same one-connection client as the SFU room, to the server peer MCU_PEER_ID. The MCU sends
// ONE composed video and ONE mixed (mix-minus) audio track: both are published by MCU_PEER_ID.
// The server's own data messages carry the layout: {"mcu-layout": [peer ids in grid order]},
// kept in room.layout and announced with a "layout" event ({ layout }).

export const MCU_PEER_ID = "rtckit-mcu";

export class McuRoom extends SfuRoom {
  constructor(signaling, options = {}) {
    super(signaling, options);
    this.topology = "mcu";
    this.serverId = MCU_PEER_ID;
    this.layout = [];
  }

  _publisherOf() {
    return this.serverId;
  }

  _onData(participantId, data) {
    if (participantId !== this.serverId) {
      super._onData(participantId, data);
      return;
    }
    try {
      const layout = JSON.parse(data)["mcu-layout"];
      if (Array.isArray(layout)) {
        this.layout = layout.map(String);
        emit(this, "layout", { layout: this.layout });
      }
    } catch (error) {
      // not a layout message: ignore it
    }
  }
}

export function joinMcu(signaling, options = {}) {
  if (signaling.topology !== "mcu") throw new Error(`joinMcu in a ${signaling.topology} room`);
  return new McuRoom(signaling, options).start();
}

// joinRoom: the same entry point as Python's join_room; SFU/MCU clients register here.
export const roomStrategies = { mesh: joinMesh, sfu: joinSfu, mcu: joinMcu };

export function joinRoom(signaling, options = {}) {
  const strategy = roomStrategies[signaling.topology || "mesh"];
  if (!strategy) throw new Error(`no client strategy for ${signaling.topology} rooms`);
  return strategy(signaling, options);
}
