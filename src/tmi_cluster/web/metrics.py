"""``GET {path}/metrics``: the cluster in Prometheus's text format (``prometheus_client``), read
from one :class:`~tmi_cluster.web.view.Snapshot` at each scrape: real values only.

Names follow Prometheus's conventions: the ``tmi_cluster_`` prefix, units in the names
(``_bytes``, ``_seconds``, ``_per_second``), ``_total`` for counters. Labels are bounded: a
state, a supervisor, a worker process; never a channel. Per worker process (labels
``process``, ``supervisor``) from its heartbeat: messages, commands, reconnects, handler errors,
events published, dropped and duplicates (counters since the process started), channels,
connections, resident memory, messages per second, the heartbeat's age. Per cluster: its
status, live supervisors and processes, channels by state, messages and commands per second,
the coordinator's leader and passes, each supervisor's processes, target and worker restarts,
the auto-scaler's pause, the streams' lengths, the EventSub route (channels, subscriptions,
shards, a problem); each worker's joins by result and its waits for Twitch's rate windows by
bucket.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from tmi_cluster.web.view import STATUSES, Snapshot

__all__ = ["CONTENT_TYPE", "render"]

#: The text format's media type.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

#: Counters of a worker process's heartbeat: metric name (before ``_total``), status field, help.
_PROCESS_COUNTERS = (
    ("messages", "messages_total", "Chat messages read."),
    ("commands", "commands_total", "Send commands answered."),
    ("reconnects", "reconnects_total", "Reconnects of its connections."),
    ("handler_errors", "handler_errors", "Events a handler failed on."),
    ("events_published", "events_published", "Events written to the event stream."),
    ("events_dropped", "events_dropped", "Events dropped (a full queue or buffer)."),
    ("duplicates_dropped", "duplicates_dropped", "Duplicate events dropped."),
)
#: Gauges of a worker process's heartbeat: metric name, status field, help.
_PROCESS_GAUGES = (
    ("channels", "channels", "Channels it holds."),
    ("connections", "connections", "Its Twitch connections."),
    ("resident_memory_bytes", "memory_bytes", "Its resident memory."),
    ("messages_per_second", "messages_per_s", "Chat messages read per second now."),
    ("commands_per_second", "commands_per_s", "Send commands answered per second now."),
)


class _SnapshotCollector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from self._cluster()
        yield from self._supervisors()
        yield from self._processes()

    def _cluster(self) -> Iterator[Metric]:
        s = self.snapshot
        status = GaugeMetricFamily(
            "tmi_cluster_status", "The cluster's status (1 for the current one).", labels=["status"]
        )
        for name in STATUSES:
            status.add_metric([name], 1.0 if s.status == name else 0.0)
        yield status
        yield GaugeMetricFamily(
            "tmi_cluster_up",
            "1 unless the cluster is down.",
            value=0.0 if s.status == "down" else 1.0,
        )
        yield GaugeMetricFamily(
            "tmi_cluster_supervisors", "Live supervisors.", value=len(s.liveness.supervisors or {})
        )
        yield GaugeMetricFamily(
            "tmi_cluster_processes", "Live worker processes.", value=len(s.live_processes)
        )
        channels = GaugeMetricFamily(
            "tmi_cluster_channels", "Known channels by state.", labels=["state"]
        )
        for state, count in s.channel_states.items():
            channels.add_metric([state], count)
        yield channels
        if s.usage_percent is not None:  # none without a live process
            yield GaugeMetricFamily(
                "tmi_cluster_channel_usage_percent",
                "Channels to hold over the live processes' capacity "
                "(auto_scale.thresholds.channels each), in percent: the auto-scaler's measure.",
                value=s.usage_percent,
            )
        yield GaugeMetricFamily(
            "tmi_cluster_messages_per_second",
            "Chat messages read per second by the cluster.",
            value=s.messages_per_s,
        )
        yield GaugeMetricFamily(
            "tmi_cluster_commands_per_second",
            "Send commands answered per second by the cluster.",
            value=s.commands_per_s,
        )
        yield from self._eventsub()
        if s.scaling is not None:
            yield GaugeMetricFamily(
                "tmi_cluster_autoscale_paused",
                "1 while the auto-scaler is paused.",
                value=1.0 if s.scaling.get("paused") else 0.0,
            )
        if s.streams is not None:
            for name, value, what in (
                ("events", s.streams.events, "Entries in the event stream."),
                ("send_commands", s.streams.send_commands, "Entries in the send command stream."),
                ("dead_letters", s.streams.dead_letters, "Send commands dead-lettered (kept)."),
            ):
                yield GaugeMetricFamily(f"tmi_cluster_stream_{name}_entries", what, value=value)
            pending = GaugeMetricFamily(
                "tmi_cluster_stream_events_group_pending_entries",
                "Events a consumer group read and did not acknowledge yet.",
                labels=["group"],
            )
            lag = GaugeMetricFamily(
                "tmi_cluster_stream_events_group_lag_entries",
                "Events a consumer group has not read yet (its lag).",
                labels=["group"],
            )
            for group in s.streams.groups:
                pending.add_metric([group.group], group.pending)
                if group.lag is not None:
                    lag.add_metric([group.group], group.lag)
            yield pending
            yield lag

    def _eventsub(self) -> Iterator[Metric]:
        """The EventSub route, as the coordinator last wrote it (nothing when it is off)."""
        route = self.snapshot.liveness.eventsub
        if route is None:
            return
        for name, value, what in (
            ("channels", route.channels, "Channels read through EventSub."),
            ("subscriptions", route.subscriptions, "EventSub subscriptions of the conduit."),
            ("shards", route.shards, "Shards of the application's conduit."),
        ):
            yield GaugeMetricFamily(f"tmi_cluster_eventsub_{name}", what, value=value)
        yield GaugeMetricFamily(
            "tmi_cluster_eventsub_problem",
            "1 while the EventSub route reports a problem (tmi-cluster list says which).",
            value=1.0 if route.problem else 0.0,
        )

    def _supervisors(self) -> Iterator[Metric]:
        beats = self.snapshot.liveness.supervisors or {}
        leader = GaugeMetricFamily(
            "tmi_cluster_coordinator_leader",
            "1 for the supervisor that holds the coordinator's lease.",
            labels=["supervisor"],
        )
        processes = GaugeMetricFamily(
            "tmi_cluster_supervisor_processes",
            "Worker processes a supervisor runs.",
            labels=["supervisor"],
        )
        target = GaugeMetricFamily(
            "tmi_cluster_supervisor_target_processes",
            "Worker processes the coordinator asks a supervisor to run.",
            labels=["supervisor"],
        )
        restarts = CounterMetricFamily(
            "tmi_cluster_supervisor_worker_restarts",
            "Worker processes restarted after an unexpected end.",
            labels=["supervisor"],
        )
        passes = CounterMetricFamily(
            "tmi_cluster_coordinator_passes",
            "Passes made as the coordinator.",
            labels=["supervisor"],
        )
        for supervisor_id, beat in sorted(beats.items()):
            leader.add_metric([supervisor_id], 1.0 if beat.status.coordinator else 0.0)
            processes.add_metric([supervisor_id], beat.status.processes)
            target.add_metric([supervisor_id], beat.status.target)
            restarts.add_metric([supervisor_id], beat.status.restarts_total)
            passes.add_metric([supervisor_id], beat.status.coordinator_passes_total)
        yield from (leader, processes, target, restarts, passes)

    def _processes(self) -> Iterator[Metric]:
        beats = self.snapshot.liveness.processes or {}
        labels = ["process", "supervisor"]
        counters = {
            name: CounterMetricFamily(f"tmi_cluster_process_{name}", what, labels=labels)
            for name, _, what in _PROCESS_COUNTERS
        }
        gauges = {
            name: GaugeMetricFamily(f"tmi_cluster_process_{name}", what, labels=labels)
            for name, _, what in _PROCESS_GAUGES
        }
        waited = CounterMetricFamily(
            "tmi_cluster_process_rate_limit_wait_seconds",
            "Seconds its takes from Twitch's rate windows waited, by bucket (join, auth, "
            "messages).",
            labels=[*labels, "bucket"],
        )
        joins = CounterMetricFamily(
            "tmi_cluster_process_joins",
            "Joins by result: joined, or why not (Twitch's refusal, timeout...).",
            labels=[*labels, "result"],
        )
        age = GaugeMetricFamily(
            "tmi_cluster_process_heartbeat_age_seconds",
            "Seconds since the worker process's last heartbeat.",
            labels=labels,
        )
        for process_id, beat in sorted(beats.items()):
            values = [process_id, beat.status.supervisor]
            for name, attribute, _ in _PROCESS_COUNTERS:
                counters[name].add_metric(values, getattr(beat.status, attribute))
            for name, attribute, _ in _PROCESS_GAUGES:
                gauges[name].add_metric(values, getattr(beat.status, attribute))
            age.add_metric(values, max(beat.age_s, 0.0))
            for result, count in sorted(beat.status.joins.items()):
                joins.add_metric([*values, result], count)
            for bucket, seconds in sorted(beat.status.rate_limit_waits.items()):
                waited.add_metric([*values, bucket], seconds)
        yield from counters.values()
        yield joins
        yield waited
        yield from gauges.values()
        yield age


def render(snapshot: Snapshot) -> bytes:
    """The text format of ``snapshot``."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot))
    return generate_latest(registry)
