// rtckit.js: rtckit's browser client, framework-free ES modules behind this one entry.
//
// Served by rtckit's signaling server at `<path>/rtckit.js` (e.g. /ws/rtckit.js), and by the
// rtckit app at /rtckit.js:
//
//   import { RtcKitSignaling } from "/ws/rtckit.js";
//   const sig = await RtcKitSignaling.connect("ws://127.0.0.1:8765/ws", { room: "lobby" });
//   sig.addEventListener("offer", (event) => console.log(event.detail.from, event.detail.sdp));
//   sig.sendApp(null, { hello: "everyone" });
//
// This entry only re-exports. The code lives in the modules of the rtckit/ folder beside it,
// imported with relative paths, so they load from wherever the entry is served, without a
// bundler (the servers serve every one of them at `<entry's folder>/rtckit/<name>.js`):
//
//   rtckit/constants.js  values shared with the Python side (tests/test_js_constants.py)
//   rtckit/signaling.js  RtcKitSignaling: the signaling protocol client, complete on its own
//   rtckit/peer.js       PeerSession: one peer connection, perfect negotiation, heartbeat
//   rtckit/rooms.js      mesh / SFU / MCU room clients and joinRoom

export {
  CLIENT_AGENT, ErrorCode, HEARTBEAT_CHANNEL_ID, HEARTBEAT_LABEL, MCU_PEER_ID, PROTOCOL_VERSION,
  ROOM_CHANNEL_ID, ROOM_CHANNEL_LABEL, SFU_PEER_ID, VIDEO_LAYER_MESSAGE, VIDEO_OFF,
  VIDEO_QUALITY_MESSAGE,
} from "./rtckit/constants.js";
export { RtcKitSignaling, SignalingError } from "./rtckit/signaling.js";
export { PeerSession, fromSignaling, politeFor, toSignaling } from "./rtckit/peer.js";
export {
  AUTO_QUALITY_WIDTHS, McuRoom, MeshRoom, SIMULCAST_LAYERS, SfuRoom, connectSignaling, joinMcu,
  joinMesh, joinRoom, joinSfu, openEnvelope, participantOfMsid, qualityForWidth, roomStrategies,
  sealEnvelope,
} from "./rtckit/rooms.js";
