"""The programs of ``examples/``, run as they are against real processes and the simulator:
the ping bot inside the workers, the message counter on the event stream, the FastAPI
application (the web pages mounted, an endpoint that sends) and a channel manager of one's
own. The README's bot is ``examples/pingbot.py``, word for word."""

from __future__ import annotations

import asyncio
import importlib
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tmi_cluster.channels import cleans_up, load_manager
from tmi_cluster.simulator import ChatSimulator
from tmi_cluster.simulator.limits import Limits

from .clusterproc import BOT, IDENTITY, TOKEN, ProcessCluster
from .helpers import run
from .test_usage import _ping

EXAMPLES = Path(__file__).parent.parent / "examples"
README = Path(__file__).parent.parent / "README.md"


@pytest.fixture
def examples_importable(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    yield
    for name in ("pingbot", "count_messages", "webapp", "mymanager"):
        sys.modules.pop(name, None)


def test_the_readme_shows_the_ping_bot_as_it_is() -> None:
    code = (EXAMPLES / "pingbot.py").read_text(encoding="utf-8")
    assert f"```python\n{code}```" in README.read_text(encoding="utf-8")
    assert len(code.splitlines()) <= 20


@run
async def test_the_channel_manager_example_loads_and_answers(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    make_settings: Any,
    examples_importable: None,
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = make_settings("[channel_manager]\nuse = 'mymanager:FileChannelManager'\n")
    manager = load_manager(settings)
    await manager.authorize(["#Alpha", "beta"])
    await manager.revoke(["beta"])
    assert await manager.authorized(["alpha", "beta", "gamma"]) == {"alpha"}
    assert not cleans_up(manager)
    assert (tmp_path / "allowed-channels.txt").read_text() == "alpha\n"


@pytest.mark.timeout(180)
@run
async def test_the_examples_run_against_a_cluster(
    tmp_path: Path,
    redis_server: str,
    redis_prefix: str,
    monkeypatch: pytest.MonkeyPatch,
    examples_importable: None,
) -> None:
    limits = Limits(anonymous_join_allow=100, message_allow=0, channel_interval_s=0.0)
    async with ChatSimulator(channels=["alpha", "beta"], limits=limits) as sim:
        sim.add_account(BOT, TOKEN)
        sim.add_account("viewer", "viewertoken")
        cluster = ProcessCluster(
            tmp_path,
            sim,
            redis_server,
            redis_prefix,
            **IDENTITY,
            TMI_CLUSTER_AUTO_SCALE__PROCESSES__MIN="1",
            TMI_CLUSTER_AUTO_SCALE__PROCESSES__MAX="1",
            TMI_CLUSTER_HANDLERS__MODULES='["pingbot"]',
            TMI_CLUSTER_WEB__PASSWORD="examplepass",
            PYTHONPATH=str(EXAMPLES),
        )
        for key, value in cluster.vars.items():  # the application's own process, configured
            monkeypatch.setenv(key, value)
        try:
            cluster.start("sup-a")

            async def sending() -> bool:
                return any(s.sends for s in (await cluster.workers()).values())

            await cluster.until(sending, 60, "a worker that can send")
            await cluster.want(["alpha", "beta"])
            await cluster.until(
                lambda: sim.joined("alpha") and sim.joined("beta"), 60, "both channels joined"
            )
            await _ping(sim, cluster)
            await _count(sim)
            await _webapp(sim)
        finally:
            await cluster.stop()


async def _count(sim: ChatSimulator) -> None:
    """The counter reads the stream while traffic flows: every message of both channels."""
    counter = importlib.import_module("count_messages")
    sim.set_rate(50.0)
    try:
        counts = await asyncio.wait_for(counter.count(limit=40, every_s=0.0), 30)
    finally:
        sim.set_rate(0.0)
    assert counts.total() == 40
    assert set(counts) <= {"alpha", "beta"}


async def _webapp(sim: ChatSimulator) -> None:
    """The FastAPI application: the mounted pages behind the password, and a send."""
    webapp = importlib.import_module("webapp")
    transport = httpx.ASGITransport(app=webapp.app)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://app") as client:
            said = await client.post("/channels/beta/say", json={"text": "hello from FastAPI"})
            assert said.status_code == 200, said.text
            assert said.json()["status"] == "written"
            assert ("beta", "hello from FastAPI") in sim.account(BOT).said
            bad = await client.post("/channels/beta/say", json={"text": "a\r\nPRIVMSG #x :y"})
            assert bad.status_code == 400
            assert "CR, LF or NUL" in bad.json()["detail"]
            assert (await client.get("/tmi-cluster/")).status_code == 401
            page = await client.get("/tmi-cluster/", auth=("admin", "examplepass"))
            assert page.status_code == 200
            invite = await client.get("/tmi-cluster/invite/")
            assert invite.status_code == 409  # the Dummy channel manager: the screen is off
            assert "invite screen" in invite.text
    finally:
        await webapp.cluster.aclose()
        await webapp.pages.state.view.aclose()
