"""Several bot accounts in one cluster (``tmi.identities``): the settings, each channel's
sender (named by a send, chosen by the channel manager, listed in the settings, else the first
account), each account's own budgets, and the CLI that shows and sets them. Real Redis, SQLite
and the simulator."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import redis.asyncio

from tmi_cluster.bus import Keys
from tmi_cluster.bus.commands import SendClient, SendCommand
from tmi_cluster.channels import DatabaseChannelManager, load_manager
from tmi_cluster.cluster.client import Cluster
from tmi_cluster.config import Settings
from tmi_cluster.config.loader import settings_json
from tmi_cluster.errors import ConfigError
from tmi_cluster.logs import RedactingFilter, secrets_of
from tmi_cluster.outcomes import SendRefusal, SendResult, SendStatus
from tmi_cluster.simulator import ChatSimulator
from tmi_cluster.simulator.limits import Limits
from tmi_cluster.store import Store
from tmi_cluster.worker.worker import Worker

from .helpers import run
from .test_cli import tmi

ROOMS = [f"room{i}" for i in range(5)]
ACCOUNTS = """
[tmi.identity]
username = "mybot"
password = "oauth:firstsecret"
[[tmi.identities]]
username = "Second"
password = "oauth:secondsecret"
channels = ["#Room1"]
[[tmi.identities]]
username = "third"
password = "thirdsecret"
"""


def test_the_settings_of_several_accounts(make_settings: Callable[..., Settings]) -> None:
    settings = make_settings(ACCOUNTS)
    assert [a.username for a in settings.tmi.accounts] == ["mybot", "second", "third"]
    assert settings.tmi.sender_of("room1") == "second"
    assert settings.tmi.sender_of("room0") == "mybot"
    shown = settings_json(settings)
    assert "secret" not in shown.replace("client_secret", "")
    assert json.loads(shown)["tmi"]["identities"][0]["password"] == "***"
    assert {"secondsecret", "thirdsecret"} <= set(secrets_of(settings))
    redact = RedactingFilter(secrets_of(settings))
    record = logging.LogRecord("t", logging.INFO, __file__, 1, "token thirdsecret", None, None)
    redact.filter(record)
    assert "thirdsecret" not in record.getMessage()
    bad = {
        '[[tmi.identities]]\nusername = "two"\npassword = "oauth:abcdefgh"\n': (
            "set tmi.identity (the first) too"
        ),
        ACCOUNTS + '[[tmi.identities]]\nusername = "MYBOT"\npassword = "x1234567"\n': (
            "'mybot' is configured twice"
        ),
        ACCOUNTS + '[[tmi.identities]]\nusername = "four"\npassword = "x1234567"\n'
        'channels = ["room1"]\n': "#room1 is listed by both 'second' and 'four'",
        ACCOUNTS + '[[tmi.identities]]\nusername = "four"\n': "password",
        ACCOUNTS + '[[tmi.identities]]\nusername = "four"\npassword = "hunter22secret"\n'
        'channels = ["no way"]\n': "expected Twitch logins",
    }
    for toml, expected in bad.items():
        with pytest.raises(ConfigError) as caught:
            make_settings(toml)
        assert expected in str(caught.value)
        assert "hunter22secret" not in str(caught.value)  # a password is never shown


def _results(found: list[SendResult]) -> dict[str, SendResult]:
    return {result.id: result for result in found}


@run
async def test_each_channel_is_sent_to_by_its_account_within_that_accounts_budget(
    make_settings: Callable[..., Settings], redis_server: str, redis_prefix: str, tmp_path: Path
) -> None:
    limits = Limits(message_allow=1000, channel_interval_s=0.0)
    async with ChatSimulator(channels=ROOMS, limits=limits) as sim:
        for login, token in (("mybot", "firstsecret"), ("second", "secondsecret")):
            sim.add_account(login, token)
        sim.add_account("third", "thirdsecret")
        settings = make_settings(
            f"prefix = '{redis_prefix}'\n[redis]\nurl = '{redis_server}'\n"
            f"[database]\nurl = 'sqlite:///{tmp_path / 'db.sqlite'}'\n"
            "[channel_manager]\nuse = 'database'\n"
            f"[tmi.connection]\nserver = '127.0.0.1'\nport = {sim.port}\nsecure = false\n"
            "connect_interval = 0\nread_anonymously = true\n"
            "[throttle.messages]\nallow = 2\nevery = 30\nchannel_interval = 0\n"
            + ACCOUNTS
            + '[[tmi.identities]]\nusername = "fourth"\npassword = "not-its-token"\n'
        )
        with Store.from_settings(settings) as store:
            store.migrate()
        manager = load_manager(settings)
        assert isinstance(manager, DatabaseChannelManager)
        await manager.choose_sender(["room2"], "third")  # the manager's choice
        with pytest.raises(ValueError, match="no bot account"):
            await manager.choose_sender(["room2"], "ghost")
        client = redis.asyncio.Redis.from_url(redis_server)
        keys = Keys.from_settings(settings)
        try:
            worker = Worker.in_cluster(settings, client, "p-accounts", handlers=None)
            assert worker.outbox is not None
            assert set(worker.pool.senders) == {"mybot", "second", "third", "fourth"}
            async with worker, Cluster(settings) as cluster:
                sent = await asyncio.gather(
                    cluster.send("room0", "from the first"),
                    cluster.send("room1", "listed in the settings"),
                    cluster.send("room2", "chosen by the manager"),
                    cluster.send("room3", "named by the send", sender="THIRD"),
                )
                assert all(r.status is SendStatus.WRITTEN for r in sent), sent
                assert sim.account("mybot").said == [("room0", "from the first")]
                assert sim.account("second").said == [("room1", "listed in the settings")]
                assert sorted(sim.account("third").said) == [
                    ("room2", "chosen by the manager"),
                    ("room3", "named by the send"),
                ]
                with pytest.raises(ValueError, match="no bot account"):
                    await cluster.send("room0", "as nobody", sender="ghost")
                # a command naming an account this worker lacks: refused, nothing sent
                sends = SendClient(client, keys, "tester")
                await sends.submit(
                    SendCommand(id="ghost", channel="room0", text="x", reply="tester", sender="g")
                )
                deadline = time.monotonic() + 10
                answers: list[SendResult] = []
                while not answers and time.monotonic() < deadline:
                    answers = await sends.replies(0.5)
                assert answers[0].reason == SendRefusal.NO_IDENTITY.value
                assert "no bot account 'g'" in answers[0].detail
                # budgets per account: the first has one message left in its window of two,
                # the second one too: of the first's next two, one waits past its deadline
                more = await asyncio.gather(
                    cluster.send("room0", "first again", timeout_s=1.0),
                    cluster.send("room4", "first, over its budget", timeout_s=1.0),
                    cluster.send("room1", "second again", timeout_s=1.0),
                )
                assert sorted(r.status for r in more[:2]) == [
                    SendStatus.REFUSED,
                    SendStatus.WRITTEN,
                ], more
                assert {r.reason for r in more[:2]} == {None, SendRefusal.RATE_LIMITED.value}
                assert more[2].status is SendStatus.WRITTEN, more
                # an account whose token Twitch refuses: refused, and said which one
                refused = await cluster.send("room0", "as fourth", sender="fourth")
                assert refused.reason == SendRefusal.UNAUTHORIZED.value, refused
                problem = worker.pool.login_problem or ""
                assert "as fourth" in problem
                assert "tmi.identities" in problem
                assert "not-its-token" not in problem + refused.detail
                assert len(sim.account("mybot").said) == 2
                assert len(sim.account("second").said) == 2
        finally:
            await client.aclose()


def test_the_cli_sets_and_shows_each_channels_sender(tmp_path: Path) -> None:
    (tmp_path / "tmi-cluster.toml").write_text(
        "[channel_manager]\nuse = 'database'\n" + ACCOUNTS, encoding="utf-8"
    )
    env = {"TMI_CLUSTER_REDIS__URL": "redis://127.0.0.1:1/0"}  # nobody: the database's view
    assert tmi(tmp_path, "migrate", **env).returncode == 0
    done = tmi(tmp_path, "authorize", "room0", "room1", "room2", **env)
    assert done.returncode == 0, done.stderr
    done = tmi(tmp_path, "authorize", "room2", "--sender", "Third", **env)
    assert done.returncode == 0, done.stderr
    assert "sent to by third" in done.stdout
    done = tmi(tmp_path, "channels", "--json", **env)
    assert done.returncode == 0, done.stderr
    senders = {row["channel"]: row["sender"] for row in json.loads(done.stdout)}
    assert senders == {"room0": "mybot", "room1": "second", "room2": "third"}
    table = tmi(tmp_path, "channels", "room0", **env).stdout  # one row: the column all the same
    assert "sender" in table.splitlines()[0]
    changed = tmi(tmp_path, "authorize", "room2", "--sender", "second", **env)
    assert "#room2: sender set, sent to by second" in changed.stdout, changed.stdout
    assert "1 channel changed" in changed.stdout
    default = tmi(tmp_path, "authorize", "room2", "--default-sender", **env)
    assert "#room2: sender set" in default.stdout, default.stdout
    tmi(tmp_path, "authorize", "room0", "--sender", "third", **env)
    assert tmi(tmp_path, "authorize", "room0", "--revoke", **env).returncode == 0
    rows = json.loads(tmi(tmp_path, "channels", "--json", **env).stdout)
    senders = {row["channel"]: row["sender"] for row in rows}
    assert senders["room2"] == "mybot"  # the settings choose again
    assert senders["room0"] == "mybot"  # a revoke forgets the sender
    refused = tmi(tmp_path, "authorize", "room2", "--sender", "ghost", **env)
    assert refused.returncode == 2
    assert "'ghost' is no bot account" in refused.stderr
    assert tmi(tmp_path, "authorize", "room2", "--revoke", "--sender", "x", **env).returncode == 2
    refused = tmi(tmp_path, "send", "room0", "hi", "--sender", "ghost", **env)
    assert refused.returncode == 2
    assert "no bot account" in refused.stderr
    empty = tmi(tmp_path, "send", "room0", "hi", "--sender", "", **env)
    assert empty.returncode == 2
    assert "sender '' is no bot account" in empty.stderr
    dummy = tmi(
        tmp_path, "authorize", "x", "--sender", "ghost", TMI_CLUSTER_CHANNEL_MANAGER__USE="dummy"
    )
    assert dummy.returncode == 2  # the account is checked first, whatever the manager
    listed = tmi(
        tmp_path,
        "features",
        TMI_CLUSTER_TMI__IDENTITIES='[{"username": "four", "passwrd": "hunter22secret"}]',
    )
    assert listed.returncode == 78
    assert "TMI_CLUSTER_TMI__IDENTITIES: tmi.identities.0.passwrd: unknown key" in listed.stderr
    assert "hunter22secret" not in listed.stdout + listed.stderr
    shown = tmi(tmp_path, "features", **env).stdout
    assert "also sends as second (in #room1)" in shown
    assert "secret" not in shown.replace("client_secret", "")
