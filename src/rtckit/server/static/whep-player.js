// whep-player.js: the WHEP player page (whep.html) of the rtckit server. Plain ES module, no
// build step, no rtckit code: the browser's RTCPeerConnection speaking WHEP to this server,
// as any WHEP player would.
//
//   /whep.html?room=<room>[&participant=<name>][&token=<room token>]
//
// One POST of an offer with a receive-only video and audio transceiver (its candidates
// gathered first: nothing to trickle), the 201's answer applied, a DELETE of the session when
// the page goes away. Without a participant the server plays what it plays for the room (an
// SFU room: its first publisher of video; an MCU room: the mix).

const WHEP_PREFIX = "/whep";
const GATHER_TIMEOUT_MS = 3000;

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const room = params.get("room");
const participant = params.get("participant");
const token = params.get("token");
const video = $("video");

// the page state, also reachable from the browser console (window.rtckitWhep) for diagnosis
const state = window.rtckitWhep = { pc: null, resource: null, error: null };

function setStatus(text, kind = "") {
  $("status").textContent = text;
  $("status").className = `status ${kind}`;
}

function fail(text) {
  state.error = text;
  $("error").textContent = text;
  $("error").hidden = false;
  setStatus("Not playing", "bad");
}

function authorization() {
  return token ? { Authorization: `Bearer ${token}` } : {};
}

/** The WHEP endpoint: POST <prefix>/<room>[/<participant>]. */
function endpoint() {
  const path = [room, participant].filter((part) => part !== null).map(encodeURIComponent);
  return `${WHEP_PREFIX}/${path.join("/")}`;
}

async function iceConfig() {
  try {
    const response = await fetch("/config.json", { cache: "no-store" });
    if (response.ok) {
      const config = await response.json();
      return { iceServers: config.iceServers || [], iceTransportPolicy: config.iceTransportPolicy };
    }
  } catch (_) {
    // a server without the room page's configuration: no ICE servers
  }
  return { iceServers: [] };
}

/** Resolve when the connection has gathered its candidates, or after a bounded wait. */
function gathered(pc) {
  if (pc.iceGatheringState === "complete") return Promise.resolve();
  return new Promise((resolve) => {
    const timer = setTimeout(resolve, GATHER_TIMEOUT_MS);
    pc.addEventListener("icegatheringstatechange", () => {
      if (pc.iceGatheringState === "complete") {
        clearTimeout(timer);
        resolve();
      }
    });
  });
}

/** The reason of a refusal: the problem body's detail (RFC 9457), else the status text. */
async function refusal(response) {
  const text = await response.text();
  try {
    const problem = JSON.parse(text);
    if (problem && (problem.detail || problem.title)) return problem.detail || problem.title;
  } catch (_) {
    // not a problem body
  }
  return text.trim().slice(0, 300) || response.statusText;
}

async function play() {
  if (!room) {
    fail("No room given: open this page as /whep.html?room=<room>[&participant=<name>].");
    return;
  }
  $("what").textContent = participant ? `${room} · ${participant}` : `${room} · the room`;
  $("what").hidden = false;
  document.title = `${participant || room} · WHEP · rtckit`;
  setStatus("Connecting…");
  const pc = new RTCPeerConnection({ ...(await iceConfig()), bundlePolicy: "max-bundle" });
  state.pc = pc;
  pc.addTransceiver("audio", { direction: "recvonly" });
  pc.addTransceiver("video", { direction: "recvonly" });
  const stream = new MediaStream();
  pc.addEventListener("track", ({ track }) => {
    stream.addTrack(track);
    video.srcObject = stream;
    video.play().catch(() => {});  // muted: autoplay is allowed; the controls unmute
  });
  pc.addEventListener("connectionstatechange", () => {
    const connected = pc.connectionState === "connected";
    if (!state.error) setStatus(connected ? "Playing" : pc.connectionState, connected ? "ok" : "");
  });
  await pc.setLocalDescription(await pc.createOffer());
  await gathered(pc);
  let response;
  try {
    response = await fetch(endpoint(), {
      method: "POST",
      headers: { "Content-Type": "application/sdp", ...authorization() },
      body: pc.localDescription.sdp,
    });
  } catch (error) {
    fail(`Cannot reach the server: ${error.message}`);
    return;
  }
  if (response.status !== 201) {
    fail(`The server refused to play (${response.status}): ${await refusal(response)}`);
    pc.close();
    return;
  }
  const where = response.headers.get("Location");
  if (where) state.resource = new URL(where, response.url).href;
  await pc.setRemoteDescription({ type: "answer", sdp: await response.text() });
}

/** End the session: DELETE it (keepalive: the page may be going away), close the connection. */
function stop() {
  if (state.resource) {
    fetch(state.resource, { method: "DELETE", headers: authorization(), keepalive: true })
      .catch(() => {});
    state.resource = null;
  }
  if (state.pc) state.pc.close();
}

window.addEventListener("pagehide", stop);
play().catch((error) => fail(`Cannot play: ${error.message}`));
