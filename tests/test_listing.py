"""``tmi-cluster list``: liveness from the Redis heartbeats, never from a stale SQL row."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgspec
import pytest

from tmi_cluster.bus import Beat, ProcessStatus, SupervisorStatus
from tmi_cluster.cluster.listing import Liveness, health, shown_state, supervisor_rows
from tmi_cluster.store import RunState, Store
from tmi_cluster.store.models import ProcessRecord, SupervisorRecord

from .test_cli import SCRIPT, _env, tmi


@pytest.mark.parametrize(
    ("recorded", "live", "shown"),
    [
        ("running", True, "running"),
        ("running", False, "dead"),
        ("running", None, "running?"),
        ("starting", False, "dead"),
        ("stopping", False, "dead"),
        ("stopping", True, "stopping"),
        ("stopped", False, "stopped"),
        ("stopped", None, "stopped"),
        ("stopped", True, "stopped"),
        ("dead", None, "dead"),
    ],
)
def test_shown_state(recorded: str, live: bool | None, shown: str) -> None:
    assert shown_state(recorded, live) == shown


def test_last_seen_is_now_only_with_a_heartbeat() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    record = SupervisorRecord(
        id="s1",
        hostname="h",
        pid=1,
        state="running",
        started_at=now - timedelta(seconds=600),
        last_seen_at=now - timedelta(seconds=90),
    )
    beat = Beat(SupervisorStatus(at=now.timestamp(), processes=2), 0.0)
    worker = Beat(ProcessStatus(supervisor="s1"), 0.0)
    workers = [ProcessRecord(id=f"s1-{n}", supervisor_id="s1", state="running") for n in (1, 2)]
    live = supervisor_rows(
        [record], workers, Liveness({"s1": beat}, {"s1-1": worker, "s1-2": worker}), now
    )
    dead = supervisor_rows([record], [], Liveness({}, {}), now)
    unknown = supervisor_rows([record], [], Liveness(None, None, "x"), now)
    assert live == [["s1", "h", "1", "running", "10 min", "now", "2"]]
    assert dead == [["s1", "h", "1", "dead", "8 min", "90 s ago", "0"]]  # ran until last heard
    assert unknown == [["s1", "h", "1", "running?", "10 min", "90 s ago", "0"]]
    # SIGUSR2: its workers are paused
    paused = Beat(msgspec.structs.replace(beat.status, state="running", paused=True), 0.0)
    shown = supervisor_rows(
        [record], workers, Liveness({"s1": paused}, {"s1-1": worker}), now
    )  # SIGUSR2
    assert shown[0][3] == "paused"


def _supervisor_line(listed: str, supervisor_id: str) -> list[str]:
    for line in listed.splitlines():
        if line.startswith(supervisor_id + " "):
            return line.split()
    raise AssertionError(f"{supervisor_id} not listed:\n{listed}")


@pytest.fixture
def external_supervisor(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    env = {
        "TMI_CLUSTER_REDIS__URL": redis_server,
        "TMI_CLUSTER_PREFIX": redis_prefix,
        "TMI_CLUSTER_SUPERVISOR__STALE": "1",
        "TMI_CLUSTER_DATABASE__URL": f"sqlite:///{tmp_path / 'cluster.db'}",
        "TMI_CLUSTER_TMI__CONNECTION__SIMULATE": "always",
    }
    process = subprocess.Popen(
        [SCRIPT, "run"],
        cwd=tmp_path,
        env=_env(**env),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert " running (Redis: redis://127.0.0.1:" in line, line
    yield process, env
    if process.poll() is None:
        process.kill()
    process.communicate()


def test_supervisor_killed_with_sigkill_is_listed_dead(
    tmp_path: Path, external_supervisor: tuple[subprocess.Popen[str], dict[str, str]]
) -> None:
    process, env = external_supervisor
    with Store(env["TMI_CLUSTER_DATABASE__URL"]) as store:
        [record] = store.supervisors()
    listed = tmi(tmp_path, "list", **env)
    assert listed.returncode == 0, listed.stderr
    alive = _supervisor_line(listed.stdout, record.id)
    assert alive[3] == "running"
    assert alive[-2] == "now"

    process.kill()
    process.communicate(timeout=30)
    deadline = time.monotonic() + 30
    while True:  # each `list` is a process start; the heartbeat expires one second after the kill
        listed = tmi(tmp_path, "list", **env)
        assert listed.returncode == 0, listed.stderr
        row = _supervisor_line(listed.stdout, record.id)
        if row[3] == "dead" or time.monotonic() > deadline:
            break
    assert row[3] == "dead", listed.stdout
    assert row[-3:-1] == ["s", "ago"]  # its last sign of life
    shown = json.loads(tmi(tmp_path, "list", "--json", **env).stdout)["supervisors"][0]
    # its last beat as Redis remembers it, not the record's start (written once, at start)
    assert shown["last_heartbeat"] > shown["started"]
    assert listed.stderr == ""
    with Store(env["TMI_CLUSTER_DATABASE__URL"]) as store:
        [still] = store.supervisors()
    assert still.state == "running"  # the SQL row was left behind; list did not trust it


def test_unreachable_redis_lists_records_with_one_warning(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'cluster.db'}"
    with Store(url) as store:
        store.migrate()
        store.record_supervisor("host-1", RunState.RUNNING, pid=4242)
        store.record_supervisor("host-2", RunState.STOPPED, pid=4343)
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        listed = tmi(
            tmp_path,
            "list",
            "--all",
            TMI_CLUSTER_DATABASE__URL=url,
            TMI_CLUSTER_REDIS__URL=f"redis://:hunter2@127.0.0.1:{port}/0",
        )
    assert listed.returncode == 0, listed.stderr
    [warning] = listed.stderr.splitlines()
    assert warning.startswith(f"warning: cannot reach Redis at 127.0.0.1:{port}: ")
    assert warning.endswith("; liveness unknown: a state marked '?' is the database's last record")
    assert "hunter2" not in listed.stdout + listed.stderr
    assert _supervisor_line(listed.stdout, "host-1")[3] == "running?"
    assert _supervisor_line(listed.stdout, "host-2")[3] == "stopped"


def test_list_hides_the_stopped_unless_asked(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> None:
    url = f"sqlite:///{tmp_path / 'cluster.db'}"
    with Store(url) as store:
        store.migrate()
        store.record_supervisor("crashed", RunState.RUNNING, pid=4242)  # no heartbeat: dead
        store.record_supervisor("gone", RunState.STOPPED, pid=4343)
    env = {
        "TMI_CLUSTER_DATABASE__URL": url,
        "TMI_CLUSTER_REDIS__URL": redis_server,
        "TMI_CLUSTER_PREFIX": redis_prefix,
    }
    default = tmi(tmp_path, "list", **env)
    assert default.returncode == 0, default.stderr
    assert _supervisor_line(default.stdout, "crashed")[3] == "dead"
    assert "gone" not in default.stdout.split("(")[0]
    assert "(1 record stopped not shown: --all shows them)" in default.stdout
    every = tmi(tmp_path, "list", "--all", **env).stdout
    assert _supervisor_line(every, "gone")[3] == "stopped"
    alive = tmi(tmp_path, "list", "--alive", **env).stdout
    assert "no supervisors" in alive
    assert "(2 records stopped or dead not shown" in alive
    listed = json.loads(tmi(tmp_path, "list", "--json", **env).stdout)
    assert {s["id"] for s in listed["supervisors"]} == {"crashed", "gone"}  # every record
    live = json.loads(tmi(tmp_path, "list", "--json", "--alive", **env).stdout)
    assert live["supervisors"] == []
    assert tmi(tmp_path, "list", "--all", "--alive", **env).returncode == 2


def test_without_the_embedded_server_no_record_is_alive(tmp_path: Path) -> None:
    with Store(f"sqlite:///{tmp_path / 'tmi-cluster.db'}") as store:
        store.migrate()
        store.record_supervisor("host-1", RunState.RUNNING, pid=4242)
    listed = tmi(tmp_path, "list")
    assert listed.returncode == 0, listed.stderr
    assert listed.stderr == ""
    assert _supervisor_line(listed.stdout, "host-1")[3] == "dead"


def test_a_supervisor_replaced_on_its_host_does_not_make_the_cluster_unhealthy() -> None:
    """A forced exit leaves the record saying running; the supervisor started since on the same
    host (a restarted pod) is healthy at once, not a minute later."""
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    old = SupervisorRecord(
        id="old",
        hostname="pod-1",
        pid=7,
        state="running",
        started_at=now - timedelta(hours=1),
        last_seen_at=now - timedelta(seconds=20),
    )
    new = SupervisorRecord(
        id="new",
        hostname="pod-1",
        pid=8,
        state="running",
        started_at=now - timedelta(seconds=5),
        last_seen_at=now,
    )
    workers = [ProcessRecord(id=f"new-{n}", supervisor_id="new", state="running") for n in (1, 2)]
    beat = Beat(SupervisorStatus(at=now.timestamp(), processes=2, target=2), 0.0)
    worker = Beat(ProcessStatus(supervisor="new"), 0.0)
    liveness = Liveness({"new": beat}, {"new-1": worker, "new-2": worker})
    assert health([old, new], workers, liveness, hostname="pod-1") == (
        True,
        "1 supervisor(s) on pod-1 alive with 2 worker processes",
    )
    elsewhere = SupervisorRecord(
        id="other",
        hostname="pod-2",
        pid=9,
        state="running",
        started_at=now - timedelta(hours=1),
        last_seen_at=now - timedelta(seconds=20),
    )
    ok, reason = health([old, new, elsewhere], workers, liveness)
    assert not ok  # a dead supervisor that nobody replaced on its host still counts
    assert reason == "1 supervisor(s) without a heartbeat (dead): other"


def test_a_supervisor_that_stopped_beating_is_unhealthy_before_its_key_expires() -> None:
    now = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
    record = SupervisorRecord(
        id="s1",
        hostname="h",
        pid=1,
        state="running",
        started_at=now - timedelta(minutes=5),
        last_seen_at=now,
    )
    silent = Beat(SupervisorStatus(processes=0, target=2), age_s=12.0)  # killed 12 s ago
    assert health([record], [], Liveness({"s1": silent}, {})) == (
        False,
        "supervisor s1 has not beaten for 12 s (killed or hung?)",
    )
