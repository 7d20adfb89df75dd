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


@run
async def test_second_copies_share_the_sets_and_a_promotion_keeps_the_channel(
    redis_server: str, redis_prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server)
    keys = Keys(redis_prefix, 30.0, 3.0)
    assignment = Assignment(client, keys)
    try:
        await assignment.assign({"a": "p1", "b": "p1"}, {"a": "p2", "b": "p2"})
        assert await assignment.all() == {"a": "p1", "b": "p1"}
        assert await assignment.replicas() == {"a": "p2", "b": "p2"}
        assert (await assignment.of("p1"), await assignment.of("p2")) == ({"a", "b"}, {"a", "b"})
        after = (await assignment.notices("p2", "0-0", 0.1))[0]
        # p1 gone: p2's copy of "a" is promoted and p3 takes a new one; p2 keeps "a" throughout
        assert await assignment.assign({"a": "p2"}, {"a": "p3"}) == {"a": "p1"}
        assert await assignment.of("p2") == {"a", "b"}
        assert (await assignment.notices("p2", after, 0.1))[1] == 0  # nothing changed for p2
        assert await assignment.of("p3") == {"a"}
        assert await assignment.of("p1") == {"b"}
        # only the second copy changes ('=' keeps the owner); one equal to the owner is none
        await assignment.assign({}, {"b": "p3"})
        assert (await assignment.all())["b"] == "p1"
        assert await assignment.of("p2") == {"a"}
        await assignment.assign({"b": "p3"})  # the owner moves onto its second copy: one left
        assert await assignment.replicas() == {"a": "p3"}
        assert await assignment.of("p3") == {"a", "b"}
        await assignment.assign({}, {"a": None})
        assert await assignment.replicas() == {}
        assert await assignment.of("p3") == {"b"}
        assert await assignment.of("p2") == {"a"}
        await assignment.unassign(["a", "b"])  # both copies go
        assert [await assignment.of(p) for p in ("p1", "p2", "p3")] == [set(), set(), set()]
    finally:
        await client.aclose()
