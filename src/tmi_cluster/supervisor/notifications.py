"""Notifications: people are told when something needs them, once per incident for the whole
cluster, through apprise (Slack, Discord, Telegram, mail, webhooks: ``notifications.urls``).

Every supervisor looks every ``notifications.every`` seconds (:class:`Notifier`); an incident
found is claimed in Redis (:func:`~tmi_cluster.bus.streams.claim_incident`, ``SET NX`` with
the quiet period as its expiry), and only the claimant sends it: however many supervisors and
workers see it, one message, then none for ``notifications.quiet_period`` seconds. The
incidents (:func:`find_incidents`):

- ``supervisor-lost:{id}``: a supervisor whose record says it runs has no heartbeat;
- ``supervisor-problem:{id}``: a live supervisor reports a problem (a worker that cannot
  start, say why, a coordinator that fails);
- ``worker-problem:{digest}``: live workers report a problem (Twitch refusing the bot's
  login), once per distinct problem;
- ``no-leader``: supervisors are alive and none has held the coordinator's lease for two looks
  in a row;
- ``failing-channels``: at least ``notifications.failing_channels`` channels failed to join
  (the coordinator's supervisor only: it reads every channel);
- ``join-backlog``: a wanted channel has waited more than ``notifications.join_backlog``
  seconds to be joined (the coordinator's supervisor only).

A notification that cannot be sent is logged (never its URL), and the cluster goes on.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from tmi_cluster.bus import AsyncRedis, Keys
from tmi_cluster.bus.streams import claim_incident
from tmi_cluster.cluster.listing import CLAIMS_ALIVE
from tmi_cluster.config import Settings
from tmi_cluster.errors import ConfigError, RedisUnavailableError, StorageError
from tmi_cluster.web.view import ClusterView, Snapshot

__all__ = ["Incident", "Notifier", "find_incidents"]

log = logging.getLogger(__name__)

#: States of a channel that waits to be joined.
_WAITING = frozenset({"wanted", "joining"})


@dataclass(frozen=True)
class Incident:
    """Something people should know: ``name`` (the same incident has the same name), a title
    and a text."""

    name: str
    title: str
    body: str


def find_incidents(snapshot: Snapshot, settings: Settings, *, now: datetime) -> list[Incident]:
    """The incidents ``snapshot`` shows (see the module); those of the channels only when it
    has them. ``no-leader`` is found here as soon as no live supervisor leads; the
    :class:`Notifier` waits for a second look."""
    beats = snapshot.liveness.supervisors
    if beats is None:  # Redis cannot be asked: nothing can be claimed either
        return []
    found = []
    for record in snapshot.supervisors:
        if record.state in CLAIMS_ALIVE and record.id not in beats:
            found.append(
                Incident(
                    f"supervisor-lost:{record.id}",
                    f"tmi-cluster: supervisor {record.id} lost",
                    f"Supervisor {record.id} on {record.hostname} has no heartbeat: it died or "
                    "its host is cut off. Its channels go to the other supervisors' workers.",
                )
            )
    for supervisor_id, beat in sorted(beats.items()):
        if beat.status.problem:
            found.append(
                Incident(
                    f"supervisor-problem:{supervisor_id}",
                    f"tmi-cluster: supervisor {supervisor_id} has a problem",
                    f"Supervisor {supervisor_id}: {beat.status.problem}",
                )
            )
    problems = sorted({s.problem for s in snapshot.live_processes.values() if s.problem})
    for problem in problems:
        digest = hashlib.sha256(problem.encode()).hexdigest()[:12]
        found.append(
            Incident(f"worker-problem:{digest}", "tmi-cluster: workers have a problem", problem)
        )
    if beats and not any(beat.status.coordinator for beat in beats.values()):
        found.append(
            Incident(
                "no-leader",
                "tmi-cluster: no coordinator",
                f"{len(beats)} supervisor(s) alive and none holds the coordinator's lease: "
                "no channel is placed or moved.",
            )
        )
    found.extend(_channel_incidents(snapshot, settings, now))
    return found


def _channel_incidents(snapshot: Snapshot, settings: Settings, now: datetime) -> list[Incident]:
    found = []
    limits = settings.notifications
    failed = [row for row in snapshot.channels if row.state == "failed"]
    if snapshot.channels and len(failed) >= limits.failing_channels:
        shown = ", ".join(
            f"{row.channel} ({row.failure.reason if row.failure else '?'})" for row in failed[:10]
        )
        found.append(
            Incident(
                "failing-channels",
                f"tmi-cluster: {len(failed)} channels fail to join",
                f"{len(failed)} channels failed to join: {shown}"
                + (" ..." if len(failed) > 10 else ""),
            )
        )
    horizon = now - timedelta(seconds=limits.join_backlog)
    waiting = [row for row in snapshot.channels if row.state in _WAITING and row.since < horizon]
    if waiting:
        found.append(
            Incident(
                "join-backlog",
                f"tmi-cluster: {len(waiting)} channels wait to be joined",
                f"{len(waiting)} wanted channels have waited more than "
                f"{limits.join_backlog:g} s to be joined, e.g. "
                + ", ".join(row.channel for row in waiting[:10]),
            )
        )
    return found


def _apprise(urls: list[str]) -> Any:
    """The apprise object for ``urls``; ConfigError naming the entry (never the URL) when one
    is not an apprise URL, or when apprise is not installed."""
    try:
        import apprise  # noqa: PLC0415 - the optional extra 'notifications'
    except ImportError as exc:
        raise ConfigError(
            "notifications.urls needs apprise: pip install 'tmi-cluster[notifications]'"
        ) from exc
    notifier = apprise.Apprise()
    for index, url in enumerate(urls):
        if not notifier.add(url):
            raise ConfigError(
                f"notifications.urls[{index}]: not a notification URL apprise knows "
                "(see apprise's list of services)"
            )
    return notifier


class Notifier:
    """The notifications of supervisor ``supervisor_id`` (see the module); ``leading()`` says
    whether it is the coordinator's (which looks at the channels too). ConfigError at once for
    URLs that cannot be used."""

    def __init__(
        self,
        settings: Settings,
        supervisor_id: str,
        client: AsyncRedis,
        *,
        leading: Callable[[], bool],
    ) -> None:
        self.settings = settings
        self.id = supervisor_id
        self.client = client
        self.keys = Keys.from_settings(settings)
        self.leading = leading
        self._apprise = _apprise(settings.notifications.urls)
        self._leaderless_before = False
        #: Notifications sent, and those that could not be.
        self.sent = 0
        self.failed = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Look every ``notifications.every`` seconds until ``stop``; an outage of Redis or
        of the database skips a look."""
        view = ClusterView(self.settings)
        try:
            while not stop.is_set():
                try:
                    await self.look(view)
                except (RedisUnavailableError, StorageError) as error:
                    log.warning("notifications: this look is skipped: %s", error)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.settings.notifications.every)
        finally:
            await view.aclose()

    async def look(self, view: ClusterView) -> list[Incident]:
        """One look: the incidents found, and those this supervisor claimed notified."""
        snapshot = await view.read(channels=self.leading())
        found = find_incidents(snapshot, self.settings, now=datetime.now(UTC))
        leaderless = any(incident.name == "no-leader" for incident in found)
        if leaderless and not self._leaderless_before:  # wait for a second look
            found = [incident for incident in found if incident.name != "no-leader"]
        self._leaderless_before = leaderless
        quiet_s = self.settings.notifications.quiet_period
        notified = []
        for incident in found:
            if await claim_incident(self.client, self.keys, incident.name, self.id, quiet_s):
                await self.send(incident)
                notified.append(incident)
        return notified

    async def send(self, incident: Incident) -> bool:
        """Send ``incident`` to every URL; False (logged) when a service refused it."""
        done = await asyncio.to_thread(
            self._apprise.notify, body=incident.body, title=incident.title
        )
        if done:
            self.sent += 1
            log.info("notified: %s", incident.title)
        else:
            self.failed += 1
            log.error("a notification could not be sent (%s); see apprise's log", incident.title)
        return bool(done)
