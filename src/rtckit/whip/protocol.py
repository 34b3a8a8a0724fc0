"""WHIP (RFC 9725) ingest and WHEP egress, the protocol core: every decision of the HTTP
exchange, no I/O.

This module imports neither asyncio nor aiohttp nor aiortc: it takes what a request carries
(method, headers as strings, body as bytes) and returns what to answer, or raises
:class:`~rtckit.errors.WhipError` carrying the status and the ``application/problem+json``
body (RFC 9457) of the refusal. :mod:`rtckit.whip.server` (WHIP) and :mod:`rtckit.whip.whep`
(WHEP) are the aiohttp layers around it.

The exchange, as rtckit serves it
---------------------------------

* ``OPTIONS /whip/<room>``: ``204``, with CORS, ``Accept-Post: application/sdp`` and the ICE
  servers as ``Link`` headers (a client can gather with them before its ``POST``);
* ``POST /whip/<room>`` (``application/sdp``): ``201 Created`` with the SDP answer, the
  ``Location`` of the new session resource, its ``ETag`` and the ICE servers as ``Link``
  headers;
* ``PATCH <resource>`` (``application/trickle-ice-sdpfrag``, an RFC 8840 fragment): ``204``, the
  trickled candidates are applied;
* ``DELETE <resource>``: ``200``, the publisher leaves the room.

WHEP is the same exchange under ``/whep`` (:class:`WhepConfig`), with ``POST /whep/<room>`` or
``POST /whep/<room>/<participant>`` and a receive-only offer (:func:`parse_whep_offer`); its
session resources are ``/whep/<room>/~/<id>``.

Refusals (each with a problem body naming the cause; :func:`problem`):

=====  ==========================================================================================
400    malformed SDP offer or SDP fragment; a trickle fragment for no m-line of the session
401    no bearer token, or a token the room's authenticator refuses (``WWW-Authenticate: Bearer``)
403    a valid token without the ``publish`` permission
404    unknown room (when rooms are not created on demand) or unknown / ended session resource
405    a method the resource does not allow (``Allow`` lists those it does)
409    a mesh room: it has no media server to publish into (SFU and MCU rooms take WHIP
       publishers); the ``detail`` says so
412    ``If-Match`` names another entity tag than the session's (:func:`check_if_match`)
413    a body larger than ``max_body_bytes`` (:class:`WhipConfig`)
415    a content type other than the one the method takes
422    an offer with no audio/video to publish, more than one audio or video m-line, a media
       section that does not send, or another kind of media; an ICE restart
       (``If-Match: "*"`` or new ICE credentials): aiortc cannot restart ICE in place, so a
       session supports trickle only, and RFC 9725 section 4.3.1 names 422 for the one it
       does not support
428    a trickle ``PATCH`` without ``If-Match`` (the client must name the ICE session it
       trickles into, the ETag of the ``201``)
503    too many WHIP sessions (``max_sessions`` of :class:`WhipConfig`), the room's media
       server is not running (the server is closing), or an MCU room's grid is full
=====  ==========================================================================================

WHEP refuses with the same statuses, except: 403 for a token without the ``subscribe``
permission; 404 also for a room nobody is in (a viewer has nothing to play, and does not open
a room); 409 for a mesh room, and for a participant of an MCU room (an MCU room plays as one
mix, at ``/whep/<room>``); 422 for an m-line that does not receive (``sendonly``,
``inactive``); 503 for too many WHEP sessions.

Resources and entity tags
-------------------------

A session resource is ``<prefix>/<room>/<id>`` (WHEP: ``<prefix>/<room>/~/<id>``) with *id*
from :func:`new_resource_id` (``secrets.token_urlsafe``, 128 bits): it cannot be guessed, and
it is the only credential a ``PATCH`` or ``DELETE`` needs besides the bearer token. The ETag is
an opaque strong tag made when the session is created (:func:`new_etag`); since ICE restarts
are refused, it never changes for the life of the session.

ICE servers
-----------

:func:`ice_server_links` formats ``RTCIceServer`` dicts (``urls``, ``username``,
``credential``) as the ``Link`` field values of RFC 9725 section 4.6; TURN credentials go in
the ``username`` / ``credential`` / ``credential-type="password"`` parameters. Values that
would break the header (a line break, ``<`` or ``>`` in a URL) are refused
(:class:`~rtckit.errors.ConfigurationError`): the ICE servers are the server's configuration,
not remote input. :func:`parse_ice_server_links` is the client's side: it reads those field
values back into ``RTCIceServer`` dicts; a malformed one is the server's fault, refused as a
502 :class:`~rtckit.errors.WhipError` (as a gateway names an invalid upstream answer).
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterable, Mapping
from typing import Any, Final

import attrs

from rtckit.errors import ConfigurationError, WhipError

__all__ = [
    "PROBLEM_TYPE",
    "SDP_TYPE",
    "TRICKLE_TYPE",
    "OfferSummary",
    "SdpFragment",
    "TrickledCandidate",
    "WhepConfig",
    "WhipConfig",
    "check_body",
    "check_content_type",
    "check_if_match",
    "ice_server_links",
    "new_etag",
    "new_resource_id",
    "parse_bearer",
    "parse_ice_server_links",
    "parse_offer",
    "parse_sdp_fragment",
    "parse_whep_offer",
    "problem",
    "problem_body",
]

SDP_TYPE: Final = "application/sdp"
TRICKLE_TYPE: Final = "application/trickle-ice-sdpfrag"
PROBLEM_TYPE: Final = "application/problem+json"

_TITLES: Final = {
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    409: "Conflict",
    412: "Precondition Failed",
    413: "Content Too Large",
    415: "Unsupported Media Type",
    422: "Unprocessable Content",
    428: "Precondition Required",
    502: "Bad Gateway",
    503: "Service Unavailable",
}

#: Longest ``a=candidate`` line count one PATCH may carry (more is a malformed fragment).
_MAX_FRAGMENT_CANDIDATES: Final = 64


def _positive(_inst: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if not value > 0:
        raise ConfigurationError(f"{attribute.name} must be positive, not {value!r}")


def _check_prefix(_inst: object, _attribute: attrs.Attribute[str], value: str) -> None:
    if not re.fullmatch(r"(/[A-Za-z0-9._~-]+)+", value):
        raise ConfigurationError(f"prefix must be a path like '/whip', not {value!r}")


@attrs.frozen(kw_only=True)
class WhipConfig:
    """Limits and timeouts of a WHIP endpoint (times in seconds).

    *prefix*: the path the endpoints are mounted under (``/whip``). *max_sessions*: WHIP
    sessions at once on this server (more: 503). *max_body_bytes*: longest offer or fragment.
    *connect_timeout*: how long a new session may take to connect (ICE, then DTLS) before it is
    reaped; a session whose connection later fails (ICE consent lost) is reaped at once.
    *delete_grace*: how long the resource of a session that ended without a
    ``DELETE`` because its client closed its connection (or the connection failed) still
    answers a ``DELETE`` from its owner with 200 rather than 404: browser clients close their
    connection first, then send the ``DELETE`` (npm ``whip-whep``'s ``stop()`` does), and the
    server reaps the session on the DTLS ``close_notify`` before the request arrives. Other
    requests get 404 at once; at most *max_sessions* ended resources are remembered.
    *allow_origin*: the CORS ``Access-Control-Allow-Origin`` of every answer.
    """

    prefix: str = attrs.field(default="/whip", validator=_check_prefix)
    max_sessions: int = attrs.field(default=32, validator=attrs.validators.ge(1))
    max_body_bytes: int = attrs.field(default=64 * 1024, validator=attrs.validators.ge(1024))
    connect_timeout: float = attrs.field(default=20.0, validator=_positive)
    delete_grace: float = attrs.field(default=30.0, validator=_positive)
    allow_origin: str = "*"


@attrs.frozen(kw_only=True)
class WhepConfig(WhipConfig):
    """Limits and timeouts of a WHEP endpoint: those of :class:`WhipConfig`, mounted under
    ``/whep``; *max_sessions* counts WHEP viewers (64 by default)."""

    prefix: str = attrs.field(default="/whep", validator=_check_prefix)
    max_sessions: int = attrs.field(default=64, validator=attrs.validators.ge(1))


def problem(status: int, detail: str) -> WhipError:
    """The :class:`~rtckit.errors.WhipError` refusing a request with *status*."""
    return WhipError(detail, status=status, title=_TITLES.get(status, "Error"))


def problem_body(error: WhipError) -> bytes:
    """The ``application/problem+json`` body (RFC 9457) of *error*."""
    body: dict[str, object] = {"type": "about:blank", "title": error.title}
    body.update(status=error.status, detail=str(error))
    return json.dumps(body).encode()


# --- requests ------------------------------------------------------------------------------


def check_content_type(content_type: str | None, expected: str) -> None:
    """Refuse (415) a body whose ``Content-Type`` is not *expected* (parameters ignored)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    if media != expected:
        raise problem(415, f"the body must be {expected}, not {media or 'untyped'}")


def check_body(body: bytes, limit: int) -> str:
    """The text of *body*: refused if larger than *limit* (413) or not UTF-8 (400)."""
    if len(body) > limit:
        raise problem(413, f"the body has more than {limit} bytes")
    try:
        return body.decode()
    except UnicodeDecodeError:
        raise problem(400, "the body is not UTF-8 text") from None


def parse_bearer(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header (``None`` without a header).

    Another scheme or a malformed value is refused (401): a client that sends credentials
    must learn they were not understood rather than be admitted as anonymous.
    """
    if authorization is None:
        return None
    scheme, _, token = authorization.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or not re.fullmatch(r"[A-Za-z0-9\-._~+/]+=*", token):
        raise problem(401, "the Authorization header must be 'Bearer <token>'")
    return token


def new_resource_id() -> str:
    """An unguessable session resource id (128 random bits, URL-safe)."""
    return secrets.token_urlsafe(16)


def new_etag() -> str:
    """A new strong entity tag (quoted, as it goes in ``ETag``)."""
    return f'"{secrets.token_urlsafe(12)}"'


def check_if_match(if_match: str | None, etag: str) -> None:
    """Check the ``If-Match`` of a trickle ``PATCH`` against the session's *etag*.

    ``*`` asks for an ICE restart (RFC 9725 section 4.3.2): refused with 422, as aiortc
    cannot restart ICE in place. Missing: 428. Not naming *etag* (a list may): 412.
    """
    if if_match is None:
        raise problem(428, f"a PATCH must carry If-Match: {etag} (the ETag of the session)")
    tags = [tag.strip() for tag in if_match.split(",")]
    if "*" in tags:
        raise problem(422, "ICE restart is not supported: start a new session instead")
    if etag not in tags and f"W/{etag}" not in tags:
        raise problem(412, "If-Match names another ICE session than this one")


# --- SDP -----------------------------------------------------------------------------------

_MEDIA_KINDS: Final = ("audio", "video")
_DIRECTIONS: Final = ("sendrecv", "sendonly", "recvonly", "inactive")


@attrs.frozen(kw_only=True)
class OfferSummary:
    """What a WHIP offer publishes: its media kinds and mids in m-line order (at most one of
    each kind), and its ICE username fragment (session level, else the first m-line's)."""

    kinds: tuple[str, ...]
    mids: tuple[str, ...]
    ufrag: str | None = None


def _lines(text: str) -> list[str]:
    return [line for line in text.replace("\r\n", "\n").split("\n") if line]


def parse_offer(sdp: str) -> OfferSummary:
    """Check a WHIP offer; refuse a malformed one (400) or one rtckit cannot publish (422).

    A WHIP offer publishes at most one audio and one video track: every m-line is audio or
    video, each sends (``sendonly``/``sendrecv``, RFC 9725 section 4.2), and there is at least
    one. SDP details (codecs, ICE credentials, fingerprints) are checked when it is applied.
    """
    return _parse_offer(sdp, "WHIP", ("sendonly", "sendrecv"), "sends media")


def parse_whep_offer(sdp: str) -> OfferSummary:
    """Check a WHEP offer; refuse a malformed one (400) or one rtckit cannot play (422).

    A WHEP offer receives at most one audio and one video track: every m-line is audio or
    video, each receives (``recvonly``, or ``sendrecv``: the server sends nothing back on it),
    and there is at least one. Codecs are checked when it is applied.
    """
    return _parse_offer(sdp, "WHEP", ("recvonly", "sendrecv"), "receives media")


def _parse_offer(sdp: str, protocol: str, directions: tuple[str, ...], must: str) -> OfferSummary:
    lines = _lines(sdp)
    if not lines or lines[0].strip() != "v=0" or not any(ln.startswith("o=") for ln in lines):
        raise problem(400, "the body is not an SDP offer (it must start with v=0 and have o=)")
    kinds: list[str] = []
    mids: list[str] = []
    sections: list[list[str]] = []
    for line in lines:
        if len(line) < 2 or line[1] != "=":
            raise problem(400, f"malformed SDP line {line[:40]!r}")
        if line.startswith("m="):
            sections.append([line])
        elif sections:
            sections[-1].append(line)
    if not sections:
        raise problem(422, "the offer has no audio or video m-line")
    for section in sections:
        fields = section[0][2:].split()
        if len(fields) < 4:
            raise problem(400, f"malformed m-line {section[0][:40]!r}")
        kind = fields[0]
        if kind not in _MEDIA_KINDS:
            raise problem(422, f"a {protocol} session here carries audio and video, not {kind}")
        if kind in kinds:
            raise problem(422, f"the offer has more than one {kind} m-line (one of each only)")
        found = [ln[2:] for ln in section if ln[2:] in _DIRECTIONS]
        direction = found[-1] if found else "sendrecv"
        if direction not in directions:
            raise problem(422, f"the {kind} m-line is {direction}: a {protocol} offer {must}")
        mid = next((ln[6:].strip() for ln in section if ln.startswith("a=mid:")), None)
        if not mid:
            raise problem(400, f"the {kind} m-line has no a=mid")
        kinds.append(kind)
        mids.append(mid)
    ufrag = next((ln[12:].strip() for ln in lines if ln.startswith("a=ice-ufrag:")), None)
    return OfferSummary(kinds=tuple(kinds), mids=tuple(mids), ufrag=ufrag)


@attrs.frozen(kw_only=True)
class TrickledCandidate:
    """One ``a=candidate`` of a fragment: its text (without ``a=``) and its m-line."""

    candidate: str
    mid: str | None
    mline_index: int


@attrs.frozen(kw_only=True)
class SdpFragment:
    """An ``application/trickle-ice-sdpfrag`` body (RFC 8840 section 9)."""

    ufrag: str | None
    pwd: str | None
    candidates: tuple[TrickledCandidate, ...]
    end_of_candidates: bool


def parse_sdp_fragment(text: str) -> SdpFragment:
    """Parse a trickle fragment; a malformed one is refused (400).

    Session-level ``a=ice-ufrag``/``a=ice-pwd`` apply to every m-line; the m-line of each
    candidate is the one it follows (its ``a=mid``, else its index in the fragment).
    """
    ufrag = pwd = None
    found: list[tuple[str, int]] = []  # (candidate, m-line index)
    mids: dict[int, str] = {}
    end = False
    mline = -1
    for line in _lines(text):
        if line.startswith("m="):
            mline += 1
        elif line.startswith("a=mid:"):
            if mline >= 0 and line[6:].strip():
                mids[mline] = line[6:].strip()
        elif line.startswith("a=ice-ufrag:"):
            ufrag = line[12:].strip()
        elif line.startswith("a=ice-pwd:"):
            pwd = line[10:].strip()
        elif line.startswith("a=candidate:"):
            if mline < 0:
                raise problem(400, "a candidate before any m-line in the fragment")
            found.append((line[2:].strip(), mline))
        elif line.strip() == "a=end-of-candidates":
            end = True
        elif len(line) < 2 or line[1] != "=":
            raise problem(400, f"malformed fragment line {line[:40]!r}")
        if len(found) > _MAX_FRAGMENT_CANDIDATES:
            raise problem(400, f"more than {_MAX_FRAGMENT_CANDIDATES} candidates in one PATCH")
    candidates = [TrickledCandidate(candidate=c, mid=mids.get(i), mline_index=i) for c, i in found]
    return SdpFragment(ufrag=ufrag, pwd=pwd, candidates=tuple(candidates), end_of_candidates=end)


# --- ICE servers ---------------------------------------------------------------------------


def _quoted(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


def ice_server_links(servers: Iterable[Mapping[str, Any]]) -> list[str]:
    """The ``Link`` field values announcing *servers* (``RTCIceServer`` dicts), one per URL.

    .. code-block:: python

        from rtckit.whip.protocol import ice_server_links

        server = {"urls": "turn:turn.example.org", "username": "u", "credential": "p"}
        assert ice_server_links([server]) == [
            '<turn:turn.example.org>; rel="ice-server"; username="u"; credential="p"; '
            'credential-type="password"'
        ]
    """
    links: list[str] = []
    for server in servers:
        urls = server.get("urls", ())
        if isinstance(urls, str):
            urls = [urls]
        username, credential = server.get("username"), server.get("credential")
        for url in urls:
            values = [str(url), str(username or ""), str(credential or "")]
            if any(ch in value for value in values for ch in "\r\n\x00") or any(
                ch in str(url) for ch in '<> "'
            ):
                raise ConfigurationError(f"ICE server URL {url!r} cannot go in a Link header")
            link = f'<{url}>; rel="ice-server"'
            if str(url).startswith(("turn:", "turns:")) and username and credential:
                link += (
                    f"; username={_quoted(str(username))}; credential={_quoted(str(credential))}"
                    '; credential-type="password"'
                )
            links.append(link)
    return links


_TOKEN: Final = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


def _split_links(value: str) -> list[tuple[str, dict[str, str]]]:
    """The links of one ``Link`` field value (RFC 8288 section 3): ``(target, params)`` each,
    parameter names lower-cased, quoted values unescaped. Malformed: 502."""
    links: list[tuple[str, dict[str, str]]] = []
    pos, end = 0, len(value)

    def bad(why: str) -> WhipError:
        return problem(502, f"the server sent a malformed Link header ({why}): {value[:80]!r}")

    while True:
        while pos < end and value[pos] in " \t,":
            pos += 1
        if pos >= end:
            return links
        if value[pos] != "<":
            raise bad("a link must start with <")
        close = value.find(">", pos)
        if close < 0:
            raise bad("no > after the target")
        target, pos = value[pos + 1 : close], close + 1
        params: dict[str, str] = {}
        while True:
            while pos < end and value[pos] in " \t":
                pos += 1
            if pos >= end or value[pos] == ",":
                break
            if value[pos] != ";":
                raise bad("parameters are separated by ;")
            pos += 1
            while pos < end and value[pos] in " \t":
                pos += 1
            name = _TOKEN.match(value, pos)
            if name is None:
                raise bad("a parameter without a name")
            pos = name.end()
            while pos < end and value[pos] in " \t":
                pos += 1
            text = ""
            if pos < end and value[pos] == "=":
                pos += 1
                while pos < end and value[pos] in " \t":
                    pos += 1
                if pos < end and value[pos] == '"':
                    chars: list[str] = []
                    pos += 1
                    while pos < end and value[pos] != '"':
                        if value[pos] == "\\" and pos + 1 < end:
                            pos += 1
                        chars.append(value[pos])
                        pos += 1
                    if pos >= end:
                        raise bad("an unterminated quoted string")
                    pos += 1
                    text = "".join(chars)
                else:
                    token = _TOKEN.match(value, pos)
                    if token is None:
                        raise bad(f"no value for {name.group()}")
                    text, pos = token.group(), token.end()
            params.setdefault(name.group().lower(), text)  # the first occurrence counts
        links.append((target, params))


def parse_ice_server_links(values: Iterable[str]) -> list[dict[str, Any]]:
    """The ``RTCIceServer`` dicts announced by the ``Link`` field *values* of a WHIP answer.

    The inverse of :func:`ice_server_links`: one dict per ``rel="ice-server"`` link, with
    ``urls`` (a one-element list), and ``username`` / ``credential`` when the link carries
    both (TURN with ``credential-type="password"``, the only type RFC 9725 defines). Links
    with another relation are skipped; a ``rel`` may list several relation types. A malformed
    field value, or an ICE server URL with a line break, is refused (502).

    .. code-block:: python

        from rtckit.whip.protocol import ice_server_links, parse_ice_server_links

        servers = [
            {"urls": ["stun:stun.example.org"]},
            {"urls": ["turn:turn.example.org"], "username": "u", "credential": "p;\\"x"},
        ]
        assert parse_ice_server_links(ice_server_links(servers)) == servers
    """
    servers: list[dict[str, Any]] = []
    for value in values:
        for target, params in _split_links(value):
            if "ice-server" not in params.get("rel", "").lower().split():
                continue
            if not target or any(ch in target for ch in "\r\n\x00 "):
                raise problem(502, f"the server announced a malformed ICE server {target!r}")
            server: dict[str, Any] = {"urls": [target]}
            kind = params.get("credential-type", "password").lower()
            if "username" in params and "credential" in params and kind == "password":
                server["username"] = params["username"]
                server["credential"] = params["credential"]
            servers.append(server)
    return servers
