"""The cluster's bus: everything of the cluster that lives in Redis, and the only code that
calls Redis.

- :mod:`~tmi_cluster.bus.keys`: every key name and expiry; the layout is documented there, in
  one place.
- :mod:`~tmi_cluster.bus.client`: opening connections (a configured server or the host's
  embedded one) and translating redis-py's errors into
  :class:`~tmi_cluster.errors.RedisUnavailableError`.
- :mod:`~tmi_cluster.bus.windows`: Twitch's limits per account shared by every process (one
  atomic script on Redis's clock); a Redis outage is waited out, never fatal.
- :mod:`~tmi_cluster.bus.heartbeat`: liveness keys with expiry.
- :mod:`~tmi_cluster.bus.assignment`: the assignment ``channel -> process``, what each process
  holds, the notices that tell a worker to follow it, and the workers' reports.
- :mod:`~tmi_cluster.bus.control`: orders for supervisors (terminate, restart, pause, continue).
- :mod:`~tmi_cluster.bus.lease`: the coordinator's lease with its fencing token.
- :mod:`~tmi_cluster.bus.commands`: chat messages to send, with acknowledgement (a consumer
  group, idempotency markers, claims from dead workers, dead letters).
- :mod:`~tmi_cluster.bus.events`: the event stream (publisher, reader, groups) and the
  cluster-wide "seen once" check.
"""

from __future__ import annotations

from tmi_cluster.bus.assignment import Assignment, Report
from tmi_cluster.bus.client import (
    close_client,
    connect,
    connect_async,
    describe_client,
    resolve_url,
    translate_errors,
    translated,
)
from tmi_cluster.bus.control import Order, forget_supervisor, read_orders, send_order
from tmi_cluster.bus.heartbeat import (
    Heartbeat,
    live_processes,
    live_supervisors,
    statuses,
    statuses_async,
)
from tmi_cluster.bus.keys import DEDUPE_S, LEASE_S, RESTORE_S, Keys
from tmi_cluster.bus.windows import RETRY_CAP_S, Outage, SharedWindow, shared_account_windows

__all__ = [
    "DEDUPE_S",
    "LEASE_S",
    "RESTORE_S",
    "RETRY_CAP_S",
    "Assignment",
    "Heartbeat",
    "Keys",
    "Order",
    "Outage",
    "Report",
    "SharedWindow",
    "close_client",
    "connect",
    "connect_async",
    "describe_client",
    "forget_supervisor",
    "live_processes",
    "live_supervisors",
    "read_orders",
    "resolve_url",
    "send_order",
    "shared_account_windows",
    "statuses",
    "statuses_async",
    "translate_errors",
    "translated",
]
