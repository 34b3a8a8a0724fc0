"""Simulcast in SDP (RFC 8853 ``a=simulcast``, RFC 8851 ``a=rid``): pure text, no I/O.

A browser that sends simulcast offers, on its video m-line, one ``a=rid:<rid> send`` line per
encoding and ``a=simulcast:send <rid>;<rid>;...``. The receiving side accepts the layers by
answering ``a=rid:<rid> recv`` and ``a=simulcast:recv ...`` with the same RIDs, and must repeat
both in every later offer it makes, or the browser falls back to one layer. aiortc's SDP code
knows neither attribute: it drops them when it parses a description and never writes them.
:func:`simulcast_send_layers` reads the layers a remote description sends;
:func:`add_simulcast_recv` writes the receiving side's lines into a local description.

Remote input is bounded: at most :data:`MAX_LAYERS` RIDs per m-line are kept, and a RID
that is not 1 to 16 letters, digits, ``-`` or ``_`` makes the m-line count as not simulcast.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Final

__all__ = [
    "MAX_LAYERS",
    "REPAIRED_RID_URI",
    "RID_URI",
    "add_simulcast_recv",
    "simulcast_send_layers",
]

#: the RTP header extensions naming a simulcast layer (RFC 8852)
RID_URI: Final = "urn:ietf:params:rtp-hdrext:sdes:rtp-stream-id"
REPAIRED_RID_URI: Final = "urn:ietf:params:rtp-hdrext:sdes:repaired-rtp-stream-id"
#: layers kept per m-line (browsers send at most 3 or 4)
MAX_LAYERS: Final = 4

_RID = re.compile(r"[A-Za-z0-9_-]{1,16}")
_RECEIVING = ("sendrecv", "recvonly")


def _sections(sdp: str) -> tuple[str, list[list[str]]]:
    """The newline and the SDP's lines cut into the session part and one list per m-line."""
    newline = "\r\n" if "\r\n" in sdp else "\n"
    lines = sdp.split(newline)
    trailing = lines and lines[-1] == ""
    if trailing:
        lines.pop()
    sections: list[list[str]] = [[]]
    for line in lines:
        if line.startswith("m="):
            sections.append([])
        sections[-1].append(line)
    return newline, sections


def _mid(section: list[str]) -> str | None:
    for line in section:
        if line.startswith("a=mid:"):
            return line[6:].strip()
    return None


def simulcast_send_layers(sdp: str) -> dict[str, tuple[str, ...]]:
    """The simulcast layers each video m-line of a remote *sdp* sends: mid -> RIDs.

    The RIDs are in the order of the ``a=simulcast:send`` list (rtckit.js lists the lowest
    resolution first); of alternatives (``a,b``) the first is kept, and a paused layer
    (``~a``) counts as a layer. Only RIDs that also have an ``a=rid:<rid> send`` line count.
    An m-line with fewer than two valid layers is left out.
    """
    _, sections = _sections(sdp)
    found: dict[str, tuple[str, ...]] = {}
    for section in sections[1:]:
        if not section[0].startswith("m=video"):
            continue
        mid = _mid(section)
        declared: set[str] = set()
        listed: list[str] = []
        valid = True
        for line in section:
            if line.startswith("a=rid:"):
                parts = line[6:].split()
                if len(parts) >= 2 and parts[1] == "send":
                    declared.add(parts[0])
            elif line.startswith("a=simulcast:"):
                parts = line[12:].split()
                if len(parts) >= 2 and parts[0] == "send":
                    for entry in parts[1].split(";")[: MAX_LAYERS + 1]:
                        rid = entry.split(",")[0].lstrip("~")
                        if not _RID.fullmatch(rid):
                            valid = False
                        listed.append(rid)
        layers = tuple(dict.fromkeys(r for r in listed if r in declared))
        if mid is not None and valid and 2 <= len(layers) <= MAX_LAYERS:
            found[mid] = layers
    return found


def add_simulcast_recv(sdp: str, layers: Mapping[str, tuple[str, ...]]) -> str:
    """*sdp* (a local description) with ``a=rid:<rid> recv`` and ``a=simulcast:recv`` lines.

    Added to each m-line whose mid is in *layers* and that receives (``sendrecv`` or
    ``recvonly``), right after its ``a=mid`` line; an m-line that already has an
    ``a=simulcast`` line is left as it is. Line endings are kept as found.
    """
    if not layers:
        return sdp
    newline, sections = _sections(sdp)
    for section in sections[1:]:
        mid = _mid(section)
        rids = layers.get(mid) if mid is not None else None
        if not rids or any(line.startswith("a=simulcast:") for line in section):
            continue
        if not any(line[2:] in _RECEIVING for line in section if line.startswith("a=")):
            continue
        at = next(i for i, line in enumerate(section) if line.startswith("a=mid:")) + 1
        added = [f"a=rid:{rid} recv" for rid in rids]
        added.append("a=simulcast:recv " + ";".join(rids))
        section[at:at] = added
    text = newline.join(line for section in sections for line in section)
    return text + newline if sdp.endswith(newline) else text
