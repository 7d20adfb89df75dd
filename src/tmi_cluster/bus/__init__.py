"""The cluster's bus: everything of the cluster that lives in Redis, and the only code that
calls Redis.

- :mod:`~tmi_cluster.bus.keys`: every key name and expiry; the layout is documented there, in
  one place.
- :mod:`~tmi_cluster.bus.client`: opening connections (a configured server or the host's
  embedded one) and translating redis-py's errors into
  :class:`~tmi_cluster.errors.RedisUnavailableError`.
- :mod:`~tmi_cluster.bus.windows`: Twitch's limits per account shared by every process (one
  atomic script on Redis's clock); a Redis outage is waited out, never fatal.
- :mod:`~tmi_cluster.bus.heartbeat`: who is alive: typed statuses with expiry, stamped with
  Redis's clock, found through a registry (never SCAN).
- :mod:`~tmi_cluster.bus.assignment`: the assignment ``channel -> process``, what each process
  holds, the notices that tell a worker to follow it, and the workers' reports.
- :mod:`~tmi_cluster.bus.control`: orders for supervisors (terminate, restart, pause, continue).
- :mod:`~tmi_cluster.bus.lease`: the coordinator's lease with its fencing token.
- :mod:`~tmi_cluster.bus.coordination`: the coordinator's other state (wake-ups, the epoch,
  scale targets, draining marks, the cleanup schedule), every write of the coordinator fenced.
- :mod:`~tmi_cluster.bus.commands`: chat messages to send, with acknowledgement (a consumer
  group, idempotency markers, claims from dead workers, dead letters).
- :mod:`~tmi_cluster.bus.events`: the event stream (publisher, reader, groups) and the
  cluster-wide "seen once" check.
"""

from __future__ import annotations

from tmi_cluster.bus.assignment import Assignment, Report
from tmi_cluster.bus.client import (
    AsyncRedis,
    close_client,
    connect,
    connect_async,
    describe_client,
    ping,
    refused_password,
    resolve_url,
    translate_errors,
    translated,
)
from tmi_cluster.bus.control import (
    Order,
    forget_orders,
    forget_supervisor,
    read_orders,
    send_order,
)
from tmi_cluster.bus.coordination import Coordination, ScaleState, wake, wanted_changed
from tmi_cluster.bus.heartbeat import (
    Beat,
    Heartbeat,
    ProcessStatus,
    SupervisorStatus,
    live,
    read,
    read_sync,
)
from tmi_cluster.bus.keys import DEDUPE_S, LEASE_S, Keys
from tmi_cluster.bus.windows import RETRY_CAP_S, Outage, SharedWindow, shared_account_windows

__all__ = [
    "DEDUPE_S",
    "LEASE_S",
    "RETRY_CAP_S",
    "Assignment",
    "AsyncRedis",
    "Beat",
    "Coordination",
    "Heartbeat",
    "Keys",
    "Order",
    "Outage",
    "ProcessStatus",
    "Report",
    "ScaleState",
    "SharedWindow",
    "SupervisorStatus",
    "close_client",
    "connect",
    "connect_async",
    "describe_client",
    "forget_orders",
    "forget_supervisor",
    "live",
    "ping",
    "read",
    "read_orders",
    "read_sync",
    "refused_password",
    "resolve_url",
    "send_order",
    "shared_account_windows",
    "translate_errors",
    "translated",
    "wake",
    "wanted_changed",
]
