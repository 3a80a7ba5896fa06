"""Redis bus for distributed mode: one Lua script numbers, stores and publishes messages.

The model is Centrifugo's Redis broker (``internal/redis/broker.go``, its ``addHistorySource``
script): per channel a hash holds the ``epoch`` and the ``seq`` counter, a stream holds the
history (``XADD ... MAXLEN ~ N`` with the explicit id ``<seq>-0``), and pub/sub carries the live
message. The script does all three atomically, so every bus instance on one Redis sees the same
numbering and any hub can resume any client. One call takes a run of consecutive messages of one
channel (``PUBLISH_SCRIPT``); a pipeline carries a batch's runs in order.

Wire form of a message, identical on pub/sub and in the stream's ``m`` field::

    n1 <channel> <seq> <epoch> <event_ns> <publish_ns>\\n<payload JSON>

The header is split without a JSON parser; the payload is validated with ``orjson.loads`` and
handed on either decoded (default, what engines expect) or as ``orjson.Fragment`` of the original
bytes (``payload_fragments=True``, for the hub: its encoder splices the bytes without re-encoding).

redis-py 8 defaults this module overrides on purpose: the 5 s socket timeout would break the
idle pub/sub read (the pub/sub connection has none and is watched by our own PING), and automatic
retries could append a message twice (retries are off; the publish writer retries itself, with a
per-writer publish number the script uses to recognise a retry, see ``PUBLISH_SCRIPT``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import secrets
import zlib
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.asyncio.cluster import RedisCluster
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import (
    NoScriptError,
    RedisClusterException,
    RedisError,
    ResponseError,
)

from protocol.channels import ChannelPattern, parse_channel
from protocol.errors import ProtocolError
from realtime.backoff import Backoff, BackoffPolicy, Rng
from realtime.bus.base import BusClosed, BusUnavailable, Envelope
from realtime.bus.inbox import Inbox
from realtime.clock import Clock, SystemClock
from realtime.config import described

log = logging.getLogger("nautilus.bus.redis")

WIRE_TAG = b"n1"

#: One call per run of consecutive messages of one channel in a pipeline batch (the Python cost
#: of a pipeline is per command, and Redis's per call).
#: KEYS: 1 meta hash, 2 stream.
#: ARGV: 1 pub/sub channel, 2 channel name, 3 stream MAXLEN (approximate), 4 epoch to use if the
#:       channel has none, 5 writer id, 6 PUBLISH or SPUBLISH; then per message four:
#:       payload JSON, event_ns, publish_ns, writer publish number (increasing per writer).
#: Returns {epoch, error, seq 1, duplicate 1 (0|1), seq 2, duplicate 2, ...}: error is "" when
#: every message was answered; otherwise the message after the last answered one failed with
#: it, and so does the rest of the run (nothing of them was written). A message whose (writer,
#: number) is not newer than the writer's last one on this channel is a retry: nothing is written
#: and its original seq is answered (0 if the stream's newest 1000 entries do not hold it).
#: Timestamps stay strings: Lua numbers are doubles and nanosecond times exceed 2^53.
PUBLISH_SCRIPT = """
local meta, stream = KEYS[1], KEYS[2]
local pubsub, command = ARGV[1], ARGV[6]
local epoch = redis.call('HGET', meta, 'e')
if not epoch then
  epoch = ARGV[4]
  redis.call('DEL', stream)
  redis.call('HSET', meta, 'e', epoch, 's', 0)
end
local head = 'n1 ' .. ARGV[2] .. ' '
local wfield = 'w:' .. ARGV[5]
local last = tonumber(redis.call('HGET', meta, wfield) or 0)
local written = nil -- the number of the run's last appended message (a string, as sent)
local retried = nil -- writer tag -> seq, of the stream's newest entries (read once, if needed)
local reply = {epoch, ''}
for i = 7, #ARGV, 4 do
  local number = ARGV[i + 3]
  local wtag = ARGV[5] .. ' ' .. number
  if tonumber(number) <= last then
    if not retried then
      retried = {}
      for _, entry in ipairs(redis.call('XREVRANGE', stream, '+', '-', 'COUNT', 1000)) do
        local fields = entry[2]
        for f = 1, #fields, 2 do
          if fields[f] == 'w' and not retried[fields[f + 1]] then
            retried[fields[f + 1]] = tonumber(string.match(entry[1], '^(%d+)'))
          end
        end
      end
    end
    reply[#reply + 1] = retried[wtag] or 0
    reply[#reply + 1] = 1
  else
    local seq = redis.call('HINCRBY', meta, 's', 1)
    local msg = head .. seq .. ' ' .. epoch .. ' ' .. ARGV[i + 1] .. ' ' .. ARGV[i + 2]
      .. '\\n' .. ARGV[i]
    local added = redis.pcall('XADD', stream, 'MAXLEN', '~', ARGV[3], seq .. '-0', 'm', msg,
      'w', wtag)
    if type(added) == 'table' and added.err then
      redis.call('HINCRBY', meta, 's', -1)
      reply[2] = 'stream ' .. stream .. ' is ahead of seq ' .. seq .. ': ' .. added.err
      break
    end
    redis.call(command, pubsub, msg)
    last, written = tonumber(number), number
    if retried then
      retried[wtag] = seq
    end
    reply[#reply + 1] = seq
    reply[#reply + 1] = 0
  end
end
if written then
  redis.call('HSET', meta, wfield, written)
end
return reply
"""


@dataclass(frozen=True, slots=True)
class RedisBusConfig:
    url: str = field(default="redis://127.0.0.1:6379/0", metadata=described("Redis URL"))
    key_prefix: str = field(
        default="nautilus:", metadata=described("prefix of every key and channel")
    )
    stream_maxlen: int = field(
        default=10_000, metadata=described("history kept per channel (XADD MAXLEN ~, approximate)")
    )
    connect_timeout_s: float = field(
        default=2.0, metadata=described("bound on connecting at start (BusUnavailable after it)")
    )
    socket_timeout_s: float = field(
        default=5.0, metadata=described("read timeout of commands (not of the pub/sub connection)")
    )
    health_check_interval_s: float = field(
        default=5.0,
        metadata=described("idle pub/sub is PINGed this often; dead after 2 silent ones"),
    )
    publish_timeout_s: float = field(
        default=10.0, metadata=described("how long a publish retries through an outage")
    )
    publish_batch: int = field(
        default=512,
        metadata=described("messages per pipeline round trip (one script call per channel run)"),
    )
    max_publish_queue: int = field(
        default=100_000, metadata=described("publishes waiting for Redis before publish raises")
    )
    max_pending: int = field(
        default=1_000_000, metadata=described("per-subscription buffer (drop-oldest, counted)")
    )
    reconnect_min_s: float = field(
        default=0.05,
        metadata=described("reconnect/publish retry: the first wait is drawn from [0, this]"),
    )
    reconnect_max_s: float = field(
        default=2.0, metadata=described("reconnect/publish retry: longest wait (full jitter)")
    )
    recover_batch: int = field(default=1_000, metadata=described("stream entries read per XRANGE"))
    sharded_pubsub: bool = field(
        default=False, metadata=described("SPUBLISH/SSUBSCRIBE (Redis >= 7; for Redis Cluster)")
    )
    cluster: bool = field(
        default=False,
        metadata=described("Redis Cluster: url names any one node (db 0); implies sharded pub/sub"),
    )
    pubsub_shards: int = field(
        default=16, metadata=described("sharded mode: shard channels that channels hash onto")
    )

    def __post_init__(self) -> None:
        if self.stream_maxlen < 1 or self.publish_batch < 1 or self.pubsub_shards < 1:
            raise ValueError("stream_maxlen, publish_batch and pubsub_shards must be >= 1")
        if self.connect_timeout_s <= 0 or self.health_check_interval_s <= 0:
            raise ValueError("connect_timeout_s and health_check_interval_s must be > 0")
        if self.cluster and urlsplit(self.url).path.strip("/") not in ("", "0"):
            raise ValueError("Redis Cluster has database 0 only: drop the /N from the url")
        if not 0 < self.reconnect_min_s <= self.reconnect_max_s:
            raise ValueError("need 0 < reconnect_min_s <= reconnect_max_s")

    @property
    def reconnect_backoff(self) -> BackoffPolicy:
        """Waits between reconnects and publish retries: the shared full-jitter policy."""
        return BackoffPolicy(self.reconnect_min_s, self.reconnect_max_s)

    @property
    def sharded(self) -> bool:
        """Whether channels hash onto shard channels (SPUBLISH/SSUBSCRIBE): asked, or a cluster."""
        return self.sharded_pubsub or self.cluster


def redacted_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


@dataclass(frozen=True, slots=True)
class RedisKeys:
    """Where a channel lives in Redis: ``{shard}`` hash tags keep a channel's keys and its
    sharded pub/sub channel in one Cluster slot."""

    prefix: str
    shards: int | None  # None: classic pub/sub, one Redis channel per bus channel

    def _tag(self, channel: str) -> str:
        assert self.shards is not None
        return f"{{s{zlib.crc32(channel.encode()) % self.shards}}}"

    def meta(self, channel: str) -> str:
        if self.shards is None:
            return f"{self.prefix}meta:{channel}"
        return f"{self.prefix}{self._tag(channel)}:meta:{channel}"

    def stream(self, channel: str) -> str:
        if self.shards is None:
            return f"{self.prefix}stream:{channel}"
        return f"{self.prefix}{self._tag(channel)}:stream:{channel}"

    def pubsub(self, channel: str) -> str:
        if self.shards is None:
            return f"{self.prefix}pub:{channel}"
        return f"{self.prefix}{self._tag(channel)}:pub"

    def shard_channels(self) -> list[str]:
        assert self.shards is not None
        return [f"{self.prefix}{{s{i}}}:pub" for i in range(self.shards)]

    def pubsub_glob(self, pattern: ChannelPattern) -> str:
        """A Redis glob covering the NATS pattern (``*`` also crosses dots: filter after)."""
        body = ".".join("*" if seg in ("*", ">") else _glob_escape(seg) for seg in pattern.segments)
        return f"{_glob_escape(self.prefix)}pub:{body}"


def decode_message(data: bytes, *, fragments: bool = False) -> Envelope:
    """Parse the wire form; raise ``ValueError`` for anything that is not a valid message."""
    head, sep, payload = data.partition(b"\n")
    if not sep:
        raise ValueError("no header line")
    tag, channel, seq, epoch, event_ns, publish_ns = head.split(b" ")
    if tag != WIRE_TAG:
        raise ValueError(f"unknown wire tag {tag!r}")
    value = orjson.loads(payload)
    return Envelope(
        channel.decode(),
        int(seq),
        epoch.decode(),
        int(event_ns),
        int(publish_ns),
        orjson.Fragment(payload) if fragments else value,
    )


@dataclass(slots=True)
class _Publish:
    channel: str
    payload: bytes
    event_ns: int
    publish_ns: int
    number: int
    future: asyncio.Future[Envelope] | None


#: What Redis answered for one message: (seq, epoch, duplicate), or why it failed.
_Published = tuple[int, str, bool] | Exception


def channel_runs(batch: Sequence[_Publish]) -> list[list[_Publish]]:
    """The batch cut into runs of consecutive messages of one channel, in batch order."""
    runs: list[list[_Publish]] = []
    for item in batch:
        if runs and runs[-1][0].channel == item.channel:
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


def run_results(count: int, reply: Any) -> list[_Published]:
    """One result per message of a run of ``count`` from ``PUBLISH_SCRIPT``'s reply (or from the
    error that replaced it): the messages past the answered ones failed with the reply's error."""
    if isinstance(reply, Exception):
        return [reply] * count
    epoch_raw, error_raw, *answers = reply
    epoch = epoch_raw.decode()
    results: list[_Published] = [
        (seq, epoch, bool(duplicate))
        for seq, duplicate in zip(answers[0::2], answers[1::2], strict=True)
    ]
    if len(results) < count:
        error = ResponseError(error_raw.decode() or "publish script answered too few messages")
        results.extend([error] * (count - len(results)))
    return results


#: ``gets`` of the hiredis reader behind a pub/sub connection, and its "no whole reply yet" value.
BufferedReplies = tuple[Callable[[], Any], object]


def _buffered_replies(pubsub: PubSub) -> BufferedReplies | None:
    """The hiredis reader of ``pubsub``'s connection (redis-py's ``_AsyncHiredisParser``), to take
    the replies already received in one go; None with redis-py's pure-Python parser (then every
    message goes through ``get_message``). Private redis-py attributes, checked here:
    ``tests/realtime/bus/test_redis.py`` fails if a redis-py upgrade moves them."""
    parser = getattr(pubsub.connection, "_parser", None)
    gets = getattr(getattr(parser, "_reader", None), "gets", None)
    if gets is None:
        return None
    try:
        from redis._parsers.hiredis import NOT_ENOUGH_DATA
    except ImportError:
        return None
    return gets, NOT_ENOUGH_DATA


@dataclass(slots=True)
class ClusterPubSubs:
    """The pub/sub connections of one subscription on a Redis Cluster: one per master serving
    some of the shard channels (each node delivers only the shard channels of its own slots)."""

    nodes: list[PubSub] = field(default_factory=list)

    async def aclose(self) -> None:
        for pubsub in self.nodes:
            with contextlib.suppress(RedisError, OSError):
                await pubsub.aclose()


class RedisSubscription(Inbox):
    """Live messages of one pattern, with recovery from the streams after a reconnect.

    The reader remembers the last ``(epoch, seq)`` per channel. After a reconnect it reads every
    known channel's stream past that point before live messages; a live message that skips seqs
    makes it read the hole from the stream first. What the stream no longer holds stays a hole
    (the consumer reports a gap); a new epoch is passed on as is (the consumer resets history).
    """

    def __init__(
        self,
        bus: RedisBus,
        pattern: str,
        max_pending: int,
        fragments: bool,
        on_close: Callable[[RedisSubscription], None],
    ) -> None:
        super().__init__(max_pending)
        self.pattern = pattern
        self.matcher = ChannelPattern.parse(pattern)
        self._bus = bus
        self._fragments = fragments
        self._on_close = on_close
        self._last: dict[str, tuple[str, int]] = {}
        self._ready = asyncio.Event()
        #: messages on our Redis channels that are not valid bus messages (counted, skipped)
        self.invalid = 0
        #: messages already delivered (seen again after a recovery read)
        self.duplicates = 0
        #: messages read back from the streams (after reconnects or seq holes)
        self.recovered = 0
        self.reconnects = 0
        #: whether the subscription is live on Redis now (False while reconnecting)
        self.connected = False
        #: why the last connection was lost ("" before any loss)
        self.last_error = ""
        self._reader = asyncio.create_task(self._read(), name=f"redis-bus-sub {pattern}")

    async def wait_ready(self, limit_s: float = 5.0) -> None:
        """Wait until Redis confirmed the subscription (live messages flow from then on)."""
        await asyncio.wait_for(self._ready.wait(), limit_s)

    def close(self) -> None:
        if self._end():
            self._reader.cancel()
            self._on_close(self)

    async def aclose(self) -> None:
        """``close`` and wait for the reader to let go of its connection."""
        self.close()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader

    # --- reader ---------------------------------------------------------------------------------

    async def _read(self) -> None:
        backoff = Backoff(self._bus.config.reconnect_backoff, self._bus.rng)
        first = True
        while True:
            pubsub = self._bus._open_pubsub()
            try:
                await self._subscribe(pubsub)
                if not first:
                    await self._recover_known()
                first = False
                self._ready.set()
                self.connected = True
                backoff.reset()
                await self._pump(pubsub)
            except (RedisError, OSError) as exc:
                self.connected = False
                self.last_error = str(exc) or type(exc).__name__
                self.reconnects += 1
                delay = backoff.next_s()
                log.warning(
                    "redis bus: subscription %r lost (%s); reconnecting in %.2f s",
                    self.pattern,
                    exc,
                    delay,
                )
            finally:
                with contextlib.suppress(RedisError, OSError):
                    await pubsub.aclose()
            await asyncio.sleep(delay)

    async def _subscribe(self, pubsub: PubSub | ClusterPubSubs) -> None:
        keys = self._bus.keys
        if isinstance(pubsub, ClusterPubSubs):
            await self._subscribe_nodes(pubsub)
            return
        if keys.shards is None:
            await pubsub.psubscribe(keys.pubsub_glob(self.matcher))
            expected = 1
        else:
            await pubsub.ssubscribe(*keys.shard_channels())
            expected = keys.shards
        await self._confirmed(pubsub, expected)

    async def _subscribe_nodes(self, pubsubs: ClusterPubSubs) -> None:
        """SSUBSCRIBE each shard channel on the master serving its slot (a cluster node refuses
        shard channels of other slots, and one SSUBSCRIBE may name only channels of one slot)."""
        bus = self._bus
        for (host, port), channels in (await bus._shard_channels_by_node()).items():
            pubsub = bus._node_pubsub_client(host, port).pubsub()
            pubsubs.nodes.append(pubsub)
            for channel in channels:
                await pubsub.ssubscribe(channel)
            await self._confirmed(pubsub, len(channels))

    async def _confirmed(self, pubsub: PubSub, expected: int) -> None:
        confirmed = 0
        while confirmed < expected:  # confirmations come before any message
            msg = await pubsub.get_message(timeout=self._bus.config.connect_timeout_s)
            if msg is None:
                raise TimeoutError("no subscribe confirmation from Redis")
            if msg["type"] in ("psubscribe", "ssubscribe"):
                confirmed += 1

    async def _pump(self, pubsub: PubSub | ClusterPubSubs) -> None:
        if isinstance(pubsub, ClusterPubSubs):
            await self._pump_nodes(pubsub.nodes)
        else:
            await self._pump_one(pubsub)

    async def _pump_nodes(self, nodes: list[PubSub]) -> None:
        """One pump per node; the first to fail ends them all and the reader reconnects every
        node. Each channel lives on one node, so its order is kept."""
        pumps = [asyncio.create_task(self._pump_one(pubsub)) for pubsub in nodes]
        try:
            done, _ = await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
            for pump in done:
                pump.result()  # raises the node's error
            raise ConnectionError("a node's pub/sub ended")
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.gather(*pumps, return_exceptions=True)

    async def _pump_one(self, pubsub: PubSub) -> None:
        interval = self._bus.config.health_check_interval_s
        loop = asyncio.get_running_loop()
        last_rx = loop.time()
        pinged = False
        buffered = _buffered_replies(pubsub)
        while True:
            if buffered is not None:
                await self._drain(buffered)
            msg = await pubsub.get_message(timeout=interval)
            now = loop.time()
            if msg is None:
                if now - last_rx > 2 * interval + 1:
                    raise TimeoutError(f"pub/sub silent for {now - last_rx:.1f} s after PING")
                if not pinged:
                    await pubsub.ping()
                    pinged = True
                continue
            last_rx = now
            pinged = False
            kind = msg["type"]
            if kind in ("pmessage", "smessage", "message"):
                await self._on_live(msg["data"])
            elif kind in ("punsubscribe", "sunsubscribe"):
                raise ConnectionError("Redis unsubscribed us")

    async def _drain(self, buffered: BufferedReplies) -> None:
        """Handle every reply already read off the socket, without redis-py's per-message path
        (``get_message``: retry wrapper, timeout context, push handling; ~70 % of the hub's
        CPU at 10k msg/s, issue 16). Pub/sub replies are ``[kind, (pattern,) channel, data]``."""
        gets, not_enough_data = buffered
        while (reply := gets()) is not not_enough_data:
            if isinstance(reply, Exception):
                raise RedisConnectionError(f"pub/sub reply: {reply}")
            if not isinstance(reply, list) or not reply:
                continue
            kind = reply[0]
            if kind in (b"smessage", b"message") and len(reply) == 3:
                await self._on_live(reply[2])
            elif kind == b"pmessage" and len(reply) == 4:
                await self._on_live(reply[3])
            elif kind in (b"punsubscribe", b"sunsubscribe", b"unsubscribe"):
                raise ConnectionError("Redis unsubscribed us")
            # b"pong" (our liveness PING) and anything else: nothing to do

    def _decode(self, data: bytes) -> Envelope | None:
        try:
            env = decode_message(data, fragments=self._fragments)
            if env.channel not in self._last:
                parse_channel(env.channel)
        except (ValueError, ProtocolError):
            self.invalid += 1
            return None
        return env

    async def _on_live(self, data: bytes) -> None:
        env = self._decode(data)
        if env is None or not self.matcher.matches(env.channel):
            return
        last = self._last.get(env.channel)
        if last is not None:
            epoch, seq = last
            # a hole in seq, or a new epoch that did not start at 1: read the missing part
            missing = env.seq > seq + 1 if epoch == env.epoch else env.seq > 1
            if missing:
                await self._recover(env.channel, until_seq=env.seq - 1)
        self._accept(env)

    def _accept(self, env: Envelope) -> None:
        last = self._last.get(env.channel)
        if last is not None and last[0] == env.epoch and env.seq <= last[1]:
            self.duplicates += 1
            return
        self._last[env.channel] = (env.epoch, env.seq)
        self.offer(env)

    async def _recover_known(self) -> None:
        for channel in list(self._last):
            await self._recover(channel, until_seq=None)

    async def _recover(self, channel: str, *, until_seq: int | None) -> None:
        try:
            await self._recover_stream(channel, until_seq=until_seq)
        except RedisClusterException as exc:  # not a RedisError: the reader would end on it
            raise RedisConnectionError(f"Redis Cluster: {exc}") from exc

    async def _recover_stream(self, channel: str, *, until_seq: int | None) -> None:
        """Deliver what the stream holds after the last seen message of ``channel``.

        Same epoch: entries after the last seq. New epoch (the channel's data was lost and
        renumbered): the whole stream, which belongs to the new epoch.
        """
        bus = self._bus
        client = bus._client
        meta: Any = await client.hget(bus.keys.meta(channel), "e")
        if meta is None:
            return  # nothing stored at all: the next live message shows the epoch change
        epoch = meta.decode()
        known_epoch, known_seq = self._last[channel]
        start = f"({known_seq}-0" if epoch == known_epoch else "-"
        end = "+" if until_seq is None else f"{until_seq}-0"
        stream = bus.keys.stream(channel)
        while True:
            entries: list[tuple[bytes, dict[bytes, bytes]]] = await client.xrange(  # type: ignore[assignment]
                stream, start, end, count=bus.config.recover_batch
            )
            for entry_id, fields in entries:
                env = self._decode(fields.get(b"m", b""))
                if env is None:
                    continue
                self.recovered += 1
                self._accept(env)
                start = f"({entry_id.decode()}"
            if len(entries) < bus.config.recover_batch:
                return


class RedisBus:
    """The distributed bus: ``await RedisBus.connect(config)``; then the ``Bus`` interface."""

    def __init__(
        self, config: RedisBusConfig, *, clock: Clock | None = None, rng: Rng | None = None
    ) -> None:
        self.config = config
        #: the jitter of reconnect and publish-retry waits (injectable: tests replay exactly)
        self.rng: Rng = rng if rng is not None else random.Random()
        self.keys = RedisKeys(config.key_prefix, config.pubsub_shards if config.sharded else None)
        self._clock = clock or SystemClock()
        self.writer_id = secrets.token_hex(6)
        # Cluster: commands go to the master of their slot (a channel's keys share one, see
        # ``RedisKeys``); MOVED/ASK redirects are followed by redis-py, not retried blindly.
        client_type: type[Redis] | type[RedisCluster] = RedisCluster if config.cluster else Redis
        self._client: Redis | RedisCluster = client_type.from_url(
            config.url,
            socket_timeout=config.socket_timeout_s,
            socket_connect_timeout=config.connect_timeout_s,
            retry=Retry(NoBackoff(), 0),
            socket_keepalive=True,
            client_name=f"nautilus-bus:{self.writer_id}",
        )
        # Pub/sub waits indefinitely for traffic: no socket timeout (redis-py 8's 5 s would cut
        # an idle subscription); liveness is our own PING in ``RedisSubscription._pump``. On a
        # cluster, one such client per master (``_node_pubsub_client``).
        self._pubsub_clients: dict[tuple[str, int], Redis] = {}
        self._pubsub_client = None if config.cluster else self._new_pubsub_client(config.url)
        self._script_sha = ""
        self._numbers = 0
        self._queue: deque[_Publish] = deque()
        self._queue_event = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._inflight: list[_Publish] = []
        self._subs: list[RedisSubscription] = []
        self._closed = False
        #: publishes whose script call was repeated after a connection error
        self.publish_retries = 0
        #: fire-and-forget publishes (``publish_nowait``) that failed
        self.publish_failures = 0
        #: stream entries ``history`` skipped because they are not valid messages of the channel
        self.history_invalid = 0

    @property
    def url(self) -> str:
        return redacted_url(self.config.url)

    def _new_pubsub_client(self, url: str) -> Redis:
        return Redis.from_url(
            url,
            socket_timeout=None,
            socket_connect_timeout=self.config.connect_timeout_s,
            retry=Retry(NoBackoff(), 0),
            socket_keepalive=True,
            health_check_interval=0,
            client_name=f"nautilus-bus-sub:{self.writer_id}",
        )

    def _open_pubsub(self) -> PubSub | ClusterPubSubs:
        """A new pub/sub connection (on a cluster: a set, one per master, opened on subscribe)."""
        if self._pubsub_client is None:
            return ClusterPubSubs()
        return self._pubsub_client.pubsub()

    def _node_pubsub_client(self, host: str, port: int) -> Redis:
        """The pub/sub client of one cluster node: the configured URL with its host and port."""
        client = self._pubsub_clients.get((host, port))
        if client is None:
            parts = urlsplit(self.config.url)
            userinfo = parts.netloc.rpartition("@")[0]
            netloc = (f"{userinfo}@" if userinfo else "") + f"{host}:{port}"
            client = self._new_pubsub_client(urlunsplit(parts._replace(netloc=netloc)))
            self._pubsub_clients[(host, port)] = client
        return client

    async def _shard_channels_by_node(self) -> dict[tuple[str, int], list[str]]:
        """The shard channels grouped by the master serving their slot, from the cluster's slot
        map read now (after a failover or a slot move the old map would be wrong)."""
        cluster = self._client
        assert isinstance(cluster, RedisCluster)
        try:
            await cluster.nodes_manager.initialize()
        except RedisClusterException as exc:  # not a RedisError: the reader would end on it
            raise RedisConnectionError(f"Redis Cluster slot map: {exc}") from exc
        by_node: dict[tuple[str, int], list[str]] = {}
        for channel in self.keys.shard_channels():
            node = cluster.get_node_from_key(channel)
            if node is None:
                raise ConnectionError(f"no Redis Cluster node serves {channel}")
            by_node.setdefault((node.host, int(node.port)), []).append(channel)
        return by_node

    @classmethod
    async def connect(
        cls, config: RedisBusConfig, *, clock: Clock | None = None, rng: Rng | None = None
    ) -> RedisBus:
        """Connect and load the script; raise ``BusUnavailable`` within ``connect_timeout_s``."""
        bus = cls(config, clock=clock, rng=rng)
        try:
            await asyncio.wait_for(bus._start(), config.connect_timeout_s)
        except (RedisError, RedisClusterException, OSError, TimeoutError) as exc:
            await bus._close_clients()
            raise BusUnavailable(bus.url, str(exc) or type(exc).__name__) from exc
        return bus

    async def _start(self) -> None:
        await self._client.ping()
        info = await self._client.info("server")
        mode = str(info.get("redis_mode", "standalone"))
        if not self.config.cluster and mode == "cluster":  # (the reverse fails in RedisCluster)
            raise ResponseError("Redis is a cluster node: set cluster (NAUTILUS_BUS_CLUSTER=true)")
        if self.config.sharded:
            major = int(str(info["redis_version"]).split(".")[0])
            if major < 7:
                raise ResponseError(f"sharded pub/sub needs Redis >= 7, found {major}")
        self._script_sha = await self._client.script_load(PUBLISH_SCRIPT)
        self._writer = asyncio.create_task(self._write_loop(), name="redis-bus-writer")

    # --- publish --------------------------------------------------------------------------------

    def _enqueue(
        self,
        channel: str,
        payload: Any,
        event_ns: int | None,
        future: asyncio.Future[Envelope] | None,
    ) -> None:
        if self._closed:
            raise BusClosed("bus is closed")
        if len(self._queue) >= self.config.max_publish_queue:
            raise BusUnavailable(self.url, f"{len(self._queue)} publishes waiting for Redis")
        now = self._clock.now_ns()
        self._numbers += 1
        self._queue.append(
            _Publish(
                channel,
                orjson.dumps(payload),
                now if event_ns is None else event_ns,
                now,
                self._numbers,
                future,
            )
        )
        self._queue_event.set()

    async def publish(self, channel: str, payload: Any, *, event_ns: int | None = None) -> Envelope:
        """Number, store and deliver one message; return it as consumers will see it.

        Raises ``BusUnavailable`` if Redis stays unreachable for ``publish_timeout_s``.
        """
        future: asyncio.Future[Envelope] = asyncio.get_running_loop().create_future()
        self._enqueue(channel, payload, event_ns, future)
        return await future

    def publish_nowait(self, channel: str, payload: Any, *, event_ns: int | None = None) -> None:
        """Queue a publish without waiting for its number (replays, simulators).

        Order per bus is kept. Failures are logged and counted in ``publish_failures``; the
        seq is assigned by Redis, so no ``Envelope`` can be returned here (unlike MemoryBus).
        """
        self._enqueue(channel, payload, event_ns, None)

    def publish_many(self, channel: str, payloads: Sequence[Any], event_ns: Sequence[int]) -> None:
        """``publish_nowait`` of consecutive messages on one channel, in order."""
        for payload, when in zip(payloads, event_ns, strict=True):
            self._enqueue(channel, payload, when, None)

    async def _write_loop(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                self._queue_event.clear()
                await self._queue_event.wait()
                continue
            count = min(len(queue), self.config.publish_batch)
            batch = self._inflight = [queue.popleft() for _ in range(count)]
            try:
                results = await self._run_batch(batch)
            except (RedisError, OSError, TimeoutError) as exc:
                error = BusUnavailable(self.url, f"publish failed: {exc}")
                for item in batch:
                    self._fail(item, error)
                continue
            except Exception as exc:  # a bug must fail these publishes, not hang every later one
                log.exception("redis bus: publish batch failed")
                for item in batch:
                    self._fail(item, exc)
                continue
            finally:
                self._inflight = []
            for item, result in zip(batch, results, strict=True):
                if isinstance(result, Exception):
                    self._fail(item, result)
                    continue
                seq, epoch, _duplicate = result
                env = Envelope(
                    item.channel,
                    seq,
                    epoch,
                    item.event_ns,
                    item.publish_ns,
                    orjson.Fragment(item.payload),
                )
                if item.future is not None and not item.future.done():
                    item.future.set_result(env)

    def _fail(self, item: _Publish, error: BaseException) -> None:
        if item.future is None:
            self.publish_failures += 1
            log.error("redis bus: publish on %s failed: %s", item.channel, error)
        elif not item.future.done():
            item.future.set_exception(error)

    async def _run_batch(self, batch: list[_Publish]) -> list[_Published]:
        """Run the batch in one pipeline; retry the whole batch through connection errors.

        A retry is safe: each message carries (writer id, publish number), and the script answers
        a repeated number with the original seq instead of appending again.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.publish_timeout_s
        backoff = Backoff(self.config.reconnect_backoff, self.rng)
        while True:
            try:
                return await self._pipeline(batch)
            except NoScriptError:
                self._script_sha = await self._client.script_load(PUBLISH_SCRIPT)
            except (ConnectionError, TimeoutError, OSError, RedisError) as exc:
                if isinstance(exc, ResponseError):
                    raise
                delay = backoff.next_s()
                if loop.time() + delay > deadline:
                    raise
                self.publish_retries += len(batch)
                await asyncio.sleep(delay)

    async def _pipeline(self, batch: list[_Publish]) -> list[_Published]:
        """One ``PUBLISH_SCRIPT`` call per channel run, in batch order; one result per message.

        A run's keys are one channel's (one hash tag: one Cluster slot)."""
        keys = self.keys
        maxlen = str(self.config.stream_maxlen)
        command = "SPUBLISH" if keys.shards is not None else "PUBLISH"
        writer = self.writer_id
        runs = channel_runs(batch)
        pipe = self._client.pipeline(transaction=False)
        # a fresh epoch per call, used only by a channel that has none: one urandom for the batch
        epochs = secrets.token_hex(4 * len(runs))
        for i, run in enumerate(runs):
            channel = run[0].channel
            messages: list[bytes | str] = []
            for item in run:
                messages += (
                    item.payload,
                    str(item.event_ns),
                    str(item.publish_ns),
                    str(item.number),
                )
            pipe.execute_command(  # not pipe.evalsha: redis-py blocks it on cluster pipelines
                "EVALSHA",
                self._script_sha,
                2,
                keys.meta(channel),
                keys.stream(channel),
                keys.pubsub(channel),
                channel,
                maxlen,
                epochs[8 * i : 8 * i + 8],
                writer,
                command,
                *messages,
            )
        try:
            replies: list[Any] = await pipe.execute(raise_on_error=False)
        except RedisClusterException as exc:  # e.g. a slot no master serves (mid-failover)
            raise RedisConnectionError(f"Redis Cluster: {exc}") from exc
        results: list[_Published] = []
        for run, reply in zip(runs, replies, strict=True):
            if isinstance(reply, NoScriptError):
                raise reply
            results += run_results(len(run), reply)
        return results

    # --- subscribe ------------------------------------------------------------------------------

    def subscribe(
        self, pattern: str, *, max_pending: int | None = None, payload_fragments: bool = False
    ) -> RedisSubscription:
        """Subscribe to channels matching a NATS-style pattern (from confirmation on).

        ``payload_fragments=True`` hands payloads on as ``orjson.Fragment`` (for the hub).
        ``await sub.wait_ready()`` (or ``await bus.wait_ready()``) waits for the confirmation.
        """
        if self._closed:
            raise BusClosed("bus is closed")
        sub = RedisSubscription(
            self,
            pattern,
            max_pending or self.config.max_pending,
            payload_fragments,
            self._subs.remove,
        )
        self._subs.append(sub)
        return sub

    async def wait_ready(self, limit_s: float = 5.0) -> None:
        """Wait until every open subscription is confirmed by Redis."""
        for sub in list(self._subs):
            await sub.wait_ready(limit_s)

    async def history(
        self, channel: str, after_seq: int, limit: int, *, payload_fragments: bool = False
    ) -> tuple[str, list[Envelope]]:
        """The channel's epoch (``HGET`` of its meta hash, ``""`` if none) and the stream's
        entries after ``after_seq`` (``XRANGE (<after_seq>-0 + COUNT limit``), one round trip.

        Corrupt entries are skipped and counted in ``history_invalid`` (the caller sees the hole).
        Each entry carries its own epoch, so the pair need not be read atomically. Raises
        ``BusUnavailable`` on any Redis or connection error.
        """
        pipe = self._client.pipeline(transaction=False)
        pipe.hget(self.keys.meta(channel), "e")
        if limit > 0:
            pipe.xrange(self.keys.stream(channel), f"({after_seq}-0", "+", count=limit)
        try:
            replies: list[Any] = await pipe.execute()
        except (RedisError, RedisClusterException, OSError) as exc:
            raise BusUnavailable(self.url, f"history of {channel} failed: {exc}") from exc
        epoch = replies[0].decode() if replies[0] is not None else ""
        entries: list[tuple[bytes, dict[bytes, bytes]]] = replies[1] if limit > 0 else []
        out: list[Envelope] = []
        for _entry_id, fields in entries:
            try:
                env = decode_message(fields.get(b"m", b""), fragments=payload_fragments)
            except ValueError:
                self.history_invalid += 1
                continue
            if env.channel != channel:
                self.history_invalid += 1
                continue
            out.append(env)
        return epoch, out

    async def last_seq(self, channel: str) -> int:
        raw = await self._client.hget(self.keys.meta(channel), "s")
        return int(raw) if raw is not None else 0

    async def close(self) -> None:
        """Flush queued publishes (bounded), end every subscription, close connections."""
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.config.connect_timeout_s
        writer = self._writer
        while (self._queue or self._inflight) and writer is not None and not writer.done():
            if loop.time() > deadline:
                break
            await asyncio.sleep(0.001)
        for sub in list(self._subs):
            await sub.aclose()
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        closed = BusClosed("bus is closed")
        for item in self._inflight:
            self._fail(item, closed)
        while self._queue:
            self._fail(self._queue.popleft(), closed)
        await self._close_clients()

    async def _close_clients(self) -> None:
        clients: list[Redis | RedisCluster] = [self._client, *self._pubsub_clients.values()]
        if self._pubsub_client is not None:
            clients.append(self._pubsub_client)
        for client in clients:
            with contextlib.suppress(RedisError, OSError):
                await client.aclose()
