"""Several real worker processes sharing one Twitch account, the simulator as the judge.

Each process builds its pool from the settings (:func:`tmi_cluster.worker.worker.build_pool`) with
the cluster's Redis, joins its own channels and says something in each, all at once and as
fast as its windows let it. Together they must stay within the account's JOIN, login and
message budgets as the simulator counts them, and still get everything done.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from tmi_cluster.simulator import ChatSimulator, Limits

from .helpers import run

WORKER = """
import asyncio, json, sys
import redis.asyncio
from tmi_cluster.config import load_settings
from tmi_cluster.worker.worker import build_pool

async def main(config, index, count):
    settings = load_settings(config, environ={})
    client = redis.asyncio.Redis.from_url(settings.redis.url)
    channels = [f"p{index}c{i}" for i in range(count)]
    async with build_pool(settings, redis_client=client, name=f"w{index}") as pool:
        outcomes = await pool.join(channels)
        joined = [c for c, outcome in outcomes.items() if outcome.ok]
        sent = await asyncio.gather(*(pool.say(c, f"hello from {index}") for c in joined))
    await client.aclose()
    print(json.dumps({"joined": len(joined), "sent": sum(sent)}))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""

PROCESSES = 3
CHANNELS = 15  # per process: two read connections each (10 per connection)


@run
async def test_processes_sharing_an_account_stay_within_every_budget(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    names = [f"p{p}c{i}" for p in range(PROCESSES) for i in range(CHANNELS)]
    limits = Limits(
        join_allow=10,
        join_every_s=1.0,
        auth_allow=3,
        auth_every_s=1.0,
        message_allow=8,
        moderator_message_allow=8,
        message_every_s=1.0,
        channel_interval_s=0.1,
    )
    async with ChatSimulator(channels=names, limits=limits) as sim:
        sim.add_account("sharedbot", "token")
        config = tmp_path / "tmi-cluster.toml"
        config.write_text(
            f'prefix = "{redis_prefix}"\n'
            f'[redis]\nurl = "{redis_server}"\n'
            f'[tmi.identity]\nusername = "sharedbot"\npassword = "oauth:token"\n'
            f'[tmi.connection]\nserver = "127.0.0.1"\nport = {sim.port}\nsecure = false\n'
            "channels_per_connection = 10\nconnect_interval = 0\njoin_timeout = 30\n"
            "[throttle.join]\nallow = 10\nevery = 1\n"
            "[throttle.auth]\nallow = 3\nevery = 1\n"
            "[throttle.messages]\nallow = 8\nmoderator_allow = 8\nevery = 1\n"
            "channel_interval = 0.1\n",
            encoding="utf-8",
        )
        loop = asyncio.get_running_loop()
        started = loop.time()
        workers = [
            await asyncio.create_subprocess_exec(
                sys.executable,
                "-c",
                WORKER,
                str(config),
                str(index),
                str(CHANNELS),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            for index in range(PROCESSES)
        ]
        outputs = await asyncio.wait_for(
            asyncio.gather(*(worker.communicate() for worker in workers)), 50
        )
        elapsed = loop.time() - started
        for worker, (_, stderr) in zip(workers, outputs, strict=True):
            assert worker.returncode == 0, stderr.decode()
        results = [json.loads(stdout) for stdout, _ in outputs]
        stats = sim.account("sharedbot")
        assert stats.violations == []  # no budget exceeded, as Twitch would count it
        assert [r["joined"] for r in results] == [CHANNELS] * PROCESSES  # and all got done
        assert [r["sent"] for r in results] == [CHANNELS] * PROCESSES
        assert stats.joins == PROCESSES * CHANNELS
        assert stats.messages == PROCESSES * CHANNELS
        assert stats.authentications == PROCESSES * 3  # two readers and one sender each
        # They really pushed: 45 JOINs at 10 per second cannot take less than 3.5 s.
        assert elapsed >= (PROCESSES * CHANNELS / 10) - 1
