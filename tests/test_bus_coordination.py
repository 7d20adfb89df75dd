"""The coordinator's state in Redis: every write of the coordinator is fenced by its lease's
token, so that a leader that lost its lease writes nothing of any kind (a table of every
write), against a real Redis."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import pytest
import redis
import redis.asyncio

from tmi_cluster.bus import Assignment, Coordination, Keys
from tmi_cluster.bus.keys import ORPHAN_GUARD_S
from tmi_cluster.bus.lease import Lease
from tmi_cluster.errors import StaleLeaseError

from .helpers import run

Write = Callable[[Coordination, Assignment], Awaitable[Any]]

#: Every write the coordinator makes, as a stale leader would make it.
WRITES: list[tuple[str, Write]] = [
    ("assign", lambda c, a: a.assign({"chan": "p1"})),
    ("unassign", lambda c, a: a.unassign(["chan"])),
    ("epoch", lambda c, a: c.ensure_epoch(a.token or 0, "new-epoch")),
    ("reports cursor", lambda c, a: c.set_reports_cursor(a.token or 0, "9-9")),
    ("forget targets", lambda c, a: c.forget_targets(a.token or 0, ["s1"])),
    ("drain", lambda c, a: c.drain(a.token or 0, "p1", "scale_in")),
    ("orphans", lambda c, a: c.mark_orphans(a.token or 0, ["chan"])),
    (
        "targets and orders",
        lambda c, a: c.apply_targets(
            a.token or 0, {"s1": (3, "scale_out")}, change=(1.0, "scale_out")
        ),
    ),
    ("cleanup due", lambda c, a: c.schedule_cleanup(a.token or 0, "s1", 60, due=True)),
    ("cleanup retry", lambda c, a: c.schedule_cleanup(a.token or 0, "s1", 30, due=False)),
    ("cleanup run", lambda c, a: c.record_cleanup(a.token or 0, {"by": "s1", "checked": 1})),
]


def _everything(client: redis.Redis, keys: Keys) -> dict[bytes, Any]:
    """Every key of the cluster and its value (DUMP), but the lease's own."""
    found = {}
    for key in client.scan_iter(match=keys.pattern, count=1000):
        if not key.decode().startswith(keys.coordinator_lease):
            found[key] = client.dump(key)
    return found


@pytest.mark.parametrize(("name", "write"), WRITES, ids=[name for name, _ in WRITES])
@run
async def test_a_leader_that_lost_its_lease_writes_nothing(
    name: str, write: Write, redis_server: str, redis_prefix: str, redis_client: redis.Redis
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server)
    keys = Keys(redis_prefix, 30.0, 3.0)
    try:
        old = Lease(client, keys, "old", 10.0)
        stale = await old.acquire()
        coordination = Coordination(client, keys)
        # the state a cluster has: a target, an assignment, a cursor, an epoch
        await coordination.apply_targets(stale, {"s1": (2, "restore")})
        await Assignment(client, keys, token=stale).assign({"chan": "p0"})
        await coordination.set_reports_cursor(stale, "1-1")
        await coordination.ensure_epoch(stale, "first-epoch")
        await client.delete(keys.coordinator_lease, keys.coordinator_lease + ":token")
        assert await Lease(client, keys, "new", 10.0).acquire() > stale  # another took over
        before = _everything(redis_client, keys)
        with pytest.raises(StaleLeaseError, match="not current"):
            await write(coordination, Assignment(client, keys, token=stale))
        assert _everything(redis_client, keys) == before, name
    finally:
        await client.aclose()


@run
async def test_the_current_leader_writes_each_and_orders_each_supervisor(
    redis_server: str, redis_prefix: str, redis_client: redis.Redis
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server)
    keys = Keys(redis_prefix, 30.0, 3.0)
    try:
        token = await Lease(client, keys, "leader", 10.0).acquire()
        coordination = Coordination(client, keys)
        assert await coordination.ensure_epoch(token, "e1") == ("e1", True)
        assert await coordination.ensure_epoch(token, "e2") == ("e1", False)
        assert redis_client.exists(keys.assignment_fresh)
        await coordination.apply_targets(
            token, {"s1": (3, "scale_out"), "s2": (1, "spread")}, change=(12.5, "scale_out")
        )
        assert await coordination.targets() == {"s1": 3, "s2": 1}
        state, now = await coordination.scale_state()
        assert (state.last_change, state.cause, state.paused) == (12.5, "scale_out", False)
        assert now > 1_700_000_000  # Redis's clock
        orders: Any = redis_client.xrange(keys.supervisor_commands("s1"))
        assert [fields for _, fields in orders] == [
            {b"op": b"scale", b"processes": b"3", b"cause": b"scale_out"}
        ]
        await coordination.forget_targets(token, ["s2"])
        assert await coordination.targets() == {"s1": 3}
        await coordination.drain(token, "p1", "scale_in")
        assert await coordination.draining() == {"p1": "scale_in"}
        assert await coordination.schedule_cleanup(token, "leader", 60, due=True)
        assert not await coordination.schedule_cleanup(token, "leader", 60, due=True)  # not due
        await coordination.record_cleanup(token, {"by": "leader", "checked": 3})
        assert redis_client.xlen(keys.cleanup_runs) == 1
        await coordination.set_reports_cursor(token, "5-0")
        assert await coordination.reports_cursor() == "5-0"
        await coordination.mark_orphans(token, ["alpha", "beta"])
        assignment = Assignment(client, keys)
        assert await assignment.orphaned(["alpha", "gamma", "beta"]) == ["alpha", "beta"]
        assert 0 < redis_client.ttl(keys.orphan("alpha")) <= ORPHAN_GUARD_S
    finally:
        await client.aclose()
