// rtckit/rooms.js: the browser side of rtckit.topology, same behaviour and message shapes.
//
//   joinMesh     a mesh room over a signaling connection: one PeerSession per other peer,
//                the peer with the smaller id is polite; events participantjoined,
//                participantleft, track, trackremoved, message, connectionstate, closed.
//   joinSfu / joinMcu  one PeerSession to the server peer (SFU_PEER_ID / MCU_PEER_ID).
//   joinRoom     picks the client for the room's topology (roomStrategies).
//   connectSignaling  RtcKitSignaling.connect (rtckit/signaling.js); any object with the
//                same members works (peerId, peers, topology, iceServers, connected,
//                send(msg), "message" and "reconnected" events).
//
// Import it through the entry, rtckit.js.

import {
  MCU_PEER_ID, ROOM_CHANNEL_ID, ROOM_CHANNEL_LABEL, SFU_PEER_ID, Topology, VIDEO_LAYER_MESSAGE,
  VIDEO_OFF, VIDEO_QUALITY_MESSAGE,
} from "./constants.js";
import { PeerSession, emit, fromSignaling, politeFor, toSignaling } from "./peer.js";
import { RtcKitSignaling } from "./signaling.js";

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
    this.topology = Topology.MESH;
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
  if (signaling.topology && signaling.topology !== Topology.MESH) {
    throw new Error(`joinMesh in a ${signaling.topology} room`);
  }
  return new MeshRoom(signaling, options).start();
}

// -- SFU room -------------------------------------------------------------------------------
// One PeerSession to the server peer (SFU_PEER_ID); same events as MeshRoom. The publisher of
// each forwarded track is named by its m-line's msid track id, "<participant id>~<serial>".
// Room data messages carry an envelope: "<to>\u0000<data>" up, "<from>\u0000<data>" down.

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

// The simulcast layers an SFU room publishes video with, lowest first: the SFU ranks them in
// this order ("low", "medium", "high"). Pass {simulcast: false} to joinSfu/joinRoom for one
// encoding, or an array of RTCRtpEncodingParameters (each with a rid) for other layers.
export const SIMULCAST_LAYERS = Object.freeze([
  Object.freeze({ rid: "q", scaleResolutionDownBy: 4, maxBitrate: 150_000 }),
  Object.freeze({ rid: "h", scaleResolutionDownBy: 2, maxBitrate: 500_000 }),
  Object.freeze({ rid: "f", scaleResolutionDownBy: 1, maxBitrate: 1_500_000 }),
]);
const VIDEO_QUALITIES = ["low", "medium", "high", VIDEO_OFF];

// The width (device pixels) from which a <video> watched with SfuRoom.watchVideo asks for
// "medium" and for "high"; narrower asks for "low", and one not shown at all for "off".
export const AUTO_QUALITY_WIDTHS = Object.freeze({ medium: 240, high: 480 });

// The quality for a video element `width` device pixels wide (0: not shown), given the one it
// has now (`current`). Hysteresis: the current quality stays while the width is within
// `margin` (a fraction) outside its band, so that a resize around a threshold does not flap.
export function qualityForWidth(width, current = null,
  { widths = AUTO_QUALITY_WIDTHS, margin = 0.15 } = {}) {
  if (!(width > 0)) return VIDEO_OFF;
  const plain = width >= widths.high ? "high" : width >= widths.medium ? "medium" : "low";
  const bands = { low: [0, widths.medium], medium: [widths.medium, widths.high],
    high: [widths.high, Infinity] };
  const band = bands[current];
  if (band && width >= band[0] * (1 - margin) && width < band[1] * (1 + margin)) return current;
  return plain;
}

export class SfuRoom extends EventTarget {
  constructor(signaling, options = {}) {
    super();
    this.signaling = signaling;
    this.options = options;
    this.topology = Topology.SFU;
    this.serverId = SFU_PEER_ID;  // the server participant (McuRoom: MCU_PEER_ID)
    this.localId = signaling.peerId;
    this.participants = new Map();
    this.session = null;
    this.published = [];  // [{track, stream}]
    this.remote = new Map();  // mid -> {participantId, track}
    this.videoQuality = new Map();  // participantId -> "low" | "medium" | "high" | VIDEO_OFF
    // participantId -> {layer, layers, paused}: what the SFU says it forwards of their video
    this.videoLayers = new Map();
    this._watched = new Map();  // participantId -> stop function of watchVideo
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

  // Which simulcast layer of participantId's video the SFU sends this page: "low",
  // "medium" or "high" (the default), or "off" (VIDEO_OFF: none, the video is not shown).
  // Kept, and sent again on a new connection. The SFU's answer is the "videolayer" event.
  setVideoQuality(participantId, quality) {
    if (!VIDEO_QUALITIES.includes(quality)) {
      throw new Error(`video quality must be one of ${VIDEO_QUALITIES.join(", ")}`);
    }
    this.videoQuality.set(participantId, quality);
    this._sendVideoQuality(participantId, quality);
  }

  // Set participantId's video quality from the <video> element that shows it: its CSS width
  // times devicePixelRatio (qualityForWidth, with options {widths, margin}), and "off" while
  // it is not shown (zero size, e.g. display: none or removed from the page; scrolled out of
  // view; the page hidden). Changes settle for `delay` ms before they are sent. Returns a
  // function that stops watching (watching another element for the participant stops too).
  watchVideo(participantId, video, { widths, margin, delay = 300 } = {}) {
    const previous = this._watched.get(participantId);
    if (previous) previous();
    let width = 0;
    let inView = true;
    let current = null;
    let timer = null;
    const apply = () => {
      timer = null;
      const shown = inView && video.isConnected && document.visibilityState !== "hidden";
      const wanted = qualityForWidth(shown ? width : 0, current, { widths, margin });
      if (wanted === current || this.closed) return;
      current = wanted;
      this.setVideoQuality(participantId, wanted);
    };
    const later = () => { if (timer === null) timer = setTimeout(apply, delay); };
    const resize = new ResizeObserver((entries) => {
      for (const entry of entries) width = entry.contentRect.width * (window.devicePixelRatio || 1);
      later();
    });
    const view = new IntersectionObserver((entries) => {
      for (const entry of entries) inView = entry.isIntersecting;
      later();
    });
    resize.observe(video);
    view.observe(video);
    document.addEventListener("visibilitychange", later);
    const stop = () => {
      resize.disconnect();
      view.disconnect();
      document.removeEventListener("visibilitychange", later);
      if (timer !== null) clearTimeout(timer);
      if (this._watched.get(participantId) === stop) this._watched.delete(participantId);
    };
    this._watched.set(participantId, stop);
    return stop;
  }

  // A message of the SFU itself on the room channel: what it forwards this page (true if it
  // was one, handled here).
  _onServerData(data) {
    if (this.serverId !== SFU_PEER_ID || typeof data !== "string") return false;
    let message;
    try {
      message = JSON.parse(data);
    } catch (_) {
      return false;
    }
    if (!message || message.type !== VIDEO_LAYER_MESSAGE || typeof message.participant !== "string") {
      return false;
    }
    const detail = {
      participantId: message.participant,
      layer: typeof message.layer === "string" ? message.layer : null,
      layers: Array.isArray(message.layers) ? message.layers.filter((l) => typeof l === "string") : [],
      paused: message.paused === true,
    };
    this.videoLayers.set(detail.participantId, detail);
    emit(this, "videolayer", detail);
    return true;
  }

  _sendVideoQuality(participant, quality) {
    if (!this.session || this.session.closed || this.serverId !== SFU_PEER_ID) return;
    const message = JSON.stringify({ type: VIDEO_QUALITY_MESSAGE, participant, quality });
    this.session.send(ROOM_CHANNEL_LABEL, sealEnvelope(this.serverId, message));
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
      ownTransceivers: true,
      simulcast: this.serverId !== SFU_PEER_ID || this.options.simulcast === false ? null
        : (this.options.simulcast || SIMULCAST_LAYERS),
    });
    this.session = session;
    for (const [participant, quality] of this.videoQuality) this._sendVideoQuality(participant, quality);
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
      if (!opened) return;
      if (opened[0] === this.serverId && this._onServerData(opened[1])) return;
      this._onData(opened[0], opened[1]);
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
        this.videoLayers.delete(message.peer_id);
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
  if (signaling.topology !== Topology.SFU) throw new Error(`joinSfu in a ${signaling.topology} room`);
  return new SfuRoom(signaling, options).start();
}

// -- MCU room -------------------------------------------------------------------------------
// The same one-connection client as the SFU room, to the server peer MCU_PEER_ID. The MCU sends
// ONE composed video and ONE mixed (mix-minus) audio track: both are published by MCU_PEER_ID.
// The server's own data messages carry the layout: {"mcu-layout": [peer ids in grid order]},
// kept in room.layout and announced with a "layout" event ({ layout }).

export class McuRoom extends SfuRoom {
  constructor(signaling, options = {}) {
    super(signaling, options);
    this.topology = Topology.MCU;
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
  if (signaling.topology !== Topology.MCU) throw new Error(`joinMcu in a ${signaling.topology} room`);
  return new McuRoom(signaling, options).start();
}

// joinRoom: the same entry point as Python's join_room; SFU/MCU clients register here.
export const roomStrategies = {
  [Topology.MESH]: joinMesh, [Topology.SFU]: joinSfu, [Topology.MCU]: joinMcu,
};

export function joinRoom(signaling, options = {}) {
  const strategy = roomStrategies[signaling.topology || Topology.MESH];
  if (!strategy) throw new Error(`no client strategy for ${signaling.topology} rooms`);
  return strategy(signaling, options);
}
