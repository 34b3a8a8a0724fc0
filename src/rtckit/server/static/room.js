// room.js: the rtckit room page. Plain ES module, no build step; it uses only the public
// browser client served by the rtckit server at /rtckit.js (signaling + room API).
//
// One room API whatever the topology: joinRoom(signaling, options) returns a room with
// publish(track, stream), send(text), close() and the events participantjoined,
// participantleft, track, trackremoved, message, connectionstate and closed. The server
// decides the topology of an existing room; the page only asks for one when creating it.
//
// SFU rooms: each participant's <video> is watched (room.watchVideo): the page asks the SFU
// for the simulcast layer that fits the element's size, and for none while it is not shown;
// the stats panel lists what each video receives (frame size, and the layer the SFU names).

import { MCU_PEER_ID, RtcKitSignaling, SFU_PEER_ID, SignalingError, joinRoom } from "/rtckit.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);

const ui = {
  lobby: $("lobby"), call: $("call"), form: $("join-form"), room: $("room-input"),
  name: $("name-input"), preview: $("preview"), previewNote: $("preview-note"),
  join: $("join-button"), joinError: $("join-error"), topologies: $("topology-field"),
  grid: $("grid"), messages: $("messages"), chatForm: $("chat-form"), chatInput: $("chat-input"),
  statsBody: $("stats-body"), mic: $("mic-button"), cam: $("cam-button"),
  leave: $("leave-button"), status: $("status"), title: $("room-title"),
  topologyBadge: $("topology-badge"), invite: $("invite-button"), whep: $("whep-button"),
  tabChat: $("tab-chat"),
  tabStats: $("tab-stats"), chatPanel: $("chat"), statsPanel: $("stats"),
  unread: $("unread"),
};

// the page state, also reachable from the browser console (window.rtckitPage) for diagnosis
const state = window.rtckitPage = {
  config: null,        // /config.json
  media: null,         // local MediaStream (may be null: no camera/mic allowed)
  signaling: null,
  room: null,
  name: "",
  roomName: "",
  participants: new Map(),  // id -> {name, tile, stream, video, unwatch}
  mix: null,                // MCU rooms: the tile of the room's composite {tile, video, ...}
  serverState: null,        // SFU/MCU rooms: the state of the one connection, to the server
  statsTimer: null,
  lastStats: new Map(),     // connection key -> {time, bytesIn, bytesOut}
  unread: 0,
  setup: null,              // Promise: configuration loaded and camera preview settled
};

// --- helpers ---------------------------------------------------------------------------

// The peer ids the SFU and MCU servers take in their rooms: they are not people, so they get
// no tile of their own.
const SERVER_PEERS = new Set([SFU_PEER_ID, MCU_PEER_ID]);

// The WHEP player page served next to this one (whep.html), and the role a WHIP publisher
// has in its signaling metadata ({"rtckit_role": "whip"}).
const WHEP_PAGE = "/whep.html";
const WHIP_ROLE = "whip";

/**
 * The link to the WHEP player of *room*: its participant *participant* (SFU rooms), or with
 * none, what the server plays for the room (SFU: its first publisher of video; MCU: the mix).
 * The page's own room token goes along (a WHEP viewer needs the subscribe permission).
 */
function whepLink(room, participant = null) {
  const query = new URLSearchParams({ room });
  if (participant !== null) query.set("participant", participant);
  const token = params.get("token");
  if (token) query.set("token", token);
  return `${WHEP_PAGE}?${query}`;
}

/**
 * How the WHEP endpoint names a participant, stably across rejoins: the identity of its room
 * token, else the name in its signaling metadata, else its peer id.
 */
function whepName(id, identity, metadata) {
  if (typeof identity === "string" && identity) return identity;
  if (metadata && typeof metadata.name === "string" && metadata.name) return metadata.name;
  return id;
}

/** "a mesh room", "an SFU room", "an MCU room": the topology's name with its article. */
function roomKind(topology) {
  const name = topology === "mesh" ? "mesh" : String(topology).toUpperCase();
  return `${/^[AEFHILMNORSX]/.test(name) ? "an" : "a"} ${name} room`;
}

function isMcu() {
  return Boolean(state.signaling && state.signaling.topology === "mcu");
}

function setStatus(text, kind = "") {
  ui.status.textContent = text;
  ui.status.className = `status ${kind}`;
}

function initials(name) {
  const parts = String(name || "?").trim().split(/\s+/).filter(Boolean);
  return (parts.length > 1 ? parts[0][0] + parts[1][0] : (parts[0] || "?").slice(0, 2))
    .toUpperCase();
}

function describeError(error) {
  if (error instanceof SignalingError) {
    if (String(error.code).startsWith("auth_")) {
      const reason = {
        auth_required: "this server admits only people with an invitation link (room token)",
        auth_invalid: "the invitation link (room token) is not valid",
        auth_expired: "the invitation link (room token) has expired",
        auth_not_yet_valid: "the invitation link (room token) is not valid yet",
        auth_wrong_room: "the invitation link (room token) is for another room",
      }[error.code] || "the room token was refused";
      return `Cannot join: ${reason}. Ask for a new link.`;
    }
    const text = error.message.replace(/^[a-z_]+: /, "");
    if (error.code === "room_full") return `Cannot join: the room is full (${text}).`;
    if (error.code === "unknown_room") return `Cannot join: ${text}.`;
    if (error.code === "connect_failed" || error.code === "closed") {
      return "Cannot reach the signaling server. Is rtckit still running?";
    }
    return `Cannot join: ${text}`;
  }
  return `Cannot join: ${error && error.message ? error.message : error}`;
}

/** Received frame rate; an SFU connection carries a video per participant: "2 × 15 fps". */
function formatFps({ fps, videos }) {
  if (fps === null || videos === 0) return "–";
  const each = `${Math.round(fps / videos)} fps`;
  return videos > 1 ? `${videos} × ${each}` : each;
}

function formatRate(bitsPerSecond) {
  if (bitsPerSecond === null || !Number.isFinite(bitsPerSecond)) return "–";
  if (bitsPerSecond >= 1e6) return `${(bitsPerSecond / 1e6).toFixed(1)} Mb/s`;
  return `${Math.round(bitsPerSecond / 1e3)} kb/s`;
}

// --- lobby -----------------------------------------------------------------------------

async function loadConfig() {
  const response = await fetch("/config.json", { cache: "no-store" });
  if (!response.ok) throw new Error(`config.json: HTTP ${response.status}`);
  return response.json();
}

function setupTopologies(config) {
  const wanted = params.get("topology") || config.defaultTopology || "mesh";
  const inputs = ui.form.querySelectorAll('input[name="topology"]');
  for (const input of inputs) {
    const available = Boolean(config.topologies && config.topologies[input.value]);
    const label = input.closest("label");
    label.classList.toggle("unavailable", !available);
    if (!available) {
      // the server says why (config.json: unavailableTopologies), e.g. a missing dependency
      const reasons = config.unavailableTopologies || {};
      const why = reasons[input.value] || "not available on this server";
      label.title = `${input.value.toUpperCase()} rooms are not available on this server: ${why}`;
      const note = label.querySelector("small");
      if (note && !note.dataset.marked) {
        note.dataset.marked = "1";
        const reason = document.createElement("span");
        reason.className = "reason";
        reason.textContent = `Not available: ${why}`;
        note.after(reason);
      }
    }
    input.checked = input.value === wanted;
  }
  if (!config.chooseTopology) {
    // rtckit serve: the configuration decides every room's topology
    ui.topologies.hidden = true;
  }
}

async function startPreview() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    ui.previewNote.textContent = window.isSecureContext
      ? "This browser cannot capture media."
      : "Camera needs HTTPS (or localhost). Open the https:// address.";
    ui.previewNote.hidden = false;
    return;
  }
  try {
    state.media = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true },
      video: { width: { ideal: 640 }, height: { ideal: 480 }, frameRate: { ideal: 24 } },
    });
  } catch (error) {
    try {
      state.media = await navigator.mediaDevices.getUserMedia({ audio: true });
      ui.previewNote.textContent = "No camera: you will join with audio only.";
    } catch (_) {
      ui.previewNote.textContent =
        `Camera and microphone unavailable (${error.name}). You can still watch and chat.`;
    }
    ui.previewNote.hidden = false;
  }
  if (state.media) ui.preview.srcObject = state.media;
}

function showJoinError(text) {
  ui.joinError.textContent = text;
  ui.joinError.hidden = false;
}

async function join(event) {
  event.preventDefault();
  ui.joinError.hidden = true;
  const roomName = ui.room.value.trim();
  const name = ui.name.value.trim();
  if (!roomName || !name) return;
  const picked = ui.form.querySelector('input[name="topology"]:checked');
  const topology = picked ? picked.value : "mesh";
  localStorage.setItem("rtckit.name", name);
  ui.join.disabled = true;
  ui.join.textContent = "Joining…";
  // Join with the camera: a click that comes before the configuration has loaded or the
  // camera has opened (or the person has answered the permission prompt) waits for them
  // instead of joining without media.
  if (!state.media) setStatus("Waiting for the camera…");
  await state.setup;
  if (!state.config) {  // the page could not load its configuration (shown already)
    ui.join.textContent = "Join";
    return;
  }
  setStatus("Connecting…");
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${location.host}${state.config.signalingPath || "/ws"}`;
  let signaling = null;
  try {
    signaling = await RtcKitSignaling.connect(url, {
      room: roomName,
      token: params.get("token") || undefined,
      metadata: { name, topology },
    });
    const room = joinRoom(signaling, {
      iceServers: state.config.iceServers,
      iceTransportPolicy: state.config.iceTransportPolicy,
    });
    state.signaling = signaling;
    state.room = room;
    state.name = name;
    state.roomName = roomName;
    enterCall(roomName, topology);
  } catch (error) {
    if (signaling) signaling.close();
    showJoinError(describeError(error));
    setStatus("Not connected", "bad");
  } finally {
    ui.join.disabled = false;
    ui.join.textContent = "Join";
  }
}

// --- in the call -----------------------------------------------------------------------

function makeTile(id, name, { local = false, detached = false, role = "", whep = null } = {}) {
  const tile = document.createElement("figure");
  tile.className = local ? "tile local" : "tile";
  tile.dataset.peerId = id;
  tile.dataset.initials = initials(name);
  const video = document.createElement("video");
  video.autoplay = true;
  video.playsInline = true;
  if (local) video.muted = true;
  const caption = document.createElement("figcaption");
  caption.className = "name";
  caption.textContent = local ? `${name} (you)` : name;
  const badge = document.createElement("span");
  badge.className = "badge";
  badge.textContent = local ? "" : "connecting";
  const mic = document.createElement("span");
  mic.className = "mic-off";
  mic.textContent = "muted";
  mic.hidden = true;
  tile.append(video, caption, badge, mic);
  if (role) {  // e.g. "WHIP": a publisher that is not a person with this page
    const label = document.createElement("span");
    label.className = "role";
    label.textContent = role;
    tile.append(label);
  }
  if (whep) {
    const link = document.createElement("a");
    link.className = "whep-link";
    link.href = whep;
    link.target = "_blank";
    link.rel = "noopener";
    link.textContent = "Watch via WHEP";
    link.title = `Play ${local ? "your" : `${name}'s`} video in a WHEP player page`;
    tile.append(link);
  }
  if (!detached) {
    ui.grid.append(tile);
    layoutGrid();
  }
  return { tile, video, badge, mic, caption };
}

function layoutGrid() {
  // MCU rooms: the room mix fills the grid, your own preview sits beside it (room.css)
  const mcu = isMcu();
  ui.grid.classList.toggle("mcu", mcu);
  const count = mcu ? 1 : ui.grid.children.length;
  const columns = count <= 1 ? 1 : count <= 4 ? 2 : count <= 9 ? 3 : 4;
  ui.grid.style.setProperty("--columns", columns);
  ui.grid.dataset.count = count;
}

function participantName(id, metadata, identity) {
  const name = metadata && typeof metadata.name === "string" ? metadata.name.trim() : "";
  // a WHIP publisher without a token identity: its peer id, the name WHEP knows it by
  const fallback = identity || (isWhip(metadata) ? id : `Guest ${id.slice(0, 4)}`);
  return name.slice(0, 32) || fallback.slice(0, 32);
}

function isWhip(metadata) {
  return Boolean(metadata && metadata.rtckit_role === WHIP_ROLE);
}

/** The WHEP link of a participant's tile: SFU rooms only (an MCU room plays its mix). */
function participantWhep(id, identity, metadata) {
  if (!state.signaling || state.signaling.topology !== "sfu") return null;
  return whepLink(state.roomName, whepName(id, identity, metadata));
}

function addParticipant(id, metadata) {
  if (SERVER_PEERS.has(id)) return null;
  if (state.participants.has(id)) return state.participants.get(id);
  // what the signaling server says of the peer: its token identity, its metadata
  const info = state.signaling ? state.signaling.peers.get(id) : null;
  const identity = info && typeof info.identity === "string" ? info.identity : null;
  if (!metadata && info) metadata = info.metadata ?? null;
  const name = participantName(id, metadata, identity);
  // MCU: everyone is drawn in the room's composite; a person's own tile stays off the grid
  const { tile, video, badge, mic } = makeTile(id, name, {
    detached: isMcu(),
    role: isWhip(metadata) ? "WHIP" : "",
    whep: participantWhep(id, identity, metadata),
  });
  const entry = { id, name, tile, video, badge, mic, stream: new MediaStream() };
  video.srcObject = entry.stream;
  if (state.serverState) showState(entry, state.serverState);
  state.participants.set(id, entry);
  updateHeader();
  updateMixCaption();
  return entry;
}

/** MCU rooms: the one tile showing the server's composite of everyone. */
function mixTile() {
  if (state.mix) return state.mix;
  const made = makeTile(state.room.serverId, "Room mix");
  made.tile.classList.add("mix");
  const entry = { ...made, stream: new MediaStream() };
  made.video.srcObject = entry.stream;
  // the local preview comes first in the DOM; the mix takes the big first place
  ui.grid.prepend(made.tile);
  state.mix = entry;
  if (state.serverState) showState(entry, state.serverState);
  updateMixCaption();
  return entry;
}

/** The mix tile names who is in the picture, in grid order (the server's layout). */
function updateMixCaption() {
  if (!state.mix || !state.room) return;
  const layout = Array.isArray(state.room.layout) ? state.room.layout : [];
  const names = layout.map((id) => {
    if (state.signaling && id === state.signaling.peerId) return state.name;
    const entry = state.participants.get(id);
    return entry ? entry.name : null;
  }).filter(Boolean);
  state.mix.caption.textContent = names.length ? `Room mix · ${names.join(", ")}` : "Room mix";
  state.mix.tile.dataset.layout = layout.join(" ");
}

function showState(entry, connectionState) {
  entry.badge.textContent = connectionState === "connected" ? "" : connectionState;
  entry.tile.dataset.state = connectionState;
}

function removeParticipant(id) {
  const entry = state.participants.get(id);
  if (!entry) return;
  state.participants.delete(id);
  if (entry.unwatch) entry.unwatch();
  entry.video.srcObject = null;
  entry.tile.remove();
  layoutGrid();
  updateHeader();
  updateMixCaption();
}

function updateHeader() {
  const count = state.participants.size + 1;
  setStatus(`Connected · ${count} ${count === 1 ? "person" : "people"}`, "ok");
}

function addChat(who, text, { self = false, system = false } = {}) {
  const item = document.createElement("li");
  if (system) {
    item.className = "system";
    item.textContent = text;
  } else {
    item.className = self ? "self" : "";
    const author = document.createElement("span");
    author.className = "who";
    author.textContent = who;
    const time = document.createElement("time");
    time.textContent = new Date().toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
    const body = document.createElement("p");
    body.textContent = text;
    item.append(author, time, body);
  }
  ui.messages.append(item);
  ui.messages.scrollTop = ui.messages.scrollHeight;
  if (!system && !self && ui.chatPanel.hidden) {
    state.unread += 1;
    ui.unread.textContent = String(state.unread);
    ui.unread.hidden = false;
  }
}

function broadcast(message) {
  if (state.room) state.room.send(JSON.stringify(message));
}

function onMessage({ participantId, data }) {
  let message;
  try {
    message = JSON.parse(typeof data === "string" ? data : new TextDecoder().decode(data));
  } catch (_) {
    return;
  }
  const entry = state.participants.get(participantId);
  if (message.type === "chat" && typeof message.text === "string") {
    addChat(entry ? entry.name : participantId, message.text.slice(0, 2000));
  } else if (message.type === "media" && entry) {
    entry.tile.classList.toggle("muted-video", message.video === false);
    entry.mic.hidden = message.audio !== false;
  } else if (message.type === "hello" && entry) {
    // a newcomer asks for our mute state
    sendMediaState();
  }
}

function sendMediaState() {
  if (!state.media) return;
  const audio = state.media.getAudioTracks().some((t) => t.enabled);
  const video = state.media.getVideoTracks().some((t) => t.enabled);
  broadcast({ type: "media", audio, video });
}

function enterCall(roomName, requested) {
  const { room, signaling } = state;
  ui.lobby.hidden = true;
  ui.call.hidden = false;
  ui.title.textContent = roomName;
  ui.title.hidden = false;
  ui.topologyBadge.textContent = signaling.topology.toUpperCase();
  ui.topologyBadge.title = `This room is ${roomKind(signaling.topology)}`;
  ui.topologyBadge.hidden = false;
  ui.invite.hidden = false;
  // WHEP plays a room with a media server (SFU, MCU); a mesh room has none
  ui.whep.hidden = signaling.topology === "mesh";
  ui.whep.href = whepLink(roomName);
  ui.whep.title = signaling.topology === "mcu"
    ? "Play the room's mix in a WHEP player page"
    : "Play the room's first video publisher in a WHEP player page";
  ui.invite.title = state.config.auth === "token"
    ? "Copy a link to this room (without your token: each person needs their own invitation)"
    : "Copy a link to this room";
  document.title = `${roomName} · rtckit`;
  const url = new URL(location.href);
  url.searchParams.set("room", roomName);
  history.replaceState(null, "", url);

  const local = makeTile(signaling.peerId, state.name, {
    local: true,
    whep: participantWhep(signaling.peerId, signaling.identity, { name: state.name }),
  });
  state.localTile = local;
  if (state.media) {
    local.video.srcObject = state.media;
    for (const track of state.media.getTracks()) room.publish(track, state.media);
  } else {
    local.tile.classList.add("muted-video");
  }
  updateToggles();

  room.addEventListener("participantjoined", ({ detail }) => {
    const entry = addParticipant(detail.participantId, detail.metadata);
    if (!entry) return;
    addChat("", `${entry.name} joined`, { system: true });
    sendMediaState();
  });
  room.addEventListener("participantleft", ({ detail }) => {
    const entry = state.participants.get(detail.participantId);
    if (entry) addChat("", `${entry.name} left`, { system: true });
    removeParticipant(detail.participantId);
  });
  room.addEventListener("track", ({ detail }) => {
    const entry = detail.participantId === room.serverId && isMcu()
      ? mixTile() : addParticipant(detail.participantId, null);
    if (!entry) return;
    for (const old of entry.stream.getTracks()) {
      if (old.kind === detail.track.kind) entry.stream.removeTrack(old);
    }
    entry.stream.addTrack(detail.track);
    // a new MediaStream object makes every browser pick the new track up
    entry.stream = new MediaStream(entry.stream.getTracks());
    entry.video.srcObject = entry.stream;
    entry.video.play().catch(() => {});
    if (detail.kind === "video" && !entry.unwatch && typeof room.watchVideo === "function" &&
        room.serverId === SFU_PEER_ID) {
      entry.unwatch = room.watchVideo(detail.participantId, entry.video);
    }
  });
  room.addEventListener("trackremoved", ({ detail }) => {
    const entry = detail.participantId === room.serverId && isMcu()
      ? state.mix : state.participants.get(detail.participantId);
    if (entry) entry.stream.removeTrack(detail.track);
  });
  room.addEventListener("layout", () => updateMixCaption());
  room.addEventListener("message", ({ detail }) => onMessage(detail));
  room.addEventListener("connectionstate", ({ detail }) => {
    if (detail.participantId === room.serverId) {
      // SFU/MCU: one connection, to the server, carries everyone's media
      state.serverState = detail.state;
      for (const entry of state.participants.values()) showState(entry, detail.state);
      if (state.mix) showState(state.mix, detail.state);
      return;
    }
    const entry = state.participants.get(detail.participantId);
    if (entry) showState(entry, detail.state);
  });
  signaling.addEventListener("disconnected", () => setStatus("Reconnecting…", "bad"));
  signaling.addEventListener("reconnected", () => updateHeader());
  signaling.addEventListener("closed", ({ detail }) => {
    if (state.signaling === signaling && detail.error) {
      addChat("", "Lost the connection to the server.", { system: true });
      setStatus("Disconnected", "bad");
    }
  });

  for (const [id, info] of room.participants || []) addParticipant(id, info);
  for (const [id, info] of signaling.peers) addParticipant(id, info.metadata);
  addChat("", `You joined “${roomName}”, ${roomKind(signaling.topology)}.`, { system: true });
  if (requested && state.config.chooseTopology && requested !== signaling.topology) {
    addChat("", `The room already existed as ${roomKind(signaling.topology)}; ` +
      `your choice (${roomKind(requested)}) applies to new rooms only.`, { system: true });
  }
  broadcast({ type: "hello" });
  updateHeader();
  state.statsTimer = setInterval(updateStats, 1000);
}

function updateToggles() {
  const audio = state.media ? state.media.getAudioTracks() : [];
  const video = state.media ? state.media.getVideoTracks() : [];
  const micOn = audio.some((t) => t.enabled);
  const camOn = video.some((t) => t.enabled);
  ui.mic.disabled = audio.length === 0;
  ui.cam.disabled = video.length === 0;
  ui.mic.setAttribute("aria-pressed", String(micOn));
  ui.cam.setAttribute("aria-pressed", String(camOn));
  ui.mic.querySelector(".label").textContent = micOn ? "Mute" : "Unmute";
  ui.cam.querySelector(".label").textContent = camOn ? "Stop video" : "Start video";
  ui.mic.title = micOn ? "Mute your microphone" : "Unmute your microphone";
  ui.cam.title = camOn ? "Turn your camera off" : "Turn your camera on";
  if (state.localTile) {
    state.localTile.tile.classList.toggle("muted-video", !camOn);
    state.localTile.mic.hidden = micOn || audio.length === 0;
  }
}

function toggle(kind) {
  if (!state.media) return;
  const tracks = kind === "audio" ? state.media.getAudioTracks() : state.media.getVideoTracks();
  const enable = !tracks.some((t) => t.enabled);
  for (const track of tracks) track.enabled = enable;
  updateToggles();
  sendMediaState();
}

function leave() {
  clearInterval(state.statsTimer);
  state.statsTimer = null;
  const { room, signaling } = state;
  state.room = null;
  state.signaling = null;
  if (room) room.close();
  if (signaling) signaling.close();
  for (const id of [...state.participants.keys()]) removeParticipant(id);
  state.mix = null;
  state.serverState = null;
  ui.grid.replaceChildren();
  layoutGrid();
  ui.messages.replaceChildren();
  ui.statsBody.replaceChildren();
  state.lastStats.clear();
  state.localTile = null;
  ui.call.hidden = true;
  ui.lobby.hidden = false;
  ui.title.hidden = true;
  ui.topologyBadge.hidden = true;
  ui.invite.hidden = true;
  ui.whep.hidden = true;
  document.title = "rtckit room";
  setStatus("Not connected");
}

// --- stats -----------------------------------------------------------------------------

/** The media connections of the room: one per participant (mesh) or one to the server. */
function connectionsOf(room) {
  if (!room) return [];
  if (typeof room.connections === "function") return room.connections();
  const found = [];
  if (room.sessions instanceof Map) {
    for (const [id, session] of room.sessions) {
      if (session && session.pc) {
        const entry = state.participants.get(id);
        const label = SERVER_PEERS.has(id) ? `${room.topology.toUpperCase()} server`
          : entry ? entry.name : id;
        found.push({ key: id, label, pc: session.pc });
      }
    }
  } else if (room.session && room.session.pc) {
    found.push({ key: "server", label: `${room.topology.toUpperCase()} server`, pc: room.session.pc });
  } else if (room.pc) {
    found.push({ key: "server", label: `${room.topology.toUpperCase()} server`, pc: room.pc });
  }
  return found;
}

async function readStats(pc) {
  const report = await pc.getStats();
  const out = { bytesIn: 0, bytesOut: 0, fps: null, videos: 0, rtt: null, lost: 0, received: 0,
    path: "–", framesDecoded: 0, inbound: [] };
  const byId = new Map();
  report.forEach((s) => byId.set(s.id, s));
  report.forEach((s) => {
    if (s.type === "inbound-rtp") {
      out.bytesIn += s.bytesReceived || 0;
      out.lost += Math.max(0, s.packetsLost || 0);
      out.received += s.packetsReceived || 0;
      if (s.kind === "video") {
        out.framesDecoded += s.framesDecoded || 0;
        out.inbound.push({ mid: s.mid, width: s.frameWidth || 0, height: s.frameHeight || 0 });
        if (s.framesPerSecond !== undefined) {
          out.fps = (out.fps || 0) + s.framesPerSecond;
          out.videos += 1;
        }
      }
    } else if (s.type === "outbound-rtp") {
      out.bytesOut += s.bytesSent || 0;
    } else if (s.type === "transport" && s.selectedCandidatePairId) {
      const pair = byId.get(s.selectedCandidatePairId);
      if (pair) describePair(pair, byId, out);
    } else if (s.type === "candidate-pair" && s.nominated && s.state === "succeeded" &&
               out.path === "–") {
      describePair(s, byId, out);
    }
  });
  return out;
}

function describePair(pair, byId, out) {
  if (pair.currentRoundTripTime !== undefined) out.rtt = pair.currentRoundTripTime;
  const local = byId.get(pair.localCandidateId);
  const remote = byId.get(pair.remoteCandidateId);
  if (local && remote) {
    const protocol = local.relayProtocol || local.protocol || "";
    out.path = `${local.candidateType} → ${remote.candidateType}${protocol ? ` (${protocol})` : ""}`;
  }
}

/** The names of a publication's simulcast layers by rank (the SFU's "low"/"medium"/"high"). */
const LAYER_RANKS = { 1: ["single"], 2: ["low", "high"], 3: ["low", "medium", "high"] };

/**
 * One line per received video of an SFU/MCU connection: "640×360 · layer f (high)", from the
 * frame size of getStats and the layer the SFU says it forwards (room.videoLayers).
 */
function describeVideos(inbound) {
  const room = state.room;
  if (!room || !(room.remote instanceof Map)) return [];
  const layers = room.videoLayers instanceof Map ? room.videoLayers : new Map();
  const out = [];
  for (const { mid, width, height } of inbound) {
    const remote = room.remote.get(mid);
    if (!remote || remote.participantId === room.serverId) continue;
    const entry = state.participants.get(remote.participantId);
    const reported = layers.get(remote.participantId);
    let text = width > 0 ? `${width}×${height}` : "no picture yet";
    if (reported && reported.paused) {
      text = "paused (not shown)";
    } else if (reported && reported.layer) {
      const ranks = LAYER_RANKS[reported.layers.length] || [];
      const rank = ranks[reported.layers.indexOf(reported.layer)];
      text += ` · layer ${reported.layer}${rank ? ` (${rank})` : ""}`;
    } else if (reported) {
      text += " · one layer";
    }
    out.push({ participantId: remote.participantId, name: entry ? entry.name : remote.participantId,
      text });
  }
  out.sort((a, b) => a.name.localeCompare(b.name));
  return out;
}

async function updateStats() {
  const connections = connectionsOf(state.room);
  const rows = [];
  const now = performance.now();
  for (const { key, label, pc } of connections) {
    let stats;
    try {
      stats = await readStats(pc);
    } catch (_) {
      continue;
    }
    const last = state.lastStats.get(key);
    let rateIn = null;
    let rateOut = null;
    if (last && now > last.time) {
      const seconds = (now - last.time) / 1000;
      rateIn = Math.max(0, (stats.bytesIn - last.bytesIn) * 8 / seconds);
      rateOut = Math.max(0, (stats.bytesOut - last.bytesOut) * 8 / seconds);
    }
    state.lastStats.set(key, { time: now, bytesIn: stats.bytesIn, bytesOut: stats.bytesOut });
    const total = stats.lost + stats.received;
    rows.push({
      key, label, path: stats.path, framesDecoded: stats.framesDecoded,
      videos: describeVideos(stats.inbound),
      cells: [
        ["In", formatRate(rateIn)],
        ["Out", formatRate(rateOut)],
        ["Video", formatFps(stats)],
        ["RTT", stats.rtt === null ? "–" : `${Math.round(stats.rtt * 1000)} ms`],
        ["Loss", total > 0 ? `${(100 * stats.lost / total).toFixed(1)} %` : "–"],
      ],
    });
  }
  if (!state.room) return;
  const body = document.createDocumentFragment();
  if (rows.length === 0) {
    const empty = document.createElement("p");
    empty.className = "hint empty";
    empty.textContent = "No media connection yet: invite someone with the Invite button.";
    body.append(empty);
  }
  for (const row of rows) {
    const card = document.createElement("section");
    card.className = "conn";
    card.dataset.connection = row.key;
    card.dataset.framesDecoded = String(row.framesDecoded);
    const head = document.createElement("h3");
    head.textContent = row.label;
    const path = document.createElement("span");
    path.className = "path";
    path.title = "ICE candidate pair: local → remote candidate type";
    path.textContent = row.path;
    head.append(path);
    const list = document.createElement("dl");
    for (const [name, value] of row.cells) {
      const item = document.createElement("div");
      const dt = document.createElement("dt");
      dt.textContent = name;
      const dd = document.createElement("dd");
      dd.textContent = value;
      item.append(dt, dd);
      list.append(item);
    }
    card.append(head, list);
    if (row.videos.length > 0) {
      const videos = document.createElement("ul");
      videos.className = "videos";
      videos.title = "What each video receives: frame size, and the simulcast layer the SFU sends";
      for (const video of row.videos) {
        const item = document.createElement("li");
        item.dataset.participant = video.participantId;
        const who = document.createElement("span");
        who.className = "who";
        who.textContent = video.name;
        const what = document.createElement("span");
        what.className = "what";
        what.textContent = video.text;
        item.append(who, what);
        videos.append(item);
      }
      card.append(videos);
    }
    body.append(card);
  }
  ui.statsBody.replaceChildren(body);
}

// --- wiring ----------------------------------------------------------------------------

function selectTab(which) {
  const chat = which === "chat";
  ui.tabChat.setAttribute("aria-selected", String(chat));
  ui.tabStats.setAttribute("aria-selected", String(!chat));
  ui.chatPanel.hidden = !chat;
  ui.statsPanel.hidden = chat;
  if (chat) {
    state.unread = 0;
    ui.unread.hidden = true;
  }
}

async function main() {
  let setupDone;
  state.setup = new Promise((resolve) => { setupDone = resolve; });
  try {
    await setup();
  } finally {
    setupDone();
  }
}

async function setup() {
  ui.room.value = params.get("room") || "";
  ui.name.value = params.get("name") || localStorage.getItem("rtckit.name") || "";
  ui.form.addEventListener("submit", join);
  ui.chatForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const text = ui.chatInput.value.trim();
    if (!text || !state.room) return;
    broadcast({ type: "chat", text });
    addChat(state.name, text, { self: true });
    ui.chatInput.value = "";
  });
  ui.mic.addEventListener("click", () => toggle("audio"));
  ui.cam.addEventListener("click", () => toggle("video"));
  ui.leave.addEventListener("click", leave);
  ui.tabChat.addEventListener("click", () => selectTab("chat"));
  ui.tabStats.addEventListener("click", () => selectTab("stats"));
  ui.invite.addEventListener("click", async () => {
    const url = new URL(location.href);
    url.searchParams.delete("name");
    // a room token names its holder: everyone invited needs their own
    url.searchParams.delete("token");
    try {
      await navigator.clipboard.writeText(url.href);
      ui.invite.querySelector(".label").textContent = "Link copied";
    } catch (_) {
      prompt("Invite link", url.href);
    }
    setTimeout(() => { ui.invite.querySelector(".label").textContent = "Invite"; }, 2000);
  });
  window.addEventListener("pagehide", () => { if (state.room) leave(); });
  try {
    state.config = await loadConfig();
  } catch (error) {
    showJoinError(`Cannot load the server configuration: ${error.message}`);
    ui.join.disabled = true;
    return;
  }
  setupTopologies(state.config);
  if (state.config.auth === "token" && !params.get("token")) {
    ui.tokenNote.hidden = false;
  }
  await startPreview();
  (ui.room.value ? ui.name : ui.room).focus();
}

ui.tokenNote = $("token-note");
main();
