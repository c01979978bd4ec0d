"""``redis://``: kombu's Redis queue layout, with crash-safe delivery.

Producers see exactly what kombu writes: the list named after the queue holds envelope
text, ``LPUSH``ed, with priority sub-lists ``<queue>\\x06\\x16<step>``. So Celery producers
and celeriac workers interoperate, and Celery workers can pop the same lists.

Consumers never hold a message only in memory. A fetch moves messages, in one server-side
script, from the queue lists into the consumer's own hash ``celeriac.unacked.<id>``; a
blocking wait moves one message into the consumer's landing list with ``BLMOVE``. A
consumer whose heartbeat in ``celeriac.consumers`` goes stale has both handed back to
their queues by the next live consumer's heartbeat.

ETA and countdown messages wait in the sorted set ``celeriac.delayed``, scored by due
time, and every celeriac consumer's fetch moves the due ones to their queues. Only
celeriac workers look at that set, so by default producers do as Celery's do, and the
transport option ``delayed_delivery`` says otherwise:

* ``'queue'`` (default): eta messages go straight onto the queue list with their ``eta``
  header, as Celery's producers put them, so a mixed fleet of Celery and celeriac
  workers runs them. A celeriac worker that takes one not yet due parks it in
  ``celeriac.delayed`` (one round trip); a Celery worker holds it in memory.
* ``'broker'``: eta messages go into ``celeriac.delayed`` at once, for fleets with no
  Celery worker left: no round trip through a worker.

    app.conf.broker_transport_options = {'delayed_delivery': 'broker'}
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import threading
import time
from collections import deque
from collections.abc import Sequence
from typing import Any, Callable

from ..exceptions import ImproperlyConfigured
from ..utils.redis import RedisConnector, process_lock
from .base import (
    DeadLetter,
    Delivery,
    FullBroker,
    Listener,
    Notice,
    Outgoing,
    QueueCounts,
    Released,
    new_consumer_id,
    nothing_to_wait_for,
    poison_reason,
    take_all,
    topic_matches,
)

logger = logging.getLogger("celeriac.broker")

DEFAULT_PRIORITY_STEPS = (0, 3, 6, 9)
DEFAULT_SEP = "\x06\x16"

# values of the ``delayed_delivery`` transport option (see the module docstring)
DELAYED_DELIVERY = ("broker", "queue")

# Bounds the work one fetch does promoting due eta messages, so a burst of them cannot
# stall the server; the rest are promoted by the following fetches.
PROMOTE_BATCH = 1000

# Only one list can be blocked on atomically. An idle consumer blocks on a plain queue
# list (priority 0, where nearly all messages go, so those wake it at once) and looks at
# the other queues' lists and the priority sub-lists again after this long: a message
# there waits at most this much on an idle worker.
ROTATE_INTERVAL = 0.05

# Redis reads a blocking timeout in milliseconds and takes 0 as "forever".
MIN_BLOCK = 0.01

_SPLIT = """
local function split(v)
  local i = string.find(v, '\\n', 1, true)
  if i then return string.sub(v, 1, i - 1), string.sub(v, i + 1) end
end
"""

# KEYS: delayed, unacked, landing, landing-source, source lists...
# ARGV: now, limit, first tag, consumer id, promote batch
FETCH = _SPLIT + """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[5])
for _, m in ipairs(due) do
  local list, payload = split(m)
  if list then redis.call('LPUSH', list, payload) end
  redis.call('ZREM', KEYS[1], m)
end
local limit = tonumber(ARGV[2])
local tag = tonumber(ARGV[3])
local out, fields, n = {}, {}, 0
-- Tags from the first one the client asks for are unknown to it: a reply lost after an
-- earlier run of this fetch makes the client retry with the same first tag. Hand those
-- messages out again (they are already in the hash) so none sits there unseen.
while true do
  local held = redis.call('HGET', KEYS[2], tag)
  if not held then break end
  local list, payload = split(held)
  out[#out + 1] = tag
  out[#out + 1] = list
  out[#out + 1] = payload
  tag = tag + 1
  n = n + 1
end
local function take(list, payload)
  out[#out + 1] = tag
  out[#out + 1] = list
  out[#out + 1] = payload
  fields[#fields + 1] = tag
  fields[#fields + 1] = list .. '\\n' .. payload
  tag = tag + 1
  n = n + 1
end
local src = redis.call('HGET', KEYS[4], ARGV[4])
if src then
  while n < limit do
    local p = redis.call('RPOP', KEYS[3])
    if not p then break end
    take(src, p)
  end
  -- an empty landing list needs no record of where it came from
  if redis.call('LLEN', KEYS[3]) == 0 then redis.call('HDEL', KEYS[4], ARGV[4]) end
end
for i = 5, #KEYS do
  if n >= limit then break end
  local got = redis.call('RPOP', KEYS[i], limit - n)
  if got then for _, p in ipairs(got) do take(KEYS[i], p) end end
end
for i = 1, #fields, 1000 do
  redis.call('HSET', KEYS[2], unpack(fields, i, math.min(i + 999, #fields)))
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
table.insert(out, 1, first[2] or '')
return out
"""

# KEYS: unacked, started; ARGV: tags in delivery order. A message found in the started
# hash is one whose early ack reached the server while its reply was lost: the consumer
# never ran it, so it goes back too.
REQUEUE = _SPLIT + """
local n = 0
for i = #ARGV, 1, -1 do
  for k = 1, 2 do
    local v = redis.call('HGET', KEYS[k], ARGV[i])
    if v then
      local list, payload = split(v)
      if list then redis.call('RPUSH', list, payload); n = n + 1 end
      redis.call('HDEL', KEYS[k], ARGV[i])
    end
  end
end
return n
"""

# KEYS: unacked, started; ARGV: n, n tags whose tasks start now, tags whose tasks ended
# An early ack: the message leaves the unacked hash (it is never delivered again) for
# the started hash, where it stays until its task ends, so that a consumer found dead
# meanwhile tells which tasks died with it.
START = """
local n = tonumber(ARGV[1])
for i = 2, n + 1 do
  local v = redis.call('HGET', KEYS[1], ARGV[i])
  if v then
    redis.call('HSET', KEYS[2], ARGV[i], v)
    redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
if #ARGV > n + 1 then redis.call('HDEL', KEYS[2], unpack(ARGV, n + 2)) end
return n
"""

# KEYS: unacked, delayed; ARGV: tag, eta
DEFER = """
local v = redis.call('HGET', KEYS[1], ARGV[1])
if not v then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], v)
redis.call('HDEL', KEYS[1], ARGV[1])
return 1
"""

# KEYS: unacked, dead list; ARGV: tag, record
DEAD_LETTER = """
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then redis.call('LPUSH', KEYS[2], ARGV[2]) end
"""

# KEYS: consumers, landing-source, dead-letter list, last-beat key
# ARGV: mode ('beat' or 'forget'), lost timeout, unacked prefix, landing prefix,
#       loss-counter prefix, max redeliveries, poison reason format, started prefix,
#       then a count and that many consumer ids (beat: to mark alive; forget: the one),
#       then (forget) a count and the tags that count a loss, a count and tags to drop.
# Returns {messages returned, count of poisoned, poisoned record..., interrupted...}:
# interrupted are the envelopes of early-acked tasks that were running.
RELEASE = _SPLIT + """
local now
do
  local t = redis.call('TIME')
  now = tonumber(t[1]) + tonumber(t[2]) / 1000000
end
local lost_timeout = tonumber(ARGV[2])
local poisoned = {}
local interrupted = {}
local function list_arg(at)
  local n = tonumber(ARGV[at])
  local items = {}
  for i = at + 1, at + n do items[#items + 1] = ARGV[i] end
  return items, at + n + 1
end
local ids, after_ids = list_arg(9)
-- A message whose holder was lost while running it counts a loss; past the bound it
-- is set aside instead of returned, so one message that kills every worker cannot
-- stop the queue. Messages that were only waiting behind it return as they were.
local function hand_back(list, payload, counts)
  if counts then
    local counter = ARGV[5] .. redis.sha1hex(payload)
    local losses = redis.call('INCR', counter)
    redis.call('EXPIRE', counter, 86400)
    if losses >= tonumber(ARGV[6]) then
      redis.call('DEL', counter)
      local record = cjson.encode({queue = list, reason = string.format(ARGV[7], losses),
                                   time = now, payload = payload})
      redis.call('LPUSH', KEYS[3], record)
      poisoned[#poisoned + 1] = record
      return 0
    end
  end
  redis.call('RPUSH', list, payload)
  return 1
end
-- lost: set of tags that count a loss, or nil for "the oldest one" (a consumer found
-- dead runs its messages in tag order, so the oldest unacked one was running)
local function release(id, lost, drop)
  local n = 0
  local notes = redis.call('HGETALL', ARGV[8] .. id)
  for i = 1, #notes, 2 do
    if not drop[notes[i]] then
      local _, payload = split(notes[i + 1])
      interrupted[#interrupted + 1] = payload
    end
  end
  redis.call('DEL', ARGV[8] .. id)
  local landing = ARGV[4] .. id
  local src = redis.call('HGET', KEYS[2], id)
  if src then
    -- newest first, so the oldest ends up next in line; landed messages never ran
    while true do
      local p = redis.call('LPOP', landing)
      if not p then break end
      n = n + hand_back(src, p, false)
    end
  end
  local flat = redis.call('HGETALL', ARGV[3] .. id)
  local items = {}
  for i = 1, #flat, 2 do items[#items + 1] = {tonumber(flat[i]) or 0, flat[i + 1], flat[i]} end
  table.sort(items, function(a, b) return a[1] > b[1] end)
  local oldest = items[#items]
  for _, item in ipairs(items) do
    if not drop[item[3]] then
      local list, payload = split(item[2])
      local counts
      if lost then counts = lost[item[3]] == true else counts = item == oldest end
      if list then n = n + hand_back(list, payload, counts) end
    end
  end
  redis.call('DEL', ARGV[3] .. id)
  redis.call('HDEL', KEYS[2], id)
  redis.call('ZREM', KEYS[1], id)
  return n
end
local n = 0
if ARGV[1] == 'beat' then
  local last = tonumber(redis.call('GET', KEYS[4]) or '0')
  redis.call('SET', KEYS[4], tostring(now))
  for _, id in ipairs(ids) do redis.call('ZADD', KEYS[1], now, id) end
  if last > 0 and now - last > lost_timeout / 2 then
    -- No beat at all reached the server for a while: it was down or cut off, and
    -- everyone's silence proves nothing. Start every consumer's clock again.
    local everyone = redis.call('ZRANGE', KEYS[1], 0, -1)
    for _, id in ipairs(everyone) do redis.call('ZADD', KEYS[1], now, id) end
  else
    local dead = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', '(' .. (now - lost_timeout))
    for _, id in ipairs(dead) do n = n + release(id, nil, {}) end
  end
else
  local lost_tags, after_lost = list_arg(after_ids)
  local drop_tags = list_arg(after_lost)
  local lost, drop = {}, {}
  for _, t in ipairs(lost_tags) do lost[t] = true end
  for _, t in ipairs(drop_tags) do drop[t] = true end
  n = release(ids[1], lost, drop)
end
local out = {n, #poisoned}
for _, record in ipairs(poisoned) do out[#out + 1] = record end
for _, payload in ipairs(interrupted) do out[#out + 1] = payload end
return out
"""

# KEYS: delayed, lists...; counts the lists' messages and the delayed ones bound for them
SIZE = _SPLIT + """
local n = 0
local mine = {}
for i = 2, #KEYS do
  n = n + redis.call('LLEN', KEYS[i])
  mine[KEYS[i]] = true
end
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local list = split(m)
  if list and mine[list] then n = n + 1 end
end
return n
"""


# KEYS: delayed, lists...; deletes the lists and the delayed messages bound for them
# (purged eta tasks must not come back when they fall due)
PURGE = _SPLIT + """
local n = 0
local mine = {}
for i = 2, #KEYS do
  n = n + redis.call('LLEN', KEYS[i])
  redis.call('DEL', KEYS[i])
  mine[KEYS[i]] = true
end
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  local list = split(m)
  if list and mine[list] then
    redis.call('ZREM', KEYS[1], m)
    n = n + 1
  end
end
return n
"""


# KEYS: the rate key; ARGV: interval seconds. Hands out start times at least interval
# apart, on the server's clock, for every worker sharing the limit.
RESERVE_RATE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local start = math.max(now, tonumber(redis.call('GET', KEYS[1]) or now))
local interval = tonumber(ARGV[1])
redis.call('SET', KEYS[1], tostring(start + interval), 'PX',
           math.ceil((start + interval - now) * 1000) + 60000)
return tostring(start - now)
"""


# Binding a reply queue as kombu 5.7 does: the member goes into the exchange's table and
# the table's deadline (kombu's sweeper deletes overdue tables) moves to at least an hour
# from now, by the server's clock, so neither side's sweeper removes a live binding.
BIND_REPLY = """
redis.call('SADD', KEYS[1], ARGV[1])
local now = redis.call('TIME')
local ms = tonumber(now[1]) * 1000 + math.floor(tonumber(now[2]) / 1000)
redis.call('ZADD', KEYS[2], 'GT', ms + 3600000, ARGV[2])
"""


# KEYS: delayed, consumers, landing-source, then the lists of each queue (ARGV[3] per
# queue, lowest priority step first); ARGV: unacked prefix, landing prefix, steps.
# Returns per queue: the steps' list lengths, then delayed, then unacked (fetched into a
# consumer's hash, or moved into its landing list by a blocking wait).
QUEUE_STATS = _SPLIT + """
local steps = tonumber(ARGV[3])
local owner, out = {}, {}
for i = 4, #KEYS do
  local q = math.floor((i - 4) / steps)
  owner[KEYS[i]] = q
  out[#out + 1] = redis.call('LLEN', KEYS[i])
  if (i - 3) % steps == 0 then out[#out + 1] = 0; out[#out + 1] = 0 end
end
local width = steps + 2
local function add(list, offset)
  local q = owner[list]
  if q then out[q * width + offset] = out[q * width + offset] + 1 end
end
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do add((split(m)), steps + 1) end
for _, id in ipairs(redis.call('ZRANGE', KEYS[2], 0, -1)) do
  for _, v in ipairs(redis.call('HVALS', ARGV[1] .. id)) do add((split(v)), steps + 2) end
  local src = redis.call('HGET', KEYS[3], id)
  if src and owner[src] then
    local q = owner[src]
    out[q * width + steps + 2] = out[q * width + steps + 2] + redis.call('LLEN', ARGV[2] .. id)
  end
end
return out
"""

# KEYS: dead-letter list; ARGV: id (the record's SHA-1), 'requeue' or 'delete', key prefix.
# A requeued message goes to the back of the list it was taken from, as a new message.
TAKE_DEAD = """
for _, raw in ipairs(redis.call('LRANGE', KEYS[1], 0, -1)) do
  if redis.sha1hex(raw) == ARGV[1] then
    if ARGV[2] == 'requeue' then
      local ok, d = pcall(cjson.decode, raw)
      if not ok or type(d) ~= 'table' or type(d.queue) ~= 'string'
          or type(d.payload) ~= 'string' then
        return -1
      end
      local list = d.queue
      if string.sub(list, 1, #ARGV[3]) ~= ARGV[3] then list = ARGV[3] .. list end
      redis.call('LPUSH', list, d.payload)
    end
    redis.call('LREM', KEYS[1], 1, raw)
    return 1
  end
end
return 0
"""


class _Process:
    """What a broker holds per process: the client, its scripts, the tag counter."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.fetch = client.register_script(FETCH)
        self.requeue = client.register_script(REQUEUE)
        self.defer = client.register_script(DEFER)
        self.start = client.register_script(START)
        self.dead_letter = client.register_script(DEAD_LETTER)
        self.release = client.register_script(RELEASE)
        self.size = client.register_script(SIZE)
        self.purge = client.register_script(PURGE)
        self.reserve_rate = client.register_script(RESERVE_RATE)
        self.bind_reply = client.register_script(BIND_REPLY)
        self.queue_stats = client.register_script(QUEUE_STATS)
        self.take_dead = client.register_script(TAKE_DEAD)
        self.next_tag = 1
        self.rotor = 0
        self.declared: set[str] = set()
        self.fetch_lock = threading.Lock()


class RedisBroker(FullBroker):
    """The Redis transport; see the module docstring for the key layout.

    Transport options honoured: ``priority_steps``, ``sep``, ``global_keyprefix``,
    ``delayed_delivery`` (module docstring), and the connection options of
    :mod:`celeriac.utils.redis` (with ``sentinel://`` URLs: ``master_name``,
    ``sentinel_kwargs``, ``min_other_sentinels``).
    """

    def __init__(self, url: str, options: dict[str, Any] | None = None) -> None:
        super().__init__(url, options)
        self._redis = RedisConnector(url, self.options, "the Redis broker")
        steps = self.options.get("priority_steps") or DEFAULT_PRIORITY_STEPS
        self.priority_steps = sorted({int(s) for s in steps})
        self.sep: str = self.options.get("sep") or DEFAULT_SEP
        self.prefix: str = self.options.get("global_keyprefix") or ""
        delayed = self.options.get("delayed_delivery") or "queue"
        if delayed not in DELAYED_DELIVERY:
            raise ImproperlyConfigured(
                f"broker transport option delayed_delivery={delayed!r}; choose one of: "
                f"{', '.join(DELAYED_DELIVERY)}")
        #: eta messages wait in the delayed set (False: on the queue, as with Celery)
        self.delay_in_broker = delayed == "broker"
        p = self.prefix
        self._delayed = p + "celeriac.delayed"
        self._consumers = p + "celeriac.consumers"
        self._last_beat = p + "celeriac.last-beat"
        self._landing_source = p + "celeriac.landing-source"
        self._dead = p + self.dead_letter_queue
        self._revoked = p + "celeriac.revoked"
        self._revoked_signals = p + "celeriac.revoked-terminate"
        self._revoked_version = p + "celeriac.revoked-version"
        self._proc: _Process | None = None
        # tags of ended early-acked tasks whose notes go with the next call
        self._ended: deque[Any] = deque()
        # (pid, consumer id) last put to use, to tell a forked child it needs its own id
        self._claim = (os.getpid(), self.consumer_id)

    # -- per-process state ---------------------------------------------------------
    def _p(self) -> _Process:
        client = self._redis.client()
        proc = self._proc
        if proc is not None and proc.client is client:
            return proc
        with process_lock():
            if self._proc is None or self._proc.client is not client:
                # A forked child is a different consumer: sharing the parent's id would
                # mix both processes' messages in one unacked hash and landing list.
                pid = os.getpid()
                if self._claim[0] != pid and self._claim[1] == self.consumer_id:
                    self.consumer_id = new_consumer_id()
                self._claim = (pid, self.consumer_id)
                self._proc = _Process(client)
            return self._proc

    def _unacked(self, consumer_id: str | None = None) -> str:
        return f"{self.prefix}celeriac.unacked.{consumer_id or self.consumer_id}"

    def _started(self, consumer_id: str | None = None) -> str:
        return f"{self.prefix}celeriac.started.{consumer_id or self.consumer_id}"

    def _landing(self) -> str:
        return f"{self.prefix}celeriac.landing.{self.consumer_id}"

    # -- naming --------------------------------------------------------------------
    def _step(self, priority: int | None) -> int:
        p = min(max(int(priority or 0), 0), 9)
        below = [s for s in self.priority_steps if s <= p]
        return below[-1] if below else self.priority_steps[0]

    def list_name(self, queue: str, priority: int | None = 0) -> str:
        """kombu's list for ``queue`` at ``priority`` (without the key prefix)."""
        return self._step_list(queue, self._step(priority))

    def _step_list(self, queue: str, step: int) -> str:
        return f"{queue}{self.sep}{step}" if step else queue

    def _lists(self, queue: str) -> list[str]:
        return [self.prefix + self._step_list(queue, s) for s in self.priority_steps]

    def _strip(self, key: bytes) -> str:
        name = key.decode("utf-8", "surrogateescape")
        return name[len(self.prefix):] if self.prefix and name.startswith(self.prefix) else name

    # -- producing -----------------------------------------------------------------
    def publish(self, queue: str, payload: str, priority: int = 0,
                eta: float | None = None) -> None:
        self._publish_on(self._p().client, Outgoing(queue, payload, priority, eta),
                         time.time())

    def publish_many(self, messages: Sequence[Outgoing]) -> None:
        pipe = self._p().client.pipeline(transaction=False)
        now = time.time()
        for message in messages:
            self._publish_on(pipe, message, now)
        pipe.execute()

    def _publish_on(self, client: Any, m: Outgoing, now: float) -> None:
        key = self.prefix + self.list_name(m.queue, m.priority)
        if m.eta is not None and self.delay_in_broker and m.eta > now:
            client.zadd(self._delayed, {f"{key}\n{m.payload}": m.eta})
        else:
            client.lpush(key, m.payload)

    def declare_queue(self, queue: str) -> None:
        """Write kombu's binding so Celery producers publishing to the exchange find it."""
        member = f"{queue}{self.sep}{self.sep}{queue}"
        pipe = self._p().client.pipeline(transaction=False)
        pipe.sadd(f"{self.prefix}_kombu.binding.{queue}", member)
        pipe.sadd(f"{self.prefix}_kombu.binding_permanent.{queue}", member)
        pipe.execute()

    # -- consuming -----------------------------------------------------------------
    def fetch(self, queues: Sequence[str], limit: int, timeout: float) -> list[Delivery]:
        if limit <= 0:
            return []
        proc = self._p()
        deadline = time.monotonic() + max(timeout, 0.0)
        sources = [self.prefix + self._step_list(q, s)
                   for s in self.priority_steps for q in queues]
        waits_on = [self.prefix + self._step_list(q, self.priority_steps[0]) for q in queues]
        if not sources:
            time.sleep(max(timeout, 0.0))
            return []
        # One consumer has one landing list; two threads blocking on it at once would
        # confuse which list its message came from.
        with proc.fetch_lock:
            for q in queues:
                if q not in proc.declared:
                    self.declare_queue(q)
                    proc.declared.add(q)
            while True:
                out, next_due = self._take(proc, sources, limit)
                if out:
                    return out
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return []
                wait = remaining
                if next_due is not None:
                    wait = min(wait, next_due - time.time())
                    if wait <= 0:
                        continue
                if len(sources) > 1:
                    wait = min(wait, ROTATE_INTERVAL)
                limit_block = self._redis.block_limit()
                if limit_block is not None:
                    wait = min(wait, limit_block)
                source = waits_on[proc.rotor % len(waits_on)]
                proc.rotor += 1
                pipe = proc.client.pipeline(transaction=False)
                pipe.hset(self._landing_source, self.consumer_id, source)
                pipe.blmove(source, self._landing(), round(max(wait, MIN_BLOCK), 3),
                            "RIGHT", "LEFT")
                try:
                    pipe.execute()
                except (self._redis.redis.ConnectionError, self._redis.redis.TimeoutError):
                    # Whatever the server did is safe: a moved message waits in the
                    # landing list for the next script. If the server is really gone,
                    # that script call raises.
                    pass

    def _take(self, proc: _Process, sources: list[str],
              limit: int) -> tuple[list[Delivery], float | None]:
        keys = [self._delayed, self._unacked(), self._landing(), self._landing_source,
                *sources]
        args = [repr(time.time()), limit, proc.next_tag, self.consumer_id, PROMOTE_BATCH]
        ended = take_all(self._ended)
        commands: list[tuple[Any, ...]] = [("HDEL", self._started(), *ended)] if ended else []
        commands.append(("EVALSHA", proc.fetch.sha, len(keys), *keys, *args))
        try:
            reply = self._redis.line().call(*commands)[-1]
        except Exception:  # noqa: BLE001 - not loaded yet, or the line broke
            # Safe to repeat: the script hands out again what it moved last time.
            if ended:
                proc.client.hdel(self._started(), *ended)
            reply = proc.fetch(keys=keys, args=args)
        next_due = float(reply[0]) if reply[0] else None
        out = [Delivery(int(reply[i]), self._strip(reply[i + 1]),
                        reply[i + 2].decode("utf-8", "surrogateescape"))
               for i in range(1, len(reply), 3)]
        if out:
            proc.next_tag = out[-1].tag + 1
        return out, next_due

    def ack(self, deliveries: Sequence[Delivery]) -> None:
        if not deliveries:
            return
        tags = [d.tag for d in deliveries]
        try:
            self._redis.line().call(("HDEL", self._unacked(), *tags))
        except Exception:  # noqa: BLE001 - HDEL is idempotent: say it again, with retries
            self._p().client.hdel(self._unacked(), *tags)

    def ack_started(self, deliveries: Sequence[Delivery]) -> Callable[[], None]:
        if not deliveries:
            return nothing_to_wait_for
        proc = self._p()
        keys = [self._unacked(), self._started()]
        tags = [d.tag for d in deliveries]
        args = [len(tags), *tags, *take_all(self._ended)]
        try:
            ticket = self._redis.line().send(("EVALSHA", proc.start.sha, len(keys), *keys,
                                              *args))
        except Exception:  # noqa: BLE001 - the line broke: say it again, with retries
            proc.start(keys=keys, args=args)
            return nothing_to_wait_for

        def wait() -> None:
            try:
                ticket.replies()
            except Exception:  # noqa: BLE001 - not loaded yet, or the reply was lost:
                proc.start(keys=keys, args=args)  # safe to repeat

        return wait

    def finished(self, deliveries: Sequence[Delivery]) -> None:
        self._ended.extend(d.tag for d in deliveries)

    def requeue(self, deliveries: Sequence[Delivery]) -> None:
        if deliveries:
            self._p().requeue(keys=[self._unacked(), self._started()],
                              args=[d.tag for d in deliveries])

    def defer(self, delivery: Delivery, eta: float) -> None:
        self._p().defer(keys=[self._unacked(), self._delayed], args=[delivery.tag, repr(eta)])

    def dead_letter(self, delivery: Delivery, reason: str) -> None:
        record = json.dumps({"queue": delivery.queue, "reason": reason,
                             "time": time.time(), "payload": delivery.payload})
        self._p().dead_letter(keys=[self._unacked(), self._dead], args=[delivery.tag, record])

    # -- liveness ------------------------------------------------------------------
    def _release(self, mode: str, ids: Sequence[str], lost: Sequence[Any] = (),
                 drop: Sequence[Any] = ()) -> Released:
        reply = self._p().release(
            keys=[self._consumers, self._landing_source, self._dead, self._last_beat],
            args=[mode, repr(self.lost_timeout), f"{self.prefix}celeriac.unacked.",
                  f"{self.prefix}celeriac.landing.", f"{self.prefix}celeriac.losses.",
                  self.max_redeliveries, poison_reason(999).replace("999", "%d"),
                  f"{self.prefix}celeriac.started.",
                  len(ids), *ids, len(lost), *lost, len(drop), *drop])
        released = Released(int(reply[0]))
        poisoned = int(reply[1])
        for raw in reply[2:2 + poisoned]:
            record = json.loads(raw)
            released.poisoned.append(DeadLetter(record["queue"], record["reason"],
                                                record["payload"], float(record["time"])))
        released.interrupted = [raw.decode("utf-8", "surrogateescape")
                                for raw in reply[2 + poisoned:]]
        return released

    def heartbeat(self, consumer_ids: Sequence[str] | None = None) -> Released:
        self._p()  # first, so that a forked child beats under its own id
        return self._release("beat", list(consumer_ids or (self.consumer_id,)))

    def forget_consumer(self, consumer_id: str | None = None, lost: Sequence[Any] = (),
                        drop: Sequence[Any] = ()) -> Released:
        self._p()
        if not consumer_id or consumer_id == self.consumer_id:
            drop = [*drop, *take_all(self._ended)]
        return self._release("forget", [consumer_id or self.consumer_id], lost, drop)

    # -- management ----------------------------------------------------------------
    def purge(self, queue: str) -> int:
        return int(self._p().purge(keys=[self._delayed, *self._lists(queue)]))

    def size(self, queue: str) -> int:
        return int(self._p().size(keys=[self._delayed, *self._lists(queue)]))

    def revoke(self, task_ids: Sequence[str], terminate: str | None, expires: float) -> None:
        now = time.time()
        pipe = self._p().client.pipeline(transaction=True)
        pipe.zremrangebyscore(self._revoked, "-inf", now)
        pipe.zadd(self._revoked, {task_id: now + expires for task_id in task_ids})
        if terminate:
            pipe.hset(self._revoked_signals, mapping={t: terminate for t in task_ids})
        pipe.incr(self._revoked_version)
        pipe.execute()

    def revoked(self, since: Any = None) -> tuple[Any, dict[str, str | None] | None]:
        client = self._p().client
        version = client.get(self._revoked_version)
        if version == since:
            return since, None
        pipe = client.pipeline(transaction=True)
        pipe.get(self._revoked_version)
        pipe.zrangebyscore(self._revoked, time.time(), "+inf")
        pipe.hgetall(self._revoked_signals)
        version, ids, signals = pipe.execute()
        return version, {i.decode(): (signals.get(i) or b"").decode() or None for i in ids}

    def reserve_rate(self, key: str, interval: float) -> float:
        # The server's clock spaces the start times; the reply is relative to it, so a
        # worker whose clock differs still waits the right amount.
        wait = float(self._p().reserve_rate(keys=[f"{self.prefix}celeriac.rate.{key}"],
                                            args=[repr(interval)]))
        return time.time() + wait

    def dead_letters(self, limit: int = 100) -> list[DeadLetter]:
        out: list[DeadLetter] = []
        if limit <= 0:
            return out
        for raw in self._p().client.lrange(self._dead, 0, limit - 1):
            try:
                d = json.loads(raw)
                out.append(DeadLetter(d["queue"], d["reason"], d["payload"], float(d["time"]),
                                      hashlib.sha1(raw).hexdigest()))
            except (ValueError, KeyError, TypeError):
                continue
        return out

    def requeue_dead_letter(self, id: str) -> bool:
        return self._take_dead(id, "requeue")

    def delete_dead_letter(self, id: str) -> bool:
        return self._take_dead(id, "delete")

    def _take_dead(self, id: str, mode: str) -> bool:
        done = int(self._p().take_dead(keys=[self._dead], args=[id, mode, self.prefix]))
        if done < 0:
            raise ValueError(f"dead letter {id} names no queue and payload: it can only "
                             "be deleted")
        return done == 1

    def queue_stats(self, queues: Sequence[str]) -> list[QueueCounts]:
        if not queues:
            return []
        steps = self.priority_steps
        keys = [self._delayed, self._consumers, self._landing_source,
                *(k for q in queues for k in self._lists(q))]
        reply = [int(n) for n in self._p().queue_stats(
            keys=keys, args=[f"{self.prefix}celeriac.unacked.",
                             f"{self.prefix}celeriac.landing.", len(steps)])]
        out = []
        width = len(steps) + 2
        for i, queue in enumerate(queues):
            row = reply[i * width:(i + 1) * width]
            by_priority = {step: n for step, n in zip(steps, row) if n}
            out.append(QueueCounts(queue, sum(row[:len(steps)]), by_priority,
                                   row[-2], row[-1]))
        return out

    # -- fanout: events and remote control, where kombu puts them ---------------------
    def fanout_channel(self, exchange: str, routing_key: str = "") -> str:
        """kombu's pub/sub channel: ``/<db>.<exchange>[/<routing key>]``."""
        db = self._p().client.connection_pool.connection_kwargs.get("db", 0) or 0
        base = f"{self.prefix}/{db}.{exchange}"
        return f"{base}/{routing_key}" if routing_key else base

    def broadcast(self, exchange: str, notices: Sequence[Notice]) -> None:
        pipe = self._p().client.pipeline(transaction=False)
        for notice in notices:
            pipe.publish(self.fanout_channel(exchange, notice.routing_key),
                         notice_envelope(exchange, notice))
        pipe.execute()

    def listen(self, exchange: str, patterns: Sequence[str] = ("#",)) -> Listener:
        return _PubSubListener(self, exchange, patterns)

    def reply(self, exchange: str, notices: Sequence[Notice]) -> None:
        client = self._p().client
        table = client.smembers(f"{self.prefix}_kombu.binding.{exchange}")
        bound: dict[str, list[str]] = {}
        for member in table:
            parts = member.decode("utf-8", "replace").split(self.sep)
            if len(parts) == 3:
                bound.setdefault(parts[0], []).append(parts[2])
        pipe = client.pipeline(transaction=False)
        for notice in notices:
            for queue in bound.get(notice.routing_key, ()):
                pipe.lpush(self.prefix + queue, notice_envelope(exchange, notice))
        pipe.execute()

    def replies(self, exchange: str, routing_key: str) -> Listener:
        return _ReplyQueue(self, exchange, routing_key)

    def close(self) -> None:
        self._redis.close()
        self._proc = None


def notice_envelope(exchange: str, notice: Notice) -> str:
    """A notice in kombu's Redis envelope (what Celery's receivers decode)."""
    import base64
    import uuid

    return json.dumps({
        "body": base64.b64encode(notice.body.encode()).decode("ascii"),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": notice.headers,
        "properties": {"delivery_mode": 1, "priority": 0, "body_encoding": "base64",
                       "delivery_info": {"exchange": exchange,
                                         "routing_key": notice.routing_key},
                       "delivery_tag": str(uuid.uuid4())},
    })


def read_notice(raw: bytes | str, routing_key: str) -> Notice | None:
    """The notice in a kombu envelope; None for anything that is not a JSON one."""
    import base64

    try:
        env = json.loads(raw)
        if env.get("content-type", "application/json") != "application/json":
            return None
        props = env.get("properties") or {}
        body = env["body"]
        if props.get("body_encoding") == "base64":
            body = base64.b64decode(body).decode("utf-8")
        elif not isinstance(body, str):
            body = json.dumps(body)
        info = props.get("delivery_info") or {}
        headers = env.get("headers")
        return Notice(str(info.get("routing_key") or routing_key), body,
                      headers if isinstance(headers, dict) else {})
    except (ValueError, KeyError, TypeError, AttributeError):
        logger.debug("ignored a malformed notice: %r", raw[:200])
        return None


#: seconds a new listener waits for Redis to confirm its subscriptions
SUBSCRIBE_TIMEOUT = 2.0
#: seconds the rest of a pub/sub message may take to arrive once its first byte has
MESSAGE_READ_TIMEOUT = 2.0


class _PubSubListener(Listener):
    """``PSUBSCRIBE`` on kombu's channels; re-subscribes after a lost connection."""

    def __init__(self, broker: RedisBroker, exchange: str, patterns: Sequence[str]) -> None:
        self.broker = broker
        self.exchange = exchange
        self.patterns = list(patterns)
        base = broker.fanout_channel(exchange)
        self.prefix_length = len(base) + 1
        # kombu turns '#' into a glob '*'; the exact topic match is done on arrival
        self.globs = [f"{base}/{p.replace('#', '*')}" if p else base for p in self.patterns]
        if "#" in self.patterns:
            self.globs.append(base)  # a message sent with no routing key
        self.pubsub: Any = None
        self._subscribe()

    def _subscribe(self) -> None:
        pubsub = self.broker._p().client.pubsub()
        pubsub.psubscribe(*self.globs)
        # Wait for the server to confirm: a listener is subscribed when made, so what is
        # sent after (a request right after the worker said it was ready) is not missed.
        confirmed = 0
        deadline = time.monotonic() + SUBSCRIBE_TIMEOUT
        while confirmed < len(self.globs) and time.monotonic() < deadline:
            message = pubsub.get_message(timeout=max(0.0, deadline - time.monotonic()))
            if message is not None and message.get("type") == "psubscribe":
                confirmed += 1
        connection = getattr(pubsub, "connection", None)
        if connection is not None:
            # redis-py re-makes a dropped pub/sub connection inside get_message, by its
            # retry, and subscribes again: without this callback nothing would tell
            connection.register_connect_callback(self._connected_again)
        self.pubsub = pubsub

    def _connected_again(self, connection: Any) -> None:
        self.reconnects += 1
        logger.debug("pub/sub listener on %s made its connection again", self.exchange)

    def get(self, timeout: float) -> list[Notice]:
        found: list[Notice] = []
        deadline = time.monotonic() + timeout
        try:
            if self.pubsub is None:
                self._subscribe()
            while True:
                wait = 0.0 if found else max(0.0, deadline - time.monotonic())
                # redis-py reads a message with the timeout it waited for its first
                # byte: a message still arriving in pieces (a task.multi list is tens of
                # KB) times out at 0 s, and its retry re-makes the connection, losing
                # what the socket held. So the wait for data is ours, and the read that
                # follows has time to take the whole message.
                if not self.pubsub.connection.can_read(timeout=wait):
                    if found or time.monotonic() >= deadline:
                        return found
                    continue
                message = self.pubsub.get_message(timeout=MESSAGE_READ_TIMEOUT)
                if message is None:
                    continue
                if message.get("type") != "pmessage":
                    continue
                channel = message["channel"].decode("utf-8", "replace")
                key = channel[self.prefix_length:]
                notice = read_notice(message["data"], key)
                if notice is not None and any(topic_matches(p, notice.routing_key)
                                              for p in self.patterns):
                    found.append(notice)
                if len(found) >= 1000:
                    return found
        except Exception as exc:  # noqa: BLE001 - a listener outlives its connection
            # What was published until the new subscription stands is missed, and what
            # the socket held unread is gone: counted for monitors, which say so; logged
            # quietly, as an outage is reported once by whoever meets it first
            self.reconnects += 1
            logger.debug("pub/sub listener on %s lost its connection: %r", self.exchange, exc)
            self._drop()
            time.sleep(min(0.5, max(0.0, deadline - time.monotonic())))
            return found

    def _drop(self) -> None:
        pubsub, self.pubsub = self.pubsub, None
        if pubsub is not None:
            try:
                pubsub.close()
            except Exception:  # noqa: BLE001 - already broken
                pass

    def close(self) -> None:
        self._drop()


class _ReplyQueue(Listener):
    """A kombu reply queue: the list ``<key>.<exchange>``, bound in the exchange's
    table so that the answering worker (celeriac's or Celery's) finds it."""

    def __init__(self, broker: RedisBroker, exchange: str, routing_key: str) -> None:
        self.broker = broker
        self.exchange = exchange
        self.routing_key = routing_key
        self.queue = f"{routing_key}.{exchange}"
        self.member = broker.sep.join([routing_key, "", self.queue])
        self.table = f"{broker.prefix}_kombu.binding.{exchange}"
        proc = broker._p()
        proc.bind_reply(keys=[self.table, f"{broker.prefix}_kombu.binding_deadlines"],
                        args=[self.member, exchange])

    def get(self, timeout: float) -> list[Notice]:
        client = self.broker._p().client
        key = self.broker.prefix + self.queue
        limit = self.broker._redis.block_limit()
        if limit is not None:
            timeout = min(timeout, limit)
        found: list[Notice] = []
        try:
            if timeout >= 0.01:
                popped = client.brpop([key], timeout=timeout)
                raws = [popped[1]] if popped else []
            else:
                raws = []
            while True:
                raw = client.rpop(key)
                if raw is None:
                    break
                raws.append(raw)
        except Exception as exc:  # noqa: BLE001 - the caller asks again
            logger.debug("reply queue read failed: %r", exc)
            return found
        for raw in raws:
            notice = read_notice(raw, self.routing_key)
            if notice is not None:
                found.append(notice)
        return found

    def close(self) -> None:
        try:
            pipe = self.broker._p().client.pipeline(transaction=False)
            pipe.srem(self.table, self.member)
            pipe.delete(*[self.broker.prefix + self.broker._step_list(self.queue, s)
                          for s in self.broker.priority_steps])
            pipe.execute()
        except Exception as exc:  # noqa: BLE001 - it expires with kombu's sweep
            logger.debug("could not remove reply queue %s: %r", self.queue, exc)
