"""The SQL store, on SQLite and PostgreSQL: migrations, channels (up to 250,000), records."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import text

from tmi_cluster.errors import InvalidChannelError, MigrationError, StorageError
from tmi_cluster.outcomes import JoinResult
from tmi_cluster.store import BULK_FROM, Failure, RunState, Store
from tmi_cluster.store.models import metadata


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    with Store(database_url) as store:
        store.migrate()
        yield store


def test_migrate_is_idempotent(database_url: str) -> None:
    with Store(database_url) as store:
        assert store.revision() is None
        assert store.migrate() == ["0001", "0002", "0003", "0004", "0005"]
        assert store.migrate() == []
        assert store.revision() == "0005"


def test_models_and_migrations_agree(store: Store) -> None:
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_channels_lifecycle(store: Store) -> None:
    at = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    store.want(["#Alpha", "beta", "alpha"], now=at)
    found = store.channels(["alpha", "beta", "gamma"])
    assert sorted(found) == ["alpha", "beta"]
    assert found["alpha"].wanted
    assert found["alpha"].acknowledged_at == at
    assert found["alpha"].acknowledged_at.tzinfo is not None
    assert store.wanted() == ["alpha", "beta"]

    store.authorize(["alpha"], reconnect=True, options={"lang": "de"}, now=at)
    alpha = store.channels(["alpha"])["alpha"]
    assert (alpha.authorized, alpha.reconnect, alpha.options) == (True, True, {"lang": "de"})
    assert alpha.wanted  # authorizing keeps the wanted flag

    later = at + timedelta(hours=1)
    store.acknowledge(["beta", "delta"], now=later)
    assert store.channels(["beta"])["beta"].acknowledged_at == later
    assert not store.channels(["delta"])["delta"].wanted

    store.record_join_outcomes({"alpha": JoinResult.JOINED, "beta": JoinResult.SUSPENDED})
    result = store.channels(["alpha", "beta"])
    assert result["alpha"].last_join_outcome == "joined"
    assert result["beta"].last_join_outcome == "msg_channel_suspended"

    store.revoke(["alpha"])
    alpha = store.channels(["alpha"])["alpha"]
    assert (alpha.authorized, alpha.revoked, alpha.wanted) == (False, True, False)
    store.unwant(["beta"])
    assert store.wanted() == []
    assert store.count_channels() == 3


def test_every_join_result_the_pool_reports_can_be_recorded(store: Store) -> None:
    logins = [f"c{i}" for i in range(len(JoinResult))]
    store.want(logins)
    store.record_join_outcomes(dict(zip(logins, JoinResult, strict=True)))
    found = store.channels(logins)
    assert [found[login].last_join_outcome for login in logins] == [r.value for r in JoinResult]
    assert "parted" in {r.value for r in JoinResult}  # the pool reports it; it fits


@pytest.mark.parametrize("name", ["", "a" * 26, "bad name", "#", "x;DROP TABLE", "ä"])
def test_invalid_channel_names_are_refused(store: Store, name: str) -> None:
    with pytest.raises(InvalidChannelError, match="invalid channel name"):
        store.want([name])
    assert store.count_channels() == 0


def test_a_25_character_login_fits(store: Store) -> None:
    login = "a" * 25
    store.want(["#" + login])
    assert list(store.channels([login])) == [login]


def test_250000_channels_in_one_call(store: Store) -> None:
    logins = [f"channel{i}" for i in range(250_000)]
    store.want(logins)
    assert len(store.channels(logins)) == 250_000
    store.revoke(logins[:200_000])
    store.record_join_outcomes(dict.fromkeys(logins[200_000:], JoinResult.TIMEOUT))
    assert len(store.wanted()) == 50_000
    assert store.count_channels() == 250_000


def test_supervisor_record_and_history(store: Store) -> None:
    store.record_supervisor("host-1", RunState.RUNNING, pid=42, options={"a": 1})
    store.record_supervisor("host-1", RunState.STOPPED, pid=42, detail="bye")
    [record] = store.supervisors()
    assert (record.id, record.state, record.pid) == ("host-1", "stopped", 42)
    assert record.stopped_at is not None
    assert [h.state for h in store.history("host-1")] == ["running", "stopped"]
    assert store.processes() == []
    store.record_process("host-1-1", "host-1", RunState.RUNNING, pid=7, channels=3)
    [process] = store.processes()
    assert (process.supervisor_id, process.pid, process.channels) == ("host-1", 7, 3)
    assert (process.metrics, process.exit_code) == ({}, None)
    assert process.started_at.tzinfo is not None  # read back aware, like every timestamp
    with pytest.raises(AttributeError):  # records are frozen: the store writes, not they
        process.state = "dead"  # type: ignore[misc]


def test_unreachable_database_is_a_storage_error_without_password() -> None:
    with Store("postgresql+psycopg://user:sekret@127.0.0.1:1/db?connect_timeout=2") as store:
        with pytest.raises(MigrationError) as caught:
            store.migrate()
        assert "sekret" not in str(caught.value)
        assert "user:***@127.0.0.1:1/db" in str(caught.value)
        with pytest.raises(StorageError, match="cannot reach database"):
            store.channels(["a"])


def test_reading_before_migrate_is_a_storage_error(sqlite_url: str) -> None:
    with Store(sqlite_url) as store, pytest.raises(StorageError, match="no such table"):
        store.wanted()


# psycopg made unimportable in a fresh interpreter, as when the 'postgres' extra is missing.
_WITHOUT_PSYCOPG = """
import sys
sys.modules["psycopg"] = None
from tmi_cluster.cli import main
sys.argv = ["tmi-cluster", *sys.argv[1:]]
main()
"""


def test_postgresql_without_the_extra_names_the_extra(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TMI_CLUSTER_")}
    env["TMI_CLUSTER_DATABASE__URL"] = "postgresql://bot:hunter2@127.0.0.1:5432/test"
    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PSYCOPG, "migrate"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 1, result.stderr
    assert result.stderr == (
        "error: cannot use database postgresql+psycopg://bot:***@127.0.0.1:5432/test: "
        "its driver psycopg is not installed; install it with: "
        "pip install 'tmi-cluster[postgres]'\n"
    )


def test_failures_are_recorded_cleared_and_reset_by_a_new_join(store: Store) -> None:
    at = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    store.want(["alpha", "beta", "gamma"], now=at)
    store.record_failures(
        [
            Failure("alpha", "msg_banned", 1, None, True, at),
            Failure("beta", "timeout", 3, at + timedelta(seconds=40), False, at),
        ]
    )
    found = store.failures()
    assert sorted(found) == ["alpha", "beta"]
    assert found["alpha"].given_up
    assert found["alpha"].reason == "msg_banned"
    assert found["beta"].attempts == 3
    assert found["beta"].retry_at == at + timedelta(seconds=40)
    store.clear_failures(["beta"])
    assert sorted(store.failures()) == ["alpha"]
    assert store.channels(["beta"])["beta"].last_join_outcome == "joined"
    store.want(["alpha"])  # asked for again: tried again
    assert store.failures() == {}


def test_the_clusters_state_is_kept(store: Store) -> None:
    assert store.state("scale") is None
    store.set_state("scale", {"processes": 4})
    store.set_state("scale", {"processes": 5})
    assert store.state("scale") == {"processes": 5}


def test_several_processes_migrate_one_sqlite_file_at_once(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    code = f"from tmi_cluster.store import Store\nwith Store({url!r}) as s: print(s.migrate())"
    runs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(4)
    ]
    results = [run.communicate(timeout=60) for run in runs]
    assert [run.returncode for run in runs] == [0] * 4, results
    applied = sorted(out.strip() for out, _ in results)
    assert applied == [
        "['0001', '0002', '0003', '0004', '0005']",
        "[]",
        "[]",
        "[]",
    ]  # once, whoever came first


def test_the_store_does_not_import_the_orm() -> None:
    """The tables are SQLAlchemy Core: the ORM (about 50 ms of every command's start) stays
    out, and so does Alembic (only ``migrate`` needs it)."""
    code = (
        "import sys, tmi_cluster.store\n"
        "print([m for m in sys.modules if m.startswith(('sqlalchemy.orm', 'alembic'))])"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"


def test_the_bulk_path_writes_what_the_row_path_writes(store: Store) -> None:
    """From BULK_FROM channels on, the logins go as one parameter: the rows are the same as
    those of the path with a row of parameters per channel (types, options, timestamps)."""
    at = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
    few = [f"few{i}" for i in range(10)]
    many = [f"many{i}" for i in range(BULK_FROM + 5)]
    for names in (few, many):
        store.authorize(names, reconnect=True, options={"by": "test", "n": [1, 2]}, now=at)
    small, bulk = store.channels(few)["few3"], store.channels(many)["many1003"]
    assert small == bulk._replace(login="few3")
    assert bulk.authorized
    assert bulk.reconnect
    assert not bulk.wanted
    assert not bulk.revoked
    assert bulk.options == {"by": "test", "n": [1, 2]}
    later = datetime(2026, 12, 1, 8, 0, tzinfo=UTC)
    store.want(many[:2000], now=later)  # an upsert over existing rows keeps the rest
    again = store.channels(["many1003"])["many1003"]
    assert again.wanted
    assert again.authorized
    assert again.acknowledged_at == later
    assert again.options == {"by": "test", "n": [1, 2]}
    store.revoke(many)
    assert not any(c.authorized or c.wanted for c in store.channels(many).values())
    assert all(c.revoked for c in store.channels(many).values())
    assert len(store.channels([*many, "unknown"])) == len(many)


def test_part_stale_parts_the_stale_and_the_unauthorized_wanted_channels(store: Store) -> None:
    now = datetime.now(UTC)
    long_ago = now - timedelta(days=30)
    store.authorize(["fresh", "old", "never", "revoked", "unwanted"])
    store.want(["fresh", "old", "never", "revoked", "plain"])  # plain: wanted, never authorized
    store.acknowledge(["old", "revoked", "unwanted"], now=long_ago)
    with store.engine.begin() as conn:  # "never": wanted, no acknowledgement at all
        conn.execute(
            text("UPDATE tmi_cluster_channels SET acknowledged_at = NULL WHERE login = 'never'")
        )
    store._set(["revoked"], revoked=True)
    checked, stale, unauthorized = store.part_stale(now - timedelta(hours=1))
    assert checked == 5
    assert stale == {"old"}
    assert unauthorized == {"revoked", "plain"}
    assert set(store.wanted()) == {"fresh", "never"}
    assert store.part_stale(now - timedelta(hours=1)) == (2, set(), set())  # level: done
    store.want(["old"])  # a join acknowledges it: no longer stale
    assert store.part_stale(now - timedelta(hours=1))[1] == set()


def test_want_reconnect_wants_again_the_reconnect_channels(store: Store) -> None:
    now = datetime.now(UTC)
    store.authorize(["again", "stale", "gone", "unseen"], reconnect=True)
    store.authorize(["plain"])
    store.acknowledge(["stale"], now=now - timedelta(days=30))
    store.revoke(["gone"])
    assert store.want_reconnect(horizon=now - timedelta(days=7)) == ["again", "unseen"]
    unseen = store.channels(["unseen"])["unseen"].acknowledged_at  # never: acknowledged now
    assert unseen is not None
    assert unseen >= now - timedelta(minutes=1)
    assert store.want_reconnect() == ["stale"]  # no cleanup: the stale one too
    assert store.want_reconnect() == []
    assert set(store.wanted()) == {"again", "stale", "unseen"}
    acknowledged_at = store.channels(["stale"])["stale"].acknowledged_at
    assert acknowledged_at is not None
    assert acknowledged_at < now - timedelta(days=29)
    assert set(store.wanted(authorized_only=True)) == {"again", "stale", "unseen"}
    store.want(["plain", "never"])
    assert set(store.wanted(authorized_only=True)) == {"again", "stale", "unseen", "plain"}


def test_a_refused_join_is_remembered_not_wanted(store: Store) -> None:
    store.remember_refused(["refused"], "unauthorized")
    refused = store.channels(["refused"])["refused"]
    assert not refused.wanted
    assert not refused.authorized
    assert refused.last_join_outcome == "unauthorized"
