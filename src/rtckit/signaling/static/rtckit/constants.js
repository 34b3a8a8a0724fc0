// rtckit/constants.js: the values rtckit.js shares with the Python side of rtckit.
//
// Every value here is also defined in Python, and tests/test_js_constants.py compares the two:
// change one side alone and that test fails. Keep this module plain `export const NAME = ...`
// with JSON literals (or Object.freeze / new Set of them) so that the test can read it.

/** Signaling protocol version (rtckit.signaling.protocol.PROTOCOL_VERSION). */
export const PROTOCOL_VERSION = 1;
/** The `agent` this client sends in its hello. */
export const CLIENT_AGENT = "rtckit-js/1";

/** Error codes of the protocol (the `code` of an `error` message; Python: ErrorCode). */
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
  UNAVAILABLE: "unavailable",
  INTERNAL: "internal",
});

/** WebSocket close codes of the protocol (Python: CloseCode). */
export const CloseCode = Object.freeze({
  NORMAL: 1000,
  GOING_AWAY: 1001,
  PROTOCOL_ERROR: 1002,
  INVALID_DATA: 1007,
  POLICY_VIOLATION: 1008,
  MESSAGE_TOO_BIG: 1009,
  INTERNAL_ERROR: 1011,
  HANDSHAKE_TIMEOUT: 4000,
  HEARTBEAT_TIMEOUT: 4001,
  SESSION_REPLACED: 4002,
  UNSUPPORTED_VERSION: 4003,
  SLOW_CONSUMER: 4004,
});

/**
 * WebSocket close codes after which reconnecting is pointless (policy violation, session
 * replaced, unsupported version; the Python client's list). Every other code reconnects and
 * resumes, including 4004 (slow consumer: the server held too much this client had not read
 * or acknowledged; the session waits for the resume).
 */
export const FINAL_CLOSE_CODES = new Set([1008, 4002, 4003]);

/** Room topologies (Python: rtckit.topology.Topology). */
export const Topology = Object.freeze({
  MESH: "mesh",
  SFU: "sfu",
  MCU: "mcu",
});

/** The peer session's heartbeat data channel: label, negotiated id, and what it carries. */
export const HEARTBEAT_LABEL = "rtckit-heartbeat";
export const HEARTBEAT_CHANNEL_ID = 1000;
export const HEARTBEAT_PAYLOAD = "\u0000rtckit-hb";

/** The rooms' data channel (mesh, SFU and MCU): label and negotiated id. */
export const ROOM_CHANNEL_LABEL = "rtckit-room";
export const ROOM_CHANNEL_ID = 1001;

/** The peer ids the SFU and the MCU take in the rooms they serve. */
export const SFU_PEER_ID = "rtckit-sfu";
export const MCU_PEER_ID = "rtckit-mcu";
// The type of the room-channel message (JSON, addressed to SFU_PEER_ID) asking the SFU for a
// simulcast layer of one participant's video: {type, participant, quality}.
export const VIDEO_QUALITY_MESSAGE = "rtckit.video-quality";
// The quality of a VIDEO_QUALITY_MESSAGE that pauses the video: the SFU forwards none of it
// until another quality is asked for, then resumes at a keyframe.
export const VIDEO_OFF = "off";
// The type of the room-channel message (JSON, from SFU_PEER_ID) telling a page what the SFU
// forwards it of one participant's video, when that changes:
// {type, participant, layer (RID or null), layers (RIDs, lowest first), paused}.
export const VIDEO_LAYER_MESSAGE = "rtckit.video-layer";
