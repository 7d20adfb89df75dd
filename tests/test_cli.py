"""The command line as users run it: the installed script, in real processes."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import click
import httpx
import psutil
import pytest
import redis

import tmi_cluster
from tmi_cluster.cli import ExitCode, cli
from tmi_cluster.cli.common import START_COLLECTION_THRESHOLD, collect_lazily, long_running
from tmi_cluster.cli.running import simulate
from tmi_cluster.embedded import find_embedded
from tmi_cluster.store import Store

COMMANDS = [
    "authorize",
    "channels",
    "dashboard",
    "dead-letters",
    "demo",
    "features",
    "health",
    "install",
    "join",
    "list",
    "migrate",
    "part",
    "purge",
    "run",
    "scale",
    "send",
    "simulate",
    "tail",
    "terminate",
]
SCRIPT = shutil.which("tmi-cluster", path=str(Path(sys.executable).parent)) or "tmi-cluster"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMI_CLUSTER_")}
    env.update(extra)
    return env


def tmi(cwd: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SCRIPT, *args],
        cwd=cwd,
        env=_env(**env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _redis_servers() -> set[int]:
    return {
        p.pid
        for p in psutil.process_iter(["name"])
        if "redis-server" in (p.info["name"] or "") and p.status() != psutil.STATUS_ZOMBIE
    }


def test_help_lists_every_command(tmp_path: Path) -> None:
    result = tmi(tmp_path, "--help")
    assert result.returncode == 0
    listed = [
        line.split()[0]
        for line in result.stdout.split("Commands:")[1].splitlines()
        if line.startswith("  ") and not line.startswith("   ")
    ]
    assert listed == COMMANDS


def test_version(tmp_path: Path) -> None:
    result = tmi(tmp_path, "--version")
    assert result.returncode == 0
    assert result.stdout.strip() == f"tmi-cluster, version {tmi_cluster.__version__}"
    root = Path(__file__).parent.parent
    project = tomllib.loads((root / "pyproject.toml").read_text())["project"]
    assert project["version"] == tmi_cluster.__version__  # one version, said in both places
    assert f"\n## {tmi_cluster.__version__} " in (root / "CHANGELOG.md").read_text()


def test_install_migrate_features_leave_no_redis_behind(tmp_path: Path) -> None:
    before = _redis_servers()
    result = tmi(tmp_path, "install")
    assert result.returncode == 0, result.stderr
    assert "wrote tmi-cluster.toml" in result.stdout
    assert "to revision 0005" in result.stdout
    assert (tmp_path / "tmi-cluster.db").exists()
    for _ in range(2):
        result = tmi(tmp_path, "migrate")
        assert result.returncode == 0, result.stderr
        assert "is up to date (revision 0005)" in result.stdout
    result = tmi(tmp_path, "features")
    assert result.returncode == 0, result.stderr
    assert f"config file        {tmp_path / 'tmi-cluster.toml'}" in result.stdout
    assert "embedded private server, started by 'tmi-cluster run'" in result.stdout
    result = tmi(tmp_path, "list")
    assert result.returncode == 0
    assert "no supervisors" in result.stdout
    assert _redis_servers() <= before


def test_install_never_overwrites_without_force(tmp_path: Path) -> None:
    (tmp_path / "tmi-cluster.toml").write_text("prefix = 'mine:'\n")
    result = tmi(tmp_path, "install")
    assert result.returncode == 0, result.stderr  # so that "install && run" works every time
    assert (
        "kept the existing tmi-cluster.toml (--force writes a fresh starter file)" in result.stdout
    )
    assert "is up to date" in result.stdout or "to revision 0005" in result.stdout
    assert (tmp_path / "tmi-cluster.toml").read_text() == "prefix = 'mine:'\n"
    assert tmi(tmp_path, "install", "--force").returncode == 0
    assert "# prefix = " in (tmp_path / "tmi-cluster.toml").read_text()


def test_migrate_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    first = tmi(tmp_path, "migrate", TMI_CLUSTER_DATABASE__URL=postgres_url)
    assert first.returncode == 0, first.stderr
    assert "to revision 0005" in first.stdout
    second = tmi(tmp_path, "migrate", TMI_CLUSTER_DATABASE__URL=postgres_url)
    assert "is up to date (revision 0005)" in second.stdout


def test_features_never_show_secrets(tmp_path: Path) -> None:
    secrets = {
        "TMI_CLUSTER_TMI__IDENTITY__USERNAME": "mybot",
        "TMI_CLUSTER_TMI__IDENTITY__PASSWORD": "oauth:s3cr3tt0ken",
        "TMI_CLUSTER_WEB__TOKEN": "webs3cret",
        "TMI_CLUSTER_REDIS__URL": "redis://:redisp4ss@127.0.0.1:6379/0",
        "TMI_CLUSTER_DATABASE__URL": "postgresql://u:dbp4ss@127.0.0.1/test",
    }
    for args in (["features"], ["features", "--json"]):
        result = tmi(tmp_path, *args, **secrets)
        assert result.returncode == 0, result.stderr
        for needle in ("s3cr3tt0ken", "webs3cret", "redisp4ss", "dbp4ss"):
            assert needle not in result.stdout + result.stderr
    text = tmi(tmp_path, "features", **secrets).stdout
    assert "mybot (token set)" in text
    assert "redis://:***@127.0.0.1:6379/0" in text


def test_features_say_what_is_not_available_yet(tmp_path: Path) -> None:
    result = tmi(tmp_path, "features", TMI_CLUSTER_HANDLERS__MODULES='["app.bot:Bot"]')
    assert result.returncode == 0, result.stderr
    lines = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in result.stdout.splitlines())
    assert lines["handlers"] == (
        "app.bot:Bot, loaded in every worker; up to 10000 events wait per channel (drop_oldest "
        "beyond), 8 threads for plain functions"
    )
    assert lines["event stream"] == (
        "on: about 100000 events, 3600 s at most; Shared Chat copies: each"
    )
    assert lines["chat"] == (  # never fake chat by accident: a deployment reads Twitch
        "Twitch, read anonymously: no identity configured (tmi.connection.simulate = never)"
    )
    simulated = tmi(tmp_path, "features", TMI_CLUSTER_TMI__CONNECTION__SIMULATE="always").stdout
    assert "the built-in simulator, run by the supervisor" in simulated
    assert lines["web"] == (
        "'tmi-cluster dashboard' serves them at http://127.0.0.1:8080/tmi-cluster/ (web.enabled: "
        "each supervisor too); credentials: a password made at each start, printed once; "
        "/health public"
    )
    assert lines["memory limit"] == (
        "supervisor 256 MB (then it starts itself again), worker 128 MB (then it is replaced)"
    )
    assert lines["copies"] == "1 of each channel (coordinator.replicas)"
    two = tmi(
        tmp_path,
        "features",
        TMI_CLUSTER_COORDINATOR__REPLICAS="2",
        TMI_CLUSTER_SUPERVISOR__PROCESSES="3",
    ).stdout
    assert "2 of each channel" in two
    assert "this supervisor runs a fixed 3" in two
    assert "not available yet" not in result.stdout
    assert lines["invite screen"] == (
        "off: the dummy channel manager lets the bot into every channel, so there is nothing "
        "to authorize (channel_manager.use = 'dummy'; 'database' turns the invite screen on)"
    )
    database = {"TMI_CLUSTER_CHANNEL_MANAGER__USE": "database"}
    text = tmi(tmp_path, "features", **database).stdout
    assert (
        "not set up: twitch.client_id, twitch.client_secret, twitch.redirect_url, "
        "twitch.grant_key missing" in text
    )
    ready = {
        **database,
        "TMI_CLUSTER_TWITCH__CLIENT_ID": "abc",
        "TMI_CLUSTER_TWITCH__CLIENT_SECRET": "cl13ntsecret",
        "TMI_CLUSTER_TWITCH__REDIRECT_URL": "https://bot.example/tmi-cluster/invite/callback",
        "TMI_CLUSTER_TWITCH__GRANT_KEY": "g" * 40,
    }
    text = tmi(tmp_path, "features", **ready).stdout
    lines = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in text.splitlines())
    assert lines["invite screen"] == (
        "at /tmi-cluster/invite/ (the web pages' server), signing in with Twitch's application "
        "'abc', scopes channel:bot; grants stored encrypted"
    )
    assert "cl13ntsecret" not in text
    assert "g" * 40 not in text
    (tmp_path / "closed_manager.py").write_text(
        "class NoInvite:\n"
        "    invite_screen = False\n"
        + "".join(
            f"    async def {m}(self, channels, **_):\n        return set()\n"
            for m in ("authorize", "revoke", "authorized", "acknowledged", "stale")
        )
    )
    own = {**ready, "PYTHONPATH": str(tmp_path)}
    done = tmi(
        tmp_path,
        "features",
        **{**own, "TMI_CLUSTER_CHANNEL_MANAGER__USE": "closed_manager:NoInvite"},
    )
    lines = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in done.stdout.splitlines())
    assert lines["invite screen"] == (
        "off: the channel manager turns it off (its invite_screen is false)"
    ), done.stderr
    done = tmi(
        tmp_path, "features", **{**own, "TMI_CLUSTER_CHANNEL_MANAGER__USE": "nosuch.module:X"}
    )
    lines = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in done.stdout.splitlines())
    assert (
        lines["invite screen"] == "off: the channel manager does not load (see 'channel manager')"
    )


def test_features_name_a_server_of_ones_own(tmp_path: Path) -> None:
    text = tmi(
        tmp_path,
        "features",
        TMI_CLUSTER_TMI__CONNECTION__SERVER="127.0.0.1",
        TMI_CLUSTER_TMI__CONNECTION__PORT="26667",
        TMI_CLUSTER_TMI__CONNECTION__SIMULATE="never",
    ).stdout
    lines = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in text.splitlines())
    assert lines["chat"] == "the server at 127.0.0.1:26667 (tmi.connection.simulate = never)"


def test_features_show_the_effective_limits(tmp_path: Path) -> None:
    text = tmi(
        tmp_path,
        "features",
        TMI_CLUSTER_THROTTLE__PRESET="verified",
        TMI_CLUSTER_THROTTLE__JOIN__ALLOW="50",
    ).stdout
    assert "preset verified: join 50 / 10 s, login 200 / 10 s, messages 7500 / 30 s" in text


def test_reserved_variables_left_exported_do_not_break_commands(tmp_path: Path) -> None:
    reserved = {
        "TMI_CLUSTER_FUZZ": "nightly",
        "TMI_CLUSTER_PURE_PYTHON": "1",
        "TMI_CLUSTER_TEST_DATABASE_URL": "postgresql://u@h/db",
    }
    result = tmi(tmp_path, "features", **reserved)
    assert result.returncode == 0, result.stderr
    result = tmi(tmp_path, "features", TMI_CLUSTER_FUZ="nightly", **reserved)
    assert result.returncode == ExitCode.CONFIG
    assert result.stderr == (
        "error: environment variable TMI_CLUSTER_FUZ: fuz: unknown key; "
        "did you mean TMI_CLUSTER_FUZZ (not a setting)?\n"
    )


def test_config_error_is_one_line_and_exit_78(tmp_path: Path) -> None:
    (tmp_path / "tmi-cluster.toml").write_text("[process]\nmemory = 'big'\n")
    result = tmi(tmp_path, "features")
    assert result.returncode == ExitCode.CONFIG
    assert result.stderr == (
        f"error: {tmp_path / 'tmi-cluster.toml'}, line 2: process.memory: "
        "expected a valid integer, got 'big'\n"
    )
    result = tmi(tmp_path, "--config", "missing.toml", "features")
    assert result.returncode == ExitCode.CONFIG
    assert "missing.toml: cannot read the configuration file" in result.stderr


@pytest.fixture
def supervisor(tmp_path: Path) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen(
        [SCRIPT, "run"],
        cwd=tmp_path,
        env=_env(
            TMI_CLUSTER_TMI__IDENTITY__PASSWORD="oauth:zzsecret",
            TMI_CLUSTER_TMI__CONNECTION__SIMULATE="always",
            # a worker slow to stop on a loaded machine is killed well within the test's wait
            TMI_CLUSTER_PROCESS__TIMEOUT="15",
        ),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()
    assert " running (Redis: embedded redis://:***@127.0.0.1:" in line, line
    yield process
    if process.poll() is None:
        process.kill()
    process.communicate()


def test_run_starts_embedded_redis_and_stops_it_on_sigterm(
    tmp_path: Path, supervisor: subprocess.Popen[str]
) -> None:
    state = find_embedded(tmp_path / ".tmi-cluster")
    assert state is not None
    client = redis.Redis.from_url(state.url)
    beats = [key for key in client.scan_iter(match="tmi-cluster:supervisor:*:heartbeat")]
    assert len(beats) == 1
    assert 0 < client.pttl(beats[0]) <= 30_000
    client.close()
    listed = tmi(tmp_path, "list")
    assert " running " in listed.stdout
    server = psutil.Process(state.pid)

    supervisor.send_signal(signal.SIGTERM)
    try:
        out, err = supervisor.communicate(timeout=40)
    except subprocess.TimeoutExpired:
        supervisor.kill()
        out, err = supervisor.communicate()
        raise AssertionError(f"not stopped 40 s after SIGTERM:\n{out}\n{err}") from None
    assert supervisor.returncode == 0, err
    assert "stopped" in out
    assert "zzsecret" not in out + err
    server.wait(timeout=10)
    assert find_embedded(tmp_path / ".tmi-cluster") is None
    with Store(f"sqlite:///{tmp_path / 'tmi-cluster.db'}") as store:
        [record] = store.supervisors()
        assert record.state == "stopped"
        own = [h.state for h in store.history(record.id) if h.process_id is None]
        assert own == ["running", "stopped"]


def test_run_killed_leaves_no_redis(tmp_path: Path, supervisor: subprocess.Popen[str]) -> None:
    state = find_embedded(tmp_path / ".tmi-cluster")
    assert state is not None
    server = psutil.Process(state.pid)
    supervisor.kill()
    supervisor.communicate(timeout=30)
    try:
        server.wait(timeout=10)
    except psutil.TimeoutExpired:
        assert server.status() == psutil.STATUS_ZOMBIE
    assert find_embedded(tmp_path / ".tmi-cluster") is None


def test_simulate_serves_chat_until_sigterm(tmp_path: Path) -> None:
    accounts = tmp_path / "accounts.txt"
    accounts.write_text("# login:token[:moderator channels]\nmybot:s3cret:alpha\n")
    process = subprocess.Popen(
        [
            SCRIPT,
            "simulate",
            "--port",
            "0",
            "--channels",
            "alpha,beta",
            "--rate",
            "200",
            "--accounts",
            str(accounts),
            "--tls-port",
            "0",
            "--websocket-port",
            "0",
            "--control-port",
            "0",
            "--eventsub-port",
            "0",
        ],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "(2 channels, 200 messages/s, 1 account)" in line, line
        port = int(line.split("127.0.0.1:")[1].split()[0])
        tls_line = process.stdout.readline()
        assert tls_line.startswith("TLS on 127.0.0.1:"), tls_line
        assert Path(tls_line.split("CA file ")[1].strip()).exists()
        assert process.stdout.readline().startswith("WebSocket on ws://127.0.0.1:")
        control = process.stdout.readline()
        assert control.startswith("control port on http://127.0.0.1:"), control
        eventsub = process.stdout.readline()
        assert eventsub.startswith("EventSub on ws://127.0.0.1:"), eventsub
        assert eventsub.rstrip().endswith("/ws")
        with urllib.request.urlopen(control.split(" on ")[1].strip() + "/state") as response:  # noqa: S310
            assert json.loads(response.read())["channels"] == {"alpha": [], "beta": []}
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(
                b"CAP REQ :twitch.tv/tags twitch.tv/commands\r\n"
                b"PASS oauth:s3cret\r\nNICK mybot\r\nJOIN #alpha\r\n"
            )
            received = b""
            while received.count(b" PRIVMSG #alpha ") < 5:
                chunk = sock.recv(65536)
                assert chunk, received[-500:]
                received += chunk
            assert b":tmi.twitch.tv 001 mybot :" in received
            assert b"badges=moderator/1" in received  # moderator in alpha, from the file
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert "simulator stopped" in out
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_simulate_rejects_bad_input(tmp_path: Path) -> None:
    result = tmi(tmp_path, "simulate", "--channels", "a,b c")
    assert result.returncode == ExitCode.USAGE  # the command line: a usage error, as everywhere
    assert result.stderr.endswith(
        "Error: --channels: invalid channel name 'b c': expected 1 to 25 letters, digits or "
        "underscores\n"
    )
    (tmp_path / "accounts.txt").write_text("ok:token\nbroken\n")
    result = tmi(tmp_path, "simulate", "--accounts", "accounts.txt")
    assert result.returncode == ExitCode.USAGE
    assert "accounts.txt, line 2: expected login:token" in result.stderr


@pytest.mark.parametrize(
    ("args", "shown"),
    [
        (["--port", "-5"], "'--port': expected a port from 0 to 65535 (0: any free), got '-5'"),
        (["--port", "99999"], "'--port': expected a port from 0 to 65535 (0: any free), got "),
        (["--tls-port", "65536"], "'--tls-port': expected a port from 0 to 65535"),
        (["--websocket-port", "x"], "'--websocket-port': expected a port from 0 to 65535"),
        (["--control-port", "-1"], "'--control-port': expected a port from 0 to 65535"),
        (["--rate", "-1"], "'--rate': expected a number of messages per second >= 0, got '-1'"),
        (["--rate", "nan"], "'--rate': expected a number of messages per second >= 0, got 'nan'"),
        (["--rate", "inf"], "'--rate': expected a number of messages per second >= 0, got 'inf'"),
        (["--seed", "1.5"], "'--seed': '1.5' is not a valid integer"),
    ],
)
def test_simulate_rejects_bad_numbers(tmp_path: Path, args: list[str], shown: str) -> None:
    result = tmi(tmp_path, "simulate", *args)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert f"Error: Invalid value for {shown}" in result.stderr
    assert "Traceback" not in result.stderr


def test_simulate_banner_counts_in_the_singular(tmp_path: Path) -> None:
    process = subprocess.Popen(
        [SCRIPT, "simulate", "--port", "0", "--channels", "solo", "--rate", "0"],
        cwd=tmp_path,
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        line = process.stdout.readline()
        assert "(1 channel, 0 messages/s, 0 accounts); press Ctrl-C to stop" in line, line
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=30)
        assert process.returncode == 0, err
        assert "simulator stopped" in out
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()


def test_docs_have_a_section_per_command_listing_its_options() -> None:
    """docs/cli.md: a section per command whose synopsis names each of its options."""
    page = (Path(__file__).parent.parent / "docs" / "cli.md").read_text()
    assert isinstance(cli, click.Group)
    for name, command in cli.commands.items():
        section = page.split(f"\n## {name}\n", 1)
        assert len(section) == 2, f"docs/cli.md has no section for {name}"
        synopsis = section[1].split("```text\n", 1)[1].split("\n", 1)[0]
        assert synopsis.startswith(f"tmi-cluster {name}"), synopsis
        for param in command.params:
            if isinstance(param, click.Option) and param.opts[0] != "--help":
                assert param.opts[0] in synopsis, f"{name}: {param.opts[0]} not in {synopsis!r}"
    assert set(simulate.params) <= set(cli.commands["simulate"].params)


def test_starter_file_is_ignored_by_git() -> None:
    root = Path(__file__).parent.parent
    ignored = (root / ".gitignore").read_text().splitlines()
    assert "tmi-cluster.toml" in ignored
    assert "tmi-cluster.db*" in ignored


@pytest.mark.parametrize(
    ("args", "kept"),
    [
        (["run"], ["run"]),
        (["-c", "x.toml", "run", "--id", "old"], ["-c", "x.toml", "run"]),
        (["run", "--id=old"], ["run"]),
    ],
)
def test_a_restart_drops_the_old_id_option(args: list[str], kept: list[str]) -> None:
    from tmi_cluster.cli.running import without_id  # noqa: PLC0415

    assert without_id(args) == kept


def test_features_say_how_the_cleanup_runs(tmp_path: Path) -> None:
    def cleanup(**env: str) -> str:
        result = tmi(tmp_path, "features", **env)
        assert result.returncode == 0, result.stderr
        lines = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in result.stdout.splitlines())
        return lines["auto cleanup"]

    assert cleanup() == "off"
    on = {"TMI_CLUSTER_CHANNEL_MANAGER__AUTO_CLEANUP__ENABLED": "true"}
    assert "the dummy channel manager has no auto join and part" in cleanup(**on)
    own = {"TMI_CLUSTER_CHANNEL_MANAGER__USE": "no_such_module:Manager"}
    result = tmi(tmp_path, "features", **own)
    assert "no_such_module:Manager - does not load, so the cluster does not start" in result.stdout
    assert cleanup(**on, TMI_CLUSTER_CHANNEL_MANAGER__USE="database") == (
        "every 300 s plus up to 600 s, once for the cluster; parts channels 168 h after their "
        "last acknowledgement, and those no longer authorized"
    )


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["join", "--timeout", "nan", "somechannel"], "'--timeout'"),
        (["join", "--timeout", "inf", "somechannel"], "'--timeout'"),
        (["send", "--timeout", "nan", "somechannel", "hi"], "'--timeout'"),
        (["dead-letters", "--limit", "99999999999999999999999"], "'--limit'"),
        (["tail", "--limit", "99999999999999999999999"], "'--limit'"),
        (["scale", "s1", "99999999999999"], "'N'"),
        (["simulate", "--channels", "0"], "--channels"),
        (["simulate", "--limit", "join_allow=x"], "--limit"),
        (["channels", "--state", "joined", "--state", "bogus"], "'--state'"),
    ],
)
def test_a_bad_number_or_value_is_a_usage_error_naming_the_option(
    tmp_path: Path, args: list[str], named: str
) -> None:
    result = tmi(tmp_path, *args)
    assert result.returncode == ExitCode.USAGE, result.stderr
    assert named in result.stderr
    assert "timeout_s" not in result.stderr
    assert "Traceback" not in result.stderr


def test_demo_runs_a_cluster_from_nothing_and_leaves_nothing(tmp_path: Path) -> None:
    """The README's first command: a cluster on the simulator; Ctrl-C leaves no process, no
    file and no folder behind (the harness of conftest checks the processes)."""
    (tmp_path / "tmi-cluster.toml").write_text('[redis]\nurl = "redis://127.0.0.1:1/0"\n')
    out = tmp_path / "demo.out"
    with out.open("w") as sink:
        process = subprocess.Popen(
            [SCRIPT, "demo", "--channels", "30", "--replicas", "2"],
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(TMI_CLUSTER_TMI__CONNECTION__SIMULATE="never"),  # ignored: the demo's own
        )
        deadline = time.monotonic() + 60
        while "30 of 30 simulated channels joined (each on 2 workers: 60 held)" not in (
            out.read_text()
        ):
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        folder = Path(out.read_text().split("folder: ", 1)[1].split()[0])
        assert folder.is_dir()
        # the dashboard, served behind the password printed with its address
        said = r"dashboard: (\S+)  \(sign in as admin, password (\S+)\)"
        shown = re.search(said, out.read_text())
        assert shown is not None, out.read_text()
        url, password = shown.groups()
        page = httpx.get(url, auth=("admin", password), timeout=10)
        assert page.status_code == 200
        assert "tmi-cluster" in page.text
        assert httpx.get(url, timeout=10).status_code == 401
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert out.read_text().rstrip().endswith("demo stopped; nothing left behind")
    assert "built-in simulator" in out.read_text()
    assert "try in another terminal:" in out.read_text()  # off a terminal too
    assert "ignored: " in out.read_text()  # the variables of the user's own cluster, said
    assert "TMI_CLUSTER_TMI__CONNECTION__SIMULATE" in out.read_text()
    assert not folder.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo.out", "tmi-cluster.toml"]


@pytest.mark.parametrize(
    ("database", "said"),
    [
        ("sqlite:////proc/x.db", "database.url: cannot use the SQLite file /proc/x.db"),
        ("sqlite:////etc/passwd/x.db", "database.url: /etc/passwd is not a folder"),
        ("sqlite:///{tmp}/typo/x.db", "database.url: the folder {tmp}/typo of the SQLite file"),
        ("sqlite:////dev/null", "database.url: /dev/null is not a regular file"),
        ("sqlite:///{tmp}", "database.url: {tmp} is a folder, not a SQLite database file"),
    ],
)
def test_an_unusable_database_path_is_a_configuration_error(
    tmp_path: Path, database: str, said: str
) -> None:
    url = database.format(tmp=tmp_path)
    result = tmi(tmp_path, "migrate", TMI_CLUSTER_DATABASE__URL=url)
    assert result.returncode == ExitCode.CONFIG, result.stderr
    assert result.stderr.startswith("error: " + said.format(tmp=tmp_path)), result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "typo").exists()  # a typo creates no folder and no database
    assert not Path("/dev/null.migrate.lock").exists()
    assert not Path(f"{tmp_path}.migrate.lock").exists()


@pytest.mark.parametrize("folder", ["/etc/passwd/x", "{tmp}/no/such"])
def test_an_unusable_embedded_redis_folder_is_a_configuration_error(
    tmp_path: Path, folder: str
) -> None:
    where = folder.format(tmp=tmp_path)
    result = tmi(
        tmp_path,
        "run",
        TMI_CLUSTER_REDIS__EMBEDDED_DIR=where,
        TMI_CLUSTER_TMI__CONNECTION__SIMULATE="always",
    )
    assert result.returncode == ExitCode.CONFIG, result.stderr
    assert f"error: redis.embedded_dir: cannot use {where} for the private Redis server" in (
        result.stderr
    )
    assert not (tmp_path / "tmi-cluster.db").exists()  # refused before anything was made
    assert "Traceback" not in result.stderr


def test_the_durable_state_is_there_while_the_cluster_is_down(tmp_path: Path) -> None:
    """No supervisor runs (no embedded Redis): join records the channels as wanted (exit 69,
    saying so), channels shows the database's states, marked, with a warning."""
    assert tmi(tmp_path, "install").returncode == 0
    joined = tmi(tmp_path, "join", "alpha", "beta")
    assert joined.returncode == ExitCode.UNAVAILABLE
    assert "the channels are recorded as wanted and joined once it runs" in joined.stderr
    with Store(f"sqlite:///{tmp_path / 'tmi-cluster.db'}") as store:
        assert {c for c, wanted, _ in store.channel_states() if wanted} == {"alpha", "beta"}
    listed = tmi(tmp_path, "channels")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[:2] for line in listed.stdout.splitlines()[1:]] == [
        ["alpha", "wanted?"],
        ["beta", "wanted?"],
    ]
    assert listed.stderr.startswith("warning: no embedded Redis server runs")
    assert "live state unknown" in listed.stderr
    rows = json.loads(tmi(tmp_path, "channels", "--json").stdout)
    assert [(r["channel"], r["state"], r["live"]) for r in rows] == [
        ("alpha", "wanted", False),
        ("beta", "wanted", False),
    ]


def test_a_killed_private_redis_is_started_again_and_the_cluster_goes_on(
    tmp_path: Path, supervisor: subprocess.Popen[str]
) -> None:
    state = find_embedded(tmp_path / ".tmi-cluster")
    assert state is not None
    os.kill(state.pid, signal.SIGKILL)
    deadline = time.monotonic() + 30
    while True:  # started again, on the same port (the clients reconnect by themselves)
        again = find_embedded(tmp_path / ".tmi-cluster")
        if again is not None and again.pid != state.pid and again.alive:
            break
        assert supervisor.poll() is None, supervisor.communicate()
        assert time.monotonic() < deadline, "the private Redis server was not started again"
        time.sleep(0.1)
    assert (again.port, again.url) == (state.port, state.url)
    with contextlib.suppress(psutil.NoSuchProcess):  # no zombie left behind
        assert psutil.Process(state.pid).status() != psutil.STATUS_ZOMBIE
    while (health := tmi(tmp_path, "health")).returncode != 0:  # the heartbeats are back
        assert time.monotonic() < deadline, health.stdout + health.stderr
        time.sleep(0.2)
    assert supervisor.poll() is None


def test_a_second_cluster_on_the_same_database_is_refused(
    tmp_path: Path, supervisor: subprocess.Popen[str]
) -> None:
    (tmp_path / "other").mkdir()
    second = tmi(
        tmp_path,
        "run",
        TMI_CLUSTER_REDIS__EMBEDDED_DIR=str(tmp_path / "other"),
        TMI_CLUSTER_TMI__CONNECTION__SIMULATE="always",
    )
    assert second.returncode == ExitCode.CONFIG, second.stdout + second.stderr
    assert "serves the cluster on the private Redis server in " in second.stderr
    assert "one database serves one cluster" in second.stderr
    assert not list((tmp_path / "other").iterdir())  # no second Redis server was started
    assert supervisor.poll() is None  # the first cluster goes on


def test_tail_says_when_a_time_is_the_reception_not_twitchs() -> None:
    from tmi_cluster.cli.observe import event_line  # noqa: PLC0415
    from tmi_cluster.events import JoinEvent, MessageEvent  # noqa: PLC0415

    stamped = MessageEvent(channel="c", user="u", text="hi", tags={"tmi-sent-ts": "1700000000000"})
    assert "(received)" not in click.unstyle(event_line(stamped))
    unstamped = JoinEvent(channel="c", user="u")
    assert "(received)" in click.unstyle(event_line(unstamped))
    earlier = click.unstyle(event_line(unstamped, "1700000000123-0"))  # its stream entry's time
    assert time.strftime("%H:%M:%S", time.localtime(1700000000.123)) + " (received)" in earlier


def test_a_demo_stopped_while_it_joins_or_by_its_terminal_closing_leaves_nothing(
    tmp_path: Path,
) -> None:
    """1,000 channels still joining when the terminal closes (SIGHUP): it stops within
    seconds all the same (a read that swallowed its cancellation once kept it up)."""
    out = tmp_path / "demo.out"
    with out.open("w") as sink:
        process = subprocess.Popen(
            [SCRIPT, "demo", "--channels", "1000"],
            cwd=tmp_path,
            stdout=sink,
            stderr=subprocess.PIPE,
            text=True,
            env=_env(),
        )
        deadline = time.monotonic() + 60
        while "of 1000 simulated channels joined" not in out.read_text():
            assert process.poll() is None, process.communicate()[1]
            assert time.monotonic() < deadline, out.read_text()
            time.sleep(0.2)
        folder = Path(out.read_text().split("folder: ", 1)[1].split()[0])
        process.send_signal(signal.SIGHUP)
        _, err = process.communicate(timeout=30)
    assert process.returncode == 0, err
    assert not folder.exists()


#: Modules that loading the command group must not import: each command imports what it needs.
NOT_AT_LOAD = ("alembic", "asyncio", "msgspec", "redis", "sqlalchemy", "tmi_cluster.store")
#: Modules that ``health`` and ``list`` (called every few seconds by monitors) must not import:
#: Alembic (only ``migrate``), the PostgreSQL dialect on SQLite, the asyncio cluster client, the
#: admin commands, the simulator.
NOT_FOR_HEALTH = (
    "alembic",
    "sqlalchemy.dialects.postgresql",
    "tmi_cluster.cluster.admin",
    "tmi_cluster.cluster.client",
    "tmi_cluster.simulator",
)
_IMPORTED = """
import json, sys
from tmi_cluster.cli import cli
if sys.argv[1:]:
    try:
        cli.main(sys.argv[1:], prog_name="tmi-cluster")
    except SystemExit:
        pass
print(json.dumps(sorted(sys.modules)))
"""


def _imported(cwd: Path, *args: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _IMPORTED, *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    modules: list[str] = json.loads(done.stdout.splitlines()[-1])
    return modules


def _among(modules: list[str], heavy: tuple[str, ...]) -> list[str]:
    return sorted({h for h in heavy for m in modules if m == h or m.startswith(h + ".")})


def test_loading_the_cli_imports_no_heavy_module(tmp_path: Path) -> None:
    assert _among(_imported(tmp_path), NOT_AT_LOAD) == []


@pytest.mark.parametrize("args", [["health"], ["list", "--json"]])
def test_health_and_list_import_only_what_they_need(tmp_path: Path, args: list[str]) -> None:
    assert tmi(tmp_path, "install").returncode == 0
    modules = _imported(tmp_path, *args)
    assert "tmi_cluster.cluster.listing" in modules  # the command ran
    assert _among(modules, NOT_FOR_HEALTH) == []


def test_send_imports_neither_the_store_nor_the_chat_connection(tmp_path: Path) -> None:
    """A send needs Redis only: no store, channel managers, admin commands or chat links
    (SQLAlchemy itself is loaded: the settings check the database URL with its parser)."""
    assert tmi(tmp_path, "install").returncode == 0
    modules = _imported(tmp_path, "send", "alpha", "hi", "--timeout", "0.1")
    assert "tmi_cluster.cluster.client" in modules  # the command ran
    heavy = ("sqlalchemy.orm", "tmi_cluster.store", "tmi_cluster.chat.connection")
    assert _among(modules, (*heavy, "tmi_cluster.cluster.admin", "tmi_cluster.channels")) == []


def test_a_command_starts_collecting_lazily_and_the_long_ones_as_usual(tmp_path: Path) -> None:
    """A start is mostly imports: the cycle collector runs lazily then (about 60 ms of every
    command's start); the commands that run for long go back to the usual thresholds."""
    script = (
        "import gc, sys\n"
        "from tmi_cluster.cli import main\n"
        "sys.argv = ['tmi-cluster', '--version']\n"
        "try:\n"
        "    main()\n"
        "except SystemExit:\n"
        "    pass\n"
        "print(gc.get_threshold()[0])\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert int(done.stdout.splitlines()[-1]) == START_COLLECTION_THRESHOLD
    long = {n for n, c in cli.commands.items() if getattr(c.callback, "long_running", False)}
    assert long == {"run", "demo", "simulate", "tail", "dashboard"}

    @long_running
    def thresholds() -> tuple[int, int, int]:
        return gc.get_threshold()

    usual = gc.get_threshold()
    try:
        collect_lazily()
        assert thresholds() == usual  # a long-running command: the usual ones from its start
    finally:
        gc.set_threshold(*usual)
