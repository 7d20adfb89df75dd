"""The lengths of the cluster's streams, for the metrics and the dashboard: the event stream,
the send commands waiting or held, and the dead letters (one pipelined round trip)."""

from __future__ import annotations

from typing import Any

import msgspec
import redis.asyncio

from tmi_cluster.bus.client import describe_client, translated
from tmi_cluster.bus.keys import Keys

__all__ = ["StreamLengths", "stream_lengths"]


class StreamLengths(msgspec.Struct, frozen=True, kw_only=True):
    """Entries in each stream now (0 for a stream that does not exist)."""

    events: int = 0
    send_commands: int = 0
    dead_letters: int = 0


async def stream_lengths(client: redis.asyncio.Redis, keys: Keys) -> StreamLengths:
    """The streams' lengths; RedisUnavailableError when Redis cannot be asked."""
    with translated(describe_client(client)):
        pipe = client.pipeline(transaction=False)
        pipe.xlen(keys.events)
        pipe.xlen(keys.send_commands)
        pipe.xlen(keys.dead_letters)
        answer: Any = await pipe.execute()
    events, commands, dead = (int(n) for n in answer)
    return StreamLengths(events=events, send_commands=commands, dead_letters=dead)
