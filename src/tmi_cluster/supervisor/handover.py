"""A stopping supervisor hands its channels over before its workers stop.

Its heartbeat says "stopping" at once: its workers drain, and the coordinator moves their
channels to the workers of other live supervisors (make-before-break: each worker parts a
channel once its new owner holds it). :func:`hand_over` waits until the supervisor's workers
are assigned and hold nothing, at most the time given; there is nothing to wait for when no
worker of another live supervisor that is not stopping could take the channels (the whole
cluster stops, or this is its only supervisor).
"""

from __future__ import annotations

import asyncio
import logging
import time

from tmi_cluster.bus import (
    AsyncRedis,
    Coordination,
    Heartbeat,
    Keys,
    SupervisorStatus,
    live,
    wake,
)
from tmi_cluster.errors import RedisUnavailableError

__all__ = ["hand_over"]

log = logging.getLogger(__name__)


async def hand_over(
    supervisor_id: str,
    mine: list[str],
    *,
    client: AsyncRedis,
    keys: Keys,
    coordination: Coordination,
    heartbeat: Heartbeat[SupervisorStatus],
    timeout_s: float,
) -> None:
    """Hand the channels of supervisor ``supervisor_id``'s workers ``mine`` over (see the
    module), within ``timeout_s``. A Redis outage ends the wait (logged), never raises."""
    deadline = time.monotonic() + timeout_s
    try:
        await heartbeat.beat()  # "stopping", now
        if not mine or not await _someone_to_take_over(client, keys, supervisor_id, mine):
            return
        await wake(client, keys)
        held = 0
        while time.monotonic() < deadline:
            sizes = await coordination.sizes(mine)
            held = sum(h for _, h in sizes.values())
            # right after a Redis restart every set reads empty while the workers still hold
            # their channels: not "handed over" until they have said what they hold
            if not any(a or h for a, h in sizes.values()) and not (
                await coordination.forgot_recently()
            ):
                log.info("supervisor %s: its channels are handed over", supervisor_id)
                return
            if not await _someone_to_take_over(client, keys, supervisor_id, mine):
                return  # the others stop too: nobody to wait for
            await asyncio.sleep(0.1)
        log.warning(
            "supervisor %s: %d channels not handed over within %g s",
            supervisor_id,
            held,
            timeout_s,
        )
    except RedisUnavailableError as error:
        log.warning("supervisor %s: cannot hand its channels over: %s", supervisor_id, error)


async def _someone_to_take_over(
    client: AsyncRedis, keys: Keys, supervisor_id: str, mine: list[str]
) -> bool:
    """Whether a worker of another live supervisor that is not stopping could take the
    channels of the workers ``mine``."""
    supervisors = await live(client, keys, "supervisor")
    going_on = {
        s
        for s, beat in supervisors.items()
        if s != supervisor_id and beat.status.state not in ("stopping", "stopped")
    }
    workers = await live(client, keys, "process")
    return any(p not in mine and beat.status.supervisor in going_on for p, beat in workers.items())
