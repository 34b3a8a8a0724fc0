"""The rooms' session journals on redis-server (a
:class:`~rtckit.backplane.journal.JournalStore` for
:meth:`RedisBackplane.journal <rtckit.backplane.redis.RedisBackplane.journal>`).

Keys of room *r* (its escaped name in braces, so that one room's keys share a hash slot):

* ``<ns>:journal:{r}:s``: hash, peer id -> the session's fixed part (JSON);
* ``<ns>:journal:{r}:c``: hash of counters, ``o:<peer>`` last ``seq`` sent, ``a:<peer>`` last
  ``seq`` acknowledged, ``i:<peer>`` last client ``seq`` processed;
* ``<ns>:journal:{r}:o:<peer>``: stream, the session's outbox: entry id ``<seq>-0``, fields
  ``t`` (text), ``k`` (type), ``f`` and ``r`` (sender and sender's seq, empty if none);
* ``<ns>:journals``: hash, room -> its lease key and key prefix (to find orphaned rooms).

Each room's records are applied by one Lua script, so that ``seq``, append and
acknowledgement bookkeeping are one atomic step, and only while the room's lease holds with the
writer's epoch (fencing). An ``ack`` trims the stream (``XTRIM MINID``); nothing else trims it.
The outbox's bound is the state machine's (``max_pending``, ``max_pending_bytes``: relays
beyond it are refused with ``backlog_full`` before anything is appended), which the stream
mirrors exactly because the lease holder is its only writer. Every key expires unless its
room's home refreshes it (with the lease). The index hash is outside the rooms' slots: on a
Redis Cluster it would need its own care (not supported: the backplane speaks to one Redis).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from rtckit.backplane import keys
from rtckit.backplane.base import Lease
from rtckit.backplane.journal import (
    Pending,
    Record,
    RoomSnapshot,
    SessionSnapshot,
    decode_session,
    encode_session,
)

if TYPE_CHECKING:
    from rtckit.backplane.redis import RedisBackplane

__all__ = ["RedisJournal"]

# Operands of each record kind after (op, peer).
_ARITY = {"J": 1, "O": 5, "A": 1, "I": 1, "L": 0, "S": 2}

# KEYS: lease, room prefix, index. ARGV: lease value, ttl ms, room, mode ('write' or
# 'replace': drop the room's journal first), then records (op, peer, operands...).
# Returns 1, or 0 if the lease does not hold with that value; an error (nothing applied) for
# records out of step with the journal (a seq out of order, a session it lacks: the journal
# was lost, e.g. Redis restarted empty; the writer then writes the room whole).
_WRITE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local p = KEYS[2]
local s, c = p .. ':s', p .. ':c'
local replace = ARGV[4] == 'replace'
local arity = {J = 1, O = 5, A = 1, I = 1, L = 0, S = 2}
local n = #ARGV
-- first check every record (a script's writes are not undone by an error after them)
local last = {}
local i = 5
while i <= n do
  local op, peer = ARGV[i], ARGV[i + 1]
  if not arity[op] then return redis.error_reply('rtckit journal: unknown record ' .. op) end
  if op == 'J' then
    last[peer] = 0
  else
    if last[peer] == nil then
      if (not replace) and redis.call('HEXISTS', s, peer) == 1 then
        last[peer] = tonumber(redis.call('HGET', c, 'o:' .. peer) or '0')
      else
        last[peer] = false
      end
    end
    if last[peer] == false then
      return redis.error_reply('rtckit journal: record ' .. op .. ' for a session it lacks')
    end
    if op == 'O' then
      local seq = tonumber(ARGV[i + 2])
      if seq ~= last[peer] + 1 then
        return redis.error_reply('rtckit journal: seq ' .. seq .. ' after ' .. last[peer])
      end
      last[peer] = seq
    elseif op == 'S' then
      last[peer] = tonumber(ARGV[i + 2])
    elseif op == 'L' then
      last[peer] = false
    end
  end
  i = i + 2 + arity[op]
end
if replace then
  for _, peer in ipairs(redis.call('HKEYS', s)) do redis.call('DEL', p .. ':o:' .. peer) end
  redis.call('DEL', s, c)
end
local ttl = ARGV[2]
local touched = {}
local joined, left = replace, false
i = 5
while i <= n do
  local op, peer = ARGV[i], ARGV[i + 1]
  local o = p .. ':o:' .. peer
  if op == 'J' then
    redis.call('HSET', s, peer, ARGV[i + 2])
    redis.call('HSET', c, 'o:' .. peer, 0, 'a:' .. peer, 0, 'i:' .. peer, 0)
    redis.call('DEL', o)
    joined = true
  elseif op == 'O' then
    redis.call('XADD', o, ARGV[i + 2] .. '-0', 't', ARGV[i + 3], 'k', ARGV[i + 4],
      'f', ARGV[i + 5], 'r', ARGV[i + 6])
    redis.call('HSET', c, 'o:' .. peer, ARGV[i + 2])
    if replace or ARGV[i + 2] == '1' then touched[o] = true end  -- a new stream
  elseif op == 'A' then
    local ack = tonumber(ARGV[i + 2])
    if ack > tonumber(redis.call('HGET', c, 'a:' .. peer) or '0') then
      redis.call('XTRIM', o, 'MINID', (ack + 1) .. '-0')
      redis.call('HSET', c, 'a:' .. peer, ack)
    end
  elseif op == 'I' then
    redis.call('HSET', c, 'i:' .. peer, ARGV[i + 2])
  elseif op == 'S' then
    redis.call('HSET', c, 'o:' .. peer, ARGV[i + 2], 'a:' .. peer, ARGV[i + 3])
  else -- 'L'
    redis.call('HDEL', s, peer)
    redis.call('HDEL', c, 'o:' .. peer, 'a:' .. peer, 'i:' .. peer)
    redis.call('DEL', o)
    touched[o] = nil
    left = true
  end
  i = i + 2 + arity[op]
end
if left and redis.call('HLEN', s) == 0 then
  redis.call('DEL', s, c)
  redis.call('HDEL', KEYS[3], ARGV[3])
  return 1
end
-- new keys get their TTL here; the home's refresh (with each lease renewal) extends them all
if joined then
  redis.call('PEXPIRE', s, ttl)
  redis.call('PEXPIRE', c, ttl)
  redis.call('HSET', KEYS[3], ARGV[3], KEYS[1] .. '\\n' .. p)
end
for key in pairs(touched) do redis.call('PEXPIRE', key, ttl) end
return 1
"""

# KEYS: lease, room prefix. ARGV: lease value, ttl ms.
_REFRESH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
local p = KEYS[2]
if redis.call('PEXPIRE', p .. ':s', ARGV[2]) == 0 then return 0 end
redis.call('PEXPIRE', p .. ':c', ARGV[2])
for _, peer in ipairs(redis.call('HKEYS', p .. ':s')) do
  redis.call('PEXPIRE', p .. ':o:' .. peer, ARGV[2])
end
return 1
"""

# KEYS: room prefix. Returns {sessions (flat hash), counters (flat hash), peer, entries, ...}.
_LOAD = """
local p = KEYS[1]
local out = {redis.call('HGETALL', p .. ':s'), redis.call('HGETALL', p .. ':c')}
for _, peer in ipairs(redis.call('HKEYS', p .. ':s')) do
  out[#out + 1] = peer
  out[#out + 1] = redis.call('XRANGE', p .. ':o:' .. peer, '-', '+')
end
return out
"""

# KEYS: index. ARGV: limit. Returns rooms with a journal and no lease (drops stale entries).
_ORPHANS = """
local out = {}
local flat = redis.call('HGETALL', KEYS[1])
for i = 1, #flat, 2 do
  local room, where = flat[i], flat[i + 1]
  local lease, prefix = string.match(where, '^(.-)\\n(.*)$')
  if (not lease) or redis.call('EXISTS', prefix .. ':s') == 0 then
    redis.call('HDEL', KEYS[1], room)
  elseif redis.call('EXISTS', lease) == 0 then
    out[#out + 1] = room
    if #out >= tonumber(ARGV[1]) then break end
  end
end
return out
"""


class RedisJournal:
    """The session journals of a :class:`~rtckit.backplane.redis.RedisBackplane`'s
    deployment (see the module)."""

    def __init__(self, backplane: RedisBackplane, ttl: float) -> None:
        self._backplane = backplane
        self._namespace = backplane.config.namespace
        self._ttl = ttl
        self._index = f"{self._namespace}:journals"
        self._prefixes: dict[str, str] = {}  # room -> its keys' prefix
        self._lease_keys: dict[str, str] = {}  # lease -> its key

    def _prefix(self, room: str) -> str:
        prefix = self._prefixes.get(room)
        if prefix is None:
            if len(self._prefixes) >= 4096:
                self._prefixes.clear()
            prefix = self._prefixes[room] = f"{self._namespace}:journal:{{{keys.escape(room)}}}"
        return prefix

    def _lease_key(self, lease: Lease) -> str:
        key = self._lease_keys.get(lease.key)
        if key is None:
            if len(self._lease_keys) >= 4096:
                self._lease_keys.clear()
            key = self._lease_keys[lease.key] = keys.lease_key(self._namespace, lease.key)
        return key

    async def write(self, batches: Sequence[tuple[str, Lease, Sequence[Record]]]) -> set[str]:
        """See :meth:`JournalStore.write <rtckit.backplane.journal.JournalStore.write>`."""
        calls = [
            (room, self._call(room, lease, "write", _flatten(records)))
            for room, lease, records in batches
        ]
        results = await self._backplane.run_scripts_now(_WRITE, [call for _room, call in calls])
        return {room for (room, _call), result in zip(calls, results, strict=True) if not result}

    async def replace(self, room: str, lease: Lease, snapshot: RoomSnapshot | None) -> bool:
        """See :meth:`JournalStore.replace <rtckit.backplane.journal.JournalStore.replace>`."""
        records: list[Record] = []
        for session in () if snapshot is None else snapshot.sessions:
            peer = session.peer_id
            first = session.outbox[0][0] - 1 if session.outbox else session.out_seq
            records.append(Record("J", room, peer, (encode_session(session.data),)))
            records.append(Record("S", room, peer, (first, first)))
            records.append(Record("I", room, peer, (session.in_seq,)))
            records.extend(Record("O", room, peer, pending) for pending in session.outbox)
        (result,) = await self._backplane.run_scripts_now(
            _WRITE, [self._call(room, lease, "replace", _flatten(records))]
        )
        return bool(result)

    async def refresh(self, room: str, lease: Lease, ttl: float) -> bool:
        """See :meth:`JournalStore.refresh <rtckit.backplane.journal.JournalStore.refresh>`."""
        (result,) = await self._backplane.run_scripts(
            _REFRESH,
            [
                (
                    [self._lease_key(lease), self._prefix(room)],
                    [_lease_value(lease), _ms(max(ttl, self._ttl))],
                )
            ],
        )
        return bool(result)

    async def load(self, room: str) -> RoomSnapshot | None:
        """See :meth:`JournalStore.load <rtckit.backplane.journal.JournalStore.load>`."""
        (raw,) = await self._backplane.run_scripts(_LOAD, [([self._prefix(room)], [])])
        sessions_flat, counters_flat, *streams = raw
        data = _pairs(sessions_flat)
        if not data:
            return None
        counters = {key.decode(): int(value) for key, value in _pairs(counters_flat).items()}
        outboxes: dict[str, tuple[Pending, ...]] = {}
        for peer, entries in zip(streams[::2], streams[1::2], strict=True):
            outboxes[peer.decode()] = tuple(_pending(entry) for entry in entries)
        return RoomSnapshot(
            room=room,
            sessions=tuple(
                SessionSnapshot(
                    peer_id=peer.decode(),
                    data=decode_session(text),
                    out_seq=counters.get(f"o:{peer.decode()}", 0),
                    in_seq=counters.get(f"i:{peer.decode()}", 0),
                    outbox=outboxes.get(peer.decode(), ()),
                )
                for peer, text in data.items()
            ),
        )

    async def orphans(self, limit: int) -> list[str]:
        """See :meth:`JournalStore.orphans <rtckit.backplane.journal.JournalStore.orphans>`."""
        (found,) = await self._backplane.run_scripts(_ORPHANS, [([self._index], [limit])])
        return [room.decode() for room in found]

    def _call(
        self, room: str, lease: Lease, mode: str, flat: list[str | int]
    ) -> tuple[list[str], list[Any]]:
        return (
            [self._lease_key(lease), self._prefix(room), self._index],
            [_lease_value(lease), _ms(self._ttl), room, mode, *flat],
        )


def _flatten(records: Sequence[Record]) -> list[str | int]:
    flat: list[str | int] = []
    for op, _room, peer, args in records:
        if len(args) != _ARITY[op]:
            raise ValueError(f"record {op} takes {_ARITY[op]} operands, not {len(args)}")
        flat.append(op)
        flat.append(peer)
        flat.extend("" if arg is None else arg for arg in args)
    return flat


def _pairs(flat: list[bytes]) -> dict[bytes, bytes]:
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _pending(entry: list[Any]) -> Pending:
    entry_id, fields = entry
    values = _pairs(fields)
    origin = values.get(b"f", b"").decode()
    origin_seq = values.get(b"r", b"")
    return (
        int(entry_id.split(b"-")[0]),
        values[b"t"].decode(),
        values[b"k"].decode(),
        origin or None,
        int(origin_seq) if origin_seq else None,
    )


def _lease_value(lease: Lease) -> str:
    return f"{lease.epoch}:{lease.node}"


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))
