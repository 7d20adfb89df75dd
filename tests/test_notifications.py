"""Notifications through apprise to a local webhook receiver (a real HTTP server), from real
supervisors: once per incident for the whole cluster, whichever supervisors see it."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from tmi_cluster import Cluster
from tmi_cluster.simulator import ChatSimulator

from .clusterproc import ProcessCluster
from .helpers import run
from .test_cli import SCRIPT, _env

pytest.importorskip("apprise")


class Receiver:
    """A webhook receiver on loopback: every JSON body posted to it, in order."""

    def __init__(self) -> None:
        self.posts: list[dict[str, Any]] = []
        received = self.posts

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("content-length", 0))
                received.append(json.loads(self.rfile.read(length) or b"{}"))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"json://127.0.0.1:{self.server.server_address[1]}/hook"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def titles(self) -> list[str]:
        return [str(post.get("title", "")) for post in self.posts]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    found = Receiver()
    found.thread.start()
    try:
        yield found
    finally:
        found.server.shutdown()
        found.server.server_close()


async def _titled(receiver: Receiver, part: str, cluster: ProcessCluster) -> None:
    await cluster.until(
        lambda: any(part in title for title in receiver.titles()), 40, f"a notification: {part}"
    )


@run
async def test_an_incident_is_notified_once_for_the_whole_cluster(
    tmp_path: Path, redis_server: str, redis_prefix: str, receiver: Receiver
) -> None:
    settings = {
        "TMI_CLUSTER_NOTIFICATIONS__URLS": json.dumps([receiver.url]),
        "TMI_CLUSTER_NOTIFICATIONS__EVERY": "0.5",
        "TMI_CLUSTER_NOTIFICATIONS__FAILING_CHANNELS": "1",
        "TMI_CLUSTER_AUTO_SCALE__PROCESSES__MIN": "3",
        "TMI_CLUSTER_AUTO_SCALE__PROCESSES__MAX": "3",
    }
    async with ChatSimulator(channels=["alpha", "closed"]) as sim:
        cluster = ProcessCluster(tmp_path, sim, redis_server, redis_prefix, **settings)
        try:
            for supervisor in ("sup-a", "sup-b", "sup-c"):
                cluster.start(supervisor)

            async def three() -> bool:
                return len({s.supervisor for s in (await cluster.workers()).values()}) == 3

            await cluster.until(three, 60, "a worker on each supervisor")
            # a supervisor lost: the two others see it; one message
            cluster.running["sup-c"].send_signal(signal.SIGKILL)
            await asyncio.to_thread(cluster.running["sup-c"].wait, 30)
            await _titled(receiver, "supervisor sup-c lost", cluster)
            # a channel that fails to join: the coordinator's supervisor sees it; one message
            sim.suspend("closed")
            async with Cluster(cluster.settings()) as app:
                await app.join(["closed"], timeout_s=10)
            await _titled(receiver, "channels fail to join", cluster)
            await asyncio.sleep(3)  # six more looks by each supervisor: nothing new
            titles = receiver.titles()
            assert titles.count("tmi-cluster: supervisor sup-c lost") == 1, titles
            assert sum("channels fail to join" in t for t in titles) == 1, titles
            lost = next(p for p in receiver.posts if "sup-c lost" in str(p.get("title")))
            assert "no heartbeat" in lost["message"]
            failing = next(p for p in receiver.posts if "fail to join" in str(p.get("title")))
            assert "closed (msg_channel_suspended)" in failing["message"]
        finally:
            await cluster.stop()
    assert receiver.url.split("//")[1] not in cluster.logs()  # the URL is never logged


def test_a_notification_url_that_cannot_be_used_stops_the_start(tmp_path: Path) -> None:
    env = _env(
        TMI_CLUSTER_REDIS__URL="redis://127.0.0.1:6379/0",
        TMI_CLUSTER_PREFIX="test-notify-bad:",
        TMI_CLUSTER_TMI__CONNECTION__SIMULATE="always",
        TMI_CLUSTER_NOTIFICATIONS__URLS='["nosuchservice://secret-token@x"]',
    )
    done = subprocess.run(
        [SCRIPT, "run"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode != 0
    assert "notifications.urls[0]: not a notification URL apprise knows" in done.stderr
    assert "secret-token" not in done.stderr + done.stdout
