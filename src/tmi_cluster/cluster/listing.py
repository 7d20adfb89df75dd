"""What ``tmi-cluster list`` shows: the SQL records of supervisors and processes, their liveness
taken from the Redis heartbeats.

Liveness is never read from a SQL row: a supervisor killed with SIGKILL leaves its row saying
``running`` behind. A record that says it is alive (starting, running, stopping) is shown
``dead`` when its heartbeat is gone, with the record's own last sign of life; one with a live
heartbeat is shown as recorded, last seen ``now``. A worker process whose supervisor has no
heartbeat is dead, whatever its own heartbeat says (a worker outliving its supervisor serves
nobody). When Redis cannot be reached, liveness is unknown: such records keep their recorded
state marked ``?`` and :attr:`Liveness.warning` says why. With the embedded Redis server
(``redis.url`` empty) and none running, no heartbeat can exist (the supervisor owns that
server), so every such record is dead.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

import msgspec

from tmi_cluster.bus import Beat, Keys, ProcessStatus, SupervisorStatus, connect, read_sync
from tmi_cluster.bus.heartbeat import last_beats_sync, of_live_supervisors
from tmi_cluster.bus.routes import RouteStatus, route_status_sync
from tmi_cluster.config import Settings
from tmi_cluster.errors import EmbeddedRedisError, RedisUnavailableError
from tmi_cluster.store import RunState
from tmi_cluster.store.models import ProcessRecord, SupervisorRecord

__all__ = [
    "CLAIMS_ALIVE",
    "SILENT_SUPERVISOR_S",
    "Liveness",
    "check_liveness",
    "cluster_json",
    "eventsub_line",
    "health",
    "process_rows",
    "shown_state",
    "supervisor_rows",
]

#: Seconds after which a supervisor whose heartbeat key still lives but has stopped beating (it
#: beats every 2 s by default) is unhealthy: killed or hung, its key not expired yet.
SILENT_SUPERVISOR_S = 10.0
#: Recorded states that claim a live owner, to be confirmed by its heartbeat.
CLAIMS_ALIVE = frozenset({RunState.STARTING, RunState.RUNNING, RunState.STOPPING})


SupervisorBeat = Beat[SupervisorStatus]
B = TypeVar("B", Beat[SupervisorStatus], Beat[ProcessStatus])
ProcessBeat = Beat[ProcessStatus]


@dataclass(frozen=True)
class Liveness:
    """The live heartbeats' statuses by id; None where Redis could not be asked (``warning``
    says why)."""

    supervisors: Mapping[str, SupervisorBeat] | None
    processes: Mapping[str, ProcessBeat] | None
    warning: str | None = None
    #: Why Redis could not be asked (the warning without what it means for ``list``).
    error: str | None = None
    #: When the dead ones beat last (the registry remembers it for an hour), by id.
    supervisors_last: Mapping[str, datetime] = field(default_factory=dict)
    processes_last: Mapping[str, datetime] = field(default_factory=dict)
    #: The EventSub route as the coordinator last wrote it (None: it wrote none).
    eventsub: RouteStatus | None = None


def check_liveness(
    settings: Settings,
    supervisors: Iterable[SupervisorRecord],
    processes: Iterable[ProcessRecord],
) -> Liveness:
    """Ask Redis which of the records that claim to be alive have a heartbeat, with its status
    (one round trip). Redis is not contacted when no record claims to be alive."""
    claiming = [p for p in processes if p.state in CLAIMS_ALIVE]
    process_ids = [p.id for p in claiming]
    # the supervisors of live-looking workers too: a worker of a dead supervisor is dead
    supervisor_ids = sorted(
        {s.id for s in supervisors if s.state in CLAIMS_ALIVE} | {p.supervisor_id for p in claiming}
    )
    if not supervisor_ids and not process_ids:
        return Liveness({}, {})
    try:
        client = connect(settings, name="tmi-cluster:list")
    except EmbeddedRedisError:  # no embedded server runs, so none of its heartbeats exists
        return Liveness({}, {})
    keys = Keys.from_settings(settings)
    try:
        live_supervisors: dict[str, SupervisorBeat] = read_sync(
            client, keys, "supervisor", supervisor_ids
        )
        live_processes: dict[str, ProcessBeat] = read_sync(client, keys, "process", process_ids)
        dead_supervisors = [i for i in supervisor_ids if i not in live_supervisors]
        dead_processes = [i for i in process_ids if i not in live_processes]
        supervisors_last = last_beats_sync(client, keys, "supervisor", dead_supervisors)
        processes_last = last_beats_sync(client, keys, "process", dead_processes)
        eventsub = route_status_sync(client, keys)
    except RedisUnavailableError as error:
        return Liveness(
            None,
            None,
            f"{error}; liveness unknown: a state marked '?' is the database's last record",
            str(error),
        )
    finally:
        client.close()
    return Liveness(
        live_supervisors,
        of_live_supervisors(live_processes, live_supervisors),
        supervisors_last={i: datetime.fromtimestamp(t, UTC) for i, t in supervisors_last.items()},
        processes_last={i: datetime.fromtimestamp(t, UTC) for i, t in processes_last.items()},
        eventsub=eventsub,
    )


def shown_state(recorded: str, live: bool | None) -> str:
    """The state to show for a record: ``dead`` when it claims to be alive without a heartbeat,
    marked ``?`` when liveness is unknown (``live`` None)."""
    if recorded not in CLAIMS_ALIVE:
        return recorded
    if live is None:
        return f"{recorded}?"
    return recorded if live else RunState.DEAD.value


def _beat(record_id: str, live: Mapping[str, B] | None) -> B | None:
    return None if live is None else live.get(record_id)


def _is_live(record_id: str, live: Mapping[str, object] | None) -> bool | None:
    return None if live is None else record_id in live


def _supervisor_heard(
    s: SupervisorRecord, beat: SupervisorBeat | None, liveness: Liveness
) -> datetime:
    """When a supervisor was last heard of: its beat, or the last one Redis remembers, or its
    record's last write."""
    return _heard_at(beat, _last(s.id, s.last_seen_at, liveness.supervisors_last))


def _process_heard(p: ProcessRecord, beat: ProcessBeat | None, liveness: Liveness) -> datetime:
    """:func:`_supervisor_heard` for a worker process."""
    return _heard_at(beat, _last(p.id, p.last_seen_at, liveness.processes_last))


def _last(owner_id: str, recorded: datetime, beats: Mapping[str, datetime]) -> datetime:
    """The later of a record's own last sign of life and the last beat Redis remembers."""
    beat = beats.get(owner_id)
    return max(recorded, beat) if beat is not None else recorded


def _heard_at(beat: SupervisorBeat | ProcessBeat | None, recorded: datetime) -> datetime:
    """When a record's owner was last heard of: its heartbeat's time (Redis's clock), else the
    record's."""
    if beat is not None and beat.status.at:
        return datetime.fromtimestamp(beat.status.at, UTC)
    return recorded


def _ago(now: datetime, then: datetime, live: bool | None) -> str:
    """How long ago ``then`` was; ``now`` only for a live heartbeat (a dead record's last sign
    of life is always a time ago, however recent)."""
    seconds = max(0.0, (now - then).total_seconds())
    if live and seconds < 1.5:
        return "now"
    if seconds < 120:
        return f"{seconds:.0f} s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.0f} h ago"


def _age(now: datetime, since: datetime) -> str:
    seconds = max(0.0, (now - since).total_seconds())
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _state(recorded: str, beat: SupervisorBeat | ProcessBeat | None, live: bool | None) -> str:
    shown = shown_state(recorded, live)
    if live and beat is not None and beat.status.state in ("paused", "stopping"):
        return beat.status.state
    paused = (
        isinstance(beat, Beat) and isinstance(beat.status, SupervisorStatus) and beat.status.paused
    )
    if live and paused and shown == "running":
        return "paused"  # a supervisor whose workers are paused (SIGUSR2)
    return shown


def _process_count(
    s: SupervisorRecord, processes: Sequence[ProcessRecord], liveness: Liveness
) -> int:
    """The supervisor's live worker processes: by their own heartbeats, else by its own word."""
    live = liveness.processes
    if live is not None:
        return sum(1 for p in processes if p.supervisor_id == s.id and p.id in live)
    beat = _beat(s.id, liveness.supervisors)
    return beat.status.processes if beat is not None else 0


def supervisor_rows(
    supervisors: Sequence[SupervisorRecord],
    processes: Sequence[ProcessRecord],
    liveness: Liveness,
    now: datetime | None = None,
) -> list[list[str]]:
    """Rows of supervisor, host, pid, state, age, last heartbeat, processes."""
    at = now or datetime.now(UTC)
    rows = []
    for s in supervisors:
        status = _beat(s.id, liveness.supervisors)
        live = _is_live(s.id, liveness.supervisors)
        rows.append(
            [
                s.id,
                s.hostname,
                str(s.pid),
                _state(s.state, status, live),
                _age(_ended_at(s, status, live, liveness) or at, s.started_at),
                _ago(
                    at,
                    _supervisor_heard(s, status, liveness),
                    live,
                ),
                str(_process_count(s, processes, liveness)),
            ]
        )
    return rows


def _process_view(
    p: ProcessRecord, liveness: Liveness
) -> tuple[ProcessBeat | None, bool | None, ProcessStatus]:
    """A process's heartbeat, whether it is live, and its figures (from the heartbeat when
    live, else from its record)."""
    beat = _beat(p.id, liveness.processes)
    live = _is_live(p.id, liveness.processes)
    if beat is not None:
        return beat, live, beat.status
    if live is None and p.state in CLAIMS_ALIVE:  # unknown: the record's last figures
        recorded = {**(p.metrics or {}), "channels": p.channels}
        known = {k: v for k, v in recorded.items() if k in ProcessStatus.__struct_fields__}
        try:
            return None, live, msgspec.convert(known, ProcessStatus)
        except msgspec.ValidationError:  # a record of another version: its channels only
            return None, live, ProcessStatus(channels=p.channels)
    return None, live, ProcessStatus()  # holds none


def _ended_at(
    s: SupervisorRecord, status: SupervisorBeat | None, live: bool | None, liveness: Liveness
) -> datetime | None:
    """When a supervisor stopped, or (dead) was last heard of; None while it runs."""
    if s.stopped_at is not None:
        return s.stopped_at
    if live is False:
        return _supervisor_heard(s, status, liveness)
    return None


def _megabytes(value: object) -> str:
    return f"{int(value) / 1048576:.0f} MiB" if isinstance(value, int | float) else ""


def process_rows(
    processes: Sequence[ProcessRecord], liveness: Liveness, now: datetime | None = None
) -> list[list[str]]:
    """Rows of process, supervisor, pid, state, last heartbeat, channels, connections, memory,
    messages per second."""
    at = now or datetime.now(UTC)
    rows = []
    for p in processes:
        status, live, figures = _process_view(p, liveness)
        rows.append(
            [
                p.id,
                p.supervisor_id,
                str(p.pid or ""),
                _state(p.state, status, live),
                _ago(
                    at,
                    _process_heard(p, status, liveness),
                    live,
                ),
                str(figures.channels),
                str(figures.connections),
                _megabytes(figures.memory_bytes) if figures.memory_bytes else "",
                str(figures.messages_per_s),
            ]
        )
    return rows


def cluster_json(
    supervisors: Sequence[SupervisorRecord],
    processes: Sequence[ProcessRecord],
    liveness: Liveness,
) -> dict[str, Any]:
    """What ``list --json`` prints (the keys are a contract; times in ISO 8601): the
    supervisors, the processes, and ``eventsub`` (the EventSub route's conduit, shards,
    channels, subscriptions and problem; null when it never ran)."""
    shown_supervisors = []
    for s in supervisors:
        beat = _beat(s.id, liveness.supervisors)
        live = _is_live(s.id, liveness.supervisors)
        shown_supervisors.append(
            {
                "id": s.id,
                "host": s.hostname,
                "pid": s.pid,
                "state": _state(s.state, beat, live),
                "last_heartbeat": _supervisor_heard(s, beat, liveness).isoformat(),
                "processes": _process_count(s, processes, liveness),
                "started": s.started_at.isoformat(),
                "problem": beat.status.problem if beat is not None else None,
                "chat": beat.status.chat if beat is not None else None,
            }
        )
    shown_processes = []
    for p in processes:
        status, live, figures = _process_view(p, liveness)
        shown_processes.append(
            {
                "id": p.id,
                "supervisor": p.supervisor_id,
                "pid": p.pid,
                "state": _state(p.state, status, live),
                "channels": figures.channels,
                "connections": figures.connections,
                "memory_bytes": figures.memory_bytes,
                "messages_per_s": figures.messages_per_s,
                "sends": figures.sends,
                "handler_errors": figures.handler_errors,
                "events_published": figures.events_published,
                "events_dropped": figures.events_dropped,
                "last_heartbeat": _process_heard(p, status, liveness).isoformat(),
                "exit_code": p.exit_code,
                "problem": status.status.problem if status is not None and live else None,
            }
        )
    eventsub = msgspec.to_builtins(liveness.eventsub) if liveness.eventsub is not None else None
    return {"supervisors": shown_supervisors, "processes": shown_processes, "eventsub": eventsub}


def eventsub_line(status: RouteStatus | None) -> str | None:
    """The EventSub route in one line for ``list`` (None when it never ran)."""
    if status is None or (not status.conduit_id and status.problem is None):
        return None
    if not status.conduit_id:
        return f"EventSub: off ({status.problem})"
    line = (
        f"EventSub: conduit {status.conduit_id}, {status.shards} shards, "
        f"{status.channels} channels, {status.subscriptions} subscriptions"
    )
    return line + (f"; last problem: {status.problem}" if status.problem else "")


def _short(
    live: Sequence[SupervisorRecord],
    processes: Sequence[ProcessRecord],
    liveness: Liveness,
    minimum: int,
) -> str | None:
    """The first live supervisor that runs fewer workers than its target, in words."""
    for s in live:
        count = _process_count(s, processes, liveness)
        beat = (liveness.supervisors or {}).get(s.id)
        expected = beat.status.target if beat is not None else minimum
        if count < expected:
            problem = beat.status.problem if beat is not None else None
            why = f": {problem}" if problem else ""
            return f"supervisor {s.id} runs {count} of {expected} worker processes{why}"
    return None


def _troubled(
    live: Sequence[SupervisorRecord], processes: Sequence[ProcessRecord], liveness: Liveness
) -> str | None:
    """The live worker processes (of ``live``) that report a problem, in words."""
    owners = {s.id for s in live}
    troubled = sorted(
        (p.id, str(beat.status.problem))
        for p in processes
        if p.supervisor_id in owners
        and (beat := (liveness.processes or {}).get(p.id)) is not None
        and beat.status.problem
    )
    if not troubled:
        return None
    process_id, problem = troubled[0]
    more = f" (and {len(troubled) - 1} more)" if len(troubled) > 1 else ""
    return f"worker process {process_id}{more}: {problem}"


def _silent(live: Sequence[SupervisorRecord], liveness: Liveness) -> str | None:
    """The first live supervisor whose key has not expired yet but that stopped beating
    (killed, or hung), in words."""
    for s in live:
        beat = (liveness.supervisors or {}).get(s.id)
        if beat is not None and beat.age_s > SILENT_SUPERVISOR_S:
            return f"supervisor {s.id} has not beaten for {beat.age_s:.0f} s (killed or hung?)"
    return None


def _none_live(
    supervisors: Sequence[SupervisorRecord], hostname: str | None, at_least_one: bool
) -> tuple[bool, str]:
    where = f" on {hostname}" if hostname is not None else ""
    if hostname is not None and not any(s.hostname == hostname for s in supervisors):
        return False, f"no supervisor has ever run on host {hostname!r} (check the name)"
    if at_least_one:
        return False, f"no live supervisor{where}"
    return True, f"no supervisor{where} is expected to run"


def _superseded(
    dead: SupervisorRecord, live: Sequence[SupervisorRecord], liveness: Liveness
) -> bool:
    """Whether a dead supervisor's host runs a live supervisor started after the dead one was
    last heard of: it was replaced (a pod restarted after a forced exit, which left its record
    saying running); history for the purge, not a reason to call the cluster unhealthy."""
    last = _heard_at(
        (liveness.supervisors or {}).get(dead.id),
        _last(dead.id, dead.last_seen_at, liveness.supervisors_last),
    )
    return any(s.hostname == dead.hostname and s.started_at >= last for s in live)


def _live_and_dead(
    supervisors: Sequence[SupervisorRecord], hostname: str | None, liveness: Liveness
) -> tuple[list[SupervisorRecord], list[SupervisorRecord]]:
    """Of the supervisors whose records claim them alive (of ``hostname`` only, when given):
    the live ones, and the dead ones that no later supervisor of their host replaced."""
    beats = liveness.supervisors or {}
    considered = [
        s
        for s in supervisors
        if s.state in CLAIMS_ALIVE and (hostname is None or s.hostname == hostname)
    ]
    live = [s for s in considered if s.id in beats]
    dead = [s for s in considered if s.id not in beats and not _superseded(s, live, liveness)]
    return live, dead


def health(
    supervisors: Sequence[SupervisorRecord],
    processes: Sequence[ProcessRecord],
    liveness: Liveness,
    *,
    hostname: str | None = None,
    at_least_one: bool = False,
    minimum: int = 1,
) -> tuple[bool, str]:
    """Whether the cluster (or the supervisors of host ``hostname``, matched exactly) is
    healthy, and a one-line reason.

    Unhealthy: Redis cannot be asked; a supervisor whose record claims it alive has no heartbeat
    (dead), unless a live supervisor of its host started since (it was replaced); a live
    supervisor runs fewer worker processes than its target (the coordinator's, from its status;
    ``minimum`` for one that shows none), saying why when it knows; the whole
    cluster runs fewer than ``minimum``; a live worker process reports a problem (Twitch refused
    the bot's login); with ``at_least_one``, no live supervisor at all.
    Stopped supervisors do not count.
    """
    where = f" on {hostname}" if hostname is not None else ""
    if liveness.supervisors is None:
        return False, f"cannot tell: {liveness.error}"
    live, dead = _live_and_dead(supervisors, hostname, liveness)
    if dead:
        names = ", ".join(s.id for s in dead)
        return False, f"{len(dead)} supervisor(s){where} without a heartbeat (dead): {names}"
    wrong = (
        _silent(live, liveness)
        or _short(live, processes, liveness, minimum)
        or _troubled(live, processes, liveness)
    )
    if wrong:
        return False, wrong
    if not live:
        return _none_live(supervisors, hostname, at_least_one)
    total = sum(_process_count(s, processes, liveness) for s in live)
    if hostname is None and total < minimum:
        return False, f"the cluster runs {total} of {minimum} worker processes"
    return True, f"{len(live)} supervisor(s){where} alive with {total} worker processes"
