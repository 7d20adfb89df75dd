"""The web pages' API, metrics and health check, against a real cluster (``tmi-cluster run``
processes on the simulator, real Redis, SQLite), through the ASGI app itself and through
``tmi-cluster dashboard`` on a socket."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
import types
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis.asyncio
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr
from starlette.applications import Starlette
from starlette.routing import Mount

from tmi_cluster import Cluster
from tmi_cluster.bus import Keys
from tmi_cluster.bus.streams import SCALE_HISTORY, recent_scaled, remember_scaled
from tmi_cluster.config import Settings, load_settings
from tmi_cluster.errors import ConfigError
from tmi_cluster.events import ProcessScaled
from tmi_cluster.simulator import ChatSimulator
from tmi_cluster.web import create_app

from .clusterproc import ProcessCluster
from .helpers import Foreground, free_port, run
from .test_cli import SCRIPT

CHANNELS = ["alpha", "beta", "gamma"]
PASSWORD = "correct horse battery"
TOKEN = "scrape-token-1"
ONE_WORKER = {
    "TMI_CLUSTER_AUTO_SCALE__PROCESSES__MIN": "1",
    "TMI_CLUSTER_AUTO_SCALE__PROCESSES__MAX": "1",
}


def install(folder: Path) -> None:
    done = subprocess.run([SCRIPT, "install"], cwd=folder, capture_output=True, check=False)
    assert done.returncode == 0, done.stderr


def with_web(settings: Settings, **web: Any) -> Settings:
    """``settings`` with some ``web.*`` keys changed."""
    secrets = {k: SecretStr(v) for k, v in web.items() if k in ("password", "token")}
    return settings.model_copy(update={"web": settings.web.model_copy(update={**web, **secrets})})


def basic(username: str, password: str) -> dict[str, str]:
    encoded = base64.b64encode(f"{username}:{password}".encode()).decode()
    return {"Authorization": f"Basic {encoded}"}


ADMIN = basic("admin", PASSWORD)


@contextlib.asynccontextmanager
async def web_cluster(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> AsyncIterator[tuple[ProcessCluster, Settings, httpx.AsyncClient]]:
    """A supervisor with one worker on the simulator, and a client of its web app (credentials:
    ``admin`` and :data:`PASSWORD`, or :data:`TOKEN`)."""
    async with ChatSimulator(channels=CHANNELS) as sim:
        cluster = ProcessCluster(tmp_path, sim, redis_server, redis_prefix, **ONE_WORKER)
        try:
            cluster.start("sup-a")
            await cluster.until(lambda: _running(cluster), 30, "a running worker")
            settings = with_web(cluster.settings(), password=PASSWORD, token=TOKEN)
            app = create_app(settings)
            transport = httpx.ASGITransport(app=app)
            try:
                async with httpx.AsyncClient(transport=transport, base_url="http://web") as client:
                    yield cluster, settings, client
            finally:
                await app.state.view.aclose()
        finally:
            await cluster.stop()


async def _running(cluster: ProcessCluster) -> bool:
    return any(s.state == "running" for s in (await cluster.workers()).values())


async def until_json(
    client: httpx.AsyncClient, path: str, check: Any, what: str, timeout_s: float = 30
) -> Any:
    """GET ``path`` (as admin) until ``check(body)`` holds; the body."""
    body: Any = None
    try:
        async with asyncio.timeout(timeout_s):
            while True:
                response = await client.get(path, headers=ADMIN)
                body = response.json() if response.content else None
                if response.status_code == 200 and check(body):
                    return body
                await asyncio.sleep(0.2)
    except TimeoutError:
        raise AssertionError(f"{what}: last answer {body}") from None


@run
async def test_everything_but_the_health_check_needs_credentials(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    async with web_cluster(tmp_path, redis_server, redis_prefix) as (_, _settings, client):
        protected = [
            "/",
            "/static/dashboard.js",
            "/api/statistics",
            "/api/supervisors",
            "/api/channels",
            "/metrics",
            "/openapi.json",
        ]
        for path in protected:
            refused = await client.get(path)
            assert refused.status_code == 401, path
            assert refused.headers["www-authenticate"].startswith("Basic ")
            assert "error" in refused.json()
            for wrong in (
                basic("admin", "wrong"),
                basic("root", PASSWORD),
                {"Authorization": "Bearer nope"},
                {"Authorization": "Basic !!notbase64"},
                {"Authorization": f"Token {TOKEN}"},
            ):
                assert (await client.get(path, headers=wrong)).status_code == 401, (path, wrong)
            assert (await client.get(path, headers=ADMIN)).status_code == 200, path
            bearer = {"Authorization": f"Bearer {TOKEN}"}
            assert (await client.get(path, headers=bearer)).status_code == 200, path
        # the health check is public: 204 when healthy
        health = await client.get("/health")
        assert health.status_code == 204
        # security headers on every answer; no secret in any
        page = await client.get("/", headers=ADMIN)
        assert "default-src 'self'" in page.headers["content-security-policy"]
        assert page.headers["x-frame-options"] == "DENY"
        for path in protected[2:]:
            text = (await client.get(path, headers=ADMIN)).text
            assert PASSWORD not in text
            assert TOKEN not in text
        assert (await client.get("/static/../app.py", headers=ADMIN)).status_code == 404
        assert (await client.get("/static/nothing.js", headers=ADMIN)).status_code == 404


@run
async def test_the_api_follows_the_cluster(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    async with web_cluster(tmp_path, redis_server, redis_prefix) as (cluster, settings, client):
        first = await until_json(
            client, "/api/statistics", lambda s: s["status"] == "operational", "operational"
        )
        assert set(first) >= {
            "status",
            "reason",
            "messages_per_s",
            "commands_per_s",
            "channels",
            "supervisors",
            "processes",
        }
        assert set(first["channels"]) == {"joined", "joining", "failed", "wanted", "unauthorized"}
        assert first["channels"]["joined"] == 0
        assert (first["supervisors"], first["processes"]) == (1, 1)
        # the supervisor's change of size, in the history the dashboard shows
        [scaled] = [e for e in first["scaled"] if e["supervisor"] == "sup-a"]
        assert (scaled["before"], scaled["after"], scaled["cause"]) == (0, 1, "below_minimum")
        assert abs(scaled["at"] - time.time()) < 120
        async with Cluster(settings) as app:
            joined = await app.join(["alpha", "beta"], timeout_s=20)
        assert all(j.ok for j in joined.values()), joined
        stats = await until_json(
            client, "/api/statistics", lambda s: s["channels"]["joined"] == 2, "two joined"
        )
        assert stats["status"] == "operational"
        # api/supervisors is what `list --json` prints
        listing = await until_json(
            client, "/api/supervisors", lambda b: b["processes"][0]["channels"] == 2, "listing"
        )
        shown = subprocess.run(
            [SCRIPT, "list", "--json"],
            cwd=tmp_path,
            env=cluster.env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        )
        printed = json.loads(shown.stdout)
        assert [s["id"] for s in listing["supervisors"]] == [
            s["id"] for s in printed["supervisors"]
        ]
        assert set(listing["processes"][0]) == set(printed["processes"][0])
        assert listing["processes"][0]["id"] == printed["processes"][0]["id"]
        owner = listing["processes"][0]["id"]
        # api/channels: search, state, pages
        found = (await client.get("/api/channels?search=ALP", headers=ADMIN)).json()
        assert found["total"] == 1
        [alpha] = found["channels"]
        assert (alpha["channel"], alpha["state"], alpha["process"]) == ("alpha", "joined", owner)
        by_owner = (await client.get(f"/api/channels?search={owner}", headers=ADMIN)).json()
        assert by_owner["total"] == 2
        pages = [
            (await client.get(f"/api/channels?per_page=1&page={n}", headers=ADMIN)).json()
            for n in (1, 2, 3)
        ]
        assert [p["total"] for p in pages] == [2, 2, 2]
        assert [len(p["channels"]) for p in pages] == [1, 1, 0]
        assert {p["channels"][0]["channel"] for p in pages[:2]} == {"alpha", "beta"}
        failed = (await client.get("/api/channels?state=failed", headers=ADMIN)).json()
        assert failed["total"] == 0
        for query, named in (
            ("per_page=0", "per_page"),
            ("per_page=501", "per_page"),
            ("page=x", "page"),
            ("page=0", "page"),
            ("state=nope", "state"),
            ("search=" + "x" * 101, "search"),
        ):
            bad = await client.get(f"/api/channels?{query}", headers=ADMIN)
            assert bad.status_code == 400, query
            assert bad.json()["error"].startswith(named), bad.json()
        spec = (await client.get("/openapi.json", headers=ADMIN)).json()
        assert {"/api/statistics", "/api/supervisors", "/api/channels", "/health"} <= set(
            spec["paths"]
        )


@run
async def test_metrics_say_what_the_cluster_holds(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    async with web_cluster(tmp_path, redis_server, redis_prefix) as (cluster, settings, client):
        async with Cluster(settings) as app:
            await app.join(["alpha", "beta", "gamma"], timeout_s=20)
        await until_json(
            client, "/api/statistics", lambda s: s["channels"]["joined"] == 3, "three joined"
        )
        [process_id] = await cluster.workers()
        # a reader's consumer group on the event stream, which has read nothing yet
        await cluster.client.xgroup_create(cluster.keys.events, "dash-test", id="0")
        written = int(await cluster.client.xlen(cluster.keys.events))
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        async with asyncio.timeout(20):
            while True:
                response = await client.get("/metrics", headers=ADMIN)
                assert response.status_code == 200
                assert response.headers["content-type"].startswith("text/plain")
                samples = {
                    (s.name, tuple(sorted(s.labels.items()))): s.value
                    for family in text_string_to_metric_families(response.text)
                    for s in family.samples
                }
                key = (
                    "tmi_cluster_process_channels",
                    (("process", process_id), ("supervisor", "sup-a")),
                )
                if samples.get(key) == 3:
                    break
                await asyncio.sleep(0.3)
        assert samples[("tmi_cluster_up", ())] == 1
        assert samples[("tmi_cluster_status", (("status", "operational"),))] == 1
        assert samples[("tmi_cluster_channels", (("state", "joined"),))] == 3
        assert samples[("tmi_cluster_supervisors", ())] == 1
        assert samples[("tmi_cluster_processes", ())] == 1
        capacity = settings.auto_scale.thresholds.channels  # 3 joined on 1 process
        assert samples[("tmi_cluster_channel_usage_percent", ())] == 100.0 * 3 / capacity
        group = (("group", "dash-test"),)
        assert samples[("tmi_cluster_stream_events_group_pending_entries", group)] == 0
        assert samples[("tmi_cluster_stream_events_group_lag_entries", group)] >= written >= 1
        assert samples[("tmi_cluster_coordinator_leader", (("supervisor", "sup-a"),))] == 1
        labels = (("process", process_id), ("supervisor", "sup-a"))
        memory = samples[("tmi_cluster_process_resident_memory_bytes", labels)]
        assert 10 * 2**20 < memory < 2**30
        status = (await cluster.workers())[process_id]
        assert samples[("tmi_cluster_process_connections", labels)] == status.connections >= 1
        assert ("tmi_cluster_process_messages_total", labels) in samples  # a counter
        assert ("tmi_cluster_process_reconnects_total", labels) in samples
        joined = ("tmi_cluster_process_joins_total", tuple(sorted((*labels, ("result", "joined")))))
        assert samples[joined] == 3
        sup = (("supervisor", "sup-a"),)
        assert samples[("tmi_cluster_coordinator_passes_total", sup)] >= 1
        assert samples[("tmi_cluster_supervisor_worker_restarts_total", sup)] == 0
        join_waits = tuple(sorted((*labels, ("bucket", "join"))))
        assert samples[("tmi_cluster_process_rate_limit_wait_seconds_total", join_waits)] >= 0
        # no label is ever a channel
        assert not any(value in CHANNELS for _, pairs in samples for _, value in pairs), (
            "a channel as a label"
        )


@run
async def test_the_health_check_says_503_with_the_reason_when_the_cluster_is_down(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    async with web_cluster(tmp_path, redis_server, redis_prefix) as (cluster, _settings, client):
        assert (await client.get("/health")).status_code == 204
        supervisor = cluster.running["sup-a"]
        supervisor.send_signal(signal.SIGKILL)  # its workers stop on their own (orphaned)
        await asyncio.to_thread(supervisor.wait, 30)
        async with asyncio.timeout(30):
            while (answer := await client.get("/health")).status_code != 503:
                await asyncio.sleep(0.2)
        body = answer.json()
        assert body["status"] in ("down", "degraded")
        assert body["reason"]  # its workers went first (orphans), or it was found dead
        # once its heartbeat is gone: down, and why
        stats = await until_json(
            client, "/api/statistics", lambda s: s["status"] == "down", "down", timeout_s=30
        )
        assert "sup-a" in stats["reason"], stats
        assert (await client.get("/health")).json() == {
            "status": "down",
            "reason": stats["reason"],
        }


def test_the_app_mounts_in_starlette_and_fastapi(tmp_path: Path) -> None:
    """The documented examples: the app under its path in a host application, the host's own
    routes beside it, the host's own check of credentials."""
    fastapi = pytest.importorskip("fastapi")
    assert (
        subprocess.run(
            [SCRIPT, "install"], cwd=tmp_path, capture_output=True, check=False
        ).returncode
        == 0
    )

    settings = load_settings(
        cwd=tmp_path, environ={"TMI_CLUSTER_REDIS__URL": "redis://127.0.0.1:1/0"}
    )

    def allow(request: Any) -> bool:
        return bool(request.headers.get("x-api-key") == "host-key")

    starlette_app = Starlette(routes=[Mount("/tmi-cluster", app=create_app(settings))])
    fastapi_app = fastapi.FastAPI()
    fastapi_app.mount("/tmi-cluster", create_app(settings, authorize=allow))

    async def check() -> None:
        for host, headers in ((starlette_app, None), (fastapi_app, {"x-api-key": "host-key"})):
            transport = httpx.ASGITransport(app=host)
            async with httpx.AsyncClient(transport=transport, base_url="http://web") as client:
                assert (await client.get("/tmi-cluster/api/statistics")).status_code == 401
                if headers is None:
                    continue
                stats = await client.get("/tmi-cluster/api/statistics", headers=headers)
                assert stats.status_code == 200
                assert stats.json()["status"] == "down"  # none ever ran
                health = await client.get("/tmi-cluster/health")
                assert health.status_code == 503
                assert health.json()["reason"] == "no supervisor is alive"
                page = await client.get("/tmi-cluster/", headers=headers)
                assert 'src="static/dashboard.js"' in page.text  # relative: works where mounted

    asyncio.run(check())


def test_dashboard_command_prints_a_password_made_for_the_run_and_serves(tmp_path: Path) -> None:
    assert (
        subprocess.run(
            [SCRIPT, "install"], cwd=tmp_path, capture_output=True, check=False
        ).returncode
        == 0
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMI_CLUSTER_")} | {
        "TMI_CLUSTER_REDIS__URL": "redis://127.0.0.1:1/0"
    }
    with Foreground([SCRIPT, "dashboard", "--port", "0"], tmp_path, env) as dashboard:
        first = dashboard.line()
        assert first.startswith("the dashboard: http://127.0.0.1:"), first
        url = first.split()[2]
        second = dashboard.line()
        password = second.split("'")[3]
        assert len(password) >= 20
        assert httpx.get(url + "api/statistics", timeout=10).status_code == 401
        answer = httpx.get(url + "api/statistics", auth=("admin", password), timeout=10)
        assert answer.status_code == 200
        root = url.split("/tmi-cluster/")[0] + "/"
        assert httpx.get(root, timeout=10).headers["location"] == "/tmi-cluster/"
        code, err = dashboard.stop()
    assert code == 0, err
    assert password not in err


def test_dashboard_command_says_why_it_cannot_listen(tmp_path: Path) -> None:
    assert (
        subprocess.run(
            [SCRIPT, "install"], cwd=tmp_path, capture_output=True, check=False
        ).returncode
        == 0
    )
    done = subprocess.run(
        [SCRIPT, "dashboard", "--host", "203.0.113.1", "--port", "1"],
        cwd=tmp_path,
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 69, done
    assert done.stderr.startswith("error: cannot serve the dashboard on 203.0.113.1:1"), done.stderr


def test_a_run_with_web_enabled_serves_the_pages(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMI_CLUSTER_")} | {
        "TMI_CLUSTER_REDIS__URL": redis_server,
        "TMI_CLUSTER_PREFIX": redis_prefix,
        "TMI_CLUSTER_TMI__CONNECTION__SIMULATE": "always",
        "TMI_CLUSTER_WEB__ENABLED": "true",
        "TMI_CLUSTER_WEB__PORT": str(port),
        **ONE_WORKER,
    }
    with Foreground([SCRIPT, "run", "--id", "web-a"], tmp_path, env) as supervisor:
        ready = supervisor.line()
        assert f"web pages: http://127.0.0.1:{port}/tmi-cluster/" in ready, ready
        sign_in = supervisor.line()
        assert sign_in.startswith("web pages: sign in as 'admin' with the password"), sign_in
        password = sign_in.split("'")[3]
        base = f"http://127.0.0.1:{port}/tmi-cluster/"
        deadline = time.monotonic() + 30
        while httpx.get(base + "health", timeout=10).status_code != 204:
            assert time.monotonic() < deadline, "never healthy"
            time.sleep(0.3)
        stats = httpx.get(base + "api/statistics", auth=("admin", password), timeout=10)
        assert stats.json()["status"] == "operational"
        assert httpx.get(base + "api/statistics", timeout=10).status_code == 401
        # a second supervisor on the same port cannot start, and says why in one line
        second = subprocess.run(
            [SCRIPT, "run", "--id", "web-b"],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert second.returncode != 0
        assert f"cannot serve the web pages on 127.0.0.1:{port}" in second.stderr, second.stderr
        assert "Traceback" not in second.stderr
        code, err = supervisor.stop()
    assert code == 0, err
    assert password not in err


@run
async def test_the_scale_history_keeps_the_newest_changes(
    redis_server: str, redis_prefix: str
) -> None:
    client = redis.asyncio.Redis.from_url(redis_server)
    keys = Keys(redis_prefix, 30.0, 3.0)
    try:
        for n in range(SCALE_HISTORY + 5):
            event = ProcessScaled(supervisor="sup-x", before=n, after=n + 1, cause="manual")
            await remember_scaled(client, keys, event)
        await client.lpush(keys.scale_history, b"not json")  # a bad entry is skipped
        found = await recent_scaled(client, keys, count=SCALE_HISTORY + 10)
        # the newest 50, newest first (the bad entry, pushed after them, skipped)
        assert [e.event.before for e in found] == list(range(SCALE_HISTORY + 4, 4, -1))
        assert all(a.at >= b.at for a, b in itertools.pairwise(found))
    finally:
        await client.aclose()


def _nowhere(folder: Path, **extra: str) -> Settings:
    """Settings of a cluster in ``folder`` whose Redis is not there."""
    return load_settings(
        cwd=folder, environ={"TMI_CLUSTER_REDIS__URL": "redis://127.0.0.1:1/0", **extra}
    )


def _get(app: Starlette, path: str, **headers: str) -> httpx.Response:
    async def go() -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://web") as client:
            return await client.get(path, headers=headers)

    return asyncio.run(go())


def test_bad_settings_of_the_web_pages_are_refused_in_words(tmp_path: Path) -> None:
    for env, named in (
        ({"TMI_CLUSTER_PATH": "../etc"}, "path: expected a URL path"),
        ({"TMI_CLUSTER_PATH": "a b"}, "path: expected a URL path"),
        ({"TMI_CLUSTER_WEB__USERNAME": "a:b"}, "web.username: expected a user name"),
        ({"TMI_CLUSTER_WEB__HOST": ""}, "web.host: string should have at least 1 character"),
    ):
        with pytest.raises(ConfigError, match=re.escape(named)):
            _nowhere(tmp_path, **env)
    for path in ("", "/", "/x/y", "x/y/", "tmi-cluster"):
        assert _nowhere(tmp_path, TMI_CLUSTER_PATH=path).path == path
    # a host's middleware that fails on the app is refused when the app is built
    sys.modules["tmi_test_middleware"] = types.ModuleType("tmi_test_middleware")
    sys.modules["tmi_test_middleware"].broken = lambda app: 1 / 0  # type: ignore[attr-defined]
    for entry in ("tmi_test_middleware:broken", "os:getcwd"):
        settings = _nowhere(tmp_path, TMI_CLUSTER_MIDDLEWARE=json.dumps([entry]))
        with pytest.raises(ConfigError, match=f"middleware: '{entry}' failed on the app"):
            create_app(settings)


def test_the_health_check_answers_any_host_and_hides_the_database(tmp_path: Path) -> None:
    # no tables: the database cannot be read
    settings = _nowhere(tmp_path, TMI_CLUSTER_DOMAIN="tmi.example.com")
    settings = with_web(settings, password=PASSWORD)
    app = create_app(settings)
    health = _get(app, "/health")  # Host "web", not the domain: a probe by the pod's address
    assert health.status_code == 503
    assert health.json() == {"status": "down", "reason": "the database cannot be read"}
    wrong_host = _get(app, "/api/statistics", **ADMIN)
    assert wrong_host.status_code == 400  # the pages answer their domain only
    right = _get(app, "/api/statistics", host="tmi.example.com", **ADMIN)
    assert right.status_code == 503
    assert "cannot read from database" in right.json()["error"]  # for those signed in


def test_channels_take_several_states_and_ascii_numbers_only(tmp_path: Path) -> None:
    install(tmp_path)
    app = create_app(with_web(_nowhere(tmp_path), password=PASSWORD))
    both = _get(app, "/api/channels?state=joined&state=failed", **ADMIN)
    assert both.status_code == 200
    assert _get(app, "/api/channels?page=%EF%BC%91", **ADMIN).status_code == 400  # a wide "1"
    # with only the host's own check, no browser is asked for a password
    hosted = create_app(_nowhere(tmp_path), authorize=lambda request: False)
    refused = _get(hosted, "/api/statistics")
    assert refused.status_code == 401
    assert "www-authenticate" not in refused.headers
