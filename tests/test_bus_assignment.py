"""The assignment in Redis: one owner per channel, the sets kept with the hash, notices,
holdings and reports (real Redis)."""

from __future__ import annotations

import redis.asyncio

from tmi_cluster.bus import Assignment, Keys

from .helpers import run


@run
async def test_owners_sets_notices_and_transfers(redis_server: str, redis_prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_server)
    keys = Keys(redis_prefix, 30.0, 3.0)
    assignment = Assignment(client, keys)
    try:
        after = "0-0"
        assert await assignment.assign({"a": "p1", "b": "p1", "c": "p2"}) == dict.fromkeys("abc")
        after, notices = await assignment.notices("p1", after, 0.1)
        assert notices == 1  # one notice per process and write, whatever the number of channels
        assert await assignment.assign({"a": "p2"}) == {"a": "p1"}  # moved: one owner only
        assert (await assignment.of("p1"), await assignment.of("p2")) == ({"b"}, {"a", "c"})
        assert (await assignment.notices("p1", after, 0.1))[1] == 1  # p1 lost one: told
        assert await assignment.assign({"a": "p3", "c": "p3"}) == {"a": "p2", "c": "p2"}
        assert await assignment.all() == {"a": "p3", "b": "p1", "c": "p3"}
        assert await assignment.owners(["a", "b", "c", "z"]) == {
            "a": "p3",
            "b": "p1",
            "c": "p3",
            "z": None,
        }
        assert await assignment.unassign(["b", "z"]) == {"b": "p1", "z": None}
        assert await assignment.of("p1") == set()
        await assignment.record_held("p3", joined=["a", "c"])
        await assignment.record_held("p3", left=["c"])
        assert await assignment.holding({"a": "p3", "c": "p3", "b": "p1"}) == {"a"}
        assert await assignment.held_of(["p3", "p9"]) == {"p3": {"a"}, "p9": set()}
        await assignment.forget("p3")  # gone: its keys go, its channels wait for the coordinator
        assert await assignment.owners(["a", "c"]) == {"a": "p3", "c": "p3"}
        assert await client.exists(keys.process_held("p3"), keys.process_commands("p3")) == 0
    finally:
        await client.aclose()


@run
async def test_reports_are_read_in_order_after_an_id(redis_server: str, redis_prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_server)
    assignment = Assignment(client, Keys(redis_prefix, 30.0, 3.0))
    try:
        start = await assignment.last_report_id()
        assert start == "0-0"
        assert await assignment.reports(start, 0.05) == []  # waits at most that long
        await assignment.report("p1", {"a": "joined", "b": "msg_banned"})
        [first, second] = await assignment.reports(start, 1.0)
        assert (first.process, first.channel, first.result) == ("p1", "a", "joined")
        assert (second.channel, second.result) == ("b", "msg_banned")
        assert await assignment.reports(second.id, 0.05) == []
    finally:
        await client.aclose()
