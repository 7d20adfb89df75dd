"""The assignment ``channel -> process`` in Redis, what each process holds, and its reports.

The assignment is the truth of who should hold a channel; a worker follows it (joins what is
assigned to it, parts what is not) and reports back what the server confirmed. Contracts:

- :meth:`Assignment.assign` and :meth:`Assignment.unassign` change the hash and each process's
  own set of channels in one atomic script, so that a channel is assigned to at most one process
  at any moment; every process whose set changed gets a ``sync`` notice on its command stream.
- With ``coordinator.replicas = 2`` a channel also has a second copy (``P replicas``,
  :meth:`Assignment.replicas`), never on its owner: a process's set holds the channels it
  holds either way (it joins both alike), and the same script changes both hashes, so that a
  second copy promoted to owner stays in its process's set throughout.
  A notice carries no data (the sets are the truth): one lost or read twice changes nothing.
- A worker records what it holds (:meth:`Assignment.record_held`), and a worker that gives a
  channel up to another process parts it only once :meth:`Assignment.holding` says the other
  one holds it (make-before-break), or its deadline passed.
- Join outcomes and lost channels go to the bounded ``reports`` stream
  (:meth:`Assignment.report`), read by whoever waits for them (:meth:`Assignment.reports`).

This is the thin path used until the coordinator writes the assignment under its lease; the
coordinator replaces the writers, not the readers.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio

from tmi_cluster.bus.client import block_ms, describe_client, translated
from tmi_cluster.bus.keys import Keys
from tmi_cluster.errors import RedisUnavailableError, StaleLeaseError

__all__ = ["REPORTS_MAXLEN", "Assignment", "Report"]

#: About how many reports the ``reports`` stream keeps (trimmed approximately).
REPORTS_MAXLEN = 10_000
#: About how many notices a process's command stream keeps.
_NOTICES_MAXLEN = 100

# KEYS[1]: the assignment hash, KEYS[2]: the coordinator's fence, KEYS[3]: the second copies'
# hash. ARGV[1]: the key prefix, ARGV[2]: the writer's fencing token ('' for an unfenced
# write); then triples of channel, owner, second copy, each '' for none and '=' for unchanged.
# A second copy equal to the owner is none. Returns the previous owner of each channel ('' for
# none), or the error 'STALE <current>' before writing anything when the token is not the
# current one. Each process's set (the channels it holds, either copy) is
# ``<prefix>process:<id>:channels`` and its command stream ``<prefix>commands:process:<id>``
# (the names of Keys.process_channels and Keys.process_commands).
_ASSIGN = """
local prefix = ARGV[1]
if ARGV[2] ~= '' then
  local fence = redis.call('GET', KEYS[2]) or '0'
  if fence ~= ARGV[2] then
    return redis.error_reply('STALE ' .. fence)
  end
end
local previous = {}
local touched = {}
for i = 3, #ARGV, 3 do
  local channel, owner, second = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local old = redis.call('HGET', KEYS[1], channel) or ''
  local old_second = redis.call('HGET', KEYS[3], channel) or ''
  if owner == '=' then owner = old end
  if second == '=' then second = old_second end
  if second == owner then second = '' end
  if owner ~= old or second ~= old_second then
    local before, after = {}, {}
    if old ~= '' then before[old] = true end
    if old_second ~= '' then before[old_second] = true end
    if owner ~= '' then after[owner] = true end
    if second ~= '' then after[second] = true end
    for process, _ in pairs(before) do
      if not after[process] then
        redis.call('SREM', prefix .. 'process:' .. process .. ':channels', channel)
        touched[process] = true
      end
    end
    for process, _ in pairs(after) do
      if not before[process] then
        redis.call('SADD', prefix .. 'process:' .. process .. ':channels', channel)
        touched[process] = true
      end
    end
    if owner == '' then redis.call('HDEL', KEYS[1], channel)
    else redis.call('HSET', KEYS[1], channel, owner) end
    if second == '' then redis.call('HDEL', KEYS[3], channel)
    else redis.call('HSET', KEYS[3], channel, second) end
  end
  previous[#previous + 1] = old
end
for process, _ in pairs(touched) do
  redis.call('XADD', prefix .. 'commands:process:' .. process, 'MAXLEN', '~', ARGV_MAXLEN,
             '*', 'op', 'sync')
end
return previous
""".replace("ARGV_MAXLEN", str(_NOTICES_MAXLEN))
#: In a triple of the script: the field keeps its value.
_SAME = "="


@dataclass(frozen=True, slots=True)
class Report:
    """One line of the ``reports`` stream: what happened to a channel on a process."""

    id: str
    process: str
    channel: str
    result: str


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


# KEYS[1] heartbeat, KEYS[2..5] held, notices, epoch, guarding, KEYS[6] the draining hash;
# ARGV[1] process id, ARGV[2] "1" to keep the keys of a process whose heartbeat exists.
_FORGET = """
if ARGV[2] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5])
redis.call('HDEL', KEYS[6], ARGV[1])
return 1
"""


class Assignment:
    """The assignment and the holdings of one cluster (``keys``), through ``client``.

    Every method raises :class:`~tmi_cluster.errors.RedisUnavailableError` when Redis cannot be
    reached; none waits without a deadline of its own except :meth:`notices` and
    :meth:`reports`, which take one.
    """

    def __init__(
        self, client: redis.asyncio.Redis, keys: Keys, *, token: int | None = None
    ) -> None:
        self.client = client
        self.keys = keys
        #: The coordinator's fencing token (:mod:`tmi_cluster.bus.lease`): with one, every
        #: write is carried out only while it is current, else StaleLeaseError and nothing is
        #: written. None: unfenced (the CLI's and the supervisors' thin path).
        self.token = token
        self._script = client.register_script(_ASSIGN)
        self._forget = client.register_script(_FORGET)
        self._where = describe_client(client)

    # -- writers (the coordinator's, and until it exists the CLI's and the supervisor's) -------

    async def assign(
        self, channels: Mapping[str, str], replicas: Mapping[str, str | None] | None = None
    ) -> dict[str, str | None]:
        """Assign each channel to its process, and each of ``replicas`` its second copy (None:
        none), atomically; return each channel's previous owner. A second copy given to the
        channel's owner is none."""
        seconds = replicas or {}
        triples = [
            (c, p, _SAME if c not in seconds else seconds[c] or "") for c, p in channels.items()
        ]
        triples += [(c, _SAME, p or "") for c, p in seconds.items() if c not in channels]
        return await self._run(triples)

    async def unassign(self, channels: Iterable[str]) -> dict[str, str | None]:
        """Assign channels to no one (nor their second copies); return each one's previous
        owner."""
        return await self._run([(channel, "", "") for channel in channels])

    async def _run(self, triples: Sequence[tuple[str, str, str]]) -> dict[str, str | None]:
        previous: dict[str, str | None] = {}
        for start in range(0, len(triples), 1000):  # bounded scripts: Redis serves others between
            chunk = triples[start : start + 1000]
            token = "" if self.token is None else str(self.token)
            argv = [self.keys.prefix, token, *(x for triple in chunk for x in triple)]
            try:
                with translated(self._where):
                    owners = await self._script(
                        keys=[
                            self.keys.assignment,
                            self.keys.coordinator_fence,
                            self.keys.replicas,
                        ],
                        args=argv,
                    )
            except RedisUnavailableError as error:
                if str(error.__cause__).startswith("STALE"):
                    raise StaleLeaseError(
                        f"fencing token {self.token} is not current "
                        f"({str(error.__cause__).split()[-1]} is): another coordinator took "
                        "over; nothing was written"
                    ) from error
                raise
            for (channel, _, _), owner in zip(chunk, owners, strict=True):
                previous[channel] = _text(owner) or None
        return previous

    async def forget(self, process_id: str, *, unless_alive: bool = False) -> bool:
        """Delete the keys of a process that is gone (its heartbeat, what it held, its notices,
        the channels it guarded, its draining mark); the channels still assigned to it stay for
        the coordinator to place again. With ``unless_alive``, nothing is deleted while its
        heartbeat exists (checked and deleted in one script): a process found dead that beats
        again (back from a cut-off) keeps its keys, which are its own again. True when the
        keys were deleted."""
        keys = [
            self.keys.process_heartbeat(process_id),
            self.keys.process_held(process_id),
            self.keys.process_commands(process_id),
            self.keys.process_epoch(process_id),
            self.keys.guarding(process_id),
            self.keys.draining,
        ]
        with translated(self._where):
            done: Any = await self._forget(
                keys=keys, args=[process_id, "1" if unless_alive else ""]
            )
        return bool(done)

    # -- readers ------------------------------------------------------------------------------

    async def owners(self, channels: Sequence[str]) -> dict[str, str | None]:
        """The process each channel is assigned to (None: no one)."""
        if not channels:
            return {}
        with translated(self._where):
            values = await self.client.hmget(self.keys.assignment, list(channels))
        return {c: _text(v) if v else None for c, v in zip(channels, values, strict=True)}

    async def replicas(self) -> dict[str, str]:
        """The second copies: channel -> process (empty with ``coordinator.replicas = 1``)."""
        with translated(self._where):
            raw: Any = await self.client.hgetall(self.keys.replicas)
        return {_text(k): _text(v) for k, v in raw.items()}

    async def seconds(self, channels: Sequence[str]) -> dict[str, str | None]:
        """The process holding each channel's second copy (None: none)."""
        if not channels:
            return {}
        with translated(self._where):
            values = await self.client.hmget(self.keys.replicas, list(channels))
        return {c: _text(v) if v else None for c, v in zip(channels, values, strict=True)}

    async def of(self, process_id: str) -> set[str]:
        """The channels assigned to a process (as owner or second copy)."""
        with translated(self._where):
            members = await self.client.smembers(self.keys.process_channels(process_id))
        return {_text(m) for m in members}

    async def all(self) -> dict[str, str]:
        """The whole assignment: channel -> process."""
        with translated(self._where):
            raw: Any = await self.client.hgetall(self.keys.assignment)
        return {_text(k): _text(v) for k, v in raw.items()}

    async def held_of(self, process_ids: Sequence[str]) -> dict[str, set[str]]:
        """What each process is recorded to hold (one round trip)."""
        if not process_ids:
            return {}
        with translated(self._where):
            async with self.client.pipeline(transaction=False) as pipe:
                for process_id in process_ids:
                    pipe.smembers(self.keys.process_held(process_id))
                answers: Any = await pipe.execute()
        return {
            p: {_text(c) for c in channels}
            for p, channels in zip(process_ids, answers, strict=True)
        }

    # -- the worker's side --------------------------------------------------------------------

    async def record_held(
        self, process_id: str, joined: Iterable[str] = (), left: Iterable[str] = ()
    ) -> None:
        """Record channels the process now holds (``joined``) and no longer holds (``left``)."""
        key = self.keys.process_held(process_id)
        joined, left = list(joined), list(left)
        async with self.client.pipeline(transaction=True) as pipe:
            if joined:
                pipe.sadd(key, *joined)
            if left:
                pipe.srem(key, *left)
            if joined or left:
                with translated(self._where):
                    await pipe.execute()

    async def set_held(
        self, process_id: str, channels: Iterable[str], *, epoch: str | None = None
    ) -> None:
        """Replace what the process is recorded to hold (at its start, and to repair); with
        ``epoch``, also say that this is all it holds under that assignment epoch."""
        key = self.keys.process_held(process_id)
        members = list(channels)
        async with self.client.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            if members:
                pipe.sadd(key, *members)
            if epoch is not None:
                pipe.set(self.keys.process_epoch(process_id), epoch)
            with translated(self._where):
                await pipe.execute()

    async def reported(self, process_ids: Sequence[str]) -> dict[str, str | None]:
        """The assignment epoch each process last recorded its held set for."""
        if not process_ids:
            return {}
        with translated(self._where):
            values = await self.client.mget([self.keys.process_epoch(p) for p in process_ids])
        return {p: _text(v) if v else None for p, v in zip(process_ids, values, strict=True)}

    async def held(self, process_id: str) -> set[str]:
        """What a process is recorded to hold."""
        with translated(self._where):
            members = await self.client.smembers(self.keys.process_held(process_id))
        return {_text(m) for m in members}

    async def epoch(self) -> str | None:
        """The assignment's epoch (None: Redis has none, it forgot the assignment)."""
        with translated(self._where):
            value: Any = await self.client.get(self.keys.assignment_epoch)
        return _text(value) if value is not None else None

    async def holding(self, pairs: Mapping[str, str]) -> set[str]:
        """Of ``channel -> process`` pairs, the channels whose process holds them now."""
        items = list(pairs.items())
        async with self.client.pipeline(transaction=False) as pipe:
            for channel, process_id in items:
                pipe.sismember(self.keys.process_held(process_id), channel)
            with translated(self._where):
                answers = await pipe.execute()
        return {channel for (channel, _), yes in zip(items, answers, strict=True) if yes}

    async def held_by(
        self, process_ids: Sequence[str], channels: Sequence[str]
    ) -> dict[str, list[str]]:
        """Of ``channels``, those that any of ``process_ids`` holds, with who holds them (one
        round trip: a SMISMEMBER per process)."""
        if not process_ids or not channels:
            return {}
        async with self.client.pipeline(transaction=False) as pipe:
            for process_id in process_ids:
                pipe.smismember(self.keys.process_held(process_id), list(channels))
            with translated(self._where):
                answers = await pipe.execute()
        found: dict[str, list[str]] = {}
        for process_id, flags in zip(process_ids, answers, strict=True):
            for channel, yes in zip(channels, flags, strict=True):
                if yes:
                    found.setdefault(channel, []).append(process_id)
        return found

    async def orphaned(self, channels: Sequence[str]) -> list[str]:
        """Of ``channels``, those taken from a worker presumed dead in the last
        :data:`~tmi_cluster.bus.keys.ORPHAN_GUARD_S` (one round trip)."""
        if not channels:
            return []
        async with self.client.pipeline(transaction=False) as pipe:
            for channel in channels:
                pipe.exists(self.keys.orphan(channel))
            with translated(self._where):
                answers = await pipe.execute()
        return [c for c, found in zip(channels, answers, strict=True) if found]

    async def guard(self, process_id: str, channels: Iterable[str], *, on: bool = True) -> None:
        """Say that ``process_id`` checks ``channels``' events against duplicates (``on``),
        or no longer; a worker taking a channel over joins only once its holder says so."""
        names = list(channels)
        if not names:
            return
        key = self.keys.guarding(process_id)
        with translated(self._where):
            if on:
                await self.client.sadd(key, *names)
            else:
                await self.client.srem(key, *names)

    async def clear_guards(self, process_id: str) -> None:
        """Forget every channel ``process_id`` said it guards (it starts, or it stopped)."""
        with translated(self._where):
            await self.client.delete(self.keys.guarding(process_id))

    async def guarded(self, pairs: Mapping[str, str]) -> set[str]:
        """Of ``channel -> process`` pairs, the channels that the process says it guards."""
        items = list(pairs.items())
        if not items:
            return set()
        async with self.client.pipeline(transaction=False) as pipe:
            for channel, process_id in items:
                pipe.sismember(self.keys.guarding(process_id), channel)
            with translated(self._where):
                answers = await pipe.execute()
        return {channel for (channel, _), yes in zip(items, answers, strict=True) if yes}

    async def notices(self, process_id: str, after: str, timeout_s: float) -> tuple[str, int]:
        """Wait at most ``timeout_s`` (2 s at most) for notices on a process's command stream
        after id ``after`` ("$": from now); return the last id read and how many came."""
        key = self.keys.process_commands(process_id)
        with translated(self._where):
            answer: Any = await self.client.xread(
                {key: after}, count=1000, block=block_ms(timeout_s)
            )
        if not answer:
            if after == "$":
                return await self._last_id(key), 0
            return after, 0
        entries = answer[0][1]
        return _text(entries[-1][0]), len(entries)

    async def _last_id(self, key: str) -> str:
        with translated(self._where):
            info: Any = await self.client.xrevrange(key, count=1)
        return _text(info[0][0]) if info else "0-0"

    async def report(self, process_id: str, outcomes: Mapping[str, str]) -> None:
        """Append what happened to channels on a process (``channel -> result``)."""
        if not outcomes:
            return
        async with self.client.pipeline(transaction=False) as pipe:
            for channel, result in outcomes.items():
                pipe.xadd(
                    self.keys.reports,
                    {"process": process_id, "channel": channel, "result": result},
                    maxlen=REPORTS_MAXLEN,
                    approximate=True,
                )
            with translated(self._where):
                await pipe.execute()

    async def last_report_id(self) -> str:
        """The id of the newest report ("0-0" when none): read :meth:`reports` after it."""
        return await self._last_id(self.keys.reports)

    async def reports(self, after: str, timeout_s: float) -> list[Report]:
        """Reports after id ``after``, waiting at most ``timeout_s`` (2 s at most) for the
        first."""
        with translated(self._where):
            answer: Any = await self.client.xread(
                {self.keys.reports: after}, count=1000, block=block_ms(timeout_s)
            )
        if not answer:
            return []
        return [
            Report(
                _text(entry_id),
                _text(fields[b"process"]),
                _text(fields[b"channel"]),
                _text(fields[b"result"]),
            )
            for entry_id, fields in answer[0][1]
        ]
