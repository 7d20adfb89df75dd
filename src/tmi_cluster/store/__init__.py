"""Durable state in SQL: channels, supervisors, processes and their history.

:class:`Store` is synchronous (writes are rare and small); asyncio code calls it through
``asyncio.to_thread``. It works on SQLite (the default, one file shared by the processes of one
host) and PostgreSQL (several hosts). Every method that takes channels accepts any number of them:
lists are split into chunks well below every backend's placeholder limit, so 250,000 channels are
as valid an argument as one.

Errors of the database are raised as :class:`~tmi_cluster.errors.StorageError` (and
:class:`~tmi_cluster.errors.MigrationError` for ``migrate``) with the URL shown password-masked.

The modules, one part of :class:`Store` each:

- ``database``: the engine, transactions, errors, the schema (``migrate``, ``revision``);
- ``channels``: the channels' rows (wanted, authorized, their joins and failures);
- ``supervisors``: the supervisors' and processes' rows and their history;
- ``state``: the cluster's own values (its size, the Redis it serves);
- ``grants``: what streamers granted the bot on the invite screen (tokens sealed);
- ``models``: the tables (SQLAlchemy Core) and the records read from them.
"""

from __future__ import annotations

from tmi_cluster.store.channels import BULK_FROM, BULK_SIZE, Channel, ChannelStore, Failure
from tmi_cluster.store.database import CHUNK_SIZE
from tmi_cluster.store.grants import GrantStore, SealedGrant
from tmi_cluster.store.models import HistoryRecord, ProcessRecord, RunState, SupervisorRecord
from tmi_cluster.store.state import StateStore
from tmi_cluster.store.supervisors import SupervisorStore

__all__ = [
    "BULK_FROM",
    "BULK_SIZE",
    "CHUNK_SIZE",
    "Channel",
    "Failure",
    "HistoryRecord",
    "ProcessRecord",
    "RunState",
    "SealedGrant",
    "Store",
    "SupervisorRecord",
]


class Store(ChannelStore, SupervisorStore, StateStore, GrantStore):
    """The SQL database of a cluster: its channels, supervisors, processes and their history,
    its own state and the invite screen's grants, on one engine. Use as a context manager, or
    call :meth:`close` (idempotent)."""
