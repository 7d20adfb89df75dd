"""The channel manager's stale cleanup, run by the coordinator for the whole cluster.

With a channel manager that cleans up (``channel_manager.auto_cleanup.enabled``, the Database
manager or one's own), the leader runs :func:`tmi_cluster.channels.cleanup` once per
``interval`` plus a random delay up to ``max_delay`` for the whole cluster: ``P cleanup:due`` is
set with ``NX`` and that expiry by the one that runs it (fenced by the lease's token), so that
a new leader does not run it again before it is due; each run is logged and added to
``P cleanup:runs``. It runs beside the passes (a slow manager of one's own delays no pass); a
run that fails is shown as :attr:`StaleCleanup.problem` and tried again
:data:`CLEANUP_RETRY_S` later.
"""

from __future__ import annotations

import asyncio
import logging
import random

from tmi_cluster.bus import AsyncRedis, Coordination, Keys, wanted_changed
from tmi_cluster.bus.lease import Lease
from tmi_cluster.channels import ChannelManager, cleanup
from tmi_cluster.errors import TmiClusterError
from tmi_cluster.store import Store
from tmi_cluster.tasks import cancel_and_wait

__all__ = ["CLEANUP_RETRY_S", "StaleCleanup"]

log = logging.getLogger(__name__)

#: Seconds until a stale cleanup that failed is tried again.
CLEANUP_RETRY_S = 30.0


class StaleCleanup:
    """The stale cleanup of the coordinator holding ``lease``, every ``every`` = (interval,
    max_delay) seconds; see the module."""

    def __init__(
        self,
        manager: ChannelManager,
        store: Store,
        *,
        client: AsyncRedis,
        keys: Keys,
        coordination: Coordination,
        lease: Lease,
        every: tuple[float, float],
    ) -> None:
        self.manager = manager
        self.store = store
        self.client = client
        self.keys = keys
        self.coordination = coordination
        self.lease = lease
        self.every = every
        #: The run under way (or the last one), if any.
        self.task: asyncio.Task[None] | None = None
        #: Why the last run failed, else None.
        self.problem: str | None = None

    async def maybe_start(self) -> None:
        """Start the stale cleanup when it is due for the cluster and none runs here."""
        if self.task is not None and not self.task.done():
            return
        interval, max_delay = self.every
        next_in = interval + random.uniform(0.0, max_delay)  # noqa: S311 (a jitter)
        due = await self.coordination.schedule_cleanup(
            self.lease.token, self.lease.holder, next_in, due=True
        )
        if due:
            self.task = asyncio.create_task(self._run(), name="stale cleanup")

    async def _run(self) -> None:
        """One run of the stale cleanup; its figures logged and added to ``P cleanup:runs``."""
        try:
            done = await cleanup(self.manager, self.store)
            self.problem = None
            parted = done.stale | done.unauthorized
            if parted:
                await wanted_changed(self.client, self.keys)
            log.info(
                "stale cleanup by %s: %d of %d wanted channels parted (%d stale, %d no "
                "longer authorized) in %.2f s",
                self.lease.holder,
                len(parted),
                done.checked,
                len(done.stale),
                len(done.unauthorized),
                done.seconds,
            )
            entry = {
                "by": self.lease.holder,
                "checked": done.checked,
                "stale": len(done.stale),
                "unauthorized": len(done.unauthorized),
                "seconds": f"{done.seconds:.3f}",
            }
            await self.coordination.record_cleanup(self.lease.token, entry)
        except asyncio.CancelledError:
            raise
        except Exception as error:  # the database, Redis, a manager of one's own: shown, retried
            log.warning(
                "stale cleanup by %s failed (tried again in %.0f s): %s: %s",
                self.lease.holder,
                CLEANUP_RETRY_S,
                type(error).__name__,
                error,
            )
            self.problem = f"stale cleanup: {type(error).__name__}: {error}"
            try:
                await self.coordination.schedule_cleanup(
                    self.lease.token, self.lease.holder, CLEANUP_RETRY_S, due=False
                )
            except TmiClusterError as again:  # Redis away, or the lease lost: the next leader's
                log.warning(
                    "stale cleanup by %s: its retry is not scheduled: %s", self.lease.holder, again
                )

    async def aclose(self) -> None:
        """Stop a run under way."""
        await cancel_and_wait(self.task, what="the stale cleanup")
