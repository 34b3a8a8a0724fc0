"""Redis key and channel names of a backplane, built from user-supplied parts (pure).

A room name becomes part of a lease key (``rtckit:lease:<room>``). Left as it is, two rooms
could share a key (``a:b`` against the key of room ``a`` plus a suffix) and a name with glob
characters (``a*``) would match other keys in any ``SCAN``/``KEYS``/``PSUBSCRIBE`` pattern
an operator or a tool writes. :func:`escape` makes every part safe: it is injective (distinct
parts never give the same text) and its output holds only ``A-Z a-z 0-9 - _ . %``, so no
``:`` separator, no glob character (``* ? [ ] \\``) and no space survive in it.
"""

from __future__ import annotations

__all__ = [
    "SAFE",
    "channel_name",
    "epoch_key",
    "escape",
    "events_channel",
    "info_key",
    "lease_key",
    "nodes_key",
]

#: The characters :func:`escape` keeps as they are (``%`` introduces an escape).
SAFE = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.")


def escape(part: str) -> str:
    """*part* with every character outside :data:`SAFE` written as ``%XX`` per UTF-8 byte.

    Injective because ``%`` itself is escaped: the result decodes back to *part* one way only.
    Lone surrogates (not encodable in UTF-8) are escaped through ``surrogatepass``.
    """
    if all(character in SAFE for character in part):
        return part
    out = []
    for character in part:
        if character in SAFE:
            out.append(character)
        else:
            out.extend(f"%{byte:02X}" for byte in character.encode("utf-8", "surrogatepass"))
    return "".join(out)


def nodes_key(namespace: str) -> str:
    """The sorted set of live nodes (member: node id, score: expiry in ms, Redis' clock)."""
    return f"{namespace}:nodes"


def info_key(namespace: str) -> str:
    """The hash of each live node's record (field: node id, value: version and load)."""
    return f"{namespace}:nodeinfo"


def events_channel(namespace: str) -> str:
    """The channel on which node departures are announced to every node."""
    return f"{namespace}:events"


def channel_name(namespace: str, node: str) -> str:
    """The channel on which *node* receives the posts for it."""
    return f"{namespace}:node:{escape(node)}"


def lease_key(namespace: str, key: str) -> str:
    """The string holding lease *key* (value: ``<epoch>:<node>``, with an expiry)."""
    return f"{namespace}:lease:{escape(key)}"


def epoch_key(namespace: str, key: str) -> str:
    """The counter whose ``INCR`` gives lease *key* its next epoch."""
    return f"{namespace}:epoch:{escape(key)}"
