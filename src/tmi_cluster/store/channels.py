"""The channels' rows: which channels are wanted (:meth:`ChannelStore.want`, ``unwant``,
``acknowledge``, the stale cleanup's ``part_stale``), authorized (``authorize``, ``revoke``,
``want_reconnect``), and how their joins went (``record_join_outcomes``, ``record_failures``,
``clear_failures``, ``failures``).

Every method that takes channels accepts any number of them: lists are split into chunks well
below every backend's placeholder limit (:data:`~tmi_cluster.store.database.CHUNK_SIZE`), and from
:data:`BULK_FROM` channels on, a statement takes them all as one parameter, so 250,000 channels
are as valid an argument as one.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, NamedTuple

from sqlalchemy import (
    ColumnElement,
    String,
    any_,
    cast,
    func,
    literal,
    or_,
    select,
    true,
    update,
)

from tmi_cluster.logins import normalise_login, normalise_logins
from tmi_cluster.outcomes import JoinResult
from tmi_cluster.store.database import CHUNK_SIZE, Database, chunks, dialect_insert
from tmi_cluster.store.models import channel_table, utcnow

__all__ = ["BULK_FROM", "BULK_SIZE", "Channel", "ChannelStore", "Failure"]

#: From how many channels on a statement takes them all as one parameter (a JSON array that
#: SQLite reads with ``json_each``, a PostgreSQL array), and how many it takes at most: the
#: bulk path, 4-13 times faster than a row of parameters per channel (bench/channels.py).
BULK_FROM = 1_000
BULK_SIZE = 50_000


class Channel(NamedTuple):
    """A channel as the store knows it (fields in the order of the query that reads it)."""

    login: str
    wanted: bool
    authorized: bool
    revoked: bool
    reconnect: bool
    options: Mapping[str, Any]
    acknowledged_at: datetime | None
    last_join_outcome: str | None
    last_join_at: datetime | None


class Failure(NamedTuple):
    """A channel whose last joins failed: why, how many times in a row, when it is tried
    again (None: not before it is asked for again), whether it was given up, when it failed."""

    login: str
    reason: str
    attempts: int
    retry_at: datetime | None
    given_up: bool
    failed_at: datetime | None


def _text_array() -> Any:
    """PostgreSQL's ``text[]`` (only ever asked for on PostgreSQL; imported here, not with the
    module, as :func:`~tmi_cluster.store.database.dialect_insert` does)."""
    from sqlalchemy.dialects.postgresql import ARRAY  # noqa: PLC0415

    return ARRAY(String)


class ChannelStore(Database):
    """The store's channels (the table ``tmi_cluster_channels``)."""

    def want(self, channels: Iterable[str], *, now: datetime | None = None) -> None:
        """Mark channels wanted and acknowledged now, creating those not yet known; a failed
        or given-up channel is tried again at once."""
        at = now or utcnow()
        values = {
            "wanted": True,
            "acknowledged_at": at,
            "failures": 0,
            "retry_at": None,
            "given_up": False,
        }
        self._upsert(channels, values, at)

    def unwant(self, channels: Iterable[str]) -> None:
        """Mark channels no longer wanted (unknown ones are ignored)."""
        self._set(channels, wanted=False)

    def acknowledge(
        self, channels: Iterable[str], *, now: datetime | None = None, create: bool = True
    ) -> None:
        """Record fresh interest in channels (delays their stale cleanup); with ``create``
        false, in the known ones only."""
        at = now or utcnow()
        if create:
            self._upsert(channels, {"acknowledged_at": at}, at)
        else:
            self._set(channels, acknowledged_at=at)

    def authorize(
        self,
        channels: Iterable[str],
        *,
        reconnect: bool = False,
        options: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> None:
        """Grant authorization, with ``reconnect`` and free-form ``options``; clears a revoke."""
        at = now or utcnow()
        values = {
            "authorized": True,
            "authorized_at": at,
            "revoked": False,
            "reconnect": reconnect,
            "options": dict(options or {}),
        }
        self._upsert(channels, values, at)

    def revoke(self, channels: Iterable[str]) -> None:
        """Withdraw authorization; the channel is no longer wanted."""
        self._set(channels, authorized=False, revoked=True, wanted=False)

    def record_join_outcomes(
        self, outcomes: Mapping[str, JoinResult], *, now: datetime | None = None
    ) -> None:
        """Store the result of the last join attempt of each channel."""
        at = now or utcnow()
        by_outcome: dict[JoinResult, list[str]] = {}
        for login, outcome in outcomes.items():
            by_outcome.setdefault(JoinResult(outcome), []).append(login)
        for outcome, logins in by_outcome.items():
            self._set(logins, last_join_outcome=outcome.value, last_join_at=at)

    def record_failures(self, failures: Iterable[Failure]) -> None:
        """Record failed joins: each channel's reason, attempts, next retry, given up."""
        with self._write() as conn:
            for failure in failures:
                conn.execute(
                    update(channel_table)
                    .where(channel_table.c.login == failure.login)
                    .values(
                        last_join_outcome=failure.reason[:40],
                        last_join_at=failure.failed_at or utcnow(),
                        failures=failure.attempts,
                        retry_at=failure.retry_at,
                        given_up=failure.given_up,
                        updated_at=utcnow(),
                    )
                )

    def clear_failures(self, channels: Iterable[str], *, now: datetime | None = None) -> None:
        """Record channels joined: their failures are over."""
        logins = normalise_logins(channels)
        at = now or utcnow()
        with self._write() as conn:
            for chunk in self._batches(logins):
                conn.execute(
                    update(channel_table)
                    .where(self._login_in(chunk))
                    .values(
                        last_join_outcome=JoinResult.JOINED.value,
                        last_join_at=at,
                        failures=0,
                        retry_at=None,
                        given_up=False,
                    )
                )

    def failures(self) -> dict[str, Failure]:
        """The failed joins of the wanted channels (failures in a row, not yet joined again)."""
        record = channel_table.c
        columns = (
            record.login,
            record.last_join_outcome,
            record.failures,
            record.retry_at,
            record.given_up,
            record.last_join_at,
        )
        query = select(*columns).where(
            channel_table.c.wanted.is_(True), channel_table.c.failures > 0
        )
        with self._read() as conn:
            return {
                str(row[0]): Failure(
                    str(row[0]), str(row[1] or ""), int(row[2]), row[3], bool(row[4]), row[5]
                )
                for row in conn.execute(query)
            }

    def channels(self, channels: Iterable[str]) -> dict[str, Channel]:
        """The known channels among ``channels``, by login."""
        logins = normalise_logins(channels)
        found: dict[str, Channel] = {}
        columns = [channel_table.c[name] for name in Channel._fields]
        with self._read() as conn:
            for chunk in self._batches(logins):
                rows = conn.execute(select(*columns).where(self._login_in(chunk)))
                for row in rows:
                    channel = Channel._make(row)
                    found[channel.login] = channel
        return found

    def authorized_count(self) -> int:
        """How many channels are authorized and not revoked (the invite screen shows it)."""
        query = (
            select(func.count())
            .select_from(channel_table)
            .where(channel_table.c.authorized.is_(True), channel_table.c.revoked.is_(False))
        )
        with self._read() as conn:
            return int(conn.scalar(query) or 0)

    def authorized_among(self, channels: Iterable[str]) -> set[str]:
        """Those of ``channels`` authorized and not revoked (their logins only: the manager's
        ``authorized()``)."""
        return self._logins_where(
            channels, channel_table.c.authorized.is_(True), channel_table.c.revoked.is_(False)
        )

    def set_sender(self, channels: Iterable[str], sender: str | None) -> None:
        """Record the bot account that sends in ``channels`` (None: the settings choose); a
        channel not known yet is recorded, not wanted."""
        at = utcnow()
        self._upsert(channels, {"sender": normalise_login(sender) if sender else None}, at)

    def senders_among(self, channels: Iterable[str]) -> dict[str, str]:
        """Of ``channels``, those with a recorded sender -> its login."""
        logins = normalise_logins(channels)
        found: dict[str, str] = {}
        with self._read() as conn:
            for chunk in self._batches(logins):
                query = select(channel_table.c.login, channel_table.c.sender).where(
                    self._login_in(chunk), channel_table.c.sender.is_not(None)
                )
                found.update((login, sender) for login, sender in conn.execute(query))
        return found

    def stale_among(self, channels: Iterable[str], horizon: datetime) -> set[str]:
        """Those of ``channels`` last acknowledged before ``horizon`` (never: not stale)."""
        return self._logins_where(channels, channel_table.c.acknowledged_at < horizon)

    def _logins_where(self, channels: Iterable[str], *rules: ColumnElement[bool]) -> set[str]:
        logins = normalise_logins(channels)
        found: set[str] = set()
        with self._read() as conn:
            for chunk in self._batches(logins):
                query = select(channel_table.c.login).where(self._login_in(chunk), *rules)
                found.update(conn.scalars(query))
        return found

    def channel_states(self, channels: Iterable[str] = ()) -> list[tuple[str, bool, datetime]]:
        """(login, wanted, last change) of the named channels, or of every known one, sorted."""
        logins = normalise_logins(channels)
        query = select(channel_table.c.login, channel_table.c.wanted, channel_table.c.updated_at)
        with self._read() as conn:
            if not logins:
                rows = list(conn.execute(query.order_by(channel_table.c.login)))
            else:
                rows = []
                for chunk in self._batches(logins):
                    rows.extend(conn.execute(query.where(self._login_in(chunk))))
        return sorted((str(r[0]), bool(r[1]), r[2]) for r in rows)

    def wanted(self, *, authorized_only: bool = False) -> list[str]:
        """Logins of every wanted channel (with ``authorized_only``, of those authorized and
        not revoked too), sorted."""
        query = select(channel_table.c.login).where(channel_table.c.wanted.is_(True))
        if authorized_only:
            query = query.where(
                channel_table.c.authorized.is_(True), channel_table.c.revoked.is_(False)
            )
        with self._read() as conn:
            return sorted(conn.scalars(query))

    def part_stale(self, horizon: datetime) -> tuple[int, set[str], set[str]]:
        """The stale cleanup of the Database manager: mark no longer wanted the wanted
        channels last acknowledged before ``horizon`` and those not authorized or revoked;
        return (how many were wanted, the stale ones, the unauthorized ones). A query on the
        index of ``wanted`` and ``acknowledged_at``, and updates that check the condition again
        (a channel acknowledged meanwhile stays)."""
        record = channel_table.c
        unauthorized_rule = or_(record.authorized.is_(False), record.revoked.is_(True))
        stale_rule = record.acknowledged_at < horizon
        query = select(record.login, record.authorized, record.revoked).where(
            record.wanted.is_(True), or_(stale_rule, unauthorized_rule)
        )
        with self._write() as conn:
            count = conn.scalar(select(func.count()).where(record.wanted.is_(True)))
            stale: list[str] = []
            unauthorized: list[str] = []
            for login, authorized, revoked in conn.execute(query):
                (unauthorized if not authorized or revoked else stale).append(login)
            for logins, rule in ((stale, stale_rule), (unauthorized, unauthorized_rule)):
                for chunk in self._batches(logins):
                    conn.execute(
                        update(channel_table)
                        .where(self._login_in(chunk), record.wanted.is_(True), rule)
                        .values(wanted=False, updated_at=utcnow())
                    )
        return int(count or 0), set(stale), set(unauthorized)

    def want_reconnect(self, *, horizon: datetime | None = None) -> list[str]:
        """Mark wanted again every channel authorized with ``reconnect`` (not revoked) that is
        not wanted (with ``horizon``, only those acknowledged since, or never: a stale one
        stays parted); their logins, sorted. One never acknowledged counts as acknowledged now
        (so that the stale cleanup parts it in its time); any other acknowledgement is left as
        it was."""
        record = channel_table.c
        where: list[ColumnElement[bool]] = [
            record.reconnect.is_(True),
            record.authorized.is_(True),
            record.revoked.is_(False),
            record.wanted.is_(False),
        ]
        if horizon is not None:
            where.append(or_(record.acknowledged_at.is_(None), record.acknowledged_at >= horizon))
        with self._write() as conn:
            logins = sorted(conn.scalars(select(record.login).where(*where)))
            for chunk in self._batches(logins):
                at = utcnow()
                conn.execute(
                    update(channel_table)
                    .where(self._login_in(chunk))
                    .values(
                        wanted=True,
                        updated_at=at,
                        acknowledged_at=func.coalesce(record.acknowledged_at, at),
                    )
                )
        return logins

    def remember_refused(self, channels: Iterable[str], reason: str) -> None:
        """Record that joining ``channels`` was refused for ``reason`` (creating those not yet
        known, not wanted) so that listings show them."""
        at = utcnow()
        self._upsert(channels, {"last_join_outcome": reason[:40], "last_join_at": at}, at)

    def count_channels(self) -> int:
        """How many channels the store knows."""
        with self._read() as conn:
            return int(conn.scalar(select(func.count()).select_from(channel_table)) or 0)

    def _upsert(self, channels: Iterable[str], values: Mapping[str, Any], at: datetime) -> None:
        """Insert ``channels`` with ``values`` (the defaults for the rest), or set ``values``
        on those known: a row of parameters per channel for a few, one statement per
        :data:`BULK_SIZE` channels for many (the bulk path: the logins as one parameter)."""
        logins = normalise_logins(channels)
        insert = dialect_insert(self.engine.dialect.name)
        defaults: dict[str, Any] = {
            "wanted": False,
            "authorized": False,
            "authorized_at": None,
            "revoked": False,
            "reconnect": False,
            "options": {},
            "acknowledged_at": None,
            "created_at": at,
        }
        row = {**defaults, **values, "updated_at": at}
        with self._write() as conn:
            if len(logins) < BULK_FROM:
                # executemany: one row's parameters per execution, no placeholder limit.
                stmt = insert(channel_table)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["login"], set_={**values, "updated_at": at}
                )
                conn.execute(stmt, [{**row, "login": login} for login in logins])
                return
            shared = [self._typed(value, channel_table.c[name].type) for name, value in row.items()]
            for chunk in chunks(logins, BULK_SIZE):
                source = self._logins_source(chunk)
                rows = select(source, *shared).where(true())  # WHERE: SQLite's ON CONFLICT rule
                bulk = insert(channel_table).from_select(["login", *row], rows)
                bulk = bulk.on_conflict_do_update(
                    index_elements=["login"],
                    set_={name: bulk.excluded[name] for name in (*values, "updated_at")},
                )
                conn.execute(bulk)

    def _typed(self, value: Any, kind: Any) -> ColumnElement[Any]:
        """``value`` as a bound parameter of type ``kind`` in a SELECT list (PostgreSQL is told
        the type; a CAST on SQLite would change a JSON text's affinity)."""
        bound = literal(value, kind)
        return cast(bound, kind) if self.engine.dialect.name == "postgresql" else bound

    def _logins_source(self, logins: Sequence[str]) -> ColumnElement[str]:
        """A column of the rows ``logins``, from one parameter."""
        if self.engine.dialect.name == "postgresql":
            return func.unnest(literal(list(logins), _text_array()))
        return func.json_each(json.dumps(list(logins))).table_valued("value").c.value

    def _login_in(self, logins: Sequence[str]) -> ColumnElement[bool]:
        """``login IN logins``, the bulk path's way for many."""
        if len(logins) < BULK_FROM:
            return channel_table.c.login.in_(logins)
        if self.engine.dialect.name == "postgresql":
            return channel_table.c.login == any_(literal(list(logins), _text_array()))
        return channel_table.c.login.in_(select(self._logins_source(logins)))

    def _batches(self, logins: Sequence[str]) -> Iterator[Sequence[str]]:
        """``logins`` in the batches one statement takes."""
        return chunks(logins, CHUNK_SIZE if len(logins) < BULK_FROM else BULK_SIZE)

    def _set(self, channels: Iterable[str], **values: Any) -> None:
        logins = normalise_logins(channels)
        with self._write() as conn:
            for chunk in self._batches(logins):
                conn.execute(
                    update(channel_table)
                    .where(self._login_in(chunk))
                    .values(**values, updated_at=utcnow())
                )
