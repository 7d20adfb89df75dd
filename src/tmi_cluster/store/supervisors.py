"""The supervisors' and worker processes' rows (their latest state) and their history (one
row per lifecycle step, kept when the rows are deleted).

Written on state changes and at most every 30 s per process, never per heartbeat: what is
alive right now is Redis's to say (:mod:`tmi_cluster.bus.heartbeat`); these rows are what
``tmi-cluster list`` shows of the past.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable, Mapping
from typing import Any

from sqlalchemy import delete, insert, select, update

from tmi_cluster.store.database import Database, chunks
from tmi_cluster.store.models import (
    HistoryRecord,
    ProcessRecord,
    RunState,
    SupervisorRecord,
    history_table,
    process_table,
    supervisor_table,
    utcnow,
)

__all__ = ["SupervisorStore"]


class SupervisorStore(Database):
    """The store's supervisors, worker processes and their history."""

    def record_supervisor(
        self,
        supervisor_id: str,
        state: RunState,
        *,
        pid: int,
        options: Mapping[str, Any] | None = None,
        detail: str = "",
    ) -> None:
        """Create or update a supervisor's latest state, and append it to the history."""
        at = utcnow()
        with self._write() as conn:
            row = conn.execute(
                select(supervisor_table.c.id).where(supervisor_table.c.id == supervisor_id)
            ).first()
            values: dict[str, Any] = {"state": state.value, "last_seen_at": at, "pid": pid}
            if state in (RunState.STOPPED, RunState.DEAD):
                values["stopped_at"] = at
            if state is RunState.RUNNING:  # a new run (an id may be used again): its own age
                values.update(started_at=at, stopped_at=None, hostname=socket.gethostname())
            if row is None:
                values.pop("started_at", None)
                values.pop("hostname", None)
                conn.execute(
                    insert(supervisor_table).values(
                        id=supervisor_id,
                        hostname=socket.gethostname(),
                        options=dict(options or {}),
                        metrics={},
                        started_at=at,
                        **values,
                    )
                )
            else:
                conn.execute(
                    update(supervisor_table)
                    .where(supervisor_table.c.id == supervisor_id)
                    .values(**values)
                )
            conn.execute(
                insert(history_table).values(
                    at=at, supervisor_id=supervisor_id, state=state.value, detail=detail[:500]
                )
            )

    def record_process(
        self,
        process_id: str,
        supervisor_id: str,
        state: RunState,
        *,
        pid: int | None = None,
        channels: int | None = None,
        metrics: Mapping[str, Any] | None = None,
        exit_code: int | None = None,
        detail: str = "",
        history: bool = True,
    ) -> None:
        """Create or update a worker process's latest state, and (``history``) append it to the
        history. Called on state changes and at most every 30 s, never per heartbeat."""
        at = utcnow()
        values: dict[str, Any] = {"state": state.value, "last_seen_at": at}
        if pid is not None:
            values["pid"] = pid
        if channels is not None:
            values["channels"] = channels
        if metrics is not None:
            values["metrics"] = dict(metrics)
        if exit_code is not None:
            values["exit_code"] = exit_code
        if state in (RunState.STOPPED, RunState.DEAD):
            values["stopped_at"] = at
        with self._write() as conn:
            row = conn.execute(
                select(process_table.c.id).where(process_table.c.id == process_id)
            ).first()
            if row is None:
                values.setdefault("metrics", {})
                conn.execute(
                    insert(process_table).values(
                        id=process_id, supervisor_id=supervisor_id, started_at=at, **values
                    )
                )
            else:
                conn.execute(
                    update(process_table).where(process_table.c.id == process_id).values(**values)
                )
            if history:
                conn.execute(
                    insert(history_table).values(
                        at=at,
                        supervisor_id=supervisor_id,
                        process_id=process_id,
                        state=state.value,
                        detail=detail[:500],
                    )
                )

    def set_supervisor_metrics(self, supervisor_id: str, metrics: Mapping[str, Any]) -> None:
        """Replace a supervisor's metrics (its process count, a problem it reports)."""
        with self._write() as conn:
            conn.execute(
                update(supervisor_table)
                .where(supervisor_table.c.id == supervisor_id)
                .values(metrics=dict(metrics), last_seen_at=utcnow())
            )

    def mark_dead(self, supervisor_ids: Iterable[str], process_ids: Iterable[str]) -> None:
        """Record supervisors and processes found dead (no heartbeat), with their history."""
        at = utcnow()
        with self._write() as conn:
            for supervisor_id in supervisor_ids:
                conn.execute(
                    update(supervisor_table)
                    .where(supervisor_table.c.id == supervisor_id)
                    .values(state=RunState.DEAD.value, stopped_at=at)
                )
                conn.execute(
                    insert(history_table).values(
                        at=at,
                        supervisor_id=supervisor_id,
                        state=RunState.DEAD.value,
                        detail="no heartbeat",
                    )
                )
            for process_id in process_ids:
                owner = conn.execute(
                    select(process_table.c.supervisor_id).where(process_table.c.id == process_id)
                ).scalar()
                conn.execute(
                    update(process_table)
                    .where(process_table.c.id == process_id)
                    .values(state=RunState.DEAD.value, stopped_at=at)
                )
                if owner is not None:
                    conn.execute(
                        insert(history_table).values(
                            at=at,
                            supervisor_id=owner,
                            process_id=process_id,
                            state=RunState.DEAD.value,
                            detail="no heartbeat",
                        )
                    )

    def delete_records(
        self, *, supervisor_ids: Iterable[str] = (), process_ids: Iterable[str] = ()
    ) -> None:
        """Delete the rows of supervisors (with their processes) and processes; the history
        stays."""
        with self._write() as conn:
            for chunk in chunks(list(process_ids)):
                conn.execute(delete(process_table).where(process_table.c.id.in_(chunk)))
            for chunk in chunks(list(supervisor_ids)):
                conn.execute(delete(process_table).where(process_table.c.supervisor_id.in_(chunk)))
                conn.execute(delete(supervisor_table).where(supervisor_table.c.id.in_(chunk)))

    def supervisors(self) -> list[SupervisorRecord]:
        """Every supervisor record, newest first."""
        with self._read() as conn:
            query = select(supervisor_table).order_by(supervisor_table.c.started_at.desc())
            return [SupervisorRecord(**row._mapping) for row in conn.execute(query)]

    def processes(self) -> list[ProcessRecord]:
        """Every process record, newest first."""
        with self._read() as conn:
            query = select(process_table).order_by(process_table.c.started_at.desc())
            return [ProcessRecord(**row._mapping) for row in conn.execute(query)]

    def history(self, supervisor_id: str) -> list[HistoryRecord]:
        """The lifecycle steps of one supervisor and its processes, oldest first."""
        with self._read() as conn:
            query = (
                select(history_table)
                .where(history_table.c.supervisor_id == supervisor_id)
                .order_by(history_table.c.id)
            )
            return [HistoryRecord(**row._mapping) for row in conn.execute(query)]
