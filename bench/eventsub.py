"""The EventSub route against the IRC route on the same chat: notifications per second one core
turns into typed events.

Run: ``python bench/eventsub.py`` (about three minutes) or ``python bench/eventsub.py --quick``
(under a minute). The reconcile needs Redis (127.0.0.1:6379, or ``--redis URL``).

The corpus is the benchmarks' usual chat (``bench/corpus.py``: the simulator's generator); each
of its PRIVMSG, USERNOTICE and CLEARMSG lines is also written as the EventSub notification
Twitch sends for it (``tmi_cluster.simulator.eventsub``: the whole WebSocket message, metadata
and payload). Measured, best round of several:

- IRC: ``parse`` + ``from_message`` of each line;
- EventSub: ``decode`` of each WebSocket message + ``notification_events`` (the event JSON,
  then the IRC message Twitch sends for it, then the same builder).

The conduit's reconcile at 10,000 subscriptions (10,000 broadcasters' ``channel.chat.message``;
the simulator plays Twitch's Helix in this process, SQLite holds the grants, Redis the routes):

- cold: the coordinator's EventSub keeper from nothing (no conduit) until every channel is
  routed, step by step as the coordinator runs it (``subscribe_concurrency`` = 8);
- restart: a new keeper (a new leader, or a restarted cluster) that lists the conduit's
  10,000 subscriptions and finds nothing to do (no duplicate made);
- steady: one more step with nothing to do (what every leader pays each
  :data:`~tmi_cluster.coordinator.eventsub.STEP_S`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import secrets
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import redis.asyncio

sys.path.insert(0, str(Path(__file__).parent))

from corpus import corpus

from tmi_cluster.bus import Keys
from tmi_cluster.bus.lease import Lease
from tmi_cluster.config import load_settings
from tmi_cluster.coordinator.eventsub import ConduitKeeper
from tmi_cluster.events import from_message
from tmi_cluster.eventsub import decode, notification_events
from tmi_cluster.grants import Grants, TokenGrant
from tmi_cluster.irc import parse
from tmi_cluster.routes import BOT_SCOPES
from tmi_cluster.simulator import ChatSimulator
from tmi_cluster.simulator.eventsub import wire
from tmi_cluster.simulator.oauth import CLIENT_ID, CLIENT_SECRET
from tmi_cluster.simulator.peers import user_id
from tmi_cluster.store import Store

BOT = "tmibot"
KEY = "bench-grant-key-" + "x" * 32

_CHAT = ("PRIVMSG", "USERNOTICE", "CLEARMSG")


def _chat(size: int) -> tuple[list[str], list[bytes]]:
    """The chat lines that have a notification, and their notifications."""
    chat = [m for m in map(parse, corpus(size)) if m.command in _CHAT]
    pairs = [(m.raw, wire(m)) for m in chat]
    kept = [(line, built) for line, built in pairs if built is not None]
    return (
        [line for line, _ in kept],
        [json.dumps(built, ensure_ascii=False).encode() for _, built in kept],
    )


def _irc(lines: list[str]) -> None:
    for line in lines:
        from_message(parse(line))


def _eventsub(wires: list[bytes]) -> None:
    for data in wires:
        notification_events(decode(data))


def _rate(run: Callable[[], None], count: int, seconds: float) -> float:
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        run()
        best = max(best, count / (time.perf_counter() - start))
    return best


async def _reconcile(redis_url: str, count: int) -> dict[str, float]:
    """Seconds of a cold reconcile, a restart's and a steady step at ``count`` subscriptions."""
    channels = [f"ch{i:06}" for i in range(count)]
    async with ChatSimulator(control_port=0) as sim:
        base = f"http://{sim.host}:{sim.control_port}"
        with tempfile.TemporaryDirectory() as folder:
            settings = load_settings(
                environ={
                    "TMI_CLUSTER_TWITCH__CLIENT_ID": CLIENT_ID,
                    "TMI_CLUSTER_TWITCH__CLIENT_SECRET": CLIENT_SECRET,
                    "TMI_CLUSTER_TWITCH__OAUTH_URL": f"{base}/oauth2",
                    "TMI_CLUSTER_TWITCH__API_URL": f"{base}/helix",
                    "TMI_CLUSTER_TMI__IDENTITY__USERNAME": BOT,
                    "TMI_CLUSTER_TMI__TRANSPORT__SUBSCRIPTIONS": '["channel.chat.message"]',
                    "TMI_CLUSTER_DATABASE__URL": f"sqlite:///{folder}/bench.db",
                },
                cwd=Path(folder),
            )
            sealer = Grants(KEY)
            with Store(settings.database.url) as store:
                store.migrate()
                store.save_grants(
                    [
                        sealer.seal(
                            TokenGrant(
                                user_id=user_id(login),
                                login=login,
                                scopes=scopes,
                                access_token=_grant(sim, login, scopes),
                                refresh_token=f"refresh-{login}",
                            )
                        )
                        for login, scopes in [(BOT, BOT_SCOPES)]
                        + [(c, ("channel:bot",)) for c in channels]
                    ]
                )
                client = redis.asyncio.Redis.from_url(redis_url)
                keys = Keys(f"bench-eventsub-{secrets.token_hex(4)}:", 10.0, 10.0)
                try:
                    return await _keep(settings, client, keys, store, channels)
                finally:
                    await client.delete(*[k async for k in client.scan_iter(keys.pattern)])
                    await client.aclose()


def _grant(sim: ChatSimulator, login: str, scopes: tuple[str, ...]) -> str:
    back = "http://127.0.0.1/cb"
    code = sim.oauth.issue_code(CLIENT_ID, back, login, scopes)
    form = {
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "code": code,
        "grant_type": "authorization_code",
        "redirect_uri": back,
    }
    return str(sim.oauth.token(form)["access_token"])


async def _keep(
    settings: object, client: redis.asyncio.Redis, keys: Keys, store: Store, channels: list[str]
) -> dict[str, float]:
    assert hasattr(settings, "tmi")
    lease = Lease(client, keys, "bench", 60.0)
    await lease.acquire()
    wanted = frozenset(channels)
    figures: dict[str, float] = {}
    keeper = ConduitKeeper(settings, client, keys, store, lease)  # type: ignore[arg-type]
    keeper.wanted, keeper.workers = wanted, 4
    start = time.perf_counter()
    steps = 0
    while len(keeper.routed) < len(channels) and steps < 1000:
        await keeper.step()
        steps += 1
    figures["cold"] = time.perf_counter() - start
    figures["cold_steps"] = steps
    start = time.perf_counter()
    await keeper.step()
    figures["steady"] = time.perf_counter() - start
    await keeper.helix.aclose()
    again = ConduitKeeper(settings, client, keys, store, lease)  # type: ignore[arg-type]
    again.wanted, again.workers = wanted, 4
    start = time.perf_counter()
    await again.step()
    figures["restart"] = time.perf_counter() - start
    figures["restart_routed"] = len(again.routed)
    figures["subscriptions"] = (await again.bus.status()).subscriptions
    await again.helix.aclose()
    return figures


def main() -> None:
    options = argparse.ArgumentParser(description=__doc__)
    options.add_argument("--quick", action="store_true", help="a short run (under a minute)")
    options.add_argument("--redis", default="redis://127.0.0.1:6379/0", help="Redis for routes")
    args = options.parse_args()
    lines, wires = _chat(6_000)
    seconds = 10.0 if args.quick else 60.0
    irc = _rate(lambda: _irc(lines), len(lines), seconds)
    eventsub = _rate(lambda: _eventsub(wires), len(wires), seconds)
    size_irc = sum(len(line.encode()) for line in lines) / len(lines)
    size_eventsub = sum(len(wire) for wire in wires) / len(wires)
    print(
        f"Python {platform.python_version()}, {len(lines)} chat messages, best round of "
        f"{seconds:g} s each"
    )
    print(f"{'route':44} {'messages/s':>12} {'bytes each':>11} {'vs IRC':>8}")
    print(f"{'IRC: parse + from_message':44} {irc:12,.0f} {size_irc:11,.0f} {1.0:7.2f}x")
    print(
        f"{'EventSub: decode + notification_events':44} {eventsub:12,.0f} "
        f"{size_eventsub:11,.0f} {eventsub / irc:7.2f}x"
    )
    count = 10_000
    figures = asyncio.run(_reconcile(args.redis, count))
    print(f"\nconduit reconcile at {count:,} subscriptions (simulated Helix, in this process)")
    print(f"{'step':44} {'seconds':>12}")
    print(
        f"{'cold: conduit + every subscription made':44} {figures['cold']:12.2f}"
        f"  ({figures['cold_steps']:.0f} steps, {count / figures['cold']:,.0f} subscriptions/s)"
    )
    print(
        f"{'restart: listed, nothing made':44} {figures['restart']:12.2f}"
        f"  ({figures['restart_routed']:,.0f} routed, {figures['subscriptions']:,.0f} known)"
    )
    print(f"{'steady: a step with nothing to do':44} {figures['steady']:12.3f}")


if __name__ == "__main__":
    main()
