"""Sliding windows: the arithmetic, Redis, and several real processes sharing one account."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import redis.asyncio

from tmi_cluster.bus import SharedWindow
from tmi_cluster.chat.ratelimit import NORMAL, VERIFIED, LocalWindow, Rate, WaitTally

from .helpers import run


@pytest.mark.parametrize(
    ("takes", "expected"),
    [
        # (time, count) -> wait: 3 per 10 s
        ([(0, 1), (1, 1), (2, 1), (3, 1)], [0, 0, 0, 7]),
        ([(0, 3), (9.9, 1), (10, 1)], [0, 0.1, 0]),
        ([(0, 2), (5, 2), (6, 1)], [0, 5, 0]),
        ([(0, 1), (1, 1), (2, 1), (12, 3)], [0, 0, 0, 0]),
    ],
)
def test_local_window_arithmetic(takes: list[tuple[float, int]], expected: list[float]) -> None:
    window = LocalWindow(Rate(3, 10), margin_s=0)
    waits = [window.try_take_at(now, count) for now, count in takes]
    assert waits == pytest.approx(expected)


@run
async def test_local_windows_tally_their_waits_together_when_asked() -> None:
    shared = WaitTally()
    first = LocalWindow(Rate(1, 0.1), margin_s=0, tally=shared)
    second = LocalWindow(Rate(1, 0.1), margin_s=0, tally=shared)
    for window in (first, first, second, second):
        await window.take()
    assert shared.waits == 2
    assert 0.1 <= shared.waited_s <= 0.4
    alone = LocalWindow(Rate(1, 0.1), margin_s=0)
    await alone.take()
    await alone.take_with([], 1)  # take_with waits and tallies as take does
    assert alone.tally.waits == 1


def test_the_margin_makes_windows_stricter_than_twitchs() -> None:
    window = LocalWindow(Rate(3, 10), margin_s=0.5)
    assert [window.try_take_at(t) for t in (0, 1, 2)] == [0, 0, 0]
    assert window.try_take_at(10.2) == pytest.approx(0.3)  # Twitch would already allow it
    assert window.try_take_at(10.5) == 0


def test_bad_rates_and_counts() -> None:
    with pytest.raises(ValueError, match="allow >= 1"):
        Rate(0, 10)
    with pytest.raises(ValueError, match="cannot take 4 at once from a window of 3"):
        LocalWindow(Rate(3, 10)).try_take_at(0, 4)


def test_presets_hold_twitchs_numbers() -> None:
    assert (NORMAL.join, NORMAL.messages, NORMAL.moderator_messages) == (
        Rate(20, 10),
        Rate(20, 30),
        Rate(100, 30),
    )
    assert VERIFIED.join.allow == 2000


@run
async def test_shared_window_counts_and_refuses(redis_server: str, redis_prefix: str) -> None:
    client = redis.asyncio.Redis.from_url(redis_server)
    try:
        epoch = f"{redis_prefix}ratelimit:epoch"
        window = SharedWindow(
            client, f"{redis_prefix}ratelimit:bot:join", Rate(3, 1.0), epoch_key=epoch
        )
        assert window.window_s == 1.25
        assert [await window.try_take() for _ in range(3)] == [0, 0, 0]
        wait = await window.try_take()
        assert 0 < wait <= 1.25
        other = SharedWindow(client, window.key, Rate(3, 1.0), epoch_key=epoch)  # another process
        assert await other.try_take() > 0
        assert window.tally.waits == 0
        await window.take()  # waits for the oldest to leave
        assert await client.pttl(window.key) > 0
        # the wait is tallied (the metrics' rate-limit waits): one wait, about a window long
        assert window.tally.waits == 1
        assert 0 < window.tally.waited_s <= 1.5
    finally:
        await client.aclose()


@run
async def test_a_redis_that_forgot_its_windows_fences_for_one_window(
    redis_server: str, redis_prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server)
    try:
        epoch = f"{redis_prefix}ratelimit:epoch"
        window = SharedWindow(
            client, f"{redis_prefix}ratelimit:b:join", Rate(2, 0.5), epoch_key=epoch
        )
        assert await window.try_take() == 0
        first = window.epoch
        await client.delete(epoch, window.key)  # what a restart without persistence does
        fenced = await window.try_take()  # nothing counted, for one window's length
        assert window.window_s - 0.1 < fenced <= window.window_s
        assert window.restarts_seen == 1
        assert window.epoch != first
        assert await client.zcard(window.key) == 0
        assert 0 < await window.try_take() <= window.window_s  # still fenced
        fresh = SharedWindow(client, window.key, Rate(2, 0.5), epoch_key=epoch)
        assert await fresh.try_take() == 0  # a newcomer cannot know: it counts at once
        await window.take()  # after the fence, counted again
        assert window.restarts_seen == 1
    finally:
        await client.aclose()


WORKER = """
import asyncio, json, sys, time
import redis.asyncio
from tmi_cluster.bus import SharedWindow
from tmi_cluster.chat.ratelimit import Rate

async def main(url, key, allow, every, seconds):
    client = redis.asyncio.Redis.from_url(url)
    window = SharedWindow(client, key, Rate(allow, every), epoch_key=key + ":epoch")
    taken = []
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if await window.try_take() == 0:
            taken.append(window.last_taken_us)
    await client.aclose()
    print(json.dumps(taken))

url, key, allow, every, seconds = sys.argv[1:6]
asyncio.run(main(url, key, int(allow), float(every), float(seconds)))
"""


def test_processes_sharing_an_account_never_exceed_its_budget(
    redis_server: str, redis_prefix: str
) -> None:
    allow, every_s, seconds = 10, 0.5, 2.0
    key = f"{redis_prefix}ratelimit:bot:messages"
    command = [sys.executable, "-c", WORKER, redis_server, key, str(allow), str(every_s)]
    processes = [
        subprocess.Popen([*command, str(seconds)], stdout=subprocess.PIPE, text=True)
        for _ in range(3)
    ]
    results = [json.loads(p.communicate(timeout=60)[0]) for p in processes]
    assert all(p.returncode == 0 for p in processes)
    times = sorted(t for result in results for t in result)
    window_us = int(every_s * 1_000_000)
    # No window of every_s holds more than allow events, wherever it starts.
    for index, start in enumerate(times):
        inside = sum(1 for t in times[index:] if t < start + window_us)
        assert inside <= allow, f"{inside} events in one window"
    assert len(times) >= allow * 3  # and they did get the budget, not far less
    assert all(len(result) > 0 for result in results)  # every process got some
