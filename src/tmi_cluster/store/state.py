"""The cluster's own state: a few named values, each a JSON object, the last write winning
(the size the cluster last ran at, read back by ``auto_scale.restore``; the Redis server the
database serves, checked by :mod:`tmi_cluster.supervisor.claims`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from tmi_cluster.store.database import Database, dialect_insert
from tmi_cluster.store.models import state_table, utcnow

__all__ = ["StateStore"]


class StateStore(Database):
    """The store's values of the cluster's own (the table ``tmi_cluster_state``)."""

    def state(self, key: str) -> dict[str, Any] | None:
        """A value of the cluster's own state (None: never set)."""
        with self._read() as conn:
            value = conn.scalar(select(state_table.c.value).where(state_table.c.key == key))
        return dict(value) if value is not None else None

    def set_state(self, key: str, value: Mapping[str, Any]) -> None:
        """Set a value of the cluster's own state (replacing the one before)."""
        insert = dialect_insert(self.engine.dialect.name)
        at = utcnow()
        stmt = insert(state_table).values(key=key, value=dict(value), updated_at=at)
        stmt = stmt.on_conflict_do_update(
            index_elements=["key"], set_={"value": dict(value), "updated_at": at}
        )
        with self._write() as conn:
            conn.execute(stmt)
