"""What a supervisor claims: an id of its own among the live supervisors, and the database for
its cluster.

- Ids (:func:`check_supervisor_id`, :func:`new_supervisor_id`): they name keys, records and
  worker ids (``<id>-<n>``); a live supervisor's id is refused to another
  (:class:`IdInUseError`, raised when the heartbeat cannot be claimed).
- The database (:func:`claim_database`): one database serves one cluster; the database records
  which Redis its cluster uses (:func:`redis_identity`), and a supervisor of another cluster is
  refused while the recorded cluster's supervisors run (a database left by a cluster that is
  gone is taken over).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import secrets
import socket
from datetime import UTC, datetime

from tmi_cluster.bus import Heartbeat, Outage, SupervisorStatus, refused_password
from tmi_cluster.cluster.listing import CLAIMS_ALIVE
from tmi_cluster.config import Settings, mask_url
from tmi_cluster.errors import ConfigError, RedisUnavailableError, TmiClusterError
from tmi_cluster.store import Store
from tmi_cluster.supervisor.processes import RECORD_EVERY_S

__all__ = [
    "IdInUseError",
    "check_supervisor_id",
    "claim_database",
    "claim_heartbeat",
    "new_supervisor_id",
    "open_database",
    "redis_identity",
]

log = logging.getLogger(__name__)


class IdInUseError(TmiClusterError):
    """A live supervisor already has the id asked for."""


#: What a supervisor id may be: it names keys, records and worker ids (``<id>-<n>``).
_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,47}")


def check_supervisor_id(value: str) -> str:
    """``value`` if it is a valid supervisor id (1 to 48 ASCII letters, digits, ``.``, ``_``
    or ``-``, not starting with ``.``, ``_`` or ``-``), else ValueError saying so."""
    if not _ID.fullmatch(value):
        shown = value if len(value) <= 40 else value[:37] + "..."
        raise ValueError(
            f"invalid supervisor id {shown!r}: expected 1 to 48 ASCII letters, digits, '.', '_' "
            "or '-', starting with a letter or digit"
        )
    return value


#: Seconds between two attempts to reach Redis while starting.
_REDIS_RETRY_S = 1.0


async def claim_heartbeat(
    heartbeat: Heartbeat[SupervisorStatus],
    stop: asyncio.Event,
    *,
    wait_s: float,
    outage: Outage,
) -> bool:
    """Claim the supervisor's heartbeat (its id) by beating once, retrying while Redis does not
    answer, for at most ``wait_s``: True once claimed, False when ``stop`` came first.
    IdInUseError when a live supervisor has the id; RedisUnavailableError when Redis refuses
    the password (waiting would not help) or does not answer in time."""
    supervisor_id = heartbeat.owner_id
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait_s
    while not stop.is_set():
        try:
            claimed = await heartbeat.claim()
        except RedisUnavailableError as error:
            remaining = deadline - loop.time()
            if refused_password(error):
                raise RedisUnavailableError(
                    f"{error}: check the password in redis.url (waiting would not help)"
                ) from error
            if remaining <= 0:
                raise RedisUnavailableError(
                    f"{error} (waited {wait_s:g} s): start Redis, or check redis.url"
                ) from error
            outage.began(error, f"supervisor {supervisor_id}")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), min(_REDIS_RETRY_S, remaining))
            continue
        outage.ended()
        if not claimed:
            raise IdInUseError(
                f"a live supervisor already has the id {supervisor_id!r}: choose another "
                f"--id, or stop that one first ('tmi-cluster terminate {supervisor_id}')"
            )
        return True
    return False


def new_supervisor_id() -> str:
    """A unique supervisor id: the host name and random hex."""
    host = "".join(c if c.isalnum() or c in "-." else "-" for c in socket.gethostname())[:48]
    return f"{host}-{secrets.token_hex(4)}"


#: The key of the cluster's state that names the Redis of the cluster a database serves.
_CLUSTER_STATE = "cluster"
#: Seconds a supervisor record counts as alive after its last write (records are written at
#: least every RECORD_EVERY_S while a supervisor runs).
_RECORD_ALIVE_S = 3 * RECORD_EVERY_S


def redis_identity(settings: Settings) -> str:
    """Which Redis (and prefix) a cluster uses, as its database records it: two clusters must
    not share one database (each would join every channel, and purge the other's workers)."""
    if settings.embedded_redis:
        return (
            f"the private Redis server in {os.path.abspath(settings.redis.embedded_dir)} "
            f"on {socket.gethostname()}, prefix {settings.prefix!r}"
        )
    return f"Redis at {mask_url(settings.redis.url)}, prefix {settings.prefix!r}"


def open_database(store: Store, settings: Settings) -> None:
    """Migrate the database to this version (logged when it changed), then
    :func:`claim_database` it for this cluster."""
    applied = store.migrate()
    if applied:
        log.info("database migrated to %s", applied[-1])
    claim_database(store, settings)


def claim_database(store: Store, settings: Settings) -> None:
    """Record that the database serves the cluster of this Redis; ConfigError when it serves
    another cluster whose supervisors ran moments ago (a database left by a cluster that is
    gone is taken over)."""
    mine = redis_identity(settings)
    recorded = (store.state(_CLUSTER_STATE) or {}).get("redis")
    if recorded not in (None, mine):
        now = datetime.now(UTC)
        live = [
            r.id
            for r in store.supervisors()
            if r.state in CLAIMS_ALIVE and (now - r.last_seen_at).total_seconds() < _RECORD_ALIVE_S
        ]
        if live:
            raise ConfigError(
                f"database.url: {mask_url(settings.database.url)} serves the cluster on "
                f"{recorded} (supervisor {', '.join(live)} running): one database serves one "
                "cluster. To add a supervisor to that cluster, use its Redis (redis.url, or the "
                "same redis.embedded_dir on its host); for a second cluster, give it a database "
                "of its own (run it in another folder)"
            )
        log.warning(
            "the database served the cluster on %s, whose supervisors are gone; it "
            "serves this one now",
            recorded,
        )
    if recorded != mine:
        store.set_state(_CLUSTER_STATE, {"redis": mine})
