"""What ``tmi-cluster list`` shows: the SQL records of supervisors and processes, their liveness
taken from the Redis heartbeats.

Liveness is never read from a SQL row: a supervisor killed with SIGKILL leaves its row saying
``running`` behind. A record that says it is alive (starting, running, stopping) is shown
``dead`` when its heartbeat is gone, with the record's own last sign of life; one with a live
heartbeat is shown as recorded, last seen ``now``. When Redis cannot be reached, liveness is
unknown: such records keep their recorded state marked ``?`` and :attr:`Liveness.warning` says
why. With the embedded Redis server (``redis.url`` empty) and none running, no heartbeat can
exist (the supervisor owns that server), so every such record is dead.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from tmi_cluster.bus import Keys, connect, live_processes, live_supervisors
from tmi_cluster.config import Settings
from tmi_cluster.errors import EmbeddedRedisError, RedisUnavailableError
from tmi_cluster.store import RunState
from tmi_cluster.store.models import ProcessRecord, SupervisorRecord

__all__ = [
    "CLAIMS_ALIVE",
    "Liveness",
    "check_liveness",
    "process_rows",
    "shown_state",
    "supervisor_rows",
]

#: Recorded states that claim a live owner, to be confirmed by its heartbeat.
CLAIMS_ALIVE = frozenset({RunState.STARTING, RunState.RUNNING, RunState.STOPPING})


@dataclass(frozen=True)
class Liveness:
    """Ids with a live heartbeat; None where Redis could not be asked (``warning`` says why)."""

    supervisors: frozenset[str] | None
    processes: frozenset[str] | None
    warning: str | None = None


def check_liveness(
    settings: Settings,
    supervisors: Iterable[SupervisorRecord],
    processes: Iterable[ProcessRecord],
) -> Liveness:
    """Ask Redis which of the records that claim to be alive have a heartbeat (one round trip).

    Redis is not contacted when no record claims to be alive.
    """
    supervisor_ids = [s.id for s in supervisors if s.state in CLAIMS_ALIVE]
    process_ids = [p.id for p in processes if p.state in CLAIMS_ALIVE]
    none: frozenset[str] = frozenset()
    if not supervisor_ids and not process_ids:
        return Liveness(none, none)
    try:
        client = connect(settings, name="tmi-cluster:list")
    except EmbeddedRedisError:  # no embedded server runs, so none of its heartbeats exists
        return Liveness(none, none)
    keys = Keys.from_settings(settings)
    try:
        return Liveness(
            frozenset(live_supervisors(client, keys, supervisor_ids)),
            frozenset(live_processes(client, keys, process_ids)),
        )
    except RedisUnavailableError as error:
        return Liveness(
            None,
            None,
            f"{error}; liveness unknown: a state marked '?' is the database's last record",
        )
    finally:
        client.close()


def shown_state(recorded: str, live: bool | None) -> str:
    """The state to show for a record: ``dead`` when it claims to be alive without a heartbeat,
    marked ``?`` when liveness is unknown (``live`` None)."""
    if recorded not in CLAIMS_ALIVE:
        return recorded
    if live is None:
        return f"{recorded}?"
    return recorded if live else RunState.DEAD.value


def _is_live(record_id: str, live: frozenset[str] | None) -> bool | None:
    return None if live is None else record_id in live


def _seen(now: datetime, then: datetime, state: str, live: bool | None) -> str:
    if live and state in CLAIMS_ALIVE:
        return "now"
    return f"{max(0.0, (now - then).total_seconds()):.0f} s ago"


def supervisor_rows(
    supervisors: Sequence[SupervisorRecord],
    processes: Sequence[ProcessRecord],
    liveness: Liveness,
    now: datetime | None = None,
) -> list[list[str]]:
    """Rows of supervisor, host, pid, state, last seen, processes."""
    at = now or datetime.now(UTC)
    rows = []
    for s in supervisors:
        live = _is_live(s.id, liveness.supervisors)
        count = sum(1 for p in processes if p.supervisor_id == s.id)
        state = shown_state(s.state, live)
        seen = _seen(at, s.last_seen_at, s.state, live)
        rows.append([s.id, s.hostname, str(s.pid), state, seen, str(count)])
    return rows


def process_rows(
    processes: Sequence[ProcessRecord], liveness: Liveness, now: datetime | None = None
) -> list[list[str]]:
    """Rows of process, supervisor, pid, state, last seen, channels."""
    at = now or datetime.now(UTC)
    rows = []
    for p in processes:
        live = _is_live(p.id, liveness.processes)
        state = shown_state(p.state, live)
        seen = _seen(at, p.last_seen_at, p.state, live)
        rows.append([p.id, p.supervisor_id, str(p.pid or ""), state, seen, str(p.channels)])
    return rows
