"""Read the browser client's ES modules from Python: what they export, and the constants.

Used by ``tests/test_browser_client.py`` (exports and the Python <-> JavaScript parity of
``rtckit/constants.js``) and ``tests/test_docs_snippets.py`` (the docs' imports). A small
regex reading, enough for the plain style these modules keep on purpose: top-level
``export const|function|class NAME`` and ``export { A, B } from "./x.js"``.
"""

from __future__ import annotations

import json
import posixpath
import re
from typing import Any

from rtckit.signaling.browser import CLIENT_SCRIPT

#: What ``rtckit.js`` exported when it was one file; pages and the docs import these names.
ENTRY_EXPORTS = frozenset(
    {
        "AUTO_QUALITY_WIDTHS",
        "CLIENT_AGENT",
        "VIDEO_LAYER_MESSAGE",
        "VIDEO_OFF",
        "VIDEO_QUALITY_MESSAGE",
        "ErrorCode",
        "HEARTBEAT_CHANNEL_ID",
        "HEARTBEAT_LABEL",
        "MCU_PEER_ID",
        "McuRoom",
        "MeshRoom",
        "PROTOCOL_VERSION",
        "PeerSession",
        "ROOM_CHANNEL_ID",
        "ROOM_CHANNEL_LABEL",
        "RtcKitSignaling",
        "SFU_PEER_ID",
        "SIMULCAST_LAYERS",
        "SfuRoom",
        "SignalingError",
        "connectSignaling",
        "fromSignaling",
        "joinMcu",
        "joinMesh",
        "joinRoom",
        "joinSfu",
        "openEnvelope",
        "participantOfMsid",
        "politeFor",
        "qualityForWidth",
        "roomStrategies",
        "sealEnvelope",
        "toSignaling",
    }
)

_DEFINED = re.compile(r"^export (?:async )?(?:const|function|class) (\w+)", re.MULTILINE)
_REEXPORT = re.compile(r'^export \{([^}]*)\} from "(\.{1,2}/[^"]+)";', re.MULTILINE)
_CONST = re.compile(r"^export const (\w+) = (.*?);$", re.MULTILINE | re.DOTALL)


def without_comments(text: str) -> str:
    """*text* without ``/* ... */`` blocks and whole-line ``//`` comments."""
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.DOTALL)
    return re.sub(r"(?m)^\s*//.*$", "", text)


def exports(modules: dict[str, str], name: str = CLIENT_SCRIPT) -> dict[str, str]:
    """The names module *name* exports, each to the module that defines it (following
    ``export { ... } from "./..."`` re-exports through *modules*)."""
    text = modules[name]
    found = dict.fromkeys(_DEFINED.findall(text), name)
    for names, relative in _REEXPORT.findall(text):
        target = posixpath.normpath(posixpath.join(posixpath.dirname(name), relative))
        assert target in modules, f"{name} re-exports from {relative}, which is not served"
        defined = exports(modules, target)
        for exported in (n.strip() for n in names.split(",")):
            if exported:
                assert exported in defined, f"{name}: {target} does not export {exported}"
                found[exported] = defined[exported]
    return found


def _value(literal: str) -> Any:
    """A JSON-like JavaScript literal, possibly in ``Object.freeze(...)`` or ``new Set(...)``."""
    literal = literal.strip()
    is_set = False
    if match := re.fullmatch(r"Object\.freeze\((.*)\)", literal, re.DOTALL):
        literal = match.group(1)
    elif match := re.fullmatch(r"new Set\((.*)\)", literal, re.DOTALL):
        literal, is_set = match.group(1), True
    literal = re.sub(r"(?m)^(\s*)([A-Za-z_]\w*):", r'\1"\2":', literal)  # bare keys
    literal = re.sub(r",(\s*[}\]])", r"\1", literal)  # trailing commas
    value = json.loads(literal)
    return set(value) if is_set else value


def constants(text: str) -> dict[str, Any]:
    """The ``export const NAME = <literal>;`` of a constants module, parsed."""
    return {name: _value(literal) for name, literal in _CONST.findall(without_comments(text))}
