"""The private Redis server: start, find, password, stop, and never an orphan."""

from __future__ import annotations

import contextlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import psutil
import pytest
import redis

from tmi_cluster.embedded import EmbeddedRedis, find_embedded, redis_server_executable
from tmi_cluster.errors import EmbeddedRedisError

from .helpers import free_port


def test_start_find_and_stop(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as server:
        state = find_embedded(tmp_path)
        assert state is not None
        assert state.url == server.url
        assert state.owner_pid == os.getpid()
        mode = stat.S_IMODE((tmp_path / "redis.json").stat().st_mode)
        assert mode == 0o600
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        assert client.info("server")["redis_version"].startswith(("6.", "7."))
        client.close()
        pid = server.pid
        assert pid is not None
    assert find_embedded(tmp_path) is None
    assert not (tmp_path / "redis.json").exists()
    with contextlib.suppress(psutil.NoSuchProcess):  # gone, or a zombie not reaped yet
        assert psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    server.stop()  # idempotent


def test_password_is_required(tmp_path: Path) -> None:
    with EmbeddedRedis(tmp_path) as server:
        state = find_embedded(tmp_path)
        assert state is not None
        client = redis.Redis(host="127.0.0.1", port=state.port)
        with pytest.raises(redis.exceptions.AuthenticationError):
            client.ping()
        client.close()
        assert server.url.startswith("redis://:")


def test_second_owner_is_refused(tmp_path: Path) -> None:
    owner = _spawn_owner(tmp_path)
    try:
        with pytest.raises(EmbeddedRedisError, match="already runs the embedded Redis server"):
            EmbeddedRedis(tmp_path).start()
    finally:
        owner.kill()
        owner.communicate()


def _spawn_owner(folder: Path) -> subprocess.Popen[str]:
    code = (
        "import sys\nfrom tmi_cluster.embedded import EmbeddedRedis\n"
        f"server = EmbeddedRedis({str(folder)!r}).start()\n"
        "print(server.pid, flush=True)\nsys.stdin.read()\n"
    )
    process = subprocess.Popen(
        [sys.executable, "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert line.strip().isdigit(), line
    return process


def test_server_dies_with_its_owner_even_on_sigkill(tmp_path: Path) -> None:
    owner = _spawn_owner(tmp_path)
    state = find_embedded(tmp_path)
    assert state is not None
    server = psutil.Process(state.pid)
    owner.kill()
    owner.communicate()
    _wait_gone(server)
    assert find_embedded(tmp_path) is None


def _wait_gone(process: psutil.Process) -> None:
    try:
        process.wait(timeout=10)
    except psutil.TimeoutExpired:
        if process.status() != psutil.STATUS_ZOMBIE:
            raise


def test_stray_server_of_dead_owner_is_reclaimed(tmp_path: Path) -> None:
    # A server whose owner died without stopping it (as on a system without PDEATHSIG).
    port = free_port()
    with subprocess.Popen(
        [redis_server_executable(), "--port", str(port), "--bind", "127.0.0.1", "--save", ""],
        stdout=subprocess.DEVNULL,
    ) as stray:
        state = {
            "url": f"redis://127.0.0.1:{port}/0",
            "pid": stray.pid,
            "owner_pid": 999_999_999,
            "port": port,
        }
        (tmp_path / "redis.json").write_text(json.dumps(state))
        with EmbeddedRedis(tmp_path) as server:
            assert stray.wait(timeout=10) == 0  # stopped by the new owner
            assert server.pid != stray.pid


def test_missing_executable_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(EmbeddedRedisError, match="is not an executable file"):
        redis_server_executable(str(tmp_path / "missing"))


def test_server_that_cannot_start_reports_why(tmp_path: Path) -> None:
    fake = tmp_path / "fake-redis"
    fake.write_text("#!/bin/sh\necho 'broken build' >&2\nexit 3\n")
    fake.chmod(0o755)
    with pytest.raises(EmbeddedRedisError, match="did not start: broken build"):
        EmbeddedRedis(tmp_path / "state", executable=str(fake)).start()
    assert find_embedded(tmp_path / "state") is None
