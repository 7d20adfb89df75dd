"""What the dashboard and the metrics read of the cluster's history: the lengths of its streams
(the event stream, the send commands waiting or held, the dead letters: one pipelined round
trip), and the supervisors' latest changes of size (``P scale:history``: each ProcessScaled
with when it happened, by Redis's clock; the newest :data:`SCALE_HISTORY` kept); and the small
marks the web pages and notifications leave (an incident notified, an invite screen session
signed out)."""

from __future__ import annotations

from typing import Any

import msgspec
import redis.asyncio
import redis.exceptions

from tmi_cluster.bus.client import describe_client, translated
from tmi_cluster.bus.keys import Keys
from tmi_cluster.events import ProcessScaled

__all__ = [
    "SCALE_HISTORY",
    "GroupLag",
    "Scaled",
    "StreamLengths",
    "claim_incident",
    "end_session",
    "recent_scaled",
    "remember_scaled",
    "session_ended",
    "stream_lengths",
]

#: How many changes of size ``P scale:history`` keeps.
SCALE_HISTORY = 50


class GroupLag(msgspec.Struct, frozen=True, kw_only=True):
    """A consumer group of the event stream: entries read and not acknowledged (``pending``),
    and entries not read yet (``lag``; None where Redis cannot say: before Redis 7, or after a
    trim past what the group read)."""

    group: str
    pending: int
    lag: int | None


class StreamLengths(msgspec.Struct, frozen=True, kw_only=True):
    """Entries in each stream now (0 for a stream that does not exist), and the event
    stream's consumer groups."""

    events: int = 0
    send_commands: int = 0
    dead_letters: int = 0
    groups: tuple[GroupLag, ...] = ()


async def stream_lengths(client: redis.asyncio.Redis, keys: Keys) -> StreamLengths:
    """The streams' lengths; RedisUnavailableError when Redis cannot be asked."""
    with translated(describe_client(client)):
        pipe = client.pipeline(transaction=False)
        pipe.xlen(keys.events)
        pipe.xlen(keys.send_commands)
        pipe.xlen(keys.dead_letters)
        answer: Any = await pipe.execute()
    events, commands, dead = (int(n) for n in answer)
    groups: list[GroupLag] = []
    if events:
        with translated(describe_client(client)):
            try:
                info: Any = await client.xinfo_groups(keys.events)
            except redis.exceptions.ResponseError:  # no such stream any more
                info = []
        for group in info:
            lag = group.get("lag")
            groups.append(
                GroupLag(
                    group=_text(group.get("name", "")),
                    pending=int(group.get("pending") or 0),
                    lag=int(lag) if lag is not None else None,
                )
            )
    return StreamLengths(
        events=events, send_commands=commands, dead_letters=dead, groups=tuple(groups)
    )


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class Scaled(msgspec.Struct, frozen=True, kw_only=True):
    """One change of a supervisor's size, and when (Unix seconds, Redis's clock)."""

    at: float
    event: ProcessScaled


_SCALED = msgspec.json.Decoder(Scaled)
_ENCODE = msgspec.json.Encoder()

# KEYS[1] the history; ARGV[1] the event (JSON), ARGV[2] how many to keep. Stamped with
# Redis's time, so that changes of several hosts order by one clock.
_REMEMBER = """
local t = redis.call('TIME')
local at = string.format('%d.%06d', t[1], t[2])
redis.call('LPUSH', KEYS[1], '{"at":' .. at .. ',"event":' .. ARGV[1] .. '}')
redis.call('LTRIM', KEYS[1], 0, tonumber(ARGV[2]) - 1)
return 1
"""


async def remember_scaled(client: redis.asyncio.Redis, keys: Keys, event: ProcessScaled) -> None:
    """Add ``event`` to the history (the oldest beyond :data:`SCALE_HISTORY` go);
    RedisUnavailableError when Redis cannot be reached."""
    with translated(describe_client(client)):
        await client.eval(_REMEMBER, 1, keys.scale_history, _ENCODE.encode(event), SCALE_HISTORY)


async def recent_scaled(client: redis.asyncio.Redis, keys: Keys, count: int = 10) -> list[Scaled]:
    """The newest ``count`` changes, newest first (an entry that does not decode is skipped)."""
    with translated(describe_client(client)):
        raw: Any = await client.lrange(keys.scale_history, 0, count - 1)
    found = []
    for entry in raw:
        try:
            found.append(_SCALED.decode(entry))
        except (msgspec.ValidationError, msgspec.DecodeError):
            continue
    return found


async def end_session(
    client: redis.asyncio.Redis, keys: Keys, session_id: str, ttl_s: float
) -> None:
    """Mark the invite screen's session ``session_id`` signed out for ``ttl_s`` seconds (its
    cookie's life): any copy of its cookie is refused meanwhile, on every host."""
    with translated(describe_client(client)):
        await client.set(keys.invite_ended(session_id), "1", px=max(1, int(ttl_s * 1000)))


async def session_ended(client: redis.asyncio.Redis, keys: Keys, session_id: str) -> bool:
    """Whether the invite screen's session ``session_id`` was signed out."""
    with translated(describe_client(client)):
        return bool(await client.exists(keys.invite_ended(session_id)))


async def claim_incident(
    client: redis.asyncio.Redis, keys: Keys, name: str, by: str, quiet_s: float
) -> bool:
    """True for the first process to claim incident ``name`` within ``quiet_s`` seconds (it
    notifies; the others do not): once per incident for the whole cluster."""
    with translated(describe_client(client)):
        claimed: Any = await client.set(
            keys.incident(name), by, nx=True, px=max(1, int(quiet_s * 1000))
        )
    return bool(claimed)
