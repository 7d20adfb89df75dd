"""Failed joins: each channel's last failure, retried after a delay its reason demands, or
given up.

The coordinator keeps them (:class:`JoinFailures`): read from SQL with the wanted channels,
updated from the workers' reports (a join confirmed ends a channel's failures; a failed join of
the channel's owner is counted, with its reason and the time of its retry), and written back to
SQL; while the database is away, what is not written yet waits in memory and wins over what SQL
says.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from tmi_cluster.bus.assignment import Report
from tmi_cluster.errors import StorageError
from tmi_cluster.outcomes import JoinResult
from tmi_cluster.store import Failure, Store

__all__ = ["JoinFailures", "retry_delay"]

log = logging.getLogger(__name__)

# reason -> (first delay, longest delay, attempts before giving up or None): see retry_delay.
_RETRIES: dict[str, tuple[float, float, int | None]] = {
    JoinResult.SUSPENDED: (60.0, 3600.0, None),  # suspensions end
    JoinResult.CHANNEL_LIMIT: (30.0, 600.0, None),  # the account's channels free up
    JoinResult.TIMEOUT: (5.0, 600.0, 12),  # silence: most likely no such channel
}
_OTHER_RETRY = (5.0, 300.0, None)  # a lost channel, a connection that ended, a refused login
_GIVE_UP = frozenset({JoinResult.BANNED, JoinResult.TOS_BAN})  # only a new request helps


def retry_delay(reason: str, attempts: int) -> float | None:
    """Seconds until a channel whose join failed ``attempts`` times in a row (the last for
    ``reason``) is tried again; None: given up (a ban; a join that timed out 12 times).

    Delays double from a first delay up to a cap: ``msg_channel_suspended`` 60 s to 1 h,
    ``msg_concurrent_channel_limit_reached`` 30 s to 10 min, ``timeout`` 5 s to 10 min, any
    other reason (a lost channel, a connection that ended) 5 s to 5 min. A channel asked for
    again (``tmi-cluster join``) starts over at once.
    """
    if reason in _GIVE_UP:
        return None
    first, cap, give_up_after = _RETRIES.get(reason, _OTHER_RETRY)
    if give_up_after is not None and attempts >= give_up_after:
        return None
    return float(min(cap, first * 2.0 ** max(0, attempts - 1)))


class JoinFailures:
    """The failed joins the coordinator knows of; see the module."""

    def __init__(self, store: Store, holder: str) -> None:
        self.store = store
        self.holder = holder
        self._failures: dict[str, Failure] = {}
        self._unwritten: dict[str, Failure | None] = {}  # None: cleared
        self._failing = False

    def loaded(self, failures: Mapping[str, Failure]) -> None:
        """The failures as SQL has them; those not written yet win."""
        self._failures = {**failures}
        for channel, pending in self._unwritten.items():
            if pending is None:
                self._failures.pop(channel, None)
            else:
                self._failures[channel] = pending

    def blocked(self) -> set[str]:
        """The channels whose failed joins wait for their retry, or were given up."""
        now = datetime.now(UTC)
        return {
            c
            for c, f in self._failures.items()
            if f.given_up or (f.retry_at is not None and f.retry_at > now)
        }

    def note(
        self, report: Report, assignment: Mapping[str, str], active: set[str], now: datetime
    ) -> None:
        """One report of a worker: a join confirmed ends the channel's failures; a failed
        join of the channel's owner (``assignment``, among ``active``) is counted."""
        channel, result = report.channel, report.result
        if result == JoinResult.JOINED:
            if channel in self._failures:
                del self._failures[channel]
                self._unwritten[channel] = None
            return
        if result == JoinResult.PARTED:
            return  # asked for
        if assignment.get(channel) != report.process or report.process not in active:
            return  # an earlier owner's: not this channel's failure now
        attempts = self._failures[channel].attempts + 1 if channel in self._failures else 1
        delay = retry_delay(result, attempts)
        failure = Failure(
            channel,
            result,
            attempts,
            None if delay is None else now + timedelta(seconds=delay),
            delay is None,
            now,
        )
        self._failures[channel] = self._unwritten[channel] = failure
        if delay is None:
            log.warning("channel %s: given up after %s (join it again to retry)", channel, result)

    async def write(self) -> None:
        """Write what changed to SQL; while the database is away it waits (logged once)."""
        if not self._unwritten:
            return
        pending = dict(self._unwritten)
        cleared = [c for c, f in pending.items() if f is None]
        failed = [f for f in pending.values() if f is not None]
        try:
            if cleared:
                await asyncio.to_thread(self.store.clear_failures, cleared)
            if failed:
                await asyncio.to_thread(self.store.record_failures, failed)
        except StorageError as error:
            if not self._failing:
                log.warning(
                    "coordinator %s: failed joins wait for the database: %s", self.holder, error
                )
            self._failing = True
            return
        self._failing = False
        for channel, value in pending.items():
            if self._unwritten.get(channel) is value:
                del self._unwritten[channel]
