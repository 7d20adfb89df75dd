"""The coordinator's state in Redis besides the assignment: wake-ups, the wanted version, the
assignment's epoch, the cursor of the workers' reports, the cluster's size (scale targets and
state, draining marks) and the stale cleanup's schedule.

Anyone may read it and wake the coordinator. Every write of the coordinator goes through
:class:`Coordination` with its lease's fencing token (``token``): the write and the check of the
token run in one script (:data:`~tmi_cluster.bus.lease.FENCE_CHECK`), so that a leader that lost
its lease writes nothing of any kind (:class:`~tmi_cluster.errors.StaleLeaseError`). A few writes
belong to others and are not fenced: a supervisor marks its own worker draining for a
replacement and forgets its own target when it starts or stops; ``tmi-cluster scale`` sets a
target or pauses the auto-scaler by hand.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, NamedTuple

import redis.asyncio

from tmi_cluster.bus.client import block_ms, describe_client, translated
from tmi_cluster.bus.keys import ORPHAN_GUARD_S, Keys
from tmi_cluster.bus.lease import FENCE_CHECK
from tmi_cluster.errors import RedisUnavailableError, StaleLeaseError

__all__ = [
    "CLEANUP_RUNS",
    "Coordination",
    "ScaleState",
    "wake",
    "wanted_changed",
]

#: Entries kept in the wake-up stream (each is only "look now").
_WAKE_MAXLEN = 10
#: Runs of the stale cleanup kept in ``P cleanup:runs``.
CLEANUP_RUNS = 100
#: Entries kept in a supervisor's order stream.
_ORDERS_MAXLEN = 100

# KEYS[1] fence, KEYS[2..] the keys the ops name by index; ARGV[1] token, ARGV[2] the ops as
# JSON: [[command, key index, args...], ...]. Returns each op's reply, or STALE before any write.
_FENCED = (
    FENCE_CHECK
    + """
local ops = cjson.decode(ARGV[2])
local replies = {}
for i, op in ipairs(ops) do
  local argv = {op[1], KEYS[op[2]]}
  for j = 3, #op do argv[#argv + 1] = op[j] end
  local reply = redis.call(unpack(argv))
  if reply == false then reply = 0 end
  if type(reply) == 'table' and reply.ok then reply = 1 end
  replies[i] = reply
end
return replies
"""
)

# KEYS[1] fence, KEYS[2] epoch, KEYS[3] fresh; ARGV[1] token, ARGV[2] new epoch, ARGV[3] fresh
# ms. Returns {epoch, 1 if created}.
_EPOCH = (
    FENCE_CHECK
    + """
local created = 0
if redis.call('SET', KEYS[2], ARGV[2], 'NX') then
  created = 1
  redis.call('SET', KEYS[3], '1', 'PX', ARGV[3])
end
return {redis.call('GET', KEYS[2]), created}
"""
)


class ScaleState(NamedTuple):
    """The auto-scaler's state: paused by hand, the last change (Redis time, s) and its cause."""

    paused: bool
    last_change: float
    cause: str | None


class _Ops:
    """Redis commands to run in one fenced script: keys by index, arguments as text."""

    def __init__(self) -> None:
        self.keys: list[str] = []
        self.ops: list[list[str | int]] = []
        self._index: dict[str, int] = {}

    def add(self, command: str, key: str, *args: object) -> None:
        index = self._index.get(key)
        if index is None:
            index = self._index[key] = len(self.keys)
            self.keys.append(key)
        self.ops.append([command, index + 2, *(str(a) for a in args)])


async def wake(client: redis.asyncio.Redis, keys: Keys) -> None:
    """Ask the coordinator to make a pass now (the leader wakes at once)."""
    with translated(describe_client(client)):
        await client.xadd(keys.coordinator_wake, {"at": "1"}, maxlen=_WAKE_MAXLEN, approximate=True)


async def wanted_changed(client: redis.asyncio.Redis, keys: Keys) -> None:
    """Tell the coordinator that the wanted channels changed in SQL: it reads them again and
    acts at once. Call it after every change of ``Store.want`` or ``Store.unwant``."""
    with translated(describe_client(client)):
        await client.incr(keys.wanted_version)
    await wake(client, keys)


class Coordination:
    """The coordinator's state of cluster ``keys`` through ``client``; see the module's
    docstring. Every method raises RedisUnavailableError when Redis cannot be reached; the
    fenced ones StaleLeaseError when ``token`` is not the current one (nothing written)."""

    def __init__(self, client: redis.asyncio.Redis, keys: Keys) -> None:
        self.client = client
        self.keys = keys
        self._where = describe_client(client)
        self._fenced = client.register_script(_FENCED)
        self._epoch = client.register_script(_EPOCH)

    # -- fenced: the coordinator's writes ---------------------------------------------------

    async def _run(self, token: int, ops: _Ops) -> list[Any]:
        if not ops.ops:
            return []
        try:
            with translated(self._where):
                replies: Any = await self._fenced(
                    keys=[self.keys.coordinator_fence, *ops.keys],
                    args=[token, json.dumps(ops.ops)],
                )
        except RedisUnavailableError as error:
            _raise_if_stale(error, token)
            raise
        return list(replies)

    async def ensure_epoch(self, token: int, candidate: str) -> tuple[str, bool]:
        """The assignment's epoch, made ``candidate`` when Redis has none (then the fresh mark
        is set too, for ``supervisor.stale``); whether it was made now."""
        try:
            with translated(self._where):
                reply: Any = await self._epoch(
                    keys=[
                        self.keys.coordinator_fence,
                        self.keys.assignment_epoch,
                        self.keys.assignment_fresh,
                    ],
                    args=[token, candidate, int(self.keys.supervisor_ttl_s * 1000)],
                )
        except RedisUnavailableError as error:
            _raise_if_stale(error, token)
            raise
        epoch, created = reply
        return (epoch.decode() if isinstance(epoch, bytes) else str(epoch)), bool(created)

    async def set_reports_cursor(self, token: int, after: str) -> None:
        """The id of the last worker report the coordinator read."""
        ops = _Ops()
        ops.add("SET", self.keys.coordinator_reports, after)
        await self._run(token, ops)

    async def mark_orphans(self, token: int, channels: Iterable[str]) -> None:
        """Mark channels taken from workers presumed dead, for
        :data:`~tmi_cluster.bus.keys.ORPHAN_GUARD_S` (their new owners check their events)."""
        names = sorted(channels)
        for start in range(0, len(names), 500):  # bounded scripts
            ops = _Ops()
            for channel in names[start : start + 500]:
                ops.add("SET", self.keys.orphan(channel), "1", "EX", ORPHAN_GUARD_S)
            await self._run(token, ops)

    async def forget_targets(self, token: int, supervisors: Iterable[str]) -> None:
        """The targets of supervisors that ended without saying so count no more."""
        gone = sorted(supervisors)
        if gone:
            ops = _Ops()
            ops.add("HDEL", self.keys.scale_targets, *gone)
            await self._run(token, ops)

    async def drain(self, token: int, process_id: str, cause: str) -> None:
        """Mark a worker to be emptied (a scale-in, a spread over the hosts)."""
        ops = _Ops()
        ops.add("HSET", self.keys.draining, process_id, cause)
        await self._run(token, ops)

    async def apply_targets(
        self,
        token: int,
        targets: Mapping[str, tuple[int, str]],
        *,
        change: tuple[float, str] | None = None,
    ) -> None:
        """Write each supervisor's new target and send it the order to scale (``processes``
        and ``cause``), with the time and cause of a decided change (``change``), at once."""
        ops = _Ops()
        for supervisor, (target, _) in targets.items():
            ops.add("HSET", self.keys.scale_targets, supervisor, target)
        if change is not None:
            now, cause = change
            ops.add("HSET", self.keys.scale_state, "last_change", f"{now:.3f}", "cause", cause)
        for supervisor, (target, cause) in targets.items():
            ops.add(
                "XADD",
                self.keys.supervisor_commands(supervisor),
                "MAXLEN",
                "~",
                _ORDERS_MAXLEN,
                "*",
                "op",
                "scale",
                "processes",
                target,
                "cause",
                cause,
            )
        await self._run(token, ops)

    async def schedule_cleanup(self, token: int, holder: str, in_s: float, *, due: bool) -> bool:
        """Mark the stale cleanup as run now, the next one due in ``in_s``. With ``due``, only
        if it is due (the mark has expired); whether the mark was set."""
        ops = _Ops()
        px = max(1, int(in_s * 1000))
        if due:
            ops.add("SET", self.keys.cleanup_due, holder, "PX", px, "NX")
        else:
            ops.add("SET", self.keys.cleanup_due, holder, "PX", px)
        (reply,) = await self._run(token, ops)
        return bool(reply)

    async def record_cleanup(self, token: int, entry: Mapping[str, object]) -> None:
        """Add one run's figures to ``P cleanup:runs`` (bounded)."""
        ops = _Ops()
        fields = [str(x) for pair in entry.items() for x in pair]
        ops.add("XADD", self.keys.cleanup_runs, "MAXLEN", "~", CLEANUP_RUNS, "*", *fields)
        await self._run(token, ops)

    # -- reads ------------------------------------------------------------------------------

    async def wait_for_wake(self, after: str, timeout_s: float) -> str:
        """Wait for a wake-up after id ``after`` ("$": from now) or ``timeout_s``; the last id
        seen."""
        with translated(self._where):
            if after == "$":
                newest: Any = await self.client.xrevrange(self.keys.coordinator_wake, count=1)
                after = newest[0][0].decode() if newest else "0-0"
            answer: Any = await self.client.xread(
                {self.keys.coordinator_wake: after}, count=100, block=block_ms(timeout_s)
            )
        return answer[0][1][-1][0].decode() if answer else after

    async def wanted_version(self) -> bytes | None:
        """The wanted channels' version (changed by :func:`wanted_changed`)."""
        with translated(self._where):
            version: Any = await self.client.get(self.keys.wanted_version)
        return version if isinstance(version, bytes) else None

    async def reports_cursor(self) -> str | None:
        """The id of the last report read (None: none yet)."""
        with translated(self._where):
            cursor: Any = await self.client.get(self.keys.coordinator_reports)
        return cursor.decode() if cursor else None

    async def draining(self) -> dict[str, str]:
        """The workers being emptied, and why."""
        with translated(self._where):
            raw: Any = await self.client.hgetall(self.keys.draining)
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def targets(self) -> dict[str, int]:
        """Each supervisor's target: how many workers it should run."""
        with translated(self._where):
            raw: Any = await self.client.hgetall(self.keys.scale_targets)
        return {k.decode(): int(v) for k, v in raw.items()}

    async def target_of(self, supervisor_id: str) -> int | None:
        """One supervisor's target (None: it has none)."""
        with translated(self._where):
            value: Any = await self.client.hget(self.keys.scale_targets, supervisor_id)
        return int(value) if value is not None else None

    async def scale_state(self) -> tuple[ScaleState, float]:
        """The auto-scaler's state, and Redis's clock now (seconds)."""
        with translated(self._where):
            async with self.client.pipeline(transaction=False) as pipe:
                pipe.hgetall(self.keys.scale_state)
                pipe.time()
                raw, clock = await pipe.execute()
        state = {k.decode(): v.decode() for k, v in raw.items()}
        now = float(clock[0]) + float(clock[1]) / 1e6
        paused = state.get("paused") == "1"
        return ScaleState(
            paused, float(state.get("last_change", "0") or 0), state.get("cause")
        ), now

    # -- not the coordinator's: unfenced --------------------------------------------------------

    async def mark_draining(self, process_id: str, why: str) -> None:
        """A supervisor empties its own worker (a replacement, a surplus)."""
        with translated(self._where):
            await self.client.hset(self.keys.draining, process_id, why)

    async def forget_target(self, supervisor_id: str) -> None:
        """A supervisor starting: a target left by an earlier run of its id is not its own."""
        with translated(self._where):
            await self.client.hdel(self.keys.scale_targets, supervisor_id)

    async def set_target_by_hand(self, supervisor_id: str, processes: int, now: float) -> None:
        """``tmi-cluster scale``: a supervisor's target, recorded as a change at ``now``."""
        with translated(self._where):
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.hset(self.keys.scale_targets, supervisor_id, processes)
                pipe.hset(
                    self.keys.scale_state, mapping={"last_change": f"{now:.3f}", "cause": "manual"}
                )
                await pipe.execute()

    async def set_paused(self, paused: bool) -> None:
        """Pause the auto-scaler (``True``) or let it go on."""
        with translated(self._where):
            await self.client.hset(self.keys.scale_state, "paused", "1" if paused else "0")

    async def sizes(self, process_ids: Sequence[str]) -> dict[str, tuple[int, int]]:
        """How many channels are assigned to each process, and how many it holds (a draining
        worker or a stopping supervisor waits until both are 0); one round trip."""
        if not process_ids:
            return {}
        with translated(self._where):
            async with self.client.pipeline(transaction=False) as pipe:
                for process_id in process_ids:
                    pipe.scard(self.keys.process_channels(process_id))
                    pipe.scard(self.keys.process_held(process_id))
                sizes = await pipe.execute()
        return {p: (int(sizes[2 * i]), int(sizes[2 * i + 1])) for i, p in enumerate(process_ids)}

    async def forgot_recently(self) -> bool:
        """Whether Redis has no assignment epoch, or got a new one within ``supervisor.stale``
        (a restart forgot every heartbeat; the live ones are written again within seconds)."""
        with translated(self._where):
            epoch, fresh = await self.client.mget(
                [self.keys.assignment_epoch, self.keys.assignment_fresh]
            )
        return epoch is None or fresh is not None

    async def take_lock(self, name: str, lock_s: float) -> bool:
        """Take the lock ``name`` for ``lock_s`` unless someone holds it; left to expire (at
        most one holder per period, for chores such as the purge)."""
        with translated(self._where):
            taken = await self.client.set(
                self.keys.lock(name), secrets.token_hex(8), px=int(lock_s * 1000), nx=True
            )
        return bool(taken)


def _raise_if_stale(error: RedisUnavailableError, token: int) -> None:
    cause = str(error.__cause__)
    if cause.startswith("STALE"):
        raise StaleLeaseError(
            f"fencing token {token} is not current ({cause.rsplit(maxsplit=1)[-1]} is): another "
            "coordinator took over; nothing was written"
        ) from error
