"""Supervisors and their worker processes, as real processes: spawning, kill -9, hangs,
signals, terminate, health, ``list --json``; psutil checks for orphans and zombies.

The supervisors run the built-in simulator (``tmi.connection.simulate = "always"``); what the
workers hold is read from Redis (the ``held`` sets they keep) and their heartbeats.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from tmi_cluster.bus import Keys
from tmi_cluster.store import Failure, Store
from tmi_cluster.supervisor.processes import restart_delay

from .helpers import wait_for
from .test_cli import SCRIPT, _env, tmi
from .test_redis_outage import RedisProcess

TIMEOUT_S = 20.0


class Supervisor:
    """``tmi-cluster run`` in a process of its own, its output in files."""

    def __init__(self, folder: Path, env: dict[str, str], supervisor_id: str, label: str) -> None:
        self.id = supervisor_id
        self.folder = folder
        self.env = env
        self.out = folder / f"{label}.out"
        self.err = folder / f"{label}.err"
        with self.out.open("w") as out, self.err.open("w") as err:
            self.process = subprocess.Popen(
                [SCRIPT, "run", "--id", supervisor_id],
                cwd=folder,
                env=_env(**env),
                stdout=out,
                stderr=err,
            )
        self.pid = self.process.pid

    def ready(self) -> None:
        wait_for(
            lambda: " running (Redis:" in self.out.read_text() or self.process.poll() is not None,
            what=f"{self.id} to run",
        )
        assert self.process.poll() is None, self.err.read_text()

    def workers(self) -> list[psutil.Process]:
        try:
            children = psutil.Process(self.pid).children()
        except psutil.NoSuchProcess:
            return []
        return [c for c in children if "tmi_cluster.worker.process" in " ".join(_cmdline(c))]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _cmdline(process: psutil.Process) -> list[str]:
    try:
        return process.cmdline()
    except psutil.Error:
        return []


@pytest.fixture
def cluster(
    tmp_path: Path, redis_server: str, redis_prefix: str
) -> Iterator[Callable[..., Supervisor]]:
    started: list[Supervisor] = []
    base = {
        "TMI_CLUSTER_REDIS__URL": redis_server,
        "TMI_CLUSTER_PREFIX": redis_prefix,
        "TMI_CLUSTER_DATABASE__URL": f"sqlite:///{tmp_path / 'cluster.db'}",
        "TMI_CLUSTER_TMI__CONNECTION__SIMULATE": "always",
        "TMI_CLUSTER_TMI__CONNECTION__CONNECT_INTERVAL": "0",
        "TMI_CLUSTER_SUPERVISOR__STALE": "2",
        "TMI_CLUSTER_PROCESS__TIMEOUT": "10",
        "TMI_CLUSTER_AUTO_SCALE__COOLDOWN": "0",  # workers spread over supervisors at once
    }

    def start(name: str = "sup-a", ready: bool = True, **extra: str) -> Supervisor:
        label = f"{name}.{len(started) + 1}"
        supervisor = Supervisor(tmp_path, {**base, **extra}, name, label)
        started.append(supervisor)
        if ready:
            supervisor.ready()
        return supervisor

    start.env = base  # type: ignore[attr-defined]
    yield start
    pids = [w.pid for s in started for w in s.workers()]
    for supervisor in started:
        supervisor.stop()
    for pid in pids:
        _gone_within(pid, 10)  # no orphan is left


def _gone_within(pid: int, timeout_s: float) -> None:
    """Process ``pid`` ends within ``timeout_s`` (psutil.TimeoutExpired if not)."""
    try:
        process = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return
    process.wait(timeout_s)
    assert not process.is_running()


def _keys(env: dict[str, str]) -> Keys:
    return Keys(env["TMI_CLUSTER_PREFIX"], 2.0, 3.0)


def _statuses(client: redis.Redis, env: dict[str, str]) -> dict[str, dict[str, Any]]:
    keys = _keys(env)
    names: Any = client.keys(keys.prefix + "process:*:heartbeat")
    result = {}
    for name in names:
        raw: Any = client.get(name)
        if raw:
            process_id = name.decode().removeprefix(keys.prefix + "process:").rsplit(":", 1)[0]
            result[process_id] = json.loads(raw)
    return result


def _held(client: redis.Redis, env: dict[str, str], process_id: str) -> set[str]:
    members: Any = client.smembers(_keys(env).process_held(process_id))
    return {m.decode() for m in members}


def _join(tmp_path: Path, env: dict[str, str], *channels: str) -> dict[str, str]:
    result = tmi(tmp_path, "join", *channels, **env)
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(line.split(": ", 1) for line in result.stdout.splitlines())


@pytest.mark.parametrize(
    ("failures", "delay"), [(0, 0), (1, 0), (2, 1), (3, 2), (4, 4), (7, 32), (8, 60), (50, 60)]
)
def test_restart_delay(failures: int, delay: float) -> None:
    assert restart_delay(failures) == delay


def test_kill_9_of_a_worker_is_replaced_within_2_s_and_its_channels_follow(
    tmp_path: Path, cluster: Callable[..., Supervisor], redis_client: redis.Redis
) -> None:
    supervisor = cluster()
    env = cluster.env  # type: ignore[attr-defined]
    wait_for(lambda: len(_statuses(redis_client, env)) == 2, what="two workers")
    joined = _join(tmp_path, env, "alpha", "beta", "gamma", "delta")
    owners = {c.lstrip("#"): o.split("(")[1].rstrip(")") for c, o in joined.items()}
    victim_id = owners["alpha"]
    victim = next(w for w in supervisor.workers() if f"--id={victim_id}" in _cmdline(w))
    lost = {c for c, o in owners.items() if o == victim_id}
    before = {w.pid for w in supervisor.workers()}
    killed_at = time.monotonic()
    victim.kill()

    def replaced() -> bool:  # a new worker runs, and another one holds the lost channels
        spawned = {w.pid for w in supervisor.workers()} - before
        holders = set().union(*(_held(redis_client, env, p) for p in set(owners.values())))
        return bool(spawned) and lost <= holders

    wait_for(replaced, what="a replacement and the lost channels held again")
    assert time.monotonic() - killed_at < 2.0
    assert len(supervisor.workers()) == 2
    wait_for(
        lambda: any(p not in owners.values() for p in _statuses(redis_client, env)),
        what="the replacement's heartbeat",
    )
    log = supervisor.err.read_text()
    assert f"worker process {victim_id} was killed by SIGKILL; restarting in 0 s" in log


def _ended(process: psutil.Process) -> bool:
    """Gone, or a zombie its parent has not reaped yet (it may be reaped while we look)."""
    try:
        return not process.is_running() or process.status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_hung_worker_is_killed_when_its_heartbeat_lapses(
    cluster: Callable[..., Supervisor], redis_client: redis.Redis
) -> None:
    supervisor = cluster()
    env = cluster.env  # type: ignore[attr-defined]
    wait_for(lambda: len(_statuses(redis_client, env)) == 2, what="two workers")
    [hung, other] = supervisor.workers()
    hung.suspend()  # SIGSTOP: alive, but its heartbeat stops
    stopped_at = time.monotonic()
    wait_for(lambda: _ended(hung), what="the hung worker killed")
    # process.stale (3 s) after its last beat (at most 1 s before the stop), one check (0.5 s),
    # and a margin for a loaded machine
    assert time.monotonic() - stopped_at < 3.0 + 0.5 + 1.0
    wait_for(lambda: len(supervisor.workers()) == 2, what="its replacement")
    assert other.is_running()
    assert "no heartbeat for 3 s; killing it" in supervisor.err.read_text()


def test_kill_9_of_a_supervisor_leaves_no_orphans_and_is_listed_dead(
    tmp_path: Path, cluster: Callable[..., Supervisor], redis_client: redis.Redis
) -> None:
    first = cluster("sup-a")
    second = cluster("sup-b")
    env = cluster.env  # type: ignore[attr-defined]
    # auto_scale.processes.min (2) is the cluster's: one worker on each supervisor
    wait_for(lambda: len(first.workers()) == len(second.workers()) == 1, what="one each")
    orphans = first.workers()
    first.process.kill()
    first.process.wait()
    killed_at = time.monotonic()
    for worker in orphans:
        _gone_within(worker.pid, 5)  # they see their supervisor gone and stop
    assert time.monotonic() - killed_at < 5.0

    def listed() -> dict[str, Any] | None:
        shown = json.loads(tmi(tmp_path, "list", "--json", **env).stdout)
        states = {s["id"]: s["state"] for s in shown["supervisors"]}
        return shown if states.get("sup-a") == "dead" else None

    shown = wait_for(listed, what="sup-a listed dead")
    states = {s["id"]: s["state"] for s in shown["supervisors"]}
    assert states["sup-b"] == "running"
    wait_for(lambda: len(second.workers()) == 2, what="the cluster's minimum back on sup-b")


def test_terminate_stops_everything_within_the_deadline(
    tmp_path: Path, cluster: Callable[..., Supervisor], redis_client: redis.Redis
) -> None:
    four = {"TMI_CLUSTER_AUTO_SCALE__PROCESSES__MIN": "4"}  # the cluster's, spread over both
    supervisors = [cluster("sup-a", **four), cluster("sup-b", **four)]
    env = cluster.env  # type: ignore[attr-defined]
    wait_for(lambda: all(len(s.workers()) == 2 for s in supervisors), what="four workers")
    workers = [w for s in supervisors for w in s.workers()]
    _join(tmp_path, env, "alpha", "beta", "gamma")
    unknown = tmi(tmp_path, "terminate", "nobody", **env)
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error: no live supervisor 'nobody' (see 'tmi-cluster list'")
    began = time.monotonic()
    one = tmi(tmp_path, "terminate", "sup-a", **env)
    assert (one.returncode, one.stdout) == (0, "sup-a: stopped\n"), one.stderr
    assert supervisors[0].process.wait(5) == 0
    assert supervisors[1].process.poll() is None
    # sup-a's channels went to sup-b's workers before sup-a's workers parted them
    held = set().union(*(_held(redis_client, env, p) for p in _statuses(redis_client, env)))
    assert held == {"alpha", "beta", "gamma"}
    everyone = tmi(tmp_path, "terminate", **env)
    assert (everyone.returncode, everyone.stdout) == (0, "sup-b: stopped\n"), everyone.stderr
    assert supervisors[1].process.wait(5) == 0
    assert time.monotonic() - began < 10.0 + 15.0
    for worker in workers:
        assert not psutil.pid_exists(worker.pid)  # reaped by its supervisor: no zombie


def test_sigusr1_replaces_the_workers_and_sigusr2_pauses_them(
    tmp_path: Path, cluster: Callable[..., Supervisor], redis_client: redis.Redis
) -> None:
    supervisor = cluster()
    env = cluster.env  # type: ignore[attr-defined]
    wait_for(lambda: len(_statuses(redis_client, env)) == 2, what="two workers")
    _join(tmp_path, env, "alpha", "beta")
    before = {w.pid for w in supervisor.workers()}
    supervisor.process.send_signal(signal.SIGUSR1)

    def rolled() -> bool:
        now = {w.pid for w in supervisor.workers()}
        statuses = _statuses(redis_client, env)
        held = set().union(*(_held(redis_client, env, p) for p in statuses))
        return len(now) == 2 and not now & before and held == {"alpha", "beta"}

    wait_for(rolled, what="two new workers holding both channels")
    supervisor.process.send_signal(signal.SIGUSR2)
    wait_for(
        lambda: {s["state"] for s in _statuses(redis_client, env).values()} == {"paused"},
        what="paused workers",
    )
    shown = tmi(tmp_path, "list", **env).stdout
    assert " paused " in shown
    supervisor.process.send_signal(signal.SIGCONT)
    wait_for(
        lambda: {s["state"] for s in _statuses(redis_client, env).values()} == {"running"},
        what="running workers",
    )


def test_health_in_each_state(tmp_path: Path, cluster: Callable[..., Supervisor]) -> None:
    env = cluster.env  # type: ignore[attr-defined]
    assert tmi(tmp_path, "migrate", **env).returncode == 0
    nobody = tmi(tmp_path, "health", **env)
    assert (nobody.returncode, nobody.stdout) == (0, "healthy: no supervisor is expected to run\n")
    assert tmi(tmp_path, "health", "--at-least-one", **env).returncode == 1
    supervisor = cluster()
    host = socket.gethostname()

    def healthy() -> subprocess.CompletedProcess[str] | None:
        result = tmi(tmp_path, "health", "--at-least-one", **env)
        return result if result.returncode == 0 else None

    assert wait_for(healthy).stdout.startswith("healthy: 1 supervisor(s) alive with 2 worker")
    prefix = host[:-1] or "x"
    other = tmi(tmp_path, "health", "--hostname", prefix, **env)
    assert other.returncode == 1  # an exact host match: a prefix of the name is another host
    assert (
        other.stdout
        == f"unhealthy: no supervisor has ever run on host {prefix!r} (check the name)\n"
    )
    both = tmi(tmp_path, "health", "--host-only", "--hostname", host, **env)
    assert both.returncode == 2
    assert tmi(tmp_path, "health", "--host-only", **env).returncode == 0
    supervisor.process.kill()
    supervisor.process.wait()

    def dead() -> subprocess.CompletedProcess[str] | None:
        result = tmi(tmp_path, "health", **env)
        return result if "dead" in result.stdout else None

    found = wait_for(dead)
    assert found.returncode == 1
    assert found.stdout == "unhealthy: 1 supervisor(s) without a heartbeat (dead): sup-a\n"


def test_a_worker_that_cannot_start_is_reported_and_retried(
    tmp_path: Path, cluster: Callable[..., Supervisor]
) -> None:
    env = cluster.env  # type: ignore[attr-defined]
    supervisor = cluster(TMI_CLUSTER_HANDLERS__MODULES='["no_such_module_here"]')
    wait_for(lambda: "could not start" in supervisor.err.read_text(), what="the launch failure")

    def explained() -> subprocess.CompletedProcess[str] | None:
        result = tmi(tmp_path, "health", **env)
        return result if "cannot start" in result.stdout else None

    health = wait_for(explained)
    assert health.returncode == 1
    assert health.stdout.startswith("unhealthy: supervisor sup-a runs 0 of 2 worker processes: ")
    assert "'no_such_module_here' does not import: ModuleNotFoundError" in health.stdout
    shown = json.loads(tmi(tmp_path, "list", "--json", **env).stdout)
    [record] = shown["supervisors"]
    assert "no_such_module_here" in record["problem"]
    joined = tmi(tmp_path, "join", "alpha", **cluster.env)  # type: ignore[attr-defined]
    assert joined.returncode == 69  # says why no worker runs, not to start the cluster
    assert "the workers cannot start; sup-a: " in joined.stderr
    assert "'no_such_module_here' does not import" in joined.stderr

    assert supervisor.process.poll() is None  # the supervisor stays up and says why
    log = supervisor.err.read_text()
    assert "trying again in 1 s" in log  # slower each time


def test_a_channel_manager_that_does_not_load_keeps_the_cluster_from_starting(
    tmp_path: Path, cluster: Callable[..., Supervisor]
) -> None:
    supervisor = cluster(TMI_CLUSTER_CHANNEL_MANAGER__USE="no_such_managers:Manager", ready=False)
    assert supervisor.process.wait(timeout=30) == 78  # EX_CONFIG, before any worker
    log = supervisor.err.read_text()
    assert "channel_manager.use: 'no_such_managers:Manager' does not import" in log


def test_list_json_has_the_contract_keys(
    tmp_path: Path, cluster: Callable[..., Supervisor], redis_client: redis.Redis
) -> None:
    env = cluster.env  # type: ignore[attr-defined]
    cluster()
    wait_for(lambda: len(_statuses(redis_client, env)) == 2, what="two workers")
    _join(tmp_path, env, "alpha")

    def listed() -> Any:  # the channel counts come with the workers' next heartbeat
        shown = json.loads(tmi(tmp_path, "list", "--json", **env).stdout)
        return shown if sum(p["channels"] for p in shown["processes"]) == 1 else None

    shown = wait_for(listed, what="the joined channel in list --json")
    [supervisor] = shown["supervisors"]
    assert {"id", "host", "pid", "state", "last_heartbeat", "processes"} <= supervisor.keys()
    assert (supervisor["id"], supervisor["state"], supervisor["processes"]) == (
        "sup-a",
        "running",
        2,
    )
    assert len(shown["processes"]) == 2
    for process in shown["processes"]:
        assert {
            "id",
            "supervisor",
            "pid",
            "state",
            "channels",
            "connections",
            "memory_bytes",
            "messages_per_s",
            "last_heartbeat",
            "exit_code",
            "problem",
        } <= process.keys()
        assert process["supervisor"] == "sup-a"
        assert process["problem"] is None
        assert process["memory_bytes"] > 10_000_000
        assert "T" in process["last_heartbeat"]  # ISO 8601
    assert sum(p["channels"] for p in shown["processes"]) == 1
    assert supervisor["chat"] == "simulator"  # never fake chat unsaid
    table = tmi(tmp_path, "list", **env).stdout
    assert "simulated chat, not Twitch: sup-a reads the built-in simulator" in table


def test_a_second_supervisor_with_a_live_id_is_refused(
    tmp_path: Path, cluster: Callable[..., Supervisor]
) -> None:
    cluster("sup-a")
    clash = cluster("sup-a", ready=False)
    assert clash.process.wait(30) == 1
    assert (
        clash.err.read_text()
        .strip()
        .endswith(
            "error: a live supervisor already has the id 'sup-a': choose another --id, or stop "
            "that one first ('tmi-cluster terminate sup-a')"
        )
    )


def test_a_redis_restart_under_a_running_cluster_changes_nothing(
    tmp_path: Path, cluster: Callable[..., Supervisor], redis_prefix: str
) -> None:
    own = RedisProcess(tmp_path)
    own.start()
    try:
        env = {**cluster.env, "TMI_CLUSTER_REDIS__URL": own.url}  # type: ignore[attr-defined]
        supervisor = cluster(TMI_CLUSTER_REDIS__URL=own.url)
        client = redis.Redis.from_url(own.url)
        wait_for(lambda: len(_statuses(client, env)) == 2, what="two workers")
        before = {w.pid for w in supervisor.workers()}
        own.kill()
        wait_for(lambda: "cannot reach Redis" in supervisor.err.read_text(), what="the outage")
        own.start()  # empty: every key is gone
        wait_for(lambda: len(_statuses(client, env)) == 2, what="the heartbeats again")
        assert _join(tmp_path, env, "alpha")["#alpha"].startswith("joined (")
        assert {w.pid for w in supervisor.workers()} == before  # no worker was killed
        assert supervisor.process.poll() is None
        client.close()
    finally:
        own.kill()


def test_the_channels_of_a_dead_supervisor_go_to_the_live_ones_and_purge_forgets_it(
    tmp_path: Path, cluster: Callable[..., Supervisor], redis_client: redis.Redis
) -> None:
    four = {"TMI_CLUSTER_AUTO_SCALE__PROCESSES__MIN": "4"}  # the cluster's, spread over both
    first, second = cluster("sup-a", **four), cluster("sup-b", **four)
    env = cluster.env  # type: ignore[attr-defined]
    wait_for(lambda: len(first.workers()) == len(second.workers()) == 2, what="two each")
    channels = {"alpha", "beta", "gamma", "delta", "epsilon", "zeta"}
    _join(tmp_path, env, *sorted(channels))
    first.process.kill()
    first.process.wait()

    def moved() -> bool:  # purged by sup-b by itself, once the dead are known
        statuses = _statuses(redis_client, env)
        held = set().union(*(_held(redis_client, env, p) for p in statuses))
        return held == channels and all(s["supervisor"] == "sup-b" for s in statuses.values())

    wait_for(moved, timeout_s=30, what="sup-a's channels held by sup-b's workers")
    wait_for(
        lambda: "purged the dead: supervisors ['sup-a']" in second.err.read_text(),
        timeout_s=30,
        what="sup-b to purge sup-a by itself",
    )
    purged = tmi(tmp_path, "purge", **env)
    assert purged.returncode == 0, purged.stderr
    assert purged.stdout.startswith("dead: ")
    shown = json.loads(tmi(tmp_path, "list", "--json", **env).stdout)
    assert [s["id"] for s in shown["supervisors"]] == ["sup-b"]
    assert {p["supervisor"] for p in shown["processes"]} == {"sup-b"}
    assert second.process.poll() is None


def test_join_and_part_refuse_bad_input_and_need_a_worker(
    tmp_path: Path, cluster: Callable[..., Supervisor], redis_client: redis.Redis
) -> None:
    env = cluster.env  # type: ignore[attr-defined]
    assert tmi(tmp_path, "migrate", **env).returncode == 0
    nobody = tmi(tmp_path, "join", "alpha", **env)
    assert (nobody.returncode, nobody.stderr) == (
        69,
        "error: no live worker process to join channels: they are recorded as wanted and "
        "joined once one runs ('tmi-cluster run' starts a supervisor with its workers)\n",
    )
    cluster()
    wait_for(lambda: len(_statuses(redis_client, env)) == 2, what="two workers")
    bad = tmi(tmp_path, "join", "alpha", "not a channel", **env)
    assert bad.returncode == 2  # a usage error
    assert bad.stderr == (
        "error: invalid channel name 'not a channel': expected 1 to 25 letters, digits or "
        "underscores\n"
    )
    # alpha, recorded as wanted while no worker ran, is joined without being asked again
    wait_for(
        lambda: any("alpha" in _held(redis_client, env, p) for p in _statuses(redis_client, env)),
        what="alpha joined by itself",
    )
    first = _join(tmp_path, env, "#Alpha")["#alpha"]
    assert first.startswith("joined (")
    assert first.endswith(", already)")
    parted = tmi(tmp_path, "part", "alpha", "beta", **env)
    assert parted.returncode == 0
    assert parted.stdout.splitlines()[1] == "#beta: was not joined"
    wait_for(
        lambda: not any(_held(redis_client, env, p) for p in _statuses(redis_client, env)),
        what="alpha parted",
    )


def test_channels_shows_each_channel_state(
    tmp_path: Path, cluster: Callable[..., Supervisor], redis_client: redis.Redis
) -> None:
    env = cluster.env  # type: ignore[attr-defined]
    cluster()
    wait_for(lambda: len(_statuses(redis_client, env)) == 2, what="two workers")
    _join(tmp_path, env, "alpha", "beta")
    assert tmi(tmp_path, "part", "beta", **env).returncode == 0
    # zeta is wanted and the coordinator gave it up after a ban (as it records one)
    with Store(env["TMI_CLUSTER_DATABASE__URL"]) as store:
        store.want(["zeta"])
        store.record_failures([Failure("zeta", "msg_banned", 1, None, True, None)])

    def shown() -> dict[str, dict[str, Any]] | None:
        listed = tmi(tmp_path, "channels", "--json", **env)
        assert listed.returncode == 0, listed.stderr
        rows = {row["channel"]: row for row in json.loads(listed.stdout)}
        return rows if rows["alpha"]["state"] == "joined" else None

    rows = wait_for(shown, what="alpha joined")
    assert set(rows) == {"alpha", "beta", "zeta"}
    assert {"channel", "state", "process", "since", "failure"} <= rows["alpha"].keys()
    assert rows["alpha"]["process"] is not None
    assert (rows["beta"]["state"], rows["beta"]["process"]) == ("parted", None)
    assert (rows["zeta"]["state"], rows["zeta"]["failure"]) == ("failed", "msg_banned")
    assert (rows["zeta"]["given_up"], rows["zeta"]["process"]) == (True, None)  # not retried
    only = json.loads(tmi(tmp_path, "channels", "--json", "--state", "parted", **env).stdout)
    assert [row["channel"] for row in only] == ["beta"]
    both = tmi(tmp_path, "channels", "--json", "--state", "parted", "--state", "failed", **env)
    assert sorted(row["channel"] for row in json.loads(both.stdout)) == ["beta", "zeta"]  # any
    zeta = tmi(tmp_path, "channels", "zeta", **env).stdout.splitlines()[1]
    assert zeta.endswith("msg_banned, given up: join it again to retry")
    table = tmi(tmp_path, "channels", "alpha", **env).stdout.splitlines()
    assert table[0].split() == ["channel", "state", "process", "route", "since", "last", "failure"]
    assert table[1].split()[:2] == ["alpha", "joined"]
    assert table[1].split()[3] == "irc"
    assert len(table) == 2, table  # IRC for one reason everywhere: nothing more said
    assert rows["alpha"]["route"] == "irc"
    assert rows["alpha"]["route_reason"], rows["alpha"]
    assert rows["beta"]["route_reason"].startswith("not read (parted); once joined: ")
    bad = tmi(tmp_path, "channels", "--state", "nonsense", **env)
    assert bad.returncode == 2


def test_scale_by_hand_pause_and_show(
    tmp_path: Path, cluster: Callable[..., Supervisor], redis_client: redis.Redis
) -> None:
    supervisor = cluster()
    env = cluster.env  # type: ignore[attr-defined]
    wait_for(lambda: len(supervisor.workers()) == 2, what="two workers")
    paused = tmi(tmp_path, "scale", "--pause", **env)
    assert (paused.returncode, paused.stdout) == (0, "auto-scaling paused\n"), paused.stderr
    manual = tmi(tmp_path, "scale", "sup-a", "3", **env)
    assert (manual.returncode, manual.stdout) == (0, "sup-a: 2 -> 3 worker processes\n")
    wait_for(lambda: len(supervisor.workers()) == 3, what="a third worker")
    shown = tmi(tmp_path, "scale", **env).stdout.splitlines()
    assert shown == ["auto-scaling paused; 3 worker processes (last change: manual)", "sup-a: 3"]
    assert "supervisor sup-a: 2 worker processes -> 3 (manual)" in supervisor.err.read_text()
    over = tmi(tmp_path, "scale", "sup-a", "30", **env)
    assert over.returncode == 1
    assert "outside auto_scale.processes.min..max (2..25)" in over.stderr
    both = tmi(tmp_path, "scale", "--pause", "--resume", **env)
    assert (both.returncode, both.stderr.splitlines()[-1]) == (
        2,
        "Error: give --pause or --resume, not both",
    )
    unknown = tmi(tmp_path, "scale", "nobody", "2", **env)
    assert unknown.returncode == 1
    assert unknown.stderr.startswith("error: no live supervisor 'nobody'")
    assert tmi(tmp_path, "scale", "sup-a", **env).returncode == 2  # no number
    assert tmi(tmp_path, "scale", "sup-a", "-1", **env).returncode == 2
    fewer = tmi(tmp_path, "scale", "sup-a", "2", **env)
    assert fewer.returncode == 0, fewer.stderr
    wait_for(lambda: len(supervisor.workers()) == 2, what="one drained and stopped")
    resumed = tmi(tmp_path, "scale", "--resume", **env)
    assert resumed.stdout == "auto-scaling goes on\n"


def test_supervisors_stopping_together_do_not_wait_for_each_other(
    tmp_path: Path, cluster: Callable[..., Supervisor], redis_client: redis.Redis
) -> None:
    slow = {"TMI_CLUSTER_PROCESS__TIMEOUT": "40"}  # what a pointless hand-over would wait
    first, second = cluster("sup-a", **slow), cluster("sup-b", **slow)
    env = {**cluster.env, **slow}  # type: ignore[attr-defined]
    wait_for(lambda: len(first.workers()) == len(second.workers()) == 1, what="one each")
    _join(tmp_path, env, "alpha", "beta")
    began = time.monotonic()
    stopped = tmi(tmp_path, "terminate", **env)
    assert (stopped.returncode, stopped.stdout) == (0, "sup-a: stopped\nsup-b: stopped\n")
    assert time.monotonic() - began < 20.0  # no supervisor waited 40 s for the other one
    assert first.process.wait(5) == second.process.wait(5) == 0
    assert "not handed over" not in first.err.read_text() + second.err.read_text()


def test_on_the_embedded_simulator_sending_works_too(
    tmp_path: Path, cluster: Callable[..., Supervisor]
) -> None:
    supervisor = cluster(TMI_CLUSTER_AUTO_SCALE__PROCESSES__MIN="1")
    assert "sending as tmibot" in supervisor.out.read_text()
    env = cluster.env  # type: ignore[attr-defined]
    wait_for(
        lambda: any(
            s.get("sends")
            for s in _statuses(redis.Redis.from_url(env["TMI_CLUSTER_REDIS__URL"]), env).values()
        ),
        what="a worker that can send",
    )
    result = tmi(tmp_path, "send", "#somechannel", "hello from the docs", **env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "#somechannel: written (1 part, by sup-a-" in result.stdout


def test_the_database_manager_refuses_joins_it_does_not_authorize_and_a_revoke_parts(
    tmp_path: Path, cluster: Callable[..., Supervisor], redis_client: redis.Redis
) -> None:
    database = {"TMI_CLUSTER_CHANNEL_MANAGER__USE": "database"}
    cluster(TMI_CLUSTER_AUTO_SCALE__PROCESSES__MIN="1", **database)
    env = {**cluster.env, **database}  # type: ignore[attr-defined]
    refused = tmi(tmp_path, "join", "alpha", **env)
    assert refused.returncode == 1
    assert refused.stdout.startswith("#alpha: unauthorized: not authorized by the channel manager")
    listed = tmi(tmp_path, "channels", "--state", "unauthorized", "--json", **env)
    assert [c["channel"] for c in json.loads(listed.stdout)] == ["alpha"], listed.stderr
    granted = tmi(tmp_path, "authorize", "#Alpha", "beta", "--reconnect", **env)
    assert granted.returncode == 0, granted.stderr
    assert granted.stdout.splitlines() == [
        "#alpha: authorized",
        "#beta: authorized",
        "2 channels changed, 0 unchanged",
    ]
    assert _join(tmp_path, env, "alpha")["#alpha"].startswith("joined")
    both = tmi(tmp_path, "join", "--authorize", "gamma", **env)
    assert both.returncode == 0, both.stdout + both.stderr
    assert both.stdout.splitlines()[0] == "#gamma: authorized"
    assert both.stdout.splitlines()[1].startswith("#gamma: joined")

    def holders(channel: str) -> list[str]:
        return [p for p in _statuses(redis_client, env) if channel in _held(redis_client, env, p)]

    assert holders("alpha")
    started = time.monotonic()
    revoked = tmi(tmp_path, "authorize", "alpha", "--revoke", **env)
    assert revoked.stdout.splitlines()[0] == "#alpha: revoked"
    wait_for(lambda: not holders("alpha"), timeout_s=10, what="alpha parted after its revoke")
    print(f"\nrevoke to part: {time.monotonic() - started:.2f} s")
    states = json.loads(tmi(tmp_path, "channels", "--json", **env).stdout)
    assert {c["channel"]: c["state"] for c in states} == {
        "alpha": "unauthorized",
        "beta": "parted",
        "gamma": "joined",
    }
    assert holders("gamma")  # the others stay
    bad = tmi(tmp_path, "authorize", "alpha", "--revoke", "--reconnect", **env)
    assert bad.returncode == 2


RECORDER = """
import os
import pathlib

import tmi_cluster
from tmi_cluster.events import ClusterEvent

OUT = pathlib.Path(os.environ["EVENTS_OUT"])


@tmi_cluster.on(ClusterEvent)
def record(event: ClusterEvent) -> None:
    with OUT.open("a") as out:
        out.write(f"{os.getpid()} {type(event).__name__} {event.process}\\n")
"""


def test_the_cluster_events_reach_the_handlers_where_they_happen_and_the_stream(
    tmp_path: Path, cluster: Callable[..., Supervisor]
) -> None:
    (tmp_path / "recorder.py").write_text(RECORDER)
    out = tmp_path / "events.txt"
    extra = {
        "PYTHONPATH": str(tmp_path),
        "TMI_CLUSTER_HANDLERS__MODULES": "recorder",
        "EVENTS_OUT": str(out),
        "TMI_CLUSTER_PROCESS__PERIODIC_TIMER": "0.5",
    }
    supervisor = cluster("sup-a", **extra)
    env = {**cluster.env, **extra}  # type: ignore[attr-defined]

    def seen() -> dict[str, set[str]]:  # event type -> the pids where it was handled
        found: dict[str, set[str]] = {}
        for line in out.read_text().splitlines() if out.exists() else []:
            pid, kind = line.split(" ")[:2]
            found.setdefault(kind, set()).add(pid)
        return found

    wanted = {"ProcessScaled", "SupervisorLooped", "ClusterClientRegistered", "PeriodicTimerCalled"}
    events = wait_for(
        lambda: wanted <= seen().keys() and seen(),
        timeout_s=30,
        what="the cluster's events in the handlers",
    )
    here = str(supervisor.pid)
    assert events["ProcessScaled"] == events["SupervisorLooped"] == {here}  # the supervisor's
    workers = {str(w.pid) for w in supervisor.workers()}
    assert events["ClusterClientRegistered"] <= workers  # the workers' own
    assert events["PeriodicTimerCalled"] <= workers
    streamed = tmi(
        tmp_path, "tail", "--since", "0", "--type", "ProcessScaled", "--limit", "1", "--json", **env
    )
    assert streamed.returncode == 0, streamed.stderr
    scaled = json.loads(streamed.stdout.splitlines()[0])
    assert (scaled["type"], scaled["supervisor"], scaled["after"]) == ("ProcessScaled", "sup-a", 2)
    local = tmi(tmp_path, "tail", "--type", "PeriodicTimerCalled", **env)
    assert local.returncode == 2  # never streamed: a usage error saying so
    assert "never published to the event stream" in local.stderr
    supervisor.stop()
    assert "ClusterClientTerminated" in seen()


def test_an_unreachable_chat_server_is_reported_everywhere(
    tmp_path: Path, cluster: Callable[..., Supervisor]
) -> None:
    with socket.socket() as closed:  # bound, never listening: connections are refused
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
        extra = {
            "TMI_CLUSTER_TMI__CONNECTION__SIMULATE": "never",
            "TMI_CLUSTER_TMI__CONNECTION__SERVER": "127.0.0.1",
            "TMI_CLUSTER_TMI__CONNECTION__PORT": str(port),
            "TMI_CLUSTER_TMI__CONNECTION__SECURE": "false",
        }
        supervisor = cluster("sup-a", **extra)
        env = {**cluster.env, **extra}  # type: ignore[attr-defined]
        wait_for(lambda: len(supervisor.workers()) == 2, what="two workers")
        joined = tmi(tmp_path, "join", "--timeout", "20", "alpha", **env)
        assert joined.returncode == 1
        assert joined.stdout == "#alpha: unreachable\n"  # at once, not after the timeout
        problem = f"cannot reach the chat server 127.0.0.1:{port}: the connection was refused"

        def unhealthy() -> subprocess.CompletedProcess[str] | None:
            answer = tmi(tmp_path, "health", **env)
            return answer if answer.returncode == 1 else None

        # within a heartbeat (the join's report may come first)
        health = wait_for(unhealthy, timeout_s=10, what="health exit 1")
        assert problem in health.stdout + health.stderr
        listed = json.loads(tmi(tmp_path, "list", "--json", **env).stdout)
        assert any((p["problem"] or "").startswith(problem) for p in listed["processes"])
        rows = json.loads(tmi(tmp_path, "channels", "--json", "alpha", **env).stdout)
        assert (rows[0]["state"], rows[0]["failure"]) == ("failed", "unreachable")
        log = supervisor.err.read_text()
        assert log.count(problem) == 1  # logged once, with the reason, not at every retry
