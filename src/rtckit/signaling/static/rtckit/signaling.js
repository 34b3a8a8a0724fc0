// rtckit/signaling.js: RtcKitSignaling, the browser client of rtckit's signaling protocol.
//
// It speaks the protocol of docs/topics/signaling-protocol.rst with the same semantics as the
// Python SignalingClient: versioned hello, join/welcome, server-stamped `from`, per-session
// sequence numbers and acknowledgements, automatic reconnect with exponential backoff and
// jitter, and resume so that nothing sent to or by this peer is lost or duplicated.
// Complete on its own; the peer and room modules build on it. Import it through the entry,
// rtckit.js.

import {
  CLIENT_AGENT, CloseCode, ErrorCode, FINAL_CLOSE_CODES, PROTOCOL_VERSION,
} from "./constants.js";

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
    if (this._ws) this._ws.close(CloseCode.NORMAL, "bye");
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
        this._ws.close(CloseCode.HEARTBEAT_TIMEOUT, "server silent"); // triggers a reconnect
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
