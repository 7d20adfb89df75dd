"""The examples of docs/usage.md, run as they are against real processes and the simulator:
a subscriber answering !ping inside the workers, a WSGI application sending, a service
reading the event stream in a group."""

from __future__ import annotations

import asyncio
import importlib
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from tmi_cluster.channels import cleans_up, load_manager
from tmi_cluster.chat.connection import Connection, ConnectionOptions
from tmi_cluster.simulator import ChatSimulator
from tmi_cluster.simulator.limits import Limits

from .clusterproc import BOT, IDENTITY, TOKEN, ProcessCluster
from .helpers import run

DOC = Path(__file__).parent.parent / "docs" / "usage.md"


def examples() -> dict[str, str]:
    """Each Python block of the document whose first line names its file (``# name.py``)."""
    found = {}
    for block in DOC.read_text(encoding="utf-8").split("```python\n")[1:]:
        code = block.split("```", 1)[0]
        first = code.splitlines()[0]
        if first.startswith("# ") and first.endswith(".py"):
            found[first[2:]] = code
    return found


def test_the_document_has_its_examples() -> None:
    assert sorted(examples()) == ["archive.py", "mymanager.py", "pingbot.py", "webapp.py"]


@run
async def test_the_channel_manager_of_ones_own_loads_and_answers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, make_settings: Any
) -> None:
    (tmp_path / "mymanager.py").write_text(examples()["mymanager.py"], encoding="utf-8")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.chdir(tmp_path)
    settings = make_settings("[channel_manager]\nuse = 'mymanager:FileChannelManager'\n")
    try:
        manager = load_manager(settings)
        await manager.authorize(["#Alpha", "beta"])
        await manager.revoke(["beta"])
        assert await manager.authorized(["alpha", "beta", "gamma"]) == {"alpha"}
        assert await manager.stale(["alpha"]) == set()
        assert not cleans_up(manager)
        assert (tmp_path / "allowed-channels.txt").read_text() == "alpha\n"
    finally:
        sys.modules.pop("mymanager", None)


@pytest.mark.timeout(180)
@run
async def test_the_usage_examples_run(
    tmp_path: Path, redis_server: str, redis_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, code in examples().items():
        (tmp_path / name).write_text(code, encoding="utf-8")
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
            PYTHONPATH=str(tmp_path),
        )
        for key, value in cluster.vars.items():  # the application's own process, configured
            monkeypatch.setenv(key, value)
        monkeypatch.syspath_prepend(str(tmp_path))
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
            await _web(sim)
            await _archive(sim)
        finally:
            await cluster.stop()
            for name in ("webapp", "archive"):
                module = sys.modules.pop(name, None)
                if module is not None and hasattr(module, "cluster"):
                    module.cluster.close()


async def _ping(sim: ChatSimulator, cluster: ProcessCluster) -> None:
    """A viewer says !ping; the bot's subscriber, inside the worker, answers pong."""
    options = ConnectionOptions(
        host=sim.host,
        port=sim.port,
        secure=False,
        login="viewer",
        token="viewertoken",
        name="viewer",
    )
    async with Connection(options) as viewer:
        await viewer.wait_connected(10)
        await viewer.send("PRIVMSG", ["#alpha", "!ping"])
        said = sim.account(BOT).said
        await cluster.until(lambda: ("alpha", "pong") in said, 20, "the bot to answer pong")


async def _web(sim: ChatSimulator) -> None:
    """The WSGI application, called as a WSGI server calls it (in a thread of its own)."""

    def call(query: str, body: bytes) -> tuple[str, dict[str, Any]]:
        webapp = importlib.import_module("webapp")
        answer: list[str] = []
        environ = {
            "REQUEST_METHOD": "POST",
            "QUERY_STRING": query,
            "CONTENT_LENGTH": str(len(body)),
            "wsgi.input": io.BytesIO(body),
        }
        chunks = webapp.application(environ, lambda status, headers: answer.append(status))
        return answer[0], json.loads(b"".join(chunks))

    status, body = await asyncio.to_thread(call, "channel=%23Beta", b"hello from the web")
    assert status == "200 OK", body
    assert body["status"] == "written"
    assert ("beta", "hello from the web") in sim.account(BOT).said
    status, body = await asyncio.to_thread(call, "channel=beta", b"two\r\nPRIVMSG #alpha :x")
    assert status == "400 Bad Request"
    assert "CR, LF or NUL" in body["error"]
    status, body = await asyncio.to_thread(call, "channel=not+a+channel", b"hi")
    assert status == "400 Bad Request"
    assert "invalid channel name" in body["error"]


async def _archive(sim: ChatSimulator) -> None:
    """The archiver reads chat lines from the stream while traffic flows."""
    archive = importlib.import_module("archive")
    sim.set_rate(50.0)
    try:
        lines = await asyncio.wait_for(archive.archive(limit=20), 30)
    finally:
        sim.set_rate(0.0)
    assert len(lines) == 20
    assert all(line.startswith(("#alpha <", "#beta <")) for line in lines)
