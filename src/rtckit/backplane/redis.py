"""A :class:`~rtckit.backplane.base.Backplane` on redis-server (Redis 7) through redis-py's
asyncio client: :class:`RedisBackplane` and its :class:`RedisBackplaneConfig`.

Needs the ``redis`` extra (``pip install rtckit[redis]``).

What lives in Redis (``<ns>`` is :attr:`RedisBackplaneConfig.namespace`; user-supplied parts
are escaped by :func:`rtckit.backplane.keys.escape`):

* ``<ns>:nodes``, a sorted set: one member per live node, its score the expiry of its liveness
  in milliseconds of *Redis' own clock* (``TIME`` inside a Lua script, so the nodes' clocks
  never matter); ``<ns>:nodeinfo``, a hash: each node's record
  ``<version>:<incarnation>:<load>:<public URL>`` (the URL may be empty). Every node refreshes
  its entry every :attr:`~RedisBackplaneConfig.heartbeat_interval`; the same script removes
  every lapsed entry and announces it on ``<ns>:events`` (``<node>:<incarnation>``), so each
  lapse is reported once. A node whose entry is gone when it comes to refresh it (it was paused,
  or cut off, longer than :attr:`~RedisBackplaneConfig.node_ttl`) reports ``on_state(False)``,
  drops its subscription (posts already buffered for it are discarded: their senders have been
  told it is down), registers anew under a new incarnation and reports ``on_state(True)``.
* ``<ns>:node:<node>``, a channel per node. The posts to one node within one turn of the
  event loop go there as one ``PUBLISH``, a *batch*: the header ``<version>:<sender>:`` then
  each opaque payload framed by its length (``rtckit.backplane._redis_wire``), in the order
  they were posted. The batches go out at the end of that turn on the backplane's own
  connection, in order, without waiting for the replies to the previous ones; one task reads
  the replies, and a ``PUBLISH`` that reached no subscriber reports the node unreachable.
  Another task reads this node's channel straight from its connection. (redis-py opens and
  authenticates both connections; its per-command Python path cost about as much CPU as
  writing the ``PUBLISH``.) What is queued or unanswered is bounded
  (:attr:`~RedisBackplaneConfig.max_queued_posts`,
  :attr:`~RedisBackplaneConfig.max_queued_bytes`).
* ``<ns>:lease:<key>`` holds ``<epoch>:<node>`` with a millisecond expiry, and
  ``<ns>:epoch:<key>`` the counter whose ``INCR`` gives each new holder its epoch. Acquire
  (set if absent), renew (extend if the value is unchanged) and release (compare and delete)
  are Lua scripts, so each is atomic. The epoch counter stays when the lease goes, so that an
  epoch is never given twice: one small key per lease key ever used.

Versions: :data:`PROTOCOL_VERSION` is in every node record and every post. Nodes are
compatible when their versions are equal. A node ignores a live node of another version (it
is not in :meth:`RedisBackplane.live_nodes`, posts from it are dropped) and logs it once, so
that a rolling upgrade across an incompatible version shows in the logs rather than as lost
messages.

Outages: when Redis cannot be reached the backplane reports ``on_state(False)`` once, with
one log line, refuses posts (``on_unreachable``), raises
:class:`~rtckit.errors.BackplaneError` from lease calls and reconnects with exponential
backoff between :attr:`~RedisBackplaneConfig.reconnect_min` and
:attr:`~RedisBackplaneConfig.reconnect_max`; once back it subscribes, registers and reports
``on_state(True)``. Every node saw the outage (a restarted Redis drops every connection and
forgets every node), so a node back first reports ``on_node_down`` for the nodes not yet
registered again: each of them went through its own ``on_state(False)`` and comes back under a
new incarnation, as after a lapse.

The handler is called from the backplane's tasks; an exception it raises is logged (it is the
handler's bug) and delivery goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import re
import secrets
from collections import deque
from collections.abc import Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs
import redis.asyncio as aioredis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError

from rtckit.backplane import _redis_wire, keys
from rtckit.backplane.base import BackplaneHandler, Lease, NodeId, check_public_url
from rtckit.errors import BackplaneError, ConfigurationError

if TYPE_CHECKING:
    from rtckit.backplane.journal_redis import RedisJournal

__all__ = ["PROTOCOL_VERSION", "RedisBackplane", "RedisBackplaneConfig", "check_node_id"]

log = logging.getLogger(__name__)

#: The version of what nodes write to Redis and post to each other; nodes are compatible
#: when theirs are equal. (3: the node record ends with the node's public URL.)
PROTOCOL_VERSION = 3

_NAMESPACE = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_MAX_NODE_ID = 128
_BATCH = 256  # posts per PUBLISH, at most
_READ_SIZE = 256 * 1024
_DOWN_ERRORS = (RedisError, OSError, TimeoutError)

# Shared head of the liveness scripts. KEYS: nodes, nodeinfo. ARGV[1]: the events channel.
# Removes every lapsed entry (score <= now, Redis' clock) and announces it once.
_PRUNE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function prune()
  for _, node in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
    local record = redis.call('HGET', KEYS[2], node) or ''
    local incarnation = string.match(record, '^[^:]*:([^:]*):') or ''
    redis.call('ZREM', KEYS[1], node)
    redis.call('HDEL', KEYS[2], node)
    redis.call('PUBLISH', ARGV[1], node .. ':' .. incarnation)
  end
end
local function live()
  local out = {}
  for _, node in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
    out[#out + 1] = node
    out[#out + 1] = redis.call('HGET', KEYS[2], node) or ''
  end
  return out
end
"""

# ARGV: events channel, node, ttl ms, record, mode ('renew', 'register' or 'read').
# Returns {1, node, record, ...} (the live nodes), or {0} when mode is 'renew' and this
# node's own entry had lapsed or was gone (it is not renewed then).
_HEARTBEAT = (
    _PRUNE
    + """
if ARGV[5] == 'renew' then
  local score = redis.call('ZSCORE', KEYS[1], ARGV[2])
  if (not score) or tonumber(score) <= now then
    prune()
    return {0}
  end
end
prune()
if ARGV[5] ~= 'read' then
  redis.call('ZADD', KEYS[1], now + tonumber(ARGV[3]), ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[2], ARGV[4])
end
local out = live()
table.insert(out, 1, 1)
return out
"""
)

# ARGV: events channel, node, incarnation. Withdraws the node's entry if it is still this
# incarnation's, and announces it.
_LEAVE = """
local record = redis.call('HGET', KEYS[2], ARGV[2]) or ''
if string.match(record, '^[^:]*:([^:]*):') == ARGV[3] then
  redis.call('ZREM', KEYS[1], ARGV[2])
  redis.call('HDEL', KEYS[2], ARGV[2])
  redis.call('PUBLISH', ARGV[1], ARGV[2] .. ':' .. ARGV[3])
end
return 1
"""

# KEYS: lease, epoch counter. ARGV: node, ttl ms. Returns the holder's value.
_ACQUIRE = """
local held = redis.call('GET', KEYS[1])
if held then return held end
local value = redis.call('INCR', KEYS[2]) .. ':' .. ARGV[1]
redis.call('SET', KEYS[1], value, 'PX', ARGV[2])
return value
"""

# KEYS: lease. ARGV: expected value, ttl ms.
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""

# KEYS: lease. ARGV: expected value.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


def _check_url(_instance: object, _attribute: object, value: str) -> None:
    if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
        raise ConfigurationError(f"Redis URL must be redis://, rediss:// or unix://, not {value!r}")


def _safe_url(url: str) -> str:
    parts = urlsplit(url)
    netloc = parts.netloc
    userinfo, at, host = netloc.rpartition("@")
    if at:
        user, colon, _password = userinfo.partition(":")
        netloc = f"{user}:***@{host}" if colon else netloc
    return f"{parts.scheme}://{netloc}{parts.path}"


def _check_namespace(_instance: object, _attribute: object, value: str) -> None:
    if not _NAMESPACE.fullmatch(value):
        raise ConfigurationError(f"namespace must be 1 to 64 of A-Z a-z 0-9 _ . -, not {value!r}")


def check_node_id(node_id: str) -> None:
    """Raise :class:`~rtckit.errors.ConfigurationError` unless *node_id* is a valid node id:
    1 to 128 printable ASCII characters, no ``:``."""
    if (
        not 1 <= len(node_id) <= _MAX_NODE_ID
        or not node_id.isascii()
        or not node_id.isprintable()
        or ":" in node_id
    ):
        raise ConfigurationError(
            f"node id must be 1 to {_MAX_NODE_ID} printable ASCII characters without ':', "
            f"not {node_id!r}"
        )


def _check_node_id(_instance: object, _attribute: object, value: str) -> None:
    check_node_id(value)


def _random_node_id() -> str:
    return f"node-{secrets.token_hex(6)}"


def _check_interval(instance: RedisBackplaneConfig, _attribute: object, value: float) -> None:
    if not 0 < value < instance.node_ttl:
        raise ConfigurationError(
            f"heartbeat_interval must be above 0 and below node_ttl ({instance.node_ttl} s), "
            f"not {value}"
        )


def _check_backoff(instance: RedisBackplaneConfig, _attribute: object, value: float) -> None:
    if value < instance.reconnect_min:
        raise ConfigurationError(
            f"reconnect_max ({value} s) must not be below reconnect_min "
            f"({instance.reconnect_min} s)"
        )


_positive = attrs.validators.gt(0)
_positive_time = attrs.validators.gt(0.0)


@attrs.frozen(kw_only=True)
class RedisBackplaneConfig:
    """How a :class:`RedisBackplane` reaches Redis and keeps its node live."""

    url: str = attrs.field(
        default="redis://127.0.0.1:6379/0",
        validator=_check_url,
        repr=lambda url: repr(_safe_url(url)),
    )
    """redis-py's URL (``redis://[[user]:password@]host:port/db``, ``rediss://`` for TLS,
    ``unix://path``). Logs and errors show it without its password."""
    namespace: str = attrs.field(default="rtckit", validator=_check_namespace)
    """The prefix of every key and channel. Deployments with distinct namespaces share a
    Redis without seeing each other."""
    node_id: NodeId = attrs.field(factory=_random_node_id, validator=_check_node_id)
    """This node's id, unique among the live nodes (random by default)."""
    node_ttl: float = attrs.field(default=5.0, validator=_positive_time)
    """Seconds after its last heartbeat at which a node counts as down for the others."""
    heartbeat_interval: float = attrs.field(
        default=attrs.Factory(lambda self: self.node_ttl / 3, takes_self=True),
        validator=_check_interval,
    )
    """Seconds between heartbeats (``node_ttl / 3`` by default). A node that dies is
    reported down within ``node_ttl + heartbeat_interval``."""
    max_queued_posts: int = attrs.field(default=10_000, validator=_positive)
    """Posts waiting to be sent, at most; over it :meth:`RedisBackplane.post` reports the
    node unreachable."""
    max_queued_bytes: int = attrs.field(default=16 * 1024 * 1024, validator=_positive)
    """Payload bytes waiting to be sent, at most (same as :attr:`max_queued_posts`)."""
    command_timeout: float = attrs.field(default=2.0, validator=_positive_time)
    """Seconds a connection or a command may take before Redis counts as unreachable."""
    reconnect_min: float = attrs.field(default=0.1, validator=_positive_time)
    """First delay, in seconds, before reconnecting after an outage; doubled after each
    failed attempt..."""
    reconnect_max: float = attrs.field(default=5.0, validator=_check_backoff)
    """... up to this many seconds."""

    @property
    def safe_url(self) -> str:
        """:attr:`url` without password or query (what logs, errors and ``repr`` show)."""
        return _safe_url(self.url)


@attrs.frozen
class _Record:
    version: int
    incarnation: str
    load: float
    url: str


def _parse_record(record: bytes) -> _Record | None:
    try:
        version, incarnation, rest = record.decode("ascii").split(":", 2)
        load, _, url = rest.partition(":")  # an older version has no URL
        return _Record(int(version), incarnation, float(load), url)
    except (UnicodeDecodeError, ValueError):
        return None


def _describe(exc: BaseException) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class _LapsedError(Exception):
    """This node's own liveness entry lapsed or was removed."""


class RedisBackplane:
    """A node of a deployment whose nodes share a redis-server (see the module docstring).

    An async context manager (it closes on exit); :meth:`start` connects and starts
    delivering to the handler (the signaling router gives it)::

        async with RedisBackplane(RedisBackplaneConfig(url=url)) as backplane:
            await backplane.start(handler)
            ...
    """

    def __init__(self, config: RedisBackplaneConfig | None = None) -> None:
        self._config = config if config is not None else RedisBackplaneConfig()
        namespace = self._config.namespace
        self._node_id = self._config.node_id
        self._nodes_key = keys.nodes_key(namespace)
        self._info_key = keys.info_key(namespace)
        self._events = keys.events_channel(namespace)
        self._events_b = self._events.encode()
        self._channel = keys.channel_name(namespace, self._node_id)
        self._channel_b = self._channel.encode()
        self._prefix = f"{PROTOCOL_VERSION}:{self._node_id}:".encode("ascii")
        self._version_b = str(PROTOCOL_VERSION).encode()
        self._handler: BackplaneHandler | None = None
        self._client: aioredis.Redis | None = None
        self._pubsub: Any = None
        self._scripts: dict[str, Any] = {}
        self._incarnation = ""
        self._up = False
        self._closed = False
        self._supervisor: asyncio.Task[None] | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._queue: deque[tuple[NodeId, bytes]] = deque()
        self._queued_bytes = 0
        self._flush_scheduled = False
        self._out: asyncio.StreamWriter | None = None  # the writer's connection, when open
        # per command written on the writer's connection, in order: (node, posts) for a
        # PUBLISH, the future of its reply for a script (run_scripts_now)
        self._unanswered: deque[tuple[NodeId, int] | asyncio.Future[Any]] = deque()
        self._shas: dict[str, bytes] = {}  # script -> SHA1, for EVALSHA on that connection
        self._unanswered_posts = 0
        self._channels: dict[NodeId, bytes] = {}
        self._unreachable: dict[NodeId, None] = {}
        self._unreachable_scheduled = False
        self._beat_lock = asyncio.Lock()
        self._valid_until = 0.0
        self._known: dict[NodeId, str] = {}  # live node -> its incarnation
        self._gone: dict[tuple[NodeId, str], None] = {}  # incarnations reported down
        self._held: dict[str, Lease] = {}
        self._load = 0.0
        self._url = ""
        self._warned_versions: set[tuple[NodeId, bytes]] = set()
        self._warned_frames: set[bytes] = set()
        self._warned_batches: set[bytes] = set()
        self.dropped_posts = 0
        """Posts received that were not delivered (another version, or malformed)."""

    # --- Backplane -------------------------------------------------------------------------

    @property
    def node_id(self) -> NodeId:
        """This node's id."""
        return self._node_id

    @property
    def up(self) -> bool:
        """Whether Redis is reachable and this node is registered as live."""
        return self._up

    @property
    def known_nodes(self) -> frozenset[NodeId]:
        """The other live nodes this node saw at its last heartbeat (those it will report
        with ``on_node_down`` when they go)."""
        return frozenset(self._known)

    @property
    def config(self) -> RedisBackplaneConfig:
        """The configuration."""
        return self._config

    async def __aenter__(self) -> RedisBackplane:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def start(self, handler: BackplaneHandler) -> None:
        """Connect, subscribe, register this node and deliver to *handler*.

        Raises :class:`~rtckit.errors.BackplaneError` (naming the URL without its password)
        if Redis cannot be reached.
        """
        if self._closed:
            raise BackplaneError("this backplane is closed")
        if self._handler is not None:
            raise RuntimeError("already started")
        self._handler = handler
        try:
            await self._open_session()
        except (*_DOWN_ERRORS, _LapsedError) as exc:
            await self._close_session()
            self._handler = None
            raise BackplaneError(
                f"cannot reach Redis at {self._config.safe_url}: {_describe(exc)}"
            ) from None
        self._up = True
        log.info("node %s joined the Redis backplane at %s", self._node_id, self._where)
        self._supervisor = asyncio.get_running_loop().create_task(
            self._supervise(), name=f"rtckit-redis-backplane-{self._node_id}"
        )

    async def aclose(self) -> None:
        """Stop delivering, release the leases held, withdraw this node (the others learn it
        at once) and disconnect. Idempotent."""
        if self._closed:
            return
        self._closed = True
        if self._supervisor is not None:
            await _stop([self._supervisor, *self._tasks])
            self._supervisor = None
        if self._up and self._client is not None:
            try:
                for lease in list(self._held.values()):
                    await self._script("release", [self._lease_key(lease.key)], [_value(lease)])
                await self._script(
                    "leave",
                    [self._nodes_key, self._info_key],
                    [self._events, self._node_id, self._incarnation],
                )
            except _DOWN_ERRORS as exc:
                log.warning("node %s could not withdraw from Redis: %s", self._node_id, exc)
        self._held.clear()
        self._up = False
        self._queue.clear()
        self._queued_bytes = 0
        for entry in self._unanswered:
            if isinstance(entry, asyncio.Future) and not entry.done():
                entry.set_exception(BackplaneError("the Redis backplane was closed"))
        self._unanswered.clear()
        self._unanswered_posts = 0
        await self._close_session()

    def post(self, node: NodeId, payload: bytes) -> None:
        """Queue *payload* for *node* (see :meth:`rtckit.backplane.base.Backplane.post`)."""
        size = len(payload)
        out = self._out
        if (
            not self._up
            or len(self._queue) + self._unanswered_posts >= self._config.max_queued_posts
            or self._queued_bytes
            + size
            + (out.transport.get_write_buffer_size() if out is not None else 0)
            > self._config.max_queued_bytes
        ):
            self._report_unreachable(node)
            return
        self._queue.append((node, payload))
        self._queued_bytes += size
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    def set_load(self, load: float) -> None:
        """Publish *load* with this node's next heartbeat (``inf``: draining)."""
        if not load >= 0:
            raise ValueError(f"load must be a non-negative number or inf, not {load}")
        self._load = float(load)

    async def live_nodes(self) -> dict[NodeId, float]:
        """The live nodes of this version (this one included) and their published loads.

        Raises :class:`~rtckit.errors.BackplaneError` while Redis is unreachable."""
        result = await self._script(
            "heartbeat",
            [self._nodes_key, self._info_key],
            [self._events, self._node_id, 0, b"", "read"],
        )
        live: dict[NodeId, float] = {}
        for node, record in self._pairs(result[1:]):
            parsed = _parse_record(record)
            if parsed is not None and parsed.version == PROTOCOL_VERSION:
                live[node] = self._load if node == self._node_id else parsed.load
        return live

    def set_public_url(self, url: str) -> None:
        """Publish *url* with this node's next heartbeat (``""``: none)."""
        self._url = check_public_url(url)

    async def public_url(self, node: NodeId) -> str | None:
        """The public URL live node *node* of this version published, if any.

        Raises :class:`~rtckit.errors.BackplaneError` while Redis is unreachable."""
        if node == self._node_id:
            return self._url or None
        result = await self._script(
            "heartbeat",
            [self._nodes_key, self._info_key],
            [self._events, self._node_id, 0, b"", "read"],
        )
        for live, record in self._pairs(result[1:]):
            parsed = _parse_record(record)
            if live == node and parsed is not None and parsed.version == PROTOCOL_VERSION:
                return parsed.url or None
        return None

    async def acquire(self, key: str, ttl: float) -> Lease:
        """Take lease *key* for *ttl* seconds if it is free; else return its holder's."""
        value = await self._script(
            "acquire",
            [self._lease_key(key), keys.epoch_key(self._config.namespace, key)],
            [self._node_id, _milliseconds(ttl)],
        )
        lease = _lease(key, value)
        if lease.node == self._node_id:
            self._held[key] = lease
        return lease

    async def renew(self, lease: Lease, ttl: float) -> bool:
        """Extend *lease* by *ttl* seconds if this node still holds it with its epoch."""
        if lease.node != self._node_id:
            return False
        renewed = bool(
            await self._script(
                "renew", [self._lease_key(lease.key)], [_value(lease), _milliseconds(ttl)]
            )
        )
        if not renewed and self._held.get(lease.key) == lease:
            del self._held[lease.key]
        return renewed

    async def release(self, lease: Lease) -> bool:
        """Give *lease* up if it is still held with its epoch (compare and delete)."""
        if lease.node != self._node_id:
            return False
        if self._held.get(lease.key) == lease:
            del self._held[lease.key]
        return bool(await self._script("release", [self._lease_key(lease.key)], [_value(lease)]))

    async def holder(self, key: str) -> Lease | None:
        """Who holds lease *key* now, or ``None``."""
        value = await self._script("get", [self._lease_key(key)], [])
        return None if value is None else _lease(key, value)

    def journal(self, ttl: float = 60.0) -> RedisJournal:
        """The rooms' session journals on this Redis (see
        :mod:`rtckit.backplane.journal_redis`); a journal not refreshed for *ttl* seconds
        expires."""
        from rtckit.backplane.journal_redis import RedisJournal

        return RedisJournal(self, ttl)

    async def run_scripts(self, script: str, calls: list[tuple[list[str], list[Any]]]) -> list[Any]:
        """Run the Lua *script* once per ``(keys, args)`` in *calls*, concurrently; return
        their results in order (raises :class:`~rtckit.errors.BackplaneError` if Redis
        cannot be reached or refuses one)."""
        client = self._client
        if not self._up or client is None:
            raise BackplaneError(f"the Redis backplane at {self._where} is down")
        registered = self._scripts.get(script)
        if registered is None:
            registered = self._scripts[script] = client.register_script(script)
        try:
            if len(calls) == 1:
                script_keys, args = calls[0]
                return [await registered(keys=script_keys, args=args)]
            return list(
                await asyncio.gather(
                    *(registered(keys=script_keys, args=args) for script_keys, args in calls)
                )
            )
        except _DOWN_ERRORS as exc:
            raise BackplaneError(f"Redis at {self._where}: {_describe(exc)}") from exc

    async def run_scripts_now(
        self, script: str, calls: list[tuple[list[str], list[Any]]]
    ) -> list[int | bytes | None]:
        """:meth:`run_scripts` for scripts whose replies are integers or strings, on the
        connection that carries this node's posts (written with them, without redis-py's
        per-command path: the hot path of the session journal)."""
        sha = self._shas.get(script)
        if sha is None:
            client = self._client
            if not self._up or client is None:
                raise BackplaneError(f"the Redis backplane at {self._where} is down")
            try:
                loaded: Any = await client.script_load(script)
            except _DOWN_ERRORS as exc:
                raise BackplaneError(f"Redis at {self._where}: {_describe(exc)}") from exc
            sha = self._shas[script] = str(
                loaded if not isinstance(loaded, bytes) else loaded.decode()
            ).encode()
        out = self._out
        if out is None or out.transport.is_closing():  # the writer's connection is not open
            return list(await self.run_scripts(script, calls))
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Any]] = []
        for script_keys, args in calls:
            out.write(_redis_wire.command(b"EVALSHA", sha, len(script_keys), *script_keys, *args))
            future = loop.create_future()
            futures.append(future)
            self._unanswered.append(future)
        results: list[int | bytes | None] = []
        for future in futures:
            reply = await future
            if isinstance(reply, _redis_wire.RespError):
                if str(reply).startswith("NOSCRIPT"):
                    self._shas.pop(script, None)  # Redis restarted: load it again next time
                raise BackplaneError(f"Redis at {self._where}: {reply}")
            if isinstance(reply, list):
                raise BackplaneError(f"Redis at {self._where}: an array where none was due")
            results.append(reply)
        return results

    # --- connection ------------------------------------------------------------------------

    @property
    def _where(self) -> str:
        return self._config.safe_url

    def _lease_key(self, key: str) -> str:
        return keys.lease_key(self._config.namespace, key)

    async def _script(self, name: str, script_keys: list[str], args: list[Any]) -> Any:
        if not self._up or self._client is None:
            raise BackplaneError(f"the Redis backplane at {self._where} is down")
        try:
            return await self._scripts[name](keys=script_keys, args=args)
        except _DOWN_ERRORS as exc:
            raise BackplaneError(f"Redis at {self._where}: {_describe(exc)}") from exc

    async def _open_session(self) -> None:
        """Connect, subscribe (confirmed) and register under a new incarnation."""
        timeout = self._config.command_timeout
        client = aioredis.Redis.from_url(
            self._config.url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0),
            retry_on_timeout=False,
            health_check_interval=0,
        )
        self._client = client
        self._shas = {}
        self._scripts = {
            "heartbeat": client.register_script(_HEARTBEAT),
            "leave": client.register_script(_LEAVE),
            "acquire": client.register_script(_ACQUIRE),
            "renew": client.register_script(_RENEW),
            "release": client.register_script(_RELEASE),
            "get": _Get(client),
        }
        self._pubsub = client.pubsub()
        await self._pubsub.subscribe(self._channel, self._events)
        confirmed = 0
        async with asyncio.timeout(timeout):
            while confirmed < 2:
                message = await self._pubsub.get_message(timeout=timeout)
                if message is not None and message["type"] == "subscribe":
                    confirmed += 1
        self._incarnation = secrets.token_hex(4)
        await self._beat("register")

    async def _close_session(self) -> None:
        pubsub, client = self._pubsub, self._client
        self._pubsub = self._client = None
        self._scripts = {}
        for resource in (pubsub, client):
            if resource is not None:
                with contextlib.suppress(*_DOWN_ERRORS):
                    await resource.aclose()

    async def _supervise(self) -> None:
        """Run a session's tasks; when one fails, go down and reconnect with backoff."""
        while True:
            self._tasks = tasks = [
                asyncio.create_task(self._read_loop(), name="rtckit-redis-reader"),
                asyncio.create_task(self._write_loop(), name="rtckit-redis-writer"),
                asyncio.create_task(self._beat_loop(), name="rtckit-redis-heartbeat"),
            ]
            try:
                done, _pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            finally:
                await _stop(tasks)
            failure = next(iter(done)).exception()
            lapsed = isinstance(failure, _LapsedError)
            if failure is not None and not isinstance(failure, (*_DOWN_ERRORS, _LapsedError)):
                log.error("Redis backplane task failed", exc_info=failure)
            await self._go_down(failure)
            delay = self._config.reconnect_min
            while True:
                if not lapsed:
                    await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                lapsed = False
                try:
                    await self._open_session()
                    break
                except (*_DOWN_ERRORS, _LapsedError) as exc:
                    log.debug("reconnecting to Redis at %s failed: %s", self._where, exc)
                    await self._close_session()
                    delay = min(delay * 2, self._config.reconnect_max)
            self._up = True
            log.warning("Redis backplane at %s is up again (node %s)", self._where, self._node_id)
            self._notify(lambda handler: handler.on_state(True))

    async def _go_down(self, failure: BaseException | None) -> None:
        if self._up:
            self._up = False
            if isinstance(failure, _LapsedError):
                log.warning(
                    "node %s: %s; re-registering on the Redis backplane", self._node_id, failure
                )
            else:
                log.warning(
                    "Redis backplane at %s is down (%s): cross-node posts refused, reconnecting",
                    self._where,
                    _describe(failure) if failure is not None else "connection closed",
                )
            self._notify(lambda handler: handler.on_state(False))
        for entry in self._unanswered:
            if isinstance(entry, asyncio.Future):
                if not entry.done():
                    entry.set_exception(BackplaneError(f"Redis at {self._where} went down"))
            else:
                self._report_unreachable(entry[0])
        for node, _ in self._queue:
            self._report_unreachable(node)
        self._unanswered.clear()
        self._unanswered_posts = 0
        self._queue.clear()
        self._queued_bytes = 0
        await self._close_session()

    def _notify(self, call: Callable[[BackplaneHandler], None]) -> None:
        """Call the handler; its exceptions are its own bug, logged, never fatal here."""
        if self._handler is None or self._closed:
            return
        try:
            call(self._handler)
        except Exception:
            log.exception("the backplane handler of node %s raised", self._node_id)

    # --- posts -----------------------------------------------------------------------------

    def _report_unreachable(self, node: NodeId) -> None:
        """Call ``on_unreachable(node)`` soon (once for any number of refusals in one turn of
        the loop; never from inside :meth:`post`, so that a handler posting again does not
        recurse)."""
        self._unreachable[node] = None
        if not self._unreachable_scheduled:
            self._unreachable_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush_unreachable)

    def _flush_unreachable(self) -> None:
        self._unreachable_scheduled = False
        nodes, self._unreachable = list(self._unreachable), {}
        for node in nodes:
            self._notify(lambda handler, node=node: handler.on_unreachable(node))  # type: ignore[misc]

    def _channel_of(self, node: NodeId) -> bytes:
        channel = self._channels.get(node)
        if channel is None:
            if len(self._channels) >= 4096:
                self._channels.clear()
            channel = keys.channel_name(self._config.namespace, node).encode()
            self._channels[node] = channel
        return channel

    def _flush(self) -> None:
        """Write what was posted in this turn of the loop: one ``PUBLISH`` per node (per
        :data:`_BATCH` posts), in one write, without waiting for replies."""
        self._flush_scheduled = False
        out = self._out
        if out is None or not self._queue:
            return  # the writer's connection is not open yet: it flushes once it is
        if out.transport.is_closing():  # lost: the writer task ends, the session goes down
            for node, _payload in self._queue:
                self._report_unreachable(node)
            self._queue.clear()
            self._queued_bytes = 0
            return
        batches: dict[NodeId, list[bytes]] = {}
        for node, payload in self._queue:
            batches.setdefault(node, []).append(payload)
        self._queue.clear()
        self._queued_bytes = 0
        commands = []
        for node, payloads in batches.items():
            channel = self._channel_of(node)
            for start in range(0, len(payloads), _BATCH):
                batch = payloads[start : start + _BATCH]
                commands.append(_redis_wire.publish(channel, _redis_wire.join(self._prefix, batch)))
                self._unanswered.append((node, len(batch)))
                self._unanswered_posts += len(batch)
        out.write(b"".join(commands))

    async def _write_loop(self) -> None:
        """The writer: opens its own connection, where :meth:`_flush` writes the posts, and
        reads the replies, in order (a ``PUBLISH`` that reached nobody: the node is
        unreachable)."""
        assert self._client is not None
        connection = await self._client.connection_pool.get_connection()  # type: ignore[no-untyped-call]
        reader, self._out = _streams(connection)
        replies = _redis_wire.RespReader()
        try:
            self._flush()
            while True:
                for reply in _feed(replies, await reader.read(_READ_SIZE)):
                    if isinstance(reply, list):
                        continue  # a RESP3 push (none is asked for): never a reply
                    if not self._unanswered:
                        raise RedisConnectionError(f"a reply to no command: {reply!r:.60}")
                    entry = self._unanswered.popleft()
                    if isinstance(entry, asyncio.Future):  # a script's (run_scripts_now)
                        if not entry.done():
                            entry.set_result(reply)
                        continue
                    node, posts = entry
                    self._unanswered_posts -= posts
                    if isinstance(reply, _redis_wire.RespError):
                        log.warning("Redis refused a PUBLISH to node %s: %s", node, reply)
                        self._report_unreachable(node)
                    elif reply == 0:
                        self._report_unreachable(node)
        finally:
            self._out = None

    async def _read_loop(self) -> None:
        """The reader of this node's subscription: posts for this node and departures of
        nodes, read straight from its connection."""
        reader, _writer = _streams(self._pubsub.connection)
        pushes = _redis_wire.RespReader()
        loop = asyncio.get_running_loop()
        while True:
            for push in _feed(pushes, await reader.read(_READ_SIZE)):
                if not (isinstance(push, list) and len(push) == 3 and push[0] == b"message"):
                    continue
                if loop.time() > self._valid_until:
                    # paused (or starved) past this node's own TTL: whatever is buffered may
                    # have been sent to a node the others already dropped
                    await self._beat("renew")
                channel, data = push[1], push[2]
                if not isinstance(data, bytes):
                    continue
                if channel == self._channel_b:
                    self._deliver(data)
                elif channel == self._events_b:
                    self._on_departure(data)

    def _deliver(self, data: bytes) -> None:
        first = data.find(b":")
        second = data.find(b":", first + 1) if first >= 0 else -1
        version = data[:first] if first >= 0 else data[:16]
        sender = data[first + 1 : second]
        if version != self._version_b or second < 0 or not sender.isascii():
            self.dropped_posts += 1
            if version not in self._warned_frames and len(self._warned_frames) < 16:
                self._warned_frames.add(version)
                log.warning(
                    "node %s dropped a post of backplane version %r (this node runs %d): "
                    "nodes of different versions cannot talk (further ones are counted)",
                    self._node_id,
                    version[:16],
                    PROTOCOL_VERSION,
                )
            return
        try:
            payloads = _redis_wire.split(data, second + 1)
        except ValueError as exc:
            self.dropped_posts += 1
            if sender not in self._warned_batches and len(self._warned_batches) < 1024:
                self._warned_batches.add(sender)
                log.warning(
                    "node %s dropped a malformed batch of posts from %r (%s; further ones "
                    "are counted)",
                    self._node_id,
                    sender[:_MAX_NODE_ID].decode("ascii"),
                    exc,
                )
            return
        node = sender.decode("ascii")
        for payload in payloads:
            self._notify(lambda handler, payload=payload: handler.on_message(node, payload))  # type: ignore[misc]

    # --- liveness --------------------------------------------------------------------------

    async def _beat_loop(self) -> None:
        while True:
            await asyncio.sleep(self._config.heartbeat_interval)
            await self._beat("renew")

    async def _beat(self, mode: str) -> None:
        """Refresh (or register, or check) this node's entry and apply the live list."""
        assert self._client is not None
        config = self._config
        record = f"{PROTOCOL_VERSION}:{self._incarnation}:{self._load!r}:{self._url}"
        async with self._beat_lock:
            sent = asyncio.get_running_loop().time()
            result = await self._scripts["heartbeat"](
                keys=[self._nodes_key, self._info_key],
                args=[self._events, self._node_id, _milliseconds(config.node_ttl), record, mode],
            )
            if result[0] == 0:
                raise _LapsedError(
                    f"its liveness lapsed (paused or cut off for more than {config.node_ttl} s)"
                )
            self._valid_until = sent + config.node_ttl
            self._apply_live(result[1:])

    def _pairs(self, flat: list[bytes]) -> list[tuple[NodeId, bytes]]:
        return [(flat[i].decode("ascii", "replace"), flat[i + 1]) for i in range(0, len(flat), 2)]

    def _apply_live(self, flat: list[bytes]) -> None:
        live: dict[NodeId, str] = {}
        for node, record in self._pairs(flat):
            if node == self._node_id:
                continue
            parsed = _parse_record(record)
            if parsed is None or parsed.version != PROTOCOL_VERSION:
                self._warn_version(node, record)
                continue
            if (node, parsed.incarnation) not in self._gone:
                live[node] = parsed.incarnation
        for node, incarnation in list(self._known.items()):
            if live.get(node) != incarnation:
                self._node_down(node, incarnation)
        for node, incarnation in live.items():
            self._known.setdefault(node, incarnation)

    def _on_departure(self, data: bytes) -> None:
        node_b, _, incarnation_b = data.rpartition(b":")
        node = node_b.decode("ascii", "replace")
        incarnation = incarnation_b.decode("ascii", "replace")
        if node == self._node_id:
            if incarnation == self._incarnation and not self._closed:
                raise _LapsedError("its liveness entry was removed by another node (it had lapsed)")
            return
        if self._known.get(node) == incarnation:
            self._node_down(node, incarnation)
        else:
            self._remember_gone(node, incarnation)

    def _node_down(self, node: NodeId, incarnation: str) -> None:
        del self._known[node]
        self._remember_gone(node, incarnation)
        self._notify(lambda handler: handler.on_node_down(node))

    def _remember_gone(self, node: NodeId, incarnation: str) -> None:
        self._gone[(node, incarnation)] = None
        while len(self._gone) > 4096:
            del self._gone[next(iter(self._gone))]

    def _warn_version(self, node: NodeId, record: bytes) -> None:
        version = record.split(b":", 1)[0][:16]
        if (node, version) in self._warned_versions or len(self._warned_versions) >= 1024:
            return
        self._warned_versions.add((node, version))
        log.warning(
            "node %s: live node %s runs backplane version %r, this node runs %d: they are "
            "not compatible and ignore each other",
            self._node_id,
            node,
            version.decode("ascii", "replace"),
            PROTOCOL_VERSION,
        )


def _streams(connection: Any) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The streams of a connected redis-py connection.

    redis-py keeps them in private attributes (``_reader`` and ``_writer``, redis-py 8.2);
    ``tests/integration/test_backplane_redis.py`` fails loudly if they move.
    """
    reader = getattr(connection, "_reader", None)
    writer = getattr(connection, "_writer", None)
    if not isinstance(reader, asyncio.StreamReader) or not isinstance(writer, asyncio.StreamWriter):
        raise RedisConnectionError(
            f"no streams on redis-py's {type(connection).__name__} (not connected, or "
            "redis-py moved its private _reader/_writer: see rtckit.backplane.redis)"
        )
    return reader, writer


def _feed(reader: _redis_wire.RespReader, data: bytes) -> list[_redis_wire.Reply]:
    """The replies completed by *data*; a closed or garbled connection raises (an outage)."""
    if not data:
        raise RedisConnectionError("Redis closed the connection")
    try:
        return reader.feed(data)
    except ValueError as exc:
        raise RedisConnectionError(f"Redis sent what is not RESP: {exc}") from None


class _Get:
    """A plain GET with the scripts' calling convention."""

    def __init__(self, client: aioredis.Redis) -> None:
        self._client = client

    async def __call__(self, *, keys: list[str], args: list[Any]) -> Any:
        del args
        return await self._client.get(keys[0])


async def _stop(tasks: list[asyncio.Task[None]]) -> None:
    """Cancel *tasks* and wait until they end, cancelling again those still running.

    Once is not always enough: a cancellation that arrives just as an ``asyncio.timeout``
    inside redis-py expires can come out as a ``TimeoutError``, which
    ``PubSub.get_message(timeout=...)`` takes for "no message" (seen on Python 3.11 with
    redis-py 8.2: ``aclose`` then waited for ever on the reader, one run in three).
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=0.1)
    for task in tasks:  # several may fail of one outage (the reader and the writer both
        if not task.cancelled():  # see the connection close): the supervisor reports one
            task.exception()


def _milliseconds(seconds: float) -> int:
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"a TTL must be a positive number of seconds, not {seconds}")
    return max(1, round(seconds * 1000))


def _value(lease: Lease) -> str:
    return f"{lease.epoch}:{lease.node}"


def _lease(key: str, value: bytes) -> Lease:
    epoch, _, node = value.decode("ascii").partition(":")
    return Lease(key=key, node=node, epoch=int(epoch))
