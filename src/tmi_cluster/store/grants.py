"""What streamers granted the bot on the invite screen, sealed: the store keeps and returns
the tokens as the ciphertext it is given (:mod:`tmi_cluster.grants` seals and opens them), so
that no token is ever in the database, or in a log of its statements, in clear."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select

from tmi_cluster.store.database import Database, dialect_insert
from tmi_cluster.store.models import grant_table, utcnow

__all__ = ["GrantStore", "SealedGrant"]


@dataclass(frozen=True, slots=True, kw_only=True)
class SealedGrant:
    """One streamer's grant as stored: their Twitch user, the scopes, and the tokens sealed
    (ciphertext; never shown by ``repr``)."""

    user_id: str
    login: str
    scopes: tuple[str, ...]
    access_token: str = field(repr=False)
    refresh_token: str = field(repr=False)
    expires_at: datetime | None = None
    created_at: datetime = field(default_factory=utcnow)
    updated_at: datetime = field(default_factory=utcnow)

    @classmethod
    def _from_row(cls, row: Any) -> SealedGrant:
        values = dict(row._mapping)
        values["scopes"] = tuple(values["scopes"])
        return cls(**values)


class GrantStore(Database):
    """The store's grants (the table ``tmi_cluster_grants``), one per Twitch user."""

    def save_grant(self, grant: SealedGrant) -> None:
        """Insert or replace the grant of ``grant.user_id``. A grant of another user under the
        same login (a login that changed hands on Twitch) is deleted first: a login is one
        user's at a time."""
        self.save_grants([grant])

    def save_grants(self, grants: Sequence[SealedGrant]) -> None:
        """:meth:`save_grant` for each of ``grants``, in one transaction."""
        with self._write() as conn:
            for grant in grants:
                self._save(conn, grant)

    def _save(self, conn: Any, grant: SealedGrant) -> None:
        at = utcnow()
        values = {
            "user_id": grant.user_id,
            "login": grant.login,
            "scopes": list(grant.scopes),
            "access_token": grant.access_token,
            "refresh_token": grant.refresh_token,
            "expires_at": grant.expires_at,
            "updated_at": at,
        }
        insert = dialect_insert(self.engine.dialect.name)
        stmt = insert(grant_table).values(**values, created_at=at)
        stmt = stmt.on_conflict_do_update(
            index_elements=["user_id"], set_={k: v for k, v in values.items() if k != "user_id"}
        )
        conn.execute(
            delete(grant_table).where(
                grant_table.c.login == grant.login, grant_table.c.user_id != grant.user_id
            )
        )
        conn.execute(stmt)

    def grant(self, user_id: str) -> SealedGrant | None:
        """The grant of the Twitch user ``user_id`` (None: none)."""
        with self._read() as conn:
            row = conn.execute(
                select(grant_table).where(grant_table.c.user_id == user_id)
            ).one_or_none()
        return None if row is None else SealedGrant._from_row(row)

    def grants(self, logins: Sequence[str] | None = None) -> list[SealedGrant]:
        """Every grant (or those of ``logins``), by login."""
        query = select(grant_table).order_by(grant_table.c.login)
        if logins is not None:
            query = query.where(grant_table.c.login.in_(list(logins)))
        with self._read() as conn:
            return [SealedGrant._from_row(row) for row in conn.execute(query)]

    def delete_grant(self, user_id: str) -> bool:
        """Forget the grant of ``user_id``; whether there was one."""
        with self._write() as conn:
            result = conn.execute(delete(grant_table).where(grant_table.c.user_id == user_id))
        return bool(result.rowcount)

    def delete_grants_of(self, logins: Sequence[str]) -> int:
        """Forget the grants of the channels ``logins`` (a revoke); how many there were."""
        if not logins:
            return 0
        with self._write() as conn:
            result = conn.execute(delete(grant_table).where(grant_table.c.login.in_(list(logins))))
        return int(result.rowcount or 0)

    def grant_count(self) -> int:
        """How many grants are stored."""
        with self._read() as conn:
            return int(conn.scalar(select(func.count()).select_from(grant_table)) or 0)
