"""Orders for supervisors: the ``commands:supervisor:{id}`` stream.

An order is one entry ``{"op": ..., other fields}`` (:class:`Order`; ``scale`` carries
``processes`` and ``cause``). A supervisor reads its stream from the moment it starts (orders
sent to an earlier supervisor of the same id are not its own) and carries each order out once;
the stream is trimmed to about 100 entries.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from typing import Any, NamedTuple

import redis.asyncio

from tmi_cluster.bus.client import block_ms, describe_client, translated
from tmi_cluster.bus.keys import Keys

__all__ = ["Order", "Received", "forget_orders", "forget_supervisor", "read_orders", "send_order"]

_MAXLEN = 100


class Order(enum.StrEnum):
    """What a supervisor can be told to do."""

    #: Stop gracefully (as on SIGTERM).
    TERMINATE = "terminate"
    #: Replace every worker, one by one (as on SIGUSR1).
    RESTART = "restart"
    #: Workers keep their channels and take no new work (as on SIGUSR2).
    PAUSE = "pause"
    #: Go on after a pause (as on SIGCONT).
    CONTINUE = "continue"
    #: Run ``processes`` workers (the coordinator's decision, or ``tmi-cluster scale``).
    SCALE = "scale"


class Received(NamedTuple):
    """An order as read: the order (an unknown op as its text) and its other fields."""

    order: Order | str
    fields: dict[str, str]


async def send_order(
    client: redis.asyncio.Redis,
    keys: Keys,
    supervisor_id: str,
    order: Order,
    **fields: str | int,
) -> None:
    """Append ``order`` (with ``fields``) to a supervisor's stream."""
    with translated(describe_client(client)):
        await client.xadd(
            keys.supervisor_commands(supervisor_id),
            {"op": order.value, **{k: str(v) for k, v in fields.items()}},
            maxlen=_MAXLEN,
            approximate=True,
        )


async def read_orders(
    client: redis.asyncio.Redis, keys: Keys, supervisor_id: str, after: str, timeout_s: float
) -> tuple[str, list[Received]]:
    """Orders after id ``after`` ("$": from now), waiting at most ``timeout_s`` (2 s at most);
    the last id read and the orders (an unknown op is returned as its text)."""
    key = keys.supervisor_commands(supervisor_id)
    block = block_ms(timeout_s)
    with translated(describe_client(client)):
        if after == "$":  # the newest id now, so that nothing sent from here on is missed
            newest: Any = await client.xrevrange(key, count=1)
            after = newest[0][0].decode() if newest else "0-0"
        answer: Any = await client.xread({key: after}, count=100, block=block)
    if not answer:
        return after, []
    orders: list[Received] = []
    for _, raw in answer[0][1]:
        fields = {k.decode(errors="replace"): v.decode(errors="replace") for k, v in raw.items()}
        op = fields.pop("op", "")
        orders.append(Received(Order(op) if op in Order._value2member_map_ else op, fields))
    return answer[0][1][-1][0].decode(), orders


async def forget_supervisor(client: redis.asyncio.Redis, keys: Keys, supervisor_id: str) -> None:
    """A supervisor's last write: its order stream and its scale target are nobody's now."""
    with translated(describe_client(client)):
        async with client.pipeline(transaction=False) as pipe:
            pipe.delete(keys.supervisor_commands(supervisor_id))
            pipe.hdel(keys.scale_targets, supervisor_id)
            await pipe.execute()


async def forget_orders(
    client: redis.asyncio.Redis, keys: Keys, supervisor_ids: Sequence[str]
) -> None:
    """Delete the order streams of dead supervisors: nobody reads them any more."""
    if supervisor_ids:
        with translated(describe_client(client)):
            await client.delete(*(keys.supervisor_commands(s) for s in supervisor_ids))
